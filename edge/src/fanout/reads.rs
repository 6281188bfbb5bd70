//! The reads the fan-out answers from its cached bytes: results (from the poll's slot),
//! history and the poll list (read from a node at most once per refresh interval, one read in
//! flight, the rest waiting for it), and viewers' streams. Every answer carries the node's
//! `Cache-Control` and strong `ETag` and honours `If-None-Match` ([`tally_serve::caching`]);
//! while the figures are stale it carries [`STALE_HEADER`] too.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tally_serve::caching::{self, CACHE_OPEN};
use tally_serve::error::ApiError;
use tally_serve::viewers::{Feed, ViewerPath};
use tokio::time::Instant;

use super::latest::{Encoded, Latest, Results, StaleReason};
use super::{
    Entry, FIRST_RESULTS_WAIT_MS, Fanout, HISTORY_REFRESH_MS, POLL_LIST_REFRESH_MS,
    UPSTREAM_READ_TIMEOUT_MS, viewer,
};
use crate::catalogue::Catalogue;
use crate::upstream::{Exchanged, exchange, request};

pub use tally_serve::caching::STALE_HEADER;

/// A body read from a node, and when.
pub(crate) struct Fetched {
    body: Arc<Encoded>,
    fetched_at: Instant,
    /// The poll's results generation when it was read.
    generation: u64,
}

impl Fanout {
    /// `GET /v1/polls/{poll}/results` without `at`.
    pub async fn results(
        &self,
        catalogue: &Catalogue,
        poll: &str,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let (_, latest, results) = self.with_results(catalogue, poll).await?;
        Ok(cached_answer(
            headers,
            &results.body,
            results.closed,
            &latest,
        ))
    }

    /// `GET /v1/polls/{poll}/history`.
    pub async fn history(
        &self,
        catalogue: &Catalogue,
        poll: &str,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let (entry, latest, results) = self.with_results(catalogue, poll).await?;
        let mut cached = entry.history.lock().await;
        let fresh = cached.as_ref().is_some_and(|f| {
            f.generation == latest.results_generation
                || f.fetched_at.elapsed() < Duration::from_millis(HISTORY_REFRESH_MS)
        });
        if !fresh {
            let path = format!("/v1/polls/{poll}/history");
            refresh(self, &path, &mut cached, latest.results_generation).await?;
        }
        let Some(history) = cached.as_ref() else {
            return Err(no_results());
        };
        Ok(cached_answer(
            headers,
            &history.body,
            results.closed,
            &latest,
        ))
    }

    /// The poll's entry and its latest value, once that holds results (waits at most
    /// [`FIRST_RESULTS_WAIT_MS`]), with the results.
    async fn with_results(
        &self,
        catalogue: &Catalogue,
        poll: &str,
    ) -> Result<(Entry, Arc<Latest>, Arc<Results>), ApiError> {
        let entry = self
            .entry(catalogue, poll)
            .map_err(|e| named(e.into(), poll))?;
        let latest = first_results(&entry).await?;
        let results = latest.results.clone().ok_or_else(no_results)?;
        Ok((entry, latest, results))
    }

    /// `GET /v1/polls`.
    pub async fn poll_list(&self, headers: &HeaderMap) -> Result<Response, ApiError> {
        let mut cached = self.poll_list.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|f| f.fetched_at.elapsed() < Duration::from_millis(POLL_LIST_REFRESH_MS));
        if !fresh {
            refresh(self, "/v1/polls", &mut cached, 0).await?;
        }
        let Some(list) = cached.as_ref() else {
            return Err(ApiError::Unavailable("no node can answer now"));
        };
        Ok(caching::json(
            headers,
            &list.body.etag,
            CACHE_OPEN,
            list.body.json.clone(),
        ))
    }

    /// `GET /v1/polls/{poll}/stream` through hyper (a stream asked for on a keep-alive
    /// connection; one asked for first is served below hyper, [`Self::join_viewer`]): its own
    /// frames, its place charged what a viewer through hyper costs.
    pub async fn stream(&self, catalogue: &Catalogue, poll: &str) -> Result<Response, ApiError> {
        let entry = self
            .entry(catalogue, poll)
            .map_err(|e| named(e.into(), poll))?;
        let Some(place) = self.admit(ViewerPath::ThroughHyper) else {
            // Full: the cacheable results route serves the rest (a CDN absorbs it).
            return Err(ApiError::Overloaded(5));
        };
        first_results(&entry).await?;
        let frames = viewer::stream(entry.latest.clone(), place);
        Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(frames),
        )
            .into_response())
    }

    /// A new viewer below hyper ([`tally_serve::viewers`]): a place among the poll's hub of
    /// viewers, charged what a viewer below hyper costs.
    pub async fn join_viewer(&self, catalogue: &Catalogue, poll: &str) -> Result<Feed, ApiError> {
        let entry = self
            .entry(catalogue, poll)
            .map_err(|e| named(e.into(), poll))?;
        let Some(place) = self.admit(ViewerPath::BelowHyper) else {
            return Err(ApiError::Overloaded(5));
        };
        first_results(&entry).await?;
        Ok(Feed::Hub {
            hub: entry.hub.clone(),
            place: Box::new(place),
        })
    }
}

