//! Serves HTTP/1.1 connections from any [`Listener`] with hyper, under a header-read deadline.
//!
//! What it promises: every connection must deliver a complete request head within the
//! header-read timeout of starting to wait for one. hyper starts that timer when a connection
//! opens and again each time a keep-alive connection finishes a response, so one limit closes a
//! client that connects and sends nothing, one whose headers trickle in (slowloris), and a
//! keep-alive connection left idle between requests. While a request is being answered the
//! timer does not run, so long-lived responses (SSE streams) are never cut by it; a client that
//! stops reading one is the stall guard's business ([`crate::stall_guard`]), and a slow body is
//! the body deadline's ([`crate::body`], 408). Handlers see the client's address as
//! `ConnectInfo<ClientAddr>`. On shutdown it stops accepting, lets each connection finish the
//! request it is serving and close, and resolves once all have closed.
//!
//! Why hyper's own connection builder and not `axum::serve` plus a read timer in the stall
//! guard: `axum::serve` gives hyper no timer, so hyper's `header_read_timeout` never fires, and
//! it cannot be configured. A read timer below HTTP cannot tell a slowloris client from an SSE
//! subscriber (both send nothing while the server waits to read), nor one request from the
//! next. hyper knows where each request head begins and ends; given a timer it enforces the
//! deadline itself. The loop below is what `axum::serve` does (accept, spawn, graceful
//! shutdown), with `http1::Builder` set up here: HTTP/1.1 only, as the node has always served
//! (and no protocol sniffing, which would wait for bytes before hyper's timer starts).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;

use bytes::BytesMut;

use crate::broadcast;
use crate::head::{self, Head};
use crate::rewind::Rewind;
use crate::viewers::{self, Feed, Streams};

/// Default limit on how long a connection may take to send a complete request head, counted
/// from when the node starts waiting for one (connection opened, or previous response sent),
/// in milliseconds.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// The client's address as handlers see it (`ConnectInfo<ClientAddr>`): the socket address
/// when the listener's address type is one (TCP), `None` otherwise (a simulated network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<std::net::SocketAddr>);

impl ClientAddr {
    /// The client address of a connection accepted from `address`.
    pub fn of<A: std::any::Any>(address: &A) -> Self {
        let address: &dyn std::any::Any = address;
        Self(address.downcast_ref::<std::net::SocketAddr>().copied())
    }
}

