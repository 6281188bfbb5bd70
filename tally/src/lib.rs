//! The `tally` binary's commands beyond `run`: the three-region `demo`, the load generator
//! (`load`) and the development certificates (`certs`). They are tools around the node, kept
//! out of the server library (`tally-node`), which they drive from outside: `demo` runs nodes
//! in-process, `load` speaks HTTP to them through `tally-client`'s plumbing.
//!
//! The edge tier (`tally edge`: a server to phones and a client of nodes) goes beside these,
//! as its own crate `edge/` built on `tally-client` (API types and client) and called from
//! `main.rs`.

pub mod certs;
pub mod demo;
pub mod load;
