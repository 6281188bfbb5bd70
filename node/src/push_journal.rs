//! The push journal: records a peer pushes to this node (replicated acks, DESIGN.md §4) made
//! durable on a lane of their own, so the answer that completes the pusher's acks waits for
//! one fsync, not for this node's engine (busy merging its own clients' votes) and its main
//! log's next group commit.
//!
//! How: the push sessions hand each pushed batch to the journal's task ([`PushJournal`]).
//! It appends the batch to the journal, a second write-ahead log in the data directory
//! (files `push-journal-wal-…log` and `push-journal-snapshot-…snap`, the main log's format,
//! checksums and recovery: [`storage::JournalStorage`]), whose own group-commit writer covers
//! every push queued meanwhile with one fsync; and it hands the same batch to the engine at
//! once, which merges and logs it in its main log as before. A push is answered with the
//! highest seq up to which this node holds every record of the batch's actor durably (the
//! meaning of [`PushAck::durable_through`]) as soon as that covers the batch: known from
//! the engine's answers to earlier pushes (what its log holds) extended by the journal's
//! fsyncs of the batches that follow them without a gap. A batch the journal does not take,
//! that does not join what is known durable (the first push of a session), or that brings
//! nothing new (a probe, which asks what the engine holds, pulls included) is answered when
//! the engine's answer comes, as before the journal existed: the `log` lane.
//!
//! What it promises:
//! - a push answered durable is on this node's disk: in the journal (fsynced) or the main
//!   log; a crash before the engine merged it loses nothing, start-up replays the journal
//!   into the replica and the main log before serving ([`recover::recover_journal`]);
//! - the journal lets go of a batch only once the engine answered that its main log holds
//!   it: the journal is then rewritten (a snapshot of the journal log, holding only the
//!   batches the main log may still lack) whenever its segment passes
//!   [`PUSH_JOURNAL_ROTATE_BYTES`], so it stays small;
//! - bounded: at most [`PUSH_JOURNAL_RECORDS_MAX`] records in it that the main log may lack;
//!   past that (the engine far behind), pushes take the `log` lane until the engine catches
//!   up (`tally_ack_push_journal_full_total`). The disk low (`disk_low`), the records of a poll
//!   whose definition the engine did not confirm, or a batch of another node's actor than the
//!   pusher's take the `log` lane too;
//! - after a write or fsync of the journal fails, it takes nothing more (the failure is final,
//!   as the main log's): every push takes the `log` lane, and what the journal held is
//!   replayed at the next start.

pub mod recover;
pub mod storage;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tally_core::wire::PushAck;
use tally_core::{ActorId, DefinitionDigest, NodeId, PollId, RecordBatch, Seq};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{AckCommand, Command, EngineError};
use crate::health::{Health, Hold};
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::wal::group_commit::{self, StartError, WriterDone};
use crate::wal::{WAL_JOBS_QUEUE_MAX, Wal, WalDone, WalEntry, WalExecutor, WalJob, WalJobKind};

/// Most records the journal holds that the main log may not hold yet; a push that would
/// pass it takes the `log` lane.
pub const PUSH_JOURNAL_RECORDS_MAX: usize = 1 << 18;

/// Bytes of the journal's segment past which it is rewritten as a snapshot of the batches
/// the main log may still lack (at most [`PUSH_JOURNAL_RECORDS_MAX`] records).
pub const PUSH_JOURNAL_ROTATE_BYTES: u64 = 8 << 20;

/// Pushes queued to the journal's task from all push sessions; a session waits when full.
pub const PUSH_JOURNAL_QUEUE_MAX: usize = 64;

/// Pushes the journal's task holds unanswered, or handed to the engine and not answered by
/// it, before it stops taking more (each session holds at most `PUSHES_UNANSWERED_MAX`
/// unanswered anyway).
pub const PUSH_JOURNAL_WAITING_MAX: usize = 4096;

/// Append jobs of the journal in flight at once (one being fsynced, one gathering).
pub const PUSH_JOURNAL_JOBS_IN_FLIGHT_MAX: usize = 2;

