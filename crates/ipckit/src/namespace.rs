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

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::process::Liveness;
use crate::registry::{self, Entry, Kind};
use crate::shm::mailbox::{self, Mailbox, ParticipantInfo};
use crate::shm::segment::Segment;
use crate::shm::topic::{Overflow, Topic};
use crate::Capacity;

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
            let mut info = ObjectInfo::bare(ObjectKind::Service, name, None);
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
                    ..ObjectInfo::bare(ObjectKind::PosixMq, name, None)
                },
                Err(err) => ObjectInfo::bare(ObjectKind::PosixMq, name, Some(err.to_string())),
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
    let kind = ObjectKind::from(entry.kind);
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
    let known = [
        ObjectKind::Mailbox,
        ObjectKind::MailboxChain,
        ObjectKind::Topic,
    ];
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_string();
            let (kind, name) = file.strip_prefix("ipckit.")?.split_once('.')?;
            if known.iter().any(|k| k == kind) {
                return None;
            }
            let mode = e.metadata().ok().map(|m| m.mode() & 0o7777);
            let segment = ObjectInfo::bare(ObjectKind::Segment, format!("{kind}.{name}"), None);
            let info = match Segment::open(kind, name) {
                Ok(opened) => ObjectInfo {
                    capacity: Some(format!("{} bytes", opened.payload_len())),
                    mode,
                    ..segment
                },
                Err(err) => ObjectInfo {
                    mode,
                    error: Some(err.to_string()),
                    ..segment
                },
            };
            Some(info)
        })
        .collect()
}

/// Rings of unbounded mailboxes whose mailbox has been removed.
fn orphan_chain_rings() -> Result<Vec<String>> {
    let mailboxes = Mailbox::list()?;
    Ok(Segment::list(mailbox::CHAIN_KIND)?
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
    let mut objects = Vec::new();
    for name in Mailbox::list()? {
        objects.push(match Mailbox::open(&name) {
            Ok(mailbox) => {
                let info = mailbox.info();
                let alive = info.participants.iter().filter(|p| p.alive).count();
                ObjectInfo {
                    depth: Some(info.depth),
                    capacity: Some(capacity_text(info.capacity)),
                    mode: Some(info.mode),
                    alive,
                    dead: info.participants.len() - alive,
                    ..ObjectInfo::bare(ObjectKind::Mailbox, name, None)
                }
            }
            // Removed between the listing and the open.
            Err(crate::Error::NotFound { .. }) => continue,
            Err(err) => ObjectInfo::bare(ObjectKind::Mailbox, name, Some(err.to_string())),
        });
    }
    for name in Topic::list()? {
        objects.push(match Topic::open(&name) {
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
                    ..ObjectInfo::bare(ObjectKind::Topic, name, None)
                }
            }
            Err(crate::Error::NotFound { .. }) => continue,
            Err(err) => ObjectInfo::bare(ObjectKind::Topic, name, Some(err.to_string())),
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
                entry.kind.into(),
                entry.object.clone(),
                Some("gone: it was removed without ipckit (clean forgets the entry)".into()),
            )
        }));
    }
    for name in orphan_chain_rings()? {
        objects.push(ObjectInfo::bare(
            ObjectKind::MailboxChain,
            name,
            Some("its mailbox is gone".into()),
        ));
    }
    objects.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
    Ok(objects)
}

/// One thing [`clean`] would do, typed: what it found and what it would do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Action {
    /// A mailbox with dead participants or slots held by dead processes: forget and reclaim
    /// them, keep the unread messages.
    RepairMailbox {
        /// Participant entries of dead processes.
        dead_participants: usize,
        /// Slots held by dead processes.
        held_slots: usize,
        /// Messages waiting, which stay.
        unread: u64,
    },
    /// A topic with dead subscribers: forget them.
    RepairTopic {
        /// Subscribers that died without detaching.
        dead_subscribers: usize,
    },
    /// A service port no server accepts on any more: remove the socket file.
    RemoveServicePort,
    /// A chained ring whose mailbox is gone: remove it.
    RemoveChainRing,
    /// A registry entry whose object no longer exists: forget it.
    ForgetEntry,
    /// A socket file whose creator is dead and which nobody accepts on: remove it.
    RemoveSocketFile,
    /// A direct-naming inbox whose process is gone: remove it (with what it held).
    RemoveInbox {
        /// Messages it held, lost with it.
        unread: u64,
    },
}

