//! Services across hosts. The importing bridge binds the service's connection port on its
//! host and carries each accepted connection to the exporting bridge, which connects to the
//! real server as a client: connect (with the client's payload; the server's welcome or
//! refusal comes back), one query per call, close when the client goes. The server's
//! callbacks are numbered and kept by the exporting bridge until the importing one asks for
//! the next (a long poll); each call's answer says how many callbacks came before it, and the
//! importing bridge hands the client those first, so the client sees them in the server's
//! order.

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ipckit::service::{Client, Connection, Server};
use ipckit::waitset::WaitSet;
use ipckit::Deadline;
use zenoh::query::{Query, QueryTarget};
use zenoh::Wait;

use crate::mailbox::Once;
use crate::proto::{self, Op};
use crate::status::Counters;
use crate::{Ctx, Object};

/// How long a carried call may take, server included.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A carried connection nobody has used for this long is closed (its importing bridge died).
const IDLE: Duration = Duration::from_secs(600);
/// How long the exporting bridge holds a poll open when no callback is waiting.
const POLL_WAIT: Duration = Duration::from_secs(5);
/// Callbacks kept for an importing bridge that does not ask for them: beyond, the oldest go
/// (as a local client's queue of callbacks drops its oldest).
const MAX_KEPT_CALLBACKS: usize = 4096;
/// Callbacks in one poll's answer, at most.
const BATCH: usize = 256;
/// How often the threads that carry a connection look at the stop flag.
const TICK: Duration = Duration::from_millis(200);

/// The server's callbacks on one carried connection, numbered from `first`.
#[derive(Default)]
struct Callbacks {
    first: u64,
    kept: VecDeque<Vec<u8>>,
    /// The connection to the server has ended: no more will come.
    closed: bool,
}

type Kept = Arc<(Mutex<Callbacks>, Condvar)>;
/// A call for the thread that owns a connection, and where its answer goes: the reply, and
/// how many callbacks the server had sent before it.
type Answer = mpsc::Sender<Result<(Vec<u8>, u64), String>>;
type CallTx = mpsc::Sender<(Vec<u8>, Answer)>;

/// A connection to the real server, as the exporting bridge carries it.
struct Carried {
    calls: CallTx,
    /// Wakes the connection's thread for a call.
    wake: UnixDatagram,
    callbacks: Kept,
    used: Instant,
}

type Shared = Arc<Mutex<HashMap<[u8; 16], Carried>>>;

fn keep(kept: &Kept, message: Vec<u8>) {
    let mut k = kept.0.lock().expect("no panics under this lock");
    if k.kept.len() == MAX_KEPT_CALLBACKS {
        k.kept.pop_front();
        k.first += 1;
    }
    k.kept.push_back(message);
    kept.1.notify_all();
}

fn next_position(kept: &Kept) -> u64 {
    let k = kept.0.lock().expect("no panics under this lock");
    k.first + k.kept.len() as u64
}

/// The thread that owns one connection to the real server: it makes the calls (handing
/// the callbacks that come meanwhile to `kept`, in order) and takes the callbacks that come
/// between calls.
fn own_connection(
    ctx: &Ctx,
    mut connection: Connection,
    calls: &mpsc::Receiver<(Vec<u8>, Answer)>,
    wake: &UnixDatagram,
    kept: &Kept,
) {
    let mut set = WaitSet::new();
    if set.add(&connection).is_err() || set.add_fd(wake).is_err() {
        return;
    }
    'carry: while !ctx.stopping() {
        while wake.recv(&mut [0u8; 8]).is_ok() {}
        loop {
            match calls.try_recv() {
                Ok((request, answer)) => {
                    let result =
                        connection.call_with(&request, Deadline::after(CALL_TIMEOUT), |message| {
                            keep(kept, message)
                        });
                    let failed = result.is_err();
                    let _ = answer.send(
                        result
                            .map(|reply| (reply, next_position(kept)))
                            .map_err(|e| e.to_string()),
                    );
                    if failed {
                        break 'carry;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                // Closed by the importing bridge (or idle): the connection goes.
                Err(mpsc::TryRecvError::Disconnected) => break 'carry,
            }
        }
        loop {
            match connection.recv_callback(Deadline::Now) {
                Ok(message) => keep(kept, message),
                Err(e) if e.is_transient() => break,
                Err(_) => break 'carry, // the server has gone
            }
        }
        let _ = set.wait(Deadline::after(TICK));
    }
    let mut k = kept.0.lock().expect("no panics under this lock");
    k.closed = true;
    kept.1.notify_all();
}

/// Answers a poll from position `from`: drops what came before it (the importing bridge has
/// it), waits up to `POLL_WAIT` for one, and returns what is kept as a batch.
fn poll(ctx: &Ctx, kept: &Kept, from: u64) -> Vec<u8> {
    let (lock, ready) = &**kept;
    let mut k = lock.lock().expect("no panics under this lock");
    while k.first < from && !k.kept.is_empty() {
        k.kept.pop_front();
        k.first += 1;
    }
    let until = Instant::now() + POLL_WAIT;
    while k.kept.is_empty() && !k.closed && !ctx.stopping() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        k = ready
            .wait_timeout(k, left.min(TICK))
            .expect("no panics under this lock")
            .0;
    }
    let batch: Vec<Vec<u8>> = k.kept.iter().take(BATCH).cloned().collect();
    let closed = k.closed && batch.len() == k.kept.len();
    proto::callbacks_batch(k.first, closed, &batch)
}

