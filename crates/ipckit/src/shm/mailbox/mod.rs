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
//! A receiver that must notice that its producers are gone opts in with
//! [`MailboxReceiver::until_senders_gone`]: it then gets [`Error::Disconnected`] once every
//! message is received and no live sender remains (senders' deaths are watched through
//! pidfds). The [`service`](crate::service) layer and
//! [`direct`](crate::direct) inboxes, which are connections rather than places, report a
//! vanished peer as [`Error::Disconnected`].
//!
//! The slot protocol that makes it crash-safe is described in `shm/ring/mod.rs` and in
//! `docs/ARCHITECTURE.md`.
//!
//! # Files
//!
//! `mod.rs` the builder and the [`Mailbox`] handle; `participants.rs` the participant table
//! and the single-sender/receiver tokens; `idempotent.rs` the idempotent sender (exactly once
//! for a sender that restarts); `endpoint.rs` what senders and receivers share,
//! with the private flavour enum (many, sole, chain) that picks a claim path once; `chain.rs`
//! the unbounded chain of rings; `cache.rs` the message cache after the ring (Mach's
//! "temporarily cache a message", [`WhenFull::Cache`](crate::WhenFull::Cache)); `sender.rs`
//! and `receiver.rs` the two endpoints and their in-place guards.
//!
//! # Caching a message when the mailbox is full
//!
//! ```
//! use ipckit::shm::mailbox::{CacheState, Mailbox};
//! use ipckit::{MessageReceiver, MessageSender, WhenFull};
//! # let name = format!("doc-cache-{}", std::process::id());
//!
//! let mailbox = Mailbox::builder(&name).capacity(1).create()?;
//! let mut tx = mailbox.sender()?.when_full(WhenFull::Cache);
//! tx.send(b"queued")?;
//! tx.send(b"cached")?;                          // full: kept in the mailbox, returns at once
//! assert_eq!(tx.cache_state(), CacheState::Pending);
//! drop(tx);                                     // the sender may even exit
//! let mut rx = mailbox.receiver()?;
//! assert_eq!(rx.recv()?.data, b"queued");       // making room moves the cached one in
//! assert_eq!(rx.recv()?.data, b"cached");
//! Mailbox::remove(&name)?;
//! # Ok::<(), ipckit::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use super::layout::{SlotLayout, Spec};
use super::named::{open_when_ready, option_setters, setters, shortcuts, Options};
use super::ring::{
    Ring, RingLayout, FLAG_RENDEZVOUS, FLAG_SINGLE_RECEIVER, FLAG_SINGLE_SENDER, FLAG_UNBOUNDED,
};
use super::segment::{Segment, Trust};
pub use super::wait::WaitStrategy;
use crate::error::{Error, Result};
use crate::link::Capacity;
use crate::sync::primitive::Ordering;
use participants::{is_dead, Role};

mod cache;
mod chain;
mod endpoint;
mod idempotent;
mod participants;
mod receiver;
mod sender;
#[cfg(not(loom))]
mod watch;

pub use super::named::DEFAULT_MAX_MESSAGE;
pub use super::participants::RepairReport;
pub use cache::{CacheState, DEFAULT_CACHE_SLOTS};
pub use chain::CHAIN_KIND;
pub use idempotent::{Delivery, IdempotentSender, IdempotentSource, SourceInfo};
pub use receiver::{MailboxReceiver, MailboxSample};
pub use sender::{MailboxLoan, MailboxSender};
#[cfg(not(loom))]
pub(crate) use watch::SendersWatch;
#[cfg(not(loom))]
pub use watch::UntilSendersGone;

/// The old name of [`MailboxLoan`].
#[deprecated(since = "0.2.0", note = "renamed MailboxLoan, parallel to TopicLoan")]
pub type Loan<'a> = MailboxLoan<'a>;

/// The old name of [`MailboxSample`].
#[deprecated(
    since = "0.2.0",
    note = "renamed MailboxSample, parallel to TopicSample"
)]
pub type InPlace<'a> = MailboxSample<'a>;

