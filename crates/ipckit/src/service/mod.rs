//! Services, after Windows ALPC: a server listens on a named *connection port*; a client
//! connects with a payload; the server sees who is asking (pid, uid, gid, from the kernel) and
//! accepts — then both get a private pair of shared-memory channels that no other process can
//! name — or refuses, with a reason the client receives. Over the private pair, clients make
//! calls (request, then the reply with the same id) and the server may call back into a client
//! (a *callback*, even while that client waits for a reply).
//!
//! ```no_run
//! use ipckit::service::{Client, Server};
//! use ipckit::Deadline;
//!
//! // server process
//! let server = Server::bind("resizer", 0o600)?;
//! let pending = server.accept()?;
//! if pending.peer().uid != 0 {
//!     pending.refuse("root only")?;
//! }
//! # let server = Server::bind("x", 0o600)?; let pending = server.accept()?;
//! let mut conn = pending.accept(b"welcome")?;
//! let request = conn.next_request(Deadline::Never)?;
//! conn.callback(b"halfway there", Deadline::Never)?;
//! conn.reply(request.id, b"done")?;
//!
//! // client process
//! let (mut conn, welcome) = Client::connect("resizer", b"hello", Deadline::Never)?;
//! let answer = conn.call_with(b"resize 42", Deadline::Never, |progress| {
//!     println!("server says {}", String::from_utf8_lossy(&progress));
//! })?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # How it is built
//!
//! The connection port is a Unix stream socket at `$TMPDIR/ipckit.service.NAME`. The private
//! channels are two anonymous mailboxes (sealed `memfd`s: a client cannot shrink them under
//! the server) whose descriptors travel to the client with the acceptance (`SCM_RIGHTS`).
//!
//! - **Message kinds.** Every message starts with a 16-byte header: its kind (request, reply
//!   or callback), flags, and an id. A reply carries its request's id; a callback is never
//!   taken for a reply, nor a reply for a callback.
//! - **Large messages.** A message up to [`INLINE_MAX`] bytes is written into a channel slot.
//!   A larger one (up to the service's maximum, [`DEFAULT_MAX_MESSAGE`] unless configured)
//!   is written into a *section* created for it — a `memfd` sealed against writing, shrinking
//!   and growing — whose descriptor is passed over the connection socket, as ALPC does; the
//!   slot then carries only its length. The receiver checks the seals and the size before
//!   reading it.
//! - **Waiting and hang-up.** A receiver spins on its channel briefly, then sleeps in `poll`
//!   on the connection socket, after raising a flag in a small shared word; a sender that sees
//!   the flag raised rings a one-byte doorbell on the socket. So an idle connection costs no
//!   CPU at all, and the death of the other side is the socket's hang-up, reported by the
//!   kernel: a waiting call ends with [`Error::Disconnected`].
//! - **Handshakes** are read without blocking: [`Server::accept`] waits for new connections
//!   and for every handshake in progress at once, so one client that connects and says
//!   nothing stalls nobody; a handshake not complete within 10 s is dropped.
//! - **Descriptors.** A handshake may carry none; after it, each connection keeps at most a
//!   channel's worth of section descriptors and closes any descriptor the protocol did not
//!   ask for as it arrives.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::fs::SealFlags;

use crate::error::{Error, Result};
use crate::fd::wait_any;
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender};
use crate::shm::mailbox::Mailbox;
use crate::shm::segment::check_name;
use crate::shm::{Shared, WaitStrategy};
use crate::socket::unix::{self, StreamListener};
use crate::socket::PeerCredentials;
use crate::stream::FramedStream;

mod connection;
mod section;

use connection::Ends;
pub use connection::{Connection, Request};

/// The largest message written straight into a channel slot; larger ones travel in a
/// section passed by descriptor.
pub const INLINE_MAX: usize = 64 << 10;
/// The largest message a service carries unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;
/// The most a service may be configured to carry: 1 GiB.
pub const MAX_MESSAGE: usize = 1 << 30;

/// Channel geometry: messages in flight each way.
const CHANNEL_CAPACITY: usize = 16;
/// Kind, flags, reserved bytes, then the id (little-endian).
const HEADER_LEN: usize = 16;
const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_CALLBACK: u8 = 3;
/// The message is in a section; the slot's payload is its length (u64 LE).
const FLAG_SECTION: u8 = 1;
/// How long a receiver spins on its channel before it sleeps on the socket.
const SPIN: Duration = Duration::from_micros(50);
/// A handshake not complete within this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest connection payload or acceptance reply.
const HANDSHAKE_MAX: usize = 64 << 10;
/// Handshakes read at once; further clients wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Section descriptors a connection may hold before their messages are read.
const SECTION_FDS: usize = CHANNEL_CAPACITY + 1;
/// How long a receiver waits for the section of a message already in its channel (an honest
/// sender passes it first).
const SECTION_WAIT: Duration = Duration::from_secs(5);
/// Callbacks kept for [`Connection::recv_callback`]; older ones are dropped beyond it.
const MAX_QUEUED_CALLBACKS: usize = 1024;
/// Control frames on the connection socket after the handshake.
const DOORBELL: &[u8] = b"D";
const SECTION: &[u8] = b"S";
/// Index of each side's "asleep" flag in the connection's shared word pair.
const SERVER: usize = 0;
const CLIENT: usize = 1;

