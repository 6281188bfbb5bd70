//! Operations tests of the real binary and the deployment files (issue 8):
//! - SIGTERM: the node stops accepting, lets a request already in flight finish, closes one
//!   that outlives the drain deadline, fsyncs, tells its peer goodbye, and exits 0; the vote
//!   it answered survives the restart.
//! - Prometheus: a real Prometheus server (Debian's `prometheus`) on 127.0.0.1 scrapes two
//!   real nodes, ingests every metric they expose, and loads every alert rule of
//!   `deploy/prometheus/alerts.yml` healthy; every metric the rules and the Grafana dashboard
//!   name is one the node exports.
//! - The Kubernetes ConfigMap's `tally.toml` is a valid node config for every pod.
//! - Huge pages: the binary re-executes itself with `glibc.malloc.hugetlb=1` (same PID),
//!   unless `TALLY_HUGE_PAGES=0` or the operator's own `GLIBC_TUNABLES` says otherwise.
//!
//! Every wait has a deadline and says what it waited for; processes are killed by Drop guards.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/edge.rs"]
mod edge;
#[path = "kit/http.rs"]
mod http;
#[path = "kit/node.rs"]
mod node;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/proxy.rs"]
#[allow(dead_code)] // this test only cuts and heals
mod proxy;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally::certs::generate_dev_cluster;
use tally_core::NodeId;
use tally_node::config::{AckMode, Config, TlsFiles};
use tally_node::peer::transport::IDLE_TIMEOUT_MS;

use http::{Client, metric, request_once};
use node::{NodeProcess, NodeSpec};
use process::{Process, free_tcp_address, free_udp_address, tally};
use proxy::UdpProxy;

/// Longest wait for a node to become ready, or to exit after SIGTERM.
const PROCESS_WAIT: Duration = Duration::from_secs(30);
/// The stopping node's drain deadline in these tests.
const DRAIN_MS: u64 = 2_000;

/// The repository's root (the tests run with the package directory as working directory).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The two links between `a` and `b`, each through a proxy a test can cut.
struct Links {
    a_to_b: UdpProxy,
    b_to_a: UdpProxy,
}

impl Links {
    /// Cuts (or heals) both: a node pulls over any session, whichever side dialled it, so
    /// keeping `b` from catching up means cutting the session `a` dials too.
    fn cut(&self, cut: bool) {
        for proxy in [&self.a_to_b, &self.b_to_a] {
            if cut { proxy.cut() } else { proxy.heal() }
        }
    }
}

/// Two nodes, `a` and `b`, peers of each other, with `extra` TOML settings; each dials the
/// other through one of the returned proxies.
fn two_nodes(dir: &Path, extra: &str) -> (Vec<NodeProcess>, Links) {
    let names = ["ops-a", "ops-b"];
    let ids: Vec<NodeId> = names.iter().map(|n| NodeId::new(*n).unwrap()).collect();
    let certs = generate_dev_cluster(&dir.join("certs"), &ids).unwrap();
    let peer_listen: Vec<SocketAddr> = names.iter().map(|_| free_udp_address()).collect();
    let links = Links {
        a_to_b: UdpProxy::start(peer_listen[1]).unwrap(),
        b_to_a: UdpProxy::start(peer_listen[0]).unwrap(),
    };
    let dial = [links.a_to_b.address(), links.b_to_a.address()];
    let mut nodes: Vec<NodeProcess> = (0..2)
        .map(|i| {
            let files = certs.node(&ids[i]).unwrap();
            NodeSpec {
                name: names[i].to_owned(),
                http: free_tcp_address(),
                peer_listen: peer_listen[i],
                peers: vec![(names[1 - i].to_owned(), dial[i])],
                dir: dir.join(names[i]),
                ca: certs.ca_cert.clone(),
                cert: files.cert.clone(),
                key: files.key.clone(),
                extra: extra.to_owned(),
            }
            .spawn()
        })
        .collect();
    let deadline = Instant::now() + PROCESS_WAIT;
    for node in &mut nodes {
        node.wait_ready(deadline);
    }
    (nodes, links)
}

