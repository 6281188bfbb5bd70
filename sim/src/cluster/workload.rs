//! The clients: bulk voters posting batches to their region's edge (the real `tally edge`,
//! [`super::edges`]), individual voters voting one at a time through an edge or straight at a
//! node and retrying with the same vote ID, and readers polling results during the chaos.
//! Each writes every call and its outcome into the [`Ledger`].
//!
//! Votes are numbered: `0..single` are single votes (odd ones through their region's edge,
//! even ones at its node), the rest travel in bulk batches of [`EDGE_BATCH_VOTES`]; batch `c`
//! belongs to region `c % regions`. Both kinds are spread evenly over [`VOTING_MS`] from the
//! plan's start. Through an edge, a vote may reach any node (the edge fails over), so its
//! `sent_mask` names every region; the node that made it durable is the one the edge's
//! answer names (`answered_by`, `tally-answered-by`), and its receipt names the actor.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_client::api::{RECEIPTS_QUERY, ReceiptedBatchResponse};
use tally_node::http::{BatchVoteStatus, POSTCARD_MEDIA_TYPE};

use super::edges::edge_hosts;
use super::http::{Conn, Outcome};
use super::ledger::{Ledger, Read, Stamp};
use super::net::now_ms;
use super::scenario::{EDGE_BATCH_VOTES, VOTING_MS};

/// The poll every client votes in.
pub const POLL: &str = "superbowl";

/// A single voter gives up waiting for an answer after this long, and retries.
pub const SINGLE_TIMEOUT_MS: u64 = 1_000;

/// An edge gives up waiting for a batch's answer after this long, and retries.
pub const BATCH_TIMEOUT_MS: u64 = 3_000;

/// Attempts a client makes for one vote or batch before it gives up (the outcome stays
/// unknown or failed).
pub const ATTEMPTS_MAX: u32 = 12;

/// Concurrent requests per edge aggregator.
pub const EDGE_CONCURRENCY: u64 = 4;

/// Concurrent single voters per region.
pub const VOTERS_PER_REGION: u64 = 8;

/// How often readers read a region's results.
pub const READ_EVERY_MS: u64 = 200;

/// The history, shared by every client and the driver.
pub type Shared = Arc<Mutex<Ledger>>;

/// Locks the history (a panicked client leaves it usable: every update is one assignment).
pub fn lock(shared: &Shared) -> MutexGuard<'_, Ledger> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who the clients are and what they send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Region host names.
    pub regions: Vec<String>,
    /// Votes `0..single` are single votes.
    pub single: u64,
    /// All votes.
    pub votes: u64,
    /// When voting starts (simulated Unix ms).
    pub start_ms: u64,
    /// The seed clients draw their choices from.
    pub seed: u64,
}

impl Plan {
    fn batches(&self) -> u64 {
        (self.votes - self.single).div_ceil(EDGE_BATCH_VOTES as u64)
    }

    fn batch_range(&self, batch: u64) -> std::ops::Range<usize> {
        let first = self.single + batch * EDGE_BATCH_VOTES as u64;
        let end = (first + EDGE_BATCH_VOTES as u64).min(self.votes);
        first as usize..end as usize
    }

    /// When item `index` of `count` evenly spread over the voting window is due.
    fn due_ms(&self, index: u64, count: u64) -> u64 {
        self.start_ms + index * VOTING_MS / count.max(1)
    }
}

