//! Surviving `SIGBUS` in an ipckit mapping: a process-wide handler that turns a lost page
//! into a poisoned segment instead of a dead process.
//!
//! A shared file mapping raises `SIGBUS` when a page it covers no longer exists (another
//! process `ftruncate`d the file) or cannot be allocated (`/dev/shm` is full). Named segments
//! cannot be sealed against either, and the default action kills the process — whichever
//! ipckit process touched the page, whatever the other process meant.
//!
//! The technique (used by databases that map files, e.g. LMDB's and PostgreSQL's discussions
//! of `SIGBUS` on truncated maps): every mapping ipckit makes is recorded in a fixed table of
//! atomics — (start, length, poisoned), no allocation, no lock, so the signal handler may
//! read it. On a `SIGBUS` whose address lies in a recorded mapping, the handler maps private
//! anonymous zero pages (`MAP_FIXED`) from the faulting page to the end of the mapping, sets
//! the mapping's poisoned flag and returns; the faulting instruction re-runs on zeroes. The
//! code above checks [`Segment::check_intact`](super::Segment::check_intact) at its
//! validation points (on entry to an operation and before reporting success) and reports
//! [`Error::Corrupt`]: whatever it read after the fault is never
//! handed out. Pages before the fault stay shared, so a segment truncated past its header
//! still has live wait words for the peers that are asleep on them.
//!
//! A `SIGBUS` outside ipckit's mappings, or one sent by `kill`, goes to the handler that was
//! installed before ipckit's (Rust's own stack-overflow handler, or the application's); with
//! none, the default action is restored and the signal takes its normal course. The handler
//! is installed once, by the first mapping, with `SA_SIGINFO | SA_ONSTACK` (it runs on the
//! alternate stack the Rust runtime gives each thread).
//!
//! # References
//! - [`sigaction(2)`](https://man7.org/linux/man-pages/man2/sigaction.2.html) (`BUS_ADRERR`),
//!   [`mmap(2)`](https://man7.org/linux/man-pages/man2/mmap.2.html) (`SIGBUS` and `MAP_FIXED`),
//!   [`signal-safety(7)`](https://man7.org/linux/man-pages/man7/signal-safety.7.html)

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use rustix::mm::{MapFlags, ProtFlags};

use crate::error::{Error, Result};

/// Mappings one process can have protected at once.
pub const MAX_MAPPINGS: usize = 16384;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const LIVE: u8 = 2;

/// One recorded mapping. `state` is FREE, CLAIMED (being filled in: the handler skips it) or
/// LIVE (start and len are valid). `generation` changes with every claim, so the handler can
/// tell a (start, len) pair it read from one torn by a reuse of the entry meanwhile.
struct Entry {
    generation: AtomicUsize,
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    poisoned: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise TABLE
const EMPTY: Entry = Entry {
    generation: AtomicUsize::new(0),
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    poisoned: AtomicBool::new(false),
};

static TABLE: [Entry; MAX_MAPPINGS] = [EMPTY; MAX_MAPPINGS];
/// The poison flag of a mapping without a guard: never set.
pub(crate) static NEVER_POISONED: AtomicBool = AtomicBool::new(false);
/// Entries below this index have been used at least once: the handler scans only these.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
/// The `SIGBUS` disposition found when ipckit installed its handler.
static PREVIOUS: OnceLock<PreviousAction> = OnceLock::new();
static INSTALLED: OnceLock<std::result::Result<(), i32>> = OnceLock::new();

/// A copy of the earlier `sigaction`, plain data.
struct PreviousAction(libc::sigaction);
// SAFETY: a sigaction is plain data (a handler address, a mask, flags), never mutated after
// it is stored.
unsafe impl Sync for PreviousAction {}
// SAFETY: as above.
unsafe impl Send for PreviousAction {}

/// A mapping recorded in the table; poisoned when a `SIGBUS` hit it. Dropping it forgets
/// the mapping (drop it before or right after unmapping).
#[derive(Debug)]
pub(crate) struct Guard {
    index: usize,
}

impl Guard {
    /// True once a page of the mapping was lost and replaced by zeroes.
    #[inline]
    pub(crate) fn is_poisoned(&self) -> bool {
        // SYNC: pairs with the Release store in the handler (or in `poison`).
        TABLE[self.index].poisoned.load(Ordering::Acquire)
    }

