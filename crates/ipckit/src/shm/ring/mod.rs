//! The mailbox ring: a bounded many-producer many-consumer queue of fixed-size slots in shared
//! memory that survives any participant being killed at any instruction.
//!
//! # Algorithm
//!
//! Based on Dmitry Vyukov's bounded MPMC queue (each slot carries a sequence number that says
//! which lap of the ring it belongs to), changed in one respect so that a crash can always be
//! repaired: a position is claimed by a compare-and-swap **on the slot itself**, which records
//! the claimant's pid in the same word. `head` and `tail` are only hints that anyone may move
//! forward; the slot words are the truth. So every slot is, at every instant, in a state that
//! names who is responsible for it, and a slot whose owner has died can be recognised and
//! handed back.
//!
//! # The slot word (64 bits)
//!
//! ```text
//!  63            32 31 30 29                    0
//! +----------------+-----+-----------------------+
//! |      lap       |state|  owner pid (or 0)     |
//! +----------------+-----+-----------------------+
//! ```
//!
//! Position `p` (a 64-bit counter that never wraps) lives in slot `p % capacity`, on lap
//! `p / capacity` (kept modulo 2^32). For a slot and the position `p` that maps to it:
//!
//! | word                    | meaning                                                      |
//! |-------------------------|--------------------------------------------------------------|
//! | `(lap(p), EMPTY, 0)`    | free for the producer of position `p`                        |
//! | `(lap(p), WRITING, pid)`| `pid` is writing the message of position `p`                 |
//! | `(lap(p), FULL, 0)`     | the message of `p` is complete and waits for a consumer      |
//! | `(lap(p), READING, pid)`| `pid` is reading (or holding in place) the message of `p`    |
//! | `(lap(p)+1, EMPTY, 0)`  | position `p` is finished (consumed, cancelled or reclaimed)  |
//!
//! Transitions: a producer CASes `EMPTY → WRITING`, writes the bytes, stores `FULL`; a
//! consumer CASes `FULL → READING`, copies, stores the next lap's `EMPTY`. A producer that
//! gives up (a cancelled loan, a rendezvous that timed out) CASes its slot to the next lap's
//! `EMPTY`: a position may be skipped, never delivered torn. A slot left `WRITING` or `READING`
//! by a dead process is reclaimed by CAS to the next lap's `EMPTY`: the half-written message
//! is dropped (its `send` never returned), the half-read one is counted as consumed.
//!
//! # The cursor protocol (single sender *and* single receiver)
//!
//! A ring created single-sender and single-receiver, neither rendezvous nor unbounded, does
//! not use the slot words at all (they stay `(0, EMPTY, 0)`): as in a plain SPSC queue
//! (rtrb, iceoryx2's `spsc::queue`), the sender publishes position `p` by storing `p + 1`
//! in `tail` (Release) after writing the slot, and the receiver releases it by storing
//! `p + 1` in `head` (Release) after reading it. Each side keeps its position and slot index
//! in process memory ([`Cursor`]) and caches the other's cursor, re-reading it (Acquire)
//! only when it runs out, so a burst of messages costs one transfer of the cursor's line,
//! not one per message, and no read-modify-write at all. Crash safety comes from the cursors
//! alone: a sender killed while writing never stored the tail, so its message was never
//! visible (the next sender starts at the tail and overwrites it); a receiver killed while
//! reading or holding a message in place never stored the head, so the next receiver
//! (starting at the head) gets that message again. Values read from the other side are
//! checked (`head <= tail <= head + capacity`), a contradiction is [`Error::Corrupt`].
//!
//! After the tail, the sender also stores a *published mark* in the slot's header
//! ([`published_mark`]: the low 32 bits of `p + 1`, Release). The receiver's fast claim
//! looks there and not at the tail, so in a hand-off (one message at a time, the ring empty
//! between them) the message's own lines are the only ones that change caches: reading the
//! tail too put a third line in every hop, the difference between a ring's round trip and a
//! bare hand-off's. The tail stays the truth. The mark comes after it, so a receiver that
//! takes a message by its mark has not got ahead of the tail (the head it stores never
//! passes it), and a sender killed between the two leaves a message that only the tail
//! shows: the general claim, which the receiver falls to when the fast one finds nothing
//! (after its short spin, or at once for a non-blocking receive), reads the mark and then
//! the tail. So does a message from a sender older than the mark. A mark can be stale only
//! by whole laps (a slot is rewritten once per lap), and a lap is under 2^32 positions.
//!
//! Waking on this path is asymmetric: the side that stores a cursor runs a
//! `light_barrier` (a compiler fence once the process is registered for `membarrier`)
//! before it loads the sleeper count; a waiter announces itself and then runs the
//! `heavy_barrier` (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`) before its last re-check
//! (`wait_for_asymmetric`). Both are in `sync/primitive.rs`. Every sleep
//! remains bounded, as below.
//!
//! # Waiting
//!
//! Two [`Event`](crate::sync::Event)s, `not_empty` and `not_full` (a futex word and a count of
//! sleepers each). A side that changes a slot does so with a SeqCst read-modify-write, then
//! loads the sleeper count and makes the wake system call only if it is non-zero; a sleeper
//! increments the count, fences, re-checks the ring and only then sleeps
//! ([`Event::announce`](crate::sync::Event::announce)). That Dekker-style pairing is what
//! rules out a lost wake-up; the loom models in this file check it together with the claims.
//! Each sleep is also bounded (one second), so a count scribbled by another process costs a
//! waiter at most that.
//!
//! # Idempotent senders: committing a message with its record
//!
//! A source (a 16-byte id, `mailbox/idempotent.rs`) numbers its messages; the ring keeps,
//! per source, `committed`, the next number not yet committed, in the header's source table
//! ([`SourceEntry`]), so that the record of a delivery and the delivery itself cannot part
//! (a file written after the send could: a kill between the two sent the message twice).
//! Positions never repeat in a ring (64-bit), and an unbounded mailbox's rings have indices
//! that never repeat either (a chain only grows; a drained ring is never brought back), so an
//! entry names its one send in flight by ring and position: `pending_ring` (0 for the root,
//! and for every bounded ring), `pending_pos` (position + 1) and `pending_seq`. The table is
//! the root ring's, for the whole chain. A send of number `P` on the slot words (many
//! senders, and every unbounded mailbox):
//!
//! 1. claim position `X` of ring `R` (`(lap, WRITING, pid)`), then rewrite the record under
//!    its `stamp` ([`SourceEntry::record_pending`]): stamp odd, clear `pending_pos`, store
//!    `pending_seq = P` and `pending_ring = R`, then `pending_pos = X + 1` (Release), stamp
//!    even;
//! 2. write the bytes and the slot header;
//! 3. **commit**: `committed = P + 1` (Release);
//! 4. publish (`FULL`).
//!
//! A reclaim of a slot `WRITING` by a dead pid in ring `R` asks the table: if some entry has
//! `pending_ring == R`, `pending_pos == X + 1` and `committed > pending_seq` (loaded after
//! `committed`, Acquire), read whole (the same even stamp before and after, an Acquire fence
//! between: a seqlock, as in `shm/seqlock.rs`), the message was committed, and the reclaim
//! publishes it (CAS to `FULL`) instead of dropping it. Killed before step 1 finished, the
//! entry still names an older send (or its stamp stays odd): the message is dropped, as any
//! unfinished send is, and `committed` says it was not delivered.
//!
//! Why the stamp: a live owner rewrites its record while reclaimers read it, and a record
//! is three words. On a bounded ring a torn read is harmless (any position it yields is one
//! the owner itself claimed, never a dead writer's), but in a chain position `X` exists in
//! every ring: the position of the owner's send in ring 0 read with the ring index of its
//! next send, in ring 1, would name a dead writer's uncommitted claim of `X` in ring 1, and
//! publish it. A read that straddles a rewrite sees the stamp change and matches nothing;
//! that is exact because an entry being rewritten names no dead writer's committed send: its
//! owner's earlier sends are all published (an owner sends one at a time, and commits before
//! it rewrites), and a new owner resolved its predecessor's before its first rewrite, which a
//! reclaimer that read the new stamp (Acquire, paired with the Release store of the odd
//! stamp) sees, so its own compare-and-swap fails. The loom model
//! `a_reclaimer_never_combines_two_records_into_a_third` fails without the stamp.
//! Keying on the position rather than on a tag in the slot matters: a tag written after the
//! claim could be a stale one (the slot's previous message, long committed) when its writer
//! dies right after the claim, and a reclaim would then publish a torn message.
//!
//! The next owner of the entry (the restarted process, or one evicting it) **resolves the
//! position in flight before it sends**: a slot at `pending_pos - 1` of ring `pending_ring`
//! still `WRITING` in its lap is published when committed, handed to the next lap otherwise
//! (a chained ring that is gone was drained, so nothing of it is in flight; one that cannot be
//! mapped for another reason fails the claim, the record kept) (CAS from the exact word,
//! so that it and a racing reclaim agree: both read the same values, which nobody writes
//! meanwhile). Only then does it store a `pending_pos` of its own. That order is what keeps
//! the dead owner's committed message from being forgotten: a reclaimer that reads any value
//! the new owner wrote also sees the new owner's resolution (Release/Acquire), so its own CAS
//! fails, and one that reads only the dead owner's values decides as the new owner did.
//!
//! A sole sender (single-sender rings, and the cursor protocol) has no `WRITING` state: it
//! writes into a free slot, publishes (`FULL`, or the tail), and *then* commits. Killed in
//! between, the message is out but `committed` says it is not. The next sender of the ring,
//! whoever it is, settles every entry before its first write ([`Ring::settle_sources`]): with
//! the token held, no owner of an entry is alive, and nothing has overwritten the slot in
//! flight yet (the next write would: a sole sender reuses a position whose message never
//! came out), so "published" is read exactly (the slot word's lap and state, or `tail > X`),
//! `committed` rolled forward when it was, and `pending_pos` cleared.
//!
//! Rendezvous rings have no idempotent senders (a rendezvous may retract a committed
//! message). Unbounded mailboxes are always many-sender (slot words, never a sole sender);
//! a committed dead write in a sealed ring is published like any other (a sealed ring is
//! drained only once no slot of it is `WRITING`).
//!
//! # Trust
//!
//! The geometry (capacity, slot size) is read once, checked against the mapping's length, and
//! kept in process-local memory; nothing read from the segment afterwards is used as an index
//! or a length without a bounds check. A scribbled word or index gives [`Error::Corrupt`].

