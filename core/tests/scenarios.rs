//! Named scenarios of the replica: local votes, the durability handshake, retries across
//! regions, conflicting options, recovery, and refusals. Each test states its goal first.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

use tally_core::{
    AcceptError, ActorId, LocalVote, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow,
    RecordBatch, Replica, ReplicaError, UnixMillis, VoteId, limits, wire,
};

const OPEN_AT: UnixMillis = UnixMillis(1_000_000);

fn poll() -> PollId {
    PollId::new("superbowl").unwrap()
}

fn spec() -> PollSpec {
    let options = ["green", "blue"]
        .iter()
        .map(|n| OptionName::new(*n).unwrap())
        .collect();
    PollSpec::new(poll(), options, PollWindow::open_from(OPEN_AT)).unwrap()
}

fn replica(node: &str) -> Replica {
    let actor = ActorId {
        node: NodeId::new(node).unwrap(),
        incarnation: 1,
    };
    let mut replica = Replica::new(actor, [node.len() as u64, 2, 3, 4]);
    replica.upsert_poll(spec()).unwrap();
    replica
}

fn at_second(second: u64) -> UnixMillis {
    UnixMillis(OPEN_AT.0 + second * 1000 + 250)
}

/// Logs and fsyncs everything accepted so far (what the node's group commit does).
fn commit(replica: &mut Replica) -> Vec<RecordBatch> {
    let batches = replica.take_unlogged();
    for batch in &batches {
        replica.mark_durable(batch.poll(), batch.last_seq());
    }
    batches
}

/// Accepts votes `ids` for green at second 1 and makes them durable.
fn durable_green_votes(node: &mut Replica, ids: std::ops::Range<u128>) -> Vec<RecordBatch> {
    for id in ids {
        node.accept_local(&poll(), OptionIndex(0), VoteId(id), at_second(1))
            .unwrap();
    }
    commit(node)
}

/// Full two-way exchange between replicas, as peer sync does.
fn exchange(a: &mut Replica, b: &mut Replica) {
    for _ in 0..2 {
        let to_b = a.missing_records(&poll(), &b.version_vector(&poll()).unwrap(), usize::MAX);
        for batch in &to_b {
            b.apply_records(batch).unwrap();
        }
        b.merge_counters(&a.counter_state(&poll()).unwrap())
            .unwrap();
        std::mem::swap(a, b);
    }
}

fn totals(replica: &Replica) -> Vec<i64> {
    replica.state(&poll()).unwrap().totals(None)
}

#[test]
fn new_vote_counts_after_it_is_durable_and_retry_is_duplicate() {
    // Goal: the first vote is Counted, invisible to reads and peers until durable; a retry is a
    // Duplicate that waits for the same seq.
    let mut node = replica("us-east");
    let green = OptionIndex(0);
    let counted = node
        .accept_local(&poll(), green, VoteId(7), at_second(3))
        .unwrap();
    assert_eq!(counted, LocalVote::Counted { seq: 1, second: 3 });
    let retry = node
        .accept_local(&poll(), OptionIndex(1), VoteId(7), at_second(4))
        .unwrap();
    assert_eq!(retry, LocalVote::Duplicate { wait_for: Some(1) });
    assert_eq!(totals(&node), vec![0, 0], "not durable yet");
    assert!(
        node.missing_records(&poll(), &Default::default(), usize::MAX)
            .is_empty()
    );
    let logged = commit(&mut node);
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].len(), 1);
    assert_eq!(totals(&node), vec![1, 0]);
    let late_retry = node
        .accept_local(&poll(), green, VoteId(7), at_second(9))
        .unwrap();
    assert_eq!(late_retry, LocalVote::Duplicate { wait_for: None });
}

#[test]
fn retry_to_other_region_counts_once() {
    // Goal: a client times out at region A and retries the same vote ID at region B; both
    // count it locally, and after sync every region shows one vote.
    let mut east = replica("us-east");
    let mut west = replica("us-west");
    east.accept_local(&poll(), OptionIndex(0), VoteId(42), at_second(1))
        .unwrap();
    west.accept_local(&poll(), OptionIndex(0), VoteId(42), at_second(2))
        .unwrap();
    commit(&mut east);
    commit(&mut west);
    assert_eq!(totals(&east), vec![1, 0]);
    assert_eq!(totals(&west), vec![1, 0]);
    exchange(&mut east, &mut west);
    assert_eq!(totals(&east), vec![1, 0]);
    assert_eq!(totals(&west), vec![1, 0]);
    assert_eq!(east.state(&poll()).unwrap().exact_totals(), vec![1, 0]);
}

