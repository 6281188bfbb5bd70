//! The framework's ceiling for `scripts/bench-node.sh`: a minimal axum server whose
//! `POST /v1/polls/{poll}/votes` reads the body and answers a small JSON 200
//! (`{"status":"counted"}`) without parsing, deduplicating, counting or storing anything.
//!
//! It is built with the same axum, hyper and tokio (multi-threaded runtime, default worker
//! count) as `tally run`, so `tally load --check off` against it measures what HTTP alone
//! costs on this machine. Usage: `cargo run --release -p tally-node --example hello_server --
//! 127.0.0.1:8081` (the address defaults to that).

use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

mod support;

/// The address served when none is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

/// The whole answer: as small as Tally's, but fixed.
const ANSWER: &str = r#"{"status":"counted"}"#;

async fn vote(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ANSWER)
}

fn main() -> ExitCode {
    let app = Router::new().route("/v1/polls/{poll}/votes", post(vote));
    support::serve_main("hello_server", DEFAULT_LISTEN, app)
}
