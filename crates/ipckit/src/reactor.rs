//! The reactor: turns "a futex word changed" and "a descriptor is ready" into
//! [`Waker`](std::task::Waker) calls, for async endpoints and for a
//! [`WaitSet`](crate::waitset::WaitSet) that mixes shared-memory endpoints with descriptors.
//!
//! # Shared-memory endpoints: `futex_waitv` shards
//!
//! A mailbox or topic waiter announces itself on the endpoint's [`Event`] (the sleeper count
//! goes up, so senders make the wake system call) exactly as a blocking waiter does, and
//! hands the futex word with its ticket to a *shard*: one thread per process per 127 distinct
//! words, asleep in `futex_waitv` on all of them plus a private control word. A sender's
//! ordinary `FUTEX_WAKE` wakes the shard, which wakes the wakers whose word moved. Nothing
//! changes on the sender's side, and a sender pays nothing when nobody waits. Waiters of the
//! same mailbox share one word, so a thousand receivers of one mailbox cost one entry.
//!
//! Every sleep of a shard is bounded by [`futex::MAX_SLEEP`]; on each timeout the shard asks
//! each registered source whether it is ready (a hint read of shared memory, no system
//! call), so a wake-up lost to a neighbour that scribbled a sleeper count costs at most that.
//!
//! # Descriptors: one epoll thread
//!
//! Kernel transports and pidfds are registered one-shot in one `epoll` instance per process,
//! through a duplicate of the caller's descriptor (so two waits on one descriptor do not
//! collide), and removed again when the wait ends.

// The descriptor half serves the async methods only (feature `tokio`).
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as StdOrdering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Wake, Waker};
use std::time::Duration;

use rustix::event::{epoll, PollFd, PollFlags};

use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::sync::futex::{self, MAX_SLEEP};
use crate::sync::primitive::{AtomicU32, Ordering};
use crate::sync::waitv::{self, WaitvOutcome, WaitvWord, MAX_WORDS};
use crate::sync::{Event, Ticket};

/// Distinct words one shard waits on (one more `futex_waitv` slot is its control word).
const SHARD_WORDS: usize = waitv::MAX_WORDS - 1;

/// Something whose readiness is announced through a futex word in shared memory: a mailbox
/// receiver's `not_empty`, a sender's `not_full`, a topic's write position.
///
/// Implementors keep the memory of [`event`](WordSource::event) mapped for as long as they
/// live; the reactor holds them while it sleeps on the word.
pub trait WordSource: Send + Sync + 'static {
    /// The event waiters announce themselves on and sleep on.
    fn event(&self) -> &Event;
    /// Whether the awaited condition (a message, room) seems to hold now. A hint: the
    /// operation itself decides. Cheap, no system call.
    fn ready(&self) -> bool;
}

/// Locks `m`, ignoring poisoning: the maps it guards stay consistent at every step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One waiter's interest in one word.
struct Interest {
    id: u64,
    source: Arc<dyn WordSource>,
    ticket: Ticket,
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Interest {
    fn word(&self) -> &AtomicU32 {
        self.source.event().word()
    }

    fn fire(&self) {
        self.fired.store(true, StdOrdering::Release);
        // Taken out of the lock first: an executor may poll the task inside `wake`, and
        // that poll locks this waker slot again.
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[derive(Default)]
struct ShardState {
    interests: HashMap<u64, Arc<Interest>>,
    /// Word address → interests on it.
    words: HashMap<usize, usize>,
}

struct Shard {
    /// Bumped (and woken) when an interest is added, so the sleeping thread re-reads its list.
    control: AtomicU32,
    state: Mutex<ShardState>,
}

impl Shard {
    fn start() -> Result<Arc<Shard>> {
        let shard = Arc::new(Shard {
            control: AtomicU32::new(0),
            state: Mutex::new(ShardState::default()),
        });
        let run = Arc::clone(&shard);
        std::thread::Builder::new()
            .name("ipckit-reactor".into())
            .spawn(move || run.run())
            .map_err(|e| Error::Unsupported(format!("the ipckit reactor did not start: {e}")))?;
        Ok(shard)
    }

    fn run(&self) {
        loop {
            let control = self.control.load(Ordering::SeqCst);
            // Cloned out of the lock: they keep the mappings of the words alive while the
            // thread sleeps on them, even if their waiters go away meanwhile.
            let interests: Vec<Arc<Interest>> =
                lock(&self.state).interests.values().cloned().collect();
            let mut seen = HashSet::new();
            // Not `private`, although the word is: `futex::wake_all` makes shared wakes,
            // and the kernel keys a private sleep differently, so it would never be woken.
            let mut words = vec![WaitvWord {
                word: &self.control,
                expected: control,
                private: false,
            }];
            for interest in &interests {
                if interest.fired.load(StdOrdering::Acquire) {
                    continue;
                }
                if interest.word().load(Ordering::SeqCst) != interest.ticket.value() {
                    interest.fire();
                } else if seen.insert(interest.word() as *const AtomicU32 as usize) {
                    words.push(WaitvWord {
                        word: interest.word(),
                        expected: interest.ticket.value(),
                        private: false,
                    });
                }
            }
            match waitv::waitv(&words, Some(futex::MAX_SLEEP)) {
                WaitvOutcome::TimedOut => {
                    // A wake-up lost to a scribbled sleeper count: ask the sources.
                    for interest in &interests {
                        if !interest.fired.load(StdOrdering::Acquire) && interest.source.ready() {
                            interest.fire();
                        }
                    }
                }
                WaitvOutcome::Unsupported => {
                    // No futex_waitv (Linux < 5.16): poll the words every few milliseconds.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    for interest in &interests {
                        if !interest.fired.load(StdOrdering::Acquire) && interest.source.ready() {
                            interest.fire();
                        }
                    }
                }
                WaitvOutcome::Woken(_) | WaitvOutcome::Changed => {}
            }
        }
    }
}

fn shards() -> &'static Mutex<Vec<Arc<Shard>>> {
    static SHARDS: OnceLock<Mutex<Vec<Arc<Shard>>>> = OnceLock::new();
    SHARDS.get_or_init(|| Mutex::new(Vec::new()))
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, StdOrdering::Relaxed)
}

