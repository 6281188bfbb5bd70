//! Each node's health as the edge sees it: a task per node reads its `/readyz` (a node
//! catching up, stopping or held gets no votes) every `probe_interval_ms` and, when it is
//! ready, its poll list every `poll_list_interval_ms` (at once after a start or a failed
//! read), and reports both to the dispatcher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tally_client::Endpoint;
use tally_client::api::PollSummary;
use tokio::sync::{mpsc, watch};

use super::connector::Connector;
use super::exchange::{Connection, Exchanged, exchange, request};

/// Shortest wait for a probe's answer, in ms (with a short interval, a loaded node would
/// otherwise look down).
pub const PROBE_TIMEOUT_MS_MIN: u64 = 250;

/// What one probe found.
#[derive(Debug)]
pub struct ProbeReport {
    /// The node's position in the upstream list.
    pub node: usize,
    /// Whether `/readyz` answered 200.
    pub ready: bool,
    /// Its poll list, when it was read.
    pub polls: Option<Vec<PollSummary>>,
    /// Why it is not ready (for the log), when it is not.
    pub why: Option<String>,
}

/// How often a node is probed, and its poll list read.
#[derive(Debug, Clone, Copy)]
pub struct ProbeTimes {
    /// `/readyz` this often.
    pub interval: Duration,
    /// The poll list at most this often.
    pub poll_list_interval: Duration,
}

/// Probes `endpoint` (node `node`) until `stopping` is set.
pub async fn probe(
    node: usize,
    endpoint: Endpoint,
    connector: Arc<dyn Connector>,
    times: ProbeTimes,
    reports: mpsc::Sender<ProbeReport>,
    mut stopping: watch::Receiver<bool>,
) {
    let interval = times.interval;
    let timeout = interval
        .saturating_mul(2)
        .max(Duration::from_millis(PROBE_TIMEOUT_MS_MIN));
    let mut connection = None;
    let mut polls_read_at: Option<tokio::time::Instant> = None;
    loop {
        let due = polls_read_at.is_none_or(|at| at.elapsed() >= times.poll_list_interval);
        let report = probe_once(node, &endpoint, &*connector, &mut connection, timeout, due).await;
        if report.polls.is_some() {
            polls_read_at = Some(tokio::time::Instant::now());
        }
        if reports.send(report).await.is_err() {
            return;
        }
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn get(
    endpoint: &Endpoint,
    connector: &dyn Connector,
    connection: &mut Option<Connection>,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let Some(request) = request(endpoint, hyper::Method::GET, path, &[], Bytes::new()) else {
        return Err(format!(
            "{}: cannot build a request for {path}",
            endpoint.url
        ));
    };
    let (exchanged, reusable) =
        exchange(connector, endpoint, connection.take(), request, timeout).await;
    *connection = reusable;
    match exchanged {
        Exchanged::Answered { status, body } => Ok((status, body)),
        Exchanged::NotSent(why) | Exchanged::Lost(why) => Err(why),
    }
}

async fn probe_once(
    node: usize,
    endpoint: &Endpoint,
    connector: &dyn Connector,
    connection: &mut Option<Connection>,
    timeout: Duration,
    read_polls: bool,
) -> ProbeReport {
    let not_ready = |why: String| ProbeReport {
        node,
        ready: false,
        polls: None,
        why: Some(why),
    };
    match get(endpoint, connector, connection, "/readyz", timeout).await {
        Ok((200, _)) => {}
        Ok((status, body)) => {
            let why = String::from_utf8_lossy(&body).replace('\n', " ");
            return not_ready(format!(
                "{}: /readyz answered {status}: {}",
                endpoint.url,
                why.trim()
            ));
        }
        Err(why) => return not_ready(why),
    }
    if !read_polls {
        return ProbeReport {
            node,
            ready: true,
            polls: None,
            why: None,
        };
    }
    let polls = match get(endpoint, connector, connection, "/v1/polls", timeout).await {
        Ok((200, body)) => serde_json::from_slice::<Vec<PollSummary>>(&body).ok(),
        Ok(_) | Err(_) => None,
    };
    ProbeReport {
        node,
        ready: true,
        polls,
        why: None,
    }
}
