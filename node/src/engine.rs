//! The engine: the one task that owns the replica (STYLE.md §8). Everything that changes votes
//! goes through its bounded command queue; nothing else holds the replica.
//!
//! Its loop: take commands (a burst at a time), answer duplicates and refusals at once, hand
//! new records to the write-ahead log as one job, and answer the votes that job carried when
//! the log reports the job fsynced. One job is in flight at a time, so everything that arrives
//! during an fsync rides the next one: group commit. After each change it marks the results
//! dirty; every results tick it publishes an immutable snapshot that readers share.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tally_core::limits::COUNTER_ENTRIES_PER_MESSAGE_MAX;
use tally_core::wire::{ActorCounters, CounterState};
use tally_core::{
    AcceptError, LocalVote, OptionIndex, PollError, PollId, PollSpec, PollWindow, RecordBatch,
    Replica, ReservedIndex, Second, Seq, VersionVector, VoteId,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::Clock;
use crate::health::{Health, Hold};
use crate::metrics::Metrics;
use crate::peer::sync::PeerBoard;
use crate::results::ResultsSnapshot;
use crate::wal::{WalDone, WalEntry, WalJob};

/// Commands drained per wake-up before the engine looks at the log again.
pub const COMMANDS_PER_WAKE_MAX: usize = 4_096;

/// Growth steps of the dedupe indexes the engine runs per results tick, less those their
/// inserts ran since the last tick: each moves at most `INDEX_GROWTH_STEP_MOVES_MAX` (256)
/// vote IDs, so a tick spends ~1–4 ms at most, an index in the middle of a burst gets no
/// extra work, and one that stops taking IDs mid-growth still finishes and frees its old
/// table (at 60M IDs, within ~5 minutes at the default 100 ms tick).
pub const INDEX_GROWTH_STEPS_PER_TICK: usize = 128;

/// What the engine answers for one accepted vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteAck {
    /// New: durable as this node's record `seq`, stamped `second`.
    Counted {
        /// The record's seq.
        seq: Seq,
        /// Its poll-relative second.
        second: Second,
    },
    /// Seen before; the earlier vote is durable.
    Duplicate,
}

