//! The end-of-run check of `tally load`: does each node's tally hold exactly the votes it
//! acknowledged?
//!
//! What the generator knows per vote it sent: the vote ID, the node it went to, and what that
//! node answered — `counted`, `duplicate`, refused (any non-200 status, or a per-vote refusal
//! in a batch such as `overloaded`: the API promises a refused vote was not counted), or
//! *unknown* (timeout or broken connection: the node may or may not have counted it).
//!
//! The check reads each node's `GET /v1/polls/{poll}/results` `total` before the run and again
//! after it — each time once the total has settled, i.e. not changed for half a second (the
//! node publishes results every 100 ms by default) — and compares the growth `delta` with:
//!
//! * **independent** nodes (the default; nodes that do not replicate to each other): the number
//!   `A` of distinct vote IDs this node answered `counted` or `duplicate`. A node holds a vote
//!   ID exactly once whether it answered `counted` (it was new) or `duplicate` (an earlier send
//!   *to this node* was counted, perhaps one whose answer was lost), so `delta` must equal `A`.
//!   A retry sent to another node (`--retry-other-node`) is new to that node: it answers
//!   `counted` and both nodes count it, once each. A `duplicate` from a node that never
//!   counted the ID leaves `delta` short of `A` and fails the check.
//! * **cluster** (nodes that replicate, checked after convergence): the number of distinct
//!   vote IDs acknowledged by *any* node; every node must reach it, because every node ends
//!   up holding every acknowledged vote exactly once.
//!
//! Vote IDs whose every answer was *unknown* (`U` of them) may or may not be counted, so with
//! any of them the check accepts `A ≤ delta ≤ A + U`; without them it is an equality. A node
//! that answered `counted` twice for the same vote ID fails the check whatever its total.
//! The generator draws fresh UUID v4 IDs, so the baseline is not disturbed by earlier runs,
//! but nothing else may vote in the poll during the run.

use serde::Serialize;

/// What a node answered for one vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The node counted it as new.
    Counted,
    /// The node already held it.
    Duplicate,
    /// The node refused it; it was not counted.
    Refused,
    /// No answer (or 503 `not_replicated`: durable on the node, not acknowledged): it may
    /// or may not have been counted.
    Unknown,
}

/// One vote sent: its ID, the index of the node it went to, and the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteRecord {
    /// The vote ID's 16 bytes (UUID byte order).
    pub vote_id: [u8; 16],
    /// Index of the target in the run's target list.
    pub target: u16,
    /// What it answered.
    pub outcome: Outcome,
}

/// How nodes relate, which decides what each node's total must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// No check (for servers that do not count, such as the hello-world benchmark route).
    Off,
    /// Nodes that do not replicate: each holds what it acknowledged itself.
    Independent,
    /// Nodes that replicate: each holds what any of them acknowledged (after convergence).
    Cluster,
}

/// The verdict for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetCheck {
    /// The node's URL.
    pub target: String,
    /// Its total before the run.
    pub total_before: i64,
    /// Its total after the run, once settled.
    pub total_after: i64,
    /// `total_after - total_before`.
    pub delta: i64,
    /// What the node's answers require of its total.
    #[serde(flatten)]
    pub expectation: Expectation,
    /// Whether this node passed.
    pub passed: bool,
}

/// Per-node counts gathered from the records, before the totals are known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// `counted` answers.
    pub counted_answers: u64,
    /// `duplicate` answers.
    pub duplicate_answers: u64,
    /// Distinct IDs acknowledged by this node.
    pub acknowledged_ids: u64,
    /// IDs answered `counted` more than once by this node.
    pub counted_twice_ids: u64,
    /// The least growth of the node's total that passes.
    pub expected_min: u64,
    /// The most growth that passes.
    pub expected_max: u64,
}

impl Expectation {
    /// Whether a growth of `delta` passes.
    pub fn accepts(&self, delta: i64) -> bool {
        self.counted_twice_ids == 0
            && u64::try_from(delta)
                .is_ok_and(|d| (self.expected_min..=self.expected_max).contains(&d))
    }
}

/// Per-node answers for one vote ID.
#[derive(Debug, Clone, Copy, Default)]
struct Answers {
    counted: u64,
    duplicate: u64,
    unknown: u64,
}

impl Answers {
    fn acknowledged(&self) -> bool {
        self.counted > 0 || self.duplicate > 0
    }
}

/// Computes what each of `targets` nodes must show. Sorts `records` by vote ID.
pub fn expect(mode: CheckMode, targets: usize, records: &mut [VoteRecord]) -> Vec<Expectation> {
    records.sort_unstable_by_key(|r| (r.vote_id, r.target));
    let mut per_node = vec![Expectation::default(); targets];
    // Per node: IDs never acknowledged by it whose answer from it was lost.
    let mut unresolved = vec![0u64; targets];
    let (mut cluster_acknowledged, mut cluster_unresolved) = (0u64, 0u64);
    let mut answers = vec![Answers::default(); targets];
    for group in records.chunk_by(|a, b| a.vote_id == b.vote_id) {
        answers.iter_mut().for_each(|a| *a = Answers::default());
        for record in group {
            let Some(slot) = answers.get_mut(usize::from(record.target)) else {
                continue;
            };
            match record.outcome {
                Outcome::Counted => slot.counted += 1,
                Outcome::Duplicate => slot.duplicate += 1,
                Outcome::Unknown => slot.unknown += 1,
                Outcome::Refused => {}
            }
        }
        for ((node, answer), lost) in per_node.iter_mut().zip(&answers).zip(&mut unresolved) {
            node.counted_answers += answer.counted;
            node.duplicate_answers += answer.duplicate;
            node.acknowledged_ids += u64::from(answer.acknowledged());
            node.counted_twice_ids += u64::from(answer.counted > 1);
            *lost += u64::from(!answer.acknowledged() && answer.unknown > 0);
        }
        if answers.iter().any(Answers::acknowledged) {
            cluster_acknowledged += 1;
        } else if answers.iter().any(|a| a.unknown > 0) {
            cluster_unresolved += 1;
        }
    }
    for (node, lost) in per_node.iter_mut().zip(unresolved) {
        (node.expected_min, node.expected_max) = match mode {
            CheckMode::Cluster => (
                cluster_acknowledged,
                cluster_acknowledged + cluster_unresolved,
            ),
            CheckMode::Independent | CheckMode::Off => {
                (node.acknowledged_ids, node.acknowledged_ids + lost)
            }
        };
    }
    per_node
}

