//! `tally load`: drives one or more nodes over HTTP/1.1 keep-alive with votes, measures
//! throughput and latency, and checks that each node's tally holds exactly the votes it
//! acknowledged.
//!
//! Everything is bounded: the run stops after `--count` votes or `--duration` (a default count
//! when neither is given), connections, targets, batch sizes, rates and the retry pools have
//! named limits, and only the URLs given are contacted. The library entry point is [`run`]
//! (tests call it against in-process nodes); [`main`] is the CLI around it: it parses the
//! flags, shows a progress bar, prints the report, writes `--json-report`, and fails when the
//! check fails. The check is defined in [`check`].

pub mod check;
pub mod report;
pub mod target;
mod worker;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;

use self::check::{CheckMode, TargetCheck, VoteRecord};
use self::report::{LoadReport, Outcomes, Percentiles};
use self::target::Target;
use self::worker::{Shared, Worker, WorkerReport};
use self::workload::{Encoding, RetryPools};
use tally_node::config::BATCH_VOTES_MAX;

/// Most client threads.
pub const THREADS_MAX: usize = 16;
/// Most connections one run may open.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Most nodes one run may drive.
pub const TARGETS_MAX: usize = 64;
/// Most votes one run may send.
pub const VOTES_MAX: u64 = 1_000_000_000;
/// Votes sent when neither `--count` nor `--duration` is given.
pub const VOTES_DEFAULT: u64 = 100_000;
/// Longest run.
pub const DURATION_MS_MAX: u64 = 3_600_000;
/// Highest `--rate`, in votes per second.
pub const RATE_VOTES_PER_S_MAX: f64 = 100_000_000.0;
/// Longest per-request timeout.
pub const TIMEOUT_MS_MAX: u64 = 60_000;
/// After the run, a node's total counts as settled once unchanged for this long (several
/// results ticks at the node's default of 100 ms).
pub const SETTLE_QUIET_MS: u64 = 500;
/// Longest wait for a node's total to settle and reach the expected range.
pub const SETTLE_TIMEOUT_MS: u64 = 10_000;
/// How often the total is read while settling, and the progress bar redrawn.
pub const POLL_INTERVAL_MS: u64 = 100;

const _: () = assert!(SETTLE_QUIET_MS < SETTLE_TIMEOUT_MS);
const _: () = assert!(TARGETS_MAX <= CONNECTIONS_MAX && TARGETS_MAX <= u16::MAX as usize);

