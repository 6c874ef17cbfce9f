//! The ring's tests: unit tests on a ring in heap memory, a property test against a
//! `VecDeque` model, and the loom models of the claim, cursor and idempotent protocols.
use super::*;
use std::alloc::{alloc_zeroed, dealloc, Layout};

/// A ring on the heap, for testing the algorithm without a segment.
pub(crate) struct HeapRing {
    pub ring: Ring,
    ptr: NonNull<u8>,
    layout: Layout,
}

impl HeapRing {
    pub(crate) fn new(capacity: u32, max_message: u32) -> HeapRing {
        let len = ring_len(capacity, max_message).unwrap();
        let layout = Layout::from_size_align(len, 64).unwrap();
        // SAFETY: layout has non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
        #[cfg(loom)]
        // SAFETY: fresh allocation of `len` bytes, aligned to 64, nobody else sees it.
        unsafe {
            construct_atomics(ptr, capacity, max_message)
        };
        let spec = Spec {
            capacity,
            max_message,
            flags: 0,
            mode: 0o600,
        };
        // SAFETY: fresh zeroed allocation of `len` bytes, aligned to 64, freed in Drop
        // after the ring.
        let ring = unsafe { Ring::init(ptr, len, spec, "heap") }.unwrap();
        HeapRing { ring, ptr, layout }
    }
}

/// Loom's atomics are objects registered with the model checker, not plain integers:
/// zeroed bytes are not valid ones, so under loom every atomic of the header and of each
/// slot header is constructed in place (with the value zero, as in a fresh segment).
///
/// # Safety
/// `base` is valid for writes of `ring_len(capacity, max_message)` bytes, 64-byte aligned.
#[cfg(loom)]
unsafe fn construct_atomics(base: NonNull<u8>, capacity: u32, max_message: u32) {
    let header = RingHeader {
        preamble: Preamble {
            magic: AtomicU64::new(0),
            version: 0,
            flags: 0,
            capacity: 0,
            slot_size: 0,
            max_message: 0,
            mode: 0,
            created_unix_ns: 0,
        },
        creator_pid: 0,
        chain_next: AtomicU32::new(0),
        chain_head: AtomicU32::new(0),
        chain_tail: AtomicU32::new(0),
        sole_sender: AtomicU32::new(0),
        sole_receiver: AtomicU32::new(0),
        _reserved: [0; 2],
        tail: Padded(AtomicU64::new(0)),
        head: Padded(AtomicU64::new(0)),
        not_empty: Padded(WaitWord::new()),
        not_full: Padded(WaitWord::new()),
        participants: std::array::from_fn(|_| ParticipantEntry {
            pid: AtomicU32::new(0),
            role: AtomicU32::new(0),
            start_time: AtomicU64::new(0),
        }),
        sources: std::array::from_fn(|_| SourceEntry::new()),
    };
    // SAFETY: (caller) in bounds and aligned for a RingHeader.
    unsafe { std::ptr::write(base.as_ptr() as *mut RingHeader, header) };
    for index in 0..capacity as usize {
        let slot = SlotHeader {
            word: AtomicU64::new(0),
            len: AtomicU32::new(0),
            sender_pid: AtomicU32::new(0),
            sender_uid: AtomicU32::new(0),
            published: AtomicU32::new(0),
            sequence: AtomicU64::new(0),
        };
        // SAFETY: slot `index` lies inside the ring (ring_len) and is 64-byte aligned.
        unsafe {
            let at = base
                .as_ptr()
                .add(RingLayout::slots_offset() + index * RingLayout::slot_size(max_message));
            std::ptr::write(at as *mut SlotHeader, slot)
        };
    }
}

// SAFETY: the allocation is owned by the HeapRing and only accessed through the ring,
// which is itself Send + Sync.
unsafe impl Send for HeapRing {}
// SAFETY: as above.
unsafe impl Sync for HeapRing {}