/// Why the engine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The replica refused the vote.
    #[error(transparent)]
    Accept(#[from] AcceptError),
    /// The poll change was refused.
    #[error(transparent)]
    Poll(#[from] PollError),
    /// The write-ahead log failed; the node is stopping and nothing was acknowledged.
    #[error("the write-ahead log failed; this node is stopping")]
    LogFailed,
    /// A hold on the node (low disk, a skewed clock) refuses new votes; nothing was counted.
    #[error("{}", .0.message())]
    Held(Hold),
}

/// One vote of a batch as the engine answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchVoteAck {
    /// As for a single vote.
    Ack(VoteAck),
    /// Shed: too many votes wait for the log; retry this one.
    Overloaded,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// A request to the engine.
pub enum Command {
    /// One vote.
    Vote {
        /// The poll.
        poll: PollId,
        /// The option.
        option: OptionIndex,
        /// The idempotency key.
        vote_id: VoteId,
        /// Answered once durable.
        reply: Reply<VoteAck>,
    },
    /// Many votes for one poll.
    Batch {
        /// The poll.
        poll: PollId,
        /// The votes.
        votes: Vec<(OptionIndex, VoteId)>,
        /// Answered once all are durable.
        reply: Reply<Vec<BatchVoteAck>>,
    },
    /// Create a poll, or merge the window of an existing one.
    UpsertPoll {
        /// The definition.
        spec: PollSpec,
        /// Size the poll's dedupe index for this many vote IDs (logged, so a restart sizes it
        /// again); `None` leaves it to grow as it fills.
        expected_votes: Option<u64>,
        /// An empty index for `expected_votes`, built by the caller off the engine: installed
        /// in O(1) if the poll's index holds no ID yet, so the engine does not allocate it
        /// while votes wait. Without one (or if the poll holds IDs) the engine reserves.
        prepared_index: Option<ReservedIndex>,
        /// Answered once durable; true if the definition changed.
        reply: Reply<bool>,
    },
    /// Merge a window change (open or close).
    MergeWindow {
        /// The poll.
        poll: PollId,
        /// The change.
        window: PollWindow,
        /// Answered once durable; true if anything changed.
        reply: Reply<bool>,
    },
    /// This node's version vector of every poll (a peer session asks before pulling).
    Vectors {
        /// Answered at once.
        reply: Reply<Vec<(PollId, VersionVector)>>,
    },
    /// A peer with these vectors asks for what it lacks.
    PeerPull {
        /// The peer's vectors; polls it does not name count as empty.
        vectors: Vec<(PollId, VersionVector)>,
        /// Most records to answer with.
        records_max: usize,
        /// Answered at once.
        reply: Reply<PullReply>,
    },
    /// Merge what a peer sent: polls, records (logged like local votes) and counters.
    PeerApply {
        /// Poll definitions.
        polls: Vec<PollSpec>,
        /// Records.
        batches: Vec<RecordBatch>,
        /// Counter states.
        counters: Vec<CounterState>,
        /// Answered at once (the records are durable at their origin already).
        reply: Reply<PeerApplied>,
    },
    /// A peer's hello named its current actor: its node's older incarnations are superseded.
    PeerIncarnation {
        /// The peer's actor, from a hello its certificate vouches for.
        actor: tally_core::ActorId,
    },
}

/// What a peer is sent in answer to its version vectors: every poll, the records it lacks (at
/// most the requested number), and the counter state of every poll.
#[derive(Debug, Default)]
pub struct PullReply {
    /// Every poll's definition (so new polls and window changes replicate).
    pub polls: Vec<PollSpec>,
    /// Records the peer lacks, oldest first per actor.
    pub batches: Vec<RecordBatch>,
    /// Counter state per poll, as this node sees it.
    pub counters: Vec<CounterState>,
    /// This node's own version vectors, so the peer can tell how far behind it is.
    pub vectors: Vec<(PollId, VersionVector)>,
    /// Whether `records_max` cut the answer short (the peer should ask again at once).
    pub truncated: bool,
}

/// What applying a peer's answer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerApplied {
    /// Records newly held.
    pub records_added: usize,
    /// Whether any counter rose.
    pub counters_changed: bool,
    /// Parts refused, each with its reason (logged; nothing of a refused part was merged).
    pub refused: Vec<String>,
}

/// A reply held until the log job `token` is durable.
enum Pending {
    Vote(Reply<VoteAck>, VoteAck),
    Batch(Reply<Vec<BatchVoteAck>>, Vec<BatchVoteAck>),
    Poll(Reply<bool>, bool),
}

struct Waiter {
    token: u64,
    pending: Pending,
}

/// The engine's ends of its channels.
pub struct EngineIo {
    /// Commands from the HTTP layer (and later, peers).
    pub commands: mpsc::Receiver<Command>,
    /// Jobs to the log writer.
    pub wal_jobs: mpsc::Sender<WalJob>,
    /// Reports from the log writer.
    pub wal_done: mpsc::Receiver<WalDone>,
    /// Where results snapshots are published.
    pub results: watch::Sender<Arc<ResultsSnapshot>>,
    /// Becomes true when the node's drain is over: the engine takes the commands already
    /// queued, refuses new ones, flushes and stops, even if some sender (a connection kept
    /// past the drain deadline) is still alive. The queue closing stops it too.
    pub close_commands: watch::Receiver<bool>,
}

/// The task that owns the replica.
pub struct Engine {
    replica: Replica,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    results_tick: Duration,
    waiting: VecDeque<Waiter>,
    /// Log entries (poll changes) to go out with the next job, besides records.
    unlogged_entries: Vec<WalEntry>,
    /// Own records in each job in flight, to mark durable when it is: (token, poll, last seq).
    in_flight_jobs: VecDeque<(u64, Vec<(PollId, Seq)>)>,
    next_token: u64,
    durable_token: u64,
    /// A poll was created or its window changed since the last published snapshot.
    polls_changed: bool,
    /// Peer statuses, read when results are captured ("how stale").
    peers: PeerBoard,
    /// The node's holds: votes are refused under some, and a failed log sets one.
    health: Arc<Health>,
    /// A planted bug (simulation tests only): answer before the log is durable.
    ack_before_fsync: bool,
}

