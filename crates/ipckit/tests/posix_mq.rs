//! POSIX message queues across processes: priorities, persistence, limits, permissions.

mod common;

use std::time::{Duration, Instant};

use common::{reports, role, spawn_role, unique_name, wait_with_watchdog};
use ipckit::mq::PosixQueue;
use ipckit::{Deadline, Error, MessageReceiver, MessageSender};

const WATCHDOG: Duration = Duration::from_secs(60);

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = PosixQueue::remove(&self.0);
    }
}

#[test]
fn highest_priority_first_and_the_queue_outlives_its_creator() {
    const TEST: &str = "highest_priority_first_and_the_queue_outlives_its_creator";
    if let Some((_, name)) = role() {
        let mut q = PosixQueue::builder(&name)
            .capacity(8)
            .max_message_size(64)
            .create()
            .unwrap();
        for (msg, prio) in [("low", 1), ("high", 30), ("mid", 10), ("also low", 1)] {
            q.send_priority(msg.as_bytes(), prio, Deadline::Now)
                .unwrap();
        }
        return; // exits: the queue and its messages stay
    }
    let name = unique_name("mq");
    let _cleanup = Cleanup(name.clone());
    let mut child = spawn_role(TEST, "creator", &name);
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    let mut q = PosixQueue::open(&name).unwrap();
    let attrs = q.attributes().unwrap();
    assert_eq!(
        (attrs.capacity, attrs.max_message_size, attrs.depth),
        (8, 64, 4)
    );
    let got: Vec<(String, u32)> = (0..4)
        .map(|_| {
            let m = q.try_recv().unwrap();
            (String::from_utf8(m.data).unwrap(), m.meta.priority.unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("high".into(), 30),
            ("mid".into(), 10),
            ("low".into(), 1),
            ("also low".into(), 1)
        ]
    );
}

#[test]
fn flavours_limits_and_bad_input() {
    let name = unique_name("mqf");
    let _cleanup = Cleanup(name.clone());
    let mut q = PosixQueue::builder(&name)
        .capacity(2)
        .max_message_size(16)
        .create()
        .unwrap();
    assert!(matches!(q.try_recv(), Err(Error::Empty)));
    let start = Instant::now();
    assert!(matches!(
        q.recv_timeout(Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(25));
    q.try_send(b"1").unwrap();
    q.try_send(b"2").unwrap();
    assert!(matches!(q.try_send(b"3"), Err(Error::Full)));
    assert!(matches!(
        q.send_timeout(b"3", Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        q.try_send(&[0; 17]),
        Err(Error::MessageTooLarge { size: 17, max: 16 })
    ));
    assert!(matches!(
        PosixQueue::builder(&name).create(),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        PosixQueue::open(&unique_name("none")),
        Err(Error::NotFound { .. })
    ));
    // Beyond /proc/sys/fs/mqueue/msg_max: the error names the limit.
    match PosixQueue::builder(&unique_name("huge"))
        .capacity(1 << 20)
        .create()
    {
        Err(Error::LimitReached { limit, .. }) => assert!(limit.contains("msg_max"), "{limit}"),
        other => panic!("expected LimitReached, got {other:?}"),
    }
    assert!(matches!(
        PosixQueue::builder("a/b").create(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn another_user_cannot_open_a_0600_queue() {
    const TEST: &str = "another_user_cannot_open_a_0600_queue";
    if let Some((_, name)) = role() {
        // SAFETY: plain system calls in a single-threaded role process.
        assert!(unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 });
        match PosixQueue::open(&name) {
            Err(Error::PermissionDenied { .. }) => println!("@@denied"),
            other => println!("@@unexpected {other:?}"),
        }
        return;
    }
    let name = unique_name("mqperm");
    let _cleanup = Cleanup(name.clone());
    let _q = PosixQueue::builder(&name).create().unwrap();
    let mut child = spawn_role(TEST, "nobody", &name);
    assert_eq!(reports(&mut child), ["denied"]);
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
}
