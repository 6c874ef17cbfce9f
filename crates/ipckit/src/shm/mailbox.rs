//! The mailbox: a named, persistent message queue in shared memory (indirect naming), with no
//! system call on its fast path and no way for a crash to lose or tear a delivered message.
//!
//! ```
//! use ipckit::shm::Mailbox;
//! use ipckit::{MessageReceiver, MessageSender};
//! # let name = format!("doc-{}", std::process::id());
//!
//! let mailbox = Mailbox::builder(&name).capacity(64).max_message_size(256).create()?;
//! let mut tx = mailbox.sender()?;
//! let mut rx = Mailbox::open(&name)?.receiver()?;   // any process may open it by name
//! tx.send(b"job 1")?;
//! let msg = rx.recv()?;
//! assert_eq!(msg.data, b"job 1");
//! assert_eq!(msg.meta.sender_pid, Some(std::process::id()));
//! Mailbox::remove(&name)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! The file is `/dev/shm/ipckit.mailbox.NAME`. A mailbox and its unread messages outlive the
//! processes that use it until [`Mailbox::remove`]. Every sender and receiver is entered in
//! the participant table in the mailbox's header, with its pid and start time, so that
//! `ipckit ls` can tell who is attached and a slot held by a dead process can be reclaimed.
//!
//! See [`ring`](super::ring) for the slot protocol that makes it crash-safe.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ring::{
    self, Claim, Ring, WaitWord, FLAG_RENDEZVOUS, MAX_CAPACITY, MAX_MESSAGE, MAX_PARTICIPANTS,
};
use super::segment::Segment;
use crate::error::{Error, Result};
use crate::link::{
    check_size, Capacity, Deadline, MessageReceiver, MessageSender, Metadata, WhenFull,
};
use crate::process::{liveness, Liveness, ProcessIdentity};
use crate::sync::futex;
use crate::sync::primitive::Ordering;

/// The segment kind of mailboxes: their files are `/dev/shm/ipckit.mailbox.NAME`.
pub const KIND: &str = "mailbox";

/// Default maximum message size, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 4096;
/// Default capacity, in messages.
pub const DEFAULT_CAPACITY: usize = 64;
/// Default bound of a sender's overflow cache ([`WhenFull::Cache`]), in messages.
pub const DEFAULT_CACHE_LIMIT: usize = 1024;

/// How often a waiter that is blocked by another process's slot checks that it is alive.
const LIVENESS_POLL: Duration = Duration::from_millis(20);

/// How a blocked sender or receiver waits.
///
/// On a virtual machine an idle vCPU halts, so waking a sleeper costs tens of microseconds,
/// while a hand-off between two spinning cores costs a few hundred nanoseconds: spinning buys
/// latency with CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin until the deadline; never sleep (lowest latency, one core busy while waiting).
    BusyPoll,
    /// Spin this long, then sleep on a futex.
    Spin(Duration),
    /// Sleep on the futex at once.
    Sleep,
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::Spin(Duration::from_micros(50))
    }
}

/// Builds, creates or opens a [`Mailbox`]: `Mailbox::builder(name).capacity(64).create()`.
#[derive(Debug, Clone)]
pub struct MailboxBuilder {
    name: String,
    capacity: Capacity,
    max_message: usize,
    mode: u32,
    wait: WaitStrategy,
}

