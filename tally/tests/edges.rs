//! The edge tier as operators run it: voters → three `tally edge` processes → three `tally
//! run` nodes with peer sync over QUIC and mutual TLS. Mid-load one edge and one node are
//! SIGKILLed (the node is started again on its data directory). Voters vote one tap at a time
//! and retry a vote that got no answer, with the same vote ID, at another region's edge.
//!
//! Checked: every vote an edge acknowledged (`counted` or `duplicate`, from a node's durable
//! status) is held by every node afterwards, for the option it was cast for (no acknowledged
//! vote lost, whichever edge or node died); and once every vote left unanswered by the kills
//! is resolved by sending it again with its ID, every node's tally equals the distinct vote
//! IDs, option by option (exactly once through the edges' resends and the voters' retries).

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/edge.rs"]
mod edge;
#[path = "kit/http.rs"]
mod http;
#[path = "kit/node.rs"]
mod node;
#[path = "kit/process.rs"]
mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally::certs::generate_dev_cluster;
use tally_core::NodeId;

use edge::EdgeProcess;
use http::{Client, get_json};
use node::{NodeProcess, NodeSpec};
use process::{free_tcp_address, free_udp_address};

/// Regions: one node and one edge each.
const NAMES: [&str; 3] = ["us-east", "us-west", "eu-central"];
/// The options, by index.
const OPTIONS: [&str; 2] = ["green", "blue"];
/// The edge and the node SIGKILLed mid-load.
const KILLED_EDGE: usize = 1;
const KILLED_NODE: usize = 2;
/// Settings that make the nodes quick to converge; the admin token is for the lookups.
const NODE_SETTINGS: &str = "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 5000\nadmin_token = \"audit\"\n";
/// Voter threads, spread over the edges.
const VOTERS: usize = 6;
/// Attempts per vote (each at the next edge after the first).
const ATTEMPTS: usize = 30;
/// Pause between a voter's votes, and before a retry.
const PAUSE: Duration = Duration::from_millis(2);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Votes acknowledged before the kills.
const ACKNOWLEDGED_BEFORE_KILL: usize = 600;
/// Voting time after the kills, before and after the node comes back.
const AFTER_KILL: Duration = Duration::from_secs(3);
/// Longest wait for readiness, for convergence.
const READY_WAIT: Duration = Duration::from_secs(30);
const CONVERGE_WAIT: Duration = Duration::from_secs(40);
/// Vote IDs per lookup request.
const LOOKUP_CHUNK: usize = 2_000;

#[derive(Default)]
struct Ledger {
    /// Every vote ID sent, with its option.
    sent: BTreeMap<String, usize>,
    /// Vote IDs an edge acknowledged.
    acknowledged: BTreeSet<String>,
    /// Answers no test should see.
    unexpected: Vec<String>,
    /// Votes sent again at another edge after no answer came.
    retried: usize,
}

type Shared = Arc<Mutex<Ledger>>;

