//! `tally certs`: a development cluster CA and one certificate per node, so an operator has a
//! working mutually authenticated cluster in one command.
//!
//! What this promises:
//! - the CA is self-signed, `CA:true` with path length 0 (it signs node certificates only),
//!   key usage certSign + cRLSign; its name holds the cluster ID and a tag of its own public
//!   key, so no two generated CAs share a name;
//! - each node certificate is signed by that CA, names its node with exactly one DNS
//!   subject-alternative name equal to the node ID (which is how `peer::tls` tells peers
//!   apart), has extended key usage serverAuth + clientAuth (every node both dials and
//!   accepts), and is valid from an hour ago for [`CERT_VALIDITY_DAYS`];
//! - every generated certificate is checked with the same code peers use
//!   (`ClusterTls::from_pem`) before anything is written;
//! - files are written only after every check passed; existing files are never replaced
//!   unless asked ([`Overwrite::Replace`], `--force`); private keys are created with mode
//!   0600 (owner only).
//!
//! Keys are Ed25519 (fixed-size signatures, so handshakes have the same size on every run),
//! generated from the operating system's randomness. Development only: in production, issue
//! node certificates from your own CA with the same shape (one DNS SAN = node ID, serverAuth
//! and clientAuth) and keep the CA key offline.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tally_core::NodeId;
use tally_core::limits::CLUSTER_ID_BYTES_MAX;

use tally_node::peer::tls::{ClusterTls, TlsError, node_server_name};

/// The cluster ID `tally certs` and [`generate_dev_cluster`] use unless told otherwise.
pub const DEV_CLUSTER_ID: &str = "tally-dev";

/// How long generated certificates are valid, in days.
pub const CERT_VALIDITY_DAYS: u64 = 365;

/// How far before "now" generated certificates become valid, in seconds, so nodes whose
/// clocks are a little behind accept them at once.
pub const CERT_BACKDATE_SECS: u64 = 3_600;

/// Most nodes one `tally certs` run makes certificates for.
pub const NODES_PER_CLUSTER_MAX: usize = 256;

/// The cluster CA certificate: every node trusts it.
pub const CA_CERT_FILE: &str = "ca.pem";

/// The cluster CA private key: needed only to issue more node certificates.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Why no cluster was generated or written. On a refusal before writing, nothing was
/// written; an I/O error while writing may leave the files before it in place.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// No node was named.
    #[error("name at least one node (--nodes us-east,us-west,eu)")]
    NoNodes,
    /// Too many nodes were named.
    #[error("{count} nodes named; at most {NODES_PER_CLUSTER_MAX} per run")]
    TooManyNodes {
        /// How many.
        count: usize,
    },
    /// A node was named twice (DNS names ignore case, so `EU` and `eu` are the same node).
    #[error("node {0} is named twice (node names that differ only in case are the same DNS name)")]
    DuplicateNode(NodeId),
    /// A node ID cannot be a certificate DNS name.
    #[error(transparent)]
    NotADnsName(TlsError),
    /// Two files would have the same name (a node called `ca`, or nodes `x` and `x-key`).
    #[error("node {node}: its file {file} would clash with another file of this cluster")]
    FileNameClash {
        /// The node.
        node: NodeId,
        /// The file name.
        file: String,
    },
    /// The cluster ID is not acceptable.
    #[error(
        "cluster ID {0:?} refused: use 1-{CLUSTER_ID_BYTES_MAX} letters, digits, '-', '_' or '.'"
    )]
    BadClusterId(String),
    /// A file exists and overwriting was not asked for.
    #[error("{} already exists; nothing was written (use --force to replace the cluster's files)", .0.display())]
    Exists(PathBuf),
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// rcgen could not make a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated certificate failed the check peers will make: a bug, reported not hidden.
    #[error("generated certificate for node {node} fails its own check: {source}")]
    SelfCheck {
        /// The node.
        node: NodeId,
        /// What the check said.
        source: TlsError,
    },
}

/// Whether writing may replace existing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse if any of the files exists (nothing is written).
    Refuse,
    /// Replace existing files (each is removed and created afresh, so modes are reset).
    Replace,
}

