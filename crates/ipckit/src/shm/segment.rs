//! TEMPORARY stand-in for the shm branch's Segment: the shm helper replaces this file with
//! the real one when merging main. The mailbox (shm/mailbox.rs) uses exactly this API, keep
//! it (or update mailbox.rs in the same merge):
//!   Segment::create(kind: &str, name: &str, payload_len: usize, mode: u32) -> Result<Segment>
//!     (exclusive; payload zero-filled; AlreadyExists when taken)
//!   Segment::open(kind, name) -> Result<Segment>   (NotFound / PermissionDenied / Corrupt)
//!   seg.payload() -> NonNull<u8> (64-byte aligned), seg.payload_len() -> usize
//!   Segment::unlink(kind, name) -> Result<()>      (NotFound when missing)
//!   Segment::list(kind) -> Result<Vec<String>>     (user names of that kind in /dev/shm)
//! Segment must be Send + Sync. Files are /dev/shm/ipckit.<kind>.<name>.
#![allow(missing_docs)]
use std::ptr::NonNull;

use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::error::{Error, Result};

#[derive(Debug)]
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
}
// SAFETY: temporary.
unsafe impl Send for Segment {}
// SAFETY: temporary.
unsafe impl Sync for Segment {}

fn path(kind: &str, name: &str) -> String {
    format!("ipckit.{kind}.{name}")
}

impl Segment {
    pub fn create(kind: &str, name: &str, len: usize, mode: u32) -> Result<Segment> {
        let p = path(kind, name);
        let fd = rustix::shm::open(
            p.as_str(),
            rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| Error::os("shm_open", &p, e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::os("fchmod", &p, e))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| Error::os("ftruncate", &p, e))?;
        Self::map(&fd, len, &p)
    }
    pub fn open(kind: &str, name: &str) -> Result<Segment> {
        let p = path(kind, name);
        let fd = rustix::shm::open(p.as_str(), rustix::shm::OFlags::RDWR, Mode::empty())
            .map_err(|e| Error::os("shm_open", &p, e))?;
        let len = rustix::fs::fstat(&fd)
            .map_err(|e| Error::os("fstat", &p, e))?
            .st_size as usize;
        Self::map(&fd, len, &p)
    }
    fn map(fd: &rustix::fd::OwnedFd, len: usize, p: &str) -> Result<Segment> {
        let _ = OFlags::empty();
        // SAFETY: temporary.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len.max(1),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| Error::os("mmap", p, e))?;
        Ok(Segment {
            ptr: NonNull::new(ptr as *mut u8).unwrap(),
            len,
        })
    }
    pub fn payload(&self) -> NonNull<u8> {
        self.ptr
    }
    pub fn payload_len(&self) -> usize {
        self.len
    }
    pub fn unlink(kind: &str, name: &str) -> Result<()> {
        let p = path(kind, name);
        rustix::shm::unlink(p.as_str()).map_err(|e| Error::os("shm_unlink", &p, e))
    }
    pub fn list(kind: &str) -> Result<Vec<String>> {
        let prefix = format!("ipckit.{kind}.");
        let mut v = Vec::new();
        for e in std::fs::read_dir("/dev/shm").map_err(|e| Error::os("readdir", "/dev/shm", e))? {
            let n = e
                .map_err(|e| Error::os("readdir", "/dev/shm", e))?
                .file_name()
                .to_string_lossy()
                .to_string();
            if let Some(rest) = n.strip_prefix(&prefix) {
                v.push(rest.to_string());
            }
        }
        Ok(v)
    }
}
impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: temporary.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len.max(1));
        }
    }
}
