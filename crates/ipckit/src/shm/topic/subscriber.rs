//! The receiving side of a topic: [`Subscriber`] and its in-place [`TopicSample`].

use std::fmt;
use std::sync::Arc;

use super::{describe, Fast, Shared, MAX_SUBSCRIBERS};
use crate::error::Error;
use crate::error::Result;
use crate::link::{Deadline, MessageReceiver, Metadata};
use crate::shm::layout::slot_bytes;
use crate::shm::liveness::{Held, Table};
use crate::shm::participants;
use crate::shm::seqlock;
use crate::shm::wait::{spin_for_handoff, wait_for, wait_for_asymmetric, wake_sleepers, Attempt};
use crate::sync::primitive::Ordering;

/// Receives every message of a topic, in order, from its own cursor. Implements
/// [`MessageReceiver`]; [`Metadata::missed`] says how many messages were lost to overrun just
/// before the one received.
pub struct Subscriber {
    shared: Arc<Shared>,
    /// The slots, poison flag and policy, copied at attach for the fast path.
    fast: Fast,
    /// Our entry in the subscriber table, where we publish our cursor.
    index: usize,
    pid: u32,
    /// Our entry's liveness lock, released (by dropping it) after the entry.
    _lock: Option<Held>,
    /// The next message to read.
    cursor: u64,
    /// The cursor's slot index (`cursor % capacity`), kept as the cursor moves: no
    /// division per message.
    slot: usize,
    /// Messages lost to overrun since the last one received.
    missed: u64,
    /// The `lost` count (gaps declared by publishers) of the last message received, or the
    /// header's when we joined; `u64::MAX` until the first message of a history replay,
    /// whose earlier gaps are not ours to report (a saturating subtraction of it is 0).
    lost: u64,
    /// Where an in-place receive of an overrun topic puts its validated copy.
    copy: Vec<u8>,
}

