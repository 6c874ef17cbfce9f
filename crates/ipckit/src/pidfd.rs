//! Death notifications: a descriptor that becomes readable when a process exits (`pidfd`),
//! Linux's answer to Mach's dead-name notification and Binder's `linkToDeath`.
//!
//! ```
//! use ipckit::pidfd::PidFd;
//! use ipckit::Deadline;
//! use std::time::Duration;
//!
//! let mut child = std::process::Command::new("true").spawn()?;
//! let watch = PidFd::open(child.id())?;
//! assert!(watch.wait_deadline(Deadline::after(Duration::from_secs(10)))?);
//! child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A [`PidFd`] can be put in a [`WaitSet`](crate::waitset::WaitSet) next to endpoints, and
//! awaited (feature `tokio`, any executor) with `PidFd::died_async`. The kernel names the
//! process, not its pid: a pid reused after the watched process died does not confuse it.
//!
//! # Portability
//! Linux 5.3 or later (`pidfd_open`).
//!
//! # References
//! - [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::process::ProcessIdentity;

/// A descriptor on a process that becomes readable when the process exits.
#[doc(alias = "pidfd_open")]
#[derive(Debug)]
pub struct PidFd {
    pid: u32,
    fd: OwnedFd,
}

impl PidFd {
    /// Watches process `pid`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no process has that pid (it is already gone: for a death
    /// watch, treat it as dead), [`Error::InvalidArgument`] for pid 0 or one beyond the
    /// kernel's range, [`Error::Unsupported`] before Linux 5.3, or an OS error.
    pub fn open(pid: u32) -> Result<PidFd> {
        let object = format!("process {pid}");
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| Error::InvalidArgument(format!("{pid} is not a process id")))?;
        match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => Ok(PidFd { pid, fd }),
            Err(Errno::SRCH) => Err(Error::NotFound { object }),
            Err(Errno::NOSYS) => Err(Error::Unsupported(
                "pidfd_open needs Linux 5.3 or later".into(),
            )),
            Err(e) => Err(Error::os("pidfd_open", &object, e)),
        }
    }

    /// Watches the process `identity` names. `Ok(None)`: it is already dead (its pid is
    /// free or belongs to a process started later).
    ///
    /// # Errors
    /// As [`open`](Self::open), except that a vanished process is `Ok(None)`.
    pub fn open_identity(identity: ProcessIdentity) -> Result<Option<PidFd>> {
        let watch = match PidFd::open(identity.pid) {
            Ok(watch) => watch,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Checked after the descriptor exists: it names the process holding the pid now, so
        // a matching start time proves it is the one we meant.
        match ProcessIdentity::of_pid(identity.pid) {
            Some(now) if now.start_time == identity.start_time && !watch.is_dead()? => {
                Ok(Some(watch))
            }
            _ => Ok(None),
        }
    }

    /// The watched pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process has exited (a zombie counts as exited). Never blocks.
    ///
    /// # Errors
    /// An OS error from `poll`.
    pub fn is_dead(&self) -> Result<bool> {
        self.wait_deadline(Deadline::Now)
    }

    /// Waits until the process exits or `deadline` passes: `Ok(true)` once it has exited.
    ///
    /// # Errors
    /// An OS error from `poll`.
    pub fn wait_deadline(&self, deadline: Deadline) -> Result<bool> {
        crate::fd::wait_ready(self.fd.as_fd(), PollFlags::IN, deadline)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_killed_child_is_reported_at_once() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let watch = PidFd::open(child.id()).unwrap();
        assert!(!watch.is_dead().unwrap());
        let identity = ProcessIdentity::of_pid(child.id()).unwrap();
        assert!(PidFd::open_identity(identity).unwrap().is_some());
        let killed = Instant::now();
        child.kill().unwrap();
        assert!(watch
            .wait_deadline(Deadline::after(Duration::from_secs(10)))
            .unwrap());
        assert!(killed.elapsed() < Duration::from_millis(100));
        child.wait().unwrap();
        assert!(PidFd::open_identity(identity).unwrap().is_none());
    }

    #[test]
    fn bad_pids_are_precise_errors() {
        assert!(matches!(PidFd::open(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            PidFd::open(u32::MAX),
            Err(Error::InvalidArgument(_))
        ));
        // Above the default pid_max of every kernel: nobody holds it.
        assert!(matches!(
            PidFd::open((1 << 22) + 1),
            Err(Error::NotFound { .. })
        ));
        let stranger = ProcessIdentity {
            pid: std::process::id(),
            start_time: 1,
        };
        assert!(PidFd::open_identity(stranger).unwrap().is_none());
    }
}
