//! Peer sync between regional nodes: the QUIC transport with mutual TLS against the cluster
//! CA ([`tls`]), and the endpoint, framing and reconnect backoff built on it ([`transport`]).

pub mod claims;
pub mod log_once;
pub mod status;
pub mod sync;
pub mod tls;
pub mod transport;
