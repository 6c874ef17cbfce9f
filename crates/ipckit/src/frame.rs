//! Length-prefixed framing: the codec every framed byte stream uses (pipes, FIFOs, Unix
//! stream sockets, TCP). Only encoding and decoding live here; the endpoint that reads and
//! writes descriptors is `FramedStream`, in the `stream` module.
//!
//! # Wire format
//!
//! ```text
//! +----------------------+-------------------+
//! | header: u32 LE       | payload           |
//! +----------------------+-------------------+
//!   bit 31 clear: a data frame; bits 0..31 are the payload length
//!   bit 31 set:   a control frame; 0x8000_0000 is an acknowledgement (rendezvous), no payload
//! ```
//!
//! The decoder never trusts a length: a frame longer than the link's maximum message size is
//! [`Error::MessageTooLarge`] before a byte of it is buffered, and the buffer only ever grows
//! by what actually arrived, never by what a header claims.

use crate::error::{Error, Result};

/// Size of a frame header, in bytes.
pub const HEADER_LEN: usize = 4;
/// The largest payload a frame header can describe.
pub const MAX_FRAME: usize = (1 << 31) - 1;
/// Default maximum message size of framed links: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

const CONTROL_BIT: u32 = 1 << 31;
const ACK: u32 = CONTROL_BIT;
/// Bytes read from the kernel per `read`: the decoder's buffer grows by at most this.
pub(crate) const READ_CHUNK: usize = 64 << 10;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message.
    Data(Vec<u8>),
    /// A rendezvous acknowledgement: the peer has taken one message.
    Ack,
}

/// Encodes the header of a data frame of `len` bytes.
pub fn data_header(len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= MAX_FRAME);
    (len as u32).to_le_bytes()
}

/// The bytes of an acknowledgement frame.
pub fn ack_frame() -> [u8; HEADER_LEN] {
    ACK.to_le_bytes()
}

