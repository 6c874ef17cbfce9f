//! Issue 18, item 1: pipes, FIFOs, TCP and Unix stream sockets as plain byte streams, each
//! against a real external program (`cat`, `grep`, `sh -c 'echo ...'`, bash's `/dev/tcp`),
//! and two concurrent framed writers on one FIFO whose frames never interleave.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{role, spawn_role, unique_name, wait_with_watchdog, with_watchdog};
use ipckit::socket::{tcp, unix};
use ipckit::{fifo, pipe, Deadline, Error, MessageReceiver, MessageSender};

const WATCHDOG: Duration = Duration::from_secs(60);

/// Removes a path at the end of a test.
struct RemovePath(std::path::PathBuf);
impl Drop for RemovePath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn fifo_path(tag: &str) -> RemovePath {
    let path = std::env::temp_dir().join(unique_name(tag));
    fifo::create(&path, 0o600).unwrap();
    RemovePath(path)
}

#[test]
fn pipe_bytes_through_cat_and_grep() {
    with_watchdog(WATCHDOG, || {
        let text = b"boot ok\nerror: disk full\nretrying\nerror: still full\n";
        let mut cat = pipe::spawn_bytes(&mut Command::new("cat")).unwrap();
        cat.stdin.write_all(text).unwrap();
        drop(cat.stdin);
        let mut out = Vec::new();
        cat.stdout.read_to_end(&mut out).unwrap();
        assert_eq!(out, text, "cat gives back exactly the bytes written");
        assert!(cat.child.wait().unwrap().success());

        let mut grep = pipe::spawn_bytes(Command::new("grep").arg("error")).unwrap();
        grep.stdin.write_all(text).unwrap();
        grep.stdin.close_write().unwrap();
        let mut lines = String::new();
        grep.stdout.read_to_string(&mut lines).unwrap();
        assert_eq!(lines, "error: disk full\nerror: still full\n");
        assert!(grep.child.wait().unwrap().success());
    });
}

