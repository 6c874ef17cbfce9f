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

impl ObjectInfo {
    fn bare(kind: &'static str, name: String, error: Option<String>) -> ObjectInfo {
        ObjectInfo {
            kind,
            name,
            depth: None,
            capacity: None,
            mode: None,
            alive: 0,
            dead: 0,
            error,
        }
    }
}

/// Service connection ports (`$TMPDIR/ipckit.service.NAME`): alive if a server accepts.
fn services() -> Vec<ObjectInfo> {
    let dir = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.strip_prefix("ipckit.service.")?.to_string();
            let listening = std::os::unix::net::UnixStream::connect(e.path()).is_ok();
            let mut info = ObjectInfo::bare("service", name, None);
            if listening {
                info.alive = 1;
            } else {
                info.dead = 1;
            }
            Some(info)
        })
        .collect()
}

/// POSIX queues ipckit created, where the mqueue filesystem is mounted at `/dev/mqueue`.
fn posix_queues() -> Vec<ObjectInfo> {
    let Ok(entries) = std::fs::read_dir("/dev/mqueue") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.strip_prefix("ipckit.")?.to_string();
            Some(
                match crate::mq::PosixQueue::open(&name).and_then(|q| q.attributes()) {
                    Ok(attrs) => ObjectInfo {
                        depth: Some(attrs.depth as u64),
                        capacity: Some(attrs.capacity.to_string()),
                        ..ObjectInfo::bare("posix-mq", name, None)
                    },
                    Err(err) => ObjectInfo::bare("posix-mq", name, Some(err.to_string())),
                },
            )
        })
        .collect()
}

/// Rings of unbounded mailboxes whose mailbox has been removed.
fn orphan_chain_rings() -> Result<Vec<(&'static str, String)>> {
    let mailboxes = Mailbox::list()?;
    Ok(crate::shm::segment::Segment::list(mailbox::CHAIN_KIND)?
        .into_iter()
        .filter(|chained| {
            let owner = chained.split_once('.').map_or("", |(_, name)| name);
            !mailboxes.iter().any(|m| m == owner)
        })
        .map(|chained| (mailbox::CHAIN_KIND, chained))
        .collect())
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
    objects.extend(services());
    objects.extend(posix_queues());
    for (kind, name) in orphan_chain_rings()? {
        objects.push(ObjectInfo::bare(
            kind,
            name,
            Some("its mailbox is gone".into()),
        ));
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
    for info in services().into_iter().filter(|s| s.dead > 0) {
        let path = std::env::temp_dir().join(format!("ipckit.service.{}", info.name));
        let action = if dry_run {
            "would remove the socket file of a server that is gone".to_string()
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => "removed the socket file of a server that is gone".to_string(),
                Err(e) => format!("could not remove {}: {e}", path.display()),
            }
        };
        actions.push(CleanAction {
            kind: "service",
            name: info.name,
            action,
        });
    }
    for (kind, name) in orphan_chain_rings()? {
        let action = if dry_run {
            "would remove a chained ring whose mailbox is gone".to_string()
        } else {
            let _ = crate::shm::segment::Segment::unlink(kind, &name);
            "removed a chained ring whose mailbox is gone".to_string()
        };
        actions.push(CleanAction { kind, name, action });
    }
    // Direct-naming inboxes belong to a process: one whose owner died is garbage.
    for name in Mailbox::list()?
        .into_iter()
        .filter(|n| n.starts_with("inbox."))
    {
        let Ok(mailbox) = Mailbox::open(&name) else {
            continue;
        };
        let info = mailbox.info();
        if info
            .participants
            .iter()
            .any(|p| p.alive && p.role == "receiver")
        {
            continue;
        }
        let pid_gone = name
            .strip_prefix("inbox.")
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| {
                crate::process::liveness(pid, None) == crate::process::Liveness::Dead
            });
        if !pid_gone && info.participants.iter().all(|p| p.role != "receiver") {
            // A named inbox with no receiver entry at all: not provably abandoned.
            continue;
        }
        let action = if dry_run {
            format!(
                "would remove an inbox whose process is gone ({} unread)",
                info.depth
            )
        } else {
            let _ = Mailbox::remove(&name);
            format!(
                "removed an inbox whose process is gone ({} unread)",
                info.depth
            )
        };
        actions.push(CleanAction {
            kind: mailbox::KIND,
            name,
            action,
        });
    }
    Ok(actions)
}
