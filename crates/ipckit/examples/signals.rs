//! Signals: a caught Ctrl+C, a user-defined signal with a payload, and the default and ignored
//! dispositions, restored.
//!
//! From the course notes `003_aa59fdfdb716713a.txt`, section "Signals" (the OS supports a set
//! of signals, some with a fixed meaning, some user-defined; typing Ctrl+C makes the OS send
//! SIGINT; every process has a default action for each signal, such as exiting on a terminate
//! signal, and some handlers can be overridden), with `002_aa004447b60a7019.txt`, "Common IPC
//! Mechanisms" (signals: asynchronous event notification).
//!
//! `cargo run --example signals` starts this program again as a child for each part, and sends
//! it signals the way a terminal or another process would:
//!
//! 1. **Default action.** A child that changed nothing gets SIGTERM, the terminate signal, and
//!    exits by the default action (SIGTERM rather than SIGINT here: a shell starts background
//!    jobs with SIGINT ignored, and an ignored disposition is inherited).
//! 2. **Ctrl+C caught.** A child that catches SIGINT (`ipckit::signal::Signals`) reports it
//!    and carries on to a normal exit.
//! 3. **A user-defined signal with a payload.** The parent queues SIGUSR1 with the value 42
//!    (`signal::queue`, `sigqueue(3)`); the child receives signal, value and sender
//!    (`signal::RealtimeReceiver`, a `signalfd`). Dropping the receiver gives SIGUSR1 back its
//!    disposition, still the default one.
//! 4. **Ignored, then restored.** The same child ignores SIGUSR1 (`signal::ignore`): a SIGUSR1
//!    sent now is discarded. It restores the earlier disposition, the default action, and the
//!    next SIGUSR1 ends it.
//!
//! Run `cargo run --example signals -- wait` to press Ctrl+C yourself.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ipckit::signal::{self, RealtimeReceiver, Signal, Signals};
use ipckit::Deadline;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(20);
const PAYLOAD: i32 = 42;

fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("default") => return default_child(),
        Some("catch") => return catch_child(false),
        Some("wait") => return catch_child(true),
        Some("payload") => return payload_child(),
        _ => {}
    }
    part(default_action)?;
    part(ctrl_c_caught)?;
    part(payload_then_ignored)?;
    println!("every part held");
    Ok(())
}

/// A child in a role, with its stdout read line by line and its stdin held open.
struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    fn start(role: &str) -> Result<Peer> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().ok_or("piped")?);
        Ok(Peer { child, out })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Prints the child's lines until one that starts with `prefix`.
    fn expect(&mut self, prefix: &str) -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line)? == 0 {
                return Err(format!("the child ended before saying {prefix:?}").into());
            }
            print!("  child: {line}");
            if line.starts_with(prefix) {
                return Ok(());
            }
        }
    }

    /// Tells the child to go on (one line on its stdin).
    fn go_on(&mut self) -> Result<()> {
        writeln!(self.child.stdin.as_mut().ok_or("piped")?, "go")?;
        Ok(())
    }

    /// Waits for the child to end, at most `WAIT` (then kills it).
    fn wait(mut self) -> Result<std::process::ExitStatus> {
        drop(self.child.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                // The rest of what it said.
                for line in self.out.lines() {
                    println!("  child: {}", line?);
                }
                return Ok(status);
            }
            if start.elapsed() > WAIT {
                self.child.kill()?;
                self.child.wait()?;
                return Err("the child ran past its watchdog".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn part(f: fn() -> Result<()>) -> Result<()> {
    println!();
    f()
}

fn default_action() -> Result<()> {
    println!("1. default action: SIGTERM to a child that changed nothing");
    let mut peer = Peer::start("default")?;
    peer.expect("ready")?;
    signal::send(peer.pid(), Signal::TERM)?;
    let status = peer.wait()?;
    println!(
        "   the child died of signal {:?} (SIGTERM is {})",
        status.signal(),
        Signal::TERM.0
    );
    check(
        status.signal() == Some(Signal::TERM.0),
        "SIGTERM's default action ends the process",
    )
}

fn ctrl_c_caught() -> Result<()> {
    println!("2. Ctrl+C caught: SIGINT to a child with a handler");
    let mut peer = Peer::start("catch")?;
    peer.expect("ready")?;
    signal::send(peer.pid(), Signal::INT)?;
    peer.expect("caught")?;
    let status = peer.wait()?;
    println!("   the child exited normally: {status}");
    check(status.success(), "the handler replaced the default action")
}

fn payload_then_ignored() -> Result<()> {
    println!("3. SIGUSR1 with a payload, then 4. ignored and restored");
    let mut peer = Peer::start("payload")?;
    peer.expect("ready")?;
    signal::queue(peer.pid(), Signal::USR1, PAYLOAD)?;
    peer.expect("ignoring")?;
    // Discarded on sending: the child is not even woken.
    signal::send(peer.pid(), Signal::USR1)?;
    println!("   sent SIGUSR1 while it is ignored");
    peer.go_on()?;
    peer.expect("restored")?;
    signal::send(peer.pid(), Signal::USR1)?;
    let status = peer.wait()?;
    println!(
        "   after the restore, SIGUSR1 ended the child: signal {:?}",
        status.signal()
    );
    check(
        status.signal() == Some(Signal::USR1.0),
        "the default action came back",
    )
}

fn check(held: bool, what: &str) -> Result<()> {
    if held {
        println!("   held: {what}");
        Ok(())
    } else {
        Err(format!("did not hold: {what}").into())
    }
}

/// Waits for a line on stdin, or its end.
fn wait_for_parent() -> Result<()> {
    std::io::stdin().read_line(&mut String::new())?;
    Ok(())
}

fn default_child() -> Result<()> {
    println!("ready, with SIGTERM's default disposition");
    wait_for_parent()?;
    Err("still alive: SIGTERM did not end this process".into())
}

fn catch_child(interactive: bool) -> Result<()> {
    let mut signals = Signals::new(&[Signal::INT])?;
    if interactive {
        println!("press Ctrl+C (within 60 s)");
    } else {
        println!("ready, catching SIGINT");
    }
    let limit = if interactive {
        Duration::from_secs(60)
    } else {
        WAIT
    };
    let start = Instant::now();
    loop {
        if let Some(got) = signals.pending().into_iter().next() {
            println!(
                "caught SIGINT from pid {:?}; running on instead of exiting",
                got.sender_pid
            );
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err("no SIGINT came".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn payload_child() -> Result<()> {
    let mut receiver = RealtimeReceiver::new(&[Signal::USR1])?;
    println!("ready, receiving SIGUSR1 with its payload");
    let got = receiver.recv_deadline(Deadline::after(WAIT))?;
    println!(
        "got signal {} (SIGUSR1) with payload {} from pid {}",
        got.signal.0, got.value, got.sender_pid
    );
    if got.signal != Signal::USR1 || got.value != PAYLOAD {
        return Err("not the signal or payload sent".into());
    }
    drop(receiver);
    let ignored = signal::ignore(Signal::USR1)?;
    println!("ignoring SIGUSR1");
    wait_for_parent()?;
    ignored.restore()?;
    println!("restored SIGUSR1's earlier disposition: the default action");
    wait_for_parent()?;
    Err("still alive: SIGUSR1 did not end this process".into())
}
