//! The producer-consumer problem with a bounded buffer, and the notes' `counter`.
//!
//! From the course notes `001_403aba211db897e6.txt`, sections "Producer-Consumer Problem"
//! (bounded buffer: the producer waits while every buffer is full, the consumer while none
//! is) and "What about Filling all the Buffers?" (an integer `counter` of full buffers,
//! initially 0, `counter += 1` on produce, `counter -= 1` on consume, so that all the buffers
//! can be filled), and `004_f923ffdb808308aa.txt`, "Producer-Consumer Problem › Solution with
//! Semaphores" (`empty` = N, `full` = 0, `mutex` = 1; the producer does `wait(empty)`,
//! `wait(mutex)`, put, `signal(mutex)`, `signal(full)`, the consumer the mirror image).
//!
//! `ipckit::shm::BoundedBuffer` is that semaphore solution in a named shared segment. Its
//! `full` semaphore is the notes' `counter`: a producer's `signal(full)` is `counter += 1`, a
//! consumer's `wait(full)` is `counter -= 1`, and `len()` reads it. Every one of the N buffers
//! fills up: the cursors never have to leave one free to tell full from empty.
//!
//! `cargo run --example bounded_buffer`: a producer process (this program again, `produce
//! NAME`) puts 12 items into a buffer of 4; the consumer (this process) first waits until
//! `counter` is 4, all buffers full and the producer waiting on `empty`, then takes all 12 in
//! order. The buffer is removed at the end.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipckit::shm::BoundedBuffer;
use ipckit::Deadline;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const N: usize = 4;
const ITEMS: u64 = 12;
const WAIT: Duration = Duration::from_secs(20);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("produce") {
        return produce(&args[2]);
    }
    let name = format!("notes-buffer-{}", std::process::id());
    let buffer = BoundedBuffer::<u64>::create(&name, N, 0o600)?;
    println!("buffer of {N}: counter = {} initially", buffer.len());
    let mut producer = Command::new(std::env::current_exe()?)
        .args(["produce", &name])
        .spawn()?;
    let outcome = consume(&buffer, &mut producer);
    if outcome.is_err() {
        let _ = producer.kill();
    }
    let status = producer.wait()?;
    BoundedBuffer::<u64>::remove(&name)?;
    outcome?;
    if !status.success() {
        return Err(format!("the producer failed: {status}").into());
    }
    Ok(())
}

fn consume(buffer: &BoundedBuffer<u64>, producer: &mut Child) -> Result<()> {
    // Let the producer fill every buffer.
    let start = Instant::now();
    while buffer.len() < N {
        if start.elapsed() > WAIT || producer.try_wait()?.is_some() {
            return Err("the producer never filled the buffer".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    println!(
        "counter = {}: all {N} buffers full; the producer waits on `empty` (still running: {})",
        buffer.len(),
        producer.try_wait()?.is_none()
    );
    if buffer.len() != N {
        return Err("the counter passed N".into());
    }
    for expected in 0..ITEMS {
        let item = buffer.take_deadline(Deadline::after(WAIT))?;
        println!("consumer: took item {item}, counter = {}", buffer.len());
        if item != expected {
            return Err(format!("took {item}, expected {expected}").into());
        }
    }
    println!(
        "consumer: took all {ITEMS} items in order; counter = {}",
        buffer.len()
    );
    if !buffer.is_empty() {
        return Err("items left over".into());
    }
    Ok(())
}

fn produce(name: &str) -> Result<()> {
    let buffer = BoundedBuffer::<u64>::open(name)?;
    for item in 0..ITEMS {
        // wait(empty); wait(mutex); put; signal(mutex); signal(full)
        buffer.put_deadline(item, Deadline::after(WAIT))?;
    }
    println!("producer: put all {ITEMS} items");
    Ok(())
}
