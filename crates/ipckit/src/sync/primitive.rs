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

/// Asymmetric fences: the notifier's half of a Dekker pattern made free on a hot path, the
/// sleeper's half made expensive instead (`membarrier(2)`, as liburcu and folly's
/// `asymmetric_thread_fence_heavy` do).
///
/// A notifier that changed a condition with a plain store calls [`light_barrier`] before it
/// loads the count of sleepers; a sleeper that announced itself calls [`heavy_barrier`]
/// before it re-checks the condition. `MEMBARRIER_CMD_GLOBAL_EXPEDITED` runs a full barrier
/// on every CPU currently running a thread of a process registered with
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, so the light side needs only a compiler fence
/// once its process is registered ([`register_asymmetric`]); until then (or where the kernel
/// refuses), the light side is a real `fence(SeqCst)`, and either way the heavy side stays
/// correct. Under loom both are `fence(SeqCst)`: loom has no asymmetric fences, and the
/// models check the protocol around them.
///
/// # References
/// - [`membarrier(2)`](https://man7.org/linux/man-pages/man2/membarrier.2.html)
pub(crate) mod asymmetric {
    use super::{fence, Ordering};

    /// 0: not asked yet; 1: registered (light side free); 2: unavailable (light side fences).
    #[cfg(not(loom))]
    static STATE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

    /// Registers this process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (once; later calls are a
    /// load). Returns whether the light side may skip its fence.
    pub(crate) fn register_asymmetric() -> bool {
        #[cfg(not(loom))]
        {
            use std::sync::atomic::Ordering as O;
            match STATE.load(O::Acquire) {
                1 => return true,
                2 => return false,
                _ => {}
            }
            let cmd = rustix::thread::MembarrierCommand::RegisterGlobalExpedited;
            let ok = rustix::thread::membarrier(cmd).is_ok();
            STATE.store(if ok { 1 } else { 2 }, O::Release);
            ok
        }
        #[cfg(loom)]
        false
    }

    /// The notifier's half: free once registered, a full fence otherwise. `registered` is
    /// what [`register_asymmetric`] returned, kept by the caller so that the hot path loads
    /// nothing (registration is never undone, so it stays true).
    #[inline(always)]
    pub(crate) fn light_barrier(registered: bool) {
        if registered {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The sleeper's half: a full fence here, and one on every CPU running a registered
    /// process (a system call, a few microseconds: paid only on the way to sleep).
    pub(crate) fn heavy_barrier() {
        fence(Ordering::SeqCst);
        #[cfg(not(loom))]
        {
            // The caller need not be registered itself. If the kernel refuses, no process can
            // have registered either, so every notifier fences: the fence above suffices.
            let _ = rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited);
        }
    }
}
