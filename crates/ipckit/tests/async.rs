//! Async endpoints across real processes (issue 15, feature `tokio`): a message arrives while
//! awaiting, cancellation loses nothing, idle awaiting receivers cost no CPU, and a death is
//! seen at once.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{role, spawn_role, unique_name, wait_for_line, wait_with_watchdog, with_watchdog};
use ipckit::pidfd::PidFd;
use ipckit::service::{Client, Server};
use ipckit::shm::{Mailbox, Topic};
use ipckit::socket::unix;
use ipckit::{Deadline, Error, MessageReceiver, MessageSender};

const WATCHDOG: Duration = Duration::from_secs(90);

struct Cleanup(Vec<String>, Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Mailbox::remove(name);
        }
        for name in &self.1 {
            let _ = Topic::remove(name);
        }
    }
}

/// Kills and reaps a peer still running when the test ends.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// utime + stime of this whole process, in clock ticks (`/proc/self/stat` fields 14, 15).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn awaiting_endpoints_get_what_another_process_sends() {
    const TEST: &str = "awaiting_endpoints_get_what_another_process_sends";
    if let Some((_, arg)) = role() {
        let parts: Vec<&str> = arg.split(' ').collect();
        let (mailbox, topic, socket, service) = (parts[0], parts[1], parts[2], parts[3]);
        let mut queue = ipckit::mq::PosixQueue::open(&format!("{mailbox}-mq")).unwrap();
        let (udp, _) = ipckit::socket::udp::bind("127.0.0.1:0").unwrap();
        ipckit::socket::udp::connect(&udp, parts[4].parse().unwrap()).unwrap();
        let mut udp = udp;
        let mut tx = Mailbox::open(mailbox).unwrap().sender().unwrap();
        let mut publisher = Topic::open(topic).unwrap().publisher().unwrap();
        let mut stream = unix::connect_stream(socket).unwrap();
        let (mut conn, _) = Client::connect(service, b"hi", Deadline::after(WATCHDOG)).unwrap();
        println!("@@ready");
        let pause = || std::thread::sleep(Duration::from_millis(100));
        pause();
        tx.send(b"mailbox").unwrap();
        pause();
        publisher.send(b"topic").unwrap();
        pause();
        stream.send(b"socket").unwrap();
        pause();
        conn.send(b"request").unwrap();
        pause();
        queue.send(b"queue").unwrap();
        pause();
        udp.send(b"datagram").unwrap();
        // Stays until the parent hangs up.
        let _ = conn.recv_callback(Deadline::after(WATCHDOG));
        return;
    }
    with_watchdog(WATCHDOG, || {
        let (mb, tp) = (unique_name("as-mb"), unique_name("as-tp"));
        let service = unique_name("as-sv");
        let socket = std::env::temp_dir().join(unique_name("as-sock"));
        let _cleanup = Cleanup(vec![mb.clone()], vec![tp.clone()]);
        let mailbox = Mailbox::create(&mb).unwrap();
        let topic = Topic::create(&tp).unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let mut sub = topic.subscriber().unwrap();
        let listener = unix::StreamListener::bind(&socket).unwrap();
        let server = Server::bind(&service, 0o600).unwrap();
        let mut queue = ipckit::mq::PosixQueue::builder(&format!("{mb}-mq"))
            .create()
            .unwrap();
        struct RemoveQueue(String);
        impl Drop for RemoveQueue {
            fn drop(&mut self) {
                let _ = ipckit::mq::PosixQueue::remove(&self.0);
            }
        }
        let _queue_cleanup = RemoveQueue(format!("{mb}-mq"));
        let (mut udp, udp_addr) = ipckit::socket::udp::bind("127.0.0.1:0").unwrap();
        let arg = format!("{mb} {tp} {} {service} {udp_addr}", socket.display());
        let mut child = spawn_role(TEST, "peer", &arg);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let _child = Reap(child);
        let mut stream = listener.accept().unwrap();
        let mut conn = server.accept().unwrap().accept(b"ok").unwrap();
        wait_for_line(&mut out, "ready");
        runtime().block_on(async {
            let start = Instant::now();
            assert_eq!(rx.recv_async().await.unwrap().data, b"mailbox");
            assert!(start.elapsed() >= Duration::from_millis(50));
            assert_eq!(sub.recv_async().await.unwrap().data, b"topic");
            assert_eq!(stream.recv_async().await.unwrap().data, b"socket");
            assert_eq!(conn.recv_async().await.unwrap().data, b"request");
            assert_eq!(queue.recv_async().await.unwrap().data, b"queue");
            assert_eq!(udp.recv_async().await.unwrap().data, b"datagram");
        });
        drop(conn);
        let _ = std::fs::remove_file(&socket);
    });
}

