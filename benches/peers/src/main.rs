//! `peers`: ipckit's shared-memory mailbox next to two peer crates, on one workload.
//!
//! Every row does the same two things with 64-byte messages, between two processes (this
//! binary starts itself again as `peers --serve MECH ...`; it never forks):
//!
//! * round trip: the client writes message `seq` (its sequence number, then bytes derived
//!   from it), the server echoes it, the client checks every byte; warm-up rounds first,
//!   then the median and p99 of `--rounds` round trips;
//! * throughput: the server streams `--messages` messages, the client checks each one's
//!   sequence and bytes and reports messages per second from the first to the last.
//!
//! Rows: ipckit's mailbox busy-polling and sleeping on its futex, ipc-channel's bytes
//! channel, an interprocess local socket and, with the `iceoryx2` feature, iceoryx2's
//! publish-subscribe. The two processes are pinned to different CPUs when there are two.
//! Every server has a watchdog, every phase a timeout; a row that fails prints its error
//! and the run goes on.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- [--rounds N]
//!     [--warmup N] [--messages N] [--timeout SECS] [--only KEY,KEY...]
//! ```

mod harness;
#[cfg(feature = "iceoryx2")]
mod iceoryx;
mod ipc_channel;
mod local_socket;
mod mailbox;

use std::time::{Duration, Instant};

use ipckit::shm::mailbox::WaitStrategy;

use harness::{quantile, Config, Outcome, Phase, Prepared, Res, ServerCtx};

/// A row of the table: its label and the key the server process is started with.
struct Mechanism {
    label: &'static str,
    key: &'static str,
}

const MECHANISMS: &[Mechanism] = &[
    Mechanism {
        label: "ipckit mailbox (busy-poll)",
        key: "mailbox-busy",
    },
    Mechanism {
        label: "ipckit mailbox (blocking/futex)",
        key: "mailbox-sleep",
    },
    Mechanism {
        label: "ipc-channel 0.23 (bytes)",
        key: "ipc-channel",
    },
    Mechanism {
        label: "interprocess 2 local socket",
        key: "local-socket",
    },
    #[cfg(feature = "iceoryx2")]
    Mechanism {
        label: "iceoryx2 0.10 pub-sub (busy-poll)",
        key: "iceoryx2",
    },
];

fn prepare(key: &str, phase: Phase, cfg: &Config, tag: &str) -> Res<Prepared> {
    match key {
        "mailbox-busy" => mailbox::prepare(WaitStrategy::BusyPoll, phase, cfg, tag),
        "mailbox-sleep" => mailbox::prepare(WaitStrategy::Sleep, phase, cfg, tag),
        "ipc-channel" => ipc_channel::prepare(phase, cfg, tag),
        "local-socket" => local_socket::prepare(phase, cfg, tag),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => iceoryx::prepare(phase, cfg, tag),
        _ => Err(format!("unknown mechanism {key:?}").into()),
    }
}

