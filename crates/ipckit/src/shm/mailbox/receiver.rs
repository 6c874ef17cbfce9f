//! The receiving side of a mailbox: [`MailboxReceiver`] and its in-place [`MailboxSample`].

use std::fmt;
use std::sync::Arc;

use super::cache::CACHED_TAG;
use super::chain;
use super::endpoint::{Endpoint, Flavor};
use super::participants::Role;
use super::{describe, Shared};
use crate::error::{Error, Result};
use crate::link::{Deadline, MessageReceiver, Metadata};
use crate::shm::layout::slot_bytes;
use crate::shm::ring::{Cursor, Ring, SlotHeader};
use crate::shm::wait::spin_for_handoff;
use crate::sync::primitive::Ordering;

/// Receives from a mailbox. Implements [`MessageReceiver`].
pub struct MailboxReceiver {
    endpoint: Endpoint,
}

impl fmt::Debug for MailboxReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxReceiver")
            .field("mailbox", &self.endpoint.shared.name)
            .finish()
    }
}

impl MailboxReceiver {
    /// The mailbox this endpoint is attached to (for `watch.rs`: WaitSet, async, senders).
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.endpoint.shared
    }

    /// A receiver of the mailbox `shared`, entered in its participant table.
    pub(super) fn new(shared: &Arc<Shared>) -> Result<MailboxReceiver> {
        Ok(MailboxReceiver {
            endpoint: Endpoint::new(shared, Role::Receiver)?,
        })
    }

    /// Claims the next message and validates its slot: (position, length, metadata).
    #[inline]
    fn claim(&mut self, deadline: Deadline) -> Result<(u64, usize, Metadata)> {
        self.deliver_cached();
        let pos = self.endpoint.claim(Role::Receiver, deadline)?;
        let ring = self.endpoint.ring();
        let slot = ring.slot_at(self.endpoint.index(pos));
        let len = slot.len.load(Ordering::Relaxed) as usize;
        let max_message = ring.geometry().max_message;
        if len > max_message as usize {
            let err = Error::corrupt(
                describe(&self.endpoint.shared.name),
                format!(
                    "a slot claims a {len}-byte message, larger than the {max_message}-byte slots"
                ),
            );
            self.finish(pos);
            return Err(err);
        }
        let meta = self.slot_meta(slot);
        Ok((pos, len, meta))
    }

    /// Receives a message in place, without copying it; the slot is released when the
    /// returned guard drops (or when this process dies holding it).
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
    pub fn recv_in_place_deadline(&mut self, deadline: Deadline) -> Result<MailboxSample<'_>> {
        // The copying receive's fast case and short spin: a message known published, or
        // arriving within a hand-off, is taken from the cursor without the general claim.
        let ready = match self.try_claim_cursor() {
            Some(ready) => Some(ready),
            None if self.spin_cursor(deadline) => self.try_claim_cursor(),
            None => None,
        };
        if let Some((pos, len, meta)) = ready {
            self.endpoint.check_intact_root()?;
            return Ok(MailboxSample {
                receiver: self,
                pos,
                len,
                meta,
            });
        }
        let (pos, len, meta) = self.claim(deadline)?;
        Ok(MailboxSample {
            receiver: self,
            pos,
            len,
            meta,
        })
    }

    /// Receives a message in place, waiting as long as needed.
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
    pub fn recv_in_place(&mut self) -> Result<MailboxSample<'_>> {
        self.recv_in_place_deadline(Deadline::Never)
    }

    /// Hands the slot of `pos` back once its message has been taken.
    fn finish(&mut self, pos: u64) {
        let ring = &self.endpoint.link.ring;
        match &mut self.endpoint.flavor {
            Flavor::Cursor { cursor, .. } => ring.cursor_release(cursor),
            Flavor::Sole { next, .. } => {
                ring.release_single(pos);
                *next = pos + 1;
            }
            Flavor::Many | Flavor::Chain => ring.release(pos),
        }
        self.deliver_cached();
    }

    /// What the slot records about its message. A message moved in from the cache carries a
    /// tag instead of its sequence number: it is acknowledged here (its sender learns it was
    /// delivered), and the sender's own number is reported.
    #[inline]
    fn slot_meta(&self, slot: &SlotHeader) -> Metadata {
        let mut sequence = Some(slot.sequence.load(Ordering::Relaxed));
        if let (Some(tag), Some(cache)) = (sequence, &self.endpoint.shared.cache) {
            if tag & CACHED_TAG != 0 {
                sequence = cache.received(tag);
            }
        }
        Metadata {
            sender_pid: Some(slot.sender_pid.load(Ordering::Relaxed)),
            sender_uid: Some(slot.sender_uid.load(Ordering::Relaxed)),
            sequence,
            ..Metadata::default()
        }
    }

    /// Moves messages waiting in the mailbox's cache into the room just made (`cache.rs`).
    #[inline]
    fn deliver_cached(&self) {
        if let Some(cache) = &self.endpoint.shared.cache {
            cache.deliver_pending(&self.endpoint.shared, self.endpoint.participant.pid);
        }
    }
}

