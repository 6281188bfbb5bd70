//! Results snapshots: what readers see, captured by the engine every results tick.
//!
//! A snapshot is immutable and shared (`Arc`): the results and history routes read it, and the
//! SSE route sends its pre-encoded JSON to every subscriber, so thousands of viewers cost one
//! encoding per tick, not one each.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::peer::sync::PeerStatus;
use tally_client::api::{
    ActorIncluded, History, HistoryPoint, OptionResult, PeerSeen, PollResults,
};
use tally_core::{IndexGrowth, PollId, PollStatus, PollWindow, Replica, Second, UnixMillis};

/// One poll in a snapshot.
#[derive(Debug, Clone)]
pub struct PollSnapshot {
    /// Results over all seconds.
    pub results: PollResults,
    /// Per-second series, ascending.
    pub history: Vec<HistoryPoint>,
    /// `results` as one complete SSE event, encoded once for every subscriber.
    pub sse_frame: Bytes,
    /// `results` as the results route's JSON body: the same bytes (and [`Self::results_etag`])
    /// for as long as [`Self::version`] stands, so caches and `If-None-Match` can hold them.
    pub results_json: Bytes,
    /// The strong ETag of `results_json` (quoted, a hash of the bytes).
    pub results_etag: Arc<str>,
    /// The history route's JSON body, encoded once per version.
    pub history_json: Bytes,
    /// The strong ETag of `history_json`.
    pub history_etag: Arc<str>,
    /// Option names, for resolving votes.
    pub option_names: Vec<String>,
    /// When the poll takes votes.
    pub window: PollWindow,
    /// Distinct vote IDs held (for `/metrics`).
    pub vote_ids: usize,
    /// Vote IDs the dedupe index holds before it must grow (for `/metrics`).
    pub vote_id_capacity: usize,
    /// Where the dedupe index's growth stands, while it grows (for `/metrics` and the log).
    pub vote_id_growth: Option<IndexGrowth>,
    /// Bumped whenever the votes, status, window, the records included or a peer's
    /// connection change (not on ages or clock estimates alone): SSE subscribers send
    /// `sse_frame` when it differs from the one they sent last. While it stands, `results`
    /// (with its `as_of_ms`, ages and clock offsets), its encodings and the history stay as
    /// they were when it was bumped.
    pub version: u64,
}

/// A strong ETag for `body`: a hash of its bytes, quoted (equal bodies, equal tags, on any
/// node; a different body, another tag).
pub fn etag_of(body: &[u8]) -> Arc<str> {
    let hash = blake3::hash(body);
    let hex: String = hash.as_bytes()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"").into()
}

impl PollSnapshot {
    /// Encodes the history route's body and its ETag (once per version: a long poll's history
    /// is its largest document).
    fn encode_history(&mut self, poll: &PollId) {
        let history = History {
            poll: poll.to_string(),
            options: self.option_names.clone(),
            points: self.history.clone(),
        };
        self.history_json = serde_json::to_vec(&history).map_or_else(|_| Bytes::new(), Bytes::from);
        self.history_etag = etag_of(&self.history_json);
    }

    /// The split up to and including `at` (net votes of all seconds ≤ `at`).
    pub fn results_at(&self, at: Second) -> PollResults {
        let mut votes = vec![0i64; self.option_names.len()];
        for point in self.history.iter().take_while(|p| p.second <= at) {
            for (sum, v) in votes.iter_mut().zip(&point.votes) {
                *sum += v;
            }
        }
        PollResults {
            options: option_results(&self.option_names, &votes),
            total: votes.iter().sum(),
            at_second: Some(at),
            ..self.results.clone()
        }
    }
}

/// Every poll's results at one moment.
#[derive(Debug, Clone, Default)]
pub struct ResultsSnapshot {
    /// When it was captured.
    pub as_of: Option<UnixMillis>,
    /// By poll.
    pub polls: BTreeMap<PollId, Arc<PollSnapshot>>,
}

