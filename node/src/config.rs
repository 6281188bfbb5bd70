//! Node configuration: embedded defaults, then a TOML file, then command-line flags.
//!
//! `tally run` with nothing else serves one region on 127.0.0.1:8080 with the poll
//! `superbowl` (options `green` and `blue`, open from start-up), data in `./tally-data`.
//! Every setting has a default here, a key in the TOML file, and (for the common ones) a flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tally_core::limits::{POLL_SECONDS_MAX, RESERVED_VOTE_IDS_MAX};
use tally_core::{NodeId, OptionName, PollId, PollSpec, PollWindow, UnixMillis, VoteIdKey};

use tally_core::abuse::{AbuseControls, AbuseSettings};

// The API's body and batch limits are the edge's too: defined with the API's types.
pub use tally_client::api::{BATCH_BODY_BYTES_MAX, BATCH_VOTES_MAX, VOTE_BODY_BYTES_MAX};

/// Smallest `max_clock_offset_ms`: below a few round trips, measurement error alone would
/// hold healthy nodes.
pub const MAX_CLOCK_OFFSET_MS_MIN: u64 = 50;

/// Largest `max_clock_offset_ms` (an hour).
pub const MAX_CLOCK_OFFSET_MS_MAX: u64 = 3_600_000;

/// Largest admin request body, in bytes.
pub const ADMIN_BODY_BYTES_MAX: usize = 16 * 1024;

/// Default memory budget of SSE subscribers, in bytes (64 MiB: 21,845 subscribers served
/// below hyper, 2,730 through it). With edges in front, a node's subscribers are the edges'
/// (one per poll per edge); viewers belong on the edges.
pub const VIEWER_MEMORY_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Largest memory budget of SSE subscribers, in bytes (1 TiB: a typo's guard).
pub const VIEWER_MEMORY_BYTES_MAX: u64 = 1 << 40;

/// A poll defined in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// The poll's name.
    pub id: String,
    /// Its options, in display order.
    pub options: Vec<String>,
    /// Open it as soon as the node starts (default true). A node with peers opens it only
    /// once its clock is checked against theirs; `opens_at` overrides the start-up time.
    #[serde(default = "default_true")]
    pub open: bool,
    /// Open it at this RFC 3339 time (`2027-02-07T23:30:00Z`) instead of at start-up: every
    /// node proposes the same window whatever its clock, at once, even cut off from its peers.
    pub opens_at: Option<String>,
    /// Close it this many seconds after it opens (default: no end).
    pub duration_seconds: Option<u64>,
    /// Size the poll's dedupe index for this many distinct vote IDs at start-up (default:
    /// grow as votes come). Growing rehashes every ID held, a pause of seconds at tens of
    /// millions of IDs while votes wait; a reserved index does not grow before it holds this
    /// many, and costs its memory at once (~5 bytes per slot, slots a power of two ≥ 8/7 of
    /// this: ~335 MB for 30 million). At most [`RESERVED_VOTE_IDS_MAX`].
    pub expected_votes: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// One peer of the static peer list.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The peer's node ID, as its certificate names it.
    pub id: String,
    /// Its QUIC (UDP) address: `IP:port`, or `host:port` looked up at every connection
    /// attempt (a Kubernetes pod's DNS name follows the pod to a new IP).
    pub address: PeerAddress,
}

/// Where a peer listens: `IP:port` or `host:port` (validated; resolved when dialling).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PeerAddress(String);

/// Longest host name a peer address may carry, in bytes (DNS's limit).
pub const PEER_HOST_BYTES_MAX: usize = 253;

impl PeerAddress {
    /// The address as written (`host:port` or `IP:port`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The socket address, if the address is a literal `IP:port` (no lookup needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.0.parse().ok()
    }
}

impl From<SocketAddr> for PeerAddress {
    fn from(address: SocketAddr) -> Self {
        Self(address.to_string())
    }
}

impl TryFrom<String> for PeerAddress {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text.parse::<SocketAddr>().is_ok() {
            return Ok(Self(text));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "peer address {text:?} needs a port: host:port or IP:port"
            ));
        };
        let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
        let host_ok = !host.is_empty()
            && host.len() <= PEER_HOST_BYTES_MAX
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !port_ok || !host_ok {
            return Err(format!(
                "peer address {text:?} is not host:port or IP:port (a DNS name of letters, \
                 digits, '-' and '.', and a port from 1 to 65535)"
            ));
        }
        Ok(Self(text))
    }
}

