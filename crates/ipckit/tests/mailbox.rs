//! The mailbox across real processes: delivery, crash safety, hostile bytes, permissions.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    check_message, fork_lingering_child, forked_pid, lingering_holder_round, make_message, reports,
    role, seed, spawn_role, spawn_role_with_stdin, unique_name, wait_for_line, wait_with_watchdog,
    with_watchdog, XorShift,
};
use ipckit::process::{liveness, Liveness};
use ipckit::shm::mailbox::{Mailbox, WaitStrategy};
use ipckit::{Capacity, Error, MessageReceiver, MessageSender, WhenFull};

const WATCHDOG: Duration = Duration::from_secs(60);

/// Removes the mailbox when the test ends, pass or fail.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.0);
    }
}

const SENDERS: usize = 3;
const RECEIVERS: usize = 2;
const PER_SENDER: u64 = 2000;

#[test]
fn many_to_many_delivers_each_message_once_in_per_sender_order() {
    const TEST: &str = "many_to_many_delivers_each_message_once_in_per_sender_order";
    if let Some((role, name)) = role() {
        let mailbox = Mailbox::open(&name).unwrap();
        if role == "sender" {
            let mut tx = mailbox.sender().unwrap();
            for seq in 0..PER_SENDER {
                tx.send(format!("{}:{seq}", std::process::id()).as_bytes())
                    .unwrap();
            }
        } else {
            let mut rx = mailbox.receiver().unwrap();
            loop {
                let msg = rx.recv().unwrap();
                if msg.data == b"END" {
                    break;
                }
                let text = String::from_utf8(msg.data).unwrap();
                let (pid, seq) = text.split_once(':').unwrap();
                assert_eq!(pid.parse::<u32>().unwrap(), msg.meta.sender_pid.unwrap());
                assert_eq!(seq.parse::<u64>().unwrap(), msg.meta.sequence.unwrap());
                println!("@@{pid} {seq}");
            }
        }
        return;
    }
    let name = unique_name("m2m");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity(16)
        .max_message_size(64)
        .create()
        .unwrap();
    let mut receivers: Vec<Child> = (0..RECEIVERS)
        .map(|_| spawn_role(TEST, "receiver", &name))
        .collect();
    let mut senders: Vec<Child> = (0..SENDERS)
        .map(|_| spawn_role(TEST, "sender", &name))
        .collect();
    for sender in &mut senders {
        assert!(wait_with_watchdog(sender, WATCHDOG).success());
    }
    let mut tx = mailbox.sender().unwrap();
    for _ in 0..RECEIVERS {
        tx.send(b"END").unwrap();
    }
    let mut seen = HashSet::new();
    for receiver in &mut receivers {
        let lines = reports(receiver);
        assert!(wait_with_watchdog(receiver, WATCHDOG).success());
        let mut last: HashMap<u32, u64> = HashMap::new();
        for line in lines {
            let (pid, seq) = line.split_once(' ').unwrap();
            let (pid, seq): (u32, u64) = (pid.parse().unwrap(), seq.parse().unwrap());
            if let Some(prev) = last.insert(pid, seq) {
                assert!(seq > prev, "sender {pid}: {seq} arrived after {prev}");
            }
            assert!(seen.insert((pid, seq)), "({pid}, {seq}) delivered twice");
        }
    }
    assert_eq!(seen.len() as u64, SENDERS as u64 * PER_SENDER);
}

#[test]
fn senders_killed_at_random_points_never_tear_duplicate_or_lose_a_sent_message() {
    kill_senders_at_random(
        "senders_killed_at_random_points_never_tear_duplicate_or_lose_a_sent_message",
        false,
    );
}

#[test]
fn single_senders_killed_at_random_points_never_tear_duplicate_or_lose_a_sent_message() {
    kill_senders_at_random(
        "single_senders_killed_at_random_points_never_tear_duplicate_or_lose_a_sent_message",
        true,
    );
}

