//! What one run of the cluster simulation does: the scenario's size, and the faults its seed
//! samples (swarm testing: each seed enables its own mix of fault kinds, then draws when and
//! where they strike).

use std::fmt;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tally_node::planted::PlantedBug;

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

/// Edge hosts of a run (at most one per region; the first regions' own): region `r`'s voters
/// use edge `r % edges` first. Each simulated host costs wall time on every tick, so a
/// handful of edges stand for the autoscaled fleet.
pub const EDGES_MAX: usize = 2;

/// Longest a fault lasts, except the long partition.
pub const FAULT_MS_MAX: u64 = 8_000;

/// The long partition outlasts the QUIC idle timeout (30 s): the link dies and must redial.
pub const LONG_PARTITION_MS: u64 = 36_000;

/// Every simulated node's `disk_reserve_bytes`, sized for the simulation's small logs (a few
/// hundred KB per node at 1% scale): a few seconds of one node's log at that scale.
pub const SIM_DISK_RESERVE_BYTES: u64 = 32 << 10;

/// A disk-full fault leaves its disk at most this much room: up to four reserves, so some
/// faults are seen coming by the disk watch (the node refuses votes and stays up), and others
/// fill the disk within one watch interval and fail a write (the node exits and restarts).
pub const DISK_FULL_ROOM_BYTES_MAX: u64 = 4 * SIM_DISK_RESERVE_BYTES;

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
    /// Run in `ack_mode = "replicated"` whatever the seed draws (see [`replicated_acks`]).
    pub force_replicated_acks: bool,
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
            force_replicated_acks: false,
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

/// Share of seeds that run in `ack_mode = "replicated"`.
pub const REPLICATED_ACKS_SHARE: f64 = 0.3;

/// Whether the run's nodes acknowledge under `ack_mode = "replicated"` (each with its
/// [`ack_partner`] as ack peer, `ack_fallback = "refuse"`), swarmed like a fault kind: drawn
/// from a stream of its own, so what the seed draws otherwise is unchanged.
pub fn replicated_acks(config: &ClusterConfig) -> bool {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6163_6b5f_6d6f_6465);
    let drawn = rng.random_bool(REPLICATED_ACKS_SHARE);
    config.regions >= 2 && (config.force_replicated_acks || drawn)
}

/// Share of seeds whose nodes' disks keep the log's fill ([`log_fill_bytes`]).
pub const LOG_FILL_SHARE: f64 = 0.5;

/// Bytes of fill a simulated disk keeps ahead of the log's appends when the seed draws it:
/// small, so that a run writes and refills it often and crashes and disk damage strike the
/// fill, the frames just before it, and appends landing in it.
pub const SIM_LOG_FILL_BYTES: u64 = 16 << 10;

/// The fill the run's disks keep ahead of the log's appends (`Storage::fill_ahead_bytes`,
/// as a real directory does): [`SIM_LOG_FILL_BYTES`] for a share of seeds, 0 for the rest,
/// drawn from a stream of its own, so what the seed draws otherwise is unchanged.
pub fn log_fill_bytes(config: &ClusterConfig) -> u64 {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6c6f_675f_6669_6c6c);
    if rng.random_bool(LOG_FILL_SHARE) {
        SIM_LOG_FILL_BYTES
    } else {
        0
    }
}