impl std::fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The certificate files of this node (see `tally certs`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), naming `node_id`.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `tally certs --out DIR` writes for `node`.
    pub fn in_dir(dir: &Path, node: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{node}.pem")),
            key: dir.join(format!("{node}-key.pem")),
        }
    }
}

/// Everything a node needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's name, as its certificate will name it.
    pub node_id: String,
    /// The cluster this node belongs to.
    pub cluster_id: String,
    /// Address the HTTP API, SSE and dashboard listen on.
    pub listen: SocketAddr,
    /// When set, `/metrics` and `/v1/admin/*` are served on this address only, not on
    /// `listen` (keep it on a private network).
    pub ops_listen: Option<SocketAddr>,
    /// Directory for the write-ahead log and snapshots.
    pub data_dir: PathBuf,
    /// Keep votes in memory only (benchmarks; NOT durable).
    pub memory_only: bool,
    /// 64 hex digits: the cluster-wide key for non-UUID vote IDs.
    pub vote_id_key: String,
    /// Bearer token for the admin API; the admin API is disabled when empty.
    pub admin_token: String,
    /// Bearer token of the edge tier (`tally edge`): it allows posting vote batches and
    /// nothing else. When set, batches need it (or the admin token), and batches carrying it
    /// skip the per-IP rate limit (the edges enforce that for their voters). Empty: batches
    /// need the admin token while vote tokens are on, and nothing otherwise.
    pub batch_token: String,
    /// How often live results are pushed to SSE subscribers, in milliseconds.
    pub sse_tick_ms: u64,
    /// How often the results snapshot is refreshed, in milliseconds.
    pub results_tick_ms: u64,
    /// Commands waiting for the engine before requests are shed with 503.
    pub engine_queue_max: usize,
    /// Memory budget of SSE subscribers, in bytes: each is charged what it costs
    /// ([`tally_serve::viewers::VIEWER_BYTES`] served below hyper, more through it), and one
    /// that would take the charges over the budget gets 503 `overloaded`.
    pub viewer_memory_bytes: u64,
    /// No longer read: accepted so that a configuration written for an older node still
    /// starts (subscribers are capped by `viewer_memory_bytes`; the node logs a warning).
    pub sse_subscribers_max: Option<usize>,
    /// A connection whose writes pend this long (a client that stopped reading, e.g. an SSE
    /// subscriber) is dropped, in milliseconds.
    pub write_stall_ms: u64,
    /// A connection must send a complete request head within this long of the node starting
    /// to wait for one, in milliseconds; otherwise it is closed. The wait starts when the
    /// connection opens and again after each response, so this also closes a connection that
    /// sends nothing (slowloris, idle connections) or stays idle between keep-alive requests.
    /// It never cuts a response being sent (SSE streams).
    pub header_read_timeout_ms: u64,
    /// A request body (vote, batch, admin routes) must arrive whole within this long after
    /// its headers, in milliseconds; otherwise 408, nothing counted, connection closed.
    pub body_read_timeout_ms: u64,
    /// How long a stopping node (SIGTERM, Ctrl-C) waits for in-flight requests to finish
    /// before it closes the connections still open, in milliseconds. Votes the engine has
    /// accepted are fsynced either way; keep this under the orchestrator's grace period
    /// (Kubernetes: `terminationGracePeriodSeconds`, 30 s by default).
    pub shutdown_drain_ms: u64,
    /// Free bytes the data directory must keep: below it the node refuses new votes (503 +
    /// `Retry-After`, nothing counted) and turns not-ready, until free space is back above it
    /// by a quarter. The default covers what the node may still have to write once it starts
    /// refusing (see [`crate::disk_watch::DISK_RESERVE_BYTES_DEFAULT`]); 0 turns the
    /// refusal off, and a full disk then fails the log (the node exits).
    pub disk_reserve_bytes: u64,
    /// UDP address for peer sync over QUIC; peer sync is off when absent.
    pub peer_listen: Option<SocketAddr>,
    /// The static peer list. An entry naming this node itself is skipped, so every member
    /// of a Kubernetes StatefulSet can share one list (see [`Config::other_peers`]).
    pub peers: Vec<PeerEntry>,
    /// Certificate files for mutual TLS between peers (required with peers).
    pub tls: Option<TlsFiles>,
    /// How often each peer is asked for news and counter state, in milliseconds.
    pub sync_tick_ms: u64,
    /// Most records one sync round carries (a lagging peer asks again at once).
    pub sync_records_per_round_max: usize,
    /// How long a starting node waits to catch up with its peers before it reports ready
    /// anyway (a peer may be down), in milliseconds.
    pub catch_up_timeout_ms: u64,
    /// Wall clocks further apart than this disagree, in milliseconds: a node whose clock is
    /// this far from a majority of the peers it can reach counts no votes (503, not ready)
    /// until it agrees again; peers' offsets are measured on every sync round.
    pub max_clock_offset_ms: u64,
    /// When a vote is answered `counted` (DESIGN.md §4): `local` (the default) once this
    /// node's log is fsynced; `replicated` once an ack peer (`ack_peers`) has fsynced its
    /// record too, so losing this node's whole disk loses no acknowledged vote.
    pub ack_mode: AckMode,
    /// The peers whose fsync may complete a replicated ack (usually the other node of the
    /// same region); each must be in `peers` and speak peer protocol 3 or newer. An entry
    /// naming this node itself is skipped, so one list serves every node of a region.
    pub ack_peers: Vec<String>,
    /// How long a replicated ack waits for an ack peer once this node's fsync is done, in
    /// milliseconds; then `ack_fallback` decides.
    pub ack_timeout_ms: u64,
    /// What a replicated ack does when no ack peer answers in time: `refuse` (the default:
    /// 503 + `Retry-After`, nothing acknowledged) or `local` (acknowledge after the local
    /// fsync alone, counted in `tally_ack_peer_misses_total{outcome="local"}`).
    pub ack_fallback: AckFallback,
    /// Polls to create at start-up.
    pub polls: Vec<PollConfig>,
    /// The regions' public base URLs (`https://us-east.tally.example.net`), nearest first:
    /// the voting page (`/vote/{poll}`) votes through them, then through this node itself.
    pub public_endpoints: Vec<String>,
    /// Votes per second allowed per client IP on the vote and batch routes (0: no limit).
    pub rate_limit_per_ip_per_second: u32,
    /// Votes a client IP may send at once after an idle spell (with the per-IP limit).
    pub rate_limit_per_ip_burst: u32,
    /// Votes per second allowed per token-verified voter (0: no limit; needs vote tokens).
    pub rate_limit_per_voter_per_second: u32,
    /// Votes a voter may send at once (with the per-voter limit).
    pub rate_limit_per_voter_burst: u32,
    /// Hex HMAC-SHA256 key shared with the app's backend: when set, single votes need a
    /// signed vote token and the token's voter is the vote ID (one vote per voter per poll).
    pub vote_token_hmac_key: String,
    /// Hex Ed25519 public key (32 bytes) of the app's backend: as `vote_token_hmac_key`, but
    /// nodes hold only the public half. At most one of the two may be set.
    pub vote_token_ed25519_public_key: String,
    /// Start even if the write-ahead log is damaged and the node has no peers to get the
    /// lost records from, accepting that loss (off: such a node refuses to start and names
    /// what is missing). The damaged files are kept aside either way. Meant for one start
    /// after an operator has decided; a node with peers never needs it.
    pub accept_log_damage: bool,
}