async fn sleep_until_ms(at_ms: u64) {
    let now = now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// A pause before retrying: 50 ms doubling per attempt up to 1.6 s, with full jitter.
fn backoff(rng: &mut StdRng, attempt: u32) -> Duration {
    let cap = 50u64 << attempt.min(5);
    Duration::from_millis(rng.random_range(cap / 2..=cap))
}

/// Bulk voters in `region` (a partner's gateway, say): post their batches to the region's
/// edge, and retry what was not acknowledged (the same vote IDs), sometimes through another
/// region's edge.
async fn bulk(plan: Arc<Plan>, shared: Shared, region: usize) {
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..EDGE_CONCURRENCY {
        let (plan, shared) = (plan.clone(), shared.clone());
        lanes.spawn(async move {
            let seed = plan.seed ^ ((region as u64) << 32 | lane) ^ 0x6564_6765;
            let mut rng = StdRng::seed_from_u64(seed);
            let mut conns: Vec<Conn> = edge_hosts(&plan.regions)
                .iter()
                .map(|host| Conn::accepting(host, POSTCARD_MEDIA_TYPE))
                .collect();
            let batches = plan.batches();
            let regions = plan.regions.len() as u64;
            let mut batch = region as u64 + lane * regions;
            while batch < batches {
                sleep_until_ms(plan.due_ms(batch, batches)).await;
                let home = region % conns.len();
                send_batch(&plan, &shared, &mut conns, &mut rng, home, batch).await;
                batch += regions * EDGE_CONCURRENCY;
            }
        });
    }
    while lanes.join_next().await.is_some() {}
}

async fn send_batch(
    plan: &Plan,
    shared: &Shared,
    conns: &mut [Conn],
    rng: &mut StdRng,
    home: usize,
    batch: u64,
) {
    let mut pending: Vec<usize> = plan.batch_range(batch).collect();
    let mut target = home;
    for attempt in 0..ATTEMPTS_MAX {
        let body = {
            let mut ledger = lock(shared);
            let now = now_ms();
            let votes: Vec<String> = pending
                .iter()
                .map(|&v| {
                    let entry = &mut ledger.votes[v];
                    let first = entry.invoked_ms == 0;
                    if first {
                        entry.invoked_ms = now;
                    }
                    let (option, id) = (entry.option, entry.id);
                    ledger.invoked += u64::from(first);
                    let option = OPTION_NAMES[usize::from(option)];
                    format!(
                        r#"{{"option":"{option}","vote_id":"{}"}}"#,
                        uuid::Uuid::from_bytes(id)
                    )
                })
                .collect();
            ledger.batch_calls.invoked += 1;
            ledger.attempts.push((now, pending.len() as u32));
            format!(r#"{{"votes":[{}]}}"#, votes.join(","))
        };
        let outcome = conns[target]
            .call(
                Method::POST,
                &format!("/v1/polls/{POLL}/votes/batch?{RECEIPTS_QUERY}"),
                Some("application/json"),
                Bytes::from(body),
                Duration::from_millis(BATCH_TIMEOUT_MS),
            )
            .await;
        pending = record_batch_outcome(plan, shared, outcome, pending, batch, target);
        if pending.is_empty() {
            return;
        }
        if rng.random_bool(0.5) {
            target = another(rng, target, conns.len());
        }
        tokio::time::sleep(backoff(rng, attempt)).await;
    }
}

/// Whether a node refused because its definition of the poll lost the cluster's agreement
/// (503 `poll_disputed`): it will refuse every retry, so the client goes to another region at
/// once, as the SDKs fail over on a 503. (The random draw for switching is then skipped, so
/// runs without a disputed poll keep their paths.)
fn refused_as_disputed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Answered(503, body)
        if body.windows(13).any(|w| w == b"poll_disputed"))
}

/// Every region's bit: a vote that reached an edge may have reached any node.
fn every_region(plan: &Plan) -> u8 {
    ((1u16 << plan.regions.len()) - 1) as u8
}

