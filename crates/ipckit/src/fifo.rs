//! Named pipes (FIFOs): a pipe with a name in the filesystem, so unrelated processes can use
//! it. One FIFO is one-way ([`Fifo`]); two make a two-way link ([`Duplex`]).
//!
//! ```
//! use ipckit::{fifo, Deadline, MessageReceiver, MessageSender};
//! # let path = std::env::temp_dir().join(format!("doc-fifo-{}", std::process::id()));
//!
//! fifo::create(&path, 0o600)?;
//! let mut rx = fifo::open_read(&path)?;                      // never blocks
//! let mut tx = fifo::open_write(&path, Deadline::Now)?;      // a reader is there
//! tx.send(b"by name")?;
//! assert_eq!(rx.recv()?.data, b"by name");
//! fifo::remove(&path)?;
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! # Two forms
//!
//! [`open_read`], [`open_write`] and [`Duplex::open`] return framed message endpoints
//! ([`Fifo`], a [`FramedStream`]): both ends must be ipckit's. [`open_read_bytes`] and
//! [`open_write_bytes`] return the plain byte stream ([`ByteStream`], `std::io::Read`/`Write`),
//! which any program can share: `echo text > FIFO` into an ipckit reader, `cat FIFO` after an
//! ipckit writer.
//!
//! ```
//! use std::io::Read;
//! use ipckit::fifo;
//! # let path = std::env::temp_dir().join(format!("doc-fifo-bytes-{}", std::process::id()));
//!
//! fifo::create(&path, 0o600)?;
//! let mut rx = fifo::open_read_bytes(&path)?;
//! std::process::Command::new("sh")
//!     .args(["-c", "echo text > \"$0\""])
//!     .arg(&path)
//!     .status()?;
//! let mut text = String::new();
//! rx.read_to_string(&mut text)?;
//! assert_eq!(text, "text\n");
//! fifo::remove(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Several framed writers may share one FIFO: each frame arrives whole, larger ones than
//! `PIPE_BUF` included, because a framed end opened by [`open_write`] locks the FIFO while it
//! writes a frame (see [`crate::stream`], "Several writers on one FIFO"). A [`Duplex`] side is
//! its FIFO's only writer and does not lock.
//!
//! # References
//! - [`mkfifo(3)`](https://man7.org/linux/man-pages/man3/mkfifo.3.html),
//!   [`fifo(7)`](https://man7.org/linux/man-pages/man7/fifo.7.html)

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::stream::{ByteStream, FramedStream};
use crate::Capacity;

/// One framed end of a FIFO (one direction).
pub type Fifo = FramedStream;

fn describe(path: &Path) -> String {
    format!("fifo {}", path.display())
}

/// Creates a FIFO at `path` with exactly `mode` (the umask does not apply).
///
/// # Errors
/// [`Error::AlreadyExists`], [`Error::NotFound`] (missing directory), [`Error::PermissionDenied`].
#[doc(alias = "mkfifo")]
pub fn create(path: impl AsRef<Path>, mode: u32) -> Result<()> {
    let path = path.as_ref();
    rustix::fs::mkfifoat(CWD, path, Mode::from_raw_mode(mode))
        .map_err(|e| Error::os("mkfifo", describe(path), e))?;
    rustix::fs::chmod(path, Mode::from_raw_mode(mode))
        .map_err(|e| Error::os("chmod", describe(path), e))?;
    crate::registry::record(
        crate::registry::Kind::Fifo,
        &crate::registry::absolute(path).to_string_lossy(),
    );
    Ok(())
}

