//! Direct naming: processes name each other, not a mailbox — `send(P, message)`,
//! `receive(Q, message)`.
//!
//! Each process opens its inbox, under its pid or a name it chooses. [`Inbox::send_to`]
//! links to the peer's inbox on first use and keeps that link (exactly one per pair). An
//! inbox receives like every other receiver, through [`MessageReceiver`] (`recv`,
//! `try_recv`, `recv_timeout`...): anyone's message, with the sender's pid in
//! [`Metadata::sender_pid`]; [`Inbox::recv_from`] takes only one peer's, keeping the
//! others' for later, in order.
//! A peer that has exited is [`Error::Disconnected`], never a hang.
//!
//! Built on [`Mailbox`]: an inbox is the mailbox `inbox.<pid>` or `inbox.<name>`, removed
//! when the inbox is dropped.
//!
//! ```
//! use ipckit::direct::{Inbox, Peer};
//! use ipckit::MessageReceiver;
//!
//! let mut me = Inbox::open_mine()?;
//! me.send_to(&Peer::Pid(std::process::id()), b"note to self")?;
//! let msg = me.try_recv()?;
//! assert_eq!(msg.meta.sender_pid, Some(std::process::id()));
//! assert_eq!(msg.data, b"note to self");
//! # Ok::<(), ipckit::Error>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::link::{Deadline, Message, MessageReceiver, MessageSender, Metadata};
use crate::process::{liveness, Liveness};
use crate::shm::mailbox::{Mailbox, MailboxReceiver, MailboxSender};

/// How often a receiver waiting for one peer checks that the peer is still alive.
const PEER_CHECK: Duration = Duration::from_millis(20);

/// Who to send to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The process with this pid (its inbox opened with [`Inbox::open_mine`]).
    Pid(u32),
    /// The process whose inbox has this name ([`Inbox::open_named`]).
    Name(String),
}

impl Peer {
    fn mailbox(&self) -> String {
        match self {
            Peer::Pid(pid) => format!("inbox.{pid}"),
            Peer::Name(name) => format!("inbox.{name}"),
        }
    }
}

/// This process's inbox, and its links to other processes' inboxes.
#[derive(Debug)]
pub struct Inbox {
    name: String,
    receiver: MailboxReceiver,
    links: HashMap<Peer, (MailboxSender, Option<u32>)>,
    /// Messages taken while waiting for another peer, per sender, in arrival order.
    stash: VecDeque<(u32, Message)>,
}

impl Inbox {
    /// Opens this process's inbox under its pid.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a live process holds this pid's inbox (a pid namespace
    /// sharing `/dev/shm`); the errors of creating a [`Mailbox`].
    pub fn open_mine() -> Result<Inbox> {
        Inbox::create(format!("inbox.{}", std::process::id()))
    }

    /// Opens this process's inbox under a chosen name (others send to `Peer::Name(name)`).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a live process holds that name.
    pub fn open_named(name: &str) -> Result<Inbox> {
        Inbox::create(format!("inbox.{name}"))
    }

    fn create(name: String) -> Result<Inbox> {
        let mailbox = match Mailbox::builder(&name)
            .capacity(64)
            .single_receiver()
            .create()
        {
            Err(Error::AlreadyExists { object }) => {
                // A previous owner that died leaves its inbox behind: take it over.
                let existing = Mailbox::open(&name)?;
                if existing
                    .info()
                    .participants
                    .iter()
                    .any(|p| p.alive && p.role == "receiver")
                {
                    return Err(Error::AlreadyExists { object });
                }
                existing
            }
            other => other?,
        };
        Ok(Inbox {
            receiver: mailbox.receiver()?,
            name,
            links: HashMap::new(),
            stash: VecDeque::new(),
        })
    }

    /// The pid of the process that owns `peer`'s inbox, if one is attached and alive.
    fn owner(mailbox: &Mailbox) -> Option<u32> {
        mailbox
            .info()
            .participants
            .iter()
            .find(|p| p.role == "receiver" && p.alive)
            .map(|p| p.pid)
    }

