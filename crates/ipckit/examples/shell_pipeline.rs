//! The shell's pipe operator: `cat file.txt | grep "error"`.
//!
//! From the course notes `004_f923ffdb808308aa.txt`, section "1. Pipes" (usage in the Unix
//! shell: `command1 | command2`, the first command's stdout becomes the second's stdin through
//! a pipe; example `cat file.txt | grep "error"`), with `000_ff1fd86384b37cfd.txt`, "Pipes"
//! (the `|` operator) and `001_403aba211db897e6.txt`, "Pipes".
//!
//! `cargo run --example shell_pipeline` writes a small `file.txt`, then runs:
//!
//! 1. the notes' pipeline itself, `sh -c 'cat file.txt | grep error'`, with the real tools;
//! 2. the same filter with ipckit at both ends of the shell's pipes:
//!    `sh -c 'shell_pipeline produce file.txt | cat | shell_pipeline grep error'`. The producer
//!    sends each line as a message on its stdout, `cat` relays the bytes unchanged, and the
//!    last process receives messages on its stdin and keeps those containing "error".
//!
//! Both print the same lines. ipckit's pipes carry length-prefixed messages today, so a tool
//! that copies bytes (`cat`, `tee`, `dd`) works between two ipckit ends, but one that reads
//! lines (`grep`) would see the frame headers: until ipckit pipes have a plain byte-stream
//! form, the filtering step is ipckit's own.

use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use ipckit::{pipe, Error, MessageReceiver, MessageSender};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const FILE: &str = "boot ok\nerror: disk full\nretrying\nerror: still full\ndone\n";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("produce") => return produce(&args[2]),
        Some("grep") => return grep(&args[2]),
        _ => {}
    }
    let file = std::env::temp_dir().join(format!("ipckit-file-{}.txt", std::process::id()));
    std::fs::write(&file, FILE)?;
    let outcome = run(&file);
    std::fs::remove_file(&file)?;
    outcome
}

fn run(file: &std::path::Path) -> Result<()> {
    let shell = |script: &str| -> Result<String> {
        // Shown as typed: "$1" is this program, "$2" the file.
        let shown = script
            .replace(r#""$1""#, "shell_pipeline")
            .replace(r#""$2""#, &file.display().to_string());
        println!("$ {shown}");
        let out = Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(std::env::current_exe()?)
            .arg(file)
            .output()?;
        if !out.status.success() {
            return Err(format!("{script:?} failed: {}", out.status).into());
        }
        let text = String::from_utf8(out.stdout)?;
        print!("{text}");
        Ok(text)
    };
    let tools = shell(r#"cat "$2" | grep error"#)?;
    let ipckit = shell(r#""$1" produce "$2" | cat | "$1" grep error"#)?;
    if tools != ipckit || tools.lines().count() != 2 {
        return Err("the two pipelines disagree".into());
    }
    println!(
        "both pipelines kept the same {} lines",
        tools.lines().count()
    );
    Ok(())
}

/// `cat file.txt`, as messages: one per line, on stdout.
fn produce(file: &str) -> Result<()> {
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    let mut out = pipe::sender_from_fd(stdout)?;
    for line in std::fs::read_to_string(file)?.lines() {
        out.send(line.as_bytes())?;
    }
    Ok(())
}

/// `grep PATTERN`, over messages on stdin.
fn grep(pattern: &str) -> Result<()> {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut input = pipe::receiver_from_fd(stdin)?;
    loop {
        match input.recv_timeout(Duration::from_secs(20)) {
            Ok(message) => {
                let line = String::from_utf8(message.data)?;
                if line.contains(pattern) {
                    println!("{line}");
                }
            }
            // Every writer closed: the end of the input, as for grep.
            Err(Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