impl MailboxBuilder {
    /// A bounded ring of `n` messages (shorthand for `.capacity_kind(Capacity::Bounded(n))`).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Capacity::Bounded(n);
        self
    }

    /// Bounded, rendezvous or unbounded.
    pub fn capacity_kind(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// The largest message, in bytes (default 4096). Every slot is this big.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// File mode of the segment (default `0o600`: only the creating user).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// How endpoints made from this handle wait (default: spin 50 µs, then sleep).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Creates the mailbox; fails with [`Error::AlreadyExists`] if the name is taken.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name or geometry,
    /// [`Error::PermissionDenied`], or an OS error.
    pub fn create(&self) -> Result<Mailbox> {
        let (slots, flags) =
            match self.capacity {
                Capacity::Bounded(0) => return Err(Error::InvalidArgument(
                    "a bounded mailbox needs a capacity of at least 1 (use rendezvous for zero)"
                        .into(),
                )),
                Capacity::Bounded(n) => (n, 0),
                Capacity::Rendezvous => (1, FLAG_RENDEZVOUS),
                Capacity::Unbounded => {
                    return Err(Error::Unsupported(
                        "unbounded mailboxes are not available yet: use a bounded capacity with \
                     WhenFull::Cache to keep senders from waiting"
                            .into(),
                    ))
                }
            };
        let capacity = u32::try_from(slots)
            .ok()
            .filter(|&c| c <= MAX_CAPACITY)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("capacity {slots} exceeds {MAX_CAPACITY}"))
            })?;
        let max_message = u32::try_from(self.max_message)
            .ok()
            .filter(|&m| m <= MAX_MESSAGE)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "maximum message size {} exceeds {MAX_MESSAGE}",
                    self.max_message
                ))
            })?;
        let len = ring::ring_len(capacity, max_message)
            .ok_or_else(|| Error::InvalidArgument("capacity x message size is too large".into()))?;
        let segment = Segment::create(KIND, &self.name, len, self.mode)?;
        let object = describe(&self.name);
        // SAFETY: a freshly created segment: zero-filled, page-aligned, `len` bytes long,
        // mapped for as long as the Shared that owns both lives, and invisible to openers
        // until Segment::create published its header; openers also wait for the ring magic.
        let ring = unsafe {
            Ring::init(
                segment.payload(),
                segment.payload_len(),
                capacity,
                max_message,
                flags,
                self.mode,
                &object,
            )
        };
        let ring = match ring {
            Ok(ring) => ring,
            Err(err) => {
                let _ = Segment::unlink(KIND, &self.name);
                return Err(err);
            }
        };
        Ok(Mailbox::from_parts(&self.name, segment, ring, self.wait))
    }

    /// Opens an existing mailbox.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Corrupt`] if the segment is
    /// not a valid mailbox.
    pub fn open(&self) -> Result<Mailbox> {
        let segment = Segment::open(KIND, &self.name)?;
        let object = describe(&self.name);
        // The creator stores the ring's magic last; give it a moment if we raced it.
        let start = Instant::now();
        loop {
            // SAFETY: the segment maps payload_len() bytes at payload(), page-aligned, for as
            // long as the Shared owning both lives; the contents are validated by attach.
            match unsafe { Ring::attach(segment.payload(), segment.payload_len(), &object) } {
                Ok(ring) => return Ok(Mailbox::from_parts(&self.name, segment, ring, self.wait)),
                Err(err) if start.elapsed() > Duration::from_millis(500) => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Opens the mailbox, creating it first if it does not exist.
    pub fn open_or_create(&self) -> Result<Mailbox> {
        match self.create() {
            Err(Error::AlreadyExists { .. }) => self.open(),
            other => other,
        }
    }
}

fn describe(name: &str) -> String {
    format!("mailbox {name:?}")
}

struct Shared {
    name: String,
    ring: Ring,
    wait: WaitStrategy,
    // Keeps the mapping alive for `ring`; dropped after it (field order).
    _segment: Segment,
}

/// A handle on a named mailbox; make senders and receivers from it.
///
/// Cloning is cheap (the mapping is shared).
#[derive(Clone)]
pub struct Mailbox {
    shared: Arc<Shared>,
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("name", &self.shared.name)
            .field("geometry", &self.shared.ring.geometry())
            .finish()
    }
}

/// One attached process, as the participant table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Its pid.
    pub pid: u32,
    /// `"sender"` or `"receiver"`.
    pub role: &'static str,
    /// Whether the process is still alive (a reused pid counts as dead).
    pub alive: bool,
}

/// A snapshot of a mailbox's state, for `ipckit ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// Its name.
    pub name: String,
    /// Bounded, or rendezvous.
    pub capacity: Capacity,
    /// Messages waiting (approximate while others are active).
    pub depth: u64,
    /// The largest message it carries.
    pub max_message_size: usize,
    /// File mode it was created with.
    pub mode: u32,
    /// Who is attached.
    pub participants: Vec<ParticipantInfo>,
    /// Slots currently held (being written or read) as (position, pid).
    pub held_slots: Vec<(u64, u32)>,
}

