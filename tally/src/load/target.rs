//! The nodes `tally load` drives: `http://HOST:PORT` URLs resolved once at start, keep-alive
//! HTTP/1.1 connections to them, and the one read the check needs (`GET …/results`).
//!
//! Only the addresses given are ever contacted; nothing is discovered or followed.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde::Deserialize;

use super::LoadError;
use tally_client::Endpoint;

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
        let bad = |why: String| LoadError::BadTarget(url.to_owned(), why);
        let endpoint = Endpoint::parse(url).map_err(bad)?;
        let address = endpoint.resolve().await.map_err(bad)?;
        Ok(Self {
            url: endpoint.url,
            authority: endpoint.authority,
            address,
        })
    }

    /// Opens a keep-alive HTTP/1.1 connection; its driver runs as a task that ends when the
    /// returned sender is dropped or the peer closes.
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        tally_client::http::connect(self.address, &self.url).await
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
