//! POSIX message queues (`mq_open`, `mq_timedsend`, `mq_timedreceive`): named, persistent,
//! bounded, and delivered highest priority first.
//!
//! ```
//! use ipckit::mq::PosixQueue;
//! use ipckit::{Deadline, MessageReceiver};
//! # let name = format!("doc-mq-{}", std::process::id());
//!
//! let mut queue = PosixQueue::builder(&name).capacity(8).max_message_size(128).create()?;
//! queue.send_priority(b"routine", 1, Deadline::Now)?;
//! queue.send_priority(b"urgent", 9, Deadline::Now)?;
//! let first = queue.recv()?;
//! assert_eq!((first.data.as_slice(), first.meta.priority), (&b"urgent"[..], Some(9)));
//! PosixQueue::remove(&name)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # References
//! - [`mq_overview(7)`](https://man7.org/linux/man-pages/man7/mq_overview.7.html)

use std::ffi::CString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{last_error, limit};
use crate::error::{Error, Result};
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender, Metadata};
use crate::shm::segment::check_name;

/// Builds, creates or opens a [`PosixQueue`].
#[derive(Debug, Clone)]
pub struct PosixQueueBuilder {
    name: String,
    capacity: usize,
    max_message: usize,
    mode: u32,
}

impl PosixQueueBuilder {
    /// Messages the queue holds (default 10, the usual `msg_max`).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// Largest message in bytes (default 8192, the usual `msgsize_max`).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// File mode (default 0600).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Creates the queue, exclusively.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`]; [`Error::LimitReached`] naming the `/proc/sys/fs/mqueue`
    /// limit that refused it; [`Error::InvalidArgument`] for a bad name.
    pub fn create(&self) -> Result<PosixQueue> {
        let (path, object) = names(&self.name)?;
        // SAFETY: an all-zero mq_attr is valid; we then set the two fields mq_open reads.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = self.capacity as libc::c_long;
        attr.mq_msgsize = self.max_message as libc::c_long;
        // SAFETY: `path` is NUL-terminated; with O_CREAT, mq_open reads a mode and a valid
        // `mq_attr` pointer, both supplied.
        let mqd = unsafe {
            libc::mq_open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                self.mode as libc::mode_t,
                &attr as *const libc::mq_attr,
            )
        };
        if mqd == -1 {
            let err = std::io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EINVAL) => Error::LimitReached {
                    object,
                    limit: format!(
                        "{} or {} (asked for {} messages of {} bytes)",
                        limit("msg_max"),
                        limit("msgsize_max"),
                        self.capacity,
                        self.max_message
                    ),
                    source: err,
                },
                Some(libc::EMFILE) | Some(libc::ENOSPC) | Some(libc::ENOMEM) => {
                    Error::LimitReached {
                        object,
                        limit: format!("{} or RLIMIT_MSGQUEUE", limit("queues_max")),
                        source: err,
                    }
                }
                _ => Error::os("mq_open", object, err),
            });
        }
        // The umask narrowed the mode: make it exactly what was asked.
        // SAFETY: mqd is a valid queue descriptor (a file descriptor on Linux).
        unsafe { libc::fchmod(mqd, self.mode as libc::mode_t) };
        crate::registry::record(crate::registry::Kind::PosixQueue, &self.name);
        PosixQueue::from_mqd(mqd, object)
    }

    /// Opens an existing queue.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`].
    pub fn open(&self) -> Result<PosixQueue> {
        let (path, object) = names(&self.name)?;
        // SAFETY: `path` is NUL-terminated; without O_CREAT no further arguments are read.
        let mqd = unsafe { libc::mq_open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if mqd == -1 {
            return Err(last_error("mq_open", &object));
        }
        PosixQueue::from_mqd(mqd, object)
    }
}

fn names(name: &str) -> Result<(CString, String)> {
    check_name("queue name", name)?;
    let path = CString::new(format!("/ipckit.{name}")).expect("checked: no NUL");
    Ok((path, format!("POSIX queue {name:?}")))
}

/// Sizes and fill of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAttributes {
    /// Messages it holds at most.
    pub capacity: usize,
    /// Largest message, in bytes.
    pub max_message_size: usize,
    /// Messages in it now.
    pub depth: usize,
}

/// An open POSIX message queue. Implements both message traits (priority 0 on `send`).
#[derive(Debug)]
pub struct PosixQueue {
    mqd: libc::mqd_t,
    attributes: QueueAttributes,
    object: String,
}

// SAFETY: a queue descriptor is a file descriptor, usable from any thread.
unsafe impl Send for PosixQueue {}

fn realtime_deadline(left: Duration) -> libc::timespec {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + left;
    libc::timespec {
        tv_sec: at.as_secs() as libc::time_t,
        tv_nsec: at.subsec_nanos() as libc::c_long,
    }
}

impl PosixQueue {
    /// Starts building a queue called `name` (`/dev/mqueue/ipckit.NAME` where mounted).
    pub fn builder(name: &str) -> PosixQueueBuilder {
        PosixQueueBuilder {
            name: name.to_string(),
            capacity: 10,
            max_message: 8192,
            mode: 0o600,
        }
    }

    /// Opens an existing queue.
    ///
    /// # Errors
    /// As [`PosixQueueBuilder::open`].
    pub fn open(name: &str) -> Result<PosixQueue> {
        PosixQueue::builder(name).open()
    }

