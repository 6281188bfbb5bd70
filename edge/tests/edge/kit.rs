//! The kit every edge test uses: real nodes in-process (on memory disks, a hand-moved wall
//! clock), reached by the edge through an in-memory [`Connector`] whose nodes can be told to
//! misbehave (refuse connections, swallow requests, answer slowly, lose answers, say they are
//! not ready), and the edge's router, sent requests directly.
//!
//! Tests run on tokio's paused clock: whenever every task waits, time jumps to the next timer,
//! so breaker cool-downs and deadlines take no real time and replay the same way.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tally_client::Endpoint;
use tally_core::UnixMillis;
use tally_edge::upstream::{Connecting, Io};
use tally_edge::{Connector, EdgeConfig, Started};
use tally_node::config::Config;
use tally_node::storage::MemoryStorage;
use tally_node::{Clock, WalExecutor};
use tower::ServiceExt;

/// The longest any one await may take (simulated time: paused clock).
pub(crate) const STEP: Duration = Duration::from_secs(60);

/// The wall clock's start: polls opened at start-up open at this instant.
pub(crate) const T0_MS: u64 = 1_700_000_000_000;

/// The single-vote route of the poll every node serves.
pub(crate) const VOTES: &str = "/v1/polls/superbowl/votes";

/// A wall clock that moves only when the test says so.
pub(crate) struct TestClock(pub(crate) AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

/// How a node behaves towards the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Serves as a node does.
    Healthy,
    /// Refuses connections.
    Down,
    /// Accepts connections and never answers anything.
    Blackhole,
    /// Answers its probes, but never a batch (its vote path is stuck; `/readyz` is not).
    StallsBatches,
    /// Answers everything after this delay.
    Slow(Duration),
    /// Carries batches out (they count) and then drops the connection: answers lost.
    LosesAnswers,
    /// Serves, but its `/readyz` says 503 (catching up).
    NotReady,
}

/// One in-process node and how it behaves.
pub(crate) struct TestNode {
    pub(crate) name: String,
    pub(crate) started: tally_node::Started,
    pub(crate) mode: Mutex<Mode>,
    /// Batch requests that reached it (carried out or not).
    pub(crate) batches: AtomicUsize,
    /// Votes in them.
    pub(crate) batch_votes: Mutex<Vec<usize>>,
}

impl TestNode {
    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    /// Sends `request` to the node directly (as a client of the node would).
    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        send_to(&self.started.router, request).await
    }

    /// The node's displayed total of `superbowl`, once its results show `total`.
    pub(crate) async fn settles_at(&self, total: i64) {
        let mut results = self.started.handle.results.clone();
        let id = tally_core::PollId::new("superbowl").unwrap();
        tokio::time::timeout(
            STEP,
            results.wait_for(|s| s.polls.get(&id).is_some_and(|p| p.results.total == total)),
        )
        .await
        .unwrap_or_else(|_| panic!("{} never showed {total} votes", self.name))
        .unwrap();
    }
}

/// The in-memory network: each node by its authority (`name:80`).
#[derive(Clone, Default)]
pub(crate) struct TestNet {
    nodes: Arc<BTreeMap<String, Arc<TestNode>>>,
}

impl Connector for TestNet {
    fn connect(&self, endpoint: &Endpoint) -> Connecting {
        let node = self.nodes.get(&endpoint.authority).cloned();
        Box::pin(async move {
            let Some(node) = node else {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such node"));
            };
            if node.mode() == Mode::Down {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "down"));
            }
            let (client, server) = tokio::io::duplex(1 << 20);
            tokio::spawn(serve(node, server));
            Ok(Box::new(client) as Box<dyn Io>)
        })
    }
}

