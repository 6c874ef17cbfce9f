//! UDP: datagrams between two addresses.
//!
//! UDP keeps message boundaries but promises nothing else: a datagram may be **lost**,
//! **duplicated** or **reordered**, even on loopback when a receive buffer overflows, and a
//! sender is never told. A send to a peer that is not there succeeds (or reports
//! `Disconnected` later, if the kernel received an ICMP "port unreachable"). Use it where a
//! late message is worthless anyway; use TCP, a Unix socket or a mailbox where every message
//! counts.
//!
//! # References
//! - [`udp(7)`](https://man7.org/linux/man-pages/man7/udp.7.html)

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;

use super::{DatagramKind, DatagramLink};
use crate::error::{Error, Result};

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Binds `local` (port 0 picks a free one): the link and the address it got. Before it can
/// send, [`connect`] it to a peer: then sends go to that peer, and only its datagrams are
/// received.
///
/// ```
/// use ipckit::socket::udp;
/// use ipckit::{MessageReceiver, MessageSender};
///
/// let (mut a, a_addr) = udp::bind("127.0.0.1:0")?;
/// let (mut b, b_addr) = udp::bind("127.0.0.1:0")?;
/// udp::connect(&a, b_addr)?;
/// udp::connect(&b, a_addr)?;
/// a.send(b"datagram")?;
/// assert_eq!(b.recv()?.data, b"datagram");
/// # Ok::<(), ipckit::Error>(())
/// ```
///
/// # Errors
/// [`Error::PermissionDenied`] for a port below 1024 without the privilege;
/// [`Error::InvalidArgument`] for an address that does not parse; [`Error::Os`] for a host
/// name that does not resolve, an address in use (`EADDRINUSE`), one that is not this machine's (`EADDRNOTAVAIL`), or another OS error.
pub fn bind(local: impl ToSocketAddrs) -> Result<(DatagramLink, SocketAddr)> {
    let addrs = super::resolve(local, "udp socket")?;
    let socket =
        std::net::UdpSocket::bind(&addrs[..]).map_err(|e| Error::os("bind", "udp socket", e))?;
    let addr = socket
        .local_addr()
        .map_err(|e| Error::os("getsockname", "udp socket", e))?;
    let link = DatagramLink::new(
        OwnedFd::from(socket),
        DatagramKind::Udp,
        MAX_DATAGRAM,
        format!("udp socket {addr}"),
    )?;
    Ok((link, addr))
}

/// Connects a bound UDP link to `peer`. Nothing is sent: a peer that is not there is found
/// out later, if at all (see the module docs).
///
/// # Errors
/// [`Error::PermissionDenied`] for a broadcast address (the socket has no `SO_BROADCAST`);
/// [`Error::Os`] for a peer of the other address family (`EAFNOSUPPORT`), one that cannot be
/// reached (`ENETUNREACH`), or another OS error.
pub fn connect(link: &DatagramLink, peer: SocketAddr) -> Result<()> {
    let addr = rustix::net::SocketAddrAny::from(peer);
    rustix::net::connect(link, &addr)
        .map_err(|e| Error::os("connect", format!("udp peer {peer}"), e))
}
