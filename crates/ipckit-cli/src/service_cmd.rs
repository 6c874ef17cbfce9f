//! `ipckit serve NAME -- CMD [ARGS]...` and `ipckit call NAME MESSAGE`: services from a shell.
//!
//! `serve` welcomes each client with [`SERVE_WELCOME`]; after that welcome, every reply
//! starts with one status byte, `0` (the rest is the command's stdout) or `1` (the rest
//! says why the command failed). `call` decodes that when it sees the welcome, and prints
//! any other server's reply as it is.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use ipckit::service::{Client, Server, MAX_MESSAGE};
use ipckit::Deadline;

use crate::units::parse_duration;

/// The acceptance reply of `ipckit serve`: its replies carry a status byte.
pub const SERVE_WELCOME: &[u8] = b"ipckit-serve/1";
const OK: u8 = 0;
const FAILED: u8 = 1;

/// Options of `ipckit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service's name.
    pub name: String,
    /// File mode of the connection port, in octal: who may connect.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
    /// The handler: run once per request, the request on its stdin, the reply from its
    /// stdout; a non-zero exit is an error reply.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Options of `ipckit call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The service's name.
    pub name: String,
    /// The request.
    pub message: String,
    /// Wait at most this long for the connection and the reply (like 500ms or 2s); exit
    /// code 4 when it runs out.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode like 0600"))
}

/// Runs the handler on one request: `(OK, stdout)` or `(FAILED, why)`.
fn handle(command: &[String], request: &[u8]) -> (u8, Vec<u8>) {
    let child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            return (
                FAILED,
                format!("cannot run {:?}: {e}", command[0]).into_bytes(),
            )
        }
    };
    // Written from a thread: a handler that answers before reading all of its input must
    // not leave us both waiting on full pipes.
    let mut stdin = child.stdin.take().expect("piped");
    let request = request.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&request);
    });
    let output = child.wait_with_output();
    let _ = writer.join();
    match output {
        Err(e) => (FAILED, format!("{:?}: {e}", command[0]).into_bytes()),
        Ok(out) if out.status.success() => {
            if out.stdout.len() + 1 > MAX_MESSAGE {
                let why = format!(
                    "{:?} wrote {} bytes, more than a reply carries ({} bytes)",
                    command[0],
                    out.stdout.len(),
                    MAX_MESSAGE - 1
                );
                (FAILED, why.into_bytes())
            } else {
                (OK, out.stdout)
            }
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut why = format!("{:?} {}", command[0], out.status);
            if !stderr.trim().is_empty() {
                why = format!("{why}: {}", stderr.trim());
            }
            why.truncate(MAX_MESSAGE - 1);
            (FAILED, why.into_bytes())
        }
    }
}

/// Runs `ipckit serve`: until SIGINT or SIGTERM, one thread per connection, one process per
/// request. A signal ends it cleanly: the connection port and its registry entry go with the
/// server.
pub fn serve(args: ServeArgs) -> Result<()> {
    let signals = crate::transfer::Signals::install()?;
    let server = Server::bind(&args.name, args.mode)
        .with_context(|| format!("cannot serve {:?}", args.name))?;
    eprintln!(
        "ipckit: serving {:?} with {:?}; stop with Ctrl-C",
        args.name, args.command
    );
    let command = std::sync::Arc::new(args.command);
    loop {
        signals.check()?;
        let pending = match server.accept_deadline(Deadline::after(Duration::from_millis(100))) {
            Ok(pending) => pending,
            Err(ipckit::Error::Timeout) => continue,
            Err(e) => {
                eprintln!("ipckit: serve {:?}: a connection failed: {e}", args.name);
                continue;
            }
        };
        let command = std::sync::Arc::clone(&command);
        std::thread::spawn(move || {
            let Ok(mut connection) = pending.accept(SERVE_WELCOME) else {
                return;
            };
            while let Ok(request) = connection.next_request(Deadline::Never) {
                let (status, body) = handle(&command, &request.data);
                let mut reply = Vec::with_capacity(body.len() + 1);
                reply.push(status);
                reply.extend_from_slice(&body);
                if connection.reply(request.id, &reply).is_err() {
                    return;
                }
            }
        });
    }
}

/// Runs `ipckit call`: prints the reply; exit 1 on an error reply, 4 on timeout.
pub fn call(args: CallArgs) -> Result<()> {
    let deadline = args.timeout.map_or(Deadline::Never, Deadline::after);
    let (mut connection, welcome) = Client::connect(&args.name, b"ipckit call", deadline)
        .with_context(|| format!("cannot connect to service {:?}", args.name))?;
    let reply = connection
        .call(args.message.as_bytes(), deadline)
        .with_context(|| format!("service {:?} did not answer", args.name))?;
    let mut stdout = std::io::stdout().lock();
    if welcome != SERVE_WELCOME {
        stdout.write_all(&reply)?;
        if !reply.ends_with(b"\n") {
            stdout.write_all(b"\n")?;
        }
        return Ok(());
    }
    match reply.split_first() {
        Some((&OK, body)) => {
            stdout.write_all(body)?;
            Ok(())
        }
        Some((&FAILED, why)) => Err(anyhow!(
            "service {:?} answered with an error: {}",
            args.name,
            String::from_utf8_lossy(why).trim_end()
        )),
        _ => Err(anyhow!(
            "service {:?} sent a reply without its status byte",
            args.name
        )),
    }
}
