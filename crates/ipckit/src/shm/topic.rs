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
//! A subscriber reads message `c` (its cursor) by checking the stamp, copying, and checking
//! the stamp again. If the stamp says the slot now belongs to a later message, the subscriber
//! was overrun: it jumps to the oldest message still held and records how many it missed
//! ([`Metadata::missed`]), so loss is never silent.
//!
//! The policy decides who gives way when a subscriber falls `capacity` messages behind:
//! - [`Overflow::Overrun`]: the publisher never waits; the slow subscriber loses the oldest
//!   messages and is told how many.
//! - [`Overflow::Backpressure`]: the publisher waits (or fails, or times out, as a mailbox
//!   sender does) until every live subscriber has moved on. Subscribers publish their cursor in
//!   the topic's table; a subscriber that died is ignored (liveness from `/proc`, checked only
//!   while a publisher is blocked), so a crash never stalls the topic.
//!
//! Subscribers sleep on one futex word that every publish bumps (a broadcast wake, made only
//! when someone sleeps); blocked publishers sleep on another that subscribers bump.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ring::{Padded, ParticipantEntry};
use super::segment::Segment;
use super::seqlock;
use super::wait::{wait_for, wake_sleepers, Attempt, WaitStrategy, WaitWord};
use crate::error::{Error, Result};
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender, Metadata};
use crate::process::{liveness, Liveness, ProcessIdentity};
use crate::sync::primitive::{AtomicU32, AtomicU64, Ordering};

/// Segment kind of topics: `/dev/shm/ipckit.topic.NAME`.
pub const KIND: &str = "topic";
/// Default number of messages a topic keeps (and its maximum history).
pub const DEFAULT_CAPACITY: usize = 64;
/// Default maximum message size, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 4096;

const TOPIC_MAGIC: u64 = u64::from_le_bytes(*b"ipckitTP");
const TOPIC_VERSION: u32 = 1;
const MAX_PUBLISHERS: usize = 32;
const MAX_SUBSCRIBERS: usize = 64;
const MAX_CAPACITY: u32 = 1 << 20;
const MAX_MESSAGE: u32 = 64 << 20;
const FLAG_OVERRUN: u32 = 1;

/// Who gives way when a subscriber falls a whole ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The slow subscriber loses the oldest messages and learns how many
    /// ([`Metadata::missed`]); publishers never wait.
    #[default]
    Overrun,
    /// Publishers wait for the slowest live subscriber; no message is lost.
    Backpressure,
}

#[repr(C)]
#[derive(Debug)]
struct SubscriberEntry {
    pid: AtomicU32,
    _reserved: u32,
    start_time: AtomicU64,
    /// Next message this subscriber will read.
    cursor: AtomicU64,
}

#[repr(C)]
#[derive(Debug)]
struct TopicHeader {
    magic: AtomicU64,
    version: u32,
    flags: u32,
    capacity: u32,
    slot_size: u32,
    max_message: u32,
    mode: u32,
    created_unix_ns: u64,
    creator_pid: u32,
    _reserved: [u32; 9],
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
    _reserved: [u32; 3],
}

const SLOT_HEADER: usize = std::mem::size_of::<SlotHeader>();

fn slots_offset() -> usize {
    std::mem::size_of::<TopicHeader>().next_multiple_of(64)
}

fn slot_size_for(max_message: u32) -> usize {
    (SLOT_HEADER + max_message as usize).next_multiple_of(64)
}

fn topic_len(capacity: u32, max_message: u32) -> Option<usize> {
    slot_size_for(max_message)
        .checked_mul(capacity as usize)?
        .checked_add(slots_offset())
}

fn describe(name: &str) -> String {
    format!("topic {name:?}")
}

