use std::time::Duration;

use super::*;
use crate::{Deadline, MessageReceiver, MessageSender};

fn name(tag: &str) -> String {
    format!("unit-topic-{tag}-{}", std::process::id())
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Topic::remove(&self.0);
    }
}

#[test]
fn every_subscriber_sees_every_message() {
    let n = name("all");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n).capacity(8).create().unwrap();
    let mut subs: Vec<_> = (0..3).map(|_| topic.subscriber().unwrap()).collect();
    let mut publisher = topic.publisher().unwrap();
    for i in 0..5u8 {
        publisher.send(&[i]).unwrap();
    }
    for sub in &mut subs {
        for i in 0..5u8 {
            let msg = sub.try_recv().unwrap();
            assert_eq!(msg.data, [i]);
            assert_eq!(msg.meta.missed, Some(0));
            assert_eq!(msg.meta.sequence, Some(i as u64));
        }
        assert!(matches!(sub.try_recv(), Err(Error::Empty)));
    }
}

#[test]
fn an_overrun_subscriber_learns_exactly_how_many_it_missed() {
    let n = name("overrun");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n).capacity(4).create().unwrap();
    let mut slow = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    for i in 0..10u8 {
        publisher.try_send(&[i]).unwrap();
    }
    let first = slow.try_recv().unwrap();
    assert_eq!(first.data, [6]);
    assert_eq!(first.meta.missed, Some(6));
    for i in 7..10u8 {
        let msg = slow.try_recv().unwrap();
        assert_eq!((msg.data[0], msg.meta.missed), (i, Some(0)));
    }
}

#[test]
fn backpressure_holds_the_publisher_and_loses_nothing() {
    let n = name("bp");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n)
        .capacity(2)
        .overflow(Overflow::Backpressure)
        .create()
        .unwrap();
    let mut sub = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    publisher.try_send(b"a").unwrap();
    publisher.try_send(b"b").unwrap();
    assert!(matches!(publisher.try_send(b"c"), Err(Error::Full)));
    assert!(matches!(
        publisher.send_timeout(b"c", Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    assert_eq!(sub.try_recv().unwrap().data, b"a");
    publisher.try_send(b"c").unwrap();
    drop(sub);
    // With its only subscriber gone, nothing holds the publisher back.
    for _ in 0..10 {
        publisher.try_send(b"x").unwrap();
    }
}

#[test]
fn history_replays_the_last_messages() {
    let n = name("hist");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n).capacity(4).create().unwrap();
    let mut publisher = topic.publisher().unwrap();
    for i in 0..6u8 {
        publisher.send(&[i]).unwrap();
    }
    let mut late = topic.subscriber_with_history(3).unwrap();
    let got: Vec<u8> = (0..3).map(|_| late.try_recv().unwrap().data[0]).collect();
    assert_eq!(got, [3, 4, 5]);
    assert!(matches!(late.try_recv(), Err(Error::Empty)));
    assert!(matches!(
        topic.subscriber_with_history(5),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn loans_publish_in_place_and_cancel_on_drop() {
    let n = name("loan");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n).capacity(4).create().unwrap();
    let mut sub = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    {
        let mut loan = publisher.loan().unwrap();
        loan[..3].copy_from_slice(b"no!");
    }
    let mut loan = publisher.loan().unwrap();
    loan[..3].copy_from_slice(b"yes");
    loan.publish(3).unwrap();
    let sample = sub.recv_in_place().unwrap();
    assert_eq!(&*sample, b"yes");
    assert_eq!(sample.meta().sequence, Some(0));
    drop(sample);
    assert!(matches!(sub.try_recv(), Err(Error::Empty)));
}

/// Issue 12, item 6: a sample of an overrun topic is never a view of bytes a publisher may
/// be rewriting. With one slot, the next publish overwrites the slot the sample came from;
/// the sample keeps the message it was handed.
#[test]
fn an_overrun_sample_is_stable_while_publishers_overwrite_its_slot() {
    let n = name("stable");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n)
        .capacity(1)
        .overflow(Overflow::Overrun)
        .create()
        .unwrap();
    let mut sub = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    publisher.send(b"first").unwrap();
    let sample = sub.recv_in_place().unwrap();
    publisher.send(b"SECOND").unwrap();
    publisher.send(b"third!").unwrap();
    assert_eq!(&*sample, b"first");
    assert_eq!(sample.meta().sequence, Some(0));
    drop(sample);
    let next = sub.recv().unwrap();
    assert_eq!(next.data, b"third!");
    assert_eq!(next.meta.missed, Some(1));
}

#[test]
fn a_single_publisher_topic_refuses_a_second_publisher_until_the_first_leaves() {
    let n = name("single");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n).single_publisher().create().unwrap();
    let mut first = topic.publisher().unwrap();
    let pid = std::process::id();
    match Topic::open(&n).unwrap().publisher() {
        Err(Error::AlreadyExists { object }) => {
            assert!(object.contains(&format!("pid {pid}")), "{object}")
        }
        other => panic!("a second publisher: {other:?}"),
    }
    let mut sub = topic.subscriber().unwrap();
    first.send(b"one").unwrap();
    drop(first);
    // The token (and the publisher entry) were given back.
    assert_eq!(
        topic.shared.header().sole_publisher.load(Ordering::Acquire),
        0
    );
    let mut second = topic.publisher().unwrap();
    second.send(b"two").unwrap();
    assert_eq!(sub.try_recv().unwrap().data, b"one");
    let msg = sub.try_recv().unwrap();
    assert_eq!(
        (msg.data.as_slice(), msg.meta.sequence),
        (&b"two"[..], Some(1))
    );
}

#[test]
fn a_dead_holders_token_is_taken_over_and_its_sequence_reused() {
    let n = name("single-dead");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n)
        .capacity(4)
        .single_publisher()
        .create()
        .unwrap();
    let mut sub = topic.subscriber().unwrap();
    // A holder that never took a liveness lock and whose pid is nobody's: dead by `/proc`.
    let header = topic.shared.header();
    header.sole_publisher.store(u32::MAX - 1, Ordering::Release);
    // It died writing message 0: the stamp is odd, write_pos has not moved.
    crate::shm::seqlock::begin_write(&topic.shared.slot(0).stamp, 0);
    assert!(matches!(sub.try_recv(), Err(Error::Empty)));
    let mut publisher = topic.publisher().unwrap();
    assert_eq!(
        header.sole_publisher.load(Ordering::Acquire),
        std::process::id()
    );
    publisher.send(b"again").unwrap();
    let msg = sub.try_recv().unwrap();
    assert_eq!(
        (msg.data.as_slice(), msg.meta.sequence),
        (&b"again"[..], Some(0))
    );
}

