//! `WaitSet`, death notifications and `UntilSendersGone`, across real processes (issue 15).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{role, spawn_role, spawn_role_with_stdin, unique_name, wait_for_line, with_watchdog};
use ipckit::pidfd::PidFd;
use ipckit::shm::{Mailbox, Topic};
use ipckit::waitset::WaitSet;
use ipckit::{Deadline, Error, MessageReceiver, MessageSender};

const WATCHDOG: Duration = Duration::from_secs(60);

/// Removes the named objects when the test ends, pass or fail.
struct Cleanup(Vec<String>, Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Mailbox::remove(name);
        }
        for name in &self.1 {
            let _ = Topic::remove(name);
        }
    }
}

/// Kills and reaps a peer still running when the test ends.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn after(ms: u64) -> Deadline {
    Deadline::after(Duration::from_millis(ms))
}

/// The peer of the mixed test: one action per line of stdin.
fn mixed_peer(arg: &str) {
    let (mailbox, topic) = arg.split_once(' ').unwrap();
    let mut tx = Mailbox::open(mailbox).unwrap().sender().unwrap();
    let mut publisher = Topic::open(topic).unwrap().publisher().unwrap();
    println!("@@ready");
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().as_str() {
            "mailbox" => tx.send(b"to the mailbox").unwrap(),
            "later" => {
                std::thread::sleep(Duration::from_millis(50));
                tx.send(b"later").unwrap();
            }
            "topic" => publisher.send(b"to the topic").unwrap(),
            _ => {}
        }
        println!("@@done");
    }
    // Stays alive until killed: its death is the last event of the test.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_waitset_over_mixed_endpoint_kinds_says_which_is_ready() {
    const TEST: &str = "a_waitset_over_mixed_endpoint_kinds_says_which_is_ready";
    if let Some((_, arg)) = role() {
        return mixed_peer(&arg);
    }
    with_watchdog(WATCHDOG, || {
        let (mb, tp) = (unique_name("ws-mb"), unique_name("ws-tp"));
        let _cleanup = Cleanup(vec![mb.clone()], vec![tp.clone()]);
        let mailbox = Mailbox::create(&mb).unwrap();
        let topic = Topic::create(&tp).unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let mut sub = topic.subscriber().unwrap();
        let (mut near, mut far) = ipckit::socket::unix::stream_pair().unwrap();
        let mut peer = spawn_role_with_stdin(TEST, "peer", &format!("{mb} {tp}"), Stdio::piped());
        let mut stdin = peer.stdin.take().unwrap();
        let mut out = BufReader::new(peer.stdout.take().unwrap());
        let peer = Reap(peer);
        wait_for_line(&mut out, "ready");

        let mut set = WaitSet::new();
        let k_mailbox = set.add(&rx).unwrap();
        let k_topic = set.add(&sub).unwrap();
        let k_socket = set.add(&far).unwrap();
        let k_pid = set.add_pid(peer.0.id()).unwrap();
        assert_eq!(set.len(), 4);
        assert!(matches!(set.wait(after(50)), Err(Error::Timeout)));
        assert!(matches!(set.wait(Deadline::Now), Err(Error::Empty)));

        let mut command = |what: &str| {
            writeln!(stdin, "{what}").unwrap();
            stdin.flush().unwrap();
        };
        command("mailbox");
        wait_for_line(&mut out, "done");
        assert_eq!(set.wait(after(5000)).unwrap(), vec![k_mailbox]);
        assert_eq!(rx.try_recv().unwrap().data, b"to the mailbox");

        command("topic");
        wait_for_line(&mut out, "done");
        assert_eq!(set.wait(after(5000)).unwrap(), vec![k_topic]);
        assert_eq!(sub.try_recv().unwrap().data, b"to the topic");

        near.send(b"over the socket").unwrap();
        assert_eq!(set.wait(after(5000)).unwrap(), vec![k_socket]);
        assert_eq!(far.try_recv().unwrap().data, b"over the socket");

        // Asleep in the wait when the message comes: the reactor's futex wake reaches poll.
        command("later");
        let asleep = Instant::now();
        assert_eq!(set.wait(after(5000)).unwrap(), vec![k_mailbox]);
        let woke = asleep.elapsed();
        assert!(woke >= Duration::from_millis(40), "woke after {woke:?}");
        assert_eq!(rx.try_recv().unwrap().data, b"later");
        wait_for_line(&mut out, "done");

        let mut peer = peer;
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&peer.0),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let killed = Instant::now();
        assert_eq!(set.wait(after(5000)).unwrap(), vec![k_pid]);
        let noticed = killed.elapsed();
        println!("death noticed {noticed:?} after SIGKILL");
        assert!(noticed < Duration::from_millis(100), "{noticed:?}");
        set.remove(k_pid);
        assert!(matches!(set.wait(after(20)), Err(Error::Timeout)));
        let _ = peer.0.wait();
    });
}

