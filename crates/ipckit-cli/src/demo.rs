//! `ipckit demo`: the textbook's pictures, run for real between processes.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ipckit::shm::{BoundedBuffer, Shared, ShmSafe};
use ipckit::sync::Mutex;
use ipckit::Deadline;

/// Which demonstration.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DemoKind {
    /// Two processes increment a shared counter: lost updates without a mutex, none with.
    Race,
    /// Producers and consumers through the bounded buffer (empty/full/mutex semaphores).
    ProducerConsumer,
    /// Zero capacity: each send returns only when the receiver takes the message.
    Rendezvous,
    /// The shell's `|`: processes chained by pipes, each transforming what it receives.
    Pipeline,
    /// A service: clients connect by name, get private channels, make calls.
    Service,
}

/// Options of `ipckit demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demonstration to run.
    pub kind: DemoKind,
    /// Increments per process (race) or items per producer (producer-consumer).
    #[arg(long, default_value_t = 100_000)]
    pub iterations: u64,
}

/// Options of the hidden `ipckit demo-child`.
#[derive(Debug, Args)]
pub struct ChildArgs {
    kind: String,
    name: String,
    iterations: u64,
    #[arg(default_value_t = 0)]
    id: u64,
}

/// The race demo's shared state.
#[repr(C)]
struct RaceArea {
    /// Incremented with a plain load and store: a read-modify-write race.
    unguarded: AtomicU64,
    /// Incremented under the mutex.
    guarded: Mutex<u64>,
    /// Children check in here before every round and spin until both have, so that their
    /// loops overlap even when the scheduler would rather run them one after the other.
    arrived: AtomicU64,
}

/// Short rounds, each started together, make the two loops overlap far more often than one
/// long run: on a loaded two-core machine one process may otherwise finish before the other
/// is scheduled, and no update is lost.
const RACE_ROUNDS: u64 = 50;

/// Attempts at showing the race before saying it was not seen.
const RACE_ATTEMPTS: u32 = 5;

// SAFETY: atomics and a mutex of an integer: any bits are valid, no pointers.
unsafe impl ShmSafe for RaceArea {}

fn spawn_child(kind: &str, name: &str, iterations: u64, id: u64) -> Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "demo-child",
            kind,
            name,
            &iterations.to_string(),
            &id.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("start a demo process")
}

fn wait_all(children: Vec<Child>) -> Result<Vec<String>> {
    let mut outputs = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("a demo process failed ({})", out.status);
        }
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Ok(outputs)
}

fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs `ipckit demo`.
pub fn demo(args: DemoArgs) -> Result<()> {
    match args.kind {
        DemoKind::Race => race(args.iterations),
        DemoKind::ProducerConsumer => producer_consumer(args.iterations.min(100_000)),
        DemoKind::Rendezvous => rendezvous(),
        DemoKind::Pipeline => pipeline(args.iterations.min(10_000)),
        DemoKind::Service => service(),
    }
}

fn rendezvous() -> Result<()> {
    use ipckit::shm::Mailbox;
    use ipckit::{Capacity, MessageReceiver};
    let name = format!("demo-rendezvous-{}", std::process::id());
    let mailbox = Mailbox::builder(&name)
        .capacity_kind(Capacity::Rendezvous)
        .create()?;
    let result = (|| {
        let mut rx = mailbox.receiver()?;
        let sender = spawn_child("rendezvous", &name, 3, 0)?;
        outln!("zero-capacity mailbox: the receiver takes a message every 300 ms")?;
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            let msg = rx.recv_timeout(Duration::from_secs(30))?;
            outln!("  receiver took {:?}", String::from_utf8_lossy(&msg.data))?;
        }
        wait_all(vec![sender])
    })();
    let _ = Mailbox::remove(&name);
    for line in result?.concat().lines() {
        outln!("  {line}")?;
    }
    outln!("each send returned only once its message was taken: no buffering.")?;
    Ok(())
}

