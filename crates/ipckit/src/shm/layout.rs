//! The layout shared by the slotted structures placed in a segment (the mailbox ring, the
//! topic): a `#[repr(C)]` header that starts with a [`Preamble`], then `capacity` slots, each
//! a slot header followed by `max_message` bytes, every slot a multiple of 64 bytes.
//!
//! ```text
//! 0                      40          size_of::<Header>()  slots_offset()
//! +----------------------+-----------+---------------------+---------+---------+----
//! | Preamble             | creator   | the rest of the     | padding | slot 0  | ...
//! | magic version flags  | pid (u32) | structure's header  | to 64   |         |
//! | capacity slot_size   |           |                     |         |         |
//! | max_message mode     |           |                     |         |         |
//! | created_unix_ns      |           |                     |         |         |
//! +----------------------+-----------+---------------------+---------+---------+----
//! ```
//!
//! Everything here is validation and address arithmetic: a creator writes the preamble and
//! stores the magic last (Release); an opener checks the magic (Acquire), reads the geometry
//! once, checks it against the mapping's length and keeps it in process memory
//! ([`Slots`]). Nothing read from the segment later is used as an index or a length without a
//! bounds check. The segment header (`segment.rs`) starts with the same magic and version
//! and is checked by the same [`check_identity`].

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::sync::primitive::{AtomicU64, Ordering};

/// A value on a cache line of its own, so producers and consumers do not false-share.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Padded<T>(pub T);

/// The first 40 bytes of every slotted structure's header, in this order; the creator's pid
/// (`u32`) follows at offset 40.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Preamble {
    /// The structure's magic, stored last (Release) once the creator has initialised it.
    pub magic: AtomicU64,
    /// Bumped whenever the structure's layout changes.
    pub version: u32,
    /// The structure's flags (rendezvous, overrun...).
    pub flags: u32,
    /// Slots in the ring.
    pub capacity: u32,
    /// Bytes per slot, header included: [`SlotLayout::slot_size`] of `max_message`.
    pub slot_size: u32,
    /// The largest message a slot carries.
    pub max_message: u32,
    /// File mode the structure was created with.
    pub mode: u32,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
}

#[cfg(not(loom))] // loom's atomics are larger than the real ones
const _: () = assert!(std::mem::size_of::<Preamble>() == 40);

/// The geometry, validated and copied out of shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub capacity: u32,
    pub slot_size: usize,
    pub max_message: u32,
    pub flags: u32,
    pub mode: u32,
}

/// What tells one slotted structure from another: its magic, version, name and limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Identifies the structure.
    pub magic: u64,
    /// The layout version this code reads and writes.
    pub version: u32,
    /// What it is, for messages: `"mailbox"`, `"topic"`.
    pub what: &'static str,
    /// The largest capacity created or accepted.
    pub max_capacity: u32,
    /// The largest message created or accepted.
    pub max_message: u32,
}

impl Limits {
    /// Limits of a structure called `what`, identified by `magic` and `version`.
    pub(crate) const fn new(
        magic: u64,
        version: u32,
        what: &'static str,
        max_capacity: u32,
        max_message: u32,
    ) -> Limits {
        Limits {
            magic,
            version,
            what,
            max_capacity,
            max_message,
        }
    }
}

/// The geometry asked of a new structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    pub capacity: u32,
    pub max_message: u32,
    pub flags: u32,
    pub mode: u32,
}

/// A slotted structure: its header and slot types, and its [`Limits`].
///
/// # Safety
/// - `Header` and `Slot` are `#[repr(C)]`, made of integers and atomics only (valid for
///   every bit pattern), with an alignment of at most 64;
/// - `Header` starts with a [`Preamble`] followed by the creator's pid (`u32`, offset 40).
pub(crate) unsafe trait SlotLayout {
    /// The structure's header, at offset 0.
    type Header;
    /// The header of each slot; the message bytes follow it.
    type Slot;
    /// Magic, version, name and limits.
    const LIMITS: Limits;

    /// Byte offset of slot 0.
    fn slots_offset() -> usize {
        std::mem::size_of::<Self::Header>().next_multiple_of(64)
    }

