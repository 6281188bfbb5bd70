//! Starting, serving and stopping an edge. Every I/O resource is passed in ([`EdgeIo`]): the
//! listener phones connect to, the connector that reaches nodes, the wall clock and the stop
//! signal; `tally edge` builds real ones, the simulation turmoil ones. An edge has no disk.
//!
//! Stopping (SIGTERM): `/readyz` turns 503, no new connection is accepted, batches leave at
//! once without lingering, every vote already taken is answered (by a node, or 503 at its
//! deadline), then [`run`] returns, all within `shutdown_drain_ms`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tally_core::Clock;
use tally_serve::stall_guard::StallGuardListener;
use tokio::sync::watch;

use crate::catalogue::Catalogue;
use crate::config::{EdgeConfig, EdgeConfigError};
use crate::dispatch::{self, Availability, Running, Settings};
use crate::http::{Door, EdgeState, router};
use crate::metrics::EdgeMetrics;
use crate::upstream::Connector;

/// Every I/O resource an edge uses.
pub struct EdgeIo<L, F> {
    /// Accepts the phones' HTTP connections.
    pub listener: L,
    /// Opens connections to nodes.
    pub connector: Arc<dyn Connector>,
    /// The wall clock (vote tokens, rate limits).
    pub clock: Arc<dyn Clock>,
    /// Resolves when the edge should stop.
    pub shutdown: F,
}

/// What a running edge tells its caller.
#[derive(Clone)]
pub struct EdgeHandle {
    /// Its metrics.
    pub metrics: Arc<EdgeMetrics>,
    /// How many nodes can take votes.
    pub availability: Arc<Availability>,
    /// The polls it knows.
    pub catalogue: watch::Receiver<Arc<Catalogue>>,
}

/// An edge whose dispatcher and probes run, not yet serving connections: [`run`] serves its
/// router; tests send requests to it directly (`tower::ServiceExt::oneshot`).
pub struct Started {
    /// The whole HTTP API.
    pub router: axum::Router,
    /// The live stream's first requests, served below hyper.
    pub streams: tally_serve::viewers::Streams,
    /// Metrics, availability, polls.
    pub handle: EdgeHandle,
    stopping: watch::Sender<bool>,
    running: Running,
}

/// Starts an edge's dispatcher and probes for `config`.
pub fn start(
    config: &EdgeConfig,
    connector: Arc<dyn Connector>,
    clock: Arc<dyn Clock>,
) -> Result<Started, EdgeConfigError> {
    let validated = config.validate()?;
    let metrics = Arc::new(EdgeMetrics::new(&config.upstreams));
    let (stopping, stopping_rx) = watch::channel(false);
    let settings = Settings::of(config);
    let (dispatch, running) = dispatch::start(
        settings,
        validated.upstreams.clone(),
        connector.clone(),
        metrics.clone(),
        stopping_rx.clone(),
    );
    let fanout = crate::fanout::Fanout::new(
        crate::fanout::FanoutSettings {
            polls_max: config.fanout_polls_max,
            viewer_memory_bytes: config.viewer_memory_bytes,
            stale_after: EdgeConfig::ms(config.fanout_stale_after_ms),
        },
        crate::fanout::FanoutWiring {
            upstreams: validated.upstreams.clone(),
            connector: connector.clone(),
            availability: dispatch.availability.clone(),
            metrics: metrics.clone(),
            stopping: stopping_rx.clone(),
        },
    );
    let handle = EdgeHandle {
        metrics: metrics.clone(),
        availability: dispatch.availability.clone(),
        catalogue: dispatch.catalogue.clone(),
    };
    let state = EdgeState {
        dispatch,
        vote_id_key: validated.vote_id_key,
        abuse: validated.abuse,
        trusted_proxies: validated.trusted_proxies,
        clock,
        metrics,
        body_read_timeout: EdgeConfig::ms(config.body_read_timeout_ms),
        vote_deadline: EdgeConfig::ms(config.vote_deadline_ms),
        stopping: stopping_rx,
        upstreams: validated.upstreams,
        connector,
        batch_token: Arc::from(config.batch_token.as_str()),
        fanout,
        public_endpoints: config.public_endpoints.clone().into(),
        door: Door::new(config.votes_waiting_max),
    };
    let (router, streams) = router(state);
    Ok(Started {
        router,
        streams,
        handle,
        stopping,
        running,
    })
}

impl Started {
    /// Stops an edge whose router has been dropped: batches leave at once, every vote held is
    /// answered, the probes end. Waits at most `within`.
    pub async fn stop(self, within: Duration) {
        let Started {
            router,
            streams,
            stopping,
            running,
            ..
        } = self;
        let _ = stopping.send(true);
        // Both hold the edge's state, and with it the dispatcher's door.
        drop(router);
        drop(streams);
        let Running { dispatcher, probes } = running;
        let mut dispatcher = dispatcher;
        if tokio::time::timeout(within, &mut dispatcher).await.is_err() {
            tracing::warn!("votes still unanswered at the drain deadline; stopping anyway");
            dispatcher.abort();
        }
        for probe in probes {
            probe.abort();
            let _ = probe.await;
        }
    }
}

/// Runs an edge until `io.shutdown` resolves, then drains (see the module's documentation).
/// `on_ready` is called once it serves (ready for votes once a node answers its probe).
pub async fn run<L, F>(
    config: EdgeConfig,
    io: EdgeIo<L, F>,
    on_ready: impl FnOnce(EdgeHandle),
) -> Result<(), EdgeConfigError>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
    L::Addr: std::fmt::Debug + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut started = start(&config, io.connector, io.clock)?;
    on_ready(started.handle.clone());
    let router = std::mem::replace(&mut started.router, axum::Router::new());
    let streams = started.streams.clone();
    let listener = StallGuardListener::new(io.listener, EdgeConfig::ms(config.write_stall_ms));
    let stopping = started.stopping.clone();
    let shutdown = io.shutdown;
    let (draining_tx, draining) = tokio::sync::oneshot::channel();
    let serving = tally_serve::connections::serve_with_streams(
        listener,
        router,
        Some(streams),
        EdgeConfig::ms(config.header_read_timeout_ms),
        async move {
            shutdown.await;
            tracing::info!("stopping: no new connections; answering the votes held");
            let _ = stopping.send(true);
            let _ = draining_tx.send(());
        },
    );
    let drain = EdgeConfig::ms(config.shutdown_drain_ms);
    tokio::pin!(serving);
    tokio::select! {
        biased;
        () = &mut serving => {}
        _ = draining => {
            if tokio::time::timeout(drain, &mut serving).await.is_err() {
                tracing::warn!(
                    drain_ms = config.shutdown_drain_ms,
                    "connections still open after the drain deadline; closing them"
                );
            }
        }
    }
    started.stop(drain).await;
    tracing::info!("stopped: every vote taken was answered");
    Ok(())
}
