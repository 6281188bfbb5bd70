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

use tally_core::{
    AcceptError, AnswerApplied, LocalVote, NodeId, OptionIndex, PollError, PollId, PollSpec,
    PollWindow, PullAnswer, PullRequest, RecordBatch, Replica, ReplicaError, ReservedIndex, Second,
    Seq, VoteId,
};
use tokio::sync::{mpsc, oneshot, watch};

mod failure;

pub use failure::LOG_FAILED_HAND_OVER_MAX;

use crate::config::within_reservation_budget;
use crate::disputes::Disputes;
use crate::health::{Health, Hold};
use crate::metrics::Metrics;
use crate::peer::status::PeerBoard;
use crate::results::ResultsSnapshot;
use crate::wal::{InlineWriter, WAL_JOBS_IN_FLIGHT_MAX, WalDone, WalEntry, WalJob};
use tally_core::Clock;

mod hand_off;
mod incarnation;
mod log_answers;
mod replication;

use hand_off::hand_off;
pub use log_answers::JobAnswers;
pub(crate) use replication::split_records;
pub use replication::{
    AckCommand, AckSettings, OwnRecords, PEER_WAITING_VOTES_MAX, PUSH_FEED_RECORDS_MAX,
    PUSH_PROBE_INTERVAL, PUSH_PROBES_PER_ASK_MAX, PUSH_RECORDS_PER_ASK_MAX, PushCursor, PushFeed,
};

/// An engine wake-up at least this long (every other vote waits meanwhile) is logged, with
/// the engine thread's CPU time over it: work (CPU time near the wall time) or waiting (for
/// a core, or in the kernel for a page), which `tally_engine_busy_seconds` cannot tell apart.
pub const ENGINE_WAKE_SLOW: Duration = Duration::from_millis(25);

/// Commands drained per wake-up before the engine looks at the log again.
pub const COMMANDS_PER_WAKE_MAX: usize = 4_096;

/// Capacity of the replicated acks' lane ([`EngineIo::acks`]): the push sessions' commands
/// (records pushed by an ack peer, this node's records to push, confirmations). A session
/// whose command finds the lane full waits, and so, by QUIC's flow control, does its peer.
pub const ACK_LANE_QUEUE_MAX: usize = 1_024;

/// Growth steps of the dedupe indexes the engine runs per results tick, less those their
/// inserts ran since the last tick: each moves at most `INDEX_GROWTH_STEP_MOVES_MAX` (1,024)
/// vote IDs or touches 32 KiB of the next table, so an index in the middle of a burst (whose
/// inserts run more steps than this) gets no extra work, and one that stops taking IDs
/// mid-growth still finishes and frees its old table. [`INDEX_GROWTH_TICK_BUDGET`] bounds
/// the time: an idle index moves ~200,000 IDs a second at the default 100 ms tick (up to 2 ms
/// of work a tick), and finishes its largest growth at 60M IDs within ~5 minutes.
pub const INDEX_GROWTH_STEPS_PER_TICK: usize = 128;

/// Longest the growth steps of a results tick hold the engine: before each step it stops if
/// this much time has passed, or if a command or a log completion waits (DESIGN.md §6: no
/// step of the engine holds votes for more than ~10 ms). One step may overrun it by its own
/// cost: ~25–100 µs, or a 2 MiB huge page's first touch (~0.2 ms on a quiet host, up to
/// ~6 ms in a slow VM). Growth runs on the results tick, not a timer of its own, so a
/// simulated run's schedule is the same whether its indexes grow or are reserved.
pub const INDEX_GROWTH_TICK_BUDGET: Duration = Duration::from_millis(2);

/// What the engine answers for one accepted vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteAck {
    /// New: durable as record `seq` of this node's incarnation `incarnation`, stamped
    /// `second`.
    Counted {
        /// The record's seq.
        seq: Seq,
        /// Its poll-relative second.
        second: Second,
        /// The incarnation whose record it is (a node may move to a new one while a vote
        /// waits for the log: the answer names the actor that holds the record).
        incarnation: u64,
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
    /// `ack_mode = "replicated"`: the vote is durable on this node, but no ack peer confirmed
    /// it within `ack_timeout_ms`, so it is not acknowledged. It may still be counted (this
    /// node's log holds it): a retry with the same vote ID is safe and counted once.
    #[error(
        "no ack peer confirmed this vote in time; it is not acknowledged (it may still be \
         counted: retry with the same vote ID, here or at another node, and it counts once)"
    )]
    NotReplicated,
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
    /// What this node asks a peer for in a pull (its definitions and vectors of every poll).
    PullRequest {
        /// Answered at once.
        reply: Reply<PullRequest>,
    },
    /// A peer asks for what it lacks.
    PeerPull {
        /// The peer's node ID (a node whose log failed waits for each peer's pull).
        peer: String,
        /// The peer's request.
        request: PullRequest,
        /// Most records to answer with.
        records_max: usize,
        /// Answered at once.
        reply: Reply<PullAnswer>,
    },
    /// Merge what a peer answered: definitions, declarations, records (logged like local
    /// votes) and counters, of the polls both define alike (`tally_core::sync`).
    PeerApply {
        /// The answering peer.
        peer: NodeId,
        /// Its answer, read whole.
        answer: PullAnswer,
        /// Answered at once (the records are durable at their origin already).
        reply: Reply<PeerApplied>,
    },
    /// The option each vote ID's winning record names, for an audit (`None`: not held).
    Lookup {
        /// The poll.
        poll: PollId,
        /// The vote IDs.
        vote_ids: Vec<VoteId>,
        /// Answered at once.
        reply: Reply<Vec<Option<OptionIndex>>>,
    },
    /// A peer's hello named its current actor: its node's older incarnations are superseded.
    PeerIncarnation {
        /// The peer's actor, from a hello its certificate vouches for.
        actor: tally_core::ActorId,
    },
    /// Replicated acks: pushes and confirmations (`engine::replication`).
    Ack(AckCommand),
}

