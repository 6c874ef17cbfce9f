//! Issue 18, item 2: Mach's "temporarily cache a message". A message sent with
//! `WhenFull::Cache` into a full mailbox is kept in the mailbox's shared memory, one per
//! sender, and moved into the ring by whoever makes room, whether or not its sender still
//! runs; the sender can ask whether it was delivered.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{role, spawn_role, unique_name, wait_for_line, wait_with_watchdog, with_watchdog};
use ipckit::shm::mailbox::{CacheState, Mailbox};
use ipckit::{Deadline, Error, MessageReceiver, MessageSender, WhenFull};

const WATCHDOG: Duration = Duration::from_secs(60);

/// Removes the mailbox at the end of a test.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.0);
    }
}

fn full_mailbox(tag: &str, capacity: usize) -> (String, Cleanup, Mailbox) {
    let name = unique_name(tag);
    let mailbox = Mailbox::builder(&name).capacity(capacity).create().unwrap();
    let mut tx = mailbox.sender().unwrap();
    for i in 0..capacity {
        tx.send(format!("queued {i}").as_bytes()).unwrap();
    }
    assert!(matches!(tx.try_send(b"x"), Err(Error::Full)));
    (name.clone(), Cleanup(name), mailbox)
}

#[test]
fn a_cached_message_is_delivered_after_its_sender_exited() {
    const TEST: &str = "a_cached_message_is_delivered_after_its_sender_exited";
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name)
            .unwrap()
            .sender()
            .unwrap()
            .when_full(WhenFull::Cache);
        tx.send(b"cached by a process that then exited").unwrap();
        assert_eq!(tx.cache_state(), CacheState::Pending);
        println!("@@cached");
        return; // exits at once: nobody in this process will deliver it
    }
    let (name, _cleanup, mailbox) = full_mailbox("cache-exit", 2);
    let mut child = spawn_role(TEST, "sender", &name);
    let child_pid = child.id();
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    assert_eq!(
        mailbox.info().cached,
        1,
        "kept in the mailbox after the sender exited"
    );
    with_watchdog(WATCHDOG, move || {
        let mut rx = mailbox.receiver().unwrap();
        assert_eq!(rx.recv().unwrap().data, b"queued 0");
        assert_eq!(rx.recv().unwrap().data, b"queued 1");
        let cached = rx.recv_timeout(WATCHDOG).unwrap();
        assert_eq!(cached.data, b"cached by a process that then exited");
        assert_eq!(cached.meta.sender_pid, Some(child_pid));
        assert_eq!(
            cached.meta.sequence,
            Some(0),
            "the sender's own sequence number"
        );
        assert!(matches!(rx.try_recv(), Err(Error::Empty)), "delivered once");
        assert_eq!(mailbox.info().cached, 0);
    });
}

#[test]
fn a_sender_that_did_not_exit_is_told_its_cached_message_was_delivered() {
    const TEST: &str = "a_sender_that_did_not_exit_is_told_its_cached_message_was_delivered";
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name)
            .unwrap()
            .sender()
            .unwrap()
            .when_full(WhenFull::Cache);
        tx.send(b"first cached").unwrap();
        assert!(
            matches!(tx.send(b"second"), Err(Error::Full)),
            "a second cache attempt while the first is pending"
        );
        println!("@@cached");
        let start = std::time::Instant::now();
        while tx.cache_state() != CacheState::Delivered {
            assert!(start.elapsed() < WATCHDOG, "never told of the delivery");
            std::thread::sleep(Duration::from_millis(2));
        }
        println!("@@delivered");
        return;
    }
    let (name, _cleanup, mailbox) = full_mailbox("cache-told", 1);
    let mut child = spawn_role(TEST, "sender", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "cached");
    let mut rx = mailbox.receiver().unwrap();
    assert_eq!(rx.recv().unwrap().data, b"queued 0");
    // Taking that message made room: the receiver moved the cached one in, and the sender
    // (still running) learns so.
    wait_for_line(&mut out, "delivered");
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap().data, b"first cached");
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    let rest: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    assert!(!rest.iter().any(|l| l.contains("@@")), "{rest:?}");
}

