//! `tally-sim`: deterministic simulation of Tally, at two levels.
//!
//! - [`cluster`] (`--scenario superbowl`): the real `tally-node` code on simulated regional
//!   hosts under turmoil, through partitions, crashes, lost disks and the 30-million-vote
//!   burst, judged by a Jepsen-style history checker.
//! - [`replicas`] (`--scenario replicas`): `tally-core` replicas exchanging encoded wire
//!   frames over a simulated lossy network; thousands of seeds a second.
//!
//! Every run is a pure function of its seed; `SIM_SEED=N` replays it.

pub mod cluster;
pub mod replicas;

pub use replicas::*;
