//! The sequence lock (seqlock) that guards each slot of a topic: one writer at a time
//! rewrites a slot while any number of readers copy it without taking a lock, and a reader
//! learns afterwards whether what it copied is whole.
//!
//! # Algorithm
//!
//! The classic seqlock with fences, as in Hans Boehm, "Can Seqlocks Get Along with
//! Programming Language Memory Models?" (MSPC 2012), with the stamp naming the message: a slot
//! carrying message `s` (a sequence number that never wraps) has the stamp
//!
//! - `2s+1` while message `s` is being written ([`begin_write`]: the odd stamp, then a
//!   Release fence, then the bytes),
//! - `2s+2` once it is complete ([`end_write`]: a Release store after the bytes),
//! - 0 if the slot was never written.
//!
//! A reader of message `s` loads the stamp with Acquire ([`read_begin`]) and goes on only if it
//! is `2s+2`; it copies the bytes, then issues an Acquire fence and loads the stamp again
//! ([`read_validate`]). If a writer started rewriting the slot meanwhile, the reader's copy saw
//! at least one of its bytes, so the fence pair makes the writer's odd stamp visible to the
//! second load, and the copy is rejected. Writers take turns by other means (the topic's
//! publish lock); this module is only the stamp protocol, generic over where the stamp and
//! the bytes live, so the loom models below run it on the heap.

use crate::sync::primitive::{fence, AtomicU64, Ordering};

/// The stamp of a slot while message `seq` is written into it.
#[inline(always)]
pub(crate) fn writing(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(1)
}

/// The stamp of a slot holding message `seq`, complete.
#[inline(always)]
pub(crate) fn complete(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(2)
}

/// Marks the slot of `stamp` as being rewritten with message `seq`. Write the bytes after
/// this, then call [`end_write`]. The caller is the only writer of the slot.
#[inline(always)]
pub(crate) fn begin_write(stamp: &AtomicU64, seq: u64) {
    stamp.store(writing(seq), Ordering::Relaxed);
    // SYNC: orders the odd stamp before the bytes written next; pairs with the Acquire fence
    // in `read_validate`.
    fence(Ordering::Release);
}

/// Marks message `seq` complete: its bytes (written since [`begin_write`]) become readable.
#[inline(always)]
pub(crate) fn end_write(stamp: &AtomicU64, seq: u64) {
    // SYNC: pairs with the Acquire load in `read_begin`.
    stamp.store(complete(seq), Ordering::Release);
}

/// A reader's first look: the stamp now. The message `seq` is there to copy only if this
/// equals [`complete(seq)`](complete).
#[inline(always)]
pub(crate) fn read_begin(stamp: &AtomicU64) -> u64 {
    // SYNC: pairs with the Release store in `end_write`.
    stamp.load(Ordering::Acquire)
}

/// A reader's second look, after copying message `seq`'s bytes: true if the copy is whole
/// (no writer touched the slot since [`read_begin`] returned `complete(seq)`).
#[inline(always)]
pub(crate) fn read_validate(stamp: &AtomicU64, seq: u64) -> bool {
    // SYNC: orders the reads of the bytes before the stamp check; pairs with the Release
    // fence in `begin_write`.
    fence(Ordering::Acquire);
    stamp.load(Ordering::Relaxed) == complete(seq)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn stamps_name_the_message_and_its_state() {
        let stamp = AtomicU64::new(0);
        assert_ne!(
            read_begin(&stamp),
            complete(0),
            "a fresh slot holds nothing"
        );
        begin_write(&stamp, 7);
        assert_eq!(read_begin(&stamp), writing(7));
        assert!(!read_validate(&stamp, 7));
        end_write(&stamp, 7);
        assert_eq!(read_begin(&stamp), complete(7));
        assert!(read_validate(&stamp, 7));
        begin_write(&stamp, 8);
        assert!(
            !read_validate(&stamp, 7),
            "a rewrite invalidates the older copy"
        );
    }
}

/// The stamp protocol under loom: a writer rewrites one slot twice while a reader copies it;
/// every copy the reader accepts must be a whole message, never a mix of two. The bytes are
/// relaxed atomics so that loom tracks which write each read sees.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    struct Slot {
        stamp: AtomicU64,
        bytes: [AtomicU64; 2],
    }

    fn write(slot: &Slot, seq: u64) {
        begin_write(&slot.stamp, seq);
        for byte in &slot.bytes {
            byte.store(seq + 100, Ordering::Relaxed);
        }
        end_write(&slot.stamp, seq);
    }

    /// Tries to read message `seq` once; `Some(copy)` if the copy was validated.
    fn read(slot: &Slot, seq: u64) -> Option<[u64; 2]> {
        if read_begin(&slot.stamp) != complete(seq) {
            return None;
        }
        let copy = [
            slot.bytes[0].load(Ordering::Relaxed),
            slot.bytes[1].load(Ordering::Relaxed),
        ];
        read_validate(&slot.stamp, seq).then_some(copy)
    }

    #[test]
    fn an_accepted_copy_is_never_torn() {
        loom::model(|| {
            let slot = Arc::new(Slot {
                stamp: AtomicU64::new(0),
                bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            });
            write(&slot, 0);
            let writer = {
                let slot = slot.clone();
                thread::spawn(move || write(&slot, 1))
            };
            for seq in [0, 1] {
                if let Some(copy) = read(&slot, seq) {
                    assert_eq!(copy, [seq + 100, seq + 100], "torn copy of message {seq}");
                }
            }
            writer.join().unwrap();
            assert_eq!(read(&slot, 1), Some([101, 101]));
        });
    }
}
