//! Live-results viewers on the real binaries, served below hyper (tally-serve's `viewers`
//! path: a connection whose first request is `GET …/stream` gets a small task of its own
//! writing the shared event bytes to the socket; everything else goes to hyper with the bytes
//! already read replayed).
//!
//! Method: a memory-only `tally run` with short ticks and a short write-stall limit, a `tally
//! edge` in front of it, and raw TCP clients on 127.0.0.1: viewers that read, a viewer whose
//! receive buffer is tiny and that never reads, requests whose heads arrive in pieces,
//! garbage and oversized heads. Every wait is bounded.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

#[path = "kit/edge.rs"]
mod edge;
#[path = "kit/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/single.rs"]
#[allow(dead_code)] // `total` is the hostile test's
mod single;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use edge::EdgeProcess;
use single::Node;

/// Viewers per tier in the fan-out test.
const VIEWERS: usize = 30;
/// The write-stall limit of node and edge, in ms.
const STALL_MS: u64 = 300;
/// Longest wait for any condition.
const WAIT: Duration = Duration::from_secs(30);
/// The live stream's request, as a browser on another origin sends it.
const STREAM_REQUEST: &str = "GET /v1/polls/superbowl/stream HTTP/1.1\r\nhost: t\r\n\
     accept: text/event-stream\r\norigin: https://viewer.example\r\n\r\n";

/// A memory-only node with 10 ms ticks and the short write-stall limit.
fn start_node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let address = process::free_tcp_address();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\nmemory_only = true\nresults_tick_ms = 10\n\
             sse_tick_ms = 10\nwrite_stall_ms = {STALL_MS}\n"
        ),
    )
    .unwrap();
    let args: [&std::ffi::OsStr; 3] = ["run".as_ref(), "--config".as_ref(), config.as_os_str()];
    Node::start(args, address, Some(dir), WAIT)
}

/// An edge in front of `node` with the short write-stall limit, ready; and its directory.
fn start_edge(node: &Node) -> (EdgeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, format!("write_stall_ms = {STALL_MS}\n")).unwrap();
    let config = config.display().to_string();
    let mut edge = EdgeProcess::spawn("edge", &[node.address], dir.path(), &["--config", &config]);
    edge.wait_ready(Instant::now() + WAIT);
    (edge, dir)
}

/// One viewer: its connection, its response head, what it has read of the body.
struct Viewer {
    stream: TcpStream,
    head: String,
    body: String,
}

impl Viewer {
    /// Opens the stream at `address`; `receive_buffer` shrinks the socket's receive buffer.
    async fn open(address: SocketAddr, receive_buffer: Option<u32>) -> Viewer {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(bytes) = receive_buffer {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        let mut stream = socket.connect(address).await.unwrap();
        stream.write_all(STREAM_REQUEST.as_bytes()).await.unwrap();
        let mut viewer = Viewer {
            stream,
            head: String::new(),
            body: String::new(),
        };
        let mut read = String::new();
        while !read.contains("\r\n\r\n") {
            read.push_str(
                &viewer
                    .read_some()
                    .await
                    .expect("the stream closed in its head"),
            );
        }
        let (head, body) = read.split_once("\r\n\r\n").unwrap();
        viewer.head = head.to_ascii_lowercase();
        viewer.body = body.to_owned();
        viewer
    }

    /// The next bytes, or `None` once the server closed the stream.
    async fn read_some(&mut self) -> Option<String> {
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, self.stream.read(&mut buffer))
            .await
            .expect("a viewer heard nothing");
        match read {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
        }
    }

    /// Reads until the latest results show `total`.
    async fn until_total(&mut self, total: i64) {
        while last_total(&self.body) != Some(total) {
            let more = self.read_some().await.expect("the stream ended");
            self.body.push_str(&more);
            // Keep the unfinished tail and the last whole event.
            if self.body.len() > 64 * 1024 {
                self.body.drain(..self.body.len() - 16 * 1024);
            }
        }
    }
}

