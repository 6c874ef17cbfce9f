//! How each mechanism's two ends are set up: the parent side (which creates named objects
//! and accepts connections) and the peer side (a separate `ipckit bench-peer` process).
//!
//! Every mechanism ends up as a [`Link`]: a sender and a receiver that speak the message
//! traits, so the measuring loops in `harness.rs` are written once. The zero-copy and
//! baseline rows, which use other APIs, have their own loops there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use ipckit::shm::mailbox::Mailbox;
use ipckit::shm::topic::{Overflow, Topic};
use ipckit::shm::WaitStrategy;
use ipckit::socket::{tcp, udp, unix};
use ipckit::{fifo, pipe, Capacity, Deadline, MessageReceiver, MessageSender};

/// Every mechanism `ipckit bench` knows, in the order it runs them.
pub const ALL: &[&str] = &[
    "shm-spin",
    "shm-futex",
    "pipe",
    "fifo",
    "unix-stream",
    "unix-seqpacket",
    "unix-dgram",
    "tcp",
    "udp",
    "posix-mq",
    "sysv-mq",
    "mailbox",
    "mailbox-spin",
    "mailbox-mpsc",
    "mailbox-zero-copy",
    "topic",
    "topic-fanout",
    "service",
];

/// Subscribers of the `topic-fanout` row.
pub const FANOUT: usize = 4;

/// Sender processes of the `mailbox-mpsc` row's streaming phase.
pub const SENDERS: usize = 3;

/// Both directions of one end of a measured link.
pub trait Endpoint: MessageSender + MessageReceiver {}
impl<T: MessageSender + MessageReceiver> Endpoint for T {}

/// One end of a measured link.
pub type Link = Box<dyn Endpoint>;

/// A sender and a receiver that are separate objects, used as one endpoint.
struct Pair<T, R> {
    tx: T,
    rx: R,
}

impl<T: MessageSender, R> MessageSender for Pair<T, R> {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> ipckit::Result<()> {
        self.tx.send_deadline(msg, deadline)
    }
    fn max_message_size(&self) -> usize {
        self.tx.max_message_size()
    }
}

impl<T, R: MessageReceiver> MessageReceiver for Pair<T, R> {
    fn recv_deadline(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> ipckit::Result<ipckit::Metadata> {
        self.rx.recv_deadline(buf, deadline)
    }
}

fn link(tx: impl MessageSender + 'static, rx: impl MessageReceiver + 'static) -> Link {
    Box::new(Pair { tx, rx })
}

/// Where the parent put the named objects, passed to the peer on its command line.
pub fn object_name(mechanism: &str) -> String {
    format!("bench-{mechanism}-{}", std::process::id())
}

fn tmp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(name)
}

/// What the parent prepared before starting the peer.
pub enum Prepared {
    Pipe,
    Fifo(PathBuf),
    UnixStream(unix::StreamListener),
    Seqpacket(unix::SeqpacketListener),
    Datagram(unix::BoundDatagram, PathBuf),
    Tcp(tcp::Listener),
    Udp(ipckit::socket::DatagramLink),
    Mailbox(String, WaitStrategy),
    PosixMq(String),
    Service(ipckit::service::Server),
    SysvMq(i32),
    Topic(String),
    /// Baselines and zero copy: the harness drives them itself.
    Custom,
}

