//! The message vocabulary every ipckit endpoint speaks.
//!
//! A transport implements one deadline-taking method per direction
//! ([`MessageSender::send_deadline`], [`MessageReceiver::recv_deadline`]); the blocking,
//! non-blocking and timed flavours are provided on top of it, so blocking behaviour is written
//! once for all mechanisms:
//!
//! | flavour      | send                | receive            | when it cannot proceed |
//! |--------------|---------------------|--------------------|------------------------|
//! | blocking     | `send(msg)`         | `recv()`           | waits                  |
//! | non-blocking | `try_send(msg)`     | `try_recv()`       | `Full` / `Empty`       |
//! | timed        | `send_timeout(m,d)` | `recv_timeout(d)`  | `Timeout`              |
//!
//! A peer that is gone is [`Error::Disconnected`], never a hang.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// How many messages a link holds in transit (the textbook's "buffering").
///
/// `Bounded(0)` means the same thing everywhere: nothing, refused with
/// [`Error::InvalidArgument`] by every link (mailboxes, pipes, FIFOs, sockets). A link that
/// holds no message is a rendezvous, spelled [`Capacity::Rendezvous`]. Kernel-buffered links
/// (pipes, FIFOs, stream sockets) are bounded by the kernel's buffer, in bytes, which no
/// message count can change: there any `Bounded(n)` with `n >= 1` means "the kernel's
/// buffer", and [`Capacity::KERNEL_BUFFER`] says so by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capacity {
    /// Zero capacity: `send` returns only once a receiver has taken the message.
    Rendezvous,
    /// At most `n` messages in transit (`n >= 1`); a sender waits (or fails) while the link
    /// is full.
    Bounded(usize),
    /// No fixed limit: a sender never waits for room.
    Unbounded,
}

impl Capacity {
    /// Bounded by the kernel's buffer, whatever its size: the capacity of pipes, FIFOs and
    /// sockets made without one.
    pub const KERNEL_BUFFER: Capacity = Capacity::Bounded(usize::MAX);

    /// Checks a requested capacity, the one rule every link applies.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `Bounded(0)` (zero capacity is `Rendezvous`).
    pub fn check(self) -> Result<Capacity> {
        match self {
            Capacity::Bounded(0) => Err(Error::InvalidArgument(
                "Capacity::Bounded(0) holds nothing: zero capacity is Capacity::Rendezvous".into(),
            )),
            other => Ok(other),
        }
    }
}

/// What a sender does when the link is full (Mach's four options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhenFull {
    /// Wait until there is room.
    #[default]
    Block,
    /// Wait at most this long, then fail with [`Error::Timeout`].
    Timeout(Duration),
    /// Return [`Error::Full`] at once.
    Fail,
    /// Keep the message in the link's own memory and return at once; it is delivered when
    /// room appears, after the messages already queued, even if the sender has exited
    /// (Mach's "temporarily cache a message"). One message per sender may wait so: a second
    /// attempt while the first waits fails with [`Error::Full`]. On a mailbox, the sender
    /// asks what became of it with
    /// [`MailboxSender::cache_state`](crate::shm::mailbox::MailboxSender::cache_state).
    Cache,
}

/// When a waiting operation gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// Never give up (blocking).
    Never,
    /// Do not wait at all (non-blocking).
    Now,
    /// Give up at this instant (timed).
    At(Instant),
}

impl Deadline {
    /// The deadline `timeout` from now. A timeout too large to represent is [`Deadline::Never`].
    pub fn after(timeout: Duration) -> Deadline {
        match Instant::now().checked_add(timeout) {
            Some(at) => Deadline::At(at),
            None => Deadline::Never,
        }
    }

    /// Time left before the deadline: `None` means wait forever, `Some(ZERO)` do not wait.
    pub fn remaining(&self) -> Option<Duration> {
        match self {
            Deadline::Never => None,
            Deadline::Now => Some(Duration::ZERO),
            Deadline::At(at) => Some(at.saturating_duration_since(Instant::now())),
        }
    }

    /// True once there is no time left to wait.
    pub fn expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// The error a sender reports when this deadline passes with the link still full:
    /// [`Error::Full`] for a non-blocking call, [`Error::Timeout`] for a timed one.
    pub fn send_expired(&self) -> Error {
        match self {
            Deadline::Now => Error::Full,
            _ => Error::Timeout,
        }
    }

