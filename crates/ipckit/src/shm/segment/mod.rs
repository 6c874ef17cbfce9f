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

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FileType, Mode, OFlags};

use super::fault;
use super::layout::check_identity;
use crate::error::{Error, Result};
use file::{check_memory, map, open_file, owner_name, reserve, SHM_DIR};

mod file;
mod sysv;
#[cfg(test)]
mod tests;

pub use file::Trust;
pub use sysv::{SysvSegment, SysvSegmentStat};

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
        let (file, object, fd) = Segment::create_file(kind, name, mode)?;
        Segment::build_or_unlink(fd, kind, payload_len, mode, &object, &file)
    }

    /// Creates the file `/dev/shm/ipckit.<kind>.<name>` exclusively: its name, the object's
    /// description, and the descriptor.
    fn create_file(kind: &str, name: &str, mode: u32) -> Result<(String, String, OwnedFd)> {
        let file = file_name(kind, name)?;
        let object = describe(kind, name);
        let fd = open_file(
            &file,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            mode,
            &object,
        )?;
        Ok((file, object, fd))
    }

    /// Builds the segment in the new file `file`, or removes the file if that fails (nothing
    /// is left behind).
    fn build_or_unlink(
        fd: OwnedFd,
        kind: &str,
        payload_len: usize,
        mode: u32,
        object: &str,
        file: &str,
    ) -> Result<Segment> {
        let built = Segment::build(fd, kind, payload_len, mode, object, false);
        if built.is_err() {
            let _ = rustix::shm::unlink(file);
        }
        built
    }

    /// As [`Segment::create`], holding the OFD write lock on byte `lock_at` of the new file
    /// from right after its exclusive creation until [`Segment::release_creation`]: whoever
    /// finds the file unfinished and can take that lock knows its creator is dead (see
    /// `shm::liveness`). A lock already taken (someone judged the empty file abandoned
    /// between our creation and our lock, and is removing it) is [`Error::AlreadyExists`]:
    /// the caller tries again.
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub(crate) fn create_locked(
        kind: &str,
        name: &str,
        payload_len: usize,
        mode: u32,
        lock_at: i64,
    ) -> Result<Segment> {
        let (file, object, fd) = Segment::create_file(kind, name, mode)?;
        // A kernel without OFD locks: go on unlocked (the file then cannot be told from a
        // dead creator's, as before these locks).
        if let Ok(false) = super::liveness::try_lock(fd.as_fd(), lock_at) {
            return Err(Error::AlreadyExists {
                object: format!("{object} (being removed as abandoned)"),
            });
        }
        Segment::build_or_unlink(fd, kind, payload_len, mode, &object, &file)
    }

    /// Releases the lock [`Segment::create_locked`] took.
    pub(crate) fn release_creation(&self, lock_at: i64) {
        if let Some(fd) = self.file_fd() {
            super::liveness::unlock(fd, lock_at);
        }
    }

    /// Whether `/dev/shm/ipckit.<kind>.<name>` still names this segment's file (the same
    /// inode; a symlink there is not followed and names nothing of ours).
    pub(crate) fn still_named(&self, kind: &str, name: &str) -> bool {
        self.file_fd()
            .is_some_and(|fd| Segment::names(kind, name, fd))
    }

    /// Whether `/dev/shm/ipckit.<kind>.<name>` is the file open on `fd` (same device and
    /// inode; never through a symlink).
    pub(crate) fn names(kind: &str, name: &str, fd: BorrowedFd<'_>) -> bool {
        let Ok(file) = file_name(kind, name) else {
            return false;
        };
        let path = format!("{SHM_DIR}/{file}");
        match (
            rustix::fs::fstat(fd),
            rustix::fs::statat(
                rustix::fs::CWD,
                path.as_str(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ),
        ) {
            (Ok(mine), Ok(there)) => (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino),
            _ => false,
        }
    }

    /// The descriptor of the segment's file, named or anonymous. Its description holds no
    /// liveness lock of ours: it is the probe `F_OFD_GETLK` asks through.
    pub(crate) fn file_fd(&self) -> Option<BorrowedFd<'_>> {
        self.file.as_ref().or(self.fd.as_ref()).map(|fd| fd.as_fd())
    }

    /// Opens `/dev/shm/ipckit.<kind>.<name>` read-write as [`Segment::open`] would, without
    /// checking or mapping it: a description of our own, to lock and inspect.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::InvalidArgument`].
    pub(crate) fn open_file(kind: &str, name: &str) -> Result<OwnedFd> {
        let file = file_name(kind, name)?;
        open_file(&file, OFlags::RDWR, 0, &describe(kind, name))
    }

    /// Maps the segment open on `fd` (from [`Segment::open_file`]), checking it as
    /// [`Segment::open_trusting`] does.
    ///
    /// # Errors
    /// As [`Segment::open_trusting`].
    pub(crate) fn attach_file(
        fd: OwnedFd,
        kind: &str,
        name: &str,
        trust: Trust,
    ) -> Result<Segment> {
        let file = file_name(kind, name)?;
        Segment::attach(
            fd,
            kind,
            &describe(kind, name),
            false,
            trust,
            &format!("{SHM_DIR}/{file}"),
        )
    }

    /// Whether the file open on `fd` is a segment its creator never finished: shorter than
    /// the header, or with a zero segment magic, or a zero magic at the start of its payload
    /// (where every ipckit structure keeps its own, stored last). Read with `pread`, so a
    /// truncated file costs nothing. A file with some other magic is not unfinished: it is
    /// someone else's, or corrupt.
    pub(crate) fn unfinished(fd: BorrowedFd<'_>) -> bool {
        let mut buf = [0u8; HEADER_LEN + 8];
        let mut got = 0;
        while got < buf.len() {
            match rustix::io::pread(fd, &mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
        let word = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        if got < 8 || word(0) == 0 {
            return true;
        }
        word(0) == MAGIC && (got < buf.len() || word(HEADER_LEN) == 0)
    }

    /// An anonymous segment (`memfd_create`): no name, nothing to clean up; hand
    /// [`Segment::fd`] to another process (over a Unix socket) to share it.
    ///
    /// Once sized, the memfd is sealed against shrinking and growing (`F_SEAL_SHRINK |
    /// F_SEAL_GROW | F_SEAL_SEAL`): a process it is handed to cannot truncate it under the
    /// creator's mapping (that would be SIGBUS), its `ftruncate` fails with `EPERM`.
    ///
    /// Nothing but memory bounds a memfd, so a `payload_len` beyond the memory available
    /// (`MemAvailable`) is refused up front with [`Error::NoSpace`]: reserving it would run the
    /// machine out of memory and the OOM killer would end processes, not necessarily this one.
    /// A size just under it can still crowd out other processes: ask for what you need.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad `kind` (as [`check_name`], at most 24 bytes and
    /// no `.`) or a size that overflows; [`Error::NoSpace`] or [`Error::LimitReached`] if the
    /// kernel refuses to reserve the memory; [`Error::LimitReached`] when this process already
    /// protects its most mappings (the [`fault`] table); another OS error as [`Error::Os`].
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
        if keep_fd {
            check_memory(map_len, object)?;
        }
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
    ///
    /// # Errors
    /// [`Error::Corrupt`] if `fd` is not a regular file, is shorter than the header or sparse,
    /// or does not hold an ipckit segment of `kind` (wrong magic, version or kind, or a
    /// payload length larger than the file); [`Error::PermissionDenied`] if `fd` was not
    /// opened for reading and writing; [`Error::LimitReached`] when this process already
    /// protects its most mappings (the [`fault`] table); another OS error as [`Error::Os`].
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
    ///
    /// # Errors
    /// [`Error::NotFound`] if `/dev/shm` does not exist, [`Error::PermissionDenied`] if it
    /// cannot be read, another OS error as [`Error::Os`]. A `kind` no segment has gives an
    /// empty list.
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

    /// The flag [`is_poisoned`](Segment::is_poisoned) loads, valid while this segment
    /// lives: for the hot paths, which cache it instead of looking it up per message.
    #[inline]
    pub(crate) fn poison_flag(&self) -> &'static std::sync::atomic::AtomicBool {
        self.guard
            .as_ref()
            .map_or(&fault::NEVER_POISONED, |g| g.flag())
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
