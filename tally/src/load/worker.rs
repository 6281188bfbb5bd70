//! One connection of `tally load`: a task that owns one keep-alive HTTP/1.1 connection to one
//! node and sends one request at a time on it.
//!
//! Work is handed out by vote index from one shared counter, so `--count` is exact however
//! many connections share it. With `--rate`, vote index `v` is *due* at `start + v / rate`
//! (an open-loop schedule, as wrk2 does it): a worker waits until its request is due and
//! measures latency from that due time, not from when it got round to sending, so a stalled
//! server shows up as latency instead of as politely fewer requests (coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rand::Rng;
use rand::rngs::StdRng;

use super::check::{Outcome, VoteRecord};
use super::target::Target;
use super::workload::{Encoding, RetryPools, Vote, fresh_vote, read_answer};
use tally_client::retry::Backoff;

/// Consecutive failed connection attempts after which a worker gives up. With the client's
/// backoff between them (full jitter, 50 ms doubling to 2 s) that is about 5 s of waiting on
/// average, 9 s at most, before a worker stops trying an unreachable node.
pub(super) const CONNECT_ATTEMPTS_MAX: u32 = 10;

/// Largest latency the histograms hold, in microseconds (larger values are clamped).
pub(super) const LATENCY_US_MAX: u64 = 60_000_000;

/// What every worker shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// The nodes.
    pub(super) targets: Vec<Target>,
    /// `/v1/polls/{poll}/votes`.
    pub(super) single_path: String,
    /// `/v1/polls/{poll}/votes/batch`.
    pub(super) batch_path: String,
    /// How votes are encoded.
    pub(super) encoding: Encoding,
    /// Options to draw from.
    pub(super) options: usize,
    /// Votes per batch request (1: the single-vote route).
    pub(super) batch_size: usize,
    /// With batches: the share of requests sent as single votes instead.
    pub(super) single_fraction: f64,
    /// The share of votes that re-send an earlier vote ID.
    pub(super) retry_fraction: f64,
    /// Votes per second, or flat out.
    pub(super) rate: Option<f64>,
    /// Stop after this many votes.
    pub(super) votes_max: Option<u64>,
    /// Stop claiming work at this instant.
    pub(super) deadline: Option<Instant>,
    /// When the run started (the schedule's origin).
    pub(super) start: Instant,
    /// The same moment on the wall clock.
    pub(super) started_at: std::time::SystemTime,
    /// Per-request timeout.
    pub(super) timeout: Duration,
    /// The next vote index to claim.
    pub(super) next_vote: AtomicU64,
    /// Votes answered so far (for the progress bar).
    pub(super) answered_votes: AtomicU64,
    /// Retry pools.
    pub(super) retries: RetryPools,
}

/// What one worker measured.
#[derive(Debug)]
pub(super) struct WorkerReport {
    /// Every vote sent and its outcome.
    pub(super) records: Vec<VoteRecord>,
    /// Latency per request, in µs: from the due time with `--rate`, else from the send.
    pub(super) latency: Histogram<u64>,
    /// Time from send to answer per request, in µs.
    pub(super) service: Histogram<u64>,
    /// Requests answered (any status) or lost.
    pub(super) requests: u64,
    /// Votes that were retries.
    pub(super) retried_votes: u64,
    /// Error counts by label.
    pub(super) errors: BTreeMap<String, u64>,
}

/// An empty latency histogram: 1 µs to [`LATENCY_US_MAX`], 3 significant figures.
pub(super) fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    // Constant bounds inside hdrhistogram's documented range (low ≥ 1, high ≥ 2·low, 3
    // significant figures): this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

/// A worker bound to one node.
pub(super) struct Worker {
    shared: Arc<Shared>,
    target: usize,
    rng: StdRng,
    connection: Option<SendRequest<Full<Bytes>>>,
    votes: Vec<Vote>,
    body: Vec<u8>,
    report: WorkerReport,
}

/// A claimed piece of work: vote indexes `[first, first + votes)`.
struct Claim {
    first: u64,
    votes: usize,
    /// Sent to the batch route (even if the run's last claim holds one vote).
    batch: bool,
}

impl Worker {
    /// A worker for node `target`, drawing from `rng`, on `connection` if already open.
    pub(super) fn new(
        shared: Arc<Shared>,
        target: usize,
        rng: StdRng,
        connection: Option<SendRequest<Full<Bytes>>>,
    ) -> Self {
        Self {
            shared,
            target,
            rng,
            connection,
            votes: Vec::new(),
            body: Vec::new(),
            report: WorkerReport {
                records: Vec::new(),
                latency: histogram(),
                service: histogram(),
                requests: 0,
                retried_votes: 0,
                errors: BTreeMap::new(),
            },
        }
    }

    fn count_error(&mut self, label: impl Into<String>) {
        *self.report.errors.entry(label.into()).or_default() += 1;
    }

    /// Sends requests until the run's votes or time are used up.
    pub(super) async fn run(mut self) -> WorkerReport {
        loop {
            if !self.ensure_connected().await {
                break;
            }
            let Some(claim) = self.claim() else { break };
            let due = self.due(claim.first);
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            self.fill(claim.votes);
            self.send(claim.batch, due).await;
        }
        self.report
    }