/// The mapped topic, with its geometry validated and copied out of shared memory.
struct Shared {
    name: String,
    base: NonNull<u8>,
    capacity: u32,
    slot_size: usize,
    max_message: u32,
    overrun: bool,
    mode: u32,
    wait: WaitStrategy,
    _segment: Segment,
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
        // SAFETY: validated at attach: aligned, in bounds, every bit pattern valid.
        unsafe { &*(self.base.as_ptr() as *const TopicHeader) }
    }

    fn slot_ptr(&self, seq: u64) -> *mut u8 {
        let index = (seq % self.capacity as u64) as usize;
        // SAFETY: index < capacity, and slots_offset + capacity * slot_size fits in the
        // mapping (checked at attach).
        unsafe {
            self.base
                .as_ptr()
                .add(slots_offset() + index * self.slot_size)
        }
    }

    fn slot(&self, seq: u64) -> &SlotHeader {
        // SAFETY: in bounds (slot_ptr), 64-byte aligned, atomics only.
        unsafe { &*(self.slot_ptr(seq) as *const SlotHeader) }
    }

    fn data_ptr(&self, seq: u64) -> *mut u8 {
        // SAFETY: the slot holds SLOT_HEADER + max_message bytes inside the mapping.
        unsafe { self.slot_ptr(seq).add(SLOT_HEADER) }
    }

    fn corrupt(&self, detail: impl Into<String>) -> Error {
        Error::corrupt(describe(&self.name), detail)
    }

    /// The lowest cursor among subscribers still attached; with `check_liveness`, entries of
    /// dead subscribers are cleared first. `None`: no subscriber.
    fn slowest_cursor(&self, check_liveness: bool) -> Option<u64> {
        let mut slowest: Option<u64> = None;
        for entry in &self.header().subscribers {
            let entry = &entry.0;
            let pid = entry.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            if check_liveness
                && liveness(pid, Some(entry.start_time.load(Ordering::Acquire))) == Liveness::Dead
            {
                let _ = entry
                    .pid
                    .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
                continue;
            }
            let cursor = entry.cursor.load(Ordering::Acquire);
            slowest = Some(slowest.map_or(cursor, |s| s.min(cursor)));
        }
        slowest
    }
}

/// Builds, creates or opens a [`Topic`].
#[derive(Debug, Clone)]
pub struct TopicBuilder {
    name: String,
    capacity: usize,
    max_message: usize,
    overflow: Overflow,
    mode: u32,
    wait: WaitStrategy,
}