fn metrics_of(address: SocketAddr) -> String {
    let (status, body) = request_once(address, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until `node` reports its sync session with `peer` as `connected` (1 or 0).
fn wait_peer_connected(node: SocketAddr, peer: &str, connected: f64, within: Duration) {
    let labels = format!("{{peer=\"{peer}\"}}");
    let deadline = Instant::now() + within;
    loop {
        let value = metric(&metrics_of(node), "tally_peer_connected", &labels);
        if value == connected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} still reports tally_peer_connected{labels} = {value}, not {connected}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A vote request whose head and first half of the body are sent; the rest waits.
struct HalfSentVote {
    stream: TcpStream,
    rest: String,
}

impl HalfSentVote {
    /// Proves the connection is served (a whole request first), then sends half a vote.
    fn start(address: SocketAddr, vote_id: &str) -> Self {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(http::REQUEST_TIMEOUT))
            .unwrap();
        let mut served = Client::connect(address).unwrap();
        assert_eq!(served.request("GET", "/healthz", "").unwrap().0, 200);
        let body = format!(r#"{{"option":"green","vote_id":"{vote_id}"}}"#);
        let (first, rest) = body.split_at(body.len() / 2);
        let head = format!(
            "POST /v1/polls/superbowl/votes HTTP/1.1\r\nhost: test\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{first}",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        Self {
            stream,
            rest: rest.to_owned(),
        }
    }

    /// Sends the rest of the body and reads the whole answer (the node closes after it).
    fn finish(mut self) -> String {
        self.stream.write_all(self.rest.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = self.stream.read_to_string(&mut answer);
        answer
    }
}

/// Goal: SIGTERM is an orderly stop. Method: two peers; two votes half-sent to `a`; SIGTERM
/// `a`; it must refuse new connections, answer the vote whose body then completes, give up
/// on the one that never completes once the drain deadline passes, exit 0, and close its
/// peer session so `b` sees an orderly close well before QUIC's idle timeout would tell it.
#[test]
fn sigterm_drains_in_flight_requests_says_goodbye_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("sync_tick_ms = 50\nshutdown_drain_ms = {DRAIN_MS}\n");
    let (mut nodes, _links) = two_nodes(dir.path(), &extra);
    let (a, b) = (nodes[0].spec.http, nodes[1].spec.http);
    wait_peer_connected(b, "ops-a", 1.0, PROCESS_WAIT);

    let finishing = HalfSentVote::start(a, "drain-finishes");
    let stalled = HalfSentVote::start(a, "drain-stalls");
    // The node must have read both heads before it is told to stop; nothing here measures
    // time, this only orders the two events.
    std::thread::sleep(Duration::from_millis(500));
    let stop_sent = Instant::now();
    nodes[0].terminate();

    let deadline = Instant::now() + PROCESS_WAIT;
    while TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = finishing.finish();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains(r#""status":"counted""#),
        "the in-flight vote was not answered: {answer:?}"
    );
    let status = nodes[0].wait_exit(Instant::now() + PROCESS_WAIT);
    assert!(status.success(), "exit status {status} after SIGTERM");
    assert!(
        stop_sent.elapsed() >= Duration::from_millis(DRAIN_MS),
        "exited before the stalled request's drain deadline"
    );
    drop(stalled);
    let log = nodes[0].log();
    assert!(log.contains("drain deadline"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");

    // Without the goodbye, b would learn of the stop only from the idle timeout.
    let goodbye_within = Duration::from_millis(u64::from(IDLE_TIMEOUT_MS) / 2);
    wait_peer_connected(
        b,
        "ops-a",
        0.0,
        goodbye_within.saturating_sub(stop_sent.elapsed()),
    );
    let b_log = nodes[1].log();
    assert!(
        b_log
            .lines()
            .any(|l| l.contains("peer session closed") && l.contains("ops-a")),
        "b did not see an orderly close: {b_log}"
    );

    let mut restarted = nodes[0].spec.spawn();
    restarted.wait_ready(Instant::now() + PROCESS_WAIT);
    let mut client = Client::connect(a).unwrap();
    for (vote_id, expected) in [("drain-finishes", "duplicate"), ("drain-stalls", "counted")] {
        let body = format!(r#"{{"option":"green","vote_id":"{vote_id}"}}"#);
        let (status, answer) = client
            .request("POST", "/v1/polls/superbowl/votes", &body)
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer.contains(&format!(r#""status":"{expected}""#)),
            "{vote_id}: expected {expected}, got {answer}"
        );
    }
}

fn results_total(address: SocketAddr) -> i64 {
    let results = http::get_json(address, "/v1/polls/superbowl/results").unwrap();
    results["total"].as_i64().unwrap()
}

/// Goal: a starting node is not ready (so no load balancer sends it voters) until it holds
/// what its peers hold. Method: stop `b`, give `a` votes, restart `b` with its links to `a`
/// cut (both ways: `b` would also catch up over the session `a` dials): it must stay not ready
/// while cut (its catch-up timeout is far off); heal the links: it turns ready, and when it
/// does, it lacks none of `a`'s records.
#[test]
fn a_starting_node_is_not_ready_until_it_has_caught_up_with_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 120000\n";
    let (mut nodes, links) = two_nodes(dir.path(), extra);
    let (a, b) = (nodes[0].spec.http, nodes[1].spec.http);
    nodes[1].terminate();
    assert!(nodes[1].wait_exit(Instant::now() + PROCESS_WAIT).success());
    let mut client = Client::connect(a).unwrap();
    const VOTES: usize = 5_000;
    for batch in 0..VOTES / 1_000 {
        let votes: Vec<String> = (0..1_000)
            .map(|i| format!(r#"{{"option":"green","vote_id":"catch-up-{batch}-{i}"}}"#))
            .collect();
        let body = format!(r#"{{"votes":[{}]}}"#, votes.join(","));
        let (status, answer) = client
            .request("POST", "/v1/polls/superbowl/votes/batch", &body)
            .unwrap();
        assert_eq!(status, 200, "{answer}");
    }

    links.cut(true);
    nodes[1] = nodes[1].spec.spawn();
    let cut_until = Instant::now() + Duration::from_secs(3);
    let mut answered_while_cut = 0;
    while Instant::now() < cut_until {
        if let Ok((status, body)) = request_once(b, "GET", "/readyz", "") {
            assert_eq!(status, 503, "ready before catching up: {body}");
            answered_while_cut += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered_while_cut > 0, "b never answered /readyz while cut");

    links.cut(false);
    nodes[1].wait_ready(Instant::now() + PROCESS_WAIT);
    let behind = metric(
        &metrics_of(b),
        "tally_peer_records_behind",
        "{peer=\"ops-a\"}",
    );
    assert_eq!(behind, 0.0, "ready while {behind} records behind");
    let deadline = Instant::now() + Duration::from_secs(5);
    while results_total(b) != VOTES as i64 {
        assert!(
            Instant::now() < deadline,
            "b shows {} of {VOTES} votes after reporting ready",
            results_total(b)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Prometheus server on 127.0.0.1, killed when dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- prometheus log ----\n{log}");
        }
    }
}

impl Prometheus {
    /// Starts `prometheus` scraping `targets` every second with the repository's rules.
    fn start(dir: &Path, targets: &[SocketAddr]) -> Self {
        let rules = repo_root().join("deploy/prometheus/alerts.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let address = free_tcp_address();
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `prometheus` ({e}): install Debian's package `prometheus` \
                     (scripts/test.sh does so when run as root)"
                )
            });
        Self {
            child,
            address,
            log,
        }
    }

    /// `GET path` over HTTP/1.0 (so the answer is not chunked); its JSON `data`.
    fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let mut stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(http::REQUEST_TIMEOUT))
            .map_err(|e| e.to_string())?;
        write!(stream, "GET {path} HTTP/1.0\r\nhost: prometheus\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        let body = answer
            .split_once("\r\n\r\n")
            .ok_or("no HTTP body")?
            .1
            .to_owned();
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{path}: {body}"));
        }
        Ok(json["data"].clone())
    }

    /// Waits until `check` accepts the answer to `path`; panics naming `what` at the deadline.
    fn wait_for(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.api(path);
            if let Ok(data) = &answer {
                if check(data) {
                    return data.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: {what}; last answer to {path}: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Sample names in a Prometheus text exposition (`name{labels} value` → `name`).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every sample name the node's registered families can produce, from the `# TYPE` lines
/// (which are there even for a family with no samples yet).
fn declared_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        }
    }
    names
}

/// Every `tally_…` metric name mentioned in `text`.
fn tally_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("tally_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let preceded_by_word = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !preceded_by_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Goal: what operators deploy works against the real node and edge. Method: two real nodes
/// (so peer metrics exist) and an edge in front of them take votes and one bad vote; a real
/// Prometheus scrapes all three every second with the repository's alert rules; every sample
/// they expose must be ingested, every rule must load and evaluate healthy, and every metric
/// the rules and the Grafana dashboard mention must be one the node or the edge declares.
#[test]
fn prometheus_scrapes_every_metric_and_evaluates_every_alert_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _links) = two_nodes(dir.path(), "sync_tick_ms = 50\n");
    let addresses: Vec<SocketAddr> = nodes.iter().map(|n| n.spec.http).collect();
    for (i, address) in addresses.iter().enumerate() {
        let mut client = Client::connect(*address).unwrap();
        for vote in 0..20 {
            let body = format!(r#"{{"option":"blue","vote_id":"ops-{i}-{vote}"}}"#);
            let (status, answer) = client
                .request("POST", "/v1/polls/superbowl/votes", &body)
                .unwrap();
            assert_eq!(status, 200, "{answer}");
        }
        let (status, _) = client
            .request(
                "POST",
                "/v1/polls/superbowl/votes",
                r#"{"option":"purple","vote_id":"ops-bad"}"#,
            )
            .unwrap();
        assert_eq!(status, 422);
    }
    wait_peer_connected(addresses[0], "ops-b", 1.0, PROCESS_WAIT);
    let mut edge = edge::EdgeProcess::spawn("ops-edge", &addresses, dir.path(), &[]);
    edge.wait_ready(Instant::now() + PROCESS_WAIT);
    let mut client = Client::connect(edge.http).unwrap();
    for vote in 0..5 {
        let body = format!(r#"{{"option":"green","vote_id":"ops-edge-{vote}"}}"#);
        let (status, answer) = client
            .request("POST", "/v1/polls/superbowl/votes", &body)
            .unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    let bad = r#"{"option":"purple","vote_id":"ops-edge-bad"}"#;
    let (status, _) = client
        .request("POST", "/v1/polls/superbowl/votes", bad)
        .unwrap();
    assert_eq!(status, 422, "refused at the edge's door");
    let mut addresses = addresses;
    addresses.push(edge.http);
    let exposed: Vec<String> = addresses.iter().map(|a| metrics_of(*a)).collect();

    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    let prometheus = Prometheus::start(&prometheus_dir, &addresses);
    let targets = prometheus.wait_for("/api/v1/targets", "nodes and edge scraped", |data| {
        let active = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        active.len() == 3 && active.iter().all(|t| t["health"] == "up")
    });
    for target in targets["activeTargets"].as_array().unwrap() {
        assert_eq!(target["lastError"], "", "scrape error: {target}");
    }

    let mut expected = BTreeSet::new();
    for text in &exposed {
        expected.extend(sample_names(text));
    }
    assert!(expected.contains("tally_votes_total"), "{expected:?}");
    assert!(
        expected.contains("tally_peer_seconds_behind"),
        "{expected:?}"
    );
    let names = prometheus.wait_for(
        "/api/v1/label/__name__/values",
        "every exposed metric ingested",
        |data| {
            let held: BTreeSet<String> = data
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            expected.is_subset(&held)
        },
    );
    assert!(!names.as_array().unwrap().is_empty());

    let rules_file =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    let alert_count = rules_file.matches("- alert:").count();
    assert!(alert_count >= 5, "{alert_count} alerts");
    prometheus.wait_for("/api/v1/rules", "every rule evaluated healthy", |data| {
        let rules: Vec<&serde_json::Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules.len() == alert_count
            && rules
                .iter()
                .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
    });

    let mut declared = declared_names(&exposed[0]);
    declared.extend(declared_names(&exposed[2]));
    assert!(
        declared.contains("tally_edge_votes_received_total"),
        "{declared:?}"
    );
    let dashboard = std::fs::read_to_string(repo_root().join("deploy/grafana/tally.json")).unwrap();
    for (file, text) in [("alerts.yml", &rules_file), ("tally.json", &dashboard)] {
        let mentioned = tally_names_in(text);
        assert!(mentioned.len() >= 5, "{file} mentions {mentioned:?}");
        let unknown: Vec<&String> = mentioned.difference(&declared).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the node and edge do not export: {unknown:?}"
        );
    }
}

/// Goal: the ConfigMap operators apply is a config the node accepts. Method: take
/// `tally.toml` out of deploy/kubernetes/configmap.yaml, add what the StatefulSet sets per
/// pod (node ID, certificate files), and validate it for each pod; each pod syncs with
/// every other node listed but not with itself, and its ack peer is the region's other pod.
#[test]
fn the_kubernetes_config_map_is_a_valid_config_for_every_pod() {
    let manifest =
        std::fs::read_to_string(repo_root().join("deploy/kubernetes/configmap.yaml")).unwrap();
    let (_, embedded) = manifest.split_once("tally.toml: |\n").unwrap();
    let toml: String = embedded
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    let listed: Config = toml::from_str(&toml).unwrap();
    assert!(listed.peers.len() >= 3, "{toml}");
    for (pod, other) in [
        ("tally-us-east-0", "tally-us-east-1"),
        ("tally-us-east-1", "tally-us-east-0"),
    ] {
        let config = Config {
            node_id: pod.to_owned(),
            tls: Some(TlsFiles::in_dir(Path::new("/etc/tally/tls"), pod)),
            ..listed.clone()
        };
        config.validate().unwrap();
        let others: Vec<&str> = config.other_peers().map(|p| p.id.as_str()).collect();
        assert_eq!(others.len(), config.peers.len() - 1, "{others:?}");
        assert!(!others.contains(&pod));
        assert_eq!(config.data_dir, Path::new("/var/lib/tally"));
        assert_eq!(config.ack_mode, AckMode::Replicated);
        let ack_peers: Vec<String> = config
            .ack_peer_ids()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(ack_peers, [other], "{pod}");
    }
}

/// Goal: the edges' ConfigMap is a config `tally edge` accepts. Method: take `edge.toml` out
/// of deploy/kubernetes/edge-configmap.yaml, add what the Deployment sets from the Secret
/// (the batch token), and validate it.
#[test]
fn the_kubernetes_edge_config_map_is_a_valid_edge_config() {
    let manifest =
        std::fs::read_to_string(repo_root().join("deploy/kubernetes/edge-configmap.yaml")).unwrap();
    let (_, embedded) = manifest.split_once("edge.toml: |\n").unwrap();
    let toml: String = embedded
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    let mut config: tally_edge::EdgeConfig = toml::from_str(&toml).unwrap();
    config.batch_token = "from-the-secret".into();
    let validated = config.validate().unwrap();
    assert!(validated.upstreams.len() >= 3, "{toml}");
    assert!(!validated.trusted_proxies.is_empty());
    assert!(config.vote_deadline_ms < tally_client::ATTEMPT_TIMEOUT_MS_DEFAULT);
}

/// A `tally run` started with `env` (on top of this process's environment, minus any
/// `GLIBC_TUNABLES` and `TALLY_HUGE_PAGES`), killed on drop.
struct PlainNode(Process);

impl PlainNode {
    fn start(address: SocketAddr, env: &[(&str, &str)]) -> Self {
        let mut command = tally();
        command
            .args(["run", "--memory-only", "--listen", &address.to_string()])
            .env_remove("GLIBC_TUNABLES")
            .env_remove("TALLY_HUGE_PAGES")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut node = Self(Process::spawn(&mut command, &format!("node on {address}")));
        node.0
            .expect_ready(address, Instant::now() + Duration::from_secs(20));
        node
    }

    /// The environment the process runs with now (after any re-execution: same PID).
    fn environment(&self) -> Vec<String> {
        let raw = std::fs::read(format!("/proc/{}/environ", self.0.id())).unwrap();
        raw.split(|&b| b == 0)
            .map(|kv| String::from_utf8_lossy(kv).into_owned())
            .collect()
    }
}

#[test]
fn the_binary_re_executes_itself_with_huge_pages_unless_told_not_to() {
    // Goal: started without the tunable, the same process (same PID) ends up running with
    // `glibc.malloc.hugetlb=1` and serves; with TALLY_HUGE_PAGES=0 or the operator's own
    // GLIBC_TUNABLES it runs as started.
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    let kernel_has_thp = thp.as_ref().is_ok_and(|mode| !mode.contains("[never]"));
    let tunable = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1".to_string();

    let node = PlainNode::start(free_tcp_address(), &[]);
    assert_eq!(
        node.environment().contains(&tunable),
        kernel_has_thp,
        "huge pages on exactly when the kernel offers them (mode: {thp:?})"
    );
    drop(node);

    let opted_out = PlainNode::start(free_tcp_address(), &[("TALLY_HUGE_PAGES", "0")]);
    let environment = opted_out.environment();
    assert!(
        !environment
            .iter()
            .any(|kv| kv.starts_with("GLIBC_TUNABLES="))
    );
    drop(opted_out);

    let operators = "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0";
    let chosen = PlainNode::start(free_tcp_address(), &[("GLIBC_TUNABLES", operators)]);
    // glibc itself may drop a tunable set to its default from the variable it shows in
    // /proc, so check only that the process was not re-executed with ours added.
    let tunables = chosen
        .environment()
        .into_iter()
        .find(|kv| kv.starts_with("GLIBC_TUNABLES="))
        .unwrap_or_default();
    assert!(
        tunables.contains("glibc.malloc.arena_max=2") && !tunables.contains("hugetlb=1"),
        "the operator's tunables are left as they are: {tunables}"
    );
}
