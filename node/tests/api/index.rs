//! The dedupe index: reserved for expected votes, kept across a crash, enlarged, grown in the engine tick.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tally_node::config::Config;

use crate::kit::*;

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
