//! A single vote: counted, duplicate, and every way its request can be wrong.

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tally_node::config::{Config, VOTE_BODY_BYTES_MAX};

use crate::kit::*;

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
