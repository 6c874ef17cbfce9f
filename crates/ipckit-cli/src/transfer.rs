//! The send and receive loops that `ipckit send` / `publish` and `ipckit recv` / `subscribe`
//! share: one place for reading messages from the arguments or standard input, and one for
//! writing what arrives, as lines, as exact bytes or as JSON with the same keys for every
//! mechanism.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use ipckit::{Deadline, MessageReceiver, Metadata};
use serde::Serialize;

use crate::exit::Interrupted;
use crate::mailbox_cmd::WaitArgs;

/// How a send loop reads its input and talks about waiting.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions<'a> {
    /// All of standard input is one message, byte for byte (`--binary`).
    pub binary: bool,
    /// Say on stderr that the command waits for room even when stderr is not a terminal.
    pub verbose: bool,
    /// The whole deadline of each message.
    pub deadline: Deadline,
    /// What a full link means, for the one-time note (`mailbox "jobs" is full`).
    pub full: &'a str,
}

/// Sends each of `messages` in order, or, if there are none, each line of standard input
/// (any bytes but `\n`; a trailing `\r` is dropped), or with `binary` all of standard input as
/// one message. `send` is called with the deadline to use: first without waiting, so that a
/// full link is noticed (and said once on stderr), then in slices of the caller's deadline,
/// so that SIGINT or SIGTERM end the wait (and the command, cleanly) at once.
pub fn send_each(
    messages: &[String],
    options: SendOptions<'_>,
    mut send: impl FnMut(&[u8], Deadline) -> Result<()>,
) -> Result<()> {
    let signals = Signals::install()?;
    let mut say = options.verbose || std::io::stderr().is_terminal();
    let mut send_one = |msg: &[u8]| -> Result<()> {
        let full = |e: &anyhow::Error| {
            matches!(e.downcast_ref::<ipckit::Error>(), Some(ipckit::Error::Full))
        };
        match send(msg, Deadline::Now) {
            Err(e) if full(&e) && options.deadline != Deadline::Now => {}
            other => return other,
        }
        if say {
            say = false;
            eprintln!(
                "ipckit: {}: waiting for room (Ctrl-C gives up; the messages sent so far stay \
                 delivered)",
                options.full
            );
        }
        loop {
            signals.check()?;
            match send(msg, slice(options.deadline)) {
                Err(e)
                    if matches!(
                        e.downcast_ref::<ipckit::Error>(),
                        Some(ipckit::Error::Timeout)
                    ) && !options.deadline.expired() => {}
                Err(e) => {
                    signals.check()?;
                    return Err(e);
                }
                Ok(()) => return Ok(()),
            }
        }
    };
    if !messages.is_empty() {
        for msg in messages {
            send_one(msg.as_bytes())?;
        }
        return Ok(());
    }
    let mut input = Input::new(signals);
    if options.binary {
        let mut all = Vec::new();
        while input.fill()? {}
        std::mem::swap(&mut all, &mut input.buf);
        return send_one(&all);
    }
    while let Some(mut line) = input.line()? {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        send_one(&line)?;
    }
    Ok(())
}

/// Standard input read straight from descriptor 0, waiting in [`LOOK_UP`] slices so that a
/// signal is noticed while the command waits for input (a `read` would just be restarted).
struct Input<'a> {
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts (the lines before it were handed out).
    pos: usize,
    eof: bool,
    signals: &'a Signals,
}

