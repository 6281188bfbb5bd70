//! The dedupe index's growth pauses, and what reserving it up front saves
//! (`Replica::reserve_vote_ids`, a poll's `expected_votes` in the node's config).
//!
//! Fills a replica with N new vote IDs through the node's path (accept, hand out for logging,
//! mark durable every 4,096 votes, as group commit does) twice, alternating: once letting the
//! index grow as it fills, once reserved for N first. Each group of 4,096 votes is timed: the
//! index grows a bounded step per insert (core/src/position_index.rs), so no group should wait
//! for more than its own steps. Reports, round by round: the time the reservation took (before
//! the fill), the fill's wall and CPU time (the CPU time is steadier on a shared machine),
//! the fill rate, the longest groups (wall, and by the CPU time of this thread, which leaves
//! out time the thread waited for a core) and the group p50 of each way; then, if the
//! fill ended mid-growth, the time an idle engine takes to finish it on its results ticks
//! (`INDEX_GROWTH_STEPS_PER_TICK`, up to 128 steps every 100 ms, each tick's steps stopped
//! after 2 ms: `INDEX_GROWTH_TICK_BUDGET`) and the longest tick.
//!
//! With `TALLY_GROWTH_HELPER=1` (the default; `0` for none), the fill runs as the node's engine
//! does: a [`tally_core::MemoryHelper`] prepares the index's next tables and spare record
//! chunks on threads of its own, tended before every group (the engine tends it on every
//! wake-up), and frees the tables growth moved out of. The row then gives, beside the filling
//! thread's CPU time, the CPU time of every other thread of the process over the fill (the
//! helper's, from `/proc/self/stat`, 10 ms ticks).
//!
//! Diagnostics (BENCHMARKS.md, "What a slow group of votes runs"): `TALLY_GROWTH_SLOW_MS=15`
//! prints, for each group slower than 15 ms (wall or CPU), what the index's growth did in it
//! (`IndexGrowthEvents`, split between the helper's hand-over and the accepts), the page faults
//! of this thread and of the others, the CPU time the hypervisor reported stolen, and the
//! growth's progress; `TALLY_GROWTH_GROUP_LOG=<path>` writes one line per group to
//! `<path>.<way>.<round>` (IDs before it, wall ms, CPU ms, this thread's page faults, the other
//! threads', growth steps, moves).
//!
//! Run: `cargo bench -p tally-core --bench index_growth` (30M IDs, 2 rounds), or
//! `TALLY_GROWTH_IDS=10000000 TALLY_GROWTH_ROUNDS=3 cargo bench -p tally-core --bench index_growth`;
//! with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` in front to run on huge pages, as the node does.

mod common;

use std::time::{Duration, Instant};

use common::{GROUP_COMMIT_VOTES, accept_range, new_replica, poll_id};

/// Growth steps the node's engine runs per results tick (`node/src/engine.rs`,
/// `INDEX_GROWTH_STEPS_PER_TICK`), to finish a growth the fill left under way.
const STEPS_PER_TICK: usize = 128;

/// The engine's time budget per growth tick (`INDEX_GROWTH_TICK_BUDGET`): it takes no
/// further step once this much time has passed.
const TICK_BUDGET: Duration = Duration::from_millis(2);

/// The engine's default results tick (`results_tick_ms`): the finish time counts one tick
/// per batch of steps, as an idle engine would wait.
const TICK: Duration = Duration::from_millis(100);

const DEFAULT_IDS: u64 = 30_000_000;
const DEFAULT_ROUNDS: u64 = 2;

/// CPU time this thread has run, in seconds (`/proc/thread-self/schedstat`, nanoseconds):
/// on a machine shared with other work, the fill's CPU time is steadier than its wall time.
fn thread_cpu_seconds() -> f64 {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanoseconds: u64 = schedstat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    nanoseconds as f64 / 1e9
}

