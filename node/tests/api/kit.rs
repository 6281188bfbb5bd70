//! The kit every API test uses: a node on a memory disk and a hand-moved clock, requests sent
//! through its router, answers read whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_core::{PollId, UnixMillis};
use tally_node::config::Config;
use tally_node::storage::{MemoryStorage, Storage, StorageFile};
use tally_node::{Clock, Started, WalExecutor};
use tower::ServiceExt;

/// The longest any one await may take.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// The clock's start: polls opened at start-up open at this instant.
pub(crate) const T0_MS: u64 = 1_700_000_000_000;

/// The admin bearer token of every test node.
pub(crate) const TOKEN: &str = "test-admin-token";

/// A clock that moves only when the test says so.
pub(crate) struct TestClock(pub(crate) AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

impl TestClock {
    pub(crate) fn advance_seconds(&self, seconds: u64) {
        self.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
}

/// The configuration of every test node: fast ticks, an admin token.
pub(crate) fn test_config() -> Config {
    Config {
        admin_token: TOKEN.into(),
        results_tick_ms: 10,
        sse_tick_ms: 10,
        ..Config::default()
    }
}

/// A started node and the clock it reads.
pub(crate) struct Node {
    pub(crate) started: Started,
    pub(crate) clock: Arc<TestClock>,
    pub(crate) storage: MemoryStorage,
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

    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// Asserts a refusal: this status, JSON `{"error": code, "message": …}`; returns the message.
    pub(crate) fn assert_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.content_type().starts_with("application/json"),
            "{}",
            self.content_type()
        );
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        let message = body["message"].as_str().unwrap().to_owned();
        assert!(!message.is_empty());
        message
    }

    pub(crate) fn retry_after(&self) -> Option<&str> {
        self.headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap())
    }
}

pub(crate) fn start_on(config: &Config, storage: MemoryStorage, clock: Arc<TestClock>) -> Node {
    let started =
        tally_node::start(config, storage.clone(), clock.clone(), 7, WalExecutor::Task).unwrap();
    Node {
        started,
        clock,
        storage,
    }
}

pub(crate) fn start_with(config: &Config) -> Node {
    let clock = Arc::new(TestClock(AtomicU64::new(T0_MS)));
    start_on(config, MemoryStorage::new(), clock)
}

pub(crate) fn start() -> Node {
    start_with(&test_config())
}

/// Sends `request` to `router` and returns the response head (the body unread).
pub(crate) async fn respond(router: &Router, request: Request<Body>) -> Response<Body> {
    let what = format!("{} {}", request.method(), request.uri());
    tokio::time::timeout(STEP, router.clone().oneshot(request))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
        .unwrap()
}

/// Sends `request` to `router` and reads the whole answer.
pub(crate) async fn send_to(router: &Router, request: Request<Body>) -> Reply {
    let response = respond(router, request).await;
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

impl Node {
    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        send_to(&self.started.router, request).await
    }

    pub(crate) async fn vote(&self, poll: &str, option: &str, vote_id: &str) -> Reply {
        self.send(post_json(
            &format!("/v1/polls/{poll}/votes"),
            &json!({"option": option, "vote_id": vote_id}),
        ))
        .await
    }

    pub(crate) async fn admin(&self, uri: &str, body: Option<Value>) -> Reply {
        let request = match body {
            Some(body) => post_json(uri, &body),
            None => Request::post(uri).body(Body::empty()).unwrap(),
        };
        self.send(with_token(request, TOKEN)).await
    }

    /// Waits until the published results of `poll` show `total` votes; returns them.
    pub(crate) async fn results_settle(&self, poll: &str, total: i64) -> Value {
        let mut results = self.started.handle.results.clone();
        let id = PollId::new(poll).unwrap();
        tokio::time::timeout(
            STEP,
            results.wait_for(|s| s.polls.get(&id).is_some_and(|p| p.results.total == total)),
        )
        .await
        .unwrap_or_else(|_| panic!("{poll} never showed {total} votes"))
        .unwrap();
        let reply = self.send(get(&format!("/v1/polls/{poll}/results"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()
    }

    pub(crate) async fn stop(self) -> MemoryStorage {
        tokio::time::timeout(STEP, self.started.stop())
            .await
            .expect("node did not stop in time")
            .unwrap();
        self.storage
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

pub(crate) fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request
}

/// Reads the next frame of a streaming body as text.
pub(crate) async fn next_frame(body: &mut Body) -> String {
    let frame = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("no SSE frame in time")
        .expect("stream ended")
        .unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

pub(crate) const VOTES: &str = "/v1/polls/superbowl/votes";
pub(crate) const BATCH: &str = "/v1/polls/superbowl/votes/batch";

/// What a disk would hold if the node crashed now: a copy of every file's bytes (a
/// `MemoryStorage` keeps only what was written, so nothing beyond that survives either).
pub(crate) fn crash_copy(storage: &MemoryStorage) -> MemoryStorage {
    let copy = MemoryStorage::new();
    for name in storage.list().unwrap() {
        let bytes = storage.with_file_bytes(&name, |b| b.clone()).unwrap();
        copy.create(&name).unwrap().write_all_at(&bytes, 0).unwrap();
    }
    copy
}
