//! `tally-sim`: deterministic simulation of Tally, at two levels.
//!
//! - [`cluster`] (`--scenario superbowl`): the real `tally-node` code on simulated regional
//!   hosts under turmoil, through partitions, crashes, lost disks and the 30-million-vote
//!   burst, judged by a Jepsen-style history checker.
//! - [`replicas`] (`--scenario replicas`): `tally-core` replicas syncing through the node's
//!   own peer session (`tally_core::session`), its encoded wire frames carried over a
//!   simulated lossy network; thousands of seeds a second.
//!
//! Every run is a pure function of its seed; `SIM_SEED=N` replays it.

// turmoil seeds each host's tokio runtime (and with it the order a watch channel wakes its
// waiters, and select!'s first branch) from the run's seed only under `tokio_unstable`;
// without it the same seed replays differently in another process.
#[cfg(not(tokio_unstable))]
compile_error!(
    "tally-sim must be built with `--cfg tokio_unstable` (set in .cargo/config.toml; a RUSTFLAGS \
     variable replaces it: add `--cfg tokio_unstable` to yours) or its runs are not a function \
     of their seed"
);

pub mod cluster;
pub mod replicas;

pub use replicas::*;
