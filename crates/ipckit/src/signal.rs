//! Signals: notify a process; receive signals as an iterator instead of writing a handler;
//! real-time signals that carry an integer and say who sent them.
//!
//! ```no_run
//! use ipckit::signal::{self, Signal, Signals};
//!
//! let mut signals = Signals::new(&[Signal::USR1, Signal::TERM])?;
//! signal::send(std::process::id(), Signal::USR1)?;
//! let received = signals.forever().next().unwrap();
//! assert_eq!(received.signal, Signal::USR1);
//! println!("from pid {:?}", received.sender_pid);
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! - [`Signals`] (built on signal-hook) installs a handler that only records the signal;
//!   the program takes signals from an iterator, in its own time, safely.
//! - [`queue`] sends a real-time signal (`SIGRTMIN+n`) with a 32-bit payload (`sigqueue`);
//!   [`RealtimeReceiver`] receives them with the payload and the sender's pid and uid, through
//!   a `signalfd`. The signals it listens to are blocked in the calling thread, and a signal
//!   sent to the process goes to any thread that does not block it: create the receiver in the
//!   main thread before starting any other, so that every thread inherits the block.
//!   Dropping it unblocks them again, so their disposition applies as before.
//! - Every signal has a disposition, the kernel's default action (most end the process) until
//!   a handler replaces it; [`ignore`] sets it to "ignore" and puts back the earlier one when
//!   its guard goes.
//!
//! rustix has no `sigqueue` or `signalfd`: this file calls `libc` for them, each call with its
//! safety argument.
//!
//! # References
//! - [`signal(7)`](https://man7.org/linux/man-pages/man7/signal.7.html),
//!   [`sigqueue(3)`](https://man7.org/linux/man-pages/man3/sigqueue.3.html),
//!   [`signalfd(2)`](https://man7.org/linux/man-pages/man2/signalfd.2.html)

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::event::PollFlags;

use crate::error::{Error, Result};
use crate::fd::wait_ready;
use crate::link::Deadline;

/// A signal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(pub i32);

impl Signal {
    /// User-defined signal 1.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// User-defined signal 2.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// Polite termination request.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// Interrupt (Ctrl+C).
    pub const INT: Signal = Signal(libc::SIGINT);
    /// Hang-up (often: reload configuration).
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// Uncatchable termination.
    pub const KILL: Signal = Signal(libc::SIGKILL);

    /// Real-time signal `SIGRTMIN + n`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative `n` or one past `SIGRTMAX`.
    pub fn realtime(n: i32) -> Result<Signal> {
        let signal = libc::SIGRTMIN() + n;
        if n < 0 || signal > libc::SIGRTMAX() {
            return Err(Error::InvalidArgument(format!(
                "SIGRTMIN+{n} is past SIGRTMAX ({} real-time signals exist)",
                libc::SIGRTMAX() - libc::SIGRTMIN() + 1
            )));
        }
        Ok(Signal(signal))
    }
}

/// The kernel's pid for process `pid`: one process, never a group or "every process".
/// `kill` reads 0 as the caller's process group and a negative number (a `u32` above
/// `i32::MAX`) as a group, or as every process for -1: ipckit only ever names one process.
fn one_process(pid: u32) -> Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(Error::InvalidArgument(format!(
            "{pid} is not a process id (1..={})",
            libc::pid_t::MAX
        ))),
    }
}

/// Sends `signal` to process `pid` (`kill`).
///
/// # Errors
/// [`Error::InvalidArgument`] for pid 0 or a pid above `i32::MAX` (which the kernel would
/// read as a process group); [`Error::NotFound`] if there is no such process;
/// [`Error::PermissionDenied`] for another user's process; [`Error::Os`] (`EINVAL`) for a
/// number that is not a signal.
pub fn send(pid: u32, signal: Signal) -> Result<()> {
    let target = one_process(pid)?;
    let object = format!("process {pid}");
    // SAFETY: sending a signal has no memory effects in this process.
    let rc = unsafe { libc::kill(target, signal.0) };
    if rc == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(Error::NotFound { object });
        }
        return Err(Error::os("kill", object, err));
    }
    Ok(())
}

/// Sends real-time `signal` with `value` to `pid` (`sigqueue`); queued, not merged.
///
/// # Errors
/// As [`send`]; [`Error::LimitReached`] when the receiver's queue of pending signals is full
/// (`RLIMIT_SIGPENDING`).
pub fn queue(pid: u32, signal: Signal, value: i32) -> Result<()> {
    let target = one_process(pid)?;
    let object = format!("process {pid}");
    let sigval = libc::sigval {
        sival_ptr: value as isize as *mut libc::c_void,
    };
    // SAFETY: plain system call; the sigval is passed by value.
    let rc = unsafe { libc::sigqueue(target, signal.0, sigval) };
    if rc == -1 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ESRCH) => Error::NotFound { object },
            Some(libc::EAGAIN) => Error::LimitReached {
                object,
                limit: "RLIMIT_SIGPENDING (queued signals)".into(),
                source: err,
            },
            _ => Error::os("sigqueue", object, err),
        });
    }
    Ok(())
}