#[test]
fn one_vote_id_with_two_options_resolves_the_same_everywhere() {
    // Goal: a buggy client sends one vote ID as green to A and blue to B; the earliest record
    // wins on every replica, and the loser's actor retracts its own record.
    let mut east = replica("us-east");
    let mut west = replica("us-west");
    west.accept_local(&poll(), OptionIndex(1), VoteId(5), at_second(2))
        .unwrap();
    east.accept_local(&poll(), OptionIndex(0), VoteId(5), at_second(4))
        .unwrap();
    commit(&mut east);
    commit(&mut west);
    exchange(&mut east, &mut west);
    for node in [&east, &west] {
        let state = node.state(&poll()).unwrap();
        assert_eq!(state.winner_option(VoteId(5)), Some(OptionIndex(1)));
        assert_eq!(state.winner_record(VoteId(5)), Some((west.actor(), 1)));
        assert_eq!(state.winner_record(VoteId(6)), None);
        assert_eq!(state.totals(None), vec![0, 1]);
        assert_eq!(state.totals(Some(3)), vec![0, 1], "split at second 3");
        assert_eq!(state.totals(Some(1)), vec![0, 0], "split at second 1");
    }
    let east_view = east.state(&poll()).unwrap().counter_views();
    let east_own = east_view.iter().find(|(a, _)| a == east.actor()).unwrap();
    let pair = east_own.1.get(4, OptionIndex(0));
    assert_eq!((pair.accepted, pair.retracted), (1, 1));
}

#[test]
fn ties_on_the_same_second_break_by_actor_then_seq() {
    // Goal: the winner order is (second, actor, seq), independent of who applies it.
    let mut a = replica("a-node");
    let mut b = replica("b-node");
    a.accept_local(&poll(), OptionIndex(0), VoteId(1), at_second(5))
        .unwrap();
    b.accept_local(&poll(), OptionIndex(1), VoteId(1), at_second(5))
        .unwrap();
    commit(&mut a);
    commit(&mut b);
    exchange(&mut a, &mut b);
    for node in [&a, &b] {
        let state = node.state(&poll()).unwrap();
        assert_eq!(state.winner_option(VoteId(1)), Some(OptionIndex(0)));
    }
}

#[test]
fn votes_outside_the_window_or_for_unknown_things_are_refused() {
    // Goal: each refusal is a distinct error and leaves nothing behind.
    let mut node = replica("n");
    let unknown = PollId::new("other").unwrap();
    let early = UnixMillis(OPEN_AT.0 - 1);
    assert_eq!(
        node.accept_local(&unknown, OptionIndex(0), VoteId(1), at_second(1)),
        Err(AcceptError::UnknownPoll(unknown))
    );
    assert_eq!(
        node.accept_local(&poll(), OptionIndex(2), VoteId(1), at_second(1)),
        Err(AcceptError::UnknownOption(2))
    );
    assert_eq!(
        node.accept_local(&poll(), OptionIndex(0), VoteId(1), early),
        Err(AcceptError::NotOpen)
    );
    let close = PollWindow {
        opens_at: None,
        closes_at: Some(at_second(10)),
    };
    node.merge_window(&poll(), &close).unwrap();
    assert_eq!(
        node.accept_local(&poll(), OptionIndex(0), VoteId(1), at_second(11)),
        Err(AcceptError::Closed)
    );
    assert!(node.take_unlogged().is_empty());
    assert_eq!(node.in_flight_records(), 0);
}

#[test]
fn in_flight_votes_are_bounded() {
    // Goal: when the log falls behind, accepting sheds load instead of growing without bound.
    let mut node = replica("n");
    for id in 0..limits::IN_FLIGHT_RECORDS_MAX as u128 {
        node.accept_local(&poll(), OptionIndex(0), VoteId(id), at_second(1))
            .unwrap();
    }
    assert_eq!(
        node.accept_local(&poll(), OptionIndex(0), VoteId(u128::MAX), at_second(1)),
        Err(AcceptError::Overloaded)
    );
    commit(&mut node);
    assert!(
        node.accept_local(&poll(), OptionIndex(0), VoteId(u128::MAX), at_second(1))
            .is_ok()
    );
}

