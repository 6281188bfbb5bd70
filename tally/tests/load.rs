//! `tally load` against nodes started in this process (`tally_node::start`, served by axum on
//! 127.0.0.1:0): the load generator's logic end to end, and its check, on real HTTP.
//!
//! Each test runs a few thousand votes, so the whole file takes a second or two.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally::load::check::CheckMode;
use tally::load::target::Target;
use tally::load::{LoadPlan, run, run_on_own_threads};
use tally_node::config::Config;
use tally_node::storage::MemoryStorage;
use tally_node::{SystemClock, WalExecutor};
use tokio::sync::oneshot;

/// A node serving on a free loopback port until dropped.
struct LocalNode {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl LocalNode {
    async fn start(seed: u64) -> LocalNode {
        let started = tally_node::start(
            &Config::default(),
            MemoryStorage::new(),
            Arc::new(SystemClock),
            seed,
            WalExecutor::Task,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = started.router.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            drop(started);
        });
        LocalNode {
            address,
            stop: Some(stop),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn seed() -> u64 {
    let seed = std::env::var("LOAD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (LOAD_TEST_SEED={seed} replays the vote IDs)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_votes_with_retries_to_another_node_pass_the_tally_check() {
    // Goal: the check holds with retries across two independent nodes. Method: 4,000 single
    // votes, a quarter re-sent to the other node, then compare both tallies.
    let (a, b) = (LocalNode::start(1).await, LocalNode::start(2).await);
    let plan = LoadPlan {
        connections: 8,
        count: Some(4_000),
        retry_fraction: 0.25,
        retry_other_node: true,
        seed: seed(),
        ..LoadPlan::for_targets(vec![a.url(), b.url()])
    };
    let report = run(&plan).await.unwrap();
    println!("{report}");
    assert_eq!(report.check_passed, Some(true));
    assert_eq!(report.votes_sent, 4_000);
    assert!(report.votes_retried > 500, "{}", report.votes_retried);
    // Independent nodes: a retry to the other node is new there, so nothing is a duplicate.
    assert_eq!(report.outcomes.counted, 4_000);
    assert_eq!(report.checks.len(), 2);
    assert_eq!(
        report.checks.iter().map(|c| c.delta).sum::<i64>(),
        4_000,
        "each node counts what it acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_to_the_same_node_answer_duplicate_and_count_once() {
    // Goal: same-node retries are deduplicated and the check accounts for them. Method:
    // mixed JSON batches and single votes, 30% retried at the same node.
    let node = LocalNode::start(3).await;
    let plan = LoadPlan {
        connections: 4,
        count: Some(5_000),
        batch_size: 100,
        single_fraction: 0.3,
        retry_fraction: 0.3,
        seed: seed(),
        ..LoadPlan::for_targets(vec![node.url()])
    };
    // As `tally load` runs it: on a single-threaded runtime of its own.
    let report = run_on_own_threads(plan, 1).await.unwrap();
    println!("{report}");
    assert_eq!(report.check_passed, Some(true));
    assert!(report.outcomes.duplicate > 500, "{:?}", report.outcomes);
    assert_eq!(report.outcomes.duplicate, report.votes_retried);
    let check = &report.checks[0];
    assert_eq!(check.delta, report.outcomes.counted as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_batches_at_a_rate_measure_from_the_intended_send_time() {
    // Goal: the rate-limited path and postcard batches. Method: 3,000 votes at 10,000 votes/s
    // in batches of 250, twice against the same node (the second run's baseline is not zero).
    let node = LocalNode::start(4).await;
    let plan = LoadPlan {
        connections: 2,
        count: Some(3_000),
        rate: Some(10_000.0),
        batch_size: 250,
        binary: true,
        retry_fraction: 0.1,
        seed: seed(),
        ..LoadPlan::for_targets(vec![node.url()])
    };
    for run_index in 0..2 {
        let plan = LoadPlan {
            seed: plan.seed.wrapping_add(run_index),
            ..plan.clone()
        };
        let unix_now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let launched = unix_now();
        let report = run(&plan).await.unwrap();
        let returned = unix_now();
        println!("{report}");
        assert_eq!(report.check_passed, Some(true));
        assert_eq!(report.latency_from, "intended_send_time");
        // The run's start on the wall clock lies within the call, and the run ends in it too
        // (the baseline's read before it, the check after it).
        assert!(
            launched <= report.started_unix_s
                && report.started_unix_s + report.elapsed_s <= returned,
            "started {} ran {} s, called at {launched} returned at {returned}",
            report.started_unix_s,
            report.elapsed_s
        );
        assert!(
            report.elapsed_s >= 0.25,
            "paced, not flat out: {}",
            report.elapsed_s
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_votes_the_client_did_not_send_fails_the_check() {
    // Goal: the check can fail. Method: once the checked run's votes show in the node's
    // total, a second, unchecked load votes in the same poll, so the node grows by more than
    // it acknowledged to the checked run.
    let node = LocalNode::start(5).await;
    let plan = LoadPlan {
        connections: 2,
        count: Some(4_000),
        rate: Some(4_000.0),
        seed: seed(),
        ..LoadPlan::for_targets(vec![node.url()])
    };
    let intruder = LoadPlan {
        check: CheckMode::Off,
        count: Some(500),
        rate: None,
        seed: plan.seed.wrapping_add(1),
        ..plan.clone()
    };
    let target = Target::resolve(&node.url()).await.unwrap();
    let (checked, _) = tokio::join!(run(&plan), async {
        while target.poll_results("superbowl").await.unwrap().total < 100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run(&intruder).await.unwrap()
    });
    let report = checked.unwrap();
    println!("{report}");
    assert_eq!(report.check_passed, Some(false));
    assert_eq!(report.checks[0].delta, 4_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_right_after_other_votes_takes_its_baseline_once_the_total_settles() {
    // Goal: votes acknowledged just before a run (a warm-up) are not blamed on it. Method: an
    // unchecked warm-up, then at once a checked run against the same node.
    let node = LocalNode::start(6).await;
    let warm_up = LoadPlan {
        check: CheckMode::Off,
        count: Some(3_000),
        seed: seed(),
        ..LoadPlan::for_targets(vec![node.url()])
    };
    run(&warm_up).await.unwrap();
    let plan = LoadPlan {
        check: CheckMode::Independent,
        seed: warm_up.seed.wrapping_add(1),
        count: Some(1_000),
        ..warm_up.clone()
    };
    let report = run(&plan).await.unwrap();
    println!("{report}");
    assert_eq!(report.check_passed, Some(true));
    assert_eq!(report.checks[0].total_before, 3_000);
}
