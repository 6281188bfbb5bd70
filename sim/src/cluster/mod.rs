//! The cluster simulation (DESIGN.md §5): the real `tally-node` code on N simulated regional
//! hosts under turmoil — HTTP through axum over turmoil TCP, peer sync through quinn over
//! turmoil UDP with mutual TLS, the write-ahead log on turmoil's simulated filesystem —
//! driven by simulated edge aggregators, voters and readers through partitions, crashes and
//! the Super Bowl burst, then judged by the [`checker`].
//!
//! Every run is a function of its seed: turmoil's network and disk, quinn's endpoint, the
//! nodes' own RNG and every client's choices all derive from it, and the run's trace hash
//! (every client call and read, in order, and the final totals) replays bit-identically with
//! `SIM_SEED=N`.

pub mod chart;
pub mod checker;
pub mod clocks;
pub mod disk;
pub mod edges;
pub mod http;
pub mod ledger;
pub mod net;
pub mod scenario;
pub mod workload;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tally_node::config::{Config, PeerEntry, TlsFiles};
use tally_node::faulty_storage::{DiskFaults, FaultyStorage};
use tally_node::health::Hold;
use tally_node::peer::transport::PeerSocket;
use tally_node::{NodeHandle, NodeIo, WalExecutor};

pub use checker::Checked;
pub use ledger::CallCounts;
pub use scenario::{ClusterConfig, Fault, FaultKind};

use self::ledger::{Ledger, VoteEntry};
use self::scenario::{VOTING_MS, WARM_UP_MS};
use self::workload::{Plan, Shared, lock};

/// A check that failed (the checker's and the clock checks' verdict).
pub type Violation = String;

/// The UDP port every simulated node's peer endpoint listens on.
pub const PEER_PORT: u16 = 9000;

/// The simulation's epoch (a fixed instant, so simulated wall-clock times replay).
pub const EPOCH_UNIX_MS: u64 = 1_800_000_000_000;

/// Shortest and longest one-way message latency on a healthy link.
pub const LATENCY_MS: (u64, u64) = (1, 5);

/// One-way latency on a link during a latency spike.
pub const SPIKE_LATENCY_MS: u64 = 400;

/// Chance per message that a lossy link starts dropping, and that a dropping link recovers.
pub const LOSS_FAIL_RATE: f64 = 0.05;
/// See [`LOSS_FAIL_RATE`].
pub const LOSS_REPAIR_RATE: f64 = 0.3;

/// A crash waits at most this long past its scheduled time for its nastiest moment: its node
/// in the middle of an fsync, just after answering a client (an adversarial nemesis, as
/// Jepsen's are; crashes are likeliest under load anyway).
pub const CRASH_AIM_MS: u64 = 1_000;

/// Separates the draws of disk damage from the run's other random streams.
const CORRUPTION_SALT: u64 = 0x726f_745f_6469_736b;

/// The nodes' and edges' header-read timeout in the simulation: longer than any run (see
/// `node_config`), in ms.
pub const HEADER_READ_TIMEOUT_BEYOND_THE_RUN_MS: u64 = 600_000;

/// How often the chart samples each region's displayed split, in simulated ms.
pub const CHART_SAMPLE_MS: u64 = 250;

/// How long after a node exits on a failed log its supervisor starts it again, in simulated
/// ms (systemd's `RestartSec` in `deploy/systemd/tally.service` is 2 s; Kubernetes restarts
/// a container at once the first time).
pub const SUPERVISOR_RESTART_MS: u64 = 1_000;

/// What a passing run reports.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// The seed.
    pub seed: u64,
    /// The hash of every client call, read and final total, in order.
    pub trace_hash: u64,
    /// The faults the seed sampled.
    pub faults: Vec<Fault>,
    /// What the checks found.
    pub checked: Checked,
    /// Single-vote calls by outcome.
    pub single_calls: CallCounts,
    /// Batch calls by outcome.
    pub batch_calls: CallCounts,
    /// Single votes retried at another region.
    pub cross_region_retries: u64,
    /// Disk damage done: (region, file, damaged bytes).
    pub corruptions: Vec<(usize, String, std::ops::Range<u64>)>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Wall-clock time it took.
    pub wall: Duration,
    /// When the network healed and the last fault ended: (simulated, wall-clock) time since
    /// the start. What follows is the convergence the checker waits for.
    pub healed_at: (Duration, Duration),
    /// Each region's displayed green share over simulated time (with `record_chart`).
    pub chart: Option<chart::Samples>,
    /// Second processes started on a serving node's disk, each refused (`SecondProcess`).
    pub second_processes_refused: usize,
    /// Times a node stopped on a failed log (a failed fsync, a write into a full disk) and
    /// was started again by its supervisor.
    pub log_failure_exits: u64,
    /// Times a node was seen refusing votes for a low disk (the disk watch's hold).
    pub disk_holds: u64,
}