/// A signal as received: which, and who sent it (when the kernel says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The signal.
    pub signal: Signal,
    /// The sending process, if a process sent it.
    pub sender_pid: Option<u32>,
    /// The sending user.
    pub sender_uid: Option<u32>,
}

/// Signals as an iterator: handlers that only record, read in the program's own time.
#[derive(Debug)]
pub struct Signals {
    inner: signal_hook::iterator::SignalsInfo<signal_hook::iterator::exfiltrator::WithOrigin>,
}

impl Signals {
    /// Starts catching `signals` (not KILL or STOP, which cannot be caught).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a signal that cannot be caught.
    pub fn new(signals: &[Signal]) -> Result<Signals> {
        let numbers: Vec<i32> = signals.iter().map(|s| s.0).collect();
        // signal-hook refuses these by panicking; refuse them with an error first.
        if let Some(bad) = numbers
            .iter()
            .find(|n| signal_hook::consts::FORBIDDEN.contains(n))
        {
            return Err(Error::InvalidArgument(format!(
                "signal {bad} cannot be caught (KILL, STOP and the fault signals)"
            )));
        }
        let inner = signal_hook::iterator::SignalsInfo::new(&numbers)
            .map_err(|e| Error::InvalidArgument(format!("cannot catch {numbers:?}: {e}")))?;
        Ok(Signals { inner })
    }

    fn convert(origin: signal_hook::low_level::siginfo::Origin) -> Received {
        Received {
            signal: Signal(origin.signal),
            sender_pid: origin.process.as_ref().map(|p| p.pid as u32),
            sender_uid: origin.process.as_ref().map(|p| p.uid),
        }
    }

    /// Signals that arrived since the last call, without waiting.
    pub fn pending(&mut self) -> Vec<Received> {
        self.inner.pending().map(Signals::convert).collect()
    }

    /// Waits for signals, forever.
    pub fn forever(&mut self) -> impl Iterator<Item = Received> + '_ {
        self.inner.forever().map(Signals::convert)
    }
}

/// A real-time signal with its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedSignal {
    /// The signal.
    pub signal: Signal,
    /// The 32-bit value the sender queued.
    pub value: i32,
    /// The sender's pid.
    pub sender_pid: u32,
    /// The sender's uid.
    pub sender_uid: u32,
}

/// Receives (real-time) signals with their payload and sender, through a `signalfd`.
///
/// The signals' dispositions are not touched: they are blocked and read from the descriptor
/// instead. Dropping the receiver in the thread that created it unblocks those that were not
/// blocked before, so their disposition (the default action, say) applies again, to any
/// still pending as well.
#[derive(Debug)]
pub struct RealtimeReceiver {
    fd: OwnedFd,
    /// Signals this receiver blocked that were not blocked before.
    unblock: Vec<i32>,
    thread: std::thread::ThreadId,
}