impl TopicBuilder {
    /// How many messages the topic keeps: the most a subscriber can lag, and the longest
    /// history a new subscriber can ask for (default 64).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = messages;
        self
    }

    /// The largest message, in bytes (default 4096).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Overrun (default) or backpressure.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// File mode (default `0o600`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// How endpoints made from this handle wait.
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Creates the topic; [`Error::AlreadyExists`] if the name is taken.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad geometry or name,
    /// [`Error::PermissionDenied`], or an OS error.
    pub fn create(&self) -> Result<Topic> {
        let capacity = u32::try_from(self.capacity)
            .ok()
            .filter(|c| (1..=MAX_CAPACITY).contains(c))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "topic capacity {} is outside 1..={MAX_CAPACITY}",
                    self.capacity
                ))
            })?;
        let max_message = u32::try_from(self.max_message)
            .ok()
            .filter(|m| *m <= MAX_MESSAGE)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "maximum message size {} exceeds {MAX_MESSAGE}",
                    self.max_message
                ))
            })?;
        let len = topic_len(capacity, max_message)
            .ok_or_else(|| Error::InvalidArgument("capacity x message size is too large".into()))?;
        let segment = Segment::create(KIND, &self.name, len, self.mode)?;
        // SAFETY: a fresh zero-filled mapping of at least `len` bytes, page-aligned; nobody
        // accepts it before the magic is stored below.
        let header = unsafe { &mut *(segment.payload().as_ptr() as *mut TopicHeader) };
        header.version = TOPIC_VERSION;
        header.flags = if self.overflow == Overflow::Overrun {
            FLAG_OVERRUN
        } else {
            0
        };
        header.capacity = capacity;
        header.slot_size = slot_size_for(max_message) as u32;
        header.max_message = max_message;
        header.mode = self.mode;
        header.created_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        header.creator_pid = std::process::id();
        // SYNC: pairs with the Acquire load of the magic in `attach`.
        header.magic.store(TOPIC_MAGIC, Ordering::Release);
        Topic::attach(&self.name, segment, self.wait)
    }

    /// Opens an existing topic.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Corrupt`].
    pub fn open(&self) -> Result<Topic> {
        let start = Instant::now();
        loop {
            match Segment::open(KIND, &self.name)
                .and_then(|s| Topic::attach(&self.name, s, self.wait))
            {
                // A creator publishes its magic last: give it a moment.
                Err(Error::Corrupt { .. }) if start.elapsed() < Duration::from_millis(500) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                other => return other,
            }
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
}

impl Topic {
    /// Starts building a topic called `name`.
    pub fn builder(name: &str) -> TopicBuilder {
        TopicBuilder {
            name: name.to_string(),
            capacity: DEFAULT_CAPACITY,
            max_message: DEFAULT_MAX_MESSAGE,
            overflow: Overflow::default(),
            mode: 0o600,
            wait: WaitStrategy::default(),
        }
    }

    /// Opens an existing topic.
    pub fn open(name: &str) -> Result<Topic> {
        Topic::builder(name).open()
    }

    /// Removes the topic's name; processes attached keep using it until they let go.
    pub fn remove(name: &str) -> Result<()> {
        Segment::unlink(KIND, name)
    }

    /// Names of every topic on this machine.
    pub fn list() -> Result<Vec<String>> {
        Segment::list(KIND)
    }

    fn attach(name: &str, segment: Segment, wait: WaitStrategy) -> Result<Topic> {
        let object = describe(name);
        let corrupt = |detail: String| Error::corrupt(&object, detail);
        let len = segment.payload_len();
        if len < slots_offset() {
            return Err(corrupt(format!(
                "{len} bytes is too small for a topic header"
            )));
        }
        let base = segment.payload();
        // SAFETY: aligned and in bounds (checked above); any bit pattern is a valid header.
        let header = unsafe { &*(base.as_ptr() as *const TopicHeader) };
        let magic = header.magic.load(Ordering::Acquire);
        if magic != TOPIC_MAGIC {
            return Err(corrupt(format!(
                "bad magic {magic:#x} (not an ipckit topic, or not initialised)"
            )));
        }
        // SAFETY: plain integer fields inside the header, read once and copied out.
        let (version, flags, capacity, slot_size, max_message, mode) = unsafe {
            let h = base.as_ptr() as *const TopicHeader;
            (
                std::ptr::addr_of!((*h).version).read_volatile(),
                std::ptr::addr_of!((*h).flags).read_volatile(),
                std::ptr::addr_of!((*h).capacity).read_volatile(),
                std::ptr::addr_of!((*h).slot_size).read_volatile(),
                std::ptr::addr_of!((*h).max_message).read_volatile(),
                std::ptr::addr_of!((*h).mode).read_volatile(),
            )
        };
        if version != TOPIC_VERSION {
            return Err(corrupt(format!(
                "layout version {version}, expected {TOPIC_VERSION}"
            )));
        }
        if !(1..=MAX_CAPACITY).contains(&capacity)
            || max_message > MAX_MESSAGE
            || slot_size as usize != slot_size_for(max_message)
        {
            return Err(corrupt(format!(
                "implausible geometry: capacity {capacity}, slot {slot_size}, max message {max_message}"
            )));
        }
        match topic_len(capacity, max_message) {
            Some(needed) if needed <= len => {}
            _ => {
                return Err(corrupt(format!(
                    "{capacity} slots do not fit in {len} bytes"
                )))
            }
        }
        Ok(Topic {
            shared: Arc::new(Shared {
                name: name.to_string(),
                base,
                capacity,
                slot_size: slot_size as usize,
                max_message,
                overrun: flags & FLAG_OVERRUN != 0,
                mode,
                wait,
                _segment: segment,
            }),
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A publisher, entered in the topic's publisher table.
    ///
    /// # Errors
    /// [`Error::LimitReached`] when 32 live publishers are attached.
    pub fn publisher(&self) -> Result<Publisher> {
        let me = ProcessIdentity::current();
        let table = &self.shared.header().publishers;
        let index =
            claim_entry(table.iter().map(|e| (&e.pid, &e.start_time)), me).ok_or_else(|| {
                Error::LimitReached {
                    object: describe(&self.shared.name),
                    limit: format!("{MAX_PUBLISHERS} attached publishers"),
                    source: std::io::Error::from_raw_os_error(libc::EUSERS),
                }
            })?;
        table[index].role.store(1, Ordering::Release);
        Ok(Publisher {
            shared: Arc::clone(&self.shared),
            index,
            pid: me.pid,
            uid: rustix::process::getuid().as_raw(),
            slowest: 0,
        })
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
        let shared = &self.shared;
        if history > shared.capacity as usize {
            return Err(Error::InvalidArgument(format!(
                "{} keeps {} messages; cannot replay {history}",
                describe(&shared.name),
                shared.capacity
            )));
        }
        let me = ProcessIdentity::current();
        let table = &shared.header().subscribers;
        let index = claim_entry(table.iter().map(|e| (&e.0.pid, &e.0.start_time)), me).ok_or_else(
            || Error::LimitReached {
                object: describe(&shared.name),
                limit: format!("{MAX_SUBSCRIBERS} attached subscribers"),
                source: std::io::Error::from_raw_os_error(libc::EUSERS),
            },
        )?;
        let write_pos = shared.header().write_pos.0.load(Ordering::Acquire);
        let cursor = write_pos.saturating_sub(history as u64);
        table[index].0.cursor.store(cursor, Ordering::Release);
        Ok(Subscriber {
            shared: Arc::clone(shared),
            index,
            pid: me.pid,
            cursor,
            missed: 0,
        })
    }

    /// A snapshot of the topic's state.
    pub fn info(&self) -> TopicInfo {
        let shared = &self.shared;
        let header = shared.header();
        let published = header.write_pos.0.load(Ordering::Acquire);
        let (mut subscribers, mut dead_subscribers, mut slowest) = (0, 0, None::<u64>);
        for entry in &header.subscribers {
            let pid = entry.0.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            if liveness(pid, Some(entry.0.start_time.load(Ordering::Acquire))) == Liveness::Dead {
                dead_subscribers += 1;
                continue;
            }
            subscribers += 1;
            let lag = published.saturating_sub(entry.0.cursor.load(Ordering::Acquire));
            slowest = Some(slowest.map_or(lag, |s| s.max(lag)));
        }
        let publishers = header
            .publishers
            .iter()
            .filter(|e| {
                let pid = e.pid.load(Ordering::Acquire);
                pid != 0
                    && liveness(pid, Some(e.start_time.load(Ordering::Acquire))) == Liveness::Alive
            })
            .count();
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
            mode: shared.mode,
        }
    }

    /// Forgets subscribers and publishers that died; returns how many entries were cleared.
    pub fn repair(&self) -> usize {
        let header = self.shared.header();
        let mut cleared = 0;
        let entries = header
            .subscribers
            .iter()
            .map(|e| (&e.0.pid, &e.0.start_time))
            .chain(header.publishers.iter().map(|e| (&e.pid, &e.start_time)));
        for (pid_word, start) in entries {
            let pid = pid_word.load(Ordering::Acquire);
            if pid != 0
                && liveness(pid, Some(start.load(Ordering::Acquire))) == Liveness::Dead
                && pid_word
                    .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                cleared += 1;
            }
        }
        let lock = &header.publish_lock.0;
        let holder = lock.load(Ordering::Acquire);
        if holder != 0
            && liveness(holder, None) == Liveness::Dead
            && lock
                .compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            cleared += 1;
        }
        cleared
    }
}

/// Takes a free entry (or one of a dead process) in a participant table.
fn claim_entry<'a>(
    entries: impl Iterator<Item = (&'a AtomicU32, &'a AtomicU64)> + Clone,
    me: ProcessIdentity,
) -> Option<usize> {
    for pass in 0..2 {
        for (index, (pid, start)) in entries.clone().enumerate() {
            let current = pid.load(Ordering::Acquire);
            let free = current == 0
                || (pass == 1
                    && liveness(current, Some(start.load(Ordering::Acquire))) == Liveness::Dead);
            if free
                && pid
                    .compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                start.store(me.start_time, Ordering::Release);
                return Some(index);
            }
        }
    }
    None
}

