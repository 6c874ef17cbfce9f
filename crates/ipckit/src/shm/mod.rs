//! Shared memory: segments and the structures placed in them.
//!
//! `segment` maps named and anonymous shared memory; `layout` and `participants` are what
//! the slotted structures placed in a segment share (header validation, slot geometry,
//! participant tables), `liveness` who among them is alive (OFD locks); `ring` is the
//! mailbox's slot protocol and `wait` the spin-then-futex wait. The user-facing objects
//! are [`Mailbox`], [`Topic`], [`Shared`] and [`BoundedBuffer`].

mod bytes;
pub mod fault;
pub(crate) mod layout;
pub(crate) mod liveness;
pub mod mailbox;
mod named;
pub(crate) mod participants;
pub mod pingpong;
pub(crate) mod ring;
pub mod segment;
pub(crate) mod seqlock;
pub mod shared;
pub mod topic;
pub mod wait;

pub use mailbox::{Mailbox, MailboxBuilder, MailboxReceiver, MailboxSender, WaitStrategy};
pub use participants::RepairReport;
pub use segment::{Segment, SysvSegment, SysvSegmentStat};
pub use shared::{BoundedBuffer, Shared, ShmSafe};
pub use topic::{Overflow, Publisher, Subscriber, Topic, TopicBuilder};
