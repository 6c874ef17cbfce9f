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
//!
//! Cleaning is a plan: each owner of a kind of object (mailboxes, topics, services, chained
//! rings, the registry, inboxes) says what it finds and what it would do, as typed [`Action`]s;
//! [`Plan::preview`] prints the plan and [`Plan::run`] carries it out.
//!
//! # Under attack
//! `ls` and `clean` are run by root on machines other users share, and read what those users
//! wrote. Nothing a less-privileged user writes can make them touch an object that user could
//! not have removed: registry entries are trusted only as far as their writer (each user's
//! entries are in a directory only that user can write; see `docs/ARCHITECTURE.md`); paths are walked without following links and objects
//! removed through directory descriptors, after checking that the name still holds the object
//! that was checked; every probe is non-blocking (no `open` of a FIFO, no blocking `connect`)
//! and bounded; names outside the safe set are not opened. What is skipped is reported in
//! [`Listing::skipped`] / [`Plan::skipped`], and the rest is still listed.

mod at;
mod clean;

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use rustix::fs::FileType;
use serde::Serialize;

pub use clean::{clean, plan, Action, CleanAction, Plan, Step};

use crate::error::Result;
use crate::process::Liveness;
use crate::registry::{self, Entry, Kind};
use crate::shm::mailbox::{self, Mailbox, ParticipantInfo};
use crate::shm::segment::{check_name, Segment};
use crate::shm::topic::{Overflow, Topic};
use crate::Capacity;
use at::{Located, Missing};

/// The kinds of named object `ls` shows and `clean` acts on; serialised (and printed) as
/// `"mailbox"`, `"unix-socket"`...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ObjectKind {
    /// A mailbox (`/dev/shm/ipckit.mailbox.NAME`).
    Mailbox,
    /// A chained ring of an unbounded mailbox.
    MailboxChain,
    /// A topic.
    Topic,
    /// A service's connection port in the temp directory.
    Service,
    /// Any other named segment (`Shared<T>`, an application's own kinds).
    Segment,
    /// A named pipe.
    Fifo,
    /// A bound Unix socket file.
    UnixSocket,
    /// A System V message queue.
    SysvMq,
    /// A System V shared-memory segment.
    SysvShm,
    /// A POSIX message queue.
    PosixMq,
    /// An entry of ipckit's registry itself (only `clean` names these).
    Registry,
}

impl ObjectKind {
    /// The kind's name in `ipckit ls` and its JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Mailbox => mailbox::KIND,
            ObjectKind::MailboxChain => mailbox::CHAIN_KIND,
            ObjectKind::Topic => crate::shm::topic::KIND,
            ObjectKind::Service => "service",
            ObjectKind::Segment => "segment",
            ObjectKind::Fifo => "fifo",
            ObjectKind::UnixSocket => "unix-socket",
            ObjectKind::SysvMq => "sysv-mq",
            ObjectKind::SysvShm => "sysv-shm",
            ObjectKind::PosixMq => "posix-mq",
            ObjectKind::Registry => "registry",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for ObjectKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ObjectKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<Kind> for ObjectKind {
    fn from(kind: Kind) -> ObjectKind {
        match kind {
            Kind::Fifo => ObjectKind::Fifo,
            Kind::UnixSocket => ObjectKind::UnixSocket,
            Kind::SysvQueue => ObjectKind::SysvMq,
            Kind::SysvSegment => ObjectKind::SysvShm,
            Kind::PosixQueue => ObjectKind::PosixMq,
        }
    }
}

/// A participant's part in a mailbox, as `ls` and `clean` judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sends into the mailbox.
    Sender,
    /// Receives from it.
    Receiver,
}

impl Role {
    /// The role a participant-table entry records (`None` for a label this version does not
    /// know).
    pub fn of(participant: &ParticipantInfo) -> Option<Role> {
        match participant.role {
            "sender" => Some(Role::Sender),
            "receiver" => Some(Role::Receiver),
            _ => None,
        }
    }
}