/// What applying a peer's answer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerApplied {
    /// Records newly held.
    pub records_added: usize,
    /// Whether any counter rose.
    pub counters_changed: bool,
    /// Polls both nodes define alike: how far behind this node is counts only these.
    pub shared: std::collections::BTreeSet<PollId>,
    /// Parts refused, each with its cause and reason (nothing of a refused part was merged).
    pub refused: Vec<tally_core::AnswerRefusal>,
    /// Records not taken because the data directory is low on space (the disk hold): the
    /// peer keeps them, and this node fetches them once space is back.
    pub records_deferred: usize,
}

/// A reply held until the log job `token` is durable (votes keep their poll: a move to a new
/// incarnation renumbers their records, poll by poll).
enum Pending {
    Vote(Reply<VoteAck>, VoteAck, PollId),
    Batch(Reply<Vec<BatchVoteAck>>, Vec<BatchVoteAck>, PollId),
    Poll(Reply<bool>, bool),
    /// A peer's push, confirmed once durable ([`replication`]).
    Pushed(Reply<tally_core::wire::PushAck>, tally_core::wire::PushAck),
}

impl Pending {
    /// The poll of a vote's or batch's reply.
    fn poll(&self) -> Option<&PollId> {
        match self {
            Pending::Vote(_, _, poll) | Pending::Batch(_, _, poll) => Some(poll),
            Pending::Poll(..) | Pending::Pushed(..) => None,
        }
    }
}

struct Waiter {
    token: u64,
    /// Under replicated acks, the records of this node's actors in the reply's poll an ack
    /// peer must confirm before it is answered (none: nothing to wait for).
    need: replication::Need,
    pending: Pending,
}

