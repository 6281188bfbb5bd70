//! The edge tier in the simulation: the real `tally-edge` code on simulated hosts
//! (`edge-<region>`, for the first [`EDGES_MAX`] regions), between the voters and the nodes.
//! Each sends to its own region's node first, then to the other regions' in order, over
//! turmoil TCP ([`SimConnector`]), and serves the voters on turmoil TCP through the node's
//! own listener adapter.
//!
//! Its timings are the production defaults scaled to the simulated network (links of 1–5 ms,
//! spikes of 400 ms): a batch the node has not answered in [`SIM_BATCH_TIMEOUT_MS`] goes to
//! the next node, and a vote is answered 503 after [`SIM_VOTE_DEADLINE_MS`], under the
//! voters' own timeouts so they hear it.

use std::net::SocketAddr;
use std::sync::Arc;

use tally_edge::upstream::{Connecting, Io};
use tally_edge::{Connector, EdgeConfig, EdgeIo};

use super::http::HTTP_PORT;
use super::net::{SimClock, SimListener};

/// A vote the edge has not got answered in this long is answered 503, in simulated ms.
pub const SIM_VOTE_DEADLINE_MS: u64 = 2_500;

/// A batch unanswered this long goes to the next node, in simulated ms.
pub const SIM_BATCH_TIMEOUT_MS: u64 = 1_000;

/// A batch answer slower than this counts against the node's breaker, in simulated ms.
pub const SIM_SLOW_BATCH_MS: u64 = 500;

/// Each edge reads each node's `/readyz` this often, in simulated ms: every probe is an HTTP
/// exchange through turmoil (5 edges × 5 nodes), which costs wall time.
pub const SIM_PROBE_INTERVAL_MS: u64 = 1_000;

/// …and its poll list this often (the run's one poll exists from the start).
pub const SIM_POLL_LIST_INTERVAL_MS: u64 = 10_000;

pub use super::scenario::EDGES_MAX;

/// The host name of `region`'s edge.
pub fn edge_host(region: &str) -> String {
    format!("edge-{region}")
}

/// The edge hosts of a run over `regions`, by edge index.
pub fn edge_hosts(regions: &[String]) -> Vec<String> {
    regions
        .iter()
        .take(EDGES_MAX)
        .map(|r| edge_host(r))
        .collect()
}

/// Connects to nodes over turmoil TCP (`HOST:PORT`, the host a simulated host name).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimConnector;

impl Connector for SimConnector {
    fn connect(&self, endpoint: &tally_client::Endpoint) -> Connecting {
        let authority = endpoint.authority.clone();
        Box::pin(async move {
            let (host, port) = authority
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
                .ok_or_else(|| std::io::Error::other(format!("bad authority {authority}")))?;
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// The configuration of `regions[index]`'s edge.
pub fn edge_config(regions: &[String], index: usize) -> EdgeConfig {
    let upstreams = (0..regions.len())
        .map(|k| {
            format!(
                "http://{}:{HTTP_PORT}",
                regions[(index + k) % regions.len()]
            )
        })
        .collect();
    EdgeConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)),
        upstreams,
        // The bulk voters' batches carry 1,000 votes: one batch in, one batch out.
        batch_votes_max: super::scenario::EDGE_BATCH_VOTES,
        vote_deadline_ms: SIM_VOTE_DEADLINE_MS,
        batch_timeout_ms: SIM_BATCH_TIMEOUT_MS,
        slow_batch_ms: SIM_SLOW_BATCH_MS,
        probe_interval_ms: SIM_PROBE_INTERVAL_MS,
        poll_list_interval_ms: SIM_POLL_LIST_INTERVAL_MS,
        // As the nodes' (`node_config`): hyper's deadline reads the real clock.
        header_read_timeout_ms: super::HEADER_READ_TIMEOUT_BEYOND_THE_RUN_MS,
        ..EdgeConfig::default()
    }
}

/// Runs `regions[index]`'s edge until its host crashes (or the run ends).
pub async fn run_edge(regions: Arc<Vec<String>>, index: usize) -> turmoil::Result {
    let listener = SimListener(turmoil::net::TcpListener::bind(("0.0.0.0", HTTP_PORT)).await?);
    let io = EdgeIo {
        listener,
        connector: Arc::new(SimConnector),
        clock: Arc::new(SimClock::with_offset(Arc::default())),
        shutdown: std::future::pending::<()>(),
    };
    tally_edge::run(edge_config(&regions, index), io, |_| {})
        .await
        .map_err(|e| e.to_string().into())
}