fn option_results(names: &[String], votes: &[i64]) -> Vec<OptionResult> {
    let total: i64 = votes.iter().sum();
    names
        .iter()
        .zip(votes)
        .map(|(name, &v)| OptionResult {
            name: name.clone(),
            votes: v,
            share: if total > 0 {
                v as f64 / total as f64
            } else {
                0.0
            },
        })
        .collect()
}

/// `results` as an SSE event (`event: results`, the capture time as its ID, JSON data) and
/// as the results route's body.
fn encode_results(results: &PollResults) -> Option<(Bytes, Bytes)> {
    let json = serde_json::to_string(results).ok()?;
    // serde_json never emits raw newlines, so the JSON fits on one `data:` line.
    debug_assert!(!json.contains('\n'));
    let frame = format!("event: results\nid: {}\ndata: {json}\n\n", results.as_of_ms);
    Some((Bytes::from(frame), Bytes::from(json)))
}

/// Whether two captures include the same records of the same actors and see the same peers
/// connected (ages and clock estimates aside).
fn same_links(a: &PollResults, b: &PollResults) -> bool {
    fn included(i: &ActorIncluded) -> (&str, u64, Option<bool>) {
        (&i.actor, i.records, i.connected)
    }
    fn peer(p: &PeerSeen) -> (&str, bool, bool) {
        (&p.node, p.listed, p.connected)
    }
    a.includes
        .iter()
        .map(included)
        .eq(b.includes.iter().map(included))
        && a.peers.iter().map(peer).eq(b.peers.iter().map(peer))
}

fn status_name(status: PollStatus) -> &'static str {
    match status {
        PollStatus::NotOpen => "not_open",
        PollStatus::Open => "open",
        PollStatus::Closed => "closed",
    }
}

impl ResultsSnapshot {
    /// Captures every poll of `replica` at `now`, keeping `previous`'s entry (the same `Arc`)
    /// for every poll whose results did not change, so subscribers can tell "changed" by
    /// pointer.
    pub fn capture_since(
        replica: &Replica,
        now: UnixMillis,
        peers: &BTreeMap<String, PeerStatus>,
        previous: &ResultsSnapshot,
    ) -> Self {
        let mut next = Self::capture(replica, now, peers);
        for (poll, snapshot) in next.polls.iter_mut() {
            // What a reader acts on: the split, the status, a dispute, whose records are
            // included and which peers are connected; not the ages and clock estimates that
            // move every tick (they are as of the change, `as_of_ms`).
            let votes_alike = |a: &PollResults, b: &PollResults| {
                a.options == b.options
                    && a.total == b.total
                    && a.status == b.status
                    && a.dispute == b.dispute
                    && same_links(a, b)
            };
            let old = previous.polls.get(poll);
            let fresh = Arc::make_mut(snapshot);
            match old {
                Some(old)
                    if votes_alike(&old.results, &fresh.results)
                        && old.history == fresh.history
                        && old.window == fresh.window =>
                {
                    fresh.results = old.results.clone();
                    fresh.sse_frame = old.sse_frame.clone();
                    fresh.results_json = old.results_json.clone();
                    fresh.results_etag = old.results_etag.clone();
                    fresh.history_json = old.history_json.clone();
                    fresh.history_etag = old.history_etag.clone();
                    fresh.version = old.version;
                }
                _ => {
                    fresh.version = old.map_or(0, |old| old.version + 1);
                    fresh.encode_history(poll);
                }
            }
        }
        next
    }

    /// Logs each poll whose dedupe index began or finished growing since `previous`. Growth
    /// runs a bounded step per insert and per engine tick, so no vote waits for it; the lines
    /// say when the index's memory rose (old and new table both held) and fell again.
    pub fn log_index_growth(&self, previous: &ResultsSnapshot) {
        for (poll, snapshot) in &self.polls {
            let before = previous.polls.get(poll).and_then(|p| p.vote_id_growth);
            match (before, snapshot.vote_id_growth) {
                (None, Some(growth)) => tracing::info!(
                    %poll,
                    vote_ids = snapshot.vote_ids,
                    from_capacity = growth.from_capacity,
                    to_capacity = growth.to_capacity,
                    "dedupe index growing, step by step"
                ),
                (Some(_), None) => tracing::info!(
                    %poll,
                    vote_ids = snapshot.vote_ids,
                    capacity = snapshot.vote_id_capacity,
                    "dedupe index grown"
                ),
                _ => {}
            }
        }
    }

