//! `ipckit bench --summary [FILE]`: the course notes' comparison table ("Comparison of IPC
//! Methods": speed, setup, complexity, network, use case), with the speed column measured on
//! this machine (a quick run, or the figures of a `--json` file) and the other columns as
//! facts, and a sentence for every row where the measurement disagrees with the notes.
//!
//! Speed is judged from the 64-byte median round trip against the pipe's, the row the notes
//! call "Fast": under 0.2x a pipe's is "Very fast", up to 1.3x "Fast", up to 2.5x "Medium",
//! beyond that "Slow". Streaming rates and the 64 KiB round trip are shown beside it, and
//! quoted when they tell another story.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::{measure_row, report, BenchArgs, Mechanism, Row};

/// One row of the notes' table, as ipckit measures and describes it.
struct Method {
    /// The notes' method, with the ipckit row that stands for it.
    method: &'static str,
    mechanism: Mechanism,
    /// The notes' words: speed, setup, complexity, network, use case.
    notes: [&'static str; 5],
    /// What setting it up takes, in calls.
    setup: &'static str,
    /// What the user must get right.
    complexity: &'static str,
    /// Whether it crosses machines.
    network: &'static str,
}

const METHODS: &[Method] = &[
    Method {
        method: "Pipes",
        mechanism: Mechanism::Pipe,
        notes: ["Fast", "Easy", "Simple", "No", "Shell commands"],
        setup: "pipe(2): one call; only the creator and its children hold the ends",
        complexity: "kernel-synchronised byte stream, one way; framing is the user's",
        network: "no: one kernel",
    },
    Method {
        method: "Named pipes",
        mechanism: Mechanism::Fifo,
        notes: ["Fast", "Easy", "Simple", "No", "Unrelated processes"],
        setup: "mkfifo(3), then open(2) by path; an open waits for the other end",
        complexity: "as a pipe, plus a name to create and remove; two for two ways",
        network: "no: the name is local, the data never touches the disk",
    },
    Method {
        method: "Sockets (Unix)",
        mechanism: Mechanism::UnixStream,
        notes: ["Slow", "Medium", "Medium", "No", "Local client-server"],
        setup: "socket, bind, listen, accept / socket, connect: five calls",
        complexity: "two-way byte stream; framing is the user's; passes descriptors",
        network: "no: AF_UNIX is one host",
    },
    Method {
        method: "Sockets (TCP)",
        mechanism: Mechanism::Tcp,
        notes: ["Slow", "Medium", "Medium", "Yes", "Network communication"],
        setup: "socket, bind, listen, accept / socket, connect; addresses and ports",
        complexity: "two-way byte stream; framing, Nagle (TCP_NODELAY) and partial I/O",
        network: "yes: any host the network reaches (measured here on loopback)",
    },
    Method {
        method: "Message queues (POSIX)",
        mechanism: Mechanism::PosixMq,
        notes: ["Medium", "Medium", "Medium", "No", "Structured messages"],
        setup: "mq_open(3) by name, with size limits from /proc/sys/fs/mqueue",
        complexity: "kernel keeps boundaries and priorities; small system limits",
        network: "no",
    },
    Method {
        method: "Message queues (System V)",
        mechanism: Mechanism::SysvMq,
        notes: ["Medium", "Medium", "Medium", "No", "Structured messages"],
        setup: "ftok(3) + msgget(2) by key; msgctl(2) to remove",
        complexity: "kernel keeps boundaries and types (typed receive); small limits",
        network: "no",
    },
    Method {
        method: "Shared memory (busy-poll)",
        mechanism: Mechanism::MailboxSpin,
        notes: [
            "Very fast",
            "Hard",
            "Complex",
            "No",
            "Large fast data transfer",
        ],
        setup: "shm_open, ftruncate, mmap, then a synchronisation protocol; ipckit: \
                Mailbox::create",
        complexity: "the user's own synchronisation (ipckit: the mailbox's slot protocol)",
        network: "no (ipckit bridge carries mailboxes over Zenoh)",
    },
    Method {
        method: "Shared memory (sleeping)",
        mechanism: Mechanism::MailboxSleep,
        notes: [
            "Very fast",
            "Hard",
            "Complex",
            "No",
            "Large fast data transfer",
        ],
        setup: "as the busy-poll row",
        complexity: "as the busy-poll row; a waiting side sleeps on a futex",
        network: "no",
    },
];

/// What the summary needs of one measured row.
#[derive(Debug, Clone, PartialEq)]
struct Figure {
    mechanism: String,
    size: u64,
    rtt_p50_ns: Option<u64>,
    msgs_per_sec: Option<f64>,
    error: Option<String>,
}

impl From<&Row> for Figure {
    fn from(row: &Row) -> Figure {
        Figure {
            mechanism: row.mechanism.to_string(),
            size: row.size as u64,
            rtt_p50_ns: row.rtt_ns.map(|p| p.p50),
            msgs_per_sec: row.msgs_per_sec,
            error: row.error.clone(),
        }
    }
}

/// Reads the rows of a `--json` file (schema in docs/BENCH.md).
fn read_json(path: &Path) -> Result<Vec<Figure>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON written by `ipckit bench --json`",
            path.display()
        )
    })?;
    let Some(results) = doc["results"].as_array() else {
        bail!(
            "{} has no \"results\" array: write it with `ipckit bench --json FILE`",
            path.display()
        );
    };
    Ok(results
        .iter()
        .filter_map(|row| {
            Some(Figure {
                mechanism: row["mechanism"].as_str()?.to_string(),
                size: row["size"].as_u64()?,
                rtt_p50_ns: row["rtt_ns"]["p50"].as_u64(),
                msgs_per_sec: row["msgs_per_sec"].as_f64(),
                error: row["error"].as_str().map(str::to_string),
            })
        })
        .collect())
}

