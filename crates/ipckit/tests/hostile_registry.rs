//! Issue 13, items 1, 2 and 4: root's `ls` and `clean` turned against root.
//!
//! The attacker is this test binary re-run in a role that drops to `nobody` (uid/gid 65534)
//! before it acts; the victim (root, as sessions and CI run) lists and cleans. Stand-ins for
//! `/etc` are temporary directories owned by root: no real system file is ever named.

mod common;

use std::ffi::CString;
use std::io::BufReader;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{role, spawn_role, unique_name, wait_for_line, wait_with_watchdog, with_watchdog};
use ipckit::namespace::{self, Action};

const NOBODY: u32 = 65534;
const REGISTRY: &str = "/dev/shm/ipckit-registry";

/// `clean` acts on the whole machine: the tests here take turns.
static MACHINE_WIDE: Mutex<()> = Mutex::new(());

/// Becomes `nobody` for good (all threads: glibc's `setuid` changes every thread).
fn drop_to_nobody() {
    // SAFETY: plain system calls with valid arguments (an empty group list).
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(NOBODY), 0, "setgid");
        assert_eq!(libc::setuid(NOBODY), 0, "setuid");
    }
    // SAFETY: plain system call.
    assert_eq!(unsafe { libc::geteuid() }, NOBODY);
}

/// An entry's file name, as the registry writes it: `KIND.OBJECT`, `%` and `/` escaped.
fn entry_name(kind: &str, object: &str) -> String {
    let escaped = object.replace('%', "%25").replace('/', "%2F");
    format!("{kind}.{escaped}")
}

/// The attacker's own directory of entries (made as `nobody`, as ipckit would).
fn nobody_dir() -> PathBuf {
    let dir = Path::new(REGISTRY).join(NOBODY.to_string());
    let _ = std::fs::create_dir(&dir);
    dir
}

/// Makes the registry exist (as the first ipckit program on a machine would).
fn ensure_registry() {
    if std::fs::create_dir(REGISTRY).is_ok() {
        std::fs::set_permissions(REGISTRY, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
}

/// Plants an entry naming `object`, created by a dead process (pid 0).
fn plant(dir: &Path, kind: &str, object: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(entry_name(kind, object)), "0 0\n")
}

/// A socket file nobody accepts on (bound, then the listener closed).
fn dead_socket(path: &Path) {
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
}

/// A directory owned by root, mode 0755: the stand-in for `/etc`.
fn root_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(tag));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A directory owned by `nobody`, mode 0755: the attacker's playground.
fn nobody_owned_dir(tag: &str) -> PathBuf {
    let dir = root_dir(tag);
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    dir
}

/// Removes, even when a test fails half-way, the directories and registry entries it made.
struct Scrub {
    dirs: Vec<PathBuf>,
    /// Substring of every entry file name the test planted.
    tag: String,
}

impl Drop for Scrub {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        for dir in [Path::new(REGISTRY).to_path_buf(), nobody_dir()] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().contains(&self.tag) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        // Empty once nothing else of nobody's is registered; otherwise left as it is.
        let _ = std::fs::remove_dir(nobody_dir());
    }
}

fn running_as_root() -> bool {
    // SAFETY: plain system call.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: these attacks need root as the victim");
    }
    root
}

