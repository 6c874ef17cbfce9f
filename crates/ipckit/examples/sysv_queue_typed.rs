//! A System V message queue, received by message type.
//!
//! From the course notes `004_f923ffdb808308aa.txt`, section "3. Message Queues" (created by
//! `msgget()`; messages have a type and content; the sender goes on after sending; the queue
//! survives its processes; `msgsnd()`, `msgrcv()`, `msgctl()`; the advantage over pipes: a
//! receiver can read specific message types), with `003_aa59fdfdb716713a.txt`, "Message
//! Queues" (the OS buffers messages between send and receive).
//!
//! `cargo run --example sysv_queue_typed`: this process creates the queue (`msgget`), starts a
//! sender (this program again, `send KEY`) that sends messages of types 1 (log), 2 (order)
//! and 3 (urgent) and exits at once. The messages wait in the kernel; this process then takes
//! the urgent one first, then the orders, then whatever is left, by type (`msgrcv` with a
//! type), and removes the queue (`msgctl(IPC_RMID)`).

use std::process::Command;

use ipckit::mq::SysvQueue;
use ipckit::{Deadline, Error};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const LOG: i64 = 1;
const ORDER: i64 = 2;
const URGENT: i64 = 3;

const SENT: [(i64, &str); 5] = [
    (LOG, "log: started"),
    (ORDER, "order #1"),
    (LOG, "log: working"),
    (URGENT, "urgent: stop the line"),
    (ORDER, "order #2"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("send") {
        return send(args[2].parse()?);
    }
    let key = 0x1bc6_0000 | (std::process::id() as i32 & 0xffff);
    let mut queue = SysvQueue::create(key, 0o600)?;
    let outcome = receive(&mut queue, key);
    queue.remove()?;
    match SysvQueue::open(key) {
        Err(Error::NotFound { .. }) => println!("msgctl(IPC_RMID): the queue is gone"),
        Ok(_) => return Err("the queue outlived its removal".into()),
        Err(e) => return Err(e.into()),
    }
    outcome
}

fn receive(queue: &mut SysvQueue, key: i32) -> Result<()> {
    println!("msgget: created queue {key:#x} (id {})", queue.id());
    let status = Command::new(std::env::current_exe()?)
        .args(["send", &key.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("the sender failed: {status}").into());
    }
    let (waiting, _) = queue.stat()?;
    println!("the sender has exited; {waiting} messages wait in the queue");
    let mut take = |msg_type: i64, what: &str| -> Result<String> {
        let mut buf = Vec::new();
        let meta = queue.recv_type(msg_type, &mut buf, Deadline::Now)?;
        let text = String::from_utf8(buf)?;
        println!(
            "msgrcv(type {msg_type}, {what}): type {} {text:?}",
            meta.msg_type.unwrap_or(0)
        );
        Ok(text)
    };
    let mut order = vec![take(URGENT, "urgent first")?];
    order.push(take(ORDER, "orders next")?);
    order.push(take(ORDER, "orders next")?);
    order.push(take(0, "any type, oldest first")?);
    order.push(take(0, "any type, oldest first")?);
    let expected = [
        "urgent: stop the line",
        "order #1",
        "order #2",
        "log: started",
        "log: working",
    ];
    if order != expected || waiting != SENT.len() {
        return Err(format!("received {order:?}").into());
    }
    match queue.recv_type(0, &mut Vec::new(), Deadline::Now) {
        Err(Error::Empty) => println!("msgrcv(IPC_NOWAIT): empty"),
        other => return Err(format!("expected an empty queue, got {other:?}").into()),
    }
    Ok(())
}

fn send(key: i32) -> Result<()> {
    let mut queue = SysvQueue::open(key)?;
    for (msg_type, text) in SENT {
        queue.send_typed(msg_type, text.as_bytes(), Deadline::Now)?;
        println!("msgsnd(type {msg_type}): {text:?}");
    }
    Ok(())
}
