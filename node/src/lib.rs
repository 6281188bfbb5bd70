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
pub mod client;
pub mod client_page;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod demo;
pub mod disputes;
pub mod engine;
pub mod health;
pub mod http;
pub mod huge_pages;
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
use std::time::Duration;

use tally_core::UnixMillis;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::engine::{Engine, EngineIo};
use crate::health::{Health, Hold};
use crate::metrics::Metrics;
use crate::peer::sync::{PeerBoard, PeerTarget, SyncContext};
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
    /// The UDP socket for peer sync over QUIC (`None`: no peer sync).
    pub peer_socket: Option<peer::transport::PeerSocket>,
    /// With `ops_listen` set: the listener that alone serves `/metrics` and `/v1/admin/*`.
    pub ops_listener: Option<tokio::net::TcpListener>,
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
    /// The peer certificates could not be loaded.
    #[error("peer TLS: {0}")]
    Tls(#[from] Box<peer::tls::TlsError>),
    /// The peer endpoint could not start.
    #[error("peer endpoint: {0}")]
    PeerEndpoint(std::io::Error),
}

/// What a running node tells its caller once it is serving.
#[derive(Clone)]
pub struct NodeHandle {
    /// Why the node is not serving, if it is not (ready = no holds).
    pub health: Arc<Health>,
    /// The latest results.
    pub results: watch::Receiver<Arc<ResultsSnapshot>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Every peer's sync status.
    pub peers: PeerBoard,
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
    /// Tells the engine to take no more commands (the drain is over).
    close_commands: watch::Sender<bool>,
    engine: tokio::task::JoinHandle<Result<(), engine::EngineError>>,
    writer: wal_writer::WriterDone,
    peer_endpoint: Option<quinn::Endpoint>,
    peer_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Recovers the log in `storage` and starts the engine and the log writer (no peer sync).
pub fn start<S: Storage + 'static>(
    config: &Config,
    storage: S,
    clock: Arc<dyn Clock>,
    rng_seed: u64,
    wal_executor: WalExecutor,
) -> Result<Started, NodeError> {
    start_with_peers(config, storage, clock, rng_seed, wal_executor, None)
}

