//! The dispatcher's loop and state (see [`super`] for what it promises). One task owns it
//! all (STYLE.md §8): handlers talk to it through the bounded order channel, batch tasks and
//! probes through their own bounded channels.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tally_client::Endpoint;
use tally_client::api::{POSTCARD_MEDIA_TYPE, RECEIPTS_QUERY};
use tally_serve::error::ApiError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::batch::{Batch, PendingVote};
use super::node::Node;
use super::outcome::{Verdict, VoteVerdict, judge};
use super::{Availability, Settings, VoteAnswer, VoteOrder};
use crate::breaker::BreakerState;
use crate::catalogue::{Catalogue, PollBook, PollSlot};
use crate::metrics::{EdgeMetrics, Outcome};
use crate::upstream::{Connection, Connector, Exchanged, ProbeReport, exchange, request};

/// After every node that lists a poll has been tried for a batch, the batch waits this long
/// before the round starts again, in ms (no hot loop against a cluster that refuses all).
pub(crate) const RESEND_PAUSE_MS: u64 = 50;

/// Most orders taken from the channel in one go before the loop looks at anything else.
const ORDERS_PER_TURN_MAX: usize = 1_024;

/// How long the loop sleeps when nothing is due, in ms (it wakes earlier for any event).
const IDLE_WAKE_MS: u64 = 1_000;

/// The dispatcher's connections to the rest of the edge.
pub(super) struct Wiring {
    pub(super) connector: Arc<dyn Connector>,
    pub(super) metrics: Arc<EdgeMetrics>,
    pub(super) availability: Arc<Availability>,
    pub(super) catalogue: watch::Sender<Arc<Catalogue>>,
    pub(super) orders: mpsc::Receiver<VoteOrder>,
    pub(super) probes: mpsc::Receiver<ProbeReport>,
    pub(super) stopping: watch::Receiver<bool>,
}

/// One poll's votes not yet in a batch, oldest first.
#[derive(Default)]
struct Buffer {
    votes: VecDeque<PendingVote>,
    /// When its last batch was cut (for `batch_interval`).
    last_cut: Option<Instant>,
}

impl Buffer {
    /// When a batch that is not full may next be cut from it: `interval` after the last.
    fn paced_until(&self, interval: Duration) -> Option<Instant> {
        self.last_cut
            .map(|at| at + interval)
            .filter(|_| !interval.is_zero())
    }
}

/// A batch out at a node.
struct Out {
    node: usize,
    batch: Batch,
    sent_at: Instant,
}

/// What a batch's task reports.
struct Done {
    id: u64,
    exchanged: Exchanged,
    connection: Option<Connection>,
}

/// The dispatcher.
pub(super) struct Dispatcher {
    settings: Settings,
    nodes: Vec<Node>,
    book: PollBook,
    buffers: Vec<Buffer>,
    /// Batches waiting for a node (after a failure, or when no node took them).
    waiting: VecDeque<Batch>,
    out: BTreeMap<u64, Out>,
    next_batch: u64,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    wiring: Wiring,
    /// Whether the edge is stopping: batches leave without lingering.
    stopping: bool,
    /// Whether orders may still arrive.
    orders_open: bool,
    /// Votes held (not yet answered).
    held: i64,
}

impl Dispatcher {
    pub(super) fn new(settings: Settings, endpoints: Vec<Endpoint>, wiring: Wiring) -> Self {
        assert!(endpoints.len() <= 32, "a batch's tried set has 32 bits");
        // Every batch out sends one report; room for all of them means no task ever waits.
        let (done_tx, done_rx) = mpsc::channel(endpoints.len() * settings.in_flight_max + 1);
        let nodes = endpoints
            .into_iter()
            .map(|e| {
                let gauges = wiring.metrics.node_gauges(&e.url);
                Node::new(e, settings.breaker_failures, settings.breaker_open, gauges)
            })
            .collect::<Vec<_>>();
        Self {
            book: PollBook::new(nodes.len()),
            nodes,
            settings,
            buffers: Vec::new(),
            waiting: VecDeque::new(),
            out: BTreeMap::new(),
            next_batch: 0,
            done_tx,
            done_rx,
            wiring,
            stopping: false,
            orders_open: true,
            held: 0,
        }
    }

