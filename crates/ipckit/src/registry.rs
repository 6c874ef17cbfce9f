//! A record of the named objects ipckit creates outside `/dev/shm`, so `ipckit ls` and
//! `ipckit clean` can find them.
//!
//! Mailboxes and topics are found by their `/dev/shm/ipckit.KIND.NAME` files. FIFOs and socket
//! files live at paths the caller picks, System V objects under numeric keys, and POSIX queues
//! are only visible where the `mqueue` filesystem is mounted: nothing about them says "made by
//! ipckit". So when ipckit creates one it leaves a small entry in `/dev/shm/ipckit-registry/`
//! naming the object and the process that created it (pid and start time, so a reused pid is
//! not taken for it), and removes the entry when it removes the object.
//!
//! The registry is advice, not truth: an entry is checked against the kernel every time it is
//! read, an entry whose object is gone is *stale* (and `clean` forgets it), and failing to
//! write an entry never fails the operation that created the object.
//!
//! Every user can write to the registry, so an entry is trusted only as far as the user who
//! wrote it: each user's entries are in `/dev/shm/ipckit-registry/UID/`, a directory owned by
//! that uid and writable by nobody else (one that is not is ignored whole), and the namespace
//! honours another user's entry only for an object that user could remove themselves (root's
//! entries for anything). Entries are read without following links, without blocking, and at
//! most [`ENTRY_LIMIT`] bytes each; a bad entry is reported and skipped.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    fstat, mkdirat, openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD,
};
use rustix::process::geteuid;

use crate::process::{Liveness, ProcessIdentity};

/// The directory of entries. World-writable and sticky like `/tmp`, so that every user's
/// processes can make their own directory of entries in it (`/dev/shm/ipckit-registry/UID/`,
/// owned by that user, writable by nobody else). Entries anywhere else are ignored.
const DIR: &str = "/dev/shm/ipckit-registry";

/// The kinds of object the registry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A named pipe; the object is its absolute path.
    Fifo,
    /// A bound Unix socket file; the object is its absolute path.
    UnixSocket,
    /// A System V message queue; the object is `KEY.ID`.
    SysvQueue,
    /// A System V shared-memory segment; the object is `KEY.ID`.
    SysvSegment,
    /// A POSIX message queue; the object is its ipckit name.
    PosixQueue,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Fifo,
        Kind::UnixSocket,
        Kind::SysvQueue,
        Kind::SysvSegment,
        Kind::PosixQueue,
    ];

    /// The kind's name in `ipckit ls`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Fifo => "fifo",
            Kind::UnixSocket => "unix-socket",
            Kind::SysvQueue => "sysv-mq",
            Kind::SysvSegment => "sysv-shm",
            Kind::PosixQueue => "posix-mq",
        }
    }
}

/// One registry entry, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: Kind,
    /// The object: a path, `KEY.ID`, or a queue name.
    pub object: String,
    /// The process that created it, if the entry says.
    pub creator: Option<ProcessIdentity>,
    /// The uid whose directory holds the entry: the entry is trusted only as far as this
    /// user (root's entries for anything, another user's only for that user's objects).
    pub owner: u32,
}

impl Entry {
    /// Whether the creating process is still alive.
    pub(crate) fn creator_liveness(&self) -> Liveness {
        self.creator.map_or(Liveness::Dead, |c| c.liveness())
    }
}

/// The entry's file name: `KIND.OBJECT` with `/` and `%` escaped, since a path is an object.
fn file_name(kind: Kind, object: &str) -> String {
    let mut name = String::with_capacity(object.len() + 16);
    name.push_str(kind.as_str());
    name.push('.');
    for c in object.chars() {
        match c {
            '%' => name.push_str("%25"),
            '/' => name.push_str("%2F"),
            c => name.push(c),
        }
    }
    name
}

fn parse_file_name(file: &str) -> Option<(Kind, String)> {
    let kind = Kind::ALL
        .into_iter()
        .find(|k| file.starts_with(k.as_str()) && file[k.as_str().len()..].starts_with('.'))?;
    let escaped = &file[kind.as_str().len() + 1..];
    let mut object = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('%') {
        object.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%25") => object.push('%'),
            Some("%2F") => object.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    object.push_str(rest);
    Some((kind, object))
}

/// The absolute form of a path, for entries (the relative path a process used means nothing
/// to `ipckit ls` run elsewhere), with its directory's symbolic links resolved: `ls` and
/// `clean` walk an entry's path without following any link, so the recorded path must not
/// need one.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(file)) => match fs::canonicalize(parent) {
            Ok(parent) => parent.join(file),
            Err(_) => path,
        },
        _ => path,
    }
}

