//! Waiting on a topic without a blocking receive: the futex word a
//! [`WaitSet`](crate::waitset::WaitSet) and the async methods sleep on.

use std::sync::Arc;

use super::publisher::Publisher;
use super::subscriber::Subscriber;
use super::Shared;
use crate::reactor::{Sealed, SourceRef, WordSource};
use crate::sync::primitive::Ordering;
use crate::sync::Event;
use crate::Result;

/// A subscriber's view of `new_message`: ready when a message lies past the cursor the
/// subscriber published in its table entry.
struct NewMessage {
    shared: Arc<Shared>,
    index: usize,
}

impl WordSource for NewMessage {
    fn event(&self) -> &Event {
        &self.shared.header().new_message.0
    }

    fn ready(&self) -> bool {
        let header = self.shared.header();
        // The index was ours when the source was made; once the subscriber is gone the
        // entry may belong to another, which makes this hint wrong, never unsafe.
        let cursor = header
            .subscribers
            .get(self.index)
            .map_or(0, |entry| entry.0.cursor.load(Ordering::Acquire));
        header.write_pos.0.load(Ordering::Acquire) > cursor
    }
}

impl Sealed for Subscriber {
    fn source(&self) -> Result<SourceRef<'_>> {
        let (shared, index) = self.wait_parts();
        Ok(SourceRef::Word(Arc::new(NewMessage {
            shared: Arc::clone(shared),
            index,
        })))
    }
}

/// A publisher's view of `room`: ready when the topic overruns, or when the slowest live
/// subscriber is less than a ring behind (dead subscribers' entries are dropped on the way,
/// as a blocked publisher does).
struct Room(Arc<Shared>);

impl WordSource for Room {
    fn event(&self) -> &Event {
        &self.0.header().room.0
    }

    fn ready(&self) -> bool {
        if self.0.overrun {
            return true;
        }
        let write_pos = self.0.header().write_pos.0.load(Ordering::Acquire);
        self.0
            .slowest_cursor(true)
            .is_none_or(|cursor| write_pos < cursor.saturating_add(u64::from(self.0.capacity)))
    }
}

impl Sealed for Publisher {
    fn source(&self) -> Result<SourceRef<'_>> {
        Ok(SourceRef::Word(Arc::new(Room(Arc::clone(self.shared())))))
    }
}
