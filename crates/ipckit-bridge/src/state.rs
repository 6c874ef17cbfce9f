//! The state directory: what a bridge must remember across its own restart.
//!
//! - `import.mailbox.NAME`: the source id the importing bridge sends with the messages of its
//!   mailbox `NAME`, with the boot and the inode of the mailbox file it belongs to. A
//!   re-created mailbox (its positions start again at 0) or a reboot gets a new id.
//! - `export.mailbox.NAME.SOURCE`: the exporting bridge's record of the last position of
//!   source `SOURCE` it delivered into its mailbox `NAME`, plus one (0: none), 8 bytes
//!   little-endian, rewritten in place by one `pwrite` after each local send. For a bounded
//!   or unbounded mailbox the record that decides is the mailbox's own (an idempotent
//!   sender's source entry, committed with the message); this file then only seeds a fresh
//!   entry (a mailbox made again, a source evicted from its table, or a bridge from before),
//!   and is the whole record only for a rendezvous mailbox or a full source table.
//! - `status.json`: counters and peers, for `ipckit bridge --status`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::proto;
use crate::{Error, Result};

#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::State {
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    pub(crate) fn open(dir: &Path) -> Result<StateDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, e))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes `contents` to `file` whole or not at all (a temporary file renamed over it).
    pub(crate) fn replace(&self, file: &str, contents: &[u8]) -> Result<()> {
        let path = self.path(file);
        let tmp = self.path(&format!(".{file}.{}", std::process::id()));
        std::fs::write(&tmp, contents).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    /// The source id of the local mailbox `name`, whose file is `mailbox_file`.
    pub(crate) fn import_source(&self, name: &str, mailbox_file: &Path) -> Result<[u8; 16]> {
        let ino = std::fs::metadata(mailbox_file)
            .map_err(|e| io(mailbox_file, e))?
            .ino();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim()
            .to_string();
        let file = format!("import.mailbox.{name}");
        if let Ok(text) = std::fs::read_to_string(self.path(&file)) {
            let fields: Vec<&str> = text.split_whitespace().collect();
            if let [b, i, id] = fields[..] {
                if b == boot && i == ino.to_string() && id.len() == 32 {
                    let mut out = [0u8; 16];
                    let parsed = (0..16).all(|k| {
                        u8::from_str_radix(&id[2 * k..2 * k + 2], 16)
                            .map(|v| out[k] = v)
                            .is_ok()
                    });
                    if parsed {
                        return Ok(out);
                    }
                }
            }
        }
        let id = proto::random_id();
        let line = format!("{boot} {ino} {}\n", proto::hex(&id));
        self.replace(&file, line.as_bytes())?;
        Ok(id)
    }

    /// The delivery record of source `source` into the local mailbox `name`.
    pub(crate) fn export_record(&self, name: &str, source: &[u8; 16]) -> Result<Record> {
        let path = self.path(&format!("export.mailbox.{name}.{}", proto::hex(source)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let mut bytes = [0u8; 8];
        let (next, fresh) = match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => (u64::from_le_bytes(bytes), false),
            // A new record (or one cut short, which only a full disk can do): nothing yet.
            Err(_) => (0, true),
        };
        Ok(Record {
            file,
            path,
            next,
            fresh,
        })
    }
}

/// The exporting side's record of one source: the next position it has not delivered.
#[derive(Debug)]
pub(crate) struct Record {
    file: File,
    path: PathBuf,
    next: u64,
    /// No record existed: nothing was ever delivered from this source, or the state
    /// directory was lost.
    fresh: bool,
}

impl Record {
    /// The position it expects to follow the last one delivered.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// A fresh record starts where the importing side says its unacknowledged messages
    /// start.
    pub(crate) fn start_at(&mut self, base: u64) {
        if self.fresh {
            self.next = base;
            self.fresh = false;
        }
    }

    /// True if the message at `position` was delivered already.
    #[cfg(test)]
    pub(crate) fn delivered(&self, position: u64) -> bool {
        position < self.next
    }

    /// Records that `position` is delivered: one 8-byte `pwrite`, which a killed process
    /// either made or did not.
    pub(crate) fn mark(&mut self, position: u64) -> Result<()> {
        self.next = position + 1;
        self.fresh = false;
        self.file
            .write_all_at(&self.next.to_le_bytes(), 0)
            .map_err(|e| io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_source_ids_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("ipckit-bridge-state-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let source = proto::random_id();
        let mut record = state.export_record("jobs", &source).unwrap();
        assert!(!record.delivered(0));
        record.mark(7).unwrap();
        let again = state.export_record("jobs", &source).unwrap();
        assert!(again.delivered(7) && !again.delivered(8));

        let file = dir.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let id = state.import_source("jobs", &file).unwrap();
        assert_eq!(state.import_source("jobs", &file).unwrap(), id);
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"x").unwrap();
        let _ = state.import_source("jobs", &file).unwrap(); // new inode or not: no error
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
