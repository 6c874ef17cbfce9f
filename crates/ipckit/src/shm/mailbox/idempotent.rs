//! Idempotent senders: exactly-once delivery for a sender that restarts (as Kafka's
//! idempotent producer, with the broker's record kept in the mailbox itself).
//!
//! A sender that numbers its messages and may be killed at any instruction cannot keep its
//! own record of what it delivered: a send into shared memory and a write to a file are two
//! steps, and a kill between them sends the message twice after the restart. So the record
//! lives in the mailbox, in the ring header's table of *sources* (8 entries; the root ring's,
//! for every ring of an unbounded mailbox), committed with the message: a source (a 16-byte id the caller chooses, stable across restarts) owns
//! one entry, whose `committed` word is the next sequence number not yet delivered. The
//! protocol, and why a kill at any point delivers each number exactly once, is in
//! `shm/ring/mod.rs` ("Idempotent senders"). On an unbounded mailbox, whose rings each count
//! positions from 0, a send in flight is named by its ring and position, and the entry's
//! record is read under a stamp so that no reclaim combines two records into a third.
//!
//! An entry belongs to one live process at a time (an OFD lock byte of its own, see
//! `shm/liveness.rs`); a process that dies or lets go leaves the entry, and its history, to
//! the next process with the same id. When all 8 entries are taken and a new source comes,
//! the least recently used entry whose owner is gone is evicted: that source's history is
//! forgotten (it starts again at 0, or at what [`IdempotentSender::start_at`] says).
//!
//! [`IdempotentSender`] is a sender and a source together. A process that carries several
//! sources into one mailbox (a bridge) claims each with [`Mailbox::idempotent_source`] and
//! sends through one [`MailboxSender`] with [`MailboxSender::send_idempotent`]: a
//! single-sender mailbox has one sender, whatever the number of sources.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::sender::MailboxSender;
use super::{chain, describe, Mailbox, Shared};
use crate::error::{Error, Result};
use crate::link::{check_size, Deadline};
use crate::process::{liveness, Liveness};
use crate::shm::liveness::{Held, Locks, Table, SOURCES_MUTEX};
use crate::shm::ring::{SourceEntry, FLAG_RENDEZVOUS, FLAG_SINGLE_SENDER};
use crate::sync::primitive::Ordering;

/// How long claiming a source waits for another process's claim of one to finish (each
/// takes microseconds; only a process stopped in the middle holds the table that long).
const CLAIM_PATIENCE: Duration = Duration::from_secs(5);

/// What an idempotent send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The message is in the mailbox, and its number committed.
    Sent,
    /// The number was already committed (by this sender or by the source's earlier life):
    /// nothing was sent.
    AlreadyDelivered,
}

/// A sender whose messages carry sequence numbers of a *source* and are delivered exactly
/// once, whatever kills it and however often it restarts: made by
/// [`Mailbox::idempotent_sender`].
///
/// A restarted process asks [`next`](Self::next) where to resume and sends from there; a
/// number already committed is not sent again ([`Delivery::AlreadyDelivered`]). Numbers may
/// jump forward (a gap is the caller's business); they never go back.
///
/// ```
/// use ipckit::shm::mailbox::{Delivery, Mailbox};
/// use ipckit::MessageReceiver;
/// # let name = format!("doc-once-{}", std::process::id());
///
/// let mailbox = Mailbox::builder(&name).capacity(16).create()?;
/// let source = *b"orders-feed-0001";
/// let mut tx = mailbox.idempotent_sender(source)?;
/// assert_eq!(tx.next(), 0);
/// assert_eq!(tx.send(0, b"order 0")?, Delivery::Sent);
/// drop(tx);                                       // or the process is killed
///
/// let mut tx = mailbox.idempotent_sender(source)?; // the restarted process
/// assert_eq!(tx.next(), 1);
/// assert_eq!(tx.send(0, b"order 0")?, Delivery::AlreadyDelivered);
/// assert_eq!(tx.send(1, b"order 1")?, Delivery::Sent);
///
/// let mut rx = mailbox.receiver()?;
/// assert_eq!(rx.recv()?.data, b"order 0");
/// assert_eq!(rx.recv()?.data, b"order 1");
/// Mailbox::remove(&name)?;
/// # Ok::<(), ipckit::Error>(())
/// ```
pub struct IdempotentSender {
    // Dropped first: on a single-sender ring, the token goes before the source entry.
    sender: MailboxSender,
    source: IdempotentSource,
}

