//! # ipckit
//!
//! Inter-process communication for Linux: every classic mechanism behind one vocabulary,
//! and a crash-safe shared-memory mailbox with no system call on its fast path.
//!
//! Every message endpoint implements [`MessageSender`] and/or [`MessageReceiver`]: blocking
//! `send`/`recv`, non-blocking `try_send`/`try_recv`, timed `send_timeout`/`recv_timeout`.
//! One thread waits on many endpoints and processes at once with
//! [`WaitSet`](waitset::WaitSet); [`PidFd`](pidfd::PidFd) tells of a process's death; with the
//! `tokio` feature, `recv_async`, `send_async` and `call_async` (module `async_io`) await
//! without blocking a thread, on any executor.
//!
//! ```
//! use ipckit::shm::Mailbox;
//! use ipckit::{MessageReceiver, MessageSender};
//! # let name = format!("hello-{}", std::process::id());
//!
//! // Any process that knows the name can open the mailbox.
//! let mailbox = Mailbox::create(&name)?;
//! let mut tx = mailbox.sender()?;
//! let mut rx = mailbox.receiver()?;
//! tx.send(b"hello")?;
//! assert_eq!(rx.recv()?.data, b"hello");
//! Mailbox::remove(&name)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Every public `Result` says which `Error` variants a caller can get, and when.
#![warn(clippy::missing_errors_doc)]
#![deny(missing_docs, missing_debug_implementations)]

#[cfg(all(feature = "tokio", not(loom)))]
pub mod async_io;
pub mod direct;
pub mod error;
mod fd;
pub mod fifo;
pub mod frame;
pub mod link;
pub mod mq;
pub mod namespace;
#[cfg(not(loom))]
pub mod pidfd;
pub mod pipe;
pub mod process;
#[cfg(not(loom))]
mod reactor;
mod registry;
pub mod service;
pub mod shm;
pub mod signal;
pub mod socket;
pub mod stream;
pub mod sync;
#[cfg(not(loom))]
pub mod waitset;

pub use error::{Error, Result};
pub use link::{
    Capacity, Deadline, Message, MessageReceiver, MessageSender, Metadata, Typed, WhenFull,
};
