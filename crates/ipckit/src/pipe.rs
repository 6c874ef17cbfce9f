//! Anonymous (ordinary) pipes: a one-way kernel buffer between a parent and the children it
//! starts, as a plain byte stream or carrying length-prefixed frames.
//!
//! ```
//! use ipckit::{pipe, MessageReceiver, MessageSender};
//!
//! let (mut tx, mut rx) = pipe::pipe()?;
//! tx.send(b"through the kernel's pipe buffer")?;
//! assert_eq!(rx.recv()?.data, b"through the kernel's pipe buffer");
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! A pipe has no name: only a process that inherits an end can use it, which is why the
//! classic use is the shell's `|` between two processes it starts. [`spawn`] does exactly
//! that for framed messages; the child calls [`stdio`] to speak on its side.
//!
//! # Two forms
//!
//! [`pipe`], [`pipe_with`], [`spawn`], [`stdio`], [`sender_from_fd`] and [`receiver_from_fd`]
//! return framed message endpoints ([`FramedStream`]): both ends must be ipckit's.
//! [`pipe_bytes`], [`spawn_bytes`], [`byte_writer_from_fd`] and [`byte_reader_from_fd`] return
//! the plain byte stream ([`ByteStream`], `std::io::Read`/`Write`), what `cat`, `grep` and
//! every other program read and write.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::process::Command;
//! use ipckit::pipe;
//!
//! // `printf ... | grep error`, with ipckit writing grep's stdin and reading its stdout.
//! let mut grep = pipe::spawn_bytes(Command::new("grep").arg("error"))?;
//! grep.stdin.write_all(b"boot ok\nerror: disk full\ndone\n")?;
//! drop(grep.stdin);
//! let mut out = String::new();
//! grep.stdout.read_to_string(&mut out)?;
//! assert_eq!(out, "error: disk full\n");
//! grep.child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # References
//! - [`pipe(2)`](https://man7.org/linux/man-pages/man2/pipe.2.html),
//!   [`pipe(7)`](https://man7.org/linux/man-pages/man7/pipe.7.html)

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use rustix::pipe::PipeFlags;

use crate::error::{Error, Result};
use crate::stream::{ByteStream, FramedStream};
use crate::Capacity;

/// The sending end of a pipe.
pub type PipeSender = FramedStream;
/// The receiving end of a pipe.
pub type PipeReceiver = FramedStream;

/// A new pipe: `(sender, receiver)`. Both ends are close-on-exec; hand one to a child with
/// [`spawn`] or `Stdio::from(OwnedFd)`.
///
/// # Errors
/// An OS error from `pipe2` (too many open descriptors).
#[doc(alias = "pipe2")]
pub fn pipe() -> Result<(PipeSender, PipeReceiver)> {
    pipe_with(Capacity::KERNEL_BUFFER)
}

/// A new pipe with a capacity. A pipe is bounded by the kernel's buffer (64 KiB by default);
/// `Rendezvous` and `Unbounded` cannot be honoured on a one-way kernel buffer and are refused
/// with [`Error::Unsupported`].
///
/// # Errors
/// [`Error::Unsupported`] for `Rendezvous` or `Unbounded`; [`Error::InvalidArgument`] for
/// `Bounded(0)`; an OS error from `pipe2`.
pub fn pipe_with(capacity: Capacity) -> Result<(PipeSender, PipeReceiver)> {
    let (read, write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe", "pipe", e))?;
    let tx = FramedStream::new(None, Some(write), false, "pipe (write end)".into())?
        .with_capacity(capacity)?;
    let rx = FramedStream::new(Some(read), None, false, "pipe (read end)".into())?;
    Ok((tx, rx))
}

/// A new pipe as a plain byte stream: `(write end, read end)`, both close-on-exec.
///
/// # Errors
/// An OS error from `pipe2` (too many open descriptors).
pub fn pipe_bytes() -> Result<(ByteStream, ByteStream)> {
    let (read, write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe", "pipe", e))?;
    Ok((
        ByteStream::new(None, Some(write), false, "pipe (write end)".into())?,
        ByteStream::new(Some(read), None, false, "pipe (read end)".into())?,
    ))
}

/// A child process wired to its parent by two plain byte-stream pipes (see [`spawn_bytes`]).
#[derive(Debug)]
pub struct ByteChild {
    /// The child process (wait for it, or kill it).
    pub child: std::process::Child,
    /// Writes the child's stdin; drop it (or [`ByteStream::close_write`]) to send end-of-file.
    pub stdin: ByteStream,
    /// Reads the child's stdout.
    pub stdout: ByteStream,
}

/// Starts `command` with its stdin and stdout connected to plain byte-stream ends: any
/// program (`grep`, `sort`, `cat`) can be the child.
///
/// # Errors
/// The OS error if the command cannot be started.
pub fn spawn_bytes(command: &mut Command) -> Result<ByteChild> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::os("spawn", format!("{:?}", command.get_program()), e))?;
    let stdin = OwnedFd::from(child.stdin.take().expect("stdin is piped"));
    let stdout = OwnedFd::from(child.stdout.take().expect("stdout is piped"));
    let name = command.get_program().to_string_lossy().into_owned();
    Ok(ByteChild {
        stdin: ByteStream::new(None, Some(stdin), false, format!("pipe to {name}'s stdin"))?,
        stdout: ByteStream::new(
            Some(stdout),
            None,
            false,
            format!("pipe from {name}'s stdout"),
        )?,
        child,
    })
}

