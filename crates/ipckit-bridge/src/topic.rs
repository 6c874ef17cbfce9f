//! Topics across hosts: an exporting bridge subscribes to its local topic and puts every
//! message on `ipckit/topic/NAME`; an importing bridge subscribes to that key and publishes
//! into its local topic. A bridge skips what it published itself (the sender pid of the
//! local message, the origin in the attachment of the Zenoh sample), so a host may do both.
//!
//! Gaps cross too. The exporting bridge's subscriber reports how many messages it missed
//! before each one (it fell behind, or a local publisher declared a gap); the count travels
//! in the sample's attachment with the sample's number, and the importing bridge declares
//! that many lost ([`Publisher::publish_gap`](ipckit::shm::topic::Publisher::publish_gap)),
//! plus any samples whose numbers it never saw, just before it publishes the message. So a
//! subscriber on the importing host is told the same `missed` as one on the exporting host
//! that fell behind by as much. A count reported with a message the bridge's own import side
//! published is not sent back: it is the gap that import carried in from the other host.

use std::collections::HashMap;
use std::time::Duration;

use ipckit::shm::Topic;
use ipckit::{Deadline, MessageReceiver, MessageSender};
use zenoh::qos::CongestionControl;
use zenoh::Wait;

use crate::mailbox::Once;
use crate::proto;
use crate::status::Counters;
use crate::{Ctx, Object};

fn open_or_create(name: &str) -> ipckit::Result<Topic> {
    match Topic::open(name) {
        Err(ipckit::Error::NotFound { .. }) => match Topic::builder(name).create() {
            Err(ipckit::Error::AlreadyExists { .. }) => Topic::open(name),
            other => other,
        },
        other => other,
    }
}

pub(crate) fn export(ctx: &Ctx, object: &Object) {
    let name = &object.name;
    let me = std::process::id();
    let mut once = Once::default();
    let publisher = loop {
        match ctx
            .session
            .declare_publisher(object.key_expr())
            .congestion_control(CongestionControl::Block)
            .wait()
        {
            Ok(p) => break p,
            Err(e) => once.log(ctx, format!("export topic {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    // Samples are numbered from 0 when the bridge starts (a new origin for the importers),
    // and go on counting across a reopen of the local topic.
    let mut count = 0u64;
    'reopen: while !ctx.stopping() {
        let mut subscriber = match Topic::open(name).and_then(|t| t.subscriber()) {
            Ok(s) => s,
            Err(e) => {
                once.log(ctx, format!("export topic {name}: {e}; trying again"));
                ctx.pause(Duration::from_secs(1));
                continue;
            }
        };
        once.clear();
        let mut buf = Vec::new();
        while !ctx.stopping() {
            let meta = match subscriber
                .recv_deadline(&mut buf, Deadline::after(Duration::from_millis(200)))
            {
                Ok(meta) => meta,
                Err(e) if e.is_transient() => continue,
                Err(e) => {
                    once.log(ctx, format!("export topic {name}: {e}"));
                    ctx.pause(Duration::from_secs(1));
                    continue 'reopen;
                }
            };
            if meta.sender_pid == Some(me) {
                // Published here by our own import side: it came from another host, and so
                // did the gap it declared before it (sending it back would echo it).
                continue;
            }
            let header = proto::topic_header(&proto::TopicCarried {
                origin: ctx.origin,
                missed: meta.missed.unwrap_or(0),
                count: Some(count),
            });
            // Numbered whether or not the put succeeds: a failed one is missed over there.
            count += 1;
            match publisher.put(buf.clone()).attachment(header).wait() {
                Ok(()) => {
                    Counters::add(&ctx.counters.forwarded, 1);
                    Counters::add(&ctx.counters.bytes, buf.len() as u64);
                }
                Err(e) => once.log(ctx, format!("export topic {name}: zenoh put: {e}")),
            }
        }
    }
}

pub(crate) fn import(ctx: &Ctx, object: &Object) {
    let name = &object.name;
    let mut once = Once::default();
    let subscriber = loop {
        match ctx.session.declare_subscriber(object.key_expr()).wait() {
            Ok(s) => break s,
            Err(e) => once.log(ctx, format!("import topic {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    let mut publisher = loop {
        match open_or_create(name).and_then(|t| t.publisher()) {
            Ok(p) => break p,
            Err(e) => once.log(ctx, format!("import topic {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    once.clear();
    // The last sample number seen from each exporting bridge.
    let mut last: HashMap<[u8; 16], u64> = HashMap::new();
    while !ctx.stopping() {
        let sample = match subscriber.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(sample)) => sample,
            Ok(None) => continue,
            Err(_) => return,
        };
        let carried = sample
            .attachment()
            .and_then(|a| proto::parse_topic_header(&a.to_bytes()));
        if matches!(carried, Some(c) if c.origin == ctx.origin) {
            continue;
        }
        let gap = carried.map_or(0, |c| {
            c.missed.saturating_add(lost_on_the_way(&mut last, &c))
        });
        let payload = sample.payload().to_bytes();
        // Just before the message, as the exporting host's subscribers saw it.
        if gap > 0 {
            loop {
                match publisher
                    .publish_gap_deadline(gap, Deadline::after(Duration::from_millis(200)))
                {
                    Ok(()) => break,
                    Err(e) if e.is_transient() && !ctx.stopping() => continue,
                    Err(e) => {
                        once.log(ctx, format!("import topic {name}: a gap of {gap}: {e}"));
                        break;
                    }
                }
            }
        }
        // A backpressure topic makes us wait for its slowest subscriber, as a local
        // publisher would; Zenoh then holds the samples that follow.
        loop {
            match publisher.send_deadline(&payload, Deadline::after(Duration::from_millis(200))) {
                Ok(()) => {
                    Counters::add(&ctx.counters.delivered, 1);
                    break;
                }
                Err(e) if e.is_transient() && !ctx.stopping() => continue,
                Err(e) => {
                    once.log(ctx, format!("import topic {name}: {e}"));
                    break;
                }
            }
        }
    }
}

/// How many samples of `carried`'s origin never arrived before it (its number jumped), and
/// records its number. Numbers that do not move on (none, an older bridge; or a repeat) count
/// nothing.
fn lost_on_the_way(last: &mut HashMap<[u8; 16], u64>, carried: &proto::TopicCarried) -> u64 {
    let Some(count) = carried.count else { return 0 };
    let before = last.insert(carried.origin, count);
    match before {
        Some(before) if count > before => count - before - 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_a_bridges_sample_numbers_counts_as_missed() {
        let mut last = HashMap::new();
        let at = |origin: u8, count: Option<u64>| proto::TopicCarried {
            origin: [origin; 16],
            missed: 0,
            count,
        };
        assert_eq!(lost_on_the_way(&mut last, &at(1, Some(5))), 0);
        assert_eq!(lost_on_the_way(&mut last, &at(1, Some(6))), 0);
        assert_eq!(lost_on_the_way(&mut last, &at(2, Some(0))), 0);
        assert_eq!(lost_on_the_way(&mut last, &at(1, Some(10))), 3);
        assert_eq!(lost_on_the_way(&mut last, &at(1, None)), 0);
        assert_eq!(lost_on_the_way(&mut last, &at(1, Some(10))), 0);
        assert_eq!(lost_on_the_way(&mut last, &at(2, Some(2))), 1);
    }
}
