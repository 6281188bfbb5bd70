//! One upstream node as the dispatcher keeps it: its breaker, its readiness, and its bulkhead
//! (a bounded queue of batches and a bounded number in flight), so one slow node fills its
//! own queue and the next node takes the rest.

use std::collections::VecDeque;
use std::time::Duration;

use tally_client::Endpoint;
use tokio::time::Instant;

use super::batch::Batch;
use crate::breaker::{Breaker, BreakerState};
use crate::metrics::NodeGauges;
use crate::upstream::Connection;

/// One node.
pub(super) struct Node {
    /// Where it is.
    pub(super) endpoint: Endpoint,
    /// Whether its last probe found it ready.
    pub(super) ready: bool,
    /// Why not, as last logged (a change is logged once).
    pub(super) not_ready_why: Option<String>,
    /// Its breaker.
    pub(super) breaker: Breaker,
    /// Batches waiting for a free slot.
    pub(super) queue: VecDeque<Batch>,
    /// Batches in flight.
    pub(super) in_flight: usize,
    /// Connections kept alive for the next batch.
    pub(super) idle: Vec<Connection>,
    /// Its gauges.
    pub(super) gauges: NodeGauges,
}

impl Node {
    /// A node not yet probed (not ready).
    pub(super) fn new(
        endpoint: Endpoint,
        breaker_failures: u32,
        breaker_open: Duration,
        gauges: NodeGauges,
    ) -> Self {
        Self {
            gauges,
            endpoint,
            ready: false,
            not_ready_why: None,
            breaker: Breaker::new(breaker_failures, breaker_open),
            queue: VecDeque::new(),
            in_flight: 0,
            idle: Vec::new(),
        }
    }

    /// Whether batches may be queued for it now: it is ready, its breaker is closed (or
    /// half-open with no probe out and nothing queued, so the next batch is the probe), and
    /// its queue has room.
    pub(super) fn takes_batches(&self, now: Instant, queue_max: usize) -> bool {
        let breaker_allows = match self.breaker.state(now) {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => self.breaker.would_send(now) && self.queue.is_empty(),
            BreakerState::Open => false,
        };
        self.ready && breaker_allows && self.queue.len() < queue_max
    }

    /// Whether it could take votes soon (ready, and its breaker not open): the door sheds
    /// votes at once when no node can.
    pub(super) fn available(&self, now: Instant) -> bool {
        self.ready && self.breaker.state(now) != BreakerState::Open
    }
}
