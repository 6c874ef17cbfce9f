//! [`WaitSet`]: one blocking call that waits on many endpoints, processes and a deadline at
//! once, and says which are ready — the `select`/`poll` of ipckit, for programs without an
//! executor.
//!
//! ```
//! use ipckit::shm::Mailbox;
//! use ipckit::waitset::WaitSet;
//! use ipckit::{Deadline, MessageReceiver, MessageSender};
//! use std::time::Duration;
//! # let (a, b) = (format!("ws-doc-a-{}", std::process::id()), format!("ws-doc-b-{}", std::process::id()));
//!
//! let (ma, mb) = (Mailbox::create(&a)?, Mailbox::create(&b)?);
//! let (mut rx_a, mut rx_b) = (ma.receiver()?, mb.receiver()?);
//! let mut set = WaitSet::new();
//! let key_a = set.add(&rx_a)?;
//! let key_b = set.add(&rx_b)?;
//! mb.sender()?.send(b"to b")?;
//! let ready = set.wait(Deadline::after(Duration::from_secs(5)))?;
//! assert_eq!(ready, vec![key_b]);
//! assert_eq!(rx_b.try_recv()?.data, b"to b");
//! # let _ = (&mut rx_a, key_a);
//! # Mailbox::remove(&a)?; Mailbox::remove(&b)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # How it waits
//!
//! Shared-memory endpoints (mailbox receivers and senders, topic subscribers) announce
//! themselves as sleepers on their futex words, exactly like a blocking receiver, so their
//! senders make the wake call; descriptors (sockets, pipes, FIFOs, service connections,
//! pidfds) are polled. A set of only shared-memory endpoints sleeps in one `futex_waitv`; a
//! set that mixes both sleeps in `poll`, with the futex words watched by the process's
//! reactor thread (see `docs/ARCHITECTURE.md`). Every sleep lasts at most a second, after
//! which readiness is checked again: a lost wake-up costs time, never a hang.
//!
//! "Ready" is a promise that the next non-blocking operation is *likely* to succeed: another
//! receiver may take the message first, so `try_recv` can still report
//! [`Error::Empty`]. Receive until `Empty`, then wait again.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::event::PollFd;

use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::pidfd::PidFd;
use crate::reactor::{interest, sleep_on, WordSource};
use crate::shm::mailbox::SendersWatch;
use crate::shm::Mailbox;

pub(crate) use crate::reactor::{Sealed, SourceRef};

/// An endpoint a [`WaitSet`] (and, with the `tokio` feature, an async method) can wait on:
/// every receiving endpoint of ipckit, mailbox senders (ready when there is room), and
/// [`PidFd`] (ready when the process has died).
pub trait Waitable: Sealed {}
impl<T: Sealed> Waitable for T {}

/// Identifies a member of a [`WaitSet`]: what [`WaitSet::add`] returned.
pub type Key = usize;

/// What a member waits on: a futex word, a descriptor, or both (a service connection: its
/// channel's word, and its socket for the peer's hang-up). Neither: removed.
#[derive(Default)]
struct Member {
    word: Option<Arc<dyn WordSource>>,
    fd: Option<(OwnedFd, bool)>,
    /// The death of every sender of a mailbox ([`WaitSet::add_senders_gone`]).
    senders: Option<SendersWatch>,
}

impl Member {
    fn is_removed(&self) -> bool {
        self.word.is_none() && self.fd.is_none() && self.senders.is_none()
    }
}

/// Waits on many endpoints, processes and a deadline at once (see the [module](self) docs).
#[derive(Default)]
pub struct WaitSet {
    members: Vec<Member>,
}

impl std::fmt::Debug for WaitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitSet")
            .field("members", &self.len())
            .finish()
    }
}

impl WaitSet {
    /// An empty set.
    pub fn new() -> WaitSet {
        WaitSet::default()
    }

