//! Typed shared memory: a named segment holding one value of a plain type, and the textbook
//! bounded buffer built from it.
//!
//! ```
//! use ipckit::shm::Shared;
//! use ipckit::sync::Mutex;
//! # let name = format!("doc-shared-{}", std::process::id());
//!
//! let counter = Shared::create(&name, Mutex::new(0u64), 0o600)?;
//! *counter.lock().into_guard() += 1;            // any process that opens `name` sees it
//! let same = Shared::<Mutex<u64>>::open(&name)?;
//! assert_eq!(*same.lock().into_guard(), 1);
//! Shared::<Mutex<u64>>::remove(&name)?;
//! # Ok::<(), ipckit::Error>(())
//! ```

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

use super::segment::Segment;
use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::sync::{Event, LockResult, Mutex, Semaphore};

/// Types that can live in shared memory and be read by another process.
///
/// # Safety
/// Every bit pattern must be a valid value (another process, or a corrupted segment, may
/// have written any bytes); the type holds no pointers or references (another process maps
/// the memory at another address) and needs no `Drop`; it is `Sync` (many processes use it
/// at once).
pub unsafe trait ShmSafe: Sync + Sized {}

macro_rules! shm_safe {
    ($($t:ty),*) => { $(
        // SAFETY: integers and atomics: any bits are a value, no pointers, no Drop.
        unsafe impl ShmSafe for $t {}
    )* };
}
shm_safe!(
    u8,
    u16,
    u32,
    u64,
    i8,
    i16,
    i32,
    i64,
    usize,
    isize,
    AtomicU8,
    AtomicU32,
    AtomicU64,
    AtomicI32,
    AtomicI64,
    AtomicUsize
);
// SAFETY: two atomics.
unsafe impl ShmSafe for Semaphore {}
// SAFETY: two atomics.
unsafe impl ShmSafe for Event {}
// SAFETY: atomics plus a T that is itself ShmSafe; the lock word tolerates any value (a
// bogus owner is found dead and taken over).
unsafe impl<T: ShmSafe + Send> ShmSafe for Mutex<T> {}
// SAFETY: arrays of ShmSafe values are ShmSafe.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

const KIND: &str = "shared";
const TYPE_HEADER: usize = 64;