impl Subscriber {
    /// The topic and our entry in its subscriber table (for `watch.rs`: WaitSet, async).
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(super) fn wait_parts(&self) -> (&Arc<Shared>, usize) {
        (&self.shared, self.index)
    }
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

/// What the fast path read of a message, for its [`Metadata`].
struct Got {
    sender_pid: u32,
    sender_uid: u32,
    sequence: u64,
    missed: u64,
}

/// Where the next complete message is: its sequence number, length and metadata.
struct Located {
    seq: u64,
    len: usize,
    /// The slot's count of messages declared lost before this one (`SlotHeader::lost`).
    lost: u64,
    meta: Metadata,
}

impl Subscriber {
    /// A subscriber of the topic `shared` starting `history` messages back, entered in its
    /// subscriber table.
    pub(super) fn new(shared: &Arc<Shared>, history: usize) -> Result<Subscriber> {
        if history > shared.capacity as usize {
            return Err(Error::InvalidArgument(format!(
                "{} keeps {} messages; cannot replay {history}",
                describe(&shared.name),
                shared.capacity
            )));
        }
        let table = &shared.header().subscribers;
        let limit = format!("{MAX_SUBSCRIBERS} attached subscribers");
        let (index, pid, lock) = participants::join(
            table,
            &describe(&shared.name),
            &limit,
            &shared.locks(Table::Subscribers),
        )?;
        // The gaps declared so far are before our time: read before `write_pos`, so that a
        // gap declared after the messages we skip is never counted (the Release store of
        // the gap and this Acquire load order it before the `write_pos` we then see).
        let lost_now = shared.header().lost.load(Ordering::Acquire);
        let write_pos = shared.header().write_pos.0.load(Ordering::Acquire);
        let cursor = write_pos.saturating_sub(history as u64);
        table[index].0.cursor.store(cursor, Ordering::Release);
        // Publishers scan only the entries below the bound; raised after the cursor is stored.
        // SYNC: SeqCst pairs with a scanning publisher's Acquire load of the bound.
        shared
            .header()
            .subscriber_bound
            .fetch_max(index as u32 + 1, Ordering::SeqCst);
        Ok(Subscriber {
            shared: Arc::clone(shared),
            fast: shared.fast,
            index,
            pid,
            _lock: lock,
            cursor,
            slot: shared.fast.index_of(cursor),
            missed: 0,
            lost: if cursor == write_pos {
                lost_now
            } else {
                u64::MAX
            },
            copy: Vec::new(),
        })
    }

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
            // One address computation (a mask, or a division) for the slot and its bytes.
            let (slot, data) = shared.slots.slot_and_data_at(shared.fast.index_of(seq));
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
                // Any value is harmless: it only ever adds to a count (saturating).
                let lost = slot.lost.load(Ordering::Relaxed);
                let meta = Metadata {
                    sender_pid: Some(slot.sender_pid.load(Ordering::Relaxed)),
                    sender_uid: Some(slot.sender_uid.load(Ordering::Relaxed)),
                    // Counting the messages declared lost: the sequence moves on by the gap.
                    sequence: Some(seq.saturating_add(lost)),
                    ..Metadata::default()
                };
                if let Some(buf) = copy_into.as_deref_mut() {
                    buf.clear();
                    buf.reserve(len);
                    // SAFETY: len <= max_message: the source is inside the slot's data area;
                    // buf has room for len bytes. A concurrent overwrite (overrun) can only
                    // change the bytes, which the second stamp check below then rejects.
                    unsafe {
                        std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr(), len);
                        buf.set_len(len);
                    }
                }
                if seqlock::read_validate(&slot.stamp, seq) {
                    return Ok(Ok(Located {
                        seq,
                        len,
                        lost,
                        meta,
                    }));
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
        // A message already there (the usual case when busy): one attempt, without the
        // wait's machinery (nor the `Error` it would build for an expiry).
        shared.check_intact(false)?;
        match Subscriber::attempt(shared, cursor, missed, copy_into.as_deref_mut()) {
            Ok(Ok(located)) => {
                shared.check_intact(false)?;
                return Ok(located);
            }
            Ok(Err(_)) => {}
            Err(err) => {
                // As below: corruption may be a lost page; the file says.
                shared.check_intact(matches!(err, Error::Corrupt { .. }))?;
                return Err(err);
            }
        }
        // A single publisher stores `write_pos` plainly and fences only lightly: the sleeper
        // pays the heavy half of the barrier.
        let wait = if shared.single_publisher {
            wait_for_asymmetric
        } else {
            wait_for
        };
        let located = wait(
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
        // The general path may have moved the cursor (an overrun): compute the index again
        // (a mask, or on a ring of another size a division, off the fast path).
        self.slot = self.fast.index_of(seq + 1);
        self.publish_cursor(seq + 1);
    }

    /// Stores our cursor, `cursor`, in our entry, waking publishers held back by us.
    #[inline(always)]
    fn publish_cursor(&mut self, cursor: u64) {
        self.cursor = cursor;
        let entry = &self.fast.slots.header().subscribers[self.index].0;
        if self.fast.overrun {
            entry.cursor.store(self.cursor, Ordering::Release);
        } else {
            // SYNC: SeqCst pairs with the fence of a sleeping publisher (`wake_sleepers`).
            entry.cursor.swap(self.cursor, Ordering::SeqCst);
            wake_sleepers(&self.fast.slots.header().room.0);
        }
    }

    /// Sets `located`'s missed count: what we skipped ourselves, plus the gaps publishers
    /// declared since the last message we received (exact across our own skips: the slots'
    /// counts are running totals).
    fn take_missed(&mut self, located: &mut Located) {
        let declared = located.lost.saturating_sub(self.lost);
        self.lost = located.lost;
        located.meta.missed = Some(std::mem::take(&mut self.missed).wrapping_add(declared));
    }

    /// Receives the next message as a [`TopicSample`], which derefs to its bytes.
    ///
    /// On a backpressure topic the bytes are read in place, without copying: no publisher
    /// writes the slot until the sample drops (the subscriber's cursor holds it). On an
    /// overrun topic a publisher may overwrite any slot at any moment, so a reference into
    /// the slot could change under the reader: the bytes are copied once into the
    /// subscriber's own buffer and the copy is validated (sequence lock) before the sample
    /// is handed out. The overrun path therefore costs one copy of the message, the same as
    /// [`recv`](MessageReceiver::recv) without its allocation; it never hands out bytes a
    /// publisher may be rewriting.
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
    pub fn recv_in_place_deadline(&mut self, deadline: Deadline) -> Result<TopicSample<'_>> {
        let copied = self.shared.overrun;
        let mut copy = std::mem::take(&mut self.copy);
        let located = self.locate(deadline, copied.then_some(&mut copy));
        self.copy = copy;
        let mut located = located?;
        self.take_missed(&mut located);
        Ok(TopicSample {
            subscriber: self,
            located,
            copied,
        })
    }

    /// Receives the next message in place, waiting as long as needed.
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
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
    #[inline]
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        let mut got = self.try_recv_fast(buf);
        if got.is_none() && self.spin_for_next(deadline) {
            got = self.try_recv_fast(buf);
        }
        if let Some(got) = got {
            // What was copied came from the file unless a page of it was lost meanwhile.
            if self.fast.poisoned() {
                return self.poisoned();
            }
            // Built here, in the caller's result, rather than moved through an `Option`.
            return Ok(Metadata {
                sender_pid: Some(got.sender_pid),
                sender_uid: Some(got.sender_uid),
                sequence: Some(got.sequence),
                missed: Some(got.missed),
                ..Metadata::default()
            });
        }
        self.recv_general(buf, deadline)
    }
}

