//! One `tally run` process per test, on a free 127.0.0.1 port, killed when the test ends however
//! it ends (shared by the client, crash and hostile tests).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http;

/// A running node process.
pub(crate) struct Node {
    /// The process (tests may kill it themselves, or read its pid).
    pub(crate) child: Child,
    /// Where it serves HTTP.
    pub(crate) address: SocketAddr,
    /// A directory that lives as long as the node (its config and data).
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A 127.0.0.1 address nothing listens on right now.
pub(crate) fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free port on 127.0.0.1")
}

impl Node {
    /// Takes charge of a process started by the test itself (killed when dropped).
    pub(crate) fn adopt(child: Child, address: SocketAddr) -> Node {
        Node {
            child,
            address,
            _dir: None,
        }
    }

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
        let child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the tally binary");
        let mut node = Node::adopt(child, address);
        node._dir = dir;
        http::wait_ready(address, ready_wait);
        node
    }
}
