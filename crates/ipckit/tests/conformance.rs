//! One conformance suite, written once and run against every transport: ordering, exact
//! bytes, the three flavours of send and receive, timeouts, a full link, peers that exit or
//! are killed (real processes), and rendezvous really holding the sender.

mod common;

use std::io::{BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    role, spawn_role, spawn_role_with_stdin, unique_name, wait_for_line, wait_with_watchdog,
};
use ipckit::socket::{tcp, udp, unix};
use ipckit::{fifo, pipe, Capacity, Deadline, Error, MessageReceiver, MessageSender};

type Tx = Box<dyn MessageSender + Send>;
type Rx = Box<dyn MessageReceiver + Send>;

const WATCHDOG: Duration = Duration::from_secs(60);
/// Timed operations may end late on a noisy VM, never early.
const LATE: Duration = Duration::from_secs(3);

fn tmp(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(unique_name(tag))
}

/// Removes a path at the end of a test.
struct RemovePath(std::path::PathBuf);
impl Drop for RemovePath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

// ---- checks, written once -------------------------------------------------------------

fn order_and_exact_bytes(mut tx: Tx, mut rx: Rx, allow_empty: bool) {
    let sizes = [0usize, 1, 7, 100, 1000, 3000];
    let mut sent = Vec::new();
    for i in 0..24 {
        let len = sizes[i % sizes.len()];
        if len == 0 && !allow_empty {
            continue;
        }
        let msg = payload(i, len);
        tx.send_timeout(&msg, WATCHDOG).unwrap();
        sent.push(msg);
    }
    for msg in sent {
        assert_eq!(rx.recv_timeout(WATCHDOG).unwrap().data, msg);
    }
}

fn too_large_is_refused_before_sending(mut tx: Tx, mut rx: Rx) {
    let max = tx.max_message_size();
    let msg = vec![1u8; max + 1];
    match tx.try_send(&msg) {
        Err(Error::MessageTooLarge { size, max: m }) => assert_eq!((size, m), (max + 1, max)),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // The link is still usable: nothing of the refused message went out.
    tx.send_timeout(b"after", WATCHDOG).unwrap();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap().data, b"after");
}

fn receive_flavours(mut tx: Tx, mut rx: Rx) {
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    let start = Instant::now();
    let wait = Duration::from_millis(50);
    assert!(matches!(rx.recv_timeout(wait), Err(Error::Timeout)));
    let took = start.elapsed();
    assert!(took >= wait, "timed out early: {took:?}");
    assert!(took < wait + LATE, "timed out far too late: {took:?}");
    tx.try_send(b"now").unwrap();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match rx.try_recv() {
            Ok(msg) => {
                assert_eq!(msg.data, b"now");
                break;
            }
            Err(Error::Empty) if Instant::now() < deadline => std::thread::yield_now(),
            other => panic!("{other:?}"),
        }
    }
    tx.send(b"blocking").unwrap();
    assert_eq!(rx.recv().unwrap().data, b"blocking");
}