fn kill_senders_at_random(test: &'static str, single: bool) {
    if let Some((_, arg)) = role() {
        let (name, run) = arg.split_once(' ').unwrap();
        let run: u32 = run.parse().unwrap();
        let mut tx = Mailbox::open(name).unwrap().sender().unwrap();
        println!("@@ready");
        for seq in 0.. {
            tx.send(&make_message(run, seq)).unwrap();
            println!("@@{seq}");
        }
        return;
    }
    const RUNS: u32 = 120;
    let name = unique_name("kill");
    let _cleanup = Cleanup(name.clone());
    let mut builder = Mailbox::builder(&name)
        .capacity(8)
        .max_message_size(256)
        .wait_strategy(WaitStrategy::Sleep);
    if single {
        builder = builder.single_sender().single_receiver();
    }
    let mailbox = builder.create().unwrap();
    let drainer = {
        let mailbox = mailbox.clone();
        std::thread::spawn(move || {
            let mut rx = mailbox.receiver().unwrap();
            let mut got = Vec::new();
            loop {
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(msg) if msg.data == b"STOP" => return got,
                    Ok(msg) => got.push(check_message(&msg.data)),
                    Err(e) => panic!("drainer: {e}"),
                }
            }
        })
    };
    let mut rng = XorShift(seed());
    let mut reported: Vec<(u32, u32)> = Vec::new();
    with_watchdog(WATCHDOG * 2, move || {
        for run in 0..RUNS {
            let mut child = spawn_role(test, "sender", &format!("{name} {run}"));
            let mut out = BufReader::new(child.stdout.take().unwrap());
            wait_for_line(&mut out, "ready");
            std::thread::sleep(Duration::from_micros(rng.next() % 3000));
            child.kill().unwrap();
            child.wait().unwrap();
            let mut rest = String::new();
            out.read_to_string(&mut rest).unwrap();
            reported.extend(
                rest.lines()
                    .filter_map(|l| l.strip_prefix("@@"))
                    .filter_map(|l| l.parse().ok())
                    .map(|seq| (run, seq)),
            );
        }
        let mut tx = mailbox.sender().unwrap();
        tx.send(b"STOP").unwrap();
        let received = drainer.join().unwrap();
        let unique: HashSet<_> = received.iter().copied().collect();
        assert_eq!(
            unique.len(),
            received.len(),
            "a message was delivered twice"
        );
        for sent in &reported {
            assert!(
                unique.contains(sent),
                "{sent:?} was sent but never delivered"
            );
        }
        assert!(
            !reported.is_empty(),
            "no sender got a message out before being killed"
        );
        eprintln!(
            "{} runs: {} sends returned, {} delivered",
            RUNS,
            reported.len(),
            received.len()
        );
        let info = mailbox.info();
        assert!(info.held_slots.is_empty(), "slots still held: {info:?}");
    });
}

#[test]
fn a_receiver_killed_while_holding_a_message_in_place_gives_the_slot_back() {
    const TEST: &str = "a_receiver_killed_while_holding_a_message_in_place_gives_the_slot_back";
    if let Some((_, name)) = role() {
        let mut rx = Mailbox::open(&name).unwrap().receiver().unwrap();
        let held = rx.recv_in_place().unwrap();
        assert_eq!(&*held, b"first");
        println!("@@holding");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("hold");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(1).create().unwrap();
    let mut tx = mailbox.sender().unwrap();
    tx.send(b"first").unwrap();
    let mut child = spawn_role(TEST, "holder", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "holding");
    assert!(matches!(tx.try_send(b"second"), Err(Error::Full)));
    child.kill().unwrap();
    child.wait().unwrap();
    tx.send_timeout(b"second", Duration::from_secs(10))
        .expect("the dead holder's slot comes back");
    let mut rx = mailbox.receiver().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap().data,
        b"second"
    );
}

#[test]
fn messages_outlive_the_process_that_sent_them() {
    const TEST: &str = "messages_outlive_the_process_that_sent_them";
    if let Some((_, name)) = role() {
        let mailbox = Mailbox::builder(&name).capacity(4).create().unwrap();
        mailbox.sender().unwrap().send(b"left behind").unwrap();
        println!("@@{}", std::process::id());
        return;
    }
    let name = unique_name("persist");
    let _cleanup = Cleanup(name.clone());
    let mut child = spawn_role(TEST, "creator", &name);
    let lines = reports(&mut child);
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    let creator: u32 = lines[0].parse().unwrap();
    let mailbox = Mailbox::open(&name).unwrap();
    assert!(
        mailbox.info().participants.is_empty(),
        "the creator detached on exit"
    );
    let msg = mailbox.receiver().unwrap().try_recv().unwrap();
    assert_eq!(msg.data, b"left behind");
    assert_eq!(msg.meta.sender_pid, Some(creator));
}

