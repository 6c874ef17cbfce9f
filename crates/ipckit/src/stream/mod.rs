//! Byte streams (pipes, FIFOs, Unix stream sockets, TCP) in their two forms:
//!
//! - [`ByteStream`]: the plain byte stream the kernel provides, without message boundaries,
//!   implementing [`std::io::Read`] and [`std::io::Write`]. It interoperates with any program:
//!   `echo text > fifo` into an ipckit reader, `cat` on a FIFO an ipckit writer writes,
//!   `grep` between two ipckit ends of a shell pipeline.
//! - [`FramedStream`]: the message endpoint ([`MessageSender`](crate::MessageSender)/[`MessageReceiver`](crate::MessageReceiver)), an adapter
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

use crate::fd::MAX_FDS;

mod bytes;
mod framed;

pub use bytes::ByteStream;
pub use framed::FramedStream;

/// Writes to a pipe of at most this many bytes are atomic (`pipe(7)`).
pub(crate) const PIPE_BUF: usize = 4096;
/// Descriptors a Unix stream keeps queued for [`FramedStream::take_fds`] unless told
/// otherwise; more are closed as they arrive.
pub const DEFAULT_FD_LIMIT: usize = 4 * MAX_FDS;

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
