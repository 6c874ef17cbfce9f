//! `ipckit ls` and `ipckit clean`.

use anyhow::Result;
use ipckit::namespace;

/// Runs `ipckit ls`: every named ipckit object, as a table or as JSON.
pub fn ls(json: bool) -> Result<()> {
    let objects = namespace::list()?;
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
            o.name,
            o.depth.map_or_else(dash, |d| d.to_string()),
            o.capacity.unwrap_or_else(dash),
            o.mode.map_or_else(dash, |m| format!("{m:04o}")),
            o.alive,
            o.dead,
            o.error.map(|e| format!("  ({e})")).unwrap_or_default(),
        )?;
    }
    crate::bridge_cmd::ls_section()
}

/// Runs `ipckit clean`: repairs what dead processes left; `--dry-run` only reports.
pub fn clean(dry_run: bool) -> Result<()> {
    let actions = namespace::clean(dry_run)?;
    if actions.is_empty() {
        outln!("nothing to clean")?;
    }
    for a in actions {
        outln!("{} {}: {}", a.kind, a.name, a.action)?;
    }
    Ok(())
}
