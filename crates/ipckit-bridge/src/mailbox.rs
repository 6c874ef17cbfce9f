//! Mailboxes across hosts: a window of journaled messages, acknowledged in order,
//! de-duplicated by position (see the crate docs for the protocol and what it guarantees).

use std::collections::hash_map::{Entry, HashMap};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipckit::shm::mailbox::{Delivery, IdempotentSource, MailboxSample};
use ipckit::shm::{Mailbox, MailboxReceiver, MailboxSender};
use ipckit::{Deadline, Error as IpcError, MessageSender};
use zenoh::handlers::FifoChannelHandler;
use zenoh::query::{QueryTarget, Reply};
use zenoh::Wait;

use crate::journal::Journal;
use crate::proto::{self, Carried};
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
/// The message does not follow the last one delivered from its source: send from the
/// oldest unacknowledged again.
const GAP: &str = "gap";

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
    /// Full, out of order, or not answered: send the window again from its oldest message.
    Again(Option<String>),
    /// The other side's mailbox is full.
    Full,
}

/// Sends one carried message; its answer comes on the returned channel.
fn offer(
    ctx: &Ctx,
    key: &str,
    data: &[u8],
    carried: &Carried,
) -> Result<FifoChannelHandler<Reply>, String> {
    ctx.session
        .get(key)
        .payload(data.to_vec())
        .attachment(proto::mailbox_header(carried))
        .target(QueryTarget::BestMatching)
        .timeout(ACK_TIMEOUT)
        .wait()
        .map_err(|e| format!("zenoh get on {key}: {e}"))
}

/// The answer on `replies`, if it has come (waiting at most `wait`): `None` while waiting.
fn answer(replies: &FifoChannelHandler<Reply>, wait: Option<Duration>) -> Option<Answer> {
    let received = match wait {
        Some(wait) => replies.recv_timeout(wait),
        None => replies.try_recv(),
    };
    let reply = match received {
        Ok(Some(reply)) => reply,
        Ok(None) => return None,
        // Finished without a reply: no exporting bridge (yet), or it did not answer in time.
        Err(_) => {
            return Some(Answer::Again(Some(
                "no exporting bridge answers (yet); sending again".into(),
            )))
        }
    };
    Some(match reply.result() {
        Ok(sample) => {
            let text = sample.payload().to_bytes();
            if &*text == DELIVERED.as_bytes() || &*text == DUPLICATE.as_bytes() {
                Answer::Stored
            } else {
                Answer::Again(Some(format!(
                    "unexpected acknowledgement {:?}",
                    String::from_utf8_lossy(&text)
                )))
            }
        }
        Err(error) => {
            let text = error.payload().to_bytes();
            if &*text == FULL.as_bytes() {
                Answer::Full
            } else if &*text == GAP.as_bytes() {
                Answer::Again(None)
            } else if &*text == b"Timeout" {
                // Zenoh's own error reply when no answer came in time.
                Answer::Again(Some(
                    "no exporting bridge answers (yet); sending again".into(),
                ))
            } else {
                Answer::Again(Some(String::from_utf8_lossy(&text).into_owned()))
            }
        }
    })
}

