//! A real three-node cluster on 127.0.0.1: three `tally run` processes with peer sync over
//! QUIC and mutual TLS (certificates from `generate_dev_cluster`), votes to all three, one
//! node SIGKILLed and restarted, one node cut off from its peers and healed; afterwards every
//! node must report the same tally, equal to the distinct vote IDs acknowledged.
//!
//! Partitions: every ordered pair of nodes talks through its own UDP proxy (`kit/proxy.rs`):
//! node X's `[[peers]]` address for peer Y is the proxy (X→Y), which forwards to Y's real
//! `peer_listen`. Cutting a node off is cutting the four proxies it sends or receives through.
//! Every wait has a deadline and says what it waited for; every process is SIGKILLed by a Drop
//! guard, and a failing test prints the tail of each node's log.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
mod http;
#[path = "kit/node.rs"]
mod node;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/proxy.rs"]
mod proxy;
#[path = "kit/votes.rs"]
mod votes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally::certs::generate_dev_cluster;
use tally_core::NodeId;
use tally_node::peer::transport::IDLE_TIMEOUT_MS;

use http::{Client, get_json};
use node::{NodeProcess, NodeSpec};
use process::{free_tcp_address, free_udp_address};
use proxy::UdpProxy;
use votes::{Answer, ClientPlan, Ledger, OPTIONS, SharedLedger, run_client, send_and_record};

/// The nodes, by index.
const NAMES: [&str; 3] = ["us-east", "us-west", "eu-central"];
/// The node SIGKILLed mid-burst and restarted on the same data directory.
const KILLED: usize = 1;
/// The node cut off from both peers while votes keep arriving.
const ISOLATED: usize = 2;
/// Settings that make the cluster quick to converge and to report it.
const FAST_SYNC: &str = "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 5000\n";

/// Longest wait for a node to become ready.
const READY_WAIT: Duration = Duration::from_secs(20);
/// Longest wait for the cluster to converge once every link is up. Generous: a restarted
/// node's peers learn of the restart from a stateless reset and reconnect at once (see
/// `a_restarted_node_is_pulled_from_again_within_seconds`), but a partition longer than QUIC's
/// idle timeout ends in a reconnect with backoff.
const CONVERGE_WAIT: Duration = Duration::from_millis(IDLE_TIMEOUT_MS as u64 + 10_000);
/// Votes the node to be killed must have acknowledged before it is killed.
const ACKNOWLEDGED_BEFORE_KILL: usize = 1_000;
/// How long the isolated node is cut off while votes keep arriving at all three.
const PARTITION: Duration = Duration::from_secs(4);
/// Votes per batch when every sent vote ID is sent again at the end.
const RESEND_BATCH_VOTES: usize = 2_000;

/// The three processes and the six proxies between them. Fields drop in order: processes
/// are killed before their directory is removed.
struct Cluster {
    nodes: Vec<NodeProcess>,
    /// (from, to) → the proxy `from` dials `to` through.
    proxies: BTreeMap<(usize, usize), UdpProxy>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<NodeId> = NAMES.iter().map(|n| NodeId::new(*n).unwrap()).collect();
        let certs = generate_dev_cluster(&dir.path().join("certs"), &ids).unwrap();
        let peer_listen: Vec<SocketAddr> = NAMES.iter().map(|_| free_udp_address()).collect();
        let mut proxies = BTreeMap::new();
        for from in 0..NAMES.len() {
            for to in (0..NAMES.len()).filter(|&to| to != from) {
                proxies.insert((from, to), UdpProxy::start(peer_listen[to]).unwrap());
            }
        }
        let nodes = (0..NAMES.len())
            .map(|i| {
                let files = certs.node(&ids[i]).unwrap();
                NodeSpec {
                    name: NAMES[i].to_owned(),
                    http: free_tcp_address(),
                    peer_listen: peer_listen[i],
                    peers: (0..NAMES.len())
                        .filter(|&j| j != i)
                        .map(|j| (NAMES[j].to_owned(), proxies[&(i, j)].address()))
                        .collect(),
                    dir: dir.path().join(NAMES[i]),
                    ca: certs.ca_cert.clone(),
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    extra: FAST_SYNC.to_owned(),
                }
                .spawn()
            })
            .collect();
        let mut cluster = Self {
            nodes,
            proxies,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_WAIT;
        for node in &mut cluster.nodes {
            node.wait_ready(deadline);
        }
        cluster
    }

