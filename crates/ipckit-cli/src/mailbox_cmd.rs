//! `ipckit mailbox create|rm`, `ipckit send`, `ipckit recv`: driving mailboxes from a shell.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use ipckit::shm::mailbox::Mailbox;
use ipckit::{Capacity, Deadline, MessageSender, WhenFull};

use crate::transfer::{receive_each, send_each, ReceiveArgs, SendOptions};
use crate::units::{parse_duration, parse_size, refused_size, shm_footprint};

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
    /// At most one sender at a time (bounded mailboxes): sends need no compare-and-swap,
    /// and with `--single-receiver` too the mailbox takes the fastest path.
    #[arg(long)]
    pub single_sender: bool,
    /// At most one receiver at a time (bounded or unbounded): a receiver killed holding a
    /// message leaves it to the next one, delivered again, never lost.
    #[arg(long)]
    pub single_receiver: bool,
}

/// Parses an octal file mode (`0600`, `0o640`, `644`).
pub fn parse_mode(text: &str) -> Result<u32, String> {
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
    /// Send all of standard input as one message, byte for byte (any bytes, newlines too).
    #[arg(long, conflicts_with = "messages")]
    pub binary: bool,
    /// Say on stderr when the mailbox is full and the command waits for room (said anyway
    /// when stderr is a terminal).
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// `cache`: when the mailbox is full, keep the message in the mailbox's cache and return at
    /// once; it is delivered when room appears, after this command has exited. One message may
    /// wait so: a second one while the first waits fails (exit code 3).
    #[arg(long)]
    pub when_full: Option<WhenFullArg>,
}

/// What `ipckit send --when-full` may ask for (waiting is the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WhenFullArg {
    /// Keep the message in the mailbox's cache (Mach's "temporarily cache a message").
    Cache,
}

/// Options of `ipckit recv`.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The mailbox's name; with several, one wait on all of them, each message printed as
    /// `NAME: message` (`"name"` in `--json`), `--count` counting them all together.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Exit 0 once every message is received and no live sender remains (after at least
    /// one sender has attached; before that, wait). One NAME only.
    #[arg(long)]
    pub until_senders_gone: bool,
    #[command(flatten)]
    pub receive: ReceiveArgs,
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
            let mut builder = Mailbox::builder(&args.name)
                .capacity_kind(capacity)
                .max_message_size(args.max_msg_size)
                .mode(args.mode);
            if args.single_sender {
                builder = builder.single_sender();
            }
            if args.single_receiver {
                builder = builder.single_receiver();
            }
            let mailbox = builder.create().map_err(|e| {
                let size = refused_size(&e);
                anyhow::Error::new(e)
                    .context(format!("cannot create mailbox {:?}{size}", args.name))
            })?;
            let holds = match capacity {
                Capacity::Bounded(1) => "1 message".into(),
                Capacity::Bounded(n) => format!("{n} messages"),
                Capacity::Rendezvous => "no messages (rendezvous)".into(),
                Capacity::Unbounded => "any number of messages (unbounded; it grows)".into(),
            };
            let single = match (args.single_sender, args.single_receiver) {
                (true, true) => ", one sender and one receiver at a time",
                (true, false) => ", one sender at a time",
                (false, true) => ", one receiver at a time",
                (false, false) => "",
            };
            outln!(
                "created mailbox {:?}: holds {holds} of up to {} bytes{single}; takes {}",
                args.name,
                mailbox.max_message_size(),
                shm_footprint(ipckit::shm::mailbox::KIND, &args.name)
                    .unwrap_or_else(|| "an unknown amount of /dev/shm".into())
            )?;
            Ok(())
        }
        MailboxCommand::Rm { name } => {
            Mailbox::remove(&name).with_context(|| format!("cannot remove mailbox {name:?}"))
        }
    }
}

/// Opens mailbox `name`; if there is none but a topic has that name, says to use the topic's
/// command (`verb`: `publish` or `subscribe`) instead of creating a mailbox.
fn open(name: &str, verb: &str) -> Result<Mailbox> {
    match Mailbox::open(name) {
        Err(e @ ipckit::Error::NotFound { .. }) => {
            let hint = if ipckit::shm::topic::Topic::list()
                .is_ok_and(|topics| topics.iter().any(|t| t == name))
            {
                format!("{name:?} is a topic: use `ipckit {verb} {name}`")
            } else {
                format!("create it with `ipckit mailbox create {name}`")
            };
            Err(anyhow::Error::new(e).context(format!("cannot open mailbox {name:?} ({hint})")))
        }
        other => other.with_context(|| format!("cannot open mailbox {name:?}")),
    }
}

/// Runs `ipckit send`.
pub fn send(args: SendArgs) -> Result<()> {
    let mailbox = open(&args.name, "publish")?;
    let mut tx = mailbox.sender()?;
    let caching = args.when_full == Some(WhenFullArg::Cache);
    if caching {
        tx = tx.when_full(WhenFull::Cache);
    }
    let deadline = args.wait.deadline();
    let options = SendOptions {
        binary: args.binary,
        verbose: args.verbose,
        deadline,
        full: &format!("mailbox {:?} is full", args.name),
    };
    send_each(&args.messages, options, |msg, deadline| {
        let result = if caching {
            tx.send(msg)
        } else {
            tx.send_deadline(msg, deadline)
        };
        let full = result_is_full(caching, &result);
        result.with_context(|| {
            if full {
                format!(
                    "cannot cache for mailbox {:?}: this command's earlier cached message still \
                     waits for room (or every cache entry is taken); receive from it first",
                    args.name
                )
            } else {
                format!("cannot send to mailbox {:?}", args.name)
            }
        })
    })
}

/// Whether a cached send failed because the cache could not take the message.
fn result_is_full(caching: bool, result: &ipckit::Result<()>) -> bool {
    caching && matches!(result, Err(ipckit::Error::Full))
}

/// Runs `ipckit recv`.
pub fn recv(args: RecvArgs) -> Result<()> {
    if let [name] = &args.names[..] {
        let rx = open(name, "subscribe")?.receiver()?;
        let what = format!("mailbox {name:?}");
        if args.until_senders_gone {
            return crate::multi::receive_until_senders_gone(rx, &args.receive, &what);
        }
        let mut rx = rx;
        return receive_each(&mut rx, &args.receive, &what);
    }
    if args.until_senders_gone {
        // A usage error: exit code 2, like clap's own.
        clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            "--until-senders-gone takes one mailbox NAME\n",
        )
        .exit();
    }
    let endpoints = args
        .names
        .iter()
        .map(|name| Ok((name.clone(), open(name, "subscribe")?.receiver()?)))
        .collect::<Result<Vec<_>>>()?;
    crate::multi::receive_many(endpoints, &args.receive, "mailbox")
}
