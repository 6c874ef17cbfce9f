//! Topics: publish-subscribe over shared memory. Every subscriber sees every message
//! (multicast), each at its own pace, with its own cursor.
//!
//! ```
//! use ipckit::shm::topic::{Overflow, Topic};
//! use ipckit::{MessageReceiver, MessageSender};
//! # let name = format!("doc-topic-{}", std::process::id());
//!
//! let topic = Topic::builder(&name).capacity(128).overflow(Overflow::Overrun).create()?;
//! let mut publisher = topic.publisher()?;
//! let mut early = topic.subscriber()?;
//! publisher.send(b"tick 1")?;
//! let mut late = Topic::open(&name)?.subscriber_with_history(1)?;   // sees the last message
//! assert_eq!(early.recv()?.data, b"tick 1");
//! assert_eq!(late.recv()?.data, b"tick 1");
//! Topic::remove(&name)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # Algorithm
//!
//! A ring of `capacity` slots holds the last `capacity` messages; message `s` (a sequence
//! number that never wraps) lives in slot `s % capacity`. Each slot carries a *stamp*, a
//! sequence lock: `2s+1` while message `s` is being written, `2s+2` once it is complete.
//! `write_pos` (published messages are those below it) only moves after the stamp is even.
//!
//! Publishers take turns through a publish lock that records the holder's pid; a publisher
//! killed while holding it is recognised as dead and its lock taken over. Because `write_pos`
//! had not moved, its half-written message was never visible: the next publisher writes the
//! same sequence number again. So no gap and no torn message can appear.
//!
//! A single-publisher topic ([`TopicBuilder::single_publisher`]) has no publish lock: its one
//! publisher holds a token (the header's `sole_publisher`, with a liveness lock), refused to a
//! second live publisher and taken over from a dead one, which then starts from `write_pos`
//! the same way. It publishes with no locked read-modify-write: `write_pos` is a plain
//! Release store followed by the light half of an asymmetric barrier, and a subscriber going
//! to sleep pays the heavy half (`membarrier`) instead, as the mailbox's cursor rings do.
//!
//! A subscriber reads message `c` (its cursor) by checking the stamp, copying, and checking
//! the stamp again. If the stamp says the slot now belongs to a later message, the subscriber
//! was overrun: it jumps to the oldest message still held and records how many it missed
//! ([`Metadata::missed`](crate::Metadata::missed)), so loss is never silent.
//!
//! A publisher can also declare messages lost without publishing them
//! ([`Publisher::publish_gap`]: a bridge whose own subscriber fell behind on another host).
//! The header keeps the running total of messages so declared, and every message records in
//! its slot the total at its publish; a subscriber adds the difference between the message
//! it receives and the last one it received to what it skipped itself, and moves the
//! message's sequence number on by the total. Both are running totals, so the count stays
//! exact for a subscriber overrun across a gap, and a gap whose publisher dies before the
//! next message is reported with whoever publishes next.
//!
//! The policy decides who gives way when a subscriber falls `capacity` messages behind:
//! - [`Overflow::Overrun`]: the publisher never waits; the slow subscriber loses the oldest
//!   messages and is told how many.
//! - [`Overflow::Backpressure`]: the publisher waits (or fails, or times out, as a mailbox
//!   sender does) until every live subscriber has moved on. Subscribers publish their cursor in
//!   the topic's table; a subscriber that died is ignored (its liveness lock is gone, see
//!   `shm/liveness.rs`; checked only while a publisher is blocked), so a crash never stalls
//!   the topic.
//!
//! Subscribers sleep on one futex word that every publish bumps (a broadcast wake, made only
//! when someone sleeps); blocked publishers sleep on another that subscribers bump.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::layout::{Limits, Padded, Preamble, SlotLayout, Slots, Spec};
use super::named::{open_when_ready, option_setters, setters, shortcuts, Options};
use super::participants::{self, Entry, ParticipantEntry, RepairReport};
use super::segment::Segment;
use super::wait::{WaitStrategy, WaitWord};
use crate::error::{Error, Result};
use crate::shm::liveness::{self, Locks, Table};
use crate::sync::primitive::{AtomicU32, AtomicU64, Ordering};

