//! Instruction count of the mailbox fast path: N sends and N receives of a 64-byte message
//! through a single-sender, single-receiver mailbox, in one process (never blocking).
//!
//! ```text
//! cargo build --release -p ipckit --example callgrind_send_recv
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out --toggle-collect='*pairs*' \
//!     target/release/examples/callgrind_send_recv 100000
//! ```
//!
//! Divide the instructions collected (`Collected` in callgrind's summary) by N for one
//! send + one receive. Only the loop (`pairs`) is collected: the setup's cost depends on
//! the machine (it creates and maps a segment, registers the process for `membarrier`) and,
//! counted with everything else, would swamp a difference of a few instructions per message.
//! A second argument `many` measures the general many-senders path instead (a mailbox
//! created without `single_sender`/`single_receiver`: slots claimed by compare-and-swap);
//! `zero-copy` measures the single-sender path's loans and in-place receives (the message
//! written into the loaned slot, and read from the slot, word by word).

use ipckit::shm::Mailbox;
use ipckit::{Deadline, MessageReceiver, MessageSender};

fn main() -> ipckit::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mode = std::env::args().nth(2);
    let many = mode.as_deref() == Some("many");
    let zero_copy = mode.as_deref() == Some("zero-copy");
    let name = format!("example-callgrind-{}", std::process::id());
    let builder = Mailbox::builder(&name).capacity(64).max_message_size(64);
    let mailbox = if many {
        builder.create()?
    } else {
        builder.single_sender().single_receiver().create()?
    };
    let result = if zero_copy {
        run_zero_copy(&mailbox, n)
    } else {
        run(&mailbox, n)
    };
    Mailbox::remove(&name)?;
    result
}

fn run(mailbox: &Mailbox, n: usize) -> ipckit::Result<()> {
    let mut tx = mailbox.sender()?;
    let mut rx = mailbox.receiver()?;
    let msg = [7u8; 64];
    let mut buf = Vec::with_capacity(64);
    pairs(&mut tx, &mut rx, &msg, &mut buf, n)?;
    std::hint::black_box(&buf);
    assert!(n == 0 || buf == msg, "the last message came back altered");
    println!("{n} send+recv pairs of 64 B through one mailbox");
    // (The many-senders path is chosen by the mailbox's flags, not by this code.)
    Ok(())
}

/// The measured loop (what `--toggle-collect='*pairs*'` counts).
#[inline(never)]
fn pairs(
    tx: &mut impl MessageSender,
    rx: &mut impl MessageReceiver,
    msg: &[u8],
    buf: &mut Vec<u8>,
    n: usize,
) -> ipckit::Result<()> {
    for _ in 0..n {
        tx.try_send(msg)?;
        rx.recv_deadline(buf, Deadline::Now)?;
    }
    Ok(())
}

fn run_zero_copy(mailbox: &Mailbox, n: usize) -> ipckit::Result<()> {
    let mut tx = mailbox.sender()?;
    let mut rx = mailbox.receiver()?;
    let sum = zero_copy_pairs(&mut tx, &mut rx, n)?;
    assert_eq!(sum, 7 * 64 * n as u64, "a message came back altered");
    println!("{n} loan+publish and in-place receive pairs of 64 B through one mailbox");
    Ok(())
}

/// The measured loop of the zero-copy mode; returns the sum of every byte received.
#[inline(never)]
fn zero_copy_pairs(
    tx: &mut ipckit::shm::MailboxSender,
    rx: &mut ipckit::shm::MailboxReceiver,
    n: usize,
) -> ipckit::Result<u64> {
    let mut sum = 0u64;
    for _ in 0..n {
        let mut loan = tx.loan_deadline(Deadline::Now)?;
        loan[..64].fill(7);
        loan.publish(64)?;
        let sample = rx.recv_in_place_deadline(Deadline::Now)?;
        sum += sample.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    Ok(sum)
}
