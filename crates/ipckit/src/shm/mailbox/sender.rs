//! The sending side of a mailbox: [`MailboxSender`] and its in-place [`MailboxLoan`].

use std::fmt;
use std::sync::Arc;

use super::cache::{CacheState, Ticket};
use super::endpoint::{Endpoint, Flavor};
use super::participants::Role;
use super::Shared;
use crate::error::{Error, Result};
use crate::link::{check_size, Deadline, MessageSender, WhenFull};
use crate::shm::layout::slot_bytes;
use crate::shm::named::setters;
use crate::shm::ring::{
    Cursor, Ring, SlotHeader, SourceEntry, FLAG_RENDEZVOUS, FLAG_SINGLE_RECEIVER,
};
use crate::shm::wait::wait_for;
use crate::sync::primitive::Ordering;

/// Sends into a mailbox. Implements [`MessageSender`].
pub struct MailboxSender {
    endpoint: Endpoint,
    // Single sender *and* single receiver: positions below this are known free (the
    // receiver's head, read now and then, plus the capacity), so the fast path reads
    // nothing the receiver writes.
    free_until: u64,
    uid: u32,
    sequence: u64,
    when_full: WhenFull,
    /// The message this sender last cached in the mailbox (`cache.rs`), if any.
    cached: Option<Ticket>,
}

impl fmt::Debug for MailboxSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSender")
            .field("mailbox", &self.endpoint.shared.name)
            .field("when_full", &self.when_full)
            .field("cached", &self.cached)
            .finish()
    }
}

