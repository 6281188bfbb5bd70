//! The dispatcher: one task that owns every vote between the door and a node's answer.
//!
//! Votes of a poll gather in its buffer and leave as one postcard batch when the buffer holds
//! `batch_votes_max` votes, when its first vote has waited `linger_ms`, or at once when the
//! node it would go to is idle (no batch out or queued: at a low rate no vote waits for the
//! linger; under load votes gather). A
//! batch goes to the nearest node that takes batches (ready by its `/readyz`, its breaker
//! closed, room in its queue), waits in that node's bounded queue for one of its bounded
//! in-flight slots, and is sent by a task of its own. Each vote is answered from the node's
//! per-vote durable status, never on the edge's own authority. When a batch's answer is lost
//! or late, or the node refuses it, its unanswered votes go again, with the same vote IDs, to
//! the next node (exactly-once makes that safe); a vote whose deadline passes is answered 503
//! (`unconfirmed` if a node may have taken it, `overloaded` if none can have).
//!
//! Bounds: votes waiting are bounded by the door (`votes_waiting_max`, tower's concurrency
//! limit), batches per node by `upstream_queue_batches` and `batches_in_flight_per_upstream`;
//! a full set of queues leaves votes in their poll's buffer until a slot frees or their
//! deadline passes.

mod batch;
mod node;
mod outcome;
mod run;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tally_client::Endpoint;
use tally_core::VoteId;
use tally_serve::error::ApiError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::catalogue::{Catalogue, PollSlot};
use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::upstream::Connector;

/// A vote for the dispatcher to get answered.
#[derive(Debug)]
pub struct VoteOrder {
    /// The poll's slot in the catalogue.
    pub poll: PollSlot,
    /// The option, as a position in the catalogue's option list of the poll.
    pub option: u8,
    /// The vote ID.
    pub vote_id: VoteId,
    /// Where the answer goes.
    pub reply: oneshot::Sender<VoteAnswer>,
}

/// A vote's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteAnswer {
    /// A node counted it, durably: the receipt's fields.
    Counted {
        /// The actor, `node#incarnation`.
        actor: Arc<str>,
        /// The record's seq.
        seq: u64,
        /// Its poll second.
        second: u32,
        /// The node that counted it (its ID).
        node: Arc<str>,
    },
    /// A node had it already.
    Duplicate {
        /// The node (its ID).
        node: Arc<str>,
    },
    /// Refused (by a node's word, or 503 at the deadline).
    Refused(ApiError),
}

/// The dispatcher's settings (from the edge's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A batch is sent once it holds this many votes.
    pub batch_votes_max: usize,
    /// …or this long after its first vote.
    pub linger: Duration,
    /// A poll's batch that is not full waits at least this long after the poll's previous
    /// batch.
    pub batch_interval: Duration,
    /// Batches in flight per node.
    pub in_flight_max: usize,
    /// Batches queued per node.
    pub queue_max: usize,
    /// A vote is answered 503 this long after it arrived, if no node has answered it.
    pub vote_deadline: Duration,
    /// A batch's answer may take this long.
    pub batch_timeout: Duration,
    /// A batch answer slower than this counts against the node's breaker.
    pub slow_batch: Duration,
    /// Consecutive failures that open a node's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before its probe.
    pub breaker_open: Duration,
    /// How often each node is probed.
    pub probe_interval: Duration,
    /// How often each node's poll list is read.
    pub poll_list_interval: Duration,
    /// Most votes waiting at once (the orders channel's capacity).
    pub votes_waiting_max: usize,
    /// `Authorization` header value for batches (`Bearer <batch token>`), if any.
    pub authorization: Option<String>,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &EdgeConfig) -> Self {
        Self {
            batch_votes_max: config.batch_votes_max,
            linger: EdgeConfig::ms(config.linger_ms),
            batch_interval: EdgeConfig::ms(config.batch_interval_ms),
            in_flight_max: config.batches_in_flight_per_upstream,
            queue_max: config.upstream_queue_batches,
            vote_deadline: EdgeConfig::ms(config.vote_deadline_ms),
            batch_timeout: EdgeConfig::ms(config.batch_timeout_ms),
            slow_batch: EdgeConfig::ms(config.slow_batch_ms),
            breaker_failures: config.breaker_failures,
            breaker_open: EdgeConfig::ms(config.breaker_open_ms),
            probe_interval: EdgeConfig::ms(config.probe_interval_ms),
            poll_list_interval: EdgeConfig::ms(config.poll_list_interval_ms),
            votes_waiting_max: config.votes_waiting_max,
            authorization: (!config.batch_token.is_empty())
                .then(|| format!("Bearer {}", config.batch_token)),
        }
    }
}

