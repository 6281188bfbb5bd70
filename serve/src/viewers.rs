//! Live-results viewers served below hyper: a connection whose first request is a plain `GET`
//! of the live stream ([`crate::head`]) is answered by a small task of its own that writes the
//! response head and then the route's shared, pre-encoded event bytes straight to the socket.
//!
//! Why: through hyper a viewer's connection kept hyper's 8 KiB read buffer for its whole life,
//! a write buffer every event was copied into, the dispatcher with the router's future and the
//! boxed body inline: 16–20 KB resident per viewer (BENCHMARKS.md, "Viewers"). Here a viewer
//! holds its socket, its feed (the route's stream of frames: a `watch` receiver and a little
//! state), the frame it is writing (a reference to shared bytes) and this task: no buffer of
//! its own.
//!
//! What it promises, the same as the route through the router: the same status and headers
//! (`text/event-stream`, `no-cache`, the CORS headers the router adds to a `GET`), then the
//! feed's frames. The body ends with the connection (`connection: close`; no chunked
//! framing: a response without a length is delimited by the close). A viewer that stops
//! reading is never queued for: the feed is asked for its next frame only once the last one is
//! written (a feed skips to its latest frame), and the write-stall guard
//! ([`crate::stall_guard`]) drops a viewer whose write pends too long. A viewer that closes its
//! end, or sends anything after its request, is dropped at once. The stream ends when the feed
//! does (the node or edge stops) or the server shuts down.
//!
//! A route feeds its viewers one of two ways ([`Feed`]): a stream of frames per viewer, pulled
//! by the viewer's task (the node's), or a place in a hub whose broadcaster writes to every
//! viewer's socket in one loop, the viewer's task running only when its socket would block
//! (the edge's, [`crate::broadcast`]). The promises above hold for both.
//!
//! Only a connection's first request is taken here: on a keep-alive connection hyper already
//! serves, a later stream request goes through the router at the old cost (hyper keeps the
//! connection). A request the route declines (unknown poll, the viewer cap, no results yet) goes
//! to the router too, which answers it as it always did.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tower::ServiceExt as _;
use tower_http::cors::CorsLayer;

use crate::head::StreamPath;
use crate::viewer_io::{Ended, poll_left, poll_write_all};

/// What one viewer served below hyper costs its process, in resident bytes: the measured
/// 1.65 KB (edge) and 1.93 KB (node) per viewer at 10,000 viewers, and 1.9 KB at 100,000
/// over six edges (BENCHMARKS.md, "Viewers"), with room for the allocator's rounding and a
/// larger socket registration on other kernels. A viewer's frames are shared, so it does
/// not grow with the results' size.
pub const VIEWER_BYTES: u64 = 3 * 1024;

/// What one viewer served through hyper costs (a stream asked for on a keep-alive connection
/// hyper already serves): the measured 16.4 KB (node) and 20.0 KB (edge) rounded up.
pub const VIEWER_BYTES_THROUGH_HYPER: u64 = 24 * 1024;

const _: () = assert!(VIEWER_BYTES < VIEWER_BYTES_THROUGH_HYPER);

/// How a viewer is served, and so what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerPath {
    /// Below hyper, by this module ([`VIEWER_BYTES`]).
    BelowHyper,
    /// Through hyper and the router ([`VIEWER_BYTES_THROUGH_HYPER`]).
    ThroughHyper,
}

impl ViewerPath {
    /// What a viewer served this way costs, in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            ViewerPath::BelowHyper => VIEWER_BYTES,
            ViewerPath::ThroughHyper => VIEWER_BYTES_THROUGH_HYPER,
        }
    }
}

/// The viewers' memory budget of one process: each viewer is charged what its path costs,
/// and one that would take the charges over the budget is refused.
#[derive(Debug)]
pub struct ViewerBudget {
    budget_bytes: u64,
    charged_bytes: AtomicU64,
}

