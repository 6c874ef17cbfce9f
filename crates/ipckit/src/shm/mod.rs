//! Shared memory: segments and the structures placed in them.

pub(crate) mod ring;