/// Recovers the log in `storage`, starts the engine and the log writer, and, given a peer
/// socket, the QUIC endpoint with one pull session per configured peer. A node with peers
/// reports ready once it has caught up with every peer (or after `catch_up_timeout_ms`).
pub fn start_with_peers<S: Storage + 'static>(
    config: &Config,
    storage: S,
    clock: Arc<dyn Clock>,
    rng_seed: u64,
    wal_executor: WalExecutor,
    peer_socket: Option<peer::transport::PeerSocket>,
) -> Result<Started, NodeError> {
    let validated = config.validate()?;
    let mut recovered = recovery::recover(config, &validated, storage, &*clock, rng_seed)?;
    if config.planted_bug == Some(config::PlantedBug::KeepDuplicates) {
        recovered.replica.plant_bug_keep_duplicates();
    }
    if config.planted_bug == Some(config::PlantedBug::MergeAcrossDefinitions) {
        recovered.replica.plant_bug_merge_across_definitions();
    }
    let metrics = Arc::new(Metrics::new());
    let actor = recovered.replica.actor().clone();
    tracing::info!(
        %actor,
        report = %recovered.report,
        new_incarnation = recovered.new_incarnation,
        "recovered"
    );
    let board = PeerBoard::default();
    let initial = ResultsSnapshot::capture(&recovered.replica, clock.now(), &Default::default());
    let (results_tx, results_rx) = watch::channel(Arc::new(initial));
    let (command_tx, command_rx) = mpsc::channel(config.engine_queue_max);
    let (close_commands, close_commands_rx) = watch::channel(false);
    let (job_tx, done_rx, writer) =
        wal_writer::start(recovered.wal, wal_executor, WAL_JOBS_QUEUE_MAX)?;
    let syncing = peer_socket.is_some() && config.other_peers().next().is_some();
    let health = Arc::new(Health::new(if syncing { &[Hold::CatchingUp] } else { &[] }));
    let mut engine = Engine::new(
        recovered.replica,
        clock.clone(),
        metrics.clone(),
        Duration::from_millis(config.results_tick_ms),
        board.clone(),
        health.clone(),
    );
    if config.planted_bug == Some(config::PlantedBug::AckBeforeFsync) {
        engine.plant_bug_ack_before_fsync();
    }
    let engine = engine.spawn(EngineIo {
        commands: command_rx,
        wal_jobs: job_tx,
        wal_done: done_rx,
        results: results_tx,
        close_commands: close_commands_rx,
    });
    let (stopping, stopping_rx) = watch::channel(false);
    let mut peer_tasks = Vec::new();
    let peer_endpoint = match peer_socket {
        Some(socket) => {
            let Some(files) = &config.tls else {
                return Err(config::ConfigError::Invalid {
                    setting: "tls",
                    message: "peer sync needs [tls] ca, cert and key files (see `tally certs`)"
                        .into(),
                }
                .into());
            };
            let tls = peer::tls::ClusterTls::load(
                &files.ca,
                &files.cert,
                &files.key,
                validated.node_id.clone(),
            )
            .map_err(Box::new)?;
            let endpoint = peer::transport::endpoint(socket, &tls, rng_seed ^ PEER_RNG_SALT)
                .map_err(NodeError::PeerEndpoint)?;
            let listed = config
                .other_peers()
                .map(|entry| tally_core::NodeId::new(entry.id.clone()))
                .collect::<Result<std::collections::BTreeSet<_>, _>>()
                .map_err(|e| config::ConfigError::Invalid {
                    setting: "peers",
                    message: e.to_string(),
                })?;
            if let Ok(mut board) = board.lock() {
                for peer in &listed {
                    board.entry(peer.to_string()).or_default().listed = true;
                }
            }
            let context = Arc::new(SyncContext {
                engine: command_tx.clone(),
                hello: tally_core::wire::Hello {
                    cluster_id: config.cluster_id.clone(),
                    protocol_version: tally_core::wire::PROTOCOL_VERSION,
                    actor: actor.clone(),
                    vote_id_key_proof: validated.vote_id_key.proof(),
                },
                vote_id_key: validated.vote_id_key.clone(),
                listed,
                claims: Arc::default(),
                log_once: std::sync::Mutex::default(),
                tick: Duration::from_millis(config.sync_tick_ms),
                records_per_round_max: config.sync_records_per_round_max,
                board: board.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
            });
            // Incoming sessions refused before they name a node count under `incoming`.
            metrics.peers.declare_refusals("incoming");
            peer_tasks.push(tokio::spawn(peer::sync::serve_incoming(
                endpoint.clone(),
                context.clone(),
            )));
            for (index, entry) in config.other_peers().enumerate() {
                let target = PeerTarget {
                    node: tally_core::NodeId::new(entry.id.clone()).map_err(|e| {
                        config::ConfigError::Invalid {
                            setting: "peers",
                            message: e.to_string(),
                        }
                    })?,
                    address: entry.address.clone(),
                };
                metrics.peers.declare(target.node.as_str());
                let seed = rng_seed.wrapping_add(index as u64 + 1) ^ PEER_RNG_SALT;
                peer_tasks.push(tokio::spawn(peer::sync::pull_from(
                    endpoint.clone(),
                    target,
                    context.clone(),
                    seed,
                    stopping_rx.clone(),
                )));
            }
            peer_tasks.push(tokio::spawn(report_ready_after_catch_up(
                board.clone(),
                config.other_peers().map(|p| p.id.clone()).collect(),
                Duration::from_millis(config.catch_up_timeout_ms),
                health.clone(),
                stopping_rx.clone(),
            )));
            Some(endpoint)
        }
        None => None,
    };
    let state = http::AppState {
        engine: command_tx,
        results: results_rx.clone(),
        metrics: metrics.clone(),
        vote_id_key: Arc::new(validated.vote_id_key),
        actor: actor.to_string(),
        admin_token: Arc::from(config.admin_token.as_str()),
        clock,
        sse_tick_ms: config.sse_tick_ms,
        sse_subscribers_max: config.sse_subscribers_max,
        health: health.clone(),
        stopping: stopping_rx,
        public_endpoints: config.public_endpoints.clone().into(),
        abuse: Arc::new(config.abuse_controls()?),
        body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
    };
    Ok(Started {
        router: http::router(state),
        handle: NodeHandle {
            health,
            results: results_rx,
            metrics,
            peers: board,
        },
        stopping,
        close_commands,
        engine,
        writer,
        peer_endpoint,
        peer_tasks,
    })
}

/// Longest wait at shutdown for the peer connections' close frames to be sent.
pub const PEER_GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// Separates the peer endpoint's random stream from the node's own.
const PEER_RNG_SALT: u64 = 0x7065_6572_5f72_6e67;

