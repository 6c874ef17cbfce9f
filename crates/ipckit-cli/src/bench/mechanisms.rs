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
use clap::ValueEnum;
use ipckit::shm::mailbox::Mailbox;
use ipckit::shm::topic::{Overflow, Topic};
use ipckit::shm::WaitStrategy;
use ipckit::socket::{tcp, udp, unix};
use ipckit::{fifo, pipe, Capacity, Deadline, MessageReceiver, MessageSender};
use serde::Serialize;

use super::waiting::{Via, WaitingLink};

/// Every mechanism `ipckit bench` knows, in the order it runs them. Their names (in
/// `--mechanisms`, the table and the JSON) are DESIGN section 5's: `shm-spin`, `pipe`,
/// `unix-stream`...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Mechanism {
    /// Raw shared-memory hand-off, spinning: the round-trip reference.
    ShmSpin,
    /// A raw single-producer/single-consumer ring with cached cursors, spinning: the
    /// streaming reference.
    ShmRing,
    /// Raw shared-memory hand-off, sleeping on a futex.
    ShmFutex,
    /// An anonymous pipe pair.
    Pipe,
    /// A named pipe pair.
    Fifo,
    /// A Unix stream socket.
    UnixStream,
    /// A Unix sequenced-packet socket.
    UnixSeqpacket,
    /// Unix datagram sockets.
    UnixDgram,
    /// TCP over loopback.
    Tcp,
    /// UDP over loopback.
    Udp,
    /// POSIX message queues.
    PosixMq,
    /// System V message queues.
    SysvMq,
    /// Mailboxes, single sender and receiver, the library's default wait (spin, then sleep).
    Mailbox,
    /// Mailboxes, single sender and receiver, sleeping at once.
    MailboxSleep,
    /// Mailboxes, single sender and receiver, spinning waits.
    MailboxSpin,
    /// The `mailbox` link, received with `recv_async` on a tokio current-thread runtime.
    MailboxAsync,
    /// The `mailbox` link, received through a `WaitSet`.
    MailboxWaitset,
    /// Mailboxes on the many-senders path.
    MailboxMpsc,
    /// A mailbox written and read in place.
    MailboxZeroCopy,
    /// Topics with backpressure.
    Topic,
    /// One publisher, several subscriber processes.
    TopicFanout,
    /// A service connection.
    Service,
}

impl Mechanism {
    /// Every mechanism, in the order they run.
    pub fn all() -> &'static [Mechanism] {
        Mechanism::value_variants()
    }

    /// Its documented name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ShmSpin => "shm-spin",
            Mechanism::ShmRing => "shm-ring",
            Mechanism::ShmFutex => "shm-futex",
            Mechanism::Pipe => "pipe",
            Mechanism::Fifo => "fifo",
            Mechanism::UnixStream => "unix-stream",
            Mechanism::UnixSeqpacket => "unix-seqpacket",
            Mechanism::UnixDgram => "unix-dgram",
            Mechanism::Tcp => "tcp",
            Mechanism::Udp => "udp",
            Mechanism::PosixMq => "posix-mq",
            Mechanism::SysvMq => "sysv-mq",
            Mechanism::Mailbox => "mailbox",
            Mechanism::MailboxSleep => "mailbox-sleep",
            Mechanism::MailboxSpin => "mailbox-spin",
            Mechanism::MailboxAsync => "mailbox-async",
            Mechanism::MailboxWaitset => "mailbox-waitset",
            Mechanism::MailboxMpsc => "mailbox-mpsc",
            Mechanism::MailboxZeroCopy => "mailbox-zero-copy",
            Mechanism::Topic => "topic",
            Mechanism::TopicFanout => "topic-fanout",
            Mechanism::Service => "service",
        }
    }

    /// The mailbox rows' wait strategy.
    fn mailbox_wait(self) -> WaitStrategy {
        match self {
            Mechanism::Mailbox => WaitStrategy::default(),
            Mechanism::MailboxSleep | Mechanism::MailboxAsync | Mechanism::MailboxWaitset => {
                WaitStrategy::Sleep
            }
            _ => WaitStrategy::BusyPoll,
        }
    }
}

