//! A failed write-ahead log, in process: the writer cuts a failed group off the log before it
//! reports the failure; the engine stops acknowledging at once, publishes every vote it did
//! acknowledge, answers its peers' pulls until each holds its durable records (or a bounded
//! wait passes), and stops with an error; a whole node turns unhealthy and not ready and
//! stops with that error, and its log replays exactly what it acknowledged.
//!
//! Method: the log runs on a [`FaultyStorage`] over a [`MemoryStorage`], whose quota and
//! failing fsyncs the tests steer. The engine tests drive an [`Engine`] through its channels,
//! playing the log writer themselves; the node test sends HTTP requests to the router of a
//! node started with [`tally_node::start`]. Every wait is bounded by [`STEP`].

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tally_core::{
    ActorId, AgreementDigest, DefinitionDigest, NodeId, OptionIndex, OptionName, PollId,
    PollRequest, PollSpec, PollWindow, PullRequest, Replica, UnixMillis, VersionVector, VoteId,
};
use tally_node::config::Config;
use tally_node::engine::{
    BatchVoteAck, Command, Engine, EngineError, EngineIo, LOG_FAILED_HAND_OVER_MAX, VoteAck,
};
use tally_node::faulty_storage::{DiskFaults, FaultyStorage};
use tally_node::health::{Health, Hold};
use tally_node::metrics::Metrics;
use tally_node::results::ResultsSnapshot;
use tally_node::storage::{MemoryStorage, Storage, StorageFile};
use tally_node::wal::{Wal, WalDone, WalEntry, WalError, WalJob, WalJobKind, run_writer};
use tally_node::{Clock, NodeError, WalExecutor};
use tokio::sync::{mpsc, oneshot, watch};
use tower::ServiceExt;

/// The longest any one await may take.
const STEP: Duration = Duration::from_secs(10);

const T0_MS: u64 = 1_700_000_000_000;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(T0_MS)
    }
}

fn poll() -> PollId {
    PollId::new("superbowl").unwrap()
}

fn actor(node: &str) -> ActorId {
    ActorId {
        node: NodeId::new(node).unwrap(),
        incarnation: 3,
    }
}

fn spec() -> PollSpec {
    let options = ["green", "blue"].map(|n| OptionName::new(n).unwrap());
    PollSpec::new(
        poll(),
        options.to_vec(),
        PollWindow::open_from(UnixMillis(T0_MS)),
    )
    .unwrap()
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {STEP:?}"))
}

// ---------------------------------------------------------------------------------------------
// The writer

fn records(first_seq: u64, count: u64) -> WalEntry {
    let mut batch = tally_core::RecordBatch::new(poll(), actor("a"), first_seq);
    for i in 0..count {
        batch.push(VoteId(u128::from(first_seq + i)), OptionIndex(0), 0);
    }
    WalEntry::Records(batch)
}

#[tokio::test]
async fn a_group_cut_short_by_a_full_disk_is_cut_off_the_log_and_never_replayed() {
    // Goal: no vote of a failed group comes back at the next start, though a full disk let
    // whole frames of it through. Method: one durable group, then a quota with room for
    // about half of the next group's 20 entries; after the failure the log replays the
    // first group only, and its segment ends where the first group ended.
    let storage = FaultyStorage::new(MemoryStorage::new(), Arc::default());
    let (wal, _) = Wal::open(storage.clone(), |_| {}).unwrap();
    let (submit, jobs) = mpsc::channel(4);
    let (done_sender, mut done) = mpsc::channel(4);
    let writer = tokio::spawn(run_writer(wal, jobs, done_sender));
    let first: Vec<WalEntry> = (0..5).map(|i| records(1 + i * 10, 10)).collect();
    submit.send(WalJob::append(1, first.clone())).await.unwrap();
    let report: WalDone = within("the first report", done.recv()).await.unwrap();
    assert!(report.result.is_ok());
    let segment = storage.list().unwrap().pop().unwrap();
    let durable_len = storage.open(&segment).unwrap().len().unwrap();

    let second: Vec<WalEntry> = (0..20).map(|i| records(51 + i * 10, 10)).collect();
    let second_bytes = 20 * (report.bytes / 5);
    storage
        .faults()
        .set_capacity(Some(durable_len + second_bytes / 2));
    submit.send(WalJob::append(2, second)).await.unwrap();
    let report = within("the failure report", done.recv()).await.unwrap();
    let error = report.result.unwrap_err();
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    assert!(storage.faults().full_writes() >= 1);
    // The failed writer keeps the log (and the directory's lock) until the queue closes.
    drop(submit);
    assert!(matches!(
        within("the writer", writer).await.unwrap(),
        Err(WalError::Io {
            operation: "write",
            ..
        })
    ));
    assert_eq!(
        storage.open(&segment).unwrap().len().unwrap(),
        durable_len,
        "the segment ends where the last durable group ended"
    );

    storage.faults().set_capacity(None);
    let mut replayed = Vec::new();
    let (_wal, report) = Wal::open(storage.clone(), |entry| replayed.push(entry)).unwrap();
    assert_eq!(report.corruption, None, "{report}");
    assert_eq!(replayed, first, "only the durable group comes back");
}

