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

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Error, Result};
use crate::fd::{wait_any, wait_ready};
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender};
use crate::shm::mailbox::{Mailbox, MailboxReceiver, MailboxSender};
use crate::shm::segment::check_name;
use crate::shm::{Shared, WaitStrategy};
use crate::socket::unix::{self, StreamListener};
use crate::socket::PeerCredentials;
use crate::stream::FramedStream;

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

/// What a connection is made of, on either side.
#[derive(Debug)]
struct Ends {
    tx: MailboxSender,
    rx: MailboxReceiver,
    /// The connection socket: hang-up, doorbells, section descriptors.
    control: FramedStream,
    /// Each side's "asleep on the socket, ring the doorbell" flag.
    asleep: Shared<[AtomicU32; 2]>,
    side: usize,
    peer: PeerCredentials,
    max: usize,
    object: String,
}

/// One side of an accepted connection: a private pair of channels.
#[derive(Debug)]
pub struct Connection {
    ends: Ends,
    next_id: u64,
    /// Section frames whose descriptor has not arrived yet.
    sections_due: usize,
    /// Section descriptors, in the order their messages were sent.
    sections: VecDeque<OwnedFd>,
    /// A descriptor that came before its section frame was read whole.
    early: Option<OwnedFd>,
    /// The peer has closed the connection socket.
    hung_up: bool,
    /// Callbacks that arrived while the client waited for something else.
    callbacks: VecDeque<Vec<u8>>,
}

/// A request as the server receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Correlation id: pass it to [`Connection::reply`].
    pub id: u64,
    /// The request's bytes.
    pub data: Vec<u8>,
}

/// A message as it came off the channel.
struct Incoming {
    kind: u8,
    id: u64,
    data: Vec<u8>,
}

impl Connection {
    fn new(mut ends: Ends) -> Result<Connection> {
        ends.control = ends.control.with_fd_limit(SECTION_FDS);
        Ok(Connection {
            ends,
            next_id: 0,
            sections_due: 0,
            sections: VecDeque::new(),
            early: None,
            hung_up: false,
            callbacks: VecDeque::new(),
        })
    }

    /// The other side's credentials.
    pub fn peer(&self) -> PeerCredentials {
        self.ends.peer
    }

    /// Client: sends `request` and waits for its reply. Callbacks that arrive meanwhile are
    /// kept for [`Connection::recv_callback`]; replies to earlier calls that timed out are
    /// skipped.
    ///
    /// # Errors
    /// [`Error::Disconnected`] if the server goes away; [`Error::Timeout`];
    /// [`Error::MessageTooLarge`] over the service's maximum.
    pub fn call(&mut self, request: &[u8], deadline: Deadline) -> Result<Vec<u8>> {
        self.call_inner(request, deadline, None)
    }

    /// Client: as [`Connection::call`], handing every callback that arrives while the call
    /// is pending to `on_callback`, in order.
    ///
    /// # Errors
    /// As [`Connection::call`].
    pub fn call_with(
        &mut self,
        request: &[u8],
        deadline: Deadline,
        mut on_callback: impl FnMut(Vec<u8>),
    ) -> Result<Vec<u8>> {
        self.call_inner(request, deadline, Some(&mut on_callback))
    }

