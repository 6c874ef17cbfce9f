//! An ordinary (anonymous) pipe from a parent to the child it starts.
//!
//! From the course notes `003_aa59fdfdb716713a.txt`, section "Pipes" (the pipe system call
//! returns two descriptors, a read handle and a write handle; parent and child share them
//! after fork; the parent writes into one end and the child reads from the other), with
//! `000_ff1fd86384b37cfd.txt`, "Ordinary Pipes", and `001_403aba211db897e6.txt`, "Ordinary pipes
//! (anonymous pipes)": one-way, producer-consumer style, parent and child only. Data waits in
//! the kernel's buffer until it is read, and the pipe lasts while a descriptor is open.
//!
//! `cargo run --example pipe_parent_child`: the parent makes a pipe (`pipe2`), starts the child
//! (this program again, `child`) with the read end as its standard input, writes three
//! messages and closes the write end; the child reads them and then sees the end of the stream.
//!
//! ipckit's pipe carries length-prefixed messages today (see the module docs of
//! `ipckit::pipe`); each `send` arrives as one `recv`.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipckit::{pipe, Error, MessageReceiver, MessageSender};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const MESSAGES: [&str; 3] = ["first", "second", "third and last"];

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("child") {
        return child();
    }
    let (mut write_end, read_end) = pipe::pipe()?;
    let (read_fd, _) = read_end.into_fds();
    let mut child = Command::new(std::env::current_exe()?)
        .arg("child")
        .stdin(Stdio::from(read_fd.ok_or("the read end has a descriptor")?))
        .spawn()?;
    // The child holds the read end now (the parent's copy went with the Command).
    println!(
        "parent: pid {} started child pid {}",
        std::process::id(),
        child.id()
    );
    for message in MESSAGES {
        write_end.send(message.as_bytes())?;
        println!("parent: wrote {message:?}");
    }
    drop(write_end);
    println!("parent: closed the write end");
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the child failed: {status}").into());
    }
    Ok(())
}

fn child() -> Result<()> {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut read_end = pipe::receiver_from_fd(stdin)?;
    let mut received = Vec::new();
    loop {
        // A bound on the wait: a broken parent makes this fail, never hang.
        match read_end.recv_timeout(Duration::from_secs(20)) {
            Ok(message) => {
                let text = String::from_utf8(message.data)?;
                println!("child: read {text:?}");
                received.push(text);
            }
            Err(Error::Disconnected) => {
                println!("child: end of stream (every write end is closed)");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if received != MESSAGES {
        return Err(format!("read {received:?}, expected {MESSAGES:?}").into());
    }
    Ok(())
}
