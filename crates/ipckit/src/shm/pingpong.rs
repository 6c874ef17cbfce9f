//! The baselines every other mechanism is read against: two processes handing a buffer back
//! and forth through shared memory with nothing else in the way.
//!
//! Each direction is a 32-bit sequence word on its own cache line plus a data buffer. The
//! sender writes the bytes, then stores the new sequence number (Release); the receiver waits
//! until the word shows that number (Acquire), then reads. [`Handoff::Spin`] waits by spinning
//! on the word: the raw hardware limit of a cross-core hand-off. [`Handoff::Futex`] sleeps on
//! on the word through [`sync::Event`](crate::sync::Event) — the process-shared futex event the
//! rest of ipckit uses — and the sender notifies it, making the wake system call only when the
//! receiver really sleeps: the cost of sleeping and being woken.
//!
//! `ipckit bench` reports these as the `shm-spin` and `shm-futex` rows.
//!
//! [`RawRing`] is the streaming reference (`shm-ring`): in each direction a plain
//! single-producer/single-consumer ring of fixed-size slots with a tail and a head cursor on
//! lines of their own, each side caching the other's cursor and re-reading it only when it
//! runs out (the design of rtrb and of iceoryx2's SPSC queue), spinning when it must wait.
//! No crash safety, no metadata, no wake-ups: the most a ring in shared memory can do.

use crate::sync::primitive::{AtomicU32, AtomicU64, Ordering};
use std::ptr::NonNull;

use super::segment::Segment;
use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::sync::Event;

/// Segment kind: `/dev/shm/ipckit.pingpong.NAME`.
pub const KIND: &str = "pingpong";

/// How a waiting side waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Spin on the sequence word.
    Spin,
    /// Sleep on the direction's [`Event`] (futex); the writer notifies it.
    Futex,
}

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the creator to the opener.
    Ping,
    /// From the opener to the creator.
    Pong,
}

const LINE: usize = 64;
const HEADER: usize = 2 * LINE;
/// Where a direction's [`Event`] sits in its header line, after the sequence word.
const EVENT_OFFSET: usize = 8;

/// A two-way hand-off area in a named segment.
#[derive(Debug)]
pub struct PingPong {
    _segment: Segment,
    base: NonNull<u8>,
    max: usize,
    handoff: Handoff,
}

// SAFETY: the area is shared memory accessed through atomics and bounds-checked copies.
unsafe impl Send for PingPong {}

impl PingPong {
    fn layout_len(max: usize) -> usize {
        HEADER + 2 * max.next_multiple_of(LINE)
    }

    /// Creates the area for messages of up to `max` bytes.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name or size, or an OS
    /// error.
    pub fn create(name: &str, max: usize, handoff: Handoff) -> Result<PingPong> {
        let segment = Segment::create(KIND, name, PingPong::layout_len(max), 0o600)?;
        Ok(PingPong::from_segment(segment, max, handoff))
    }

    /// Opens an area created by another process with the same `max`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the segment is too small for `max`.
    pub fn open(name: &str, max: usize, handoff: Handoff) -> Result<PingPong> {
        let segment = Segment::open(KIND, name)?;
        if segment.payload_len() < PingPong::layout_len(max) {
            return Err(Error::corrupt(
                format!("ping-pong area {name:?}"),
                format!(
                    "{} bytes cannot hold two {max}-byte buffers",
                    segment.payload_len()
                ),
            ));
        }
        Ok(PingPong::from_segment(segment, max, handoff))
    }

    /// Removes the area's name.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such area.
    pub fn remove(name: &str) -> Result<()> {
        Segment::unlink(KIND, name)
    }

    fn from_segment(segment: Segment, max: usize, handoff: Handoff) -> PingPong {
        let base = segment.payload();
        PingPong {
            _segment: segment,
            base,
            max,
            handoff,
        }
    }

    fn word(&self, dir: Direction) -> &AtomicU32 {
        let offset = match dir {
            Direction::Ping => 0,
            Direction::Pong => LINE,
        };
        // SAFETY: offset + 4 <= HEADER <= mapping length (checked at open/create); the
        // mapping is page-aligned so the word is aligned; AtomicU32 is valid for any bits.
        unsafe { &*(self.base.as_ptr().add(offset) as *const AtomicU32) }
    }

    fn event(&self, dir: Direction) -> &Event {
        let offset = match dir {
            Direction::Ping => EVENT_OFFSET,
            Direction::Pong => LINE + EVENT_OFFSET,
        };
        // SAFETY: offset + size_of::<Event>() <= HEADER <= mapping length; 8-byte offsets
        // into a page-aligned mapping satisfy Event's 4-byte alignment; Event is two
        // AtomicU32, valid for any bits.
        unsafe { &*(self.base.as_ptr().add(offset) as *const Event) }
    }