/// Item 1: an entry `nobody` plants naming root's socket file and regular file elsewhere
/// (directly, through a link, through a legacy top-level entry, or in root's own entry
/// directory) is never honoured: nothing of root's is listed, nothing deleted.
#[test]
fn a_planted_entry_never_makes_root_delete_roots_files() {
    const TEST: &str = "a_planted_entry_never_makes_root_delete_roots_files";
    if let Some((_, arg)) = role() {
        drop_to_nobody();
        let (standin, link) = arg.split_once('|').unwrap();
        let mine = nobody_dir();
        for victim in ["victim.sock", "victim.file"] {
            let direct = format!("{standin}/{victim}");
            plant(&mine, "unix-socket", &direct).unwrap();
            plant(&mine, "fifo", &direct).unwrap();
            plant(&mine, "unix-socket", &format!("{link}/{victim}")).unwrap();
            // The shared top level is writable, but no longer read.
            plant(Path::new(REGISTRY), "unix-socket", &direct).unwrap();
            // Root's own directory is not writable by nobody.
            let zero = Path::new(REGISTRY).join("0");
            if zero.exists() {
                assert!(plant(&zero, "unix-socket", &direct).is_err());
            }
        }
        println!("@@ready");
        return;
    }
    if !running_as_root() {
        return;
    }
    let _turn = MACHINE_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    ensure_registry();
    let standin = root_dir("standin");
    let playground = nobody_owned_dir("play");
    let link = playground.join("etc");
    std::os::unix::fs::symlink(&standin, &link).unwrap();
    let tag = standin.file_name().unwrap().to_str().unwrap().to_string();
    let _scrub = Scrub {
        dirs: vec![standin.clone(), playground.clone()],
        tag: tag.clone(),
    };
    let sock = standin.join("victim.sock");
    dead_socket(&sock);
    let file = standin.join("victim.file");
    std::fs::write(&file, b"root's").unwrap();

    let arg = format!("{}|{}", standin.display(), link.display());
    let mut child = spawn_role(TEST, "attacker", &arg);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    assert!(wait_with_watchdog(&mut child, Duration::from_secs(20)).success());

    let listing = with_watchdog(Duration::from_secs(20), namespace::inspect).unwrap();
    let named = listing.objects.iter().filter(|o| o.name.contains(&tag));
    assert_eq!(named.count(), 0, "{:?}", listing.objects);
    assert!(
        listing.skipped.iter().any(|s| s.what.contains(&tag)),
        "the untrusted entries are reported: {:?}",
        listing.skipped
    );
    for dry_run in [true, false] {
        let done = with_watchdog(Duration::from_secs(20), move || namespace::clean(dry_run));
        let done = done.unwrap();
        assert!(
            !done
                .iter()
                .any(|a| a.name.contains(&tag) && a.action.contains("remove")),
            "{done:?}"
        );
    }
    assert!(sock.exists() && file.exists(), "root's files are untouched");
    // Entries of the old shared layout are never read, only forgotten.
    let old = Path::new(REGISTRY).join(entry_name("unix-socket", sock.to_str().unwrap()));
    assert!(!old.exists(), "clean forgot the old-layout entry");
}

