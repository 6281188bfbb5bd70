//! The edge's tests: every route and error through its router, against real nodes in-process
//! behind an in-memory network that can fail the ways networks and nodes fail (`kit.rs`).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod door;
mod failover;
mod kit;
mod votes;
