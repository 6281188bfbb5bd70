//! `tally-node`: the I/O shell around `tally-core`, and the library behind the `tally` binary.
//!
//! Every I/O resource is passed in, never reached for: [`run`] takes its listener, storage, clock
//! and RNG seed, so the simulation can hand it simulated ones (STYLE.md §2).

pub mod storage;
pub mod wal;
