//! Signals across processes: user-defined signals through the iterator, real-time signals
//! with their payload and sender.
//!
//! This file runs without libtest's harness (`harness = false`): a process that receives
//! signals through a `signalfd` must block them before any thread starts, and libtest runs
//! each test on a thread of its own. Here the peer roles run on the main thread, first thing.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{role, wait_for_line, wait_with_watchdog};
use ipckit::signal::{self, RealtimeReceiver, Signal, Signals};
use ipckit::{Deadline, Error};

const WATCHDOG: Duration = Duration::from_secs(60);

fn next_report(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        if let Some(r) = line.trim_end().strip_prefix("@@") {
            return r.to_string();
        }
    }
}

fn sigusr1_reaches_a_child_iterating_signals_with_the_sender() {
    const TEST: &str = "sigusr1_reaches_a_child_iterating_signals_with_the_sender";
    if role().is_some() {
        let mut signals = Signals::new(&[Signal::USR1, Signal::USR2]).unwrap();
        println!("@@ready");
        let got = signals.forever().next().unwrap();
        println!("@@{} {}", got.signal.0, got.sender_pid.unwrap_or(0));
        return;
    }
    let mut child = spawn_role(TEST, "receiver", "");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    signal::send(child.id(), Signal::USR1).unwrap();
    assert_eq!(
        next_report(&mut out),
        format!("{} {}", libc::SIGUSR1, std::process::id())
    );
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
}

fn realtime_signals_carry_their_payload_and_sender() {
    const TEST: &str = "realtime_signals_carry_their_payload_and_sender";
    if role().is_some() {
        let rt = Signal::realtime(3).unwrap();
        let mut receiver = RealtimeReceiver::new(&[rt]).unwrap();
        println!("@@ready");
        for _ in 0..3 {
            let got = receiver.recv_deadline(Deadline::after(WATCHDOG)).unwrap();
            println!(
                "@@{} {} {}",
                got.signal.0 - libc::SIGRTMIN(),
                got.value,
                got.sender_pid
            );
        }
        return;
    }
    let mut child = spawn_role(TEST, "receiver", "");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    let rt = Signal::realtime(3).unwrap();
    // Real-time signals queue: all three arrive, in order, none merged.
    for value in [7, -1, 123_456] {
        signal::queue(child.id(), rt, value).unwrap();
    }
    let me = std::process::id();
    for value in [7, -1, 123_456] {
        assert_eq!(next_report(&mut out), format!("3 {value} {me}"));
    }
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
}

fn bad_input_gives_precise_errors() {
    assert!(matches!(
        Signal::realtime(1000),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Signals::new(&[Signal::KILL]),
        Err(Error::InvalidArgument(_))
    ));
    // A pid that no process holds (pid_max is far below this).
    assert!(matches!(
        signal::send(999_999_999, Signal::USR1),
        Err(Error::NotFound { .. })
    ));
    // 0 and anything above i32::MAX would reach the kernel as a process group (u32::MAX as
    // -1: every process); they are refused before any system call.
    for pid in [0, 1 << 31, u32::MAX] {
        assert!(matches!(
            signal::send(pid, Signal::USR1),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            signal::queue(pid, Signal::realtime(1).unwrap(), 7),
            Err(Error::InvalidArgument(_))
        ));
    }
    for bad in [
        Signal::KILL,
        Signal(libc::SIGSTOP),
        Signal(0),
        Signal(100_000),
    ] {
        assert!(matches!(
            signal::ignore(bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    let mut receiver = RealtimeReceiver::new(&[Signal::realtime(5).unwrap()]).unwrap();
    assert!(matches!(
        receiver.recv_deadline(Deadline::Now),
        Err(Error::Empty)
    ));
}

/// Starts this binary again in `role` (no libtest arguments: this file has its own main).
fn spawn_role(test: &str, role: &str, arg: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .env("IPCKIT_TEST_ROLE", role)
        .env("IPCKIT_TEST_ARG", arg)
        .env("IPCKIT_TEST_NAME", test)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn main() {
    let tests: [(&str, fn()); 3] = [
        (
            "sigusr1_reaches_a_child_iterating_signals_with_the_sender",
            sigusr1_reaches_a_child_iterating_signals_with_the_sender,
        ),
        (
            "realtime_signals_carry_their_payload_and_sender",
            realtime_signals_carry_their_payload_and_sender,
        ),
        (
            "bad_input_gives_precise_errors",
            bad_input_gives_precise_errors,
        ),
    ];
    if role().is_some() {
        let name = std::env::var("IPCKIT_TEST_NAME").unwrap_or_default();
        let (_, test) = tests
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a known test");
        test();
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut failed = 0;
    let mut passed = 0;
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(101);
    }
}