impl ClusterReport {
    /// The fault kinds this run exercised.
    pub fn fault_kinds(&self) -> Vec<FaultKind> {
        let mut kinds: Vec<FaultKind> = self.faults.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// A run that failed a check (or could not run).
#[derive(Debug, Clone)]
pub struct ClusterFailure {
    /// The seed.
    pub seed: u64,
    /// What failed.
    pub what: String,
    /// The faults the seed sampled.
    pub faults: Vec<Fault>,
    /// The command that replays it.
    pub replay: String,
}

impl fmt::Display for ClusterFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} failed: {}", self.seed, self.what)?;
        for fault in &self.faults {
            writeln!(
                f,
                "  fault: {} {:?}/{:?} at {} ms for {} ms",
                fault.kind, fault.a, fault.b, fault.at_ms, fault.for_ms
            )?;
        }
        write!(f, "  replay: {}", self.replay)
    }
}

/// The command that replays `config`.
pub fn replay_command(config: &ClusterConfig) -> String {
    let mut command = format!(
        "SIM_SEED={} cargo run --release -p tally-sim -- --scenario superbowl --votes {} \
         --regions {}",
        config.seed, config.votes, config.regions
    );
    if let Some(bug) = config.planted_bug {
        command.push_str(&format!(" --plant {}", bug_name(bug)));
    }
    if config.force_replicated_acks {
        command.push_str(" --replicated-acks");
    }
    for kind in &config.force_faults {
        command.push_str(&format!(" --force {}", fault_flag(*kind)));
    }
    command
}

/// The `--plant` name of a planted bug.
pub fn bug_name(bug: tally_node::planted::PlantedBug) -> &'static str {
    use tally_node::planted::PlantedBug;
    match bug {
        PlantedBug::KeepDuplicates => "keep-duplicates",
        PlantedBug::AckBeforeFsync => "ack-before-fsync",
        PlantedBug::AckBeforePeerFsync => "ack-before-peer-fsync",
        PlantedBug::ReuseActorAfterDiskLoss => "reuse-actor",
        PlantedBug::IgnoreClockSkew => "ignore-clock-skew",
        PlantedBug::AckAfterFailedWrite => "ack-after-failed-write",
        PlantedBug::TruncateDamagedLog => "truncate-damage",
        PlantedBug::MergeAcrossDefinitions => "merge-across-definitions",
    }
}

/// The `--force` name of a fault kind.
pub fn fault_flag(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Partition => "partition",
        FaultKind::OneWayPartition => "one-way",
        FaultKind::Hold => "hold",
        FaultKind::PacketLoss => "loss",
        FaultKind::LatencySpike => "latency",
        FaultKind::Crash => "crash",
        FaultKind::DiskLoss => "disk-loss",
        FaultKind::Restart => "restart",
        FaultKind::LongPartition => "long-partition",
        FaultKind::LostAnswers => "lost-answers",
        FaultKind::SecondProcess => "second-process",
        FaultKind::ClockSkew => "clock-skew",
        FaultKind::DiskFull => "disk-full",
        FaultKind::FailedFsync => "failed-fsync",
        FaultKind::DiskCorruption => "corruption",
        FaultKind::MismatchedDefinition => "mismatched-definition",
        FaultKind::UnreservedIndex => "unreserved-index",
        FaultKind::EdgeCrash => "edge-crash",
        FaultKind::EdgeCutOff => "edge-cut-off",
        FaultKind::SlowNode => "slow-node",
    }
}

/// The development CA and node certificates for every region name, in a temporary directory
/// removed when the run ends (made per run: a few milliseconds of Ed25519 key generation).
fn make_certs() -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("tally-sim-certs-")
        .tempdir()
        .map_err(|e| format!("cannot create a directory for certificates: {e}"))?;
    let nodes = scenario::REGION_NAMES
        .iter()
        .map(|n| tally_core::NodeId::new(*n).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    tally::certs::generate_dev_cluster(dir.path(), &nodes)
        .map_err(|e| format!("cannot make certificates: {e}"))?;
    Ok(dir)
}

/// One region's node, as the driver sees it across restarts.
#[derive(Default)]
struct NodeSlot {
    /// Which disk the next start uses (bumped when a disk is lost).
    disk: AtomicU32,
    /// Starts so far (each start draws fresh node randomness from it).
    starts: AtomicU32,
    /// The running node's handle, once it serves.
    handle: Mutex<Option<NodeHandle>>,
    /// Raised while the node's disk waits out an fsync.
    syncing: Arc<AtomicBool>,
    /// The host's data-directory lock (one node process per disk).
    disk_lock: tally_node::storage::InProcessLock,
    /// What each second process started on this host's disk met (`SecondProcess` faults):
    /// `Ok(why it was refused)`, or `Err(what went wrong)`.
    second_processes: Mutex<Vec<Result<String, String>>>,
    /// The host's wall-clock offset from true simulated time, in ms (clock faults step it).
    clock_offset: Arc<AtomicI64>,
    /// The faults of the node's disk (every disk it has), steered by the driver.
    disk_faults: Arc<DiskFaults>,
    /// When the node last exited on a failed log (simulated Unix ms; 0: it did not, or its
    /// supervisor has started it again): the driver restarts it [`SUPERVISOR_RESTART_MS`]
    /// later, as a supervisor would.
    exited_at_ms: AtomicU64,
    /// Exits on a failed log so far.
    exits: AtomicU64,
    /// Damage to do to the disk before the next start (a seed for [`disk::corrupt`]).
    corruption: Mutex<Option<u64>>,
    /// Whether its configuration lists the poll's options in the other order (a mismatched
    /// definition, until the driver fixes it).
    reversed: AtomicBool,
}