#[test]
fn a_single_publisher_under_backpressure_waits_for_the_slowest_subscriber() {
    let n = name("single-bp");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n)
        .capacity(1)
        .overflow(Overflow::Backpressure)
        .single_publisher()
        .create()
        .unwrap();
    let mut fast = topic.subscriber().unwrap();
    let mut slow = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    for i in 0..20u8 {
        publisher.try_send(&[i]).unwrap();
        assert!(matches!(publisher.try_send(&[i]), Err(Error::Full)));
        assert_eq!(fast.try_recv().unwrap().data, [i]);
        assert!(matches!(publisher.try_send(&[i]), Err(Error::Full)));
        assert_eq!(slow.try_recv().unwrap().data, [i]);
    }
    // A loan cancelled without publishing: its sequence number is reused.
    drop(publisher.loan().unwrap());
    publisher.send(b"x").unwrap();
    let msg = fast.try_recv().unwrap();
    assert_eq!(
        (msg.data.as_slice(), msg.meta.sequence),
        (&b"x"[..], Some(20))
    );
}

#[test]
fn publishers_scan_only_the_subscriber_entries_ever_taken() {
    let n = name("bound");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n)
        .capacity(2)
        .overflow(Overflow::Backpressure)
        .create()
        .unwrap();
    let bound = |t: &Topic| t.shared.header().subscriber_bound.load(Ordering::Acquire);
    assert_eq!(bound(&topic), 0);
    let subs: Vec<_> = (0..3).map(|_| topic.subscriber().unwrap()).collect();
    assert_eq!(bound(&topic), 3);
    drop(subs);
    let mut again = topic.subscriber().unwrap();
    assert_eq!(bound(&topic), 3, "the bound is never lowered");
    let mut publisher = topic.publisher().unwrap();
    publisher.try_send(b"a").unwrap();
    publisher.try_send(b"b").unwrap();
    assert!(matches!(publisher.try_send(b"c"), Err(Error::Full)));
    assert_eq!(again.try_recv().unwrap().data, b"a");
    publisher.try_send(b"c").unwrap();
}