#[test]
fn pipe_bytes_from_a_shell_echo() {
    with_watchdog(WATCHDOG, || {
        let (tx, mut rx) = pipe::pipe_bytes().unwrap();
        let (_, write_end) = tx.into_fds();
        let mut child = Command::new("sh")
            .args(["-c", "echo hello from sh"])
            .stdout(Stdio::from(write_end.unwrap()))
            .spawn()
            .unwrap();
        let mut text = String::new();
        rx.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello from sh\n");
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn fifo_bytes_from_echo_redirected_into_it() {
    let path = fifo_path("fifo-echo");
    let p = path.0.clone();
    with_watchdog(WATCHDOG, move || {
        let mut rx = fifo::open_read_bytes(&p).unwrap();
        let mut child = Command::new("sh")
            .args(["-c", r#"echo text > "$0""#])
            .arg(&p)
            .spawn()
            .unwrap();
        let mut text = String::new();
        rx.read_to_string(&mut text).unwrap();
        assert_eq!(text, "text\n");
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn cat_on_a_fifo_shows_exactly_the_bytes_written() {
    let path = fifo_path("fifo-cat");
    let p = path.0.clone();
    with_watchdog(WATCHDOG, move || {
        let cat = Command::new("cat")
            .arg(&p)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut tx = fifo::open_write_bytes(&p, Deadline::after(WATCHDOG)).unwrap();
        tx.write_all(b"no frame headers\n").unwrap();
        tx.write_all(&[0u8, 1, 2, 255]).unwrap();
        drop(tx);
        let out = cat.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"no frame headers\n\x00\x01\x02\xff");
    });
}

#[test]
fn fifo_read_bytes_times_out_without_a_writer() {
    let path = fifo_path("fifo-timeout");
    let mut rx = fifo::open_read_bytes(&path.0).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(
        rx.read_deadline(&mut buf, Deadline::Now),
        Err(Error::Empty)
    ));
    rx.set_read_timeout(Some(Duration::from_millis(20)));
    assert_eq!(
        rx.read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::TimedOut
    );
}

#[test]
fn tcp_bytes_with_bash_dev_tcp() {
    with_watchdog(WATCHDOG, || {
        let listener = tcp::Listener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // bash's /dev/tcp: a plain TCP client that knows nothing of ipckit.
        let client = Command::new("bash")
            .args([
                "-c",
                r#"exec 3<>"/dev/tcp/127.0.0.1/$0"; echo "hello over tcp" >&3; head -n 1 <&3"#,
            ])
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut conn = listener.accept_bytes().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            assert_eq!(conn.read(&mut byte).unwrap(), 1);
            line.push(byte[0]);
        }
        assert_eq!(line, b"hello over tcp\n");
        conn.write_all(b"hello back\n").unwrap();
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello back\n");
    });
}

#[test]
fn unix_stream_bytes_echoed_by_cat() {
    with_watchdog(WATCHDOG, || {
        let (mut ours, theirs) = unix::stream_pair_bytes().unwrap();
        let (fd, _) = theirs.into_fds();
        let fd: OwnedFd = fd.unwrap();
        // cat reads the socket and writes back into it: an echo server.
        let mut cat = Command::new("cat")
            .stdin(Stdio::from(fd.try_clone().unwrap()))
            .stdout(Stdio::from(fd))
            .spawn()
            .unwrap();
        let text = b"through a unix stream socket and back\n";
        ours.write_all(text).unwrap();
        ours.close_write().unwrap();
        let mut back = Vec::new();
        ours.read_to_end(&mut back).unwrap();
        assert_eq!(back, text);
        assert!(cat.wait().unwrap().success());
    });
}

#[test]
fn unix_stream_bytes_carry_peer_credentials() {
    let (a, _b) = unix::stream_pair_bytes().unwrap();
    assert_eq!(a.peer().sender_pid, Some(std::process::id()));
}

#[test]
fn framed_over_a_byte_stream_is_chosen_explicitly() {
    let (tx, rx) = pipe::pipe_bytes().unwrap();
    let (mut tx, mut rx) = (tx.framed(), ipckit::stream::FramedStream::over(rx));
    tx.send(b"a message").unwrap();
    assert_eq!(rx.recv().unwrap().data, b"a message");
}

#[test]
fn a_closed_write_end_says_so_and_still_has_a_descriptor_to_poll() {
    use std::os::fd::AsFd;
    let (mut tx, mut rx) = pipe::pipe_bytes().unwrap();
    tx.close_write().unwrap();
    let _ = tx.as_fd();
    assert!(matches!(
        tx.write_deadline(b"x", Deadline::Now),
        Err(Error::Unsupported(_))
    ));
    let mut buf = [0u8; 4];
    assert_eq!(rx.read(&mut buf).unwrap(), 0, "the reader sees the end");
}

#[test]
fn an_inherited_descriptor_gets_its_blocking_mode_back() {
    // A shell's terminal or pipe is shared: leaving it non-blocking would break the shell.
    let (_read, write) = std::io::pipe().unwrap();
    let nonblocking = |fd: &std::io::PipeWriter| {
        rustix::fs::fcntl_getfl(fd)
            .unwrap()
            .contains(rustix::fs::OFlags::NONBLOCK)
    };
    let stream = pipe::byte_writer_from_fd(OwnedFd::from(write.try_clone().unwrap())).unwrap();
    assert!(nonblocking(&write), "ipckit waits with poll");
    drop(stream);
    assert!(
        !nonblocking(&write),
        "blocking again once the stream is gone"
    );
}

#[test]
fn writing_to_a_pipe_without_a_reader_is_broken_pipe() {
    let (mut tx, rx) = pipe::pipe_bytes().unwrap();
    drop(rx);
    assert_eq!(
        tx.write(b"x").unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );
    assert!(matches!(
        tx.write_deadline(b"x", Deadline::Now),
        Err(Error::Disconnected)
    ));
}

// ---- two concurrent framed writers on one FIFO ----------------------------------------

const WRITER_MESSAGES: usize = 100;
/// Larger than the pipe itself (64 KiB): the kernel splits such writes, and without the
/// FIFO's lock the other writer's bytes land in between.
const LARGE: usize = 100_000;

/// A message every byte of which says who wrote it; its length says which kind it is.
fn message(writer: u8, i: usize) -> Vec<u8> {
    let len = if i % 3 == 0 { 100 } else { LARGE + i };
    vec![writer; len]
}

#[test]
fn two_framed_fifo_writers_never_interleave() {
    const TEST: &str = "two_framed_fifo_writers_never_interleave";
    if let Some((role, path)) = role() {
        let writer: u8 = role.parse().unwrap();
        let mut tx = fifo::open_write(&path, Deadline::after(WATCHDOG)).unwrap();
        for i in 0..WRITER_MESSAGES {
            // Blocking and timed sends both take the lock.
            if i % 2 == 0 {
                tx.send(&message(writer, i)).unwrap();
            } else {
                tx.send_timeout(&message(writer, i), WATCHDOG).unwrap();
            }
        }
        return;
    }
    let path = fifo_path("fifo-writers");
    let arg = path.0.to_str().unwrap().to_string();
    let mut rx = fifo::open_read(&path.0).unwrap();
    let mut writers = [spawn_role(TEST, "1", &arg), spawn_role(TEST, "2", &arg)];
    let mut counts = [0usize; 3];
    for _ in 0..2 * WRITER_MESSAGES {
        let msg = rx.recv_timeout(WATCHDOG).unwrap().data;
        let writer = msg[0];
        assert!(
            msg.iter().all(|&b| b == writer),
            "a frame of writer {writer} has another writer's bytes inside"
        );
        let i = counts[writer as usize];
        assert_eq!(
            msg.len(),
            message(writer, i).len(),
            "writer {writer}'s order"
        );
        counts[writer as usize] += 1;
    }
    assert_eq!(counts[1..], [WRITER_MESSAGES, WRITER_MESSAGES]);
    for w in &mut writers {
        assert!(wait_with_watchdog(w, WATCHDOG).success());
    }
}
