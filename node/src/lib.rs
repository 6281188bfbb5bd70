//! `tally-node`: the server, as a library: the I/O shell around `tally-core` that the `tally`
//! binary (`tally/`) and the simulation (`sim/`) run.
//!
//! Every I/O resource is passed in, never reached for: [`run`] takes its listener, storage,
//! clock, RNG seed and shutdown signal in [`NodeIo`], so the simulation can hand it simulated
//! ones (STYLE.md §2). `main.rs` builds the real ones.
//!
//! Start-up: recover the write-ahead log into a replica (or, on an empty disk, draw a new
//! incarnation and log it first), apply the configured polls, then serve. Shutdown: stop
//! taking requests, let the engine flush and fsync what it accepted, and return. A failed log
//! stops the node the same way once the engine has handed what was durable to readers and
//! peers, and [`run`] returns its error (the process exits non-zero, to be restarted).

pub mod clock;
pub mod clock_watch;
pub mod clock_windows;
pub mod config;
/// The dashboard and voting pages, shared with the edge (`tally_serve::pages`).
pub use tally_serve::pages as dashboard;
pub mod disk_watch;
pub mod disputes;
pub mod engine;
pub mod faulty_storage;
pub mod health;
pub mod http;
pub mod huge_pages;
pub mod metrics;
pub mod peer;
pub mod planted;
pub mod push_journal;
pub mod reservation;
pub mod results;
pub mod storage;
pub mod wal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock_watch::{CLOCK_SAMPLE_TTL_MS_MIN, ClockSettings, ClockWatch};
use crate::config::Config;
use crate::engine::{Engine, EngineIo};
use crate::health::{Health, Hold};
use crate::metrics::Metrics;
use crate::peer::status::PeerBoard;
use crate::peer::sync::{PeerTarget, SyncContext};
use crate::planted::PlantedBug;
use crate::results::ResultsSnapshot;
use crate::storage::Storage;
pub use crate::wal::WalExecutor;
// The HTTP serving the node shares with the edge tier.
use crate::wal::{group_commit, startup};
pub use tally_serve::{connections, stall_guard};

/// Where the time comes from: the system clock in production, simulated time in the sim.
pub use tally_core::Clock;