/// When a vote is answered `counted` (see [`Config::ack_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After this node's fsync.
    #[default]
    Local,
    /// After this node's fsync and an ack peer's.
    Replicated,
}

/// What a replicated ack does when no ack peer answers in time (see [`Config::ack_fallback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckFallback {
    /// Refuse with 503 + `Retry-After`: nothing is acknowledged.
    #[default]
    Refuse,
    /// Acknowledge after the local fsync alone, and count it.
    Local,
}

impl std::str::FromStr for AckMode {
    type Err = String;

    /// As in the config file (`local`, `replicated`): what the flag and the environment
    /// variable take.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "local" => Ok(Self::Local),
            "replicated" => Ok(Self::Replicated),
            _ => Err(format!(
                "unknown ack mode {text:?}: expected \"local\" or \"replicated\""
            )),
        }
    }
}

impl std::str::FromStr for AckFallback {
    type Err = String;

    /// As in the config file (`refuse`, `local`): what the flag and the environment variable
    /// take.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "refuse" => Ok(Self::Refuse),
            "local" => Ok(Self::Local),
            _ => Err(format!(
                "unknown ack fallback {text:?}: expected \"refuse\" or \"local\""
            )),
        }
    }
}

/// Shortest `ack_timeout_ms`.
pub const ACK_TIMEOUT_MS_MIN: u64 = 10;

