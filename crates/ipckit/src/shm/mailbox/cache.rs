//! Mach's "temporarily cache a message" ([`WhenFull::Cache`](crate::WhenFull::Cache)): the
//! message a sender could not queue because the mailbox was full is kept in the mailbox's own
//! shared memory, and whoever next makes room moves it into the ring, whether or not its
//! sender still runs. The sender can ask whether it has been delivered.
//!
//! # Layout
//!
//! The cache area follows the ring in the mailbox's segment, at the first 64-byte boundary
//! after it (`ring_len`), so a ring attached by an older ipckit is unchanged and simply ignores
//! it. A mailbox created without the area (by an older ipckit, or a single-sender,
//! rendezvous, unbounded or anonymous one) has no cache: `Cache` is then
//! [`Error::Unsupported`] (unbounded mailboxes never need it: they are never full).
//!
//! ```text
//! CacheHeader (64 bytes)  magic "ipckitMC" (stored last), version, slots, max_message,
//!                         stride, the `pending` flag
//! slots x stride bytes    one entry each: a 64-byte CacheEntry, then max_message bytes
//! ```
//!
//! # The entry word (64 bits)
//!
//! ```text
//!  63        40 39      32 31              0
//! +------------+----------+-----------------+
//! | generation |  state   |  pid (or 0)     |
//! +------------+----------+-----------------+
//! ```
//!
//! | state      | meaning                                                              |
//! |------------|----------------------------------------------------------------------|
//! | `FREE`     | unused                                                               |
//! | `FILLING`  | `pid`, the sender, is copying its message in                         |
//! | `PENDING`  | a cached message waits for room                                      |
//! | `MOVING`   | `pid` is copying it into the ring (at `ring_pos`, once claimed)      |
//! | `QUEUED`   | it is in the ring: delivered to the mailbox, not yet received        |
//! | `RECEIVED` | a receiver took it; the entry may be reused                          |
//!
//! A sender takes a `FREE` or `RECEIVED` entry by a compare-and-swap to `FILLING` with the next
//! generation, copies its message and stores `PENDING`. A mover (the sender itself, or a
//! receiver that has just freed a slot) CASes `PENDING → MOVING`, claims a ring position like
//! any sender, copies the message there with the sequence word set to the entry's **tag**
//! (bit 63, the generation and the index: no ordinary sequence number reaches bit 63) and
//! publishes it, then stores `QUEUED`. The receiver that claims a tagged message CASes the
//! entry (same generation, `MOVING` or `QUEUED`) to `RECEIVED` and reports the original
//! sequence number. The generation makes a stale tag harmless.
//!
//! # Crashes
//!
//! - A sender killed while `FILLING`: its `send` never returned; the entry is reused.
//! - A mover killed while `MOVING`: if the copy is published and unclaimed (`ring_pos`
//!   says where), the entry becomes `QUEUED`; if the mover still holds the ring slot, the slot
//!   is reclaimed and the entry goes back to `PENDING`; if a receiver holds it, the receiver
//!   will acknowledge it; otherwise it was never published (or its reader died too) and it goes
//!   back to `PENDING`. So a cached message is delivered once, or again only if the receiver
//!   that had it died before acknowledging.
//!
//! # Waking
//!
//! Cached messages are found through the header's `pending` flag: set (SeqCst) after an entry
//! becomes `PENDING`; swapped to 0 (SeqCst) by the mover that then scans every entry, and set
//! again if one is left. Receivers load it after releasing a slot (the ring's release is a
//! SeqCst swap) and senders try to move right after caching: Dekker's pairing, so a cached
//! message is never left behind while the ring has room and someone frees it.
//!
//! # Trust
//!
//! The header is validated against the mapping when the mailbox is opened; entry indices
//! and lengths read from shared memory are bounds-checked before use.

use std::ptr::NonNull;

use super::participants::is_dead;
use super::{describe, Shared};
use crate::error::{Error, Result};
use crate::process::{liveness, Liveness};
use crate::shm::ring::{Claim, Ring, MAX_MESSAGE};
use crate::sync::primitive::{fence, AtomicU32, AtomicU64, Ordering};

