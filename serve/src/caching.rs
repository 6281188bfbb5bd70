//! Cacheable reads (issue 23), the same on nodes and edges: the results, history and poll-list
//! routes answer with a strong `ETag` and a `Cache-Control` a CDN or a browser can follow, and a request whose
//! `If-None-Match` names the current tag gets `304 Not Modified` without a body.
//!
//! The figures, for a broadcast whose viewers expect a fresh split every 1–2 s:
//! - an open (or not yet open) poll: `max-age=1` (a cache answers from one origin fetch for
//!   a second: at 30 million viewers polling through a CDN, the origin sees a request per
//!   edge location per second), `stale-while-revalidate=2` (past that second a cache still
//!   answers at once while it refetches, so no viewer waits on the origin and a figure is at
//!   most ~3 s old), `stale-if-error=60` (an origin that errs or is unreachable leaves
//!   viewers the last split for a minute instead of an error: degrade, do not fail);
//! - a closed poll: `max-age=60, stale-while-revalidate=600, stale-if-error=86400`. Its
//!   votes no longer change but for late replication from other regions (milliseconds, or a
//!   partition's length), which a cache then shows within a minute.
//!
//! The bodies behind the tags are stable: a poll's results and history are encoded once per
//! change of its votes, status or window (the node's `PollSnapshot::version`), not every tick,
//! and an edge serves the node's bytes as they came, so a tag names the same bytes on every
//! node and edge ([`etag_of`]).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Response header of a read an edge answered while its figures are stale: seconds since the
/// edge last heard from a node's stream.
pub const STALE_HEADER: &str = "tally-stale-seconds";

/// A strong ETag for `body`: a hash of its bytes, quoted (equal bodies, equal tags, on any
/// node or edge; a different body, another tag).
pub fn etag_of(body: &[u8]) -> Arc<str> {
    let hash = blake3::hash(body);
    let hex: String = hash.as_bytes()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"").into()
}

/// `Cache-Control` of a read of a poll that takes (or will take) votes.
pub const CACHE_OPEN: &str = "public, max-age=1, stale-while-revalidate=2, stale-if-error=60";
/// `Cache-Control` of a read of a closed poll.
pub const CACHE_CLOSED: &str =
    "public, max-age=60, stale-while-revalidate=600, stale-if-error=86400";

/// The `Cache-Control` for a poll of `status` (`open`, `not_open` or `closed`).
pub fn cache_control(status: &str) -> &'static str {
    if status == "closed" {
        CACHE_CLOSED
    } else {
        CACHE_OPEN
    }
}

/// Whether `headers`' `If-None-Match` names `etag` (or is `*`), compared weakly as RFC 9110
/// asks of `If-None-Match` (a `W/` prefix is ignored).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A cacheable JSON answer: `body` with its `etag` and `cache_control`, or 304 with the same
/// headers and no body when the request already holds it.
pub fn json(headers: &HeaderMap, etag: &str, cache_control: &'static str, body: Bytes) -> Response {
    let tag = HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let policy = HeaderValue::from_static(cache_control);
    if not_modified(headers, etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, tag), (header::CACHE_CONTROL, policy)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, tag),
            (header::CACHE_CONTROL, policy),
        ],
        Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_none_match_names_the_tag_in_a_list_weakly_or_by_star() {
        // Goal: RFC 9110's If-None-Match forms. Method: each form, and near misses.
        let tag = "\"abc\"";
        assert!(not_modified(&asking("\"abc\""), tag));
        assert!(not_modified(&asking("\"x\", \"abc\""), tag));
        assert!(not_modified(&asking("W/\"abc\""), tag));
        assert!(not_modified(&asking("*"), tag));
        assert!(!not_modified(&asking("\"abcd\""), tag));
        assert!(!not_modified(&asking("abc"), tag));
        assert!(!not_modified(&HeaderMap::new(), tag));
    }

    #[test]
    fn a_request_holding_the_tag_gets_304_with_the_headers_and_no_body() {
        let body = Bytes::from_static(b"{}");
        let fresh = json(&HeaderMap::new(), "\"t\"", CACHE_OPEN, body.clone());
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[header::ETAG], "\"t\"");
        assert_eq!(fresh.headers()[header::CACHE_CONTROL], CACHE_OPEN);
        let held = json(&asking("\"t\""), "\"t\"", CACHE_OPEN, body);
        assert_eq!(held.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(held.headers()[header::ETAG], "\"t\"");
        assert!(held.headers().get(header::CONTENT_TYPE).is_none());
    }
}
