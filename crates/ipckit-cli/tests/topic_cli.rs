//! `ipckit topic|publish|subscribe`, driven through the built binary.

use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::prelude::*;

fn ipckit() -> Command {
    Command::cargo_bin("ipckit").unwrap()
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = ipckit().args(["topic", "rm", &self.0]).output();
    }
}

fn unique(tag: &str) -> String {
    format!("cli-topic-{tag}-{}", std::process::id())
}

#[test]
fn every_subscriber_process_gets_every_message_and_history_replays() {
    let name = unique("fan");
    let _cleanup = Cleanup(name.clone());
    ipckit()
        .args(["topic", "create", &name, "--history", "8", "--backpressure"])
        .assert()
        .success();
    let subscribers: Vec<_> = (0..2)
        .map(|_| {
            ipckit()
                .args(["subscribe", &name, "--count", "3", "--timeout", "30s"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Give both a moment to attach: a subscriber sees only what is published after it joins.
    let start = std::time::Instant::now();
    loop {
        let ls = String::from_utf8(ipckit().arg("ls").output().unwrap().stdout).unwrap();
        let row = ls.lines().find(|l| l.contains(&name)).unwrap().to_string();
        if row.split_whitespace().nth(5) == Some("2") {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "subscribers never attached: {row}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ipckit()
        .args(["publish", &name, "a", "b", "c"])
        .assert()
        .success();
    for sub in subscribers {
        let out = sub.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a\nb\nc\n");
    }
    let replay = ipckit()
        .args([
            "subscribe",
            &name,
            "--history",
            "2",
            "--count",
            "2",
            "--nonblocking",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(replay.stdout).unwrap(), "b\nc\n");
    // `--json` has the same keys as `ipckit recv --json`.
    let json = ipckit()
        .args([
            "subscribe",
            &name,
            "--history",
            "1",
            "--json",
            "--nonblocking",
        ])
        .output()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "data",
            "data_base64",
            "len",
            "missed",
            "sender_pid",
            "sender_uid",
            "sequence"
        ],
        "{line}"
    );
    assert_eq!(
        (line["data"].as_str(), line["missed"].as_u64()),
        (Some("c"), Some(0))
    );
    ipckit()
        .args(["subscribe", &name, "--nonblocking"])
        .assert()
        .code(3);
    ipckit()
        .args(["subscribe", &name, "--timeout", "20ms"])
        .assert()
        .code(4);
}

#[test]
fn errors_are_clear() {
    let name = unique("err");
    let _cleanup = Cleanup(name.clone());
    ipckit().args(["publish", &name, "x"]).assert().code(1);
    ipckit()
        .args(["topic", "create", &name, "--overrun", "--backpressure"])
        .assert()
        .code(2);
    ipckit()
        .args(["topic", "create", &name, "--history", "2"])
        .assert()
        .success();
    ipckit().args(["topic", "create", &name]).assert().code(1);
    // More history than kept is what is kept (here nothing yet), said on stderr (issue 17).
    let out = ipckit()
        .args(["subscribe", &name, "--history", "3", "--nonblocking"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps 2"));
}

#[test]
fn a_single_publisher_topic_refuses_a_second_publisher_process() {
    use std::io::Write;
    let name = unique("single");
    let _cleanup = Cleanup(name.clone());
    let out = ipckit()
        .args(["topic", "create", &name, "--single-publisher"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("one publisher at a time"));
    // The first publisher holds its place while its standard input is open.
    let mut first = ipckit()
        .args(["publish", &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let topic = ipckit::shm::topic::Topic::open(&name).unwrap();
    let start = std::time::Instant::now();
    while topic.info().publishers == 0 {
        if start.elapsed().as_secs() >= 30 {
            let _ = first.kill();
            let _ = first.wait();
            panic!("the first publisher never attached");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = ipckit().args(["publish", &name, "x"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr).to_string();
    let mut stdin = first.stdin.take().unwrap();
    writeln!(stdin, "a").unwrap();
    drop(stdin);
    let status = first.wait().unwrap();
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "single publisher of topic {name:?} (pid {})",
            first.id()
        )),
        "{stderr}"
    );
    assert!(status.success());
    // Once it is gone, the next publisher is accepted.
    ipckit().args(["publish", &name, "y"]).assert().success();
}