impl fmt::Debug for IdempotentSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentSender")
            .field("source", &self.source)
            .finish()
    }
}

/// A source of an idempotent sender, owned by this process: its entry in the mailbox's source
/// table, with its committed sequence number. Made by [`Mailbox::idempotent_source`]; send
/// with [`MailboxSender::send_idempotent`] (any sender of the same mailbox). Dropping it lets
/// the entry, and its history, go to the next process with the same id.
pub struct IdempotentSource {
    shared: Arc<Shared>,
    index: usize,
    source: [u8; 16],
    fresh: bool,
    pid: u32,
    /// The entry's liveness lock, released (by dropping it, fields drop in order) last.
    _lock: Held,
}

/// One source in a mailbox's table of idempotent senders, as [`Mailbox::info`] reports it
/// ([`MailboxInfo::sources`](super::MailboxInfo::sources)): which stream it is, who owns it
/// now, and how far its delivery has got. A source outlives its owner: a restarted sender (a
/// bridge's stream after a reconnect) takes it over and resumes at `delivered`.
///
/// Everything here is read from shared memory that any process with write access may have
/// scribbled: the numbers are as found, and serve to inspect, not to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceInfo {
    /// The source's 16-byte id, as its sender chose it ([`IdempotentSender::source`]);
    /// [`id_hex`](Self::id_hex) spells it.
    pub id: [u8; 16],
    /// The pid of the process that owns the source now, `None` when nobody does (its last
    /// owner let it go, or it was just made). A killed owner's pid stays until the next owner
    /// takes the source: see [`owner_alive`](Self::owner_alive).
    pub owner: Option<u32>,
    /// Whether the owner is alive, judged by the source's own liveness lock (an OFD lock on
    /// the mailbox's file, which the kernel drops with its holder: right across PID
    /// namespaces, and a reused pid does not pass for the dead owner). `false` for a source
    /// whose owner died: it waits, with its history, for the next sender with its id (or is
    /// evicted, least recently used first, when a new source needs its entry). Where the
    /// kernel cannot say (no OFD locks), `/proc` is asked about `owner`.
    pub owner_alive: bool,
    /// How many numbered messages were delivered: the next sequence number not yet
    /// delivered (every number below it was delivered exactly once, or declared delivered
    /// with [`IdempotentSource::start_at`]). A restarted sender resumes here.
    pub delivered: u64,
    /// The number of the message being sent and not yet committed, if any. With a live owner
    /// it is a send under way; with a dead one, the message its owner was killed sending,
    /// which the next owner (or, on a single-sender mailbox, the next sender) settles:
    /// delivered if it got into the mailbox, sent again otherwise.
    pub in_flight: Option<u64>,
    /// When the source was last taken or let go, `None` if never recorded: the least recently
    /// used source of a dead owner is the one evicted when the table is full.
    pub last_used: Option<SystemTime>,
    /// Whether the entry was read at one moment. `false` if every read met it being
    /// rewritten (an owner stopped in the middle of recording a send, or a scribbled entry):
    /// the fields above may then mix two records.
    pub consistent: bool,
}

impl SourceInfo {
    /// The id as 32 lowercase hex digits, as `ipckit ls` shows it.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }
}

/// How many times [`sources`] reads an entry that is being rewritten before it reports what
/// it read (a rewrite takes a few stores; only a stopped or scribbled owner outlasts this).
const SNAPSHOT_ATTEMPTS: u32 = 64;

