//! What the bridges add to a message on the wire, in the Zenoh attachment (the payload is
//! always the message's bytes). Every attachment starts with the magic `ipk1`.

use std::io::Read;

const MAGIC: &[u8; 4] = b"ipk1";

/// 16 random bytes: a source id, a bridge's id, a connection id.
pub(crate) fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id));
    if filled.is_err() {
        // No /dev/urandom: the clock and the pid still make a collision unlikely.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    id
}

pub(crate) fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mailbox, the bridges' window protocol (`ipk2`): the source, the message's position, the
/// position the exporting side must expect before it (`prev_next`, see `journal.rs`), and
/// the importing side's oldest unacknowledged `prev_next` of that source (`base`: where an
/// exporting side that has lost its record starts again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carried {
    pub(crate) source: [u8; 16],
    pub(crate) pos: u64,
    pub(crate) prev_next: u64,
    pub(crate) base: u64,
}

const MAGIC2: &[u8; 4] = b"ipk2";

pub(crate) fn mailbox_header(c: &Carried) -> Vec<u8> {
    let mut out = Vec::with_capacity(44);
    out.extend_from_slice(MAGIC2);
    out.extend_from_slice(&c.source);
    out.extend_from_slice(&c.pos.to_le_bytes());
    out.extend_from_slice(&c.prev_next.to_le_bytes());
    out.extend_from_slice(&c.base.to_le_bytes());
    out
}

/// Mailbox, one message at a time (`ipk1`): the source and the message's position; in
/// order by construction, so it carries no chain.
pub(crate) fn mailbox_header_v1(source: &[u8; 16], pos: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(28);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(source);
    out.extend_from_slice(&pos.to_le_bytes());
    out
}

/// Either form; an `ipk1` header reads as a message whose chain is always satisfied.
pub(crate) fn parse_mailbox_header(bytes: &[u8]) -> Option<Carried> {
    if bytes.len() == 28 && &bytes[..4] == MAGIC {
        return Some(Carried {
            source: bytes[4..20].try_into().ok()?,
            pos: u64::from_le_bytes(bytes[20..28].try_into().ok()?),
            prev_next: 0,
            base: 0,
        });
    }
    if bytes.len() != 44 || &bytes[..4] != MAGIC2 {
        return None;
    }
    let u = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Some(Carried {
        source: bytes[4..20].try_into().ok()?,
        pos: u(20),
        prev_next: u(28),
        base: u(36),
    })
}

/// Topic: the publishing bridge, how many messages it missed just before this one (its
/// local subscriber's [`missed`](ipckit::Metadata::missed): it fell behind, or a gap was
/// declared on its host), and the sample's number among those it `put` since it started
/// (`count`: a sample lost on the way shows as a jump, which the importing side counts as
/// missed too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicCarried {
    pub(crate) origin: [u8; 16],
    pub(crate) missed: u64,
    /// `None` from a bridge that did not number its samples (28-byte header).
    pub(crate) count: Option<u64>,
}

pub(crate) fn topic_header(c: &TopicCarried) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&c.origin);
    out.extend_from_slice(&c.missed.to_le_bytes());
    if let Some(count) = c.count {
        out.extend_from_slice(&count.to_le_bytes());
    }
    out
}

pub(crate) fn parse_topic_header(bytes: &[u8]) -> Option<TopicCarried> {
    if !(bytes.len() == 28 || bytes.len() == 36) || &bytes[..4] != MAGIC {
        return None;
    }
    let u = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Some(TopicCarried {
        origin: bytes[4..20].try_into().ok()?,
        missed: u(20),
        count: (bytes.len() == 36).then(|| u(28)),
    })
}

/// Service operations on a carried connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Connect,
    Call,
    Close,
    /// The importing bridge asks for the server's callbacks from a position on.
    Poll,
}

pub(crate) fn service_header(op: Op, connection: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    out.extend_from_slice(MAGIC);
    out.push(match op {
        Op::Connect => b'C',
        Op::Call => b'Q',
        Op::Close => b'X',
        Op::Poll => b'P',
    });
    out.extend_from_slice(connection);
    out
}

pub(crate) fn parse_service_header(bytes: &[u8]) -> Option<(Op, [u8; 16])> {
    if bytes.len() != 21 || &bytes[..4] != MAGIC {
        return None;
    }
    let op = match bytes[4] {
        b'C' => Op::Connect,
        b'Q' => Op::Call,
        b'X' => Op::Close,
        b'P' => Op::Poll,
        _ => return None,
    };
    Some((op, bytes[5..21].try_into().ok()?))
}

/// A batch of callbacks (the answer to a poll): the position of the first, whether the
/// server's connection has ended after them, then each as its length (u32) and bytes.
pub(crate) fn callbacks_batch(first: u64, closed: bool, messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + messages.iter().map(|m| 4 + m.len()).sum::<usize>());
    out.extend_from_slice(&first.to_le_bytes());
    out.push(u8::from(closed));
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// A batch as `callbacks_batch` wrote it; `None` for anything else.
pub(crate) fn parse_callbacks_batch(bytes: &[u8]) -> Option<(u64, bool, Vec<Vec<u8>>)> {
    let first = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let closed = match bytes.get(8)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let mut rest = &bytes[9..];
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        messages.push(rest.get(4..4 + len)?.to_vec());
        rest = &rest[4 + len..];
    }
    Some((first, closed, messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        let id = random_id();
        let carried = Carried {
            source: id,
            pos: 42,
            prev_next: 40,
            base: 7,
        };
        assert_eq!(
            parse_mailbox_header(&mailbox_header(&carried)),
            Some(carried)
        );
        let topic = TopicCarried {
            origin: id,
            missed: 3,
            count: Some(12),
        };
        assert_eq!(parse_topic_header(&topic_header(&topic)), Some(topic));
        let unnumbered = TopicCarried {
            count: None,
            ..topic
        };
        assert_eq!(
            parse_topic_header(&topic_header(&unnumbered)),
            Some(unnumbered)
        );
        assert_eq!(parse_topic_header(&topic_header(&topic)[..35]), None);
        let v1 = parse_mailbox_header(&mailbox_header_v1(&id, 9)).unwrap();
        assert_eq!((v1.source, v1.pos, v1.prev_next), (id, 9, 0));
        assert_eq!(
            parse_service_header(&service_header(Op::Call, &id)),
            Some((Op::Call, id))
        );
        assert_eq!(parse_mailbox_header(b"ipk2short"), None);
        assert_eq!(parse_service_header(&[0u8; 21]), None);
        assert_ne!(random_id(), id);
        let batch = vec![b"one".to_vec(), Vec::new(), b"three".to_vec()];
        assert_eq!(
            parse_callbacks_batch(&callbacks_batch(5, true, &batch)),
            Some((5, true, batch))
        );
        let mut cut = callbacks_batch(0, false, &[b"four".to_vec()]);
        cut.pop();
        assert_eq!(parse_callbacks_batch(&cut), None);
        assert_eq!(
            parse_service_header(&service_header(Op::Poll, &id)),
            Some((Op::Poll, id))
        );
    }
}
