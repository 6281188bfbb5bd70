//! Every route and every error path of the HTTP API, through the router itself.
//!
//! Method: each test starts a node with [`tally_node::start`] on a [`MemoryStorage`] and a clock
//! the test moves by hand, then sends requests to its router with tower's `oneshot` (no socket).
//! The default configuration defines the poll `superbowl` (`green`, `blue`), open from the
//! clock's start; the admin token is [`kit::TOKEN`]. Every await is bounded by [`kit::STEP`], so a hang is
//! a failure with a message, not a stuck test run. The load-shedding tests build the router
//! around an engine queue that is full and never drained.

#![allow(clippy::unwrap_used)]

mod kit;

mod admin;
mod batches;
mod browsers;
mod index;
mod openapi;
mod operations;
mod reads;
mod restart;
mod shedding;
mod votes;
mod windows;
