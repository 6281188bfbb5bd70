//! `tally-node`: the I/O shell around `tally-core`, and the library behind the `tally` binary.
//!
//! Every I/O resource is passed in, never reached for: [`run`] takes its listener, storage,
//! clock, RNG seed and shutdown signal in [`NodeIo`], so the simulation can hand it simulated
//! ones (STYLE.md §2). `main.rs` builds the real ones.
//!
//! Start-up: recover the write-ahead log into a replica (or, on an empty disk, draw a new
//! incarnation and log it first), apply the configured polls, then serve. Shutdown: stop
//! taking requests, let the engine flush and fsync what it accepted, and return.

pub mod certs;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod http;
pub mod load;
pub mod metrics;
pub mod peer;
pub mod recovery;
pub mod results;
pub mod stall_guard;
pub mod storage;
pub mod wal;
pub mod wal_writer;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tally_core::UnixMillis;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::engine::{Engine, EngineIo};
use crate::metrics::Metrics;
use crate::results::ResultsSnapshot;
use crate::storage::Storage;

/// Queued log jobs before the engine waits for the writer (one is in flight at a time, so
/// this only matters at shutdown).
pub const WAL_JOBS_QUEUE_MAX: usize = 4;

/// Where the time comes from: the system clock in production, simulated time in the sim.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> UnixMillis;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        UnixMillis(since_epoch.as_millis() as u64)
    }
}

/// How the write-ahead log writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalExecutor {
    /// On its own OS thread, so fsyncs never block the request runtime (production).
    DedicatedThread,
    /// As a task on the current runtime (the simulation, where the disk is instant).
    Task,
}

/// Every I/O resource a node uses.
pub struct NodeIo<L, S, F> {
    /// Accepts HTTP connections.
    pub listener: L,
    /// The disk.
    pub storage: S,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Seeds every random choice (incarnation, hash keys).
    pub rng_seed: u64,
    /// Resolves when the node should stop.
    pub shutdown: F,
    /// How the log writer runs.
    pub wal_executor: WalExecutor,
}

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The log could not be recovered.
    #[error(transparent)]
    Recovery(#[from] recovery::RecoveryError),
    /// The engine stopped because the log failed.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The log writer could not start.
    #[error(transparent)]
    Writer(#[from] wal_writer::StartError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What a running node tells its caller once it is serving.
#[derive(Clone)]
pub struct NodeHandle {
    /// Whether the node serves votes.
    pub ready: Arc<AtomicBool>,
    /// The latest results.
    pub results: watch::Receiver<Arc<ResultsSnapshot>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// A node that has recovered and whose engine runs, but that serves no connections yet:
/// [`run`] serves its router; tests send requests to it directly (`tower::ServiceExt::oneshot`).
pub struct Started {
    /// The whole HTTP API.
    pub router: axum::Router,
    /// Readiness, results and metrics.
    pub handle: NodeHandle,
    /// Tells long-lived streams the node is stopping.
    stopping: watch::Sender<bool>,
    engine: tokio::task::JoinHandle<Result<(), engine::EngineError>>,
    writer: wal_writer::WriterDone,
}

/// Recovers the log in `storage` and starts the engine and the log writer.
pub fn start<S: Storage + 'static>(
    config: &Config,
    storage: S,
    clock: Arc<dyn Clock>,
    rng_seed: u64,
    wal_executor: WalExecutor,
) -> Result<Started, NodeError> {
    let validated = config.validate()?;
    let recovered = recovery::recover(config, &validated, storage, &*clock, rng_seed)?;
    let metrics = Arc::new(Metrics::new());
    let actor = recovered.replica.actor().to_string();
    tracing::info!(
        %actor,
        report = %recovered.report,
        new_incarnation = recovered.new_incarnation,
        "recovered"
    );
    let initial = ResultsSnapshot::capture(&recovered.replica, clock.now());
    let (results_tx, results_rx) = watch::channel(Arc::new(initial));
    let (command_tx, command_rx) = mpsc::channel(config.engine_queue_max);
    let (job_tx, done_rx, writer) =
        wal_writer::start(recovered.wal, wal_executor, WAL_JOBS_QUEUE_MAX)?;
    let engine = Engine::new(
        recovered.replica,
        clock.clone(),
        metrics.clone(),
        Duration::from_millis(config.results_tick_ms),
    );
    let engine = tokio::spawn(engine.run(EngineIo {
        commands: command_rx,
        wal_jobs: job_tx,
        wal_done: done_rx,
        results: results_tx,
    }));
    let ready = Arc::new(AtomicBool::new(true));
    let (stopping, stopping_rx) = watch::channel(false);
    let state = http::AppState {
        engine: command_tx,
        results: results_rx.clone(),
        metrics: metrics.clone(),
        vote_id_key: Arc::new(validated.vote_id_key),
        actor,
        admin_token: Arc::from(config.admin_token.as_str()),
        clock,
        sse_tick_ms: config.sse_tick_ms,
        sse_subscribers_max: config.sse_subscribers_max,
        ready: ready.clone(),
        stopping: stopping_rx,
    };
    Ok(Started {
        router: http::router(state),
        handle: NodeHandle {
            ready,
            results: results_rx,
            metrics,
        },
        stopping,
        engine,
        writer,
    })
}

impl Started {
    /// Stops a node whose router has been dropped: the engine flushes and fsyncs what it
    /// accepted, answers it, and the log writer ends.
    pub async fn stop(self) -> Result<(), NodeError> {
        let Started {
            router,
            handle,
            stopping,
            engine,
            writer,
        } = self;
        handle.ready.store(false, Ordering::Release);
        let _ = stopping.send(true);
        drop(router);
        let engine_result = engine.await;
        writer.wait().await;
        match engine_result {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
        Ok(())
    }
}

/// Runs a node until `io.shutdown` resolves; then stops accepting, flushes and returns.
/// `on_ready` is called once the node serves votes.
pub async fn run<L, S, F>(
    config: Config,
    io: NodeIo<L, S, F>,
    on_ready: impl FnOnce(NodeHandle),
) -> Result<(), NodeError>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
    L::Addr: std::fmt::Debug,
    S: Storage + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut started = start(&config, io.storage, io.clock, io.rng_seed, io.wal_executor)?;
    on_ready(started.handle.clone());
    let router = std::mem::replace(&mut started.router, axum::Router::new());
    let shutdown = io.shutdown;
    let ready = started.handle.ready.clone();
    let stopping = started.stopping.clone();
    let listener = stall_guard::StallGuardListener::new(
        io.listener,
        Duration::from_millis(config.write_stall_ms),
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("stopping: no new requests; draining");
            ready.store(false, Ordering::Release);
            let _ = stopping.send(true);
        })
        .await;
    // The served router (and with it every command sender) is gone: the engine flushes.
    started.stop().await?;
    served.map_err(NodeError::Serve)?;
    tracing::info!("stopped cleanly: every acknowledged vote is durable");
    Ok(())
}
