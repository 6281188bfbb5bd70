//! A restart: every counted vote is still counted, retries are duplicates, options reordered keep their votes.

use axum::http::StatusCode;
use serde_json::{Value, json};
use tally_node::http::{BinaryBatch, BinaryVote, POSTCARD_MEDIA_TYPE};

use crate::kit::*;

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
