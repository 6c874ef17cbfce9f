//! The unbounded mailbox: a chain of rings. When the newest ring is full a sender seals it
//! (compare-and-swap of its `chain_next` from 0 to the next index) and, as the sealer, creates
//! the next ring (`/dev/shm/ipckit.mailbox-chain.INDEX.NAME`); receivers drain the rings in
//! order, move the root's `chain_head` on, and remove each ring they have emptied.
//!
//! A ring's creator holds an OFD lock on its file until the ring's magic is published, so a
//! ring left without magic by a creator that was killed is recognised and replaced
//! ([`open_link`]); every ring mapped or made is checked against the head, so nothing is
//! written into a ring the receivers have already passed ([`behind_receivers`]).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::segment::Trust;
use super::endpoint::{claim_on, resolve_claim};
use super::participants::Role;
use super::{describe, init_ring, Link, Shared};
use crate::error::{Error, Result};
use crate::shm::layout::Spec;
use crate::shm::liveness::{self, Table};
use crate::shm::ring::{self, Ring, FLAG_UNBOUNDED};
use crate::shm::segment::Segment;
use crate::shm::wait::Attempt;
use crate::sync::primitive::{fence, Ordering};

/// `/dev/shm/ipckit.mailbox-chain.INDEX.NAME`.
pub const CHAIN_KIND: &str = "mailbox-chain";

/// Hops along a chain one operation may make before it waits a turn (if each hop reached a
/// newer ring) or calls the chain corrupt (if not).
const MAX_HOPS: usize = 64;

/// Rings of a chain that `info` and `repair` look at.
const MAX_INSPECTED_RINGS: u32 = 4096;

fn chain_name(name: &str, index: u32) -> String {
    format!("{index}.{name}")
}

/// Unlinks every chained ring of mailbox `name` (best effort: they are ours by name).
pub(super) fn remove_chain(name: &str) {
    let suffix = format!(".{name}");
    for chained in Segment::list(CHAIN_KIND).unwrap_or_default() {
        let is_ours = chained
            .strip_suffix(&suffix)
            .is_some_and(|index| index.parse::<u32>().is_ok());
        if is_ours {
            let _ = Segment::unlink(CHAIN_KIND, &chained);
        }
    }
}

/// Every ring of the mailbox still in use: the root, and for an unbounded mailbox the
/// chained rings from the oldest to the newest. Rings being created (or left unfinished by a
/// dead creator) are skipped: this only looks.
pub(super) fn rings(shared: &Shared) -> Vec<Arc<Link>> {
    let mut links = vec![Arc::clone(&shared.root)];
    if shared.unbounded() {
        let header = shared.ring().header();
        let head = header.chain_head.load(Ordering::SeqCst).max(1);
        let tail = header.chain_tail.load(Ordering::SeqCst);
        // Bounded walk: a scribbled index must not make us map millions of names.
        for index in head..=tail.min(head.saturating_add(MAX_INSPECTED_RINGS)) {
            if let Ok(Some(link)) = open_link(shared, index, Patience::Look) {
                links.push(link);
            }
        }
    }
    links
}

/// The rings from the chain's head to one past its tail (where a sealer may have died
/// creating the next) that are unfinished: files without magic.
pub(super) fn unfinished_rings(shared: &Shared) -> Vec<u32> {
    if !shared.unbounded() {
        return Vec::new();
    }
    let (head, tail) = ends(shared);
    (head..=tail.saturating_add(1))
        .filter(|&index| {
            Segment::open_file(CHAIN_KIND, &chain_name(&shared.name, index))
                .is_ok_and(|fd| Segment::unfinished(fd.as_fd()))
        })
        .collect()
}

/// Removes the unfinished rings whose creators are dead and puts finished ones in their place
/// where the chain still needs them; returns how many it removed.
pub(super) fn repair(shared: &Shared) -> usize {
    let mut removed = 0;
    for index in unfinished_rings(shared) {
        if let Ok(None) = open_link(shared, index, Patience::Repair) {
            removed += 1;
            let head = shared.ring().header().chain_head.load(Ordering::SeqCst);
            if head <= index && needed(shared, index) {
                let _ = open_successor(shared, index, true);
            }
        }
    }
    removed
}

