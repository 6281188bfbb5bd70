//! Mutual TLS between peers: every node presents a certificate issued by the cluster CA that
//! names it, and accepts only peers that do the same.
//!
//! What this promises:
//! - a server built from [`ClusterTls::server_config`] completes no handshake with a client
//!   that presents no certificate, or one that does not chain to the cluster CA (rustls's
//!   `WebPkiClientVerifier`, client authentication required);
//! - a client built from [`ClusterTls::client_config`] completes no handshake with a server
//!   whose certificate does not chain to the cluster CA or does not name the node it dialled
//!   (the server name passed to `quinn::Endpoint::connect` is the peer's node ID);
//! - both sides speak TLS 1.3 with ALPN [`ALPN`] only; 0-RTT stays off (no early data is
//!   accepted or sent, so nothing a peer sends can be replayed), and so does session
//!   resumption: every connection, including every reconnect, verifies certificates afresh;
//! - [`peer_node`] tells which node an established connection's peer is, from its certificate.
//!
//! A certificate names its node with one DNS subject-alternative name equal to the node ID
//! (`tally certs` makes such certificates; see `certs.rs`). The crypto provider (ring) is
//! installed explicitly in every config: nothing depends on a process-wide default.
//!
//! Certificate validity is checked against the system clock (rustls reads it during every
//! handshake, and [`ClusterTls::load`] reads it once to check this node's own certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, RootCertStore};
use tally_core::{NameError, NodeId};

/// The one application protocol peers speak, negotiated with ALPN. A peer that offers
/// anything else is refused during the handshake (alert `no_application_protocol`).
pub const ALPN: &[u8] = b"tally/1";

/// Most QUIC handshakes a node holds before the application accepts them; further
/// connection attempts are refused by quinn until some are accepted or fail. Peers are a
/// short static list, so this only bounds what strangers can make a node hold.
pub const PEER_HANDSHAKES_MAX: usize = 64;

/// Why TLS for the peer transport could not be set up, or why a peer's identity is not the
/// one expected. Nothing was started and no state changed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", file.display())]
    Read {
        /// What the file should hold ("cluster CA certificate", ...).
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{what} {} is not valid PEM: {source}", file.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// What the PEM parser said.
        source: rustls::pki_types::pem::Error,
    },
    /// A file holds no PEM certificate.
    #[error("{} holds no PEM certificate (expected a {what})", file.display())]
    NoCertificate {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        file: PathBuf,
    },
    /// A file holds no PEM private key.
    #[error("{} holds no PEM private key", file.display())]
    NoPrivateKey {
        /// The file.
        file: PathBuf,
    },
    /// The cluster CA certificate cannot serve as a trust anchor.
    #[error("cluster CA certificate {} is not usable as a trust anchor: {source}", file.display())]
    BadCa {
        /// The CA file.
        file: PathBuf,
        /// Why rustls refused it.
        source: Box<rustls::Error>,
    },
    /// The node ID cannot be a certificate's DNS name, so no certificate can name it.
    #[error(
        "node ID {node:?} cannot be a certificate DNS name: each dot-separated label must be \
         1-63 characters of letters, digits, '-' or '_', must not start or end with '-', the \
         name must not end with '.', and its last label must not be a number"
    )]
    NodeNotDnsName {
        /// The node ID.
        node: String,
    },
    /// This node's own certificate would be refused by its peers.
    #[error(
        "certificate {} is not valid for node {node} in this cluster (CA {}): {source}",
        cert_file.display(),
        ca_file.display()
    )]
    OwnCertificate {
        /// The certificate file.
        cert_file: PathBuf,
        /// The CA file it was checked against.
        ca_file: PathBuf,
        /// The node it should name.
        node: NodeId,
        /// Why it is not valid: not signed by the CA, expired, names another node, or lacks
        /// the serverAuth or clientAuth extended key usage.
        source: Box<rustls::Error>,
    },
    /// The private key does not fit the certificate, or rustls refused it.
    #[error(
        "private key {} cannot be used with certificate {}: {source}",
        key_file.display(),
        cert_file.display()
    )]
    Key {
        /// The key file.
        key_file: PathBuf,
        /// The certificate file.
        cert_file: PathBuf,
        /// What rustls said.
        source: Box<rustls::Error>,
    },
    /// rustls or quinn refused the configuration itself (not expected with the ring provider).
    #[error("TLS configuration refused: {0}")]
    Config(String),
    /// The connection has no verified peer certificate (it is not established, or the peer
    /// authenticated without one, which our server config never allows).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate could not be read for its names.
    #[error("the peer's certificate could not be parsed for its names")]
    PeerCertificateUnreadable,
    /// The peer's certificate does not name exactly one node.
    #[error("the peer's certificate holds {count} DNS names; a peer certificate names one node")]
    PeerNameCount {
        /// How many DNS names it holds.
        count: usize,
    },
    /// The peer's certificate names something that is not a node ID.
    #[error("the peer's certificate names {name:?}, which is not a node ID: {source}")]
    PeerNameNotNodeId {
        /// The name in the certificate.
        name: String,
        /// Why it is not a node ID.
        source: NameError,
    },
    /// webpki does not confirm the name read from the peer's certificate (a certificate this
    /// module cannot read correctly; it is refused rather than guessed at).
    #[error("the peer's certificate seems to name {name}, but webpki does not confirm it")]
    PeerNameUnconfirmed {
        /// The name read.
        name: NodeId,
    },
    /// The peer's certificate does not name the node it was expected to be.
    #[error("the peer's certificate is not valid for node {expected} (it names {named})")]
    PeerIsNot {
        /// The node expected.
        expected: NodeId,
        /// What the certificate names, as far as it could be read.
        named: String,
    },
}

