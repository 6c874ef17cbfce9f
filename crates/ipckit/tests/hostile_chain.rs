//! Issue 12 item 3: an unbounded mailbox survives senders SIGKILLed at any moment, including
//! between creating the next chained ring and publishing its magic. Senders are this binary
//! re-run in a role; the test kills them and receives everything they confirmed.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    check_message, make_message, role, seed, spawn_role, unique_name, with_watchdog, XorShift,
};
use ipckit::link::Capacity;
use ipckit::shm::Mailbox;
use ipckit::{namespace, Error, MessageReceiver, MessageSender};

const TEST: &str = "issue12_sigkilled_senders_of_an_unbounded_mailbox_lose_nothing";

/// Messages per chained ring: small, so a good share of a sender's time is spent creating
/// rings, where a kill used to leave one unfinished.
const RING: usize = 2;

/// Receivers draining the chain together (threads of this process).
const RECEIVERS: usize = 2;

fn create(name: &str) -> Mailbox {
    Mailbox::builder(name)
        .capacity_kind(Capacity::Unbounded)
        .unbounded_ring_capacity(RING)
        .max_message_size(256)
        .create()
        .unwrap()
}

/// The sender role: sends messages of run `id` until killed, printing each one `send`
/// confirmed.
fn sender(arg: &str) {
    let (name, id) = arg.split_once(' ').unwrap();
    let id: u32 = id.parse().unwrap();
    let mut tx = Mailbox::open(name).unwrap().sender().unwrap();
    for seq in 0.. {
        tx.send(&make_message(id, seq)).unwrap();
        println!("@@{id} {seq}");
        // A breather now and then, so the receivers keep up and the chain stays short.
        if seq % 8 == 7 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// Removes the mailbox and its chained rings, also when a test fails.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.0);
    }
}

/// A sender process and the lines it printed, read as they come (a full pipe would stall it).
struct Peer {
    child: Child,
    reader: std::thread::JoinHandle<Vec<(u32, u32)>>,
}

fn spawn_sender(name: &str, id: u32) -> Peer {
    let mut child = spawn_role(TEST, "sender", &format!("{name} {id}"));
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(|l| l.ok())
            .filter_map(|l| {
                let (id, seq) = l.strip_prefix("@@")?.split_once(' ')?;
                Some((id.parse().ok()?, seq.parse().ok()?))
            })
            .collect()
    });
    Peer { child, reader }
}

/// The chained-ring files of mailbox `name` that have no magic and whose creator is dead (its
/// creation lock is free).
fn unfinished_files(name: &str) -> usize {
    let suffix = format!(".{name}");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with("ipckit.mailbox-chain.") && file.ends_with(&suffix)
        })
        .filter(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            let unfinished = bytes.len() < 72 || bytes[..8] == [0; 8] || bytes[64..72] == [0; 8];
            unfinished && std::fs::File::open(e.path()).is_ok_and(|f| !creation_locked(&f))
        })
        .count()
}

fn chain_files(name: &str) -> Vec<String> {
    let suffix = format!(".{name}");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("ipckit.mailbox-chain.") && f.ends_with(&suffix))
        .collect()
}

