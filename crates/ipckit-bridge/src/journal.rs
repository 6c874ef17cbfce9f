//! The importing bridge's outbox: the messages it has taken from its local mailbox and the
//! exporting host has not acknowledged yet, so that it can carry a window of them at once and
//! still lose none when it is killed.
//!
//! Two files in the state directory, per imported mailbox `NAME`:
//!
//! - `outbox.mailbox.NAME`: records appended one `write` each, in the order the messages
//!   were taken: `len u32 | pos u64 | prev_next u64 | source [16] | checksum u64 | bytes`
//!   (little-endian; the checksum is FNV-1a over everything after it and before it but the
//!   length). A record cut short by a kill, or any record after an invalid one, is dropped
//!   when the file is opened: its message was not released from the mailbox yet.
//! - `outbox.mailbox.NAME.acked`: 32 bytes, rewritten by one `pwrite` (within one page, so a
//!   kill leaves the old or the new): the offset in the outbox where the unacknowledged
//!   records start, and the source and position of the last acknowledged message.
//!
//! Order of writes, and why each crash is harmless:
//! - append the record, *then* release the mailbox slot: killed between, the next bridge
//!   finds the held message's position already journaled and only releases it;
//! - acknowledged: advance the offset. Killed before, the records are sent again and the
//!   exporting bridge answers `duplicate`;
//! - all acknowledged: truncate the outbox to nothing, then write offset 0 (an offset past
//!   the end reads as 0); a long outbox is compacted by writing the remaining records to a
//!   new file, writing offset 0, then renaming it over the old one (killed before the rename,
//!   the old outbox's acknowledged records are sent again: duplicates, dropped).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use crate::state::StateDir;
use crate::{Error, Result};

const HEADER: usize = 4 + 8 + 8 + 16 + 8;
/// The outbox is compacted once this much of it is acknowledged records.
const COMPACT_AT: u64 = 4 << 20;

/// One message taken from the mailbox, not yet acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) source: [u8; 16],
    /// The message's position in its mailbox (`MailboxSample::mailbox_position`).
    pub(crate) pos: u64,
    /// The exporting side's expected next position before this message: the position of
    /// the previous message of the same source, plus one (0 for a source's first).
    pub(crate) prev_next: u64,
    pub(crate) data: Vec<u8>,
    /// Where its record ends in the outbox.
    end: u64,
}

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    acked_file: File,
    acked_path: PathBuf,
    /// The unacknowledged entries, oldest first.
    pub(crate) pending: VecDeque<Entry>,
    /// Where the unacknowledged records start.
    start: u64,
    /// The end of the outbox.
    end: u64,
    /// The last message journaled (acknowledged or not): its source and position.
    last: Option<([u8; 16], u64)>,
    /// The last acknowledged message.
    last_acked: Option<([u8; 16], u64)>,
}

fn io(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::State {
        path: path.to_path_buf(),
        source,
    }
}

fn checksum(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn record(entry: &Entry) -> Vec<u8> {
    let pos = entry.pos.to_le_bytes();
    let prev = entry.prev_next.to_le_bytes();
    let sum = checksum(&[&pos, &prev, &entry.source, &entry.data]);
    let mut out = Vec::with_capacity(HEADER + entry.data.len());
    out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&pos);
    out.extend_from_slice(&prev);
    out.extend_from_slice(&entry.source);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&entry.data);
    out
}

/// Parses the records of `bytes` from offset 0: the valid ones, and where they stop.
fn parse(bytes: &[u8], max_message: usize) -> (Vec<Entry>, u64) {
    let mut entries = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let h = &bytes[at..at + HEADER];
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        if len > max_message || bytes.len() - at - HEADER < len {
            break;
        }
        let pos = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
        let prev_next = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
        let source: [u8; 16] = h[20..36].try_into().expect("16 bytes");
        let sum = u64::from_le_bytes(h[36..44].try_into().expect("8 bytes"));
        let data = &bytes[at + HEADER..at + HEADER + len];
        if checksum(&[&h[4..12], &h[12..20], &source, data]) != sum {
            break;
        }
        at += HEADER + len;
        entries.push(Entry {
            source,
            pos,
            prev_next,
            data: data.to_vec(),
            end: at as u64,
        });
    }
    (entries, at as u64)
}

impl Journal {
    /// Opens (or starts) the outbox of mailbox `name`, dropping a record cut short.
    pub(crate) fn open(state: &StateDir, name: &str, max_message: usize) -> Result<Journal> {
        let path = state.path(&format!("outbox.mailbox.{name}"));
        let acked_path = state.path(&format!("outbox.mailbox.{name}.acked"));
        let open = |p: &PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(p)
                .map_err(|e| io(p, e))
        };
        let mut file = open(&path)?;
        let acked_file = open(&acked_path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
        let (entries, valid) = parse(&bytes, max_message);
        if valid < bytes.len() as u64 {
            file.set_len(valid).map_err(|e| io(&path, e))?;
        }
        let mut acked = [0u8; 32];
        let (mut start, mut last_acked) = match acked_file.read_exact_at(&mut acked, 0) {
            Ok(()) => {
                let source: [u8; 16] = acked[8..24].try_into().expect("16 bytes");
                let pos = u64::from_le_bytes(acked[24..32].try_into().expect("8 bytes"));
                let start = u64::from_le_bytes(acked[0..8].try_into().expect("8 bytes"));
                (start, (source != [0; 16]).then_some((source, pos)))
            }
            Err(_) => (0, None),
        };
        // An offset that is not a record boundary (past the end, after a truncation or a
        // compaction) means: send everything again; the exporting side drops duplicates.
        if start != 0 && !entries.iter().any(|e| e.end == start) {
            start = 0;
        }
        let last = entries.last().map(|e| (e.source, e.pos)).or(last_acked);
        if let Some(acked) = entries.iter().rfind(|e| e.end <= start) {
            last_acked = Some((acked.source, acked.pos));
        }
        let pending = entries.into_iter().filter(|e| e.end > start).collect();
        Ok(Journal {
            path,
            file,
            acked_file,
            acked_path,
            pending,
            start,
            end: valid,
            last,
            last_acked,
        })
    }

