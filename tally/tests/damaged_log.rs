//! A damaged write-ahead log under the real binary (issue 29): votes to a node, SIGKILL, one
//! byte flipped in the middle of its log (or its log cut back to an earlier entry, as a
//! disk that dropped acknowledged writes or a restored backup leaves it), then a restart:
//! - alone, the node refuses to start and names the lost seqs, changing nothing; with
//!   `--accept-log-damage` it keeps every vote the log still holds, not just those before
//!   the damage;
//! - with a peer, it starts as a new incarnation, and both nodes converge to every
//!   acknowledged vote, old and new, with the old actor's seqs never issued again;
//! - a node whose log silently lost its last entries meets its own records at the peer,
//!   moves to a new incarnation once (one log line), and converges.
//!
//! Method: real `tally run` processes on 127.0.0.1 (`kit/node.rs`), votes in JSON batches,
//! the log file edited in place between a SIGKILL and the restart. Every wait has a deadline.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "kit/node.rs"]
#[allow(dead_code)]
mod node;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/votes.rs"]
#[allow(dead_code)]
mod votes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tally::certs::generate_dev_cluster;
use tally_core::NodeId;

use http::{Client, get_json};
use node::{NodeProcess, NodeSpec};
use process::{free_tcp_address, free_udp_address};
use votes::{Answer, send_batch};

/// Votes sent before the damage.
const VOTES_BEFORE: usize = 4_000;
/// Votes sent after the restart.
const VOTES_AFTER: usize = 1_000;
/// Votes per batch request.
const BATCH_VOTES: usize = 100;
/// Longest wait for readiness or convergence.
const WAIT: Duration = Duration::from_secs(30);
/// Settings that make two nodes sync and report quickly.
const FAST_SYNC: &str = "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 3000\n";

const SEGMENT: &str = "wal-00000000000000000001.log";

/// Sends votes `ids` (option by parity) to `address` in batches; every one must be counted.
fn vote(address: std::net::SocketAddr, prefix: &str, ids: std::ops::Range<usize>) {
    let mut client = Client::connect(address).unwrap();
    let all: Vec<(String, usize)> = ids.map(|i| (format!("{prefix}-{i}"), i % 2)).collect();
    for chunk in all.chunks(BATCH_VOTES) {
        let mut unexpected = Vec::new();
        let answers = send_batch(&mut client, chunk, &mut unexpected).unwrap();
        assert!(unexpected.is_empty(), "{unexpected:?}");
        assert!(answers.iter().all(|a| *a == Answer::Counted), "{answers:?}");
    }
}

fn results(address: std::net::SocketAddr) -> serde_json::Value {
    get_json(address, "/v1/polls/superbowl/results").unwrap()
}

/// The node's own actor, and every actor's record count, from its results.
fn actors(address: std::net::SocketAddr) -> (String, Vec<(String, u64)>) {
    let results = results(address);
    let mut own = String::new();
    let mut all = Vec::new();
    for actor in results["includes"].as_array().unwrap() {
        let name = actor["actor"].as_str().unwrap().to_owned();
        if actor["local"].as_bool() == Some(true) {
            own = name.clone();
        }
        all.push((name, actor["records"].as_u64().unwrap()));
    }
    all.sort();
    (own, all)
}

/// Waits until `check` holds, or panics saying `what`.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where `bytes` (a segment) ends its last frame: the log's fill may follow
/// (`Wal::fill_ahead`), which holds no entry.
fn frames_end(bytes: &[u8]) -> usize {
    tally_node::wal::inspect::frames(bytes)
        .last()
        .map_or(tally_node::wal::WAL_FILE_HEADER_BYTES, |frame| {
            frame.bytes.end as usize
        })
}

fn flip_middle_byte(segment: &Path) {
    let mut bytes = std::fs::read(segment).unwrap();
    let middle = frames_end(&bytes) / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(segment, &bytes).unwrap();
}

/// Cuts `segment` back to the frame boundary nearest the middle of its frames (every frame
/// after it gone, the file ending cleanly: what a disk that dropped acknowledged writes
/// leaves).
fn cut_at_middle_frame(segment: &Path) {
    let mut bytes = std::fs::read(segment).unwrap();
    let end = frames_end(&bytes);
    let mut at = tally_node::wal::WAL_FILE_HEADER_BYTES;
    let mut boundary = at;
    while at + 8 <= end && at < end / 2 {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + length;
        boundary = at;
    }
    bytes.truncate(boundary);
    std::fs::write(segment, &bytes).unwrap();
}

