//! Process-shared synchronization that lives inside shared memory, built on futex:
//! [`Semaphore`], robust [`Mutex`], [`Event`]. Each is `#[repr(C)]` atomics (plus the data,
//! for the mutex); put them in a segment (see [`crate::shm::Shared`]) and every process that
//! maps it can use them. None makes a system call unless it has to wait or wake a sleeper.

pub mod event;
pub mod futex;
pub mod mutex;
pub(crate) mod primitive;
pub mod semaphore;

pub use event::{Event, Ticket};
pub use mutex::{LockResult, Mutex, MutexGuard};
pub use semaphore::Semaphore;