/// Creates what the peer will connect to; returns it and the argument to pass to the peer.
pub fn prepare(mechanism: &str, size: usize) -> Result<(Prepared, String)> {
    let name = object_name(mechanism);
    Ok(match mechanism {
        "pipe" => (Prepared::Pipe, name),
        "fifo" => {
            let path = tmp_path(&name);
            fifo::Duplex::create(&path, 0o600)?;
            (Prepared::Fifo(path.clone()), path.display().to_string())
        }
        "unix-stream" => {
            let path = tmp_path(&name);
            let listener = unix::StreamListener::bind(&path)?;
            (Prepared::UnixStream(listener), path.display().to_string())
        }
        "unix-seqpacket" => {
            let path = tmp_path(&name);
            let listener = unix::SeqpacketListener::bind(&path)?;
            (Prepared::Seqpacket(listener), path.display().to_string())
        }
        "unix-dgram" => {
            let path = tmp_path(&name);
            let peer = tmp_path(&format!("{name}-peer"));
            let bound = unix::BoundDatagram::bind(&path, None)?;
            (
                Prepared::Datagram(bound, peer.clone()),
                format!("{} {}", path.display(), peer.display()),
            )
        }
        "tcp" => {
            let listener = tcp::Listener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            (Prepared::Tcp(listener), addr.to_string())
        }
        "udp" => {
            let (link, addr) = udp::bind("127.0.0.1:0")?;
            (Prepared::Udp(link), addr.to_string())
        }
        "mailbox" | "mailbox-spin" | "mailbox-mpsc" => {
            let wait = if mechanism == "mailbox" {
                WaitStrategy::Sleep
            } else {
                WaitStrategy::BusyPoll
            };
            for dir in ["ping", "pong"] {
                let builder = Mailbox::builder(&format!("{name}-{dir}"))
                    .capacity(64)
                    .max_message_size(size)
                    .wait_strategy(wait);
                // The many-senders row takes the general path: slots claimed by CAS.
                if mechanism == "mailbox-mpsc" {
                    builder.create()?;
                } else {
                    builder.single_sender().single_receiver().create()?;
                }
            }
            (Prepared::Mailbox(name.clone(), wait), name)
        }
        "posix-mq" => {
            for dir in ["ping", "pong"] {
                ipckit::mq::PosixQueue::builder(&format!("{name}-{dir}"))
                    .max_message_size(size)
                    .create()?;
            }
            (Prepared::PosixMq(name.clone()), name)
        }
        "sysv-mq" => {
            let base = sysv_key();
            for dir in 0..2 {
                ipckit::mq::SysvQueue::create(base + dir, 0o600)?;
            }
            (Prepared::SysvMq(base), base.to_string())
        }
        "service" => (
            Prepared::Service(ipckit::service::Server::bind(&name, 0o600)?),
            name,
        ),
        "topic" => {
            for dir in ["ping", "pong"] {
                Topic::builder(&format!("{name}-{dir}"))
                    .capacity(64)
                    .max_message_size(size)
                    .overflow(Overflow::Backpressure)
                    .create()?;
            }
            (Prepared::Topic(name.clone()), name)
        }
        _ => (Prepared::Custom, name),
    })
}

/// Keys of the two System V queues of the `sysv-mq` row (unlikely to collide: from the pid).
fn sysv_key() -> i32 {
    0x1be0_0000 | ((std::process::id() as i32 & 0xffff) << 2)
}

/// Removes the named objects of a row (run after the peer has exited or been killed).
pub fn cleanup(mechanism: &str) {
    let name = object_name(mechanism);
    if mechanism == "sysv-mq" {
        for dir in 0..2 {
            if let Ok(q) = ipckit::mq::SysvQueue::open(sysv_key() + dir) {
                let _ = q.remove();
            }
        }
    }
    for dir in ["ping", "pong"] {
        let _ = ipckit::mq::PosixQueue::remove(&format!("{name}-{dir}"));
    }
    let _ = fifo::Duplex::remove(tmp_path(&name));
    for dir in ["ping", "pong"] {
        let _ = Mailbox::remove(&format!("{name}-{dir}"));
        let _ = Topic::remove(&format!("{name}-{dir}"));
    }
    let _ = Topic::remove(&name);
    let _ = Mailbox::remove(&name);
    let _ = ipckit::shm::pingpong::PingPong::remove(&name);
    let _ = std::fs::remove_file(tmp_path(&format!("{name}-peer")));
}

/// Wires the peer's stdin/stdout for mechanisms that need it (pipes), before it starts.
pub fn configure_peer(prepared: &Prepared, command: &mut Command) {
    if let Prepared::Pipe = prepared {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
    } else {
        command.stdin(Stdio::null()).stdout(Stdio::null());
    }
}

/// Whether the parent must wait for the peer's "ready" (its address) before connecting.
pub fn parent_waits_for_peer(mechanism: &str) -> bool {
    matches!(mechanism, "udp" | "unix-dgram")
}

