//! The peer transport over real quinn endpoints on 127.0.0.1 UDP sockets: mutual TLS against
//! a cluster CA made by `generate_dev_cluster`, certificate refusals and how each side sees
//! them, length-prefixed frames and their limits, and the reconnect backoff.
//!
//! Every await is bounded by [`STEP`], so a refusal that hangs instead of failing fails the
//! test rather than the CI job.
#![allow(clippy::unwrap_used)]

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::AlertDescription;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tally::certs::{ClusterFiles, generate_dev_cluster};
use tally_core::NodeId;
use tally_core::limits::FRAME_BYTES_MAX;
use tally_node::peer::tls::{ALPN, ClusterTls, TlsError, check_peer_is, peer_node, refusal_alert};
use tally_node::peer::transport::{
    Backoff, FrameError, PeerSocket, RECONNECT_BACKOFF_BASE_MS, RECONNECT_BACKOFF_CAP_MS,
    REPORTED_PER_BYTE_GRANTED, SOCKET_RECEIVE_BUFFER_BYTES, endpoint, read_frame,
    receive_buffer_bytes, write_frame,
};

/// The longest any single await may take.
const STEP: Duration = Duration::from_secs(10);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step timed out")
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn cluster(dir: &Path, names: &[&str]) -> ClusterFiles {
    let ids: Vec<NodeId> = names.iter().map(|name| node(name)).collect();
    generate_dev_cluster(dir, &ids).unwrap()
}

fn udp() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn peer_endpoint(tls: &ClusterTls, seed: u64) -> quinn::Endpoint {
    endpoint(PeerSocket::Udp(udp()), tls, seed).unwrap()
}

fn address(endpoint: &quinn::Endpoint) -> SocketAddr {
    endpoint.local_addr().unwrap()
}

/// A client config built by hand: trusts `ca_file`, presents `identity` (certificate and key
/// files) if any, and offers `alpn`.
fn hand_made_client(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[u8],
) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(config).unwrap()))
}

/// How a dialling client ends up when the handshake is refused: either connecting fails, or
/// (TLS 1.3 clients finish their side before the server checks their certificate) the
/// connection is established and then closed by the server.
async fn client_refusal(connecting: quinn::Connecting) -> quinn::ConnectionError {
    match bounded(connecting).await {
        Err(error) => error,
        Ok(connection) => bounded(connection.closed()).await,
    }
}

/// How the accepting server ends up with its next incoming connection.
async fn server_outcome(
    server: &quinn::Endpoint,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let incoming = bounded(server.accept()).await.unwrap();
    bounded(incoming.into_future()).await
}

