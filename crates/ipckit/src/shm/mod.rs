//! Shared memory: segments and the structures placed in them.

mod bytes;
pub mod fault;
pub mod mailbox;
pub mod pingpong;
pub(crate) mod ring;
pub mod segment;
pub(crate) mod seqlock;
pub mod shared;
pub mod topic;
pub mod wait;

pub use mailbox::{Mailbox, MailboxBuilder, MailboxReceiver, MailboxSender, WaitStrategy};
pub use segment::{Segment, SysvSegment, SysvSegmentStat};
pub use shared::{BoundedBuffer, Shared, ShmSafe};
pub use topic::{Overflow, Publisher, Subscriber, Topic};
