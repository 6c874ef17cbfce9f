//! Byte streams (pipes, FIFOs, Unix stream sockets, TCP) in their two forms:
//!
//! - [`ByteStream`]: the plain byte stream the kernel provides, without message boundaries,
//!   implementing [`std::io::Read`] and [`std::io::Write`]. It interoperates with any program:
//!   `echo text > fifo` into an ipckit reader, `cat` on a FIFO an ipckit writer writes,
//!   `grep` between two ipckit ends of a shell pipeline.
//! - [`FramedStream`]: the message endpoint ([`MessageSender`]/[`MessageReceiver`]), an adapter
//!   on top of a [`ByteStream`] that adds the length-prefixed frames of [`crate::frame`]. Both
//!   ends must be framed; a plain tool in between must copy bytes unchanged.
//!
//! The form is chosen explicitly: every mechanism keeps its framed constructors (`pipe::pipe`,
//! `fifo::open_read`, `tcp::connect`, ...) and has byte-stream ones beside them, named with
//! `bytes` (`pipe::pipe_bytes`, `fifo::open_read_bytes`, `tcp::connect_bytes`, ...);
//! [`FramedStream::over`] turns any byte stream into a framed one.
//!
//! # Deadlines and partial frames
//!
//! A frame is never left half-written on a stream: a send whose deadline passes before the
//! first byte is accepted fails with `Full`/`Timeout` and leaves the stream as it was; once the
//! first byte is in the kernel's buffer, the rest of the frame follows even past the deadline
//! (or the send fails with `Disconnected` if the peer goes away).
//!
//! # Several writers on one FIFO
//!
//! The kernel writes at most `PIPE_BUF` (4096) bytes into a pipe atomically; a larger write
//! may be interleaved with other writers' writes, which would mix two frames. A framed FIFO
//! end from [`crate::fifo::open_write`] therefore **locks**: it holds the FIFO's `flock`
//! shared while writing a frame of at most `PIPE_BUF`
//! bytes (atomic anyway, so such writers do not exclude each other) and exclusive while writing
//! a larger one, so no other framed writer's frame lands inside it. The kernel drops the lock
//! when its holder dies. Only writers that take the lock are ordered by it: a plain tool
//! writing into the same FIFO is not, and ends that share one open file (descriptors inherited
//! from one `open`, such as a shell's `> FIFO` given to several children) do not exclude each
//! other. The lock costs two system calls per message, so a [`crate::fifo::Duplex`] side,
//! its FIFO's only writer by construction, does not take it; nor does a plain [`ByteStream`],
//! which is the kernel's byte stream, as `write(2)`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fd::{set_nonblocking, wait_ready, MAX_FDS};
use crate::frame::{
    ack_frame, data_header, Frame, FrameDecoder, DEFAULT_MAX_MESSAGE, MAX_FRAME, READ_CHUNK,
};
use crate::link::{check_size, Capacity, Deadline, MessageReceiver, MessageSender, Metadata};

/// Writes to a pipe of at most this many bytes are atomic (`pipe(7)`).
const PIPE_BUF: usize = 4096;
/// Descriptors a Unix stream keeps queued for [`FramedStream::take_fds`] unless told
/// otherwise; more are closed as they arrive.
pub const DEFAULT_FD_LIMIT: usize = 4 * MAX_FDS;

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
    reader: Option<OwnedFd>,
    writer: Option<OwnedFd>,
    socket: bool,
    /// Unix stream sockets: framed reads use `recvmsg`, to receive passed descriptors.
    passes_fds: bool,
    /// A FIFO's read end: end-of-file before poll said ready means "no writer yet".
    fifo_reader: bool,
    /// A FIFO's write end opened by path: framed writes take the FIFO's `flock`.
    fifo_writer: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// `/dev/null`, standing in for a write-only end's descriptor once `close_write` closed it,
    /// so that `as_fd` always has one.
    closed: Option<OwnedFd>,
    /// An inherited descriptor that was blocking: made blocking again on drop.
    restore_blocking: bool,
    peer: Metadata,
    object: String,
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
        Ok(ByteStream {
            reader,
            writer,
            socket,
            passes_fds: false,
            fifo_reader: false,
            fifo_writer: false,
            read_timeout: None,
            write_timeout: None,
            closed: None,
            restore_blocking: false,
            peer: Metadata::default(),
            object,
        })
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

    fn empty() -> ByteStream {
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
    fn set_blocking(&self) {
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

    fn writer(&self) -> Result<BorrowedFd<'_>> {
        self.writer.as_ref().map(|fd| fd.as_fd()).ok_or_else(|| {
            Error::Unsupported(format!(
                "{} only receives: this end cannot send",
                self.object
            ))
        })
    }

    fn reader(&self) -> Result<BorrowedFd<'_>> {
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

/// The FIFO's `flock`, held while one frame is written (see the module docs); dropped, it
/// unlocks.
struct FifoLock<'a> {
    fd: BorrowedFd<'a>,
}