/// Publishes to a topic. Implements [`MessageSender`]: `try_send` fails with
/// [`Error::Full`] only under backpressure.
pub struct Publisher {
    shared: Arc<Shared>,
    index: usize,
    pid: u32,
    uid: u32,
    /// Cached lower bound of the slowest subscriber's cursor.
    slowest: u64,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.shared.name)
            .finish()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let entry = &self.shared.header().publishers[self.index];
        let _ = entry
            .pid
            .compare_exchange(self.pid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// The publish lock, released on drop (a cancelled loan drops it without publishing).
///
/// It points at the lock word instead of holding a clone of the `Arc<Shared>`: two atomic
/// reference-count updates per message were a fifth of a publish. A guard is private and
/// never outlives the [`Publisher`] that took it (it lives in a local of a publish, or in a
/// [`TopicLoan`] that borrows the publisher), and the publisher's `Arc<Shared>` keeps the
/// mapping alive.
struct PublishGuard {
    lock: NonNull<AtomicU32>,
}

// SAFETY: the lock word is an atomic in shared memory, usable from any thread.
unsafe impl Send for PublishGuard {}
// SAFETY: as above.
unsafe impl Sync for PublishGuard {}

impl PublishGuard {
    fn new(lock: &AtomicU32) -> PublishGuard {
        PublishGuard {
            lock: NonNull::from(lock),
        }
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        // SAFETY: the mapping outlives the guard (see the type's documentation).
        let lock = unsafe { self.lock.as_ref() };
        // Only the holder releases: nobody takes the lock from a live holder, so a plain
        // store is enough. SYNC: Release pairs with the next holder's Acquire CAS.
        lock.store(0, Ordering::Release);
    }
}

impl Publisher {
    fn lock(&self, deadline: Deadline) -> Result<PublishGuard> {
        self.shared.check_intact(false)?;
        let lock = &self.shared.header().publish_lock.0;
        // Uncontended (the usual case): one CAS and no clock read on the fast path.
        if lock
            .compare_exchange(0, self.pid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(PublishGuard::new(lock));
        }
        // Contended: the holder is copying one message (microseconds), or is stuck, or dead.
        // Spin the wait strategy's budget, then sleep on `new_message`, which the holder's
        // publish notifies; a cancelled loan does not, nor does a stuck holder, so sleeps come
        // in liveness turns, with the holder checked between them (and taken over if dead).
        let pid = self.pid;
        wait_for(
            self.shared.wait,
            &self.shared.header().new_message.0,
            deadline,
            deadline.send_expired(),
            |check| -> Attempt<()> {
                let holder = lock.load(Ordering::Acquire);
                let stale = check
                    && holder != 0
                    && holder != pid
                    && liveness(holder, None) == Liveness::Dead;
                if (holder == 0 || stale)
                    && lock
                        .compare_exchange(holder, pid, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return Ok(Ok(()));
                }
                Ok(Err(true))
            },
        )?;
        Ok(PublishGuard::new(lock))
    }

    /// Under backpressure, waits until slot `seq` no longer holds a message some live
    /// subscriber still has to read.
    fn wait_for_room(&mut self, seq: u64, deadline: Deadline) -> Result<()> {
        let shared = &*self.shared;
        let capacity = shared.capacity as u64;
        if shared.overrun || seq < self.slowest.saturating_add(capacity) {
            return Ok(());
        }
        let slowest = &mut self.slowest;
        wait_for(
            shared.wait,
            &shared.header().room.0,
            deadline,
            deadline.send_expired(),
            |check| -> Attempt<()> {
                shared.check_intact(check)?;
                match shared.slowest_cursor(check) {
                    None => {
                        *slowest = seq;
                        Ok(Ok(()))
                    }
                    Some(cursor) => {
                        *slowest = cursor;
                        Ok(if seq < cursor.saturating_add(capacity) {
                            Ok(())
                        } else {
                            Err(true)
                        })
                    }
                }
            },
        )
    }

    /// Takes the lock, waits for room, and stamps the next slot as being written.
    fn begin(&mut self, deadline: Deadline) -> Result<(u64, PublishGuard)> {
        let guard = self.lock(deadline)?;
        let seq = self.shared.header().write_pos.0.load(Ordering::Acquire);
        self.wait_for_room(seq, deadline)?;
        seqlock::begin_write(&self.shared.slot(seq).stamp, seq);
        Ok((seq, guard))
    }

    /// Completes message `seq` of `len` bytes and releases the lock.
    fn finish(&mut self, seq: u64, len: usize, guard: PublishGuard) {
        let shared = &*self.shared;
        let slot = shared.slot(seq);
        slot.len.store(len as u32, Ordering::Relaxed);
        slot.sender_pid.store(self.pid, Ordering::Relaxed);
        slot.sender_uid.store(self.uid, Ordering::Relaxed);
        seqlock::end_write(&slot.stamp, seq);
        // SYNC: Release pairs with subscribers' Acquire load of write_pos; SeqCst with the
        // fence of a sleeping subscriber (see `wake_sleepers`).
        shared.header().write_pos.0.swap(seq + 1, Ordering::SeqCst);
        drop(guard);
        wake_sleepers(&shared.header().new_message.0);
    }

    /// Borrows the next slot to write a message in place; [`TopicLoan::publish`] sends it.
    /// Other publishers wait while a loan is out.
    ///
    /// # Errors
    /// Under backpressure, [`Error::Full`]/[`Error::Timeout`] if no room by `deadline`.
    pub fn loan_deadline(&mut self, deadline: Deadline) -> Result<TopicLoan<'_>> {
        let (seq, guard) = self.begin(deadline)?;
        Ok(TopicLoan {
            publisher: self,
            seq,
            guard: Some(guard),
        })
    }

    /// Borrows the next slot, waiting for room as long as needed.
    pub fn loan(&mut self) -> Result<TopicLoan<'_>> {
        self.loan_deadline(Deadline::Never)
    }
}