#[cfg(all(test, loom))]
mod loom_models;
mod publisher;
mod subscriber;
#[cfg(test)]
mod tests;
#[cfg(not(loom))]
mod watch;

pub use publisher::{Publisher, TopicLoan};
pub use subscriber::{Subscriber, TopicSample};

/// Segment kind of topics: `/dev/shm/ipckit.topic.NAME`.
pub const KIND: &str = "topic";
/// Default number of messages a topic keeps (and its maximum history).
pub const DEFAULT_CAPACITY: usize = 64;
pub use super::named::DEFAULT_MAX_MESSAGE;

const TOPIC_MAGIC: u64 = u64::from_le_bytes(*b"ipckitTP");
/// 2: the single-publisher token (`sole_publisher`) and the subscriber scan bound
/// (`subscriber_bound`). An older ipckit would ignore both and publish through the lock beside
/// the token's holder, so a topic of the other version is `Corrupt` rather than shared.
/// 3: gaps (the header's and each slot's `lost`), which version-2 code would miscount, and
/// the single publisher's plain `write_pos` store, whose sleeping subscribers must pay the
/// heavy barrier (version-2 code would not, and could sleep through a message for a turn).
const TOPIC_VERSION: u32 = 3;
const MAX_PUBLISHERS: usize = 32;
const MAX_SUBSCRIBERS: usize = 64;
const FLAG_OVERRUN: u32 = 1;
/// One publisher at a time, holding the topic's token, publishes without the publish lock.
const FLAG_SINGLE_PUBLISHER: u32 = 2;

/// Who gives way when a subscriber falls a whole ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The slow subscriber loses the oldest messages and learns how many
    /// ([`Metadata::missed`](crate::Metadata::missed)); publishers never wait.
    #[default]
    Overrun,
    /// Publishers wait for the slowest live subscriber; no message is lost.
    Backpressure,
}

/// One subscriber's entry: who it is, and its cursor.
#[repr(C)]
#[derive(Debug)]
struct SubscriberEntry {
    pid: AtomicU32,
    _reserved: u32,
    start_time: AtomicU64,
    /// Next message this subscriber will read.
    cursor: AtomicU64,
}

impl Entry for Padded<SubscriberEntry> {
    fn pid(&self) -> &AtomicU32 {
        &self.0.pid
    }
    fn start_time(&self) -> &AtomicU64 {
        &self.0.start_time
    }
}

/// The topic's header, at offset 0 of its segment's payload.
#[repr(C)]
#[derive(Debug)]
struct TopicHeader {
    /// Magic `ipckitTP` (stored last), version, flags and geometry.
    preamble: Preamble,
    creator_pid: u32,
    /// Pid of the single publisher holding the token (single-publisher topics), 0 if none.
    sole_publisher: AtomicU32,
    /// No subscriber entry at or past this index was ever taken: publishers scan only the
    /// entries below it (raised by subscribers as they join, never lowered).
    subscriber_bound: AtomicU32,
    _reserved0: u32,
    /// Messages declared lost so far ([`Publisher::publish_gap`]): the total that the next
    /// message published records in its slot. Written by the publish lock's holder (or the
    /// token's), Release, so that a subscriber joining reads it before `write_pos`.
    lost: AtomicU64,
    _reserved: [u32; 4],
    /// Messages below this sequence number are published.
    write_pos: Padded<AtomicU64>,
    /// Pid of the publisher writing now, 0 if none.
    publish_lock: Padded<AtomicU32>,
    /// Subscribers sleep here; bumped by every publish.
    new_message: Padded<WaitWord>,
    /// Publishers held back by a slow subscriber sleep here.
    room: Padded<WaitWord>,
    publishers: [ParticipantEntry; MAX_PUBLISHERS],
    subscribers: [Padded<SubscriberEntry>; MAX_SUBSCRIBERS],
}