/// The ack peer of `region` under replicated acks: regions pair up (0 and 1, 2 and 3, ...),
/// and an odd last region takes region 0 (which does not take it back).
pub fn ack_partner(region: usize, regions: usize) -> usize {
    let partner = region ^ 1;
    if partner < regions { partner } else { 0 }
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
    /// One region's wall clock steps forward or back (by [`Fault::clock_step_ms`]: seconds
    /// to an hour) and steps back when the fault ends; while the kind is enabled every host's
    /// clock also runs a little off ([`host_clock_offsets`], within a quarter of the bound).
    /// The skewed node must stamp nothing, and the others keep counting.
    ClockSkew,
    /// A region's disk fills up, leaving it a little room ([`Fault::room_bytes`]): its writes
    /// fail with `ENOSPC` once that is used, unless its disk watch refuses votes first; space
    /// comes back when the fault ends.
    DiskFull,
    /// A region's next fsync fails (`EIO`) and loses the bytes it was to make durable: the
    /// node must stop acknowledging, exit, and be restarted by its supervisor.
    FailedFsync,
    /// A node's machine crashes and, while it is down, its disk rots: one byte of a synced
    /// log file flips, or a 512-byte sector of it reads back as zeros. It comes back on the
    /// damaged disk.
    DiskCorruption,
    /// One region's configuration lists the poll's options in another order (an operator's
    /// slip): it loses the cluster's agreement on the definition and refuses the poll's votes
    /// (clients retry elsewhere, as after a 503); once the clients are done its configuration
    /// is fixed and it restarts, and every vote it counted must count for the option it was
    /// cast for, everywhere.
    MismatchedDefinition,
    /// The nodes run without `expected_votes` (an operator who did not reserve): every
    /// dedupe index grows from empty through every doubling during the burst, and crashed
    /// nodes replay their logs into indexes that grow as they refill. Growth is a bounded
    /// step per insert and changes no answer, so every check must hold.
    UnreservedIndex,
    /// A region's edge crashes (the answers it held are lost; voters retry with the same
    /// vote IDs through another region's edge) and comes back empty.
    EdgeCrash,
    /// A region's edge is cut off from its own region's node: its breaker and readiness
    /// probe fail it over to the other regions' nodes.
    EdgeCutOff,
    /// A region's node answers the edges slowly ([`SLOW_NODE_LATENCY_MS`] each way): the
    /// edges' breakers count slow batches as failures and send to other nodes.
    SlowNode,
}

/// One-way latency between every edge and a slow node, in ms (a batch's round trip is over
/// the edges' slow-batch limit).
pub const SLOW_NODE_LATENCY_MS: u64 = 300;

