//! The receiving side of a topic: [`Subscriber`] and its in-place [`TopicSample`].

use std::fmt;
use std::sync::Arc;

use super::{describe, Shared, MAX_SUBSCRIBERS};
use crate::error::Error;
use crate::error::Result;
use crate::link::{Deadline, MessageReceiver, Metadata};
use crate::shm::layout::slot_bytes;
use crate::shm::participants;
use crate::shm::wait::{wait_for, wake_sleepers, Attempt};
use crate::sync::primitive::{fence, Ordering};

/// Receives every message of a topic, in order, from its own cursor. Implements
/// [`MessageReceiver`]; [`Metadata::missed`] says how many messages were lost to overrun just
/// before the one received.
pub struct Subscriber {
    shared: Arc<Shared>,
    /// Our entry in the subscriber table, where we publish our cursor.
    index: usize,
    pid: u32,
    /// The next message to read.
    cursor: u64,
    /// Messages lost to overrun since the last one received.
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

/// Where the next complete message is: its sequence number, length and metadata.
struct Located {
    seq: u64,
    len: usize,
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
        let (index, pid) = participants::join(table, &describe(&shared.name), &limit)?;
        let write_pos = shared.header().write_pos.0.load(Ordering::Acquire);
        let cursor = write_pos.saturating_sub(history as u64);
        table[index].0.cursor.store(cursor, Ordering::Release);
        Ok(Subscriber {
            shared: Arc::clone(shared),
            index,
            pid,
            cursor,
            missed: 0,
        })
    }

    /// Finds the message at the cursor (skipping, and counting, what was overrun), and with
    /// `copy_into` copies it out and verifies that it was not overwritten meanwhile.
    fn attempt(
        shared: &Shared,
        cursor: &mut u64,
        missed: &mut u64,
        mut copy_into: Option<&mut Vec<u8>>,
    ) -> Attempt<Located> {
        let capacity = shared.capacity as u64;
        for _ in 0..=capacity + 1 {
            // The slot's stamp alone says whether message `cursor` is there: stamps are unique
            // per message and move to "complete" before `write_pos` does. Only an overrun
            // needs `write_pos` (one cache line fewer on the fast path).
            let seq = *cursor;
            let slot = shared.slot(seq);
            let want = seq.wrapping_mul(2).wrapping_add(2);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp < want {
                // Not published yet (or being written right now).
                return Ok(Err(false));
            }
            if stamp > want {
                let published = shared.header().write_pos.0.load(Ordering::Acquire);
                if published.saturating_sub(*cursor) > capacity {
                    // Fallen a whole ring behind: everything older than this is gone.
                    let oldest = published - capacity;
                    *missed += oldest - *cursor;
                    *cursor = oldest;
                    continue;
                }
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
                // SYNC: pairs with the Release fence after a publisher's odd stamp.
                fence(Ordering::Acquire);
                if slot.stamp.load(Ordering::Relaxed) == want {
                    return Ok(Ok(Located { seq, len, meta }));
                }
            }
            // Overwritten by a later message while we looked: overrun.
            *missed += 1;
            *cursor += 1;
        }
        Err(shared.corrupt("the subscriber's cursor does not settle"))
    }

    fn locate(&mut self, deadline: Deadline, copy_into: Option<&mut Vec<u8>>) -> Result<Located> {
        let shared = &*self.shared;
        let cursor = &mut self.cursor;
        let missed = &mut self.missed;
        let mut copy_into = copy_into;
        wait_for(
            shared.wait,
            &shared.header().new_message.0,
            deadline,
            deadline.recv_expired(),
            |_| Subscriber::attempt(shared, cursor, missed, copy_into.as_deref_mut()),
        )
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
        // SYNC: orders the reads of the bytes before this stamp check (sequence lock).
        fence(Ordering::Acquire);
        let seq = self.located.seq;
        self.subscriber
            .shared
            .slot(seq)
            .stamp
            .load(Ordering::Relaxed)
            == seq.wrapping_mul(2).wrapping_add(2)
    }
}

impl TopicSample<'_> {
    /// The message's bytes: len <= max_message was validated when the sample was located.
    /// Under backpressure no publisher writes them until we drop; under overrun they may
    /// change, which `is_intact` reports.
    fn bytes(&self) -> (*mut u8, usize) {
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
