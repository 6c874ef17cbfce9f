//! `ipckit`: create, inspect, drive and benchmark inter-process communication.
//!
//! Exit codes: 0 success; 1 error; 2 usage; 3 would block (`--nonblocking`); 4 timed out.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` for a command's output that returns the error instead of panicking when stdout
/// is closed (`ipckit ls | head`): the command ends at its `?`, and `exit::report` counts a
/// closed stdout as success.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

/// `print!` as [`outln!`] does `println!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)
    }};
}

mod bench;
mod bridge_cmd;
mod demo;
mod doctor;
mod exit;
mod ls_cmd;
mod mailbox_cmd;
mod multi;
mod service_cmd;
mod topic_cmd;
mod transfer;
mod units;

/// Inter-process communication for Linux: create, inspect, drive and benchmark it.
#[derive(Debug, Parser)]
#[command(name = "ipckit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or remove a mailbox (a named shared-memory message queue).
    #[command(subcommand)]
    Mailbox(mailbox_cmd::MailboxCommand),
    /// Send messages to a mailbox (one per argument, or one per line of stdin).
    Send(mailbox_cmd::SendArgs),
    /// Receive messages from a mailbox; each is written followed by a newline.
    Recv(mailbox_cmd::RecvArgs),
    /// Create or remove a topic (publish-subscribe over shared memory).
    #[command(subcommand)]
    Topic(topic_cmd::TopicCommand),
    /// Publish messages to a topic (one per argument, or one per line of stdin).
    Publish(topic_cmd::PublishArgs),
    /// Receive a topic's messages; each is written followed by a newline.
    Subscribe(topic_cmd::SubscribeArgs),
    /// Remove a mailbox or topic by name, whichever it is.
    Rm {
        /// The mailbox's or topic's name.
        name: String,
    },
    /// List every named ipckit object: kind, name, depth, capacity, mode, participants.
    Ls {
        /// Print JSON instead of a table (schema in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Measure every mechanism on this machine, side by side, between two processes.
    Bench(bench::BenchArgs),
    /// One side of a benchmark row (started by `ipckit bench`).
    #[command(hide = true)]
    BenchPeer(bench::PeerArgs),
    /// Report what on this machine limits IPC: /dev/shm, queue limits, IPC namespace.
    Doctor,
    /// Run a demonstration between real processes.
    Demo(demo::DemoArgs),
    /// One process of a demonstration (started by `ipckit demo`).
    #[command(hide = true)]
    DemoChild(demo::ChildArgs),
    /// Reclaim what dead processes left behind (unread messages are kept).
    Clean {
        /// Say what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a service whose handler is a command (request on stdin, reply on stdout).
    Serve(service_cmd::ServeArgs),
    /// Call a service and print its reply (exit 1 on an error reply, 4 on timeout).
    Call(service_cmd::CallArgs),
    /// Join this host's mailboxes, topics and services to other hosts' (Zenoh; feature `bridge`).
    Bridge(bridge_cmd::BridgeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mailbox(command) => mailbox_cmd::mailbox(command),
        Command::Send(args) => mailbox_cmd::send(args),
        Command::Recv(args) => mailbox_cmd::recv(args),
        Command::Topic(command) => topic_cmd::topic(command),
        Command::Publish(args) => topic_cmd::publish(args),
        Command::Subscribe(args) => topic_cmd::subscribe(args),
        Command::Rm { name } => ls_cmd::rm(&name),
        Command::Ls { json } => ls_cmd::ls(json),
        Command::Bench(args) => bench::bench(args),
        Command::Demo(args) => demo::demo(args),
        Command::Doctor => doctor::doctor(),
        Command::DemoChild(args) => demo::child(args),
        Command::BenchPeer(args) => bench::peer(args),
        Command::Clean { dry_run } => ls_cmd::clean(dry_run),
        Command::Serve(args) => service_cmd::serve(args),
        Command::Call(args) => service_cmd::call(args),
        Command::Bridge(args) => bridge_cmd::bridge(args),
    };
    exit::report(result)
}
