//! Property tests of the rule that keeps every vote under its option (`core/src/sync.rs`,
//! `core/src/definition.rs`): however replicas holding different definitions of one poll
//! (options reordered, added, missing) interleave votes, pulls, relays and redefinitions, no
//! replica ever counts a vote under another option's name; and once every replica is given one
//! definition that includes every option (the operator's fix), they converge to the exact
//! tally, by name.
//!
//! Method: proptest draws each replica's first definition (a permutation of 2–4 of the names
//! `a b c d`), a name per vote ID (every attempt of a vote casts that name), and a sequence of
//! operations: local votes (made durable at once or left in flight), flushes, pulls between any
//! two replicas (with a small record budget, so answers are cut short and records relay) and
//! redefinitions of a replica. After every step, every vote ID a replica holds must name, under
//! that replica's definition, the option it was cast for, and no option's displayed count may
//! exceed the records ever cast for its name. Replay a failure with `PROPTEST_RNG_SEED=N` or
//! from the committed `definitions.proptest-regressions`.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_core::{
    ActorId, LocalVote, NodeId, OptionName, PollId, PollSpec, PollWindow, Replica, UnixMillis,
    VoteId,
};

/// Option names the definitions draw from.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// Replicas in a run.
const REPLICAS: usize = 3;
/// Vote IDs a run draws from: few, so the same vote reaches several replicas.
const VOTE_IDS: u8 = 12;

fn poll() -> PollId {
    PollId::new("p").unwrap()
}

fn spec(names: &[usize]) -> PollSpec {
    let options = names
        .iter()
        .map(|&n| OptionName::new(NAMES[n]).unwrap())
        .collect();
    PollSpec::new(poll(), options, PollWindow::open_from(UnixMillis(0))).unwrap()
}

/// A definition: 2 to 4 distinct names in some order.
fn definition() -> impl Strategy<Value = Vec<usize>> {
    (2usize..=4).prop_flat_map(|count| {
        Just((0..NAMES.len()).collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(move |all| all[..count].to_vec())
    })
}

#[derive(Debug, Clone)]
enum Op {
    /// Replica votes for vote ID; durable at once or left in flight.
    Vote(usize, u8, bool),
    /// Replica makes its votes in flight durable.
    Flush(usize),
    /// First replica pulls from the second with this record budget.
    Pull(usize, usize, usize),
    /// Replica is redefined (as after a restart with another configuration).
    Redefine(usize, Vec<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..REPLICAS, 0..VOTE_IDS, any::<bool>()).prop_map(|(r, v, d)| Op::Vote(r, v, d)),
        1 => (0..REPLICAS).prop_map(Op::Flush),
        4 => (0..REPLICAS, 0..REPLICAS, 1usize..6).prop_map(|(a, b, n)| Op::Pull(a, b, n)),
        1 => (0..REPLICAS, definition()).prop_map(|(r, d)| Op::Redefine(r, d)),
    ]
}

struct Run {
    replicas: Vec<Replica>,
    /// The name each vote ID is cast for.
    cast: Vec<usize>,
    /// Records made for each name, over all replicas (an upper bound of its displayed count).
    records_for: BTreeMap<&'static str, i64>,
    /// Vote IDs some replica answered `counted` or `duplicate` for, once durable.
    acknowledged: Vec<bool>,
}

impl Run {
    fn new(definitions: &[Vec<usize>], cast: Vec<usize>) -> Self {
        let replicas = definitions
            .iter()
            .enumerate()
            .map(|(i, names)| {
                let actor = ActorId {
                    node: NodeId::new(format!("node-{i}")).unwrap(),
                    incarnation: 1,
                };
                let mut replica = Replica::new(actor, [i as u64 + 1; 4]);
                replica.upsert_poll(spec(names)).unwrap();
                replica
            })
            .collect();
        Self {
            replicas,
            cast,
            records_for: BTreeMap::new(),
            acknowledged: vec![false; usize::from(VOTE_IDS)],
        }
    }