#[test]
fn cached_messages_of_different_senders_come_after_those_already_queued() {
    with_watchdog(WATCHDOG, || {
        let (_name, _cleanup, mailbox) = full_mailbox("cache-order", 3);
        let mut a = mailbox.sender().unwrap().when_full(WhenFull::Cache);
        let mut b = mailbox.sender().unwrap().when_full(WhenFull::Cache);
        a.send(b"cached by a").unwrap();
        b.send(b"cached by b").unwrap();
        assert_eq!(mailbox.info().cached, 2);
        let mut rx = mailbox.receiver().unwrap();
        let got: Vec<Vec<u8>> = (0..5).map(|_| rx.recv().unwrap().data).collect();
        assert_eq!(got[..3], [&b"queued 0"[..], b"queued 1", b"queued 2"]);
        let mut cached = got[3..].to_vec();
        cached.sort();
        assert_eq!(cached, [&b"cached by a"[..], b"cached by b"]);
        assert_eq!(a.cache_state(), CacheState::Delivered);
        assert_eq!(b.cache_state(), CacheState::Delivered);
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    });
}

#[test]
fn a_sender_keeps_its_own_order_and_flush_waits_for_room() {
    with_watchdog(WATCHDOG, || {
        let (_name, _cleanup, mailbox) = full_mailbox("cache-own-order", 1);
        let mut tx = mailbox.sender().unwrap().when_full(WhenFull::Cache);
        assert_eq!(tx.cache_state(), CacheState::Empty);
        tx.send(b"cached").unwrap();
        assert!(matches!(tx.flush_deadline(Deadline::Now), Err(Error::Full)));
        let mut rx = mailbox.receiver().unwrap();
        assert_eq!(rx.recv().unwrap().data, b"queued 0");
        // Room again (the cached message took it): a blocking send after it waits, and comes
        // after it.
        let sender = std::thread::spawn(move || {
            let mut tx = tx.when_full(WhenFull::Block);
            tx.send(b"after").unwrap();
            tx
        });
        assert_eq!(rx.recv().unwrap().data, b"cached");
        assert_eq!(rx.recv().unwrap().data, b"after");
        let tx = sender.join().unwrap();
        assert_eq!(tx.cache_state(), CacheState::Delivered);
    });
}

