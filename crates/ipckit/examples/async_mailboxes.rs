//! Two processes, async: the parent awaits two mailboxes and its child's death at once on a
//! tokio current-thread runtime, with no thread of its own per mailbox.
//!
//! `cargo run -p ipckit --features tokio --example async_mailboxes`

use std::time::Duration;

use ipckit::pidfd::PidFd;
use ipckit::shm::Mailbox;
use ipckit::MessageSender;

fn child(names: &[String]) -> ipckit::Result<()> {
    let mut a = Mailbox::open(&names[0])?.sender()?;
    let mut b = Mailbox::open(&names[1])?.sender()?;
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(30));
        a.send(format!("a{i}").as_bytes())?;
        std::thread::sleep(Duration::from_millis(30));
        b.send(format!("b{i}").as_bytes())?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return Ok(child(&args[1..])?);
    }
    let pid = std::process::id();
    let names = [format!("async-a-{pid}"), format!("async-b-{pid}")];
    let (ma, mb) = (Mailbox::create(&names[0])?, Mailbox::create(&names[1])?);
    let (mut a, mut b) = (ma.receiver()?, mb.receiver()?);
    let mut peer = std::process::Command::new(std::env::current_exe()?)
        .arg("child")
        .args(&names)
        .spawn()?;
    let death = PidFd::open(peer.id())?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let result: ipckit::Result<()> = rt.block_on(async {
        let mut got = 0;
        let mut child_gone = false;
        // Every receive is cancellation-safe: the branch that loses `select!` drops its
        // future and loses no message.
        while got < 6 || !child_gone {
            tokio::select! {
                msg = a.recv_async() => { println!("a: {}", String::from_utf8_lossy(&msg?.data)); got += 1; }
                msg = b.recv_async() => { println!("b: {}", String::from_utf8_lossy(&msg?.data)); got += 1; }
                dead = death.died_async(), if !child_gone => { dead?; println!("child {} exited", death.pid()); child_gone = true; }
            }
        }
        Ok(())
    });
    peer.wait()?;
    Mailbox::remove(&names[0])?;
    Mailbox::remove(&names[1])?;
    Ok(result?)
}