fn connect(ctx: &Arc<Ctx>, name: &str, payload: &[u8]) -> Result<(Carried, Vec<u8>), String> {
    let (connection, welcome) = Client::connect(name, payload, Deadline::after(CONNECT_TIMEOUT))
        .map_err(|e| format!("service {name:?}: {e}"))?;
    let (wake, woken) = UnixDatagram::pair().map_err(|e| format!("service {name:?}: {e}"))?;
    woken
        .set_nonblocking(true)
        .and_then(|()| wake.set_nonblocking(true))
        .map_err(|e| format!("service {name:?}: {e}"))?;
    let (calls, incoming) = mpsc::channel();
    let kept: Kept = Arc::default();
    let (task, owned) = (Arc::clone(ctx), Arc::clone(&kept));
    std::thread::Builder::new()
        .name(format!("serve {name}"))
        .spawn(move || own_connection(&task, connection, &incoming, &woken, &owned))
        .map_err(|e| format!("service {name:?}: {e}"))?;
    let carried = Carried {
        calls,
        wake,
        callbacks: kept,
        used: Instant::now(),
    };
    Ok((carried, welcome))
}

fn reply(ctx: &Ctx, query: &Query, result: Result<Vec<u8>, String>) {
    let sent = match result {
        Ok(bytes) => query.reply(query.key_expr().clone(), bytes).wait(),
        Err(text) => query.reply_err(text).wait(),
    };
    if let Err(e) = sent {
        ctx.log(&format!("service {}: cannot reply: {e}", query.key_expr()));
    }
}