impl MailboxSender {
    /// The mailbox this endpoint is attached to (for `watch.rs`: WaitSet, async, senders).
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.endpoint.shared
    }

    /// The mailbox this sender sends into.
    pub(super) fn shared_mailbox(&self) -> &Arc<Shared> {
        &self.endpoint.shared
    }

    /// A sender of the mailbox `shared`, entered in its participant table.
    pub(super) fn new(shared: &Arc<Shared>) -> Result<MailboxSender> {
        Ok(MailboxSender {
            endpoint: Endpoint::new(shared, Role::Sender)?,
            free_until: 0,
            uid: rustix::process::getuid().as_raw(),
            sequence: 0,
            when_full: WhenFull::Block,
            cached: None,
        })
    }

    setters! {
        /// Sets what `send` does when the mailbox is full (Mach's four options). `try_send`
        /// and `send_timeout` keep their own meaning.
        when_full(policy: WhenFull) |s| s.when_full = policy;
    }

    /// Formerly bounded the sender's heap overflow cache; now a sender caches one message at a
    /// time, in the mailbox itself, and this does nothing.
    #[deprecated(
        since = "0.3.0",
        note = "a sender caches one message at a time, in the mailbox (WhenFull::Cache)"
    )]
    pub fn cache_limit(self, _messages: usize) -> Self {
        self
    }

    /// What became of the message this sender last cached: [`CacheState::Pending`] while it
    /// waits for room, [`CacheState::Delivered`] once it is in the mailbox (whoever moved it:
    /// this sender, or a receiver that made room).
    pub fn cache_state(&self) -> CacheState {
        match (self.cached, &self.endpoint.shared.cache) {
            (Some(ticket), Some(cache)) => cache.state(ticket),
            _ => CacheState::Empty,
        }
    }

    /// Messages of this sender waiting in the mailbox's cache: 0 or 1.
    pub fn cached(&self) -> usize {
        usize::from(self.cache_state() == CacheState::Pending)
    }

    /// Moves this sender's cached message into the mailbox if it is still waiting, waiting
    /// for room until `deadline`.
    ///
    /// # Errors
    /// [`Error::Full`]/[`Error::Timeout`] if it is still cached at the deadline.
    pub fn flush_deadline(&mut self, deadline: Deadline) -> Result<()> {
        let (Some(ticket), Some(cache)) = (self.cached, &self.endpoint.shared.cache) else {
            return Ok(());
        };
        let shared = &*self.endpoint.shared;
        let pid = self.endpoint.participant.pid;
        wait_for(
            shared.wait,
            &shared.ring().header().not_full.0,
            deadline,
            deadline.send_expired(),
            |_| {
                Ok(if cache.move_own(shared, ticket, pid)? {
                    Ok(())
                } else {
                    Err(false)
                })
            },
        )
    }

    /// Moves this sender's cached message into the mailbox, waiting for room as long as
    /// needed.
    ///
    /// # Errors
    /// As [`flush_deadline`](Self::flush_deadline), without a deadline: an error other than
    /// waiting, such as [`Error::Corrupt`].
    pub fn flush(&mut self) -> Result<()> {
        self.flush_deadline(Deadline::Never)
    }

    /// Borrows a free slot to write a message in place; [`MailboxLoan::publish`] sends it.
    ///
    /// # Errors
    /// [`Error::Full`]/[`Error::Timeout`] if no slot frees up before `deadline`.
    pub fn loan_deadline(&mut self, deadline: Deadline) -> Result<MailboxLoan<'_>> {
        if self.cached.is_some() {
            self.flush_deadline(deadline)?;
        }
        let pos = match self.try_loan_cursor() {
            Some(pos) => pos,
            None => self.claim(deadline)?,
        };
        Ok(MailboxLoan {
            sender: self,
            pos: Some(pos),
        })
    }

    /// Borrows a free slot, waiting for one as long as needed.
    ///
    /// # Errors
    /// As [`loan_deadline`](Self::loan_deadline), without a deadline.
    pub fn loan(&mut self) -> Result<MailboxLoan<'_>> {
        self.loan_deadline(Deadline::Never)
    }

    #[inline]
    fn claim(&mut self, deadline: Deadline) -> Result<u64> {
        if let Flavor::Cursor { .. } = self.endpoint.flavor {
            return self.endpoint.claim(Role::Sender, deadline);
        }
        if let Flavor::Sole { next, .. } = self.endpoint.flavor {
            if next < self.free_until {
                return Ok(next);
            }
        }
        let pos = self.endpoint.claim(Role::Sender, deadline)?;
        let shared = &*self.endpoint.shared;
        let geometry = shared.ring().geometry();
        if self.endpoint.is_sole() && geometry.flags & FLAG_SINGLE_RECEIVER != 0 {
            // SYNC: pairs with the release of the slot before the receiver moves the head.
            let head = shared.ring().header().head.0.load(Ordering::Acquire);
            self.free_until = head.saturating_add(geometry.capacity as u64);
        }
        Ok(pos)
    }

    /// Fills in the slot's metadata and publishes it; for a rendezvous mailbox, waits until a
    /// receiver has taken it (and takes it back if none does by `deadline`).
    #[inline]
    fn commit(&mut self, pos: u64, len: usize, deadline: Deadline) -> Result<()> {
        let ring = &self.endpoint.link.ring;
        let slot = ring.slot_at(self.endpoint.index(pos));
        let from = (self.endpoint.participant.pid, self.uid);
        write_metadata(slot, len, from, &mut self.sequence);
        match &mut self.endpoint.flavor {
            Flavor::Cursor { cursor, .. } => {
                ring.cursor_publish(cursor);
                // Never rendezvous (see `uses_cursors`).
                return Ok(());
            }
            Flavor::Sole { next, .. } => {
                ring.publish(pos);
                *next = pos + 1;
                ring.header().tail.0.store(*next, Ordering::Release);
            }
            Flavor::Many | Flavor::Chain => ring.publish(pos),
        }
        if ring.geometry().flags & FLAG_RENDEZVOUS == 0 {
            return Ok(());
        }
        let shared = &*self.endpoint.shared;
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

    #[inline]
    fn send_now(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        let pos = self.claim(deadline)?;
        let data = self.endpoint.ring().data_at(self.endpoint.index(pos));
        // SAFETY: we own the slot of `pos` (WRITING by us) and msg.len() <= max_message
        // (checked by the caller), which is the size of its data area.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), data, msg.len()) };
        self.commit(pos, msg.len(), deadline)?;
        self.endpoint.check_intact_fast()
    }
}

