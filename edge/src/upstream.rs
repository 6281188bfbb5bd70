//! The edge's side of its nodes: how it connects ([`Connector`], passed in), one request and
//! what came of it ([`exchange`]), and the readiness probe of each node ([`probe`]).

mod connector;
mod exchange;
mod probe;

pub use connector::{Connecting, Connector, Io, TcpConnector};
pub use exchange::{ANSWER_BYTES_MAX, Connection, Exchanged, IDLE_REUSE_MS_MAX, exchange, request};
pub use probe::{PROBE_TIMEOUT_MS_MIN, ProbeReport, ProbeTimes, probe};