/// One node's certificate and private key, as PEM.
#[derive(Clone)]
pub struct NodeCredentials {
    /// The node the certificate names.
    pub node: NodeId,
    /// The certificate (signed by the cluster CA).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A generated development cluster, in memory.
#[derive(Clone)]
pub struct DevCluster {
    /// The cluster ID the CA names.
    pub cluster_id: String,
    /// The CA certificate.
    pub ca_cert_pem: String,
    /// The CA private key (PKCS#8).
    pub ca_key_pem: String,
    /// One entry per node, in the order given.
    pub nodes: Vec<NodeCredentials>,
    /// The last day the certificates are valid (UTC, `YYYY-MM-DD`).
    pub valid_until: String,
}

impl std::fmt::Debug for DevCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCluster")
            .field("cluster_id", &self.cluster_id)
            .field("nodes", &self.nodes)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// Where one node's files were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node.
    pub node: NodeId,
    /// `<node>.pem`.
    pub cert: PathBuf,
    /// `<node>-key.pem` (mode 0600).
    pub key: PathBuf,
}

/// Where a cluster's files were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `ca.pem`.
    pub ca_cert: PathBuf,
    /// `ca-key.pem` (mode 0600).
    pub ca_key: PathBuf,
    /// One entry per node, in the order given.
    pub nodes: Vec<NodeFiles>,
}

impl ClusterFiles {
    /// The files of `node`.
    pub fn node(&self, node: &NodeId) -> Option<&NodeFiles> {
        self.nodes.iter().find(|files| &files.node == node)
    }

    /// Loads `node`'s TLS identity from these files.
    pub fn tls(&self, node: &NodeId) -> Result<ClusterTls, TlsError> {
        let files = self.node(node).ok_or_else(|| TlsError::NoCertificate {
            what: "node certificate",
            file: self.dir.join(format!("{node}.pem")),
        })?;
        ClusterTls::load(&self.ca_cert, &files.cert, &files.key, node.clone())
    }
}

/// Generates a development cluster for `nodes` with cluster ID [`DEV_CLUSTER_ID`] and writes
/// it to `dir` (created if missing), refusing to replace existing files.
pub fn generate_dev_cluster(dir: &Path, nodes: &[NodeId]) -> Result<ClusterFiles, CertsError> {
    DevCluster::generate(DEV_CLUSTER_ID, nodes)?.write(dir, Overwrite::Refuse)
}