impl MailboxSender {
    /// An idempotent sender's send of message `seq` of the source `entry` (see "Idempotent
    /// senders" in `shm/ring/mod.rs`): the entry names the position in flight before anything
    /// is written, and `committed` moves to `seq + 1` with the message: before it is
    /// published on the slot words (a reclaim then publishes it for us if we die), after it
    /// on a sole sender's ring (the next sender settles it if we die). The caller has
    /// checked the size and that the mailbox is not a rendezvous. `entry` is in the root
    /// ring's table, whichever ring of an unbounded chain the message goes to.
    pub(super) fn send_sourced(
        &mut self,
        entry: &SourceEntry,
        seq: u64,
        msg: &[u8],
        deadline: Deadline,
    ) -> Result<()> {
        if self.cached.is_some() {
            self.flush_deadline(deadline)?;
        }
        let pos = self.claim(deadline)?;
        // On an unbounded mailbox the claim may have moved to a newer ring of the chain: the
        // record names that ring with the position (positions restart in each ring).
        let ring = &self.endpoint.link.ring;
        entry.record_pending(ring.chain_index(), pos, seq);
        let (slot, data) = ring.slot_and_data_at(self.endpoint.index(pos));
        // SAFETY: we own the slot of `pos` (claimed) and msg.len() <= max_message (checked by
        // the caller), the size of its data area.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), data, msg.len()) };
        let from = (self.endpoint.participant.pid, self.uid);
        write_metadata(slot, msg.len(), from, &mut self.sequence);
        // SYNC (each commit below): Release pairs with the Acquire loads of `committed` in
        // `Ring::committed_at` (the bytes above are visible to a reclaimer that publishes
        // them) and in `IdempotentSender::next`.
        match &mut self.endpoint.flavor {
            Flavor::Cursor { cursor, .. } => {
                ring.cursor_publish(cursor);
                entry.committed.store(seq + 1, Ordering::Release);
            }
            Flavor::Sole { next, .. } => {
                ring.publish(pos);
                *next = pos + 1;
                ring.header().tail.0.store(*next, Ordering::Release);
                entry.committed.store(seq + 1, Ordering::Release);
            }
            Flavor::Many | Flavor::Chain => {
                entry.committed.store(seq + 1, Ordering::Release);
                ring.publish(pos);
            }
        }
        self.endpoint.check_intact_fast()
    }

    /// Gives up a claimed position without publishing it. A single sender's claim changed
    /// nothing in the ring, so there is nothing to undo.
    fn cancel(&mut self, pos: u64) {
        if !self.endpoint.is_sole() {
            self.endpoint.ring().release(pos);
        }
    }
}

/// Fills in the metadata of a slot being sent: a message of `len` bytes from `(pid, uid)`,
/// numbered `*sequence`, which moves on. Every flavour's commit writes it before publishing.
#[inline(always)]
fn write_metadata(slot: &SlotHeader, len: usize, (pid, uid): (u32, u32), sequence: &mut u64) {
    slot.len.store(len as u32, Ordering::Relaxed);
    slot.sender_pid.store(pid, Ordering::Relaxed);
    slot.sender_uid.store(uid, Ordering::Relaxed);
    slot.sequence.store(*sequence, Ordering::Relaxed);
    *sequence += 1;
}

/// Fills in the metadata of `slot`, the slot at `cursor`, and publishes it: the cursor path's
/// commit, shared by the copying send and the loan.
#[inline(always)]
fn publish_on_cursor(
    ring: &Ring,
    cursor: &mut Cursor,
    slot: &SlotHeader,
    len: usize,
    from: (u32, u32),
    sequence: &mut u64,
) {
    write_metadata(slot, len, from, sequence);
    ring.cursor_publish(cursor);
}

