//! Every named object ipckit created on this machine: list, inspect, clean.
//!
//! `clean` loses nothing: it touches only objects ipckit created (recognised by name *and* a
//! valid header), never another program's. Persistent objects (mailboxes) are repaired, not
//! removed: entries and slots of dead processes are reclaimed, unread messages stay.

use serde::Serialize;

use crate::error::Result;
use crate::shm::mailbox::{self, Mailbox};
use crate::shm::topic::{self, Overflow, Topic};
use crate::Capacity;

/// One named object, as `ipckit ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    /// `"mailbox"`, ...
    pub kind: &'static str,
    /// The user's name for it.
    pub name: String,
    /// Messages waiting (mailboxes), or the slowest subscriber's lag (topics).
    pub depth: Option<u64>,
    /// Capacity as text (`"64"`, `"rendezvous"`).
    pub capacity: Option<String>,
    /// File mode.
    pub mode: Option<u32>,
    /// Attached processes that are alive.
    pub alive: usize,
    /// Attached processes that died without detaching.
    pub dead: usize,
    /// Why the object could not be inspected, if it could not.
    pub error: Option<String>,
}

/// What [`clean`] did (or, with `dry_run`, would do) to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanAction {
    /// Kind of the object.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// One sentence: what was (or would be) done.
    pub action: String,
}

fn capacity_text(capacity: Capacity) -> String {
    match capacity {
        Capacity::Bounded(n) => n.to_string(),
        Capacity::Rendezvous => "rendezvous".into(),
        Capacity::Unbounded => "unbounded".into(),
    }
}

/// Lists every named ipckit object on this machine.
///
/// # Errors
/// Only if `/dev/shm` cannot be read; an object that cannot be opened is listed with its
/// `error`.
pub fn list() -> Result<Vec<ObjectInfo>> {
    let mut objects = Vec::new();
    for name in Mailbox::list()? {
        objects.push(match Mailbox::open(&name) {
            Ok(mailbox) => {
                let info = mailbox.info();
                let alive = info.participants.iter().filter(|p| p.alive).count();
                ObjectInfo {
                    kind: mailbox::KIND,
                    name,
                    depth: Some(info.depth),
                    capacity: Some(capacity_text(info.capacity)),
                    mode: Some(info.mode),
                    alive,
                    dead: info.participants.len() - alive,
                    error: None,
                }
            }
            Err(err) => ObjectInfo {
                kind: mailbox::KIND,
                name,
                depth: None,
                capacity: None,
                mode: None,
                alive: 0,
                dead: 0,
                error: Some(err.to_string()),
            },
        });
    }
    for name in Topic::list()? {
        objects.push(match Topic::open(&name) {
            Ok(t) => {
                let info = t.info();
                ObjectInfo {
                    kind: topic::KIND,
                    name,
                    depth: info.slowest_lag,
                    capacity: Some(format!(
                        "{}{}",
                        info.capacity,
                        if info.overflow == Overflow::Overrun {
                            ":overrun"
                        } else {
                            ":backpressure"
                        }
                    )),
                    mode: Some(info.mode),
                    alive: info.subscribers + info.publishers,
                    dead: info.dead_subscribers,
                    error: None,
                }
            }
            Err(err) => ObjectInfo {
                kind: topic::KIND,
                name,
                depth: None,
                capacity: None,
                mode: None,
                alive: 0,
                dead: 0,
                error: Some(err.to_string()),
            },
        });
    }
    objects.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(objects)
}

/// Reclaims what dead processes left behind; with `dry_run`, only says what it would do.
///
/// # Errors
/// Only if `/dev/shm` cannot be read.
pub fn clean(dry_run: bool) -> Result<Vec<CleanAction>> {
    let mut actions = Vec::new();
    for name in Mailbox::list()? {
        // Not a valid mailbox (another program's file, or corrupt): not ours to touch.
        let Ok(mailbox) = Mailbox::open(&name) else {
            continue;
        };
        let info = mailbox.info();
        let dead = info.participants.iter().filter(|p| !p.alive).count();
        let held_by_dead = info
            .held_slots
            .iter()
            .filter(|(_, pid)| {
                crate::process::liveness(*pid, None) == crate::process::Liveness::Dead
            })
            .count();
        if dead == 0 && held_by_dead == 0 {
            continue;
        }
        let action = if dry_run {
            format!(
                "would forget {dead} dead participant(s) and reclaim {held_by_dead} slot(s); \
                 keeps {} unread message(s)",
                info.depth
            )
        } else {
            let report = mailbox.repair();
            format!(
                "forgot {} dead participant(s), reclaimed {} slot(s); kept {} unread message(s)",
                report.dead_participants,
                report.reclaimed_slots,
                mailbox.info().depth
            )
        };
        actions.push(CleanAction {
            kind: mailbox::KIND,
            name,
            action,
        });
    }
    for name in Topic::list()? {
        let Ok(t) = Topic::open(&name) else {
            continue;
        };
        let dead = t.info().dead_subscribers;
        if dead == 0 {
            continue;
        }
        let action = if dry_run {
            format!("would forget {dead} dead subscriber(s)")
        } else {
            format!("forgot {} dead participant(s)", t.repair())
        };
        actions.push(CleanAction {
            kind: topic::KIND,
            name,
            action,
        });
    }
    Ok(actions)
}
