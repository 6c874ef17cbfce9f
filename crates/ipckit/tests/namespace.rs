//! `ls` and `clean` across kinds: what dead processes leave behind is found and reclaimed,
//! and nothing alive or persistent is touched.

mod common;

use std::io::BufReader;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use common::{role, spawn_role, unique_name, wait_for_line, with_watchdog};
use ipckit::direct::Inbox;
use ipckit::mq::{PosixQueue, SysvQueue};
use ipckit::service::Server;
use ipckit::shm::{Mailbox, Shared, SysvSegment};
use ipckit::socket::unix;
use ipckit::{fifo, namespace, MessageSender};

/// Removes whatever a test below created under `name` (and files under `base`, System V
/// objects under `key`), even when the test fails half-way.
struct Scrub {
    name: String,
    base: Option<String>,
    key: Option<i32>,
}

impl Drop for Scrub {
    fn drop(&mut self) {
        let _ = Mailbox::remove(&self.name);
        let _ = Mailbox::remove(&format!("inbox.{}", self.name));
        let _ = PosixQueue::remove(&self.name);
        let _ = Shared::<u64>::remove(&self.name);
        if let Some(base) = &self.base {
            for fifo in [".fifo", ".lost"] {
                let _ = fifo::remove(format!("{base}{fifo}"));
            }
            for file in ["", ".stream", ".dgram"] {
                let _ = std::fs::remove_file(format!("{base}{file}"));
            }
        }
        if let Some(key) = self.key {
            if let Ok(queue) = SysvQueue::open(key) {
                let _ = queue.remove();
            }
            if let Ok(segment) = SysvSegment::open(key) {
                let _ = segment.remove();
            }
        }
    }
}

/// `clean` acts on the whole machine: the tests that call it take turns, so that one does
/// not clean up what the other is about to check.
static MACHINE_WIDE: Mutex<()> = Mutex::new(());

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
    let _turn = MACHINE_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let name = unique_name("ns");
    let _scrub = Scrub {
        name: name.clone(),
        base: None,
        key: None,
    };
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

/// The registry entries (under any uid) that name the service port of `name`.
fn registry_entries_naming_port(name: &str) -> Vec<std::path::PathBuf> {
    let port = format!("ipckit.service.{name}");
    let Ok(users) = std::fs::read_dir("/dev/shm/ipckit-registry") else {
        return Vec::new();
    };
    users
        .filter_map(|u| std::fs::read_dir(u.ok()?.path()).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&port))
        .map(|e| e.path())
        .collect()
}

/// A service whose server was SIGKILLed: ONE `clean` removes its port and forgets the registry
/// entry its listener recorded, in one step; a second `clean` finds nothing of it to do.
#[test]
fn one_clean_removes_a_dead_servers_port_and_its_registry_entry() {
    const TEST: &str = "one_clean_removes_a_dead_servers_port_and_its_registry_entry";
    if let Some((_, name)) = role() {
        let _server = Server::bind(&name, 0o600).unwrap();
        println!("@@ready");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let _turn = MACHINE_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let name = unique_name("svc-clean");
    let port = std::env::temp_dir().join(format!("ipckit.service.{name}"));
    struct PortScrub(String, std::path::PathBuf);
    impl Drop for PortScrub {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.1);
            for entry in registry_entries_naming_port(&self.0) {
                let _ = std::fs::remove_file(entry);
            }
        }
    }
    let _scrub = PortScrub(name.clone(), port.clone());
    with_watchdog(Duration::from_secs(60), move || {
        let mut child = spawn_role(TEST, "server", &name);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        wait_for_line(&mut out, "ready");
        assert!(
            !registry_entries_naming_port(&name).is_empty(),
            "the server's listener records its port in the registry"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let port_text = port.to_string_lossy().into_owned();
        let about_it = |a: &namespace::CleanAction| a.name == name || a.name == port_text;

        let done = namespace::clean(false).unwrap();
        let ours: Vec<_> = done.iter().filter(|a| about_it(a)).collect();
        assert_eq!(ours.len(), 1, "one step for one object: {ours:?}");
        assert_eq!(
            (ours[0].kind.to_string(), ours[0].action.as_str()),
            (
                "service".to_string(),
                "removed the socket file of a server that is gone"
            )
        );
        assert!(!port.exists(), "the port is removed");
        assert_eq!(
            registry_entries_naming_port(&name),
            Vec::<std::path::PathBuf>::new(),
            "its registry entry is forgotten by the same run"
        );
        let again = namespace::clean(true).unwrap();
        let left: Vec<_> = again.iter().filter(|a| about_it(a)).collect();
        assert!(left.is_empty(), "nothing left for a second clean: {left:?}");
        let listed = namespace::inspect().unwrap();
        assert!(!listed.objects.iter().any(|o| o.name.contains(&name)));
    });
}

