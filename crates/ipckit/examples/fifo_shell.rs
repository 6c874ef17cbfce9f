//! Named pipes (FIFOs) between unrelated processes, used from the shell.
//!
//! From the course notes `004_f923ffdb808308aa.txt`, section "2. Named Pipes (FIFOs)" (created
//! by `mkfifo()`, a name in the filesystem, persistent until deleted, one direction, first in
//! first out; usage `mkfifo /tmp/myfifo`, `process1 > /tmp/myfifo &`, `process2 < /tmp/myfifo`),
//! with `000_ff1fd86384b37cfd.txt`, "Named Pipes", `001_403aba211db897e6.txt`, "Named Pipes
//! (FIFOs)" (no parent-child relationship needed), and `003_aa59fdfdb716713a.txt`, "Pipes".
//!
//! `cargo run --example fifo_shell`:
//!
//! 1. `ipckit::fifo::create` makes the FIFO (`mkfifo(3)`), and the shell sees a named pipe;
//! 2. the notes' two lines, with this program as process1 and process2:
//!    `sh -c 'fifo_shell process1 > FIFO & fifo_shell process2 < FIFO; wait'`. The two are
//!    siblings the shell starts, strangers to each other: they share only the FIFO's name;
//! 3. the FIFO outlives both; this process opens it for reading with `fifo::open_read` while a
//!    shell tool writes into it (`fifo_shell process1 | cat > FIFO`);
//! 4. `fifo::remove` deletes it.
//!
//! ipckit's FIFO carries length-prefixed messages today: the ends are ipckit programs, and a
//! shell tool in between must copy bytes unchanged (`cat` does). `echo text > FIFO` into an
//! ipckit reader waits for a plain byte-stream form of ipckit's FIFOs.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ipckit::{fifo, Error, MessageReceiver, MessageSender};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const MESSAGES: [&str; 3] = ["one", "two", "three"];

fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("process1") => return process1(),
        Some("process2") => return process2(),
        _ => {}
    }
    let path = std::env::temp_dir().join(format!("ipckit-myfifo-{}", std::process::id()));
    fifo::create(&path, 0o600)?;
    let outcome = run(&path);
    fifo::remove(&path)?;
    println!("removed {} (it existed until deleted)", path.display());
    outcome
}

fn shell(script: &str, path: &Path) -> Result<String> {
    // Shown as typed: "$1" is this program, "$2" the FIFO.
    let shown = script
        .replace(r#""$1""#, "fifo_shell")
        .replace(r#""$2""#, &path.display().to_string());
    println!("$ {shown}");
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(std::env::current_exe()?)
        .arg(path)
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    print!("{text}");
    if !out.status.success() {
        return Err(format!("{script:?} failed: {}", out.status).into());
    }
    Ok(text)
}

fn run(path: &Path) -> Result<()> {
    shell(
        r#"test -p "$2" && echo "test -p: a named pipe in the filesystem""#,
        path,
    )?;
    let out = shell(r#""$1" process1 > "$2" & "$1" process2 < "$2"; wait"#, path)?;
    if !MESSAGES
        .iter()
        .all(|m| out.contains(&format!("process2 read {m:?}")))
    {
        return Err("process2 did not read every message".into());
    }
    println!(
        "the FIFO is still there after both exited: {}",
        path.exists()
    );

    // This process reads; the shell writes through `cat`. Open the read end first, so the
    // shell's open for writing finds a reader.
    let mut reader = fifo::open_read(path)?;
    let mut writer = Command::new("sh")
        .args(["-c", r#""$1" process1 | cat > "$2""#, "sh"])
        .arg(std::env::current_exe()?)
        .arg(path)
        .spawn()?;
    let mut received = Vec::new();
    let outcome = loop {
        match reader.recv_timeout(Duration::from_secs(20)) {
            Ok(message) => received.push(String::from_utf8(message.data)?),
            Err(Error::Disconnected) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if outcome.is_err() {
        let _ = writer.kill();
    }
    let status = writer.wait()?;
    outcome?;
    println!("fifo::open_read received {received:?} from `process1 | cat > FIFO`");
    if received != MESSAGES || !status.success() {
        return Err("the messages through cat differ".into());
    }
    Ok(())
}

/// Writes the messages into its stdout: the FIFO, opened by the shell's `>`.
fn process1() -> Result<()> {
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    let mut fifo = ipckit::pipe::sender_from_fd(stdout)?;
    for message in MESSAGES {
        fifo.send(message.as_bytes())?;
    }
    Ok(())
}

/// Reads its stdin, the FIFO opened by the shell's `<`, until every writer has closed it.
fn process2() -> Result<()> {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut fifo = ipckit::pipe::receiver_from_fd(stdin)?;
    loop {
        match fifo.recv_timeout(Duration::from_secs(20)) {
            Ok(message) => println!("process2 read {:?}", String::from_utf8(message.data)?),
            Err(Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