/// What [`Mailbox::repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairReport {
    /// Participant entries of dead processes removed.
    pub dead_participants: usize,
    /// Slots held by dead processes handed back.
    pub reclaimed_slots: usize,
}

impl Mailbox {
    /// Starts building a mailbox called `name`.
    pub fn builder(name: &str) -> MailboxBuilder {
        MailboxBuilder {
            name: name.to_string(),
            capacity: Capacity::Bounded(DEFAULT_CAPACITY),
            max_message: DEFAULT_MAX_MESSAGE,
            mode: 0o600,
            wait: WaitStrategy::default(),
        }
    }

    /// Creates a mailbox with the default geometry (64 messages of up to 4096 bytes, 0600).
    pub fn create(name: &str) -> Result<Mailbox> {
        Mailbox::builder(name).create()
    }

    /// Opens an existing mailbox.
    pub fn open(name: &str) -> Result<Mailbox> {
        Mailbox::builder(name).open()
    }

    /// Removes the mailbox's name. Processes that have it open keep using it; its memory is
    /// returned when the last one lets go.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such mailbox.
    pub fn remove(name: &str) -> Result<()> {
        Segment::unlink(KIND, name)
    }

    fn from_parts(name: &str, segment: Segment, ring: Ring, wait: WaitStrategy) -> Mailbox {
        Mailbox {
            shared: Arc::new(Shared {
                name: name.to_string(),
                ring,
                wait,
                _segment: segment,
            }),
        }
    }

    /// The mailbox's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The largest message it carries, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.shared.ring.geometry().max_message as usize
    }

    /// A sender, entered in the participant table. Its full policy is [`WhenFull::Block`].
    ///
    /// # Errors
    /// [`Error::LimitReached`] if the participant table is full of live processes.
    pub fn sender(&self) -> Result<MailboxSender> {
        Ok(MailboxSender {
            participant: Participant::register(&self.shared, Role::Sender)?,
            shared: Arc::clone(&self.shared),
            uid: rustix::process::getuid().as_raw(),
            sequence: 0,
            when_full: WhenFull::Block,
            cache: VecDeque::new(),
            cache_limit: DEFAULT_CACHE_LIMIT,
        })
    }

    /// A receiver, entered in the participant table.
    ///
    /// # Errors
    /// [`Error::LimitReached`] if the participant table is full of live processes.
    pub fn receiver(&self) -> Result<MailboxReceiver> {
        Ok(MailboxReceiver {
            participant: Participant::register(&self.shared, Role::Receiver)?,
            shared: Arc::clone(&self.shared),
        })
    }

    /// A snapshot of depth, geometry and participants.
    pub fn info(&self) -> MailboxInfo {
        let ring = &self.shared.ring;
        let geometry = ring.geometry();
        let header = ring.header();
        let participants = header
            .participants
            .iter()
            .filter_map(|entry| {
                let pid = entry.pid.load(Ordering::Acquire);
                if pid == 0 {
                    return None;
                }
                let start = entry.start_time.load(Ordering::Acquire);
                Some(ParticipantInfo {
                    pid,
                    role: match entry.role.load(Ordering::Relaxed) {
                        1 => "sender",
                        _ => "receiver",
                    },
                    alive: liveness(pid, Some(start)) == Liveness::Alive,
                })
            })
            .collect();
        MailboxInfo {
            name: self.shared.name.clone(),
            capacity: if geometry.flags & FLAG_RENDEZVOUS != 0 {
                Capacity::Rendezvous
            } else {
                Capacity::Bounded(geometry.capacity as usize)
            },
            depth: ring.depth(),
            max_message_size: geometry.max_message as usize,
            mode: geometry.mode,
            participants,
            held_slots: ring.held_slots(),
        }
    }

    /// Repairs what dead processes left: their participant entries and the slots they held.
    /// Unread messages are kept. Safe to run while others use the mailbox.
    pub fn repair(&self) -> RepairReport {
        let shared = &self.shared;
        let mut report = RepairReport::default();
        for (pos, pid) in shared.ring.held_slots() {
            if is_dead(shared, pid) && shared.ring.reclaim(pos, pid) {
                report.reclaimed_slots += 1;
            }
        }
        for entry in &shared.ring.header().participants {
            let pid = entry.pid.load(Ordering::Acquire);
            let start = entry.start_time.load(Ordering::Acquire);
            if pid != 0
                && liveness(pid, Some(start)) == Liveness::Dead
                && entry
                    .pid
                    .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                report.dead_participants += 1;
            }
        }
        report
    }

    /// Names of every mailbox on this machine.
    pub fn list() -> Result<Vec<String>> {
        Segment::list(KIND)
    }
}