/// Identifies a mailbox's cache area ("ipckitMC").
const CACHE_MAGIC: u64 = u64::from_le_bytes(*b"ipckitMC");
/// Bumped whenever the layout below changes.
const CACHE_VERSION: u32 = 1;
/// Entries a named mailbox gets unless told otherwise.
pub const DEFAULT_CACHE_SLOTS: usize = 16;
/// The most entries we create or accept.
pub(super) const MAX_CACHE_SLOTS: u32 = 1024;
/// Bit 63 of a ring slot's sequence word: the message came from the cache.
pub(super) const CACHED_TAG: u64 = 1 << 63;
const GENERATION_MASK: u32 = (1 << 24) - 1;
/// `ring_pos` while no ring position is claimed.
const NO_POSITION: u64 = u64::MAX;

const FREE: u8 = 0;
const FILLING: u8 = 1;
const PENDING: u8 = 2;
const MOVING: u8 = 3;
const QUEUED: u8 = 4;
const RECEIVED: u8 = 5;

/// A decoded entry word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    generation: u32,
    state: u8,
    pid: u32,
}

impl Word {
    fn decode(raw: u64) -> Word {
        Word {
            generation: (raw >> 40) as u32 & GENERATION_MASK,
            state: (raw >> 32) as u8,
            pid: raw as u32,
        }
    }

    fn encode(generation: u32, state: u8, pid: u32) -> u64 {
        ((generation & GENERATION_MASK) as u64) << 40 | (state as u64) << 32 | pid as u64
    }
}

/// The cache area's header.
#[repr(C)]
struct CacheHeader {
    /// [`CACHE_MAGIC`], stored last by the creator.
    magic: AtomicU64,
    version: u32,
    /// Entries that follow.
    slots: u32,
    /// Equal to the ring's: an entry holds any message the mailbox carries.
    max_message: u32,
    /// Bytes from one entry to the next.
    stride: u32,
    /// Non-zero when an entry may be `PENDING` or `MOVING` (see the module docs).
    pending: AtomicU32,
    _reserved: [u32; 9],
}

/// One entry's header; the message bytes follow it.
#[repr(C)]
struct CacheEntry {
    word: AtomicU64,
    /// Start time of the sender (with `owner_pid`, who sent it).
    owner_start: AtomicU64,
    /// The sender's own sequence number for the message.
    sequence: AtomicU64,
    /// Where the mover claimed the ring position, or [`NO_POSITION`].
    ring_pos: AtomicU64,
    owner_pid: AtomicU32,
    owner_uid: AtomicU32,
    len: AtomicU32,
    _reserved: [u32; 5],
}

const HEADER_LEN: usize = 64;
const ENTRY_LEN: usize = 64;
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::size_of::<CacheHeader>() == HEADER_LEN);
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<CacheEntry>() == ENTRY_LEN);

fn stride(max_message: u32) -> usize {
    (ENTRY_LEN + max_message as usize).next_multiple_of(64)
}

/// Where the cache area starts in a payload whose ring takes `ring_len` bytes.
fn area_offset(ring_len: usize) -> usize {
    ring_len.next_multiple_of(64)
}

/// The payload a mailbox with a ring of `ring_len` bytes and `slots` cache entries needs, or
/// `None` if absurdly large.
pub(super) fn payload_len(ring_len: usize, slots: u32, max_message: u32) -> Option<usize> {
    if slots == 0 {
        return Some(ring_len);
    }
    stride(max_message)
        .checked_mul(slots as usize)?
        .checked_add(HEADER_LEN)?
        .checked_add(area_offset(ring_len))
}

/// Which of a sender's cached messages, to ask what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket {
    index: u32,
    generation: u32,
}

/// What became of a sender's cached message ([`WhenFull::Cache`](crate::WhenFull::Cache)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheState {
    /// This sender has cached nothing (every message it sent went straight into the mailbox).
    Empty,
    /// Its cached message is still waiting for room in the mailbox.
    Pending,
    /// Its cached message has been moved into the mailbox, after the messages that were
    /// queued before it; receivers take it in order.
    Delivered,
}

/// A mailbox's cache area, mapped with the mailbox's segment.
pub(super) struct Cache {
    base: NonNull<u8>,
    slots: u32,
    stride: usize,
    max_message: u32,
}

