//! Nodes that fail: lost answers are resent with the same vote IDs, breakers open and close,
//! deadlines turn into 503s that say whether the vote may have been counted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;

use crate::kit::{self, Mode, get, id, rig, rig_with};

#[tokio::test(start_paused = true)]
async fn a_lost_batch_answer_is_resent_with_the_same_ids_to_the_next_node() {
    // Goal: when a node carries a batch out but its answer is lost, the votes go to the next
    // node with the same IDs, and the voter gets that node's answer. Method: node a loses
    // every answer; both nodes are read afterwards.
    let rig = rig(&["a", "b"]).await;
    rig.nodes[0].set_mode(Mode::LosesAnswers);
    let reply = rig.vote("green", &id(1)).await;
    let body = reply.json();
    assert_eq!(body["status"], "counted", "{body}");
    assert!(
        body["receipt"]["actor"].as_str().unwrap().starts_with("b#"),
        "{body}"
    );
    // Both nodes hold the vote (unsynced here); in a cluster the winner rule keeps one.
    rig.nodes[0].settles_at(1).await;
    rig.nodes[1].settles_at(1).await;
    assert!(rig.metric("tally_edge_votes_resent_total").await >= 1.0);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_on_a_blackholed_node_fails_over_and_closes_after_recovery() {
    // Goal: the breaker's whole life against one node: open when it blackholes (votes go to
    // the next node meanwhile), still open while it answers too slowly (a failed half-open
    // probe), closed by a probe once it answers well, and votes back at the nearest node.
    // Method: node a changes behaviour between rounds of votes; the breaker gauge and the
    // nodes' batch counts tell where votes went.
    let mut config = kit::edge_config(&["a", "b"]);
    config.breaker_failures = 2;
    config.breaker_open_ms = 1_000;
    config.batch_timeout_ms = 300;
    config.slow_batch_ms = 100;
    let rig = rig_with(&["a", "b"], |_| {}, config).await;
    let breaker = "tally_edge_upstream_breaker_state{upstream=\"http://a\"}";
    let ok = |reply: &kit::Reply| reply.json()["status"] == "counted";

    // Batches vanish (a node whose vote path is stuck while its /readyz still answers: a
    // node that blackholes everything is caught by its probe first, see below).
    rig.nodes[0].set_mode(Mode::StallsBatches);
    for n in 0..3 {
        let reply = rig.vote("green", &id(n)).await;
        assert!(ok(&reply), "{}", reply.text());
        assert!(
            reply.json()["receipt"]["actor"]
                .as_str()
                .unwrap()
                .starts_with("b#")
        );
    }
    assert_eq!(rig.metric(breaker).await, 2.0, "open after two timeouts");
    assert!(
        rig.metric("tally_edge_upstream_breaker_openings_total{upstream=\"http://a\"}")
            .await
            >= 1.0
    );

    // Slow: ready again, but answers past slow_batch_ms; the half-open probe fails.
    rig.nodes[0].set_mode(Mode::Slow(Duration::from_millis(150)));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = rig.nodes[0].batches.load(Ordering::SeqCst);
    for n in 10..13 {
        assert!(ok(&rig.vote("green", &id(n)).await));
    }
    let probes = rig.nodes[0].batches.load(Ordering::SeqCst) - before;
    assert_eq!(probes, 1, "one half-open probe went to a, the rest to b");
    assert_eq!(
        rig.metric(breaker).await,
        2.0,
        "a slow probe opens it again"
    );

    // Recovered: after the (doubled) cool-down a probe succeeds and a takes votes again.
    rig.nodes[0].set_mode(Mode::Healthy);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for n in 20..23 {
        let reply = rig.vote("green", &id(n)).await;
        assert!(ok(&reply));
    }
    assert_eq!(
        rig.metric(breaker).await,
        0.0,
        "closed by a successful probe"
    );
    let last = rig.vote("green", &id(30)).await.json();
    assert!(
        last["receipt"]["actor"].as_str().unwrap().starts_with("a#"),
        "{last}"
    );

    // Blackholed whole: its probe times out, it turns not ready, votes go to b meanwhile.
    rig.nodes[0].set_mode(Mode::Blackhole);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        rig.metric("tally_edge_upstream_ready{upstream=\"http://a\"}")
            .await,
        0.0
    );
    let moved = rig.vote("green", &id(40)).await.json();
    assert!(
        moved["receipt"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("b#"),
        "{moved}"
    );
}

#[tokio::test(start_paused = true)]
async fn past_its_deadline_a_sent_vote_is_answered_503_unconfirmed_with_retry_after() {
    // Goal: a vote whose batch got no answer in time is answered 503 `unconfirmed` (it may
    // have been counted), and its retry with the same ID finishes it. Method: the only node
    // blackholes, then recovers.
    let mut config = kit::edge_config(&["a"]);
    config.vote_deadline_ms = 800;
    config.batch_timeout_ms = 300;
    let rig = rig_with(&["a"], |_| {}, config).await;
    rig.nodes[0].set_mode(Mode::LosesAnswers);
    let reply = rig.vote("green", &id(1)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.code(), "unconfirmed");
    assert_eq!(reply.retry_after(), Some("1"));
    rig.nodes[0].set_mode(Mode::Healthy);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    rig.wait_ready().await;
    let retry = rig.vote("green", &id(1)).await.json();
    assert_eq!(
        retry["status"], "duplicate",
        "the lost attempt had counted it: {retry}"
    );
    assert!(
        rig.metric("tally_edge_votes_answered_total{outcome=\"unconfirmed\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_is_not_ready_gets_no_votes() {
    // Goal: readiness comes from the node's /readyz: a node catching up is skipped. Method:
    // node a says 503 on /readyz; votes go to b; once a is ready they go to a.
    let rig = rig(&["a", "b"]).await;
    rig.nodes[0].set_mode(Mode::NotReady);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..3 {
        let reply = rig.vote("blue", &id(n)).await.json();
        assert!(
            reply["receipt"]["actor"]
                .as_str()
                .unwrap()
                .starts_with("b#"),
            "{reply}"
        );
    }
    assert_eq!(rig.nodes[0].batches.load(Ordering::SeqCst), 0);
    assert_eq!(
        rig.metric("tally_edge_upstream_ready{upstream=\"http://a\"}")
            .await,
        0.0
    );
    rig.nodes[0].set_mode(Mode::Healthy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = rig.vote("blue", &id(9)).await.json();
    assert!(
        reply["receipt"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("a#"),
        "{reply}"
    );
    assert_eq!(rig.send(get("/readyz")).await.status, StatusCode::OK);
}