fn port_path(name: &str) -> Result<PathBuf> {
    check_name("service name", name)?;
    Ok(std::env::temp_dir().join(format!("ipckit.service.{name}")))
}

/// A service's connection port.
#[derive(Debug)]
pub struct Server {
    listener: StreamListener,
    name: String,
    max: usize,
    handshakes: Mutex<Vec<Handshake>>,
}

/// A connection whose payload has not fully arrived yet.
#[derive(Debug)]
struct Handshake {
    stream: FramedStream,
    peer: PeerCredentials,
    expires: Instant,
}

impl Server {
    /// Binds the connection port `name`; `mode` decides who may connect at all (the server
    /// then decides per client, from its credentials).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a service of that name is listening (a socket file left
    /// by a dead server is replaced).
    pub fn bind(name: &str, mode: u32) -> Result<Server> {
        let path = port_path(name)?;
        if path.exists() && unix::connect_stream(&path).is_err() {
            // Nobody listens: a dead server's leftover.
            let _ = std::fs::remove_file(&path);
        }
        let listener = StreamListener::bind(&path)?;
        let object = format!("service {name:?}");
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(mode))
            .map_err(|e| Error::os("chmod", object.clone(), e))?;
        crate::fd::set_nonblocking(listener.as_fd(), &object)?;
        Ok(Server {
            listener,
            name: name.to_string(),
            max: DEFAULT_MAX_MESSAGE,
            handshakes: Mutex::new(Vec::new()),
        })
    }

    /// Sets the largest request, reply or callback the service's connections carry
    /// (default [`DEFAULT_MAX_MESSAGE`]); clients learn it when accepted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for more than [`MAX_MESSAGE`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Result<Server> {
        if bytes > MAX_MESSAGE {
            return Err(Error::InvalidArgument(format!(
                "a service message of at most {bytes} bytes: the limit is {MAX_MESSAGE}"
            )));
        }
        self.max = bytes;
        Ok(self)
    }

    /// Waits for the next connection request.
    ///
    /// # Errors
    /// An OS error if the port fails.
    pub fn accept(&self) -> Result<Pending> {
        self.accept_deadline(Deadline::Never)
    }

    /// Waits until `deadline` for the next complete connection request. Handshakes are read
    /// as their bytes arrive, whichever client sends first; one that is silent, malformed,
    /// carries descriptors or takes longer than 10 s is dropped without delaying the others.
    ///
    /// # Errors
    /// [`Error::Empty`]/[`Error::Timeout`] if none completes in time; an OS error if the
    /// port fails.
    pub fn accept_deadline(&self, deadline: Deadline) -> Result<Pending> {
        let mut handshakes = self.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            while handshakes.len() < MAX_HANDSHAKES {
                let Some(stream) = self.listener.try_accept()? else {
                    break;
                };
                let Ok(peer) = unix::stream_peer_credentials(&stream) else {
                    continue;
                };
                handshakes.push(Handshake {
                    // The handshake carries no descriptors: any that come are closed.
                    stream: stream.with_fd_limit(0).with_max_message_size(HANDSHAKE_MAX),
                    peer,
                    expires: Instant::now() + HANDSHAKE_TIMEOUT,
                });
            }
            let now = Instant::now();
            let mut i = 0;
            while i < handshakes.len() {
                match handshakes[i].stream.try_recv() {
                    Ok(request) => {
                        let done = handshakes.swap_remove(i);
                        return Ok(Pending {
                            stream: done.stream,
                            peer: done.peer,
                            payload: request.data,
                            service: self.name.clone(),
                            max: self.max,
                        });
                    }
                    Err(e) if e.is_transient() && now < handshakes[i].expires => i += 1,
                    // Hung up, malformed or too slow: that client alone is dropped.
                    Err(_) => drop(handshakes.swap_remove(i)),
                }
            }
            let earliest = handshakes.iter().map(|h| h.expires).min();
            let turn = match (deadline, earliest) {
                (d, None) => d,
                (Deadline::Now, Some(_)) => Deadline::Now,
                (Deadline::Never, Some(at)) => Deadline::At(at),
                (Deadline::At(d), Some(at)) => Deadline::At(d.min(at)),
            };
            let mut fds: Vec<BorrowedFd<'_>> =
                handshakes.iter().map(|h| h.stream.as_fd()).collect();
            if handshakes.len() < MAX_HANDSHAKES {
                fds.push(self.listener.as_fd());
            }
            if !wait_any(&fds, PollFlags::IN, turn)? && deadline.expired() {
                return Err(deadline.recv_expired());
            }
        }
    }
}

/// A connection request, waiting for the server's decision.
#[derive(Debug)]
pub struct Pending {
    stream: FramedStream,
    peer: PeerCredentials,
    payload: Vec<u8>,
    service: String,
    max: usize,
}