/// A child loans and publishes 100 messages of different lengths; this process receives
/// them in place and checks every byte and the sequence. `single` makes the mailbox single
/// sender and single receiver: the cursor path, with its own fast loan and in-place claim.
fn zero_copy_run(test: &str, single: bool) {
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name).unwrap().sender().unwrap();
        for seq in 0..100u32 {
            let mut loan = tx.loan().unwrap();
            let len = 1000 + seq as usize;
            for (i, byte) in loan[..len].iter_mut().enumerate() {
                *byte = (i as u32 ^ seq) as u8;
            }
            loan.publish(len).unwrap();
        }
        return;
    }
    let name = unique_name("zc");
    let _cleanup = Cleanup(name.clone());
    let builder = Mailbox::builder(&name).capacity(4).max_message_size(2048);
    let mailbox = if single {
        builder.single_sender().single_receiver().create().unwrap()
    } else {
        builder.create().unwrap()
    };
    let mut child = spawn_role(test, "loaner", &name);
    let mut rx = mailbox.receiver().unwrap();
    for seq in 0..100u32 {
        let msg = rx
            .recv_in_place_deadline(ipckit::Deadline::after(WATCHDOG))
            .unwrap();
        assert_eq!(msg.len(), 1000 + seq as usize);
        assert!(msg
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i as u32 ^ seq) as u8));
        assert_eq!(msg.meta().sequence, Some(seq as u64));
        assert_eq!(msg.meta().sender_pid, Some(child.id()));
    }
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    assert!(matches!(
        rx.recv_in_place_deadline(ipckit::Deadline::Now),
        Err(Error::Empty)
    ));
}

#[test]
fn zero_copy_loan_and_in_place_receive_cross_processes() {
    zero_copy_run("zero_copy_loan_and_in_place_receive_cross_processes", false);
}

#[test]
fn zero_copy_on_the_cursor_path_cross_processes() {
    zero_copy_run("zero_copy_on_the_cursor_path_cross_processes", true);
}

#[test]
fn a_dropped_loan_is_cancelled_not_delivered() {
    let name = unique_name("cancel");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(2).create().unwrap();
    let mut tx = mailbox.sender().unwrap();
    let mut rx = mailbox.receiver().unwrap();
    {
        let mut loan = tx.loan().unwrap();
        loan[..4].copy_from_slice(b"lost");
    }
    tx.send(b"kept").unwrap();
    assert_eq!(rx.try_recv().unwrap().data, b"kept");
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    let loan = tx.loan().unwrap();
    assert!(matches!(
        loan.publish(1 << 20),
        Err(Error::MessageTooLarge { .. })
    ));
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
}

#[test]
fn full_policies_block_time_out_fail_or_cache() {
    let name = unique_name("full");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(2).create().unwrap();
    let mut rx = mailbox.receiver().unwrap();
    let mut tx = mailbox.sender().unwrap().when_full(WhenFull::Fail);
    tx.send(b"1").unwrap();
    tx.send(b"2").unwrap();
    assert!(matches!(tx.send(b"3"), Err(Error::Full)));
    let mut tx = tx.when_full(WhenFull::Timeout(Duration::from_millis(30)));
    let start = Instant::now();
    assert!(matches!(tx.send(b"3"), Err(Error::Timeout)));
    assert!(start.elapsed() >= Duration::from_millis(30));

    // Cache: one message per sender, kept in the mailbox (tests/mailbox_cache.rs has more).
    let mut tx = tx.when_full(WhenFull::Cache);
    tx.send(b"3").unwrap();
    assert_eq!(tx.cached(), 1);
    assert!(
        matches!(tx.send(b"4"), Err(Error::Full)),
        "one cached message per sender"
    );
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(rx.try_recv().unwrap().data);
    }
    assert_eq!(got, [b"1", b"2", b"3"]);
    assert_eq!(tx.cached(), 0);
    assert!(matches!(
        tx.try_send(&[0; 4097]),
        Err(Error::MessageTooLarge {
            size: 4097,
            max: 4096
        })
    ));
}

