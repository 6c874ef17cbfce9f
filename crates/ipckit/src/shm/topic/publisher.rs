//! The publishing side of a topic: [`Publisher`] and its in-place [`TopicLoan`].

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use super::{describe, Fast, Shared, MAX_PUBLISHERS};
use crate::error::{Error, Result};
use crate::link::{check_size, Deadline, MessageSender};
use crate::shm::layout::slot_bytes;
use crate::shm::liveness::{self, Held, Locks, Table};
use crate::shm::participants;
use crate::shm::seqlock;
use crate::shm::wait::WaitWord;
use crate::shm::wait::{wait_for, wake_sleepers, Attempt};
use crate::sync::primitive::asymmetric::{light_barrier, register_asymmetric};
use crate::sync::primitive::{AtomicU32, AtomicU64, Ordering};

/// Publishes to a topic. Implements [`MessageSender`]: `try_send` fails with
/// [`Error::Full`](crate::Error::Full) only under backpressure.
pub struct Publisher {
    shared: Arc<Shared>,
    /// The slots, poison flag and policy, copied at attach for the fast paths.
    fast: Fast,
    /// Our entry in the publisher table.
    index: usize,
    pid: u32,
    /// Our entry's liveness lock, released (by dropping it) after the entry.
    _lock: Option<Held>,
    uid: u32,
    /// Cached lower bound of the slowest subscriber's cursor.
    slowest: u64,
    /// In a single-publisher topic, the token that makes us its one publisher.
    token: Option<SoleToken>,
    /// The next message's sequence number and slot index. With the token nobody else moves
    /// `write_pos`, so this is it (and no division per message); under the publish lock it
    /// is a guess, right while no other publisher came between, checked against
    /// `write_pos`.
    next: (u64, usize),
    /// With the token, the header's `lost` (nobody else changes it either).
    lost: u64,
    /// Whether this process is registered for `membarrier` (what `register_asymmetric`
    /// said), so the publish path loads nothing to choose its barrier.
    registered: bool,
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
        // The token first: its holder must be found in the table while it holds it.
        if let Some(token) = self.token.take() {
            token.release(&self.shared);
        }
        participants::leave(&self.shared.header().publishers[self.index], self.pid);
    }
}

/// The right to be a single-publisher topic's one publisher: the header's `sole_publisher`
/// word holds our pid, and we hold the token's liveness lock (taken before the word is
/// claimed, dropped after it is released), so a second publisher sees a live holder by the
/// kernel's lock, right across PID namespaces.
struct SoleToken {
    pid: u32,
    _lock: Option<Held>,
}

impl SoleToken {
    /// Takes the token of the single-publisher topic `shared` for `pid`.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], naming the holder's pid, while another live process holds it,
    /// or while its lock stays held for [`liveness::TOKEN_LINGER`] after its holder is gone
    /// (see [`liveness::acquire_token`]).
    fn acquire(shared: &Shared, pid: u32) -> Result<SoleToken> {
        let token = format!("the single publisher of {}", describe(&shared.name));
        let locks = Locks {
            probe: shared._segment.file_fd(),
            table: Table::Tokens,
        };
        let lock = liveness::acquire_token(
            &locks,
            0,
            &shared.header().sole_publisher,
            pid,
            |holder| shared.publisher_alive(holder),
            |holder| liveness::proc_pid_alive(&shared.header().publishers, holder),
        )
        .map_err(|why| liveness::token_taken(&token, why))?;
        Ok(SoleToken { pid, _lock: lock })
    }

