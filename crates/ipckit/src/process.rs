//! Which processes are alive, judged from the kernel.
//!
//! A pid alone is not an identity: after a process exits the kernel hands its pid to the next
//! process that asks. ipckit therefore records a participant as its pid *and* its start time
//! (field 22 of `/proc/PID/stat`, in clock ticks since boot), and calls it alive only if a
//! process with that pid exists, started at that time, and is not a zombie.
//!
//! # References
//! - [`proc_pid_stat(5)`](https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html)

use std::fs;

/// A process, named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot, as `/proc/PID/stat` reports it.
    pub start_time: u64,
}

/// What the kernel says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Running (or sleeping, stopped...): it can still act.
    Alive,
    /// Exited, a zombie, or its pid now belongs to another process.
    Dead,
}

struct Stat {
    state: u8,
    start_time: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // Fields 3.. follow the name; start time is field 22, i.e. the 20th after the state.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

impl ProcessIdentity {
    /// The identity of the calling process.
    pub fn current() -> ProcessIdentity {
        let pid = std::process::id();
        ProcessIdentity {
            pid,
            start_time: read_stat(pid).map_or(0, |s| s.start_time),
        }
    }

    /// The identity of the process now holding `pid`, if there is one.
    pub fn of_pid(pid: u32) -> Option<ProcessIdentity> {
        read_stat(pid).map(|s| ProcessIdentity {
            pid,
            start_time: s.start_time,
        })
    }

    /// Whether this very process is still alive.
    pub fn liveness(&self) -> Liveness {
        liveness(self.pid, Some(self.start_time))
    }
}

/// Whether `pid` is alive; if `start_time` is given, a process with another start time holding
/// that pid counts as dead. A zombie (exited, not yet reaped) is dead.
pub fn liveness(pid: u32, start_time: Option<u64>) -> Liveness {
    if pid == 0 || pid > i32::MAX as u32 {
        return Liveness::Dead;
    }
    match read_stat(pid) {
        Some(stat) if stat.state == b'Z' || stat.state == b'X' => Liveness::Dead,
        Some(stat) if start_time.is_some_and(|t| t != stat.start_time) => Liveness::Dead,
        Some(_) => Liveness::Alive,
        None => Liveness::Dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        let me = ProcessIdentity::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert_eq!(me.liveness(), Liveness::Alive);
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let me = ProcessIdentity::current();
        let impostor = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert_eq!(impostor.liveness(), Liveness::Dead);
    }

    #[test]
    fn exited_and_zombie_children_are_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Until it is reaped the child is a zombie, which must already count as dead.
        let start = std::time::Instant::now();
        while liveness(pid, None) == Liveness::Alive {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "child never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(read_stat(pid).map(|s| s.state), Some(b'Z'));
        child.wait().unwrap();
        assert_eq!(liveness(pid, None), Liveness::Dead);
        assert_eq!(liveness(0, None), Liveness::Dead);
        assert_eq!(liveness(u32::MAX, None), Liveness::Dead);
    }
}