/// A pipe's (or FIFO's) write end inherited from a parent, such as this process's stdout
/// under a shell's `|` or `>`, as a plain byte stream. The descriptor is switched to
/// non-blocking mode, which every descriptor sharing its open file sees until the stream
/// drops and puts the mode back.
///
/// # Errors
/// An OS error if the descriptor cannot be made non-blocking.
pub fn byte_writer_from_fd(fd: OwnedFd) -> Result<ByteStream> {
    ByteStream::inherited(None, Some(fd), "inherited pipe (write end)".into())
}

/// A pipe's (or FIFO's) read end inherited from a parent, such as this process's stdin under
/// a shell's `|` or `<`, as a plain byte stream (see [`byte_writer_from_fd`]).
///
/// # Errors
/// An OS error if the descriptor cannot be made non-blocking.
pub fn byte_reader_from_fd(fd: OwnedFd) -> Result<ByteStream> {
    ByteStream::inherited(Some(fd), None, "inherited pipe (read end)".into())
}

/// A child process wired to its parent by two pipes: its stdin and its stdout.
#[derive(Debug)]
pub struct ChildLink {
    /// The child process (wait for it, or kill it).
    pub child: std::process::Child,
    /// Sends to the child's stdin.
    pub tx: PipeSender,
    /// Receives from the child's stdout.
    pub rx: PipeReceiver,
}

/// Starts `command` with its stdin and stdout connected to framed pipe ends (the shell's `|`,
/// both ways). The child uses [`stdio`] to get its side.
///
/// # Errors
/// The OS error if the command cannot be started.
pub fn spawn(command: &mut Command) -> Result<ChildLink> {
    let ByteChild {
        child,
        stdin,
        stdout,
    } = spawn_bytes(command)?;
    Ok(ChildLink {
        tx: FramedStream::over(stdin),
        rx: FramedStream::over(stdout),
        child,
    })
}

/// This process's stdin and stdout as framed endpoints `(sender to stdout, receiver from
/// stdin)`: the child's side of [`spawn`]. The descriptors are duplicated and switched to
/// non-blocking mode, which stdin and stdout share with them until the endpoints drop and put
/// the mode back; nothing else in the process should use stdin or stdout meanwhile.
///
/// # Errors
/// An OS error if stdin or stdout cannot be duplicated or made non-blocking.
pub fn stdio() -> Result<(PipeSender, PipeReceiver)> {
    let stdin =
        rustix::io::dup(rustix::stdio::stdin()).map_err(|e| Error::os("dup", "stdin", e))?;
    let stdout =
        rustix::io::dup(rustix::stdio::stdout()).map_err(|e| Error::os("dup", "stdout", e))?;
    Ok((
        FramedStream::over(ByteStream::inherited(
            None,
            Some(stdout),
            "stdout pipe".into(),
        )?),
        FramedStream::over(ByteStream::inherited(
            Some(stdin),
            None,
            "stdin pipe".into(),
        )?),
    ))
}

/// A pipe's write end inherited from a parent (say, as a child's fd 0 or 3), as a sender.
///
/// # Errors
/// An OS error if the descriptor cannot be made non-blocking.
pub fn sender_from_fd(fd: OwnedFd) -> Result<PipeSender> {
    byte_writer_from_fd(fd).map(FramedStream::over)
}

/// A pipe's read end inherited from a parent, as a receiver.
///
/// # Errors
/// An OS error if the descriptor cannot be made non-blocking.
pub fn receiver_from_fd(fd: OwnedFd) -> Result<PipeReceiver> {
    byte_reader_from_fd(fd).map(FramedStream::over)
}