#[repr(C)]
#[derive(Debug)]
struct SlotHeader {
    /// `2s+1` while message `s` is written, `2s+2` once complete; 0: never written.
    stamp: AtomicU64,
    len: AtomicU32,
    sender_pid: AtomicU32,
    sender_uid: AtomicU32,
    _reserved: u32,
    /// The header's `lost` when message `s` was published: how many messages were declared
    /// lost before it, since the topic was created. A subscriber's gap count is the
    /// difference between two messages' values (plus what it skipped itself), so a gap is
    /// counted exactly even by a subscriber overrun across it.
    lost: AtomicU64,
}

// The layout is version 1's, byte for byte: the creator's pid right after the preamble.
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::offset_of!(TopicHeader, creator_pid) == 40);
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::offset_of!(TopicHeader, sole_publisher) == 44);
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::offset_of!(TopicHeader, write_pos) == 128);
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::offset_of!(TopicHeader, lost) == 56);
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::size_of::<SlotHeader>() == 32);

/// The topic's place in the shared layout (`layout.rs`).
#[derive(Debug)]
struct TopicLayout;

// SAFETY: TopicHeader and SlotHeader are #[repr(C)] integers and atomics, aligned to at most
// 64, and TopicHeader starts with a Preamble followed by the creator's pid (asserted above).
unsafe impl SlotLayout for TopicLayout {
    type Header = TopicHeader;
    type Slot = SlotHeader;
    const LIMITS: Limits = Limits::new(TOPIC_MAGIC, TOPIC_VERSION, "topic", 1 << 20, 64 << 20);
}

fn describe(name: &str) -> String {
    format!("topic {name:?}")
}

/// The mapped topic, with its geometry validated and copied out of shared memory.
struct Shared {
    name: String,
    slots: Slots<TopicLayout>,
    capacity: u32,
    max_message: u32,
    overrun: bool,
    single_publisher: bool,
    wait: WaitStrategy,
    /// What the endpoints' fast paths read per message, looked up once.
    fast: Fast,
    _segment: Segment,
}

/// What a publisher's or subscriber's fast path reads per message, copied into the endpoint
/// at attach so that a message costs no pointer chase through the `Arc<Shared>` and no
/// look-up: the validated slots (base and geometry), the segment's poison flag, and the
/// policy. Valid while the endpoint's `Arc<Shared>` keeps the mapping (and its fault guard).
#[derive(Clone, Copy)]
struct Fast {
    slots: Slots<TopicLayout>,
    /// The segment's poison flag (`Segment::poison_flag`): one load per message.
    poison: &'static AtomicBool,
    capacity: u32,
    max_message: u32,
    overrun: bool,
    /// `capacity - 1` for a power-of-two capacity (the slot of a sequence number by mask),
    /// `u64::MAX` otherwise (by division, on slow paths only).
    mask: u64,
}

// SAFETY: `slots` points into shared memory used only through atomics and bounds-checked raw
// copies guarded by the stamp protocol, valid while the endpoint holding this copy keeps its
// `Arc<Shared>` (which is Send and Sync for the same reason).
unsafe impl Send for Fast {}
// SAFETY: as above.
unsafe impl Sync for Fast {}

impl Fast {
    /// The slot index of message `seq` (`seq % capacity`): a mask for a power-of-two
    /// capacity, a division otherwise. Endpoints keep their index and call this only when
    /// they jump.
    #[inline]
    fn index_of(&self, seq: u64) -> usize {
        if self.mask != u64::MAX {
            (seq & self.mask) as usize
        } else {
            (seq % self.capacity as u64) as usize
        }
    }

    /// The index after `index` (wrapping at the capacity): no division.
    #[inline(always)]
    fn next_index(&self, index: usize) -> usize {
        if index + 1 >= self.capacity as usize {
            0
        } else {
            index + 1
        }
    }

    /// Whether a SIGBUS (or a check that found the file cut) poisoned the mapping: what was
    /// read or written since is not the file's. SYNC: Acquire pairs with the handler's
    /// Release store.
    #[inline(always)]
    fn poisoned(&self) -> bool {
        self.poison.load(std::sync::atomic::Ordering::Acquire)
    }
}