#[test]
fn clock_stepping_back_does_not_reorder_an_actors_seconds() {
    // Goal: records of one actor carry non-decreasing seconds even if the wall clock jumps back.
    let mut node = replica("n");
    node.accept_local(&poll(), OptionIndex(0), VoteId(1), at_second(8))
        .unwrap();
    let back = node
        .accept_local(&poll(), OptionIndex(0), VoteId(2), at_second(3))
        .unwrap();
    assert_eq!(back, LocalVote::Counted { seq: 2, second: 8 });
}

#[test]
fn recovery_from_the_log_restores_counts_and_the_next_seq() {
    // Goal: replaying the logged batches into a fresh replica of the same actor gives the same
    // tally, retries are still duplicates, and new votes continue the seq.
    let mut node = replica("n");
    for id in 0..10u128 {
        node.accept_local(
            &poll(),
            OptionIndex((id % 2) as u8),
            VoteId(id),
            at_second(1),
        )
        .unwrap();
    }
    let logged = commit(&mut node);
    let mut restarted = replica("n");
    for batch in &logged {
        restarted.recover_records(batch).unwrap();
    }
    assert_eq!(totals(&restarted), totals(&node));
    assert_eq!(
        restarted.accept_local(&poll(), OptionIndex(0), VoteId(3), at_second(2)),
        Ok(LocalVote::Duplicate { wait_for: None })
    );
    assert_eq!(
        restarted.accept_local(&poll(), OptionIndex(0), VoteId(99), at_second(2)),
        Ok(LocalVote::Counted { seq: 11, second: 2 })
    );
}

#[test]
fn reused_actor_identity_is_detected() {
    // Goal: a node that lost its disk and wrongly reuses its actor produces records that clash
    // with what peers hold; peers refuse them, and the node refuses its "own" old records.
    let mut original = replica("n");
    let mut peer = replica("peer");
    original
        .accept_local(&poll(), OptionIndex(0), VoteId(1), at_second(1))
        .unwrap();
    commit(&mut original);
    exchange(&mut original, &mut peer);
    let mut reborn = replica("n"); // same actor, empty disk: the bug
    reborn
        .accept_local(&poll(), OptionIndex(1), VoteId(2), at_second(2))
        .unwrap();
    let reborn_batches = commit(&mut reborn);
    let refused = peer.apply_records(&reborn_batches[0]);
    assert!(
        matches!(
            refused,
            Err(ReplicaError::Apply(tally_core::ApplyError::Conflict { .. }))
        ),
        "{refused:?}"
    );
    let old = peer.missing_records(&poll(), &Default::default(), usize::MAX);
    let mut fresh = replica("n");
    let own = old.iter().find(|b| b.actor() == fresh.actor()).unwrap();
    assert!(matches!(
        fresh.apply_records(own),
        Err(ReplicaError::ForeignOwnRecords { .. })
    ));
}

#[test]
fn poll_definitions_merge_windows_and_refuse_other_options() {
    // Goal: re-adding a poll merges its window; a different option list is a conflict.
    let mut node = replica("n");
    let mut closed = spec();
    closed.window.closes_at = Some(at_second(30));
    assert_eq!(node.upsert_poll(closed), Ok(true));
    assert_eq!(
        node.poll_spec(&poll()).unwrap().window.closes_at,
        Some(at_second(30))
    );
    let other = PollSpec::new(
        poll(),
        vec![
            OptionName::new("red").unwrap(),
            OptionName::new("blue").unwrap(),
        ],
        PollWindow::default(),
    )
    .unwrap();
    assert!(node.upsert_poll(other).is_err());
}

#[test]
fn counter_state_round_trips_through_the_wire() {
    // Goal: a pushed counter state decodes to the same message and merges into a peer.
    let mut node = replica("n");
    node.accept_local(&poll(), OptionIndex(1), VoteId(9), at_second(2))
        .unwrap();
    commit(&mut node);
    let message = wire::PeerMessage::Counters(node.counter_state(&poll()).unwrap());
    let decoded = wire::decode(&wire::encode(&message)).unwrap();
    assert_eq!(decoded, message);
    let mut peer = replica("peer");
    let wire::PeerMessage::Counters(state) = decoded else {
        unreachable!()
    };
    assert!(peer.merge_counters(&state).unwrap());
    assert_eq!(
        totals(&peer),
        vec![0, 1],
        "fast path shows it before records arrive"
    );
    assert_eq!(peer.state(&poll()).unwrap().exact_totals(), vec![0, 0]);
}