fn source_withdraw(interest: &Interest) {
    interest.source.event().withdraw();
}

/// A waiter announced on a word and registered with a shard; withdrawn and deregistered
/// on drop.
pub(crate) struct WordWait {
    interest: Arc<Interest>,
    shard: Arc<Shard>,
}

impl std::fmt::Debug for WordWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordWait")
            .field("id", &self.interest.id)
            .finish()
    }
}

impl WordWait {
    /// Announces a sleeper on `source`'s event and has a shard wake `waker` when the word
    /// moves. The caller re-checks its condition *after* this (the announcement must come
    /// first, see [`Event::announce`]) and drops the wait if it holds.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if a reactor thread could not be started.
    pub(crate) fn register(source: Arc<dyn WordSource>, waker: &Waker) -> Result<WordWait> {
        let ticket = source.event().announce();
        // A cursor ring's notifier fences only lightly (`sync::primitive::asymmetric`): the
        // sleeper's half of that pattern comes after the announcement, before any re-check.
        crate::sync::primitive::asymmetric::heavy_barrier();
        let addr = source.event().word() as *const AtomicU32 as usize;
        let interest = Arc::new(Interest {
            id: next_id(),
            source,
            ticket,
            fired: AtomicBool::new(false),
            waker: Mutex::new(Some(waker.clone())),
        });
        let shard = {
            let mut all = lock(shards());
            let found = all
                .iter()
                .find(|s| lock(&s.state).words.contains_key(&addr))
                .or_else(|| {
                    all.iter()
                        .find(|s| lock(&s.state).words.len() < SHARD_WORDS)
                })
                .cloned();
            match found {
                Some(shard) => shard,
                None => {
                    let shard = match Shard::start() {
                        Ok(shard) => shard,
                        Err(e) => {
                            source_withdraw(&interest);
                            return Err(e);
                        }
                    };
                    all.push(Arc::clone(&shard));
                    shard
                }
            }
        };
        {
            let mut state = lock(&shard.state);
            state.interests.insert(interest.id, Arc::clone(&interest));
            *state.words.entry(addr).or_insert(0) += 1;
        }
        shard.control.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&shard.control);
        Ok(WordWait { interest, shard })
    }

    /// Whether the word moved since the announcement (or the shard fired): time to re-check.
    pub(crate) fn is_due(&self) -> bool {
        self.interest.fired.load(StdOrdering::Acquire)
            || self.interest.word().load(Ordering::SeqCst) != self.interest.ticket.value()
    }

    /// Replaces the waker to call (the task may have moved).
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.interest.waker);
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

impl Drop for WordWait {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.shard.state);
            state.interests.remove(&self.interest.id);
            let addr = self.interest.word() as *const AtomicU32 as usize;
            if let Some(n) = state.words.get_mut(&addr) {
                *n -= 1;
                if *n == 0 {
                    state.words.remove(&addr);
                }
            }
        }
        self.interest.source.event().withdraw();
    }
}