struct NodeSpec {
    index: usize,
    names: Arc<Vec<String>>,
    certs: PathBuf,
    seed: u64,
    /// The run's votes: each node reserves its dedupe index for them, as an operator who
    /// expects a big poll does (`expected_votes`), unless `reserve_index` is off.
    votes: u64,
    /// Whether the node reserves its index (off under an `UnreservedIndex` fault: it grows).
    reserve_index: bool,
    planted_bug: Option<tally_node::planted::PlantedBug>,
    /// Under replicated acks, the node's ack peer.
    ack_peer: Option<String>,
    /// When (simulated ms from the start) a second process tries this host's disk.
    second_processes_at_ms: Vec<u64>,
    /// Bytes of fill the disk keeps ahead of the log's appends ([`scenario::log_fill_bytes`]).
    log_fill_bytes: u64,
    /// The history, where disk damage is noted.
    shared: Shared,
}

/// The node configuration of `spec`'s region (`slot` says whether its definition is
/// mismatched now).
fn node_config(spec: &NodeSpec, slot: &NodeSlot) -> Config {
    let name = &spec.names[spec.index];
    let peers = spec
        .names
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != spec.index)
        .map(|(_, peer)| PeerEntry {
            id: peer.clone(),
            address: SocketAddr::new(turmoil::lookup(peer.as_str()), PEER_PORT).into(),
        })
        .collect();
    let mut config = Config {
        node_id: name.clone(),
        cluster_id: tally::certs::DEV_CLUSTER_ID.to_owned(),
        listen: SocketAddr::from(([0, 0, 0, 0], http::HTTP_PORT)),
        peer_listen: Some(SocketAddr::from(([0, 0, 0, 0], PEER_PORT))),
        peers,
        tls: Some(TlsFiles::in_dir(&spec.certs, name)),
        catch_up_timeout_ms: clocks::SIM_CATCH_UP_TIMEOUT_MS,
        max_clock_offset_ms: scenario::SIM_MAX_CLOCK_OFFSET_MS,
        disk_reserve_bytes: scenario::SIM_DISK_RESERVE_BYTES,
        admin_token: checker::ADMIN_TOKEN.to_owned(),
        // hyper computes the header-read deadline from the real clock (std's `Instant`) and
        // tokio's paused clock takes it as simulated time: a deadline within the run would
        // fire after however much wall time the run took, which no replay repeats. Beyond
        // the run, it never fires.
        header_read_timeout_ms: HEADER_READ_TIMEOUT_BEYOND_THE_RUN_MS,
        ..Config::default()
    };
    if let Some(peer) = &spec.ack_peer {
        config.ack_mode = tally_node::config::AckMode::Replicated;
        config.ack_peers = vec![peer.clone()];
    }
    // The embedded default poll (`workload::POLL`), reserved for the run's votes; in the
    // other order while this region's definition is mismatched.
    for poll in &mut config.polls {
        poll.expected_votes = spec.reserve_index.then_some(spec.votes);
        if slot.reversed.load(Ordering::Relaxed) {
            poll.options.reverse();
        }
    }
    config
}