    /// The error a receiver reports when this deadline passes with no message:
    /// [`Error::Empty`] for a non-blocking call, [`Error::Timeout`] for a timed one.
    pub fn recv_expired(&self) -> Error {
        match self {
            Deadline::Now => Error::Empty,
            _ => Error::Timeout,
        }
    }

    /// The remaining time as a `poll(2)` timeout in milliseconds, rounded up so a wait never
    /// ends before the deadline (`-1`: forever).
    pub fn poll_timeout_ms(&self) -> i32 {
        match self.remaining() {
            None => -1,
            Some(left) => {
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        }
    }
}

/// What the mechanism can tell about a received message. Fields a mechanism cannot supply
/// are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Process id of the sender, as the kernel or the segment recorded it.
    pub sender_pid: Option<u32>,
    /// User id of the sender.
    pub sender_uid: Option<u32>,
    /// Message type (System V queues, direct naming).
    pub msg_type: Option<i64>,
    /// Priority (POSIX queues; higher is delivered first).
    pub priority: Option<u32>,
    /// Sequence number the sender assigned.
    pub sequence: Option<u64>,
    /// Messages this receiver missed just before this one (an overrun topic subscriber).
    pub missed: Option<u64>,
}

/// A received message: its bytes and its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The message's bytes, exactly as sent.
    pub data: Vec<u8>,
    /// What the mechanism knows about it.
    pub meta: Metadata,
}

/// The sending half of any ipckit link.
///
/// Implementors write [`send_deadline`](MessageSender::send_deadline); the three flavours
/// come for free.
pub trait MessageSender {
    /// Sends one message, waiting for room until `deadline`.
    ///
    /// # Errors
    /// [`Error::Full`] (for [`Deadline::Now`]) or [`Error::Timeout`] when the deadline passes,
    /// [`Error::MessageTooLarge`] when `msg` exceeds [`max_message_size`](Self::max_message_size),
    /// [`Error::Disconnected`] when the peer is gone; a failure of the mechanism itself as
    /// the variant its type documents (an OS error as [`Error::Os`]).
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()>;

    /// The largest message this link carries, in bytes.
    fn max_message_size(&self) -> usize;

    /// Sends, waiting as long as the link is full.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline) with [`Deadline::Never`]: it waits instead
    /// of failing with [`Error::Full`] or [`Error::Timeout`], unless the sender's own policy
    /// for a full link says otherwise (a mailbox sender's [`WhenFull`]).
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_deadline(msg, Deadline::Never)
    }

    /// Sends without waiting; [`Error::Full`] if there is no room now.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline) with [`Deadline::Now`]: [`Error::Full`] if
    /// there is no room now.
    fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_deadline(msg, Deadline::Now)
    }

    /// Sends, waiting at most `timeout`; [`Error::Timeout`] after that.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline): [`Error::Timeout`] if no room came within
    /// `timeout`.
    fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_deadline(msg, Deadline::after(timeout))
    }
}

/// The receiving half of any ipckit link.
pub trait MessageReceiver {
    /// Receives one message into `buf` (cleared first), waiting until `deadline`.
    ///
    /// # Errors
    /// [`Error::Empty`] (for [`Deadline::Now`]) or [`Error::Timeout`] when the deadline
    /// passes, [`Error::Disconnected`] when the peer is gone and nothing is left to read,
    /// [`Error::Corrupt`] when what arrived is not a valid message; a failure of the mechanism
    /// itself as the variant its type documents (an OS error as [`Error::Os`]).
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata>;

    /// Receives into `buf`, waiting as long as needed. Reusing `buf` avoids an allocation per
    /// message.
    ///
    /// # Errors
    /// As [`recv_deadline`](Self::recv_deadline) with [`Deadline::Never`]: it waits instead
    /// of failing with [`Error::Empty`] or [`Error::Timeout`].
    fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<Metadata> {
        self.recv_deadline(buf, Deadline::Never)
    }