fn type_tag<T>() -> u64 {
    // FNV-1a of the type's name: a different type under the same name is refused.
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

/// One value of type `T` in a named segment (`/dev/shm/ipckit.shared.NAME`).
#[derive(Debug)]
pub struct Shared<T: ShmSafe> {
    segment: Segment,
    _type: PhantomData<T>,
}

impl<T: ShmSafe> Shared<T> {
    /// Creates the segment holding `value` (exclusively, with `mode`).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name or a type aligned
    /// to more than 64 bytes.
    pub fn create(name: &str, value: T, mode: u32) -> Result<Shared<T>> {
        if std::mem::align_of::<T>() > TYPE_HEADER {
            return Err(Error::InvalidArgument(
                "types aligned to more than 64 bytes cannot be shared".into(),
            ));
        }
        let segment = Segment::create(KIND, name, TYPE_HEADER + std::mem::size_of::<T>(), mode)?;
        Ok(Shared::init(segment, value))
    }

    /// Writes the type header and `value` into a new segment of the right size.
    fn init(segment: Segment, value: T) -> Shared<T> {
        let base = segment.payload().as_ptr();
        // SAFETY: the payload is TYPE_HEADER + size_of::<T>() bytes, 64-aligned (so the
        // value at +64 is aligned for T); nobody else uses it before `create` returns... except
        // an opener racing us, which checks the tag written last.
        unsafe {
            (base as *mut u64).write(std::mem::size_of::<T>() as u64);
            (base.add(8) as *mut u64).write(std::mem::align_of::<T>() as u64);
            (base.add(TYPE_HEADER) as *mut T).write(value);
            (*(base.add(16) as *const AtomicU64))
                .store(type_tag::<T>(), std::sync::atomic::Ordering::Release);
        }
        Shared {
            segment,
            _type: PhantomData,
        }
    }

    /// An anonymous value (a sealed `memfd`, see [`Segment::anonymous`]): hand
    /// [`Shared::fd`] to another process, which maps it with [`Shared::from_fd`].
    ///
    /// # Errors
    /// As [`Segment::anonymous`]; [`Error::InvalidArgument`] for a type aligned to more than
    /// 64 bytes.
    pub fn anonymous(value: T) -> Result<Shared<T>> {
        if std::mem::align_of::<T>() > TYPE_HEADER {
            return Err(Error::InvalidArgument(
                "types aligned to more than 64 bytes cannot be shared".into(),
            ));
        }
        let segment = Segment::anonymous(KIND, TYPE_HEADER + std::mem::size_of::<T>())?;
        Ok(Shared::init(segment, value))
    }

    /// Maps an anonymous value received as a descriptor, checking that it holds a `T`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if it is not an ipckit segment holding a `T`.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Shared<T>> {
        Shared::check(Segment::from_fd(fd, KIND)?, "anonymous shared value")
    }

    /// The descriptor of an anonymous value (to pass to another process).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.segment.fd()
    }

    /// Opens the segment, checking that it holds a `T`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Corrupt`] if it holds
    /// something else.
    pub fn open(name: &str) -> Result<Shared<T>> {
        Shared::check(
            Segment::open(KIND, name)?,
            &format!("shared value {name:?}"),
        )
    }

    /// Checks that `segment` holds a `T`.
    fn check(segment: Segment, object: &str) -> Result<Shared<T>> {
        if segment.payload_len() < TYPE_HEADER + std::mem::size_of::<T>() {
            return Err(Error::corrupt(object, "too small for the type asked for"));
        }
        let base = segment.payload().as_ptr();
        // SAFETY: the payload holds at least TYPE_HEADER bytes (checked); plain reads.
        let (size, align, tag) = unsafe {
            (
                (base as *const u64).read_volatile(),
                (base.add(8) as *const u64).read_volatile(),
                (*(base.add(16) as *const AtomicU64)).load(std::sync::atomic::Ordering::Acquire),
            )
        };
        if size != std::mem::size_of::<T>() as u64
            || align != std::mem::align_of::<T>() as u64
            || tag != type_tag::<T>()
        {
            return Err(Error::corrupt(
                object,
                format!("it does not hold a {}", std::any::type_name::<T>()),
            ));
        }
        Ok(Shared {
            segment,
            _type: PhantomData,
        })
    }

    /// Removes the segment's name.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such segment; [`Error::InvalidArgument`] for a bad name.
    pub fn remove(name: &str) -> Result<()> {
        Segment::unlink(KIND, name)
    }
}

impl<T: ShmSafe> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the value lies at +64 in a payload checked to be large enough, aligned;
        // T: ShmSafe makes any bytes a valid T and shared access sound.
        unsafe { &*(self.segment.payload().as_ptr().add(TYPE_HEADER) as *const T) }
    }
}

/// Where the producers put and the consumers take (positions, counted forever).
#[repr(C)]
#[derive(Debug)]
struct Cursors {
    put: u64,
    take: u64,
}
// SAFETY: two integers.
unsafe impl ShmSafe for Cursors {}

#[repr(C)]
#[derive(Debug)]
struct BufferHeader {
    capacity: u64,
    item_size: u64,
    /// Free slots: producers wait on it.
    empty: Semaphore,
    /// Filled slots: consumers wait on it.
    full: Semaphore,
    /// Guards the cursors.
    mutex: Mutex<Cursors>,
}

/// The producer-consumer bounded buffer, across processes: `capacity` slots, an `empty`
/// semaphore (free slots), a `full` semaphore (filled slots) and a `mutex` around the
/// cursors — the textbook solution, in a named segment. Any number of producers and consumers.
#[derive(Debug)]
pub struct BoundedBuffer<T: ShmSafe + Copy> {
    segment: Segment,
    capacity: u64,
    _type: PhantomData<T>,
}