/// (poll, actor) pairs whose durable seq the journal's task remembers; idle ones are forgotten
/// past it (their next push takes the `log` lane once).
pub const PUSH_JOURNAL_ACTORS_MAX: usize = 4096;

/// Journaled ranges per (poll, actor) that do not yet join what is known durable.
pub const PUSH_JOURNAL_RANGES_MAX: usize = 64;

// Appends in flight and one snapshot job fit the writer's queue: submitting never waits.
const _: () = assert!(PUSH_JOURNAL_JOBS_IN_FLIGHT_MAX < WAL_JOBS_QUEUE_MAX);

/// The journal's limits (the constants above; tests shrink them).
#[derive(Debug, Clone, Copy)]
pub struct JournalLimits {
    /// [`PUSH_JOURNAL_RECORDS_MAX`].
    pub records_max: usize,
    /// [`PUSH_JOURNAL_ROTATE_BYTES`].
    pub rotate_bytes: u64,
}

impl Default for JournalLimits {
    fn default() -> Self {
        Self {
            records_max: PUSH_JOURNAL_RECORDS_MAX,
            rotate_bytes: PUSH_JOURNAL_ROTATE_BYTES,
        }
    }
}

/// The answer a push is owed.
pub type PushReply = oneshot::Sender<Result<PushAck, EngineError>>;

/// One pushed batch, for the journal's task.
pub struct JournalPush {
    /// The peer that pushed it.
    pub from: NodeId,
    /// The peer's definition of the poll.
    pub definition: DefinitionDigest,
    /// The records.
    pub batch: RecordBatch,
    /// Answered once the records are durable here (or with what is, see the module doc).
    pub reply: PushReply,
}

/// The push sessions' end of the journal's task.
#[derive(Debug, Clone)]
pub struct PushJournal {
    pushes: mpsc::Sender<JournalPush>,
}

impl PushJournal {
    /// Starts the journal's writer (as `executor` says) and its task, which hands every push
    /// to the engine: a journaled one through `merges` (its ordinary command queue: its
    /// answer no longer waits for the merge, which then need not go ahead of the acks' own
    /// commands), others, and journaled ones while that queue is full, through `engine`
    /// (its acks' lane, served first).
    pub fn start<S: Storage + 'static>(
        journal: Wal<S>,
        executor: WalExecutor,
        engine: mpsc::Sender<Command>,
        merges: mpsc::Sender<Command>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        limits: JournalLimits,
    ) -> Result<(Self, tokio::task::JoinHandle<()>, WriterDone), StartError> {
        let (jobs, done, writer) = group_commit::start(journal, executor, "tally-journal")?;
        let (pushes, inbox) = mpsc::channel(PUSH_JOURNAL_QUEUE_MAX);
        let lane = Lane {
            engine,
            merges,
            health,
            metrics,
            limits,
            jobs,
            failed: false,
            next_token: 1,
            in_flight: VecDeque::new(),
            snapshot_in_flight: false,
            gathering: Vec::new(),
            gathered: Vec::new(),
            actors: BTreeMap::new(),
            definitions: BTreeMap::new(),
            records: 0,
            waiting: 0,
            answers: FuturesUnordered::new(),
            next_push: 0,
        };
        let task = tokio::spawn(lane.run(inbox, done));
        Ok((Self { pushes }, task, writer))
    }

    /// Hands a push to the journal's task (waits while its queue is full). `Err`: the task
    /// has stopped (the node is stopping); the push was not taken.
    pub async fn push(&self, push: JournalPush) -> Result<(), JournalStopped> {
        self.pushes.send(push).await.map_err(|_| JournalStopped)
    }
}

/// The journal's task has stopped (the node is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the push journal has stopped")]
pub struct JournalStopped;

type Key = (PollId, ActorId);

/// A push's batch in a journal job.
struct Journaled {
    key: Key,
    first: Seq,
    last: Seq,
}