/// Serves one connection of `node` as its mode says.
async fn serve(node: Arc<TestNode>, stream: tokio::io::DuplexStream) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let node = node.clone();
        async move {
            let is_batch = request.uri().path().ends_with("/batch");
            let is_ready = request.uri().path() == "/readyz";
            let request = request.map(Body::new);
            match node.mode() {
                Mode::Blackhole | Mode::Down => std::future::pending::<()>().await,
                Mode::StallsBatches if is_batch => std::future::pending::<()>().await,
                Mode::Slow(delay) => tokio::time::sleep(delay).await,
                Mode::NotReady if is_ready => {
                    let response = axum::response::Response::builder()
                        .status(StatusCode::SERVICE_UNAVAILABLE)
                        .body(Body::from("not ready\ncatching_up: test\n"))
                        .unwrap();
                    return Ok::<_, Infallible>(response);
                }
                _ => {}
            }
            if is_batch {
                node.batches.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let batch: tally_client::api::BinaryBatch = postcard::from_bytes(&bytes).unwrap();
                node.batch_votes.lock().unwrap().push(batch.votes.len());
                let request = Request::from_parts(parts, Body::from(bytes));
                let response = node.started.router.clone().oneshot(request).await.unwrap();
                if node.mode() == Mode::LosesAnswers {
                    // Read whole (the votes are durable), then never answered.
                    let _ = response.into_body().collect().await;
                    return std::future::pending().await;
                }
                return Ok(response);
            }
            Ok(node.started.router.clone().oneshot(request).await.unwrap())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The configuration of every test node.
pub(crate) fn node_config(name: &str) -> Config {
    Config {
        node_id: name.into(),
        results_tick_ms: 10,
        sse_tick_ms: 10,
        ..Config::default()
    }
}

/// Starts a node named `name` with `config`.
pub(crate) fn start_node(config: &Config, clock: Arc<TestClock>) -> Arc<TestNode> {
    let started =
        tally_node::start(config, MemoryStorage::new(), clock, 7, WalExecutor::Task).unwrap();
    Arc::new(TestNode {
        name: config.node_id.clone(),
        started,
        mode: Mutex::new(Mode::Healthy),
        batches: AtomicUsize::new(0),
        batch_votes: Mutex::new(Vec::new()),
    })
}

/// Nodes and an edge in front of them (upstreams in the nodes' order).
pub(crate) struct Rig {
    pub(crate) nodes: Vec<Arc<TestNode>>,
    pub(crate) edge: Started,
    pub(crate) clock: Arc<TestClock>,
}

/// The configuration of an edge in front of `names`: short timings so tests move quickly.
pub(crate) fn edge_config(names: &[&str]) -> EdgeConfig {
    EdgeConfig {
        upstreams: names.iter().map(|n| format!("http://{n}")).collect(),
        probe_interval_ms: 50,
        poll_list_interval_ms: 50,
        linger_ms: 2,
        ..EdgeConfig::default()
    }
}

/// Starts nodes `names` (with `node_configs` changing each config) and an edge with
/// `edge_config` in front, and waits until the edge is ready.
pub(crate) async fn rig_with(
    names: &[&str],
    change_node: impl Fn(&mut Config),
    edge: EdgeConfig,
) -> Rig {
    let clock = Arc::new(TestClock(AtomicU64::new(T0_MS)));
    let nodes: Vec<Arc<TestNode>> = names
        .iter()
        .map(|name| {
            let mut config = node_config(name);
            change_node(&mut config);
            start_node(&config, clock.clone())
        })
        .collect();
    let net = TestNet {
        nodes: Arc::new(
            nodes
                .iter()
                .map(|n| (format!("{}:80", n.name), n.clone()))
                .collect(),
        ),
    };
    let edge = tally_edge::start(&edge, Arc::new(net), clock.clone()).unwrap();
    let rig = Rig { nodes, edge, clock };
    rig.wait_ready().await;
    rig
}

/// Nodes `names` with the test config and an edge with [`edge_config`].
pub(crate) async fn rig(names: &[&str]) -> Rig {
    rig_with(names, |_| {}, edge_config(names)).await
}

impl Rig {
    /// Waits until the edge's `/readyz` says ready.
    pub(crate) async fn wait_ready(&self) {
        tokio::time::timeout(STEP, async {
            loop {
                if self.send(get("/readyz")).await.status == StatusCode::OK {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the edge never became ready");
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        send_to(&self.edge.router, request).await
    }

    /// Votes through the edge.
    pub(crate) async fn vote(&self, option: &str, vote_id: &str) -> Reply {
        self.send(post_json(
            VOTES,
            &json!({"option": option, "vote_id": vote_id}),
        ))
        .await
    }

    /// The edge's metric line `name` (with its labels, as rendered), as a number.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self.send(get("/metrics")).await.text();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no metric {series}"))
            .parse()
            .unwrap()
    }
}

/// One answer, read to the end.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {:?} is not JSON", String::from_utf8_lossy(&self.body))
        })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    /// The error code of a refusal.
    pub(crate) fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_owned()
    }

    pub(crate) fn retry_after(&self) -> Option<&str> {
        self.headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap())
    }
}

/// Sends `request` to `router` and reads the whole answer.
pub(crate) async fn send_to(router: &Router, request: Request<Body>) -> Reply {
    let what = format!("{} {}", request.method(), request.uri());
    let response = tokio::time::timeout(STEP, router.clone().oneshot(request))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(STEP, body.collect())
        .await
        .expect("body not complete in time")
        .unwrap()
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub(crate) fn post_json(uri: &str, body: &Value) -> Request<Body> {
    post_bytes(uri, "application/json", body.to_string().into_bytes())
}

pub(crate) fn post_bytes(uri: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

/// A vote ID made from a number (a UUID, as sent).
pub(crate) fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}