impl Drop for HeapRing {
    fn drop(&mut self) {
        #[cfg(loom)]
        // SAFETY: constructed in `new`; dropped once, here, before the memory is freed.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr() as *mut RingHeader);
            for index in 0..self.ring.geometry().capacity as u64 {
                std::ptr::drop_in_place(
                    self.ring.slot(index) as *const SlotHeader as *mut SlotHeader
                );
            }
        }
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

fn got(claim: Claim) -> u64 {
    match claim {
        Claim::Got(pos) => pos,
        other => panic!("expected a claim, got {other:?}"),
    }
}

/// tests/neighbour_hangs.rs scribbles the sleeper count of `not_empty` at this offset.
#[test]
#[cfg(not(loom))]
fn the_wait_words_sit_where_the_layout_says() {
    assert_eq!(std::mem::offset_of!(RingHeader, not_empty), 256);
    assert_eq!(std::mem::offset_of!(RingHeader, not_full), 320);
    assert_eq!(std::mem::size_of::<WaitWord>(), 8);
}

#[test]
fn word_round_trips() {
    for state in [
        SlotState::Empty,
        SlotState::Writing,
        SlotState::Full,
        SlotState::Reading,
    ] {
        let raw = Word::encode(u32::MAX, state, 4_194_304);
        assert_eq!(
            Word::decode(raw),
            Word {
                lap: u32::MAX,
                state,
                pid: 4_194_304
            }
        );
    }
}

#[test]
fn fills_drains_and_wraps() {
    let heap = HeapRing::new(4, 8);
    let ring = &heap.ring;
    for round in 0..3u64 {
        for i in 0..4 {
            let pos = got(ring.claim_write(1).unwrap());
            assert_eq!(pos, round * 4 + i);
            ring.publish(pos);
        }
        assert_eq!(
            ring.claim_write(1).unwrap(),
            Claim::Blocked { blocker: None }
        );
        for i in 0..4 {
            let pos = got(ring.claim_read(2).unwrap());
            assert_eq!(pos, round * 4 + i);
            ring.release(pos);
        }
        assert_eq!(
            ring.claim_read(2).unwrap(),
            Claim::Blocked { blocker: None }
        );
    }
}

#[test]
fn a_writer_in_progress_blocks_readers_and_names_itself() {
    let heap = HeapRing::new(2, 8);
    let ring = &heap.ring;
    let pos = got(ring.claim_write(77).unwrap());
    assert_eq!(
        ring.claim_read(2).unwrap(),
        Claim::Blocked {
            blocker: Some((77, pos))
        }
    );
    // The writer dies: its slot is reclaimed and the position skipped.
    assert!(
        !ring.reclaim(pos, 78),
        "only the named owner's slot is reclaimed"
    );
    assert!(ring.reclaim(pos, 77));
    let next = got(ring.claim_write(1).unwrap());
    ring.publish(next);
    assert_eq!(got(ring.claim_read(2).unwrap()), next);
}

#[test]
fn retract_wins_only_before_a_reader() {
    let heap = HeapRing::new(1, 8);
    let ring = &heap.ring;
    let pos = got(ring.claim_write(1).unwrap());
    ring.publish(pos);
    assert!(ring.retract(pos));
    assert_eq!(
        ring.claim_read(2).unwrap(),
        Claim::Blocked { blocker: None }
    );
    let pos = got(ring.claim_write(1).unwrap());
    ring.publish(pos);
    assert_eq!(got(ring.claim_read(2).unwrap()), pos);
    assert!(!ring.retract(pos));
}

#[test]
fn many_skipped_laps_in_a_row_do_not_confuse_the_head() {
    let heap = HeapRing::new(1, 8);
    let ring = &heap.ring;
    for _ in 0..5 {
        let pos = got(ring.claim_write(1).unwrap());
        ring.publish(pos);
        assert!(ring.retract(pos));
    }
    // And with the head hint left behind on purpose.
    ring.header().head.0.store(2, Ordering::Relaxed);
    let pos = got(ring.claim_write(1).unwrap());
    ring.publish(pos);
    assert_eq!(got(ring.claim_read(2).unwrap()), pos);
}

#[test]
fn a_dead_reader_in_the_previous_lap_is_named_with_its_position() {
    let heap = HeapRing::new(2, 8);
    let ring = &heap.ring;
    for _ in 0..2 {
        let pos = got(ring.claim_write(1).unwrap());
        ring.publish(pos);
    }
    let held = got(ring.claim_read(66).unwrap());
    let blocker = match ring.claim_write(1).unwrap() {
        Claim::Blocked { blocker } => blocker,
        other => panic!("{other:?}"),
    };
    assert_eq!(blocker, Some((66, held)));
    assert!(ring.reclaim(held, 66));
    assert!(matches!(ring.claim_write(1).unwrap(), Claim::Got(_)));
}

/// Records in source 0 that `seq` is in flight at `pos`, committed or not.
fn in_flight(ring: &Ring, pos: u64, seq: u64, committed: bool) {
    let entry = ring.source(0).unwrap();
    entry.pending_seq.store(seq, Ordering::Relaxed);
    entry.pending_pos.store(pos + 1, Ordering::Release);
    let next = if committed { seq + 1 } else { seq };
    entry.committed.store(next, Ordering::Release);
}

#[test]
fn a_reclaim_publishes_a_committed_dead_write_and_drops_an_uncommitted_one() {
    let heap = HeapRing::new(4, 8);
    let ring = &heap.ring;
    let committed = got(ring.claim_write(77).unwrap());
    in_flight(ring, committed, 5, true);
    let uncommitted = got(ring.claim_write(78).unwrap());
    assert!(ring.reclaim(committed, 77), "published");
    assert_eq!(got(ring.claim_read(2).unwrap()), committed);
    ring.release(committed);
    in_flight(ring, uncommitted, 6, false);
    assert!(ring.reclaim(uncommitted, 78), "dropped");
    assert_eq!(
        ring.claim_read(2).unwrap(),
        Claim::Blocked { blocker: None }
    );
}

#[test]
fn a_committed_record_of_another_position_does_not_publish() {
    let heap = HeapRing::new(4, 8);
    let ring = &heap.ring;
    let earlier = got(ring.claim_write(1).unwrap());
    ring.publish(earlier);
    // The source committed `earlier`; a writer that died right after claiming the next
    // position is dropped even though the record says "committed".
    in_flight(ring, earlier, 3, true);
    let dead = got(ring.claim_write(77).unwrap());
    assert!(ring.reclaim(dead, 77));
    assert_eq!(got(ring.claim_read(2).unwrap()), earlier);
    ring.release(earlier);
    assert_eq!(
        ring.claim_read(2).unwrap(),
        Claim::Blocked { blocker: None }
    );
}

#[test]
fn a_record_names_its_ring_of_the_chain_and_a_rewrite_in_progress_publishes_nothing() {
    let mut heap = HeapRing::new(4, 8);
    // Ring 1 of a chain whose table is its own (as a root's would be).
    heap.ring.chain = 1;
    let ring = &heap.ring;
    let entry = ring.source(0).unwrap();
    // A committed send at the same position of another ring (positions restart in each
    // ring): a dead write here is not it, and is dropped.
    let dead = got(ring.claim_write(77).unwrap());
    entry.record_pending(2, dead, 5);
    entry.committed.store(6, Ordering::Release);
    assert!(!ring.committed_at(dead));
    // The same record, rewritten for this ring: a rewrite left half done (odd stamp) is
    // not trusted, a finished one is.
    entry.record_pending(1, dead, 5);
    assert!(ring.committed_at(dead));
    let stamp = entry.begin_rewrite();
    assert!(!ring.committed_at(dead), "an odd stamp");
    entry.end_rewrite(stamp);
    assert!(ring.committed_at(dead));
    assert_eq!(entry.stamp.load(Ordering::Relaxed) % 2, 0);
    // `resolve_pending` on a ring the record does not name only clears it.
    entry.record_pending(2, dead, 5);
    ring.resolve_pending(0);
    assert_eq!(entry.pending_pos.load(Ordering::Acquire), 0);
    assert!(ring.reclaim(dead, 77), "dropped");
    assert_eq!(
        ring.claim_read(2).unwrap(),
        Claim::Blocked { blocker: None }
    );
    // And on the ring it names, publishes a committed one.
    let pos = got(ring.claim_write(78).unwrap());
    entry.record_pending(1, pos, 6);
    entry.committed.store(7, Ordering::Release);
    ring.resolve_pending(0);
    assert_eq!(got(ring.claim_read(2).unwrap()), pos);
}

#[test]
fn a_new_owner_resolves_the_dead_owners_send_in_flight() {
    let heap = HeapRing::new(4, 8);
    let ring = &heap.ring;
    let pos = got(ring.claim_write(77).unwrap());
    in_flight(ring, pos, 9, true);
    ring.resolve_pending(0);
    assert_eq!(
        ring.source(0).unwrap().pending_pos.load(Ordering::Acquire),
        0
    );
    assert_eq!(got(ring.claim_read(2).unwrap()), pos);
    ring.release(pos);
    let pos = got(ring.claim_write(77).unwrap());
    in_flight(ring, pos, 10, false);
    ring.resolve_pending(0);
    // Dropped: the slot went to the next lap, a reclaim finds nothing more to do.
    assert!(!ring.reclaim(pos, 77));
    assert_eq!(
        ring.claim_read(2).unwrap(),
        Claim::Blocked { blocker: None }
    );
    // Nothing in flight, or a scribbled position: nothing happens, nothing panics.
    ring.resolve_pending(0);
    ring.source(0)
        .unwrap()
        .pending_pos
        .store(u64::MAX, Ordering::Relaxed);
    ring.source(0)
        .unwrap()
        .committed
        .store(u64::MAX, Ordering::Relaxed);
    ring.resolve_pending(0);
    ring.resolve_pending(usize::MAX);
}

#[test]
fn a_sole_sender_settles_a_published_but_uncommitted_send() {
    let heap = HeapRing::new(4, 8);
    let ring = &heap.ring;
    // Slot words (a single sender among many receivers): published, then killed.
    let mut next = 0;
    let pos = got(ring.claim_write_single(&mut next).unwrap());
    in_flight(ring, pos, 4, false);
    ring.publish(pos);
    ring.settle_sources(false);
    let entry = ring.source(0).unwrap();
    assert_eq!(entry.committed.load(Ordering::Acquire), 5);
    assert_eq!(entry.pending_pos.load(Ordering::Acquire), 0);
    // Killed before publishing: not committed.
    next = pos + 1;
    let pos = got(ring.claim_write_single(&mut next).unwrap());
    in_flight(ring, pos, 5, false);
    ring.settle_sources(false);
    assert_eq!(entry.committed.load(Ordering::Acquire), 5);
    // Consumed meanwhile (the next lap's EMPTY) still counts as published.
    in_flight(ring, 0, 4, false);
    assert_eq!(got(ring.claim_read(2).unwrap()), 0);
    ring.release(0);
    ring.settle_sources(false);
    assert_eq!(entry.committed.load(Ordering::Acquire), 5);
    // The cursor protocol: published means below the tail.
    in_flight(ring, 7, 8, false);
    ring.header().tail.0.store(7, Ordering::Release);
    ring.settle_sources(true);
    assert_eq!(entry.committed.load(Ordering::Acquire), 8);
    in_flight(ring, 7, 8, false);
    ring.header().tail.0.store(8, Ordering::Release);
    ring.settle_sources(true);
    assert_eq!(entry.committed.load(Ordering::Acquire), 9);
}

#[test]
fn a_cursor_receiver_takes_a_message_by_its_mark_and_falls_back_to_the_tail() {
    let heap = HeapRing::new(2, 8);
    let ring = &heap.ring;
    let (mut tx, mut rx) = (ring.cursor(0), ring.cursor(0));
    assert!(!ring.cursor_ready_read(&mut rx));
    assert!(ring.cursor_claim_write(&mut tx).unwrap());
    ring.cursor_publish(&mut tx);
    // Seen by the slot's mark: the fast claim never reads the tail.
    assert_eq!(ring.slot_at(0).published.load(Ordering::Acquire), 1);
    assert!(ring.cursor_ready_read(&mut rx));
    ring.cursor_release(&mut rx);
    // A sender killed between the tail and the mark (or one from before the mark): the fast
    // claim misses the message, the general claim finds it by the tail.
    assert!(ring.cursor_claim_write(&mut tx).unwrap());
    tx.advance(2);
    ring.header().tail.0.store(tx.pos, Ordering::Release);
    assert!(!ring.cursor_ready_read(&mut rx));
    assert!(ring.cursor_claim_read(&mut rx).unwrap());
    ring.cursor_release(&mut rx);
    // Position 2 is slot 0 again, which still carries position 0's mark: not published.
    assert!(!ring.cursor_ready_read(&mut rx));
    assert!(!ring.cursor_claim_read(&mut rx).unwrap());
    assert!(ring.cursor_claim_write(&mut tx).unwrap());
    ring.cursor_publish(&mut tx);
    assert!(ring.cursor_ready_read(&mut rx));
    ring.cursor_release(&mut rx);
    // A mark wraps with the 32-bit counter but never repeats within a lap.
    assert_eq!(published_mark(u64::from(u32::MAX)), 0);
    assert_ne!(
        published_mark(u64::from(u32::MAX) - 2),
        published_mark(u64::from(u32::MAX))
    );
}

#[test]
fn a_scribbled_mark_costs_one_bogus_message_then_contradicts_the_tail() {
    let heap = HeapRing::new(4, 8);
    let ring = &heap.ring;
    let mut rx = ring.cursor(0);
    // Nothing was published (the tail is 0), but the slot says position 0 was.
    ring.slot_at(0)
        .published
        .store(published_mark(0), Ordering::Release);
    assert!(
        ring.cursor_ready_read(&mut rx),
        "the fast claim trusts the mark"
    );
    ring.cursor_release(&mut rx);
    // The receiver is now past the tail: the general claim says so instead of waiting.
    assert!(!ring.cursor_ready_read(&mut rx));
    assert!(matches!(
        ring.cursor_claim_read(&mut rx),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn scribbled_indices_are_corrupt_not_a_hang() {
    let heap = HeapRing::new(4, 8);
    let ring = &heap.ring;
    ring.header()
        .tail
        .0
        .store(0xdead_beef_0000, Ordering::Relaxed);
    ring.header()
        .head
        .0
        .store(0x1234_5678_9abc, Ordering::Relaxed);
    assert!(matches!(ring.claim_write(1), Err(Error::Corrupt { .. })));
    assert!(matches!(ring.claim_read(1), Err(Error::Corrupt { .. })));
}

#[test]
fn attach_rejects_bad_headers() {
    let heap = HeapRing::new(4, 8);
    let len = ring_len(4, 8).unwrap();
    // SAFETY: same allocation, still alive.
    let attach = |l| unsafe { Ring::attach(heap.ptr, l, "heap") };
    assert!(attach(len).is_ok());
    assert!(matches!(attach(len - 1), Err(Error::Corrupt { .. })));
    assert!(matches!(attach(16), Err(Error::Corrupt { .. })));
    // SAFETY: writing the header's capacity field of our own allocation.
    unsafe { (*(heap.ptr.as_ptr() as *mut RingHeader)).preamble.capacity = 1 << 30 };
    assert!(matches!(attach(len), Err(Error::Corrupt { .. })));
}

#[test]
fn threads_deliver_every_item_exactly_once() {
    let heap = std::sync::Arc::new(HeapRing::new(8, 8));
    const PER_PRODUCER: u64 = 20_000;
    let producers: Vec<_> = (0..2u64)
        .map(|id| {
            let heap = heap.clone();
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let value = id * PER_PRODUCER + i;
                    loop {
                        if let Claim::Got(pos) = heap.ring.claim_write(1).unwrap() {
                            // SAFETY: we own the slot; 8 bytes fit in max_message.
                            unsafe { (heap.ring.data_ptr(pos) as *mut u64).write_unaligned(value) };
                            heap.ring.publish(pos);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
            })
        })
        .collect();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let heap = heap.clone();
            let taken = taken.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while taken.load(Ordering::Relaxed) < 2 * PER_PRODUCER {
                    if let Claim::Got(pos) = heap.ring.claim_read(2).unwrap() {
                        taken.fetch_add(1, Ordering::Relaxed);
                        // SAFETY: we own the slot for reading.
                        seen.push(unsafe {
                            (heap.ring.data_ptr(pos) as *const u64).read_unaligned()
                        });
                        heap.ring.release(pos);
                    } else {
                        std::hint::spin_loop();
                    }
                }
                seen
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<u64> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..2 * PER_PRODUCER).collect::<Vec<_>>());
}

/// The ring against a model built on a `VecDeque`: random sends, receives, loans
/// (published or dropped) and in-place reads (held, then dropped), one thread. The model
/// keeps every position from the oldest unfinished one to the tail with its state, which
/// says what the ring must answer: a claim is refused exactly when the slot still holds
/// the previous lap's position, a receive returns the oldest published message unless a
/// message still being written comes first, and every message arrives once, intact.
#[cfg(not(loom))]
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum State {
        Writing,
        Full(u64),
        Reading(u64),
        Done,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send,
        Recv,
        Loan,
        PublishLoan(usize),
        DropLoan(usize),
        ReadInPlace,
        DropInPlace(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Send),
            3 => Just(Op::Recv),
            1 => Just(Op::Loan),
            1 => any::<usize>().prop_map(Op::PublishLoan),
            1 => any::<usize>().prop_map(Op::DropLoan),
            1 => Just(Op::ReadInPlace),
            1 => any::<usize>().prop_map(Op::DropInPlace),
        ]
    }