#[test]
fn a_waitset_of_mailboxes_sleeps_in_one_futex_waitv() {
    const TEST: &str = "a_waitset_of_mailboxes_sleeps_in_one_futex_waitv";
    if let Some((_, name)) = role() {
        std::thread::sleep(Duration::from_millis(50));
        Mailbox::open(&name)
            .unwrap()
            .sender()
            .unwrap()
            .send(b"b")
            .unwrap();
        return;
    }
    with_watchdog(WATCHDOG, || {
        let names: Vec<String> = (0..3).map(|i| unique_name(&format!("ws{i}"))).collect();
        let _cleanup = Cleanup(names.clone(), vec![]);
        let mailboxes: Vec<Mailbox> = names.iter().map(|n| Mailbox::create(n).unwrap()).collect();
        let mut receivers: Vec<_> = mailboxes.iter().map(|m| m.receiver().unwrap()).collect();
        let mut set = WaitSet::new();
        let keys: Vec<_> = receivers.iter().map(|rx| set.add(rx).unwrap()).collect();
        let mut peer = Reap(spawn_role(TEST, "sender", &names[1]));
        let start = Instant::now();
        assert_eq!(set.wait(after(10_000)).unwrap(), vec![keys[1]]);
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert_eq!(receivers[1].try_recv().unwrap().data, b"b");
        assert!(peer.0.wait().unwrap().success());
    });
}

#[test]
fn a_pidfd_reports_a_sigkill_within_100_ms() {
    const TEST: &str = "a_pidfd_reports_a_sigkill_within_100_ms";
    if role().is_some() {
        println!("@@ready");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    with_watchdog(WATCHDOG, || {
        let mut child = spawn_role(TEST, "victim", "");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        wait_for_line(&mut out, "ready");
        let mut child = Reap(child);
        let watch = PidFd::open(child.0.id()).unwrap();
        assert!(!watch.wait_deadline(after(20)).unwrap());
        child.0.kill().unwrap();
        let killed = Instant::now();
        assert!(watch.wait_deadline(after(5000)).unwrap());
        let noticed = killed.elapsed();
        println!("death noticed {noticed:?} after SIGKILL");
        assert!(noticed < Duration::from_millis(100), "{noticed:?}");
        let _ = child.0.wait();
    });
}

#[test]
fn until_senders_gone_reports_disconnected_once_the_last_sender_is_killed() {
    const TEST: &str = "until_senders_gone_reports_disconnected_once_the_last_sender_is_killed";
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name).unwrap().sender().unwrap();
        for i in 0..3u8 {
            tx.send(&[i]).unwrap();
        }
        println!("@@sent");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("usg");
        let _cleanup = Cleanup(vec![name.clone()], vec![]);
        let mailbox = Mailbox::create(&name).unwrap();
        let mut rx = mailbox.receiver().unwrap().until_senders_gone();
        // No sender has ever attached: it waits, it does not report Disconnected.
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(250)),
            Err(Error::Timeout)
        ));
        let mut child = spawn_role(TEST, "sender", &name);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut child = Reap(child);
        wait_for_line(&mut out, "sent");
        for i in 0..3u8 {
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().data, [i]);
        }
        // The sender lives: a plain wait times out.
        let r = rx.recv_timeout(Duration::from_millis(50));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        child.0.kill().unwrap();
        let killed = Instant::now();
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(Error::Disconnected)
        ));
        let noticed = killed.elapsed();
        println!("Disconnected {noticed:?} after SIGKILL");
        assert!(noticed < Duration::from_millis(100), "{noticed:?}");
        let _ = child.0.wait();
        // A sender in this process: Disconnected again within the rescan once it drops.
        let tx = mailbox.sender().unwrap();
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(150)),
            Err(Error::Timeout)
        ));
        drop(tx);
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(Error::Disconnected)
        ));
    });
}

