//! `ipckit doctor`: what on this machine limits an IPC deployment.

use anyhow::Result;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".into())
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{n} B"),
    }
}

/// Runs `ipckit doctor`.
pub fn doctor() -> Result<()> {
    outln!("shared memory (/dev/shm):")?;
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
        }
        Err(e) => outln!("  not available: {e} (segments, mailboxes and topics need it)")?,
    }
    let objects = ipckit::namespace::list().map(|o| o.len()).unwrap_or(0);
    outln!("  ipckit objects: {objects} (see `ipckit ls`)")?;
    outln!("POSIX message queues (/proc/sys/fs/mqueue):")?;
    for limit in ["msg_max", "msgsize_max", "queues_max"] {
        outln!(
            "  {limit:<12} {}",
            read(&format!("/proc/sys/fs/mqueue/{limit}"))
        )?;
    }
    let mounted = std::path::Path::new("/dev/mqueue").read_dir().is_ok();
    outln!(
        "  /dev/mqueue {}",
        if mounted {
            "mounted"
        } else {
            "not mounted (ipckit ls still lists the queues ipckit created, from its registry)"
        }
    )?;
    outln!("System V IPC (/proc/sys/kernel):")?;
    for limit in [
        "msgmax", "msgmnb", "msgmni", "shmmax", "shmall", "shmmni", "sem",
    ] {
        outln!(
            "  {limit:<12} {}",
            read(&format!("/proc/sys/kernel/{limit}"))
        )?;
    }
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
        _ => outln!("  unknown (cannot read /proc/*/ns/ipc)")?,
    }
    outln!("processes:")?;
    outln!("  pid_max      {}", read("/proc/sys/kernel/pid_max"))?;
    outln!(
        "  cpus         {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )?;
    Ok(())
}
