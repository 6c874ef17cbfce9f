//! The measuring loops, on both sides of a row: round trips (the parent sends, the peer
//! echoes) and streaming (the parent sends as fast as it can, the peer counts). Every message
//! carries its sequence number and a pattern derived from it; whoever receives a message checks
//! every byte, so a row cannot pass without the bytes really crossing.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipckit::shm::mailbox::Mailbox;
use ipckit::shm::pingpong::{Direction, Handoff, PingPong, RawRing};
use ipckit::shm::topic::{Overflow, Topic};
use ipckit::shm::WaitStrategy;
use ipckit::{Deadline, MessageReceiver, MessageSender};

use super::mechanisms::{self, Link, Mechanism, Phase, FANOUT, SENDERS};

/// How long a peer waits for anything before it gives up (it never hangs).
const PEER_PATIENCE: Duration = Duration::from_secs(10);

/// The environment variable through which the parent tells a peer how long, in milliseconds,
/// its whole phase may take: the phase's duration plus ample patience, so that any
/// `--duration` works (a fixed deadline made every row past 60 s fail).
const PEER_WAIT_ENV: &str = "IPCKIT_BENCH_PEER_WAIT_MS";

/// The current phase's duration in milliseconds, for [`Peer::start`] to hand on.
static PHASE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The one deadline of a peer's whole phase (read from the clock once): its duration, as the
/// parent said, plus a minute.
fn peer_deadline() -> Deadline {
    let phase = std::env::var(PEER_WAIT_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    Deadline::after(phase + PEER_PATIENCE * 6)
}

/// CPUs kept busy by everything else on the machine, measured over `window` while this run
/// sleeps (from `/proc/stat`: idle and iowait time is free; steal, time the hypervisor gave to
/// others, is busy). `None` where `/proc/stat` cannot be read.
pub fn cpus_busy(window: Duration) -> Option<f64> {
    /// (CPUs, busy ticks, all ticks) of the aggregate `cpu` line.
    fn sample() -> Option<(usize, u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpus = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let all: u64 = ticks.iter().take(8).sum();
        let free = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
        Some((cpus.max(1), all - free, all))
    }
    let (cpus, busy0, all0) = sample()?;
    std::thread::sleep(window);
    let (_, busy1, all1) = sample()?;
    let all = all1.checked_sub(all0).filter(|&a| a > 0)?;
    Some(busy1.saturating_sub(busy0) as f64 / all as f64 * cpus as f64)
}

/// What one phase of a row measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Round-trip times in nanoseconds (round-trip phase).
    pub rtts: Vec<u64>,
    /// Messages per second received (streaming phase).
    pub msgs_per_sec: Option<f64>,
}

/// Odd multipliers of the pattern: word `i > 0` of message `seq` is `seq * K1 + i * K2`.
const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xd1b5_4a32_d192_ed03;

/// Word `i` (8 bytes, little-endian) of message `seq`: the sequence number first, then words
/// that depend on both the sequence and the index. `K1` is odd, so two messages whose
/// sequences differ (modulo 2^64) differ in every word: a stale slot never passes.
#[inline(always)]
fn pattern_word(seq: u64, i: usize) -> u64 {
    if i == 0 {
        seq
    } else {
        seq.wrapping_mul(K1)
            .wrapping_add((i as u64).wrapping_mul(K2))
    }
}

/// Writes message `seq` into the whole of `slot` (at least 8 bytes), a word at a time.
pub fn write_pattern(slot: &mut [u8], seq: u64) {
    let last = pattern_word(seq, slot.len() / 8).to_le_bytes();
    let mut words = slot.chunks_exact_mut(8);
    for (i, word) in (&mut words).enumerate() {
        word.copy_from_slice(&pattern_word(seq, i).to_le_bytes());
    }
    let tail = words.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&last[..n]);
}

/// Writes message `seq` of `len` bytes (at least 8) into `buf`.
pub fn fill(buf: &mut Vec<u8>, seq: u64, len: usize) {
    buf.resize(len, 0);
    write_pattern(buf, seq);
}

