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
use tally_node::engine::{AckCommand, AckSettings, Command, Engine, EngineIo};
use tally_node::health::{Health, Hold};
use tally_node::metrics::Metrics;
use tally_node::results::ResultsSnapshot;
use tally_node::wal::WalEntry;
use tokio::sync::{mpsc, oneshot, watch};

#[tokio::test(flavor = "current_thread")]
async fn an_ack_peer_coming_up_is_served_before_the_votes_queued_ahead_of_it() {
    // Goal: the acks' lane goes first. Method: a replicated engine whose one ack peer is not
    // connected (hold `ack_peer_down`: a vote is refused at once); a vote queued on the
    // command queue, then the peer's session coming up on the acks' lane. Served in arrival
    // order the vote would be refused; served lane first, the peer is up when the vote is
    // handled, so the vote is taken and goes to the log, its answer waiting for durability.
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
    assert!(
        health.has(Hold::AckPeerDown),
        "no ack peer yet: votes refused"
    );

    let (commands, command_rx) = mpsc::channel(8);
    let (acks, ack_rx) = mpsc::channel(8);
    let (reply, mut answer) = oneshot::channel();
    commands
        .send(Command::Vote {
            poll: poll.clone(),
            option: OptionIndex(0),
            vote_id: VoteId(7),
            reply,
        })
        .await
        .unwrap();
    acks.send(Command::Ack(AckCommand::Session { peer, up: true }))
        .await
        .unwrap();

    let (job_tx, mut jobs) = mpsc::channel(8);
    let (_done, done_rx) = mpsc::channel(8);
    let (results, _) = watch::channel(Arc::new(ResultsSnapshot::default()));
    let (_close, close_commands) = watch::channel(false);
    let (actor_tx, _) = watch::channel(ActorId {
        node: NodeId::new("a").unwrap(),
        incarnation: 1,
    });
    let (stopped, _) = watch::channel(false);
    engine.spawn(EngineIo {
        commands: command_rx,
        acks: ack_rx,
        wal_jobs: job_tx,
        wal_done: done_rx,
        results,
        close_commands,
        stopped,
        actor: actor_tx,
    });

    let job = tokio::time::timeout(Duration::from_secs(10), jobs.recv())
        .await
        .expect("the vote should have gone to the log")
        .unwrap();
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