/// Writes a batch call's outcome into the history; returns the votes still unacknowledged.
fn record_batch_outcome(
    plan: &Plan,
    shared: &Shared,
    outcome: Outcome,
    mut pending: Vec<usize>,
    batch: u64,
    target: usize,
) -> Vec<usize> {
    let now = now_ms();
    let mut ledger = lock(shared);
    let everywhere = every_region(plan);
    match outcome {
        Outcome::Answered(200, body) => {
            ledger.batch_calls.ok += 1;
            let answer = postcard::from_bytes::<ReceiptedBatchResponse>(&body).ok();
            let mut retry = Vec::new();
            let mut receipts = answer.as_ref().map(|a| a.receipts.iter());
            for (i, &v) in pending.iter().enumerate() {
                ledger.votes[v].sent_mask |= everywhere;
                let status = answer.as_ref().and_then(|a| a.batch.statuses.get(i));
                let node = answer.as_ref().and_then(|a| {
                    let name = a.nodes.get(usize::from(*a.answered_by.get(i)?))?;
                    plan.regions.iter().position(|r| r == name)
                });
                match (status, node) {
                    (Some(BatchVoteStatus::Counted | BatchVoteStatus::Duplicate), Some(r)) => {
                        ledger.answered(r, now);
                        let entry = &mut ledger.votes[v];
                        entry.acked_mask |= 1 << r;
                        entry.last_ack_ms = now;
                    }
                    // Durable, says the edge, but not where: it may not say so on its own.
                    (Some(BatchVoteStatus::Counted | BatchVoteStatus::Duplicate), None) => {
                        ledger.unproven_edge_answers += 1;
                    }
                    _ => retry.push(v),
                }
                if status == Some(&BatchVoteStatus::Counted) {
                    let receipt = receipts.as_mut().and_then(Iterator::next);
                    let actor = answer.as_ref().zip(receipt).and_then(|(a, r)| {
                        Some((a.actors.get(usize::from(r.actor))?.clone(), r.seq))
                    });
                    match actor {
                        Some((actor, seq)) => {
                            let actor = ledger.actor_index(&actor);
                            ledger.receipts.push((actor, seq, v as u32));
                        }
                        None => ledger.unproven_edge_answers += 1,
                    }
                }
            }
            ledger.trace(&[1, batch, target as u64, now, retry.len() as u64]);
            pending = retry;
        }
        Outcome::Answered(status @ (429 | 503), body) => {
            ledger.batch_calls.failed += 1;
            // A refusal that may follow a count (a node's `not_replicated`, an edge's
            // `unconfirmed`): the votes are durable somewhere, maybe counted.
            if may_follow_a_count(&body) {
                for &v in &pending {
                    ledger.votes[v].sent_mask |= everywhere;
                }
            }
            note_clock_refusal(&mut ledger, status, &body, target, now);
            ledger.trace(&[2, batch, target as u64, now]);
        }
        Outcome::NotSent => {
            ledger.batch_calls.failed += 1;
            ledger.trace(&[3, batch, target as u64, now]);
        }
        Outcome::Answered(status, _) => {
            ledger.batch_calls.refused += 1;
            for &v in &pending {
                ledger.votes[v].sent_mask |= everywhere;
            }
            ledger.trace(&[4, batch, target as u64, now, u64::from(status)]);
        }
        Outcome::Lost => {
            ledger.batch_calls.unknown += 1;
            for &v in &pending {
                ledger.votes[v].sent_mask |= everywhere;
            }
            ledger.trace(&[5, batch, target as u64, now]);
        }
    }
    pending
}