/// Item 1, the race: `nobody` flips a directory between a real one (holding its own dead
/// socket, named by its entry) and a link to a root-owned stand-in for `/etc` (holding a root
/// file of the same name), while root cleans again and again. Before the fix, root's file
/// went within 4 to 16 runs.
#[test]
fn flipping_a_directory_under_clean_never_deletes_roots_file() {
    const TEST: &str = "flipping_a_directory_under_clean_never_deletes_roots_file";
    const RUNS: usize = 40;
    if let Some((_, arg)) = role() {
        drop_to_nobody();
        let base = PathBuf::from(arg);
        let (flip, other) = (base.join("flip"), base.join("other"));
        let object = flip.join("victim");
        let object_text = object.to_str().unwrap().to_string();
        let mine = nobody_dir();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut flips = 0u64;
        let mut ready = false;
        while Instant::now() < deadline {
            // Keep the bait in place: its own dead socket, and the entry naming it.
            if std::fs::symlink_metadata(&flip).is_ok_and(|m| m.is_dir())
                && std::fs::symlink_metadata(&object).is_err()
            {
                let _ = std::os::unix::net::UnixListener::bind(&object);
            }
            let _ = plant(&mine, "unix-socket", &object_text);
            if !ready {
                println!("@@ready");
                ready = true;
            }
            for _ in 0..50 {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &flip,
                    rustix::fs::CWD,
                    &other,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                flips += 1;
            }
        }
        eprintln!("attacker: {flips} flips");
        return;
    }
    if !running_as_root() {
        return;
    }
    let _turn = MACHINE_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    ensure_registry();
    let standin = root_dir("standin");
    let base = nobody_owned_dir("flip");
    let tag = base.file_name().unwrap().to_str().unwrap().to_string();
    let _scrub = Scrub {
        dirs: vec![standin.clone(), base.clone()],
        tag,
    };
    let victim = standin.join("victim");
    std::fs::write(&victim, b"root's").unwrap();
    let real = base.join("flip");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::chown(&real, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::symlink(&standin, base.join("other")).unwrap();
    std::os::unix::fs::lchown(base.join("other"), Some(NOBODY), Some(NOBODY)).unwrap();

    let mut child = spawn_role(TEST, "attacker", base.to_str().unwrap());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    let mut removed_bait = 0;
    for run in 0..RUNS {
        let done = with_watchdog(Duration::from_secs(20), || namespace::clean(false)).unwrap();
        removed_bait += done
            .iter()
            .filter(|a| a.name.contains("flip/victim") && a.action.starts_with("removed"))
            .count();
        assert!(
            victim.exists(),
            "root's file deleted on run {run}: {done:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    wait_with_watchdog(&mut child, Duration::from_secs(20));
    assert!(victim.exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's");
    eprintln!("{RUNS} runs of clean: root's file kept; the bait (nobody's own socket) removed {removed_bait} times");
}

/// Item 2: a FIFO, a link to `/dev/zero` and a huge file planted in the registry (and in
/// `/dev/shm`), among a thousand stale entries, neither hang nor bloat `ls` or `clean`; they are
/// reported and skipped, and root's own entry is still listed.
#[test]
fn planted_fifo_zero_link_and_huge_file_neither_hang_nor_bloat_ls_and_clean() {
    const TEST: &str = "planted_fifo_zero_link_and_huge_file_neither_hang_nor_bloat_ls_and_clean";
    const STALE: usize = 1000;
    if let Some((_, tag)) = role() {
        drop_to_nobody();
        let mine = nobody_dir();
        let at =
            |kind: &str, what: &str| mine.join(entry_name(kind, &format!("/tmp/{tag}-{what}")));
        let fifo = CString::new(at("fifo", "fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink("/dev/zero", at("unix-socket", "zero")).unwrap();
        let huge = std::fs::File::create(at("fifo", "huge")).unwrap();
        huge.set_len(1 << 34).unwrap();
        for n in 0..STALE {
            plant(&mine, "fifo", &format!("/tmp/{tag}-gone-{n}")).unwrap();
        }
        let shm_fifo = CString::new(format!("/dev/shm/ipckit.mailbox.{tag}-fifo")).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(shm_fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink("/dev/zero", format!("/dev/shm/ipckit.topic.{tag}-zero"))
            .unwrap();
        let shm_huge = std::fs::File::create(format!("/dev/shm/ipckit.mailbox.{tag}-huge"));
        shm_huge.unwrap().set_len(1 << 34).unwrap();
        println!("@@ready");
        return;
    }
    if !running_as_root() {
        return;
    }
    let _turn = MACHINE_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    ensure_registry();
    let tag = unique_name("junk");
    let _scrub = Scrub {
        dirs: vec![],
        tag: tag.clone(),
    };
    struct ShmScrub(String);
    impl Drop for ShmScrub {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(format!("/dev/shm/ipckit.mailbox.{}-fifo", self.0));
            let _ = std::fs::remove_file(format!("/dev/shm/ipckit.topic.{}-zero", self.0));
            let _ = std::fs::remove_file(format!("/dev/shm/ipckit.mailbox.{}-huge", self.0));
            let _ = ipckit::fifo::remove(format!("/tmp/{}-real", self.0));
        }
    }
    let _shm_scrub = ShmScrub(tag.clone());
    let real = format!("/tmp/{tag}-real");
    ipckit::fifo::create(&real, 0o600).unwrap();

    let mut child = spawn_role(TEST, "planter", &tag);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    assert!(wait_with_watchdog(&mut child, Duration::from_secs(30)).success());

    let timed = |what: &'static str, f: fn() -> usize| {
        let (count, took) = with_watchdog(Duration::from_secs(20), move || {
            let start = Instant::now();
            let count = f();
            (count, start.elapsed())
        });
        eprintln!("{what}: {count} rows in {took:?} with {STALE} planted entries");
        // Under a second per thousand entries, as the issue asks, even in a debug build.
        assert!(took < Duration::from_secs(1), "{what} took {took:?}");
    };
    let listing = namespace::inspect().unwrap();
    assert!(
        listing
            .objects
            .iter()
            .any(|o| o.kind == "fifo" && o.name == real),
        "the rest is still listed"
    );
    for what in ["-fifo", "-zero", "-huge"] {
        assert!(
            listing
                .skipped
                .iter()
                .any(|s| s.what.contains(&format!("{tag}{what}"))),
            "{what} is reported: {:?}",
            listing.skipped
        );
    }
    // A huge file with a mailbox's name is a regular file: opened, found corrupt, listed
    // with its error (its header is read, not its 16 GiB).
    let huge = format!("{tag}-huge");
    let row = listing.objects.iter().find(|o| o.name == huge);
    assert!(row.is_some_and(|r| r.error.is_some()), "{row:?}");
    timed("ls", || namespace::list().unwrap().len());
    timed("clean --dry-run", || namespace::clean(true).unwrap().len());
    let high_water = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap();
    let kib: u64 = high_water.trim_end_matches(" kB").parse().unwrap();
    assert!(kib < 512 * 1024, "peak resident memory {high_water}");
    timed("clean", || namespace::clean(false).unwrap().len());
    // The stale entries were forgotten; the planted files stay where they are, reported.
    let left = namespace::inspect().unwrap();
    assert!(!left.objects.iter().any(|o| o.name.contains("-gone-")));
    assert!(Path::new(&real).exists());
}

/// Item 2: a service port whose listener has a full backlog does not block `ls` or `clean`;
/// it is listed as alive and not removed.
#[test]
fn a_full_backlog_does_not_block_ls_or_clean() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    if !running_as_root() {
        return;
    }
    let _turn = MACHINE_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let name = unique_name("backlog");
    let path = std::env::temp_dir().join(format!("ipckit.service.{name}"));
    struct RemoveFile(PathBuf);
    impl Drop for RemoveFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _scrub = RemoveFile(path.clone());
    let addr = SocketAddrUnix::new(&path).unwrap();
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&listener, &addr).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let mut pending = Vec::new();
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => pending.push(fd),
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(pending.len() < 10_000, "the backlog never filled");
    }
    let start = Instant::now();
    let listing = with_watchdog(Duration::from_secs(10), namespace::inspect).unwrap();
    let row = listing
        .objects
        .iter()
        .find(|o| o.kind == "service" && o.name == name)
        .expect("listed");
    assert_eq!(
        (row.alive, row.dead),
        (1, 0),
        "a full backlog is a live server"
    );
    let plan = with_watchdog(Duration::from_secs(10), namespace::plan).unwrap();
    assert!(!plan
        .steps
        .iter()
        .any(|s| s.name == name && s.action == Action::RemoveServicePort));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(path.exists());
    drop(listener);
}

/// Item 4: names outside the safe set are refused by every named constructor, and a file
/// with such a name planted in `/dev/shm` is skipped, not opened or listed.
#[test]
fn names_outside_the_safe_set_are_refused_and_planted_ones_skipped() {
    use ipckit::shm::{Mailbox, Shared, Topic};
    let bad = [
        "line\nbreak".to_string(),
        ".hidden".to_string(),
        "sp ace".to_string(),
        "tab\t".to_string(),
        "é".to_string(),
        "x".repeat(201),
        String::new(),
    ];
    for name in &bad {
        let refused = |r: Result<(), ipckit::Error>| {
            assert!(
                matches!(r, Err(ipckit::Error::InvalidArgument(_))),
                "{name:?}: {r:?}"
            )
        };
        refused(Mailbox::create(name).map(drop));
        refused(Topic::builder(name).create().map(drop));
        refused(Shared::create(name, 0u64, 0o600).map(drop));
        refused(ipckit::service::Server::bind(name, 0o600).map(drop));
        refused(ipckit::mq::PosixQueue::builder(name).create().map(drop));
    }
    let ok = unique_name("ok");
    let longest = format!("{ok}{}", "x".repeat(200 - ok.len()));
    for good in [format!("{ok}-A-z_0.9"), longest] {
        let mailbox = Mailbox::create(&good).map(drop);
        assert!(mailbox.is_ok(), "{good:?}: {mailbox:?}");
        Mailbox::remove(&good).unwrap();
    }
    let tag = unique_name("nl");
    let planted = format!("/dev/shm/ipckit.mailbox.{tag}\nEVIL");
    std::fs::write(&planted, b"").unwrap();
    let listing = namespace::inspect();
    std::fs::remove_file(&planted).unwrap();
    let listing = listing.unwrap();
    assert!(!listing.objects.iter().any(|o| o.name.contains(&tag)));
    assert!(listing.skipped.iter().any(|s| s.what.contains(&tag)));
    assert_eq!(
        std::fs::metadata("/dev/shm").unwrap().mode() & 0o1777,
        0o1777,
        "untouched"
    );
}