/// Flags of `tally load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// A node's base URL, `http://HOST:PORT`; repeat for several nodes (connections are
    /// spread over them round-robin). Only these addresses are contacted.
    #[arg(long = "target", value_name = "URL", required = true)]
    pub targets: Vec<String>,
    /// Read the check's totals from these nodes instead of from the targets (the targets are
    /// edges, `tally edge`, which serve no results); repeat for several; needs `--check
    /// cluster` (every node must hold every vote acknowledged through any edge).
    #[arg(long = "results-from", value_name = "URL")]
    pub results_from: Vec<String>,
    /// The poll to vote in.
    #[arg(long, default_value = "superbowl")]
    pub poll: String,
    /// Options to vote for, comma-separated [default: all the poll's options, read from the
    /// first node; `green,blue` with `--check off`].
    #[arg(long, value_delimiter = ',')]
    pub options: Vec<String>,
    /// Keep-alive HTTP/1.1 connections (at most 1024); each sends one request at a time.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Aim at this many votes per second (open loop: latency is measured from each request's
    /// intended send time, so stalls are not hidden). Without it: flat out.
    #[arg(long, value_name = "VOTES_PER_S")]
    pub rate: Option<f64>,
    /// Votes to send, retries included [default: 100000 unless --duration is given]. With
    /// --duration too, whichever ends first.
    #[arg(long)]
    pub count: Option<u64>,
    /// How long to send, e.g. `10s`, `500ms`, `2m` (at most 1 h).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Votes per request: 1 uses `POST …/votes`, more uses `POST …/votes/batch` (at most
    /// 10000).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// With --batch-size > 1: the share of requests (0–1) sent as single votes instead.
    #[arg(long, default_value_t = 0.0)]
    pub single_fraction: f64,
    /// Send batches as postcard (`application/x-postcard`) instead of JSON, and ask for
    /// postcard answers (a byte per vote's status).
    #[arg(long)]
    pub binary: bool,
    /// The share of votes (0–1, below 1) that re-send an earlier vote's ID and option, as a
    /// client retrying after a lost answer would; each ID is retried at most once.
    #[arg(long, default_value_t = 0.0)]
    pub retry_fraction: f64,
    /// Send each retry to the next target instead of the node that had the vote.
    #[arg(long)]
    pub retry_other_node: bool,
    /// The end-of-run check: `independent` nodes must each show exactly the distinct vote
    /// IDs they acknowledged; a replicating `cluster` must show on every node the distinct
    /// vote IDs any node acknowledged; `off` for servers that do not count.
    #[arg(long, value_enum, default_value = "independent")]
    pub check: CheckMode,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json_report: Option<PathBuf>,
    /// Per-request timeout in milliseconds (an unanswered vote's outcome is unknown).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Seed for vote IDs and choices (printed in the report; the same seed draws the same
    /// IDs per connection, so replay it against fresh nodes only: IDs a node already holds
    /// answer `duplicate` without growing its total, and fail the check) [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Client threads (at most 16). One, like `wrk -t1`, leaves the most CPU to a node on the
    /// same machine: a single-threaded runtime has no cross-thread wake-ups.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Why a run could not be done (a failed check is not an error: see the report).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A target URL is unusable.
    #[error("bad target {0}: {1}")]
    BadTarget(String, String),
    /// A node did not answer the check's read.
    #[error("node {0} is unreachable or refused the results read: {1}")]
    Unreachable(String, String),
    /// The JSON report could not be written.
    #[error("cannot write the JSON report: {0}")]
    Report(String),
}

/// A validated run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// Node base URLs.
    pub targets: Vec<String>,
    /// Nodes whose totals the check reads instead of the targets' (empty: the targets).
    pub results_from: Vec<String>,
    /// The poll.
    pub poll: String,
    /// Options to vote for; empty: all of the poll's.
    pub options: Vec<String>,
    /// Connections.
    pub connections: usize,
    /// Votes per second, or flat out.
    pub rate: Option<f64>,
    /// Votes to send.
    pub count: Option<u64>,
    /// How long to send.
    pub duration: Option<Duration>,
    /// Votes per request.
    pub batch_size: usize,
    /// With batches, the share of single-vote requests.
    pub single_fraction: f64,
    /// Postcard batches.
    pub binary: bool,
    /// The share of votes that are retries.
    pub retry_fraction: f64,
    /// Retries go to the next node.
    pub retry_other_node: bool,
    /// The end-of-run check.
    pub check: CheckMode,
    /// Per-request timeout.
    pub timeout: Duration,
    /// RNG seed.
    pub seed: u64,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl LoadPlan {
    /// A plan with the CLI's defaults for these targets: 100,000 single votes over 64
    /// connections, no retries, independent check, no progress bar.
    pub fn for_targets(targets: Vec<String>) -> Self {
        Self {
            targets,
            results_from: Vec::new(),
            poll: "superbowl".into(),
            options: Vec::new(),
            connections: 64,
            rate: None,
            count: Some(VOTES_DEFAULT),
            duration: None,
            batch_size: 1,
            single_fraction: 0.0,
            binary: false,
            retry_fraction: 0.0,
            retry_other_node: false,
            check: CheckMode::Independent,
            timeout: Duration::from_millis(10_000),
            seed: 0,
            progress: false,
        }
    }

    /// Checks every limit.
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |m: String| Err(LoadError::Invalid(m));
        if self.targets.is_empty() || self.targets.len() > TARGETS_MAX {
            return invalid(format!("give 1 to {TARGETS_MAX} targets"));
        }
        if self.connections < self.targets.len() || self.connections > CONNECTIONS_MAX {
            return invalid(format!(
                "--connections must be between the number of targets ({}) and {CONNECTIONS_MAX}",
                self.targets.len()
            ));
        }
        if !(1..=BATCH_VOTES_MAX).contains(&self.batch_size) {
            return invalid(format!("--batch-size must be 1 to {BATCH_VOTES_MAX}"));
        }
        if self.count.is_none() && self.duration.is_none() {
            return invalid("give --count or --duration".into());
        }
        if self.count.is_some_and(|c| c == 0 || c > VOTES_MAX) {
            return invalid(format!("--count must be 1 to {VOTES_MAX}"));
        }
        if self
            .duration
            .is_some_and(|d| d.is_zero() || d > Duration::from_millis(DURATION_MS_MAX))
        {
            return invalid("--duration must be above 0 and at most 1 h".into());
        }
        if self
            .rate
            .is_some_and(|r| !(r > 0.0 && r <= RATE_VOTES_PER_S_MAX))
        {
            return invalid(format!(
                "--rate must be above 0 and at most {RATE_VOTES_PER_S_MAX}"
            ));
        }
        if !(0.0..1.0).contains(&self.retry_fraction) {
            return invalid("--retry-fraction must be at least 0 and below 1".into());
        }
        if !(0.0..=1.0).contains(&self.single_fraction) {
            return invalid("--single-fraction must be between 0 and 1".into());
        }
        if !self.results_from.is_empty() && self.check != CheckMode::Cluster {
            return invalid("--results-from needs --check cluster".into());
        }
        if self.results_from.len() > TARGETS_MAX {
            return invalid(format!("give at most {TARGETS_MAX} --results-from nodes"));
        }
        if self.retry_other_node && self.targets.len() < 2 {
            return invalid("--retry-other-node needs at least two targets".into());
        }
        let timeout_ms = self.timeout.as_millis();
        if timeout_ms == 0 || timeout_ms > u128::from(TIMEOUT_MS_MAX) {
            return invalid(format!("--timeout-ms must be 1 to {TIMEOUT_MS_MAX}"));
        }
        Ok(())
    }
}

