//! Unix domain sockets: stream (plain bytes or framed), datagram and seqpacket (boundaries kept
//! by the kernel), with descriptor passing and kernel-verified peer credentials.
//!
//! [`stream_pair`], [`connect_stream`], [`connect_stream_with`], [`StreamListener::accept`] and
//! [`StreamListener::accept_with`] return framed endpoints ([`UnixStream`]); [`stream_pair_bytes`],
//! [`connect_stream_bytes`] and [`StreamListener::accept_bytes`] return the plain byte stream
//! ([`ByteStream`]), which any program can be the other end of (`socat`, `nc -U`).
//!
//! ```
//! use ipckit::socket::unix;
//! use ipckit::{MessageReceiver, MessageSender};
//!
//! let (mut a, mut b) = unix::stream_pair()?;
//! a.send(b"over a socketpair")?;
//! let msg = b.recv()?;
//! assert_eq!(msg.data, b"over a socketpair");
//! assert_eq!(msg.meta.sender_pid, Some(std::process::id()));   // SO_PEERCRED
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # References
//! - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html)

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::{peer_credentials, peer_metadata, DatagramKind, DatagramLink, PeerCredentials};
use crate::error::{Error, Result};
use crate::link::{MessageReceiver, MessageSender};
use crate::stream::{ByteStream, FramedStream};
use crate::Capacity;

/// Default maximum message of Unix datagram and seqpacket sockets: 64 KiB.
pub const DEFAULT_DATAGRAM_MAX: usize = 64 << 10;

fn describe(kind: &str, path: &Path) -> String {
    format!("unix {kind} socket {}", path.display())
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
pub const MAX_PATH_BYTES: usize = 107;

/// Refuses a path no socket address can hold, before any system call (the kernel's
/// `ENAMETOOLONG`, or std's "path must be shorter than SUN_LEN", would say less).
fn check_path(path: &Path, object: &str) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > MAX_PATH_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{object}: the path is {} bytes; a Unix socket address holds at most {MAX_PATH_BYTES}",
            bytes.len()
        )));
    }
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "{object}: a socket path must be non-empty and hold no NUL byte"
        )));
    }
    Ok(())
}

/// A framed Unix stream socket: [`FramedStream`] with peer credentials and fd passing.
pub type UnixStream = FramedStream;

fn bytes(fd: OwnedFd, object: String) -> Result<ByteStream> {
    let cred = peer_credentials(fd.as_fd(), &object).ok();
    let mut stream = ByteStream::from_socket(fd, object)?;
    stream.set_unix_peer(peer_metadata(cred));
    Ok(stream)
}

fn framed(fd: OwnedFd, object: String) -> Result<UnixStream> {
    bytes(fd, object).map(FramedStream::over)
}

fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::os("socketpair", "unix stream pair", e))
}

/// A connected pair of plain byte-stream Unix sockets (`socketpair`).
///
/// # Errors
/// [`Error::Os`] if the process or the system has no descriptor left (`EMFILE`, `ENFILE`), or on
/// another OS error.
pub fn stream_pair_bytes() -> Result<(ByteStream, ByteStream)> {
    let (a, b) = socketpair()?;
    Ok((
        bytes(a, "unix stream pair".into())?,
        bytes(b, "unix stream pair".into())?,
    ))
}

/// Connects to the stream listener at `path`, as a plain byte stream.
///
/// # Errors
/// As [`connect_stream`].
pub fn connect_stream_bytes(path: impl AsRef<Path>) -> Result<ByteStream> {
    let path = path.as_ref();
    let object = describe("stream", path);
    check_path(path, &object)?;
    let std = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| Error::os("connect", object.clone(), e))?;
    bytes(OwnedFd::from(std), object)
}

/// A connected pair of framed Unix stream sockets (`socketpair`), e.g. to hand one end to a
/// child process.
///
/// # Errors
/// As [`stream_pair_bytes`].
#[doc(alias = "socketpair")]
pub fn stream_pair() -> Result<(UnixStream, UnixStream)> {
    let (a, b) = socketpair()?;
    Ok((
        framed(a, "unix stream pair".into())?,
        framed(b, "unix stream pair".into())?,
    ))
}

