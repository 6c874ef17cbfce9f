//! Direct naming across processes: send to a pid or a name, receive from one peer only,
//! peers that exit.

mod common;

use std::io::BufReader;
use std::time::Duration;

use common::{role, spawn_role, wait_for_line, wait_with_watchdog};
use ipckit::direct::{Inbox, Peer};
use ipckit::{Deadline, Error, MessageReceiver};

const WATCHDOG: Duration = Duration::from_secs(60);

#[test]
fn recv_from_picks_one_peer_and_keeps_the_others_in_order() {
    const TEST: &str = "recv_from_picks_one_peer_and_keeps_the_others_in_order";
    if let Some((role, parent)) = role() {
        let mut inbox = Inbox::open_mine().unwrap();
        let parent = Peer::Pid(parent.parse().unwrap());
        let messages: &[&[u8]] = if role == "a" {
            &[b"a1", b"a2"]
        } else {
            &[b"b1"]
        };
        for m in messages {
            inbox.send_to(&parent, m).unwrap();
        }
        assert_eq!(inbox.linked_peers(), 1, "one link per pair, made once");
        return;
    }
    let mut inbox = Inbox::open_mine().unwrap();
    let me = std::process::id().to_string();
    let mut a = spawn_role(TEST, "a", &me);
    assert!(wait_with_watchdog(&mut a, WATCHDOG).success());
    let mut b = spawn_role(TEST, "b", &me);
    let b_pid = b.id();
    assert!(wait_with_watchdog(&mut b, WATCHDOG).success());
    // b's message arrived after a's two, but we ask for b's first.
    assert_eq!(
        inbox
            .recv_from(b_pid, Deadline::after(WATCHDOG))
            .unwrap()
            .data,
        b"b1"
    );
    let (m1, m2) = (inbox.try_recv().unwrap(), inbox.try_recv().unwrap());
    assert_eq!(
        (m1.meta.sender_pid, m1.data.as_slice()),
        (Some(a.id()), &b"a1"[..])
    );
    assert_eq!(
        (m2.meta.sender_pid, m2.data.as_slice()),
        (Some(a.id()), &b"a2"[..])
    );
    // b has exited and left nothing more: Disconnected, not a hang.
    assert!(matches!(
        inbox.recv_from(b_pid, Deadline::after(WATCHDOG)),
        Err(Error::Disconnected)
    ));
}

#[test]
fn sending_to_a_peer_that_exited_is_disconnected() {
    const TEST: &str = "sending_to_a_peer_that_exited_is_disconnected";
    if let Some((_, name)) = role() {
        let mut inbox = Inbox::open_named(&name).unwrap();
        println!("@@ready");
        let msg = inbox.recv_timeout(WATCHDOG).unwrap();
        assert_eq!(msg.data, b"first");
        return;
    }
    let name = common::unique_name("direct");
    // (The other test holds this process's pid inbox: tests share the process.)
    let mut me = Inbox::open_named(&common::unique_name("me")).unwrap();
    let mut child = spawn_role(TEST, "peer", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    let peer = Peer::Name(name.clone());
    me.send_to(&peer, b"first").unwrap();
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    assert!(matches!(
        me.send_to(&peer, b"second"),
        Err(Error::Disconnected)
    ));
    assert!(matches!(
        me.send_to(&Peer::Name(common::unique_name("nobody")), b"x"),
        Err(Error::Disconnected)
    ));
}