use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::sync::primitive::asymmetric::{light_barrier, register_asymmetric};
use crate::sync::primitive::{fence, AtomicU32, AtomicU64, Ordering};

use super::layout::{Geometry, Limits, Padded, Preamble, SlotLayout, Slots, Spec};
use super::participants::ParticipantEntry;
use super::wait::{wake_sleepers, WaitWord};

/// Identifies a mailbox ring ("ipckitMB").
pub(crate) const RING_MAGIC: u64 = u64::from_le_bytes(*b"ipckitMB");
/// Bumped whenever the layout or the protocol below changes. Version 2: single-sender and
/// single-receiver rings use the cursor protocol, which version-1 code would not follow.
/// Version 3: the source table of idempotent senders after the participants, which a
/// version-2 reclaim would not consult (it would drop a committed message).
/// Version 4: a source's send in flight names its ring (`pending_ring`, under a stamp), and
/// unbounded chains have idempotent senders, which a version-3 reclaim would not match.
pub(crate) const RING_VERSION: u32 = 4;
/// Entries in the participant table (two under loom, whose atomics are costly objects; the
/// models do not use the table).
#[cfg(not(loom))]
pub(crate) const MAX_PARTICIPANTS: usize = 128;
#[cfg(loom)]
pub(crate) const MAX_PARTICIPANTS: usize = 2;
/// Entries in the source table of idempotent senders (one under loom).
#[cfg(not(loom))]
pub(crate) const MAX_SOURCES: usize = 8;
#[cfg(loom)]
pub(crate) const MAX_SOURCES: usize = 1;
/// The largest ring we create or accept.
pub(crate) const MAX_CAPACITY: u32 = 1 << 20;
/// The largest message we create or accept (64 MiB).
pub(crate) const MAX_MESSAGE: u32 = 64 << 20;

/// Ring flag: `send` returns once a receiver has taken the message.
pub(crate) const FLAG_RENDEZVOUS: u32 = 1;
/// Ring flag: one ring of an unbounded chain; a full ring is sealed and a new one chained.
pub(crate) const FLAG_UNBOUNDED: u32 = 2;
/// Ring flag: at most one sender at a time (it claims slots without a compare-and-swap).
pub(crate) const FLAG_SINGLE_SENDER: u32 = 4;
/// Ring flag: at most one receiver at a time (it claims messages without a compare-and-swap).
pub(crate) const FLAG_SINGLE_RECEIVER: u32 = 8;

/// Whether a ring with these flags uses the cursor protocol (see the module's docs): one
/// sender and one receiver, neither rendezvous (a published message must stay retractable)
/// nor unbounded (a chained ring is sealed by its slot words).
pub(crate) fn uses_cursors(flags: u32) -> bool {
    let both = FLAG_SINGLE_SENDER | FLAG_SINGLE_RECEIVER;
    flags & both == both && flags & (FLAG_RENDEZVOUS | FLAG_UNBOUNDED) == 0
}

/// One side's place on a cursor ring, in process memory: its next position, that
/// position's slot index (so no division per message), and the other side's cursor as last
/// read (for the sender, the receiver's head plus the capacity: positions below are free;
/// for the receiver, the sender's tail: positions below are published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub pos: u64,
    pub index: usize,
    limit: u64,
    /// Whether this process is registered for `membarrier` (see `register_asymmetric`),
    /// kept so that the light barrier loads nothing per message.
    registered: bool,
}

impl Cursor {
    #[inline]
    fn advance(&mut self, capacity: usize) {
        self.pos += 1;
        self.index += 1;
        if self.index == capacity {
            self.index = 0;
        }
    }
}

/// A position claimed by a fast claim, with its slot index and lap, so that publishing or
/// releasing it computes neither again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spot {
    pub pos: u64,
    pub index: usize,
    lap: u32,
}

const STATE_SHIFT: u32 = 30;
const PID_MASK: u64 = (1 << STATE_SHIFT) - 1;

/// The state bits of a slot word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    Empty = 0,
    Writing = 1,
    Full = 2,
    Reading = 3,
}

/// A decoded slot word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub lap: u32,
    pub state: SlotState,
    pub pid: u32,
}

impl Word {
    fn decode(raw: u64) -> Word {
        let state = match (raw >> STATE_SHIFT) & 3 {
            0 => SlotState::Empty,
            1 => SlotState::Writing,
            2 => SlotState::Full,
            _ => SlotState::Reading,
        };
        Word {
            lap: (raw >> 32) as u32,
            state,
            pid: (raw & PID_MASK) as u32,
        }
    }

