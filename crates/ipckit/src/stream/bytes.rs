//! [`ByteStream`]: the kernel's byte stream, as `std::io::Read`/`Write`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::io::Errno;

use super::FramedStream;
use crate::error::{Error, Result};
use crate::fd::{set_nonblocking, wait_ready};
use crate::link::{Deadline, Metadata};

/// A plain byte stream: one or both directions of a pipe, a FIFO, a Unix stream socket or a
/// TCP connection, with no framing at all.
///
/// It implements [`std::io::Read`] (`Ok(0)` once every writer has closed) and
/// [`std::io::Write`] (a peer that is gone is [`std::io::ErrorKind::BrokenPipe`]; SIGPIPE
/// never kills the process on sockets), blocking unless a timeout is set with
/// [`ByteStream::set_read_timeout`] / [`ByteStream::set_write_timeout`]. The deadline-taking
/// [`ByteStream::read_deadline`] / [`ByteStream::write_deadline`] report ipckit's
/// [`Error`] variants instead. The descriptors are non-blocking underneath; ipckit waits with
/// `poll`.
///
/// ```
/// use std::io::{Read, Write};
/// use ipckit::pipe;
///
/// let (mut tx, mut rx) = pipe::pipe_bytes()?;
/// tx.write_all(b"no frames, ")?;
/// tx.write_all(b"just bytes")?;
/// drop(tx);                                   // end of stream for the reader
/// let mut text = String::new();
/// rx.read_to_string(&mut text)?;
/// assert_eq!(text, "no frames, just bytes");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ByteStream {
    pub(super) reader: Option<OwnedFd>,
    pub(super) writer: Option<OwnedFd>,
    pub(super) socket: bool,
    /// Unix stream sockets: framed reads use `recvmsg`, to receive passed descriptors.
    pub(super) passes_fds: bool,
    /// A FIFO's read end: end-of-file before poll said ready means "no writer yet".
    pub(super) fifo_reader: bool,
    /// A FIFO's write end opened by path: framed writes take the FIFO's `flock`.
    pub(super) fifo_writer: bool,
    pub(super) read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
    /// `/dev/null`, standing in for a write-only end's descriptor once `close_write` closed it,
    /// so that `as_fd` always has one.
    pub(super) closed: Option<OwnedFd>,
    /// An inherited descriptor that was blocking: made blocking again on drop.
    pub(super) restore_blocking: bool,
    pub(super) peer: Metadata,
    pub(super) object: String,
}

impl ByteStream {
    /// Builds a stream over `reader` and/or `writer` (they may be the same socket, dup'ed).
    /// Both are switched to non-blocking mode.
    ///
    /// # Errors
    /// An OS error if the descriptors cannot be configured.
    pub(crate) fn new(
        reader: Option<OwnedFd>,
        writer: Option<OwnedFd>,
        socket: bool,
        object: String,
    ) -> Result<ByteStream> {
        for fd in reader.iter().chain(writer.iter()) {
            set_nonblocking(fd.as_fd(), &object)?;
        }
        // `ByteStream` has a `Drop`, so no struct update from `empty()`: set the fields.
        let mut stream = ByteStream::empty();
        stream.reader = reader;
        stream.writer = writer;
        stream.socket = socket;
        stream.object = object;
        Ok(stream)
    }

    /// Both directions over one socket.
    pub(crate) fn from_socket(socket: OwnedFd, object: String) -> Result<ByteStream> {
        let writer = socket
            .try_clone()
            .map_err(|e| Error::os("dup", object.clone(), e))?;
        ByteStream::new(Some(socket), Some(writer), true, object)
    }

    /// A reader and a writer made separately (a FIFO `Duplex`), joined into one two-way
    /// stream.
    pub(crate) fn join(
        mut reader: ByteStream,
        mut writer: ByteStream,
        object: String,
    ) -> ByteStream {
        let mut joined = ByteStream::empty();
        joined.reader = reader.reader.take();
        joined.writer = writer.writer.take();
        joined.fifo_reader = reader.fifo_reader;
        joined.fifo_writer = writer.fifo_writer;
        joined.object = object;
        joined
    }

    pub(super) fn empty() -> ByteStream {
        ByteStream {
            reader: None,
            writer: None,
            socket: false,
            passes_fds: false,
            fifo_reader: false,
            fifo_writer: false,
            read_timeout: None,
            write_timeout: None,
            closed: None,
            restore_blocking: false,
            peer: Metadata::default(),
            object: String::new(),
        }
    }