async fn run_node(spec: Arc<NodeSpec>, slot: Arc<NodeSlot>) -> turmoil::Result {
    let start = slot.starts.fetch_add(1, Ordering::Relaxed);
    let name = &spec.names[spec.index];
    let disk = disk::SimDisk::open(
        slot.disk.load(Ordering::Relaxed),
        slot.syncing.clone(),
        slot.disk_lock.clone(),
    )?
    .with_fill_ahead_bytes(spec.log_fill_bytes);
    let corruption = slot
        .corruption
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(seed) = corruption {
        if let Some(damage) = disk::corrupt(&disk, seed)? {
            lock(&spec.shared).corrupted(spec.index, &damage);
        }
    }
    let fsync = WalExecutor::PausingTask(Arc::new(disk.clone()));
    let storage = FaultyStorage::new(disk, slot.disk_faults.clone());
    let listener =
        net::SimListener(turmoil::net::TcpListener::bind(("0.0.0.0", http::HTTP_PORT)).await?);
    let socket = turmoil::net::UdpSocket::bind(("0.0.0.0", PEER_PORT)).await?;
    let config = node_config(&spec, &slot);
    for &at_ms in &spec.second_processes_at_ms {
        tokio::spawn(second_process(spec.clone(), slot.clone(), at_ms));
    }
    let io = NodeIo {
        listener,
        storage,
        clock: Arc::new(net::SimClock::with_offset(slot.clock_offset.clone())),
        rng_seed: spec
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add((spec.index as u64) << 32 | u64::from(start)),
        shutdown: std::future::pending::<()>(),
        wal_executor: fsync,
        peer_socket: Some(PeerSocket::Abstract(Arc::new(net::SimUdp::new(socket)))),
        ops_listener: None,
        planted_bug: spec.planted_bug,
    };
    let published = slot.clone();
    let history = spec.shared.clone();
    let ran = tally_node::run(config, io, move |handle| {
        // Votes its recovery recorded again (a damaged log): records no call carried.
        let adopted = handle.metrics.log_adopted_votes.get();
        if adopted > 0 {
            lock(&history).adopted(adopted as u64, net::now_ms());
        }
        *published
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle);
    })
    .await;
    match ran {
        Ok(()) => Ok(()),
        // A failed log ends the process (at start-up too, on a full disk): its supervisor
        // starts it again.
        Err(error) if error.is_storage_failure() => {
            *slot.handle.lock().unwrap_or_else(PoisonError::into_inner) = None;
            slot.exited_at_ms.store(net::now_ms(), Ordering::Relaxed);
            slot.exits.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = %name, %error, "node exited; its supervisor restarts it");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// At `at_ms`, if this host's node is serving, starts a second node on its disk (as an
/// operator's slip would) and records whether it was refused. A host that crashes before then
/// takes this task with it; a node that is not serving at `at_ms` is left alone (a second
/// process then would rightly take the free directory).
async fn second_process(spec: Arc<NodeSpec>, slot: Arc<NodeSlot>, at_ms: u64) {
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    let Some(wait) = Duration::from_millis(at_ms).checked_sub(elapsed) else {
        return;
    };
    tokio::time::sleep(wait).await;
    if lock_slot(&slot.handle).is_none() {
        return;
    }
    let storage = match disk::SimDisk::open(
        slot.disk.load(Ordering::Relaxed),
        Arc::default(),
        slot.disk_lock.clone(),
    ) {
        Ok(storage) => storage.with_fill_ahead_bytes(spec.log_fill_bytes),
        Err(error) => {
            return lock_slot(&slot.second_processes).push(Err(format!("disk: {error}")));
        }
    };
    let seed = spec.seed ^ 0x7365_636f_6e64 ^ at_ms;
    let outcome = match tally_node::start(
        &node_config(&spec, &slot),
        storage,
        Arc::new(net::SimClock::with_offset(slot.clock_offset.clone())),
        seed,
        WalExecutor::Task,
    ) {
        Err(tally_node::NodeError::Recovery(tally_node::wal::startup::RecoveryError::Wal(
            tally_node::wal::WalError::Locked(refused),
        ))) => Ok(refused.to_string()),
        Err(other) => Err(format!("refused for another reason: {other}")),
        Ok(started) => {
            let _ = started.stop().await;
            Err("it started on a disk a running node holds".to_owned())
        }
    };
    lock_slot(&slot.second_processes).push(outcome);
}

fn lock_slot<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The votes of a run: IDs (UUID v4 bytes) and options drawn from the seed.
fn draw_votes(config: &ClusterConfig) -> Vec<VoteEntry> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x766f_7465_7331);
    (0..config.votes)
        .map(|_| {
            let mut id = [0u8; 16];
            rng.fill_bytes(&mut id);
            id[6] = (id[6] & 0x0f) | 0x40;
            id[8] = (id[8] & 0x3f) | 0x80;
            VoteEntry::new(id, u8::from(!rng.random_bool(0.55)))
        })
        .collect()
}

enum Action {
    Start(usize),
    End(usize),
}

/// How far a run has got, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Simulated ms since the start.
    pub simulated_ms: u64,
    /// Vote IDs invoked so far, and of how many.
    pub invoked: u64,
    /// All vote IDs of the run.
    pub votes: u64,
    /// Whether the faults are over and the checker runs.
    pub checking: bool,
}

/// How often [`run_cluster_with`] reports progress, in simulated ms.
pub const PROGRESS_EVERY_MS: u64 = 500;

/// Runs one seed of the cluster simulation and checks it.
pub fn run_cluster(config: &ClusterConfig) -> Result<ClusterReport, ClusterFailure> {
    run_cluster_with(config, &mut |_| {})
}