#[test]
fn rendezvous_send_returns_only_after_a_receiver_took_the_message() {
    const TEST: &str = "rendezvous_send_returns_only_after_a_receiver_took_the_message";
    if let Some((_, name)) = role() {
        let mut rx = Mailbox::open(&name).unwrap().receiver().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let msg = rx.recv().unwrap();
        println!("@@{}", String::from_utf8(msg.data).unwrap());
        return;
    }
    let name = unique_name("rv");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity_kind(Capacity::Rendezvous)
        .create()
        .unwrap();
    let mut tx = mailbox.sender().unwrap();
    // Nobody receives: the timed send gives up and takes its message back.
    assert!(matches!(
        tx.send_timeout(b"unseen", Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert!(matches!(tx.try_send(b"unseen"), Err(Error::Full)));
    // Timed from before the spawn: the child may start its 200 ms nap before this thread
    // runs again.
    let start = Instant::now();
    let mut child = spawn_role(TEST, "receiver", &name);
    tx.send_timeout(b"met", WATCHDOG).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "send returned before the receive"
    );
    assert_eq!(reports(&mut child), ["met"]);
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
}

#[test]
fn another_user_cannot_open_a_0600_mailbox() {
    const TEST: &str = "another_user_cannot_open_a_0600_mailbox";
    if let Some((_, name)) = role() {
        // SAFETY: plain system calls, in a single-threaded role process.
        let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
        assert!(dropped, "cannot drop to nobody");
        match Mailbox::open(&name) {
            Err(Error::PermissionDenied { object }) => {
                assert!(object.contains(&name));
                println!("@@denied");
            }
            other => println!("@@unexpected {other:?}"),
        }
        return;
    }
    let name = unique_name("perm");
    let _cleanup = Cleanup(name.clone());
    let _mailbox = Mailbox::create(&name).unwrap();
    let mut child = spawn_role(TEST, "nobody", &name);
    assert_eq!(reports(&mut child), ["denied"]);
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
}

#[test]
fn names_and_geometry_are_checked() {
    assert!(matches!(
        Mailbox::open(&unique_name("missing")),
        Err(Error::NotFound { .. })
    ));
    assert!(Mailbox::create("a/b").is_err());
    assert!(matches!(
        Mailbox::builder(&unique_name("zero")).capacity(0).create(),
        Err(Error::InvalidArgument(_))
    ));
    let name = unique_name("twice");
    let _cleanup = Cleanup(name.clone());
    Mailbox::create(&name).unwrap();
    assert!(matches!(
        Mailbox::create(&name),
        Err(Error::AlreadyExists { .. })
    ));
}

mod hostile {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::FileExt;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

        /// Random bytes over a live mailbox's header and slots: every operation returns,
        /// with a value or an error; none panics, hangs or reads out of bounds.
        #[test]
        fn scribbled_mailbox_gives_errors_not_crashes(
            writes in proptest::collection::vec((0usize..40_000, proptest::collection::vec(any::<u8>(), 1..64)), 1..16)
        ) {
            let name = unique_name("hostile");
            let _cleanup = Cleanup(name.clone());
            let mailbox = Mailbox::builder(&name).capacity(8).max_message_size(4000).create().unwrap();
            let mut tx = mailbox.sender().unwrap();
            let mut rx = mailbox.receiver().unwrap();
            for i in 0..5u8 { tx.send(&[i; 100]).unwrap(); }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/dev/shm/ipckit.mailbox.{name}"))
                .unwrap();
            let len = file.metadata().unwrap().len() as usize;
            for (offset, bytes) in &writes {
                file.write_at(bytes, (offset % len) as u64).unwrap();
            }
            with_watchdog(Duration::from_secs(20), move || {
                let short = Duration::from_millis(5);
                for _ in 0..10 {
                    let _ = tx.try_send(b"x");
                    let _ = tx.send_timeout(b"y", short);
                    let _ = rx.try_recv();
                    let _ = rx.recv_timeout(short);
                    if let Ok(held) = rx.recv_in_place_deadline(ipckit::Deadline::Now) {
                        let _ = held.iter().map(|&b| b as u64).sum::<u64>();
                    }
                }
                let _ = mailbox.info();
                let _ = mailbox.repair();
                let _ = Mailbox::open(mailbox.name()).map(|m| m.info());
            });
        }
    }
}

fn chained_segments(name: &str) -> usize {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter(|e| {
            let file = e.as_ref().unwrap().file_name();
            let file = file.to_string_lossy();
            file.starts_with("ipckit.mailbox-chain.") && file.ends_with(&format!(".{name}"))
        })
        .count()
}

#[test]
fn an_unbounded_mailbox_never_makes_a_sender_wait_and_returns_memory_as_it_drains() {
    let name = unique_name("unb");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity_kind(Capacity::Unbounded)
        .unbounded_ring_capacity(4)
        .max_message_size(16)
        .create()
        .unwrap();
    let mut tx = mailbox.sender().unwrap();
    for i in 0..1000u32 {
        tx.try_send(&i.to_le_bytes())
            .expect("an unbounded mailbox is never full");
    }
    assert!(
        chained_segments(&name) >= 200,
        "rings are chained as needed"
    );
    assert_eq!(mailbox.info().depth, 1000);
    assert_eq!(mailbox.info().capacity, Capacity::Unbounded);
    let mut rx = Mailbox::open(&name).unwrap().receiver().unwrap();
    for i in 0..1000u32 {
        assert_eq!(rx.try_recv().unwrap().data, i.to_le_bytes());
    }
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    assert!(chained_segments(&name) <= 1, "drained rings are removed");
    tx.try_send(b"again").unwrap();
    assert_eq!(rx.try_recv().unwrap().data, b"again");
    Mailbox::remove(&name).unwrap();
    assert_eq!(chained_segments(&name), 0);
}

#[test]
fn unbounded_many_senders_across_processes_lose_nothing() {
    const TEST: &str = "unbounded_many_senders_across_processes_lose_nothing";
    const PER: u32 = 3000;
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name).unwrap().sender().unwrap();
        for seq in 0..PER {
            tx.try_send(&seq.to_le_bytes()).unwrap();
        }
        return;
    }
    let name = unique_name("unbmp");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity_kind(Capacity::Unbounded)
        .unbounded_ring_capacity(8)
        .max_message_size(16)
        .create()
        .unwrap();
    let mut rx = mailbox.receiver().unwrap();
    let mut children: Vec<Child> = (0..2).map(|_| spawn_role(TEST, "sender", &name)).collect();
    let mut last: HashMap<u32, u32> = HashMap::new();
    let mut count = 0;
    while count < 2 * PER {
        let msg = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(msg) => msg,
            Err(e) => panic!("{e} after {count}: {last:?} {:?}", mailbox.info()),
        };
        let seq = u32::from_le_bytes(msg.data[..4].try_into().unwrap());
        let pid = msg.meta.sender_pid.unwrap();
        let expected = last.get(&pid).map_or(0, |s| s + 1);
        assert_eq!(seq, expected, "sender {pid} out of order or lost");
        last.insert(pid, seq);
        count += 1;
    }
    for child in &mut children {
        assert!(wait_with_watchdog(child, WATCHDOG).success());
    }
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
}

