//! What a sender and a receiver share: the mailbox, the ring they are on, their participant
//! entry, and their flavour, the one private switch between the mailbox's paths (as
//! crossbeam-channel's `Sender` wraps a private `SenderFlavor`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::chain;
use super::participants::{is_dead, Participant, Role, SoleToken};
use super::{check_intact, describe, Link, Shared};
use crate::error::{Error, Result};
use crate::link::Deadline;
use crate::shm::ring::{uses_cursors, Claim, Cursor, Ring, FLAG_SINGLE_SENDER};
use crate::shm::wait::{wait_for, wait_for_asymmetric, Attempt};
use crate::sync::primitive::Ordering;

/// How an endpoint claims positions, chosen once when it is made.
pub(super) enum Flavor {
    /// One of possibly many endpoints of its role on a bounded (or rendezvous) ring: claims
    /// are compare-and-swaps on the slot words.
    Many,
    /// The one sender (receiver) of a single-sender (single-receiver) ring, holding the
    /// token: it claims position `next` without a compare-and-swap. The single receiver of
    /// an unbounded mailbox hops along the chain like `Chain`, `next` starting again on each
    /// ring (`chain::claim_sole`).
    Sole { _token: SoleToken, next: u64 },
    /// The one sender (receiver) of a ring that is both single-sender and single-receiver
    /// (not rendezvous, not unbounded): the cursor protocol (`shm/ring/`), no slot words.
    Cursor { _token: SoleToken, cursor: Cursor },
    /// An endpoint of an unbounded mailbox (but its single receiver): claims hop along the
    /// chain of rings.
    Chain,
}

/// The state a [`MailboxSender`](super::MailboxSender) and a
/// [`MailboxReceiver`](super::MailboxReceiver) have in common.
pub(super) struct Endpoint {
    pub(super) shared: Arc<Shared>,
    /// The ring this endpoint is on (the root, or a ring of an unbounded chain).
    pub(super) link: Arc<Link>,
    pub(super) flavor: Flavor,
    pub(super) participant: Participant,
    /// The root segment's poison flag (`fault.rs`), looked up once: the fast paths of the
    /// cursor and many flavours, which never leave the root ring, load it per message.
    root_poison: &'static AtomicBool,
}

impl Endpoint {
    /// A `role` endpoint of the mailbox: takes the single-`role` token if the mailbox has
    /// one, enters the participant table, and finds the ring to start on.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) for a second single sender
    /// (receiver); [`Error::LimitReached`](crate::Error::LimitReached) when the participant
    /// table is full; for an unbounded mailbox, the errors of mapping its chain.
    pub(super) fn new(shared: &Arc<Shared>, role: Role) -> Result<Endpoint> {
        if role == Role::Sender
            && shared.unbounded()
            && shared.ring().geometry().flags & FLAG_SINGLE_SENDER != 0
        {
            // Never created so (the builder refuses it): a scribbled header.
            return Err(Error::corrupt(
                describe(&shared.name),
                "it is marked both unbounded and single-sender",
            ));
        }
        let sole = SoleToken::acquire(shared, role)?;
        if role == Role::Sender && sole.is_some() {
            // Before this sender writes over anything: the message an idempotent sender
            // published but had not committed when it died is committed now (`shm/ring/`).
            shared
                .ring()
                .settle_sources(uses_cursors(shared.ring().geometry().flags));
        }
        let participant = Participant::register(shared, role)?;
        let link = chain::starting_link(shared, role)?;
        let flavor = match sole {
            Some((token, start)) if uses_cursors(shared.ring().geometry().flags) => {
                Flavor::Cursor {
                    _token: token,
                    cursor: link.ring.cursor(start),
                }
            }
            // The single receiver of an unbounded mailbox starts on the chain's head ring,
            // at that ring's head (the token's start is the root's).
            Some((token, _)) if shared.unbounded() => Flavor::Sole {
                _token: token,
                // SYNC: pairs with the Release store of a predecessor's `release_single`.
                next: link.ring.header().head.0.load(Ordering::Acquire),
            },
            Some((token, next)) => Flavor::Sole {
                _token: token,
                next,
            },
            None if shared.unbounded() => Flavor::Chain,
            None => Flavor::Many,
        };
        Ok(Endpoint {
            shared: Arc::clone(shared),
            link,
            flavor,
            participant,
            root_poison: shared.root._segment.poison_flag(),
        })
    }

