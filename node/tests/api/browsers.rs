//! Browsers: CORS for other regions' pages, the voting page and the browser client.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tally_node::config::Config;

use crate::kit::*;

#[tokio::test]
async fn other_origins_may_vote_and_read_but_not_send_the_admin_token() {
    // Goal: a voting page served by one region can fail over to another (CORS), while browsers
    // cannot call the admin API cross-origin. Method: CORS preflights for a vote and for an
    // admin call with `authorization`.
    let node = start();
    let preflight = |headers: &'static str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/polls/superbowl/votes")
            .header("origin", "https://app.example.net")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers)
            .body(Body::empty())
            .unwrap()
    };
    let vote = node.send(preflight("content-type,x-vote-token")).await;
    assert_eq!(vote.status, StatusCode::OK);
    assert_eq!(
        vote.headers.get("access-control-allow-origin").unwrap(),
        "*"
    );
    let allowed = vote.headers.get("access-control-allow-headers").unwrap();
    assert!(allowed.to_str().unwrap().contains("content-type"));
    // The voter's token of per-voter limits, as an edge allows it (a page fails over between them).
    assert!(allowed.to_str().unwrap().contains("x-vote-token"));
    assert!(!allowed.to_str().unwrap().contains("authorization"));
    let read = node
        .send(
            Request::get("/v1/polls/superbowl/results")
                .header("origin", "https://app.example.net")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        read.headers.get("access-control-allow-origin").unwrap(),
        "*"
    );
    // The browser client honours a refusal's Retry-After, which a page of another origin can
    // read only when it is exposed.
    let exposed = read.headers.get("access-control-expose-headers").unwrap();
    assert!(exposed.to_str().unwrap().contains("retry-after"));
    node.stop().await;
}

#[tokio::test]
async fn the_voting_page_and_browser_client_are_served_and_the_page_may_reach_the_regions() {
    // Goal: /vote/{poll} lists the configured regions and its CSP lets it connect to exactly
    // those (and itself); /client.js is served as a module.
    let config = Config {
        public_endpoints: vec![
            "https://us-east.tally.example.net".into(),
            "https://us-west.tally.example.net".into(),
        ],
        ..Config::default()
    };
    let node = start_with(&config);
    let page = node.send(get("/vote/superbowl")).await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("connect-src 'self' https://us-east.tally.example.net https://us-west.tally.example.net;"),
        "{csp}"
    );
    assert!(
        page.text()
            .contains("[&quot;https://us-east.tally.example.net&quot;,"),
        "{}",
        page.text()
    );
    let script = node.send(get("/client.js")).await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.headers.get("content-type").unwrap(),
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().contains("export function createClient"));
    let bad = Config {
        public_endpoints: vec!["https://a.example.net/path".into()],
        ..Config::default()
    };
    let error = bad.validate().err().unwrap().to_string();
    assert!(error.contains("public_endpoints"), "{error}");
    node.stop().await;
}
