//! The results: one table on stdout, JSON for machines, an SVG chart for people.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Mechanism;

/// Round-trip percentiles, in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
}

/// One mechanism at one size (the JSON schema's ROW).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub mechanism: Mechanism,
    pub size: usize,
    pub rtt_ns: Option<Percentiles>,
    /// Median round trip of the raw spin hand-off measured just before this row, on the
    /// same CPUs: the row's ratio is against this, since a VM's cross-core latency can
    /// change from one minute to the next.
    pub spin_rtt_ns: Option<u64>,
    /// Streaming rate of the raw SPSC ring (`shm-ring`): the run's own `shm-ring` row of
    /// this size when the run has one, else re-measured just before this row. The row's
    /// streaming ratio is against this.
    pub ring_msgs_per_sec: Option<f64>,
    pub msgs_per_sec: Option<f64>,
    pub bytes_per_sec: Option<f64>,
    pub error: Option<String>,
}

/// The value at quantile `q` of sorted samples (nearest rank).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Row {
    pub fn new(mechanism: Mechanism, size: usize) -> Row {
        Row {
            mechanism,
            size,
            rtt_ns: None,
            spin_rtt_ns: None,
            ring_msgs_per_sec: None,
            msgs_per_sec: None,
            bytes_per_sec: None,
            error: None,
        }
    }

    pub fn set_rtts(&mut self, sorted: &[u64]) {
        self.rtt_ns = Some(Percentiles {
            p50: percentile(sorted, 0.5),
            p99: percentile(sorted, 0.99),
            p999: percentile(sorted, 0.999),
        });
    }

    pub fn set_rate(&mut self, msgs_per_sec: f64) {
        self.msgs_per_sec = Some(msgs_per_sec);
        self.bytes_per_sec = Some(msgs_per_sec * self.size as f64);
    }
}

fn micros(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1000.0)
}

/// Prints the table, each row with its median round trip as a multiple of the spin hand-off's
/// (`x spin`) and its streaming rate as a fraction of the raw ring's (`x ring`), both
/// measured beside it.
pub fn print_table(rows: &[Row]) -> std::io::Result<()> {
    outln!(
        "{:<18} {:>6} {:>10} {:>10} {:>10} {:>8} {:>12} {:>8} {:>8}",
        "MECHANISM",
        "SIZE",
        "RTT p50us",
        "p99us",
        "p99.9us",
        "x spin",
        "msgs/s",
        "GB/s",
        "x ring"
    )?;
    for row in rows {
        let spin = row.spin_rtt_ns;
        if let Some(err) = &row.error {
            outln!("{:<18} {:>6}  error: {err}", row.mechanism, row.size)?;
            continue;
        }
        let (p50, p99, p999, ratio) = match row.rtt_ns {
            Some(p) => (
                micros(p.p50),
                micros(p.p99),
                micros(p.p999),
                spin.map_or("-".into(), |s| {
                    format!("{:.2}", p.p50 as f64 / s.max(1) as f64)
                }),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let ring_ratio = match (row.msgs_per_sec, row.ring_msgs_per_sec) {
            (Some(m), Some(r)) if r > 0.0 => format!("{:.2}", m / r),
            _ => "-".into(),
        };
        outln!(
            "{:<18} {:>6} {:>10} {:>10} {:>10} {:>8} {:>12} {:>8} {:>8}",
            row.mechanism,
            row.size,
            p50,
            p99,
            p999,
            ratio,
            row.msgs_per_sec.map_or("-".into(), |m| format!("{m:.0}")),
            row.bytes_per_sec
                .map_or("-".into(), |b| format!("{:.3}", b / 1e9)),
            ring_ratio,
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    kernel: String,
}

/// CPUs online, from `/sys/devices/system/cpu/online` (`0-1,4`); not
/// `available_parallelism`, which sees only the one CPU the bench has pinned itself to.
fn online_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let count: usize = text
        .trim()
        .split(',')
        .filter_map(|range| match range.split_once('-') {
            Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
            None => range.parse::<usize>().ok().map(|_| 1),
        })
        .sum();
    count.max(1)
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let uname = rustix::system::uname();
    Machine {
        cores: online_cpus(),
        cpu,
        kernel: uname.release().to_string_lossy().into_owned(),
    }
}

/// The JSON document (schema in docs/BENCH.md).
#[derive(Serialize)]
struct Report<'a> {
    machine: Machine,
    results: &'a [Row],
}

/// Writes `{"machine": {...}, "results": [ROW, ...]}`.
pub fn write_json(path: &Path, rows: &[Row]) -> Result<()> {
    let doc = Report {
        machine: machine(),
        results: rows,
    };
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Draws median round trip (log scale) and throughput per mechanism, one colour per size.
pub fn write_plot(path: &Path, rows: &[Row]) -> Result<()> {
    use plotters::prelude::*;

    let mut mechanisms: Vec<Mechanism> = Vec::new();
    for row in rows {
        if !mechanisms.contains(&row.mechanism) {
            mechanisms.push(row.mechanism);
        }
    }
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let n = mechanisms.len().max(1);
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let colours = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN];
    let label = |x: &usize| mechanisms.get(*x).map_or(String::new(), |m| m.to_string());

    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                y_desc: &str,
                value: &dyn Fn(&Row) -> Option<f64>|
     -> Result<()> {
        let values: Vec<f64> = rows.iter().filter_map(value).filter(|v| *v > 0.0).collect();
        let lo = values
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .max(1e-3);
        let hi = values.iter().cloned().fold(0.0, f64::max).max(lo * 10.0);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(90)
            .y_label_area_size(70)
            .build_cartesian_2d(0usize..n, (lo / 2.0..hi * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&label)
            .x_label_style(
                ("sans-serif", 12)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .y_desc(y_desc)
            .draw()?;
        for (i, size) in sizes.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let points: Vec<(usize, f64)> = rows
                .iter()
                .filter(|r| r.size == *size)
                .filter_map(|r| {
                    let x = mechanisms.iter().position(|m| *m == r.mechanism)?;
                    value(r).filter(|v| *v > 0.0).map(|v| (x, v))
                })
                .collect();
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 5, colour.filled())))?
                .label(format!("{size} B"))
                .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    };
    draw(&top, "median round trip", "microseconds (log)", &|r| {
        r.rtt_ns.map(|p| p.p50 as f64 / 1000.0)
    })?;
    draw(&bottom, "one-way throughput", "GB/s (log)", &|r| {
        r.bytes_per_sec.map(|b| b / 1e9)
    })?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), 500);
        assert_eq!(percentile(&samples, 0.99), 990);
        assert_eq!(percentile(&samples, 0.999), 999);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn rate_gives_bytes_per_second() {
        let mut row = Row::new(Mechanism::Pipe, 4096);
        row.set_rate(1000.0);
        assert_eq!(row.bytes_per_sec, Some(4_096_000.0));
    }
}
