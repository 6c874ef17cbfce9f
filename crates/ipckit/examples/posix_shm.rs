//! POSIX shared memory between a writer and a reader.
//!
//! From the course notes `001_403aba211db897e6.txt`, section "Example IPC Systems › POSIX IPC
//! Systems": create or open a segment with `shm_open`, size it with `ftruncate(shm_fd, 4096)`,
//! map it with `mmap`, then read and write through the mapping. `Segment::create` makes
//! exactly those three calls (`shm_open(O_CREAT | O_EXCL | O_RDWR)`, `ftruncate`, `mmap`);
//! `Segment::open` is the reader's `shm_open(O_RDWR)` and `mmap`.
//!
//! `cargo run --example posix_shm`: this process (the writer) creates a 4096-byte segment and
//! writes a message into it, then starts the reader (this program again, as `reader NAME`),
//! which finds the segment by its name alone, reads the message and writes an answer. The
//! writer reads the answer and removes the segment (`shm_unlink`).
//!
//! The notes create the object with mode `0666`, which lets every user on the machine read and
//! write it; this example uses `0600` (only its owner).

use std::process::Command;

use ipckit::shm::Segment;

/// What the segment is called under `/dev/shm`: `ipckit.<KIND>.<name>`.
const KIND: &str = "notes";
const SIZE: usize = 4096;
/// Where the reader writes its answer, away from the writer's message.
const ANSWER_AT: usize = 2048;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("reader") {
        return reader(&args[2]);
    }
    let name = format!("posix-shm-{}", std::process::id());
    let path = format!("/dev/shm/ipckit.{KIND}.{name}");
    let segment = Segment::create(KIND, &name, SIZE, 0o600)?;
    let outcome = writer(&segment, &name, &path);
    Segment::unlink(KIND, &name)?;
    assert!(!std::path::Path::new(&path).exists());
    println!("writer: removed {path} (shm_unlink)");
    outcome
}

fn writer(segment: &Segment, name: &str, path: &str) -> Result<()> {
    let message = format!("hello from the writer, pid {}", std::process::id());
    put(segment, 0, &message)?;
    println!("writer: wrote {message:?} into {path} ({SIZE} bytes, shm_open + ftruncate + mmap)");
    let status = Command::new(std::env::current_exe()?)
        .args(["reader", name])
        .status()?;
    if !status.success() {
        return Err(format!("the reader failed: {status}").into());
    }
    let answer = get(segment, ANSWER_AT)?;
    println!("writer: the reader answered {answer:?}");
    if !answer.starts_with("read it") {
        return Err("the answer is not the reader's".into());
    }
    Ok(())
}

fn reader(name: &str) -> Result<()> {
    let segment = Segment::open(KIND, name)?;
    let message = get(&segment, 0)?;
    println!(
        "reader: pid {} mapped {} bytes and read {message:?}",
        std::process::id(),
        segment.payload_len()
    );
    put(
        &segment,
        ANSWER_AT,
        &format!("read it, pid {}", std::process::id()),
    )?;
    Ok(())
}

/// A length (8 bytes, little-endian) and then the text.
fn put(segment: &Segment, at: usize, text: &str) -> Result<()> {
    segment.write_at(at + 8, text.as_bytes())?;
    segment.write_at(at, &(text.len() as u64).to_le_bytes())?;
    Ok(())
}

fn get(segment: &Segment, at: usize) -> Result<String> {
    let mut len = [0u8; 8];
    segment.read_at(at, &mut len)?;
    // Another process wrote the length: check it before trusting it.
    let len = u64::from_le_bytes(len);
    if len > (SIZE - at - 8) as u64 {
        return Err(format!("the segment claims a {len}-byte message").into());
    }
    let mut text = vec![0u8; len as usize];
    segment.read_at(at + 8, &mut text)?;
    Ok(String::from_utf8(text)?)
}
