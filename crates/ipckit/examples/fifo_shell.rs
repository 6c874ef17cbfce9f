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
//!    siblings the shell starts, strangers to each other: they share only the FIFO's name.
//!    process1 writes lines into the FIFO as a plain byte stream (`pipe::byte_writer_from_fd`
//!    on its stdout), process2 reads them (`pipe::byte_reader_from_fd` on its stdin);
//! 3. the FIFO outlives both; the shell's own tools then use it with this process:
//!    `echo text > FIFO` into `fifo::open_read_bytes`, and `cat FIFO` showing exactly the bytes
//!    `fifo::open_write_bytes` wrote;
//! 4. `fifo::remove` deletes it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipckit::{fifo, pipe, Deadline};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const MESSAGES: [&str; 3] = ["one", "two", "three"];
const WAIT: Duration = Duration::from_secs(20);

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
    println!("$ {}", shown(script, path));
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

/// A script as typed: "$1" is this program, "$2" the FIFO.
fn shown(script: &str, path: &Path) -> String {
    script
        .replace(r#""$1""#, "fifo_shell")
        .replace(r#""$2""#, &path.display().to_string())
}

/// Starts a shell script in the background (its stdout piped back here).
fn start(script: &str, path: &Path) -> Result<std::process::Child> {
    println!("$ {} &", shown(script, path));
    Ok(Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(std::env::current_exe()?)
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()?)
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

    // `echo text > FIFO` into this process. Open the read end first, so the shell's open for
    // writing finds a reader.
    let mut reader = fifo::open_read_bytes(path)?;
    reader.set_read_timeout(Some(WAIT));
    let mut echo = start(r#"echo text > "$2""#, path)?;
    let mut received = String::new();
    let read = reader.read_to_string(&mut received);
    let status = echo.wait()?;
    read?;
    println!("fifo::open_read_bytes received {received:?}");
    if received != "text\n" || !status.success() {
        return Err("echo's bytes did not arrive as written".into());
    }
    // Closed, so that the next open for writing waits for cat, the only reader.
    drop(reader);

    // `cat FIFO` shows what this process writes.
    let mut cat = start(r#"cat "$2""#, path)?;
    let mut writer = fifo::open_write_bytes(path, Deadline::after(WAIT))?;
    writer.write_all(b"plain bytes, no frame headers\n")?;
    drop(writer); // end of file for cat
    let mut shown = String::new();
    cat.stdout
        .take()
        .ok_or("piped")?
        .read_to_string(&mut shown)?;
    let status = cat.wait()?;
    print!("{shown}");
    if shown != "plain bytes, no frame headers\n" || !status.success() {
        return Err("cat did not show the bytes written".into());
    }
    println!("cat showed exactly the bytes fifo::open_write_bytes wrote");
    Ok(())
}

/// Writes the messages, one per line, into its stdout: the FIFO, opened by the shell's `>`.
fn process1() -> Result<()> {
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    let mut fifo = pipe::byte_writer_from_fd(stdout)?;
    for message in MESSAGES {
        writeln!(fifo, "{message}")?;
    }
    Ok(())
}

/// Reads lines from its stdin, the FIFO opened by the shell's `<`, until every writer has
/// closed it.
fn process2() -> Result<()> {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut fifo = pipe::byte_reader_from_fd(stdin)?;
    fifo.set_read_timeout(Some(WAIT));
    for line in BufReader::new(fifo).lines() {
        println!("process2 read {:?}", line?);
    }
    Ok(())
}
