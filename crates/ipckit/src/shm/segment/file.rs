//! The files behind named and anonymous segments: opening one without following links,
//! whose owner an open accepts ([`Trust`]), mapping it under the SIGBUS guard, and reserving
//! its memory up front.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::super::fault;
use crate::error::{Error, Result};

/// Where named segments live.
pub(super) const SHM_DIR: &str = "/dev/shm";

/// Opens `/dev/shm/<file>` itself: never through a symlink (`O_NOFOLLOW`), never blocking
/// on a FIFO someone put there (`O_NONBLOCK`; it is refused as not a regular file later).
pub(super) fn open_file(file: &str, flags: OFlags, mode: u32, object: &str) -> Result<OwnedFd> {
    let path = format!("{SHM_DIR}/{file}");
    rustix::fs::open(
        path.as_str(),
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => Error::PermissionDenied {
            object: format!("{object} ({path} is a symbolic link; ipckit never follows one)"),
        },
        other => Error::os("open", object, other),
    })
}

/// Whose segment files an open accepts. The default accepts only files owned by the caller
/// (its effective uid) or by root: a file another user put under the expected name (say,
/// before the real owner created it) could be read by them, and anything written into it
/// would be theirs to read.
///
/// ```
/// use ipckit::shm::segment::Trust;
/// assert!(Trust::default().accepts(0, 0));           // root's file, whoever we are
/// assert!(!Trust::default().accepts(65534, 1000));   // nobody's file, and we are 1000
/// assert!(Trust::AlsoUid(65534).accepts(65534, 1000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Trust {
    /// Files owned by the caller or by root (the default).
    #[default]
    OwnerOrRoot,
    /// Also files owned by this uid (a named peer the caller trusts).
    AlsoUid(u32),
    /// Any owner: for callers that share a segment with every user on purpose. The contents
    /// are still validated, but whatever is written into it is readable by its owner.
    AnyOwner,
}

impl Trust {
    /// Whether a file owned by `owner` is acceptable to a caller whose effective uid is `me`.
    pub fn accepts(self, owner: u32, me: u32) -> bool {
        owner == me
            || owner == 0
            || match self {
                Trust::OwnerOrRoot => false,
                Trust::AlsoUid(uid) => owner == uid,
                Trust::AnyOwner => true,
            }
    }
}

/// How the owner of a refused file is named: its uid, and its user name if `/etc/passwd`
/// has one.
pub(super) fn owner_name(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse() == Ok(uid)).then(|| name.to_string())
            })
        });
    match name {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// Maps `len` bytes of `fd` shared and records the mapping in the SIGBUS table.
pub(super) fn map(
    fd: BorrowedFd<'_>,
    len: usize,
    object: &str,
) -> Result<(NonNull<u8>, fault::Guard)> {
    // SAFETY: a fresh shared mapping of a file we hold open; nothing else in this process
    // refers to the address range the kernel picks.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(|e| Error::os("mmap", object, e))?;
    match fault::protect(ptr as usize, len, object) {
        Ok(guard) => Ok((
            NonNull::new(ptr.cast()).expect("mmap never returns null on success"),
            guard,
        )),
        Err(err) => {
            // SAFETY: unmapping the range mapped just above, which nothing refers to yet.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
            Err(err)
        }
    }
}

/// Memory the kernel could give without swapping (`MemAvailable` in `/proc/meminfo`), in
/// bytes; `None` where it does not say.
pub(super) fn memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Refuses an anonymous (memfd) segment larger than the memory available: nothing else bounds
/// a memfd, and reserving more than there is runs the machine out of memory (the OOM killer
/// then ends processes, not necessarily this one) instead of failing.
pub(super) fn check_memory(len: usize, object: &str) -> Result<()> {
    match memory_available() {
        Some(available) if len as u64 > available => Err(Error::NoSpace {
            object: object.to_string(),
            requested: len as u64,
            available,
            path: "memory (memfd)".to_string(),
        }),
        _ => Ok(()),
    }
}

/// Reserves `len` bytes for a new segment file (`fallocate`: tmpfs allocates pages on first
/// touch, so without this a file bigger than the free space is created fine and every
/// process touching it later dies of SIGBUS).
pub(super) fn reserve(fd: &OwnedFd, len: usize, object: &str, place: &str) -> Result<()> {
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, len as u64) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) | Err(rustix::io::Errno::NOMEM) => {
            let available = rustix::fs::fstatvfs(fd)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .unwrap_or(0);
            Err(Error::NoSpace {
                object: object.to_string(),
                requested: len as u64,
                available,
                path: place.to_string(),
            })
        }
        Err(rustix::io::Errno::FBIG) => Err(Error::LimitReached {
            object: object.to_string(),
            limit: "the largest file /dev/shm holds".into(),
            source: rustix::io::Errno::FBIG.into(),
        }),
        // A filesystem without fallocate: size the file the old way.
        Err(rustix::io::Errno::OPNOTSUPP) => {
            rustix::fs::ftruncate(fd, len as u64).map_err(|e| Error::os("ftruncate", object, e))
        }
        Err(other) => Err(Error::os("fallocate", object, other)),
    }
}
