//! System V shared memory segments (`shmget`, `shmat`, `shmdt`, `shmctl`).

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// A System V shared memory segment (`shmget`/`shmat`), addressed by a key (or a path and
/// a project id, through `ftok`). It persists until [`SysvSegment::remove`].
#[derive(Debug)]
pub struct SysvSegment {
    key: i32,
    id: i32,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: as for Segment.
unsafe impl Send for SysvSegment {}
// SAFETY: as for Segment.
unsafe impl Sync for SysvSegment {}

impl SysvSegment {
    /// The key `ftok(path, project)` gives.
    ///
    /// # Errors
    /// [`Error::NotFound`] if `path` does not exist, [`Error::PermissionDenied`] if it cannot
    /// be reached (a directory on the way denies search), [`Error::InvalidArgument`] if it
    /// contains a NUL byte; another OS error as [`Error::Os`].
    pub fn key_from_path(path: &std::path::Path, project: u8) -> Result<i32> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidArgument("path contains a NUL byte".into()))?;
        // SAFETY: a valid NUL-terminated path.
        let key = unsafe { libc::ftok(c.as_ptr(), project as i32) };
        if key == -1 {
            return Err(Error::os(
                "ftok",
                path.display().to_string(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(key)
    }

    /// Creates a segment of `len` bytes under `key`, exclusively, with `mode`.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a segment has this key; [`Error::PermissionDenied`] if
    /// `mode` does not let the caller attach it for reading and writing; [`Error::Os`] with
    /// `EINVAL` for a `len` of 0 or over `/proc/sys/kernel/shmmax`, with `ENOSPC` when the
    /// system has its most segments (`shmmni`) or shared memory (`shmall`), or another OS
    /// error.
    pub fn create(key: i32, len: usize, mode: u32) -> Result<SysvSegment> {
        let segment = SysvSegment::get(
            key,
            len,
            libc::IPC_CREAT | libc::IPC_EXCL | (mode as i32 & 0o777),
        )?;
        crate::registry::record(
            crate::registry::Kind::SysvSegment,
            &crate::registry::sysv_object(key, segment.id),
        );
        Ok(segment)
    }

    /// Opens the segment under `key`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no segment has this key; [`Error::PermissionDenied`] if its mode
    /// does not let the caller read and write it; another OS error as [`Error::Os`].
    pub fn open(key: i32) -> Result<SysvSegment> {
        SysvSegment::get(key, 0, 0)
    }

    fn get(key: i32, len: usize, flags: i32) -> Result<SysvSegment> {
        let object = format!("System V segment {key:#x}");
        // SAFETY: plain system call.
        let id = unsafe { libc::shmget(key, len, flags) };
        if id == -1 {
            return Err(Error::os("shmget", object, std::io::Error::last_os_error()));
        }
        // A segment this call created and cannot hand out is removed again: nothing is left
        // behind under the key (a mode the creator itself cannot read, say).
        let failed = |op: &'static str| {
            let err = Error::os(op, object.clone(), std::io::Error::last_os_error());
            if flags & libc::IPC_EXCL != 0 {
                // SAFETY: plain system call on the id we created; no buffer is passed.
                unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            }
            err
        };
        // SAFETY: an all-zero shmid_ds is a valid out-parameter.
        let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `stat` is a valid out-parameter for IPC_STAT.
        if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut stat) } == -1 {
            return Err(failed("shmctl(IPC_STAT)"));
        }
        // SAFETY: attaching a segment we just looked up, at an address the kernel picks.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if addr as isize == -1 {
            return Err(failed("shmat"));
        }
        Ok(SysvSegment {
            key,
            id,
            base: NonNull::new(addr.cast()).expect("shmat returned a non-null address"),
            len: stat.shm_segsz,
        })
    }

    /// The segment's memory and length.
    pub fn memory(&self) -> (NonNull<u8>, usize) {
        (self.base, self.len)
    }

    /// The kernel's id of the segment (the `shmid` column of `ipcs -m`).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Marks the segment for removal (it goes when the last process detaches).
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] unless the caller owns or created the segment (or is
    /// privileged). Removing it twice is no error: this handle keeps it attached, so it is
    /// still there.
    pub fn remove(&self) -> Result<()> {
        // SAFETY: IPC_RMID takes no buffer.
        if unsafe { libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) } == -1 {
            return Err(Error::os(
                "shmctl(IPC_RMID)",
                format!("System V segment {}", self.id),
                std::io::Error::last_os_error(),
            ));
        }
        crate::registry::forget(
            crate::registry::Kind::SysvSegment,
            &crate::registry::sysv_object(self.key, self.id),
        );
        Ok(())
    }

    /// Detaches the segment from this process (`shmdt`), as dropping it does, but reporting
    /// a failure. The segment itself stays until [`SysvSegment::remove`] and the last detach.
    ///
    /// # Errors
    /// The OS error `shmdt` gives (the address is ours, so none is expected).
    #[doc(alias = "shmdt")]
    pub fn detach(self) -> Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: detaching the address shmat gave us, once: `this` is never dropped, and no
        // reference into the memory outlives `self`, which the call consumed.
        if unsafe { libc::shmdt(this.base.as_ptr().cast()) } == -1 {
            return Err(Error::os(
                "shmdt",
                format!("System V segment {}", this.id),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// What the kernel knows about the segment (`shmctl(IPC_STAT)`): size, attachments,
    /// creator, owner, permissions, and whether it is marked for removal.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] without read permission (its owner may have changed the
    /// mode); another OS error as [`Error::Os`]. The segment cannot be gone: this handle keeps
    /// it attached.
    #[doc(alias = "shmctl")]
    pub fn stat(&self) -> Result<SysvSegmentStat> {
        // SAFETY: an all-zero shmid_ds is a valid out-parameter.
        let mut stat: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `stat` is a valid out-parameter for IPC_STAT.
        if unsafe { libc::shmctl(self.id, libc::IPC_STAT, &mut stat) } == -1 {
            return Err(Error::os(
                "shmctl(IPC_STAT)",
                format!("System V segment {}", self.id),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(SysvSegmentStat {
            size: stat.shm_segsz,
            attached: stat.shm_nattch as u64,
            creator_pid: stat.shm_cpid as u32,
            last_pid: stat.shm_lpid as u32,
            owner_uid: stat.shm_perm.uid,
            mode: u32::from(stat.shm_perm.mode) & 0o777,
            // SHM_DEST (0o1000 in the mode): IPC_RMID was called, the id goes at the last detach.
            marked_for_removal: u32::from(stat.shm_perm.mode) & 0o1000 != 0,
        })
    }
}

/// A System V segment as `shmctl(IPC_STAT)` reports it ([`SysvSegment::stat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SysvSegmentStat {
    /// Size in bytes, as created.
    pub size: usize,
    /// Attachments now, in every process (`shm_nattch`, the `nattch` column of `ipcs -m`).
    pub attached: u64,
    /// The process that created it.
    pub creator_pid: u32,
    /// The process that attached or detached last.
    pub last_pid: u32,
    /// The owner's user id.
    pub owner_uid: u32,
    /// Permission bits (`0o600`...).
    pub mode: u32,
    /// `IPC_RMID` was called: the segment goes when the last process detaches.
    pub marked_for_removal: bool,
}

impl Drop for SysvSegment {
    fn drop(&mut self) {
        // SAFETY: detaching the address shmat gave us; no references outlive self.
        unsafe { libc::shmdt(self.base.as_ptr().cast()) };
    }
}
