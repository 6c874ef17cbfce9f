//! Process-shared synchronization across real processes: a mutex whose owner is SIGKILLed,
//! semaphores under contention, the bounded buffer with several producers and consumers,
//! permissions.

mod common;

use std::collections::HashSet;
use std::io::BufReader;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{reports, role, spawn_role, unique_name, wait_for_line, wait_with_watchdog};
use ipckit::shm::{BoundedBuffer, Shared};
use ipckit::sync::{LockResult, Mutex, Semaphore};
use ipckit::{Deadline, Error};

const WATCHDOG: Duration = Duration::from_secs(60);

struct Cleanup<F: Fn()>(F);
impl<F: Fn()> Drop for Cleanup<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

#[test]
fn a_mutex_whose_owner_is_killed_reports_owner_died_and_stays_usable() {
    const TEST: &str = "a_mutex_whose_owner_is_killed_reports_owner_died_and_stays_usable";
    if let Some((_, name)) = role() {
        let shared = Shared::<Mutex<u64>>::open(&name).unwrap();
        let mut guard = shared.lock().into_guard();
        *guard = 99; // a half-done update
        println!("@@locked");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let name = unique_name("robust");
    let n = name.clone();
    let _cleanup = Cleanup(move || {
        let _ = Shared::<Mutex<u64>>::remove(&n);
    });
    let shared = Shared::create(&name, Mutex::new(1u64), 0o600).unwrap();
    let mut child = spawn_role(TEST, "owner", &name);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "locked");
    assert!(matches!(shared.try_lock(), Err(Error::Full)));
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    match shared.lock_timeout(Duration::from_secs(10)).unwrap() {
        LockResult::OwnerDied(mut guard) => {
            assert_eq!(*guard, 99, "the dead owner's half-done update is visible");
            *guard = 1;
            guard.mark_consistent();
        }
        LockResult::Locked(_) => panic!("the owner's death went unreported"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let again = shared.lock();
    assert!(!again.owner_died());
    assert_eq!(*again.into_guard(), 1);
}

#[test]
fn semaphore_permits_are_conserved_across_processes() {
    const TEST: &str = "semaphore_permits_are_conserved_across_processes";
    const POSTS: usize = 2000;
    if let Some((role, name)) = role() {
        let sem = Shared::<Semaphore>::open(&name).unwrap();
        match role.as_str() {
            "poster" => (0..POSTS).for_each(|_| sem.post()),
            _ => {
                for _ in 0..POSTS {
                    sem.wait_timeout(WATCHDOG).unwrap();
                }
            }
        }
        return;
    }
    let name = unique_name("sem");
    let n = name.clone();
    let _cleanup = Cleanup(move || {
        let _ = Shared::<Semaphore>::remove(&n);
    });
    let sem = Shared::create(&name, Semaphore::new(0), 0o600).unwrap();
    let mut children: Vec<Child> = ["waiter", "waiter", "poster", "poster", "poster"]
        .iter()
        .map(|r| spawn_role(TEST, r, &name))
        .collect();
    for child in &mut children {
        assert!(wait_with_watchdog(child, WATCHDOG).success());
    }
    // 3 posters x POSTS, 2 waiters x POSTS: exactly POSTS permits are left.
    assert_eq!(sem.value() as usize, POSTS);
    let start = Instant::now();
    for _ in 0..POSTS {
        sem.try_wait().unwrap();
    }
    assert!(matches!(
        sem.wait_timeout(Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn bounded_buffer_delivers_every_item_exactly_once_between_processes() {
    const TEST: &str = "bounded_buffer_delivers_every_item_exactly_once_between_processes";
    const PER_PRODUCER: u64 = 3000;
    const PRODUCERS: u64 = 3;
    const CONSUMERS: usize = 2;
    if let Some((role, arg)) = role() {
        let (name, id) = arg.split_once(' ').unwrap();
        let buffer = BoundedBuffer::<u64>::open(name).unwrap();
        if role == "producer" {
            let id: u64 = id.parse().unwrap();
            for i in 0..PER_PRODUCER {
                buffer
                    .put_deadline(id * 1_000_000 + i, Deadline::after(WATCHDOG))
                    .unwrap();
            }
        } else {
            loop {
                let item = buffer.take_deadline(Deadline::after(WATCHDOG)).unwrap();
                if item == u64::MAX {
                    return;
                }
                println!("@@{item}");
            }
        }
        return;
    }
    let name = unique_name("bb");
    let n = name.clone();
    let _cleanup = Cleanup(move || {
        let _ = BoundedBuffer::<u64>::remove(&n);
    });
    let buffer = BoundedBuffer::<u64>::create(&name, 8, 0o600).unwrap();
    let mut consumers: Vec<Child> = (0..CONSUMERS)
        .map(|i| spawn_role(TEST, "consumer", &format!("{name} {i}")))
        .collect();
    let mut producers: Vec<Child> = (0..PRODUCERS)
        .map(|id| spawn_role(TEST, "producer", &format!("{name} {id}")))
        .collect();
    for p in &mut producers {
        assert!(wait_with_watchdog(p, WATCHDOG).success());
    }
    for _ in 0..CONSUMERS {
        buffer.put(u64::MAX).unwrap();
    }
    let mut seen = HashSet::new();
    for c in &mut consumers {
        for line in reports(c) {
            assert!(
                seen.insert(line.parse::<u64>().unwrap()),
                "{line} taken twice"
            );
        }
        assert!(wait_with_watchdog(c, WATCHDOG).success());
    }
    let expected: HashSet<u64> = (0..PRODUCERS)
        .flat_map(|id| (0..PER_PRODUCER).map(move |i| id * 1_000_000 + i))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn another_user_cannot_open_a_0600_segment() {
    const TEST: &str = "another_user_cannot_open_a_0600_segment";
    if let Some((_, name)) = role() {
        // SAFETY: plain system calls in a single-threaded role process.
        let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
        assert!(dropped);
        match Shared::<Semaphore>::open(&name) {
            Err(Error::PermissionDenied { .. }) => println!("@@denied"),
            other => println!("@@unexpected {other:?}"),
        }
        return;
    }
    let name = unique_name("perm");
    let n = name.clone();
    let _cleanup = Cleanup(move || {
        let _ = Shared::<Semaphore>::remove(&n);
    });
    let _sem = Shared::create(&name, Semaphore::new(1), 0o600).unwrap();
    let mut child = spawn_role(TEST, "nobody", &name);
    assert_eq!(reports(&mut child), ["denied"]);
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
}
