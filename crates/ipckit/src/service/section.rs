//! Sections: a message larger than a channel slot is written into a `memfd` created for it,
//! sealed, and passed by descriptor (as ALPC does for large messages); the receiver checks
//! the seals and the size before reading it with `pread` (nothing is mapped, nothing faults).

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};

use super::sealed;
use crate::error::{Error, Result};

/// A sealed `memfd` holding `data`: nobody can change, shrink or grow it once passed.
pub(super) fn write_section(data: &[u8], object: &str) -> Result<OwnedFd> {
    let os = |op: &'static str| move |e| Error::os(op, format!("{object} (section)"), e);
    let fd = rustix::fs::memfd_create(
        "ipckit.service.section",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(os("memfd_create"))?;
    rustix::fs::ftruncate(&fd, data.len() as u64).map_err(os("ftruncate"))?;
    let mut written = 0;
    while written < data.len() {
        match rustix::io::pwrite(&fd, &data[written..], written as u64) {
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(os("pwrite")(e)),
        }
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )
    .map_err(os("fcntl(F_ADD_SEALS)"))?;
    Ok(fd)
}

/// Reads a section of `len` bytes, after checking that nobody can change it any more.
pub(super) fn read_section(fd: OwnedFd, len: usize, object: &str) -> Result<Vec<u8>> {
    let corrupt = |detail: &str| Error::corrupt(object, detail.to_string());
    if !sealed(
        fd.as_fd(),
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW,
    ) {
        return Err(corrupt("a section that is not sealed"));
    }
    let size = rustix::fs::fstat(&fd)
        .map_err(|e| Error::os("fstat", object, e))?
        .st_size;
    if u64::try_from(size) != Ok(len as u64) {
        return Err(corrupt("a section whose size is not the message's"));
    }
    let mut data = vec![0u8; len];
    let mut read = 0;
    while read < len {
        match rustix::io::pread(&fd, &mut data[read..], read as u64) {
            Ok(0) => return Err(corrupt("a section that ended early")),
            Ok(n) => read += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::os("pread", object, e)),
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_only_when_sealed_and_of_the_announced_size() {
        let data = vec![7u8; super::super::INLINE_MAX + 1];
        let fd = write_section(&data, "test").unwrap();
        let copy = fd.try_clone().unwrap();
        assert_eq!(read_section(fd, data.len(), "test").unwrap(), data);
        assert!(matches!(
            read_section(copy, data.len() - 1, "test"),
            Err(Error::Corrupt { .. })
        ));
        // A memfd its sender could still change or shrink is refused before it is read.
        let unsealed = rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, 10).unwrap();
        assert!(matches!(
            read_section(unsealed, 10, "test"),
            Err(Error::Corrupt { .. })
        ));
    }
}