    /// True if the message at `pos` of `source` is in the outbox already (a bridge was
    /// killed after journaling it and before releasing it).
    pub(crate) fn has(&self, source: &[u8; 16], pos: u64) -> bool {
        matches!(self.last, Some((s, p)) if s == *source && pos <= p)
    }

    /// Appends the message at `pos` of `source`: once this returns, its slot may be released.
    pub(crate) fn append(&mut self, source: [u8; 16], pos: u64, data: &[u8]) -> Result<()> {
        let prev_next = match self.last {
            Some((s, p)) if s == source => p + 1,
            _ => 0,
        };
        let mut entry = Entry {
            source,
            pos,
            prev_next,
            data: data.to_vec(),
            end: 0,
        };
        let bytes = record(&entry);
        self.file
            .write_all_at(&bytes, self.end)
            .map_err(|e| io(&self.path, e))?;
        self.end += bytes.len() as u64;
        entry.end = self.end;
        self.last = Some((source, pos));
        self.pending.push_back(entry);
        Ok(())
    }

    fn write_acked(&self, start: u64) -> Result<()> {
        let mut bytes = [0u8; 32];
        bytes[0..8].copy_from_slice(&start.to_le_bytes());
        if let Some((source, pos)) = self.last_acked {
            bytes[8..24].copy_from_slice(&source);
            bytes[24..32].copy_from_slice(&pos.to_le_bytes());
        }
        self.acked_file
            .write_all_at(&bytes, 0)
            .map_err(|e| io(&self.acked_path, e))
    }

    /// The oldest pending message is acknowledged: forget it.
    pub(crate) fn ack_front(&mut self) -> Result<()> {
        let Some(entry) = self.pending.pop_front() else {
            return Ok(());
        };
        self.last_acked = Some((entry.source, entry.pos));
        self.start = entry.end;
        if self.pending.is_empty() {
            self.file.set_len(0).map_err(|e| io(&self.path, e))?;
            self.end = 0;
            self.start = 0;
            return self.write_acked(0);
        }
        if self.start >= COMPACT_AT {
            return self.compact();
        }
        self.write_acked(self.start)
    }

    fn compact(&mut self) -> Result<()> {
        let tmp = self.path.with_extension("compacting");
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        let mut end = 0u64;
        for entry in &mut self.pending {
            let bytes = record(entry);
            out.write_all(&bytes).map_err(|e| io(&tmp, e))?;
            end += bytes.len() as u64;
            entry.end = end;
        }
        self.write_acked(0)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
        self.file = out;
        self.start = 0;
        self.end = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> (StateDir, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "ipckit-bridge-journal-{tag}-{}",
            std::process::id()
        ));
        (StateDir::open(&path).unwrap(), path)
    }

    #[test]
    fn pending_entries_survive_reopening_and_acks_and_a_torn_tail_are_respected() {
        let (state, path) = dir("a");
        let source = [7u8; 16];
        let mut journal = Journal::open(&state, "jobs", 64).unwrap();
        for pos in [3u64, 4, 6] {
            journal
                .append(source, pos, format!("m{pos}").as_bytes())
                .unwrap();
        }
        journal.ack_front().unwrap();
        assert!(journal.has(&source, 6) && !journal.has(&source, 7));
        drop(journal);
        // A record cut short at the end, as a kill mid-write leaves it.
        let outbox = path.join("outbox.mailbox.jobs");
        let mut bytes = std::fs::read(&outbox).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&outbox, &bytes).unwrap();

        let mut journal = Journal::open(&state, "jobs", 64).unwrap();
        let pending: Vec<(u64, u64)> = journal
            .pending
            .iter()
            .map(|e| (e.pos, e.prev_next))
            .collect();
        assert_eq!(pending, [(4, 4), (6, 5)]);
        assert!(journal.has(&source, 6));
        journal.ack_front().unwrap();
        journal.ack_front().unwrap();
        assert!(journal.pending.is_empty());
        drop(journal);
        let journal = Journal::open(&state, "jobs", 64).unwrap();
        assert!(journal.pending.is_empty());
        assert!(
            journal.has(&source, 6),
            "the last acknowledged position is remembered"
        );
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn compaction_keeps_the_pending_entries() {
        let (state, path) = dir("b");
        let source = [1u8; 16];
        let mut journal = Journal::open(&state, "big", 4096).unwrap();
        let data = vec![0xabu8; 4000];
        let n = (COMPACT_AT / 4000) + 10;
        for pos in 0..n {
            journal.append(source, pos, &data).unwrap();
        }
        for _ in 0..n - 3 {
            journal.ack_front().unwrap();
        }
        drop(journal);
        let journal = Journal::open(&state, "big", 4096).unwrap();
        let left: Vec<u64> = journal.pending.iter().map(|e| e.pos).collect();
        assert_eq!(left, [n - 3, n - 2, n - 1]);
        std::fs::remove_dir_all(&path).unwrap();
    }
}