/// One named object, as `ipckit ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    /// What it is.
    pub kind: ObjectKind,
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
    /// What a waiter on this object may be waiting for: slots and locks held by a process,
    /// with its pid and whether it is alive (at most [`MAX_HELD_SHOWN`], then a count).
    pub held: Vec<String>,
    /// A mailbox's sources of idempotent senders (one per remote stream of a bridge): who
    /// owns each and how far its delivery has got. Empty for other kinds.
    pub sources: Vec<SourceSummary>,
}

/// A mailbox's source of an idempotent sender, as `ipckit ls` shows it (from
/// [`mailbox::SourceInfo`]); its [`Display`](fmt::Display) is the line `ls` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceSummary {
    /// The 16-byte source id as 32 lowercase hex digits.
    pub id: String,
    /// The pid owning the source now, `None` if nobody does (let go, or never taken).
    pub owner: Option<u32>,
    /// Whether that owner is alive, by the source's liveness lock. A dead owner's source
    /// waits, with its history, for the next sender with its id.
    pub owner_alive: bool,
    /// How many numbered messages were delivered (the next number a restarted sender sends).
    pub delivered: u64,
    /// The number of a message being sent and not yet committed (with a dead owner: the one
    /// it was killed sending, settled by the next owner), if any.
    pub in_flight: Option<u64>,
    /// When the source was last taken or let go, in nanoseconds since the Unix epoch.
    pub last_used_unix_ns: Option<u64>,
    /// `false` if the entry was read while being rewritten each time (the numbers may then
    /// mix two records).
    pub consistent: bool,
}

impl From<&mailbox::SourceInfo> for SourceSummary {
    fn from(info: &mailbox::SourceInfo) -> SourceSummary {
        SourceSummary {
            id: info.id_hex(),
            owner: info.owner,
            owner_alive: info.owner_alive,
            delivered: info.delivered,
            in_flight: info.in_flight,
            last_used_unix_ns: info.last_used.and_then(|at| {
                let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
                u64::try_from(since.as_nanos()).ok()
            }),
            consistent: info.consistent,
        }
    }
}

impl fmt::Display for SourceSummary {
    /// `source 3f2a...c1 (pid 1234, alive): 4000 delivered, #4000 in flight`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "source {} (", self.id)?;
        match (self.owner, self.owner_alive) {
            (Some(pid), true) => write!(f, "pid {pid}, alive")?,
            (Some(pid), false) => write!(f, "pid {pid}, dead")?,
            (None, true) => write!(f, "being taken")?,
            (None, false) => write!(f, "no owner")?,
        }
        write!(f, "): {} delivered", self.delivered)?;
        if let Some(seq) = self.in_flight {
            write!(f, ", #{seq} in flight")?;
        }
        if !self.consistent {
            write!(f, " (read while being rewritten)")?;
        }
        Ok(())
    }
}

/// How many held slots or locks [`ObjectInfo::held`] lists before summing up the rest.
pub const MAX_HELD_SHOWN: usize = 8;

/// Describes what processes hold: `what` held by `pid`, alive or not (as `alive` judges it);
/// at most [`MAX_HELD_SHOWN`] lines and one that counts the rest.
fn held_by(
    items: impl IntoIterator<Item = (String, u32)>,
    alive: impl Fn(u32) -> bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut more = 0usize;
    for (what, pid) in items {
        if lines.len() == MAX_HELD_SHOWN {
            more += 1;
            continue;
        }
        let state = if alive(pid) {
            "alive"
        } else {
            "dead: ipckit clean frees it"
        };
        lines.push(format!("{what} held by pid {pid} ({state})"));
    }
    if more > 0 {
        lines.push(format!("and {more} more"));
    }
    lines
}

