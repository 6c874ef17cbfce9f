//! Every program in `examples/` runs, exits 0, prints what it demonstrates, and leaves nothing
//! behind: no named object under `/dev/shm` or `/tmp` with its pid, no process of its group.
//!
//! The examples are not built here: `cargo test` builds them next to this test, under
//! `target/<profile>/examples/`. A run that selects only this test (`--test examples`) does
//! not; build them first with `cargo build -p ipckit --examples`.
//!
//! Each example runs in a process group of its own, under a watchdog that kills the whole
//! group, so a hung example or a stray peer fails the test instead of hanging it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(120);

fn examples_dir() -> PathBuf {
    // This test is target/<profile>/deps/examples-<hash>; the examples are in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

/// The example's output, after checking that it succeeded and cleaned up.
fn run(name: &str, args: &[&str]) -> String {
    let path = examples_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: `cargo test -p ipckit` builds the examples, or run \
         `cargo build -p ipckit --examples` first",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WATCHDOG {
            kill_group(pid);
            let _ = child.wait();
            panic!("example {name} ran past its {WATCHDOG:?} watchdog");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A peer still alive would keep the pipes open: end the group before reading them.
    let strays = group_alive(pid);
    if strays {
        kill_group(pid);
    }
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "example {name} failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert!(!strays, "example {name} left processes running\n{out}");
    let marker = format!("-{pid}");
    for dir in ["/dev/shm", "/tmp"] {
        let left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.contains("ipckit") && f.contains(&marker))
            .collect();
        assert!(left.is_empty(), "example {name} left {left:?} in {dir}");
    }
    out
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn assert_has(out: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(out.contains(w), "missing {w:?} in:\n{out}");
    }
}

/// Every example is run below, and each one but the benchmarks names the note it comes from.
#[test]
fn every_example_is_run_and_names_its_note() {
    let tested = [
        "bounded_buffer",
        "callgrind_send_recv",
        "callgrind_topic",
        "fifo_shell",
        "mailbox_ping_pong",
        "pipe_parent_child",
        "posix_shm",
        "race_condition",
        "shell_pipeline",
        "signals",
        "sysv_queue_typed",
        "sysv_shm",
        "tcp_client_server",
        "udp_sender_receiver",
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|f| f.strip_suffix(".rs"))
                .map(str::to_string)
        })
        .collect();
    found.sort();
    assert_eq!(found, tested, "add a test for each new example");
    let benchmarks = [
        "mailbox_ping_pong",
        "callgrind_send_recv",
        "callgrind_topic",
    ];
    for name in tested.iter().filter(|n| !benchmarks.contains(n)) {
        let source = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        let docs: String = source
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            docs.contains("course notes `0") && docs.contains(".txt`, section"),
            "{name}.rs must name its note (file and section) in its doc comment"
        );
    }
}

#[test]
fn posix_shm() {
    let out = run("posix_shm", &[]);
    assert_has(
        &out,
        &[
            "writer: wrote \"hello from the writer",
            "reader: pid ",
            "mapped 4096 bytes and read \"hello from the writer",
            "writer: the reader answered \"read it, pid",
            "(shm_unlink)",
        ],
    );
}

#[test]
fn sysv_shm() {
    let out = run("sysv_shm", &[]);
    assert_has(
        &out,
        &[
            "B: shmget(key ",
            "read \"written by A through shmat's address\"; shmctl(IPC_STAT) counts 2 attachments",
            "B: shmdt: detached",
            "A: shmctl(IPC_STAT): 4096 bytes, attached 1 time(s)",
            "A: B left \"B (pid",
            "marked for removal = true",
            "A: shmdt: the segment is gone",
        ],
    );
}

#[test]
fn pipe_parent_child() {
    let out = run("pipe_parent_child", &[]);
    assert_has(
        &out,
        &[
            "child: read \"first\"\nchild: read \"second\"\nchild: read \"third and last\"\n",
            "child: end of stream",
        ],
    );
}

