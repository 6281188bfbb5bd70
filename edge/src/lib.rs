//! `tally-edge`: the stateless tier between the phones and the nodes (`tally edge`).
//!
//! An edge serves the node's public voting route to phones and is a client of nodes: it
//! gathers single votes into postcard batches (at `batch_votes_max` votes or after `linger_ms`),
//! sends them to the nearest healthy node, and answers each vote from that node's durable
//! per-vote status, receipt included. It never says `counted` on its own. Lost or late answers
//! send the unanswered votes, with the same vote IDs, to the next node; a vote past its
//! deadline is answered 503 with `Retry-After`. Each node has a circuit breaker, a bounded
//! queue and a bounded number of batches in flight; readiness comes from its `/readyz`.
//! Abuse controls (per-IP rate limits behind trusted proxies, signed vote tokens) hold at the
//! edge as on a node. No disk; killing an edge loses only answers, which clients recover by
//! retrying with the same vote ID.
//!
//! Every I/O resource is passed in ([`EdgeIo`]): the listener, the [`Connector`] to nodes,
//! the clock and the stop signal, so the simulation runs this code on simulated hosts. Time
//! for timers and breakers is tokio's; the wall clock is only read through [`tally_core::Clock`].
//!
//! It depends on `tally-core`, `tally-client` and `tally-serve`, never on the node's server.

pub mod breaker;
pub mod catalogue;
pub mod config;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod server;
pub mod upstream;

pub use config::{EdgeConfig, EdgeConfigError};
pub use server::{EdgeHandle, EdgeIo, Started, run, start};
pub use upstream::{Connector, TcpConnector};
