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

/// Mailbox: source id and position of the message in the source mailbox.
pub(crate) fn mailbox_header(source: &[u8; 16], position: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(28);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(source);
    out.extend_from_slice(&position.to_le_bytes());
    out
}

pub(crate) fn parse_mailbox_header(bytes: &[u8]) -> Option<([u8; 16], u64)> {
    if bytes.len() != 28 || &bytes[..4] != MAGIC {
        return None;
    }
    let source = bytes[4..20].try_into().ok()?;
    let position = u64::from_le_bytes(bytes[20..28].try_into().ok()?);
    Some((source, position))
}

/// Topic: the publishing bridge and how many messages it missed just before this one.
pub(crate) fn topic_header(origin: &[u8; 16], missed: u64) -> Vec<u8> {
    mailbox_header(origin, missed)
}

pub(crate) fn parse_topic_header(bytes: &[u8]) -> Option<([u8; 16], u64)> {
    parse_mailbox_header(bytes)
}

/// Service operations on a carried connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Connect,
    Call,
    Close,
}

pub(crate) fn service_header(op: Op, connection: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    out.extend_from_slice(MAGIC);
    out.push(match op {
        Op::Connect => b'C',
        Op::Call => b'Q',
        Op::Close => b'X',
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
        _ => return None,
    };
    Some((op, bytes[5..21].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        let id = random_id();
        assert_eq!(
            parse_mailbox_header(&mailbox_header(&id, 42)),
            Some((id, 42))
        );
        assert_eq!(
            parse_service_header(&service_header(Op::Call, &id)),
            Some((Op::Call, id))
        );
        assert_eq!(parse_mailbox_header(b"ipk1short"), None);
        assert_eq!(parse_service_header(&[0u8; 21]), None);
        assert_ne!(random_id(), id);
    }
}