impl LoadArgs {
    /// The validated plan these flags describe.
    pub fn plan(&self) -> Result<LoadPlan, LoadError> {
        let plan = LoadPlan {
            targets: self.targets.clone(),
            results_from: self.results_from.clone(),
            poll: self.poll.clone(),
            options: self.options.clone(),
            connections: self.connections,
            rate: self.rate,
            count: match (self.count, self.duration) {
                (None, None) => Some(VOTES_DEFAULT),
                (count, _) => count,
            },
            duration: self.duration,
            batch_size: self.batch_size,
            single_fraction: self.single_fraction,
            binary: self.binary,
            retry_fraction: self.retry_fraction,
            retry_other_node: self.retry_other_node,
            check: self.check,
            timeout: Duration::from_millis(self.timeout_ms),
            seed: self.seed.unwrap_or_else(rand::random),
            progress: !self.no_progress,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (text, 1_000.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s, 500ms or 2m"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{text:?} must be above zero"));
    }
    Ok(Duration::from_secs_f64(value * unit_ms / 1_000.0))
}

/// The options to vote for, as JSON literals and as indexes into the poll's option list.
fn encoding(plan: &LoadPlan, poll_options: Option<&[String]>) -> Result<Encoding, LoadError> {
    let names: Vec<String> = match (plan.options.is_empty(), poll_options) {
        (false, _) => plan.options.clone(),
        (true, Some(poll)) => poll.to_vec(),
        (true, None) => vec!["green".into(), "blue".into()],
    };
    if names.is_empty() || names.len() > usize::from(u8::MAX) {
        return Err(LoadError::Invalid("give 1 to 255 options".into()));
    }
    let option_index = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let index = match poll_options {
                Some(poll) => poll.iter().position(|o| o == name).ok_or_else(|| {
                    LoadError::Invalid(format!("poll {} has no option {name:?}", plan.poll))
                })?,
                None => i,
            };
            u8::try_from(index).map_err(|_| LoadError::Invalid("too many options".into()))
        })
        .collect::<Result<Vec<u8>, LoadError>>()?;
    let option_json = names
        .iter()
        .map(|n| serde_json::to_string(n).map_err(|e| LoadError::Invalid(e.to_string())))
        .collect::<Result<Vec<String>, LoadError>>()?;
    Ok(Encoding {
        option_json,
        option_index,
        binary: plan.binary,
    })
}

