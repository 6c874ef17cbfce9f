//! Participant tables: the fixed arrays of (pid, start time) entries in a mailbox's or a
//! topic's header that say who is attached, so that `ipckit ls` can show them and what a
//! dead process held can be handed back.
//!
//! An entry is free when its pid is 0. A process first takes the entry's liveness lock (an
//! OFD lock on a byte of the segment file, [`liveness`]), then the entry by compare-and-swap
//! of the pid, then records its start time; when the table is full of entries, one of a dead
//! process is taken over instead. Whether an entry's process lives is decided by that lock,
//! which the kernel drops when the process dies, whatever its PID namespace; the start time
//! serves only the `/proc` fallback for entries without a lock. The entry is given back (CAS
//! pid → 0, then the lock) when the endpoint drops, or by [`clear_dead`] when its process
//! died without doing so.

use crate::error::{Error, Result};
use crate::process::ProcessIdentity;
use crate::shm::liveness::{self, Held, Locks};
use crate::sync::primitive::{AtomicU32, AtomicU64, Ordering};

/// One entry of a participant table (the mailbox's, and the topic's publishers).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ParticipantEntry {
    /// Pid of the attached process, 0 for a free entry.
    pub pid: AtomicU32,
    /// Mailboxes: 1 sender, 2 receiver; topic publishers: 1.
    pub role: AtomicU32,
    /// Start time of the process (`/proc/PID/stat`), so a reused pid is not taken for it.
    pub start_time: AtomicU64,
}

/// What every table entry has: a pid (0: free) and the process's start time.
pub(crate) trait Entry {
    /// The pid word.
    fn pid(&self) -> &AtomicU32;
    /// The start time word.
    fn start_time(&self) -> &AtomicU64;
}

impl Entry for ParticipantEntry {
    fn pid(&self) -> &AtomicU32 {
        &self.pid
    }
    fn start_time(&self) -> &AtomicU64 {
        &self.start_time
    }
}

/// The pid in entry `index` of a table, if it is taken, with whether its process is still
/// alive: by its liveness lock ([`liveness::entry_alive`]; `/proc` only for an entry without
/// one). This is the crate's one answer to "is participant entry `index` alive".
pub(crate) fn occupant(entry: &impl Entry, index: usize, locks: &Locks<'_>) -> Option<(u32, bool)> {
    let pid = entry.pid().load(Ordering::Acquire);
    if pid == 0 {
        return None;
    }
    Some((pid, liveness::entry_alive(locks, index, entry, pid)))
}

/// Takes a free entry of `table` for `me`, or, when none is free, one of a dead process,
/// with the entry's liveness lock (taken first: whoever then sees the entry claimed and the
/// lock free knows we are dead). `None`: the table is full of live processes.
pub(crate) fn claim<E: Entry>(
    table: &[E],
    me: ProcessIdentity,
    locks: &Locks<'_>,
) -> Option<(usize, Option<Held>)> {
    let mut held = None;
    for pass in 0..2 {
        for (index, entry) in table.iter().enumerate() {
            let current = entry.pid().load(Ordering::Acquire);
            if current != 0 && pass == 0 {
                continue;
            }
            // Someone alive holds the entry, or is taking it.
            if locks.take(index, &mut held).is_err() {
                continue;
            }
            // We hold its lock now, so only `/proc` can speak for an occupant (one from before
            // these locks, or one that died).
            let free = current == 0 || !liveness::proc_alive(entry, current);
            if free
                && entry
                    .pid()
                    .compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                entry.start_time().store(me.start_time, Ordering::Release);
                return Some((index, held));
            }
        }
    }
    None
}

/// Enters this process in `table` ([`claim`]): its entry's index, its pid, and the entry's
/// liveness lock (hold it as long as the entry; `None` where locks are unavailable).
///
/// # Errors
/// [`Error::LimitReached`] naming `object` and `limit` (what the table holds) when the table
/// is full of live processes.
pub(crate) fn join<E: Entry>(
    table: &[E],
    object: &str,
    limit: &str,
    locks: &Locks<'_>,
) -> Result<(usize, u32, Option<Held>)> {
    let me = ProcessIdentity::current();
    let (index, held) = claim(table, me, locks).ok_or_else(|| Error::LimitReached {
        object: object.to_string(),
        limit: limit.to_string(),
        source: std::io::Error::from_raw_os_error(libc::EUSERS),
    })?;
    Ok((index, me.pid, held))
}

/// Gives `entry` back if `pid` still holds it. Drop the entry's liveness lock only after.
pub(crate) fn leave(entry: &impl Entry, pid: u32) {
    let _ = entry
        .pid()
        .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// Frees the entries of dead processes; returns how many were freed.
pub(crate) fn clear_dead<E: Entry>(table: &[E], locks: &Locks<'_>) -> usize {
    table
        .iter()
        .enumerate()
        .filter(|(index, entry)| match occupant(*entry, *index, locks) {
            Some((pid, false)) => entry
                .pid()
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok(),
            _ => false,
        })
        .count()
}

/// What [`Mailbox::repair`](super::Mailbox::repair) and [`Topic::repair`](super::Topic::repair)
/// did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairReport {
    /// Participant entries of dead processes removed (mailbox senders and receivers, topic
    /// publishers and subscribers).
    pub dead_participants: usize,
    /// Slots held by dead processes handed back (for a topic: the publish lock of a publisher
    /// that died writing, with the slot it was writing).
    pub reclaimed_slots: usize,
    /// Chained rings of an unbounded mailbox that their creator died making (no magic yet),
    /// removed.
    pub removed_rings: usize,
}