// SAFETY: shared memory manipulated only through atomics and raw copies guarded by the entry
// protocol above, designed for many threads and processes at once.
unsafe impl Send for Cache {}
// SAFETY: as above.
unsafe impl Sync for Cache {}

impl Cache {
    /// Writes an empty cache area of `slots` entries after a ring of `ring_len` bytes.
    ///
    /// # Safety
    /// - `payload` is 64-byte aligned, valid for writes of `len` bytes, zero-filled, and used by
    ///   nobody else until the mailbox is published;
    /// - `len >= payload_len(ring_len, slots, max_message)`.
    pub(super) unsafe fn init(
        payload: NonNull<u8>,
        len: usize,
        ring_len: usize,
        slots: u32,
        max_message: u32,
    ) {
        if slots == 0 {
            return;
        }
        debug_assert!(payload_len(ring_len, slots, max_message).is_some_and(|n| n <= len));
        // SAFETY: area_offset(ring_len) + HEADER_LEN <= len (the caller's second point), and
        // the offset is a multiple of 64 from a 64-aligned base.
        let header =
            unsafe { &mut *(payload.as_ptr().add(area_offset(ring_len)) as *mut CacheHeader) };
        header.version = CACHE_VERSION;
        header.slots = slots;
        header.max_message = max_message;
        header.stride = stride(max_message) as u32;
        // Entries are all zero: FREE, generation 0, as the memory already is.
        // SYNC: pairs with the Acquire load of the magic in `attach`.
        header.magic.store(CACHE_MAGIC, Ordering::Release);
    }

    /// The cache area of a mailbox payload, if it has one, validated against the mapping and
    /// the ring's geometry.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a cache header that is wrong or does not fit.
    ///
    /// # Safety
    /// `payload` is 64-byte aligned and valid for reads and writes of `len` bytes for as long as
    /// the returned `Cache` is used. The bytes may be anything: they are validated.
    pub(super) unsafe fn attach(
        payload: NonNull<u8>,
        len: usize,
        ring: &Ring,
        object: &str,
    ) -> Result<Option<Cache>> {
        let geometry = ring.geometry();
        let ring_len = crate::shm::ring::ring_len(geometry.capacity, geometry.max_message)
            .ok_or_else(|| Error::corrupt(object, "the ring's geometry is too large"))?;
        let offset = area_offset(ring_len);
        if len < offset + HEADER_LEN {
            return Ok(None);
        }
        // SAFETY: offset + HEADER_LEN <= len, 64-byte aligned.
        let header = unsafe { &*(payload.as_ptr().add(offset) as *const CacheHeader) };
        // SYNC: pairs with the Release store of the magic in `init`.
        match header.magic.load(Ordering::Acquire) {
            0 => return Ok(None),
            CACHE_MAGIC => {}
            _ => {
                return Err(Error::corrupt(
                    object,
                    "the message cache has a wrong magic",
                ))
            }
        }
        // SAFETY: plain integer fields inside the header, in bounds; read once, copied out.
        let (version, slots, max_message, stride_read) = unsafe {
            let h = header as *const CacheHeader;
            (
                std::ptr::addr_of!((*h).version).read_volatile(),
                std::ptr::addr_of!((*h).slots).read_volatile(),
                std::ptr::addr_of!((*h).max_message).read_volatile(),
                std::ptr::addr_of!((*h).stride).read_volatile(),
            )
        };
        let fits = payload_len(ring_len, slots, max_message).is_some_and(|n| n <= len);
        if version != CACHE_VERSION
            || !(1..=MAX_CACHE_SLOTS).contains(&slots)
            || max_message != geometry.max_message
            || max_message > MAX_MESSAGE
            || stride_read as usize != stride(max_message)
            || !fits
        {
            return Err(Error::corrupt(
                object,
                format!(
                    "implausible message cache: version {version}, {slots} entries of \
                     {max_message} bytes (stride {stride_read}) in {len} bytes"
                ),
            ));
        }
        Ok(Some(Cache {
            // SAFETY: in bounds (checked above), so not null.
            base: unsafe { NonNull::new_unchecked(payload.as_ptr().add(offset)) },
            slots,
            stride: stride(max_message),
            max_message,
        }))
    }

