//! An edge's configuration: embedded defaults, then a TOML file, then command-line flags and
//! environment variables (`tally edge --help`), as for `tally run`.
//!
//! `tally edge --upstream http://127.0.0.1:8081` with nothing else serves the voting route on
//! 127.0.0.1:8090 and sends the votes to that node. Every setting has a default here and a key
//! in the TOML file; every limit has a range [`EdgeConfig::validate`] enforces.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tally_client::Endpoint;
use tally_client::api::BATCH_VOTES_MAX;
use tally_core::VoteIdKey;
use tally_core::abuse::{AbuseControls, AbuseSettings, TrustedProxies};

/// What one SSE viewer served below hyper costs the edge's process, in resident bytes
/// (measured: [`tally_serve::viewers::VIEWER_BYTES`]); one served through hyper costs
/// [`tally_serve::viewers::VIEWER_BYTES_THROUGH_HYPER`]. `viewers_max` is the memory budget
/// divided by the first.
pub use tally_serve::viewers::VIEWER_BYTES;

/// Default memory budget for SSE viewers, in bytes (128 MiB: 43,690 viewers below hyper,
/// 5,461 through it; a process here may hold 20,000 open files).
pub const VIEWER_MEMORY_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;

/// Default most polls subscribed at once.
pub const FANOUT_POLLS_DEFAULT: usize = 64;

/// Default: no frame or heartbeat from a node's stream for this long and the figures are
/// stale (viewers are told) and the next node is tried, in ms. Above the node's heartbeat
/// (ten SSE ticks: 5 s by default).
pub const STALE_AFTER_MS_DEFAULT: u64 = 8_000;

/// Largest viewer memory budget, in bytes (1 TiB: a typo's guard, not a machine's).
pub const VIEWER_MEMORY_BYTES_MAX: u64 = 1 << 40;

/// Most upstream nodes one edge sends to (a bit per node in a batch's "tried" set).
pub const UPSTREAMS_MAX: usize = 16;

/// Default votes per batch: a batch is sent once it holds this many (`batch_votes_max`).
/// Chosen by measurement (BENCHMARKS.md, "Edge: batch size and linger").
pub const BATCH_VOTES_DEFAULT: usize = 256;

/// Default linger: a batch is sent this long after its first vote if it has not filled
/// (`linger_ms`). The delay a vote can add at the edge, out of the 100 ms budget.
pub const LINGER_MS_DEFAULT: u64 = 2;

/// Longest linger allowed, in ms (a fifth of the confirmation budget).
pub const LINGER_MS_MAX: u64 = 20;

/// Default batch interval: a poll's batches may leave back to back (`batch_interval_ms` 0).
/// A larger interval makes batches bigger at a high rate (the rate times the interval) and
/// cheaper for the node per vote, at up to the interval's delay per vote (BENCHMARKS.md,
/// "Edge: single votes through `tally edge`").
pub const BATCH_INTERVAL_MS_DEFAULT: u64 = 0;

/// Default batches in flight to one node at once (`batches_in_flight_per_upstream`).
pub const BATCHES_IN_FLIGHT_DEFAULT: usize = 4;

/// Most batches in flight to one node that may be configured (each holds a connection).
pub const BATCHES_IN_FLIGHT_MAX: usize = 64;

/// Default batches waiting for one node's free slot (`upstream_queue_batches`).
pub const UPSTREAM_QUEUE_BATCHES_DEFAULT: usize = 4;

/// Most batches that may wait for one node.
pub const UPSTREAM_QUEUE_BATCHES_MAX: usize = 256;

/// Default time a vote may wait at the edge for a node's answer (`vote_deadline_ms`): then it
/// is answered 503 (`unconfirmed` if it was sent on, `overloaded` if not). Under the clients'
/// 2 s attempt timeout, so they hear the 503 and retry rather than time out.
pub const VOTE_DEADLINE_MS_DEFAULT: u64 = 1_500;

