//! `ipckit serve` and `ipckit call`, driven through the built binary (issue 16).

use std::process::{Child, Command, Stdio};
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

/// A running `ipckit serve`; killed, and its connection port removed, on drop.
struct Served {
    child: Child,
    name: String,
}

impl Served {
    fn start(name: &str, command: &[&str]) -> Served {
        let child = ipckit()
            .args(["serve", name, "--"])
            .args(command)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let served = Served {
            child,
            name: name.to_string(),
        };
        // Ready once its connection port exists.
        let port = std::env::temp_dir().join(format!("ipckit.service.{name}"));
        let start = Instant::now();
        while !port.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "serve did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        served
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGTERM first, so that `serve` removes what it registered (SIGKILL would leave its
        // registry entry behind); SIGKILL only if it has not gone within 5 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("ipckit.service.{}", self.name)),
        );
    }
}

/// Runs `ipckit call ...` with a watchdog: (exit code, stdout, stderr).
fn call(args: &[&str]) -> (i32, String, String) {
    let mut child = ipckit()
        .arg("call")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("ipckit call {args:?} ran past its watchdog");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The registry entries (`/dev/shm/ipckit-registry/UID/`) whose names mention `name`.
fn registry_entries(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    for user in std::fs::read_dir("/dev/shm/ipckit-registry")
        .into_iter()
        .flatten()
        .flatten()
    {
        for entry in std::fs::read_dir(user.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.contains(name) {
                found.push(file);
            }
        }
    }
    found
}

#[test]
fn serve_runs_the_command_per_request_and_call_prints_the_reply() {
    let name = unique("upper");
    let served = Served::start(&name, &["tr", "a-z", "A-Z"]);
    assert_eq!(call(&[&name, "hello"]), (0, "HELLO".into(), String::new()));
    assert_eq!(call(&[&name, "again"]).1, "AGAIN");
    drop(served);
    // Stopped by SIGTERM, `serve` leaves nothing behind.
    assert_eq!(registry_entries(&name), Vec::<String>::new());
}

#[test]
fn a_failing_command_is_an_error_reply_exit_1() {
    let name = unique("fail");
    let _served = Served::start(&name, &["sh", "-c", "echo broken >&2; exit 3"]);
    let (code, out, err) = call(&[&name, "x"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("answered with an error") && err.contains("broken"),
        "{err}"
    );
}

#[test]
fn call_times_out_with_exit_4_and_a_missing_service_is_exit_1() {
    let name = unique("slow");
    let _served = Served::start(&name, &["sleep", "5"]);
    let (code, _, err) = call(&[&name, "x", "--timeout", "300ms"]);
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = call(&[&unique("absent"), "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn serve_without_a_command_is_a_usage_error() {
    let out = ipckit().args(["serve", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
