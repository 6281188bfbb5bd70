//! `tally demo`: a three-region cluster on 127.0.0.1 in one command.
//!
//! It generates a development CA and node certificates, starts the regions `us-east`,
//! `us-west` and `eu-central` in this process (HTTP on 8081–8083, QUIC peer sync with mutual
//! TLS on 9081–9083) with an edge (`tally edge`) in front of each (8091–8093: its own region's
//! node first, then the others), drives a burst of single votes through the edges as phones
//! would, with a progress bar — a share of them retried with the same vote ID through another
//! region's edge — and prints the dashboard URLs. It ends by printing the votes' confirmation
//! latency (p50, p99) and each region's converged tally next to the number of distinct vote
//! IDs the edges acknowledged; they must be equal, or the demo fails. `--keep-running` leaves
//! the cluster and its edges up for the dashboards and the voting pages (which vote through
//! the edges) until Ctrl-C; either way it stops cleanly.

use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tally_core::NodeId;
use tokio::sync::watch;

use crate::load::check::CheckMode;
use crate::load::{LoadPlan, run_on_own_threads};
use tally_node::config::{Config, PeerEntry, TlsFiles};
use tally_node::peer::transport::PeerSocket;
use tally_node::storage::DirStorage;
use tally_node::{NodeHandle, NodeIo, SystemClock, WalExecutor};

/// The demo's regions.
pub const DEMO_REGIONS: [&str; 3] = ["us-east", "us-west", "eu-central"];

/// Phones voting at once (connections to the edges, spread over them).
pub const DEMO_CONNECTIONS: usize = 96;

/// How long the demo waits for the regions to become ready, and then to converge.
pub const DEMO_WAIT: Duration = Duration::from_secs(60);

/// Flags of `tally demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Votes in the burst.
    #[arg(long, default_value_t = 200_000)]
    pub votes: u64,
    /// Share of votes retried with the same vote ID, at another region.
    #[arg(long, default_value_t = 0.2)]
    pub retry_fraction: f64,
    /// First HTTP port; the regions use this and the next two.
    #[arg(long, default_value_t = 8081)]
    pub http_port: u16,
    /// First port of the regions' edges; they use this and the next two.
    #[arg(long, default_value_t = 8091)]
    pub edge_port: u16,
    /// First QUIC (UDP) port for peer sync; the regions use this and the next two.
    #[arg(long, default_value_t = 9081)]
    pub peer_port: u16,
    /// Directory for certificates and the regions' logs [default: a new temporary directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the cluster running after the burst, for the dashboards, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

struct Region {
    name: &'static str,
    http: SocketAddr,
    config: Config,
    /// Its edge's address and configuration.
    edge: tally_edge::EdgeConfig,
}

fn regions(args: &DemoArgs, dir: &std::path::Path) -> Result<Vec<Region>, String> {
    let port = |base: u16, i: usize| {
        base.checked_add(i as u16)
            .ok_or_else(|| format!("port {base} + {i} is out of range"))
    };
    let mut regions = Vec::new();
    let edge_urls: Vec<String> = (0..DEMO_REGIONS.len())
        .map(|i| Ok(format!("http://127.0.0.1:{}", port(args.edge_port, i)?)))
        .collect::<Result<_, String>>()?;
    for (i, name) in DEMO_REGIONS.iter().enumerate() {
        let http = SocketAddr::from(([127, 0, 0, 1], port(args.http_port, i)?));
        let peer_listen = SocketAddr::from(([127, 0, 0, 1], port(args.peer_port, i)?));
        let mut peers = Vec::new();
        for (j, other) in DEMO_REGIONS.iter().enumerate() {
            if j != i {
                peers.push(PeerEntry {
                    id: (*other).to_owned(),
                    address: SocketAddr::from(([127, 0, 0, 1], port(args.peer_port, j)?)).into(),
                });
            }
        }
        let config = Config {
            node_id: (*name).to_owned(),
            cluster_id: crate::certs::DEV_CLUSTER_ID.to_owned(),
            listen: http,
            data_dir: dir.join(name),
            peer_listen: Some(peer_listen),
            peers,
            tls: Some(TlsFiles::in_dir(&dir.join("certs"), name)),
            // The voting page votes through the edges, its own region's first.
            public_endpoints: (0..DEMO_REGIONS.len())
                .map(|k| edge_urls[(i + k) % DEMO_REGIONS.len()].clone())
                .collect(),
            ..Config::default()
        };
        // The edge sends to its own region's node first, then to the other regions'.
        let edge = tally_edge::EdgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port(args.edge_port, i)?)),
            upstreams: (0..DEMO_REGIONS.len())
                .map(|k| {
                    Ok(format!(
                        "http://127.0.0.1:{}",
                        port(args.http_port, (i + k) % 3)?
                    ))
                })
                .collect::<Result<_, String>>()?,
            ..tally_edge::EdgeConfig::default()
        };
        regions.push(Region {
            name,
            http,
            config,
            edge,
        });
    }
    Ok(regions)
}

