//! Async endpoints (feature `tokio`): `recv_async`, `send_async` and `call_async`, named as
//! flume names them, beside the blocking methods.
//!
//! ```
//! # async fn demo(name: &str) -> ipckit::Result<()> {
//! use ipckit::shm::Mailbox;
//! let mailbox = Mailbox::open(name)?;
//! let mut rx = mailbox.receiver()?;
//! let msg = rx.recv_async().await?;
//! println!("{:?}", msg.data);
//! # Ok(()) }
//! ```
//!
//! Several at once, on a current-thread runtime, with no thread per endpoint (every branch
//! that loses the `select!` drops its future and loses nothing):
//!
//! ```no_run
//! # async fn demo(a: &mut ipckit::shm::MailboxReceiver, b: &mut ipckit::shm::MailboxReceiver,
//! #               peer: &ipckit::pidfd::PidFd) -> ipckit::Result<()> {
//! loop {
//!     tokio::select! {
//!         msg = a.recv_async() => println!("a: {:?}", msg?.data),
//!         msg = b.recv_async() => println!("b: {:?}", msg?.data),
//!         dead = peer.died_async() => { dead?; return Ok(()); }
//!     }
//! }
//! # }
//! ```
//!
//! The futures need no particular executor: they are woken through
//! [`std::task::Waker`] by ipckit's reactor (see `docs/ARCHITECTURE.md`): a shared-memory
//! endpoint's futex word is watched by a `futex_waitv` thread (one per 127 distinct words
//! per process), a descriptor by one `epoll` thread per process. A waiting receiver costs no
//! CPU until a message comes, and a sender pays the wake system call only while someone
//! waits, as with blocking receivers.
//!
//! # Cancellation
//!
//! Every future takes its message (or hands it over) only in the `poll` that returns
//! `Ready`: dropping a pending future loses no message and leaves no claimed slot. A dropped
//! [`CallFuture`] whose request was already sent leaves a reply that the next call skips.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::{Error, Result};
use crate::link::{Deadline, Message, MessageReceiver, MessageSender};
use crate::reactor::{FdWait, Sealed, SourceRef, WordSource, WordWait};

/// A registration with the reactor: what a pending future waits on.
enum Parked {
    Word(WordWait),
    Fd(FdWait),
}

impl Parked {
    fn is_due(&self) -> bool {
        match self {
            Parked::Word(w) => w.is_due(),
            Parked::Fd(w) => w.is_due(),
        }
    }

    fn set_waker(&self, cx: &Context<'_>) {
        match self {
            Parked::Word(w) => w.set_waker(cx.waker()),
            Parked::Fd(w) => w.set_waker(cx.waker()),
        }
    }
}

/// What an operation waits on between attempts.
enum Source {
    Word(Arc<dyn WordSource>),
    Fd(FdWait),
}

/// The poll step every future shares: nothing to do while the registrations are not due;
/// else try once, and if that would block, register (announcing on a futex word *before*
/// the last try, so no wake-up is lost) and return `Pending`.
fn poll_op<E: ?Sized, T>(
    endpoint: &mut E,
    parked: &mut Vec<Parked>,
    cx: &Context<'_>,
    mut source: impl FnMut(&E, &Context<'_>) -> Result<Vec<Source>>,
    mut op: impl FnMut(&mut E) -> Result<T>,
    would_block: fn(&Error) -> bool,
) -> Poll<Result<T>> {
    if !parked.is_empty() {
        if !parked.iter().any(Parked::is_due) {
            for p in parked.iter() {
                p.set_waker(cx);
            }
            return Poll::Pending;
        }
        parked.clear();
    }
    match op(endpoint) {
        Err(e) if would_block(&e) => {}
        other => return Poll::Ready(other),
    }
    let sources = match source(endpoint, cx) {
        Ok(sources) => sources,
        Err(e) => return Poll::Ready(Err(e)),
    };
    for s in sources {
        match s {
            Source::Word(word) => match WordWait::register(word, cx.waker()) {
                Ok(w) => parked.push(Parked::Word(w)),
                Err(e) => return Poll::Ready(Err(e)),
            },
            Source::Fd(w) => parked.push(Parked::Fd(w)),
        }
    }
    // The last try, after the announcements: a message sent since the first is seen here,
    // or its sender sees the sleeper and wakes the reactor.
    match op(endpoint) {
        Err(e) if would_block(&e) => Poll::Pending,
        other => {
            parked.clear();
            Poll::Ready(other)
        }
    }
}

/// The sources of an endpoint, for receiving (`write` false) or sending.
fn sources_of<E: Sealed + ?Sized>(
    endpoint: &E,
    cx: &Context<'_>,
    write: bool,
) -> Result<Vec<Source>> {
    Ok(match endpoint.source()? {
        SourceRef::Word(word) => vec![Source::Word(word)],
        SourceRef::Fd(fd, _) => vec![Source::Fd(FdWait::register(fd, write, cx.waker())?)],
        SourceRef::Both(word, fd) => vec![
            Source::Word(word),
            Source::Fd(FdWait::register(fd, false, cx.waker())?),
        ],
    })
}

fn is_empty(e: &Error) -> bool {
    matches!(e, Error::Empty)
}

fn is_full(e: &Error) -> bool {
    matches!(e, Error::Full)
}

/// The future of `recv_async`: a message, or the error `recv` would give.
#[must_use = "futures do nothing unless awaited"]
pub struct RecvFuture<'a, R: ?Sized> {
    rx: &'a mut R,
    parked: Vec<Parked>,
}

