//! The client's HTTP/1.1 plumbing over hyper: endpoints given as `http://HOST:PORT`, one
//! connection per attempt with a connect timeout, and answers that say how far an attempt
//! got: a request that failed before it was written cannot have been counted; one that failed
//! after may have been. `tally load` connects through [`connect`] too.

use std::net::SocketAddr;
use std::time::Duration;

use ::http::{HeaderMap, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for a TCP connection, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Largest answer body read into memory, in bytes (results of a 16-option poll are ~2 KB).
pub const ANSWER_BYTES_MAX: usize = 1024 * 1024;

/// A node's base URL, `http://HOST:PORT` (resolved at every connection attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As given, without a trailing slash.
    pub url: String,
    /// `HOST:PORT`, for the `Host` header and for resolving.
    pub authority: String,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT]` (port 80 by default). HTTPS is not spoken: put the node's
    /// TLS-terminating proxy in front and give its plain-HTTP side, or use the browser client.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "{url}: give the node's base URL, http://HOST:PORT, without a path"
            ));
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.contains(']'));
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            url: format!("http://{}", rest.strip_suffix('/').unwrap_or(rest)),
            authority,
        })
    }

    /// The first address the authority resolves to.
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        tokio::net::lookup_host(&self.authority)
            .await
            .map_err(|e| format!("{}: {e}", self.url))?
            .next()
            .ok_or_else(|| format!("{}: resolves to no address", self.url))
    }
}

/// Opens a keep-alive HTTP/1.1 connection to `address` (named `url` in errors).
pub async fn connect(address: SocketAddr, url: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let connect = TcpStream::connect(address);
    let stream = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect)
        .await
        .map_err(|_| format!("connecting to {url} timed out"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {url} failed: {e}"))?;
    tokio::spawn(async move {
        // Ends with an error when the peer resets; the sender sees that on its next use.
        let _ = connection.await;
    });
    Ok(sender)
}

/// How far a failed attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// Nothing reached the node: resolving or connecting failed.
    NotSent(String),
    /// The request may have reached the node, but no complete answer came back (timeout,
    /// connection dropped).
    NoAnswer(String),
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body (at most [`ANSWER_BYTES_MAX`]).
    pub body: Bytes,
}

/// Sends one request on a fresh connection and reads the whole answer within `timeout`.
pub async fn exchange(
    endpoint: &Endpoint,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Answer, AttemptError> {
    let response = send(endpoint, request, timeout).await?;
    let (parts, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, ANSWER_BYTES_MAX);
    let body = tokio::time::timeout(timeout, limited.collect())
        .await
        .map_err(|_| AttemptError::NoAnswer(format!("{}: answer timed out", endpoint.url)))?
        .map_err(|e| AttemptError::NoAnswer(format!("{}: reading the answer: {e}", endpoint.url)))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Sends one request on a fresh connection and returns the answer's head within `timeout`,
/// its body still streaming (for SSE).
pub async fn send(
    endpoint: &Endpoint,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<hyper::Response<Incoming>, AttemptError> {
    let address = endpoint.resolve().await.map_err(AttemptError::NotSent)?;
    let mut sender = connect(address, &endpoint.url)
        .await
        .map_err(AttemptError::NotSent)?;
    sender
        .ready()
        .await
        .map_err(|e| AttemptError::NotSent(format!("{}: {e}", endpoint.url)))?;
    tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| AttemptError::NoAnswer(format!("{}: no answer in time", endpoint.url)))?
        .map_err(|e| AttemptError::NoAnswer(format!("{}: {e}", endpoint.url)))
}

/// A request with the `Host` header `endpoint` needs.
pub fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(header::HeaderName, String)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, &endpoint.authority);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_base_urls() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(endpoint.url, "http://127.0.0.1:8080");
        assert_eq!(endpoint.authority, "127.0.0.1:8080");
        assert_eq!(
            Endpoint::parse("http://tally").unwrap().authority,
            "tally:80"
        );
        assert_eq!(
            Endpoint::parse("http://[::1]").unwrap().authority,
            "[::1]:80"
        );
        for bad in [
            "https://tally:443",
            "tally:8080",
            "http://",
            "http://tally/v1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
