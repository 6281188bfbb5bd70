//! Why a node is not serving: the set of *holds* on it, read by `/readyz`, `/healthz`, the
//! engine (which refuses new votes under some holds) and the metrics.
//!
//! What it promises: a node is ready exactly when no hold is set; it refuses to *count* new
//! votes exactly while a hold that [`Hold::refuses_votes`] is set (a vote it refuses is never
//! acknowledged, so the client's retry with the same vote ID, here or at another node, is
//! safe); it is live (`/healthz` 200) unless its log failed. Every hold is set and cleared by
//! the one part of the node that watches its cause (start-up, the disk watch, the clock watch,
//! the engine), and each change is logged once by [`Health::set`], not on every check.

use std::sync::atomic::{AtomicU32, Ordering};

/// One reason a node is not serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Hold {
    /// Starting: catching up with its peers before it reports ready. Votes are still counted
    /// (a region alone must serve); only load balancers are told to wait.
    CatchingUp = 1 << 0,
    /// Stopping: draining in-flight requests.
    Stopping = 1 << 1,
    /// The data directory's free space is below `disk_reserve_bytes`: new votes are refused
    /// until space comes back; what was acknowledged keeps being applied and served.
    DiskLow = 1 << 2,
    /// A write or fsync of the write-ahead log failed: the node finishes what was durable and
    /// exits so that its supervisor restarts it and recovery replays the log.
    LogFailed = 1 << 3,
    /// This node's wall clock disagrees with most of its reachable peers by more than
    /// `max_clock_offset_ms`, or (a node with peers) has not been checked against them since
    /// the node started or its clock stepped: it stamps no votes until the clock agrees
    /// (set and lifted by [`crate::clock_watch`]).
    ClockSkew = 1 << 4,
    /// This node's definition of a poll (its options, in order) lost the cluster's
    /// agreement: it counts none of that poll's votes (each is answered 503 `poll_disputed`;
    /// other polls' votes are counted) until its configuration is fixed and it restarts.
    DefinitionDisputed = 1 << 5,
    /// `ack_mode = "replicated"` with `ack_fallback = "refuse"`, and no ack peer has a push
    /// session up (down, unreachable, or speaking peer protocol 2, which has no pushes) or
    /// the ack peers are stalled (no confirmation advanced for `ack_timeout_ms` while votes
    /// waited): no vote could be acknowledged, so new votes are refused at once (set and
    /// lifted by the engine as ack peers' sessions come and go and confirm).
    AckPeerDown = 1 << 6,
}

impl Hold {
    /// Every hold, in the order `/readyz` lists them.
    pub const ALL: [Hold; 7] = [
        Hold::LogFailed,
        Hold::DiskLow,
        Hold::ClockSkew,
        Hold::AckPeerDown,
        Hold::DefinitionDisputed,
        Hold::Stopping,
        Hold::CatchingUp,
    ];

    /// Whether the node refuses to count new votes while this hold is set.
    pub fn refuses_votes(self) -> bool {
        matches!(
            self,
            Hold::DiskLow | Hold::LogFailed | Hold::ClockSkew | Hold::AckPeerDown
        )
    }

    /// A stable name for metrics labels and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::CatchingUp => "catching_up",
            Hold::Stopping => "stopping",
            Hold::DiskLow => "disk_low",
            Hold::LogFailed => "log_failed",
            Hold::ClockSkew => "clock_skew",
            Hold::DefinitionDisputed => "definition_disputed",
            Hold::AckPeerDown => "ack_peer_down",
        }
    }

    /// What a refused client (and an operator reading `/readyz`) is told.
    pub fn message(self) -> &'static str {
        match self {
            Hold::CatchingUp => "catching up with its peers",
            Hold::Stopping => "the node is stopping",
            Hold::DiskLow => {
                "the data directory is low on free space; this node counts no new votes until \
                 space is freed (nothing was counted: retry here later or at another node)"
            }
            Hold::LogFailed => {
                "the write-ahead log failed; this node is stopping (nothing was counted: retry \
                 at another node)"
            }
            Hold::ClockSkew => {
                "this node's clock disagrees with its peers' or is not yet checked against \
                 them; it counts no votes until its clock agrees (nothing was counted: retry at \
                 another node)"
            }
            Hold::DefinitionDisputed => {
                "this node defines a poll otherwise than the cluster does and counts none of \
                 its votes (the lines below name the poll and what to fix)"
            }
            Hold::AckPeerDown => {
                "this node acknowledges a vote only once an ack peer has it on disk too \
                 (ack_mode = \"replicated\"), and no ack peer is connected (down, unreachable, \
                 or on peer protocol 2, which cannot be an ack peer) or confirms records (frozen, \
                 its disk full); nothing was counted: retry at another node"
            }
        }
    }
}

