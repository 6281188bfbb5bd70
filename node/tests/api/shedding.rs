//! Load shedding: a full or stopped engine queue answers 503 with Retry-After.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tally_core::{OptionIndex, PollId, VoteId};
use tally_node::engine::Command;
use tally_node::health::Health;
use tally_node::http::{self, AppState, Wiring};
use tokio::sync::{mpsc, oneshot, watch};

use crate::kit::*;

/// The router of `node`'s configuration and results around another engine queue and stop flag.
fn router_on(
    node: &Node,
    engine: mpsc::Sender<Command>,
    stopping: watch::Receiver<bool>,
) -> Router {
    let wiring = Wiring {
        engine,
        results: node.started.handle.results.clone(),
        metrics: node.started.handle.metrics.clone(),
        clock: node.clock.clone(),
        health: Arc::new(Health::default()),
        stopping,
    };
    let config = test_config();
    let validated = config.validate().unwrap();
    http::router(AppState::new(wiring, &config, &validated).unwrap())
}

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
    (
        router_on(node, engine, stopping),
        (queue, answer, stopping_tx),
    )
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
    let router = router_on(&node, engine, stopping);
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