impl Action {
    /// What this action would do, as one sentence.
    pub fn preview(&self) -> String {
        match self {
            Action::RepairMailbox {
                dead_participants,
                held_slots,
                unread,
            } => format!(
                "would forget {dead_participants} dead participant(s) and reclaim {held_slots} \
                 slot(s); keeps {unread} unread message(s)"
            ),
            Action::RepairTopic { dead_subscribers } => {
                format!("would forget {dead_subscribers} dead subscriber(s)")
            }
            Action::RemoveServicePort => {
                "would remove the socket file of a server that is gone".into()
            }
            Action::RemoveChainRing => "would remove a chained ring whose mailbox is gone".into(),
            Action::ForgetEntry => {
                "would forget the registry entry of an object that no longer exists".into()
            }
            Action::RemoveSocketFile => {
                "would remove the socket file of a process that is gone".into()
            }
            Action::RemoveInbox { unread } => {
                format!("would remove an inbox whose process is gone ({unread} unread)")
            }
        }
    }
}

/// Where a step acts; kept private so that a plan can only be run as it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Mailbox,
    Topic,
    File(PathBuf),
    ChainRing,
    Entry(Kind),
    SocketFile(Kind),
}

/// One step of a [`Plan`]: an object and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// What would be done.
    pub action: Action,
    target: Target,
}

impl Step {
    fn new(kind: ObjectKind, name: String, action: Action, target: Target) -> Step {
        Step {
            kind,
            name,
            action,
            target,
        }
    }

    /// Carries the step out; returns what was done, as one sentence.
    fn run(&self) -> String {
        let removed = |what: &str, result: std::io::Result<()>| match result {
            Ok(()) => format!("removed {what}"),
            Err(e) => format!("could not remove {what}: {e}"),
        };
        match (&self.target, &self.action) {
            (Target::Mailbox, Action::RepairMailbox { .. }) => match Mailbox::open(&self.name) {
                Ok(mailbox) => {
                    let report = mailbox.repair();
                    format!(
                        "forgot {} dead participant(s), reclaimed {} slot(s); kept {} unread \
                         message(s)",
                        report.dead_participants,
                        report.reclaimed_slots,
                        mailbox.info().depth
                    )
                }
                Err(e) => format!("could not open it to repair: {e}"),
            },
            (Target::Topic, _) => match Topic::open(&self.name) {
                Ok(t) => format!("forgot {} dead participant(s)", t.repair()),
                Err(e) => format!("could not open it to repair: {e}"),
            },
            (Target::File(path), Action::RemoveServicePort) => removed(
                "the socket file of a server that is gone",
                std::fs::remove_file(path),
            ),
            (Target::ChainRing, _) => {
                let _ = Segment::unlink(mailbox::CHAIN_KIND, &self.name);
                "removed a chained ring whose mailbox is gone".into()
            }
            (Target::Entry(kind), _) => {
                registry::forget(*kind, &self.name);
                "forgot the registry entry of an object that no longer exists".into()
            }
            (Target::SocketFile(kind), _) => {
                let result = std::fs::remove_file(&self.name);
                if result.is_ok() {
                    registry::forget(*kind, &self.name);
                }
                removed("the socket file of a process that is gone", result)
            }
            (_, Action::RemoveInbox { unread }) => {
                let _ = Mailbox::remove(&self.name);
                format!("removed an inbox whose process is gone ({unread} unread)")
            }
            (target, action) => format!("nothing done: {action:?} does not apply to {target:?}"),
        }
    }
}

/// What [`clean`] found to do: [`preview`](Plan::preview) it or [`run`](Plan::run) it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The steps, in the order they run.
    pub steps: Vec<Step>,
}

impl Plan {
    /// What each step would do, changing nothing.
    pub fn preview(&self) -> Vec<CleanAction> {
        self.steps
            .iter()
            .map(|s| CleanAction::of(s, s.action.preview()))
            .collect()
    }

    /// Carries out every step; one that fails says so in its sentence and the rest still run.
    pub fn run(self) -> Vec<CleanAction> {
        self.steps
            .iter()
            .map(|s| CleanAction::of(s, s.run()))
            .collect()
    }
}

/// What [`clean`] did (or, with `dry_run`, would do) to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanAction {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// One sentence: what was (or would be) done.
    pub action: String,
}

impl CleanAction {
    fn of(step: &Step, action: String) -> CleanAction {
        CleanAction {
            kind: step.kind,
            name: step.name.clone(),
            action,
        }
    }
}

/// Mailboxes: dead participants and slots held by dead processes (inboxes to remove are
/// planned by [`inbox_steps`] instead).
fn mailbox_steps(inboxes: &[String]) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for name in Mailbox::list()? {
        if inboxes.contains(&name) {
            continue;
        }
        // Not a valid mailbox (another program's file, or corrupt): not ours to touch.
        let Ok(mailbox) = Mailbox::open(&name) else {
            continue;
        };
        let info = mailbox.info();
        let dead_participants = info.participants.iter().filter(|p| !p.alive).count();
        let held_slots = info
            .held_slots
            .iter()
            .filter(|(_, pid)| crate::process::liveness(*pid, None) == Liveness::Dead)
            .count();
        if dead_participants + held_slots > 0 {
            let action = Action::RepairMailbox {
                dead_participants,
                held_slots,
                unread: info.depth,
            };
            steps.push(Step::new(
                ObjectKind::Mailbox,
                name,
                action,
                Target::Mailbox,
            ));
        }
    }
    Ok(steps)
}