fn vote_body(id: &str, option: usize) -> String {
    format!(r#"{{"option":"{}","vote_id":"{id}"}}"#, OPTIONS[option])
}

/// Sends `id` until an edge acknowledges it, starting at edge `first`, moving to the next
/// edge after any failure (as the clients do: same ID, another region). Returns whether it
/// was acknowledged.
fn vote_until_acknowledged(
    edges: &[SocketAddr],
    clients: &mut [Option<Client>],
    first: usize,
    id: &str,
    option: usize,
    ledger: &Shared,
) -> bool {
    for attempt in 0..ATTEMPTS {
        let at = (first + attempt) % edges.len();
        if attempt > 0 {
            ledger.lock().unwrap().retried += 1;
            std::thread::sleep(RETRY_PAUSE);
        }
        if clients[at].is_none() {
            clients[at] = Client::connect(edges[at]).ok();
        }
        let Some(client) = clients[at].as_mut() else {
            continue;
        };
        match client.request("POST", "/v1/polls/superbowl/votes", &vote_body(id, option)) {
            Ok((200, body))
                if body.contains(r#""status":"counted""#)
                    || body.contains(r#""status":"duplicate""#) =>
            {
                ledger.lock().unwrap().acknowledged.insert(id.to_owned());
                return true;
            }
            Ok((429 | 503, _)) => {}
            Ok((status, body)) => {
                ledger
                    .lock()
                    .unwrap()
                    .unexpected
                    .push(format!("{id}: {status} {body}"));
                return false;
            }
            Err(_) => clients[at] = None,
        }
    }
    false
}

fn voter(index: usize, edges: Vec<SocketAddr>, ledger: Shared, stop: Arc<AtomicBool>) {
    let mut clients: Vec<Option<Client>> = edges.iter().map(|_| None).collect();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("voter{index}-{n}");
        let option = (index + n) % 2;
        ledger.lock().unwrap().sent.insert(id.clone(), option);
        vote_until_acknowledged(
            &edges,
            &mut clients,
            index % edges.len(),
            &id,
            option,
            &ledger,
        );
        std::thread::sleep(PAUSE);
    }
}

/// One node's displayed votes per option, their total, and records held per actor.
type View = (Vec<i64>, i64, BTreeMap<String, u64>);

/// `address`'s view of the poll.
fn view(address: SocketAddr) -> Result<View, String> {
    let json = get_json(address, "/v1/polls/superbowl/results")?;
    let votes = json["options"]
        .as_array()
        .ok_or("no options")?
        .iter()
        .map(|o| o["votes"].as_i64().unwrap_or(-1))
        .collect();
    let records = json["includes"]
        .as_array()
        .ok_or("no includes")?
        .iter()
        .map(|i| {
            let actor = i["actor"].as_str().unwrap_or("?").to_owned();
            (actor, i["records"].as_u64().unwrap_or(0))
        })
        .collect();
    Ok((votes, json["total"].as_i64().ok_or("no total")?, records))
}

/// Waits until every node shows the same votes and records twice in a row, and `accept`
/// likes them; returns the votes per option.
fn wait_converged(
    nodes: &[NodeProcess],
    what: &str,
    accept: impl Fn(&[i64], i64) -> bool,
) -> Vec<i64> {
    let started = Instant::now();
    let mut agreed_once = false;
    loop {
        let views: Vec<_> = nodes.iter().map(|n| view(n.spec.http)).collect();
        let agree = views[0].as_ref().ok().is_some_and(|first| {
            views
                .iter()
                .all(|v| v.as_ref().is_ok_and(|v| v.0 == first.0 && v.2 == first.2))
                && accept(&first.0, first.1)
        });
        if agree && agreed_once {
            eprintln!(
                "{what}: converged in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            return views[0].as_ref().unwrap().0.clone();
        }
        agreed_once = agree;
        assert!(
            started.elapsed() < CONVERGE_WAIT,
            "{what}: no convergence within {CONVERGE_WAIT:?}: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that `node` holds every vote of `votes` for its option.
fn assert_holds(node: &NodeProcess, votes: &[(&String, &usize)]) {
    let mut client = Client::connect(node.spec.http).unwrap();
    for chunk in votes.chunks(LOOKUP_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let body = serde_json::json!({ "vote_ids": ids }).to_string();
        let (status, _, answer) = client
            .request_with_headers(
                "POST",
                "/v1/admin/polls/superbowl/lookup",
                "authorization: Bearer audit\r\n",
                &body,
            )
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        for ((id, option), looked_up) in chunk.iter().zip(answer["votes"].as_array().unwrap()) {
            assert_eq!(
                looked_up["option"].as_str(),
                Some(OPTIONS[**option]),
                "{} lost or miscounted acknowledged vote {id}: {looked_up}",
                node.spec.name
            );
        }
    }
}

#[test]
fn votes_through_three_edges_survive_an_edge_and_a_node_sigkilled_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<NodeId> = NAMES.iter().map(|n| NodeId::new(*n).unwrap()).collect();
    let certs = generate_dev_cluster(&dir.path().join("certs"), &ids).unwrap();
    let peer_listen: Vec<SocketAddr> = NAMES.iter().map(|_| free_udp_address()).collect();
    let specs: Vec<NodeSpec> = (0..NAMES.len())
        .map(|i| {
            let files = certs.node(&ids[i]).unwrap();
            NodeSpec {
                name: NAMES[i].to_owned(),
                http: free_tcp_address(),
                peer_listen: peer_listen[i],
                peers: (0..NAMES.len())
                    .filter(|&j| j != i)
                    .map(|j| (NAMES[j].to_owned(), peer_listen[j]))
                    .collect(),
                dir: dir.path().join(NAMES[i]),
                ca: certs.ca_cert.clone(),
                cert: files.cert.clone(),
                key: files.key.clone(),
                extra: NODE_SETTINGS.to_owned(),
            }
        })
        .collect();
    let mut nodes: Vec<NodeProcess> = specs.iter().map(NodeSpec::spawn).collect();
    let deadline = Instant::now() + READY_WAIT;
    for node in &mut nodes {
        node.wait_ready(deadline);
    }
    // Each region's edge sends to its own node first, then to the other regions'.
    let mut edges: Vec<EdgeProcess> = (0..NAMES.len())
        .map(|i| {
            let upstreams: Vec<SocketAddr> = (0..NAMES.len())
                .map(|k| specs[(i + k) % NAMES.len()].http)
                .collect();
            EdgeProcess::spawn(NAMES[i], &upstreams, &dir.path().join("edges"), &[])
        })
        .collect();
    for edge in &mut edges {
        edge.wait_ready(deadline);
    }
    let addresses: Vec<SocketAddr> = edges.iter().map(|e| e.http).collect();

    let ledger: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let voters: Vec<_> = (0..VOTERS)
        .map(|i| {
            let (addresses, ledger, stop) = (addresses.clone(), ledger.clone(), stop.clone());
            std::thread::spawn(move || voter(i, addresses, ledger, stop))
        })
        .collect();
    let kill_by = Instant::now() + Duration::from_secs(60);
    while ledger.lock().unwrap().acknowledged.len() < ACKNOWLEDGED_BEFORE_KILL {
        assert!(
            Instant::now() < kill_by,
            "too few votes acknowledged before the kills"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    edges[KILLED_EDGE].process.kill();
    nodes[KILLED_NODE].kill();
    std::thread::sleep(AFTER_KILL);
    nodes[KILLED_NODE] = specs[KILLED_NODE].spawn();
    nodes[KILLED_NODE].wait_ready(Instant::now() + READY_WAIT);
    std::thread::sleep(AFTER_KILL);
    stop.store(true, Ordering::Relaxed);
    for voter in voters {
        voter.join().unwrap();
    }

    let (acknowledged, unanswered, retried) = {
        let ledger = ledger.lock().unwrap();
        assert!(
            ledger.unexpected.is_empty(),
            "unexpected answers: {:?}",
            ledger.unexpected
        );
        let acknowledged: Vec<(String, usize)> = ledger
            .acknowledged
            .iter()
            .map(|id| (id.clone(), ledger.sent[id]))
            .collect();
        let unanswered: Vec<(String, usize)> = ledger
            .sent
            .iter()
            .filter(|(id, _)| !ledger.acknowledged.contains(*id))
            .map(|(id, option)| (id.clone(), *option))
            .collect();
        (acknowledged, unanswered, ledger.retried)
    };
    eprintln!(
        "{} votes acknowledged through the edges, {} unanswered, {retried} retries at another edge",
        acknowledged.len(),
        unanswered.len()
    );
    assert!(retried > 0, "the kills sent no vote to another edge");
    // No acknowledged vote is lost: once converged, every node holds every one of them.
    wait_converged(&nodes, "after the kills", |_, total| {
        total >= acknowledged.len() as i64
    });
    let pairs: Vec<(&String, &usize)> = acknowledged.iter().map(|(id, o)| (id, o)).collect();
    for node in &nodes {
        assert_holds(node, &pairs);
    }
    // Resolve the unanswered votes (they may or may not have been counted) by sending them
    // again, same IDs, through the living edges.
    let living: Vec<SocketAddr> = (0..NAMES.len())
        .filter(|&i| i != KILLED_EDGE)
        .map(|i| addresses[i])
        .collect();
    let mut clients: Vec<Option<Client>> = living.iter().map(|_| None).collect();
    for (id, option) in &unanswered {
        assert!(
            vote_until_acknowledged(&living, &mut clients, 0, id, *option, &ledger),
            "vote {id} never acknowledged"
        );
    }
    let sent = ledger.lock().unwrap().sent.clone();
    let mut expected = vec![0i64; OPTIONS.len()];
    for option in sent.values() {
        expected[*option] += 1;
    }
    let votes = wait_converged(&nodes, "exactly once", |votes, _| {
        votes == expected.as_slice()
    });
    assert_eq!(
        votes, expected,
        "every node counts every distinct vote ID once"
    );
}