/// [`run_cluster`], calling `progress` every [`PROGRESS_EVERY_MS`] simulated ms.
pub fn run_cluster_with(
    config: &ClusterConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<ClusterReport, ClusterFailure> {
    let wall = Instant::now();
    let faults = scenario::sample_faults(config);
    let fail = |what: String| ClusterFailure {
        seed: config.seed,
        what,
        faults: faults.clone(),
        replay: replay_command(config),
    };
    if !(1..=scenario::REGION_NAMES.len()).contains(&config.regions) {
        return Err(fail(format!(
            "--regions must be 1 to {}",
            scenario::REGION_NAMES.len()
        )));
    }
    let certs_dir = make_certs().map_err(fail)?;
    let certs = certs_dir.path().to_owned();
    let names = Arc::new(config.region_names());
    let shared: Shared = Arc::new(Mutex::new(Ledger::new(draw_votes(config))));

    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(config.seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_millis(EPOCH_UNIX_MS))
        .simulation_duration(Duration::from_secs(1_800))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(LATENCY_MS.0))
        .max_message_latency(Duration::from_millis(LATENCY_MS.1))
        .repair_rate(LOSS_REPAIR_RATE)
        .udp_capacity(1 << 14)
        .tcp_capacity(1 << 14);
    // A crash tears unsynced writes at 512-byte sector boundaries: a log's tail may survive
    // in part, and recovery must stop cleanly at the first torn record.
    builder.fs().block_size(512);
    let mut sim = builder.build();

    let slots: Vec<Arc<NodeSlot>> = (0..config.regions).map(|_| Arc::default()).collect();
    let offsets = scenario::host_clock_offsets(config, &faults);
    for (slot, offset) in slots.iter().zip(offsets) {
        slot.clock_offset.store(offset, Ordering::Relaxed);
    }
    lock(&shared).faults = faults.clone();
    let mismatched: Option<usize> = faults
        .iter()
        .find(|f| f.kind == FaultKind::MismatchedDefinition)
        .map(|f| f.a[0]);
    if let Some(region) = mismatched {
        slots[region].reversed.store(true, Ordering::Relaxed);
        lock(&shared).reversed = (0..config.regions).map(|r| r == region).collect();
    }
    let log_fill_bytes = scenario::log_fill_bytes(config);
    let replicated = scenario::replicated_acks(config);
    if replicated {
        lock(&shared).ack_partners = Some(
            (0..config.regions)
                .map(|r| scenario::ack_partner(r, config.regions))
                .collect(),
        );
    }
    for (index, slot) in slots.iter().enumerate() {
        let spec = Arc::new(NodeSpec {
            index,
            names: names.clone(),
            certs: certs.clone(),
            seed: config.seed,
            votes: config.votes,
            reserve_index: !faults
                .iter()
                .any(|f| f.kind == FaultKind::UnreservedIndex && f.a.contains(&index)),
            planted_bug: config.planted_bug,
            ack_peer: replicated
                .then(|| names[scenario::ack_partner(index, config.regions)].clone()),
            second_processes_at_ms: faults
                .iter()
                .filter(|f| f.kind == FaultKind::SecondProcess && f.a.contains(&index))
                .map(|f| f.at_ms)
                .collect(),
            log_fill_bytes,
            shared: shared.clone(),
        });
        let slot = slot.clone();
        sim.host(names[index].as_str(), move || {
            run_node(spec.clone(), slot.clone())
        });
    }

    // Each region's edge, between the voters and the nodes (the real `tally-edge`).
    for (index, host) in edges::edge_hosts(&names).iter().enumerate() {
        let names = names.clone();
        sim.host(host.as_str(), move || edges::run_edge(names.clone(), index));
    }

    let plan = Arc::new(Plan {
        regions: names.to_vec(),
        single: config.single_votes(),
        votes: config.votes,
        start_ms: EPOCH_UNIX_MS + WARM_UP_MS,
        seed: config.seed,
    });
    sim.client(
        workload::CLIENTS_HOST,
        workload::clients(plan.clone(), shared.clone()),
    );
    let verdict = Arc::new(Mutex::new(None));
    sim.client(
        "checker",
        checker::checker(plan.clone(), shared.clone(), verdict.clone()),
    );

    let mut actions: Vec<(u64, Action)> = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        actions.push((fault.at_ms, Action::Start(i)));
        actions.push((fault.end_ms(), Action::End(i)));
    }
    actions.sort_by_key(|(at, _)| *at);
    let heal_ms = actions
        .last()
        .map_or(0, |(at, _)| *at)
        .max(WARM_UP_MS + VOTING_MS);
    let mut next_action = 0;
    let mut healed = false;
    let mut healed_at = (Duration::ZERO, Duration::ZERO);
    let mut samples = config.record_chart.then(|| chart::Samples {
        regions: names.to_vec(),
        points: Vec::new(),
        faults: faults.clone(),
    });
    let mut next_sample = 0;
    let mut next_progress = 0;
    let mut disk_held = vec![false; slots.len()];
    let mut disk_holds = 0;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while let Some((at, action)) = actions.get(next_action) {
            if *at > now {
                break;
            }
            let now_unix = EPOCH_UNIX_MS + now;
            if let Action::Start(i) = action {
                let fault = &faults[*i];
                let crash = matches!(
                    fault.kind,
                    FaultKind::Crash | FaultKind::DiskLoss | FaultKind::DiskCorruption
                );
                let aimed = {
                    let ledger = lock(&shared);
                    fault.a.iter().all(|&r| {
                        let answered = ledger.last_answer_ms.get(r).copied().unwrap_or(0);
                        slots[r].syncing.load(Ordering::Relaxed)
                            && answered + disk::SIM_FSYNC.as_millis() as u64 >= now_unix
                    })
                };
                if crash && !aimed && now < *at + CRASH_AIM_MS {
                    break;
                }
            }
            match action {
                Action::Start(i) => {
                    let damage_seed = config.seed ^ CORRUPTION_SALT ^ ((*i as u64) << 40);
                    let fault = &faults[*i];
                    start_fault(&mut sim, &names, fault, &faults, &slots, &shared, now_unix);
                    if fault.kind == FaultKind::DiskCorruption {
                        for &r in &fault.a {
                            *slots[r]
                                .corruption
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner) =
                                Some(damage_seed ^ r as u64);
                        }
                    }
                }
                Action::End(i) => end_fault(&mut sim, &names, &faults[*i], &faults, &slots, now),
            }
            next_action += 1;
        }
        supervise(&mut sim, &names, &slots, EPOCH_UNIX_MS + now);
        for (slot, held) in slots.iter().zip(&mut disk_held) {
            let now_held = slot_has_hold(slot, Hold::DiskLow);
            disk_holds += u64::from(now_held && !*held);
            *held = now_held;
        }
        if !healed && now >= heal_ms {
            heal(&mut sim, &names);
            healed = true;
            healed_at = (sim.elapsed(), wall.elapsed());
        }
        if healed && !lock(&shared).healed {
            // The operator's fix of a mismatched definition comes once the clients are done
            // (the node's configuration, then a restart); only then may the checker start.
            let mut ledger = lock(&shared);
            match mismatched {
                Some(_) if !ledger.clients_done => {}
                Some(region) => {
                    slots[region].reversed.store(false, Ordering::Relaxed);
                    ledger.reversed.iter_mut().for_each(|r| *r = false);
                    ledger.healed = true;
                    drop(ledger);
                    *slots[region]
                        .handle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                    // No longer waiting for its supervisor, if it was.
                    slots[region].exited_at_ms.store(0, Ordering::Relaxed);
                    sim.bounce(names[region].as_str());
                }
                None => ledger.healed = true,
            }
        }
        if now >= next_progress {
            let invoked = lock(&shared).invoked;
            progress(Progress {
                simulated_ms: now,
                invoked,
                votes: config.votes,
                checking: healed,
            });
            next_progress = now + PROGRESS_EVERY_MS;
        }
        if let Some(samples) = samples.as_mut() {
            if now >= next_sample {
                samples.points.push((now, sample(&mut sim, &names, &slots)));
                next_sample = now + CHART_SAMPLE_MS;
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => return Err(fail(format!("the simulation stopped: {error}"))),
        }
    }
    let simulated = sim.elapsed();
    drop(sim);
    let mut second_processes_refused = 0;
    for (slot, name) in slots.iter().zip(names.iter()) {
        for outcome in lock_slot(&slot.second_processes).iter() {
            match outcome {
                Ok(_) => second_processes_refused += 1,
                Err(what) => {
                    return Err(fail(format!("a second process on {name}'s disk: {what}")));
                }
            }
        }
    }
    let checked = verdict
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or_else(|| Err("the checker never reported".to_owned()))
        .map_err(fail)?;
    let mut ledger = lock(&shared);
    let totals: Vec<u64> = checked.totals.iter().map(|&t| t as u64).collect();
    ledger.trace(&totals);
    Ok(ClusterReport {
        seed: config.seed,
        trace_hash: ledger.trace,
        faults,
        checked,
        single_calls: ledger.single_calls,
        batch_calls: ledger.batch_calls,
        cross_region_retries: ledger.cross_region_retries,
        corruptions: ledger.corruptions.clone(),
        simulated,
        wall: wall.elapsed(),
        healed_at,
        chart: samples,
        second_processes_refused,
        log_failure_exits: slots.iter().map(|s| s.exits.load(Ordering::Relaxed)).sum(),
        disk_holds,
    })
}

