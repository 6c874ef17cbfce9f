//! Services, after Windows ALPC: a server listens on a named *connection port*; a client
//! connects with a payload; the server sees who is asking (pid, uid, gid, from the kernel) and
//! accepts — then both get a private pair of shared-memory channels that no other process can
//! name — or refuses, with a reason the client receives. Over the private pair, calls are
//! request/reply with correlation.
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
//! conn.reply(request.id, b"done")?;
//!
//! // client process
//! let (mut conn, welcome) = Client::connect("resizer", b"hello", Deadline::Never)?;
//! let answer = conn.call(b"resize 42", Deadline::Never)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! The connection port is a Unix stream socket at `$TMPDIR/ipckit.service.NAME`; the private
//! channels are two anonymous (`memfd`) mailboxes whose descriptors travel to the client with
//! the acceptance (`SCM_RIGHTS`). Each side keeps the socket open for the life of the
//! connection: when the other side exits, the socket reports the hang-up, and a waiting call
//! ends with [`Error::Disconnected`] instead of waiting forever. A client that dies mid-call
//! frees its channels (the kernel drops the memory with the last mapping) and touches no other
//! client's.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::link::{Deadline, MessageReceiver, MessageSender};
use crate::shm::mailbox::{Mailbox, MailboxReceiver, MailboxSender};
use crate::shm::segment::check_name;
use crate::shm::WaitStrategy;
use crate::socket::unix::{self, StreamListener};
use crate::socket::PeerCredentials;
use crate::stream::FramedStream;

/// How often a waiting side checks that the other side is still there.
const PEER_CHECK: Duration = Duration::from_millis(20);
/// Channel geometry: messages in flight each way.
const CHANNEL_CAPACITY: usize = 16;
/// The largest request or reply a call carries.
pub const MAX_MESSAGE: usize = 64 << 10;
/// Correlation ids prefix every request and reply.
const ID_LEN: usize = 8;
/// The channels' slot size: a whole 64 KiB message and its id.
const CHANNEL_MAX: usize = MAX_MESSAGE + ID_LEN;

fn port_path(name: &str) -> Result<PathBuf> {
    check_name("service name", name)?;
    Ok(std::env::temp_dir().join(format!("ipckit.service.{name}")))
}

/// A service's connection port.
#[derive(Debug)]
pub struct Server {
    listener: StreamListener,
    name: String,
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
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(mode))
            .map_err(|e| Error::os("chmod", format!("service {name:?}"), e))?;
        Ok(Server {
            listener,
            name: name.to_string(),
        })
    }

    /// Waits for the next connection request.
    pub fn accept(&self) -> Result<Pending> {
        let mut stream = self.listener.accept()?;
        let peer = unix::stream_peer_credentials(&stream)?;
        let request = stream.recv_timeout(Duration::from_secs(10))?;
        Ok(Pending {
            stream,
            peer,
            payload: request.data,
            service: self.name.clone(),
        })
    }
}

/// A connection request, waiting for the server's decision.
#[derive(Debug)]
pub struct Pending {
    stream: FramedStream,
    peer: PeerCredentials,
    payload: Vec<u8>,
    service: String,
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
    pub fn accept(mut self, reply: &[u8]) -> Result<Connection> {
        let builder = Mailbox::builder("private")
            .capacity(CHANNEL_CAPACITY)
            .max_message_size(CHANNEL_MAX)
            .single_sender()
            .single_receiver()
            .wait_strategy(WaitStrategy::default());
        let to_client = builder.create_anonymous()?;
        let to_server = builder.create_anonymous()?;
        let fds = [
            to_client
                .fd()
                .expect("anonymous mailboxes have a descriptor"),
            to_server
                .fd()
                .expect("anonymous mailboxes have a descriptor"),
        ];
        let mut message = b"A".to_vec();
        message.extend_from_slice(reply);
        self.stream
            .send_with_fds(&message, &fds, Deadline::after(Duration::from_secs(10)))?;
        Ok(Connection {
            tx: to_client.sender()?,
            rx: to_server.receiver()?,
            control: self.stream,
            peer: self.peer,
            next_id: 0,
            object: format!("service {:?}, client pid {}", self.service, self.peer.pid),
        })
    }

    /// Refuses, telling the client why.
    pub fn refuse(mut self, reason: &str) -> Result<()> {
        let mut message = b"R".to_vec();
        message.extend_from_slice(reason.as_bytes());
        self.stream.send_timeout(&message, Duration::from_secs(10))
    }
}

