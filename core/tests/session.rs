//! Property tests of the peer session (`tally_core::session`): replicas that sync only through
//! sessions converge, whatever the network does to their streams.
//!
//! Method: two or three replicas take generated votes and commits, and pull from each other
//! through `Puller`/`Answerer` pairs opened by a real hello; the generated schedule delivers
//! any in-flight stream (a round's request or answer), drops it or duplicates it, in any
//! order. Then the network turns reliable and every pair pulls until nothing changes; every
//! replica must then hold every committed vote, the same records and the same totals, with
//! its fast path equal to the exact tally. Failing cases are saved under
//! `proptest-regressions/` and replay on the next run.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

use std::time::Duration;

use proptest::prelude::*;
use tally_core::session::{Answerer, Handshake, Puller, RoundApplied, Transmit};
use tally_core::wire::{Hello, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use tally_core::{
    ActorId, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow, Replica, UnixMillis,
    VersionVector, VoteId, VoteIdKey,
};

/// Records per round: small, so answers are cut short and rounds follow at once.
const RECORDS_PER_ROUND: usize = 8;

/// Reliable pull rounds after the faults before convergence is declared failed.
const HEAL_ROUNDS_MAX: usize = 200;

fn poll() -> PollId {
    PollId::new("superbowl").unwrap()
}

fn replica(index: usize) -> Replica {
    let actor = ActorId {
        node: NodeId::new(format!("node-{index}")).unwrap(),
        incarnation: 1,
    };
    let mut replica = Replica::new(actor, [index as u64; 4]);
    let names = ["green", "blue"].map(|n| OptionName::new(n).unwrap());
    let spec = PollSpec::new(poll(), names.to_vec(), PollWindow::open_from(UnixMillis(0)));
    replica.upsert_poll(spec.unwrap()).unwrap();
    replica
}

/// One stream in flight: a round's request (to the answerer) or its answer (to the puller).
#[derive(Debug, Clone)]
struct Stream {
    from: usize,
    to: usize,
    answer: bool,
    round: u64,
    frames: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Step {
    Vote { at: usize, id: u16, option: u8 },
    Commit { at: usize },
    Pull { puller: usize, from: usize },
    Deliver { pick: usize },
    Drop { pick: usize },
    Duplicate { pick: usize },
}

fn step(replicas: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..replicas, 0..64u16, 0..2u8).prop_map(|(at, id, option)| Step::Vote { at, id, option }),
        1 => (0..replicas).prop_map(|at| Step::Commit { at }),
        2 => (0..replicas, 0..replicas).prop_map(|(puller, from)| Step::Pull { puller, from }),
        3 => any::<usize>().prop_map(|pick| Step::Deliver { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Drop { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Duplicate { pick }),
    ]
}

struct Link {
    puller: Puller,
    answerer: Answerer,
}

struct Cluster {
    replicas: Vec<Replica>,
    /// `links[a][b]`: `a`'s session with `b`.
    links: Vec<Vec<Option<Link>>>,
    network: Vec<Stream>,
    uncommitted: Vec<Vec<VoteId>>,
    committed: Vec<VoteId>,
    now: u64,
}

impl Cluster {
    fn new(count: usize) -> Self {
        Self::with_versions(&vec![PROTOCOL_VERSION; count])
    }

    /// Replicas whose hellos claim `versions` (one each): a rolling upgrade's mix.
    fn with_versions(versions: &[u16]) -> Self {
        let count = versions.len();
        let replicas: Vec<Replica> = (0..count).map(replica).collect();
        let key = VoteIdKey::new([1; 32]);
        let handshake = |at: usize| {
            let hello = Hello {
                cluster_id: "test".to_owned(),
                protocol_version: versions[at],
                actor: replicas[at].actor().clone(),
                vote_id_key_proof: key.proof(),
            };
            Handshake::new(hello, key.clone())
        };
        let links = (0..count)
            .map(|a| {
                (0..count)
                    .map(|b| {
                        (a != b).then(|| {
                            let theirs = handshake(b).hello_frame();
                            let established = handshake(a)
                                .handle_hello(Some(&theirs), None, |_| Ok(()))
                                .unwrap();
                            let negotiated = versions[a].min(versions[b]);
                            assert_eq!(established.protocol_version, negotiated);
                            let (puller, answerer) = established.split(RECORDS_PER_ROUND);
                            Link { puller, answerer }
                        })
                    })
                    .collect()
            })
            .collect();
        Self {
            replicas,
            links,
            network: Vec::new(),
            uncommitted: vec![Vec::new(); count],
            committed: Vec::new(),
            now: 0,
        }
    }

    fn link(&mut self, at: usize, peer: usize) -> &mut Link {
        self.links[at][peer].as_mut().unwrap()
    }

    fn flush(&mut self, from: usize, to: usize, answer: bool) {
        let mut frames = Vec::new();
        loop {
            let link = self.link(from, to);
            let transmit = if answer {
                link.answerer.poll_transmit()
            } else {
                link.puller.poll_transmit()
            };
            match transmit {
                None => return,
                Some(Transmit::Frame { frame, .. }) => frames.push(frame),
                Some(Transmit::Finish { round }) => self.network.push(Stream {
                    from,
                    to,
                    answer,
                    round,
                    frames: std::mem::take(&mut frames),
                }),
            }
        }
    }

    fn pull(&mut self, puller: usize, from: usize) {
        if puller == from {
            return;
        }
        let (request, now) = (self.replicas[puller].pull_request(), self.now);
        let link = self.link(puller, from);
        link.puller.start_round(request, Duration::from_millis(now));
        link.puller
            .stamp_request(UnixMillis(now), now, Duration::from_millis(now));
        self.flush(puller, from, false);
    }

    fn deliver(&mut self, stream: Stream) {
        let (at, peer, round) = (stream.to, stream.from, stream.round);
        self.now += 1;
        let now = Duration::from_millis(self.now);
        if !stream.answer {
            let link = self.link(at, peer);
            for frame in &stream.frames {
                link.answerer.handle_request_frame(round, frame).unwrap();
            }
            let Some(pull) = link.answerer.handle_request_end(round) else {
                return;
            };
            if let Some(reading) = pull.clock {
                link.answerer
                    .send_clock(round, reading, UnixMillis(now.as_millis() as u64), 0);
            }
            let answer = self.replicas[at].answer_pull(&pull.request, RECORDS_PER_ROUND);
            self.link(at, peer).answerer.send_answer(round, answer);
            self.flush(at, peer, true);
            return;
        }
        let link = self.link(at, peer);
        for frame in &stream.frames {
            link.puller.handle_answer_frame(round, frame, now).unwrap();
        }
        let Some(answer) = link.puller.handle_answer_end(round) else {
            return;
        };
        let applied = self.replicas[at].apply_answer(answer);
        assert!(applied.refused.is_empty(), "{:?}", applied.refused);
        let outcome = self
            .link(at, peer)
            .puller
            .finish_round(RoundApplied {
                records_added: applied.records_added,
                shared: &applied.shared,
                records_deferred: 0,
            })
            .unwrap()
            .unwrap();
        let sample = outcome.clock.unwrap();
        assert!(sample.round_trip_ms <= self.now);
        if outcome.ask_again_at_once {
            self.pull(at, peer);
        }
    }

    fn run(&mut self, step: Step) {
        let count = self.replicas.len();
        match step {
            Step::Vote { at, id, option } => {
                let vote_id = VoteId(u128::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let at_time = UnixMillis(self.now);
                let vote =
                    self.replicas[at].accept_local(&poll(), OptionIndex(option), vote_id, at_time);
                if vote.is_ok() {
                    // Acknowledged once the replica's next commit covers it.
                    self.uncommitted[at].push(vote_id);
                }
            }
            Step::Commit { at } => self.commit(at),
            Step::Pull { puller, from } => self.pull(puller % count, from % count),
            Step::Deliver { .. } | Step::Drop { .. } | Step::Duplicate { .. }
                if self.network.is_empty() => {}
            Step::Deliver { pick } => {
                let stream = self.network.remove(pick % self.network.len());
                self.deliver(stream);
            }
            Step::Drop { pick } => {
                self.network.remove(pick % self.network.len());
            }
            Step::Duplicate { pick } => {
                let stream = self.network[pick % self.network.len()].clone();
                self.network.push(stream);
            }
        }
    }

    fn commit(&mut self, at: usize) {
        for batch in self.replicas[at].take_unlogged() {
            self.replicas[at].mark_durable(batch.poll(), batch.last_seq());
        }
        let answered = std::mem::take(&mut self.uncommitted[at]);
        self.committed.extend(answered);
    }

    /// Reliable rounds between every pair until every replica holds the same.
    fn heal(&mut self) -> usize {
        self.network.clear();
        for at in 0..self.replicas.len() {
            self.commit(at);
        }
        for round in 1..=HEAL_ROUNDS_MAX {
            let count = self.replicas.len();
            for puller in 0..count {
                for from in 0..count {
                    self.pull(puller, from);
                }
            }
            while !self.network.is_empty() {
                let stream = self.network.remove(0);
                self.deliver(stream);
            }
            if self.converged() {
                return round;
            }
        }
        panic!("no convergence after {HEAL_ROUNDS_MAX} reliable rounds");
    }

    fn vector(&self, at: usize) -> VersionVector {
        self.replicas[at].version_vector(&poll()).unwrap()
    }

    fn totals(&self, at: usize) -> Vec<i64> {
        self.replicas[at].state(&poll()).unwrap().totals(None)
    }

    fn converged(&self) -> bool {
        (1..self.replicas.len())
            .all(|at| self.vector(at) == self.vector(0) && self.totals(at) == self.totals(0))
    }

    /// DESIGN.md §2 after convergence: every acknowledged vote everywhere, fast path equal to
    /// the exact tally, totals equal to the distinct vote IDs held.
    fn check(&self) {
        for (at, replica) in self.replicas.iter().enumerate() {
            let state = replica.state(&poll()).unwrap();
            for vote_id in &self.committed {
                assert!(state.contains(*vote_id), "replica {at} lacks {vote_id}");
            }
            let fast = state.totals(None);
            assert_eq!(fast, state.exact_totals(), "replica {at}");
            assert_eq!(fast.iter().sum::<i64>(), state.distinct_vote_ids() as i64);
        }
    }
}

/// Index reservation replica 0 makes before the schedule (protocol 3 carries it).
const RESERVED: usize = 50_000;

/// Each replica's protocol version (any this build speaks: a rolling upgrade's mix), and the
/// steps.
fn schedule() -> impl Strategy<Value = (Vec<u16>, Vec<Step>)> {
    (2..=3usize).prop_flat_map(|count| {
        (
            prop::collection::vec(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION, count),
            prop::collection::vec(step(count), 1..300),
        )
    })
}

/// The reservation each replica must hold after healing: replica 0's own, carried to every
/// replica whose session with it speaks protocol 3, and to none other.
fn check_reservations(cluster: &Cluster, versions: &[u16]) {
    for (at, replica) in cluster.replicas.iter().enumerate() {
        let reserved = replica.state(&poll()).unwrap().reserved_vote_ids();
        let carried = at == 0 || versions[0].min(versions[at]) >= 3;
        let expected = if carried { RESERVED as u64 } else { 0 };
        assert_eq!(reserved, expected, "replica {at} of versions {versions:?}");
        if carried {
            assert!(replica.state(&poll()).unwrap().vote_id_capacity() >= RESERVED);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sessions_converge_whatever_the_network_does_to_their_streams((versions, steps) in schedule()) {
        // Goal: the session's round bookkeeping (stale, duplicate, abandoned rounds) never
        // loses a record or wedges a pair, between replicas of any mix of the protocol
        // versions this build speaks (a rolling upgrade), and an index reservation travels
        // exactly where the negotiated version carries it. Method: a generated schedule of
        // votes, commits, pulls and deliveries, drops and duplicates of any in-flight stream,
        // replica 0 holding a reservation; then reliable rounds until every replica holds the
        // same, DESIGN.md §2's checks, and each replica's reservation.
        let mut cluster = Cluster::with_versions(&versions);
        cluster.replicas[0].reserve_vote_ids(&poll(), RESERVED).unwrap();
        for step in steps {
            cluster.run(step);
        }
        cluster.heal();
        cluster.check();
        check_reservations(&cluster, &versions);
    }
}

#[test]
fn a_lost_answer_costs_a_round_and_a_late_one_is_ignored() {
    // Goal: a puller gives up a round only by starting another, and the old round's answer,
    // arriving late, is not merged under the new one. Method: two rounds from one pair, the
    // first answer delivered after the second round started.
    let mut cluster = Cluster::new(2);
    for id in 0..20 {
        cluster.run(Step::Vote {
            at: 1,
            id,
            option: 0,
        });
    }
    cluster.run(Step::Commit { at: 1 });
    cluster.pull(0, 1);
    let first_request = cluster.network.remove(0);
    cluster.deliver(first_request);
    let late_answer = cluster.network.remove(0);
    cluster.pull(0, 1);
    let before = cluster.vector(0);
    cluster.deliver(late_answer);
    assert_eq!(cluster.vector(0), before, "the late answer was ignored");
    let rounds = cluster.heal();
    assert!(rounds >= 1);
    cluster.check();
    assert_eq!(cluster.vector(0), cluster.vector(1));
}

#[test]
fn a_node_of_the_previous_protocol_keeps_syncing_without_the_reservation() {
    // Goal: issue 25's rolling upgrade: a replica speaking the previous protocol version
    // (2) and two of this one (3) exchange every vote, and the reservation reaches the
    // version-3 replica only. Method: votes at each, reliable rounds, the checks.
    let versions = [PROTOCOL_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN];
    assert_eq!((PROTOCOL_VERSION_MIN, PROTOCOL_VERSION), (2, 3));
    let mut cluster = Cluster::with_versions(&versions);
    cluster.replicas[0]
        .reserve_vote_ids(&poll(), RESERVED)
        .unwrap();
    for id in 0..30u16 {
        let at = usize::from(id % 3);
        cluster.run(Step::Vote {
            at,
            id,
            option: (id % 2) as u8,
        });
    }
    cluster.heal();
    cluster.check();
    assert_eq!(cluster.committed.len(), 30);
    check_reservations(&cluster, &versions);
}