/// An incremental frame decoder: feed it bytes as they arrive, take frames out.
///
/// ```
/// use ipckit::frame::{data_header, Frame, FrameDecoder};
///
/// let mut decoder = FrameDecoder::new(1024);
/// decoder.extend(&data_header(2));
/// assert_eq!(decoder.decode().unwrap(), None);      // header alone: not a frame yet
/// decoder.extend(b"hi");
/// assert_eq!(decoder.decode().unwrap(), Some(Frame::Data(b"hi".to_vec())));
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// A decoder for frames of at most `max` payload bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            max: max.min(MAX_FRAME),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Appends bytes that arrived.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 && (self.start == self.buf.len() || self.start > self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Takes the next complete frame out, if one is buffered.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a length over the maximum, [`Error::Corrupt`] for an
    /// unknown control frame. After an error the stream cannot be resynchronised.
    pub fn decode(&mut self) -> Result<Option<Frame>> {
        let pending = &self.buf[self.start..];
        if pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let raw = u32::from_le_bytes(pending[..HEADER_LEN].try_into().expect("4 bytes"));
        if raw & CONTROL_BIT != 0 {
            if raw != ACK {
                return Err(Error::corrupt(
                    "frame",
                    format!("unknown control frame {raw:#010x}"),
                ));
            }
            self.start += HEADER_LEN;
            return Ok(Some(Frame::Ack));
        }
        let len = raw as usize;
        if len > self.max {
            return Err(Error::MessageTooLarge {
                size: len,
                max: self.max,
            });
        }
        if pending.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = pending[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(Frame::Data(payload)))
    }

    /// What end of stream means now: `Disconnected` between frames, `Corrupt` inside one.
    pub fn end_of_stream(&self) -> Error {
        match self.buffered() {
            0 => Error::Disconnected,
            n => Error::corrupt(
                "frame",
                format!("the stream ended {n} bytes into a frame (truncated)"),
            ),
        }
    }

    /// Sets the largest payload accepted.
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max.min(MAX_FRAME);
    }

    /// Lets `read` append up to [`READ_CHUNK`] bytes to the buffer (one read from the
    /// kernel); returns what `read` returns.
    pub(crate) fn fill<R>(&mut self, read: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        self.compact();
        self.buf.reserve(READ_CHUNK);
        read(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(decoder: &mut FrameDecoder) -> Result<Vec<Frame>> {
        let mut out = Vec::new();
        while let Some(f) = decoder.decode()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_data_and_acks() {
        let mut d = FrameDecoder::new(100);
        d.extend(&data_header(3));
        d.extend(b"abc");
        d.extend(&ack_frame());
        d.extend(&data_header(0));
        assert_eq!(
            frames(&mut d).unwrap(),
            [
                Frame::Data(b"abc".to_vec()),
                Frame::Ack,
                Frame::Data(vec![])
            ]
        );
        assert!(matches!(d.end_of_stream(), Error::Disconnected));
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(10);
        d.extend(&data_header(11));
        assert!(matches!(
            d.decode(),
            Err(Error::MessageTooLarge { size: 11, max: 10 })
        ));
        let mut d = FrameDecoder::new(usize::MAX);
        d.extend(&0x7fff_ffffu32.to_le_bytes());
        assert_eq!(d.decode().unwrap(), None);
        assert!(
            d.buf.capacity() < 1 << 20,
            "nothing allocated for the claimed length"
        );
    }

    #[test]
    fn truncation_and_unknown_control_frames_are_corrupt() {
        let mut d = FrameDecoder::new(100);
        d.extend(&data_header(5));
        d.extend(b"ab");
        assert_eq!(d.decode().unwrap(), None);
        assert!(matches!(d.end_of_stream(), Error::Corrupt { .. }));
        let mut d = FrameDecoder::new(100);
        d.extend(&0x8000_0001u32.to_le_bytes());
        assert!(matches!(d.decode(), Err(Error::Corrupt { .. })));
    }

    proptest! {
        /// Random bytes: every outcome is a frame, "need more", or an error; never a panic,
        /// and never a buffer larger than what was fed.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), max in 0usize..512) {
            let mut d = FrameDecoder::new(max);
            d.extend(&bytes);
            loop {
                match d.decode() {
                    Ok(Some(Frame::Data(p))) => prop_assert!(p.len() <= max),
                    Ok(Some(Frame::Ack)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(d.buf.len() <= bytes.len());
        }

        /// Any sequence of frames, cut anywhere, decodes to the same frames.
        #[test]
        fn frames_survive_any_split(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20), cut in any::<usize>()) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend_from_slice(&data_header(m.len()));
                wire.extend_from_slice(m);
            }
            let cut = if wire.is_empty() { 0 } else { cut % wire.len() };
            let mut d = FrameDecoder::new(64);
            d.extend(&wire[..cut]);
            let mut got = frames(&mut d).unwrap();
            d.extend(&wire[cut..]);
            got.extend(frames(&mut d).unwrap());
            let want: Vec<Frame> = msgs.into_iter().map(Frame::Data).collect();
            prop_assert_eq!(got, want);
            let disconnected = matches!(d.end_of_stream(), Error::Disconnected);
                prop_assert!(disconnected);
        }

        /// A stream truncated inside a frame is reported as such at end of stream.
        #[test]
        fn truncated_stream_is_an_error(len in 1usize..64, keep in 0usize..67) {
            let mut wire = data_header(len).to_vec();
            wire.extend(std::iter::repeat_n(7u8, len));
            let keep = keep % wire.len();
            let mut d = FrameDecoder::new(64);
            d.extend(&wire[..keep]);
            prop_assert_eq!(d.decode().unwrap(), None);
            if keep == 0 {
                let disconnected = matches!(d.end_of_stream(), Error::Disconnected);
                prop_assert!(disconnected);
            } else {
                let corrupt = matches!(d.end_of_stream(), Error::Corrupt { .. });
                prop_assert!(corrupt);
            }
        }
    }
}