impl FaultKind {
    /// Every kind, in table order (new kinds go last but before the clock step, and draw from
    /// streams of their own, [`FaultKind::own_stream`]: a seed that does not enable them draws
    /// the same faults as before they existed).
    pub const ALL: [FaultKind; 20] = [
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
        FaultKind::DiskFull,
        FaultKind::FailedFsync,
        FaultKind::DiskCorruption,
        FaultKind::MismatchedDefinition,
        FaultKind::UnreservedIndex,
        FaultKind::EdgeCrash,
        FaultKind::EdgeCutOff,
        FaultKind::SlowNode,
        // Last: a clock step takes the region no crash-like kind took.
        FaultKind::ClockSkew,
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
            FaultKind::ClockSkew => "clock step",
            FaultKind::DiskFull => "disk full",
            FaultKind::FailedFsync => "failed fsync",
            FaultKind::DiskCorruption => "crash + disk corruption",
            FaultKind::MismatchedDefinition => "mismatched poll definition",
            FaultKind::UnreservedIndex => "index not reserved",
            FaultKind::EdgeCrash => "edge crash",
            FaultKind::EdgeCutOff => "edge cut off from its region",
            FaultKind::SlowNode => "slow node",
        }
    }

    /// The stream a kind draws from: `None` for the ten the simulation began with, which
    /// share the seed's one stream (their draws are what old seeds replay); every kind added
    /// since has a stream of its own, numbered when it was added (not by its place in
    /// [`FaultKind::ALL`], which may change: the clock step stays last).
    fn own_stream(self) -> Option<u64> {
        match self {
            FaultKind::Partition
            | FaultKind::OneWayPartition
            | FaultKind::Hold
            | FaultKind::PacketLoss
            | FaultKind::LatencySpike
            | FaultKind::Crash
            | FaultKind::DiskLoss
            | FaultKind::Restart
            | FaultKind::LongPartition
            | FaultKind::LostAnswers => None,
            FaultKind::SecondProcess => Some(10),
            FaultKind::DiskFull => Some(11),
            FaultKind::FailedFsync => Some(12),
            FaultKind::DiskCorruption => Some(13),
            FaultKind::ClockSkew => Some(14),
            FaultKind::MismatchedDefinition => Some(15),
            FaultKind::UnreservedIndex => Some(16),
            FaultKind::EdgeCrash => Some(17),
            FaultKind::EdgeCutOff => Some(18),
            FaultKind::SlowNode => Some(19),
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
    /// How long it lasts (0 for an instant restart or a failed fsync).
    pub for_ms: u64,
    /// For a full disk: the room it leaves, in bytes (0 for other kinds).
    pub room_bytes: u64,
}

impl Fault {
    /// When it is over.
    pub fn end_ms(&self) -> u64 {
        self.at_ms + self.for_ms
    }

    /// For a [`FaultKind::ClockSkew`]: how far the region's wall clock steps (and steps back
    /// at the end), in ms. A function of the drawn times, so the fault needs no field of its
    /// own: 5 s, 30 s, 10 min or an hour, forward or back.
    pub fn clock_step_ms(&self) -> i64 {
        const STEPS_MS: [i64; 4] = [5_000, 30_000, 600_000, 3_600_000];
        let step = STEPS_MS[(self.at_ms % 4) as usize];
        if self.for_ms % 2 == 0 { step } else { -step }
    }
}

/// The nodes' `max_clock_offset_ms` in the simulation (the default).
pub const SIM_MAX_CLOCK_OFFSET_MS: u64 = 500;

/// Every host's constant wall-clock offset, in ms: none unless the run has a clock fault;
/// then each within ±[`SIM_MAX_CLOCK_OFFSET_MS`] / 4 (drawn from a stream of its own, so no
/// other draw changes), so healthy nodes disagree a little, as real ones do.
pub fn host_clock_offsets(config: &ClusterConfig, faults: &[Fault]) -> Vec<i64> {
    if !faults.iter().any(|f| f.kind == FaultKind::ClockSkew) {
        return vec![0; config.regions];
    }
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x636c_6f63_6b73);
    let spread = (SIM_MAX_CLOCK_OFFSET_MS / 4) as i64;
    (0..config.regions)
        .map(|_| rng.random_range(-spread..=spread))
        .collect()
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
        // The first kinds share one stream (their draws are what old seeds replay); every
        // later kind draws from a stream of its own, so enabling or adding one changes no
        // other kind's faults.
        let mut own_stream;
        let rng = match kind.own_stream() {
            Some(stream) => {
                own_stream = StdRng::seed_from_u64(
                    config.seed ^ 0x6661_756c_7473 ^ stream.wrapping_mul(0x9e37_79b9),
                );
                &mut own_stream
            }
            None => &mut rng,
        };
        // A mismatched definition takes a region's votes for the whole run: a quarter of
        // the seeds, so most runs keep every region counting.
        let share = if kind == FaultKind::MismatchedDefinition {
            0.25
        } else {
            0.5
        };
        let enabled = rng.random_bool(share) || config.force_faults.contains(&kind);
        if !enabled || regions < 2 {
            continue;
        }
        if kind == FaultKind::ClockSkew {
            faults.extend(clock_skew(rng, regions, &mut crashed_regions));
            continue;
        }
        if kind == FaultKind::MismatchedDefinition {
            faults.push(mismatched_definition(rng, regions));
            continue;
        }
        let count = match kind {
            FaultKind::LongPartition
            | FaultKind::DiskLoss
            | FaultKind::DiskCorruption
            | FaultKind::UnreservedIndex
            | FaultKind::EdgeCrash => 1,
            _ => rng.random_range(1..=3),
        };
        for _ in 0..count {
            let at_ms = rng.random_range(start..end - 2_000);
            let for_ms = rng.random_range(500..=FAULT_MS_MAX);
            let fault = match kind {
                FaultKind::Partition => {
                    let mut order: Vec<usize> = (0..regions).collect();
                    order.shuffle(rng);
                    let cut = rng.random_range(1..regions);
                    Fault {
                        kind,
                        a: order[..cut].to_vec(),
                        b: order[cut..].to_vec(),
                        at_ms,
                        for_ms,
                        room_bytes: 0,
                    }
                }
                FaultKind::OneWayPartition
                | FaultKind::Hold
                | FaultKind::PacketLoss
                | FaultKind::LatencySpike => {
                    let (x, y) = two_regions(rng, regions);
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
                        room_bytes: 0,
                    }
                }
                FaultKind::SecondProcess => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions)],
                    b: Vec::new(),
                    at_ms,
                    for_ms: 0,
                    room_bytes: 0,
                },
                // Configuration of every node (one config file, deployed everywhere), in force
                // from the start; its time is only a table entry.
                FaultKind::UnreservedIndex => Fault {
                    kind,
                    a: (0..regions).collect(),
                    b: Vec::new(),
                    at_ms: start,
                    for_ms: 0,
                    room_bytes: 0,
                },
                FaultKind::LostAnswers => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions)],
                    b: Vec::new(),
                    at_ms,
                    for_ms: rng.random_range(1_500..=4_000),
                    room_bytes: 0,
                },
                FaultKind::LongPartition => {
                    let x = rng.random_range(0..regions);
                    Fault {
                        kind,
                        a: vec![x],
                        b: (0..regions).filter(|&r| r != x).collect(),
                        at_ms,
                        for_ms: LONG_PARTITION_MS,
                        room_bytes: 0,
                    }
                }
                FaultKind::ClockSkew | FaultKind::MismatchedDefinition => continue,
                FaultKind::Crash
                | FaultKind::DiskLoss
                | FaultKind::Restart
                | FaultKind::DiskCorruption => {
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
                        room_bytes: 0,
                    }
                }
                FaultKind::DiskFull => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions)],
                    b: Vec::new(),
                    at_ms,
                    for_ms,
                    room_bytes: rng.random_range(0..=DISK_FULL_ROOM_BYTES_MAX),
                },
                FaultKind::FailedFsync => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions)],
                    b: Vec::new(),
                    at_ms,
                    for_ms: 0,
                    room_bytes: 0,
                },
                // An edge's faults name the edge (and its own region), a slow node the node.
                FaultKind::EdgeCrash | FaultKind::EdgeCutOff => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions.min(EDGES_MAX))],
                    b: Vec::new(),
                    at_ms,
                    for_ms,
                    room_bytes: 0,
                },
                FaultKind::SlowNode => Fault {
                    kind,
                    a: vec![rng.random_range(0..regions)],
                    b: Vec::new(),
                    at_ms,
                    for_ms,
                    room_bytes: 0,
                },
            };
            faults.push(fault);
        }
    }
    faults.sort_by_key(|f| (f.at_ms, f.kind));
    faults
}