fn serve(key: &str, ctx: ServerCtx, args: &[String]) -> Res<()> {
    match key {
        "mailbox-busy" => mailbox::serve(WaitStrategy::BusyPoll, ctx, args),
        "mailbox-sleep" => mailbox::serve(WaitStrategy::Sleep, ctx, args),
        "ipc-channel" => ipc_channel::serve(ctx, args),
        "local-socket" => local_socket::serve(ctx, args),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => iceoryx::serve(ctx, args),
        _ => Err(format!("unknown mechanism {key:?}").into()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        if let Err(e) = server_main(&args[1..]) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = client_main(&args) {
        eprintln!("peers: {e}");
        std::process::exit(2);
    }
}

/// `--serve MECH PHASE COUNT TIMEOUT_SECS CPU|- ARGS...`
fn server_main(args: &[String]) -> Res<()> {
    let [key, phase, count, timeout, cpu, rest @ ..] = args else {
        return Err("usage: peers --serve MECH PHASE COUNT TIMEOUT_SECS CPU|- ARGS...".into());
    };
    let timeout = Duration::from_secs(timeout.parse()?);
    harness::start_watchdog(timeout);
    if cpu != "-" {
        harness::pin(cpu.parse()?)?;
    }
    let ctx = ServerCtx {
        phase: Phase::parse(phase)?,
        count: count.parse()?,
        deadline: Instant::now() + timeout,
        timeout,
    };
    serve(key, ctx, rest)
}

struct Options {
    cfg: Config,
    only: Option<Vec<String>>,
}

fn parse_options(args: &[String]) -> Res<Options> {
    let mut cfg = Config {
        rounds: 20_000,
        warmup: 2_000,
        messages: 500_000,
        timeout: Duration::from_secs(60),
        cpus: harness::two_cpus(),
    };
    let mut only = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => cfg.rounds = value()?.parse()?,
            "--warmup" => cfg.warmup = value()?.parse()?,
            "--messages" => cfg.messages = value()?.parse()?,
            "--timeout" => cfg.timeout = Duration::from_secs(value()?.parse()?),
            "--only" => only = Some(value()?.split(',').map(str::to_string).collect()),
            "-h" | "--help" => {
                println!(
                    "usage: peers [--rounds N] [--warmup N] [--messages N] [--timeout SECS] \
                     [--only KEY,...]\nkeys: {}",
                    MECHANISMS
                        .iter()
                        .map(|m| m.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag:?} (try --help)").into()),
        }
    }
    if cfg.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok(Options { cfg, only })
}

/// What one row measured, or why it could not.
struct Row {
    key: &'static str,
    label: &'static str,
    rtt: Result<(u64, u64), String>,
    rate: Result<f64, String>,
}

fn client_main(args: &[String]) -> Res<()> {
    let Options { cfg, only } = parse_options(args)?;
    if let Some((client, _)) = cfg.cpus {
        harness::pin(client)?;
    }
    println!(
        "64 B messages; {} round trips after {} warm-up; {} streamed; {}",
        cfg.rounds,
        cfg.warmup,
        cfg.messages,
        match cfg.cpus {
            Some((c, s)) => format!("client on CPU {c}, server on CPU {s}"),
            None => "not pinned (one CPU)".to_string(),
        }
    );
    let mut rows = Vec::new();
    for mech in MECHANISMS {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|k| k == mech.key))
        {
            continue;
        }
        eprint!("{:<36} round trip...", mech.label);
        let rtt = match harness::run_phase(mech.key, Phase::Rtt, &cfg, {
            let cfg = cfg.clone();
            move |tag| prepare(mech.key, Phase::Rtt, &cfg, tag)
        }) {
            Ok(Outcome::Rtt(mut v)) => {
                v.sort_unstable();
                Ok((quantile(&v, 0.5), quantile(&v, 0.99)))
            }
            Ok(Outcome::Tput(_)) => Err("the round trip measured a rate".to_string()),
            Err(e) => Err(e.to_string()),
        };
        eprint!(" throughput...");
        let rate = match harness::run_phase(mech.key, Phase::Tput, &cfg, {
            let cfg = cfg.clone();
            move |tag| prepare(mech.key, Phase::Tput, &cfg, tag)
        }) {
            Ok(Outcome::Tput(r)) => Ok(r),
            Ok(Outcome::Rtt(_)) => Err("the throughput phase measured round trips".to_string()),
            Err(e) => Err(e.to_string()),
        };
        eprintln!(" done");
        rows.push(Row {
            key: mech.key,
            label: mech.label,
            rtt,
            rate,
        });
    }
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    // The ratios are to ipckit's busy-polling mailbox, when it ran and succeeded.
    let base = rows.iter().find(|r| r.key == "mailbox-busy");
    let base_rtt = base.and_then(|r| r.rtt.as_ref().ok()).map(|&(p50, _)| p50);
    let base_rate = base.and_then(|r| r.rate.as_ref().ok()).copied();
    println!();
    println!(
        "{:<36}{:>10}{:>12}{:>12}{:>16}{:>19}",
        "mechanism", "rtt p50", "rtt p99", "msgs/s", "rtt vs ipckit", "msgs/s vs ipckit"
    );
    for row in rows {
        let (p50, p99, rtt_ratio) = match &row.rtt {
            Ok((p50, p99)) => (
                ns(*p50),
                ns(*p99),
                base_rtt.map_or("-".into(), |b| ratio(*p50 as f64 / b as f64)),
            ),
            Err(_) => ("failed".into(), "-".into(), "-".into()),
        };
        let (rate, rate_ratio) = match &row.rate {
            Ok(r) => (rate(*r), base_rate.map_or("-".into(), |b| ratio(r / b))),
            Err(_) => ("failed".into(), "-".into()),
        };
        println!(
            "{:<36}{p50:>10}{p99:>12}{rate:>12}{rtt_ratio:>16}{rate_ratio:>19}",
            row.label
        );
    }
    for row in rows {
        if let Err(e) = &row.rtt {
            println!("{} round trip: {e}", row.label);
        }
        if let Err(e) = &row.rate {
            println!("{} throughput: {e}", row.label);
        }
    }
}

fn ns(v: u64) -> String {
    if v < 100_000 {
        format!("{v} ns")
    } else {
        format!("{:.1} us", v as f64 / 1e3)
    }
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

fn ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}x")
    } else {
        format!("{x:.2}x")
    }
}
