//! `futex_waitv`: one sleep on up to 128 futex words at once (Linux 5.16+), the system call
//! under ipckit's reactor and [`WaitSet`](crate::waitset::WaitSet).
//!
//! A sleeper on many words needs no cooperation from the wakers: a notifier's ordinary
//! `FUTEX_WAKE` on one of the words wakes a `futex_waitv` sleeper too, so the mailbox's
//! senders keep their one wake path (and make no system call when nobody sleeps).
//!
//! # References
//! - [`futex_waitv(2)`](https://docs.kernel.org/userspace-api/futex2.html)

use std::time::Duration;

use super::primitive::AtomicU32;

/// The most words one call waits on (the kernel's `FUTEX_WAITV_MAX`).
pub(crate) const MAX_WORDS: usize = 128;

/// `FUTEX2_SIZE_U32`: the words are 32 bits.
const FUTEX2_SIZE_U32: u32 = 0x02;
/// `FUTEX2_PRIVATE`: the word is in this process's private memory.
const FUTEX2_PRIVATE: u32 = 128;

/// The kernel's `struct futex_waitv`.
#[repr(C)]
struct RawWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// One word to sleep on: asleep only while `word` holds `expected`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitvWord<'a> {
    /// The futex word (in shared memory unless `private`).
    pub word: &'a AtomicU32,
    /// The value the word must still hold for the sleep to happen.
    pub expected: u32,
    /// The word is in process-private memory (a cheaper key for the kernel).
    pub private: bool,
}

/// Why [`waitv`] returned. Either way the caller re-checks what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitvOutcome {
    /// The word at this index was woken.
    Woken(usize),
    /// A word no longer held its expected value, or a signal interrupted the sleep.
    Changed,
    /// The timeout passed.
    TimedOut,
    /// The kernel has no `futex_waitv` (before 5.16), or refused the words.
    Unsupported,
}

/// Sleeps until one of `words` (at most [`MAX_WORDS`]) is woken, one of them no longer holds
/// its expected value, or `timeout` passes (`None`: no timeout).
pub(crate) fn waitv(words: &[WaitvWord<'_>], timeout: Option<Duration>) -> WaitvOutcome {
    if words.is_empty() || words.len() > MAX_WORDS {
        return WaitvOutcome::Unsupported;
    }
    let raw: Vec<RawWaitv> = words
        .iter()
        .map(|w| RawWaitv {
            val: u64::from(w.expected),
            uaddr: w.word as *const AtomicU32 as usize as u64,
            flags: FUTEX2_SIZE_U32 | if w.private { FUTEX2_PRIVATE } else { 0 },
            reserved: 0,
        })
        .collect();
    // The timeout is absolute, on CLOCK_MONOTONIC (the clock `Instant` reads).
    let abs = timeout.and_then(|d| {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        now.checked_add(d)
    });
    let ts = abs.map(|at| libc::timespec {
        tv_sec: at.as_secs() as libc::time_t,
        tv_nsec: at.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `raw` holds `raw.len()` initialised entries whose addresses are of live
    // `AtomicU32`s borrowed for this call (the kernel only reads them); `ts_ptr` is null or
    // points at `ts`, alive for the call; flags 0 and CLOCK_MONOTONIC are valid arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            raw.as_ptr(),
            raw.len() as libc::c_uint,
            0 as libc::c_uint,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if rc >= 0 {
        return WaitvOutcome::Woken(rc as usize);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => WaitvOutcome::TimedOut,
        Some(libc::EAGAIN) | Some(libc::EINTR) => WaitvOutcome::Changed,
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EFAULT) => {
            // EFAULT/EINVAL: a word the kernel would not take; never sleep on a bad list.
            WaitvOutcome::Unsupported
        }
        _ => WaitvOutcome::Changed,
    }
}

/// Whether this kernel has `futex_waitv` (asked once).
pub(crate) fn supported() -> bool {
    use std::sync::OnceLock;
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let word = AtomicU32::new(1);
        let probe = [WaitvWord {
            word: &word,
            expected: 0,
            private: true,
        }];
        // The word differs from `expected`: a kernel with the call returns EAGAIN at once.
        waitv(&probe, Some(Duration::ZERO)) != WaitvOutcome::Unsupported
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::primitive::Ordering;
    use std::sync::Arc;

    #[test]
    fn wakes_on_any_word_and_times_out() {
        assert!(supported());
        let words: Arc<Vec<AtomicU32>> = Arc::new((0..3).map(|_| AtomicU32::new(0)).collect());
        let list: Vec<WaitvWord<'_>> = words
            .iter()
            .map(|word| WaitvWord {
                word,
                expected: 0,
                private: false,
            })
            .collect();
        assert_eq!(
            waitv(&list, Some(Duration::from_millis(20))),
            WaitvOutcome::TimedOut
        );
        let waker = {
            let words = words.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                words[2].store(1, Ordering::SeqCst);
                crate::sync::futex::wake_all(&words[2]);
            })
        };
        let outcome = waitv(&list, Some(Duration::from_secs(10)));
        assert!(
            matches!(outcome, WaitvOutcome::Woken(2) | WaitvOutcome::Changed),
            "{outcome:?}"
        );
        waker.join().unwrap();
        assert_eq!(waitv(&list, None), WaitvOutcome::Changed);
    }
}
