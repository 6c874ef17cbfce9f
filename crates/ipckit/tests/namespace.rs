//! `ls` and `clean` across kinds: what dead processes leave behind is found and reclaimed,
//! and nothing alive or persistent is touched.

mod common;

use std::io::BufReader;
use std::time::Duration;

use common::{role, spawn_role, unique_name, wait_for_line};
use ipckit::direct::Inbox;
use ipckit::namespace;
use ipckit::service::Server;
use ipckit::shm::Mailbox;
use ipckit::MessageSender;

#[test]
fn clean_removes_what_dead_processes_left_and_keeps_the_rest() {
    const TEST: &str = "clean_removes_what_dead_processes_left_and_keeps_the_rest";
    if let Some((_, name)) = role() {
        let _server = Server::bind(&name, 0o600).unwrap();
        let _inbox = Inbox::open_named(&name).unwrap();
        let mailbox = Mailbox::open(&name).unwrap();
        let _receiver = mailbox.receiver().unwrap();
        println!("@@ready");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("ns");
    let mailbox = Mailbox::create(&name).unwrap();
    mailbox.sender().unwrap().send(b"unread").unwrap();
    let mut child = spawn_role(TEST, "owner", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    let listed = namespace::list().unwrap();
    let service = listed
        .iter()
        .find(|o| o.kind == "service" && o.name == name)
        .unwrap();
    assert_eq!((service.alive, service.dead), (1, 0));
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = namespace::list().unwrap();
    let service = listed
        .iter()
        .find(|o| o.kind == "service" && o.name == name)
        .unwrap();
    assert_eq!((service.alive, service.dead), (0, 1));
    let ours = |kind: &str, n: &str| {
        namespace::clean(true)
            .unwrap()
            .into_iter()
            .any(|a| a.kind == kind && a.name == n)
    };
    assert!(
        ours("service", &name),
        "dry run names the dead server's socket"
    );
    assert!(
        std::env::temp_dir()
            .join(format!("ipckit.service.{name}"))
            .exists(),
        "dry run changes nothing"
    );
    let done = namespace::clean(false).unwrap();
    assert!(
        done.iter().any(|a| a.kind == "service" && a.name == name),
        "{done:?}"
    );
    assert!(!std::env::temp_dir()
        .join(format!("ipckit.service.{name}"))
        .exists());
    // The persistent mailbox stays, its unread message too, its dead receiver forgotten.
    let info = Mailbox::open(&name).unwrap().info();
    assert_eq!(info.depth, 1);
    assert!(info.participants.iter().all(|p| p.alive));
    Mailbox::remove(&name).unwrap();
    let _ = Mailbox::remove(&format!("inbox.{name}"));
}
