//! `ipckit demo`, driven through the built binary.

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn run(args: &[&str]) -> String {
    let out = Command::cargo_bin("ipckit")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn race_counts_exactly_with_the_mutex_and_prints_both_figures() {
    let out = run(&["demo", "race", "--iterations", "50000"]);
    assert!(out.contains("without a mutex:"), "{out}");
    // Either the race was seen and counted, or the demo says plainly that it was not.
    assert!(
        out.contains("updates lost to the race") || out.contains("was not seen"),
        "{out}"
    );
    let guarded = out.lines().find(|l| l.contains("with the mutex:")).unwrap();
    assert!(guarded.contains("100,000"), "{out}");
}

#[test]
fn producer_consumer_delivers_every_item_once() {
    let out = run(&["demo", "producer-consumer", "--iterations", "3000"]);
    assert!(
        out.contains("6,000 of 6,000 items delivered, each exactly once: yes"),
        "{out}"
    );
}

#[test]
fn doctor_reports_the_limits() {
    let out = run(&["doctor"]);
    for needle in ["/dev/shm", "msg_max", "msgmni", "IPC namespace"] {
        assert!(out.contains(needle), "{needle} missing from {out}");
    }
    // Each limit says what it means for ipckit, not just a raw number.
    assert!(out.contains("verdict:"), "{out}");
    assert!(out.contains("largest POSIX queue message"), "{out}");
    assert!(
        !out.contains("18446744073692774399"),
        "a no-limit value printed raw: {out}"
    );
}

#[test]
fn rendezvous_pipeline_and_service_demos_run_between_processes() {
    let out = run(&["demo", "rendezvous"]);
    assert!(out.contains("send 3 returned after"), "{out}");
    let out = run(&["demo", "pipeline", "--iterations", "500"]);
    // 1² + 2² + ... + 500² = 41,791,750
    assert!(
        out.contains("answered 41,791,750 (expected 41,791,750)"),
        "{out}"
    );
    let out = run(&["demo", "service"]);
    assert_eq!(out.matches("accepted").count(), 3, "{out}");
    assert!(out.contains("CLIENT 2 REQUEST 4 (done)"), "{out}");
}