pub use crate::clock::SystemClock;

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
    /// **The simulation's checker tests only**: a guarantee this node breaks on purpose
    /// ([`planted`]). `tally run` passes `None`; no file, flag or variable sets it.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The log could not be recovered.
    #[error(transparent)]
    Recovery(#[from] startup::RecoveryError),
    /// The engine stopped because the log failed (after handing what was durable to
    /// readers and peers): restart the node, and recovery replays the log.
    #[error("{0} (restart it: recovery replays the log)")]
    Engine(#[from] engine::EngineError),
    /// The log writer could not start.
    #[error(transparent)]
    Writer(#[from] group_commit::StartError),
    /// The peer certificates could not be loaded.
    #[error("peer TLS: {0}")]
    Tls(#[from] Box<peer::tls::TlsError>),
    /// The peer endpoint could not start.
    #[error("peer endpoint: {0}")]
    PeerEndpoint(std::io::Error),
}

impl NodeError {
    /// Whether the node stopped because its storage failed (a write or fsync of its log, at
    /// start-up or while serving): a supervisor should start it again, and recovery replays
    /// the log. Anything else (a config error, a log recovery refuses) needs an operator.
    pub fn is_storage_failure(&self) -> bool {
        match self {
            Self::Engine(engine::EngineError::LogFailed) => true,
            Self::Recovery(startup::RecoveryError::Wal(error)) => {
                matches!(
                    error,
                    wal::WalError::Io { .. } | wal::WalError::Stopped { .. }
                )
            }
            _ => false,
        }
    }
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
    /// The live stream's first requests, served below hyper.
    pub streams: tally_serve::viewers::Streams,
    /// Readiness, results and metrics.
    pub handle: NodeHandle,
    /// Tells long-lived streams the node is stopping.
    stopping: watch::Sender<bool>,
    /// Tells the engine to take no more commands (the drain is over).
    close_commands: watch::Sender<bool>,
    /// Becomes true when the engine has stopped (after a log failure, the node must stop).
    engine_stopped: watch::Receiver<bool>,
    engine: tokio::task::JoinHandle<Result<(), engine::EngineError>>,
    writer: group_commit::WriterDone,
    /// The push journal's writer (peer sync on): it ends once the journal's task does.
    journal_writer: Option<group_commit::WriterDone>,
    peer_endpoint: Option<quinn::Endpoint>,
    peer_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Recovers the log in `storage` and starts the engine and the log writer (no peer sync).
pub fn start<S: Storage + Clone + 'static>(
    config: &Config,
    storage: S,
    clock: Arc<dyn Clock>,
    rng_seed: u64,
    wal_executor: WalExecutor,
) -> Result<Started, NodeError> {
    start_with_peers(config, storage, clock, rng_seed, wal_executor, None, None)
}

/// Recovers the log in `storage`, starts the engine and the log writer, and, given a peer
/// socket, the QUIC endpoint with one pull session per configured peer. A node with peers
/// reports ready once it has caught up with every peer (or after `catch_up_timeout_ms`).
/// A disk watch holds it while its storage is low on space (`disk_reserve_bytes`).
pub fn start_with_peers<S: Storage + Clone + 'static>(
    config: &Config,
    storage: S,
    clock: Arc<dyn Clock>,
    rng_seed: u64,
    wal_executor: WalExecutor,
    peer_socket: Option<peer::transport::PeerSocket>,
    planted_bug: Option<PlantedBug>,
) -> Result<Started, NodeError> {
    let validated = config.validate()?;
    let syncing = peer_socket.is_some() && config.other_peers().next().is_some();
    // A node with peers proposes its configured start-up windows only once its clock is
    // checked (the clock watch does): recovery defines those polls as drafts.
    let (recovery_config, startup_windows) = if syncing {
        deferred_startup_windows(config)?
    } else {
        (config.clone(), Vec::new())
    };
    let watched = storage.clone();
    let directory = storage.clone();
    let mut recovered = startup::recover(
        &recovery_config,
        &validated,
        storage,
        &*clock,
        rng_seed,
        planted_bug,
    )?;
    let journal = recover_push_journal(config, syncing, &directory, &mut recovered)?;
    if planted_bug == Some(PlantedBug::KeepDuplicates) {
        recovered.replica.plant_bug_keep_duplicates();
    }
    if planted_bug == Some(PlantedBug::MergeAcrossDefinitions) {
        recovered.replica.plant_bug_merge_across_definitions();
    }
    let metrics = Arc::new(Metrics::new());
    metrics.observe_recovery(
        recovered.report.wal.is_damaged(),
        recovered.report.missing.iter().map(|m| m.count()).sum(),
        recovered.report.adopted,
        recovered.new_incarnation.map(|why| why.as_str()),
    );
    let actor = recovered.replica.actor().clone();
    let (actor_tx, actor_rx) = watch::channel(actor.clone());
    tracing::info!(
        %actor,
        report = %recovered.report,
        new_incarnation = recovered.new_incarnation.map(|why| why.as_str()),
        "recovered"
    );
    let board = PeerBoard::default();
    let initial = ResultsSnapshot::first(&recovered.replica, clock.now(), &Default::default());
    let (results_tx, results_rx) = watch::channel(Arc::new(initial));
    let (command_tx, command_rx) = mpsc::channel(config.engine_queue_max);
    let (ack_tx, ack_rx) = mpsc::channel(engine::ACK_LANE_QUEUE_MAX);
    let (close_commands, close_commands_rx) = watch::channel(false);
    // The journal's writer hands reports to a task of its own, never to the engine: an
    // inline log's storage (memory-only) serves it as well from a task.
    let journal_executor = match &wal_executor {
        WalExecutor::Inline => WalExecutor::Task,
        other => other.clone(),
    };
    // Real threads, whose timing the simulation (the one user of a pausing log writer) could
    // not replay: its nodes fault their memory in on the engine, as before the helper.
    let memory_helper = !matches!(wal_executor, WalExecutor::PausingTask(_));
    let (job_tx, done_rx, mut writer) =
        group_commit::start(recovered.wal, wal_executor, "tally-wal")?;
    let health = Arc::new(Health::new(if syncing { &[Hold::CatchingUp] } else { &[] }));
    let sync_tick_ms = config.sync_tick_ms;
    let ignore_skew = planted_bug == Some(PlantedBug::IgnoreClockSkew);
    let clock_watch = ClockWatch::new(
        clock.clone(),
        ClockSettings {
            max_offset_ms: config.max_clock_offset_ms,
            has_peers: syncing && !ignore_skew,
            trust_alone_after: Duration::from_millis(config.catch_up_timeout_ms),
            sample_ttl_ms: CLOCK_SAMPLE_TTL_MS_MIN
                .max(sync_tick_ms.saturating_mul(clock_watch::CLOCK_SAMPLE_TTL_TICKS)),
            startup_windows,
        },
        health.clone(),
        metrics.clone(),
    );
    let mut engine = Engine::new(
        recovered.replica,
        clock.clone(),
        metrics.clone(),
        Duration::from_millis(config.results_tick_ms),
        board.clone(),
        health.clone(),
        rng_seed ^ INCARNATION_RNG_SALT,
    );
    if let Some(inline) = writer.take_inline() {
        engine.write_log_inline(inline);
    }
    if planted_bug == Some(PlantedBug::AckBeforeFsync) {
        engine.plant_bug_ack_before_fsync();
    }
    if memory_helper {
        engine.prepare_memory_off_engine();
    }
    if syncing {
        engine.watch_clock_steps(clock_watch.clone());
    }
    if planted_bug == Some(PlantedBug::ReuseActorAfterDiskLoss) {
        engine.plant_bug_keep_actor_behind_peers();
    }
    if planted_bug == Some(PlantedBug::AckAfterFailedWrite) {
        engine.plant_bug_ack_after_failed_write();
    }
    if syncing {
        engine.hand_over_to(config.other_peers().map(|p| p.id.clone()).collect());
    }
    let ack_peers = replicated_acks(config, &mut engine, planted_bug);
    // Before the first request: a node that starts on a full disk refuses from the start.
    let mut disk_watch = disk_watch::DiskWatch::new(
        watched,
        config.disk_reserve_bytes,
        health.clone(),
        metrics.clone(),
    );
    disk_watch.check();
    let (engine_stopped_tx, engine_stopped) = watch::channel(false);
    let engine = engine.spawn(EngineIo {
        commands: command_rx,
        acks: ack_rx,
        wal_jobs: job_tx,
        wal_done: done_rx,
        results: results_tx,
        close_commands: close_commands_rx,
        stopped: engine_stopped_tx,
        actor: actor_tx,
    });
    let (stopping, stopping_rx) = watch::channel(false);
    // Background tasks (the disk watch, then peer sync): `stop` aborts them all.
    let mut peer_tasks = vec![tokio::spawn(disk_watch.run(stopping_rx.clone()))];
    let mut journal_writer = None;
    let push_journal = match journal.filter(|_| syncing) {
        Some(journal) => {
            let (handle, task, writer) = push_journal::PushJournal::start(
                journal,
                journal_executor,
                ack_tx.clone(),
                command_tx.clone(),
                health.clone(),
                metrics.clone(),
                push_journal::JournalLimits::default(),
            )?;
            peer_tasks.push(task);
            journal_writer = Some(writer);
            Some(handle)
        }
        None => None,
    };
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
                ack_lane: ack_tx.clone(),
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
                actor: actor_rx,
                tick: Duration::from_millis(config.sync_tick_ms),
                records_per_round_max: config.sync_records_per_round_max,
                board: board.clone(),
                clock: clock.clone(),
                clock_watch: clock_watch.clone(),
                metrics: metrics.clone(),
                acks: ack_peers,
                journal: push_journal,
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
            peer_tasks.push(tokio::spawn(clock_windows::run(
                clock_watch.clone(),
                command_tx.clone(),
                stopping_rx.clone(),
            )));
            peer_tasks.push(tokio::spawn(report_ready_after_catch_up(
                board.clone(),
                config.other_peers().map(|p| p.id.clone()).collect(),
                Duration::from_millis(config.catch_up_timeout_ms),
                health.clone(),
                clock_watch.clone(),
                stopping_rx.clone(),
            )));
            Some(endpoint)
        }
        None => None,
    };
    let wiring = http::Wiring {
        engine: command_tx,
        results: results_rx.clone(),
        metrics: metrics.clone(),
        clock,
        health: health.clone(),
        stopping: stopping_rx,
    };
    let state = http::AppState::new(wiring, config, &validated)?;
    Ok(Started {
        streams: http::streams(&state),
        router: http::router(state),
        handle: NodeHandle {
            health,
            results: results_rx,
            metrics,
            peers: board,
        },
        stopping,
        close_commands,
        engine_stopped,
        engine,
        writer,
        journal_writer,
        peer_endpoint,
        peer_tasks,
    })
}