    fn http(&self, node: usize) -> SocketAddr {
        self.nodes[node].spec.http
    }

    /// Cuts (or heals) every link of `node`, both directions.
    fn isolate(&self, node: usize, cut: bool) {
        for ((from, to), proxy) in &self.proxies {
            if *from == node || *to == node {
                if cut { proxy.cut() } else { proxy.heal() }
            }
        }
    }
}

/// One node's view of the poll.
#[derive(Debug, Clone, PartialEq)]
struct View {
    /// Votes per option, in poll order.
    votes: Vec<i64>,
    total: i64,
    /// Actor → records of it held.
    records: BTreeMap<String, u64>,
    /// Node → `connected` as the includes report it (only for other nodes).
    connected: BTreeMap<String, Option<bool>>,
}

fn view(address: SocketAddr) -> Result<View, String> {
    let json = get_json(address, "/v1/polls/superbowl/results")?;
    let votes = json["options"]
        .as_array()
        .ok_or("results without options")?
        .iter()
        .map(|o| o["votes"].as_i64().unwrap_or(-1))
        .collect();
    let includes = json["includes"]
        .as_array()
        .ok_or("results without includes")?;
    let records = includes
        .iter()
        .map(|i| {
            (
                i["actor"].as_str().unwrap_or("?").to_owned(),
                i["records"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let connected = includes
        .iter()
        .filter(|i| i["local"] != true)
        .map(|i| {
            (
                i["node"].as_str().unwrap_or("?").to_owned(),
                i["connected"].as_bool(),
            )
        })
        .collect();
    Ok(View {
        votes,
        total: json["total"].as_i64().ok_or("results without a total")?,
        records,
        connected,
    })
}

/// Waits until all nodes hold the same records and show the same votes, on two reads in a
/// row, and `accept` likes that view; returns it, or panics at the deadline with every view.
fn wait_converged(cluster: &Cluster, what: &str, accept: impl Fn(&View) -> bool) -> View {
    let started = Instant::now();
    let mut agreed_once = false;
    loop {
        let views: Vec<Result<View, String>> =
            (0..NAMES.len()).map(|i| view(cluster.http(i))).collect();
        let first = views[0].as_ref().ok();
        let agree = first.is_some_and(|first| {
            views.iter().all(|v| {
                v.as_ref()
                    .is_ok_and(|v| v.votes == first.votes && v.records == first.records)
            }) && accept(first)
        });
        if agree && agreed_once {
            eprintln!(
                "{what}: converged in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            return views[0].clone().unwrap();
        }
        agreed_once = agree;
        assert!(
            started.elapsed() < CONVERGE_WAIT,
            "{what}: the nodes did not converge within {CONVERGE_WAIT:?}; their views:\n{views:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `node` has acknowledged at least `count` votes.
fn wait_acknowledged(ledger: &SharedLedger, node: usize, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let have = ledger.lock().unwrap().acknowledged_at[node].len();
        if have >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged only {have} of {count} votes within {within:?}",
            NAMES[node]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `votes` to `node` on a fresh connection and returns the answers.
fn vote_at(
    cluster: &Cluster,
    node: usize,
    votes: &[(String, usize)],
    ledger: &SharedLedger,
) -> Vec<Answer> {
    let mut client = Client::connect(cluster.http(node)).unwrap();
    send_and_record(&mut client, node, votes, ledger).unwrap()
}

#[test]
fn three_real_nodes_converge_to_the_acknowledged_votes_after_a_sigkill_and_a_partition() {
    // Goal: exactly-once and convergence across real processes, through a crash and a
    // partition. Method: vote at all three (single votes, batches, retries at other nodes, one
    // ID with two options), SIGKILL and restart one node mid-burst, cut another off while
    // votes keep arriving, heal; then the converged total must equal the distinct IDs
    // acknowledged plus the unacknowledged ones that landed (found by sending every ID again).
    let test_started = Instant::now();
    let mut cluster = Cluster::start();
    eprintln!(
        "cluster ready in {:.2} s",
        test_started.elapsed().as_secs_f64()
    );
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new(NAMES.len())));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..NAMES.len())
        .map(|node| {
            let plan = ClientPlan {
                node,
                address: cluster.http(node),
                prefix: format!("{}-vote", NAMES[node]),
            };
            let (ledger, stop) = (ledger.clone(), stop.clone());
            std::thread::spawn(move || run_client(&plan, &ledger, &stop))
        })
        .collect();

    // A crash mid-burst: SIGKILL, let the others take votes meanwhile, restart on the same disk.
    wait_acknowledged(
        &ledger,
        KILLED,
        ACKNOWLEDGED_BEFORE_KILL,
        Duration::from_secs(20),
    );
    cluster.nodes[KILLED].kill();
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    cluster.nodes[KILLED] = cluster.nodes[KILLED].spec.spawn();
    cluster.nodes[KILLED].wait_ready(Instant::now() + READY_WAIT);
    eprintln!(
        "{} restarted and ready {:.2} s after SIGKILL",
        NAMES[KILLED],
        killed_at.elapsed().as_secs_f64()
    );
    let before_restart = ledger.lock().unwrap().acknowledged_at[KILLED].len();
    wait_acknowledged(
        &ledger,
        KILLED,
        before_restart + 200,
        Duration::from_secs(10),
    );

    // A partition: the isolated node keeps taking votes, and so do the others.
    cluster.isolate(ISOLATED, true);
    let partitioned_at = Instant::now();
    let probe: Vec<(String, usize)> = (0..20).map(|i| (format!("probe-{i}"), i % 2)).collect();
    let at_majority = vote_at(&cluster, 0, &probe, &ledger);
    assert!(
        !at_majority.contains(&Answer::Duplicate) && at_majority.contains(&Answer::Counted),
        "{at_majority:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // Retried at the cut-off node, votes acknowledged elsewhere after the cut are new there:
    // the cut is real.
    let at_isolated = vote_at(&cluster, ISOLATED, &probe, &ledger);
    // (A request shed under CPU contention answers Unacknowledged; only a Duplicate would mean
    // the vote crossed the cut. The final resend settles unacknowledged ones.)
    assert!(
        !at_isolated.contains(&Answer::Duplicate) && at_isolated.contains(&Answer::Counted),
        "the isolated node already knew votes taken after the cut: {at_isolated:?}"
    );
    // One vote ID, two options, two sides of the partition: both count it; it must end once.
    let conflict = "conflict-1".to_owned();
    ledger.lock().unwrap().conflicting.insert(conflict.clone());
    let green = vote_at(&cluster, ISOLATED, &[(conflict.clone(), 0)], &ledger);
    let blue = vote_at(&cluster, 0, &[(conflict.clone(), 1)], &ledger);
    assert_eq!((green[0], blue[0]), (Answer::Counted, Answer::Counted));
    std::thread::sleep(PARTITION.saturating_sub(partitioned_at.elapsed()));
    cluster.isolate(ISOLATED, false);
    let healed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    for ((from, to), proxy) in &cluster.proxies {
        let (forwarded, dropped) = proxy.counts();
        eprintln!(
            "proxy {}→{}: {forwarded} datagrams forwarded, {dropped} dropped",
            NAMES[*from], NAMES[*to]
        );
    }

    let ledger = Arc::try_unwrap(ledger).unwrap().into_inner().unwrap();
    assert!(
        ledger.unexpected.is_empty(),
        "unexpected answers: {:?}",
        ledger.unexpected
    );
    eprintln!(
        "sent {} distinct vote IDs, {} acknowledged",
        ledger.sent.len(),
        ledger.acknowledged.len()
    );
    let converged = wait_converged(&cluster, "after healing", |_| true);
    eprintln!(
        "converged {:.2} s after healing",
        healed_at.elapsed().as_secs_f64()
    );
    let landed = resend_everything(&cluster, &ledger);
    assert_eq!(
        converged.total,
        (ledger.acknowledged.len() + landed) as i64,
        "the converged total is not the {} acknowledged votes plus the {landed} unacknowledged \
         ones that landed: some vote is lost, counted twice, or a phantom",
        ledger.acknowledged.len()
    );
    check_final_tally(&cluster, &ledger);
    check_links_and_readiness(&cluster);
    eprintln!("test took {:.1} s", test_started.elapsed().as_secs_f64());
}

/// Sends every vote ID ever sent again (spread over the nodes, original options): every
/// acknowledged one must answer `duplicate`. Returns how many unacknowledged ones had landed.
fn resend_everything(cluster: &Cluster, ledger: &Ledger) -> usize {
    let all: Vec<(String, usize)> = ledger.sent.iter().map(|(id, o)| (id.clone(), *o)).collect();
    let scratch: SharedLedger = Arc::new(Mutex::new(Ledger::new(NAMES.len())));
    let mut landed = 0;
    for (index, chunk) in all.chunks(RESEND_BATCH_VOTES).enumerate() {
        let node = index % NAMES.len();
        let mut client = Client::connect(cluster.http(node)).unwrap();
        let mut pending: Vec<(String, usize)> = chunk.to_vec();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} kept shedding the re-sent votes",
                NAMES[node]
            );
            let answers = send_and_record(&mut client, node, &pending, &scratch).unwrap();
            let mut shed = Vec::new();
            for ((id, option), answer) in pending.iter().zip(answers) {
                match answer {
                    Answer::Duplicate => landed += usize::from(!ledger.acknowledged.contains(id)),
                    Answer::Counted => assert!(
                        !ledger.acknowledged.contains(id),
                        "acknowledged vote {id} was lost: {} counted it as new",
                        NAMES[node]
                    ),
                    Answer::Unacknowledged => shed.push((id.clone(), *option)),
                }
            }
            pending = shed;
        }
    }
    let unexpected = &scratch.lock().unwrap().unexpected;
    assert!(
        unexpected.is_empty(),
        "unexpected answers to re-sent votes: {unexpected:?}"
    );
    eprintln!(
        "re-sent {} vote IDs: {landed} unacknowledged ones had landed",
        all.len()
    );
    landed
}

/// After the re-send every sent ID is held: all nodes show one vote per distinct ID, each
/// non-conflicting ID under its own option.
fn check_final_tally(cluster: &Cluster, ledger: &Ledger) {
    let distinct = ledger.sent.len() as i64;
    let final_view = wait_converged(cluster, "after re-sending", |v| v.total == distinct);
    let mut floor = [0i64; OPTIONS.len()];
    for (id, option) in &ledger.sent {
        if !ledger.conflicting.contains(id) {
            floor[*option] += 1;
        }
    }
    for (option, name) in OPTIONS.iter().enumerate() {
        assert!(
            final_view.votes[option] >= floor[option],
            "{name} shows {} votes, fewer than the {} IDs sent only for it",
            final_view.votes[option],
            floor[option]
        );
    }
    assert_eq!(final_view.votes.iter().sum::<i64>(), distinct);
}

/// Every node is ready and reports both others as connected, in its results' `includes` and
/// in its `tally_peer_connected` metric.
fn check_links_and_readiness(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (node, name) in NAMES.iter().enumerate() {
        let others: BTreeMap<String, Option<bool>> = NAMES
            .iter()
            .filter(|other| *other != name)
            .map(|other| ((*other).to_owned(), Some(true)))
            .collect();
        loop {
            let view = view(cluster.http(node)).unwrap();
            if view.connected == others {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} does not report both peers connected: {:?}",
                view.connected
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, metrics) =
            http::request_once(cluster.http(node), "GET", "/metrics", "").unwrap();
        assert_eq!(status, 200, "{metrics}");
        for other in others.keys() {
            let labels = format!("{{peer=\"{other}\"}}");
            let connected = http::metric(&metrics, "tally_peer_connected", &labels);
            assert_eq!(
                connected, 1.0,
                "{name}'s metrics say {other} is not connected"
            );
        }
        let ready = http::request_once(cluster.http(node), "GET", "/readyz", "").unwrap();
        assert_eq!(ready.0, 200, "{name} is not ready: {ready:?}");
    }
}

#[test]
fn a_restarted_node_is_pulled_from_again_within_seconds() {
    // Goal: a crash and restart delays convergence by the reconnect backoff, not by QUIC's
    // idle timeout. Method: SIGKILL a node, restart it on its disk, vote there once, and time
    // until both peers hold that vote.
    let mut cluster = Cluster::start();
    cluster.nodes[KILLED].kill();
    cluster.nodes[KILLED] = cluster.nodes[KILLED].spec.spawn();
    cluster.nodes[KILLED].wait_ready(Instant::now() + READY_WAIT);
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new(NAMES.len())));
    let answer = vote_at(
        &cluster,
        KILLED,
        &[("after-restart".to_owned(), 0)],
        &ledger,
    );
    assert_eq!(answer, [Answer::Counted]);
    let voted_at = Instant::now();
    let within = Duration::from_secs(5);
    for node in (0..NAMES.len()).filter(|&n| n != KILLED) {
        while view(cluster.http(node)).unwrap().total != 1 {
            assert!(
                voted_at.elapsed() < within,
                "{} did not get {}'s vote within {within:?} of its restart",
                NAMES[node],
                NAMES[KILLED]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