#[test]
fn counts_of_an_incarnation_lost_with_its_disk_fall_back_to_its_surviving_records() {
    // Goal (found by the simulation's 30-million-vote run): counters travel ahead of records,
    // so a peer may hear that an actor counted votes whose records it never receives, because
    // the actor's disk was lost first. Once the node's new incarnation says hello, the old
    // actor's view is what its surviving records prove, and every region shows the exact
    // tally, which a later retry of a lost vote then raises by one, not two.
    let mut east = replica("us-east");
    let mut west = replica("us-west");
    let logged = durable_green_votes(&mut east, 0..3);
    // West got one record and the full counter state; then east's disk is lost.
    let mut first = RecordBatch::new(poll(), east.actor().clone(), 1);
    let record = logged[0].iter().next().unwrap();
    first.push(record.vote_id, record.option, record.second);
    west.apply_records(&first).unwrap();
    west.merge_counters(&east.counter_state(&poll()).unwrap())
        .unwrap();
    assert_eq!(totals(&west), vec![3, 0], "the fast path runs ahead");
    assert_eq!(west.state(&poll()).unwrap().exact_totals(), vec![1, 0]);

    let reborn = ActorId {
        node: NodeId::new("us-east").unwrap(),
        incarnation: 2,
    };
    assert!(west.note_current_incarnation(&reborn));
    assert_eq!(totals(&west), vec![1, 0], "only surviving records count");
    assert!(!west.note_current_incarnation(&reborn), "idempotent");

    // The lost votes are retried at the new incarnation: each counts once.
    let mut east = Replica::new(reborn, [7, 2, 3, 4]);
    east.upsert_poll(spec()).unwrap();
    for id in 0..3 {
        east.accept_local(&poll(), OptionIndex(0), VoteId(id), at_second(2))
            .unwrap();
    }
    commit(&mut east);
    exchange(&mut east, &mut west);
    assert_eq!(totals(&west), vec![3, 0]);
    assert_eq!(totals(&east), vec![3, 0]);
    assert_eq!(west.state(&poll()).unwrap().exact_totals(), vec![3, 0]);

    // A peer can never supersede a replica's own actor.
    let impostor = ActorId {
        node: NodeId::new("us-west").unwrap(),
        incarnation: 9,
    };
    assert!(!west.note_current_incarnation(&impostor));
}

#[test]
fn a_poll_past_the_most_a_replica_holds_is_refused_and_changes_nothing() {
    // Goal: the number of polls is bounded (every poll travels in each sync round). Method:
    // fill a replica to POLLS_MAX polls, ask for one more, then re-upsert an existing one.
    let mut replica = replica("a");
    for i in 1..limits::POLLS_MAX {
        let id = PollId::new(format!("poll-{i}")).unwrap();
        let spec = PollSpec::new(id, spec().options().to_vec(), PollWindow::default()).unwrap();
        assert!(replica.upsert_poll(spec).unwrap());
    }
    let extra = PollId::new("one-too-many").unwrap();
    let refused = PollSpec::new(
        extra.clone(),
        spec().options().to_vec(),
        PollWindow::default(),
    );
    assert_eq!(
        replica.upsert_poll(refused.unwrap()),
        Err(tally_core::PollError::TooManyPolls(extra.clone()))
    );
    assert!(replica.poll_spec(&extra).is_none());
    assert_eq!(replica.poll_specs().count(), limits::POLLS_MAX);
    assert_eq!(
        replica.upsert_poll(spec()),
        Ok(false),
        "an existing poll still merges"
    );
}

