//! A counting semaphore that works across processes: place it in shared memory.
//!
//! The count is a futex word. `post` adds one and makes the wake system call only when a
//! waiter sleeps; `wait` takes one, sleeping while the count is zero. Neither makes a system
//! call when it does not have to wait.
//!
//! ```
//! use ipckit::sync::Semaphore;
//! let sem = Semaphore::new(1);
//! sem.wait();
//! assert!(sem.try_wait().is_err());
//! sem.post();
//! assert!(sem.try_wait().is_ok());
//! ```

use std::time::Duration;

use super::futex;
use super::primitive::{fence, AtomicU32, Ordering};
use crate::error::Result;
use crate::link::Deadline;

/// A counting semaphore (`#[repr(C)]`, two 32-bit words), usable in shared memory.
#[repr(C)]
#[derive(Debug)]
pub struct Semaphore {
    count: AtomicU32,
    sleepers: AtomicU32,
}

impl Semaphore {
    /// A semaphore holding `count` permits.
    pub fn new(count: u32) -> Semaphore {
        Semaphore {
            count: AtomicU32::new(count),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Permits available now.
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    fn try_take(&self) -> bool {
        let mut current = self.count.load(Ordering::Relaxed);
        while current > 0 {
            match self.count.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
        false
    }

    /// Takes a permit, waiting until `deadline`.
    ///
    /// # Errors
    /// [`Error::Empty`](crate::Error::Empty) for [`Deadline::Now`],
    /// [`Error::Timeout`](crate::Error::Timeout) when a timed wait runs out.
    pub fn wait_deadline(&self, deadline: Deadline) -> Result<()> {
        loop {
            if self.try_take() {
                return Ok(());
            }
            if deadline.expired() {
                return Err(deadline.recv_expired());
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            // SYNC: pairs with the fence in `post` (Dekker): either the poster sees us and
            // wakes us, or we see its permit here and do not sleep.
            fence(Ordering::SeqCst);
            if self.count.load(Ordering::SeqCst) == 0 {
                let outcome = futex::wait(&self.count, 0, deadline);
                if outcome == futex::WaitOutcome::TimedOut && self.count.load(Ordering::Acquire) > 0
                {
                    // We may have absorbed a wake meant for a permit we will not take now.
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    if !self.try_take() {
                        futex::wake(&self.count, 1);
                        return Err(deadline.recv_expired());
                    }
                    return Ok(());
                }
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Takes a permit, waiting as long as needed.
    pub fn wait(&self) {
        self.wait_deadline(Deadline::Never)
            .expect("a wait without deadline only returns with a permit")
    }

    /// Takes a permit if one is available now.
    ///
    /// # Errors
    /// [`Error::Empty`](crate::Error::Empty) if none is.
    pub fn try_wait(&self) -> Result<()> {
        self.wait_deadline(Deadline::Now)
    }

    /// Takes a permit, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) if none came within `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_deadline(Deadline::after(timeout))
    }

    /// Adds a permit, waking one waiter if any sleeps.
    pub fn post(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        // SYNC: pairs with the fence in `wait_deadline`.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.count, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_and_flavours() {
        let sem = Semaphore::new(2);
        sem.wait();
        sem.try_wait().unwrap();
        assert!(matches!(sem.try_wait(), Err(crate::Error::Empty)));
        let start = std::time::Instant::now();
        assert!(matches!(
            sem.wait_timeout(Duration::from_millis(20)),
            Err(crate::Error::Timeout)
        ));
        assert!(start.elapsed() >= Duration::from_millis(20));
        sem.post();
        assert_eq!(sem.value(), 1);
    }

    #[test]
    fn threads_hand_permits_over_without_loss() {
        let sem = Arc::new(Semaphore::new(0));
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let sem = sem.clone();
                std::thread::spawn(move || {
                    for _ in 0..2500 {
                        sem.wait();
                    }
                })
            })
            .collect();
        for _ in 0..10_000 {
            sem.post();
        }
        for t in takers {
            t.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    }
}