/// CPU time of the whole process so far, in seconds: utime + stime of `/proc/self/stat`, in
/// the kernel's clock ticks (100 a second here), threads that ended included.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let after_name = stat.rsplit(") ").next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15: the 12th and 13th after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Minor page faults so far of the task whose `stat` file is `path` (field 10).
fn minor_faults(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after_name = stat.rsplit(") ").next().unwrap_or_default();
    // Field 10 is the 8th after the name (which ends field 2).
    after_name
        .split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// Minor page faults of this thread so far.
fn thread_minor_faults() -> u64 {
    minor_faults("/proc/thread-self/stat")
}

/// The machine's stolen CPU time so far, in clock ticks (`/proc/stat`, the `steal` column):
/// time the hypervisor ran something else on this VM's CPUs.
fn steal_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .and_then(|cpu| cpu.split_whitespace().nth(8))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// Minor page faults of the whole process so far, every thread's.
fn process_minor_faults() -> u64 {
    minor_faults("/proc/self/stat")
}

/// The poll's index growth counters (a diagnostic), zero if the poll is missing.
fn growth_events(replica: &tally_core::Replica) -> tally_core::IndexGrowthEvents {
    replica
        .state(&poll_id())
        .map(tally_core::PollState::index_growth_events)
        .unwrap_or_default()
}

/// The counters that changed from `before` to `after`, as `name +n` pairs.
fn events_changed(
    before: &tally_core::IndexGrowthEvents,
    after: &tally_core::IndexGrowthEvents,
) -> String {
    let pairs = [
        ("steps", before.steps, after.steps),
        ("moved", before.moved, after.moved),
        ("switches", before.switches, after.switches),
        (
            "zeroed_at_switch_bytes",
            before.zeroed_at_switch_bytes,
            after.zeroed_at_switch_bytes,
        ),
        ("moved_at_once", before.moved_at_once, after.moved_at_once),
        ("offers_taken", before.offers_taken, after.offers_taken),
        (
            "offers_refused",
            before.offers_refused,
            after.offers_refused,
        ),
        (
            "retired_freed_in_place",
            before.retired_freed_in_place,
            after.retired_freed_in_place,
        ),
    ];
    pairs
        .iter()
        .filter(|(_, b, a)| a != b)
        .map(|(name, b, a)| format!("{name} +{}", a - b))
        .collect::<Vec<_>>()
        .join(", ")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

fn main() {
    let ids = env_number("TALLY_GROWTH_IDS", DEFAULT_IDS);
    let rounds = env_number("TALLY_GROWTH_ROUNDS", DEFAULT_ROUNDS);
    let helper = env_number("TALLY_GROWTH_HELPER", 1) == 1;
    // TALLY_GROWTH_SLOW_MS=<ms>: a diagnostic line for each group slower than that.
    let slow_ms = std::env::var("TALLY_GROWTH_SLOW_MS").ok().map(|ms| {
        ms.parse::<f64>()
            .expect("TALLY_GROWTH_SLOW_MS must be a number")
    });
    println!(
        "memory helper: {}",
        if helper {
            "on (next tables and record chunks prepared off the filling thread, as the node does)"
        } else {
            "off (TALLY_GROWTH_HELPER=0: the filling thread faults every page itself)"
        }
    );
    // `grown`, `reserved` or both (the default): one way alone, for a profiler.
    let only = std::env::var("TALLY_GROWTH_ONLY").ok();
    // The node runs its heap on huge pages (node/src/huge_pages.rs), which change these
    // figures (BENCHMARKS.md, "The fill as the node runs it"): say which this run has.
    let huge_pages = std::env::var("GLIBC_TUNABLES")
        .is_ok_and(|t| t.split(':').any(|kv| kv == "glibc.malloc.hugetlb=1"));
    println!(
        "heap pages: {}",
        if huge_pages {
            "huge (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as `tally run` has them)"
        } else {
            "4 KiB (set GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to run as `tally run` does)"
        }
    );
    println!(
        "{:>5} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>26} {:>20} {:>9} {:>9} {:>9}",
        "round",
        "index",
        "reserve s",
        "fill s",
        "CPU s",
        "others s",
        "M IDs/s",
        "longest groups (4096), ms",
        "same, CPU ms",
        "p50 ms",
        "finish s",
        "tick ms"
    );
    for round in 1..=rounds {
        for reserved in [false, true] {
            let name = if reserved { "reserved" } else { "grown" };
            if only.as_deref().is_none_or(|only| only == name) {
                fill(round, ids, reserved, helper, slow_ms);
            }
        }
    }
}

/// Fills one replica and prints its row. Timed with the wall clock, which the core bans
/// (core/clippy.toml) and a bench exists to read.
#[allow(clippy::disallowed_methods)]
fn fill(round: u64, ids: u64, reserved: bool, helper: bool, slow_ms: Option<f64>) {
    let mut helper = helper.then(|| tally_core::MemoryHelper::spawn().expect("helper threads"));
    let poll = poll_id();
    let mut replica = new_replica();
    let reserving = Instant::now();
    if reserved {
        let vote_ids = usize::try_from(ids).expect("fits in usize");
        replica
            .reserve_vote_ids(&poll, vote_ids)
            .expect("the bench poll");
    }
    let reserve_seconds = reserving.elapsed().as_secs_f64();
    let mut groups: Vec<Duration> = Vec::new();
    let mut group_cpu: Vec<f64> = Vec::new();
    let cpu_start = thread_cpu_seconds();
    let process_cpu_start = process_cpu_seconds();
    // TALLY_GROWTH_GROUP_LOG=<path>: one line per group (IDs before it, wall ms, CPU ms of
    // this thread, page faults of this thread, of the other threads, growth steps, moves),
    // to correlate slow groups with what ran in them and beside them.
    let mut group_log = std::env::var("TALLY_GROWTH_GROUP_LOG").ok().map(|path| {
        let path = format!(
            "{path}.{}.{round}",
            if reserved { "reserved" } else { "grown" }
        );
        std::io::BufWriter::new(std::fs::File::create(path).expect("group log"))
    });
    // The diagnostics' reads of /proc cost ~10 µs a group: only when asked for.
    let diagnose = slow_ms.is_some() || group_log.is_some();
    let read_if = |read: fn() -> u64| if diagnose { read() } else { 0 };
    let start = Instant::now();
    let mut from = 0;
    while from < ids {
        let to = (from + GROUP_COMMIT_VOTES).min(ids);
        let group = Instant::now();
        let group_cpu_start = thread_cpu_seconds();
        let faults_start = read_if(thread_minor_faults);
        let process_faults_start = read_if(process_minor_faults);
        let steal_start = read_if(steal_ticks);
        let events_start = growth_events(&replica);
        let growth_start = replica
            .state(&poll)
            .and_then(tally_core::PollState::index_growth);
        if let Some(helper) = &mut helper {
            tend(helper, &mut replica);
        }
        let tend_elapsed = group.elapsed();
        let events_tended = growth_events(&replica);
        accept_range(&mut replica, &poll, from..to);
        let elapsed = group.elapsed();
        let cpu = thread_cpu_seconds() - group_cpu_start;
        groups.push(elapsed);
        group_cpu.push(cpu);
        if let Some(log) = &mut group_log {
            use std::io::Write;
            let events_end = growth_events(&replica);
            let own_faults = thread_minor_faults() - faults_start;
            let all_faults = process_minor_faults() - process_faults_start;
            writeln!(
                log,
                "{from}\t{:.3}\t{:.3}\t{own_faults}\t{}\t{}\t{}",
                elapsed.as_secs_f64() * 1e3,
                cpu * 1e3,
                all_faults.saturating_sub(own_faults),
                events_end.steps - events_start.steps,
                events_end.moved - events_start.moved,
            )
            .expect("group log write");
        }
        if slow_ms.is_some_and(|slow| elapsed.as_secs_f64() * 1e3 > slow || cpu * 1e3 > slow) {
            // A diagnostic line for each slow group: what the index did in it (stderr, so
            // the rows on stdout stay one per fill).
            let events_end = growth_events(&replica);
            let growth_end = replica
                .state(&poll)
                .and_then(tally_core::PollState::index_growth);
            eprintln!(
                "slow group at {from} IDs: {:.1} ms wall, {:.1} ms CPU, tend {:.1} ms \
                 [{}], accepts [{}], {} minor faults (process {}), {} ticks stolen; \
                 growth {:?} -> {:?}",
                elapsed.as_secs_f64() * 1e3,
                cpu * 1e3,
                tend_elapsed.as_secs_f64() * 1e3,
                events_changed(&events_start, &events_tended),
                events_changed(&events_tended, &events_end),
                thread_minor_faults() - faults_start,
                process_minor_faults() - process_faults_start,
                steal_ticks() - steal_start,
                growth_start,
                growth_end,
            );
        }
        from = to;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = thread_cpu_seconds() - cpu_start;
    if diagnose {
        eprintln!("growth events over the fill: {:?}", growth_events(&replica));
    }
    let others_seconds = process_cpu_seconds() - process_cpu_start - cpu_seconds;
    let held = replica
        .state(&poll)
        .map_or(0, tally_core::PollState::distinct_vote_ids);
    assert_eq!(held as u64, ids);
    let mut longest_tick = Duration::ZERO;
    let mut ticks = 0u32;
    loop {
        let tick = Instant::now();
        if let Some(helper) = &mut helper {
            tend(helper, &mut replica);
        }
        let growing =
            replica.advance_index_growth_while(STEPS_PER_TICK, || tick.elapsed() < TICK_BUDGET);
        longest_tick = longest_tick.max(tick.elapsed());
        if !growing {
            break;
        }
        ticks += 1;
    }
    // Idle, the engine runs one batch per tick: the finish takes that many ticks.
    let finish_seconds = (TICK * ticks).as_secs_f64();
    groups.sort_unstable();
    group_cpu.sort_unstable_by(f64::total_cmp);
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let longest: Vec<String> = groups
        .iter()
        .rev()
        .take(3)
        .map(|d| format!("{:.1}", ms(d)))
        .collect();
    let longest_cpu: Vec<String> = group_cpu
        .iter()
        .rev()
        .take(3)
        .map(|s| format!("{:.1}", s * 1e3))
        .collect();
    println!(
        "{:>5} {:>9} {:>10.3} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>26} {:>20} {:>9.3} {:>9.3} {:>9.1}",
        round,
        if reserved { "reserved" } else { "grown" },
        reserve_seconds,
        seconds,
        cpu_seconds,
        others_seconds,
        ids as f64 / seconds / 1e6,
        longest.join(" / "),
        longest_cpu.join(" / "),
        ms(&groups[groups.len() / 2]),
        finish_seconds,
        ms(&longest_tick)
    );
}

/// What the node's engine does on each wake-up: hands the replica what the helper prepared,
/// gives the helper the next order, and frees the tables growth moved out of off this thread.
fn tend(helper: &mut tally_core::MemoryHelper, replica: &mut tally_core::Replica) {
    let left_over = helper.tend(replica);
    for table in left_over
        .into_iter()
        .chain(replica.take_retired_index_tables())
    {
        if let Some(table) = helper.free(table) {
            std::thread::spawn(move || drop(table));
        }
    }
}
