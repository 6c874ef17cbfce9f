//! `clean` as a plan: each owner of a kind of object says what it finds and what it would do;
//! one place previews the plan or runs it.

use serde::Serialize;

use super::{
    at::Located, is_service_port, open_mailbox, open_topic, openable, orphan_chain_rings,
    registered, registry_entries, services, ObjectKind, Registered, Role, Skipped, Skips,
};
use crate::error::Result;
use crate::process::Liveness;
use crate::registry::{self, Entry, Kind};
use crate::shm::mailbox::{self, Mailbox, ParticipantInfo};
use crate::shm::segment::Segment;
use crate::shm::topic::Topic;

/// One thing [`clean`] would do, typed: what it found and what it would do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Action {
    /// A mailbox with dead participants, slots held by dead processes, or chained rings a
    /// dead sender left unfinished: forget, reclaim and remove them, keep the unread
    /// messages.
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
    /// A service port no server accepts on any more: remove the socket file (and forget the
    /// registry entries naming it).
    RemoveServicePort,
    /// A chained ring whose mailbox is gone: remove it.
    RemoveChainRing,
    /// A registry entry whose object no longer exists: forget it.
    ForgetEntry,
    /// A socket file whose creator is dead and which nobody accepts on: remove it.
    RemoveSocketFile,
    /// An entry of the registry's old shared layout (untrusted, never read): forget it.
    ForgetOldEntry,
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
            Action::ForgetOldEntry => {
                "would forget a registry entry of the old layout (never trusted)".into()
            }
            Action::RemoveInbox { unread } => {
                format!("would remove an inbox whose process is gone ({unread} unread)")
            }
        }
    }
}

/// Where a step acts; kept private so that a plan can only be run as it was made.
#[derive(Debug, Clone)]
enum Target {
    /// The mailbox of the step's name.
    Mailbox,
    /// The topic of the step's name.
    Topic,
    /// A socket file found under a directory held open (and the registry entries that name
    /// it, forgotten with it: one `clean` leaves neither behind).
    SocketFile(Located, Vec<Entry>),
    /// The chained ring of the step's name.
    ChainRing,
    /// A stale registry entry.
    Entry(Entry),
    /// An entry of the registry's old layout, by file name.
    OldEntry(String),
}

/// One step of a [`Plan`]: an object and what to do with it.
#[derive(Debug, Clone)]
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
        match (&self.target, &self.action) {
            (Target::Mailbox, Action::RemoveInbox { unread }) => {
                match Mailbox::remove(&self.name) {
                    Ok(()) => format!("removed an inbox whose process is gone ({unread} unread)"),
                    Err(e) => format!("could not remove an inbox whose process is gone: {e}"),
                }
            }
            (Target::Mailbox, _) => match open_mailbox(&self.name) {
                Ok(mailbox) => {
                    let report = mailbox.repair();
                    let rings = match report.removed_rings {
                        0 => String::new(),
                        n => format!(", removed {n} chained ring(s) a dead sender left unfinished"),
                    };
                    format!(
                        "forgot {} dead participant(s), reclaimed {} slot(s){rings}; kept {} \
                         unread message(s)",
                        report.dead_participants,
                        report.reclaimed_slots,
                        mailbox.info().depth
                    )
                }
                Err(e) => format!("could not open it to repair: {e}"),
            },
            (Target::Topic, _) => match open_topic(&self.name) {
                Ok(t) => {
                    let report = t.repair();
                    // A dead publisher's lock counts as one of its leftovers, as it always has.
                    let forgot = report.dead_participants + report.reclaimed_slots;
                    format!("forgot {forgot} dead participant(s)")
                }
                Err(e) => format!("could not open it to repair: {e}"),
            },
            (Target::SocketFile(found, entries), action) => {
                let what = if *action == Action::RemoveServicePort {
                    "the socket file of a server that is gone"
                } else {
                    "the socket file of a process that is gone"
                };
                match found.unlink_checked() {
                    Ok(()) => {
                        for entry in entries {
                            registry::forget_entry(entry);
                        }
                        format!("removed {what}")
                    }
                    Err(e) => format!("could not remove {what}: {e}"),
                }
            }
            (Target::ChainRing, _) => match Segment::unlink(mailbox::CHAIN_KIND, &self.name) {
                Ok(()) => "removed a chained ring whose mailbox is gone".into(),
                Err(e) => format!("could not remove a chained ring whose mailbox is gone: {e}"),
            },
            (Target::OldEntry(file), _) => match registry::forget_old_entry(file) {
                Ok(()) => "forgot a registry entry of the old layout (never trusted)".into(),
                Err(e) => format!("could not forget a registry entry of the old layout: {e}"),
            },
            (Target::Entry(entry), _) => {
                registry::forget_entry(entry);
                "forgot the registry entry of an object that no longer exists".into()
            }
        }
    }
}

