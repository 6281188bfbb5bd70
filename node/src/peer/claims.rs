//! Which session pulls from each peer. A node pulls from every authenticated peer of its
//! cluster it has a session with, listed or not (the peer list is where to dial, not who may
//! be heard), and from each peer once: over the session it dialled when that one is up, else
//! over the session the peer dialled. So a one-sided peer list (A lists B, B lists nobody)
//! still syncs both ways, and two nodes that list each other do not pull twice.
//!
//! Bounded by the cluster: one claim per peer node ID, and a node ID is only ever presented
//! with a certificate the cluster CA issued for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tally_core::NodeId;

/// The claims of every peer; shared by all sessions of a node.
#[derive(Debug, Default)]
pub struct PullClaims {
    by_peer: Mutex<BTreeMap<NodeId, Holder>>,
    next_session: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    session: u64,
    dialled: bool,
}

/// One session's right to pull from its peer, released when dropped.
#[derive(Debug)]
pub struct Claim {
    claims: Arc<PullClaims>,
    peer: NodeId,
    holder: Holder,
}

impl PullClaims {
    /// A claim handle for a new session with `peer` (`dialled`: this node dialled it). It
    /// holds nothing until [`Claim::try_hold`] succeeds.
    pub fn session(self: &Arc<Self>, peer: NodeId, dialled: bool) -> Claim {
        Claim {
            claims: self.clone(),
            peer,
            holder: Holder {
                session: self.next_session.fetch_add(1, Ordering::Relaxed),
                dialled,
            },
        }
    }
}

impl Claim {
    /// Whether this session may pull now: it holds the claim, or takes it (a free one, or,
    /// for a dialled session, one an incoming session holds).
    pub fn try_hold(&self) -> bool {
        let mut by_peer = self
            .claims
            .by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match by_peer.get(&self.peer) {
            Some(holder) if *holder == self.holder => true,
            Some(holder) if holder.dialled || !self.holder.dialled => false,
            _ => {
                by_peer.insert(self.peer.clone(), self.holder);
                true
            }
        }
    }
}

impl Claim {
    /// Whether another session of the same peer holds the claim.
    pub fn held_elsewhere(&self) -> bool {
        let by_peer = self
            .claims
            .by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        by_peer
            .get(&self.peer)
            .is_some_and(|holder| *holder != self.holder)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut by_peer = self
            .claims
            .by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if by_peer.get(&self.peer) == Some(&self.holder) {
            by_peer.remove(&self.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_pulls_from_a_peer_and_a_dialled_one_takes_over() {
        // Goal: never two pullers of one peer; the dialled session is preferred; a claim is
        // freed when its session ends.
        let claims = Arc::new(PullClaims::default());
        let peer = NodeId::new("us-west").unwrap();
        let incoming = claims.session(peer.clone(), false);
        let other_incoming = claims.session(peer.clone(), false);
        assert!(incoming.try_hold());
        assert!(!other_incoming.try_hold());
        let dialled = claims.session(peer.clone(), true);
        assert!(dialled.try_hold(), "a dialled session takes over");
        assert!(!incoming.try_hold());
        drop(dialled);
        assert!(other_incoming.try_hold(), "released when its session ends");
        let elsewhere = claims.session(NodeId::new("eu").unwrap(), false);
        assert!(elsewhere.try_hold(), "claims are per peer");
    }
}