    /// Runs until orders are closed and every vote is answered.
    pub(super) async fn run(mut self) {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut stopping = self.wiring.stopping.clone();
        let mut armed = None;
        loop {
            let now = Instant::now();
            self.pump(now);
            if !self.orders_open && self.is_empty() {
                return;
            }
            // Re-arming a timer takes the timer driver's lock: only when something is due
            // earlier than the armed instant, or that instant has passed (an early wake-up
            // finds nothing due and costs one turn).
            let wake = self.next_wake(now);
            if armed.is_none_or(|at| wake < at || at <= now) {
                timer.as_mut().reset(wake);
                armed = Some(wake);
            }
            tokio::select! {
                biased;
                Some(done) = self.done_rx.recv() => self.on_done(done),
                Some(report) = self.wiring.probes.recv() => self.on_probe(report),
                order = self.wiring.orders.recv(), if self.orders_open => match order {
                    Some(order) => self.on_orders(order),
                    None => {
                        self.orders_open = false;
                        self.stopping = true;
                    }
                },
                _ = stopping.wait_for(|stop| *stop), if !self.stopping => {
                    self.stopping = true;
                }
                () = &mut timer => {}
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.out.is_empty()
            && self.waiting.is_empty()
            && self.buffers.iter().all(|b| b.votes.is_empty())
            && self.nodes.iter().all(|n| n.queue.is_empty())
    }

    /// Takes `first` and whatever else is in the channel, up to a bound.
    fn on_orders(&mut self, first: VoteOrder) {
        let now = Instant::now();
        self.take(first, now);
        for _ in 1..ORDERS_PER_TURN_MAX {
            match self.wiring.orders.try_recv() {
                Ok(order) => self.take(order, now),
                Err(_) => break,
            }
        }
    }

    fn take(&mut self, order: VoteOrder, now: Instant) {
        let slot = order.poll.0 as usize;
        if self.buffers.len() <= slot {
            self.buffers.resize_with(slot + 1, Buffer::default);
        }
        self.held += 1;
        self.wiring.metrics.votes_received.inc();
        self.buffers[slot].votes.push_back(PendingVote {
            option: order.option,
            vote_id: order.vote_id,
            arrived: now,
            deadline: now + self.settings.vote_deadline,
            maybe_counted: false,
            reply: Some(order.reply),
        });
    }

    /// Everything that is due at `now`: expiries, batches cut, assigned and sent, gauges.
    fn pump(&mut self, now: Instant) {
        self.expire(now);
        self.evict(now);
        let waiting = std::mem::take(&mut self.waiting);
        for batch in waiting {
            if let Err(batch) = self.assign(batch, now) {
                self.waiting.push_back(batch);
            }
        }
        self.cut(now);
        for index in 0..self.nodes.len() {
            self.send_queued(index, now);
        }
        self.publish(now);
    }

    /// Answers every vote whose deadline has passed, wherever it is.
    fn expire(&mut self, now: Instant) {
        let deadline_ms = self.settings.vote_deadline.as_millis() as u64;
        let mut counts = (0, 0);
        let mut add = |(u, s): (u64, u64)| {
            counts.0 += u;
            counts.1 += s;
        };
        for buffer in &mut self.buffers {
            while buffer.votes.front().is_some_and(|v| v.deadline <= now) {
                if let Some(mut vote) = buffer.votes.pop_front() {
                    let answer = vote.expired(deadline_ms);
                    vote.answer(answer);
                    add((0, 1));
                }
            }
        }
        let due = |batch: &Batch| batch.earliest_deadline().is_some_and(|d| d <= now);
        for batch in self.waiting.iter_mut().filter(|b| due(b)) {
            add(batch.expire(now, deadline_ms));
        }
        for node in &mut self.nodes {
            for batch in node.queue.iter_mut().filter(|b| due(b)) {
                add(batch.expire(now, deadline_ms));
            }
        }
        for out in self.out.values_mut().filter(|o| due(&o.batch)) {
            add(out.batch.expire(now, deadline_ms));
        }
        let (unconfirmed, shed) = counts;
        if unconfirmed + shed > 0 {
            self.held -= (unconfirmed + shed) as i64;
            self.wiring
                .metrics
                .answered(Outcome::Unconfirmed, unconfirmed);
            self.wiring.metrics.answered(Outcome::Shed, shed);
            tracing::debug!(unconfirmed, shed, "votes reached their deadline unanswered");
        }
        self.waiting.retain(|b| b.earliest_deadline().is_some());
        for node in &mut self.nodes {
            node.queue.retain(|b| b.earliest_deadline().is_some());
        }
    }

    /// Moves the batches queued at a node that no longer takes batches back to waiting (they
    /// were not sent: the next node takes them).
    fn evict(&mut self, now: Instant) {
        for node in &mut self.nodes {
            let keep = node.ready && node.breaker.state(now) == BreakerState::Closed;
            if !keep {
                while let Some(batch) = node.queue.pop_back() {
                    self.waiting.push_front(batch);
                }
            }
        }
    }

    /// Queues `batch` at the nearest node that lists its poll, takes batches and has not been
    /// tried for it this round; gives it back if there is none now.
    fn assign(&mut self, mut batch: Batch, now: Instant) -> Result<(), Batch> {
        let listing: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.book.lists(i, batch.poll))
            .collect();
        if listing.is_empty() {
            self.refuse_unknown_poll(batch, now);
            return Ok(());
        }
        if listing.iter().all(|&i| batch.tried & (1 << i) != 0) {
            batch.tried = 0;
            batch.not_before = now + Duration::from_millis(RESEND_PAUSE_MS);
        }
        if now < batch.not_before {
            return Err(batch);
        }
        let queue_max = self.settings.queue_max;
        let chosen = listing
            .into_iter()
            .find(|&i| batch.tried & (1 << i) == 0 && self.nodes[i].takes_batches(now, queue_max));
        match chosen {
            Some(i) => {
                self.nodes[i].queue.push_back(batch);
                Ok(())
            }
            None => Err(batch),
        }
    }

    /// Every node said it has no such poll: the votes are answered as a node would.
    fn refuse_unknown_poll(&mut self, mut batch: Batch, now: Instant) {
        let name = self
            .book
            .name(batch.poll)
            .map_or_else(String::new, |p| p.to_string());
        for vote in &mut batch.votes {
            let refusal = ApiError::UnknownPoll(name.clone());
            self.reply(vote, VoteAnswer::Refused(refusal), now);
        }
    }

    /// Cuts batches from the buffers that are due (full, or their first vote has lingered),
    /// while some node takes them.
    fn cut(&mut self, now: Instant) {
        let max = self.settings.batch_votes_max;
        for slot in 0..self.buffers.len() {
            let poll = PollSlot(slot as u32);
            loop {
                let buffer = &self.buffers[slot];
                let Some(first) = buffer.votes.front() else {
                    break;
                };
                // A batch that is not full waits out the poll's batch interval (0 by default)
                // after its previous batch: at a high rate that makes batches of the rate
                // times the interval, cheaper for the node per vote, at up to the interval's
                // wait per vote; at a low rate the previous batch is long gone.
                let paced = buffer
                    .paced_until(self.settings.batch_interval)
                    .is_none_or(|at| now >= at);
                let due = buffer.votes.len() >= max
                    || self.stopping
                    || paced
                        && (now >= first.arrived + self.settings.linger
                            || self.idle_node(poll, now));
                if !due || !self.some_node_takes(poll, now) {
                    break;
                }
                let lingered = now.saturating_duration_since(first.arrived);
                let take = buffer.votes.len().min(max);
                self.buffers[slot].last_cut = Some(now);
                let votes: Vec<PendingVote> = self.buffers[slot].votes.drain(..take).collect();
                self.wiring
                    .metrics
                    .batch_linger_seconds
                    .observe(lingered.as_secs_f64());
                let batch = Batch {
                    poll,
                    votes,
                    tried: 0,
                    not_before: now,
                };
                if let Err(batch) = self.assign(batch, now) {
                    self.waiting.push_back(batch);
                    break;
                }
            }
        }
    }

    /// Whether the node a batch of `poll` would go to now is idle (no batch out, none
    /// queued): then the batch leaves at once, whatever its size, so at a low rate no vote
    /// waits for the linger. Under load the node always has a batch out, and votes gather
    /// for `linger_ms` or `batch_votes_max` (measured: sending whenever a slot was free made
    /// batches of ~15 votes and cost the node twice the CPU per vote; BENCHMARKS.md).
    fn idle_node(&self, poll: PollSlot, now: Instant) -> bool {
        let queue_max = self.settings.queue_max;
        (0..self.nodes.len())
            .find(|&i| self.book.lists(i, poll) && self.nodes[i].takes_batches(now, queue_max))
            .is_some_and(|i| self.nodes[i].queue.is_empty() && self.nodes[i].in_flight == 0)
    }

    fn some_node_takes(&self, poll: PollSlot, now: Instant) -> bool {
        let queue_max = self.settings.queue_max;
        (0..self.nodes.len())
            .any(|i| self.book.lists(i, poll) && self.nodes[i].takes_batches(now, queue_max))
    }

    /// Sends node `index`'s queued batches while it has free slots and its breaker allows.
    fn send_queued(&mut self, index: usize, now: Instant) {
        while self.nodes[index].in_flight < self.settings.in_flight_max {
            let Some(mut batch) = self.nodes[index].queue.pop_front() else {
                return;
            };
            batch.keep_waiting();
            if batch.votes.is_empty() {
                continue;
            }
            if !self.nodes[index].breaker.try_send(now) {
                self.nodes[index].queue.push_front(batch);
                return;
            }
            self.send(index, batch, now);
        }
    }

    fn send(&mut self, index: usize, batch: Batch, now: Instant) {
        let Some(poll) = self.book.name(batch.poll).cloned() else {
            // A slot is only ever made with its name.
            unreachable!("a batch for a poll slot without a name");
        };
        let book = &self.book;
        let body = batch.encode(|option| book.option_at(index, batch.poll, option));
        let node = &mut self.nodes[index];
        let path = format!("/v1/polls/{poll}/votes/batch?{RECEIPTS_QUERY}");
        let mut headers = vec![
            (hyper::header::CONTENT_TYPE, POSTCARD_MEDIA_TYPE),
            (hyper::header::ACCEPT, POSTCARD_MEDIA_TYPE),
        ];
        if let Some(authorization) = &self.settings.authorization {
            headers.push((hyper::header::AUTHORIZATION, authorization.as_str()));
        }
        let Some(request) = request(
            &node.endpoint,
            hyper::Method::POST,
            &path,
            &headers,
            Bytes::from(body),
        ) else {
            // The path is a checked poll name and the headers are constants: it always builds.
            unreachable!("a batch request that does not build");
        };
        self.wiring
            .metrics
            .batch_votes
            .observe(batch.votes.len() as f64);
        let id = self.next_batch;
        self.next_batch += 1;
        node.in_flight += 1;
        let reuse = node.idle.pop();
        let (endpoint, connector, done) = (
            node.endpoint.clone(),
            self.wiring.connector.clone(),
            self.done_tx.clone(),
        );
        let timeout = self.settings.batch_timeout;
        tokio::spawn(async move {
            let (exchanged, connection) =
                exchange(&*connector, &endpoint, reuse, request, timeout).await;
            // The channel has room for every batch out; it is closed only if the dispatcher
            // is gone, and then nobody waits for the answer.
            let _ = done
                .send(Done {
                    id,
                    exchanged,
                    connection,
                })
                .await;
        });
        self.out.insert(
            id,
            Out {
                node: index,
                batch,
                sent_at: now,
            },
        );
    }

    /// A batch came back: answers, breaker, and the votes to send again.
    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        let Some(Out {
            node: index,
            mut batch,
            sent_at,
        }) = self.out.remove(&done.id)
        else {
            unreachable!("a report for a batch that is not out");
        };
        let node = &mut self.nodes[index];
        node.in_flight -= 1;
        if let Some(connection) = done.connection {
            if node.idle.len() < self.settings.in_flight_max {
                node.idle.push(connection);
            }
        }
        let elapsed = now.saturating_duration_since(sent_at);
        let name = node.endpoint.url.clone();
        let kind = match &done.exchanged {
            Exchanged::Answered { status: 200, .. } => "answered",
            Exchanged::Answered { .. } => "refused",
            Exchanged::NotSent(_) => "not_sent",
            Exchanged::Lost(_) => "lost",
        };
        let verdict = judge(&name, batch.votes.len(), done.exchanged);
        let slow = elapsed > self.settings.slow_batch;
        let outcome = if kind == "answered" && slow {
            "slow"
        } else {
            kind
        };
        self.wiring
            .metrics
            .batch(&name, outcome, elapsed.as_secs_f64());
        self.note_health(index, verdict.node_failed() || slow, &verdict, elapsed, now);
        match verdict {
            Verdict::Answered(verdicts) => {
                for (vote, verdict) in batch.votes.iter_mut().zip(verdicts) {
                    let answer = match verdict {
                        VoteVerdict::Counted {
                            actor,
                            seq,
                            second,
                            node,
                        } => VoteAnswer::Counted {
                            actor,
                            seq,
                            second,
                            node,
                        },
                        VoteVerdict::Duplicate { node } => VoteAnswer::Duplicate { node },
                        VoteVerdict::UnknownOption => {
                            let option = self.option_name(batch.poll, vote.option);
                            VoteAnswer::Refused(ApiError::UnknownOption(option))
                        }
                        VoteVerdict::Resend => continue,
                    };
                    self.reply(vote, answer, now);
                }
                self.resend(batch, index);
            }
            Verdict::Refused(refusal) => {
                for vote in &mut batch.votes {
                    self.reply(vote, VoteAnswer::Refused(refusal.clone()), now);
                }
            }
            Verdict::UnknownPoll => {
                self.book.forget(index, batch.poll);
                self.resend(batch, index);
            }
            Verdict::Resend { maybe_counted, why } => {
                tracing::debug!(%why, votes = batch.votes.len(), "batch not answered; sending its votes on");
                if maybe_counted {
                    batch.votes.iter_mut().for_each(|v| v.maybe_counted = true);
                }
                self.resend(batch, index);
            }
        }
    }