    struct Model {
        capacity: u64,
        /// Position of the front entry of `slots`.
        base: u64,
        /// The state of every position from `base` to the tail.
        slots: VecDeque<State>,
    }

    impl Model {
        fn tail(&self) -> u64 {
            self.base + self.slots.len() as u64
        }

        fn state(&self, pos: u64) -> State {
            if pos < self.base {
                State::Done
            } else {
                self.slots[(pos - self.base) as usize]
            }
        }

        fn set(&mut self, pos: u64, state: State) {
            self.slots[(pos - self.base) as usize] = state;
            while self.slots.front() == Some(&State::Done) {
                self.slots.pop_front();
                self.base += 1;
            }
        }

        /// What `claim_write` must answer.
        fn claim_write(&mut self) -> Claim {
            let tail = self.tail();
            if tail >= self.capacity {
                let held = tail - self.capacity;
                match self.state(held) {
                    State::Done => {}
                    // The writer is pid 1, the reader pid 2.
                    State::Writing => {
                        return Claim::Blocked {
                            blocker: Some((1, held)),
                        }
                    }
                    State::Reading(_) => {
                        return Claim::Blocked {
                            blocker: Some((2, held)),
                        }
                    }
                    State::Full(_) => return Claim::Blocked { blocker: None },
                }
            }
            self.slots.push_back(State::Writing);
            Claim::Got(tail)
        }

