//! One `tally run` process per test, on a free 127.0.0.1 port, killed when the test ends however
//! it ends (shared by the client, crash and hostile tests; started by the kit's `process.rs`).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::http;
use super::process::{Process, tally};

/// A running node process.
pub(crate) struct Node {
    /// The process (tests may kill it themselves, or read its pid; others only keep it alive).
    #[allow(dead_code)]
    pub(crate) process: Process,
    /// Where it serves HTTP.
    pub(crate) address: SocketAddr,
    /// A directory that lives as long as the node (its config and data).
    _dir: Option<tempfile::TempDir>,
}

/// The total the node at `address` shows for the default poll now (panics, with the node's
/// answer, if it does not answer 200).
pub(crate) fn total(address: SocketAddr) -> i64 {
    let results = http::get_json(address, "/v1/polls/superbowl/results")
        .unwrap_or_else(|error| panic!("reading the results: {error}"));
    results["total"]
        .as_i64()
        .unwrap_or_else(|| panic!("results without a total: {results}"))
}

impl Node {
    /// Runs `tally` with `args` (which must make it listen on `address`), keeping `dir`
    /// alive as long as the node, and waits at most `ready_wait` for `/readyz`.
    pub(crate) fn start<I, S>(
        args: I,
        address: SocketAddr,
        dir: Option<tempfile::TempDir>,
        ready_wait: Duration,
    ) -> Node
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = tally();
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut process = Process::spawn(&mut command, &format!("node on {address}"));
        process.expect_ready(address, Instant::now() + ready_wait);
        Node {
            process,
            address,
            _dir: dir,
        }
    }
}
