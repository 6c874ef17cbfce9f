//! Every named object ipckit created on this machine: list, inspect, clean.
//!
//! `clean` loses nothing: it touches only objects ipckit created (recognised by name *and* a
//! valid header), never another program's. Persistent objects (mailboxes) are repaired, not
//! removed: entries and slots of dead processes are reclaimed, unread messages stay.
//!
//! Mailboxes, topics and other segments are found in `/dev/shm`, service ports in the temp
//! directory; FIFOs, socket files, System V objects and POSIX queues through the registry
//! ipckit keeps of what it created (`/dev/shm/ipckit-registry/`), each entry checked against
//! the kernel before it is shown.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::process::Liveness;
use crate::registry::{self, Entry, Kind};
use crate::shm::mailbox::{self, Mailbox};
use crate::shm::segment::Segment;
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

/// POSIX queues ipckit created: those the registry names, and, where the mqueue filesystem
/// is mounted at `/dev/mqueue`, those found there.
fn posix_queues() -> Vec<ObjectInfo> {
    let mut names: Vec<String> = registry::entries()
        .into_iter()
        .filter(|e| e.kind == Kind::PosixQueue)
        .map(|e| e.object)
        .collect();
    if let Ok(dir) = std::fs::read_dir("/dev/mqueue") {
        names.extend(dir.filter_map(|e| e.ok()).filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix("ipckit.").map(str::to_string)
        }));
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(
            |name| match crate::mq::PosixQueue::open(&name).and_then(|q| q.attributes()) {
                Ok(attrs) => ObjectInfo {
                    depth: Some(attrs.depth as u64),
                    capacity: Some(attrs.capacity.to_string()),
                    ..ObjectInfo::bare("posix-mq", name, None)
                },
                Err(err) => ObjectInfo::bare("posix-mq", name, Some(err.to_string())),
            },
        )
        .collect()
}

/// Whether `path` is a service's connection port (listed as a service, not as a socket).
fn is_service_port(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.starts_with("ipckit.service."))
}

/// What the kernel says of a registered FIFO, socket file or System V object; `None` if it
/// is gone (the entry is stale).
fn registered(entry: &Entry) -> Option<ObjectInfo> {
    let kind = entry.kind.as_str();
    let bare = || ObjectInfo::bare(kind, entry.object.clone(), None);
    let (alive, dead) = match entry.creator_liveness() {
        Liveness::Alive => (1, 0),
        Liveness::Dead => (0, 1),
    };
    match entry.kind {
        Kind::Fifo | Kind::UnixSocket => {
            let meta = std::fs::symlink_metadata(&entry.object).ok()?;
            let is_kind = if entry.kind == Kind::Fifo {
                meta.file_type().is_fifo()
            } else {
                meta.file_type().is_socket()
            };
            if !is_kind {
                // Something else took the path: not ours any more.
                return None;
            }
            let mode = Some(meta.mode() & 0o7777);
            if entry.kind == Kind::Fifo {
                // A FIFO outlives its creator, like a mailbox: who made it says nothing.
                return Some(ObjectInfo { mode, ..bare() });
            }
            Some(ObjectInfo {
                mode,
                alive,
                dead,
                ..bare()
            })
        }
        Kind::SysvQueue => {
            // perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime
            let row = registry::sysv_row(entry.kind, &entry.object)?;
            Some(ObjectInfo {
                mode: sysv_mode(&row),
                depth: row.get(2).and_then(|n| n.parse().ok()),
                ..bare()
            })
        }
        Kind::SysvSegment => {
            // perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap
            let row = registry::sysv_row(entry.kind, &entry.object)?;
            let attached = row.get(4).and_then(|n| n.parse().ok()).unwrap_or(0);
            Some(ObjectInfo {
                mode: sysv_mode(&row),
                capacity: row.get(1).map(|size| format!("{size} bytes")),
                alive: attached,
                ..bare()
            })
        }
        // Listed by `posix_queues`.
        Kind::PosixQueue => None,
    }
}

