//! The send and receive loops that `ipckit send` / `publish` and `ipckit recv` / `subscribe`
//! share: one place for reading messages from the arguments or standard input, and one for
//! writing what arrives, as lines or as JSON with the same keys for every mechanism.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use clap::Args;
use ipckit::{MessageReceiver, Metadata};
use serde::Serialize;

use crate::mailbox_cmd::WaitArgs;

/// Sends each of `messages` in order, or, if there are none, each line of standard input.
pub fn send_each(messages: &[String], mut send: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    if messages.is_empty() {
        for line in std::io::stdin().lock().lines() {
            send(line.context("cannot read standard input")?.as_bytes())?;
        }
    } else {
        for msg in messages {
            send(msg.as_bytes())?;
        }
    }
    Ok(())
}

/// How many messages to receive, how long to wait, how to print them.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Receive this many messages (default 1).
    #[arg(long, conflicts_with = "follow")]
    pub count: Option<u64>,
    /// Keep receiving until interrupted.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// One JSON object per message, with its metadata: `data`, `len`, `sender_pid`,
    /// `sender_uid`, `sequence`, `missed` (`null` where the mechanism does not know).
    #[arg(long)]
    pub json: bool,
}

/// One received message as `--json` prints it: the same keys whatever it came through.
#[derive(Debug, Serialize)]
struct Received<'a> {
    /// The message, as text (invalid UTF-8 replaced).
    data: Cow<'a, str>,
    /// Its length in bytes.
    len: usize,
    /// Who sent it, where the mechanism knows.
    sender_pid: Option<u32>,
    /// The sender's user id, where the mechanism knows.
    sender_uid: Option<u32>,
    /// The sender's sequence number.
    sequence: Option<u64>,
    /// Messages this receiver missed just before this one (an overrun topic subscriber).
    missed: Option<u64>,
}

impl<'a> Received<'a> {
    fn of(data: &'a [u8], meta: &Metadata) -> Received<'a> {
        Received {
            data: String::from_utf8_lossy(data),
            len: data.len(),
            sender_pid: meta.sender_pid,
            sender_uid: meta.sender_uid,
            sequence: meta.sequence,
            missed: meta.missed,
        }
    }
}

/// Receives as `args` says from `rx` (called `what` in errors: `mailbox "jobs"`), writing each
/// message followed by a newline, or as one JSON object per line.
pub fn receive_each(rx: &mut impl MessageReceiver, args: &ReceiveArgs, what: &str) -> Result<()> {
    let limit = if args.follow {
        u64::MAX
    } else {
        args.count.unwrap_or(1)
    };
    let stdout = std::io::stdout();
    let mut buf = Vec::new();
    for _ in 0..limit {
        let meta = rx
            .recv_deadline(&mut buf, args.wait.deadline())
            .with_context(|| format!("no message from {what}"))?;
        let mut out = stdout.lock();
        if args.json {
            serde_json::to_writer(&mut out, &Received::of(&buf, &meta))?;
        } else {
            out.write_all(&buf)?;
        }
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}
