//! Replicated acks on the real binary (issue 26): `ack_mode = "replicated"` answers a vote
//! `counted` only once an ack peer has fsynced its record too.
//!
//! - Two nodes, votes to `a` (replicated, ack peer `b`), then `a` is SIGKILLed and its data
//!   directory deleted: the restarted `a` (a new incarnation) and `b` hold every vote `a`
//!   acknowledged. The same run in `local` mode loses acknowledged votes (so the test can
//!   fail): the pull tick is set to 60 s, so `b` holds only what it pulled as the session
//!   opened, and `local` acks leave the rest on `a`'s disk alone.
//! - The ack peer unreachable or frozen: 503 by default (nothing acknowledged), `counted`
//!   with `ack_fallback = "local"`; both counted in `tally_ack_peer_misses_total`.
//! - A vote refused with `not_replicated` is durable on `a` alone: its retry is not answered
//!   `duplicate` until the ack peer holds it, across a restart of `a` and across a move of `a`
//!   to a new incarnation (a cut log tail); then it is, without any new vote (probes).
//!
//! Method: nodes run from config files (`kit/node.rs`); votes come from `tally load`
//! (postcard batches of 1,000), whose JSON report says what was acknowledged.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "kit/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "kit/node.rs"]
#[allow(dead_code)]
mod node;
#[path = "kit/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tally::certs::{ClusterFiles, generate_dev_cluster};
use tally_core::NodeId;

use http::{metric, request_once};
use node::NodeSpec;
use process::{free_tcp_address, free_udp_address};

/// Longest wait for a node to become ready, or for a condition.
const WAIT: Duration = Duration::from_secs(30);
/// Pulls only as a session opens (the tick is 60 s): what `b` holds of `a`'s votes beyond
/// that first pull came by pushes.
const RARE_PULLS: &str = "sync_tick_ms = 60000\nresults_tick_ms = 50\ncatch_up_timeout_ms = 2000\n";

fn spec(name: &str, dir: &Path, certs: &ClusterFiles, extra: &str) -> NodeSpec {
    let files = certs.node(&NodeId::new(name).unwrap()).unwrap();
    NodeSpec {
        name: name.to_owned(),
        http: free_tcp_address(),
        peer_listen: free_udp_address(),
        peers: Vec::new(),
        dir: dir.join(name),
        ca: certs.ca_cert.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        extra: format!("{RARE_PULLS}{extra}"),
    }
}

/// Two peered nodes `a` (with `a_extra`) and `b`, configs written, not started.
fn pair(dir: &Path, a_extra: &str) -> (NodeSpec, NodeSpec) {
    let ids = [NodeId::new("a").unwrap(), NodeId::new("b").unwrap()];
    let certs = generate_dev_cluster(&dir.join("certs"), &ids).unwrap();
    let mut a = spec("a", dir, &certs, a_extra);
    let mut b = spec("b", dir, &certs, "");
    a.peers = vec![("b".to_owned(), b.peer_listen)];
    b.peers = vec![("a".to_owned(), a.peer_listen)];
    (a, b)
}

/// What `tally load` reported: votes acknowledged, and left without an answer.
fn load(target: SocketAddr, count: u64) -> (u64, u64) {
    let report = load::load(target, count, "off", 26);
    (report.counted, report.unknown + report.refused)
}

fn total(address: SocketAddr) -> u64 {
    let results = http::get_json(address, "/v1/polls/superbowl/results").unwrap();
    results["total"].as_u64().unwrap()
}

fn metrics(address: SocketAddr) -> String {
    request_once(address, "GET", "/metrics", "").unwrap().1
}

/// What [`lose_a_disk_after_votes`] saw.
struct DiskLoss {
    acknowledged: u64,
    unanswered: u64,
    /// What the restarted `a` holds.
    held_a: u64,
    /// What `b` holds.
    held_b: u64,
    /// Records `a` pushed before it was killed (`tally_ack_records_pushed_total`).
    pushed: u64,
}

/// Votes to `a`, SIGKILL, data directory deleted, restart.
fn lose_a_disk_after_votes(a_extra: &str) -> DiskLoss {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), a_extra);
    let mut node_b = b.spawn();
    let mut node_a = a.spawn();
    node_a.wait_ready(Instant::now() + WAIT);
    node_b.wait_ready(Instant::now() + WAIT);
    let (acknowledged, unanswered) = load(a.http, 50_000);
    assert!(acknowledged > 0, "no vote was acknowledged");
    let pushed = metric(&metrics(a.http), "tally_ack_records_pushed_total", "") as u64;
    node_a.kill();
    std::fs::remove_dir_all(a.data_dir()).unwrap();
    let mut node_a = a.spawn();
    node_a.wait_ready(Instant::now() + WAIT);
    // The restarted node pulled from b as its session opened (it is ready once caught up).
    let (held_a, held_b) = (total(a.http), total(b.http));
    let log = node_a.log();
    assert!(log.contains("new_incarnation"), "{log}");
    node_a.kill();
    node_b.kill();
    eprintln!(
        "acknowledged {acknowledged}, unanswered {unanswered}; a holds {held_a}, b {held_b}; \
         a pushed {pushed} records"
    );
    DiskLoss {
        acknowledged,
        unanswered,
        held_a,
        held_b,
        pushed,
    }
}