/// Runs the demo.
pub async fn main(args: DemoArgs) -> Result<(), String> {
    let (dir, _temporary) = match &args.dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("tally-demo-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    println!(
        "tally demo: three regions on 127.0.0.1, files in {}",
        dir.display()
    );
    let nodes: Vec<NodeId> = DEMO_REGIONS
        .iter()
        .map(|n| NodeId::new(*n).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    crate::certs::generate_dev_cluster(&dir.join("certs"), &nodes).map_err(|e| e.to_string())?;
    let regions = regions(&args, &dir)?;
    let (stop, stopped) = watch::channel(false);
    let (handles, mut tasks) = start_regions(&regions, &stopped)?;
    let (edge_handles, edge_tasks) = start_edges(&regions, &stopped)?;
    tasks.extend(edge_tasks);
    let outcome = tokio::select! {
        outcome = drive(&args, &regions, &handles, &edge_handles) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    if outcome.is_ok() && args.keep_running {
        println!("\nThe cluster and its edges keep running; Ctrl-C stops them. Voting pages:");
        for region in &regions {
            println!(
                "  {:<11} http://{}/vote/superbowl  (votes through the edges, http://{} first)",
                region.name, region.http, region.edge.listen
            );
        }
        let _ = tokio::signal::ctrl_c().await;
    }
    println!("stopping the edges and the regions…");
    let _ = stop.send(true);
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("a region stopped with an error: {error}"),
            Err(error) => eprintln!("a region panicked: {error}"),
        }
    }
    outcome
}

type RegionTask = tokio::task::JoinHandle<Result<(), String>>;

/// Each region's handle, published once it serves.
type HandleSlot = watch::Receiver<Option<NodeHandle>>;

fn start_regions(
    regions: &[Region],
    stopped: &watch::Receiver<bool>,
) -> Result<(Vec<HandleSlot>, Vec<RegionTask>), String> {
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for region in regions {
        let listener = StdTcpListener::bind(region.http)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| {
                format!(
                    "cannot listen on {} (is a demo already running?): {e}",
                    region.http
                )
            })?;
        let peer_address = region.config.peer_listen.unwrap_or(region.http);
        let socket = UdpSocket::bind(peer_address)
            .map_err(|e| format!("cannot listen for peers on {peer_address}: {e}"))?;
        let storage = DirStorage::open(&region.config.data_dir)
            .map_err(|e| format!("cannot open {}: {e}", region.config.data_dir.display()))?;
        let mut stopped = stopped.clone();
        let io = NodeIo {
            listener,
            storage,
            clock: Arc::new(SystemClock),
            rng_seed: rand::random(),
            shutdown: async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
            wal_executor: WalExecutor::DedicatedThread,
            peer_socket: Some(PeerSocket::Udp(socket)),
            ops_listener: None,
            planted_bug: None,
        };
        let (handle_tx, handle_rx) = watch::channel(None);
        let config = region.config.clone();
        let run = tally_node::run(config, io, move |handle| {
            let _ = handle_tx.send(Some(handle));
        });
        tasks.push(tokio::spawn(
            async move { run.await.map_err(|e| e.to_string()) },
        ));
        handles.push(handle_rx);
    }
    Ok((handles, tasks))
}

/// Each edge's handle, published once it serves.
type EdgeSlot = watch::Receiver<Option<tally_edge::EdgeHandle>>;

/// Starts each region's edge in this process (they stop with the regions).
fn start_edges(
    regions: &[Region],
    stopped: &watch::Receiver<bool>,
) -> Result<(Vec<EdgeSlot>, Vec<RegionTask>), String> {
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for region in regions {
        let address = region.edge.listen;
        let listener = StdTcpListener::bind(address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| format!("cannot listen on {address} for an edge: {e}"))?;
        let mut stopped = stopped.clone();
        let io = tally_edge::EdgeIo {
            listener,
            connector: Arc::new(tally_edge::TcpConnector),
            clock: Arc::new(SystemClock),
            shutdown: async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        };
        let (handle_tx, handle_rx) = watch::channel(None);
        let run = tally_edge::run(region.edge.clone(), io, move |handle| {
            let _ = handle_tx.send(Some(handle));
        });
        tasks.push(tokio::spawn(
            async move { run.await.map_err(|e| e.to_string()) },
        ));
        handles.push(handle_rx);
    }
    Ok((handles, tasks))
}

