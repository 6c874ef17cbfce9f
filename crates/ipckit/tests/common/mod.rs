//! Shared support for the cross-process tests: unique names, child processes that are the
//! test binary re-run in a role, and watchdogs.
//!
//! A peer is the same test binary started again with `--exact <test> ` and the environment
//! variable `IPCKIT_TEST_ROLE` set; the test function calls [`role`] first and, if it has one,
//! plays that part and exits. Never `fork` the (multithreaded) harness and keep running Rust.
#![allow(dead_code)]

use std::io::{BufRead, Read};
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
    spawn_role_with_stdin(test, role, arg, Stdio::null())
}

/// As [`spawn_role`], with `stdin` as the child's fd 0 (say, one end of a pipe).
pub fn spawn_role_with_stdin(test: &str, role: &str, arg: &str, stdin: Stdio) -> Child {
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
        .stdin(stdin)
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

/// Forks a child that only sleeps `linger` and then `_exit`s: meanwhile it shares every open
/// file description of this process, and so its OFD locks, as a child between `fork` and
/// `exec` does. Returns the child's pid. Nothing but two async-signal-safe calls runs in the
/// child (no Rust code that could meet a lock another thread held at the fork).
pub fn fork_lingering_child(linger: Duration) -> u32 {
    let pause = libc::timespec {
        tv_sec: linger.as_secs() as libc::time_t,
        tv_nsec: linger.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the child runs only nanosleep and _exit (both async-signal-safe) on memory
    // made before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; `pause` is a valid timespec, the remainder pointer may be null.
        unsafe {
            libc::nanosleep(&pause, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    pid as u32
}

/// Reads a child's stdout until it reports `@@forked PID` (the pid
/// [`fork_lingering_child`] returned there).
pub fn forked_pid(out: &mut impl BufRead) -> u32 {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended first");
        if let Some(pid) = line.trim_end().strip_prefix("@@forked ") {
            return pid.parse().unwrap();
        }
    }
}

/// One round of a lingering-lock test. The holder, role `mode` of `test` started with `arg`
/// (its stdin piped), takes a sole token, prints `@@holding`, waits for a line on stdin,
/// forks a [`fork_lingering_child`], prints `@@forked PID` and exits. Meanwhile `take` asks
/// for the token: while the holder lives it must be refused at once (`AlreadyExists` naming
/// the holder's pid, within 200 ms); once the holder has exited it must be granted. Returns
/// whether the forked child still shared the lock when the token was granted (only then did
/// the round test the linger). `what` names the round in failures.
pub fn lingering_holder_round(
    test: &str,
    mode: &str,
    arg: &str,
    what: &str,
    take: impl Fn() -> Result<(), ipckit::Error>,
) -> bool {
    use ipckit::process::{liveness, Liveness};
    use std::io::{BufReader, Write};
    let mut holder = spawn_role_with_stdin(test, mode, arg, Stdio::piped());
    let mut stdin = holder.stdin.take().unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    wait_for_line(&mut out, "holding");
    let asked = Instant::now();
    match take() {
        Err(ipckit::Error::AlreadyExists { object }) => assert!(
            object.contains(&format!("(pid {})", holder.id())),
            "{object}"
        ),
        other => panic!("{what}: a second holder while the first lives: {other:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_millis(200),
        "a live holder is refused at once, not after {:?}",
        asked.elapsed()
    );
    writeln!(stdin, "go").unwrap();
    let child = forked_pid(&mut out);
    assert!(wait_with_watchdog(&mut holder, Duration::from_secs(60)).success());
    let lingering = liveness(child, None) == Liveness::Alive;
    let got = take();
    assert!(
        got.is_ok(),
        "{what}: {got:?} (the forked child alive when asked: {lingering})"
    );
    lingering
}

/// Lines a child printed with the `@@` prefix (the harness prints its own lines too).
pub fn reports(child: &mut Child) -> Vec<String> {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out.lines()
        .filter_map(|l| l.strip_prefix("@@").map(str::to_string))
        .collect()
}

/// Reads the child's stdout until a line `@@<want>` appears.
pub fn wait_for_line(reader: &mut impl BufRead, want: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child ended before {want:?}"
        );
        if line.trim_end() == format!("@@{want}") {
            return;
        }
    }
}

/// A small deterministic generator, so failures can be replayed from the printed seed.
pub struct XorShift(pub u64);
impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed = nanos | 1;
    eprintln!("seed {seed}");
    seed
}

/// A message that proves its own integrity: run, sequence, then a pattern of `seq`-derived
/// bytes whose length varies, then a checksum over everything before it.
pub fn make_message(run: u32, seq: u32) -> Vec<u8> {
    let len = 8 + (seq as usize * 37) % 200;
    let mut msg = Vec::with_capacity(len + 8);
    msg.extend_from_slice(&run.to_le_bytes());
    msg.extend_from_slice(&seq.to_le_bytes());
    msg.extend((8..len).map(|i| (i as u32 ^ seq) as u8));
    let sum = msg
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
    msg.extend_from_slice(&sum.to_le_bytes());
    msg
}

pub fn check_message(msg: &[u8]) -> (u32, u32) {
    assert!(msg.len() >= 16, "short message {msg:?}");
    let (body, sum) = msg.split_at(msg.len() - 8);
    let expected = body
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
    assert_eq!(
        u64::from_le_bytes(sum.try_into().unwrap()),
        expected,
        "torn message"
    );
    let run = u32::from_le_bytes(body[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(body[4..8].try_into().unwrap());
    assert_eq!(msg, make_message(run, seq), "message bytes differ");
    (run, seq)
}
