//! The `tally` binary: builds the real I/O (TCP listener, data directory, system clock, OS
//! randomness, Ctrl-C/SIGTERM) and hands it to `tally_node::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tally_node::config::{Config, TlsFiles};
use tally_node::peer::transport::PeerSocket;
use tally_node::storage::{DirStorage, MemoryStorage, Storage};
use tally_node::{NodeIo, SystemClock, WalExecutor};

/// Tally: a real-time vote counter that counts every vote exactly once, in every region.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a three-region cluster on 127.0.0.1 (HTTP 8081–8083), drive a burst of votes with
    /// cross-region retries, and show that every region converges to the acknowledged votes.
    Demo(tally::demo::DemoArgs),
    /// Serve one region: the voting API, live results over SSE, the dashboard and metrics.
    Run(RunArgs),
    /// Serve the stateless edge tier in front of nodes: single votes coalesced into durable
    /// batches, answered from the nodes' per-vote status, with breakers and failover.
    Edge(EdgeArgs),
    /// Drive one or more nodes with votes (single or batched, at a rate or flat out), report
    /// throughput and latency, and check each node's tally against what it acknowledged.
    Load(tally::load::LoadArgs),
    /// Generate a development cluster CA and one certificate per node, for mutual TLS
    /// between peers: `tally certs --out certs --nodes us-east,us-west,eu`.
    Certs(tally::certs::CertsArgs),
}

/// Settings for `tally run`. Flags override the config file, which overrides the defaults.
#[derive(Args)]
struct RunArgs {
    /// TOML config file (see README.md for every key). Without one, the embedded defaults
    /// serve the poll `superbowl` (green, blue), open at start-up.
    #[arg(long, short, env = "TALLY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve HTTP on [default: 127.0.0.1:8080].
    #[arg(long, env = "TALLY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the write-ahead log [default: ./tally-data].
    #[arg(long, env = "TALLY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Free bytes the data directory must keep: below them the node refuses new votes (503)
    /// and turns not-ready until space comes back; 0 turns this off [default: 67108864].
    #[arg(long, env = "TALLY_DISK_RESERVE_BYTES")]
    disk_reserve_bytes: Option<u64>,
    /// This node's name; a data directory belongs to one node [default: local].
    #[arg(long, env = "TALLY_NODE_ID")]
    node_id: Option<String>,
    /// Keep votes in memory only: for benchmarks. Acknowledged votes are NOT durable.
    #[arg(long)]
    memory_only: bool,
    /// Bearer token that enables the admin API (create, open, close polls).
    #[arg(long, env = "TALLY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The edges' bearer token (`tally edge --batch-token`): it allows posting vote batches
    /// and nothing else; with it set, batches need it (or the admin token).
    #[arg(long, env = "TALLY_BATCH_TOKEN", hide_env_values = true)]
    batch_token: Option<String>,
    /// How often SSE subscribers get fresh results, in milliseconds [default: 500].
    #[arg(long)]
    sse_tick_ms: Option<u64>,
    /// Close a connection that has not sent a complete request head this many milliseconds
    /// after the node began waiting for one (on connect, and after each response): slowloris
    /// clients, silent and idle keep-alive connections. Never cuts a response, such as an SSE
    /// stream [default: 10000].
    #[arg(long)]
    header_read_timeout_ms: Option<u64>,
    /// Answer 408 (and count nothing) when a request body has not arrived whole this many
    /// milliseconds after its headers [default: 10000].
    #[arg(long)]
    body_read_timeout_ms: Option<u64>,
    /// The cluster-wide key (64 hex digits) that maps non-UUID vote IDs to 128 bits; the
    /// same on every node [default: a development key].
    #[arg(long, env = "TALLY_VOTE_ID_KEY", hide_env_values = true)]
    vote_id_key: Option<String>,
    /// The regions' public base URLs, comma-separated, nearest first: the voting page
    /// (`/vote/{poll}`) votes through them, then through this node.
    #[arg(long, env = "TALLY_PUBLIC_ENDPOINTS", value_delimiter = ',')]
    public_endpoints: Option<Vec<String>>,
    /// UDP address for peer sync over QUIC (peer sync is off without it).
    #[arg(long, env = "TALLY_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// The cluster CA certificate (PEM) for mutual TLS between peers; with --tls-cert and
    /// --tls-key it replaces the config file's [tls] section.
    #[arg(long, env = "TALLY_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming its node ID.
    #[arg(long, env = "TALLY_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "TALLY_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Start even if the write-ahead log is damaged and there are no peers to recover the
    /// lost records from, accepting their loss (the node keeps a copy of each damaged file,
    /// counts every vote the log still holds, and continues as a new incarnation). Without
    /// it such a node refuses to start and names the missing records. See OPERATIONS.md.
    #[arg(long, env = "TALLY_ACCEPT_LOG_DAMAGE")]
    accept_log_damage: bool,
    /// When a vote is acknowledged: `local` (after this node's fsync) or `replicated` (after
    /// an ack peer's fsync too) [default: local].
    #[arg(long, env = "TALLY_ACK_MODE")]
    ack_mode: Option<tally_node::config::AckMode>,
    /// The peers (node IDs, comma-separated, each in the peer list) whose fsync may complete
    /// a replicated ack.
    #[arg(long, env = "TALLY_ACK_PEERS", value_delimiter = ',')]
    ack_peers: Option<Vec<String>>,
    /// What a replicated ack does when no ack peer answers in time: `refuse` (503) or
    /// `local` (acknowledge after the local fsync, counted) [default: refuse].
    #[arg(long, env = "TALLY_ACK_FALLBACK")]
    ack_fallback: Option<tally_node::config::AckFallback>,
    /// How long a replicated ack waits for an ack peer, in milliseconds [default: 500].
    #[arg(long, env = "TALLY_ACK_TIMEOUT_MS")]
    ack_timeout_ms: Option<u64>,
}

