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
use super::primitive::{fence, AtomicU32, Ordering};
use crate::link::Deadline;

/// The state an [`Event::wait`] compares against: taken by [`Event::listen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u32);

/// A wait/notify primitive (`#[repr(C)]`, two 32-bit words), usable in shared memory.
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
    pub fn wait(&self, ticket: Ticket, deadline: Deadline) -> bool {
        if self.seq.load(Ordering::SeqCst) != ticket.0 {
            return true;
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // SYNC: pairs with the fence in `bump` (Dekker): either the notifier sees us, or
        // the futex sees its new sequence number and does not sleep.
        fence(Ordering::SeqCst);
        let outcome = futex::wait(&self.seq, ticket.0, deadline);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        outcome == futex::WaitOutcome::Woken || self.seq.load(Ordering::SeqCst) != ticket.0
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
