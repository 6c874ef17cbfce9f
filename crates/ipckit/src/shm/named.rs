//! What the named shared-memory objects with endpoints (mailboxes and topics) share: the
//! options every builder takes, the setters for them, and opening a segment that its creator
//! may still be initialising.

use std::time::{Duration, Instant};

use super::segment::{Segment, Trust};
use super::wait::WaitStrategy;
use crate::error::{Error, Result};

/// Default maximum message size of mailboxes and topics, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 4096;

/// How long an opener waits for a creator to publish its magic.
const CREATION_GRACE: Duration = Duration::from_millis(500);

/// The options every builder of a mailbox or topic takes.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The object's name (its file is `/dev/shm/ipckit.KIND.NAME`).
    pub name: String,
    /// The largest message, in bytes.
    pub max_message: usize,
    /// File mode of the segment.
    pub mode: u32,
    /// How endpoints wait.
    pub wait: WaitStrategy,
    /// Whose files an open accepts (by default the caller's and root's).
    pub trust: Trust,
}

impl Options {
    /// The defaults: 4096-byte messages, mode 0600, spin then sleep.
    pub(crate) fn new(name: &str) -> Options {
        Options {
            name: name.to_string(),
            max_message: DEFAULT_MAX_MESSAGE,
            mode: 0o600,
            wait: WaitStrategy::default(),
            trust: Trust::default(),
        }
    }
}

/// Builder setters, written once: `setters! { /// doc  name(arg: Type) |b| body; ... }`
/// defines `pub fn name(mut self, arg: Type) -> Self` running `body` with `b` bound to
/// `&mut self`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty)?) |$this:ident| $body:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $($arg: $ty)?) -> Self {
                let $this = &mut self;
                $body;
                self
            }
        )*
    };
}
pub(crate) use setters;

/// The setters of [`Options`] for a builder whose `options` field holds them.
macro_rules! option_setters {
    () => {
        $crate::shm::named::setters! {
            /// The largest message, in bytes (default 4096). Every slot is this big.
            max_message_size(bytes: usize) |b| b.options.max_message = bytes;
            /// File mode of the segment (default `0o600`: only the creating user).
            mode(mode: u32) |b| b.options.mode = mode;
            /// How endpoints made from this handle wait (default: spin 50 µs, then sleep).
            wait_strategy(wait: $crate::shm::WaitStrategy) |b| b.options.wait = wait;
            /// Also accept an existing object whose file belongs to `uid` when opening it (by
            /// default only the caller's own and root's are accepted: a file another user
            /// created under this name could be read by that user, so it is refused with
            /// [`Error::PermissionDenied`](crate::Error::PermissionDenied) naming the owner).
            /// Only for a peer you trust with the messages.
            allow_owner(uid: u32) |b| b.options.trust = $crate::shm::segment::Trust::AlsoUid(uid);
            /// Accept an existing object whatever user owns its file, for objects shared with
            /// every user on purpose. The contents are still validated; the owner can read
            /// every message.
            trust_any_owner() |b| b.options.trust = $crate::shm::segment::Trust::AnyOwner;
        }
    };
}
pub(crate) use option_setters;

/// The shortcuts of a handle type with a `builder(name)`: `create`, `open`, `open_or_create`
/// with the builder's defaults (described by `$defaults`).
macro_rules! shortcuts {
    ($handle:ident, $builder:ident, $defaults:literal) => {
        #[doc = concat!("Creates one with the default geometry (", $defaults, ").")]
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($builder), "::create`].")]
        pub fn create(name: &str) -> Result<$handle> {
            $handle::builder(name).create()
        }

        /// Opens an existing one.
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($builder), "::open`].")]
        pub fn open(name: &str) -> Result<$handle> {
            $handle::builder(name).open()
        }

        /// Opens it, creating it with the default geometry if it does not exist.
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($builder), "::open_or_create`].")]
        pub fn open_or_create(name: &str) -> Result<$handle> {
            $handle::builder(name).open_or_create()
        }
    };
}
pub(crate) use shortcuts;

/// Opens segment `kind`/`name` and attaches to what it holds. A creator publishes its magic
/// last, so a structure that does not validate yet may be one being set up: the whole open
/// is retried for a short while before its error is reported.
///
/// # Errors
/// [`Error::NotFound`], [`Error::PermissionDenied`], or `attach`'s error (after the grace
/// period for [`Error::Corrupt`]).
pub(crate) fn open_when_ready<T>(
    kind: &str,
    name: &str,
    trust: Trust,
    mut attach: impl FnMut(Segment) -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match Segment::open_trusting(kind, name, trust).and_then(&mut attach) {
            Err(Error::Corrupt { .. }) if start.elapsed() < CREATION_GRACE => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other,
        }
    }
}
