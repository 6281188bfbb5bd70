//! What a node knows about each peer (written by the sync sessions and the clock watch, read
//! by results, readiness and metrics). Plain data: it depends on no other part of the node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tally_core::UnixMillis;

/// What a node knows about one peer, for readiness, results and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Whether it is in this node's peer list (others are peers that dialled this node).
    pub listed: bool,
    /// Whether a session this node pulls over is up.
    pub connected: bool,
    /// When the last round completed.
    pub last_contact: Option<UnixMillis>,
    /// Records the peer held that this node did not, after the last round.
    pub records_behind: u64,
    /// When this node last held everything the peer held.
    pub caught_up_at: Option<UnixMillis>,
    /// The peer's clock offset as last estimated.
    pub clock: Option<PeerOffset>,
}

/// Every peer's status, shared by the sync sessions (writers) and readers (results,
/// readiness). Not on the vote path.
pub type PeerBoard = Arc<Mutex<BTreeMap<String, PeerStatus>>>;

/// What the watch shows a peer's row in results and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOffset {
    /// The peer's wall clock minus this node's, in ms.
    pub offset_ms: i64,
    /// The estimate's error bound, in ms.
    pub error_ms: u64,
}
