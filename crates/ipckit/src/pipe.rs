//! Anonymous pipes (filled in by the transports work).
