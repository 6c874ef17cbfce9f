//! Sockets: Unix domain (stream, datagram, seqpacket), TCP and UDP, all speaking the
//! message vocabulary.
//!
//! - Stream sockets (Unix stream, TCP) are plain byte streams ([`ByteStream`], `std::io::Read`
//!   and `Write`) or carry length-prefixed frames ([`FramedStream`], an adapter on top); each
//!   has constructors for both forms (module `stream`, re-exported here).
//! - Datagram and seqpacket sockets keep message boundaries in the kernel: [`DatagramLink`].
//! - Unix sockets pass file descriptors (`SCM_RIGHTS`) and tell who the peer is
//!   (`SO_PEERCRED`: pid, uid and gid, verified by the kernel).
//!
//! SIGPIPE never kills the process: every socket send uses `MSG_NOSIGNAL`, and a peer that
//! is gone is [`Error::Disconnected`].
//!
//! # References
//! - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html),
//!   [`tcp(7)`](https://man7.org/linux/man-pages/man7/tcp.7.html),
//!   [`udp(7)`](https://man7.org/linux/man-pages/man7/udp.7.html)

pub mod tcp;
pub mod udp;
pub mod unix;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use crate::error::{Error, Result};
use crate::fd::{recv_with_fds, send_with_fds, set_nonblocking, wait_ready};
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender, Metadata};
pub use crate::stream::{ByteStream, FramedStream};

pub use crate::fd::MAX_FDS;

/// Resolves a TCP or UDP address for `object`, so that one that does not parse is
/// [`Error::InvalidArgument`], not the resolver's bare `InvalidInput`.
pub(crate) fn resolve(
    addr: impl std::net::ToSocketAddrs,
    object: &str,
) -> Result<Vec<std::net::SocketAddr>> {
    match addr.to_socket_addrs() {
        Ok(found) => {
            let found: Vec<_> = found.collect();
            if found.is_empty() {
                Err(Error::InvalidArgument(format!(
                    "{object}: the address resolves to nothing"
                )))
            } else {
                Ok(found)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(Error::InvalidArgument(
            format!("{object}: not a socket address ({e}); write HOST:PORT, e.g. 127.0.0.1:7000"),
        )),
        Err(e) => Err(Error::os("resolve", object, e)),
    }
}

/// Who is at the other end of a Unix socket, as the kernel recorded it at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's process id.
    pub pid: u32,
    /// The peer's user id.
    pub uid: u32,
    /// The peer's group id.
    pub gid: u32,
}

/// Reads the peer's credentials (`SO_PEERCRED`).
///
/// # Errors
/// [`Error::Disconnected`] when the socket has no peer process (unconnected, or not a Unix
/// socket's peer: the kernel reports pid 0); another OS error as [`Error::Os`].
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>, object: &str) -> Result<PeerCredentials> {
    match crate::fd::peer_ucred(fd) {
        Ok(Some((pid, uid, gid))) => Ok(PeerCredentials { pid, uid, gid }),
        Ok(None) => Err(Error::Disconnected),
        Err(e) => Err(Error::os("getsockopt(SO_PEERCRED)", object, e)),
    }
}

fn peer_metadata(cred: Option<PeerCredentials>) -> Metadata {
    Metadata {
        sender_pid: cred.map(|c| c.pid),
        sender_uid: cred.map(|c| c.uid),
        ..Metadata::default()
    }
}

/// Which kind of datagram socket a [`DatagramLink`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatagramKind {
    /// `AF_UNIX`, `SOCK_DGRAM`.
    UnixDatagram,
    /// `AF_UNIX`, `SOCK_SEQPACKET`: connected, ordered, boundaries kept.
    UnixSeqpacket,
    /// `AF_INET(6)`, `SOCK_DGRAM`.
    Udp,
}

/// A connected message-oriented socket: Unix datagram or seqpacket, or UDP. Each
/// `send` is one datagram; the kernel keeps boundaries, so no framing is needed.
#[derive(Debug)]
pub struct DatagramLink {
    fd: OwnedFd,
    kind: DatagramKind,
    max: usize,
    peer: Metadata,
    fds: VecDeque<OwnedFd>,
    object: String,
}

impl DatagramLink {
    pub(crate) fn new(fd: OwnedFd, kind: DatagramKind, max: usize, object: String) -> Result<Self> {
        set_nonblocking(fd.as_fd(), &object)?;
        let peer = match kind {
            DatagramKind::UnixSeqpacket | DatagramKind::UnixDatagram => {
                peer_metadata(peer_credentials(fd.as_fd(), &object).ok())
            }
            DatagramKind::Udp => Metadata::default(),
        };
        Ok(DatagramLink {
            fd,
            kind,
            max,
            peer,
            fds: VecDeque::new(),
            object,
        })
    }

    /// Sets the largest message (default: 64 KiB for Unix sockets, 65507 bytes for UDP).
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The peer's kernel-verified credentials (Unix sockets that are connected).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for UDP; an OS error if the socket has no peer.
    pub fn peer_credentials(&self) -> Result<PeerCredentials> {
        if self.kind == DatagramKind::Udp {
            return Err(Error::Unsupported(
                "UDP sockets have no peer credentials".into(),
            ));
        }
        peer_credentials(self.fd.as_fd(), &self.object)
    }

