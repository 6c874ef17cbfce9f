//! [`FramedStream`]: length-prefixed messages over a [`ByteStream`].

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::{ByteStream, DEFAULT_FD_LIMIT, PIPE_BUF};
use crate::error::{Error, Result};
use crate::fd::wait_ready;
use crate::frame::{
    ack_frame, data_header, Frame, FrameDecoder, DEFAULT_MAX_MESSAGE, MAX_FRAME, READ_CHUNK,
};
use crate::link::{check_size, Capacity, Deadline, MessageReceiver, MessageSender, Metadata};

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