impl ObjectInfo {
    fn bare(kind: ObjectKind, name: String, error: Option<String>) -> ObjectInfo {
        ObjectInfo {
            kind,
            name,
            depth: None,
            capacity: None,
            mode: None,
            alive: 0,
            dead: 0,
            error,
            held: Vec::new(),
            sources: Vec::new(),
        }
    }
}

/// Something `ls` or `clean` found and left alone, and why: a bad registry entry, a planted
/// file, a name outside the safe set. The CLI reports these on stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// What it is (a path, or `KIND NAME`), exactly as found: escape it before printing.
    pub what: String,
    /// Why it was skipped.
    pub why: String,
}

/// Everything [`inspect`] found: the objects, and what it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The objects, sorted by kind and name.
    pub objects: Vec<ObjectInfo>,
    /// What was found but not listed, and why.
    pub skipped: Vec<Skipped>,
}

/// The skipped findings of one survey.
#[derive(Debug, Default)]
struct Skips(Vec<Skipped>);

impl Skips {
    fn push(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.0.push(Skipped {
            what: what.into(),
            why: why.into(),
        });
    }
}

const SERVICE_PREFIX: &str = "ipckit.service.";

/// The names of `kind`'s segments that are safe to open: in the safe set, and regular files
/// in `/dev/shm` (not a FIFO, a device or a link someone planted).
fn openable(kind: &str, names: Vec<String>, skips: &mut Skips) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| {
            let what = format!("/dev/shm/ipckit.{kind}.{name}");
            if let Err(e) = check_name("name", name) {
                skips.push(what, e.to_string());
                return false;
            }
            match at::shm_file_is_regular(&format!("ipckit.{kind}.{name}")) {
                Ok(()) => true,
                Err(why) => {
                    skips.push(what, why);
                    false
                }
            }
        })
        .collect()
}

/// Opens mailbox `name` for inspection. Its segment header is checked first, without the
/// grace period `Mailbox::open` gives a mailbox being created (half a second of retries): a
/// file planted under a mailbox's name must cost one failed check, not a wait.
fn open_mailbox(name: &str) -> Result<Mailbox> {
    Segment::open(mailbox::KIND, name).and_then(|_| Mailbox::open(name))
}

/// Opens topic `name` for inspection, its segment header checked first (see
/// [`open_mailbox`]).
fn open_topic(name: &str) -> Result<Topic> {
    Segment::open(crate::shm::topic::KIND, name).and_then(|_| Topic::open(name))
}

/// A service's connection port, and where it was found.
struct ServicePort {
    info: ObjectInfo,
    found: Located,
}

/// Service connection ports (`$TMPDIR/ipckit.service.NAME`): alive if a server accepts.
fn services(skips: &mut Skips) -> Vec<ServicePort> {
    let tmp = std::env::temp_dir();
    let Ok(dir) = at::open_dir(&tmp) else {
        return Vec::new();
    };
    let mut ports = Vec::new();
    for file in at::names_in(&dir) {
        if !file.as_bytes().starts_with(SERVICE_PREFIX.as_bytes()) {
            continue;
        }
        let what = tmp.join(&file).to_string_lossy().into_owned();
        let Some(name) = file.to_str().and_then(|f| f.strip_prefix(SERVICE_PREFIX)) else {
            skips.push(what, "not UTF-8");
            continue;
        };
        if let Err(e) = check_name("service name", name) {
            skips.push(what, e.to_string());
            continue;
        }
        let found = match at::located_in(dir.clone(), &file) {
            Ok(found) if found.seen.kind == FileType::Socket => found,
            Ok(found) => {
                skips.push(what, format!("a {:?}, not a socket", found.seen.kind));
                continue;
            }
            Err(Missing::Gone) => continue,
            Err(Missing::Refused(why)) => {
                skips.push(what, why);
                continue;
            }
        };
        let mut info = ObjectInfo::bare(ObjectKind::Service, name.to_string(), None);
        if found.socket_accepts() {
            info.alive = 1;
        } else {
            info.dead = 1;
        }
        info.mode = Some(found.seen.mode);
        ports.push(ServicePort { info, found });
    }
    ports
}