/// FIFOs, socket files, System V and POSIX queues, System V and other named segments: all
/// listed with what the kernel says of them; `clean` removes socket files of dead processes,
/// forgets objects removed behind ipckit's back, and keeps every persistent object.
#[test]
fn every_kind_of_named_object_is_listed_and_cleaned() {
    const TEST: &str = "every_kind_of_named_object_is_listed_and_cleaned";
    if let Some((_, path)) = role() {
        let _stream = unix::StreamListener::bind(format!("{path}.stream")).unwrap();
        let _dgram = unix::BoundDatagram::bind(format!("{path}.dgram"), None).unwrap();
        println!("@@ready");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let _turn = MACHINE_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let name = unique_name("kinds");
    let base = std::env::temp_dir().join(&name);
    let base_text = base.to_str().unwrap().to_string();
    let fifo_path = format!("{base_text}.fifo");
    let (stream_path, dgram_path) = (format!("{base_text}.stream"), format!("{base_text}.dgram"));
    let mut scrub = Scrub {
        name: name.clone(),
        base: Some(base_text.clone()),
        key: None,
    };
    fifo::create(&fifo_path, 0o640).unwrap();
    let lost_fifo = format!("{base_text}.lost");
    fifo::create(&lost_fifo, 0o600).unwrap();
    std::fs::write(&base, b"ftok anchor").unwrap();
    let key = SysvQueue::key_from_path(&base, 7).unwrap();
    scrub.key = Some(key);
    let mut sysv_queue = SysvQueue::create(key, 0o600).unwrap();
    sysv_queue.send(b"waiting").unwrap();
    let sysv_segment = SysvSegment::create(key, 4096, 0o600).unwrap();
    let posix = PosixQueue::builder(&name).capacity(4).create().unwrap();
    let shared = Shared::create(&name, 7u64, 0o600).unwrap();

    let mut child = spawn_role(TEST, "binder", &base_text);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    let find = |kind: &str, n: &str| {
        namespace::list()
            .unwrap()
            .into_iter()
            .find(|o| o.kind == kind && o.name == n)
    };
    let fifo_row = find("fifo", &fifo_path).expect("the FIFO is listed");
    assert_eq!((fifo_row.mode, fifo_row.error), (Some(0o640), None));
    let socket = find("unix-socket", &stream_path).expect("the socket file is listed");
    assert_eq!((socket.alive, socket.dead), (1, 0));
    assert!(find("unix-socket", &dgram_path).is_some());
    let queue_row = find("sysv-mq", &format!("{key}.{}", sysv_queue.id()));
    let queue_row = queue_row.expect("the System V queue is listed");
    assert_eq!((queue_row.depth, queue_row.mode), (Some(1), Some(0o600)));
    let segment_row = find("sysv-shm", &format!("{key}.{}", sysv_segment.id()))
        .expect("the System V segment is listed");
    assert_eq!(segment_row.capacity.as_deref(), Some("4096 bytes"));
    assert_eq!(segment_row.alive, 1, "one attachment: ours");
    assert!(
        find("posix-mq", &name).is_some(),
        "found without /dev/mqueue"
    );
    assert!(find("segment", &format!("shared.{name}")).is_some());

    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        find("unix-socket", &stream_path).map(|s| (s.alive, s.dead)),
        Some((0, 1))
    );
    std::fs::remove_file(&lost_fifo).unwrap();
    assert!(find("fifo", &lost_fifo).unwrap().error.is_some());

    let planned = namespace::clean(true).unwrap();
    let planned_for = |n: &str| planned.iter().any(|a| a.name == n);
    assert!(planned_for(&stream_path) && planned_for(&dgram_path) && planned_for(&lost_fifo));
    assert!(
        Path::new(&stream_path).exists(),
        "a dry run changes nothing"
    );
    let done = namespace::clean(false).unwrap();
    for path in [&stream_path, &dgram_path, &lost_fifo] {
        assert!(done.iter().any(|a| &a.name == path), "{path}: {done:?}");
        assert!(find("unix-socket", path).is_none() && find("fifo", path).is_none());
    }
    assert!(!Path::new(&stream_path).exists() && !Path::new(&dgram_path).exists());
    // Persistent objects are kept, with their contents.
    assert!(Path::new(&fifo_path).exists());
    assert_eq!(sysv_queue.stat().unwrap().0, 1);
    assert!(find("posix-mq", &name).is_some());

    // Removed through ipckit, they leave the list.
    fifo::remove(&fifo_path).unwrap();
    sysv_queue.remove().unwrap();
    sysv_segment.remove().unwrap();
    drop(posix);
    PosixQueue::remove(&name).unwrap();
    drop(shared);
    Shared::<u64>::remove(&name).unwrap();
    std::fs::remove_file(&base).unwrap();
    let left: Vec<_> = namespace::list()
        .unwrap()
        .into_iter()
        .filter(|o| o.name.contains(&name))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 12, item 7: `ls` says what a waiter waits for. A sender process holds a loaned slot
/// of a mailbox and the publish lock of a topic; the listing names both, with its pid.
#[test]
fn ls_names_the_process_holding_a_slot_or_a_lock() {
    const TEST: &str = "ls_names_the_process_holding_a_slot_or_a_lock";
    if let Some((_, name)) = role() {
        let mailbox = Mailbox::open(&name).unwrap();
        let mut tx = mailbox.sender().unwrap();
        let topic = ipckit::shm::Topic::open(&name).unwrap();
        let mut publisher = topic.publisher().unwrap();
        let _slot = tx.loan().unwrap();
        let _lock = publisher.loan().unwrap();
        println!("@@holding");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("held");
    let _scrub = Scrub {
        name: name.clone(),
        base: None,
        key: None,
    };
    struct TopicScrub(String);
    impl Drop for TopicScrub {
        fn drop(&mut self) {
            let _ = ipckit::shm::Topic::remove(&self.0);
        }
    }
    let _topic_scrub = TopicScrub(name.clone());
    Mailbox::builder(&name).capacity(4).create().unwrap();
    ipckit::shm::Topic::builder(&name)
        .capacity(4)
        .create()
        .unwrap();
    let mut child = spawn_role(TEST, "holder", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "holding");
    let pid = child.id();
    let listing = namespace::inspect().unwrap();
    let find = |kind: &str| {
        listing
            .objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("{kind} {name} not listed"))
            .held
            .clone()
    };
    let mailbox_held = find("mailbox");
    let topic_held = find("topic");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        mailbox_held,
        [format!("slot of message 0 held by pid {pid} (alive)")]
    );
    assert_eq!(
        topic_held,
        [format!("the publish lock held by pid {pid} (alive)")]
    );
    // Killed while holding both: listed as dead, for clean to free.
    let listing = namespace::inspect().unwrap();
    let find = |kind: &str| {
        listing
            .objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("{kind} {name} not listed"))
            .held
            .clone()
    };
    assert_eq!(
        find("mailbox"),
        [format!(
            "slot of message 0 held by pid {pid} (dead: ipckit clean frees it)"
        )]
    );
    assert_eq!(
        find("topic"),
        [format!(
            "the publish lock held by pid {pid} (dead: ipckit clean frees it)"
        )]
    );
}
