//! Two processes bounce a message through a pair of mailboxes and print the round-trip
//! time: `cargo run --release --example mailbox_ping_pong [-- SIZE [ROUNDS [busy|sleep]]]`.
//!
//! The example starts itself again as the echoing peer, the way an application would start
//! a worker process. `ipckit bench` does the same measurement for every mechanism.

use std::process::Command;
use std::time::Instant;

use ipckit::shm::mailbox::{Mailbox, WaitStrategy};
use ipckit::{MessageReceiver, MessageSender};

fn main() -> ipckit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--echo") {
        return echo(&args[2], &args[3], strategy(args.get(4)));
    }
    let wait = strategy(args.get(3));
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let id = std::process::id();
    let (ping, pong) = (format!("example-ping-{id}"), format!("example-pong-{id}"));
    let build = |name: &str| {
        Mailbox::builder(name)
            .capacity(16)
            .max_message_size(size)
            .single_sender()
            .single_receiver()
            .wait_strategy(wait)
            .create()
    };
    let (ping_box, pong_box) = (build(&ping)?, build(&pong)?);
    let mut peer = Command::new(std::env::current_exe().unwrap())
        .args(["--echo", &ping, &pong])
        .args(args.get(3))
        .spawn()
        .expect("start the echo process");
    let measured = measure(&ping_box, &pong_box, size, rounds);
    if measured.is_err() {
        let _ = peer.kill();
    }
    peer.wait().unwrap();
    Mailbox::remove(&ping)?;
    Mailbox::remove(&pong)?;
    let mut rtts = measured?;
    rtts.sort_unstable();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize];
    println!(
        "{size} B round trip over {rounds} rounds: median {} ns, p99 {} ns, p99.9 {} ns",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    Ok(())
}

fn measure(ping: &Mailbox, pong: &Mailbox, size: usize, rounds: usize) -> ipckit::Result<Vec<u64>> {
    let mut tx = ping.sender()?;
    let mut rx = pong.receiver()?;
    let mut msg = vec![0u8; size];
    let mut reply = Vec::with_capacity(size);
    let mut rtts = Vec::with_capacity(rounds);
    for round in 0..rounds {
        msg.iter_mut().for_each(|b| *b = round as u8);
        let start = Instant::now();
        tx.send(&msg)?;
        rx.recv_into(&mut reply)?;
        rtts.push(start.elapsed().as_nanos() as u64);
        assert_eq!(reply, msg, "the echo differs");
    }
    tx.send(&[])?;
    Ok(rtts)
}

/// `busy` (the default) spins; `sleep` sleeps on the futex at once.
fn strategy(arg: Option<&String>) -> WaitStrategy {
    match arg.map(String::as_str) {
        Some("sleep") => WaitStrategy::Sleep,
        _ => WaitStrategy::BusyPoll,
    }
}

fn echo(ping: &str, pong: &str, wait: WaitStrategy) -> ipckit::Result<()> {
    let mut rx = Mailbox::builder(ping)
        .wait_strategy(wait)
        .open()?
        .receiver()?;
    let mut tx = Mailbox::builder(pong)
        .wait_strategy(wait)
        .open()?
        .sender()?;
    let mut buf = Vec::new();
    loop {
        rx.recv_into(&mut buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        tx.send(&buf)?;
    }
}