impl<'a> FifoLock<'a> {
    /// Takes the lock, shared for a frame the kernel writes atomically, exclusive for a larger
    /// one, waiting until `deadline`.
    fn take(fd: BorrowedFd<'a>, len: usize, deadline: Deadline, object: &str) -> Result<Self> {
        let exclusive = len > PIPE_BUF;
        let (blocking, nonblocking) = if exclusive {
            (
                FlockOperation::LockExclusive,
                FlockOperation::NonBlockingLockExclusive,
            )
        } else {
            (
                FlockOperation::LockShared,
                FlockOperation::NonBlockingLockShared,
            )
        };
        loop {
            let op = if deadline == Deadline::Never {
                blocking
            } else {
                nonblocking
            };
            match rustix::fs::flock(fd, op) {
                Ok(()) => return Ok(FifoLock { fd }),
                Err(Errno::WOULDBLOCK) if !deadline.expired() => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(Errno::WOULDBLOCK) => return Err(deadline.send_expired()),
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::os("flock", object, e)),
            }
        }
    }
}

impl Drop for FifoLock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would unlock too; an error here leaves nothing to undo.
        let _ = rustix::fs::flock(self.fd, FlockOperation::Unlock);
    }
}

/// A framed message endpoint over a byte stream: one or both directions.
///
/// An adapter on top of a [`ByteStream`] ([`FramedStream::over`]); every byte-stream
/// mechanism's framed constructors build one: pipes, FIFOs, Unix stream sockets and TCP
/// (`ipckit::socket::FramedStream` is the same type). With
/// [`Capacity::Rendezvous`] (two-way links only) every message is
/// acknowledged by the receiver and `send` returns only once that acknowledgement arrives.
#[derive(Debug)]
pub struct FramedStream {
    io: ByteStream,
    max: usize,
    rendezvous: bool,
    decoder: FrameDecoder,
    /// Data frames that arrived while we waited for an acknowledgement.
    inbox: VecDeque<Vec<u8>>,
    /// Acknowledgements owed to sends that timed out: absorbed when they arrive.
    stale_acks: u64,
    /// Acknowledgements that arrived while we were reading data.
    acks: u64,
    /// Descriptors passed along with the stream (Unix sockets), at most `fd_limit`.
    fds: VecDeque<OwnedFd>,
    fd_limit: usize,
}

impl FramedStream {
    /// Builds an endpoint over `reader` and/or `writer` (they may be the same socket, dup'ed).
    /// Both are switched to non-blocking mode.
    ///
    /// # Errors
    /// An OS error if the descriptors cannot be configured.
    pub(crate) fn new(
        reader: Option<OwnedFd>,
        writer: Option<OwnedFd>,
        socket: bool,
        object: String,
    ) -> Result<FramedStream> {
        Ok(FramedStream::over(ByteStream::new(
            reader, writer, socket, object,
        )?))
    }

    /// The framed message endpoint on top of a byte stream: what it sends and receives are
    /// length-prefixed frames ([`crate::frame`]), so the peer must be framed too. Timeouts set
    /// on the byte stream do not apply: every framed operation takes its own deadline.
    pub fn over(io: ByteStream) -> FramedStream {
        FramedStream {
            io,
            max: DEFAULT_MAX_MESSAGE,
            rendezvous: false,
            decoder: FrameDecoder::new(DEFAULT_MAX_MESSAGE),
            inbox: VecDeque::new(),
            stale_acks: 0,
            acks: 0,
            fds: VecDeque::new(),
            fd_limit: DEFAULT_FD_LIMIT,
        }
    }