impl<'a> Input<'a> {
    fn new(signals: &'a Signals) -> Input<'a> {
        Input {
            buf: Vec::new(),
            pos: 0,
            eof: false,
            signals,
        }
    }

    /// Reads what is there into the buffer; false at the end of input.
    fn fill(&mut self) -> Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        if self.eof {
            return Ok(false);
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let stdin = std::io::stdin();
        let wait = Timespec {
            tv_sec: 0,
            tv_nsec: LOOK_UP.as_nanos() as i64,
        };
        loop {
            self.signals.check()?;
            let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
            match poll(&mut fds, Some(&wait)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => break,
                // Not pollable (a regular file is always ready anyway): just read.
                Err(_) => break,
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = loop {
            match rustix::io::read(&stdin, &mut chunk) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => self.signals.check()?,
                Err(e) => {
                    return Err(std::io::Error::from(e)).context("cannot read standard input")
                }
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        self.eof = n == 0;
        Ok(!self.eof)
    }

    /// The next line without its `\n` (the last may lack one); `None` at the end.
    fn line(&mut self) -> Result<Option<Vec<u8>>> {
        let mut searched = self.pos;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                let line = self.buf[self.pos..end].to_vec();
                self.pos = end + 1;
                return Ok(Some(line));
            }
            // Filling moves the unread part to the front of the buffer.
            searched = self.buf.len() - self.pos;
            if !self.fill()? {
                let rest = self.buf.split_off(self.pos);
                self.pos = 0;
                return Ok((!rest.is_empty()).then_some(rest));
            }
        }
    }
}

/// The next slice of a wait that ends at `deadline`: at most [`LOOK_UP`] long.
fn slice(deadline: Deadline) -> Deadline {
    match deadline {
        Deadline::Now => Deadline::Now,
        Deadline::Never => Deadline::after(LOOK_UP),
        Deadline::At(at) => Deadline::At(at.min(Instant::now() + LOOK_UP)),
    }
}

/// How many messages to receive, how long to wait, how to print them.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Receive this many messages (default 1).
    #[arg(long, conflicts_with = "follow")]
    pub count: Option<u64>,
    /// Keep receiving until interrupted (Ctrl-C or SIGTERM leave cleanly).
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// One JSON object per message, with its metadata: `data` (the text, `null` if the bytes
    /// are not UTF-8), `data_base64` (the exact bytes), `len`, `sender_pid`, `sender_uid`,
    /// `sequence`, `missed` (`null` where the mechanism does not know).
    #[arg(long, conflicts_with = "binary")]
    pub json: bool,
    /// Write each message's bytes exactly, nothing added. With more than one message
    /// (`--count N`, `--follow`), each is preceded by its length as 4 bytes, little-endian.
    #[arg(long)]
    pub binary: bool,
}

/// One received message as `--json` prints it: the same keys whatever it came through.
#[derive(Debug, Serialize)]
struct Received<'a> {
    /// The message as text, when its bytes are UTF-8.
    data: Option<Cow<'a, str>>,
    /// The message's exact bytes, base64 (RFC 4648, padded).
    data_base64: String,
    /// Its length in bytes.
    len: usize,
    /// Who sent it, where the mechanism knows.
    sender_pid: Option<u32>,
    /// The sender's user id, where the mechanism knows.
    sender_uid: Option<u32>,
    /// The sender's sequence number.
    sequence: Option<u64>,
    /// Messages this receiver missed just before this one (an overrun topic subscriber).
    missed: Option<u64>,
}