    /// Size of one slot carrying messages of up to `max_message` bytes.
    fn slot_size(max_message: u32) -> usize {
        (std::mem::size_of::<Self::Slot>() + max_message as usize).next_multiple_of(64)
    }

    /// Bytes the structure occupies, or `None` if it is absurdly large.
    fn len(capacity: u32, max_message: u32) -> Option<usize> {
        Self::slot_size(max_message)
            .checked_mul(capacity as usize)?
            .checked_add(Self::slots_offset())
    }

    /// Checks a requested geometry: `(capacity, max message, bytes)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a capacity outside `1..=max_capacity`, a message larger
    /// than `max_message`, or a product too large to map.
    fn requested(capacity: usize, max_message: usize) -> Result<(u32, u32, usize)> {
        let limits = Self::LIMITS;
        let capacity = u32::try_from(capacity)
            .ok()
            .filter(|c| (1..=limits.max_capacity).contains(c))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{} capacity {capacity} is outside 1..={}",
                    limits.what, limits.max_capacity
                ))
            })?;
        let max_message = u32::try_from(max_message)
            .ok()
            .filter(|&m| m <= limits.max_message)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "maximum message size {max_message} exceeds {} bytes",
                    limits.max_message
                ))
            })?;
        let len = Self::len(capacity, max_message)
            .ok_or_else(|| Error::InvalidArgument("capacity x message size is too large".into()))?;
        Ok((capacity, max_message, len))
    }
}

/// Checks the magic and layout version every ipckit header starts with (a `u64` magic
/// stored last with Release, then a `u32` version).
///
/// # Errors
/// [`Error::Corrupt`] naming `object` if either is wrong.
///
/// # Safety
/// `base` is 8-byte aligned and valid for reads of 12 bytes.
pub(crate) unsafe fn check_identity(
    base: NonNull<u8>,
    magic: u64,
    version: u32,
    what: &str,
    object: &str,
) -> Result<()> {
    // SAFETY: the caller guarantees 12 readable aligned bytes: an AtomicU64 (any bits are
    // valid) and the u32 after it, read once.
    let (found, found_version) = unsafe {
        let ptr = base.as_ptr();
        (
            // SYNC: pairs with the Release store of the magic by the creator.
            (*(ptr as *const AtomicU64)).load(Ordering::Acquire),
            (ptr.add(8) as *const u32).read_volatile(),
        )
    };
    if found != magic {
        return Err(Error::corrupt(
            object,
            format!("bad magic {found:#x} (not an ipckit {what}, or not initialised)"),
        ));
    }
    if found_version != version {
        return Err(Error::corrupt(
            object,
            format!("layout version {found_version}, this ipckit reads version {version}"),
        ));
    }
    Ok(())
}

/// A validated slotted structure mapped at `base`: its geometry, copied out of shared memory
/// and checked against the mapping, and safe access to its header and slots.
#[derive(Debug)]
pub(crate) struct Slots<L> {
    base: NonNull<u8>,
    geometry: Geometry,
    layout: PhantomData<L>,
}

impl<L> Clone for Slots<L> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L> Copy for Slots<L> {}