/// Individual voters at home in `region`: each votes once per tap, and after a timeout or
/// error retries with the same vote ID — usually at home, sometimes at another region.
async fn voters(plan: Arc<Plan>, shared: Shared, region: usize) {
    let mut voters = tokio::task::JoinSet::new();
    let regions = plan.regions.len() as u64;
    for lane in 0..VOTERS_PER_REGION {
        let (plan, shared) = (plan.clone(), shared.clone());
        voters.spawn(async move {
            let seed = plan.seed ^ ((region as u64) << 32 | lane) ^ 0x766f_7465;
            let mut rng = StdRng::seed_from_u64(seed);
            let mut conns: Vec<Conn> = plan.regions.iter().map(|r| Conn::new(r)).collect();
            let mut edges: Vec<Conn> = edge_hosts(&plan.regions)
                .iter()
                .map(|h| Conn::new(h))
                .collect();
            let mut vote = region as u64 + lane * regions;
            while vote < plan.single {
                sleep_until_ms(plan.due_ms(vote, plan.single)).await;
                // Odd votes through an edge (a phone's path), even ones at a node.
                let (hosts, home) = if vote % 2 == 1 {
                    let home = region % edges.len();
                    (&mut edges, home)
                } else {
                    (&mut conns, region)
                };
                single_vote(&plan, &shared, hosts, &mut rng, home, vote as usize).await;
                vote += regions * VOTERS_PER_REGION;
            }
        });
    }
    while voters.join_next().await.is_some() {}
}

async fn single_vote(
    plan: &Plan,
    shared: &Shared,
    conns: &mut [Conn],
    rng: &mut StdRng,
    home: usize,
    vote: usize,
) {
    let mut target = home;
    for attempt in 0..ATTEMPTS_MAX {
        let body = {
            let mut ledger = lock(shared);
            let entry = &mut ledger.votes[vote];
            let first = entry.invoked_ms == 0;
            if first {
                entry.invoked_ms = now_ms();
            }
            let (option, id) = (entry.option, entry.id);
            ledger.invoked += u64::from(first);
            let option = OPTION_NAMES[usize::from(option)];
            let id = uuid::Uuid::from_bytes(id);
            if target != home {
                ledger.cross_region_retries += 1;
            }
            ledger.single_calls.invoked += 1;
            let now = now_ms();
            ledger.attempts.push((now, 1));
            format!(r#"{{"option":"{option}","vote_id":"{id}"}}"#)
        };
        let sent_ms = now_ms();
        let outcome = conns[target]
            .call(
                Method::POST,
                &format!("/v1/polls/{POLL}/votes"),
                Some("application/json"),
                Bytes::from(body),
                Duration::from_millis(SINGLE_TIMEOUT_MS),
            )
            .await;
        let disputed = refused_as_disputed(&outcome);
        let via = Via {
            target,
            edge: vote % 2 == 1,
            answered_by: conns[target].answered_by.take(),
        };
        if record_single_outcome(plan, shared, outcome, vote, via, sent_ms) {
            return;
        }
        if disputed || rng.random_bool(0.3) {
            target = another(rng, target, conns.len());
        }
        tokio::time::sleep(backoff(rng, attempt)).await;
    }
}

/// Another of `hosts` hosts than `target`, drawn (`target` itself when it is the only one).
fn another(rng: &mut StdRng, target: usize, hosts: usize) -> usize {
    if hosts < 2 {
        return target;
    }
    (target + rng.random_range(1..hosts)) % hosts
}

/// Where a single vote's attempt went.
struct Via {
    /// The node's region, or the edge's index.
    target: usize,
    /// Whether to the region's edge.
    edge: bool,
    /// The edge's `tally-answered-by`, if it answered with one.
    answered_by: Option<String>,
}

impl Via {
    /// The regions the attempt may have reached: the node's, or any through an edge.
    fn sent(&self, plan: &Plan) -> u8 {
        if self.edge {
            every_region(plan)
        } else {
            1 << self.target
        }
    }

    /// The region whose node made the vote durable: the node's, or the one the edge names.
    fn durable_at(&self, plan: &Plan) -> Option<usize> {
        if !self.edge {
            return Some(self.target);
        }
        let node = self.answered_by.as_deref()?;
        plan.regions.iter().position(|r| r == node)
    }
}

/// Writes a single vote call's outcome (its attempt sent at `sent_ms`) into the history;
/// returns whether it was answered.
fn record_single_outcome(
    plan: &Plan,
    shared: &Shared,
    outcome: Outcome,
    vote: usize,
    via: Via,
    sent_ms: u64,
) -> bool {
    let now = now_ms();
    let mut ledger = lock(shared);
    let sent = via.sent(plan);
    let target = via.target;
    match outcome {
        Outcome::Answered(200, body) => {
            ledger.single_calls.ok += 1;
            // An edge's answer names the node (its receipt names the actor): an edge that
            // could not say which node made the vote durable would be saying it on its own.
            let Some(region) = via.durable_at(plan) else {
                ledger.unproven_edge_answers += 1;
                ledger.votes[vote].sent_mask |= sent;
                ledger.trace(&[16, vote as u64, target as u64, now]);
                return true;
            };
            ledger.answered(region, now);
            let counted = receipt(&body).map(|(actor, second, seq)| {
                ledger.stamps.push(Stamp {
                    region,
                    second,
                    sent_ms,
                    answered_ms: now,
                });
                let actor = ledger.actor_index(&actor);
                ledger.receipts.push((actor, seq, vote as u32));
                (actor, seq)
            });
            if via.edge && counted.is_none() && body.windows(9).any(|w| w == b"\"counted\"") {
                ledger.unproven_edge_answers += 1;
            }
            let entry = &mut ledger.votes[vote];
            entry.sent_mask |= sent;
            entry.acked_mask |= 1 << region;
            entry.last_ack_ms = now;
            if let Some((actor, _)) = counted {
                entry.set_receipt(actor, now);
            }
            ledger.trace(&[11, vote as u64, target as u64, now]);
            true
        }
        Outcome::Answered(status @ (429 | 503), body) => {
            ledger.single_calls.failed += 1;
            // A refusal that may follow a count: an edge's `unconfirmed` sent the vote on (it
            // may have been counted anywhere); a node's `not_replicated` holds it durable.
            if may_follow_a_count(&body) {
                ledger.votes[vote].sent_mask |= sent;
            }
            note_clock_refusal(&mut ledger, status, &body, target, now);
            ledger.trace(&[12, vote as u64, target as u64, now]);
            false
        }
        Outcome::NotSent => {
            ledger.single_calls.failed += 1;
            ledger.trace(&[13, vote as u64, target as u64, now]);
            false
        }
        Outcome::Answered(status, _) => {
            ledger.single_calls.refused += 1;
            ledger.votes[vote].sent_mask |= sent;
            ledger.trace(&[14, vote as u64, target as u64, now, u64::from(status)]);
            false
        }
        Outcome::Lost => {
            ledger.single_calls.unknown += 1;
            ledger.votes[vote].sent_mask |= sent;
            ledger.trace(&[15, vote as u64, target as u64, now]);
            false
        }
    }
}

/// Whether a refusal is replicated acks' `not_replicated`: the vote is durable at the node
/// but not acknowledged, so it may be counted (delivered, unlike other refusals).
fn may_follow_a_count(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v["error"]
            .as_str()
            .is_some_and(tally_client::api::refusal_may_follow_a_count)
    })
}

