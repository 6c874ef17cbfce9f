//! `ipckit ls` and `ipckit clean`.

use anyhow::Result;
use ipckit::namespace::{self, Skipped};

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
        outln!("{}", serde_json::to_string_pretty(&objects)?)?;
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
    }
    crate::bridge_cmd::ls_section()
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