/// Marks the node ready once every peer has answered a round with nothing this node lacked,
/// or after `timeout` (a peer may be down for good; the node must still serve).
async fn report_ready_after_catch_up(
    board: PeerBoard,
    peers: Vec<String>,
    timeout: Duration,
    health: Arc<Health>,
    mut stopping: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let caught_up = board.lock().is_ok_and(|board| {
            peers
                .iter()
                .all(|p| board.get(p).is_some_and(|s| s.caught_up_at.is_some()))
        });
        if caught_up || tokio::time::Instant::now() >= deadline {
            if !caught_up {
                tracing::warn!("not caught up with every peer in time; reporting ready anyway");
            }
            health.set(Hold::CatchingUp, false);
            return;
        }
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

impl Started {
    /// Stops a node whose router has been dropped (or whose drain is over): the engine takes
    /// what is queued, refuses the rest, flushes and fsyncs what it accepted, answers it,
    /// and the log writer ends; then the peers get an orderly close.
    pub async fn stop(self) -> Result<(), NodeError> {
        let Started {
            router,
            handle,
            stopping,
            close_commands,
            engine,
            writer,
            peer_endpoint,
            peer_tasks,
        } = self;
        handle.health.set(Hold::Stopping, true);
        let _ = stopping.send(true);
        drop(router);
        let _ = close_commands.send(true);
        for task in peer_tasks {
            task.abort();
            let _ = task.await;
        }
        if let Some(endpoint) = peer_endpoint {
            // Goodbye: peers see an orderly close at once instead of waiting out the idle
            // timeout; waiting (bounded) lets the close frames leave before the process does.
            endpoint.close(0u32.into(), b"node stopping");
            if tokio::time::timeout(PEER_GOODBYE_WAIT, endpoint.wait_idle())
                .await
                .is_err()
            {
                tracing::warn!("peer connections did not close in time; stopping anyway");
            }
        }
        let engine_result = engine.await;
        writer.wait().await;
        match engine_result {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
        Ok(())
    }
}

/// Serves until `serving` ends; once `draining` fires, gives it at most `drain_max` more
/// (connections still open then are closed; their clients retry elsewhere).
async fn drain_within(
    serving: impl Future<Output = ()>,
    draining: tokio::sync::oneshot::Receiver<()>,
    drain_max: Duration,
) {
    tokio::pin!(serving);
    tokio::select! {
        biased;
        () = &mut serving => return,
        _ = draining => {}
    }
    if tokio::time::timeout(drain_max, serving).await.is_err() {
        tracing::warn!(
            drain_ms = drain_max.as_millis() as u64,
            "connections still open after the drain deadline; closing them"
        );
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
    L::Addr: std::fmt::Debug + 'static,
    S: Storage + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut started = start_with_peers(
        &config,
        io.storage,
        io.clock,
        io.rng_seed,
        io.wal_executor,
        io.peer_socket,
    )?;
    on_ready(started.handle.clone());
    let router = std::mem::replace(&mut started.router, axum::Router::new());
    let header_read_timeout = Duration::from_millis(config.header_read_timeout_ms);
    let (router, ops_task) = http::split_ops(
        router,
        io.ops_listener,
        header_read_timeout,
        &started.stopping,
    );
    let shutdown = io.shutdown;
    let health = started.handle.health.clone();
    let stopping = started.stopping.clone();
    let listener = stall_guard::StallGuardListener::new(
        io.listener,
        Duration::from_millis(config.write_stall_ms),
    );
    let (draining_tx, draining) = tokio::sync::oneshot::channel();
    let serving = connections::serve(listener, router, header_read_timeout, async move {
        shutdown.await;
        tracing::info!("stopping: no new connections; draining in-flight requests");
        health.set(Hold::Stopping, true);
        let _ = stopping.send(true);
        let _ = draining_tx.send(());
    });
    drain_within(
        serving,
        draining,
        Duration::from_millis(config.shutdown_drain_ms),
    )
    .await;
    if let Some(mut ops_task) = ops_task {
        // It ends once `stopping` is set (the public server's shutdown set it; setting it
        // again is harmless), bounded like the public drain; its router holds command senders
        // too.
        let _ = started.stopping.send(true);
        let drain = Duration::from_millis(config.shutdown_drain_ms);
        if tokio::time::timeout(drain, &mut ops_task).await.is_err() {
            ops_task.abort();
            let _ = ops_task.await;
        }
    }
    // The served router (and with it every command sender) is gone: the engine flushes.
    started.stop().await?;
    tracing::info!("stopped cleanly: every acknowledged vote is durable");
    Ok(())
}