    fn buffer(&self, dir: Direction) -> *mut u8 {
        let offset = match dir {
            Direction::Ping => HEADER,
            Direction::Pong => HEADER + self.max.next_multiple_of(LINE),
        };
        // SAFETY: both buffers lie inside the mapping (layout_len was checked).
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// Writes `data` into `dir`'s buffer and announces it as message `seq`.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] if `data` exceeds the buffer.
    pub fn send(&self, dir: Direction, seq: u32, data: &[u8]) -> Result<()> {
        crate::link::check_size(data.len(), self.max)?;
        // SAFETY: data.len() <= max, the buffer's size; the peer reads it only after the
        // sequence word below says so.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.buffer(dir), data.len()) };
        // SYNC: pairs with the Acquire load in `recv`.
        self.word(dir).store(seq, Ordering::Release);
        if self.handoff == Handoff::Futex {
            self.event(dir).notify_one();
        }
        Ok(())
    }

    /// Waits until `dir`'s sequence word moves on from `previous`, then copies `len` bytes of
    /// the buffer into `out`; returns the new sequence number.
    ///
    /// # Errors
    /// [`Error::Timeout`] at `deadline`; [`Error::MessageTooLarge`] if `len` exceeds the buffer.
    pub fn recv(
        &self,
        dir: Direction,
        previous: u32,
        len: usize,
        out: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<u32> {
        crate::link::check_size(len, self.max)?;
        let word = self.word(dir);
        let mut spins = 0u32;
        let seq = loop {
            // SYNC: pairs with the Release store in `send`.
            let current = word.load(Ordering::Acquire);
            if current != previous {
                break current;
            }
            match self.handoff {
                Handoff::Spin => {
                    std::hint::spin_loop();
                    spins = spins.wrapping_add(1);
                    if spins % 4096 == 0 && deadline.expired() {
                        return Err(deadline.recv_expired());
                    }
                }
                Handoff::Futex => {
                    let event = self.event(dir);
                    let ticket = event.listen();
                    if word.load(Ordering::Acquire) == previous
                        && !event.wait(ticket, deadline)
                        && word.load(Ordering::Acquire) == previous
                    {
                        return Err(deadline.recv_expired());
                    }
                }
            }
        };
        out.clear();
        out.reserve(len);
        // SAFETY: len <= max (checked); the peer wrote these bytes before its Release store,
        // which our Acquire load saw; `out` has room for len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buffer(dir), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        Ok(seq)
    }
}

/// Slots in each direction of a [`RawRing`].
pub const RAW_RING_SLOTS: usize = 64;

/// The streaming reference: in each direction a single-producer/single-consumer ring of
/// [`RAW_RING_SLOTS`] slots (an 8-byte length, then the bytes) with cached cursors.
///
/// Layout of each direction: the tail (next position to write, `u64`) on one line, the head
/// (next position to read) on the next, then the slots, each a multiple of 64 bytes.
#[derive(Debug)]
pub struct RawRing {
    _segment: Segment,
    base: NonNull<u8>,
    max: usize,
    stride: usize,
}

// SAFETY: the area is shared memory accessed through atomics and bounds-checked copies.
unsafe impl Send for RawRing {}

impl RawRing {
    fn stride(max: usize) -> usize {
        (8 + max).next_multiple_of(LINE)
    }

    fn direction_len(max: usize) -> usize {
        2 * LINE + RAW_RING_SLOTS * RawRing::stride(max)
    }

    fn layout_len(max: usize) -> usize {
        2 * RawRing::direction_len(max)
    }

    /// Creates the rings for messages of up to `max` bytes.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name or size, or an OS
    /// error.
    pub fn create(name: &str, max: usize) -> Result<RawRing> {
        let len = RawRing::layout_len(max);
        let segment = Segment::create(KIND, name, len, 0o600)?;
        Ok(RawRing::from_segment(segment, max))
    }

    /// Opens rings created by another process with the same `max`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the segment is too small for `max`.
    pub fn open(name: &str, max: usize) -> Result<RawRing> {
        let segment = Segment::open(KIND, name)?;
        if segment.payload_len() < RawRing::layout_len(max) {
            return Err(Error::corrupt(
                format!("raw ring {name:?}"),
                format!(
                    "{} bytes cannot hold two rings of {max}-byte messages",
                    segment.payload_len()
                ),
            ));
        }
        Ok(RawRing::from_segment(segment, max))
    }

    fn from_segment(segment: Segment, max: usize) -> RawRing {
        let base = segment.payload();
        RawRing {
            _segment: segment,
            base,
            max,
            stride: RawRing::stride(max),
        }
    }

    fn direction(&self, dir: Direction) -> *mut u8 {
        let offset = match dir {
            Direction::Ping => 0,
            Direction::Pong => RawRing::direction_len(self.max),
        };
        // SAFETY: both directions lie inside the mapping (layout_len was checked).
        unsafe { self.base.as_ptr().add(offset) }
    }

    fn cursor(&self, dir: Direction, which: usize) -> &AtomicU64 {
        // SAFETY: line `which` (0 tail, 1 head) of the direction is inside the mapping and
        // 64-byte aligned; AtomicU64 is valid for any bits.
        unsafe { &*(self.direction(dir).add(which * LINE) as *const AtomicU64) }
    }

    fn slot(&self, dir: Direction, pos: u64) -> *mut u8 {
        let index = pos as usize & (RAW_RING_SLOTS - 1);
        // SAFETY: index < RAW_RING_SLOTS, so the slot lies inside the direction.
        unsafe { self.direction(dir).add(2 * LINE + index * self.stride) }
    }

    /// The producing end of direction `dir` (one per direction, in one process).
    pub fn producer(&self, dir: Direction) -> RawProducer<'_> {
        let tail = self.cursor(dir, 0).load(Ordering::Acquire);
        RawProducer {
            ring: self,
            dir,
            tail,
            head: self.cursor(dir, 1).load(Ordering::Acquire),
        }
    }

    /// The consuming end of direction `dir` (one per direction, in one process).
    pub fn consumer(&self, dir: Direction) -> RawConsumer<'_> {
        let head = self.cursor(dir, 1).load(Ordering::Acquire);
        RawConsumer {
            ring: self,
            dir,
            head,
            tail: self.cursor(dir, 0).load(Ordering::Acquire),
        }
    }
}