impl Engine {
    /// An engine around a recovered replica.
    pub fn new(
        replica: Replica,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        results_tick: Duration,
        peers: PeerBoard,
        health: Arc<Health>,
    ) -> Self {
        Self {
            replica,
            clock,
            metrics,
            results_tick,
            peers,
            health,
            waiting: VecDeque::new(),
            unlogged_entries: Vec::new(),
            in_flight_jobs: VecDeque::new(),
            next_token: 1,
            durable_token: 0,
            polls_changed: false,
            ack_before_fsync: false,
        }
    }

    /// **A planted bug, for the simulation's checker tests only**: answers votes as soon as
    /// they are accepted, before the log holding them is fsynced, so a crash loses votes that
    /// were acknowledged. Set through [`crate::config::PlantedBug::AckBeforeFsync`].
    #[doc(hidden)]
    pub fn plant_bug_ack_before_fsync(&mut self) {
        self.ack_before_fsync = true;
    }

    /// Starts [`Engine::run`] as a task on the current runtime, in production as in the
    /// simulation; only the log writer's fsyncs run on a thread of their own
    /// ([`crate::wal_writer`]). On the HTTP runtime, a vote's hand-offs to the engine and back
    /// wake tasks on the same worker instead of a thread: measured against the engine on its
    /// own thread, ~10% more single votes per second and no fewer batched ones (BENCHMARKS.md,
    /// "Single votes: the HTTP layers and the engine on the HTTP runtime"). The handle resolves to the engine's result.
    pub fn spawn(self, io: EngineIo) -> tokio::task::JoinHandle<Result<(), EngineError>> {
        tokio::spawn(self.run(io))
    }

    /// Runs until the command queue closes (graceful stop) or the log fails (error).
    pub async fn run(mut self, mut io: EngineIo) -> Result<(), EngineError> {
        let mut ticker = tokio::time::interval(self.results_tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_closed = false;
        loop {
            tokio::select! {
                biased;
                _ = io.close_commands.wait_for(|close| *close), if !commands_closed => {
                    commands_closed = true;
                    io.commands.close();
                }
                done = io.wal_done.recv() => {
                    let Some(done) = done else { return self.fail("log writer stopped") };
                    if let Err(error) = done.result {
                        tracing::error!(%error, "write-ahead log failed");
                        return self.fail("fsync failed");
                    }
                    self.metrics.observe_fsync(done.fsync, done.entries, done.bytes);
                    self.on_durable(done.up_to_token);
                }
                command = io.commands.recv() => {
                    let Some(command) = command else { break };
                    self.handle(command);
                    for _ in 1..COMMANDS_PER_WAKE_MAX {
                        let Ok(command) = io.commands.try_recv() else { break };
                        self.handle(command);
                    }
                    // A new or reopened poll is readable (and votable: the HTTP layer resolves
                    // polls in the snapshot) before its change is answered, not a tick later.
                    if std::mem::take(&mut self.polls_changed) {
                        self.publish(&io.results);
                    }
                }
                _ = ticker.tick() => {
                    self.replica.advance_index_growth(INDEX_GROWTH_STEPS_PER_TICK);
                    self.publish(&io.results);
                }
            }
            if self.in_flight_jobs.is_empty() {
                self.submit(&io.wal_jobs).await?;
            }
            self.metrics
                .set_engine_queue(io.commands.len(), self.waiting.len());
        }
        // Graceful stop: flush what was accepted, answer it, publish the last results.
        while !self.in_flight_jobs.is_empty() || self.has_unlogged() {
            if self.in_flight_jobs.is_empty() {
                self.submit(&io.wal_jobs).await?;
            }
            match io.wal_done.recv().await {
                Some(done) if done.result.is_ok() => self.on_durable(done.up_to_token),
                _ => return self.fail("log failed during shutdown"),
            }
        }
        self.compact_log(&mut io).await?;
        self.publish(&io.results);
        Ok(())
    }

    /// At a clean stop, rewrites the log as one snapshot of the whole state in maximal
    /// batches, so the next start replays few, large entries. (While serving, the log of a
    /// grow-only record set already is the state; replaying 10M votes takes ~2.6 s, see
    /// BENCHMARKS.md.) The writer answers it after everything queued before it.
    async fn compact_log(&mut self, io: &mut EngineIo) -> Result<(), EngineError> {
        let mut entries = vec![WalEntry::Identity(self.replica.actor().clone())];
        let everything = tally_core::VersionVector::default();
        for spec in self.replica.poll_specs() {
            entries.push(WalEntry::Poll(spec.clone()));
            // The next start sizes the index before refilling it, as it was here.
            let capacity = self.replica.state(spec.id()).map(|s| s.vote_id_capacity());
            if let Some(capacity) = capacity.filter(|&c| c > 0) {
                entries.push(WalEntry::Reserve {
                    poll: spec.id().clone(),
                    vote_ids: capacity as u64,
                });
            }
            let batches = self
                .replica
                .missing_records(spec.id(), &everything, usize::MAX);
            entries.extend(batches.into_iter().map(WalEntry::Records));
        }
        let token = self.next_token;
        self.next_token += 1;
        if io
            .wal_jobs
            .send(WalJob::snapshot(token, entries))
            .await
            .is_err()
        {
            return self.fail("log writer stopped");
        }
        match io.wal_done.recv().await {
            Some(done) if done.result.is_ok() => {
                tracing::info!(
                    entries = done.entries,
                    bytes = done.bytes,
                    "log compacted into a snapshot"
                );
                Ok(())
            }
            Some(done) => {
                // Every vote was durable before the snapshot began; the old log still holds them.
                tracing::error!(result = ?done.result, "log compaction failed; the log is unchanged");
                Ok(())
            }
            None => self.fail("log writer stopped"),
        }
    }

    /// Publishes a snapshot of the replica now, sharing the previous one's unchanged polls.
    fn publish(&self, results: &watch::Sender<Arc<ResultsSnapshot>>) {
        let previous = results.borrow().clone();
        let peers = self.peers.lock().map(|b| b.clone()).unwrap_or_default();
        let now = self.clock.now();
        let next = ResultsSnapshot::capture_since(&self.replica, now, &peers, &previous);
        next.log_index_growth(&previous);
        self.metrics.observe_results(&next, &peers, now);
        results.send_replace(Arc::new(next));
    }

    fn has_unlogged(&self) -> bool {
        !self.unlogged_entries.is_empty() || self.replica.in_flight_records() > 0
    }

    /// A read-only view for start-up checks and tests.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    fn fail(&mut self, why: &str) -> Result<(), EngineError> {
        self.health.set(Hold::LogFailed, true);
        tracing::error!(why, "engine stopping: nothing further is acknowledged");
        for waiter in self.waiting.drain(..) {
            match waiter.pending {
                Pending::Vote(reply, _) => drop(reply.send(Err(EngineError::LogFailed))),
                Pending::Batch(reply, _) => drop(reply.send(Err(EngineError::LogFailed))),
                Pending::Poll(reply, _) => drop(reply.send(Err(EngineError::LogFailed))),
            }
        }
        Err(EngineError::LogFailed)
    }