pub(crate) fn export(ctx: &Arc<Ctx>, object: &Object) {
    let name = object.name.clone();
    let mut once = Once::default();
    let queryable = loop {
        match ctx
            .session
            .declare_queryable(object.key_expr())
            .complete(true)
            .wait()
        {
            Ok(q) => break q,
            Err(e) => once.log(ctx, format!("export service {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    let connections: Shared = Arc::default();
    while !ctx.stopping() {
        let query = match queryable.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(query)) => query,
            Ok(None) => {
                let now = Instant::now();
                connections
                    .lock()
                    .expect("no panics under this lock")
                    .retain(|_, c| now.duration_since(c.used) < IDLE);
                continue;
            }
            Err(_) => return,
        };
        let header = query
            .attachment()
            .and_then(|a| proto::parse_service_header(&a.to_bytes()));
        let payload = query
            .payload()
            .map(|p| p.to_bytes().into_owned())
            .unwrap_or_default();
        let (task, name, connections) = (Arc::clone(ctx), name.clone(), Arc::clone(&connections));
        // Calls may take long: each on its own thread, so one slow call holds up no other.
        let spawned = std::thread::Builder::new()
            .name(format!("call {name}"))
            .spawn(move || {
                let result = match header {
                    None => Client::connect(&name, b"", Deadline::after(CONNECT_TIMEOUT))
                        .and_then(|(mut c, _)| c.call(&payload, Deadline::after(CALL_TIMEOUT)))
                        .map_err(|e| format!("service {name:?}: {e}")),
                    Some((Op::Connect, id)) => {
                        connect(&task, &name, &payload).map(|(carried, welcome)| {
                            connections
                                .lock()
                                .expect("no panics under this lock")
                                .insert(id, carried);
                            welcome
                        })
                    }
                    Some((Op::Call, id)) => call(&connections, &name, &id, payload),
                    Some((Op::Poll, id)) => {
                        let kept = connections
                            .lock()
                            .expect("no panics under this lock")
                            .get_mut(&id)
                            .map(|c| {
                                c.used = Instant::now();
                                Arc::clone(&c.callbacks)
                            });
                        let from = payload.get(..8).and_then(|b| b.try_into().ok());
                        match (kept, from) {
                            (Some(kept), Some(from)) => {
                                Ok(poll(&task, &kept, u64::from_le_bytes(from)))
                            }
                            _ => Err(format!("service {name:?}: no such connection")),
                        }
                    }
                    Some((Op::Close, id)) => {
                        connections
                            .lock()
                            .expect("no panics under this lock")
                            .remove(&id);
                        Ok(Vec::new())
                    }
                };
                if result.is_ok()
                    && !matches!(header, Some((Op::Close | Op::Connect | Op::Poll, _)))
                {
                    Counters::add(&task.counters.delivered, 1);
                }
                reply(&task, &query, result);
            });
        if let Err(e) = spawned {
            ctx.log(&format!("export service {}: {e}", object.name));
        }
    }
}

/// A call on a carried connection. The answer is how many callbacks the server had sent
/// before its reply (8 bytes), then the reply.
fn call(
    connections: &Shared,
    name: &str,
    id: &[u8; 16],
    payload: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let (answer, answered) = mpsc::channel();
    {
        let mut all = connections.lock().expect("no panics under this lock");
        let Some(c) = all.get_mut(id) else {
            return Err(format!("service {name:?}: no such connection"));
        };
        c.used = Instant::now();
        if c.calls.send((payload, answer)).is_err() {
            all.remove(id);
            return Err(format!("service {name:?}: the connection has ended"));
        }
        // A full wake socket already holds a wake-up.
        let _ = c.wake.send(&[1]);
    }
    let result = match answered.recv_timeout(CALL_TIMEOUT + TICK) {
        Ok(Ok((reply, before))) => {
            let mut out = before.to_le_bytes().to_vec();
            out.extend_from_slice(&reply);
            return Ok(out);
        }
        Ok(Err(e)) => Err(format!("service {name:?}: {e}")),
        Err(_) => Err(format!("service {name:?}: the connection has ended")),
    };
    connections
        .lock()
        .expect("no panics under this lock")
        .remove(id);
    result
}

/// How long a poll for callbacks may go unanswered before the connection is given up (past
/// Zenoh's lease, so a link down for a while and restored keeps it).
const UNANSWERED_LIMIT: Duration = Duration::from_secs(30);

/// `ask`'s reason when no exporting bridge answered (as opposed to an error it replied).
fn unanswered(why: &str) -> bool {
    why.starts_with(UNANSWERED) || why.starts_with("zenoh get on")
}

const UNANSWERED: &str = "no bridge exports";

/// Asks the exporting bridge; `Err` carries the reason (an error reply, or nobody answered).
fn ask(
    ctx: &Ctx,
    key: &str,
    op: Op,
    id: &[u8; 16],
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let replies = ctx
        .session
        .get(key)
        .payload(payload.to_vec())
        .attachment(proto::service_header(op, id))
        .target(QueryTarget::BestMatching)
        .timeout(timeout)
        .wait()
        .map_err(|e| format!("zenoh get on {key}: {e}"))?;
    let reply = replies
        .recv()
        .map_err(|_| format!("{UNANSWERED} {key} (or it did not answer in {timeout:?})"))?;
    match reply.result() {
        Ok(sample) => Ok(sample.payload().to_bytes().into_owned()),
        Err(error) => Err(String::from_utf8_lossy(&error.payload().to_bytes()).into_owned()),
    }
}

pub(crate) fn import(ctx: &Arc<Ctx>, object: &Object) {
    let name = &object.name;
    let key = object.key_expr();
    let mut once = Once::default();
    let server = loop {
        match Server::bind(name, 0o600) {
            Ok(server) => break server,
            Err(e) => once.log(ctx, format!("import service {name}: {e}; trying again")),
        }
        if !ctx.pause(Duration::from_secs(1)) {
            return;
        }
    };
    // `accept` has no deadline: a thread of its own, which the process's end takes down.
    let (tx, rx) = std::sync::mpsc::channel();
    let accepting = {
        let name = name.clone();
        std::thread::Builder::new()
            .name(format!("accept {name}"))
            .spawn(move || loop {
                let pending = server.accept();
                if tx.send(pending).is_err() {
                    return;
                }
            })
    };
    if let Err(e) = accepting {
        ctx.log(&format!("import service {name}: {e}"));
        return;
    }
    while !ctx.stopping() {
        let pending = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(pending)) => pending,
            // A probe (`ipckit ls` checks that the port is served) connects and leaves.
            Ok(Err(ipckit::Error::Disconnected)) => continue,
            Ok(Err(e)) => {
                once.log(ctx, format!("import service {name}: accept: {e}"));
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let (task, key, name) = (Arc::clone(ctx), key.clone(), name.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("carry {name}"))
            .spawn(move || {
                let id = proto::random_id();
                let welcome = match ask(
                    &task,
                    &key,
                    Op::Connect,
                    &id,
                    pending.payload(),
                    CONNECT_TIMEOUT,
                ) {
                    Ok(welcome) => welcome,
                    Err(why) => {
                        let _ = pending.refuse(&why);
                        return;
                    }
                };
                let Ok(connection) = pending.accept(&welcome) else {
                    let _ = ask(&task, &key, Op::Close, &id, b"", CONNECT_TIMEOUT);
                    return;
                };
                carry(&task, &key, &name, id, connection);
                let _ = ask(&task, &key, Op::Close, &id, b"", CONNECT_TIMEOUT);
            });
        if let Err(e) = spawned {
            ctx.log(&format!("import service {}: {e}", object.name));
        }
    }
}

/// What the helpers of an importing bridge's connection tell the thread that owns it.
enum Event {
    /// Callbacks from position `first` on; `closed`: the server's connection has ended.
    Callbacks {
        first: u64,
        closed: bool,
        messages: Vec<Vec<u8>>,
    },
    /// The answer to request `id`: the reply, and how many callbacks came before it.
    Reply {
        id: u64,
        result: Result<(Vec<u8>, u64), String>,
    },
}

/// The importing bridge's side of one carried connection: this thread owns the local
/// connection; a caller thread carries the requests, in order, and a poller brings the
/// callbacks. A reply is handed to the client only after the callbacks that came before it.
fn carry(ctx: &Arc<Ctx>, key: &str, name: &str, id: [u8; 16], mut connection: Connection) {
    let Ok((wake, woken)) = UnixDatagram::pair() else {
        return;
    };
    if woken.set_nonblocking(true).is_err() || wake.set_nonblocking(true).is_err() {
        return;
    }
    let mut set = WaitSet::new();
    if set.add(&connection).is_err() || set.add_fd(&woken).is_err() {
        return;
    }
    let (events, incoming) = mpsc::channel::<Event>();
    let (requests, to_call) = mpsc::channel::<(u64, Vec<u8>)>();
    let done = Arc::new(AtomicBool::new(false));
    let helpers = {
        let Ok(poll_wake) = wake.try_clone() else {
            return;
        };
        let (task, poll_key, poll_events, poll_done) = (
            Arc::clone(ctx),
            key.to_string(),
            events.clone(),
            Arc::clone(&done),
        );
        let poller = std::thread::Builder::new()
            .name(format!("callbacks {name}"))
            .spawn(move || {
                let mut from = 0u64;
                let mut answered = Instant::now();
                while !task.stopping() && !poll_done.load(Ordering::Relaxed) {
                    let asked = ask(
                        &task,
                        &poll_key,
                        Op::Poll,
                        &id,
                        &from.to_le_bytes(),
                        POLL_WAIT * 3,
                    );
                    if let Err(why) = &asked {
                        // Nobody answered (a link down, a peer not found again yet): the
                        // exporting bridge keeps the connection and its callbacks meanwhile.
                        if unanswered(why)
                            && answered.elapsed() < UNANSWERED_LIMIT
                            && task.pause(Duration::from_secs(1))
                        {
                            continue;
                        }
                    }
                    answered = Instant::now();
                    let batch = asked.ok().and_then(|b| proto::parse_callbacks_batch(&b));
                    let Some((first, closed, messages)) = batch else {
                        // The connection is not known there (or no answer for too long): it
                        // has ended.
                        let _ = poll_events.send(Event::Callbacks {
                            first: from,
                            closed: true,
                            messages: Vec::new(),
                        });
                        let _ = poll_wake.send(&[1]);
                        return;
                    };
                    from = first + messages.len() as u64;
                    let sent = poll_events.send(Event::Callbacks {
                        first,
                        closed,
                        messages,
                    });
                    let _ = poll_wake.send(&[1]);
                    if sent.is_err() || closed {
                        return;
                    }
                }
            });
        let (call_task, call_key, call_events) = (Arc::clone(ctx), key.to_string(), events);
        let Ok(call_wake) = wake.try_clone() else {
            return;
        };
        let caller = std::thread::Builder::new()
            .name(format!("calls {name}"))
            .spawn(move || {
                for (request, data) in to_call {
                    let result = ask(&call_task, &call_key, Op::Call, &id, &data, CALL_TIMEOUT)
                        .and_then(|answer| {
                            if answer.len() < 8 {
                                return Err("a short answer from the exporting bridge".to_string());
                            }
                            let before =
                                u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
                            Ok((answer[8..].to_vec(), before))
                        });
                    let failed = result.is_err();
                    let sent = call_events.send(Event::Reply {
                        id: request,
                        result,
                    });
                    let _ = call_wake.send(&[1]);
                    if sent.is_err() || failed {
                        return;
                    }
                }
            });
        (poller, caller)
    };
    if helpers.0.is_err() || helpers.1.is_err() {
        done.store(true, Ordering::Relaxed);
        return;
    }
    let mut delivered = 0u64; // the position of the next callback for the client
    let mut held: VecDeque<(u64, Vec<u8>, u64)> = VecDeque::new();
    let mut server_gone = false;
    'carry: while !ctx.stopping() {
        while woken.recv(&mut [0u8; 8]).is_ok() {}
        loop {
            match incoming.try_recv() {
                Ok(Event::Callbacks {
                    first,
                    closed,
                    messages,
                }) => {
                    for (at, message) in (first..).zip(messages) {
                        if at < delivered {
                            continue;
                        }
                        if connection
                            .callback(&message, Deadline::after(CALL_TIMEOUT))
                            .is_err()
                        {
                            break 'carry; // the client has gone, or reads no callbacks
                        }
                        Counters::add(&ctx.counters.delivered, 1);
                        delivered = at + 1;
                    }
                    server_gone |= closed;
                }
                Ok(Event::Reply {
                    id,
                    result: Ok((reply, before)),
                }) => held.push_back((id, reply, before)),
                Ok(Event::Reply {
                    result: Err(why), ..
                }) => {
                    // The client's API has no error reply: it sees the connection end.
                    ctx.log(&format!("import service {name}: {why}"));
                    break 'carry;
                }
                Err(_) => break,
            }
        }
        // Replies in order, each once the callbacks before it are the client's (all of them
        // once no more callbacks can come).
        while let Some((request, reply, before)) = held.front() {
            if *before > delivered && !server_gone {
                break;
            }
            if connection.reply(*request, reply).is_err() {
                break 'carry;
            }
            held.pop_front();
        }
        if server_gone && held.is_empty() {
            break;
        }
        match connection.next_request(Deadline::Now) {
            Ok(request) => {
                Counters::add(&ctx.counters.forwarded, 1);
                Counters::add(&ctx.counters.bytes, request.data.len() as u64);
                if requests.send((request.id, request.data)).is_err() {
                    break;
                }
                continue;
            }
            Err(e) if e.is_transient() => {}
            Err(_) => break, // the client has gone
        }
        let _ = set.wait(Deadline::after(TICK));
    }
    done.store(true, Ordering::Relaxed);
}