impl MessageSender for Publisher {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        check_size(msg.len(), self.shared.max_message as usize)?;
        let (seq, guard) = self.begin(deadline)?;
        // SAFETY: we hold the publish lock and stamped the slot of `seq` as being written;
        // msg.len() <= max_message, the size of the slot's data area.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.shared.data_ptr(seq), msg.len())
        };
        self.finish(seq, msg.len(), guard);
        self.shared.check_intact(false)
    }

    fn max_message_size(&self) -> usize {
        self.shared.max_message as usize
    }
}

/// A slot borrowed for writing a message in place. Dropping it unpublished cancels it (the
/// sequence number is reused by the next message).
pub struct TopicLoan<'a> {
    publisher: &'a mut Publisher,
    seq: u64,
    guard: Option<PublishGuard>,
}

impl fmt::Debug for TopicLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicLoan").field("seq", &self.seq).finish()
    }
}

impl TopicLoan<'_> {
    /// Publishes the first `len` bytes of the slot.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] if `len` exceeds the slot (the loan is cancelled).
    pub fn publish(mut self, len: usize) -> Result<()> {
        check_size(len, self.publisher.shared.max_message as usize)?;
        let guard = self.guard.take().expect("a loan is published once");
        self.publisher.finish(self.seq, len, guard);
        self.publisher.shared.check_intact(false)
    }
}

