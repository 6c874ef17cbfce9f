//! Issue 17, a newcomer's first hour: the CLI loses nothing silently. Binary data round
//! trips exactly, a subscriber's gap is reported, signals leave no participant behind,
//! `ipckit rm` finds the kind, `--history` replays what is kept, `ls --json` has numbers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
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
    format!("i17-{tag}-{}-{nanos:x}", std::process::id())
}

/// Removes the named mailbox or topic at the end of the test, pass or fail.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = ipckit().args(["mailbox", "rm", &self.0]).output();
        let _ = ipckit().args(["topic", "rm", &self.0]).output();
    }
}

fn run(args: &[&str]) -> Output {
    ipckit().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "ipckit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = ipckit()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
    }
    wait_output(child, Duration::from_secs(30))
}

/// Waits for `child` with a watchdog: killed and failed if it is still running after `limit`.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// `name`'s entry in `ipckit ls --json`, if it is listed.
fn listed(name: &str) -> Option<serde_json::Value> {
    let out = ok(&["ls", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .cloned()
}

/// Waits (at most 30 s) until `name` has `alive` live participants.
fn wait_for_alive(name: &str, alive: u64) {
    let start = Instant::now();
    loop {
        let entry = listed(name).expect("listed");
        if entry["alive"].as_u64() == Some(alive) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never {alive} alive: {entry}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Random bytes (xorshift; seeded from the clock, printed for a rerun), with a newline, a
/// NUL and an invalid UTF-8 byte among them for sure.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {x}");
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    bytes[..4].copy_from_slice(b"\n\0\xff\n");
    bytes
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let real: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let n = real
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..real.len()]);
    }
    out
}

#[test]
fn binary_messages_round_trip_byte_for_byte() {
    let name = unique("bin");
    let _cleanup = Cleanup(name.clone());
    ok(&["mailbox", "create", &name, "--max-msg-size", "4k"]);
    let payload = random_bytes(3000);
    // One message, exact bytes out, nothing added.
    let sent = run_with_stdin(&["send", &name, "--binary"], &payload);
    assert!(sent.status.success(), "{sent:?}");
    let got = ok(&["recv", &name, "--binary", "--timeout", "10s"]);
    assert!(got.stdout == payload, "the bytes differ");
    // --json carries the exact bytes; `data` is null as they are not UTF-8.
    run_with_stdin(&["send", &name, "--binary"], &payload);
    let json = ok(&["recv", &name, "--json", "--timeout", "10s"]);
    let msg: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(msg["data"].is_null(), "{msg}");
    assert_eq!(msg["len"], payload.len());
    assert!(base64_decode(msg["data_base64"].as_str().unwrap()) == payload);
    // Text stays text beside its base64.
    ok(&["send", &name, "héllo"]);
    let json = ok(&["recv", &name, "--json", "--timeout", "10s"]);
    let msg: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(msg["data"], "héllo");
    assert_eq!(
        base64_decode(msg["data_base64"].as_str().unwrap()),
        "héllo".as_bytes()
    );
    // More than one: each framed by its length, 4 bytes little-endian.
    run_with_stdin(&["send", &name, "--binary"], &payload);
    run_with_stdin(&["send", &name, "--binary"], b"");
    run_with_stdin(&["send", &name, "--binary"], &payload[..10]);
    let framed = ok(&[
        "recv",
        &name,
        "--binary",
        "--count",
        "3",
        "--timeout",
        "10s",
    ])
    .stdout;
    let mut rest = &framed[..];
    for expected in [&payload[..], &[], &payload[..10]] {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(&rest[4..4 + len] == expected);
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty());
    // Lines of stdin need not be UTF-8 either.
    run_with_stdin(&["send", &name], b"a\xffb\nc\r\n");
    let lines = ok(&["recv", &name, "--count", "2", "--timeout", "10s"]).stdout;
    assert_eq!(lines, b"a\xffb\nc\n");
}

