//! Criterion benchmarks of the mailbox ring: the cost of the fast path with no contention
//! (send then receive on one thread), and a two-thread ping-pong through two mailboxes.
//! Cross-process figures are `ipckit bench`'s job.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipckit::shm::mailbox::{Mailbox, WaitStrategy};
use ipckit::{MessageReceiver, MessageSender};

struct Scratch(Vec<String>);
impl Drop for Scratch {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Mailbox::remove(name);
        }
    }
}

fn name(tag: &str) -> String {
    format!("bench-{tag}-{}", std::process::id())
}

fn send_then_recv(c: &mut Criterion) {
    let mut group = c.benchmark_group("mailbox/send+recv");
    for size in [8usize, 64, 4096] {
        let n = name(&format!("sr{size}"));
        let _scratch = Scratch(vec![n.clone()]);
        let mailbox = Mailbox::builder(&n)
            .capacity(64)
            .max_message_size(size)
            .create()
            .unwrap();
        let mut tx = mailbox.sender().unwrap();
        let mut rx = mailbox.receiver().unwrap();
        let msg = vec![0xa5u8; size];
        let mut buf = Vec::with_capacity(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                tx.try_send(&msg).unwrap();
                rx.recv_deadline(&mut buf, ipckit::Deadline::Now).unwrap();
                assert_eq!(buf.len(), size);
            })
        });
    }
    group.finish();
}

fn ping_pong_threads(c: &mut Criterion) {
    let (ping, pong) = (name("ping"), name("pong"));
    let _scratch = Scratch(vec![ping.clone(), pong.clone()]);
    let build = |n: &str| {
        Mailbox::builder(n)
            .capacity(8)
            .max_message_size(64)
            .wait_strategy(WaitStrategy::BusyPoll)
            .create()
            .unwrap()
    };
    let (ping_box, pong_box) = (build(&ping), build(&pong));
    let echo = {
        let mut rx = ping_box.receiver().unwrap();
        let mut tx = pong_box.sender().unwrap();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            loop {
                rx.recv_into(&mut buf).unwrap();
                if buf.is_empty() {
                    return;
                }
                tx.send(&buf).unwrap();
            }
        })
    };
    let mut tx = ping_box.sender().unwrap();
    let mut rx = pong_box.receiver().unwrap();
    let msg = [7u8; 64];
    let mut buf = Vec::new();
    c.bench_function("mailbox/ping-pong-threads/64", |b| {
        b.iter(|| {
            tx.send(&msg).unwrap();
            rx.recv_into(&mut buf).unwrap();
            assert_eq!(buf, msg);
        })
    });
    tx.send(&[]).unwrap();
    echo.join().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = send_then_recv, ping_pong_threads
}
criterion_main!(benches);