/// What the door reads of the dispatcher's view: which nodes are ready with their breaker
/// not open (bit `i`: node `i`, nearest first).
#[derive(Debug, Default)]
pub struct Availability {
    nodes: AtomicU32,
}

impl Availability {
    /// How many nodes are ready with their breaker not open.
    pub fn nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed).count_ones() as usize
    }

    /// The nearest such node, if any.
    pub fn nearest(&self) -> Option<usize> {
        let nodes = self.nodes.load(Ordering::Relaxed);
        (nodes != 0).then(|| nodes.trailing_zeros() as usize)
    }

    /// Whether node `node` is ready with its breaker not open.
    pub fn is_available(&self, node: usize) -> bool {
        node < 32 && self.nodes.load(Ordering::Relaxed) & (1 << node) != 0
    }

    fn set(&self, nodes: u32) {
        self.nodes.store(nodes, Ordering::Relaxed);
    }
}

/// The handlers' side of a running dispatcher.
#[derive(Clone)]
pub struct Dispatch {
    /// Where votes go (bounded by `votes_waiting_max`).
    pub orders: mpsc::Sender<VoteOrder>,
    /// The polls the edge takes votes for.
    pub catalogue: watch::Receiver<Arc<Catalogue>>,
    /// How many nodes can take votes.
    pub availability: Arc<Availability>,
}

/// The running dispatcher and its probes.
pub struct Running {
    /// Ends once the dispatcher has answered every vote and its order channel is closed.
    pub dispatcher: JoinHandle<()>,
    /// One per node; they end when `stopping` is set.
    pub probes: Vec<JoinHandle<()>>,
}

/// Starts the dispatcher for `nodes` (nearest first) and a probe per node. It stops taking
/// time to linger once `stopping` is set, and ends once every sender of
/// [`Dispatch::orders`] is gone and every vote it holds is answered.
pub fn start(
    settings: Settings,
    nodes: Vec<Endpoint>,
    connector: Arc<dyn Connector>,
    metrics: Arc<EdgeMetrics>,
    stopping: watch::Receiver<bool>,
) -> (Dispatch, Running) {
    let (orders_tx, orders_rx) = mpsc::channel(settings.votes_waiting_max);
    let (probe_tx, probe_rx) = mpsc::channel(nodes.len() * 2);
    let (catalogue_tx, catalogue_rx) = watch::channel(Arc::new(Catalogue::default()));
    let availability = Arc::new(Availability::default());
    let probes = nodes
        .iter()
        .enumerate()
        .map(|(index, endpoint)| {
            tokio::spawn(crate::upstream::probe(
                index,
                endpoint.clone(),
                connector.clone(),
                crate::upstream::ProbeTimes {
                    interval: settings.probe_interval,
                    poll_list_interval: settings.poll_list_interval,
                },
                probe_tx.clone(),
                stopping.clone(),
            ))
        })
        .collect();
    let dispatcher = run::Dispatcher::new(
        settings,
        nodes,
        run::Wiring {
            connector,
            metrics,
            availability: availability.clone(),
            catalogue: catalogue_tx,
            orders: orders_rx,
            probes: probe_rx,
            stopping,
        },
    );
    let dispatch = Dispatch {
        orders: orders_tx,
        catalogue: catalogue_rx,
        availability,
    };
    (
        dispatch,
        Running {
            dispatcher: tokio::spawn(dispatcher.run()),
            probes,
        },
    )
}