#[tokio::test]
async fn a_group_refused_for_an_oversized_entry_stops_the_writer_and_leaves_only_durable_groups() {
    // Goal: a group that fails before its fsync (an entry over the limit, which the engine
    // never makes) ends the writer like an I/O failure, with no panic, and none of the
    // group's jobs reaches the log. Method: a durable job, then a group of a good job and
    // one with a 300,000-record batch, queued together.
    let storage = MemoryStorage::new();
    let (wal, _) = Wal::open(storage.clone(), |_| {}).unwrap();
    let (submit, jobs) = mpsc::channel(4);
    let (done_sender, mut done) = mpsc::channel(4);
    let durable = vec![records(1, 10)];
    submit
        .send(WalJob::append(1, durable.clone()))
        .await
        .unwrap();
    let writer = tokio::spawn(run_writer(wal, jobs, done_sender));
    assert!(
        within("the first report", done.recv())
            .await
            .unwrap()
            .result
            .is_ok()
    );
    submit
        .send(WalJob::append(2, vec![records(11, 10)]))
        .await
        .unwrap();
    submit
        .send(WalJob::append(3, vec![records(21, 300_000)]))
        .await
        .unwrap();
    // Both jobs were queued before the writer ran again (one thread): one group.
    let report = within("the failure report", done.recv()).await.unwrap();
    assert_eq!((report.up_to_token, report.jobs), (3, 2));
    assert!(matches!(report.result, Err(WalError::EntryTooLarge { .. })));
    drop(submit);
    assert!(within("the writer", writer).await.unwrap().is_err());
    let mut replayed = Vec::new();
    Wal::open(storage, |entry| replayed.push(entry)).unwrap();
    assert_eq!(replayed, durable, "job 2 went down with its group");
}

// ---------------------------------------------------------------------------------------------
// The engine, its log writer played by the test

/// An engine whose writer is the test: it reads jobs from `jobs` and reports on `done`.
struct Harness {
    commands: mpsc::Sender<Command>,
    jobs: mpsc::Receiver<WalJob>,
    done: mpsc::Sender<WalDone>,
    results: watch::Receiver<Arc<ResultsSnapshot>>,
    health: Arc<Health>,
    engine: tokio::task::JoinHandle<Result<(), EngineError>>,
    _close: watch::Sender<bool>,
}

fn start_engine(peers: &[&str]) -> Harness {
    let mut replica = Replica::new(actor("a"), [1, 2, 3, 4]);
    replica.upsert_poll(spec()).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(FixedClock);
    let initial = ResultsSnapshot::first(&replica, clock.now(), &Default::default());
    let (results_tx, results) = watch::channel(Arc::new(initial));
    let health = Arc::new(Health::default());
    let mut engine = Engine::new(
        replica,
        clock,
        Arc::new(Metrics::new()),
        // Results are published on the tick only once a minute: what the tests see after a
        // failure was published by the failure path itself.
        Duration::from_secs(60),
        Default::default(),
        health.clone(),
        7,
    );
    engine.hand_over_to(peers.iter().map(|p| (*p).to_owned()).collect());
    let (commands, commands_rx) = mpsc::channel(64);
    let (jobs_tx, jobs) = mpsc::channel(4);
    let (done, done_rx) = mpsc::channel(4);
    let (close, close_rx) = watch::channel(false);
    let (stopped, _) = watch::channel(false);
    let (actor_tx, _) = watch::channel(actor("a"));
    let engine = engine.spawn(EngineIo {
        commands: commands_rx,
        // No push session: the acks' lane is closed from the start.
        acks: mpsc::channel(1).1,
        wal_jobs: jobs_tx,
        wal_done: done_rx,
        results: results_tx,
        close_commands: close_rx,
        stopped,
        actor: actor_tx,
    });
    Harness {
        commands,
        jobs,
        done,
        results,
        health,
        engine,
        _close: close,
    }
}

fn done(token: u64, result: Result<(), WalError>) -> WalDone {
    WalDone {
        up_to_token: token,
        kind: WalJobKind::Append,
        jobs: 1,
        entries: 1,
        bytes: 1,
        fsync: Duration::ZERO,
        bytes_since_snapshot: 0,
        result,
    }
}

fn failure() -> WalError {
    WalError::Io {
        operation: "sync",
        file: "wal-1.log".into(),
        source: Arc::new(std::io::Error::other("injected")),
    }
}

