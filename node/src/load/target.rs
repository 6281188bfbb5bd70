//! The nodes `tally load` drives: `http://HOST:PORT` URLs resolved once at start, keep-alive
//! HTTP/1.1 connections to them, and the one read the check needs (`GET …/results`).
//!
//! Only the addresses given are ever contacted; nothing is discovered or followed.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::LoadError;

/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// A node to drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given, without a trailing slash.
    pub url: String,
    /// `HOST:PORT`, sent as the `Host` header.
    pub authority: String,
    /// Where to connect.
    pub address: SocketAddr,
}

impl Target {
    /// Parses `http://HOST:PORT` (a trailing `/` is allowed) and resolves the host.
    pub async fn resolve(url: &str) -> Result<Self, LoadError> {
        let bad = |why: &str| LoadError::BadTarget(url.to_owned(), why.to_owned());
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            return Err(bad(
                "give the node's base URL, http://HOST:PORT, without a path",
            ));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let address = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("the host resolves to no address"))?;
        Ok(Self {
            url: format!("http://{authority}"),
            authority: authority.to_owned(),
            address,
        })
    }

    /// Opens a keep-alive HTTP/1.1 connection; its driver runs as a task that ends when the
    /// returned sender is dropped or the peer closes.
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let connect = TcpStream::connect(self.address);
        let stream = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect)
            .await
            .map_err(|_| format!("connecting to {} timed out", self.url))?
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {} failed: {e}", self.url))?;
        tokio::spawn(async move {
            // Ends with an error when the peer resets; the sender sees that on its next use.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// `GET path` on a fresh connection: the status and the whole body.
    pub async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let mut sender = self.connect().await?;
        let request = Request::get(path)
            .header(header::HOST, &self.authority)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {}{path} failed: {e}", self.url))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {}{path}: reading the body failed: {e}", self.url))?
            .to_bytes();
        Ok((status, body))
    }

    /// The poll's option names (in the node's order) and its current total.
    pub async fn poll_results(&self, poll: &str) -> Result<PollTotals, LoadError> {
        let path = format!("/v1/polls/{poll}/results");
        let unreachable = |why: String| LoadError::Unreachable(self.url.clone(), why);
        let (status, body) = self.get(&path).await.map_err(unreachable)?;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body).into_owned();
            return Err(unreachable(format!("GET {path} answered {status}: {text}")));
        }
        let results: ResultsBody = serde_json::from_slice(&body)
            .map_err(|e| unreachable(format!("GET {path}: unexpected body: {e}")))?;
        Ok(PollTotals {
            options: results.options.into_iter().map(|o| o.name).collect(),
            total: results.total,
        })
    }
}

/// What the check reads from `GET /v1/polls/{poll}/results`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTotals {
    /// Option names in the poll's order.
    pub options: Vec<String>,
    /// Net votes.
    pub total: i64,
}

#[derive(Deserialize)]
struct ResultsBody {
    options: Vec<OptionBody>,
    total: i64,
}

#[derive(Deserialize)]
struct OptionBody {
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_must_be_plain_http_base_urls() {
        // Goal: only what is given, in the one form we speak. Method: good and bad URLs.
        let target = Target::resolve("http://127.0.0.1:8080/").await.unwrap();
        assert_eq!(target.url, "http://127.0.0.1:8080");
        assert_eq!(target.address, SocketAddr::from(([127, 0, 0, 1], 8080)));
        for bad in [
            "https://127.0.0.1:1",
            "127.0.0.1:1",
            "http://127.0.0.1:1/v1",
        ] {
            assert!(Target::resolve(bad).await.is_err(), "{bad}");
        }
    }
}
