//! `ipckit doctor`: what on this machine limits an IPC deployment, and what each limit means
//! for ipckit.

use anyhow::Result;

/// A kernel limit, read as a number where it is one.
fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn number(path: &str) -> Option<u64> {
    read(path)?.parse().ok()
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 40 => format!("{:.1} TiB", n as f64 / (1u64 << 40) as f64),
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / (1u64 << 10) as f64),
        n => format!("{n} B"),
    }
}

/// A limit the kernel sets to "as much as there is" prints as that, not as 2^64 - 2^24.
fn amount(n: u64, unit: impl Fn(u64) -> String) -> String {
    if n >= 1 << 60 {
        "unlimited".into()
    } else {
        unit(n)
    }
}

/// Prints one limit: its name, its value, and what it means for ipckit.
fn limit(name: &str, value: &str, verdict: &str) -> Result<()> {
    outln!("  {name:<12} {value:<14} {verdict}")?;
    Ok(())
}

/// Runs `ipckit doctor`.
pub fn doctor() -> Result<()> {
    outln!("shared memory (/dev/shm): mailboxes, topics and segments live here")?;
    match rustix::fs::statvfs("/dev/shm") {
        Ok(fs) => {
            let size = fs.f_blocks * fs.f_frsize;
            let free = fs.f_bavail * fs.f_frsize;
            outln!(
                "  size {}, used {}, free {}",
                bytes(size),
                bytes(size - free),
                bytes(free)
            )?;
            outln!(
                "  a mailbox needs about capacity x (max message + 64 B); one that does not fit \
                 in the free space is refused at creation"
            )?;
            if free < 64 << 20 {
                outln!(
                    "  verdict: LOW — under 64 MiB free; grow it (mount -o remount,size=1G /dev/shm) \
                     or remove what `ipckit ls` shows is unused"
                )?;
            } else {
                outln!("  verdict: ok")?;
            }
        }
        Err(e) => outln!(
            "  not available: {e}\n  verdict: BROKEN — mount a tmpfs on /dev/shm \
             (mount -t tmpfs tmpfs /dev/shm): segments, mailboxes and topics need it"
        )?,
    }
    let objects = ipckit::namespace::list().map(|o| o.len()).unwrap_or(0);
    outln!("  ipckit objects: {objects} (see `ipckit ls`)")?;

    outln!("POSIX message queues (/proc/sys/fs/mqueue; raise with sysctl fs.mqueue.NAME=N):")?;
    let msg_max = number("/proc/sys/fs/mqueue/msg_max");
    let msgsize_max = number("/proc/sys/fs/mqueue/msgsize_max");
    let queues_max = number("/proc/sys/fs/mqueue/queues_max");
    limit(
        "msg_max",
        &msg_max.map_or("unreadable".into(), |n| n.to_string()),
        "most messages one mq::PosixQueue can hold (its --capacity)",
    )?;
    limit(
        "msgsize_max",
        &msgsize_max.map_or("unreadable".into(), bytes),
        &match msgsize_max {
            Some(n) if n < 65536 => "largest POSIX queue message; under 64 KiB, so the \
                64 KiB posix-mq bench row fails (sysctl fs.mqueue.msgsize_max=65536 allows it)"
                .to_string(),
            _ => "largest POSIX queue message".to_string(),
        },
    )?;
    limit(
        "queues_max",
        &queues_max.map_or("unreadable".into(), |n| n.to_string()),
        "POSIX queues all users may have at once",
    )?;
    let mounted = std::path::Path::new("/dev/mqueue").read_dir().is_ok();
    limit(
        "/dev/mqueue",
        if mounted { "mounted" } else { "not mounted" },
        if mounted {
            "other tools can list the queues too"
        } else {
            "only ipckit ls sees the queues ipckit created (its registry); \
             mount -t mqueue none /dev/mqueue for other tools"
        },
    )?;

    outln!("System V IPC (/proc/sys/kernel; raise with sysctl kernel.NAME=N):")?;
    let msgmax = number("/proc/sys/kernel/msgmax");
    limit(
        "msgmax",
        &msgmax.map_or("unreadable".into(), bytes),
        &match msgmax {
            Some(n) if n < 65536 => "largest System V queue message; under 64 KiB, so the \
                64 KiB sysv-mq bench row fails (sysctl kernel.msgmax=65536 allows it)"
                .to_string(),
            _ => "largest System V queue message".to_string(),
        },
    )?;
    let msgmnb = number("/proc/sys/kernel/msgmnb");
    limit(
        "msgmnb",
        &msgmnb.map_or("unreadable".into(), bytes),
        "bytes one System V queue holds before msgsnd blocks (Full)",
    )?;
    let msgmni = number("/proc/sys/kernel/msgmni");
    limit(
        "msgmni",
        &msgmni.map_or("unreadable".into(), |n| n.to_string()),
        "System V queues on the machine",
    )?;
    let shmmax = number("/proc/sys/kernel/shmmax");
    limit(
        "shmmax",
        &shmmax.map_or("unreadable".into(), |n| amount(n, bytes)),
        "largest SysvSegment (POSIX segments and mailboxes are bounded by /dev/shm instead)",
    )?;
    let shmall = number("/proc/sys/kernel/shmall");
    limit(
        "shmall",
        &shmall.map_or("unreadable".into(), |n| amount(n, |p| format!("{p} pages"))),
        "System V shared memory on the machine, in pages",
    )?;
    let shmmni = number("/proc/sys/kernel/shmmni");
    limit(
        "shmmni",
        &shmmni.map_or("unreadable".into(), |n| n.to_string()),
        "System V segments on the machine",
    )?;
    limit(
        "sem",
        &read("/proc/sys/kernel/sem").unwrap_or_else(|| "unreadable".into()),
        "System V semaphores: unused by ipckit (its semaphores are futexes in shared memory)",
    )?;

    let mine = std::fs::read_link("/proc/self/ns/ipc").ok();
    let init = std::fs::read_link("/proc/1/ns/ipc").ok();
    outln!("IPC namespace:")?;
    match (mine, init) {
        (Some(a), Some(b)) if a == b => outln!("  shared with pid 1 ({})", a.display())?,
        (Some(a), Some(b)) => outln!(
            "  separate ({} vs pid 1's {}): processes outside it cannot reach its queues",
            a.display(),
            b.display()
        )?,
        _ => outln!(
            "  unknown (cannot read /proc/*/ns/ipc): in a container, System V and POSIX queues \
             reach only the processes of the same IPC namespace"
        )?,
    }
    outln!("processes:")?;
    limit(
        "pid_max",
        &read("/proc/sys/kernel/pid_max").unwrap_or_else(|| "unreadable".into()),
        "pids wrap at this value: ipckit tells a reused pid by its start time",
    )?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    limit(
        "cpus",
        &cpus.to_string(),
        if cpus < 2 {
            "one CPU: busy-poll waits (WaitStrategy::BusyPoll) only burn the peer's time; use the default"
        } else {
            "busy-poll pays off only with a core per spinning process"
        },
    )?;
    Ok(())
}
