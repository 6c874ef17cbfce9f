//! `ipckit bench`: every mechanism measured side by side on this machine, between separate
//! processes pinned to different cores: round-trip latency (median, p99, p99.9) and one-way
//! throughput, each row also as ratios to the references of its phases: the raw spin hand-off
//! (`shm-spin`) for round trips, the raw SPSC ring (`shm-ring`) for streaming, both measured
//! again right before the row.

mod harness;
mod mechanisms;
mod report;
mod summary;
mod waiting;

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

pub use mechanisms::{Mechanism, Phase};
pub use report::Row;

use crate::units::{parse_duration, parse_size};

/// How long the load is measured between rows.
const LOAD_WINDOW: Duration = Duration::from_millis(100);

/// Options of `ipckit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Mechanisms to measure, comma-separated (default: all). See `--list`.
    #[arg(long, value_delimiter = ',')]
    pub mechanisms: Vec<Mechanism>,
    /// Message sizes in bytes, comma-separated (default 64,4096,65536).
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Time spent on each phase (round trips, then streaming) of each row.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// A smoke run of about ten seconds: 64-byte messages only, short phases.
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as JSON (schema in docs/BENCH.md).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Also draw the results as an SVG chart.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// List the mechanisms and exit.
    #[arg(long)]
    pub list: bool,
    /// Print the course notes' comparison table (speed, setup, complexity, network) with the
    /// speed measured here: by a quick run, or from FILE, written earlier by `--json`.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<Option<std::path::PathBuf>>,
}

/// Options of the hidden `ipckit bench-peer` (the other process of each row).
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The row's mechanism.
    #[arg(long)]
    mechanism: Mechanism,
    /// Which phase of the row.
    #[arg(long)]
    phase: Phase,
    /// Message size, in bytes.
    #[arg(long)]
    size: usize,
    /// Where the parent put its end: a path, an address, a name or a key, by mechanism.
    #[arg(long)]
    arg: String,
    /// Messages received during this long at the start are not counted (the warm-up).
    #[arg(long, default_value_t = 0)]
    warmup_ms: u64,
}

/// Runs `ipckit bench-peer`; failures are reported on stderr, where the parent reads them.
pub fn peer(args: PeerArgs) -> Result<()> {
    let warmup = Duration::from_millis(args.warmup_ms);
    let result = harness::peer(args.mechanism, args.phase, args.size, &args.arg, warmup);
    if let Err(e) = &result {
        eprintln!("error {e:#}");
    }
    result
}

/// Runs `ipckit bench`.
pub fn bench(args: BenchArgs) -> Result<()> {
    if args.list {
        for m in Mechanism::all() {
            outln!("{m}")?;
        }
        return Ok(());
    }
    if let Some(from) = &args.summary {
        return summary::summary(&args, from.as_deref());
    }
    let mechanisms: Vec<Mechanism> = if args.mechanisms.is_empty() {
        Mechanism::all().to_vec()
    } else {
        args.mechanisms.clone()
    };
    let sizes = match (args.sizes.is_empty(), args.quick) {
        (false, _) => args.sizes.clone(),
        (true, true) => vec![64],
        (true, false) => vec![64, 4096, 65536],
    };
    if let Some(&bad) = sizes.iter().find(|&&s| s < 8) {
        bail!("message size {bad} is too small: every message carries an 8-byte sequence number");
    }
    let phase = args.duration.unwrap_or(if args.quick {
        Duration::from_millis(150)
    } else {
        Duration::from_millis(500)
    });
    // Parent on CPU 0, peers on CPU 1 (when there are two).
    harness::pin(0);
    let total = (mechanisms.len() * sizes.len()) as u64;
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"),
    );
    let mut rows = Vec::new();
    // The load is measured between rows, while this run sleeps: each row is judged by the
    // window before it and the one after it.
    let budget = report::LoadBudget::here();
    let mut load = harness::cpus_busy(LOAD_WINDOW);
    for &size in &sizes {
        for &mechanism in &mechanisms {
            progress.set_message(format!("{mechanism} {size} B"));
            let ring_in_run = mechanisms.contains(&Mechanism::ShmRing);
            let mut row = measure_row(mechanism, size, phase, ring_in_run);
            let after = harness::cpus_busy(LOAD_WINDOW);
            row.finish(load, after, &budget);
            load = after;
            rows.push(row);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    // Streaming ratios against the run's own `shm-ring` row of the same size when there is
    // one: a full phase, where the short re-measurement before each row is at the mercy of
    // whatever else the machine is running.
    let ring_rates: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.mechanism == Mechanism::ShmRing)
        .filter_map(|r| Some((r.size, r.msgs_per_sec?)))
        .collect();
    for row in &mut rows {
        if let Some(&(_, rate)) = ring_rates.iter().find(|(size, _)| *size == row.size) {
            row.ring_msgs_per_sec = Some(rate);
        }
    }
    report::print_table(&rows, &budget)?;
    // What every row pays for the bytes themselves, so a row near it is measuring the check.
    for &size in &sizes {
        outln!(
            "calibration: writing and checking one {size}-byte message in cache: {:.0} ns",
            harness::calibrate(size)
        )?;
    }
    if let Some(path) = &args.json {
        report::write_json(path, &rows, &budget)?;
    }
    if let Some(path) = &args.plot {
        report::write_plot(path, &rows)?;
    }
    Ok(())
}

fn measure_row(mechanism: Mechanism, size: usize, phase: Duration, ring_in_run: bool) -> Row {
    let mut row = Row::new(mechanism, size);
    // The references, again, right before the row (see `Row::spin_rtt_ns`).
    let calibration = (phase / 4).min(Duration::from_millis(100));
    if !matches!(mechanism, Mechanism::ShmSpin | Mechanism::TopicFanout) {
        if let Ok(m) = harness::measure(Mechanism::ShmSpin, Phase::Rtt, size, calibration) {
            let mut rtts = m.rtts;
            rtts.sort_unstable();
            row.spin_rtt_ns = Some(report::percentile(&rtts, 0.5));
        }
    }
    if !ring_in_run {
        if let Ok(m) = harness::measure(Mechanism::ShmRing, Phase::Stream, size, calibration) {
            row.ring_msgs_per_sec = m.msgs_per_sec;
        }
    }
    let rtt = if mechanism == Mechanism::TopicFanout {
        Ok(None)
    } else {
        harness::measure(mechanism, Phase::Rtt, size, phase).map(|m| Some(m.rtts))
    };
    let stream = harness::measure(mechanism, Phase::Stream, size, phase);
    match (rtt, stream) {
        (Ok(rtts), Ok(stream)) => {
            if let Some(mut rtts) = rtts {
                rtts.sort_unstable();
                row.set_rtts(&rtts);
                if mechanism == Mechanism::ShmSpin {
                    row.spin_rtt_ns = row.rtt_ns.map(|p| p.p50);
                }
            }
            if let Some(rate) = stream.msgs_per_sec {
                row.set_rate(rate);
                if mechanism == Mechanism::ShmRing {
                    row.ring_msgs_per_sec = Some(rate);
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => row.error = Some(format!("{e:#}")),
    }
    row
}