        /// What `claim_read` must answer.
        fn claim_read(&mut self) -> Claim {
            for pos in self.base..self.tail() {
                match self.state(pos) {
                    State::Done | State::Reading(_) => continue,
                    State::Writing => {
                        return Claim::Blocked {
                            blocker: Some((1, pos)),
                        }
                    }
                    State::Full(value) => {
                        self.set(pos, State::Reading(value));
                        return Claim::Got(pos);
                    }
                }
            }
            Claim::Blocked { blocker: None }
        }
    }

    fn write(ring: &Ring, pos: u64, value: u64) {
        // SAFETY: we own the slot of `pos` for writing; 8 bytes fit in max_message.
        unsafe { (ring.data_ptr(pos) as *mut u64).write_unaligned(value) };
    }

    fn read(ring: &Ring, pos: u64) -> u64 {
        // SAFETY: we own the slot of `pos` for reading; 8 bytes fit in max_message.
        unsafe { (ring.data_ptr(pos) as *const u64).read_unaligned() }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_ring_behaves_as_its_vecdeque_model(
            capacity in 1u32..5,
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let heap = HeapRing::new(capacity, 8);
            let ring = &heap.ring;
            let mut model = Model { capacity: capacity as u64, base: 0, slots: VecDeque::new() };
            let mut loans: Vec<u64> = Vec::new();
            let mut in_place: Vec<(u64, u64)> = Vec::new();
            let mut next_value = 1000u64;
            let mut sent: Vec<u64> = Vec::new();
            let mut received: Vec<u64> = Vec::new();
            let mut positions: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Send | Op::Loan => {
                        let claim = ring.claim_write(1).unwrap();
                        prop_assert_eq!(claim, model.claim_write());
                        if let Claim::Got(pos) = claim {
                            if matches!(op, Op::Send) {
                                next_value += 1;
                                write(ring, pos, next_value);
                                ring.publish(pos);
                                model.set(pos, State::Full(next_value));
                                sent.push(next_value);
                            } else {
                                loans.push(pos);
                            }
                        }
                    }
                    Op::PublishLoan(i) | Op::DropLoan(i) if !loans.is_empty() => {
                        let pos = loans.remove(i % loans.len());
                        if matches!(op, Op::PublishLoan(_)) {
                            next_value += 1;
                            write(ring, pos, next_value);
                            ring.publish(pos);
                            model.set(pos, State::Full(next_value));
                            sent.push(next_value);
                        } else {
                            ring.release(pos);
                            model.set(pos, State::Done);
                        }
                    }
                    Op::Recv | Op::ReadInPlace => {
                        let claim = ring.claim_read(2).unwrap();
                        prop_assert_eq!(claim, model.claim_read());
                        if let Claim::Got(pos) = claim {
                            let State::Reading(value) = model.state(pos) else {
                                unreachable!("the model just marked it read")
                            };
                            prop_assert_eq!(read(ring, pos), value);
                            received.push(value);
                            positions.push(pos);
                            if matches!(op, Op::Recv) {
                                ring.release(pos);
                                model.set(pos, State::Done);
                            } else {
                                in_place.push((pos, value));
                            }
                        }
                    }
                    Op::DropInPlace(i) if !in_place.is_empty() => {
                        let (pos, value) = in_place.remove(i % in_place.len());
                        prop_assert_eq!(read(ring, pos), value, "held in place, unchanged");
                        ring.release(pos);
                        model.set(pos, State::Done);
                    }
                    _ => {}
                }
            }
            // Give back what is still held, then drain: every message published arrives
            // exactly once, in position order.
            for pos in loans {
                ring.release(pos);
                model.set(pos, State::Done);
            }
            for (pos, _) in in_place {
                ring.release(pos);
                model.set(pos, State::Done);
            }
            loop {
                let claim = ring.claim_read(2).unwrap();
                prop_assert_eq!(claim, model.claim_read());
                let Claim::Got(pos) = claim else { break };
                received.push(read(ring, pos));
                ring.release(pos);
                model.set(pos, State::Done);
            }
            prop_assert!(model.slots.is_empty());
            prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "{:?}", positions);
            received.sort_unstable();
            sent.sort_unstable();
            prop_assert_eq!(received, sent);
        }
    }
}