impl DevCluster {
    /// Generates a CA for `cluster_id` and a certificate for each of `nodes`, and checks each
    /// the way peers will.
    pub fn generate(cluster_id: &str, nodes: &[NodeId]) -> Result<Self, CertsError> {
        check_cluster_id(cluster_id)?;
        check_nodes(nodes)?;
        // rcgen takes `time` dates; they are built from the Unix epoch so that no `time`
        // feature beyond rcgen's own is relied on.
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let not_before =
            epoch + since_epoch.saturating_sub(Duration::from_secs(CERT_BACKDATE_SECS));
        let not_after = epoch + since_epoch + Duration::from_secs(CERT_VALIDITY_DAYS * 24 * 3600);

        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut ca_params = CertificateParams::default();
        // The CA's name carries part of its public key, so two clusters (even with the same
        // cluster ID) never share an issuer name: a certificate from another cluster is then
        // refused as from an unknown CA, not as a bad signature from ours.
        let key_tag: String = ca_key.public_key_raw()[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        ca_params.distinguished_name = names(
            &format!("Tally cluster CA {cluster_id} {key_tag}"),
            cluster_id,
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = not_before;
        ca_params.not_after = not_after;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let valid_until = ca_params.not_after.date().to_string();
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let mut credentials = Vec::with_capacity(nodes.len());
        for node in nodes {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = names(node.as_str(), cluster_id);
            params.subject_alt_names = vec![SanType::DnsName(node.as_str().try_into()?)];
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.use_authority_key_identifier_extension = true;
            params.not_before = not_before;
            params.not_after = not_after;
            let cert = params.signed_by(&key, &issuer)?;
            credentials.push(NodeCredentials {
                node: node.clone(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            });
        }
        let ca_cert_pem = ca_cert.pem();
        for node in &credentials {
            ClusterTls::from_pem(
                ca_cert_pem.as_bytes(),
                node.cert_pem.as_bytes(),
                node.key_pem.as_bytes(),
                node.node.clone(),
            )
            .map_err(|source| CertsError::SelfCheck {
                node: node.node.clone(),
                source,
            })?;
        }
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            ca_cert_pem,
            ca_key_pem: ca_key.serialize_pem(),
            nodes: credentials,
            valid_until,
        })
    }

    /// The credentials of `node`.
    pub fn node(&self, node: &NodeId) -> Option<&NodeCredentials> {
        self.nodes
            .iter()
            .find(|credentials| &credentials.node == node)
    }

    /// Loads `node`'s TLS identity from memory.
    pub fn tls(&self, node: &NodeId) -> Option<Result<ClusterTls, TlsError>> {
        let credentials = self.node(node)?;
        Some(ClusterTls::from_pem(
            self.ca_cert_pem.as_bytes(),
            credentials.cert_pem.as_bytes(),
            credentials.key_pem.as_bytes(),
            node.clone(),
        ))
    }

    /// Writes `ca.pem`, `ca-key.pem`, and `<node>.pem` and `<node>-key.pem` for each node
    /// into `dir` (created with mode 0700 if missing), keys with mode 0600, and syncs them to
    /// disk. With [`Overwrite::Refuse`], nothing is written if any of the files exists.
    pub fn write(&self, dir: &Path, overwrite: Overwrite) -> Result<ClusterFiles, CertsError> {
        let files = ClusterFiles {
            dir: dir.to_owned(),
            ca_cert: dir.join(CA_CERT_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            nodes: self
                .nodes
                .iter()
                .map(|credentials| NodeFiles {
                    node: credentials.node.clone(),
                    cert: dir.join(node_cert_file(&credentials.node)),
                    key: dir.join(node_key_file(&credentials.node)),
                })
                .collect(),
        };
        let mut plan = vec![
            (&files.ca_cert, &self.ca_cert_pem, Secrecy::Public),
            (&files.ca_key, &self.ca_key_pem, Secrecy::Secret),
        ];
        for (paths, credentials) in files.nodes.iter().zip(&self.nodes) {
            plan.push((&paths.cert, &credentials.cert_pem, Secrecy::Public));
            plan.push((&paths.key, &credentials.key_pem, Secrecy::Secret));
        }
        create_dir(dir)?;
        if overwrite == Overwrite::Refuse {
            if let Some((path, _, _)) = plan.iter().find(|(path, _, _)| exists(path)) {
                return Err(CertsError::Exists((*path).clone()));
            }
        }
        for (path, contents, secrecy) in &plan {
            write_file(path, contents, *secrecy, overwrite)?;
        }
        sync_dir(dir)?;
        Ok(files)
    }
}

/// `<node>.pem`.
pub fn node_cert_file(node: &NodeId) -> String {
    format!("{node}.pem")
}

/// `<node>-key.pem`.
pub fn node_key_file(node: &NodeId) -> String {
    format!("{node}-key.pem")
}

fn names(common_name: &str, cluster_id: &str) -> DistinguishedName {
    let mut names = DistinguishedName::new();
    names.push(DnType::CommonName, common_name);
    names.push(DnType::OrganizationName, cluster_id);
    names
}

fn check_cluster_id(cluster_id: &str) -> Result<(), CertsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let fits = !cluster_id.is_empty() && cluster_id.len() <= CLUSTER_ID_BYTES_MAX;
    if fits && cluster_id.chars().all(allowed) {
        Ok(())
    } else {
        Err(CertsError::BadClusterId(cluster_id.to_owned()))
    }
}

fn check_nodes(nodes: &[NodeId]) -> Result<(), CertsError> {
    if nodes.is_empty() {
        return Err(CertsError::NoNodes);
    }
    if nodes.len() > NODES_PER_CLUSTER_MAX {
        return Err(CertsError::TooManyNodes { count: nodes.len() });
    }
    let mut dns_names = BTreeSet::new();
    let mut file_names: BTreeSet<String> = [CA_CERT_FILE, CA_KEY_FILE]
        .iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    for node in nodes {
        node_server_name(node).map_err(CertsError::NotADnsName)?;
        if !dns_names.insert(node.as_str().to_ascii_lowercase()) {
            return Err(CertsError::DuplicateNode(node.clone()));
        }
        for file in [node_cert_file(node), node_key_file(node)] {
            // Lower case: the files must not clash on case-insensitive file systems either.
            if !file_names.insert(file.to_ascii_lowercase()) {
                return Err(CertsError::FileNameClash {
                    node: node.clone(),
                    file,
                });
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrecy {
    Public,
    Secret,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exists(path: &Path) -> bool {
    // A dangling symlink counts as existing: it would be written through.
    path.symlink_metadata().is_ok()
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_error(dir))
}

fn write_file(
    path: &Path,
    contents: &str,
    secrecy: Secrecy,
    overwrite: Overwrite,
) -> Result<(), CertsError> {
    if overwrite == Overwrite::Replace && exists(path) {
        // Removed, not truncated: the new file gets its own mode, and a symlink is not
        // followed.
        std::fs::remove_file(path).map_err(io_error(path))?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(
        &mut options,
        match secrecy {
            Secrecy::Secret => 0o600,
            Secrecy::Public => 0o644,
        },
    );
    #[cfg(not(unix))]
    let _ = secrecy;
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents.as_bytes())
        .map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn sync_dir(dir: &Path) -> Result<(), CertsError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(dir))?;
    #[cfg(not(unix))]
    let _ = (dir, File::open);
    Ok(())
}

/// Settings for `tally certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory to write the files to (created, owner-only, if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Node IDs, comma-separated; each gets a certificate naming it.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<NodeId>,
    /// The cluster's ID, named in every certificate's subject.
    #[arg(long, default_value = DEV_CLUSTER_ID)]
    pub cluster_id: String,
    /// Replace existing files of the same names.
    #[arg(long)]
    pub force: bool,
}

/// Runs `tally certs`: generates, writes and says what was written and how to use it.
pub fn main(args: &CertsArgs) -> Result<(), String> {
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let cluster = DevCluster::generate(&args.cluster_id, &args.nodes).map_err(|e| e.to_string())?;
    let files = cluster
        .write(&args.out, overwrite)
        .map_err(|e| e.to_string())?;
    println!("{}", describe(&cluster, &files));
    Ok(())
}

/// What `tally certs` prints after writing.
fn describe(cluster: &DevCluster, files: &ClusterFiles) -> String {
    let mut lines = vec![
        format!(
            "Wrote a development cluster CA and {} node certificate(s) for cluster {:?} to {}:",
            files.nodes.len(),
            cluster.cluster_id,
            files.dir.display()
        ),
        format!(
            "  {:<28} cluster CA certificate: every node trusts it",
            CA_CERT_FILE
        ),
        format!(
            "  {:<28} cluster CA private key (0600): only for issuing more certificates; keep it offline",
            CA_KEY_FILE
        ),
    ];
    for node in &files.nodes {
        lines.push(format!(
            "  {:<28} certificate for node {} (DNS name {}, serverAuth + clientAuth)",
            display_name(&node.cert),
            node.node,
            node.node
        ));
        lines.push(format!(
            "  {:<28} private key for node {} (0600)",
            display_name(&node.key),
            node.node
        ));
    }
    lines.push(format!(
        "Certificates are valid until {} (UTC). Each node needs {CA_CERT_FILE}, <node>.pem and \
         <node>-key.pem, and its node ID must be the name its certificate carries.",
        cluster.valid_until
    ));
    lines.push(
        "Development only: in production, issue node certificates from your own CA with one DNS \
         name equal to the node ID and extended key usages serverAuth and clientAuth."
            .to_owned(),
    );
    lines.join("\n")
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names
            .iter()
            .map(|name| NodeId::new(*name).unwrap())
            .collect()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_every_file_with_private_keys_owner_only() {
        // Goal: the files the CLI promises exist, keys are 0600, certificates load as the
        // nodes they name.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let ids = nodes(&["us-east", "us-west", "eu"]);
        let files = generate_dev_cluster(&out, &ids).unwrap();
        for name in [
            "ca.pem",
            "ca-key.pem",
            "us-east.pem",
            "us-east-key.pem",
            "us-west.pem",
            "us-west-key.pem",
            "eu.pem",
            "eu-key.pem",
        ] {
            assert!(out.join(name).is_file(), "{name} missing");
        }
        #[cfg(unix)]
        {
            assert_eq!(mode(&files.ca_key), 0o600);
            assert_eq!(mode(&out), 0o700);
            for node in &files.nodes {
                assert_eq!(mode(&node.key), 0o600, "{}", node.key.display());
                assert_eq!(mode(&node.cert), 0o644, "{}", node.cert.display());
            }
        }
        for id in &ids {
            assert_eq!(files.tls(id).unwrap().node(), id);
        }
    }

    #[test]
    fn refuses_to_overwrite_without_force_and_writes_nothing() {
        // Goal: a second run over the same directory changes nothing unless forced; forced,
        // it replaces the files (a new CA) and keys are still 0600.
        let dir = tempfile::tempdir().unwrap();
        let ids = nodes(&["a", "b"]);
        let first = generate_dev_cluster(dir.path(), &ids).unwrap();
        let ca_before = std::fs::read(&first.ca_cert).unwrap();

        let again = DevCluster::generate(DEV_CLUSTER_ID, &nodes(&["b", "c"])).unwrap();
        let refused = again.write(dir.path(), Overwrite::Refuse).unwrap_err();
        assert!(matches!(&refused, CertsError::Exists(path) if path.ends_with("ca.pem")));
        assert!(!dir.path().join("c.pem").exists(), "nothing may be written");
        assert_eq!(std::fs::read(&first.ca_cert).unwrap(), ca_before);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let loose = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(dir.path().join("b-key.pem"), loose).unwrap();
        }
        let replaced = again.write(dir.path(), Overwrite::Replace).unwrap();
        assert_ne!(std::fs::read(&replaced.ca_cert).unwrap(), ca_before);
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join("b-key.pem")), 0o600);
        replaced.tls(&NodeId::new("c").unwrap()).unwrap();
    }

