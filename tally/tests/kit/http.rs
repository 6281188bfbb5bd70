//! A minimal blocking HTTP/1.1 keep-alive client for tests of the real binary: JSON requests
//! with Content-Length, bounded by socket timeouts, nothing else (as in `crash.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a request may wait for its answer before the client reports an error.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One keep-alive connection.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects within two seconds.
    pub(crate) fn connect(address: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one request and reads its answer: (status, body).
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let (status, _head, body) = self.request_with_headers(method, path, "", body)?;
        Ok((status, body))
    }

    /// Sends one request with extra header lines (`headers`: each `name: value\r\n`) and reads
    /// its answer: (status, the status line and headers in lower case, body).
    pub(crate) fn request_with_headers(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> std::io::Result<(u16, String, String)> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes())?;
        let mut head = String::new();
        if self.reader.read_line(&mut head)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        head.make_ascii_lowercase();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| std::io::ErrorKind::InvalidData)?;
            }
            head += &lower;
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One request on a fresh connection.
pub(crate) fn request_once(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    Client::connect(address)?.request(method, path, body)
}

/// `GET path` answered 200 with a JSON body, or an error saying what came instead.
pub(crate) fn get_json(address: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    match request_once(address, "GET", path, "") {
        Ok((200, body)) => serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}")),
        Ok((status, body)) => Err(format!("{path} answered {status}: {body}")),
        Err(error) => Err(format!("{path} on {address}: {error}")),
    }
}

/// The value of the Prometheus sample `name{labels}` in `text`, 0 when absent (a counter
/// that was never incremented is not rendered). Not every test binary reads metrics.
#[allow(dead_code)]
pub(crate) fn metric(text: &str, name: &str, labels: &str) -> f64 {
    let sample = format!("{name}{labels} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&sample))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}
