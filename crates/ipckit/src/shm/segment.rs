//! Shared memory segments: named POSIX (`shm_open` + `ftruncate` + `mmap`), anonymous
//! (`memfd_create`, handed to another process as a file descriptor), and System V
//! (`shmget`/`shmat`).
//!
//! Every ipckit segment starts with a 64-byte header of its own: magic, layout version, kind
//! (what is inside: `"mailbox"`, `"topic"`...), payload length, creator pid and time. The
//! header is written on creation (magic last) and checked on every open: a wrong magic,
//! version or kind, or a file shorter than the header says, is [`Error::Corrupt`].
//!
//! Named segments live in `/dev/shm/ipckit.<kind>.<name>`, so `ls /dev/shm` shows them.
//!
//! Segments defend themselves against their neighbours (see "Threat model" in
//! `docs/ARCHITECTURE.md`):
//! - creation reserves the memory (`fallocate`), so a full `/dev/shm` is [`Error::NoSpace`]
//!   at once, never a `SIGBUS` later; a sparse file (an absurd size written by hand) is
//!   `Corrupt` on open, so no tool touches more memory than the file really holds;
//! - every mapping is protected against `SIGBUS` (the [`fault`] module): a
//!   segment truncated by another process becomes poisoned, and
//!   [`Segment::check_intact`] reports it as `Corrupt`;
//! - an open never follows a symlink and refuses a file owned by anyone but the caller or
//!   root ([`Error::PermissionDenied`] naming the owner) unless the caller trusts that owner
//!   explicitly ([`Trust`]).
//!
//! ```
//! use ipckit::shm::Segment;
//! # let name = format!("doc-seg-{}", std::process::id());
//! let seg = Segment::create("demo", &name, 4096, 0o600)?;
//! assert_eq!(seg.payload_len(), 4096);
//! let again = Segment::open("demo", &name)?;            // another process would do this
//! assert_eq!(again.payload_len(), 4096);
//! assert!(Segment::open("mailbox", &name).is_err());   // wrong kind: Corrupt
//! Segment::unlink("demo", &name)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # References
//! - [`shm_open(3)`](https://man7.org/linux/man-pages/man3/shm_open.3.html),
//!   [`memfd_create(2)`](https://man7.org/linux/man-pages/man2/memfd_create.2.html),
//!   [`shmget(2)`](https://man7.org/linux/man-pages/man2/shmget.2.html)

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::fault;
use super::layout::check_identity;
use crate::error::{Error, Result};

/// Bytes of the segment header; the payload starts this far in (cache-line aligned).
pub const HEADER_LEN: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"ipckitSG");
const VERSION: u32 = 1;
const KIND_LEN: usize = 24;
/// Longest name ipckit accepts (the file name must fit in `NAME_MAX`).
pub const MAX_NAME: usize = 200;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: u32,
    creator_pid: u32,
    payload_len: u64,
    created_unix_ns: u64,
    kind: [u8; KIND_LEN],
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);

/// Checks a name or kind before any file is touched: 1 to [`MAX_NAME`] bytes from the safe
/// set `[A-Za-z0-9._-]`, not starting with `.`. Nothing else (no `/`, no newline, no control
/// or non-ASCII character) can reach a file name, a queue name or `ipckit ls`'s table.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is wrong.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidArgument(format!("{what} {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME {
        return bad(&format!("is longer than {MAX_NAME} bytes"));
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "contains {c:?}: names are made of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

fn file_name(kind: &str, name: &str) -> Result<String> {
    check_name("kind", kind)?;
    if kind.len() > KIND_LEN || kind.contains('.') {
        return Err(Error::InvalidArgument(format!(
            "segment kind {kind:?} must be at most {KIND_LEN} bytes without '.'"
        )));
    }
    check_name("name", name)?;
    Ok(format!("ipckit.{kind}.{name}"))
}

fn describe(kind: &str, name: &str) -> String {
    format!("{kind} {name:?}")
}

/// Where named segments live.
const SHM_DIR: &str = "/dev/shm";