impl<L: SlotLayout> Slots<L> {
    /// Initialises the structure in `len` zeroed bytes at `base`, stores the magic last, and
    /// attaches to it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a geometry outside the limits or larger than `len`.
    ///
    /// # Safety
    /// - `base` is 64-byte aligned, valid for reads and writes of `len` bytes for as long as
    ///   the returned `Slots` (and anything derived from it) is used, and zero-filled;
    /// - no other process uses the memory until this returns (the magic is written last).
    pub(crate) unsafe fn init(
        base: NonNull<u8>,
        len: usize,
        spec: Spec,
        object: &str,
    ) -> Result<Slots<L>> {
        let (capacity, max_message, needed) =
            L::requested(spec.capacity as usize, spec.max_message as usize)?;
        if needed > len {
            return Err(Error::InvalidArgument(format!(
                "{} needs {needed} bytes, the mapping has {len}",
                L::LIMITS.what
            )));
        }
        // SAFETY: aligned, valid for `len >= size_of::<Header>()` bytes and nobody else uses
        // it; the Header starts with a Preamble and the creator's pid (the trait's contract).
        let (preamble, creator_pid) = unsafe {
            let preamble = &mut *(base.as_ptr() as *mut Preamble);
            let pid = base.as_ptr().add(std::mem::size_of::<Preamble>()) as *mut u32;
            (preamble, &mut *pid)
        };
        *creator_pid = std::process::id();
        preamble.version = L::LIMITS.version;
        preamble.flags = spec.flags;
        preamble.capacity = capacity;
        preamble.slot_size = L::slot_size(max_message) as u32;
        preamble.max_message = max_message;
        preamble.mode = spec.mode;
        preamble.created_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // SYNC: pairs with the Acquire load of the magic in `check_identity`.
        preamble.magic.store(L::LIMITS.magic, Ordering::Release);
        // SAFETY: the caller's guarantees carry over.
        unsafe { Slots::attach(base, len, object) }
    }

    /// Attaches to an initialised structure, validating its preamble against the mapping.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `object`: a mapping too short, a wrong magic or version, an
    /// implausible geometry, or slots that do not fit in `len` bytes.
    ///
    /// # Safety
    /// `base` is 64-byte aligned and valid for reads and writes of `len` bytes for as long as
    /// the returned `Slots` is used. The bytes may be anything: they are validated.
    pub(crate) unsafe fn attach(base: NonNull<u8>, len: usize, object: &str) -> Result<Slots<L>> {
        let corrupt = |detail: String| Error::corrupt(object, detail);
        let limits = L::LIMITS;
        if len < L::slots_offset() {
            return Err(corrupt(format!(
                "a {} needs at least {} bytes, the segment has {len}",
                limits.what,
                L::slots_offset()
            )));
        }
        // SAFETY: len covers the header, which starts with the magic and version.
        unsafe { check_identity(base, limits.magic, limits.version, limits.what, object)? };
        // SAFETY: plain integer fields of the preamble, in bounds; read once, copied out.
        let (flags, capacity, slot_size, max_message, mode) = unsafe {
            let p = base.as_ptr() as *const Preamble;
            (
                std::ptr::addr_of!((*p).flags).read_volatile(),
                std::ptr::addr_of!((*p).capacity).read_volatile(),
                std::ptr::addr_of!((*p).slot_size).read_volatile(),
                std::ptr::addr_of!((*p).max_message).read_volatile(),
                std::ptr::addr_of!((*p).mode).read_volatile(),
            )
        };
        if !(1..=limits.max_capacity).contains(&capacity) || max_message > limits.max_message {
            return Err(corrupt(format!(
                "implausible geometry: capacity {capacity}, max message {max_message}"
            )));
        }
        if slot_size as usize != L::slot_size(max_message) {
            return Err(corrupt(format!(
                "slot size {slot_size} does not match max message {max_message}"
            )));
        }
        match L::len(capacity, max_message) {
            Some(needed) if needed <= len => {}
            _ => {
                return Err(corrupt(format!(
                    "{capacity} slots of {slot_size} bytes do not fit in {len} bytes"
                )))
            }
        }
        Ok(Slots {
            base,
            geometry: Geometry {
                capacity,
                slot_size: slot_size as usize,
                max_message,
                flags,
                mode,
            },
            layout: PhantomData,
        })
    }

    /// The validated geometry.
    #[inline]
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Where the structure starts.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The structure's header.
    #[inline]
    pub(crate) fn header(&self) -> &L::Header {
        // SAFETY: validated in `attach`: aligned, in bounds, any bit pattern valid.
        unsafe { &*(self.base.as_ptr() as *const L::Header) }
    }

    #[inline]
    fn slot_ptr(&self, pos: u64) -> *mut u8 {
        let index = (pos % self.geometry.capacity as u64) as usize;
        // SAFETY: index < capacity and capacity * slot_size + slots_offset() <= mapping length
        // (checked in `attach`), so the offset stays inside the mapping.
        unsafe {
            self.base
                .as_ptr()
                .add(L::slots_offset() + index * self.geometry.slot_size)
        }
    }