impl ViewerBudget {
    /// A budget of `budget_bytes`, nothing charged.
    pub fn new(budget_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            budget_bytes,
            charged_bytes: AtomicU64::new(0),
        })
    }

    /// Charges a viewer served by `path`, or `None` if the budget cannot take it.
    pub fn admit(self: &Arc<Self>, path: ViewerPath) -> Option<ViewerCharge> {
        let bytes = path.bytes();
        // Charge first, then check: two viewers arriving together cannot both take the last
        // room.
        let before = self.charged_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.budget_bytes {
            self.charged_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        Some(ViewerCharge {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// The most viewers the budget holds when all are served below hyper.
    pub fn viewers_max(&self) -> usize {
        (self.budget_bytes / VIEWER_BYTES) as usize
    }

    /// Bytes charged now.
    pub fn charged_bytes(&self) -> u64 {
        self.charged_bytes.load(Ordering::Relaxed)
    }
}

/// One viewer's charge against the budget, given back when dropped.
#[derive(Debug)]
pub struct ViewerCharge {
    budget: Arc<ViewerBudget>,
    bytes: u64,
}

impl Drop for ViewerCharge {
    fn drop(&mut self) {
        self.budget
            .charged_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A viewer's frames: each item the bytes to write next (one or more whole SSE events).
pub type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

/// How a viewer is fed.
pub enum Feed {
    /// Its own stream of frames, pulled by its task.
    Frames(Frames),
    /// A place among a hub's viewers, written to by the hub's broadcaster
    /// ([`crate::broadcast`]).
    Hub {
        /// The hub.
        hub: crate::broadcast::Hub,
        /// Held for the viewer's life (its charge against the budget, its place in the counts).
        place: Box<dyn std::any::Any + Send>,
    },
}

/// The future of [`StreamRoute::open`].
pub type Opening = Pin<Box<dyn Future<Output = Option<Feed>> + Send>>;

/// The live stream's route, as served below hyper.
pub trait StreamRoute: Send + Sync + 'static {
    /// The feed of a new viewer of `poll`, its place taken; `None` if the route would not
    /// answer 200 (the router then answers the request, with its usual error).
    fn open(&self, poll: String) -> Opening;
}

/// The live stream's route and what its viewers are sent first.
#[derive(Clone)]
pub struct Streams {
    route: Arc<dyn StreamRoute>,
    path: StreamPath,
    head: Bytes,
}

/// The stream route's path on nodes and edges: `/v1/polls/{poll}/stream`.
pub const STREAM_PATH: StreamPath = StreamPath {
    prefix: "/v1/polls/",
    suffix: "/stream",
};

impl Streams {
    /// Serves `route` at [`STREAM_PATH`], its response head carrying the headers `cors` adds to
    /// a `GET` (as the router's answer does).
    pub fn new(route: Arc<dyn StreamRoute>, cors: &CorsLayer) -> Self {
        Self {
            route,
            path: STREAM_PATH,
            head: response_head(cors),
        }
    }

    pub(crate) fn path(&self) -> StreamPath {
        self.path
    }

    pub(crate) fn open(&self, poll: String) -> Opening {
        self.route.open(poll)
    }

    /// The response head, shared by every viewer.
    pub fn head(&self) -> &Bytes {
        &self.head
    }
}

/// `200 OK`, the stream's type and caching, the CORS headers `cors` adds to a browser's `GET`,
/// `connection: close`.
fn response_head(cors: &CorsLayer) -> Bytes {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n",
    );
    for (name, value) in &cors_headers(cors) {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("connection: close\r\n\r\n");
    Bytes::from(head)
}

/// The headers `cors` adds to a browser's `GET` (asked once, of a service answering an empty
/// 200: whatever the layer's settings, the stream's answer carries what the router's would).
fn cors_headers(cors: &CorsLayer) -> axum::http::HeaderMap {
    let plain = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let request = Request::get(STREAM_PATH.prefix)
        .header(axum::http::header::ORIGIN, "https://viewer.example")
        .body(Body::empty());
    let Ok(request) = request else {
        return axum::http::HeaderMap::new();
    };
    let answer = tower::Layer::layer(cors, plain).oneshot(request);
    // The layer around a service that answers at once answers at once (tower-http's `Cors`
    // adds headers to the inner answer, with no I/O).
    match futures_util::FutureExt::now_or_never(answer) {
        Some(Ok(response)) => response.headers().clone(),
        _ => axum::http::HeaderMap::new(),
    }
}

/// Serves one viewer: `head`, then `frames`, until one of [`Ended`].
///
/// One future polled on each wake-up, with the shutdown watch registered once for the
/// viewer's life (a `select!` in a loop would build and drop its futures, and register with
/// the shutdown watch again, on every frame). Each wake-up checks, in this order: shutdown,
/// whether the viewer left (a read that is not ready costs no system call), then writes what
/// is pending and, once all of it is written, asks the feed for its next frame. So a frame is
/// pulled only when the last one is out: a viewer whose socket would block holds one frame
/// (shared bytes) and its stall guard's timer, and nothing more.
pub(crate) async fn serve<I>(
    mut io: I,
    head: Bytes,
    mut frames: Frames,
    mut shutdown: watch::Receiver<bool>,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let stop = shutdown.wait_for(|stop| *stop);
    tokio::pin!(stop);
    let mut pending = head;
    let ended = std::future::poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Shutdown);
        }
        if poll_left(&mut io, cx).is_ready() {
            return Poll::Ready(Ended::ClientLeft);
        }
        loop {
            match poll_write_all(&mut io, cx, &mut pending) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Ended::WriteFailed(error)),
                Poll::Pending => return Poll::Pending,
            }
            match frames.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => pending = frame,
                Poll::Ready(None) => return Poll::Ready(Ended::FeedDone),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    // Best effort: the stall guard bounds it.
    let _ = io.shutdown().await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_charges_each_viewer_its_paths_cost_and_refuses_past_it() {
        // Goal: the cap is bytes, not a count. Method: a budget of one hyper viewer plus two
        // viewers below hyper, filled, then charges given back.
        let budget = ViewerBudget::new(VIEWER_BYTES_THROUGH_HYPER + 2 * VIEWER_BYTES);
        let hyper = budget.admit(ViewerPath::ThroughHyper).unwrap();
        let below = [
            budget.admit(ViewerPath::BelowHyper).unwrap(),
            budget.admit(ViewerPath::BelowHyper).unwrap(),
        ];
        assert!(budget.admit(ViewerPath::BelowHyper).is_none());
        drop(hyper);
        assert!(budget.admit(ViewerPath::ThroughHyper).is_some());
        drop(below);
        assert_eq!(budget.charged_bytes(), 0);
        assert_eq!(
            budget.viewers_max(),
            (VIEWER_BYTES_THROUGH_HYPER / VIEWER_BYTES + 2) as usize
        );
    }
}