impl Pending {
    /// Who is asking, as the kernel saw them connect.
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// What the client sent with its request.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Accepts: creates the private pair of channels, hands them to the client with `reply`.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a reply over 64 KiB; an error creating the channels or
    /// reaching the client.
    pub fn accept(self, reply: &[u8]) -> Result<Connection> {
        check_size(reply.len(), HANDSHAKE_MAX - 16)?;
        let builder = Mailbox::builder("private")
            .capacity(CHANNEL_CAPACITY)
            .max_message_size(INLINE_MAX + HEADER_LEN)
            .single_sender()
            .single_receiver()
            .wait_strategy(WaitStrategy::BusyPoll);
        let to_client = builder.create_anonymous()?;
        let to_server = builder.create_anonymous()?;
        let asleep = Shared::anonymous([AtomicU32::new(0), AtomicU32::new(0)])?;
        let fds = [
            anonymous_fd(to_client.fd())?,
            anonymous_fd(to_server.fd())?,
            anonymous_fd(asleep.fd())?,
        ];
        let mut message = b"A".to_vec();
        message.extend_from_slice(&(self.max as u64).to_le_bytes());
        message.extend_from_slice(reply);
        let mut stream = self.stream;
        stream.send_with_fds(&message, &fds, Deadline::after(HANDSHAKE_TIMEOUT))?;
        let object = format!("service {:?}, client pid {}", self.service, self.peer.pid);
        Connection::new(Ends {
            tx: to_client.sender()?,
            rx: to_server.receiver()?,
            control: stream,
            asleep,
            side: SERVER,
            peer: self.peer,
            max: self.max,
            object,
        })
    }

    /// Refuses, telling the client why.
    ///
    /// # Errors
    /// An error reaching the client.
    pub fn refuse(mut self, reason: &str) -> Result<()> {
        let mut message = b"R".to_vec();
        let reason = &reason.as_bytes()[..reason.len().min(HANDSHAKE_MAX - 1)];
        message.extend_from_slice(reason);
        self.stream.send_timeout(&message, Duration::from_secs(10))
    }
}

fn anonymous_fd(fd: Option<BorrowedFd<'_>>) -> Result<BorrowedFd<'_>> {
    fd.ok_or_else(|| Error::Unsupported("an anonymous segment without a descriptor".into()))
}

/// A client's way in.
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to service `name` with `payload` (at most 64 KiB); returns the connection
    /// and the server's acceptance reply.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no such service; [`Error::PermissionDenied`] if the socket's
    /// mode or the server refuses (the text carries the server's reason);
    /// [`Error::Timeout`] if no decision by `deadline`; [`Error::Corrupt`] if what the server
    /// sent is not a valid acceptance (say, channels that are not sealed).
    pub fn connect(
        name: &str,
        payload: &[u8],
        deadline: Deadline,
    ) -> Result<(Connection, Vec<u8>)> {
        let path = port_path(name)?;
        let mut stream = unix::connect_stream(&path)?
            .with_fd_limit(3)
            .with_max_message_size(HANDSHAKE_MAX);
        let server = unix::stream_peer_credentials(&stream)?;
        let object = format!("service {name:?}");
        stream.send_deadline(payload, deadline)?;
        let mut decision = Vec::new();
        stream.recv_deadline(&mut decision, deadline)?;
        match decision.first() {
            Some(b'A') if decision.len() >= 9 => {
                let corrupt = |detail: &str| Error::corrupt(&object, detail.to_string());
                let fds = stream.take_fds();
                let [to_client, to_server, asleep]: [OwnedFd; 3] = fds
                    .try_into()
                    .map_err(|_| corrupt("accepted without the three private descriptors"))?;
                for fd in [&to_client, &to_server, &asleep] {
                    if !sealed(fd.as_fd(), SealFlags::SHRINK) {
                        return Err(corrupt("accepted with channels that are not sealed"));
                    }
                }
                let max = u64::from_le_bytes(decision[1..9].try_into().expect("8 bytes"));
                let max = usize::try_from(max)
                    .ok()
                    .filter(|&m| m <= MAX_MESSAGE)
                    .ok_or_else(|| corrupt("a maximum message size over the limit"))?;
                let to_client = Mailbox::from_fd(to_client, WaitStrategy::BusyPoll)?;
                let to_server = Mailbox::from_fd(to_server, WaitStrategy::BusyPoll)?;
                let connection = Connection::new(Ends {
                    tx: to_server.sender()?,
                    rx: to_client.receiver()?,
                    control: stream,
                    asleep: Shared::from_fd(asleep)?,
                    side: CLIENT,
                    peer: server,
                    max,
                    object,
                })?;
                Ok((connection, decision[9..].to_vec()))
            }
            Some(b'R') => Err(Error::PermissionDenied {
                object: format!(
                    "{object}, which refused the connection: {}",
                    String::from_utf8_lossy(&decision[1..])
                ),
            }),
            _ => Err(Error::corrupt(
                object,
                "an answer that is neither accept nor refuse",
            )),
        }
    }
}

/// Whether the memfd `fd` carries every seal in `want`.
fn sealed(fd: BorrowedFd<'_>, want: SealFlags) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|seals| seals.contains(want))
}