// SAFETY: the mapping is shared memory used only through atomics and bounds-checked raw
// copies guarded by the stamp protocol; it is meant for many threads and processes.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// `Corrupt` once a SIGBUS poisoned the mapping (a truncated file, see `shm::fault`);
    /// `deep` (on the slow path) also compares the file's size with the mapping.
    fn check_intact(&self, deep: bool) -> Result<()> {
        if deep {
            self._segment.check_file()
        } else {
            self._segment.check_intact()
        }
    }

    fn header(&self) -> &TopicHeader {
        self.slots.header()
    }

    /// How the liveness of `table`'s entries is asked: through the topic's own descriptor,
    /// which holds none of the participants' locks.
    fn locks(&self, table: Table) -> Locks<'_> {
        Locks {
            probe: self._segment.file_fd(),
            table,
        }
    }

    /// Whether the publisher recorded as `pid` (in the publish lock) is alive: by the
    /// liveness locks of the publisher entries with that pid (`/proc` only for entries
    /// without one).
    fn publisher_alive(&self, pid: u32) -> bool {
        liveness::pid_alive(
            &self.locks(Table::Publishers),
            &self.header().publishers,
            pid,
        )
    }

    fn slot(&self, seq: u64) -> &SlotHeader {
        self.slots.slot(seq)
    }

    fn data_ptr(&self, seq: u64) -> *mut u8 {
        self.slots.data_ptr(seq)
    }

    fn corrupt(&self, detail: impl Into<String>) -> Error {
        Error::corrupt(describe(&self.name), detail)
    }

    /// The lowest cursor among subscribers still attached; with `check_liveness`, entries of
    /// dead subscribers are cleared first. `None`: no subscriber.
    ///
    /// Only the entries below `subscriber_bound` are read: with one subscriber, one entry's
    /// line instead of 64 (at capacity 1 this scan runs on every publish under backpressure).
    #[inline] // so that the publisher's refresh (no liveness check) is its own short loop
    fn slowest_cursor(&self, check_liveness: bool) -> Option<u64> {
        let mut slowest: Option<u64> = None;
        let locks = self.locks(Table::Subscribers);
        let subscribers = &self.header().subscribers;
        // SYNC: Acquire pairs with the SeqCst fetch_max of a joining subscriber, made after
        // its cursor was stored. A bound beyond the table (corruption) is clamped.
        let bound = (self.header().subscriber_bound.load(Ordering::Acquire) as usize)
            .min(subscribers.len());
        for (index, entry) in subscribers[..bound].iter().enumerate() {
            let pid = entry.0.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            if check_liveness && participants::occupant(entry, index, &locks) == Some((pid, false))
            {
                participants::leave(entry, pid);
                continue;
            }
            let cursor = entry.0.cursor.load(Ordering::Acquire);
            slowest = Some(slowest.map_or(cursor, |s| s.min(cursor)));
        }
        slowest
    }
}

/// Builds, creates or opens a [`Topic`]: `Topic::builder(name).capacity(128).create()`.
#[derive(Debug, Clone)]
pub struct TopicBuilder {
    options: Options,
    capacity: usize,
    overflow: Overflow,
    single_publisher: bool,
}

impl TopicBuilder {
    setters! {
        /// How many messages the topic keeps: the most a subscriber can lag, and the longest
        /// history a new subscriber can ask for (default 64).
        capacity(messages: usize) |b| b.capacity = messages;
        /// Overrun (default) or backpressure.
        overflow(overflow: Overflow) |b| b.overflow = overflow;
        /// One publisher at a time: the topic's one [`Publisher`] holds a token (a second
        /// live one is refused with [`Error::AlreadyExists`]; a dead holder's token is taken
        /// over) and publishes without the publish lock's compare-and-swap.
        single_publisher() |b| b.single_publisher = true;
    }
    option_setters!();

