//! A UDP sender and receiver, on the loopback interface.
//!
//! From the course notes `004_f923ffdb808308aa.txt`, section "4. Sockets" (a datagram socket
//! (UDP) is unreliable and fast, like a postcard; used by real-time applications), with
//! `003_aa59fdfdb716713a.txt`, "Sockets" (TCP/UDP sockets across machines).
//!
//! `cargo run --example udp_sender_receiver`: the receiver (this process) binds a UDP socket
//! on `127.0.0.1`, then starts the sender (this program again, `send ADDR`), which sends
//! postcards of different sizes, with no connection set up first, and exits. Each datagram
//! arrives whole, one receive per send: UDP keeps message boundaries. What UDP does not promise
//! is delivery: a datagram can be lost (even on loopback, when the receive buffer
//! overflows), and the sender is never told. Loopback only: nothing leaves the machine.

use std::process::Command;
use std::time::Duration;

use ipckit::socket::udp;
use ipckit::{Error, MessageReceiver, MessageSender};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const POSTCARDS: [&str; 3] = [
    "short",
    "a longer postcard, still one datagram",
    "the last one",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("send") {
        return send(args[2].parse()?);
    }
    let (mut receiver, addr) = udp::bind("127.0.0.1:0")?;
    println!("receiver: bound {addr}");
    let status = Command::new(std::env::current_exe()?)
        .args(["send", &addr.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("the sender failed: {status}").into());
    }
    let mut received = Vec::new();
    // Until all have come, or none has for 2 s (a lost one never will).
    while received.len() < POSTCARDS.len() {
        match receiver.recv_timeout(Duration::from_secs(2)) {
            Ok(datagram) => {
                let text = String::from_utf8(datagram.data)?;
                println!("receiver: a datagram of {} bytes: {text:?}", text.len());
                received.push(text);
            }
            Err(Error::Timeout) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "receiver: {} of {} datagrams arrived, each whole (the sender had already exited)",
        received.len(),
        POSTCARDS.len()
    );
    if received.is_empty() || received.iter().any(|r| !POSTCARDS.contains(&r.as_str())) {
        return Err("no datagram arrived whole".into());
    }
    Ok(())
}

fn send(to: std::net::SocketAddr) -> Result<()> {
    let (mut sender, from) = udp::bind("127.0.0.1:0")?;
    udp::connect(&sender, to)?;
    for postcard in POSTCARDS {
        sender.send(postcard.as_bytes())?;
    }
    println!(
        "sender: {from} sent {} datagrams to {to} and exits",
        POSTCARDS.len()
    );
    Ok(())
}
