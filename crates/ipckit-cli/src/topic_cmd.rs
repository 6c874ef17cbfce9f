//! `ipckit topic create|rm`, `ipckit publish`, `ipckit subscribe`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ipckit::shm::topic::{Overflow, Topic};
use ipckit::MessageSender;

use crate::mailbox_cmd::WaitArgs;
use crate::transfer::{receive_each, send_each, ReceiveArgs};
use crate::units::parse_size;

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
    /// The largest message, in bytes.
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    pub max_msg_size: usize,
}

/// Options of `ipckit publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic's name.
    pub name: String,
    /// Messages to publish, in order; none: one message per line of standard input.
    pub messages: Vec<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Options of `ipckit subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The topic's name.
    pub name: String,
    /// Start with (up to) the last N messages.
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
            Topic::builder(&args.name)
                .capacity(args.history)
                .max_message_size(args.max_msg_size)
                .overflow(overflow)
                .create()
                .with_context(|| format!("cannot create topic {:?}", args.name))?;
            Ok(())
        }
        TopicCommand::Rm { name } => {
            Topic::remove(&name).with_context(|| format!("cannot remove topic {name:?}"))
        }
    }
}

fn open(name: &str) -> Result<Topic> {
    Topic::open(name).with_context(|| {
        format!("cannot open topic {name:?} (create it with `ipckit topic create {name}`)")
    })
}

/// Runs `ipckit publish`.
pub fn publish(args: PublishArgs) -> Result<()> {
    let mut publisher = open(&args.name)?.publisher()?;
    let deadline = args.wait.deadline();
    send_each(&args.messages, |msg| {
        publisher
            .send_deadline(msg, deadline)
            .with_context(|| format!("cannot publish to topic {:?}", args.name))
    })
}

/// Runs `ipckit subscribe`.
pub fn subscribe(args: SubscribeArgs) -> Result<()> {
    let mut subscriber = open(&args.name)?.subscriber_with_history(args.history)?;
    receive_each(
        &mut subscriber,
        &args.receive,
        &format!("topic {:?}", args.name),
    )
}