/// Waits until every edge knows the poll and can send to some node.
async fn wait_edges_ready(edges: &[EdgeSlot]) -> Result<(), String> {
    let deadline = Instant::now() + DEMO_WAIT;
    loop {
        let ready = edges.iter().all(|edge| {
            edge.borrow().as_ref().is_some_and(|h| {
                h.availability.nodes() > 0 && h.catalogue.borrow().polls.contains_key("superbowl")
            })
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the edges did not become ready in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ready(handles: &[HandleSlot]) -> Result<Vec<NodeHandle>, String> {
    let deadline = Instant::now() + DEMO_WAIT;
    loop {
        let ready: Vec<NodeHandle> = handles
            .iter()
            .filter_map(|h| h.borrow().clone())
            .filter(|h| h.health.is_ready())
            .collect();
        if ready.len() == handles.len() {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            return Err("the regions did not become ready in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drive(
    args: &DemoArgs,
    regions: &[Region],
    handles: &[HandleSlot],
    edges: &[EdgeSlot],
) -> Result<(), String> {
    let nodes = wait_ready(handles).await?;
    wait_edges_ready(edges).await?;
    println!("regions ready, peer sync over QUIC with mutual TLS, an edge in front of each:");
    for region in regions {
        println!(
            "  {:<11} dashboard http://{}/polls/superbowl   edge http://{}",
            region.name, region.http, region.edge.listen
        );
    }
    let targets: Vec<String> = regions
        .iter()
        .map(|r| format!("http://{}", r.edge.listen))
        .collect();
    let plan = LoadPlan {
        count: Some(args.votes),
        batch_size: 1,
        retry_fraction: args.retry_fraction,
        retry_other_node: true,
        check: CheckMode::Cluster,
        results_from: regions
            .iter()
            .map(|r| format!("http://{}", r.http))
            .collect(),
        progress: !args.no_progress,
        connections: DEMO_CONNECTIONS,
        ..LoadPlan::for_targets(targets)
    };
    println!(
        "\nvoting: {} single votes through the edges, {:.0}% of them retried through another \
         region's edge…",
        args.votes,
        args.retry_fraction * 100.0
    );
    let report = run_on_own_threads(plan, 2)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "sent {} votes in {:.1} s ({:.0} votes/s): {} counted, {} duplicate, {} refused, {} unknown",
        report.votes_sent,
        report.elapsed_s,
        report.votes_per_s,
        report.outcomes.counted,
        report.outcomes.duplicate,
        report.outcomes.refused,
        report.outcomes.unknown
    );
    println!(
        "confirmation latency through the edges: p50 {:.1} ms, p99 {:.1} ms (max {:.1} ms)",
        report.latency.p50_us as f64 / 1_000.0,
        report.latency.p99_us as f64 / 1_000.0,
        report.latency.max_us as f64 / 1_000.0
    );
    let acknowledged = report
        .checks
        .first()
        .map_or(0, |c| c.expectation.expected_min);
    converge(regions, &nodes, acknowledged).await
}

/// Waits until every region shows the same tally, then prints it beside the acknowledged
/// count; fails if they differ after [`DEMO_WAIT`].
async fn converge(
    regions: &[Region],
    nodes: &[NodeHandle],
    acknowledged: u64,
) -> Result<(), String> {
    let started = Instant::now();
    let tallies = loop {
        let tallies: Vec<Vec<(String, i64)>> = nodes
            .iter()
            .map(|node| {
                let results = node.results.borrow().clone();
                results
                    .polls
                    .values()
                    .next()
                    .map(|p| {
                        p.results
                            .options
                            .iter()
                            .map(|o| (o.name.clone(), o.votes))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let total = |t: &Vec<(String, i64)>| t.iter().map(|(_, v)| v).sum::<i64>();
        let converged = tallies
            .iter()
            .all(|t| t == &tallies[0] && total(t) == acknowledged as i64);
        if converged || started.elapsed() > DEMO_WAIT {
            break tallies;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "\nconverged in {:.2} s after the burst:\n",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  {:<11} {:>12} {:>12} {:>12}   distinct vote IDs acknowledged",
        "region", "green", "blue", "total"
    );
    let mut all_equal = true;
    for (region, tally) in regions.iter().zip(&tallies) {
        let total: i64 = tally.iter().map(|(_, v)| v).sum();
        let cell = |i: usize| tally.get(i).map_or(0, |(_, v)| *v);
        let equal = total == acknowledged as i64;
        all_equal &= equal;
        println!(
            "  {:<11} {:>12} {:>12} {:>12}   {:>12}  {}",
            region.name,
            cell(0),
            cell(1),
            total,
            acknowledged,
            if equal { "equal" } else { "DIFFERENT" }
        );
    }
    if all_equal {
        println!("\nEvery region counts every acknowledged vote exactly once.");
        Ok(())
    } else {
        Err("the regions' tallies differ from the acknowledged votes".into())
    }
}
