//! Waiting on a mailbox without a blocking receive: the futex words a
//! [`WaitSet`](crate::waitset::WaitSet) and the async methods sleep on, and the opt-in
//! [`UntilSendersGone`] receiver that reports [`Error::Disconnected`] once no live sender
//! remains.
//!
//! Senders' deaths are watched with pidfds (one per live sender process, so a SIGKILL is seen
//! at once); the participant table is read again when one of them fires, and every
//! [`RESCAN`] while no other process's sender is there to watch (waiting for the first
//! sender, or for a sender in this very process).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::receiver::MailboxReceiver;
use super::sender::MailboxSender;
use super::{chain, Mailbox, Shared};
use crate::error::{Error, Result};
use crate::link::{Deadline, MessageReceiver, Metadata};
use crate::pidfd::PidFd;
use crate::reactor::{sleep_on, Sealed, SourceRef, WordSource};
use crate::shm::ring::{FLAG_RENDEZVOUS, FLAG_UNBOUNDED};
use crate::sync::Event;

/// How often the participant table is read again when no sender process can be watched.
pub(crate) const RESCAN: Duration = Duration::from_millis(100);

/// A mailbox's `not_empty` word: ready when a complete message waits.
pub(crate) struct NotEmpty(pub(crate) Arc<Shared>);

impl WordSource for NotEmpty {
    fn event(&self) -> &Event {
        &self.0.ring().header().not_empty.0
    }

    fn ready(&self) -> bool {
        if self.0.unbounded() {
            chain::rings(&self.0)
                .iter()
                .any(|link| link.ring.has_message())
        } else {
            self.0.ring().has_message()
        }
    }
}

/// A mailbox's `not_full` word: ready when a sender would find room.
struct NotFull(Arc<Shared>);

impl WordSource for NotFull {
    fn event(&self) -> &Event {
        &self.0.ring().header().not_full.0
    }

    fn ready(&self) -> bool {
        let ring = self.0.ring();
        let flags = ring.geometry().flags;
        if flags & FLAG_UNBOUNDED != 0 {
            true
        } else if flags & FLAG_RENDEZVOUS != 0 {
            ring.depth() == 0
        } else {
            ring.depth() < u64::from(ring.geometry().capacity)
        }
    }
}

impl Sealed for MailboxReceiver {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Word(Arc::new(NotEmpty(Arc::clone(
            self.shared(),
        )))))
    }
}

impl Sealed for MailboxSender {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Word(Arc::new(NotFull(Arc::clone(
            self.shared(),
        )))))
    }
}

/// Watches the sender processes of a mailbox.
pub(crate) struct SendersWatch {
    mailbox: Mailbox,
    /// A sender has been seen in the table (alive or dead), or a message received.
    pub(crate) seen: bool,
    /// Pidfds of the live sender processes other than this one.
    live: Vec<PidFd>,
    /// A live sender is in this very process (no pidfd tells of its going).
    own: bool,
    scanned: Option<Instant>,
}

impl SendersWatch {
    pub(crate) fn new(mailbox: Mailbox) -> SendersWatch {
        SendersWatch {
            mailbox,
            seen: false,
            live: Vec::new(),
            own: false,
            scanned: None,
        }
    }

