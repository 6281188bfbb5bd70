//! `tally load` as a test's voting client: postcard batches of 1,000 against one node, and
//! what its JSON report says was acknowledged.

use std::net::SocketAddr;

use super::process;

/// What `tally load` reported.
pub(crate) struct LoadReport {
    pub(crate) counted: u64,
    pub(crate) refused: u64,
    pub(crate) unknown: u64,
    pub(crate) status_503: u64,
    pub(crate) check_passed: Option<bool>,
}

/// Runs `tally load` against `target` with postcard batches of 1,000 and returns its report.
pub(crate) fn load(target: SocketAddr, count: u64, check: &str, seed: u64) -> LoadReport {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = process::tally()
        .args(["load", "--target", &format!("http://{target}")])
        .args([
            "--count",
            &count.to_string(),
            "--batch-size",
            "1000",
            "--binary",
        ])
        .args(["--connections", "4", "--no-progress", "--check", check])
        .args(["--timeout-ms", "5000", "--seed", &seed.to_string()])
        .arg("--json-report")
        .arg(&report)
        .output()
        .expect("cannot run tally load");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|_| {
        panic!(
            "tally load wrote no report: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let outcome = |name: &str| json["outcomes"][name].as_u64().unwrap();
    LoadReport {
        counted: outcome("counted"),
        refused: outcome("refused"),
        unknown: outcome("unknown"),
        status_503: json["errors"]["503"].as_u64().unwrap_or(0),
        check_passed: json["check_passed"].as_bool(),
    }
}
