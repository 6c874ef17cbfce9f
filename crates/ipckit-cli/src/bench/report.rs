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
    /// Why the row could not be measured, in full.
    pub error: Option<String>,
    /// The same, short enough for the table (`limit: msgsize_max 8192`).
    pub error_short: Option<String>,
    /// CPUs other work kept busy just before the row, and just after it.
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
    /// The load before or after left this run fewer CPUs than it needs: its figures may be
    /// too slow.
    pub noisy: bool,
}

/// What the run needs of the machine, to judge each row's load against.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoadBudget {
    /// CPUs online.
    pub cpus: usize,
    /// CPUs the run needs to itself: the parent and the peer, each on its own.
    pub needed: usize,
    /// A row is noisy when other work kept more than this many CPUs busy before or after it.
    pub limit: f64,
}

impl LoadBudget {
    /// Slack for the tick-granular measure (10 ms ticks over a 100 ms window).
    const TOLERANCE: f64 = 0.25;

    /// The budget of a run on this machine.
    pub fn here() -> LoadBudget {
        let cpus = online_cpus();
        let needed = cpus.min(2);
        LoadBudget {
            cpus,
            needed,
            limit: (cpus - needed) as f64 + Self::TOLERANCE,
        }
    }
}

/// A failure's reason short enough for a table cell: the limit it hit where that is known,
/// else its first words.
pub fn short_reason(mechanism: Mechanism, error: &str) -> String {
    let number_after = |key: &str| -> Option<String> {
        let rest = &error[error.find(key)? + key.len()..];
        let digits: String = rest
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!digits.is_empty()).then_some(digits)
    };
    if let Some(n) = number_after("msgsize_max") {
        return format!("limit: msgsize_max {n}");
    }
    if let Some(n) = number_after("exceeds the maximum of") {
        return match mechanism {
            Mechanism::SysvMq => format!("limit: msgmax {n}"),
            Mechanism::Udp => format!("limit: datagram max {n} B"),
            _ => format!("limit: max message {n} B"),
        };
    }
    for (needle, short) in [
        ("no echo of message", "no echo (peer silent)"),
        ("exited before saying", "peer exited early"),
        ("did not exit", "peer did not exit"),
        ("timed out", "timed out"),
        ("Permission denied", "permission denied"),
    ] {
        if error.contains(needle) {
            return short.to_string();
        }
    }
    const MAX: usize = 40;
    let first = error.split(": ").next().unwrap_or(error);
    if first.chars().count() <= MAX {
        first.to_string()
    } else {
        let cut: String = first.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
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
            error_short: None,
            load_before: None,
            load_after: None,
            noisy: false,
        }
    }

    /// Records the load measured around the row, judged against `budget`, and the short
    /// form of its error.
    pub fn finish(&mut self, before: Option<f64>, after: Option<f64>, budget: &LoadBudget) {
        self.load_before = before;
        self.load_after = after;
        self.noisy = before.into_iter().chain(after).any(|l| l > budget.limit);
        self.error_short = self
            .error
            .as_deref()
            .map(|e| short_reason(self.mechanism, e));
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

fn load_text(load: Option<f64>) -> String {
    load.map_or("?".into(), |l| format!("{l:.1}"))
}

/// Prints the table, each row with its median round trip as a multiple of the spin hand-off's
/// (`x spin`) and its streaming rate as a fraction of the raw ring's (`x ring`), both
/// measured beside it, and the load around it (`LOAD`: CPUs other work kept busy
/// before/after the row; `!` marks a row that ran short of CPUs), then a warning if any row
/// did.
pub fn print_table(rows: &[Row], budget: &LoadBudget) -> std::io::Result<()> {
    outln!(
        "{:<18} {:>6} {:>10} {:>10} {:>10} {:>8} {:>12} {:>8} {:>8} {:>9}",
        "MECHANISM",
        "SIZE",
        "RTT p50us",
        "p99us",
        "p99.9us",
        "x spin",
        "msgs/s",
        "GB/s",
        "x ring",
        "LOAD"
    )?;
    for row in rows {
        let spin = row.spin_rtt_ns;
        let load = format!(
            "{}/{}{}",
            load_text(row.load_before),
            load_text(row.load_after),
            if row.noisy { " !" } else { "" }
        );
        if let Some(err) = &row.error {
            let short = row.error_short.as_deref().unwrap_or(err);
            outln!(
                "{:<18} {:>6}  failed: {:<56} {:>9}",
                row.mechanism,
                row.size,
                short,
                load
            )?;
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
            "{:<18} {:>6} {:>10} {:>10} {:>10} {:>8} {:>12} {:>8} {:>8} {:>9}",
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
            load,
        )?;
    }
    if rows.iter().any(|r| r.error.is_some()) {
        outln!("(failed rows: the full reason is in --json's \"error\")")?;
    }
    if let Some(warning) = load_warning(rows, budget) {
        outln!("warning: {warning}")?;
    }
    if let Some(warning) = speed_warning(rows) {
        outln!("warning: {warning}")?;
    }
    Ok(())
}

/// How far the spin reference may move within one run before the run is called unsteady:
/// a cross-core hand-off does not double on a steady machine, while a host that moves a VM's
/// vCPUs to another placement changes it 3–4x.
const SPEED_SPREAD: f64 = 2.0;

/// The run's speed warning, if the spin reference measured before its rows (one size at a
/// time: it grows with the size) spread by more than [`SPEED_SPREAD`]: the machine itself
/// changed speed during the run, which no load figure shows.
pub fn speed_warning(rows: &[Row]) -> Option<String> {
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (size, low, high) = sizes
        .into_iter()
        .filter_map(|size| {
            let spins = rows
                .iter()
                .filter(|r| r.size == size)
                .filter_map(|r| r.spin_rtt_ns);
            let (low, high) = spins.fold(None, |range, ns| match range {
                None => Some((ns, ns)),
                Some((low, high)) => Some((ns.min(low), ns.max(high))),
            })?;
            Some((size, low.max(1), high))
        })
        .max_by(|a, b| (a.2 as f64 / a.1 as f64).total_cmp(&(b.2 as f64 / b.1 as f64)))?;
    let spread = high as f64 / low as f64;
    (spread > SPEED_SPREAD).then(|| {
        format!(
            "the spin hand-off's round trip at {size} B ranged from {} to {} during this run              ({spread:.1}x): the machine changed speed (on a VM, the host moving its vCPUs);              each row's x spin and x ring are against references measured right before it,              but absolute figures of rows measured at different speeds do not compare              (spin_rtt_ns in --json says which speed each row saw)",
            super::summary::time(low),
            super::summary::time(high)
        )
    })
}

/// The run's load warning, if any row ran while other work left it short of CPUs.
pub fn load_warning(rows: &[Row], budget: &LoadBudget) -> Option<String> {
    let noisy = rows.iter().filter(|r| r.noisy).count();
    if noisy == 0 {
        return None;
    }
    let worst = rows
        .iter()
        .flat_map(|r| r.load_before.into_iter().chain(r.load_after))
        .fold(0.0, f64::max);
    Some(format!(
        "{noisy} of {} rows (marked !) ran while other work kept up to {worst:.1} of {} CPUs \
         busy; this run needs {} to itself, so their figures may be too slow: rerun on a \
         quiet machine",
        rows.len(),
        budget.cpus,
        budget.needed
    ))
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

/// The run's load, as the JSON reports it.
#[derive(Serialize)]
struct Load {
    #[serde(flatten)]
    budget: LoadBudget,
    noisy_rows: usize,
    warning: Option<String>,
    /// [`speed_warning`]: the machine changed speed during the run.
    speed_warning: Option<String>,
}

/// The JSON document (schema in docs/BENCH.md).
#[derive(Serialize)]
struct Report<'a> {
    machine: Machine,
    load: Load,
    results: &'a [Row],
}

/// Writes `{"machine": {...}, "load": {...}, "results": [ROW, ...]}`.
pub fn write_json(path: &Path, rows: &[Row], budget: &LoadBudget) -> Result<()> {
    let doc = Report {
        machine: machine(),
        load: Load {
            budget: *budget,
            noisy_rows: rows.iter().filter(|r| r.noisy).count(),
            warning: load_warning(rows, budget),
            speed_warning: speed_warning(rows),
        },
        results: rows,
    };
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A log axis's tick as people write it: `1000`, `0.5`, `0.0001`.
fn tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-v.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// A row's figure in a panel, if it has one.
type Figure<'a> = &'a dyn Fn(&Row) -> Option<f64>;

/// One panel of the chart: what it shows and how to read a row's figures in it.
struct Panel<'a> {
    title: &'a str,
    y_desc: &'a str,
    /// The row's main figure (the dot).
    value: Figure<'a>,
    /// A second figure drawn beside it (a triangle joined to the dot), if the panel has one.
    tail: Option<Figure<'a>>,
    /// What an unfailed row without a figure here is (`one-way only`).
    missing: &'a str,
}

/// Draws two panels, round trip (median and p99.9; lower is better) and one-way throughput
/// (higher is better), log scales extended to every value (nothing is clamped), one colour
/// per size beside each other at each mechanism, and a red "failed" label for each row that
/// could not be measured.
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
    sizes.sort_unstable();
    sizes.dedup();
    let n = mechanisms.len().max(1);
    let root = SVGBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(500);
    let colours = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN];
    // Each size its own column beside the mechanism's tick.
    let x_of = |row: &Row| -> Option<f64> {
        let m = mechanisms.iter().position(|m| *m == row.mechanism)? as f64;
        let s = sizes.iter().position(|s| *s == row.size)? as f64;
        Some(m + (s - (sizes.len() as f64 - 1.0) / 2.0) * 0.22)
    };

    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                panel: &Panel<'_>|
     -> Result<()> {
        let figures = |r: &Row| {
            let tail = panel.tail.and_then(|t| t(r));
            (panel.value)(r)
                .into_iter()
                .chain(tail)
                .collect::<Vec<f64>>()
        };
        let values: Vec<f64> = rows
            .iter()
            .flat_map(figures)
            .filter(|v| *v > 0.0 && v.is_finite())
            .collect();
        let (lo, hi) = if values.is_empty() {
            (1.0, 10.0)
        } else {
            (
                values.iter().cloned().fold(f64::INFINITY, f64::min),
                values.iter().cloned().fold(0.0, f64::max),
            )
        };
        // Room below the lowest value for the failure labels, above the highest for the
        // legend: the axis extends to every value, nothing is clamped.
        let (bottom_y, top_y) = (lo / 20.0, hi * (hi / lo).max(10.0).powf(0.35));
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(130)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.6f64..n as f64 - 0.4, (bottom_y..top_y).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|v| tick(*v))
            .y_desc(panel.y_desc)
            .draw()?;
        // The mechanisms' names, drawn by hand so that each sits under its own tick and
        // clear of the axis (rotated, starting 10 px below it).
        for (i, m) in mechanisms.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64, bottom_y));
            root.draw(&Text::new(
                m.to_string(),
                (px - 6, py + 10),
                ("sans-serif", 13)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            ))?;
        }
        for (i, size) in sizes.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let of_size: Vec<&Row> = rows.iter().filter(|r| r.size == *size).collect();
            let dots: Vec<(f64, f64)> = of_size
                .iter()
                .filter_map(|r| Some((x_of(r)?, (panel.value)(r).filter(|v| *v > 0.0)?)))
                .collect();
            chart
                .draw_series(dots.iter().map(|p| Circle::new(*p, 5, colour.filled())))?
                .label(format!("{size} B"))
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
            if let Some(tail) = panel.tail {
                for r in &of_size {
                    let (Some(x), Some(a), Some(b)) = (x_of(r), (panel.value)(r), tail(r)) else {
                        continue;
                    };
                    if a <= 0.0 || b <= 0.0 {
                        continue;
                    }
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, a), (x, b)],
                        colour.stroke_width(1),
                    )))?;
                    chart.draw_series(std::iter::once(TriangleMarker::new(
                        (x, b),
                        5,
                        colour.filled(),
                    )))?;
                }
            }
        }
        if panel.tail.is_some() {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label("dot: median, triangle: p99.9")
                .legend(|(x, y)| TriangleMarker::new((x, y), 4, BLACK.filled()));
        }
        // Rows with no figure here: a failure in red, naming the mechanism; a one-way row
        // in grey. Drawn upwards from the bottom, in the row's own column.
        let font = |colour: RGBColor| {
            ("sans-serif", 11)
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&colour)
        };
        for r in rows {
            let Some(x) = x_of(r) else { continue };
            let figure = (panel.value)(r).filter(|v| *v > 0.0 && v.is_finite());
            let text = match (&r.error, figure) {
                (Some(_), _) => format!("{} {} B failed", r.mechanism, r.size),
                (None, None) => format!("{} {} B: {}", r.mechanism, r.size, panel.missing),
                (None, Some(_)) => continue,
            };
            let colour = if r.error.is_some() {
                RGBColor(200, 0, 0)
            } else {
                RGBColor(110, 110, 110)
            };
            chart.draw_series(std::iter::once(Cross::new(
                (x, bottom_y * 1.5),
                4,
                colour.stroke_width(2),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                text,
                (x - 0.05, bottom_y * 2.5),
                font(colour),
            )))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    };
    draw(
        &top,
        &Panel {
            title: "round trip: median and p99.9 (lower is better)",
            y_desc: "microseconds (log)",
            value: &|r| r.rtt_ns.map(|p| p.p50 as f64 / 1000.0),
            tail: Some(&|r| r.rtt_ns.map(|p| p.p999 as f64 / 1000.0)),
            missing: "one-way only",
        },
    )?;
    draw(
        &bottom,
        &Panel {
            title: "one-way throughput (higher is better)",
            y_desc: "GB/s (log)",
            value: &|r| r.bytes_per_sec.map(|b| b / 1e9),
            tail: None,
            missing: "no throughput",
        },
    )?;
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

    /// Every mechanism at three sizes: throughputs down to 0.0001 GB/s (once drawn as one
    /// point on the axis), failed rows, and the one-way row.
    fn sample_rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for (s, &size) in [64usize, 4096, 65536].iter().enumerate() {
            for (m, &mechanism) in Mechanism::all().iter().enumerate() {
                let mut row = Row::new(mechanism, size);
                let k = (s * 100 + m) as u64;
                if size == 65536 && matches!(mechanism, Mechanism::Udp | Mechanism::SysvMq) {
                    row.error = Some("a message of 65536 bytes exceeds the maximum".into());
                } else {
                    if mechanism != Mechanism::TopicFanout {
                        let p50 = 150 + 977 * k;
                        row.set_rtts(&[p50, p50 * 2, p50 * 5]);
                    }
                    row.set_rate((1.0 + k as f64) * 1e5 / size as f64);
                }
                row.finish(None, None, &LoadBudget::here());
                rows.push(row);
            }
        }
        rows
    }

    /// The `(cx, cy)` of every `<circle>` of radius `r` in `svg`.
    fn circles(svg: &str, r: &str) -> Vec<(String, String)> {
        let attr = |el: &str, name: &str| -> String {
            let start = el.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            el[start..].split('"').next().unwrap().to_string()
        };
        svg.split("<circle")
            .skip(1)
            .map(|el| el.split("/>").next().unwrap())
            .filter(|el| attr(el, "r") == r)
            .map(|el| (attr(el, "cx"), attr(el, "cy")))
            .collect()
    }

    #[test]
    fn the_chart_shows_every_row_as_a_point_or_a_failure_mark() {
        let rows = sample_rows();
        let path = std::env::temp_dir().join(format!("chart-{}.svg", std::process::id()));
        write_plot(&path, &rows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        // Each measured figure is its own dot: none clamped onto another.
        let dots = circles(&svg, "5");
        let with_rtt = rows.iter().filter(|r| r.rtt_ns.is_some()).count();
        let with_rate = rows.iter().filter(|r| r.bytes_per_sec.is_some()).count();
        assert_eq!(dots.len(), with_rtt + with_rate);
        let mut distinct = dots.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), dots.len(), "two figures drawn on one spot");
        // Each failed row is labelled in both panels, naming its mechanism.
        for row in rows.iter().filter(|r| r.error.is_some()) {
            let mark = format!("{} {} B failed", row.mechanism, row.size);
            assert_eq!(svg.matches(&mark).count(), 2, "{mark}");
        }
        assert!(svg.contains("topic-fanout 64 B: one-way only"));
        assert!(svg.contains("lower is better") && svg.contains("higher is better"));
        assert!(svg.contains("p99.9"));
        // One p99.9 triangle per round trip (and one in the legend).
        assert_eq!(svg.matches("<polygon").count(), with_rtt + 1);
    }

    #[test]
    fn short_reasons_fit_the_table() {
        let posix = "POSIX queue \"bench-posix-mq-29809-ping\": the system limit \
                     /proc/sys/fs/mqueue/msg_max (now 10) or /proc/sys/fs/mqueue/msgsize_max \
                     (now 8192) (asked for 10 messages of 65536 bytes) was reached: Invalid \
                     argument (os error 22)";
        assert_eq!(
            short_reason(Mechanism::PosixMq, posix),
            "limit: msgsize_max 8192"
        );
        let too_big = "a message of 65536 bytes exceeds the maximum of 8192 bytes";
        assert_eq!(
            short_reason(Mechanism::SysvMq, too_big),
            "limit: msgmax 8192"
        );
        let udp = "a message of 65536 bytes exceeds the maximum of 65507 bytes";
        assert_eq!(
            short_reason(Mechanism::Udp, udp),
            "limit: datagram max 65507 B"
        );
        let long = "x".repeat(200);
        assert!(short_reason(Mechanism::Pipe, &long).chars().count() <= 40);
    }

    #[test]
    fn a_row_is_noisy_when_other_work_leaves_too_few_cpus() {
        let budget = LoadBudget {
            cpus: 2,
            needed: 2,
            limit: 0.25,
        };
        let mut row = Row::new(Mechanism::Pipe, 64);
        row.finish(Some(0.1), Some(0.2), &budget);
        assert!(!row.noisy);
        row.finish(Some(0.1), Some(1.3), &budget);
        assert!(row.noisy);
        let warning = load_warning(&[row], &budget).unwrap();
        assert!(
            warning.contains("1 of 1 rows") && warning.contains("1.3"),
            "{warning}"
        );
    }

    #[test]
    fn a_run_whose_spin_reference_moves_more_than_twofold_is_called_unsteady() {
        let row = |size: usize, spin: Option<u64>| {
            let mut row = Row::new(Mechanism::Pipe, size);
            row.spin_rtt_ns = spin;
            row
        };
        // Steady: 150-280 ns at 64 B; sizes are compared only with themselves.
        let steady = [
            row(64, Some(150)),
            row(64, Some(280)),
            row(64, None),
            row(65536, Some(10_000)),
        ];
        assert_eq!(speed_warning(&steady), None);
        let moved = [row(64, Some(150)), row(64, Some(620)), row(4096, Some(900))];
        let warning = speed_warning(&moved).unwrap();
        assert!(
            warning.contains("at 64 B") && warning.contains("150 ns") && warning.contains("620 ns"),
            "{warning}"
        );
        assert!(warning.contains("4.1x"), "{warning}");
        assert_eq!(speed_warning(&[]), None);
    }

    #[test]
    fn rate_gives_bytes_per_second() {
        let mut row = Row::new(Mechanism::Pipe, 4096);
        row.set_rate(1000.0);
        assert_eq!(row.bytes_per_sec, Some(4_096_000.0));
    }
}