    /// Receives one message, waiting as long as needed.
    ///
    /// # Errors
    /// As [`recv_into`](Self::recv_into).
    fn recv(&mut self) -> Result<Message> {
        recv_message(self, Deadline::Never)
    }

    /// Receives without waiting; [`Error::Empty`] if nothing is there.
    ///
    /// # Errors
    /// As [`recv_deadline`](Self::recv_deadline) with [`Deadline::Now`]: [`Error::Empty`] if
    /// nothing is there.
    fn try_recv(&mut self) -> Result<Message> {
        recv_message(self, Deadline::Now)
    }

    /// Receives, waiting at most `timeout`; [`Error::Timeout`] after that.
    ///
    /// # Errors
    /// As [`recv_deadline`](Self::recv_deadline): [`Error::Timeout`] if nothing came within
    /// `timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Message> {
        recv_message(self, Deadline::after(timeout))
    }
}

fn recv_message<R: MessageReceiver + ?Sized>(rx: &mut R, deadline: Deadline) -> Result<Message> {
    let mut data = Vec::new();
    let meta = rx.recv_deadline(&mut data, deadline)?;
    Ok(Message { data, meta })
}

impl<S: MessageSender + ?Sized> MessageSender for Box<S> {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        (**self).send_deadline(msg, deadline)
    }
    fn max_message_size(&self) -> usize {
        (**self).max_message_size()
    }
}

impl<R: MessageReceiver + ?Sized> MessageReceiver for Box<R> {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        (**self).recv_deadline(buf, deadline)
    }
}

/// Refuses a message longer than `max` before anything is written.
///
/// # Errors
/// [`Error::MessageTooLarge`] if `len > max`.
pub fn check_size(len: usize, max: usize) -> Result<()> {
    if len > max {
        Err(Error::MessageTooLarge { size: len, max })
    } else {
        Ok(())
    }
}

/// Any endpoint, carrying values of type `T` encoded with postcard.
///
/// ```
/// use ipckit::{shm::Mailbox, Typed};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Reading { sensor: u16, celsius: f32 }
/// # let name = format!("typed-{}", std::process::id());
///
/// let mailbox = Mailbox::create(&name)?;
/// let mut tx = Typed::<_, Reading>::new(mailbox.sender()?);
/// let mut rx = Typed::<_, Reading>::new(mailbox.receiver()?);
/// tx.send(&Reading { sensor: 7, celsius: 21.5 })?;
/// assert_eq!(rx.recv()?.0, Reading { sensor: 7, celsius: 21.5 });
/// # Mailbox::remove(&name)?;
/// # Ok::<(), ipckit::Error>(())
/// ```
#[derive(Debug)]
pub struct Typed<E, T> {
    inner: E,
    buf: Vec<u8>,
    _marker: PhantomData<fn(T) -> T>,
}

impl<E, T> Typed<E, T> {
    /// Wraps an endpoint.
    pub fn new(inner: E) -> Self {
        Typed {
            inner,
            buf: Vec::new(),
            _marker: PhantomData,
        }
    }

    /// The wrapped endpoint.
    pub fn get_ref(&self) -> &E {
        &self.inner
    }

    /// The wrapped endpoint, mutably.
    pub fn get_mut(&mut self) -> &mut E {
        &mut self.inner
    }

    /// Unwraps the endpoint.
    pub fn into_inner(self) -> E {
        self.inner
    }
}

impl<E: MessageSender, T: Serialize> Typed<E, T> {
    /// Encodes and sends `value`, waiting until `deadline`.
    ///
    /// # Errors
    /// As [`MessageSender::send_deadline`]; [`Error::InvalidArgument`] if `value` cannot be
    /// encoded.
    pub fn send_deadline(&mut self, value: &T, deadline: Deadline) -> Result<()> {
        self.buf.clear();
        let bytes = postcard::to_extend(value, std::mem::take(&mut self.buf))
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the value: {e}")))?;
        let result = self.inner.send_deadline(&bytes, deadline);
        self.buf = bytes;
        result
    }

    /// Encodes and sends `value`, waiting for room.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline).
    pub fn send(&mut self, value: &T) -> Result<()> {
        self.send_deadline(value, Deadline::Never)
    }