/// Where PEM bytes came from: a file, or a label for PEM given in memory.
struct Pem<'a> {
    file: &'a Path,
    bytes: &'a [u8],
}

/// This node's TLS identity in the cluster: the cluster CA it trusts and the certificate and
/// key it presents. Cheap to clone; builds quinn server and client configs.
#[derive(Clone)]
pub struct ClusterTls {
    node: NodeId,
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
    /// Derived from the private key: the same for the node across restarts, secret to it.
    reset_secret: [u8; 32],
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("ClusterTls")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Reads the cluster CA certificate(s) from `ca`, this node's certificate chain from
    /// `cert` (end-entity certificate first) and its private key from `key`, and checks that
    /// the certificate chains to the CA, names `node`, and is valid now for both serverAuth
    /// and clientAuth: a misconfigured node fails here, naming the file, rather than at its
    /// peers' handshakes. `ca` may hold several CA certificates (for a CA rotation).
    pub fn load(ca: &Path, cert: &Path, key: &Path, node: NodeId) -> Result<Self, TlsError> {
        let ca_bytes = read("cluster CA certificate", ca)?;
        let cert_bytes = read("node certificate", cert)?;
        let key_bytes = read("node private key", key)?;
        Self::build(
            Pem {
                file: ca,
                bytes: &ca_bytes,
            },
            Pem {
                file: cert,
                bytes: &cert_bytes,
            },
            Pem {
                file: key,
                bytes: &key_bytes,
            },
            node,
        )
    }

    /// Like [`ClusterTls::load`], from PEM text in memory (tests, `tally demo`). Errors name
    /// the inputs `<CA PEM>`, `<certificate PEM>` and `<key PEM>`.
    pub fn from_pem(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        node: NodeId,
    ) -> Result<Self, TlsError> {
        Self::build(
            Pem {
                file: Path::new("<CA PEM>"),
                bytes: ca_pem,
            },
            Pem {
                file: Path::new("<certificate PEM>"),
                bytes: cert_pem,
            },
            Pem {
                file: Path::new("<key PEM>"),
                bytes: key_pem,
            },
            node,
        )
    }

    /// The node this identity names.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// A quinn server config that requires every client to present a certificate chaining
    /// to the cluster CA, with the peer transport settings `transport` (the peer transport's
    /// `transport_config`).
    pub fn server_config(&self, transport: Arc<quinn::TransportConfig>) -> quinn::ServerConfig {
        let mut config = quinn::ServerConfig::with_crypto(self.server.clone());
        config.transport_config(transport);
        config.max_incoming(PEER_HANDSHAKES_MAX);
        config
    }

    /// A quinn client config that presents this node's certificate and accepts a server only
    /// if its certificate chains to the cluster CA and names the server name given to
    /// `quinn::Endpoint::connect` (pass the peer's node ID), with the transport settings
    /// `transport`.
    pub fn client_config(&self, transport: Arc<quinn::TransportConfig>) -> quinn::ClientConfig {
        let mut config = quinn::ClientConfig::new(self.client.clone());
        config.transport_config(transport);
        config
    }