fn pipeline(count: u64) -> Result<()> {
    use ipckit::{pipe, MessageReceiver, MessageSender};
    let exe = std::env::current_exe()?;
    let mut square = Command::new(&exe)
        .args(["demo-child", "square", "-", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let between = square.stdout.take().context("stdout of the first stage")?;
    let mut sum = Command::new(&exe)
        .args(["demo-child", "sum", "-", "0"])
        .stdin(Stdio::from(between))
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = pipe::sender_from_fd(square.stdin.take().context("stdin")?.into())?;
    let mut output = pipe::receiver_from_fd(sum.stdout.take().context("stdout")?.into())?;
    for n in 1..=count {
        input.send(&n.to_le_bytes())?;
    }
    drop(input); // end of stream: each stage sees it in turn
    let total = output.recv_timeout(Duration::from_secs(60))?;
    let total = u64::from_le_bytes(total.data[..8].try_into().context("an 8-byte total")?);
    square.wait()?;
    sum.wait()?;
    let expected: u64 = (1..=count).map(|n| n * n).sum();
    outln!("this process | square | sum   (three processes, two pipes, framed messages)")?;
    outln!(
        "  sent 1..={count}; the last stage answered {} (expected {})",
        with_commas(total),
        with_commas(expected)
    )?;
    if total != expected {
        bail!("the pipeline lost or changed messages");
    }
    Ok(())
}

fn service() -> Result<()> {
    use ipckit::service::Server;
    let name = format!("demo-service-{}", std::process::id());
    let server = Server::bind(&name, 0o600)?;
    let clients = (0..3)
        .map(|id| spawn_child("service-client", &name, 5, id))
        .collect::<Result<Vec<_>>>()?;
    outln!("service {name:?}: 3 client processes connect, each gets a private channel pair")?;
    for _ in 0..3 {
        let pending = server.accept()?;
        let peer = pending.peer();
        outln!(
            "  connection from pid {} (uid {}): accepted",
            peer.pid,
            peer.uid
        )?;
        let mut conn = pending.accept(b"welcome")?;
        std::thread::spawn(move || {
            while let Ok(request) = conn.next_request(Deadline::Never) {
                let mut reply = request.data.to_ascii_uppercase();
                reply.extend_from_slice(b" (done)");
                if conn.reply(request.id, &reply).is_err() {
                    return;
                }
            }
        });
    }
    for out in wait_all(clients)? {
        out!("{out}")?;
    }
    Ok(())
}

fn race(iterations: u64) -> Result<()> {
    let expected = 2 * iterations;
    outln!(
        "two processes, {} increments each:",
        with_commas(iterations)
    )?;
    let mut seen = None;
    for attempt in 1..=RACE_ATTEMPTS {
        eprintln!(
            "  racing without a mutex (attempt {attempt} of {RACE_ATTEMPTS}, {RACE_ROUNDS} rounds)..."
        );
        let (unguarded, _) = race_once("race-unguarded", iterations)?;
        let lost = expected - unguarded.min(expected);
        if lost > 0 {
            seen = Some(unguarded);
            break;
        }
        eprintln!(
            "  no update lost this time: the two processes hardly overlapped (a busy machine \
             runs them one after the other); trying again"
        );
    }
    match seen {
        Some(unguarded) => outln!(
            "  without a mutex: {:>13}  ({} updates lost to the race)",
            with_commas(unguarded),
            with_commas(expected - unguarded)
        )?,
        None => outln!(
            "  without a mutex: {:>13}  (no update lost in {RACE_ATTEMPTS} attempts: the race \
             is real but was not seen on this machine now; try again or with more --iterations)",
            with_commas(expected)
        )?,
    }
    eprintln!("  now the same with the mutex...");
    let (_, guarded) = race_once("race-guarded", iterations)?;
    outln!("  with the mutex:  {:>13}", with_commas(guarded))?;
    if guarded != expected {
        bail!("the mutex let updates through unguarded: {guarded} != {expected}");
    }
    Ok(())
}

/// Runs the two racing processes once in `mode`; returns the unguarded and guarded counts.
fn race_once(mode: &str, iterations: u64) -> Result<(u64, u64)> {
    let name = format!("demo-race-{}", std::process::id());
    let area = Shared::create(
        &name,
        RaceArea {
            unguarded: AtomicU64::new(0),
            guarded: Mutex::new(0),
            arrived: AtomicU64::new(0),
        },
        0o600,
    )?;
    let result = (|| {
        let children = (0..2)
            .map(|id| spawn_child(mode, &name, iterations, id))
            .collect::<Result<Vec<_>>>()?;
        wait_all(children)
    })();
    let _ = Shared::<RaceArea>::remove(&name);
    result?;
    let unguarded = area.unguarded.load(Ordering::Relaxed);
    let guarded = *area.guarded.lock().into_guard();
    Ok((unguarded, guarded))
}

fn producer_consumer(items: u64) -> Result<()> {
    const PRODUCERS: u64 = 2;
    const CONSUMERS: u64 = 2;
    let name = format!("demo-pc-{}", std::process::id());
    let buffer = BoundedBuffer::<u64>::create(&name, 8, 0o600)?;
    let result = (|| {
        let consumers = (0..CONSUMERS)
            .map(|id| spawn_child("consumer", &name, items, id))
            .collect::<Result<Vec<_>>>()?;
        let producers = (0..PRODUCERS)
            .map(|id| spawn_child("producer", &name, items, id))
            .collect::<Result<Vec<_>>>()?;
        wait_all(producers)?;
        for _ in 0..CONSUMERS {
            buffer.put(u64::MAX)?;
        }
        wait_all(consumers)
    })();
    let _ = BoundedBuffer::<u64>::remove(&name);
    let outputs = result?;
    let (mut count, mut sum) = (0u64, 0u64);
    outln!(
        "{PRODUCERS} producers x {} items -> bounded buffer of 8 slots -> {CONSUMERS} consumers:",
        with_commas(items)
    )?;
    for (id, out) in outputs.iter().enumerate() {
        let mut parts = out
            .split_whitespace()
            .map(|p| p.parse::<u64>().unwrap_or(0));
        let (c, s) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        outln!("  consumer {id} took {} items", with_commas(c))?;
        count += c;
        sum = sum.wrapping_add(s);
    }
    let expected_count = PRODUCERS * items;
    let expected_sum = (0..PRODUCERS)
        .flat_map(|p| (0..items).map(move |i| p * 1_000_000_000 + i))
        .fold(0u64, u64::wrapping_add);
    outln!(
        "  {} of {} items delivered, each exactly once: {}",
        with_commas(count),
        with_commas(expected_count),
        if count == expected_count && sum == expected_sum {
            "yes"
        } else {
            "NO"
        }
    )?;
    if count != expected_count || sum != expected_sum {
        bail!("items were lost or duplicated");
    }
    Ok(())
}

/// Runs one process of a demo.
pub fn child(args: ChildArgs) -> Result<()> {
    let patience = Deadline::after(Duration::from_secs(60));
    match args.kind.as_str() {
        mode @ ("race-unguarded" | "race-guarded") => {
            let area = Shared::<RaceArea>::open(&args.name)?;
            let per_round = args.iterations.div_ceil(RACE_ROUNDS);
            let mut done = 0;
            for round in 0..RACE_ROUNDS {
                area.arrived.fetch_add(1, Ordering::AcqRel);
                while area.arrived.load(Ordering::Acquire) < 2 * (round + 1) {
                    if patience.expired() {
                        bail!("the other demo process never arrived");
                    }
                    std::hint::spin_loop();
                }
                let n = per_round.min(args.iterations - done);
                done += n;
                if mode == "race-unguarded" {
                    for _ in 0..n {
                        // Deliberately not atomic as a whole: read, then write back one more.
                        let value = area.unguarded.load(Ordering::Relaxed);
                        area.unguarded.store(value + 1, Ordering::Relaxed);
                    }
                } else {
                    for _ in 0..n {
                        *area.guarded.lock().into_guard() += 1;
                    }
                }
            }
        }
        "producer" => {
            let buffer = BoundedBuffer::<u64>::open(&args.name)?;
            for i in 0..args.iterations {
                buffer.put_deadline(args.id * 1_000_000_000 + i, patience)?;
            }
        }
        "consumer" => {
            let buffer = BoundedBuffer::<u64>::open(&args.name)?;
            let (mut count, mut sum) = (0u64, 0u64);
            loop {
                let item = buffer.take_deadline(patience)?;
                if item == u64::MAX {
                    break;
                }
                count += 1;
                sum = sum.wrapping_add(item);
            }
            outln!("{count} {sum}")?;
        }
        "rendezvous" => {
            use ipckit::MessageSender;
            let mut tx = ipckit::shm::Mailbox::open(&args.name)?.sender()?;
            let start = std::time::Instant::now();
            for i in 1..=args.iterations {
                tx.send_timeout(format!("message {i}").as_bytes(), Duration::from_secs(30))?;
                outln!(
                    "sender: send {i} returned after {:.2} s",
                    start.elapsed().as_secs_f64()
                )?;
            }
        }
        "square" | "sum" => {
            use ipckit::{pipe, MessageReceiver, MessageSender};
            let (mut out, mut input) = pipe::stdio()?;
            let mut total = 0u64;
            loop {
                match input.recv() {
                    Ok(msg) => {
                        let n = u64::from_le_bytes(msg.data[..8].try_into().context("8 bytes")?);
                        if args.kind == "square" {
                            out.send(&(n * n).to_le_bytes())?;
                        } else {
                            total += n;
                        }
                    }
                    Err(ipckit::Error::Disconnected) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if args.kind == "sum" {
                out.send(&total.to_le_bytes())?;
            }
        }
        "service-client" => {
            let (mut conn, _) = ipckit::service::Client::connect(&args.name, b"hi", patience)?;
            for i in 0..args.iterations {
                let request = format!("client {} request {i}", args.id);
                let reply = conn.call(request.as_bytes(), patience)?;
                if i == args.iterations - 1 {
                    outln!(
                        "  client {}: {:?} -> {:?}",
                        args.id,
                        request,
                        String::from_utf8_lossy(&reply)
                    )?;
                }
            }
        }
        other => bail!("unknown demo process {other:?}"),
    }
    Ok(())
}