/// Removes the FIFO's name; ends already open keep working. Only a FIFO is removed: any
/// other file at `path` (a regular file, a socket, a symlink, even to a FIFO) is left alone.
///
/// # Errors
/// [`Error::NotFound`] if nothing is at `path`; [`Error::InvalidArgument`] if what is there is
/// not a FIFO; [`Error::PermissionDenied`] without write permission on its directory; another
/// OS error as [`Error::Os`].
pub fn remove(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let stat = rustix::fs::lstat(path).map_err(|e| Error::os("lstat", describe(path), e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Fifo {
        return Err(Error::InvalidArgument(format!(
            "{} is not a FIFO: not removed",
            path.display()
        )));
    }
    rustix::fs::unlink(path).map_err(|e| Error::os("unlink", describe(path), e))?;
    crate::registry::forget(
        crate::registry::Kind::Fifo,
        &crate::registry::absolute(path).to_string_lossy(),
    );
    Ok(())
}

fn check_is_fifo(path: &Path) -> Result<()> {
    let stat = rustix::fs::stat(path).map_err(|e| Error::os("stat", describe(path), e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Fifo {
        return Err(Error::InvalidArgument(format!(
            "{} is not a FIFO",
            path.display()
        )));
    }
    Ok(())
}

/// Opens the FIFO for reading. Never blocks: a receive then waits until a writer sends, and
/// reports [`Error::Disconnected`] once every writer that came has closed.
///
/// # Errors
/// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::InvalidArgument`] if `path` is
/// not a FIFO.
pub fn open_read(path: impl AsRef<Path>) -> Result<Fifo> {
    open_read_bytes(path).map(FramedStream::over)
}

/// Opens the FIFO for reading as a plain byte stream. Never blocks: a read then waits until a
/// writer comes and writes, and returns `Ok(0)` (end of stream) once every writer that came
/// has closed.
///
/// # Errors
/// As [`open_read`].
pub fn open_read_bytes(path: impl AsRef<Path>) -> Result<ByteStream> {
    let path = path.as_ref();
    check_is_fifo(path)?;
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::os("open", describe(path), e))?;
    let mut fifo = ByteStream::new(Some(fd), None, false, describe(path))?;
    fifo.wait_for_first_writer();
    Ok(fifo)
}

/// Opens the FIFO for writing, waiting until `deadline` for a reader to open it
/// (`Deadline::Now`: fail at once if there is none).
///
/// # Errors
/// [`Error::Disconnected`] if no process has the FIFO open for reading by the deadline;
/// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::InvalidArgument`].
pub fn open_write(path: impl AsRef<Path>, deadline: Deadline) -> Result<Fifo> {
    let mut bytes = open_write_bytes(path, deadline)?;
    bytes.lock_framed_writes();
    Ok(FramedStream::over(bytes))
}

/// Opens the FIFO for writing as a plain byte stream, waiting until `deadline` for a reader.
/// Writes are the kernel's: at most `PIPE_BUF` bytes at a time are atomic with respect to
/// other writers.
///
/// # Errors
/// As [`open_write`].
pub fn open_write_bytes(path: impl AsRef<Path>, deadline: Deadline) -> Result<ByteStream> {
    let path = path.as_ref();
    check_is_fifo(path)?;
    loop {
        match rustix::fs::open(
            path,
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => return ByteStream::new(None, Some(fd), false, describe(path)),
            // No reader yet.
            Err(Errno::NXIO) if !deadline.expired() => std::thread::sleep(Duration::from_millis(1)),
            Err(Errno::NXIO) => {
                return Err(Error::Disconnected);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(Error::os("open", describe(path), e)),
        }
    }
}

/// Which end of a [`Duplex`] a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that creates it, conventionally (writes `NAME.0to1`, reads `NAME.1to0`).
    First,
    /// The other end.
    Second,
}

/// A two-way link between unrelated processes, made of two FIFOs `NAME.0to1` and `NAME.1to0`.
#[derive(Debug)]
pub struct Duplex;

impl Duplex {
    fn paths(prefix: &Path) -> (PathBuf, PathBuf) {
        let with = |suffix: &str| {
            let mut p = prefix.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        (with(".0to1"), with(".1to0"))
    }

    /// Creates both FIFOs.
    ///
    /// # Errors
    /// As [`create`], for either FIFO ([`Error::AlreadyExists`] if either name is taken). If
    /// the second cannot be made, the first is removed again.
    pub fn create(prefix: impl AsRef<Path>, mode: u32) -> Result<()> {
        let (a, b) = Duplex::paths(prefix.as_ref());
        create(&a, mode)?;
        if let Err(e) = create(&b, mode) {
            let _ = remove(&a);
            return Err(e);
        }
        Ok(())
    }

    /// Removes both FIFOs.
    ///
    /// # Errors
    /// As [`remove`]. Both removals are tried; if both fail, the error returned is the one
    /// for `NAME.1to0`.
    pub fn remove(prefix: impl AsRef<Path>) -> Result<()> {
        let (a, b) = Duplex::paths(prefix.as_ref());
        let first = remove(a);
        remove(b).and(first)
    }

    /// Opens this process's end, waiting until `deadline` for the other end to open its own.
    /// `Rendezvous` capacity is honoured by acknowledgements on the reverse FIFO.
    ///
    /// # Errors
    /// [`Error::Disconnected`] if the other side has not opened its read end by `deadline`;
    /// [`Error::NotFound`], [`Error::PermissionDenied`] or [`Error::InvalidArgument`] (not a
    /// FIFO) for either path, as [`open_read`] and [`open_write`]; [`Error::InvalidArgument`]
    /// for `Capacity::Bounded(0)`, [`Error::Unsupported`] for `Capacity::Unbounded`; another
    /// OS error as [`Error::Os`].
    pub fn open(
        prefix: impl AsRef<Path>,
        side: Side,
        capacity: Capacity,
        deadline: Deadline,
    ) -> Result<FramedStream> {
        let prefix = prefix.as_ref();
        let (a, b) = Duplex::paths(prefix);
        let (write_path, read_path) = match side {
            Side::First => (a, b),
            Side::Second => (b, a),
        };
        // Read end first, so that both sides' write opens find a reader.
        let reader = open_read(&read_path)?;
        // Each side is its FIFO's only writer by construction: no lock needed.
        let writer = FramedStream::over(open_write_bytes(&write_path, deadline)?);
        FramedStream::join(reader, writer, format!("fifo duplex {}", prefix.display()))?
            .with_capacity(capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `remove` takes only a FIFO's name: a regular file at the path is left alone.
    #[test]
    fn remove_refuses_what_is_not_a_fifo() {
        let dir = std::env::temp_dir();
        let file = dir.join(format!("ipckit-unit-notfifo-{}", std::process::id()));
        std::fs::write(&file, b"keep me").unwrap();
        let refused = remove(&file);
        let kept = std::fs::read(&file);
        let _ = std::fs::remove_file(&file);
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
        assert_eq!(kept.unwrap(), b"keep me");
        let fifo = dir.join(format!("ipckit-unit-fifo-{}", std::process::id()));
        create(&fifo, 0o600).unwrap();
        remove(&fifo).unwrap();
        assert!(!fifo.exists());
        assert!(matches!(remove(&fifo), Err(Error::NotFound { .. })));
    }
}