/// The message at a receiver's cursor when one is known published (the cached tail or the
/// slot's mark) and its slot claims a plausible length: its bytes, length and metadata.
/// `None` for anything else, which the general path sorts out (a contradicting cursor, after
/// asking the file whether the segment was cut; an oversized length, which it reports and
/// consumes).
#[inline(always)]
fn ready_on_cursor(ring: &Ring, cursor: &mut Cursor) -> Option<(*mut u8, usize, Metadata)> {
    if !ring.cursor_ready_read(cursor) {
        return None;
    }
    let (slot, data) = ring.slot_and_data_at(cursor.index);
    let len = slot.len.load(Ordering::Relaxed) as usize;
    if len > ring.geometry().max_message as usize {
        return None;
    }
    // A cursor ring has no cache (single sender): the slot's sequence is the sender's.
    let meta = Metadata {
        sender_pid: Some(slot.sender_pid.load(Ordering::Relaxed)),
        sender_uid: Some(slot.sender_uid.load(Ordering::Relaxed)),
        sequence: Some(slot.sequence.load(Ordering::Relaxed)),
        ..Metadata::default()
    };
    Some((data, len, meta))
}

/// Replaces `buf`'s contents with the `len` bytes at `data`.
///
/// # Safety
/// - `data` is valid for reads of `len` bytes, which nobody writes meanwhile (a slot this
///   receiver owns).
#[inline]
unsafe fn copy_out(data: *const u8, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve(len);
    // SAFETY: (caller) `data` holds `len` readable bytes; `buf` has capacity for `len` bytes
    // after the reserve, and the copy initialises them before `set_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr(), len);
        buf.set_len(len);
    }
}

impl MessageReceiver for MailboxReceiver {
    #[inline]
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        if let Some(meta) = self.try_recv_cursor(buf) {
            // What was copied came from the file unless a page of it was lost meanwhile.
            self.endpoint.check_intact_root()?;
            return Ok(meta);
        }
        if let Some(meta) = self.try_recv_many(buf)? {
            self.endpoint.check_intact_root()?;
            return Ok(meta);
        }
        // After the many-senders case, so that it pays nothing for the cursor's spin.
        if self.spin_cursor(deadline) {
            if let Some(meta) = self.try_recv_cursor(buf) {
                self.endpoint.check_intact_root()?;
                return Ok(meta);
            }
        }
        self.recv_general(buf, deadline)
    }
}

impl MailboxReceiver {
    /// The cursor path's fast case: a message known published from the cached tail, of a
    /// plausible length. `None` (having done nothing) sends the caller to the general path.
    /// The caller checks the segment is intact once it returns a message.
    #[inline(always)]
    fn try_recv_cursor(&mut self, buf: &mut Vec<u8>) -> Option<Metadata> {
        let Flavor::Cursor { cursor, .. } = &mut self.endpoint.flavor else {
            return None;
        };
        let ring = &self.endpoint.link.ring;
        let (data, len, meta) = ready_on_cursor(ring, cursor)?;
        // SAFETY: the message at `cursor.pos` is published and ours until we release it;
        // len <= max_message (checked) keeps the source inside the slot's data area.
        unsafe { copy_out(data, len, buf) };
        ring.cursor_release(cursor);
        Some(meta)
    }

    /// The in-place receive's fast case on the cursor path: (position, length, metadata) of
    /// the message at the cursor when one is known published, of a plausible length. `None`
    /// (having done nothing) sends the caller to the general claim.
    #[inline(always)]
    fn try_claim_cursor(&mut self) -> Option<(u64, usize, Metadata)> {
        let Flavor::Cursor { cursor, .. } = &mut self.endpoint.flavor else {
            return None;
        };
        let (_, len, meta) = ready_on_cursor(&self.endpoint.link.ring, cursor)?;
        Some((cursor.pos, len, meta))
    }

    /// The cursor path's short wait ([`spin_for_handoff`]) on the next slot's published
    /// mark, so that a message arriving within a hand-off is taken by the straight-line fast
    /// case above rather than through the general wait and claim, which cost the 64 B round
    /// trip about a tenth. True when a message is ready.
    #[inline(never)]
    fn spin_cursor(&mut self, deadline: Deadline) -> bool {
        let Flavor::Cursor { cursor, .. } = &mut self.endpoint.flavor else {
            return false;
        };
        let ring = &self.endpoint.link.ring;
        spin_for_handoff(self.endpoint.shared.wait, deadline, || {
            ring.cursor_ready_read(cursor)
        })
    }

