//! Files reached through directory descriptors, never by path after a check.
//!
//! `ls` and `clean` run as root and act on paths that other users wrote (registry entries) or
//! created (service ports in the temp directory). A path is therefore walked one component at
//! a time with `O_PATH | O_NOFOLLOW | O_DIRECTORY` (a link anywhere in it stops the walk), the
//! object is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)` relative to the directory
//! descriptor, and removed with `unlinkat` on that same descriptor after checking that the name
//! still holds the object that was checked (same device, inode and type).
//!
//! # References
//! - [`openat(2)`](https://man7.org/linux/man-pages/man2/openat.2.html) (`O_PATH`,
//!   `O_NOFOLLOW`), [`unlinkat(2)`](https://man7.org/linux/man-pages/man2/unlinkat.2.html)

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::fs::{fstat, openat, statat, unlinkat, AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

/// What was seen of a file when it was checked, to recognise it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub dev: u64,
    pub ino: u64,
    pub kind: FileType,
    pub uid: u32,
    pub mode: u32,
}

impl Seen {
    fn of(stat: &Stat) -> Seen {
        Seen {
            dev: stat.st_dev,
            ino: stat.st_ino,
            kind: FileType::from_raw_mode(stat.st_mode),
            uid: stat.st_uid,
            mode: stat.st_mode & 0o7777,
        }
    }
}

/// An object found under a directory held open: the directory, the object's name in it, and
/// what both were when looked at.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    dir: Arc<OwnedFd>,
    dir_seen: Seen,
    leaf: CString,
    /// The object as it was checked.
    pub seen: Seen,
}

/// Why an object could not be located.
#[derive(Debug)]
pub(crate) enum Missing {
    /// Nothing of that name (or a directory on the way is gone).
    Gone,
    /// Something is there that must not be followed or used; the reason.
    Refused(String),
}

/// Opens a directory as a place to look in (`O_PATH`: no read permission needed).
fn open_dir_at(dir: &OwnedFd, name: &OsStr, follow: bool) -> rustix::io::Result<OwnedFd> {
    let mut flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    openat(dir, name, flags, Mode::empty())
}

fn refused(what: &str, e: Errno) -> Missing {
    match e {
        Errno::NOENT => Missing::Gone,
        Errno::LOOP | Errno::NOTDIR => Missing::Refused(format!(
            "{what} is a symbolic link or not a directory (not followed)"
        )),
        e => Missing::Refused(format!("{what}: {e}")),
    }
}

/// Looks up an absolute path without following any symbolic link in it.
pub(crate) fn locate(path: &str) -> Result<Located, Missing> {
    if !path.starts_with('/') {
        return Err(Missing::Refused("not an absolute path".into()));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((leaf, dirs)) = parts.split_last() else {
        return Err(Missing::Refused("names no file".into()));
    };
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(Missing::Refused("has '.' or '..' in it".into()));
    }
    let root = openat(
        CWD,
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refused("/", e))?;
    let mut dir = root;
    for part in dirs {
        dir = open_dir_at(&dir, OsStr::new(part), false).map_err(|e| refused(part, e))?;
    }
    located_in(Arc::new(dir), OsStr::new(leaf))
}

/// Looks at `leaf` in the directory `dir` without following it.
pub(crate) fn located_in(dir: Arc<OwnedFd>, leaf: &OsStr) -> Result<Located, Missing> {
    let dir_seen = Seen::of(&fstat(&*dir).map_err(|e| refused("the directory", e))?);
    let leaf = CString::new(leaf.as_bytes())
        .map_err(|_| Missing::Refused("the name has a NUL byte".into()))?;
    let stat = statat(&*dir, leaf.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| refused("the file", e))?;
    Ok(Located {
        dir,
        dir_seen,
        leaf,
        seen: Seen::of(&stat),
    })
}

/// Opens the directory at `path` (following links: the caller chose the path, not another
/// user) as a place to look in.
pub(crate) fn open_dir(path: &std::path::Path) -> Result<Arc<OwnedFd>, Missing> {
    openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(Arc::new)
    .map_err(|e| refused(&path.display().to_string(), e))
}

/// The names in a directory held open (read through a fresh descriptor of it).
pub(crate) fn names_in(dir: &OwnedFd) -> Vec<std::ffi::OsString> {
    let Ok(readable) = openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let Ok(mut listing) = rustix::fs::Dir::new(readable) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    while let Some(Ok(entry)) = listing.read() {
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_os_string());
        }
    }
    names
}

impl Located {
    /// Whether `uid` could have removed this object itself: root can remove anything; anyone
    /// else only an object they own, in a directory they can write (their own, or one
    /// writable by all, where the sticky bit still lets them remove what they own).
    /// Group permissions are not counted: refusing is the safe side.
    pub(crate) fn removable_by(&self, uid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let dir = self.dir_seen;
        let dir_writable = (dir.uid == uid && dir.mode & 0o200 != 0) || dir.mode & 0o002 != 0;
        self.seen.uid == uid && dir_writable
    }

    /// A path that reaches this object through the held directory descriptor (for
    /// `connect`, which takes a path).
    fn fd_path(&self) -> Vec<u8> {
        let mut path = format!("/proc/self/fd/{}/", self.dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(self.leaf.as_bytes());
        path
    }

    /// Whether some process accepts connections on this socket file, with any of the three
    /// socket types. Never blocks: connecting is non-blocking, and a listener whose backlog
    /// is full (`EAGAIN`) counts as accepting. A socket path too long to connect to counts as
    /// accepting too, so that nobody removes it.
    pub(crate) fn socket_accepts(&self) -> bool {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let Ok(addr) = SocketAddrUnix::new(OsStr::from_bytes(&self.fd_path())) else {
            return true;
        };
        [SocketType::STREAM, SocketType::DGRAM, SocketType::SEQPACKET]
            .into_iter()
            .any(|kind| {
                let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
                let Ok(fd) = rustix::net::socket_with(AddressFamily::UNIX, kind, flags, None)
                else {
                    return false;
                };
                // A Unix-domain connect completes or fails at once; EINPROGRESS is not
                // expected but would also mean someone is there.
                matches!(
                    rustix::net::connect(&fd, &addr),
                    Ok(()) | Err(Errno::AGAIN | Errno::INPROGRESS)
                )
            })
    }

    /// Removes the object, if its name still holds the very object that was checked.
    pub(crate) fn unlink_checked(&self) -> Result<(), String> {
        let now = statat(&*self.dir, self.leaf.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| e.to_string())?;
        let now = Seen::of(&now);
        if (now.dev, now.ino, now.kind) != (self.seen.dev, self.seen.ino, self.seen.kind) {
            return Err("it was replaced after it was checked; left alone".into());
        }
        unlinkat(&*self.dir, self.leaf.as_c_str(), AtFlags::empty()).map_err(|e| e.to_string())
    }
}

/// Whether `/dev/shm/FILE` is a regular file (not a FIFO, device, link...), checked without
/// following it, before anything opens it.
pub(crate) fn shm_file_is_regular(file: &str) -> Result<(), String> {
    let dir = openat(
        CWD,
        "/dev/shm",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("/dev/shm: {e}"))?;
    match located_in(Arc::new(dir), OsStr::new(file)) {
        Ok(found) if found.seen.kind == FileType::RegularFile => Ok(()),
        Ok(found) => Err(format!("a {:?}, not a regular file", found.seen.kind)),
        Err(Missing::Gone) => Err("gone".into()),
        Err(Missing::Refused(why)) => Err(why),
    }
}