impl Deref for TopicLoan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let shared = &self.publisher.shared;
        // SAFETY: we hold the publish lock and the slot is stamped as being written by us;
        // its data area is max_message bytes inside the mapping.
        unsafe {
            std::slice::from_raw_parts(shared.data_ptr(self.seq), shared.max_message as usize)
        }
    }
}

impl std::ops::DerefMut for TopicLoan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let shared = &self.publisher.shared;
        // SAFETY: as in deref; `&mut self` makes this the only slice handed out.
        unsafe {
            std::slice::from_raw_parts_mut(shared.data_ptr(self.seq), shared.max_message as usize)
        }
    }
}

/// Receives every message of a topic, in order, from its own cursor. Implements
/// [`MessageReceiver`]; [`Metadata::missed`] says how many messages were lost to overrun just
/// before the one received.
pub struct Subscriber {
    shared: Arc<Shared>,
    index: usize,
    pid: u32,
    cursor: u64,
    missed: u64,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.shared.name)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let entry = &self.shared.header().subscribers[self.index].0;
        let _ = entry
            .pid
            .compare_exchange(self.pid, 0, Ordering::SeqCst, Ordering::Relaxed);
        // A publisher may be waiting for this subscriber.
        wake_sleepers(&self.shared.header().room.0);
    }
}

/// How many times in a row one receive may lose the race for a slot before it waits for the
/// next message instead.
const MAX_LOST_RACES: u32 = 64;

/// Losses after which a receive aims at the newest complete message, not the oldest.
const CHASE_OLDEST_RACES: u32 = 2;

/// Where the next complete message is: its sequence number, length and metadata.
struct Located {
    seq: u64,
    len: usize,
    meta: Metadata,
}

impl Subscriber {
    /// Finds the message at the cursor (skipping, and counting, what was overrun), and with
    /// `copy_into` copies it out and verifies that it was not overwritten meanwhile.
    ///
    /// A subscriber that falls behind a fast publisher may lose the race for a slot several
    /// times in a row: each loss moves the cursor to the oldest message still intact, and
    /// after a few losses to the newest complete one (it stays readable the longest). This
    /// never gives up with an error while the stamps are consistent with `write_pos`; only a
    /// stamp from beyond the publisher's position is corruption.
    fn attempt(
        shared: &Shared,
        cursor: &mut u64,
        missed: &mut u64,
        mut copy_into: Option<&mut Vec<u8>>,
    ) -> Attempt<Located> {
        let capacity = shared.capacity as u64;
        for lost_races in 0..MAX_LOST_RACES {
            // The slot's stamp alone says whether message `cursor` is there: stamps are unique
            // per message and move to "complete" before `write_pos` does. Only an overrun
            // needs `write_pos` (one cache line fewer on the fast path).
            let seq = *cursor;
            let slot = shared.slot(seq);
            let want = seqlock::complete(seq);
            let stamp = seqlock::read_begin(&slot.stamp);
            if stamp < want {
                // Not published yet (or being written right now).
                return Ok(Err(false));
            }
            if stamp == want {
                let len = slot.len.load(Ordering::Relaxed) as usize;
                if len > shared.max_message as usize {
                    return Err(shared.corrupt(format!(
                        "message {seq} claims {len} bytes, more than the {}-byte slots",
                        shared.max_message
                    )));
                }
                let meta = Metadata {
                    sender_pid: Some(slot.sender_pid.load(Ordering::Relaxed)),
                    sender_uid: Some(slot.sender_uid.load(Ordering::Relaxed)),
                    sequence: Some(seq),
                    ..Metadata::default()
                };
                if let Some(buf) = copy_into.as_deref_mut() {
                    buf.clear();
                    buf.reserve(len);
                    // SAFETY: len <= max_message: the source is inside the slot's data area;
                    // buf has room for len bytes. A concurrent overwrite (overrun) can only
                    // change the bytes, which the second stamp check below then rejects.
                    unsafe {
                        std::ptr::copy_nonoverlapping(shared.data_ptr(seq), buf.as_mut_ptr(), len);
                        buf.set_len(len);
                    }
                }
                if seqlock::read_validate(&slot.stamp, seq) {
                    return Ok(Ok(Located { seq, len, meta }));
                }
            }
            // Message `seq` was overwritten, before or while we looked: move on to a message
            // that is still there.
            // The stamp first, then `write_pos`: a stamp read earlier can never be beyond
            // the position read later, so only corruption trips the check below.
            let stamp_now = seqlock::read_begin(&slot.stamp);
            let published = shared.header().write_pos.0.load(Ordering::Acquire);
            let newest_stamp = seqlock::complete(published);
            if stamp_now > newest_stamp || published < seq {
                return Err(shared.corrupt(format!(
                    "slot of message {seq} is stamped {stamp_now}, beyond the {published} messages published"
                )));
            }
            // The oldest message the ring still holds (unless message `published` is being
            // written over it right now: then the next round moves on again).
            let oldest_intact = published.saturating_sub(capacity);
            let next = if lost_races < CHASE_OLDEST_RACES {
                oldest_intact
            } else {
                published.saturating_sub(1).max(oldest_intact)
            };
            let next = next.max(seq + 1);
            *missed += next - seq;
            *cursor = next;
        }
        // A publisher that overwrites every slot faster than we copy one: nothing can be read
        // now. Report "not yet" so the caller waits for the next message and tries again.
        Ok(Err(false))
    }