impl<R: ?Sized> std::fmt::Debug for RecvFuture<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvFuture")
            .field("parked", &self.parked.len())
            .finish()
    }
}

impl<R: MessageReceiver + Sealed + ?Sized> Future for RecvFuture<'_, R> {
    type Output = Result<Message>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Message>> {
        let this = self.get_mut();
        poll_op(
            this.rx,
            &mut this.parked,
            cx,
            |rx, cx| sources_of(rx, cx, false),
            |rx| rx.try_recv(),
            is_empty,
        )
    }
}

/// The future of `send_async`: done once the message is handed over.
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture<'a, S: ?Sized> {
    tx: &'a mut S,
    msg: &'a [u8],
    parked: Vec<Parked>,
}

impl<S: ?Sized> std::fmt::Debug for SendFuture<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFuture")
            .field("len", &self.msg.len())
            .field("parked", &self.parked.len())
            .finish()
    }
}

impl<S: MessageSender + Sealed + ?Sized> Future for SendFuture<'_, S> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let msg = this.msg;
        poll_op(
            this.tx,
            &mut this.parked,
            cx,
            |tx, cx| sources_of(tx, cx, true),
            |tx| tx.try_send(msg),
            is_full,
        )
    }
}

macro_rules! recv_async {
    ($($ty:ty),* $(,)?) => {$(
        impl $ty {
            /// Receives one message, waiting without blocking the thread (feature `tokio`,
            /// any executor). Cancellation-safe: dropping the future loses no message.
            ///
            /// # Errors
            /// As [`MessageReceiver::recv`].
            pub fn recv_async(&mut self) -> RecvFuture<'_, Self> {
                RecvFuture { rx: self, parked: Vec::new() }
            }
        }
    )*};
}

macro_rules! send_async {
    ($($ty:ty),* $(,)?) => {$(
        impl $ty {
            /// Sends one message, waiting for room without blocking the thread (feature
            /// `tokio`, any executor). Cancellation-safe: a dropped future sent nothing.
            ///
            /// # Errors
            /// As [`MessageSender::send`].
            pub fn send_async<'a>(&'a mut self, msg: &'a [u8]) -> SendFuture<'a, Self> {
                SendFuture { tx: self, msg, parked: Vec::new() }
            }
        }
    )*};
}

recv_async!(
    crate::shm::MailboxReceiver,
    crate::shm::Subscriber,
    crate::stream::FramedStream,
    crate::socket::DatagramLink,
    crate::service::Connection,
    crate::mq::PosixQueue,
    crate::direct::Inbox,
);

send_async!(
    crate::shm::MailboxSender,
    crate::shm::Publisher,
    crate::stream::FramedStream,
    crate::socket::DatagramLink,
    crate::mq::PosixQueue,
);

/// The future of [`Connection::call_async`](crate::service::Connection::call_async): the
/// reply.
#[must_use = "futures do nothing unless awaited"]
pub struct CallFuture<'a> {
    conn: &'a mut crate::service::Connection,
    request: &'a [u8],
    id: Option<u64>,
    parked: Vec<Parked>,
}

impl std::fmt::Debug for CallFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallFuture")
            .field("id", &self.id)
            .field("parked", &self.parked.len())
            .finish()
    }
}

impl Future for CallFuture<'_> {
    type Output = Result<Vec<u8>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Vec<u8>>> {
        let this = self.get_mut();
        loop {
            match this.id {
                None => {
                    let request = this.request;
                    let sent = poll_op(
                        this.conn,
                        &mut this.parked,
                        cx,
                        |conn, _| match conn.sending_channel().source()? {
                            SourceRef::Word(word) => Ok(vec![Source::Word(word)]),
                            _ => Err(Error::Unsupported(
                                "a service channel that is not a mailbox".into(),
                            )),
                        },
                        |conn| conn.try_start_call(request),
                        is_full,
                    );
                    match sent {
                        Poll::Ready(Ok(id)) => {
                            this.id = Some(id);
                            this.parked.clear();
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Some(id) => {
                    return poll_op(
                        this.conn,
                        &mut this.parked,
                        cx,
                        |conn, cx| sources_of(conn, cx, false),
                        |conn| conn.try_reply(id),
                        is_empty,
                    )
                }
            }
        }
    }
}

impl crate::service::Connection {
    /// Client: sends `request` and waits for its reply without blocking the thread (feature
    /// `tokio`, any executor). Callbacks that arrive meanwhile are kept for
    /// [`recv_callback`](Self::recv_callback), as with [`call`](Self::call).
    ///
    /// Cancellation: a future dropped before the request was sent sent nothing; one dropped
    /// after leaves a reply that later calls skip.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn call_async<'a>(&'a mut self, request: &'a [u8]) -> CallFuture<'a> {
        CallFuture {
            conn: self,
            request,
            id: None,
            parked: Vec::new(),
        }
    }
}

/// The future of [`UntilSendersGone::recv_async`](crate::shm::mailbox::UntilSendersGone::recv_async).
#[must_use = "futures do nothing unless awaited"]
pub struct UntilSendersGoneFuture<'a> {
    rx: &'a mut crate::shm::mailbox::UntilSendersGone,
    parked: Vec<Parked>,
}

