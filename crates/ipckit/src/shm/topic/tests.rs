use std::time::Duration;

use super::*;
use crate::{MessageReceiver, MessageSender};

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
