//! The poll window: draft, open, closed, and a duration that closes it.

use axum::http::StatusCode;
use serde_json::json;
use tally_node::config::Config;

use crate::kit::*;

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
