//! Issue 27's scenario on two real `tally run` processes: the poll `superbowl` opens at
//! start-up for 600 s, and the second node's wall clock runs an hour behind (libfaketime,
//! monotonic clock untouched). The healthy node must keep counting with its window where its
//! own clock put it; the skewed node must refuse votes with 503 + `Retry-After`, say why in
//! `/readyz` and its log, and come back by itself once its clock is set right (the faketime
//! file changed under the running process); both must then hold every acknowledged vote.
//!
//! Needs Debian's `faketime` package (scripts/test.sh installs it). Every wait has a deadline;
//! both processes are SIGKILLed by Drop guards, and a failing test prints their logs' tails.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
mod http;
#[path = "kit/node.rs"]
mod node;
#[path = "kit/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tally::certs::generate_dev_cluster;
use tally_core::NodeId;

use http::{Client, get_json, metric, request_once};
use node::{NodeProcess, NodeSpec};
use process::{free_tcp_address, free_udp_address};

/// libfaketime as Debian installs it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The nodes: the healthy one first, the skewed one second.
const NAMES: [&str; 2] = ["us-east", "eu-west"];

/// The issue's poll: open from start-up for ten minutes; quick sync and results.
const SETTINGS: &str = "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 2000\n\
     [[polls]]\nid = \"superbowl\"\noptions = [\"green\", \"blue\"]\nduration_seconds = 600\n";