/// Runs a plan: reads each node's total, sends the votes, waits for the totals to settle,
/// and checks them. A failed check is reported in [`LoadReport::check_passed`], not as `Err`.
pub async fn run(plan: &LoadPlan) -> Result<LoadReport, LoadError> {
    plan.validate()?;
    let mut targets = Vec::with_capacity(plan.targets.len());
    for url in &plan.targets {
        targets.push(Target::resolve(url).await?);
    }
    // The nodes the check reads: the targets, or the nodes behind them (edges).
    let mut checked = Vec::with_capacity(plan.results_from.len());
    for url in &plan.results_from {
        checked.push(Target::resolve(url).await?);
    }
    let mut totals_before = Vec::with_capacity(targets.len());
    let mut poll_options = None;
    if plan.check != CheckMode::Off {
        let read = if checked.is_empty() {
            &targets
        } else {
            &checked
        };
        for target in read {
            let totals = target.poll_results(&plan.poll).await?;
            poll_options.get_or_insert(totals.options);
            // Votes acknowledged just before the run (a warm-up, say) may not be in the
            // node's results yet: take the baseline once the total is quiet.
            totals_before.push(settle(plan, target, totals.total, |_| true).await?);
        }
    }
    let encoding = encoding(plan, poll_options.as_deref())?;
    // Connect first, so the schedule (and the clock of a rate-limited run) starts with every
    // connection open; one that fails here is retried by its worker (and counted).
    let mut connections = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        connections.push(targets[i % targets.len()].connect().await.ok());
    }
    let shared = Arc::new(shared(plan, targets, encoding));
    let progress = plan.progress.then(|| progress_bar(plan, shared.clone()));
    let workers: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(i, connection)| {
            let stream = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let rng = StdRng::seed_from_u64(plan.seed ^ stream);
            let target = i % plan.targets.len();
            tokio::spawn(Worker::new(shared.clone(), target, rng, connection).run())
        })
        .collect();
    let mut reports = Vec::with_capacity(workers.len());
    for worker in workers {
        match worker.await {
            Ok(report) => reports.push(report),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    let elapsed = shared.start.elapsed();
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    let (mut report, mut records) = summarize(plan, &shared, reports, elapsed);
    if plan.check != CheckMode::Off {
        let read = if checked.is_empty() {
            &shared.targets
        } else {
            &checked
        };
        report.checks = check_all(plan, read, &totals_before, &mut records).await?;
        report.check_passed = Some(report.checks.iter().all(|c| c.passed));
    }
    Ok(report)
}

fn shared(plan: &LoadPlan, targets: Vec<Target>, encoding: Encoding) -> Shared {
    let start = Instant::now();
    let started_at = std::time::SystemTime::now();
    let options = encoding.option_index.len();
    Shared {
        single_path: format!("/v1/polls/{}/votes", plan.poll),
        batch_path: format!("/v1/polls/{}/votes/batch", plan.poll),
        retries: RetryPools::new(targets.len(), plan.retry_other_node),
        targets,
        encoding,
        options,
        batch_size: plan.batch_size,
        single_fraction: if plan.batch_size > 1 {
            plan.single_fraction
        } else {
            0.0
        },
        retry_fraction: plan.retry_fraction,
        rate: plan.rate,
        votes_max: plan.count,
        deadline: plan.duration.map(|d| start + d),
        start,
        started_at,
        timeout: plan.timeout,
        next_vote: AtomicU64::new(0),
        answered_votes: AtomicU64::new(0),
    }
}

fn progress_bar(
    plan: &LoadPlan,
    shared: Arc<Shared>,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let length = plan.count.unwrap_or(0);
    let bar = indicatif::ProgressBar::new(length);
    let template = if plan.count.is_some() {
        "{elapsed_precise} [{bar:40}] {pos}/{len} votes  {msg}"
    } else {
        "{elapsed_precise} {pos} votes  {msg}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let ticking = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(POLL_INTERVAL_MS));
        loop {
            interval.tick().await;
            let answered = shared.answered_votes.load(Ordering::Relaxed);
            let seconds = shared.start.elapsed().as_secs_f64().max(1e-3);
            ticking.set_position(answered);
            ticking.set_message(format!("{:.0} votes/s", answered as f64 / seconds));
        }
    });
    (bar, ticker)
}