    fn encode(lap: u32, state: SlotState, pid: u32) -> u64 {
        ((lap as u64) << 32) | ((state as u64) << STATE_SHIFT) | (pid as u64 & PID_MASK)
    }
}

/// The ring's header, at offset 0 of the mailbox payload.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RingHeader {
    /// Magic [`RING_MAGIC`] (stored last), version, flags and geometry.
    pub preamble: Preamble,
    pub creator_pid: u32,
    /// Unbounded chains: 0 while producers may use this ring; once it is full, the index of
    /// the ring that follows it (the ring is then sealed).
    pub chain_next: AtomicU32,
    /// Unbounded chains, root ring only: the ring receivers drain.
    pub chain_head: AtomicU32,
    /// Unbounded chains, root ring only: the newest ring.
    pub chain_tail: AtomicU32,
    /// Single-sender rings: pid of the one sender attached, 0 if none.
    pub sole_sender: AtomicU32,
    /// Single-receiver rings: pid of the one receiver attached, 0 if none.
    pub sole_receiver: AtomicU32,
    _reserved: [u32; 2],
    /// Next position to produce (a hint: the slot words are authoritative).
    pub tail: Padded<AtomicU64>,
    /// Next position to consume (a hint).
    pub head: Padded<AtomicU64>,
    pub not_empty: Padded<WaitWord>,
    pub not_full: Padded<WaitWord>,
    pub participants: [ParticipantEntry; MAX_PARTICIPANTS],
    /// The idempotent senders' sources (see "Idempotent senders" in the module docs).
    pub sources: [SourceEntry; MAX_SOURCES],
}

/// One source of an idempotent sender (`mailbox/idempotent.rs`): what it has committed, and
/// its one send in flight. Owned by one live process at a time through its liveness lock
/// (`liveness::Table::Sources`); every field is written by the owner only (or, for a
/// single-sender ring, by the holder of the sender token while no owner lives).
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct SourceEntry {
    /// The source's 16-byte id, all zero when the entry is free.
    pub id: [AtomicU64; 2],
    /// Pid of the owning process, 0 when none (for `ls`; the lock byte decides liveness).
    pub owner: AtomicU32,
    /// The ring of an unbounded chain (0: the root, and every bounded ring) whose position
    /// [`pending_pos`](Self::pending_pos) names.
    pub pending_ring: AtomicU32,
    /// The next sequence number not yet committed: every number below was delivered.
    pub committed: AtomicU64,
    /// Position + 1 of the source's one send in flight (0: none). Stored after the claim of
    /// the position and before anything else, with [`pending_seq`](Self::pending_seq) first.
    pub pending_pos: AtomicU64,
    /// The sequence number of the send in flight.
    pub pending_seq: AtomicU64,
    /// Unix time (ns) when the entry was last claimed or let go: the least recently used
    /// entry of a dead owner is the one evicted when the table is full.
    pub last_used: AtomicU64,
    /// The record's stamp: odd while its owner rewrites `pending_*` (or resets the entry),
    /// even otherwise; it only grows. A reclaimer reads the record between two loads of it
    /// (a seqlock, `shm/seqlock.rs`) so that it never combines a position of one record with
    /// the ring of another (see "Idempotent senders" in the module docs).
    pub stamp: AtomicU64,
}

impl SourceEntry {
    /// A free entry (all zero), for heap rings under loom.
    #[cfg(all(test, loom))]
    fn new() -> SourceEntry {
        SourceEntry {
            id: [AtomicU64::new(0), AtomicU64::new(0)],
            owner: AtomicU32::new(0),
            pending_ring: AtomicU32::new(0),
            committed: AtomicU64::new(0),
            pending_pos: AtomicU64::new(0),
            pending_seq: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
        }
    }
}

impl SourceEntry {
    /// Opens a rewrite of the record (odd stamp); returns the stamp for
    /// [`end_rewrite`](Self::end_rewrite). Only the entry's owner (or the process taking it
    /// over, after resolving its send in flight) calls this.
    pub(crate) fn begin_rewrite(&self) -> u64 {
        let stamp = self.stamp.load(Ordering::Relaxed).wrapping_add(1) | 1;
        // SYNC: Release pairs with the Acquire loads of the stamp in `Ring::committed_at`: a
        // reclaimer that reads it also sees the resolution of the predecessor's send made
        // before it (and its compare-and-swap on that slot then fails).
        self.stamp.store(stamp, Ordering::Release);
        // SYNC: orders the odd stamp before the record's stores; pairs with the Acquire fence
        // in `Ring::committed_at`, whose second load of the stamp then sees it.
        fence(Ordering::Release);
        stamp
    }

    /// Closes a rewrite opened by [`begin_rewrite`](Self::begin_rewrite).
    pub(crate) fn end_rewrite(&self, stamp: u64) {
        // SYNC: pairs with the first Acquire load of the stamp in `Ring::committed_at`.
        self.stamp.store(stamp.wrapping_add(1), Ordering::Release);
    }

    /// Records the source's one send in flight: number `seq` at position `pos` of ring
    /// `ring` of the mailbox (0 for the root, and for every bounded mailbox). Called by the
    /// owner after the claim of `pos`, before anything is written there.
    pub(crate) fn record_pending(&self, ring: u32, pos: u64, seq: u64) {
        let stamp = self.begin_rewrite();
        // Without a record first, a kill between the stores would leave the new number beside
        // the old position, which `settle_sources` (which reads no stamp: no owner lives
        // then) would take for published (it was: the previous message).
        self.pending_pos.store(0, Ordering::Relaxed);
        self.pending_seq.store(seq, Ordering::Relaxed);
        self.pending_ring.store(ring, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire loads of `pending_pos` in `resolve_pending`
        // and `settle_sources`: they read this `pending_seq` and `pending_ring` with it.
        self.pending_pos
            .store(pos.wrapping_add(1), Ordering::Release);
        self.end_rewrite(stamp);
    }

    /// The entry as it stood at one moment, for `ls` ([`SourceRecord`]): read between two
    /// equal even loads of the stamp (a seqlock, as `committed_at` reads it), up to `attempts`
    /// times. An entry whose stamp never settles (an owner stopped mid-rewrite, a scribbled
    /// stamp) is returned as last read, with `whole` false, rather than waited for. Reads
    /// only: a stamp another process scribbled costs at most `attempts` reads.
    pub(crate) fn snapshot(&self, attempts: u32) -> SourceRecord {
        let mut record = SourceRecord::default();
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                std::hint::spin_loop();
            }
            // SYNC: pairs with the Release stores of the stamp in `begin_rewrite` and
            // `end_rewrite`: the record stored before the even stamp is visible.
            let stamp = self.stamp.load(Ordering::Acquire);
            record = SourceRecord {
                id: [
                    self.id[0].load(Ordering::Acquire),
                    self.id[1].load(Ordering::Acquire),
                ],
                owner: self.owner.load(Ordering::Acquire),
                // SYNC: Acquire pairs with the Release stores of the commit in the send.
                committed: self.committed.load(Ordering::Acquire),
                // SYNC: pairs with the Release store of `pending_pos` in `record_pending`.
                pending_pos: self.pending_pos.load(Ordering::Acquire),
                pending_seq: self.pending_seq.load(Ordering::Relaxed),
                last_used: self.last_used.load(Ordering::Relaxed),
                whole: false,
            };
            // SYNC: pairs with the Release fence in `begin_rewrite`: had a load above read a
            // store of a later rewrite, the stamp below is that rewrite's (or later).
            fence(Ordering::Acquire);
            if stamp & 1 == 0 && self.stamp.load(Ordering::Acquire) == stamp {
                record.whole = true;
                break;
            }
        }
        record
    }
}