    fn handle(&mut self, command: Command) {
        let now = self.clock.now();
        let command = match self.refuse_if_held(command) {
            Some(command) => command,
            None => return,
        };
        match command {
            Command::Vote {
                poll,
                option,
                vote_id,
                reply,
            } => match self.replica.accept_local(&poll, option, vote_id, now) {
                Ok(LocalVote::Duplicate { wait_for: None }) => {
                    let _ = reply.send(Ok(VoteAck::Duplicate));
                }
                Ok(vote) => self.wait(Pending::Vote(reply, ack(vote))),
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            },
            Command::Batch { poll, votes, reply } => self.handle_batch(&poll, votes, reply),
            Command::UpsertPoll {
                spec,
                expected_votes,
                prepared_index,
                reply,
            } => match self.replica.upsert_poll(spec.clone()) {
                Ok(changed) => {
                    // The definition goes into the log before the reservation that names it;
                    // both in the job the reply waits for.
                    self.log_poll_change(&spec.id().clone(), changed, reply);
                    if let Some(vote_ids) = expected_votes {
                        self.reserve(spec.id(), vote_ids, prepared_index);
                    }
                }
                Err(error) => drop(reply.send(Err(error.into()))),
            },
            Command::MergeWindow {
                poll,
                window,
                reply,
            } => match self.replica.merge_window(&poll, &window) {
                Ok(changed) => self.log_poll_change(&poll, changed, reply),
                Err(error) => drop(reply.send(Err(error.into()))),
            },
            Command::PeerIncarnation { actor } => {
                if self.replica.note_current_incarnation(&actor) {
                    tracing::info!(%actor, "older incarnations of this peer are superseded");
                }
            }
            Command::Vectors { reply } => {
                let _ = reply.send(Ok(self.vectors()));
            }
            Command::PeerPull {
                vectors,
                records_max,
                reply,
            } => {
                let _ = reply.send(Ok(self.pull(&vectors, records_max)));
            }
            Command::PeerApply {
                polls,
                batches,
                counters,
                reply,
            } => {
                let _ = reply.send(Ok(self.apply_from_peer(polls, batches, counters)));
            }
        }
    }