#[test]
fn a_single_sender_is_exclusive_and_its_successor_overwrites_nothing() {
    const TEST: &str = "a_single_sender_is_exclusive_and_its_successor_overwrites_nothing";
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name).unwrap().sender().unwrap();
        for i in 0..5u8 {
            tx.send(&[i]).unwrap();
        }
        println!("@@sent");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("sole");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity(16)
        .single_sender()
        .single_receiver()
        .create()
        .unwrap();
    let mut child = spawn_role(TEST, "sender", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "sent");
    match mailbox.sender() {
        Err(Error::AlreadyExists { object }) => assert!(object.contains("single sender")),
        other => panic!("a second single sender was let in: {other:?}"),
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut tx = mailbox.sender().expect("a dead sender's place is free");
    for i in 5..10u8 {
        tx.send(&[i]).unwrap();
    }
    let mut rx = mailbox.receiver().unwrap();
    assert!(matches!(
        mailbox.receiver(),
        Err(Error::AlreadyExists { .. })
    ));
    let got: Vec<u8> = (0..10).map(|_| rx.try_recv().unwrap().data[0]).collect();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
}

/// A single sender's or receiver's holder forks a child that keeps its descriptors (and so
/// the token's liveness lock) for 100 ms without exec, then exits at once, either without
/// giving the token back ("vanish") or after giving it back ("release"): the next process
/// gets the token, not a transient `AlreadyExists`. While the holder lives it is refused at
/// once.
#[test]
fn a_sole_token_is_taken_although_its_gone_holders_forked_child_still_shares_its_lock() {
    const TEST: &str =
        "a_sole_token_is_taken_although_its_gone_holders_forked_child_still_shares_its_lock";
    if let Some((mode, arg)) = role() {
        let mut args = arg.split(' ');
        let (name, which) = (args.next().unwrap(), args.next().unwrap());
        let linger: u64 = args.next().unwrap().parse().unwrap();
        let mailbox = Mailbox::open(name).unwrap();
        let sender = (which == "sender").then(|| mailbox.sender().unwrap());
        let receiver = (which == "receiver").then(|| mailbox.receiver().unwrap());
        println!("@@holding");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        let child = fork_lingering_child(Duration::from_millis(linger));
        println!("@@forked {child}");
        if mode == "release" {
            drop((sender, receiver));
        }
        std::process::exit(0);
    }
    let name = unique_name("linger");
    let _cleanup = Cleanup(name.clone());
    Mailbox::builder(&name)
        .capacity(4)
        .single_sender()
        .single_receiver()
        .create()
        .unwrap();
    with_watchdog(WATCHDOG, move || {
        let mailbox = Mailbox::open(&name).unwrap();
        let take = |which: &str| match which {
            "sender" => mailbox.sender().map(drop),
            _ => mailbox.receiver().map(drop),
        };
        for (mode, which) in [
            ("vanish", "sender"),
            ("release", "sender"),
            ("vanish", "receiver"),
            ("release", "receiver"),
        ] {
            let arg = format!("{name} {which} 100");
            let what = format!("{mode} {which}");
            let exercised =
                (0..5).any(|_| lingering_holder_round(TEST, mode, &arg, &what, || take(which)));
            assert!(
                exercised,
                "{mode} {which}: the forked child was never still there when the token was taken"
            );
        }
        // A child that keeps the lock past the wait: refused, with the situation named; taken
        // once the child is gone.
        let arg = format!("{name} sender 1500");
        let mut holder = spawn_role_with_stdin(TEST, "vanish", &arg, Stdio::piped());
        let mut stdin = holder.stdin.take().unwrap();
        let mut out = BufReader::new(holder.stdout.take().unwrap());
        wait_for_line(&mut out, "holding");
        writeln!(stdin, "go").unwrap();
        let child = forked_pid(&mut out);
        assert!(wait_with_watchdog(&mut holder, WATCHDOG).success());
        match take("sender") {
            Err(Error::AlreadyExists { object }) => assert!(
                object.contains(&format!(
                    "(pid {}, gone, but its liveness lock",
                    holder.id()
                )) && object.contains("forked"),
                "{object}"
            ),
            other => panic!("taken while the forked child holds the lock: {other:?}"),
        }
        while liveness(child, None) == Liveness::Alive {
            std::thread::sleep(Duration::from_millis(10));
        }
        take("sender").expect("free once the forked child is gone");
    });
}