/// Default wait for one batch's answer before its votes go to the next node
/// (`batch_timeout_ms`).
pub const BATCH_TIMEOUT_MS_DEFAULT: u64 = 600;

/// Default batch answer time that counts as a failure for the node's breaker, though its
/// answer is used (`slow_batch_ms`): a node this slow is ejected like a failing one.
pub const SLOW_BATCH_MS_DEFAULT: u64 = 250;

/// Default consecutive failures that open a node's breaker (`breaker_failures`).
pub const BREAKER_FAILURES_DEFAULT: u32 = 3;

/// Default time an open breaker waits before one batch probes the node (`breaker_open_ms`).
pub const BREAKER_OPEN_MS_DEFAULT: u64 = 1_000;

/// Default interval of each node's `/readyz` probe (`probe_interval_ms`).
pub const PROBE_INTERVAL_MS_DEFAULT: u64 = 200;

/// Default interval of reading each node's poll list (`poll_list_interval_ms`): a poll
/// created on the nodes takes votes at the edges within about this long.
pub const POLL_LIST_INTERVAL_MS_DEFAULT: u64 = 2_000;

/// Default most votes waiting at the edge at once (`votes_waiting_max`): more are shed with
/// 503 + `Retry-After` at the door.
pub const VOTES_WAITING_DEFAULT: usize = 65_536;

/// Most votes waiting at the edge that may be configured (each holds a connection's request
/// and ~200 bytes).
pub const VOTES_WAITING_MAX: usize = 1 << 20;