    fn locate(&mut self, deadline: Deadline, copy_into: Option<&mut Vec<u8>>) -> Result<Located> {
        let shared = &*self.shared;
        let cursor = &mut self.cursor;
        let missed = &mut self.missed;
        let mut copy_into = copy_into;
        let located = wait_for(
            shared.wait,
            &shared.header().new_message.0,
            deadline,
            deadline.recv_expired(),
            |check| {
                shared.check_intact(check)?;
                Subscriber::attempt(shared, cursor, missed, copy_into.as_deref_mut())
            },
        );
        // Bytes read after a lost page are zeroes, not a message (the zeroed tail of a file
        // cut mid-page raises no SIGBUS: ask the file).
        shared.check_intact(matches!(located, Err(Error::Corrupt { .. })))?;
        located
    }

    /// Moves past message `seq`, telling publishers held back by us.
    fn advance(&mut self, seq: u64) {
        self.cursor = seq + 1;
        let entry = &self.shared.header().subscribers[self.index].0;
        if self.shared.overrun {
            entry.cursor.store(self.cursor, Ordering::Release);
        } else {
            // SYNC: SeqCst pairs with the fence of a sleeping publisher (`wake_sleepers`).
            entry.cursor.swap(self.cursor, Ordering::SeqCst);
            wake_sleepers(&self.shared.header().room.0);
        }
    }

    fn take_missed(&mut self, meta: &mut Metadata) {
        meta.missed = Some(std::mem::take(&mut self.missed));
    }

    /// Receives the next message in place, without copying. Under backpressure the slot is
    /// safe until the sample drops; under overrun a publisher may overwrite it, so check
    /// [`TopicSample::is_intact`] after reading.
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
    pub fn recv_in_place_deadline(&mut self, deadline: Deadline) -> Result<TopicSample<'_>> {
        let mut located = self.locate(deadline, None)?;
        self.take_missed(&mut located.meta);
        Ok(TopicSample {
            subscriber: self,
            located,
        })
    }

    /// Receives the next message in place, waiting as long as needed.
    pub fn recv_in_place(&mut self) -> Result<TopicSample<'_>> {
        self.recv_in_place_deadline(Deadline::Never)
    }

    /// How many messages are published and not yet received by this subscriber.
    pub fn lag(&self) -> u64 {
        self.shared
            .header()
            .write_pos
            .0
            .load(Ordering::Acquire)
            .saturating_sub(self.cursor)
    }
}

impl MessageReceiver for Subscriber {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        let mut located = self.locate(deadline, Some(buf))?;
        self.advance(located.seq);
        self.take_missed(&mut located.meta);
        Ok(located.meta)
    }
}

/// A message read in place from a topic; the subscriber moves past it when this drops.
pub struct TopicSample<'a> {
    subscriber: &'a mut Subscriber,
    located: Located,
}

impl fmt::Debug for TopicSample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicSample")
            .field("seq", &self.located.seq)
            .field("len", &self.located.len)
            .finish()
    }
}

impl TopicSample<'_> {
    /// What the topic recorded about the message.
    pub fn meta(&self) -> Metadata {
        self.located.meta
    }

    /// False if a publisher has overwritten the slot since the sample was taken (overrun
    /// topics only): whatever was read from it must then be discarded.
    pub fn is_intact(&self) -> bool {
        let seq = self.located.seq;
        seqlock::read_validate(&self.subscriber.shared.slot(seq).stamp, seq)
    }
}