#[test]
fn shell_pipeline() {
    let out = run("shell_pipeline", &[]);
    let errors = "error: disk full\nerror: still full\n";
    assert_has(
        &out,
        &[
            &format!(" | grep error\n{errors}"),
            &format!(" | grep error | shell_pipeline show\n{errors}"),
            &format!("$ (pipe::spawn_bytes) grep error\n{errors}"),
            "all three pipelines kept the same 2 lines",
        ],
    );
}

#[test]
fn fifo_shell() {
    let out = run("fifo_shell", &[]);
    assert_has(
        &out,
        &[
            "test -p: a named pipe in the filesystem",
            "process2 read \"one\"\nprocess2 read \"two\"\nprocess2 read \"three\"\n",
            "the FIFO is still there after both exited: true",
            "fifo::open_read_bytes received \"text\\n\"",
            "&\nplain bytes, no frame headers\ncat showed exactly the bytes",
            "(it existed until deleted)",
        ],
    );
}

#[test]
fn tcp_client_server() {
    let out = run("tcp_client_server", &[]);
    assert_has(
        &out,
        &[
            "client: connected to 127.0.0.1:",
            "the server replied \"echo: hello\"",
            "the server replied \"echo: how are you?\"",
            "bash /dev/tcp: the server replied \"echo: from bash\"",
            "server: the client said bye",
        ],
    );
}

#[test]
fn udp_sender_receiver() {
    let out = run("udp_sender_receiver", &[]);
    assert_has(
        &out,
        &[
            "receiver: bound 127.0.0.1:",
            "sent 3 datagrams",
            "receiver: a datagram of 37 bytes: \"a longer postcard, still one datagram\"",
            "each whole",
        ],
    );
}

#[test]
fn signals() {
    let out = run("signals", &[]);
    assert_has(
        &out,
        &[
            "held: SIGTERM's default action ends the process",
            "child: caught SIGINT from pid Some(",
            "held: the handler replaced the default action",
            "child: got signal 10 (SIGUSR1) with payload 42 from pid",
            "held: the default action came back",
            "every part held",
        ],
    );
}

#[test]
fn sysv_queue_typed() {
    let out = run("sysv_queue_typed", &[]);
    assert_has(
        &out,
        &[
            "5 messages wait in the queue",
            "msgrcv(type 3, urgent first): type 3 \"urgent: stop the line\"\n\
             msgrcv(type 2, orders next): type 2 \"order #1\"\n\
             msgrcv(type 2, orders next): type 2 \"order #2\"\n\
             msgrcv(type 0, any type, oldest first): type 1 \"log: started\"\n\
             msgrcv(type 0, any type, oldest first): type 1 \"log: working\"\n",
            "msgctl(IPC_RMID): the queue is gone",
        ],
    );
}

#[test]
fn bounded_buffer() {
    let out = run("bounded_buffer", &[]);
    assert_has(
        &out,
        &[
            "counter = 0 initially",
            "counter = 4: all 4 buffers full; the producer waits on `empty` (still running: true)",
            "producer: put all 12 items",
            "consumer: took all 12 items in order; counter = 0",
        ],
    );
}

#[test]
fn race_condition() {
    let out = run("race_condition", &[]);
    // Lost updates depend on how the processes interleave; the semaphore's count does not.
    assert_has(
        &out,
        &["updates lost", "count = 200000 of 200000: none lost"],
    );
}

#[test]
fn mailbox_ping_pong() {
    // Sleeping waits: busy-polling peers crawl when the machine has fewer free cores than spinners.
    let out = run("mailbox_ping_pong", &["64", "2000", "sleep"]);
    assert_has(&out, &["64 B round trip over 2000 rounds: median "]);
}

#[test]
fn callgrind_topic() {
    for (capacity, overflow, publishers) in
        [("1", "backpressure", "single"), ("64", "overrun", "lock")]
    {
        let out = run("callgrind_topic", &["1000", capacity, overflow, publishers]);
        assert_has(
            &out,
            &[&format!(
                "1000 publish+recv pairs of 64 B through one topic (capacity {capacity})"
            )],
        );
    }
}

#[test]
fn callgrind_send_recv() {
    let out = run("callgrind_send_recv", &["1000"]);
    assert_has(&out, &["1000 send+recv pairs of 64 B through one mailbox"]);
}