    /// Creates the topic; [`Error::AlreadyExists`] if the name is taken.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad geometry or name,
    /// [`Error::PermissionDenied`], or an OS error.
    pub fn create(&self) -> Result<Topic> {
        let (capacity, max_message, len) =
            TopicLayout::requested(self.capacity, self.options.max_message)?;
        let name = &self.options.name;
        let segment = Segment::create(KIND, name, len, self.options.mode)?;
        let mut flags = if self.overflow == Overflow::Overrun {
            FLAG_OVERRUN
        } else {
            0
        };
        if self.single_publisher {
            flags |= FLAG_SINGLE_PUBLISHER;
        }
        let spec = Spec {
            capacity,
            max_message,
            flags,
            mode: self.options.mode,
        };
        // SAFETY: a fresh zero-filled mapping of at least `len` bytes, page-aligned, owned by
        // the Shared built from it; nobody accepts it before init stores the magic.
        let slots = unsafe {
            Slots::init(
                segment.payload(),
                segment.payload_len(),
                spec,
                &describe(name),
            )
        };
        match slots {
            Ok(slots) => Ok(Topic::from_parts(name, slots, segment, self.options.wait)),
            Err(err) => {
                let _ = Segment::unlink(KIND, name);
                Err(err)
            }
        }
    }

    /// Opens an existing topic.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Corrupt`].
    pub fn open(&self) -> Result<Topic> {
        let name = &self.options.name;
        open_when_ready(KIND, name, self.options.trust, |segment| {
            // SAFETY: the segment maps payload_len() bytes at payload(), page-aligned, and is
            // stored in the Shared together with the slots; the contents are validated.
            let slots = unsafe {
                Slots::attach(segment.payload(), segment.payload_len(), &describe(name))?
            };
            Ok(Topic::from_parts(name, slots, segment, self.options.wait))
        })
    }

    /// Opens the topic, creating it first if it does not exist (then with this builder's
    /// geometry; an existing topic keeps its own).
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(&self) -> Result<Topic> {
        match self.create() {
            Err(Error::AlreadyExists { .. }) => self.open(),
            other => other,
        }
    }
}

/// A handle on a named topic; make publishers and subscribers from it.
#[derive(Clone)]
pub struct Topic {
    shared: Arc<Shared>,
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.shared.name)
            .field("capacity", &self.shared.capacity)
            .field("overrun", &self.shared.overrun)
            .field("single_publisher", &self.shared.single_publisher)
            .finish()
    }
}

/// A snapshot of a topic, for `ipckit ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Messages kept.
    pub capacity: usize,
    /// Overrun or backpressure.
    pub overflow: Overflow,
    /// Messages published so far.
    pub published: u64,
    /// Live subscribers.
    pub subscribers: usize,
    /// Subscriber entries of dead processes.
    pub dead_subscribers: usize,
    /// Live publishers.
    pub publishers: usize,
    /// How far the slowest live subscriber is behind, in messages.
    pub slowest_lag: Option<u64>,
    /// File mode.
    pub mode: u32,
    /// Pid of the publisher holding the publish lock (publishers wait for it), if any.
    pub publish_lock_holder: Option<u32>,
    /// Whether that holder is dead (judged by the publishers' liveness locks); its lock is
    /// then taken over by the next publisher, or freed by [`Topic::repair`].
    pub publish_lock_holder_dead: bool,
}

impl Topic {
    /// Starts building a topic called `name`.
    pub fn builder(name: &str) -> TopicBuilder {
        TopicBuilder {
            options: Options::new(name),
            capacity: DEFAULT_CAPACITY,
            overflow: Overflow::default(),
            single_publisher: false,
        }
    }

    shortcuts!(
        Topic,
        TopicBuilder,
        "64 messages of up to 4096 bytes, overrun, mode 0600"
    );

    /// Removes the topic's name; processes attached keep using it until they let go.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such topic; [`Error::InvalidArgument`] for a bad
    /// name.
    pub fn remove(name: &str) -> Result<()> {
        Segment::unlink(KIND, name)
    }

    /// Names of every topic on this machine.
    ///
    /// # Errors
    /// An OS error if `/dev/shm` cannot be read.
    pub fn list() -> Result<Vec<String>> {
        Segment::list(KIND)
    }

