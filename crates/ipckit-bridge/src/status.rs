//! Counters, and the status file `ipckit bridge --status` reads.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zenoh::Wait;

use crate::{Ctx, Error, Result};

/// The status file's name in the state directory.
pub(crate) const STATUS_FILE: &str = "status.json";

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) forwarded: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Messages in imported mailboxes' outboxes now (taken from the mailbox, not yet
    /// acknowledged): a gauge, not a counter.
    pub(crate) outbox: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A bridge's counters, peers and objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// The bridge's process id.
    pub pid: u32,
    /// Its Zenoh id.
    pub zid: String,
    /// Objects it exports, `KIND:NAME`.
    pub exports: Vec<String>,
    /// Objects it imports, `KIND:NAME`.
    pub imports: Vec<String>,
    /// The Zenoh ids of the peers it is connected to now.
    pub peers: Vec<String>,
    /// Messages, topic samples and service calls it sent to other hosts (each once, not
    /// counting resends).
    pub forwarded: u64,
    /// Mailbox messages another host acknowledged (and that left the local mailbox).
    pub acked: u64,
    /// Mailbox messages it sent again (no acknowledgement in time, the other side full).
    pub redelivered: u64,
    /// Mailbox messages, topic samples, service calls and the servers' callbacks it
    /// delivered on this host.
    pub delivered: u64,
    /// Mailbox messages it was given again and dropped, having delivered them already.
    pub duplicates_dropped: u64,
    /// Payload bytes it sent to other hosts.
    pub bytes: u64,
    /// Mailbox messages waiting in its outboxes now (with a window: taken from their
    /// mailbox, not yet acknowledged).
    #[serde(default)]
    pub outbox: u64,
}

impl Status {
    /// Reads the status file a running bridge keeps in `state_dir` (rewritten every 500 ms).
    ///
    /// # Errors
    /// [`Error::State`] if there is none (no bridge ever ran with that directory) or it
    /// cannot be read.
    pub fn read(state_dir: &Path) -> Result<Status> {
        let path = state_dir.join(STATUS_FILE);
        let text = std::fs::read(&path).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| Error::State {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// True if the process that wrote this status is still running.
    pub fn is_running(&self) -> bool {
        self.pid != 0 && Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

pub(crate) fn snapshot(ctx: &Ctx) -> Status {
    let c = &ctx.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut peers: Vec<String> = ctx
        .session
        .info()
        .peers_zid()
        .wait()
        .map(|z| z.to_string())
        .collect();
    peers.sort();
    Status {
        pid: std::process::id(),
        zid: ctx.session.zid().to_string(),
        exports: ctx.exports.clone(),
        imports: ctx.imports.clone(),
        peers,
        forwarded: get(&c.forwarded),
        acked: get(&c.acked),
        redelivered: get(&c.redelivered),
        delivered: get(&c.delivered),
        duplicates_dropped: get(&c.duplicates),
        bytes: get(&c.bytes),
        outbox: get(&c.outbox),
    }
}

pub(crate) fn keep_written(ctx: &Ctx) {
    let mut last_error = String::new();
    loop {
        let status = snapshot(ctx);
        let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
        if let Err(e) = ctx.state.replace(STATUS_FILE, &json) {
            let text = e.to_string();
            if text != last_error {
                ctx.log(&format!("cannot write the status file: {text}"));
                last_error = text;
            }
        }
        if !ctx.pause(Duration::from_millis(500)) {
            let _ = std::fs::remove_file(ctx.state.path(STATUS_FILE));
            return;
        }
    }
}
