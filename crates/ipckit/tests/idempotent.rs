//! Idempotent senders across real processes: a sender SIGKILLed at random points, again and
//! again, each restart resuming from `next()` and sending again, delivers every number exactly
//! once and in order; a scribbled source table gives a safe outcome, never a torn message or
//! a panic. (Issue 16: the bridge's exactly-once delivery rests on this.)

mod common;

use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::process::Child;
use std::time::Duration;

use common::{
    role, seed, spawn_role, unique_name, wait_for_line, wait_with_watchdog, with_watchdog, XorShift,
};
use ipckit::shm::mailbox::{Delivery, IdempotentSender, Mailbox, MailboxBuilder};
use ipckit::shm::WaitStrategy;
use ipckit::{Error, MessageReceiver};

const WATCHDOG: Duration = Duration::from_secs(240);

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.0);
    }
}

/// Source `k`'s id.
fn source(k: u8) -> [u8; 16] {
    let mut id = *b"idempotent-test-";
    id[15] = b'0' + k;
    id
}

/// Message `seq` of source `k`: the source, the number, and a body derived from both, so
/// that a torn or stale message shows.
fn message(k: u8, seq: u64) -> Vec<u8> {
    let mut msg = vec![k];
    msg.extend_from_slice(&seq.to_le_bytes());
    msg.extend((0..40 + seq % 50).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)));
    msg
}

fn check(msg: &[u8]) -> (u8, u64) {
    assert!(msg.len() >= 9, "a torn message: {msg:?}");
    let k = msg[0];
    let seq = u64::from_le_bytes(msg[1..9].try_into().unwrap());
    assert_eq!(msg, message(k, seq).as_slice(), "a torn message");
    (k, seq)
}

/// The child: resumes source `k` from `next()` and sends up to `total`, then says so.
fn sender_role(arg: &str) {
    let mut parts = arg.split(' ');
    let name = parts.next().unwrap();
    let k: u8 = parts.next().unwrap().parse().unwrap();
    let total: u64 = parts.next().unwrap().parse().unwrap();
    let mailbox = Mailbox::open(name).unwrap();
    println!("@@ready");
    // The killed predecessor is dead (waited for), so its entry and token are free.
    let mut tx = mailbox.idempotent_sender(source(k)).unwrap();
    println!("@@from {}", tx.next());
    println!("@@claimed");
    for seq in tx.next()..total {
        assert_eq!(tx.send(seq, &message(k, seq)).unwrap(), Delivery::Sent);
    }
    println!("@@done");
}