/// The permission bits of a `/proc/sysvipc` row (printed in octal, with flag bits above).
fn sysv_mode(row: &[String]) -> Option<u32> {
    row.first()
        .and_then(|perms| u32::from_str_radix(perms, 8).ok())
        .map(|perms| perms & 0o777)
}

/// Whether some process still has a socket bound at `path` (of any of the three types).
fn socket_accepts(path: &Path) -> bool {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let Ok(addr) = SocketAddrUnix::new(path) else {
        return false;
    };
    [SocketType::STREAM, SocketType::DGRAM, SocketType::SEQPACKET]
        .into_iter()
        .any(|kind| {
            rustix::net::socket(AddressFamily::UNIX, kind, None)
                .is_ok_and(|fd| rustix::net::connect(&fd, &addr).is_ok())
        })
}

/// Named segments of kinds other than mailboxes and topics (`Shared<T>`, bounded buffers,
/// an application's own kinds): `/dev/shm/ipckit.KIND.NAME` with a valid header.
fn other_segments() -> Vec<ObjectInfo> {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    let known = [mailbox::KIND, mailbox::CHAIN_KIND, topic::KIND];
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_string();
            let (kind, name) = file.strip_prefix("ipckit.")?.split_once('.')?;
            if known.contains(&kind) {
                return None;
            }
            let mode = e.metadata().ok().map(|m| m.mode() & 0o7777);
            let info = match Segment::open(kind, name) {
                Ok(segment) => ObjectInfo {
                    capacity: Some(format!("{} bytes", segment.payload_len())),
                    mode,
                    ..ObjectInfo::bare("segment", format!("{kind}.{name}"), None)
                },
                Err(err) => ObjectInfo {
                    mode,
                    ..ObjectInfo::bare("segment", format!("{kind}.{name}"), Some(err.to_string()))
                },
            };
            Some(info)
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
            // Removed between the listing and the open.
            Err(crate::Error::NotFound { .. }) => continue,
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
            Err(crate::Error::NotFound { .. }) => continue,
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
    objects.extend(other_segments());
    for entry in registry::entries() {
        if entry.kind == Kind::PosixQueue
            || (entry.kind == Kind::UnixSocket && is_service_port(&entry.object))
        {
            continue;
        }
        objects.push(registered(&entry).unwrap_or_else(|| {
            ObjectInfo::bare(
                entry.kind.as_str(),
                entry.object.clone(),
                Some("gone: it was removed without ipckit (clean forgets the entry)".into()),
            )
        }));
    }
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
            let report = t.repair();
            // A dead publisher's lock counts as one of its leftovers, as it always has.
            let forgot = report.dead_participants + report.reclaimed_slots;
            format!("forgot {forgot} dead participant(s)")
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
    for entry in registry::entries() {
        let kind = entry.kind.as_str();
        let gone = match entry.kind {
            Kind::PosixQueue => matches!(
                crate::mq::PosixQueue::open(&entry.object),
                Err(crate::Error::NotFound { .. })
            ),
            _ => registered(&entry).is_none(),
        };
        if gone {
            let action = if dry_run {
                "would forget the registry entry of an object that no longer exists"
            } else {
                registry::forget(entry.kind, &entry.object);
                "forgot the registry entry of an object that no longer exists"
            };
            actions.push(CleanAction {
                kind,
                name: entry.object,
                action: action.into(),
            });
            continue;
        }
        // A socket file outlives the process that bound it, and then only refuses
        // connections; a new server cannot bind the path until it is removed.
        let abandoned = entry.kind == Kind::UnixSocket
            && !is_service_port(&entry.object)
            && entry.creator_liveness() == Liveness::Dead
            && !socket_accepts(Path::new(&entry.object));
        if abandoned {
            let action = if dry_run {
                "would remove the socket file of a process that is gone".to_string()
            } else {
                match std::fs::remove_file(&entry.object) {
                    Ok(()) => {
                        registry::forget(entry.kind, &entry.object);
                        "removed the socket file of a process that is gone".to_string()
                    }
                    Err(e) => format!("could not remove {}: {e}", entry.object),
                }
            };
            actions.push(CleanAction {
                kind,
                name: entry.object,
                action,
            });
        }
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