/// Serves `router` on every connection `listener` accepts until `shutdown` resolves; then
/// accepts no more, lets open connections finish their current request (hyper's graceful
/// shutdown) and resolves once every connection has closed. Bound the wait from outside.
pub async fn serve<L>(
    listener: L,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    L::Addr: std::fmt::Debug + 'static,
{
    serve_with_streams(listener, router, None, header_read_timeout, shutdown).await;
}

/// [`serve`], with the live stream's first requests served below hyper by `streams`
/// ([`crate::viewers`]): each connection's first request head is read here (within the
/// header-read deadline, at most [`crate::head::HEAD_BYTES_MAX`]), a plain `GET` of the stream
/// is answered by its own small task, and every other request goes to hyper with the bytes
/// read replayed ([`Rewind`]). A head too large is answered 431, one that is not HTTP 400
/// (both with the API's JSON error), and the connection closed.
pub async fn serve_with_streams<L>(
    mut listener: L,
    router: Router,
    streams: Option<Streams>,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    L::Addr: std::fmt::Debug + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    // Connections read below hyper hold a receiver: it tells them to stop, and the sender
    // learns when the last has closed.
    let (stopping, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (io, address) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let client = ClientAddr::of(&address);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(client));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let Some(streams) = &streams else {
            let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
            tokio::spawn(async move {
                // Timeouts, resets and malformed requests end here; hyper has answered what it
                // could (400, 431), and nothing else depends on one connection's end.
                if let Err(error) = connection.await {
                    tracing::debug!(?address, %error, "connection closed with an error");
                }
            });
            continue;
        };
        let first = FirstRequest {
            streams: streams.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            stop: stop_rx.clone(),
            header_read_timeout,
        };
        tokio::spawn(async move {
            first.serve(io, service).await;
            tracing::trace!(?address, "connection closed");
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stopping.send(true);
    tokio::join!(graceful.shutdown(), stopping.closed());
}

/// What a connection's task needs to read its first request and serve it either way.
struct FirstRequest {
    streams: Streams,
    builder: hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
}

impl FirstRequest {
    async fn serve<I, S>(self, mut io: I, service: S)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                hyper::Request<Incoming>,
                Response = axum::response::Response,
                Error = std::convert::Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let FirstRequest {
            streams,
            builder,
            watcher,
            mut stop,
            header_read_timeout,
        } = self;
        let mut buffer = BytesMut::with_capacity(head::HEAD_BYTES_FIRST);
        let read = tokio::time::timeout(
            header_read_timeout,
            head::read(&mut io, &mut buffer, streams.path()),
        );
        let head = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            read = read => match read {
                // As hyper does: a head not complete within the deadline closes the
                // connection without an answer.
                Err(_) => return,
                Ok(head) => head,
            },
        };
        match head {
            Head::Closed => return,
            Head::TooLarge => {
                let message = format!(
                    "the request head is over {} bytes or {} header lines",
                    head::HEAD_BYTES_MAX,
                    head::HEADERS_MAX
                );
                return refuse(io, "431 Request Header Fields Too Large", &message).await;
            }
            Head::Malformed(message) => return refuse(io, "400 Bad Request", &message).await,
            Head::Stream { poll } => {
                let opening = streams.open(poll);
                let feed = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => return,
                    feed = opening => feed,
                };
                if let Some(feed) = feed {
                    // A task of its own, holding only what the viewer needs (this one's
                    // future is as large as the head's reading and hyper's start).
                    let head = streams.head().clone();
                    match feed {
                        Feed::Frames(frames) => tokio::spawn(async move {
                            let ended = viewers::serve(io, head, frames, stop).await;
                            tracing::trace!(?ended, "a viewer's stream ended");
                        }),
                        Feed::Hub { hub, place } => tokio::spawn(async move {
                            let ended = broadcast::serve(io, head, hub, place, stop).await;
                            tracing::trace!(?ended, "a viewer's stream ended");
                        }),
                    };
                    return;
                }
            }
            Head::Other => {}
        }
        // Boxed: only connections hyper serves carry hyper's connection state.
        let connection = Box::pin(watcher.watch(
            builder.serve_connection(TokioIo::new(Rewind::new(buffer.freeze(), io)), service),
        ));
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection closed with an error");
        }
    }
}

