//! The race condition on a shared counter, and the semaphore that fixes it.
//!
//! From the course notes `004_f923ffdb808308aa.txt`, sections "6. Semaphores" (without a
//! semaphore P1 and P2 each read count, modify it, write it back: lost updates; with one, each
//! does `wait(semaphore)`, read, modify, write, `signal(semaphore)`) and "Synchronization Issues
//! with IPC" (shared counter 0, both processes read 0 and write 1: expected 2, actual 1), with
//! `000_ff1fd86384b37cfd.txt`, "Shared Memory" (synchronization is required to avoid race
//! conditions) and `002_aa004447b60a7019.txt`, "Shared Memory Details" (both can read and
//! write, but must coordinate access).
//!
//! `cargo run --example race_condition`: two processes (this program again, `increment ...`)
//! each add 1 to a counter in shared memory 100000 times, starting together.
//!
//! 1. **Race.** Each increment is a separate read and write of the shared counter: when both
//!    read the same value, one write overwrites the other, and an update is lost. How many are
//!    lost depends on how the two processes interleave; it is almost never none.
//! 2. **Semaphore.** The same increments between `wait` and `post` (signal) on a binary
//!    semaphore (`ipckit::sync::Semaphore`, initially 1) in the same shared memory: exactly
//!    200000, every time.
//!
//! `ipckit demo race` shows the same with a mutex.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipckit::shm::Shared;
use ipckit::sync::Semaphore;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PROCESSES: u64 = 2;
const INCREMENTS: u64 = 100_000;
/// The shared words: the counter, and how many processes have arrived at the start line.
const COUNT: usize = 0;
const ARRIVED: usize = 1;
type Words = [AtomicU64; 2];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("increment") {
        return increment(&args[2], &args[3], args[4] == "semaphore");
    }
    let words = format!("notes-race-{}", std::process::id());
    let semaphore = format!("notes-race-semaphore-{}", std::process::id());
    let shared = Shared::<Words>::create(&words, Default::default(), 0o600)?;
    let outcome = Shared::create(&semaphore, Semaphore::new(1), 0o600)
        .map_err(Into::into)
        .and_then(|_sem| run(&shared, &words, &semaphore));
    let _ = Shared::<Semaphore>::remove(&semaphore);
    Shared::<Words>::remove(&words)?;
    outcome
}

fn run(shared: &Words, words: &str, semaphore: &str) -> Result<()> {
    let expected = PROCESSES * INCREMENTS;
    println!("1. race: read count, add 1, write count, with nothing around it");
    let mut tries = 0;
    loop {
        tries += 1;
        let total = round(shared, words, semaphore, "race")?;
        println!(
            "   count = {total} of {expected}: {} updates lost",
            expected - total
        );
        if total > expected {
            return Err("more increments than were made".into());
        }
        if total < expected || tries == 5 {
            break;
        }
        println!("   (the two processes did not overlap this time: again)");
    }
    println!("2. semaphore: wait(semaphore); read count, add 1, write count; signal(semaphore)");
    let total = round(shared, words, semaphore, "semaphore")?;
    println!("   count = {total} of {expected}: none lost");
    if total != expected {
        return Err("the semaphore let an update be lost".into());
    }
    Ok(())
}

/// Starts the processes, waits for them, and returns the count.
fn round(shared: &Words, words: &str, semaphore: &str, mode: &str) -> Result<u64> {
    shared[COUNT].store(0, Ordering::SeqCst);
    shared[ARRIVED].store(0, Ordering::SeqCst);
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .args(["increment", words, semaphore, mode])
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut failed = None;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            failed = Some(status);
        }
    }
    if let Some(status) = failed {
        return Err(format!("an incrementing process failed: {status}").into());
    }
    Ok(shared[COUNT].load(Ordering::SeqCst))
}

fn increment(words: &str, semaphore: &str, guarded: bool) -> Result<()> {
    let shared = Shared::<Words>::open(words)?;
    let semaphore = Shared::<Semaphore>::open(semaphore)?;
    // The start line: both begin together, so that their increments overlap.
    shared[ARRIVED].fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    while shared[ARRIVED].load(Ordering::SeqCst) < PROCESSES {
        if start.elapsed() > Duration::from_secs(20) {
            return Err("the other process never came".into());
        }
        std::thread::yield_now();
    }
    let count = &shared[COUNT];
    for _ in 0..INCREMENTS {
        if guarded {
            semaphore.wait();
        }
        // A read and a separate write: the other process can write in between.
        let value = count.load(Ordering::Relaxed);
        count.store(value + 1, Ordering::Relaxed);
        if guarded {
            semaphore.post();
        }
    }
    Ok(())
}
