//! A robust mutex for shared memory: when the process holding it dies, the next locker is
//! told ([`LockResult::OwnerDied`]) and gets the lock, with the data, to repair it — as a
//! robust POSIX mutex reports `EOWNERDEAD`. It never hangs on a dead owner.
//!
//! # Protocol
//!
//! The lock word holds the owner's pid (0: free) and a "waiters" bit. Locking is one
//! compare-and-swap when free. A contended locker sets the waiters bit and sleeps on the word
//! (futex) in turns of at most 20 ms; between turns it asks the kernel whether the owner is
//! alive (`/proc/PID/stat`, compared with the start time the owner recorded, so a reused pid
//! is not mistaken for it). A dead owner's lock is taken over by compare-and-swap, and the
//! mutex is marked inconsistent until the new owner calls [`MutexGuard::mark_consistent`].
//!
//! Why not the kernel's robust futex list: glibc owns each thread's list (for robust
//! pthread mutexes); registering a second one would break them.
//!
//! ```
//! use ipckit::sync::{LockResult, Mutex};
//! let mutex = Mutex::new(5u64);
//! match mutex.lock() {
//!     LockResult::Locked(mut guard) => *guard += 1,
//!     LockResult::OwnerDied(mut guard) => { *guard = 0; guard.mark_consistent(); }
//! }
//! assert_eq!(*mutex.lock().into_guard(), 6);
//! ```

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use super::futex;
use super::primitive::{AtomicU32, AtomicU64, Ordering};
use crate::error::Result;
use crate::link::Deadline;
use crate::process::{liveness, Liveness, ProcessIdentity};

const WAITERS: u32 = 1 << 31;
const PID_MASK: u32 = !WAITERS;
/// How often a blocked locker checks that the owner is still alive.
const OWNER_CHECK: Duration = Duration::from_millis(20);

/// A process-shared, robust mutex around a `T` (`#[repr(C)]`; put it in shared memory).
/// `T` should be plain data (no pointers): another process maps it at another address.
#[repr(C)]
pub struct Mutex<T> {
    state: AtomicU32,
    inconsistent: AtomicU32,
    owner_start: AtomicU64,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by the lock; T moves between holders.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("owner", &(self.state.load(Ordering::Relaxed) & PID_MASK))
            .finish()
    }
}