/// Answers a head that cannot be served with `status` and the API's JSON error, and closes.
async fn refuse<I>(mut io: I, status: &str, message: &str)
where
    I: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    let body = serde_json::json!({"error": "malformed", "message": message}).to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    tracing::debug!(status, message, "refused a request head");
    // Best effort, bounded by the stall guard: the client may be gone.
    let _ = io.write_all(answer.as_bytes()).await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    //! Goal: the header-read deadline closes silent, trickling and idle keep-alive connections
    //! and leaves a long response alone, over a listener that is not TCP (as the simulation's).
    //! Method: an in-memory listener of duplex pipes; tokio's paused clock, which jumps to the
    //! next timer whenever every task waits, so no test waits in real time.

    use super::*;
    use std::convert::Infallible;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Hands out the server ends of pipes the test makes; its address type is not a socket's.
    struct PipeListener(mpsc::Receiver<DuplexStream>);

    impl Listener for PipeListener {
        type Io = DuplexStream;
        type Addr = &'static str;

        async fn accept(&mut self) -> (DuplexStream, &'static str) {
            match self.0.recv().await {
                Some(pipe) => (pipe, "pipe"),
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<&'static str> {
            Ok("pipe")
        }
    }

    /// A server on pipes: `/who` answers the client address handlers see, `/long` a body that
    /// takes ten header timeouts to arrive. Returns the means to connect and to stop it.
    fn start() -> (mpsc::Sender<DuplexStream>, tokio::task::JoinHandle<()>) {
        let router =
            Router::new()
                .route(
                    "/who",
                    get(|ConnectInfo(client): ConnectInfo<ClientAddr>| async move {
                        format!("{client:?}")
                    }),
                )
                .route(
                    "/long",
                    get(|| async {
                        let ticks = tokio_stream::StreamExt::take(
                            tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                                TIMEOUT,
                            )),
                            10,
                        );
                        let chunks = tokio_stream::StreamExt::map(ticks, |_| {
                            Ok::<_, Infallible>(bytes::Bytes::from_static(b"tick\n"))
                        });
                        axum::body::Body::from_stream(chunks)
                    }),
                );
        let (connect, pipes) = mpsc::channel(8);
        let server = tokio::spawn(serve(
            PipeListener(pipes),
            router,
            TIMEOUT,
            std::future::pending(),
        ));
        (connect, server)
    }

    async fn connect(server: &mpsc::Sender<DuplexStream>) -> DuplexStream {
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        server.send(server_end).await.unwrap();
        client
    }

    /// A new connection on which `request` has been sent.
    async fn send(server: &mpsc::Sender<DuplexStream>, request: &[u8]) -> DuplexStream {
        let mut client = connect(server).await;
        client.write_all(request).await.unwrap();
        client
    }

    /// Reads until the server closes the pipe (within twenty header timeouts, or the test
    /// fails); returns what it sent.
    async fn read_to_close(client: &mut DuplexStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(TIMEOUT * 20, client.read_to_end(&mut answer))
            .await
            .expect("the server never closed the connection")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// A connection closed `waited` after the wait for a request head began was closed by the
    /// header-read deadline: not before it, and not much later (the clock is simulated).
    fn assert_closed_at_the_timeout(waited: Duration) {
        assert!(waited >= TIMEOUT, "closed early, after {waited:?}");
        assert!(waited < TIMEOUT * 2, "closed only after {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
        let (server, _task) = start();
        let mut silent = connect(&server).await;
        let opened = Instant::now();
        assert_eq!(read_to_close(&mut silent).await, "");
        assert_closed_at_the_timeout(opened.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn headers_that_trickle_in_are_cut_off_at_the_header_read_timeout() {
        let (server, _task) = start();
        let mut slow = connect(&server).await;
        let opened = Instant::now();
        // A byte every tenth of the timeout, for ever: the timer counts from the first wait,
        // not from the last byte.
        let closed = loop {
            assert!(opened.elapsed() < TIMEOUT * 20, "never closed");
            if slow.write_all(b"x").await.is_err() {
                break opened.elapsed();
            }
            let mut byte = [0u8; 1];
            match tokio::time::timeout(TIMEOUT / 10, slow.read(&mut byte)).await {
                Ok(Ok(0) | Err(_)) => break opened.elapsed(),
                Ok(Ok(_)) => panic!("the server answered half a request head"),
                Err(_) => {}
            }
        };
        assert_closed_at_the_timeout(closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_and_handlers_see_no_socket_address() {
        let (server, _task) = start();
        let mut client = send(&server, b"GET /who HTTP/1.1\r\nhost: t\r\n\r\n").await;
        // The answer takes no simulated time: the idle wait starts now.
        let asked = Instant::now();
        let answer = read_to_close(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ClientAddr(None)"), "{answer}");
        assert_closed_at_the_timeout(asked.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_longer_than_the_header_read_timeout_is_not_cut() {
        let (server, _task) = start();
        let request = b"GET /long HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
        let mut client = send(&server, request).await;
        let answer = read_to_close(&mut client).await;
        assert_eq!(answer.matches("tick").count(), 10, "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_shutdown_an_idle_connection_is_closed_and_serve_returns() {
        let (connect_tx, pipes) = mpsc::channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            PipeListener(pipes),
            Router::new().route("/", get(|| async { "ok" })),
            TIMEOUT,
            async move {
                let _ = stopped.await;
            },
        ));
        let mut idle = connect(&connect_tx).await;
        // Paused time: sleeping lets the server accept the pipe first.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let _ = stop.send(());
        let stopping = Instant::now();
        server.await.unwrap();
        assert_eq!(read_to_close(&mut idle).await, "");
        assert!(
            stopping.elapsed() < TIMEOUT,
            "waited for the header timeout"
        );
    }
}
