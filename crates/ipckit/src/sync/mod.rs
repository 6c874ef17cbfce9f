//! Process-shared synchronization that lives inside shared memory, built on futex.

pub mod futex;
pub(crate) mod primitive;
