//! Every route and every error path of the HTTP API, through the router itself.
//!
//! Method: each test starts a node with [`tally_node::start`] on a [`MemoryStorage`] and a clock
//! the test moves by hand, then sends requests to its router with tower's `oneshot` (no socket).
//! The default configuration defines the poll `superbowl` (`green`, `blue`), open from the
//! clock's start; the admin token is [`TOKEN`]. Every await is bounded by [`STEP`], so a hang is
//! a failure with a message, not a stuck test run. The load-shedding tests build the router
//! around an engine queue that is full and never drained.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_core::{OptionIndex, PollId, UnixMillis, VoteId, VoteIdKey};
use tally_node::config::{BATCH_BODY_BYTES_MAX, BATCH_VOTES_MAX, Config, VOTE_BODY_BYTES_MAX};
use tally_node::engine::Command;
use tally_node::health::{Health, Hold};
use tally_node::http::{
    self, AppState, BatchResponse, BatchVoteStatus, BinaryBatch, BinaryLookup,
    BinaryLookupResponse, BinaryVote, LOOKUP_NOT_HELD, POSTCARD_MEDIA_TYPE,
};
use tally_node::storage::{MemoryStorage, Storage, StorageFile};
use tally_node::{Clock, Started, WalExecutor};
use tokio::sync::{mpsc, oneshot, watch};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The longest any one await may take.
const STEP: Duration = Duration::from_secs(10);

/// The clock's start: polls opened at start-up open at this instant.
const T0_MS: u64 = 1_700_000_000_000;

/// The admin bearer token of every test node.
const TOKEN: &str = "test-admin-token";

/// A clock that moves only when the test says so.
struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

impl TestClock {
    fn advance_seconds(&self, seconds: u64) {
        self.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
}

/// The configuration of every test node: fast ticks, an admin token.
fn test_config() -> Config {
    Config {
        admin_token: TOKEN.into(),
        results_tick_ms: 10,
        sse_tick_ms: 10,
        ..Config::default()
    }
}

/// A started node and the clock it reads.
struct Node {
    started: Started,
    clock: Arc<TestClock>,
    storage: MemoryStorage,
}

/// One answer, read to the end.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {:?} is not JSON", String::from_utf8_lossy(&self.body))
        })
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// Asserts a refusal: this status, JSON `{"error": code, "message": …}`; returns the message.
    fn assert_error(&self, status: StatusCode, code: &str) -> String {
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

    fn retry_after(&self) -> Option<&str> {
        self.headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap())
    }
}

fn start_on(config: &Config, storage: MemoryStorage, clock: Arc<TestClock>) -> Node {
    let started =
        tally_node::start(config, storage.clone(), clock.clone(), 7, WalExecutor::Task).unwrap();
    Node {
        started,
        clock,
        storage,
    }
}

fn start_with(config: &Config) -> Node {
    let clock = Arc::new(TestClock(AtomicU64::new(T0_MS)));
    start_on(config, MemoryStorage::new(), clock)
}

fn start() -> Node {
    start_with(&test_config())
}

/// Sends `request` to `router` and returns the response head (the body unread).
async fn respond(router: &Router, request: Request<Body>) -> Response<Body> {
    let what = format!("{} {}", request.method(), request.uri());
    tokio::time::timeout(STEP, router.clone().oneshot(request))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
        .unwrap()
}