    /// The ring this endpoint is on.
    #[inline]
    pub(super) fn ring(&self) -> &Ring {
        &self.link.ring
    }

    /// Whether this is the sole sender (receiver) of its ring.
    #[inline]
    pub(super) fn is_sole(&self) -> bool {
        matches!(self.flavor, Flavor::Sole { .. } | Flavor::Cursor { .. })
    }

    /// The slot index of `pos`, a position this endpoint has claimed: kept in the cursor on
    /// the cursor path, computed otherwise.
    #[inline]
    pub(super) fn index(&self, pos: u64) -> usize {
        match &self.flavor {
            Flavor::Cursor { cursor, .. } if cursor.pos == pos => cursor.index,
            _ => self.link.ring.index_of(pos),
        }
    }

    /// Claims the next position to write (`role` sender) or read (receiver), waiting on the
    /// mailbox's `not_full` (`not_empty`) word until `deadline`. The role is the caller's
    /// constant, not a field, so that each endpoint's copy of this folds to its own path.
    ///
    /// # Errors
    /// [`Error::Full`](crate::Error::Full)/[`Error::Empty`](crate::Error::Empty) or
    /// [`Error::Timeout`](crate::Error::Timeout) at the deadline;
    /// [`Error::Corrupt`](crate::Error::Corrupt) for a scribbled ring.
    #[inline]
    pub(super) fn claim(&mut self, role: Role, deadline: Deadline) -> Result<u64> {
        if let Flavor::Cursor { cursor, .. } = &mut self.flavor {
            let ring = &self.link.ring;
            let ready = match role {
                Role::Sender => ring.cursor_claim_write(cursor),
                Role::Receiver => ring.cursor_claim_read(cursor),
            };
            if let Ok(true) = ready {
                return Ok(cursor.pos);
            }
            return claim_cursor_slow(&self.shared, &self.link, cursor, role, deadline);
        }
        if let Flavor::Many = self.flavor {
            // The common case straight away: a position free (a message ready) at once.
            // Anything else (blocked, a dead owner in the way, corrupt) takes the full path.
            let ring = &self.link.ring;
            let pid = self.participant.pid;
            let claim = match role {
                Role::Sender => ring.claim_write(pid),
                Role::Receiver => ring.claim_read(pid),
            };
            if let Ok(Claim::Got(pos)) = claim {
                return Ok(pos);
            }
        }
        self.claim_slots(role, deadline)
    }

    /// Claims on the slot words (every flavour but the cursor's).
    fn claim_slots(&mut self, role: Role, deadline: Deadline) -> Result<u64> {
        let shared = &*self.shared;
        let link = &mut self.link;
        let flavor = &mut self.flavor;
        let pid = self.participant.pid;
        let mut attempt = |check: bool| -> Attempt<u64> {
            if check {
                check_intact(shared, link, true)?;
            } else {
                check_intact_quick(shared, link)?;
            }
            match flavor {
                // Only a receiver is single on an unbounded mailbox (`new` refuses a sender).
                Flavor::Sole { next, .. } if shared.unbounded() => {
                    chain::claim_sole(shared, link, next, check)
                }
                Flavor::Sole { next, .. } => {
                    resolve_claim(shared, &link.ring, check, || match role {
                        Role::Sender => link.ring.claim_write_single(next),
                        Role::Receiver => link.ring.claim_read_single(next),
                    })
                }
                Flavor::Chain => chain::claim(shared, link, pid, role, check),
                Flavor::Many | Flavor::Cursor { .. } => {
                    claim_on(shared, &link.ring, pid, role, check)
                }
            }
        };
        // The first attempt outside `wait_for`, so that a claim that succeeds at once builds
        // no error for a deadline it never reaches.
        let pos = match attempt(false) {
            Ok(Ok(pos)) => Ok(pos),
            Ok(Err(_)) => {
                let header = shared.ring().header();
                let (word, expired) = match role {
                    Role::Sender => (&header.not_full.0, deadline.send_expired()),
                    Role::Receiver => (&header.not_empty.0, deadline.recv_expired()),
                };
                wait_for(shared.wait, word, deadline, expired, attempt)
            }
            Err(e) => Err(e),
        };
        // A claim that read lost pages saw zeroes: report the loss, not what it made of them
        // (the zeroed tail of a file cut mid-page raises no SIGBUS: ask the file).
        if let Err(Error::Corrupt { .. }) = pos {
            check_intact(shared, link, true)?;
        }
        pos
    }