/// Measures the summary's rows: the mechanisms of [`METHODS`] (those of `--mechanisms`, if
/// given), at 64 B and 64 KiB unless `--sizes` says otherwise, in short phases.
fn measure(args: &BenchArgs) -> Result<(Vec<Row>, report::LoadBudget)> {
    let mechanisms: Vec<Mechanism> = METHODS
        .iter()
        .map(|m| m.mechanism)
        .filter(|m| args.mechanisms.is_empty() || args.mechanisms.contains(m))
        .collect();
    if mechanisms.is_empty() {
        bail!(
            "none of --mechanisms is in the notes' table; the summary measures {}",
            METHODS
                .iter()
                .map(|m| m.mechanism.name())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let sizes = if args.sizes.is_empty() {
        vec![64, 65536]
    } else {
        args.sizes.clone()
    };
    if let Some(&bad) = sizes.iter().find(|&&s| s < 8) {
        bail!("message size {bad} is too small: every message carries an 8-byte sequence number");
    }
    let phase = args.duration.unwrap_or(Duration::from_millis(150));
    super::harness::pin(0);
    let progress = ProgressBar::new((mechanisms.len() * sizes.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"),
    );
    let mut rows = Vec::new();
    // The load around each row, as the full run measures it (see `bench`).
    let budget = report::LoadBudget::here();
    let mut load = super::harness::cpus_busy(super::LOAD_WINDOW);
    for &size in &sizes {
        for &mechanism in &mechanisms {
            progress.set_message(format!("{mechanism} {size} B"));
            let mut row = measure_row(mechanism, size, phase, false);
            let after = super::harness::cpus_busy(super::LOAD_WINDOW);
            row.finish(load, after, &budget);
            load = after;
            rows.push(row);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    if let Some(warning) = report::load_warning(&rows, &budget) {
        eprintln!("warning: {warning}");
    }
    Ok((rows, budget))
}

/// Runs `ipckit bench --summary [FILE]`: from `FILE`'s figures, or from a quick run (whose
/// rows `--json` also writes).
pub fn summary(args: &BenchArgs, from: Option<&Path>) -> Result<()> {
    let figures = match from {
        Some(path) => read_json(path)?,
        None => {
            let (rows, budget) = measure(args)?;
            if let Some(path) = &args.json {
                report::write_json(path, &rows, &budget)?;
            }
            rows.iter().map(Figure::from).collect()
        }
    };
    print_summary(&figures)
}

fn find(figures: &[Figure], mechanism: Mechanism, size: u64) -> Option<&Figure> {
    figures
        .iter()
        .find(|f| f.mechanism == mechanism.name() && f.size == size)
}

/// The speed word for a round trip `ratio` times a pipe's.
fn speed_word(ratio: f64) -> &'static str {
    if ratio < 0.2 {
        "Very fast"
    } else if ratio <= 1.3 {
        "Fast"
    } else if ratio <= 2.5 {
        "Medium"
    } else {
        "Slow"
    }
}

/// A duration in nanoseconds as the tables print it: `620 ns`, `45.9 µs`, `1.3 ms`.
pub(super) fn time(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn rate(msgs: f64) -> String {
    if msgs >= 1e6 {
        format!("{:.2} M/s", msgs / 1e6)
    } else {
        format!("{:.0} k/s", msgs / 1e3)
    }
}

/// One printed row: the cells, and what it says against the notes.
struct Line {
    cells: [String; 10],
    disagreement: Option<String>,
}

fn line(method: &Method, figures: &[Figure], pipe: Option<&Figure>) -> Line {
    let small = find(figures, method.mechanism, 64);
    let large = find(figures, method.mechanism, 65536);
    let cell = |f: Option<&Figure>, pick: &dyn Fn(&Figure) -> Option<String>| match f {
        Some(f) if f.error.is_some() => "not measured".to_string(),
        Some(f) => pick(f).unwrap_or_else(|| "-".into()),
        None => "-".into(),
    };
    let rtt = |f: &Figure| f.rtt_p50_ns.map(time);
    let pipe_rtt = pipe.and_then(|p| p.rtt_p50_ns).filter(|&ns| ns > 0);
    let ratio = small
        .and_then(|f| f.rtt_p50_ns)
        .zip(pipe_rtt)
        .map(|(ns, pipe)| ns as f64 / pipe as f64);
    let here = ratio.map_or("-", speed_word);
    let notes = method.notes[0];
    let disagreement = match ratio {
        Some(r) if here != notes => {
            let mut text = format!(
                "{} ({}): the notes say {notes}; here a 64 B round trip takes {r:.2}x a pipe's ({here})",
                method.method,
                method.mechanism.name()
            );
            let pipe_rate = pipe.and_then(|p| p.msgs_per_sec).filter(|&m| m > 0.0);
            if let (Some(m), Some(p)) = (small.and_then(|f| f.msgs_per_sec), pipe_rate) {
                text += &format!(
                    ", and streaming 64 B messages it moves {:.2}x as many",
                    m / p
                );
            }
            let pipe_large = find(figures, Mechanism::Pipe, 65536).and_then(|f| f.rtt_p50_ns);
            if let (Some(ns), Some(p)) = (large.and_then(|f| f.rtt_p50_ns), pipe_large) {
                text += &format!(
                    "; at 64 KiB its round trip is {:.2}x a pipe's",
                    ns as f64 / p as f64
                );
            }
            Some(text + ".")
        }
        _ => None,
    };
    Line {
        cells: [
            method.method.to_string(),
            method.mechanism.name().to_string(),
            notes.to_string(),
            here.to_string(),
            cell(small, &rtt),
            cell(small, &|f: &Figure| f.msgs_per_sec.map(rate)),
            cell(large, &rtt),
            method.notes[1].to_string(),
            method.notes[2].to_string(),
            method.notes[3].to_string(),
        ],
        disagreement,
    }
}

fn print_summary(figures: &[Figure]) -> Result<()> {
    let pipe = find(figures, Mechanism::Pipe, 64).filter(|f| f.error.is_none());
    let header = [
        "METHOD",
        "ROW",
        "SPEED (NOTES)",
        "SPEED (HERE)",
        "RTT 64 B",
        "STREAM 64 B",
        "RTT 64 KiB",
        "SETUP",
        "COMPLEXITY",
        "NETWORK",
    ];
    let lines: Vec<Line> = METHODS
        .iter()
        .filter(|m| figures.iter().any(|f| f.mechanism == m.mechanism.name()))
        .map(|m| line(m, figures, pipe))
        .collect();
    if lines.is_empty() {
        bail!(
            "no figures for the notes' rows ({}); run `ipckit bench --summary` to measure them",
            METHODS
                .iter()
                .map(|m| m.mechanism.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l.cells[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let print_row = |cells: &[&str]| -> std::io::Result<()> {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        outln!("{}", text.join("  ").trim_end())
    };
    outln!("The notes' comparison of IPC methods, with the speed measured on this machine")?;
    outln!("(SPEED (HERE): the 64 B round trip against a pipe's; setup, complexity and network as the notes say).")?;
    outln!()?;
    print_row(&header)?;
    for l in &lines {
        print_row(&l.cells.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    if pipe.is_none() {
        outln!()?;
        outln!("No 64 B pipe row was measured: SPEED (HERE) needs it as the yardstick.")?;
    }
    outln!()?;
    outln!("Setup, complexity and network, in facts:")?;
    for m in METHODS
        .iter()
        .filter(|m| lines.iter().any(|l| l.cells[1] == m.mechanism.name()))
    {
        outln!(
            "  {}: setup {}; {}; network: {}; the notes' use: {}.",
            m.method,
            m.setup,
            m.complexity,
            m.network,
            m.notes[4].to_lowercase()
        )?;
    }
    let disagreements: Vec<&String> = lines
        .iter()
        .filter_map(|l| l.disagreement.as_ref())
        .collect();
    outln!()?;
    if disagreements.is_empty() {
        outln!("Every measured speed agrees with the notes.")?;
    } else {
        outln!("Where this machine disagrees with the notes:")?;
        for d in disagreements {
            outln!("  {d}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(mechanism: &str, size: u64, rtt: u64, rate: f64) -> Figure {
        Figure {
            mechanism: mechanism.into(),
            size,
            rtt_p50_ns: Some(rtt),
            msgs_per_sec: Some(rate),
            error: None,
        }
    }

    #[test]
    fn speed_words_follow_the_ratio_to_a_pipe() {
        assert_eq!(speed_word(0.01), "Very fast");
        assert_eq!(speed_word(1.1), "Fast");
        assert_eq!(speed_word(2.0), "Medium");
        assert_eq!(speed_word(3.0), "Slow");
    }

    #[test]
    fn a_socket_as_fast_as_a_pipe_is_a_disagreement_with_its_figures() {
        let figures = [
            figure("pipe", 64, 48_000, 2.0e6),
            figure("unix-stream", 64, 52_800, 0.8e6),
            figure("pipe", 65536, 190_000, 4e3),
            figure("unix-stream", 65536, 95_000, 4e3),
        ];
        let pipe = find(&figures, Mechanism::Pipe, 64);
        let unix = METHODS
            .iter()
            .find(|m| m.mechanism == Mechanism::UnixStream)
            .unwrap();
        let l = line(unix, &figures, pipe);
        assert_eq!(l.cells[3], "Fast");
        let text = l.disagreement.unwrap();
        assert!(text.contains("the notes say Slow"), "{text}");
        assert!(text.contains("1.10x a pipe's"), "{text}");
        assert!(text.contains("moves 0.40x as many"), "{text}");
        assert!(text.contains("at 64 KiB its round trip is 0.50x"), "{text}");
        let pipe_line = line(&METHODS[0], &figures, pipe);
        assert!(pipe_line.disagreement.is_none());
    }
}