    fn vote(&mut self, r: usize, vote: u8, durable: bool) {
        let name = NAMES[self.cast[usize::from(vote)]];
        let replica = &mut self.replicas[r];
        let Some(option) = replica.poll_spec(&poll()).unwrap().option_index(name) else {
            return; // this replica's definition lacks the name: the HTTP layer refuses it
        };
        match replica.accept_local(&poll(), option, VoteId(u128::from(vote)), UnixMillis(5)) {
            Ok(LocalVote::Counted { .. }) => {
                *self.records_for.entry(name).or_default() += 1;
            }
            Ok(LocalVote::Duplicate { .. }) | Err(_) => {}
        }
        if durable {
            self.flush(r);
        }
    }

    fn flush(&mut self, r: usize) {
        let replica = &mut self.replicas[r];
        for batch in replica.take_unlogged() {
            replica.mark_durable(batch.poll(), batch.last_seq());
            for record in batch.iter() {
                self.acknowledged[record.vote_id.0 as usize] = true;
            }
        }
    }

    fn pull(&mut self, puller: usize, answerer: usize, budget: usize) {
        if puller == answerer {
            return;
        }
        let request = self.replicas[puller].pull_request();
        let answer = self.replicas[answerer].answer_pull(&request, budget);
        let applied = self.replicas[puller].apply_answer(answer);
        assert!(applied.refused.is_empty(), "{:?}", applied.refused);
    }