/// Whether the node of `slot` is running and held by `hold`.
fn slot_has_hold(slot: &NodeSlot, hold: Hold) -> bool {
    slot.handle
        .lock()
        .ok()
        .and_then(|handle| handle.as_ref().map(|h| h.health.has(hold)))
        .unwrap_or(false)
}

/// Starts again, [`SUPERVISOR_RESTART_MS`] after it exited, every node that exited on a
/// failed log (and is not down for a crash meanwhile).
fn supervise(sim: &mut turmoil::Sim<'_>, names: &[String], slots: &[Arc<NodeSlot>], now_unix: u64) {
    for (slot, name) in slots.iter().zip(names) {
        let exited_at = slot.exited_at_ms.load(Ordering::Relaxed);
        if exited_at != 0
            && now_unix >= exited_at + SUPERVISOR_RESTART_MS
            && !sim.is_host_running(name.as_str())
        {
            slot.exited_at_ms.store(0, Ordering::Relaxed);
            sim.bounce(name.as_str());
        }
    }
}

fn pairs<'n>(names: &'n [String], fault: &Fault) -> Vec<(&'n str, &'n str)> {
    let mut pairs = Vec::new();
    for &a in &fault.a {
        for &b in &fault.b {
            pairs.push((names[a].as_str(), names[b].as_str()));
        }
    }
    pairs
}

