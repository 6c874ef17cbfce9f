//! `ipckit bench`, driven through the built binary.

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::prelude::*;

fn ipckit() -> Command {
    Command::cargo_bin("ipckit").unwrap()
}

#[test]
fn json_has_the_documented_schema_and_every_row_measured() {
    let json = std::env::temp_dir().join(format!("bench-{}.json", std::process::id()));
    let svg = std::env::temp_dir().join(format!("bench-{}.svg", std::process::id()));
    let out = ipckit()
        .args([
            "bench",
            "--mechanisms",
            "pipe,mailbox-spin,shm-spin",
            "--sizes",
            "64,4k",
        ])
        .args(["--duration", "50ms", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("MECHANISM") && table.contains("mailbox-spin"),
        "{table}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(doc["machine"]["cores"].as_u64().unwrap() >= 1);
    let rows = doc["results"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        assert!(row["error"].is_null(), "{row}");
        assert!(row["rtt_ns"]["p50"].as_u64().unwrap() > 0, "{row}");
        assert!(row["rtt_ns"]["p99"].as_u64() >= row["rtt_ns"]["p50"].as_u64());
        assert!(row["msgs_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["spin_rtt_ns"].as_u64().unwrap() > 0, "{row}");
        let size = row["size"].as_f64().unwrap();
        let bytes = row["bytes_per_sec"].as_f64().unwrap();
        assert!((bytes - size * row["msgs_per_sec"].as_f64().unwrap()).abs() < 1.0);
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("mailbox-spin"));
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
}

#[test]
fn an_unknown_mechanism_is_a_usage_error_naming_the_known_ones() {
    let out = ipckit()
        .args(["bench", "--mechanisms", "carrier-pigeon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("carrier-pigeon") && stderr.contains("mailbox"),
        "{stderr}"
    );
    ipckit().args(["bench", "--sizes", "4"]).assert().code(1);
    ipckit()
        .args(["bench", "--duration", "soon"])
        .assert()
        .code(2);
}

#[test]
fn a_failing_mechanism_becomes_an_error_row_not_an_abort() {
    // A message too large for a UDP datagram fails that row only.
    let out = ipckit()
        .args([
            "bench",
            "--mechanisms",
            "udp,pipe",
            "--sizes",
            "100000",
            "--duration",
            "20ms",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let udp = table.lines().find(|l| l.starts_with("udp")).unwrap();
    // A short reason in the table (the full one is in the JSON), the table's width kept.
    assert!(
        udp.contains("failed: limit: datagram max 65507 B"),
        "{table}"
    );
    assert!(udp.len() < 120, "{udp}");
    let pipe = table.lines().find(|l| l.starts_with("pipe")).unwrap();
    assert!(!pipe.contains("failed"), "{table}");
}

/// Issue 17: a `--duration` past 60 s works (peers once gave up after a fixed minute, failing
/// every row with "no echo of message ..."). About two minutes and a half: `.ci/run` runs it.
#[test]
#[ignore]
fn a_duration_past_sixty_seconds_measures_the_row() {
    let json = std::env::temp_dir().join(format!("bench-long-{}.json", std::process::id()));
    let mut child = ipckit()
        .args(["bench", "--mechanisms", "pipe", "--sizes", "64"])
        .args(["--duration", "61s", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Watchdog: two phases of 61 s and the calibration, with room to spare.
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(300) {
            let _ = child.kill();
            panic!("bench still running after 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let row = &doc["results"][0];
    assert!(row["error"].is_null(), "{row}");
    assert!(row["rtt_ns"]["p50"].as_u64().unwrap() > 0, "{row}");
    assert!(row["msgs_per_sec"].as_f64().unwrap() > 0.0, "{row}");
}

#[test]
fn the_json_reports_the_load_around_each_row() {
    let json = std::env::temp_dir().join(format!("bench-load-{}.json", std::process::id()));
    let out = ipckit()
        .args(["bench", "--mechanisms", "pipe", "--sizes", "64"])
        .args(["--duration", "20ms", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("LOAD"), "{table}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert!(doc["load"]["cpus"].as_u64().unwrap() >= 1, "{doc}");
    assert!(doc["load"]["needed"].as_u64().unwrap() >= 1, "{doc}");
    let row = &doc["results"][0];
    assert!(row["load_before"].as_f64().unwrap() >= 0.0, "{row}");
    assert!(row["load_after"].as_f64().unwrap() >= 0.0, "{row}");
    let noisy = row["noisy"].as_bool().unwrap();
    // A noisy row is said in the table, and the run's warning in both.
    assert_eq!(table.contains("warning:"), noisy, "{table}");
    assert_eq!(doc["load"]["warning"].is_string(), noisy, "{doc}");
}
