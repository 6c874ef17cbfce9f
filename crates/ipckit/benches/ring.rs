//! Criterion benchmarks of the mailbox ring (filled in with the mailbox).
fn main() {}