    fn call_inner(
        &mut self,
        request: &[u8],
        deadline: Deadline,
        mut on_callback: Option<&mut dyn FnMut(Vec<u8>)>,
    ) -> Result<Vec<u8>> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_message(KIND_REQUEST, id, request, deadline)?;
        loop {
            let message = self.next_incoming(deadline)?;
            match (message.kind, &mut on_callback) {
                (KIND_REPLY, _) if message.id == id => return Ok(message.data),
                (KIND_CALLBACK, Some(f)) => f(message.data),
                (KIND_CALLBACK, None) => self.queue_callback(message.data),
                // A stale reply, or a request a server has no business sending.
                _ => {}
            }
        }
    }

    fn queue_callback(&mut self, data: Vec<u8>) {
        if self.callbacks.len() == MAX_QUEUED_CALLBACKS {
            self.callbacks.pop_front();
        }
        self.callbacks.push_back(data);
    }

    /// Client: the next callback from the server (queued ones first).
    ///
    /// # Errors
    /// [`Error::Disconnected`] if the server goes away; [`Error::Empty`]/[`Error::Timeout`].
    pub fn recv_callback(&mut self, deadline: Deadline) -> Result<Vec<u8>> {
        if let Some(data) = self.callbacks.pop_front() {
            return Ok(data);
        }
        loop {
            let message = self.next_incoming(deadline)?;
            if message.kind == KIND_CALLBACK {
                return Ok(message.data);
            }
        }
    }

    /// Server: the next request.
    ///
    /// # Errors
    /// [`Error::Disconnected`] once the client has gone.
    pub fn next_request(&mut self, deadline: Deadline) -> Result<Request> {
        loop {
            let message = self.next_incoming(deadline)?;
            if message.kind == KIND_REQUEST {
                return Ok(Request {
                    id: message.id,
                    data: message.data,
                });
            }
        }
    }

    /// Server: answers request `id`.
    ///
    /// # Errors
    /// [`Error::Disconnected`]; [`Error::Timeout`] if the client leaves its channel full for
    /// 10 s; [`Error::MessageTooLarge`].
    pub fn reply(&mut self, id: u64, reply: &[u8]) -> Result<()> {
        self.send_message(
            KIND_REPLY,
            id,
            reply,
            Deadline::after(Duration::from_secs(10)),
        )
    }

    /// Server: calls back into the client, which receives `msg` even while it waits for the
    /// reply to a call ([`Connection::call_with`], [`Connection::recv_callback`]).
    ///
    /// # Errors
    /// As [`MessageSender::send_deadline`].
    pub fn callback(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_message(KIND_CALLBACK, id, msg, deadline)
    }

    /// Writes one message: in place into a channel slot, or into a sealed section passed
    /// over the socket first when it is larger than a slot.
    fn send_message(&mut self, kind: u8, id: u64, data: &[u8], deadline: Deadline) -> Result<()> {
        check_size(data.len(), self.ends.max)?;
        let section = if data.len() > INLINE_MAX {
            Some(write_section(data, &self.ends.object)?)
        } else {
            None
        };
        // The slot is claimed first: a section is passed only for a message that will follow.
        let mut loan = self.ends.tx.loan_deadline(deadline)?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = kind;
        header[8..].copy_from_slice(&id.to_le_bytes());
        let len = match &section {
            Some(fd) => {
                self.ends
                    .control
                    .send_with_fds(SECTION, &[fd.as_fd()], deadline)?;
                header[1] = FLAG_SECTION;
                loan[HEADER_LEN..HEADER_LEN + 8]
                    .copy_from_slice(&(data.len() as u64).to_le_bytes());
                8
            }
            None => {
                loan[HEADER_LEN..HEADER_LEN + data.len()].copy_from_slice(data);
                data.len()
            }
        };
        loan[..HEADER_LEN].copy_from_slice(&header);
        loan.publish(HEADER_LEN + len)?;
        // SYNC: pairs with the fence in `next_incoming` (Dekker): either the receiver sees
        // the message before it sleeps, or we see its flag and ring.
        fence(Ordering::SeqCst);
        if self.ends.asleep[1 - self.ends.side].load(Ordering::SeqCst) != 0 {
            // A full socket already holds a doorbell; a gone peer is found by its receiver.
            let _ = self.ends.control.try_send(DOORBELL);
        }
        Ok(())
    }

    /// The next message of any kind: spin on the channel, then sleep on the socket until a
    /// doorbell, a hang-up or `deadline`.
    fn next_incoming(&mut self, deadline: Deadline) -> Result<Incoming> {
        let mut buf = Vec::new();
        loop {
            let spin = match deadline {
                Deadline::Now => Deadline::Now,
                Deadline::Never => Deadline::after(SPIN),
                Deadline::At(at) => Deadline::At(at.min(Instant::now() + SPIN)),
            };
            if self.try_channel(&mut buf, spin)? {
                return self.decode(buf);
            }
            if self.hung_up {
                return Err(Error::Disconnected);
            }
            let flag = &self.ends.asleep[self.ends.side];
            flag.store(1, Ordering::SeqCst);
            // SYNC: pairs with the fence in `send_message`.
            fence(Ordering::SeqCst);
            let got = self.try_channel(&mut buf, Deadline::Now);
            let ready = match got {
                Ok(false) if !deadline.expired() => {
                    wait_ready(self.ends.control.as_fd(), PollFlags::IN, deadline)
                }
                _ => Ok(false),
            };
            self.ends.asleep[self.ends.side].store(0, Ordering::Relaxed);
            if got? {
                return self.decode(buf);
            }
            let woken = ready?;
            self.drain_control()?;
            if !woken && !self.hung_up {
                return Err(deadline.recv_expired());
            }
            // A doorbell, or a hang-up: the channel is checked (once more) first.
        }
    }

    /// One receive from the channel: `Ok(false)` if nothing came by `deadline`.
    fn try_channel(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<bool> {
        match self.ends.rx.recv_deadline(buf, deadline) {
            Ok(_) => Ok(true),
            Err(e) if e.is_transient() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads what the socket holds without waiting: doorbells, section descriptors, or the
    /// peer's hang-up (remembered: messages it sent before are still delivered). Descriptors
    /// no section frame asked for are closed at once, but one: the frame it came with may not
    /// have been read whole yet.
    fn drain_control(&mut self) -> Result<()> {
        loop {
            match self.ends.control.try_recv() {
                Ok(frame) if frame.data == SECTION => self.sections_due += 1,
                Ok(frame) if frame.data == DOORBELL => {}
                Ok(_) => {
                    return Err(Error::corrupt(
                        &self.ends.object,
                        "an unknown control frame",
                    ))
                }
                Err(e) if e.is_transient() => break,
                Err(Error::Disconnected) => {
                    self.hung_up = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let early = self.early.take();
        for fd in early.into_iter().chain(self.ends.control.take_fds()) {
            if self.sections_due > 0 {
                self.sections_due -= 1;
                if self.sections.len() < SECTION_FDS {
                    self.sections.push_back(fd);
                }
            } else if self.early.is_none() {
                self.early = Some(fd);
            }
        }
        Ok(())
    }

    /// Splits a channel message into its header and data, reading its section if it has one.
    fn decode(&mut self, message: Vec<u8>) -> Result<Incoming> {
        if message.len() < HEADER_LEN
            || !(KIND_REQUEST..=KIND_CALLBACK).contains(&message[0])
            || message[1] & !FLAG_SECTION != 0
        {
            return Err(Error::corrupt(
                &self.ends.object,
                "a message without a valid header",
            ));
        }
        let kind = message[0];
        let id = u64::from_le_bytes(message[8..HEADER_LEN].try_into().expect("8 bytes"));
        if message[1] & FLAG_SECTION == 0 {
            return Ok(Incoming {
                kind,
                id,
                data: message[HEADER_LEN..].to_vec(),
            });
        }
        let len: [u8; 8] = message[HEADER_LEN..]
            .try_into()
            .map_err(|_| Error::corrupt(&self.ends.object, "a section without its length"))?;
        let len = u64::from_le_bytes(len);
        let section = self.take_section()?;
        if len > self.ends.max as u64 {
            return Err(Error::MessageTooLarge {
                size: usize::try_from(len).unwrap_or(usize::MAX),
                max: self.ends.max,
            });
        }
        let data = read_section(section, len as usize, &self.ends.object)?;
        Ok(Incoming { kind, id, data })
    }

    /// The descriptor of the section whose message was just taken from the channel.
    fn take_section(&mut self) -> Result<OwnedFd> {
        let deadline = Deadline::after(SECTION_WAIT);
        loop {
            if let Some(fd) = self.sections.pop_front() {
                return Ok(fd);
            }
            if self.hung_up || !wait_ready(self.ends.control.as_fd(), PollFlags::IN, deadline)? {
                return Err(Error::corrupt(
                    &self.ends.object,
                    "a large message whose section never came",
                ));
            }
            self.drain_control()?;
        }
    }
}

/// A sealed `memfd` holding `data`: nobody can change, shrink or grow it once passed.
fn write_section(data: &[u8], object: &str) -> Result<OwnedFd> {
    let os = |op: &'static str| move |e| Error::os(op, format!("{object} (section)"), e);
    let fd = rustix::fs::memfd_create(
        "ipckit.service.section",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(os("memfd_create"))?;
    rustix::fs::ftruncate(&fd, data.len() as u64).map_err(os("ftruncate"))?;
    let mut written = 0;
    while written < data.len() {
        match rustix::io::pwrite(&fd, &data[written..], written as u64) {
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(os("pwrite")(e)),
        }
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )
    .map_err(os("fcntl(F_ADD_SEALS)"))?;
    Ok(fd)
}

/// Reads a section of `len` bytes, after checking that nobody can change it any more.
fn read_section(fd: OwnedFd, len: usize, object: &str) -> Result<Vec<u8>> {
    let corrupt = |detail: &str| Error::corrupt(object, detail.to_string());
    if !sealed(
        fd.as_fd(),
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW,
    ) {
        return Err(corrupt("a section that is not sealed"));
    }
    let size = rustix::fs::fstat(&fd)
        .map_err(|e| Error::os("fstat", object, e))?
        .st_size;
    if u64::try_from(size) != Ok(len as u64) {
        return Err(corrupt("a section whose size is not the message's"));
    }
    let mut data = vec![0u8; len];
    let mut read = 0;
    while read < len {
        match rustix::io::pread(&fd, &mut data[read..], read as u64) {
            Ok(0) => return Err(corrupt("a section that ended early")),
            Ok(n) => read += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::os("pread", object, e)),
        }
    }
    Ok(data)
}

/// Plain messaging over the private pair: a client's messages are requests, a server's are
/// callbacks.
impl MessageSender for Connection {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        let kind = if self.ends.side == SERVER {
            KIND_CALLBACK
        } else {
            KIND_REQUEST
        };
        let id = self.next_id;
        self.next_id += 1;
        self.send_message(kind, id, msg, deadline)
    }

    fn max_message_size(&self) -> usize {
        self.ends.max
    }
}

/// Plain receiving: a server receives requests, a client callbacks.
impl MessageReceiver for Connection {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<crate::Metadata> {
        let (id, data) = if self.ends.side == SERVER {
            let request = self.next_request(deadline)?;
            (Some(request.id), request.data)
        } else {
            (None, self.recv_callback(deadline)?)
        };
        *buf = data;
        Ok(crate::Metadata {
            sender_pid: Some(self.ends.peer.pid),
            sender_uid: Some(self.ends.peer.uid),
            sequence: id,
            ..crate::Metadata::default()
        })
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ends.control.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_only_when_sealed_and_of_the_announced_size() {
        let data = vec![7u8; INLINE_MAX + 1];
        let fd = write_section(&data, "test").unwrap();
        let copy = fd.try_clone().unwrap();
        assert_eq!(read_section(fd, data.len(), "test").unwrap(), data);
        assert!(matches!(
            read_section(copy, data.len() - 1, "test"),
            Err(Error::Corrupt { .. })
        ));
        // A memfd its sender could still change or shrink is refused before it is read.
        let unsealed = rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, 10).unwrap();
        assert!(matches!(
            read_section(unsealed, 10, "test"),
            Err(Error::Corrupt { .. })
        ));
    }
}
