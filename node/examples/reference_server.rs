//! The single-vote reference of ../shared/DESIGN.md §7 for `scripts/bench-node.sh`: an axum
//! server whose `POST /v1/polls/{poll}/votes` parses the JSON vote, deduplicates its vote ID in
//! a `Mutex<HashSet<u128>>` and counts the option in one of two atomics — and keeps nothing on
//! disk (**not durable**, no log, no receipts, no metrics, no limits).
//!
//! It is what a vote costs on top of the hello route (`hello_server`) when nothing waits for an
//! fsync: the same axum, hyper and tokio (multi-threaded runtime, default worker count) as
//! `tally run`, driven by the same `tally load`. DESIGN.md measured it at ~0.75× the hello route
//! with `wrk`; the benchmark measures it again beside Tally, so Tally's single-vote ratio can be
//! read against the best a vote handler without durability reaches on this machine.
//!
//! Usage: `cargo run --release -p tally-node --example reference_server -- 127.0.0.1:8082`
//! (the address defaults to that). `GET /v1/polls/{poll}/results` answers the two counts, so a
//! run can be checked.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

mod support;

/// The address served when none is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:8082";

/// A vote as `tally load` sends it.
#[derive(Deserialize)]
struct Vote {
    option: String,
    vote_id: String,
}

/// The whole state: the vote IDs seen and the two counts.
#[derive(Default)]
struct Counts {
    seen: Mutex<HashSet<u128>>,
    green: AtomicU64,
    blue: AtomicU64,
}

async fn vote(State(counts): State<Arc<Counts>>, Json(vote): Json<Vote>) -> Response {
    let counter = match vote.option.as_str() {
        "green" => &counts.green,
        "blue" => &counts.blue,
        _ => return (StatusCode::UNPROCESSABLE_ENTITY, "unknown option\n").into_response(),
    };
    let Ok(id) = uuid::Uuid::parse_str(&vote.vote_id) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "the vote ID is not a UUID\n",
        )
            .into_response();
    };
    let new = counts
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id.as_u128());
    if new {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let status = if new { "counted" } else { "duplicate" };
    Json(serde_json::json!({ "status": status, "vote_id": vote.vote_id })).into_response()
}

async fn results(State(counts): State<Arc<Counts>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "green": counts.green.load(Ordering::Relaxed),
        "blue": counts.blue.load(Ordering::Relaxed),
    }))
}

fn main() -> ExitCode {
    let app = Router::new()
        .route("/v1/polls/{poll}/votes", post(vote))
        .route("/v1/polls/{poll}/results", get(results))
        .with_state(Arc::new(Counts::default()));
    support::serve_main("reference_server", DEFAULT_LISTEN, app)
}
