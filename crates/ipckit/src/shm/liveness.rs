//! Liveness from the kernel: open-file-description locks on a segment's file.
//!
//! A pid found in shared memory says little about whether its process lives: a process in
//! another PID namespace (a container sharing `/dev/shm`) has a pid that means nothing, or
//! another process, in this namespace's `/proc`. What the kernel keeps per process whatever
//! the namespace are its open files, and with them their locks. So every participant of a
//! mailbox or topic holds a write lock (`F_OFD_SETLK`) on a byte of its own in the segment's
//! file, taken through an open file description of its own (the file reopened through
//! `/proc/self/fd`: a `dup` shares the description, and a description sees no conflict with
//! its own locks); the kernel drops the lock when the process dies (its last descriptor of
//! that description closes). Anyone asks with `F_OFD_GETLK` through another description (the
//! segment's own, which never holds one of these locks).
//!
//! The bytes lie far beyond any segment's end (locks past the end of file are allowed and
//! touch no memory): [`BASE`] + a table's stride + the entry's index, so each table (mailbox
//! participants, topic publishers and subscribers, single-endpoint tokens, idempotent
//! senders' sources) and the creation of a chained ring have their own bytes.
//!
//! A lock is taken *before* the entry or token word it stands for is claimed, and given back
//! after it is released: whoever sees the word claimed and the byte free knows its holder is
//! dead (or an older ipckit that holds no lock, see [`entry_alive`]).
//!
//! A process that forks without exec shares its descriptions with the child: the lock then
//! lasts until both are gone (ipckit opens every descriptor close-on-exec).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

use crate::process::{liveness, Liveness};
use crate::shm::participants::Entry;
use crate::sync::primitive::{AtomicU32, Ordering};

/// The first lock byte: far beyond any segment's end.
const BASE: i64 = 1 << 60;
/// Bytes between two tables' ranges.
const STRIDE: i64 = 1 << 32;

/// Whose bytes: each table of a segment has its own range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// A mailbox's participant table (senders and receivers).
    Participants = 0,
    /// A topic's publisher table.
    Publishers = 1,
    /// A topic's subscriber table.
    Subscribers = 2,
    /// A mailbox's single-sender (0) and single-receiver (1) tokens; a topic's
    /// single-publisher token (0).
    Tokens = 3,
    /// Held by the creator of a chained ring until its magic is published.
    Creation = 4,
    /// A mailbox's source table of idempotent senders: entry `i`'s owner holds byte `i`;
    /// byte [`SOURCES_MUTEX`] is held while an entry is being claimed.
    Sources = 5,
}

/// The index, in [`Table::Sources`], of the byte that serialises claims of source entries.
pub(crate) const SOURCES_MUTEX: usize = 1 << 16;

/// The lock byte of entry `index` of `table`.
pub(crate) fn offset(table: Table, index: usize) -> i64 {
    BASE + (table as i64) * STRIDE + (index as i64 % STRIDE)
}

fn flock(kind: libc::c_short, offset: i64) -> libc::flock {
    // SAFETY: `flock` is plain data; all-zero is a valid value (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset;
    lock.l_len = 1;
    lock
}

fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, lock: &mut libc::flock) -> std::io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to a live, initialised flock (rustix has no
    // F_OFD_SETLK / F_OFD_GETLK: its fcntl_lock is flock(2)-style).
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, lock as *mut libc::flock) };
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes the write lock on byte `offset` through `fd`'s description, without waiting.
/// `Ok(false)`: another description holds it.
pub(crate) fn try_lock(fd: BorrowedFd<'_>, offset: i64) -> std::io::Result<bool> {
    let mut lock = flock(libc::F_WRLCK as libc::c_short, offset);
    match fcntl_lock(fd, libc::F_OFD_SETLK, &mut lock) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases byte `offset` if `fd`'s description holds it.
pub(crate) fn unlock(fd: BorrowedFd<'_>, offset: i64) {
    let mut lock = flock(libc::F_UNLCK as libc::c_short, offset);
    let _ = fcntl_lock(fd, libc::F_OFD_SETLK, &mut lock);
}

/// Whether a description other than `probe`'s holds byte `offset`; `None` if the kernel
/// could not say (no OFD locks: a very old kernel, or a file system without locks).
pub(crate) fn is_locked(probe: BorrowedFd<'_>, offset: i64) -> Option<bool> {
    let mut lock = flock(libc::F_WRLCK as libc::c_short, offset);
    fcntl_lock(probe, libc::F_OFD_GETLK, &mut lock).ok()?;
    Some(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// A new open file description of the file `fd` refers to: `/proc/self/fd/N` reopened (not
/// a `dup`, which would share the description and its locks).
pub(crate) fn reopen(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?)
}

/// A lock byte held through a description of our own; the kernel releases it when this is
/// dropped, or when the process dies.
#[derive(Debug)]
pub(crate) struct Held {
    fd: OwnedFd,
    offset: i64,
}

impl Held {
    /// Takes byte `offset` of the file `segment` refers to through a new description.
    /// `Ok(None)`: someone alive holds it.
    pub(crate) fn take(segment: BorrowedFd<'_>, offset: i64) -> std::io::Result<Option<Held>> {
        let fd = reopen(segment)?;
        Ok(try_lock(fd.as_fd(), offset)?.then_some(Held { fd, offset }))
    }

    /// Moves the lock to byte `offset` of the same description (the old byte is released).
    /// `Ok(false)`: someone alive holds the new byte; ours is released all the same.
    pub(crate) fn retake(&mut self, offset: i64) -> std::io::Result<bool> {
        unlock(self.fd.as_fd(), self.offset);
        self.offset = offset;
        try_lock(self.fd.as_fd(), offset)
    }
}

/// Where a table's lock bytes are, and how to ask about them: the file's description that
/// holds no liveness lock, or `None` where locks are unavailable (liveness then comes from
/// `/proc` alone).
#[derive(Clone, Copy)]
pub(crate) struct Locks<'a> {
    /// A description of the segment's file holding none of these locks.
    pub probe: Option<BorrowedFd<'a>>,
    /// The table the entries belong to.
    pub table: Table,
}

impl Locks<'_> {
    /// Whether entry `index`'s lock byte is held; `None` if the kernel cannot say.
    pub(crate) fn held(&self, index: usize) -> Option<bool> {
        is_locked(self.probe?, offset(self.table, index))
    }

    /// Takes entry `index`'s lock byte, through `held` if we already have a description
    /// (moving its lock), or a new one. `Ok(None)` with no locks available; `Err(())`: someone
    /// alive holds it.
    pub(crate) fn take(&self, index: usize, held: &mut Option<Held>) -> Result<(), ()> {
        let Some(probe) = self.probe else {
            return Ok(());
        };
        let at = offset(self.table, index);
        match held {
            Some(h) => match h.retake(at) {
                Ok(true) => Ok(()),
                Ok(false) => Err(()),
                // The kernel refused OFD locks: go on without one.
                Err(_) => {
                    *held = None;
                    Ok(())
                }
            },
            None => match Held::take(probe, at) {
                Ok(Some(h)) => {
                    *held = Some(h);
                    Ok(())
                }
                Ok(None) => Err(()),
                Err(_) => Ok(()),
            },
        }
    }
}

/// Whether the process holding entry `index` (pid `pid`, per `entry`) of a table is alive.
///
/// The lock byte decides: held, alive. Free: the holder is dead, or is an ipckit from before
/// these locks (it never took one), or the kernel cannot say; only then is `/proc` asked,
/// with the entry's recorded start time (so a reused pid counts as dead). That fallback is
/// wrong across PID namespaces, which is why it is only a fallback.
pub(crate) fn entry_alive(locks: &Locks<'_>, index: usize, entry: &impl Entry, pid: u32) -> bool {
    locks.held(index) == Some(true) || proc_alive(entry, pid)
}

/// The fallback: whether `/proc` shows `pid` alive with the start time `entry` recorded.
/// Wrong across PID namespaces (the pid is another process's, or nobody's, here).
pub(crate) fn proc_alive(entry: &impl Entry, pid: u32) -> bool {
    let start = entry.start_time().load(Ordering::Acquire);
    liveness(pid, Some(start)) == Liveness::Alive
}

/// Whether a process recorded as `pid` in a slot or lock word is alive, judged by the
/// entries of `table` with that pid: alive if any of their locks is held; otherwise by
/// `/proc` (see [`entry_alive`]). With no entry at all, `/proc` alone decides.
pub(crate) fn pid_alive<E: Entry>(locks: &Locks<'_>, table: &[E], pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let mut start = None;
    for (index, entry) in table.iter().enumerate() {
        if entry.pid().load(Ordering::Acquire) == pid {
            if locks.held(index) == Some(true) {
                return true;
            }
            start.get_or_insert(entry.start_time().load(Ordering::Acquire));
        }
    }
    liveness(pid, start) == Liveness::Alive
}

/// `/proc` alone: whether `pid` is alive, with the start time recorded in the first entry of
/// `table` with that pid (a reused pid counts as dead). Blind to the liveness locks, so that
/// a lock kept by a process the holder forked does not count: wrong across PID namespaces,
/// where it says dead.
pub(crate) fn proc_pid_alive<E: Entry>(table: &[E], pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let start = table
        .iter()
        .find(|e| e.pid().load(Ordering::Acquire) == pid)
        .map(|e| e.start_time().load(Ordering::Acquire));
    liveness(pid, start) == Liveness::Alive
}

/// How long [`acquire_token`] waits for a sole token whose holder is gone by `/proc` but
/// whose liveness lock still reads held.
///
/// Why it can: a holder that forks (and has not exec'd yet) shares its open file
/// descriptions, and with them its locks, with the child; when the holder exits, or gives the
/// token back, the lock lasts until the child execs (descriptors are close-on-exec) or exits,
/// which is usually a moment. Beyond this, the lock is reported as it is.
pub(crate) const TOKEN_LINGER: std::time::Duration = std::time::Duration::from_millis(250);

