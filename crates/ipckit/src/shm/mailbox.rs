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
//! Because a mailbox is persistent, like a POSIX queue, a receiver waiting on an empty mailbox
//! keeps waiting when every sender has died: a restarted sender simply carries on the stream.
//! A receiver that must notice a dead producer waits with a deadline and looks at
//! [`Mailbox::info`]'s participants; the [`service`](crate::service) layer and
//! [`direct`](crate::direct) inboxes, which are connections rather than places, report a
//! vanished peer as [`Error::Disconnected`].
//!
//! The slot protocol that makes it crash-safe is described in `shm/ring.rs` and in
//! `docs/ARCHITECTURE.md`.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ring::{
    self, Claim, Ring, FLAG_RENDEZVOUS, FLAG_SINGLE_RECEIVER, FLAG_SINGLE_SENDER, FLAG_UNBOUNDED,
    MAX_CAPACITY, MAX_MESSAGE, MAX_PARTICIPANTS,
};
use super::segment::Segment;
pub use super::wait::WaitStrategy;
use super::wait::{wait_for, Attempt};
use crate::error::{Error, Result};
use crate::link::{
    check_size, Capacity, Deadline, MessageReceiver, MessageSender, Metadata, WhenFull,
};
use crate::process::{liveness, Liveness, ProcessIdentity};
use crate::sync::primitive::{fence, Ordering};

/// The segment kind of mailboxes: their files are `/dev/shm/ipckit.mailbox.NAME`.
pub const KIND: &str = "mailbox";

/// Default maximum message size, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 4096;
/// Default capacity, in messages.
pub const DEFAULT_CAPACITY: usize = 64;
/// Default bound of a sender's overflow cache ([`WhenFull::Cache`]), in messages.
pub const DEFAULT_CACHE_LIMIT: usize = 1024;

/// Builds, creates or opens a [`Mailbox`]: `Mailbox::builder(name).capacity(64).create()`.
#[derive(Debug, Clone)]
pub struct MailboxBuilder {
    name: String,
    capacity: Capacity,
    max_message: usize,
    mode: u32,
    wait: WaitStrategy,
    unbounded_ring: usize,
    single: u32,
}

impl MailboxBuilder {
    /// At most one sender at a time: its sends then need no compare-and-swap, the cheaper
    /// fast path for one-to-one and one-to-many links. A second sender is refused while the
    /// first is alive. Bounded mailboxes only.
    pub fn single_sender(mut self) -> Self {
        self.single |= FLAG_SINGLE_SENDER;
        self
    }

    /// At most one receiver at a time: its receives then need no compare-and-swap. A
    /// receiver killed while holding a message leaves it to the next receiver (delivered
    /// again, never lost). Bounded mailboxes only.
    pub fn single_receiver(mut self) -> Self {
        self.single |= FLAG_SINGLE_RECEIVER;
        self
    }