/// The engine's ends of its channels.
pub struct EngineIo {
    /// Commands from the HTTP layer and the peer sessions.
    pub commands: mpsc::Receiver<Command>,
    /// The replicated acks' lane (`Command::Ack` from the push sessions), served before
    /// [`EngineIo::commands`] and between any two of them: a push, a confirmation or an ask
    /// for records to push never waits behind the clients' queued batches, which would add
    /// their processing time to every replicated ack (up to [`ACK_LANE_QUEUE_MAX`] queued).
    pub acks: mpsc::Receiver<Command>,
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
    /// Set to true when the engine has stopped, however it stopped: after a log failure the
    /// node must stop serving too.
    pub stopped: watch::Sender<bool>,
    /// Where the node's current actor is published (peer hellos name it); the engine
    /// changes it when it moves to a new incarnation.
    pub actor: watch::Sender<tally_core::ActorId>,
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
    /// Replies waiting for the next job, which its writer answers ([`log_answers`]).
    log_answers: Vec<Pending>,
    /// The replies each job in flight carries (token, replies), for the engine to answer
    /// should the writer not, or to take back.
    in_flight_answers: VecDeque<(u64, JobAnswers)>,
    next_token: u64,
    durable_token: u64,
    /// A poll was created or its window changed since the last published snapshot.
    polls_changed: bool,
    /// Peer statuses, read when results are captured ("how stale").
    peers: PeerBoard,
    /// The node's holds: votes are refused under some, and a failed log sets one.
    health: Arc<Health>,
    /// Polls whose definition some node holds otherwise, as last logged and exported.
    disputes: Disputes,
    /// A planted bug (simulation tests only): answer before the log is durable.
    ack_before_fsync: bool,
    /// The clock watch's step guard, read with each vote's clock reading (nodes with peers).
    clock_watch: Option<Arc<crate::clock_watch::ClockWatch>>,
    /// A planted bug (simulation tests only): answer a failed log job's votes `counted`.
    ack_after_failed_write: bool,
    /// Part of a planted bug (simulation tests only): records of this node's own actor from a
    /// peer are refused, as before issue 29, instead of starting a new incarnation.
    keep_actor_behind_peers: bool,
    /// The peers a node whose log failed waits for (up to [`LOG_FAILED_HAND_OVER_MAX`]) to
    /// fetch its acknowledged records before it stops.
    hand_over_peers: Vec<String>,
    /// Draws the incarnation of a move to a new actor (seeded by the caller).
    incarnation_rng: rand::rngs::StdRng,
    /// Set by a move to a new incarnation until the actor is published.
    actor_changed: bool,
    /// Replicated acks, when `ack_mode = "replicated"`.
    replication: Option<replication::Replication>,
    /// Set when the engine woke a task of replicated acks' path that waits on this worker (a
    /// push session handed records through the feed, the replies a confirmation answered, or
    /// the takers of its answers to pushes); taken at the next hand-off point, where the engine
    /// yields to them ([`hand_off`]).
    handed_off: bool,
    /// Threads that allocate and fault in the memory the replica will need next (a growing
    /// index's next table, spare record chunks), so the engine does not pay those page
    /// faults between votes (`tally_core::MemoryHelper`); `None` in the simulation.
    memory_helper: Option<tally_core::MemoryHelper>,
    /// A log the engine writes itself (a memory-only node's, [`crate::wal::WalExecutor::Inline`]):
    /// jobs go to it instead of [`EngineIo::wal_jobs`], and its reports come back on
    /// [`EngineIo::wal_done`] as a writer's do.
    inline_log: Option<InlineWriter>,
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
        incarnation_seed: u64,
    ) -> Self {
        use rand::SeedableRng;
        Self {
            replica,
            clock,
            metrics,
            results_tick,
            peers,
            health,
            disputes: Disputes::default(),
            waiting: VecDeque::new(),
            unlogged_entries: Vec::new(),
            in_flight_jobs: VecDeque::new(),
            log_answers: Vec::new(),
            in_flight_answers: VecDeque::new(),
            next_token: 1,
            durable_token: 0,
            polls_changed: false,
            ack_before_fsync: false,
            clock_watch: None,
            ack_after_failed_write: false,
            keep_actor_behind_peers: false,
            hand_over_peers: Vec::new(),
            incarnation_rng: rand::rngs::StdRng::seed_from_u64(incarnation_seed),
            actor_changed: false,
            replication: None,
            handed_off: false,
            memory_helper: None,
            inline_log: None,
        }
    }

    /// Writes the log itself, job by job, in the wake-up that makes each job, instead of
    /// handing the jobs to a writer task or thread ([`crate::wal::WalExecutor::Inline`]: only
    /// for a storage that never blocks, a memory-only node's). Its reports still come back on
    /// [`EngineIo::wal_done`].
    pub fn write_log_inline(&mut self, writer: InlineWriter) {
        self.inline_log = Some(writer);
    }

    /// Has the memory the replica will need next prepared on helper threads, off the engine
    /// (`tally_core::MemoryHelper`). Without it (the simulation, or if no thread can be
    /// started) the engine faults that memory in itself, as votes arrive.
    pub fn prepare_memory_off_engine(&mut self) {
        match tally_core::MemoryHelper::spawn() {
            Ok(helper) => self.memory_helper = Some(helper),
            Err(error) => tracing::warn!(
                %error,
                "could not start the memory helper threads: the engine faults in new memory itself"
            ),
        }
    }

    /// Reads `watch`'s step guard with every vote's clock reading: a vote that finds the wall
    /// clock stepped since the watch last looked sets [`Hold::ClockSkew`] and is refused, so
    /// no vote is stamped between a step and the watch's verdict on it.
    pub fn watch_clock_steps(&mut self, watch: Arc<crate::clock_watch::ClockWatch>) {
        self.clock_watch = Some(watch);
    }

    /// The peers to wait for, should the log fail, before the engine stops: each must have
    /// pulled everything this node acknowledged (see [`failure`]).
    pub fn hand_over_to(&mut self, peers: Vec<String>) {
        self.hand_over_peers = peers;
    }

    /// **A planted bug, for the simulation's checker tests only**: when the log reports a
    /// failed write or fsync, answers the failed job's votes `counted` anyway (as if the
    /// failure did not matter), so the node acknowledges votes its log does not hold. Set
    /// through [`crate::planted::PlantedBug::AckAfterFailedWrite`].
    #[doc(hidden)]
    pub fn plant_bug_ack_after_failed_write(&mut self) {
        self.ack_after_failed_write = true;
    }

    /// **Part of a planted bug, for the simulation's checker tests only**
    /// ([`crate::planted::PlantedBug::ReuseActorAfterDiskLoss`]): a node that meets records of
    /// its own actor at a peer refuses them and goes on issuing that actor's seqs, as nodes
    /// did before issue 29, so the reused actor is not rescued and the checker must see it.
    #[doc(hidden)]
    pub fn plant_bug_keep_actor_behind_peers(&mut self) {
        self.keep_actor_behind_peers = true;
    }

    /// **A planted bug, for the simulation's checker tests only**: answers votes as soon as
    /// they are accepted, before the log holding them is fsynced, so a crash loses votes that
    /// were acknowledged. Set through [`crate::planted::PlantedBug::AckBeforeFsync`].
    #[doc(hidden)]
    pub fn plant_bug_ack_before_fsync(&mut self) {
        self.ack_before_fsync = true;
    }

    /// Starts [`Engine::run`] as a task on the current runtime, in production as in the
    /// simulation; only the log writer's fsyncs run on a thread of their own
    /// ([`crate::wal::group_commit`]). On the HTTP runtime, a vote's hand-offs to the engine and back
    /// wake tasks on the same worker instead of a thread: measured against the engine on its
    /// own thread, ~10% more single votes per second and no fewer batched ones (BENCHMARKS.md,
    /// "Single votes: the HTTP layers and the engine on the HTTP runtime"). The handle resolves to the engine's result.
    pub fn spawn(self, io: EngineIo) -> tokio::task::JoinHandle<Result<(), EngineError>> {
        let stopped = io.stopped.clone();
        tokio::spawn(async move {
            let result = self.run(io).await;
            stopped.send_replace(true);
            result
        })
    }

    /// Runs until the command queue closes (graceful stop) or the log fails (error, after
    /// handing what was durable to readers and peers: [`failure`]).
    pub async fn run(mut self, mut io: EngineIo) -> Result<(), EngineError> {
        // Every poll's dispute series exists from the start (at 0), for alert rules.
        self.disputes
            .observe(&self.replica, &self.metrics, &self.health);
        let mut ticker = tokio::time::interval(self.results_tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_closed = false;
        let mut acks_closed = false;
        let mut log_failure: Option<String> = None;
        // When the engine last woke: what it does from then on holds every other vote.
        let mut woke: tokio::time::Instant;
        // This thread's CPU time then, and why it woke: for the log of a slow wake-up.
        let (mut woke_cpu, mut woke_for): (Option<Duration>, &str);
        loop {
            tokio::select! {
                biased;
                () = close_requested(&mut io.close_commands), if !commands_closed => {
                    woke = tokio::time::Instant::now();
                    (woke_cpu, woke_for) = (thread_cpu_time(), "stop");
                    commands_closed = true;
                    io.commands.close();
                    io.acks.close();
                }
                done = io.wal_done.recv() => {
                    woke = tokio::time::Instant::now();
                    (woke_cpu, woke_for) = (thread_cpu_time(), "log completion");
                    log_failure = self.on_log_report(done).await;
                }
                ack = io.acks.recv(), if !acks_closed => {
                    woke = tokio::time::Instant::now();
                    (woke_cpu, woke_for) = (thread_cpu_time(), "replicated acks");
                    match ack {
                        Some(ack) => {
                            self.handle(ack);
                            self.handle_queued_acks(&mut io.acks);
                        }
                        None => acks_closed = true,
                    }
                }
                command = io.commands.recv() => {
                    woke = tokio::time::Instant::now();
                    (woke_cpu, woke_for) = (thread_cpu_time(), "commands");
                    let Some(command) = command else { break };
                    self.handle(command);
                    for _ in 1..COMMANDS_PER_WAKE_MAX {
                        self.handle_queued_acks(&mut io.acks);
                        if std::mem::take(&mut self.handed_off) {
                            // Replies a confirmation answered run before the next command.
                            hand_off().await;
                        }
                        // A log report that came meanwhile is taken between two commands, and
                        // the next job goes out at once: a long wake-up (a burst of batches, a
                        // growing index) neither holds answers the log has made durable nor
                        // leaves the log idle until it ends. (An inline log's report is
                        // taken at the next wake-up instead: it is ready at once, and a job
                        // per command would give up the burst's group.)
                        let done = match self.inline_log {
                            Some(_) => None,
                            None => io.wal_done.try_recv().ok(),
                        };
                        if let Some(done) = done {
                            log_failure = self.on_log_report(Some(done)).await;
                            if log_failure.is_some() {
                                break;
                            }
                            if self.in_flight_jobs.len() < WAL_JOBS_IN_FLIGHT_MAX
                                && self.submit_now(&io.wal_jobs).is_err()
                            {
                                log_failure = Some("the log writer stopped".to_owned());
                                break;
                            }
                        }
                        let Ok(command) = io.commands.try_recv() else { break };
                        self.handle(command);
                    }
                    // A new or reopened poll is readable (and votable: the HTTP layer resolves
                    // polls in the snapshot) before its change is answered, not a tick later.
                    if std::mem::take(&mut self.polls_changed) {
                        self.publish(&io.results);
                    }
                }
                () = sleep_until(self.peer_deadline()) => {
                    woke = tokio::time::Instant::now();
                    (woke_cpu, woke_for) = (thread_cpu_time(), "peer deadline");
                    self.expire_peer_waiters();
                }
                _ = ticker.tick() => {
                    woke = tokio::time::Instant::now();
                    (woke_cpu, woke_for) = (thread_cpu_time(), "tick");
                    let (commands, wal_done) = (&io.commands, &io.wal_done);
                    self.replica.advance_index_growth_while(INDEX_GROWTH_STEPS_PER_TICK, || {
                        woke.elapsed() < INDEX_GROWTH_TICK_BUDGET
                            && commands.is_empty()
                            && wal_done.is_empty()
                    });
                    self.observe_peer_lag();
                    self.publish(&io.results);
                }
            }
            if std::mem::take(&mut self.actor_changed) {
                io.actor.send_replace(self.replica.actor().clone());
            }
            if let Some(helper) = &mut self.memory_helper {
                for table in helper.tend(&mut self.replica) {
                    free_off_engine(table);
                }
            }
            for table in self.replica.take_retired_index_tables() {
                match self.memory_helper.as_mut() {
                    Some(helper) => helper.free(table).map_or((), free_off_engine),
                    None => free_off_engine(table),
                }
            }
            if log_failure.is_none()
                && self.in_flight_jobs.len() < WAL_JOBS_IN_FLIGHT_MAX
                && self.submit(&io.wal_jobs).await.is_err()
            {
                log_failure = Some("the log writer stopped".to_owned());
            }
            let busy = woke.elapsed();
            self.metrics.engine_busy_seconds.observe(busy.as_secs_f64());
            if busy >= ENGINE_WAKE_SLOW {
                log_slow_wake(busy, woke_cpu, woke_for);
            }
            if let Some(why) = log_failure.take() {
                return self.after_log_failure(&mut io, &why).await;
            }
            self.metrics
                .set_engine_queue(io.commands.len(), self.waiting_replies());
            if std::mem::take(&mut self.handed_off) {
                // The next wake-up may follow at once, without the engine returning to the
                // runtime: the tasks it woke go first.
                hand_off().await;
            }
        }
        // Graceful stop: flush what was accepted, answer it, publish the last results.
        while !self.in_flight_jobs.is_empty() || self.has_unlogged() {
            if self.in_flight_jobs.len() < WAL_JOBS_IN_FLIGHT_MAX
                && self.submit(&io.wal_jobs).await.is_err()
            {
                return self.fail(&io.results, "the log writer stopped during shutdown");
            }
            if self.in_flight_jobs.is_empty() {
                // Nothing was left to log (the replies waiting were answered at once).
                break;
            }
            match io.wal_done.recv().await {
                Some(done) if done.result.is_ok() => self.on_durable(done.up_to_token),
                _ => return self.fail(&io.results, "the log failed during shutdown"),
            }
        }
        if self.health.has(Hold::DiskLow) {
            // A snapshot is as large as the whole log: on a nearly full disk it would only
            // fill it (and be removed). The next start replays the log instead.
            tracing::warn!("the data directory is low on space: the log is not compacted");
        } else {
            self.compact_log(&mut io).await?;
        }
        self.publish(&io.results);
        Ok(())
    }

    /// Takes the log writer's report (`None`: it stopped): answers what it made durable, or
    /// returns why the log failed. Under replicated acks, the push sessions the report woke
    /// (the job's own records handed to them through the feed) run before the engine indexes
    /// those records ([`hand_off`]).
    async fn on_log_report(&mut self, done: Option<WalDone>) -> Option<String> {
        match done {
            None => Some("the log writer stopped".to_owned()),
            Some(done) => match done.result {
                Err(error) => Some(error.to_string()),
                Ok(()) => {
                    self.metrics
                        .observe_fsync(done.fsync, done.entries, done.bytes);
                    self.hand_over_durable(done.up_to_token);
                    if std::mem::take(&mut self.handed_off) {
                        hand_off().await;
                    }
                    self.finish_durable(done.up_to_token);
                    None
                }
            },
        }
    }

    /// At a clean stop, rewrites the log as one snapshot of the whole state in maximal
    /// batches, so the next start replays few, large entries. (While serving, the log of a
    /// grow-only record set already is the state; replaying 10M votes takes ~2.6 s, see
    /// BENCHMARKS.md.) The writer answers it after everything queued before it.
    async fn compact_log(&mut self, io: &mut EngineIo) -> Result<(), EngineError> {
        let entries = crate::wal::startup::state_entries(&self.replica);
        let token = self.next_token;
        self.next_token += 1;
        if self
            .send_job(&io.wal_jobs, WalJob::snapshot(token, entries))
            .await
            .is_err()
        {
            return self.fail(&io.results, "the log writer stopped before compaction");
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
            None => self.fail(&io.results, "the log writer stopped during compaction"),
        }
    }

    /// Publishes a snapshot of the replica now, sharing the previous one's unchanged polls.
    fn publish(&self, results: &watch::Sender<Arc<ResultsSnapshot>>) {
        let previous = results.borrow().clone();
        let peers = self.peers.lock().map(|b| b.clone()).unwrap_or_default();
        let now = self.clock.now();
        let next = ResultsSnapshot::capture_since(&self.replica, now, &peers, &previous);
        next.log_index_growth(&previous);
        next.mirror_into(&self.metrics, &peers, now);
        results.send_replace(Arc::new(next));
    }

    /// Handles every command waiting in the acks' lane (at most its capacity).
    fn handle_queued_acks(&mut self, acks: &mut mpsc::Receiver<Command>) {
        for _ in 0..ACK_LANE_QUEUE_MAX {
            let Ok(ack) = acks.try_recv() else { break };
            self.handle(ack);
        }
    }

    fn has_unlogged(&self) -> bool {
        !self.unlogged_entries.is_empty()
            || self.replica.in_flight_records() > 0
            || !self.log_answers.is_empty()
    }

    /// A read-only view for start-up checks and tests.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    fn handle(&mut self, command: Command) {
        let now = self.clock.now();
        let is_vote = matches!(command, Command::Vote { .. } | Command::Batch { .. });
        if is_vote && self.clock_watch.as_ref().is_some_and(|w| w.stepped_at(now)) {
            self.health.set(Hold::ClockSkew, true);
        }
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
                Ok(vote) => {
                    let need = self.own_need(&poll, vote, vote_id);
                    if self.must_wait(&poll, vote, &need) {
                        let ack = ack(vote, self.replica.actor().incarnation);
                        self.wait(Pending::Vote(reply, ack, poll), need);
                    } else {
                        let _ = reply.send(Ok(VoteAck::Duplicate));
                    }
                }
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            },
            Command::Batch { poll, votes, reply } => self.handle_batch(poll, votes, reply),
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
            Command::PullRequest { reply } => {
                let _ = reply.send(Ok(self.replica.pull_request()));
            }
            Command::PeerPull {
                request,
                records_max,
                reply,
                ..
            } => {
                let _ = reply.send(Ok(self.replica.answer_pull(&request, records_max)));
            }
            Command::PeerApply {
                peer,
                answer,
                reply,
            } => {
                let applied = self.apply_from_peer(answer);
                tracing::trace!(%peer, records = applied.records_added, "peer answer applied");
                let _ = reply.send(Ok(applied));
            }
            Command::Lookup {
                poll,
                vote_ids,
                reply,
            } => drop(reply.send(self.lookup(poll, &vote_ids))),
            Command::Ack(command) => self.handle_ack_command(command),
        }
    }

    /// The record of this node an ack peer must confirm before `vote` (of `vote_id`) is
    /// answered: its own record, the earlier record in flight it duplicates, or (a duplicate
    /// of a durable record, under replicated acks) the winning record, if this node's.
    fn own_need(&self, poll: &PollId, vote: LocalVote, vote_id: VoteId) -> replication::Need {
        match vote {
            LocalVote::Counted { seq, .. }
            | LocalVote::Duplicate {
                wait_for: Some(seq),
            } => replication::Need::on(self.replica.actor().incarnation, seq),
            LocalVote::Duplicate { wait_for: None } => self.duplicate_need(poll, vote_id),
        }
    }

    /// Whether `vote`'s answer waits (for the log, or for an ack peer to confirm `need`).
    fn must_wait(&self, poll: &PollId, vote: LocalVote, need: &replication::Need) -> bool {
        !matches!(vote, LocalVote::Duplicate { wait_for: None }) || self.needs_peer(poll, need)
    }

    /// The option each vote ID's winning record names in `poll` (`None`: not held).
    fn lookup(
        &self,
        poll: PollId,
        vote_ids: &[VoteId],
    ) -> Result<Vec<Option<OptionIndex>>, EngineError> {
        match self.replica.state(&poll) {
            Some(state) => Ok(vote_ids.iter().map(|&v| state.winner_option(v)).collect()),
            None => Err(EngineError::Poll(PollError::UnknownPoll(poll))),
        }
    }

    /// Under a hold that refuses votes (low disk, a skewed clock), answers a vote or batch
    /// with [`EngineError::Held`] at once (nothing counted; the client retries elsewhere) and
    /// returns `None`; any other command is handed back.
    fn refuse_if_held(&self, command: Command) -> Option<Command> {
        let is_vote = matches!(command, Command::Vote { .. } | Command::Batch { .. });
        if is_vote && self.peer_queue_full() {
            let overloaded = EngineError::Accept(AcceptError::Overloaded);
            match command {
                Command::Vote { reply, .. } => drop(reply.send(Err(overloaded))),
                Command::Batch { reply, .. } => drop(reply.send(Err(overloaded))),
                other => return Some(other),
            }
            return None;
        }
        let hold = if is_vote {
            self.health.vote_refusal()
        } else {
            None
        };
        let Some(hold) = hold else {
            return Some(command);
        };
        if let Some(cause) = self
            .ack_peers_unavailable()
            .filter(|_| hold == Hold::AckPeerDown)
        {
            let votes = match &command {
                Command::Batch { votes, .. } => votes.len() as u64,
                _ => 1,
            };
            self.metrics.acks.count_misses("refused", cause, votes);
        }
        match command {
            Command::Vote { reply, .. } => drop(reply.send(Err(EngineError::Held(hold)))),
            Command::Batch { reply, .. } => drop(reply.send(Err(EngineError::Held(hold)))),
            other => return Some(other),
        }
        None
    }

    /// Merges a peer's answer (`Replica::apply_answer`, step by step), queues what it changed
    /// for the log, and notes disputes that began or ended. Below the disk reserve the log
    /// takes nothing new but what was accepted: records from peers wait there (their counters
    /// still merge, so totals stay current).
    fn apply_from_peer(&mut self, mut answer: PullAnswer) -> PeerApplied {
        let mut applied = self.replica.apply_answer_definitions(&mut answer);
        let disk_low = self.health.has(Hold::DiskLow);
        let mut records_deferred = 0;
        for batch in answer.batches {
            if !applied.shared.contains(batch.poll()) {
                continue;
            }
            if disk_low {
                records_deferred += batch.len();
                continue;
            }
            let result = self.apply_peer_records(&batch);
            applied.note_records(batch, result);
        }
        self.replica
            .apply_answer_counters(&answer.counters, &mut applied);
        let AnswerApplied {
            records_added,
            counters_changed,
            polls_changed,
            batches_to_log,
            shared,
            declarations_changed,
            refused,
            reservations,
        } = applied;
        for (poll, vote_ids) in reservations {
            self.take_peer_reservation(&poll, vote_ids);
        }
        for poll in polls_changed {
            self.polls_changed = true;
            if let Some(spec) = self.replica.poll_spec(&poll) {
                self.unlogged_entries.push(WalEntry::Poll(spec.clone()));
            }
        }
        self.unlogged_entries
            .extend(batches_to_log.into_iter().map(WalEntry::Records));
        if declarations_changed {
            self.observe_disputes();
        }
        PeerApplied {
            records_added,
            counters_changed,
            shared,
            refused,
            records_deferred,
        }
    }

    /// Applies a peer's batch; if it holds records of this node's own actor beyond what its
    /// log holds, this node must never issue those seqs again: it moves to a new incarnation
    /// (see [`incarnation`]), which takes them as another actor's.
    fn apply_peer_records(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<tally_core::Applied, ReplicaError> {
        let result = self.replica.apply_records(batch);
        match result {
            Err(ReplicaError::ForeignOwnRecords { seq, .. }) if !self.keep_actor_behind_peers => {
                self.begin_incarnation_behind_peers(batch, seq);
                self.replica.apply_records(batch)
            }
            result => result,
        }
    }

    /// Logs disputes that began or ended, and mirrors them into metrics and the node's hold.
    fn observe_disputes(&mut self) {
        self.polls_changed = true;
        self.disputes
            .observe(&self.replica, &self.metrics, &self.health);
    }

    fn handle_batch(
        &mut self,
        poll: PollId,
        votes: Vec<(OptionIndex, VoteId)>,
        reply: Reply<Vec<BatchVoteAck>>,
    ) {
        let now = self.clock.now();
        let mut answers = Vec::with_capacity(votes.len());
        if let Err(error) = self
            .replica
            .accept_local_batch(&poll, &votes, now, &mut answers)
        {
            // Poll-level refusals (unknown, not open, closed): nothing was counted.
            let _ = reply.send(Err(error.into()));
            return;
        }
        let mut acks = Vec::with_capacity(votes.len());
        let mut must_wait = false;
        let mut need = replication::Need::default();
        let incarnation = self.replica.actor().incarnation;
        for (answer, &(_, vote_id)) in answers.into_iter().zip(&votes) {
            match answer {
                Ok(vote) => {
                    let vote_need = self.own_need(&poll, vote, vote_id);
                    if self.must_wait(&poll, vote, &vote_need) {
                        must_wait = true;
                        need.merge(&vote_need);
                    }
                    acks.push(BatchVoteAck::Ack(ack(vote, incarnation)));
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
            self.wait(Pending::Batch(reply, acks, poll), need);
        } else {
            let _ = reply.send(Ok(acks));
        }
    }

    /// Sizes `poll`'s dedupe index for `vote_ids` IDs if it is smaller, and logs the
    /// reservation (after the poll's definition, which the caller has queued already).
    fn reserve(&mut self, poll: &PollId, vote_ids: u64, prepared: Option<ReservedIndex>) {
        let grew =
            crate::reservation::reserve_vote_ids(&mut self.replica, poll, vote_ids, prepared);
        if !grew.unwrap_or(false) {
            return;
        }
        self.unlogged_entries.push(WalEntry::Reserve {
            poll: poll.clone(),
            vote_ids,
        });
    }

    /// A peer's reservation of `poll`, larger than this node's own (issue 25: one admin call
    /// prepares the whole cluster): taken gradually, by the index's growth steps on ticks and
    /// inserts rather than all at once on the engine, and logged so a restart reserves it
    /// again (replay reserves at once, before any vote waits). One that would size this
    /// node's indexes past [`crate::config::RESERVED_VOTE_IDS_TOTAL_MAX`] is noted in memory (so it is not
    /// taken up again every round, and is still relayed) but neither taken nor logged: the
    /// index grows as it fills.
    fn take_peer_reservation(&mut self, poll: &PollId, vote_ids: u64) {
        let others: u64 = self
            .replica
            .poll_specs()
            .filter(|spec| spec.id() != poll)
            .filter_map(|spec| self.replica.state(spec.id()))
            .map(|state| state.vote_id_capacity() as u64)
            .sum();
        let wanted = usize::try_from(vote_ids).unwrap_or(usize::MAX);
        let before = self.replica.state(poll).map(|s| s.vote_id_capacity());
        if let Err(why) = within_reservation_budget(others, vote_ids) {
            tracing::warn!(%poll, vote_ids, "a peer's index reservation is not taken: {why}");
            let _ = self.replica.note_reservation(poll, wanted);
            return;
        }
        if self
            .replica
            .reserve_vote_ids_gradually(poll, wanted)
            .is_err()
        {
            return;
        }
        tracing::info!(
            %poll,
            vote_ids,
            capacity_before = before,
            "dedupe index reservation taken from a peer"
        );
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
        self.wait(Pending::Poll(reply, changed), replication::Need::default());
    }

    /// Holds a reply until the next log job (the one that will carry its record) is durable,
    /// and then, under replicated acks, until an ack peer confirms the records `need` names.
    fn wait(&mut self, pending: Pending, need: replication::Need) {
        if self.ack_before_fsync {
            answer(pending);
            return;
        }
        if self.writer_answers() && matches!(pending, Pending::Vote(..) | Pending::Batch(..)) {
            self.log_answers.push(pending);
            return;
        }
        self.waiting.push_back(Waiter {
            token: self.next_token,
            need,
            pending,
        });
    }

    /// Replies held until their votes are durable: the engine's, those for the next job, and
    /// those the writer has not answered yet (one lock per job in flight).
    fn waiting_replies(&self) -> usize {
        let in_flight: usize = self
            .in_flight_answers
            .iter()
            .map(|(_, answers)| answers.waiting())
            .sum();
        self.waiting.len() + self.log_answers.len() + in_flight
    }

    /// Whether the log writer answers the votes and batches a job carries, right after its
    /// fsync ([`log_answers`]): under local acks. Not under replicated acks (a reply waits
    /// for an ack peer too), nor under the planted bug that answers a failed job's votes.
    fn writer_answers(&self) -> bool {
        self.replication.is_none() && !self.ack_after_failed_write
    }

    /// Sends everything accepted since the last job to the log as one job. `Err` when the
    /// writer has stopped (nothing was sent).
    async fn submit(&mut self, jobs: &mpsc::Sender<WalJob>) -> Result<(), EngineError> {
        let Some(job) = self.next_job() else {
            return Ok(());
        };
        self.send_job(jobs, job).await
    }

    /// Hands `job` to the writer, or writes it now with an inline log. `Err` when the writer
    /// has stopped (the caller takes the failure path).
    async fn send_job(
        &mut self,
        jobs: &mpsc::Sender<WalJob>,
        job: WalJob,
    ) -> Result<(), EngineError> {
        if self.inline_log.is_some() {
            self.write_inline(job);
            return Ok(());
        }
        jobs.send(job).await.map_err(|_| EngineError::LogFailed)
    }

    /// Writes `job` with the inline log (a no-op without one: callers check first).
    fn write_inline(&mut self, job: WalJob) {
        if let Some(log) = &mut self.inline_log {
            log.write(job);
        }
    }

    /// [`Engine::submit`] without waiting: the job goes out only if the writer's queue has
    /// room (it always has with [`WAL_JOBS_IN_FLIGHT_MAX`] jobs in flight, fewer than its
    /// [`crate::wal::WAL_JOBS_QUEUE_MAX`]); otherwise everything waits for the next submit.
    fn submit_now(&mut self, jobs: &mpsc::Sender<WalJob>) -> Result<(), EngineError> {
        if self.inline_log.is_some() {
            if let Some(job) = self.next_job() {
                self.write_inline(job);
            }
            return Ok(());
        }
        match jobs.try_reserve() {
            Ok(permit) => {
                if let Some(job) = self.next_job() {
                    permit.send(job);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(())) => Err(EngineError::LogFailed),
        }
    }

    /// Everything accepted since the last job, as the next job (`None`: nothing to log; the
    /// waiters for it, if any, are answered now).
    fn next_job(&mut self) -> Option<WalJob> {
        // A job goes out only when none is in flight: every earlier job is durable.
        debug_assert!(self.in_flight_jobs.is_empty());
        let batches = self.replica.take_unlogged();
        if batches.is_empty() && self.unlogged_entries.is_empty() {
            // Replies for the writer, with nothing to log (duplicates of records in a job
            // reported durable since): durable already, answered now.
            std::mem::take(&mut self.log_answers)
                .into_iter()
                .for_each(answer);
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
            return None;
        }
        let token = self.next_token;
        self.next_token += 1;
        let marks = batches
            .iter()
            .map(|b| (b.poll().clone(), b.last_seq()))
            .collect();
        self.note_job_for_pushes(token, &batches);
        let mut entries = std::mem::take(&mut self.unlogged_entries);
        entries.extend(batches.into_iter().map(WalEntry::Records));
        self.in_flight_jobs.push_back((token, marks));
        let mut job = WalJob::append(token, entries);
        job.answers = JobAnswers::new(std::mem::take(&mut self.log_answers));
        if !job.answers.is_empty() {
            self.in_flight_answers
                .push_back((token, job.answers.clone()));
        }
        Some(job)
    }

    fn on_durable(&mut self, up_to_token: u64) {
        self.hand_over_durable(up_to_token);
        self.finish_durable(up_to_token);
    }

    /// The part of [`Engine::on_durable`] that answers before the state changes: the
    /// replies a writer left (the writer answers its jobs' replies before its report; one that
    /// did not, a test's, gets them answered here), then, for replicated acks' peers, the
    /// peers' pushes the jobs made durable and their own records handed to the push sessions.
    fn hand_over_durable(&mut self, up_to_token: u64) {
        for answers in pop_through(&mut self.in_flight_answers, up_to_token) {
            answers.durable();
        }
        self.answer_durable_pushes(up_to_token);
        self.publish_durable_pushes(up_to_token);
    }

    /// The rest of [`Engine::on_durable`]: indexes the jobs' own records into the state and
    /// answers the replies waiting for them.
    fn finish_durable(&mut self, up_to_token: u64) {
        for marks in pop_through(&mut self.in_flight_jobs, up_to_token) {
            for (poll, seq) in marks {
                self.replica.mark_durable(&poll, seq);
            }
        }
        self.durable_token = self.durable_token.max(up_to_token);
        self.answer_durable();
    }

    /// Answers the peers' pushes the jobs up to `up_to_token` made durable, before this
    /// node's own records of those jobs join the state (`mark_durable` indexes every one of
    /// them, milliseconds for a large group commit): a push's answer completes the pusher's
    /// acks, and the records it confirms were merged when they came. The other waiters keep
    /// their order ([`Engine::answer_durable`]).
    fn answer_durable_pushes(&mut self, up_to_token: u64) {
        let durable = self
            .waiting
            .iter()
            .take_while(|w| w.token <= up_to_token)
            .count();
        if !self
            .waiting
            .iter()
            .take(durable)
            .any(|w| matches!(w.pending, Pending::Pushed(..)))
        {
            return;
        }
        let durable: Vec<Waiter> = self.waiting.drain(..durable).collect();
        let mut kept = Vec::with_capacity(durable.len());
        for waiter in durable {
            match waiter.pending {
                Pending::Pushed(..) => answer(waiter.pending),
                _ => kept.push(waiter),
            }
        }
        // The push journal's task (or a push session) takes these answers: it also answers
        // the pusher's next pushes from the journal's fsyncs, so it goes before the engine.
        self.handed_off = true;
        for waiter in kept.into_iter().rev() {
            self.waiting.push_front(waiter);
        }
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
            self.answer_when_replicated(waiter);
        }
    }
}

/// Takes the entries of a queue ordered by job token from its front, up to and including
/// `up_to_token`, in order (the jobs a log report made durable).
fn pop_through<T>(queue: &mut VecDeque<(u64, T)>, up_to_token: u64) -> Vec<T> {
    let count = queue
        .iter()
        .take_while(|(token, _)| *token <= up_to_token)
        .count();
    queue.drain(..count).map(|(_, item)| item).collect()
}

/// Resolves once a stop is asked for (or the sender is gone); holds no borrow of the watch
/// after, so the engine's loop may await in its branches.
async fn close_requested(close: &mut watch::Receiver<bool>) {
    let _ = close.wait_for(|close| *close).await;
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends a held reply (its log job is durable).
fn answer(pending: Pending) {
    match pending {
        Pending::Vote(reply, ack, _) => drop(reply.send(Ok(ack))),
        Pending::Batch(reply, acks, _) => drop(reply.send(Ok(acks))),
        Pending::Poll(reply, changed) => drop(reply.send(Ok(changed))),
        Pending::Pushed(reply, ack) => drop(reply.send(Ok(ack))),
    }
}

fn ack(vote: LocalVote, incarnation: u64) -> VoteAck {
    match vote {
        LocalVote::Counted { seq, second } => VoteAck::Counted {
            seq,
            second,
            incarnation,
        },
        LocalVote::Duplicate { .. } => VoteAck::Duplicate,
    }
}

/// Retired index tables at least this large are freed on a thread of their own, not on the
/// engine (smaller ones cost less to free than a thread to start).
const RETIRED_INDEX_FREE_INLINE_BYTES_MAX: usize = 1 << 20;

/// The CPU time of the calling thread, if the platform tells it.
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
        u64::try_from(now.tv_sec)
            .ok()
            .map(|seconds| Duration::new(seconds, nanos))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Logs a wake-up of [`ENGINE_WAKE_SLOW`] or more: how long, why, and the CPU time this
/// thread spent meanwhile (`woke_cpu` is its CPU time at the wake; if the task moved to
/// another worker thread over an await, the figure is that thread's, and says less).
fn log_slow_wake(busy: Duration, woke_cpu: Option<Duration>, woke_for: &str) {
    let cpu_ms = woke_cpu
        .zip(thread_cpu_time())
        .map(|(then, now)| now.saturating_sub(then).as_secs_f64() * 1e3);
    tracing::warn!(
        busy_ms = busy.as_secs_f64() * 1e3,
        cpu_ms,
        woke_for,
        "the engine held votes for a slow wake-up"
    );
}

/// Frees a dedupe index table a growth moved out of without the engine waiting: unmapping
/// 320 MB took 1–9 ms on the node's 2 MiB pages and ~65 ms on 4 KiB pages (a node run with
/// `TALLY_HUGE_PAGES=0`, or a glibc without the tunable) in this VM, against the engine's 2 ms
/// growth budget per tick. A short-lived thread does it; there is at
/// most one such table per growth of a poll's index, and a poll's index of over 1 MiB grows
/// only after hundreds of thousands of new IDs, so these threads stay few. If no thread can
/// be started, the table is freed here (the closure, and the table with it, is dropped).
fn free_off_engine(table: tally_core::RetiredIndex) {
    if table.heap_bytes() <= RETIRED_INDEX_FREE_INLINE_BYTES_MAX {
        return;
    }
    let freeing = std::thread::Builder::new()
        .name("tally-index-free".into())
        .spawn(move || drop(table));
    if let Err(error) = freeing {
        tracing::warn!(%error, "could not start a thread to free a grown index's old table");
    }
}