/// The process's epoll thread.
struct FdReactor {
    epoll: OwnedFd,
    waiting: Mutex<HashMap<u64, Arc<FdInterest>>>,
}

struct FdInterest {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn fd_reactor() -> Result<&'static FdReactor> {
    static REACTOR: OnceLock<std::result::Result<&'static FdReactor, String>> = OnceLock::new();
    REACTOR
        .get_or_init(|| {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| e.to_string())?;
            let reactor: &'static FdReactor = Box::leak(Box::new(FdReactor {
                epoll,
                waiting: Mutex::new(HashMap::new()),
            }));
            std::thread::Builder::new()
                .name("ipckit-fd-reactor".into())
                .spawn(move || reactor.run())
                .map_err(|e| e.to_string())?;
            Ok(reactor)
        })
        .clone()
        .map_err(|e| Error::Unsupported(format!("the descriptor reactor did not start: {e}")))
}

impl FdReactor {
    fn run(&self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        loop {
            events.clear();
            if epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                None,
            )
            .is_err()
            {
                continue; // EINTR
            }
            // Woken outside the lock: an executor may poll the task inside `wake`, and a
            // finished wait removes itself from `waiting`.
            let wakers: Vec<Waker> = {
                let waiting = lock(&self.waiting);
                events
                    .iter()
                    .filter_map(|event| waiting.get(&event.data.u64()))
                    .filter_map(|interest| {
                        interest.fired.store(true, StdOrdering::Release);
                        lock(&interest.waker).take()
                    })
                    .collect()
            };
            for waker in wakers {
                waker.wake();
            }
        }
    }
}

/// Interest in one descriptor's readiness, one-shot; removed on drop.
pub(crate) struct FdWait {
    id: u64,
    dup: OwnedFd,
    interest: Arc<FdInterest>,
    reactor: &'static FdReactor,
}

impl std::fmt::Debug for FdWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdWait").field("id", &self.id).finish()
    }
}

impl FdWait {
    /// Has the reactor wake `waker` once `fd` is readable (`write` false) or writable. A
    /// descriptor that is ready already fires at once (level-triggered, one-shot).
    ///
    /// # Errors
    /// An OS error from `dup` or `epoll_ctl` (a descriptor epoll cannot watch, such as a
    /// regular file, gives `EPERM`).
    pub(crate) fn register(fd: BorrowedFd<'_>, write: bool, waker: &Waker) -> Result<FdWait> {
        let reactor = fd_reactor()?;
        let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)
            .map_err(|e| Error::os("dup", "a descriptor to wait on", e))?;
        let id = next_id();
        let interest = Arc::new(FdInterest {
            fired: AtomicBool::new(false),
            waker: Mutex::new(Some(waker.clone())),
        });
        lock(&reactor.waiting).insert(id, Arc::clone(&interest));
        let flags = if write {
            epoll::EventFlags::OUT
        } else {
            epoll::EventFlags::IN
        } | epoll::EventFlags::ONESHOT;
        if let Err(e) = epoll::add(&reactor.epoll, &dup, epoll::EventData::new_u64(id), flags) {
            lock(&reactor.waiting).remove(&id);
            return Err(Error::os("epoll_ctl", "a descriptor to wait on", e));
        }
        Ok(FdWait {
            id,
            dup,
            interest,
            reactor,
        })
    }

    /// Whether the descriptor became ready.
    pub(crate) fn is_due(&self) -> bool {
        self.interest.fired.load(StdOrdering::Acquire)
    }

    /// Replaces the waker to call.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.interest.waker);
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

impl AsFd for FdWait {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dup.as_fd()
    }
}

impl Drop for FdWait {
    fn drop(&mut self) {
        // Removed before the duplicate closes: epoll forgets a descriptor only when every
        // copy of it is closed, and the caller's copy lives on.
        let _ = epoll::delete(&self.reactor.epoll, &self.dup);
        lock(&self.reactor.waiting).remove(&self.id);
    }
}

/// The endpoint side of waiting: what an endpoint waits on (`watch.rs` files implement it
/// next to each endpoint; `waitset.rs` for the descriptor-based ones).
pub(crate) mod private {
    use std::os::fd::BorrowedFd;
    use std::sync::Arc;