    /// Connects if needed; false when the node stayed unreachable or time ran out.
    async fn ensure_connected(&mut self) -> bool {
        let mut failures = 0;
        // The client's retry policy (jittered exponential backoff, seeded from this worker's
        // RNG), so workers that lost a node together do not all come back together.
        let mut backoff = Backoff::new(self.rng.random());
        while self.connection.as_ref().is_none_or(|c| c.is_closed()) {
            if self.out_of_time() {
                return false;
            }
            match self.shared.targets[self.target].connect().await {
                Ok(sender) => self.connection = Some(sender),
                Err(_) => {
                    self.count_error("connect");
                    failures += 1;
                    if failures >= CONNECT_ATTEMPTS_MAX {
                        return false;
                    }
                    tokio::time::sleep(backoff.next_delay(None)).await;
                }
            }
        }
        true
    }

    fn out_of_time(&self) -> bool {
        self.shared.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Claims the next request's votes, or None when the run is done.
    fn claim(&mut self) -> Option<Claim> {
        let shared = &*self.shared;
        let wanted = if shared.batch_size > 1 && !self.rng.random_bool(shared.single_fraction) {
            shared.batch_size
        } else {
            1
        };
        let first = shared.next_vote.fetch_add(wanted as u64, Ordering::Relaxed);
        let votes = match shared.votes_max {
            Some(max) if first >= max => return None,
            Some(max) => wanted.min(usize::try_from(max - first).unwrap_or(wanted)),
            None => wanted,
        };
        let deadline_passed = match (self.due(first), shared.deadline) {
            (Some(due), Some(deadline)) => due >= deadline,
            (None, Some(deadline)) => Instant::now() >= deadline,
            (_, None) => false,
        };
        (!deadline_passed).then_some(Claim {
            first,
            votes,
            batch: wanted > 1,
        })
    }

    fn due(&self, vote_index: u64) -> Option<Instant> {
        let rate = self.shared.rate?;
        Some(self.shared.start + Duration::from_secs_f64(vote_index as f64 / rate))
    }

    /// Picks the request's votes: retries from the pool where the coin says so, else fresh.
    fn fill(&mut self, count: usize) {
        self.votes.clear();
        let shared = &*self.shared;
        let wanted_retries = if shared.retry_fraction > 0.0 {
            (0..count)
                .filter(|_| self.rng.random_bool(shared.retry_fraction))
                .count()
        } else {
            0
        };
        shared
            .retries
            .take(self.target, wanted_retries, &mut self.votes);
        self.report.retried_votes += self.votes.len() as u64;
        while self.votes.len() < count {
            self.votes.push(fresh_vote(&mut self.rng, shared.options));
        }
    }

    /// Sends the filled votes and records the answer.
    async fn send(&mut self, batch: bool, due: Option<Instant>) {
        let shared = self.shared.clone();
        let (path, content_type) = if batch {
            let content_type = shared.encoding.batch(&self.votes, &mut self.body);
            (&shared.batch_path, content_type)
        } else if let Some(vote) = self.votes.first() {
            shared.encoding.single(vote, &mut self.body);
            (&shared.single_path, "application/json")
        } else {
            return;
        };
        // Postcard batches ask for postcard answers: a byte per status instead of ~12.
        let accept = if content_type == tally_client::api::POSTCARD_MEDIA_TYPE {
            tally_client::api::POSTCARD_MEDIA_TYPE
        } else {
            "application/json"
        };
        let request = Request::post(path.as_str())
            .header(header::HOST, &shared.targets[self.target].authority)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, accept)
            .body(Full::new(Bytes::from(std::mem::take(&mut self.body))));
        let Ok(request) = request else {
            self.count_error("bad_request");
            return;
        };
        let sent = Instant::now();
        let answer = match self.connection.as_mut() {
            Some(connection) => {
                tokio::time::timeout(shared.timeout, exchange(connection, request)).await
            }
            None => return,
        };
        let answered = Instant::now();
        let outcome = match answer {
            Ok(Ok((status, postcard, body))) => {
                read_answer(status, postcard, &body, self.votes.len(), batch)
            }
            Ok(Err(_)) | Err(_) => {
                self.connection = None;
                let label = if answer.is_err() {
                    "timeout"
                } else {
                    "transport"
                };
                super::workload::Answer {
                    outcomes: vec![Outcome::Unknown; self.votes.len()],
                    errors: vec![label.to_owned()],
                }
            }
        };
        self.record(due.unwrap_or(sent), sent, answered, outcome);
    }

    fn record(
        &mut self,
        due: Instant,
        sent: Instant,
        answered: Instant,
        answer: super::workload::Answer,
    ) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.report
            .latency
            .saturating_record(micros(answered.saturating_duration_since(due)));
        self.report
            .service
            .saturating_record(micros(answered - sent));
        self.report.requests += 1;
        for label in answer.errors {
            self.count_error(label);
        }
        let target = u16::try_from(self.target).unwrap_or(u16::MAX);
        for (vote, outcome) in self.votes.iter().zip(answer.outcomes) {
            self.report.records.push(VoteRecord {
                vote_id: vote.vote_id,
                target,
                outcome,
            });
        }
        self.shared
            .answered_votes
            .fetch_add(self.votes.len() as u64, Ordering::Relaxed);
        if self.shared.retry_fraction > 0.0 {
            self.shared.retries.offer(self.target, &self.votes);
        }
    }
}

/// One request and its whole answer.
async fn exchange(
    connection: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(http::StatusCode, bool, Bytes), hyper::Error> {
    connection.ready().await?;
    let response = connection.send_request(request).await?;
    let status = response.status();
    let postcard = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == tally_client::api::POSTCARD_MEDIA_TYPE.as_bytes());
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, postcard, body))
}
