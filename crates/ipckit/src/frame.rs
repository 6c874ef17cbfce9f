//! Length-prefixed framing, and the one framed endpoint every byte-stream mechanism uses
//! (pipes, FIFOs, Unix stream sockets, TCP).
//!
//! # Wire format
//!
//! ```text
//! +----------------------+-------------------+
//! | header: u32 LE       | payload           |
//! +----------------------+-------------------+
//!   bit 31 clear: a data frame; bits 0..31 are the payload length
//!   bit 31 set:   a control frame; 0x8000_0000 is an acknowledgement (rendezvous), no payload
//! ```
//!
//! The decoder never trusts a length: a frame longer than the link's maximum message size is
//! [`Error::MessageTooLarge`] before a byte of it is buffered, and the buffer only ever grows
//! by what actually arrived, never by what a header claims.
//!
//! # Deadlines and partial frames
//!
//! A frame is never left half-written on a stream: a send whose deadline passes before the
//! first byte is accepted fails with `Full`/`Timeout` and leaves the stream as it was; once the
//! first byte is in the kernel's buffer, the rest of the frame follows even past the deadline
//! (or the send fails with `Disconnected` if the peer goes away).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender, Metadata};

/// Size of a frame header, in bytes.
pub const HEADER_LEN: usize = 4;
/// The largest payload a frame header can describe.
pub const MAX_FRAME: usize = (1 << 31) - 1;
/// Default maximum message size of framed links: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

const CONTROL_BIT: u32 = 1 << 31;
const ACK: u32 = CONTROL_BIT;
/// Writes to a pipe of at most this many bytes are atomic (`pipe(7)`).
const PIPE_BUF: usize = 4096;
/// Bytes read from the kernel per `read`: the decoder's buffer grows by at most this.
const READ_CHUNK: usize = 64 << 10;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message.
    Data(Vec<u8>),
    /// A rendezvous acknowledgement: the peer has taken one message.
    Ack,
}

/// Encodes the header of a data frame of `len` bytes.
pub fn data_header(len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= MAX_FRAME);
    (len as u32).to_le_bytes()
}

/// The bytes of an acknowledgement frame.
pub fn ack_frame() -> [u8; HEADER_LEN] {
    ACK.to_le_bytes()
}

/// An incremental frame decoder: feed it bytes as they arrive, take frames out.
///
/// ```
/// use ipckit::frame::{data_header, Frame, FrameDecoder};
///
/// let mut decoder = FrameDecoder::new(1024);
/// decoder.extend(&data_header(2));
/// assert_eq!(decoder.decode().unwrap(), None);      // header alone: not a frame yet
/// decoder.extend(b"hi");
/// assert_eq!(decoder.decode().unwrap(), Some(Frame::Data(b"hi".to_vec())));
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// A decoder for frames of at most `max` payload bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            max: max.min(MAX_FRAME),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Appends bytes that arrived.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 && (self.start == self.buf.len() || self.start > self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Takes the next complete frame out, if one is buffered.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a length over the maximum, [`Error::Corrupt`] for an
    /// unknown control frame. After an error the stream cannot be resynchronised.
    pub fn decode(&mut self) -> Result<Option<Frame>> {
        let pending = &self.buf[self.start..];
        if pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let raw = u32::from_le_bytes(pending[..HEADER_LEN].try_into().expect("4 bytes"));
        if raw & CONTROL_BIT != 0 {
            if raw != ACK {
                return Err(Error::corrupt(
                    "frame",
                    format!("unknown control frame {raw:#010x}"),
                ));
            }
            self.start += HEADER_LEN;
            return Ok(Some(Frame::Ack));
        }
        let len = raw as usize;
        if len > self.max {
            return Err(Error::MessageTooLarge {
                size: len,
                max: self.max,
            });
        }
        if pending.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = pending[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(Frame::Data(payload)))
    }

    /// What end of stream means now: `Disconnected` between frames, `Corrupt` inside one.
    pub fn end_of_stream(&self) -> Error {
        match self.buffered() {
            0 => Error::Disconnected,
            n => Error::corrupt(
                "frame",
                format!("the stream ended {n} bytes into a frame (truncated)"),
            ),
        }
    }

    /// Reads once from `fd` into the buffer (at most 64 KiB). `Ok(0)` is end of stream.
    /// With `fds`, reads with `recvmsg` and queues descriptors passed along (Unix sockets).
    fn read_from(
        &mut self,
        fd: BorrowedFd<'_>,
        fds: Option<&mut VecDeque<OwnedFd>>,
    ) -> rustix::io::Result<usize> {
        self.compact();
        self.buf.reserve(READ_CHUNK);
        match fds {
            Some(fds) => {
                let mut chunk = vec![0u8; READ_CHUNK.min(self.buf.capacity() - self.buf.len())];
                let n = crate::socket::recv_with_fds(fd, &mut chunk, fds)?;
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            None => {
                let spare = rustix::buffer::spare_capacity(&mut self.buf);
                rustix::io::read(fd, spare)
            }
        }
    }
}

