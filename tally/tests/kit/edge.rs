//! Real `tally edge` processes for system tests: started on a free port in front of some
//! nodes, their log in a file, waited for until `/readyz` says ready, SIGKILLed on drop (by
//! the kit's `process.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use super::process::{Process, free_tcp_address, tally};

/// A running `tally edge`.
pub(crate) struct EdgeProcess {
    pub(crate) process: Process,
    /// Where it serves votes.
    pub(crate) http: SocketAddr,
}

impl EdgeProcess {
    /// Starts `tally edge` named `name` in front of `upstreams` (nearest first), its log in
    /// `dir`, with further flags `extra`; does not wait for readiness.
    pub(crate) fn spawn(name: &str, upstreams: &[SocketAddr], dir: &Path, extra: &[&str]) -> Self {
        let http = free_tcp_address();
        let mut command = tally();
        command
            .arg("edge")
            .arg("--listen")
            .arg(http.to_string())
            .env("RUST_LOG", "warn,tally_edge=info")
            .env("NO_COLOR", "1");
        for upstream in upstreams {
            command.arg("--upstream").arg(format!("http://{upstream}"));
        }
        command.args(extra);
        std::fs::create_dir_all(dir).expect("cannot create the edge's directory");
        let log = dir.join(format!("{name}.log"));
        Self {
            process: Process::spawn_logged(&mut command, &format!("edge {name}"), log),
            http,
        }
    }

    /// Waits until its `/readyz` answers 200, or panics at `deadline`.
    pub(crate) fn wait_ready(&mut self, deadline: Instant) {
        self.process.expect_ready(self.http, deadline);
    }
}
