//! Operations: the vote lookup, metrics, health and holds, the dashboard, routing.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tally_node::health::Hold;
use tally_node::http::{BinaryLookup, BinaryLookupResponse, LOOKUP_NOT_HELD};

use crate::kit::*;

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
    // The engine timed its wake-ups (one wake-up may take several of the votes and the
    // batch at once, so only "some" is certain).
    let wakes = text
        .lines()
        .find_map(|l| l.strip_prefix("tally_engine_busy_seconds_count "))
        .unwrap_or_else(|| panic!("no engine busy histogram in\n{text}"));
    assert!(wakes.parse::<u64>().unwrap() >= 1, "{wakes}");
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
