//! The single-vote reference of ../shared/DESIGN.md §7 for `scripts/bench-node.sh`: an axum
//! server whose `POST /v1/polls/{poll}/votes` parses the JSON vote, deduplicates its vote ID in
//! a `Mutex<HashSet<u128>>` and counts the option in one of two atomics. Nothing else: no
//! receipts, no metrics, no limits beyond one on waiting votes.
//!
//! Two modes:
//! - **not durable** (no second argument): nothing is kept on disk. This is what a vote costs
//!   on top of the hello route (`hello_server`) when nothing waits for an fsync. DESIGN.md
//!   measured it at ~0.75× the hello route with `wrk`.
//! - **durable** (a log file as the second argument): each new vote's 17 bytes (the ID and the
//!   option) are appended to the file, and the vote is answered only after the `fdatasync`
//!   that covers it. One writer thread takes every vote waiting since its last sync and covers
//!   them all with one `fdatasync` (group commit, as Tally's log writer does). This is the
//!   least a vote with Tally's durability promise can cost with this stack: no framing, no
//!   checksum, no receipts, no engine, no recovery. (It does not wait for an earlier
//!   duplicate's sync; with fresh IDs, as `tally load` sends, there are none.)
//!
//! Both use the same axum, hyper and tokio (multi-threaded runtime, default worker count) as
//! `tally run`, driven by the same `tally load`, so Tally's single-vote ratios can be read
//! against the best a vote handler reaches on this machine with and without durability.
//!
//! Usage: `cargo run --release -p tally-node --example reference_server -- [ADDRESS [LOG]]`
//! (the address defaults to 127.0.0.1:8082). `GET /v1/polls/{poll}/results` answers the two
//! counts, so a run can be checked.

// A benchmark program: it times itself on the real clock and uses std hash sets
// (node/clippy.toml bans both in the library, whose time and randomness the caller passes in).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::oneshot;

mod support;

/// The address served when none is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:8082";

/// Most votes waiting for the next `fdatasync`; more are answered 503 at once. `tally load`
/// keeps at most one vote in flight per connection, far below this.
const WAITING_VOTES_MAX: usize = 65_536;

/// A vote as `tally load` sends it.
#[derive(Deserialize)]
struct Vote {
    option: String,
    vote_id: String,
}

/// The whole state: the vote IDs seen, the two counts, and (durable mode) the log.
#[derive(Default)]
struct Counts {
    seen: Mutex<HashSet<u128>>,
    green: AtomicU64,
    blue: AtomicU64,
    log: Option<Arc<Log>>,
}

/// What the writer thread has not written yet, and who waits for it.
#[derive(Default)]
struct Unsynced {
    bytes: Vec<u8>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// Durable mode's group commit: handlers append under the lock and wake the writer.
#[derive(Default)]
struct Log {
    unsynced: Mutex<Unsynced>,
    wake: Condvar,
}

/// Locks `mutex`; a panicked holder cannot leave these plain collections half-changed in a way
/// that matters to a benchmark, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    /// Queues one vote's bytes for the next sync; `None` if too many votes wait already.
    fn append(&self, id: u128, option: u8) -> Option<oneshot::Receiver<()>> {
        let (sender, receiver) = oneshot::channel();
        let mut unsynced = lock(&self.unsynced);
        if unsynced.waiters.len() >= WAITING_VOTES_MAX {
            return None;
        }
        unsynced.bytes.extend_from_slice(&id.to_le_bytes());
        unsynced.bytes.push(option);
        unsynced.waiters.push(sender);
        if unsynced.waiters.len() == 1 {
            self.wake.notify_one();
        }
        Some(receiver)
    }

    /// The writer thread: take everything waiting, write it, `fdatasync`, answer its votes.
    /// A failed write or sync ends the process: nothing after it could be acknowledged.
    fn write_forever(&self, mut file: File) -> ! {
        let mut taken = Unsynced::default();
        loop {
            {
                let mut unsynced = lock(&self.unsynced);
                while unsynced.waiters.is_empty() {
                    unsynced = self
                        .wake
                        .wait(unsynced)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                std::mem::swap(&mut *unsynced, &mut taken);
            }
            if let Err(error) = file.write_all(&taken.bytes).and_then(|()| file.sync_data()) {
                eprintln!("reference_server: the log failed, stopping: {error}");
                std::process::exit(1);
            }
            taken.bytes.clear();
            for waiter in taken.waiters.drain(..) {
                // The connection may have gone; its vote is durable all the same.
                let _ = waiter.send(());
            }
        }
    }
}

async fn vote(State(counts): State<Arc<Counts>>, Json(vote): Json<Vote>) -> Response {
    let (counter, option) = match vote.option.as_str() {
        "green" => (&counts.green, 0),
        "blue" => (&counts.blue, 1),
        _ => return (StatusCode::UNPROCESSABLE_ENTITY, "unknown option\n").into_response(),
    };
    let Ok(id) = uuid::Uuid::parse_str(&vote.vote_id) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "the vote ID is not a UUID\n",
        )
            .into_response();
    };
    let id = id.as_u128();
    let new = lock(&counts.seen).insert(id);
    if new {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = &counts.log {
            let Some(synced) = log.append(id, option) else {
                return (StatusCode::SERVICE_UNAVAILABLE, "too many votes wait\n").into_response();
            };
            if synced.await.is_err() {
                return (StatusCode::INTERNAL_SERVER_ERROR, "the log stopped\n").into_response();
            }
        }
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

/// Opens the log at `path` and starts the writer thread that syncs it.
fn start_log(path: &Path) -> Result<Arc<Log>, String> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open the log {}: {e}", path.display()))?;
    let log = Arc::new(Log::default());
    let writer = Arc::clone(&log);
    std::thread::Builder::new()
        .name("reference-log".to_owned())
        .spawn(move || writer.write_forever(file))
        .map_err(|e| format!("cannot start the log thread: {e}"))?;
    Ok(log)
}

fn main() -> ExitCode {
    let log = match std::env::args_os().nth(2).map(PathBuf::from) {
        None => None,
        Some(path) => match start_log(&path) {
            Ok(log) => Some(log),
            Err(error) => {
                eprintln!("reference_server: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let name = if log.is_some() {
        "reference_server (durable)"
    } else {
        "reference_server (NOT durable)"
    };
    let counts = Counts {
        log,
        ..Counts::default()
    };
    let app = Router::new()
        .route("/v1/polls/{poll}/votes", post(vote))
        .route("/v1/polls/{poll}/results", get(results))
        .with_state(Arc::new(counts));
    support::serve_main(name, DEFAULT_LISTEN, app)
}
