//! Waiting on a topic without a blocking receive: the futex word a
//! [`WaitSet`](crate::waitset::WaitSet) and the async methods sleep on.

use std::sync::Arc;

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