impl Mechanism {
    /// How the `mailbox-async` and `mailbox-waitset` rows receive.
    fn via(self) -> Option<Via> {
        match self {
            Mechanism::MailboxAsync => Some(Via::Async),
            Mechanism::MailboxWaitset => Some(Via::WaitSet),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The two phases of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Round trips: the parent sends, the peer echoes.
    Rtt,
    /// Streaming: the parent sends flat out, the peer counts.
    Stream,
}

impl Phase {
    /// Its name on the peer's command line.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Rtt => "rtt",
            Phase::Stream => "stream",
        }
    }
}

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
pub fn object_name(mechanism: Mechanism) -> String {
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
    /// The `mailbox-async` and `mailbox-waitset` rows.
    Waiting(String, Via),
    PosixMq(String),
    Service(ipckit::service::Server),
    SysvMq(i32),
    Topic(String),
    /// Baselines and zero copy: the harness drives them itself.
    Custom,
}

/// Creates what the peer will connect to; returns it and the argument to pass to the peer.
pub fn prepare(mechanism: Mechanism, size: usize) -> Result<(Prepared, String)> {
    let name = object_name(mechanism);
    Ok(match mechanism {
        Mechanism::Pipe => (Prepared::Pipe, name),
        Mechanism::Fifo => {
            let path = tmp_path(&name);
            fifo::Duplex::create(&path, 0o600)?;
            (Prepared::Fifo(path.clone()), path.display().to_string())
        }
        Mechanism::UnixStream => {
            let path = tmp_path(&name);
            let listener = unix::StreamListener::bind(&path)?;
            (Prepared::UnixStream(listener), path.display().to_string())
        }
        Mechanism::UnixSeqpacket => {
            let path = tmp_path(&name);
            let listener = unix::SeqpacketListener::bind(&path)?;
            (Prepared::Seqpacket(listener), path.display().to_string())
        }
        Mechanism::UnixDgram => {
            let path = tmp_path(&name);
            let peer = tmp_path(&format!("{name}-peer"));
            let bound = unix::BoundDatagram::bind(&path, None)?;
            (
                Prepared::Datagram(bound, peer.clone()),
                format!("{} {}", path.display(), peer.display()),
            )
        }
        Mechanism::Tcp => {
            let listener = tcp::Listener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            (Prepared::Tcp(listener), addr.to_string())
        }
        Mechanism::Udp => {
            let (link, addr) = udp::bind("127.0.0.1:0")?;
            (Prepared::Udp(link), addr.to_string())
        }
        Mechanism::Mailbox
        | Mechanism::MailboxSleep
        | Mechanism::MailboxSpin
        | Mechanism::MailboxMpsc
        | Mechanism::MailboxAsync
        | Mechanism::MailboxWaitset => {
            let wait = mechanism.mailbox_wait();
            for dir in ["ping", "pong"] {
                let builder = Mailbox::builder(&format!("{name}-{dir}"))
                    .capacity(64)
                    .max_message_size(size)
                    .wait_strategy(wait);
                // The many-senders row takes the general path: slots claimed by CAS.
                if mechanism == Mechanism::MailboxMpsc {
                    builder.create()?;
                } else {
                    builder.single_sender().single_receiver().create()?;
                }
            }
            match mechanism.via() {
                Some(via) => (Prepared::Waiting(name.clone(), via), name),
                None => (Prepared::Mailbox(name.clone(), wait), name),
            }
        }
        Mechanism::PosixMq => {
            for dir in ["ping", "pong"] {
                ipckit::mq::PosixQueue::builder(&format!("{name}-{dir}"))
                    .max_message_size(size)
                    .create()?;
            }
            (Prepared::PosixMq(name.clone()), name)
        }
        Mechanism::SysvMq => {
            let base = sysv_key();
            for dir in 0..2 {
                ipckit::mq::SysvQueue::create(base + dir, 0o600)?;
            }
            (Prepared::SysvMq(base), base.to_string())
        }
        Mechanism::Service => (
            Prepared::Service(ipckit::service::Server::bind(&name, 0o600)?),
            name,
        ),
        Mechanism::Topic => {
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
pub fn cleanup(mechanism: Mechanism) {
    let name = object_name(mechanism);
    if mechanism == Mechanism::SysvMq {
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
pub fn parent_waits_for_peer(mechanism: Mechanism) -> bool {
    matches!(mechanism, Mechanism::Udp | Mechanism::UnixDgram)
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
        Prepared::Waiting(name, via) => {
            let tx = Mailbox::open(&format!("{name}-ping"))?.sender()?;
            let rx = Mailbox::open(&format!("{name}-pong"))?.receiver()?;
            Box::new(WaitingLink::new(tx, rx, via)?)
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
pub fn peer_link(mechanism: Mechanism, arg: &str) -> Result<(Link, String)> {
    Ok(match mechanism {
        Mechanism::Pipe => {
            let (tx, rx) = pipe::stdio()?;
            (link(tx, rx), String::new())
        }
        Mechanism::Fifo => (
            Box::new(fifo::Duplex::open(
                arg,
                fifo::Side::Second,
                Capacity::KERNEL_BUFFER,
                Deadline::after(OPEN_DEADLINE),
            )?),
            String::new(),
        ),
        Mechanism::UnixStream => (Box::new(unix::connect_stream(arg)?), String::new()),
        Mechanism::UnixSeqpacket => (Box::new(unix::connect_seqpacket(arg)?), String::new()),
        Mechanism::UnixDgram => {
            let (parent, mine) = arg.split_once(' ').context("two paths")?;
            let bound = unix::BoundDatagram::bind(mine, Some(std::path::Path::new(parent)))?;
            (Box::new(bound), String::new())
        }
        Mechanism::Tcp => (Box::new(tcp::connect(arg)?), String::new()),
        Mechanism::Udp => {
            let parent: SocketAddr = arg.parse().context("udp address")?;
            let (udp_link, mine) = udp::bind("127.0.0.1:0")?;
            udp::connect(&udp_link, parent)?;
            (Box::new(udp_link), mine.to_string())
        }
        Mechanism::Mailbox
        | Mechanism::MailboxSleep
        | Mechanism::MailboxSpin
        | Mechanism::MailboxMpsc => {
            let wait = mechanism.mailbox_wait();
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
        Mechanism::MailboxAsync | Mechanism::MailboxWaitset => {
            let via = mechanism.via().context("a waiting row")?;
            let rx = Mailbox::open(&format!("{arg}-ping"))?.receiver()?;
            let tx = Mailbox::open(&format!("{arg}-pong"))?.sender()?;
            (Box::new(WaitingLink::new(tx, rx, via)?), String::new())
        }
        Mechanism::Service => {
            let (conn, _) =
                ipckit::service::Client::connect(arg, b"bench", Deadline::after(OPEN_DEADLINE))?;
            (Box::new(conn), String::new())
        }
        Mechanism::PosixMq => (
            link(
                ipckit::mq::PosixQueue::open(&format!("{arg}-pong"))?,
                ipckit::mq::PosixQueue::open(&format!("{arg}-ping"))?,
            ),
            String::new(),
        ),
        Mechanism::SysvMq => {
            let base: i32 = arg.parse().context("queue key")?;
            (
                link(
                    ipckit::mq::SysvQueue::open(base + 1)?,
                    ipckit::mq::SysvQueue::open(base)?,
                ),
                String::new(),
            )
        }
        Mechanism::Topic => {
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