#[test]
fn call_async_gets_the_reply_of_a_server_in_another_process() {
    const TEST: &str = "call_async_gets_the_reply_of_a_server_in_another_process";
    if let Some((_, name)) = role() {
        let server = Server::bind(&name, 0o600).unwrap();
        println!("@@ready");
        let mut conn = server.accept().unwrap().accept(b"ok").unwrap();
        while let Ok(request) = conn.next_request(Deadline::after(WATCHDOG)) {
            // The request the caller cancels is answered long after its 5 ms timeout, even on
            // a loaded machine (tokio polls the future before its timer).
            let pause = if request.data == b"two" { 500 } else { 30 };
            std::thread::sleep(Duration::from_millis(pause));
            let mut reply = request.data.clone();
            reply.extend_from_slice(b"!");
            conn.reply(request.id, &reply).unwrap();
        }
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("as-call");
        let mut child = spawn_role(TEST, "server", &name);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut child = Reap(child);
        wait_for_line(&mut out, "ready");
        let (mut conn, _) = Client::connect(&name, b"hi", Deadline::after(WATCHDOG)).unwrap();
        runtime().block_on(async {
            assert_eq!(conn.call_async(b"one").await.unwrap(), b"one!");
            // Cancelled while waiting for the reply: the next call skips the stale reply.
            let cancelled =
                tokio::time::timeout(Duration::from_millis(5), conn.call_async(b"two")).await;
            assert!(cancelled.is_err());
            assert_eq!(conn.call_async(b"three").await.unwrap(), b"three!");
        });
        // The server returns once we hang up, removing its port and registry entry (killed,
        // it would leave the entry behind).
        drop(conn);
        assert!(wait_with_watchdog(&mut child.0, WATCHDOG).success());
        assert!(
            !ipckit::namespace::list()
                .unwrap()
                .iter()
                .any(|object| object.name == name),
            "the server left its service behind"
        );
    });
}

#[test]
fn successive_awaits_are_each_woken_promptly() {
    const TEST: &str = "successive_awaits_are_each_woken_promptly";
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name).unwrap().sender().unwrap();
        for i in 0..5u8 {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(&[i]).unwrap();
        }
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("as-seq");
        let _cleanup = Cleanup(vec![name.clone()], vec![]);
        // The single-sender, single-receiver path, as the bench's rows use.
        let mailbox = Mailbox::builder(&name)
            .single_sender()
            .single_receiver()
            .create()
            .unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let mut child = Reap(spawn_role(TEST, "sender", &name));
        let rt = runtime();
        for i in 0..5u8 {
            let start = Instant::now();
            assert_eq!(rt.block_on(rx.recv_async()).unwrap().data, [i]);
            // Regression: a lost wake of the reactor's control word cost a whole second.
            let took = start.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "message {i} took {took:?}"
            );
        }
        assert!(child.0.wait().unwrap().success());
    });
}

#[test]
fn cancelled_receives_lose_no_message() {
    const TEST: &str = "cancelled_receives_lose_no_message";
    const COUNT: u32 = 300;
    if let Some((_, name)) = role() {
        let mut tx = Mailbox::open(&name).unwrap().sender().unwrap();
        for i in 0..COUNT {
            // Pauses longer than the receiver's timeouts: futures are dropped while pending.
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(15));
            }
            tx.send(&i.to_le_bytes()).unwrap();
        }
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("as-cancel");
        let _cleanup = Cleanup(vec![name.clone()], vec![]);
        let mailbox = Mailbox::builder(&name).capacity(8).create().unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let mut child = Reap(spawn_role(TEST, "sender", &name));
        let mut got = Vec::new();
        let mut cancelled = 0;
        runtime().block_on(async {
            let mut step = 0u64;
            while got.len() < COUNT as usize {
                step += 1;
                // Timeouts from 0 to 2 ms: many futures are dropped while pending.
                let limit = Duration::from_micros((step * 397) % 2000);
                match tokio::time::timeout(limit, rx.recv_async()).await {
                    Ok(msg) => {
                        let bytes: [u8; 4] = msg.unwrap().data.try_into().unwrap();
                        got.push(u32::from_le_bytes(bytes));
                    }
                    Err(_) => cancelled += 1,
                }
            }
        });
        println!("{cancelled} receives cancelled");
        assert!(
            cancelled > 10,
            "only {cancelled} cancellations: the test proved little"
        );
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>());
        assert!(child.0.wait().unwrap().success());
        assert!(mailbox.info().held_slots.is_empty());
        assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    });
}