/// `kills` SIGKILLs of two senders at random moments while this process receives; then
/// every confirmed message must have been received exactly once, none torn, and the mailbox
/// must still carry a message. Returns how many kills left a ring unfinished.
fn kill_run(kills: u32) -> usize {
    let name = unique_name("chainkill");
    let mailbox = create(&name);
    let _cleanup = Cleanup(name.clone());
    let mut rng = XorShift(seed());
    let received: Arc<Mutex<HashMap<(u32, u32), u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = (0..RECEIVERS)
        .map(|_| {
            let (mailbox, received, stop) = (mailbox.clone(), received.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rx = mailbox.receiver().unwrap();
                loop {
                    match rx.recv_timeout(Duration::from_millis(1500)) {
                        Ok(msg) => {
                            let key = check_message(&msg.data);
                            *received.lock().unwrap().entry(key).or_insert(0) += 1;
                        }
                        Err(Error::Timeout) if stop.load(Ordering::SeqCst) => return,
                        Err(Error::Timeout) => {}
                        Err(e) => panic!("receive failed: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut confirmed = Vec::new();
    let mut next_id = 0;
    let mut peers: Vec<Peer> = (0..2)
        .map(|_| {
            next_id += 1;
            spawn_sender(&name, next_id)
        })
        .collect();
    let mut left_unfinished = 0;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_micros(2_000 + rng.next() % 15_000));
        let victim = (rng.next() % 2) as usize;
        next_id += 1;
        let mut peer = std::mem::replace(&mut peers[victim], spawn_sender(&name, next_id));
        let _ = peer.child.kill();
        let status = peer.child.wait().unwrap();
        assert!(
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
            "a sender ended by itself: {status}"
        );
        confirmed.extend(peer.reader.join().unwrap());
        left_unfinished += usize::from(unfinished_files(&name) > 0);
    }
    for mut peer in peers {
        let _ = peer.child.kill();
        let _ = peer.child.wait();
        confirmed.extend(peer.reader.join().unwrap());
    }
    // Still usable: a new sender's message arrives.
    mailbox.sender().unwrap().send(&make_message(0, 7)).unwrap();
    confirmed.push((0, 7));
    stop.store(true, Ordering::SeqCst);
    for receiver in receivers {
        receiver.join().unwrap();
    }
    // What the receivers left (a turn spent on a dead sender's slot can outlast their
    // timeout): drained here, under a longer one.
    let mut late = 0;
    let mut rx = mailbox.receiver().unwrap();
    while let Ok(msg) = rx.recv_timeout(Duration::from_secs(5)) {
        *received
            .lock()
            .unwrap()
            .entry(check_message(&msg.data))
            .or_insert(0) += 1;
        late += 1;
    }
    let received = received.lock().unwrap();
    let lost: Vec<_> = confirmed
        .iter()
        .filter(|k| !received.contains_key(k))
        .collect();
    if !lost.is_empty() {
        eprintln!("lost {} confirmed message(s): {lost:?}", lost.len());
    }
    for key in &confirmed {
        if received.get(key).is_none() {
            let mut of_run: Vec<u32> = received
                .keys()
                .filter(|(id, _)| *id == key.0)
                .map(|(_, seq)| *seq)
                .collect();
            of_run.sort();
            let confirmed_of_run = confirmed.iter().filter(|(id, _)| *id == key.0).count();
            eprintln!(
                "lost {key:?}: run {} had {confirmed_of_run} confirmed; received {:?}",
                key.0, of_run
            );
        }
        assert_eq!(
            received.get(key).copied().unwrap_or(0),
            1,
            "confirmed message {key:?} received {} times",
            received.get(key).copied().unwrap_or(0)
        );
    }
    if let Some((key, n)) = received.iter().find(|(_, &n)| n != 1) {
        panic!("message {key:?} received {n} times");
    }
    eprintln!(
        "{kills} kills: {} confirmed messages, {} received ({late} in the final drain), each \
         confirmed one exactly once; {left_unfinished} kill(s) left a chained ring unfinished by a dead creator",
        confirmed.len(),
        received.len()
    );
    Mailbox::remove(&name).unwrap();
    assert!(chain_files(&name).is_empty(), "{:?}", chain_files(&name));
    left_unfinished
}

#[test]
fn issue12_sigkilled_senders_of_an_unbounded_mailbox_lose_nothing() {
    if let Some((role, arg)) = role() {
        assert_eq!(role, "sender");
        sender(&arg);
        return;
    }
    with_watchdog(Duration::from_secs(120), || kill_run(40));
}

/// Soak: `IPCKIT_SOAK=N` kills (default 300).
#[test]
#[ignore]
fn issue12_soak_sigkilled_chain_senders() {
    let kills = std::env::var("IPCKIT_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    with_watchdog(Duration::from_secs(60 + u64::from(kills)), move || {
        kill_run(kills)
    });
}

/// Plants `/dev/shm/ipckit.mailbox-chain.INDEX.NAME` as a creator killed early would leave
/// it: empty (`magic: false`, `len: 0`), or sized with the segment's magic but not the ring's.
fn plant(name: &str, index: u32, segment_magic: bool) -> std::fs::File {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/dev/shm/ipckit.mailbox-chain.{index}.{name}");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    if segment_magic {
        let mut page = vec![0u8; 4096];
        page[..8].copy_from_slice(b"ipckitSG");
        file.write_all(&page).unwrap();
    }
    file
}

fn planted(name: &str, index: u32) -> bool {
    std::path::Path::new(&format!("/dev/shm/ipckit.mailbox-chain.{index}.{name}")).exists()
}

/// The byte of the OFD lock a live creator holds on a chained ring until its magic is
/// published (private to ipckit: `shm::liveness`, the creation table).
fn creation_byte() -> libc::flock {
    // SAFETY: plain data, zero is valid.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = (1i64 << 60) + 4 * (1i64 << 32);
    lock.l_len = 1;
    lock
}

/// Takes the creation lock, as a live creator would.
fn hold_creation_lock(file: &std::fs::File) {
    let mut lock = creation_byte();
    // SAFETY: a valid descriptor and flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    assert_eq!(rc, 0, "F_OFD_SETLK: {}", std::io::Error::last_os_error());
}

/// Whether a live creator holds the creation lock of the ring open on `file`.
fn creation_locked(file: &std::fs::File) -> bool {
    let mut lock = creation_byte();
    // SAFETY: a valid descriptor and flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short
}

#[test]
fn issue12_a_chained_ring_left_unfinished_by_a_dead_creator_is_replaced() {
    with_watchdog(Duration::from_secs(60), || {
        let name = unique_name("chainplant");
        let mailbox = create(&name);
        let _cleanup = Cleanup(name.clone());
        let mut tx = mailbox.sender().unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let sent = std::cell::Cell::new(0);
        let send = |tx: &mut ipckit::shm::MailboxSender, n: u32| {
            for _ in 0..n {
                tx.send(&make_message(1, sent.get())).unwrap();
                sent.set(sent.get() + 1);
            }
        };
        // Ring 0 full; ring 1 is an empty file, as a creator killed before sizing it leaves.
        send(&mut tx, RING as u32);
        drop(plant(&name, 1, false));
        // Ring 1 full; ring 2 sized, with the segment's magic but not the ring's.
        let start = Instant::now();
        send(&mut tx, RING as u32);
        drop(plant(&name, 2, true));
        send(&mut tx, RING as u32 + 1);
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "replacing the rings took {:?}",
            start.elapsed()
        );
        for seq in 0..sent.get() {
            let msg = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(check_message(&msg.data), (1, seq));
        }

        // Past the tail: found by `info` and removed by `clean`.
        let tail = (0..64).rev().find(|&i| planted(&name, i)).unwrap();
        drop(plant(&name, tail + 1, false));
        assert_eq!(mailbox.info().unfinished_rings, 1);
        let done = namespace::clean(false).unwrap();
        assert!(
            done.iter()
                .any(|a| a.name == name && a.action.contains("unfinished")),
            "clean said {done:?}"
        );
        assert!(!planted(&name, tail + 1), "clean left the unfinished ring");

        // A live creator's ring (its lock held) is left alone, then removed once it is gone.
        let creator = plant(&name, tail + 1, true);
        hold_creation_lock(&creator);
        assert_eq!(mailbox.repair().removed_rings, 0);
        assert!(
            planted(&name, tail + 1),
            "repair removed a live creator's ring"
        );
        drop(creator);
        // A child being spawned by a test running beside this one shares our descriptors
        // (the creator's file among them) from its fork to its exec, and the lock with them:
        // the ring is free once that child has exec'd, a few milliseconds at most.
        let start = Instant::now();
        let mut removed = mailbox.repair().removed_rings;
        while removed == 0 && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
            removed = mailbox.repair().removed_rings;
        }
        assert_eq!(removed, 1);
        assert!(!planted(&name, tail + 1));

        // Still a working mailbox, in order.
        send(&mut tx, 3 * RING as u32);
        for _ in 0..3 * RING {
            let msg = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            check_message(&msg.data);
        }
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
        drop((tx, rx));
        Mailbox::remove(&name).unwrap();
        assert!(chain_files(&name).is_empty(), "{:?}", chain_files(&name));
    });
}