impl MessageSender for MailboxSender {
    /// Sends one message. For `send` (no deadline) the sender's [`WhenFull`] policy decides
    /// what happens when the mailbox is full.
    #[inline]
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        if self.cached.is_none() && (self.try_send_cursor(msg) || self.try_send_many(msg)) {
            // Sent: report a segment cut meanwhile (what was written went to zero pages).
            return self.endpoint.check_intact_root();
        }
        self.send_general(msg, deadline)
    }

    #[inline]
    fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_deadline(msg, Deadline::Now)
    }

    fn max_message_size(&self) -> usize {
        self.endpoint.shared.ring().geometry().max_message as usize
    }
}

impl MailboxSender {
    /// The cursor path's fast case: a free slot known from the cached head, nothing cached.
    /// Returns false (having done nothing) when the general path must decide: no cursor
    /// flavour, a message too large, or no slot known free (the policy applies then). The
    /// caller checks the segment is intact once it returns true.
    #[inline(always)]
    fn try_send_cursor(&mut self, msg: &[u8]) -> bool {
        let Flavor::Cursor { cursor, .. } = &mut self.endpoint.flavor else {
            return false;
        };
        let ring = &self.endpoint.link.ring;
        // A contradicting cursor goes to the general path too, which asks the file whether
        // the segment was cut before reporting it.
        if msg.len() > ring.geometry().max_message as usize || !ring.cursor_ready_write(cursor) {
            return false;
        }
        let (slot, data) = ring.slot_and_data_at(cursor.index);
        // SAFETY: the slot at `cursor.index` is ours until we publish it (the receiver's
        // head is a lap behind), and msg.len() <= max_message, the size of its data area.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), data, msg.len()) };
        let from = (self.endpoint.participant.pid, self.uid);
        publish_on_cursor(ring, cursor, slot, msg.len(), from, &mut self.sequence);
        true
    }

    /// The loan's fast case on the cursor path: the slot at the cursor, when the cached head
    /// says it is free and nothing waits in the cache. `None` sends the caller to the
    /// general claim.
    #[inline(always)]
    fn try_loan_cursor(&mut self) -> Option<u64> {
        let Flavor::Cursor { cursor, .. } = &mut self.endpoint.flavor else {
            return None;
        };
        (self.cached.is_none() && self.endpoint.link.ring.cursor_ready_write(cursor))
            .then_some(cursor.pos)
    }

    /// Publishes the loaned slot of `pos`, `len` bytes (at most the slot's size), on the
    /// cursor path; false (having done nothing) on any other flavour.
    #[inline(always)]
    fn try_publish_cursor(&mut self, pos: u64, len: usize) -> bool {
        let Flavor::Cursor { cursor, .. } = &mut self.endpoint.flavor else {
            return false;
        };
        // A loan on the cursor path is always the cursor's position, and the loan's borrow of
        // the sender keeps anything else from moving the cursor meanwhile.
        debug_assert_eq!(cursor.pos, pos);
        let ring = &self.endpoint.link.ring;
        let from = (self.endpoint.participant.pid, self.uid);
        let slot = ring.slot_at(cursor.index);
        publish_on_cursor(ring, cursor, slot, len, from, &mut self.sequence);
        true
    }

    /// The many-senders path's fast case: a slot claimed at once (by compare-and-swap), not a
    /// rendezvous. Returns false (having done nothing) when the general path must decide.
    #[inline(always)]
    fn try_send_many(&mut self, msg: &[u8]) -> bool {
        if !matches!(self.endpoint.flavor, Flavor::Many) {
            return false;
        }
        let ring = &self.endpoint.link.ring;
        let geometry = ring.geometry();
        if msg.len() > geometry.max_message as usize || geometry.flags & FLAG_RENDEZVOUS != 0 {
            return false;
        }
        let pid = self.endpoint.participant.pid;
        // Anything but a claim at once goes to the general path.
        let Some(spot) = ring.claim_write_fast(pid) else {
            return false;
        };
        let (slot, data) = ring.slot_and_data_at(spot.index);
        // SAFETY: we own the slot of `pos` (WRITING by us) and msg.len() <= max_message, the
        // size of its data area.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), data, msg.len()) };
        write_metadata(slot, msg.len(), (pid, self.uid), &mut self.sequence);
        ring.publish_spot(spot);
        true
    }