const OPEN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The parent's end, once the peer has started (accepting its connection if needed);
/// `peer_info` is what the peer said when ready (its UDP address).
pub fn parent_link(
    prepared: Prepared,
    child: &mut std::process::Child,
    peer_info: &str,
) -> Result<Link> {
    Ok(match prepared {
        Prepared::Pipe => {
            let stdin = child.stdin.take().context("peer stdin")?;
            let stdout = child.stdout.take().context("peer stdout")?;
            link(
                pipe::sender_from_fd(stdin.into())?,
                pipe::receiver_from_fd(stdout.into())?,
            )
        }
        Prepared::Fifo(path) => Box::new(fifo::Duplex::open(
            &path,
            fifo::Side::First,
            Capacity::KERNEL_BUFFER,
            Deadline::after(OPEN_DEADLINE),
        )?),
        Prepared::UnixStream(listener) => Box::new(listener.accept()?),
        Prepared::Seqpacket(listener) => Box::new(listener.accept()?),
        Prepared::Datagram(bound, peer) => {
            bound.connect(&peer)?;
            Box::new(bound)
        }
        Prepared::Tcp(listener) => Box::new(listener.accept()?),
        Prepared::Udp(udp_link) => {
            let peer: SocketAddr = peer_info.trim().parse().context("peer's udp address")?;
            udp::connect(&udp_link, peer)?;
            Box::new(udp_link)
        }
        Prepared::Mailbox(name, wait) => {
            let tx = Mailbox::builder(&format!("{name}-ping"))
                .wait_strategy(wait)
                .open()?
                .sender()?;
            let rx = Mailbox::builder(&format!("{name}-pong"))
                .wait_strategy(wait)
                .open()?
                .receiver()?;
            link(tx, rx)
        }
        Prepared::Service(server) => Box::new(server.accept()?.accept(b"")?),
        Prepared::PosixMq(name) => link(
            ipckit::mq::PosixQueue::open(&format!("{name}-ping"))?,
            ipckit::mq::PosixQueue::open(&format!("{name}-pong"))?,
        ),
        Prepared::SysvMq(base) => link(
            ipckit::mq::SysvQueue::open(base)?,
            ipckit::mq::SysvQueue::open(base + 1)?,
        ),
        Prepared::Topic(name) => {
            let tx = Topic::builder(&format!("{name}-ping"))
                .wait_strategy(WaitStrategy::BusyPoll)
                .open()?
                .publisher()?;
            let rx = Topic::builder(&format!("{name}-pong"))
                .wait_strategy(WaitStrategy::BusyPoll)
                .open()?
                .subscriber()?;
            link(tx, rx)
        }
        Prepared::Custom => bail!("this row is driven by the harness itself"),
    })
}

/// The peer's end: connects to what the parent prepared (argument `arg`); returns it and
/// what to tell the parent when ready.
pub fn peer_link(mechanism: &str, arg: &str) -> Result<(Link, String)> {
    Ok(match mechanism {
        "pipe" => {
            let (tx, rx) = pipe::stdio()?;
            (link(tx, rx), String::new())
        }
        "fifo" => (
            Box::new(fifo::Duplex::open(
                arg,
                fifo::Side::Second,
                Capacity::KERNEL_BUFFER,
                Deadline::after(OPEN_DEADLINE),
            )?),
            String::new(),
        ),
        "unix-stream" => (Box::new(unix::connect_stream(arg)?), String::new()),
        "unix-seqpacket" => (Box::new(unix::connect_seqpacket(arg)?), String::new()),
        "unix-dgram" => {
            let (parent, mine) = arg.split_once(' ').context("two paths")?;
            let bound = unix::BoundDatagram::bind(mine, Some(std::path::Path::new(parent)))?;
            (Box::new(bound), String::new())
        }
        "tcp" => (Box::new(tcp::connect(arg)?), String::new()),
        "udp" => {
            let parent: SocketAddr = arg.parse().context("udp address")?;
            let (udp_link, mine) = udp::bind("127.0.0.1:0")?;
            udp::connect(&udp_link, parent)?;
            (Box::new(udp_link), mine.to_string())
        }
        "mailbox" | "mailbox-spin" | "mailbox-mpsc" => {
            let wait = if mechanism == "mailbox" {
                WaitStrategy::Sleep
            } else {
                WaitStrategy::BusyPoll
            };
            let rx = Mailbox::builder(&format!("{arg}-ping"))
                .wait_strategy(wait)
                .open()?
                .receiver()?;
            let tx = Mailbox::builder(&format!("{arg}-pong"))
                .wait_strategy(wait)
                .open()?
                .sender()?;
            (link(tx, rx), String::new())
        }
        "service" => {
            let (conn, _) =
                ipckit::service::Client::connect(arg, b"bench", Deadline::after(OPEN_DEADLINE))?;
            (Box::new(conn), String::new())
        }
        "posix-mq" => (
            link(
                ipckit::mq::PosixQueue::open(&format!("{arg}-pong"))?,
                ipckit::mq::PosixQueue::open(&format!("{arg}-ping"))?,
            ),
            String::new(),
        ),
        "sysv-mq" => {
            let base: i32 = arg.parse().context("queue key")?;
            (
                link(
                    ipckit::mq::SysvQueue::open(base + 1)?,
                    ipckit::mq::SysvQueue::open(base)?,
                ),
                String::new(),
            )
        }
        "topic" => {
            let rx = Topic::builder(&format!("{arg}-ping"))
                .wait_strategy(WaitStrategy::BusyPoll)
                .open()?
                .subscriber()?;
            let tx = Topic::builder(&format!("{arg}-pong"))
                .wait_strategy(WaitStrategy::BusyPoll)
                .open()?
                .publisher()?;
            (link(tx, rx), String::new())
        }
        other => bail!("{other} has no peer link"),
    })
}
