//! Viewers served below hyper ([`tally_serve::viewers`]) by the accept loop that node and edge
//! share: what a viewer is sent, what one that stops reading costs, what a declined stream
//! request and every other request get, and shutdown.
//!
//! Method: an in-memory listener of duplex pipes behind the write-stall guard; a test route
//! whose feed is a `watch` slot of frames and which counts the frames it was asked for and
//! the places held; tokio's paused clock, so no test waits in real time.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use tally_serve::broadcast::{Current, Hub, Publisher};
use tally_serve::connections::serve_with_streams;
use tally_serve::stall_guard::StallGuardListener;
use tally_serve::viewers::{Feed, Frames, Opening, StreamRoute, Streams};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};

const TIMEOUT: Duration = Duration::from_secs(10);
const STALL: Duration = Duration::from_secs(10);
const REQUEST: &[u8] = b"GET /v1/polls/live/stream HTTP/1.1\r\nhost: t\r\n\r\n";
const HUB_REQUEST: &[u8] = b"GET /v1/polls/hub/stream HTTP/1.1\r\nhost: t\r\n\r\n";

/// Hands out the server ends of pipes the test makes.
struct Pipes(mpsc::Receiver<DuplexStream>);

impl axum::serve::Listener for Pipes {
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

/// The route of poll `live`: each viewer's feed sends the slot's frame now and at each change;
/// and of poll `hub`: each viewer joins the hub.
struct Route {
    slot: watch::Receiver<Bytes>,
    hub: Hub,
    /// Frames handed out, over every viewer.
    pulled: Arc<AtomicUsize>,
    /// Viewers whose feed is alive.
    places: Arc<AtomicUsize>,
}

/// Gives a viewer's place back when its feed is dropped.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StreamRoute for Route {
    fn open(&self, poll: String) -> Opening {
        if poll == "hub" {
            self.places.fetch_add(1, Ordering::SeqCst);
            let feed = Feed::Hub {
                hub: self.hub.clone(),
                place: Box::new(Place(self.places.clone())),
            };
            return Box::pin(std::future::ready(Some(feed)));
        }
        if poll != "live" {
            return Box::pin(std::future::ready(None));
        }
        self.places.fetch_add(1, Ordering::SeqCst);
        let state = (
            self.slot.clone(),
            Place(self.places.clone()),
            self.pulled.clone(),
            true,
        );
        let frames: Frames = Box::pin(futures_util::stream::unfold(
            state,
            |(mut slot, place, pulled, first)| async move {
                if !first {
                    slot.changed().await.ok()?;
                }
                let frame = slot.borrow_and_update().clone();
                pulled.fetch_add(1, Ordering::SeqCst);
                Some((Ok::<_, Infallible>(frame), (slot, place, pulled, false)))
            },
        ));
        Box::pin(std::future::ready(Some(Feed::Frames(frames))))
    }
}

