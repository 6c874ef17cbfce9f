//! `ipckit mailbox create|rm`, `ipckit send`, `ipckit recv`: driving mailboxes from a shell.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ipckit::shm::mailbox::Mailbox;
use ipckit::{Capacity, Deadline, MessageReceiver, MessageSender, WhenFull};

use crate::units::{parse_duration, parse_size};

/// `ipckit mailbox ...`
#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Create a mailbox (exclusive: fails if the name is taken).
    Create(CreateArgs),
    /// Remove a mailbox's name; processes using it keep it until they let go.
    Rm {
        /// The mailbox's name.
        name: String,
    },
}

/// Options of `ipckit mailbox create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The mailbox's name (no '/').
    pub name: String,
    /// How many messages it holds.
    #[arg(long, default_value_t = ipckit::shm::mailbox::DEFAULT_CAPACITY, conflicts_with_all = ["rendezvous", "unbounded"])]
    pub capacity: usize,
    /// Zero capacity: a send returns only once a receiver has taken the message.
    #[arg(long, conflicts_with = "unbounded")]
    pub rendezvous: bool,
    /// No fixed limit: senders never wait.
    #[arg(long)]
    pub unbounded: bool,
    /// The largest message, in bytes (`4096`, `64k`).
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    pub max_msg_size: usize,
    /// File mode, in octal.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode like 0600"))
}

/// How long a send or receive may wait.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait at most this long (like 500ms or 2s); exit code 4 when it runs out.
    #[arg(long, value_parser = parse_duration, conflicts_with = "nonblocking")]
    pub timeout: Option<Duration>,
    /// Do not wait at all; exit code 3 if the operation would block.
    #[arg(long)]
    pub nonblocking: bool,
}

impl WaitArgs {
    /// The deadline these options describe.
    pub fn deadline(&self) -> Deadline {
        match (self.nonblocking, self.timeout) {
            (true, _) => Deadline::Now,
            (false, Some(d)) => Deadline::after(d),
            (false, None) => Deadline::Never,
        }
    }
}

/// Options of `ipckit send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The mailbox's name.
    pub name: String,
    /// Messages to send, in order; none: one message per line of standard input.
    pub messages: Vec<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// `cache`: when the mailbox is full, keep messages in this process and deliver them as
    /// room appears (the command exits once all are delivered).
    #[arg(long, value_parser = ["cache"])]
    pub when_full: Option<String>,
}

/// Options of `ipckit recv`.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The mailbox's name.
    pub name: String,
    /// Receive this many messages (default 1).
    #[arg(long, conflicts_with = "follow")]
    pub count: Option<u64>,
    /// Keep receiving until interrupted.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// One JSON object per message, with its metadata.
    #[arg(long)]
    pub json: bool,
}

/// Runs `ipckit mailbox ...`.
pub fn mailbox(command: MailboxCommand) -> Result<()> {
    match command {
        MailboxCommand::Create(args) => {
            let capacity = if args.rendezvous {
                Capacity::Rendezvous
            } else if args.unbounded {
                Capacity::Unbounded
            } else {
                Capacity::Bounded(args.capacity)
            };
            Mailbox::builder(&args.name)
                .capacity_kind(capacity)
                .max_message_size(args.max_msg_size)
                .mode(args.mode)
                .create()
                .with_context(|| format!("cannot create mailbox {:?}", args.name))?;
            Ok(())
        }
        MailboxCommand::Rm { name } => {
            Mailbox::remove(&name).with_context(|| format!("cannot remove mailbox {name:?}"))
        }
    }
}

fn open(name: &str) -> Result<Mailbox> {
    Mailbox::open(name).with_context(|| {
        format!("cannot open mailbox {name:?} (create it with `ipckit mailbox create {name}`)")
    })
}

/// Runs `ipckit send`.
pub fn send(args: SendArgs) -> Result<()> {
    let mailbox = open(&args.name)?;
    let mut tx = mailbox.sender()?;
    let caching = args.when_full.is_some();
    if caching {
        tx = tx.when_full(WhenFull::Cache);
    }
    let deadline = args.wait.deadline();
    let mut send_one = |msg: &[u8]| -> Result<()> {
        let result = if caching {
            tx.send(msg)
        } else {
            tx.send_deadline(msg, deadline)
        };
        result.with_context(|| format!("cannot send to mailbox {:?}", args.name))
    };
    if args.messages.is_empty() {
        for line in std::io::stdin().lock().lines() {
            send_one(line.context("cannot read standard input")?.as_bytes())?;
        }
    } else {
        for msg in &args.messages {
            send_one(msg.as_bytes())?;
        }
    }
    tx.flush_deadline(deadline).with_context(|| {
        format!(
            "cached messages for mailbox {:?} are undelivered",
            args.name
        )
    })
}

/// Runs `ipckit recv`.
pub fn recv(args: RecvArgs) -> Result<()> {
    let mailbox = open(&args.name)?;
    let mut rx = mailbox.receiver()?;
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
            .with_context(|| format!("no message from mailbox {:?}", args.name))?;
        let mut out = stdout.lock();
        if args.json {
            let line = serde_json::json!({
                "data": String::from_utf8_lossy(&buf),
                "len": buf.len(),
                "sender_pid": meta.sender_pid,
                "sender_uid": meta.sender_uid,
                "sequence": meta.sequence,
            });
            writeln!(out, "{line}")?;
        } else {
            out.write_all(&buf)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}
