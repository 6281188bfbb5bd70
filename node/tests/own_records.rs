//! The engine meeting records of its own actor from a peer (issue 29): it moves to a new
//! incarnation once, never issues the old actor's seqs again, answers the votes it held in
//! flight with their new seqs, takes the peer's records, and its log replays to the same
//! state (the records a log job in flight wrote for the old actor are void).
//!
//! Method: the engine runs against channels the test holds in place of the log writer, so
//! the test decides when each log job becomes durable: a job is in flight, a vote waits
//! unlogged, when the peer's records arrive. Every job's entries are then written to a real
//! log and replayed by the node's start-up recovery.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

use std::sync::Arc;
use std::time::Duration;

use tally_core::{
    ActorId, NodeId, OptionIndex, PollId, PollSpec, PullAnswer, RecordBatch, Replica, VoteId,
};
use tally_node::config::Config;
use tally_node::engine::{Command, Engine, EngineIo, PeerApplied, VoteAck};
use tally_node::health::Health;
use tally_node::metrics::Metrics;
use tally_node::results::ResultsSnapshot;
use tally_node::storage::MemoryStorage;
use tally_node::wal::startup::recover;
use tally_node::wal::{Wal, WalDone, WalEntry, WalJob, WalJobKind};
use tally_node::{Clock, SystemClock};
use tokio::sync::{mpsc, oneshot, watch};

fn poll() -> PollId {
    PollId::new("superbowl").unwrap()
}

/// The default configuration's poll.
fn spec() -> PollSpec {
    Config::default()
        .poll_specs(tally_core::UnixMillis(0))
        .unwrap()
        .remove(0)
}

fn old_actor() -> ActorId {
    ActorId {
        node: NodeId::new("local").unwrap(),
        incarnation: 5,
    }
}

struct Harness {
    commands: mpsc::Sender<Command>,
    jobs: mpsc::Receiver<WalJob>,
    done: mpsc::Sender<WalDone>,
    actor: watch::Receiver<ActorId>,
    metrics: Arc<Metrics>,
    logged: Vec<WalEntry>,
    /// Kept so the engine does not see its drain end.
    _close: watch::Sender<bool>,
}

impl Harness {
    fn start() -> Self {
        let mut replica = Replica::new(old_actor(), [1, 2, 3, 4]);
        let spec = spec();
        replica.upsert_poll(spec.clone()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::new(
            replica,
            Arc::new(SystemClock),
            metrics.clone(),
            Duration::from_millis(50),
            Default::default(),
            Arc::new(Health::new(&[])),
            42,
        );
        let (commands, command_rx) = mpsc::channel(64);
        let (job_tx, jobs) = mpsc::channel(8);
        let (done, done_rx) = mpsc::channel(8);
        let (results, _) = watch::channel(Arc::new(ResultsSnapshot::default()));
        let (close, close_commands) = watch::channel(false);
        let (actor_tx, actor) = watch::channel(old_actor());
        let (stopped, _) = watch::channel(false);
        engine.spawn(EngineIo {
            commands: command_rx,
            // No push session: the acks' lane is closed from the start.
            acks: mpsc::channel(1).1,
            wal_jobs: job_tx,
            wal_done: done_rx,
            results,
            close_commands,
            stopped,
            actor: actor_tx,
        });
        Self {
            commands,
            jobs,
            done,
            actor,
            metrics,
            logged: vec![WalEntry::Identity(old_actor()), WalEntry::Poll(spec)],
            _close: close,
        }
    }

    async fn vote(
        &self,
        id: u128,
    ) -> oneshot::Receiver<Result<VoteAck, tally_node::engine::EngineError>> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Vote {
                poll: poll(),
                option: OptionIndex(0),
                vote_id: VoteId(id),
                reply,
            })
            .await
            .unwrap();
        answer
    }

    /// The next log job, its entries kept for the replay.
    async fn job(&mut self) -> WalJob {
        let job = tokio::time::timeout(Duration::from_secs(5), self.jobs.recv())
            .await
            .expect("a log job in time")
            .expect("the engine runs");
        assert_eq!(job.kind, WalJobKind::Append);
        self.logged.extend(job.entries.iter().cloned());
        job
    }

    /// Merges `batch` as a peer's pull answer; the peer defines the poll as this node does,
    /// so its records apply.
    async fn apply_from_peer(&self, batch: RecordBatch) -> PeerApplied {
        let (reply, applied) = oneshot::channel();
        self.commands
            .send(Command::PeerApply {
                peer: NodeId::new("peer").unwrap(),
                answer: PullAnswer {
                    polls: vec![spec()],
                    batches: vec![batch],
                    ..PullAnswer::default()
                },
                reply,
            })
            .await
            .unwrap();
        applied.await.unwrap().unwrap()
    }

    async fn durable(&self, job: &WalJob) {
        let done = WalDone {
            up_to_token: job.token,
            kind: WalJobKind::Append,
            jobs: 1,
            entries: job.entries.len(),
            bytes: 0,
            fsync: Duration::ZERO,
            bytes_since_snapshot: 0,
            result: Ok(()),
        };
        self.done.send(done).await.unwrap();
    }
}

