//! Settings that must agree across regions are checked, not trusted (issue 31), on real
//! `tally run` processes peered over QUIC with mutual TLS on 127.0.0.1:
//!
//! - a poll whose options one region lists in another order: no node ever shows a green vote
//!   as blue, the losing node refuses the poll and says why (503 `poll_disputed`, `/readyz`,
//!   metrics, one log line), and fixing its configuration and restarting it heals it with every
//!   acknowledged vote under the option it was cast for; with two nodes, and with three where
//!   the mismatch is relayed through the middle one;
//! - two nodes with different `vote_id_key`s refuse each other's sessions and say why; with
//!   the same key, a non-UUID key retried at the other node counts once;
//! - a one-sided peer list (A lists B, B lists nobody): both end with every acknowledged vote;
//! - a poll's index reservation (`expected_votes`) made at one node reaches every node
//!   (issue 25), relayed, and the largest wins.
//!
//! Links that must start cut run through a UDP proxy (`kit/proxy.rs`). Every wait has a
//! deadline and says what it waited for; every process is SIGKILLed by a Drop guard, and a
//! failing test prints the tail of each node's log.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
mod http;
#[path = "kit/node.rs"]
mod node;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tally::certs::generate_dev_cluster;
use tally_core::NodeId;

use http::{Client, get_json, request_once};
use node::{NodeProcess, NodeSpec};
use process::{free_tcp_address, free_udp_address};
use proxy::UdpProxy;

/// The admin token of every node here (the vote lookup needs it).
const ADMIN_TOKEN: &str = "agreement-test-token";
/// Quick sync and reporting, and a short wait for peers that are cut off at the start.
const FAST_SYNC: &str = "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 2000\n";
/// Two vote ID keys (64 hex digits each).
const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";
/// The longest any wait here may take (a cut link's reconnect backoff is at most 5 s).
const WAIT: Duration = Duration::from_secs(30);

/// One node of a test cluster, as its configuration file says.
#[derive(Debug, Clone)]
struct Region {
    name: &'static str,
    /// The poll `superbowl`'s options, in order.
    options: [&'static str; 2],
    vote_id_key: &'static str,
    /// Indexes of the nodes it lists as peers.
    lists: Vec<usize>,
}

impl Region {
    fn new(name: &'static str, options: [&'static str; 2], lists: &[usize]) -> Self {
        Self {
            name,
            options,
            vote_id_key: KEY_A,
            lists: lists.to_vec(),
        }
    }

    fn extra(&self) -> String {
        format!(
            "{FAST_SYNC}admin_token = {ADMIN_TOKEN:?}\nvote_id_key = {:?}\n\n[[polls]]\n\
             id = \"superbowl\"\noptions = [{:?}, {:?}]\n",
            self.vote_id_key, self.options[0], self.options[1]
        )
    }
}

/// The processes, and a proxy for every listed link (node → peer). Fields drop in order:
/// processes are killed before their directory is removed.
struct Cluster {
    nodes: Vec<NodeProcess>,
    proxies: BTreeMap<(usize, usize), UdpProxy>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts every region, with the links of `cut` (node indexes) cut both ways from the
    /// start; waits until each serves HTTP and counts votes as far as its clock goes (not for
    /// readiness: a loser is never ready).
    fn start(regions: &[Region], cut: &[usize]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<NodeId> = regions
            .iter()
            .map(|r| NodeId::new(r.name).unwrap())
            .collect();
        let certs = generate_dev_cluster(&dir.path().join("certs"), &ids).unwrap();
        let peer_listen: Vec<SocketAddr> = regions.iter().map(|_| free_udp_address()).collect();
        let mut proxies = BTreeMap::new();
        for (from, region) in regions.iter().enumerate() {
            for &to in &region.lists {
                let proxy = UdpProxy::start(peer_listen[to]).unwrap();
                if cut.contains(&from) || cut.contains(&to) {
                    proxy.cut();
                }
                proxies.insert((from, to), proxy);
            }
        }
        let nodes = regions
            .iter()
            .enumerate()
            .map(|(i, region)| {
                let files = certs.node(&ids[i]).unwrap();
                NodeSpec {
                    name: region.name.to_owned(),
                    http: free_tcp_address(),
                    peer_listen: peer_listen[i],
                    peers: region
                        .lists
                        .iter()
                        .map(|&j| (regions[j].name.to_owned(), proxies[&(i, j)].address()))
                        .collect(),
                    dir: dir.path().join(region.name),
                    ca: certs.ca_cert.clone(),
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    extra: region.extra(),
                }
                .spawn()
            })
            .collect();
        let cluster = Self {
            nodes,
            proxies,
            _dir: dir,
        };
        for node in 0..regions.len() {
            cluster.wait_serving(node);
        }
        for node in 0..regions.len() {
            cluster.wait_clock_checked(node);
        }
        cluster
    }