/// The ring's claims, publish and release under loom, with waiters sleeping through the
/// real `wait_for` (strategy `Sleep`, so every wait goes through the Event's announce /
/// re-check / sleep, and every change through `notify_sleepers`). A lost wake-up leaves a
/// thread blocked forever, which loom reports; the message is carried in the slot's
/// `sequence` atomic (Relaxed), so a missing Release/Acquire pairing on the slot word
/// shows as a stale value.
#[cfg(loom)]
mod loom_models {
    use super::*;
    use crate::link::Deadline;
    use crate::shm::wait::{wait_for, Attempt, WaitStrategy};
    use loom::sync::Arc;
    use loom::thread;

    fn outcome(claim: Claim) -> std::result::Result<u64, bool> {
        match claim {
            Claim::Got(pos) => Ok(pos),
            Claim::Blocked { .. } => Err(false),
        }
    }

    fn wait(ring: &Ring, on: &WaitWord, attempt: impl FnMut(bool) -> Attempt<u64>) -> u64 {
        wait_for(
            WaitStrategy::Sleep,
            on,
            Deadline::Never,
            Error::Timeout,
            attempt,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", ring.object))
    }

    fn send(ring: &Ring, value: u64) {
        let pos = wait(ring, &ring.waits().not_full.0, |_| {
            Ok(outcome(ring.claim_write(1)?))
        });
        ring.slot(pos).sequence.store(value, Ordering::Relaxed);
        ring.publish(pos);
    }

    fn recv(ring: &Ring) -> u64 {
        let pos = wait(ring, &ring.waits().not_empty.0, |_| {
            Ok(outcome(ring.claim_read(2)?))
        });
        let value = ring.slot(pos).sequence.load(Ordering::Relaxed);
        ring.release(pos);
        value
    }

    #[test]
    fn a_full_ring_and_an_empty_one_wake_their_waiters() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(1, 8));
            let producer = {
                let heap = heap.clone();
                thread::spawn(move || {
                    send(&heap.ring, 11);
                    send(&heap.ring, 12);
                })
            };
            assert_eq!(recv(&heap.ring), 11);
            assert_eq!(recv(&heap.ring), 12);
            producer.join().unwrap();
        });
    }

    #[test]
    fn a_cancelled_loan_is_skipped_and_the_next_message_arrives() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(1, 8));
            let producer = {
                let heap = heap.clone();
                thread::spawn(move || {
                    let ring = &heap.ring;
                    let loan = wait(ring, &ring.waits().not_full.0, |_| {
                        Ok(outcome(ring.claim_write(1)?))
                    });
                    ring.release(loan);
                    send(ring, 21);
                })
            };
            assert_eq!(recv(&heap.ring), 21);
            producer.join().unwrap();
        });
    }

    #[test]
    fn the_single_sender_and_receiver_paths_hand_over_in_order() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(1, 8));
            let producer = {
                let heap = heap.clone();
                thread::spawn(move || {
                    let ring = &heap.ring;
                    let mut next = 0;
                    for value in [31, 32] {
                        let pos = wait(ring, &ring.waits().not_full.0, |_| {
                            Ok(outcome(ring.claim_write_single(&mut next)?))
                        });
                        ring.slot(pos).sequence.store(value, Ordering::Relaxed);
                        ring.publish(pos);
                        next = pos + 1;
                    }
                })
            };
            let ring = &heap.ring;
            let mut next = 0;
            for expected in [31, 32] {
                let pos = wait(ring, &ring.waits().not_empty.0, |_| {
                    Ok(outcome(ring.claim_read_single(&mut next)?))
                });
                assert_eq!(ring.slot(pos).sequence.load(Ordering::Relaxed), expected);
                ring.release_single(pos);
                next = pos + 1;
            }
            producer.join().unwrap();
        });
    }

    /// Waits on a cursor ring as the endpoints do: `wait_for_asymmetric`, whose sleeper
    /// runs the heavy barrier after announcing itself (a `fence(SeqCst)` under loom, as
    /// is the notifier's light barrier: loom has no asymmetric fences).
    fn wait_cursor(
        ring: &Ring,
        on: &WaitWord,
        cursor: &mut Cursor,
        claim: fn(&Ring, &mut Cursor) -> Result<bool>,
    ) {
        crate::shm::wait::wait_for_asymmetric(
            WaitStrategy::Sleep,
            on,
            Deadline::Never,
            Error::Timeout,
            |_| {
                Ok(if claim(ring, cursor)? {
                    Ok(())
                } else {
                    Err(false)
                })
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", ring.object))
    }

    /// Issue 14: the cursor protocol. A one-slot ring and two messages make the
    /// receiver wait on an empty ring and the sender on a full one; the message rides in
    /// the slot's `sequence` (Relaxed), so a missing Release/Acquire pairing on a cursor
    /// shows as a stale value, and a lost wake-up as a thread blocked forever.
    #[test]
    fn the_cursor_protocol_hands_over_in_order_and_wakes_its_sleepers() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(1, 8));
            let producer = {
                let heap = heap.clone();
                thread::spawn(move || {
                    let ring = &heap.ring;
                    let mut cursor = ring.cursor(0);
                    for value in [51, 52] {
                        wait_cursor(
                            ring,
                            &ring.waits().not_full.0,
                            &mut cursor,
                            Ring::cursor_claim_write,
                        );
                        let slot = ring.slot_at(cursor.index);
                        slot.sequence.store(value, Ordering::Relaxed);
                        ring.cursor_publish(&mut cursor);
                    }
                })
            };
            let ring = &heap.ring;
            let mut cursor = ring.cursor(0);
            for expected in [51, 52] {
                wait_cursor(
                    ring,
                    &ring.waits().not_empty.0,
                    &mut cursor,
                    Ring::cursor_claim_read,
                );
                let value = ring.slot_at(cursor.index).sequence.load(Ordering::Relaxed);
                assert_eq!(value, expected);
                ring.cursor_release(&mut cursor);
            }
            producer.join().unwrap();
        });
    }

    /// Issue 14: the receiver's fast claim, which reads the slot's published mark and
    /// never the tail. Two slots and three messages, so that the third finds the first's
    /// mark, a lap old, in its slot: a stale mark taken for a new one shows as a wrong
    /// value, a mark stored before the bytes as a stale one, a lost wake-up as a hang.
    #[test]
    fn the_receiver_takes_messages_by_their_marks_across_a_lap() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(2, 8));
            let producer = {
                let heap = heap.clone();
                thread::spawn(move || {
                    let ring = &heap.ring;
                    let mut cursor = ring.cursor(0);
                    for value in [61, 62, 63] {
                        wait_cursor(
                            ring,
                            &ring.waits().not_full.0,
                            &mut cursor,
                            Ring::cursor_claim_write,
                        );
                        let slot = ring.slot_at(cursor.index);
                        slot.sequence.store(value, Ordering::Relaxed);
                        ring.cursor_publish(&mut cursor);
                    }
                })
            };
            let ring = &heap.ring;
            let mut cursor = ring.cursor(0);
            for expected in [61, 62, 63] {
                wait_cursor(
                    ring,
                    &ring.waits().not_empty.0,
                    &mut cursor,
                    |ring, cursor| Ok(ring.cursor_ready_read(cursor)),
                );
                let value = ring.slot_at(cursor.index).sequence.load(Ordering::Relaxed);
                assert_eq!(value, expected);
                ring.cursor_release(&mut cursor);
            }
            producer.join().unwrap();
        });
    }

    #[test]
    fn two_producers_one_consumer_nothing_lost_or_doubled() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(1, 8));
            let producers: Vec<_> = [41, 42]
                .into_iter()
                .map(|value| {
                    let heap = heap.clone();
                    thread::spawn(move || send(&heap.ring, value))
                })
                .collect();
            let mut got = [recv(&heap.ring), recv(&heap.ring)];
            got.sort_unstable();
            assert_eq!(got, [41, 42]);
            for producer in producers {
                producer.join().unwrap();
            }
        });
    }

    /// As the many-senders endpoints send: the one-round fast claim first, the full
    /// claim (and the wait) when it says no.
    fn send_fast(ring: &Ring, value: u64) {
        match ring.claim_write_fast(1) {
            Some(spot) => {
                ring.slot_at(spot.index)
                    .sequence
                    .store(value, Ordering::Relaxed);
                ring.publish_spot(spot);
            }
            None => send(ring, value),
        }
    }

    /// As the many-receivers endpoints receive: the fast claim first, then the full one.
    fn recv_fast(ring: &Ring, pid: u32) -> u64 {
        match ring.claim_read_fast(pid) {
            Some(spot) => {
                let value = ring.slot_at(spot.index).sequence.load(Ordering::Relaxed);
                // No head hint to move: the claim moved it (see `release_spot`).
                ring.release_spot(spot);
                value
            }
            None => recv(ring),
        }
    }

    /// Issue 14: the fast claims and `publish_spot`/`release_spot` keep the slot-word
    /// protocol (order, wake-ups) with the full claims they fall back to.
    #[test]
    fn the_fast_claims_hand_over_in_order_and_wake_their_sleepers() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(1, 8));
            let producer = {
                let heap = heap.clone();
                thread::spawn(move || {
                    send_fast(&heap.ring, 51);
                    send_fast(&heap.ring, 52);
                })
            };
            assert_eq!(recv_fast(&heap.ring, 2), 51);
            assert_eq!(recv_fast(&heap.ring, 2), 52);
            producer.join().unwrap();
        });
    }

    /// Issue 14: two receivers on the fast path, where `release_spot` leaves the head
    /// hint alone: each message is taken once, and nobody is left waiting.
    #[test]
    fn two_fast_receivers_take_each_message_once() {
        loom::model(|| {
            let heap = Arc::new(HeapRing::new(1, 8));
            let receiver = {
                let heap = heap.clone();
                thread::spawn(move || recv_fast(&heap.ring, 3))
            };
            send_fast(&heap.ring, 61);
            send_fast(&heap.ring, 62);
            let mine = recv_fast(&heap.ring, 2);
            let mut got = [mine, receiver.join().unwrap()];
            got.sort_unstable();
            assert_eq!(got, [61, 62]);
        });
    }

    /// Idempotent senders: a writer died holding position 0 for its source's number 5,
    /// committed or not; a reclaimer and the source's new owner (which resolves the send
    /// in flight, then sends the next number the entry asks for) race while a receiver
    /// waits. Number 5 arrives exactly once if it was committed, never otherwise (the new
    /// owner sends it again), and the new owner's message after it.
    fn commit_vs_reclaim(committed: bool) {
        loom::model(move || {
            let heap = Arc::new(HeapRing::new(2, 8));
            let ring = &heap.ring;
            // The dead writer (pid 7), up to its death.
            let pos = got(ring.claim_write(7).unwrap());
            let entry = ring.source(0).unwrap();
            entry.record_pending(0, pos, 5);
            ring.slot(pos).sequence.store(5, Ordering::Relaxed);
            entry
                .committed
                .store(if committed { 6 } else { 5 }, Ordering::Release);
            let reclaimer = {
                let heap = heap.clone();
                thread::spawn(move || {
                    heap.ring.reclaim(0, 7);
                })
            };
            let owner = {
                let heap = heap.clone();
                thread::spawn(move || {
                    let ring = &heap.ring;
                    ring.resolve_pending(0);
                    let entry = ring.source(0).unwrap();
                    let seq = entry.committed.load(Ordering::Acquire);
                    let pos = wait(ring, &ring.waits().not_full.0, |_| {
                        Ok(outcome(ring.claim_write(8)?))
                    });
                    entry.record_pending(0, pos, seq);
                    ring.slot(pos).sequence.store(seq, Ordering::Relaxed);
                    entry.committed.store(seq + 1, Ordering::Release);
                    ring.publish(pos);
                })
            };
            let first = recv(ring);
            if committed {
                assert_eq!(first, 5);
                assert_eq!(recv(ring), 6);
            } else {
                assert_eq!(first, 5, "sent again by the new owner");
            }
            reclaimer.join().unwrap();
            owner.join().unwrap();
            assert_eq!(
                ring.claim_read(2).unwrap(),
                Claim::Blocked { blocker: None },
                "a number delivered twice"
            );
        });
    }

    /// Unbounded chains: positions restart in each ring, so a record names (ring,
    /// position). A writer (pid 7) died right after claiming position 0 of ring 1, before
    /// recording anything; the source's live owner, whose last record is its committed
    /// send at position 0 of ring 0, records its next send at position 1 of ring 1 and
    /// commits it while a reclaimer handles the dead write. Read torn (ring 0's position
    /// with ring 1's index), the two records would name the dead write, committed; the
    /// stamp makes the reclaimer drop it.
    #[test]
    fn a_reclaimer_never_combines_two_records_into_a_third() {
        loom::model(|| {
            let mut heap = HeapRing::new(2, 8);
            heap.ring.chain = 1;
            let heap = Arc::new(heap);
            let ring = &heap.ring;
            let entry = ring.source(0).unwrap();
            entry.record_pending(0, 0, 3);
            entry.committed.store(4, Ordering::Release);
            let dead = got(ring.claim_write(7).unwrap());
            assert_eq!(dead, 0);
            let reclaimer = {
                let heap = heap.clone();
                thread::spawn(move || heap.ring.reclaim(0, 7))
            };
            entry.record_pending(1, 1, 4);
            entry.committed.store(5, Ordering::Release);
            assert!(reclaimer.join().unwrap(), "the dead write is handed back");
            assert_eq!(
                ring.claim_read(2).unwrap(),
                Claim::Blocked { blocker: None },
                "an uncommitted write published"
            );
        });
    }

    #[test]
    fn a_committed_dead_write_is_delivered_once_whoever_resolves_it() {
        commit_vs_reclaim(true);
    }

    #[test]
    fn an_uncommitted_dead_write_is_dropped_whoever_resolves_it() {
        commit_vs_reclaim(false);
    }
}