impl Subscriber {
    /// The fast case: message `cursor` complete in its slot, of a plausible length, copied
    /// whole (the stamp unchanged after the copy). `None` sends the caller to the general
    /// path, which sorts out everything else (not yet published, overrun, a torn copy,
    /// corruption) and reports it; `buf` may then hold a rejected copy, which the general
    /// path replaces. The caller checks the segment is intact once it returns a message.
    #[inline(always)]
    fn try_recv_fast(&mut self, buf: &mut Vec<u8>) -> Option<Got> {
        let fast = self.fast;
        let seq = self.cursor;
        let (slot, data) = fast.slots.slot_and_data_at(self.slot);
        if seqlock::read_begin(&slot.stamp) != seqlock::complete(seq) {
            return None;
        }
        let len = slot.len.load(Ordering::Relaxed) as usize;
        if len > fast.max_message as usize {
            return None;
        }
        // Any value is harmless: it only ever adds to a count (saturating).
        let lost = slot.lost.load(Ordering::Relaxed);
        let sender_pid = slot.sender_pid.load(Ordering::Relaxed);
        let sender_uid = slot.sender_uid.load(Ordering::Relaxed);
        buf.clear();
        buf.reserve(len);
        // SAFETY: len <= max_message: the source is inside the slot's data area; buf has
        // room for len bytes. A concurrent overwrite (overrun) can only change the bytes,
        // which the stamp check below then rejects.
        unsafe {
            std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        if !seqlock::read_validate(&slot.stamp, seq) {
            return None;
        }
        self.slot = fast.next_index(self.slot);
        self.publish_cursor(seq + 1);
        let declared = lost.saturating_sub(self.lost);
        self.lost = lost;
        Some(Got {
            sender_pid,
            sender_uid,
            // Counting the messages declared lost: the sequence moves on by the gap.
            sequence: seq.saturating_add(lost),
            missed: std::mem::take(&mut self.missed).wrapping_add(declared),
        })
    }

    /// The short wait before the general one ([`spin_for_handoff`]) on the stamp of the
    /// slot of message `cursor`, as the mailbox's cursor receiver spins. True once the stamp
    /// reaches the message (complete, or overwritten: the fast case or the general path then
    /// sorts it out).
    #[inline(never)]
    fn spin_for_next(&self, deadline: Deadline) -> bool {
        let (slot, _) = self.fast.slots.slot_and_data_at(self.slot);
        let want = seqlock::complete(self.cursor);
        spin_for_handoff(self.shared.wait, deadline, || {
            seqlock::read_begin(&slot.stamp) >= want
        })
    }

    /// The error for a poisoned segment, built out of the fast path's way.
    #[cold]
    #[inline(never)]
    fn poisoned(&self) -> Result<Metadata> {
        self.shared.check_intact(false)?;
        // Unreachable in practice (the flag is never cleared): a segment that checks out
        // intact but said it was not is corrupt all the same.
        Err(self.shared.corrupt("a page of the mapping was lost"))
    }

    /// Everything the fast case leaves: waiting, overrun, corruption.
    #[inline(never)]
    fn recv_general(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        let mut located = self.locate(deadline, Some(buf))?;
        self.advance(located.seq);
        self.take_missed(&mut located);
        Ok(located.meta)
    }
}

/// A message read in place from a topic; the subscriber moves past it when this drops.
pub struct TopicSample<'a> {
    subscriber: &'a mut Subscriber,
    located: Located,
    /// The bytes are the subscriber's validated copy (overrun topics), not the slot.
    copied: bool,
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

    /// Whether the bytes are the message as published. Always true: a sample of an overrun
    /// topic is a validated copy, and a backpressure topic's slot is not rewritten while the
    /// sample lives. Kept so that code written against 0.1 still compiles.
    #[deprecated(
        since = "0.2.0",
        note = "always true: samples of overrun topics are validated copies"
    )]
    pub fn is_intact(&self) -> bool {
        if self.copied {
            return true;
        }
        let seq = self.located.seq;
        seqlock::read_validate(&self.subscriber.shared.slot(seq).stamp, seq)
    }
}

impl TopicSample<'_> {
    /// The message's bytes: the subscriber's validated copy (overrun), or the slot, where
    /// len <= max_message was validated when the sample was located and no publisher writes
    /// until we drop (backpressure: our cursor holds the slot).
    fn bytes(&self) -> (*mut u8, usize) {
        if self.copied {
            let copy = &self.subscriber.copy;
            return (copy.as_ptr().cast_mut(), copy.len());
        }
        let shared = &self.subscriber.shared;
        (shared.data_ptr(self.located.seq), self.located.len)
    }
}

slot_bytes!(TopicSample);

impl Drop for TopicSample<'_> {
    fn drop(&mut self) {
        let seq = self.located.seq;
        self.subscriber.advance(seq);
    }
}
