//! The door: shedding when the edge is full, abuse controls, the nodes' batch credential, and
//! an orderly stop that answers every vote held.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use tally_core::PollId;
use tally_core::abuse::sign_hmac_token;
use tally_serve::connections::ClientAddr;

use crate::kit::{self, Mode, T0_MS, VOTES, id, post_json, rig_with};

#[tokio::test(start_paused = true)]
async fn a_full_edge_sheds_new_votes_at_once_with_503_overloaded() {
    // Goal: past votes_waiting_max the door answers 503 + Retry-After without waiting, and
    // counts it (TallyEdgeShedding's rejections). Method: two votes stuck at a blackholed node
    // fill the door; a third is shed.
    let mut config = kit::edge_config(&["a"]);
    config.votes_waiting_max = 2;
    config.vote_deadline_ms = 5_000;
    let rig = rig_with(&["a"], |_| {}, config).await;
    rig.nodes[0].set_mode(Mode::Blackhole);
    let router = rig.edge.router.clone();
    let stuck: Vec<_> = (0..2)
        .map(|n| {
            let router = router.clone();
            tokio::spawn(async move {
                let body = json!({"option": "green", "vote_id": id(n)});
                kit::send_to(&router, post_json(VOTES, &body)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let shed = rig.vote("green", &id(3)).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "shed at once");
    assert_eq!(
        (shed.status, shed.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );
    assert_eq!(shed.retry_after(), Some("1"));
    let shed_counted = rig
        .edge
        .handle
        .metrics
        .rejections
        .get_or_create(&vec![("code", "overloaded")])
        .get();
    assert_eq!(shed_counted, 1);
    for vote in stuck {
        let reply = vote.await.unwrap();
        assert_eq!(reply.code(), "unconfirmed", "{}", reply.text());
    }
}

fn with_client(mut request: Request<Body>, address: &str) -> Request<Body> {
    let address: SocketAddr = address.parse().unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(ClientAddr(Some(address))));
    request
}

#[tokio::test(start_paused = true)]
async fn the_per_ip_limit_holds_at_the_edge_and_believes_only_trusted_proxies() {
    // Goal: per-IP limits at the edge, keyed by the forwarded address only from a trusted
    // proxy. Method: burst 2; requests from two addresses, one through a proxy.
    let mut config = kit::edge_config(&["a"]);
    config.rate_limit_per_ip_per_second = 1;
    config.rate_limit_per_ip_burst = 2;
    config.trusted_proxies = vec!["10.0.0.0/8".into()];
    let rig = rig_with(&["a"], |_| {}, config).await;
    let vote = |n: u32| post_json(VOTES, &json!({"option": "green", "vote_id": id(n)}));
    for n in 0..2 {
        assert_eq!(
            rig.send(with_client(vote(n), "203.0.113.5:1")).await.status,
            StatusCode::OK
        );
    }
    let limited = rig.send(with_client(vote(2), "203.0.113.5:1")).await;
    assert_eq!(
        (limited.status, limited.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(limited.retry_after().is_some());
    // Through the proxy: the forwarded client is limited, not the proxy.
    let forwarded = |n: u32, client: &str| {
        let mut request = with_client(vote(n), "10.1.1.1:1");
        request
            .headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        request
    };
    for n in 10..12 {
        assert_eq!(
            rig.send(forwarded(n, "198.51.100.1")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        rig.send(forwarded(12, "198.51.100.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        rig.send(forwarded(13, "198.51.100.2")).await.status,
        StatusCode::OK
    );
    // A stranger's forged header is ignored: it is limited by its own address.
    let mut forged = with_client(vote(20), "203.0.113.5:1");
    forged
        .headers_mut()
        .insert("x-forwarded-for", "198.51.100.9".parse().unwrap());
    assert_eq!(rig.send(forged).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn vote_tokens_are_checked_at_the_edge_and_the_nodes_take_batches_only_with_the_batch_token()
{
    // Goal: with vote tokens on, the edge requires and verifies them (the voter becomes the
    // vote ID, as on a node), and nodes take the edge's batches only with the batch token.
    // Method: token on edge and nodes; an edge without the batch token, then with it.
    let key = "00112233445566778899aabbccddeeff";
    let node = |config: &mut tally_node::config::Config| {
        config.vote_token_hmac_key = key.into();
        config.batch_token = "edge-secret".into();
        config.admin_token = "admin-secret".into();
    };
    let mut config = kit::edge_config(&["a"]);
    config.vote_token_hmac_key = key.into();
    config.vote_deadline_ms = 500;
    let rig = rig_with(&["a"], node, config.clone()).await;
    let poll = PollId::new("superbowl").unwrap();
    let token = sign_hmac_token(&hex(key), &poll, "user-1", T0_MS + 60_000);
    let vote = |token: Option<&str>| {
        let mut request = Request::post(VOTES)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"option":"green"}"#))
            .unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("x-vote-token", token.parse().unwrap());
        }
        request
    };
    let missing = rig.send(vote(None)).await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (StatusCode::UNAUTHORIZED, "bad_vote_token")
    );
    let forged = rig.send(vote(Some("61.1.00"))).await;
    assert_eq!(forged.code(), "bad_vote_token");
    // Without the batch token the node refuses the batch (401): nothing is counted, and the
    // vote is answered 503 overloaded (never taken) at its deadline.
    let refused = rig.send(vote(Some(&token))).await;
    assert_eq!(refused.code(), "overloaded", "{}", refused.text());
    assert!(
        rig.nodes[0].batches.load(Ordering::SeqCst) > 0,
        "the batch reached the node"
    );

    config.batch_token = "edge-secret".into();
    let rig = rig_with(&["a"], node, config).await;
    let counted = rig.send(vote(Some(&token))).await.json();
    assert_eq!(counted["status"], "counted", "{counted}");
    let voter_id = tally_core::abuse::voter_vote_id(
        &tally_core::VoteIdKey::from_hex(tally_core::DEV_VOTE_ID_KEY_HEX).unwrap(),
        "user-1",
    )
    .unwrap();
    assert_eq!(counted["vote_id"], voter_id.to_string());
    assert_eq!(
        rig.send(vote(Some(&token))).await.json()["status"],
        "duplicate"
    );
    // The batch token opens nothing else on the node.
    let admin = Request::post("/v1/admin/polls/superbowl/close")
        .header(header::AUTHORIZATION, "Bearer edge-secret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        rig.nodes[0].send(admin).await.status,
        StatusCode::UNAUTHORIZED
    );
}

fn hex(text: &str) -> Vec<u8> {
    tally_core::abuse::from_hex(text).unwrap()
}

#[tokio::test(start_paused = true)]
async fn stopping_sends_what_lingers_at_once_and_answers_every_vote_held() {
    // Goal: a stop answers every vote the edge holds from a node (none is dropped, none waits
    // for a linger) and then ends. Method: a long linger holds votes; the edge stops.
    let mut config = kit::edge_config(&["a"]);
    config.linger_ms = 20;
    config.batch_votes_max = 1_000;
    let rig = rig_with(&["a"], |_| {}, config).await;
    let router = rig.edge.router.clone();
    let votes: Vec<_> = (0..5)
        .map(|n| {
            let router = router.clone();
            tokio::spawn(async move {
                let body = json!({"option": "blue", "vote_id": id(n)});
                kit::send_to(&router, post_json(VOTES, &body)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(router);
    let kit::Rig { edge, nodes, .. } = rig;
    let stopping = tokio::spawn(edge.stop(Duration::from_secs(5)));
    for vote in votes {
        assert_eq!(vote.await.unwrap().json()["status"], "counted");
    }
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
    nodes[0].settles_at(5).await;
}