#[test]
fn a_gap_is_reported_with_the_next_message_and_moves_the_sequence_on() {
    for single in [false, true] {
        let n = name(if single { "gap-single" } else { "gap" });
        let _c = Cleanup(n.clone());
        let mut builder = Topic::builder(&n);
        builder = builder.capacity(8);
        if single {
            builder = builder.single_publisher();
        }
        let topic = builder.create().unwrap();
        let mut sub = topic.subscriber().unwrap();
        let mut publisher = topic.publisher().unwrap();
        publisher.send(b"a").unwrap();
        publisher.publish_gap(5).unwrap();
        publisher.publish_gap(0).unwrap();
        publisher.publish_gap(2).unwrap();
        // Nothing to receive: a gap is not a message.
        let first = sub.try_recv().unwrap();
        assert_eq!((first.meta.missed, first.meta.sequence), (Some(0), Some(0)));
        assert!(matches!(sub.try_recv(), Err(Error::Empty)));
        publisher.send(b"b").unwrap();
        publisher.send(b"c").unwrap();
        let b = sub.try_recv().unwrap();
        assert_eq!(b.data, b"b");
        assert_eq!((b.meta.missed, b.meta.sequence), (Some(7), Some(8)));
        // In place too, and only once.
        let c = sub.recv_in_place().unwrap();
        assert_eq!((c.meta().missed, c.meta().sequence), (Some(0), Some(9)));
        drop(c);
        // A subscriber that joins after a gap does not count it; one replaying history
        // counts only the gaps between the messages it replays.
        publisher.publish_gap(3).unwrap();
        let mut late = topic.subscriber().unwrap();
        let mut replay = topic.subscriber_with_history(3).unwrap();
        publisher.send(b"d").unwrap();
        let d = late.try_recv().unwrap();
        assert_eq!((d.data.as_slice(), d.meta.missed), (&b"d"[..], Some(0)));
        let seen: Vec<_> = (0..4)
            .map(|_| {
                let m = replay.try_recv().unwrap();
                (m.data, m.meta.missed.unwrap())
            })
            .collect();
        assert_eq!(
            seen,
            [
                (b"a".to_vec(), 0),
                (b"b".to_vec(), 7),
                (b"c".to_vec(), 0),
                (b"d".to_vec(), 3)
            ]
        );
        // The early subscriber sees the second gap as well.
        let d = sub.try_recv().unwrap();
        assert_eq!((d.meta.missed, d.meta.sequence), (Some(3), Some(13)));
    }
}

#[test]
fn a_subscriber_overrun_across_a_gap_counts_both_exactly() {
    let n = name("gap-overrun");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n).capacity(4).create().unwrap();
    let mut slow = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    for i in 0..3u8 {
        publisher.send(&[i]).unwrap();
    }
    publisher.publish_gap(100).unwrap();
    for i in 3..10u8 {
        publisher.send(&[i]).unwrap();
    }
    // Messages 0..6 were overwritten (6 of them), the gap of 100 was among them.
    let first = slow.try_recv().unwrap();
    assert_eq!(first.data, [6]);
    assert_eq!(first.meta.missed, Some(106));
    assert_eq!(first.meta.sequence, Some(106));
}

#[test]
fn a_gap_takes_no_slot_under_backpressure_and_waits_only_for_the_lock() {
    let n = name("gap-bp");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n)
        .capacity(1)
        .overflow(Overflow::Backpressure)
        .create()
        .unwrap();
    let mut sub = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    publisher.send(b"x").unwrap();
    assert!(matches!(publisher.try_send(b"y"), Err(Error::Full)));
    publisher.publish_gap(4).unwrap();
    assert_eq!(sub.try_recv().unwrap().meta.missed, Some(0));
    publisher.send(b"y").unwrap();
    assert_eq!(sub.try_recv().unwrap().meta.missed, Some(4));
    // Another publisher holding a loan holds the gap back: it times out, and counts nothing.
    let mut other = topic.publisher().unwrap();
    let loan = other.loan().unwrap();
    let err = publisher
        .publish_gap_deadline(9, Deadline::after(Duration::from_millis(30)))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    loan.publish(1).unwrap();
    assert_eq!(sub.try_recv().unwrap().meta.missed, Some(0));
}