/// The seed's mismatched-definition fault: a region whose configuration lists the poll's
/// options in the other order from the start (fixed, and the node restarted, once the clients
/// are done: see the cluster driver).
fn mismatched_definition(rng: &mut StdRng, regions: usize) -> Fault {
    Fault {
        kind: FaultKind::MismatchedDefinition,
        a: vec![rng.random_range(0..regions)],
        b: Vec::new(),
        at_ms: 0,
        for_ms: 0,
        room_bytes: 0,
    }
}

/// A clock fault: one region's clock steps during the burst. The region is one no crash-like
/// fault takes (the rest of the crash pool), so its node runs throughout and its clock
/// history is one piece; and the run needs three regions, so the healthy clocks are a
/// majority of every node's peers outside partitions (two nodes only have the tie-break,
/// which tally/tests/clock_skew.rs covers on real processes).
fn clock_skew(rng: &mut StdRng, regions: usize, crash_pool: &mut Vec<usize>) -> Option<Fault> {
    if regions < 3 || crash_pool.is_empty() {
        return None;
    }
    let region = crash_pool.pop()?;
    let at_ms = rng.random_range(WARM_UP_MS..WARM_UP_MS + VOTING_MS - 2_000);
    Some(Fault {
        kind: FaultKind::ClockSkew,
        a: vec![region],
        b: Vec::new(),
        at_ms,
        for_ms: rng.random_range(2_000..=FAULT_MS_MAX),
        room_bytes: 0,
    })
}

