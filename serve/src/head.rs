//! The first request head of a connection, read by the accept loop before hyper sees it
//! ([`crate::connections`]), to tell a live stream's request (served below hyper,
//! [`crate::viewers`]) from every other (handed to hyper with the bytes read replayed,
//! [`crate::rewind`]).
//!
//! Bounded: the head is read into a buffer of [`HEAD_BYTES_FIRST`] that grows to at most
//! [`HEAD_BYTES_MAX`], with at most [`HEADERS_MAX`] header lines; more is refused (431), as is
//! a head that is not HTTP/1.x (400). The caller bounds the time (the header-read deadline).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// First size of a connection's head buffer, in bytes (a browser's stream request with its
/// usual headers is about 500 bytes).
pub const HEAD_BYTES_FIRST: usize = 1024;

/// Largest first request head read, in bytes; a longer one gets 431.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Most header lines in a first request head; more gets 431.
pub const HEADERS_MAX: usize = 64;

const _: () = assert!(HEAD_BYTES_FIRST <= HEAD_BYTES_MAX);

/// What the first request head of a connection is.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A `GET` of `{prefix}{poll}{suffix}` (the live stream), HTTP/1.1, without a body.
    Stream {
        /// The poll it names (no `/` and no `%`: names needing decoding go through the router).
        poll: String,
    },
    /// Any other request, complete: hyper answers it.
    Other,
    /// The head is longer than [`HEAD_BYTES_MAX`] or has more than [`HEADERS_MAX`] lines.
    TooLarge,
    /// The bytes are not an HTTP/1.x request head.
    Malformed(String),
    /// The client closed the connection (or it failed) before a head was complete.
    Closed,
}

/// The live stream's path: a prefix, the poll's name, a suffix.
#[derive(Debug, Clone, Copy)]
pub struct StreamPath {
    /// What comes before the poll's name (`/v1/polls/`).
    pub prefix: &'static str,
    /// What comes after it (`/stream`).
    pub suffix: &'static str,
}

/// Reads `io` into `buffer` until it holds a complete request head, and says what it is.
/// `buffer` keeps every byte read (the head and whatever followed), for hyper to read again.
pub async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    buffer: &mut BytesMut,
    stream: StreamPath,
) -> Head {
    loop {
        let room = HEAD_BYTES_MAX - buffer.len();
        if room == 0 {
            return Head::TooLarge;
        }
        if buffer.capacity() == buffer.len() {
            buffer.reserve(buffer.len().clamp(HEAD_BYTES_FIRST, room));
        }
        match io.read_buf(&mut buffer.limit(room)).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) => {}
        }
        if let Some(head) = classify(buffer, stream) {
            return head;
        }
    }
}

use bytes::BufMut as _;

/// What `bytes` hold, if they hold a complete head (or cannot become one).
fn classify(bytes: &[u8], stream: StreamPath) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Head::TooLarge),
        Err(error) => Some(Head::Malformed(format!(
            "not an HTTP/1.x request head: {error}"
        ))),
        Ok(httparse::Status::Complete(_)) => {
            Some(stream_poll(&request, stream).map_or(Head::Other, |poll| Head::Stream { poll }))
        }
    }
}

/// The poll a request for the live stream names, if it is one this path serves: `GET`,
/// HTTP/1.1 (an HTTP/1.0 client goes through hyper), no body, a name needing no decoding
/// (the router decodes a `%`). A query is ignored, as the router's route ignores it.
fn stream_poll(request: &httparse::Request<'_, '_>, stream: StreamPath) -> Option<String> {
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let has_body = request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
    });
    if has_body {
        return None;
    }
    let path = request.path?;
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let poll = path
        .strip_prefix(stream.prefix)?
        .strip_suffix(stream.suffix)?;
    (!poll.is_empty() && !poll.contains(['/', '%'])).then(|| poll.to_owned())
}

#[cfg(test)]
mod tests {
    //! Goal: only a plain `GET` of the stream route is taken below hyper, heads arriving in
    //! pieces are waited for, and oversized or garbage heads are refused at the limits.
    //! Method: heads fed to [`read`] over a duplex pipe, whole and a byte at a time.

    use super::*;
    use tokio::io::AsyncWriteExt;

    const STREAM: StreamPath = StreamPath {
        prefix: "/v1/polls/",
        suffix: "/stream",
    };

    async fn head_of(bytes: &[u8], one_at_a_time: bool) -> Head {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let bytes = bytes.to_vec();
        let writer = tokio::spawn(async move {
            if one_at_a_time {
                for byte in bytes {
                    client.write_all(&[byte]).await.unwrap();
                    tokio::task::yield_now().await;
                }
            } else {
                client.write_all(&bytes).await.unwrap();
            }
            // Closed once all is sent: a head still incomplete then is `Closed`.
        });
        let mut buffer = BytesMut::new();
        let head = read(&mut server, &mut buffer, STREAM).await;
        writer.await.unwrap();
        head
    }

    #[tokio::test]
    async fn a_plain_get_of_the_stream_route_is_a_stream_whole_or_in_pieces() {
        let request = b"GET /v1/polls/superbowl/stream?x=1 HTTP/1.1\r\nhost: t\r\n\r\n";
        for pieces in [false, true] {
            assert_eq!(
                head_of(request, pieces).await,
                Head::Stream {
                    poll: "superbowl".into()
                }
            );
        }
    }

    #[tokio::test]
    async fn other_requests_and_near_misses_go_to_hyper() {
        for request in [
            &b"GET /v1/polls/superbowl/results HTTP/1.1\r\n\r\n"[..],
            b"POST /v1/polls/superbowl/stream HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"GET /v1/polls/superbowl/stream HTTP/1.0\r\n\r\n",
            b"GET /v1/polls/super%62owl/stream HTTP/1.1\r\n\r\n",
            b"GET /v1/polls/a/b/stream HTTP/1.1\r\n\r\n",
            b"GET /v1/polls//stream HTTP/1.1\r\n\r\n",
            b"GET /v1/polls/superbowl/stream HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
        ] {
            let text = String::from_utf8_lossy(request).into_owned();
            assert_eq!(head_of(request, false).await, Head::Other, "{text}");
        }
    }

    #[tokio::test]
    async fn garbage_oversized_heads_too_many_headers_and_early_close_are_told_apart() {
        assert!(matches!(
            head_of(b"\x16\x03\x01 hello\r\n\r\n", false).await,
            Head::Malformed(_)
        ));
        let mut long = b"GET / HTTP/1.1\r\nx: ".to_vec();
        long.resize(HEAD_BYTES_MAX + 100, b'a');
        assert_eq!(head_of(&long, false).await, Head::TooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..=HEADERS_MAX {
            many.extend_from_slice(b"x: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(head_of(&many, false).await, Head::TooLarge);
        assert_eq!(head_of(b"GET / HTTP/1.1\r\n", false).await, Head::Closed);
    }
}
