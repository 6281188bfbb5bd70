//! Measures how long a node holding N votes takes to become ready after a restart.
//!
//! Loads N votes (default 10,000,000) into a node on a temporary data directory through the
//! real router (compact batches of 10,000, durable), stops it cleanly, then times `start()` —
//! log recovery into the replica — on the same directory, three times, and prints the median.
//!
//! `cargo run --release -p tally-node --example restart_time -- [VOTES]`

// A benchmark program: it times itself on the real clock (node/clippy.toml bans that in the
// library, whose time the caller passes in).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use tally_node::config::Config;
use tally_node::http::{BinaryBatch, BinaryVote, POSTCARD_MEDIA_TYPE};
use tally_node::storage::DirStorage;
use tally_node::{SystemClock, WalExecutor};
use tower::ServiceExt;

const BATCH_VOTES: usize = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let votes: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    runtime.block_on(load(&config, votes))?;
    let log_bytes: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("loaded {votes} votes; data directory holds {log_bytes} bytes");
    let mut timings = Vec::new();
    for _ in 0..3 {
        let started_at = Instant::now();
        let started = runtime.block_on(async {
            tally_node::start(
                &config,
                DirStorage::open(dir.path())?,
                Arc::new(SystemClock),
                7,
                WalExecutor::DedicatedThread,
            )
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
        })?;
        let elapsed = started_at.elapsed();
        let held = runtime.block_on(async {
            let results = started.handle.results.borrow().clone();
            results.polls.values().map(|p| p.results.total).sum::<i64>()
        });
        println!(
            "ready in {:.3} s holding {held} votes",
            elapsed.as_secs_f64()
        );
        timings.push(elapsed.as_secs_f64());
        runtime.block_on(started.stop())?;
    }
    timings.sort_by(f64::total_cmp);
    println!(
        "median restart-to-ready: {:.3} s for {votes} votes",
        timings[1]
    );
    Ok(())
}

async fn load(config: &Config, votes: usize) -> Result<(), Box<dyn std::error::Error>> {
    let started = tally_node::start(
        config,
        DirStorage::open(&config.data_dir)?,
        Arc::new(SystemClock),
        7,
        WalExecutor::DedicatedThread,
    )?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let loading = Instant::now();
    for batch_start in (0..votes).step_by(BATCH_VOTES) {
        let count = BATCH_VOTES.min(votes - batch_start);
        let batch = BinaryBatch {
            votes: (0..count)
                .map(|i| {
                    let id = (u128::from(next()) << 64) | u128::from(next());
                    BinaryVote {
                        option: (i % 2) as u8,
                        vote_id: id.to_be_bytes(),
                    }
                })
                .collect(),
        };
        let request = Request::post("/v1/polls/superbowl/votes/batch")
            .header("content-type", POSTCARD_MEDIA_TYPE)
            .body(Body::from(postcard::to_allocvec(&batch)?))?;
        let response = started.router.clone().oneshot(request).await?;
        if !response.status().is_success() {
            return Err(format!("batch refused: {}", response.status()).into());
        }
    }
    println!(
        "loaded {votes} votes in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    started.stop().await?;
    Ok(())
}
