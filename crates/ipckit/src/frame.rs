//! Length-prefixed framing for byte streams (filled in by the transports work).
