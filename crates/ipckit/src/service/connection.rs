//! One side of an accepted connection: the message header (kind, flags, id), sending in
//! place or through a section, and waiting on the channel, then on the socket.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use super::section::{read_section, write_section};
use super::{
    DOORBELL, FLAG_SECTION, HEADER_LEN, INLINE_MAX, KIND_CALLBACK, KIND_REPLY, KIND_REQUEST,
    MAX_QUEUED_CALLBACKS, SECTION, SECTION_FDS, SECTION_WAIT, SERVER, SPIN,
};
use crate::error::{Error, Result};
use crate::fd::wait_ready;
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender};
use crate::shm::mailbox::{MailboxReceiver, MailboxSender};
use crate::shm::Shared;
use crate::socket::PeerCredentials;
use crate::stream::FramedStream;

/// What a connection is made of, on either side.
#[derive(Debug)]
pub(super) struct Ends {
    pub(super) tx: MailboxSender,
    pub(super) rx: MailboxReceiver,
    /// The connection socket: hang-up, doorbells, section descriptors.
    pub(super) control: FramedStream,
    /// Each side's "asleep on the socket, ring the doorbell" flag.
    pub(super) asleep: Shared<[AtomicU32; 2]>,
    pub(super) side: usize,
    pub(super) peer: PeerCredentials,
    pub(super) max: usize,
    pub(super) object: String,
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
    pub(super) fn new(mut ends: Ends) -> Result<Connection> {
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

    /// What a `WaitSet` or an async receive waits on: the receiving channel, and the
    /// connection socket (which reports the peer's hang-up).
    #[cfg(not(loom))] // used by the reactor, which loom builds leave out
    pub(crate) fn wait_parts(&self) -> (&crate::shm::MailboxReceiver, BorrowedFd<'_>) {
        (&self.ends.rx, self.ends.control.as_fd())
    }

    /// The sending channel (what an async send or call waits on for room).
    #[cfg(feature = "tokio")]
    pub(crate) fn sending_channel(&self) -> &MailboxSender {
        &self.ends.tx
    }

    /// Client, async calls: sends `request` if there is room now ([`Error::Full`] if not)
    /// and returns the id its reply will carry.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_start_call(&mut self, request: &[u8]) -> Result<u64> {
        let id = self.next_id;
        self.send_message(KIND_REQUEST, id, request, Deadline::Now)?;
        self.next_id += 1;
        Ok(id)
    }

    /// Client, async calls: the reply to call `id` if it has come ([`Error::Empty`] if
    /// not). Callbacks that come first are queued, stale replies skipped, as in `call`.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_reply(&mut self, id: u64) -> Result<Vec<u8>> {
        loop {
            let message = self.next_incoming(Deadline::Now)?;
            match message.kind {
                KIND_REPLY if message.id == id => return Ok(message.data),
                KIND_CALLBACK => self.queue_callback(message.data),
                _ => {}
            }
        }
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
    /// no section frame asked for are closed at once.
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
        // A descriptor arrives with the first bytes of its frame: one that no section frame
        // claims may belong to a frame still partly read, and is kept only then.
        let partial = self.ends.control.buffered() > 0;
        let early = self.early.take();
        for fd in early.into_iter().chain(self.ends.control.take_fds()) {
            if self.sections_due > 0 {
                self.sections_due -= 1;
                if self.sections.len() < SECTION_FDS {
                    self.sections.push_back(fd);
                }
            } else if partial && self.early.is_none() {
                self.early = Some(fd);
            }
            // Anything else is dropped here: closed at once.
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