/// Topics: dead subscribers.
fn topic_steps() -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for name in Topic::list()? {
        let Ok(t) = Topic::open(&name) else {
            continue;
        };
        let dead_subscribers = t.info().dead_subscribers;
        if dead_subscribers > 0 {
            let action = Action::RepairTopic { dead_subscribers };
            steps.push(Step::new(ObjectKind::Topic, name, action, Target::Topic));
        }
    }
    Ok(steps)
}

/// Services: ports of servers that are gone.
fn service_steps() -> Vec<Step> {
    services()
        .into_iter()
        .filter(|s| s.dead > 0)
        .map(|s| {
            let path = std::env::temp_dir().join(format!("ipckit.service.{}", s.name));
            let target = Target::File(path);
            Step::new(
                ObjectKind::Service,
                s.name,
                Action::RemoveServicePort,
                target,
            )
        })
        .collect()
}

/// Chained rings whose mailbox is gone.
fn chain_steps() -> Result<Vec<Step>> {
    Ok(orphan_chain_rings()?
        .into_iter()
        .map(|name| {
            let (kind, action) = (ObjectKind::MailboxChain, Action::RemoveChainRing);
            Step::new(kind, name, action, Target::ChainRing)
        })
        .collect())
}

/// Registry entries: stale ones, and socket files their dead creators left.
fn registry_steps() -> Vec<Step> {
    let mut steps = Vec::new();
    for entry in registry::entries() {
        let kind = ObjectKind::from(entry.kind);
        let gone = match entry.kind {
            Kind::PosixQueue => matches!(
                crate::mq::PosixQueue::open(&entry.object),
                Err(crate::Error::NotFound { .. })
            ),
            _ => registered(&entry).is_none(),
        };
        if gone {
            let target = Target::Entry(entry.kind);
            steps.push(Step::new(kind, entry.object, Action::ForgetEntry, target));
            continue;
        }
        // A socket file outlives the process that bound it, and then only refuses
        // connections; a new server cannot bind the path until it is removed.
        let abandoned = entry.kind == Kind::UnixSocket
            && !is_service_port(&entry.object)
            && entry.creator_liveness() == Liveness::Dead
            && !socket_accepts(Path::new(&entry.object));
        if abandoned {
            let target = Target::SocketFile(entry.kind);
            steps.push(Step::new(
                kind,
                entry.object,
                Action::RemoveSocketFile,
                target,
            ));
        }
    }
    steps
}

/// Direct-naming inboxes belong to a process: one whose owner died is garbage.
fn inbox_steps() -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for name in Mailbox::list()?
        .into_iter()
        .filter(|n| n.starts_with("inbox."))
    {
        let Ok(mailbox) = Mailbox::open(&name) else {
            continue;
        };
        let info = mailbox.info();
        let receiver = |p: &&ParticipantInfo| Role::of(p) == Some(Role::Receiver);
        if info.participants.iter().filter(receiver).any(|p| p.alive) {
            continue;
        }
        let pid_gone = name
            .strip_prefix("inbox.")
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| crate::process::liveness(pid, None) == Liveness::Dead);
        if !pid_gone && !info.participants.iter().any(|p| receiver(&p)) {
            // A named inbox with no receiver entry at all: not provably abandoned.
            continue;
        }
        let action = Action::RemoveInbox { unread: info.depth };
        steps.push(Step::new(
            ObjectKind::Mailbox,
            name,
            action,
            Target::Mailbox,
        ));
    }
    Ok(steps)
}

/// What [`clean`] would do, changing nothing: each owner's findings, in one plan.
///
/// # Errors
/// Only if `/dev/shm` cannot be read.
pub fn plan() -> Result<Plan> {
    let inboxes = inbox_steps()?;
    let inbox_names: Vec<String> = inboxes.iter().map(|s| s.name.clone()).collect();
    let mut steps = mailbox_steps(&inbox_names)?;
    steps.extend(topic_steps()?);
    steps.extend(service_steps());
    steps.extend(chain_steps()?);
    steps.extend(registry_steps());
    steps.extend(inboxes);
    Ok(Plan { steps })
}

/// Reclaims what dead processes left behind; with `dry_run`, only says what it would do.
///
/// # Errors
/// Only if `/dev/shm` cannot be read.
pub fn clean(dry_run: bool) -> Result<Vec<CleanAction>> {
    let plan = plan()?;
    Ok(if dry_run { plan.preview() } else { plan.run() })
}