    fn build(ca: Pem<'_>, cert: Pem<'_>, key: Pem<'_>, node: NodeId) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(root_store(&ca)?);
        let chain = certificates("node certificate", &cert)?;
        let private_key = private_key(&key)?;
        let reset_secret = derive_reset_secret(private_key.secret_der());
        let server_name = node_server_name(&node)?;

        let bad_ca = |source| TlsError::BadCa {
            file: ca.file.to_owned(),
            source: Box::new(source),
        };
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| bad_ca(rustls::Error::General(e.to_string())))?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| bad_ca(rustls::Error::General(e.to_string())))?;

        // Check our own certificate the way peers will, so a wrong file fails here.
        let verify_own = || -> Result<(), rustls::Error> {
            let (end_entity, intermediates) = chain
                .split_first()
                .ok_or(rustls::Error::NoCertificatesPresented)?;
            let now = UnixTime::now();
            server_verifier.verify_server_cert(
                end_entity,
                intermediates,
                &server_name,
                &[],
                now,
            )?;
            client_verifier.verify_client_cert(end_entity, intermediates, now)?;
            Ok(())
        };
        verify_own().map_err(|source| TlsError::OwnCertificate {
            cert_file: cert.file.to_owned(),
            ca_file: ca.file.to_owned(),
            node: node.clone(),
            source: Box::new(source),
        })?;

        let key_error = |source| TlsError::Key {
            key_file: key.file.to_owned(),
            cert_file: cert.file.to_owned(),
            source: Box::new(source),
        };
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), private_key.clone_key())
            .map_err(key_error)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        // 0-RTT off: quinn accepts early data only when this is u32::MAX.
        server.max_early_data_size = 0;
        // No session tickets, so no resumption: every connection verifies the peer's
        // certificate afresh (peers reconnect rarely; a full handshake costs little).
        server.send_tls13_tickets = 0;

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, private_key)
            .map_err(key_error)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.enable_early_data = false;
        client.resumption = rustls::client::Resumption::disabled();

        let server = QuicServerConfig::try_from(server)
            .map_err(|e| TlsError::Config(format!("QUIC server: {e}")))?;
        let client = QuicClientConfig::try_from(client)
            .map_err(|e| TlsError::Config(format!("QUIC client: {e}")))?;
        Ok(Self {
            node,
            server: Arc::new(server),
            client: Arc::new(client),
            reset_secret,
        })
    }

    /// The key quinn signs stateless resets with. Stable across restarts of this node (it is
    /// derived from the node's private key), so when a node restarts, its peers' packets on
    /// the old connection are answered with a reset they recognise and they reconnect at
    /// once instead of waiting out the idle timeout (RFC 9000 §10.3).
    pub fn reset_key(&self) -> Arc<dyn quinn::crypto::HmacKey> {
        Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &self.reset_secret,
        ))
    }

    /// The key of the connection-ID generator, stable across restarts like
    /// [`Self::reset_key`]: a restarted node recognises its old connection IDs as its own and
    /// answers packets for them with a stateless reset instead of dropping them as invalid.
    pub fn connection_id_key(&self) -> u64 {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"tally connection id key v1\0");
        context.update(&self.reset_secret);
        let digest = context.finish();
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_le_bytes(key)
    }
}

/// A secret for stateless resets: SHA-256 over a domain label and the private key.
fn derive_reset_secret(private_key_der: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"tally stateless reset key v1\0");
    context.update(private_key_der);
    let mut secret = [0u8; 32];
    secret.copy_from_slice(context.finish().as_ref());
    secret
}

/// The DNS name a certificate for `node` carries, or why `node` cannot be one. Underscores
/// are accepted: rustls and webpki allow them in DNS names for compatibility, although the
/// strict hostname syntax of RFC 5280 does not (a public CA may refuse to issue them).
pub fn node_server_name(node: &NodeId) -> Result<ServerName<'static>, TlsError> {
    let refused = || TlsError::NodeNotDnsName {
        node: node.as_str().to_owned(),
    };
    // A trailing dot makes an absolute reference name, which no certificate can present.
    if node.as_str().ends_with('.') {
        return Err(refused());
    }
    ServerName::try_from(node.as_str().to_owned()).map_err(|_| refused())
}

