//! TCP: a reliable byte stream, used plain ([`ByteStream`]) or carrying length-prefixed frames
//! ([`TcpStream`], a [`FramedStream`]), with `TCP_NODELAY` set so a small message leaves at
//! once instead of waiting to be coalesced (Nagle's algorithm).
//!
//! [`connect`], [`connect_with`], [`Listener::accept`] and [`Listener::accept_with`] return
//! framed endpoints; [`connect_bytes`] and [`Listener::accept_bytes`] return the plain byte
//! stream, which speaks to any TCP program (`nc`, a web server) on the other end.
//!
//! ```
//! use ipckit::socket::tcp;
//! use ipckit::{MessageReceiver, MessageSender};
//!
//! let listener = tcp::Listener::bind("127.0.0.1:0")?;
//! let mut client = tcp::connect(listener.local_addr()?)?;
//! let mut server = listener.accept()?;
//! client.send(b"ping")?;
//! assert_eq!(server.recv()?.data, b"ping");
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # References
//! - [`tcp(7)`](https://man7.org/linux/man-pages/man7/tcp.7.html)

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};

use crate::error::{Error, Result};
use crate::stream::{ByteStream, FramedStream};
use crate::Capacity;

/// A framed TCP connection.
pub type TcpStream = FramedStream;

fn bytes(stream: std::net::TcpStream) -> Result<ByteStream> {
    let object = match stream.peer_addr() {
        Ok(addr) => format!("tcp connection to {addr}"),
        Err(_) => "tcp connection".to_string(),
    };
    rustix::net::sockopt::set_tcp_nodelay(stream.as_fd(), true)
        .map_err(|e| Error::os("setsockopt(TCP_NODELAY)", object.clone(), e))?;
    ByteStream::from_socket(OwnedFd::from(stream), object)
}

fn framed(stream: std::net::TcpStream, capacity: Capacity) -> Result<TcpStream> {
    FramedStream::over(bytes(stream)?).with_capacity(capacity)
}

/// Connects to `addr`, as a plain byte stream.
///
/// # Errors
/// [`Error::Disconnected`] if nobody listens there; [`Error::InvalidArgument`] for an address
/// that does not parse (not `HOST:PORT`); [`Error::Os`] for a host name that does not resolve
/// (the resolver's error is the source), an address that cannot be reached (`ENETUNREACH`,
/// `ETIMEDOUT`), or another OS error.
pub fn connect_bytes(addr: impl ToSocketAddrs) -> Result<ByteStream> {
    let addrs = super::resolve(addr, "tcp connection")?;
    let stream = std::net::TcpStream::connect(&addrs[..])
        .map_err(|e| Error::os("connect", "tcp connection", e))?;
    bytes(stream)
}

/// Connects to `addr`.
///
/// # Errors
/// As [`connect_bytes`].
pub fn connect(addr: impl ToSocketAddrs) -> Result<TcpStream> {
    connect_with(addr, Capacity::KERNEL_BUFFER)
}

/// Connects with a capacity: `Rendezvous` makes every send wait for the receiver's
/// acknowledgement (the server must accept with the same capacity).
///
/// # Errors
/// As [`connect_bytes`]; [`Error::InvalidArgument`] for `Capacity::Bounded(0)`,
/// [`Error::Unsupported`] for `Capacity::Unbounded` (checked once connected).
pub fn connect_with(addr: impl ToSocketAddrs, capacity: Capacity) -> Result<TcpStream> {
    let addrs = super::resolve(addr, "tcp connection")?;
    let stream = std::net::TcpStream::connect(&addrs[..])
        .map_err(|e| Error::os("connect", "tcp connection", e))?;
    framed(stream, capacity)
}

/// A listening TCP socket.
#[derive(Debug)]
pub struct Listener {
    inner: std::net::TcpListener,
}

impl Listener {
    /// Binds and listens (`127.0.0.1:0` picks a free port).
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] for a port below 1024 without the privilege;
    /// [`Error::InvalidArgument`] for an address that does not parse; [`Error::Os`] for a host
    /// name that does not resolve, an address in use (`EADDRINUSE`), one that is not this machine's (`EADDRNOTAVAIL`), or another OS error.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Listener> {
        let addrs = super::resolve(addr, "tcp listener")?;
        let inner = std::net::TcpListener::bind(&addrs[..])
            .map_err(|e| Error::os("bind", "tcp listener", e))?;
        Ok(Listener { inner })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// An OS error as [`Error::Os`] (none is expected).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner
            .local_addr()
            .map_err(|e| Error::os("getsockname", "tcp listener", e))
    }

    /// Waits for a connection.
    ///
    /// # Errors
    /// As [`accept_bytes`](Self::accept_bytes).
    pub fn accept(&self) -> Result<TcpStream> {
        self.accept_with(Capacity::KERNEL_BUFFER)
    }

    /// Waits for a connection, as a plain byte stream.
    ///
    /// # Errors
    /// [`Error::Os`] if `accept` fails (`EMFILE` when the process has its most descriptors,
    /// say) or the connection cannot be set up (`TCP_NODELAY`, non-blocking mode).
    pub fn accept_bytes(&self) -> Result<ByteStream> {
        let (stream, _) = self
            .inner
            .accept()
            .map_err(|e| Error::os("accept", "tcp listener", e))?;
        bytes(stream)
    }

    /// Waits for a connection, with a capacity (see [`connect_with`]).
    ///
    /// # Errors
    /// As [`accept_bytes`](Self::accept_bytes); [`Error::InvalidArgument`] for
    /// `Capacity::Bounded(0)`, [`Error::Unsupported`] for `Capacity::Unbounded` (checked
    /// once a connection is taken, which is then dropped).
    pub fn accept_with(&self, capacity: Capacity) -> Result<TcpStream> {
        let (stream, _) = self
            .inner
            .accept()
            .map_err(|e| Error::os("accept", "tcp listener", e))?;
        framed(stream, capacity)
    }
}
