//! ipckit's mailboxes, topics and services across hosts, over [Eclipse Zenoh](https://zenoh.io).
//!
//! One bridge runs on each host. A host *exports* the objects that live there and *imports*
//! the ones that live elsewhere; programs on every host keep using the plain local
//! [`ipckit`] API, unchanged.
//!
//! ```no_run
//! use ipckit_bridge::Bridge;
//!
//! // host B, where the workers read `jobs` and the `calc` server runs
//! let bridge = Bridge::builder()
//!     .listen("tcp/0.0.0.0:7447")
//!     .export_mailbox("jobs")
//!     .export_service("calc")
//!     .start()?;
//! # drop(bridge);
//!
//! // host A, where the producers send into `jobs` and the clients call `calc`
//! let bridge = Bridge::builder()
//!     .connect("tcp/192.0.2.2:7447")
//!     .import_mailbox("jobs")
//!     .import_service("calc")
//!     .start()?;
//! bridge.wait();
//! # Ok::<(), ipckit_bridge::Error>(())
//! ```
//!
//! # Key expressions
//!
//! An object `NAME` of kind `KIND` (`mailbox`, `topic`, `service`) is the Zenoh key expression
//! `ipckit/KIND/NAME`; names are made of `A-Z a-z 0-9 . _ -`. A payload is always the
//! message's bytes, untouched; what the bridge adds travels in the Zenoh attachment, so a
//! program that is not ipckit can take part:
//!
//! - **mailbox** `ipckit/mailbox/NAME`: the exporting bridge is a queryable. A `get` whose
//!   payload is a message delivers it into the exporting host's mailbox; the reply is
//!   `delivered` or `duplicate`, or an error reply (`full`, `gap`, or a sentence). The
//!   attachment `ipk1` + source id (16 bytes) + position (u64, little-endian), or with a
//!   window `ipk2` + source + position + `prev_next` + `base` (u64 each), makes delivery
//!   idempotent and ordered; without it a message is simply delivered.
//! - **topic** `ipckit/topic/NAME`: every message is a `put`; the attachment `ipk1` + the
//!   publishing bridge's id (16 bytes) + messages that bridge missed just before it (u64) +
//!   the sample's number since that bridge started (u64; absent from older bridges) lets
//!   bridges ignore their own echoes, and the importing ones declare the missed messages,
//!   and any numbers that never arrived, as a gap in their topic, so that subscribers there
//!   see the same `missed` counts. Any Zenoh `put` on the key is published into the
//!   importing hosts' topics (without an attachment: no gap).
//! - **service** `ipckit/service/NAME`: the exporting bridge is a queryable. A plain `get`
//!   is one call on a fresh connection (payload: request; reply: the server's reply). The
//!   bridges themselves carry a whole connection: attachment `ipk1` + operation (`C`
//!   connect, `Q` call, `X` close, `P` poll for the server's callbacks) + connection id
//!   (16 bytes). A `Q` answer starts with how many callbacks (u64, little-endian) came before
//!   the reply; a `P` query's payload is the position of the next callback wanted, its answer
//!   the first position (u64), whether the server has gone (one byte), then each callback
//!   as its length (u32) and bytes.
//!
//! # Mailboxes: nothing confirmed lost, nothing duplicated
//!
//! The importing bridge is the local mailbox's single receiver. By default it reads each
//! message *in place* and sends it with its source id and its position in the mailbox
//! ([`ipckit::shm::mailbox::MailboxSample::mailbox_position`]: the ring position of a bounded
//! mailbox, and `ring << 32 | position` for an unbounded one, so that it grows through the
//! chain of rings); it releases the slot only when the
//! exporting bridge replies that the message is in its mailbox. Killed before that, it
//! leaves the message where it was, and the next importing bridge sends it again with the
//! same position. The exporting bridge delivers each source's messages as an
//! [idempotent source](ipckit::shm::mailbox::IdempotentSource) of its mailbox (through its
//! one sender, [`send_idempotent`](ipckit::shm::MailboxSender::send_idempotent)), which commits
//! the position in the mailbox together with the message: the next position it expects is
//! the mailbox's own record, which no kill can separate from the delivery (a mailbox send
//! followed by a file write could: killed between the two, the resent message arrived
//! twice). A position below it is acknowledged again and dropped. A file in its state
//! directory, written after each local send, seeds a fresh source entry (a mailbox made
//! again, a source evicted from the mailbox's table of 8). Bounded and unbounded mailboxes
//! alike: an unbounded one keeps the record in its root ring for every ring of its chain, the
//! send in flight named by ring and position. When the exporting host's mailbox is full the reply
//! is `full`, the importing bridge waits and retries, and the senders on the importing host
//! fill their own mailbox and block (or see `Full`) as they would with a local reader.
//!
//! That is one message per Zenoh round trip. With
//! [`BridgeBuilder::mailbox_window`]`(n)` the importing bridge instead appends each message
//! to an outbox file in its state directory before releasing its slot (a bridge killed in
//! between finds the position journaled and only releases it), keeps up to `n` in flight,
//! and takes them off the outbox as they are acknowledged, in order. Each carries the
//! position the exporting side must have reached before it (`prev_next`); a message whose
//! predecessor is missing there gets `gap`, and the importing bridge sends everything
//! unacknowledged again from the oldest. Messages then wait in the outbox, not in the
//! mailbox (up to `n` of them, as durable as the mailbox with the default state directory).
//!
//! What remains: a **rendezvous** exporting mailbox (which has no idempotent senders: a
//! rendezvous may take back a committed message), or one whose table of 8 sources is all
//! owned by live processes, is delivered into at least once (a crash of the exporting bridge
//! after its local send and before its file record delivers that message twice); bounded
//! and unbounded ones exactly once. A mailbox that existed before the
//! bridge and is not single-receiver loses the one message in flight when the importing
//! bridge is killed holding it (its slot is reclaimed as consumed); the bridge creates the
//! mailboxes it imports single-receiver (and bounded). An unbounded mailbox is imported as
//! it is: made `single_receiver()` it has the same guarantee as the bridge's own (its single
//! receiver's held message stays in its ring for the next, at the same mailbox position).
//! A message of an unbounded mailbox that has no mailbox position (past the `2^32`
//! positions of its ring, which only an older ipckit's sender publishes) is left in the
//! mailbox, and the bridge stops importing it, saying so in its log.
//!
//! The state directory's records last as long as its file system: with the default
//! (`/run/ipckit-bridge`, a tmpfs like `/dev/shm`) they live exactly as long as the mailboxes.
#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use zenoh::Wait;

