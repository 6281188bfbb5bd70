//! `cargo run -p tally-sim -- --seeds N`: runs N seeds of the replica simulation and prints a
//! summary; a failing seed prints the command that replays it. `SIM_SEED=N` (or `--seed N`)
//! replays one seed and prints its trace hash.

use std::process::ExitCode;

use clap::Parser;

/// Deterministic simulation of Tally replicas under network faults.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Run this many seeds, starting at --first.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replay exactly this seed (also read from SIM_SEED).
    #[arg(long, env = "SIM_SEED")]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