/// A client's way in.
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to service `name` with `payload`; returns the connection and the server's
    /// acceptance reply.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no such service; [`Error::PermissionDenied`] if the socket's
    /// mode or the server refuses (the text carries the server's reason);
    /// [`Error::Timeout`] if no decision by `deadline`.
    pub fn connect(
        name: &str,
        payload: &[u8],
        deadline: Deadline,
    ) -> Result<(Connection, Vec<u8>)> {
        let path = port_path(name)?;
        let mut stream = unix::connect_stream(&path)?;
        let server = unix::stream_peer_credentials(&stream)?;
        let object = format!("service {name:?}");
        stream.send_deadline(payload, deadline)?;
        let mut decision = Vec::new();
        stream.recv_deadline(&mut decision, deadline)?;
        match decision.first() {
            Some(b'A') => {
                let mut fds = stream.take_fds().into_iter();
                let (Some(to_client), Some(to_server)) = (fds.next(), fds.next()) else {
                    return Err(Error::corrupt(
                        object,
                        "accepted without the two private channels",
                    ));
                };
                let to_client = Mailbox::from_fd(to_client, WaitStrategy::default())?;
                let to_server = Mailbox::from_fd(to_server, WaitStrategy::default())?;
                let connection = Connection {
                    tx: to_server.sender()?,
                    rx: to_client.receiver()?,
                    control: stream,
                    peer: server,
                    next_id: 0,
                    object,
                };
                Ok((connection, decision[1..].to_vec()))
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

/// One side of an accepted connection: a private pair of channels.
#[derive(Debug)]
pub struct Connection {
    tx: MailboxSender,
    rx: MailboxReceiver,
    control: FramedStream,
    peer: PeerCredentials,
    next_id: u64,
    object: String,
}

/// A request as the server receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Correlation id: pass it to [`Connection::reply`].
    pub id: u64,
    /// The request's bytes.
    pub data: Vec<u8>,
}

impl Connection {
    /// The other side's credentials.
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// True while the other side still holds the connection (its socket end is open).
    fn peer_is_there(&mut self) -> bool {
        match self.control.try_recv() {
            Err(Error::Disconnected) => false,
            Err(e) => e.is_transient(),
            Ok(_) => true,
        }
    }

    /// Receives the next message, watching for the other side's exit.
    fn receive(&mut self, deadline: Deadline) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        loop {
            let turn = match deadline {
                Deadline::Now => Deadline::Now,
                Deadline::Never => Deadline::after(PEER_CHECK),
                Deadline::At(at) => Deadline::At(at.min(Instant::now() + PEER_CHECK)),
            };
            match self.rx.recv_deadline(&mut buf, turn) {
                Ok(_) => return Ok(buf),
                Err(e) if e.is_transient() => {
                    if !self.peer_is_there() {
                        return Err(Error::Disconnected);
                    }
                    if deadline.expired() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send_tagged(&mut self, id: u64, data: &[u8], deadline: Deadline) -> Result<()> {
        crate::link::check_size(data.len(), MAX_MESSAGE)?;
        // Written in place: the id and the bytes go straight into the channel's slot.
        let mut loan = self.tx.loan_deadline(deadline)?;
        loan[..ID_LEN].copy_from_slice(&id.to_le_bytes());
        loan[ID_LEN..ID_LEN + data.len()].copy_from_slice(data);
        loan.publish(ID_LEN + data.len())
    }

    fn split(&self, message: Vec<u8>) -> Result<(u64, Vec<u8>)> {
        if message.len() < ID_LEN {
            return Err(Error::corrupt(
                &self.object,
                "a message without its correlation id",
            ));
        }
        let id = u64::from_le_bytes(message[..ID_LEN].try_into().expect("8 bytes"));
        Ok((id, message[ID_LEN..].to_vec()))
    }

    /// Client: sends `request` and waits for its reply (replies to earlier calls that timed
    /// out are skipped).
    ///
    /// # Errors
    /// [`Error::Disconnected`] if the server goes away; [`Error::Timeout`].
    pub fn call(&mut self, request: &[u8], deadline: Deadline) -> Result<Vec<u8>> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_tagged(id, request, deadline)?;
        loop {
            let message = self.receive(deadline)?;
            let (reply_id, reply) = self.split(message)?;
            if reply_id == id {
                return Ok(reply);
            }
        }
    }

    /// Server: the next request.
    ///
    /// # Errors
    /// [`Error::Disconnected`] once the client has gone.
    pub fn next_request(&mut self, deadline: Deadline) -> Result<Request> {
        let message = self.receive(deadline)?;
        let (id, data) = self.split(message)?;
        Ok(Request { id, data })
    }

    /// Server: answers request `id`.
    pub fn reply(&mut self, id: u64, reply: &[u8]) -> Result<()> {
        self.send_tagged(id, reply, Deadline::after(Duration::from_secs(10)))
    }
}

/// Plain messaging over the private pair (each message still carries an id, as sequence).
impl MessageSender for Connection {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        crate::link::check_size(msg.len(), MAX_MESSAGE)?;
        let id = self.next_id;
        self.next_id += 1;
        self.send_tagged(id, msg, deadline)
    }

    fn max_message_size(&self) -> usize {
        MAX_MESSAGE
    }
}

impl MessageReceiver for Connection {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<crate::Metadata> {
        let message = self.receive(deadline)?;
        let (id, data) = self.split(message)?;
        *buf = data;
        Ok(crate::Metadata {
            sender_pid: Some(self.peer.pid),
            sender_uid: Some(self.peer.uid),
            sequence: Some(id),
            ..crate::Metadata::default()
        })
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.control.as_fd()
    }
}
