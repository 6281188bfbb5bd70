//! An edge's Prometheus metrics, served at `/metrics` (OpenMetrics text). Names start with
//! `tally_edge_`; units are in the name. Per-node series carry the label `upstream` (the
//! node's URL as configured).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::breaker::BreakerState;

/// Label set of one dimension, e.g. `[("outcome", "counted")]`.
pub type Labels = Vec<(&'static str, &'static str)>;

/// Label set naming one upstream node.
pub type UpstreamLabels = Vec<(&'static str, String)>;

/// How a vote was answered (the `outcome` of `tally_edge_votes_answered_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A node counted it.
    Counted,
    /// A node had it already.
    Duplicate,
    /// Refused by a node's word (or an unknown poll no node lists).
    Refused,
    /// 503 `unconfirmed`: sent on, no answer in time (may have been counted).
    Unconfirmed,
    /// 503 `overloaded`: never sent on before its deadline (not counted).
    Shed,
}

impl Outcome {
    /// Every outcome, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 5] = [
        Self::Counted,
        Self::Duplicate,
        Self::Refused,
        Self::Unconfirmed,
        Self::Shed,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counted => "counted",
            Self::Duplicate => "duplicate",
            Self::Refused => "refused",
            Self::Unconfirmed => "unconfirmed",
            Self::Shed => "shed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One node's gauges, resolved once (a label lookup allocates, hashes and locks).
#[derive(Clone)]
pub struct NodeGauges {
    breaker: Gauge,
    ready: Gauge,
    in_flight: Gauge,
    queued: Gauge,
}

impl NodeGauges {
    /// Sets them all.
    pub fn set(&self, breaker: BreakerState, ready: bool, in_flight: usize, queued: usize) {
        self.breaker.set(breaker.gauge());
        self.ready.set(i64::from(ready));
        self.in_flight.set(in_flight as i64);
        self.queued.set(queued as i64);
    }
}

/// Every `outcome` of `tally_edge_batches_total`.
pub const BATCH_OUTCOMES: [&str; 5] = ["answered", "slow", "refused", "lost", "not_sent"];

/// Every metric of an edge.
pub struct EdgeMetrics {
    registry: Registry,
    /// Votes taken in (past the door's checks, handed to the dispatcher).
    pub votes_received: Counter,
    /// Votes answered, by outcome (see [`Outcome`]).
    pub votes_answered: Family<Labels, Counter>,
    /// Requests refused at the door, by error code (never sent on).
    pub rejections: Family<Labels, Counter>,
    /// Time from a vote's arrival to its answer, in seconds.
    pub vote_seconds: Histogram,
    /// Votes per batch sent.
    pub batch_votes: Histogram,
    /// How long a batch's first vote waited for the batch to be sent, in seconds.
    pub batch_linger_seconds: Histogram,
    /// Votes sent again after a batch failed or was refused (same vote IDs).
    pub votes_resent: Counter,
    /// Votes waiting at the edge (not yet answered).
    pub votes_waiting: Gauge,
    /// 1 while the edge takes votes, 0 otherwise.
    pub ready: Gauge,
    /// Per node: a batch's round trip, in seconds.
    pub upstream_batch_seconds: Family<UpstreamLabels, Histogram>,
    /// Per node and outcome (see [`BATCH_OUTCOMES`]): batches.
    pub upstream_batches: Family<Vec<(&'static str, String)>, Counter>,
    /// Per node: the breaker, 0 closed, 1 half-open, 2 open.
    pub upstream_breaker: Family<UpstreamLabels, Gauge>,
    /// Per node: times its breaker opened.
    pub upstream_breaker_openings: Family<UpstreamLabels, Counter>,
    /// Per node: 1 while its `/readyz` says ready.
    pub upstream_ready: Family<UpstreamLabels, Gauge>,
    /// Per node: batches in flight.
    pub upstream_in_flight: Family<UpstreamLabels, Gauge>,
    /// Per node: batches waiting for a free slot.
    pub upstream_queued: Family<UpstreamLabels, Gauge>,
    /// The counters of [`Outcome::ALL`], resolved once.
    outcomes: Vec<Counter>,
}

fn upstream(name: &str) -> UpstreamLabels {
    vec![("upstream", name.to_owned())]
}

impl EdgeMetrics {
    /// Every metric, registered, with the series of each of `upstreams` present from the start.
    pub fn new(upstreams: &[String]) -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            registry: Registry::default(),
            votes_received: Counter::default(),
            votes_answered: Family::default(),
            rejections: Family::default(),
            vote_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            batch_votes: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            batch_linger_seconds: Histogram::new(exponential_buckets(0.000_125, 2.0, 10)),
            votes_resent: Counter::default(),
            votes_waiting: Gauge::default(),
            ready: Gauge::default(),
            upstream_batch_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            }),
            upstream_batches: Family::default(),
            upstream_breaker: Family::default(),
            upstream_breaker_openings: Family::default(),
            upstream_ready: Family::default(),
            upstream_in_flight: Family::default(),
            upstream_queued: Family::default(),
            outcomes: Vec::new(),
        };
        let outcomes = Outcome::ALL
            .iter()
            .map(|o| {
                metrics
                    .votes_answered
                    .get_or_create(&vec![("outcome", o.as_str())])
                    .clone()
            })
            .collect();
        for name in upstreams {
            let labels = upstream(name);
            let _ = metrics.upstream_batch_seconds.get_or_create(&labels);
            let _ = metrics.upstream_breaker.get_or_create(&labels);
            let _ = metrics.upstream_breaker_openings.get_or_create(&labels);
            let _ = metrics.upstream_ready.get_or_create(&labels);
            let _ = metrics.upstream_in_flight.get_or_create(&labels);
            let _ = metrics.upstream_queued.get_or_create(&labels);
            for outcome in BATCH_OUTCOMES {
                let _ = metrics.upstream_batches.get_or_create(&vec![
                    ("upstream", name.clone()),
                    ("outcome", outcome.to_owned()),
                ]);
            }
        }
        registry.register(
            "tally_edge_votes_received",
            "Votes taken in by the edge and handed on for batching",
            metrics.votes_received.clone(),
        );
        registry.register(
            "tally_edge_votes_answered",
            "Votes answered by the edge, by outcome (counted and duplicate come from a node)",
            metrics.votes_answered.clone(),
        );
        registry.register(
            "tally_edge_vote_rejections",
            "Requests refused at the edge before any node saw them, by error code",
            metrics.rejections.clone(),
        );
        registry.register(
            "tally_edge_vote_seconds",
            "Time from a vote's arrival at the edge to its answer",
            metrics.vote_seconds.clone(),
        );
        registry.register(
            "tally_edge_batch_votes",
            "Votes per batch sent to a node",
            metrics.batch_votes.clone(),
        );
        registry.register(
            "tally_edge_batch_linger_seconds",
            "How long a batch's first vote waited before the batch was sent",
            metrics.batch_linger_seconds.clone(),
        );
        registry.register(
            "tally_edge_votes_resent",
            "Votes sent again, with the same vote IDs, after a batch failed or was refused",
            metrics.votes_resent.clone(),
        );
        registry.register(
            "tally_edge_votes_waiting",
            "Votes waiting at the edge for a node's answer",
            metrics.votes_waiting.clone(),
        );
        registry.register(
            "tally_edge_ready",
            "1 while the edge takes votes",
            metrics.ready.clone(),
        );
        registry.register(
            "tally_edge_upstream_batch_seconds",
            "Round trip of a batch to a node",
            metrics.upstream_batch_seconds.clone(),
        );
        registry.register(
            "tally_edge_upstream_batches",
            "Batches sent to a node, by outcome",
            metrics.upstream_batches.clone(),
        );
        registry.register(
            "tally_edge_upstream_breaker_state",
            "A node's circuit breaker: 0 closed, 1 half-open, 2 open",
            metrics.upstream_breaker.clone(),
        );
        registry.register(
            "tally_edge_upstream_breaker_openings",
            "Times a node's circuit breaker opened",
            metrics.upstream_breaker_openings.clone(),
        );
        registry.register(
            "tally_edge_upstream_ready",
            "1 while a node's /readyz says it serves votes",
            metrics.upstream_ready.clone(),
        );
        registry.register(
            "tally_edge_upstream_in_flight_batches",
            "Batches in flight to a node",
            metrics.upstream_in_flight.clone(),
        );
        registry.register(
            "tally_edge_upstream_queued_batches",
            "Batches waiting for a free slot to a node",
            metrics.upstream_queued.clone(),
        );
        Self {
            registry,
            outcomes,
            ..metrics
        }
    }

    /// Counts `count` votes answered with `outcome`.
    pub fn answered(&self, outcome: Outcome, count: u64) {
        if count > 0 {
            self.outcomes[outcome.index()].inc_by(count);
        }
    }

    /// Counts a refusal at the door.
    pub fn rejected(&self, code: &'static str) {
        self.rejections.get_or_create(&vec![("code", code)]).inc();
    }

    /// Counts a batch to node `name` that ended with `outcome` (one of [`BATCH_OUTCOMES`]).
    pub fn batch(&self, name: &str, outcome: &'static str, seconds: f64) {
        self.upstream_batches
            .get_or_create(&vec![
                ("upstream", name.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.upstream_batch_seconds
            .get_or_create(&upstream(name))
            .observe(seconds);
    }

    /// Node `name`'s gauges.
    pub fn node_gauges(&self, name: &str) -> NodeGauges {
        let labels = upstream(name);
        NodeGauges {
            breaker: self.upstream_breaker.get_or_create(&labels).clone(),
            ready: self.upstream_ready.get_or_create(&labels).clone(),
            in_flight: self.upstream_in_flight.get_or_create(&labels).clone(),
            queued: self.upstream_queued.get_or_create(&labels).clone(),
        }
    }

    /// Counts an opening of node `name`'s breaker.
    pub fn breaker_opened(&self, name: &str) {
        self.upstream_breaker_openings
            .get_or_create(&upstream(name))
            .inc();
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