/// The segment kind of mailboxes: their files are `/dev/shm/ipckit.mailbox.NAME`.
pub const KIND: &str = "mailbox";

/// Default capacity, in messages.
pub const DEFAULT_CAPACITY: usize = 64;
/// The old bound of a sender's heap overflow cache. The cache is now one message per sender,
/// kept in the mailbox ([`WhenFull::Cache`](crate::WhenFull::Cache)).
#[deprecated(
    since = "0.3.0",
    note = "a sender caches one message at a time, in the mailbox; see DEFAULT_CACHE_SLOTS"
)]
pub const DEFAULT_CACHE_LIMIT: usize = 1024;

/// Builds, creates or opens a [`Mailbox`]: `Mailbox::builder(name).capacity(64).create()`.
#[derive(Debug, Clone)]
pub struct MailboxBuilder {
    options: Options,
    capacity: Capacity,
    unbounded_ring: usize,
    single: u32,
    cache_slots: usize,
}

impl MailboxBuilder {
    setters! {
        /// At most one sender at a time: its sends then need no compare-and-swap, the cheaper
        /// fast path for one-to-one and one-to-many links. A second sender is refused while
        /// the first is alive. Bounded mailboxes only.
        single_sender() |b| b.single |= FLAG_SINGLE_SENDER;
        /// At most one receiver at a time: its receives then need no compare-and-swap. A
        /// receiver killed while holding a message leaves it to the next receiver (delivered
        /// again, never lost), at the same
        /// [`mailbox_position`](crate::shm::mailbox::MailboxSample::mailbox_position). Bounded
        /// and unbounded mailboxes (not rendezvous).
        single_receiver() |b| b.single |= FLAG_SINGLE_RECEIVER;
        /// A bounded ring of `n` messages (shorthand for
        /// `.capacity_kind(Capacity::Bounded(n))`).
        capacity(n: usize) |b| b.capacity = Capacity::Bounded(n);
        /// Bounded, rendezvous or unbounded. `Bounded(0)` is refused when the mailbox is
        /// created (zero capacity is `Rendezvous`).
        ///
        /// An unbounded mailbox is a chain of rings: when the newest is full a sender seals it
        /// and chains a new segment (`/dev/shm/ipckit.mailbox-chain.N.NAME`) instead of
        /// waiting; receivers drain the rings in order and remove each one they have emptied.
        capacity_kind(capacity: Capacity) |b| b.capacity = capacity;
        /// Messages per ring of an unbounded mailbox (default 64).
        unbounded_ring_capacity(n: usize) |b| b.unbounded_ring = n;
        /// Entries of the mailbox's message cache ([`WhenFull::Cache`](crate::WhenFull::Cache)):
        /// how many senders may have a cached message waiting at once (default
        /// [`DEFAULT_CACHE_SLOTS`], at most 1024; each takes one slot's size of memory). `0`
        /// creates no cache. Single-sender, rendezvous and unbounded mailboxes have none.
        cache_slots(n: usize) |b| b.cache_slots = n;
    }
    option_setters!();

