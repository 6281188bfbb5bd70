//! `tally-sim`: runs seeds of Tally's deterministic simulation and prints what they
//! exercised; a failing seed prints the command that replays it.
//!
//! - `cargo run --release -p tally-sim -- --seeds 100 --scenario superbowl` runs the real
//!   nodes under turmoil (the default scenario; `--scale 1` is the full 30 million votes);
//! - `--scenario replicas` runs the fast replica-level simulation;
//! - `SIM_SEED=N` (or `--seed N`) replays one seed and prints its trace hash; `--chart
//!   FILE.svg` draws that seed's displayed split per region over simulated time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use tally_node::planted::PlantedBug;
use tally_sim::cluster::{self, ClusterConfig, ClusterReport, FaultKind};

/// Deterministic simulation of Tally under network, process and disk faults.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// What to simulate: `superbowl` runs the real nodes under turmoil; `replicas` runs
    /// tally-core replicas over a simulated network (much faster, less real).
    #[arg(long, value_enum, default_value_t = Scenario::Superbowl)]
    scenario: Scenario,
    /// Run this many seeds, starting at --first.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replay exactly this seed (also read from SIM_SEED).
    #[arg(long, env = "SIM_SEED")]
    seed: Option<u64>,
    /// superbowl: the share of the full 30-million-vote scenario to run (1 = all of it;
    /// memory grows ~0.3 GB per million votes).
    #[arg(long, default_value_t = 0.01, value_parser = parse_scale)]
    scale: f64,
    /// superbowl: the exact number of votes (overrides --scale; 1 to 300,000,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=300_000_000))]
    votes: Option<u64>,
    /// superbowl: regional nodes (1 to 8).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=8))]
    regions: u8,
    /// superbowl: make every node break one guarantee, to see the checker catch it.
    #[arg(long, value_enum)]
    plant: Option<Bug>,
    /// superbowl: enable this fault kind in every seed, whatever its sample (repeatable).
    #[arg(long, value_enum)]
    force: Vec<Force>,
    /// superbowl, one seed: write an SVG chart of each region's displayed split here
    /// (needs --seed or SIM_SEED: a range of seeds draws no chart).
    #[arg(long, requires = "seed")]
    chart: Option<PathBuf>,
    /// superbowl: every seed in `ack_mode = "replicated"` (otherwise a seed draws it, like a
    /// fault kind), each region's ack peer its neighbour.
    #[arg(long)]
    replicated_acks: bool,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// superbowl, a range of seeds: run this many seeds at once, each on its own thread
    /// (results are the same; each takes its own memory).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// superbowl, a range of seeds: after a failing seed, run the rest and list every failure
    /// at the end (without it, the first failure stops the range).
    #[arg(long)]
    keep_going: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Superbowl,
    Replicas,
}

#[derive(Clone, Copy, ValueEnum)]
enum Bug {
    KeepDuplicates,
    AckBeforeFsync,
    AckBeforePeerFsync,
    ReuseActor,
    IgnoreClockSkew,
    AckAfterFailedWrite,
    TruncateDamage,
    MergeAcrossDefinitions,
}