    /// Counts a batch's outcome for node `index`'s breaker, logging when it opens or closes.
    fn note_health(
        &mut self,
        index: usize,
        failed: bool,
        verdict: &Verdict,
        elapsed: Duration,
        now: Instant,
    ) {
        let node = &mut self.nodes[index];
        let name = &node.endpoint.url;
        if failed {
            if node.breaker.failed(now) {
                self.wiring.metrics.breaker_opened(name);
                let why = match verdict {
                    Verdict::Resend { why, .. } => why.clone(),
                    _ => format!("answers as slow as {elapsed:?}"),
                };
                tracing::warn!(
                    upstream = %name,
                    %why,
                    "breaker open: no batches to this node until a probe batch succeeds"
                );
            }
        } else if node.breaker.succeeded() {
            tracing::info!(upstream = %name, "breaker closed: the node answers again");
        }
    }

    /// Sends `batch`'s unanswered votes again, to a node other than `index` first.
    fn resend(&mut self, mut batch: Batch, index: usize) {
        batch.keep_waiting();
        if batch.votes.is_empty() {
            return;
        }
        self.wiring
            .metrics
            .votes_resent
            .inc_by(batch.votes.len() as u64);
        batch.tried |= 1 << index;
        self.waiting.push_back(batch);
    }