/// Everything an edge needs to know.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Address the voting route, `/healthz`, `/readyz` and `/metrics` listen on.
    pub listen: SocketAddr,
    /// The nodes to send votes to, `http://HOST:PORT`, nearest first: the edge's own region's
    /// node(s), then other regions'.
    pub upstreams: Vec<String>,
    /// 64 hex digits: the cluster-wide key for non-UUID vote IDs (the nodes' `vote_id_key`).
    pub vote_id_key: String,
    /// The nodes' `batch_token`, sent as the bearer token with every batch (empty: none).
    pub batch_token: String,
    /// A batch is sent once it holds this many votes.
    pub batch_votes_max: usize,
    /// A batch is sent this long after its first vote, full or not, in ms.
    pub linger_ms: u64,
    /// A poll's batch that is not full leaves at least this long after the poll's previous
    /// batch, in ms, even to an idle node or past its linger (0: no such wait).
    pub batch_interval_ms: u64,
    /// Batches in flight to one node at once.
    pub batches_in_flight_per_upstream: usize,
    /// Batches that may wait for one node's free slot; when every node's queue is full,
    /// votes wait in the edge (up to `votes_waiting_max`).
    pub upstream_queue_batches: usize,
    /// How long a vote may wait at the edge for a node's answer, in ms.
    pub vote_deadline_ms: u64,
    /// How long a batch's answer may take before its votes go to the next node, in ms.
    pub batch_timeout_ms: u64,
    /// A batch answer slower than this counts as a failure for the node's breaker, in ms.
    pub slow_batch_ms: u64,
    /// Consecutive failures (errors, timeouts, slow answers) that open a node's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before one batch probes the node, in ms.
    pub breaker_open_ms: u64,
    /// How often each node's `/readyz` is read, in ms.
    pub probe_interval_ms: u64,
    /// How often each ready node's poll list is read, in ms (a new poll takes votes at the
    /// edge within about this long).
    pub poll_list_interval_ms: u64,
    /// Most votes waiting at the edge at once; more are shed with 503 + `Retry-After`.
    pub votes_waiting_max: usize,
    /// A connection must send a complete request head within this long, in ms.
    pub header_read_timeout_ms: u64,
    /// A request body must arrive whole within this long after its headers, in ms (408).
    pub body_read_timeout_ms: u64,
    /// A connection whose writes pend this long is dropped, in ms.
    pub write_stall_ms: u64,
    /// How long a stopping edge waits for the votes it holds to be answered, in ms.
    pub shutdown_drain_ms: u64,
    /// Votes per second allowed per client IP (0: no limit).
    pub rate_limit_per_ip_per_second: u32,
    /// Votes a client IP may send at once after an idle spell.
    pub rate_limit_per_ip_burst: u32,
    /// Votes per second allowed per token-verified voter (0: no limit; needs vote tokens).
    pub rate_limit_per_voter_per_second: u32,
    /// Votes a voter may send at once.
    pub rate_limit_per_voter_burst: u32,
    /// Hex HMAC-SHA256 key of vote tokens (the nodes' `vote_token_hmac_key`).
    pub vote_token_hmac_key: String,
    /// Hex Ed25519 public key of vote tokens (the nodes' `vote_token_ed25519_public_key`).
    pub vote_token_ed25519_public_key: String,
    /// The load balancers whose `X-Forwarded-For` is believed for the per-IP limit
    /// (`10.0.0.0/8`, `fd00::/8`, or single addresses); empty: the socket's address counts.
    pub trusted_proxies: Vec<String>,
    /// Memory budget of SSE viewers, in bytes: the edge holds at most this over
    /// [`VIEWER_BYTES`] viewers at once (one more gets 503 `overloaded`).
    pub viewer_memory_bytes: u64,
    /// Most polls followed at once (one live stream from a node each).
    pub fanout_polls_max: usize,
    /// A poll whose node stream is silent this long is stale (viewers are told, the next node
    /// is tried), in ms: above the nodes' heartbeat (ten SSE ticks, 5 s by default).
    pub fanout_stale_after_ms: u64,
    /// The regions' public base URLs the voting page served by this edge votes through
    /// (nearest first; the edge itself is always last).
    pub public_endpoints: Vec<String>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            upstreams: Vec::new(),
            vote_id_key: tally_core::DEV_VOTE_ID_KEY_HEX.into(),
            batch_token: String::new(),
            batch_votes_max: BATCH_VOTES_DEFAULT,
            linger_ms: LINGER_MS_DEFAULT,
            batch_interval_ms: BATCH_INTERVAL_MS_DEFAULT,
            batches_in_flight_per_upstream: BATCHES_IN_FLIGHT_DEFAULT,
            upstream_queue_batches: UPSTREAM_QUEUE_BATCHES_DEFAULT,
            vote_deadline_ms: VOTE_DEADLINE_MS_DEFAULT,
            batch_timeout_ms: BATCH_TIMEOUT_MS_DEFAULT,
            slow_batch_ms: SLOW_BATCH_MS_DEFAULT,
            breaker_failures: BREAKER_FAILURES_DEFAULT,
            breaker_open_ms: BREAKER_OPEN_MS_DEFAULT,
            probe_interval_ms: PROBE_INTERVAL_MS_DEFAULT,
            poll_list_interval_ms: POLL_LIST_INTERVAL_MS_DEFAULT,
            votes_waiting_max: VOTES_WAITING_DEFAULT,
            header_read_timeout_ms: tally_serve::connections::HEADER_READ_TIMEOUT_MS_DEFAULT,
            body_read_timeout_ms: tally_serve::body::BODY_READ_TIMEOUT_MS_DEFAULT,
            write_stall_ms: tally_serve::stall_guard::WRITE_STALL_MS_DEFAULT,
            shutdown_drain_ms: 20_000,
            rate_limit_per_ip_per_second: 0,
            rate_limit_per_ip_burst: 20,
            rate_limit_per_voter_per_second: 0,
            rate_limit_per_voter_burst: 5,
            vote_token_hmac_key: String::new(),
            vote_token_ed25519_public_key: String::new(),
            trusted_proxies: Vec::new(),
            viewer_memory_bytes: VIEWER_MEMORY_BYTES_DEFAULT,
            fanout_polls_max: FANOUT_POLLS_DEFAULT,
            fanout_stale_after_ms: STALE_AFTER_MS_DEFAULT,
            public_endpoints: Vec::new(),
        }
    }
}