#[test]
fn an_empty_waitset_without_deadline_is_refused() {
    let mut set = WaitSet::new();
    assert!(set.is_empty());
    assert!(matches!(
        set.wait(Deadline::Never),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(set.wait(after(1)), Err(Error::Timeout)));
    assert!(matches!(set.add_pid(0), Err(Error::InvalidArgument(_))));
    // A pid nobody holds is dead already.
    let key = set.add_pid((1 << 22) + 7).unwrap();
    assert_eq!(set.wait(after(1000)).unwrap(), vec![key]);
}

#[test]
fn a_waitset_sees_a_service_request_and_the_clients_death() {
    const TEST: &str = "a_waitset_sees_a_service_request_and_the_clients_death";
    if let Some((_, name)) = role() {
        let (mut conn, _) =
            ipckit::service::Client::connect(&name, b"hi", Deadline::after(WATCHDOG)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        conn.send(b"request").unwrap();
        println!("@@sent");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("ws-svc");
        let server = ipckit::service::Server::bind(&name, 0o600).unwrap();
        let mut child = spawn_role(TEST, "client", &name);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut child = Reap(child);
        let mut conn = server.accept().unwrap().accept(b"ok").unwrap();
        let mut set = WaitSet::new();
        let key = set.add(&conn).unwrap();
        assert_eq!(set.wait(after(5000)).unwrap(), vec![key]);
        assert_eq!(conn.try_recv().unwrap().data, b"request");
        wait_for_line(&mut out, "sent");
        assert!(matches!(set.wait(after(50)), Err(Error::Timeout)));
        child.0.kill().unwrap();
        let killed = Instant::now();
        assert_eq!(set.wait(after(5000)).unwrap(), vec![key]);
        let noticed = killed.elapsed();
        println!("hang-up noticed {noticed:?} after SIGKILL");
        assert!(noticed < Duration::from_millis(100), "{noticed:?}");
        assert!(matches!(conn.try_recv(), Err(Error::Disconnected)));
        let _ = child.0.wait();
    });
}

#[test]
fn a_waitset_reports_when_every_sender_of_a_mailbox_is_gone() {
    const TEST: &str = "a_waitset_reports_when_every_sender_of_a_mailbox_is_gone";
    if let Some((_, name)) = role() {
        let _tx = Mailbox::open(&name).unwrap().sender().unwrap();
        println!("@@attached");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("ws-gone");
        let _cleanup = Cleanup(vec![name.clone()], vec![]);
        let mailbox = Mailbox::create(&name).unwrap();
        let mut set = WaitSet::new();
        let key = set.add_senders_gone(&mailbox);
        // No sender has attached yet: not a death.
        assert!(matches!(set.wait(after(250)), Err(Error::Timeout)));
        let mut child = spawn_role(TEST, "sender", &name);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut child = Reap(child);
        wait_for_line(&mut out, "attached");
        assert!(matches!(set.wait(after(150)), Err(Error::Timeout)));
        child.0.kill().unwrap();
        let killed = Instant::now();
        assert_eq!(set.wait(after(5000)).unwrap(), vec![key]);
        let noticed = killed.elapsed();
        println!("every sender gone, noticed {noticed:?} after SIGKILL");
        assert!(noticed < Duration::from_millis(100), "{noticed:?}");
        let _ = child.0.wait();
    });
}
