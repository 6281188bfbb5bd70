//! Batches in JSON and postcard: answered vote by vote, malformed or over the limits refused.

use axum::http::{StatusCode, header};
use serde_json::{Value, json};
use tally_core::VoteId;
use tally_node::config::{BATCH_BODY_BYTES_MAX, BATCH_VOTES_MAX};
use tally_node::http::{
    BatchResponse, BatchVoteStatus, BinaryBatch, BinaryVote, POSTCARD_MEDIA_TYPE,
};

use crate::kit::*;

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

#[tokio::test]
async fn a_batch_asked_with_receipts_gets_a_receipt_for_each_vote_counted() {
    // Goal: `?receipts=true` (the edge's) answers the same statuses plus, per counted vote,
    // the receipt a single vote would carry. Method: a batch with a new vote, a duplicate and
    // a second new vote; the receipts are checked against a single vote's.
    let node = start();
    let single = node.vote("superbowl", "green", "first").await.json();
    let batch = json!({"votes": [
        {"option": "blue", "vote_id": "second"},
        {"option": "green", "vote_id": "first"},
        {"option": "green", "vote_id": "third"},
    ]});
    let uri = format!("{BATCH}?receipts=true");
    let reply = node.send(post_json(&uri, &batch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        answer["batch"]["statuses"],
        json!(["counted", "duplicate", "counted"])
    );
    assert_eq!(answer["actors"], json!([single["receipt"]["actor"]]));
    let seqs: Vec<u64> = answer["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["actor"], 0);
            r["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, [2, 3], "the single vote was seq 1");
    // In postcard, as the edge asks.
    let mut request = post_json(
        &uri,
        &json!({"votes": [{"option": "blue", "vote_id": "fourth"}]}),
    );
    request
        .headers_mut()
        .insert(header::ACCEPT, POSTCARD_MEDIA_TYPE.parse().unwrap());
    let reply = node.send(request).await;
    let decoded: tally_client::api::ReceiptedBatchResponse =
        postcard::from_bytes(&reply.body).unwrap();
    assert_eq!(decoded.batch.statuses, [BatchVoteStatus::Counted]);
    assert_eq!(decoded.receipts[0].seq, 4);
    node.stop().await;
}

#[tokio::test]
async fn with_a_batch_token_batches_need_it_or_the_admin_token_and_it_opens_nothing_else() {
    // Goal: the edges' credential allows batches and nothing else, and skips the per-IP
    // limit the edges enforce themselves. Method: a node with a batch token, an admin token
    // and a per-IP limit of one vote; batches with each credential and none.
    let node = start_with(&tally_node::config::Config {
        batch_token: "edge-secret".into(),
        rate_limit_per_ip_per_second: 1,
        rate_limit_per_ip_burst: 1,
        ..test_config()
    });
    let batch = |n: u32| json!({"votes": [{"option": "blue", "vote_id": format!("v{n}")}]});
    let from_edge = |request: axum::http::Request<axum::body::Body>| {
        let mut request = with_token(request, "edge-secret");
        let address: std::net::SocketAddr = "10.0.0.9:1".parse().unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(
            tally_node::connections::ClientAddr(Some(address)),
        ));
        request
    };
    let none = node.send(post_json(BATCH, &batch(0))).await;
    none.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    for n in 1..4 {
        let reply = node.send(from_edge(post_json(BATCH, &batch(n)))).await;
        assert_eq!(reply.status, StatusCode::OK, "batch {n}: {}", reply.text());
    }
    let admin = node
        .send(with_token(post_json(BATCH, &batch(9)), TOKEN))
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    let close = with_token(
        axum::http::Request::post("/v1/admin/polls/superbowl/close")
            .body(axum::body::Body::empty())
            .unwrap(),
        "edge-secret",
    );
    node.send(close)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    node.stop().await;
}