    /// Captures every poll of `replica` at `now`, as a first snapshot (every poll at
    /// version 0, its bodies encoded).
    pub fn first(replica: &Replica, now: UnixMillis, peers: &BTreeMap<String, PeerStatus>) -> Self {
        Self::capture_since(replica, now, peers, &Self::default())
    }

    /// Captures every poll of `replica` at `now` (the history's body is left for
    /// [`Self::capture_since`] to encode, once per version).
    fn capture(replica: &Replica, now: UnixMillis, peers: &BTreeMap<String, PeerStatus>) -> Self {
        let peers_seen: Vec<PeerSeen> = peers
            .iter()
            .map(|(node, status)| PeerSeen {
                node: node.clone(),
                listed: status.listed,
                connected: status.connected,
                heard_ms_ago: status.last_contact.map(|at| now.0.saturating_sub(at.0)),
            })
            .collect();
        let polls = replica
            .poll_specs()
            .filter_map(|spec| {
                let state = replica.state(spec.id())?;
                let option_names: Vec<String> =
                    spec.options().iter().map(|o| o.to_string()).collect();
                // One pass over the counters: the totals are the column sums of the history.
                let history: Vec<HistoryPoint> = state
                    .history()
                    .into_iter()
                    .map(|(second, votes)| HistoryPoint { second, votes })
                    .collect();
                let mut totals = vec![0i64; option_names.len()];
                for point in &history {
                    for (sum, votes) in totals.iter_mut().zip(&point.votes) {
                        *sum += votes;
                    }
                }
                let includes = state
                    .version_vector()
                    .iter()
                    .map(|(actor, records)| ActorIncluded {
                        actor: actor.to_string(),
                        node: actor.node.to_string(),
                        records,
                        local: actor == replica.actor(),
                        heard_ms_ago: if actor == replica.actor() {
                            Some(0)
                        } else {
                            peers
                                .get(actor.node.as_str())
                                .and_then(|p| p.last_contact)
                                .map(|at| now.0.saturating_sub(at.0))
                        },
                        connected: peers.get(actor.node.as_str()).map(|p| p.connected),
                        clock_offset_ms: if actor == replica.actor() {
                            Some(0)
                        } else {
                            peers
                                .get(actor.node.as_str())
                                .and_then(|p| p.clock)
                                .map(|c| c.offset_ms)
                        },
                    })
                    .collect();
                let results = PollResults {
                    poll: spec.id().to_string(),
                    status: status_name(spec.window.status(now)).to_owned(),
                    options: option_results(&option_names, &totals),
                    total: totals.iter().sum(),
                    as_of_ms: now.0,
                    at_second: None,
                    served_by: replica.actor().node.to_string(),
                    includes,
                    peers: peers_seen.clone(),
                    dispute: crate::disputes::describe(replica, spec.id()),
                    clock_offsets_ms: peers
                        .iter()
                        .filter_map(|(node, p)| Some((node.clone(), p.clock?.offset_ms)))
                        .collect(),
                };
                let (sse_frame, results_json) = encode_results(&results)?;
                let snapshot = PollSnapshot {
                    results,
                    history,
                    sse_frame,
                    results_etag: etag_of(&results_json),
                    results_json,
                    history_json: Bytes::new(),
                    history_etag: Arc::from(""),
                    option_names,
                    window: spec.window,
                    vote_ids: state.distinct_vote_ids(),
                    vote_id_capacity: state.vote_id_capacity(),
                    vote_id_growth: state.index_growth(),
                    version: 0,
                };
                Some((spec.id().clone(), Arc::new(snapshot)))
            })
            .collect();
        Self {
            as_of: Some(now),
            polls,
        }
    }
}