/// Longest `ack_timeout_ms` (votes wait this long at most for an ack peer).
pub const ACK_TIMEOUT_MS_MAX: u64 = 60_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            cluster_id: "tally-dev".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: None,
            data_dir: PathBuf::from("./tally-data"),
            memory_only: false,
            vote_id_key: tally_core::DEV_VOTE_ID_KEY_HEX.into(),
            admin_token: String::new(),
            batch_token: String::new(),
            sse_tick_ms: 500,
            results_tick_ms: 100,
            engine_queue_max: 65_536,
            viewer_memory_bytes: VIEWER_MEMORY_BYTES_DEFAULT,
            sse_subscribers_max: None,
            write_stall_ms: tally_serve::stall_guard::WRITE_STALL_MS_DEFAULT,
            header_read_timeout_ms: tally_serve::connections::HEADER_READ_TIMEOUT_MS_DEFAULT,
            body_read_timeout_ms: tally_serve::body::BODY_READ_TIMEOUT_MS_DEFAULT,
            shutdown_drain_ms: 20_000,
            disk_reserve_bytes: crate::disk_watch::DISK_RESERVE_BYTES_DEFAULT,
            peer_listen: None,
            peers: Vec::new(),
            tls: None,
            sync_tick_ms: 100,
            sync_records_per_round_max: 65_536,
            catch_up_timeout_ms: 10_000,
            max_clock_offset_ms: crate::clock_watch::MAX_CLOCK_OFFSET_MS_DEFAULT,
            ack_mode: AckMode::Local,
            ack_peers: Vec::new(),
            ack_timeout_ms: 500,
            ack_fallback: AckFallback::Refuse,
            public_endpoints: Vec::new(),
            polls: vec![PollConfig {
                id: "superbowl".into(),
                options: vec!["green".into(), "blue".into()],
                open: true,
                opens_at: None,
                duration_seconds: None,
                expected_votes: None,
            }],
            rate_limit_per_ip_per_second: 0,
            rate_limit_per_ip_burst: 20,
            rate_limit_per_voter_per_second: 0,
            rate_limit_per_voter_burst: 5,
            vote_token_hmac_key: String::new(),
            vote_token_ed25519_public_key: String::new(),
            accept_log_damage: false,
        }
    }
}