    fn http(&self, node: usize) -> SocketAddr {
        self.nodes[node].spec.http
    }

    /// Heals every link of `node`.
    fn heal(&self, node: usize) {
        for ((from, to), proxy) in &self.proxies {
            if *from == node || *to == node {
                proxy.heal();
            }
        }
    }

    fn wait_serving(&self, node: usize) {
        let deadline = Instant::now() + WAIT;
        while request_once(self.http(node), "GET", "/readyz", "").is_err() {
            assert!(
                Instant::now() < deadline,
                "{} never served HTTP",
                self.nodes[node].spec.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `node` no longer holds for its clock (issue 27: a node with peers stamps no
    /// vote until a peer has checked its clock, or none answered for `catch_up_timeout_ms`).
    fn wait_clock_checked(&self, node: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, readyz) = request_once(self.http(node), "GET", "/readyz", "").unwrap();
            if !readyz.contains("clock_skew") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} kept holding for its clock: {readyz}",
                self.nodes[node].spec.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills `node` and starts it again on its data directory with `region`'s configuration.
    fn restart(&mut self, node: usize, region: &Region) {
        self.nodes[node].kill();
        let mut spec = self.nodes[node].spec.clone();
        spec.extra = region.extra();
        self.nodes[node] = spec.spawn();
        self.wait_serving(node);
    }

    /// Waits until `check` holds for `node`'s results, checking on every read that no node
    /// shows a vote for blue (every vote of these tests is cast for green).
    fn wait_results(&self, node: usize, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let results = self.no_blue_anywhere();
            if check(&results[node]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} never happened; its results: {}",
                self.nodes[node].spec.name,
                results[node]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node's results; panics if any shows a vote for blue.
    fn no_blue_anywhere(&self) -> Vec<serde_json::Value> {
        (0..self.nodes.len())
            .map(|node| {
                let results = get_json(self.http(node), "/v1/polls/superbowl/results").unwrap();
                let counts = by_name(&results);
                assert_eq!(
                    counts.get("blue").copied(),
                    Some(0),
                    "{} shows a green vote as blue: {results}",
                    self.nodes[node].spec.name
                );
                results
            })
            .collect()
    }

    /// Waits until every node shows `green` votes for green (and none for blue).
    fn wait_green_everywhere(&self, green: i64) {
        for node in 0..self.nodes.len() {
            self.wait_results(node, &format!("{green} green votes"), |r| {
                by_name(r)["green"] == green
            });
        }
    }

    fn metric(&self, node: usize, name: &str, labels: &str) -> f64 {
        let (status, text) = request_once(self.http(node), "GET", "/metrics", "").unwrap();
        assert_eq!(status, 200);
        http::metric(&text, name, labels)
    }

    /// Lines of `node`'s log that hold every needle.
    fn log_lines(&self, node: usize, needles: &[&str]) -> usize {
        self.nodes[node]
            .log()
            .lines()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count()
    }

    /// Asks `node` which option each vote ID counts for.
    fn lookup(&self, node: usize, ids: &[String]) -> Vec<Option<String>> {
        let body = serde_json::json!({ "vote_ids": ids }).to_string();
        let (status, _, answer) = Client::connect(self.http(node))
            .unwrap()
            .request_with_headers(
                "POST",
                "/v1/admin/polls/superbowl/lookup",
                &format!("authorization: Bearer {ADMIN_TOKEN}\r\n"),
                &body,
            )
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        answer["votes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["option"].as_str().map(str::to_owned))
            .collect()
    }

    /// `POST /v1/admin/polls` at `node`: (status, body).
    fn create_poll(&self, node: usize, body: &serde_json::Value) -> (u16, String) {
        let (status, _, answer) = Client::connect(self.http(node))
            .unwrap()
            .request_with_headers(
                "POST",
                "/v1/admin/polls",
                &format!("authorization: Bearer {ADMIN_TOKEN}\r\n"),
                &body.to_string(),
            )
            .unwrap();
        (status, answer)
    }

    /// Waits until `node`'s dedupe index of `poll` is sized for at least `vote_ids` IDs and
    /// has finished growing to it.
    fn wait_reserved(&self, node: usize, poll: &str, vote_ids: u64) {
        let labels = format!("{{poll=\"{poll}\"}}");
        let deadline = Instant::now() + WAIT;
        loop {
            let capacity = self.metric(node, "tally_poll_vote_id_capacity", &labels);
            let growing = self.metric(node, "tally_poll_vote_id_growth", &labels);
            if capacity >= vote_ids as f64 && growing == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s index of {poll} holds {capacity} IDs (growing: {growing}), not {vote_ids}",
                self.nodes[node].spec.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every vote ID counts for green on every node.
    fn every_vote_green_everywhere(&self, ids: &[String]) {
        for node in 0..self.nodes.len() {
            let options = self.lookup(node, ids);
            for (id, option) in ids.iter().zip(options) {
                assert_eq!(
                    option.as_deref(),
                    Some("green"),
                    "{} counts {id} as {option:?}",
                    self.nodes[node].spec.name
                );
            }
        }
    }
}

/// Votes per option name in a results document.
fn by_name(results: &serde_json::Value) -> BTreeMap<String, i64> {
    results["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["votes"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Sends one vote for `option` with vote ID `id`; returns (status, body).
fn vote(address: SocketAddr, id: &str, option: &str) -> (u16, String) {
    let body = format!(r#"{{"option":"{option}","vote_id":"{id}"}}"#);
    request_once(address, "POST", "/v1/polls/superbowl/votes", &body).unwrap()
}

/// Casts `count` green votes at `address`, IDs `{prefix}-{i}`, each answered `counted`.
fn vote_green(address: SocketAddr, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let (status, body) = vote(address, &id, "green");
            assert_eq!(status, 200, "{id}: {body}");
            assert!(body.contains(r#""status":"counted""#), "{id}: {body}");
            id
        })
        .collect()
}

/// The node of `nodes` whose results say it refuses the poll; panics unless exactly one does.
fn the_refusing_node(cluster: &Cluster, nodes: &[usize]) -> usize {
    let refusing: Vec<usize> = nodes
        .iter()
        .copied()
        .filter(|&node| {
            let results = get_json(cluster.http(node), "/v1/polls/superbowl/results").unwrap();
            results["dispute"]["refusing_votes"] == true
        })
        .collect();
    assert_eq!(refusing.len(), 1, "exactly one node refuses: {refusing:?}");
    refusing[0]
}

/// What a losing node must show: votes refused with 503 `poll_disputed`, `/readyz` naming
/// the hold and the poll, the metrics, and one log line however many rounds pass.
fn check_the_loser_says_why(cluster: &Cluster, loser: usize, winner_options: &str) {
    let (status, body) = vote(cluster.http(loser), "refused-at-the-loser", "green");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""error":"poll_disputed""#), "{body}");
    let (status, readyz) = request_once(cluster.http(loser), "GET", "/readyz", "").unwrap();
    assert_eq!(status, 503, "{readyz}");
    assert!(readyz.contains("definition_disputed"), "{readyz}");
    assert!(
        readyz.contains("poll superbowl") && readyz.contains(winner_options),
        "{readyz}"
    );
    let lost = r#"{poll="superbowl"}"#;
    assert_eq!(
        cluster.metric(loser, "tally_poll_definition_lost", lost),
        1.0
    );
    // Rounds every 50 ms for a second: still one line about it.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        cluster.log_lines(loser, &["poll definitions disagree"]),
        1,
        "one line per dispute, not one per round"
    );
    assert_eq!(
        cluster.log_lines(loser, &["already exists with different options"]),
        0
    );
}

#[test]
fn a_reordered_poll_never_counts_a_green_vote_as_blue_and_a_config_fix_heals_it() {
    // Goal: issue 31's first scenario, on two real nodes. Method: us-east lists the options
    // [green, blue], us-west [blue, green]; with their link cut, ten green votes are counted
    // at each; then the link heals. Neither ever shows blue; exactly one refuses the poll and
    // says why; the other keeps counting. Then the loser's configuration is fixed to the
    // winner's order and it restarts: both show every vote as green.
    let mut regions = vec![
        Region::new("us-east", ["green", "blue"], &[1]),
        Region::new("us-west", ["blue", "green"], &[0]),
    ];
    let mut cluster = Cluster::start(&regions, &[0, 1]);
    let mut ids = vote_green(cluster.http(0), "east", 10);
    ids.extend(vote_green(cluster.http(1), "west", 10));
    cluster.heal(0);
    for node in 0..2 {
        cluster.wait_results(node, "the dispute", |r| r["dispute"].is_object());
    }
    let loser = the_refusing_node(&cluster, &[0, 1]);
    let winner = 1 - loser;
    let winner_options = format!("[{}]", regions[winner].options.join(", "));
    check_the_loser_says_why(&cluster, loser, &winner_options);
    let other = format!(r#"{{poll="superbowl",peer="{}"}}"#, regions[loser].name);
    assert_eq!(
        cluster.metric(winner, "tally_poll_definition_disputes", &other),
        1.0
    );
    for node in [winner, loser] {
        assert_eq!(by_name(&cluster.no_blue_anywhere()[node])["green"], 10);
    }
    ids.extend(vote_green(cluster.http(winner), "winner", 5));

    regions[loser].options = regions[winner].options;
    cluster.restart(loser, &regions[loser]);
    assert_eq!(
        cluster.log_lines(loser, &["configured poll redefined"]),
        1,
        "the restart says it renumbered the votes"
    );
    cluster.wait_green_everywhere(25);
    for node in 0..2 {
        cluster.nodes[node].wait_ready(Instant::now() + WAIT);
    }
    cluster.every_vote_green_everywhere(&ids);
}

#[test]
fn a_mismatch_relayed_through_a_third_node_is_refused_and_healed_the_same_way() {
    // Goal: the same with three nodes, where the two that disagree never talk directly.
    // Method: us-east and us-west list [green, blue], eu-central [blue, green]; us-east and
    // eu-central each list only us-west (which lists both). eu-central, cut off at first,
    // counts ten green votes; us-east and us-west ten each; then eu-central's links heal. It
    // loses 1 to 2, refuses and says why; us-east learns of it through us-west; nobody shows
    // blue. Fixed and restarted, it brings its ten votes in as green everywhere.
    let mut regions = vec![
        Region::new("us-east", ["green", "blue"], &[1]),
        Region::new("us-west", ["green", "blue"], &[0, 2]),
        Region::new("eu-central", ["blue", "green"], &[1]),
    ];
    let mut cluster = Cluster::start(&regions, &[2]);
    let mut ids = vote_green(cluster.http(2), "eu", 10);
    ids.extend(vote_green(cluster.http(0), "east", 10));
    ids.extend(vote_green(cluster.http(1), "west", 10));
    cluster.heal(2);
    cluster.wait_results(2, "the dispute", |r| r["dispute"]["refusing_votes"] == true);
    cluster.wait_results(0, "the relayed dispute", |r| {
        r["dispute"]["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|n| n == "eu-central"))
    });
    assert_eq!(the_refusing_node(&cluster, &[0, 1, 2]), 2);
    check_the_loser_says_why(&cluster, 2, "[green, blue]");
    let relayed = r#"{poll="superbowl",peer="eu-central"}"#;
    assert_eq!(
        cluster.metric(0, "tally_poll_definition_disputes", relayed),
        1.0,
        "us-east knows of eu-central's definition only through us-west"
    );
    cluster.wait_results(0, "us-west's votes", |r| by_name(r)["green"] == 20);
    assert_eq!(by_name(&cluster.no_blue_anywhere()[2])["green"], 10);

    regions[2].options = ["green", "blue"];
    cluster.restart(2, &regions[2]);
    cluster.wait_green_everywhere(30);
    for node in 0..3 {
        cluster.nodes[node].wait_ready(Instant::now() + WAIT);
    }
    cluster.every_vote_green_everywhere(&ids);
}

#[test]
fn nodes_with_different_vote_id_keys_refuse_each_other_and_with_one_key_a_retry_counts_once() {
    // Goal: issue 31's second scenario. Method: two nodes listing each other, with different
    // vote_id_keys: both refuse the sessions, name the cause in the log (once, though the
    // dial is retried every few seconds) and in the refusal metric. Then the second node is
    // given the first one's key and restarted: three voters with non-UUID keys vote at one
    // node and retry at the other, and each counts once on both.
    let mut regions = vec![
        Region::new("us-east", ["green", "blue"], &[1]),
        Region::new("us-west", ["green", "blue"], &[0]),
    ];
    regions[1].vote_id_key = KEY_B;
    let mut cluster = Cluster::start(&regions, &[]);
    let refused = |node: usize, peer: &str| {
        cluster.metric(
            node,
            "tally_peer_refusals_total",
            &format!(r#"{{peer="{peer}",cause="vote_id_key"}}"#),
        )
    };
    let deadline = Instant::now() + WAIT;
    while refused(0, "us-west") < 2.0 || refused(1, "us-east") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the sessions were not refused for the key, again and again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (node, peer) in [(0, "us-west"), (1, "us-east")] {
        let lines = cluster.log_lines(node, &["peer refused", peer, "vote_id_key"]);
        assert_eq!(lines, 1, "{}: one line for the cause", regions[node].name);
        assert_eq!(
            cluster.log_lines(node, &["set the same vote_id_key on every node"]),
            1
        );
        assert_eq!(
            cluster.metric(
                node,
                "tally_peer_connected",
                &format!(r#"{{peer="{peer}"}}"#)
            ),
            0.0
        );
    }

    regions[1].vote_id_key = KEY_A;
    cluster.restart(1, &regions[1]);
    for node in 0..2 {
        cluster.nodes[node].wait_ready(Instant::now() + WAIT);
    }
    let voters = ["voter-ann", "voter-bob", "voter-cy"];
    for voter in voters {
        let (status, body) = vote(cluster.http(0), voter, "green");
        assert!(status == 200 && body.contains("counted"), "{body}");
    }
    cluster.wait_green_everywhere(3);
    for voter in voters {
        let (status, body) = vote(cluster.http(1), voter, "green");
        assert!(status == 200 && body.contains("duplicate"), "{body}");
    }
    cluster.wait_green_everywhere(3);
}

#[test]
fn a_one_sided_peer_list_still_syncs_both_ways() {
    // Goal: issue 31's third scenario. Method: us-east lists us-west, us-west lists nobody;
    // votes at both (a batch each). Both end with every vote, us-west's results name us-east
    // as a peer it was not told of, and both are ready.
    let regions = vec![
        Region::new("us-east", ["green", "blue"], &[1]),
        Region::new("us-west", ["green", "blue"], &[]),
    ];
    let mut cluster = Cluster::start(&regions, &[]);
    for node in 0..2 {
        let batch: Vec<serde_json::Value> = (0..300)
            .map(|i| serde_json::json!({"option": "green", "vote_id": format!("n{node}-{i}")}))
            .collect();
        let body = serde_json::json!({ "votes": batch }).to_string();
        let (status, answer) = request_once(
            cluster.http(node),
            "POST",
            "/v1/polls/superbowl/votes/batch",
            &body,
        )
        .unwrap();
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains(r#""counted":300"#), "{answer}");
    }
    cluster.wait_green_everywhere(600);
    let west = get_json(cluster.http(1), "/v1/polls/superbowl/results").unwrap();
    let east = &west["peers"][0];
    assert_eq!(east["node"], "us-east", "{west}");
    assert_eq!(east["listed"], false, "{west}");
    assert_eq!(east["connected"], true, "{west}");
    for node in 0..2 {
        cluster.nodes[node].wait_ready(Instant::now() + WAIT);
    }
}

#[test]
fn an_admin_reservation_on_one_node_reaches_every_peer_and_the_largest_wins() {
    // Goal: issue 25 part 2: a poll's `expected_votes` travels with it, through a relay, and
    // a larger one is kept. Method: a line of three (us-east lists eu-west, eu-west lists
    // ap-south); create a poll with expected_votes 3M at us-east: every node's index ends
    // sized for 3M (and done growing), ap-south's through eu-west. Then the same poll with
    // 5M at ap-south: us-east ends at 5M, and 1M asked at us-east changes nothing anywhere.
    // Last, ap-south restarts cut off from its peer: its own log reserves 5M again.
    let regions = vec![
        Region::new("us-east", ["green", "blue"], &[1]),
        Region::new("eu-west", ["green", "blue"], &[2]),
        Region::new("ap-south", ["green", "blue"], &[]),
    ];
    let mut cluster = Cluster::start(&regions, &[]);
    let poll = |expected_votes: u64| {
        serde_json::json!({"id": "halftime", "options": ["yes", "no"], "open": true,
            "expected_votes": expected_votes})
    };
    let (status, answer) = cluster.create_poll(0, &poll(3_000_000));
    assert_eq!(status, 201, "{answer}");
    for node in 0..3 {
        cluster.wait_reserved(node, "halftime", 3_000_000);
    }
    assert_eq!(
        cluster.log_lines(2, &["reservation taken from a peer", "halftime"]),
        1,
        "ap-south takes the reservation once"
    );
    let (status, answer) = cluster.create_poll(2, &poll(5_000_000));
    assert_eq!(status, 200, "the definition is unchanged: {answer}");
    for node in 0..3 {
        cluster.wait_reserved(node, "halftime", 5_000_000);
    }
    let capacity = |cluster: &Cluster, node| {
        cluster.metric(node, "tally_poll_vote_id_capacity", "{poll=\"halftime\"}")
    };
    let before: Vec<f64> = (0..3).map(|node| capacity(&cluster, node)).collect();
    let (status, answer) = cluster.create_poll(0, &poll(1_000_000));
    assert_eq!(status, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<f64> = (0..3).map(|node| capacity(&cluster, node)).collect();
    assert_eq!(before, after, "a smaller reservation shrinks nothing");
    cluster.proxies[&(1, 2)].cut();
    let ap_south = regions[2].clone();
    cluster.restart(2, &ap_south);
    cluster.wait_reserved(2, "halftime", 5_000_000);
}