/// Waits until `fd` is ready for `events` or `deadline` passes; `Ok(false)` on timeout.
/// Hang-up and error conditions count as ready: the next read or write reports them.
pub(crate) fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Deadline,
) -> Result<bool> {
    loop {
        let timeout = deadline.remaining().map(|left| rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        });
        let mut fds = [PollFd::new(&fd, events)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => {
                if deadline.expired() {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => {}
            Err(e) => return Err(Error::os("poll", "stream", e)),
        }
    }
}

/// Sets `O_NONBLOCK` on `fd`: ipckit waits with `poll`, so that deadlines hold.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, object: &str) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| Error::os("fcntl", object, e))?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| Error::os("fcntl", object, e))
}

/// A framed message endpoint over a byte stream: one or both directions.
///
/// Every byte-stream mechanism builds one of these: [`crate::pipe`], [`crate::fifo`],
/// [`crate::socket::unix::UnixStream`], [`crate::socket::tcp`]. With
/// [`Capacity::Rendezvous`](crate::Capacity::Rendezvous) (two-way links only) every message is
/// acknowledged by the receiver and `send` returns only once that acknowledgement arrives.
#[derive(Debug)]
pub struct FramedStream {
    reader: Option<OwnedFd>,
    writer: Option<OwnedFd>,
    socket: bool,
    /// Unix stream sockets read with `recvmsg`, to receive passed descriptors.
    passes_fds: bool,
    /// A FIFO's read end: end-of-file before poll said ready means "no writer yet".
    fifo_reader: bool,
    max: usize,
    rendezvous: bool,
    decoder: FrameDecoder,
    /// Data frames that arrived while we waited for an acknowledgement.
    inbox: VecDeque<Vec<u8>>,
    /// Acknowledgements owed to sends that timed out: absorbed when they arrive.
    stale_acks: u64,
    /// Acknowledgements that arrived while we were reading data.
    acks: u64,
    /// Descriptors passed along with the stream (Unix sockets).
    fds: VecDeque<OwnedFd>,
    peer: Metadata,
    object: String,
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
        for fd in reader.iter().chain(writer.iter()) {
            set_nonblocking(fd.as_fd(), &object)?;
        }
        Ok(FramedStream {
            reader,
            writer,
            socket,
            passes_fds: false,
            fifo_reader: false,
            max: DEFAULT_MAX_MESSAGE,
            rendezvous: false,
            decoder: FrameDecoder::new(DEFAULT_MAX_MESSAGE),
            inbox: VecDeque::new(),
            stale_acks: 0,
            acks: 0,
            fds: VecDeque::new(),
            peer: Metadata::default(),
            object,
        })
    }

    /// A reader and a writer made separately (a FIFO [`Duplex`](crate::fifo::Duplex)),
    /// joined into one two-way endpoint.
    pub(crate) fn join(
        reader: FramedStream,
        writer: FramedStream,
        object: String,
    ) -> Result<FramedStream> {
        let mut joined = FramedStream::new(reader.reader, writer.writer, false, object)?;
        joined.fifo_reader = reader.fifo_reader;
        Ok(joined)
    }

    /// A FIFO's read end reads end-of-file until a writer has come: wait for one (poll only
    /// reports a hang-up once a writer has come and gone) instead of calling that a hang-up.
    pub(crate) fn wait_for_first_writer(&mut self) {
        self.fifo_reader = true;
    }

    /// Both directions over one socket.
    pub(crate) fn from_socket(socket: OwnedFd, object: String) -> Result<FramedStream> {
        let writer = socket
            .try_clone()
            .map_err(|e| Error::os("dup", object.clone(), e))?;
        FramedStream::new(Some(socket), Some(writer), true, object)
    }

    /// Sets the largest message, in bytes (default 16 MiB; at most 2 GiB - 1). Both ends must
    /// agree: a larger frame is refused on receipt.
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max = max.min(MAX_FRAME);
        self.decoder.max = self.max;
        self
    }

    /// Applies a capacity: `Bounded(n >= 1)` is the kernel's buffer (nothing to do);
    /// `Rendezvous` needs both directions; `Unbounded` cannot be honoured by a kernel buffer;
    /// `Bounded(0)` is refused, as everywhere ([`Capacity`](crate::Capacity)).
    pub(crate) fn with_capacity(mut self, capacity: crate::Capacity) -> Result<Self> {
        match capacity.check()? {
            crate::Capacity::Bounded(_) => Ok(self),
            crate::Capacity::Rendezvous if self.reader.is_some() && self.writer.is_some() => {
                self.rendezvous = true;
                Ok(self)
            }
            crate::Capacity::Rendezvous => Err(Error::Unsupported(format!(
                "{} is one-way, so the receiver cannot acknowledge: rendezvous needs a two-way \
                 link (a Unix or TCP socket, a FIFO Duplex, or a mailbox)",
                self.object
            ))),
            crate::Capacity::Unbounded => Err(Error::Unsupported(format!(
                "{} is bounded by the kernel's buffer; for an unbounded link use a mailbox \
                 created with Capacity::Unbounded",
                self.object
            ))),
        }
    }

    /// Records what the kernel told us about the peer, and reads with `recvmsg` so that
    /// descriptors passed along arrive (Unix sockets).
    pub(crate) fn set_unix_peer(&mut self, peer: Metadata) {
        self.peer = peer;
        self.passes_fds = true;
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
        check_size(msg.len(), self.max)?;
        if !self.passes_fds {
            return Err(Error::Unsupported(format!(
                "{} cannot pass file descriptors: only Unix sockets can",
                self.object
            )));
        }
        let fd = self.writer()?;
        let mut frame = data_header(msg.len()).to_vec();
        frame.extend_from_slice(msg);
        if !wait_ready(fd, PollFlags::OUT, deadline)? {
            return Err(deadline.send_expired());
        }
        let sent = crate::socket::send_with_fds(fd, &frame, fds)
            .map_err(|e| Error::os("sendmsg", self.object.clone(), e))?;
        self.write_frame(&[&frame[sent..]], Deadline::Never)?;
        if self.rendezvous {
            self.await_ack(deadline)?;
        }
        Ok(())
    }

    /// Takes the descriptors apart: `(receiving, sending)`, say to hand one to a child
    /// process. Buffered bytes not yet decoded are dropped.
    pub fn into_fds(self) -> (Option<OwnedFd>, Option<OwnedFd>) {
        (self.reader, self.writer)
    }

    /// Descriptors received with the stream so far (Unix stream sockets), oldest first.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.fds.drain(..).collect()
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
        if self.socket {
            // Writable means half the send buffer is free: enough for any frame up to that.
            return wait_ready(fd, PollFlags::OUT, Deadline::Now);
        }
        if len <= PIPE_BUF {
            return Ok(true);
        }
        let size = rustix::pipe::fcntl_getpipe_size(fd)
            .map_err(|e| Error::os("fcntl(F_GETPIPE_SZ)", self.object.clone(), e))?;
        let queued = rustix::io::ioctl_fionread(fd)
            .map_err(|e| Error::os("ioctl(FIONREAD)", self.object.clone(), e))?
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
        if deadline != Deadline::Never {
            self.wait_until_fits(fd, len, deadline)?;
        }
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        let mut left = len;
        let mut written_any = false;
        while left > 0 {
            let result = if self.socket {
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
                Err(e) => return Err(Error::os("write", self.object.clone(), e)),
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
            let fd = self.reader.as_ref().expect("checked above").as_fd();
            let fds = if self.passes_fds {
                Some(&mut self.fds)
            } else {
                None
            };
            match self.decoder.read_from(fd, fds) {
                Ok(0) if self.fifo_reader && !polled => {
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
                    let err = Error::os("read", self.object.clone(), e);
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
        Ok(self.peer)
    }
}

impl AsFd for FramedStream {
    /// The receiving descriptor if there is one, else the sending one (for `poll`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader
            .as_ref()
            .or(self.writer.as_ref())
            .expect("a framed stream has at least one descriptor")
            .as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(decoder: &mut FrameDecoder) -> Result<Vec<Frame>> {
        let mut out = Vec::new();
        while let Some(f) = decoder.decode()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_data_and_acks() {
        let mut d = FrameDecoder::new(100);
        d.extend(&data_header(3));
        d.extend(b"abc");
        d.extend(&ack_frame());
        d.extend(&data_header(0));
        assert_eq!(
            frames(&mut d).unwrap(),
            [
                Frame::Data(b"abc".to_vec()),
                Frame::Ack,
                Frame::Data(vec![])
            ]
        );
        assert!(matches!(d.end_of_stream(), Error::Disconnected));
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(10);
        d.extend(&data_header(11));
        assert!(matches!(
            d.decode(),
            Err(Error::MessageTooLarge { size: 11, max: 10 })
        ));
        let mut d = FrameDecoder::new(usize::MAX);
        d.extend(&0x7fff_ffffu32.to_le_bytes());
        assert_eq!(d.decode().unwrap(), None);
        assert!(
            d.buf.capacity() < 1 << 20,
            "nothing allocated for the claimed length"
        );
    }

    #[test]
    fn truncation_and_unknown_control_frames_are_corrupt() {
        let mut d = FrameDecoder::new(100);
        d.extend(&data_header(5));
        d.extend(b"ab");
        assert_eq!(d.decode().unwrap(), None);
        assert!(matches!(d.end_of_stream(), Error::Corrupt { .. }));
        let mut d = FrameDecoder::new(100);
        d.extend(&0x8000_0001u32.to_le_bytes());
        assert!(matches!(d.decode(), Err(Error::Corrupt { .. })));
    }

    proptest! {
        /// Random bytes: every outcome is a frame, "need more", or an error; never a panic,
        /// and never a buffer larger than what was fed.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), max in 0usize..512) {
            let mut d = FrameDecoder::new(max);
            d.extend(&bytes);
            loop {
                match d.decode() {
                    Ok(Some(Frame::Data(p))) => prop_assert!(p.len() <= max),
                    Ok(Some(Frame::Ack)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(d.buf.len() <= bytes.len());
        }

        /// Any sequence of frames, cut anywhere, decodes to the same frames.
        #[test]
        fn frames_survive_any_split(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20), cut in any::<usize>()) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend_from_slice(&data_header(m.len()));
                wire.extend_from_slice(m);
            }
            let cut = if wire.is_empty() { 0 } else { cut % wire.len() };
            let mut d = FrameDecoder::new(64);
            d.extend(&wire[..cut]);
            let mut got = frames(&mut d).unwrap();
            d.extend(&wire[cut..]);
            got.extend(frames(&mut d).unwrap());
            let want: Vec<Frame> = msgs.into_iter().map(Frame::Data).collect();
            prop_assert_eq!(got, want);
            let disconnected = matches!(d.end_of_stream(), Error::Disconnected);
                prop_assert!(disconnected);
        }

        /// A stream truncated inside a frame is reported as such at end of stream.
        #[test]
        fn truncated_stream_is_an_error(len in 1usize..64, keep in 0usize..67) {
            let mut wire = data_header(len).to_vec();
            wire.extend(std::iter::repeat_n(7u8, len));
            let keep = keep % wire.len();
            let mut d = FrameDecoder::new(64);
            d.extend(&wire[..keep]);
            prop_assert_eq!(d.decode().unwrap(), None);
            if keep == 0 {
                let disconnected = matches!(d.end_of_stream(), Error::Disconnected);
                prop_assert!(disconnected);
            } else {
                let corrupt = matches!(d.end_of_stream(), Error::Corrupt { .. });
                prop_assert!(corrupt);
            }
        }
    }
}