    /// Answers `vote`: a node's refusal of a vote that may have been counted by an earlier
    /// attempt becomes `unconfirmed` (that refusal speaks only for its own attempt).
    fn reply(&mut self, vote: &mut PendingVote, answer: VoteAnswer, now: Instant) {
        let (answer, outcome) = match answer {
            VoteAnswer::Counted { .. } => (answer, Outcome::Counted),
            VoteAnswer::Duplicate { .. } => (answer, Outcome::Duplicate),
            VoteAnswer::Refused(_) if vote.maybe_counted => {
                let deadline_ms = self.settings.vote_deadline.as_millis() as u64;
                let mut refusal = vote.expired(deadline_ms);
                if let VoteAnswer::Refused(ApiError::Unconfirmed(message)) = &mut refusal {
                    *message = format!(
                        "an earlier attempt of the edge's may have been counted, and a node \
                         refused this one; retry with the same vote ID ({message})"
                    );
                }
                (refusal, Outcome::Unconfirmed)
            }
            VoteAnswer::Refused(_) => (answer, Outcome::Refused),
        };
        if vote.answer(answer) {
            self.held -= 1;
            self.wiring.metrics.answered(outcome, 1);
            self.wiring
                .metrics
                .vote_seconds
                .observe(now.saturating_duration_since(vote.arrived).as_secs_f64());
        }
    }

