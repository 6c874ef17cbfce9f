//! `ipckit ls` and `ipckit clean`.

use anyhow::{bail, Context, Result};
use ipckit::namespace::{self, ObjectInfo, Skipped, SourceSummary};
use ipckit::shm::mailbox::Mailbox;
use ipckit::shm::topic::Topic;
use serde::Serialize;

/// Text found on the machine, made safe for a terminal and a table: control characters
/// (a newline in a path would start a new row) and backslashes are escaped, the rest is kept.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reports on stderr what was found and left alone (the rest is still listed).
fn report_skipped(skipped: &[Skipped]) {
    for s in skipped {
        eprintln!("ipckit: skipped {}: {}", escape(&s.what), escape(&s.why));
    }
}

/// Runs `ipckit ls`: every named ipckit object, as a table or as JSON.
pub fn ls(json: bool) -> Result<()> {
    let listing = namespace::inspect()?;
    report_skipped(&listing.skipped);
    let objects = listing.objects;
    if json {
        let mut entries = objects
            .iter()
            .map(|o| serde_json::to_value(LsEntry::of(o)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // The bridge's section as one more entry, so the top level stays the array it was.
        if let Some(bridge) = crate::bridge_cmd::ls_json_entry() {
            entries.push(bridge);
        }
        outln!("{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(());
    }
    outln!(
        "{:<10} {:<32} {:>7} {:>16} {:>5} {:>6} {:>5}",
        "KIND",
        "NAME",
        "DEPTH",
        "CAPACITY",
        "MODE",
        "ALIVE",
        "DEAD"
    )?;
    for o in objects {
        let dash = || "-".to_string();
        outln!(
            "{:<10} {:<32} {:>7} {:>16} {:>5} {:>6} {:>5}{}",
            o.kind,
            escape(&o.name),
            o.depth.map_or_else(dash, |d| d.to_string()),
            escape(&o.capacity.unwrap_or_else(dash)),
            o.mode.map_or_else(dash, |m| format!("{m:04o}")),
            o.alive,
            o.dead,
            o.error
                .map(|e| format!("  ({})", escape(&e)))
                .unwrap_or_default(),
        )?;
        for held in &o.held {
            outln!("{:<10} waiters wait for: {}", "", escape(held))?;
        }
        for source in &o.sources {
            outln!("{:<10} {}", "", escape(&source.to_string()))?;
        }
    }
    crate::bridge_cmd::ls_section()
}

/// One object as `ipckit ls --json` prints it (the schema in docs/CLI.md): numbers as
/// numbers, the mode as the octal text the table shows.
#[derive(Debug, Serialize)]
struct LsEntry<'a> {
    kind: &'static str,
    name: &'a str,
    /// Messages waiting (mailbox, queue), or the slowest subscriber's lag (topic).
    depth: Option<u64>,
    /// Messages it holds; 0 for a rendezvous mailbox, `null` for an unbounded one or where
    /// the capacity is not a count of messages.
    capacity: Option<u64>,
    /// The capacity as the table shows it (`64`, `rendezvous`, `64:overrun`, `4096 bytes`).
    capacity_text: Option<&'a str>,
    /// A topic's `overrun` or `backpressure`.
    overflow: Option<&'a str>,
    /// Size in bytes, for kinds measured in bytes (segments).
    bytes: Option<u64>,
    /// File mode in octal, as in the table (`"0600"`).
    mode: Option<String>,
    alive: usize,
    dead: usize,
    error: Option<&'a str>,
    /// What a waiter on it may be waiting for: slots and locks held, by which pid.
    held: &'a [String],
    /// A mailbox's sources of idempotent senders: `id` (hex), `owner`, `owner_alive`,
    /// `delivered`, `in_flight`, `last_used_unix_ns`, `consistent`.
    sources: &'a [SourceSummary],
}

impl<'a> LsEntry<'a> {
    fn of(o: &'a ObjectInfo) -> LsEntry<'a> {
        let text = o.capacity.as_deref();
        let (mut capacity, mut overflow, mut bytes) = (None, None, None);
        match text {
            Some("rendezvous") => capacity = Some(0),
            Some(t) => {
                if let Some(n) = t.strip_suffix(" bytes") {
                    bytes = n.parse().ok();
                } else if let Some((n, how)) = t.split_once(':') {
                    capacity = n.parse().ok();
                    overflow = Some(how);
                } else {
                    capacity = t.parse().ok();
                }
            }
            None => {}
        }
        LsEntry {
            kind: o.kind.as_str(),
            name: &o.name,
            depth: o.depth,
            capacity,
            capacity_text: text,
            overflow,
            bytes,
            mode: o.mode.map(|m| format!("{m:04o}")),
            alive: o.alive,
            dead: o.dead,
            error: o.error.as_deref(),
            held: &o.held,
            sources: &o.sources,
        }
    }
}

/// Runs `ipckit rm NAME`: removes the mailbox or the topic of that name, whichever exists.
pub fn rm(name: &str) -> Result<()> {
    let is_mailbox = Mailbox::list()?.iter().any(|m| m == name);
    let is_topic = Topic::list()?.iter().any(|t| t == name);
    match (is_mailbox, is_topic) {
        (true, true) => bail!(
            "both a mailbox and a topic are called {name:?}: say which with \
             `ipckit mailbox rm {name}` or `ipckit topic rm {name}`"
        ),
        (true, false) => {
            Mailbox::remove(name).with_context(|| format!("cannot remove mailbox {name:?}"))?;
            outln!("removed mailbox {name:?}")?;
        }
        (false, true) => {
            Topic::remove(name).with_context(|| format!("cannot remove topic {name:?}"))?;
            outln!("removed topic {name:?}")?;
        }
        (false, false) => {
            bail!("no mailbox or topic is called {name:?} (`ipckit ls` lists what there is)")
        }
    }
    Ok(())
}

/// Runs `ipckit clean`: repairs what dead processes left; `--dry-run` only reports.
pub fn clean(dry_run: bool) -> Result<()> {
    let plan = namespace::plan()?;
    report_skipped(&plan.skipped);
    let actions = if dry_run { plan.preview() } else { plan.run() };
    if actions.is_empty() {
        outln!("nothing to clean")?;
    }
    for a in actions {
        outln!("{} {}: {}", a.kind, escape(&a.name), escape(&a.action))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_keeps_plain_text_and_defuses_control_characters() {
        assert_eq!(escape("/tmp/a b.sock"), "/tmp/a b.sock");
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(escape("a\u{1b}[2J"), "a\\u{1b}[2J");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
    }
}