/// Opens `/dev/shm/<file>` itself: never through a symlink (`O_NOFOLLOW`), never blocking
/// on a FIFO someone put there (`O_NONBLOCK`; it is refused as not a regular file later).
fn open_file(file: &str, flags: OFlags, mode: u32, object: &str) -> Result<OwnedFd> {
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
fn owner_name(uid: u32) -> String {
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

/// A mapped shared memory segment: ipckit's header, then `payload_len()` bytes.
#[derive(Debug)]
pub struct Segment {
    base: NonNull<u8>,
    map_len: usize,
    payload_len: usize,
    /// The descriptor of an anonymous (memfd) segment, to hand to another process.
    fd: Option<OwnedFd>,
    /// The descriptor of a named segment, kept for [`Segment::check_file`].
    file: Option<OwnedFd>,
    /// Whom errors name: `mailbox "jobs"`.
    object: String,
    /// The owner of the file (its uid).
    owner: u32,
    /// The mapping's entry in the SIGBUS table; None only while dropping.
    guard: Option<fault::Guard>,
}

// SAFETY: the mapping is plain shared memory; what is placed in it decides how it is
// accessed (atomics, or data guarded by them).
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

/// Maps `len` bytes of `fd` shared and records the mapping in the SIGBUS table.
fn map(fd: BorrowedFd<'_>, len: usize, object: &str) -> Result<(NonNull<u8>, fault::Guard)> {
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

/// Reserves `len` bytes for a new segment file (`fallocate`: tmpfs allocates pages on first
/// touch, so without this a file bigger than the free space is created fine and every
/// process touching it later dies of SIGBUS).
fn reserve(fd: &OwnedFd, len: usize, object: &str, place: &str) -> Result<()> {
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

impl Segment {
    /// Creates the named segment `/dev/shm/ipckit.<kind>.<name>` with `payload_len` zeroed
    /// bytes, exclusively, with exactly `mode` (the umask does not apply).
    ///
    /// Its memory is reserved at once: a segment that does not fit in `/dev/shm` fails
    /// here, and nothing is left behind.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name,
    /// [`Error::PermissionDenied`], [`Error::NoSpace`] when `/dev/shm` has not enough room.
    pub fn create(kind: &str, name: &str, payload_len: usize, mode: u32) -> Result<Segment> {
        let file = file_name(kind, name)?;
        let object = describe(kind, name);
        let fd = open_file(
            &file,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            mode,
            &object,
        )?;
        let built = Segment::build(fd, kind, payload_len, mode, &object, false);
        if built.is_err() {
            let _ = rustix::shm::unlink(file.as_str());
        }
        built
    }

    /// An anonymous segment (`memfd_create`): no name, nothing to clean up; hand
    /// [`Segment::fd`] to another process (over a Unix socket) to share it.
    ///
    /// Once sized, the memfd is sealed against shrinking and growing (`F_SEAL_SHRINK |
    /// F_SEAL_GROW | F_SEAL_SEAL`): a process it is handed to cannot truncate it under the
    /// creator's mapping (that would be SIGBUS), its `ftruncate` fails with `EPERM`.
    pub fn anonymous(kind: &str, payload_len: usize) -> Result<Segment> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let file = file_name(kind, "anonymous")?;
        let fd = rustix::fs::memfd_create(
            file.as_str(),
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| Error::os("memfd_create", kind.to_string(), e))?;
        let object = format!("anonymous {kind}");
        let segment = Segment::build(fd, kind, payload_len, 0o600, &object, true)?;
        let fd = segment
            .fd()
            .expect("anonymous segments keep their descriptor");
        rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| Error::os("fcntl(F_ADD_SEALS)", object, e))?;
        Ok(segment)
    }

    fn build(
        fd: OwnedFd,
        kind: &str,
        payload_len: usize,
        mode: u32,
        object: &str,
        keep_fd: bool,
    ) -> Result<Segment> {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::os("fchmod", object, e))?;
        let map_len = payload_len
            .checked_add(HEADER_LEN)
            .ok_or_else(|| Error::InvalidArgument(format!("{object}: size overflows")))?;
        let place = if keep_fd { "memory (memfd)" } else { SHM_DIR };
        reserve(&fd, map_len, object, place)?;
        let (base, guard) = map(fd.as_fd(), map_len, object)?;
        // SAFETY: the mapping is at least HEADER_LEN bytes, page-aligned, and nobody accepts
        // it before the magic is stored (last, with Release).
        let header = unsafe { &mut *(base.as_ptr() as *mut Header) };
        header.version = VERSION;
        header.creator_pid = std::process::id();
        header.payload_len = payload_len as u64;
        header.created_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        header.kind[..kind.len()].copy_from_slice(kind.as_bytes());
        // SYNC: pairs with the Acquire load of the magic in `attach`.
        header.magic.store(MAGIC, Ordering::Release);
        let (fd, file) = if keep_fd {
            (Some(fd), None)
        } else {
            (None, Some(fd))
        };
        Ok(Segment {
            base,
            map_len,
            payload_len,
            fd,
            file,
            object: object.to_string(),
            owner: rustix::process::geteuid().as_raw(),
            guard: Some(guard),
        })
    }

    /// Opens the named segment, checking its header; only a file owned by the caller or by
    /// root is accepted (see [`Segment::open_trusting`]).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`] (also for a file owned by another
    /// user, or a symlink), [`Error::Corrupt`] (wrong magic, version or kind, truncated,
    /// sparse, or not a regular file).
    pub fn open(kind: &str, name: &str) -> Result<Segment> {
        Segment::open_trusting(kind, name, Trust::default())
    }

    /// Opens the named segment, accepting a file whose owner `trust` accepts.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_trusting(kind: &str, name: &str, trust: Trust) -> Result<Segment> {
        let file = file_name(kind, name)?;
        let object = describe(kind, name);
        let fd = open_file(&file, OFlags::RDWR, 0, &object)?;
        Segment::attach(
            fd,
            kind,
            &object,
            false,
            trust,
            &format!("{SHM_DIR}/{file}"),
        )
    }

    /// Maps an anonymous segment received as a descriptor, checking its header. Whoever
    /// handed over the descriptor is trusted with it, whatever its owner.
    pub fn from_fd(fd: OwnedFd, kind: &str) -> Result<Segment> {
        Segment::attach(
            fd,
            kind,
            &format!("anonymous {kind}"),
            true,
            Trust::AnyOwner,
            "memfd",
        )
    }

    fn attach(
        fd: OwnedFd,
        kind: &str,
        object: &str,
        keep_fd: bool,
        trust: Trust,
        path: &str,
    ) -> Result<Segment> {
        let corrupt = |detail: String| Error::corrupt(object, detail);
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", object, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(corrupt(format!("{path} is not a regular file")));
        }
        let me = rustix::process::geteuid().as_raw();
        if !trust.accepts(stat.st_uid, me) {
            return Err(Error::PermissionDenied {
                object: format!(
                    "{object}: {path} belongs to {}, who is neither you (uid {me}) nor root; \
                     ipckit does not read or write another user's segment unless asked to \
                     (Trust::AlsoUid({}), or `allow_owner`)",
                    owner_name(stat.st_uid),
                    stat.st_uid
                ),
            });
        }
        let size = stat.st_size as usize;
        if size < HEADER_LEN {
            return Err(corrupt(format!(
                "{size} bytes is shorter than ipckit's {HEADER_LEN}-byte header (truncated, or still being created)"
            )));
        }
        // ipckit reserves every byte it creates; a sparse file would allocate its pages
        // when touched, and on a full /dev/shm each touch is a SIGBUS.
        let allocated = (stat.st_blocks as u64).saturating_mul(512);
        if allocated < size as u64 {
            return Err(corrupt(format!(
                "the file is {size} bytes long but only {allocated} are allocated (a sparse \
                 file: not made by ipckit, which reserves every byte it creates)"
            )));
        }
        let (base, guard) = map(fd.as_fd(), size, object)?;
        let segment = Segment {
            base,
            map_len: size,
            payload_len: 0,
            fd: None,
            file: None,
            object: object.to_string(),
            owner: stat.st_uid,
            guard: Some(guard),
        };
        // SAFETY: the mapping holds at least HEADER_LEN bytes, page-aligned, and the Header
        // starts with the magic and the version.
        unsafe { check_identity(base, MAGIC, VERSION, "segment", object)? };
        // SAFETY: plain fields inside the mapping, read once.
        let (payload_len, stored_kind) = unsafe {
            let h = base.as_ptr() as *const Header;
            (
                std::ptr::addr_of!((*h).payload_len).read_volatile(),
                std::ptr::addr_of!((*h).kind).read_volatile(),
            )
        };
        let stored = stored_kind.split(|&b| b == 0).next().unwrap_or(&[]);
        if stored != kind.as_bytes() {
            return Err(corrupt(format!(
                "it holds a {:?}, not a {kind:?}",
                String::from_utf8_lossy(stored)
            )));
        }
        if payload_len > (size - HEADER_LEN) as u64 {
            return Err(corrupt(format!(
                "its header announces {payload_len} bytes but the file holds {}",
                size - HEADER_LEN
            )));
        }
        let mut segment = segment;
        segment.payload_len = payload_len as usize;
        if keep_fd {
            segment.fd = Some(fd);
        } else {
            segment.file = Some(fd);
        }
        Ok(segment)
    }

    /// Removes the named segment; mappings stay valid until dropped.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not exist.
    pub fn unlink(kind: &str, name: &str) -> Result<()> {
        let file = file_name(kind, name)?;
        rustix::shm::unlink(file.as_str())
            .map_err(|e| Error::os("shm_unlink", describe(kind, name), e))
    }

    /// The names of every segment of `kind` in `/dev/shm`.
    pub fn list(kind: &str) -> Result<Vec<String>> {
        let prefix = format!("ipckit.{kind}.");
        let entries =
            std::fs::read_dir("/dev/shm").map_err(|e| Error::os("readdir", "/dev/shm", e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|f| f.strip_prefix(&prefix))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The payload: `payload_len()` bytes, 64-byte aligned, zeroed at creation.
    pub fn payload(&self) -> NonNull<u8> {
        // SAFETY: HEADER_LEN <= map_len: the payload starts inside the mapping.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(HEADER_LEN)) }
    }

    /// Length of the payload, in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The descriptor of an anonymous segment (to pass to another process).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// The uid that owns the segment's file.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// True once part of the mapping was lost (a `SIGBUS` replaced it by zeroes) or a check
    /// found the file shorter than the mapping. One atomic load.
    #[inline]
    pub fn is_poisoned(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.is_poisoned())
    }

    /// `Ok` while the whole mapping is the file's; [`Error::Corrupt`] once it is poisoned.
    /// Cheap (one atomic load): call it on entry to an operation and before reporting its
    /// success, since whatever was read after the loss is zeroes, not the peers' data.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the segment and what happened to it.
    #[inline]
    pub fn check_intact(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.lost());
        }
        Ok(())
    }

    /// [`Segment::check_intact`], plus an `fstat` of the file: a file now shorter than the
    /// mapping poisons the segment before any page is touched. A system call: for slow
    /// paths (before sleeping, on a liveness check), not for every message.
    ///
    /// # Errors
    /// [`Error::Corrupt`] as for `check_intact`.
    pub fn check_file(&self) -> Result<()> {
        self.check_intact()?;
        let fd = self.file.as_ref().or(self.fd.as_ref());
        if let Some(stat) = fd.and_then(|fd| rustix::fs::fstat(fd).ok()) {
            if (stat.st_size as u64) < self.map_len as u64 {
                if let Some(guard) = &self.guard {
                    guard.poison();
                }
                return Err(self.lost());
            }
        }
        Ok(())
    }

    /// The error for a poisoned segment, saying what the file looks like now.
    fn lost(&self) -> Error {
        let fd = self.file.as_ref().or(self.fd.as_ref());
        let size = fd
            .and_then(|fd| rustix::fs::fstat(fd).ok())
            .map(|s| s.st_size as u64);
        let detail = match size {
            Some(size) if size < self.map_len as u64 => format!(
                "it was truncated to {size} bytes by another process (it was {} bytes); its \
                 messages are lost and every operation on it fails: remove and recreate it",
                self.map_len
            ),
            _ => "part of its memory could not be paged in (SIGBUS): it was truncated by \
                  another process (and perhaps grown again), or /dev/shm ran out of space; \
                  every operation on it fails: remove and recreate it"
                .to_string(),
        };
        Error::corrupt(self.object.clone(), detail)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Forget the range first: once unmapped, the address may be reused by another mapping
        // that the SIGBUS handler must not touch.
        drop(self.guard.take());
        // SAFETY: we mapped exactly this range and hand out no references that outlive us
        // (the types built on a segment keep it alive while they use it).
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

/// A System V shared memory segment (`shmget`/`shmat`), addressed by a key (or a path and
/// a project id, through `ftok`). It persists until [`SysvSegment::remove`].
#[derive(Debug)]
pub struct SysvSegment {
    key: i32,
    id: i32,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: as for Segment.
unsafe impl Send for SysvSegment {}
// SAFETY: as for Segment.
unsafe impl Sync for SysvSegment {}

impl SysvSegment {
    /// The key `ftok(path, project)` gives.
    ///
    /// # Errors
    /// [`Error::NotFound`] if `path` does not exist.
    pub fn key_from_path(path: &std::path::Path, project: u8) -> Result<i32> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidArgument("path contains a NUL byte".into()))?;
        // SAFETY: a valid NUL-terminated path.
        let key = unsafe { libc::ftok(c.as_ptr(), project as i32) };
        if key == -1 {
            return Err(Error::os(
                "ftok",
                path.display().to_string(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(key)
    }

    /// Creates a segment of `len` bytes under `key`, exclusively, with `mode`.
    pub fn create(key: i32, len: usize, mode: u32) -> Result<SysvSegment> {
        let segment = SysvSegment::get(
            key,
            len,
            libc::IPC_CREAT | libc::IPC_EXCL | (mode as i32 & 0o777),
        )?;
        crate::registry::record(
            crate::registry::Kind::SysvSegment,
            &crate::registry::sysv_object(key, segment.id),
        );
        Ok(segment)
    }

    /// Opens the segment under `key`.
    pub fn open(key: i32) -> Result<SysvSegment> {
        SysvSegment::get(key, 0, 0)
    }

    fn get(key: i32, len: usize, flags: i32) -> Result<SysvSegment> {
        let object = format!("System V segment {key:#x}");
        // SAFETY: plain system call.
        let id = unsafe { libc::shmget(key, len, flags) };
        if id == -1 {
            return Err(Error::os("shmget", object, std::io::Error::last_os_error()));
        }
        // SAFETY: an all-zero shmid_ds is a valid out-parameter.
        let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `stat` is a valid out-parameter for IPC_STAT.
        if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut stat) } == -1 {
            return Err(Error::os(
                "shmctl(IPC_STAT)",
                object,
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: attaching a segment we just looked up, at an address the kernel picks.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if addr as isize == -1 {
            return Err(Error::os("shmat", object, std::io::Error::last_os_error()));
        }
        Ok(SysvSegment {
            key,
            id,
            base: NonNull::new(addr.cast()).expect("shmat returned a non-null address"),
            len: stat.shm_segsz,
        })
    }

    /// The segment's memory and length.
    pub fn memory(&self) -> (NonNull<u8>, usize) {
        (self.base, self.len)
    }

    /// The kernel's id of the segment (the `shmid` column of `ipcs -m`).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Marks the segment for removal (it goes when the last process detaches).
    pub fn remove(&self) -> Result<()> {
        // SAFETY: IPC_RMID takes no buffer.
        if unsafe { libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) } == -1 {
            return Err(Error::os(
                "shmctl(IPC_RMID)",
                format!("System V segment {}", self.id),
                std::io::Error::last_os_error(),
            ));
        }
        crate::registry::forget(
            crate::registry::Kind::SysvSegment,
            &crate::registry::sysv_object(self.key, self.id),
        );
        Ok(())
    }

    /// Detaches the segment from this process (`shmdt`), as dropping it does, but reporting
    /// a failure. The segment itself stays until [`SysvSegment::remove`] and the last detach.
    ///
    /// # Errors
    /// The OS error `shmdt` gives (the address is ours, so none is expected).
    #[doc(alias = "shmdt")]
    pub fn detach(self) -> Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: detaching the address shmat gave us, once: `this` is never dropped, and no
        // reference into the memory outlives `self`, which the call consumed.
        if unsafe { libc::shmdt(this.base.as_ptr().cast()) } == -1 {
            return Err(Error::os(
                "shmdt",
                format!("System V segment {}", this.id),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// What the kernel knows about the segment (`shmctl(IPC_STAT)`): size, attachments,
    /// creator, owner, permissions, and whether it is marked for removal.
    ///
    /// # Errors
    /// [`Error::NotFound`]-like OS error if the segment is gone (removed and detached by all),
    /// [`Error::PermissionDenied`] without read permission.
    #[doc(alias = "shmctl")]
    pub fn stat(&self) -> Result<SysvSegmentStat> {
        // SAFETY: an all-zero shmid_ds is a valid out-parameter.
        let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `stat` is a valid out-parameter for IPC_STAT.
        if unsafe { libc::shmctl(self.id, libc::IPC_STAT, &mut stat) } == -1 {
            return Err(Error::os(
                "shmctl(IPC_STAT)",
                format!("System V segment {}", self.id),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(SysvSegmentStat {
            size: stat.shm_segsz,
            attached: stat.shm_nattch as u64,
            creator_pid: stat.shm_cpid as u32,
            last_pid: stat.shm_lpid as u32,
            owner_uid: stat.shm_perm.uid,
            mode: u32::from(stat.shm_perm.mode) & 0o777,
            // SHM_DEST (0o1000 in the mode): IPC_RMID was called, the id goes at the last detach.
            marked_for_removal: u32::from(stat.shm_perm.mode) & 0o1000 != 0,
        })
    }
}

/// A System V segment as `shmctl(IPC_STAT)` reports it ([`SysvSegment::stat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SysvSegmentStat {
    /// Size in bytes, as created.
    pub size: usize,
    /// Attachments now, in every process (`shm_nattch`, the `nattch` column of `ipcs -m`).
    pub attached: u64,
    /// The process that created it.
    pub creator_pid: u32,
    /// The process that attached or detached last.
    pub last_pid: u32,
    /// The owner's user id.
    pub owner_uid: u32,
    /// Permission bits (`0o600`...).
    pub mode: u32,
    /// `IPC_RMID` was called: the segment goes when the last process detaches.
    pub marked_for_removal: bool,
}

impl Drop for SysvSegment {
    fn drop(&mut self) {
        // SAFETY: detaching the address shmat gave us; no references outlive self.
        unsafe { libc::shmdt(self.base.as_ptr().cast()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(tag: &str) -> String {
        format!("unit-seg-{tag}-{}", std::process::id())
    }

    /// Removes what a test created even when it fails half-way.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for kind in ["kind", "other"] {
                let _ = Segment::unlink(kind, &self.0);
            }
        }
    }

    #[test]
    fn names_are_checked_before_any_file() {
        for bad in ["", "a/b", "..", &"x".repeat(300)] {
            assert!(matches!(
                Segment::create("k", bad, 8, 0o600),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(matches!(
            Segment::create("a.b", "n", 8, 0o600),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn header_is_checked_on_open() {
        let n = name("hdr");
        let _cleanup = Cleanup(n.clone());
        let seg = Segment::create("kind", &n, 100, 0o600).unwrap();
        assert_eq!(seg.payload_len(), 100);
        assert_eq!(seg.payload().as_ptr() as usize % 64, 0);
        assert!(matches!(
            Segment::create("kind", &n, 100, 0o600),
            Err(Error::AlreadyExists { .. })
        ));
        // The same file under another kind's name: the header's kind gives it away.
        std::fs::hard_link(
            format!("/dev/shm/ipckit.kind.{n}"),
            format!("/dev/shm/ipckit.other.{n}"),
        )
        .unwrap();
        assert!(matches!(
            Segment::open("other", &n),
            Err(Error::Corrupt { .. })
        ));
        Segment::unlink("other", &n).unwrap();
        // Scribble on the magic: corrupt, not a crash.
        let path = format!("/dev/shm/ipckit.kind.{n}");
        std::os::unix::fs::FileExt::write_at(
            &std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
            b"garbage!",
            0,
        )
        .unwrap();
        assert!(matches!(
            Segment::open("kind", &n),
            Err(Error::Corrupt { .. })
        ));
        // Truncated below the header.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(matches!(
            Segment::open("kind", &n),
            Err(Error::Corrupt { .. })
        ));
        Segment::unlink("kind", &n).unwrap();
        assert!(matches!(
            Segment::open("kind", &n),
            Err(Error::NotFound { .. })
        ));
        drop(seg);
    }

    #[test]
    fn a_header_announcing_more_than_the_file_holds_is_corrupt() {
        let n = name("short");
        let _cleanup = Cleanup(n.clone());
        let _seg = Segment::create("kind", &n, 4096, 0o600).unwrap();
        let path = format!("/dev/shm/ipckit.kind.{n}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(HEADER_LEN as u64 + 100)
            .unwrap();
        assert!(matches!(
            Segment::open("kind", &n),
            Err(Error::Corrupt { .. })
        ));
        Segment::unlink("kind", &n).unwrap();
    }

    #[test]
    fn a_symlink_or_a_fifo_under_the_name_is_refused_without_blocking() {
        let n = name("planted");
        let _cleanup = Cleanup(n.clone());
        let _target = Segment::create("other", &n, 64, 0o600).unwrap();
        let path = format!("/dev/shm/ipckit.kind.{n}");
        std::os::unix::fs::symlink(format!("/dev/shm/ipckit.other.{n}"), &path).unwrap();
        let followed = Segment::open("kind", &n);
        assert!(
            matches!(&followed, Err(Error::PermissionDenied { object }) if object.contains("symbolic link")),
            "{followed:?}"
        );
        std::fs::remove_file(&path).unwrap();
        // A FIFO: opening it for reading and writing never blocks, and it is not a segment.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path.as_str(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let fifo = Segment::open("kind", &n);
        assert!(
            matches!(&fifo, Err(Error::Corrupt { detail, .. }) if detail.contains("regular")),
            "{fifo:?}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_the_caller_did_not_make_is_refused_unless_trusted() {
        assert!(Trust::OwnerOrRoot.accepts(1000, 1000));
        assert!(Trust::OwnerOrRoot.accepts(0, 1000));
        assert!(!Trust::OwnerOrRoot.accepts(1001, 1000));
        assert!(Trust::AlsoUid(1001).accepts(1001, 1000));
        assert!(!Trust::AlsoUid(1001).accepts(1002, 1000));
        assert!(Trust::AnyOwner.accepts(1002, 1000));
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let n = name("foreign");
        let _cleanup = Cleanup(n.clone());
        drop(Segment::create("kind", &n, 64, 0o666).unwrap());
        let path = format!("/dev/shm/ipckit.kind.{n}");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let refused = Segment::open("kind", &n);
        assert!(
            matches!(&refused, Err(Error::PermissionDenied { object }) if object.contains("uid 65534")),
            "{refused:?}"
        );
        let trusted = Segment::open_trusting("kind", &n, Trust::AlsoUid(65534)).unwrap();
        assert_eq!(trusted.owner(), 65534);
    }

    #[test]
    fn creation_reserves_the_memory_and_open_refuses_a_sparse_file() {
        let n = name("sparse");
        let _cleanup = Cleanup(n.clone());
        drop(Segment::create("kind", &n, 1 << 20, 0o600).unwrap());
        let path = format!("/dev/shm/ipckit.kind.{n}");
        let meta = std::fs::metadata(&path).unwrap();
        assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 >= meta.len());
        // Punch the pages out: the same size, nothing behind it.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        rustix::fs::fallocate(
            &file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            4096,
            meta.len() - 4096,
        )
        .unwrap();
        let sparse = Segment::open("kind", &n);
        assert!(
            matches!(&sparse, Err(Error::Corrupt { detail, .. }) if detail.contains("sparse")),
            "{sparse:?}"
        );
    }

    #[test]
    fn anonymous_segments_travel_as_descriptors() {
        let seg = Segment::anonymous("anon", 64).unwrap();
        // SAFETY: writing one byte of our own payload.
        unsafe { seg.payload().as_ptr().write(42) };
        let fd = seg.fd().unwrap().try_clone_to_owned().unwrap();
        // Sealed: whoever holds the descriptor cannot shrink it under our mapping.
        assert_eq!(rustix::fs::ftruncate(&fd, 0), Err(rustix::io::Errno::PERM));
        let again = Segment::from_fd(fd, "anon").unwrap();
        // SAFETY: reading one byte of the same memory through the second mapping.
        assert_eq!(unsafe { again.payload().as_ptr().read() }, 42);
        let fd = seg.fd().unwrap().try_clone_to_owned().unwrap();
        assert!(matches!(
            Segment::from_fd(fd, "other"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn system_v_segments_by_key() {
        let key = 0x1bc0_0000 | (std::process::id() as i32 & 0xffff);
        let seg = SysvSegment::create(key, 4096, 0o600).unwrap();
        let (ptr, len) = seg.memory();
        assert!(len >= 4096);
        // SAFETY: writing inside the attached segment.
        unsafe { ptr.as_ptr().write(7) };
        let again = SysvSegment::open(key).unwrap();
        // SAFETY: reading the same byte through the second attachment.
        assert_eq!(unsafe { again.memory().0.as_ptr().read() }, 7);
        assert!(matches!(
            SysvSegment::create(key, 4096, 0o600),
            Err(Error::AlreadyExists { .. })
        ));
        seg.remove().unwrap();
        assert!(
            SysvSegment::key_from_path(std::path::Path::new("/nonexistent-ipckit"), 1).is_err()
        );
        assert!(SysvSegment::key_from_path(std::path::Path::new("/tmp"), 1).is_ok());
    }
}