/// The outcome of locking: the lock either way, and whether its last owner died holding it.
#[derive(Debug)]
pub enum LockResult<'a, T> {
    /// Locked normally.
    Locked(MutexGuard<'a, T>),
    /// The previous owner died while holding the lock (or a predecessor did, and nobody has
    /// marked the data consistent since): repair the data, then
    /// [`mark_consistent`](MutexGuard::mark_consistent).
    OwnerDied(MutexGuard<'a, T>),
}

impl<'a, T> LockResult<'a, T> {
    /// The guard, whichever way the lock was obtained.
    pub fn into_guard(self) -> MutexGuard<'a, T> {
        match self {
            LockResult::Locked(g) | LockResult::OwnerDied(g) => g,
        }
    }

    /// True if the previous owner died holding the lock.
    pub fn owner_died(&self) -> bool {
        matches!(self, LockResult::OwnerDied(_))
    }
}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            state: AtomicU32::new(0),
            inconsistent: AtomicU32::new(0),
            owner_start: AtomicU64::new(0),
            data: UnsafeCell::new(value),
        }
    }

    fn acquired(&self, me: &ProcessIdentity, took_over: bool) -> LockResult<'_, T> {
        self.owner_start.store(me.start_time, Ordering::Release);
        if took_over {
            self.inconsistent.store(1, Ordering::Release);
        }
        let guard = MutexGuard { mutex: self };
        if self.inconsistent.load(Ordering::Acquire) != 0 {
            LockResult::OwnerDied(guard)
        } else {
            LockResult::Locked(guard)
        }
    }

    fn owner_is_dead(&self, owner: u32) -> bool {
        let start = self.owner_start.load(Ordering::Acquire);
        liveness(owner, (start != 0).then_some(start)) == Liveness::Dead
    }

    /// Locks, waiting until `deadline`.
    ///
    /// # Errors
    /// [`Error::Full`](crate::Error::Full) for [`Deadline::Now`] while held,
    /// [`Error::Timeout`](crate::Error::Timeout) when a timed lock runs out.
    pub fn lock_deadline(&self, deadline: Deadline) -> Result<LockResult<'_, T>> {
        let me = ProcessIdentity::current();
        if self
            .state
            .compare_exchange(0, me.pid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(self.acquired(&me, false));
        }
        let mut last_check = Instant::now() - OWNER_CHECK;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            let owner = state & PID_MASK;
            if owner == 0 {
                // Conservatively keep the waiters bit: others may still sleep.
                if self
                    .state
                    .compare_exchange(
                        state,
                        me.pid | WAITERS,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Ok(self.acquired(&me, false));
                }
                continue;
            }
            if last_check.elapsed() >= OWNER_CHECK || deadline == Deadline::Now {
                last_check = Instant::now();
                if owner != me.pid && self.owner_is_dead(owner) {
                    if self
                        .state
                        .compare_exchange(
                            state,
                            me.pid | (state & WAITERS),
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return Ok(self.acquired(&me, true));
                    }
                    continue;
                }
            }
            if deadline.expired() {
                return Err(deadline.send_expired());
            }
            if state & WAITERS == 0
                && self
                    .state
                    .compare_exchange(state, state | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let turn = match deadline {
                Deadline::At(at) => Deadline::At(at.min(Instant::now() + OWNER_CHECK)),
                _ => Deadline::after(OWNER_CHECK),
            };
            futex::wait(&self.state, state | WAITERS, turn);
        }
    }

    /// Locks, waiting as long as needed (but never on a dead owner).
    pub fn lock(&self) -> LockResult<'_, T> {
        self.lock_deadline(Deadline::Never)
            .expect("a lock without deadline only returns with the lock")
    }

    /// Locks if free now, or if its owner is dead (then [`LockResult::OwnerDied`]).
    ///
    /// # Errors
    /// [`Error::Full`](crate::Error::Full) while a live process holds it (this one included:
    /// the mutex is not reentrant).
    pub fn try_lock(&self) -> Result<LockResult<'_, T>> {
        self.lock_deadline(Deadline::Now)
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) if a live process still held it when
    /// `timeout` ran out.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockResult<'_, T>> {
        self.lock_deadline(Deadline::after(timeout))
    }

    fn unlock(&self) {
        self.owner_start.store(0, Ordering::Relaxed);
        if self.state.swap(0, Ordering::Release) & WAITERS != 0 {
            futex::wake(&self.state, 1);
        }
    }
}

/// The lock, held; the data is reachable through it. Unlocks on drop.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> MutexGuard<'_, T> {
    /// Declares the data repaired after an [`OwnerDied`](LockResult::OwnerDied): later
    /// lockers get [`LockResult::Locked`] again.
    pub fn mark_consistent(&mut self) {
        self.mutex.inconsistent.store(0, Ordering::Release);
    }
}

impl<T> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MutexGuard")
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no other guard exists anywhere.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock and `&mut self`: this is the only reference.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_threads() {
        let mutex = Arc::new(Mutex::new(0u64));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let mutex = mutex.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *mutex.lock().into_guard() += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(*mutex.lock().into_guard(), 40_000);
    }

    #[test]
    fn try_and_timed_locks_fail_while_held() {
        let mutex = Mutex::new(());
        let _held = mutex.lock().into_guard();
        let other = std::thread::scope(|s| {
            s.spawn(|| {
                let now = matches!(mutex.try_lock(), Err(crate::Error::Full));
                let start = Instant::now();
                let timed = matches!(
                    mutex.lock_timeout(Duration::from_millis(30)),
                    Err(crate::Error::Timeout)
                );
                (now, timed, start.elapsed() >= Duration::from_millis(30))
            })
            .join()
            .unwrap()
        });
        assert_eq!(other, (true, true, true));
    }

    #[test]
    fn a_dead_owner_is_detected() {
        let mutex = Mutex::new(1u32);
        // Pretend a process that has exited holds it.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        mutex.state.store(pid, Ordering::Release);
        match mutex.lock_timeout(Duration::from_secs(5)).unwrap() {
            LockResult::OwnerDied(mut guard) => {
                *guard = 2;
                guard.mark_consistent();
            }
            LockResult::Locked(_) => panic!("the dead owner went unnoticed"),
        }
        assert!(!mutex.lock().owner_died());
    }
}