/// One read of a [`SourceEntry`] ([`SourceEntry::snapshot`]): its words as found, unchecked
/// (they come from shared memory; the reader decides what they mean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SourceRecord {
    pub id: [u64; 2],
    pub owner: u32,
    pub committed: u64,
    pub pending_pos: u64,
    pub pending_seq: u64,
    pub last_used: u64,
    /// Read between two equal even stamps: the `pending_*` words and the id belong to one
    /// record (`committed`, `owner` and `last_used` are single words written outside it).
    pub whole: bool,
}

/// The header of each slot; the message bytes follow it.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SlotHeader {
    pub word: AtomicU64,
    pub len: AtomicU32,
    pub sender_pid: AtomicU32,
    pub sender_uid: AtomicU32,
    /// Cursor rings only: [`published_mark`] of the slot's position once its message is
    /// published (stored after the tail), so that a receiver learns it from the line it
    /// reads the message from, not from the tail's. Zero in a new ring, unused elsewhere.
    pub published: AtomicU32,
    pub sequence: AtomicU64,
}

/// What a cursor ring's slot says in [`SlotHeader::published`] once the message of `pos` is
/// published: the low 32 bits of `pos + 1`. A slot holds at most the mark of the position one
/// lap before (its writer's previous message there), which differs (a lap is below 2^32
/// positions), and never zero after its first use, so no older message passes for `pos`.
#[inline(always)]
pub(crate) fn published_mark(pos: u64) -> u32 {
    pos.wrapping_add(1) as u32
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<SourceEntry>() == 64);
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::offset_of!(RingHeader, sources) == 384 + 16 * MAX_PARTICIPANTS);

// The layout is version 1's, byte for byte: the creator's pid right after the preamble.
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::offset_of!(RingHeader, creator_pid) == 40);
#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::offset_of!(RingHeader, chain_next) == 44);

/// The ring's place in the shared layout (`layout.rs`).
#[derive(Debug)]
pub(crate) struct RingLayout;

// SAFETY: RingHeader and SlotHeader are #[repr(C)] integers and atomics, aligned to at most
// 64, and RingHeader starts with a Preamble followed by the creator's pid (asserted above).
unsafe impl SlotLayout for RingLayout {
    type Header = RingHeader;
    type Slot = SlotHeader;
    const LIMITS: Limits = Limits::new(
        RING_MAGIC,
        RING_VERSION,
        "mailbox",
        MAX_CAPACITY,
        MAX_MESSAGE,
    );
}

/// Bytes a ring of this geometry occupies, or `None` if it is absurdly large.
pub(crate) fn ring_len(capacity: u32, max_message: u32) -> Option<usize> {
    RingLayout::len(capacity, max_message)
}

/// Result of trying to claim a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Position claimed: the caller owns the slot.
    Got(u64),
    /// Nothing possible now; `blocker` is the pid whose slot is in the way, if any (a writer
    /// still writing, a reader still reading), with the position that slot holds.
    Blocked { blocker: Option<(u32, u64)> },
}

/// A ring mapped at `base`, with geometry validated against the mapping.
#[derive(Debug)]
pub(crate) struct Ring {
    slots: Slots<RingLayout>,
    /// The header whose futex words this ring's waiters sleep on: its own, or, for the rings
    /// of an unbounded chain, the root's, so one wake reaches every waiter of the mailbox.
    waits: NonNull<RingHeader>,
    /// log2 of the capacity when it is a power of two (positions map to slots and laps by
    /// mask and shift), `u32::MAX` otherwise (by division).
    shift: u32,
    /// `capacity - 1`: the slot index of a position is `pos & mask` when `shift` is set.
    mask: u64,
    /// This ring's index in its unbounded chain (0: the root, and every bounded ring): what
    /// a source's `pending_ring` names.
    chain: u32,
    object: String,
}

// SAFETY: the ring is shared memory manipulated only through atomics and raw copies guarded
// by the slot protocol; it is designed to be used by many threads and processes at once.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// The most CAS rounds one claim may take before we call the indices corrupt; honest
/// contention loses a round only when another participant made progress.
const MAX_ROUNDS: u32 = 1 << 20;

impl Ring {
    /// Initialises a ring in `len` zeroed bytes at `base` and returns it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a geometry outside the limits or larger than `len`.
    ///
    /// # Safety
    /// - `base` is 64-byte aligned, valid for reads and writes of `len` bytes for as long as
    ///   the returned `Ring` (and anything derived from it) lives, and zero-filled;
    /// - no other process uses the memory until this returns (the magic is written last).
    pub(crate) unsafe fn init(
        base: NonNull<u8>,
        len: usize,
        spec: Spec,
        object: &str,
    ) -> Result<Ring> {
        // Slot words start as (lap 0, EMPTY): zero, as the memory already is.
        // SAFETY: the caller's guarantees are those of Slots::init.
        let slots = unsafe { Slots::init(base, len, spec, object)? };
        Ok(Ring::from_slots(slots, object))
    }

    /// Attaches to an initialised ring, validating the header against the mapping.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the bytes are not a valid ring that fits in `len` bytes.
    ///
    /// # Safety
    /// `base` is 64-byte aligned and valid for reads and writes of `len` bytes for as long as
    /// the returned `Ring` lives. The bytes may be anything: they are validated.
    pub(crate) unsafe fn attach(base: NonNull<u8>, len: usize, object: &str) -> Result<Ring> {
        // SAFETY: the caller's guarantees are those of Slots::attach.
        let slots = unsafe { Slots::attach(base, len, object)? };
        Ok(Ring::from_slots(slots, object))
    }

    fn from_slots(slots: Slots<RingLayout>, object: &str) -> Ring {
        let capacity = slots.geometry().capacity;
        Ring {
            waits: slots.base().cast(),
            mask: capacity as u64 - 1,
            shift: if capacity.is_power_of_two() {
                capacity.trailing_zeros()
            } else {
                u32::MAX
            },
            slots,
            chain: 0,
            object: object.to_string(),
        }
    }

    #[inline]
    pub(crate) fn geometry(&self) -> Geometry {
        *self.slots.geometry()
    }

    /// Makes this ring the ring `index` of `root`'s unbounded chain: its waiters sleep on
    /// `root`'s futex words, and its reclaims consult `root`'s source table.
    ///
    /// # Safety
    /// `root` stays mapped for as long as this ring is used.
    pub(crate) unsafe fn join_chain(&mut self, root: &Ring, index: u32) {
        self.waits = root.waits;
        self.chain = index;
    }

    /// This ring's index in its unbounded chain (0 for the root and for bounded rings).
    pub(crate) fn chain_index(&self) -> u32 {
        self.chain
    }