/// Connects to the stream listener at `path`.
///
/// # Errors
/// [`Error::NotFound`] if nothing is at `path`; [`Error::Disconnected`] if nobody listens
/// there (a socket file left behind, or a file that is no socket); [`Error::PermissionDenied`]
/// without write permission on the socket file or search permission on its directories;
/// [`Error::InvalidArgument`] for a path longer than [`MAX_PATH_BYTES`] (or empty, or with a
/// NUL byte); [`Error::Os`] for a socket of another type (`EPROTOTYPE`), or another OS error.
pub fn connect_stream(path: impl AsRef<Path>) -> Result<UnixStream> {
    connect_stream_with(path, Capacity::KERNEL_BUFFER)
}

/// Connects with a capacity: `Rendezvous` makes every send wait for the receiver's
/// acknowledgement (the listener side must accept with the same capacity).
///
/// # Errors
/// As [`connect_stream`]; [`Error::InvalidArgument`] for `Capacity::Bounded(0)`,
/// [`Error::Unsupported`] for `Capacity::Unbounded` (checked once connected).
pub fn connect_stream_with(path: impl AsRef<Path>, capacity: Capacity) -> Result<UnixStream> {
    let path = path.as_ref();
    let object = describe("stream", path);
    check_path(path, &object)?;
    let std = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| Error::os("connect", object.clone(), e))?;
    framed(OwnedFd::from(std), object)?.with_capacity(capacity)
}

/// A Unix stream listener bound to a path; the socket file is removed on drop.
#[derive(Debug)]
pub struct StreamListener {
    inner: std::os::unix::net::UnixListener,
    path: PathBuf,
    entry: SocketEntry,
}

impl StreamListener {
    /// Binds and listens at `path`.
    ///
    /// # Errors
    /// [`Error::Os`] with `EADDRINUSE` if something is at `path` already (a live listener, a
    /// socket file left behind, any file: remove it first); [`Error::NotFound`] if its
    /// directory does not exist; [`Error::PermissionDenied`] without write permission on it;
    /// [`Error::InvalidArgument`] for a path longer than [`MAX_PATH_BYTES`] (or empty, or
    /// with a NUL byte); [`Error::Os`] for another OS error.
    pub fn bind(path: impl AsRef<Path>) -> Result<StreamListener> {
        let path = path.as_ref().to_path_buf();
        check_path(&path, &describe("stream listener", &path))?;
        let inner = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| Error::os("bind", describe("stream listener", &path), e))?;
        let entry = SocketEntry::record(&path);
        Ok(StreamListener { inner, path, entry })
    }

    /// Waits for a connection.
    ///
    /// # Errors
    /// As [`accept_bytes`](Self::accept_bytes).
    pub fn accept(&self) -> Result<UnixStream> {
        self.accept_with(Capacity::KERNEL_BUFFER)
    }

    /// Waits for a connection, as a plain byte stream.
    ///
    /// # Errors
    /// [`Error::Os`] if `accept` fails (`EMFILE` when the process has its most descriptors,
    /// say) or the connection cannot be set up (non-blocking mode).
    pub fn accept_bytes(&self) -> Result<ByteStream> {
        let object = describe("stream", &self.path);
        let (std, _) = self
            .inner
            .accept()
            .map_err(|e| Error::os("accept", object.clone(), e))?;
        bytes(OwnedFd::from(std), object)
    }

    /// Waits for a connection, with a capacity (see [`connect_stream_with`]).
    ///
    /// # Errors
    /// As [`accept_bytes`](Self::accept_bytes); [`Error::InvalidArgument`] for
    /// `Capacity::Bounded(0)`, [`Error::Unsupported`] for `Capacity::Unbounded` (checked
    /// once a connection is taken, which is then dropped).
    pub fn accept_with(&self, capacity: Capacity) -> Result<UnixStream> {
        let object = describe("stream", &self.path);
        let (std, _) = self
            .inner
            .accept()
            .map_err(|e| Error::os("accept", object.clone(), e))?;
        framed(OwnedFd::from(std), object)?.with_capacity(capacity)
    }

    /// Takes a waiting connection if there is one, without blocking (the listener must be
    /// non-blocking). `Ok(None)`: nobody is waiting.
    pub(crate) fn try_accept(&self) -> Result<Option<UnixStream>> {
        let object = describe("stream", &self.path);
        match rustix::net::accept_with(&self.inner, SocketFlags::CLOEXEC) {
            Ok(fd) => framed(fd, object).map(Some),
            // A client that gave up before we took it is no connection.
            Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => Ok(None),
            Err(e) => Err(Error::os("accept", object, e)),
        }
    }

    /// The path it listens on.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for StreamListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Drop for StreamListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.entry.forget();
    }
}