/// Ring `index` of the chain, if the receivers have not drained it yet (`None`: they have,
/// and removed it). An idempotent source's new owner maps the ring its predecessor's send in
/// flight went to: a ring with a claim in it was finished, and it stays until the head has
/// moved past it.
pub(super) fn ring_at(shared: &Shared, index: u32) -> Result<Option<Arc<Link>>> {
    if behind_receivers(shared, index) {
        return Ok(None);
    }
    match open_link(shared, index, Patience::Look) {
        Ok(Some(link)) if !behind_receivers(shared, index) => Ok(Some(link)),
        Ok(_) | Err(Error::NotFound { .. }) if behind_receivers(shared, index) => Ok(None),
        Ok(other) => Ok(other),
        Err(err) => Err(err),
    }
}

/// The chain's head (at least 1) and tail, the tail bounded for walks.
fn ends(shared: &Shared) -> (u32, u32) {
    let header = shared.ring().header();
    let head = header.chain_head.load(Ordering::SeqCst).max(1);
    let tail = header.chain_tail.load(Ordering::SeqCst);
    (head, tail.min(head.saturating_add(MAX_INSPECTED_RINGS)))
}

/// Whether ring `index` must exist: the ring before it is sealed and chained to it.
fn needed(shared: &Shared, index: u32) -> bool {
    let Some(before) = index.checked_sub(1) else {
        return false;
    };
    match open_link(shared, before, Patience::Look) {
        Ok(Some(link)) => link.ring.header().chain_next.load(Ordering::SeqCst) == index,
        _ => false,
    }
}

/// What [`open_link`] does with a ring whose creator has not published its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patience {
    /// Waits for a live creator (up to [`CREATOR_PATIENCE`]); removes a dead one's ring.
    Wait,
    /// Removes it if its creator is dead, without waiting for a live one.
    Repair,
    /// Only looks: `Corrupt`.
    Look,
}

/// How long an endpoint waits for a live creator to publish a ring's magic. Creating a ring
/// takes a `fallocate` and a few stores: a creator this slow is stopped or stuck.
const CREATOR_PATIENCE: Duration = Duration::from_secs(5);

/// The lock byte a chained ring's creator holds until it has published the ring's magic.
fn creation_lock() -> i64 {
    liveness::offset(Table::Creation, 0)
}

/// Whose chained rings we accept: one of the mailbox's owner, or anyone's when the mailbox
/// is open to all (its messages are theirs to read anyway). Any other owner is a squatter
/// that planted the file before the ring was due.
fn trust(shared: &Shared) -> Trust {
    if shared.ring().geometry().mode & 0o006 != 0 {
        Trust::AnyOwner
    } else {
        Trust::AlsoUid(shared.root._segment.owner())
    }
}

fn ring_object(shared: &Shared, index: u32) -> String {
    format!("{} (chained ring {index})", describe(&shared.name))
}