#[test]
fn a_replicated_node_that_loses_its_disk_loses_no_acknowledged_vote() {
    // Goal: DESIGN.md §4's promise of `replicated`: a lost disk loses no acknowledged vote.
    // Method: 50,000 votes to a (ack peer b, pulls only as sessions open), SIGKILL, its data
    // directory deleted, restart; both nodes must hold every acknowledged vote. The two nodes
    // list each other, so they hold two sessions: a pushes its records over one of them only
    // (pushing over both sent every record twice).
    let DiskLoss {
        acknowledged,
        unanswered,
        held_a,
        held_b,
        pushed,
    } = lose_a_disk_after_votes("ack_mode = \"replicated\"\nack_peers = [\"b\"]\n");
    assert!(
        pushed < (acknowledged + unanswered) * 3 / 2,
        "a pushed {pushed} records for {} votes: over both sessions?",
        acknowledged + unanswered
    );
    let held = acknowledged..=acknowledged + unanswered;
    assert!(
        held.contains(&held_b),
        "b holds {held_b} of {acknowledged} acknowledged ({unanswered} unanswered)"
    );
    assert!(
        held.contains(&held_a),
        "the restarted a holds {held_a} of {acknowledged} acknowledged"
    );
}

#[test]
fn a_local_node_that_loses_its_disk_loses_acknowledged_votes() {
    // Goal: the loss `replicated` exists to prevent is real (so the test above can fail).
    // Method: the same run in `local` mode: b holds fewer votes than a acknowledged.
    let DiskLoss {
        acknowledged,
        held_a,
        held_b,
        ..
    } = lose_a_disk_after_votes("");
    assert!(
        held_b < acknowledged && held_a < acknowledged,
        "no acknowledged vote was lost: a holds {held_a}, b {held_b}, {acknowledged} acknowledged"
    );
}