/// POSIX queues ipckit created: those the registry names, and, where the mqueue filesystem
/// is mounted at `/dev/mqueue`, those found there.
fn posix_queues(entries: &[Entry], skips: &mut Skips) -> Vec<ObjectInfo> {
    let mut names: Vec<String> = entries
        .iter()
        .filter(|e| e.kind == Kind::PosixQueue)
        .map(|e| e.object.clone())
        .collect();
    if let Ok(dir) = std::fs::read_dir("/dev/mqueue") {
        names.extend(dir.filter_map(|e| e.ok()).filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix("ipckit.").map(str::to_string)
        }));
    }
    names.sort();
    names.dedup();
    let mut queues = Vec::new();
    for name in names {
        if let Err(e) = check_name("queue name", &name) {
            skips.push(format!("posix-mq {name}"), e.to_string());
            continue;
        }
        queues.push(
            match crate::mq::PosixQueue::open(&name).and_then(|q| q.attributes()) {
                Ok(attrs) => ObjectInfo {
                    depth: Some(attrs.depth as u64),
                    capacity: Some(attrs.capacity.to_string()),
                    ..ObjectInfo::bare(ObjectKind::PosixMq, name, None)
                },
                Err(err) => ObjectInfo::bare(ObjectKind::PosixMq, name, Some(err.to_string())),
            },
        );
    }
    queues
}

/// Whether `path` is a service's connection port (listed as a service, not as a socket).
fn is_service_port(path: &str) -> bool {
    std::path::Path::new(path)
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.starts_with(SERVICE_PREFIX))
}

/// What the kernel says of a registered object.
enum Registered {
    /// It is gone: the entry is stale.
    Gone,
    /// The entry cannot be honoured (it names what its writer could not remove, or a path
    /// through a link...): why.
    Untrusted(String),
    /// It is there; a FIFO or socket file with where it was found.
    Here(Box<ObjectInfo>, Option<Located>),
}

/// What the kernel says of a registered FIFO, socket file or System V object, as far as the
/// entry's writer is trusted.
fn registered(entry: &Entry) -> Registered {
    let kind = ObjectKind::from(entry.kind);
    let bare = || ObjectInfo::bare(kind, entry.object.clone(), None);
    let (alive, dead) = match entry.creator_liveness() {
        Liveness::Alive => (1, 0),
        Liveness::Dead => (0, 1),
    };
    match entry.kind {
        Kind::Fifo | Kind::UnixSocket => {
            let found = match at::locate(&entry.object) {
                Ok(found) => found,
                Err(Missing::Gone) => return Registered::Gone,
                Err(Missing::Refused(why)) => return Registered::Untrusted(why),
            };
            // Trust first: what its writer could not remove is not even described.
            if !found.removable_by(entry.owner) {
                return Registered::Untrusted(format!(
                    "an entry of uid {} for an object of uid {} that it could not remove itself",
                    entry.owner, found.seen.uid
                ));
            }
            let expected = if entry.kind == Kind::Fifo {
                FileType::Fifo
            } else {
                FileType::Socket
            };
            if found.seen.kind != expected {
                // Something else took the path: not ours any more.
                return Registered::Gone;
            }
            let mode = Some(found.seen.mode);
            if entry.kind == Kind::Fifo {
                // A FIFO outlives its creator, like a mailbox: who made it says nothing.
                return Registered::Here(Box::new(ObjectInfo { mode, ..bare() }), Some(found));
            }
            let info = ObjectInfo {
                mode,
                alive,
                dead,
                ..bare()
            };
            Registered::Here(Box::new(info), Some(found))
        }
        Kind::SysvQueue | Kind::SysvSegment => {
            // msg: perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime
            // shm: perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap
            let Some(row) = registry::sysv_row(entry.kind, &entry.object) else {
                return Registered::Gone;
            };
            let uid = |col: usize| row.get(col).and_then(|n| n.parse::<u32>().ok());
            if entry.owner != 0 && uid(5) != Some(entry.owner) && uid(7) != Some(entry.owner) {
                return Registered::Untrusted(format!(
                    "an entry of uid {} for an object it neither owns nor created",
                    entry.owner
                ));
            }
            let info = if entry.kind == Kind::SysvQueue {
                ObjectInfo {
                    mode: sysv_mode(&row),
                    depth: row.get(2).and_then(|n| n.parse().ok()),
                    ..bare()
                }
            } else {
                ObjectInfo {
                    mode: sysv_mode(&row),
                    capacity: row.get(1).map(|size| format!("{size} bytes")),
                    alive: row.get(4).and_then(|n| n.parse().ok()).unwrap_or(0),
                    ..bare()
                }
            };
            Registered::Here(Box::new(info), None)
        }
        // Listed by `posix_queues`; only its absence matters here.
        Kind::PosixQueue => {
            if let Err(e) = check_name("queue name", &entry.object) {
                return Registered::Untrusted(e.to_string());
            }
            match crate::mq::PosixQueue::open(&entry.object) {
                Err(crate::Error::NotFound { .. }) => Registered::Gone,
                _ => Registered::Here(Box::new(bare()), None),
            }
        }
    }
}

