//! `ipckit mailbox|send|recv|ls|clean`, driven through the built binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::prelude::*;

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

/// Removes the mailbox at the end of the test, pass or fail.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = ipckit().args(["mailbox", "rm", &self.0]).output();
    }
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

#[test]
fn send_and_recv_round_trip_with_documented_exit_codes() {
    let name = unique("rt");
    let _cleanup = Cleanup(name.clone());
    ipckit()
        .args(["mailbox", "create", &name, "--capacity", "2"])
        .assert()
        .success();
    ipckit()
        .args(["send", &name, "one", "two"])
        .assert()
        .success();
    // Full: 3 without waiting, 4 after a timeout.
    ipckit()
        .args(["send", &name, "x", "--nonblocking"])
        .assert()
        .code(3);
    ipckit()
        .args(["send", &name, "x", "--timeout", "50ms"])
        .assert()
        .code(4);
    assert_eq!(
        stdout_of(ipckit().args(["recv", &name, "--count", "2"])),
        "one\ntwo\n"
    );
    ipckit()
        .args(["recv", &name, "--nonblocking"])
        .assert()
        .code(3);
    ipckit()
        .args(["recv", &name, "--timeout", "50ms"])
        .assert()
        .code(4);
    // Lines of stdin are messages.
    assert_cmd::Command::cargo_bin("ipckit")
        .unwrap()
        .args(["send", &name])
        .write_stdin("a\nb\n")
        .assert()
        .success();
    let json = stdout_of(ipckit().args(["recv", &name, "--count", "2", "--json"]));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["data"], "a");
    assert!(first["sender_pid"].as_u64().unwrap() > 0);
    // The same keys as `ipckit subscribe --json`; `missed` is null for a mailbox.
    let keys: Vec<&str> = first
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
        ]
    );
    assert!(first["missed"].is_null());
}

#[test]
fn errors_name_the_object_and_exit_1_or_2() {
    let name = unique("err");
    let _cleanup = Cleanup(name.clone());
    let out = ipckit().args(["recv", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&name) && stderr.contains("does not exist"),
        "{stderr}"
    );
    ipckit()
        .args(["mailbox", "create", &name])
        .assert()
        .success();
    ipckit().args(["mailbox", "create", &name]).assert().code(1);
    ipckit()
        .args(["mailbox", "create", &name, "--rendezvous", "--unbounded"])
        .assert()
        .code(2);
    ipckit()
        .args(["recv", &name, "--timeout", "soon"])
        .assert()
        .code(2);
    ipckit()
        .args(["send", &name, &"x".repeat(5000)])
        .assert()
        .code(1);
}