/// Posts one vote to `address` until an answer other than the clock check's start-up hold
/// comes (a node with peers it cannot reach trusts its clock after catch_up_timeout_ms).
fn vote(address: SocketAddr, vote_id: &str) -> (u16, String) {
    let body = format!(r#"{{"option":"green","vote_id":"{vote_id}"}}"#);
    let deadline = Instant::now() + WAIT;
    loop {
        // Until the node listens, and while its clock check holds it.
        let answer = request_once(address, "POST", "/v1/polls/superbowl/votes", &body);
        match answer {
            Ok(answer) if !answer.1.contains("clock") => return answer,
            _ => assert!(
                Instant::now() < deadline,
                "no answer but the clock hold: {answer:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unreachable_ack_peer_refuses_votes_by_default_and_acknowledges_locally_with_the_fallback() {
    // Goal: when no ack peer can confirm, the default refuses (503 + Retry-After, nothing
    // acknowledged, the node not ready and saying why) and `ack_fallback = "local"`
    // acknowledges; both show in the metrics. Method: a's ack peer b is never started; then
    // (default) b runs but is frozen with SIGSTOP, so pushes go unanswered past the deadline,
    // and then the next vote is refused at once (the ack peer is stalled).
    let dir = tempfile::tempdir().unwrap();
    let replicated = "ack_mode = \"replicated\"\nack_peers = [\"b\"]\nack_timeout_ms = 200\n";

    let (a, b) = pair(&dir.path().join("refuse"), replicated);
    let mut node_a = a.spawn();
    let (status, body) = vote(a.http, "00000000-0000-4000-8000-000000000001");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ack peer"), "{body}");
    let (status, readyz) = request_once(a.http, "GET", "/readyz", "").unwrap();
    assert_eq!(status, 503);
    assert!(readyz.contains("ack_peer_down"), "{readyz}");
    let text = metrics(a.http);
    let refused = r#"{outcome="refused",cause="disconnected"}"#;
    assert!(
        metric(&text, "tally_ack_peer_misses_total", refused) >= 1.0,
        "{text}"
    );
    // b comes: votes are confirmed; b frozen: the deadline refuses them.
    let mut node_b = b.spawn();
    node_b.wait_ready(Instant::now() + WAIT);
    node_a.wait_ready(Instant::now() + WAIT);
    let (status, body) = vote(a.http, "00000000-0000-4000-8000-000000000002");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("counted"), "{body}");
    let b_pid = node_b.pid().to_string();
    let stop = |signal: &str| {
        let done = Command::new("kill")
            .args([signal, &b_pid])
            .status()
            .unwrap();
        assert!(done.success());
    };
    stop("-STOP");
    let (status, body) = vote(a.http, "00000000-0000-4000-8000-000000000003");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("retry with the same vote ID"), "{body}");
    // No confirmation advanced within the deadline: the ack peer is stalled, and the next
    // vote is refused at once instead of waiting out the deadline too.
    let started = Instant::now();
    let (status, body) = vote(a.http, "00000000-0000-4000-8000-000000000004");
    let waited = started.elapsed();
    stop("-CONT");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ack peer"), "{body}");
    assert!(
        waited < Duration::from_millis(200),
        "refused after {waited:?}"
    );
    let text = metrics(a.http);
    let timeout = r#"{outcome="refused",cause="timeout"}"#;
    assert!(
        metric(&text, "tally_ack_peer_misses_total", timeout) >= 1.0,
        "{text}"
    );
    let stalled = r#"{outcome="refused",cause="stalled"}"#;
    assert!(
        metric(&text, "tally_ack_peer_misses_total", stalled) >= 1.0,
        "{text}"
    );
    // The retry, once b answers again, is safe: answered once, as a duplicate.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = vote(a.http, "00000000-0000-4000-8000-000000000003");
        if status == 200 {
            assert!(body.contains("duplicate"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the retry kept failing: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    node_a.kill();
    node_b.kill();

    let fallback = format!("{replicated}ack_fallback = \"local\"\n");
    let (a, _b) = pair(&dir.path().join("fallback"), &fallback);
    let mut node_a = a.spawn();
    let (status, body) = vote(a.http, "00000000-0000-4000-8000-000000000005");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("counted"), "{body}");
    let text = metrics(a.http);
    let local = r#"{outcome="local",cause="disconnected"}"#;
    assert_eq!(
        metric(&text, "tally_ack_peer_misses_total", local),
        1.0,
        "{text}"
    );
    node_a.kill();
}

/// `a`'s log segment, with `junk` appended (a torn last frame: the next start cuts it off and
/// begins a new incarnation).
fn append_to_log(a: &NodeSpec, junk: &[u8]) {
    use std::io::Write;
    let segment = a.data_dir().join("wal-00000000000000000001.log");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(junk).unwrap();
}

#[test]
fn a_refused_vote_is_acknowledged_only_once_an_ack_peer_holds_it_across_restarts() {
    // Goal: nothing counts as replicated that no ack peer confirmed to this process: the
    // retry of a vote refused with not_replicated (durable on a alone) is refused again after
    // a restarts, and after a restarts as a new incarnation, while b lacks the vote; once b
    // holds it, the retry is answered `duplicate` with no other vote sent (probes).
    // Method: b starts with a disk reserve larger than its disk (the disk_low hold: it takes
    // no pushed or pulled records, and answers pushes "nothing durable"); one vote to a;
    // SIGKILL and restart a on its data, then again with junk appended to its log; then b
    // restarts without the reserve.
    let dir = tempfile::tempdir().unwrap();
    let replicated = "ack_mode = \"replicated\"\nack_peers = [\"b\"]\nack_timeout_ms = 300\n";
    let (a, b) = pair(dir.path(), replicated);
    let mut b_full = b.clone();
    b_full.extra += "disk_reserve_bytes = 1099511627776\n";
    let mut node_b = b_full.spawn();
    let mut node_a = a.spawn();
    node_a.wait_ready(Instant::now() + WAIT);
    let id = "00000000-0000-4000-8000-000000000006";
    let (status, body) = vote(a.http, id);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not_replicated"), "{body}");

    node_a.kill();
    let mut node_a = a.spawn();
    node_a.wait_ready(Instant::now() + WAIT);
    let (status, body) = vote(a.http, id);
    assert_eq!(
        status, 503,
        "after a restart, a acknowledged a vote only its own disk holds: {body}"
    );

    node_a.kill();
    append_to_log(&a, &[0xAB; 7]);
    let mut node_a = a.spawn();
    node_a.wait_ready(Instant::now() + WAIT);
    assert!(node_a.log().contains("log_tail_cut"), "{}", node_a.log());
    let (status, body) = vote(a.http, id);
    assert_eq!(
        status, 503,
        "as a new incarnation, a acknowledged a vote only its own disk holds: {body}"
    );
    assert_eq!(total(b.http), 0, "b took records under its disk_low hold");

    node_b.kill();
    let mut node_b = b.spawn();
    node_b.wait_ready(Instant::now() + WAIT);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = vote(a.http, id);
        if status == 200 {
            assert!(body.contains("duplicate"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the retry kept failing: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(total(b.http), 1);
    let text = metrics(a.http);
    assert!(metric(&text, "tally_ack_probes_total", "") >= 1.0, "{text}");
    node_a.kill();
    node_b.kill();
}