/// The sources in `shared`'s table (the root ring's, for an unbounded mailbox), free entries
/// left out, each read as one snapshot and judged alive by its liveness lock.
pub(super) fn sources(shared: &Shared) -> Vec<SourceInfo> {
    let locks = Locks {
        probe: shared.root._segment.file_fd(),
        table: Table::Sources,
    };
    shared
        .ring()
        .header()
        .sources
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| {
            let record = entry.snapshot(SNAPSHOT_ATTEMPTS);
            if record.id == [0, 0] {
                return None;
            }
            let owner = (record.owner != 0).then_some(record.owner);
            let owner_alive = match locks.held(index) {
                Some(held) => held,
                // No OFD locks: no idempotent sender could have taken one either; `/proc`
                // is the only witness left (blind to a reused pid).
                None => owner.is_some_and(|pid| liveness(pid, None) == Liveness::Alive),
            };
            // A send in flight is one recorded (`pending_pos` set) and not yet committed.
            let in_flight = (record.pending_pos != 0 && record.committed <= record.pending_seq)
                .then_some(record.pending_seq);
            let last_used = match record.last_used {
                0 => None,
                ns => UNIX_EPOCH.checked_add(Duration::from_nanos(ns)),
            };
            Some(SourceInfo {
                id: join(record.id),
                owner,
                owner_alive,
                delivered: record.committed,
                in_flight,
                last_used,
                consistent: record.whole,
            })
        })
        .collect()
}

impl fmt::Debug for IdempotentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentSource")
            .field("mailbox", &self.shared.name)
            .field("source", &hex(&self.source))
            .field("entry", &self.index)
            .field("next", &self.next())
            .finish()
    }
}

impl Mailbox {
    /// An idempotent sender for `source`, a 16-byte id that names the stream across restarts
    /// (a UUID, a host and channel, anything stable and not all zero): a sender endpoint and
    /// the source's entry in the mailbox ([`idempotent_source`](Self::idempotent_source)).
    ///
    /// # Errors
    /// As [`idempotent_source`](Self::idempotent_source) and [`Mailbox::sender`] (for a
    /// single-sender mailbox, [`Error::AlreadyExists`] while another live process is its
    /// sender).
    pub fn idempotent_sender(&self, source: [u8; 16]) -> Result<IdempotentSender> {
        check_source(&self.shared, source)?;
        // The endpoint first: on a single-sender ring its token settles every source's send
        // in flight (`Ring::settle_sources`) before anyone may write.
        let sender = self.sender()?;
        let source = self.idempotent_source(source)?;
        Ok(IdempotentSender { sender, source })
    }

    /// Takes the entry of `source` (a 16-byte id, not all zero) in the mailbox's source table:
    /// made if new; a dead or departed owner's is taken over, after the message that owner
    /// had in flight is settled (on a ring with slot words here; on a single-sender ring by
    /// whoever takes the sender token, before its first write).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an all-zero `source`; [`Error::Unsupported`] for a
    /// rendezvous mailbox, or where the kernel refuses OFD locks;
    /// [`Error::AlreadyExists`] while another live process owns the source;
    /// [`Error::LimitReached`] when every entry of the source table is owned by a live
    /// process; [`Error::Timeout`] if another process stopped in the middle of claiming a
    /// source for 5 s; on an unbounded mailbox, the errors of mapping the chained ring the
    /// last owner's send in flight went to (the source is then not taken).
    pub fn idempotent_source(&self, source: [u8; 16]) -> Result<IdempotentSource> {
        let shared = &self.shared;
        check_source(shared, source)?;
        let probe = shared
            .root
            ._segment
            .file_fd()
            .ok_or_else(|| no_locks(shared))?;
        let locks = Locks {
            probe: Some(probe),
            table: Table::Sources,
        };
        let _mutex = lock_table(shared, &locks)?;
        let table = &shared.ring().header().sources;
        let id = split(source);
        let mut held = None;
        let found = table.iter().position(|entry| {
            entry.id[0].load(Ordering::Acquire) == id[0]
                && entry.id[1].load(Ordering::Acquire) == id[1]
        });
        let (index, fresh) = match found {
            Some(index) => {
                if locks.take(index, &mut held).is_err() {
                    return Err(Error::AlreadyExists {
                        object: format!(
                            "idempotent source {} of {} (owned by pid {})",
                            hex(&source),
                            describe(&shared.name),
                            table[index].owner.load(Ordering::Relaxed)
                        ),
                    });
                }
                (index, false)
            }
            None => {
                // A free entry first, then the least recently used one nobody owns.
                let mut order: Vec<usize> = (0..table.len()).collect();
                order.sort_by_key(|&index| {
                    let entry = &table[index];
                    let used = entry.id[0].load(Ordering::Relaxed) != 0
                        || entry.id[1].load(Ordering::Relaxed) != 0;
                    (used, entry.last_used.load(Ordering::Relaxed))
                });
                let index = order
                    .into_iter()
                    .find(|&index| locks.take(index, &mut held).is_ok())
                    .ok_or_else(|| Error::LimitReached {
                        object: describe(&shared.name),
                        limit: format!("{} idempotent sources owned at once", table.len()),
                        source: std::io::Error::from_raw_os_error(libc::EUSERS),
                    })?;
                (index, true)
            }
        };
        let Some(lock) = held else {
            return Err(no_locks(shared));
        };
        if shared.ring().geometry().flags & FLAG_SINGLE_SENDER == 0 {
            // What the last owner had in flight is settled before anything of ours is
            // recorded (a single sender's is settled by the next holder of its token).
            resolve(shared, index)?;
        }
        let entry = &table[index];
        let pid = std::process::id();
        if fresh {
            // An evicted entry's send in flight, if any, was settled above or by the token:
            // forget it with the rest of that source's history (under the stamp, so that a
            // reclaimer never reads the old record with a number of the new one).
            let stamp = entry.begin_rewrite();
            entry.pending_pos.store(0, Ordering::Release);
            entry.committed.store(0, Ordering::Release);
            entry.pending_seq.store(0, Ordering::Relaxed);
            entry.pending_ring.store(0, Ordering::Relaxed);
            entry.id[0].store(id[0], Ordering::Release);
            entry.id[1].store(id[1], Ordering::Release);
            entry.end_rewrite(stamp);
        }
        entry.owner.store(pid, Ordering::Release);
        entry.last_used.store(now_ns(), Ordering::Relaxed);
        Ok(IdempotentSource {
            shared: Arc::clone(shared),
            index,
            source,
            fresh,
            pid,
            _lock: lock,
        })
    }
}