    /// Validates the requested geometry: what to create, the ring's size in bytes, and the
    /// cache entries that follow it.
    fn geometry_with_cache(&self) -> Result<(Spec, usize, u32)> {
        let (spec, len) = self.geometry()?;
        let eligible = spec.flags & (FLAG_RENDEZVOUS | FLAG_UNBOUNDED | FLAG_SINGLE_SENDER) == 0;
        let slots = if eligible { self.cache_slots } else { 0 };
        let slots = u32::try_from(slots)
            .ok()
            .filter(|&n| n <= cache::MAX_CACHE_SLOTS)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{slots} cache entries exceed the limit of {}",
                    cache::MAX_CACHE_SLOTS
                ))
            })?;
        Ok((spec, len, slots))
    }

    /// Validates the requested geometry: what to create, and its size in bytes.
    fn geometry(&self) -> Result<(Spec, usize)> {
        let (slots, flags) = match self.capacity.check()? {
            Capacity::Bounded(n) => (n, 0),
            Capacity::Rendezvous => (1, FLAG_RENDEZVOUS),
            // Each ring of the chain holds `unbounded_ring` messages; more are chained as
            // needed.
            Capacity::Unbounded => (self.unbounded_ring, FLAG_UNBOUNDED),
        };
        // A single receiver also suits a chain (it drains the rings in order); a single
        // sender's claim without compare-and-swap does not (it never seals a ring).
        let chain_ok = self.single == FLAG_SINGLE_RECEIVER && self.capacity == Capacity::Unbounded;
        if self.single != 0 && !matches!(self.capacity, Capacity::Bounded(_)) && !chain_ok {
            return Err(Error::Unsupported(format!(
                "single-sender mailboxes must be bounded, and single-receiver ones bounded or \
                 unbounded, not {:?}",
                self.capacity
            )));
        }
        let (capacity, max_message, len) = RingLayout::requested(slots, self.options.max_message)?;
        let spec = Spec {
            capacity,
            max_message,
            flags: flags | self.single,
            mode: self.options.mode,
        };
        Ok((spec, len))
    }

    /// Creates the mailbox; fails with [`Error::AlreadyExists`] if the name is taken.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name or geometry
    /// (`Capacity::Bounded(0)` included), [`Error::PermissionDenied`], or an OS error.
    pub fn create(&self) -> Result<Mailbox> {
        let name = &self.options.name;
        let (spec, len, cache_slots) = self.geometry_with_cache()?;
        let total = cache::payload_len(len, cache_slots, spec.max_message).ok_or_else(|| {
            Error::InvalidArgument("the mailbox with its message cache is too large".into())
        })?;
        let segment = Segment::create(KIND, name, total, spec.mode)?;
        // Rings left by an earlier mailbox of this name would be taken for ours.
        chain::remove_chain(name);
        // SAFETY: a freshly created, zeroed segment of at least `total` bytes, invisible to
        // openers until the ring magic below; the cache area is written first, so an opener
        // that sees the ring sees the cache too.
        unsafe {
            cache::Cache::init(
                segment.payload(),
                segment.payload_len(),
                len,
                cache_slots,
                spec.max_message,
            )
        };
        // SAFETY: a freshly created segment, invisible to openers until Segment::create
        // published its header (and openers also wait for the ring magic); the Shared built
        // below owns both.
        let built = unsafe { init_ring(&segment, spec, &describe(name)) }
            .and_then(|ring| Mailbox::from_parts(name, segment, ring, self.options.wait));
        match built {
            Ok(mailbox) => Ok(mailbox),
            Err(err) => {
                let _ = Segment::unlink(KIND, name);
                Err(err)
            }
        }
    }

    /// Opens an existing mailbox.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Corrupt`] if the segment is
    /// not a valid mailbox.
    pub fn open(&self) -> Result<Mailbox> {
        let (segment, ring) = attach_named(
            KIND,
            &self.options.name,
            &describe(&self.options.name),
            self.options.trust,
        )?;
        Mailbox::from_parts(&self.options.name, segment, ring, self.options.wait)
    }

    /// Creates an anonymous mailbox (`memfd`): no name anyone could open; hand
    /// [`Mailbox::fd`] to another process (over a Unix socket) and it calls
    /// [`Mailbox::from_fd`]. The service layer's private channels are made this way.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad geometry, [`Error::Unsupported`] for an unbounded
    /// capacity, or an OS error.
    pub fn create_anonymous(&self) -> Result<Mailbox> {
        let (spec, len) = self.geometry()?;
        if spec.flags & FLAG_UNBOUNDED != 0 {
            return Err(Error::Unsupported(
                "an anonymous mailbox cannot chain named rings: use a bounded capacity".into(),
            ));
        }
        let segment = Segment::anonymous(KIND, len)?;
        let spec = Spec {
            mode: 0o600,
            ..spec
        };
        // SAFETY: a fresh anonymous segment nobody else has; the Shared built below owns both.
        let ring = unsafe { init_ring(&segment, spec, "anonymous mailbox")? };
        Mailbox::from_parts("(anonymous)", segment, ring, self.options.wait)
    }

    /// Opens the mailbox, creating it first if it does not exist (then with this builder's
    /// geometry; an existing mailbox keeps its own).
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(&self) -> Result<Mailbox> {
        match self.create() {
            Err(Error::AlreadyExists { .. }) => self.open(),
            other => other,
        }
    }
}