async fn answer(
    answer: oneshot::Receiver<Result<VoteAck, tally_node::engine::EngineError>>,
) -> VoteAck {
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("an answer in time")
        .unwrap()
        .unwrap()
}

/// Writes `logged` to a fresh log and recovers a node from it, as a restart would.
fn replay(logged: &[WalEntry]) -> tally_node::wal::startup::Recovered<MemoryStorage> {
    let storage = MemoryStorage::new();
    let (mut wal, _) = Wal::open(storage.clone(), |_| {}).unwrap();
    wal.append(logged).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let config = Config::default();
    let clock: &dyn Clock = &SystemClock;
    recover(
        &config,
        &config.validate().unwrap(),
        storage,
        clock,
        7,
        None,
    )
    .unwrap()
}

fn counted(ack: VoteAck) -> (u64, u64, u32) {
    match ack {
        VoteAck::Counted {
            seq,
            incarnation,
            second,
        } => (seq, incarnation, second),
        other => panic!("expected counted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_node_meeting_its_own_records_moves_to_a_new_incarnation_and_reissues_no_seq() {
    // Goal: the switch is safe for every vote in flight and survives a restart. Method: one
    // vote durable, one in a job in flight, one unlogged, then the peer's records of the own
    // actor; check the log jobs, the answers, the metric, then replay the log.
    let mut node = Harness::start();
    // Vote 1 is durable as the old actor's seq 1.
    let first = node.vote(1).await;
    let job = node.job().await;
    node.durable(&job).await;
    let (seq, incarnation, second) = counted(answer(first).await);
    assert_eq!((seq, incarnation), (1, 5));
    // Vote 2 is in a job in flight (old seq 2); vote 3 waits unlogged (old seq 3).
    let second_vote = node.vote(2).await;
    let in_flight = node.job().await;
    let third_vote = node.vote(3).await;
    // A peer holds the old actor's seqs 1..=5 (its first life's): seq 1 as here, 2..=5 not.
    let mut theirs = RecordBatch::new(poll(), old_actor(), 1);
    theirs.push(VoteId(1), OptionIndex(0), second);
    for id in 101..105 {
        theirs.push(VoteId(id), OptionIndex(1), second);
    }
    let applied = node.apply_from_peer(theirs.clone()).await;
    assert!(applied.refused.is_empty(), "{:?}", applied.refused);
    assert_eq!(
        applied.records_added, 4,
        "the peer's old-actor records join the state"
    );

    // The job in flight becomes durable: its old-actor record is void, nothing answered.
    node.durable(&in_flight).await;
    let next = node.job().await;
    assert!(
        matches!(&next.entries[0], WalEntry::Incarnation { retired, durable_through, .. }
            if retired == &old_actor() && durable_through == &vec![(poll(), 1)]),
        "the move is logged first: {:?}",
        next.entries[0]
    );
    let new_actor = node.actor.borrow().clone();
    assert_eq!(new_actor.node, old_actor().node);
    assert_ne!(new_actor, old_actor());
    let own: Vec<&RecordBatch> = next
        .entries
        .iter()
        .filter_map(|e| match e {
            WalEntry::Records(b) if b.actor() == &new_actor => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(own.len(), 1);
    assert_eq!((own[0].first_seq(), own[0].last_seq()), (1, 2));
    node.durable(&next).await;
    assert_eq!(counted(answer(second_vote).await).0, 1);
    let (seq, incarnation, _) = counted(answer(third_vote).await);
    assert_eq!((seq, incarnation), (2, new_actor.incarnation));
    // No further vote is numbered under the old actor.
    let fourth = node.vote(4).await;
    let job = node.job().await;
    node.durable(&job).await;
    assert_eq!(counted(answer(fourth).await).1, new_actor.incarnation);
    let metrics = node.metrics.render();
    assert!(
        metrics.contains("tally_incarnation_changes_total{reason=\"own_records_from_peer\"} 1"),
        "{metrics}"
    );

    // The log replays to the same state: the void record (vote 2 at the old seq 2) is left
    // out, the peer's record at that seq is kept.
    let recovered = replay(&node.logged);
    assert_eq!(recovered.new_incarnation, None, "{}", recovered.report);
    assert_eq!(recovered.replica.actor(), &new_actor);
    let state = recovered.replica.state(&poll()).unwrap();
    assert_eq!(state.held(&old_actor()), 5);
    assert_eq!(state.held(&new_actor), 3);
    assert_eq!(
        state.exact_totals().iter().sum::<i64>(),
        8,
        "votes 1-4 and 101-104"
    );
    assert_eq!(state.totals(None), state.exact_totals());
}

#[tokio::test]
async fn a_job_in_flight_whose_votes_the_writer_answered_stays_the_old_actors_through_a_move() {
    // Goal: a vote the log writer answered right after its fsync (before the engine took the
    // report) keeps its answer: when a peer's records move the node to a new incarnation
    // meanwhile, that job is durable, so it is marked so and stays the retired actor's (it is
    // not voided and renumbered under an answer already given). Method: as above, but the
    // test answers the job in flight as the writer does, before the peer's records come.
    let mut node = Harness::start();
    let first = node.vote(1).await;
    let job = node.job().await;
    node.durable(&job).await;
    let (_, _, second) = counted(answer(first).await);
    // Vote 2's job is written and synced; the writer answers it before its report.
    let second_vote = node.vote(2).await;
    let in_flight = node.job().await;
    assert_eq!(in_flight.answers.waiting(), 1);
    in_flight.answers.durable();
    let (seq, incarnation, _) = counted(answer(second_vote).await);
    assert_eq!((seq, incarnation), (2, 5));
    let third_vote = node.vote(3).await;
    // The peer holds seqs 1..=2 as here and 3..=5 of the old actor's first life.
    let mut theirs = RecordBatch::new(poll(), old_actor(), 1);
    theirs.push(VoteId(1), OptionIndex(0), second);
    theirs.push(VoteId(2), OptionIndex(0), second);
    for id in 103..106 {
        theirs.push(VoteId(id), OptionIndex(1), second);
    }
    let applied = node.apply_from_peer(theirs).await;
    assert!(applied.refused.is_empty(), "{:?}", applied.refused);
    assert_eq!(applied.records_added, 3, "seqs 3..=5 join the state");
    // The writer's report comes after the move: nothing left to do for it.
    node.durable(&in_flight).await;
    let next = node.job().await;
    assert!(
        matches!(&next.entries[0], WalEntry::Incarnation { retired, durable_through, .. }
            if retired == &old_actor() && durable_through == &vec![(poll(), 2)]),
        "the answered job is durable through the move: {:?}",
        next.entries[0]
    );
    let new_actor = node.actor.borrow().clone();
    let own: Vec<&RecordBatch> = next
        .entries
        .iter()
        .filter_map(|e| match e {
            WalEntry::Records(b) if b.actor() == &new_actor => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(own.len(), 1);
    assert_eq!(
        (own[0].first_seq(), own[0].last_seq()),
        (1, 1),
        "only the unlogged vote moved"
    );
    node.durable(&next).await;
    let (seq, incarnation, _) = counted(answer(third_vote).await);
    assert_eq!((seq, incarnation), (1, new_actor.incarnation));

    // The log replays to the same state: both old-actor records of this node are kept.
    let recovered = replay(&node.logged);
    assert_eq!(recovered.replica.actor(), &new_actor);
    let state = recovered.replica.state(&poll()).unwrap();
    assert_eq!(state.held(&old_actor()), 5);
    assert_eq!(state.held(&new_actor), 1);
    assert_eq!(
        state.exact_totals().iter().sum::<i64>(),
        6,
        "votes 1-3 and 103-105"
    );
}
