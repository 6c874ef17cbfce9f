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

use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm::OFlags;

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

/// Checks a name or kind before any file is touched.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidArgument(format!("{what} {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME {
        return bad(&format!("is longer than {MAX_NAME} bytes"));
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains '/' or a NUL byte");
    }
    if name == "." || name == ".." {
        return bad("is not a usable name");
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
}

// SAFETY: the mapping is plain shared memory; what is placed in it decides how it is
// accessed (atomics, or data guarded by them).
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

fn map(fd: BorrowedFd<'_>, len: usize, object: &str) -> Result<NonNull<u8>> {
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
    Ok(NonNull::new(ptr.cast()).expect("mmap never returns null on success"))
}

impl Segment {
    /// Creates the named segment `/dev/shm/ipckit.<kind>.<name>` with `payload_len` zeroed
    /// bytes, exclusively, with exactly `mode` (the umask does not apply).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name,
    /// [`Error::PermissionDenied`], [`Error::LimitReached`] when `/dev/shm` is full.
    pub fn create(kind: &str, name: &str, payload_len: usize, mode: u32) -> Result<Segment> {
        let file = file_name(kind, name)?;
        let object = describe(kind, name);
        let fd = rustix::shm::open(
            file.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| Error::os("shm_open", object.clone(), e))?;
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
        rustix::fs::ftruncate(&fd, map_len as u64).map_err(|e| match e {
            rustix::io::Errno::FBIG | rustix::io::Errno::NOSPC | rustix::io::Errno::NOMEM => {
                Error::LimitReached {
                    object: object.to_string(),
                    limit: "the size of /dev/shm (see `df /dev/shm`)".into(),
                    source: e.into(),
                }
            }
            other => Error::os("ftruncate", object, other),
        })?;
        let base = map(fd.as_fd(), map_len, object)?;
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
        Ok(Segment {
            base,
            map_len,
            payload_len,
            fd: keep_fd.then_some(fd),
        })
    }

    /// Opens the named segment, checking its header.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Corrupt`] (wrong magic,
    /// version or kind, or truncated).
    pub fn open(kind: &str, name: &str) -> Result<Segment> {
        let file = file_name(kind, name)?;
        let object = describe(kind, name);
        let fd = rustix::shm::open(file.as_str(), OFlags::RDWR, Mode::empty())
            .map_err(|e| Error::os("shm_open", object.clone(), e))?;
        Segment::attach(fd, kind, &object, false)
    }

    /// Maps an anonymous segment received as a descriptor, checking its header.
    pub fn from_fd(fd: OwnedFd, kind: &str) -> Result<Segment> {
        Segment::attach(fd, kind, &format!("anonymous {kind}"), true)
    }

    fn attach(fd: OwnedFd, kind: &str, object: &str, keep_fd: bool) -> Result<Segment> {
        let corrupt = |detail: String| Error::corrupt(object, detail);
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| Error::os("fstat", object, e))?
            .st_size as usize;
        if size < HEADER_LEN {
            return Err(corrupt(format!(
                "{size} bytes is shorter than ipckit's {HEADER_LEN}-byte header (truncated, or still being created)"
            )));
        }
        let base = map(fd.as_fd(), size, object)?;
        let segment = Segment {
            base,
            map_len: size,
            payload_len: 0,
            fd: None,
        };
        // SAFETY: the mapping holds at least HEADER_LEN bytes; every bit pattern is a valid
        // Header (integers and bytes).
        let header = unsafe { &*(base.as_ptr() as *const Header) };
        let magic = header.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(corrupt(format!(
                "bad magic {magic:#x}: not an ipckit segment, or not initialised"
            )));
        }
        // SAFETY: plain fields inside the mapping, read once.
        let (version, payload_len, stored_kind) = unsafe {
            let h = base.as_ptr() as *const Header;
            (
                std::ptr::addr_of!((*h).version).read_volatile(),
                std::ptr::addr_of!((*h).payload_len).read_volatile(),
                std::ptr::addr_of!((*h).kind).read_volatile(),
            )
        };
        if version != VERSION {
            return Err(corrupt(format!(
                "layout version {version}, this ipckit reads {VERSION}"
            )));
        }
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
        segment.fd = keep_fd.then_some(fd);
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
}

impl Drop for Segment {
    fn drop(&mut self) {
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