    /// Gives the token back (the lock goes with `self`, after the word).
    fn release(self, shared: &Shared) {
        let _ = shared.header().sole_publisher.compare_exchange(
            self.pid,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
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
    /// `None` for a single-publisher topic's publisher, which takes no lock.
    lock: Option<NonNull<AtomicU32>>,
}

// SAFETY: the lock word is an atomic in shared memory, usable from any thread.
unsafe impl Send for PublishGuard {}
// SAFETY: as above.
unsafe impl Sync for PublishGuard {}

impl PublishGuard {
    fn new(lock: &AtomicU32) -> PublishGuard {
        PublishGuard {
            lock: Some(NonNull::from(lock)),
        }
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        let Some(lock) = self.lock else { return };
        // SAFETY: the mapping outlives the guard (see the type's documentation).
        let lock = unsafe { lock.as_ref() };
        // Only the holder releases: nobody takes the lock from a live holder, so a plain
        // store is enough. SYNC: Release pairs with the next holder's Acquire CAS.
        lock.store(0, Ordering::Release);
    }
}

impl Publisher {
    /// The topic (for `watch.rs`: WaitSet, async).
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A publisher of the topic `shared`, entered in its publisher table.
    pub(super) fn new(shared: &Arc<Shared>) -> Result<Publisher> {
        let table = &shared.header().publishers;
        let limit = format!("{MAX_PUBLISHERS} attached publishers");
        let (index, pid, lock) = participants::join(
            table,
            &describe(&shared.name),
            &limit,
            &shared.locks(Table::Publishers),
        )?;
        table[index].role.store(1, Ordering::Release);
        let token = if shared.single_publisher {
            match SoleToken::acquire(shared, pid) {
                Ok(token) => {
                    // Before our first plain `write_pos` store, so that a sleeping
                    // subscriber's membarrier reaches us.
                    register_asymmetric();
                    Some(token)
                }
                Err(err) => {
                    participants::leave(&table[index], pid);
                    drop(lock);
                    return Err(err);
                }
            }
        } else {
            None
        };
        let registered = token.is_some() && register_asymmetric();
        Ok(Publisher {
            shared: Arc::clone(shared),
            fast: shared.fast,
            index,
            pid,
            _lock: lock,
            uid: rustix::process::getuid().as_raw(),
            slowest: 0,
            // Read after the token is ours (its AcqRel claim): where the last holder stopped.
            next: next_of(shared, shared.header().write_pos.0.load(Ordering::Acquire)),
            lost: shared.header().lost.load(Ordering::Acquire),
            token,
            registered,
        })
    }

    fn lock(&self, deadline: Deadline) -> Result<PublishGuard> {
        self.shared.check_intact(false)?;
        if self.token.is_some() {
            // The only publisher: nobody to exclude. A predecessor killed mid-write left
            // write_pos where it was, so we write its sequence number again.
            return Ok(PublishGuard { lock: None });
        }
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
                let stale =
                    check && holder != 0 && holder != pid && !self.shared.publisher_alive(holder);
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
    ///
    /// The cached lower bound of the slowest cursor answers without reading the table until
    /// it says the ring is full; then one scan refreshes it (only the entries ever taken),
    /// and only if that finds no room does the wait machinery start.
    #[inline]
    fn wait_for_room(&mut self, seq: u64, deadline: Deadline) -> Result<()> {
        if self.has_room(seq) {
            return Ok(());
        }
        self.wait_for_room_slow(seq, deadline)
    }

    #[cold]
    fn wait_for_room_slow(&mut self, seq: u64, deadline: Deadline) -> Result<()> {
        let shared = &*self.shared;
        let capacity = shared.capacity as u64;
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

    /// Takes the lock, waits for room, and stamps the next slot as being written: its
    /// sequence number and slot index.
    fn begin(&mut self, deadline: Deadline) -> Result<(u64, usize, PublishGuard)> {
        let guard = self.lock(deadline)?;
        let (seq, index) = if guard.lock.is_none() {
            self.next
        } else {
            next_of(
                &self.shared,
                self.shared.header().write_pos.0.load(Ordering::Acquire),
            )
        };
        self.wait_for_room(seq, deadline)?;
        seqlock::begin_write(&self.shared.slots.slot_at(index).stamp, seq);
        Ok((seq, index, guard))
    }

    /// Completes message `seq` (in slot `index`) of `len` bytes and releases the lock.
    fn finish(&mut self, seq: u64, index: usize, len: usize, guard: PublishGuard) {
        let shared = &*self.shared;
        let slot = shared.slots.slot_at(index);
        slot.len.store(len as u32, Ordering::Relaxed);
        slot.sender_pid.store(self.pid, Ordering::Relaxed);
        slot.sender_uid.store(self.uid, Ordering::Relaxed);
        let sole = guard.lock.is_none();
        // Under the lock (or the token), the header's count is the last holder's.
        let lost = if sole {
            self.lost
        } else {
            shared.header().lost.load(Ordering::Relaxed)
        };
        slot.lost.store(lost, Ordering::Relaxed);
        // The next publish's index, kept by the token's holder (and a lock holder's guess).
        self.next = (seq + 1, self.fast.next_index(index));
        if sole {
            let header = shared.header();
            complete_sole(
                &slot.stamp,
                &header.write_pos.0,
                &header.new_message.0,
                seq,
                self.registered,
            );
            return;
        }
        seqlock::end_write(&slot.stamp, seq);
        // SYNC: Release pairs with subscribers' Acquire load of write_pos; SeqCst with the
        // fence of a sleeping subscriber (see `wake_sleepers`).
        shared.header().write_pos.0.swap(seq + 1, Ordering::SeqCst);
        drop(guard);
        wake_sleepers(&shared.header().new_message.0);
    }

    /// Declares `count` messages lost just before the next one published: every subscriber
    /// that receives that message is told [`Metadata::missed`](crate::Metadata::missed)
    /// `count` (more if it also fell behind itself), and its
    /// [`Metadata::sequence`](crate::Metadata::sequence) is `count` further on, exactly as if
    /// `count` messages had been published and overrun. A bridge calls this when its own
    /// subscriber fell behind on another host, or messages were lost on the way, so that
    /// subscribers here see the same gap as those there.
    ///
    /// Nothing is written to the ring and nobody is woken: the gap is reported with the next
    /// message, in order with the messages around it (a subscriber that joins after the gap
    /// and before that message does not count it, as it would not count messages published
    /// before it joined). Gaps add up until a message is published. A gap of 0 changes
    /// nothing. Under backpressure a gap never waits for room: it takes no slot.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the topic's total of lost messages would overflow a
    /// `u64`; [`Error::Corrupt`](crate::Error::Corrupt) for a damaged segment.
    #[doc(alias = "gap")]
    pub fn publish_gap(&mut self, count: u64) -> Result<()> {
        self.publish_gap_deadline(count, Deadline::Never)
    }

    /// [`publish_gap`](Self::publish_gap), waiting at most until `deadline` for the publish
    /// lock (another publisher writing a message, or holding a loan).
    ///
    /// # Errors
    /// As [`publish_gap`](Self::publish_gap); [`Error::Full`](crate::Error::Full) or
    /// [`Error::Timeout`](crate::Error::Timeout) if the lock stays taken until `deadline`.
    pub fn publish_gap_deadline(&mut self, count: u64, deadline: Deadline) -> Result<()> {
        let guard = self.lock(deadline)?;
        if count == 0 {
            return Ok(());
        }
        let header = self.shared.header();
        let before = if guard.lock.is_none() {
            self.lost
        } else {
            header.lost.load(Ordering::Relaxed)
        };
        let total = before.checked_add(count).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a gap of {count} messages: {} already counts {before} lost, and the total \
                 would not fit in 64 bits",
                describe(&self.shared.name)
            ))
        })?;
        // SYNC: Release pairs with the Acquire load of a joining subscriber, made before it
        // reads `write_pos`; the next holder of the lock (or token) reads it after its
        // Acquire.
        header.lost.store(total, Ordering::Release);
        if guard.lock.is_none() {
            self.lost = total;
        }
        drop(guard);
        self.shared.check_intact(false)
    }

