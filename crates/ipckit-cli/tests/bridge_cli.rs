//! The README's two-host example, command for command, between two network namespaces
//! (issue 16): `ipckit bridge`, `serve`, `call`, `send`, `recv`, `bridge --status`.
//! Only with `--features bridge`.
#![cfg(feature = "bridge")]

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../../ipckit-bridge/tests/support/hosts.rs"]
mod hosts;
use hosts::{watchdog, Hosts};

const IPCKIT: &str = env!("CARGO_BIN_EXE_ipckit");

#[test]
fn the_readme_two_host_example_works_between_two_namespaces() {
    watchdog(Duration::from_secs(120), || {
        let Some(hosts) = Hosts::new("c") else { return };
        let (a, b) = (&hosts.a, &hosts.b);
        let ipckit = Path::new(IPCKIT);
        // host B: the workers' mailbox, a service, the bridge that offers both.
        assert!(b.run(IPCKIT, &["mailbox", "create", "jobs"]).is_some());
        let _serve = b.spawn_cmd(
            ipckit,
            &["serve", "upper", "--", "tr", "a-z", "A-Z"],
            &[],
            "serve",
        );
        let _bridge_b = b.spawn_cmd(
            ipckit,
            &[
                "bridge",
                "--listen",
                "tcp/0.0.0.0:7447",
                "--export",
                "mailbox:jobs",
                "--export",
                "service:upper",
            ],
            &[],
            "bridge",
        );
        // host A: the producers and the clients.
        let _bridge_a = a.spawn_cmd(
            ipckit,
            &[
                "bridge",
                "--connect",
                "tcp/10.231.1.2:7447",
                "--import",
                "mailbox:jobs",
                "--import",
                "service:upper",
            ],
            &[],
            "bridge",
        );
        std::thread::sleep(Duration::from_secs(1)); // the README's `sleep 1`
        assert!(
            a.run(IPCKIT, &["send", "jobs", "resize 42"]).is_some(),
            "send on host A"
        );
        let reply = a
            .run(IPCKIT, &["call", "upper", "hello"])
            .expect("call on host A");
        assert_eq!(reply, "HELLO");
        let got = b.run(
            IPCKIT,
            &["recv", "jobs", "--count", "1", "--timeout", "10s"],
        );
        assert_eq!(got.as_deref(), Some("resize 42\n"), "recv on host B");
        // The status file is rewritten every half second.
        let start = Instant::now();
        let status = loop {
            let status = a
                .run(IPCKIT, &["bridge", "--status"])
                .expect("bridge --status on A");
            if status.contains("acked              1") || start.elapsed() > Duration::from_secs(5) {
                break status;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.contains("acked              1"), "{status}");
        assert!(status.contains("peers              1"), "{status}");
        let listing = a.run(IPCKIT, &["ls"]).expect("ls on A");
        assert!(
            listing.contains("imported") && listing.contains("jobs"),
            "{listing}"
        );
        // ls --json: the same section, as the last entry of the array.
        let json = a.run(IPCKIT, &["ls", "--json"]).expect("ls --json on A");
        let entries: serde_json::Value = serde_json::from_str(&json).expect("ls --json parses");
        let bridge = entries
            .as_array()
            .and_then(|all| all.iter().find(|e| e["kind"] == "bridge"))
            .unwrap_or_else(|| panic!("no bridge entry in {json}"));
        assert_eq!(
            bridge["imports"],
            serde_json::json!(["mailbox:jobs", "service:upper"]),
            "{json}"
        );
        assert_eq!(bridge["exports"], serde_json::json!([]), "{json}");
        assert_eq!(bridge["peers"].as_array().map(Vec::len), Some(1), "{json}");
        assert!(bridge["pid"].as_u64().is_some_and(|p| p > 0), "{json}");
        let listing_b = b.run(IPCKIT, &["ls", "--json"]).expect("ls --json on B");
        let entries_b: serde_json::Value = serde_json::from_str(&listing_b).expect("parses");
        let bridge_b = entries_b
            .as_array()
            .and_then(|all| all.last())
            .expect("an entry");
        assert_eq!(bridge_b["kind"], "bridge", "{listing_b}");
        assert_eq!(
            bridge_b["exports"],
            serde_json::json!(["mailbox:jobs", "service:upper"]),
            "{listing_b}"
        );
    });
}