/// Whether `pid`, found holding a slot, is dead. A pid in the participant table is judged
/// with its recorded start time, so a reused pid does not keep a slot hostage.
fn is_dead(shared: &Shared, pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let start = shared
        .ring
        .header()
        .participants
        .iter()
        .find(|e| e.pid.load(Ordering::Acquire) == pid)
        .map(|e| e.start_time.load(Ordering::Acquire));
    liveness(pid, start) == Liveness::Dead
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Sender = 1,
    Receiver = 2,
}

/// An entry in the participant table, freed on drop.
struct Participant {
    shared: Arc<Shared>,
    index: usize,
    pid: u32,
}

impl Participant {
    fn register(shared: &Arc<Shared>, role: Role) -> Result<Participant> {
        let me = ProcessIdentity::current();
        let table = &shared.ring.header().participants;
        for pass in 0..2 {
            for (index, entry) in table.iter().enumerate() {
                let current = entry.pid.load(Ordering::Acquire);
                let free = current == 0
                    || (pass == 1
                        && liveness(current, Some(entry.start_time.load(Ordering::Acquire)))
                            == Liveness::Dead);
                if free
                    && entry
                        .pid
                        .compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    entry.start_time.store(me.start_time, Ordering::Release);
                    entry.role.store(role as u32, Ordering::Release);
                    return Ok(Participant {
                        shared: Arc::clone(shared),
                        index,
                        pid: me.pid,
                    });
                }
            }
        }
        Err(Error::LimitReached {
            object: describe(&shared.name),
            limit: format!("{MAX_PARTICIPANTS} attached senders and receivers"),
            source: std::io::Error::from_raw_os_error(libc::EUSERS),
        })
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let entry = &self.shared.ring.header().participants[self.index];
        let _ = entry
            .pid
            .compare_exchange(self.pid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Waits until `attempt` yields, by the mailbox's wait strategy, until `deadline`.
///
/// `attempt` returns `Ok(Some(v))` when done, or `Ok(None)` together with the pid and
/// position of a slot in the way (through `blocker`). A blocker found dead is reclaimed.
fn wait_for<T>(
    shared: &Shared,
    wait: &WaitWord,
    deadline: Deadline,
    expired: Error,
    mut attempt: impl FnMut() -> Result<std::result::Result<T, Option<(u32, u64)>>>,
) -> Result<T> {
    if let Ok(v) = attempt()? {
        return Ok(v);
    }
    if deadline == Deadline::Now {
        return Err(expired);
    }
    let spin_for = match shared.wait {
        WaitStrategy::BusyPoll => None,
        WaitStrategy::Spin(d) => Some(d),
        WaitStrategy::Sleep => Some(Duration::ZERO),
    };
    let start = Instant::now();
    let mut last_liveness_check = start;
    let mut spins = 0u32;
    let mut blocker;
    loop {
        // Spin phase (or busy-poll forever).
        let spinning = match spin_for {
            None => true,
            Some(d) => spins & 63 != 0 || start.elapsed() < d,
        };
        if spinning {
            spins = spins.wrapping_add(1);
            std::hint::spin_loop();
            blocker = match attempt()? {
                Ok(v) => return Ok(v),
                Err(b) => b,
            };
            if spins & 1023 == 0 {
                if deadline.expired() {
                    return Err(expired);
                }
                if last_liveness_check.elapsed() >= LIVENESS_POLL {
                    last_liveness_check = Instant::now();
                    reclaim_if_dead(shared, blocker);
                }
            }
            continue;
        }
        // Sleep phase.
        let seen = ring::prepare_sleep(wait);
        let outcome = attempt();
        match outcome {
            Ok(Ok(v)) => {
                ring::finish_sleep(wait);
                return Ok(v);
            }
            Err(e) => {
                ring::finish_sleep(wait);
                return Err(e);
            }
            Ok(Err(b)) => blocker = b,
        }
        if reclaim_if_dead(shared, blocker) {
            ring::finish_sleep(wait);
            continue;
        }
        if deadline.expired() {
            ring::finish_sleep(wait);
            return Err(expired);
        }
        // A blocker that dies never wakes us: sleep in short turns to notice it.
        let turn = match (blocker, deadline) {
            (Some(_), Deadline::At(at)) => Deadline::At(at.min(Instant::now() + LIVENESS_POLL)),
            (Some(_), _) => Deadline::after(LIVENESS_POLL),
            (None, d) => d,
        };
        futex::wait(&wait.seq, seen, turn);
        ring::finish_sleep(wait);
    }
}

fn reclaim_if_dead(shared: &Shared, blocker: Option<(u32, u64)>) -> bool {
    match blocker {
        Some((pid, pos)) if is_dead(shared, pid) => shared.ring.reclaim(pos, pid),
        _ => false,
    }
}

/// Sends into a mailbox. Implements [`MessageSender`].
pub struct MailboxSender {
    shared: Arc<Shared>,
    participant: Participant,
    uid: u32,
    sequence: u64,
    when_full: WhenFull,
    cache: VecDeque<Vec<u8>>,
    cache_limit: usize,
}

impl fmt::Debug for MailboxSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSender")
            .field("mailbox", &self.shared.name)
            .field("when_full", &self.when_full)
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl MailboxSender {
    /// Sets what `send` does when the mailbox is full (Mach's four options). `try_send` and
    /// `send_timeout` keep their own meaning.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// Bounds the overflow cache used by [`WhenFull::Cache`] (default 1024 messages).
    pub fn cache_limit(mut self, messages: usize) -> Self {
        self.cache_limit = messages;
        self
    }

    /// Messages accepted into the overflow cache and not yet in the mailbox.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Moves cached messages into the mailbox, in order, waiting until `deadline`.
    ///
    /// # Errors
    /// [`Error::Full`]/[`Error::Timeout`] if some are still cached at the deadline.
    pub fn flush_deadline(&mut self, deadline: Deadline) -> Result<()> {
        while let Some(front) = self.cache.front() {
            let msg = front.clone();
            self.send_now(&msg, deadline)?;
            self.cache.pop_front();
        }
        Ok(())
    }

    /// Moves every cached message into the mailbox, waiting for room as long as needed.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_deadline(Deadline::Never)
    }

    /// Borrows a free slot to write a message in place; [`Loan::publish`] sends it.
    ///
    /// # Errors
    /// [`Error::Full`]/[`Error::Timeout`] if no slot frees up before `deadline`.
    pub fn loan_deadline(&mut self, deadline: Deadline) -> Result<Loan<'_>> {
        if !self.cache.is_empty() {
            self.flush_deadline(deadline)?;
        }
        let pos = self.claim(deadline)?;
        Ok(Loan {
            sender: self,
            pos: Some(pos),
        })
    }