/// A `counted` answer's receipt: its actor, poll second and seq.
fn receipt(body: &[u8]) -> Option<(String, u64, u64)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if value["status"] != "counted" {
        return None;
    }
    let actor = value["receipt"]["actor"].as_str()?.to_owned();
    let second = value["receipt"]["second"].as_u64()?;
    Some((actor, second, value["receipt"]["seq"].as_u64()?))
}

/// Notes a 503 that a clock hold caused (its message says so) for the clock checks.
fn note_clock_refusal(ledger: &mut Ledger, status: u16, body: &[u8], region: usize, now: u64) {
    let held_for_clock = String::from_utf8_lossy(body).contains("clock disagrees");
    if status == 503 && held_for_clock {
        ledger.clock_refusals.push((region, now));
    }
}

/// The poll's options by canonical index, as the ledger numbers them (a region may list
/// them in another order).
pub const OPTION_NAMES: [&str; 2] = ["green", "blue"];

/// One region's results as a client reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// Net votes per option, by name in the order of [`OPTION_NAMES`].
    pub votes: Vec<i64>,
    /// Their sum.
    pub total: i64,
    /// Capture time (simulated Unix ms).
    pub as_of_ms: u64,
    /// The serving node's own actor.
    pub local_actor: Option<String>,
    /// Records held per actor, sorted by actor.
    pub records: Vec<(String, u64)>,
    /// The option names in the region's own order (its option indexes).
    pub names: Vec<String>,
}