    /// Removes the queue's name; open descriptors keep working. (`remove(name)` is the one
    /// spelling for removing a named object across ipckit: `Mailbox`, `Topic`, `Shared`,
    /// `BoundedBuffer`, `fifo`.)
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such queue; [`Error::PermissionDenied`].
    #[doc(alias = "mq_unlink")]
    pub fn remove(name: &str) -> Result<()> {
        let (path, object) = names(name)?;
        // SAFETY: NUL-terminated name.
        if unsafe { libc::mq_unlink(path.as_ptr()) } == -1 {
            return Err(last_error("mq_unlink", &object));
        }
        crate::registry::forget(crate::registry::Kind::PosixQueue, name);
        Ok(())
    }

    /// The old name of [`remove`](Self::remove).
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    #[deprecated(
        since = "0.2.0",
        note = "use PosixQueue::remove, the spelling every type uses"
    )]
    pub fn unlink(name: &str) -> Result<()> {
        PosixQueue::remove(name)
    }

    fn from_mqd(mqd: libc::mqd_t, object: String) -> Result<PosixQueue> {
        let mut queue = PosixQueue {
            mqd,
            attributes: QueueAttributes {
                capacity: 0,
                max_message_size: 0,
                depth: 0,
            },
            object,
        };
        queue.attributes = queue.attributes()?;
        Ok(queue)
    }

    /// The queue's sizes and how many messages it holds now.
    ///
    /// # Errors
    /// An OS error from `mq_getattr` (the descriptor is no longer valid).
    pub fn attributes(&self) -> Result<QueueAttributes> {
        // SAFETY: all-zero mq_attr is a valid out-parameter.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        // SAFETY: mqd is open; attr is a valid out-parameter.
        if unsafe { libc::mq_getattr(self.mqd, &mut attr) } == -1 {
            return Err(last_error("mq_getattr", &self.object));
        }
        Ok(QueueAttributes {
            capacity: attr.mq_maxmsg as usize,
            max_message_size: attr.mq_msgsize as usize,
            depth: attr.mq_curmsgs as usize,
        })
    }

    /// Sends with a priority (higher is received first), waiting until `deadline`.
    ///
    /// # Errors
    /// [`Error::Full`]/[`Error::Timeout`], [`Error::MessageTooLarge`].
    pub fn send_priority(&mut self, msg: &[u8], priority: u32, deadline: Deadline) -> Result<()> {
        check_size(msg.len(), self.attributes.max_message_size)?;
        loop {
            let result = match deadline.remaining() {
                // SAFETY: mqd is open; msg is valid for msg.len() bytes.
                None => unsafe {
                    libc::mq_send(self.mqd, msg.as_ptr().cast(), msg.len(), priority)
                },
                Some(left) => {
                    let at = realtime_deadline(left);
                    // SAFETY: as above; `at` is a valid timespec.
                    unsafe {
                        libc::mq_timedsend(self.mqd, msg.as_ptr().cast(), msg.len(), priority, &at)
                    }
                }
            };
            if result == 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ETIMEDOUT) | Some(libc::EAGAIN) => return Err(deadline.send_expired()),
                Some(libc::EMSGSIZE) => {
                    return Err(Error::MessageTooLarge {
                        size: msg.len(),
                        max: self.attributes.max_message_size,
                    })
                }
                _ => return Err(Error::os("mq_send", self.object.clone(), err)),
            }
        }
    }
}

impl MessageSender for PosixQueue {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        self.send_priority(msg, 0, deadline)
    }

    fn max_message_size(&self) -> usize {
        self.attributes.max_message_size
    }
}

impl MessageReceiver for PosixQueue {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        buf.clear();
        buf.resize(self.attributes.max_message_size, 0);
        let mut priority: libc::c_uint = 0;
        loop {
            let received = match deadline.remaining() {
                // SAFETY: mqd is open; buf holds max_message_size bytes, as mq_receive needs.
                None => unsafe {
                    libc::mq_receive(self.mqd, buf.as_mut_ptr().cast(), buf.len(), &mut priority)
                },
                Some(left) => {
                    let at = realtime_deadline(left);
                    // SAFETY: as above; `at` is a valid timespec.
                    unsafe {
                        libc::mq_timedreceive(
                            self.mqd,
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            &mut priority,
                            &at,
                        )
                    }
                }
            };
            if received >= 0 {
                buf.truncate(received as usize);
                return Ok(Metadata {
                    priority: Some(priority),
                    ..Metadata::default()
                });
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ETIMEDOUT) | Some(libc::EAGAIN) => {
                    buf.clear();
                    return Err(deadline.recv_expired());
                }
                _ => {
                    buf.clear();
                    return Err(Error::os("mq_receive", self.object.clone(), err));
                }
            }
        }
    }
}

/// The queue's descriptor: on Linux an `mqd_t` is a file descriptor, readable while a
/// message waits and writable while there is room (`mq_overview(7)`), so a
/// [`WaitSet`](crate::waitset::WaitSet) or an async receive can poll it.
impl std::os::fd::AsFd for PosixQueue {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: on Linux an mqd_t is an open file descriptor; it stays open until Drop
        // closes it, which the borrow of `self` outlives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.mqd) }
    }
}

impl Drop for PosixQueue {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we own, once.
        unsafe { libc::mq_close(self.mqd) };
    }
}
