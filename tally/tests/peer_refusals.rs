//! Refusals by a running node: one real `tally run` process with a peer configured, and the
//! test playing the other side of its QUIC peer port with hand-built endpoints.
//!
//! `peer_tls.rs` checks the certificate rules between bare endpoints; here the same rules and
//! the sync protocol's are checked against the node itself: what it closes, what it logs, what
//! its `tally_peer_refusals` metric says, and that a refused peer changes nothing it counts.
//! The node's configured peer `us-west` is a fake run by the test (`FakePeer`), so the test
//! also controls what the node *pulls*. Every await is bounded by [`STEP`].

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
mod http;
#[path = "kit/node.rs"]
mod node;
#[path = "kit/process.rs"]
mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use rustls::AlertDescription;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tally::certs::{ClusterFiles, DEV_CLUSTER_ID, generate_dev_cluster};
use tally_core::wire::{self, Hello, PROTOCOL_VERSION, PeerMessage};
use tally_core::{
    ActorId, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow, RecordBatch, VoteId,
    VoteIdKeyProof,
};
use tally_node::peer::tls::{ALPN, refusal_alert};
use tally_node::peer::transport::{PeerSocket, endpoint, read_frame, write_frame};

use node::{NodeProcess, NodeSpec};
use process::{free_tcp_address, free_udp_address};

/// The longest any single await may take.
const STEP: Duration = Duration::from_secs(10);

/// The application error code the node closes a refused peer's connection with
/// (`CLOSE_REFUSED` in `peer/sync.rs`).
const CLOSE_REFUSED: u32 = 1;

/// Records the fake peer offers the node.
const FAKE_RECORDS: usize = 50;

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step timed out")
}

fn node_id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn udp() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// The proof of the vote ID key every node of these tests holds (the development default).
fn key_proof() -> VoteIdKeyProof {
    tally_node::config::Config::default()
        .validate()
        .unwrap()
        .vote_id_key
        .proof()
}

fn hello(cluster: &str, node: &str) -> Hello {
    Hello {
        cluster_id: cluster.to_owned(),
        protocol_version: PROTOCOL_VERSION,
        actor: ActorId {
            node: node_id(node),
            incarnation: 7,
        },
        vote_id_key_proof: key_proof(),
    }
}

async fn send_message(stream: &mut quinn::SendStream, message: &PeerMessage) {
    bounded(write_frame(stream, &wire::encode(message)))
        .await
        .unwrap();
}

/// Reads one whole stream's frames (errors end it).
async fn read_all(stream: &mut quinn::RecvStream) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buffer = Vec::new();
    while let Ok(Ok(Some(()))) = tokio::time::timeout(STEP, read_frame(stream, &mut buffer)).await {
        frames.push(buffer.clone());
    }
    frames
}

/// What the fake peer answers the node's pull requests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answering {
    /// Nothing: "I hold nothing you lack".
    Nothing,
    /// [`FAKE_RECORDS`] valid records of actor `us-west#7`, then a frame that does not decode.
    RecordsThenGarbage,
    /// The same records, and nothing else.
    Records,
    /// The same records frame three times in one answer: a replay.
    RecordsReplayed,
}

/// The node's configured peer `us-west`, played by the test: a real endpoint with a valid
/// certificate that says hello properly and answers pulls as [`Answering`] says.
struct FakePeer {
    endpoint: quinn::Endpoint,
    answering: Arc<Mutex<Answering>>,
    /// Pulls answered in [`Answering::RecordsReplayed`] mode.
    replays: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePeer {
    fn start(files: &ClusterFiles) -> Self {
        let tls = files.tls(&node_id("us-west")).unwrap();
        let endpoint = endpoint(PeerSocket::Udp(udp()), &tls, 11).unwrap();
        let answering = Arc::new(Mutex::new(Answering::Nothing));
        let replays = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (accepting, mode, replayed) = (endpoint.clone(), answering.clone(), replays.clone());
        let task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let (mode, replayed) = (mode.clone(), replayed.clone());
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        let _ = serve_pulls(&connection, &mode, &replayed).await;
                    }
                });
            }
        });
        Self {
            endpoint,
            answering,
            replays,
            task,
        }
    }

    fn address(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap()
    }

    fn answer(&self, answering: Answering) {
        *self.answering.lock().unwrap() = answering;
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
        self.task.abort();
    }
}