    /// Under a hold that refuses votes (low disk, a skewed clock), answers a vote or batch
    /// with [`EngineError::Held`] at once (nothing counted; the client retries elsewhere) and
    /// returns `None`; any other command is handed back.
    fn refuse_if_held(&self, command: Command) -> Option<Command> {
        let hold = match &command {
            Command::Vote { .. } | Command::Batch { .. } => self.health.vote_refusal(),
            _ => None,
        };
        let Some(hold) = hold else {
            return Some(command);
        };
        match command {
            Command::Vote { reply, .. } => drop(reply.send(Err(EngineError::Held(hold)))),
            Command::Batch { reply, .. } => drop(reply.send(Err(EngineError::Held(hold)))),
            other => return Some(other),
        }
        None
    }

    fn vectors(&self) -> Vec<(PollId, VersionVector)> {
        self.replica
            .poll_specs()
            .filter_map(|spec| {
                let vector = self.replica.version_vector(spec.id())?;
                Some((spec.id().clone(), vector))
            })
            .collect()
    }

    fn pull(&self, vectors: &[(PollId, VersionVector)], records_max: usize) -> PullReply {
        let mut reply = PullReply {
            vectors: self.vectors(),
            ..PullReply::default()
        };
        let empty = VersionVector::default();
        let mut budget = records_max;
        for spec in self.replica.poll_specs() {
            reply.polls.push(spec.clone());
            let theirs = vectors
                .iter()
                .find(|(poll, _)| poll == spec.id())
                .map_or(&empty, |(_, vector)| vector);
            let batches = self.replica.missing_records(spec.id(), theirs, budget);
            let sent: usize = batches.iter().map(RecordBatch::len).sum();
            budget -= sent.min(budget);
            reply.batches.extend(batches);
            if let (Some(counters), Some(state)) = (
                self.replica.counter_state(spec.id()),
                self.replica.state(spec.id()),
            ) {
                let lagging = |actor: &tally_core::ActorId| {
                    let ours = state.held(actor);
                    ours == 0 || theirs.get(actor) < ours
                };
                reply
                    .counters
                    .extend(counters_for_lagging(counters, lagging));
            }
        }
        reply.truncated = budget == 0;
        reply
    }

    /// Merges a peer's answer part by part; a refused part is reported and merges nothing.
    fn apply_from_peer(
        &mut self,
        polls: Vec<PollSpec>,
        batches: Vec<RecordBatch>,
        counters: Vec<CounterState>,
    ) -> PeerApplied {
        let mut applied = PeerApplied::default();
        for spec in polls {
            let id = spec.id().clone();
            match self.replica.upsert_poll(spec) {
                Ok(true) => {
                    self.polls_changed = true;
                    if let Some(merged) = self.replica.poll_spec(&id) {
                        self.unlogged_entries.push(WalEntry::Poll(merged.clone()));
                    }
                }
                Ok(false) => {}
                Err(error) => applied.refused.push(error.to_string()),
            }
        }
        for batch in batches {
            match self.replica.apply_records(&batch) {
                Ok(result) => {
                    applied.records_added += result.added;
                    // Log what joined the state, including batches held back for a gap: the
                    // log replays through the same rules.
                    if result.added > 0 || result.held_back > 0 {
                        self.unlogged_entries.push(WalEntry::Records(batch));
                    }
                }
                Err(error) => applied.refused.push(error.to_string()),
            }
        }
        for state in &counters {
            match self.replica.merge_counters(state) {
                Ok(changed) => applied.counters_changed |= changed,
                Err(error) => applied.refused.push(error.to_string()),
            }
        }
        applied
    }