#[allow(clippy::too_many_arguments)] // the driver's state, passed in one place
fn start_fault(
    sim: &mut turmoil::Sim<'_>,
    names: &[String],
    fault: &Fault,
    faults: &[Fault],
    slots: &[Arc<NodeSlot>],
    shared: &Shared,
    now_unix: u64,
) {
    let now_ms = now_unix - EPOCH_UNIX_MS;

    // A machine that crashes or restarts is no longer waiting for its supervisor.
    let forget = |region: usize| {
        *slots[region]
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        slots[region].exited_at_ms.store(0, Ordering::Relaxed);
    };
    match fault.kind {
        FaultKind::Partition | FaultKind::LongPartition => {
            for (a, b) in pairs(names, fault) {
                sim.partition(a, b);
            }
        }
        FaultKind::OneWayPartition => {
            for (a, b) in pairs(names, fault) {
                sim.partition_oneway(a, b);
            }
        }
        FaultKind::Hold => {
            for (a, b) in pairs(names, fault) {
                sim.hold(a, b);
            }
        }
        FaultKind::PacketLoss => {
            for (a, b) in pairs(names, fault) {
                sim.set_link_fail_rate(a, b, LOSS_FAIL_RATE);
            }
        }
        FaultKind::LatencySpike => {
            for (a, b) in pairs(names, fault) {
                sim.set_link_latency(a, b, Duration::from_millis(SPIKE_LATENCY_MS));
            }
        }
        FaultKind::Crash | FaultKind::DiskCorruption => {
            for &r in &fault.a {
                forget(r);
                isolate_node_http(sim, names, r, true);
                sim.crash(names[r].as_str());
            }
        }
        FaultKind::DiskLoss => {
            for &r in &fault.a {
                forget(r);
                isolate_node_http(sim, names, r, true);
                sim.crash(names[r].as_str());
                slots[r].disk.fetch_add(1, Ordering::Relaxed);
                let back = now_unix + fault.for_ms;
                lock(shared).disk_losses.push((r, now_unix, back));
            }
        }
        FaultKind::Restart => {
            for &r in &fault.a {
                forget(r);
                isolate_node_http(sim, names, r, true);
                sim.bounce(names[r].as_str());
                isolate_node_http(sim, names, r, false);
                reapply_link_faults(sim, names, faults, now_ms, r);
            }
        }
        // Started by the host itself at its time (`second_process`); configured at start.
        FaultKind::SecondProcess | FaultKind::UnreservedIndex => {}
        FaultKind::LostAnswers => cut_links(sim, names, fault),
        FaultKind::ClockSkew => {
            for &r in &fault.a {
                let step = fault.clock_step_ms();
                slots[r].clock_offset.fetch_add(step, Ordering::Relaxed);
            }
        }
        FaultKind::DiskFull => {
            for &r in &fault.a {
                slots[r].disk_faults.leave_room(fault.room_bytes);
            }
        }
        FaultKind::FailedFsync => {
            for &r in &fault.a {
                slots[r].disk_faults.fail_next_sync();
            }
        }
        // Set in the region's configuration before it starts; fixed by the driver after the
        // clients are done.
        FaultKind::MismatchedDefinition => {}
        // The machine goes dark, then its process is gone: cut off first, so the teardown's
        // connection resets (issued in an order tokio draws from process-wide task IDs) are
        // dropped on the cut links rather than delivered in an order another run in the same
        // process would not repeat. Its peers see what a dead machine shows: silence.
        FaultKind::EdgeCrash => {
            for &r in &fault.a {
                let edge = edges::edge_host(&names[r]);
                isolate_edge(sim, names, &edge, true);
                sim.crash(edge.as_str());
            }
        }
        FaultKind::EdgeCutOff => cut_links(sim, names, fault),
        FaultKind::SlowNode => {
            for &r in &fault.a {
                for edge in edges::edge_hosts(names) {
                    let slow = Duration::from_millis(scenario::SLOW_NODE_LATENCY_MS);
                    sim.set_link_latency(edge.as_str(), names[r].as_str(), slow);
                    sim.set_link_max_message_latency(edge.as_str(), names[r].as_str(), slow);
                }
            }
        }
    }
}

fn end_fault(
    sim: &mut turmoil::Sim<'_>,
    names: &[String],
    fault: &Fault,
    faults: &[Fault],
    slots: &[Arc<NodeSlot>],
    now_ms: u64,
) {
    match fault.kind {
        FaultKind::Partition | FaultKind::LongPartition => {
            for (a, b) in pairs(names, fault) {
                sim.repair(a, b);
            }
        }
        FaultKind::OneWayPartition => {
            for (a, b) in pairs(names, fault) {
                sim.repair_oneway(a, b);
            }
        }
        FaultKind::Hold => {
            for (a, b) in pairs(names, fault) {
                sim.release(a, b);
            }
        }
        FaultKind::PacketLoss => {
            for (a, b) in pairs(names, fault) {
                sim.set_link_fail_rate(a, b, 0.0);
                sim.repair(a, b);
            }
        }
        FaultKind::LatencySpike => {
            for (a, b) in pairs(names, fault) {
                normal_latency(sim, a, b);
            }
        }
        FaultKind::Crash | FaultKind::DiskLoss | FaultKind::DiskCorruption => {
            for &r in &fault.a {
                sim.bounce(names[r].as_str());
                isolate_node_http(sim, names, r, false);
                reapply_link_faults(sim, names, faults, now_ms, r);
            }
        }
        FaultKind::Restart | FaultKind::SecondProcess | FaultKind::UnreservedIndex => {}
        FaultKind::LostAnswers => {
            for &r in &fault.a {
                for (other, name) in names.iter().enumerate() {
                    if other != r {
                        sim.repair(names[r].as_str(), name.as_str());
                    }
                }
                sim.repair_oneway(names[r].as_str(), workload::CLIENTS_HOST);
                for edge in edges::edge_hosts(names) {
                    sim.repair_oneway(names[r].as_str(), edge.as_str());
                }
            }
        }
        FaultKind::ClockSkew => {
            for &r in &fault.a {
                let step = fault.clock_step_ms();
                slots[r].clock_offset.fetch_sub(step, Ordering::Relaxed);
            }
        }
        FaultKind::DiskFull => {
            for &r in &fault.a {
                slots[r].disk_faults.set_capacity(None);
            }
        }
        FaultKind::FailedFsync => {}
        FaultKind::MismatchedDefinition => {}
        FaultKind::EdgeCrash => {
            for &r in &fault.a {
                let edge = edges::edge_host(&names[r]);
                sim.bounce(edge.as_str());
                isolate_edge(sim, names, &edge, false);
            }
        }
        FaultKind::EdgeCutOff => {
            for &r in &fault.a {
                sim.repair(edges::edge_host(&names[r]).as_str(), names[r].as_str());
            }
        }
        FaultKind::SlowNode => {
            for &r in &fault.a {
                for edge in edges::edge_hosts(names) {
                    normal_latency(sim, &edge, &names[r]);
                }
            }
        }
    }
}