    fn option_name(&self, poll: PollSlot, option: u8) -> String {
        self.book
            .name(poll)
            .and_then(|name| self.book.catalogue().polls.get(name.as_str()))
            .and_then(|p| p.options.get(usize::from(option)).cloned())
            .unwrap_or_default()
    }

    /// A probe's report: readiness (logged when it changes) and the node's polls.
    fn on_probe(&mut self, report: ProbeReport) {
        let node = &mut self.nodes[report.node];
        if node.ready != report.ready {
            match &report.why {
                None => {
                    tracing::info!(upstream = %node.endpoint.url, "node ready: sending it votes")
                }
                Some(why) => tracing::warn!(
                    upstream = %node.endpoint.url,
                    %why,
                    "node not ready: sending it no votes"
                ),
            }
        }
        node.ready = report.ready;
        node.not_ready_why = report.why;
        if let Some(polls) = report.polls {
            if self.book.learn(report.node, &polls) {
                let catalogue = Arc::new(self.book.catalogue().clone());
                self.wiring.catalogue.send_replace(catalogue);
            }
        }
    }

    /// Gauges and the door's view of the nodes.
    fn publish(&mut self, now: Instant) {
        let mut available = 0u32;
        for (index, node) in self.nodes.iter().enumerate() {
            available |= u32::from(node.available(now)) << index;
            node.gauges.set(
                node.breaker.state(now),
                node.ready,
                node.in_flight,
                node.queue.len(),
            );
        }
        self.wiring.availability.set(available);
        self.wiring.metrics.votes_waiting.set(self.held);
    }

