//! Votes through an edge are answered as the node answers them: same bodies, receipts, codes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::kit::{self, Mode, VOTES, get, id, post_bytes, post_json, rig, rig_with};

#[tokio::test(start_paused = true)]
async fn a_vote_through_the_edge_is_counted_with_the_nodes_receipt_and_its_retry_is_duplicate() {
    // Goal: the edge answers `counted` with the node's own receipt, then `duplicate`, and an
    // Idempotency-Key maps to the ID the node computes. Method: vote through the edge, read
    // the node's results and vote the same keys at the node directly.
    let rig = rig(&["a"]).await;
    let first = rig.vote("green", &id(1)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let body = first.json();
    assert_eq!(body["status"], "counted");
    assert_eq!(body["vote_id"], id(1));
    let actor = body["receipt"]["actor"].as_str().unwrap().to_owned();
    assert!(actor.starts_with("a#"), "{actor}");
    assert_eq!(body["receipt"]["seq"], 1);
    let again = rig.vote("green", &id(1)).await.json();
    assert_eq!(
        again,
        json!({"status": "duplicate", "vote_id": id(1), "receipt": null})
    );

    let keyed = Request::post(VOTES)
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", "tap-77")
        .body(Body::from(r#"{"option":"blue"}"#))
        .unwrap();
    let keyed = rig.send(keyed).await.json();
    assert_eq!(keyed["status"], "counted");
    let at_node = rig.nodes[0]
        .send(
            Request::post(VOTES)
                .header(header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", "tap-77")
                .body(Body::from(r#"{"option":"blue"}"#))
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(
        at_node["status"], "duplicate",
        "the node maps the key to the same ID"
    );
    assert_eq!(at_node["vote_id"], keyed["vote_id"]);
    rig.nodes[0].settles_at(2).await;
    assert_eq!(
        rig.metric("tally_edge_votes_answered_total{outcome=\"counted\"}")
            .await,
        2.0
    );
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_refused_at_the_edge_with_the_nodes_codes_and_never_sent_on() {
    // Goal: every kind of bad vote gets the node's status and code from the edge, and no
    // node sees it. Method: each request sent to the edge and to the node directly.
    let rig = rig(&["a"]).await;
    let huge = vec![b' '; 5 * 1024];
    type MakeRequest = Box<dyn Fn() -> Request<Body>>;
    let cases: Vec<(&str, MakeRequest)> = vec![
        (
            "malformed JSON",
            Box::new(|| post_bytes(VOTES, "application/json", b"{".to_vec())),
        ),
        (
            "unknown field",
            Box::new(|| post_json(VOTES, &json!({"option": "green", "vote_id": "k", "x": 1}))),
        ),
        (
            "unknown poll",
            Box::new(|| {
                post_json(
                    "/v1/polls/nope/votes",
                    &json!({"option": "green", "vote_id": "k"}),
                )
            }),
        ),
        (
            "bad poll name",
            Box::new(|| {
                post_json(
                    "/v1/polls/a%20b/votes",
                    &json!({"option": "green", "vote_id": "k"}),
                )
            }),
        ),
        (
            "unknown option",
            Box::new(|| post_json(VOTES, &json!({"option": "red", "vote_id": "k"}))),
        ),
        (
            "no vote ID",
            Box::new(|| post_json(VOTES, &json!({"option": "green"}))),
        ),
        (
            "empty vote ID",
            Box::new(|| post_json(VOTES, &json!({"option": "green", "vote_id": ""}))),
        ),
        (
            "long vote ID",
            Box::new(|| {
                post_json(
                    VOTES,
                    &json!({"option": "green", "vote_id": "k".repeat(129)}),
                )
            }),
        ),
        (
            "wrong content type",
            Box::new(|| {
                post_bytes(
                    VOTES,
                    "text/plain",
                    br#"{"option":"green","vote_id":"k"}"#.to_vec(),
                )
            }),
        ),
        (
            "huge body",
            Box::new(move || post_bytes(VOTES, "application/json", huge.clone())),
        ),
    ];
    for (what, request) in cases {
        let at_edge = rig.send(request()).await;
        let at_node = rig.nodes[0].send(request()).await;
        assert!(
            at_edge.status.is_client_error(),
            "{what}: {}",
            at_edge.status
        );
        assert_eq!(at_edge.status, at_node.status, "{what}");
        assert_eq!(at_edge.code(), at_node.code(), "{what}");
        assert_eq!(
            at_edge.json()["message"],
            at_node.json()["message"],
            "{what}"
        );
    }
    assert_eq!(
        rig.nodes[0]
            .batches
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_finishes_is_refused_with_408_after_the_body_deadline() {
    // Goal: a slow body holds the edge no longer than the node would. Method: a body stream
    // that sends half a vote and stalls; the paused clock jumps to the deadline.
    let mut config = kit::edge_config(&["a"]);
    config.body_read_timeout_ms = 500;
    let rig = rig_with(&["a"], |_| {}, config).await;
    let stalled = futures_stall();
    let request = Request::post(VOTES)
        .header(header::CONTENT_TYPE, "application/json")
        .body(stalled)
        .unwrap();
    let reply = rig.send(request).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.code(), "body_timeout");
}

/// A body that yields half a vote and then nothing, for ever.
fn futures_stall() -> Body {
    let chunks = tokio_stream::iter([Ok::<_, std::convert::Infallible>(
        axum::body::Bytes::from_static(br#"{"option":"#),
    )]);
    let forever = tokio_stream::StreamExt::chain(chunks, tokio_stream::pending());
    Body::from_stream(forever)
}

#[tokio::test(start_paused = true)]
async fn operational_routes_and_reads_answer_and_other_paths_get_the_nodes_json_404_and_405() {
    // Goal: healthz, readyz, metrics; reads answered (from the fan-out); JSON 404/405 for
    // everything else. Method: one request each.
    let rig = rig(&["a"]).await;
    assert_eq!(rig.send(get("/healthz")).await.text(), "ok\n");
    assert_eq!(rig.send(get("/readyz")).await.text(), "ready\n");
    let metrics = rig.send(get("/metrics")).await;
    assert!(
        metrics
            .text()
            .contains("tally_edge_upstream_ready{upstream=\"http://a\"} 1"),
        "{}",
        metrics.text()
    );
    // Reads come from the nearest ready node, as it answers them.
    let results = rig.send(get("/v1/polls/superbowl/results")).await;
    assert_eq!(results.status, StatusCode::OK, "{}", results.text());
    assert_eq!(results.json()["served_by"], "a");
    assert_eq!(
        rig.send(get("/v1/polls")).await.json()[0]["id"],
        "superbowl"
    );
    let unknown = rig.send(get("/v1/polls/nope/history")).await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_poll")
    );
    let missing = rig.send(get("/v1/polls/superbowl/nothing")).await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let wrong = rig.send(get(VOTES)).await;
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    // A node that stops answering its probe makes the edge not ready (no node to send to).
    rig.nodes[0].set_mode(Mode::Down);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let not_ready = rig.send(get("/readyz")).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(not_ready.text().contains("no_node"), "{}", not_ready.text());
    let refused = rig.vote("green", &id(1)).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(refused.retry_after().is_some());
}

#[tokio::test(start_paused = true)]
async fn votes_are_coalesced_into_batches_of_at_most_n_and_a_lone_vote_at_an_idle_node_leaves_at_once()
 {
    // Goal: N votes make a batch at once; a vote at an idle node does not wait for the linger;
    // while the node's slots are busy votes gather, and a partial batch leaves at the linger.
    // Method: 10 concurrent votes with N = 4; a lone vote; then a slow node with one slot.
    let mut config = kit::edge_config(&["a"]);
    config.batch_votes_max = 4;
    config.linger_ms = 5;
    config.batches_in_flight_per_upstream = 1;
    let rig = rig_with(&["a"], |_| {}, config).await;
    let ids: Vec<String> = (0..10).map(id).collect();
    let votes = ids.iter().map(|vote_id| rig.vote("green", vote_id));
    let replies = futures_util::future::join_all(votes).await;
    for reply in &replies {
        assert_eq!(reply.json()["status"], "counted", "{}", reply.text());
    }
    let sizes = rig.nodes[0].batch_votes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 10, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 4), "{sizes:?}");
    assert!(sizes.len() >= 3, "{sizes:?}");
    // A lone vote at an idle node leaves at once, not after the 5 ms linger.
    let started = tokio::time::Instant::now();
    assert_eq!(rig.vote("blue", &id(99)).await.json()["status"], "counted");
    assert!(
        started.elapsed() < Duration::from_millis(5),
        "{:?}",
        started.elapsed()
    );
    // The one slot busy for 50 ms: the votes that come meanwhile gather into one batch.
    rig.nodes[0].set_mode(Mode::Slow(Duration::from_millis(50)));
    rig.nodes[0].batch_votes.lock().unwrap().clear();
    let first = {
        let router = rig.edge.router.clone();
        tokio::spawn(async move {
            let body = json!({"option": "green", "vote_id": id(100)});
            kit::send_to(&router, post_json(VOTES, &body)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let later: Vec<String> = (101..104).map(id).collect();
    let replies = futures_util::future::join_all(later.iter().map(|v| rig.vote("blue", v))).await;
    assert!(replies.iter().all(|r| r.json()["status"] == "counted"));
    assert_eq!(first.await.unwrap().json()["status"], "counted");
    let sizes = rig.nodes[0].batch_votes.lock().unwrap().clone();
    assert_eq!(
        sizes,
        [1, 3],
        "one vote at once, three gathered while the slot was busy"
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_interval_gathers_a_polls_next_votes_even_for_an_idle_node() {
    // Goal: with `batch_interval_ms`, a partial batch leaves no sooner than the interval after
    // the poll's previous batch, idle node or not, so a high rate makes big batches; the first
    // vote, with no batch before it, still leaves at once. Method: one vote, then four at once
    // right after it, against an in-process node that answers at once (paused clock).
    let mut config = kit::edge_config(&["a"]);
    config.batch_votes_max = 1_000;
    config.batch_interval_ms = 20;
    let rig = rig_with(&["a"], |_| {}, config).await;
    let started = tokio::time::Instant::now();
    assert_eq!(rig.vote("green", &id(1)).await.json()["status"], "counted");
    assert!(
        started.elapsed() < Duration::from_millis(5),
        "{:?}",
        started.elapsed()
    );
    let ids: Vec<String> = (2..6).map(id).collect();
    let replies = futures_util::future::join_all(ids.iter().map(|v| rig.vote("blue", v))).await;
    assert!(replies.iter().all(|r| r.json()["status"] == "counted"));
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "{:?}",
        started.elapsed()
    );
    let sizes = rig.nodes[0].batch_votes.lock().unwrap().clone();
    assert_eq!(
        sizes,
        [1, 4],
        "the four votes waited out the interval together"
    );
}

#[tokio::test(start_paused = true)]
async fn an_edge_sends_each_node_its_own_option_order() {
    // Goal: nodes that list a poll's options in different orders each count the option the
    // voter named. Method: node b lists blue first; a is down, so b takes the vote.
    let rig = rig_with(
        &["a", "b"],
        |config| {
            if config.node_id == "b" {
                config.polls[0].options.reverse();
            }
        },
        kit::edge_config(&["a", "b"]),
    )
    .await;
    rig.nodes[0].set_mode(Mode::Down);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.vote("green", &id(1)).await.json()["status"], "counted");
    rig.nodes[1].settles_at(1).await;
    let results = rig.nodes[1]
        .send(get("/v1/polls/superbowl/results"))
        .await
        .json();
    let green = results["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "green")
        .unwrap();
    assert_eq!(green["votes"], 1, "{results}");
}

#[tokio::test(start_paused = true)]
async fn a_batch_through_the_edge_is_answered_vote_by_vote_with_receipts_and_the_answering_node() {
    // Goal: the edge's batch route answers like a node's (per-vote statuses, receipts with
    // `?receipts=true`, postcard when asked), naming the node that made each vote durable,
    // and `unconfirmed` for a vote whose answer was lost past its deadline. Method: JSON and
    // postcard batches to an edge over nodes that then lose answers.
    let mut config = kit::edge_config(&["a"]);
    config.vote_deadline_ms = 600;
    config.batch_timeout_ms = 200;
    let rig = rig_with(&["a"], |_| {}, config).await;
    assert_eq!(rig.vote("green", &id(1)).await.json()["status"], "counted");
    let batch = json!({"votes": [
        {"option": "blue", "vote_id": id(2)},
        {"option": "green", "vote_id": id(1)},
        {"option": "purple", "vote_id": id(3)},
        {"option": "green", "vote_id": ""},
    ]});
    let uri = "/v1/polls/superbowl/votes/batch?receipts=true";
    let reply = rig.send(post_json(uri, &batch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        answer["batch"]["statuses"],
        json!(["counted", "duplicate", "unknown_option", "bad_vote_id"])
    );
    assert_eq!(answer["nodes"], json!(["a"]));
    assert_eq!(answer["answered_by"], json!([0, 0, 255, 255]));
    assert!(
        answer["actors"][0].as_str().unwrap().starts_with("a#"),
        "{answer}"
    );
    assert_eq!(answer["receipts"][0]["seq"], 2);
    // Postcard in and out, without receipts: the node's BatchResponse.
    let binary = tally_client::api::BinaryBatch {
        votes: vec![tally_client::api::BinaryVote {
            option: 1,
            vote_id: [9; 16],
        }],
    };
    let mut request = post_bytes(
        "/v1/polls/superbowl/votes/batch",
        tally_client::api::POSTCARD_MEDIA_TYPE,
        postcard::to_allocvec(&binary).unwrap(),
    );
    request.headers_mut().insert(
        header::ACCEPT,
        tally_client::api::POSTCARD_MEDIA_TYPE.parse().unwrap(),
    );
    let reply = rig.send(request).await;
    let decoded: tally_client::api::BatchResponse = postcard::from_bytes(&reply.body).unwrap();
    assert_eq!(
        decoded.statuses,
        [tally_client::api::BatchVoteStatus::Counted]
    );
    // Lost answers past the deadline: unconfirmed, vote by vote.
    rig.nodes[0].set_mode(Mode::LosesAnswers);
    let lost = json!({"votes": [{"option": "blue", "vote_id": id(4)}]});
    let reply = rig.send(post_json(uri, &lost)).await.json();
    assert_eq!(
        reply["batch"]["statuses"],
        json!(["unconfirmed"]),
        "{reply}"
    );
    assert_eq!(reply["answered_by"], json!([255]));
    // A poll-level refusal refuses the whole batch, as on a node.
    let unknown = rig
        .send(post_json("/v1/polls/nope/votes/batch", &lost))
        .await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_poll")
    );
}
