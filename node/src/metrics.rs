//! Prometheus metrics: one registry per node, served at `/metrics` in the OpenMetrics text
//! format. Metric names start with `tally_`; units are in the name (`_seconds`, `_bytes`).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of one dimension, e.g. `[("outcome", "counted")]`.
pub type Labels = Vec<(&'static str, &'static str)>;

/// The `reason` of `tally_incarnation_changes_total` for a move to a new incarnation while
/// serving: a peer sent this node's own records that its log lacks (`engine::incarnation`).
pub const OWN_RECORDS_FROM_PEER: &str = "own_records_from_peer";

/// Every `reason` of `tally_incarnation_changes_total` (its series exist from the start).
pub const INCARNATION_CHANGE_REASONS: [&str; 4] = [
    "no_log",
    "log_tail_cut",
    "log_damage",
    OWN_RECORDS_FROM_PEER,
];

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    /// Votes answered, by outcome (`counted`, `duplicate`, `rejected`).
    pub votes: Family<Labels, Counter>,
    /// Votes refused, by reason.
    pub rejections: Family<Labels, Counter>,
    /// HTTP request latency by route, in seconds.
    pub request_seconds: Family<Labels, Histogram>,
    /// Write-ahead log fsync latency, in seconds.
    pub fsync_seconds: Histogram,
    /// Log entries made durable per fsync (group size).
    pub group_entries: Histogram,
    /// Bytes written per fsync.
    pub group_bytes: Histogram,
    /// Time the engine spent on one wake-up, during which every other vote waits.
    pub engine_busy_seconds: Histogram,
    /// Open SSE subscriptions.
    pub sse_subscribers: Gauge,
    /// Commands waiting for the engine.
    pub engine_queue_depth: Gauge,
    /// Replies waiting for an fsync.
    pub waiting_replies: Gauge,
    /// 1 while the node serves votes, 0 otherwise.
    pub ready: Gauge,
    /// 1 while a hold keeps the node from serving, per hold (label `hold`: `disk_low`,
    /// `clock_skew`, `log_failed`, `catching_up`, `stopping`).
    pub holds: Family<Labels, Gauge>,
    /// Free bytes where the log lives, as the disk watch last read them (0 without a watch:
    /// memory-only).
    pub disk_free_bytes: Gauge,
    /// `disk_reserve_bytes`: below it new votes are refused (0 without a watch).
    pub disk_reserve_bytes: Gauge,
    /// Displayed (net) votes per poll and option, as of the latest results snapshot.
    pub poll_votes: Family<PollLabels, Gauge>,
    /// Distinct vote IDs held per poll, and how many its dedupe index holds before it must
    /// grow (again, if it is growing; `expected_votes` reserves it up front).
    pub poll_vote_ids: Family<PollLabels, Gauge>,
    /// See [`Metrics::poll_vote_ids`].
    pub poll_vote_id_capacity: Family<PollLabels, Gauge>,
    /// 1 while a poll's dedupe index grows (step by step: no vote waits for it, but the
    /// index holds its old and new table at once), 0 otherwise.
    pub poll_vote_id_growth: Family<PollLabels, Gauge>,
    /// How far the growth has come, from 0 to 1 (1 when not growing).
    pub poll_vote_id_growth_progress: Family<PollLabels, Gauge<f64, AtomicU64>>,
    /// 1 while a node (label `peer`: a peer, or a node heard of through peers) holds another
    /// definition of a poll than this node: another option list or order.
    pub definition_disputes: Family<PollLabels, Gauge>,
    /// 1 while this node's definition of a poll lost the cluster's agreement: it counts none
    /// of that poll's votes.
    pub definition_lost: Family<PollLabels, Gauge>,
    /// Per peer: the sync session's gauges and counters.
    pub peers: PeerMetrics,
    /// Replicated acks (`ack_mode = "replicated"`).
    pub acks: AckMetrics,
    /// Steps of this node's wall clock against its monotonic clock (by more than half of
    /// `max_clock_offset_ms`) seen by the clock watch.
    pub clock_steps: Counter,
    /// Moves to a new incarnation (actor), by reason: `no_log`, `log_tail_cut` and
    /// `log_damage` at start-up, `own_records_from_peer` while serving.
    pub incarnation_changes: Family<Labels, Counter>,
    /// 1 when this run started from a damaged write-ahead log.
    pub log_damaged: Gauge,
    /// Records the damaged log was known to lack at start-up (gaps its valid entries show).
    pub log_missing_records: Gauge,
    /// Votes recorded again under the new incarnation at start-up because their records
    /// followed a gap in a damaged log (each a second record of its vote until the winner
    /// rule retracts one: totals may show them twice meanwhile).
    pub log_adopted_votes: Gauge,
    /// The `votes` counters of the outcomes every vote reaches, resolved once: looking a
    /// label set up allocates, hashes and locks, which was a measurable part of a vote's CPU.
    vote_outcomes: VoteOutcomes,
}