/// Resolves the send the last owner of entry `index` had in flight, on the ring its record
/// names: the root, or a ring of an unbounded chain. A chained ring that is gone was drained
/// (every slot of it finished, each dead write resolved by a reclaim that read this same
/// record), so there is nothing left to resolve; any other failure to map it is returned
/// with the record kept, since clearing it would let a reclaim drop a committed message.
fn resolve(shared: &Shared, index: usize) -> Result<()> {
    let root = shared.ring();
    let Some(entry) = root.source(index) else {
        return Ok(());
    };
    // SYNC: pairs with the Release store of `pending_pos` in `record_pending`.
    let pending = entry.pending_pos.load(Ordering::Acquire);
    let ring = entry.pending_ring.load(Ordering::Relaxed);
    if pending == 0 || ring == 0 || !shared.unbounded() {
        root.resolve_pending(index);
        return Ok(());
    }
    match chain::ring_at(shared, ring)? {
        Some(link) => link.ring.resolve_pending(index),
        // Only clears: the root is not the record's ring.
        None => root.resolve_pending(index),
    }
    Ok(())
}

/// `InvalidArgument` for the all-zero id, `Unsupported` for a mailbox without idempotent
/// senders.
fn check_source(shared: &Shared, source: [u8; 16]) -> Result<()> {
    if source == [0; 16] {
        return Err(Error::InvalidArgument(
            "an idempotent sender's source id must not be all zero".into(),
        ));
    }
    if shared.ring().geometry().flags & FLAG_RENDEZVOUS != 0 {
        return Err(Error::Unsupported(format!(
            "{} is a rendezvous mailbox: a sender may take back a message it committed, so \
             it has no idempotent senders",
            describe(&shared.name)
        )));
    }
    Ok(())
}

fn no_locks(shared: &Shared) -> Error {
    Error::Unsupported(format!(
        "{}: idempotent senders need OFD locks on the mailbox's file, which are unavailable",
        describe(&shared.name)
    ))
}

/// Takes the byte that serialises claims of source entries, waiting up to
/// [`CLAIM_PATIENCE`] for another claimer (the kernel frees it if that one dies).
fn lock_table(shared: &Shared, locks: &Locks<'_>) -> Result<Held> {
    let probe = locks.probe.ok_or_else(|| no_locks(shared))?;
    let at = crate::shm::liveness::offset(Table::Sources, SOURCES_MUTEX);
    let start = Instant::now();
    loop {
        match Held::take(probe, at) {
            Ok(Some(held)) => return Ok(held),
            Ok(None) if start.elapsed() < CLAIM_PATIENCE => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Ok(None) => return Err(Error::Timeout),
            Err(source) => {
                return Err(Error::Os {
                    op: "fcntl(F_OFD_SETLK)",
                    object: describe(&shared.name),
                    source,
                })
            }
        }
    }
}

