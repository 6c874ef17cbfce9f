//! How ipckit's shared-memory endpoints wait: spin a while, then sleep on a futex; and how
//! the other side wakes them with a system call only when someone sleeps.
//!
//! The futex word and sleeper count are a [`crate::sync::Event`], the one wait/wake
//! protocol of the crate (model-checked under loom, with the ring that uses it); this module
//! adds the spin-then-sleep strategy and the liveness turns around it. Every sleep is
//! bounded by [`futex::MAX_SLEEP`](crate::sync::futex::MAX_SLEEP), so a lost wake-up costs
//! at most that.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::sync::Event;

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

/// The futex word and sleeper count a ring or topic header holds for each direction: an
/// [`Event`], ipckit's one wait/wake implementation (same `#[repr(C)]` layout as before:
/// the sequence number, then the count of sleepers).
pub(crate) type WaitWord = Event;

/// Wakes sleepers on `wait` if there are any; no store and no system call otherwise.
///
/// Every caller has just changed a slot word (or cursor, or `write_pos`) with a SeqCst
/// read-modify-write; see [`Event::notify_sleepers`] for why that makes the skip sound.
#[inline]
pub(crate) fn wake_sleepers(wait: &WaitWord) {
    wait.notify_sleepers();
}

/// Turns of [`spin_for_handoff`]: a few microseconds at most (a `pause` is at most ~140
/// cycles), well inside every spinning strategy's budget.
const HANDOFF_SPINS: u32 = 256;

/// The short wait a receiver runs before the general one ([`wait_for`]): spins until `ready`
/// holds, for up to [`HANDOFF_SPINS`] turns, so that a message arriving within a hand-off is
/// taken by the caller's straight-line fast case rather than through the wait loop (its
/// closure, clock and liveness turns). True as soon as `ready` holds (at once if it already
/// did); false after the turns, and at once for `Deadline::Now` or the sleep strategy, which
/// must not spin.
#[inline(always)]
pub(crate) fn spin_for_handoff(
    strategy: WaitStrategy,
    deadline: Deadline,
    mut ready: impl FnMut() -> bool,
) -> bool {
    if deadline == Deadline::Now || strategy == WaitStrategy::Sleep {
        return false;
    }
    for _ in 0..HANDOFF_SPINS {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    false
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
    attempt: impl FnMut(bool) -> Attempt<T>,
) -> Result<T> {
    wait_with(strategy, wait, deadline, expired, false, attempt)
}

/// [`wait_for`] for a condition its notifier changes with a plain store followed by
/// [`light_barrier`](crate::sync::primitive::asymmetric::light_barrier) (the mailbox's
/// cursor rings): after announcing itself, the waiter pays the
/// [`heavy_barrier`](crate::sync::primitive::asymmetric::heavy_barrier) before its last
/// re-check, which is what makes the notifier's side of the Dekker pattern free.
pub(crate) fn wait_for_asymmetric<T>(
    strategy: WaitStrategy,
    wait: &WaitWord,
    deadline: Deadline,
    expired: Error,
    attempt: impl FnMut(bool) -> Attempt<T>,
) -> Result<T> {
    wait_with(strategy, wait, deadline, expired, true, attempt)
}

fn wait_with<T>(
    strategy: WaitStrategy,
    wait: &WaitWord,
    deadline: Deadline,
    expired: Error,
    asymmetric: bool,
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
        // Announced before the last check, so a notifier that changes the ring after it
        // sees us (Event::notify_sleepers).
        let ticket = wait.announce();
        if asymmetric {
            crate::sync::primitive::asymmetric::heavy_barrier();
        }
        let blocked_by_process = match attempt(true) {
            Ok(Ok(v)) => {
                wait.withdraw();
                return Ok(v);
            }
            Err(e) => {
                wait.withdraw();
                return Err(e);
            }
            Ok(Err(by_process)) => by_process,
        };
        if deadline.expired() {
            wait.withdraw();
            return Err(expired);
        }
        // A slot owner that dies never wakes us: sleep in short turns to notice it.
        let turn = match (blocked_by_process, deadline) {
            (true, Deadline::At(at)) => Deadline::At(at.min(Instant::now() + LIVENESS_POLL)),
            (true, _) => Deadline::after(LIVENESS_POLL),
            (false, d) => d,
        };
        // Each sleep lasts at most `futex::MAX_SLEEP`: a wake-up lost to a neighbour that
        // scribbled the sleeper count costs at most that before the re-check above.
        wait.sleep_announced(ticket, turn);
    }
}
