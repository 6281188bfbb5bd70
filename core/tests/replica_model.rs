//! The replica fuzz body (`tally_core::fuzzing::check_replica_ops`) as a proptest on stable:
//! random operation sequences on two replicas, checked step by step against the reference
//! model. Replay a failure with `PROPTEST_RNG_SEED=N` (proptest prints it) or from the
//! committed `proptest-regressions/`.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replicas_driven_by_any_operations_agree_with_the_reference_model(
        ops in proptest::collection::vec(any::<u8>(), 0..1024)
    ) {
        // Goal: the same check the libFuzzer target runs, on generated inputs, so CI covers it
        // without nightly tooling.
        if let Err(broken) = tally_core::fuzzing::check_replica_ops(&ops) {
            prop_assert!(false, "{}", broken);
        }
    }
}

#[test]
fn a_scripted_history_with_duplicates_relays_and_counter_merges_converges() {
    // Goal: one hand-written input that reaches every operation kind, so a model bug shows up
    // even if the generator drifts. Method: spell the operations as bytes.
    let ops = [
        6, 30, // time passes
        0, 0, 1, 0x80, 1, 1, // vote 1 on A (option 0) and on B (option 1)
        2, 7, 0x82, 7, // both durable
        3, 0, 2, 1, 3, 1, 0x12, 1, // two remote records for vote 1
        4, 0, 0, 0x84, 1, 0, // deliver remote 0 to A, remote 1 to B
        0x45, 5, // sync A -> B with counters, B -> A without
        0, 2, 9, 7, // an unlogged vote, then a check
    ];
    tally_core::fuzzing::check_replica_ops(&ops).unwrap_or_else(|broken| panic!("{broken}"));
}