    fn handle_batch(
        &mut self,
        poll: &PollId,
        votes: Vec<(OptionIndex, VoteId)>,
        reply: Reply<Vec<BatchVoteAck>>,
    ) {
        let now = self.clock.now();
        let mut answers = Vec::with_capacity(votes.len());
        if let Err(error) = self
            .replica
            .accept_local_batch(poll, &votes, now, &mut answers)
        {
            // Poll-level refusals (unknown, not open, closed): nothing was counted.
            let _ = reply.send(Err(error.into()));
            return;
        }
        let mut acks = Vec::with_capacity(votes.len());
        let mut must_wait = false;
        for answer in answers {
            match answer {
                Ok(vote) => {
                    must_wait |= !matches!(vote, LocalVote::Duplicate { wait_for: None });
                    acks.push(BatchVoteAck::Ack(ack(vote)));
                }
                Err(AcceptError::Overloaded) => acks.push(BatchVoteAck::Overloaded),
                Err(error) => {
                    // Only an unknown option is refused vote by vote, and the HTTP layer
                    // maps option names to indexes before the engine sees them.
                    debug_assert!(matches!(error, AcceptError::UnknownOption(_)));
                    let _ = reply.send(Err(error.into()));
                    return;
                }
            }
        }
        if must_wait {
            self.wait(Pending::Batch(reply, acks));
        } else {
            let _ = reply.send(Ok(acks));
        }
    }

    /// Sizes `poll`'s dedupe index for `vote_ids` IDs if it is smaller, and logs the
    /// reservation (after the poll's definition, which the caller has queued already).
    fn reserve(&mut self, poll: &PollId, vote_ids: u64, prepared: Option<ReservedIndex>) {
        let grew = crate::recovery::reserve_vote_ids(&mut self.replica, poll, vote_ids, prepared);
        if !grew.unwrap_or(false) {
            return;
        }
        self.unlogged_entries.push(WalEntry::Reserve {
            poll: poll.clone(),
            vote_ids,
        });
    }

    fn log_poll_change(&mut self, poll: &PollId, changed: bool, reply: Reply<bool>) {
        self.polls_changed |= changed;
        if changed {
            if let Some(spec) = self.replica.poll_spec(poll) {
                self.unlogged_entries.push(WalEntry::Poll(spec.clone()));
            }
        }
        self.wait(Pending::Poll(reply, changed));
    }

    /// Holds a reply until the next log job (the one that will carry its record) is durable.
    fn wait(&mut self, pending: Pending) {
        if self.ack_before_fsync {
            answer(pending);
            return;
        }
        self.waiting.push_back(Waiter {
            token: self.next_token,
            pending,
        });
    }

    /// Sends everything accepted since the last job to the log as one job.
    async fn submit(&mut self, jobs: &mpsc::Sender<WalJob>) -> Result<(), EngineError> {
        let batches = self.replica.take_unlogged();
        if batches.is_empty() && self.unlogged_entries.is_empty() {
            // Waiters for this token have nothing to log (e.g. an unchanged poll): answer now.
            if self
                .waiting
                .back()
                .is_some_and(|w| w.token == self.next_token)
            {
                let token = self.next_token;
                self.next_token += 1;
                self.durable_token = self.durable_token.max(token);
                self.answer_durable();
            }
            return Ok(());
        }
        let token = self.next_token;
        self.next_token += 1;
        let marks = batches
            .iter()
            .map(|b| (b.poll().clone(), b.last_seq()))
            .collect();
        let mut entries = std::mem::take(&mut self.unlogged_entries);
        entries.extend(batches.into_iter().map(WalEntry::Records));
        self.in_flight_jobs.push_back((token, marks));
        if jobs.send(WalJob::append(token, entries)).await.is_err() {
            return self.fail("log writer stopped");
        }
        Ok(())
    }

    fn on_durable(&mut self, up_to_token: u64) {
        while let Some((token, _)) = self.in_flight_jobs.front() {
            if *token > up_to_token {
                break;
            }
            if let Some((_, marks)) = self.in_flight_jobs.pop_front() {
                for (poll, seq) in marks {
                    self.replica.mark_durable(&poll, seq);
                }
            }
        }
        self.durable_token = self.durable_token.max(up_to_token);
        self.answer_durable();
    }

