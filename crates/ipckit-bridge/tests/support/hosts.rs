//! Two hosts for tests: two network namespaces joined by a veth pair, each with its own
//! `/dev/shm` and `/run` (a private mount namespace with fresh tmpfs mounts) and its own
//! `TMPDIR` (`/run/tmp`, where service ports live), so nothing but the network connects them.
//! `/tmp` is left alone: the test binaries may live there. Every process of a host is started
//! with `nsenter` into the namespaces of that host's holder process. The guard removes the
//! namespaces (and with them the veth pair) and kills every process it started, also when a
//! test fails; leftovers of a killed earlier run are removed first. Shared by the bridge
//! crate's tests and the CLI's (`#[path]`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PREFIX: &str = "ipckbr";
/// Every host process's `TMPDIR`, in the host's private `/run`.
pub const TMPDIR: &str = "/run/tmp";

/// A process started on a host, its stdout read line by line on a thread.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Proc {
    /// Waits for a line equal to `line`, at most `limit`.
    pub fn expect(&mut self, line: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == line => return,
                Ok(_) => continue,
                Err(_) => panic!("{}: no {line:?} within {limit:?}", self.what),
            }
        }
    }

    /// Waits for a line of its stdout starting with `prefix`, at most `limit`; returns it.
    pub fn expect_prefix(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "{}: no line starting {prefix:?} within {limit:?}",
                    self.what
                ),
            }
        }
    }

    /// The next line of its stdout, waiting at most `limit`.
    pub fn next_line(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(_) => panic!("{}: no more output within {limit:?}", self.what),
        }
    }

    /// Waits for the process to end successfully, at most `limit`.
    pub fn finish(mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} failed: {status}", self.what);
                return;
            }
            if start.elapsed() > limit {
                panic!("{} ran past its {limit:?} watchdog", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Host {
    pub ns: String,
    holder: Child,
}

/// Two namespaces, a veth pair between them (10.231.1.1 in `a`, 10.231.1.2 in `b`).
pub struct Hosts {
    pub a: Host,
    pub b: Host,
    veth_a: String,
}

pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Removes namespaces an earlier, killed run left (their owning test process is dead).
pub fn preclean() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            sh(&["ip", "netns", "del", ns]);
        }
    }
}

impl Hosts {
    /// Sets the two hosts up, or `None` (with a message) where namespaces are unavailable.
    pub fn new(tag: &str) -> Option<Hosts> {
        if !rustix::process::getuid().is_root()
            || !sh(&["ip", "-V"])
            || !sh(&["unshare", "--version"])
            || !sh(&["nsenter", "--version"])
            || !sh(&["setpriv", "--version"])
        {
            eprintln!("SKIPPED: network namespaces need root and ip, unshare, nsenter, setpriv");
            return None;
        }
        preclean();
        let id = format!("{}{tag}", std::process::id());
        let (ns_a, ns_b) = (format!("{PREFIX}{id}a"), format!("{PREFIX}{id}b"));
        // veth names are at most 15 bytes: the pid keeps them unique between runs.
        let veth_a = format!("ikb{}{tag}a", std::process::id() % 1_000_000);
        let veth_b = format!("ikb{}{tag}b", std::process::id() % 1_000_000);
        for ns in [&ns_a, &ns_b] {
            if !sh(&["ip", "netns", "add", ns]) {
                eprintln!("SKIPPED: cannot create network namespace {ns}");
                sh(&["ip", "netns", "del", &ns_a]);
                return None;
            }
        }
        let half = Hosts {
            a: Host::start(&ns_a),
            b: Host::start(&ns_b),
            veth_a: veth_a.clone(),
        };
        let ok = sh(&[
            "ip", "link", "add", &veth_a, "netns", &ns_a, "type", "veth", "peer", "name", &veth_b,
            "netns", &ns_b,
        ]) && sh(&[
            "ip",
            "-n",
            &ns_a,
            "addr",
            "add",
            "10.231.1.1/24",
            "dev",
            &veth_a,
        ]) && sh(&[
            "ip",
            "-n",
            &ns_b,
            "addr",
            "add",
            "10.231.1.2/24",
            "dev",
            &veth_b,
        ]) && sh(&["ip", "-n", &ns_a, "link", "set", &veth_a, "up"])
            && sh(&["ip", "-n", &ns_b, "link", "set", &veth_b, "up"])
            && sh(&["ip", "-n", &ns_a, "link", "set", "lo", "up"])
            && sh(&["ip", "-n", &ns_b, "link", "set", "lo", "up"]);
        assert!(ok, "cannot set up the veth pair between {ns_a} and {ns_b}");
        Some(half)
    }

    pub fn link(&self, up: bool) {
        assert!(sh(&[
            "ip",
            "-n",
            &self.a.ns,
            "link",
            "set",
            &self.veth_a,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Host {
    /// The holder: a process in the namespace with its own mount namespace and tmpfs
    /// `/dev/shm` and `/run` (with `/run/tmp` for `TMPDIR`); everything else on the host
    /// joins its namespaces. It ends by itself within a second of the test process (a test
    /// binary killed outright leaves no holder behind).
    fn start(ns: &str) -> Host {
        let mut holder = Command::new("ip")
            .args(["netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /dev/shm && mount -t tmpfs tmpfs /run && mkdir /run/tmp && echo up \
                 && while kill -0 $PPID 2>/dev/null; do sleep 1; done")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start a host holder");
        let mut line = String::new();
        BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "up", "host {ns} did not come up");
        Host {
            ns: ns.to_string(),
            holder,
        }
    }

    /// Starts `program` with `args` and `envs` on the host (in its network and mount
    /// namespaces), stdout read line by line.
    pub fn spawn_cmd(
        &self,
        program: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
        what: &str,
    ) -> Proc {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.holder.id().to_string(), "-m", "-n", "--"])
            // Killed with the test process, however it ends.
            .args(["setpriv", "--pdeathsig", "KILL", "--"])
            .arg(program)
            .args(args)
            .env("TMPDIR", TMPDIR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("nsenter");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            lines,
            what: format!("{what} on {}", self.ns),
        }
    }

    /// Runs a command on the host to its end: its stdout, if it succeeded.
    pub fn run(&self, program: &str, args: &[&str]) -> Option<String> {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.holder.id().to_string(),
                "-m",
                "-n",
                "--",
                program,
            ])
            .args(args)
            .env("TMPDIR", TMPDIR)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        sh(&["ip", "netns", "del", &self.ns]);
    }
}

/// Runs `f` with a watchdog: a hang becomes a failure (the guards then clean up).
pub fn watchdog(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test ran past its {limit:?} watchdog"),
    }
}