    /// A reader and a writer made separately (a FIFO `Duplex`),
    /// joined into one two-way endpoint.
    pub(crate) fn join(
        reader: FramedStream,
        writer: FramedStream,
        object: String,
    ) -> Result<FramedStream> {
        Ok(FramedStream::over(ByteStream::join(
            reader.io, writer.io, object,
        )))
    }

    /// Sets the largest message, in bytes (default 16 MiB; at most 2 GiB - 1). Both ends must
    /// agree: a larger frame is refused on receipt.
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max = max.min(MAX_FRAME);
        self.decoder.set_max(self.max);
        self
    }

    /// Applies a capacity: `Bounded(n >= 1)` is the kernel's buffer (nothing to do);
    /// `Rendezvous` needs both directions; `Unbounded` cannot be honoured by a kernel buffer;
    /// `Bounded(0)` is refused, as everywhere ([`Capacity`]).
    pub(crate) fn with_capacity(mut self, capacity: Capacity) -> Result<Self> {
        match capacity.check()? {
            Capacity::Bounded(_) => Ok(self),
            Capacity::Rendezvous if self.io.reader.is_some() && self.io.writer.is_some() => {
                self.rendezvous = true;
                Ok(self)
            }
            Capacity::Rendezvous => Err(Error::Unsupported(format!(
                "{} is one-way, so the receiver cannot acknowledge: rendezvous needs a two-way \
                 link (a Unix or TCP socket, a FIFO Duplex, or a mailbox)",
                self.io.object
            ))),
            Capacity::Unbounded => Err(Error::Unsupported(format!(
                "{} is bounded by the kernel's buffer; for an unbounded link use a mailbox \
                 created with Capacity::Unbounded",
                self.io.object
            ))),
        }
    }

    /// Sends `msg` with `fds` attached (Unix stream sockets): the descriptors travel with the
    /// frame's first bytes and the receiver gets them from [`FramedStream::take_fds`].
    ///
    /// # Errors
    /// As [`MessageSender::send_deadline`]; [`Error::Unsupported`] on other streams.
    pub fn send_with_fds(
        &mut self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Deadline,
    ) -> Result<()> {
        if !self.io.passes_fds {
            return Err(Error::Unsupported(format!(
                "{} cannot pass file descriptors: only Unix sockets can",
                self.io.object
            )));
        }
        check_size(msg.len(), self.max)?;
        let fd = self.writer()?;
        let mut frame = data_header(msg.len()).to_vec();
        frame.extend_from_slice(msg);
        let sent = crate::fd::send_with_fds(fd, &frame, fds, deadline)
            .map_err(|e| Error::os("sendmsg", self.io.object.clone(), e))?
            .ok_or_else(|| deadline.send_expired())?;
        self.write_frame(&[&frame[sent..]], Deadline::Never)?;
        if self.rendezvous {
            self.await_ack(deadline)?;
        }
        Ok(())
    }

    /// Takes the descriptors apart: `(receiving, sending)`, say to hand one to a child
    /// process, switched back to blocking mode ([`ByteStream::into_fds`]). Buffered bytes not
    /// yet decoded are dropped.
    pub fn into_fds(self) -> (Option<OwnedFd>, Option<OwnedFd>) {
        self.io.into_fds()
    }

    /// Bytes received and not yet decoded: a frame is partly read.
    pub(crate) fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Descriptors received with the stream so far (Unix stream sockets), oldest first.
    /// At most the limit (see [`FramedStream::with_fd_limit`]) are kept between calls.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.fds.drain(..).collect()
    }

    /// Sets how many received descriptors are kept for [`FramedStream::take_fds`] (default
    /// [`DEFAULT_FD_LIMIT`]); descriptors arriving beyond it are closed at once, so a peer
    /// cannot fill this process's descriptor table. `0` closes every descriptor received.
    pub fn with_fd_limit(mut self, limit: usize) -> Self {
        self.fd_limit = limit;
        self.fds.truncate(limit);
        self
    }

    fn writer(&self) -> Result<BorrowedFd<'_>> {
        self.io.writer()
    }

    fn reader(&self) -> Result<BorrowedFd<'_>> {
        self.io.reader()
    }

    /// Whether a frame of `len` bytes can be written at once without blocking, so that a
    /// non-blocking or timed send never leaves half a frame behind.
    ///
    /// A pipe takes a write of up to `PIPE_BUF` (4096) bytes whole or not at all, so small
    /// frames need no check; a larger one waits until the queued bytes leave half the pipe
    /// free beyond it (the kernel packs writes into pages, so free bytes are a guess). A socket polls writable
    /// while at least half its send buffer is free. A frame larger than the whole buffer can
    /// never go at once: it starts as soon as the buffer is empty and is finished even past
    /// the deadline.
    fn fits_now(&self, fd: BorrowedFd<'_>, len: usize) -> Result<bool> {
        if self.io.socket {
            // Writable means half the send buffer is free: enough for any frame up to that.
            return wait_ready(fd, PollFlags::OUT, Deadline::Now);
        }
        if len <= PIPE_BUF {
            return Ok(true);
        }
        let size = rustix::pipe::fcntl_getpipe_size(fd)
            .map_err(|e| Error::os("fcntl(F_GETPIPE_SZ)", self.io.object.clone(), e))?;
        let queued = rustix::io::ioctl_fionread(fd)
            .map_err(|e| Error::os("ioctl(FIONREAD)", self.io.object.clone(), e))?
            as usize;
        // The kernel packs writes into pages, so free bytes are not all usable: keep half the
        // pipe as slack. A frame larger than that waits for an empty pipe.
        Ok(queued == 0 || queued + len + size / 2 <= size)
    }

    fn wait_until_fits(&self, fd: BorrowedFd<'_>, len: usize, deadline: Deadline) -> Result<()> {
        loop {
            if self.fits_now(fd, len)? {
                return Ok(());
            }
            if deadline.expired() {
                return Err(deadline.send_expired());
            }
            if !wait_ready(fd, PollFlags::OUT, deadline)? {
                return Err(deadline.send_expired());
            }
            // Writable is not the same as "fits": give the reader a moment.
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// Writes `parts` as one frame, in as few system calls as the kernel allows; see the
    /// module docs for what a deadline means mid-frame.
    pub(crate) fn write_frame(&mut self, parts: &[&[u8]], deadline: Deadline) -> Result<()> {
        let fd = self.writer()?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let _lock = if self.io.fifo_writer {
            Some(FifoLock::take(fd, len, deadline, &self.io.object)?)
        } else {
            None
        };
        if deadline != Deadline::Never {
            self.wait_until_fits(fd, len, deadline)?;
        }
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        let mut left = len;
        let mut written_any = false;
        while left > 0 {
            let result = if self.io.socket {
                let mut control = rustix::net::SendAncillaryBuffer::default();
                rustix::net::sendmsg(fd, slices, &mut control, rustix::net::SendFlags::NOSIGNAL)
            } else {
                rustix::io::writev(fd, slices)
            };
            match result {
                Ok(n) => {
                    written_any = true;
                    left -= n;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(Errno::AGAIN) => {
                    let wait = if written_any {
                        Deadline::Never
                    } else {
                        deadline
                    };
                    if !wait_ready(fd, PollFlags::OUT, wait)? {
                        return Err(deadline.send_expired());
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::os("write", self.io.object.clone(), e)),
            }
        }
        Ok(())
    }

    /// Reads until a frame is decoded or `deadline` passes.
    fn read_frame(&mut self, deadline: Deadline) -> Result<Frame> {
        let mut polled = false;
        loop {
            if let Some(frame) = self.decoder.decode()? {
                return Ok(frame);
            }
            self.reader()?;
            let fd = self.io.reader.as_ref().expect("checked above").as_fd();
            let fds = if self.io.passes_fds {
                Some((&mut self.fds, self.fd_limit))
            } else {
                None
            };
            match read_once(&mut self.decoder, fd, fds) {
                Ok(0) if self.io.fifo_reader && !polled => {
                    polled = true;
                    if !wait_ready(self.reader()?, PollFlags::IN, deadline)? {
                        return Err(deadline.recv_expired());
                    }
                }
                Ok(0) => return Err(self.decoder.end_of_stream()),
                Ok(_) => {}
                Err(Errno::AGAIN) => {
                    polled = true;
                    if !wait_ready(self.reader()?, PollFlags::IN, deadline)? {
                        return Err(deadline.recv_expired());
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    let err = Error::os("read", self.io.object.clone(), e);
                    return Err(match err {
                        Error::Disconnected => self.decoder.end_of_stream(),
                        other => other,
                    });
                }
            }
        }
    }

    /// Waits for the acknowledgement of the message just sent (rendezvous).
    fn await_ack(&mut self, deadline: Deadline) -> Result<()> {
        loop {
            if self.acks > 0 {
                self.acks -= 1;
                return Ok(());
            }
            match self.read_frame(deadline) {
                Ok(Frame::Ack) if self.stale_acks > 0 => self.stale_acks -= 1,
                Ok(Frame::Ack) => return Ok(()),
                Ok(Frame::Data(data)) => self.inbox.push_back(data),
                Err(e) if e.is_transient() => {
                    // The message is in the kernel's buffer and may still be taken: its
                    // acknowledgement, if it comes, belongs to no send.
                    self.stale_acks += 1;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads once from `fd` into the decoder's buffer (at most [`READ_CHUNK`] bytes); `Ok(0)` is
/// end of stream. With `fds`, reads with `recvmsg` and queues descriptors passed along (Unix
/// sockets), up to the limit given.
fn read_once(
    decoder: &mut FrameDecoder,
    fd: BorrowedFd<'_>,
    fds: Option<(&mut VecDeque<OwnedFd>, usize)>,
) -> rustix::io::Result<usize> {
    decoder.fill(|buf| match fds {
        Some((fds, limit)) => {
            let mut chunk = vec![0u8; READ_CHUNK.min(buf.capacity() - buf.len())];
            let (n, _) = crate::fd::recv_with_fds(
                fd,
                &mut chunk,
                fds,
                limit,
                rustix::net::RecvFlags::empty(),
            )?;
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        None => {
            let spare = rustix::buffer::spare_capacity(buf);
            rustix::io::read(fd, spare)
        }
    })
}

impl MessageSender for FramedStream {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        check_size(msg.len(), self.max)?;
        self.write_frame(&[&data_header(msg.len()), msg], deadline)?;
        if self.rendezvous {
            self.await_ack(deadline)?;
        }
        Ok(())
    }

    fn max_message_size(&self) -> usize {
        self.max
    }
}

impl MessageReceiver for FramedStream {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        let data = match self.inbox.pop_front() {
            Some(data) => data,
            None => loop {
                match self.read_frame(deadline)? {
                    Frame::Data(data) => break data,
                    Frame::Ack if self.stale_acks > 0 => self.stale_acks -= 1,
                    Frame::Ack => self.acks += 1,
                }
            },
        };
        if self.rendezvous {
            self.write_frame(&[&ack_frame()], Deadline::Never)?;
        }
        *buf = data;
        Ok(self.io.peer)
    }
}

impl AsFd for FramedStream {
    /// The receiving descriptor if there is one, else the sending one (for `poll`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use crate::link::{Deadline, MessageReceiver};

    /// Issue 13: a peer sending many descriptors cannot fill the receiver's table.
    #[test]
    fn descriptors_beyond_the_limit_are_closed_as_they_arrive() {
        let (a, b) = crate::socket::unix::stream_pair().unwrap();
        let (mut a, mut b) = (a, b.with_fd_limit(4));
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = vec![file.as_fd(); crate::fd::MAX_FDS];
        for _ in 0..10 {
            a.send_with_fds(b"x", &fds, Deadline::Never).unwrap();
        }
        for _ in 0..10 {
            b.recv_deadline(&mut Vec::new(), Deadline::Never).unwrap();
        }
        assert_eq!(b.take_fds().len(), 4);
    }
}