mod journal;
mod mailbox;
mod proto;
mod service;
mod state;
mod status;
mod topic;

pub use status::Status;

/// What can go wrong starting a bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad argument: an object spec, a name, an endpoint.
    #[error("{0}")]
    InvalidArgument(String),
    /// Zenoh refused the configuration or could not open its session.
    #[error("zenoh: {0}")]
    Zenoh(String),
    /// The state directory could not be used.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory or file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// An ipckit operation failed.
    #[error(transparent)]
    Ipc(#[from] ipckit::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The three kinds of object a bridge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A [`ipckit::shm::Mailbox`].
    Mailbox,
    /// A [`ipckit::shm::Topic`].
    Topic,
    /// An [`ipckit::service`] server.
    Service,
}

impl Kind {
    /// `mailbox`, `topic` or `service`: the second level of the key expression.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mailbox => "mailbox",
            Kind::Topic => "topic",
            Kind::Service => "service",
        }
    }
}

/// A named object: `mailbox:jobs`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Object {
    /// Its kind.
    pub kind: Kind,
    /// Its name on every host.
    pub name: String,
}

impl Object {
    /// `kind` + `name`, with the name checked.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name that is empty, longer than 200 bytes or has a
    /// byte outside `A-Z a-z 0-9 . _ -` (the rest mean something in a key expression or a path).
    pub fn new(kind: Kind, name: &str) -> Result<Object> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "{} name {name:?} must be 1 to 200 of A-Z a-z 0-9 . _ - to cross a bridge",
                kind.as_str()
            )));
        }
        Ok(Object {
            kind,
            name: name.to_string(),
        })
    }

    /// Parses `KIND:NAME` (`mailbox:jobs`, `topic:temperature`, `service:calc`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what is wrong.
    pub fn parse(spec: &str) -> Result<Object> {
        let (kind, name) = spec.split_once(':').ok_or_else(|| {
            Error::InvalidArgument(format!("{spec:?} is not KIND:NAME (mailbox:jobs)"))
        })?;
        let kind = match kind {
            "mailbox" => Kind::Mailbox,
            "topic" => Kind::Topic,
            "service" => Kind::Service,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{other:?} is not a kind a bridge carries: mailbox, topic or service"
                )))
            }
        };
        Object::new(kind, name)
    }

    /// Its key expression, `ipckit/KIND/NAME`.
    pub fn key_expr(&self) -> String {
        format!("ipckit/{}/{}", self.kind.as_str(), self.name)
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// The default state directory: `/run/ipckit-bridge` for root, else
/// `$XDG_RUNTIME_DIR/ipckit-bridge`, else `$TMPDIR/ipckit-bridge-UID`.
pub fn default_state_dir() -> PathBuf {
    let uid = rustix::process::getuid();
    if uid.is_root() {
        return PathBuf::from("/run/ipckit-bridge");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("ipckit-bridge"),
        _ => std::env::temp_dir().join(format!("ipckit-bridge-{}", uid.as_raw())),
    }
}

/// Configures a [`Bridge`]: `Bridge::builder().connect("tcp/…").import_mailbox("jobs").start()`.
#[derive(Debug, Clone, Default)]
pub struct BridgeBuilder {
    listen: Vec<String>,
    connect: Vec<String>,
    config_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    exports: BTreeSet<Object>,
    imports: BTreeSet<Object>,
    window: Option<usize>,
    bad: Vec<String>,
}

impl BridgeBuilder {
    /// Listens on a Zenoh endpoint (`tcp/0.0.0.0:7447`); may be given several times.
    pub fn listen(mut self, endpoint: &str) -> Self {
        self.listen.push(endpoint.to_string());
        self
    }

    /// Connects to a peer's endpoint (`tcp/192.0.2.2:7447`), and keeps reconnecting.
    pub fn connect(mut self, endpoint: &str) -> Self {
        self.connect.push(endpoint.to_string());
        self
    }

    /// A Zenoh configuration file (JSON5) to start from; `listen`/`connect` add to it.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Where the bridge keeps its delivery records and its status (default
    /// [`default_state_dir`]). Two bridges on one host need two directories.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// How many messages of an imported mailbox are carried at once (default 1).
    ///
    /// 1: each message stays in its mailbox, held in place, until the exporting host has it
    /// (one message per Zenoh round trip). More: each message moves from the mailbox into the
    /// bridge's outbox in its state directory (written before the slot is released, so a
    /// kill loses nothing) and up to `n` are in flight at once, acknowledged in order —
    /// about ten times the rate, with up to `n` messages waiting in the outbox rather than
    /// in the mailbox. At most 4096.
    pub fn mailbox_window(mut self, n: usize) -> Self {
        if n == 0 || n > 4096 {
            self.bad.push(format!(
                "a mailbox window of {n}: it must be 1 to 4096 messages"
            ));
        } else {
            self.window = Some(n);
        }
        self
    }

    fn add(mut self, export: bool, kind: Kind, name: &str) -> Self {
        match Object::new(kind, name) {
            Ok(object) if export => {
                self.exports.insert(object);
            }
            Ok(object) => {
                self.imports.insert(object);
            }
            Err(e) => self.bad.push(e.to_string()),
        }
        self
    }

    /// Offers this host's object to the other hosts.
    pub fn export(self, object: Object) -> Self {
        self.add(true, object.kind, &object.name)
    }

    /// Makes another host's object usable here.
    pub fn import(self, object: Object) -> Self {
        self.add(false, object.kind, &object.name)
    }

    /// Offers this host's mailbox `name`: messages sent into it on importing hosts arrive here.
    pub fn export_mailbox(self, name: &str) -> Self {
        self.add(true, Kind::Mailbox, name)
    }

    /// Creates the local mailbox `name` (if absent) and carries its messages to the
    /// exporting host's mailbox, in order, each once.
    pub fn import_mailbox(self, name: &str) -> Self {
        self.add(false, Kind::Mailbox, name)
    }

    /// Publishes this host's topic `name` to every importing host.
    pub fn export_topic(self, name: &str) -> Self {
        self.add(true, Kind::Topic, name)
    }

    /// Creates the local topic `name` (if absent) and publishes into it what exporting hosts
    /// publish.
    pub fn import_topic(self, name: &str) -> Self {
        self.add(false, Kind::Topic, name)
    }

    /// Offers the service `name` served on this host.
    pub fn export_service(self, name: &str) -> Self {
        self.add(true, Kind::Service, name)
    }

    /// Serves `name` here on behalf of the host that exports it: local clients connect as
    /// usual and their calls are carried there.
    pub fn import_service(self, name: &str) -> Self {
        self.add(false, Kind::Service, name)
    }

    fn zenoh_config(&self) -> Result<zenoh::Config> {
        let mut config = match &self.config_file {
            Some(path) => zenoh::Config::from_file(path)
                .map_err(|e| Error::Zenoh(format!("config {}: {e}", path.display())))?,
            None => zenoh::Config::default(),
        };
        let list = |endpoints: &[String]| -> Result<String> {
            for endpoint in endpoints {
                if endpoint.parse::<zenoh::config::EndPoint>().is_err() {
                    return Err(Error::InvalidArgument(format!(
                        "{endpoint:?} is not a Zenoh endpoint (tcp/ADDRESS:PORT)"
                    )));
                }
            }
            Ok(format!(
                "[{}]",
                endpoints
                    .iter()
                    .map(|e| format!("{e:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ))
        };
        if !self.listen.is_empty() {
            config
                .insert_json5("listen/endpoints", &list(&self.listen)?)
                .map_err(|e| Error::Zenoh(e.to_string()))?;
        }
        if !self.connect.is_empty() {
            config
                .insert_json5("connect/endpoints", &list(&self.connect)?)
                .map_err(|e| Error::Zenoh(e.to_string()))?;
        }
        if self.config_file.is_none() {
            // A peer that goes away is tried again every second at most, so a restarted
            // bridge or a restored link is found again within the promised 10 s.
            let retry =
                r#"{ period_init_ms: 250, period_max_ms: 1000, period_increase_factor: 2 }"#;
            for key in ["connect/retry", "listen/retry"] {
                config
                    .insert_json5(key, retry)
                    .map_err(|e| Error::Zenoh(format!("{key}: {e}")))?;
            }
        }
        Ok(config)
    }

    /// Opens the Zenoh session and starts carrying every exported and imported object. Objects,
    /// servers and peers that are not there yet are looked for again every second.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or endpoint, [`Error::Zenoh`] if the session
    /// cannot open (an endpoint it cannot listen on), [`Error::State`] if the state directory
    /// cannot be made.
    pub fn start(self) -> Result<Bridge> {
        if let Some(bad) = self.bad.first() {
            return Err(Error::InvalidArgument(bad.clone()));
        }
        let config = self.zenoh_config()?;
        let state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        let state = state::StateDir::open(&state_dir)?;
        let session = zenoh::open(config)
            .wait()
            .map_err(|e| Error::Zenoh(e.to_string()))?;
        let ctx = Arc::new(Ctx {
            session,
            stop: AtomicBool::new(false),
            counters: status::Counters::default(),
            state,
            origin: proto::random_id(),
            exports: self.exports.iter().map(Object::to_string).collect(),
            imports: self.imports.iter().map(Object::to_string).collect(),
            window: self.window.unwrap_or(1),
        });
        let mut threads = Vec::new();
        for (export, object) in self
            .exports
            .iter()
            .map(|o| (true, o))
            .chain(self.imports.iter().map(|o| (false, o)))
        {
            let ctx = Arc::clone(&ctx);
            let object = object.clone();
            let name = format!("{} {object}", if export { "export" } else { "import" });
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || match (export, object.kind) {
                    (true, Kind::Mailbox) => mailbox::export(&ctx, &object),
                    (false, Kind::Mailbox) => mailbox::import(&ctx, &object),
                    (true, Kind::Topic) => topic::export(&ctx, &object),
                    (false, Kind::Topic) => topic::import(&ctx, &object),
                    (true, Kind::Service) => service::export(&ctx, &object),
                    (false, Kind::Service) => service::import(&ctx, &object),
                })
                .map_err(|e| Error::State {
                    path: state_dir.clone(),
                    source: e,
                })?;
            threads.push(thread);
        }
        {
            let ctx = Arc::clone(&ctx);
            threads.push(
                std::thread::Builder::new()
                    .name("status".into())
                    .spawn(move || status::keep_written(&ctx))
                    .map_err(|e| Error::State {
                        path: state_dir.clone(),
                        source: e,
                    })?,
            );
        }
        Ok(Bridge { ctx, threads })
    }
}

/// What every worker thread of a bridge shares.
pub(crate) struct Ctx {
    pub(crate) session: zenoh::Session,
    pub(crate) stop: AtomicBool,
    pub(crate) counters: status::Counters,
    pub(crate) state: state::StateDir,
    /// This bridge's id on the wire (topic echoes, service connections).
    pub(crate) origin: [u8; 16],
    pub(crate) exports: Vec<String>,
    pub(crate) imports: Vec<String>,
    /// Messages of an imported mailbox carried at once.
    pub(crate) window: usize,
}

impl Ctx {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d` in short steps; false if the bridge is stopping.
    pub(crate) fn pause(&self, d: Duration) -> bool {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() {
            if self.stopping() {
                return false;
            }
            let now = left.min(step);
            std::thread::sleep(now);
            left -= now;
        }
        !self.stopping()
    }

    pub(crate) fn log(&self, what: &str) {
        eprintln!("ipckit-bridge: {what}");
    }
}

/// A running bridge: a Zenoh session and one thread per exported or imported object.
/// Dropping it stops it.
pub struct Bridge {
    ctx: Arc<Ctx>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("zid", &self.ctx.session.zid().to_string())
            .field("exports", &self.ctx.exports)
            .field("imports", &self.ctx.imports)
            .finish()
    }
}

impl Bridge {
    /// Starts configuring a bridge.
    pub fn builder() -> BridgeBuilder {
        BridgeBuilder::default()
    }

    /// Counters, peers and objects, now.
    pub fn status(&self) -> Status {
        status::snapshot(&self.ctx)
    }

    /// Blocks for as long as the bridge runs: until a [`Stopper`] (see [`Bridge::stopper`])
    /// asks it to stop, or the process ends. Then stops it as [`Bridge::stop`] does.
    pub fn wait(self) {
        while !self.ctx.stopping() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A handle that stops the bridge from another thread (a signal handler's thread).
    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.ctx))
    }

    /// Stops every thread (a mailbox message in flight stays in its mailbox, unreleased)
    /// and closes the session.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.ctx.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = self.ctx.session.close().wait();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
        }
    }
}

/// Stops a [`Bridge`] from elsewhere: [`Bridge::wait`] then returns.
#[derive(Clone)]
pub struct Stopper(Arc<Ctx>);

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stopper")
    }
}

impl Stopper {
    /// Asks the bridge to stop.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}