#[test]
fn a_cache_with_room_sends_at_once_and_unsupported_kinds_say_so() {
    let name = unique_name("cache-kinds");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(2).create().unwrap();
    let mut tx = mailbox.sender().unwrap().when_full(WhenFull::Cache);
    tx.send(b"room").unwrap();
    assert_eq!(tx.cache_state(), CacheState::Empty, "nothing was cached");
    assert_eq!(mailbox.receiver().unwrap().recv().unwrap().data, b"room");

    let single = unique_name("cache-single");
    let _cleanup_single = Cleanup(single.clone());
    let mailbox = Mailbox::builder(&single)
        .capacity(1)
        .single_sender()
        .create()
        .unwrap();
    let mut tx = mailbox.sender().unwrap().when_full(WhenFull::Cache);
    tx.send(b"fills it").unwrap();
    assert!(matches!(tx.send(b"no cache"), Err(Error::Unsupported(_))));

    let none = unique_name("cache-none");
    let _cleanup_none = Cleanup(none.clone());
    let mailbox = Mailbox::builder(&none)
        .capacity(1)
        .cache_slots(0)
        .create()
        .unwrap();
    let mut tx = mailbox.sender().unwrap().when_full(WhenFull::Cache);
    tx.send(b"fills it").unwrap();
    assert!(matches!(tx.send(b"no cache"), Err(Error::Unsupported(_))));
    assert!(matches!(
        Mailbox::builder(&unique_name("cache-huge"))
            .cache_slots(1 << 20)
            .create(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn every_entry_taken_is_full() {
    let name = unique_name("cache-entries");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity(1)
        .cache_slots(2)
        .create()
        .unwrap();
    let mut senders: Vec<_> = (0..3)
        .map(|_| mailbox.sender().unwrap().when_full(WhenFull::Cache))
        .collect();
    senders[0].send(b"queued").unwrap();
    senders[0].send(b"cached 0").unwrap();
    senders[1].send(b"cached 1").unwrap();
    assert!(matches!(
        senders[2].send(b"no entry left"),
        Err(Error::Full)
    ));
    let mut rx = mailbox.receiver().unwrap();
    let got: Vec<Vec<u8>> = (0..3).map(|_| rx.recv().unwrap().data).collect();
    assert_eq!(got[0], b"queued");
    // Received entries are free again.
    senders[2].send(b"now there is one").unwrap();
}

/// Offset of the cache area's header in the mailbox's file, found by its magic.
fn cache_offset(name: &str) -> (std::path::PathBuf, usize) {
    let path = std::path::PathBuf::from(format!("/dev/shm/ipckit.mailbox.{name}"));
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"ipckitMC")
        .expect("the cache area's magic");
    (path, at)
}

fn scribble(path: &std::path::Path, at: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at as u64).unwrap();
}

#[test]
fn a_scribbled_cache_is_corrupt_or_dropped_never_a_crash() {
    let name = unique_name("cache-hostile");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(2).create().unwrap();
    let (path, at) = cache_offset(&name);
    // An entry claiming to be pending with a 4 GiB message, and the flag that says so.
    let word: u64 = (1 << 40) | (2 << 32);
    scribble(&path, at + 64, &word.to_le_bytes());
    scribble(&path, at + 64 + 40, &u32::MAX.to_le_bytes());
    scribble(&path, at + 24, &1u32.to_le_bytes());
    let mut rx = mailbox.receiver().unwrap();
    assert!(
        matches!(rx.try_recv(), Err(Error::Empty)),
        "the entry is dropped"
    );
    let mut tx = mailbox.sender().unwrap();
    tx.send(b"still works").unwrap();
    assert_eq!(rx.recv().unwrap().data, b"still works");
    // A header claiming more entries than the file holds: opening says Corrupt.
    scribble(&path, at + 12, &1000u32.to_le_bytes());
    assert!(matches!(Mailbox::open(&name), Err(Error::Corrupt { .. })));
}

#[test]
fn a_message_left_moving_by_a_dead_mover_is_delivered() {
    let name = unique_name("cache-dead-mover");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(2).create().unwrap();
    let (path, at) = cache_offset(&name);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    // Entry 0, as a mover killed before it claimed a ring slot leaves it: MOVING(dead pid),
    // no ring position; the message's bytes and its sender's sequence number are there.
    let entry = at + 64;
    let word: u64 = (1 << 40) | (3 << 32) | dead as u64;
    scribble(&path, entry, &word.to_le_bytes());
    scribble(&path, entry + 16, &7u64.to_le_bytes()); // sequence
    scribble(&path, entry + 24, &u64::MAX.to_le_bytes()); // ring_pos: none
    scribble(&path, entry + 32, &dead.to_le_bytes()); // owner pid
    scribble(&path, entry + 40, &5u32.to_le_bytes()); // len
    scribble(&path, entry + 64, b"hello");
    scribble(&path, at + 24, &1u32.to_le_bytes()); // the pending flag
    let mut rx = mailbox.receiver().unwrap();
    let msg = rx.try_recv().unwrap();
    assert_eq!(msg.data, b"hello");
    assert_eq!(msg.meta.sequence, Some(7));
    assert_eq!(msg.meta.sender_pid, Some(dead));
    assert!(matches!(rx.try_recv(), Err(Error::Empty)), "once");
}
