//! The replicated acks' lane (issue 26): the push sessions' commands (a peer's pushed records,
//! this node's records to push, confirmations, sessions up and down) reach the engine on a
//! lane of their own, served before the clients' queued commands, so an ack never waits
//! behind the batches queued ahead of it.
//!
//! Method: the engine runs against channels the test holds in place of the log writer and the
//! peer sessions; everything is queued before the engine first runs, so the order it serves
//! them in is the order it chose.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

use std::sync::Arc;
use std::time::Duration;

use tally_core::{ActorId, NodeId, OptionIndex, PollId, Replica, VoteId};
use tally_node::SystemClock;
use tally_node::config::{AckFallback, Config};
use tally_node::engine::{
    AckCommand, AckSettings, Command, Engine, EngineError, EngineIo, VoteAck,
};
use tally_node::health::{Health, Hold};
use tally_node::metrics::Metrics;
use tally_node::results::ResultsSnapshot;
use tally_node::wal::{WalDone, WalEntry, WalError, WalJob, WalJobKind};
use tokio::sync::{mpsc, oneshot, watch};

/// A replicated engine of node `a` whose one ack peer is `b` (not yet connected), with the
/// default poll, and its health.
fn replicated_engine() -> (Engine, Arc<Health>, PollId, NodeId) {
    let poll = PollId::new("superbowl").unwrap();
    let spec = Config::default()
        .poll_specs(tally_core::UnixMillis(0))
        .unwrap()
        .remove(0);
    let actor = ActorId {
        node: NodeId::new("a").unwrap(),
        incarnation: 1,
    };
    let mut replica = Replica::new(actor, [1, 2, 3, 4]);
    replica.upsert_poll(spec).unwrap();
    let health = Arc::new(Health::new(&[]));
    let mut engine = Engine::new(
        replica,
        Arc::new(SystemClock),
        Arc::new(Metrics::new()),
        Duration::from_millis(50),
        Default::default(),
        health.clone(),
        42,
    );
    let peer = NodeId::new("b").unwrap();
    let (durable, _durable) = watch::channel(0);
    engine.replicate_acks(AckSettings {
        peers: [peer.clone()].into(),
        timeout: Duration::from_secs(5),
        fallback: AckFallback::Refuse,
        durable,
        feed: Default::default(),
    });
    (engine, health, poll, peer)
}

/// The channels an engine spawned by [`spawn`] runs against.
struct Harness {
    jobs: mpsc::Receiver<WalJob>,
    done: mpsc::Sender<WalDone>,
    /// Kept: the engine takes commands while it lives.
    _close: watch::Sender<bool>,
}

/// Spawns `engine` on `commands` and `acks`, the test standing in for the log writer.
fn spawn(
    engine: Engine,
    commands: mpsc::Receiver<Command>,
    acks: mpsc::Receiver<Command>,
) -> Harness {
    let (job_tx, jobs) = mpsc::channel(8);
    let (done, done_rx) = mpsc::channel(8);
    let (results, _) = watch::channel(Arc::new(ResultsSnapshot::default()));
    let (close, close_commands) = watch::channel(false);
    let (actor_tx, _) = watch::channel(ActorId {
        node: NodeId::new("a").unwrap(),
        incarnation: 1,
    });
    let (stopped, _) = watch::channel(false);
    engine.spawn(EngineIo {
        commands,
        acks,
        wal_jobs: job_tx,
        wal_done: done_rx,
        results,
        close_commands,
        stopped,
        actor: actor_tx,
    });
    Harness {
        jobs,
        done,
        _close: close,
    }
}

/// The next job the engine sends to the log.
async fn next_job(harness: &mut Harness) -> WalJob {
    tokio::time::timeout(Duration::from_secs(10), harness.jobs.recv())
        .await
        .expect("a vote should have gone to the log")
        .unwrap()
}

