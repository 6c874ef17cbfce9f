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
//! 2. the same `grep` between two ipckit ends of the shell's pipes:
//!    `sh -c 'shell_pipeline produce file.txt | grep error | shell_pipeline show'`. The producer
//!    writes the file's lines into its stdout with `pipe::byte_writer_from_fd` (a plain byte
//!    stream, no frames), the real `grep` filters them, and the last process reads its stdin
//!    with `pipe::byte_reader_from_fd` and prints what arrives;
//! 3. ipckit starting `grep` itself with `pipe::spawn_bytes`, writing its stdin and reading its
//!    stdout (the parent-child pipe pair the shell builds for `|`).
//!
//! All three print the same lines.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use ipckit::pipe;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const FILE: &str = "boot ok\nerror: disk full\nretrying\nerror: still full\ndone\n";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("produce") => return produce(&args[2]),
        Some("show") => return show(),
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
    let ipckit = shell(r#""$1" produce "$2" | grep error | "$1" show"#)?;
    println!("$ (pipe::spawn_bytes) grep error");
    let spawned = spawn_grep(&std::fs::read(file)?)?;
    print!("{spawned}");
    if tools != ipckit || tools != spawned || tools.lines().count() != 2 {
        return Err("the pipelines disagree".into());
    }
    println!(
        "all three pipelines kept the same {} lines",
        tools.lines().count()
    );
    Ok(())
}

/// `grep error` as a child, its stdin and stdout plain byte-stream pipes.
fn spawn_grep(input: &[u8]) -> Result<String> {
    let mut grep = pipe::spawn_bytes(Command::new("grep").arg("error"))?;
    grep.stdout.set_read_timeout(Some(Duration::from_secs(20)));
    grep.stdin.write_all(input)?;
    drop(grep.stdin); // end of file for grep
    let mut out = String::new();
    grep.stdout.read_to_string(&mut out)?;
    if !grep.child.wait()?.success() {
        return Err("grep failed".into());
    }
    Ok(out)
}

/// `cat file.txt`: the file's bytes into stdout, a plain byte stream.
fn produce(file: &str) -> Result<()> {
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    let mut out = pipe::byte_writer_from_fd(stdout)?;
    out.write_all(&std::fs::read(file)?)?;
    Ok(())
}

/// Prints what arrives on stdin until every writer has closed it.
fn show() -> Result<()> {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut input = pipe::byte_reader_from_fd(stdin)?;
    input.set_read_timeout(Some(Duration::from_secs(20)));
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    print!("{text}");
    Ok(())
}