    /// The flag [`is_poisoned`](Guard::is_poisoned) loads, for an endpoint that checks it
    /// on every message and keeps the mapping (so this guard) alive meanwhile: one load,
    /// no look-up in the table.
    #[inline]
    pub(crate) fn flag(&self) -> &'static AtomicBool {
        &TABLE[self.index].poisoned
    }

    /// Marks the mapping poisoned (a check found the file shorter than the mapping).
    pub(crate) fn poison(&self) {
        // SYNC: pairs with the Acquire load in `is_poisoned`.
        TABLE[self.index].poisoned.store(true, Ordering::Release);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SYNC: pairs with the Acquire load of the state in the handler: once FREE, the
        // handler no longer looks at this range.
        TABLE[self.index].state.store(FREE, Ordering::Release);
    }
}

/// Records the mapping `start..start + len` (installing the handler first, once).
///
/// # Errors
/// [`Error::LimitReached`] when [`MAX_MAPPINGS`] mappings are already recorded;
/// [`Error::Os`] if the handler cannot be installed.
pub(crate) fn protect(start: usize, len: usize, object: &str) -> Result<Guard> {
    install(object)?;
    for (index, entry) in TABLE.iter().enumerate() {
        if entry
            .state
            .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        entry.generation.fetch_add(1, Ordering::Relaxed);
        // SYNC: orders the new generation before the new range; pairs with the Acquire
        // fence in the handler, which re-reads the generation after the range.
        std::sync::atomic::fence(Ordering::Release);
        entry.start.store(start, Ordering::Relaxed);
        entry.len.store(len, Ordering::Relaxed);
        entry.poisoned.store(false, Ordering::Relaxed);
        HIGH_WATER.fetch_max(index + 1, Ordering::AcqRel);
        // SYNC: pairs with the Acquire load of the state in the handler.
        entry.state.store(LIVE, Ordering::Release);
        return Ok(Guard { index });
    }
    Err(Error::LimitReached {
        object: object.to_string(),
        limit: format!("ipckit's table of {MAX_MAPPINGS} protected mappings per process"),
        source: std::io::Error::from_raw_os_error(libc::EMFILE),
    })
}

fn install(object: &str) -> Result<()> {
    let outcome = INSTALLED.get_or_init(|| {
        PAGE_SIZE.store(rustix::param::page_size(), Ordering::Relaxed);
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask) to receive the old one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: querying the current disposition into a valid out-parameter.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let _ = PREVIOUS.set(PreviousAction(old));
        // SAFETY: as above.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: a valid sigaction whose handler only does async-signal-safe work.
        if unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    outcome.map_err(|errno| {
        Error::os(
            "sigaction(SIGBUS)",
            object,
            std::io::Error::from_raw_os_error(errno),
        )
    })
}

/// The handler. Async-signal-safe: atomics, `mmap`, `sigaction` and `raise` only.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // A positive si_code is a fault the kernel raised; kill/tgkill/sigqueue give <= 0.
    if code > 0 && rescue(addr) {
        return;
    }
    chain(sig, info, ctx);
}