/// Replays the push journal (records peers pushed, durable before the main log held them)
/// into the recovered replica and log, and returns it open for appends when this node syncs
/// with peers (a node without peers only drains a journal left from before).
fn recover_push_journal<S: Storage + Clone + 'static>(
    config: &Config,
    syncing: bool,
    directory: &S,
    recovered: &mut startup::Recovered<S>,
) -> Result<Option<wal::Wal<push_journal::storage::JournalStorage<S>>>, NodeError> {
    let journal_storage = push_journal::storage::JournalStorage::new(directory.clone());
    let files = journal_storage
        .list()
        .map_err(|error| wal::WalError::Io {
            operation: "list",
            file: "the push journal".to_owned(),
            source: Arc::new(error),
        })
        .map_err(startup::RecoveryError::from)?;
    if !syncing && files.is_empty() {
        return Ok(None);
    }
    let (journal, replayed) = push_journal::recover::recover_journal(
        directory,
        &mut recovered.replica,
        &mut recovered.wal,
        config.accept_log_damage,
    )?;
    if replayed.batches > 0 || !replayed.report.is_whole() {
        tracing::warn!(
            batches = replayed.batches,
            records_added = replayed.records_added,
            refused = replayed.refused,
            report = %replayed.report,
            "push journal replayed: records peers pushed are in the log now"
        );
    }
    Ok(syncing.then_some(journal))
}