#[test]
fn a_node_behind_its_peers_moves_to_a_new_incarnation_and_takes_its_old_records() {
    // Goal (issue 29): a node whose log lost records its peers hold never issues those seqs
    // again. Method: east makes 3 votes durable and west takes them; east restarts from a log
    // that kept only the first, accepts 2 more votes (in flight, one handed out for logging),
    // meets its old records from west, begins a new incarnation, and the in-flight votes move
    // to the new actor as its seqs 1 and 2; then the old records apply like any actor's and
    // both replicas agree on 5 votes.
    let mut east = replica("us-east");
    let mut west = replica("us-west");
    let logged = durable_green_votes(&mut east, 0..3);
    exchange(&mut east, &mut west);
    let old_actor = east.actor().clone();

    let mut restarted = replica("us-east");
    let mut kept = RecordBatch::new(poll(), old_actor.clone(), 1);
    let first = logged[0].iter().next().unwrap();
    kept.push(first.vote_id, first.option, first.second);
    restarted.recover_records(&kept).unwrap();
    let vote =
        |r: &mut Replica, id| r.accept_local(&poll(), OptionIndex(1), VoteId(id), at_second(2));
    assert_eq!(
        vote(&mut restarted, 10),
        Ok(LocalVote::Counted { seq: 2, second: 2 })
    );
    let handed_out = restarted.take_unlogged();
    assert_eq!(handed_out[0].first_seq(), 2);
    assert_eq!(
        vote(&mut restarted, 11),
        Ok(LocalVote::Counted { seq: 3, second: 2 })
    );
    let theirs = west.missing_records(
        &poll(),
        &restarted.version_vector(&poll()).unwrap(),
        usize::MAX,
    );
    let own = theirs.iter().find(|b| b.actor() == &old_actor).unwrap();
    assert!(matches!(
        restarted.apply_records(own),
        Err(ReplicaError::ForeignOwnRecords { .. })
    ));

    let new_actor = ActorId {
        node: NodeId::new("us-east").unwrap(),
        incarnation: 2,
    };
    let moved = restarted.begin_incarnation(new_actor.clone());
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].old_first_seq, moved[0].new_first_seq), (2, 1));
    assert_eq!(moved[0].count, 2);
    assert_eq!(moved[0].new_seq(3), Some(2));
    assert_eq!(moved[0].new_seq(4), None);
    assert_eq!(restarted.actor(), &new_actor);
    // A retry of a moved vote waits for its new seq.
    assert_eq!(
        vote(&mut restarted, 11),
        Ok(LocalVote::Duplicate { wait_for: Some(2) })
    );
    let relogged = commit(&mut restarted);
    assert_eq!(relogged.len(), 1);
    assert_eq!(relogged[0].actor(), &new_actor);
    assert_eq!((relogged[0].first_seq(), relogged[0].last_seq()), (1, 2));
    assert!(restarted.apply_records(own).unwrap().added > 0);
    exchange(&mut restarted, &mut west);
    assert_eq!(totals(&restarted), vec![3, 2]);
    assert_eq!(totals(&west), vec![3, 2]);
    assert_eq!(
        restarted.state(&poll()).unwrap().held(&old_actor),
        3,
        "the old actor's seqs are the ones its first life issued"
    );
}

#[test]
fn a_vote_adopted_from_a_damaged_log_counts_once_beside_its_original_record() {
    // Goal (issue 29): a vote whose record followed a gap in a damaged log is recorded again
    // by the new incarnation and counts exactly once, also after the original record arrives
    // from a peer. Method: adopt vote 5 (seq 2 of an old actor, after a gap at seq 1), then
    // apply the old actor's seqs 1 and 2; the winner rule keeps one record of vote 5.
    let mut node = replica("us-east");
    let old = ActorId {
        node: NodeId::new("us-east").unwrap(),
        incarnation: 0,
    };
    assert_eq!(
        node.adopt(&poll(), OptionIndex(1), VoteId(5), 4),
        Ok(Some(1))
    );
    assert_eq!(node.adopt(&poll(), OptionIndex(1), VoteId(5), 4), Ok(None));
    assert_eq!(
        node.adopt(&poll(), OptionIndex(9), VoteId(6), 4),
        Err(AcceptError::UnknownOption(9))
    );
    commit(&mut node);
    assert_eq!(totals(&node), vec![0, 1]);
    let mut original = RecordBatch::new(poll(), old.clone(), 1);
    original.push(VoteId(4), OptionIndex(0), 3);
    original.push(VoteId(5), OptionIndex(1), 4);
    node.apply_records(&original).unwrap();
    assert_eq!(totals(&node), vec![1, 1]);
    assert_eq!(node.state(&poll()).unwrap().exact_totals(), vec![1, 1]);
}