    fn from_parts(
        name: &str,
        slots: Slots<TopicLayout>,
        segment: Segment,
        wait: WaitStrategy,
    ) -> Topic {
        let geometry = *slots.geometry();
        let fast = Fast {
            slots,
            poison: segment.poison_flag(),
            capacity: geometry.capacity,
            max_message: geometry.max_message,
            overrun: geometry.flags & FLAG_OVERRUN != 0,
            mask: if geometry.capacity.is_power_of_two() {
                geometry.capacity as u64 - 1
            } else {
                u64::MAX
            },
        };
        Topic {
            shared: Arc::new(Shared {
                name: name.to_string(),
                slots,
                fast,
                capacity: geometry.capacity,
                max_message: geometry.max_message,
                overrun: geometry.flags & FLAG_OVERRUN != 0,
                single_publisher: geometry.flags & FLAG_SINGLE_PUBLISHER != 0,
                wait,
                _segment: segment,
            }),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A publisher, entered in the topic's publisher table (and, in a single-publisher
    /// topic, holding its token).
    ///
    /// # Errors
    /// [`Error::LimitReached`] when 32 live publishers are attached;
    /// [`Error::AlreadyExists`] (naming the holder's pid) while another live process is a
    /// single-publisher topic's publisher.
    pub fn publisher(&self) -> Result<Publisher> {
        Publisher::new(&self.shared)
    }

    /// A subscriber that sees only messages published from now on.
    ///
    /// # Errors
    /// [`Error::LimitReached`] when 64 live subscribers are attached.
    pub fn subscriber(&self) -> Result<Subscriber> {
        self.subscriber_with_history(0)
    }

    /// A subscriber that first gets (up to) the last `history` messages, then new ones.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `history` exceeds the capacity;
    /// [`Error::LimitReached`] when 64 live subscribers are attached.
    pub fn subscriber_with_history(&self, history: usize) -> Result<Subscriber> {
        Subscriber::new(&self.shared, history)
    }

    /// A snapshot of the topic's state.
    pub fn info(&self) -> TopicInfo {
        let shared = &self.shared;
        let header = shared.header();
        let published = header.write_pos.0.load(Ordering::Acquire);
        let (mut subscribers, mut dead_subscribers, mut slowest) = (0, 0, None::<u64>);
        let locks = shared.locks(Table::Subscribers);
        for (index, entry) in header.subscribers.iter().enumerate() {
            match participants::occupant(entry, index, &locks) {
                None => {}
                Some((_, false)) => dead_subscribers += 1,
                Some((_, true)) => {
                    subscribers += 1;
                    let lag = published.saturating_sub(entry.0.cursor.load(Ordering::Acquire));
                    slowest = Some(slowest.map_or(lag, |s| s.max(lag)));
                }
            }
        }
        let publishers = header
            .publishers
            .iter()
            .enumerate()
            .filter(|(index, e)| {
                matches!(
                    participants::occupant(*e, *index, &shared.locks(Table::Publishers)),
                    Some((_, true))
                )
            })
            .count();
        let holder = Some(header.publish_lock.0.load(Ordering::Acquire)).filter(|&pid| pid != 0);
        TopicInfo {
            name: shared.name.clone(),
            capacity: shared.capacity as usize,
            overflow: if shared.overrun {
                Overflow::Overrun
            } else {
                Overflow::Backpressure
            },
            published,
            subscribers,
            dead_subscribers,
            publishers,
            slowest_lag: slowest,
            mode: shared.slots.geometry().mode,
            publish_lock_holder: holder,
            publish_lock_holder_dead: holder.is_some_and(|pid| !shared.publisher_alive(pid)),
        }
    }

    /// Repairs what dead processes left: their subscriber and publisher entries
    /// ([`RepairReport::dead_participants`]), and the publish lock of a publisher that died
    /// writing (its half-written slot, never visible, counts in
    /// [`RepairReport::reclaimed_slots`]). Safe to run while others use the topic.
    pub fn repair(&self) -> RepairReport {
        let shared = &self.shared;
        let header = shared.header();
        let dead_participants =
            participants::clear_dead(&header.subscribers, &shared.locks(Table::Subscribers))
                + participants::clear_dead(&header.publishers, &shared.locks(Table::Publishers));
        let lock = &header.publish_lock.0;
        let holder = lock.load(Ordering::Acquire);
        let lock_released = holder != 0
            && !shared.publisher_alive(holder)
            && lock
                .compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        RepairReport {
            dead_participants,
            reclaimed_slots: usize::from(lock_released),
            ..RepairReport::default()
        }
    }
}
