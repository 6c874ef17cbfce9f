//! The unbounded mailbox: a chain of rings. When the newest ring is full a sender seals it
//! (compare-and-swap of its `chain_next` from 0 to the next index) and, as the sealer, creates
//! the next ring (`/dev/shm/ipckit.mailbox-chain.INDEX.NAME`); receivers drain the rings in
//! order, move the root's `chain_head` on, and remove each ring they have emptied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::segment::Trust;
use super::endpoint::claim_on;
use super::participants::Role;
use super::{attach_named, describe, init_ring, Link, Shared};
use crate::error::{Error, Result};
use crate::shm::layout::Spec;
use crate::shm::ring::{self, Ring, FLAG_UNBOUNDED};
use crate::shm::segment::Segment;
use crate::shm::wait::Attempt;
use crate::sync::primitive::{fence, Ordering};

/// `/dev/shm/ipckit.mailbox-chain.INDEX.NAME`.
pub const CHAIN_KIND: &str = "mailbox-chain";

/// Hops along a chain one operation may make before the chain is called corrupt.
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
/// chained rings from the oldest to the newest.
pub(super) fn rings(shared: &Shared) -> Vec<Arc<Link>> {
    let mut links = vec![Arc::clone(&shared.root)];
    if shared.unbounded() {
        let header = shared.ring().header();
        let head = header.chain_head.load(Ordering::SeqCst).max(1);
        let tail = header.chain_tail.load(Ordering::SeqCst);
        // Bounded walk: a scribbled index must not make us map millions of names.
        for index in head..=tail.min(head.saturating_add(MAX_INSPECTED_RINGS)) {
            if let Ok(link) = open_link(shared, index) {
                links.push(link);
            }
        }
    }
    links
}

/// Maps ring `index` of an unbounded chain (0 is the root).
fn open_link(shared: &Shared, index: u32) -> Result<Arc<Link>> {
    if index == 0 {
        return Ok(Arc::clone(&shared.root));
    }
    let object = format!("{} (chained ring {index})", describe(&shared.name));
    // A chained ring may be made by any sender: one of the mailbox's owner, or anyone when
    // the mailbox is open to all (its messages are theirs to read anyway). Any other owner
    // is a squatter that planted the file before the ring was due.
    let trust = if shared.ring().geometry().mode & 0o006 != 0 {
        Trust::AnyOwner
    } else {
        Trust::AlsoUid(shared.root._segment.owner())
    };
    let (segment, ring) =
        attach_named(CHAIN_KIND, &chain_name(&shared.name, index), &object, trust)?;
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
    unsafe { ring.share_waits_with(shared.ring()) };
    Arc::new(Link {
        index,
        ring,
        _root: Some(Arc::clone(&shared.root)),
        _segment: segment,
    })
}

/// Creates ring `index` of an unbounded chain, or opens it if another sender was first.
fn create_link(shared: &Shared, index: u32) -> Result<Arc<Link>> {
    let geometry = shared.ring().geometry();
    let len = ring::ring_len(geometry.capacity, geometry.max_message)
        .ok_or_else(|| Error::corrupt(describe(&shared.name), "geometry overflows"))?;
    let chain = chain_name(&shared.name, index);
    let segment = match Segment::create(CHAIN_KIND, &chain, len, geometry.mode) {
        Ok(segment) => segment,
        Err(Error::AlreadyExists { .. }) => return open_link(shared, index),
        Err(err) => return Err(err),
    };
    let object = format!("{} (chained ring {index})", describe(&shared.name));
    let spec = Spec {
        capacity: geometry.capacity,
        max_message: geometry.max_message,
        flags: FLAG_UNBOUNDED,
        mode: geometry.mode,
    };
    // SAFETY: a freshly created segment, owned by the Link built below with the ring.
    let ring = unsafe { init_ring(&segment, spec, &object)? };
    Ok(chained(shared, index, ring, segment))
}

/// How long a follower waits for the sender that sealed a ring to create its successor
/// before creating it itself (the sealer may have died in between).
const SUCCESSOR_GRACE: Duration = Duration::from_secs(1);

/// Maps ring `index`, which the chain says exists or is about to.
///
/// Only the sender that sealed ring `index - 1` creates ring `index`, right after sealing;
/// until it has, the ring is `NotFound` and we wait. If it never appears (the sealer died),
/// we create it. A ring the receivers have already passed (`chain_head > index`) is gone
/// for good: `NotFound`. A creation that turns out late (the head moved past meanwhile)
/// is undone, so no ring is ever brought back to life behind the receivers.
fn open_successor(shared: &Shared, index: u32) -> Result<Arc<Link>> {
    let head = || shared.ring().header().chain_head.load(Ordering::SeqCst);
    let start = Instant::now();
    loop {
        match open_link(shared, index) {
            Err(Error::NotFound { .. }) => {}
            other => return other,
        }
        if head() > index {
            return Err(Error::NotFound {
                object: format!("{} (chained ring {index})", describe(&shared.name)),
            });
        }
        if start.elapsed() > SUCCESSOR_GRACE {
            let link = create_link(shared, index)?;
            if head() > index {
                let _ = Segment::unlink(CHAIN_KIND, &chain_name(&shared.name, index));
                continue;
            }
            return Ok(link);
        }
        std::thread::sleep(Duration::from_millis(1));
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
        match open_successor(shared, target) {
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
    let next = create_link(shared, index)?;
    shared
        .ring()
        .header()
        .chain_tail
        .fetch_max(index, Ordering::SeqCst);
    Ok(next)
}

/// An endpoint's claim on an unbounded mailbox.
///
/// A sender claims in the newest ring; a full ring grows the chain, a ring sealed under its
/// feet is left for the next one. A receiver drains the oldest ring; once it is sealed and
/// drained, it moves the chain's head on and removes the ring's segment (its memory goes
/// back when the last process unmaps it).
pub(super) fn claim(
    shared: &Shared,
    link: &mut Arc<Link>,
    pid: u32,
    role: Role,
    check: bool,
) -> Attempt<u64> {
    for _ in 0..MAX_HOPS {
        match (claim_on(shared, &link.ring, pid, role, check)?, role) {
            (Ok(pos), Role::Receiver) => return Ok(Ok(pos)),
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
                let sealed = link.ring.header().chain_next.load(Ordering::SeqCst) != 0;
                if !sealed || !link.ring.is_drained() {
                    return Ok(Err(by_process));
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
            }
        }
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
