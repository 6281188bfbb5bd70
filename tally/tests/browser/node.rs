//! The real `tally` binary on a free local port (started by the kit's `process.rs`), and the
//! tiny HTTP/1.1 client the browser test casts votes with (one request per connection,
//! `Connection: close`).
//!
//! Dropping a [`Node`] kills the process; if the test is failing, the node's log is printed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::process::{Process, free_tcp_address, tally};

/// How long the node gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect, read and write timeout of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts retried when the port picked turned out to be taken meanwhile.
const START_ATTEMPTS_MAX: u32 = 3;

/// A running `tally run --memory-only`.
pub(crate) struct Node {
    process: Process,
    address: SocketAddr,
}

impl Node {
    /// Starts the node with the given SSE tick and waits until `/readyz` answers 200.
    pub(crate) fn start(scratch: &Path, sse_tick_ms: u64) -> Node {
        Self::start_with(scratch, sse_tick_ms, &[])
    }

    /// [`Node::start`] with further `tally run` arguments.
    pub(crate) fn start_with(scratch: &Path, sse_tick_ms: u64, extra: &[String]) -> Node {
        for attempt in 1..=START_ATTEMPTS_MAX {
            let address = free_tcp_address();
            let mut command = tally();
            command
                .args(["run", "--memory-only", "--listen", &address.to_string()])
                .args(["--sse-tick-ms", &sse_tick_ms.to_string()])
                .args(extra)
                .env_remove("TALLY_CONFIG")
                .env("RUST_LOG", "info")
                // Nothing of the node's lands in the repository, whatever it writes.
                .current_dir(scratch);
            let log = scratch.join(format!("tally-{attempt}.log"));
            let mut process = Process::spawn_logged(&mut command, "tally", log);
            if process
                .wait_ready(address, Instant::now() + READY_TIMEOUT)
                .is_ok()
            {
                return Node { process, address };
            }
            // Exited before serving: retry only if another process took the port meanwhile.
            assert!(
                process.log().contains("cannot listen"),
                "tally exited at start-up{}",
                process.log_tail()
            );
        }
        panic!("tally could not get a free port in {START_ATTEMPTS_MAX} attempts");
    }

    /// Where it serves HTTP.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends the process `signal` (`STOP`, `CONT`) with kill(1).
    pub(crate) fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// `http://ADDRESS{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Casts one vote; panics unless it is counted. Returns the poll second it was stamped with.
    pub(crate) fn vote(&self, poll: &str, option: &str, vote_id: &str) -> u64 {
        let body = json!({ "option": option, "vote_id": vote_id }).to_string();
        let path = format!("/v1/polls/{poll}/votes");
        let (status, answer) = request(self.address, "POST", &path, Some(&body))
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}{}", self.process.log_tail()));
        let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| {
            panic!("POST {path} answered {status} with non-JSON ({e}): {answer}")
        });
        assert!(
            status == 200 && answer["status"] == "counted",
            "POST {path} {body} answered {status}: {answer}"
        );
        answer["receipt"]["second"]
            .as_u64()
            .unwrap_or_else(|| panic!("no receipt.second in {answer}"))
    }

    /// `GET path` as JSON; panics unless 200.
    pub(crate) fn get_json(&self, path: &str) -> Value {
        let (status, body) = request(self.address, "GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}{}", self.process.log_tail()));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

/// One HTTP/1.1 request; returns the status and the body (the node sends JSON with a
/// `Content-Length`, so the body is everything after the head).
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let body = body.unwrap_or("");
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{content_type}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, response.clone());
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    Ok((status, body.to_owned()))
}
