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
    let ids: u64 = std::env::var("IDS").map_or(10_000_000, |v| v.parse().unwrap());
    let poll = poll_id();
    let mut replica = new_replica();
    let mut from = 0;
    let start = Instant::now(); // cpu ms per group below
    let mut sums: std::collections::BTreeMap<String, (f64, u64)> = Default::default();
    let mut last = String::new();
    while from < ids {
        let to = (from + GROUP_COMMIT_VOTES).min(ids);
        let c = cpu_ns();
        accept_range(&mut replica, &poll, from..to);
        let el = (cpu_ns() - c) as f64 / 1e6;
        let g = replica.state(&poll).unwrap().index_growth();
        let key = match g {
            None => "at rest".into(),
            Some(g) if g.steps_done * 100 < g.steps * 25 => {
                format!("{:>9} preparing", g.to_capacity)
            }
            Some(g) => format!("{:>9} moving", g.to_capacity),
        };
        if key != last {
            eprintln!("{:.3} s: {key}", start.elapsed().as_secs_f64());
            last = key.clone();
        }
        if from > 5_000_000 {
            let e = sums.entry(key).or_default();
            e.0 += el;
            e.1 += 1;
        }
        from = to;
    }
    for (k, (s, n)) in sums {
        println!("{k:>20}: {n:>5} groups, mean {:.2} ms", s / n as f64);
    }
}