struct Server {
    connect: mpsc::Sender<DuplexStream>,
    publish: watch::Sender<Bytes>,
    /// The hub's publisher (`None`: dropped, the hub's feed is done).
    hub: Option<Publisher>,
    pulled: Arc<AtomicUsize>,
    places: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// A server whose router answers `/v1/polls/{poll}/stream` (declined ones) with 404 "router"
/// and `/hello` with "hello", and whose stream route serves poll `live`.
fn start() -> Server {
    let (publish, slot) = watch::channel(Bytes::from_static(b"event: results\ndata: 0\n\n"));
    let pulled = Arc::new(AtomicUsize::new(0));
    let places = Arc::new(AtomicUsize::new(0));
    let (publisher, hub) = Hub::new();
    let route = Route {
        slot,
        hub,
        pulled: pulled.clone(),
        places: places.clone(),
    };
    let cors = tower_http::cors::CorsLayer::new().allow_origin(tower_http::cors::Any);
    let streams = Streams::new(Arc::new(route), &cors);
    let router = Router::new()
        .route(
            "/v1/polls/{poll}/stream",
            get(|| async { (axum::http::StatusCode::NOT_FOUND, "router") }),
        )
        .route("/hello", get(|| async { "hello" }));
    let (connect, pipes) = mpsc::channel(64);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = StallGuardListener::new(Pipes(pipes), STALL);
    let task = tokio::spawn(serve_with_streams(
        listener,
        router,
        Some(streams),
        TIMEOUT,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        connect,
        publish,
        hub: Some(publisher),
        pulled,
        places,
        stop: Some(stop),
        task,
    }
}

impl Server {
    /// Publishes results generation `generation` into the hub: `data: results N` (padded to
    /// `width`) for a viewer that has not sent them, `data: UPDATE` for one that has.
    fn publish_hub(&self, generation: u64, update: &str, width: usize) {
        self.hub.as_ref().unwrap().publish(Current {
            results_generation: generation,
            update: Bytes::from(format!("data: {update}\n\n")),
            catch_up: Bytes::from(format!("data: results {generation:>width$}\n\n")),
        });
    }

    /// Publishes new results, generation `generation`, padded to `width`.
    fn publish_results(&self, generation: u64, width: usize) {
        let results = format!("results {generation:>width$}");
        self.publish_hub(generation, &results, width);
    }

    /// A new connection (its pipe holds `buffer` bytes each way) on which `request` was sent.
    async fn send(&self, request: &[u8], buffer: usize) -> DuplexStream {
        let (mut client, server_end) = tokio::io::duplex(buffer);
        self.connect.send(server_end).await.unwrap();
        client.write_all(request).await.unwrap();
        client
    }
}

/// Reads until `want` has arrived (or the pipe closed); returns everything read.
async fn read_until(client: &mut DuplexStream, want: &str) -> String {
    let mut read = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&read).contains(want) {
        let n = tokio::time::timeout(TIMEOUT, client.read(&mut buffer))
            .await
            .expect("nothing arrived")
            .unwrap();
        if n == 0 {
            break;
        }
        read.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&read).into_owned()
}

#[tokio::test(start_paused = true)]
async fn viewers_get_the_head_then_every_publication_they_are_awake_for() {
    let server = start();
    let mut viewers = Vec::new();
    for _ in 0..20 {
        viewers.push(server.send(REQUEST, 64 * 1024).await);
    }
    for viewer in &mut viewers {
        let read = read_until(viewer, "data: 0\n\n").await;
        assert!(read.starts_with("HTTP/1.1 200 OK\r\n"), "{read}");
        for line in [
            "content-type: text/event-stream\r\n",
            "cache-control: no-cache\r\n",
            "access-control-allow-origin: *\r\n",
            "connection: close\r\n\r\n",
        ] {
            assert!(read.contains(line), "no {line:?} in {read}");
        }
    }
    for n in 1..=5 {
        let frame = format!("event: results\ndata: {n}\n\n");
        server.publish.send(Bytes::from(frame.clone())).unwrap();
        for viewer in &mut viewers {
            assert_eq!(read_until(viewer, &frame).await, frame);
        }
    }
    assert_eq!(server.places.load(Ordering::SeqCst), 20);
    drop(viewers);
    // A viewer that closes its end is noticed without a write.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(server.places.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_viewer_that_stops_reading_is_never_queued_for_and_is_dropped_at_the_stall_limit() {
    // Goal: nothing grows for a viewer that does not read: its feed is asked for a frame only
    // once the last is written, and the stall guard ends it. Method: a pipe of 256 bytes
    // never read, 1,000 publications of 100 bytes each; the frames pulled for it are counted.
    let server = start();
    let _idle = server.send(REQUEST, 256).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(server.places.load(Ordering::SeqCst), 1);
    for n in 0..1_000 {
        let frame = format!("data: {n:>93}\n\n");
        server.publish.send(Bytes::from(frame)).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pulled = server.pulled.load(Ordering::SeqCst);
    assert!(
        pulled <= 4,
        "{pulled} frames pulled for a viewer that reads nothing"
    );
    tokio::time::sleep(STALL + Duration::from_secs(1)).await;
    assert_eq!(
        server.places.load(Ordering::SeqCst),
        0,
        "the stalled viewer still holds its place"
    );
}

#[tokio::test(start_paused = true)]
async fn declined_stream_requests_and_other_requests_reach_the_router_even_in_pieces() {
    let server = start();
    let mut declined = server
        .send(
            b"GET /v1/polls/other/stream HTTP/1.1\r\nhost: t\r\n\r\n",
            4096,
        )
        .await;
    let read = read_until(&mut declined, "router").await;
    assert!(read.starts_with("HTTP/1.1 404"), "{read}");
    let mut pieces = server.send(b"GET /hel", 4096).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    pieces.write_all(b"lo HTTP/1.1\r\nho").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    pieces.write_all(b"st: t\r\n\r\n").await.unwrap();
    let read = read_until(&mut pieces, "hello").await;
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    // Keep-alive: the next request on it is hyper's too, a stream request included.
    pieces.write_all(REQUEST).await.unwrap();
    let read = read_until(&mut pieces, "router").await;
    assert!(read.starts_with("HTTP/1.1 404"), "{read}");
}

#[tokio::test(start_paused = true)]
async fn on_shutdown_viewers_are_closed_and_serve_returns() {
    let mut server = start();
    let mut viewer = server.send(REQUEST, 4096).await;
    read_until(&mut viewer, "data: 0\n\n").await;
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(TIMEOUT, &mut server.task)
        .await
        .expect("serve did not return")
        .unwrap();
    let mut rest = Vec::new();
    viewer.read_to_end(&mut rest).await.unwrap();
    assert_eq!(server.places.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn hub_viewers_get_the_head_the_current_results_then_every_publication() {
    // Goal: the hub's broadcaster writes what a viewer's own feed would: the current results
    // at once, then each publication's update. Method: 20 viewers of the hub, results 1
    // published before they join, then updates and new results.
    let server = start();
    server.publish_results(1, 0);
    let mut viewers = Vec::new();
    for _ in 0..20 {
        viewers.push(server.send(HUB_REQUEST, 64 * 1024).await);
    }
    for viewer in &mut viewers {
        let read = read_until(viewer, "data: results 1\n\n").await;
        assert!(read.starts_with("HTTP/1.1 200 OK\r\n"), "{read}");
        assert!(read.contains("connection: close\r\n\r\n"), "{read}");
    }
    for (generation, update) in [(1, "heartbeat"), (2, "results 2"), (2, "stale")] {
        server.publish_hub(generation, update, 0);
        let frame = format!("data: {update}\n\n");
        for viewer in &mut viewers {
            assert_eq!(read_until(viewer, &frame).await, frame);
        }
    }
    assert_eq!(server.places.load(Ordering::SeqCst), 20);
    drop(viewers);
    // A viewer that closes its end is noticed without a write.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(server.places.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hub_viewer_whose_socket_would_block_is_handed_to_its_task_and_then_gets_the_latest() {
    // Goal: a viewer that stops reading holds one frame, not a queue, and when it reads again
    // gets the latest results (skipping the rest) and is the hub's again. Method: a pipe of
    // 256 bytes not read while 100 publications of ~100 bytes go out; then read.
    let server = start();
    server.publish_results(1, 0);
    let mut slow = server.send(HUB_REQUEST, 256).await;
    let mut awake = server.send(HUB_REQUEST, 64 * 1024).await;
    read_until(&mut awake, "data: results 1\n\n").await;
    let last = format!("data: results {:>90}\n\n", 100);
    for generation in 2..=100 {
        server.publish_results(generation, 90);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The viewer that reads is not held back by the one that does not.
        read_until(&mut awake, &format!("results {generation:>90}\n\n")).await;
    }
    let read = read_until(&mut slow, &last).await;
    let frames = read.matches("data: ").count();
    assert!(
        frames < 10,
        "{frames} frames for a viewer that had stopped reading: {read}"
    );
    // It is the hub's again: the next publication reaches it.
    server.publish_hub(100, "after", 90);
    read_until(&mut slow, "data: after\n\n").await;
}

#[tokio::test(start_paused = true)]
async fn a_hub_viewer_that_stops_reading_is_dropped_at_the_stall_limit() {
    let server = start();
    server.publish_results(1, 0);
    let _idle = server.send(HUB_REQUEST, 256).await;
    let mut awake = server.send(HUB_REQUEST, 64 * 1024).await;
    read_until(&mut awake, "data: results 1\n\n").await;
    for generation in 2..=20 {
        server.publish_results(generation, 90);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(server.places.load(Ordering::SeqCst), 2);
    tokio::time::sleep(STALL + Duration::from_secs(1)).await;
    assert_eq!(
        server.places.load(Ordering::SeqCst),
        1,
        "the stalled viewer still holds its place"
    );
    server.publish_results(21, 0);
    read_until(&mut awake, "data: results 21\n\n").await;
}

#[tokio::test(start_paused = true)]
async fn when_the_publisher_goes_or_the_server_stops_hub_viewers_are_closed() {
    // Goal: a hub's viewers end with their feed (the edge stops following the poll) and at
    // shutdown. Method: two servers' worth of viewers; the publisher dropped on one, the
    // server stopped on the other; each stream must end and give its place back.
    let mut server = start();
    server.publish_results(1, 0);
    let mut viewer = server.send(HUB_REQUEST, 4096).await;
    read_until(&mut viewer, "data: results 1\n\n").await;
    drop(server.hub.take());
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, viewer.read_to_end(&mut rest))
        .await
        .expect("the stream did not end with its feed")
        .unwrap();
    assert_eq!(server.places.load(Ordering::SeqCst), 0);

    let mut server = start();
    server.publish_results(1, 0);
    let mut viewer = server.send(HUB_REQUEST, 4096).await;
    read_until(&mut viewer, "data: results 1\n\n").await;
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(TIMEOUT, &mut server.task)
        .await
        .expect("serve did not return")
        .unwrap();
    viewer.read_to_end(&mut rest).await.unwrap();
    assert_eq!(server.places.load(Ordering::SeqCst), 0);
}