#[test]
fn a_single_receiver_killed_holding_a_message_leaves_it_to_the_next() {
    const TEST: &str = "a_single_receiver_killed_holding_a_message_leaves_it_to_the_next";
    if let Some((_, name)) = role() {
        let mut rx = Mailbox::open(&name).unwrap().receiver().unwrap();
        let held = rx.recv_in_place().unwrap();
        assert_eq!(&*held, b"precious");
        println!("@@holding");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("solerx");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity(4)
        .single_receiver()
        .create()
        .unwrap();
    mailbox.sender().unwrap().send(b"precious").unwrap();
    let mut child = spawn_role(TEST, "receiver", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "holding");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut rx = mailbox.receiver().unwrap();
    assert_eq!(rx.try_recv().unwrap().data, b"precious");
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    for unsupported in [
        Mailbox::builder(&unique_name("x"))
            .capacity_kind(Capacity::Unbounded)
            .single_sender(),
        Mailbox::builder(&unique_name("x"))
            .capacity_kind(Capacity::Unbounded)
            .single_sender()
            .single_receiver(),
        Mailbox::builder(&unique_name("x"))
            .capacity_kind(Capacity::Rendezvous)
            .single_receiver(),
    ] {
        assert!(matches!(unsupported.create(), Err(Error::Unsupported(_))));
    }
}

/// A sender process streams 3,000 numbered messages in bursts into an unbounded mailbox of
/// rings of 8: the chain grows while the receiver lags; then 20 more, each received before
/// the next is sent, use the last ring lap after lap. `mailbox_position` grows with every message received, across the rings,
/// where `position` starts again in each (a receiver of many and the single receiver alike).
#[test]
fn an_unbounded_mailboxs_position_grows_through_its_chained_rings() {
    const TEST: &str = "an_unbounded_mailboxs_position_grows_through_its_chained_rings";
    const N: u32 = 3000;
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name).unwrap().sender().unwrap();
        for seq in 0..N {
            tx.send(&seq.to_le_bytes()).unwrap();
            if seq % 100 == 99 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        return;
    }
    for single in [false, true] {
        let name = unique_name("unbpos");
        let _cleanup = Cleanup(name.clone());
        let mut builder = Mailbox::builder(&name)
            .capacity_kind(Capacity::Unbounded)
            .unbounded_ring_capacity(8)
            .max_message_size(16);
        if single {
            builder = builder.single_receiver();
        }
        let mailbox = builder.create().unwrap();
        let mut rx = mailbox.receiver().unwrap();
        // Killed if the test fails, so that it chains no rings after the cleanup.
        struct Sender(Child);
        impl Drop for Sender {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = Sender(spawn_role(TEST, "sender", &name));
        let (mut last, mut restarts, mut newest_ring, mut longest_ring) = (None, 0, 0, 0);
        let mut previous_pos = 0;
        for seq in 0..N {
            let held = rx
                .recv_in_place_deadline(ipckit::Deadline::after(WATCHDOG))
                .unwrap();
            assert_eq!(*held, seq.to_le_bytes(), "single {single}");
            let at = held.mailbox_position().unwrap();
            assert!(
                last < Some(at),
                "single {single}: message {seq} at {at:#x}, after {last:x?}"
            );
            last = Some(at);
            let (ring, pos) = (at >> 32, held.position());
            assert_eq!(pos, at & 0xffff_ffff, "single {single}");
            restarts += u32::from(pos < previous_pos);
            previous_pos = pos;
            newest_ring = newest_ring.max(ring);
            longest_ring = longest_ring.max(pos);
        }
        assert!(wait_with_watchdog(&mut child.0, WATCHDOG).success());
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
        // A ring the receiver keeps up with is used lap after lap (not sealed: never full).
        let mut tx = mailbox.sender().unwrap();
        for seq in N..N + 20 {
            tx.send(&seq.to_le_bytes()).unwrap();
            let held = rx.recv_in_place_deadline(ipckit::Deadline::Now).unwrap();
            assert_eq!(*held, seq.to_le_bytes(), "single {single}");
            let at = held.mailbox_position().unwrap();
            assert!(last < Some(at), "single {single}: message {seq}");
            last = Some(at);
            longest_ring = longest_ring.max(held.position());
        }
        eprintln!(
            "single {single}: {restarts} restarts of position, newest ring {newest_ring}, \
             a ring up to position {longest_ring}"
        );
        assert!(
            newest_ring >= 10 && restarts >= 10,
            "single {single}: the chain hardly grew (ring {newest_ring}): the test did not test it"
        );
        assert!(
            longest_ring >= 20,
            "single {single}: no ring was used for a second lap: the test did not test it"
        );
    }
}

/// The single receiver of an unbounded mailbox (rings of 4) is killed holding its tenth
/// message, in the third ring: the next receiver gets that message again, at the same
/// mailbox position, then the rest in order, and the drained rings are removed.
#[test]
fn a_single_receiver_of_an_unbounded_mailbox_killed_holding_a_message_leaves_it_to_the_next() {
    const TEST: &str =
        "a_single_receiver_of_an_unbounded_mailbox_killed_holding_a_message_leaves_it_to_the_next";
    if let Some((_, name)) = role() {
        let mut rx = Mailbox::open(&name).unwrap().receiver().unwrap();
        for i in 0..9u8 {
            assert_eq!(rx.try_recv().unwrap().data, [i]);
        }
        let held = rx.recv_in_place().unwrap();
        assert_eq!(*held, [9]);
        println!("@@holding {}", held.mailbox_position().unwrap());
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("unbsolerx");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity_kind(Capacity::Unbounded)
        .unbounded_ring_capacity(4)
        .single_receiver()
        .create()
        .unwrap();
    let mut tx = mailbox.sender().unwrap();
    for i in 0..20u8 {
        tx.send(&[i]).unwrap();
    }
    assert!(chained_segments(&name) >= 4, "rings are chained");
    let mut child = spawn_role(TEST, "receiver", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("@@holding ") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "the receiver ended before holding its message"
        );
    }
    let held_at: u64 = line["@@holding ".len()..].trim().parse().unwrap();
    assert_eq!(
        held_at >> 32,
        2,
        "the tenth message of rings of 4 is in ring 2"
    );
    assert!(matches!(
        mailbox.receiver(),
        Err(Error::AlreadyExists { .. })
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    with_watchdog(WATCHDOG, move || {
        let mut rx = mailbox.receiver().unwrap();
        let mut last = None;
        for i in 9..20u8 {
            let held = rx.recv_in_place_deadline(ipckit::Deadline::Now).unwrap();
            assert_eq!(*held, [i]);
            let at = held.mailbox_position().unwrap();
            if i == 9 {
                assert_eq!(at, held_at, "given again at the same mailbox position");
            }
            assert!(last < Some(at));
            last = Some(at);
        }
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
        tx.send(b"again").unwrap();
        assert_eq!(rx.try_recv().unwrap().data, b"again");
        assert!(chained_segments(&name) <= 1, "drained rings are removed");
    });
}

/// `Bounded(n)` means n unread messages, whatever the fast path: a slot is free again as soon
/// as `recv` has returned its message.
#[test]
fn a_bounded_mailbox_holds_exactly_its_capacity_of_unread_messages() {
    for (single_sender, single_receiver) in
        [(false, false), (true, false), (false, true), (true, true)]
    {
        let name = unique_name("cap");
        let _cleanup = Cleanup(name.clone());
        let mut builder = Mailbox::builder(&name);
        builder = builder.capacity(2);
        if single_sender {
            builder = builder.single_sender();
        }
        if single_receiver {
            builder = builder.single_receiver();
        }
        let mailbox = builder.create().unwrap();
        let mut tx = mailbox.sender().unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let flags = (single_sender, single_receiver);
        tx.try_send(b"A").unwrap();
        tx.try_send(b"B").unwrap();
        assert!(matches!(tx.try_send(b"X"), Err(Error::Full)), "{flags:?}");
        assert_eq!(rx.try_recv().unwrap().data, b"A");
        tx.try_send(b"C")
            .unwrap_or_else(|e| panic!("{flags:?}: one unread message, capacity 2: {e}"));
        assert!(matches!(tx.try_send(b"X"), Err(Error::Full)), "{flags:?}");
        assert_eq!(rx.try_recv().unwrap().data, b"B");
        assert_eq!(rx.try_recv().unwrap().data, b"C");
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    }
}

/// Issue 14: on the cursor path (single sender and single receiver) a receiver killed while
/// holding a message in place never stored the head, so the next receiver gets it again.
#[test]
fn issue14_a_receiver_killed_holding_a_message_on_the_cursor_path_leaves_it_to_the_next() {
    const TEST: &str =
        "issue14_a_receiver_killed_holding_a_message_on_the_cursor_path_leaves_it_to_the_next";
    if let Some((_, name)) = role() {
        let mut rx = Mailbox::open(&name).unwrap().receiver().unwrap();
        let held = rx.recv_in_place().unwrap();
        assert_eq!(&*held, b"precious");
        println!("@@holding");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("cursorrx");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity(2)
        .single_sender()
        .single_receiver()
        .create()
        .unwrap();
    let mut tx = mailbox.sender().unwrap();
    tx.send(b"precious").unwrap();
    tx.send(b"second").unwrap();
    let mut child = spawn_role(TEST, "receiver", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "holding");
    child.kill().unwrap();
    child.wait().unwrap();
    // The held slot was never released: the ring is still full.
    assert!(matches!(tx.try_send(b"third"), Err(Error::Full)));
    let mut rx = mailbox.receiver().unwrap();
    assert_eq!(rx.try_recv().unwrap().data, b"precious");
    tx.send(b"third").unwrap();
    assert_eq!(rx.try_recv().unwrap().data, b"second");
    assert_eq!(rx.try_recv().unwrap().data, b"third");
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
}

/// Issue 14: the cursor path's sleepers (a receiver on an empty ring, a sender on a full one)
/// are woken by the other process's plain cursor store and the `membarrier` they pay
/// themselves. A lost wake-up would cost a whole bounded sleep (one second); none may.
#[test]
fn issue14_sleepers_on_the_cursor_path_are_woken_without_a_lost_wake_up() {
    const TEST: &str = "issue14_sleepers_on_the_cursor_path_are_woken_without_a_lost_wake_up";
    const COUNT: u32 = 40;
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::builder(&name)
            .wait_strategy(WaitStrategy::Sleep)
            .open()
            .unwrap()
            .sender()
            .unwrap();
        for i in 0..COUNT {
            if i % 2 == 1 {
                // Let the receiver fall asleep on an empty ring.
                std::thread::sleep(Duration::from_millis(3));
            }
            tx.send(&i.to_le_bytes()).unwrap();
        }
        return;
    }
    let name = unique_name("cursorwake");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity(1)
        .single_sender()
        .single_receiver()
        .wait_strategy(WaitStrategy::Sleep)
        .create()
        .unwrap();
    let mut rx = mailbox.receiver().unwrap();
    let mut child = spawn_role(TEST, "sender", &name);
    with_watchdog(WATCHDOG, move || {
        let mut slowest = Duration::ZERO;
        for i in 0..COUNT {
            if i % 2 == 0 {
                // Let the sender fall asleep on a full ring.
                std::thread::sleep(Duration::from_millis(3));
            }
            let start = Instant::now();
            let msg = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            slowest = slowest.max(start.elapsed());
            assert_eq!(msg.data, i.to_le_bytes());
        }
        assert!(
            slowest < Duration::from_millis(600),
            "a wake-up took {slowest:?}: lost, and caught only by the bounded sleep"
        );
    });
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
}