/// A push not answered yet.
struct Waiting {
    push: u64,
    last: Seq,
    /// Taken when answered.
    reply: Option<PushReply>,
    /// The engine answered it (its main log holds what it says).
    logged: bool,
    /// It brought nothing past what was known durable when it came (a probe: the pusher
    /// asks what this node holds, pulls included, which only the engine knows): answered
    /// only with the engine's answer.
    asks_engine: bool,
}

/// What the journal's task knows of one actor's records in one poll.
#[derive(Default)]
struct ActorState {
    /// Every record up to this seq is durable here (main log or journal).
    durable: Seq,
    /// Journaled ranges (first → last), durable, that do not join `durable` yet.
    ahead: BTreeMap<Seq, Seq>,
    /// Pushes not answered yet.
    waiting: VecDeque<Waiting>,
    /// Journaled batches the main log may not hold yet, by last seq.
    unlogged: BTreeMap<Seq, RecordBatch>,
}

impl ActorState {
    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.unlogged.is_empty() && self.ahead.is_empty()
    }
}

/// The engine's answer to a push handed to it.
struct Logged {
    key: Key,
    push: u64,
    last: Seq,
    journaled: bool,
    definition: DefinitionDigest,
    answer: Result<Result<PushAck, EngineError>, oneshot::error::RecvError>,
}

type LoggedFuture = Pin<Box<dyn Future<Output = Logged> + Send>>;

/// The journal's task.
struct Lane {
    engine: mpsc::Sender<Command>,
    merges: mpsc::Sender<Command>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    limits: JournalLimits,
    jobs: mpsc::Sender<WalJob>,
    failed: bool,
    next_token: u64,
    /// Append jobs submitted, in order, with their batches (snapshot jobs with none).
    in_flight: VecDeque<(u64, Vec<Journaled>)>,
    snapshot_in_flight: bool,
    /// Batches taken for the next append job.
    gathering: Vec<Journaled>,
    gathered: Vec<WalEntry>,
    actors: BTreeMap<Key, ActorState>,
    /// Per poll, the definition the engine took a push of.
    definitions: BTreeMap<PollId, DefinitionDigest>,
    /// Records in `unlogged`, over all actors.
    records: usize,
    /// Pushes waiting, over all actors.
    waiting: usize,
    answers: FuturesUnordered<LoggedFuture>,
    next_push: u64,
}