    /// Every held vote ID names the option it was cast for; no option shows more votes than
    /// records were ever made for its name.
    fn check(&self) -> Result<(), String> {
        for (r, replica) in self.replicas.iter().enumerate() {
            let spec = replica.poll_spec(&poll()).unwrap();
            let state = replica.state(&poll()).unwrap();
            for vote in 0..VOTE_IDS {
                let Some(option) = state.winner_option(VoteId(u128::from(vote))) else {
                    continue;
                };
                let held = spec.options()[option.get()].as_str();
                let cast = NAMES[self.cast[usize::from(vote)]];
                if held != cast {
                    return Err(format!(
                        "replica {r} holds vote {vote} under {held:?}, cast for {cast:?}"
                    ));
                }
            }
            for (option, shown) in spec.options().iter().zip(state.totals(None)) {
                let bound = self.records_for.get(option.as_str()).copied().unwrap_or(0);
                if shown > bound {
                    return Err(format!(
                        "replica {r} shows {shown} votes for {option}, but only {bound} records \
                         were made for it"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The operator's fix: every replica redefined to one definition that holds every name
    /// (in a fixed order), its votes in flight made durable, then pulls until nothing changes.
    fn heal(&mut self) {
        for r in 0..REPLICAS {
            self.flush(r);
            self.replicas[r].redefine_poll(spec(&[0, 1, 2, 3])).unwrap();
        }
        for _ in 0..4 * REPLICAS {
            for a in 0..REPLICAS {
                for b in 0..REPLICAS {
                    self.pull(a, b, usize::MAX);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_interleaving_of_definitions_and_records_counts_a_vote_under_another_option(
        definitions in prop::collection::vec(definition(), REPLICAS),
        cast in prop::collection::vec(0..NAMES.len(), usize::from(VOTE_IDS)),
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let mut run = Run::new(&definitions, cast);
        for op in ops {
            match op {
                Op::Vote(r, vote, durable) => run.vote(r, vote, durable),
                Op::Flush(r) => run.flush(r),
                Op::Pull(a, b, budget) => run.pull(a, b, budget),
                Op::Redefine(r, names) => {
                    // Dropping an option is refused and changes nothing; that is allowed.
                    let _ = run.replicas[r].redefine_poll(spec(&names));
                }
            }
            if let Err(broken) = run.check() {
                prop_assert!(false, "{}", broken);
            }
        }
        run.heal();
        if let Err(broken) = run.check() {
            prop_assert!(false, "after healing: {}", broken);
        }
        // Healed: one definition everywhere, every acknowledged vote everywhere, exact tallies.
        let tallies: Vec<Vec<i64>> = run
            .replicas
            .iter()
            .map(|r| r.state(&poll()).unwrap().exact_totals())
            .collect();
        for (r, replica) in run.replicas.iter().enumerate() {
            let state = replica.state(&poll()).unwrap();
            prop_assert_eq!(replica.standing(&poll()).unwrap().lost(), false);
            prop_assert_eq!(&tallies[r], &tallies[0]);
            prop_assert_eq!(state.totals(None), state.exact_totals());
            for vote in 0..VOTE_IDS {
                if run.acknowledged[usize::from(vote)] {
                    prop_assert!(state.contains(VoteId(u128::from(vote))), "replica {} lacks vote {}", r, vote);
                }
            }
        }
    }
}

#[test]
fn the_issue_scenario_never_shows_a_green_vote_as_blue_and_refuses_at_the_loser() {
    // Goal: issue 31's first scenario in the core: two replicas, [green, blue] and
    // [blue, green], ten green votes at each, then sync both ways. Method: before the fix each
    // shows only its own ten green votes and exactly one refuses the poll; after the loser is
    // redefined like the winner, both show twenty green votes and none blue.
    let names = |list: [&str; 2]| list.map(|n| OptionName::new(n).unwrap()).to_vec();
    let window = PollWindow::open_from(UnixMillis(0));
    let green_first = PollSpec::new(poll(), names(["green", "blue"]), window).unwrap();
    let blue_first = PollSpec::new(poll(), names(["blue", "green"]), window).unwrap();
    let mut replicas: Vec<Replica> = ["a", "b"]
        .iter()
        .zip([&green_first, &blue_first])
        .enumerate()
        .map(|(i, (node, spec))| {
            let actor = ActorId {
                node: NodeId::new(*node).unwrap(),
                incarnation: 1,
            };
            let mut replica = Replica::new(actor, [i as u64 + 7; 4]);
            replica.upsert_poll(spec.clone()).unwrap();
            replica
        })
        .collect();
    for (r, replica) in replicas.iter_mut().enumerate() {
        let green = replica
            .poll_spec(&poll())
            .unwrap()
            .option_index("green")
            .unwrap();
        for v in 0..10u128 {
            replica
                .accept_local(&poll(), green, VoteId(r as u128 * 100 + v), UnixMillis(1))
                .unwrap();
        }
        for batch in replica.take_unlogged() {
            replica.mark_durable(batch.poll(), batch.last_seq());
        }
    }
    let sync = |replicas: &mut Vec<Replica>| {
        for (a, b) in [(0, 1), (1, 0), (0, 1)] {
            let request = replicas[a].pull_request();
            let answer = replicas[b].answer_pull(&request, 1_000);
            replicas[a].apply_answer(answer);
        }
    };
    sync(&mut replicas);
    let by_name = |replica: &Replica| -> BTreeMap<String, i64> {
        let spec = replica.poll_spec(&poll()).unwrap();
        let totals = replica.state(&poll()).unwrap().totals(None);
        spec.options()
            .iter()
            .map(|o| o.to_string())
            .zip(totals)
            .collect()
    };
    for replica in &replicas {
        assert_eq!(by_name(replica)["green"], 10, "only its own green votes");
        assert_eq!(by_name(replica)["blue"], 0);
    }
    let lost: Vec<bool> = replicas
        .iter()
        .map(|r| r.standing(&poll()).unwrap().lost())
        .collect();
    assert_eq!(lost.iter().filter(|l| **l).count(), 1, "{lost:?}");
    let loser = lost.iter().position(|l| *l).unwrap();
    let winner_spec = replicas[1 - loser].poll_spec(&poll()).unwrap().clone();
    assert!(
        replicas[loser]
            .accept_local(
                &poll(),
                tally_core::OptionIndex(0),
                VoteId(999),
                UnixMillis(2)
            )
            .is_err(),
        "the loser refuses votes"
    );
    replicas[loser].redefine_poll(winner_spec).unwrap();
    sync(&mut replicas);
    for replica in &replicas {
        assert_eq!(by_name(replica)["green"], 20);
        assert_eq!(by_name(replica)["blue"], 0);
        assert!(!replica.standing(&poll()).unwrap().lost());
    }
}