/// Sends `request` to `router` and reads the whole answer.
async fn send_to(router: &Router, request: Request<Body>) -> Reply {
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
    async fn send(&self, request: Request<Body>) -> Reply {
        send_to(&self.started.router, request).await
    }

    async fn vote(&self, poll: &str, option: &str, vote_id: &str) -> Reply {
        self.send(post_json(
            &format!("/v1/polls/{poll}/votes"),
            &json!({"option": option, "vote_id": vote_id}),
        ))
        .await
    }

    async fn admin(&self, uri: &str, body: Option<Value>) -> Reply {
        let request = match body {
            Some(body) => post_json(uri, &body),
            None => Request::post(uri).body(Body::empty()).unwrap(),
        };
        self.send(with_token(request, TOKEN)).await
    }

    /// Waits until the published results of `poll` show `total` votes; returns them.
    async fn results_settle(&self, poll: &str, total: i64) -> Value {
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

    async fn stop(self) -> MemoryStorage {
        tokio::time::timeout(STEP, self.started.stop())
            .await
            .expect("node did not stop in time")
            .unwrap();
        self.storage
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post_json(uri: &str, body: &Value) -> Request<Body> {
    post_bytes(uri, "application/json", body.to_string().into_bytes())
}

fn post_bytes(uri: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request
}

/// Reads the next frame of a streaming body as text.
async fn next_frame(body: &mut Body) -> String {
    let frame = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("no SSE frame in time")
        .expect("stream ended")
        .unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

const VOTES: &str = "/v1/polls/superbowl/votes";
const BATCH: &str = "/v1/polls/superbowl/votes/batch";

// ---------------------------------------------------------------------------------------------
// Single votes

#[tokio::test]
async fn a_new_vote_is_counted_with_a_receipt_and_a_retry_for_another_option_is_a_duplicate() {
    // Goal: exactly once per vote ID, whatever the retry says. Method: vote, retry with the same
    // ID for the other option, read the results.
    let node = start();
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let first = node.vote("superbowl", "green", id).await;
    assert_eq!(first.status, StatusCode::OK);
    let first = first.json();
    assert_eq!(first["status"], "counted");
    assert_eq!(first["vote_id"], id);
    let receipt = &first["receipt"];
    assert!(receipt["actor"].as_str().unwrap().starts_with("local#"));
    assert!(receipt["seq"].as_u64().unwrap() >= 1);
    assert_eq!(receipt["second"], 0);

    let retry = node.vote("superbowl", "blue", id).await;
    assert_eq!(retry.status, StatusCode::OK);
    let retry = retry.json();
    assert_eq!(retry["status"], "duplicate");
    assert_eq!(retry["vote_id"], id);
    assert_eq!(retry["receipt"], Value::Null);

    let results = node.results_settle("superbowl", 1).await;
    assert_eq!(results["options"][0]["votes"], 1);
    assert_eq!(results["options"][1]["votes"], 0);
    node.stop().await;
}

#[tokio::test]
async fn the_idempotency_key_header_serves_as_the_vote_id() {
    // Goal: a client may send its key as a header. Method: vote twice with the header only,
    // then once with the key in the body: the same vote each time.
    let node = start();
    let by_header = |option: &str| {
        let mut request = post_json(VOTES, &json!({"option": option}));
        let key = "tap-42".parse().unwrap();
        request.headers_mut().insert("idempotency-key", key);
        request
    };
    let first = node.send(by_header("green")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["status"], "counted");
    let second = node.send(by_header("green")).await;
    assert_eq!(second.json()["status"], "duplicate");
    assert_eq!(second.json()["vote_id"], first.json()["vote_id"]);
    let in_body = node.vote("superbowl", "green", "tap-42").await;
    assert_eq!(in_body.json()["status"], "duplicate");
    node.stop().await;
}

#[tokio::test]
async fn a_vote_id_in_the_body_wins_over_an_unreadable_header() {
    // Goal: the header is only read when the body has no vote ID. Method: a header that is not
    // text, with a vote ID in the body.
    let node = start();
    let mut request = post_json(VOTES, &json!({"option": "green", "vote_id": "body-id"}));
    let binary = axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap();
    request.headers_mut().insert("idempotency-key", binary);
    let reply = node.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["status"], "counted");
    node.stop().await;
}

#[tokio::test]
async fn malformed_vote_bodies_are_refused_with_400() {
    // Goal: a body that is not the route's JSON is a 400 with a message, and counts nothing.
    let node = start();
    for body in [
        "{\"option\": ",
        "not json",
        "{\"option\": \"green\", \"vote_id\": \"a\", \"extra\": 1}",
        "{\"vote_id\": \"a\"}",
        "{\"option\": 3, \"vote_id\": \"a\"}",
    ] {
        let reply = node
            .send(post_bytes(VOTES, "application/json", body.into()))
            .await;
        let message = reply.assert_error(StatusCode::BAD_REQUEST, "malformed");
        assert!(message.starts_with("malformed request"), "{message}");
    }
    let unknown = node
        .send(post_bytes(
            VOTES,
            "application/json",
            b"{\"option\": \"green\", \"vote_id\": \"a\", \"extra\": 1}".to_vec(),
        ))
        .await;
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .contains("extra")
    );
    node.results_settle("superbowl", 0).await;
    node.stop().await;
}

#[tokio::test]
async fn votes_with_an_unknown_option_or_a_bad_vote_id_are_refused_with_422() {
    // Goal: 422 for input that parses but cannot be a vote: unknown option, empty, over-long or
    // missing vote ID.
    let node = start();
    let reply = node.vote("superbowl", "purple", "a").await;
    let message = reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_option");
    assert!(message.contains("purple"), "{message}");

    let reply = node.vote("superbowl", "green", "").await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_vote_id");

    let longest = "k".repeat(128);
    let reply = node.vote("superbowl", "green", &longest).await;
    assert_eq!(reply.status, StatusCode::OK, "128 bytes is allowed");
    let reply = node.vote("superbowl", "green", &"k".repeat(129)).await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_vote_id");

    let reply = node
        .send(post_json(VOTES, &json!({"option": "green"})))
        .await;
    let message = reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_vote_id");
    assert!(message.contains("Idempotency-Key"), "{message}");
    node.results_settle("superbowl", 1).await;
    node.stop().await;
}

#[tokio::test]
async fn a_vote_for_an_unknown_poll_is_404() {
    // Goal: unknown polls are 404 on every poll route, including names that cannot be polls.
    let node = start();
    node.vote("nope", "green", "a")
        .await
        .assert_error(StatusCode::NOT_FOUND, "unknown_poll");
    node.vote("not%20a%20name", "green", "a")
        .await
        .assert_error(StatusCode::NOT_FOUND, "unknown_poll");
    let batch = json!({"votes": [{"option": "green", "vote_id": "a"}]});
    node.send(post_json("/v1/polls/nope/votes/batch", &batch))
        .await
        .assert_error(StatusCode::NOT_FOUND, "unknown_poll");
    for route in ["results", "history", "stream"] {
        node.send(get(&format!("/v1/polls/nope/{route}")))
            .await
            .assert_error(StatusCode::NOT_FOUND, "unknown_poll");
    }
    node.stop().await;
}

#[tokio::test]
async fn a_vote_body_over_the_limit_is_413() {
    // Goal: the body limit is enforced before parsing, with the limit in the message.
    let node = start();
    let option = "g".repeat(VOTE_BODY_BYTES_MAX);
    let reply = node.vote("superbowl", &option, "a").await;
    let message = reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert!(
        message.contains(&VOTE_BODY_BYTES_MAX.to_string()),
        "{message}"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_body_still_arriving_at_the_body_deadline_is_408_and_changes_nothing() {
    // Goal: a client that sends its headers, then its body too slowly (here: half of it, then
    // nothing), is refused once `body_read_timeout_ms` has passed, on every route that reads a
    // body, and nothing is counted or created. Method: a body stream that never ends.
    let config = Config {
        body_read_timeout_ms: 100,
        ..test_config()
    };
    let node = start_with(&config);
    let half_sent = |uri: &str| {
        let half = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            Bytes::from_static(br#"{"option":"#),
        )]);
        let body = futures_util::StreamExt::chain(half, futures_util::stream::pending());
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(body))
            .unwrap()
    };
    for request in [
        half_sent(VOTES),
        half_sent(BATCH),
        with_token(half_sent("/v1/admin/polls"), TOKEN),
    ] {
        let reply = node.send(request).await;
        let message = reply.assert_error(StatusCode::REQUEST_TIMEOUT, "body_timeout");
        assert!(message.contains("100 ms"), "{message}");
    }
    let polls = node.send(get("/v1/polls")).await.json();
    assert_eq!(polls.as_array().map(Vec::len), Some(1), "{polls}");
    node.results_settle("superbowl", 0).await;
    node.stop().await;
}

#[tokio::test]
async fn a_vote_without_a_json_content_type_is_415() {
    // Goal: the content type is checked: wrong, missing, and JSON with a charset (accepted).
    let node = start();
    let body = json!({"option": "green", "vote_id": "a"}).to_string();
    let reply = node
        .send(post_bytes(VOTES, "text/plain", body.clone().into_bytes()))
        .await;
    let message = reply.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert!(message.contains("application/json"), "{message}");
    let missing = Request::post(VOTES).body(Body::from(body.clone())).unwrap();
    node.send(missing)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let charset = post_bytes(VOTES, "application/json; charset=utf-8", body.into_bytes());
    assert_eq!(node.send(charset).await.status, StatusCode::OK);
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Poll windows

#[tokio::test]
async fn a_draft_poll_refuses_votes_with_409_until_opened_and_again_once_closed() {
    // Goal: 409 before the poll opens and after it closes. Method: create a draft through the
    // admin API, vote, open it, vote, close it, vote.
    let node = start();
    let created = node
        .admin(
            "/v1/admin/polls",
            Some(json!({"id": "draft", "options": ["yes", "no"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let message = node
        .vote("draft", "yes", "v1")
        .await
        .assert_error(StatusCode::CONFLICT, "poll_not_open");
    assert!(message.contains("not open yet"), "{message}");
    let batch = json!({"votes": [{"option": "yes", "vote_id": "v1"}]});
    node.send(post_json("/v1/polls/draft/votes/batch", &batch))
        .await
        .assert_error(StatusCode::CONFLICT, "poll_not_open");

    let opened = node.admin("/v1/admin/polls/draft/open", None).await;
    assert_eq!(opened.status, StatusCode::OK);
    assert_eq!(opened.json(), json!({"poll": "draft", "changed": true}));
    let again = node.admin("/v1/admin/polls/draft/open", None).await;
    assert_eq!(again.json(), json!({"poll": "draft", "changed": false}));
    assert_eq!(node.vote("draft", "yes", "v1").await.status, StatusCode::OK);

    node.clock.advance_seconds(1);
    let closed = node.admin("/v1/admin/polls/draft/close", None).await;
    assert_eq!(closed.json(), json!({"poll": "draft", "changed": true}));
    let message = node
        .vote("draft", "no", "v2")
        .await
        .assert_error(StatusCode::CONFLICT, "poll_not_open");
    assert!(message.contains("closed"), "{message}");
    let results = node.results_settle("draft", 1).await;
    assert_eq!(results["status"], "closed");
    node.stop().await;
}

#[tokio::test]
async fn a_poll_with_a_duration_closes_when_the_clock_passes_its_end() {
    // Goal: the window follows the node's clock. Method: a poll open for 10 s; vote at second 5
    // (stamped 5), move past the end, vote again.
    let node = start();
    let created = node
        .admin(
            "/v1/admin/polls",
            Some(
                json!({"id": "quick", "options": ["a", "b"], "open": true, "duration_seconds": 10}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    node.clock.advance_seconds(5);
    let reply = node.vote("quick", "a", "v1").await;
    assert_eq!(reply.json()["receipt"]["second"], 5);
    node.clock.advance_seconds(5);
    node.vote("quick", "b", "v2")
        .await
        .assert_error(StatusCode::CONFLICT, "poll_not_open");
    node.stop().await;
}

#[tokio::test]
async fn a_poll_created_by_admin_takes_votes_at_once() {
    // Goal: read-your-writes after an admin change: a vote right after the create is counted,
    // not refused as an unknown poll until the next results tick. Method: a results tick of a
    // minute, so only the publication at the change itself can make the poll known.
    let config = Config {
        results_tick_ms: 60_000,
        ..test_config()
    };
    let node = start_with(&config);
    let created = node
        .admin(
            "/v1/admin/polls",
            Some(json!({"id": "instant", "options": ["a", "b"], "open": true})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let reply = node.vote("instant", "a", "v1").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    node.clock.advance_seconds(1);
    node.admin("/v1/admin/polls/instant/close", None).await;
    let results = node.send(get("/v1/polls/instant/results")).await.json();
    assert_eq!(results["status"], "closed");
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Batches

#[tokio::test]
async fn a_json_batch_answers_each_vote_in_order() {
    // Goal: per-vote statuses and the counts agree. Method: one batch with a new vote, a vote
    // seen before, a repeat inside the batch, an unknown option and an empty vote ID.
    let node = start();
    node.vote("superbowl", "green", "seen").await;
    let batch = json!({"votes": [
        {"option": "blue", "vote_id": "new"},
        {"option": "green", "vote_id": "seen"},
        {"option": "green", "vote_id": "new"},
        {"option": "purple", "vote_id": "x"},
        {"option": "green", "vote_id": ""},
    ]});
    let reply = node.send(post_json(BATCH, &batch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "counted": 1, "duplicate": 2, "rejected": 2,
            "statuses": ["counted", "duplicate", "duplicate", "unknown_option", "bad_vote_id"],
        })
    );
    let results = node.results_settle("superbowl", 2).await;
    assert_eq!(results["options"][1]["votes"], 1);
    node.stop().await;
}

#[tokio::test]
async fn a_postcard_batch_is_counted_like_json() {
    // Goal: the compact body works: option indexes, 16-byte IDs, an out-of-range index refused.
    let node = start();
    let batch = BinaryBatch {
        votes: vec![
            BinaryVote {
                option: 0,
                vote_id: [1; 16],
            },
            BinaryVote {
                option: 1,
                vote_id: [2; 16],
            },
            BinaryVote {
                option: 1,
                vote_id: [1; 16],
            },
            BinaryVote {
                option: 9,
                vote_id: [3; 16],
            },
        ],
    };
    let body = postcard::to_allocvec(&batch).unwrap();
    let reply = node
        .send(post_bytes(BATCH, POSTCARD_MEDIA_TYPE, body.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["statuses"],
        json!(["counted", "counted", "duplicate", "unknown_option"])
    );
    // The same ID as a UUID in a single vote is the same vote.
    let uuid = VoteId::from_bytes([2; 16]).to_string();
    assert_eq!(
        node.vote("superbowl", "green", &uuid).await.json()["status"],
        "duplicate"
    );
    let results = node.results_settle("superbowl", 2).await;
    assert_eq!(results["options"][0]["votes"], 1);
    assert_eq!(results["options"][1]["votes"], 1);
    node.stop().await;
}

#[tokio::test]
async fn a_batch_is_answered_in_postcard_when_the_request_accepts_it() {
    // Goal: aggregators can read answers as compactly as they send votes: one byte per status,
    // the codes pinned (a client decodes them by place), JSON unless Accept names postcard.
    let node = start();
    let vote = |option, id: u8| BinaryVote {
        option,
        vote_id: [id; 16],
    };
    let batch = BinaryBatch {
        votes: vec![vote(0, 1), vote(1, 1), vote(9, 2), vote(1, 3)],
    };
    let body = postcard::to_allocvec(&batch).unwrap();
    let mut request = post_bytes(BATCH, POSTCARD_MEDIA_TYPE, body);
    request.headers_mut().insert(
        header::ACCEPT,
        "application/json;q=0.5, application/x-postcard"
            .parse()
            .unwrap(),
    );
    let reply = node.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], POSTCARD_MEDIA_TYPE);
    // counted 2, duplicate 1, rejected 1, then 4 statuses: counted, duplicate,
    // unknown_option, counted.
    assert_eq!(reply.body.as_ref(), [2, 1, 1, 4, 0, 1, 2, 0]);
    let answer: BatchResponse = postcard::from_bytes(&reply.body).unwrap();
    assert_eq!(
        answer.statuses,
        [
            BatchVoteStatus::Counted,
            BatchVoteStatus::Duplicate,
            BatchVoteStatus::UnknownOption,
            BatchVoteStatus::Counted
        ]
    );
    let codes =
        postcard::to_allocvec(&[BatchVoteStatus::BadVoteId, BatchVoteStatus::Overloaded]).unwrap();
    assert_eq!(codes, [3, 4]);

    // Without Accept, or with postcard at q=0, the answer is JSON.
    let again = postcard::to_allocvec(&BinaryBatch {
        votes: vec![vote(0, 1)],
    })
    .unwrap();
    for accept in [None, Some("application/x-postcard;q=0, application/json")] {
        let mut request = post_bytes(BATCH, POSTCARD_MEDIA_TYPE, again.clone());
        if let Some(accept) = accept {
            request
                .headers_mut()
                .insert(header::ACCEPT, accept.parse().unwrap());
        }
        let reply = node.send(request).await;
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(reply.json()["statuses"], json!(["duplicate"]), "{accept:?}");
    }
    // A refused batch is answered in JSON whatever it accepts: errors have one shape.
    let mut request = post_bytes(BATCH, POSTCARD_MEDIA_TYPE, vec![0xff; 3]);
    request
        .headers_mut()
        .insert(header::ACCEPT, POSTCARD_MEDIA_TYPE.parse().unwrap());
    node.send(request)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "malformed");
    node.stop().await;
}

#[tokio::test]
async fn malformed_batches_are_400_and_wrong_content_types_415() {
    // Goal: batch parsing errors refuse the whole batch, for both encodings.
    let node = start();
    for body in [
        json!({"votes": [{"option": "green"}]}),
        json!({"votes": [], "extra": true}),
        json!([]),
    ] {
        node.send(post_json(BATCH, &body))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "malformed");
    }
    let message = node
        .send(post_bytes(BATCH, POSTCARD_MEDIA_TYPE, vec![0xff; 3]))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "malformed");
    assert!(message.contains("postcard"), "{message}");
    let message = node
        .send(post_bytes(BATCH, "text/csv", b"green,a".to_vec()))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert!(message.contains("application/json"), "{message}");
    assert!(message.contains(POSTCARD_MEDIA_TYPE), "{message}");
    node.stop().await;
}

#[tokio::test]
async fn batches_over_the_byte_or_vote_limit_are_413() {
    // Goal: both batch limits hold, for both encodings, and nothing of a refused batch counts.
    let node = start();
    let body = vec![b' '; BATCH_BODY_BYTES_MAX + 1];
    node.send(post_bytes(BATCH, "application/json", body))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    let votes: Vec<Value> = (0..=BATCH_VOTES_MAX)
        .map(|i| json!({"option": "green", "vote_id": i.to_string()}))
        .collect();
    let message = node
        .send(post_json(BATCH, &json!({ "votes": votes })))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_many_votes");
    assert!(message.contains(&BATCH_VOTES_MAX.to_string()), "{message}");

    let votes = (0..=BATCH_VOTES_MAX)
        .map(|i| BinaryVote {
            option: 0,
            vote_id: (i as u128 + 1).to_be_bytes(),
        })
        .collect();
    let body = postcard::to_allocvec(&BinaryBatch { votes }).unwrap();
    node.send(post_bytes(BATCH, POSTCARD_MEDIA_TYPE, body))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_many_votes");
    node.results_settle("superbowl", 0).await;
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reads

#[tokio::test]
async fn results_give_counts_shares_total_and_the_split_at_a_second() {
    // Goal: the results route's numbers, and `?at=` over the per-second buckets. Method: three
    // votes at second 0, one at second 5; ask for the whole and for second 2.
    let node = start();
    for (option, id) in [("green", "a"), ("green", "b"), ("blue", "c")] {
        assert_eq!(
            node.vote("superbowl", option, id).await.status,
            StatusCode::OK
        );
    }
    node.clock.advance_seconds(5);
    node.vote("superbowl", "blue", "d").await;
    let results = node.results_settle("superbowl", 4).await;
    assert_eq!(results["poll"], "superbowl");
    assert_eq!(results["status"], "open");
    assert_eq!(results["total"], 4);
    assert_eq!(
        results["options"],
        json!([
            {"name": "green", "votes": 2, "share": 0.5},
            {"name": "blue", "votes": 2, "share": 0.5},
        ])
    );
    assert_eq!(results["at_second"], Value::Null);
    assert_eq!(results["served_by"], "local");
    assert!(results["as_of_ms"].as_u64().unwrap() >= T0_MS);
    let includes = results["includes"].as_array().unwrap();
    assert_eq!(includes.len(), 1);
    assert_eq!(includes[0]["local"], true);
    assert_eq!(includes[0]["records"], 4);

    let at = node
        .send(get("/v1/polls/superbowl/results?at=2"))
        .await
        .json();
    assert_eq!(at["at_second"], 2);
    assert_eq!(at["total"], 3);
    assert_eq!(at["options"][0]["votes"], 2);
    assert_eq!(at["options"][1]["votes"], 1);
    let share = at["options"][0]["share"].as_f64().unwrap();
    assert!((share - 2.0 / 3.0).abs() < 1e-9, "{share}");
    node.stop().await;
}

#[tokio::test]
async fn a_results_query_that_is_not_a_second_is_422() {
    // Goal: bad query parameters are refused with a message, not ignored.
    let node = start();
    for query in [
        "at=notanumber",
        "at=-1",
        "at=99999999999",
        "at=2678401",
        "since=3",
    ] {
        node.send(get(&format!("/v1/polls/superbowl/results?{query}")))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    node.stop().await;
}

#[tokio::test]
async fn history_lists_net_votes_per_second() {
    // Goal: the series behind the dashboard's slider. Method: votes at seconds 0 and 3.
    let node = start();
    node.vote("superbowl", "green", "a").await;
    node.clock.advance_seconds(3);
    node.vote("superbowl", "blue", "b").await;
    node.vote("superbowl", "blue", "c").await;
    node.results_settle("superbowl", 3).await;
    let reply = node.send(get("/v1/polls/superbowl/history")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({
            "poll": "superbowl",
            "options": ["green", "blue"],
            "points": [{"second": 0, "votes": [1, 0]}, {"second": 3, "votes": [0, 2]}],
        })
    );
    node.stop().await;
}

#[tokio::test]
async fn the_stream_sends_the_current_results_as_its_first_event() {
    // Goal: an SSE subscriber sees the results at once. Method: read the first body frame.
    let node = start();
    node.vote("superbowl", "green", "a").await;
    node.results_settle("superbowl", 1).await;
    let response = respond(&node.started.router, get("/v1/polls/superbowl/stream")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    let mut body = response.into_body();
    let frame = next_frame(&mut body).await;
    assert!(frame.starts_with("event: results\n"), "{frame:?}");
    assert!(frame.ends_with("\n\n"), "{frame:?}");
    let data = frame
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let results: Value = serde_json::from_str(data).unwrap();
    assert_eq!(results["poll"], "superbowl");
    assert_eq!(results["total"], 1);
    let id = frame.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
    assert_eq!(id, results["as_of_ms"].to_string());

    // A change arrives as the next event.
    node.vote("superbowl", "blue", "b").await;
    let frame = loop {
        let frame = next_frame(&mut body).await;
        if frame.starts_with("event: results") {
            break frame;
        }
    };
    assert!(frame.contains("\"total\":2"), "{frame:?}");
    // Nothing changes now: after ten quiet ticks, a heartbeat comment keeps proxies open.
    let frame = loop {
        let frame = next_frame(&mut body).await;
        if !frame.starts_with("event: results") {
            break frame;
        }
    };
    assert_eq!(frame, ": heartbeat\n\n");
    drop(body);
    node.stop().await;
}

#[tokio::test]
async fn subscribers_over_the_limit_get_503_with_retry_after() {
    // Goal: the SSE subscriber limit sheds, and a place frees when a subscriber leaves.
    let config = Config {
        sse_subscribers_max: 1,
        ..test_config()
    };
    let node = start_with(&config);
    let stream = "/v1/polls/superbowl/stream";
    let first = respond(&node.started.router, get(stream)).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = node.send(get(stream)).await;
    second.assert_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(second.retry_after(), Some("5"));
    drop(first);
    let third = respond(&node.started.router, get(stream)).await;
    assert_eq!(third.status(), StatusCode::OK);
    drop(third);
    node.stop().await;
}

#[tokio::test]
async fn the_poll_list_shows_every_poll_with_its_window() {
    // Goal: GET /v1/polls, which the dashboard starts from.
    let node = start();
    node.admin(
        "/v1/admin/polls",
        Some(json!({"id": "draft", "options": ["yes", "no"]})),
    )
    .await;
    let reply = node.send(get("/v1/polls")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!([
            {"id": "draft", "options": ["yes", "no"], "status": "not_open",
                "opens_at_ms": null, "closes_at_ms": null},
            {"id": "superbowl", "options": ["green", "blue"], "status": "open",
                "opens_at_ms": T0_MS, "closes_at_ms": null},
        ])
    );
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Admin

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    // Goal: 401 without the token, with a wrong one, with another scheme, and when the admin
    // API is off (no token configured); nothing changes.
    let node = start();
    let body = json!({"id": "sneaky", "options": ["a", "b"]});
    for uri in [
        "/v1/admin/polls",
        "/v1/admin/polls/superbowl/open",
        "/v1/admin/polls/superbowl/close",
    ] {
        let bare = post_json(uri, &body);
        node.send(bare)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let wrong = with_token(post_json(uri, &body), "guess");
        node.send(wrong)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let mut basic = post_json(uri, &body);
        let value = format!("Basic {TOKEN}").parse().unwrap();
        basic.headers_mut().insert(header::AUTHORIZATION, value);
        node.send(basic)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let polls = node.send(get("/v1/polls")).await.json();
    assert_eq!(polls.as_array().unwrap().len(), 1);
    assert_eq!(polls[0]["status"], "open");
    node.stop().await;

    let off = start_with(&Config {
        admin_token: String::new(),
        ..test_config()
    });
    let request = with_token(post_json("/v1/admin/polls", &body), "");
    off.send(request)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    off.stop().await;
}

#[tokio::test]
async fn creating_a_poll_twice_is_201_then_200_unchanged_and_other_options_409() {
    // Goal: create is idempotent, and a name cannot be reused with other options.
    let node = start();
    let body = json!({"id": "halftime", "options": ["yes", "no"], "open": true});
    let first = node.admin("/v1/admin/polls", Some(body.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json(), json!({"poll": "halftime", "changed": true}));
    node.clock.advance_seconds(3);
    let again = node.admin("/v1/admin/polls", Some(body)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), json!({"poll": "halftime", "changed": false}));
    let other = json!({"id": "halftime", "options": ["yes", "maybe"]});
    let message = node
        .admin("/v1/admin/polls", Some(other))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    assert!(message.contains("halftime"), "{message}");
    let results = node.send(get("/v1/polls")).await.json();
    let halftime = &results[0];
    assert_eq!(halftime["options"], json!(["yes", "no"]));
    assert_eq!(halftime["opens_at_ms"], T0_MS, "the first opening stands");
    node.stop().await;
}

#[tokio::test]
async fn invalid_poll_definitions_are_422_and_bad_admin_bodies_400_413_415() {
    // Goal: every way a create can be refused for its body.
    let node = start();
    for body in [
        json!({"id": "one", "options": ["only"]}),
        json!({"id": "many", "options": (0..17).map(|i| format!("o{i}")).collect::<Vec<_>>()}),
        json!({"id": "same", "options": ["a", "a"]}),
        json!({"id": "bad name!", "options": ["a", "b"]}),
        json!({"id": "", "options": ["a", "b"]}),
        json!({"id": "empty-option", "options": ["a", ""]}),
    ] {
        node.admin("/v1/admin/polls", Some(body.clone()))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    node.admin("/v1/admin/polls", Some(json!({"id": "x"})))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "malformed");
    node.admin(
        "/v1/admin/polls",
        Some(json!({"id": "x", "options": ["a", "b"], "colour": "red"})),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "malformed");
    let huge = json!({"id": "x", "options": ["a".repeat(20_000), "b"]});
    node.admin("/v1/admin/polls", Some(huge))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let form = post_bytes(
        "/v1/admin/polls",
        "application/x-www-form-urlencoded",
        b"id=x".to_vec(),
    );
    node.send(with_token(form, TOKEN))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_eq!(
        node.send(get("/v1/polls"))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    node.stop().await;
}

#[tokio::test]
async fn opening_or_closing_an_unknown_poll_is_404() {
    // Goal: admin window changes name the poll they could not find.
    let node = start();
    for uri in [
        "/v1/admin/polls/nope/open",
        "/v1/admin/polls/nope/close",
        "/v1/admin/polls/bad%20name/open",
    ] {
        node.admin(uri, None)
            .await
            .assert_error(StatusCode::NOT_FOUND, "unknown_poll");
    }
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Operations, dashboard, routing

#[tokio::test]
async fn the_vote_lookup_names_each_vote_ids_option_for_the_admin_only() {
    // Goal: an operator (and the simulation's checker) can see which option each vote ID
    // counts for. Method: two votes, then look up those, an unknown one and a bad one, in
    // JSON and in postcard; without the token, 401; for an unknown poll, 404.
    let node = start();
    for (id, option) in [
        ("lookup-green", "green"),
        ("67e55044-10b1-426f-9247-bb680e5fe0c8", "blue"),
    ] {
        let reply = node.vote("superbowl", option, id).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let uri = "/v1/admin/polls/superbowl/lookup";
    let body = json!({"vote_ids": [
        "lookup-green", "67e55044-10b1-426f-9247-bb680e5fe0c8", "never-sent", ""
    ]});
    let reply = node.admin(uri, Some(body.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let options: Vec<Value> = reply.json()["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["option"].clone())
        .collect();
    assert_eq!(
        options,
        vec![json!("green"), json!("blue"), Value::Null, Value::Null]
    );
    assert_eq!(
        reply.json()["votes"][3]["vote_id"],
        Value::Null,
        "an empty key is no ID"
    );

    let ids = vec![
        uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8")
            .unwrap()
            .into_bytes(),
        [9; 16],
    ];
    let request = post_bytes(
        uri,
        "application/x-postcard",
        postcard::to_allocvec(&BinaryLookup { vote_ids: ids }).unwrap(),
    );
    let reply = node.send(with_token(request, TOKEN)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let answer: BinaryLookupResponse = postcard::from_bytes(&reply.body).unwrap();
    assert_eq!(answer.options, vec![1, LOOKUP_NOT_HELD]);

    node.send(post_json(uri, &body))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    node.admin("/v1/admin/polls/nope/lookup", Some(body))
        .await
        .assert_error(StatusCode::NOT_FOUND, "unknown_poll");
    node.stop().await;
}

/// Votes per option name in a results document.
fn votes_by_name(results: &Value) -> Vec<(String, i64)> {
    results["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["votes"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_restart_with_the_options_reordered_keeps_every_vote_under_its_option() {
    // Goal: the configuration decides a poll's definition at start-up, and changing the order
    // of its options (how a disputed node is healed) renumbers the votes by name, before and
    // after a snapshot; a configuration that drops an option with votes is refused and the
    // logged definition kept. Method: two green votes and one blue; restart with the options
    // reversed (a crash: the log replays), vote again, restart again (after a clean stop's
    // snapshot), then restart with an option missing.
    let mut config = test_config();
    let node = start_with(&config);
    for (id, option) in [("g1", "green"), ("g2", "green"), ("b1", "blue")] {
        assert_eq!(
            node.vote("superbowl", option, id).await.status,
            StatusCode::OK
        );
    }
    node.results_settle("superbowl", 3).await;
    // A crash: no snapshot, the log as written replays.
    let crashed = crash_copy(&node.storage);
    let clock = node.clock.clone();
    node.stop().await;
    config.polls[0].options = vec!["blue".into(), "green".into()];
    let node = start_on(&config, crashed, clock);
    let results = node.results_settle("superbowl", 3).await;
    assert_eq!(
        votes_by_name(&results),
        vec![("blue".into(), 1), ("green".into(), 2)]
    );
    let reply = node.vote("superbowl", "green", "g1").await;
    assert!(reply.text().contains("duplicate"), "{}", reply.text());
    assert_eq!(
        node.vote("superbowl", "green", "g3").await.status,
        StatusCode::OK
    );
    node.results_settle("superbowl", 4).await;
    let clock = node.clock.clone();
    let storage = node.stop().await; // a clean stop: the next start reads a snapshot
    let node = start_on(&config, storage, clock);
    let results = node.results_settle("superbowl", 4).await;
    assert_eq!(
        votes_by_name(&results),
        vec![("blue".into(), 1), ("green".into(), 3)]
    );
    let clock = node.clock.clone();
    let storage = node.stop().await;
    config.polls[0].options = vec!["blue".into(), "red".into()];
    let node = start_on(&config, storage, clock);
    let results = node.results_settle("superbowl", 4).await;
    assert_eq!(
        votes_by_name(&results),
        vec![("blue".into(), 1), ("green".into(), 3)],
        "an option that holds votes cannot be dropped: the logged definition stays"
    );
    node.stop().await;
}

#[tokio::test]
async fn metrics_count_votes_refusals_and_fsyncs() {
    // Goal: /metrics shows what happened. Method: a vote, a duplicate, a refused vote, a batch
    // with a refused vote; then read the text (counts, fsyncs, request timings by route).
    let node = start();
    node.vote("superbowl", "green", "a").await;
    node.vote("superbowl", "green", "a").await;
    node.vote("superbowl", "purple", "b").await;
    let batch = json!({"votes": [{"option": "green", "vote_id": ""}]});
    node.send(post_json(BATCH, &batch)).await;
    let reply = node.send(get("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .content_type()
            .starts_with("application/openmetrics-text")
    );
    let text = reply.text();
    for line in [
        "tally_votes_total{outcome=\"counted\"} 1",
        "tally_votes_total{outcome=\"duplicate\"} 1",
        "tally_votes_total{outcome=\"rejected\"} 2",
        "tally_vote_rejections_total{reason=\"unknown_option\"} 1",
        "tally_vote_rejections_total{reason=\"bad_vote_id\"} 1",
        "tally_ready 1",
    ] {
        assert!(text.contains(line), "no `{line}` in\n{text}");
    }
    let fsyncs = text
        .lines()
        .find_map(|l| l.strip_prefix("tally_wal_fsync_duration_seconds_count "))
        .unwrap_or_else(|| panic!("no fsync histogram in\n{text}"));
    assert!(fsyncs.parse::<u64>().unwrap() >= 1, "{fsyncs}");
    // Every request is timed under its route template: the three votes, the batch, and the
    // unmatched route label exists but timed nothing.
    for (route, requests) in [
        ("/v1/polls/{poll}/votes", 3),
        ("/v1/polls/{poll}/votes/batch", 1),
        ("unmatched", 0),
    ] {
        let line =
            format!("tally_http_request_duration_seconds_count{{route=\"{route}\"}} {requests}");
        assert!(text.contains(&line), "no `{line}` in\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
    node.stop().await;
}

#[tokio::test]
async fn a_poll_with_expected_votes_has_its_dedupe_index_reserved_at_start() {
    // Goal: `expected_votes` sizes a poll's index at start-up, and /metrics shows each poll's
    // held IDs and index capacity. Method: a node with a reserved poll beside the default
    // one; one vote in each; read the gauges once the results tick has published them.
    let mut config = test_config();
    let mut big = config.polls[0].clone();
    big.id = "big".into();
    big.expected_votes = Some(100_000);
    config.polls.push(big);
    let node = start_with(&config);
    assert_eq!(node.vote("big", "green", "a").await.status, StatusCode::OK);
    assert_eq!(
        node.vote("superbowl", "blue", "b").await.status,
        StatusCode::OK
    );
    let gauge = poll_gauge;
    let mut text = String::new();
    for _ in 0..200 {
        text = node.send(get("/metrics")).await.text();
        if gauge(&text, "tally_poll_vote_ids", "big") == Some(1)
            && gauge(&text, "tally_poll_vote_ids", "superbowl") == Some(1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        gauge(&text, "tally_poll_vote_ids", "big"),
        Some(1),
        "{text}"
    );
    let reserved = gauge(&text, "tally_poll_vote_id_capacity", "big").unwrap();
    let grown = gauge(&text, "tally_poll_vote_id_capacity", "superbowl").unwrap();
    assert!(reserved >= 100_000, "{reserved}");
    assert!(
        (1..1_000).contains(&grown),
        "unreserved index of one ID: {grown}"
    );
    node.stop().await;
}

/// A poll's gauge from the /metrics text, if it is there.
fn poll_gauge(text: &str, name: &str, poll: &str) -> Option<u64> {
    let prefix = format!("{name}{{poll=\"{poll}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().unwrap())
}

/// The capacity of `poll`'s dedupe index, once the results tick has published it.
async fn index_capacity(node: &Node, poll: &str) -> u64 {
    for _ in 0..200 {
        let text = node.send(get("/metrics")).await.text();
        if let Some(capacity) = poll_gauge(&text, "tally_poll_vote_id_capacity", poll) {
            return capacity;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("/metrics never showed the index capacity of {poll}");
}

/// What a disk would hold if the node crashed now: a copy of every file's bytes (a
/// `MemoryStorage` keeps only what was written, so nothing beyond that survives either).
fn crash_copy(storage: &MemoryStorage) -> MemoryStorage {
    let copy = MemoryStorage::new();
    for name in storage.list().unwrap() {
        let bytes = storage.with_file_bytes(&name, |b| b.clone()).unwrap();
        copy.create(&name).unwrap().write_all_at(&bytes, 0).unwrap();
    }
    copy
}

#[tokio::test]
async fn a_poll_created_with_expected_votes_keeps_its_reserved_index_across_a_crash_and_a_stop() {
    // Goal: `expected_votes` on the admin API sizes the new poll's index at once, and the
    // reservation is in the log: a node restarted after a crash (the log as written) or after
    // a clean stop (the log compacted into a snapshot) has the index sized before any vote.
    // Method: create two polls, one reserved; read the capacity gauges; restart on a copy of
    // the disk taken while running, then on the disk after a clean stop.
    let node = start();
    let reserved = json!({"id": "big", "options": ["x", "y"], "open": true,
        "expected_votes": 100_000});
    let created = node.admin("/v1/admin/polls", Some(reserved.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let plain = json!({"id": "plain", "options": ["x", "y"], "open": true});
    assert_eq!(
        node.admin("/v1/admin/polls", Some(plain)).await.status,
        StatusCode::CREATED
    );
    assert!(index_capacity(&node, "big").await >= 100_000);
    assert!(index_capacity(&node, "plain").await < 1_000);
    // Asking again for the same poll and size changes nothing.
    let again = node.admin("/v1/admin/polls", Some(reserved)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(node.vote("big", "x", "v1").await.status, StatusCode::OK);

    let crashed = crash_copy(&node.storage);
    let clock = node.clock.clone();
    let after_crash = start_on(&test_config(), crashed, clock.clone());
    assert!(index_capacity(&after_crash, "big").await >= 100_000);
    assert!(index_capacity(&after_crash, "plain").await < 1_000);
    after_crash.stop().await;

    let storage = node.stop().await;
    let after_stop = start_on(&test_config(), storage, clock);
    assert!(index_capacity(&after_stop, "big").await >= 100_000);
    assert_eq!(
        after_stop.vote("big", "y", "v1").await.json()["status"],
        "duplicate"
    );
    after_stop.stop().await;
}

#[tokio::test]
async fn expected_votes_for_a_poll_already_holding_votes_enlarges_its_index_and_keeps_them() {
    // Goal: the index the admin route builds off the engine replaces only an empty one; for
    // a poll that already holds votes the engine enlarges the index in place, moving the IDs
    // held step by step, and loses none. Method: create a poll, vote, ask again with
    // `expected_votes`, then check the capacity, the total and that each ID is a duplicate.
    let node = start();
    let spec = json!({"id": "late", "options": ["x", "y"], "open": true});
    assert_eq!(
        node.admin("/v1/admin/polls", Some(spec)).await.status,
        StatusCode::CREATED
    );
    for id in ["v1", "v2", "v3"] {
        assert_eq!(node.vote("late", "x", id).await.json()["status"], "counted");
    }
    assert!(index_capacity(&node, "late").await < 1_000);
    let reserved = json!({"id": "late", "options": ["x", "y"], "open": true,
        "expected_votes": 100_000});
    let reply = node.admin("/v1/admin/polls", Some(reserved)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for _ in 0..200 {
        if index_capacity(&node, "late").await >= 100_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(index_capacity(&node, "late").await >= 100_000);
    for id in ["v1", "v2", "v3"] {
        assert_eq!(
            node.vote("late", "y", id).await.json()["status"],
            "duplicate"
        );
    }
    let results = node.send(get("/v1/polls/late/results")).await.json();
    assert_eq!(results["total"], 3, "{results}");
    node.stop().await;
}

#[tokio::test]
async fn a_growing_dedupe_index_shows_in_metrics_and_the_engine_tick_finishes_it() {
    // Goal: growth is visible (`tally_poll_vote_id_growth` 1, progress below 1) while the
    // index grows, and an index that takes no more votes still finishes growing on the
    // engine's tick (gauge back to 0, progress 1, the reserved capacity) and loses nothing.
    // Method: on a node whose results tick never comes, reserve a poll holding votes, then
    // create another poll (a snapshot is published for that at once: it shows the growth
    // begun); then the same on a node ticking every 10 ms, polled until the growth is over.
    let progress = |text: &str| -> Option<f64> {
        let prefix = "tally_poll_vote_id_growth_progress{poll=\"late\"} ";
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.parse().unwrap())
    };
    for ticking in [false, true] {
        let config = Config {
            results_tick_ms: if ticking { 10 } else { 60_000 },
            ..test_config()
        };
        let node = start_with(&config);
        let spec = json!({"id": "late", "options": ["x", "y"], "open": true});
        assert_eq!(
            node.admin("/v1/admin/polls", Some(spec)).await.status,
            StatusCode::CREATED
        );
        for id in ["v1", "v2", "v3"] {
            assert_eq!(node.vote("late", "x", id).await.json()["status"], "counted");
        }
        let reserved = json!({"id": "late", "options": ["x", "y"], "open": true,
            "expected_votes": 2_000_000});
        let reply = node.admin("/v1/admin/polls", Some(reserved)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let other = json!({"id": "other", "options": ["x", "y"]});
        let reply = node.admin("/v1/admin/polls", Some(other)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        let mut text = node.send(get("/metrics")).await.text();
        if !ticking {
            assert_eq!(
                poll_gauge(&text, "tally_poll_vote_id_growth", "late"),
                Some(1),
                "{text}"
            );
            let progress = progress(&text).unwrap();
            assert!((0.0..1.0).contains(&progress), "{progress}");
            assert!(poll_gauge(&text, "tally_poll_vote_id_capacity", "late").unwrap() >= 2_000_000);
        }
        for _ in 0..500 {
            if !ticking || poll_gauge(&text, "tally_poll_vote_id_growth", "late") == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            text = node.send(get("/metrics")).await.text();
        }
        if ticking {
            assert_eq!(
                poll_gauge(&text, "tally_poll_vote_id_growth", "late"),
                Some(0),
                "{text}"
            );
            assert_eq!(progress(&text), Some(1.0));
            assert!(poll_gauge(&text, "tally_poll_vote_id_capacity", "late").unwrap() >= 2_000_000);
        }
        for id in ["v1", "v2", "v3"] {
            assert_eq!(
                node.vote("late", "y", id).await.json()["status"],
                "duplicate"
            );
        }
        node.stop().await;
    }
}

#[tokio::test]
async fn expected_votes_outside_1_to_the_reservation_limit_is_422_and_creates_nothing() {
    let node = start();
    for bad in [json!(0), json!(500_000_001u64)] {
        let body = json!({"id": "huge", "options": ["x", "y"], "expected_votes": bad});
        let reply = node.admin("/v1/admin/polls", Some(body)).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(reply.text().contains("expected_votes"), "{}", reply.text());
    }
    let polls = node.send(get("/v1/polls")).await.json();
    assert!(
        !polls.to_string().contains("huge"),
        "a refused poll was created: {polls}"
    );
    node.stop().await;
}

#[tokio::test]
async fn admin_numbers_take_json_schema_integers_and_refuse_fractions_and_out_of_range() {
    // Goal: the create route answers what its schema says (issue 24): integers may be written
    // 600.0, fractions and values out of range are 422, a 2^63 duration no longer creates a
    // poll. Method: one request per case, then read the created poll's window.
    let node = start();
    for (body, field) in [
        (
            json!({"id": "zero", "options": ["a", "b"], "duration_seconds": 0}),
            "duration_seconds",
        ),
        (
            json!({"id": "long", "options": ["a", "b"], "duration_seconds": 2_678_401}),
            "duration_seconds",
        ),
        (
            json!({"id": "huge", "options": ["a", "b"], "open": true, "duration_seconds": 9_223_372_036_854_775_808u64}),
            "duration_seconds",
        ),
        (
            json!({"id": "half", "options": ["a", "b"], "duration_seconds": 600.5}),
            "duration_seconds",
        ),
        (
            json!({"id": "neg", "options": ["a", "b"], "expected_votes": -1}),
            "expected_votes",
        ),
    ] {
        let reply = node.admin("/v1/admin/polls", Some(body.clone())).await;
        let message = reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(message.contains(field), "{body}: {message}");
    }
    let body = json!({"id": "whole", "options": ["a", "b"], "open": true,
        "duration_seconds": 600.0, "expected_votes": 1000.0});
    let reply = node.admin("/v1/admin/polls", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let polls = node.send(get("/v1/polls")).await.json();
    let whole = polls
        .as_array()
        .and_then(|polls| polls.iter().find(|p| p["id"] == "whole"))
        .cloned()
        .unwrap_or_else(|| panic!("no poll whole in {polls}"));
    let opens = whole["opens_at_ms"].as_u64().unwrap();
    assert_eq!(whole["closes_at_ms"].as_u64(), Some(opens + 600_000));
    for id in ["zero", "long", "huge", "half", "neg"] {
        assert!(
            polls.as_array().unwrap().iter().all(|p| p["id"] != id),
            "{id} was created"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer_and_readiness_follows_the_flag() {
    // Goal: /healthz is always 200; /readyz is 200 while ready and 503 once not, and admin
    // changes are refused while not ready.
    let node = start();
    let health = node.send(get("/healthz")).await;
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "ok\n")
    );
    let ready = node.send(get("/readyz")).await;
    assert_eq!(
        (ready.status, ready.text().as_str()),
        (StatusCode::OK, "ready\n")
    );
    node.started.handle.health.set(Hold::Stopping, true);
    let ready = node.send(get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.text(), "not ready\nstopping: the node is stopping\n");
    let body = json!({"id": "late", "options": ["a", "b"]});
    let reply = node.admin("/v1/admin/polls", Some(body)).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(reply.retry_after(), Some("5"));
    assert!(
        node.send(get("/metrics"))
            .await
            .text()
            .contains("tally_ready 0")
    );
    assert_eq!(node.send(get("/healthz")).await.status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn a_hold_that_refuses_votes_answers_503_counts_nothing_and_lifts_cleanly() {
    // Goal: under a vote-refusing hold (low disk here) single votes and batches get 503 with
    // Retry-After and are not counted, /readyz names the hold, /metrics shows it, and once it
    // is lifted the same vote ID counts. Method: set and clear the hold on a running node.
    let node = start();
    let id = "0f9a8b7c-6d5e-4f30-8a1b-2c3d4e5f6a7b";
    node.started.handle.health.set(Hold::DiskLow, true);
    let refused = node.vote("superbowl", "green", id).await;
    refused.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(refused.retry_after().is_some());
    assert!(refused.text().contains("free space"), "{}", refused.text());
    let ready = node.send(get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("disk_low: "), "{}", ready.text());
    assert_eq!(node.send(get("/healthz")).await.status, StatusCode::OK);
    let metrics = node.send(get("/metrics")).await.text();
    assert!(
        metrics.contains("tally_hold{hold=\"disk_low\"} 1"),
        "{metrics}"
    );
    node.started.handle.health.set(Hold::DiskLow, false);
    let counted = node.vote("superbowl", "green", id).await;
    assert_eq!(counted.status, StatusCode::OK, "{}", counted.text());
    assert_eq!(counted.json()["status"], "counted");
    node.stop().await;
}

#[tokio::test]
async fn the_dashboard_page_and_its_assets_are_served() {
    // Goal: a browser gets the page at / and /polls/{poll}, and its stylesheet and script.
    let node = start();
    for (uri, kind) in [
        ("/", "text/html"),
        ("/polls/superbowl", "text/html"),
        (tally_node::dashboard::CSS_PATH, "text/css"),
        (tally_node::dashboard::JS_PATH, "text/javascript"),
    ] {
        let reply = node.send(get(uri)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert!(
            reply.content_type().starts_with(kind),
            "{uri}: {}",
            reply.content_type()
        );
        assert!(!reply.body.is_empty());
    }
    assert!(node.send(get("/")).await.text().contains("<html"));
    node.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_json_404_and_wrong_methods_json_405() {
    // Goal: every refusal is JSON, including the router's own.
    let node = start();
    let message = node
        .send(get("/v1/nothing/here"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("/v1/nothing/here"), "{message}");
    let reply = node.send(get(VOTES)).await;
    reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(reply.headers[header::ALLOW], "POST");
    let delete = Request::delete("/v1/polls/superbowl/results")
        .body(Body::empty())
        .unwrap();
    node.send(delete)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Load shedding

/// A router whose engine queue (capacity 1) is full and never drained, over `node`'s results.
/// Returns what must stay alive while it is used.
fn router_with_full_queue(node: &Node) -> (Router, impl Sized + use<>) {
    let (engine, queue) = mpsc::channel(1);
    let (reply, answer) = oneshot::channel();
    engine
        .try_send(Command::Vote {
            poll: PollId::new("superbowl").unwrap(),
            option: OptionIndex(0),
            vote_id: VoteId(1),
            reply,
        })
        .unwrap();
    let (stopping_tx, stopping) = watch::channel(false);
    let state = AppState {
        engine,
        results: node.started.handle.results.clone(),
        metrics: node.started.handle.metrics.clone(),
        vote_id_key: Arc::new(VoteIdKey::new([9; 32])),
        node: tally_core::NodeId::new("test").unwrap(),
        admin_token: Arc::from(TOKEN),
        clock: node.clock.clone(),
        sse_tick_ms: 10,
        sse_subscribers_max: 10,
        health: Arc::new(Health::default()),
        stopping,
        public_endpoints: Vec::<String>::new().into(),
        abuse: Arc::default(),
        body_read_timeout: STEP,
    };
    (http::router(state), (queue, answer, stopping_tx))
}

#[tokio::test]
async fn a_full_engine_queue_sheds_votes_batches_and_admin_changes_with_503_and_retry_after() {
    // Goal: when the engine cannot keep up, requests are refused at once, not queued without
    // bound, and the client is told when to retry. Nothing reaches the engine.
    let node = start();
    let (router, _keep) = router_with_full_queue(&node);
    let vote = json!({"option": "green", "vote_id": "a"});
    let batch = json!({"votes": [vote.clone()]});
    let create = json!({"id": "shed", "options": ["a", "b"]});
    for request in [
        post_json(VOTES, &vote),
        post_json(BATCH, &batch),
        with_token(post_json("/v1/admin/polls", &create), TOKEN),
        with_token(
            Request::post("/v1/admin/polls/superbowl/close")
                .body(Body::empty())
                .unwrap(),
            TOKEN,
        ),
    ] {
        let reply = send_to(&router, request).await;
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
        assert_eq!(reply.retry_after(), Some("1"));
    }
    // Reads do not need the engine.
    let results = send_to(&router, get("/v1/polls/superbowl/results")).await;
    assert_eq!(results.status, StatusCode::OK);
    let metrics = node.send(get("/metrics")).await.text();
    assert!(metrics.contains("tally_vote_rejections_total{reason=\"overloaded\"} 2"));
    node.results_settle("superbowl", 0).await;
    node.stop().await;
}

#[tokio::test]
async fn a_stopped_engine_answers_503_unavailable() {
    // Goal: a vote sent while the node stops is refused, not lost silently. Method: a router
    // whose engine queue is closed.
    let node = start();
    let (engine, queue) = mpsc::channel(1);
    drop(queue);
    let (_stopping_tx, stopping) = watch::channel(false);
    let state = AppState {
        engine,
        results: node.started.handle.results.clone(),
        metrics: node.started.handle.metrics.clone(),
        vote_id_key: Arc::new(VoteIdKey::new([9; 32])),
        node: tally_core::NodeId::new("test").unwrap(),
        admin_token: Arc::from(TOKEN),
        clock: node.clock.clone(),
        sse_tick_ms: 10,
        sse_subscribers_max: 10,
        health: Arc::new(Health::default()),
        stopping,
        public_endpoints: Vec::<String>::new().into(),
        abuse: Arc::default(),
        body_read_timeout: STEP,
    };
    let router = http::router(state);
    let reply = send_to(
        &router,
        post_json(VOTES, &json!({"option": "green", "vote_id": "a"})),
    )
    .await;
    let message = reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(message.contains("stopping"), "{message}");
    assert_eq!(reply.retry_after(), Some("5"));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Restart

#[tokio::test]
async fn after_a_restart_every_counted_vote_is_still_counted_and_retries_are_duplicates() {
    // Goal: acknowledged means durable. Method: count votes (single and batch, both
    // encodings), stop, start a new node on the same storage, read and retry everything.
    let node = start();
    for (option, id) in [("green", "a"), ("blue", "b"), ("green", "c")] {
        assert_eq!(
            node.vote("superbowl", option, id).await.json()["status"],
            "counted"
        );
    }
    let batch =
        json!({"votes": [{"option": "blue", "vote_id": "d"}, {"option": "blue", "vote_id": "e"}]});
    assert_eq!(
        node.send(post_json(BATCH, &batch)).await.json()["counted"],
        2
    );
    let binary = BinaryBatch {
        votes: vec![BinaryVote {
            option: 0,
            vote_id: [7; 16],
        }],
    };
    let binary = postcard::to_allocvec(&binary).unwrap();
    let reply = node
        .send(post_bytes(BATCH, POSTCARD_MEDIA_TYPE, binary.clone()))
        .await;
    assert_eq!(reply.json()["counted"], 1);
    let created = node
        .admin(
            "/v1/admin/polls",
            Some(json!({"id": "kept", "options": ["x", "y"], "open": true})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let clock = node.clock.clone();
    let storage = node.stop().await;

    let node = start_on(&test_config(), storage, clock);
    let results = node.results_settle("superbowl", 6).await;
    assert_eq!(results["options"][0]["votes"], 3);
    assert_eq!(results["options"][1]["votes"], 3);
    for (option, id) in [("blue", "a"), ("blue", "b"), ("green", "c"), ("green", "d")] {
        assert_eq!(
            node.vote("superbowl", option, id).await.json()["status"],
            "duplicate"
        );
    }
    assert_eq!(
        node.send(post_json(BATCH, &batch)).await.json()["duplicate"],
        2
    );
    let reply = node
        .send(post_bytes(BATCH, POSTCARD_MEDIA_TYPE, binary))
        .await;
    assert_eq!(reply.json()["statuses"], json!(["duplicate"]));
    assert_eq!(
        node.vote("kept", "x", "k").await.json()["status"],
        "counted"
    );
    node.results_settle("superbowl", 6).await;
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document

/// Every (method, path) pair the document lists.
fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// The routes a node serves. A new route must be added here and to the document, and the
/// test below checks the router answers each.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/polls/{poll}/votes"),
    ("POST", "/v1/polls/{poll}/votes/batch"),
    ("GET", "/v1/polls"),
    ("GET", "/v1/polls/{poll}/results"),
    ("GET", "/v1/polls/{poll}/history"),
    ("GET", "/v1/polls/{poll}/stream"),
    ("POST", "/v1/admin/polls"),
    ("POST", "/v1/admin/polls/{poll}/open"),
    ("POST", "/v1/admin/polls/{poll}/close"),
    ("POST", "/v1/admin/polls/{poll}/lookup"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("GET", "/polls/{poll}"),
    ("GET", "/assets/dashboard.css"),
    ("GET", "/assets/dashboard.js"),
];

async fn served_document(node: &Node) -> Value {
    let reply = node.send(get(http::OPENAPI_PATH)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/json");
    reply.json()
}

#[tokio::test]
async fn the_openapi_document_is_json_of_openapi_3_and_lists_exactly_the_routes() {
    // Goal: /openapi.json parses, is OpenAPI 3.x, and names exactly the routes the router has.
    // Method: compare the document's (method, path) pairs with the route list; send each
    // documented route a request and check the router has it (not the 404 of an unknown path,
    // not a 405); send every other method to each documented path and check it is a 405; and
    // check that near-miss paths are unknown.
    let node = start();
    let document = served_document(&node).await;
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "{version}");
    assert_eq!(document["info"]["title"], "Tally");
    assert_eq!(
        document,
        serde_json::to_value(http::openapi_document()).unwrap()
    );

    let documented = documented_routes(&document);
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, listed);

    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let uri = path.replace("{poll}", "superbowl");
        for method in &methods {
            let request = Request::builder()
                .method(method)
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let response = respond(&node.started.router, request).await;
            let status = response.status();
            let is_documented = documented.contains(&(method.to_string(), path.clone()));
            let body = if path.ends_with("/stream") && status == StatusCode::OK {
                Bytes::new() // endless
            } else {
                response.into_body().collect().await.unwrap().to_bytes()
            };
            let code = serde_json::from_slice::<Value>(&body)
                .map(|v| v["error"].clone())
                .unwrap_or(Value::Null);
            if is_documented {
                assert_ne!(
                    code, "not_found",
                    "{method} {uri} is documented, not routed"
                );
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri} answers but is not documented"
                );
            }
        }
    }
    for uri in [
        "/v1/polls/superbowl",
        "/v1/admin/polls/superbowl",
        "/v1/polls/superbowl/votes/other",
        "/v1/admin",
        "/assets/other.js",
        "/polls",
        "/openapi.yaml",
    ] {
        node.send(get(uri))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    node.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_bodies_errors_and_statuses_of_each_route() {
    // Goal: a client can be generated from the document: request bodies with their content
    // types, the error shape, and every status each route can answer.
    let node = start();
    let document = served_document(&node).await;
    let operation = |method: &str, path: &str| document["paths"][path][method].clone();
    let statuses = |method: &str, path: &str| -> BTreeSet<String> {
        operation(method, path)["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"))
            .keys()
            .cloned()
            .collect()
    };
    let expected: &[(&str, &str, &[&str])] = &[
        (
            "post",
            "/v1/polls/{poll}/votes",
            &[
                "200", "400", "401", "404", "408", "409", "413", "415", "422", "429", "503",
            ],
        ),
        (
            "post",
            "/v1/polls/{poll}/votes/batch",
            &[
                "200", "400", "401", "404", "408", "409", "413", "415", "429", "503",
            ],
        ),
        ("get", "/v1/polls", &["200"]),
        ("get", "/v1/polls/{poll}/results", &["200", "404", "422"]),
        ("get", "/v1/polls/{poll}/history", &["200", "404"]),
        ("get", "/v1/polls/{poll}/stream", &["200", "404", "503"]),
        (
            "post",
            "/v1/admin/polls",
            &[
                "200", "201", "400", "401", "408", "409", "413", "415", "422", "503",
            ],
        ),
        (
            "post",
            "/v1/admin/polls/{poll}/open",
            &["200", "401", "404", "503"],
        ),
        (
            "post",
            "/v1/admin/polls/{poll}/close",
            &["200", "401", "404", "503"],
        ),
        (
            "post",
            "/v1/admin/polls/{poll}/lookup",
            &["200", "400", "401", "404", "413", "415", "503"],
        ),
        ("get", "/metrics", &["200"]),
        ("get", "/healthz", &["200", "503"]),
        ("get", "/readyz", &["200", "503"]),
    ];
    // The probes answer plain text, 503 included (a failed log; not ready).
    let probe = |path: &str| path == "/healthz" || path == "/readyz";
    for (method, path, codes) in expected {
        let want: BTreeSet<String> = codes.iter().map(|c| c.to_string()).collect();
        assert_eq!(statuses(method, path), want, "{method} {path}");
        for code in codes.iter().filter(|c| c.starts_with(['4', '5'])) {
            let response = &operation(method, path)["responses"][code];
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            if !probe(path) {
                assert_eq!(
                    schema, "#/components/schemas/ErrorBody",
                    "{method} {path} {code}"
                );
            }
            if *code == "503" && !probe(path) {
                assert!(response["headers"]["Retry-After"].is_object(), "{path}");
            }
        }
        let has_poll = operation(method, path)["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "poll" && p["in"] == "path"));
        assert_eq!(has_poll, path.contains("{poll}"), "{method} {path}");
    }

    let batch_body = &operation("post", "/v1/polls/{poll}/votes/batch")["requestBody"]["content"];
    assert_eq!(
        batch_body["application/json"]["schema"]["$ref"],
        "#/components/schemas/BatchRequest"
    );
    assert_eq!(
        batch_body["application/x-postcard"]["schema"]["$ref"],
        "#/components/schemas/BinaryBatch"
    );
    let batch_answer =
        &operation("post", "/v1/polls/{poll}/votes/batch")["responses"]["200"]["content"];
    for media_type in ["application/json", "application/x-postcard"] {
        assert_eq!(
            batch_answer[media_type]["schema"]["$ref"], "#/components/schemas/BatchResponse",
            "{media_type}"
        );
    }
    let vote_body = &operation("post", "/v1/polls/{poll}/votes")["requestBody"]["content"];
    assert_eq!(
        vote_body["application/json"]["schema"]["$ref"],
        "#/components/schemas/VoteRequest"
    );
    let parameters = operation("post", "/v1/polls/{poll}/votes")["parameters"].clone();
    assert!(
        parameters
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    let results_parameters = operation("get", "/v1/polls/{poll}/results")["parameters"].clone();
    assert!(
        results_parameters
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "at" && p["in"] == "query")
    );
    for admin in [
        ("post", "/v1/admin/polls"),
        ("post", "/v1/admin/polls/{poll}/open"),
        ("post", "/v1/admin/polls/{poll}/close"),
        ("post", "/v1/admin/polls/{poll}/lookup"),
    ] {
        assert_eq!(
            operation(admin.0, admin.1)["security"],
            json!([{"admin_token": []}])
        );
    }
    let schemes = &document["components"]["securitySchemes"]["admin_token"];
    assert_eq!(schemes["scheme"], "bearer");

    let schemas = &document["components"]["schemas"];
    let error = &schemas["ErrorBody"];
    assert_eq!(error["required"], json!(["error", "message"]));
    let codes = schemas["ErrorCode"]["enum"].as_array().unwrap();
    for code in [
        "malformed",
        "unknown_poll",
        "poll_not_open",
        "overloaded",
        "method_not_allowed",
        "poll_disputed",
    ] {
        assert!(codes.contains(&json!(code)), "{code}");
    }
    let statuses = schemas["BatchVoteStatus"]["enum"].as_array().unwrap();
    assert_eq!(statuses.len(), 5);
    for name in [
        "VoteResponse",
        "BatchResponse",
        "PollResults",
        "History",
        "PollSummary",
        "CreatePoll",
        "AdminResponse",
    ] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }
    // Every schema the document refers to is defined.
    let text = document.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas[name].is_object(), "dangling reference to {name}");
    }
    node.stop().await;
}

#[tokio::test]
async fn other_origins_may_vote_and_read_but_not_send_the_admin_token() {
    // Goal: a voting page served by one region can fail over to another (CORS), while browsers
    // cannot call the admin API cross-origin. Method: CORS preflights for a vote and for an
    // admin call with `authorization`.
    let node = start();
    let preflight = |headers: &'static str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/polls/superbowl/votes")
            .header("origin", "https://app.example.net")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers)
            .body(Body::empty())
            .unwrap()
    };
    let vote = node.send(preflight("content-type")).await;
    assert_eq!(vote.status, StatusCode::OK);
    assert_eq!(
        vote.headers.get("access-control-allow-origin").unwrap(),
        "*"
    );
    let allowed = vote.headers.get("access-control-allow-headers").unwrap();
    assert!(allowed.to_str().unwrap().contains("content-type"));
    assert!(!allowed.to_str().unwrap().contains("authorization"));
    let read = node
        .send(
            Request::get("/v1/polls/superbowl/results")
                .header("origin", "https://app.example.net")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        read.headers.get("access-control-allow-origin").unwrap(),
        "*"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_voting_page_and_browser_client_are_served_and_the_page_may_reach_the_regions() {
    // Goal: /vote/{poll} lists the configured regions and its CSP lets it connect to exactly
    // those (and itself); /client.js is served as a module.
    let config = Config {
        public_endpoints: vec![
            "https://us-east.tally.example.net".into(),
            "https://us-west.tally.example.net".into(),
        ],
        ..Config::default()
    };
    let node = start_with(&config);
    let page = node.send(get("/vote/superbowl")).await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("connect-src 'self' https://us-east.tally.example.net https://us-west.tally.example.net;"),
        "{csp}"
    );
    assert!(
        page.text()
            .contains("[&quot;https://us-east.tally.example.net&quot;,"),
        "{}",
        page.text()
    );
    let script = node.send(get("/client.js")).await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.headers.get("content-type").unwrap(),
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().contains("export function createClient"));
    let bad = Config {
        public_endpoints: vec!["https://a.example.net/path".into()],
        ..Config::default()
    };
    let error = bad.validate().err().unwrap().to_string();
    assert!(error.contains("public_endpoints"), "{error}");
    node.stop().await;
}
