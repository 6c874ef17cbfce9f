//! `ipckit topic create|rm`, `ipckit publish`, `ipckit subscribe`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ipckit::shm::topic::{Overflow, Topic};
use ipckit::MessageSender;

use crate::mailbox_cmd::{parse_mode, WaitArgs};
use crate::transfer::{receive_each, send_each, ReceiveArgs, SendOptions};
use crate::units::{parse_size, refused_size, shm_footprint};

/// `ipckit topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (exclusive).
    Create(CreateArgs),
    /// Remove a topic's name.
    Rm {
        /// The topic's name.
        name: String,
    },
}

/// Options of `ipckit topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The topic's name (no '/').
    pub name: String,
    /// Messages kept: the longest history a subscriber can ask for, and the most it may lag.
    #[arg(long, default_value_t = ipckit::shm::topic::DEFAULT_CAPACITY)]
    pub history: usize,
    /// A slow subscriber loses the oldest messages and is told how many (default).
    #[arg(long, conflicts_with = "backpressure")]
    pub overrun: bool,
    /// Publishers wait for the slowest subscriber; nothing is lost.
    #[arg(long)]
    pub backpressure: bool,
    /// One publisher at a time: a second live publisher is refused (naming the first's
    /// pid), a dead one's place is taken over; publishing takes no lock.
    #[arg(long)]
    pub single_publisher: bool,
    /// The largest message, in bytes.
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    pub max_msg_size: usize,
    /// File mode, in octal.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
}

/// Options of `ipckit publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic's name.
    pub name: String,
    /// Messages to publish, in order; none: one message per line of standard input.
    pub messages: Vec<String>,
    /// Publish all of standard input as one message, byte for byte (any bytes, newlines too).
    #[arg(long, conflicts_with = "messages")]
    pub binary: bool,
    /// Say on stderr when a slow subscriber holds publishing back and the command waits
    /// (said anyway when stderr is a terminal).
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Options of `ipckit subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The topic's name; with several, one wait on all of them, each message printed as
    /// `NAME: message` (`"name"` in `--json`), `--count` counting them all together.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Start with up to the last N messages: as many as the topic keeps and has, if fewer
    /// (said on stderr).
    #[arg(long, default_value_t = 0)]
    pub history: usize,
    #[command(flatten)]
    pub receive: ReceiveArgs,
}

/// Runs `ipckit topic ...`.
pub fn topic(command: TopicCommand) -> Result<()> {
    match command {
        TopicCommand::Create(args) => {
            let overflow = if args.backpressure {
                Overflow::Backpressure
            } else {
                Overflow::Overrun
            };
            let builder = Topic::builder(&args.name)
                .capacity(args.history)
                .max_message_size(args.max_msg_size)
                .overflow(overflow)
                .mode(args.mode);
            let builder = if args.single_publisher {
                builder.single_publisher()
            } else {
                builder
            };
            builder.create().map_err(|e| {
                let size = refused_size(&e);
                anyhow::Error::new(e).context(format!("cannot create topic {:?}{size}", args.name))
            })?;
            outln!(
                "created topic {:?}: keeps the last {} messages of up to {} bytes{}; takes {}",
                args.name,
                args.history,
                args.max_msg_size,
                if args.single_publisher {
                    ", one publisher at a time"
                } else {
                    ""
                },
                shm_footprint(ipckit::shm::topic::KIND, &args.name)
                    .unwrap_or_else(|| "an unknown amount of /dev/shm".into())
            )?;
            Ok(())
        }
        TopicCommand::Rm { name } => {
            Topic::remove(&name).with_context(|| format!("cannot remove topic {name:?}"))
        }
    }
}

/// Opens topic `name`; if there is none but a mailbox has that name, says to use the
/// mailbox's command (`verb`: `send` or `recv`) instead of creating a topic.
fn open(name: &str, verb: &str) -> Result<Topic> {
    match Topic::open(name) {
        Err(e @ ipckit::Error::NotFound { .. }) => {
            let hint = if ipckit::shm::mailbox::Mailbox::list()
                .is_ok_and(|mailboxes| mailboxes.iter().any(|m| m == name))
            {
                format!("{name:?} is a mailbox: use `ipckit {verb} {name}`")
            } else {
                format!("create it with `ipckit topic create {name}`")
            };
            Err(anyhow::Error::new(e).context(format!("cannot open topic {name:?} ({hint})")))
        }
        other => other.with_context(|| format!("cannot open topic {name:?}")),
    }
}

/// Runs `ipckit publish`.
pub fn publish(args: PublishArgs) -> Result<()> {
    let mut publisher = open(&args.name, "send")?.publisher()?;
    let options = SendOptions {
        binary: args.binary,
        verbose: args.verbose,
        deadline: args.wait.deadline(),
        full: &format!(
            "topic {:?} is held back by its slowest subscriber (backpressure)",
            args.name
        ),
    };
    send_each(&args.messages, options, |msg, deadline| {
        publisher
            .send_deadline(msg, deadline)
            .with_context(|| format!("cannot publish to topic {:?}", args.name))
    })
}

/// Runs `ipckit subscribe`.
pub fn subscribe(args: SubscribeArgs) -> Result<()> {
    let endpoints = args
        .names
        .iter()
        .map(|name| {
            let topic = open(name, "recv")?;
            let history = replayable_history(&topic, name, args.history);
            Ok((name.clone(), topic.subscriber_with_history(history)?))
        })
        .collect::<Result<Vec<_>>>()?;
    if endpoints.len() == 1 {
        let (name, mut subscriber) = endpoints.into_iter().next().expect("one endpoint");
        return receive_each(&mut subscriber, &args.receive, &format!("topic {name:?}"));
    }
    crate::multi::receive_many(endpoints, &args.receive, "topic")
}

/// How much history to ask of `topic`: what it keeps and has, never more than its capacity
/// nor more than was ever published; says on stderr when that is less than `wanted`.
fn replayable_history(topic: &Topic, name: &str, wanted: usize) -> usize {
    if wanted == 0 {
        return 0;
    }
    let info = topic.info();
    let kept = info
        .capacity
        .min(usize::try_from(info.published).unwrap_or(usize::MAX));
    if kept < wanted {
        eprintln!(
            "ipckit: topic {name:?} keeps {} messages and has {kept}: replaying those {kept}, \
             not {wanted}",
            info.capacity
        );
    }
    wanted.min(info.capacity)
}