/// Two nodes, `a` and `b`, peered, with certificates from the development CA.
struct Pair {
    a: NodeProcess,
    b: NodeProcess,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ids = [NodeId::new("a").unwrap(), NodeId::new("b").unwrap()];
        let certs = generate_dev_cluster(&dir.path().join("certs"), &ids).unwrap();
        let peer_listen = [free_udp_address(), free_udp_address()];
        let spec = |i: usize| {
            let name = ids[i].to_string();
            let other = 1 - i;
            NodeSpec {
                name: name.clone(),
                http: free_tcp_address(),
                peer_listen: peer_listen[i],
                peers: vec![(ids[other].to_string(), peer_listen[other])],
                dir: dir.path().join(&name),
                ca: certs.ca_cert.clone(),
                cert: certs.nodes[i].cert.clone(),
                key: certs.nodes[i].key.clone(),
                extra: FAST_SYNC.into(),
            }
        };
        let (mut a, mut b) = (spec(0).spawn(), spec(1).spawn());
        let deadline = Instant::now() + WAIT;
        a.wait_ready(deadline);
        b.wait_ready(deadline);
        Self { a, b, _dir: dir }
    }

    /// The scenario both peered tests share: votes to A (replicated to B), SIGKILL A,
    /// `damage` its log segment, restart A, more votes to A, both converged to every vote.
    /// Returns the pair and A's actor before the damage.
    fn damage_a_and_restart(damage: fn(&Path)) -> (Self, String) {
        let mut pair = Self::start();
        vote(pair.a.spec.http, "first", 0..VOTES_BEFORE);
        pair.converge_to(VOTES_BEFORE as i64);
        let (old_actor, _) = actors(pair.a.spec.http);
        pair.a.kill();
        damage(&segment_of(&pair.a));
        pair.a = pair.a.spec.spawn();
        pair.a.wait_ready(Instant::now() + WAIT);
        vote(pair.a.spec.http, "second", 0..VOTES_AFTER);
        pair.converge_to((VOTES_BEFORE + VOTES_AFTER) as i64);
        (pair, old_actor)
    }

    /// Waits until both nodes show `expected` votes and hold the same records of every
    /// actor. (Results refresh every results tick: a node may answer a vote before its
    /// results show it, so the wait is for the expected total, not for any agreement.)
    fn converge_to(&self, expected: i64) {
        let total = |node: &NodeProcess| results(node.spec.http)["total"].as_i64().unwrap();
        wait_for(
            &format!("both nodes to show {expected} votes and the same records"),
            || {
                total(&self.a) == expected
                    && total(&self.b) == expected
                    && actors(self.a.spec.http).1 == actors(self.b.spec.http).1
            },
        );
    }
}

fn segment_of(node: &NodeProcess) -> PathBuf {
    node.spec.data_dir().join(SEGMENT)
}

/// The log's files and their bytes (not the directory lock, which each start takes and names
/// itself in, whether it then refuses or not).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .filter(|(name, _)| name != tally_node::storage::LOCK_FILE_NAME)
        .collect();
    files.sort();
    files
}

