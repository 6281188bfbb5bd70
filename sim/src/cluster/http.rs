//! Clients' HTTP/1.1 over turmoil TCP: one keep-alive connection per client task and host
//! (a region's node or edge), every call bounded by a timeout, every outcome classified the
//! way a client must see it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tally_client::api::ANSWERED_BY_HEADER;
use tally_node::http::POSTCARD_MEDIA_TYPE;

/// The port every simulated node serves HTTP on.
pub const HTTP_PORT: u16 = 8080;

/// What became of one HTTP call.
#[derive(Debug)]
pub enum Outcome {
    /// An answer arrived: its status and body.
    Answered(u16, Bytes),
    /// No connection could be made: the request never left, so it changed nothing.
    NotSent,
    /// The request may have been sent, but no answer came (timeout, reset): it may or may
    /// not have taken effect.
    Lost,
}

/// A client's connection to one host (a region's node or edge), reopened after any failure.
pub struct Conn {
    region: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Sent as `Authorization: Bearer …` with every request, if set (the checker's lookups).
    bearer: Option<String>,
    /// Asked for with `Accept`, if set (a JSON batch to an edge wants a postcard answer).
    accept: Option<&'static str>,
    /// The last answer's `tally-answered-by` header (an edge names the node that made a
    /// vote durable), if it had one.
    pub answered_by: Option<String>,
}

impl Conn {
    /// A connection to `region` (opened on first use).
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_owned(),
            sender: None,
            bearer: None,
            accept: None,
            answered_by: None,
        }
    }

    /// The same, asking for answers in `accept` whatever the body is.
    pub fn accepting(region: &str, accept: &'static str) -> Self {
        Self {
            accept: Some(accept),
            ..Self::new(region)
        }
    }

    /// The same, presenting the admin bearer `token` with every request.
    pub fn with_bearer(region: &str, token: &str) -> Self {
        Self {
            bearer: Some(format!("Bearer {token}")),
            ..Self::new(region)
        }
    }

    /// Sends one request and waits at most `timeout` for the whole answer. A postcard
    /// request asks for a postcard answer (`Accept`), as an edge aggregator would.
    pub async fn call(
        &mut self,
        method: hyper::Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        timeout: Duration,
    ) -> Outcome {
        let deadline = tokio::time::Instant::now() + timeout;
        let sender = match self.sender.as_mut() {
            Some(sender) if sender.is_ready() => sender,
            _ => {
                self.sender = None;
                let connect = tokio::time::timeout_at(deadline, self.connect()).await;
                match connect {
                    Ok(Some(sender)) => self.sender.insert(sender),
                    Ok(None) | Err(_) => return Outcome::NotSent,
                }
            }
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.region.as_str());
        if let Some(bearer) = &self.bearer {
            request = request.header(hyper::header::AUTHORIZATION, bearer.as_str());
        }
        if let Some(content_type) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
            if content_type == POSTCARD_MEDIA_TYPE && self.accept.is_none() {
                request = request.header(hyper::header::ACCEPT, POSTCARD_MEDIA_TYPE);
            }
        }
        if let Some(accept) = self.accept {
            request = request.header(hyper::header::ACCEPT, accept);
        }
        let Ok(request) = request.body(Full::new(body)) else {
            return Outcome::NotSent;
        };
        let exchange = async {
            let response = sender.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let answered_by = response
                .headers()
                .get(ANSWERED_BY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body, answered_by))
        };
        self.answered_by = None;
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Some((status, body, answered_by))) => {
                self.answered_by = answered_by;
                Outcome::Answered(status, body)
            }
            Ok(None) | Err(_) => {
                // The connection's state is unknown: never reuse it.
                self.sender = None;
                Outcome::Lost
            }
        }
    }

    async fn connect(&self) -> Option<SendRequest<Full<Bytes>>> {
        let stream = turmoil::net::TcpStream::connect((self.region.as_str(), HTTP_PORT))
            .await
            .ok()?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Some(sender)
    }
}