/// The importing side: the local mailbox's single receiver.
///
/// With a window of 1 (the default) it holds each message in place and releases it once the
/// exporting host has it. With a larger window each message is appended to the outbox
/// (`journal.rs`) before its slot is released, and up to `window` journaled messages are in
/// flight, acknowledged in order; anything else sends them again from the oldest.
pub(crate) fn import(ctx: &Ctx, object: &Object) {
    let name = &object.name;
    let mut once = Once::default();
    // The local mailbox: created single-receiver (and bounded) if absent, so that a bridge
    // killed holding a message leaves it to the next one; one that exists is taken as it is
    // (an unbounded one keeps that guarantee if it was made single-receiver).
    let mailbox = loop {
        match Mailbox::builder(name).single_receiver().open_or_create() {
            Ok(mailbox) => break mailbox,
            Err(e) => once.log(ctx, format!("import mailbox {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    let (source, mut journal) = loop {
        let opened = ctx
            .state
            .import_source(name, &mailbox_file(name))
            .and_then(|source| {
                Journal::open(&ctx.state, name, mailbox.max_message_size()).map(|j| (source, j))
            });
        match opened {
            Ok(opened) => break opened,
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
    if ctx.window > 1 {
        carry_window(ctx, object, source, &mut receiver, &mut journal, ctx.window);
        return;
    }
    // An outbox left by a bridge that ran with a window goes first, in order.
    if !journal.pending.is_empty() {
        carry_window(ctx, object, source, &mut receiver, &mut journal, 0);
    }
    carry_in_place(ctx, object, source, &mut receiver);
}

/// The number a message is carried with: its position in the whole mailbox, which grows
/// from message to message (through the chained rings of an unbounded mailbox too) and is
/// the same when the message is given again to the next bridge. `None` (said in the log) for
/// a message that has none, an unbounded mailbox's past the `2^32` positions of its ring
/// (sent by an older ipckit): it cannot be carried exactly once, and the caller leaves it
/// in the mailbox and stops importing.
fn position(ctx: &Ctx, name: &str, message: &MailboxSample<'_>) -> Option<u64> {
    match message.mailbox_position() {
        Ok(pos) => Some(pos),
        Err(e) => {
            ctx.log(&format!(
                "import mailbox {name}: {e}; leaving it in the mailbox and not importing further"
            ));
            None
        }
    }
}

/// One message at a time, held in place until it is acknowledged.
fn carry_in_place(ctx: &Ctx, object: &Object, source: [u8; 16], receiver: &mut MailboxReceiver) {
    let name = &object.name;
    let key = object.key_expr();
    let mut once = Once::default();
    while !ctx.stopping() {
        let message =
            match receiver.recv_in_place_deadline(Deadline::after(Duration::from_millis(200))) {
                Ok(message) => message,
                Err(e) if e.is_transient() => continue,
                Err(e) => {
                    once.log(ctx, format!("import mailbox {name}: {e}"));
                    ctx.pause(Duration::from_secs(1));
                    continue;
                }
            };
        let Some(pos) = position(ctx, name, &message) else {
            std::mem::forget(message);
            return;
        };
        let header = proto::mailbox_header_v1(&source, pos);
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
            sent_before = true;
            let got = match ctx
                .session
                .get(&key)
                .payload(message.to_vec())
                .attachment(header.clone())
                .target(QueryTarget::BestMatching)
                .timeout(ACK_TIMEOUT)
                .wait()
            {
                Ok(replies) => answer(&replies, Some(ACK_TIMEOUT + Duration::from_secs(1)))
                    .unwrap_or(Answer::Again(None)),
                Err(e) => Answer::Again(Some(format!("zenoh get on {key}: {e}"))),
            };
            match got {
                Answer::Stored => break true,
                // The other host's mailbox is full: wait, and our own senders fill ours.
                Answer::Full => {
                    ctx.pause(Duration::from_millis(10));
                    continue;
                }
                Answer::Again(Some(why)) => once.log(ctx, format!("import mailbox {name}: {why}")),
                Answer::Again(None) => {}
            }
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

/// A window of journaled messages; `window` 0 only drains the outbox (and returns when it
/// is empty).
fn carry_window(
    ctx: &Ctx,
    object: &Object,
    source: [u8; 16],
    receiver: &mut MailboxReceiver,
    journal: &mut Journal,
    window: usize,
) {
    let name = &object.name;
    let key = object.key_expr();
    let mut once = Once::default();
    // The answers awaited, oldest first: one per pending journal entry sent.
    let mut in_flight: VecDeque<FifoChannelHandler<Reply>> = VecDeque::new();
    // Messages of the journal carried before (resending them counts as redelivery).
    let mut carried_before = journal.pending.len();
    let mut resend_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(20);
    // This mailbox's share of the outbox gauge.
    let mut counted = 0u64;
    let mut count = |now: usize| {
        let now = now as u64;
        ctx.counters.outbox.fetch_add(
            now.wrapping_sub(counted),
            std::sync::atomic::Ordering::Relaxed,
        );
        counted = now;
    };
    while !ctx.stopping() {
        count(journal.pending.len());
        if window == 0 && journal.pending.is_empty() {
            return;
        }
        // Send what is journaled and not in flight (all of it again after a go-back).
        if resend_at.is_none_or(|at| Instant::now() >= at) {
            resend_at = None;
            while in_flight.len() < journal.pending.len() {
                let index = in_flight.len();
                let entry = &journal.pending[index];
                let base = journal
                    .pending
                    .iter()
                    .find(|e| e.source == entry.source)
                    .map_or(entry.prev_next, |e| e.prev_next);
                let carried = Carried {
                    source: entry.source,
                    pos: entry.pos,
                    prev_next: entry.prev_next,
                    base,
                };
                match offer(ctx, &key, &entry.data, &carried) {
                    Ok(replies) => in_flight.push_back(replies),
                    Err(why) => {
                        once.log(ctx, format!("import mailbox {name}: {why}"));
                        resend_at = Some(Instant::now() + backoff);
                        break;
                    }
                }
                if index < carried_before {
                    Counters::add(&ctx.counters.redelivered, 1);
                } else {
                    Counters::add(&ctx.counters.forwarded, 1);
                    Counters::add(&ctx.counters.bytes, entry.data.len() as u64);
                    carried_before = index + 1;
                }
            }
        }
        // Take the next message while the window has room; wait for it only if nothing
        // is in flight.
        if journal.pending.len() < window {
            let wait = if journal.pending.is_empty() {
                Deadline::after(Duration::from_millis(200))
            } else {
                Deadline::Now
            };
            match receiver.recv_in_place_deadline(wait) {
                Ok(message) => {
                    let Some(pos) = position(ctx, name, &message) else {
                        std::mem::forget(message);
                        return;
                    };
                    if !journal.has(&source, pos) {
                        if let Err(e) = journal.append(source, pos, &message) {
                            // Not journaled (a full disk?): leave it in the mailbox, unreleased;
                            // the single receiver is given the same message again.
                            once.log(ctx, format!("import mailbox {name}: {e}; trying again"));
                            std::mem::forget(message);
                            ctx.pause(Duration::from_secs(1));
                            continue;
                        }
                    }
                    drop(message); // journaled: it may leave the mailbox
                    continue;
                }
                Err(e) if e.is_transient() => {}
                Err(e) => {
                    once.log(ctx, format!("import mailbox {name}: {e}"));
                    ctx.pause(Duration::from_secs(1));
                }
            }
        }
        // The oldest answer decides: acknowledged, or everything again from there.
        let Some(front) = in_flight.front() else {
            continue;
        };
        let got = if journal.pending.len() >= window {
            answer(front, Some(Duration::from_millis(5)))
        } else {
            answer(front, None).or_else(|| {
                // Room for more: look at the mailbox again soon.
                std::thread::sleep(Duration::from_micros(200));
                answer(front, None)
            })
        };
        match got {
            None => {}
            Some(Answer::Stored) => {
                in_flight.pop_front();
                carried_before = carried_before.saturating_sub(1);
                if let Err(e) = journal.ack_front() {
                    once.log(ctx, format!("import mailbox {name}: {e}"));
                }
                Counters::add(&ctx.counters.acked, 1);
                backoff = Duration::from_millis(20);
                once.clear();
            }
            Some(again) => {
                in_flight.clear();
                let pause = match again {
                    // The other host's mailbox is full: wait, and our own senders fill ours.
                    Answer::Full => Duration::from_millis(10),
                    // A gap: what B is missing is at the front of the outbox; go back now
                    // (a millisecond's pause keeps a persistent gap from spinning).
                    Answer::Again(None) => Duration::from_millis(1),
                    Answer::Again(Some(why)) => {
                        once.log(ctx, format!("import mailbox {name}: {why}"));
                        let pause = backoff;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        pause
                    }
                    Answer::Stored => unreachable!("handled above"),
                };
                resend_at = Some(Instant::now() + pause);
            }
        }
    }
}

/// How the messages of one importing source are delivered into the local mailbox.
struct Source {
    /// The file record (`state.rs`): the starting point should the mailbox's own be lost
    /// (evicted from its source table, or a mailbox made again), and the whole record where
    /// the mailbox keeps none (a rendezvous mailbox, or a source table full of live sources).
    record: Record,
    /// The source's entry in the mailbox (bounded or unbounded), whose record is committed
    /// with each message (sent through the one sender of the mailbox, `send_idempotent`), so
    /// that no kill delivers one twice.
    idempotent: Option<IdempotentSource>,
}

impl Source {
    /// The position it expects to follow the last one delivered.
    fn next(&self) -> u64 {
        self.idempotent
            .as_ref()
            .map_or(self.record.next(), |tx| tx.next())
    }
}

/// The source `source`'s delivery state: its file record, and its entry in the mailbox if the
/// mailbox has idempotent senders. `Err`: the answer to give (and nothing decided).
fn open_source(
    ctx: &Ctx,
    mailbox: &Mailbox,
    name: &str,
    source: &[u8; 16],
    base: u64,
) -> Result<Source, String> {
    let mut record = ctx
        .state
        .export_record(name, source)
        .map_err(|e| format!("exporting bridge: {e}"))?;
    record.start_at(base);
    let idempotent = match mailbox.idempotent_source(*source) {
        Ok(mut tx) => {
            if tx.is_fresh() {
                // Delivered before the mailbox kept the record (or before it was evicted).
                tx.start_at(record.next());
            }
            Some(tx)
        }
        // A rendezvous mailbox (a sender may take back what it committed), or a source
        // table full of live sources: the file record alone, at least once.
        Err(IpcError::Unsupported(_)) | Err(IpcError::LimitReached { .. }) => None,
        // Another process owns the source (an earlier bridge still exiting): never mix two
        // records of one source; the importing side sends again.
        Err(e) => return Err(format!("mailbox {name:?} on the exporting host: {e}")),
    };
    Ok(Source { record, idempotent })
}

/// A fault-injection point for the tests, in debug builds only: with
/// `IPCKIT_BRIDGE_KILL_AFTER_SENDS=N` in its environment, an exporting bridge SIGKILLs itself
/// right after its `N`th local send, before it records it: the window a record kept apart
/// from the mailbox could not close (tests/netns.rs).
#[cfg(debug_assertions)]
fn failpoint_after_local_send() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SENT: AtomicU64 = AtomicU64::new(0);
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    let limit = LIMIT.get_or_init(|| {
        std::env::var("IPCKIT_BRIDGE_KILL_AFTER_SENDS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(limit) = *limit {
        if SENT.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
            let _ = ipckit::signal::send(std::process::id(), ipckit::signal::Signal::KILL);
        }
    }
}

/// The sender for messages without a source (and sources without idempotent senders).
fn open_sender<'a>(
    sender: &'a mut Option<MailboxSender>,
    mailbox: &Mailbox,
) -> ipckit::Result<&'a mut MailboxSender> {
    if sender.is_none() {
        *sender = Some(mailbox.sender()?);
    }
    Ok(sender.as_mut().expect("made above"))
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
    let mut mailbox: Option<Mailbox> = None;
    let mut sender: Option<MailboxSender> = None;
    let mut sources: HashMap<[u8; 16], Source> = HashMap::new();
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
        if mailbox.is_none() {
            match Mailbox::open(name) {
                Ok(m) => mailbox = Some(m),
                Err(e) => {
                    answer(Err(format!("mailbox {name:?} on the exporting host: {e}")));
                    continue;
                }
            }
        }
        let opened = mailbox.as_ref().expect("opened above");
        // The sender before the sources: on a single-sender mailbox, taking its token settles
        // what a killed predecessor had in flight, so that each source's `next` is final.
        let tx = match open_sender(&mut sender, opened) {
            Ok(tx) => tx,
            Err(e) => {
                answer(Err(format!("mailbox {name:?} on the exporting host: {e}")));
                continue;
            }
        };
        let source = match header {
            Some(carried) => {
                let source = match sources.entry(carried.source) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        match open_source(ctx, opened, name, &carried.source, carried.base) {
                            Ok(source) => entry.insert(source),
                            Err(text) => {
                                answer(Err(text));
                                continue;
                            }
                        }
                    }
                };
                Some((source, carried.pos))
            }
            None => None,
        };
        if let (Some((s, position)), Some(carried)) = (&source, &header) {
            let next = s.next();
            if *position < next {
                Counters::add(&ctx.counters.duplicates, 1);
                answer(Ok(DUPLICATE));
                continue;
            }
            // The positions delivered from a source are always a prefix of its stream, so a
            // predecessor at or below the record was delivered; above it, it is missing.
            if carried.prev_next > next {
                // An earlier message of the window is missing here (lost with a link or a
                // killed bridge): the importing side sends again from its oldest.
                answer(Err(GAP.into()));
                continue;
            }
        }
        let deadline = Deadline::after(FULL_WAIT);
        let sent = match source {
            // Exactly once: the mailbox commits the position with the message.
            Some((
                Source {
                    idempotent: Some(entry),
                    record,
                },
                position,
            )) => match tx.send_idempotent(entry, position, &payload, deadline) {
                Ok(Delivery::AlreadyDelivered) => {
                    Counters::add(&ctx.counters.duplicates, 1);
                    answer(Ok(DUPLICATE));
                    continue;
                }
                // The file record follows, for a mailbox that loses its own.
                Ok(_) => Ok(Some((record, position))),
                Err(e) => Err(e),
            },
            // At least once: a kill between the send and the record's `pwrite` delivers the
            // message again when the importing bridge resends it (a rendezvous mailbox, or a
            // source table full of live sources).
            Some((Source { record, .. }, position)) => tx
                .send_deadline(&payload, deadline)
                .map(|()| Some((record, position))),
            None => tx.send_deadline(&payload, deadline).map(|()| None),
        };
        match sent {
            Ok(record) => {
                #[cfg(debug_assertions)]
                failpoint_after_local_send();
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
                sources.clear();
                mailbox = None;
                answer(Err(format!("mailbox {name:?} on the exporting host: {e}")));
            }
        }
    }
}