/// Why [`acquire_token`] could not take a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRefused {
    /// The holder, this pid, is alive (by its liveness locks and by `/proc`).
    Alive(u32),
    /// For [`TOKEN_LINGER`], the token's (or the holder's participant) lock stayed held
    /// although `/proc` shows no live holder: the token word names this pid, a dead process,
    /// or 0 (no holder). The lock is then kept by a process a holder forked that neither
    /// exec'd nor exited, or by a holder in another PID namespace.
    Lingering(u32),
}

/// Takes a sole token: its lock byte `index` of `locks` first, then its `word` (from a dead
/// holder's pid, or 0) for `me`. `alive` judges a pid found in the word by the holders'
/// table (liveness locks, `/proc` for entries without one); `by_proc` by `/proc` alone.
///
/// A holder alive by `/proc` is refused at once. Only while a lock reads held and `/proc`
/// shows no live holder (a holder's forked child still shares the lock, or a holder is in
/// another PID namespace, or someone is between taking the lock and the word) is it tried
/// again, every 2 ms for at most [`TOKEN_LINGER`].
pub(crate) fn acquire_token(
    locks: &Locks<'_>,
    index: usize,
    word: &AtomicU32,
    me: u32,
    alive: impl Fn(u32) -> bool,
    by_proc: impl Fn(u32) -> bool,
) -> Result<Option<Held>, TokenRefused> {
    let deadline = std::time::Instant::now() + TOKEN_LINGER;
    let mut lock = None;
    loop {
        // The token's own lock first: held by another description, its holder lives (or is
        // taking it right now, or was forked from a holder). Once ours it stays ours.
        if lock.is_some() || locks.take(index, &mut lock).is_ok() {
            let holder = word.load(Ordering::Acquire);
            // With the token's lock ours, a holder can only be dead, or an ipckit from before
            // these locks (then its table entry, or `/proc`, says it lives).
            if holder == 0 || !alive(holder) {
                // SYNC: AcqRel: Acquire pairs with the previous holder's release, so what
                // it published is seen; Release publishes our claim.
                if word
                    .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(lock);
                }
                continue;
            }
        }
        let holder = word.load(Ordering::Acquire);
        if holder != 0 && by_proc(holder) {
            return Err(TokenRefused::Alive(holder));
        }
        if std::time::Instant::now() >= deadline {
            return Err(TokenRefused::Lingering(holder));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The words of an [`Error::AlreadyExists`](crate::Error::AlreadyExists) for `token` (say,
/// "the single sender of mailbox \"m\""), refused as `why`.
pub(crate) fn token_taken(token: &str, why: TokenRefused) -> crate::Error {
    let object = match why {
        TokenRefused::Alive(pid) => format!("{token} (pid {pid})"),
        TokenRefused::Lingering(0) => format!(
            "{token} (no holder recorded, but its liveness lock still held after {} ms: by a \
             process a former holder forked that has neither exec'd nor exited, or by a holder \
             in another PID namespace)",
            TOKEN_LINGER.as_millis()
        ),
        TokenRefused::Lingering(pid) => format!(
            "{token} (pid {pid}, gone, but its liveness lock still held after {} ms: by a \
             process it forked that has neither exec'd nor exited, or by a holder in another \
             PID namespace)",
            TOKEN_LINGER.as_millis()
        ),
    };
    crate::Error::AlreadyExists { object }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_seen_through_another_description_only() {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(format!(
                "/dev/shm/ipckit-liveness-test-{}",
                std::process::id()
            ))
            .unwrap();
        let _ = std::fs::remove_file(format!(
            "/dev/shm/ipckit-liveness-test-{}",
            std::process::id()
        ));
        let at = offset(Table::Participants, 3);
        assert_eq!(is_locked(file.as_fd(), at), Some(false));
        let held = Held::take(file.as_fd(), at).unwrap().expect("a free byte");
        assert_eq!(is_locked(file.as_fd(), at), Some(true));
        assert_eq!(is_locked(file.as_fd(), at + 1), Some(false));
        // A second taker (another description) is refused while it is held.
        assert!(Held::take(file.as_fd(), at).unwrap().is_none());
        drop(held);
        assert_eq!(is_locked(file.as_fd(), at), Some(false));
        // The creation byte: taken through the file's own description, unseen by it.
        assert!(try_lock(file.as_fd(), offset(Table::Creation, 0)).unwrap());
        assert_eq!(
            is_locked(file.as_fd(), offset(Table::Creation, 0)),
            Some(false)
        );
        let other = reopen(file.as_fd()).unwrap();
        assert!(!try_lock(other.as_fd(), offset(Table::Creation, 0)).unwrap());
        unlock(file.as_fd(), offset(Table::Creation, 0));
        assert!(try_lock(other.as_fd(), offset(Table::Creation, 0)).unwrap());
    }
}