/// Replaces the lost pages of the ipckit mapping holding `addr` by zeroes and poisons it;
/// false if `addr` is in none of them.
fn rescue(addr: usize) -> bool {
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    let high = HIGH_WATER.load(Ordering::Acquire).min(MAX_MAPPINGS);
    for entry in &TABLE[..high] {
        let generation = entry.generation.load(Ordering::Relaxed);
        // SYNC: pairs with the Release store of LIVE in `protect`.
        if entry.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let start = entry.start.load(Ordering::Relaxed);
        let len = entry.len.load(Ordering::Relaxed);
        // SYNC: pairs with the Release fence in `protect`: a reuse of the entry since the
        // first read shows as a new generation.
        std::sync::atomic::fence(Ordering::Acquire);
        if entry.generation.load(Ordering::Relaxed) != generation
            || entry.state.load(Ordering::Relaxed) != LIVE
        {
            continue;
        }
        if addr < start || addr - start >= len {
            continue;
        }
        let from = addr & !(page - 1);
        let end = start + len;
        // SAFETY: `from..end` lies inside a mapping ipckit made and still holds (the entry is
        // LIVE until the Segment unmaps it, and the faulting thread is using it). Replacing
        // its pages by private zero pages keeps every address valid; the poisoned flag set
        // below makes every later operation report the loss instead of using the zeroes.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                from as *mut libc::c_void,
                end - from,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::FIXED,
            )
        };
        if mapped.is_err() {
            return false;
        }
        // SYNC: pairs with the Acquire load in `Guard::is_poisoned`.
        entry.poisoned.store(true, Ordering::Release);
        return true;
    }
    false
}

/// Hands a signal that is not ours to the previous handler, or to the default action.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let previous = PREVIOUS.get().map(|p| &p.0);
    match previous {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO handler has this signature; it was installed for
                // this signal by someone who expects to be called with these arguments.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(sig, info, ctx);
            } else {
                // SAFETY: a plain handler takes the signal number only.
                let handler: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(sig);
            }
        }
        Some(p) if p.sa_sigaction == libc::SIG_IGN => {
            // SAFETY: a valid siginfo (see on_sigbus).
            if unsafe { (*info).si_code } > 0 {
                // A real fault cannot be ignored: the kernel would re-raise it forever.
                default_and_raise(sig);
            }
        }
        _ => default_and_raise(sig),
    }
}

/// Restores the default action; a fault re-runs its instruction and dies of it, a sent
/// signal is raised again (it is delivered once this handler returns).
fn default_and_raise(sig: libc::c_int) {
    // SAFETY: all-zero is SIG_DFL with an empty mask.
    let action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: installing SIG_DFL; sigaction is async-signal-safe.
    unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
    // SAFETY: raise is async-signal-safe; the signal is blocked in its handler, so it stays
    // pending until we return, then takes the default action. For a fault, the re-run
    // instruction would raise it anyway; raising now makes both cases the same.
    unsafe { libc::raise(sig) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_in_a_protected_mapping_poisons_it_instead_of_killing() {
        let fd = tempfile_in_dev_shm("fault-unit");
        rustix::fs::ftruncate(&fd, 3 * 4096).unwrap();
        // SAFETY: a fresh shared mapping of our own file.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .unwrap() as *mut u8;
        let guard = protect(base as usize, 3 * 4096, "test mapping").unwrap();
        // SAFETY: inside the mapping.
        unsafe { base.write_volatile(1) };
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(!guard.is_poisoned());
        // SAFETY: inside the mapping; the page is gone from the file, so this faults and the
        // handler maps a zero page there.
        let lost = unsafe { base.add(2 * 4096 + 8).read_volatile() };
        assert_eq!(lost, 0);
        assert!(guard.is_poisoned());
        // The first page is still the file's.
        // SAFETY: inside the mapping.
        assert_eq!(unsafe { base.read_volatile() }, 1);
        drop(guard);
        // SAFETY: unmapping what we mapped.
        unsafe { rustix::mm::munmap(base.cast(), 3 * 4096).unwrap() };
    }

    fn tempfile_in_dev_shm(tag: &str) -> std::os::fd::OwnedFd {
        let name = format!("ipckit.unit-{tag}-{}", std::process::id());
        let fd = rustix::shm::open(
            name.as_str(),
            rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        rustix::shm::unlink(name.as_str()).unwrap();
        fd
    }
}