const BUFFER_KIND: &str = "bounded-buffer";

impl<T: ShmSafe + Copy> BoundedBuffer<T> {
    fn header_len() -> usize {
        std::mem::size_of::<BufferHeader>().next_multiple_of(64)
    }

    /// Creates a buffer of `capacity` items.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or capacity, [`Error::AlreadyExists`],
    /// [`Error::PermissionDenied`], or an OS error.
    pub fn create(name: &str, capacity: usize, mode: u32) -> Result<BoundedBuffer<T>> {
        if capacity == 0 || capacity > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "capacity {capacity} is outside 1..=2^32-1"
            )));
        }
        let len = std::mem::size_of::<T>()
            .checked_mul(capacity)
            .and_then(|n| n.checked_add(Self::header_len()))
            .ok_or_else(|| Error::InvalidArgument("capacity x item size overflows".into()))?;
        let segment = Segment::create(BUFFER_KIND, name, len, mode)?;
        // SAFETY: the payload is large enough for the header, aligned, not yet shared.
        unsafe {
            (segment.payload().as_ptr() as *mut BufferHeader).write(BufferHeader {
                capacity: capacity as u64,
                item_size: std::mem::size_of::<T>() as u64,
                empty: Semaphore::new(capacity as u32),
                full: Semaphore::new(0),
                mutex: Mutex::new(Cursors { put: 0, take: 0 }),
            });
        }
        Ok(BoundedBuffer {
            segment,
            capacity: capacity as u64,
            _type: PhantomData,
        })
    }

    /// Opens a buffer, checking its geometry against the segment.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::Corrupt`] if the segment is not
    /// a bounded buffer of `T`.
    pub fn open(name: &str) -> Result<BoundedBuffer<T>> {
        let segment = Segment::open(BUFFER_KIND, name)?;
        let object = format!("bounded buffer {name:?}");
        if segment.payload_len() < Self::header_len() {
            return Err(Error::corrupt(object, "too small for its header"));
        }
        // SAFETY: the header fits (checked); plain reads of two integers.
        let (capacity, item_size) = unsafe {
            let h = segment.payload().as_ptr() as *const BufferHeader;
            (
                std::ptr::addr_of!((*h).capacity).read_volatile(),
                std::ptr::addr_of!((*h).item_size).read_volatile(),
            )
        };
        let fits = capacity
            .checked_mul(item_size)
            .and_then(|n| n.checked_add(Self::header_len() as u64))
            .is_some_and(|n| n <= segment.payload_len() as u64);
        if item_size != std::mem::size_of::<T>() as u64 || capacity == 0 || !fits {
            return Err(Error::corrupt(
                object,
                format!("capacity {capacity} x {item_size}-byte items does not match"),
            ));
        }
        Ok(BoundedBuffer {
            segment,
            capacity,
            _type: PhantomData,
        })
    }

    /// Removes the buffer's name.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such buffer; [`Error::InvalidArgument`] for a bad name.
    pub fn remove(name: &str) -> Result<()> {
        Segment::unlink(BUFFER_KIND, name)
    }

    fn header(&self) -> &BufferHeader {
        // SAFETY: checked to fit at create/open; all fields are ShmSafe.
        unsafe { &*(self.segment.payload().as_ptr() as *const BufferHeader) }
    }

    fn slot(&self, position: u64) -> *mut T {
        let index = (position % self.capacity) as usize;
        // SAFETY: index < capacity, and header_len + capacity * size_of::<T>() fits in the
        // payload (checked at create/open).
        unsafe { (self.segment.payload().as_ptr().add(Self::header_len()) as *mut T).add(index) }
    }

    /// Puts an item in, waiting for a free slot until `deadline`
    /// (`wait(empty); lock(mutex); put; unlock(mutex); signal(full)`).
    ///
    /// # Errors
    /// [`Error::Full`] / [`Error::Timeout`] if no slot frees up in time.
    pub fn put_deadline(&self, item: T, deadline: Deadline) -> Result<()> {
        let header = self.header();
        header.empty.wait_deadline(deadline).map_err(|e| match e {
            Error::Empty => Error::Full,
            other => other,
        })?;
        let mut cursors = match header.mutex.lock() {
            LockResult::Locked(g) => g,
            // A holder died between taking a slot and moving the cursor: the cursors are
            // still the last consistent values (they move after the copy).
            LockResult::OwnerDied(mut g) => {
                g.mark_consistent();
                g
            }
        };
        // SAFETY: slot() is in bounds; we hold the mutex, so no other process writes it.
        unsafe { self.slot(cursors.put).write_volatile(item) };
        cursors.put = cursors.put.wrapping_add(1);
        drop(cursors);
        header.full.post();
        Ok(())
    }

    /// Puts an item in, waiting as long as needed.
    ///
    /// # Errors
    /// As [`put_deadline`](Self::put_deadline), without a deadline.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_deadline(item, Deadline::Never)
    }

    /// Takes an item out, waiting for one until `deadline`
    /// (`wait(full); lock(mutex); take; unlock(mutex); signal(empty)`).
    ///
    /// # Errors
    /// [`Error::Empty`] / [`Error::Timeout`] if none arrives in time.
    pub fn take_deadline(&self, deadline: Deadline) -> Result<T> {
        let header = self.header();
        header.full.wait_deadline(deadline)?;
        let mut cursors = match header.mutex.lock() {
            LockResult::Locked(g) => g,
            LockResult::OwnerDied(mut g) => {
                g.mark_consistent();
                g
            }
        };
        // SAFETY: slot() is in bounds; we hold the mutex; T: ShmSafe accepts any bytes.
        let item = unsafe { self.slot(cursors.take).read_volatile() };
        cursors.take = cursors.take.wrapping_add(1);
        drop(cursors);
        header.empty.post();
        Ok(item)
    }

    /// Takes an item out, waiting as long as needed.
    ///
    /// # Errors
    /// As [`take_deadline`](Self::take_deadline), without a deadline.
    pub fn take(&self) -> Result<T> {
        self.take_deadline(Deadline::Never)
    }

    /// Items in the buffer now.
    pub fn len(&self) -> usize {
        self.header().full.value() as usize
    }

    /// True when no item is in the buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_values_check_their_type() {
        let name = format!("unit-shared-{}", std::process::id());
        let shared = Shared::create(&name, AtomicU64::new(7), 0o600).unwrap();
        assert_eq!(shared.load(std::sync::atomic::Ordering::Relaxed), 7);
        assert!(matches!(
            Shared::<AtomicU32>::open(&name),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            Shared::<[u64; 4]>::open(&name),
            Err(Error::Corrupt { .. })
        ));
        Shared::<AtomicU64>::remove(&name).unwrap();
    }

    #[test]
    fn bounded_buffer_fills_and_drains_in_order() {
        let name = format!("unit-bb-{}", std::process::id());
        let buffer = BoundedBuffer::<u64>::create(&name, 3, 0o600).unwrap();
        for i in 0..3 {
            buffer.put(i).unwrap();
        }
        assert!(matches!(
            buffer.put_deadline(9, Deadline::Now),
            Err(Error::Full)
        ));
        let other = BoundedBuffer::<u64>::open(&name).unwrap();
        assert_eq!(other.len(), 3);
        assert_eq!(
            (0..3).map(|_| other.take().unwrap()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(matches!(
            other.take_deadline(Deadline::Now),
            Err(Error::Empty)
        ));
        assert!(matches!(
            BoundedBuffer::<u32>::open(&name),
            Err(Error::Corrupt { .. })
        ));
        BoundedBuffer::<u64>::remove(&name).unwrap();
    }
}
