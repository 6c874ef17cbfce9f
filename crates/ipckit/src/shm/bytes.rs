//! Safe byte access to a segment's memory: `write_at` and `read_at`, bounds-checked, for
//! programs that use a segment as the course notes do (write a message through the mapping,
//! read it in another process) without writing `unsafe` themselves.
//!
//! The copies are volatile, byte by byte: the compiler neither elides nor reorders them
//! around the caller's synchronisation, and any byte another process wrote is a valid `u8`.
//! They are not atomic as a whole: a reader running while a writer writes can see a mix of
//! old and new bytes, so the two must take turns (a flag written after the data, a
//! semaphore, or simply: the reader starts after the writer is done).

use std::ptr::NonNull;

use super::segment::{Segment, SysvSegment};
use crate::error::{Error, Result};

fn check_range(offset: usize, len: usize, size: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "{len} bytes at offset {offset} do not fit in a segment of {size} bytes"
        ))),
    }
}

fn write(base: NonNull<u8>, size: usize, offset: usize, bytes: &[u8]) -> Result<()> {
    check_range(offset, bytes.len(), size)?;
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: offset + i < offset + bytes.len() <= size (checked): inside the mapping,
        // which lives as long as the segment the caller borrows.
        unsafe { base.as_ptr().add(offset + i).write_volatile(b) };
    }
    Ok(())
}

fn read(base: NonNull<u8>, size: usize, offset: usize, out: &mut [u8]) -> Result<()> {
    check_range(offset, out.len(), size)?;
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: inside the mapping (checked as in `write`); any byte is a valid u8.
        *b = unsafe { base.as_ptr().add(offset + i).read_volatile() };
    }
    Ok(())
}

impl Segment {
    /// Copies `bytes` into the payload at `offset`.
    ///
    /// ```
    /// use ipckit::shm::Segment;
    /// # let name = format!("doc-bytes-{}", std::process::id());
    /// let seg = Segment::create("demo", &name, 4096, 0o600)?;
    /// seg.write_at(0, b"hello")?;
    /// let mut buf = [0u8; 5];
    /// Segment::open("demo", &name)?.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"hello");
    /// assert!(seg.write_at(4095, b"xy").is_err());   // past the end: InvalidArgument
    /// Segment::unlink("demo", &name)?;
    /// # Ok::<(), ipckit::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range does not fit in the payload.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        write(self.payload(), self.payload_len(), offset, bytes)
    }

    /// Copies `out.len()` bytes of the payload at `offset` into `out`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range does not fit in the payload.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        read(self.payload(), self.payload_len(), offset, out)
    }
}

impl SysvSegment {
    /// Copies `bytes` into the segment at `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range does not fit in the segment.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        let (base, len) = self.memory();
        write(base, len, offset, bytes)
    }

    /// Copies `out.len()` bytes of the segment at `offset` into `out`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range does not fit in the segment.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let (base, len) = self.memory();
        read(base, len, offset, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let seg = Segment::anonymous("bytes", 64).unwrap();
        seg.write_at(60, b"abcd").unwrap();
        let mut out = [0u8; 4];
        seg.read_at(60, &mut out).unwrap();
        assert_eq!(&out, b"abcd");
        for (offset, len) in [(61, 4), (65, 0), (usize::MAX, 2)] {
            assert!(matches!(
                seg.write_at(offset, &vec![0; len]),
                Err(Error::InvalidArgument(_))
            ));
            assert!(matches!(
                seg.read_at(offset, &mut vec![0; len]),
                Err(Error::InvalidArgument(_))
            ));
        }
        seg.write_at(64, b"").unwrap();
    }

    #[test]
    fn system_v_bytes_stat_and_detach() {
        let key = 0x1bd0_0000 | (std::process::id() as i32 & 0xffff);
        let seg = SysvSegment::create(key, 4096, 0o640).unwrap();
        let again = SysvSegment::open(key).unwrap();
        seg.write_at(0, b"shared").unwrap();
        let mut out = [0u8; 6];
        again.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"shared");
        assert!(matches!(
            seg.write_at(4096, b"x"),
            Err(Error::InvalidArgument(_))
        ));
        let stat = seg.stat().unwrap();
        assert_eq!(stat.size, 4096);
        assert_eq!(stat.attached, 2);
        assert_eq!(stat.creator_pid, std::process::id());
        assert_eq!(stat.mode, 0o640);
        assert!(!stat.marked_for_removal);
        again.detach().unwrap();
        assert_eq!(seg.stat().unwrap().attached, 1);
        seg.remove().unwrap();
        // Removed but still attached here: the kernel keeps it, marked.
        assert!(seg.stat().unwrap().marked_for_removal);
        seg.detach().unwrap();
        assert!(matches!(
            SysvSegment::open(key),
            Err(Error::NotFound { .. })
        ));
    }
}