    fn answer_durable(&mut self) {
        while self
            .waiting
            .front()
            .is_some_and(|w| w.token <= self.durable_token)
        {
            let Some(waiter) = self.waiting.pop_front() else {
                break;
            };
            answer(waiter.pending);
        }
    }
}

/// Sends a held reply (its log job is durable).
fn answer(pending: Pending) {
    match pending {
        Pending::Vote(reply, ack) => drop(reply.send(Ok(ack))),
        Pending::Batch(reply, acks) => drop(reply.send(Ok(acks))),
        Pending::Poll(reply, changed) => drop(reply.send(Ok(changed))),
    }
}

/// The part of a counter state a peer needs, in messages of at most
/// [`COUNTER_ENTRIES_PER_MESSAGE_MAX`] entries. A peer holding every record of an actor that
/// this node holds derives that actor's counters itself, so only `lagging` actors are sent
/// (and actors known here only by counters, which are relayed): a caught-up cluster exchanges
/// almost nothing, and a long poll's counters never overflow a message.
fn counters_for_lagging(
    state: CounterState,
    lagging: impl Fn(&tally_core::ActorId) -> bool,
) -> Vec<CounterState> {
    let mut messages = Vec::new();
    let mut current = CounterState {
        poll: state.poll.clone(),
        actors: Vec::new(),
    };
    let mut entries = 0usize;
    for mut actor in state.actors.into_iter().filter(|a| lagging(&a.actor)) {
        while !actor.entries.is_empty() {
            let room = COUNTER_ENTRIES_PER_MESSAGE_MAX - entries;
            let take = room.min(actor.entries.len());
            let rest = actor.entries.split_off(take);
            let taken = std::mem::replace(&mut actor.entries, rest);
            entries += taken.len();
            current.actors.push(ActorCounters {
                actor: actor.actor.clone(),
                entries: taken,
            });
            if entries == COUNTER_ENTRIES_PER_MESSAGE_MAX {
                messages.push(std::mem::replace(
                    &mut current,
                    CounterState {
                        poll: state.poll.clone(),
                        actors: Vec::new(),
                    },
                ));
                entries = 0;
            }
        }
    }
    if !current.actors.is_empty() {
        messages.push(current);
    }
    messages
}

fn ack(vote: LocalVote) -> VoteAck {
    match vote {
        LocalVote::Counted { seq, second } => VoteAck::Counted { seq, second },
        LocalVote::Duplicate { .. } => VoteAck::Duplicate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::wire::{ActorCounters, CounterEntry};
    use tally_core::{ActorId, NodeId};

    fn actor(node: &str) -> ActorId {
        ActorId {
            node: NodeId::new(node).unwrap(),
            incarnation: 1,
        }
    }

    #[test]
    fn counters_for_peers_skip_caught_up_actors_and_split_at_the_message_limit() {
        // Goal: a long poll's counters never exceed one message's limit, and actors the peer
        // already holds every record of are not sent at all.
        let entries = |count: u32| -> Vec<CounterEntry> {
            (0..count)
                .map(|second| CounterEntry {
                    second,
                    option: 0,
                    accepted: 1,
                    retracted: 0,
                })
                .collect()
        };
        let state = CounterState {
            poll: PollId::new("p").unwrap(),
            actors: vec![
                ActorCounters {
                    actor: actor("lagging"),
                    entries: entries(150_000),
                },
                ActorCounters {
                    actor: actor("caught-up"),
                    entries: entries(10),
                },
            ],
        };
        let messages = counters_for_lagging(state, |a| a.node.as_str() == "lagging");
        assert_eq!(messages.len(), 3);
        let sizes: Vec<usize> = messages
            .iter()
            .map(|m| m.actors.iter().map(|a| a.entries.len()).sum())
            .collect();
        assert_eq!(sizes, vec![65_536, 65_536, 150_000 - 2 * 65_536]);
        assert!(
            messages
                .iter()
                .flat_map(|m| &m.actors)
                .all(|a| a.actor.node.as_str() == "lagging")
        );
        for message in &messages {
            let frame =
                tally_core::wire::encode(&tally_core::wire::PeerMessage::Counters(message.clone()));
            assert!(
                tally_core::wire::decode(&frame).is_ok(),
                "each message passes the receiver's limits"
            );
        }
    }
}