/// Settings for `tally edge`. Flags and environment variables override the config file, which
/// overrides the defaults.
#[derive(Args)]
struct EdgeArgs {
    /// TOML config file (see OPERATIONS.md, "The edge tier", for every key).
    #[arg(long, short, env = "TALLY_EDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve the voting route on [default: 127.0.0.1:8090].
    #[arg(long, env = "TALLY_EDGE_LISTEN")]
    listen: Option<SocketAddr>,
    /// A node to send votes to, `http://HOST:PORT`; repeat it, nearest first (the edge's own
    /// region's nodes, then other regions').
    #[arg(long = "upstream", env = "TALLY_EDGE_UPSTREAMS", value_delimiter = ',')]
    upstreams: Vec<String>,
    /// The cluster-wide key (64 hex digits) that maps non-UUID vote IDs to 128 bits: the
    /// nodes' `vote_id_key` [default: the development key].
    #[arg(long, env = "TALLY_VOTE_ID_KEY", hide_env_values = true)]
    vote_id_key: Option<String>,
    /// The nodes' batch token, sent with every batch (it allows batches and nothing else).
    #[arg(long, env = "TALLY_BATCH_TOKEN", hide_env_values = true)]
    batch_token: Option<String>,
    /// A batch is sent once it holds this many votes [default: 256].
    #[arg(long, env = "TALLY_EDGE_BATCH_VOTES_MAX")]
    batch_votes_max: Option<usize>,
    /// …or this many milliseconds after its first vote [default: 2].
    #[arg(long, env = "TALLY_EDGE_LINGER_MS")]
    linger_ms: Option<u64>,
    /// A poll's batch that is not full leaves at least this many milliseconds after its
    /// previous batch (bigger batches at a high rate, cheaper for the node) [default: 0].
    #[arg(long, env = "TALLY_EDGE_BATCH_INTERVAL_MS")]
    batch_interval_ms: Option<u64>,
    /// A vote no node has answered this many milliseconds after it arrived is answered 503
    /// (`unconfirmed` if it was sent on) [default: 1500].
    #[arg(long, env = "TALLY_EDGE_VOTE_DEADLINE_MS")]
    vote_deadline_ms: Option<u64>,
    /// Votes per second allowed per client IP (0: no limit) [default: 0].
    #[arg(long, env = "TALLY_EDGE_RATE_LIMIT_PER_IP")]
    rate_limit_per_ip_per_second: Option<u32>,
    /// Load balancers whose X-Forwarded-For is believed, comma-separated (10.0.0.0/8, ...).
    #[arg(long, env = "TALLY_EDGE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// Threads serving phones and nodes: 1 runs the whole edge on one thread (no hand-offs
    /// between threads per vote; scale out with more pods of one core each), 0 one per core.
    #[arg(long, env = "TALLY_EDGE_THREADS", default_value_t = 1)]
    threads: usize,
}