/// A refusal that names the poll where the error has a place for it.
fn named(error: ApiError, poll: &str) -> ApiError {
    match error {
        ApiError::UnknownPoll(_) => ApiError::UnknownPoll(poll.to_owned()),
        other => other,
    }
}

fn no_results() -> ApiError {
    ApiError::Unavailable("no node has sent this poll's results yet")
}

/// The slot's value once it holds results (waits at most [`FIRST_RESULTS_WAIT_MS`]).
async fn first_results(entry: &Entry) -> Result<Arc<Latest>, ApiError> {
    let mut latest = entry.latest.clone();
    let wait = Duration::from_millis(FIRST_RESULTS_WAIT_MS);
    match tokio::time::timeout(wait, latest.wait_for(|l| l.results.is_some())).await {
        Ok(Ok(latest)) => Ok(latest.clone()),
        Ok(Err(_)) => Err(ApiError::Unavailable("the edge is stopping")),
        Err(_) => Err(no_results()),
    }
}

/// A read's answer from the cached `body`: the open or closed poll's `Cache-Control`, its tag
/// (a 304 if `headers` name it), and the staleness of `latest`.
fn cached_answer(headers: &HeaderMap, body: &Encoded, closed: bool, latest: &Latest) -> Response {
    let policy = caching::cache_control(if closed { "closed" } else { "open" });
    let response = caching::json(headers, &body.etag, policy, body.json.clone());
    with_staleness(response, latest)
}

/// `response` with [`STALE_HEADER`] while the node's stream is silent.
fn with_staleness(mut response: Response, latest: &Latest) -> Response {
    if let Some(stale) = latest
        .stale
        .as_ref()
        .filter(|s| s.reason == StaleReason::Upstream)
    {
        response
            .headers_mut()
            .insert(STALE_HEADER, HeaderValue::from(stale.stale_seconds));
    }
    response
}

/// Reads `path` from the nearest ready node into `cached` (asking with its tag); on failure
/// the cached bytes stay (degrade, do not fail) and only a first read errs.
async fn refresh(
    fanout: &Fanout,
    path: &str,
    cached: &mut Option<Fetched>,
    generation: u64,
) -> Result<(), ApiError> {
    let shared = &fanout.shared;
    let node = shared.availability.nearest().unwrap_or(0);
    let endpoint = &shared.upstreams[node];
    let tag = cached.as_ref().map(|f| f.body.etag.clone());
    let headers: Vec<_> = tag.iter().map(|t| (header::IF_NONE_MATCH, &**t)).collect();
    let Some(outgoing) = request(endpoint, hyper::Method::GET, path, &headers, Bytes::new()) else {
        return Err(ApiError::NotFound(path.to_owned()));
    };
    let timeout = Duration::from_millis(UPSTREAM_READ_TIMEOUT_MS);
    let (exchanged, _) = exchange(&*shared.connector, endpoint, None, outgoing, timeout).await;
    let fetched = |body: Arc<Encoded>| Fetched {
        body,
        fetched_at: Instant::now(),
        generation,
    };
    match exchanged {
        Exchanged::Answered { status: 200, body } => {
            *cached = Some(fetched(Arc::new(Encoded::new(body))));
            Ok(())
        }
        Exchanged::Answered { status: 304, .. } if cached.is_some() => {
            if let Some(held) = cached.take() {
                *cached = Some(fetched(held.body));
            }
            Ok(())
        }
        Exchanged::Answered { status: 404, .. } => Err(ApiError::UnknownPoll(path.to_owned())),
        answered if cached.is_some() => {
            tracing::debug!(
                ?answered,
                path,
                "a read of a node failed; serving the cached bytes"
            );
            Ok(())
        }
        _ => Err(ApiError::Unavailable("no node can answer now")),
    }
}