/// Initialises a ring in the whole payload of a new segment.
///
/// # Errors
/// [`Error::InvalidArgument`] for a geometry outside the limits or larger than the payload.
///
/// # Safety
/// `segment` was just created (zero-filled, used by nobody else until this returns) and
/// outlives the returned ring.
unsafe fn init_ring(segment: &Segment, spec: Spec, object: &str) -> Result<Ring> {
    // SAFETY: a segment's payload is page-aligned and payload_len() bytes long; the rest is
    // the caller's guarantee.
    unsafe { Ring::init(segment.payload(), segment.payload_len(), spec, object) }
}

/// Opens segment `kind`/`name` and attaches the ring in it, giving its creator a moment to
/// finish (see [`open_when_ready`]).
fn attach_named(kind: &str, name: &str, object: &str, trust: Trust) -> Result<(Segment, Ring)> {
    open_when_ready(kind, name, trust, |segment| {
        // SAFETY: the segment maps payload_len() bytes at payload(), page-aligned; the
        // caller keeps the Segment alive as long as the Ring (they are stored together);
        // the contents are validated by attach.
        let ring = unsafe { Ring::attach(segment.payload(), segment.payload_len(), object)? };
        Ok((segment, ring))
    })
}

fn describe(name: &str) -> String {
    format!("mailbox {name:?}")
}

/// `Corrupt` once a SIGBUS poisoned the root or `link` (a truncated file, see `shm::fault`);
/// `deep` (on the slow path) also compares the files' sizes with the mappings.
fn check_intact(shared: &Shared, link: &Link, deep: bool) -> Result<()> {
    for segment in [&shared.root._segment, &link._segment] {
        if deep {
            segment.check_file()?;
        } else {
            segment.check_intact()?;
        }
    }
    Ok(())
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
    /// The message cache after the root ring, if the mailbox has one (`cache.rs`).
    cache: Option<cache::Cache>,
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
    /// Whether the process is still alive: its liveness lock is held (right across PID
    /// namespaces; a reused pid counts as dead).
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
    /// Messages waiting in the mailbox's cache for room ([`WhenFull::Cache`](crate::WhenFull::Cache)),
    /// not counted in `depth`.
    pub cached: usize,
    /// How many of `held_slots` are held by dead processes ([`Mailbox::repair`] hands them
    /// back). Judged by the holders' liveness locks, so right across PID namespaces.
    pub dead_held_slots: usize,
    /// Chained rings of an unbounded mailbox found without their magic: being created, or
    /// left unfinished by a creator that died ([`Mailbox::repair`] removes those).
    pub unfinished_rings: usize,
    /// The sources of idempotent senders ([`Mailbox::idempotent_sender`]) recorded in the
    /// mailbox, in table order (at most 8; free entries are left out): each stream's id,
    /// owner and how many of its messages were delivered. A bridge keeps one per remote
    /// stream. Empty for a rendezvous mailbox, which has none.
    pub sources: Vec<SourceInfo>,
}

impl Mailbox {
    /// Starts building a mailbox called `name`.
    pub fn builder(name: &str) -> MailboxBuilder {
        MailboxBuilder {
            options: Options::new(name),
            capacity: Capacity::Bounded(DEFAULT_CAPACITY),
            unbounded_ring: DEFAULT_CAPACITY,
            single: 0,
            cache_slots: DEFAULT_CACHE_SLOTS,
        }
    }

    shortcuts!(
        Mailbox,
        MailboxBuilder,
        "64 messages of up to 4096 bytes, mode 0600"
    );

    /// Removes the mailbox's name. Processes that have it open keep using it; its memory is
    /// returned when the last one lets go.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such mailbox.
    pub fn remove(name: &str) -> Result<()> {
        Segment::unlink(KIND, name)?;
        chain::remove_chain(name);
        Ok(())
    }

