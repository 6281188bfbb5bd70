//! The OpenAPI document: exactly the routes, with bodies, errors and statuses.

use std::collections::BTreeSet;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_node::http::{self};

use crate::kit::*;

/// Every (method, path) pair the document lists.
fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// The routes a node serves. A new route must be added here and to the document, and the
/// test below checks the router answers each.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/polls/{poll}/votes"),
    ("POST", "/v1/polls/{poll}/votes/batch"),
    ("GET", "/v1/polls"),
    ("GET", "/v1/polls/{poll}/results"),
    ("GET", "/v1/polls/{poll}/history"),
    ("GET", "/v1/polls/{poll}/stream"),
    ("POST", "/v1/admin/polls"),
    ("POST", "/v1/admin/polls/{poll}/open"),
    ("POST", "/v1/admin/polls/{poll}/close"),
    ("POST", "/v1/admin/polls/{poll}/lookup"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("GET", "/polls/{poll}"),
    ("GET", "/assets/dashboard.css"),
    ("GET", "/assets/dashboard.js"),
];

async fn served_document(node: &Node) -> Value {
    let reply = node.send(get(http::OPENAPI_PATH)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/json");
    reply.json()
}

#[tokio::test]
async fn the_openapi_document_is_json_of_openapi_3_and_lists_exactly_the_routes() {
    // Goal: /openapi.json parses, is OpenAPI 3.x, and names exactly the routes the router has.
    // Method: compare the document's (method, path) pairs with the route list; send each
    // documented route a request and check the router has it (not the 404 of an unknown path,
    // not a 405); send every other method to each documented path and check it is a 405; and
    // check that near-miss paths are unknown.
    let node = start();
    let document = served_document(&node).await;
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "{version}");
    assert_eq!(document["info"]["title"], "Tally");
    assert_eq!(
        document,
        serde_json::to_value(http::openapi_document()).unwrap()
    );

    let documented = documented_routes(&document);
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, listed);

    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let uri = path.replace("{poll}", "superbowl");
        for method in &methods {
            let request = Request::builder()
                .method(method)
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let response = respond(&node.started.router, request).await;
            let status = response.status();
            let is_documented = documented.contains(&(method.to_string(), path.clone()));
            let body = if path.ends_with("/stream") && status == StatusCode::OK {
                Bytes::new() // endless
            } else {
                response.into_body().collect().await.unwrap().to_bytes()
            };
            let code = serde_json::from_slice::<Value>(&body)
                .map(|v| v["error"].clone())
                .unwrap_or(Value::Null);
            if is_documented {
                assert_ne!(
                    code, "not_found",
                    "{method} {uri} is documented, not routed"
                );
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri} answers but is not documented"
                );
            }
        }
    }
    for uri in [
        "/v1/polls/superbowl",
        "/v1/admin/polls/superbowl",
        "/v1/polls/superbowl/votes/other",
        "/v1/admin",
        "/assets/other.js",
        "/polls",
        "/openapi.yaml",
    ] {
        node.send(get(uri))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    node.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_bodies_errors_and_statuses_of_each_route() {
    // Goal: a client can be generated from the document: request bodies with their content
    // types, the error shape, and every status each route can answer.
    let node = start();
    let document = served_document(&node).await;
    let operation = |method: &str, path: &str| document["paths"][path][method].clone();
    let statuses = |method: &str, path: &str| -> BTreeSet<String> {
        operation(method, path)["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"))
            .keys()
            .cloned()
            .collect()
    };
    let expected: &[(&str, &str, &[&str])] = &[
        (
            "post",
            "/v1/polls/{poll}/votes",
            &[
                "200", "400", "401", "404", "408", "409", "413", "415", "422", "429", "503",
            ],
        ),
        (
            "post",
            "/v1/polls/{poll}/votes/batch",
            &[
                "200", "400", "401", "404", "408", "409", "413", "415", "429", "503",
            ],
        ),
        ("get", "/v1/polls", &["200", "304"]),
        (
            "get",
            "/v1/polls/{poll}/results",
            &["200", "304", "404", "422"],
        ),
        ("get", "/v1/polls/{poll}/history", &["200", "304", "404"]),
        ("get", "/v1/polls/{poll}/stream", &["200", "404", "503"]),
        (
            "post",
            "/v1/admin/polls",
            &[
                "200", "201", "400", "401", "408", "409", "413", "415", "422", "503",
            ],
        ),
        (
            "post",
            "/v1/admin/polls/{poll}/open",
            &["200", "401", "404", "503"],
        ),
        (
            "post",
            "/v1/admin/polls/{poll}/close",
            &["200", "401", "404", "503"],
        ),
        (
            "post",
            "/v1/admin/polls/{poll}/lookup",
            &["200", "400", "401", "404", "413", "415", "503"],
        ),
        ("get", "/metrics", &["200"]),
        ("get", "/healthz", &["200", "503"]),
        ("get", "/readyz", &["200", "503"]),
    ];
    // The probes answer plain text, 503 included (a failed log; not ready).
    let probe = |path: &str| path == "/healthz" || path == "/readyz";
    for (method, path, codes) in expected {
        let want: BTreeSet<String> = codes.iter().map(|c| c.to_string()).collect();
        assert_eq!(statuses(method, path), want, "{method} {path}");
        for code in codes.iter().filter(|c| c.starts_with(['4', '5'])) {
            let response = &operation(method, path)["responses"][code];
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            if !probe(path) {
                assert_eq!(
                    schema, "#/components/schemas/ErrorBody",
                    "{method} {path} {code}"
                );
            }
            if *code == "503" && !probe(path) {
                assert!(response["headers"]["Retry-After"].is_object(), "{path}");
            }
        }
        let has_poll = operation(method, path)["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "poll" && p["in"] == "path"));
        assert_eq!(has_poll, path.contains("{poll}"), "{method} {path}");
    }

    let batch_body = &operation("post", "/v1/polls/{poll}/votes/batch")["requestBody"]["content"];
    assert_eq!(
        batch_body["application/json"]["schema"]["$ref"],
        "#/components/schemas/BatchRequest"
    );
    assert_eq!(
        batch_body["application/x-postcard"]["schema"]["$ref"],
        "#/components/schemas/BinaryBatch"
    );
    let batch_answer =
        &operation("post", "/v1/polls/{poll}/votes/batch")["responses"]["200"]["content"];
    for media_type in ["application/json", "application/x-postcard"] {
        assert_eq!(
            batch_answer[media_type]["schema"]["$ref"], "#/components/schemas/BatchResponse",
            "{media_type}"
        );
    }
    let vote_body = &operation("post", "/v1/polls/{poll}/votes")["requestBody"]["content"];
    assert_eq!(
        vote_body["application/json"]["schema"]["$ref"],
        "#/components/schemas/VoteRequest"
    );
    let parameters = operation("post", "/v1/polls/{poll}/votes")["parameters"].clone();
    assert!(
        parameters
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    let results_parameters = operation("get", "/v1/polls/{poll}/results")["parameters"].clone();
    assert!(
        results_parameters
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "at" && p["in"] == "query")
    );
    for admin in [
        ("post", "/v1/admin/polls"),
        ("post", "/v1/admin/polls/{poll}/open"),
        ("post", "/v1/admin/polls/{poll}/close"),
        ("post", "/v1/admin/polls/{poll}/lookup"),
    ] {
        assert_eq!(
            operation(admin.0, admin.1)["security"],
            json!([{"admin_token": []}])
        );
    }
    let schemes = &document["components"]["securitySchemes"]["admin_token"];
    assert_eq!(schemes["scheme"], "bearer");

    let schemas = &document["components"]["schemas"];
    let error = &schemas["ErrorBody"];
    assert_eq!(error["required"], json!(["error", "message"]));
    let codes = schemas["ErrorCode"]["enum"].as_array().unwrap();
    for code in [
        "malformed",
        "unknown_poll",
        "poll_not_open",
        "overloaded",
        "method_not_allowed",
        "poll_disputed",
        "unconfirmed",
    ] {
        assert!(codes.contains(&json!(code)), "{code}");
    }
    let statuses = schemas["BatchVoteStatus"]["enum"].as_array().unwrap();
    assert_eq!(statuses.len(), 6);
    assert_eq!(statuses[5], "unconfirmed", "new statuses go at the end");
    for name in [
        "VoteResponse",
        "BatchResponse",
        "PollResults",
        "History",
        "PollSummary",
        "CreatePoll",
        "AdminResponse",
    ] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }
    // Every schema the document refers to is defined.
    let text = document.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas[name].is_object(), "dangling reference to {name}");
    }
    node.stop().await;
}
