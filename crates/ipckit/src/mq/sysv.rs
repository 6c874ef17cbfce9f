//! System V message queues (`msgget`, `msgsnd`, `msgrcv`): addressed by a key (or a path,
//! through `ftok`), persistent until removed, every message typed, and receivable by type.
//!
//! [`SysvQueue::recv_type`] follows the System V rules: type 0 takes the first message of any
//! type; a positive type the first message of exactly that type; a negative type the message
//! with the lowest type at or below its absolute value.
//!
//! System V has no timed receive: a timed operation polls with `IPC_NOWAIT`, backing off from
//! 50 µs to 5 ms between tries. A blocking operation blocks in the kernel.
//!
//! # References
//! - [`msgop(2)`](https://man7.org/linux/man-pages/man2/msgop.2.html),
//!   [`sysvipc(7)`](https://man7.org/linux/man-pages/man7/sysvipc.7.html)

use std::time::Duration;

use super::last_error;
use crate::error::{Error, Result};
use crate::link::{check_size, Deadline, MessageReceiver, MessageSender, Metadata};

const TYPE_LEN: usize = std::mem::size_of::<libc::c_long>();

/// An open System V message queue. `send` uses type 1; `recv` takes any type.
#[derive(Debug)]
pub struct SysvQueue {
    key: i32,
    id: i32,
    max: usize,
    object: String,
    buf: Vec<u8>,
}

impl SysvQueue {
    /// The key `ftok(path, project)` gives.
    ///
    /// # Errors
    /// As [`SysvSegment::key_from_path`](crate::shm::SysvSegment::key_from_path):
    /// [`Error::NotFound`] if `path` does not exist, [`Error::PermissionDenied`] if it cannot be
    /// reached, [`Error::InvalidArgument`] if it contains a NUL byte.
    pub fn key_from_path(path: &std::path::Path, project: u8) -> Result<i32> {
        crate::shm::SysvSegment::key_from_path(path, project)
    }

    /// Creates a queue under `key`, exclusively, with `mode`.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a queue has this key, [`Error::LimitReached`] when the
    /// system has its most queues (`/proc/sys/kernel/msgmni`); another OS error as
    /// [`Error::Os`].
    pub fn create(key: i32, mode: u32) -> Result<SysvQueue> {
        let queue = SysvQueue::get(
            key,
            libc::IPC_CREAT | libc::IPC_EXCL | (mode as i32 & 0o777),
        )?;
        crate::registry::record(
            crate::registry::Kind::SysvQueue,
            &crate::registry::sysv_object(key, queue.id),
        );
        Ok(queue)
    }

    /// Opens the queue under `key`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no queue has this key; [`Error::PermissionDenied`] if its mode
    /// lets the caller neither read nor write it; another OS error as [`Error::Os`].
    pub fn open(key: i32) -> Result<SysvQueue> {
        SysvQueue::get(key, 0)
    }