/// What a node behind edges must show, from the edges' expectations (cluster mode): the
/// cluster-wide range, and every edge's answers (an edge answering `counted` twice for one
/// vote ID fails every node's check).
pub fn through_edges(edges: &[Expectation]) -> Expectation {
    let mut merged = edges.first().copied().unwrap_or_default();
    merged.counted_answers = edges.iter().map(|e| e.counted_answers).sum();
    merged.duplicate_answers = edges.iter().map(|e| e.duplicate_answers).sum();
    merged.acknowledged_ids = merged.expected_min;
    merged.counted_twice_ids = edges.iter().map(|e| e.counted_twice_ids).sum();
    merged
}

/// The verdict for one node, from its expectation and its totals before and after.
pub fn verdict(
    target: &str,
    expectation: &Expectation,
    total_before: i64,
    total_after: i64,
) -> TargetCheck {
    let delta = total_after - total_before;
    TargetCheck {
        target: target.to_owned(),
        total_before,
        total_after,
        delta,
        passed: expectation.accepts(delta),
        expectation: *expectation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u8, target: u16, outcome: Outcome) -> VoteRecord {
        VoteRecord {
            vote_id: [id; 16],
            target,
            outcome,
        }
    }

    #[test]
    fn a_duplicate_answer_for_an_id_counted_on_the_same_node_adds_nothing() {
        // Goal: retries to the same node count once. Method: two IDs, one retried.
        let mut records = vec![
            record(1, 0, Outcome::Counted),
            record(2, 0, Outcome::Counted),
            record(1, 0, Outcome::Duplicate),
        ];
        let expected = expect(CheckMode::Independent, 1, &mut records);
        assert_eq!(expected[0].acknowledged_ids, 2);
        assert!(expected[0].accepts(2));
        assert!(!expected[0].accepts(3));
        assert!(!expected[0].accepts(1));
    }

    #[test]
    fn a_retry_to_another_independent_node_counts_once_on_each() {
        // Goal: the documented rule for --retry-other-node. Method: one ID sent to both nodes.
        let mut records = vec![
            record(1, 0, Outcome::Counted),
            record(1, 1, Outcome::Counted),
        ];
        let expected = expect(CheckMode::Independent, 2, &mut records);
        assert!(expected[0].accepts(1) && expected[1].accepts(1));
        let cluster = expect(CheckMode::Cluster, 2, &mut records);
        assert!(cluster[0].accepts(1) && cluster[1].accepts(1));
        assert!(!cluster[0].accepts(2));
    }

    #[test]
    fn a_duplicate_from_a_node_that_never_counted_the_id_is_caught_by_its_total() {
        // Goal: a node claiming to hold a vote it does not hold fails. Method: its total
        // stays flat while it acknowledged one ID.
        let mut records = vec![record(1, 0, Outcome::Duplicate)];
        let expected = expect(CheckMode::Independent, 1, &mut records);
        assert!(!verdict("a", &expected[0], 10, 10).passed);
        assert!(verdict("a", &expected[0], 10, 11).passed);
    }

    #[test]
    fn counting_the_same_id_twice_fails_whatever_the_total() {
        // Goal: exactly once on one node. Method: two `counted` answers for one ID.
        let mut records = vec![
            record(1, 0, Outcome::Counted),
            record(1, 0, Outcome::Counted),
        ];
        let expected = expect(CheckMode::Independent, 1, &mut records);
        assert_eq!(expected[0].counted_twice_ids, 1);
        assert!(!expected[0].accepts(1) && !expected[0].accepts(2));
    }

    #[test]
    fn lost_answers_widen_the_range_and_refusals_count_nothing() {
        // Goal: unknown outcomes may or may not be counted; refused ones are not. Method:
        // one counted, one lost, one refused ID.
        let mut records = vec![
            record(1, 0, Outcome::Counted),
            record(2, 0, Outcome::Unknown),
            record(3, 0, Outcome::Refused),
        ];
        let expected = expect(CheckMode::Independent, 1, &mut records);
        assert_eq!((expected[0].expected_min, expected[0].expected_max), (1, 2));
        assert!(expected[0].accepts(1) && expected[0].accepts(2) && !expected[0].accepts(3));
    }

    #[test]
    fn a_lost_answer_resolved_by_a_retry_is_exact_again() {
        // Goal: a retry answered `duplicate` after a lost answer pins the count. Method: an
        // unknown outcome followed by a duplicate answer from the same node.
        let mut records = vec![
            record(1, 0, Outcome::Unknown),
            record(1, 0, Outcome::Duplicate),
        ];
        let expected = expect(CheckMode::Independent, 1, &mut records);
        assert_eq!((expected[0].expected_min, expected[0].expected_max), (1, 1));
    }
}