/// The cuts of a fault that cuts a node's links to some of its clients: lost answers (its
/// peers, and its answers to clients and edges), an edge cut off from its region's node.
fn cut_links(sim: &mut turmoil::Sim<'_>, names: &[String], fault: &Fault) {
    for &r in &fault.a {
        match fault.kind {
            FaultKind::LostAnswers => {
                for (other, name) in names.iter().enumerate() {
                    if other != r {
                        sim.partition(names[r].as_str(), name.as_str());
                    }
                }
                sim.partition_oneway(names[r].as_str(), workload::CLIENTS_HOST);
                // The edges are the node's clients too.
                for edge in edges::edge_hosts(names) {
                    sim.partition_oneway(names[r].as_str(), edge.as_str());
                }
            }
            FaultKind::EdgeCutOff => {
                sim.partition(edges::edge_host(&names[r]).as_str(), names[r].as_str());
            }
            _ => {}
        }
    }
}

/// Cuts (or repairs) node `r`'s HTTP links, to the clients and to every edge, around a crash
/// or restart: its connections' resets at teardown (issued in an order tokio draws from
/// process-wide task IDs) are then dropped, not delivered in an order another run in the
/// same process would not repeat. Its clients see what a dead machine shows: silence.
fn isolate_node_http(sim: &mut turmoil::Sim<'_>, names: &[String], r: usize, cut: bool) {
    let node = names[r].as_str();
    for other in edges::edge_hosts(names)
        .iter()
        .map(String::as_str)
        .chain([workload::CLIENTS_HOST])
    {
        if cut {
            sim.partition(node, other);
        } else {
            sim.repair(node, other);
        }
    }
}

/// After node `r`'s links were repaired: the cuts of faults still in force on them again.
fn reapply_link_faults(
    sim: &mut turmoil::Sim<'_>,
    names: &[String],
    faults: &[Fault],
    now_ms: u64,
    r: usize,
) {
    for fault in faults {
        let touches = matches!(fault.kind, FaultKind::LostAnswers | FaultKind::EdgeCutOff)
            && fault.a.contains(&r);
        if touches && fault.at_ms <= now_ms && now_ms < fault.end_ms() {
            cut_links(sim, names, fault);
        }
    }
}

/// Cuts (or repairs) every link of edge host `edge`: to the clients and to every node.
fn isolate_edge(sim: &mut turmoil::Sim<'_>, names: &[String], edge: &str, cut: bool) {
    for other in names
        .iter()
        .map(String::as_str)
        .chain([workload::CLIENTS_HOST])
    {
        if cut {
            sim.partition(edge, other);
        } else {
            sim.repair(edge, other);
        }
    }
}

/// Makes the network whole: every link repaired, released, lossless and fast again.
fn heal(sim: &mut turmoil::Sim<'_>, names: &[String]) {
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
            sim.repair(a.as_str(), b.as_str());
            sim.release(a.as_str(), b.as_str());
            normal_latency(sim, a, b);
        }
        sim.repair(a.as_str(), workload::CLIENTS_HOST);
    }
    // Edges: running, back to every node and the clients, fast again.
    for edge in edges::edge_hosts(names) {
        if !sim.is_host_running(edge.as_str()) {
            sim.bounce(edge.as_str());
        }
        isolate_edge(sim, names, &edge, false);
        for node in names {
            normal_latency(sim, &edge, node);
        }
    }
}

fn normal_latency(sim: &turmoil::Sim<'_>, a: &str, b: &str) {
    sim.set_link_latency(a, b, Duration::from_millis(LATENCY_MS.0));
    sim.set_link_max_message_latency(a, b, Duration::from_millis(LATENCY_MS.1));
}

fn sample(sim: &mut turmoil::Sim<'_>, names: &[String], slots: &[Arc<NodeSlot>]) -> chart::Sample {
    slots
        .iter()
        .zip(names)
        .map(|(slot, name)| {
            if !sim.is_host_running(name.as_str()) {
                return None;
            }
            let handle = slot.handle.lock().ok()?.clone()?;
            let snapshot = handle.results.borrow().clone();
            let poll = snapshot.polls.values().next()?;
            let votes: Vec<i64> = poll.results.options.iter().map(|o| o.votes).collect();
            Some((*votes.first()?, votes.iter().skip(1).sum()))
        })
        .collect()
}
