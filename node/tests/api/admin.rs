//! The admin API: the token, creating polls, invalid definitions, open and close, numbers.

use axum::http::{StatusCode, header};
use serde_json::json;
use tally_node::config::Config;

use crate::kit::*;

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    // Goal: 401 without the token, with a wrong one, with another scheme, and when the admin
    // API is off (no token configured); nothing changes.
    let node = start();
    let body = json!({"id": "sneaky", "options": ["a", "b"]});
    for uri in [
        "/v1/admin/polls",
        "/v1/admin/polls/superbowl/open",
        "/v1/admin/polls/superbowl/close",
    ] {
        let bare = post_json(uri, &body);
        node.send(bare)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let wrong = with_token(post_json(uri, &body), "guess");
        node.send(wrong)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let mut basic = post_json(uri, &body);
        let value = format!("Basic {TOKEN}").parse().unwrap();
        basic.headers_mut().insert(header::AUTHORIZATION, value);
        node.send(basic)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let polls = node.send(get("/v1/polls")).await.json();
    assert_eq!(polls.as_array().unwrap().len(), 1);
    assert_eq!(polls[0]["status"], "open");
    node.stop().await;

    let off = start_with(&Config {
        admin_token: String::new(),
        ..test_config()
    });
    let request = with_token(post_json("/v1/admin/polls", &body), "");
    off.send(request)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    off.stop().await;
}

#[tokio::test]
async fn creating_a_poll_twice_is_201_then_200_unchanged_and_other_options_409() {
    // Goal: create is idempotent, and a name cannot be reused with other options.
    let node = start();
    let body = json!({"id": "halftime", "options": ["yes", "no"], "open": true});
    let first = node.admin("/v1/admin/polls", Some(body.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json(), json!({"poll": "halftime", "changed": true}));
    node.clock.advance_seconds(3);
    let again = node.admin("/v1/admin/polls", Some(body)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), json!({"poll": "halftime", "changed": false}));
    let other = json!({"id": "halftime", "options": ["yes", "maybe"]});
    let message = node
        .admin("/v1/admin/polls", Some(other))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    assert!(message.contains("halftime"), "{message}");
    let results = node.send(get("/v1/polls")).await.json();
    let halftime = &results[0];
    assert_eq!(halftime["options"], json!(["yes", "no"]));
    assert_eq!(halftime["opens_at_ms"], T0_MS, "the first opening stands");
    node.stop().await;
}

#[tokio::test]
async fn invalid_poll_definitions_are_422_and_bad_admin_bodies_400_413_415() {
    // Goal: every way a create can be refused for its body.
    let node = start();
    for body in [
        json!({"id": "one", "options": ["only"]}),
        json!({"id": "many", "options": (0..17).map(|i| format!("o{i}")).collect::<Vec<_>>()}),
        json!({"id": "same", "options": ["a", "a"]}),
        json!({"id": "bad name!", "options": ["a", "b"]}),
        json!({"id": "", "options": ["a", "b"]}),
        json!({"id": "empty-option", "options": ["a", ""]}),
    ] {
        node.admin("/v1/admin/polls", Some(body.clone()))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    node.admin("/v1/admin/polls", Some(json!({"id": "x"})))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "malformed");
    node.admin(
        "/v1/admin/polls",
        Some(json!({"id": "x", "options": ["a", "b"], "colour": "red"})),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "malformed");
    let huge = json!({"id": "x", "options": ["a".repeat(20_000), "b"]});
    node.admin("/v1/admin/polls", Some(huge))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let form = post_bytes(
        "/v1/admin/polls",
        "application/x-www-form-urlencoded",
        b"id=x".to_vec(),
    );
    node.send(with_token(form, TOKEN))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_eq!(
        node.send(get("/v1/polls"))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    node.stop().await;
}

#[tokio::test]
async fn opening_or_closing_an_unknown_poll_is_404() {
    // Goal: admin window changes name the poll they could not find.
    let node = start();
    for uri in [
        "/v1/admin/polls/nope/open",
        "/v1/admin/polls/nope/close",
        "/v1/admin/polls/bad%20name/open",
    ] {
        node.admin(uri, None)
            .await
            .assert_error(StatusCode::NOT_FOUND, "unknown_poll");
    }
    node.stop().await;
}

#[tokio::test]
async fn admin_numbers_take_json_schema_integers_and_refuse_fractions_and_out_of_range() {
    // Goal: the create route answers what its schema says (issue 24): integers may be written
    // 600.0, fractions and values out of range are 422, a 2^63 duration no longer creates a
    // poll. Method: one request per case, then read the created poll's window.
    let node = start();
    for (body, field) in [
        (
            json!({"id": "zero", "options": ["a", "b"], "duration_seconds": 0}),
            "duration_seconds",
        ),
        (
            json!({"id": "long", "options": ["a", "b"], "duration_seconds": 2_678_401}),
            "duration_seconds",
        ),
        (
            json!({"id": "huge", "options": ["a", "b"], "open": true, "duration_seconds": 9_223_372_036_854_775_808u64}),
            "duration_seconds",
        ),
        (
            json!({"id": "half", "options": ["a", "b"], "duration_seconds": 600.5}),
            "duration_seconds",
        ),
        (
            json!({"id": "neg", "options": ["a", "b"], "expected_votes": -1}),
            "expected_votes",
        ),
    ] {
        let reply = node.admin("/v1/admin/polls", Some(body.clone())).await;
        let message = reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(message.contains(field), "{body}: {message}");
    }
    let body = json!({"id": "whole", "options": ["a", "b"], "open": true,
        "duration_seconds": 600.0, "expected_votes": 1000.0});
    let reply = node.admin("/v1/admin/polls", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let polls = node.send(get("/v1/polls")).await.json();
    let whole = polls
        .as_array()
        .and_then(|polls| polls.iter().find(|p| p["id"] == "whole"))
        .cloned()
        .unwrap_or_else(|| panic!("no poll whole in {polls}"));
    let opens = whole["opens_at_ms"].as_u64().unwrap();
    assert_eq!(whole["closes_at_ms"].as_u64(), Some(opens + 600_000));
    for id in ["zero", "long", "huge", "half", "neg"] {
        assert!(
            polls.as_array().unwrap().iter().all(|p| p["id"] != id),
            "{id} was created"
        );
    }
    node.stop().await;
}