    /// Borrows a free slot, waiting for one as long as needed.
    pub fn loan(&mut self) -> Result<Loan<'_>> {
        self.loan_deadline(Deadline::Never)
    }

    fn claim(&self, deadline: Deadline) -> Result<u64> {
        let shared = &*self.shared;
        let pid = self.participant.pid;
        wait_for(
            shared,
            &shared.ring.header().not_full.0,
            deadline,
            deadline.send_expired(),
            || {
                Ok(match shared.ring.claim_write(pid)? {
                    Claim::Got(pos) => Ok(pos),
                    Claim::Blocked { blocker } => Err(blocker),
                })
            },
        )
    }

    /// Fills in the slot's metadata and publishes it; for a rendezvous mailbox, waits until a
    /// receiver has taken it (and takes it back if none does by `deadline`).
    fn commit(&mut self, pos: u64, len: usize, deadline: Deadline) -> Result<()> {
        let ring = &self.shared.ring;
        let slot = ring.slot(pos);
        slot.len.store(len as u32, Ordering::Relaxed);
        slot.sender_pid
            .store(self.participant.pid, Ordering::Relaxed);
        slot.sender_uid.store(self.uid, Ordering::Relaxed);
        slot.sequence.store(self.sequence, Ordering::Relaxed);
        ring.publish(pos);
        self.sequence += 1;
        if ring.geometry().flags & FLAG_RENDEZVOUS == 0 {
            return Ok(());
        }
        let shared = &*self.shared;
        let taken = wait_for(
            shared,
            &shared.ring.header().not_full.0,
            deadline,
            deadline.send_expired(),
            || {
                Ok(if ring.is_unclaimed(pos) {
                    Err(None)
                } else {
                    Ok(())
                })
            },
        );
        match taken {
            Err(err) if err.is_transient() && ring.retract(pos) => {
                self.sequence -= 1;
                Err(err)
            }
            Err(err) if err.is_transient() => Ok(()),
            other => other,
        }
    }

    fn send_now(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        let pos = self.claim(deadline)?;
        // SAFETY: we own the slot of `pos` (WRITING by us) and msg.len() <= max_message
        // (checked by the caller), which is the size of its data area.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.shared.ring.data_ptr(pos), msg.len())
        };
        self.commit(pos, msg.len(), deadline)
    }
}