fn split(source: [u8; 16]) -> [u64; 2] {
    let (low, high) = source.split_at(8);
    [
        u64::from_le_bytes(low.try_into().expect("8 bytes")),
        u64::from_le_bytes(high.try_into().expect("8 bytes")),
    ]
}

/// The inverse of [`split`].
fn join(id: [u64; 2]) -> [u8; 16] {
    let mut source = [0; 16];
    source[..8].copy_from_slice(&id[0].to_le_bytes());
    source[8..].copy_from_slice(&id[1].to_le_bytes());
    source
}

fn hex(source: &[u8; 16]) -> String {
    source.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

impl IdempotentSource {
    pub(super) fn entry(&self) -> &SourceEntry {
        &self.shared.ring().header().sources[self.index]
    }

    /// Whether this source belongs to the mailbox `shared`.
    pub(super) fn is_of(&self, shared: &Arc<Shared>) -> bool {
        Arc::ptr_eq(&self.shared, shared)
    }

    /// The source id.
    pub fn source(&self) -> [u8; 16] {
        self.source
    }

    /// The next sequence number not yet delivered: every number below it was delivered
    /// exactly once. A restarted sender resumes here. (On a single-sender mailbox, a message
    /// its dead sender published but had not committed counts once a sender has taken the
    /// token: [`MailboxSender::send_idempotent`] asks again.)
    pub fn next(&self) -> u64 {
        // SYNC: pairs with the Release store of the commit (ours, or a settled predecessor's).
        self.entry().committed.load(Ordering::Acquire)
    }

    /// Whether message `seq` was delivered (`seq < next()`).
    pub fn is_delivered(&self, seq: u64) -> bool {
        seq < self.next()
    }

    /// Whether the source's entry was made for this owner (a new source, or one whose
    /// history was evicted): a caller migrating from a record of its own passes it to
    /// [`start_at`](Self::start_at).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Declares every number below `seq` delivered, so that [`next`](Self::next) is at least
    /// `seq`: for a stream that starts elsewhere than 0, or a record kept before the mailbox
    /// kept one. Never moves `next` back.
    pub fn start_at(&mut self, seq: u64) {
        let entry = self.entry();
        if seq > entry.committed.load(Ordering::Acquire) {
            // SYNC: Release pairs with the Acquire loads of `committed` (reclaim, next).
            entry.committed.store(seq, Ordering::Release);
        }
    }
}

impl Drop for IdempotentSource {
    fn drop(&mut self) {
        let entry = self.entry();
        let _ = entry
            .owner
            .compare_exchange(self.pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        entry.last_used.store(now_ns(), Ordering::Relaxed);
    }
}

impl MailboxSender {
    /// Sends message `seq` of `source` unless it was already delivered, waiting for room
    /// until `deadline`: exactly once, whatever kills this process (see
    /// [`IdempotentSender`]). `source` must be of this sender's mailbox.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a source of another mailbox or `seq == u64::MAX`;
    /// [`Error::MessageTooLarge`]; [`Error::Full`]/[`Error::Timeout`] at the deadline (not
    /// sent, not committed); [`Error::Corrupt`] for a scribbled or truncated mailbox.
    pub fn send_idempotent(
        &mut self,
        source: &IdempotentSource,
        seq: u64,
        msg: &[u8],
        deadline: Deadline,
    ) -> Result<Delivery> {
        if !source.is_of(self.shared_mailbox()) {
            return Err(Error::InvalidArgument(format!(
                "idempotent source {} belongs to {}, not to this sender's {}",
                hex(&source.source),
                describe(&source.shared.name),
                describe(&self.shared_mailbox().name)
            )));
        }
        if source.is_delivered(seq) {
            return Ok(Delivery::AlreadyDelivered);
        }
        if seq == u64::MAX {
            // Its commit, `seq + 1`, would not fit.
            return Err(Error::InvalidArgument(
                "sequence number u64::MAX is reserved".into(),
            ));
        }
        check_size(
            msg.len(),
            source.shared.ring().geometry().max_message as usize,
        )?;
        self.send_sourced(source.entry(), seq, msg, deadline)?;
        Ok(Delivery::Sent)
    }
}

impl IdempotentSender {
    /// The source id.
    pub fn source(&self) -> [u8; 16] {
        self.source.source()
    }

    /// The next sequence number not yet delivered: every number below it was delivered
    /// exactly once. A restarted sender resumes here.
    pub fn next(&self) -> u64 {
        self.source.next()
    }

    /// Whether message `seq` was delivered (`seq < next()`).
    pub fn is_delivered(&self, seq: u64) -> bool {
        self.source.is_delivered(seq)
    }

    /// Whether the source's entry was made for this sender (see
    /// [`IdempotentSource::is_fresh`]).
    pub fn is_fresh(&self) -> bool {
        self.source.is_fresh()
    }

    /// Declares every number below `seq` delivered (see [`IdempotentSource::start_at`]).
    pub fn start_at(&mut self, seq: u64) {
        self.source.start_at(seq)
    }

    /// Sends message `seq` unless it was already delivered, waiting for room until
    /// `deadline`.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`]; [`Error::InvalidArgument`] for `seq == u64::MAX`;
    /// [`Error::Full`]/[`Error::Timeout`] at the deadline (not sent, not committed);
    /// [`Error::Corrupt`] for a scribbled or truncated mailbox.
    pub fn send_deadline(&mut self, seq: u64, msg: &[u8], deadline: Deadline) -> Result<Delivery> {
        self.sender
            .send_idempotent(&self.source, seq, msg, deadline)
    }

    /// Sends message `seq` unless it was already delivered, waiting for room as long as
    /// needed.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline).
    pub fn send(&mut self, seq: u64, msg: &[u8]) -> Result<Delivery> {
        self.send_deadline(seq, msg, Deadline::Never)
    }

    /// Sends message `seq` if there is room now.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline); [`Error::Full`] when there is no room.
    pub fn try_send(&mut self, seq: u64, msg: &[u8]) -> Result<Delivery> {
        self.send_deadline(seq, msg, Deadline::Now)
    }

    /// The sender and the source it holds, apart.
    pub fn into_parts(self) -> (MailboxSender, IdempotentSource) {
        (self.sender, self.source)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shm::ring::Claim;
    use crate::{Capacity, MessageReceiver};

    /// A pid that is dead: a child waited for.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    /// A source's owner died with number 5 in flight in a chained ring (ring 2 of rings of
    /// 2 slots, at a position the root ring also has), its commit done or not. The next
    /// owner resolves it in that ring: delivered once if committed, dropped otherwise (the
    /// new owner sends it again), and `next` says which.
    fn dead_write_in_a_chained_ring(committed: bool) {
        let name = format!("once-chain-unit-{}-{committed}", std::process::id());
        let mailbox = Mailbox::builder(&name)
            .capacity_kind(Capacity::Unbounded)
            .unbounded_ring_capacity(2)
            .create()
            .unwrap();
        struct Remove(String);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = Mailbox::remove(&self.0);
            }
        }
        let _remove = Remove(name.clone());
        let id = *b"chain-unit-test-";
        {
            let mut tx = mailbox.idempotent_sender(id).unwrap();
            for seq in 0..5 {
                assert_eq!(tx.send(seq, &[seq as u8]).unwrap(), Delivery::Sent);
            }
        }
        let shared = &mailbox.shared;
        let tail = shared.ring().header().chain_tail.load(Ordering::SeqCst);
        assert_eq!(tail, 2, "rings of 2 slots: 0 and 1 full, 2 holds number 4");
        let link = chain::ring_at(shared, tail).unwrap().unwrap();
        let ring = &link.ring;
        // The dead writer's send, up to its death (as `send_sourced` does it).
        let dead = dead_pid();
        let pos = match ring.claim_write(dead).unwrap() {
            Claim::Got(pos) => pos,
            other => panic!("{other:?}"),
        };
        assert_eq!(pos, 1);
        let source = mailbox.idempotent_source(id).unwrap();
        source.entry().record_pending(tail, pos, 5);
        let (slot, data) = ring.slot_and_data_at(ring.index_of(pos));
        // SAFETY: the slot of `pos` is claimed (WRITING) above, its data area holds 8 bytes.
        unsafe { data.write(5) };
        slot.len.store(1, Ordering::Relaxed);
        if committed {
            source.entry().committed.store(6, Ordering::Release);
        }
        drop(source);
        let source = mailbox.idempotent_source(id).unwrap();
        assert_eq!(source.next(), if committed { 6 } else { 5 });
        let mut tx = mailbox.sender().unwrap();
        let next = source.next();
        tx.send_idempotent(&source, next, &[next as u8], Deadline::Never)
            .unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let mut got = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            got.push(msg.data[0]);
        }
        let want: Vec<u8> = (0..=next as u8).collect();
        assert_eq!(got, want, "each number once, in order");
        assert!(mailbox.info().held_slots.is_empty());
    }

    /// `info().sources` reports each source as its owner left it: id, owner and its
    /// liveness, what was delivered and what is in flight; and an entry whose stamp never
    /// settles is reported as read (flagged), not waited for.
    #[test]
    fn info_reports_sources_as_recorded() {
        // Watchdog: a read that waited for a stamp that never settles would hang here.
        let (done, finished) = std::sync::mpsc::channel();
        let body = std::thread::spawn(move || {
            sources_as_recorded();
            let _ = done.send(());
        });
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(Duration::from_secs(60))
        {
            panic!("info() ran past its watchdog");
        }
        body.join().unwrap();
    }

    fn sources_as_recorded() {
        for unbounded in [false, true] {
            let name = format!("once-info-unit-{}-{unbounded}", std::process::id());
            let mut builder = Mailbox::builder(&name).capacity(4);
            if unbounded {
                builder = builder
                    .capacity_kind(Capacity::Unbounded)
                    .unbounded_ring_capacity(2);
            }
            let mailbox = builder.create().unwrap();
            struct Remove(String);
            impl Drop for Remove {
                fn drop(&mut self) {
                    let _ = Mailbox::remove(&self.0);
                }
            }
            let _remove = Remove(name.clone());
            assert!(mailbox.info().sources.is_empty(), "a new table is all free");
            let id = *b"info-unit-test-1";
            let before = std::time::SystemTime::now() - Duration::from_secs(1);
            let mut tx = mailbox.idempotent_sender(id).unwrap();
            for seq in 0..3 {
                assert_eq!(tx.send(seq, b"m").unwrap(), Delivery::Sent);
            }
            let sources = mailbox.info().sources;
            assert_eq!(sources.len(), 1, "{sources:?}");
            let info = &sources[0];
            assert_eq!(info.id, id);
            assert_eq!(info.id_hex(), "696e666f2d756e69742d746573742d31");
            assert_eq!(info.owner, Some(std::process::id()));
            assert!(
                info.owner_alive,
                "our own lock, through another description"
            );
            assert_eq!((info.delivered, info.in_flight), (3, None));
            assert!(info.last_used.is_some_and(|t| t >= before));
            assert!(info.consistent);
            // A send recorded and not committed (as a kill in the middle leaves it).
            let (_, source) = tx.into_parts();
            source.entry().record_pending(0, 3, 3);
            let info = mailbox.info().sources.remove(0);
            assert_eq!((info.delivered, info.in_flight), (3, Some(3)));
            source.entry().committed.store(4, Ordering::Release);
            assert_eq!(mailbox.info().sources[0].in_flight, None, "committed");
            drop(source);
            let info = mailbox.info().sources.remove(0);
            assert_eq!((info.owner, info.owner_alive), (None, false), "let go");
            assert_eq!(info.delivered, 4, "the history stays with the entry");
            // A stamp stuck odd (an owner stopped mid-rewrite, or a scribble).
            let entry = mailbox.shared.ring().source(0).unwrap();
            entry.stamp.store(7, Ordering::Release);
            let info = mailbox.info().sources.remove(0);
            assert!(!info.consistent);
            assert_eq!((info.id, info.delivered), (id, 4), "reported as read");
            entry.stamp.store(8, Ordering::Release);
            assert!(mailbox.info().sources[0].consistent);
        }
    }

    #[test]
    fn a_committed_dead_write_in_a_chained_ring_is_delivered_once() {
        dead_write_in_a_chained_ring(true);
    }

    #[test]
    fn an_uncommitted_dead_write_in_a_chained_ring_is_dropped() {
        dead_write_in_a_chained_ring(false);
    }
}
