//! Message queues kept by the kernel: POSIX queues (priorities, timed operations) and
//! System V queues (typed messages, selective receive).
//!
//! Both persist until removed, like a mailbox, but live in the kernel: every send and receive
//! is a system call. rustix has no queue calls, so these two files are the one place outside
//! `shm/` and `sync/` that calls `libc` directly; every call is wrapped where it is made, with
//! its safety argument.

pub mod posix;
pub mod sysv;

pub use posix::{PosixQueue, QueueAttributes};
pub use sysv::SysvQueue;

use crate::error::Error;

/// Reads a limit under `/proc/sys/fs/mqueue` for an error message.
pub(crate) fn limit(file: &str) -> String {
    let path = format!("/proc/sys/fs/mqueue/{file}");
    match std::fs::read_to_string(&path) {
        Ok(value) => format!("{path} (now {})", value.trim()),
        Err(_) => path,
    }
}

/// The last OS error, for `op` on `object`.
pub(crate) fn last_error(op: &'static str, object: &str) -> Error {
    Error::os(op, object, std::io::Error::last_os_error())
}
