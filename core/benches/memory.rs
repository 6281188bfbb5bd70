//! Resident bytes per held vote ID (issue 2): fills a replica with N random vote IDs through
//! the node's own path (accept, hand out for logging, mark durable every 4,096 votes) and
//! reports the cost two ways: (a) the growth of the process's resident set (VmRSS in
//! /proc/self/status) across the fill, and (b) `PollState::heap_bytes()` / N, the heap the
//! record store and its index have reserved. Both are taken *at rest*: if the fill ends while
//! the index is growing (it grows a step per insert, holding its old and new table until
//! every ID has moved), the growth is finished first, as the node's engine finishes it on its
//! ticks, and the old tables are freed, as the engine frees them; the resident set at the end
//! of the fill is reported beside it. The peak (VmHWM) is
//! reported too: while the index grows it holds the old and the new table.
//!
//! Each N runs in a fresh child process (this same binary, re-executed), so one size's freed
//! memory cannot hide in the next one's figures.
//!
//! Run: `cargo bench -p tally-core --bench memory` (10M IDs), or list the sizes:
//! `cargo bench -p tally-core --bench memory -- 1000000 10000000 30000000`, or set
//! `TALLY_MEMORY_IDS=1000000,10000000,30000000`.
//!
//! Targets: ≤ 32 bytes per ID at 10M (stretch ≤ 24); 30M IDs in under 1 GB. For comparison, a
//! Redis SET measured on this machine holds ~77 bytes per member.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{accept_range, new_replica, poll_id};

/// Set in a child: the one size it measures.
const CHILD_ENV: &str = "TALLY_MEMORY_CHILD_IDS";

/// Set by the caller: the sizes to measure, comma-separated.
const IDS_ENV: &str = "TALLY_MEMORY_IDS";

const DEFAULT_IDS: u64 = 10_000_000;

/// Bytes per member of a Redis SET on this machine (shared/DESIGN.md §7: 183 MB, 2.37M members).
const REDIS_SET_BYTES_PER_MEMBER: f64 = 77.0;

const TARGET_BYTES_PER_ID: f64 = 32.0;
const STRETCH_BYTES_PER_ID: f64 = 24.0;
const BUDGET_30M_BYTES: u64 = 1_000_000_000;

fn main() {
    if let Ok(ids) = std::env::var(CHILD_ENV) {
        let ids = ids.parse().expect("child size is a number");
        measure(ids);
        return;
    }
    let sizes = sizes();
    println!(
        "{:>12} {:>10} {:>22} {:>10} {:>12} {:>10} {:>10} {:>14} {:>10} {:>12}",
        "vote IDs",
        "RSS MB",
        "end of fill MB",
        "RSS B/ID",
        "heap B/ID",
        "peak MB",
        "peak B/ID",
        "fill M IDs/s",
        "Redis/ours",
        "target 32"
    );
    for ids in sizes {
        let exe = std::env::current_exe().expect("path of this bench");
        let status = Command::new(exe)
            .env(CHILD_ENV, ids.to_string())
            .status()
            .expect("child bench runs");
        assert!(status.success(), "child bench for {ids} IDs failed");
    }
    println!(
        "RSS = growth of VmRSS across the fill, at rest (any growth of the index finished); \
         end of fill = the same before finishing it; heap = PollState::heap_bytes() (reserved \
         capacity); peak = growth of VmHWM (the high-water mark, met while the index grows)."
    );
    println!(
        "Targets: <= {TARGET_BYTES_PER_ID} B/ID at 10M (stretch <= {STRETCH_BYTES_PER_ID}); 30M IDs \
         under {BUDGET_30M_BYTES} bytes. Redis SET: ~{REDIS_SET_BYTES_PER_MEMBER} B/member."
    );
}

/// The sizes to measure: numbers in argv (cargo adds `--bench`, which is skipped), else
/// [`IDS_ENV`], else [`DEFAULT_IDS`].
fn sizes() -> Vec<u64> {
    let parse = |s: &str| -> Option<u64> { s.replace('_', "").parse().ok() };
    let from_args: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| parse(&a))
        .collect();
    if !from_args.is_empty() {
        return from_args;
    }
    if let Ok(list) = std::env::var(IDS_ENV) {
        let from_env: Vec<u64> = list.split(',').filter_map(|s| parse(s.trim())).collect();
        if !from_env.is_empty() {
            return from_env;
        }
    }
    vec![DEFAULT_IDS]
}

/// A field of /proc/self/status, in bytes (the file reports kB).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number in {line:?}"));
    kb * 1024
}

/// Fills one replica with `ids` IDs and prints its row. The fill is timed with the wall clock,
/// which the core bans (core/clippy.toml) and a bench exists to read.
#[allow(clippy::disallowed_methods)]
fn measure(ids: u64) {
    let poll = poll_id();
    let mut replica = new_replica();
    let rss_before = status_bytes("VmRSS:");
    let peak_before = status_bytes("VmHWM:");
    let start = Instant::now();
    let counted = accept_range(&mut replica, &poll, 0..ids);
    let fill_seconds = start.elapsed().as_secs_f64();
    let rss_filled = status_bytes("VmRSS:");
    let growth = replica.state(&poll).and_then(|s| s.index_growth());
    replica.advance_index_growth(usize::MAX);
    // The tables growth moved out of are freed, as the node's engine frees them (on a thread
    // of their own); kept, the last one would count here though no node holds it.
    drop(replica.take_retired_index_tables());
    let rss_after = status_bytes("VmRSS:");
    let peak_after = status_bytes("VmHWM:");
    let state = replica.state(&poll).expect("the bench poll");
    assert_eq!(counted, ids);
    assert_eq!(state.distinct_vote_ids() as u64, ids);
    let rss = rss_after.saturating_sub(rss_before);
    let peak = peak_after.saturating_sub(peak_before);
    let per_id = |bytes: u64| bytes as f64 / ids as f64;
    let target = if per_id(rss) <= STRETCH_BYTES_PER_ID {
        "stretch"
    } else if per_id(rss) <= TARGET_BYTES_PER_ID {
        "pass"
    } else {
        "FAIL"
    };
    let end_of_fill = match growth {
        Some(growth) => format!(
            "{:.1} ({:.0}% grown)",
            rss_filled.saturating_sub(rss_before) as f64 / 1e6,
            growth.progress() * 100.0
        ),
        None => "at rest".to_owned(),
    };
    println!(
        "{:>12} {:>10.1} {:>22} {:>10.2} {:>12.2} {:>10.1} {:>10.2} {:>14.2} {:>9.2}x {:>12}",
        ids,
        rss as f64 / 1e6,
        end_of_fill,
        per_id(rss),
        per_id(state.heap_bytes() as u64),
        peak as f64 / 1e6,
        per_id(peak),
        ids as f64 / fill_seconds / 1e6,
        REDIS_SET_BYTES_PER_MEMBER / per_id(rss),
        target
    );
}