#[tokio::test]
async fn two_nodes_exchange_frames_and_learn_each_other_from_certificates() {
    // Goal: the happy path. Two nodes from one `tally certs` cluster connect (the server on
    // an abstract socket, as the simulation will), agree on ALPN, exchange frames both ways
    // on a bidirectional stream, and each learns the other's node ID from its certificate.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let east = files.tls(&node("us-east")).unwrap();
    let west = files.tls(&node("us-west")).unwrap();
    let abstract_socket = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, udp()).unwrap();
    let server = endpoint(PeerSocket::Abstract(abstract_socket), &west, 1).unwrap();
    let client = peer_endpoint(&east, 2);
    let server_address = address(&server);

    let serving = tokio::spawn(async move {
        let connection = server_outcome(&server).await.unwrap();
        assert_eq!(peer_node(&connection).unwrap(), node("us-east"));
        check_peer_is(&connection, &node("us-east")).unwrap();
        let (mut send, mut recv) = bounded(connection.accept_bi()).await.unwrap();
        let mut frame = Vec::new();
        let mut received = Vec::new();
        while bounded(read_frame(&mut recv, &mut frame))
            .await
            .unwrap()
            .is_some()
        {
            received.push(frame.clone());
        }
        for frame in &received {
            let mut reply = b"ack:".to_vec();
            reply.extend_from_slice(&frame[..frame.len().min(8)]);
            bounded(write_frame(&mut send, &reply)).await.unwrap();
        }
        send.finish().unwrap();
        bounded(connection.closed()).await;
        received
    });

    let connection = bounded(client.connect(server_address, "us-west").unwrap())
        .await
        .unwrap();
    assert_eq!(peer_node(&connection).unwrap(), node("us-west"));
    check_peer_is(&connection, &node("us-west")).unwrap();
    let wrong = check_peer_is(&connection, &node("us-east")).unwrap_err();
    assert!(
        matches!(&wrong, TlsError::PeerIsNot { named, .. } if named == "us-west"),
        "{wrong}"
    );
    let handshake = connection.handshake_data().unwrap();
    let handshake = handshake
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(handshake.protocol.as_deref(), Some(ALPN));

    let (mut send, mut recv) = bounded(connection.open_bi()).await.unwrap();
    let big = vec![7u8; 1 << 20];
    let sent: Vec<&[u8]> = vec![b"hello", b"", &big, b"bye"];
    for frame in &sent {
        bounded(write_frame(&mut send, frame)).await.unwrap();
    }
    send.finish().unwrap();
    let mut replies = Vec::new();
    let mut frame = Vec::new();
    while bounded(read_frame(&mut recv, &mut frame))
        .await
        .unwrap()
        .is_some()
    {
        replies.push(String::from_utf8_lossy(&frame).into_owned());
    }
    assert_eq!(replies.len(), 4);
    assert_eq!(replies[0], "ack:hello");
    assert_eq!(replies[1], "ack:");
    assert_eq!(replies[3], "ack:bye");
    connection.close(0u32.into(), b"done");
    let received = bounded(serving).await.unwrap();
    assert_eq!(
        received,
        sent.iter().map(|f| f.to_vec()).collect::<Vec<_>>()
    );
    bounded(client.wait_idle()).await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_on_both_sides() {
    // Goal: client authentication is required. A client that trusts the cluster CA but
    // presents no certificate is refused with `certificate_required`, seen by both sides.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let server = peer_endpoint(&files.tls(&node("us-west")).unwrap(), 1);
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = hand_made_client(&files.ca_cert, None, ALPN);

    let connecting = client
        .connect_with(config, address(&server), "us-west")
        .unwrap();
    let (client_error, server_result) =
        tokio::join!(client_refusal(connecting), server_outcome(&server));
    let server_error = server_result.unwrap_err();
    assert_eq!(
        refusal_alert(&server_error),
        Some(AlertDescription::CertificateRequired),
        "{server_error}"
    );
    assert!(matches!(
        server_error,
        quinn::ConnectionError::TransportError(_)
    ));
    assert_eq!(
        refusal_alert(&client_error),
        Some(AlertDescription::CertificateRequired),
        "{client_error}"
    );
    assert!(matches!(
        client_error,
        quinn::ConnectionError::ConnectionClosed(_)
    ));
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    // Goal: a certificate for a node of the same name, issued by another cluster's CA, does
    // not get in: the server refuses it with `unknown_ca`, and the client is told so.
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let other = cluster(other_dir.path(), &["us-east"]);
    let server = peer_endpoint(&files.tls(&node("us-west")).unwrap(), 1);
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let impostor = other.node(&node("us-east")).unwrap();
    // It trusts our CA (so it would accept our server) but holds the other cluster's cert.
    let config = hand_made_client(&files.ca_cert, Some((&impostor.cert, &impostor.key)), ALPN);

    let connecting = client
        .connect_with(config, address(&server), "us-west")
        .unwrap();
    let (client_error, server_result) =
        tokio::join!(client_refusal(connecting), server_outcome(&server));
    let server_error = server_result.unwrap_err();
    assert_eq!(
        refusal_alert(&server_error),
        Some(AlertDescription::UnknownCA)
    );
    assert_eq!(
        refusal_alert(&client_error),
        Some(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused_when_it_dials() {
    // Goal: a whole node of another cluster (its own CA, our node names) dialling us fails:
    // it does not trust our server, so its own handshake fails locally with `unknown_ca`,
    // and our server sees the connection refused with that alert.
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let other = cluster(other_dir.path(), &["us-east", "us-west"]);
    let server = peer_endpoint(&files.tls(&node("us-west")).unwrap(), 1);
    let client = peer_endpoint(&other.tls(&node("us-east")).unwrap(), 2);

    let connecting = client.connect(address(&server), "us-west").unwrap();
    let (client_result, server_result) = tokio::join!(bounded(connecting), server_outcome(&server));
    let client_error = client_result.unwrap_err();
    assert!(matches!(
        client_error,
        quinn::ConnectionError::TransportError(_)
    ));
    assert_eq!(
        refusal_alert(&client_error),
        Some(AlertDescription::UnknownCA)
    );
    let server_error = server_result.unwrap_err();
    assert_eq!(
        refusal_alert(&server_error),
        Some(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn a_server_naming_another_node_than_dialled_is_refused() {
    // Goal: dialling `eu` and reaching a server whose (valid, same-CA) certificate names
    // `us-west` fails on the client with `bad_certificate`; the server sees that alert too.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west", "eu"]);
    let server = peer_endpoint(&files.tls(&node("us-west")).unwrap(), 1);
    let client = peer_endpoint(&files.tls(&node("us-east")).unwrap(), 2);

    let connecting = client.connect(address(&server), "eu").unwrap();
    let (client_result, server_result) = tokio::join!(bounded(connecting), server_outcome(&server));
    let client_error = client_result.unwrap_err();
    assert!(matches!(
        client_error,
        quinn::ConnectionError::TransportError(_)
    ));
    assert_eq!(
        refusal_alert(&client_error),
        Some(AlertDescription::BadCertificate),
        "{client_error}"
    );
    let server_error = server_result.unwrap_err();
    assert_eq!(
        refusal_alert(&server_error),
        Some(AlertDescription::BadCertificate)
    );
}

#[tokio::test]
async fn a_client_speaking_another_protocol_is_refused() {
    // Goal: ALPN is enforced: a cluster member offering `tally/2` is refused with
    // `no_application_protocol`.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let server = peer_endpoint(&files.tls(&node("us-west")).unwrap(), 1);
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let east = files.node(&node("us-east")).unwrap();
    let config = hand_made_client(&files.ca_cert, Some((&east.cert, &east.key)), b"tally/2");

    let connecting = client
        .connect_with(config, address(&server), "us-west")
        .unwrap();
    let (client_error, server_result) =
        tokio::join!(client_refusal(connecting), server_outcome(&server));
    let server_error = server_result.unwrap_err();
    assert_eq!(
        refusal_alert(&server_error),
        Some(AlertDescription::NoApplicationProtocol)
    );
    assert_eq!(
        refusal_alert(&client_error),
        Some(AlertDescription::NoApplicationProtocol)
    );
}

#[tokio::test]
async fn node_ids_with_underscores_work_end_to_end() {
    // Goal: '_' is allowed in node IDs, so it must work in certificates: rustls and webpki
    // accept it in DNS names, and the peer's name is read back exactly.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["eu_west", "us_east.1a"]);
    let server = peer_endpoint(&files.tls(&node("eu_west")).unwrap(), 1);
    let client = peer_endpoint(&files.tls(&node("us_east.1a")).unwrap(), 2);

    let connecting = client.connect(address(&server), "eu_west").unwrap();
    let (client_result, server_result) = tokio::join!(bounded(connecting), server_outcome(&server));
    let (client_side, server_side) = (client_result.unwrap(), server_result.unwrap());
    assert_eq!(peer_node(&client_side).unwrap(), node("eu_west"));
    assert_eq!(peer_node(&server_side).unwrap(), node("us_east.1a"));
}

#[tokio::test]
async fn every_reconnect_verifies_certificates_again() {
    // Goal: nothing is resumed from an earlier connection (no session tickets, no 0-RTT):
    // a second connection between the same endpoints carries both certificates again, so
    // each side still learns who the other is.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let server = peer_endpoint(&files.tls(&node("us-west")).unwrap(), 1);
    let client = peer_endpoint(&files.tls(&node("us-east")).unwrap(), 2);
    for round in 0..3 {
        let connecting = client.connect(address(&server), "us-west").unwrap();
        let (client_result, server_result) =
            tokio::join!(bounded(connecting), server_outcome(&server));
        let (client_side, server_side) = (client_result.unwrap(), server_result.unwrap());
        assert_eq!(
            peer_node(&client_side).unwrap(),
            node("us-west"),
            "round {round}"
        );
        assert_eq!(
            peer_node(&server_side).unwrap(),
            node("us-east"),
            "round {round}"
        );
        client_side.close(0u32.into(), b"again");
        bounded(server_side.closed()).await;
    }
}

/// A connected pair: the client's and the server's ends of one connection.
async fn connected_pair(
    files: &ClusterFiles,
) -> (quinn::Endpoint, quinn::Connection, quinn::Connection) {
    let server = peer_endpoint(&files.tls(&node("us-west")).unwrap(), 1);
    let client = peer_endpoint(&files.tls(&node("us-east")).unwrap(), 2);
    let connecting = client.connect(address(&server), "us-west").unwrap();
    let (client_result, server_result) = tokio::join!(bounded(connecting), server_outcome(&server));
    // The server endpoint lives on in its connection's driver.
    (client, client_result.unwrap(), server_result.unwrap())
}

/// Sends `raw` bytes on a new unidirectional stream, finishes it, and returns the
/// receiving end.
async fn raw_stream(
    client: &quinn::Connection,
    server: &quinn::Connection,
    raw: &[u8],
) -> quinn::RecvStream {
    let mut send = bounded(client.open_uni()).await.unwrap();
    bounded(send.write_all(raw)).await.unwrap();
    send.finish().unwrap();
    bounded(server.accept_uni()).await.unwrap()
}

#[tokio::test]
async fn read_frame_refuses_an_oversized_length_before_allocating_it() {
    // Goal: a length prefix over FRAME_BYTES_MAX is an error, and the buffer has not grown:
    // nothing was allocated for it. The sender sends only the header, so a reader that
    // tried to read the body would wait, not fail.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let (_client, client, server) = connected_pair(&files).await;
    for length in [FRAME_BYTES_MAX as u32 + 1, u32::MAX] {
        let mut send = bounded(client.open_uni()).await.unwrap();
        bounded(send.write_all(&length.to_le_bytes()))
            .await
            .unwrap();
        let mut recv = bounded(server.accept_uni()).await.unwrap();
        let mut buffer = Vec::new();
        let error = bounded(read_frame(&mut recv, &mut buffer))
            .await
            .unwrap_err();
        assert!(
            matches!(error, FrameError::TooLong { length: found } if found == u64::from(length)),
            "{error}"
        );
        assert_eq!(buffer.capacity(), 0, "nothing may be allocated");
    }
    // The largest allowed frame is read whole.
    let mut send = bounded(client.open_uni()).await.unwrap();
    let largest = vec![1u8; FRAME_BYTES_MAX];
    bounded(write_frame(&mut send, &largest)).await.unwrap();
    send.finish().unwrap();
    let mut recv = bounded(server.accept_uni()).await.unwrap();
    let mut buffer = Vec::new();
    assert_eq!(
        bounded(read_frame(&mut recv, &mut buffer)).await.unwrap(),
        Some(())
    );
    assert_eq!(buffer, largest);
    assert_eq!(
        bounded(read_frame(&mut recv, &mut buffer)).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn truncated_frames_and_oversized_writes_are_errors_that_say_what_happened() {
    // Goal: a stream that ends inside a header or a body is an error naming how much
    // arrived; a clean end between frames is `None`; write_frame refuses an oversized frame
    // before writing anything.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let (_client, client, server) = connected_pair(&files).await;
    let mut buffer = Vec::new();

    let mut recv = raw_stream(&client, &server, &[5, 0]).await;
    let error = bounded(read_frame(&mut recv, &mut buffer))
        .await
        .unwrap_err();
    assert!(
        matches!(error, FrameError::TruncatedHeader { received: 2 }),
        "{error}"
    );

    let mut recv = raw_stream(&client, &server, &[10, 0, 0, 0, b'a', b'b', b'c']).await;
    let error = bounded(read_frame(&mut recv, &mut buffer))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FrameError::TruncatedBody {
                expected: 10,
                received: 3
            }
        ),
        "{error}"
    );
    assert!(buffer.is_empty(), "no partial frame is left in the buffer");

    let mut recv = raw_stream(&client, &server, &[]).await;
    assert_eq!(
        bounded(read_frame(&mut recv, &mut buffer)).await.unwrap(),
        None
    );

    let mut send = bounded(client.open_uni()).await.unwrap();
    let error = bounded(write_frame(&mut send, &vec![0; FRAME_BYTES_MAX + 1]))
        .await
        .unwrap_err();
    assert!(matches!(error, FrameError::TooLong { .. }), "{error}");
}

#[tokio::test]
async fn a_closed_connection_surfaces_in_frame_errors() {
    // Goal: when the peer closes the connection, a pending read_frame fails with an error
    // that carries the connection error, so the caller can tell "peer gone" from "bad frame".
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let (_client, client, server) = connected_pair(&files).await;
    let mut send = bounded(client.open_uni()).await.unwrap();
    bounded(write_frame(&mut send, b"one")).await.unwrap();
    let mut recv = bounded(server.accept_uni()).await.unwrap();
    let mut buffer = Vec::new();
    assert_eq!(
        bounded(read_frame(&mut recv, &mut buffer)).await.unwrap(),
        Some(())
    );
    client.close(7u32.into(), b"bye");
    let error = bounded(read_frame(&mut recv, &mut buffer))
        .await
        .unwrap_err();
    match error.connection_error() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code, 7u32.into());
        }
        other => panic!("expected the peer's close, got {other:?} from {error}"),
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_peer_socket_gets_the_receive_buffer_it_asks_for() {
    // Goal: a peer endpoint's UDP socket has SOCKET_RECEIVE_BUFFER_BYTES of receive buffer
    // (or all the kernel allows, net.core.rmem_max), not the system default, which a flat-out
    // peer overflows. Method: read the buffer through a second handle of the socket given to
    // `endpoint`.
    let dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let socket = udp();
    let handle = socket.try_clone().unwrap();
    let _endpoint = endpoint(
        PeerSocket::Udp(socket),
        &files.tls(&node("us-east")).unwrap(),
        1,
    )
    .unwrap();
    let allowed: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let default: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let expected = REPORTED_PER_BYTE_GRANTED * SOCKET_RECEIVE_BUFFER_BYTES.min(allowed);
    let found = receive_buffer_bytes(&handle).unwrap();
    assert_eq!(
        found, expected,
        "receive buffer {found} bytes (system default {default}, rmem_max {allowed})"
    );
}

#[test]
fn loading_names_the_file_that_is_wrong() {
    // Goal: a misconfigured node fails at start-up with an error naming the file and what
    // is wrong with it, not at its peers' handshakes.
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let files = cluster(dir.path(), &["us-east", "us-west"]);
    let other = cluster(other_dir.path(), &["us-east"]);
    let east = files.node(&node("us-east")).unwrap();
    let west = files.node(&node("us-west")).unwrap();
    let load = |ca: &Path, cert: &Path, key: &Path, id: &str| {
        ClusterTls::load(ca, cert, key, node(id)).unwrap_err()
    };

    let missing = dir.path().join("nope.pem");
    let error = load(&files.ca_cert, &missing, &east.key, "us-east");
    assert!(
        matches!(&error, TlsError::Read { file, .. } if file == &missing),
        "{error}"
    );
    assert!(error.to_string().contains("nope.pem"), "{error}");

    let error = load(&files.ca_cert, &east.key, &east.key, "us-east");
    assert!(matches!(&error, TlsError::NoCertificate { .. }), "{error}");

    let error = load(&files.ca_cert, &east.cert, &east.cert, "us-east");
    assert!(matches!(&error, TlsError::NoPrivateKey { .. }), "{error}");

    // Someone else's certificate.
    let error = load(&files.ca_cert, &east.cert, &east.key, "us-west");
    assert!(matches!(&error, TlsError::OwnCertificate { .. }), "{error}");
    assert!(error.to_string().contains("us-east.pem"), "{error}");

    // A certificate from another cluster's CA.
    let impostor = other.node(&node("us-east")).unwrap();
    let error = load(&files.ca_cert, &impostor.cert, &impostor.key, "us-east");
    assert!(
        matches!(&error, TlsError::OwnCertificate { source, .. }
            if source.to_string().contains("UnknownIssuer")),
        "{error}"
    );

    // The wrong key for the certificate.
    let error = load(&files.ca_cert, &east.cert, &west.key, "us-east");
    assert!(matches!(&error, TlsError::Key { .. }), "{error}");
    assert!(error.to_string().contains("us-west-key.pem"), "{error}");
}

#[test]
fn backoff_grows_is_capped_and_replays_from_its_seed() {
    // Goal: each delay lies in the upper half of a ceiling that doubles from the base to the
    // cap; the cap holds forever; reset starts over; a seed replays the same delays and
    // another seed gives other ones.
    let mut backoff = Backoff::new(42);
    let delays: Vec<u64> = (0..40)
        .map(|_| backoff.next_delay().as_millis() as u64)
        .collect();
    let mut ceiling = RECONNECT_BACKOFF_BASE_MS;
    for (attempt, &delay) in delays.iter().enumerate() {
        assert!(
            ceiling / 2 <= delay && delay <= ceiling,
            "attempt {attempt}: {delay} ms outside [{}, {ceiling}]",
            ceiling / 2
        );
        ceiling = (ceiling * 2).min(RECONNECT_BACKOFF_CAP_MS);
    }
    assert!(delays[0] <= RECONNECT_BACKOFF_BASE_MS);
    assert!(delays[39] >= RECONNECT_BACKOFF_CAP_MS / 2);
    assert!(
        delays
            .iter()
            .all(|&delay| delay <= RECONNECT_BACKOFF_CAP_MS)
    );

    backoff.reset();
    assert!(backoff.next_delay().as_millis() as u64 <= RECONNECT_BACKOFF_BASE_MS);

    let mut replay = Backoff::new(42);
    let replayed: Vec<u64> = (0..40)
        .map(|_| replay.next_delay().as_millis() as u64)
        .collect();
    assert_eq!(replayed, delays);
    let mut other = Backoff::new(43);
    let others: Vec<u64> = (0..40)
        .map(|_| other.next_delay().as_millis() as u64)
        .collect();
    assert_ne!(others, delays);
}