    /// Borrows the next slot to write a message in place; [`TopicLoan::publish`] sends it.
    /// Other publishers wait while a loan is out.
    ///
    /// # Errors
    /// Under backpressure, [`Error::Full`](crate::Error::Full)/[`Error::Timeout`](crate::Error::Timeout) if no room by `deadline`.
    pub fn loan_deadline(&mut self, deadline: Deadline) -> Result<TopicLoan<'_>> {
        let (seq, index, guard) = self.begin(deadline)?;
        Ok(TopicLoan {
            publisher: self,
            seq,
            index,
            guard: Some(guard),
        })
    }

    /// Borrows the next slot, waiting for room as long as needed.
    ///
    /// # Errors
    /// As [`loan_deadline`](Self::loan_deadline), without a deadline.
    pub fn loan(&mut self) -> Result<TopicLoan<'_>> {
        self.loan_deadline(Deadline::Never)
    }
}

/// Completes message `seq` of a single-publisher topic, whose slot's bytes and fields are
/// written: its stamp, then `write_pos`, then the wake. No locked read-modify-write: the
/// only publisher stores `write_pos` plainly and runs the light half of an asymmetric
/// barrier before it looks for sleepers; a subscriber going to sleep pays the heavy half
/// (`wait_for_asymmetric`, or the reactor's registration) after announcing itself, so one of
/// the two always sees the other. (A free function so that the loom model runs this code.)
#[inline(always)]
pub(super) fn complete_sole(
    stamp: &AtomicU64,
    write_pos: &AtomicU64,
    new_message: &WaitWord,
    seq: u64,
    registered: bool,
) {
    seqlock::end_write(stamp, seq);
    // SYNC: Release pairs with subscribers' Acquire load of write_pos (and with a joining
    // subscriber's, after its Acquire load of the header's `lost`).
    write_pos.store(seq + 1, Ordering::Release);
    // SYNC: with the waiter's announce and `heavy_barrier` (Dekker, asymmetric).
    light_barrier(registered);
    wake_sleepers(new_message);
}

