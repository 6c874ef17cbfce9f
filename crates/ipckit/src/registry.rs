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

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::process::{Liveness, ProcessIdentity};

/// The directory of entries. World-writable and sticky like `/tmp`, so that every user's
/// processes can record their objects and none can delete another's entries.
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
/// to `ipckit ls` run elsewhere).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn ensure_dir() -> std::io::Result<()> {
    match fs::create_dir(DIR) {
        Ok(()) => fs::set_permissions(DIR, fs::Permissions::from_mode(0o1777)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Records that this process created `object` (best effort: errors are ignored).
pub(crate) fn record(kind: Kind, object: &str) {
    let _ = try_record(kind, object);
}

fn try_record(kind: Kind, object: &str) -> std::io::Result<()> {
    ensure_dir()?;
    let me = ProcessIdentity::current();
    let path = Path::new(DIR).join(file_name(kind, object));
    // Replace, not append: an entry left by an earlier object of the same name is outdated.
    let _ = fs::remove_file(&path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)?;
    writeln!(file, "{} {}", me.pid, me.start_time)
}

/// Forgets `object` (best effort).
pub(crate) fn forget(kind: Kind, object: &str) {
    let _ = fs::remove_file(Path::new(DIR).join(file_name(kind, object)));
}

/// Every entry, in no particular order. Unreadable or malformed entries are skipped.
pub(crate) fn entries() -> Vec<Entry> {
    let Ok(dir) = fs::read_dir(DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let (kind, object) = parse_file_name(e.file_name().to_str()?)?;
            // Entries are small; a large one is not ours.
            let text = fs::read(e.path())
                .ok()
                .filter(|t| t.len() < 64)
                .and_then(|t| String::from_utf8(t).ok())
                .unwrap_or_default();
            let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
            let creator = match (fields.next(), fields.next()) {
                (Some(Ok(pid)), Some(Ok(start_time))) if pid <= u32::MAX as u64 => {
                    Some(ProcessIdentity {
                        pid: pid as u32,
                        start_time,
                    })
                }
                _ => None,
            };
            Some(Entry {
                kind,
                object,
                creator,
            })
        })
        .collect()
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
            .into_iter()
            .find(|e| e.kind == Kind::Fifo && e.object == object)
            .expect("recorded");
        assert_eq!(found.creator, Some(ProcessIdentity::current()));
        assert_eq!(found.creator_liveness(), Liveness::Alive);
        forget(Kind::Fifo, &object);
        assert!(!entries()
            .iter()
            .any(|e| e.kind == Kind::Fifo && e.object == object));
    }
}
