use super::file::memory_available;
use super::*;

fn name(tag: &str) -> String {
    format!("unit-seg-{tag}-{}", std::process::id())
}

/// Removes what a test created even when it fails half-way.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for kind in ["kind", "other"] {
            let _ = Segment::unlink(kind, &self.0);
        }
    }
}

#[test]
fn names_are_checked_before_any_file() {
    for bad in ["", "a/b", "..", &"x".repeat(300)] {
        assert!(matches!(
            Segment::create("k", bad, 8, 0o600),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        Segment::create("a.b", "n", 8, 0o600),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn header_is_checked_on_open() {
    let n = name("hdr");
    let _cleanup = Cleanup(n.clone());
    let seg = Segment::create("kind", &n, 100, 0o600).unwrap();
    assert_eq!(seg.payload_len(), 100);
    assert_eq!(seg.payload().as_ptr() as usize % 64, 0);
    assert!(matches!(
        Segment::create("kind", &n, 100, 0o600),
        Err(Error::AlreadyExists { .. })
    ));
    // The same file under another kind's name: the header's kind gives it away.
    std::fs::hard_link(
        format!("/dev/shm/ipckit.kind.{n}"),
        format!("/dev/shm/ipckit.other.{n}"),
    )
    .unwrap();
    assert!(matches!(
        Segment::open("other", &n),
        Err(Error::Corrupt { .. })
    ));
    Segment::unlink("other", &n).unwrap();
    // Scribble on the magic: corrupt, not a crash.
    let path = format!("/dev/shm/ipckit.kind.{n}");
    std::os::unix::fs::FileExt::write_at(
        &std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
        b"garbage!",
        0,
    )
    .unwrap();
    assert!(matches!(
        Segment::open("kind", &n),
        Err(Error::Corrupt { .. })
    ));
    // Truncated below the header.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert!(matches!(
        Segment::open("kind", &n),
        Err(Error::Corrupt { .. })
    ));
    Segment::unlink("kind", &n).unwrap();
    assert!(matches!(
        Segment::open("kind", &n),
        Err(Error::NotFound { .. })
    ));
    drop(seg);
}

#[test]
fn a_header_announcing_more_than_the_file_holds_is_corrupt() {
    let n = name("short");
    let _cleanup = Cleanup(n.clone());
    let _seg = Segment::create("kind", &n, 4096, 0o600).unwrap();
    let path = format!("/dev/shm/ipckit.kind.{n}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(HEADER_LEN as u64 + 100)
        .unwrap();
    assert!(matches!(
        Segment::open("kind", &n),
        Err(Error::Corrupt { .. })
    ));
    Segment::unlink("kind", &n).unwrap();
}

#[test]
fn a_symlink_or_a_fifo_under_the_name_is_refused_without_blocking() {
    let n = name("planted");
    let _cleanup = Cleanup(n.clone());
    let _target = Segment::create("other", &n, 64, 0o600).unwrap();
    let path = format!("/dev/shm/ipckit.kind.{n}");
    std::os::unix::fs::symlink(format!("/dev/shm/ipckit.other.{n}"), &path).unwrap();
    let followed = Segment::open("kind", &n);
    assert!(
        matches!(&followed, Err(Error::PermissionDenied { object }) if object.contains("symbolic link")),
        "{followed:?}"
    );
    std::fs::remove_file(&path).unwrap();
    // A FIFO: opening it for reading and writing never blocks, and it is not a segment.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path.as_str(),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let fifo = Segment::open("kind", &n);
    assert!(
        matches!(&fifo, Err(Error::Corrupt { detail, .. }) if detail.contains("regular")),
        "{fifo:?}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_file_the_caller_did_not_make_is_refused_unless_trusted() {
    assert!(Trust::OwnerOrRoot.accepts(1000, 1000));
    assert!(Trust::OwnerOrRoot.accepts(0, 1000));
    assert!(!Trust::OwnerOrRoot.accepts(1001, 1000));
    assert!(Trust::AlsoUid(1001).accepts(1001, 1000));
    assert!(!Trust::AlsoUid(1001).accepts(1002, 1000));
    assert!(Trust::AnyOwner.accepts(1002, 1000));
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let n = name("foreign");
    let _cleanup = Cleanup(n.clone());
    drop(Segment::create("kind", &n, 64, 0o666).unwrap());
    let path = format!("/dev/shm/ipckit.kind.{n}");
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let refused = Segment::open("kind", &n);
    assert!(
        matches!(&refused, Err(Error::PermissionDenied { object }) if object.contains("uid 65534")),
        "{refused:?}"
    );
    let trusted = Segment::open_trusting("kind", &n, Trust::AlsoUid(65534)).unwrap();
    assert_eq!(trusted.owner(), 65534);
}

#[test]
fn creation_reserves_the_memory_and_open_refuses_a_sparse_file() {
    let n = name("sparse");
    let _cleanup = Cleanup(n.clone());
    drop(Segment::create("kind", &n, 1 << 20, 0o600).unwrap());
    let path = format!("/dev/shm/ipckit.kind.{n}");
    let meta = std::fs::metadata(&path).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 >= meta.len());
    // Punch the pages out: the same size, nothing behind it.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        4096,
        meta.len() - 4096,
    )
    .unwrap();
    let sparse = Segment::open("kind", &n);
    assert!(
        matches!(&sparse, Err(Error::Corrupt { detail, .. }) if detail.contains("sparse")),
        "{sparse:?}"
    );
}

/// A memfd larger than the memory available is refused before anything is reserved
/// (reserving it would call the OOM killer on the whole machine).
#[test]
fn an_anonymous_segment_beyond_memory_is_no_space() {
    // Without MemAvailable the check cannot run, and reserving 32 TiB must not be tried.
    let available = memory_available().expect("/proc/meminfo says MemAvailable");
    let huge = 1usize << 45;
    assert!(huge as u64 > available);
    match Segment::anonymous("anon", huge) {
        Err(Error::NoSpace {
            requested, path, ..
        }) => {
            assert!(requested >= huge as u64);
            assert_eq!(path, "memory (memfd)");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
}

#[test]
fn anonymous_segments_travel_as_descriptors() {
    let seg = Segment::anonymous("anon", 64).unwrap();
    // SAFETY: writing one byte of our own payload.
    unsafe { seg.payload().as_ptr().write(42) };
    let fd = seg.fd().unwrap().try_clone_to_owned().unwrap();
    // Sealed: whoever holds the descriptor cannot shrink it under our mapping.
    assert_eq!(rustix::fs::ftruncate(&fd, 0), Err(rustix::io::Errno::PERM));
    let again = Segment::from_fd(fd, "anon").unwrap();
    // SAFETY: reading one byte of the same memory through the second mapping.
    assert_eq!(unsafe { again.payload().as_ptr().read() }, 42);
    let fd = seg.fd().unwrap().try_clone_to_owned().unwrap();
    assert!(matches!(
        Segment::from_fd(fd, "other"),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn system_v_segments_by_key() {
    let key = 0x1bc0_0000 | (std::process::id() as i32 & 0xffff);
    let seg = SysvSegment::create(key, 4096, 0o600).unwrap();
    let (ptr, len) = seg.memory();
    assert!(len >= 4096);
    // SAFETY: writing inside the attached segment.
    unsafe { ptr.as_ptr().write(7) };
    let again = SysvSegment::open(key).unwrap();
    // SAFETY: reading the same byte through the second attachment.
    assert_eq!(unsafe { again.memory().0.as_ptr().read() }, 7);
    assert!(matches!(
        SysvSegment::create(key, 4096, 0o600),
        Err(Error::AlreadyExists { .. })
    ));
    seg.remove().unwrap();
    assert!(SysvSegment::key_from_path(std::path::Path::new("/nonexistent-ipckit"), 1).is_err());
    assert!(SysvSegment::key_from_path(std::path::Path::new("/tmp"), 1).is_ok());
}