impl EdgeArgs {
    fn config(&self) -> Result<tally_edge::EdgeConfig, tally_edge::EdgeConfigError> {
        let mut config = match &self.config {
            Some(path) => tally_edge::EdgeConfig::from_file(path)?,
            None => tally_edge::EdgeConfig::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if !self.upstreams.is_empty() {
            config.upstreams = self.upstreams.clone();
        }
        if let Some(key) = &self.vote_id_key {
            config.vote_id_key = key.clone();
        }
        if let Some(token) = &self.batch_token {
            config.batch_token = token.clone();
        }
        if let Some(votes) = self.batch_votes_max {
            config.batch_votes_max = votes;
        }
        if let Some(linger) = self.linger_ms {
            config.linger_ms = linger;
        }
        if let Some(interval) = self.batch_interval_ms {
            config.batch_interval_ms = interval;
        }
        if let Some(deadline) = self.vote_deadline_ms {
            config.vote_deadline_ms = deadline;
        }
        if let Some(rate) = self.rate_limit_per_ip_per_second {
            config.rate_limit_per_ip_per_second = rate;
        }
        if let Some(proxies) = &self.trusted_proxies {
            config.trusted_proxies = proxies.clone();
        }
        Ok(config)
    }
}

impl RunArgs {
    fn config(&self) -> Result<Config, tally_node::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(reserve) = self.disk_reserve_bytes {
            config.disk_reserve_bytes = reserve;
        }
        if let Some(node_id) = &self.node_id {
            config.node_id = node_id.clone();
        }
        if let Some(token) = &self.admin_token {
            config.admin_token = token.clone();
        }
        if let Some(token) = &self.batch_token {
            config.batch_token = token.clone();
        }
        if let Some(tick) = self.sse_tick_ms {
            config.sse_tick_ms = tick;
        }
        if let Some(timeout) = self.header_read_timeout_ms {
            config.header_read_timeout_ms = timeout;
        }
        if let Some(timeout) = self.body_read_timeout_ms {
            config.body_read_timeout_ms = timeout;
        }
        if let Some(key) = &self.vote_id_key {
            config.vote_id_key = key.clone();
        }
        if let Some(endpoints) = &self.public_endpoints {
            config.public_endpoints = endpoints.clone();
        }
        if let Some(peer_listen) = self.peer_listen {
            config.peer_listen = Some(peer_listen);
        }
        if let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(mode) = self.ack_mode {
            config.ack_mode = mode;
        }
        if let Some(peers) = &self.ack_peers {
            config.ack_peers = peers.clone();
        }
        if let Some(fallback) = self.ack_fallback {
            config.ack_fallback = fallback;
        }
        if let Some(timeout) = self.ack_timeout_ms {
            config.ack_timeout_ms = timeout;
        }
        config.memory_only |= self.memory_only;
        config.accept_log_damage |= self.accept_log_damage;
        Ok(config)
    }
}