impl MessageSender for MailboxSender {
    /// Sends one message. For `send` (no deadline) the sender's [`WhenFull`] policy decides
    /// what happens when the mailbox is full.
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        check_size(msg.len(), self.max_message_size())?;
        let deadline = match (deadline, self.when_full) {
            (Deadline::Never, WhenFull::Timeout(d)) => Deadline::after(d),
            (Deadline::Never, WhenFull::Fail) => Deadline::Now,
            (Deadline::Never, WhenFull::Cache) => return self.send_cached(msg),
            (d, _) => d,
        };
        if !self.cache.is_empty() {
            self.flush_deadline(deadline)?;
        }
        self.send_now(msg, deadline)
    }

    fn max_message_size(&self) -> usize {
        self.shared.ring.geometry().max_message as usize
    }
}

impl MailboxSender {
    fn send_cached(&mut self, msg: &[u8]) -> Result<()> {
        match self.flush_deadline(Deadline::Now) {
            Ok(()) => match self.send_now(msg, Deadline::Now) {
                Err(Error::Full) => {}
                other => return other,
            },
            Err(Error::Full) => {}
            Err(other) => return Err(other),
        }
        if self.cache.len() >= self.cache_limit {
            return Err(Error::Full);
        }
        self.cache.push_back(msg.to_vec());
        Ok(())
    }
}

impl Drop for MailboxSender {
    fn drop(&mut self) {
        if self.cache.is_empty() {
            return;
        }
        let _ = self.flush_deadline(Deadline::after(Duration::from_secs(1)));
        if !self.cache.is_empty() {
            // Nothing cached is dropped silently: say so where the operator will see it.
            eprintln!(
                "ipckit: {} cached message(s) for {} could not be delivered (mailbox full); \
                 call flush() before dropping the sender",
                self.cache.len(),
                describe(&self.shared.name)
            );
        }
    }
}

/// A slot borrowed for writing a message in place. Dropping it unpublished cancels it.
pub struct Loan<'a> {
    sender: &'a mut MailboxSender,
    pos: Option<u64>,
}

impl fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan").field("pos", &self.pos).finish()
    }
}

impl Loan<'_> {
    /// Publishes the first `len` bytes of the slot as a message.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] if `len` exceeds the slot (the loan is then cancelled).
    pub fn publish(mut self, len: usize) -> Result<()> {
        let pos = self.pos.take().expect("a loan is published once");
        if let Err(err) = check_size(len, self.sender.max_message_size()) {
            self.sender.shared.ring.release(pos);
            return Err(err);
        }
        self.sender.commit(pos, len, Deadline::Never)
    }
}

impl Deref for Loan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let pos = self.pos.expect("a live loan has a slot");
        let ring = &self.sender.shared.ring;
        // SAFETY: we own the slot (WRITING by us): its data area is `max_message` bytes that no
        // honest participant touches until we publish.
        unsafe {
            std::slice::from_raw_parts(ring.data_ptr(pos), ring.geometry().max_message as usize)
        }
    }
}

