//! Instruction count of the topic fast path: N publishes and N receives of a 64-byte message
//! through a topic with one subscriber, in one process (never blocking).
//!
//! ```text
//! cargo build --release -p ipckit --example callgrind_topic
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out --toggle-collect='*pairs*' \
//!     target/release/examples/callgrind_topic 100000 1 backpressure single
//! ```
//!
//! Arguments: N, the capacity (default 64), `overrun` or `backpressure` (default), and
//! `single` for a topic created with `single_publisher` (default: the publish lock). Divide
//! the instructions collected (`Collected` in callgrind's summary) by N for one publish + one
//! receive; only the loop (`pairs`) is collected, not the setup.

use ipckit::shm::topic::{Overflow, Topic};
use ipckit::{Deadline, MessageReceiver, MessageSender};

fn main() -> ipckit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let n: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let capacity: usize = arg(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let overflow = match arg(3) {
        Some("overrun") => Overflow::Overrun,
        _ => Overflow::Backpressure,
    };
    let single = arg(4) == Some("single");
    let name = format!("example-callgrind-topic-{}", std::process::id());
    let builder = Topic::builder(&name)
        .capacity(capacity)
        .overflow(overflow)
        .max_message_size(64);
    let builder = if single {
        builder.single_publisher()
    } else {
        builder
    };
    let topic = builder.create()?;
    let result = run(&topic, n);
    Topic::remove(&name)?;
    result?;
    println!("{n} publish+recv pairs of 64 B through one topic (capacity {capacity})");
    Ok(())
}

fn run(topic: &Topic, n: usize) -> ipckit::Result<()> {
    let mut publisher = topic.publisher()?;
    let mut subscriber = topic.subscriber()?;
    let msg = [7u8; 64];
    let mut buf = Vec::with_capacity(64);
    pairs(&mut publisher, &mut subscriber, &msg, &mut buf, n)?;
    std::hint::black_box(&buf);
    assert!(n == 0 || buf == msg, "the last message came back altered");
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