/// The node the peer of an established connection is: the one DNS name in its certificate,
/// confirmed by webpki's name check. The certificate itself was verified against the cluster
/// CA during the handshake (a connection with an unverified peer never gets this far).
pub fn peer_node(connection: &quinn::Connection) -> Result<NodeId, TlsError> {
    let chain = peer_chain(connection)?;
    let end_entity = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    let node = named_node(end_entity)?;
    confirm_names(end_entity, &node)?;
    Ok(node)
}

/// Checks that the peer of an established connection has a certificate valid for `expected`
/// (for example the node a peer's hello claims to be).
pub fn check_peer_is(connection: &quinn::Connection, expected: &NodeId) -> Result<(), TlsError> {
    let chain = peer_chain(connection)?;
    let end_entity = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    confirm_names(end_entity, expected).map_err(|_| TlsError::PeerIsNot {
        expected: expected.clone(),
        named: match named_node(end_entity) {
            Ok(node) => node.to_string(),
            Err(error) => format!("no node ({error})"),
        },
    })
}

/// The TLS alert with which a handshake was refused, if `error` is one: on the side that
/// refused, the error quinn reports locally; on the other side, the close it received.
///
/// - `CertificateRequired`: the client sent no certificate;
/// - `UnknownCA`: a certificate does not chain to the cluster CA;
/// - `DecryptError`: a certificate names the cluster CA as its issuer but is not signed by it
///   (another CA with the same name; `tally certs` never makes two CAs with one name);
/// - `BadCertificate`: the server's certificate names another node than the one dialled;
/// - `CertificateExpired` and the rest: as rustls maps its certificate errors;
/// - `NoApplicationProtocol`: the peer does not speak [`ALPN`].
pub fn refusal_alert(error: &quinn::ConnectionError) -> Option<AlertDescription> {
    let code = match error {
        quinn::ConnectionError::TransportError(error) => error.code,
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        _ => return None,
    };
    // QUIC carries a TLS alert as the transport error 0x100 + alert (RFC 9001 §4.8).
    let alert = u64::from(code).checked_sub(0x100)?;
    u8::try_from(alert).ok().map(AlertDescription::from)
}

fn read(what: &'static str, file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        what,
        file: file.to_owned(),
        source,
    })
}

fn no_certificate(what: &'static str, pem: &Pem<'_>) -> TlsError {
    TlsError::NoCertificate {
        what,
        file: pem.file.to_owned(),
    }
}

fn certificates(
    what: &'static str,
    pem: &Pem<'_>,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            file: pem.file.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(no_certificate(what, pem));
    }
    Ok(certificates)
}

fn root_store(ca: &Pem<'_>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates("cluster CA certificate", ca)? {
        roots.add(certificate).map_err(|source| TlsError::BadCa {
            file: ca.file.to_owned(),
            source: Box::new(source),
        })?;
    }
    Ok(roots)
}

fn private_key(pem: &Pem<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::Error;
    PrivateKeyDer::from_pem_slice(pem.bytes).map_err(|source| match source {
        Error::NoItemsFound => TlsError::NoPrivateKey {
            file: pem.file.to_owned(),
        },
        source => TlsError::Pem {
            what: "node private key",
            file: pem.file.to_owned(),
            source,
        },
    })
}

fn peer_chain(connection: &quinn::Connection) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let identity = connection
        .peer_identity()
        .ok_or(TlsError::NoPeerCertificate)?;
    // quinn's rustls session reports the peer's verified chain as this type.
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    Ok(*chain)
}

/// The node a certificate names: its one DNS name, read without trusting it (callers confirm
/// it with [`confirm_names`]).
fn named_node(end_entity: &CertificateDer<'_>) -> Result<NodeId, TlsError> {
    let names = san::dns_names(end_entity).ok_or(TlsError::PeerCertificateUnreadable)?;
    let [name] = names.as_slice() else {
        return Err(TlsError::PeerNameCount { count: names.len() });
    };
    NodeId::new(*name).map_err(|source| TlsError::PeerNameNotNodeId {
        name: (*name).to_owned(),
        source,
    })
}

/// webpki's own check that the certificate is valid for `node`'s DNS name.
fn confirm_names(end_entity: &CertificateDer<'_>, node: &NodeId) -> Result<(), TlsError> {
    let server_name = node_server_name(node)?;
    let certificate = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|_| TlsError::PeerCertificateUnreadable)?;
    certificate
        .verify_is_valid_for_subject_name(&server_name)
        .map_err(|_| TlsError::PeerNameUnconfirmed { name: node.clone() })
}

