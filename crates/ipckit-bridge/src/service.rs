//! Services across hosts. The importing bridge binds the service's connection port on its
//! host and carries each accepted connection to the exporting bridge, which connects to the
//! real server as a client: connect (with the client's payload; the server's welcome or
//! refusal comes back), one query per call, close when the client goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipckit::service::{Client, Connection, Server};
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

type Shared = Arc<Mutex<HashMap<[u8; 16], (Arc<Mutex<Connection>>, Instant)>>>;

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
                    .retain(|_, (_, used)| now.duration_since(*used) < IDLE);
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
                        match Client::connect(&name, &payload, Deadline::after(CONNECT_TIMEOUT)) {
                            Ok((connection, welcome)) => {
                                connections
                                    .lock()
                                    .expect("no panics under this lock")
                                    .insert(id, (Arc::new(Mutex::new(connection)), Instant::now()));
                                Ok(welcome)
                            }
                            Err(e) => Err(format!("service {name:?}: {e}")),
                        }
                    }
                    Some((Op::Call, id)) => {
                        let connection = connections
                            .lock()
                            .expect("no panics under this lock")
                            .get_mut(&id)
                            .map(|(c, used)| {
                                *used = Instant::now();
                                Arc::clone(c)
                            });
                        match connection {
                            None => Err(format!("service {name:?}: no such connection")),
                            Some(c) => {
                                let result = c
                                    .lock()
                                    .expect("no panics under this lock")
                                    .call(&payload, Deadline::after(CALL_TIMEOUT));
                                if result.is_err() {
                                    connections
                                        .lock()
                                        .expect("no panics under this lock")
                                        .remove(&id);
                                }
                                result.map_err(|e| format!("service {name:?}: {e}"))
                            }
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
                if result.is_ok() && !matches!(header, Some((Op::Close | Op::Connect, _))) {
                    Counters::add(&task.counters.delivered, 1);
                }
                reply(&task, &query, result);
            });
        if let Err(e) = spawned {
            ctx.log(&format!("export service {}: {e}", object.name));
        }
    }
}

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
        .map_err(|_| format!("no bridge exports {key} (or it did not answer in {timeout:?})"))?;
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
                let Ok(mut connection) = pending.accept(&welcome) else {
                    let _ = ask(&task, &key, Op::Close, &id, b"", CONNECT_TIMEOUT);
                    return;
                };
                while !task.stopping() {
                    let request = match connection
                        .next_request(Deadline::after(Duration::from_millis(200)))
                    {
                        Ok(request) => request,
                        Err(e) if e.is_transient() => continue,
                        Err(_) => break, // the client has gone
                    };
                    Counters::add(&task.counters.forwarded, 1);
                    Counters::add(&task.counters.bytes, request.data.len() as u64);
                    match ask(&task, &key, Op::Call, &id, &request.data, CALL_TIMEOUT) {
                        Ok(answer) => {
                            if connection.reply(request.id, &answer).is_err() {
                                break;
                            }
                        }
                        Err(why) => {
                            // The client's API has no error reply: it sees the connection end.
                            task.log(&format!("import service {name}: {why}"));
                            break;
                        }
                    }
                }
                let _ = ask(&task, &key, Op::Close, &id, b"", CONNECT_TIMEOUT);
            });
        if let Err(e) = spawned {
            ctx.log(&format!("import service {}: {e}", object.name));
        }
    }
}
