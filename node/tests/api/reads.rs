//! Reads: results, history, the live stream and its subscriber limit, the poll list.

use axum::http::{StatusCode, header};
use serde_json::{Value, json};
use tally_node::config::Config;

use crate::kit::*;

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
    // Goal: the SSE subscribers' memory budget sheds, and a place frees when a subscriber
    // leaves. Method: a budget of one subscriber through the router (hyper).
    let config = Config {
        viewer_memory_bytes: tally_serve::viewers::VIEWER_BYTES_THROUGH_HYPER,
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

/// `get(path)` with `If-None-Match: tag`.
fn get_if_none_match(path: &str, tag: &str) -> axum::http::Request<axum::body::Body> {
    let mut request = get(path);
    request
        .headers_mut()
        .insert(header::IF_NONE_MATCH, tag.parse().unwrap());
    request
}

#[tokio::test]
async fn reads_carry_a_strong_etag_and_cache_control_and_a_held_tag_gets_304() {
    // Goal: issue 23's cacheable reads on a node: results (also `?at=`), history and the poll
    // list answer with a strong ETag and Cache-Control; their bytes and tag stay the same
    // from one results tick to the next while no vote arrives (so a cache can hold them), a
    // request naming the tag gets 304 without a body, a vote changes the tag, and a closed
    // poll caches for longer. Method: read, wait for the next published snapshot, read again.
    let node = start();
    node.vote("superbowl", "green", "a").await;
    node.results_settle("superbowl", 1).await;
    let open = "public, max-age=1, stale-while-revalidate=2, stale-if-error=60";
    let paths = [
        "/v1/polls/superbowl/results",
        "/v1/polls/superbowl/results?at=0",
        "/v1/polls/superbowl/history",
        "/v1/polls",
    ];
    let mut tags = Vec::new();
    for path in paths {
        let first = node.send(get(path)).await;
        assert_eq!(first.status, StatusCode::OK, "{path}");
        assert_eq!(first.content_type(), "application/json", "{path}");
        assert_eq!(first.headers[header::CACHE_CONTROL], open, "{path}");
        let tag = first.headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() > 10,
            "{tag}"
        );
        // A second passes: a snapshot captured now has a later `as_of_ms`.
        node.clock.advance_seconds(1);
        let mut published = node.started.handle.results.clone();
        published.borrow_and_update();
        tokio::time::timeout(STEP, published.changed())
            .await
            .expect("a results tick")
            .unwrap();
        let again = node.send(get(path)).await;
        assert_eq!(
            again.body, first.body,
            "{path}: the same bytes a tick later"
        );
        assert_eq!(again.headers[header::ETAG], tag.as_str(), "{path}");
        let held = node.send(get_if_none_match(path, &tag)).await;
        assert_eq!(held.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(held.body.is_empty(), "{path}");
        assert_eq!(held.headers[header::ETAG], tag.as_str(), "{path}");
        assert_eq!(held.headers[header::CACHE_CONTROL], open, "{path}");
        let listed = format!("\"other\", W/{tag}");
        let weak = node.send(get_if_none_match(path, &listed)).await;
        assert_eq!(weak.status, StatusCode::NOT_MODIFIED, "{path}: {listed}");
        tags.push(tag);
    }
    node.vote("superbowl", "blue", "b").await;
    node.results_settle("superbowl", 2).await;
    for (path, tag) in paths.iter().zip(&tags).take(3) {
        let changed = node.send(get_if_none_match(path, tag)).await;
        assert_eq!(changed.status, StatusCode::OK, "{path}: a vote changes it");
        assert_ne!(changed.headers[header::ETAG], tag.as_str(), "{path}");
    }
    assert_eq!(
        node.admin("/v1/admin/polls/superbowl/close", None)
            .await
            .status,
        StatusCode::OK
    );
    let closed = node.send(get("/v1/polls/superbowl/results")).await;
    assert_eq!(closed.json()["status"], "closed");
    assert_eq!(
        closed.headers[header::CACHE_CONTROL],
        "public, max-age=60, stale-while-revalidate=600, stale-if-error=86400"
    );
    node.stop().await;
}