    /// Moves an empty ring on to position `pos`, as if `pos` messages had gone through it:
    /// the head and tail there, each slot empty for the lap of the first position at or
    /// after `pos` that it holds (for the tests of positions no test could send through).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn fast_forward(&self, pos: u64) {
        let capacity = self.slots.geometry().capacity as u64;
        for offset in 0..capacity {
            let at = pos + offset;
            let word = Word::encode(self.lap(at), SlotState::Empty, 0);
            self.slot(at).word.store(word, Ordering::SeqCst);
        }
        self.header().head.0.store(pos, Ordering::SeqCst);
        self.header().tail.0.store(pos, Ordering::SeqCst);
    }

    /// The header holding the futex words waiters of this ring sleep on (and, for the rings
    /// of an unbounded chain, the root's, with the source table).
    #[inline]
    pub(crate) fn waits(&self) -> &RingHeader {
        // SAFETY: either our own validated header, or a root ring's that the caller of
        // `join_chain` keeps mapped.
        unsafe { self.waits.as_ref() }
    }

    /// True once no slot is being written or holds an unread message (readers still
    /// reading do not count: they finish on their own).
    pub(crate) fn is_drained(&self) -> bool {
        // SYNC: pairs with the fence after a producer's claim in an unbounded chain, so a
        // claim made before the ring was sealed is seen here.
        fence(Ordering::SeqCst);
        (0..self.slots.geometry().capacity as u64).all(|index| {
            let word = Word::decode(self.slot(index).word.load(Ordering::Acquire));
            !matches!(word.state, SlotState::Writing | SlotState::Full)
        })
    }

    #[inline]
    pub(crate) fn header(&self) -> &RingHeader {
        self.slots.header()
    }

    pub(crate) fn slot(&self, pos: u64) -> &SlotHeader {
        self.slots.slot_at(self.index_of(pos))
    }

    /// The message area of the slot of `pos`: `max_message` bytes (endpoints use
    /// [`data_at`](Ring::data_at) with the index they keep).
    #[cfg(test)]
    pub(crate) fn data_ptr(&self, pos: u64) -> *mut u8 {
        self.slots.data_ptr(pos)
    }

    /// The slot index of `pos`.
    #[inline]
    pub(crate) fn index_of(&self, pos: u64) -> usize {
        self.locate(pos).0
    }

    /// The slot index and the lap of `pos`, with one test of the ring's kind (a mask and a
    /// shift for a power-of-two capacity, a division otherwise).
    #[inline(always)]
    fn locate(&self, pos: u64) -> (usize, u32) {
        if self.shift != u32::MAX {
            ((pos & self.mask) as usize, (pos >> self.shift) as u32)
        } else {
            let capacity = self.slots.geometry().capacity as u64;
            ((pos % capacity) as usize, (pos / capacity) as u32)
        }
    }

    /// The header of the slot at `index`.
    #[inline]
    pub(crate) fn slot_at(&self, index: usize) -> &SlotHeader {
        self.slots.slot_at(index)
    }

    /// The message area of the slot at `index`: `max_message` bytes.
    #[inline]
    pub(crate) fn data_at(&self, index: usize) -> *mut u8 {
        self.slots.data_at(index)
    }

    /// The header and the message area of the slot at `index`.
    #[inline]
    pub(crate) fn slot_and_data_at(&self, index: usize) -> (&SlotHeader, *mut u8) {
        self.slots.slot_and_data_at(index)
    }

    /// A cursor starting at `start` (the tail for the sender, the head for the receiver).
    /// Registers the process for `membarrier` first, so that a sleeper's heavy barrier
    /// reaches every cursor store this cursor makes.
    pub(crate) fn cursor(&self, start: u64) -> Cursor {
        Cursor {
            pos: start,
            index: self.index_of(start),
            // Nothing known about the other side yet: the first claim reads its cursor.
            limit: start,
            registered: register_asymmetric(),
        }
    }

    /// The sender's fast claim: true when the slot of `cursor.pos` is free, re-reading the
    /// head only when the cached one runs out. False also when the head contradicts the
    /// sender's position: the caller's general path ([`cursor_claim_write`]) reports that,
    /// so no error is built here.
    ///
    /// [`cursor_claim_write`]: Ring::cursor_claim_write
    #[inline(always)]
    pub(crate) fn cursor_ready_write(&self, cursor: &mut Cursor) -> bool {
        if cursor.pos < cursor.limit {
            return true;
        }
        // SYNC: pairs with the Release store of the head in `cursor_release`.
        let head = self.header().head.0.load(Ordering::Acquire);
        let capacity = self.slots.geometry().capacity as u64;
        // One comparison for `head <= pos <= head + capacity` (a head beyond the position
        // wraps to a huge distance).
        if cursor.pos.wrapping_sub(head) > capacity {
            return false;
        }
        cursor.limit = head + capacity;
        cursor.pos < cursor.limit
    }

    /// The receiver's fast claim: true when the message at `cursor.pos` is published as
    /// far as the cached tail or the slot's own [`published_mark`] says. It never reads the
    /// tail, whose line the sender writes with every message: in a hand-off that line would
    /// change caches once more per message than the slot's. A message whose mark is missing
    /// (its sender died between the tail and the mark, or predates the mark) is found by the
    /// general path's [`cursor_claim_read`](Ring::cursor_claim_read), which reads the tail.
    #[inline(always)]
    pub(crate) fn cursor_ready_read(&self, cursor: &mut Cursor) -> bool {
        cursor.pos < cursor.limit || self.marked_published(cursor)
    }

    /// True, extending the receiver's limit by one, when the slot of `cursor.pos` carries
    /// that position's [`published_mark`].
    #[inline(always)]
    fn marked_published(&self, cursor: &mut Cursor) -> bool {
        let slot = self.slot_at(cursor.index);
        // SYNC: pairs with the Release store of the mark in `cursor_publish`, which follows
        // the message's bytes and the tail's store.
        if slot.published.load(Ordering::Acquire) == published_mark(cursor.pos) {
            cursor.limit = cursor.pos + 1;
            true
        } else {
            false
        }
    }

    /// The sender's claim on a cursor ring: true when the slot of `cursor.pos` is free.
    #[inline]
    pub(crate) fn cursor_claim_write(&self, cursor: &mut Cursor) -> Result<bool> {
        if cursor.pos < cursor.limit {
            return Ok(true);
        }
        self.refresh_write_limit(cursor)
    }

    #[inline]
    fn refresh_write_limit(&self, cursor: &mut Cursor) -> Result<bool> {
        // SYNC: pairs with the Release store of the head in `cursor_release`: the receiver
        // has finished with every slot below it.
        let head = self.header().head.0.load(Ordering::Acquire);
        let capacity = self.slots.geometry().capacity as u64;
        if head > cursor.pos || cursor.pos - head > capacity {
            return Err(self.cold_corrupt("the head cursor contradicts the sender's position"));
        }
        cursor.limit = head + capacity;
        Ok(cursor.pos < cursor.limit)
    }

    /// The receiver's claim on a cursor ring: true when the message at `cursor.pos` is
    /// published.
    #[inline]
    pub(crate) fn cursor_claim_read(&self, cursor: &mut Cursor) -> Result<bool> {
        if cursor.pos < cursor.limit {
            return Ok(true);
        }
        self.refresh_read_limit(cursor)
    }

    #[inline]
    fn refresh_read_limit(&self, cursor: &mut Cursor) -> Result<bool> {
        if self.marked_published(cursor) {
            return Ok(true);
        }
        // SYNC: pairs with the Release store of the tail in `cursor_publish`: the slots below
        // it are written.
        let tail = self.header().tail.0.load(Ordering::Acquire);
        let capacity = self.slots.geometry().capacity as u64;
        if tail < cursor.pos || tail - cursor.pos > capacity {
            return Err(self.cold_corrupt("the tail cursor contradicts the receiver's position"));
        }
        cursor.limit = tail;
        Ok(cursor.pos < cursor.limit)
    }

    /// Publishes the message the sender wrote at `cursor.pos` and moves the cursor on.
    #[inline]
    pub(crate) fn cursor_publish(&self, cursor: &mut Cursor) {
        let (pos, index) = (cursor.pos, cursor.index);
        cursor.advance(self.slots.geometry().capacity as usize);
        // SYNC: Release pairs with the Acquire load of the tail in `refresh_read_limit`.
        self.header().tail.0.store(cursor.pos, Ordering::Release);
        // After the tail, so that a receiver that takes the message by its mark never gets
        // ahead of the tail, and a sender killed in between leaves it to the tail alone.
        // SYNC: Release pairs with the Acquire load of the mark in `marked_published`.
        self.slot_at(index)
            .published
            .store(published_mark(pos), Ordering::Release);
        // SYNC: with the waiter's announce and `heavy_barrier` (Dekker, asymmetric).
        light_barrier(cursor.registered);
        self.notify(&self.waits().not_empty.0);
    }

    /// Hands the slot the receiver read at `cursor.pos` back to the sender and moves on.
    #[inline]
    pub(crate) fn cursor_release(&self, cursor: &mut Cursor) {
        cursor.advance(self.slots.geometry().capacity as usize);
        // SYNC: Release pairs with the Acquire load of the head in `refresh_write_limit`.
        self.header().head.0.store(cursor.pos, Ordering::Release);
        // SYNC: with the waiter's announce and `heavy_barrier` (Dekker, asymmetric).
        light_barrier(cursor.registered);
        self.notify(&self.waits().not_full.0);
    }

    #[inline]
    fn lap(&self, pos: u64) -> u32 {
        self.locate(pos).1
    }

    /// The common case of [`claim_write`](Ring::claim_write) in one round: the slot at the
    /// tail hint is empty for its lap and our compare-and-swap wins. `None` for anything
    /// else (full, contended, a lagging hint, a scribbled word): the caller takes the full
    /// claim, which sorts those out. The word is compared whole with the one expected, so
    /// nothing read from the segment is decoded here.
    #[inline(always)]
    pub(crate) fn claim_write_fast(&self, pid: u32) -> Option<Spot> {
        let tail = &self.header().tail.0;
        let pos = tail.load(Ordering::Acquire);
        let (index, lap) = self.locate(pos);
        let slot = self.slots.slot_at(index);
        let empty = Word::encode(lap, SlotState::Empty, 0);
        // A load first, so that a full ring is not written to (the line stays shared).
        if slot.word.load(Ordering::Acquire) != empty {
            return None;
        }
        let claimed = Word::encode(lap, SlotState::Writing, pid);
        // SYNC: as in `claim_write`.
        if slot
            .word
            .compare_exchange(empty, claimed, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let _ = tail.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
        Some(Spot { pos, index, lap })
    }

    /// The common case of [`claim_read`](Ring::claim_read) in one round: the slot at the head
    /// hint holds its lap's complete message and our compare-and-swap wins. `None` for
    /// anything else, as in [`claim_write_fast`](Ring::claim_write_fast).
    #[inline(always)]
    pub(crate) fn claim_read_fast(&self, pid: u32) -> Option<Spot> {
        let head = &self.header().head.0;
        let pos = head.load(Ordering::Acquire);
        let (index, lap) = self.locate(pos);
        let slot = self.slots.slot_at(index);
        let full = Word::encode(lap, SlotState::Full, 0);
        // A load first: polling an empty ring writes nothing.
        if slot.word.load(Ordering::Acquire) != full {
            return None;
        }
        let claimed = Word::encode(lap, SlotState::Reading, pid);
        // SYNC: as in `claim_read`.
        if slot
            .word
            .compare_exchange(full, claimed, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let _ = head.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
        Some(Spot { pos, index, lap })
    }

    /// [`publish`](Ring::publish) for a position claimed by
    /// [`claim_write_fast`](Ring::claim_write_fast): nothing to compute again.
    #[inline(always)]
    pub(crate) fn publish_spot(&self, spot: Spot) {
        let word = Word::encode(spot.lap, SlotState::Full, 0);
        // SYNC: as in `publish`.
        self.slots
            .slot_at(spot.index)
            .word
            .swap(word, Ordering::SeqCst);
        self.notify(&self.waits().not_empty.0);
    }

    /// [`release`](Ring::release) for a message claimed by
    /// [`claim_read_fast`](Ring::claim_read_fast). No head hint to move: the claim moved
    /// it past `spot.pos` (its compare-and-swap, or a rival's that made it fail; on a
    /// ring with many receivers only compare-and-swaps move the head, and only forward).
    #[inline(always)]
    pub(crate) fn release_spot(&self, spot: Spot) {
        let word = Word::encode(spot.lap.wrapping_add(1), SlotState::Empty, 0);
        // SYNC: as in `release`.
        self.slots
            .slot_at(spot.index)
            .word
            .swap(word, Ordering::SeqCst);
        self.notify(&self.waits().not_full.0);
    }

    fn corrupt(&self, detail: &str) -> Error {
        Error::corrupt(&self.object, detail)
    }

    /// [`corrupt`](Ring::corrupt), out of the fast paths' way.
    #[cold]
    #[inline(never)]
    fn cold_corrupt(&self, detail: &str) -> Error {
        self.corrupt(detail)
    }

    /// Claims the next free position for writing by `pid`.
    pub(crate) fn claim_write(&self, pid: u32) -> Result<Claim> {
        let tail = &self.header().tail.0;
        for _ in 0..MAX_ROUNDS {
            let pos = tail.load(Ordering::Acquire);
            let (index, lap) = self.locate(pos);
            let slot = self.slots.slot_at(index);
            let raw = slot.word.load(Ordering::Acquire);
            let word = Word::decode(raw);
            match word.lap.wrapping_sub(lap) as i32 {
                0 if word.state == SlotState::Empty => {
                    let claimed = Word::encode(lap, SlotState::Writing, pid);
                    if slot
                        .word
                        .compare_exchange(raw, claimed, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        let _ = tail.compare_exchange(
                            pos,
                            pos + 1,
                            Ordering::Release,
                            Ordering::Relaxed,
                        );
                        return Ok(Claim::Got(pos));
                    }
                }
                // Already claimed or finished: the hint lags; move it on.
                d if d >= 0 => {
                    let _ =
                        tail.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
                }
                // The previous lap's message is still there: the ring is full.
                -1 => {
                    // The slot in the way holds the previous lap's position.
                    let held = pos.wrapping_sub(self.slots.geometry().capacity as u64);
                    let blocker = match word.state {
                        SlotState::Writing | SlotState::Reading => Some((word.pid, held)),
                        _ => None,
                    };
                    if tail.load(Ordering::Acquire) == pos {
                        return Ok(Claim::Blocked { blocker });
                    }
                }
                _ => {
                    if tail.load(Ordering::Acquire) == pos {
                        return Err(self.corrupt("a slot's lap contradicts the tail index"));
                    }
                }
            }
        }
        Err(self.corrupt("the tail index does not advance"))
    }

    /// Claims the oldest complete message for reading by `pid`.
    pub(crate) fn claim_read(&self, pid: u32) -> Result<Claim> {
        let head = &self.header().head.0;
        for _ in 0..MAX_ROUNDS {
            let pos = head.load(Ordering::Acquire);
            let (index, lap) = self.locate(pos);
            let slot = self.slots.slot_at(index);
            let raw = slot.word.load(Ordering::Acquire);
            let word = Word::decode(raw);
            match word.lap.wrapping_sub(lap) as i32 {
                0 => match word.state {
                    SlotState::Full => {
                        let claimed = Word::encode(lap, SlotState::Reading, pid);
                        if slot
                            .word
                            .compare_exchange(raw, claimed, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            let _ = head.compare_exchange(
                                pos,
                                pos + 1,
                                Ordering::Release,
                                Ordering::Relaxed,
                            );
                            return Ok(Claim::Got(pos));
                        }
                    }
                    SlotState::Empty => {
                        if head.load(Ordering::Acquire) == pos {
                            return Ok(Claim::Blocked { blocker: None });
                        }
                    }
                    SlotState::Writing => {
                        if head.load(Ordering::Acquire) == pos {
                            return Ok(Claim::Blocked {
                                blocker: Some((word.pid, pos)),
                            });
                        }
                    }
                    SlotState::Reading => {
                        let _ = head.compare_exchange(
                            pos,
                            pos + 1,
                            Ordering::Release,
                            Ordering::Relaxed,
                        );
                    }
                },
                // Finished (consumed, cancelled, reclaimed), perhaps for several laps when
                // positions were skipped: the hint lags.
                d if d > 0 => {
                    let _ =
                        head.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
                }
                // The slot still holds the previous lap: nothing written at `pos` yet.
                -1 => {
                    if head.load(Ordering::Acquire) == pos {
                        return Ok(Claim::Blocked { blocker: None });
                    }
                }
                _ => {
                    if head.load(Ordering::Acquire) == pos {
                        return Err(self.corrupt("a slot's lap contradicts the head index"));
                    }
                }
            }
        }
        Err(self.corrupt("the head index does not advance"))
    }

    /// The single sender's claim: position `*next` is free when its slot is empty for its
    /// lap. Nobody else writes, so no compare-and-swap (and no `WRITING` state) is needed: a
    /// sender killed while writing leaves the slot empty, and its message was never sent.
    /// Positions already published (a predecessor died between publishing and moving on)
    /// are stepped over.
    pub(crate) fn claim_write_single(&self, next: &mut u64) -> Result<Claim> {
        for _ in 0..=self.slots.geometry().capacity {
            let pos = *next;
            let lap = self.lap(pos);
            let word = Word::decode(self.slot(pos).word.load(Ordering::Acquire));
            match word.lap.wrapping_sub(lap) as i32 {
                0 if word.state == SlotState::Empty => return Ok(Claim::Got(pos)),
                d if d >= 0 => *next += 1,
                -1 => {
                    let held = pos.wrapping_sub(self.slots.geometry().capacity as u64);
                    let blocker = match word.state {
                        SlotState::Writing | SlotState::Reading => Some((word.pid, held)),
                        _ => None,
                    };
                    return Ok(Claim::Blocked { blocker });
                }
                _ => return Err(self.corrupt("a slot's lap contradicts the sender's position")),
            }
        }
        Err(self.corrupt("the sender's position does not advance"))
    }

    /// The single receiver's claim: the message at `*next` is ready when its slot is full
    /// for its lap. No `READING` state: a receiver killed before releasing it leaves it full,
    /// and the next receiver gets it again.
    pub(crate) fn claim_read_single(&self, next: &mut u64) -> Result<Claim> {
        for _ in 0..=self.slots.geometry().capacity {
            let pos = *next;
            let lap = self.lap(pos);
            let word = Word::decode(self.slot(pos).word.load(Ordering::Acquire));
            match word.lap.wrapping_sub(lap) as i32 {
                0 => match word.state {
                    SlotState::Full => return Ok(Claim::Got(pos)),
                    SlotState::Empty => return Ok(Claim::Blocked { blocker: None }),
                    SlotState::Writing => {
                        return Ok(Claim::Blocked {
                            blocker: Some((word.pid, pos)),
                        })
                    }
                    // Only a scribbled segment has readers in a single-receiver ring.
                    SlotState::Reading => *next += 1,
                },
                d if d > 0 => *next += 1,
                -1 => return Ok(Claim::Blocked { blocker: None }),
                _ => return Err(self.corrupt("a slot's lap contradicts the receiver's position")),
            }
        }
        Err(self.corrupt("the receiver's position does not advance"))
    }

    /// Makes the message at `pos` (claimed by `claim_write`) visible to consumers.
    pub(crate) fn publish(&self, pos: u64) {
        let word = Word::encode(self.lap(pos), SlotState::Full, 0);
        // SYNC: Release half pairs with the Acquire load/CAS of the slot word in
        // `claim_read`; SeqCst half with the fence in `Event::announce` (see `notify`).
        self.slot(pos).word.swap(word, Ordering::SeqCst);
        self.notify(&self.waits().not_empty.0);
    }

    /// Finishes position `pos` (read, cancelled or abandoned) and hands the slot to the next
    /// lap's producer.
    pub(crate) fn release(&self, pos: u64) {
        let word = Word::encode(self.lap(pos).wrapping_add(1), SlotState::Empty, 0);
        // SYNC: Release half pairs with the Acquire load/CAS of the slot word in
        // `claim_write` (and the head hint with the single sender's read of it); SeqCst
        // half with the fence in `Event::announce` (see `notify`).
        self.slot(pos).word.swap(word, Ordering::SeqCst);
        self.skip_head_past(pos);
        self.notify(&self.waits().not_full.0);
    }

    /// [`release`](Ring::release) for the single receiver of a ring: only it moves the head
    /// forward in order, so a plain store replaces the compare-and-swap (one locked
    /// instruction fewer per message). A racing `skip_head_past` may be overwritten with a
    /// smaller value; the head is a lower bound for the sender, so that only makes it wait.
    pub(crate) fn release_single(&self, pos: u64) {
        let word = Word::encode(self.lap(pos).wrapping_add(1), SlotState::Empty, 0);
        // SYNC: as in `release`.
        self.slot(pos).word.swap(word, Ordering::SeqCst);
        // SYNC: pairs with the single sender's Acquire load of the head hint.
        self.header().head.0.store(pos + 1, Ordering::Release);
        self.notify(&self.waits().not_full.0);
    }

    /// A position finished without a consumer (cancelled, retracted, reclaimed) leaves the
    /// head hint behind; move it on so that consumers need not walk the skipped laps.
    fn skip_head_past(&self, pos: u64) {
        let _ = self.header().head.0.compare_exchange(
            pos,
            pos + 1,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Takes back a published message nobody has claimed yet (a rendezvous that timed out).
    /// Returns false if a consumer got there first.
    pub(crate) fn retract(&self, pos: u64) -> bool {
        let lap = self.lap(pos);
        let full = Word::encode(lap, SlotState::Full, 0);
        let done = Word::encode(lap.wrapping_add(1), SlotState::Empty, 0);
        let retracted = self
            .slot(pos)
            .word
            .compare_exchange(full, done, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if retracted {
            self.skip_head_past(pos);
            self.notify(&self.waits().not_full.0);
        }
        retracted
    }

    /// True while the message published at `pos` has not been claimed by a consumer.
    pub(crate) fn is_unclaimed(&self, pos: u64) -> bool {
        let word = Word::decode(self.slot(pos).word.load(Ordering::Acquire));
        word.lap == self.lap(pos) && word.state == SlotState::Full
    }

    /// Hands back the slot of `pos` if it is still `WRITING`/`READING` by `dead_pid` in the
    /// lap of `pos`, or, for a write an idempotent sender had committed, publishes it.
    /// The caller has established that `dead_pid` is dead. True if this call changed the slot.
    pub(crate) fn reclaim(&self, pos: u64, dead_pid: u32) -> bool {
        let slot = self.slot(pos);
        let raw = slot.word.load(Ordering::Acquire);
        let word = Word::decode(raw);
        let held = matches!(word.state, SlotState::Writing | SlotState::Reading);
        if !held || word.pid != dead_pid || word.lap != self.lap(pos) {
            return false;
        }
        if word.state == SlotState::Writing && self.committed_at(pos) {
            // An idempotent sender committed this message before it died: deliver it.
            let full = Word::encode(word.lap, SlotState::Full, 0);
            // SYNC: as in `publish` (the bytes came before the commit, which we acquired).
            let published = slot
                .word
                .compare_exchange(raw, full, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok();
            if published {
                self.notify(&self.waits().not_empty.0);
            }
            return published;
        }
        let done = Word::encode(word.lap.wrapping_add(1), SlotState::Empty, 0);
        let reclaimed = slot
            .word
            .compare_exchange(raw, done, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if reclaimed {
            self.skip_head_past(pos);
            self.notify(&self.waits().not_full.0);
            self.notify(&self.waits().not_empty.0);
        }
        reclaimed
    }

    /// Whether an idempotent sender's source names `pos` of this ring as its send in flight
    /// and has committed it (see "Idempotent senders" in the module docs). The table is the
    /// root's (`waits`): one for the whole chain.
    fn committed_at(&self, pos: u64) -> bool {
        let chain = self.chain;
        self.waits().sources.iter().any(|entry| {
            // SYNC: pairs with the Release stores of the stamp in `begin_rewrite` (a
            // resolution made before it is visible) and `end_rewrite` (the record is).
            let stamp = entry.stamp.load(Ordering::Acquire);
            if stamp & 1 == 1 {
                // Being rewritten: the send it records is not committed yet, the one it
                // replaces was published by its owner, or resolved by the new owner before it
                // began (whose resolution we now see, so our compare-and-swap fails).
                return false;
            }
            // SYNC: Acquire pairs with the Release store of `committed` in the send: the
            // bytes and the record stored before it are visible.
            let committed = entry.committed.load(Ordering::Acquire);
            // SYNC: pairs with the Release store of `pending_pos` in `record_pending`.
            let pending = entry.pending_pos.load(Ordering::Acquire);
            let ring = entry.pending_ring.load(Ordering::Relaxed);
            let seq = entry.pending_seq.load(Ordering::Relaxed);
            // SYNC: pairs with the Release fence in `begin_rewrite`: had any load above read
            // a store of a later rewrite, the stamp below is that rewrite's (or later).
            fence(Ordering::Acquire);
            let whole = entry.stamp.load(Ordering::Acquire) == stamp;
            whole && pending == pos.wrapping_add(1) && ring == chain && committed > seq
        })
    }

    /// Source entry `index` of this ring's own table, if in range.
    pub(crate) fn source(&self, index: usize) -> Option<&SourceEntry> {
        self.header().sources.get(index)
    }

    /// Source entry `index` of the table this ring's sends are recorded in (the root's, for
    /// a ring of an unbounded chain), if in range.
    pub(crate) fn recorded_in(&self, index: usize) -> Option<&SourceEntry> {
        self.waits().sources.get(index)
    }

    /// Resolves source `index`'s send in flight on a ring with slot words, for a new owner of
    /// the entry before its first send: a slot still `WRITING` at that position is published
    /// if the send was committed, handed to the next lap otherwise. The entry's owner is dead
    /// (its lock was free), so the writer of that slot is too. Clears `pending_pos`. Called
    /// on the ring the record names (`pending_ring`); on another (the record's ring is gone:
    /// drained, so nothing of it is in flight) it only clears.
    pub(crate) fn resolve_pending(&self, index: usize) {
        let Some(entry) = self.recorded_in(index) else {
            return;
        };
        // SYNC: pairs with the Release store of `pending_pos` (and `committed`, below).
        let pending = entry.pending_pos.load(Ordering::Acquire);
        if pending != 0 && entry.pending_ring.load(Ordering::Relaxed) == self.chain {
            let pos = pending - 1;
            let word = Word::decode(self.slot(pos).word.load(Ordering::Acquire));
            if word.state == SlotState::Writing && word.lap == self.lap(pos) {
                // `reclaim` decides between publishing and dropping, by the same table.
                self.reclaim(pos, word.pid);
            }
        }
        // SYNC: Release pairs with the Acquire load in `committed_at`: a reclaimer that sees
        // this also sees the resolution above, and its own CAS then fails.
        entry.pending_pos.store(0, Ordering::Release);
    }

    /// Settles every source's send in flight for the sole sender of this ring, before its
    /// first write: a message published but not yet committed when its sender died is
    /// committed now. `cursor`: the ring uses the cursor protocol (published means below the
    /// tail), else the slot words say it. The caller holds the sender token, so no owner of
    /// an entry lives and nothing has been written over the slot in flight.
    pub(crate) fn settle_sources(&self, cursor: bool) {
        for entry in &self.header().sources {
            // SYNC: pairs with the Release stores of `pending_pos` and `committed`.
            let pending = entry.pending_pos.load(Ordering::Acquire);
            if pending == 0 {
                continue;
            }
            let pos = pending - 1;
            let seq = entry.pending_seq.load(Ordering::Relaxed);
            let committed = entry.committed.load(Ordering::Acquire);
            if committed <= seq {
                let published = if cursor {
                    self.header().tail.0.load(Ordering::Acquire) > pos
                } else {
                    let word = Word::decode(self.slot(pos).word.load(Ordering::Acquire));
                    match word.lap.wrapping_sub(self.lap(pos)) as i32 {
                        0 => word.state != SlotState::Empty,
                        d => d > 0,
                    }
                };
                if published {
                    entry
                        .committed
                        .store(seq.saturating_add(1), Ordering::Release);
                }
            }
            entry.pending_pos.store(0, Ordering::Release);
        }
    }

    /// Every slot held (`WRITING` or `READING`) right now, as (position-in-current-lap slot
    /// index, pid). Used by `clean` and `ls`.
    pub(crate) fn held_slots(&self) -> Vec<(u64, u32)> {
        (0..self.slots.geometry().capacity as u64)
            .filter_map(|index| {
                let word = Word::decode(self.slot(index).word.load(Ordering::Acquire));
                match word.state {
                    SlotState::Writing | SlotState::Reading => {
                        let pos = word.lap as u64 * self.slots.geometry().capacity as u64 + index;
                        Some((pos, word.pid))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Whether a complete message waits at some position from the head hint on: the
    /// readiness hint of a `WaitSet` and of async receivers (the claim decides). Reads only,
    /// at most one lap of slots.
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(crate) fn has_message(&self) -> bool {
        if uses_cursors(self.slots.geometry().flags) {
            // The cursor protocol leaves the slot words alone: the sender's published tail
            // beyond the receiver's released head is the message (the head moves on every
            // release, so this is exact).
            let head = self.header().head.0.load(Ordering::Acquire);
            return self.header().tail.0.load(Ordering::Acquire) > head;
        }
        let head = self.header().head.0.load(Ordering::Acquire);
        for pos in head..head + self.slots.geometry().capacity as u64 {
            let word = Word::decode(self.slot(pos).word.load(Ordering::Acquire));
            match word.lap.wrapping_sub(self.lap(pos)) as i32 {
                0 => match word.state {
                    SlotState::Full => return true,
                    SlotState::Empty => return false,
                    SlotState::Writing | SlotState::Reading => {}
                },
                d if d > 0 => {}
                _ => return false,
            }
        }
        false
    }

    /// Messages waiting (complete or being written), approximately: tail - head.
    pub(crate) fn depth(&self) -> u64 {
        let head = self.header().head.0.load(Ordering::Acquire);
        let tail = self.header().tail.0.load(Ordering::Acquire);
        tail.saturating_sub(head)
            .min(self.slots.geometry().capacity as u64)
    }

    /// Wakes the sleepers on `wait`, if any. No fence of its own: the caller's SeqCst
    /// read-modify-write of the slot word is the store half of the Dekker pairing.
    #[inline]
    fn notify(&self, wait: &WaitWord) {
        wake_sleepers(wait);
    }
}

#[cfg(test)]
mod tests;