    /// Reads the participant table again and opens a pidfd on every live sender process.
    fn scan(&mut self) -> Result<()> {
        let me = std::process::id();
        let mut live: Vec<PidFd> = Vec::new();
        let mut own = false;
        for p in self.mailbox.info().participants {
            if p.role != "sender" {
                continue;
            }
            self.seen = true;
            if !p.alive || live.iter().any(|w| w.pid() == p.pid) {
                continue;
            }
            if p.pid == me {
                own = true;
                continue;
            }
            match PidFd::open(p.pid) {
                Ok(watch) if !watch.is_dead()? => live.push(watch),
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.live = live;
        self.own = own;
        self.scanned = Some(Instant::now());
        Ok(())
    }

    /// A message came: a sender exists, perhaps one the last scan did not see (if none was
    /// being watched, the table is read again before anything is concluded).
    pub(crate) fn note_message(&mut self) {
        self.seen = true;
        if self.live.is_empty() || self.own {
            self.scanned = None;
        }
    }

    fn any_died(&self) -> bool {
        self.live.iter().any(|w| w.is_dead().unwrap_or(true))
    }

    /// True once a sender was seen and none is alive now.
    ///
    /// # Errors
    /// An OS error opening or polling a pidfd.
    pub(crate) fn gone(&mut self) -> Result<bool> {
        let due = match self.scanned {
            None => true,
            Some(at) => {
                self.any_died() || ((self.live.is_empty() || self.own) && at.elapsed() >= RESCAN)
            }
        };
        if due {
            self.scan()?;
        }
        let gone = self.seen && self.live.is_empty() && !self.own;
        if gone && !due {
            // A conclusion the caller acts on is drawn from a fresh reading of the table:
            // a sender may have attached since.
            self.scan()?;
            return Ok(self.seen && self.live.is_empty() && !self.own);
        }
        Ok(gone)
    }

    /// The pidfds to sleep on.
    pub(crate) fn fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        self.live.iter().map(|w| (w.as_fd(), false)).collect()
    }

    /// The mailbox's `not_empty` word (for an async wait that needs a periodic re-check).
    #[cfg(feature = "tokio")]
    pub(crate) fn word(&self) -> Arc<dyn WordSource> {
        Arc::new(NotEmpty(Arc::clone(&self.mailbox.shared)))
    }

    /// Whether the table must be read again now and then to notice a change (no sender
    /// process to watch).
    #[cfg(feature = "tokio")]
    pub(crate) fn needs_rescan(&self) -> bool {
        self.live.is_empty() || self.own
    }

    /// How long the next sleep may last: until `deadline`, and no longer than [`RESCAN`]
    /// when the table must be read again to notice a change.
    pub(crate) fn turn(&self, deadline: Deadline) -> Deadline {
        if !(self.live.is_empty() || self.own) {
            return deadline;
        }
        let rescan = Instant::now() + RESCAN;
        match deadline {
            Deadline::At(at) => Deadline::At(at.min(rescan)),
            Deadline::Never => Deadline::At(rescan),
            Deadline::Now => Deadline::Now,
        }
    }
}

/// A mailbox receiver that reports [`Error::Disconnected`] once every message is received
/// and no live sender remains (opt-in, since a mailbox is persistent and a restarted sender
/// may carry on): made by [`MailboxReceiver::until_senders_gone`].
///
/// Until a first sender has been seen (in the participant table, alive or dead, or through a
/// message) it waits like a plain receiver. A sender's death, SIGKILL included, is noticed
/// at once through its pidfd; a sender in this same process within a tenth of a second.
pub struct UntilSendersGone {
    rx: MailboxReceiver,
    not_empty: Arc<dyn WordSource>,
    pub(crate) watch: SendersWatch,
}

impl std::fmt::Debug for UntilSendersGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntilSendersGone")
            .field("receiver", &self.rx)
            .field("senders_seen", &self.watch.seen)
            .finish()
    }
}

impl MailboxReceiver {
    /// Turns this receiver into one that reports [`Error::Disconnected`] once every message
    /// is received and no live sender remains (see [`UntilSendersGone`]).
    pub fn until_senders_gone(self) -> UntilSendersGone {
        let shared = Arc::clone(self.shared());
        UntilSendersGone {
            rx: self,
            not_empty: Arc::new(NotEmpty(Arc::clone(&shared))),
            watch: SendersWatch::new(Mailbox { shared }),
        }
    }
}

impl UntilSendersGone {
    /// The plain receiver back.
    pub fn into_inner(self) -> MailboxReceiver {
        self.rx
    }

    /// The plain receiver, for in-place receives.
    pub fn receiver(&mut self) -> &mut MailboxReceiver {
        &mut self.rx
    }
}

#[cfg(feature = "tokio")]
impl UntilSendersGone {
    /// What an async receive waits on: the `not_empty` word, the live senders' pidfds, and
    /// whether the table must be read again now and then (no sender process to watch).
    pub(crate) fn wait_parts(&self) -> (Arc<dyn WordSource>, Vec<BorrowedFd<'_>>, bool) {
        let fds = self.watch.fds().into_iter().map(|(fd, _)| fd).collect();
        let rescan = self.watch.live.is_empty() || self.watch.own;
        (Arc::clone(&self.not_empty), fds, rescan)
    }
}

impl MessageReceiver for UntilSendersGone {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        loop {
            match self.rx.recv_deadline(buf, Deadline::Now) {
                Ok(meta) => {
                    self.watch.note_message();
                    return Ok(meta);
                }
                Err(Error::Empty) => {}
                Err(e) => return Err(e),
            }
            if self.watch.gone()? {
                // Checked after the senders were found gone: a message the last one
                // completed before dying is still delivered.
                return match self.rx.recv_deadline(buf, Deadline::Now) {
                    Ok(meta) => Ok(meta),
                    Err(Error::Empty) => Err(Error::Disconnected),
                    Err(e) => Err(e),
                };
            }
            if deadline.expired() {
                return Err(deadline.recv_expired());
            }
            let words = [Arc::clone(&self.not_empty)];
            let fds = self.watch.fds();
            let turn = self.watch.turn(deadline);
            sleep_on(&words, &fds, turn, || {
                words[0].ready() || self.watch.any_died()
            })?;
        }
    }
}