/// The registry entry of a bound socket file, so `ipckit ls` lists it and `ipckit clean`
/// removes it once its process is gone.
#[derive(Debug)]
struct SocketEntry(String);

impl SocketEntry {
    fn record(path: &Path) -> SocketEntry {
        let object = crate::registry::absolute(path)
            .to_string_lossy()
            .into_owned();
        crate::registry::record(crate::registry::Kind::UnixSocket, &object);
        SocketEntry(object)
    }

    fn forget(&self) {
        crate::registry::forget(crate::registry::Kind::UnixSocket, &self.0);
    }
}

/// A connected pair of Unix datagram sockets.
///
/// # Errors
/// As [`stream_pair_bytes`].
pub fn datagram_pair() -> Result<(DatagramLink, DatagramLink)> {
    pair(
        SocketType::DGRAM,
        DatagramKind::UnixDatagram,
        "unix datagram pair",
    )
}

/// A connected pair of Unix seqpacket sockets.
///
/// # Errors
/// As [`stream_pair_bytes`].
pub fn seqpacket_pair() -> Result<(DatagramLink, DatagramLink)> {
    pair(
        SocketType::SEQPACKET,
        DatagramKind::UnixSeqpacket,
        "unix seqpacket pair",
    )
}

fn pair(ty: SocketType, kind: DatagramKind, object: &str) -> Result<(DatagramLink, DatagramLink)> {
    let (a, b) = rustix::net::socketpair(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None)
        .map_err(|e| Error::os("socketpair", object, e))?;
    Ok((
        DatagramLink::new(a, kind, DEFAULT_DATAGRAM_MAX, object.into())?,
        DatagramLink::new(b, kind, DEFAULT_DATAGRAM_MAX, object.into())?,
    ))
}

/// A Unix datagram socket bound to `path` and connected to `peer` (both paths). The bound
/// socket file is removed on drop.
#[derive(Debug)]
pub struct BoundDatagram {
    link: DatagramLink,
    path: PathBuf,
    entry: SocketEntry,
}

impl BoundDatagram {
    /// Binds `path` (which receives) and, if given, connects to `peer` (where sends go).
    ///
    /// # Errors
    /// As [`StreamListener::bind`] for `path` ([`Error::Os`] with `EADDRINUSE` if it is
    /// taken); for `peer`, as [`BoundDatagram::connect`] (`path` is then removed again).
    pub fn bind(path: impl AsRef<Path>, peer: Option<&Path>) -> Result<BoundDatagram> {
        let path = path.as_ref().to_path_buf();
        let object = describe("datagram", &path);
        check_path(&path, &object)?;
        if let Some(peer) = peer {
            check_path(peer, &describe("datagram", peer))?;
        }
        let std = std::os::unix::net::UnixDatagram::bind(&path)
            .map_err(|e| Error::os("bind", object.clone(), e))?;
        if let Some(peer) = peer {
            if let Err(e) = std.connect(peer) {
                let _ = std::fs::remove_file(&path);
                return Err(Error::os("connect", describe("datagram", peer), e));
            }
        }
        let link = DatagramLink::new(
            OwnedFd::from(std),
            DatagramKind::UnixDatagram,
            DEFAULT_DATAGRAM_MAX,
            object,
        )?;
        let entry = SocketEntry::record(&path);
        Ok(BoundDatagram { link, path, entry })
    }
}

impl BoundDatagram {
    /// Connects to `peer`: sends go there and only its datagrams are received.
    ///
    /// # Errors
    /// [`Error::NotFound`] if nothing is at `peer`; [`Error::Disconnected`] if no socket is
    /// bound there (a socket file left behind, or a file that is no socket);
    /// [`Error::PermissionDenied`] without write permission on it;
    /// [`Error::InvalidArgument`] for a path longer than [`MAX_PATH_BYTES`]; [`Error::Os`] for a
    /// socket of another type (`EPROTOTYPE`), or another OS error.
    pub fn connect(&self, peer: impl AsRef<Path>) -> Result<()> {
        let peer = peer.as_ref();
        check_path(peer, &describe("datagram", peer))?;
        let addr = SocketAddrUnix::new(peer)
            .map_err(|e| Error::os("connect", describe("datagram", peer), e))?;
        rustix::net::connect(self.link.as_fd(), &addr)
            .map_err(|e| Error::os("connect", describe("datagram", peer), e))
    }