#[test]
fn a_thousand_idle_awaiting_receivers_use_no_cpu() {
    const TEST: &str = "a_thousand_idle_awaiting_receivers_use_no_cpu";
    const MAILBOXES: usize = 10;
    const PER_MAILBOX: usize = 100;
    if let Some((role, names)) = role() {
        let names: Vec<&str> = names.split(' ').collect();
        if role == "sender" {
            for name in names {
                let mut tx = Mailbox::open(name).unwrap().sender().unwrap();
                for i in 0..PER_MAILBOX as u32 {
                    tx.send(&i.to_le_bytes()).unwrap();
                }
            }
            return;
        }
        // The receivers, in a process of their own so that /proc/self/stat counts nothing
        // else (the harness runs other tests in parallel threads).
        let mailboxes: Vec<Mailbox> = names.iter().map(|n| Mailbox::open(n).unwrap()).collect();
        let rt = runtime();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let done = std::rc::Rc::new(std::cell::Cell::new(0usize));
            for mailbox in &mailboxes {
                for _ in 0..PER_MAILBOX {
                    let mut rx = mailbox.receiver().unwrap();
                    let done = done.clone();
                    tokio::task::spawn_local(async move {
                        rx.recv_async().await.unwrap();
                        done.set(done.get() + 1);
                    });
                }
            }
            // Let every task reach its first await, then measure a second of idleness.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = cpu_ticks();
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("@@idle {}", cpu_ticks() - before);
            while done.get() < MAILBOXES * PER_MAILBOX {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("@@received {}", done.get());
        });
        return;
    }
    with_watchdog(WATCHDOG, || {
        let names: Vec<String> = (0..MAILBOXES)
            .map(|i| unique_name(&format!("as-idle{i}")))
            .collect();
        let _cleanup = Cleanup(names.clone(), vec![]);
        for name in &names {
            Mailbox::builder(name)
                .capacity(PER_MAILBOX)
                .create()
                .unwrap();
        }
        let mut receivers = spawn_role(TEST, "receivers", &names.join(" "));
        let mut out = BufReader::new(receivers.stdout.take().unwrap());
        let mut receivers = Reap(receivers);
        let mut line = String::new();
        let idle: u64 = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "receivers ended early"
            );
            if let Some(n) = line.trim().strip_prefix("@@idle ") {
                break n.parse().unwrap();
            }
        };
        let mut sender = Reap(spawn_role(TEST, "sender", &names.join(" ")));
        assert!(sender.0.wait().unwrap().success());
        wait_for_line(&mut out, &format!("received {}", MAILBOXES * PER_MAILBOX));
        assert!(receivers.0.wait().unwrap().success());
        let hz = rustix::param::clock_ticks_per_second();
        println!("1000 awaiting receivers: {idle} ticks of CPU in one second (at {hz} Hz)");
        // A tick is 10 ms at 100 Hz: the reactor's one re-check a second may cost one.
        assert!(idle <= 2, "{idle} ticks of CPU while idle");
    });
}

#[test]
fn send_async_waits_for_room_that_another_process_makes() {
    const TEST: &str = "send_async_waits_for_room_that_another_process_makes";
    if let Some((_, name)) = role() {
        std::thread::sleep(Duration::from_millis(100));
        let mut rx = Mailbox::open(&name).unwrap().receiver().unwrap();
        for expected in [b"first", b"secnd"] {
            assert_eq!(&rx.recv().unwrap().data, expected);
        }
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("as-send");
        let _cleanup = Cleanup(vec![name.clone()], vec![]);
        let mailbox = Mailbox::builder(&name).capacity(1).create().unwrap();
        let mut tx = mailbox.sender().unwrap();
        tx.send(b"first").unwrap();
        let mut child = Reap(spawn_role(TEST, "receiver", &name));
        runtime().block_on(async {
            // Cancelled while full: nothing sent.
            let early = tokio::time::timeout(Duration::from_millis(10), tx.send_async(b"never"));
            assert!(early.await.is_err());
            let start = Instant::now();
            tx.send_async(b"secnd").await.unwrap();
            assert!(start.elapsed() >= Duration::from_millis(50));
        });
        assert!(child.0.wait().unwrap().success());
    });
}

