//! `ipckit recv A B C`, `ipckit subscribe A B` and `ipckit recv NAME --until-senders-gone`
//! (issue 15), driven through the built binary.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

fn ipckit() -> Command {
    Command::cargo_bin("ipckit").unwrap()
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("cli-{tag}-{}-{nanos:x}", std::process::id())
}

/// Removes the named mailboxes and topics at the end of the test, pass or fail.
struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = ipckit().args(["mailbox", "rm", name]).output();
            let _ = ipckit().args(["topic", "rm", name]).output();
        }
    }
}

/// Kills and reaps a child still running when the test ends.
struct Reap(std::process::Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) -> std::process::Output {
    ipckit().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits for `child` at most `limit`, returning its exit status and when it ended.
fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn recv_waits_on_several_mailboxes_and_names_each_message() {
    let names: Vec<String> = (0..3).map(|i| unique(&format!("multi{i}"))).collect();
    let _cleanup = Cleanup(names.clone());
    for name in &names {
        ok(&["mailbox", "create", name]);
    }
    let mut recv = Reap(
        ipckit()
            .args(["recv", &names[0], &names[1], &names[2], "--count", "3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(100));
    ok(&["send", &names[2], "to c"]);
    ok(&["send", &names[0], "to a"]);
    ok(&["send", &names[0], "to a again"]);
    assert!(wait_at_most(&mut recv.0, Duration::from_secs(30)).success());
    let mut out = String::new();
    std::io::Read::read_to_string(recv.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut expected = vec![
        format!("{}: to a", names[0]),
        format!("{}: to a again", names[0]),
        format!("{}: to c", names[2]),
    ];
    expected.sort();
    assert_eq!(lines, expected);

    ok(&["send", &names[1], "json"]);
    let json = ok(&["recv", &names[0], &names[1], "--json", "--timeout", "5s"]);
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(value["name"], names[1].as_str());
    assert_eq!(value["data"], "json");
    assert_eq!(value["len"], 4);

    // Exit codes as with one name: 3 would block, 4 timed out, 2 usage.
    let out = run(&["recv", &names[0], &names[1], "--nonblocking"]);
    assert_eq!(out.status.code(), Some(3));
    let out = run(&["recv", &names[0], &names[1], "--timeout", "50ms"]);
    assert_eq!(out.status.code(), Some(4));
    let out = run(&["recv", &names[0], &names[1], "--until-senders-gone"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["recv", &names[0], &unique("absent")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn subscribe_waits_on_several_topics() {
    let names: Vec<String> = (0..2).map(|i| unique(&format!("multitopic{i}"))).collect();
    let _cleanup = Cleanup(names.clone());
    for name in &names {
        ok(&["topic", "create", name]);
    }
    let mut sub = Reap(
        ipckit()
            .args(["subscribe", &names[0], &names[1], "--count", "2", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(200));
    ok(&["publish", &names[1], "b"]);
    ok(&["publish", &names[0], "a"]);
    assert!(wait_at_most(&mut sub.0, Duration::from_secs(30)).success());
    let mut out = String::new();
    std::io::Read::read_to_string(sub.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut got: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["name"].as_str().unwrap().to_string(),
                v["data"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (names[0].clone(), "a".to_string()),
            (names[1].clone(), "b".to_string())
        ]
    );
}

#[test]
fn recv_until_senders_gone_exits_within_a_second_of_the_last_senders_sigkill() {
    let name = unique("usg");
    let _cleanup = Cleanup(vec![name.clone()]);
    ok(&["mailbox", "create", &name]);
    let mut recv = Reap(
        ipckit()
            .args(["recv", &name, "--follow", "--until-senders-gone"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // No sender has attached yet: it waits.
    std::thread::sleep(Duration::from_millis(300));
    assert!(recv.0.try_wait().unwrap().is_none());
    // A sender that stays attached while its stdin is open.
    let mut sender = Reap(
        ipckit()
            .args(["send", &name])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdin = sender.0.stdin.as_mut().unwrap();
    writeln!(stdin, "one").unwrap();
    writeln!(stdin, "two").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        recv.0.try_wait().unwrap().is_none(),
        "exited while a sender lives"
    );
    sender.0.kill().unwrap();
    let killed = Instant::now();
    let status = wait_at_most(&mut recv.0, Duration::from_secs(10));
    let took = killed.elapsed();
    println!("recv exited {took:?} after the sender's SIGKILL");
    assert!(status.success());
    assert!(took < Duration::from_secs(1), "{took:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(recv.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(out, "one\ntwo\n");

    // Messages left by senders that have all gone: received, then exit 0.
    ok(&["send", &name, "left", "behind"]);
    let out = ok(&[
        "recv",
        &name,
        "--follow",
        "--until-senders-gone",
        "--timeout",
        "10s",
    ]);
    assert_eq!(out, "left\nbehind\n");
}
