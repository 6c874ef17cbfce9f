//! The single publisher's publish under loom (issue 14): the real `complete_sole` (stamp,
//! plain `write_pos` store, light barrier, wake) against a subscriber that waits through the
//! real `wait_for_asymmetric` with the `Sleep` strategy, so every wait announces itself, pays
//! the heavy barrier and re-checks before it sleeps (loom has no asymmetric fences: both
//! barriers are `fence(SeqCst)` here). A lost wake-up leaves the subscriber blocked forever,
//! which loom reports. The message and its `lost` total ride in Relaxed atomics, so a
//! missing Release/Acquire pairing shows as a stale value. The topic's segment is not heap
//! memory, so the model lays out the same words on the heap and runs the same functions.

use loom::sync::Arc;
use loom::thread;

use super::publisher::{complete_locked, complete_sole};
use crate::error::Error;
use crate::link::Deadline;
use crate::shm::seqlock;
use crate::shm::wait::{wait_for, wait_for_asymmetric, WaitStrategy, WaitWord};
use crate::sync::primitive::{AtomicU32, AtomicU64, Ordering};

/// The words of a two-slot topic that the publish and the receive touch.
struct Words {
    stamps: [AtomicU64; 2],
    data: [AtomicU64; 2],
    slot_lost: [AtomicU64; 2],
    write_pos: AtomicU64,
    lost: AtomicU64,
    new_message: WaitWord,
}

impl Words {
    fn new() -> Words {
        let pair = || [AtomicU64::new(0), AtomicU64::new(0)];
        Words {
            stamps: pair(),
            data: pair(),
            slot_lost: pair(),
            write_pos: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            new_message: WaitWord::new(),
        }
    }
}

/// Two messages, a gap of 5 declared between them; the subscriber first joins as a new one
/// would (the header's `lost`, then `write_pos`), then receives both, sleeping when the next
/// is not there yet.
#[test]
fn a_single_publishers_plain_store_wakes_its_sleeping_subscriber_and_carries_its_gaps() {
    loom::model(|| {
        let words = Arc::new(Words::new());
        let publisher = {
            let words = words.clone();
            thread::spawn(move || {
                for (seq, value) in [(0u64, 61u64), (1, 62)] {
                    let i = seq as usize;
                    if seq == 1 {
                        // `publish_gap(5)`: the token's holder alone writes the total.
                        words.lost.store(5, Ordering::Release);
                    }
                    seqlock::begin_write(&words.stamps[i], seq);
                    words.data[i].store(value, Ordering::Relaxed);
                    words.slot_lost[i].store(if seq == 1 { 5 } else { 0 }, Ordering::Relaxed);
                    complete_sole(
                        &words.stamps[i],
                        &words.write_pos,
                        &words.new_message,
                        seq,
                        false,
                    );
                }
            })
        };
        // A subscriber joining now: a gap it counts as before its time was declared after
        // the message before it, so `write_pos` already shows that message.
        let lost_then = words.lost.load(Ordering::Acquire);
        let write_pos = words.write_pos.load(Ordering::Acquire);
        if lost_then == 5 {
            assert!(write_pos >= 1, "a gap seen before the message it follows");
        }
        for (seq, value, lost) in [(0u64, 61u64, 0u64), (1, 62, 5)] {
            let i = seq as usize;
            let got = wait_for_asymmetric(
                WaitStrategy::Sleep,
                &words.new_message,
                Deadline::Never,
                Error::Timeout,
                |_| {
                    if seqlock::read_begin(&words.stamps[i]) != seqlock::complete(seq) {
                        return Ok(Err(false));
                    }
                    let got = (
                        words.data[i].load(Ordering::Relaxed),
                        words.slot_lost[i].load(Ordering::Relaxed),
                    );
                    // Two slots, two messages: nothing rewrites a slot under the reader.
                    assert!(seqlock::read_validate(&words.stamps[i], seq));
                    Ok(Ok(got))
                },
            )
            .unwrap();
            assert_eq!(got, (value, lost));
        }
        publisher.join().unwrap();
    });
}

/// The publish lock's fast publish (issue 14's second pass): two publishers, each taking the
/// lock by one compare-and-swap, reading `write_pos` (the sequence number and, from it, the
/// slot), writing the slot under the stamp and completing through the real
/// `complete_locked`; a subscriber receives both messages through the real `wait_for` with
/// the `Sleep` strategy. Every message must arrive once, whole, with its own bytes, whichever
/// publisher got which sequence number, and no wake-up may be lost.
#[test]
fn publishers_taking_turns_through_the_lock_deliver_each_message_once_and_wake_the_subscriber() {
    loom::model(|| {
        let words = Arc::new(Words::new());
        let lock = Arc::new(AtomicU32::new(0));
        let publishers: Vec<_> = [(1u32, 61u64), (2, 62)]
            .into_iter()
            .map(|(pid, value)| {
                let (words, lock) = (words.clone(), lock.clone());
                thread::spawn(move || {
                    while lock
                        .compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                    {
                        thread::yield_now();
                    }
                    let seq = words.write_pos.load(Ordering::Acquire);
                    let i = seq as usize;
                    seqlock::begin_write(&words.stamps[i], seq);
                    words.data[i].store(value, Ordering::Relaxed);
                    words.slot_lost[i].store(words.lost.load(Ordering::Relaxed), Ordering::Relaxed);
                    complete_locked(
                        &words.stamps[i],
                        &words.write_pos,
                        &lock,
                        &words.new_message,
                        seq,
                    );
                })
            })
            .collect();
        let mut got = Vec::new();
        for seq in [0u64, 1] {
            let i = seq as usize;
            got.push(
                wait_for(
                    WaitStrategy::Sleep,
                    &words.new_message,
                    Deadline::Never,
                    Error::Timeout,
                    |_| {
                        if seqlock::read_begin(&words.stamps[i]) != seqlock::complete(seq) {
                            return Ok(Err(false));
                        }
                        let value = words.data[i].load(Ordering::Relaxed);
                        // Two slots, two messages: nothing rewrites a slot under the reader.
                        assert!(seqlock::read_validate(&words.stamps[i], seq));
                        Ok(Ok(value))
                    },
                )
                .unwrap(),
            );
        }
        got.sort_unstable();
        assert_eq!(got, [61, 62], "each message once, with its own bytes");
        for publisher in publishers {
            publisher.join().unwrap();
        }
        assert_eq!(words.write_pos.load(Ordering::Relaxed), 2);
    });
}