fn two_regions(rng: &mut StdRng, regions: usize) -> (usize, usize) {
    let x = rng.random_range(0..regions);
    let y = (x + rng.random_range(1..regions)) % regions;
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_step_takes_a_region_no_crash_takes_and_leaves_other_draws_alone() {
        // Goal: the clock fault's constraints hold, and adding the kind changed no other
        // kind's draws. Method: sample seeds with and without the kind forced, and compare
        // every other fault.
        let mut stepped = 0;
        for seed in 0..64 {
            let config = ClusterConfig::superbowl(seed, 0.0);
            let mut forced = config.clone();
            forced.force_faults = vec![FaultKind::ClockSkew];
            let faults = sample_faults(&forced);
            let others = |faults: &[Fault]| -> Vec<Fault> {
                faults
                    .iter()
                    .filter(|f| f.kind != FaultKind::ClockSkew)
                    .cloned()
                    .collect()
            };
            assert_eq!(
                others(&faults),
                others(&sample_faults(&config)),
                "seed {seed}"
            );
            let crashed: Vec<usize> = faults
                .iter()
                .filter(|f| {
                    matches!(
                        f.kind,
                        FaultKind::Crash | FaultKind::DiskLoss | FaultKind::Restart
                    )
                })
                .flat_map(|f| f.a.clone())
                .collect();
            for fault in faults.iter().filter(|f| f.kind == FaultKind::ClockSkew) {
                stepped += 1;
                assert!(!crashed.contains(&fault.a[0]), "seed {seed}: {fault:?}");
                assert!(fault.clock_step_ms().unsigned_abs() >= 5_000);
            }
            let offsets = host_clock_offsets(&forced, &faults);
            let quarter = (SIM_MAX_CLOCK_OFFSET_MS / 4) as i64;
            assert!(offsets.iter().all(|o| o.abs() <= quarter), "{offsets:?}");
        }
        assert!(
            stepped > 32,
            "most forced seeds step a clock ({stepped} of 64)"
        );
        let two = ClusterConfig {
            regions: 2,
            force_faults: vec![FaultKind::ClockSkew],
            ..ClusterConfig::superbowl(1, 0.0)
        };
        assert!(
            sample_faults(&two)
                .iter()
                .all(|f| f.kind != FaultKind::ClockSkew)
        );
    }

    #[test]
    fn a_mismatched_definition_changes_no_other_draw() {
        // Goal: the mismatched-definition kind draws from its own stream, so enabling it
        // changes no other fault (the clock step after it included). Method: sample seeds
        // with and without the kind forced, and compare every other fault.
        for seed in 0..64 {
            let config = ClusterConfig::superbowl(seed, 0.0);
            let mut forced = config.clone();
            forced.force_faults = vec![FaultKind::MismatchedDefinition];
            let faults = sample_faults(&forced);
            let (mismatched, others): (Vec<Fault>, Vec<Fault>) = faults
                .into_iter()
                .partition(|f| f.kind == FaultKind::MismatchedDefinition);
            let unforced: Vec<Fault> = sample_faults(&config)
                .into_iter()
                .filter(|f| f.kind != FaultKind::MismatchedDefinition)
                .collect();
            assert_eq!(others, unforced, "seed {seed}");
            assert_eq!(mismatched.len(), 1, "seed {seed}");
            assert_eq!(mismatched[0].at_ms, 0);
            assert!(mismatched[0].a[0] < config.regions);
        }
    }

    #[test]
    fn the_default_seeds_step_a_clock_in_some_seed() {
        // The CI range (seeds 0..12) must exercise the kind (sim/tests/cluster.rs asks).
        let seeds = (0..12).filter(|&seed| {
            sample_faults(&ClusterConfig::superbowl(seed, 0.0))
                .iter()
                .any(|f| f.kind == FaultKind::ClockSkew)
        });
        assert!(seeds.count() >= 2);
    }
}