/// Completes message `seq` of a topic with the publish lock, whose slot's bytes and fields
/// are written by the lock's holder: its stamp, then `write_pos` (a SeqCst swap: subscribers
/// and waiting publishers sleep through the symmetric `wait_for`), then the lock's release,
/// then the wake (one load when nobody sleeps). (A free function so that the loom model runs
/// this code.)
#[inline(always)]
pub(super) fn complete_locked(
    stamp: &AtomicU64,
    write_pos: &AtomicU64,
    lock: &AtomicU32,
    new_message: &WaitWord,
    seq: u64,
) {
    seqlock::end_write(stamp, seq);
    // SYNC: Release pairs with subscribers' Acquire load of write_pos; SeqCst with the
    // fence of a sleeping subscriber (see `wake_sleepers`).
    write_pos.swap(seq + 1, Ordering::SeqCst);
    // SYNC: as in `PublishGuard::drop`: Release pairs with the next holder's Acquire CAS.
    lock.store(0, Ordering::Release);
    wake_sleepers(new_message);
}

impl MessageSender for Publisher {
    #[inline]
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        if self.try_send_sole(msg) || self.try_send_locked(msg) {
            // Sent: report a segment cut meanwhile (what was written went to zero pages).
            if self.fast.poisoned() {
                return self.poisoned();
            }
            return Ok(());
        }
        self.send_general(msg, deadline)
    }

    fn max_message_size(&self) -> usize {
        self.shared.max_message as usize
    }
}

impl Publisher {
    /// The single publisher's fast case: the token held, a message that fits, and room known
    /// (overrun, or the cached slowest cursor, refreshed by one scan when it runs out).
    /// Returns false (having written nothing) when the general path must decide: it applies
    /// the policy and reports errors. The caller checks the segment is intact after true.
    #[inline(always)]
    fn try_send_sole(&mut self, msg: &[u8]) -> bool {
        if self.token.is_none() || msg.len() > self.fast.max_message as usize {
            return false;
        }
        let (seq, index) = self.next;
        if !self.has_room(seq) {
            return false;
        }
        let fast = self.fast;
        let (slot, data) = fast.slots.slot_and_data_at(index);
        seqlock::begin_write(&slot.stamp, seq);
        // SAFETY: we hold the token (the only publisher) and stamped the slot of `seq` as
        // being written; msg.len() <= max_message, the size of the slot's data area.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), data, msg.len()) };
        slot.len.store(msg.len() as u32, Ordering::Relaxed);
        slot.sender_pid.store(self.pid, Ordering::Relaxed);
        slot.sender_uid.store(self.uid, Ordering::Relaxed);
        slot.lost.store(self.lost, Ordering::Relaxed);
        self.next = (seq + 1, fast.next_index(index));
        let header = fast.slots.header();
        complete_sole(
            &slot.stamp,
            &header.write_pos.0,
            &header.new_message.0,
            seq,
            self.registered,
        );
        true
    }

