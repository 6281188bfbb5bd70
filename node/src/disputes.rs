//! Disputed poll definitions, as a node reports them (the agreement itself is
//! `tally_core::Declarations`; the rule that keeps records apart is `tally_core::sync`).
//!
//! A poll is *disputed* on a node while some node (a peer, or one heard of through peers)
//! holds another definition of it: another option list, or the same options in another order.
//! Each dispute is logged once when it begins, changes or ends (not on every sync round),
//! exported as `tally_poll_definition_disputes{poll,peer}` and, where this node's definition
//! lost, `tally_poll_definition_lost{poll}` and the `definition_disputed` hold (not ready).
//! [`describe`] puts it in words for `/readyz`, the poll's results and the log.

use std::collections::{BTreeMap, BTreeSet};

pub use tally_client::api::PollDispute;
use tally_core::{DefinitionDigest, PollId, Replica};

use crate::health::{Health, Hold};
use crate::metrics::Metrics;

/// `options` as `[a, b]`, or the definition's digest when its options were never seen here
/// (a node heard of only through others).
fn options_text(replica: &Replica, poll: &PollId, definition: DefinitionDigest) -> String {
    match replica.definition_options(poll, definition) {
        Some(options) => {
            let names: Vec<&str> = options.iter().map(|o| o.as_str()).collect();
            format!("[{}]", names.join(", "))
        }
        None => format!("definition {}", definition.short()),
    }
}

/// `poll`'s dispute on this node, or `None` if every node heard of defines it alike.
pub fn describe(replica: &Replica, poll: &PollId) -> Option<PollDispute> {
    let standing = replica.standing(poll)?;
    if standing.others.is_empty() {
        return None;
    }
    let nodes: BTreeSet<String> = standing
        .others
        .iter()
        .map(|(node, _)| node.to_string())
        .collect();
    let mine = options_text(replica, poll, standing.own);
    let declaring = replica.declarations(poll).map_or(0, |d| d.len());
    let message = if standing.lost() {
        let winners: Vec<String> = standing
            .others
            .iter()
            .filter(|(_, d)| *d == standing.winner)
            .map(|(node, _)| node.to_string())
            .collect();
        let winning = options_text(replica, poll, standing.winner);
        format!(
            "poll {poll}: this node lists its options as {mine}, but {} of {declaring} nodes \
             ({}) list them as {winning}, the definition the cluster agrees on; this node \
             counts no votes for the poll (clients retry at other nodes) until its \
             configuration lists the options as {winning} and it restarts, which keeps each of \
             its votes under the option it was cast for",
            winners.len(),
            winners.join(", "),
        )
    } else {
        let others: Vec<String> = standing
            .others
            .iter()
            .map(|(node, d)| format!("{node} {}", options_text(replica, poll, *d)))
            .collect();
        let (define, count) = if others.len() == 1 {
            ("defines", "counts")
        } else {
            ("define", "count")
        };
        format!(
            "poll {poll}: this node lists its options as {mine}, the definition the cluster \
             agrees on, and keeps counting; {} {define} it otherwise and {count} none of its \
             votes until fixed",
            others.join(", "),
        )
    };
    Some(PollDispute {
        refusing_votes: standing.lost(),
        nodes,
        message,
    })
}

/// The disputes last logged and exported.
#[derive(Debug, Default)]
pub struct Disputes {
    current: BTreeMap<PollId, PollDispute>,
}

impl Disputes {
    /// Brings the log, the metrics and the hold up to date with `replica`'s declarations:
    /// a dispute that began, changed or ended is logged once.
    pub fn observe(&mut self, replica: &Replica, metrics: &Metrics, health: &Health) {
        let next: BTreeMap<PollId, PollDispute> = replica
            .poll_specs()
            .filter_map(|spec| Some((spec.id().clone(), describe(replica, spec.id())?)))
            .collect();
        for (poll, dispute) in &next {
            if self.current.get(poll) == Some(dispute) {
                continue;
            }
            let nodes: Vec<&str> = dispute.nodes.iter().map(String::as_str).collect();
            tracing::warn!(
                %poll,
                peers = %nodes.join(","),
                refusing_votes = dispute.refusing_votes,
                "poll definitions disagree: {}",
                dispute.message
            );
        }
        for poll in self.current.keys().filter(|p| !next.contains_key(*p)) {
            tracing::info!(%poll, "poll definitions agree again");
        }
        let labels =
            |poll: &PollId, node: &str| vec![("poll", poll.to_string()), ("peer", node.to_owned())];
        for (poll, old) in &self.current {
            for node in &old.nodes {
                let still = next.get(poll).is_some_and(|d| d.nodes.contains(node));
                if !still {
                    metrics
                        .definition_disputes
                        .get_or_create(&labels(poll, node))
                        .set(0);
                }
            }
        }
        for spec in replica.poll_specs() {
            let dispute = next.get(spec.id());
            for node in dispute.iter().flat_map(|d| &d.nodes) {
                metrics
                    .definition_disputes
                    .get_or_create(&labels(spec.id(), node))
                    .set(1);
            }
            let lost = dispute.is_some_and(|d| d.refusing_votes);
            metrics
                .definition_lost
                .get_or_create(&vec![("poll", spec.id().to_string())])
                .set(i64::from(lost));
        }
        health.set(
            Hold::DefinitionDisputed,
            next.values().any(|d| d.refusing_votes),
        );
        self.current = next;
    }
}
