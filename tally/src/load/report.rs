//! What `tally load` reports: throughput, latency percentiles from the merged HDR histograms,
//! outcomes, errors by status, and the per-node check — printed as text and, on request,
//! written as JSON (`--json-report FILE`) for scripts such as `scripts/bench-node.sh`.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::check::{CheckMode, TargetCheck};

/// Latency percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Requests measured.
    pub requests: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Percentiles {
    /// Reads the percentiles off a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            requests: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

/// Votes by what the nodes answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Answered `counted`.
    pub counted: u64,
    /// Answered `duplicate`.
    pub duplicate: u64,
    /// Refused (non-200, or refused within a batch).
    pub refused: u64,
    /// No answer (timeout, broken connection, unreadable answer).
    pub unknown: u64,
}

/// The whole result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The nodes driven.
    pub targets: Vec<String>,
    /// The poll voted in.
    pub poll: String,
    /// Connections used.
    pub connections: usize,
    /// Votes per batch request (1: single votes).
    pub batch_size: usize,
    /// Share of requests sent as single votes when batching.
    pub single_fraction: f64,
    /// Whether batches were postcard.
    pub binary: bool,
    /// Aimed rate in votes/s, or null for flat out.
    pub rate_votes_per_s: Option<f64>,
    /// Share of votes that re-sent an earlier vote ID (aimed).
    pub retry_fraction: f64,
    /// Whether retries went to another node.
    pub retry_other_node: bool,
    /// The RNG seed (`--seed` replays the same IDs and choices per connection).
    pub seed: u64,
    /// When the run's clock started (just before the first request), in seconds since the
    /// Unix epoch: lets a script place the run on its own clock (e.g. when the nodes' totals
    /// converged after it).
    pub started_unix_s: f64,
    /// Wall time from the first request to the last answer, in seconds.
    pub elapsed_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Votes sent, retries included.
    pub votes_sent: u64,
    /// Votes that were retries.
    pub votes_retried: u64,
    /// Votes sent per second of wall time.
    pub votes_per_s: f64,
    /// Requests per second of wall time.
    pub requests_per_s: f64,
    /// Votes by answer.
    pub outcomes: Outcomes,
    /// What latency is measured from: `intended_send_time` with `--rate`, else `send_time`.
    pub latency_from: &'static str,
    /// Per request: from the intended send time with `--rate`, else from the send.
    pub latency: Percentiles,
    /// Per request: from the actual send to the answer.
    pub service_time: Percentiles,
    /// Errors by label: HTTP status (`"503"`), `vote:REASON` for refusals within a batch,
    /// `timeout`, `transport`, `connect`, `bad_response`.
    pub errors: BTreeMap<String, u64>,
    /// How the check was done.
    pub check_mode: CheckMode,
    /// Per node, unless the check was off.
    pub checks: Vec<TargetCheck>,
    /// True when every node passed; null when the check was off.
    pub check_passed: Option<bool>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = match (self.batch_size, self.binary) {
            (1, _) => "single votes".to_owned(),
            (n, true) => format!("postcard batches of {n}"),
            (n, false) => format!("JSON batches of {n}"),
        };
        let aim = self
            .rate_votes_per_s
            .map_or("flat out".to_owned(), |r| format!("at {r:.0} votes/s"));
        writeln!(
            f,
            "tally load: {} votes ({} retries) in {} requests, {shape}, {aim}, {} connections to {} node(s), seed {}",
            self.votes_sent,
            self.votes_retried,
            self.requests,
            self.connections,
            self.targets.len(),
            self.seed
        )?;
        writeln!(
            f,
            "  throughput: {:.0} votes/s, {:.0} requests/s over {:.2} s",
            self.votes_per_s, self.requests_per_s, self.elapsed_s
        )?;
        let o = &self.outcomes;
        writeln!(
            f,
            "  outcomes:   counted {}, duplicate {}, refused {}, unknown {}",
            o.counted, o.duplicate, o.refused, o.unknown
        )?;
        writeln!(f, "  latency from {}: {}", self.latency_from, self.latency)?;
        if self.rate_votes_per_s.is_some() {
            writeln!(f, "  service time (send to answer): {}", self.service_time)?;
        }
        if self.errors.is_empty() {
            writeln!(f, "  errors:     none")?;
        } else {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            writeln!(f, "  errors:     {}", errors.join(", "))?;
        }
        for check in &self.checks {
            let expected = if check.expectation.expected_min == check.expectation.expected_max {
                format!("{}", check.expectation.expected_min)
            } else {
                format!(
                    "{}..={}",
                    check.expectation.expected_min, check.expectation.expected_max
                )
            };
            writeln!(
                f,
                "  check {}: total {} -> {} (+{}), expected +{expected} ({} distinct vote IDs acknowledged; {} counted, {} duplicate answers; {} counted twice): {}",
                check.target,
                check.total_before,
                check.total_after,
                check.delta,
                check.expectation.acknowledged_ids,
                check.expectation.counted_answers,
                check.expectation.duplicate_answers,
                check.expectation.counted_twice_ids,
                if check.passed { "OK" } else { "MISMATCH" }
            )?;
        }
        match self.check_passed {
            Some(true) => writeln!(
                f,
                "check PASSED ({:?}): every node's tally equals the distinct vote IDs it acknowledged",
                self.check_mode
            ),
            Some(false) => writeln!(
                f,
                "check FAILED ({:?}): a node's tally differs from the distinct vote IDs it acknowledged",
                self.check_mode
            ),
            None => writeln!(f, "check: off"),
        }
    }
}