    /// The publish lock's fast case: the lock free at once (one compare-and-swap), a message
    /// that fits, room known. Returns false (having written nothing, the lock released)
    /// when the general path must decide. The caller checks the segment is intact after true.
    #[inline(always)]
    fn try_send_locked(&mut self, msg: &[u8]) -> bool {
        if self.token.is_some() || msg.len() > self.fast.max_message as usize {
            return false;
        }
        let fast = self.fast;
        let header = fast.slots.header();
        let lock = &header.publish_lock.0;
        // SYNC: Acquire pairs with the last holder's Release store of 0 (`PublishGuard`).
        if lock
            .compare_exchange(0, self.pid, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let seq = header.write_pos.0.load(Ordering::Acquire);
        // Usually where our last publish left it: then the index is known.
        let index = if seq == self.next.0 {
            self.next.1
        } else {
            fast.index_of(seq)
        };
        if !self.has_room(seq) {
            // SYNC: as in `PublishGuard::drop`.
            lock.store(0, Ordering::Release);
            return false;
        }
        let (slot, data) = fast.slots.slot_and_data_at(index);
        seqlock::begin_write(&slot.stamp, seq);
        // SAFETY: we hold the publish lock and stamped the slot of `seq` as being written;
        // msg.len() <= max_message, the size of the slot's data area.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), data, msg.len()) };
        slot.len.store(msg.len() as u32, Ordering::Relaxed);
        slot.sender_pid.store(self.pid, Ordering::Relaxed);
        slot.sender_uid.store(self.uid, Ordering::Relaxed);
        // Under the lock, the header's count is the last holder's.
        slot.lost
            .store(header.lost.load(Ordering::Relaxed), Ordering::Relaxed);
        self.next = (seq + 1, fast.next_index(index));
        complete_locked(
            &slot.stamp,
            &header.write_pos.0,
            lock,
            &header.new_message.0,
            seq,
        );
        true
    }

    /// Whether slot `seq` is free under the policy without waiting: always under overrun;
    /// under backpressure by the cached lower bound of the slowest cursor, refreshed by one
    /// scan of the table (no liveness check: that is the blocked path's) when it runs out.
    #[inline(always)]
    fn has_room(&mut self, seq: u64) -> bool {
        let capacity = self.fast.capacity as u64;
        if self.fast.overrun || seq < self.slowest.saturating_add(capacity) {
            return true;
        }
        self.refresh_slowest(seq);
        seq < self.slowest.saturating_add(capacity)
    }

    /// Re-reads the slowest cursor (no subscriber: nobody to wait for).
    #[inline(never)]
    fn refresh_slowest(&mut self, seq: u64) {
        self.slowest = self.shared.slowest_cursor(false).unwrap_or(seq);
    }

    /// The error for a poisoned segment, built out of the fast path's way.
    #[cold]
    #[inline(never)]
    fn poisoned(&self) -> Result<()> {
        self.shared.check_intact(false)
    }

    /// Everything the fast cases leave: a message too large, a contended lock, a full ring
    /// (the policy: wait, fail or time out), a poisoned segment.
    #[inline(never)]
    fn send_general(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        check_size(msg.len(), self.shared.max_message as usize)?;
        let (seq, index, guard) = self.begin(deadline)?;
        // SAFETY: we hold the publish lock (or the token) and stamped the slot of `seq` as
        // being written; msg.len() <= max_message, the size of the slot's data area.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.shared.slots.data_at(index), msg.len())
        };
        self.finish(seq, index, msg.len(), guard);
        self.shared.check_intact(false)
    }
}

/// A slot borrowed for writing a message in place. Dropping it unpublished cancels it (the
/// sequence number is reused by the next message).
pub struct TopicLoan<'a> {
    publisher: &'a mut Publisher,
    seq: u64,
    index: usize,
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
    /// [`Error::MessageTooLarge`](crate::Error::MessageTooLarge) if `len` exceeds the slot (the loan is cancelled).
    pub fn publish(mut self, len: usize) -> Result<()> {
        check_size(len, self.publisher.shared.max_message as usize)?;
        let guard = self.guard.take().expect("a loan is published once");
        self.publisher.finish(self.seq, self.index, len, guard);
        self.publisher.shared.check_intact(false)
    }
}

impl TopicLoan<'_> {
    /// The slot's whole data area. We hold the publish lock and the slot is stamped as
    /// being written by us: nobody else writes it until we publish.
    fn bytes(&self) -> (*mut u8, usize) {
        let shared = &self.publisher.shared;
        (
            shared.slots.data_at(self.index),
            shared.max_message as usize,
        )
    }
}

slot_bytes!(mut TopicLoan);

/// Message `seq`'s sequence number and slot index (`seq % capacity`, by mask when it can).
fn next_of(shared: &Shared, seq: u64) -> (u64, usize) {
    (seq, shared.fast.index_of(seq))
}
