//! One HTTP/1.1 request to a node over a kept-alive connection, and what came of it, told the
//! way the edge must see it: a request that never left changed nothing; one whose answer was
//! lost may have been carried out.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tally_client::Endpoint;
use tokio::time::Instant;

use super::connector::Connector;

/// Largest answer body read from a node, in bytes (a receipted answer to 10,000 votes is
/// ~100 KB in postcard; the poll list of 1,024 polls ~200 KB).
pub const ANSWER_BYTES_MAX: usize = 1024 * 1024;

/// A kept-alive connection is not reused after idling this long, in ms: nodes close idle
/// connections after their header-read timeout (10 s by default), and a request sent on a
/// connection the node is closing would be lost for nothing.
pub const IDLE_REUSE_MS_MAX: u64 = 4_000;

/// An open connection to one node, with when it was last used.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    idle_since: Instant,
}

/// What came of one request.
#[derive(Debug)]
pub enum Exchanged {
    /// An answer arrived whole.
    Answered {
        /// Its status.
        status: u16,
        /// Its body.
        body: Bytes,
    },
    /// The request never left (no connection could be opened): it changed nothing.
    NotSent(String),
    /// The request may have reached the node, but no whole answer came in time.
    Lost(String),
}

/// Opens a connection to `endpoint` within `timeout`.
async fn open(
    connector: &dyn Connector,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::time::timeout(timeout, connector.connect(endpoint))
        .await
        .map_err(|_| format!("connecting to {} timed out", endpoint.url))?
        .map_err(|e| format!("cannot connect to {}: {e}", endpoint.url))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {} failed: {e}", endpoint.url))?;
    tokio::spawn(async move {
        // Ends with an error when the node resets; the sender sees that on its next use.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `request` to `endpoint` on `reuse` if it is still good, else on a new connection,
/// and reads the whole answer within `timeout`. Returns what came of it and the connection,
/// if it may be used again.
pub async fn exchange(
    connector: &dyn Connector,
    endpoint: &Endpoint,
    reuse: Option<Connection>,
    request: hyper::Request<Full<Bytes>>,
    timeout: Duration,
) -> (Exchanged, Option<Connection>) {
    let deadline = Instant::now() + timeout;
    let reusable = reuse.filter(|c| {
        c.sender.is_ready() && c.idle_since.elapsed() < Duration::from_millis(IDLE_REUSE_MS_MAX)
    });
    let mut sender = match reusable {
        Some(connection) => connection.sender,
        None => match open(connector, endpoint, timeout).await {
            Ok(sender) => sender,
            Err(why) => return (Exchanged::NotSent(why), None),
        },
    };
    let answer = async {
        sender
            .ready()
            .await
            .map_err(|e| (false, format!("{}: {e}", endpoint.url)))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| (true, format!("{}: {e}", endpoint.url)))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), ANSWER_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| (true, format!("{}: reading the answer: {e}", endpoint.url)))?
            .to_bytes();
        Ok::<_, (bool, String)>((status, body))
    };
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok((status, body))) => {
            let connection = Connection {
                sender,
                idle_since: Instant::now(),
            };
            (Exchanged::Answered { status, body }, Some(connection))
        }
        Ok(Err((false, why))) => (Exchanged::NotSent(why), None),
        Ok(Err((true, why))) => (Exchanged::Lost(why), None),
        Err(_) => (
            Exchanged::Lost(format!("{}: no answer within {timeout:?}", endpoint.url)),
            None,
        ),
    }
}

/// A request to `endpoint` with its `Host` header and, when given, a bearer token.
pub fn request(
    endpoint: &Endpoint,
    method: hyper::Method,
    path_and_query: &str,
    headers: &[(hyper::header::HeaderName, &str)],
    body: Bytes,
) -> Option<hyper::Request<Full<Bytes>>> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, &endpoint.authority);
    for (name, value) in headers {
        builder = builder.header(name, *value);
    }
    builder.body(Full::new(body)).ok()
}
