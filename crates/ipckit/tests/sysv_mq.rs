//! System V message queues across processes: the typed-receive rules, persistence, errors.

mod common;

use std::time::{Duration, Instant};

use common::{role, spawn_role, wait_with_watchdog};
use ipckit::mq::SysvQueue;
use ipckit::{Deadline, Error, MessageReceiver, MessageSender};

const WATCHDOG: Duration = Duration::from_secs(60);

/// A key no other test uses.
fn key(salt: i32) -> i32 {
    0x1bd0_0000 | ((std::process::id() as i32 & 0xfff) << 4) | salt
}

struct Remove(i32);
impl Drop for Remove {
    fn drop(&mut self) {
        if let Ok(q) = SysvQueue::open(self.0) {
            let _ = q.remove();
        }
    }
}

fn take(q: &mut SysvQueue, ty: i64) -> (i64, String) {
    let mut buf = Vec::new();
    let meta = q.recv_type(ty, &mut buf, Deadline::Now).unwrap();
    (meta.msg_type.unwrap(), String::from_utf8(buf).unwrap())
}

#[test]
fn typed_receive_follows_the_system_v_rules_and_outlives_the_sender() {
    const TEST: &str = "typed_receive_follows_the_system_v_rules_and_outlives_the_sender";
    if let Some((_, key)) = role() {
        let mut q = SysvQueue::create(key.parse().unwrap(), 0o600).unwrap();
        for (ty, msg) in [
            (5, "five"),
            (2, "two"),
            (7, "seven"),
            (2, "two again"),
            (1, "one"),
        ] {
            q.send_typed(ty, msg.as_bytes(), Deadline::Now).unwrap();
        }
        return;
    }
    let k = key(1);
    let _cleanup = Remove(k);
    let mut child = spawn_role(TEST, "sender", &k.to_string());
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    let mut q = SysvQueue::open(k).unwrap();
    assert_eq!(q.stat().unwrap().0, 5);
    // Positive: the first of exactly that type.
    assert_eq!(take(&mut q, 2), (2, "two".into()));
    // Negative: the lowest type at or below |n| (1 is lower than 2).
    assert_eq!(take(&mut q, -5), (1, "one".into()));
    assert_eq!(take(&mut q, -5), (2, "two again".into()));
    // Zero: the first message of any type.
    assert_eq!(take(&mut q, 0), (5, "five".into()));
    assert_eq!(take(&mut q, 0), (7, "seven".into()));
    let mut buf = Vec::new();
    assert!(matches!(
        q.recv_type(3, &mut buf, Deadline::Now),
        Err(Error::Empty)
    ));
}

#[test]
fn flavours_and_errors() {
    let k = key(2);
    let _cleanup = Remove(k);
    let mut q = SysvQueue::create(k, 0o600).unwrap();
    assert!(matches!(
        SysvQueue::create(k, 0o600),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(q.try_recv(), Err(Error::Empty)));
    let start = Instant::now();
    assert!(matches!(
        q.recv_timeout(Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(30));
    let max = q.max_message_size();
    assert!(matches!(
        q.try_send(&vec![0; max + 1]),
        Err(Error::MessageTooLarge { .. })
    ));
    assert!(matches!(
        q.send_typed(0, b"x", Deadline::Now),
        Err(Error::InvalidArgument(_))
    ));
    q.send(b"plain").unwrap();
    let msg = q.recv().unwrap();
    assert_eq!(
        (msg.data.as_slice(), msg.meta.msg_type),
        (&b"plain"[..], Some(1))
    );
    assert!(matches!(
        SysvQueue::open(key(3)),
        Err(Error::NotFound { .. })
    ));
    q.remove().unwrap();
    assert!(matches!(q.try_send(b"gone"), Err(Error::Disconnected)));
}