/// The registry directory, opened without following a link (whoever made it).
fn open_top() -> io::Result<OwnedFd> {
    Ok(openat(
        CWD,
        DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `uid`'s own directory of entries, if it is trustworthy: a real directory (not a link),
/// owned by `uid`, writable by nobody else. Checked on the open descriptor, so what was
/// checked is what is used.
fn open_user_dir(top: &OwnedFd, uid: u32) -> std::result::Result<OwnedFd, String> {
    let dir = openat(
        top,
        uid.to_string(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open it as a directory without following links: {e}"))?;
    let stat = fstat(&dir).map_err(|e| format!("fstat: {e}"))?;
    if stat.st_uid != uid {
        return Err(format!("owned by uid {}, not by uid {uid}", stat.st_uid));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(format!(
            "mode {:04o}: writable by others",
            stat.st_mode & 0o7777
        ));
    }
    Ok(dir)
}

fn ensure_dirs() -> io::Result<OwnedFd> {
    match fs::create_dir(DIR) {
        Ok(()) => fs::set_permissions(DIR, fs::Permissions::from_mode(0o1777))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let top = open_top()?;
    let uid = geteuid().as_raw();
    match mkdirat(&top, uid.to_string(), Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    // A directory someone else planted under our uid is not used (nor trusted by readers).
    open_user_dir(&top, uid).map_err(io::Error::other)
}

/// Records that this process created `object` (best effort: errors are ignored).
pub(crate) fn record(kind: Kind, object: &str) {
    let _ = try_record(kind, object);
}

fn try_record(kind: Kind, object: &str) -> io::Result<()> {
    let dir = ensure_dirs()?;
    let me = ProcessIdentity::current();
    let name = file_name(kind, object);
    // Replace, not append: an entry left by an earlier object of the same name is outdated.
    let _ = unlinkat(&dir, name.as_str(), AtFlags::empty());
    let fd = openat(
        &dir,
        name.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    fs::File::from(fd).write_all(format!("{} {}\n", me.pid, me.start_time).as_bytes())
}

/// Forgets `object`, recorded by this user (best effort).
pub(crate) fn forget(kind: Kind, object: &str) {
    forget_as(geteuid().as_raw(), kind, object);
}

/// Forgets an entry that [`entries`] returned (best effort).
pub(crate) fn forget_entry(entry: &Entry) {
    forget_as(entry.owner, entry.kind, &entry.object);
}

fn forget_as(uid: u32, kind: Kind, object: &str) {
    let Ok(top) = open_top() else {
        return;
    };
    if let Ok(dir) = open_user_dir(&top, uid) {
        let _ = unlinkat(&dir, file_name(kind, object).as_str(), AtFlags::empty());
    }
}

/// Longest entry file: `PID START_TIME\n` is well under it.
const ENTRY_LIMIT: usize = 64;

/// Every entry of every user, in no particular order, and what was skipped and why (each
/// as the path and the reason). Only entries in a directory that belongs to their uid are read; each is
/// opened without following links and without blocking, only if it is a small regular file.
pub(crate) fn entries() -> (Vec<Entry>, Vec<(String, String)>) {
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    let top = match open_top() {
        Ok(top) => top,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (found, skipped),
        Err(e) => {
            skipped.push((DIR.to_string(), e.to_string()));
            return (found, skipped);
        }
    };
    for (name, _) in dir_names(&top) {
        let text = String::from_utf8_lossy(name.to_bytes()).into_owned();
        let Some(uid) = text.parse::<u32>().ok().filter(|u| u.to_string() == text) else {
            let why = if is_old_entry(&top, &name) {
                "an entry of the old shared layout: not trusted, not read (clean forgets it)"
            } else {
                "not a per-user directory of entries (ignored)"
            };
            skipped.push((format!("{DIR}/{text}"), why.to_string()));
            continue;
        };
        let dir = match open_user_dir(&top, uid) {
            Ok(dir) => dir,
            Err(why) => {
                skipped.push((
                    format!("{DIR}/{text}"),
                    format!("{why} (its entries are ignored)"),
                ));
                continue;
            }
        };
        for (file, _) in dir_names(&dir) {
            let file_text = String::from_utf8_lossy(file.to_bytes()).into_owned();
            match read_entry(&dir, &file, uid) {
                Ok(entry) => found.push(entry),
                Err(why) => skipped.push((format!("{DIR}/{text}/{file_text}"), why)),
            }
        }
    }
    (found, skipped)
}

/// Whether `name`, at the top of the registry, is an entry of the old layout (all users'
/// entries side by side): a regular file named like an entry, looked at without following it.
fn is_old_entry(top: &OwnedFd, name: &CStr) -> bool {
    name.to_str().ok().and_then(parse_file_name).is_some()
        && statat(top, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
}

/// The entries of the old layout whose creator is gone, by file name: never honoured, only
/// forgotten. (Only the creator is read, as any entry is read, to keep the entries of
/// programs still running an older ipckit until they exit.)
pub(crate) fn old_entries() -> Vec<String> {
    let Ok(top) = open_top() else {
        return Vec::new();
    };
    dir_names(&top)
        .into_iter()
        .filter(|(name, _)| is_old_entry(&top, name))
        .filter(|(name, _)| {
            read_entry(&top, name, 0).map_or(true, |e| e.creator_liveness() == Liveness::Dead)
        })
        .filter_map(|(name, _)| name.into_string().ok())
        .collect()
}

/// Forgets an entry of the old layout (best effort): the name is unlinked in the registry
/// directory itself, if it is still a regular file; nothing it names is looked at.
pub(crate) fn forget_old_entry(file: &str) -> io::Result<()> {
    let top = open_top()?;
    let name = CString::new(file)?;
    if !is_old_entry(&top, &name) {
        return Err(io::Error::other("no longer an entry of the old layout"));
    }
    Ok(unlinkat(&top, name.as_c_str(), AtFlags::empty())?)
}

/// The names in a directory, without `.` and `..`.
fn dir_names(dir: &OwnedFd) -> Vec<(CString, u64)> {
    let Ok(mut listing) = Dir::read_from(dir) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    while let Some(Ok(entry)) = listing.read() {
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push((name.to_owned(), entry.ino()));
        }
    }
    names
}

fn read_entry(dir: &OwnedFd, file: &CStr, owner: u32) -> std::result::Result<Entry, String> {
    let (kind, object) = file
        .to_str()
        .ok()
        .and_then(parse_file_name)
        .ok_or("not an entry name")?;
    // Non-blocking and without following links: a FIFO or a link to /dev/zero planted here
    // must cost one failed open or one fstat, not a hang.
    let fd = openat(
        dir,
        file,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open without following links or blocking: {e}"))?;
    let stat = fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err("not a regular file".into());
    }
    if stat.st_size as u64 > ENTRY_LIMIT as u64 {
        return Err(format!(
            "{} bytes, more than an entry's {ENTRY_LIMIT}",
            stat.st_size
        ));
    }
    let mut text = Vec::with_capacity(ENTRY_LIMIT);
    fs::File::from(fd)
        .take(ENTRY_LIMIT as u64)
        .read_to_end(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&text);
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    let creator = match (fields.next(), fields.next()) {
        (Some(Ok(pid)), Some(Ok(start_time))) if pid <= u32::MAX as u64 => Some(ProcessIdentity {
            pid: pid as u32,
            start_time,
        }),
        _ => None,
    };
    Ok(Entry {
        kind,
        object,
        creator,
        owner,
    })
}

/// The `KEY.ID` object of a System V queue or segment.
pub(crate) fn sysv_object(key: i32, id: i32) -> String {
    format!("{key}.{id}")
}

/// What `/proc/sysvipc/{msg,shm}` says of the System V object `key.id`, if it still exists
/// under that key: the row's columns after `key id` (`perms` is octal, the rest decimal).
pub(crate) fn sysv_row(kind: Kind, object: &str) -> Option<Vec<String>> {
    let table = match kind {
        Kind::SysvQueue => "/proc/sysvipc/msg",
        Kind::SysvSegment => "/proc/sysvipc/shm",
        _ => return None,
    };
    let (key, id) = object.split_once('.')?;
    let (key, id): (i64, i64) = (key.parse().ok()?, id.parse().ok()?);
    let text = fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let mut cols = line.split_ascii_whitespace();
        let row_key: i64 = cols.next()?.parse().ok()?;
        let row_id: i64 = cols.next()?.parse().ok()?;
        // The kernel prints the key as a signed int; an id reused under another key is
        // another object.
        (row_key == key && row_id == id).then(|| cols.map(str::to_string).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_paths() {
        for (kind, object) in [
            (Kind::Fifo, "/tmp/a%2Fb/c"),
            (Kind::UnixSocket, "/run/x.sock"),
            (Kind::SysvQueue, "-12.7"),
            (Kind::PosixQueue, "jobs"),
        ] {
            let name = file_name(kind, object);
            assert!(!name.contains('/'));
            assert_eq!(parse_file_name(&name), Some((kind, object.to_string())));
        }
        assert_eq!(parse_file_name("fifo.%zz"), None);
        assert_eq!(parse_file_name("other.x"), None);
        assert_eq!(parse_file_name("fifox"), None);
    }

    #[test]
    fn entries_name_their_creator_and_go_when_forgotten() {
        let object = format!("/tmp/registry-unit-{}", std::process::id());
        record(Kind::Fifo, &object);
        let found = entries()
            .0
            .into_iter()
            .find(|e| e.kind == Kind::Fifo && e.object == object)
            .expect("recorded");
        assert_eq!(found.creator, Some(ProcessIdentity::current()));
        assert_eq!(found.creator_liveness(), Liveness::Alive);
        forget(Kind::Fifo, &object);
        assert!(!entries()
            .0
            .iter()
            .any(|e| e.kind == Kind::Fifo && e.object == object));
    }
}
