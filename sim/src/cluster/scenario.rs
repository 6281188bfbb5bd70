//! What one run of the cluster simulation does: the scenario's size, and the faults its seed
//! samples (swarm testing: each seed enables its own mix of fault kinds, then draws when and
//! where they strike).

use std::fmt;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tally_node::config::PlantedBug;

/// Votes in the full Super Bowl scenario.
pub const SUPERBOWL_VOTES: u64 = 30_000_000;

/// Simulated milliseconds over which the votes arrive.
pub const VOTING_MS: u64 = 30_000;

/// Simulated milliseconds from the start before the first vote (the nodes start and meet).
pub const WARM_UP_MS: u64 = 2_000;

/// Votes per edge-aggregator batch (DESIGN.md §5: bursts travel as batched frames).
pub const EDGE_BATCH_VOTES: usize = 1_000;

/// Share of votes sent one at a time by individual clients (the rest come through edges).
pub const SINGLE_VOTE_SHARE: f64 = 0.1;

/// Most single-vote clients' votes in one run: each is its own HTTP exchange, and turmoil's
/// cost grows with messages in flight.
pub const SINGLE_VOTES_MAX: u64 = 20_000;

/// Longest a fault lasts, except the long partition.
pub const FAULT_MS_MAX: u64 = 8_000;

/// The long partition outlasts the QUIC idle timeout (30 s): the link dies and must redial.
pub const LONG_PARTITION_MS: u64 = 36_000;

/// Region names, in order (a run uses the first `regions`).
pub const REGION_NAMES: [&str; 8] = [
    "us-east", "us-west", "eu-west", "eu-north", "ap-south", "ap-east", "sa-east", "af-south",
];

/// What one run does.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Seeds every random choice: faults, workload, the network, the nodes, quinn.
    pub seed: u64,
    /// Regional nodes (at most [`REGION_NAMES`]).
    pub regions: usize,
    /// Distinct votes (vote IDs) the clients cast.
    pub votes: u64,
    /// A guarantee one node breaks on purpose (the checker's own tests).
    pub planted_bug: Option<PlantedBug>,
    /// Faults to force on regardless of the seed's sample (the planted-bug tests use this to
    /// give a bug its trigger).
    pub force_faults: Vec<FaultKind>,
    /// Record each region's displayed split over time for a chart.
    pub record_chart: bool,
}

impl ClusterConfig {
    /// The Super Bowl scenario at `scale` (1.0: 30 million votes) for `seed`, on 5 regions.
    pub fn superbowl(seed: u64, scale: f64) -> Self {
        Self {
            seed,
            regions: 5,
            votes: ((SUPERBOWL_VOTES as f64 * scale).round() as u64).max(1),
            planted_bug: None,
            force_faults: Vec::new(),
            record_chart: false,
        }
    }

    /// Votes sent one at a time (the rest go in edge batches).
    pub fn single_votes(&self) -> u64 {
        ((self.votes as f64 * SINGLE_VOTE_SHARE).round() as u64).clamp(1, SINGLE_VOTES_MAX)
    }

    /// The region names of this run.
    pub fn region_names(&self) -> Vec<String> {
        REGION_NAMES[..self.regions]
            .iter()
            .map(|n| (*n).to_owned())
            .collect()
    }
}

/// The kinds of fault a seed may enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The regions split into two groups that cannot talk.
    Partition,
    /// One region can send to another but not hear back.
    OneWayPartition,
    /// A link holds every message, then delivers them all at once.
    Hold,
    /// A link drops messages in bursts.
    PacketLoss,
    /// A link's latency jumps to hundreds of milliseconds.
    LatencySpike,
    /// A node's machine crashes (unsynced writes are lost) and comes back.
    Crash,
    /// A node's machine crashes and its disk is gone: it returns as a new actor.
    DiskLoss,
    /// A node's process restarts at once, in the middle of the burst (the disk keeps
    /// everything, synced or not).
    Restart,
    /// One region is cut off from all others for longer than the QUIC idle timeout.
    LongPartition,
    /// One region is cut off from its peers and its answers to clients are lost: it counts
    /// votes whose clients never hear back, so they retry at other regions, which count them
    /// again; the winner rule must retract the loser once the region returns.
    LostAnswers,
    /// A second node process starts on a running node's data directory (an operator's slip:
    /// a unit restarted while the old process lingers, a volume mounted twice). It must be
    /// refused before it reads or writes anything, and the running node must not notice.
    SecondProcess,
    /// The nodes run without `expected_votes` (an operator who did not reserve): every
    /// dedupe index grows from empty through every doubling during the burst, and crashed
    /// nodes replay their logs into indexes that grow as they refill. Growth is a bounded
    /// step per insert and changes no answer, so every check must hold.
    UnreservedIndex,
}