    /// A bounded ring of `n` messages (shorthand for `.capacity_kind(Capacity::Bounded(n))`).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Capacity::Bounded(n);
        self
    }

    /// Bounded, rendezvous or unbounded.
    ///
    /// An unbounded mailbox is a chain of rings: when the newest is full a sender seals it and
    /// chains a new segment (`/dev/shm/ipckit.mailbox-chain.N.NAME`) instead of waiting;
    /// receivers drain the rings in order and remove each one they have emptied.
    pub fn capacity_kind(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Messages per ring of an unbounded mailbox (default 64).
    pub fn unbounded_ring_capacity(mut self, n: usize) -> Self {
        self.unbounded_ring = n;
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

    /// Validates the requested geometry: (capacity, max message, flags, bytes).
    fn geometry(&self) -> Result<(u32, u32, u32, usize)> {
        let (slots, flags) =
            match self.capacity {
                Capacity::Bounded(0) => return Err(Error::InvalidArgument(
                    "a bounded mailbox needs a capacity of at least 1 (use rendezvous for zero)"
                        .into(),
                )),
                Capacity::Bounded(n) => (n, 0),
                Capacity::Rendezvous => (1, FLAG_RENDEZVOUS),
                // Each ring of the chain holds `unbounded_ring` messages; more are chained as
                // needed.
                Capacity::Unbounded => (self.unbounded_ring, FLAG_UNBOUNDED),
            };
        if self.single != 0 && !matches!(self.capacity, Capacity::Bounded(_)) {
            return Err(Error::Unsupported(format!(
                "single-sender and single-receiver mailboxes must be bounded, not {:?}",
                self.capacity
            )));
        }
        let flags = flags | self.single;
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
        Ok((capacity, max_message, flags, len))
    }

    /// Creates the mailbox; fails with [`Error::AlreadyExists`] if the name is taken.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name or geometry,
    /// [`Error::PermissionDenied`], or an OS error.
    pub fn create(&self) -> Result<Mailbox> {
        let (capacity, max_message, flags, len) = self.geometry()?;
        let segment = Segment::create(KIND, &self.name, len, self.mode)?;
        // Rings left by an earlier mailbox of this name would be taken for ours.
        remove_chain(&self.name);
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
        let (segment, ring) = attach_named(KIND, &self.name, &describe(&self.name))?;
        Ok(Mailbox::from_parts(&self.name, segment, ring, self.wait))
    }

    /// Creates an anonymous mailbox (`memfd`): no name anyone could open; hand
    /// [`Mailbox::fd`] to another process (over a Unix socket) and it calls
    /// [`Mailbox::from_fd`]. The service layer's private channels are made this way.
    pub fn create_anonymous(&self) -> Result<Mailbox> {
        let (capacity, max_message, flags, len) = self.geometry()?;
        if flags & FLAG_UNBOUNDED != 0 {
            return Err(Error::Unsupported(
                "an anonymous mailbox cannot chain named rings: use a bounded capacity".into(),
            ));
        }
        let segment = Segment::anonymous(KIND, len)?;
        // SAFETY: a fresh anonymous segment: zero-filled, page-aligned, `len` bytes, owned by
        // the Shared built below together with the ring.
        let ring = unsafe {
            Ring::init(
                segment.payload(),
                segment.payload_len(),
                capacity,
                max_message,
                flags,
                0o600,
                "anonymous mailbox",
            )?
        };
        Ok(Mailbox::from_parts("(anonymous)", segment, ring, self.wait))
    }

    /// Opens the mailbox, creating it first if it does not exist.
    pub fn open_or_create(&self) -> Result<Mailbox> {
        match self.create() {
            Err(Error::AlreadyExists { .. }) => self.open(),
            other => other,
        }
    }
}

/// Opens segment `kind`/`name` and attaches the ring in it. A creator publishes the ring's
/// magic last, so a ring that does not validate yet may be one being set up: the whole open
/// is retried for a short while before its error is reported.
fn attach_named(kind: &str, name: &str, object: &str) -> Result<(Segment, Ring)> {
    let start = Instant::now();
    loop {
        let attempt = Segment::open(kind, name).and_then(|segment| {
            // SAFETY: the segment maps payload_len() bytes at payload(), page-aligned; the
            // caller keeps the Segment alive as long as the Ring (they are stored together);
            // the contents are validated by attach.
            let ring = unsafe { Ring::attach(segment.payload(), segment.payload_len(), object)? };
            Ok((segment, ring))
        });
        match attempt {
            Err(Error::Corrupt { .. }) if start.elapsed() < Duration::from_millis(500) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other,
        }
    }
}

/// Unlinks every chained ring of mailbox `name` (best effort: they are ours by name).
fn remove_chain(name: &str) {
    let suffix = format!(".{name}");
    for chained in Segment::list(CHAIN_KIND).unwrap_or_default() {
        let is_ours = chained
            .strip_suffix(&suffix)
            .is_some_and(|index| index.parse::<u32>().is_ok());
        if is_ours {
            let _ = Segment::unlink(CHAIN_KIND, &chained);
        }
    }
}

fn describe(name: &str) -> String {
    format!("mailbox {name:?}")
}

/// One mapped ring: the root (the mailbox's own segment) or a ring of an unbounded chain.
struct Link {
    index: u32,
    ring: Ring,
    // A chained ring's waiters sleep on the root's futex words: keep the root mapped.
    _root: Option<Arc<Link>>,
    // Keeps the mapping alive for `ring`.
    _segment: Segment,
}

struct Shared {
    name: String,
    wait: WaitStrategy,
    root: Arc<Link>,
}

impl Shared {
    /// The root ring: geometry, participants and futex words live in its header.
    fn ring(&self) -> &Ring {
        &self.root.ring
    }

    fn unbounded(&self) -> bool {
        self.ring().geometry().flags & FLAG_UNBOUNDED != 0
    }
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
            .field("geometry", &self.shared.ring().geometry())
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
            unbounded_ring: DEFAULT_CAPACITY,
            single: 0,
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
        Segment::unlink(KIND, name)?;
        remove_chain(name);
        Ok(())
    }

    fn from_parts(name: &str, segment: Segment, ring: Ring, wait: WaitStrategy) -> Mailbox {
        Mailbox {
            shared: Arc::new(Shared {
                name: name.to_string(),
                wait,
                root: Arc::new(Link {
                    index: 0,
                    ring,
                    _root: None,
                    _segment: segment,
                }),
            }),
        }
    }

    /// Maps an anonymous mailbox received as a descriptor, validating it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the descriptor is not an ipckit mailbox.
    pub fn from_fd(fd: std::os::fd::OwnedFd, wait: WaitStrategy) -> Result<Mailbox> {
        let segment = Segment::from_fd(fd, KIND)?;
        // SAFETY: the segment maps payload_len() bytes at payload(), owned by the Shared
        // built below together with the ring; the contents are validated by attach.
        let ring = unsafe {
            Ring::attach(
                segment.payload(),
                segment.payload_len(),
                "anonymous mailbox",
            )?
        };
        Ok(Mailbox::from_parts("(anonymous)", segment, ring, wait))
    }

    /// The descriptor of an anonymous mailbox, to pass to another process.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.shared.root._segment.fd()
    }

    /// The mailbox's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The largest message it carries, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.shared.ring().geometry().max_message as usize
    }

    /// A sender, entered in the participant table. Its full policy is [`WhenFull::Block`].
    ///
    /// # Errors
    /// [`Error::LimitReached`] if the participant table is full of live processes.
    pub fn sender(&self) -> Result<MailboxSender> {
        Ok(MailboxSender {
            free_until: 0,
            sole: SoleToken::acquire(&self.shared, Role::Sender)?,
            participant: Participant::register(&self.shared, Role::Sender)?,
            link: starting_link(&self.shared, Role::Sender)?,
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
            sole: SoleToken::acquire(&self.shared, Role::Receiver)?,
            participant: Participant::register(&self.shared, Role::Receiver)?,
            link: starting_link(&self.shared, Role::Receiver)?,
            shared: Arc::clone(&self.shared),
        })
    }

    /// A snapshot of depth, geometry and participants.
    pub fn info(&self) -> MailboxInfo {
        let chain = self.chain();
        let ring = self.shared.ring();
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
            } else if geometry.flags & FLAG_UNBOUNDED != 0 {
                Capacity::Unbounded
            } else {
                Capacity::Bounded(geometry.capacity as usize)
            },
            depth: chain.iter().map(|link| link.ring.depth()).sum(),
            max_message_size: geometry.max_message as usize,
            mode: geometry.mode,
            participants,
            held_slots: chain
                .iter()
                .flat_map(|link| link.ring.held_slots())
                .collect(),
        }
    }

    /// Every ring of the mailbox still in use: the root, and for an unbounded mailbox the
    /// chained rings from the oldest to the newest.
    fn chain(&self) -> Vec<Arc<Link>> {
        let shared = &self.shared;
        let mut links = vec![Arc::clone(&shared.root)];
        if shared.unbounded() {
            let header = shared.ring().header();
            let head = header.chain_head.load(Ordering::SeqCst).max(1);
            let tail = header.chain_tail.load(Ordering::SeqCst);
            // Bounded walk: a scribbled index must not make us map millions of names.
            for index in head..=tail.min(head.saturating_add(MAX_INSPECTED_RINGS)) {
                if let Ok(link) = open_link(shared, index) {
                    links.push(link);
                }
            }
        }
        links
    }

    /// Repairs what dead processes left: their participant entries and the slots they held.
    /// Unread messages are kept. Safe to run while others use the mailbox.
    pub fn repair(&self) -> RepairReport {
        let shared = &self.shared;
        let mut report = RepairReport::default();
        for link in self.chain() {
            for (pos, pid) in link.ring.held_slots() {
                if is_dead(shared, pid) && link.ring.reclaim(pos, pid) {
                    report.reclaimed_slots += 1;
                }
            }
        }
        for entry in &shared.ring().header().participants {
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
        .ring()
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
        let table = &shared.ring().header().participants;
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
        let entry = &self.shared.ring().header().participants[self.index];
        let _ = entry
            .pid
            .compare_exchange(self.pid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// The right to be a single-sender (or single-receiver) mailbox's one sender (receiver).
struct SoleToken {
    shared: Arc<Shared>,
    role: Role,
    pid: u32,
}

impl SoleToken {
    fn word(shared: &Shared, role: Role) -> &crate::sync::primitive::AtomicU32 {
        let header = shared.ring().header();
        match role {
            Role::Sender => &header.sole_sender,
            Role::Receiver => &header.sole_receiver,
        }
    }

    /// Takes the token if the mailbox is single-`role`, with the position to start from.
    fn acquire(shared: &Arc<Shared>, role: Role) -> Result<Option<(SoleToken, u64)>> {
        let flag = match role {
            Role::Sender => FLAG_SINGLE_SENDER,
            Role::Receiver => FLAG_SINGLE_RECEIVER,
        };
        if shared.ring().geometry().flags & flag == 0 {
            return Ok(None);
        }
        let me = std::process::id();
        let word = SoleToken::word(shared, role);
        loop {
            let holder = word.load(Ordering::Acquire);
            if holder != 0 && !is_dead(shared, holder) {
                return Err(Error::AlreadyExists {
                    object: format!(
                        "the single {} of {} (pid {holder})",
                        match role {
                            Role::Sender => "sender",
                            Role::Receiver => "receiver",
                        },
                        describe(&shared.name)
                    ),
                });
            }
            if word
                .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        }
        let header = shared.ring().header();
        let start = match role {
            Role::Sender => header.tail.0.load(Ordering::Acquire),
            Role::Receiver => header.head.0.load(Ordering::Acquire),
        };
        let token = SoleToken {
            shared: Arc::clone(shared),
            role,
            pid: me,
        };
        Ok(Some((token, start)))
    }
}

impl Drop for SoleToken {
    fn drop(&mut self) {
        let _ = SoleToken::word(&self.shared, self.role).compare_exchange(
            self.pid,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// Claims a position on `ring` for writing (`write`) or reading, reclaiming slots of dead
/// owners in the way when `check_owners` is set.
fn claim_on(
    shared: &Shared,
    ring: &Ring,
    pid: u32,
    write: bool,
    check_owners: bool,
) -> Attempt<u64> {
    let claim = || {
        if write {
            ring.claim_write(pid)
        } else {
            ring.claim_read(pid)
        }
    };
    resolve_claim(shared, ring, check_owners, claim)
}

/// Runs `claim` until it gets a position or is blocked by something other than a dead
/// process's slot (which it reclaims when `check_owners` is set).
fn resolve_claim(
    shared: &Shared,
    ring: &Ring,
    check_owners: bool,
    mut claim: impl FnMut() -> Result<Claim>,
) -> Attempt<u64> {
    for _ in 0..=ring.geometry().capacity {
        match claim()? {
            Claim::Got(pos) => return Ok(Ok(pos)),
            Claim::Blocked {
                blocker: Some((owner, pos)),
            } => {
                if !(check_owners && is_dead(shared, owner) && ring.reclaim(pos, owner)) {
                    return Ok(Err(true));
                }
            }
            Claim::Blocked { blocker: None } => return Ok(Err(false)),
        }
    }
    Ok(Err(true))
}

/// Segment kind of the further rings of unbounded mailboxes:
/// `/dev/shm/ipckit.mailbox-chain.INDEX.NAME`.
pub const CHAIN_KIND: &str = "mailbox-chain";

/// Hops along a chain one operation may make before the chain is called corrupt.
const MAX_HOPS: usize = 64;

/// Rings of a chain that `info` and `repair` look at.
const MAX_INSPECTED_RINGS: u32 = 4096;

fn chain_name(name: &str, index: u32) -> String {
    format!("{index}.{name}")
}

/// Maps ring `index` of an unbounded chain (0 is the root).
fn open_link(shared: &Shared, index: u32) -> Result<Arc<Link>> {
    if index == 0 {
        return Ok(Arc::clone(&shared.root));
    }
    let object = format!("{} (chained ring {index})", describe(&shared.name));
    let (segment, mut ring) = attach_named(CHAIN_KIND, &chain_name(&shared.name, index), &object)?;
    let root = shared.ring().geometry();
    let mine = ring.geometry();
    if (mine.capacity, mine.max_message) != (root.capacity, root.max_message) {
        return Err(Error::corrupt(
            object,
            "its geometry differs from the root ring's",
        ));
    }
    // SAFETY: the Link keeps the root mapped (`_root`) for as long as this ring lives.
    unsafe { ring.share_waits_with(shared.ring()) };
    Ok(Arc::new(Link {
        index,
        ring,
        _root: Some(Arc::clone(&shared.root)),
        _segment: segment,
    }))
}

/// Creates ring `index` of an unbounded chain, or opens it if another sender was first.
fn create_link(shared: &Shared, index: u32) -> Result<Arc<Link>> {
    let geometry = shared.ring().geometry();
    let len = ring::ring_len(geometry.capacity, geometry.max_message)
        .ok_or_else(|| Error::corrupt(describe(&shared.name), "geometry overflows"))?;
    let chain = chain_name(&shared.name, index);
    let segment = match Segment::create(CHAIN_KIND, &chain, len, geometry.mode) {
        Ok(segment) => segment,
        Err(Error::AlreadyExists { .. }) => return open_link(shared, index),
        Err(err) => return Err(err),
    };
    let object = format!("{} (chained ring {index})", describe(&shared.name));
    // SAFETY: a freshly created, zeroed mapping of `len` bytes that lives as long as the Link.
    let mut ring = unsafe {
        Ring::init(
            segment.payload(),
            segment.payload_len(),
            geometry.capacity,
            geometry.max_message,
            FLAG_UNBOUNDED,
            geometry.mode,
            &object,
        )?
    };
    // SAFETY: the Link keeps the root mapped (`_root`) for as long as this ring lives.
    unsafe { ring.share_waits_with(shared.ring()) };
    Ok(Arc::new(Link {
        index,
        ring,
        _root: Some(Arc::clone(&shared.root)),
        _segment: segment,
    }))
}

/// How long a follower waits for the sender that sealed a ring to create its successor
/// before creating it itself (the sealer may have died in between).
const SUCCESSOR_GRACE: Duration = Duration::from_secs(1);

/// Maps ring `index`, which the chain says exists or is about to.
///
/// Only the sender that sealed ring `index - 1` creates ring `index`, right after sealing;
/// until it has, the ring is `NotFound` and we wait. If it never appears (the sealer died),
/// we create it. A ring the receivers have already passed (`chain_head > index`) is gone
/// for good: `NotFound`. A creation that turns out late (the head moved past meanwhile)
/// is undone, so no ring is ever brought back to life behind the receivers.
fn open_successor(shared: &Shared, index: u32) -> Result<Arc<Link>> {
    let head = || shared.ring().header().chain_head.load(Ordering::SeqCst);
    let start = Instant::now();
    loop {
        match open_link(shared, index) {
            Err(Error::NotFound { .. }) => {}
            other => return other,
        }
        if head() > index {
            return Err(Error::NotFound {
                object: format!("{} (chained ring {index})", describe(&shared.name)),
            });
        }
        if start.elapsed() > SUCCESSOR_GRACE {
            let link = create_link(shared, index)?;
            if head() > index {
                let _ = Segment::unlink(CHAIN_KIND, &chain_name(&shared.name, index));
                continue;
            }
            return Ok(link);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Where an endpoint goes once `link` is sealed (and, for a receiver, drained).
///
/// A sender jumps to the newest ring: there is no point filling the gaps of sealed ones. A
/// receiver takes the next ring, since every ring must be drained in order; if another
/// receiver has already drained and removed it, it goes to the chain's current head.
fn follow(shared: &Shared, link: &Link, role: Role) -> Result<Arc<Link>> {
    let next = link.ring.header().chain_next.load(Ordering::SeqCst);
    if Some(next) != link.index.checked_add(1) {
        return Err(Error::corrupt(
            describe(&shared.name),
            format!("ring {} is chained to ring {next}", link.index),
        ));
    }
    open_frontier(shared, role, next)
}

/// Maps the ring an endpoint should be on: at least `floor`, at least the chain's head (rings
/// before it are drained and gone), and for a sender the chain's tail.
///
/// The tail is published only after the sealer has created the new ring, so it can lag the
/// head: receivers may drain and remove a ring, and move the head past it, while its
/// successor is still being created. Every ring from the head on exists or is about to, so
/// the head is always a safe floor. A `NotFound` means the head moved on while we looked:
/// try again from the new head, which only grows; a head that does not move while rings
/// keep vanishing is corruption.
fn open_frontier(shared: &Shared, role: Role, floor: u32) -> Result<Arc<Link>> {
    let root = shared.ring().header();
    let mut last_target = None;
    let mut stalls = 0;
    loop {
        let head = root.chain_head.load(Ordering::SeqCst);
        let target = match role {
            Role::Sender => root.chain_tail.load(Ordering::SeqCst).max(head).max(floor),
            Role::Receiver => head.max(floor),
        };
        match open_successor(shared, target) {
            Err(err @ Error::NotFound { .. }) => {
                if last_target.is_some_and(|last| target <= last) {
                    stalls += 1;
                    if stalls >= MAX_HOPS {
                        return Err(err);
                    }
                }
                last_target = Some(target);
            }
            other => return other,
        }
    }
}

/// Seals the full ring `link` and chains a new ring after it; if another sender sealed it
/// first, follows theirs.
fn grow(shared: &Shared, link: &Link) -> Result<Arc<Link>> {
    let header = link.ring.header();
    let index = link
        .index
        .checked_add(1)
        .ok_or_else(|| Error::corrupt(describe(&shared.name), "the chain of rings is exhausted"))?;
    let sealed_by_us = header
        .chain_next
        .compare_exchange(0, index, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !sealed_by_us {
        return follow(shared, link, Role::Sender);
    }
    let next = create_link(shared, index)?;
    shared
        .ring()
        .header()
        .chain_tail
        .fetch_max(index, Ordering::SeqCst);
    Ok(next)
}

/// A sender's claim on an unbounded mailbox: claim in the newest ring; a full ring grows
/// the chain, a ring sealed under our feet is left for the next one.
fn claim_unbounded_write(
    shared: &Shared,
    link: &mut Arc<Link>,
    pid: u32,
    check: bool,
) -> Attempt<u64> {
    for _ in 0..MAX_HOPS {
        match claim_on(shared, &link.ring, pid, true, check)? {
            Ok(pos) => {
                // SYNC: pairs with the fence in `Ring::is_drained`: either the receiver sees
                // this claim, or we see its ring sealed here.
                fence(Ordering::SeqCst);
                if link.ring.header().chain_next.load(Ordering::SeqCst) == 0 {
                    return Ok(Ok(pos));
                }
                link.ring.release(pos);
                *link = follow(shared, link, Role::Sender)?;
            }
            Err(_) => *link = grow(shared, link)?,
        }
    }
    Err(Error::corrupt(
        describe(&shared.name),
        "the chain of rings does not end",
    ))
}

/// A receiver's claim on an unbounded mailbox: drain the oldest ring; once it is sealed and
/// drained, move the chain's head on and remove the ring's segment (its memory goes back
/// when the last process unmaps it).
fn claim_unbounded_read(
    shared: &Shared,
    link: &mut Arc<Link>,
    pid: u32,
    check: bool,
) -> Attempt<u64> {
    for _ in 0..MAX_HOPS {
        match claim_on(shared, &link.ring, pid, false, check)? {
            Ok(pos) => return Ok(Ok(pos)),
            Err(by_process) => {
                let sealed = link.ring.header().chain_next.load(Ordering::SeqCst) != 0;
                if !sealed || !link.ring.is_drained() {
                    return Ok(Err(by_process));
                }
                let next = link.index.wrapping_add(1);
                let moved = shared.ring().header().chain_head.compare_exchange(
                    link.index,
                    next,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                if moved.is_ok() && link.index != 0 {
                    let _ = Segment::unlink(CHAIN_KIND, &chain_name(&shared.name, link.index));
                }
                *link = follow(shared, link, Role::Receiver)?;
            }
        }
    }
    Err(Error::corrupt(
        describe(&shared.name),
        "the chain of rings does not end",
    ))
}

/// The ring a new endpoint starts on: the chain's newest for a sender, oldest for a receiver.
fn starting_link(shared: &Shared, role: Role) -> Result<Arc<Link>> {
    if !shared.unbounded() {
        return Ok(Arc::clone(&shared.root));
    }
    open_frontier(shared, role, 0)
}

/// Sends into a mailbox. Implements [`MessageSender`].
pub struct MailboxSender {
    shared: Arc<Shared>,
    link: Arc<Link>,
    // Single-sender mailboxes: the token, and the next position to write.
    sole: Option<(SoleToken, u64)>,
    // Single sender *and* single receiver: positions below this are known free (the
    // receiver's head, read now and then, plus the capacity), so the fast path reads
    // nothing the receiver writes.
    free_until: u64,
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

    fn claim(&mut self, deadline: Deadline) -> Result<u64> {
        let shared = &*self.shared;
        let link = &mut self.link;
        let sole = &mut self.sole;
        let pid = self.participant.pid;
        let unbounded = shared.unbounded();
        if let Some((_, next)) = sole {
            if *next < self.free_until {
                return Ok(*next);
            }
        }
        let geometry = shared.ring().geometry();
        let head_is_released = geometry.flags & FLAG_SINGLE_RECEIVER != 0;
        let pos = wait_for(
            shared.wait,
            &shared.ring().header().not_full.0,
            deadline,
            deadline.send_expired(),
            |check| match sole {
                Some((_, next)) => resolve_claim(shared, &link.ring, check, || {
                    link.ring.claim_write_single(next)
                }),
                None if unbounded => claim_unbounded_write(shared, link, pid, check),
                None => claim_on(shared, &link.ring, pid, true, check),
            },
        )?;
        if self.sole.is_some() && head_is_released {
            // SYNC: pairs with the release of the slot before the receiver moves the head.
            let head = shared.ring().header().head.0.load(Ordering::Acquire);
            self.free_until = head.saturating_add(geometry.capacity as u64);
        }
        Ok(pos)
    }

    /// Fills in the slot's metadata and publishes it; for a rendezvous mailbox, waits until a
    /// receiver has taken it (and takes it back if none does by `deadline`).
    fn commit(&mut self, pos: u64, len: usize, deadline: Deadline) -> Result<()> {
        let ring = &self.link.ring;
        let slot = ring.slot(pos);
        slot.len.store(len as u32, Ordering::Relaxed);
        slot.sender_pid
            .store(self.participant.pid, Ordering::Relaxed);
        slot.sender_uid.store(self.uid, Ordering::Relaxed);
        slot.sequence.store(self.sequence, Ordering::Relaxed);
        ring.publish(pos);
        if let Some((_, next)) = &mut self.sole {
            *next = pos + 1;
            ring.header().tail.0.store(*next, Ordering::Release);
        }
        self.sequence += 1;
        if ring.geometry().flags & FLAG_RENDEZVOUS == 0 {
            return Ok(());
        }
        let shared = &*self.shared;
        let taken = wait_for(
            shared.wait,
            &shared.ring().header().not_full.0,
            deadline,
            deadline.send_expired(),
            |_| {
                Ok(if ring.is_unclaimed(pos) {
                    Err(false)
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
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.link.ring.data_ptr(pos), msg.len())
        };
        self.commit(pos, msg.len(), deadline)
    }
}

impl MailboxSender {
    /// Gives up a claimed position without publishing it. A single sender's claim changed
    /// nothing in the ring, so there is nothing to undo.
    fn cancel(&mut self, pos: u64) {
        if self.sole.is_none() {
            self.link.ring.release(pos);
        }
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
        self.shared.ring().geometry().max_message as usize
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
            self.sender.cancel(pos);
            return Err(err);
        }
        self.sender.commit(pos, len, Deadline::Never)
    }
}

impl Deref for Loan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let pos = self.pos.expect("a live loan has a slot");
        let ring = &self.sender.link.ring;
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
        let ring = &self.sender.link.ring;
        // SAFETY: as in deref; we hold `&mut self`, so this is the only slice we hand out.
        unsafe {
            std::slice::from_raw_parts_mut(ring.data_ptr(pos), ring.geometry().max_message as usize)
        }
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if let Some(pos) = self.pos.take() {
            self.sender.cancel(pos);
        }
    }
}

/// Receives from a mailbox. Implements [`MessageReceiver`].
pub struct MailboxReceiver {
    shared: Arc<Shared>,
    link: Arc<Link>,
    // Single-receiver mailboxes: the token, and the next position to read.
    sole: Option<(SoleToken, u64)>,
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
    fn claim(&mut self, deadline: Deadline) -> Result<(u64, usize, Metadata)> {
        let shared = &*self.shared;
        let link = &mut self.link;
        let sole = &mut self.sole;
        let pid = self.participant.pid;
        let unbounded = shared.unbounded();
        let pos = wait_for(
            shared.wait,
            &shared.ring().header().not_empty.0,
            deadline,
            deadline.recv_expired(),
            |check| match sole {
                Some((_, next)) => resolve_claim(shared, &link.ring, check, || {
                    link.ring.claim_read_single(next)
                }),
                None if unbounded => claim_unbounded_read(shared, link, pid, check),
                None => claim_on(shared, &link.ring, pid, false, check),
            },
        )?;
        let ring = &self.link.ring;
        let slot = ring.slot(pos);
        let len = slot.len.load(Ordering::Relaxed) as usize;
        if len > ring.geometry().max_message as usize {
            let err = Error::corrupt(
                describe(&shared.name),
                format!(
                    "a slot claims a {len}-byte message, larger than the {}-byte slots",
                    ring.geometry().max_message
                ),
            );
            self.finish(pos);
            return Err(err);
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

impl MailboxReceiver {
    /// Hands the slot of `pos` back once its message has been taken.
    fn finish(&mut self, pos: u64) {
        match &mut self.sole {
            Some((_, next)) => {
                self.link.ring.release_single(pos);
                *next = pos + 1;
            }
            None => self.link.ring.release(pos),
        }
    }
}

impl MessageReceiver for MailboxReceiver {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        let (pos, len, meta) = self.claim(deadline)?;
        let ring = &self.link.ring;
        buf.clear();
        buf.reserve(len);
        // SAFETY: we own the slot (READING by us); len <= max_message was checked in claim, so
        // the source is in the slot's data area; buf has capacity for len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(ring.data_ptr(pos), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        self.finish(pos);
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

    /// The message's position in the mailbox's ring: a counter that never wraps, unique
    /// among the messages of a bounded or rendezvous mailbox's file (a removed and
    /// re-created mailbox starts again at 0; each chained ring of an unbounded mailbox
    /// counts on its own). It is stable while the message waits: in a single-receiver mailbox, a
    /// receiver that dies holding it leaves it to the next receiver at the same position.
    /// `ipckit-bridge` uses it to recognise a message it is given again.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Deref for InPlace<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let ring = &self.receiver.link.ring;
        // SAFETY: we own the slot (READING by us); len <= max_message was validated when it
        // was claimed. A hostile process could still scribble on the bytes: they are plain
        // bytes, so that changes the message, never memory safety outside the slot.
        unsafe { std::slice::from_raw_parts(ring.data_ptr(self.pos), self.len) }
    }
}

impl Drop for InPlace<'_> {
    fn drop(&mut self) {
        self.receiver.finish(self.pos);
    }
}