    /// Sends to `peer`, linking to its inbox on first use, waiting until `deadline` if its
    /// inbox is full.
    ///
    /// # Errors
    /// [`Error::Disconnected`] if the peer has no inbox or its process has exited;
    /// [`Error::Full`]/[`Error::Timeout`]; [`Error::MessageTooLarge`].
    pub fn send_to_deadline(&mut self, peer: &Peer, msg: &[u8], deadline: Deadline) -> Result<()> {
        if !self.links.contains_key(peer) {
            let mailbox = Mailbox::open(&peer.mailbox()).map_err(|e| match e {
                Error::NotFound { .. } => Error::Disconnected,
                other => other,
            })?;
            let owner = Inbox::owner(&mailbox);
            self.links.insert(peer.clone(), (mailbox.sender()?, owner));
        }
        let (sender, owner) = self.links.get_mut(peer).expect("linked above");
        let alive = owner.is_some_and(|pid| liveness(pid, None) == Liveness::Alive);
        if !alive {
            self.links.remove(peer);
            return Err(Error::Disconnected);
        }
        sender.send_deadline(msg, deadline)
    }

    /// Sends to `peer`, waiting for room as long as needed (but see the errors).
    ///
    /// # Errors
    /// As [`send_to_deadline`](Self::send_to_deadline), without a deadline.
    pub fn send_to(&mut self, peer: &Peer, msg: &[u8]) -> Result<()> {
        self.send_to_deadline(peer, msg, Deadline::Never)
    }

    /// Receives the next message from anyone: `(sender pid, message)`.
    ///
    /// While this alias exists it hides the trait method of the same name from method-call
    /// syntax: use `recv`, `try_recv` or `recv_timeout`, or call
    /// `MessageReceiver::recv_deadline(&mut inbox, buf, deadline)`.
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`].
    #[deprecated(
        since = "0.2.0",
        note = "an Inbox is a MessageReceiver: use recv/try_recv/recv_timeout; the sender's pid is in Metadata::sender_pid"
    )]
    pub fn recv_deadline(&mut self, deadline: Deadline) -> Result<(u32, Message)> {
        let msg = recv_message(self, deadline)?;
        Ok((msg.meta.sender_pid.unwrap_or(0), msg))
    }

    /// Receives the next message from process `peer` only; others' messages are kept for
    /// later calls, in order.
    ///
    /// # Errors
    /// [`Error::Disconnected`] once `peer` has exited and nothing of its is left;
    /// [`Error::Empty`]/[`Error::Timeout`].
    pub fn recv_from(&mut self, peer: u32, deadline: Deadline) -> Result<Message> {
        if let Some(i) = self.stash.iter().position(|(from, _)| *from == peer) {
            return Ok(self.stash.remove(i).expect("found").1);
        }
        loop {
            let turn = match deadline {
                Deadline::Now => Deadline::Now,
                Deadline::Never => Deadline::after(PEER_CHECK),
                Deadline::At(at) => Deadline::At(at.min(Instant::now() + PEER_CHECK)),
            };
            match recv_message(&mut self.receiver, turn) {
                Ok(msg) if msg.meta.sender_pid == Some(peer) => return Ok(msg),
                Ok(msg) => self
                    .stash
                    .push_back((msg.meta.sender_pid.unwrap_or(0), msg)),
                Err(e) if e.is_transient() => {
                    if liveness(peer, None) == Liveness::Dead {
                        // Whatever it sent before exiting has been drained above.
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

    /// How many peers this inbox has a link to (one per peer, made on first send).
    pub fn linked_peers(&self) -> usize {
        self.links.len()
    }

    /// The name of this inbox's mailbox.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An inbox is waited on through its mailbox (a `WaitSet`, `recv_async`). Messages it set
/// aside while a `recv_from` waited for another peer are not signalled: receive until
/// `Empty` before waiting again.
#[cfg(not(loom))]
impl crate::reactor::Sealed for Inbox {
    fn source(&self) -> Result<crate::reactor::SourceRef<'_>> {
        self.receiver.source()
    }
}

impl MessageReceiver for Inbox {
    /// Receives the next message from anyone (first those [`recv_from`](Inbox::recv_from)
    /// kept aside); the sender's pid is in [`Metadata::sender_pid`].
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        if let Some((_, stashed)) = self.stash.pop_front() {
            *buf = stashed.data;
            return Ok(stashed.meta);
        }
        self.receiver.recv_deadline(buf, deadline)
    }
}

fn recv_message(rx: &mut impl MessageReceiver, deadline: Deadline) -> Result<Message> {
    let mut data = Vec::new();
    let meta = rx.recv_deadline(&mut data, deadline)?;
    Ok(Message { data, meta })
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.name);
    }
}