    /// The slot at `index` (`index < capacity`; a larger one is clamped to the last slot):
    /// for endpoints that keep the index of their position, so that no division is needed.
    #[inline]
    fn slot_ptr_at(&self, index: usize) -> *mut u8 {
        let index = index.min(self.geometry.capacity as usize - 1);
        // SAFETY: as in `slot_ptr`: index < capacity (clamped above; capacity >= 1).
        unsafe {
            self.base
                .as_ptr()
                .add(L::slots_offset() + index * self.geometry.slot_size)
        }
    }

    /// The header of the slot at `index` (see `slot_ptr_at`).
    #[inline]
    pub(crate) fn slot_at(&self, index: usize) -> &L::Slot {
        // SAFETY: as in `slot`.
        unsafe { &*(self.slot_ptr_at(index) as *const L::Slot) }
    }

    /// The message area of the slot at `index`: `max_message` bytes.
    #[inline]
    pub(crate) fn data_at(&self, index: usize) -> *mut u8 {
        // SAFETY: as in `data_ptr`.
        unsafe { self.slot_ptr_at(index).add(std::mem::size_of::<L::Slot>()) }
    }

    /// [`slot_at`](Slots::slot_at) and [`data_at`](Slots::data_at) at once (one address
    /// computation).
    #[inline]
    pub(crate) fn slot_and_data_at(&self, index: usize) -> (&L::Slot, *mut u8) {
        let slot = self.slot_ptr_at(index);
        // SAFETY: as in `slot` and `data_ptr`.
        unsafe {
            (
                &*(slot as *const L::Slot),
                slot.add(std::mem::size_of::<L::Slot>()),
            )
        }
    }

    /// The header of the slot of position `pos` (slot `pos % capacity`).
    #[inline]
    pub(crate) fn slot(&self, pos: u64) -> &L::Slot {
        // SAFETY: slot_ptr is in bounds and 64-byte aligned (slot_size and slots_offset are
        // multiples of 64); a slot header is valid for any bits (the trait's contract).
        unsafe { &*(self.slot_ptr(pos) as *const L::Slot) }
    }

    /// The message area of the slot of `pos`: `max_message` bytes.
    #[inline]
    pub(crate) fn data_ptr(&self, pos: u64) -> *mut u8 {
        // SAFETY: the slot holds size_of::<Slot>() + max_message bytes, inside the mapping.
        unsafe { self.slot_ptr(pos).add(std::mem::size_of::<L::Slot>()) }
    }
}

/// Implements `Deref<Target = [u8]>` (and, with `mut`, `DerefMut`) for a guard over a slot's
/// bytes through its `fn bytes(&self) -> (*mut u8, usize)`.
///
/// Contract: `bytes` returns `len` bytes of a slot's data area, inside a mapping the guard's
/// endpoint keeps alive, in a slot the guard holds for its lifetime (a loan: claimed for
/// writing, so nobody else writes it; a sample: claimed for reading, or located under the
/// topic's sequence lock). Other processes may still scribble on shared bytes: that changes
/// the message, never memory safety outside the slot.
macro_rules! slot_bytes {
    ($guard:ident) => {
        impl std::ops::Deref for $guard<'_> {
            type Target = [u8];
            fn deref(&self) -> &[u8] {
                let (ptr, len) = self.bytes();
                // SAFETY: `len` bytes of the slot this guard holds, inside a live mapping
                // (the macro's contract).
                unsafe { std::slice::from_raw_parts(ptr, len) }
            }
        }
    };
    (mut $guard:ident) => {
        $crate::shm::layout::slot_bytes!($guard);
        impl std::ops::DerefMut for $guard<'_> {
            fn deref_mut(&mut self) -> &mut [u8] {
                let (ptr, len) = self.bytes();
                // SAFETY: as in deref; `&mut self` makes this the only slice handed out.
                unsafe { std::slice::from_raw_parts_mut(ptr, len) }
            }
        }
    };
}
pub(crate) use slot_bytes;