/// Whether `msg` holds message `seq` in every byte (an OR of XORs: vectorised, no branch
/// per byte).
fn matches_pattern(msg: &[u8], seq: u64) -> bool {
    let words = msg.chunks_exact(8);
    let tail = words.remainder();
    let diff = words.enumerate().fold(0u64, |acc, (i, w)| {
        acc | (u64::from_le_bytes(w.try_into().expect("8 bytes")) ^ pattern_word(seq, i))
    });
    let last = pattern_word(seq, msg.len() / 8).to_le_bytes();
    diff == 0 && tail == &last[..tail.len()]
}

/// Checks that `msg` is exactly message `seq` of `len` bytes.
pub fn check(msg: &[u8], seq: u64, len: usize) -> Result<()> {
    if msg.len() != len || msg[..8] != seq.to_le_bytes() {
        bail!(
            "message {seq}: expected {len} bytes starting with its sequence number, got {} bytes",
            msg.len()
        );
    }
    if !matches_pattern(msg, seq) {
        bail!("message {seq}: its bytes differ from what was sent");
    }
    Ok(())
}

/// What writing and checking one message of `size` bytes costs in cache, in nanoseconds
/// (the median of several batches): every row pays this inside its figures.
pub fn calibrate(size: usize) -> f64 {
    let mut buf = Vec::with_capacity(size);
    let batch = (1 << 20) / size.max(64) + 16;
    let mut samples: Vec<f64> = (0..7u64)
        .map(|b| {
            let start = Instant::now();
            for seq in b * batch as u64..(b + 1) * batch as u64 {
                fill(&mut buf, seq, size);
                std::hint::black_box(&mut buf);
                let ok = check(&buf, seq, size).is_ok();
                std::hint::black_box(ok);
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The warm-up before each phase: run, unmeasured, for a quarter of the phase (at most
/// 100 ms), so that caches, branch predictors, page tables and CPU frequency settle.
pub fn warmup(duration: Duration) -> Duration {
    (duration / 4).min(Duration::from_millis(100))
}

/// Counts the messages a receiver takes after the warm-up: the clock is read on every
/// message during the warm-up only, then once at the end.
#[derive(Debug)]
struct RateMeter {
    warmup: Duration,
    first: Option<Instant>,
    /// When the measured part began.
    start: Option<Instant>,
    /// Messages since `start`.
    count: u64,
    /// Messages since `first`.
    total: u64,
}

impl RateMeter {
    fn new(warmup: Duration) -> RateMeter {
        RateMeter {
            warmup,
            first: None,
            start: None,
            count: 0,
            total: 0,
        }
    }

    #[inline]
    fn tick(&mut self) {
        self.total += 1;
        if self.start.is_some() {
            self.count += 1;
            return;
        }
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        if now - first >= self.warmup {
            self.start = Some(now);
            self.count = 1;
        }
    }

    /// `"done COUNT NANOS"`, as the parent's `parse_rate` reads it. A transport so slow (or
    /// a machine so busy) that fewer than two messages arrived after the warm-up is measured
    /// from its first message instead, warm-up included, rather than not at all.
    fn report(&self) -> String {
        let (count, since) = match self.start {
            Some(start) if self.count >= 2 => (self.count - 1, Some(start)),
            _ => (self.total.saturating_sub(1), self.first),
        };
        let nanos = since.map_or(0, |t| t.elapsed().as_nanos());
        format!("done {count} {nanos}")
    }
}

/// The sequence number a message carries (checked by [`check`]).
fn seq_of(msg: &[u8]) -> Option<u64> {
    msg.get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// A stop message: shorter than any measured message.
const STOP: &[u8] = b"stop";

/// Pins the calling process to `cpu`; on a machine without that CPU the kernel refuses and
/// the process stays where it was. (The count of CPUs cannot be asked here: a child inherits
/// its parent's affinity, which would hide the other CPUs.)
pub fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// A running peer process and the line channel it reports on (its stderr).
struct Peer {
    child: Child,
    reports: BufReader<ChildStderr>,
}

impl Peer {
    fn start(
        mechanism: Mechanism,
        phase: Phase,
        size: usize,
        arg: &str,
        prepared: Option<&mechanisms::Prepared>,
        warmup: Duration,
    ) -> Result<Peer> {
        let mut command = Command::new(std::env::current_exe().context("find the ipckit binary")?);
        command
            .args(["bench-peer", "--mechanism", mechanism.name()])
            .args(["--phase", phase.name()])
            .args(["--size", &size.to_string(), "--arg", arg])
            .env(
                PEER_WAIT_ENV,
                PHASE_MS
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
            )
            .args(["--warmup-ms", &warmup.as_millis().to_string()])
            .stderr(Stdio::piped());
        match prepared {
            Some(prepared) => mechanisms::configure_peer(prepared, &mut command),
            None => {
                command.stdin(Stdio::null()).stdout(Stdio::null());
            }
        }
        let mut child = command.spawn().context("start the peer process")?;
        let reports = BufReader::new(child.stderr.take().expect("stderr is piped"));
        Ok(Peer { child, reports })
    }

    /// The next report line that starts with `word`; the peer's errors end the row.
    fn expect(&mut self, word: &str) -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reports.read_line(&mut line)? == 0 {
                bail!("the peer exited before saying {word:?}");
            }
            if let Some(rest) = line.trim_end().strip_prefix(word) {
                return Ok(rest.trim().to_string());
            }
            if let Some(err) = line.trim_end().strip_prefix("error") {
                bail!("the peer failed: {}", err.trim());
            }
        }
    }

    fn finish(mut self) -> Result<()> {
        let deadline = Instant::now() + PEER_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    bail!("the peer exited with {status}")
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the peer did not exit");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Measures one phase of one mechanism at one size, between this process and a peer process.
pub fn measure(
    mechanism: Mechanism,
    phase: Phase,
    size: usize,
    duration: Duration,
) -> Result<Measured> {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    PHASE_MS.store(millis, std::sync::atomic::Ordering::Relaxed);
    let result = measure_inner(mechanism, phase, size, duration);
    mechanisms::cleanup(mechanism);
    result
}

fn measure_inner(
    mechanism: Mechanism,
    phase: Phase,
    size: usize,
    duration: Duration,
) -> Result<Measured> {
    match (mechanism, phase) {
        (Mechanism::ShmSpin | Mechanism::ShmFutex, _) => {
            return pingpong_parent(mechanism, phase, size, duration)
        }
        (Mechanism::ShmRing, _) => return ring_parent(phase, size, duration),
        (Mechanism::MailboxZeroCopy, _) => return zero_copy_parent(phase, size, duration),
        (Mechanism::TopicFanout, _) => return fanout_parent(phase, size, duration),
        (Mechanism::MailboxMpsc, Phase::Stream) => return mpsc_parent(size, duration),
        _ => {}
    }
    let (prepared, arg) = mechanisms::prepare(mechanism, size)?;
    let warm = warmup(duration);
    let mut peer = Peer::start(mechanism, phase, size, &arg, Some(&prepared), warm)?;
    let mut link = if mechanisms::parent_waits_for_peer(mechanism) {
        let info = peer.expect("ready")?;
        mechanisms::parent_link(prepared, &mut peer.child, &info)?
    } else {
        let link = mechanisms::parent_link(prepared, &mut peer.child, "")?;
        peer.expect("ready")?;
        link
    };
    let measured = match phase {
        Phase::Rtt => rtt_loop(&mut link, size, duration)?,
        Phase::Stream => {
            stream_loop(&mut link, size, warm + duration)?;
            let done = peer.expect("done")?;
            Measured {
                rtts: Vec::new(),
                msgs_per_sec: Some(parse_rate(&done)?),
            }
        }
    };
    drop(link);
    peer.finish()?;
    Ok(measured)
}

fn parse_rate(done: &str) -> Result<f64> {
    let mut parts = done.split_whitespace().map(|p| p.parse::<f64>());
    let (Some(Ok(count)), Some(Ok(nanos))) = (parts.next(), parts.next()) else {
        bail!("unreadable report {done:?}");
    };
    if count == 0.0 || nanos <= 0.0 {
        bail!("the peer received nothing");
    }
    Ok(count / (nanos / 1e9))
}

/// One deadline for a whole phase, so that no operation pays for reading the clock.
fn phase_deadline(duration: Duration) -> Deadline {
    Deadline::after(duration + PEER_PATIENCE)
}

fn rtt_loop(link: &mut Link, size: usize, duration: Duration) -> Result<Measured> {
    let (mut msg, mut reply) = (Vec::with_capacity(size), Vec::with_capacity(size));
    let mut rtts = Vec::new();
    let deadline = phase_deadline(warmup(duration) + duration);
    let mut seq = 0u64;
    let mut round_trip = |seq: u64| -> Result<u64> {
        // Writing the message and checking the echo are timed, as they must be in the
        // zero-copy row (which writes and reads in place): every row does the same work.
        let start = Instant::now();
        fill(&mut msg, seq, size);
        link.send_deadline(&msg, deadline)?;
        link.recv_deadline(&mut reply, deadline)
            .with_context(|| format!("no echo of message {seq}"))?;
        check(&reply, seq, size)?;
        Ok(start.elapsed().as_nanos() as u64)
    };
    let warm_end = Instant::now() + warmup(duration);
    while Instant::now() < warm_end {
        round_trip(seq)?;
        seq += 1;
    }
    let end = Instant::now() + duration;
    while Instant::now() < end || rtts.len() < 10 {
        rtts.push(round_trip(seq)?);
        seq += 1;
    }
    link.send_timeout(STOP, PEER_PATIENCE)?;
    Ok(Measured {
        rtts,
        msgs_per_sec: None,
    })
}

/// Sends messages 0, 1, 2... flat out for `total` (the warm-up and the phase), then the
/// stop message.
fn stream_loop<S: MessageSender + ?Sized>(tx: &mut S, size: usize, total: Duration) -> Result<()> {
    let mut msg = Vec::with_capacity(size);
    let end = Instant::now() + total;
    let deadline = phase_deadline(total);
    let mut seq = 0u64;
    while Instant::now() < end {
        fill(&mut msg, seq, size);
        tx.send_deadline(&msg, deadline)?;
        seq += 1;
    }
    tx.send_timeout(STOP, PEER_PATIENCE)?;
    Ok(())
}
/// The peer side of `ipckit bench-peer`: reports on stderr, never hangs.
pub fn peer(
    mechanism: Mechanism,
    phase: Phase,
    size: usize,
    arg: &str,
    warmup: Duration,
) -> Result<()> {
    pin(1);
    match (mechanism, phase) {
        (Mechanism::ShmSpin | Mechanism::ShmFutex, _) => {
            return pingpong_peer(mechanism, phase, size, arg)
        }
        (Mechanism::ShmRing, _) => return ring_peer(phase, size, arg, warmup),
        (Mechanism::MailboxZeroCopy, _) => return zero_copy_peer(phase, size, arg, warmup),
        (Mechanism::TopicFanout, _) => return fanout_peer(size, arg, warmup),
        (Mechanism::MailboxMpsc, Phase::Stream) => return mpsc_peer(size, arg),
        _ => {}
    }
    let (mut link, info) = mechanisms::peer_link(mechanism, arg)?;
    eprintln!("ready {info}");
    let mut buf = Vec::with_capacity(size);
    let lossy = mechanism == Mechanism::Udp;
    let mut expected = 0u64;
    let mut meter = RateMeter::new(warmup);
    // Ample for any phase; a lost stop datagram is noticed sooner, by silence.
    let deadline = peer_deadline();
    loop {
        let deadline = if lossy && meter.first.is_some() {
            Deadline::after(Duration::from_millis(300))
        } else {
            deadline
        };
        match link.recv_deadline(&mut buf, deadline) {
            Ok(_) => {}
            // A lost stop datagram: the stream is over when it goes quiet.
            Err(ipckit::Error::Timeout) if lossy => break,
            Err(e) => return Err(e.into()),
        }
        if buf.len() < 8 {
            break;
        }
        let seq = seq_of(&buf).expect("8 bytes");
        if lossy {
            // Datagrams may be lost or reordered: check each one against its own number.
            check(&buf, seq, size)?;
        } else {
            check(&buf, expected, size)?;
        }
        expected = seq + 1;
        meter.tick();
        if phase == Phase::Rtt {
            link.send_deadline(&buf, deadline)?;
        }
    }
    eprintln!("{}", meter.report());
    Ok(())
}

// ---- baselines: raw shared memory --------------------------------------------------------

fn handoff(mechanism: Mechanism) -> Handoff {
    if mechanism == Mechanism::ShmSpin {
        Handoff::Spin
    } else {
        Handoff::Futex
    }
}

fn pingpong_parent(
    mechanism: Mechanism,
    phase: Phase,
    size: usize,
    duration: Duration,
) -> Result<Measured> {
    let name = mechanisms::object_name(mechanism);
    let area = PingPong::create(&name, size, handoff(mechanism))?;
    let warm = warmup(duration);
    let mut peer = Peer::start(mechanism, phase, size, &name, None, warm)?;
    peer.expect("ready")?;
    let (mut msg, mut reply) = (Vec::with_capacity(size), Vec::with_capacity(size));
    let mut rtts = Vec::new();
    let deadline = phase_deadline(warm + duration);
    let mut seq = 0u32;
    // Streaming is stop-and-wait here (the peer acknowledges each message with an empty
    // reply): a hand-off, not a ring; `shm-ring` is the streaming reference.
    let mut round_trip = |seq: u32| -> Result<u64> {
        let t = Instant::now();
        fill(&mut msg, seq as u64, size);
        area.send(Direction::Ping, seq, &msg)?;
        let reply_len = if phase == Phase::Rtt { size } else { 0 };
        area.recv(Direction::Pong, seq - 1, reply_len, &mut reply, deadline)?;
        if phase == Phase::Rtt {
            check(&reply, seq as u64, size)?;
        }
        Ok(t.elapsed().as_nanos() as u64)
    };
    let warm_end = Instant::now() + warm;
    while Instant::now() < warm_end {
        seq += 1;
        round_trip(seq)?;
    }
    let start = Instant::now();
    let first = seq;
    let end = start + duration;
    while Instant::now() < end || rtts.len() < 10 {
        seq += 1;
        rtts.push(round_trip(seq)?);
    }
    let elapsed = start.elapsed();
    area.send(Direction::Ping, u32::MAX, &[])?;
    peer.finish()?;
    Ok(if phase == Phase::Rtt {
        Measured {
            rtts,
            msgs_per_sec: None,
        }
    } else {
        Measured {
            rtts: Vec::new(),
            msgs_per_sec: Some((seq - first) as f64 / elapsed.as_secs_f64()),
        }
    })
}

fn pingpong_peer(mechanism: Mechanism, phase: Phase, size: usize, name: &str) -> Result<()> {
    let area = PingPong::open(name, size, handoff(mechanism))?;
    eprintln!("ready");
    let mut buf = Vec::with_capacity(size);
    let mut last = 0u32;
    let deadline = peer_deadline();
    loop {
        let seq = area.recv(Direction::Ping, last, size, &mut buf, deadline)?;
        if seq == u32::MAX {
            break;
        }
        if seq != last + 1 {
            bail!("message {seq} arrived after {last}");
        }
        check(&buf, seq as u64, size)?;
        let reply: &[u8] = if phase == Phase::Rtt { &buf } else { &[] };
        area.send(Direction::Pong, seq, reply)?;
        last = seq;
    }
    Ok(())
}

// ---- the streaming reference: a raw SPSC ring ---------------------------------------------

fn ring_parent(phase: Phase, size: usize, duration: Duration) -> Result<Measured> {
    let name = mechanisms::object_name(Mechanism::ShmRing);
    let rings = RawRing::create(&name, size)?;
    let warm = warmup(duration);
    let mut peer = Peer::start(Mechanism::ShmRing, phase, size, &name, None, warm)?;
    peer.expect("ready")?;
    let mut tx = rings.producer(Direction::Ping);
    let mut rx = rings.consumer(Direction::Pong);
    let deadline = phase_deadline(warm + duration);
    let (mut msg, mut reply) = (Vec::with_capacity(size), Vec::with_capacity(size));
    let mut rtts = Vec::new();
    let mut seq = 0u64;
    let warm_end = Instant::now() + warm;
    let end = warm_end + duration;
    loop {
        let now = Instant::now();
        if now >= end && (phase == Phase::Stream || rtts.len() >= 10) {
            break;
        }
        fill(&mut msg, seq, size);
        tx.send(&msg, deadline)?;
        if phase == Phase::Rtt {
            rx.recv(&mut reply, deadline)?;
            check(&reply, seq, size)?;
            if now >= warm_end {
                rtts.push(now.elapsed().as_nanos() as u64);
            }
        }
        seq += 1;
    }
    tx.send(STOP, Deadline::after(PEER_PATIENCE))?;
    let measured = if phase == Phase::Rtt {
        Measured {
            rtts,
            msgs_per_sec: None,
        }
    } else {
        Measured {
            rtts: Vec::new(),
            msgs_per_sec: Some(parse_rate(&peer.expect("done")?)?),
        }
    };
    peer.finish()?;
    Ok(measured)
}

fn ring_peer(phase: Phase, size: usize, name: &str, warmup: Duration) -> Result<()> {
    let rings = RawRing::open(name, size)?;
    let mut rx = rings.consumer(Direction::Ping);
    let mut tx = rings.producer(Direction::Pong);
    eprintln!("ready");
    let mut buf = Vec::with_capacity(size);
    let mut meter = RateMeter::new(warmup);
    let deadline = Deadline::after(PEER_PATIENCE * 6);
    let mut expected = 0u64;
    loop {
        rx.recv(&mut buf, deadline)?;
        if buf.len() < 8 {
            break;
        }
        check(&buf, expected, size)?;
        expected += 1;
        meter.tick();
        if phase == Phase::Rtt {
            tx.send(&buf, deadline)?;
        }
    }
    eprintln!("{}", meter.report());
    Ok(())
}

// ---- mailbox, zero copy ------------------------------------------------------------------

fn zero_copy_parent(phase: Phase, size: usize, duration: Duration) -> Result<Measured> {
    let name = mechanisms::object_name(Mechanism::MailboxZeroCopy);
    for dir in ["ping", "pong"] {
        Mailbox::builder(&format!("{name}-{dir}"))
            .capacity(64)
            .max_message_size(size)
            .single_sender()
            .single_receiver()
            .wait_strategy(WaitStrategy::BusyPoll)
            .create()?;
    }
    let open = |dir: &str| {
        Mailbox::builder(&format!("{name}-{dir}"))
            .wait_strategy(WaitStrategy::BusyPoll)
            .open()
    };
    let mut tx = open("ping")?.sender()?;
    let mut rx = open("pong")?.receiver()?;
    let warm = warmup(duration);
    let mut peer = Peer::start(Mechanism::MailboxZeroCopy, phase, size, &name, None, warm)?;
    peer.expect("ready")?;
    let mut rtts = Vec::new();
    let deadline = phase_deadline(warm + duration);
    let mut seq = 0u64;
    let warm_end = Instant::now() + warm;
    let end = warm_end + duration;
    loop {
        let now = Instant::now();
        if now >= end && (phase == Phase::Stream || rtts.len() >= 10) {
            break;
        }
        {
            let mut loan = tx.loan_deadline(deadline)?;
            write_pattern(&mut loan[..size], seq);
            loan.publish(size)?;
        }
        if phase == Phase::Rtt {
            let reply = rx.recv_in_place_deadline(deadline)?;
            check(&reply, seq, size)?;
            drop(reply);
            if now >= warm_end {
                rtts.push(now.elapsed().as_nanos() as u64);
            }
        }
        seq += 1;
    }
    tx.send_timeout(STOP, PEER_PATIENCE)?;
    if phase == Phase::Rtt {
        peer.finish()?;
        return Ok(Measured {
            rtts,
            msgs_per_sec: None,
        });
    }
    let done = peer.expect("done")?;
    peer.finish()?;
    Ok(Measured {
        rtts: Vec::new(),
        msgs_per_sec: Some(parse_rate(&done)?),
    })
}

fn zero_copy_peer(phase: Phase, size: usize, name: &str, warmup: Duration) -> Result<()> {
    let open = |dir: &str| {
        Mailbox::builder(&format!("{name}-{dir}"))
            .wait_strategy(WaitStrategy::BusyPoll)
            .open()
    };
    let mut rx = open("ping")?.receiver()?;
    let mut tx = open("pong")?.sender()?;
    eprintln!("ready");
    let mut count = 0u64;
    let mut meter = RateMeter::new(warmup);
    // Ample for any phase, and read from the clock once.
    let deadline = peer_deadline();
    loop {
        let msg = rx.recv_in_place_deadline(deadline)?;
        if msg.len() < 8 {
            break;
        }
        check(&msg, count, size)?;
        meter.tick();
        if phase == Phase::Rtt {
            let mut loan = tx.loan_deadline(deadline)?;
            loan[..size].copy_from_slice(&msg);
            drop(msg);
            loan.publish(size)?;
        }
        count += 1;
    }
    eprintln!("{}", meter.report());
    Ok(())
}

// ---- mailbox, many senders ---------------------------------------------------------------

/// Several sender processes stream into one mailbox (the general path: slots claimed by CAS);
/// this process receives, checks every message against its sender's own sequence, and
/// reports the total rate from the first message to the last.
fn mpsc_parent(size: usize, duration: Duration) -> Result<Measured> {
    let name = mechanisms::object_name(Mechanism::MailboxMpsc);
    // More processes than cores: senders that spin forever would starve the receiver.
    let mailbox = Mailbox::builder(&name)
        .capacity(1024)
        .max_message_size(size)
        .create()?;
    let mut rx = mailbox.receiver()?;
    let warm = warmup(duration);
    let arg = format!("{name}:{}", (warm + duration).as_millis());
    let mut peers = (0..SENDERS)
        .map(|_| {
            Peer::start(
                Mechanism::MailboxMpsc,
                Phase::Stream,
                size,
                &arg,
                None,
                warm,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    for peer in &mut peers {
        peer.expect("ready")?;
    }
    let deadline = phase_deadline(warm + duration);
    let mut expected = std::collections::HashMap::<u32, u64>::new();
    let (mut count, mut stopped) = (0u64, 0usize);
    let mut first: Option<Instant> = None;
    let mut start: Option<Instant> = None;
    let mut last = Instant::now();
    let mut buf = Vec::with_capacity(size);
    while stopped < SENDERS {
        let meta = rx.recv_deadline(&mut buf, deadline)?;
        let sender = meta.sender_pid.unwrap_or(0);
        if buf.len() < 8 {
            stopped += 1;
            continue;
        }
        let next = expected.entry(sender).or_insert(0);
        check(&buf, *next, size).with_context(|| format!("from sender {sender}"))?;
        *next += 1;
        last = Instant::now();
        if start.is_some() {
            count += 1;
        } else if last - *first.get_or_insert(last) >= warm {
            start = Some(last);
        }
    }
    for peer in peers {
        peer.finish()?;
    }
    let Some(start) = start else {
        bail!("the senders sent nothing after the warm-up");
    };
    Ok(Measured {
        rtts: Vec::new(),
        msgs_per_sec: Some(count as f64 / last.duration_since(start).as_secs_f64().max(1e-9)),
    })
}

fn mpsc_peer(size: usize, arg: &str) -> Result<()> {
    let (name, millis) = arg.rsplit_once(':').context("mailbox-mpsc argument")?;
    let duration = Duration::from_millis(millis.parse().context("mailbox-mpsc duration")?);
    let mut tx = Mailbox::open(name)?.sender()?;
    eprintln!("ready");
    stream_loop(&mut tx, size, duration)
}

// ---- topic fan-out -----------------------------------------------------------------------

fn fanout_parent(phase: Phase, size: usize, duration: Duration) -> Result<Measured> {
    if phase == Phase::Rtt {
        bail!("fan-out is one-way: see the topic row for round trips");
    }
    let name = mechanisms::object_name(Mechanism::TopicFanout);
    // More processes than cores: spinning subscribers would starve each other.
    let topic = Topic::builder(&name)
        .capacity(64)
        .max_message_size(size)
        .overflow(Overflow::Backpressure)
        .create()?;
    let mut publisher = topic.publisher()?;
    let warm = warmup(duration);
    let mut peers = (0..FANOUT)
        .map(|_| {
            Peer::start(
                Mechanism::TopicFanout,
                Phase::Stream,
                size,
                &name,
                None,
                warm,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    for peer in &mut peers {
        peer.expect("ready")?;
    }
    stream_loop(&mut publisher, size, warm + duration)?;
    let mut rates = Vec::new();
    for mut peer in peers {
        rates.push(parse_rate(&peer.expect("done")?)?);
        peer.finish()?;
    }
    Ok(Measured {
        rtts: Vec::new(),
        msgs_per_sec: Some(rates.iter().sum::<f64>() / rates.len() as f64),
    })
}

fn fanout_peer(size: usize, name: &str, warmup: Duration) -> Result<()> {
    let mut sub = Topic::open(name)?.subscriber()?;
    eprintln!("ready");
    let mut buf = Vec::with_capacity(size);
    let mut count = 0u64;
    let mut meter = RateMeter::new(warmup);
    let deadline = peer_deadline();
    loop {
        let meta = sub.recv_deadline(&mut buf, deadline)?;
        if buf.len() < 8 {
            break;
        }
        if meta.missed != Some(0) {
            bail!("backpressure lost {:?} messages", meta.missed);
        }
        check(&buf, count, size)?;
        meter.tick();
        count += 1;
    }
    eprintln!("{}", meter.report());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_round_trips_and_never_passes_a_stale_message() {
        for len in [8, 9, 15, 64, 100, 4096] {
            let mut msg = Vec::new();
            fill(&mut msg, 1_000_003, len);
            assert!(check(&msg, 1_000_003, len).is_ok());
            // Four laps of a 64-slot ring, 256 messages, 2^32 messages: all different.
            for stale in [
                1_000_003 - 256,
                1_000_003 - 4 * 64,
                1_000_003 + (1u64 << 32),
            ] {
                let mut old = Vec::new();
                fill(&mut old, stale, len);
                old[..8].copy_from_slice(&1_000_003u64.to_le_bytes());
                // (A message shorter than two whole words has too few bits to tell them all apart.)
                assert!(
                    check(&old, 1_000_003, len).is_err() || len < 16,
                    "{len} {stale}"
                );
            }
            // One byte wrong anywhere is caught.
            for i in 8..len {
                let mut bad = msg.clone();
                bad[i] ^= 1;
                assert!(check(&bad, 1_000_003, len).is_err(), "byte {i} of {len}");
            }
        }
    }

    #[test]
    fn the_rate_meter_skips_the_warm_up() {
        let mut meter = RateMeter::new(Duration::from_millis(20));
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            meter.tick();
        }
        let counted = meter.count;
        assert!(meter.start.unwrap() >= start + Duration::from_millis(20));
        assert!(counted > 0);
    }
}