#[test]
fn a_lone_node_refuses_a_damaged_log_then_keeps_every_readable_vote_when_told_to() {
    // Goal: alone, damage is never silently truncated: the node names the loss and waits for
    // the operator; accepted, it keeps the votes after the damage too (the old recovery cut
    // everything after the flipped byte). Method: 4,000 votes, SIGKILL, flip the middle byte,
    // start (must exit 1, files untouched), start with --accept-log-damage.
    let dir = tempfile::tempdir().unwrap();
    let certs =
        generate_dev_cluster(&dir.path().join("certs"), &[NodeId::new("solo").unwrap()]).unwrap();
    let spec = NodeSpec {
        name: "solo".into(),
        http: free_tcp_address(),
        peer_listen: free_udp_address(),
        peers: Vec::new(),
        dir: dir.path().join("solo"),
        ca: certs.ca_cert.clone(),
        cert: certs.nodes[0].cert.clone(),
        key: certs.nodes[0].key.clone(),
        extra: String::new(),
    };
    let mut node = spec.spawn();
    node.wait_ready(Instant::now() + WAIT);
    vote(spec.http, "solo", 0..VOTES_BEFORE);
    // Acknowledged votes show in the results at the next results tick.
    wait_for("the results to show the votes", || {
        !actors(spec.http).0.is_empty()
    });
    let (old_actor, _) = actors(spec.http);
    node.kill();
    flip_middle_byte(&spec.data_dir().join(SEGMENT));
    let before = files(&spec.data_dir());

    let mut refused = spec.spawn();
    let status = refused.wait_exit(Instant::now() + WAIT);
    assert!(!status.success(), "a damaged log alone must not start");
    let log = refused.log();
    let line = log
        .lines()
        .find(|l| l.contains("no peers to recover the lost records"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert!(
        line.contains(&format!("actor {old_actor}: seqs ")),
        "{line}"
    );
    assert!(line.contains("--accept-log-damage"), "{line}");
    assert_eq!(
        files(&spec.data_dir()),
        before,
        "the refusal changed nothing"
    );
    let missing: i64 = line
        .split(" records)")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of missing records in {line}"));
    assert!(missing > 0 && missing <= BATCH_VOTES as i64, "{line}");
    drop(refused);

    let accepting = NodeSpec {
        extra: "accept_log_damage = true\n".into(),
        ..spec.clone()
    };
    let mut node = accepting.spawn();
    node.wait_ready(Instant::now() + WAIT);
    let total = results(spec.http)["total"].as_i64().unwrap();
    assert_eq!(
        total,
        VOTES_BEFORE as i64 - missing,
        "every vote but the lost ones"
    );
    let (new_actor, _) = actors(spec.http);
    assert_ne!(new_actor, old_actor, "a new incarnation");
    let names: Vec<String> = files(&spec.data_dir())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&format!("{SEGMENT}.damaged-1")), "{names:?}");
    let metrics = http::request_once(spec.http, "GET", "/metrics", "")
        .unwrap()
        .1;
    assert_eq!(http::metric(&metrics, "tally_log_damaged", ""), 1.0);
    assert_eq!(
        http::metric(&metrics, "tally_log_missing_records", ""),
        missing as f64
    );
}

#[test]
fn two_peered_nodes_converge_after_a_flipped_byte_and_no_seq_of_the_old_actor_is_reissued() {
    // Goal: the two-node scenario: after the damage, A and B converge to every
    // acknowledged vote, A runs as a new incarnation, the old actor's seqs are exactly those
    // of its first life, and A never logs records of its own actor coming from elsewhere.
    // Method: 4,000 votes to A (replicated to B), SIGKILL A, flip the middle byte of its log,
    // restart it, 1,000 more votes to A, wait for convergence.
    let (pair, old_actor) = Pair::damage_a_and_restart(flip_middle_byte);
    let (new_actor, records) = actors(pair.a.spec.http);
    assert_ne!(new_actor, old_actor);
    assert!(new_actor.starts_with("a#"), "{new_actor}");
    let old = records
        .iter()
        .find(|(actor, _)| actor == &old_actor)
        .unwrap();
    assert_eq!(
        old.1, VOTES_BEFORE as u64,
        "the old actor's seqs, no more: {records:?}"
    );
    let log = pair.a.log();
    assert_eq!(
        log.matches("new_incarnation=\"log_damage\"").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("came from elsewhere"), "{log}");
    assert!(!log.contains("own actor beyond"), "{log}");
}

#[test]
fn a_node_whose_log_lost_its_end_meets_its_own_records_and_moves_to_a_new_incarnation_once() {
    // Goal: a log cut back at an entry boundary reads as whole, so only the peer can tell
    // the node it lost records; the node then never issues those seqs again, says so once,
    // and converges with votes it takes meanwhile. Method: 4,000 votes to A (replicated),
    // SIGKILL A, cut its log at the entry nearest the middle, restart, send 1,000 votes.
    let (pair, old_actor) = Pair::damage_a_and_restart(cut_at_middle_frame);
    let (new_actor, _) = actors(pair.a.spec.http);
    assert_ne!(new_actor, old_actor, "moved to a new incarnation");
    // Let a few more sync rounds pass: the event must still be logged only once.
    std::thread::sleep(Duration::from_millis(500));
    let log = pair.a.log();
    assert_eq!(
        log.matches("own actor beyond what its log holds").count(),
        1,
        "{log}"
    );
    let metrics = http::request_once(pair.a.spec.http, "GET", "/metrics", "")
        .unwrap()
        .1;
    assert_eq!(
        http::metric(
            &metrics,
            "tally_incarnation_changes_total",
            "{reason=\"own_records_from_peer\"}"
        ),
        1.0
    );
}
