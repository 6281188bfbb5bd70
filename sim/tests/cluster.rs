//! The cluster simulation's own checks: the real nodes under turmoil pass every invariant on
//! a fixed range of seeds; a seed replays to the same trace hash; and the checker catches
//! each planted bug within a bounded number of seeds.
//!
//! `SIM_CLUSTER_SEEDS=N` runs more seeds in the range test (default 12, sized for CI: each
//! seed simulates a minute of five regions in a few seconds of the test build).

use tally_node::config::PlantedBug;
use tally_sim::cluster::{ClusterConfig, FaultKind, run_cluster};

/// Votes per seed in these tests (the full scenario is 30 million: see BENCHMARKS.md).
const VOTES: u64 = 5_000;

/// Seeds a planted bug may take to be found.
const BUG_SEEDS_MAX: u64 = 6;

fn config(seed: u64) -> ClusterConfig {
    let mut config = ClusterConfig::superbowl(seed, 0.0);
    config.votes = VOTES;
    config
}

#[test]
fn a_fixed_range_of_seeds_passes_every_check() {
    let count: u64 = std::env::var("SIM_CLUSTER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut kinds = std::collections::BTreeSet::new();
    let mut unknown = 0;
    let mut retries = 0;
    for seed in 0..count {
        let report = run_cluster(&config(seed)).unwrap_or_else(|failure| panic!("{failure}"));
        let checked = &report.checked;
        assert_eq!(checked.invoked, VOTES, "every vote was attempted");
        assert_eq!(
            checked.totals.iter().sum::<i64>(),
            VOTES as i64,
            "after the probe every vote ID counts exactly once"
        );
        assert!(checked.reads > 0, "reads were checked");
        kinds.extend(report.fault_kinds());
        unknown += report.single_calls.unknown + report.batch_calls.unknown;
        retries += report.cross_region_retries;
    }
    // Swarm testing: the range must exercise what it claims to (the sample is a function of
    // the seed, so this is fixed for the default range).
    if count >= 4 {
        for kind in [
            FaultKind::Partition,
            FaultKind::Crash,
            FaultKind::DiskLoss,
            FaultKind::LongPartition,
            FaultKind::LostAnswers,
            FaultKind::UnreservedIndex,
        ] {
            assert!(kinds.contains(&kind), "no seed exercised {kind}: {kinds:?}");
        }
        assert!(unknown > 0, "some calls ended with an unknown outcome");
        assert!(retries > 0, "some votes were retried at another region");
    }
}

#[test]
fn the_same_seed_replays_to_the_same_trace_hash() {
    let first = run_cluster(&config(7)).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run_cluster(&config(7)).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.checked, second.checked);
    assert_eq!(first.single_calls, second.single_calls);
    let other = run_cluster(&config(8)).unwrap_or_else(|failure| panic!("{failure}"));
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "different seeds take different paths"
    );
}

/// Runs seeds with `bug` planted (and `force` enabled) until the checker fails one; returns
/// the failure's text.
fn caught(bug: PlantedBug, force: FaultKind) -> String {
    for seed in 0..BUG_SEEDS_MAX {
        let mut config = config(seed);
        config.planted_bug = Some(bug);
        config.force_faults = vec![force];
        if let Err(failure) = run_cluster(&config) {
            assert!(
                !failure.what.starts_with("the simulation stopped"),
                "the run broke instead of a check failing: {failure}"
            );
            assert!(
                failure.replay.contains(&format!("SIM_SEED={seed}")),
                "{}",
                failure.replay
            );
            return failure.what;
        }
    }
    panic!("{bug:?} went unnoticed for {BUG_SEEDS_MAX} seeds");
}

#[test]
fn the_checker_catches_a_node_that_does_not_dedupe_records_from_peers() {
    let what = caught(PlantedBug::KeepDuplicates, FaultKind::LostAnswers);
    assert!(
        what.contains("reads within bounds")
            || what.contains("exactly once")
            || what.contains("convergence")
            || what.contains("fast path"),
        "{what}"
    );
}

#[test]
fn the_checker_catches_a_node_that_acknowledges_before_fsync() {
    let what = caught(PlantedBug::AckBeforeFsync, FaultKind::Crash);
    assert!(
        what.contains("no acknowledged vote lost") || what.contains("reads within bounds"),
        "{what}"
    );
}

#[test]
fn the_checker_catches_a_node_that_reuses_its_actor_after_losing_its_disk() {
    let what = caught(PlantedBug::ReuseActorAfterDiskLoss, FaultKind::DiskLoss);
    assert!(
        what.contains("convergence")
            || what.contains("no acknowledged vote lost")
            || what.contains("fast path"),
        "{what}"
    );
}

#[test]
fn a_second_process_on_a_serving_nodes_disk_is_refused_and_changes_nothing() {
    // Goal: one process per data directory holds in the simulation too (issue 30). Method:
    // force the fault on two seeds; each attempt on a serving node must have been refused with
    // the directory lock (the run fails otherwise), at least one attempt must have struck a
    // serving node, and every check of the run must still pass.
    let mut refused = 0;
    for seed in 0..2 {
        let mut config = config(seed);
        config.force_faults = vec![FaultKind::SecondProcess];
        let report = run_cluster(&config).unwrap_or_else(|failure| panic!("{failure}"));
        assert!(report.fault_kinds().contains(&FaultKind::SecondProcess));
        refused += report.second_processes_refused;
    }
    assert!(refused > 0, "no second process met a serving node");
}

#[test]
fn a_node_whose_index_grows_during_the_burst_changes_nothing_observable() {
    // Goal: the dedupe index grows a bounded step per insert (issue 25), and growing changes
    // no answer: a seed run with some regions' indexes unreserved, so they grow through every
    // doubling during the burst and again while crashed nodes replay their logs, passes
    // every check with the same trace hash as when every index is reserved. Method: seed 0
    // (which does not draw the kind itself, so forcing it only adds draws after every other
    // fault) with crashes forced, once as drawn and once with unreserved indexes forced.
    let mut reserved = config(0);
    reserved.force_faults = vec![FaultKind::Crash];
    let mut unreserved = reserved.clone();
    unreserved.force_faults.push(FaultKind::UnreservedIndex);
    let first = run_cluster(&reserved).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run_cluster(&unreserved).unwrap_or_else(|failure| panic!("{failure}"));
    assert!(!first.fault_kinds().contains(&FaultKind::UnreservedIndex));
    assert!(second.fault_kinds().contains(&FaultKind::UnreservedIndex));
    assert!(second.fault_kinds().contains(&FaultKind::Crash));
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.checked, second.checked);
}