    fn header(&self) -> &CacheHeader {
        // SAFETY: validated in `attach`; the mapping outlives `self`.
        unsafe { self.base.cast::<CacheHeader>().as_ref() }
    }

    /// Entry `index`, which the caller has checked is below `self.slots`.
    fn entry(&self, index: u32) -> &CacheEntry {
        assert!(
            index < self.slots,
            "cache entry index checked by the caller"
        );
        // SAFETY: index < slots, and attach checked that every entry lies in the mapping.
        unsafe {
            &*(self
                .base
                .as_ptr()
                .add(HEADER_LEN + index as usize * self.stride) as *const CacheEntry)
        }
    }

    /// The message area of entry `index` (below `self.slots`): `max_message` bytes.
    fn data(&self, index: u32) -> *mut u8 {
        assert!(
            index < self.slots,
            "cache entry index checked by the caller"
        );
        // SAFETY: as in `entry`; the data follows the entry header inside the stride.
        unsafe {
            self.base
                .as_ptr()
                .add(HEADER_LEN + index as usize * self.stride + ENTRY_LEN)
        }
    }

    fn tag(ticket: Ticket) -> u64 {
        CACHED_TAG | (ticket.generation as u64) << 32 | ticket.index as u64
    }

    fn mark_pending(&self) {
        // SYNC: pairs with the SeqCst swap in `deliver_pending` and the receivers' SeqCst load
        // after releasing a slot (the Dekker pairing of the module docs).
        self.header().pending.store(1, Ordering::SeqCst);
    }