impl Harness {
    /// Sends a batch of `count` votes (IDs from `first`) and returns where its answer comes.
    async fn batch(
        &self,
        first: u128,
        count: u128,
    ) -> oneshot::Receiver<Result<Vec<BatchVoteAck>, EngineError>> {
        let (reply, answer) = oneshot::channel();
        let votes = (first..first + count)
            .map(|id| (OptionIndex(0), VoteId(id)))
            .collect();
        self.commands
            .send(Command::Batch {
                poll: poll(),
                votes,
                reply,
            })
            .await
            .unwrap();
        answer
    }

    /// Takes the next log job and reports it with `result`.
    async fn write_next(&mut self, result: Result<(), WalError>) {
        let job = within("a log job", self.jobs.recv()).await.unwrap();
        self.done.send(done(job.token, result)).await.unwrap();
    }

    async fn pull(&self, peer: &str, held: u64) -> usize {
        self.pull_defined(peer, held, spec().definition()).await
    }

    /// A pull by a peer that defines the poll as `definition`.
    async fn pull_defined(&self, peer: &str, held: u64, definition: DefinitionDigest) -> usize {
        let mut vector = VersionVector::default();
        vector.raise(&actor("a"), held);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::PeerPull {
                peer: peer.to_owned(),
                request: PullRequest {
                    agreement: AgreementDigest::default(),
                    polls: vec![PollRequest {
                        poll: poll(),
                        definition,
                        vector,
                    }],
                },
                records_max: 1_000_000,
                reply,
            })
            .await
            .unwrap();
        let answer = within("a pull's answer", answer).await.unwrap().unwrap();
        answer.batches.iter().map(|b| b.len()).sum()
    }

    fn shown(&self) -> i64 {
        self.results.borrow().polls[&poll()].results.total
    }
}

fn counted(answer: Result<Vec<BatchVoteAck>, EngineError>) -> usize {
    answer
        .unwrap()
        .iter()
        .filter(|a| matches!(a, BatchVoteAck::Ack(VoteAck::Counted { .. })))
        .count()
}

