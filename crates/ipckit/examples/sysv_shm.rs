//! System V shared memory: `shmget`, `shmat`, `shmdt`, `shmctl`.
//!
//! From the course notes `002_aa004447b60a7019.txt`, section "Shared Memory Details" (process
//! A creates the segment with `shmget(KEY, SIZE, IPC_CREAT | 0666)` and attaches it with
//! `shmat`; process B gets the same segment with `shmget(KEY, SIZE, 0)` and `shmat`), and
//! `004_f923ffdb808308aa.txt`, section "5. Shared Memory" (operations `shmget`, `shmat`,
//! `shmdt`, `shmctl`; it survives process termination). `003_aa59fdfdb716713a.txt`, "Shared
//! Memory": the same key gives the same segment.
//!
//! | notes                         | ipckit                                     |
//! |-------------------------------|--------------------------------------------|
//! | `shmget(KEY, SIZE, IPC_CREAT)` + `shmat` | `SysvSegment::create(key, size, mode)` |
//! | `shmget(KEY, 0, 0)` + `shmat` | `SysvSegment::open(key)`                   |
//! | `shmdt`                       | `SysvSegment::detach` (or drop)            |
//! | `shmctl(IPC_STAT)`            | `SysvSegment::stat`                        |
//! | `shmctl(IPC_RMID)`            | `SysvSegment::remove`                      |
//!
//! `cargo run --example sysv_shm`: process A (this one) creates and attaches the segment and
//! writes into it, then starts process B (this program again, `attach KEY`), which attaches by
//! key, reads, sees two attachments in `shmctl(IPC_STAT)`, and detaches. A then removes the
//! segment: it stays while A is attached, marked for removal, and is gone after A's `shmdt`.

use std::process::Command;

use ipckit::shm::SysvSegment;
use ipckit::Error;

const SIZE: usize = 4096;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("attach") {
        return process_b(i32::from_str_radix(args[2].trim_start_matches("0x"), 16)?);
    }
    // A key of our own (the notes' KEY; `SysvSegment::key_from_path` is `ftok`).
    let key = 0x1bc5_0000 | (std::process::id() as i32 & 0xffff);
    let segment = SysvSegment::create(key, SIZE, 0o600)?;
    let outcome = process_a(&segment, key);
    // Whatever happened: remove (IPC_RMID), then detach, after which the kernel frees it.
    segment.remove()?;
    let stat = segment.stat()?;
    println!(
        "A: shmctl(IPC_RMID): marked for removal = {}, still attached {} time(s)",
        stat.marked_for_removal, stat.attached
    );
    segment.detach()?;
    match SysvSegment::open(key) {
        Err(Error::NotFound { .. }) => println!("A: shmdt: the segment is gone (key {key:#x})"),
        Ok(_) => return Err("the segment outlived its removal".into()),
        Err(e) => return Err(e.into()),
    }
    outcome
}

fn process_a(segment: &SysvSegment, key: i32) -> Result<()> {
    let message = b"written by A through shmat's address";
    segment.write_at(0, &[message.len() as u8])?;
    segment.write_at(1, message)?;
    println!(
        "A: shmget(key {key:#x}, {SIZE}, IPC_CREAT) = id {}, attached, wrote {:?}",
        segment.id(),
        String::from_utf8_lossy(message)
    );
    let status = Command::new(std::env::current_exe()?)
        .args(["attach", &format!("{key:#x}")])
        .status()?;
    if !status.success() {
        return Err(format!("process B failed: {status}").into());
    }
    let stat = segment.stat()?;
    println!(
        "A: shmctl(IPC_STAT): {} bytes, attached {} time(s), created by pid {}, last shmat/shmdt by pid {}",
        stat.size, stat.attached, stat.creator_pid, stat.last_pid
    );
    if stat.attached != 1 || stat.creator_pid != std::process::id() {
        return Err("B's detach is not visible".into());
    }
    let mut reply = [0u8; 64];
    segment.read_at(1024, &mut reply)?;
    let reply = String::from_utf8_lossy(&reply[..reply.iter().position(|&b| b == 0).unwrap_or(64)]);
    println!("A: B left {reply:?}");
    Ok(())
}

fn process_b(key: i32) -> Result<()> {
    let segment = SysvSegment::open(key)?;
    let mut len = [0u8; 1];
    segment.read_at(0, &mut len)?;
    let mut message = vec![0u8; len[0] as usize];
    segment.read_at(1, &mut message)?;
    let stat = segment.stat()?;
    println!(
        "B: shmget(key {key:#x}, 0, 0) = id {}, attached, read {:?}; shmctl(IPC_STAT) counts {} attachments",
        segment.id(),
        String::from_utf8_lossy(&message),
        stat.attached
    );
    if stat.attached != 2 {
        return Err(format!(
            "expected A and B attached, the kernel counts {}",
            stat.attached
        )
        .into());
    }
    segment.write_at(
        1024,
        format!("B (pid {}) was here", std::process::id()).as_bytes(),
    )?;
    segment.detach()?;
    println!("B: shmdt: detached; the segment stays for A");
    Ok(())
}
