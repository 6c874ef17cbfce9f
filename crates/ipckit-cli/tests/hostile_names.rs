//! Issue 13 item 4: `ipckit ls` escapes what it prints that it did not check, so a name with a
//! newline (or a terminal escape) planted in `/dev/shm` or in a path cannot forge table rows.

use std::process::Command;
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

/// Removes the planted file, pass or fail.
struct Planted(String);
impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_planted_name_with_a_newline_cannot_forge_an_ls_row() {
    let tag = format!("cli-nl-{}", std::process::id());
    let planted = Planted(format!(
        "/dev/shm/ipckit.mailbox.{tag}\nmailbox FORGED 0 64 0600 1 0\u{1b}[2J"
    ));
    std::fs::write(&planted.0, b"").unwrap();
    let mut child = Command::cargo_bin("ipckit")
        .unwrap()
        .arg("ls")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Watchdog: ls must finish promptly whatever is planted.
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("ipckit ls ran past its watchdog");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !stdout.lines().any(|l| l.starts_with("mailbox FORGED")),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'));
    assert!(
        stderr.contains(&format!("{tag}\\nmailbox FORGED")),
        "skipped and reported, escaped: {stderr}"
    );
}