    /// A FIFO's read end reads end-of-file until a writer has come: wait for one (poll only
    /// reports a hang-up once a writer has come and gone) instead of calling that the end.
    pub(crate) fn wait_for_first_writer(&mut self) {
        self.fifo_reader = true;
    }

    /// A FIFO's write end opened by path: framed writes lock (see the module docs).
    pub(crate) fn lock_framed_writes(&mut self) {
        self.fifo_writer = true;
    }

    /// Records what the kernel told us about the peer (Unix sockets).
    pub(crate) fn set_unix_peer(&mut self, peer: Metadata) {
        self.peer = peer;
        self.passes_fds = true;
    }

    /// What the kernel says about the peer: its pid and uid on a Unix socket (`SO_PEERCRED`),
    /// nothing on other streams.
    pub fn peer(&self) -> Metadata {
        self.peer
    }

    /// Sets how long [`std::io::Read::read`] waits for bytes before failing with
    /// [`std::io::ErrorKind::TimedOut`]; `None` (the default) waits as long as it takes.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Sets how long [`std::io::Write::write`] waits for room before failing with
    /// [`std::io::ErrorKind::TimedOut`]; `None` (the default) waits as long as it takes.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// The framed message endpoint on top of this stream (the same as
    /// [`FramedStream::over`]).
    pub fn framed(self) -> FramedStream {
        FramedStream::over(self)
    }

    /// Takes the descriptors apart: `(receiving, sending)`, say to hand one to a child
    /// process. They are switched back to blocking mode, which every program expects of its
    /// stdin and stdout (best effort: a descriptor that refuses keeps `O_NONBLOCK`).
    pub fn into_fds(mut self) -> (Option<OwnedFd>, Option<OwnedFd>) {
        self.set_blocking();
        (self.reader.take(), self.writer.take())
    }

    /// Clears `O_NONBLOCK` on the descriptors (best effort).
    pub(super) fn set_blocking(&self) {
        for fd in self.reader.iter().chain(self.writer.iter()) {
            if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
                let _ = rustix::fs::fcntl_setfl(fd, flags - rustix::fs::OFlags::NONBLOCK);
            }
        }
    }

    /// A stream over a descriptor inherited from elsewhere (this process's stdin or stdout,
    /// say): its open file is shared with others (a shell, a terminal), so the blocking mode
    /// it had is put back when the stream drops.
    pub(crate) fn inherited(
        reader: Option<OwnedFd>,
        writer: Option<OwnedFd>,
        object: String,
    ) -> Result<ByteStream> {
        let blocking = reader.iter().chain(writer.iter()).all(|fd| {
            rustix::fs::fcntl_getfl(fd)
                .is_ok_and(|flags| !flags.contains(rustix::fs::OFlags::NONBLOCK))
        });
        let mut stream = ByteStream::new(reader, writer, false, object)?;
        stream.restore_blocking = blocking;
        Ok(stream)
    }

    pub(super) fn writer(&self) -> Result<BorrowedFd<'_>> {
        self.writer.as_ref().map(|fd| fd.as_fd()).ok_or_else(|| {
            Error::Unsupported(format!(
                "{} only receives: this end cannot send",
                self.object
            ))
        })
    }

    pub(super) fn reader(&self) -> Result<BorrowedFd<'_>> {
        self.reader.as_ref().map(|fd| fd.as_fd()).ok_or_else(|| {
            Error::Unsupported(format!(
                "{} only sends: this end cannot receive",
                self.object
            ))
        })
    }

    /// Reads what is there, up to `buf.len()` bytes, waiting until `deadline` for at least
    /// one; `Ok(0)` is the end of the stream (every writer closed; an empty `buf`).
    ///
    /// # Errors
    /// [`Error::Empty`] / [`Error::Timeout`] if nothing came by the deadline;
    /// [`Error::Disconnected`] if the connection was reset; [`Error::Unsupported`] on a
    /// write-only end.
    pub fn read_deadline(&mut self, buf: &mut [u8], deadline: Deadline) -> Result<usize> {
        self.read_shared(buf, deadline)
    }

    /// [`ByteStream::read_deadline`] through a shared reference: reading changes nothing in
    /// `self`, so one thread may read while another writes (`impl Read for &ByteStream`).
    fn read_shared(&self, buf: &mut [u8], deadline: Deadline) -> Result<usize> {
        let fd = self.reader()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let mut polled = false;
        loop {
            match rustix::io::read(fd, &mut *buf) {
                Ok(0) if self.fifo_reader && !polled => {
                    polled = true;
                    if !wait_ready(fd, PollFlags::IN, deadline)? {
                        return Err(deadline.recv_expired());
                    }
                }
                Ok(n) => return Ok(n),
                Err(Errno::AGAIN) => {
                    polled = true;
                    if !wait_ready(fd, PollFlags::IN, deadline)? {
                        return Err(deadline.recv_expired());
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::os("read", self.object.clone(), e)),
            }
        }
    }

    /// Writes some of `buf` (at least one byte unless it is empty), waiting until `deadline`
    /// for room; returns how many bytes the kernel took, as `write(2)`.
    ///
    /// # Errors
    /// [`Error::Full`] / [`Error::Timeout`] if no room came by the deadline;
    /// [`Error::Disconnected`] if no reader is left; [`Error::Unsupported`] on a read-only
    /// end.
    pub fn write_deadline(&mut self, buf: &[u8], deadline: Deadline) -> Result<usize> {
        self.write_shared(buf, deadline)
    }

    fn write_shared(&self, buf: &[u8], deadline: Deadline) -> Result<usize> {
        let fd = self.writer()?;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let result = if self.socket {
                rustix::net::send(fd, buf, rustix::net::SendFlags::NOSIGNAL)
            } else {
                rustix::io::write(fd, buf)
            };
            match result {
                Ok(n) => return Ok(n),
                Err(Errno::AGAIN) => {
                    if !wait_ready(fd, PollFlags::OUT, deadline)? {
                        return Err(deadline.send_expired());
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::os("write", self.object.clone(), e)),
            }
        }
    }

    /// Ends this side's writing: the peer reads end-of-file, while this end can still read
    /// (a socket's `shutdown(SHUT_WR)`; a pipe or FIFO end is closed).
    ///
    /// # Errors
    /// An OS error from `shutdown`, or from opening `/dev/null` (which stands in for a
    /// write-only end's closed descriptor, see `AsFd`).
    #[doc(alias = "shutdown")]
    pub fn close_write(&mut self) -> Result<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        if self.socket {
            let fd = self.writer.as_ref().expect("checked above");
            rustix::net::shutdown(fd, rustix::net::Shutdown::Write)
                .map_err(|e| Error::os("shutdown", self.object.clone(), e))?;
        } else if self.reader.is_none() {
            if self.restore_blocking {
                self.set_blocking();
            }
            let null = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::os("open", "/dev/null", e))?;
            self.closed = Some(null);
        }
        self.writer = None;
        Ok(())
    }
}