    /// The many-receivers path's fast case: a message claimed at once (by compare-and-swap).
    /// `None` (having done nothing) sends the caller to the general path. The caller checks
    /// the segment is intact once it returns a message.
    #[inline(always)]
    fn try_recv_many(&mut self, buf: &mut Vec<u8>) -> Result<Option<Metadata>> {
        if !matches!(self.endpoint.flavor, Flavor::Many) {
            return Ok(None);
        }
        let ring = &self.endpoint.link.ring;
        // Anything but a claim at once goes to the general path.
        let Some(spot) = ring.claim_read_fast(self.endpoint.participant.pid) else {
            return Ok(None);
        };
        let (slot, data) = ring.slot_and_data_at(spot.index);
        let len = slot.len.load(Ordering::Relaxed) as usize;
        if len > ring.geometry().max_message as usize {
            return Err(self.oversized(spot.pos, len));
        }
        let meta = self.slot_meta(slot);
        // SAFETY: we own the slot (READING by us); len <= max_message keeps the source inside
        // the slot's data area.
        unsafe { copy_out(data, len, buf) };
        ring.release_spot(spot);
        // Room was just made: a message waiting in the cache goes in now.
        self.deliver_cached();
        Ok(Some(meta))
    }

    /// Consumes the message of `pos`, whose slot claims `len` bytes, more than a slot holds,
    /// and says so.
    #[cold]
    #[inline(never)]
    fn oversized(&mut self, pos: u64, len: usize) -> Error {
        self.finish(pos);
        let max_message = self.endpoint.ring().geometry().max_message;
        Error::corrupt(
            describe(&self.endpoint.shared.name),
            format!("a slot claims a {len}-byte message, larger than the {max_message}-byte slots"),
        )
    }

    // Out of line, so that the fast case stays small (fewer registers saved per call).
    #[inline(never)]
    fn recv_general(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        let (pos, len, meta) = self.claim(deadline)?;
        let data = self.endpoint.ring().data_at(self.endpoint.index(pos));
        // SAFETY: we own the slot (READING by us); len <= max_message was checked in claim, so
        // the source is in the slot's data area.
        unsafe { copy_out(data, len, buf) };
        self.finish(pos);
        self.endpoint.check_intact_fast()?;
        Ok(meta)
    }
}

/// A message read in place from a mailbox; its slot goes back to the mailbox when this
/// drops. (The topic's counterpart is [`TopicSample`](crate::shm::topic::TopicSample).)
pub struct MailboxSample<'a> {
    receiver: &'a mut MailboxReceiver,
    pos: u64,
    len: usize,
    meta: Metadata,
}

impl fmt::Debug for MailboxSample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSample")
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl MailboxSample<'_> {
    /// What the mailbox recorded about the message.
    pub fn meta(&self) -> Metadata {
        self.meta
    }

    /// The message's position in the mailbox's ring: a counter that never wraps, unique
    /// among the messages of a bounded or rendezvous mailbox's file (a removed and
    /// re-created mailbox starts again at 0; each chained ring of an unbounded mailbox
    /// counts on its own: see [`mailbox_position`](Self::mailbox_position) for a number
    /// that grows through the whole mailbox). It is stable while the message waits: in a
    /// single-receiver mailbox, a receiver that dies holding it leaves it to the next
    /// receiver at the same position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The message's position in the whole mailbox: larger than that of every message
    /// received from the mailbox before it, and stable while the message waits (in a
    /// single-receiver mailbox, bounded or unbounded, a receiver that dies holding it leaves
    /// it to the next receiver at the same value). `ipckit-bridge` uses it to recognise a
    /// message it is given again.
    ///
    /// For a bounded or rendezvous mailbox it is [`position`](Self::position). For an
    /// unbounded one it is `ring << 32 | position`, `ring` the index of the chained ring
    /// that holds the message (0 for the mailbox's own, counting up along the chain, at
    /// most `u32::MAX`): rings are drained in order, and a sender seals a ring that has
    /// counted `2^32` positions and goes on in a new one, so a ring's positions stay below
    /// `2^32` even when the receivers keep up with it lap after lap.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a message of an unbounded mailbox at a position of `2^32`
    /// or more in its ring, which a sender of this version never publishes (an older one,
    /// which did not seal a ring there, could): it has no such number.
    pub fn mailbox_position(&self) -> Result<u64> {
        let endpoint = &self.receiver.endpoint;
        if !endpoint.shared.unbounded() {
            return Ok(self.pos);
        }
        let index = endpoint.link.index;
        chain::mailbox_position(index, self.pos).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: the message at position {} of chained ring {index} is past the {} \
                 positions a ring may count for its mailbox position (sent by an older ipckit?)",
                describe(&endpoint.shared.name),
                self.pos,
                chain::RING_POSITIONS
            ))
        })
    }
}

impl MailboxSample<'_> {
    /// The message's bytes: we own the slot (claimed for reading), and len <= max_message
    /// was validated when it was claimed.
    fn bytes(&self) -> (*mut u8, usize) {
        let endpoint = &self.receiver.endpoint;
        (endpoint.ring().data_at(endpoint.index(self.pos)), self.len)
    }
}

slot_bytes!(MailboxSample);

impl Drop for MailboxSample<'_> {
    fn drop(&mut self) {
        self.receiver.finish(self.pos);
    }
}