/// Maps ring `index` of an unbounded chain (0 is the root). `Ok(None)`: it was a ring its
/// creator died making (no magic; the creator's creation lock free) and it was removed.
///
/// A ring is created with its creator holding an OFD lock on it ([`creation_lock`]) until
/// its magic is published. A ring found without magic is the creator's while that lock is
/// held (wait for it); once we can take the lock ourselves its creator is dead (or has not
/// locked it yet: then it will find, after publishing its magic, that the name is no longer
/// its file, and start again). Under the lock we check that the ring is still unfinished and
/// that the name still is the file we locked, and remove it.
fn open_link(shared: &Shared, index: u32, patience: Patience) -> Result<Option<Arc<Link>>> {
    if index == 0 {
        return Ok(Some(Arc::clone(&shared.root)));
    }
    let object = ring_object(shared, index);
    let name = chain_name(&shared.name, index);
    let start = Instant::now();
    loop {
        let fd = Segment::open_file(CHAIN_KIND, &name)?;
        if !Segment::unfinished(fd.as_fd()) {
            return attach_link(shared, index, fd, &object).map(Some);
        }
        if patience == Patience::Look {
            return Err(Error::corrupt(
                object,
                "it is being created (it has no magic yet)",
            ));
        }
        // Not taken: a live creator at work (or a kernel without OFD locks: then all we can
        // do is wait, as before these locks).
        if let Ok(true) = liveness::try_lock(fd.as_fd(), creation_lock()) {
            let settled = settle_unfinished(shared, index, &fd, &object);
            liveness::unlock(fd.as_fd(), creation_lock());
            match settled {
                Some(outcome) => return outcome,
                // The name is another file now: look again.
                None => continue,
            }
        }
        if patience == Patience::Repair || start.elapsed() > CREATOR_PATIENCE {
            return Err(Error::corrupt(
                object,
                format!(
                    "it has no magic, and its creator, still alive, has not finished it in {:?}",
                    start.elapsed()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// With the creation lock of ring `index` held through `fd`: maps the ring if it was finished
/// meanwhile; removes it (`Some(Ok(None))`) if it is still unfinished and the name still is
/// this file; `None` if the name is another file now.
fn settle_unfinished(
    shared: &Shared,
    index: u32,
    fd: &OwnedFd,
    object: &str,
) -> Option<Result<Option<Arc<Link>>>> {
    let name = chain_name(&shared.name, index);
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| Error::os("dup", object.to_string(), e))
    };
    if !Segment::unfinished(fd.as_fd()) {
        return Some(dup(fd).and_then(|fd| attach_link(shared, index, fd, object).map(Some)));
    }
    // Never remove a file we would not accept: a squatter's is an error naming its owner.
    if let Ok(stat) = rustix::fs::fstat(fd) {
        let me = rustix::process::geteuid().as_raw();
        if !trust(shared).accepts(stat.st_uid, me) {
            return Some(dup(fd).and_then(|fd| attach_link(shared, index, fd, object).map(Some)));
        }
    }
    if !Segment::names(CHAIN_KIND, &name, fd.as_fd()) {
        return None;
    }
    let _ = Segment::unlink(CHAIN_KIND, &name);
    Some(Ok(None))
}

/// Maps the chained ring open on `fd` and checks it against the root.
fn attach_link(shared: &Shared, index: u32, fd: OwnedFd, object: &str) -> Result<Arc<Link>> {
    let name = chain_name(&shared.name, index);
    let segment = Segment::attach_file(fd, CHAIN_KIND, &name, trust(shared))?;
    // SAFETY: the segment maps payload_len() bytes at payload(), page-aligned; the Link
    // built below keeps the Segment alive as long as the Ring; attach validates the contents.
    let ring = unsafe { Ring::attach(segment.payload(), segment.payload_len(), object)? };
    let root = shared.ring().geometry();
    let mine = ring.geometry();
    if (mine.capacity, mine.max_message) != (root.capacity, root.max_message) {
        return Err(Error::corrupt(
            object,
            "its geometry differs from the root ring's",
        ));
    }
    Ok(chained(shared, index, ring, segment))
}

/// Ring `index` of the chain, in `segment`: its waiters sleep on the root's futex words.
fn chained(shared: &Shared, index: u32, mut ring: Ring, segment: Segment) -> Arc<Link> {
    // SAFETY: the Link keeps the root mapped (`_root`) for as long as this ring lives.
    unsafe { ring.join_chain(shared.ring(), index) };
    Arc::new(Link {
        index,
        ring,
        _root: Some(Arc::clone(&shared.root)),
        _segment: segment,
    })
}

/// Attempts [`create_link`] makes before giving up (each failed one means another process
/// made, or removed, the ring meanwhile).
const MAX_CREATE_ATTEMPTS: usize = 64;

/// Creates ring `index` of an unbounded chain, or opens it if another sender was first.
///
/// The new file is created exclusively and locked at once ([`Segment::create_locked`]);
/// the lock is released once the ring's magic is published. If by then the name no longer
/// is our file (someone took it for a dead creator's and removed it), ours is abandoned and
/// we start again.
fn create_link(shared: &Shared, index: u32) -> Result<Arc<Link>> {
    let geometry = shared.ring().geometry();
    let len = ring::ring_len(geometry.capacity, geometry.max_message)
        .ok_or_else(|| Error::corrupt(describe(&shared.name), "geometry overflows"))?;
    let name = chain_name(&shared.name, index);
    let object = ring_object(shared, index);
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let segment =
            match Segment::create_locked(CHAIN_KIND, &name, len, geometry.mode, creation_lock()) {
                Ok(segment) => segment,
                Err(Error::AlreadyExists { .. }) => {
                    match open_link(shared, index, Patience::Wait) {
                        Ok(Some(_)) if behind_receivers(shared, index) => {
                            return Err(passed(shared, index))
                        }
                        Ok(Some(link)) => return Ok(link),
                        Ok(None) | Err(Error::NotFound { .. }) => continue,
                        Err(err) => return Err(err),
                    }
                }
                Err(err) => return Err(err),
            };
        let spec = Spec {
            capacity: geometry.capacity,
            max_message: geometry.max_message,
            flags: FLAG_UNBOUNDED,
            mode: geometry.mode,
        };
        // SAFETY: a freshly created segment, owned by the Link built below with the ring.
        let ring = match unsafe { init_ring(&segment, spec, &object) } {
            Ok(ring) => ring,
            Err(err) => {
                if segment.still_named(CHAIN_KIND, &name) {
                    let _ = Segment::unlink(CHAIN_KIND, &name);
                }
                return Err(err);
            }
        };
        let ours = segment.still_named(CHAIN_KIND, &name);
        segment.release_creation(creation_lock());
        if !ours {
            continue;
        }
        if behind_receivers(shared, index) {
            // Made after the receivers moved past this index (its predecessor's sealer was
            // slow, or our creation was judged abandoned and replaced, and the replacement
            // already drained): nobody would ever read it. Undo it.
            if segment.still_named(CHAIN_KIND, &name) {
                let _ = Segment::unlink(CHAIN_KIND, &name);
            }
            return Err(passed(shared, index));
        }
        return Ok(chained(shared, index, ring, segment));
    }
    Err(Error::corrupt(
        object,
        format!("{MAX_CREATE_ATTEMPTS} attempts to create it were each undone by another process"),
    ))
}

/// How long a follower waits for the sender that sealed a ring to create its successor
/// before creating it itself (the sealer may have died in between).
const SUCCESSOR_GRACE: Duration = Duration::from_secs(1);

/// Maps ring `index`, which the chain says exists or is about to.
///
/// Only the sender that sealed ring `index - 1` creates ring `index`, right after sealing;
/// until it has, the ring is `NotFound` and we wait. If it never appears (the sealer died),
/// we create it; at once if `now`, or if we found it unfinished by a dead creator and removed
/// it. A ring the receivers have already passed (`chain_head > index`) is gone for good:
/// `NotFound`. A creation that turns out late (the head moved past meanwhile) is undone, so
/// no ring is ever brought back to life behind the receivers.
fn open_successor(shared: &Shared, index: u32, now: bool) -> Result<Arc<Link>> {
    let start = Instant::now();
    let mut create_now = now;
    loop {
        match open_link(shared, index, Patience::Wait) {
            Err(Error::NotFound { .. }) => {}
            Ok(None) => create_now = true,
            // A file made behind the receivers' back (see `create_link`): not the chain's.
            Ok(Some(_)) if behind_receivers(shared, index) => {}
            Ok(Some(link)) => return Ok(link),
            Err(err) => return Err(err),
        }
        if behind_receivers(shared, index) {
            return Err(passed(shared, index));
        }
        if create_now || start.elapsed() > SUCCESSOR_GRACE {
            return create_link(shared, index);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether the receivers have moved the chain's head past ring `index`: they drained and
/// removed the ring of that index, so a file under its name now is a stale creation nobody
/// will read. Checked after every ring is mapped or made: a file is created only once the
/// one before it under that name is gone, which is after the head moved past it.
fn behind_receivers(shared: &Shared, index: u32) -> bool {
    index != 0 && shared.ring().header().chain_head.load(Ordering::SeqCst) > index
}

/// The error for a ring the receivers have passed.
fn passed(shared: &Shared, index: u32) -> Error {
    Error::NotFound {
        object: ring_object(shared, index),
    }
}

/// Where an endpoint goes once `link` is sealed (and, for a receiver, drained).
///
/// A sender jumps to the newest ring: there is no point filling the gaps of sealed ones. A
/// receiver takes the next ring, since every ring must be drained in order; if another
/// receiver has already drained and removed it, it goes to the chain's current head.
fn follow(shared: &Shared, link: &Link, role: Role) -> Result<Arc<Link>> {
    let next = link.ring.header().chain_next.load(Ordering::SeqCst);
    if Some(next) != link.index.checked_add(1) {
        return Err(Error::corrupt(
            describe(&shared.name),
            format!("ring {} is chained to ring {next}", link.index),
        ));
    }
    open_frontier(shared, role, next)
}

/// Maps the ring an endpoint should be on: at least `floor`, at least the chain's head (rings
/// before it are drained and gone), and for a sender the chain's tail.
///
/// The tail is published only after the sealer has created the new ring, so it can lag the
/// head: receivers may drain and remove a ring, and move the head past it, while its
/// successor is still being created. Every ring from the head on exists or is about to, so
/// the head is always a safe floor. A `NotFound` means the head moved on while we looked:
/// try again from the new head, which only grows; a head that does not move while rings
/// keep vanishing is corruption.
fn open_frontier(shared: &Shared, role: Role, floor: u32) -> Result<Arc<Link>> {
    let root = shared.ring().header();
    let mut last_target = None;
    let mut stalls = 0;
    loop {
        let head = root.chain_head.load(Ordering::SeqCst);
        let target = match role {
            Role::Sender => root.chain_tail.load(Ordering::SeqCst).max(head).max(floor),
            Role::Receiver => head.max(floor),
        };
        match open_successor(shared, target, false) {
            Err(err @ Error::NotFound { .. }) => {
                if last_target.is_some_and(|last| target <= last) {
                    stalls += 1;
                    if stalls >= MAX_HOPS {
                        return Err(err);
                    }
                }
                last_target = Some(target);
            }
            other => return other,
        }
    }
}

/// Seals the full ring `link` and chains a new ring after it; if another sender sealed it
/// first, follows theirs.
fn grow(shared: &Shared, link: &Link) -> Result<Arc<Link>> {
    let header = link.ring.header();
    let index = link
        .index
        .checked_add(1)
        .ok_or_else(|| Error::corrupt(describe(&shared.name), "the chain of rings is exhausted"))?;
    let sealed_by_us = header
        .chain_next
        .compare_exchange(0, index, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !sealed_by_us {
        return follow(shared, link, Role::Sender);
    }
    let next = match create_link(shared, index) {
        // The receivers are already past it (we were slow): catch up with them.
        Err(Error::NotFound { .. }) => return follow(shared, link, Role::Sender),
        other => other?,
    };
    shared
        .ring()
        .header()
        .chain_tail
        .fetch_max(index, Ordering::SeqCst);
    Ok(next)
}

/// Positions a ring of an unbounded chain counts, `2^32`: a sender that claims one at or past
/// it seals the ring and moves to a new one (as if it were full), so that a ring the
/// receivers keep up with, used lap after lap, still ends. That keeps each ring's positions
/// below `2^32` and the chain index above them: [`mailbox_position`] is then one `u64` that
/// grows through the whole mailbox.
pub(crate) const RING_POSITIONS: u64 = 1 << 32;

/// The position `pos` of ring `index` as one number for the whole unbounded mailbox:
/// `index << 32 | pos`, which grows along the chain (rings are drained in index order, and
/// positions in order within each). `None` for a position past [`RING_POSITIONS`], which a
/// sender of this version never publishes (an older one, which did not seal a ring there,
/// could).
pub(crate) fn mailbox_position(index: u32, pos: u64) -> Option<u64> {
    (pos < RING_POSITIONS).then(|| u64::from(index) << 32 | pos)
}

/// An endpoint's claim on an unbounded mailbox.
///
/// A sender claims in the newest ring; a full ring grows the chain, a ring sealed under its
/// feet is left for the next one, and so is a ring that has counted [`RING_POSITIONS`]. A
/// receiver drains the oldest ring; once it is sealed and drained, it moves the chain's head
/// on and removes the ring's segment (its memory goes back when the last process unmaps it).
pub(super) fn claim(
    shared: &Shared,
    link: &mut Arc<Link>,
    pid: u32,
    role: Role,
    check: bool,
) -> Attempt<u64> {
    let start = link.index;
    for _ in 0..MAX_HOPS {
        match (claim_on(shared, &link.ring, pid, role, check)?, role) {
            (Ok(pos), Role::Receiver) => return Ok(Ok(pos)),
            (Ok(pos), Role::Sender) if pos >= RING_POSITIONS => {
                // Never published: the slot goes back (as for a ring sealed under our feet),
                // and the ring is sealed as if full.
                link.ring.release(pos);
                *link = grow(shared, link)?;
            }
            (Ok(pos), Role::Sender) => {
                // SYNC: pairs with the fence in `Ring::is_drained`: either the receiver sees
                // this claim, or we see its ring sealed here.
                fence(Ordering::SeqCst);
                if link.ring.header().chain_next.load(Ordering::SeqCst) == 0 {
                    return Ok(Ok(pos));
                }
                link.ring.release(pos);
                *link = follow(shared, link, Role::Sender)?;
            }
            (Err(_), Role::Sender) => *link = grow(shared, link)?,
            (Err(by_process), Role::Receiver) => {
                if !leave_drained(shared, link)? {
                    return Ok(Err(by_process));
                }
            }
        }
    }
    endless(shared, link, start)
}

/// The single receiver's claim on an unbounded mailbox (`single_receiver()`): as a
/// receiver's [`claim`], with the single receiver's claim on each ring (no `READING` state:
/// a receiver killed holding a message leaves it full in its ring, which is therefore not
/// drained, and the next receiver, starting at the chain's head and that ring's head hint,
/// gets it again at the same position). `next` starts again from each new ring's head.
pub(super) fn claim_sole(
    shared: &Shared,
    link: &mut Arc<Link>,
    next: &mut u64,
    check: bool,
) -> Attempt<u64> {
    let start = link.index;
    for _ in 0..MAX_HOPS {
        let ring = &link.ring;
        match resolve_claim(shared, ring, check, || ring.claim_read_single(next))? {
            Ok(pos) => return Ok(Ok(pos)),
            Err(by_process) => {
                if !leave_drained(shared, link)? {
                    return Ok(Err(by_process));
                }
                // SYNC: pairs with the Release store of a predecessor's `release_single`.
                *next = link.ring.header().head.0.load(Ordering::Acquire);
            }
        }
    }
    endless(shared, link, start)
}

/// A receiver that found nothing to claim on `link`: if the ring is sealed and drained,
/// moves the chain's head past it, removes it and goes to the next ring (true); false if
/// the ring may still get (or hold) a message.
fn leave_drained(shared: &Shared, link: &mut Arc<Link>) -> Result<bool> {
    let sealed = link.ring.header().chain_next.load(Ordering::SeqCst) != 0;
    if !sealed || !link.ring.is_drained() {
        return Ok(false);
    }
    let next = link.index.wrapping_add(1);
    let moved = shared.ring().header().chain_head.compare_exchange(
        link.index,
        next,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    if moved.is_ok() && link.index != 0 {
        let _ = Segment::unlink(CHAIN_KIND, &chain_name(&shared.name, link.index));
    }
    *link = follow(shared, link, Role::Receiver)?;
    Ok(true)
}

/// After [`MAX_HOPS`] hops without a claim: if every hop went to a newer ring, each filled
/// before we got a slot (tiny rings, faster peers), the chain grows, it is not broken: wait a
/// turn, as for a slot held by another process, and try again. Hops that get nowhere are
/// corruption.
fn endless(shared: &Shared, link: &Link, start: u32) -> Attempt<u64> {
    if link.index > start {
        return Ok(Err(true));
    }
    Err(Error::corrupt(
        describe(&shared.name),
        "the chain of rings does not end",
    ))
}

/// The ring a new endpoint starts on: the chain's newest for a sender, oldest for a receiver.
pub(super) fn starting_link(shared: &Shared, role: Role) -> Result<Arc<Link>> {
    if !shared.unbounded() {
        return Ok(Arc::clone(&shared.root));
    }
    open_frontier(shared, role, 0)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shm::mailbox::Mailbox;
    use crate::shm::ring::Claim;
    use crate::{Capacity, Deadline, MessageSender};

    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Mailbox::remove(&self.0);
        }
    }

    fn unbounded(tag: &str) -> (Mailbox, Remove) {
        let name = format!("chain-pos-unit-{tag}-{}", std::process::id());
        let mailbox = Mailbox::builder(&name)
            .capacity_kind(Capacity::Unbounded)
            .unbounded_ring_capacity(4)
            .single_receiver()
            .create()
            .unwrap();
        (mailbox, Remove(name))
    }

    /// A ring that has counted `2^32` positions is sealed though it has room: the messages
    /// after it go to the next ring, and the mailbox position keeps growing (without the
    /// seal the fourth message would sit at position `2^32` of ring 0, which has none).
    #[test]
    fn a_ring_that_counted_its_positions_is_sealed_and_the_mailbox_position_still_grows() {
        let (mailbox, _remove) = unbounded("seal");
        mailbox.shared.ring().fast_forward(RING_POSITIONS - 3);
        let mut tx = mailbox.sender().unwrap();
        let mut rx = mailbox.receiver().unwrap();
        for i in 0..6u8 {
            tx.send(&[i]).unwrap();
        }
        let mut seen = Vec::new();
        for i in 0..6u8 {
            let held = rx.recv_in_place_deadline(Deadline::Now).unwrap();
            assert_eq!(&*held, &[i]);
            seen.push((held.position(), held.mailbox_position().unwrap()));
        }
        let r = RING_POSITIONS;
        let ring1 = 1u64 << 32;
        assert_eq!(
            seen,
            [
                (r - 3, r - 3),
                (r - 2, r - 2),
                (r - 1, r - 1),
                (0, ring1),
                (1, ring1 + 1),
                (2, ring1 + 2)
            ]
        );
    }

    /// A message at position `2^32` or more of a chained ring (an older sender's, which did
    /// not seal the ring there) has no mailbox position: `Unsupported`, not a wrapped number.
    #[test]
    fn a_message_past_a_rings_positions_has_no_mailbox_position() {
        assert_eq!(mailbox_position(7, 5), Some(7 << 32 | 5));
        assert_eq!(
            mailbox_position(u32::MAX, RING_POSITIONS - 1),
            Some(u64::MAX)
        );
        assert_eq!(mailbox_position(0, RING_POSITIONS), None);
        let (mailbox, _remove) = unbounded("past");
        let ring = mailbox.shared.ring();
        ring.fast_forward(RING_POSITIONS);
        // An older sender's send, straight on the ring.
        let pos = match ring.claim_write(std::process::id()).unwrap() {
            Claim::Got(pos) => pos,
            other => panic!("{other:?}"),
        };
        assert_eq!(pos, RING_POSITIONS);
        ring.slot(pos).len.store(1, Ordering::SeqCst);
        ring.publish(pos);
        let mut rx = mailbox.receiver().unwrap();
        let held = rx.recv_in_place_deadline(Deadline::Now).unwrap();
        assert_eq!(held.position(), RING_POSITIONS);
        assert!(matches!(
            held.mailbox_position(),
            Err(Error::Unsupported(text)) if text.contains("older ipckit")
        ));
    }
}