impl From<Bug> for PlantedBug {
    fn from(bug: Bug) -> Self {
        match bug {
            Bug::KeepDuplicates => PlantedBug::KeepDuplicates,
            Bug::AckBeforeFsync => PlantedBug::AckBeforeFsync,
            Bug::AckBeforePeerFsync => PlantedBug::AckBeforePeerFsync,
            Bug::ReuseActor => PlantedBug::ReuseActorAfterDiskLoss,
            Bug::IgnoreClockSkew => PlantedBug::IgnoreClockSkew,
            Bug::AckAfterFailedWrite => PlantedBug::AckAfterFailedWrite,
            Bug::TruncateDamage => PlantedBug::TruncateDamagedLog,
            Bug::MergeAcrossDefinitions => PlantedBug::MergeAcrossDefinitions,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Force {
    Partition,
    OneWay,
    Hold,
    Loss,
    Latency,
    Crash,
    DiskLoss,
    Restart,
    LongPartition,
    LostAnswers,
    SecondProcess,
    ClockSkew,
    DiskFull,
    FailedFsync,
    Corruption,
    MismatchedDefinition,
    UnreservedIndex,
    EdgeCrash,
    EdgeCutOff,
    SlowNode,
}

impl From<Force> for FaultKind {
    fn from(force: Force) -> Self {
        match force {
            Force::Partition => FaultKind::Partition,
            Force::OneWay => FaultKind::OneWayPartition,
            Force::Hold => FaultKind::Hold,
            Force::Loss => FaultKind::PacketLoss,
            Force::Latency => FaultKind::LatencySpike,
            Force::Crash => FaultKind::Crash,
            Force::DiskLoss => FaultKind::DiskLoss,
            Force::Restart => FaultKind::Restart,
            Force::LongPartition => FaultKind::LongPartition,
            Force::LostAnswers => FaultKind::LostAnswers,
            Force::SecondProcess => FaultKind::SecondProcess,
            Force::ClockSkew => FaultKind::ClockSkew,
            Force::DiskFull => FaultKind::DiskFull,
            Force::FailedFsync => FaultKind::FailedFsync,
            Force::Corruption => FaultKind::DiskCorruption,
            Force::MismatchedDefinition => FaultKind::MismatchedDefinition,
            Force::UnreservedIndex => FaultKind::UnreservedIndex,
            Force::EdgeCrash => FaultKind::EdgeCrash,
            Force::EdgeCutOff => FaultKind::EdgeCutOff,
            Force::SlowNode => FaultKind::SlowNode,
        }
    }
}

fn parse_scale(text: &str) -> Result<f64, String> {
    let scale: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if scale > 0.0 && scale <= 10.0 {
        Ok(scale)
    } else {
        Err("must be above 0 and at most 10".to_owned())
    }
}

fn main() -> ExitCode {
    // The simulated nodes hold tens of millions of IDs: huge pages make it markedly faster
    // (BENCHMARKS.md). May replace this process with itself; results are the same either way.
    tally_node::huge_pages::reexec_with_huge_pages();
    let args = Args::parse();
    if args.scenario == Scenario::Replicas && args.chart.is_some() {
        eprintln!("--chart draws the superbowl scenario's regions; the replicas scenario has none");
        return ExitCode::FAILURE;
    }
    match args.scenario {
        Scenario::Replicas => replicas(&args),
        Scenario::Superbowl => superbowl(&args),
    }
}

fn cluster_config(args: &Args, seed: u64) -> ClusterConfig {
    let mut config = ClusterConfig::superbowl(seed, args.scale);
    if let Some(votes) = args.votes {
        config.votes = votes.max(1);
    }
    config.regions = usize::from(args.regions);
    config.planted_bug = args.plant.map(PlantedBug::from);
    config.force_faults = args.force.iter().map(|&f| FaultKind::from(f)).collect();
    config.record_chart = args.chart.is_some();
    config.force_replicated_acks = args.replicated_acks;
    config
}

fn superbowl(args: &Args) -> ExitCode {
    if let Some(seed) = args.seed {
        // A full run takes a minute: refuse a chart path that cannot be written before it.
        if let Some(dir) = args.chart.as_deref().and_then(|path| path.parent()) {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                eprintln!(
                    "cannot write the chart into {}: no such directory",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
        }
        let config = cluster_config(args, seed);
        println!(
            "seed {seed}: {} votes over {} regions (replay: {})",
            config.votes,
            config.regions,
            cluster::replay_command(&config)
        );
        let bar = if args.no_progress {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(config.votes);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} votes invoked, {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        };
        let outcome = cluster::run_cluster_with(&config, &mut |p| {
            bar.set_position(p.invoked);
            bar.set_message(format!(
                "{:.1} simulated s{}",
                p.simulated_ms as f64 / 1000.0,
                if p.checking { ", healed: checking" } else { "" }
            ));
        });
        bar.finish_and_clear();
        return match outcome {
            Ok(report) => {
                print_one(&report);
                if let (Some(path), Some(samples)) = (&args.chart, &report.chart) {
                    let title = format!(
                        "tally-sim seed {seed}: green share shown by each region ({} votes)",
                        config.votes
                    );
                    match std::fs::write(path, cluster::chart::svg(samples, &title)) {
                        Ok(()) => println!("chart: {}", path.display()),
                        Err(e) => {
                            eprintln!("cannot write {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                    }
                }
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("FAILED {failure}");
                ExitCode::FAILURE
            }
        };
    }
    run_range(args)
}

/// What one seed of a range came to.
type SeedOutcome = (u64, Result<ClusterReport, cluster::ClusterFailure>);

/// Runs seeds `--first..--first + --seeds` on `--jobs` threads (each seed is its own
/// deterministic simulation, so the threads change nothing but the wall time), prints each
/// seed's line as it ends and the tables at the end. Without `--keep-going` the first failure
/// stops the range (the seeds already running finish); with it, every failure is listed.
fn run_range(args: &Args) -> ExitCode {
    let first = cluster_config(args, args.first);
    println!(
        "running seeds {}..{} of the superbowl scenario: {} votes over {} regions each, on {} \
         thread(s)",
        args.first,
        args.first + args.seeds,
        first.votes,
        first.regions,
        args.jobs
    );
    let bar = if args.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(args.seeds);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {per_sec}, eta {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    };
    let started = Instant::now();
    let next_seed = AtomicU64::new(args.first);
    let stop = AtomicBool::new(false);
    let end = args.first + args.seeds;
    let (outcomes, received) = std::sync::mpsc::channel::<SeedOutcome>();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..args.jobs {
            let outcomes = outcomes.clone();
            let (next_seed, stop) = (&next_seed, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let outcome = cluster::run_cluster(&cluster_config(args, seed));
                    if outcomes.send((seed, outcome)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(outcomes);
        for (seed, outcome) in received {
            match outcome {
                Ok(report) => {
                    let kinds: Vec<&str> = report.fault_kinds().iter().map(|k| k.name()).collect();
                    let line = format!(
                        "seed {seed}: ok, trace hash {:016x} ({})",
                        report.trace_hash,
                        kinds.join(", ")
                    );
                    say(&bar, line);
                    reports.push(report);
                }
                Err(failure) => {
                    say(&bar, format!("FAILED {failure}"));
                    failures.push(failure);
                    if !args.keep_going {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            bar.set_message(format!("{} failed", failures.len()));
            bar.inc(1);
        }
    });
    bar.finish_and_clear();
    reports.sort_by_key(|r| r.seed);
    failures.sort_by_key(|f| f.seed);
    if !reports.is_empty() {
        print_table(&reports);
    }
    let wall = started.elapsed().as_secs_f64();
    if failures.is_empty() {
        println!(
            "all {} seeds passed every check in {wall:.1} s",
            reports.len()
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{} of {} seeds run FAILED ({wall:.1} s); replay each with:",
        failures.len(),
        failures.len() + reports.len()
    );
    for failure in &failures {
        eprintln!(
            "  seed {}: {}\n    {}",
            failure.seed, failure.what, failure.replay
        );
    }
    ExitCode::FAILURE
}

/// Prints a line above the progress bar, or on stdout when the bar is hidden (`--no-progress`,
/// or stderr is not a terminal: indicatif then draws nothing, lines included).
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

fn print_one(report: &ClusterReport) {
    let c = &report.checked;
    println!("faults:");
    for fault in &report.faults {
        println!(
            "  {:<26} regions {:?}/{:?} at {} ms for {} ms",
            fault.kind.name(),
            fault.a,
            fault.b,
            fault.at_ms,
            fault.for_ms
        );
        if fault.room_bytes > 0 {
            println!("    leaving {} bytes of room", fault.room_bytes);
        }
    }
    println!(
        "single calls {:?}\nbatch calls  {:?}\ncross-region retries {}",
        report.single_calls, report.batch_calls, report.cross_region_retries
    );
    if report.disk_holds > 0 || report.log_failure_exits > 0 {
        println!(
            "disk: {} refusal spell(s) below the reserve, {} exit(s) on a failed log",
            report.disk_holds, report.log_failure_exits
        );
    }
    for (region, file, bytes) in &report.corruptions {
        println!(
            "disk damage: region #{region}, {file} bytes {}..{}",
            bytes.start, bytes.end
        );
    }
    println!(
        "checks passed: tallies agreed {} ms after healing, records {} ms (again {} ms \
         after the probe); \
         {} invoked, {} acknowledged, {} held before the probe, {} lost with a lost disk, \
         {} with a log frame destroyed by disk damage; {} receipts name distinct seqs; \
         {} reads within bounds; {} votes under their option on every region; final totals {:?}",
        c.converge_ms,
        c.records_ms,
        c.reconverge_ms,
        c.invoked,
        c.acknowledged,
        c.held,
        c.lost_with_disk,
        c.lost_with_damage,
        c.receipts,
        c.reads,
        c.options_checked,
        c.totals
    );
    println!(
        "simulated {:.1} s in {:.2} s wall ({:.0} simulated votes per wall second); healed at \
         {:.1} simulated s after {:.2} s wall, converged and checked in the {:.2} s wall after",
        report.simulated.as_secs_f64(),
        report.wall.as_secs_f64(),
        c.invoked as f64 / report.wall.as_secs_f64(),
        report.healed_at.0.as_secs_f64(),
        report.healed_at.1.as_secs_f64(),
        report.wall.saturating_sub(report.healed_at.1).as_secs_f64()
    );
    println!(
        "seed {}: ok, trace hash {:016x}",
        report.seed, report.trace_hash
    );
}

fn print_table(reports: &[ClusterReport]) {
    let mut faults: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for report in reports {
        for kind in report.fault_kinds() {
            *faults.entry(kind).or_default() += 1;
        }
    }
    println!("{:<28} {:>6}", "fault exercised", "seeds");
    for kind in FaultKind::ALL {
        println!("{:<28} {:>6}", kind.name(), faults.get(&kind).unwrap_or(&0));
    }
    let sum = |f: fn(&ClusterReport) -> u64| reports.iter().map(f).sum::<u64>();
    let seeds = reports.len();
    println!();
    println!("{:<44} {:>8}", "check (every seed)", "passed");
    for check in [
        "tallies agreed in time (60 s + 5 ms/1k votes)",
        "records agreed within 600 simulated s",
        "no acknowledged vote lost",
        "no phantom votes",
        "fast path == exact (total == IDs held)",
        "exactly once after the probe, per option",
        "every vote under its option, every region",
        "no vote stamped outside the clock bound",
        "no healthy node held for another's clock",
        "the poll window no clock moved",
        "no seq twice, no actor counted twice",
        "reads during the chaos within bounds",
    ] {
        println!("{check:<44} {seeds:>8}");
    }
    println!();
    println!(
        "votes invoked {}, acknowledged {}, lost with a lost disk (allowed, `local` acks) {}, \
         lost with a log frame destroyed by disk damage (allowed: no copy left) {}",
        sum(|r| r.checked.invoked),
        sum(|r| r.checked.acknowledged),
        sum(|r| r.checked.lost_with_disk),
        sum(|r| r.checked.lost_with_damage)
    );
    println!(
        "calls with no answer (unknown) {}, cross-region retries {}, reads checked {}",
        sum(|r| r.single_calls.unknown + r.batch_calls.unknown),
        sum(|r| r.cross_region_retries),
        sum(|r| r.checked.reads)
    );
    println!(
        "vote stamps checked against true time {}, refusals for a clock hold {}",
        sum(|r| r.checked.stamps),
        sum(|r| r.checked.clock_refusals)
    );
    let slowest = |f: fn(&ClusterReport) -> u64| reports.iter().map(f).max().unwrap_or(0);
    println!(
        "slowest after healing: tallies agreed in {} simulated ms, records in {}",
        slowest(|r| r.checked.converge_ms),
        slowest(|r| r.checked.records_ms)
    );
}

fn replicas(args: &Args) -> ExitCode {
    if let Some(seed) = args.seed {
        return match tally_sim::run(&tally_sim::SimConfig::new(seed)) {
            Ok(report) => {
                println!("{report:#?}");
                println!("seed {seed}: ok, trace hash {:016x}", report.trace_hash);
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("FAILED {failure}");
                ExitCode::FAILURE
            }
        };
    }
    println!("running seeds {}..{}", args.first, args.first + args.seeds);
    match tally_sim::run_seeds(args.first, args.seeds) {
        Ok(reports) => {
            for (what, count) in tally_sim::summarize(&reports) {
                println!("{what:>28}: {count}");
            }
            println!("all {} seeds passed every check", reports.len());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("FAILED {failure}");
            ExitCode::FAILURE
        }
    }
}
