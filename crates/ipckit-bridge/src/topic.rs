//! Topics across hosts: an exporting bridge subscribes to its local topic and puts every
//! message on `ipckit/topic/NAME`; an importing bridge subscribes to that key and publishes
//! into its local topic. A bridge skips what it published itself (the sender pid of the
//! local message, the origin in the attachment of the Zenoh sample), so a host may do both.

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
        let mut missed = 0u64;
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
            missed += meta.missed.unwrap_or(0);
            if meta.sender_pid == Some(me) {
                // Published here by our own import side: it came from another host.
                continue;
            }
            let header = proto::topic_header(&ctx.origin, missed);
            missed = 0;
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
    while !ctx.stopping() {
        let sample = match subscriber.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(sample)) => sample,
            Ok(None) => continue,
            Err(_) => return,
        };
        let origin = sample
            .attachment()
            .and_then(|a| proto::parse_topic_header(&a.to_bytes()));
        if matches!(origin, Some((o, _)) if o == ctx.origin) {
            continue;
        }
        let payload = sample.payload().to_bytes();
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