/// Handles into [`Metrics::votes`] for its three outcomes (they share the family's values).
struct VoteOutcomes {
    counted: Counter,
    duplicate: Counter,
    rejected: Counter,
}

/// Label set naming one poll option, e.g. `[("poll", "superbowl"), ("option", "green")]`.
pub type PollLabels = Vec<(&'static str, String)>;

/// Label set naming one peer, e.g. `[("peer", "us-west")]`.
pub type PeerLabels = Vec<(&'static str, String)>;

/// Per-peer replication metrics (label `peer`).
#[derive(Default)]
pub struct PeerMetrics {
    /// 1 while a sync session with the peer is up.
    pub connected: Family<PeerLabels, Gauge>,
    /// Records received from the peer and newly held.
    pub records_received: Family<PeerLabels, Counter>,
    /// Frame bytes sent to the peer.
    pub bytes_sent: Family<PeerLabels, Counter>,
    /// Frame bytes received from the peer.
    pub bytes_received: Family<PeerLabels, Counter>,
    /// Unix time of the last completed sync round, in seconds.
    pub last_contact_seconds: Family<PeerLabels, Gauge>,
    /// Records the peer holds that this node does not (after the last round).
    pub records_behind: Family<PeerLabels, Gauge>,
    /// Seconds since this node last held everything the peer held.
    pub seconds_behind: Family<PeerLabels, Gauge>,
    /// Sessions or frames refused, by peer and cause (see [`REFUSAL_CAUSES`]).
    pub refusals: Family<PeerLabels, Counter>,
    /// Parts of a peer's pull answer that were not merged, by peer and cause
    /// (`tally_core::AnswerRefusal::cause`).
    pub answer_refusals: Family<PeerLabels, Counter>,
    /// The peer's wall clock minus this node's, estimated over the recent sync rounds, in
    /// seconds (absent until measured).
    pub clock_offset_seconds: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// The error bound of that estimate (half the fastest recent round trip), in seconds.
    pub clock_offset_error_seconds: Family<PeerLabels, Gauge<f64, AtomicU64>>,
}

/// The metrics of replicated acks (all zero in `ack_mode = "local"`).
pub struct AckMetrics {
    /// Time from a vote's local fsync to the ack peer's answer that covers it, in seconds
    /// (the round trip and the peer's fsync: what `replicated` adds to a vote's answer).
    pub peer_wait_seconds: Histogram,
    /// Votes whose record no ack peer confirmed, by `outcome` (`refused`: answered 503;
    /// `local`: acknowledged after the local fsync alone, `ack_fallback = "local"`) and
    /// `cause` (`timeout`: no answer within `ack_timeout_ms`; `disconnected`: no ack peer
    /// connected; `stalled`: no ack peer's confirmation advanced for `ack_timeout_ms`).
    pub misses: Family<Labels, Counter>,
    /// This node's own durable records that no ack peer has confirmed yet.
    pub peer_lag_records: Gauge,
    /// Votes durable here that wait for an ack peer's confirmation (at most
    /// `engine::PEER_WAITING_VOTES_MAX`; past it new votes are shed).
    pub waiting_votes: Gauge,
    /// Probes pushed: a record pushed again so that an ack peer says what it now holds (a
    /// waiting vote's record it had not confirmed, or the last record at a session's start).
    pub probes: Counter,
    /// Ack peers with a push session up.
    pub peers_connected: Gauge,
    /// 1 while the ack peers are stalled: a vote's deadline passed and no confirmation
    /// advanced for `ack_timeout_ms` (votes are then refused at once, or acknowledged locally
    /// with `ack_fallback = "local"`, until one advances or a new push session comes up).
    pub stalled: Gauge,
    /// Ack peers configured (`ack_peers` other than this node; 0 in `ack_mode = "local"`).
    pub peers_configured: Gauge,
    /// Records pushed to ack peers.
    pub records_pushed: Counter,
    /// Records a peer pushed to this node, and it logged and confirmed.
    pub records_confirmed: Counter,
    /// Pushes from peers answered, by `lane`: `journal` (durable in the push journal, the
    /// engine not waited for) or `log` (answered after the engine merged and logged them:
    /// the first push of a session, a probe, or the journal full, failed or the disk low).
    pub pushes_answered: Family<Labels, Counter>,
    /// Records in the push journal that the main log may not hold yet (at most
    /// `push_journal::PUSH_JOURNAL_RECORDS_MAX`; past it pushes take the `log` lane).
    pub journal_records: Gauge,
    /// Pushes that found the push journal full (answered on the `log` lane instead).
    pub journal_full: Counter,
    /// How a push session got this node's records to push, by `source`: `feed` (handed
    /// over by the engine as their log job became durable, the engine not waited for) or
    /// `engine` (asked of the engine: a session's start, probes, a session further behind
    /// than the feed keeps).
    pub push_reads: Family<Labels, Counter>,
}

/// Every `source` of `tally_ack_push_reads_total`.
pub const PUSH_READ_SOURCES: [&str; 2] = ["feed", "engine"];

/// Every `lane` of `tally_ack_pushes_answered_total`.
pub const PUSH_ANSWER_LANES: [&str; 2] = ["journal", "log"];

/// Every `outcome` and `cause` of `tally_ack_peer_misses_total` (their series exist from the
/// start, for the alert rules).
pub const ACK_MISS_LABELS: [(&str, &str); 6] = [
    ("refused", "timeout"),
    ("refused", "disconnected"),
    ("refused", "stalled"),
    ("local", "timeout"),
    ("local", "disconnected"),
    ("local", "stalled"),
];

impl AckMetrics {
    fn new(registry: &mut Registry) -> Self {
        let peer_wait_seconds = Histogram::new(latency_buckets());
        registry.register(
            "ack_peer_wait_seconds",
            "Replicated acks: time from a vote's local fsync to the ack peer's confirmation",
            peer_wait_seconds.clone(),
        );
        let misses = Family::<Labels, Counter>::default();
        registry.register(
            "ack_peer_misses",
            "Replicated acks: votes no ack peer confirmed, by outcome (refused, local) and cause",
            misses.clone(),
        );
        for (outcome, cause) in ACK_MISS_LABELS {
            let _ = misses.get_or_create(&vec![("outcome", outcome), ("cause", cause)]);
        }
        let peer_lag_records = Gauge::default();
        registry.register(
            "ack_peer_lag_records",
            "Replicated acks: this node's durable records no ack peer has confirmed yet",
            peer_lag_records.clone(),
        );
        let waiting_votes = Gauge::default();
        registry.register(
            "ack_waiting_votes",
            "Replicated acks: votes durable here waiting for an ack peer's confirmation",
            waiting_votes.clone(),
        );
        let probes = Counter::default();
        registry.register(
            "ack_probes",
            "Replicated acks: records pushed again so an ack peer says what it holds",
            probes.clone(),
        );
        let peers_connected = Gauge::default();
        registry.register(
            "ack_peers_connected",
            "Replicated acks: ack peers with a push session up",
            peers_connected.clone(),
        );
        let stalled = Gauge::default();
        registry.register(
            "ack_peers_stalled",
            "Replicated acks: 1 while no ack peer's confirmation advanced within ack_timeout_ms \
             though votes waited",
            stalled.clone(),
        );
        let peers_configured = Gauge::default();
        registry.register(
            "ack_peers_configured",
            "Replicated acks: ack peers configured (0 in ack_mode = local)",
            peers_configured.clone(),
        );
        let records_pushed = Counter::default();
        registry.register(
            "ack_records_pushed",
            "Replicated acks: records pushed to ack peers",
            records_pushed.clone(),
        );
        let records_confirmed = Counter::default();
        registry.register(
            "ack_records_confirmed",
            "Replicated acks: records peers pushed to this node that it logged and confirmed",
            records_confirmed.clone(),
        );
        let pushes_answered = Family::<Labels, Counter>::default();
        registry.register(
            "ack_pushes_answered",
            "Replicated acks: peers' pushes answered durable, by lane (journal, log)",
            pushes_answered.clone(),
        );
        for lane in PUSH_ANSWER_LANES {
            let _ = pushes_answered.get_or_create(&vec![("lane", lane)]);
        }
        let journal_records = Gauge::default();
        registry.register(
            "ack_push_journal_records",
            "Replicated acks: records in the push journal the main log may not hold yet",
            journal_records.clone(),
        );
        let journal_full = Counter::default();
        registry.register(
            "ack_push_journal_full",
            "Replicated acks: pushes that found the push journal full (answered after the log)",
            journal_full.clone(),
        );
        let push_reads = Family::<Labels, Counter>::default();
        registry.register(
            "ack_push_reads",
            "Replicated acks: reads of own records to push, by source (feed, engine)",
            push_reads.clone(),
        );
        for source in PUSH_READ_SOURCES {
            let _ = push_reads.get_or_create(&vec![("source", source)]);
        }
        Self {
            pushes_answered,
            journal_records,
            journal_full,
            push_reads,
            peer_wait_seconds,
            misses,
            peer_lag_records,
            waiting_votes,
            probes,
            peers_connected,
            stalled,
            peers_configured,
            records_pushed,
            records_confirmed,
        }
    }

    /// Counts one read of own records to push, from `source` ([`PUSH_READ_SOURCES`]).
    pub fn count_push_read(&self, source: &'static str) {
        self.push_reads
            .get_or_create(&vec![("source", source)])
            .inc();
    }

    /// Counts `votes` votes no ack peer confirmed.
    pub fn count_misses(&self, outcome: &'static str, cause: &'static str, votes: u64) {
        self.misses
            .get_or_create(&vec![("outcome", outcome), ("cause", cause)])
            .inc_by(votes);
    }
}

/// Why a peer session or frame was refused: the `cause` label of `tally_peer_refusals_total`.
pub const REFUSAL_CAUSES: [&str; 9] = [
    "certificate",
    "cluster_id",
    "protocol",
    "node_id",
    "vote_id_key",
    "hello",
    "frame",
    "limit",
    "other",
];

/// Why part of a pull answer was not merged: the `cause` label of
/// `tally_peer_answer_refusals_total`.
pub const ANSWER_REFUSAL_CAUSES: [&str; 3] = ["own_records", "records", "counters"];

impl PeerMetrics {
    fn register(&self, registry: &mut Registry) {
        let peer = registry.sub_registry_with_prefix("peer");
        peer.register(
            "connected",
            "1 while a sync session with the peer is up",
            self.connected.clone(),
        );
        peer.register(
            "records_received",
            "Records received from the peer and newly held",
            self.records_received.clone(),
        );
        peer.register(
            "sent_bytes",
            "Frame bytes sent to the peer",
            self.bytes_sent.clone(),
        );
        peer.register(
            "received_bytes",
            "Frame bytes received from the peer",
            self.bytes_received.clone(),
        );
        peer.register(
            "last_contact_timestamp_seconds",
            "Unix time of the last completed sync round with the peer",
            self.last_contact_seconds.clone(),
        );
        peer.register(
            "records_behind",
            "Records the peer holds that this node does not",
            self.records_behind.clone(),
        );
        peer.register(
            "seconds_behind",
            "Seconds since this node last held everything the peer held",
            self.seconds_behind.clone(),
        );
        peer.register(
            "refusals",
            "Peer sessions or frames refused, by cause (certificate, cluster_id, vote_id_key, ...)",
            self.refusals.clone(),
        );
        peer.register(
            "answer_refusals",
            "Parts of a peer's pull answer not merged, by cause",
            self.answer_refusals.clone(),
        );
        peer.register(
            "clock_offset_seconds",
            "The peer's wall clock minus this node's, estimated over recent sync rounds",
            self.clock_offset_seconds.clone(),
        );
        peer.register(
            "clock_offset_error_seconds",
            "Error bound of the peer's clock offset estimate (half the fastest round trip)",
            self.clock_offset_error_seconds.clone(),
        );
    }

    /// Creates every series of `peer` at zero, so that dashboards and alert rules (`rate`,
    /// `increase`) see the series from the start rather than from the first event.
    pub fn declare(&self, peer: &str) {
        let labels = Self::labels(peer);
        let _ = self.connected.get_or_create(&labels);
        let _ = self.records_received.get_or_create(&labels);
        let _ = self.bytes_sent.get_or_create(&labels);
        let _ = self.bytes_received.get_or_create(&labels);
        let _ = self.last_contact_seconds.get_or_create(&labels);
        let _ = self.records_behind.get_or_create(&labels);
        let _ = self.seconds_behind.get_or_create(&labels);
        self.declare_refusals(peer);
        for cause in ANSWER_REFUSAL_CAUSES {
            let _ = self
                .answer_refusals
                .get_or_create(&Self::cause_labels(peer, cause));
        }
    }

    /// Creates `peer`'s refusal series of every cause at zero.
    pub fn declare_refusals(&self, peer: &str) {
        for cause in REFUSAL_CAUSES {
            let _ = self
                .refusals
                .get_or_create(&Self::cause_labels(peer, cause));
        }
    }

    /// The label set for `peer`.
    pub fn labels(peer: &str) -> PeerLabels {
        vec![("peer", peer.to_owned())]
    }

    /// The label set for `peer` and `cause`.
    pub fn cause_labels(peer: &str, cause: &str) -> PeerLabels {
        vec![("peer", peer.to_owned()), ("cause", cause.to_owned())]
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs to ~0.8 s.
    exponential_buckets(0.000_05, 2.0, 15)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tally");
        let votes = Family::<Labels, Counter>::default();
        registry.register("votes", "Votes answered, by outcome", votes.clone());
        let rejections = Family::<Labels, Counter>::default();
        registry.register(
            "vote_rejections",
            "Votes refused, by reason",
            rejections.clone(),
        );
        let request_seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_seconds.clone(),
        );
        let fsync_seconds = Histogram::new(latency_buckets());
        registry.register(
            "wal_fsync_duration_seconds",
            "Write-ahead log fsync latency",
            fsync_seconds.clone(),
        );
        let engine_busy_seconds = Histogram::new(latency_buckets());
        registry.register(
            "engine_busy_seconds",
            "Time the engine spent on one wake-up (a batch of commands, a log completion or a \
             tick), while every other vote waited",
            engine_busy_seconds.clone(),
        );
        let group_entries = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        registry.register(
            "wal_group_entries",
            "Log entries made durable by one fsync (group commit size)",
            group_entries.clone(),
        );
        let group_bytes = Histogram::new(exponential_buckets(64.0, 4.0, 12));
        registry.register(
            "wal_group_bytes",
            "Bytes made durable by one fsync",
            group_bytes.clone(),
        );
        let sse_subscribers = Gauge::default();
        registry.register(
            "sse_subscribers",
            "Open server-sent-event subscriptions",
            sse_subscribers.clone(),
        );
        let engine_queue_depth = Gauge::default();
        registry.register(
            "engine_queue_depth",
            "Commands waiting for the engine",
            engine_queue_depth.clone(),
        );
        let waiting_replies = Gauge::default();
        registry.register(
            "engine_waiting_replies",
            "Replies held until their votes are fsynced",
            waiting_replies.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when the node serves votes", ready.clone());
        let holds = Family::<Labels, Gauge>::default();
        registry.register(
            "hold",
            "1 while this reason keeps the node from serving (label hold)",
            holds.clone(),
        );
        // Every hold's series exists from the start, so alert rules see 0 rather than nothing.
        for hold in crate::health::Hold::ALL {
            let _ = holds.get_or_create(&vec![("hold", hold.as_str())]);
        }
        let disk_free_bytes = Gauge::default();
        registry.register(
            "disk_free_bytes",
            "Free bytes where the write-ahead log lives, as the disk watch last read them",
            disk_free_bytes.clone(),
        );
        let disk_reserve_bytes = Gauge::default();
        registry.register(
            "disk_reserve_bytes",
            "disk_reserve_bytes: below this many free bytes new votes are refused",
            disk_reserve_bytes.clone(),
        );
        let poll_votes = Family::<PollLabels, Gauge>::default();
        registry.register(
            "poll_votes",
            "Displayed (net) votes per poll and option, as of the latest results snapshot",
            poll_votes.clone(),
        );
        let poll_vote_ids = Family::<PollLabels, Gauge>::default();
        registry.register(
            "poll_vote_ids",
            "Distinct vote IDs held per poll (the dedupe index's entries)",
            poll_vote_ids.clone(),
        );
        let poll_vote_id_capacity = Family::<PollLabels, Gauge>::default();
        registry.register(
            "poll_vote_id_capacity",
            "Vote IDs a poll's dedupe index holds before it grows (again, if it is growing)",
            poll_vote_id_capacity.clone(),
        );
        let poll_vote_id_growth = Family::<PollLabels, Gauge>::default();
        registry.register(
            "poll_vote_id_growth",
            "1 while a poll's dedupe index grows, step by step (old and new table held at once)",
            poll_vote_id_growth.clone(),
        );
        let poll_vote_id_growth_progress = Family::<PollLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "poll_vote_id_growth_progress",
            "How far a poll's dedupe index has grown, from 0 to 1 (1 when not growing)",
            poll_vote_id_growth_progress.clone(),
        );
        let definition_disputes = Family::<PollLabels, Gauge>::default();
        registry.register(
            "poll_definition_disputes",
            "1 while node `peer` holds another definition (options or their order) of the poll",
            definition_disputes.clone(),
        );
        let definition_lost = Family::<PollLabels, Gauge>::default();
        registry.register(
            "poll_definition_lost",
            "1 while this node's definition of the poll lost the cluster's agreement: it counts none of its votes",
            definition_lost.clone(),
        );
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; the labels name the running version",
            build_info.clone(),
        );
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        let peers = PeerMetrics::default();
        peers.register(&mut registry);
        let acks = AckMetrics::new(&mut registry);
        let clock_steps = Counter::default();
        registry.register(
            "clock_steps",
            "Steps of this node's wall clock against its monotonic clock seen by the clock watch",
            clock_steps.clone(),
        );
        let incarnation_changes = Family::<Labels, Counter>::default();
        registry.register(
            "incarnation_changes",
            "Moves of this node to a new incarnation (actor), by reason",
            incarnation_changes.clone(),
        );
        for reason in INCARNATION_CHANGE_REASONS {
            let _ = incarnation_changes.get_or_create(&vec![("reason", reason)]);
        }
        let log_damaged = Gauge::default();
        registry.register(
            "log_damaged",
            "1 when this run started from a damaged write-ahead log (see OPERATIONS.md)",
            log_damaged.clone(),
        );
        let log_missing_records = Gauge::default();
        registry.register(
            "log_missing_records",
            "Records the damaged write-ahead log was known to lack at start-up",
            log_missing_records.clone(),
        );
        let log_adopted_votes = Gauge::default();
        registry.register(
            "log_adopted_votes",
            "Votes recorded again under the new incarnation because they followed a gap in the \
             damaged write-ahead log",
            log_adopted_votes.clone(),
        );
        let outcome = |name: &'static str| votes.get_or_create(&vec![("outcome", name)]).clone();
        // Shedding is what the alert rules watch: its series exists from the start.
        let _ = rejections.get_or_create(&vec![("reason", "overloaded")]);
        let vote_outcomes = VoteOutcomes {
            counted: outcome("counted"),
            duplicate: outcome("duplicate"),
            rejected: outcome("rejected"),
        };
        Self {
            registry,
            votes,
            rejections,
            request_seconds,
            fsync_seconds,
            group_entries,
            group_bytes,
            engine_busy_seconds,
            sse_subscribers,
            engine_queue_depth,
            waiting_replies,
            ready,
            holds,
            disk_free_bytes,
            disk_reserve_bytes,
            poll_votes,
            poll_vote_ids,
            poll_vote_id_capacity,
            poll_vote_id_growth,
            poll_vote_id_growth_progress,
            definition_disputes,
            definition_lost,
            peers,
            acks,
            clock_steps,
            incarnation_changes,
            log_damaged,
            log_missing_records,
            log_adopted_votes,
            vote_outcomes,
        }
    }

    /// Counts a move to a new incarnation for `reason` (one of
    /// [`INCARNATION_CHANGE_REASONS`]).
    pub fn count_incarnation_change(&self, reason: &'static str) {
        self.incarnation_changes
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Records what start-up recovery found: the move to a new incarnation, if any, whether
    /// the log was damaged, and how many records it was known to lack.
    pub fn observe_recovery(
        &self,
        damaged: bool,
        missing_records: u64,
        adopted_votes: u64,
        reason: Option<&'static str>,
    ) {
        if let Some(reason) = reason {
            self.count_incarnation_change(reason);
        }
        self.log_damaged.set(i64::from(damaged));
        self.log_missing_records
            .set(i64::try_from(missing_records).unwrap_or(i64::MAX));
        self.log_adopted_votes
            .set(i64::try_from(adopted_votes).unwrap_or(i64::MAX));
    }

    /// Records one group commit.
    pub fn observe_fsync(&self, fsync: Duration, entries: usize, bytes: u64) {
        self.fsync_seconds.observe(fsync.as_secs_f64());
        self.group_entries.observe(entries as f64);
        self.group_bytes.observe(bytes as f64);
    }

    /// Sets one poll's gauges: each option's votes, the vote IDs its dedupe index holds and
    /// has room for, and its growth (`None`: not growing; else its progress, 0 to 1).
    pub fn observe_poll<'a>(
        &self,
        poll: &str,
        options: impl IntoIterator<Item = (&'a str, i64)>,
        vote_ids: usize,
        vote_id_capacity: usize,
        growth_progress: Option<f64>,
    ) {
        for (option, votes) in options {
            let labels = vec![("poll", poll.to_owned()), ("option", option.to_owned())];
            self.poll_votes.get_or_create(&labels).set(votes);
        }
        let labels = vec![("poll", poll.to_owned())];
        let gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        self.poll_vote_ids
            .get_or_create(&labels)
            .set(gauge(vote_ids));
        self.poll_vote_id_capacity
            .get_or_create(&labels)
            .set(gauge(vote_id_capacity));
        self.poll_vote_id_growth
            .get_or_create(&labels)
            .set(i64::from(growth_progress.is_some()));
        self.poll_vote_id_growth_progress
            .get_or_create(&labels)
            .set(growth_progress.unwrap_or(1.0));
    }

    /// Makes the `tally_poll_definition_disputed` series of `poll` and `peer` exist (at 0; a 1
    /// set by `disputes` stays), so alert rules see it.
    pub fn touch_definition_dispute(&self, poll: &str, peer: &str) {
        let labels = vec![("poll", poll.to_owned()), ("peer", peer.to_owned())];
        let _ = self.definition_disputes.get_or_create(&labels);
    }

    /// Sets how far behind `peer` this node is, in milliseconds (exported in seconds).
    pub fn observe_peer_behind(&self, peer: &str, behind_ms: u64) {
        self.peers
            .seconds_behind
            .get_or_create(&PeerMetrics::labels(peer))
            .set(i64::try_from(behind_ms / 1000).unwrap_or(i64::MAX));
    }

    /// Mirrors the node's holds into `tally_ready` and `tally_hold`.
    pub fn observe_health(&self, health: &crate::health::Health) {
        self.ready.set(i64::from(health.is_ready()));
        for hold in crate::health::Hold::ALL {
            self.holds
                .get_or_create(&vec![("hold", hold.as_str())])
                .set(i64::from(health.has(hold)));
        }
    }

    /// Records the engine's queue depths.
    pub fn set_engine_queue(&self, commands: usize, waiting: usize) {
        self.engine_queue_depth.set(commands as i64);
        self.waiting_replies.set(waiting as i64);
    }

    /// Counts `count` votes with `outcome`.
    pub fn count_votes(&self, outcome: &'static str, count: u64) {
        let counter = match outcome {
            "counted" => &self.vote_outcomes.counted,
            "duplicate" => &self.vote_outcomes.duplicate,
            "rejected" => &self.vote_outcomes.rejected,
            _ => {
                self.votes
                    .get_or_create(&vec![("outcome", outcome)])
                    .inc_by(count);
                return;
            }
        };
        counter.inc_by(count);
    }

    /// A handle on the request-latency histogram of `route` (a static route label); keep it
    /// rather than looking the label set up per request.
    pub fn request_histogram(&self, route: &'static str) -> Histogram {
        self.request_seconds
            .get_or_create(&vec![("route", route)])
            .clone()
    }

    /// Counts `count` votes refused for `reason`.
    pub fn count_rejections(&self, reason: &'static str, count: u64) {
        self.count_votes("rejected", count);
        self.rejections
            .get_or_create(&vec![("reason", reason)])
            .inc_by(count);
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Infallible: writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