    /// `Corrupt` if a segment this endpoint uses was truncated (see [`check_intact`]).
    #[inline]
    pub(super) fn check_intact(&self) -> Result<()> {
        check_intact(&self.shared, &self.link, false)
    }

    /// [`check_intact`](Self::check_intact) for the fast paths: one load per segment, and one
    /// segment when the endpoint is on the root ring; the error is built only when needed.
    #[inline]
    pub(super) fn check_intact_fast(&self) -> Result<()> {
        let on_root = Arc::ptr_eq(&self.shared.root, &self.link);
        if self.link._segment.is_poisoned() || (!on_root && self.shared.root._segment.is_poisoned())
        {
            return self.check_intact();
        }
        Ok(())
    }
}

impl Endpoint {
    /// [`check_intact_fast`](Self::check_intact_fast) for the cursor and many flavours,
    /// whose ring is the root's (they are never unbounded): one load of a cached flag.
    #[inline(always)]
    pub(super) fn check_intact_root(&self) -> Result<()> {
        debug_assert!(Arc::ptr_eq(&self.shared.root, &self.link));
        // SYNC: pairs with the Release store of the SIGBUS handler (or of a check that
        // found the file cut): whatever was read before this load came from the file.
        if self.root_poison.load(std::sync::atomic::Ordering::Acquire) {
            return self.poisoned();
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn poisoned(&self) -> Result<()> {
        self.check_intact()
    }
}

/// `Corrupt` if a segment of `link` was found poisoned: one load per segment, the error built
/// only when needed (the light form of [`check_intact`], for every attempt).
#[inline]
fn check_intact_quick(shared: &Shared, link: &Link) -> Result<()> {
    if link._segment.is_poisoned() || shared.root._segment.is_poisoned() {
        return check_intact(shared, link, false);
    }
    Ok(())
}

/// The cursor path when the other side's cursor says wait: the wait strategy, with the heavy
/// half of the asymmetric barrier before sleeping.
#[inline(never)]
fn claim_cursor_slow(
    shared: &Shared,
    link: &Link,
    cursor: &mut Cursor,
    role: Role,
    deadline: Deadline,
) -> Result<u64> {
    let header = shared.ring().header();
    let (word, expired) = match role {
        Role::Sender => (&header.not_full.0, deadline.send_expired()),
        Role::Receiver => (&header.not_empty.0, deadline.recv_expired()),
    };
    let pos = wait_for_asymmetric(shared.wait, word, deadline, expired, |check| {
        check_intact(shared, link, check)?;
        let ready = match role {
            Role::Sender => link.ring.cursor_claim_write(cursor)?,
            Role::Receiver => link.ring.cursor_claim_read(cursor)?,
        };
        Ok(if ready { Ok(cursor.pos) } else { Err(false) })
    });
    check_intact(shared, link, matches!(pos, Err(Error::Corrupt { .. })))?;
    pos
}

/// Claims a position on `ring` for `role`, reclaiming slots of dead owners in the way when
/// `check_owners` is set.
pub(super) fn claim_on(
    shared: &Shared,
    ring: &Ring,
    pid: u32,
    role: Role,
    check_owners: bool,
) -> Attempt<u64> {
    let claim = || match role {
        Role::Sender => ring.claim_write(pid),
        Role::Receiver => ring.claim_read(pid),
    };
    resolve_claim(shared, ring, check_owners, claim)
}

/// Runs `claim` until it gets a position or is blocked by something other than a dead
/// process's slot (which it reclaims when `check_owners` is set).
pub(super) fn resolve_claim(
    shared: &Shared,
    ring: &Ring,
    check_owners: bool,
    mut claim: impl FnMut() -> Result<Claim>,
) -> Attempt<u64> {
    for _ in 0..=ring.geometry().capacity {
        match claim()? {
            Claim::Got(pos) => return Ok(Ok(pos)),
            Claim::Blocked {
                blocker: Some((owner, pos)),
            } => {
                if !(check_owners && is_dead(shared, owner) && ring.reclaim(pos, owner)) {
                    return Ok(Err(true));
                }
            }
            Claim::Blocked { blocker: None } => return Ok(Err(false)),
        }
    }
    Ok(Err(true))
}
