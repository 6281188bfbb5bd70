#![allow(missing_docs, clippy::disallowed_methods, clippy::unwrap_used)]
#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::{GROUP_COMMIT_VOTES, accept_range, new_replica, poll_id};
use std::time::Instant;
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
fn main() {
    // fill until the index is moving with at least 2^20 groups old, then time idle advance
    let poll = poll_id();
    let mut replica = new_replica();
    let mut from = 0;
    loop {
        accept_range(&mut replica, &poll, from..from + GROUP_COMMIT_VOTES);
        from += GROUP_COMMIT_VOTES;
        if let Some(g) = replica.state(&poll).unwrap().index_growth() {
            if g.from_capacity >= 6_000_000 && g.steps_done * 10 > g.steps * 3 {
                break;
            }
        }
    }
    println!(
        "{:?} at {from}",
        replica.state(&poll).unwrap().index_growth()
    );
    let c = cpu_ns();
    let t = Instant::now();
    let mut steps = 0;
    while replica.advance_index_growth(1) {
        steps += 1;
    }
    let cpu = (cpu_ns() - c) as f64;
    println!(
        "idle: {steps} steps, {:.1} ms CPU ({:.1} ms wall), {:.0} ns per step",
        cpu / 1e6,
        t.elapsed().as_secs_f64() * 1e3,
        cpu / steps as f64
    );
}