/// The log's report on every job up to `token`.
fn report(token: u64, result: Result<(), WalError>) -> WalDone {
    WalDone {
        up_to_token: token,
        kind: WalJobKind::Append,
        jobs: 1,
        entries: 1,
        bytes: 0,
        fsync: Duration::ZERO,
        bytes_since_snapshot: 0,
        result,
    }
}

fn vote(poll: &PollId, id: u128) -> (Command, oneshot::Receiver<Result<VoteAck, EngineError>>) {
    let (reply, answer) = oneshot::channel();
    let command = Command::Vote {
        poll: poll.clone(),
        option: OptionIndex(0),
        vote_id: VoteId(id),
        reply,
    };
    (command, answer)
}

#[tokio::test(flavor = "current_thread")]
async fn an_ack_peer_coming_up_is_served_before_the_votes_queued_ahead_of_it() {
    // Goal: the acks' lane goes first. Method: a replicated engine whose one ack peer is not
    // connected (hold `ack_peer_down`: a vote is refused at once); a vote queued on the
    // command queue, then the peer's session coming up on the acks' lane. Served in arrival
    // order the vote would be refused; served lane first, the peer is up when the vote is
    // handled, so the vote is taken and goes to the log, its answer waiting for durability.
    let (engine, health, poll, peer) = replicated_engine();
    assert!(
        health.has(Hold::AckPeerDown),
        "no ack peer yet: votes refused"
    );

    let (commands, command_rx) = mpsc::channel(8);
    let (acks, ack_rx) = mpsc::channel(8);
    let (command, mut answer) = vote(&poll, 7);
    commands.send(command).await.unwrap();
    acks.send(Command::Ack(AckCommand::Session { peer, up: true }))
        .await
        .unwrap();

    let mut harness = spawn(engine, command_rx, ack_rx);
    let job = next_job(&mut harness).await;
    let logged: usize = job
        .entries
        .iter()
        .map(|entry| match entry {
            WalEntry::Records(batch) if batch.poll() == &poll => batch.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(
        logged, 1,
        "the vote's record is in the job: {:?}",
        job.entries
    );
    assert!(
        matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "the vote waits for its fsync and its ack peer, not refused"
    );
    assert!(!health.has(Hold::AckPeerDown));
}

#[tokio::test(flavor = "current_thread")]
async fn a_durable_vote_waiting_for_its_ack_peer_when_the_log_fails_is_refused_as_maybe_counted() {
    // Goal: when the log fails, a vote already durable here (waiting only for its ack peer's
    // confirmation) is refused `not_replicated` (it may be counted: it is in the log and may
    // be at the peer), and only a vote of the failed group is refused `log failed` (simulation
    // seed 9021 held a vote answered only "the write-ahead log failed"). Method: the test is
    // the log writer: the first vote's job is reported durable, the second vote's fails.
    let (engine, _health, poll, peer) = replicated_engine();
    let (commands, command_rx) = mpsc::channel(8);
    let (acks, ack_rx) = mpsc::channel(8);
    acks.send(Command::Ack(AckCommand::Session { peer, up: true }))
        .await
        .unwrap();
    let (first, mut durable) = vote(&poll, 7);
    commands.send(first).await.unwrap();
    let mut harness = spawn(engine, command_rx, ack_rx);
    let job = next_job(&mut harness).await;
    harness.done.send(report(job.token, Ok(()))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        matches!(durable.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "durable, it waits for its ack peer"
    );

    let (second, failed) = vote(&poll, 8);
    commands.send(second).await.unwrap();
    let job = next_job(&mut harness).await;
    let error = WalError::Io {
        operation: "sync",
        file: "wal-1.log".to_owned(),
        source: Arc::new(std::io::Error::other("EIO")),
    };
    harness
        .done
        .send(report(job.token, Err(error)))
        .await
        .unwrap();
    let within = |answer| tokio::time::timeout(Duration::from_secs(10), answer);
    assert_eq!(
        within(durable).await.unwrap().unwrap(),
        Err(EngineError::NotReplicated)
    );
    assert_eq!(
        within(failed).await.unwrap().unwrap(),
        Err(EngineError::LogFailed)
    );
}
