//! Process-shared synchronization that lives inside shared memory, built on futex:
//! [`Semaphore`], robust [`Mutex`], [`Event`]. Each is `#[repr(C)]` atomics (plus the data,
//! for the mutex); put them in a segment (see [`crate::shm::Shared`]) and every process that
//! maps it can use them. None makes a system call unless it has to wait or wake a sleeper.

pub mod event;
pub mod futex;
pub mod mutex;
pub(crate) mod primitive;
pub mod semaphore;
#[cfg(not(loom))]
pub(crate) mod waitv;

pub use event::{Event, Ticket};
pub use mutex::{LockResult, Mutex, MutexGuard};
pub use semaphore::Semaphore;

/// Model checks of the wait/wake protocols under loom, which explores every interleaving of
/// the atomics (and of the modelled futex): a lost wake-up would leave a thread blocked
/// forever, which loom reports. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p ipckit --lib --release loom_models`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::link::Deadline;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn a_post_always_reaches_a_waiter() {
        loom::model(|| {
            let sem = Arc::new(Semaphore::new(0));
            let poster = {
                let sem = sem.clone();
                thread::spawn(move || sem.post())
            };
            sem.wait();
            poster.join().unwrap();
            assert_eq!(sem.value(), 0);
        });
    }

    #[test]
    fn two_waiters_two_posts() {
        loom::model(|| {
            let sem = Arc::new(Semaphore::new(0));
            let waiter = {
                let sem = sem.clone();
                thread::spawn(move || sem.wait())
            };
            let poster = {
                let sem = sem.clone();
                thread::spawn(move || {
                    sem.post();
                    sem.post();
                })
            };
            sem.wait();
            waiter.join().unwrap();
            poster.join().unwrap();
        });
    }

    #[test]
    fn an_event_notification_is_never_lost() {
        loom::model(|| {
            let event = Arc::new(Event::new());
            let ready = Arc::new(AtomicBool::new(false));
            let notifier = {
                let (event, ready) = (event.clone(), ready.clone());
                thread::spawn(move || {
                    ready.store(true, Ordering::Release);
                    event.notify_all();
                })
            };
            loop {
                let ticket = event.listen();
                if ready.load(Ordering::Acquire) {
                    break;
                }
                event.wait(ticket, Deadline::Never);
            }
            notifier.join().unwrap();
        });
    }
}
