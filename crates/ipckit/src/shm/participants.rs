//! Participant tables: the fixed arrays of (pid, start time) entries in a mailbox's or a
//! topic's header that say who is attached, so that `ipckit ls` can show them and what a
//! dead process held can be handed back.
//!
//! An entry is free when its pid is 0. A process takes a free entry by compare-and-swap of
//! the pid, then records its start time, so that a pid reused by an unrelated program is not
//! taken for it ([`liveness`]); when the table is full of entries, one of a dead process is
//! taken over instead. The entry is given back (CAS pid → 0) when the endpoint drops, or by
//! [`clear_dead`] when its process died without doing so.

use crate::error::{Error, Result};
use crate::process::{liveness, Liveness, ProcessIdentity};
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

/// The pid in `entry`, if it is taken, with whether its process is still alive (a reused
/// pid counts as dead).
pub(crate) fn occupant(entry: &impl Entry) -> Option<(u32, bool)> {
    let pid = entry.pid().load(Ordering::Acquire);
    if pid == 0 {
        return None;
    }
    let start = entry.start_time().load(Ordering::Acquire);
    Some((pid, liveness(pid, Some(start)) == Liveness::Alive))
}

/// Takes a free entry of `table` for `me`, or, when none is free, one of a dead process.
/// `None`: the table is full of live processes.
pub(crate) fn claim<E: Entry>(table: &[E], me: ProcessIdentity) -> Option<usize> {
    for pass in 0..2 {
        for (index, entry) in table.iter().enumerate() {
            let current = entry.pid().load(Ordering::Acquire);
            let free = current == 0 || (pass == 1 && occupant(entry) == Some((current, false)));
            if free
                && entry
                    .pid()
                    .compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                entry.start_time().store(me.start_time, Ordering::Release);
                return Some(index);
            }
        }
    }
    None
}

/// Enters this process in `table` ([`claim`]): its entry's index, and its pid.
///
/// # Errors
/// [`Error::LimitReached`] naming `object` and `limit` (what the table holds) when the table
/// is full of live processes.
pub(crate) fn join<E: Entry>(table: &[E], object: &str, limit: &str) -> Result<(usize, u32)> {
    let me = ProcessIdentity::current();
    let index = claim(table, me).ok_or_else(|| Error::LimitReached {
        object: object.to_string(),
        limit: limit.to_string(),
        source: std::io::Error::from_raw_os_error(libc::EUSERS),
    })?;
    Ok((index, me.pid))
}

/// Gives `entry` back if `pid` still holds it.
pub(crate) fn leave(entry: &impl Entry, pid: u32) {
    let _ = entry
        .pid()
        .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// Frees the entries of dead processes; returns how many were freed.
pub(crate) fn clear_dead<'a, E: Entry + 'a>(entries: impl IntoIterator<Item = &'a E>) -> usize {
    entries
        .into_iter()
        .filter(|entry| match occupant(*entry) {
            Some((pid, false)) => entry
                .pid()
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok(),
            _ => false,
        })
        .count()
}

/// The recorded start time of `pid` if it holds an entry of `table`.
pub(crate) fn start_time_of<E: Entry>(table: &[E], pid: u32) -> Option<u64> {
    table
        .iter()
        .find(|e| e.pid().load(Ordering::Acquire) == pid)
        .map(|e| e.start_time().load(Ordering::Acquire))
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
