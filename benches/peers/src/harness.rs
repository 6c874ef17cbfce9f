//! What every row shares: the message pattern, the client and server loops, the server
//! process with its watchdog, CPU pinning and the statistics.

use std::error::Error;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Every message is this long.
pub const MSG: usize = 64;

pub type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The two measurements, each with its own server process and its own channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Client sends, server echoes, client checks.
    Rtt,
    /// Server streams, client receives and checks.
    Tput,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Rtt => "rtt",
            Phase::Tput => "tput",
        }
    }

    pub fn parse(s: &str) -> Res<Phase> {
        match s {
            "rtt" => Ok(Phase::Rtt),
            "tput" => Ok(Phase::Tput),
            _ => Err(format!("unknown phase {s:?}").into()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Measured round trips.
    pub rounds: usize,
    /// Round trips before measuring (caches, page faults, the scheduler settling).
    pub warmup: usize,
    /// Messages streamed in the throughput phase.
    pub messages: usize,
    /// How long one phase may take before the server is killed.
    pub timeout: Duration,
    /// CPUs for the client and the server, when there are two to pin to.
    pub cpus: Option<(usize, usize)>,
}

impl Config {
    /// Messages the server handles in `phase` (both sides know it, so no stop message).
    pub fn count(&self, phase: Phase) -> usize {
        match phase {
            Phase::Rtt => self.warmup + self.rounds,
            Phase::Tput => self.messages,
        }
    }
}

/// What the server process is told on its command line.
#[derive(Clone, Copy, Debug)]
pub struct ServerCtx {
    pub phase: Phase,
    pub count: usize,
    /// Every blocking call that takes a deadline gets this one.
    pub deadline: Instant,
    pub timeout: Duration,
}

/// Writes message `seq`: the sequence number, then bytes derived from it, so a stale,
/// reordered or torn message fails the check.
pub fn fill(msg: &mut [u8; MSG], seq: u64) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut msg[8..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Checks that `got` is exactly message `seq`.
pub fn check(got: &[u8], seq: u64) -> Res<()> {
    let mut want = [0u8; MSG];
    fill(&mut want, seq);
    if got == want {
        return Ok(());
    }
    let got_seq = got
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    Err(format!(
        "message {seq} is wrong: {} bytes, sequence {got_seq:?}",
        got.len()
    )
    .into())
}

/// What a client measured.
pub enum Outcome {
    /// Round-trip times in ns, warm-up excluded.
    Rtt(Vec<u64>),
    /// Messages per second, receiver's clock, first to last message.
    Tput(f64),
}

/// A phase set up in the client process, before the server is started.
pub struct Prepared {
    /// Tells the server what to connect to.
    pub server_args: Vec<String>,
    /// The measuring side.
    pub client: Box<dyn FnOnce() -> Res<Outcome>>,
    /// Runs after the phase whatever happened (names left in /dev/shm or /tmp).
    pub cleanup: Box<dyn FnOnce() + Send>,
}

impl Prepared {
    pub fn new(
        server_args: Vec<String>,
        client: impl FnOnce() -> Res<Outcome> + 'static,
        cleanup: impl FnOnce() + Send + 'static,
    ) -> Prepared {
        Prepared {
            server_args,
            client: Box::new(client),
            cleanup: Box::new(cleanup),
        }
    }
}

/// Round trips: send message `seq`, wait for the echo, check it.
pub fn rtt_client(
    cfg: &Config,
    mut round_trip: impl FnMut(&[u8; MSG], &mut Vec<u8>) -> Res<()>,
) -> Res<Outcome> {
    let mut msg = [0u8; MSG];
    let mut reply = Vec::with_capacity(MSG);
    let mut rtts = Vec::with_capacity(cfg.rounds);
    for seq in 0..cfg.count(Phase::Rtt) as u64 {
        fill(&mut msg, seq);
        let start = Instant::now();
        round_trip(&msg, &mut reply)?;
        let ns = start.elapsed().as_nanos() as u64;
        check(&reply, seq)?;
        if seq >= cfg.warmup as u64 {
            rtts.push(ns);
        }
    }
    Ok(Outcome::Rtt(rtts))
}

/// Receives the stream, checking every message, and times it from first to last.
pub fn tput_receiver(cfg: &Config, mut recv: impl FnMut(&mut Vec<u8>) -> Res<()>) -> Res<Outcome> {
    let n = cfg.messages as u64;
    if n < 2 {
        return Err("--messages must be at least 2".into());
    }
    let mut buf = Vec::with_capacity(MSG);
    recv(&mut buf)?;
    // The clock starts at the first arrival, so process start-up is not counted.
    let first = Instant::now();
    check(&buf, 0)?;
    for seq in 1..n {
        recv(&mut buf)?;
        check(&buf, seq)?;
    }
    let secs = first.elapsed().as_secs_f64();
    Ok(Outcome::Tput((n - 1) as f64 / secs))
}

/// The echo server: `echo_once` receives one message into the buffer and sends it back.
pub fn serve_echo(ctx: ServerCtx, mut echo_once: impl FnMut(&mut Vec<u8>) -> Res<()>) -> Res<()> {
    let mut buf = Vec::with_capacity(MSG);
    for _ in 0..ctx.count {
        echo_once(&mut buf)?;
    }
    Ok(())
}

/// The streaming server: sends messages 0..count, each written afresh.
pub fn serve_stream(ctx: ServerCtx, mut send: impl FnMut(&[u8; MSG]) -> Res<()>) -> Res<()> {
    let mut msg = [0u8; MSG];
    for seq in 0..ctx.count as u64 {
        fill(&mut msg, seq);
        send(&msg)?;
    }
    Ok(())
}

/// Runs one phase: sets it up, starts the server process, measures, cleans up.
///
/// Set-up and measurement run on a thread of their own (endpoints need not be `Send`),
/// so a client stuck in a call without a timeout cannot stop the run.
pub fn run_phase(
    mech: &str,
    phase: Phase,
    cfg: &Config,
    prepare: impl FnOnce(&str) -> Res<Prepared> + Send + 'static,
) -> Res<Outcome> {
    let tag = format!("{}-{mech}-{}", std::process::id(), phase.as_str());
    let (setup_tx, setup_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("client".into())
        .spawn(move || match prepare(&tag) {
            Err(e) => {
                let _ = setup_tx.send(Err(e));
            }
            Ok(Prepared {
                server_args,
                client,
                cleanup,
            }) => {
                let _ = setup_tx.send(Ok((server_args, cleanup)));
                let _ = result_tx.send(client());
            }
        })?;
    let (server_args, cleanup) = match setup_rx.recv_timeout(cfg.timeout) {
        Ok(setup) => setup?,
        Err(RecvTimeoutError::Timeout) => return Err("the set-up timed out".into()),
        Err(RecvTimeoutError::Disconnected) => return Err("the set-up panicked".into()),
    };
    let result = spawn_server(mech, phase, cfg, &server_args)
        .and_then(|child| supervise(child, cfg, result_rx));
    cleanup();
    result
}

fn spawn_server(mech: &str, phase: Phase, cfg: &Config, extra: &[String]) -> Res<Child> {
    let cpu = cfg
        .cpus
        .map_or_else(|| "-".to_string(), |(_, server)| server.to_string());
    let child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(mech)
        .arg(phase.as_str())
        .arg(cfg.count(phase).to_string())
        .arg(cfg.timeout.as_secs().max(1).to_string())
        .arg(cpu)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok(child)
}

/// Waits for the client thread, watching the server and the clock; the server is killed
/// on any error, which also unblocks a client waiting on a socket.
fn supervise(mut child: Child, cfg: &Config, rx: mpsc::Receiver<Res<Outcome>>) -> Res<Outcome> {
    let start = Instant::now();
    let mut server_done: Option<Instant> = None;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(r) => break r,
            Err(RecvTimeoutError::Disconnected) => break Err("the client thread panicked".into()),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if server_done.is_none() {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    break Err(format!("the server failed ({status})").into())
                }
                Ok(Some(_)) => server_done = Some(Instant::now()),
                Ok(None) => {}
                Err(e) => break Err(e.into()),
            }
        }
        if server_done.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            break Err("the server finished but the client did not".into());
        }
        if start.elapsed() > cfg.timeout {
            break Err(format!("timed out after {:?}", cfg.timeout).into());
        }
    };
    if result.is_err() {
        let _ = child.kill();
    }
    let status = wait_bounded(&mut child, Duration::from_secs(5));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let stderr = stderr.trim().replace('\n', "; ");
    let with_stderr = |msg: String| -> Box<dyn Error + Send + Sync> {
        if stderr.is_empty() {
            msg.into()
        } else {
            format!("{msg}; server said: {stderr}").into()
        }
    };
    match (result, status) {
        (Err(e), _) => Err(with_stderr(e.to_string())),
        (Ok(_), Some(s)) if !s.success() => Err(with_stderr(format!("the server failed ({s})"))),
        (Ok(_), None) => Err(with_stderr("the server did not exit".into())),
        (Ok(outcome), Some(_)) => Ok(outcome),
    }
}

/// Waits for the child at most `limit`, then kills it.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Ends the server process if the client process is gone or the phase overran, so no
/// server outlives a crashed or stuck run.
pub fn start_watchdog(timeout: Duration) {
    let parent = rustix::process::getppid();
    let start = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        if rustix::process::getppid() != parent {
            eprintln!("watchdog: the client process is gone");
            std::process::exit(3);
        }
        if start.elapsed() > timeout {
            eprintln!("watchdog: no end after {timeout:?}");
            std::process::exit(3);
        }
    });
}

/// The first two CPUs this process may run on, if there are two.
pub fn two_cpus() -> Option<(usize, usize)> {
    let allowed = rustix::thread::sched_getaffinity(None).ok()?;
    let mut cpus = (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c));
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread (and threads it starts later) to `cpu`.
pub fn pin(cpu: usize) -> Res<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// The value at quantile `q` of sorted `v`.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