fn main() -> ExitCode {
    // First, before any allocation worth the name: may replace this process with itself.
    tally_node::huge_pages::reexec_with_huge_pages();
    let cli = Cli::parse();
    // The demo prints its own story; its regions log only warnings unless RUST_LOG says more.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    // TALLY_LOG_FORMAT=json: one JSON object per line, for log collectors (Kubernetes).
    match std::env::var("TALLY_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().with_current_span(false).init(),
        Ok("text") | Err(_) => logs.init(),
        Ok(other) => {
            logs.init();
            tracing::warn!(
                format = other,
                "TALLY_LOG_FORMAT must be `text` or `json`; logging as text"
            );
        }
    }
    if tally_node::huge_pages::active() {
        tracing::info!(
            "heap on transparent huge pages (glibc.malloc.hugetlb=1; TALLY_HUGE_PAGES=0 turns this off)"
        );
    } else {
        tracing::info!(
            "heap on 4 KiB pages (huge pages off: TALLY_HUGE_PAGES=0, GLIBC_TUNABLES set, or no THP)"
        );
    }
    let runtime = match &cli.command {
        Command::Edge(args) if args.threads == 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Edge(args) if args.threads > 1 => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tally: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Demo(args) => runtime.block_on(tally::demo::main(args)),
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Edge(args) => runtime.block_on(edge(args)),
        Command::Load(args) => runtime.block_on(tally::load::main(args)),
        Command::Certs(args) => tally::certs::main(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tally: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let config = args.config().map_err(|e| e.to_string())?;
    if config.memory_only {
        tracing::warn!("memory-only mode: acknowledged votes are NOT durable");
        serve(config, MemoryStorage::new()).await
    } else {
        let storage = DirStorage::open(&config.data_dir).map_err(|e| {
            format!(
                "cannot open data directory {}: {e}",
                config.data_dir.display()
            )
        })?;
        serve(config, storage).await
    }
}

async fn serve<S: Storage + Clone + 'static>(config: Config, storage: S) -> Result<(), String> {
    let memory_only = config.memory_only;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let peer_socket = match config.peer_listen {
        Some(peer_listen) => Some(PeerSocket::Udp(
            std::net::UdpSocket::bind(peer_listen)
                .map_err(|e| format!("cannot listen for peers on {peer_listen} (UDP): {e}"))?,
        )),
        None => None,
    };
    let ops_listener =
        match config.ops_listen {
            Some(ops_listen) => Some(tokio::net::TcpListener::bind(ops_listen).await.map_err(
                |e| format!("cannot listen for metrics and admin on {ops_listen}: {e}"),
            )?),
            None => None,
        };
    let io = NodeIo {
        listener,
        ops_listener,
        planted_bug: None,
        storage,
        clock: Arc::new(SystemClock),
        rng_seed: rand::random(),
        shutdown: shutdown_signal(),
        // A memory-only log never blocks: the engine writes it itself, in the wake-up that
        // makes each group, sparing every group a hand-off to a writer and a wake-up back.
        wal_executor: if memory_only {
            WalExecutor::Inline
        } else {
            WalExecutor::DedicatedThread
        },
        peer_socket,
    };
    let polls: Vec<String> = config.polls.iter().map(|p| p.id.clone()).collect();
    tally_node::run(config, io, move |_| {
        tracing::info!("serving on http://{address}/");
        for poll in polls {
            tracing::info!("dashboard: http://{address}/polls/{poll}");
        }
    })
    .await
    .map_err(|e| e.to_string())
}

async fn edge(args: EdgeArgs) -> Result<(), String> {
    let config = args.config().map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let upstreams = config.upstreams.join(", ");
    let io = tally_edge::EdgeIo {
        listener,
        connector: Arc::new(tally_edge::TcpConnector),
        clock: Arc::new(SystemClock),
        shutdown: shutdown_signal(),
    };
    tally_edge::run(config, io, move |_| {
        tracing::info!("edge serving votes on http://{address}/ for {upstreams}");
    })
    .await
    .map_err(|e| e.to_string())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
