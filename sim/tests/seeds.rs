//! The simulation's own checks: a fixed range of seeds passes every invariant, and a seed
//! replays to the same trace hash. `SIM_SEEDS=N` runs more seeds (default 30, sized for CI).

#[test]
fn a_fixed_range_of_seeds_passes_every_invariant() {
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let reports = tally_sim::run_seeds(0, count).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(reports.len() as u64, count);
    // Swarm testing: the range must actually exercise the faults it claims to.
    let summary = tally_sim::summarize(&reports);
    assert!(summary["with partitions"] > 0, "{summary:?}");
    assert!(summary["with drops"] > 0, "{summary:?}");
    assert!(summary["with cross-region retries"] > 0, "{summary:?}");
    assert!(
        reports.iter().any(|r| r.messages.1 > 0),
        "some run dropped messages"
    );
    assert!(
        reports
            .iter()
            .any(|r| r.acknowledged > r.distinct_acknowledged),
        "some run acknowledged retries as duplicates"
    );
    // The peer session carried the sync: rounds merged everywhere, and in some run it met
    // (and ignored) a duplicated or abandoned round's stream.
    assert!(
        reports.iter().all(|r| r.rounds.0 > 0),
        "every run merged rounds"
    );
    assert!(
        reports.iter().any(|r| r.rounds.1 > 0),
        "some run's sessions ignored a stale stream"
    );
}

#[test]
fn the_same_seed_replays_to_the_same_trace_hash() {
    let config = tally_sim::SimConfig::new(4242);
    let first = tally_sim::run(&config).unwrap_or_else(|failure| panic!("{failure}"));
    let second = tally_sim::run(&config).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first, second);
    let other = tally_sim::run(&tally_sim::SimConfig::new(4243)).unwrap_or_else(|f| panic!("{f}"));
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "different seeds take different paths"
    );
}
