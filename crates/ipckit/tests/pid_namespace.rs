//! Issue 12 item 5: liveness across PID namespaces. A sender and a receiver run in PID
//! namespaces of their own (this binary re-run under `unshare --pid --fork --mount-proc`, as
//! in a container sharing `/dev/shm`): the pids they record mean nothing, or another process,
//! in this namespace's `/proc`. Their slots must not be reclaimed while they live, and must be
//! once they are dead.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{role, unique_name, with_watchdog};
use ipckit::shm::{Mailbox, Topic};
use ipckit::{Error, MessageReceiver, MessageSender};

const TEST: &str = "issue12_peers_in_another_pid_namespace_are_judged_by_their_locks";

/// Whether this machine lets us make a PID namespace (root, and no seccomp policy refusing it).
fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// This binary in `role` with `arg`, as pid 1 of a new PID namespace (killed with `unshare`).
fn spawn_in_pid_namespace(role: &str, arg: &str) -> (Child, BufReader<ChildStdout>) {
    spawn_in_pid_namespace_as(TEST, role, arg)
}

/// As [`spawn_in_pid_namespace`], running test `test`.
fn spawn_in_pid_namespace_as(test: &str, role: &str, arg: &str) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env("IPCKIT_TEST_ROLE", role)
        .env("IPCKIT_TEST_ARG", arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// The next `@@` line the child prints.
fn next_report(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        if let Some(report) = line.trim_end().strip_prefix("@@") {
            return report.to_string();
        }
    }
}

/// The pid the kernel gave the child of `unshare` in this namespace.
fn real_pid_of_child(unshare: &Child) -> u32 {
    let start = Instant::now();
    loop {
        let path = format!("/proc/{0}/task/{0}/children", unshare.id());
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no child of unshare"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Start time (`/proc/PID/stat` field 22) of `pid` in this namespace, if it exists here.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The roles, inside the namespace: a sender that holds a loaned slot until told to publish
/// (or forever), and a receiver that holds a message in place until told to let go.
fn play(role: &str, name: &str) {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    match role {
        "sender" | "stuck-sender" => {
            let mut tx = Mailbox::open(name).unwrap().sender().unwrap();
            let mut loan = tx.loan().unwrap();
            loan[..5].copy_from_slice(b"hello");
            println!("@@holding {}", std::process::id());
            if role == "stuck-sender" {
                std::thread::sleep(Duration::from_secs(120));
            }
            stdin.read_line(&mut line).unwrap();
            loan.publish(5).unwrap();
            println!("@@sent");
        }
        "receiver" => {
            let mut rx = Mailbox::open(name).unwrap().receiver().unwrap();
            let held = rx.recv_in_place().unwrap();
            assert_eq!(&*held, b"kept");
            println!("@@holding {}", std::process::id());
            stdin.read_line(&mut line).unwrap();
            drop(held);
            println!("@@released");
        }
        "publisher" => {
            let topic = Topic::open(name).unwrap();
            let _subscriber = topic.subscriber().unwrap();
            let mut publisher = topic.publisher().unwrap();
            let mut loan = publisher.loan().unwrap();
            loan[..4].copy_from_slice(b"news");
            println!("@@holding {}", std::process::id());
            stdin.read_line(&mut line).unwrap();
            loan.publish(4).unwrap();
            println!("@@sent");
            stdin.read_line(&mut line).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

/// A slot held by `child` (pid `inner` in its namespace) is not reclaimed: not by repair,
/// not by a receiver or sender that waits on it past several liveness polls.
fn check_kept(mailbox: &Mailbox, unshare: &Child, inner: u32) {
    let real = real_pid_of_child(unshare);
    assert_ne!(real, inner, "the peer is not in a namespace of its own");
    // What this namespace's /proc makes of the recorded pid: nobody, or someone else.
    let recorded = mailbox
        .info()
        .participants
        .iter()
        .any(|p| p.pid == inner && p.alive);
    assert!(
        recorded,
        "the peer is not listed alive: {:?}",
        mailbox.info()
    );
    assert_ne!(
        start_time(inner),
        start_time(real),
        "pid {inner} here is the peer itself"
    );
    eprintln!(
        "peer: pid {inner} in its namespace, {real} here; pid {inner} here is {}",
        match start_time(inner) {
            Some(_) => "another process",
            None => "nobody",
        }
    );
    let info = mailbox.info();
    assert_eq!(info.held_slots.len(), 1, "{info:?}");
    assert_eq!(info.dead_held_slots, 0, "{info:?}");
    let report = mailbox.repair();
    assert_eq!(report.reclaimed_slots, 0, "repair took a live peer's slot");
    assert_eq!(report.dead_participants, 0, "repair forgot a live peer");
}

#[test]
fn issue12_peers_in_another_pid_namespace_are_judged_by_their_locks() {
    if let Some((role, name)) = role() {
        play(&role, &name);
        return;
    }
    if !can_unshare() {
        eprintln!("SKIPPED: `unshare --pid --fork --mount-proc` is refused on this machine");
        return;
    }
    with_watchdog(Duration::from_secs(60), || {
        let name = unique_name("pidns");
        let mailbox = Mailbox::builder(&name)
            .capacity(4)
            .max_message_size(64)
            .create()
            .unwrap();
        let _cleanup = Cleanup(name.clone());

        // A sender in its own namespace holds a slot while this namespace's receiver waits.
        let (mut sender, mut out) = spawn_in_pid_namespace("sender", &name);
        let report = next_report(&mut out);
        let inner: u32 = report.strip_prefix("holding ").unwrap().parse().unwrap();
        check_kept(&mailbox, &sender, inner);
        let mut rx = mailbox.receiver().unwrap();
        // Many liveness polls (20 ms each) with the writer's slot in the way.
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(500)),
            Err(Error::Timeout)
        ));
        assert_eq!(mailbox.repair().reclaimed_slots, 0);
        writeln!(sender.stdin.as_mut().unwrap()).unwrap();
        assert_eq!(next_report(&mut out), "sent");
        let msg = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(msg.data, b"hello", "the confirmed message was lost");
        assert!(sender.wait().unwrap().success());

        // A receiver in its own namespace holds a message in place: not handed to anyone else.
        let mut tx = mailbox.sender().unwrap();
        tx.send(b"kept").unwrap();
        let (mut receiver, mut out) = spawn_in_pid_namespace("receiver", &name);
        let report = next_report(&mut out);
        let inner: u32 = report.strip_prefix("holding ").unwrap().parse().unwrap();
        check_kept(&mailbox, &receiver, inner);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(Error::Timeout)
        ));
        writeln!(receiver.stdin.as_mut().unwrap()).unwrap();
        assert_eq!(next_report(&mut out), "released");
        assert!(receiver.wait().unwrap().success());
        assert!(
            matches!(rx.try_recv(), Err(Error::Empty)),
            "a message held by the namespaced receiver was delivered twice"
        );

        // Dead, the namespaced sender's slot is reclaimed and nothing wedges.
        let (mut stuck, mut out) = spawn_in_pid_namespace("stuck-sender", &name);
        let report = next_report(&mut out);
        let inner: u32 = report.strip_prefix("holding ").unwrap().parse().unwrap();
        check_kept(&mailbox, &stuck, inner);
        stuck.kill().unwrap();
        stuck.wait().unwrap();
        let start = Instant::now();
        while mailbox.info().dead_held_slots == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the dead peer still counts as alive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = mailbox.repair();
        assert_eq!(report.reclaimed_slots, 1);
        assert_eq!(report.dead_participants, 1);
        tx.send(b"after").unwrap();
        let msg = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(msg.data, b"after");
    });
}

