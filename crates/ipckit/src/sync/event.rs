//! An event: processes wait until another notifies them, with no lost wake-up.
//!
//! The event is a sequence number. A waiter reads it (*listens*), checks its condition, and
//! sleeps only if the number is still what it read; a notifier changes the condition, bumps
//! the number, and makes the wake system call only when someone sleeps. A notification that
//! lands between the check and the sleep changes the number, so the sleep does not happen.
//!
//! ```
//! use ipckit::sync::Event;
//! use ipckit::Deadline;
//! use std::sync::atomic::{AtomicBool, Ordering};
//!
//! let (event, ready) = (Event::new(), AtomicBool::new(true));
//! loop {
//!     let ticket = event.listen();
//!     if ready.load(Ordering::Acquire) { break; }
//!     event.wait(ticket, Deadline::Never);
//! }
//! ```

use super::futex;
use super::primitive::{self, fence, AtomicU32, Ordering};
use crate::link::Deadline;

/// The state an [`Event::wait`] compares against: taken by [`Event::listen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u32);

impl Ticket {
    /// The sequence number this ticket was taken at (what a futex sleep compares against).
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(crate) fn value(self) -> u32 {
        self.0
    }
}

/// A wait/notify primitive (`#[repr(C)]`, two 32-bit words: the sequence number, then the
/// count of sleepers), usable in shared memory.
///
/// It is ipckit's one wait/wake implementation: the mailbox ring's and the topic's futex
/// words are `Event`s too (waiters announce themselves before their last check, so a
/// notifier that finds nobody asleep skips the store and the system call), and the loom
/// models check both ways of using it.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Event {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Event {
    /// A new event.
    pub fn new() -> Event {
        Event {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Takes a ticket; check your condition after this and before [`wait`](Event::wait).
    pub fn listen(&self) -> Ticket {
        // SYNC: pairs with the SeqCst increment in `notify`.
        Ticket(self.seq.load(Ordering::SeqCst))
    }

    /// Sleeps until notified after `ticket` was taken, or until `deadline`. Returns true if a
    /// notification happened (or may have: re-check the condition either way).
    ///
    /// No single sleep lasts more than [`futex::MAX_SLEEP`]: a wake-up lost to a scribbled
    /// sleeper count costs at most that, and the call then returns true so the caller
    /// re-checks.
    pub fn wait(&self, ticket: Ticket, deadline: Deadline) -> bool {
        if self.seq.load(Ordering::SeqCst) != ticket.0 {
            return true;
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // SYNC: pairs with the fence in `bump` (Dekker): either the notifier sees us, or
        // the futex sees its new sequence number and does not sleep.
        fence(Ordering::SeqCst);
        self.sleep_announced(ticket, deadline)
    }

    /// Announces a sleeper *before* the caller checks its condition, and returns the ticket
    /// to sleep on. The caller then re-checks its condition and either calls
    /// [`sleep_announced`](Event::sleep_announced) or withdraws with
    /// [`withdraw`](Event::withdraw).
    ///
    /// This order lets a notifier that has just changed the condition with a SeqCst
    /// read-modify-write skip the sequence bump, and the wake system call, when nobody sleeps:
    /// see [`notify_sleepers`](Event::notify_sleepers). It is how the mailbox ring and the
    /// topic wait.
    pub(crate) fn announce(&self) -> Ticket {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // SYNC: Dekker with the condition change and the SeqCst load of `sleepers` in
        // `notify_sleepers`: either the notifier sees this sleeper and wakes it, or the
        // caller's re-check after this fence sees the changed condition.
        fence(Ordering::SeqCst);
        // SYNC: pairs with the Release increment in `notify_sleepers` (and the SeqCst one in
        // `bump`): a notification that changed the sequence is seen by the futex compare.
        Ticket(self.seq.load(Ordering::Acquire))
    }

    /// Sleeps on a ticket from [`announce`](Event::announce) (or from `wait`'s own
    /// announcement) until notified or `deadline`, at most [`futex::MAX_SLEEP`] at a time,
    /// and withdraws the sleeper. Returns true if a notification happened or may have.
    pub(crate) fn sleep_announced(&self, ticket: Ticket, deadline: Deadline) -> bool {
        let outcome = futex::wait(&self.seq, ticket.0, deadline);
        self.withdraw();
        outcome == futex::WaitOutcome::Woken || self.seq.load(Ordering::SeqCst) != ticket.0
    }

    /// The futex word sleepers sleep on (the sequence number): what the reactor and
    /// [`WaitSet`](crate::waitset::WaitSet) hand to `futex_waitv`, next to other words.
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.seq
    }

    /// Withdraws a sleeper announced by [`announce`](Event::announce) that will not sleep.
    ///
    /// The count never goes below zero: another process may have scribbled it to zero while
    /// we slept, and wrapping to `u32::MAX` would make every later notification a system
    /// call.
    pub(crate) fn withdraw(&self) {
        let _ = self
            .sleepers
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Wakes every sleeper, if there is one; no store and no system call otherwise.
    ///
    /// Sound only together with [`announce`](Event::announce) on the waiting side, and only
    /// right after the caller changed the awaited condition with a SeqCst read-modify-write
    /// (a slot word's swap or compare-and-swap): that operation, this SeqCst load, and the
    /// sleeper's SeqCst increment and fence form the Dekker pattern, so no `mfence` is
    /// needed here. Waiters using [`listen`](Event::listen) need [`notify_all`](Event::notify_all).
    #[inline]
    pub(crate) fn notify_sleepers(&self) {
        primitive::seqcst_accesses_fence();
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_announced();
        }
    }

    /// The rare half of [`notify_sleepers`](Event::notify_sleepers), out of the hot path's
    /// way: a sleeper is there, so bump the sequence and make the system call.
    #[cold]
    #[inline(never)]
    fn wake_announced(&self) {
        // SYNC: pairs with the Acquire load in `announce`.
        self.seq.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.seq);
    }

    fn bump(&self) -> bool {
        // SYNC: SeqCst increment and load pair with the waiter's SeqCst increment of
        // `sleepers` before its futex wait (Dekker).
        self.seq.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.sleepers.load(Ordering::SeqCst) > 0
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        if self.bump() {
            futex::wake_all(&self.seq);
        }
    }

    /// Wakes one waiter (any others wake on their next re-check or deadline).
    pub fn notify_one(&self) {
        if self.bump() {
            futex::wake(&self.seq, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_notification_before_the_sleep_is_not_lost() {
        let event = Event::new();
        let ticket = event.listen();
        event.notify_all();
        assert!(event.wait(ticket, Deadline::after(Duration::from_secs(5))));
    }

    #[test]
    fn waiters_wake_on_notify_and_time_out_without() {
        let event = Arc::new(Event::new());
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (event, flag) = (event.clone(), flag.clone());
            std::thread::spawn(move || loop {
                let ticket = event.listen();
                if flag.load(Ordering::Acquire) {
                    return;
                }
                event.wait(ticket, Deadline::after(Duration::from_secs(30)));
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        flag.store(true, Ordering::Release);
        event.notify_all();
        waiter.join().unwrap();
        let ticket = event.listen();
        assert!(!event.wait(ticket, Deadline::after(Duration::from_millis(10))));
    }
}