    #[test]
    fn refuses_names_that_cannot_be_certificates_or_files() {
        // Goal: every node ID that would make a broken cluster is refused before generating.
        let refused = |names: &[&str]| DevCluster::generate(DEV_CLUSTER_ID, &nodes(names));
        assert!(matches!(refused(&[]), Err(CertsError::NoNodes)));
        for bad in [
            "-east",
            "east-",
            "a..b",
            "a.",
            "123",
            "eu.1",
            &"x".repeat(64),
        ] {
            let error = refused(&[bad]).unwrap_err();
            assert!(
                matches!(error, CertsError::NotADnsName(_)),
                "{bad}: {error}"
            );
            assert!(error.to_string().contains(bad), "{error}");
        }
        assert!(matches!(
            refused(&["eu", "EU"]),
            Err(CertsError::DuplicateNode(_))
        ));
        assert!(matches!(
            refused(&["ca"]),
            Err(CertsError::FileNameClash { .. })
        ));
        assert!(matches!(
            refused(&["x", "x-key"]),
            Err(CertsError::FileNameClash { .. })
        ));
        assert!(matches!(
            DevCluster::generate("bad id", &nodes(&["a"])),
            Err(CertsError::BadClusterId(_))
        ));
        // Underscores are fine: rustls and webpki accept them in DNS names.
        refused(&["eu_west", "us-east.1a"]).unwrap();
    }

    #[test]
    fn the_summary_names_every_file() {
        // Goal: the operator is told what was written and what each file is for.
        let dir = tempfile::tempdir().unwrap();
        let ids = nodes(&["us-east", "eu"]);
        let cluster = DevCluster::generate("prod-like", &ids).unwrap();
        let files = cluster.write(dir.path(), Overwrite::Refuse).unwrap();
        let summary = describe(&cluster, &files);
        for expected in [
            "ca.pem",
            "ca-key.pem",
            "us-east.pem",
            "eu-key.pem",
            "prod-like",
            "0600",
        ] {
            assert!(summary.contains(expected), "{expected} not in:\n{summary}");
        }
    }
}