/// The holds on one node. Shared (`Arc`) by everything that sets or reads them; one atomic
/// word, so the vote path's check is one load.
#[derive(Debug, Default)]
pub struct Health {
    holds: AtomicU32,
}

impl Health {
    /// A node with the given holds set.
    pub fn new(holds: &[Hold]) -> Self {
        let bits = holds.iter().fold(0, |bits, hold| bits | *hold as u32);
        Self {
            holds: AtomicU32::new(bits),
        }
    }

    /// Sets (`on`) or clears a hold; returns whether that changed anything. A change is logged
    /// here, once: at `warn` when a hold that refuses votes is set, `info` otherwise.
    pub fn set(&self, hold: Hold, on: bool) -> bool {
        let bit = hold as u32;
        let before = if on {
            self.holds.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.holds.fetch_and(!bit, Ordering::AcqRel)
        };
        let changed = (before & bit != 0) != on;
        if changed {
            match (on, hold.refuses_votes()) {
                (true, true) => tracing::warn!(hold = hold.as_str(), "{}", hold.message()),
                (true, false) => {
                    tracing::info!(hold = hold.as_str(), "not ready: {}", hold.message())
                }
                (false, _) => tracing::info!(hold = hold.as_str(), "hold lifted"),
            }
        }
        changed
    }

    /// Sets `hold` as the node starts, before its cause could be checked (every node with
    /// peers starts under [`Hold::ClockSkew`]): logged once at `info` with `why`, since it is
    /// the ordinary start, not the fault [`Health::set`] warns of. Lifted by [`Health::set`].
    pub fn set_at_start(&self, hold: Hold, why: &str) {
        let bit = hold as u32;
        if self.holds.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            tracing::info!(hold = hold.as_str(), "{why}");
        }
    }

    /// Whether `hold` is set.
    pub fn has(&self, hold: Hold) -> bool {
        self.holds.load(Ordering::Acquire) & hold as u32 != 0
    }

    /// Whether no hold is set: the node serves votes and load balancers may send them.
    pub fn is_ready(&self) -> bool {
        self.holds.load(Ordering::Acquire) == 0
    }

    /// Whether the process is worth keeping (`/healthz`): false once its log failed.
    pub fn is_live(&self) -> bool {
        !self.has(Hold::LogFailed)
    }

    /// The first hold (in [`Hold::ALL`]'s order) under which new votes are refused, if any.
    pub fn vote_refusal(&self) -> Option<Hold> {
        let bits = self.holds.load(Ordering::Acquire);
        if bits == 0 {
            return None;
        }
        Hold::ALL
            .into_iter()
            .find(|hold| hold.refuses_votes() && bits & *hold as u32 != 0)
    }

    /// Every hold set, in [`Hold::ALL`]'s order.
    pub fn holds(&self) -> Vec<Hold> {
        let bits = self.holds.load(Ordering::Acquire);
        Hold::ALL
            .into_iter()
            .filter(|hold| bits & *hold as u32 != 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_ready_only_without_holds_and_refuses_votes_only_under_refusing_holds() {
        // Goal: readiness and vote refusal follow the holds exactly. Method: set and clear
        // each hold in turn and read every view.
        let health = Health::new(&[Hold::CatchingUp]);
        assert!(!health.is_ready());
        assert_eq!(
            health.vote_refusal(),
            None,
            "catching up still counts votes"
        );
        assert!(health.set(Hold::DiskLow, true));
        assert!(
            !health.set(Hold::DiskLow, true),
            "setting twice changes nothing"
        );
        assert_eq!(health.vote_refusal(), Some(Hold::DiskLow));
        assert!(health.set(Hold::LogFailed, true));
        assert_eq!(
            health.vote_refusal(),
            Some(Hold::LogFailed),
            "the worst first"
        );
        assert!(!health.is_live());
        assert_eq!(
            health.holds(),
            vec![Hold::LogFailed, Hold::DiskLow, Hold::CatchingUp]
        );
        for hold in [Hold::LogFailed, Hold::DiskLow, Hold::CatchingUp] {
            assert!(health.set(hold, false));
        }
        assert!(health.is_ready() && health.is_live());
        assert_eq!(health.vote_refusal(), None);
    }
}