impl FaultKind {
    /// Every kind, in table order.
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Partition,
        FaultKind::OneWayPartition,
        FaultKind::Hold,
        FaultKind::PacketLoss,
        FaultKind::LatencySpike,
        FaultKind::Crash,
        FaultKind::DiskLoss,
        FaultKind::Restart,
        FaultKind::LongPartition,
        FaultKind::LostAnswers,
        FaultKind::SecondProcess,
        FaultKind::UnreservedIndex,
    ];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::OneWayPartition => "one-way partition",
            FaultKind::Hold => "hold",
            FaultKind::PacketLoss => "packet loss",
            FaultKind::LatencySpike => "latency spike",
            FaultKind::Crash => "crash + restart",
            FaultKind::DiskLoss => "crash losing the disk",
            FaultKind::Restart => "restart mid-burst",
            FaultKind::LongPartition => "partition > idle timeout",
            FaultKind::LostAnswers => "lost answers, region cut off",
            FaultKind::SecondProcess => "second process on a data dir",
            FaultKind::UnreservedIndex => "index not reserved",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fault: what, on which regions (indexes), from when, for how long (simulated ms from
/// the start of the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// One side (for crashes: the crashed region).
    pub a: Vec<usize>,
    /// The other side (empty for crashes).
    pub b: Vec<usize>,
    /// When it starts.
    pub at_ms: u64,
    /// How long it lasts (0 for an instant restart).
    pub for_ms: u64,
}

impl Fault {
    /// When it is over.
    pub fn end_ms(&self) -> u64 {
        self.at_ms + self.for_ms
    }
}

/// Samples the faults of `config`'s seed.
pub fn sample_faults(config: &ClusterConfig) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6661_756c_7473);
    let regions = config.regions;
    let mut faults = Vec::new();
    let start = WARM_UP_MS;
    let end = WARM_UP_MS + VOTING_MS;
    let mut crashed_regions: Vec<usize> = (0..regions).collect();
    crashed_regions.shuffle(&mut rng);
    for kind in FaultKind::ALL {
        let enabled = rng.random_bool(0.5) || config.force_faults.contains(&kind);
        if !enabled || regions < 2 {
            continue;
        }
        let count = match kind {
            FaultKind::LongPartition | FaultKind::DiskLoss | FaultKind::UnreservedIndex => 1,
            _ => rng.random_range(1..=3),
        };
        for _ in 0..count {
            let at_ms = rng.random_range(start..end - 2_000);
            let for_ms = rng.random_range(500..=FAULT_MS_MAX);
            let fault = match kind {
                FaultKind::Partition => {
                    let mut order: Vec<usize> = (0..regions).collect();
                    order.shuffle(&mut rng);
                    let cut = rng.random_range(1..regions);
                    Fault {
                        kind,
                        a: order[..cut].to_vec(),
                        b: order[cut..].to_vec(),
                        at_ms,
                        for_ms,
                    }
                }
                FaultKind::OneWayPartition
                | FaultKind::Hold
                | FaultKind::PacketLoss
                | FaultKind::LatencySpike => {
                    let (x, y) = two_regions(&mut rng, regions);
                    Fault {
                        kind,
                        a: vec![x],
                        b: vec![y],
                        at_ms,
                        for_ms: if kind == FaultKind::Hold {
                            for_ms.min(3_000)
                        } else {
                            for_ms
                        },
                    }
                }
                FaultKind::SecondProcess => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions)],
                    b: Vec::new(),
                    at_ms,
                    for_ms: 0,
                },
                // Configuration of every node (one config file, deployed everywhere), in force
                // from the start; its time is only a table entry.
                FaultKind::UnreservedIndex => Fault {
                    kind,
                    a: (0..regions).collect(),
                    b: Vec::new(),
                    at_ms: start,
                    for_ms: 0,
                },
                FaultKind::LostAnswers => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions)],
                    b: Vec::new(),
                    at_ms,
                    for_ms: rng.random_range(1_500..=4_000),
                },
                FaultKind::LongPartition => {
                    let x = rng.random_range(0..regions);
                    Fault {
                        kind,
                        a: vec![x],
                        b: (0..regions).filter(|&r| r != x).collect(),
                        at_ms,
                        for_ms: LONG_PARTITION_MS,
                    }
                }
                FaultKind::Crash | FaultKind::DiskLoss | FaultKind::Restart => {
                    // Each crash-like fault takes a region of its own, so no region is
                    // crashed twice at once; at most every region but one is ever down.
                    let Some(region) = crashed_regions.pop() else {
                        continue;
                    };
                    if crashed_regions.is_empty() {
                        continue;
                    }
                    Fault {
                        kind,
                        a: vec![region],
                        b: Vec::new(),
                        at_ms,
                        for_ms: if kind == FaultKind::Restart {
                            0
                        } else {
                            for_ms
                        },
                    }
                }
            };
            faults.push(fault);
        }
    }
    faults.sort_by_key(|f| (f.at_ms, f.kind));
    faults
}

fn two_regions(rng: &mut StdRng, regions: usize) -> (usize, usize) {
    let x = rng.random_range(0..regions);
    let y = (x + rng.random_range(1..regions)) % regions;
    (x, y)
}