/// Turns on replicated acks in `engine` if the configuration asks for them: what the peer
/// sessions need to push to the ack peers.
fn replicated_acks(
    config: &Config,
    engine: &mut Engine,
    planted_bug: Option<PlantedBug>,
) -> Option<peer::sync::AckPeers> {
    if config.ack_mode != config::AckMode::Replicated {
        return None;
    }
    let peers: std::collections::BTreeSet<_> = config.ack_peer_ids().into_iter().collect();
    let (durable, durable_rx) = watch::channel(0);
    let feed = Arc::new(engine::PushFeed::default());
    engine.replicate_acks(engine::AckSettings {
        peers: peers.clone(),
        timeout: Duration::from_millis(config.ack_timeout_ms),
        fallback: config.ack_fallback,
        durable,
        feed: feed.clone(),
    });
    if planted_bug == Some(PlantedBug::AckBeforePeerFsync) {
        engine.plant_bug_ack_before_peer_fsync();
    }
    tracing::info!(
        ack_peers = ?config.ack_peers,
        fallback = ?config.ack_fallback,
        timeout_ms = config.ack_timeout_ms,
        "replicated acks: a vote is acknowledged once an ack peer has it on disk too"
    );
    Some(peer::sync::AckPeers {
        peers,
        durable: durable_rx,
        feed,
    })
}

/// Longest wait at shutdown for the peer connections' close frames to be sent.
pub const PEER_GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// Separates the peer endpoint's random stream from the node's own.
const PEER_RNG_SALT: u64 = 0x7065_6572_5f72_6e67;

/// The configuration recovery starts from when the clock watch proposes the start-up
/// windows (every poll a draft), and those windows.
fn deferred_startup_windows(
    config: &Config,
) -> Result<
    (
        Config,
        Vec<(tally_core::PollId, clock_watch::StartupWindow)>,
    ),
    NodeError,
> {
    let mut drafts = config.clone();
    let mut windows = Vec::new();
    // An explicit `opens_at` reads no clock: recovery proposes it at once.
    for poll in drafts
        .polls
        .iter_mut()
        .filter(|p| p.open && p.opens_at.is_none())
    {
        let id =
            tally_core::PollId::new(poll.id.clone()).map_err(|e| config::ConfigError::Invalid {
                setting: "polls",
                message: format!("poll id: {e}"),
            })?;
        windows.push((
            id,
            clock_watch::StartupWindow {
                duration_seconds: poll.duration_seconds,
            },
        ));
        poll.open = false;
    }
    Ok((drafts, windows))
}

/// Marks the node ready once every peer has answered a round with nothing this node lacked
/// and the start-up windows are proposed, or after `timeout` (a peer may be down for good;
/// the node must still serve).
/// Separates the engine's incarnation draws from the node's other random streams.
const INCARNATION_RNG_SALT: u64 = 0x696e_6361_726e_6174;

/// Marks the node ready once every peer has answered a round with nothing this node lacked,
/// or after `timeout` (a peer may be down for good; the node must still serve).
async fn report_ready_after_catch_up(
    board: PeerBoard,
    peers: Vec<String>,
    timeout: Duration,
    health: Arc<Health>,
    clock_watch: Arc<ClockWatch>,
    mut stopping: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let caught_up = !clock_watch.windows_pending()
            && board.lock().is_ok_and(|board| {
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
            streams: _,
            handle,
            stopping,
            close_commands,
            engine_stopped: _,
            engine,
            writer,
            journal_writer,
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
        if let Some(journal_writer) = journal_writer {
            journal_writer.wait().await;
        }
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
    S: Storage + Clone + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut started = start_with_peers(
        &config,
        io.storage,
        io.clock,
        io.rng_seed,
        io.wal_executor,
        io.peer_socket,
        io.planted_bug,
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
    let mut engine_stopped = started.engine_stopped.clone();
    let streams = Some(started.streams.clone());
    let serving = connections::serve_with_streams(
        listener,
        router,
        streams,
        header_read_timeout,
        async move {
            tokio::select! {
                () = shutdown => {
                    tracing::info!("stopping: no new connections; draining in-flight requests");
                }
                _ = engine_stopped.wait_for(|stopped| *stopped) => {
                    tracing::error!(
                        "stopping: the engine stopped after its log failed; no new connections, \
                         draining in-flight requests, then exiting with an error"
                    );
                }
            }
            health.set(Hold::Stopping, true);
            let _ = stopping.send(true);
            let _ = draining_tx.send(());
        },
    );
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