/// The last `"total":N` in `text`.
fn last_total(text: &str) -> Option<i64> {
    let at = text.rfind("\"total\":")?;
    let digits: String = text[at + 8..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Casts a vote for green straight at the node (blocking client on a worker thread).
async fn vote(node: SocketAddr, n: u64) {
    tokio::task::spawn_blocking(move || {
        let body = format!(r#"{{"option":"green","vote_id":"00000000-0000-4000-8000-{n:012x}"}}"#);
        let (status, answer) =
            http::request_once(node, "POST", "/v1/polls/superbowl/votes", &body).unwrap();
        assert_eq!(status, 200, "{answer}");
    })
    .await
    .unwrap();
}

/// The gauge `name` of the server at `address`.
async fn gauge(address: SocketAddr, name: &'static str) -> f64 {
    tokio::task::spawn_blocking(move || {
        let (_, text) = http::request_once(address, "GET", "/metrics", "").unwrap();
        http::metric(&text, name, "")
    })
    .await
    .unwrap()
}

/// Sends `pieces` on one fresh connection, a pause between them, and reads one answer's head
/// and body (by its content-length).
async fn pieces_answer(address: SocketAddr, pieces: &[&[u8]]) -> (String, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    for piece in pieces {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read_answer(&mut stream).await
}

/// One answer on `stream`: its head (lower case) and body (by content-length, or to the close).
async fn read_answer(stream: &mut TcpStream) -> (String, String) {
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buffer))
            .await
            .expect("no answer")
            .unwrap_or(0);
        read.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&read).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.trim().parse::<usize>().ok());
            if n == 0 || length.is_some_and(|length| body.len() >= length) {
                return (head, body.to_owned());
            }
        } else if n == 0 {
            return (text.to_ascii_lowercase(), String::new());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewers_of_the_real_node_and_edge_get_every_change_with_the_routes_headers() {
    // Goal: viewers served below hyper get the router's status and headers and every change,
    // on a node and on an edge. Method: 30 viewers on each, three votes one at a time, each
    // waited for by every viewer; the edge's viewer gauge counts them.
    let node = start_node();
    let (edge, _dir) = start_edge(&node);
    let mut total = 0;
    for (tier, address) in [("node", node.address), ("edge", edge.http)] {
        let mut viewers = Vec::new();
        for _ in 0..VIEWERS {
            viewers.push(Viewer::open(address, None).await);
        }
        for viewer in &viewers {
            let head = &viewer.head;
            assert!(head.starts_with("http/1.1 200"), "{tier}: {head}");
            for line in [
                "content-type: text/event-stream",
                "cache-control: no-cache",
                "access-control-allow-origin: *",
            ] {
                assert!(head.contains(line), "{tier}: no {line:?} in {head}");
            }
            // The one CORS policy of nodes and edges (`tally_serve::cors::policy`): a page
            // of another origin reads a refusal's wait and an edge's staleness.
            let exposed = head
                .lines()
                .find_map(|l| l.strip_prefix("access-control-expose-headers: "))
                .unwrap_or_else(|| panic!("{tier}: no exposed headers in {head}"));
            for name in ["retry-after", "tally-stale-seconds"] {
                assert!(
                    exposed.contains(name),
                    "{tier}: {name} not exposed in {head}"
                );
            }
        }
        if tier == "edge" {
            let open = gauge(address, "tally_edge_fanout_viewers").await;
            assert_eq!(open, VIEWERS as f64);
        }
        for _ in 0..3 {
            total += 1;
            vote(node.address, total as u64).await;
            for viewer in &mut viewers {
                viewer.until_total(total).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_never_reads_holds_back_no_other_viewer() {
    // Goal: a viewer that stops reading costs its neighbours nothing: they get every change,
    // in time, while it sits (a fan-out that waited for each viewer's write would stall them),
    // and it keeps its place until its writes stall. Method: on node and edge, a viewer with
    // a 4 KiB receive buffer that never reads beside one that reads; 300 votes, each seen by
    // the reader before the next. (Its drop once its writes stall is shown on pipes, in
    // tally-serve's tests/viewers.rs: over loopback the kernel grows the server's send buffer
    // to 4 MiB first, minutes of results at these ticks.)
    let node = start_node();
    let (edge, _dir) = start_edge(&node);
    let mut cast = 0u64;
    for (address, gauge_name) in [
        (node.address, "tally_sse_subscribers"),
        (edge.http, "tally_edge_fanout_viewers"),
    ] {
        let mut reading = Viewer::open(address, None).await;
        let _idle = Viewer::open(address, Some(4096)).await;
        let held = gauge(address, gauge_name).await;
        for _ in 0..300 {
            cast += 1;
            vote(node.address, cast).await;
            reading.until_total(cast as i64).await;
        }
        assert_eq!(gauge(address, gauge_name).await, held, "{gauge_name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_on_the_same_listener_work_with_heads_in_pieces_and_keep_alive() {
    // Goal: a request that is not a viewer's first is hyper's as before, whether its head came
    // whole or in pieces, and a stream asked for on a keep-alive connection still streams.
    // Method: on node and edge, a results request sent in three pieces, then on the same
    // connection a second request, then the stream.
    let node = start_node();
    let (edge, _dir) = start_edge(&node);
    for address in [node.address, edge.http] {
        let pieces: [&[u8]; 3] = [
            b"GET /v1/polls/super",
            b"bowl/results HTTP/1.1\r\nhost",
            b": t\r\n\r\n",
        ];
        let mut stream = TcpStream::connect(address).await.unwrap();
        for piece in pieces {
            stream.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (head, body) = read_answer(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(body.contains("\"poll\":\"superbowl\""), "{body}");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_answer(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "keep-alive: {head}");
        stream.write_all(STREAM_REQUEST.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("\"total\":") {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buffer))
                .await
                .expect("the stream on a keep-alive connection sent nothing")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buffer[..n]);
        }
        let seen = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_request_heads_get_a_clear_error_and_the_server_serves_on() {
    // Goal: a head that is not HTTP gets 400, one over the head limits 431, each with the
    // API's JSON error, and neither harms the server. Method: raw bytes on node and edge,
    // then a results read.
    let node = start_node();
    let (edge, _dir) = start_edge(&node);
    let mut long = b"GET /v1/polls/superbowl/stream HTTP/1.1\r\nx-filler: ".to_vec();
    long.resize(20_000, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    let mut many = b"GET /v1/polls/superbowl/results HTTP/1.1\r\n".to_vec();
    for n in 0..100 {
        many.extend_from_slice(format!("x-{n}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    for address in [node.address, edge.http] {
        let (head, body) = pieces_answer(address, &[b"\x16\x03\x01\x02\x00 hello\r\n\r\n"]).await;
        assert!(head.starts_with("http/1.1 400"), "{head}");
        assert!(body.contains("\"error\":\"malformed\""), "{body}");
        for oversized in [&long, &many] {
            let (head, body) = pieces_answer(address, &[oversized]).await;
            assert!(head.starts_with("http/1.1 431"), "{head}");
            assert!(body.contains("\"error\":\"malformed\""), "{body}");
        }
        let (head, _) = pieces_answer(
            address,
            &[b"GET /v1/polls/superbowl/results HTTP/1.1\r\nhost: t\r\n\r\n"],
        )
        .await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
    }
}
