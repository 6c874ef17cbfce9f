//! How ipckit's shared-memory endpoints wait: spin a while, then sleep on a futex; and how
//! the other side wakes them with a system call only when someone sleeps.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::sync::futex;
use crate::sync::primitive::{fence, AtomicU32, Ordering};

/// How often a waiter that is blocked by another process's slot checks that it is alive.
pub(crate) const LIVENESS_POLL: Duration = Duration::from_millis(20);

/// How a blocked sender or receiver waits.
///
/// On a virtual machine an idle vCPU halts, so waking a sleeper costs tens of microseconds,
/// while a hand-off between two spinning cores costs a few hundred nanoseconds: spinning buys
/// latency with CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin until the deadline; never sleep (lowest latency, one core busy while waiting).
    BusyPoll,
    /// Spin this long, then sleep on a futex.
    Spin(Duration),
    /// Sleep on the futex at once.
    Sleep,
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::Spin(Duration::from_micros(50))
    }
}

/// A futex word and the number of processes asleep on it.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct WaitWord {
    /// Bumped by every wake; sleepers wait on it.
    pub seq: AtomicU32,
    /// How many are asleep (or about to be).
    pub sleepers: AtomicU32,
}

/// Wakes sleepers on `wait` if there are any; no system call otherwise.
///
/// Every caller has just changed a slot word with a SeqCst read-modify-write. That, this
/// SeqCst load, and the sleeper's SeqCst increment followed by a SeqCst fence before it
/// re-checks the slot (`prepare_sleep`) form the Dekker pattern: either we see the
/// sleeper and wake it, or it sees the slot change and does not sleep. On x86 the
/// read-modify-write is the one locked instruction of the fast path; no `mfence`.
pub(crate) fn wake_sleepers(wait: &WaitWord) {
    if wait.sleepers.load(Ordering::SeqCst) != 0 {
        wait.seq.fetch_add(1, Ordering::Release);
        crate::sync::futex::wake_all(&wait.seq);
    }
}

/// Announces a sleeper on `wait` and returns the futex value to sleep on; the caller must
/// re-check the ring after this and before sleeping, then call `finish_sleep`.
pub(crate) fn prepare_sleep(wait: &WaitWord) -> u32 {
    wait.sleepers.fetch_add(1, Ordering::SeqCst);
    // SYNC: pairs with the fence in `Ring::notify`.
    fence(Ordering::SeqCst);
    wait.seq.load(Ordering::Acquire)
}

/// Withdraws the sleeper announced by `prepare_sleep`.
pub(crate) fn finish_sleep(wait: &WaitWord) {
    wait.sleepers.fetch_sub(1, Ordering::Release);
}

/// The outcome of one attempt: done, or blocked (`true`: by a slot another process holds,
/// whose death the waiter must watch for).
pub(crate) type Attempt<T> = Result<std::result::Result<T, bool>>;

/// Waits until `attempt` succeeds, by the mailbox's wait strategy, until `deadline`.
///
/// `attempt(check_owners)` tries once; with `check_owners` it also reclaims a slot in its way
/// whose owner has died (that costs a read of `/proc`, so it is done every
/// [`LIVENESS_POLL`], not on every spin).
pub(crate) fn wait_for<T>(
    strategy: WaitStrategy,
    wait: &WaitWord,
    deadline: Deadline,
    expired: Error,
    mut attempt: impl FnMut(bool) -> Attempt<T>,
) -> Result<T> {
    if let Ok(v) = attempt(false)? {
        return Ok(v);
    }
    if deadline == Deadline::Now {
        return match attempt(true)? {
            Ok(v) => Ok(v),
            Err(_) => Err(expired),
        };
    }
    let spin_for = match strategy {
        WaitStrategy::BusyPoll => None,
        WaitStrategy::Spin(d) => Some(d),
        WaitStrategy::Sleep => Some(Duration::ZERO),
    };
    // The clock is read lazily, first after 64 spins: a clock read can cost as much as a
    // whole hand-off between cores, and the awaited message often arrives sooner.
    let mut spin_start: Option<Instant> = None;
    let mut last_check: Option<Instant> = None;
    let mut spins = 0u32;
    loop {
        let spinning = match spin_for {
            None => true,
            Some(d) if d.is_zero() => false,
            Some(d) => {
                spins == 0
                    || spins & 63 != 0
                    || spin_start.get_or_insert_with(Instant::now).elapsed() < d
            }
        };
        if spinning {
            spins = spins.wrapping_add(1);
            std::hint::spin_loop();
            let check = spins & 1023 == 0
                && match last_check {
                    None => {
                        last_check = Some(Instant::now());
                        false
                    }
                    Some(at) => at.elapsed() >= LIVENESS_POLL,
                };
            if check {
                last_check = Some(Instant::now());
            }
            if let Ok(v) = attempt(check)? {
                return Ok(v);
            }
            if spins & 1023 == 0 && deadline.expired() {
                return Err(expired);
            }
            continue;
        }
        let seen = prepare_sleep(wait);
        let blocked_by_process = match attempt(true) {
            Ok(Ok(v)) => {
                finish_sleep(wait);
                return Ok(v);
            }
            Err(e) => {
                finish_sleep(wait);
                return Err(e);
            }
            Ok(Err(by_process)) => by_process,
        };
        if deadline.expired() {
            finish_sleep(wait);
            return Err(expired);
        }
        // A slot owner that dies never wakes us: sleep in short turns to notice it.
        let turn = match (blocked_by_process, deadline) {
            (true, Deadline::At(at)) => Deadline::At(at.min(Instant::now() + LIVENESS_POLL)),
            (true, _) => Deadline::after(LIVENESS_POLL),
            (false, d) => d,
        };
        futex::wait(&wait.seq, seen, turn);
        finish_sleep(wait);
    }
}
