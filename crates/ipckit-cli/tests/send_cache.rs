//! Issue 18, item 2: `ipckit send --when-full cache` returns at once, and the cached message
//! is delivered after the command has exited; a second cache attempt while the first waits
//! exits with code 3.

use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::prelude::*;

fn ipckit() -> Command {
    Command::cargo_bin("ipckit").unwrap()
}

/// The binary with a watchdog: a command that would hang is killed.
fn ipckit_watched() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("ipckit").unwrap();
    cmd.timeout(Duration::from_secs(30));
    cmd
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("cli-{tag}-{}-{nanos:x}", std::process::id())
}

/// Removes the mailbox at the end of the test, pass or fail.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = ipckit().args(["mailbox", "rm", &self.0]).output();
    }
}

fn recv_one(name: &str) -> String {
    let out = ipckit_watched()
        .args(["recv", name, "--count", "1", "--timeout", "10s"])
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
fn send_when_full_cache_returns_at_once_and_delivers_after_exiting() {
    let name = unique("cache");
    let _cleanup = Cleanup(name.clone());
    ipckit()
        .args(["mailbox", "create", &name, "--capacity", "1"])
        .assert()
        .success();
    ipckit().args(["send", &name, "queued"]).assert().success();

    let start = Instant::now();
    ipckit_watched()
        .args(["send", &name, "cached", "--when-full", "cache"])
        .assert()
        .success();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "returned at once, not when delivered"
    );
    // A second cache attempt by one sender while its first waits: Full, exit code 3.
    let out = ipckit_watched()
        .args(["send", &name, "first", "second", "--when-full", "cache"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("earlier cached message"), "{stderr}");

    // Both senders have exited; receiving makes room and their cached messages follow.
    assert_eq!(recv_one(&name), "queued\n");
    let mut rest = vec![recv_one(&name), recv_one(&name)];
    rest.sort();
    assert_eq!(rest, ["cached\n", "first\n"]);
    ipckit()
        .args(["recv", &name, "--nonblocking"])
        .assert()
        .code(3);
}