/// The node's poll as the fake defines it: the same options in the same order, and no window
/// of its own (nothing to merge).
fn superbowl() -> PollSpec {
    let options = ["green", "blue"]
        .map(|o| OptionName::new(o).unwrap())
        .to_vec();
    PollSpec::new(
        PollId::new("superbowl").unwrap(),
        options,
        PollWindow::default(),
    )
    .unwrap()
}

fn fake_records() -> RecordBatch {
    let poll = PollId::new("superbowl").unwrap();
    let actor = hello(DEV_CLUSTER_ID, "us-west").actor;
    let mut batch = RecordBatch::new(poll, actor, 1);
    for i in 0..FAKE_RECORDS {
        let id = 0x5eed_0000_0000_0000_0000_0000_0000_0000u128 + i as u128;
        batch.push(VoteId(id), OptionIndex((i % 2) as u8), 0);
    }
    batch
}

async fn serve_pulls(
    connection: &quinn::Connection,
    answering: &Mutex<Answering>,
    replays: &std::sync::atomic::AtomicUsize,
) -> Result<(), quinn::ConnectionError> {
    let (mut send, mut recv) = connection.accept_bi().await?;
    send_message(
        &mut send,
        &PeerMessage::Hello(hello(DEV_CLUSTER_ID, "us-west")),
    )
    .await;
    send.finish().ok();
    read_all(&mut recv).await; // the node's hello
    loop {
        let (mut send, mut recv) = connection.accept_bi().await?;
        read_all(&mut recv).await; // the node's pull request
        let mode = *answering.lock().unwrap();
        if mode != Answering::Nothing {
            // Records apply only with the answerer's definition of their poll, the node's own.
            send_message(&mut send, &PeerMessage::Poll(superbowl())).await;
            send_records(&mut send).await;
        }
        if mode == Answering::RecordsReplayed {
            send_records(&mut send).await;
            send_records(&mut send).await;
        }
        if mode == Answering::RecordsThenGarbage {
            // Format version 1, then bytes no message starts with.
            write_frame(&mut send, &[1, 0xff, 0xff, 0xff, 0xff])
                .await
                .ok();
        }
        send.finish().ok();
        if mode == Answering::RecordsReplayed {
            replays.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

async fn send_records(send: &mut quinn::SendStream) {
    send_message(send, &PeerMessage::Records(fake_records())).await;
}

/// The running node `us-east`, its fake peer, and what the test needs to talk to them.
struct Setup {
    node: NodeProcess,
    fake: FakePeer,
    files: ClusterFiles,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let names = ["us-east", "us-west", "eu-central"].map(node_id);
        let files = generate_dev_cluster(&dir.path().join("certs"), &names).unwrap();
        let fake = FakePeer::start(&files);
        let east = files.node(&node_id("us-east")).unwrap();
        let mut node = NodeSpec {
            name: "us-east".into(),
            http: free_tcp_address(),
            peer_listen: free_udp_address(),
            peers: vec![("us-west".into(), fake.address())],
            dir: dir.path().join("us-east"),
            ca: files.ca_cert.clone(),
            cert: east.cert.clone(),
            key: east.key.clone(),
            extra: "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 3000\n".into(),
        }
        .spawn();
        node.wait_ready(Instant::now() + Duration::from_secs(20));
        Self {
            node,
            fake,
            files,
            _dir: dir,
        }
    }

    fn http(&self) -> SocketAddr {
        self.node.spec.http
    }

    fn peer_address(&self) -> SocketAddr {
        self.node.spec.peer_listen
    }

    /// `tally_peer_refusals_total` for `peer`, over every cause (`incoming` for sessions
    /// the node accepted, refused before they named their node).
    fn refusals(&self, peer: &str) -> f64 {
        let (status, text) = http::request_once(self.http(), "GET", "/metrics", "").unwrap();
        assert_eq!(status, 200);
        let prefix = format!("tally_peer_refusals_total{{peer=\"{peer}\",");
        text.lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// (total, actors whose records the node holds), from its results.
    fn tally(&self) -> (i64, Vec<String>) {
        let json = http::get_json(self.http(), "/v1/polls/superbowl/results").unwrap();
        let actors = json["includes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["actor"].as_str().unwrap().to_owned())
            .collect();
        (json["total"].as_i64().unwrap(), actors)
    }

    fn vote(&self, id: &str) -> String {
        let body = format!(r#"{{"option":"green","vote_id":"{id}"}}"#);
        let (status, answer) =
            http::request_once(self.http(), "POST", "/v1/polls/superbowl/votes", &body).unwrap();
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Waits until the node's log holds a line with every one of `needles`.
    fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let log = self.node.log();
            if let Some(line) = log
                .lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the node never logged a line with {needles:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client endpoint with `name`'s valid certificate from this cluster.
    fn member_endpoint(&self, name: &str) -> quinn::Endpoint {
        let tls = self.files.tls(&node_id(name)).unwrap();
        endpoint(PeerSocket::Udp(udp()), &tls, 5).unwrap()
    }
}

/// A client config that trusts `ca_file` and presents the certificate and key given.
fn client_presenting(ca_file: &Path, cert: &Path, key: &Path) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(config).unwrap()))
}

/// Dials the node as a cluster member, sends `our_hello`, and returns the connection and the
/// node's hello (`None` if the node closed before sending it).
async fn dial_and_greet(
    client: &quinn::Endpoint,
    node: SocketAddr,
    our_hello: Hello,
) -> (quinn::Connection, Option<PeerMessage>) {
    let connection = bounded(client.connect(node, "us-east").unwrap())
        .await
        .unwrap();
    let (mut send, mut recv) = bounded(connection.open_bi()).await.unwrap();
    send_message(&mut send, &PeerMessage::Hello(our_hello)).await;
    send.finish().unwrap();
    let theirs = read_all(&mut recv).await;
    let theirs = theirs.first().map(|frame| wire::decode(frame).unwrap());
    (connection, theirs)
}

/// How the node closed `connection`: its application error code and reason.
async fn closed_by_node(connection: &quinn::Connection) -> (u32, String) {
    match bounded(connection.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => (
            u32::try_from(close.error_code.into_inner()).unwrap(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("the node did not close the connection as a refusal: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_refuses_strangers_impostors_and_garbage_and_counts_nothing_from_them() {
    // Goal: every refusal the issue names, against the real node, and that none changes its
    // tally. Method: start `us-east` with a fake `us-west` peer, cast three votes, then dial its
    // peer port as (a) a client whose certificate another CA issued (another cluster: one CA
    // per cluster) and a client with no certificate, (b) members whose hello names another
    // cluster or another node than their certificate, or replays the node's own hello, (c) a
    // member that sends an undecodable frame on a pull stream, (d) let the node pull an answer
    // that ends in garbage, and (e) answers that replay the same records frame; after each,
    // check what it closed, logged and counted, and that it still votes.
    let setup = Setup::start();
    for i in 0..3 {
        setup.vote(&format!("before-{i}"));
    }
    let settled = Instant::now() + STEP;
    while setup.tally().0 != 3 {
        assert!(Instant::now() < settled, "the three votes never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally_before = setup.tally();

    refuses_a_certificate_from_another_ca(&setup).await;
    refuses_a_client_without_a_certificate(&setup).await;
    refuses_another_cluster_and_a_hello_that_is_not_its_certificate(&setup).await;
    refuses_a_replayed_hello_of_the_node_itself(&setup).await;
    closes_a_session_that_sends_an_undecodable_frame(&setup).await;
    assert_eq!(
        setup.tally(),
        tally_before,
        "a refused peer changed the tally"
    );

    answers_clock_readings_first_and_refuses_protocol_1(&setup).await;
    merges_nothing_of_a_pulled_answer_that_ends_in_garbage(&setup, &tally_before).await;
    counts_replayed_records_once(&setup, tally_before.0 + FAKE_RECORDS as i64).await;
    let answer = setup.vote("after-refusals");
    assert!(answer.contains(r#""status":"counted""#), "{answer}");
}

/// Dials the node with `config` and returns how the connection ended: refused in the
/// handshake, or closed right after it (TLS 1.3: the client finishes before the server has
/// checked its certificate).
async fn handshake_error(setup: &Setup, config: quinn::ClientConfig) -> quinn::ConnectionError {
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = client
        .connect_with(config, setup.peer_address(), "us-east")
        .unwrap();
    match bounded(connecting).await {
        Err(error) => error,
        Ok(connection) => bounded(connection.closed()).await,
    }
}

async fn refuses_a_certificate_from_another_ca(setup: &Setup) {
    // A node of another cluster, with a node name of ours, that trusts our CA (so the node's
    // own certificate is fine by it): the node refuses its certificate in the handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let other = generate_dev_cluster(other_dir.path(), &[node_id("us-west")]).unwrap();
    let impostor = other.node(&node_id("us-west")).unwrap();
    let config = client_presenting(&setup.files.ca_cert, &impostor.cert, &impostor.key);
    let error = handshake_error(setup, config).await;
    assert_eq!(
        refusal_alert(&error),
        Some(AlertDescription::UnknownCA),
        "{error}"
    );
    setup.wait_for_log(&["refused during handshake", "UnknownIssuer"]);
}

async fn refuses_a_client_without_a_certificate(setup: &Setup) {
    // A client that trusts the cluster CA but presents no certificate at all.
    let handshake_refusals = |log: &str| log.matches("refused during handshake").count();
    let before = handshake_refusals(&setup.node.log());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&setup.files.ca_cert).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(config).unwrap()));
    let error = handshake_error(setup, config).await;
    assert_eq!(
        refusal_alert(&error),
        Some(AlertDescription::CertificateRequired),
        "{error}"
    );
    let deadline = Instant::now() + STEP;
    while handshake_refusals(&setup.node.log()) <= before {
        assert!(Instant::now() < deadline, "the refusal was not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refuses_a_replayed_hello_of_the_node_itself(setup: &Setup) {
    // A member captures the node's own hello and replays it as its own: the hello names
    // `us-east`, the certificate `eu-central`, so the session is refused.
    let client = setup.member_endpoint("eu-central");
    let (first, theirs) = dial_and_greet(
        &client,
        setup.peer_address(),
        hello(DEV_CLUSTER_ID, "eu-central"),
    )
    .await;
    let Some(PeerMessage::Hello(captured)) = theirs else {
        panic!("the node sent no hello: {theirs:?}");
    };
    first.close(0u32.into(), b"done");
    let refusals = setup.refusals("incoming");
    let (connection, _) = dial_and_greet(&client, setup.peer_address(), captured).await;
    let (code, reason) = closed_by_node(&connection).await;
    assert_eq!(code, CLOSE_REFUSED, "{reason}");
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(setup.refusals("incoming"), refusals + 1.0);
}

async fn counts_replayed_records_once(setup: &Setup, expected: i64) {
    // The fake peer answers every pull with the same records frame three times: replays of
    // records the node holds merge as nothing (merge is idempotent); the total stays.
    setup.fake.answer(Answering::RecordsReplayed);
    let deadline = Instant::now() + STEP;
    while setup.fake.replays.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the node stopped pulling");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup.fake.answer(Answering::Nothing);
    assert_eq!(
        setup.tally().0,
        expected,
        "replayed records were counted again"
    );
}

async fn refuses_another_cluster_and_a_hello_that_is_not_its_certificate(setup: &Setup) {
    let client = setup.member_endpoint("eu-central");
    let cases = [
        (hello("another-cluster", "eu-central"), "cluster"),
        (hello(DEV_CLUSTER_ID, "us-west"), "certificate"),
    ];
    for (our_hello, reason_mentions) in cases {
        let refusals = setup.refusals("incoming");
        let (connection, theirs) = dial_and_greet(&client, setup.peer_address(), our_hello).await;
        if let Some(message) = theirs {
            assert!(matches!(message, PeerMessage::Hello(_)), "{message:?}");
        }
        let (code, reason) = closed_by_node(&connection).await;
        assert_eq!(code, CLOSE_REFUSED, "{reason}");
        assert!(reason.contains(reason_mentions), "{reason}");
        assert_eq!(setup.refusals("incoming"), refusals + 1.0);
        setup.wait_for_log(&["peer refused", reason_mentions]);
    }
}

/// Pulls once from the node on `connection` (an empty agreement summary, the node's poll as
/// it defines it, and `clock` last if given); the answer's messages.
async fn pull_once(
    connection: &quinn::Connection,
    clock: Option<wire::ClockReading>,
) -> Vec<PeerMessage> {
    let (mut send, mut recv) = bounded(connection.open_bi()).await.unwrap();
    let agreement = PeerMessage::Agreement(tally_core::AgreementDigest::default());
    send_message(&mut send, &agreement).await;
    let poll = PeerMessage::PollVector {
        poll: superbowl().id().clone(),
        definition: superbowl().definition(),
        vector: tally_core::VersionVector::default(),
    };
    send_message(&mut send, &poll).await;
    if let Some(reading) = clock {
        send_message(&mut send, &PeerMessage::Clock(reading)).await;
    }
    send.finish().unwrap();
    let frames = read_all(&mut recv).await;
    frames
        .iter()
        .map(|frame| wire::decode(frame).unwrap())
        .collect()
}

/// A hello as a node of protocol 1 sends it (before the `vote_id_key` proof), as a frame.
fn protocol_1_hello(node: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct HelloV1 {
        cluster_id: String,
        protocol_version: u16,
        actor: ActorId,
    }
    #[derive(serde::Serialize)]
    enum MessageV1 {
        Hello(HelloV1),
    }
    let old = hello(DEV_CLUSTER_ID, node);
    let message = MessageV1::Hello(HelloV1 {
        cluster_id: old.cluster_id,
        protocol_version: 1,
        actor: old.actor,
    });
    let mut frame = vec![wire::FRAME_FORMAT_VERSION];
    frame.extend(postcard::to_allocvec(&message).unwrap());
    frame
}

async fn answers_clock_readings_first_and_refuses_protocol_1(setup: &Setup) {
    // Goal: a pull that ends with a clock reading gets the node's reading first, echoing it
    // (issue 27); a node of protocol 1, whose hello cannot prove the vote ID key and whose
    // pulls name no poll definition (issue 31), is refused saying which protocol each side
    // speaks, and counted (rolling upgrades across protocol versions: issue 25 part 2).
    let client = setup.member_endpoint("eu-central");
    let (connection, theirs) = dial_and_greet(
        &client,
        setup.peer_address(),
        hello(DEV_CLUSTER_ID, "eu-central"),
    )
    .await;
    assert!(matches!(theirs, Some(PeerMessage::Hello(_))), "{theirs:?}");
    let sent_at = tally_core::UnixMillis(1_234);
    let reading = wire::ClockReading {
        sent_at,
        answered_at: None,
        stable_ms: 5,
    };
    let answer = pull_once(&connection, Some(reading)).await;
    let Some(PeerMessage::Clock(theirs)) = answer.first() else {
        panic!("the answer does not open with a clock reading: {answer:?}");
    };
    assert_eq!(theirs.sent_at, sent_at);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let answered = theirs.answered_at.unwrap().0;
    assert!(
        answered.abs_diff(now) < 5_000,
        "the node's clock read {answered}, ours {now}"
    );
    assert!(
        answer.iter().any(|m| matches!(m, PeerMessage::Poll(_))),
        "{answer:?}"
    );
    assert_eq!(
        answer
            .iter()
            .filter(|m| matches!(m, PeerMessage::Clock(_)))
            .count(),
        1,
        "{answer:?}"
    );
    connection.close(0u32.into(), b"done");

    // A node of protocol 1: refused before anything is pulled or served.
    let refusals = setup.refusals("incoming");
    let connection = bounded(client.connect(setup.peer_address(), "us-east").unwrap())
        .await
        .unwrap();
    let (mut send, mut recv) = bounded(connection.open_bi()).await.unwrap();
    bounded(write_frame(&mut send, &protocol_1_hello("eu-central")))
        .await
        .unwrap();
    send.finish().unwrap();
    read_all(&mut recv).await;
    let (code, reason) = closed_by_node(&connection).await;
    assert_eq!(code, CLOSE_REFUSED, "{reason}");
    assert!(
        reason.contains("protocol: peer speaks protocol 1, this node 2"),
        "{reason}"
    );
    assert_eq!(setup.refusals("incoming"), refusals + 1.0);
    setup.wait_for_log(&["peer refused", "peer speaks protocol 1"]);
}

async fn closes_a_session_that_sends_an_undecodable_frame(setup: &Setup) {
    let client = setup.member_endpoint("eu-central");
    let garbage: [&[u8]; 2] = [
        // A frame of format version 1 whose body is no message.
        &[5, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
        // Not even a frame: the "length" is 4 GB.
        b"\xff\xff\xff\xffgarbage",
    ];
    for bytes in garbage {
        // Refused after its hello named it: counted under its name.
        let refusals = setup.refusals("eu-central");
        let our_hello = hello(DEV_CLUSTER_ID, "eu-central");
        let (connection, theirs) = dial_and_greet(&client, setup.peer_address(), our_hello).await;
        assert!(matches!(theirs, Some(PeerMessage::Hello(_))), "{theirs:?}");
        let (mut send, _recv) = bounded(connection.open_bi()).await.unwrap();
        bounded(send.write_all(bytes)).await.unwrap();
        send.finish().unwrap();
        let (code, reason) = closed_by_node(&connection).await;
        assert_eq!(code, CLOSE_REFUSED, "{reason}");
        assert!(reason.contains("frame"), "{reason}");
        assert_eq!(setup.refusals("eu-central"), refusals + 1.0);
    }
    // Two refusals of one cause from one peer: logged once (the counter counts both).
    setup.wait_for_log(&["peer refused", "peer=eu-central", "undecodable frame"]);
    let lines = setup
        .node
        .log()
        .lines()
        .filter(|l| l.contains("peer refused") && l.contains("peer=eu-central"))
        .count();
    assert_eq!(lines, 1, "one line per peer and cause");
}

async fn merges_nothing_of_a_pulled_answer_that_ends_in_garbage(
    setup: &Setup,
    tally_before: &(i64, Vec<String>),
) {
    // The node pulls from the fake `us-west`, which answers 50 valid records and then a frame
    // that does not decode: the node must drop the whole answer, close, and redial.
    let refusals = setup.refusals("us-west");
    setup.fake.answer(Answering::RecordsThenGarbage);
    let deadline = Instant::now() + STEP;
    while setup.refusals("us-west") < refusals + 2.0 {
        assert!(
            Instant::now() < deadline,
            "the node did not refuse the garbage answers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup.wait_for_log(&["peer refused", "us-west", "undecodable frame"]);
    assert_eq!(
        &setup.tally(),
        tally_before,
        "records from an answer that ended in garbage were merged"
    );

    // The control: the same records without the garbage are merged, so the ones above were
    // refused for the garbage, not for themselves.
    setup.fake.answer(Answering::Records);
    let expected = tally_before.0 + FAKE_RECORDS as i64;
    let deadline = Instant::now() + STEP;
    loop {
        let (total, actors) = setup.tally();
        if total == expected {
            assert!(
                actors.iter().any(|a| a.starts_with("us-west#")),
                "{actors:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the valid answer was not merged: total {total}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