/// Longest wait for any state the test expects.
const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn vote_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Polls `what` until it returns `Some`, or panics naming `description` at the deadline.
fn wait_for<T>(description: &str, mut what: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = what() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {description}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A vote at `address`: (status, headers, body).
fn vote(address: SocketAddr, n: u64) -> (u16, String, String) {
    let body = format!(r#"{{"option":"green","vote_id":"{}"}}"#, vote_id(n));
    Client::connect(address)
        .unwrap()
        .request_with_headers("POST", "/v1/polls/superbowl/votes", "", &body)
        .unwrap()
}

fn spec(dir: &Path, index: usize, peer_listen: &[SocketAddr]) -> NodeSpec {
    let certs = dir.join("certs");
    let other = 1 - index;
    NodeSpec {
        name: NAMES[index].into(),
        http: free_tcp_address(),
        peer_listen: peer_listen[index],
        peers: vec![(NAMES[other].into(), peer_listen[other])],
        dir: dir.join(NAMES[index]),
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{}.pem", NAMES[index])),
        key: certs.join(format!("{}-key.pem", NAMES[index])),
        extra: SETTINGS.into(),
    }
}

fn poll_window(address: SocketAddr) -> (String, u64, u64) {
    let polls = get_json(address, "/v1/polls").unwrap();
    let poll = &polls[0];
    (
        poll["status"].as_str().unwrap().to_owned(),
        poll["opens_at_ms"].as_u64().unwrap_or(0),
        poll["closes_at_ms"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_node_an_hour_behind_refuses_votes_while_the_healthy_one_counts_and_it_recovers_when_set_right()
{
    // Goal: issue 27's report, fixed: one region's bad clock neither closes the poll for the
    // cluster nor stamps votes an hour off, and it returns by itself. Method: two processes,
    // the second under libfaketime whose offset file is rewritten while it runs.
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime package (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<NodeId> = NAMES.iter().map(|n| NodeId::new(*n).unwrap()).collect();
    generate_dev_cluster(&dir.path().join("certs"), &ids).unwrap();
    let peer_listen: Vec<SocketAddr> = NAMES.iter().map(|_| free_udp_address()).collect();
    let specs: Vec<NodeSpec> = (0..2).map(|i| spec(dir.path(), i, &peer_listen)).collect();
    let (healthy_http, skewed_http) = (specs[0].http, specs[1].http);

    // The healthy node starts alone: after catch_up_timeout_ms it trusts its own clock and
    // opens the poll at it.
    let started_ms = now_ms();
    let mut healthy: NodeProcess = specs[0].spawn();
    healthy.wait_ready(Instant::now() + WAIT);
    let (status, opens_at, closes_at) = poll_window(healthy_http);
    assert_eq!(status, "open");
    assert!(opens_at >= started_ms && opens_at <= now_ms(), "{opens_at}");
    assert_eq!(closes_at, opens_at + 600_000);

    // The second node's clock runs an hour behind from its start.
    let offset_file = dir.path().join("faketime");
    std::fs::write(&offset_file, "-1h\n").unwrap();
    let offset_path = offset_file.display().to_string();
    let faketime = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", offset_path.as_str()),
        ("FAKETIME_CACHE_DURATION", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut skewed: NodeProcess = specs[1].spawn_with_env(&faketime);
    let readyz = wait_for("the skewed node to say why it is not ready", || {
        let answer = request_once(skewed_http, "GET", "/readyz", "").ok()?;
        (answer.0 == 503 && answer.1.contains("clock_skew")).then_some(answer.1)
    });
    assert!(readyz.contains("clock"), "{readyz}");
    let offset = wait_for(
        "the healthy node to measure the skewed node's offset",
        || {
            let metrics = request_once(healthy_http, "GET", "/metrics", "").ok()?.1;
            let labels = format!("{{peer=\"{}\"}}", NAMES[1]);
            let offset = metric(&metrics, "tally_peer_clock_offset_seconds", &labels);
            (offset != 0.0).then_some(offset)
        },
    );
    assert!((offset + 3600.0).abs() < 2.0, "offset {offset} s");

    // The skewed node refuses (nothing counted, go elsewhere); the healthy one counts, and its
    // window stays where its own clock put it.
    let (status, head, body) = vote(skewed_http, 1);
    assert_eq!(status, 503, "{body}");
    assert!(head.contains("retry-after:"), "{head}");
    assert!(body.contains("clock"), "{body}");
    let mut acknowledged = Vec::new();
    for n in 1..=20 {
        let (status, _, body) = vote(healthy_http, n);
        assert_eq!(status, 200, "{body}");
        let receipt: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            receipt["receipt"]["second"].as_u64().unwrap() < 60,
            "{body}"
        );
        acknowledged.push(n);
    }
    assert_eq!(
        poll_window(healthy_http),
        ("open".to_owned(), opens_at, closes_at)
    );
    // Its own verdict, once it has measured its peer (its start-up line says only that the
    // clock is not yet checked).
    wait_for("the skewed node to log why it holds", || {
        skewed
            .log()
            .contains("clock disagrees with its peers' (peer minus this node)")
            .then_some(())
    });

    // Its clock is set right: the running process sees its clock step, peers confirm it,
    // and it counts again, stamping the same seconds as the healthy node.
    std::fs::write(&offset_file, "+0\n").unwrap();
    skewed.wait_ready(Instant::now() + WAIT);
    for n in 21..=30 {
        let (status, _, body) = vote(skewed_http, n);
        assert_eq!(status, 200, "{body}");
        let receipt: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            receipt["receipt"]["second"].as_u64().unwrap() < 120,
            "{body}"
        );
        acknowledged.push(n);
    }
    assert!(skewed.log().contains("stepped"), "the step is logged");

    // Both converge to exactly the acknowledged votes, with the healthy node's window.
    let expected = acknowledged.len() as u64;
    for address in [healthy_http, skewed_http] {
        wait_for("both nodes to hold every acknowledged vote", || {
            let results = get_json(address, "/v1/polls/superbowl/results").ok()?;
            (results["total"].as_u64() == Some(expected)).then_some(())
        });
        assert_eq!(
            poll_window(address),
            ("open".to_owned(), opens_at, closes_at)
        );
    }
    // The healthy node held only while unchecked at its own start: one info line, no warning
    // (an ordinary start is not a fault an operator must look at).
    let healthy_log = healthy.log();
    let hold_lines = |level: &str| {
        healthy_log
            .lines()
            .filter(|line| line.contains(level) && line.contains(r#"hold="clock_skew""#))
            .count()
    };
    assert_eq!(
        hold_lines("WARN"),
        0,
        "the healthy node never held for the other's clock"
    );
    assert_eq!(
        hold_lines("start-up: counting no votes until this node's clock is checked"),
        1,
        "its start-up hold is one info line"
    );
    assert!(
        !healthy_log.contains("(peer minus this node)"),
        "nor judged itself skewed"
    );
}
