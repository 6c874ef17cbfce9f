//! File-descriptor plumbing shared by every descriptor-based mechanism: waiting with a
//! deadline (`poll`), non-blocking mode (`O_NONBLOCK`), and passing descriptors over Unix
//! sockets (`SCM_RIGHTS`).
//!
//! A leaf module: it imports only the error and deadline vocabulary, so the framing codec,
//! the byte-stream endpoint, sockets and signals can all use it without depending on each
//! other.
//!
//! # References
//! - [`poll(2)`](https://man7.org/linux/man-pages/man2/poll.2.html),
//!   [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html),
//!   [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html) (`SCM_RIGHTS`)

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Error, Result};
use crate::link::Deadline;

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 16;

/// Waits until `fd` is ready for `events` or `deadline` passes; `Ok(false)` on timeout.
/// Hang-up and error conditions count as ready: the next read or write reports them.
pub(crate) fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Deadline,
) -> Result<bool> {
    wait_any(&[fd], events, deadline)
}

/// Waits until any of `fds` is ready for `events` (or hangs up) or `deadline` passes;
/// `Ok(false)` on timeout. One `poll` for them all: idle descriptors cost nothing.
pub(crate) fn wait_any(
    fds: &[BorrowedFd<'_>],
    events: PollFlags,
    deadline: Deadline,
) -> Result<bool> {
    poll_until(fds, events, deadline).map_err(|e| Error::os("poll", "descriptors", e))
}

fn poll_until(
    fds: &[BorrowedFd<'_>],
    events: PollFlags,
    deadline: Deadline,
) -> rustix::io::Result<bool> {
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, events)).collect();
    loop {
        let timeout = deadline.remaining().map(|left| rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        });
        match rustix::event::poll(&mut polled, timeout.as_ref()) {
            Ok(0) => {
                if deadline.expired() {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sets `O_NONBLOCK` on `fd`: ipckit waits with `poll`, so that deadlines hold.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, object: &str) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| Error::os("fcntl", object, e))?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| Error::os("fcntl", object, e))
}

/// `recvmsg` into `buf` with `flags`, queueing the descriptors that came along; returns
/// (bytes received, whether the message was truncated).
///
/// At most `limit` descriptors are kept in `fds`: any beyond are closed at once, so that a
/// peer sending descriptors nobody asked for cannot fill this process's descriptor table.
pub(crate) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    limit: usize,
    flags: RecvFlags,
) -> rustix::io::Result<(usize, bool)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(fd, &mut iov, &mut control, flags | RecvFlags::CMSG_CLOEXEC)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            for received in received {
                if fds.len() < limit {
                    fds.push_back(received);
                }
                // Otherwise `received` drops here: closed before the next read.
            }
        }
    }
    let truncated = msg.flags.contains(rustix::net::ReturnFlags::TRUNC);
    Ok((msg.bytes, truncated))
}

/// `sendmsg` of `bytes` with `fds` attached, once `fd` is writable; returns how many bytes
/// were sent, or `None` if `deadline` passed before the socket became writable.
pub(crate) fn send_with_fds(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Deadline,
) -> rustix::io::Result<Option<usize>> {
    if fds.len() > MAX_FDS {
        return Err(Errno::TOOMANYREFS);
    }
    if !poll_until(&[fd], PollFlags::OUT, deadline)? {
        return Ok(None);
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    let iov = [std::io::IoSlice::new(bytes)];
    loop {
        match rustix::net::sendmsg(fd, &iov, &mut control, SendFlags::NOSIGNAL) {
            Err(Errno::AGAIN) => {
                poll_until(&[fd], PollFlags::OUT, Deadline::Never)?;
            }
            Err(Errno::INTR) => {}
            other => return other.map(Some),
        }
    }
}

/// The credentials the kernel recorded for the peer of socket `fd` (`SO_PEERCRED`), as
/// `(pid, uid, gid)`; `None` when there is no peer (an unconnected socket, or one whose peer
/// is not a local process: the kernel then reports pid 0).
///
/// rustix's `socket_peercred` reads the pid into a non-zero type, which a pid of 0 would
/// violate, so the option is read here through libc.
///
/// # Errors
/// The `getsockopt` failure (`ENOTSOCK`, `EBADF`...).
pub(crate) fn peer_ucred(fd: BorrowedFd<'_>) -> std::io::Result<Option<(u32, u32, u32)>> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable `ucred` and `len` its size; the kernel writes at
    // most `len` bytes and any bit pattern is a valid `ucred` (three integers).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if cred.pid <= 0 {
        return Ok(None);
    }
    Ok(Some((cred.pid as u32, cred.uid, cred.gid)))
}