fn a_full_link_says_so(mut tx: Tx, mut rx: Rx) {
    let msg = vec![9u8; 1000];
    let mut sent = 0usize;
    loop {
        match tx.try_send(&msg) {
            Ok(()) => sent += 1,
            Err(Error::Full) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 1_000_000, "never full");
    }
    // A kernel may still move queued bytes along after saying full (TCP hands the send
    // buffer to the receive buffer in the background and grows both): a timed send may
    // then succeed, but the link fills again and the send times out, on time.
    loop {
        let start = Instant::now();
        match tx.send_timeout(&msg, Duration::from_millis(30)) {
            Ok(()) => sent += 1,
            Err(Error::Timeout) => {
                assert!(start.elapsed() >= Duration::from_millis(30));
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 1_000_000, "never full");
    }
    // Everything accepted is there, whole.
    for _ in 0..sent {
        assert_eq!(rx.recv_timeout(WATCHDOG).unwrap().data, msg);
    }
}

fn rendezvous_holds_the_sender(mut tx: Tx, rx: Rx) {
    // Nobody receives: the send cannot complete.
    assert!(matches!(
        tx.send_timeout(b"unseen", Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    // Timed from before the receiver starts its 200 ms nap.
    let start = Instant::now();
    let receiver = std::thread::spawn(move || {
        let mut rx = rx;
        std::thread::sleep(Duration::from_millis(200));
        let first = rx.recv_timeout(WATCHDOG).unwrap().data;
        let second = rx.recv_timeout(WATCHDOG).unwrap().data;
        (first, second)
    });
    tx.send_timeout(b"met", WATCHDOG).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "send returned before a receive"
    );
    let (first, second) = receiver.join().unwrap();
    // A stream cannot take back what it wrote: the timed-out message arrives first.
    assert_eq!(
        (first.as_slice(), second.as_slice()),
        (&b"unseen"[..], &b"met"[..])
    );
}

/// The peer process sends "hello" then exits (or, with `kill`, is killed): the receiver
/// gets "hello", then `Disconnected`, never a hang.
fn receiver_sees_peer_exit(mut rx: Rx, mut child: Child, kill: bool) {
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap().data, b"hello");
    if kill {
        child.kill().unwrap();
    }
    let status = wait_with_watchdog(&mut child, WATCHDOG);
    assert!(kill || status.success());
    assert!(matches!(
        rx.recv_timeout(WATCHDOG),
        Err(Error::Disconnected)
    ));
}

/// The peer process receives one message then exits: sends eventually report
/// `Disconnected` (the first may still land in a kernel buffer), and SIGPIPE kills nobody.
fn sender_sees_peer_exit(mut tx: Tx, mut child: Child) {
    tx.send_timeout(b"one", WATCHDOG).unwrap();
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    let start = Instant::now();
    loop {
        match tx.send_timeout(b"more", Duration::from_secs(1)) {
            Err(Error::Disconnected) => return,
            Ok(()) | Err(Error::Timeout) => {
                assert!(start.elapsed() < WATCHDOG, "never noticed the peer left")
            }
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Child side of the cross-process checks: "send" sends hello then exits (or sleeps to be
/// killed, for "send-then-sleep"); "recv" takes one message then exits.
fn child_side(role: &str, mut tx: Option<Tx>, mut rx: Option<Rx>) {
    match role {
        "send" | "send-then-sleep" => {
            tx.as_mut()
                .unwrap()
                .send_timeout(b"hello", WATCHDOG)
                .unwrap();
            if role == "send-then-sleep" {
                std::thread::sleep(WATCHDOG);
            }
        }
        "recv" => {
            println!("@@ready");
            rx.as_mut().unwrap().recv_timeout(WATCHDOG).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

// ---- per transport ----------------------------------------------------------------------

/// Instantiates the in-process checks for a transport: `$pair` makes `(Tx, Rx)`.
macro_rules! in_process_checks {
    ($pair:expr, allow_empty: $empty:expr, full: $full:expr) => {
        #[test]
        fn order_and_bytes() {
            let (tx, rx) = $pair;
            super::order_and_exact_bytes(tx, rx, $empty);
        }

        #[test]
        fn too_large() {
            let (tx, rx) = $pair;
            super::too_large_is_refused_before_sending(tx, rx);
        }

        #[test]
        fn flavours() {
            let (tx, rx) = $pair;
            super::receive_flavours(tx, rx);
        }

        #[test]
        fn full() {
            if $full {
                let (tx, rx) = $pair;
                super::a_full_link_says_so(tx, rx);
            }
        }
    };
}

mod pipe_link {
    use super::*;

    fn pair() -> (Tx, Rx) {
        let (tx, rx) = pipe::pipe().unwrap();
        (Box::new(tx), Box::new(rx))
    }
    in_process_checks!(pair(), allow_empty: true, full: true);

    fn child(role: &str) {
        let stdin = rustix::io::dup(rustix::stdio::stdin()).unwrap();
        if role == "recv" {
            super::child_side(
                role,
                None,
                Some(Box::new(pipe::receiver_from_fd(stdin).unwrap())),
            );
        } else {
            super::child_side(
                role,
                Some(Box::new(pipe::sender_from_fd(stdin).unwrap())),
                None,
            );
        }
    }

    #[test]
    fn peer_exits_and_is_killed() {
        const TEST: &str = "pipe_link::peer_exits_and_is_killed";
        if let Some((role, _)) = role() {
            return child(&role);
        }
        for kill in [false, true] {
            let (tx, rx) = pipe::pipe().unwrap();
            let role = if kill { "send-then-sleep" } else { "send" };
            let child =
                spawn_role_with_stdin(TEST, role, "", Stdio::from(tx.into_fds().1.unwrap()));
            super::receiver_sees_peer_exit(Box::new(rx), child, kill);
        }
        let (tx, rx) = pipe::pipe().unwrap();
        let child = spawn_role_with_stdin(TEST, "recv", "", Stdio::from(rx.into_fds().0.unwrap()));
        super::sender_sees_peer_exit(Box::new(tx), child);
    }

    #[test]
    fn rendezvous_is_refused_on_a_one_way_pipe() {
        assert!(matches!(
            pipe::pipe_with(Capacity::Rendezvous),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            pipe::pipe_with(Capacity::Unbounded),
            Err(Error::Unsupported(_))
        ));
    }
}

mod fifo_link {
    use super::*;

    fn pair_at(path: &std::path::Path) -> (Tx, Rx) {
        fifo::create(path, 0o600).unwrap();
        let rx = fifo::open_read(path).unwrap();
        let tx = fifo::open_write(path, Deadline::Now).unwrap();
        fifo::remove(path).unwrap();
        (Box::new(tx), Box::new(rx))
    }

    fn pair() -> (Tx, Rx) {
        pair_at(&tmp("fifo"))
    }
    in_process_checks!(pair(), allow_empty: true, full: true);

    #[test]
    fn peer_exits_and_is_killed() {
        const TEST: &str = "fifo_link::peer_exits_and_is_killed";
        if let Some((role, path)) = role() {
            return if role == "recv" {
                super::child_side(&role, None, Some(Box::new(fifo::open_read(&path).unwrap())))
            } else {
                let tx = fifo::open_write(&path, Deadline::after(WATCHDOG)).unwrap();
                super::child_side(&role, Some(Box::new(tx)), None)
            };
        }
        for kill in [false, true] {
            let path = tmp("fifo-exit");
            let _cleanup = RemovePath(path.clone());
            fifo::create(&path, 0o600).unwrap();
            let rx = fifo::open_read(&path).unwrap();
            let role = if kill { "send-then-sleep" } else { "send" };
            let child = spawn_role(TEST, role, path.to_str().unwrap());
            super::receiver_sees_peer_exit(Box::new(rx), child, kill);
        }
        let path = tmp("fifo-rx");
        let _cleanup = RemovePath(path.clone());
        fifo::create(&path, 0o600).unwrap();
        let mut child = spawn_role(TEST, "recv", path.to_str().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap());
        wait_for_line(&mut out, "ready");
        let tx = fifo::open_write(&path, Deadline::after(WATCHDOG)).unwrap();
        super::sender_sees_peer_exit(Box::new(tx), child);
    }

    #[test]
    fn opening_for_writing_without_a_reader_is_a_clear_error() {
        let path = tmp("fifo-noreader");
        let _cleanup = RemovePath(path.clone());
        fifo::create(&path, 0o600).unwrap();
        assert!(matches!(
            fifo::open_write(&path, Deadline::Now),
            Err(Error::Disconnected)
        ));
        let start = Instant::now();
        assert!(matches!(
            fifo::open_write(&path, Deadline::after(Duration::from_millis(30))),
            Err(Error::Disconnected)
        ));
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(matches!(
            fifo::create(&path, 0o600),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            fifo::open_read(tmp("missing")),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            fifo::open_read("/etc/hostname"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            fifo::Duplex::open(
                &path,
                fifo::Side::First,
                Capacity::Rendezvous,
                Deadline::Now
            ),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn duplex_rendezvous_across_processes() {
        const TEST: &str = "fifo_link::duplex_rendezvous_across_processes";
        if let Some((_, prefix)) = role() {
            let mut end = fifo::Duplex::open(
                &prefix,
                fifo::Side::Second,
                Capacity::Rendezvous,
                Deadline::after(WATCHDOG),
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let msg = end.recv_timeout(WATCHDOG).unwrap();
            end.send_timeout(&msg.data, WATCHDOG).unwrap();
            return;
        }
        let prefix = tmp("duplex");
        fifo::Duplex::create(&prefix, 0o600).unwrap();
        // Timed from before the spawn: our open returns once the child has opened its end,
        // and the child may be well into its 200 ms nap before this thread runs again.
        let start = Instant::now();
        let mut child = spawn_role(TEST, "second", prefix.to_str().unwrap());
        let mut end = fifo::Duplex::open(
            &prefix,
            fifo::Side::First,
            Capacity::Rendezvous,
            Deadline::after(WATCHDOG),
        )
        .unwrap();
        end.send_timeout(b"echo me", WATCHDOG).unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "returned before the receive"
        );
        assert_eq!(end.recv_timeout(WATCHDOG).unwrap().data, b"echo me");
        assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
        // Not earlier: our open returns once the child has opened its read end, possibly
        // before it opened its write end by name.
        fifo::Duplex::remove(&prefix).unwrap();
    }
}

mod unix_stream {
    use super::*;

    fn pair() -> (Tx, Rx) {
        let (a, b) = unix::stream_pair().unwrap();
        (Box::new(a), Box::new(b))
    }
    in_process_checks!(pair(), allow_empty: true, full: true);

    #[test]
    fn rendezvous() {
        let path = tmp("us-rv");
        let listener = unix::StreamListener::bind(&path).unwrap();
        let tx = unix::connect_stream_with(&path, Capacity::Rendezvous).unwrap();
        let rx = listener.accept_with(Capacity::Rendezvous).unwrap();
        super::rendezvous_holds_the_sender(Box::new(tx), Box::new(rx));
    }

    #[test]
    fn peer_exits_and_is_killed() {
        const TEST: &str = "unix_stream::peer_exits_and_is_killed";
        if let Some((role, path)) = role() {
            let link = unix::connect_stream(&path).unwrap();
            return if role == "recv" {
                super::child_side(&role, None, Some(Box::new(link)))
            } else {
                super::child_side(&role, Some(Box::new(link)), None)
            };
        }
        let path = tmp("us");
        let listener = unix::StreamListener::bind(&path).unwrap();
        for kill in [false, true] {
            let role = if kill { "send-then-sleep" } else { "send" };
            let child = spawn_role(TEST, role, path.to_str().unwrap());
            let rx = listener.accept().unwrap();
            super::receiver_sees_peer_exit(Box::new(rx), child, kill);
        }
        let child = spawn_role(TEST, "recv", path.to_str().unwrap());
        let tx = listener.accept().unwrap();
        super::sender_sees_peer_exit(Box::new(tx), child);
    }

    #[test]
    fn peer_credentials_and_file_descriptors_cross_processes() {
        const TEST: &str = "unix_stream::peer_credentials_and_file_descriptors_cross_processes";
        if let Some((_, path)) = role() {
            let mut link = unix::connect_stream(&path).unwrap();
            let (tx, rx) = pipe::pipe().unwrap();
            let (_, write_end) = tx.into_fds();
            let write_end = write_end.unwrap();
            link.send_with_fds(
                b"here is a pipe",
                &[std::os::fd::AsFd::as_fd(&write_end)],
                Deadline::after(WATCHDOG),
            )
            .unwrap();
            drop(write_end);
            // Whatever the parent writes into the passed pipe comes back to us.
            let mut rx = rx;
            let msg = rx.recv_timeout(WATCHDOG).unwrap();
            link.send(&msg.data).unwrap();
            return;
        }
        let path = tmp("us-fd");
        let listener = unix::StreamListener::bind(&path).unwrap();
        let mut child = spawn_role(TEST, "child", path.to_str().unwrap());
        let mut link = listener.accept().unwrap();
        let creds = unix::stream_peer_credentials(&link).unwrap();
        assert_eq!(creds.pid, child.id());
        assert_eq!(creds.uid, rustix::process::getuid().as_raw());
        let msg = link.recv_timeout(WATCHDOG).unwrap();
        assert_eq!(msg.data, b"here is a pipe");
        assert_eq!(msg.meta.sender_pid, Some(child.id()));
        let fds = link.take_fds();
        assert_eq!(fds.len(), 1);
        let mut passed = pipe::sender_from_fd(fds.into_iter().next().unwrap()).unwrap();
        passed.send(b"through the passed descriptor").unwrap();
        assert_eq!(
            link.recv_timeout(WATCHDOG).unwrap().data,
            b"through the passed descriptor"
        );
        assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    }
}

mod unix_seqpacket {
    use super::*;

    fn pair() -> (Tx, Rx) {
        let (a, b) = unix::seqpacket_pair().unwrap();
        (Box::new(a), Box::new(b))
    }
    in_process_checks!(pair(), allow_empty: false, full: true);

    #[test]
    fn peer_exits_and_is_killed() {
        const TEST: &str = "unix_seqpacket::peer_exits_and_is_killed";
        if let Some((role, path)) = role() {
            let link = unix::connect_seqpacket(&path).unwrap();
            return if role == "recv" {
                super::child_side(&role, None, Some(Box::new(link)))
            } else {
                super::child_side(&role, Some(Box::new(link)), None)
            };
        }
        let path = tmp("sp");
        let listener = unix::SeqpacketListener::bind(&path).unwrap();
        for kill in [false, true] {
            let role = if kill { "send-then-sleep" } else { "send" };
            let child = spawn_role(TEST, role, path.to_str().unwrap());
            let rx = listener.accept().unwrap();
            super::receiver_sees_peer_exit(Box::new(rx), child, kill);
        }
        let child = spawn_role(TEST, "recv", path.to_str().unwrap());
        let tx = listener.accept().unwrap();
        super::sender_sees_peer_exit(Box::new(tx), child);
    }

    #[test]
    fn descriptors_travel_with_a_message() {
        let (mut a, mut b) = unix::seqpacket_pair().unwrap();
        let (tx, mut rx) = pipe::pipe().unwrap();
        let (_, write_end) = tx.into_fds();
        let write_end = write_end.unwrap();
        a.send_with_fds(
            b"fd",
            &[std::os::fd::AsFd::as_fd(&write_end)],
            Deadline::Now,
        )
        .unwrap();
        drop(write_end);
        let mut buf = Vec::new();
        let (meta, fds) = b.recv_with_fds(&mut buf, Deadline::Now).unwrap();
        assert_eq!((buf.as_slice(), fds.len()), (&b"fd"[..], 1));
        assert_eq!(meta.sender_pid, Some(std::process::id()));
        pipe::sender_from_fd(fds.into_iter().next().unwrap())
            .unwrap()
            .send(b"x")
            .unwrap();
        assert_eq!(rx.recv().unwrap().data, b"x");
    }
}

mod unix_datagram {
    use super::*;

    fn pair() -> (Tx, Rx) {
        let (a, b) = unix::datagram_pair().unwrap();
        (Box::new(a), Box::new(b))
    }
    in_process_checks!(pair(), allow_empty: true, full: true);

    #[test]
    fn a_sender_notices_its_peer_exit() {
        const TEST: &str = "unix_datagram::a_sender_notices_its_peer_exit";
        if let Some((_, arg)) = role() {
            let (mine, parent) = arg.split_once(' ').unwrap();
            let mut link =
                unix::BoundDatagram::bind(mine, Some(std::path::Path::new(parent))).unwrap();
            println!("@@ready");
            link.recv_timeout(WATCHDOG).unwrap();
            return;
        }
        let (parent, mine) = (tmp("dg-p"), tmp("dg-c"));
        let link = unix::BoundDatagram::bind(&parent, None).unwrap();
        let mut child = spawn_role(
            TEST,
            "peer",
            &format!("{} {}", mine.display(), parent.display()),
        );
        let mut out = BufReader::new(child.stdout.take().unwrap());
        wait_for_line(&mut out, "ready");
        link.connect(&mine).unwrap();
        let mut rest = String::new();
        let tx: Tx = Box::new(link);
        super::sender_sees_peer_exit(tx, child);
        out.read_to_string(&mut rest).unwrap();
    }
}

mod tcp_link {
    use super::*;

    fn pair() -> (Tx, Rx) {
        let listener = tcp::Listener::bind("127.0.0.1:0").unwrap();
        let tx = tcp::connect(listener.local_addr().unwrap()).unwrap();
        let rx = listener.accept().unwrap();
        (Box::new(tx), Box::new(rx))
    }
    in_process_checks!(pair(), allow_empty: true, full: true);

    #[test]
    fn rendezvous() {
        let listener = tcp::Listener::bind("127.0.0.1:0").unwrap();
        let tx = tcp::connect_with(listener.local_addr().unwrap(), Capacity::Rendezvous).unwrap();
        let rx = listener.accept_with(Capacity::Rendezvous).unwrap();
        super::rendezvous_holds_the_sender(Box::new(tx), Box::new(rx));
    }

    #[test]
    fn peer_exits_and_is_killed() {
        const TEST: &str = "tcp_link::peer_exits_and_is_killed";
        if let Some((role, addr)) = role() {
            let link = tcp::connect(addr.as_str()).unwrap();
            return if role == "recv" {
                super::child_side(&role, None, Some(Box::new(link)))
            } else {
                super::child_side(&role, Some(Box::new(link)), None)
            };
        }
        let listener = tcp::Listener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        for kill in [false, true] {
            let role = if kill { "send-then-sleep" } else { "send" };
            let child = spawn_role(TEST, role, &addr);
            let rx = listener.accept().unwrap();
            super::receiver_sees_peer_exit(Box::new(rx), child, kill);
        }
        let child = spawn_role(TEST, "recv", &addr);
        let tx = listener.accept().unwrap();
        super::sender_sees_peer_exit(Box::new(tx), child);
    }
}

mod udp_link {
    use super::*;

    fn pair() -> (Tx, Rx) {
        let (a, a_addr) = udp::bind("127.0.0.1:0").unwrap();
        let (b, b_addr) = udp::bind("127.0.0.1:0").unwrap();
        udp::connect(&a, b_addr).unwrap();
        udp::connect(&b, a_addr).unwrap();
        (Box::new(a), Box::new(b))
    }
    // UDP never reports a full link: the kernel drops datagrams instead (see `socket::udp`).
    in_process_checks!(pair(), allow_empty: true, full: false);
}

mod mailbox_link {
    use super::*;
    use ipckit::shm::Mailbox;

    fn pair() -> (Tx, Rx) {
        let name = unique_name("conf-mb");
        let mailbox = Mailbox::builder(&name).capacity(64).create().unwrap();
        let tx = mailbox.sender().unwrap();
        let rx = mailbox.receiver().unwrap();
        // The name goes now; the endpoints keep the mailbox mapped.
        Mailbox::remove(&name).unwrap();
        (Box::new(tx), Box::new(rx))
    }
    in_process_checks!(pair(), allow_empty: true, full: true);
}

/// Issue 11: `Capacity::Bounded(0)` means one thing on every link, a capacity error (zero
/// capacity is spelled `Rendezvous`); the kernel-buffered links' default still works.
#[test]
fn bounded_zero_is_refused_by_every_link() {
    let zero = Capacity::Bounded(0);
    assert!(matches!(zero.check(), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        pipe::pipe_with(zero),
        Err(Error::InvalidArgument(_))
    ));
    assert!(pipe::pipe_with(Capacity::KERNEL_BUFFER).is_ok());
    let name = unique_name("bounded-zero");
    assert!(matches!(
        ipckit::shm::Mailbox::builder(&name)
            .capacity_kind(zero)
            .create(),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ipckit::shm::Mailbox::open(&name),
        Err(Error::NotFound { .. })
    ));
    let listener = tcp::Listener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(matches!(
        tcp::connect_with(addr, zero),
        Err(Error::InvalidArgument(_))
    ));
    let path = tmp("bounded-zero");
    let _remove = RemovePath(path.clone());
    let unix_listener = unix::StreamListener::bind(&path).unwrap();
    assert!(matches!(
        unix::connect_stream_with(&path, zero),
        Err(Error::InvalidArgument(_))
    ));
    drop(unix_listener);
}
