//! `ipckit`: create, inspect, drive and benchmark inter-process communication.
//!
//! Exit codes: 0 success; 1 error; 2 usage; 3 would block (`--nonblocking`); 4 timed out.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod exit;

/// Inter-process communication for Linux: create, inspect, drive and benchmark it.
#[derive(Debug, Parser)]
#[command(name = "ipckit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what this build of ipckit offers.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!("ipckit {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    exit::report(result)
}