impl<'a> Received<'a> {
    fn of(data: &'a [u8], meta: &Metadata) -> Received<'a> {
        Received {
            data: std::str::from_utf8(data).ok().map(Cow::Borrowed),
            data_base64: base64(data),
            len: data.len(),
            sender_pid: meta.sender_pid,
            sender_uid: meta.sender_uid,
            sequence: meta.sequence,
            missed: meta.missed,
        }
    }
}

/// Standard base64 with padding (RFC 4648 section 4); a dependency for twenty lines is not
/// worth it.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How often a waiting receive looks up to see a signal or a closed stdout.
const LOOK_UP: Duration = Duration::from_millis(100);

/// SIGINT and SIGTERM, caught so that a waiting receive leaves its mailbox or topic cleanly
/// (its participant entry released) instead of dying inside it. A second signal while the
/// first is being handled ends the process at once, as the default would.
pub(crate) struct Signals {
    caught: Arc<AtomicUsize>,
}

impl Signals {
    /// Catches SIGINT and SIGTERM from now on (once per process; later calls share it).
    pub(crate) fn install() -> Result<&'static Signals> {
        static SIGNALS: std::sync::OnceLock<Signals> = std::sync::OnceLock::new();
        if let Some(signals) = SIGNALS.get() {
            return Ok(signals);
        }
        use signal_hook::consts::{SIGINT, SIGTERM};
        let caught = Arc::new(AtomicUsize::new(0));
        let pending = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&pending))?;
            signal_hook::flag::register(sig, Arc::clone(&pending))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&caught), sig as usize)?;
        }
        Ok(SIGNALS.get_or_init(|| Signals { caught }))
    }

    pub(crate) fn check(&self) -> std::result::Result<(), Interrupted> {
        match self.caught.load(Ordering::Relaxed) {
            0 => Ok(()),
            sig => Err(Interrupted(sig as i32)),
        }
    }
}

/// True once nobody can read our stdout any more (`ipckit recv --follow | head -1` after
/// `head` exited): a pipe whose reader is gone polls as an error.
fn stdout_closed() -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&now)).is_ok()
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

fn closed_stdout() -> anyhow::Error {
    std::io::Error::from(std::io::ErrorKind::BrokenPipe).into()
}

/// One receive that waits as `deadline` says, looking up every [`LOOK_UP`] for a signal or a
/// closed stdout, so that neither leaves the receiver blocked.
fn recv_watching(
    rx: &mut impl MessageReceiver,
    buf: &mut Vec<u8>,
    deadline: Deadline,
    signals: &Signals,
) -> Result<Metadata> {
    loop {
        signals.check()?;
        if stdout_closed() {
            return Err(closed_stdout());
        }
        match rx.recv_deadline(buf, slice(deadline)) {
            Err(ipckit::Error::Timeout) if !deadline.expired() => continue,
            // A signal that interrupted the wait is ours, not an error of the link.
            Err(e) => {
                signals.check()?;
                return Err(e.into());
            }
            Ok(meta) => return Ok(meta),
        }
    }
}

/// Receives as `args` says from `rx` (called `what` in messages: `mailbox "jobs"`), writing
/// each message followed by a newline, as exact bytes or as one JSON object per line.
///
/// A message is consumed when it is received, so this looks at stdout before taking each one
/// and stops once it is closed. Messages taken while the reader was still there are written
/// to it, and lost if it leaves without reading them.
pub fn receive_each(rx: &mut impl MessageReceiver, args: &ReceiveArgs, what: &str) -> Result<()> {
    let limit = if args.follow {
        u64::MAX
    } else {
        args.count.unwrap_or(1)
    };
    let framed = args.binary && limit > 1;
    let signals = Signals::install()?;
    let deadline = args.wait.deadline();
    let stdout = std::io::stdout();
    let mut buf = Vec::new();
    for _ in 0..limit {
        let meta = recv_watching(rx, &mut buf, deadline, signals)
            .with_context(|| format!("no message from {what}"))?;
        if let Some(missed) = meta.missed.filter(|&n| n > 0) {
            if !args.json {
                eprintln!(
                    "ipckit: missed {missed} message{} from {what}: this subscriber fell behind \
                     and they were overwritten (or, across a bridge, a subscriber before it did)",
                    if missed == 1 { "" } else { "s" }
                );
            }
        }
        let mut out = stdout.lock();
        if args.json {
            serde_json::to_writer(&mut out, &Received::of(&buf, &meta))?;
            out.write_all(b"\n")?;
        } else if args.binary {
            if framed {
                let len = u32::try_from(buf.len()).context("message longer than 4 GiB")?;
                out.write_all(&len.to_le_bytes())?;
            }
            out.write_all(&buf)?;
        } else {
            out.write_all(&buf)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }
}