    fn get(key: i32, flags: i32) -> Result<SysvQueue> {
        let object = format!("System V queue {key:#x}");
        // SAFETY: plain system call.
        let id = unsafe { libc::msgget(key, flags) };
        if id == -1 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOSPC) {
                return Err(Error::LimitReached {
                    object,
                    limit: "/proc/sys/kernel/msgmni".into(),
                    source: err,
                });
            }
            return Err(Error::os("msgget", object, err));
        }
        let mut queue = SysvQueue {
            key,
            id,
            max: 8192,
            object,
            buf: Vec::new(),
        };
        queue.max = std::fs::read_to_string("/proc/sys/kernel/msgmax")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(8192);
        Ok(queue)
    }

    /// The kernel's id of the queue (the `msqid` column of `ipcs -q`).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Removes the queue now (`IPC_RMID`); blocked peers get [`Error::Disconnected`].
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] unless the caller owns or created the queue (or is
    /// privileged); [`Error::Os`] (`EINVAL`) if it was already removed.
    pub fn remove(&self) -> Result<()> {
        // SAFETY: IPC_RMID reads no buffer.
        if unsafe { libc::msgctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) } == -1 {
            return Err(last_error("msgctl(IPC_RMID)", &self.object));
        }
        crate::registry::forget(
            crate::registry::Kind::SysvQueue,
            &crate::registry::sysv_object(self.key, self.id),
        );
        Ok(())
    }

    /// Messages in the queue now, and its size limit in bytes.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] without read permission on the queue; [`Error::Os`]
    /// (`EINVAL`) if it was removed.
    pub fn stat(&self) -> Result<(usize, usize)> {
        // SAFETY: all-zero msqid_ds is a valid out-parameter.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT fills `ds`.
        if unsafe { libc::msgctl(self.id, libc::IPC_STAT, &mut ds) } == -1 {
            return Err(last_error("msgctl(IPC_STAT)", &self.object));
        }
        Ok((ds.msg_qnum as usize, ds.msg_qbytes as usize))
    }

    fn map_errno(
        &self,
        op: &'static str,
        err: std::io::Error,
        deadline: Deadline,
        sending: bool,
    ) -> Error {
        match err.raw_os_error() {
            Some(libc::EIDRM) | Some(libc::EINVAL) => Error::Disconnected,
            Some(libc::EAGAIN) | Some(libc::ENOMSG) if sending => deadline.send_expired(),
            Some(libc::EAGAIN) | Some(libc::ENOMSG) => deadline.recv_expired(),
            _ => Error::os(op, self.object.clone(), err),
        }
    }

    /// Runs `attempt` (with `IPC_NOWAIT` unless blocking) until it succeeds or `deadline`.
    fn retry<T>(
        &mut self,
        deadline: Deadline,
        mut attempt: impl FnMut(&mut Self, i32) -> std::result::Result<T, std::io::Error>,
        op: &'static str,
        sending: bool,
    ) -> Result<T> {
        let mut pause = Duration::from_micros(50);
        loop {
            let flags = if deadline == Deadline::Never {
                0
            } else {
                libc::IPC_NOWAIT
            };
            match attempt(self, flags) {
                Ok(v) => return Ok(v),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOMSG))
                        && !deadline.expired() =>
                {
                    let left = deadline.remaining().unwrap_or(pause);
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(e) => return Err(self.map_errno(op, e, deadline, sending)),
            }
        }
    }

    /// Sends `msg` as a message of type `msg_type` (which must be positive).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a type below 1; [`Error::Full`]/[`Error::Timeout`];
    /// [`Error::MessageTooLarge`] over `/proc/sys/kernel/msgmax`; [`Error::Disconnected`] if
    /// the queue was removed; [`Error::PermissionDenied`] without write permission; another
    /// OS error as [`Error::Os`].
    pub fn send_typed(&mut self, msg_type: i64, msg: &[u8], deadline: Deadline) -> Result<()> {
        if msg_type < 1 {
            return Err(Error::InvalidArgument(format!(
                "System V message types start at 1, not {msg_type}"
            )));
        }
        check_size(msg.len(), self.max)?;
        let mut packet = Vec::with_capacity(TYPE_LEN + msg.len());
        packet.extend_from_slice(&(msg_type as libc::c_long).to_ne_bytes());
        packet.extend_from_slice(msg);
        let id = self.id;
        self.retry(
            deadline,
            move |_, flags| {
                // SAFETY: `packet` is a struct msgbuf: a c_long type followed by msg.len() bytes.
                let rc = unsafe { libc::msgsnd(id, packet.as_ptr().cast(), msg.len(), flags) };
                if rc == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            },
            "msgsnd",
            true,
        )
    }

    /// Receives by the System V rules for `msg_type` (see the module docs).
    ///
    /// # Errors
    /// [`Error::Empty`] (for [`Deadline::Now`]) or [`Error::Timeout`] when no matching
    /// message came by `deadline`; [`Error::Disconnected`] if the queue was removed;
    /// [`Error::PermissionDenied`] without read permission; another OS error as
    /// [`Error::Os`] (`E2BIG` for a message longer than `/proc/sys/kernel/msgmax` was when
    /// this handle opened the queue: the limit was lowered after the message was sent).
    pub fn recv_type(
        &mut self,
        msg_type: i64,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<Metadata> {
        let id = self.id;
        let max = self.max;
        let mut packet = std::mem::take(&mut self.buf);
        packet.resize(TYPE_LEN + max, 0);
        let received = self.retry(
            deadline,
            |_, flags| {
                // SAFETY: `packet` has room for the type and `max` bytes, as msgrcv is told.
                let n = unsafe {
                    libc::msgrcv(
                        id,
                        packet.as_mut_ptr().cast(),
                        max,
                        msg_type as libc::c_long,
                        flags,
                    )
                };
                if n == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            },
            "msgrcv",
            false,
        );
        let result = received.map(|n| {
            let got_type =
                libc::c_long::from_ne_bytes(packet[..TYPE_LEN].try_into().expect("c_long"));
            buf.clear();
            buf.extend_from_slice(&packet[TYPE_LEN..TYPE_LEN + n]);
            Metadata {
                msg_type: Some(got_type as i64),
                ..Metadata::default()
            }
        });
        self.buf = packet;
        result
    }
}

impl MessageSender for SysvQueue {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> Result<()> {
        self.send_typed(1, msg, deadline)
    }

    fn max_message_size(&self) -> usize {
        self.max
    }
}

impl MessageReceiver for SysvQueue {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<Metadata> {
        self.recv_type(0, buf, deadline)
    }
}