/// The permission bits of a `/proc/sysvipc` row (printed in octal, with flag bits above).
fn sysv_mode(row: &[String]) -> Option<u32> {
    row.first()
        .and_then(|perms| u32::from_str_radix(perms, 8).ok())
        .map(|perms| perms & 0o777)
}

/// Registry entries, with what was skipped reading them.
fn registry_entries(skips: &mut Skips) -> Vec<Entry> {
    let (entries, bad) = registry::entries();
    for (what, why) in bad {
        skips.push(what, why);
    }
    entries
}

/// Named segments of kinds other than mailboxes and topics (`Shared<T>`, bounded buffers,
/// an application's own kinds): `/dev/shm/ipckit.KIND.NAME` with a valid header.
fn other_segments(skips: &mut Skips) -> Vec<ObjectInfo> {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    let known = [
        ObjectKind::Mailbox,
        ObjectKind::MailboxChain,
        ObjectKind::Topic,
    ];
    let mut segments = Vec::new();
    for e in dir.filter_map(|e| e.ok()) {
        let file = e.file_name();
        let Some((kind, name)) = file
            .to_str()
            .and_then(|f| f.strip_prefix("ipckit."))
            .and_then(|f| f.split_once('.'))
        else {
            continue;
        };
        if known.iter().any(|k| k == kind)
            || openable(kind, vec![name.to_string()], skips).is_empty()
        {
            continue;
        }
        let segment = ObjectInfo {
            mode: e.metadata().ok().map(|m| m.mode() & 0o7777),
            ..ObjectInfo::bare(ObjectKind::Segment, format!("{kind}.{name}"), None)
        };
        segments.push(match Segment::open(kind, name) {
            Ok(opened) => ObjectInfo {
                capacity: Some(format!("{} bytes", opened.payload_len())),
                ..segment
            },
            Err(err) => ObjectInfo {
                error: Some(err.to_string()),
                ..segment
            },
        });
    }
    segments
}

/// Rings of unbounded mailboxes whose mailbox has been removed.
fn orphan_chain_rings(skips: &mut Skips) -> Result<Vec<String>> {
    let mailboxes = Mailbox::list()?;
    let chained = Segment::list(mailbox::CHAIN_KIND)?;
    Ok(openable(mailbox::CHAIN_KIND, chained, skips)
        .into_iter()
        .filter(|chained| {
            let owner = chained.split_once('.').map_or("", |(_, name)| name);
            !mailboxes.iter().any(|m| m == owner)
        })
        .collect())
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
    inspect().map(|listing| listing.objects)
}