    /// Sends one message with file descriptors attached (Unix sockets).
    ///
    /// # Errors
    /// As [`MessageSender::send_deadline`]; [`Error::Unsupported`] for UDP.
    pub fn send_with_fds(
        &mut self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Deadline,
    ) -> Result<()> {
        if self.kind == DatagramKind::Udp {
            return Err(Error::Unsupported(
                "UDP cannot pass file descriptors".into(),
            ));
        }
        check_size(msg.len(), self.max)?;
        match send_with_fds(self.fd.as_fd(), msg, fds, deadline) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(deadline.send_expired()),
            Err(e) => Err(self.map_err("sendmsg", e)),
        }
    }

    /// Receives one message and the descriptors that came with it (at most [`MAX_FDS`];
    /// descriptors that came with messages received by plain `recv` are closed).
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
    pub fn recv_with_fds(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(Metadata, Vec<OwnedFd>)> {
        let meta = self.recv_deadline(buf, deadline)?;
        Ok((meta, self.fds.drain(..).collect()))
    }

    fn map_err(&self, op: &'static str, errno: Errno) -> Error {
        match errno {
            Errno::MSGSIZE => Error::MessageTooLarge {
                size: usize::MAX,
                max: self.max,
            },
            other => Error::os(op, self.object.clone(), other),
        }
    }
}

impl MessageSender for DatagramLink {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        check_size(msg.len(), self.max)?;
        if self.kind == DatagramKind::UnixSeqpacket && msg.is_empty() {
            // A zero-length record is indistinguishable from the peer's end of stream.
            return Err(Error::InvalidArgument(format!(
                "{} cannot carry an empty message (it would read as a hang-up)",
                self.object
            )));
        }
        loop {
            match rustix::net::send(&self.fd, msg, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
                Ok(_) => return Ok(()),
                Err(Errno::AGAIN) | Err(Errno::NOBUFS) => {
                    if !wait_ready(self.fd.as_fd(), PollFlags::OUT, deadline)? {
                        return Err(deadline.send_expired());
                    }
                    // A Unix datagram socket polls writable while the peer's queue is full.
                    if self.kind != DatagramKind::UnixSeqpacket {
                        if deadline.expired() {
                            return Err(deadline.send_expired());
                        }
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(self.map_err("send", e)),
            }
        }
    }

    fn max_message_size(&self) -> usize {
        self.max
    }
}

impl MessageReceiver for DatagramLink {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        // Descriptors that came with an earlier message and were not asked for are closed.
        self.fds.clear();
        buf.clear();
        buf.resize(self.max + 1, 0);
        loop {
            let flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
            let result = match self.kind {
                DatagramKind::Udp => rustix::net::recv(&self.fd, &mut buf[..], flags)
                    .map(|(_, full)| (full, full > self.max)),
                _ => recv_with_fds(self.fd.as_fd(), &mut buf[..], &mut self.fds, MAX_FDS, flags),
            };
            match result {
                Ok((0, _)) if self.kind == DatagramKind::UnixSeqpacket => {
                    buf.clear();
                    return Err(Error::Disconnected);
                }
                Ok((n, truncated)) => {
                    if truncated || n > self.max {
                        buf.clear();
                        return Err(Error::MessageTooLarge {
                            size: n,
                            max: self.max,
                        });
                    }
                    buf.truncate(n);
                    return Ok(self.peer);
                }
                Err(Errno::AGAIN) => {
                    if !wait_ready(self.fd.as_fd(), PollFlags::IN, deadline)? {
                        buf.clear();
                        return Err(deadline.recv_expired());
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    buf.clear();
                    return Err(self.map_err("recv", e));
                }
            }
        }
    }
}

impl AsFd for DatagramLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::{tcp, udp, unix};
    use crate::Error;
    use std::path::PathBuf;

    fn invalid(result: crate::Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidArgument(text)) => text,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_unix_path_no_address_can_hold_is_an_invalid_argument_everywhere() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        let text = invalid(unix::connect_stream(&long));
        assert!(text.contains("205 bytes") && text.contains("107"), "{text}");
        invalid(unix::StreamListener::bind(&long));
        invalid(unix::SeqpacketListener::bind(&long));
        invalid(unix::connect_seqpacket(&long));
        invalid(unix::BoundDatagram::bind(&long, None));
        invalid(unix::connect_stream(""));
        // Nothing was created on the way.
        assert!(!long.exists());

        // The longest path that fits still reaches the kernel (nothing there: NotFound).
        let fits = PathBuf::from(format!("/tmp/{}", "y".repeat(unix::MAX_PATH_BYTES - 5)));
        assert!(matches!(
            unix::connect_stream(&fits),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_tcp_or_udp_address_that_does_not_parse_is_an_invalid_argument() {
        let text = invalid(tcp::connect("not an address"));
        assert!(text.contains("HOST:PORT"), "{text}");
        invalid(tcp::Listener::bind("127.0.0.1"));
        invalid(tcp::connect_bytes("127.0.0.1:99999"));
        invalid(udp::bind("::1::"));
        // A good one still works.
        assert!(tcp::Listener::bind("127.0.0.1:0").is_ok());
    }
}