pub use tally_serve::config_file::ConfigError;

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        tally_serve::config_file::read_toml(path)
    }

    /// Checks every setting; returns the parsed pieces the node needs.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let invalid = |setting, message: String| ConfigError::Invalid { setting, message };
        let node_id =
            NodeId::new(self.node_id.clone()).map_err(|e| invalid("node_id", e.to_string()))?;
        if self.cluster_id.is_empty()
            || self.cluster_id.len() > tally_core::limits::CLUSTER_ID_BYTES_MAX
        {
            return Err(invalid("cluster_id", "must be 1 to 64 bytes".into()));
        }
        let vote_id_key =
            VoteIdKey::from_hex(&self.vote_id_key).map_err(|m| invalid("vote_id_key", m))?;
        if self.polls.len() > tally_core::limits::POLLS_MAX {
            return Err(invalid(
                "polls",
                format!(
                    "{} polls are listed; a node holds at most {}",
                    self.polls.len(),
                    tally_core::limits::POLLS_MAX
                ),
            ));
        }
        if !(10..=60_000).contains(&self.sse_tick_ms) {
            return Err(invalid(
                "sse_tick_ms",
                "must be between 10 and 60000".into(),
            ));
        }
        if !(10..=60_000).contains(&self.results_tick_ms) {
            return Err(invalid(
                "results_tick_ms",
                "must be between 10 and 60000".into(),
            ));
        }
        tally_serve::config_file::check_serving_deadlines(
            self.write_stall_ms,
            self.header_read_timeout_ms,
            self.body_read_timeout_ms,
            self.shutdown_drain_ms,
        )?;
        if self.disk_reserve_bytes > crate::disk_watch::DISK_RESERVE_BYTES_MAX {
            return Err(invalid(
                "disk_reserve_bytes",
                format!(
                    "must be at most {} (1 TiB)",
                    crate::disk_watch::DISK_RESERVE_BYTES_MAX
                ),
            ));
        }
        for url in &self.public_endpoints {
            validate_public_endpoint(url).map_err(|m| invalid("public_endpoints", m))?;
        }
        let offset_range = MAX_CLOCK_OFFSET_MS_MIN..=MAX_CLOCK_OFFSET_MS_MAX;
        if !offset_range.contains(&self.max_clock_offset_ms) {
            return Err(invalid(
                "max_clock_offset_ms",
                format!("must be between {MAX_CLOCK_OFFSET_MS_MIN} and {MAX_CLOCK_OFFSET_MS_MAX}"),
            ));
        }
        self.validate_peers()?;
        self.validate_acks()?;
        if let Some(count) = self.sse_subscribers_max {
            tracing::warn!(
                sse_subscribers_max = count,
                viewer_memory_bytes = self.viewer_memory_bytes,
                "sse_subscribers_max is no longer read: SSE subscribers are capped by the memory \
                 budget viewer_memory_bytes; remove the setting"
            );
        }
        if !(tally_serve::viewers::VIEWER_BYTES_THROUGH_HYPER..=VIEWER_MEMORY_BYTES_MAX)
            .contains(&self.viewer_memory_bytes)
        {
            return Err(invalid(
                "viewer_memory_bytes",
                format!(
                    "must be between {} (one subscriber) and {VIEWER_MEMORY_BYTES_MAX} (1 TiB)",
                    tally_serve::viewers::VIEWER_BYTES_THROUGH_HYPER
                ),
            ));
        }
        if self.engine_queue_max == 0 {
            return Err(invalid(
                "engine_queue_max",
                "queue limits must be at least 1".into(),
            ));
        }
        self.abuse_controls()?;
        // The polls too, so a bad one is refused before start-up replays the log (recovery
        // builds their definitions again, opened at its clock's time).
        self.poll_specs(UnixMillis(0))?;
        Ok(Validated {
            node_id,
            vote_id_key,
        })
    }

    /// The rate limits and vote-token verifier these settings ask for (all off by default).
    pub fn abuse_controls(&self) -> Result<AbuseControls, ConfigError> {
        AbuseSettings {
            per_ip_per_second: self.rate_limit_per_ip_per_second,
            per_ip_burst: self.rate_limit_per_ip_burst,
            per_voter_per_second: self.rate_limit_per_voter_per_second,
            per_voter_burst: self.rate_limit_per_voter_burst,
            hmac_key_hex: self.vote_token_hmac_key.clone(),
            ed25519_public_key_hex: self.vote_token_ed25519_public_key.clone(),
        }
        .controls()
        .map_err(|e| ConfigError::Invalid {
            setting: e.setting,
            message: e.message,
        })
    }

    fn validate_acks(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: String| ConfigError::Invalid { setting, message };
        if !(ACK_TIMEOUT_MS_MIN..=ACK_TIMEOUT_MS_MAX).contains(&self.ack_timeout_ms) {
            return Err(invalid(
                "ack_timeout_ms",
                format!("must be between {ACK_TIMEOUT_MS_MIN} and {ACK_TIMEOUT_MS_MAX}"),
            ));
        }
        for (i, peer) in self.ack_peers.iter().enumerate() {
            if self.ack_peers[..i].contains(peer) {
                return Err(invalid("ack_peers", format!("{peer} is listed twice")));
            }
            if peer == &self.node_id {
                // Skipped, like the peer list's own entry: one list serves a region's nodes.
                continue;
            }
            if !self.other_peers().any(|p| &p.id == peer) {
                return Err(invalid(
                    "ack_peers",
                    format!("{peer} is not in peers: an ack peer must be a listed peer"),
                ));
            }
        }
        match (self.ack_mode, self.ack_peer_ids().is_empty()) {
            (AckMode::Replicated, true) => Err(invalid(
                "ack_peers",
                "ack_mode = \"replicated\" needs at least one ack peer other than this node \
                 (the other node of the region)"
                    .into(),
            )),
            (AckMode::Replicated, false) if self.memory_only => Err(invalid(
                "ack_mode",
                "replicated acks need a durable log (memory_only is set)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The ack peers as node IDs, without this node's own entry (validated by
    /// [`Config::validate`]).
    pub fn ack_peer_ids(&self) -> Vec<NodeId> {
        self.ack_peers
            .iter()
            .filter(|p| **p != self.node_id)
            .filter_map(|p| NodeId::new(p.clone()).ok())
            .collect()
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            setting: "peers",
            message,
        };
        if self.peers.is_empty() {
            return Ok(());
        }
        if self.peer_listen.is_none() {
            return Err(invalid(
                "peers are listed but peer_listen (the QUIC address) is not set".into(),
            ));
        }
        if self.tls.is_none() {
            return Err(invalid(
                "peers need [tls] ca, cert and key files (see `tally certs`)".into(),
            ));
        }
        for (i, peer) in self.peers.iter().enumerate() {
            NodeId::new(peer.id.clone())
                .map_err(|e| invalid(format!("peer id {:?}: {e}", peer.id)))?;
            if self.peers[..i].iter().any(|p| p.id == peer.id) {
                return Err(invalid(format!("peer {} is listed twice", peer.id)));
            }
        }
        if !(10..=60_000).contains(&self.sync_tick_ms) {
            return Err(invalid("sync_tick_ms must be between 10 and 60000".into()));
        }
        let max = tally_core::limits::RECORDS_PER_BATCH_MAX;
        if !(max..=1 << 22).contains(&self.sync_records_per_round_max) {
            return Err(invalid(format!(
                "sync_records_per_round_max must be between {max} and {}",
                1 << 22
            )));
        }
        Ok(())
    }

    /// The peers to sync with: the peer list without this node's own entry.
    pub fn other_peers(&self) -> impl Iterator<Item = &PeerEntry> {
        self.peers.iter().filter(|peer| peer.id != self.node_id)
    }

    /// The polls of the configuration file as definitions, opened at `now` where asked.
    pub fn poll_specs(&self, now: UnixMillis) -> Result<Vec<PollSpec>, ConfigError> {
        self.polls.iter().map(|poll| poll_spec(poll, now)).collect()
    }
}

/// Most vote IDs the dedupe indexes of all of a node's polls may be sized for, counting every
/// other poll at its index's current capacity and the asked poll at its `expected_votes`: two
/// of the largest reservations (an index costs ~5 bytes a slot, so ~11 GB at the bound). A
/// reservation past it is refused with 409 (it depends on the node's state, not on the
/// request alone) instead of taking the node's memory.
pub const RESERVED_VOTE_IDS_TOTAL_MAX: u64 = 2 * RESERVED_VOTE_IDS_MAX as u64;

/// `Err(why)` if reserving `votes` beside `others` already sized goes past the budget.
pub fn within_reservation_budget(others: u64, votes: u64) -> Result<(), String> {
    if others.saturating_add(votes) > RESERVED_VOTE_IDS_TOTAL_MAX {
        return Err(format!(
            "expected_votes {votes} would size this node's dedupe indexes for over \
             {RESERVED_VOTE_IDS_TOTAL_MAX} vote IDs in all (its other polls take {others}); \
             nothing was created"
        ));
    }
    Ok(())
}

/// Checks a poll's `expected_votes` (from the config file or the admin API): 1 to
/// [`RESERVED_VOTE_IDS_MAX`].
pub fn check_expected_votes(votes: u64) -> Result<(), String> {
    if votes == 0 || votes > RESERVED_VOTE_IDS_MAX as u64 {
        return Err(format!(
            "expected_votes must be between 1 and {RESERVED_VOTE_IDS_MAX}, not {votes}"
        ));
    }
    Ok(())
}

/// Checks a poll's `duration_seconds` (config file and admin API alike): 1 second to
/// [`POLL_SECONDS_MAX`] (31 days), the longest a poll's seconds are counted.
pub fn check_duration_seconds(seconds: u64) -> Result<(), String> {
    if seconds == 0 || seconds > u64::from(POLL_SECONDS_MAX) {
        return Err(format!(
            "duration_seconds must be between 1 and {POLL_SECONDS_MAX} (31 days), not {seconds}"
        ));
    }
    Ok(())
}

fn poll_spec(poll: &PollConfig, now: UnixMillis) -> Result<PollSpec, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        setting: "polls",
        message,
    };
    let id = PollId::new(poll.id.clone()).map_err(|e| invalid(format!("poll id: {e}")))?;
    let options = poll
        .options
        .iter()
        .map(|o| OptionName::new(o.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("poll {id}: option: {e}")))?;
    if let Some(votes) = poll.expected_votes {
        check_expected_votes(votes).map_err(|e| invalid(format!("poll {id}: {e}")))?;
    }
    if let Some(seconds) = poll.duration_seconds {
        check_duration_seconds(seconds).map_err(|e| invalid(format!("poll {id}: {e}")))?;
    }
    let opens_at = match &poll.opens_at {
        Some(text) => Some(parse_time(text).map_err(|e| invalid(format!("poll {id}: {e}")))?),
        None => poll.open.then_some(now),
    };
    let closes_at = opens_at
        .zip(poll.duration_seconds)
        .map(|(open, seconds)| UnixMillis(open.0.saturating_add(seconds.saturating_mul(1000))));
    PollSpec::new(
        id.clone(),
        options,
        PollWindow {
            opens_at,
            closes_at,
        },
    )
    .map_err(|e| invalid(format!("poll {id}: {e}")))
}

