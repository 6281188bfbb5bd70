//! The viewers' tier: one subscription per poll to a node's stream, served to every viewer
//! from one slot; failover, staleness and recovery; cacheable reads; the viewer cap.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::kit::{self, Mode, Rig, STEP, get, id, rig, rig_with};

const STREAM: &str = "/v1/polls/superbowl/stream";
const RESULTS: &str = "/v1/polls/superbowl/results";

/// One viewer's open stream, read event by event.
struct Viewer {
    body: Body,
    pending: String,
}

/// One SSE event as a viewer saw it.
#[derive(Debug)]
struct Seen {
    name: String,
    data: String,
}

impl Viewer {
    async fn open(rig: &Rig) -> Viewer {
        let response = rig.edge.router.clone().oneshot(get(STREAM)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        Viewer {
            body: response.into_body(),
            pending: String::new(),
        }
    }

    /// The next named event (heartbeats skipped); `None` if the stream ended.
    async fn next(&mut self) -> Option<Seen> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = value.to_owned();
                    }
                }
                match name {
                    Some(name) => return Some(Seen { name, data }),
                    None => continue,
                }
            }
            let frame = tokio::time::timeout(STEP, self.body.frame())
                .await
                .expect("a viewer heard nothing for a minute")?
                .unwrap();
            let bytes = frame.into_data().unwrap();
            self.pending.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }

    /// Reads until a `results` event shows `total`; returns the events read.
    async fn until_total(&mut self, total: i64) -> Vec<Seen> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await.expect("the stream ended");
            let done = event.name == "results" && results_total(&event) == total;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

fn results_total(event: &Seen) -> i64 {
    let results: Value = serde_json::from_str(&event.data).unwrap();
    results["total"].as_i64().unwrap()
}

