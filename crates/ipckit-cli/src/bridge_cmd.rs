//! `ipckit bridge`: this host's mailboxes, topics and services, joined to other hosts'
//! through Zenoh (the `ipckit-bridge` crate; cargo feature `bridge`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Options of `ipckit bridge`.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("carry")
        .args(["export", "import", "status"])
        .multiple(true)
        .required(true)
))]
pub struct BridgeArgs {
    /// Listen for peers on a Zenoh endpoint (tcp/0.0.0.0:7447); repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen: Vec<String>,
    /// Connect to a peer (tcp/192.0.2.2:7447), and keep reconnecting; repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Vec<String>,
    /// A Zenoh configuration file (JSON5) to start from.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Offer this host's object to the others: mailbox:NAME, topic:NAME, service:NAME.
    #[arg(long, value_name = "KIND:NAME", value_parser = parse_spec)]
    pub export: Vec<String>,
    /// Make another host's object usable here (a mailbox or topic is created if absent).
    #[arg(long, value_name = "KIND:NAME", value_parser = parse_spec)]
    pub import: Vec<String>,
    /// Messages of each imported mailbox carried at once (default 1: each stays in its
    /// mailbox until the other host has it; more, up to 4096: through an outbox in the state
    /// directory, about ten times the rate).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub window: Option<u16>,
    /// Where the bridge keeps its delivery records and status (default /run/ipckit-bridge
    /// for root, else $XDG_RUNTIME_DIR/ipckit-bridge).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the counters of the bridge running with this state directory, and exit.
    #[arg(long, conflicts_with_all = ["listen", "connect", "config", "export", "import", "window"])]
    pub status: bool,
}

/// `KIND:NAME` with a kind a bridge carries and a name of `A-Z a-z 0-9 . _ -`.
fn parse_spec(spec: &str) -> Result<String, String> {
    let (kind, name) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec:?} is not KIND:NAME (mailbox:jobs)"))?;
    if !["mailbox", "topic", "service"].contains(&kind) {
        return Err(format!(
            "{kind:?} is not a kind a bridge carries: mailbox, topic or service"
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(format!(
            "{name:?} must be 1 to 200 of A-Z a-z 0-9 . _ - to cross a bridge"
        ));
    }
    Ok(spec.to_string())
}

/// The status a bridge keeps in its state directory, as `ipckit bridge --status` and
/// `ipckit ls` read it (the fields of `ipckit_bridge::Status`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct BridgeStatus {
    pub pid: u32,
    pub zid: String,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub peers: Vec<String>,
    pub forwarded: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub delivered: u64,
    pub duplicates_dropped: u64,
    pub bytes: u64,
    pub outbox: u64,
}

/// The default state directory (as `ipckit_bridge::default_state_dir`).
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

/// The status of the bridge that uses `dir`, if one is running.
pub fn running(dir: &std::path::Path) -> Option<BridgeStatus> {
    let text = std::fs::read(dir.join("status.json")).ok()?;
    let status: BridgeStatus = serde_json::from_slice(&text).ok()?;
    let alive = status.pid != 0 && std::path::Path::new(&format!("/proc/{}", status.pid)).exists();
    alive.then_some(status)
}

/// The end of `ipckit ls`: what the bridge running on this host (default state directory)
/// carries, and its peers.
pub fn ls_section() -> Result<()> {
    let Some(s) = running(&default_state_dir()) else {
        return Ok(());
    };
    outln!()?;
    outln!(
        "bridge pid {}, zenoh id {}, {} peer(s) {}",
        s.pid,
        s.zid,
        s.peers.len(),
        s.peers.join(" ")
    )?;
    outln!("  exported  {}", s.exports.join(" "))?;
    outln!("  imported  {}", s.imports.join(" "))?;
    Ok(())
}

/// The bridge's entry at the end of `ipckit ls --json` (docs/CLI.md): the fields every
/// entry has (`kind` `"bridge"`, `name` its Zenoh id, `alive` 1), then what it carries.
pub fn ls_json_entry() -> Option<serde_json::Value> {
    let s = running(&default_state_dir())?;
    Some(serde_json::json!({
        "kind": "bridge",
        "name": s.zid,
        "depth": null,
        "capacity": null,
        "capacity_text": null,
        "overflow": null,
        "bytes": null,
        "mode": null,
        "alive": 1,
        "dead": 0,
        "error": null,
        "held": [],
        "sources": [],
        "pid": s.pid,
        "exports": s.exports,
        "imports": s.imports,
        "peers": s.peers,
    }))
}

fn print_status(dir: &std::path::Path) -> Result<()> {
    let Some(s) = running(dir) else {
        anyhow::bail!(
            "no bridge is running with state directory {} (start one with ipckit bridge, or \
             name its directory with --state-dir)",
            dir.display()
        );
    };
    outln!("bridge             pid {}, zenoh id {}", s.pid, s.zid)?;
    outln!("exports            {}", s.exports.join(" "))?;
    outln!("imports            {}", s.imports.join(" "))?;
    outln!("peers              {} {}", s.peers.len(), s.peers.join(" "))?;
    outln!("forwarded          {}", s.forwarded)?;
    outln!("acked              {}", s.acked)?;
    outln!("redelivered        {}", s.redelivered)?;
    outln!("delivered          {}", s.delivered)?;
    outln!("duplicates dropped {}", s.duplicates_dropped)?;
    outln!("bytes forwarded    {}", s.bytes)?;
    outln!("in outboxes        {}", s.outbox)?;
    Ok(())
}

/// Runs `ipckit bridge`.
pub fn bridge(args: BridgeArgs) -> Result<()> {
    let dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    if args.status {
        return print_status(&dir);
    }
    run(args, dir)
}

#[cfg(feature = "bridge")]
fn run(args: BridgeArgs, dir: PathBuf) -> Result<()> {
    use ipckit::signal::{Signal, Signals};
    use ipckit_bridge::{Bridge, Object};

    let mut builder = Bridge::builder().state_dir(&dir);
    for endpoint in &args.listen {
        builder = builder.listen(endpoint);
    }
    for endpoint in &args.connect {
        builder = builder.connect(endpoint);
    }
    if let Some(config) = &args.config {
        builder = builder.config_file(config);
    }
    if let Some(window) = args.window {
        builder = builder.mailbox_window(usize::from(window));
    }
    for spec in &args.export {
        builder = builder.export(Object::parse(spec)?);
    }
    for spec in &args.import {
        builder = builder.import(Object::parse(spec)?);
    }
    // Ctrl-C or SIGTERM stop it cleanly: the session closed (its peers see it go at once),
    // a mailbox message in flight left in its mailbox, the status file removed. SIGKILL is
    // safe too, only less tidy.
    let mut signals = Signals::new(&[Signal::INT, Signal::TERM])?;
    let bridge = builder.start()?;
    let stopper = bridge.stopper();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            stopper.stop();
        }
    });
    let status = bridge.status();
    eprintln!(
        "ipckit: bridge {} running (exports: {}; imports: {}; state in {}); stop with Ctrl-C",
        status.zid,
        status.exports.join(" "),
        status.imports.join(" "),
        dir.display()
    );
    bridge.wait();
    eprintln!("ipckit: bridge stopped");
    Ok(())
}

#[cfg(not(feature = "bridge"))]
fn run(_args: BridgeArgs, _dir: PathBuf) -> Result<()> {
    anyhow::bail!(
        "this ipckit was built without the bridge: cargo install --path crates/ipckit-cli \
         --features bridge"
    )
}