#[test]
fn a_follower_sees_messages_from_another_process_as_they_arrive() {
    let name = unique("follow");
    let _cleanup = Cleanup(name.clone());
    ipckit()
        .args(["mailbox", "create", &name])
        .assert()
        .success();
    let follower = ipckit()
        .args(["recv", &name, "--count", "3", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ipckit()
        .args(["send", &name, "x", "y", "z"])
        .assert()
        .success();
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "x\ny\nz\n");
}

#[test]
fn ls_shows_dead_participants_and_clean_repairs_without_losing_messages() {
    let name = unique("clean");
    let _cleanup = Cleanup(name.clone());
    ipckit()
        .args(["mailbox", "create", &name, "--capacity", "4"])
        .assert()
        .success();
    ipckit().args(["send", &name, "kept"]).assert().success();
    // A receiver that is killed while attached leaves its participant entry behind.
    let mut receiver = ipckit()
        .args(["recv", &name, "--count", "5", "--timeout", "60s"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let row = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .find(|l| l.contains(&name))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    // Wait until it has taken "kept" and is waiting for more (depth 0, one alive).
    loop {
        let listing = stdout_of(ipckit().arg("ls"));
        let r = row(&listing);
        if r.len() >= 7 && r[2] == "0" && r[5] == "1" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "receiver never attached: {listing}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    ipckit().args(["send", &name, "after"]).assert().success();
    let r = row(&stdout_of(ipckit().arg("ls")));
    assert_eq!(
        (r[5].as_str(), r[6].as_str()),
        ("0", "1"),
        "one dead participant: {r:?}"
    );
    let dry = stdout_of(ipckit().args(["clean", "--dry-run"]));
    assert!(dry.contains(&name) && dry.contains("would"), "{dry}");
    let done = stdout_of(ipckit().arg("clean"));
    assert!(done.contains(&name), "{done}");
    let r = row(&stdout_of(ipckit().arg("ls")));
    assert_eq!(
        (r[2].as_str(), r[6].as_str()),
        ("1", "0"),
        "repaired, message kept: {r:?}"
    );
    assert_eq!(
        stdout_of(ipckit().args(["recv", &name, "--nonblocking"])),
        "after\n"
    );
}

/// `ls` with a watchdog: a listing that hangs is killed and fails the test.
fn ls_output(json: bool) -> String {
    let mut cmd = assert_cmd::Command::cargo_bin("ipckit").unwrap();
    cmd.arg("ls").timeout(Duration::from_secs(30));
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "ipckit ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The source table's place in the mailbox's file (as in `ipckit/tests/idempotent.rs`): the
/// segment header, the ring header's first 384 bytes and 128 participant entries of 16.
const SOURCES: u64 = 64 + 384 + 128 * 16;

/// `ls` shows a mailbox's idempotent-sender sources under its row, and `ls --json` as
/// objects: id in hex, owner and its liveness, what was delivered, what is in flight.
#[test]
fn ls_shows_the_sources_of_idempotent_senders() {
    use std::os::unix::fs::FileExt;

    use ipckit::shm::mailbox::{Delivery, Mailbox};

    let name = unique("sources");
    let _cleanup = Cleanup(name.clone());
    let mailbox = Mailbox::builder(&name).capacity(8).create().unwrap();
    let owned = *b"cli-ls-source-01";
    let left = *b"cli-ls-source-02";
    let mut tx = mailbox.idempotent_sender(owned).unwrap();
    for seq in 0..3 {
        assert_eq!(tx.send(seq, b"x").unwrap(), Delivery::Sent);
    }
    {
        let mut gone = mailbox.idempotent_sender(left).unwrap();
        for seq in 0..2 {
            assert_eq!(gone.send(seq, b"y").unwrap(), Delivery::Sent);
        }
    }
    // Entry 0 (the first free one, `owned`'s) as a kill in the middle of a send leaves it:
    // number 3 recorded at position 3 (`pending_pos` is position + 1), not committed.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/ipckit.mailbox.{name}"))
        .unwrap();
    file.write_all_at(&4u64.to_ne_bytes(), SOURCES + 32)
        .unwrap();
    file.write_all_at(&3u64.to_ne_bytes(), SOURCES + 40)
        .unwrap();
    let me = std::process::id();
    let owned_hex = "636c692d6c732d736f757263652d3031";
    let left_hex = "636c692d6c732d736f757263652d3032";

    let listing = ls_output(false);
    let lines: Vec<&str> = listing.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
        .unwrap_or_else(|| panic!("no row for {name}: {listing}"));
    let under: Vec<&str> = lines[row + 1..].iter().take(2).map(|l| l.trim()).collect();
    assert_eq!(
        under,
        [
            format!("source {owned_hex} (pid {me}, alive): 3 delivered, #3 in flight"),
            format!("source {left_hex} (no owner): 2 delivered"),
        ],
        "{listing}"
    );
    assert!(
        lines[row + 1].starts_with("           source"),
        "indented under the row: {listing}"
    );

    let json: serde_json::Value = serde_json::from_str(&ls_output(true)).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "mailbox" && e["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no entry for {name}: {json}"));
    assert_eq!(entry["held"], serde_json::json!([]), "the old keys stay");
    let sources = entry["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{entry}");
    let (first, second) = (&sources[0], &sources[1]);
    assert_eq!(first["id"], owned_hex);
    assert_eq!(first["owner"], me);
    assert_eq!(first["owner_alive"], true);
    assert_eq!(first["delivered"], 3);
    assert_eq!(first["in_flight"], 3);
    assert_eq!(first["consistent"], true);
    assert!(first["last_used_unix_ns"].as_u64().is_some_and(|ns| ns > 0));
    assert_eq!(second["id"], left_hex);
    assert_eq!(second["owner"], serde_json::Value::Null);
    assert_eq!(second["owner_alive"], false);
    assert_eq!(second["delivered"], 2);
    assert_eq!(second["in_flight"], serde_json::Value::Null);
    drop(tx);
}

#[test]
fn create_makes_single_sender_and_single_receiver_mailboxes_and_refuses_what_cannot_be() {
    let single = unique("single");
    let _cleanup = Cleanup(single.clone());
    let out = stdout_of(ipckit().args([
        "mailbox",
        "create",
        &single,
        "--capacity",
        "8",
        "--single-sender",
        "--single-receiver",
    ]));
    assert!(
        out.contains("one sender and one receiver at a time"),
        "{out}"
    );
    let chain = unique("chain");
    let _cleanup_chain = Cleanup(chain.clone());
    let out = stdout_of(ipckit().args([
        "mailbox",
        "create",
        &chain,
        "--unbounded",
        "--single-receiver",
    ]));
    assert!(out.contains("one receiver at a time"), "{out}");
    // The flags reach the mailbox: a second receiver (or sender) is refused while the
    // first is attached.
    for name in [&single, &chain] {
        let mailbox = ipckit::shm::Mailbox::open(name).unwrap();
        let _first = mailbox.receiver().unwrap();
        assert!(
            matches!(mailbox.receiver(), Err(ipckit::Error::AlreadyExists { .. })),
            "{name}: a second receiver was let in"
        );
    }
    let mailbox = ipckit::shm::Mailbox::open(&single).unwrap();
    let _sender = mailbox.sender().unwrap();
    assert!(matches!(
        mailbox.sender(),
        Err(ipckit::Error::AlreadyExists { .. })
    ));
    // A single sender cannot seal a chained ring: refused, naming why, nothing created.
    let refused = unique("refused");
    let out = ipckit()
        .args([
            "mailbox",
            "create",
            &refused,
            "--unbounded",
            "--single-sender",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("single-sender mailboxes must be bounded"),
        "{err}"
    );
    assert!(ipckit::shm::Mailbox::open(&refused).is_err());
}
