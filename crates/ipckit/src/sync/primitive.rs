//! The atomics every lock-free structure in ipckit uses, in one place, so a `--cfg loom`
//! build swaps in loom's model-checked atomics without touching the algorithms.

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Stands in, under loom, for the ordering of a SeqCst read-modify-write followed by a SeqCst
/// load (the notifier's half of a Dekker pattern whose other half is a SeqCst fence).
///
/// Loom models SeqCst accesses as AcqRel and would report lost wake-ups that the C++ memory
/// model (and every CPU ipckit runs on) rules out; it does model `fence(SeqCst)` (loom's
/// README, "Unsupported features"). So the models check the protocol with this fence between
/// the two accesses, and production code, where the accesses already give that order, pays
/// nothing.
#[inline(always)]
pub(crate) fn seqcst_accesses_fence() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}