#[test]
fn a_gap_that_would_overflow_the_count_is_refused() {
    let n = name("gap-max");
    let _c = Cleanup(n.clone());
    let topic = Topic::builder(&n).create().unwrap();
    let mut sub = topic.subscriber().unwrap();
    let mut publisher = topic.publisher().unwrap();
    publisher.publish_gap(u64::MAX - 1).unwrap();
    let err = publisher.publish_gap(2).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    publisher.send(b"z").unwrap();
    let msg = sub.try_recv().unwrap();
    assert_eq!(msg.meta.missed, Some(u64::MAX - 1));
    // The sequence saturates instead of wrapping.
    assert_eq!(msg.meta.sequence, Some(u64::MAX - 1));
}

/// The fast paths keep slot indices instead of dividing (issue 14): every way the positions
/// move (two publishers taking turns through the lock, loans, in-place samples, an overrun
/// jump of the general path) must leave them right, on capacities that are and are not
/// powers of two, for the single publisher and the publish lock alike.
#[test]
fn kept_slot_indices_follow_every_path_that_moves_a_position() {
    for (capacity, single) in [(3, false), (3, true), (4, false), (5, true), (1, false)] {
        let n = name(&format!("idx-{capacity}-{single}"));
        let _c = Cleanup(n.clone());
        let builder = Topic::builder(&n).capacity(capacity).max_message_size(16);
        let builder = if single {
            builder.single_publisher()
        } else {
            builder
        };
        let topic = builder.create().unwrap();
        let mut sub = topic.subscriber().unwrap();
        let mut first = topic.publisher().unwrap();
        let mut second = (!single).then(|| topic.publisher().unwrap());
        let mut next = 0u64;
        let publish = |round: u64, first: &mut Publisher, second: &mut Option<Publisher>| {
            let body = round.to_le_bytes();
            match (round % 3, second.as_mut()) {
                (1, Some(other)) => other.send(&body).unwrap(),
                (2, _) => {
                    let mut loan = first.loan().unwrap();
                    loan[..8].copy_from_slice(&body);
                    loan.publish(8).unwrap();
                }
                _ => first.send(&body).unwrap(),
            }
        };
        for round in 0..40u64 {
            publish(round, &mut first, &mut second);
            if round % 5 == 4 {
                let sample = sub.recv_in_place().unwrap();
                assert_eq!(&sample[..], round.to_le_bytes(), "capacity {capacity}");
                assert_eq!(sample.meta().sequence, Some(round));
                drop(sample);
            } else {
                let msg = sub.try_recv().unwrap();
                assert_eq!(msg.data, round.to_le_bytes(), "capacity {capacity}");
                assert_eq!(msg.meta.sequence, Some(round));
                assert_eq!(msg.meta.missed, Some(0));
            }
            next = round + 1;
        }
        // Overrun the subscriber: the general path jumps its cursor, the fast path goes on
        // from the new position.
        for round in next..next + capacity as u64 + 2 {
            publish(round, &mut first, &mut second);
        }
        let last = next + capacity as u64 + 1;
        let oldest = last + 1 - capacity as u64;
        let msg = sub.try_recv().unwrap();
        assert_eq!(msg.meta.sequence, Some(oldest), "capacity {capacity}");
        assert_eq!(msg.meta.missed, Some(oldest - next));
        for seq in oldest + 1..=last {
            let msg = sub.try_recv().unwrap();
            assert_eq!(msg.data, seq.to_le_bytes());
            assert_eq!((msg.meta.sequence, msg.meta.missed), (Some(seq), Some(0)));
        }
        assert!(matches!(sub.try_recv(), Err(Error::Empty)));
        publish(last + 1, &mut first, &mut second);
        assert_eq!(sub.try_recv().unwrap().data, (last + 1).to_le_bytes());
    }
}