/// Why the edge's configuration was refused (the node's error type).
pub type EdgeConfigError = tally_serve::config_file::ConfigError;

/// The settings parsed into the types the edge runs on.
pub struct Validated {
    /// The upstream nodes, nearest first.
    pub upstreams: Vec<Endpoint>,
    /// The cluster-wide vote ID key.
    pub vote_id_key: VoteIdKey,
    /// Rate limits and vote tokens.
    pub abuse: AbuseControls,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl EdgeConfig {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, EdgeConfigError> {
        tally_serve::config_file::read_toml(path)
    }

    /// The most SSE viewers at once: the memory budget over the bytes each viewer served below
    /// hyper costs (fewer when some are served through hyper).
    pub fn viewers_max(&self) -> usize {
        (self.viewer_memory_bytes / VIEWER_BYTES) as usize
    }

    /// A duration setting in milliseconds, as a [`Duration`].
    pub fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Checks every setting; returns the parsed pieces.
    pub fn validate(&self) -> Result<Validated, EdgeConfigError> {
        let invalid = |setting, message: String| EdgeConfigError::Invalid { setting, message };
        if self.upstreams.is_empty() || self.upstreams.len() > UPSTREAMS_MAX {
            return Err(invalid(
                "upstreams",
                format!("list 1 to {UPSTREAMS_MAX} nodes, http://HOST:PORT, nearest first"),
            ));
        }
        let upstreams = self
            .upstreams
            .iter()
            .map(|url| Endpoint::parse(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("upstreams", e))?;
        for (i, upstream) in upstreams.iter().enumerate() {
            if upstreams[..i].contains(upstream) {
                return Err(invalid(
                    "upstreams",
                    format!("{} is listed twice", upstream.url),
                ));
            }
        }
        let vote_id_key =
            VoteIdKey::from_hex(&self.vote_id_key).map_err(|m| invalid("vote_id_key", m))?;
        let ranges: [(&'static str, u64, u64, u64); 15] = [
            (
                "viewer_memory_bytes",
                self.viewer_memory_bytes,
                VIEWER_BYTES,
                VIEWER_MEMORY_BYTES_MAX,
            ),
            (
                "fanout_polls_max",
                self.fanout_polls_max as u64,
                1,
                tally_core::limits::POLLS_MAX as u64,
            ),
            (
                "fanout_stale_after_ms",
                self.fanout_stale_after_ms,
                100,
                600_000,
            ),
            (
                "batch_votes_max",
                self.batch_votes_max as u64,
                1,
                BATCH_VOTES_MAX as u64,
            ),
            ("linger_ms", self.linger_ms, 0, LINGER_MS_MAX),
            (
                "batch_interval_ms",
                self.batch_interval_ms,
                0,
                LINGER_MS_MAX,
            ),
            (
                "batches_in_flight_per_upstream",
                self.batches_in_flight_per_upstream as u64,
                1,
                BATCHES_IN_FLIGHT_MAX as u64,
            ),
            (
                "upstream_queue_batches",
                self.upstream_queue_batches as u64,
                1,
                UPSTREAM_QUEUE_BATCHES_MAX as u64,
            ),
            ("vote_deadline_ms", self.vote_deadline_ms, 10, 60_000),
            ("batch_timeout_ms", self.batch_timeout_ms, 10, 60_000),
            ("slow_batch_ms", self.slow_batch_ms, 1, 60_000),
            (
                "breaker_failures",
                u64::from(self.breaker_failures),
                1,
                1_000,
            ),
            ("breaker_open_ms", self.breaker_open_ms, 10, 600_000),
            ("probe_interval_ms", self.probe_interval_ms, 10, 60_000),
            (
                "poll_list_interval_ms",
                self.poll_list_interval_ms,
                10,
                600_000,
            ),
        ];
        for (setting, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(invalid(setting, format!("must be between {min} and {max}")));
            }
        }
        if !(1..=VOTES_WAITING_MAX).contains(&self.votes_waiting_max) {
            return Err(invalid(
                "votes_waiting_max",
                format!("must be between 1 and {VOTES_WAITING_MAX}"),
            ));
        }
        tally_serve::config_file::check_serving_deadlines(
            self.write_stall_ms,
            self.header_read_timeout_ms,
            self.body_read_timeout_ms,
            self.shutdown_drain_ms,
        )?;
        let abuse = AbuseSettings {
            per_ip_per_second: self.rate_limit_per_ip_per_second,
            per_ip_burst: self.rate_limit_per_ip_burst,
            per_voter_per_second: self.rate_limit_per_voter_per_second,
            per_voter_burst: self.rate_limit_per_voter_burst,
            hmac_key_hex: self.vote_token_hmac_key.clone(),
            ed25519_public_key_hex: self.vote_token_ed25519_public_key.clone(),
        }
        .controls()
        .map_err(|e| invalid(e.setting, e.message))?;
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|m| invalid("trusted_proxies", m))?;
        Ok(Validated {
            upstreams,
            vote_id_key,
            abuse,
            trusted_proxies,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the defaults are valid once an upstream is given, and every out-of-range setting
    //! is refused naming its key. Method: one bad value at a time.

    use super::*;

    fn with_upstream() -> EdgeConfig {
        EdgeConfig {
            upstreams: vec!["http://127.0.0.1:8081".into()],
            ..EdgeConfig::default()
        }
    }

    #[test]
    fn defaults_with_one_upstream_validate() {
        let validated = with_upstream().validate().unwrap();
        assert_eq!(validated.upstreams[0].authority, "127.0.0.1:8081");
        assert!(EdgeConfig::default().validate().is_err(), "no upstream");
    }

    #[test]
    fn out_of_range_settings_are_refused_by_name() {
        type Change = Box<dyn Fn(&mut EdgeConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "upstreams",
                Box::new(|c| c.upstreams = vec!["https://x:1".into()]),
            ),
            (
                "upstreams",
                Box::new(|c| c.upstreams.push("http://127.0.0.1:8081".into())),
            ),
            ("vote_id_key", Box::new(|c| c.vote_id_key = "abc".into())),
            ("batch_votes_max", Box::new(|c| c.batch_votes_max = 0)),
            ("batch_votes_max", Box::new(|c| c.batch_votes_max = 10_001)),
            ("linger_ms", Box::new(|c| c.linger_ms = 21)),
            ("batch_interval_ms", Box::new(|c| c.batch_interval_ms = 21)),
            (
                "viewer_memory_bytes",
                Box::new(|c| c.viewer_memory_bytes = 100),
            ),
            ("fanout_polls_max", Box::new(|c| c.fanout_polls_max = 0)),
            (
                "batches_in_flight_per_upstream",
                Box::new(|c| c.batches_in_flight_per_upstream = 0),
            ),
            ("vote_deadline_ms", Box::new(|c| c.vote_deadline_ms = 1)),
            ("votes_waiting_max", Box::new(|c| c.votes_waiting_max = 0)),
            (
                "trusted_proxies",
                Box::new(|c| c.trusted_proxies = vec!["x".into()]),
            ),
            (
                "rate_limit_per_ip_burst",
                Box::new(|c| {
                    c.rate_limit_per_ip_per_second = 5;
                    c.rate_limit_per_ip_burst = 0;
                }),
            ),
        ];
        for (setting, change) in cases {
            let mut config = with_upstream();
            change(&mut config);
            let error = config
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(setting), "{setting}: {error:?}");
        }
    }

    #[test]
    fn a_toml_file_sets_keys_over_the_defaults_and_unknown_keys_are_refused() {
        let config: EdgeConfig =
            toml::from_str("upstreams = [\"http://a:1\"]\nlinger_ms = 5\n").unwrap();
        assert_eq!(config.linger_ms, 5);
        assert_eq!(config.batch_votes_max, BATCH_VOTES_DEFAULT);
        assert!(toml::from_str::<EdgeConfig>("lingr_ms = 5\n").is_err());
    }
}
