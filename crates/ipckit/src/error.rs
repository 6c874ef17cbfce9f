//! The one error type of ipckit.
//!
//! Every public operation returns [`Result<T>`]. The variants are the situations a caller
//! handles differently (a full link, an empty link, a peer that is gone, a message that does
//! not fit...); an operating-system failure that is none of those keeps its `errno` as the
//! [`std::error::Error::source`].
//!
//! `errno` values are mapped to variants in one place, [`Error::os`], so every mechanism
//! reports the same situation the same way.

use std::io;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ipckit.
///
/// Match on the variant to decide what to do; the `Display` text is one sentence naming the
/// object and, where it helps, what to do about it. `Debug` prints the same sentence followed
/// by its causes, so a `main` that returns `ipckit::Result` (which prints the `Debug` form) or
/// an `unwrap` shows the helpful message, not a struct dump.
///
/// ```
/// use ipckit::Error;
/// # fn try_send() -> ipckit::Result<()> { Err(Error::Full) }
/// match try_send() {
///     Ok(()) => {}
///     Err(Error::Full) => { /* back off and retry later */ }
///     Err(other) => panic!("{other}"),
/// }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A non-blocking send found the link full.
    #[error("the link is full")]
    Full,
    /// A non-blocking receive found no message.
    #[error("no message is waiting")]
    Empty,
    /// A timed operation reached its deadline.
    #[error("the operation timed out")]
    Timeout,
    /// The peer closed its end or died; no message can pass any more.
    #[error("the peer is gone (closed or exited)")]
    Disconnected,
    /// A message is larger than the link's maximum message size.
    #[error("a message of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Size of the offending message, in bytes.
        size: usize,
        /// The largest message the link carries, in bytes.
        max: usize,
    },
    /// Bytes read from shared memory or from a stream do not form what they claim to.
    #[error("{object} is corrupt: {detail}")]
    Corrupt {
        /// The object that was read (a segment name, "frame", ...).
        object: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The operating system refused access to a named object.
    #[error("permission denied for {object}: check its mode and owner")]
    PermissionDenied {
        /// The object that could not be opened.
        object: String,
    },
    /// No object of that name exists.
    #[error("{object} does not exist")]
    NotFound {
        /// The missing object.
        object: String,
    },
    /// An exclusive creation met an object that already exists.
    #[error("{object} already exists: remove it first or open it instead")]
    AlreadyExists {
        /// The object that already exists.
        object: String,
    },
    /// The requested combination cannot be honoured by this mechanism.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An argument is invalid (a bad name, a zero capacity, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A system limit was reached; the text names the limit.
    #[error("{object}: the system limit {limit} was reached")]
    LimitReached {
        /// The object being created or used.
        object: String,
        /// The limit, for example `/proc/sys/fs/mqueue/msg_max`.
        limit: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// Not enough free memory or space to reserve an object (a shared-memory segment is
    /// reserved whole when it is created, so a full `/dev/shm` shows here and not later as a
    /// `SIGBUS`). Nothing was left behind.
    #[error(
        "{object}: cannot reserve {requested} bytes, only {available} bytes are free in {path} \
         (free some space, for example with `ipckit clean`, or ask for a smaller object)"
    )]
    NoSpace {
        /// The object being created.
        object: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes free where they were asked for, as the filesystem reported them.
        available: u64,
        /// Where: the filesystem (`/dev/shm`) or `memory (memfd)`.
        path: String,
    },
    /// Any other operating-system failure; `errno` is kept as the source.
    #[error("{op} on {object} failed")]
    Os {
        /// The system call or operation that failed.
        op: &'static str,
        /// The object it was applied to.
        object: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

impl Error {
    /// Maps an OS error from operation `op` on `object` to the variant a caller matches.
    ///
    /// `ENOENT` is [`Error::NotFound`], `EACCES`/`EPERM` [`Error::PermissionDenied`],
    /// `EEXIST` [`Error::AlreadyExists`], `EPIPE`/`ECONNRESET`/`ECONNREFUSED`/`ENOTCONN`
    /// [`Error::Disconnected`]; anything else is [`Error::Os`] with the errno as source.
    pub fn os(op: &'static str, object: impl Into<String>, source: impl Into<io::Error>) -> Self {
        let source = source.into();
        let object = object.into();
        match source.raw_os_error() {
            Some(libc::ENOENT) => Error::NotFound { object },
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { object },
            Some(libc::EEXIST) => Error::AlreadyExists { object },
            Some(libc::EPIPE)
            | Some(libc::ECONNRESET)
            | Some(libc::ECONNREFUSED)
            | Some(libc::ENOTCONN) => Error::Disconnected,
            _ => Error::Os { op, object, source },
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            detail: detail.into(),
        }
    }

    /// True for the errors that only mean "not now" ([`Full`](Error::Full),
    /// [`Empty`](Error::Empty), [`Timeout`](Error::Timeout)): the link is still usable.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Full | Error::Empty | Error::Timeout)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Self {
        Error::os("system call", "ipckit object", errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_matchable_variants() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert!(matches!(
            Error::os("open", "x", e(libc::ENOENT)),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            Error::os("open", "x", e(libc::EACCES)),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            Error::os("open", "x", e(libc::EEXIST)),
            Error::AlreadyExists { .. }
        ));
        assert!(matches!(
            Error::os("write", "x", e(libc::EPIPE)),
            Error::Disconnected
        ));
        let other = Error::os("mmap", "seg", e(libc::ENOMEM));
        assert!(matches!(other, Error::Os { op: "mmap", .. }));
        assert!(std::error::Error::source(&other).is_some());
    }

    #[test]
    fn display_names_the_object() {
        let text = Error::NotFound {
            object: "mailbox \"jobs\"".into(),
        }
        .to_string();
        assert!(text.contains("jobs"), "{text}");
    }

    #[test]
    fn debug_is_the_sentence_with_its_causes() {
        let err = Error::os(
            "mmap",
            "segment \"s\"",
            io::Error::from_raw_os_error(libc::ENOMEM),
        );
        let debug = format!("{err:?}");
        assert!(
            debug.starts_with("mmap on segment \"s\" failed: "),
            "{debug}"
        );
        assert!(debug.contains("memory"), "{debug}");
        let missing = Error::NotFound {
            object: "mailbox \"jobs\"".into(),
        };
        assert_eq!(format!("{missing:?}"), missing.to_string());
    }
}