#[test]
fn a_death_is_awaited_within_100_ms_of_sigkill() {
    const TEST: &str = "a_death_is_awaited_within_100_ms_of_sigkill";
    if let Some((_, name)) = role() {
        let _tx = Mailbox::open(&name).unwrap().sender().unwrap();
        println!("@@ready");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("as-death");
        let _cleanup = Cleanup(vec![name.clone()], vec![]);
        let mailbox = Mailbox::create(&name).unwrap();
        let mut rx = mailbox.receiver().unwrap().until_senders_gone();
        let mut child = spawn_role(TEST, "sender", &name);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        wait_for_line(&mut out, "ready");
        let mut child = Reap(child);
        let watch = PidFd::open(child.0.id()).unwrap();
        let pid = child.0.id();
        runtime().block_on(async {
            let killer = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).unwrap(),
                    rustix::process::Signal::KILL,
                )
                .unwrap();
                Instant::now()
            };
            let (killed, died, disconnected, gone) = tokio::join!(
                killer,
                async {
                    watch.died_async().await.unwrap();
                    Instant::now()
                },
                async {
                    assert!(matches!(rx.recv_async().await, Err(Error::Disconnected)));
                    Instant::now()
                },
                async {
                    mailbox.senders_gone_async().await.unwrap();
                    Instant::now()
                }
            );
            let (died, disconnected, gone) = (died - killed, disconnected - killed, gone - killed);
            println!("death {died:?}, Disconnected {disconnected:?}, senders gone {gone:?} after SIGKILL");
            assert!(died < Duration::from_millis(100), "{died:?}");
            assert!(disconnected < Duration::from_millis(100), "{disconnected:?}");
            assert!(gone < Duration::from_millis(100), "{gone:?}");
        });
        let _ = child.0.wait();
        let _ = BufRead::lines(out).count();
    });
}

#[test]
fn a_publisher_awaits_room_a_slow_subscriber_makes() {
    const TEST: &str = "a_publisher_awaits_room_a_slow_subscriber_makes";
    if let Some((_, name)) = role() {
        let mut sub = Topic::open(&name).unwrap().subscriber().unwrap();
        println!("@@ready");
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..3u8 {
            assert_eq!(sub.recv().unwrap().data, [i]);
        }
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("as-room");
        let _cleanup = Cleanup(vec![], vec![name.clone()]);
        let topic = Topic::builder(&name)
            .capacity(2)
            .overflow(ipckit::shm::Overflow::Backpressure)
            .create()
            .unwrap();
        let mut publisher = topic.publisher().unwrap();
        let mut child = spawn_role(TEST, "subscriber", &name);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut child = Reap(child);
        wait_for_line(&mut out, "ready");
        publisher.send(&[0]).unwrap();
        publisher.send(&[1]).unwrap();
        assert!(matches!(publisher.try_send(&[9]), Err(Error::Full)));
        runtime().block_on(async {
            let start = Instant::now();
            publisher.send_async(&[2]).await.unwrap();
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(30), "{took:?}");
            assert!(took < Duration::from_millis(900), "{took:?}");
        });
        assert!(child.0.wait().unwrap().success());
    });
}

#[test]
fn an_inbox_awaits_a_direct_message() {
    const TEST: &str = "an_inbox_awaits_a_direct_message";
    if let Some((_, name)) = role() {
        let mut mine = ipckit::direct::Inbox::open_mine().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        mine.send_to(&ipckit::direct::Peer::Name(name), b"direct")
            .unwrap();
        return;
    }
    with_watchdog(WATCHDOG, || {
        let name = unique_name("as-inbox");
        let mut inbox = ipckit::direct::Inbox::open_named(&name).unwrap();
        let mut child = Reap(spawn_role(TEST, "peer", &name));
        let msg = runtime().block_on(inbox.recv_async()).unwrap();
        assert_eq!(msg.data, b"direct");
        assert_eq!(msg.meta.sender_pid, Some(child.0.id()));
        assert!(child.0.wait().unwrap().success());
    });
}
