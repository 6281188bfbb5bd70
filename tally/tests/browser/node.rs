//! The real `tally` binary on a free local port, and the tiny HTTP/1.1 client the browser test
//! casts votes with (one request per connection, `Connection: close`).
//!
//! Dropping a [`Node`] kills the process; if the test is failing, the node's log is printed.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long the node gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect, read and write timeout of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts retried when the port picked turned out to be taken meanwhile.
const START_ATTEMPTS_MAX: u32 = 3;

/// A running `tally run --memory-only`.
pub(crate) struct Node {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl Node {
    /// Starts the node with the given SSE tick and waits until `/readyz` answers 200.
    pub(crate) fn start(scratch: &Path, sse_tick_ms: u64) -> Node {
        Self::start_with(scratch, sse_tick_ms, &[])
    }

    /// [`Node::start`] with further `tally run` arguments.
    pub(crate) fn start_with(scratch: &Path, sse_tick_ms: u64, extra: &[String]) -> Node {
        for attempt in 1..=START_ATTEMPTS_MAX {
            let address = free_local_address();
            let log = scratch.join(format!("tally-{attempt}.log"));
            let output = File::create(&log).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_tally"))
                .args(["run", "--memory-only", "--listen", &address.to_string()])
                .args(["--sse-tick-ms", &sse_tick_ms.to_string()])
                .args(extra)
                .env_remove("TALLY_CONFIG")
                .env("RUST_LOG", "info")
                // Nothing of the node's lands in the repository, whatever it writes.
                .current_dir(scratch)
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .spawn()
                .unwrap();
            let mut node = Node {
                child,
                address,
                log,
            };
            if node.wait_ready() {
                return node;
            }
            // Exited before serving: retry only if another process took the port meanwhile.
            assert!(
                node.log_text().contains("cannot listen"),
                "tally exited at start-up{}",
                node.log_tail()
            );
        }
        panic!("tally could not get a free port in {START_ATTEMPTS_MAX} attempts");
    }

    /// True once ready; false if the process exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if let Ok((200, _)) = request(self.address, "GET", "/readyz", None) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tally was not ready within {READY_TIMEOUT:?}{}",
            self.log_tail()
        );
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
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}{}", self.log_tail()));
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
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}{}", self.log_tail()));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("\n--- last lines of {} ---\n{tail}", self.log.display())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// A port nobody listens on right now (the node may still lose a race for it: see `start`).
pub(crate) fn free_local_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
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