    fn from_parts(name: &str, segment: Segment, ring: Ring, wait: WaitStrategy) -> Result<Mailbox> {
        // SAFETY: the segment maps payload_len() bytes at payload(), page-aligned, and is
        // stored in the same Shared as the cache; the contents are validated by attach.
        let cache = unsafe {
            cache::Cache::attach(
                segment.payload(),
                segment.payload_len(),
                &ring,
                &describe(name),
            )?
        };
        Ok(Mailbox {
            shared: Arc::new(Shared {
                name: name.to_string(),
                wait,
                root: Arc::new(Link {
                    index: 0,
                    ring,
                    _root: None,
                    _segment: segment,
                }),
                cache,
            }),
        })
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
        Mailbox::from_parts("(anonymous)", segment, ring, wait)
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

    /// A sender, entered in the participant table. Its full policy is [`WhenFull::Block`](crate::WhenFull::Block).
    ///
    /// # Errors
    /// [`Error::LimitReached`] if the participant table is full of live processes;
    /// [`Error::AlreadyExists`] for a second sender of a single-sender mailbox.
    pub fn sender(&self) -> Result<MailboxSender> {
        MailboxSender::new(&self.shared)
    }

    /// A receiver, entered in the participant table.
    ///
    /// # Errors
    /// [`Error::LimitReached`] if the participant table is full of live processes;
    /// [`Error::AlreadyExists`] for a second receiver of a single-receiver mailbox.
    pub fn receiver(&self) -> Result<MailboxReceiver> {
        MailboxReceiver::new(&self.shared)
    }

    /// A snapshot of depth, geometry, participants and idempotent senders' sources.
    pub fn info(&self) -> MailboxInfo {
        let chain = chain::rings(&self.shared);
        let held_slots: Vec<(u64, u32)> = chain
            .iter()
            .flat_map(|link| link.ring.held_slots())
            .collect();
        let ring = self.shared.ring();
        let geometry = ring.geometry();
        let header = ring.header();
        let participants = header
            .participants
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                let (pid, alive) = participants::entry_alive(&self.shared, index)?;
                let role = match entry.role.load(Ordering::Relaxed) {
                    1 => Role::Sender,
                    _ => Role::Receiver,
                };
                Some(ParticipantInfo {
                    pid,
                    role: role.name(),
                    alive,
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
            held_slots: held_slots.clone(),
            dead_held_slots: held_slots
                .iter()
                .filter(|(_, pid)| is_dead(&self.shared, *pid))
                .count(),
            unfinished_rings: chain::unfinished_rings(&self.shared).len(),
            sources: idempotent::sources(&self.shared),
            cached: self
                .shared
                .cache
                .as_ref()
                .map_or(0, |cache| cache.pending_count()),
        }
    }

    /// Repairs what dead processes left: their participant entries, the slots they held,
    /// and the chained rings they died creating (removed, and made again where the chain
    /// needs them); moves cached messages into the mailbox if it has room. Unread messages
    /// are kept. Safe to run while others use the mailbox.
    pub fn repair(&self) -> RepairReport {
        let shared = &self.shared;
        let mut report = RepairReport {
            removed_rings: chain::repair(shared),
            ..RepairReport::default()
        };
        for link in chain::rings(shared) {
            for (pos, pid) in link.ring.held_slots() {
                if is_dead(shared, pid) && link.ring.reclaim(pos, pid) {
                    report.reclaimed_slots += 1;
                }
            }
        }
        report.dead_participants = super::participants::clear_dead(
            &shared.ring().header().participants,
            &participants::locks(shared),
        );
        // Cached messages a dead mover left half-moved go back in, if there is room.
        if let Some(cache) = &shared.cache {
            cache.deliver_pending(shared, std::process::id());
        }
        report
    }

    /// Names of every mailbox on this machine.
    ///
    /// # Errors
    /// An OS error if `/dev/shm` cannot be read.
    pub fn list() -> Result<Vec<String>> {
        Segment::list(KIND)
    }
}