/// What [`clean`] found to do: [`preview`](Plan::preview) it or [`run`](Plan::run) it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The steps, in the order they run.
    pub steps: Vec<Step>,
    /// What was found but left alone (bad registry entries, planted files, names outside the
    /// safe set), and why.
    pub skipped: Vec<Skipped>,
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
fn mailbox_steps(names: &[String], inboxes: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    for name in names.iter().filter(|n| !inboxes.contains(n)) {
        // Not a valid mailbox (another program's file, or corrupt): not ours to touch.
        let Ok(mailbox) = open_mailbox(name) else {
            continue;
        };
        let info = mailbox.info();
        let dead_participants = info.participants.iter().filter(|p| !p.alive).count();
        // Judged by the mailbox's liveness locks, not /proc (wrong across PID namespaces).
        let held_slots = info.dead_held_slots;
        if dead_participants + held_slots + info.unfinished_rings > 0 {
            let action = Action::RepairMailbox {
                dead_participants,
                held_slots,
                unread: info.depth,
            };
            let name = name.clone();
            steps.push(Step::new(
                ObjectKind::Mailbox,
                name,
                action,
                Target::Mailbox,
            ));
        }
    }
    steps
}

/// Topics: dead subscribers.
fn topic_steps(skips: &mut Skips) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for name in openable(crate::shm::topic::KIND, Topic::list()?, skips) {
        let Ok(t) = open_topic(&name) else {
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

/// Services: ports of servers that are gone, if their owner could remove them. Each step
/// carries the registry entries that name its port (the server's `StreamListener` recorded
/// one), so that removing the port forgets them too; they are returned as well, for
/// [`registry_steps`] to leave alone.
fn service_steps(entries: &[Entry], skips: &mut Skips) -> (Vec<Step>, Vec<Entry>) {
    let (mut steps, mut claimed) = (Vec::new(), Vec::new());
    for port in services(skips) {
        if port.info.dead == 0 {
            continue;
        }
        if !port.found.removable_by(port.found.seen.uid) {
            // Its owner could not remove it from where it is: neither will clean.
            let why = "its owner could not remove it from that directory; left alone";
            skips.push(format!("service {}", port.info.name), why);
            continue;
        }
        let naming = port_entries(entries, &port.found);
        claimed.extend(naming.iter().cloned());
        let target = Target::SocketFile(port.found, naming);
        let (name, action) = (port.info.name, Action::RemoveServicePort);
        steps.push(Step::new(ObjectKind::Service, name, action, target));
    }
    (steps, claimed)
}

/// The registry entries that name the service port `port`: those the registry trusts
/// (`registered` checks them as for any socket file) and that lead to the very file found,
/// by device and inode, not by path text (`TMPDIR` may differ between server and `clean`).
fn port_entries(entries: &[Entry], port: &Located) -> Vec<Entry> {
    entries
        .iter()
        .filter(|e| e.kind == Kind::UnixSocket && is_service_port(&e.object))
        .filter(|e| match registered(e) {
            Registered::Here(_, Some(found)) => {
                (found.seen.dev, found.seen.ino) == (port.seen.dev, port.seen.ino)
            }
            _ => false,
        })
        .cloned()
        .collect()
}

/// Chained rings whose mailbox is gone.
fn chain_steps(skips: &mut Skips) -> Result<Vec<Step>> {
    Ok(orphan_chain_rings(skips)?
        .into_iter()
        .map(|name| {
            let (kind, action) = (ObjectKind::MailboxChain, Action::RemoveChainRing);
            Step::new(kind, name, action, Target::ChainRing)
        })
        .collect())
}

/// Registry entries: stale ones, and socket files their dead creators left (only where the
/// entry's writer could have removed them). Entries in `claimed` are forgotten by the step
/// of the service port they name: planning them again would act twice on one object.
fn registry_steps(entries: Vec<Entry>, claimed: &[Entry], skips: &mut Skips) -> Vec<Step> {
    let mut steps = Vec::new();
    for entry in entries {
        if claimed.contains(&entry) {
            continue;
        }
        let kind = ObjectKind::from(entry.kind);
        let found = match registered(&entry) {
            Registered::Gone => {
                let name = entry.object.clone();
                steps.push(Step::new(
                    kind,
                    name,
                    Action::ForgetEntry,
                    Target::Entry(entry),
                ));
                continue;
            }
            Registered::Untrusted(why) => {
                skips.push(format!("{kind} {}", entry.object), why);
                continue;
            }
            Registered::Here(_, found) => found,
        };
        // A socket file outlives the process that bound it, and then only refuses
        // connections; a new server cannot bind the path until it is removed.
        let Some(found) = found.filter(|_| entry.kind == Kind::UnixSocket) else {
            continue;
        };
        let abandoned = !is_service_port(&entry.object)
            && entry.creator_liveness() == Liveness::Dead
            && !found.socket_accepts();
        if abandoned {
            let name = entry.object.clone();
            let target = Target::SocketFile(found, vec![entry]);
            steps.push(Step::new(kind, name, Action::RemoveSocketFile, target));
        }
    }
    for file in registry::old_entries() {
        let (kind, action) = (ObjectKind::Registry, Action::ForgetOldEntry);
        steps.push(Step::new(
            kind,
            file.clone(),
            action,
            Target::OldEntry(file),
        ));
    }
    steps
}

/// Direct-naming inboxes belong to a process: one whose owner died is garbage.
fn inbox_steps(names: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    for name in names.iter().filter(|n| n.starts_with("inbox.")) {
        let Ok(mailbox) = open_mailbox(name) else {
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
        let name = name.clone();
        steps.push(Step::new(
            ObjectKind::Mailbox,
            name,
            action,
            Target::Mailbox,
        ));
    }
    steps
}

/// What [`clean`] would do, changing nothing: each owner's findings, in one plan.
///
/// # Errors
/// Only if `/dev/shm` cannot be read.
pub fn plan() -> Result<Plan> {
    let mut skips = Skips::default();
    let mailboxes = openable(mailbox::KIND, Mailbox::list()?, &mut skips);
    let inboxes = inbox_steps(&mailboxes);
    let inbox_names: Vec<String> = inboxes.iter().map(|s| s.name.clone()).collect();
    let mut steps = mailbox_steps(&mailboxes, &inbox_names);
    steps.extend(topic_steps(&mut skips)?);
    // Read once: the service pass takes the entries of the ports it removes, the registry
    // pass the rest (and what was skipped reading them is reported once).
    let entries = registry_entries(&mut skips);
    let (services, claimed) = service_steps(&entries, &mut skips);
    steps.extend(services);
    steps.extend(chain_steps(&mut skips)?);
    steps.extend(registry_steps(entries, &claimed, &mut skips));
    steps.extend(inboxes);
    Ok(Plan {
        steps,
        skipped: skips.0,
    })
}

/// Reclaims what dead processes left behind; with `dry_run`, only says what it would do.
///
/// # Errors
/// Only if `/dev/shm` cannot be read.
pub fn clean(dry_run: bool) -> Result<Vec<CleanAction>> {
    let plan = plan()?;
    Ok(if dry_run { plan.preview() } else { plan.run() })
}