/// Spins until `ready` holds, checking `deadline` now and then.
fn spin_until(deadline: Deadline, expired: Error, mut ready: impl FnMut() -> bool) -> Result<()> {
    let mut spins = 0u32;
    while !ready() {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 && deadline.expired() {
            return Err(expired);
        }
    }
    Ok(())
}

/// The producing end of one direction of a [`RawRing`].
#[derive(Debug)]
pub struct RawProducer<'a> {
    ring: &'a RawRing,
    dir: Direction,
    /// Next position to write (ours; published through the tail cursor).
    tail: u64,
    /// The consumer's head as last read: positions below `head + slots` are free.
    head: u64,
}

impl RawProducer<'_> {
    /// Writes `data` into the next slot, spinning while the ring is full.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`]; [`Error::Timeout`] at `deadline`.
    pub fn send(&mut self, data: &[u8], deadline: Deadline) -> Result<()> {
        crate::link::check_size(data.len(), self.ring.max)?;
        if self.tail - self.head >= RAW_RING_SLOTS as u64 {
            let cursor = self.ring.cursor(self.dir, 1);
            let (tail, head) = (self.tail, &mut self.head);
            spin_until(deadline, deadline.send_expired(), || {
                // SYNC: pairs with the Release store of the head in `RawConsumer::recv`.
                *head = cursor.load(Ordering::Acquire);
                tail.wrapping_sub(*head) < RAW_RING_SLOTS as u64
            })?;
        }
        let slot = self.ring.slot(self.dir, self.tail);
        // SAFETY: the slot holds 8 + max bytes, data.len() <= max; the consumer reads it only
        // once the tail store below says so.
        unsafe {
            (slot as *mut u64).write(data.len() as u64);
            std::ptr::copy_nonoverlapping(data.as_ptr(), slot.add(8), data.len());
        }
        self.tail += 1;
        // SYNC: pairs with the Acquire load of the tail in `RawConsumer::recv`.
        self.ring
            .cursor(self.dir, 0)
            .store(self.tail, Ordering::Release);
        Ok(())
    }
}

/// The consuming end of one direction of a [`RawRing`].
#[derive(Debug)]
pub struct RawConsumer<'a> {
    ring: &'a RawRing,
    dir: Direction,
    /// Next position to read (ours; released through the head cursor).
    head: u64,
    /// The producer's tail as last read: positions below it are ready.
    tail: u64,
}

impl RawConsumer<'_> {
    /// Copies the next message into `out`, spinning while the ring is empty.
    ///
    /// # Errors
    /// [`Error::Timeout`] at `deadline`; [`Error::Corrupt`] for a length beyond the slot.
    pub fn recv(&mut self, out: &mut Vec<u8>, deadline: Deadline) -> Result<()> {
        if self.head == self.tail {
            let cursor = self.ring.cursor(self.dir, 0);
            let (head, tail) = (self.head, &mut self.tail);
            spin_until(deadline, deadline.recv_expired(), || {
                // SYNC: pairs with the Release store of the tail in `RawProducer::send`.
                *tail = cursor.load(Ordering::Acquire);
                *tail != head
            })?;
        }
        let slot = self.ring.slot(self.dir, self.head);
        // SAFETY: the producer wrote the slot before its Release store of the tail, which
        // our Acquire load saw.
        let len = unsafe { (slot as *const u64).read() } as usize;
        if len > self.ring.max {
            return Err(Error::corrupt(
                "raw ring",
                format!("a {len}-byte message in {}-byte slots", self.ring.max),
            ));
        }
        out.clear();
        out.reserve(len);
        // SAFETY: len <= max (checked), inside the slot; `out` has room for len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(slot.add(8), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        self.head += 1;
        // SYNC: pairs with the Acquire load of the head in `RawProducer::send`.
        self.ring
            .cursor(self.dir, 1)
            .store(self.head, Ordering::Release);
        Ok(())
    }
}