    /// Encodes and sends `value` without waiting.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline): [`Error::Full`] when there is no room.
    pub fn try_send(&mut self, value: &T) -> Result<()> {
        self.send_deadline(value, Deadline::Now)
    }

    /// Encodes and sends `value`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`send_deadline`](Self::send_deadline): [`Error::Timeout`] after `timeout`.
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<()> {
        self.send_deadline(value, Deadline::after(timeout))
    }
}

impl<E: MessageReceiver, T: DeserializeOwned> Typed<E, T> {
    /// Receives and decodes one value, waiting until `deadline`.
    ///
    /// # Errors
    /// As [`MessageReceiver::recv_deadline`]; [`Error::Corrupt`] when the bytes are not a `T`.
    pub fn recv_deadline(&mut self, deadline: Deadline) -> Result<(T, Metadata)> {
        let meta = self.inner.recv_deadline(&mut self.buf, deadline)?;
        let value = postcard::from_bytes(&self.buf)
            .map_err(|e| Error::corrupt("typed message", e.to_string()))?;
        Ok((value, meta))
    }

    /// Receives and decodes one value, waiting as long as needed.
    ///
    /// # Errors
    /// As [`recv_deadline`](Self::recv_deadline).
    pub fn recv(&mut self) -> Result<(T, Metadata)> {
        self.recv_deadline(Deadline::Never)
    }

    /// Receives and decodes one value without waiting.
    ///
    /// # Errors
    /// As [`recv_deadline`](Self::recv_deadline): [`Error::Empty`] when nothing is there.
    pub fn try_recv(&mut self) -> Result<(T, Metadata)> {
        self.recv_deadline(Deadline::Now)
    }

    /// Receives and decodes one value, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_deadline`](Self::recv_deadline): [`Error::Timeout`] after `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<(T, Metadata)> {
        self.recv_deadline(Deadline::after(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A trivial in-memory link, to test the provided flavours and `Typed`.
    struct Queue {
        items: VecDeque<Vec<u8>>,
        cap: usize,
    }

    impl MessageSender for Queue {
        fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
            check_size(msg.len(), 16)?;
            if self.items.len() == self.cap {
                return Err(deadline.send_expired());
            }
            self.items.push_back(msg.to_vec());
            Ok(())
        }
        fn max_message_size(&self) -> usize {
            16
        }
    }

    impl MessageReceiver for Queue {
        fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
            match self.items.pop_front() {
                Some(m) => {
                    *buf = m;
                    Ok(Metadata::default())
                }
                None => Err(deadline.recv_expired()),
            }
        }
    }

    #[test]
    fn flavours_report_the_right_error() {
        let mut q = Queue {
            items: VecDeque::new(),
            cap: 1,
        };
        assert!(matches!(q.try_recv(), Err(Error::Empty)));
        assert!(matches!(
            q.recv_timeout(Duration::from_millis(1)),
            Err(Error::Timeout)
        ));
        q.try_send(b"a").unwrap();
        assert!(matches!(q.try_send(b"b"), Err(Error::Full)));
        assert!(matches!(
            q.send_timeout(b"b", Duration::from_millis(1)),
            Err(Error::Timeout)
        ));
        assert!(matches!(
            q.try_send(&[0; 17]),
            Err(Error::MessageTooLarge { size: 17, max: 16 })
        ));
        assert_eq!(q.recv().unwrap().data, b"a");
    }

    #[test]
    fn typed_round_trips_and_rejects_garbage() {
        let q = Queue {
            items: VecDeque::new(),
            cap: 4,
        };
        let mut typed = Typed::<_, (u8, String)>::new(q);
        typed.send(&(3, "hi".to_string())).unwrap();
        assert_eq!(typed.recv().unwrap().0, (3, "hi".to_string()));
        typed.get_mut().items.push_back(vec![1, 200]);
        assert!(matches!(typed.try_recv(), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn deadline_poll_timeout_rounds_up() {
        assert_eq!(Deadline::Never.poll_timeout_ms(), -1);
        assert_eq!(Deadline::Now.poll_timeout_ms(), 0);
        let d = Deadline::after(Duration::from_micros(1500));
        assert!(d.poll_timeout_ms() >= 1);
        assert!(Deadline::after(Duration::MAX) == Deadline::Never);
    }
}