    // Out of line, so that the fast case stays small (fewer registers saved per call).
    #[inline(never)]
    fn send_general(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        check_size(msg.len(), self.max_message_size())?;
        let deadline = match (deadline, self.when_full) {
            (Deadline::Never, WhenFull::Timeout(d)) => Deadline::after(d),
            (Deadline::Never, WhenFull::Fail) => Deadline::Now,
            (Deadline::Never, WhenFull::Cache) => return self.send_cached(msg),
            (d, _) => d,
        };
        if self.cached.is_some() {
            // This sender's messages stay in order: its cached one goes first.
            self.flush_deadline(deadline)?;
        }
        self.send_now(msg, deadline)
    }

    /// `send` under [`WhenFull::Cache`]: into the mailbox if it has room, else into the
    /// mailbox's cache (`cache.rs`), one message per sender at a time.
    fn send_cached(&mut self, msg: &[u8]) -> Result<()> {
        if self.cached.is_some() {
            match self.flush_deadline(Deadline::Now) {
                // The earlier cached message still waits: only one may.
                Err(Error::Full) => return Err(Error::Full),
                other => other?,
            }
        }
        match self.send_now(msg, Deadline::Now) {
            Err(Error::Full) => {}
            other => return other,
        }
        let shared = Arc::clone(&self.endpoint.shared);
        let cache = shared.cache.as_ref().ok_or_else(|| {
            Error::Unsupported(format!(
                "{} has no message cache (a single-sender or rendezvous mailbox, or one created \
                 by an older ipckit or with cache_slots(0)): WhenFull::Cache cannot keep the \
                 message",
                super::describe(&shared.name)
            ))
        })?;
        let me = crate::process::ProcessIdentity::current();
        let ticket = cache.store(msg, me, self.uid, self.sequence)?;
        self.sequence += 1;
        self.cached = Some(ticket);
        // Room may have appeared meanwhile, and nobody else may come to move it.
        cache.deliver_pending(&shared, self.endpoint.participant.pid);
        Ok(())
    }
}

/// A slot borrowed for writing a message in place. Dropping it unpublished cancels it.
pub struct MailboxLoan<'a> {
    sender: &'a mut MailboxSender,
    pos: Option<u64>,
}

impl fmt::Debug for MailboxLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxLoan")
            .field("pos", &self.pos)
            .finish()
    }
}

impl MailboxLoan<'_> {
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
        if self.sender.try_publish_cursor(pos, len) {
            // Published: report a segment cut meanwhile (what was written went to zero pages).
            return self.sender.endpoint.check_intact_root();
        }
        self.sender.commit(pos, len, Deadline::Never)?;
        self.sender.endpoint.check_intact_fast()
    }
}

impl MailboxLoan<'_> {
    /// The slot's whole data area: we own the slot (claimed for writing), and no honest
    /// participant touches it until we publish.
    fn bytes(&self) -> (*mut u8, usize) {
        let pos = self.pos.expect("a live loan has a slot");
        let endpoint = &self.sender.endpoint;
        let ring = endpoint.ring();
        (
            ring.data_at(endpoint.index(pos)),
            ring.geometry().max_message as usize,
        )
    }
}

slot_bytes!(mut MailboxLoan);

impl Drop for MailboxLoan<'_> {
    fn drop(&mut self) {
        if let Some(pos) = self.pos.take() {
            self.sender.cancel(pos);
        }
    }
}