/// Lists every named ipckit object on this machine, and what was found but skipped (bad
/// registry entries, planted files, names outside the safe set), each with the reason.
///
/// # Errors
/// Only if `/dev/shm` cannot be read; an object that cannot be opened is listed with its
/// `error`.
pub fn inspect() -> Result<Listing> {
    let mut skips = Skips::default();
    let mut objects = Vec::new();
    for name in openable(mailbox::KIND, Mailbox::list()?, &mut skips) {
        objects.push(match open_mailbox(&name) {
            Ok(mailbox) => {
                let info = mailbox.info();
                let alive = info.participants.iter().filter(|p| p.alive).count();
                ObjectInfo {
                    depth: Some(info.depth),
                    capacity: Some(capacity_text(info.capacity)),
                    mode: Some(info.mode),
                    alive,
                    dead: info.participants.len() - alive,
                    // A holder is alive if a participant entry of its pid is (liveness locks,
                    // right across PID namespaces).
                    held: held_by(
                        info.held_slots
                            .iter()
                            .map(|&(pos, pid)| (format!("slot of message {pos}"), pid)),
                        |pid| info.participants.iter().any(|p| p.pid == pid && p.alive),
                    ),
                    sources: info.sources.iter().map(SourceSummary::from).collect(),
                    ..ObjectInfo::bare(ObjectKind::Mailbox, name, None)
                }
            }
            // Removed between the listing and the open.
            Err(crate::Error::NotFound { .. }) => continue,
            Err(err) => ObjectInfo::bare(ObjectKind::Mailbox, name, Some(err.to_string())),
        });
    }
    for name in openable(crate::shm::topic::KIND, Topic::list()?, &mut skips) {
        objects.push(match open_topic(&name) {
            Ok(t) => {
                let info = t.info();
                let overflow = match info.overflow {
                    Overflow::Overrun => "overrun",
                    _ => "backpressure",
                };
                ObjectInfo {
                    depth: info.slowest_lag,
                    capacity: Some(format!("{}:{overflow}", info.capacity)),
                    mode: Some(info.mode),
                    alive: info.subscribers + info.publishers,
                    dead: info.dead_subscribers,
                    held: held_by(
                        info.publish_lock_holder
                            .map(|pid| ("the publish lock".to_string(), pid)),
                        |_| !info.publish_lock_holder_dead,
                    ),
                    ..ObjectInfo::bare(ObjectKind::Topic, name, None)
                }
            }
            Err(crate::Error::NotFound { .. }) => continue,
            Err(err) => ObjectInfo::bare(ObjectKind::Topic, name, Some(err.to_string())),
        });
    }
    objects.extend(services(&mut skips).into_iter().map(|port| port.info));
    let entries = registry_entries(&mut skips);
    objects.extend(posix_queues(&entries, &mut skips));
    objects.extend(other_segments(&mut skips));
    for entry in entries {
        if entry.kind == Kind::PosixQueue
            || (entry.kind == Kind::UnixSocket && is_service_port(&entry.object))
        {
            continue;
        }
        match registered(&entry) {
            Registered::Here(info, _) => objects.push(*info),
            Registered::Gone => objects.push(ObjectInfo::bare(
                entry.kind.into(),
                entry.object.clone(),
                Some("gone: it was removed without ipckit (clean forgets the entry)".into()),
            )),
            Registered::Untrusted(why) => skips.push(
                format!("{} {}", ObjectKind::from(entry.kind), entry.object),
                why,
            ),
        }
    }
    for name in orphan_chain_rings(&mut skips)? {
        objects.push(ObjectInfo::bare(
            ObjectKind::MailboxChain,
            name,
            Some("its mailbox is gone".into()),
        ));
    }
    objects.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
    Ok(Listing {
        objects,
        skipped: skips.0,
    })
}