    /// What an endpoint waits on: a futex word in shared memory, or a descriptor.
    pub enum SourceRef<'a> {
        /// A futex word (mailbox, topic).
        Word(Arc<dyn crate::reactor::WordSource>),
        /// A descriptor to poll (`true`: for writing).
        Fd(BorrowedFd<'a>, bool),
        /// A futex word for the messages, and a descriptor to read for the peer's hang-up
        /// (a service connection).
        Both(Arc<dyn crate::reactor::WordSource>, BorrowedFd<'a>),
    }

    impl std::fmt::Debug for SourceRef<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                SourceRef::Word(_) => f.write_str("SourceRef::Word"),
                SourceRef::Fd(fd, write) => write!(f, "SourceRef::Fd({fd:?}, {write})"),
                SourceRef::Both(_, fd) => write!(f, "SourceRef::Both({fd:?})"),
            }
        }
    }

    /// Implemented by ipckit's endpoints only.
    pub trait Sealed {
        /// What to wait on until a receive would succeed (for senders: a send).
        fn source(&self) -> crate::Result<SourceRef<'_>>;
    }
}
pub(crate) use private::{Sealed, SourceRef};

/// The poll events of a read (`write` false) or write wait.
pub(crate) fn interest(write: bool) -> PollFlags {
    if write {
        PollFlags::OUT
    } else {
        PollFlags::IN
    }
}

/// Wakes a `poll` through an eventfd: how the reactor's futex shards reach a thread asleep
/// in `poll`.
struct EventFdWake(OwnedFd);

impl Wake for EventFdWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

thread_local! {
    /// This thread's doorbell for mixed sleeps, made on first use.
    static DOORBELL: std::cell::OnceCell<Option<(Arc<EventFdWake>, Waker)>> =
        const { std::cell::OnceCell::new() };
}

/// Sleeps once (at most [`MAX_SLEEP`], at most until `deadline`) until a word of `words`
/// moves or a descriptor of `fds` is ready. `recheck` is called after the words are
/// announced and before sleeping: if it says the awaited condition already holds, no sleep.
///
/// # Errors
/// An OS error from `poll` or making the thread's eventfd; [`Error::Unsupported`] if the
/// reactor thread could not be started.
pub(crate) fn sleep_on(
    words: &[Arc<dyn WordSource>],
    fds: &[(BorrowedFd<'_>, bool)],
    deadline: Deadline,
    mut recheck: impl FnMut() -> bool,
) -> Result<()> {
    let turn = deadline.remaining().map_or(MAX_SLEEP, |d| d.min(MAX_SLEEP));
    if turn.is_zero() {
        return Ok(());
    }
    if fds.is_empty() && !words.is_empty() && words.len() <= MAX_WORDS && waitv::supported() {
        let tickets: Vec<_> = words.iter().map(|w| w.event().announce()).collect();
        // The sleeper's half of the cursor rings' asymmetric fence (see `register`).
        crate::sync::primitive::asymmetric::heavy_barrier();
        if !recheck() {
            let list: Vec<WaitvWord<'_>> = words
                .iter()
                .zip(&tickets)
                .map(|(w, t)| WaitvWord {
                    word: w.event().word(),
                    expected: t.value(),
                    private: false,
                })
                .collect();
            waitv::waitv(&list, Some(turn));
        }
        for w in words {
            w.event().withdraw();
        }
        return Ok(());
    }
    if words.is_empty() {
        return poll_fds(fds, None, turn);
    }
    let doorbell = DOORBELL.with(|cell| {
        cell.get_or_init(|| {
            let fd = rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .ok()?;
            let wake = Arc::new(EventFdWake(fd));
            let waker = Waker::from(Arc::clone(&wake));
            Some((wake, waker))
        })
        .clone()
    });
    let Some((bell, waker)) = doorbell else {
        return Err(Error::Unsupported(
            "no eventfd for a WaitSet that mixes endpoints".into(),
        ));
    };
    let waits = words
        .iter()
        .map(|w| WordWait::register(Arc::clone(w), &waker))
        .collect::<Result<Vec<_>>>()?;
    if !recheck() {
        poll_fds(fds, Some(bell.0.as_fd()), turn)?;
    }
    drop(waits);
    // Drained after the waits are gone, so a ring left by them does not wake the next sleep.
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(&bell.0, &mut buf);
    Ok(())
}

fn poll_fds(
    fds: &[(BorrowedFd<'_>, bool)],
    bell: Option<BorrowedFd<'_>>,
    turn: Duration,
) -> Result<()> {
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, write)| PollFd::new(fd, interest(*write)))
        .collect();
    if let Some(bell) = &bell {
        polled.push(PollFd::new(bell, PollFlags::IN));
    }
    let timeout = rustix::time::Timespec {
        tv_sec: turn.as_secs() as i64,
        tv_nsec: turn.subsec_nanos().into(),
    };
    match rustix::event::poll(&mut polled, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(Error::os("poll", "descriptors to wait on", e)),
    }
}
