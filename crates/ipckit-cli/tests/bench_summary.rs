//! Issue 18, item 5: `ipckit bench --summary` prints the notes' comparison table from measured
//! figures (a quick run, or a `--json` file) and says where they disagree with the notes.

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn ipckit() -> Command {
    Command::cargo_bin("ipckit").unwrap()
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn row(mechanism: &str, size: u64, p50: u64, rate: f64) -> serde_json::Value {
    serde_json::json!({
        "mechanism": mechanism, "size": size,
        "rtt_ns": {"p50": p50, "p99": p50, "p999": p50},
        "spin_rtt_ns": 150, "msgs_per_sec": rate, "bytes_per_sec": rate * size as f64,
        "error": null
    })
}

#[test]
fn summary_from_a_json_file_names_each_disagreement() {
    let path = std::env::temp_dir().join(format!("summary-{}.json", std::process::id()));
    let doc = serde_json::json!({
        "machine": {"cores": 2, "cpu": "test", "kernel": "test"},
        "results": [
            row("pipe", 64, 48_000, 2.0e6),
            row("unix-stream", 64, 50_400, 0.8e6),
            row("posix-mq", 64, 100_000, 1.0e6),
            row("mailbox-spin", 64, 230, 16e6),
            // The default wait spins first: not the sleeping row, which is `mailbox-sleep`.
            row("mailbox", 64, 160, 16e6),
            row("mailbox-sleep", 64, 46_500, 15e6),
            row("pipe", 65536, 190_000, 4e3),
            row("unix-stream", 65536, 90_000, 4e3),
            {"mechanism": "posix-mq", "size": 65536, "rtt_ns": null, "spin_rtt_ns": null,
             "msgs_per_sec": null, "bytes_per_sec": null, "error": "the system limit"},
        ]
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = stdout_of(ipckit().args(["bench", "--summary"]).arg(&path));
    let _ = std::fs::remove_file(&path);
    for want in [
        "SPEED (NOTES)",
        "SPEED (HERE)",
        "SETUP",
        "COMPLEXITY",
        "NETWORK",
        "Sockets (Unix)",
        "not measured",
        "Setup, complexity and network, in facts:",
        "Where this machine disagrees with the notes:",
        "Sockets (Unix) (unix-stream): the notes say Slow; here a 64 B round trip takes 1.05x a pipe's (Fast)",
        "at 64 KiB its round trip is 0.47x a pipe's",
        "Shared memory (sleeping) (mailbox-sleep): the notes say Very fast; here a 64 B round trip takes 0.97x a pipe's (Fast)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(
        !out.contains("Shared memory (busy-poll) (mailbox-spin)"),
        "it agrees: {out}"
    );
    assert!(
        !out.contains("Sockets (TCP)"),
        "tcp was not in the file: {out}"
    );
}

#[test]
fn summary_measures_when_given_no_file() {
    let out = stdout_of(ipckit().args([
        "bench",
        "--summary",
        "--mechanisms",
        "pipe,unix-stream",
        "--sizes",
        "64",
        "--duration",
        "30ms",
    ]));
    assert!(
        out.contains("Pipes") && out.contains("Sockets (Unix)"),
        "{out}"
    );
    assert!(out.contains(" µs") || out.contains(" ns"), "{out}");
}

#[test]
fn summary_of_a_file_that_is_not_bench_json_says_so() {
    let path = std::env::temp_dir().join(format!("summary-bad-{}.json", std::process::id()));
    std::fs::write(&path, "{\"rows\": []}").unwrap();
    let out = ipckit()
        .args(["bench", "--summary"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ipckit bench --json"));
}