#[tokio::test]
async fn after_a_failed_fsync_the_engine_acknowledges_nothing_publishes_every_acknowledged_vote_and_stops_once_its_peers_hold_them()
 {
    // Goal: the failure path of issue 28 in order. Method: 100 votes made durable, 50 whose
    // fsync fails; then a peer pulls (gets the 100), pulls again showing it holds them, and
    // the engine stops; everything else is refused meanwhile.
    let mut harness = start_engine(&["b"]);
    let first = harness.batch(0, 100).await;
    harness.write_next(Ok(())).await;
    assert_eq!(
        counted(within("the first batch", first).await.unwrap()),
        100
    );
    let failed = harness.batch(100, 50).await;
    harness.write_next(Err(failure())).await;
    let failed = within("the failed batch's answer", failed).await.unwrap();
    assert_eq!(failed, Err(EngineError::LogFailed));
    assert!(harness.health.has(Hold::LogFailed), "unhealthy at once");
    assert!(!harness.health.is_live() && !harness.health.is_ready());
    assert_eq!(
        harness.shown(),
        100,
        "the results show every acknowledged vote, and nothing more"
    );

    let refused = harness.batch(150, 10).await;
    assert_eq!(
        within("a new batch", refused).await.unwrap(),
        Err(EngineError::LogFailed)
    );
    assert_eq!(harness.pull("b", 0).await, 100, "the peer gets them all");
    assert!(
        !harness.engine.is_finished(),
        "the peer has not shown it holds them"
    );
    assert_eq!(harness.pull("b", 100).await, 0);
    let stopped = within("the engine's stop", harness.engine).await.unwrap();
    assert_eq!(stopped, Err(EngineError::LogFailed));
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_pulls_holds_the_failed_engine_up_for_the_bounded_wait_only() {
    // Goal: an unreachable peer cannot keep a failed node up. Method: fail the first job with
    // one vote durable before it; no peer pulls; the engine stops once the hand-over wait is
    // over, not before (time is paused and advanced by tokio).
    let mut harness = start_engine(&["b", "c"]);
    let first = harness.batch(0, 1).await;
    harness.write_next(Ok(())).await;
    within("the first batch", first).await.unwrap().unwrap();
    let _failed = harness.batch(1, 1).await;
    harness.write_next(Err(failure())).await;
    assert_eq!(harness.pull("b", 1).await, 0, "b holds it already");
    let started = tokio::time::Instant::now();
    let stopped = within("the engine's stop", harness.engine).await.unwrap();
    assert_eq!(stopped, Err(EngineError::LogFailed));
    let waited = started.elapsed();
    assert!(
        waited >= LOG_FAILED_HAND_OVER_MAX - Duration::from_millis(100)
            && waited <= LOG_FAILED_HAND_OVER_MAX + Duration::from_secs(1),
        "waited {waited:?} for c"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_engine_does_not_wait_for_a_peer_that_defines_the_poll_otherwise() {
    // Goal: the hand-over waits only for peers that can take the records: one that lists the
    // poll's options in another order is sent none of them (issue 31), so waiting for it would
    // only hold a failed node up. Method: one vote durable, the next job fails; the only peer
    // pulls with the reversed definition: it gets no record, and the engine stops at once.
    let mut harness = start_engine(&["b"]);
    let first = harness.batch(0, 1).await;
    harness.write_next(Ok(())).await;
    within("the first batch", first).await.unwrap().unwrap();
    let _failed = harness.batch(1, 1).await;
    harness.write_next(Err(failure())).await;
    let options = ["blue", "green"].map(|n| OptionName::new(n).unwrap());
    let reversed = PollSpec::new(poll(), options.to_vec(), PollWindow::default()).unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(
        harness.pull_defined("b", 0, reversed.definition()).await,
        0,
        "no record crosses definitions"
    );
    let stopped = within("the engine's stop", harness.engine).await.unwrap();
    assert_eq!(stopped, Err(EngineError::LogFailed));
    assert!(
        started.elapsed() < LOG_FAILED_HAND_OVER_MAX,
        "waited {:?} for a peer that cannot take the records",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// A whole node

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = within("an answer", router.clone().oneshot(request))
        .await
        .unwrap();
    let status = response.status();
    let body = within("a body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn vote(id: u32) -> Request<Body> {
    let body = format!(r#"{{"option":"green","vote_id":"failing-{id}"}}"#);
    Request::post("/v1/polls/superbowl/votes")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_node_whose_fsync_fails_turns_unhealthy_stops_with_an_error_and_replays_what_it_acknowledged()
 {
    fails_and_replays_what_it_acknowledged(WalExecutor::Task).await;
}

#[tokio::test]
async fn a_node_that_writes_its_log_inline_acknowledges_nothing_after_a_failed_fsync_and_replays_what_it_acknowledged()
 {
    // The same, with the log written by the engine itself (a memory-only node's executor):
    // the failed group's vote is refused, never answered counted, and replays nowhere.
    fails_and_replays_what_it_acknowledged(WalExecutor::Inline).await;
}

async fn fails_and_replays_what_it_acknowledged(executor: WalExecutor) {
    // Goal: no zombie node. Method: 20 votes counted, then every further fsync fails: the
    // next vote is refused with 503, /healthz and /readyz answer 503 naming the log, the
    // results still show the 20, the node stops with the log error, and a restart on the same
    // disk (its clean stop writes the snapshot) holds exactly the 20.
    let faults = Arc::new(DiskFaults::default());
    let disk = MemoryStorage::new();
    let storage = FaultyStorage::new(disk.clone(), faults.clone());
    let config = Config {
        // Only the failure path publishes results in this test's time.
        results_tick_ms: 60_000,
        ..Config::default()
    };
    let clock = Arc::new(FixedClock);
    let started = tally_node::start(&config, storage, clock.clone(), 5, executor.clone()).unwrap();
    for id in 0..20 {
        let (status, body) = send(&started.router, vote(id)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    faults.fail_next_sync();
    let (status, body) = send(&started.router, vote(20)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("write-ahead log failed"), "{body}");
    let (status, body) = send(&started.router, get("/healthz")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy: log_failed\n")
    );
    let (status, body) = send(&started.router, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("log_failed: "), "{body}");
    let (_, results) = send(&started.router, get("/v1/polls/superbowl/results")).await;
    assert!(results.contains(r#""total":20"#), "{results}");
    let stopped = within("the node's stop", started.stop()).await;
    assert!(
        matches!(stopped, Err(NodeError::Engine(EngineError::LogFailed))),
        "{stopped:?}"
    );
    assert_eq!(faults.failed_syncs(), 1);

    let started =
        tally_node::start(&config, disk.clone(), clock.clone(), 6, executor.clone()).unwrap();
    let (_, results) = send(&started.router, get("/v1/polls/superbowl/results")).await;
    assert!(results.contains(r#""total":20"#), "{results}");
    let (status, body) = send(&started.router, vote(20)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(r#""status":"counted""#),
        "the refused vote was not counted: {body}"
    );
    within("the restarted node's stop", started.stop())
        .await
        .unwrap();
    // The clean stop compacted the log: a third start holds the 21, once each.
    let started = tally_node::start(&config, disk, clock, 7, executor).unwrap();
    let (_, results) = send(&started.router, get("/v1/polls/superbowl/results")).await;
    assert!(results.contains(r#""total":21"#), "{results}");
    let (status, body) = send(&started.router, vote(20)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""status":"duplicate""#), "{body}");
    within("the third node's stop", started.stop())
        .await
        .unwrap();
}