#[test]
fn a_subscriber_that_falls_behind_says_how_many_it_missed() {
    let name = unique("gap");
    let _cleanup = Cleanup(name.clone());
    ok(&["topic", "create", &name, "--history", "8"]);
    let sub = ipckit()
        .args(["subscribe", &name, "--count", "8", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_alive(&name, 1);
    // Stopped, it cannot keep up: 1..30 are published, 8 are kept.
    let pid = sub.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let numbers: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let mut args = vec!["publish", name.as_str()];
    args.extend(numbers.iter().map(String::as_str));
    ok(&args);
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let out = wait_output(sub, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, "23\n24\n25\n26\n27\n28\n29\n30\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missed 22"), "{stderr}");
}

#[test]
fn sigint_and_sigterm_leave_no_participant_behind() {
    let name = unique("sig");
    let _cleanup = Cleanup(name.clone());
    ok(&["mailbox", "create", &name]);
    let topic = format!("{name}-t");
    let _cleanup_topic = Cleanup(topic.clone());
    ok(&["topic", "create", &topic]);
    for (args, signal, code) in [
        (["recv", name.as_str(), "--follow"], "-INT", 130),
        (["recv", name.as_str(), "--follow"], "-TERM", 143),
        (["subscribe", topic.as_str(), "--follow"], "-INT", 130),
        (["subscribe", topic.as_str(), "--follow"], "-TERM", 143),
    ] {
        let object = args[1];
        let child = ipckit()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_alive(object, 1);
        assert!(Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let out = wait_output(child, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(code), "{args:?} {signal}: {out:?}");
        let entry = listed(object).unwrap();
        assert_eq!(
            (entry["alive"].as_u64(), entry["dead"].as_u64()),
            (Some(0), Some(0)),
            "{entry}"
        );
    }
    // A sender waiting for room, and one waiting for a line of input, leave cleanly too.
    let full = format!("{name}-f");
    let _cleanup_full = Cleanup(full.clone());
    ok(&["mailbox", "create", &full, "--capacity", "1"]);
    ok(&["send", &full, "filler"]);
    for (args, signal, code) in [
        (vec!["send", full.as_str(), "more"], "-INT", 130),
        (vec!["send", full.as_str()], "-TERM", 143),
    ] {
        let child = ipckit()
            .args(&args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_alive(&full, 1);
        assert!(Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let out = wait_output(child, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(code), "{args:?} {signal}: {out:?}");
        let entry = listed(&full).unwrap();
        assert_eq!(
            (
                entry["alive"].as_u64(),
                entry["dead"].as_u64(),
                entry["depth"].as_u64()
            ),
            (Some(0), Some(0), Some(1)),
            "{entry}"
        );
    }
}

#[test]
fn rm_finds_the_kind_and_send_to_a_topic_suggests_publish() {
    let mailbox = unique("rm-m");
    let topic = unique("rm-t");
    let _c1 = Cleanup(mailbox.clone());
    let _c2 = Cleanup(topic.clone());
    ok(&["mailbox", "create", &mailbox]);
    ok(&["topic", "create", &topic, "--mode", "0640"]);
    let t = listed(&topic).unwrap();
    assert_eq!(t["mode"], "0640", "{t}");
    assert_eq!(t["capacity"], 64, "{t}");
    assert_eq!(t["overflow"], "overrun", "{t}");
    let m = listed(&mailbox).unwrap();
    assert_eq!(
        (&m["mode"], &m["capacity"], &m["depth"]),
        (&"0600".into(), &64.into(), &0.into()),
        "{m}"
    );

    let out = run(&["send", &topic, "x"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ipckit publish {topic}")) && !stderr.contains("mailbox create"),
        "{stderr}"
    );
    let out = run(&["publish", &mailbox, "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("ipckit send {mailbox}")));

    let out = ok(&["rm", &mailbox]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed mailbox"));
    let out = ok(&["rm", &topic]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed topic"));
    assert!(listed(&mailbox).is_none() && listed(&topic).is_none());
    let out = run(&["rm", &topic]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mailbox or topic"));
}

#[test]
fn history_larger_than_kept_replays_what_is_kept_and_says_so() {
    let name = unique("hist");
    let _cleanup = Cleanup(name.clone());
    ok(&["topic", "create", &name, "--history", "4"]);
    ok(&["publish", &name, "1", "2", "3", "4", "5", "6"]);
    let out = ok(&[
        "subscribe",
        &name,
        "--history",
        "10",
        "--count",
        "4",
        "--nonblocking",
    ]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "3\n4\n5\n6\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keeps 4"), "{stderr}");
    // Asking for no more than there is says nothing.
    let out = ok(&[
        "subscribe",
        &name,
        "--history",
        "2",
        "--count",
        "2",
        "--nonblocking",
    ]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "5\n6\n");
    assert!(out.stderr.is_empty());
}

#[test]
fn a_receiver_whose_reader_left_takes_nothing_more() {
    let name = unique("head");
    let _cleanup = Cleanup(name.clone());
    ok(&["mailbox", "create", &name]);
    let mut recv = ipckit()
        .args(["recv", &name, "--count", "3", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ok(&["send", &name, "first"]);
    let mut line = String::new();
    BufReader::new(recv.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "first\n");
    // The reader is gone (`| head -1`); the waiting receiver notices and leaves...
    let out = wait_output(recv, Duration::from_secs(10));
    assert!(out.status.success(), "{out:?}");
    // ...so what is sent afterwards stays for the next receiver.
    ok(&["send", &name, "second", "third"]);
    let out = ok(&["recv", &name, "--count", "2", "--nonblocking"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "second\nthird\n");
}

#[test]
fn a_sender_waiting_for_room_says_so_and_create_says_how_big() {
    let name = unique("room");
    let _cleanup = Cleanup(name.clone());
    let out = ok(&["mailbox", "create", &name, "--capacity", "1"]);
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("holds 1 message of") && said.contains("of /dev/shm"),
        "{said}"
    );
    let out = run(&["send", &name, "a", "b", "--verbose", "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("waiting for room").count(), 1, "{stderr}");
    // Not a terminal and not verbose: quiet.
    let out = run(&["send", &name, "c", "--timeout", "100ms"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("waiting"));
}

#[test]
fn a_mailbox_too_big_for_dev_shm_is_refused_saying_how_big() {
    let name = unique("big");
    let _cleanup = Cleanup(name.clone());
    let shm = rustix::fs::statvfs("/dev/shm").unwrap();
    let free = shm.f_bavail * shm.f_frsize;
    // Twice what is free, in 64 KiB messages.
    let capacity = (free / 65536 * 2 + 1000).to_string();
    let out = run(&[
        "mailbox",
        "create",
        &name,
        "--max-msg-size",
        "64k",
        "--capacity",
        &capacity,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("it would take") && stderr.contains("are free"),
        "{stderr}"
    );
    assert!(listed(&name).is_none(), "nothing is left behind");
}
