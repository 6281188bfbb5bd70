//! The `tally-sim` command line refuses what it cannot honour before running anything.

use std::process::Command;

fn tally_sim(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tally-sim"))
        .args(args)
        .env_remove("SIM_SEED")
        .env("TALLY_HUGE_PAGES", "0")
        .output()
        .expect("tally-sim runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_chart_needs_one_seed_a_writable_directory_and_the_superbowl_scenario() {
    // Goal: `--chart` is never silently ignored or found unwritable after a long run.
    // Method: ask for a chart with a range of seeds, into a missing directory, and of the
    // replicas scenario; each exits with an error naming the problem (and runs no seed).
    let (code, stderr) = tally_sim(&["--seeds", "2", "--chart", "x.svg"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--seed"), "{stderr}");

    let missing = "/nonexistent-tally-sim-dir/chart.svg";
    let (code, stderr) = tally_sim(&["--seed", "1", "--chart", missing]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no such directory"), "{stderr}");

    let (code, stderr) = tally_sim(&["--scenario", "replicas", "--seed", "1", "--chart", "x.svg"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("replicas"), "{stderr}");
}