impl DerefMut for Loan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let pos = self.pos.expect("a live loan has a slot");
        let ring = &self.sender.shared.ring;
        // SAFETY: as in deref; we hold `&mut self`, so this is the only slice we hand out.
        unsafe {
            std::slice::from_raw_parts_mut(ring.data_ptr(pos), ring.geometry().max_message as usize)
        }
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if let Some(pos) = self.pos.take() {
            self.sender.shared.ring.release(pos);
        }
    }
}

/// Receives from a mailbox. Implements [`MessageReceiver`].
pub struct MailboxReceiver {
    shared: Arc<Shared>,
    participant: Participant,
}

impl fmt::Debug for MailboxReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxReceiver")
            .field("mailbox", &self.shared.name)
            .finish()
    }
}

impl MailboxReceiver {
    fn claim(&self, deadline: Deadline) -> Result<(u64, usize, Metadata)> {
        let shared = &*self.shared;
        let pid = self.participant.pid;
        let ring = &shared.ring;
        let pos = wait_for(
            shared,
            &ring.header().not_empty.0,
            deadline,
            deadline.recv_expired(),
            || {
                Ok(match ring.claim_read(pid)? {
                    Claim::Got(pos) => Ok(pos),
                    Claim::Blocked { blocker } => Err(blocker),
                })
            },
        )?;
        let slot = ring.slot(pos);
        let len = slot.len.load(Ordering::Relaxed) as usize;
        if len > ring.geometry().max_message as usize {
            ring.release(pos);
            return Err(Error::corrupt(
                describe(&shared.name),
                format!(
                    "a slot claims a {len}-byte message, larger than the {}-byte slots",
                    ring.geometry().max_message
                ),
            ));
        }
        let meta = Metadata {
            sender_pid: Some(slot.sender_pid.load(Ordering::Relaxed)),
            sender_uid: Some(slot.sender_uid.load(Ordering::Relaxed)),
            sequence: Some(slot.sequence.load(Ordering::Relaxed)),
            ..Metadata::default()
        };
        Ok((pos, len, meta))
    }

    /// Receives a message in place, without copying it; the slot is released when the
    /// returned guard drops (or when this process dies holding it).
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
    pub fn recv_in_place_deadline(&mut self, deadline: Deadline) -> Result<InPlace<'_>> {
        let (pos, len, meta) = self.claim(deadline)?;
        Ok(InPlace {
            receiver: self,
            pos,
            len,
            meta,
        })
    }

    /// Receives a message in place, waiting as long as needed.
    pub fn recv_in_place(&mut self) -> Result<InPlace<'_>> {
        self.recv_in_place_deadline(Deadline::Never)
    }
}

impl MessageReceiver for MailboxReceiver {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        let (pos, len, meta) = self.claim(deadline)?;
        let ring = &self.shared.ring;
        buf.clear();
        buf.reserve(len);
        // SAFETY: we own the slot (READING by us); len <= max_message was checked in claim, so
        // the source is in the slot's data area; buf has capacity for len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(ring.data_ptr(pos), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        ring.release(pos);
        Ok(meta)
    }
}

/// A message read in place; its slot goes back to the mailbox when this drops.
pub struct InPlace<'a> {
    receiver: &'a mut MailboxReceiver,
    pos: u64,
    len: usize,
    meta: Metadata,
}

impl fmt::Debug for InPlace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InPlace")
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl InPlace<'_> {
    /// What the mailbox recorded about the message.
    pub fn meta(&self) -> Metadata {
        self.meta
    }
}

impl Deref for InPlace<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let ring = &self.receiver.shared.ring;
        // SAFETY: we own the slot (READING by us); len <= max_message was validated when it
        // was claimed. A hostile process could still scribble on the bytes: they are plain
        // bytes, so that changes the message, never memory safety outside the slot.
        unsafe { std::slice::from_raw_parts(ring.data_ptr(self.pos), self.len) }
    }
}

impl Drop for InPlace<'_> {
    fn drop(&mut self) {
        self.receiver.shared.ring.release(self.pos);
    }
}