/// The largest index of a chained ring of mailbox `name` in `/dev/shm` now (0: none).
fn newest_chained_ring(name: &str) -> u32 {
    let suffix = format!(".{name}");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|entry| {
            let file = entry.ok()?.file_name().into_string().ok()?;
            let rest = file.strip_prefix("ipckit.mailbox-chain.")?;
            rest.strip_suffix(&suffix)?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

fn run(
    test: &str,
    configure: fn(MailboxBuilder) -> MailboxBuilder,
    sources: u8,
    total: u64,
    kills: u32,
) {
    run_on(test, configure, sources, total, kills, false)
}

/// [`run`]; `chained`: the mailbox is unbounded, with rings small enough that the chain grows
/// and seals all through the run (the receiver pauses now and then to let it), which is
/// checked.
fn run_on(
    test: &str,
    configure: fn(MailboxBuilder) -> MailboxBuilder,
    sources: u8,
    total: u64,
    kills: u32,
    chained: bool,
) {
    let name = unique_name("once");
    let _cleanup = Cleanup(name.clone());
    let mailbox = configure(Mailbox::builder(&name))
        .max_message_size(128)
        .wait_strategy(WaitStrategy::Sleep)
        .create()
        .unwrap();
    let receiver = {
        let mailbox = mailbox.clone();
        std::thread::spawn(move || {
            let mut rx = mailbox.receiver().unwrap();
            let mut next = vec![0u64; sources as usize];
            let mut received = 0;
            while next.iter().any(|&n| n < total) {
                let msg = rx
                    .recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|e| panic!("receiver: {e} after {received} ({next:?})"));
                let (k, seq) = check(&msg.data);
                assert_eq!(
                    seq, next[k as usize],
                    "source {k}: got {seq}, expected {} (a repeat or a gap)",
                    next[k as usize]
                );
                next[k as usize] += 1;
                received += 1;
                if chained && received % 2000 == 0 {
                    // The senders fill the small rings meanwhile: new ones are chained.
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
            // Nothing more: no repeat after the last.
            assert!(matches!(rx.try_recv(), Err(Error::Empty)));
            received
        })
    };
    let mut rng = XorShift(seed());
    let spawn = |k: u8| spawn_role(test, "sender", &format!("{name} {k} {total}"));
    let mut killed_mid_stream = 0;
    let mut newest_ring = 0;
    for round in 0..kills {
        let mut children: Vec<(Child, BufReader<_>)> = (0..sources)
            .map(|k| {
                let mut child = spawn(k);
                let out = BufReader::new(child.stdout.take().unwrap());
                (child, out)
            })
            .collect();
        // Half the rounds kill while the sender starts (claiming its source, settling what
        // its predecessor left), half once it sends.
        let stage = if round % 2 == 0 { "ready" } else { "claimed" };
        for (_, out) in &mut children {
            wait_for_line(out, stage);
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 8000));
        newest_ring = newest_ring.max(newest_chained_ring(&name));
        for (child, out) in &mut children {
            child.kill().unwrap();
            child.wait().unwrap();
            let mut rest = String::new();
            out.read_to_string(&mut rest).unwrap();
            // Killed while sending: it had resumed, and had not finished.
            if (stage == "claimed" || rest.contains("@@from")) && !rest.contains("@@done") {
                killed_mid_stream += 1;
            }
        }
    }
    // The last lives: each finishes its source.
    for k in 0..sources {
        let mut child = spawn(k);
        let status = wait_with_watchdog(&mut child, WATCHDOG);
        assert!(status.success(), "the last sender of source {k} failed");
    }
    let received = receiver
        .join()
        .expect("the receiver found a repeat, a gap or a tear");
    assert_eq!(received, total * sources as u64);
    assert!(mailbox.info().held_slots.is_empty());
    eprintln!("{test}: {kills} rounds, {killed_mid_stream} senders killed mid-stream, {received} messages each once, newest chained ring seen {newest_ring}");
    if chained {
        assert!(
            newest_ring >= kills / 2,
            "the chain hardly grew (newest ring {newest_ring}): the test did not test it"
        );
        assert_eq!(
            mailbox.info().unfinished_rings,
            0,
            "a killed sender left a ring unfinished"
        );
    }
    assert!(
        killed_mid_stream > kills * sources as u32 / 4,
        "too few kills landed mid-stream"
    );
}

/// The source's sender, waiting out a lock that only looks held: a child another test thread
/// is spawning shares this process's descriptions between its fork and its exec (see
/// `shm/liveness.rs`), so a lock given back a moment ago may still be held by that copy.
fn idempotent_sender(mailbox: &Mailbox, id: [u8; 16]) -> IdempotentSender {
    let start = std::time::Instant::now();
    loop {
        match mailbox.idempotent_sender(id) {
            Err(Error::AlreadyExists { .. }) if start.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other.unwrap(),
        }
    }
}

fn kills() -> u32 {
    std::env::var("IPCKIT_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn many_senders_mailbox_killed_senders_deliver_each_number_once_in_order() {
    const TEST: &str = "many_senders_mailbox_killed_senders_deliver_each_number_once_in_order";
    if let Some((_, arg)) = role() {
        return sender_role(&arg);
    }
    run(TEST, |b| b.capacity(8), 2, 100_000, kills());
}

#[test]
fn single_sender_mailbox_killed_senders_deliver_each_number_once_in_order() {
    const TEST: &str = "single_sender_mailbox_killed_senders_deliver_each_number_once_in_order";
    if let Some((_, arg)) = role() {
        return sender_role(&arg);
    }
    run(TEST, |b| b.capacity(8).single_sender(), 1, 200_000, kills());
}

#[test]
fn cursor_mailbox_killed_senders_deliver_each_number_once_in_order() {
    const TEST: &str = "cursor_mailbox_killed_senders_deliver_each_number_once_in_order";
    if let Some((_, arg)) = role() {
        return sender_role(&arg);
    }
    run(
        TEST,
        |b| b.capacity(8).single_sender().single_receiver(),
        1,
        300_000,
        kills(),
    );
}

#[test]
fn unbounded_mailbox_killed_senders_deliver_each_number_once_in_order() {
    const TEST: &str = "unbounded_mailbox_killed_senders_deliver_each_number_once_in_order";
    if let Some((_, arg)) = role() {
        return sender_role(&arg);
    }
    // Rings of 4 slots: positions restart in every ring, so a send in flight is named by its
    // ring too, and a dead write is reclaimed in whichever ring of the chain it is.
    run_on(
        TEST,
        |b| {
            b.capacity_kind(ipckit::Capacity::Unbounded)
                .unbounded_ring_capacity(4)
        },
        2,
        100_000,
        kills(),
        true,
    );
}

#[test]
fn a_source_has_one_live_owner_and_bad_requests_are_precise_errors() {
    let name = unique_name("once-owner");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(4).create().unwrap();
    let tx = idempotent_sender(&mailbox, source(1));
    assert!(tx.is_fresh());
    assert!(matches!(
        mailbox.idempotent_sender(source(1)),
        Err(Error::AlreadyExists { .. })
    ));
    drop(tx);
    let tx = idempotent_sender(&mailbox, source(1));
    assert!(!tx.is_fresh(), "the entry outlives its owner");
    assert!(matches!(
        mailbox.idempotent_sender([0; 16]),
        Err(Error::InvalidArgument(_))
    ));
    // Eight live owners fill the table; a ninth source is refused, not evicting a live one.
    let mut owners: Vec<_> = (2..9)
        .map(|k| idempotent_sender(&mailbox, source(k)))
        .collect();
    assert!(matches!(
        mailbox.idempotent_sender(source(9)),
        Err(Error::LimitReached { .. })
    ));
    // Gone owners' entries: the least recently used one is evicted, its history forgotten.
    let mut first = owners.remove(0);
    first.start_at(100);
    drop(tx);
    drop(first);
    let mut evicting = idempotent_sender(&mailbox, source(9));
    assert!(evicting.is_fresh());
    assert_eq!(evicting.next(), 0);
    evicting.start_at(7);
    assert_eq!(evicting.next(), 7);
    evicting.start_at(3);
    assert_eq!(evicting.next(), 7, "start_at never moves back");
    assert!(matches!(
        evicting.send(u64::MAX, b"x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        evicting.send(7, &[0; 5000]),
        Err(Error::MessageTooLarge { .. })
    ));
    drop(evicting);
    // source(1) was the least recently used (let go before source(2)): evicted.
    let again = idempotent_sender(&mailbox, source(2));
    assert_eq!(again.next(), 100, "source 2 kept its history");
    drop(again);
    drop(owners);
    let other = unique_name("once-kind");
    let _cleanup = Cleanup(other.clone());
    let mailbox = Mailbox::builder(&other)
        .capacity_kind(ipckit::Capacity::Rendezvous)
        .create()
        .unwrap();
    assert!(matches!(
        mailbox.idempotent_sender(source(1)),
        Err(Error::Unsupported(_))
    ));
}

/// The source table's place in the file: after the segment header (64 bytes), the ring
/// header's preamble and fields (384), and 128 participant entries (16 bytes each).
const SOURCES: u64 = 64 + 384 + 128 * 16;
const COMMITTED: u64 = 24;
const PENDING_POS: u64 = 32;
const PENDING_SEQ: u64 = 40;

fn scribble(name: &str, entry: u64, field: u64, value: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/ipckit.mailbox.{name}"))
        .unwrap();
    file.write_all_at(&value.to_ne_bytes(), SOURCES + 64 * entry + field)
        .unwrap();
}

#[test]
fn a_scribbled_source_table_gives_a_safe_outcome_never_a_torn_message() {
    for single in [false, true] {
        let name = unique_name("once-hostile");
        let _cleanup = Cleanup(name.clone());
        let mut builder = Mailbox::builder(&name).capacity(4).max_message_size(128);
        if single {
            builder = builder.single_sender();
        }
        let mailbox = builder.create().unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let mut tx = idempotent_sender(&mailbox, source(0));
        for seq in 0..3 {
            tx.send(seq, &message(0, seq)).unwrap();
        }
        drop(tx);
        let scribbles = [
            (PENDING_POS, u64::MAX),
            (PENDING_POS, 2),
            (PENDING_SEQ, u64::MAX),
            (COMMITTED, u64::MAX),
            (PENDING_POS, 1 << 40),
            (COMMITTED, 1),
        ];
        for (field, value) in scribbles {
            scribble(&name, 0, field, value);
            let mut tx = idempotent_sender(&mailbox, source(0));
            let next = tx.next();
            if next < u64::MAX - 1 {
                let _ = tx.try_send(next, &message(0, next));
            }
            while let Ok(msg) = rx.try_recv() {
                check(&msg.data);
            }
        }
        while let Ok(msg) = rx.try_recv() {
            check(&msg.data);
        }
    }
}

#[test]
fn one_sender_carries_several_sources_even_into_a_single_sender_mailbox() {
    let name = unique_name("once-multi");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name)
        .capacity(8)
        .single_sender()
        .create()
        .unwrap();
    let mut tx = mailbox.sender().unwrap();
    let mut rx = mailbox.receiver().unwrap();
    let mut first = mailbox.idempotent_source(source(1)).unwrap();
    let second = mailbox.idempotent_source(source(2)).unwrap();
    first.start_at(10);
    let deadline = ipckit::Deadline::Never;
    let sends = [
        (&first, 10, Delivery::Sent),
        (&second, 0, Delivery::Sent),
        (&first, 11, Delivery::Sent),
        (&second, 1, Delivery::Sent),
        (&first, 10, Delivery::AlreadyDelivered),
    ];
    for (src, seq, expected) in sends {
        let k = src.source()[15] - b'0';
        let sent = tx
            .send_idempotent(src, seq, &message(k, seq), deadline)
            .unwrap();
        assert_eq!(sent, expected, "source {k}, {seq}");
    }
    let got: Vec<(u8, u64)> = (0..4).map(|_| check(&rx.recv().unwrap().data)).collect();
    assert_eq!(got, [(1, 10), (2, 0), (1, 11), (2, 1)]);
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    // A source of another mailbox is refused, not sent with this one's record.
    let other = unique_name("once-other");
    let _other_cleanup = Cleanup(other.clone());
    let other = Mailbox::builder(&other).capacity(2).create().unwrap();
    let foreign = other.idempotent_source(source(3)).unwrap();
    assert!(matches!(
        tx.send_idempotent(&foreign, 0, b"x", deadline),
        Err(Error::InvalidArgument(_))
    ));
}

/// The source the owners of `info_shows_each_source_its_owner_and_what_it_delivered` take.
const INFO_SOURCE: [u8; 16] = *b"info-test-source";

/// The child: takes [`INFO_SOURCE`] in mailbox `name`, sends from `next()` up to `total`,
/// says so, then lets go and exits (`exit`) or waits to be killed (`stay`; it gives up after
/// a minute, so that a parent that died first leaves no process behind).
fn owner_role(arg: &str) {
    let mut parts = arg.split(' ');
    let name = parts.next().unwrap();
    let total: u64 = parts.next().unwrap().parse().unwrap();
    let stay = parts.next() == Some("stay");
    let mailbox = Mailbox::open(name).unwrap();
    let mut tx = idempotent_sender(&mailbox, INFO_SOURCE);
    for seq in tx.next()..total {
        assert_eq!(tx.send(seq, &message(9, seq)).unwrap(), Delivery::Sent);
    }
    println!("@@sent");
    if stay {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// `Mailbox::info().sources` seen from another process: the source's id, its owner (alive
/// while it runs, dead once SIGKILLed, none once a later owner lets go) and how many of its
/// messages were delivered, which is what the mailbox holds. On an unbounded mailbox too,
/// whose sends go to chained rings while the table is the root's.
#[test]
fn info_shows_each_source_its_owner_and_what_it_delivered() {
    const TEST: &str = "info_shows_each_source_its_owner_and_what_it_delivered";
    if let Some((_, arg)) = role() {
        return owner_role(&arg);
    }
    with_watchdog(Duration::from_secs(120), || {
        for unbounded in [false, true] {
            let name = unique_name("once-info");
            let _cleanup = Cleanup(name.clone());
            let mut builder = Mailbox::builder(&name).capacity(8).max_message_size(128);
            if unbounded {
                builder = builder
                    .capacity_kind(ipckit::Capacity::Unbounded)
                    .unbounded_ring_capacity(2);
            }
            let mailbox = builder.create().unwrap();
            assert!(mailbox.info().sources.is_empty());

            let mut child = spawn_role(TEST, "owner", &format!("{name} 5 stay"));
            let pid = child.id();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            wait_for_line(&mut out, "sent");
            let sources = mailbox.info().sources;
            assert_eq!(sources.len(), 1, "{sources:?}");
            let info = &sources[0];
            assert_eq!(info.id, INFO_SOURCE);
            assert_eq!(info.id_hex(), "696e666f2d746573742d736f75726365");
            assert_eq!((info.owner, info.owner_alive), (Some(pid), true));
            assert_eq!((info.delivered, info.in_flight), (5, None));
            assert!(info.consistent && info.last_used.is_some());

            child.kill().unwrap();
            child.wait().unwrap();
            let info = mailbox.info().sources.remove(0);
            assert_eq!(
                (info.owner, info.owner_alive),
                (Some(pid), false),
                "killed: its pid stays, its lock is gone"
            );
            assert_eq!(
                (info.id, info.delivered, info.in_flight),
                (INFO_SOURCE, 5, None)
            );

            // The next life resumes at 5, sends up to 8 and lets go.
            let mut child = spawn_role(TEST, "owner", &format!("{name} 8 exit"));
            assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
            let sources = mailbox.info().sources;
            assert_eq!(sources.len(), 1, "the same entry: {sources:?}");
            let info = &sources[0];
            assert_eq!((info.owner, info.owner_alive), (None, false), "let go");
            assert_eq!(
                (info.id, info.delivered, info.in_flight),
                (INFO_SOURCE, 8, None)
            );
            let mut rx = mailbox.receiver().unwrap();
            let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
                .map(|msg| check(&msg.data).1)
                .collect();
            assert_eq!(got, (0..8).collect::<Vec<_>>(), "delivered is what arrived");
        }
    });
}
