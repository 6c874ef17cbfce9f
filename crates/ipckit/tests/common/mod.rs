//! Shared support for the cross-process tests: unique names, child processes that are the
//! test binary re-run in a role, and watchdogs.
//!
//! A peer is the same test binary started again with `--exact <test> ` and the environment
//! variable `IPCKIT_TEST_ROLE` set; the test function calls [`role`] first and, if it has one,
//! plays that part and exits. Never `fork` the (multithreaded) harness and keep running Rust.
#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "IPCKIT_TEST_ROLE";
const ARG_VAR: &str = "IPCKIT_TEST_ARG";

/// A name nobody else is using: test name, pid, a counter and the clock.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t-{tag}-{}-{n}-{nanos:x}", std::process::id())
}

/// The role this process was started in, with its argument, if it is a child.
pub fn role() -> Option<(String, String)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    Some((role, std::env::var(ARG_VAR).unwrap_or_default()))
}

/// Starts this test binary again as `test`, in `role`, with `arg`.
/// stdout is piped (the child may report on it); stderr is inherited.
pub fn spawn_role(test: &str, role: &str, arg: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(ROLE_VAR, role)
        .env(ARG_VAR, arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the test binary as a peer")
}

/// Waits for `child` at most `limit`; kills it and panics if it is still running then.
pub fn wait_with_watchdog(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "peer process {} ran past its {limit:?} watchdog",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a thread and panics if it takes longer than `limit`: a hang becomes a failure.
pub fn with_watchdog<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("test body ran past its {limit:?} watchdog")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("test body panicked"),
    }
}