impl Drop for ByteStream {
    fn drop(&mut self) {
        if self.restore_blocking {
            self.set_blocking();
        }
    }
}

/// An ipckit error as the `std::io` error a reader or writer expects.
fn into_io(error: Error, gone: std::io::ErrorKind) -> std::io::Error {
    match error {
        Error::Os { source, .. } => source,
        Error::Timeout | Error::Full | Error::Empty => std::io::ErrorKind::TimedOut.into(),
        Error::Disconnected => gone.into(),
        other => std::io::Error::other(other),
    }
}

fn deadline_of(timeout: Option<Duration>) -> Deadline {
    timeout.map_or(Deadline::Never, Deadline::after)
}

impl std::io::Read for ByteStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self).read(buf)
    }
}

/// Reads through a shared reference, as `&std::net::TcpStream` does: a `BufReader` over
/// `&stream` can read lines while the same stream writes replies.
impl std::io::Read for &ByteStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_shared(buf, deadline_of(self.read_timeout))
            .map_err(|e| into_io(e, std::io::ErrorKind::ConnectionReset))
    }
}

impl std::io::Write for ByteStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self).write(buf)
    }

    /// Nothing to do: every write goes straight to the kernel.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes through a shared reference (see `impl Read for &ByteStream`).
impl std::io::Write for &ByteStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_shared(buf, deadline_of(self.write_timeout))
            .map_err(|e| into_io(e, std::io::ErrorKind::BrokenPipe))
    }

    /// Nothing to do: every write goes straight to the kernel.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsFd for ByteStream {
    /// The receiving descriptor if there is one, else the sending one (for `poll`); after
    /// [`ByteStream::close_write`] on a write-only end, `/dev/null`, which polls ready at once
    /// (the next read or write then says why it cannot be done).
    fn as_fd(&self) -> BorrowedFd<'_> {
        match (&self.reader, &self.writer, &self.closed) {
            (Some(fd), _, _) | (None, Some(fd), _) | (None, None, Some(fd)) => fd.as_fd(),
            (None, None, None) => unreachable!("close_write leaves /dev/null in place"),
        }
    }
}
