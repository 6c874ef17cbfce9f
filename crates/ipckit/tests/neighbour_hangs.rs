//! Issue 12, item 7: hangs a neighbour can cause. Every wait sleeps after its spin budget,
//! and every sleep re-checks its condition at least once a second, so a lost wake-up costs at
//! most that second and a stuck lock holder costs CPU time for nobody.
//!
//! The attacker and the stuck holder are separate processes (this test binary in a role).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{role, spawn_role, unique_name, wait_for_line, wait_with_watchdog, with_watchdog};
use ipckit::shm::mailbox::Mailbox;
use ipckit::shm::topic::Topic;
use ipckit::{Error, MessageReceiver, MessageSender};

/// Where a mailbox's receivers count their sleepers in `/dev/shm/ipckit.mailbox.NAME`: the
/// segment header (64 bytes), then the ring header, whose `not_empty` event sits on the fifth
/// cache line (after the fields, `tail` and `head`): its sequence word at 256, its sleeper
/// count at 260. The test checks the guess: the word must read 1 while the receiver sleeps.
const NOT_EMPTY_SLEEPERS: u64 = 64 + 256 + 4;

/// Kills the child (and reaps it) when the test ends, pass or fail.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU time the calling thread has used so far (`/proc/thread-self/stat`;
/// per thread, so tests running beside this one do not count).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

fn read_u32(file: &std::fs::File, offset: u64) -> u32 {
    let mut word = [0u8; 4];
    file.read_exact_at(&mut word, offset).unwrap();
    u32::from_ne_bytes(word)
}

#[test]
fn a_zeroed_sleeper_count_delays_a_receiver_by_at_most_a_second() {
    const TEST: &str = "a_zeroed_sleeper_count_delays_a_receiver_by_at_most_a_second";
    if let Some((role, arg)) = role() {
        if role == "receiver" {
            let mut rx = Mailbox::open(&arg).unwrap().receiver().unwrap();
            println!("@@ready");
            // No deadline: before the fix, a lost wake-up made this sleep forever.
            let msg = rx.recv().unwrap();
            println!("@@got {}", String::from_utf8(msg.data).unwrap());
        } else {
            // The attacker: another process with write access to the segment file.
            let (path, offset) = arg.split_once(' ').unwrap();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            file.write_all_at(&0u32.to_ne_bytes(), offset.parse().unwrap())
                .unwrap();
        }
        return;
    }
    let name = unique_name("zeroed-sleepers");
    let mailbox = Mailbox::builder(&name).capacity(4).create().unwrap();
    let _cleanup = CleanupMailbox(name.clone());
    let path = format!("/dev/shm/ipckit.mailbox.{name}");
    let mut receiver = Reap(spawn_role(TEST, "receiver", &name));
    let mut out = BufReader::new(receiver.0.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");

    // Wait until the receiver sleeps: its sleeper count reads 1.
    let file = std::fs::File::open(&path).unwrap();
    let start = Instant::now();
    while read_u32(&file, NOT_EMPTY_SLEEPERS) != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the receiver never counted itself a sleeper at offset {NOT_EMPTY_SLEEPERS}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut attacker = spawn_role(TEST, "attacker", &format!("{path} {NOT_EMPTY_SLEEPERS}"));
    assert!(wait_with_watchdog(&mut attacker, Duration::from_secs(10)).success());
    assert_eq!(read_u32(&file, NOT_EMPTY_SLEEPERS), 0);

    // The sender sees no sleeper and makes no wake call; the receiver must still get it.
    let sent = Instant::now();
    mailbox.sender().unwrap().send(b"hello").unwrap();
    let (line, delay) = with_watchdog(Duration::from_secs(10), move || {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let delay = sent.elapsed();
        // Drain the rest: the child's harness still writes its summary to this pipe.
        std::io::copy(&mut out, &mut std::io::sink()).unwrap();
        (line, delay)
    });
    assert_eq!(line.trim_end(), "@@got hello");
    assert!(
        delay < Duration::from_millis(2500),
        "the receiver took {delay:?} to notice the message"
    );
    assert!(wait_with_watchdog(&mut receiver.0, Duration::from_secs(10)).success());
    println!("receiver woke {delay:?} after the send, with its wake-up lost");
}

#[test]
fn a_stuck_publish_lock_holder_costs_a_waiting_publisher_little_cpu() {
    const TEST: &str = "a_stuck_publish_lock_holder_costs_a_waiting_publisher_little_cpu";
    if let Some((_, name)) = role() {
        let topic = Topic::open(&name).unwrap();
        let mut publisher = topic.publisher().unwrap();
        // Holds the publish lock (a loan) and never lets go: alive, but stuck.
        let _loan = publisher.loan().unwrap();
        println!("@@locked");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("stuck-publisher");
    let topic = Topic::builder(&name).capacity(8).create().unwrap();
    let _cleanup = CleanupTopic(name.clone());
    let mut holder = Reap(spawn_role(TEST, "holder", &name));
    let mut out = BufReader::new(holder.0.stdout.take().unwrap());
    wait_for_line(&mut out, "locked");
    // And stopped for good measure: a SIGSTOPped holder is alive too.
    let pid = rustix::process::Pid::from_raw(holder.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();

    let mut publisher = topic.publisher().unwrap();
    let mut subscriber = topic.subscriber().unwrap();
    let (cpu, wall, outcome) = with_watchdog(Duration::from_secs(20), move || {
        let (cpu, wall) = (cpu_time(), Instant::now());
        let outcome = publisher.send_timeout(b"blocked", Duration::from_secs(2));
        (cpu_time() - cpu, wall.elapsed(), (outcome, publisher))
    });
    let (outcome, mut publisher) = outcome;
    assert!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    assert!(wall >= Duration::from_secs(2), "timed out early: {wall:?}");
    // Spinning would cost the whole 2 s; sleeping in liveness turns costs milliseconds.
    assert!(
        cpu < Duration::from_millis(400),
        "waiting {wall:?} on a stuck holder cost {cpu:?} of CPU"
    );
    println!("waited {wall:?} on a stuck publish lock for {cpu:?} of CPU");

    // A publish without a timeout sleeps too, and goes through once the holder dies.
    let blocked = std::thread::spawn(move || {
        let cpu = cpu_time();
        publisher.send(b"after").unwrap();
        cpu_time() - cpu
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(!blocked.is_finished(), "published past a live holder");
    let killed = Instant::now();
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let cpu = with_watchdog(Duration::from_secs(10), move || blocked.join().unwrap());
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "the dead holder's lock was taken over only after {:?}",
        killed.elapsed()
    );
    assert!(
        cpu < Duration::from_millis(400),
        "blocked publish cost {cpu:?}"
    );
    let msg = subscriber.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(msg.data, b"after");
}

/// Removes the mailbox when the test ends, pass or fail.
struct CleanupMailbox(String);
impl Drop for CleanupMailbox {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.0);
    }
}

/// Removes the topic when the test ends, pass or fail.
struct CleanupTopic(String);
impl Drop for CleanupTopic {
    fn drop(&mut self) {
        let _ = Topic::remove(&self.0);
    }
}