    /// When the loop must look again without an event: a buffer's linger, a deadline, a
    /// pause after a full round, a breaker's cool-down.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_millis(IDLE_WAKE_MS);
        // Only instants still ahead: what is due now was done by the pump, and what it could
        // not do (no node takes a batch) waits for an event, not for a spinning loop.
        let mut consider = |at: Instant| {
            if at > now {
                wake = wake.min(at);
            }
        };
        for buffer in &self.buffers {
            if let Some(first) = buffer.votes.front() {
                consider(first.deadline);
                if !self.stopping {
                    let paced = buffer.paced_until(self.settings.batch_interval);
                    consider(paced.map_or(first.arrived + self.settings.linger, |at| {
                        at.max(first.arrived + self.settings.linger)
                    }));
                    // An idle node takes a batch at once, once the interval is out.
                    if let Some(at) = paced {
                        consider(at);
                    }
                }
            }
        }
        for batch in &self.waiting {
            consider(batch.not_before);
            if let Some(deadline) = batch.earliest_deadline() {
                consider(deadline);
            }
        }
        let queued = self.nodes.iter().flat_map(|n| n.queue.iter());
        let out = self.out.values().map(|o| &o.batch);
        for batch in queued.chain(out) {
            if let Some(deadline) = batch.earliest_deadline() {
                consider(deadline);
            }
        }
        if !self.waiting.is_empty() || self.buffers.iter().any(|b| !b.votes.is_empty()) {
            for node in &self.nodes {
                if let Some(at) = node.breaker.opens_at() {
                    consider(at);
                }
            }
        }
        wake
    }
}