#[tokio::test(start_paused = true)]
async fn many_viewers_on_an_edge_get_every_change_from_one_node_stream() {
    // Goal: every viewer sees every change, and the node serves one stream per poll whatever
    // the number of viewers. Method: 40 viewers on one edge; votes one at a time, each waited
    // for by every viewer before the next; the node's subscriber gauge read at the end.
    let rig = rig(&["a"]).await;
    let mut viewers = Vec::new();
    for _ in 0..40 {
        viewers.push(Viewer::open(&rig).await);
    }
    for n in 1..=5 {
        assert_eq!(rig.vote("green", &id(n)).await.json()["status"], "counted");
        for viewer in &mut viewers {
            let seen = viewer.until_total(i64::from(n)).await;
            assert!(seen.iter().all(|e| e.name == "results"), "{seen:?}");
        }
    }
    let node_metrics = rig.nodes[0].send(get("/metrics")).await.text();
    assert!(
        node_metrics.contains("sse_subscribers 1\n"),
        "the node holds one stream: {node_metrics}"
    );
    assert_eq!(rig.metric("tally_edge_fanout_viewers").await, 40.0);
    assert_eq!(rig.metric("tally_edge_fanout_polls").await, 1.0);
    drop(viewers);
    // The places are given back as the streams are dropped.
    assert_eq!(rig.metric("tally_edge_fanout_viewers").await, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_viewer_that_stops_reading_skips_to_the_latest_results_instead_of_queueing() {
    // Goal: nothing is queued per viewer: a viewer that reads again after many changes gets
    // the latest results at once, not each change in turn. Method: a viewer reads its first
    // event, then 30 votes go in, each seen by a reading viewer; then the idle viewer reads.
    let rig = rig(&["a"]).await;
    let mut idle = Viewer::open(&rig).await;
    let mut reading = Viewer::open(&rig).await;
    assert_eq!(results_total(&idle.next().await.unwrap()), 0);
    for n in 1..=30 {
        rig.vote("green", &id(n)).await;
        reading.until_total(i64::from(n)).await;
    }
    let caught_up = idle.until_total(30).await;
    assert_eq!(caught_up.len(), 1, "skipped to the latest: {caught_up:?}");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_failover_keeps_viewers_connected_and_their_results_moving() {
    // Goal: when the node a poll is followed from goes away, the edge follows the next one
    // and its viewers stay connected and see results move. Method: nodes a and b (not
    // synced); a viewer on the edge; node a is cut off (connections closed, new ones refused);
    // votes then go to b, and the viewer sees b's results without reconnecting.
    let rig = rig(&["a", "b"]).await;
    let mut viewer = Viewer::open(&rig).await;
    rig.vote("green", &id(1)).await;
    let first = viewer.until_total(1).await;
    assert!(first.last().unwrap().data.contains("\"served_by\":\"a\""));
    rig.nodes[0].set_mode(Mode::Down);
    rig.nodes[0].sever();
    for n in 2..=4 {
        assert_eq!(rig.vote("blue", &id(n)).await.json()["status"], "counted");
    }
    // Node b holds the three votes sent to it since a went down.
    let moved = viewer.until_total(3).await;
    assert!(
        moved.last().unwrap().data.contains("\"served_by\":\"b\""),
        "{moved:?}"
    );
    assert!(rig.metric("tally_edge_fanout_failovers_total").await >= 1.0);
    assert_eq!(rig.metric("tally_edge_fanout_viewers").await, 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_makes_viewers_stale_with_the_last_results_then_fresh_again() {
    // Goal: degrade, do not fail: when no node's stream is heard for the staleness limit,
    // viewers keep the last results and get `stale` events on the slower tick, reads answer
    // the last bytes with the staleness header, the metric shows it; when a node answers
    // again all of it clears. Method: one node, blackholed and its connections cut; then
    // healthy again.
    let mut config = kit::edge_config(&["a"]);
    config.fanout_stale_after_ms = 1_000;
    let rig = rig_with(&["a"], |_| {}, config).await;
    let mut viewer = Viewer::open(&rig).await;
    rig.vote("green", &id(1)).await;
    viewer.until_total(1).await;
    let fresh = rig.send(get(RESULTS)).await;
    assert!(fresh.headers.get("tally-stale-seconds").is_none());

    rig.nodes[0].set_mode(Mode::Blackhole);
    rig.nodes[0].sever();
    let stale = loop {
        let event = viewer.next().await.expect("the stream stays open");
        if event.name == "stale" {
            break event;
        }
    };
    let notice: Value = serde_json::from_str(&stale.data).unwrap();
    assert_eq!(notice["reason"], "upstream", "{notice}");
    assert!(notice["as_of_ms"].as_u64().is_some(), "{notice}");
    let read = rig.send(get(RESULTS)).await;
    assert_eq!(
        read.status,
        StatusCode::OK,
        "the last results, not an error"
    );
    assert_eq!(read.json()["total"], 1);
    assert!(read.headers.contains_key("tally-stale-seconds"));
    let series = "tally_edge_fanout_staleness_seconds";
    assert!(rig.metric(series).await >= 1.0);
    // The slower tick: the next notice comes STALE_TICK_MS later.
    let before = tokio::time::Instant::now();
    let again = viewer.next().await.unwrap();
    assert_eq!(again.name, "stale");
    assert!(before.elapsed() >= Duration::from_millis(tally_edge::fanout::STALE_TICK_MS / 2));

    rig.nodes[0].set_mode(Mode::Healthy);
    let back = viewer.until_total(1).await;
    assert_eq!(back.last().unwrap().name, "results");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rig.send(get(RESULTS))
            .await
            .headers
            .get("tally-stale-seconds")
            .is_none()
    );
    assert_eq!(rig.metric(series).await, 0.0);
}

fn if_none_match(path: &str, tag: &str) -> Request<Body> {
    Request::get(path)
        .header(header::IF_NONE_MATCH, tag)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_read_route_of_the_edge_carries_the_nodes_etag_and_cache_control_and_answers_304() {
    // Goal: the edge's reads are as cacheable as the node's, under the same tags (the same
    // bytes). Method: each read route through the edge and directly from the node, then
    // again with the tag in If-None-Match.
    let rig = rig(&["a"]).await;
    rig.vote("green", &id(1)).await;
    rig.nodes[0].settles_at(1).await;
    let open = "public, max-age=1, stale-while-revalidate=2, stale-if-error=60";
    for path in [
        RESULTS,
        "/v1/polls/superbowl/results?at=0",
        "/v1/polls/superbowl/history",
        "/v1/polls",
    ] {
        // The edge's subscription catches up with the node within a few ticks.
        let node = rig.nodes[0].send(get(path)).await;
        let edge = loop {
            let edge = rig.send(get(path)).await;
            if edge.body == node.body {
                break edge;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(edge.status, StatusCode::OK, "{path}");
        assert_eq!(edge.headers[header::CACHE_CONTROL], open, "{path}");
        assert_eq!(
            edge.headers[header::ETAG],
            node.headers[header::ETAG],
            "{path}"
        );
        let tag = edge.headers[header::ETAG].to_str().unwrap();
        let held = rig.send(if_none_match(path, tag)).await;
        assert_eq!(held.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(held.body.is_empty(), "{path}");
        assert_eq!(held.headers[header::ETAG], tag, "{path}");
        assert_eq!(held.headers[header::CACHE_CONTROL], open, "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn viewers_past_the_memory_budget_are_refused_and_reads_still_answer() {
    // Goal: the viewer cap is the memory budget over the bytes per viewer; one more viewer
    // gets 503 `overloaded` with Retry-After (it can poll the cacheable results), and a place
    // freed is taken again. Method: a budget of two viewers through the router (hyper).
    let mut config = kit::edge_config(&["a"]);
    config.viewer_memory_bytes = 2 * tally_serve::viewers::VIEWER_BYTES_THROUGH_HYPER;
    let rig = rig_with(&["a"], |_| {}, config).await;
    let first = Viewer::open(&rig).await;
    let _second = Viewer::open(&rig).await;
    let refused = rig.edge.router.clone().oneshot(get(STREAM)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(rig.send(get(RESULTS)).await.status, StatusCode::OK);
    assert_eq!(
        rig.metric("tally_edge_fanout_viewers_refused_total").await,
        1.0
    );
    // The gauge tells the most viewers below hyper.
    let below_hyper =
        2 * tally_serve::viewers::VIEWER_BYTES_THROUGH_HYPER / tally_edge::fanout::VIEWER_BYTES;
    assert_eq!(
        rig.metric("tally_edge_fanout_viewers_max").await,
        below_hyper as f64
    );
    drop(first);
    let _third = Viewer::open(&rig).await;
}

#[tokio::test(start_paused = true)]
async fn an_unknown_poll_is_404_and_the_pages_are_served_by_the_edge() {
    // Goal: the edge refuses to follow polls no node lists (no subscription is started), and
    // serves the dashboard, the voting page and the browser client as a node does. Method:
    // requests through the edge's router.
    let rig = rig(&["a"]).await;
    for path in [
        "/v1/polls/nope/stream",
        "/v1/polls/nope/results",
        "/v1/polls/nope/history",
    ] {
        let reply = rig.send(get(path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.code(), "unknown_poll", "{path}");
    }
    assert_eq!(rig.metric("tally_edge_fanout_polls").await, 0.0);
    for (path, kind) in [
        ("/", "text/html"),
        ("/polls/superbowl", "text/html"),
        ("/vote/superbowl", "text/html"),
        ("/client.js", "text/javascript"),
        ("/assets/dashboard.js", "text/javascript"),
        ("/assets/vote.css", "text/css"),
    ] {
        let reply = rig.send(get(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let content_type = reply.headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
}