/// Reads the DNS names of a certificate's subjectAltName extension: a small DER walk, so no
/// general X.509 parser is needed. It is only ever run on certificates rustls has already
/// verified, and every name it returns is confirmed by webpki before it is believed; what it
/// cannot read is `None`, never a panic.
mod san {
    /// DER tag of a SEQUENCE.
    const SEQUENCE: u8 = 0x30;
    /// DER tag of the TBSCertificate's `[3] EXPLICIT Extensions`.
    const EXTENSIONS: u8 = 0xA3;
    /// DER tag of an OBJECT IDENTIFIER.
    const OID: u8 = 0x06;
    /// DER tag of a BOOLEAN (an extension's `critical` flag).
    const BOOLEAN: u8 = 0x01;
    /// DER tag of an OCTET STRING (an extension's value).
    const OCTET_STRING: u8 = 0x04;
    /// GeneralName `dNSName [2] IMPLICIT IA5String`.
    const DNS_NAME: u8 = 0x82;
    /// The content of OID 2.5.29.17, subjectAltName.
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

    /// The DNS names in `certificate`, or `None` if its DER is not as expected.
    pub(super) fn dns_names(certificate: &[u8]) -> Option<Vec<&str>> {
        let (certificate, _) = expect(SEQUENCE, certificate)?;
        let (mut tbs, _) = expect(SEQUENCE, certificate)?;
        while !tbs.is_empty() {
            let (tag, value, rest) = tlv(tbs)?;
            if tag == EXTENSIONS {
                return dns_names_in_extensions(value);
            }
            tbs = rest;
        }
        Some(Vec::new())
    }

    fn dns_names_in_extensions(explicit: &[u8]) -> Option<Vec<&str>> {
        let (mut extensions, _) = expect(SEQUENCE, explicit)?;
        let mut names = Vec::new();
        while !extensions.is_empty() {
            let (extension, rest) = expect(SEQUENCE, extensions)?;
            extensions = rest;
            let (oid, after_oid) = expect(OID, extension)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            let value = match tlv(after_oid)? {
                (BOOLEAN, _, rest) => rest,
                _ => after_oid,
            };
            let (octets, _) = expect(OCTET_STRING, value)?;
            let (mut general_names, _) = expect(SEQUENCE, octets)?;
            while !general_names.is_empty() {
                let (tag, value, rest) = tlv(general_names)?;
                if tag == DNS_NAME {
                    names.push(std::str::from_utf8(value).ok()?);
                }
                general_names = rest;
            }
        }
        Some(names)
    }

    /// The value of the element at the start of `input` if it has tag `tag`, and the rest.
    fn expect(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
        match tlv(input)? {
            (found, value, rest) if found == tag => Some((value, rest)),
            _ => None,
        }
    }

    /// Splits the DER element at the start of `input` into (tag, value, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1F == 0x1F {
            return None; // Multi-byte tags appear nowhere we read.
        }
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 {
                return None; // Indefinite lengths are not DER; 4 bytes cover any certificate.
            }
            let (bytes, rest) = rest.split_at_checked(count)?;
            let length = bytes
                .iter()
                .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
            (length, rest)
        };
        let (value, rest) = rest.split_at_checked(length)?;
        Some((tag, value, rest))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_the_dns_names_rcgen_writes() {
            // Goal: the walk finds exactly the names a generated certificate carries.
            let certified =
                rcgen::generate_simple_self_signed(vec!["us-east".to_owned(), "eu_1".to_owned()])
                    .unwrap();
            assert_eq!(
                dns_names(certified.cert.der()).unwrap(),
                vec!["us-east", "eu_1"]
            );
        }

        #[test]
        fn truncated_or_garbage_der_is_none_not_a_panic() {
            // Goal: every prefix of a real certificate, and some junk, is handled without
            // panicking; a truncated certificate never yields names.
            let certified = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
            let der = certified.cert.der().to_vec();
            for end in 0..der.len() {
                assert_eq!(dns_names(&der[..end]), None, "prefix of {end} bytes");
            }
            for junk in [
                &[][..],
                &[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
                &[0x1F, 0, 0],
            ] {
                assert_eq!(dns_names(junk), None);
            }
        }
    }
}
