//! Replays the committed corpora of the node's fuzz targets (`fuzz/corpus/vote_body`,
//! `fuzz/corpus/wal_recovery`) through the same checks the libFuzzer targets run, on the
//! stable toolchain, and runs the same bodies as proptests (STYLE.md §12: replay a proptest
//! failure with the `PROPTEST_RNG_SEED` it prints).

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

#[path = "../../core/tests/support/corpus.rs"]
mod support;

use support::replay;

use proptest::prelude::*;

#[test]
fn every_vote_body_corpus_input_passes_the_fuzz_check() {
    // Goal: every vote and batch body the fuzzer kept parses without breaking a promise.
    replay("vote_body", 1, tally_node::http::check_vote_body);
}

#[test]
fn every_wal_recovery_corpus_input_passes_the_fuzz_check() {
    // Goal: every damaged log the fuzzer kept recovers, or is refused untouched.
    replay("wal_recovery", 1, tally_node::wal::fuzzing::check_recovery);
}

#[test]
fn the_wal_recovery_check_refuses_a_recovery_that_cuts_damage_as_a_torn_tail() {
    // Goal: the fuzz check's classification assertion can fail (issue 29). Method: run it
    // over the corpus against the planted bug's recovery, which cuts the log at the first
    // bad frame as recovery did before; some input must be refused for it.
    let refused = support::corpus("wal_recovery")
        .read_dir()
        .unwrap()
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .filter_map(|data| tally_node::wal::fuzzing::check_planted_truncating_recovery(&data).err())
        .filter(|why| why.contains("was not replayed") || why.contains("torn tail"))
        .count();
    assert!(
        refused > 0,
        "no corpus input catches damage cut as a torn tail"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_vote_body_parses_without_breaking_a_promise(
        data in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        if let Err(broken) = tally_node::http::check_vote_body(&data) {
            prop_assert!(false, "{}", broken);
        }
    }

    #[test]
    fn any_damaged_log_recovers_or_is_refused_untouched(
        data in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        if let Err(broken) = tally_node::wal::fuzzing::check_recovery(&data) {
            prop_assert!(false, "{}", broken);
        }
    }
}