fn summarize(
    plan: &LoadPlan,
    shared: &Shared,
    reports: Vec<WorkerReport>,
    elapsed: Duration,
) -> (LoadReport, Vec<VoteRecord>) {
    let mut records = Vec::with_capacity(reports.iter().map(|r| r.records.len()).sum());
    let mut latency = worker::histogram();
    let mut service = worker::histogram();
    let mut errors = std::collections::BTreeMap::new();
    let (mut requests, mut retried) = (0, 0);
    for report in reports {
        records.extend_from_slice(&report.records);
        // Same bounds on both sides: adding cannot fail.
        let _ = latency.add(&report.latency);
        let _ = service.add(&report.service);
        requests += report.requests;
        retried += report.retried_votes;
        for (label, count) in report.errors {
            *errors.entry(label).or_default() += count;
        }
    }
    let mut outcomes = Outcomes::default();
    for record in &records {
        match record.outcome {
            check::Outcome::Counted => outcomes.counted += 1,
            check::Outcome::Duplicate => outcomes.duplicate += 1,
            check::Outcome::Refused => outcomes.refused += 1,
            check::Outcome::Unknown => outcomes.unknown += 1,
        }
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let votes = records.len() as u64;
    let report = LoadReport {
        targets: shared.targets.iter().map(|t| t.url.clone()).collect(),
        poll: plan.poll.clone(),
        connections: plan.connections,
        batch_size: plan.batch_size,
        single_fraction: shared.single_fraction,
        binary: plan.binary,
        rate_votes_per_s: plan.rate,
        retry_fraction: plan.retry_fraction,
        retry_other_node: plan.retry_other_node,
        seed: plan.seed,
        started_unix_s: shared
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        elapsed_s: seconds,
        requests,
        votes_sent: votes,
        votes_retried: retried,
        votes_per_s: votes as f64 / seconds,
        requests_per_s: requests as f64 / seconds,
        outcomes,
        latency_from: if plan.rate.is_some() {
            "intended_send_time"
        } else {
            "send_time"
        },
        latency: Percentiles::of(&latency),
        service_time: Percentiles::of(&service),
        errors,
        check_mode: plan.check,
        checks: Vec::new(),
        check_passed: None,
    };
    (report, records)
}

/// Waits for each node's total to settle and judges it.
async fn check_all(
    plan: &LoadPlan,
    targets: &[Target],
    totals_before: &[i64],
    records: &mut [VoteRecord],
) -> Result<Vec<TargetCheck>, LoadError> {
    let mut expectations = check::expect(plan.check, plan.targets.len(), records);
    if !plan.results_from.is_empty() {
        // The votes went to edges; every node read must hold what any of them acknowledged
        // (cluster mode), and no edge may have answered `counted` twice for one vote ID.
        expectations = vec![check::through_edges(&expectations); targets.len()];
    }
    let mut checks = Vec::with_capacity(targets.len());
    for ((target, expectation), before) in targets.iter().zip(&expectations).zip(totals_before) {
        let after = settled_total(plan, target, expectation, *before).await?;
        checks.push(check::verdict(&target.url, expectation, *before, after));
    }
    Ok(checks)
}

/// The node's total once it has settled after the run: see [`settle`]. Independent nodes
/// settle when quiet (an acknowledged vote is in the node's next results tick, so a quiet
/// total is final); in cluster mode the total must also reach the expected range, since
/// replication may still be catching up.
async fn settled_total(
    plan: &LoadPlan,
    target: &Target,
    expectation: &check::Expectation,
    before: i64,
) -> Result<i64, LoadError> {
    let first = target.poll_results(&plan.poll).await?.total;
    settle(plan, target, first, |total| {
        plan.check != CheckMode::Cluster || expectation.accepts(total - before)
    })
    .await
}

/// Reads the node's total (starting from `first`) until it has not changed for
/// [`SETTLE_QUIET_MS`] and `settled` accepts it, or [`SETTLE_TIMEOUT_MS`] has passed;
/// returns the last total read.
async fn settle(
    plan: &LoadPlan,
    target: &Target,
    first: i64,
    settled: impl Fn(i64) -> bool,
) -> Result<i64, LoadError> {
    let started = Instant::now();
    let mut last = first;
    let mut unchanged_since = Instant::now();
    loop {
        let quiet = unchanged_since.elapsed() >= Duration::from_millis(SETTLE_QUIET_MS);
        if (quiet && settled(last)) || started.elapsed() >= Duration::from_millis(SETTLE_TIMEOUT_MS)
        {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        let total = target.poll_results(&plan.poll).await?.total;
        if total != last {
            last = total;
            unchanged_since = Instant::now();
        }
    }
}

/// Runs `plan` on a runtime of its own with `threads` threads (a current-thread runtime for
/// one), on a new OS thread, and waits for it without blocking the caller's runtime.
pub async fn run_on_own_threads(plan: LoadPlan, threads: usize) -> Result<LoadReport, LoadError> {
    if !(1..=THREADS_MAX).contains(&threads) {
        return Err(LoadError::Invalid(format!(
            "--threads must be 1 to {THREADS_MAX}"
        )));
    }
    let (done, report) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tally-load".into())
        .spawn(move || {
            let runtime = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            };
            let result = match runtime {
                Ok(runtime) => runtime.block_on(run(&plan)),
                Err(e) => Err(LoadError::Invalid(format!(
                    "cannot start the client runtime: {e}"
                ))),
            };
            let _ = done.send(result);
        })
        .map_err(|e| LoadError::Invalid(format!("cannot start the client thread: {e}")))?;
    report
        .await
        .map_err(|_| LoadError::Invalid("the client thread panicked".into()))?
}

/// `tally load`: runs, prints the report, writes the JSON report if asked; `Err` when the
/// run could not be done or the check failed (so the process exits non-zero).
pub async fn main(args: LoadArgs) -> Result<(), String> {
    let plan = args.plan().map_err(|e| e.to_string())?;
    let report = run_on_own_threads(plan, args.threads)
        .await
        .map_err(|e| e.to_string())?;
    print!("{report}");
    if let Some(path) = &args.json_report {
        let json = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json)
            .map_err(|e| LoadError::Report(format!("{}: {e}", path.display())).to_string())?;
    }
    match report.check_passed {
        Some(false) => Err("the tally check failed (see above)".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        // Goal: the --duration forms the docs use. Method: parse each.
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("-1s").is_err() && parse_duration("soon").is_err());
    }

    #[test]
    fn plans_outside_the_limits_are_refused() {
        // Goal: everything bounded. Method: push each limit over.
        let ok = LoadPlan::for_targets(vec!["http://127.0.0.1:1".into()]);
        assert!(ok.validate().is_ok());
        let too_many = LoadPlan {
            connections: CONNECTIONS_MAX + 1,
            ..ok.clone()
        };
        let unbounded = LoadPlan {
            count: None,
            duration: None,
            ..ok.clone()
        };
        let big_batch = LoadPlan {
            batch_size: BATCH_VOTES_MAX + 1,
            ..ok.clone()
        };
        let all_retries = LoadPlan {
            retry_fraction: 1.0,
            ..ok.clone()
        };
        let lonely_retry = LoadPlan {
            retry_other_node: true,
            ..ok.clone()
        };
        for plan in [too_many, unbounded, big_batch, all_retries, lonely_retry] {
            assert!(plan.validate().is_err(), "{plan:?}");
        }
    }
}