/// A topic's publisher in its own namespace holds the publish lock (a loan) and has a
/// subscriber: neither is taken for dead, the lock is not taken over.
#[test]
fn issue12_a_topic_publisher_in_another_pid_namespace_keeps_its_lock() {
    if let Some((role, name)) = role() {
        play(&role, &name);
        return;
    }
    if !can_unshare() {
        eprintln!("SKIPPED: `unshare --pid --fork --mount-proc` is refused on this machine");
        return;
    }
    with_watchdog(Duration::from_secs(60), || {
        let name = unique_name("pidns-topic");
        let topic = Topic::builder(&name).capacity(8).create().unwrap();
        let _cleanup = TopicCleanup(name.clone());
        let mut sub = topic.subscriber().unwrap();
        let (mut publisher, mut out) = spawn_in_pid_namespace_as(
            "issue12_a_topic_publisher_in_another_pid_namespace_keeps_its_lock",
            "publisher",
            &name,
        );
        let report = next_report(&mut out);
        let inner: u32 = report.strip_prefix("holding ").unwrap().parse().unwrap();
        assert_ne!(real_pid_of_child(&publisher), inner);
        let info = topic.info();
        assert_eq!((info.publishers, info.subscribers), (1, 2), "{info:?}");
        assert_eq!(info.dead_subscribers, 0, "{info:?}");
        let mut mine = topic.publisher().unwrap();
        assert!(
            matches!(
                mine.send_timeout(b"mine", Duration::from_millis(300)),
                Err(Error::Timeout)
            ),
            "the live namespaced publisher's lock was taken over"
        );
        let report = topic.repair();
        assert_eq!((report.dead_participants, report.reclaimed_slots), (0, 0));
        writeln!(publisher.stdin.as_mut().unwrap()).unwrap();
        assert_eq!(next_report(&mut out), "sent");
        mine.send_timeout(b"mine", Duration::from_secs(5)).unwrap();
        assert_eq!(
            sub.recv_timeout(Duration::from_secs(5)).unwrap().data,
            b"news"
        );
        assert_eq!(
            sub.recv_timeout(Duration::from_secs(5)).unwrap().data,
            b"mine"
        );
        writeln!(publisher.stdin.as_mut().unwrap()).unwrap();
        assert!(publisher.wait().unwrap().success());
    });
}

struct TopicCleanup(String);
impl Drop for TopicCleanup {
    fn drop(&mut self) {
        let _ = Topic::remove(&self.0);
    }
}

/// Removes the mailbox, also when the test fails.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.0);
    }
}
