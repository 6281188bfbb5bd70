//! Which session pulls from each peer. A node pulls from every authenticated peer of its
//! cluster it has a session with, listed or not (the peer list is where to dial, not who may
//! be heard), and from each peer once: over the session it dialled when that one is up, else
//! over the session the peer dialled. So a one-sided peer list (A lists B, B lists nobody)
//! still syncs both ways, and two nodes that list each other do not pull twice.
//!
//! Which session pushes this node's records to each ack peer (replicated acks) is a claim of
//! its own, [`PushClaim`]: the **newest** session takes it over as it comes up, and when the
//! holder ends, the next session to ask takes it. Not the pull claim: a peer that was killed
//! or moved (a pod's new IP) leaves this node's dialled session to it open until QUIC's idle
//! timeout (30 s), and the pull claim's preference for dialled sessions would keep pushes on
//! that dead session while the peer's new session stands by; the newest session is the one
//! that just proved the peer alive.
//!
//! Bounded by the cluster: one claim of each kind per peer node ID, and a node ID is only ever
//! presented with a certificate the cluster CA issued for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tally_core::NodeId;

/// The claims of every peer; shared by all sessions of a node.
#[derive(Debug, Default)]
pub struct PullClaims {
    by_peer: Mutex<BTreeMap<NodeId, Holder>>,
    next_session: AtomicU64,
    /// Per peer, the session that pushes to it (see [`PushClaim`]).
    pushing: Mutex<BTreeMap<NodeId, u64>>,
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
        let mut by_peer = lock(&self.claims.by_peer);
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

impl PullClaims {
    /// The push claim of a new session with `peer`: it takes the claim over from any older
    /// session at once.
    pub fn push_session(self: &Arc<Self>, peer: NodeId) -> PushClaim {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        lock(&self.pushing).insert(peer.clone(), session);
        PushClaim {
            claims: self.clone(),
            peer,
            session,
        }
    }
}

/// One session's right to push this node's records to its peer, released when dropped.
#[derive(Debug)]
pub struct PushClaim {
    claims: Arc<PullClaims>,
    peer: NodeId,
    session: u64,
}

impl PushClaim {
    /// Whether this session may push now: it holds the claim, or takes a free one (its holder
    /// ended). A newer session's takeover is final while that session lasts.
    pub fn try_hold(&self) -> bool {
        let mut pushing = lock(&self.claims.pushing);
        match pushing.get(&self.peer) {
            Some(&holder) => holder == self.session,
            None => {
                pushing.insert(self.peer.clone(), self.session);
                true
            }
        }
    }
}

impl Drop for PushClaim {
    fn drop(&mut self) {
        release(&self.claims.pushing, &self.peer, &self.session);
    }
}

impl Claim {
    /// Whether another session of the same peer holds the claim.
    pub fn held_elsewhere(&self) -> bool {
        let by_peer = lock(&self.claims.by_peer);
        by_peer
            .get(&self.peer)
            .is_some_and(|holder| *holder != self.holder)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        release(&self.claims.by_peer, &self.peer, &self.holder);
    }
}

/// `map`, locked. A panic while it was held cannot leave it half-changed (each change is one
/// insert or remove), so a poisoned lock is taken as it is.
fn lock<H>(map: &Mutex<BTreeMap<NodeId, H>>) -> MutexGuard<'_, BTreeMap<NodeId, H>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Frees `peer`'s entry in `map` if `holder` holds it (a newer holder keeps it).
fn release<H: PartialEq>(map: &Mutex<BTreeMap<NodeId, H>>, peer: &NodeId, holder: &H) {
    let mut map = lock(map);
    if map.get(peer) == Some(holder) {
        map.remove(peer);
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

    #[test]
    fn the_newest_session_pushes_to_a_peer_and_an_older_one_takes_over_when_it_ends() {
        // Goal: never two pushers of one peer; the newest session pushes, even while an older
        // dialled one lingers (a killed peer's session waits out QUIC's idle timeout); an
        // older session pushes again once the newer one ends.
        let claims = Arc::new(PullClaims::default());
        let peer = NodeId::new("us-west").unwrap();
        let dialled = claims.push_session(peer.clone());
        assert!(dialled.try_hold());
        let incoming = claims.push_session(peer.clone());
        assert!(incoming.try_hold(), "the newer session takes over");
        assert!(!dialled.try_hold(), "the older one stops");
        let other = claims.push_session(NodeId::new("eu").unwrap());
        assert!(other.try_hold(), "claims are per peer");
        assert!(incoming.try_hold());
        drop(incoming);
        assert!(dialled.try_hold(), "released when its session ends");
        let pull = claims.session(peer.clone(), true);
        assert!(pull.try_hold(), "pull and push claims are apart");
        assert!(dialled.try_hold());
    }
}