    /// The underlying link (descriptor passing, peer credentials).
    pub fn link(&mut self) -> &mut DatagramLink {
        &mut self.link
    }
}

impl MessageSender for BoundDatagram {
    fn send_deadline(&mut self, msg: &[u8], deadline: crate::Deadline) -> Result<()> {
        self.link.send_deadline(msg, deadline)
    }
    fn max_message_size(&self) -> usize {
        self.link.max_message_size()
    }
}

impl MessageReceiver for BoundDatagram {
    fn recv_deadline(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: crate::Deadline,
    ) -> Result<crate::Metadata> {
        self.link.recv_deadline(buf, deadline)
    }
}

impl Drop for BoundDatagram {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.entry.forget();
    }
}

/// A Unix seqpacket listener bound to a path; the socket file is removed on drop.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: OwnedFd,
    path: PathBuf,
    entry: SocketEntry,
}

impl SeqpacketListener {
    /// Binds and listens at `path`.
    ///
    /// # Errors
    /// As [`StreamListener::bind`].
    pub fn bind(path: impl AsRef<Path>) -> Result<SeqpacketListener> {
        let path = path.as_ref().to_path_buf();
        let object = describe("seqpacket listener", &path);
        let (fd, addr) = seqpacket_socket(&path, "bind", &object)?;
        rustix::net::bind(&fd, &addr).map_err(|e| Error::os("bind", object.clone(), e))?;
        rustix::net::listen(&fd, 128).map_err(|e| Error::os("listen", object, e))?;
        let entry = SocketEntry::record(&path);
        Ok(SeqpacketListener { fd, path, entry })
    }

    /// Waits for a connection.
    ///
    /// # Errors
    /// [`Error::Os`] if `accept` fails (`EMFILE` when the process has its most descriptors,
    /// say) or the connection cannot be set up (non-blocking mode).
    pub fn accept(&self) -> Result<DatagramLink> {
        let object = describe("seqpacket", &self.path);
        let fd = loop {
            match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC) {
                Err(Errno::INTR) => continue,
                other => break other.map_err(|e| Error::os("accept", object.clone(), e))?,
            }
        };
        DatagramLink::new(
            fd,
            DatagramKind::UnixSeqpacket,
            DEFAULT_DATAGRAM_MAX,
            object,
        )
    }
}

impl Drop for SeqpacketListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.entry.forget();
    }
}

/// A new seqpacket socket and the address `path`, for `op` (bind or connect).
fn seqpacket_socket(
    path: &Path,
    op: &'static str,
    object: &str,
) -> Result<(OwnedFd, SocketAddrUnix)> {
    check_path(path, object)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::os("socket", object, e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| Error::os(op, object, e))?;
    Ok((fd, addr))
}

/// Connects to the seqpacket listener at `path`.
///
/// # Errors
/// As [`connect_stream`] ([`Error::Os`] with `EPROTOTYPE` for a stream or datagram socket);
/// [`Error::Os`] also if no socket can be made (`EMFILE`).
pub fn connect_seqpacket(path: impl AsRef<Path>) -> Result<DatagramLink> {
    let path = path.as_ref();
    let object = describe("seqpacket", path);
    let (fd, addr) = seqpacket_socket(path, "connect", &object)?;
    rustix::net::connect(&fd, &addr).map_err(|e| Error::os("connect", object.clone(), e))?;
    DatagramLink::new(
        fd,
        DatagramKind::UnixSeqpacket,
        DEFAULT_DATAGRAM_MAX,
        object,
    )
}

/// The credentials of the process at the other end of a Unix stream socket.
///
/// # Errors
/// [`Error::Os`] with `ENOTSOCK` if `stream` is not over a socket (a FIFO duplex, say), or
/// another OS error.
pub fn stream_peer_credentials(stream: &UnixStream) -> Result<PeerCredentials> {
    peer_credentials(stream.as_fd(), "unix stream")
}
