//! The futex system call, as ipckit uses it: a 32-bit word in shared memory that processes
//! sleep on and wake each other through.
//!
//! Both operations are *shared* futexes (no `FUTEX_PRIVATE_FLAG`), so the kernel keys them by
//! the physical page and they work across processes that map the same segment at different
//! addresses.
//!
//! # References
//! - [`futex(2)`](https://man7.org/linux/man-pages/man2/futex.2.html)

use std::time::Duration;

#[cfg(not(loom))]
use rustix::thread::futex;

use super::primitive::AtomicU32;
use crate::link::Deadline;

/// Why [`wait`] returned. Either way the caller re-checks its condition: futex waits may
/// return spuriously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken, interrupted, or the word no longer held `expected`.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// The longest a single futex sleep lasts. Another process can scribble the words that
/// decide whether a wake system call is made (a sleeper count set to zero, say); a sleeper
/// then is not woken, and without a bound would sleep forever with its condition met. With
/// it, every sleeper re-checks its condition at least this often: a lost wake-up costs at
/// most this long, never forever.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Sleeps while `word` holds `expected`, until woken, until `deadline`, or for at most
/// [`MAX_SLEEP`].
///
/// Returns at once with [`WaitOutcome::Woken`] if the word already differs (the kernel
/// compares atomically with going to sleep, which is what rules out a lost wake-up). A sleep
/// cut short by [`MAX_SLEEP`] before the deadline also returns [`WaitOutcome::Woken`]: the
/// caller re-checks its condition and sleeps again.
#[cfg(not(loom))]
pub fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> WaitOutcome {
    let left = match deadline.remaining() {
        None => MAX_SLEEP,
        Some(Duration::ZERO) => return WaitOutcome::TimedOut,
        Some(left) => left.min(MAX_SLEEP),
    };
    let timeout = rustix::time::Timespec {
        tv_sec: left.as_secs() as i64,
        tv_nsec: left.subsec_nanos().into(),
    };
    match futex::wait(word, futex::Flags::empty(), expected, Some(&timeout)) {
        Ok(()) => WaitOutcome::Woken,
        // TIMEDOUT after a turn of MAX_SLEEP, EAGAIN (the value changed before we slept),
        // EINTR (a signal): re-check, unless the deadline itself has passed.
        Err(_) => {
            if deadline.expired() {
                WaitOutcome::TimedOut
            } else {
                WaitOutcome::Woken
            }
        }
    }
}

/// Wakes at most `count` processes sleeping on `word`; returns how many were woken.
#[cfg(not(loom))]
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}

/// Wakes every process sleeping on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

#[cfg(loom)]
pub use model::{wait, wake};

/// Under `--cfg loom`, a model of the futex for the model checker: `wait` compares and
/// blocks under one lock, `wake` bumps a generation under the same lock, so "compare, then
/// sleep" is atomic with respect to wakes, exactly the property the kernel provides. A lost
/// wake-up then shows up as a thread blocked forever, which loom reports as a deadlock.
/// Deadlines are not modelled (the models use `Deadline::Never`).
#[cfg(loom)]
mod model {
    use super::{AtomicU32, Deadline, WaitOutcome};
    use crate::sync::primitive::Ordering;
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref PARK: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
    }

    /// Blocks while `word == expected`, until a `wake`.
    pub fn wait(word: &AtomicU32, expected: u32, _deadline: Deadline) -> WaitOutcome {
        let (lock, condvar) = &*PARK;
        let mut generation = lock.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return WaitOutcome::Woken;
        }
        let seen = *generation;
        while *generation == seen {
            generation = condvar.wait(generation).unwrap();
        }
        WaitOutcome::Woken
    }

    /// Wakes every modelled sleeper (a superset of what the kernel would wake).
    pub fn wake(_word: &AtomicU32, _count: u32) -> usize {
        let (lock, condvar) = &*PARK;
        *lock.lock().unwrap() += 1;
        condvar.notify_all();
        1
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;
    use std::time::Instant;

    #[test]
    fn wait_on_changed_word_returns_at_once() {
        let word = AtomicU32::new(1);
        assert_eq!(wait(&word, 0, Deadline::Never), WaitOutcome::Woken);
    }

    #[test]
    fn wait_times_out_no_earlier_than_the_deadline() {
        let word = AtomicU32::new(0);
        let start = Instant::now();
        let outcome = wait(&word, 0, Deadline::after(Duration::from_millis(20)));
        assert_eq!(outcome, WaitOutcome::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(wait(&word, 0, Deadline::Now), WaitOutcome::TimedOut);
    }

    #[test]
    fn no_sleep_lasts_longer_than_max_sleep() {
        let word = AtomicU32::new(0);
        let start = Instant::now();
        // Nobody wakes it: it returns after one turn, asking the caller to re-check.
        assert_eq!(wait(&word, 0, Deadline::Never), WaitOutcome::Woken);
        let slept = start.elapsed();
        assert!(slept >= MAX_SLEEP && slept < MAX_SLEEP * 3, "{slept:?}");
    }

    #[test]
    fn wake_releases_a_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                while word.load(Ordering::Acquire) == 0 {
                    wait(&word, 0, Deadline::after(Duration::from_secs(10)));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(10));
        word.store(1, Ordering::Release);
        wake_all(&word);
        sleeper.join().unwrap();
    }
}