    /// How many members the set has.
    pub fn len(&self) -> usize {
        self.members.iter().filter(|m| !m.is_removed()).count()
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an endpoint (a mailbox receiver or sender, a topic subscriber, a socket, pipe,
    /// FIFO, queue or service connection, a [`PidFd`]). The set keeps its own reference to
    /// what it waits on (the mapping, or a duplicate descriptor), so the endpoint stays free
    /// for receiving.
    ///
    /// # Errors
    /// An OS error duplicating a descriptor.
    pub fn add<W: Waitable + ?Sized>(&mut self, endpoint: &W) -> Result<Key> {
        let member = match endpoint.source()? {
            SourceRef::Word(word) => Member {
                word: Some(word),
                ..Member::default()
            },
            SourceRef::Fd(fd, write) => Member {
                fd: Some((dup(fd)?, write)),
                ..Member::default()
            },
            SourceRef::Both(word, fd) => Member {
                word: Some(word),
                fd: Some((dup(fd)?, false)),
                senders: None,
            },
        };
        self.members.push(member);
        Ok(self.members.len() - 1)
    }

    /// Adds any descriptor, ready when readable (a hang-up counts as readable).
    ///
    /// # Errors
    /// An OS error duplicating the descriptor.
    pub fn add_fd(&mut self, fd: impl AsFd) -> Result<Key> {
        self.members.push(Member {
            fd: Some((dup(fd.as_fd())?, false)),
            ..Member::default()
        });
        Ok(self.members.len() - 1)
    }

    /// Adds the death of process `pid`: ready once it has exited. A pid nobody holds is
    /// ready at once.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for pid 0 or an out-of-range pid, [`Error::Unsupported`]
    /// before Linux 5.3, or an OS error.
    pub fn add_pid(&mut self, pid: u32) -> Result<Key> {
        match PidFd::open(pid) {
            Ok(watch) => self.add(&watch),
            Err(Error::NotFound { .. }) => {
                // Already gone: an eventfd with a count is always readable.
                let fd = rustix::event::eventfd(1, rustix::event::EventfdFlags::CLOEXEC)
                    .map_err(|e| Error::os("eventfd", "a death notice", e))?;
                self.members.push(Member {
                    fd: Some((fd, false)),
                    ..Member::default()
                });
                Ok(self.members.len() - 1)
            }
            Err(e) => Err(e),
        }
    }

    /// Adds the death of every sender of `mailbox`: ready once a sender has attached (or
    /// had attached before) and no live sender remains — a sender process's death, SIGKILL
    /// included, is seen at once through its pidfd, a sender of this process within a tenth
    /// of a second. It stays ready while no sender is attached: remove it once handled.
    /// (Unread messages do not matter here; [`MailboxReceiver::until_senders_gone`]
    /// receives them first.)
    ///
    /// [`MailboxReceiver::until_senders_gone`]: crate::shm::MailboxReceiver::until_senders_gone
    pub fn add_senders_gone(&mut self, mailbox: &Mailbox) -> Key {
        self.members.push(Member {
            senders: Some(SendersWatch::new(mailbox.clone())),
            ..Member::default()
        });
        self.members.len() - 1
    }

    /// Removes a member; its key is not reused.
    pub fn remove(&mut self, key: Key) {
        if let Some(member) = self.members.get_mut(key) {
            *member = Member::default();
        }
    }

    /// Waits until at least one member is ready or `deadline` passes, and returns the keys
    /// of the ready members, in key order.
    ///
    /// # Errors
    /// [`Error::Empty`] for [`Deadline::Now`] and [`Error::Timeout`] for another deadline
    /// when nothing became ready; [`Error::InvalidArgument`] for an empty set waited on
    /// without a deadline (it would never return); an OS error from `poll`.
    pub fn wait(&mut self, deadline: Deadline) -> Result<Vec<Key>> {
        if self.is_empty() && deadline == Deadline::Never {
            return Err(Error::InvalidArgument(
                "waiting on an empty WaitSet with no deadline would never return".into(),
            ));
        }
        loop {
            let ready = self.ready()?;
            if !ready.is_empty() {
                return Ok(ready);
            }
            if deadline.expired() {
                return Err(deadline.recv_expired());
            }
            let words: Vec<Arc<dyn WordSource>> =
                self.members.iter().filter_map(|m| m.word.clone()).collect();
            let mut fds: Vec<(BorrowedFd<'_>, bool)> = self
                .members
                .iter()
                .filter_map(|m| m.fd.as_ref().map(|(fd, write)| (fd.as_fd(), *write)))
                .collect();
            let mut turn = deadline;
            for watch in self.members.iter().filter_map(|m| m.senders.as_ref()) {
                fds.extend(watch.fds());
                turn = watch.turn(turn);
            }
            sleep_on(&words, &fds, turn, || words.iter().any(|w| w.ready()))?;
        }
    }

    /// The members ready now.
    fn ready(&mut self) -> Result<Vec<Key>> {
        let mut ready = Vec::new();
        for (key, member) in self.members.iter_mut().enumerate() {
            if let Some(watch) = &mut member.senders {
                if watch.gone()? {
                    ready.push(key);
                }
            }
        }
        let mut polled: Vec<(Key, PollFd<'_>)> = Vec::new();
        for (key, member) in self.members.iter().enumerate() {
            if member.word.as_ref().is_some_and(|w| w.ready()) {
                ready.push(key);
            } else if let Some((fd, write)) = &member.fd {
                polled.push((key, PollFd::new(fd, interest(*write))));
            }
        }
        if !polled.is_empty() {
            let mut fds: Vec<PollFd<'_>> = polled.iter().map(|(_, p)| p.clone()).collect();
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            match rustix::event::poll(&mut fds, Some(&zero)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::os("poll", "a WaitSet", e)),
            }
            for ((key, _), fd) in polled.iter().zip(&fds) {
                if !fd.revents().is_empty() {
                    ready.push(*key);
                }
            }
        }
        ready.sort_unstable();
        Ok(ready)
    }
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| Error::os("dup", "a WaitSet member", e))
}

impl Sealed for PidFd {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Fd(self.as_fd(), false))
    }
}

impl Sealed for crate::stream::FramedStream {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Fd(self.as_fd(), false))
    }
}

impl Sealed for crate::socket::DatagramLink {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Fd(self.as_fd(), false))
    }
}

/// A service connection's messages come through a mailbox (whose senders wake its futex
/// word), its peer's hang-up through the connection socket: both are waited on.
impl Sealed for crate::service::Connection {
    fn source(&self) -> Result<SourceRef<'_>> {
        let (rx, control) = self.wait_parts();
        let SourceRef::Word(word) = rx.source()? else {
            return Err(Error::Unsupported(
                "a service channel that is not a mailbox".into(),
            ));
        };
        Ok(SourceRef::Both(word, control))
    }
}

impl Sealed for crate::mq::PosixQueue {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Fd(self.as_fd(), false))
    }
}

impl Sealed for crate::signal::RealtimeReceiver {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Fd(self.as_fd(), false))
    }
}