impl Lane {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<JournalPush>,
        mut done: mpsc::Receiver<WalDone>,
    ) {
        loop {
            self.submit();
            let has_answers = !self.answers.is_empty();
            let room = self.waiting < PUSH_JOURNAL_WAITING_MAX
                && self.answers.len() < PUSH_JOURNAL_WAITING_MAX;
            tokio::select! {
                biased;
                report = done.recv(), if !self.failed => match report {
                    Some(report) => self.journal_done(report),
                    None => self.fail("the push journal's writer stopped"),
                },
                Some(logged) = self.answers.next(), if has_answers => self.logged(logged),
                push = inbox.recv(), if room => match push {
                    Some(push) => self.take(push).await,
                    None => return,
                },
            }
        }
    }

    /// Whether the journal takes `push`'s batch (see the module doc).
    fn journal_takes(&mut self, push: &JournalPush) -> bool {
        let batch = &push.batch;
        if self.failed || batch.is_empty() || batch.actor().node != push.from {
            return false;
        }
        if self.definitions.get(batch.poll()) != Some(&push.definition)
            || self.health.has(Hold::DiskLow)
        {
            return false;
        }
        let key = (batch.poll().clone(), batch.actor().clone());
        if self
            .actors
            .get(&key)
            .is_some_and(|state| batch.last_seq() <= state.durable)
        {
            // Nothing new: a probe.
            return false;
        }
        if self.records + batch.len() > self.limits.records_max {
            self.metrics.acks.journal_full.inc();
            return false;
        }
        true
    }

    async fn take(&mut self, push: JournalPush) {
        let journaled = self.journal_takes(&push);
        let JournalPush {
            definition,
            batch,
            reply,
            ..
        } = push;
        let key = (batch.poll().clone(), batch.actor().clone());
        let (first, last) = (batch.first_seq(), batch.last_seq());
        let id = self.next_push;
        self.next_push += 1;
        self.forget_idle_actors(&key);
        let state = self.actors.entry(key.clone()).or_default();
        state.waiting.push_back(Waiting {
            push: id,
            last,
            reply: Some(reply),
            logged: false,
            asks_engine: last <= state.durable,
        });
        self.waiting += 1;
        if journaled {
            state.unlogged.insert(last, batch.clone());
            self.records += batch.len();
            self.gathered.push(WalEntry::Records(batch.clone()));
            self.gathering.push(Journaled {
                key: key.clone(),
                first,
                last,
            });
            self.metrics.acks.journal_records.set(self.records as i64);
        }
        let (engine_reply, answer) = oneshot::channel();
        let command = AckCommand::PushedRecords {
            definition,
            batch,
            reply: engine_reply,
        };
        let command = Command::Ack(command);
        let unsent = if journaled {
            self.merges
                .try_send(command)
                .err()
                .map(TrySendError::into_inner)
        } else {
            Some(command)
        };
        if let Some(command) = unsent {
            // The engine stopped: the answer below resolves to an error, and the push is
            // answered with what is known durable.
            let _ = self.engine.send(command).await;
        }
        self.answers.push(Box::pin(async move {
            Logged {
                key,
                push: id,
                last,
                journaled,
                definition,
                answer: answer.await,
            }
        }));
    }

    /// Past [`PUSH_JOURNAL_ACTORS_MAX`], forgets actors with nothing in flight (but `keep`).
    fn forget_idle_actors(&mut self, keep: &Key) {
        if self.actors.len() < PUSH_JOURNAL_ACTORS_MAX || self.actors.contains_key(keep) {
            return;
        }
        self.actors.retain(|_, state| !state.idle());
    }

    /// Submits the gathered batches as one append job, if the writer has room.
    fn submit(&mut self) {
        let appends = self.in_flight.len() - usize::from(self.snapshot_in_flight);
        if self.failed || self.gathering.is_empty() || appends >= PUSH_JOURNAL_JOBS_IN_FLIGHT_MAX {
            return;
        }
        let entries = std::mem::take(&mut self.gathered);
        let batches = std::mem::take(&mut self.gathering);
        self.send_job(WalJob::append(self.next_token, entries), batches);
    }

    fn send_job(&mut self, job: WalJob, batches: Vec<Journaled>) {
        let token = job.token;
        self.next_token += 1;
        // Never full (see the assertion on PUSH_JOURNAL_JOBS_IN_FLIGHT_MAX); closed only when
        // the writer stopped, which its report says too.
        match self.jobs.try_send(job) {
            Ok(()) => self.in_flight.push_back((token, batches)),
            Err(_) => self.fail("the push journal's writer took no more jobs"),
        }
    }

    fn journal_done(&mut self, report: WalDone) {
        let mut batches = Vec::new();
        while let Some((token, _)) = self.in_flight.front() {
            if *token > report.up_to_token {
                break;
            }
            if let Some((_, done)) = self.in_flight.pop_front() {
                batches.extend(done);
            }
        }
        if report.kind == WalJobKind::Snapshot {
            self.snapshot_in_flight = false;
        }
        if let Err(error) = &report.result {
            return self.fail(&error.to_string());
        }
        let mut touched = Vec::new();
        for journaled in batches {
            if let Some(state) = self.actors.get_mut(&journaled.key) {
                add_range(&mut state.ahead, journaled.first, journaled.last);
                touched.push(journaled.key);
            }
        }
        touched.dedup();
        for key in touched {
            self.answer(&key);
        }
        if report.bytes_since_snapshot >= self.limits.rotate_bytes && !self.snapshot_in_flight {
            self.rotate();
        }
    }

    /// Rewrites the journal as the batches the main log may still lack.
    fn rotate(&mut self) {
        let entries = self
            .actors
            .values()
            .flat_map(|state| state.unlogged.values())
            .map(|batch| WalEntry::Records(batch.clone()))
            .collect();
        self.snapshot_in_flight = true;
        self.send_job(WalJob::snapshot(self.next_token, entries), Vec::new());
    }

    fn fail(&mut self, error: &str) {
        if !self.failed {
            tracing::error!(
                %error,
                "the push journal failed: peers' pushes are answered after the main log from \
                 now on, and the journal is replayed at the next start"
            );
        }
        self.failed = true;
        // The batches in flight are answered when the engine's answers come.
        self.in_flight.clear();
        self.gathering.clear();
        self.gathered.clear();
    }

    /// The engine answered a push: its main log holds what the answer says.
    fn logged(&mut self, logged: Logged) {
        let durable = match &logged.answer {
            Ok(Ok(ack)) => ack.durable_through,
            _ => 0,
        };
        let (poll, _) = &logged.key;
        if durable > 0 {
            self.definitions.insert(poll.clone(), logged.definition);
        } else if logged.journaled && durable < logged.last {
            // The engine did not take what the journal holds (a low disk, another definition
            // since): journal nothing more of the poll until it takes a push again.
            self.definitions.remove(poll);
        }
        let Some(state) = self.actors.get_mut(&logged.key) else {
            return;
        };
        state.durable = state.durable.max(durable);
        let kept = state.unlogged.split_off(&(durable + 1));
        let released: usize = state.unlogged.values().map(RecordBatch::len).sum();
        state.unlogged = kept;
        self.records -= released;
        self.metrics.acks.journal_records.set(self.records as i64);
        if let Some(waiting) = state.waiting.iter_mut().find(|w| w.push == logged.push) {
            waiting.logged = true;
        }
        self.answer(&logged.key);
    }

    /// Joins `key`'s journaled ranges to what is durable, and answers every push covered.
    fn answer(&mut self, key: &Key) {
        let Some(state) = self.actors.get_mut(key) else {
            return;
        };
        while let Some((&first, &last)) = state.ahead.first_key_value() {
            if first > state.durable + 1 {
                break;
            }
            state.durable = state.durable.max(last);
            state.ahead.pop_first();
        }
        let durable = state.durable;
        let before = state.waiting.len();
        let mut answered = (0u64, 0u64);
        state.waiting.retain_mut(|waiting| {
            let covered = waiting.last <= durable && !waiting.asks_engine;
            if !covered && !waiting.logged {
                return true;
            }
            if waiting.logged {
                answered.1 += 1;
            } else {
                answered.0 += 1;
            }
            if let Some(reply) = waiting.reply.take() {
                let _ = reply.send(Ok(PushAck {
                    poll: key.0.clone(),
                    actor: key.1.clone(),
                    durable_through: durable,
                }));
            }
            false
        });
        self.waiting -= before - state.waiting.len();
        let lanes = &self.metrics.acks.pushes_answered;
        lanes
            .get_or_create(&vec![("lane", "journal")])
            .inc_by(answered.0);
        lanes
            .get_or_create(&vec![("lane", "log")])
            .inc_by(answered.1);
    }
}

/// Adds the journaled range `first..=last` to `ahead`, merging it with the range it extends;
/// past [`PUSH_JOURNAL_RANGES_MAX`] ranges the highest are forgotten (the records stay in the
/// journal; their pushes are answered once the engine's are).
fn add_range(ahead: &mut BTreeMap<Seq, Seq>, first: Seq, last: Seq) {
    let joined = ahead
        .range(..first)
        .next_back()
        .filter(|(_, end)| **end + 1 >= first)
        .map(|(start, _)| *start);
    match joined {
        Some(start) => {
            let end = ahead.entry(start).or_default();
            *end = (*end).max(last);
        }
        None => {
            let end = ahead.entry(first).or_default();
            *end = (*end).max(last);
        }
    }
    while ahead.len() > PUSH_JOURNAL_RANGES_MAX {
        ahead.pop_last();
    }
}
