//! Votes answered by the log writer (`ack_mode = "local"`): the writer answers a group's votes
//! right after the fsync that makes it durable, never before, and a failed fsync answers
//! none of them `counted`.
//!
//! Method: a whole node ([`tally_node::start`]) whose log writer awaits a gate the test holds
//! between writing each group and syncing it ([`WalExecutor::PausingTask`], as the simulation
//! runs it), so the test knows when a vote's group is written and not yet synced. Requests go
//! to the node's router. Every wait is bounded by [`STEP`]; the one check that something did
//! NOT happen gives it time to happen and cannot fail with a correct node.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tally_core::UnixMillis;
use tally_node::config::Config;
use tally_node::faulty_storage::{DiskFaults, FaultyStorage};
use tally_node::storage::MemoryStorage;
use tally_node::wal::SyncPause;
use tally_node::{Clock, WalExecutor};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

/// The longest any one await may take.
const STEP: Duration = Duration::from_secs(10);

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(1_700_000_000_000)
    }
}

/// Holds the writer between a group's write and its sync until the test lets it pass.
struct Gate {
    /// One permit lets one group's sync go ahead.
    passes: Semaphore,
    /// Groups that reached the gate.
    arrived: AtomicUsize,
    arrival: Notify,
}

impl SyncPause for Gate {
    fn pause(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.arrived.fetch_add(1, Ordering::SeqCst);
            self.arrival.notify_waiters();
            self.passes.acquire().await.unwrap().forget();
        })
    }
}

impl Gate {
    fn closed() -> Self {
        Self {
            passes: Semaphore::new(0),
            arrived: AtomicUsize::new(0),
            arrival: Notify::new(),
        }
    }

    /// Waits until `groups` groups in all have reached the gate.
    async fn wait_for_arrivals(&self, groups: usize) {
        tokio::time::timeout(STEP, async {
            loop {
                let notified = self.arrival.notified();
                if self.arrived.load(Ordering::SeqCst) >= groups {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the log writer reached the gate in time");
    }
}

fn vote(id: u32) -> Request<Body> {
    let body = format!(r#"{{"option":"green","vote_id":"writer-{id}"}}"#);
    Request::post("/v1/polls/superbowl/votes")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn send(router: axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_vote_is_answered_only_after_the_fsync_of_its_group_and_never_counted_when_it_fails() {
    // Goal: the writer's answers keep "answered once durable". Method: a vote whose group is
    // written but held before its sync gets no answer; let through, it is answered counted.
    // Then a vote whose group's sync fails is answered 503, not counted.
    let gate = Arc::new(Gate::closed());
    let faults = Arc::new(DiskFaults::default());
    let storage = FaultyStorage::new(MemoryStorage::new(), faults.clone());
    let config = Config {
        results_tick_ms: 60_000,
        ..Config::default()
    };
    let started = tally_node::start(
        &config,
        storage,
        Arc::new(FixedClock),
        3,
        WalExecutor::PausingTask(gate.clone()),
    )
    .unwrap();

    let waiting = tokio::spawn(send(started.router.clone(), vote(1)));
    gate.wait_for_arrivals(1).await;
    // Written, not synced: time enough for a premature answer to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "a vote was answered before the fsync of its group"
    );
    gate.passes.add_permits(1);
    let (status, body) = tokio::time::timeout(STEP, waiting).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""status":"counted""#), "{body}");

    faults.fail_next_sync();
    let failing = tokio::spawn(send(started.router.clone(), vote(2)));
    gate.wait_for_arrivals(2).await;
    gate.passes.add_permits(1);
    let (status, body) = tokio::time::timeout(STEP, failing).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("write-ahead log failed"), "{body}");
    assert_eq!(faults.failed_syncs(), 1);
    let _ = tokio::time::timeout(STEP, started.stop()).await.unwrap();
}
