//! Mailboxes across hosts: stop-and-wait, acknowledged, de-duplicated by position (see the
//! crate docs for the protocol and what it guarantees).

use std::collections::hash_map::{Entry, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use ipckit::shm::{Mailbox, MailboxSender};
use ipckit::{Capacity, Deadline, MessageSender};
use zenoh::query::QueryTarget;
use zenoh::Wait;

use crate::proto;
use crate::state::Record;
use crate::status::Counters;
use crate::{Ctx, Object};

/// How long an importing bridge waits for an acknowledgement before sending again.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an exporting bridge waits for room in a full mailbox before answering `full`.
const FULL_WAIT: Duration = Duration::from_millis(500);
/// The replies of an exporting bridge.
const DELIVERED: &str = "delivered";
const DUPLICATE: &str = "duplicate";
const FULL: &str = "full";

fn mailbox_file(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/ipckit.mailbox.{name}"))
}

/// Remembers the last problem reported, so a retry loop says it once.
#[derive(Default)]
pub(crate) struct Once(String);

impl Once {
    pub(crate) fn log(&mut self, ctx: &Ctx, what: String) {
        if what != self.0 {
            ctx.log(&what);
            self.0 = what;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

enum Answer {
    Stored,
    Full,
    NoExporter,
    Failed(String),
}

fn offer(ctx: &Ctx, key: &str, message: &[u8], header: &[u8]) -> Answer {
    let replies = match ctx
        .session
        .get(key)
        .payload(message.to_vec())
        .attachment(header.to_vec())
        .target(QueryTarget::BestMatching)
        .timeout(ACK_TIMEOUT)
        .wait()
    {
        Ok(replies) => replies,
        Err(e) => return Answer::Failed(format!("zenoh get on {key}: {e}")),
    };
    let Ok(reply) = replies.recv() else {
        return Answer::NoExporter;
    };
    match reply.result() {
        Ok(sample) => {
            let text = sample.payload().to_bytes();
            if &*text == DELIVERED.as_bytes() || &*text == DUPLICATE.as_bytes() {
                Answer::Stored
            } else {
                Answer::Failed(format!(
                    "unexpected acknowledgement {:?}",
                    String::from_utf8_lossy(&text)
                ))
            }
        }
        Err(error) => {
            let text = error.payload().to_bytes();
            if &*text == FULL.as_bytes() {
                Answer::Full
            } else if &*text == b"Timeout" {
                // Zenoh's own error reply when no answer came in time.
                Answer::NoExporter
            } else {
                Answer::Failed(String::from_utf8_lossy(&text).into_owned())
            }
        }
    }
}

/// The importing side: the local mailbox's single receiver, carrying each message to the
/// exporting host and releasing it only once it is stored there.
pub(crate) fn import(ctx: &Ctx, object: &Object) {
    let name = &object.name;
    let key = object.key_expr();
    let mut once = Once::default();
    // The local mailbox: created single-receiver if absent, so that a bridge killed holding
    // a message leaves it to the next one.
    let mailbox = loop {
        match Mailbox::builder(name).single_receiver().open_or_create() {
            Ok(mailbox) => break mailbox,
            Err(e) => once.log(ctx, format!("import mailbox {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    if mailbox.info().capacity == Capacity::Unbounded {
        ctx.log(&format!(
            "import mailbox {name}: it is unbounded, and only a bounded mailbox has the stable \
             positions that make delivery exactly-once; not importing it"
        ));
        return;
    }
    let source = loop {
        match ctx.state.import_source(name, &mailbox_file(name)) {
            Ok(source) => break source,
            Err(e) => once.log(ctx, format!("import mailbox {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    let mut receiver = loop {
        match mailbox.receiver() {
            Ok(receiver) => break receiver,
            // A second single receiver is refused while the first (a bridge still dying) lives.
            Err(e) => once.log(ctx, format!("import mailbox {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    once.clear();
    while !ctx.stopping() {
        let message =
            match receiver.recv_in_place_deadline(Deadline::after(Duration::from_millis(200))) {
                Ok(message) => message,
                Err(e) if e.is_transient() => continue,
                Err(e) => {
                    once.log(ctx, format!("import mailbox {name}: {e}"));
                    if !ctx.pause(Duration::from_secs(1)) {
                        return;
                    }
                    continue;
                }
            };
        let header = proto::mailbox_header(&source, message.position());
        let mut sent_before = false;
        let mut backoff = Duration::from_millis(20);
        let stored = loop {
            if ctx.stopping() {
                break false;
            }
            if sent_before {
                Counters::add(&ctx.counters.redelivered, 1);
            } else {
                Counters::add(&ctx.counters.forwarded, 1);
                Counters::add(&ctx.counters.bytes, message.len() as u64);
            }
            match offer(ctx, &key, &message, &header) {
                Answer::Stored => break true,
                Answer::Full => {
                    // The other host's mailbox is full: wait, and our own senders fill ours.
                    sent_before = true;
                    ctx.pause(Duration::from_millis(10));
                    continue;
                }
                Answer::NoExporter => once.log(
                    ctx,
                    format!(
                        "import mailbox {name}: no exporting bridge answers (yet); sending again"
                    ),
                ),
                Answer::Failed(why) => once.log(ctx, format!("import mailbox {name}: {why}")),
            }
            sent_before = true;
            ctx.pause(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(500));
        };
        if stored {
            once.clear();
            Counters::add(&ctx.counters.acked, 1);
            drop(message); // released: it has left this host's queue
        } else {
            // Stopping with the message unacknowledged: leave it in the mailbox (a
            // single-receiver slot stays full), for the next bridge to send again.
            std::mem::forget(message);
            return;
        }
    }
}

/// The exporting side: a queryable that stores each message into the local mailbox once.
pub(crate) fn export(ctx: &Ctx, object: &Object) {
    let name = &object.name;
    let key = object.key_expr();
    let mut once = Once::default();
    let queryable = loop {
        match ctx.session.declare_queryable(&key).complete(true).wait() {
            Ok(q) => break q,
            Err(e) => once.log(ctx, format!("export mailbox {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    let mut sender: Option<MailboxSender> = None;
    let mut records: HashMap<[u8; 16], Record> = HashMap::new();
    while !ctx.stopping() {
        let query = match queryable.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(query)) => query,
            Ok(None) => continue,
            Err(_) => return,
        };
        let answer = |result: Result<&str, String>| {
            let sent = match result {
                Ok(text) => query.reply(query.key_expr().clone(), text).wait(),
                Err(text) => query.reply_err(text).wait(),
            };
            if let Err(e) = sent {
                ctx.log(&format!("export mailbox {name}: cannot reply: {e}"));
            }
        };
        let Some(payload) = query.payload().map(|p| p.to_bytes().into_owned()) else {
            answer(Err("a message to a mailbox is the query's payload".into()));
            continue;
        };
        let header = query
            .attachment()
            .and_then(|a| proto::parse_mailbox_header(&a.to_bytes()));
        if sender.is_none() {
            match Mailbox::open(name).and_then(|m| m.sender()) {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    answer(Err(format!("mailbox {name:?} on the exporting host: {e}")));
                    continue;
                }
            }
        }
        let record = match header {
            Some((source, position)) => {
                let record = match records.entry(source) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => match ctx.state.export_record(name, &source) {
                        Ok(r) => entry.insert(r),
                        Err(e) => {
                            answer(Err(format!("exporting bridge: {e}")));
                            continue;
                        }
                    },
                };
                Some((record, position))
            }
            None => None,
        };
        if let Some((r, position)) = &record {
            if r.delivered(*position) {
                Counters::add(&ctx.counters.duplicates, 1);
                answer(Ok(DUPLICATE));
                continue;
            }
        }
        let tx = sender.as_mut().expect("opened above");
        match tx.send_deadline(&payload, Deadline::after(FULL_WAIT)) {
            Ok(()) => {
                // The window: killed here, the message is in the mailbox but not recorded,
                // and the importing bridge's resend delivers it a second time.
                if let Some((r, position)) = record {
                    if let Err(e) = r.mark(position) {
                        ctx.log(&format!("export mailbox {name}: {e}"));
                    }
                }
                Counters::add(&ctx.counters.delivered, 1);
                answer(Ok(DELIVERED));
            }
            Err(e) if e.is_transient() => answer(Err(FULL.into())),
            Err(e) => {
                // The mailbox was removed or broken: open it again for the next message.
                sender = None;
                answer(Err(format!("mailbox {name:?} on the exporting host: {e}")));
            }
        }
    }
}