impl std::fmt::Debug for UntilSendersGoneFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntilSendersGoneFuture")
            .field("parked", &self.parked.len())
            .finish()
    }
}

/// Always "ready": the reactor re-checks it at each of its (one-second) timeouts, which
/// makes a receiver with no sender process to watch read the participant table again.
struct Rescan(Arc<dyn WordSource>);

impl WordSource for Rescan {
    fn event(&self) -> &crate::sync::Event {
        self.0.event()
    }
    fn ready(&self) -> bool {
        true
    }
}

impl Future for UntilSendersGoneFuture<'_> {
    type Output = Result<Message>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Message>> {
        let this = self.get_mut();
        poll_op(
            this.rx,
            &mut this.parked,
            cx,
            |rx, cx| {
                let (word, fds, rescan) = rx.wait_parts();
                let word = if rescan {
                    Arc::new(Rescan(word)) as Arc<dyn WordSource>
                } else {
                    word
                };
                let mut sources = vec![Source::Word(word)];
                for fd in fds {
                    sources.push(Source::Fd(FdWait::register(fd, false, cx.waker())?));
                }
                Ok(sources)
            },
            |rx| {
                let mut data = Vec::new();
                let meta = rx.recv_deadline(&mut data, Deadline::Now)?;
                Ok(Message { data, meta })
            },
            is_empty,
        )
    }
}

impl crate::shm::mailbox::UntilSendersGone {
    /// Receives one message, or [`Error::Disconnected`] once no live sender remains, without
    /// blocking the thread (feature `tokio`, any executor). A sender process's death is seen
    /// at once (its pidfd); a sender of this same process, or the first sender to attach,
    /// within about a second.
    ///
    /// # Errors
    /// As [`MessageReceiver::recv`], and [`Error::Disconnected`].
    pub fn recv_async(&mut self) -> UntilSendersGoneFuture<'_> {
        UntilSendersGoneFuture {
            rx: self,
            parked: Vec::new(),
        }
    }
}

impl crate::shm::Mailbox {
    /// Waits until a sender has attached (or had attached) and no live sender remains,
    /// without blocking the thread (feature `tokio`, any executor): the death notice of
    /// every sender. A sender process's death is seen at once (its pidfd); the first
    /// sender's attaching, or the going of a sender in this same process, within about a
    /// second. Unread messages do not matter here: to receive them first, use
    /// [`UntilSendersGone::recv_async`](crate::shm::mailbox::UntilSendersGone::recv_async).
    ///
    /// # Errors
    /// An OS error opening or polling a pidfd.
    pub async fn senders_gone_async(&self) -> Result<()> {
        let mut watch = crate::shm::mailbox::SendersWatch::new(self.clone());
        let mut parked: Vec<Parked> = Vec::new();
        std::future::poll_fn(|cx| {
            poll_op(
                &mut watch,
                &mut parked,
                cx,
                |watch, cx| {
                    let mut sources = Vec::new();
                    if watch.needs_rescan() {
                        sources.push(Source::Word(Arc::new(Rescan(watch.word()))));
                    }
                    for (fd, _) in watch.fds() {
                        sources.push(Source::Fd(FdWait::register(fd, false, cx.waker())?));
                    }
                    Ok(sources)
                },
                |watch| ready_if(watch.gone()?),
                is_empty,
            )
        })
        .await
    }
}

/// `Ok` when a watched condition holds, `Empty` (try again when woken) when not.
fn ready_if(holds: bool) -> Result<()> {
    if holds {
        Ok(())
    } else {
        Err(Error::Empty)
    }
}

impl crate::pidfd::PidFd {
    /// Waits for the process to exit without blocking the thread (feature `tokio`, any
    /// executor).
    ///
    /// # Errors
    /// An OS error from `poll` or `epoll_ctl`.
    pub async fn died_async(&self) -> Result<()> {
        let mut parked: Vec<Parked> = Vec::new();
        std::future::poll_fn(|cx| {
            poll_op(
                &mut (),
                &mut parked,
                cx,
                |_, cx| {
                    Ok(vec![Source::Fd(FdWait::register(
                        std::os::fd::AsFd::as_fd(self),
                        false,
                        cx.waker(),
                    )?)])
                },
                |_| ready_if(self.is_dead()?),
                is_empty,
            )
        })
        .await
    }
}