impl RealtimeReceiver {
    /// Blocks `signals` in the calling thread and opens a `signalfd` for them. See the module
    /// docs: do this in the main thread before starting other threads.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a number that is not a signal a program may use (0,
    /// past the last signal, or one the C library keeps for itself: 32 and 33 with glibc);
    /// [`Error::Os`] if the `signalfd` cannot be made (the descriptor limit, say). `KILL` and
    /// `STOP` are accepted but never received.
    pub fn new(signals: &[Signal]) -> Result<RealtimeReceiver> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for signal in signals {
            // SAFETY: `set` is initialised; an invalid number is reported as -1.
            if unsafe { libc::sigaddset(&mut set, signal.0) } == -1 {
                return Err(Error::InvalidArgument(format!(
                    "{} is not a signal",
                    signal.0
                )));
            }
        }
        // SAFETY: sigset_t is plain data; pthread_sigmask fills it.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: blocking signals in this thread; `set` and `old` are valid sigset_t.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        if rc != 0 {
            return Err(Error::os(
                "pthread_sigmask",
                "signal mask",
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        // SAFETY: a new signalfd for `set`.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if raw == -1 {
            return Err(Error::os(
                "signalfd",
                "signal receiver",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a descriptor we just opened and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let unblock = signals
            .iter()
            // SAFETY: `old` was filled by pthread_sigmask; the numbers were accepted above.
            .filter(|s| unsafe { libc::sigismember(&old, s.0) } == 0)
            .map(|s| s.0)
            .collect();
        Ok(RealtimeReceiver {
            fd,
            unblock,
            thread: std::thread::current().id(),
        })
    }

    /// Takes the next signal, waiting until `deadline`.
    ///
    /// # Errors
    /// [`Error::Empty`] (for [`Deadline::Now`]) or [`Error::Timeout`] when none arrives in
    /// time; another OS error as [`Error::Os`] (none is expected).
    pub fn recv_deadline(&mut self, deadline: Deadline) -> Result<QueuedSignal> {
        loop {
            // SAFETY: signalfd_siginfo is plain data.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading at most `size` bytes into `info`, which is exactly that big.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n == size as isize {
                return Ok(QueuedSignal {
                    signal: Signal(info.ssi_signo as i32),
                    value: info.ssi_int,
                    sender_pid: info.ssi_pid,
                    sender_uid: info.ssi_uid,
                });
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => {
                    if !wait_ready(self.fd.as_fd(), PollFlags::IN, deadline)? {
                        return Err(deadline.recv_expired());
                    }
                }
                Some(libc::EINTR) => {}
                _ => return Err(Error::os("read(signalfd)", "signal receiver", err)),
            }
        }
    }

    /// Takes the next signal, waiting as long as needed.
    ///
    /// # Errors
    /// An OS error as [`Error::Os`] (none is expected).
    pub fn recv(&mut self) -> Result<QueuedSignal> {
        self.recv_deadline(Deadline::Never)
    }
}

impl AsFd for RealtimeReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for RealtimeReceiver {
    fn drop(&mut self) {
        // The mask is per thread: another thread's mask is not ours to change.
        if self.unblock.is_empty() || std::thread::current().id() != self.thread {
            return;
        }
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the numbers were accepted by sigaddset in `new`.
        unsafe {
            libc::sigemptyset(&mut set);
            for &signal in &self.unblock {
                libc::sigaddset(&mut set, signal);
            }
        }
        // SAFETY: unblocking in the thread that blocked them; `set` is valid.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// A signal ignored (`SIG_IGN`) until this guard is dropped or [`Ignored::restore`]d, which
/// puts back the disposition it replaced: the default action, or a handler.
///
/// An ignored signal is discarded when it is sent: it does not wait blocked, a
/// [`RealtimeReceiver`] never sees it, and it stays discarded after the restore.
///
/// ```
/// use ipckit::signal::{self, Signal};
/// let ignored = signal::ignore(Signal::USR2)?;
/// signal::send(std::process::id(), Signal::USR2)?;   // would end the process otherwise
/// ignored.restore()?;                                // SIGUSR2's default action is back
/// # Ok::<(), ipckit::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for `KILL`, `STOP`, or a number that is not a signal; another
/// OS error as [`Error::Os`].
#[doc(alias = "sigaction")]
#[doc(alias = "SIG_IGN")]
pub fn ignore(signal: Signal) -> Result<Ignored> {
    // SAFETY: sigaction is plain data; an all-zero one is valid (no flags, empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = libc::SIG_IGN;
    // SAFETY: as above; sigaction fills `previous`.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: installing SIG_IGN runs no code of ours in a signal context; both structs are
    // valid for the call.
    if unsafe { libc::sigaction(signal.0, &action, &mut previous) } == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) {
            return Err(Error::InvalidArgument(format!(
                "signal {} cannot be ignored (KILL and STOP cannot, and it must be a signal)",
                signal.0
            )));
        }
        return Err(Error::os("sigaction", format!("signal {}", signal.0), err));
    }
    Ok(Ignored {
        signal,
        previous: Some(previous),
    })
}

/// The guard [`ignore`] returns.
pub struct Ignored {
    signal: Signal,
    previous: Option<libc::sigaction>,
}

impl std::fmt::Debug for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ignored")
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

impl Ignored {
    /// Puts back the disposition `ignore` replaced, reporting a failure (dropping the guard
    /// does the same silently).
    ///
    /// # Errors
    /// The OS error of `sigaction` (none is expected: the disposition was valid before).
    pub fn restore(mut self) -> Result<()> {
        self.put_back()
    }

    fn put_back(&mut self) -> Result<()> {
        let Some(previous) = self.previous.take() else {
            return Ok(());
        };
        // SAFETY: reinstalling the exact disposition the kernel gave us for this signal.
        if unsafe { libc::sigaction(self.signal.0, &previous, std::ptr::null_mut()) } == -1 {
            return Err(Error::os(
                "sigaction",
                format!("signal {}", self.signal.0),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

impl Drop for Ignored {
    fn drop(&mut self) {
        let _ = self.put_back();
    }
}