    /// Copies `msg` into a free entry, as `PENDING`, for the sender `me` (`uid`, its own
    /// `sequence` number for the message).
    ///
    /// # Errors
    /// [`Error::Full`] if every entry is taken.
    pub(super) fn store(
        &self,
        msg: &[u8],
        me: crate::process::ProcessIdentity,
        uid: u32,
        sequence: u64,
    ) -> Result<Ticket> {
        if msg.len() > self.max_message as usize {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max: self.max_message as usize,
            });
        }
        for index in 0..self.slots {
            let entry = self.entry(index);
            let raw = entry.word.load(Ordering::Acquire);
            let word = Word::decode(raw);
            let reusable = match word.state {
                FREE | RECEIVED => true,
                // Its sender died copying: that send never returned.
                FILLING => liveness(word.pid, None) == Liveness::Dead,
                _ => false,
            };
            if !reusable {
                continue;
            }
            let generation = word.generation.wrapping_add(1) & GENERATION_MASK;
            let filling = Word::encode(generation, FILLING, me.pid);
            if entry
                .word
                .compare_exchange(raw, filling, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            entry.owner_pid.store(me.pid, Ordering::Relaxed);
            entry.owner_start.store(me.start_time, Ordering::Relaxed);
            entry.owner_uid.store(uid, Ordering::Relaxed);
            entry.sequence.store(sequence, Ordering::Relaxed);
            entry.ring_pos.store(NO_POSITION, Ordering::Relaxed);
            entry.len.store(msg.len() as u32, Ordering::Relaxed);
            // SAFETY: we own the entry (FILLING by us); msg.len() <= max_message, the size of
            // its data area.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.data(index), msg.len()) };
            // SYNC: Release half pairs with the Acquire CAS in `try_move`; SeqCst half with the
            // Dekker pairing (see `mark_pending`).
            entry
                .word
                .swap(Word::encode(generation, PENDING, 0), Ordering::SeqCst);
            self.mark_pending();
            return Ok(Ticket { index, generation });
        }
        Err(Error::Full)
    }

    /// What became of the message of `ticket`.
    pub(super) fn state(&self, ticket: Ticket) -> CacheState {
        let word = Word::decode(self.entry(ticket.index).word.load(Ordering::Acquire));
        if word.generation != ticket.generation {
            // Reused: only a received entry is.
            return CacheState::Delivered;
        }
        match word.state {
            FILLING | PENDING | MOVING => CacheState::Pending,
            QUEUED | RECEIVED => CacheState::Delivered,
            // Freed without being delivered: a scribbled word.
            _ => CacheState::Empty,
        }
    }

    /// Moves the `PENDING` message of entry `index` into `ring` as `me`; `Ok(true)` if it is
    /// now in the ring, `Ok(false)` if it was not pending or the ring is full.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a scribbled entry (it is dropped) or ring.
    fn try_move(&self, ring: &Ring, index: u32, me: u32, object: &str) -> Result<bool> {
        let entry = self.entry(index);
        let raw = entry.word.load(Ordering::Acquire);
        let word = Word::decode(raw);
        if word.state != PENDING {
            return Ok(false);
        }
        let moving = Word::encode(word.generation, MOVING, me);
        // SYNC: Acquire pairs with the SeqCst (Release) store of PENDING in `store`.
        if entry
            .word
            .compare_exchange(raw, moving, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Ok(false);
        }
        let back_to_pending = || {
            entry.ring_pos.store(NO_POSITION, Ordering::Relaxed);
            entry
                .word
                .store(Word::encode(word.generation, PENDING, 0), Ordering::SeqCst);
            self.mark_pending();
        };
        let pos = match ring.claim_write(me) {
            Ok(Claim::Got(pos)) => pos,
            Ok(Claim::Blocked { .. }) => {
                back_to_pending();
                return Ok(false);
            }
            Err(err) => {
                back_to_pending();
                return Err(err);
            }
        };
        // SYNC: SeqCst so that a recovery that sees this entry MOVING after our death also
        // sees where our ring slot is.
        entry.ring_pos.store(pos, Ordering::SeqCst);
        let len = entry.len.load(Ordering::Relaxed);
        if len > self.max_message {
            // Nothing sensible to deliver: give the position up and drop the entry.
            ring.release(pos);
            entry
                .word
                .store(Word::encode(word.generation, FREE, 0), Ordering::Release);
            return Err(Error::corrupt(
                object,
                format!(
                    "a cached message claims {len} bytes, more than its {} bytes",
                    self.max_message
                ),
            ));
        }
        // SAFETY: we own both the entry (MOVING by us) and the ring slot (WRITING by us); len
        // <= max_message, the size of both data areas (the ring's max_message is the cache's,
        // checked in `attach`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.data(index),
                ring.data_at(ring.index_of(pos)),
                len as usize,
            )
        };
        let slot = ring.slot(pos);
        slot.len.store(len, Ordering::Relaxed);
        slot.sender_pid
            .store(entry.owner_pid.load(Ordering::Relaxed), Ordering::Relaxed);
        slot.sender_uid
            .store(entry.owner_uid.load(Ordering::Relaxed), Ordering::Relaxed);
        let ticket = Ticket {
            index,
            generation: word.generation,
        };
        slot.sequence.store(Cache::tag(ticket), Ordering::Relaxed);
        ring.publish(pos);
        // A receiver may have acknowledged it already (RECEIVED): then this CAS fails, rightly.
        let _ = entry.word.compare_exchange(
            moving,
            Word::encode(word.generation, QUEUED, 0),
            Ordering::SeqCst,
            Ordering::Relaxed,
        );
        Ok(true)
    }

    /// Moves the message of `ticket` into the ring if it is still pending: `Ok(true)` once it
    /// is delivered (by this call or earlier).
    ///
    /// # Errors
    /// As `try_move`.
    pub(super) fn move_own(&self, shared: &Shared, ticket: Ticket, me: u32) -> Result<bool> {
        if self.state(ticket) == CacheState::Pending {
            self.recover(shared, ticket.index);
            self.try_move(shared.ring(), ticket.index, me, &describe(&shared.name))?;
        }
        Ok(self.state(ticket) != CacheState::Pending)
    }

    /// Hands an entry left `MOVING` by a dead mover back (see the module docs, "Crashes").
    fn recover(&self, shared: &Shared, index: u32) {
        let entry = self.entry(index);
        let raw = entry.word.load(Ordering::Acquire);
        let word = Word::decode(raw);
        if word.state != MOVING || !is_dead(shared, word.pid) {
            return;
        }
        let ring = shared.ring();
        let pos = entry.ring_pos.load(Ordering::SeqCst);
        let next = if pos == NO_POSITION {
            PENDING
        } else if ring.is_unclaimed(pos) {
            QUEUED
        } else {
            let held = ring.held_slots();
            if held.contains(&(pos, word.pid)) {
                // The dead mover still holds the slot: nothing was published.
                ring.reclaim(pos, word.pid);
                PENDING
            } else if held.iter().any(|&(p, _)| p == pos) {
                // A receiver has it and will acknowledge it.
                return;
            } else {
                PENDING
            }
        };
        if entry
            .word
            .compare_exchange(
                raw,
                Word::encode(word.generation, next, 0),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok()
            && next == PENDING
        {
            entry.ring_pos.store(NO_POSITION, Ordering::Relaxed);
            self.mark_pending();
        }
    }

    /// Moves cached messages into the ring while it has room, as `me`; cheap (one load) when
    /// nothing is cached. Called by receivers after they free a slot and by senders after they
    /// cache. Best effort: a scribbled entry is dropped, never reported to the caller.
    #[inline]
    pub(super) fn deliver_pending(&self, shared: &Shared, me: u32) {
        // SYNC: the load half of the Dekker pairing (see `mark_pending`).
        if self.header().pending.load(Ordering::SeqCst) != 0 {
            self.deliver_pending_now(shared, me);
        }
    }

    /// The rest of [`Cache::deliver_pending`], once the flag says something may wait.
    #[cold]
    fn deliver_pending_now(&self, shared: &Shared, me: u32) {
        if self.header().pending.swap(0, Ordering::SeqCst) == 0 {
            return;
        }
        // SYNC: orders the swap above before the ring's slot loads in `try_move` (the Dekker
        // pairing with a receiver's SeqCst release of a slot).
        fence(Ordering::SeqCst);
        let ring = shared.ring();
        let object = describe(&shared.name);
        let mut left = false;
        for index in 0..self.slots {
            let word = Word::decode(self.entry(index).word.load(Ordering::Acquire));
            match word.state {
                PENDING => {}
                MOVING => {
                    self.recover(shared, index);
                    match Word::decode(self.entry(index).word.load(Ordering::Acquire)).state {
                        PENDING => {}
                        // Still being moved by a live process: look again next time.
                        MOVING => {
                            left = true;
                            continue;
                        }
                        _ => continue,
                    }
                }
                _ => continue,
            }
            match self.try_move(ring, index, me, &object) {
                Ok(true) => {}
                // Not pending any more (another mover took it), or the ring is full (and
                // try_move set the flag again): the rest can wait too.
                Ok(false) => {
                    if Word::decode(self.entry(index).word.load(Ordering::Acquire)).state == PENDING
                    {
                        left = true;
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        if left {
            self.mark_pending();
        }
    }

    /// A receiver claimed a message whose sequence word is `tag`: marks its entry `RECEIVED`
    /// and returns the sender's own sequence number, or `None` for a stale or scribbled tag.
    pub(super) fn received(&self, tag: u64) -> Option<u64> {
        let index = tag as u32;
        let generation = (tag >> 32) as u32 & GENERATION_MASK;
        if index >= self.slots {
            return None;
        }
        let entry = self.entry(index);
        // A CAS fails only when the word changed; a neighbour flipping it forever costs this
        // receiver the acknowledgement, never a hang.
        for _ in 0..64 {
            let raw = entry.word.load(Ordering::Acquire);
            let word = Word::decode(raw);
            if word.generation != generation || !matches!(word.state, MOVING | QUEUED) {
                return None;
            }
            let sequence = entry.sequence.load(Ordering::Relaxed);
            if entry
                .word
                .compare_exchange(
                    raw,
                    Word::encode(generation, RECEIVED, 0),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Some(sequence);
            }
        }
        None
    }

    /// Entries whose message waits for room (`PENDING` or being moved), for `ipckit ls`.
    pub(super) fn pending_count(&self) -> usize {
        (0..self.slots)
            .filter(|&index| {
                let word = Word::decode(self.entry(index).word.load(Ordering::Acquire));
                matches!(word.state, PENDING | MOVING)
            })
            .count()
    }
}