impl Deref for TopicSample<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let shared = &self.subscriber.shared;
        // SAFETY: len <= max_message was validated when the sample was located; the bytes are
        // inside the slot's data area. Under backpressure no publisher writes them until we
        // drop; under overrun they may change, which `is_intact` reports.
        unsafe { std::slice::from_raw_parts(shared.data_ptr(self.located.seq), self.located.len) }
    }
}

impl Drop for TopicSample<'_> {
    fn drop(&mut self) {
        let seq = self.located.seq;
        self.subscriber.advance(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(tag: &str) -> String {
        format!("unit-topic-{tag}-{}", std::process::id())
    }

    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Topic::remove(&self.0);
        }
    }

    #[test]
    fn every_subscriber_sees_every_message() {
        let n = name("all");
        let _c = Cleanup(n.clone());
        let topic = Topic::builder(&n).capacity(8).create().unwrap();
        let mut subs: Vec<_> = (0..3).map(|_| topic.subscriber().unwrap()).collect();
        let mut publisher = topic.publisher().unwrap();
        for i in 0..5u8 {
            publisher.send(&[i]).unwrap();
        }
        for sub in &mut subs {
            for i in 0..5u8 {
                let msg = sub.try_recv().unwrap();
                assert_eq!(msg.data, [i]);
                assert_eq!(msg.meta.missed, Some(0));
                assert_eq!(msg.meta.sequence, Some(i as u64));
            }
            assert!(matches!(sub.try_recv(), Err(Error::Empty)));
        }
    }

    #[test]
    fn an_overrun_subscriber_learns_exactly_how_many_it_missed() {
        let n = name("overrun");
        let _c = Cleanup(n.clone());
        let topic = Topic::builder(&n).capacity(4).create().unwrap();
        let mut slow = topic.subscriber().unwrap();
        let mut publisher = topic.publisher().unwrap();
        for i in 0..10u8 {
            publisher.try_send(&[i]).unwrap();
        }
        let first = slow.try_recv().unwrap();
        assert_eq!(first.data, [6]);
        assert_eq!(first.meta.missed, Some(6));
        for i in 7..10u8 {
            let msg = slow.try_recv().unwrap();
            assert_eq!((msg.data[0], msg.meta.missed), (i, Some(0)));
        }
    }

    #[test]
    fn backpressure_holds_the_publisher_and_loses_nothing() {
        let n = name("bp");
        let _c = Cleanup(n.clone());
        let topic = Topic::builder(&n)
            .capacity(2)
            .overflow(Overflow::Backpressure)
            .create()
            .unwrap();
        let mut sub = topic.subscriber().unwrap();
        let mut publisher = topic.publisher().unwrap();
        publisher.try_send(b"a").unwrap();
        publisher.try_send(b"b").unwrap();
        assert!(matches!(publisher.try_send(b"c"), Err(Error::Full)));
        assert!(matches!(
            publisher.send_timeout(b"c", Duration::from_millis(10)),
            Err(Error::Timeout)
        ));
        assert_eq!(sub.try_recv().unwrap().data, b"a");
        publisher.try_send(b"c").unwrap();
        drop(sub);
        // With its only subscriber gone, nothing holds the publisher back.
        for _ in 0..10 {
            publisher.try_send(b"x").unwrap();
        }
    }

    #[test]
    fn history_replays_the_last_messages() {
        let n = name("hist");
        let _c = Cleanup(n.clone());
        let topic = Topic::builder(&n).capacity(4).create().unwrap();
        let mut publisher = topic.publisher().unwrap();
        for i in 0..6u8 {
            publisher.send(&[i]).unwrap();
        }
        let mut late = topic.subscriber_with_history(3).unwrap();
        let got: Vec<u8> = (0..3).map(|_| late.try_recv().unwrap().data[0]).collect();
        assert_eq!(got, [3, 4, 5]);
        assert!(matches!(late.try_recv(), Err(Error::Empty)));
        assert!(matches!(
            topic.subscriber_with_history(5),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn loans_publish_in_place_and_cancel_on_drop() {
        let n = name("loan");
        let _c = Cleanup(n.clone());
        let topic = Topic::builder(&n).capacity(4).create().unwrap();
        let mut sub = topic.subscriber().unwrap();
        let mut publisher = topic.publisher().unwrap();
        {
            let mut loan = publisher.loan().unwrap();
            loan[..3].copy_from_slice(b"no!");
        }
        let mut loan = publisher.loan().unwrap();
        loan[..3].copy_from_slice(b"yes");
        loan.publish(3).unwrap();
        let sample = sub.recv_in_place().unwrap();
        assert_eq!(&*sample, b"yes");
        assert!(sample.is_intact());
        assert_eq!(sample.meta().sequence, Some(0));
        drop(sample);
        assert!(matches!(sub.try_recv(), Err(Error::Empty)));
    }
}
