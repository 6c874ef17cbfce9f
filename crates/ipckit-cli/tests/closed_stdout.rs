//! A reader that stops early (`ipckit ls | head -1`) ends a command quietly: exit code 0, no
//! panic message, as with any Unix tool.

use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

fn exits_quietly_with_stdout_closed(args: &[&str]) {
    let mut child = Command::cargo_bin("ipckit")
        .unwrap()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the command has started writing, so its first write fails.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ipckit {args:?}: {:?} {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "ipckit {args:?}: {stderr}");
}

#[test]
fn doctor_ls_clean_and_bench_list_end_quietly_when_the_reader_is_gone() {
    for args in [
        &["doctor"][..],
        &["ls"],
        &["ls", "--json"],
        &["clean", "--dry-run"],
        &["bench", "--list"],
    ] {
        exits_quietly_with_stdout_closed(args);
    }
}