/// Reads `region`'s results; `None` if no answer came in time.
pub async fn read_results(conn: &mut Conn, timeout: Duration) -> Option<Results> {
    let outcome = conn
        .call(
            Method::GET,
            &format!("/v1/polls/{POLL}/results"),
            None,
            Bytes::new(),
            timeout,
        )
        .await;
    let Outcome::Answered(200, body) = outcome else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    // By name, in the canonical order, whatever order the region lists them in.
    let options = value["options"].as_array()?;
    let votes_of = |name: &str| {
        options
            .iter()
            .find(|o| o["name"] == name)
            .and_then(|o| o["votes"].as_i64())
            .unwrap_or(i64::MIN)
    };
    let votes: Vec<i64> = OPTION_NAMES.iter().map(|name| votes_of(name)).collect();
    let names = options
        .iter()
        .map(|o| o["name"].as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()?;
    let mut records = Vec::new();
    let mut local_actor = None;
    for actor in value["includes"].as_array()? {
        let name = actor["actor"].as_str()?.to_owned();
        if actor["local"].as_bool() == Some(true) {
            local_actor = Some(name.clone());
        }
        records.push((name, actor["records"].as_u64()?));
    }
    records.sort();
    Some(Results {
        total: value["total"].as_i64()?,
        as_of_ms: value["as_of_ms"].as_u64()?,
        votes,
        local_actor,
        records,
        names,
    })
}

/// Reads a random region's results every [`READ_EVERY_MS`] until voting is over, recording
/// each answer for the bounds check.
async fn readers(plan: Arc<Plan>, shared: Shared) {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x7265_6164);
    let mut conns: Vec<Conn> = plan.regions.iter().map(|r| Conn::new(r)).collect();
    let end = plan.start_ms + VOTING_MS + 2_000;
    sleep_until_ms(plan.start_ms).await;
    while now_ms() < end {
        let region = rng.random_range(0..plan.regions.len());
        let read = read_results(&mut conns[region], Duration::from_millis(1_000)).await;
        let completed_ms = now_ms();
        if let Some(read) = read {
            let mut ledger = lock(&shared);
            let local_actor = read.local_actor.as_deref().map(|a| ledger.actor_index(a));
            ledger.trace(&[21, region as u64, completed_ms, read.total as u64]);
            ledger.reads.push(Read {
                region,
                completed_ms,
                as_of_ms: read.as_of_ms,
                total: read.total,
                local_actor,
            });
        }
        tokio::time::sleep(Duration::from_millis(READ_EVERY_MS)).await;
    }
}

/// The host name every workload client runs on (one host: turmoil's cost grows with hosts).
pub const CLIENTS_HOST: &str = "clients";

/// Every workload client of the run — per region its bulk voters and its single voters, plus
/// the readers — as tasks of one simulated host; marks the history when all are done.
pub async fn clients(plan: Arc<Plan>, shared: Shared) -> turmoil::Result {
    let mut all = tokio::task::JoinSet::new();
    for region in 0..plan.regions.len() {
        all.spawn(bulk(plan.clone(), shared.clone(), region));
        all.spawn(voters(plan.clone(), shared.clone(), region));
    }
    let voting = async { while all.join_next().await.is_some() {} };
    tokio::join!(voting, readers(plan.clone(), shared.clone()));
    lock(&shared).clients_done = true;
    Ok(())
}