/// An RFC 3339 time as Unix milliseconds (not before 1970).
fn parse_time(text: &str) -> Result<UnixMillis, String> {
    let format = &time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(text, format)
        .map_err(|e| format!("opens_at {text:?} is not an RFC 3339 time: {e}"))?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms)
        .map(UnixMillis)
        .map_err(|_| format!("opens_at {text:?} is before 1970"))
}

/// Settings parsed into their proper types.
pub struct Validated {
    /// This node's name.
    pub node_id: NodeId,
    /// The cluster-wide vote ID key.
    pub vote_id_key: VoteIdKey,
}

/// Longest public endpoint URL, in bytes.
pub const PUBLIC_ENDPOINT_BYTES_MAX: usize = 256;

/// A public endpoint is an origin: `http://` or `https://`, a host, an optional port, no path.
fn validate_public_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} must start with https:// or http://"))?;
    let ok = !rest.is_empty()
        && url.len() <= PUBLIC_ENDPOINT_BYTES_MAX
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{url:?} must be an origin: scheme, host and optional port, no path or trailing /"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_naming_the_old_subscriber_count_still_starts_and_a_tiny_budget_does_not() {
        // Goal: an operator's configuration from before the memory budget is not refused
        // (the old key is read and ignored), and a budget under one subscriber is. Method:
        // both parsed and validated.
        let old: Config = toml::from_str("sse_subscribers_max = 10000").unwrap();
        assert!(old.validate().is_ok());
        assert_eq!(old.viewer_memory_bytes, VIEWER_MEMORY_BYTES_DEFAULT);
        let tiny: Config = toml::from_str("viewer_memory_bytes = 100").unwrap();
        assert!(tiny.validate().is_err());
    }

    #[test]
    fn defaults_validate_and_define_the_superbowl_poll() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        let specs = config.poll_specs(UnixMillis(5)).unwrap();
        assert_eq!(specs[0].id().as_str(), "superbowl");
        assert_eq!(specs[0].window.opens_at, Some(UnixMillis(5)));
    }

    #[test]
    fn a_poll_may_reserve_its_index_for_expected_votes_within_the_limit() {
        let text = "[[polls]]\nid = \"big\"\noptions = [\"a\", \"b\"]\nexpected_votes = 30000000\n";
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.polls[0].expected_votes, Some(30_000_000));
        assert!(config.poll_specs(UnixMillis(1)).is_ok());
        for bad in [0, RESERVED_VOTE_IDS_MAX as u64 + 1] {
            let mut config = config.clone();
            config.polls[0].expected_votes = Some(bad);
            let error = config.poll_specs(UnixMillis(1)).unwrap_err().to_string();
            assert!(error.contains("expected_votes"), "{error}");
            let error = config.validate().err().map(|e| e.to_string());
            assert!(error.is_some_and(|e| e.contains("expected_votes")));
        }
    }

    #[test]
    fn a_poll_may_open_at_an_explicit_time_whatever_the_clock() {
        // Goal: `opens_at` fixes the window on every node alike; a bad time is a clear error.
        let text = "[[polls]]\nid = \"final\"\noptions = [\"a\", \"b\"]\n\
                    opens_at = \"2027-02-07T23:30:00Z\"\nduration_seconds = 600\n";
        let config: Config = toml::from_str(text).unwrap();
        for now in [UnixMillis(1), UnixMillis(4_000_000_000_000)] {
            let window = config.poll_specs(now).unwrap()[0].window;
            assert_eq!(window.opens_at, Some(UnixMillis(1_802_043_000_000)));
            assert_eq!(window.closes_at, Some(UnixMillis(1_802_043_600_000)));
        }
        for bad in ["tomorrow", "2027-02-07 23:30", "1969-12-31T23:59:59Z"] {
            let mut config = config.clone();
            config.polls[0].opens_at = Some(bad.into());
            let error = config.validate().err().unwrap().to_string();
            assert!(
                error.contains("opens_at") && error.contains("final"),
                "{error}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let error = toml::from_str::<Config>("listen_port = 3").unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
        let config = Config {
            vote_id_key: "abc".into(),
            ..Config::default()
        };
        let error = config.validate().err().unwrap().to_string();
        assert!(error.contains("vote_id_key"), "{error}");
    }

    #[test]
    fn connection_timeouts_are_read_from_the_file_and_bounded() {
        let text = "header_read_timeout_ms = 500\nbody_read_timeout_ms = 700\n";
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.header_read_timeout_ms, 500);
        assert_eq!(config.body_read_timeout_ms, 700);
        assert!(config.validate().is_ok());
        for (setting, bad) in [
            ("header_read_timeout_ms", "header_read_timeout_ms = 0"),
            ("body_read_timeout_ms", "body_read_timeout_ms = 600001"),
        ] {
            let config: Config = toml::from_str(bad).unwrap();
            let error = config.validate().err().unwrap().to_string();
            assert!(error.contains(setting), "{error}");
        }
    }

    #[test]
    fn peer_addresses_are_ip_port_or_host_port_and_nothing_else() {
        let parse = |text: &str| PeerAddress::try_from(text.to_owned());
        assert_eq!(
            parse("10.0.0.5:9080").unwrap().literal(),
            Some(SocketAddr::from(([10, 0, 0, 5], 9080)))
        );
        assert_eq!(
            parse("[::1]:9080").unwrap().literal().map(|a| a.port()),
            Some(9080)
        );
        let host = parse("tally-1.tally.us-east.svc.cluster.local:9080").unwrap();
        assert_eq!(host.literal(), None);
        for bad in [
            "tally-1",
            "tally-1:",
            ":9080",
            "tally 1:9080",
            "host:0",
            "host:70000",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("peer address"), "{bad}: {error}");
        }
        let long = format!("{}:9080", "a".repeat(PEER_HOST_BYTES_MAX + 1));
        assert!(parse(&long).is_err());
        let error = toml::from_str::<Config>("[[peers]]\nid = \"b\"\naddress = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs a port"), "{error}");
    }

    #[test]
    fn replicated_acks_need_another_listed_node_and_one_list_serves_a_region() {
        // Goal: every misconfiguration of replicated acks is a clear error naming the
        // setting, and a region's shared list (both nodes) works on each node. Method: the
        // same file with each node ID and with each mistake.
        let region = "peer_listen = \"127.0.0.1:9080\"\nack_mode = \"replicated\"\n\
                      [tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n-key.pem\"\n\
                      [[peers]]\nid = \"r-0\"\naddress = \"r-0.r:9080\"\n\
                      [[peers]]\nid = \"r-1\"\naddress = \"r-1.r:9080\"\n";
        let with = |extra: &str| {
            let config: Config = toml::from_str(&format!("{extra}\n{region}")).unwrap();
            config
        };
        for (me, other) in [("r-0", "r-1"), ("r-1", "r-0")] {
            let config = with(&format!("node_id = {me:?}\nack_peers = [\"r-0\", \"r-1\"]"));
            assert!(config.validate().is_ok(), "{me}");
            assert_eq!(config.ack_peer_ids(), [NodeId::new(other).unwrap()]);
        }
        for (extra, setting, says) in [
            (
                "node_id = \"r-0\"\nack_peers = [\"r-0\"]",
                "ack_peers",
                "other than this node",
            ),
            ("node_id = \"r-0\"", "ack_peers", "at least one ack peer"),
            (
                "node_id = \"r-0\"\nack_peers = [\"x\"]",
                "ack_peers",
                "not in peers",
            ),
            (
                "node_id = \"r-0\"\nack_peers = [\"r-1\", \"r-1\"]",
                "ack_peers",
                "twice",
            ),
            (
                "node_id = \"r-0\"\nack_peers = [\"r-1\"]\nack_timeout_ms = 5",
                "ack_timeout_ms",
                "between",
            ),
            (
                "node_id = \"r-0\"\nack_peers = [\"r-1\"]\nmemory_only = true",
                "ack_mode",
                "durable log",
            ),
        ] {
            let error = with(extra).validate().err().unwrap().to_string();
            assert!(
                error.contains(setting) && error.contains(says),
                "{extra}: {error}"
            );
        }
    }

    #[test]
    fn a_peer_list_entry_naming_this_node_is_skipped() {
        let text = "node_id = \"tally-1\"\n\
                    [[peers]]\nid = \"tally-0\"\naddress = \"tally-0.tally:9080\"\n\
                    [[peers]]\nid = \"tally-1\"\naddress = \"tally-1.tally:9080\"\n";
        let config: Config = toml::from_str(text).unwrap();
        let others: Vec<&str> = config.other_peers().map(|p| p.id.as_str()).collect();
        assert_eq!(others, ["tally-0"]);
    }

    #[test]
    fn a_reservation_past_the_nodes_budget_is_refused() {
        // Goal: the sum of every index's size is bounded. Method: the boundary either side.
        let max = RESERVED_VOTE_IDS_TOTAL_MAX;
        assert!(within_reservation_budget(0, 500_000_000).is_ok());
        assert!(within_reservation_budget(max - 30_000_000, 30_000_000).is_ok());
        let refused = within_reservation_budget(max - 29_999_999, 30_000_000).unwrap_err();
        assert!(refused.contains("expected_votes 30000000"), "{refused}");
        assert!(within_reservation_budget(u64::MAX, 1).is_err());
    }
}
