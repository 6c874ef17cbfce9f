//! Who is attached to a mailbox: the entries of its participant table (one per sender and
//! receiver, so `ipckit ls` can list them and a dead one's slots can be reclaimed) and the
//! tokens of single-sender and single-receiver mailboxes.

use std::sync::Arc;

use super::{describe, Shared};
use crate::error::Result;
use crate::shm::liveness::{self, Held, Locks, Table};
use crate::shm::participants;
use crate::shm::ring::{FLAG_SINGLE_RECEIVER, FLAG_SINGLE_SENDER, MAX_PARTICIPANTS};
use crate::sync::primitive::{AtomicU32, Ordering};

/// How the participant table's liveness is asked: through the mailbox's own descriptor,
/// which holds none of the participants' locks.
pub(super) fn locks(shared: &Shared) -> Locks<'_> {
    Locks {
        probe: shared.root._segment.file_fd(),
        table: Table::Participants,
    }
}

/// Whether `pid`, found holding a slot or a token, is dead: decided by the liveness locks of
/// the participant entries with that pid (right across PID namespaces), and by `/proc` with
/// the recorded start time only for entries without a lock (see [`liveness::pid_alive`]).
pub(super) fn is_dead(shared: &Shared, pid: u32) -> bool {
    !liveness::pid_alive(&locks(shared), &shared.ring().header().participants, pid)
}

/// Participant entry `index`: its pid and whether its process is alive, or `None` when the
/// entry is free (or out of range). For whoever needs to know whether a sender or receiver is
/// still there (`ls`, "no live sender left").
pub(super) fn entry_alive(shared: &Shared, index: usize) -> Option<(u32, bool)> {
    let entry = shared.ring().header().participants.get(index)?;
    participants::occupant(entry, index, &locks(shared))
}

/// Which way an endpoint moves messages; recorded in the participant table as 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Sender = 1,
    Receiver = 2,
}

impl Role {
    /// `"sender"` or `"receiver"`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// An entry in the participant table, freed on drop.
pub(super) struct Participant {
    shared: Arc<Shared>,
    index: usize,
    pub(super) pid: u32,
    /// The entry's liveness lock, released (by dropping it) after the entry.
    _lock: Option<Held>,
}

impl Participant {
    /// Enters this process in the table as a `role`.
    ///
    /// # Errors
    /// [`Error::LimitReached`] if the table is full of live processes.
    pub(super) fn register(shared: &Arc<Shared>, role: Role) -> Result<Participant> {
        let table = &shared.ring().header().participants;
        let limit = format!("{MAX_PARTICIPANTS} attached senders and receivers");
        let (index, pid, lock) =
            participants::join(table, &describe(&shared.name), &limit, &locks(shared))?;
        table[index].role.store(role as u32, Ordering::Release);
        Ok(Participant {
            shared: Arc::clone(shared),
            index,
            pid,
            _lock: lock,
        })
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let entry = &self.shared.ring().header().participants[self.index];
        participants::leave(entry, self.pid);
    }
}

/// The right to be a single-sender (or single-receiver) mailbox's one sender (receiver).
pub(super) struct SoleToken {
    shared: Arc<Shared>,
    role: Role,
    pid: u32,
    /// The token's liveness lock, released (by dropping it) after the token word.
    _lock: Option<Held>,
}

impl SoleToken {
    fn word(shared: &Shared, role: Role) -> &AtomicU32 {
        let header = shared.ring().header();
        match role {
            Role::Sender => &header.sole_sender,
            Role::Receiver => &header.sole_receiver,
        }
    }

    /// Takes the token if the mailbox is single-`role`, with the position to start from.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) while another live process holds
    /// it, or while its lock stays held for [`liveness::TOKEN_LINGER`] after its holder is
    /// gone (see [`liveness::acquire_token`]).
    pub(super) fn acquire(shared: &Arc<Shared>, role: Role) -> Result<Option<(SoleToken, u64)>> {
        let flag = match role {
            Role::Sender => FLAG_SINGLE_SENDER,
            Role::Receiver => FLAG_SINGLE_RECEIVER,
        };
        if shared.ring().geometry().flags & flag == 0 {
            return Ok(None);
        }
        let token = format!("the single {} of {}", role.name(), describe(&shared.name));
        let token_locks = Locks {
            probe: shared.root._segment.file_fd(),
            table: Table::Tokens,
        };
        let table = &shared.ring().header().participants;
        let me = std::process::id();
        let lock = liveness::acquire_token(
            &token_locks,
            role as usize - 1,
            SoleToken::word(shared, role),
            me,
            |pid| !is_dead(shared, pid),
            |pid| liveness::proc_pid_alive(table, pid),
        )
        .map_err(|why| liveness::token_taken(&token, why))?;
        let header = shared.ring().header();
        let start = match role {
            Role::Sender => header.tail.0.load(Ordering::Acquire),
            Role::Receiver => header.head.0.load(Ordering::Acquire),
        };
        let token = SoleToken {
            shared: Arc::clone(shared),
            role,
            pid: me,
            _lock: lock,
        };
        Ok(Some((token, start)))
    }
}

impl Drop for SoleToken {
    fn drop(&mut self) {
        let _ = SoleToken::word(&self.shared, self.role).compare_exchange(
            self.pid,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}
