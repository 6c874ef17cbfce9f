//! `ipckit recv A B C` and `ipckit subscribe A B`: several names in one wait (a
//! [`WaitSet`]), each message printed as `NAME: message` (or with `"name"` in `--json`);
//! and `ipckit recv NAME --until-senders-gone`.

use std::io::Write;

use anyhow::{Context, Result};
use ipckit::waitset::{WaitSet, Waitable};
use ipckit::{Deadline, MessageReceiver, Metadata};

use crate::transfer::{receive_each, ReceiveArgs};

/// Receives from every `(name, endpoint)` as `args` says; `--count N` counts the messages of
/// all of them together. `kind` (`mailbox`, `topic`) names them in errors.
pub fn receive_many<R: MessageReceiver + Waitable>(
    mut endpoints: Vec<(String, R)>,
    args: &ReceiveArgs,
    kind: &str,
) -> Result<()> {
    let mut set = WaitSet::new();
    for (name, rx) in &endpoints {
        set.add(rx)
            .with_context(|| format!("cannot wait on {kind} {name:?}"))?;
    }
    let names: Vec<String> = endpoints.iter().map(|(n, _)| format!("{n:?}")).collect();
    let plural = if kind.ends_with('x') { "es" } else { "s" };
    let what = format!("{kind}{plural} {}", names.join(", "));
    let limit = if args.follow {
        u64::MAX
    } else {
        args.count.unwrap_or(1)
    };
    let mut printed = 0u64;
    let mut buf = Vec::new();
    // A deadline per message, as with one name.
    let mut deadline = args.wait.deadline();
    while printed < limit {
        let mut got = false;
        // One message from each ready endpoint per round, so a busy one does not starve the
        // others.
        for (name, rx) in endpoints.iter_mut() {
            if printed == limit {
                break;
            }
            match rx.recv_deadline(&mut buf, Deadline::Now) {
                Ok(meta) => {
                    print_named(name, &buf, &meta, args.json)?;
                    printed += 1;
                    got = true;
                }
                Err(ipckit::Error::Empty) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot receive from {kind} {name:?}"))
                }
            }
        }
        if got {
            deadline = args.wait.deadline();
            continue;
        }
        set.wait(deadline)
            .with_context(|| format!("no message from {what}"))?;
    }
    Ok(())
}

fn print_named(name: &str, data: &[u8], meta: &Metadata, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let object = serde_json::json!({
            "name": name,
            "data": String::from_utf8_lossy(data),
            "len": data.len(),
            "sender_pid": meta.sender_pid,
            "sender_uid": meta.sender_uid,
            "sequence": meta.sequence,
            "missed": meta.missed,
        });
        serde_json::to_writer(&mut out, &object)?;
    } else {
        out.write_all(name.as_bytes())?;
        out.write_all(b": ")?;
        out.write_all(data)?;
    }
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// `ipckit recv NAME --until-senders-gone`: receives until every message is received and no
/// live sender remains, then succeeds.
pub fn receive_until_senders_gone(
    rx: ipckit::shm::MailboxReceiver,
    args: &ReceiveArgs,
    what: &str,
) -> Result<()> {
    let mut rx = rx.until_senders_gone();
    match receive_each(&mut rx, args, what) {
        Err(e) if matches!(e.downcast_ref(), Some(ipckit::Error::Disconnected)) => Ok(()),
        other => other,
    }
}
