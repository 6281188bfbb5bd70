//! Start-up: rebuild the replica from the write-ahead log, or begin a new incarnation.
//!
//! The log's first entry names the actor that wrote it. A node continues under that actor
//! only if its log replayed *whole* (`RecoveryReport::is_whole`): otherwise it may lack
//! records it once made durable and sent to peers, and issuing their seqs again would give
//! one (actor, seq) two contents (Riak's "kv679"). So a node begins a **new incarnation**
//! (DESIGN.md §2) when its disk holds no log, when the log's tail was cut off (a torn append
//! and damage to the last frames look the same), and when the log is damaged: it draws a
//! fresh incarnation number from the seeded RNG and logs it (fsynced) before serving. The
//! old actor's records stay, as another actor's, superseded; what the log lacks of them
//! comes back from peers like any actor's records.
//!
//! On damage it also:
//! - refuses to start when it has no peers to get the missing records from, unless the
//!   operator accepts the loss (`accept_log_damage`), naming the seqs missing per poll and
//!   actor (those the valid entries after the damage show; a damaged end cannot show what
//!   it held) — nothing on disk changes before that decision;
//! - keeps every damaged file aside (`wal/open.rs`), records again under the new actor
//!   every vote whose record followed a gap in its actor's seqs (it counts even if no peer
//!   ever fills the gap; where a peer does, the winner rule keeps one record of the vote),
//!   and writes a snapshot of the whole state, which retires the damaged files from the log.

use std::collections::BTreeMap;
use std::fmt;

use rand::{RngCore, SeedableRng};
use tally_core::{ActorId, PollId, RecordBatch, Replica, Seq};

use crate::config::{Config, Validated};
use crate::planted::PlantedBug;
use crate::reservation::reserve_index;
use crate::storage::Storage;
use crate::wal::{RecoveryReport, Wal, WalEntry, WalError};
use tally_core::Clock;

pub use super::replay::MissingSeqs;
use super::replay::{self, Replay};

/// Why start-up failed. The log was not changed (except, for [`RecoveryError::Wal`] after
/// the decision to go on, copies of damaged files kept aside).
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The log could not be opened or read.
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    /// The data directory belongs to another node.
    #[error(
        "the data directory belongs to node {found}, but this node is configured as {configured}"
    )]
    WrongNode {
        /// The node named in the log.
        found: String,
        /// The configured node ID.
        configured: String,
    },
    /// The log is damaged and the node has no peers that could supply what it lost.
    #[error(
        "the write-ahead log is damaged and this node has no peers to recover the lost \
         records from: {summary}. Nothing was changed on disk. To start anyway, accepting \
         that loss, pass --accept-log-damage (config accept_log_damage = true, env \
         TALLY_ACCEPT_LOG_DAMAGE=true): the node then keeps a copy of each damaged file, \
         counts every vote the log still holds, and continues as a new incarnation. \
         See OPERATIONS.md, \"A damaged log\"."
    )]
    DamagedAlone {
        /// Where the damage is and which seqs are missing.
        summary: String,
    },
    /// The configured polls could not be built.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The push journal (records peers pushed, answered durable before the main log held
    /// them) is damaged: records this node confirmed to a peer may be lost here.
    #[error(
        "the push journal is damaged: {summary}. Nothing was changed on disk. Records it held \
         were confirmed to the peers that pushed them, and only those peers' own logs hold \
         them now (they return by ordinary sync while those peers live). To start anyway, \
         accepting that loss, pass --accept-log-damage (config accept_log_damage = true, env \
         TALLY_ACCEPT_LOG_DAMAGE=true): the node then keeps a copy of the damaged file and \
         replays every valid record. See OPERATIONS.md, \"The push journal\"."
    )]
    JournalDamaged {
        /// Where the damage is.
        summary: String,
    },
}

/// Why a node began a new incarnation at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewIncarnation {
    /// No log (an empty or lost disk), or a log whose identity entry is gone.
    NoLog,
    /// The log's end was cut off (a torn tail or zero fill): it may have held durable
    /// entries.
    TailCut,
    /// The log is damaged.
    Damage,
}

impl NewIncarnation {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NewIncarnation::NoLog => "no_log",
            NewIncarnation::TailCut => "log_tail_cut",
            NewIncarnation::Damage => "log_damage",
        }
    }
}

/// A recovered node, ready to serve.
pub struct Recovered<S: Storage> {
    /// The replica, holding everything the log held.
    pub replica: Replica,
    /// The log, positioned to append.
    pub wal: Wal<S>,
    /// What recovery found.
    pub report: Report,
    /// Whether (and why) this start began a new incarnation.
    pub new_incarnation: Option<NewIncarnation>,
}

/// What recovery found, for the start-up log line and metrics.
#[derive(Debug)]
pub struct Report {
    /// The log's own report (entries, bytes, a torn tail, damage).
    pub wal: RecoveryReport,
    /// Entries that could not be applied (each is logged as a warning).
    pub unapplied_entries: usize,
    /// Distinct vote IDs held after recovery, over all polls.
    pub vote_ids: usize,
    /// The actor the log was written by, when this start retired it.
    pub retired: Option<ActorId>,
    /// Seqs the damaged log lacks, per poll and actor (as far as its valid entries show).
    pub missing: Vec<MissingSeqs>,
    /// Votes recorded again under the new incarnation because their records followed a gap.
    pub adopted: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {} vote IDs held; {} entries not applied",
            self.wal, self.vote_ids, self.unapplied_entries
        )?;
        for missing in &self.missing {
            write!(f, "; MISSING {missing}")?;
        }
        if self.adopted > 0 {
            write!(
                f,
                "; {} votes after a gap recorded again by the new incarnation",
                self.adopted
            )?;
        }
        Ok(())
    }
}

/// Where a damaged log's damage is and what it lacks, in one line (the refusal's words).
fn damage_summary(report: &RecoveryReport, missing: &[MissingSeqs]) -> String {
    let mut parts: Vec<String> = report.damage.iter().map(|d| d.to_string()).collect();
    for (first, last) in &report.missing_segments {
        parts.push(format!("log segments {first} to {last} are missing"));
    }
    if missing.is_empty() {
        parts.push(
            "no seq is known to be missing (the damage may have held records after the last \
             one the log still holds of an actor, or only poll definitions)"
                .into(),
        );
    }
    for missing in missing {
        parts.push(format!("missing {missing}"));
    }
    parts.push(
        "records after the last one the log holds of each actor cannot be known lost or not".into(),
    );
    parts.join("; ")
}

/// Whether this node has peers to take records from (peer sync on, and another node listed).
fn has_peers(config: &Config) -> bool {
    config.peer_listen.is_some() && config.other_peers().next().is_some()
}

/// Replays `storage`'s log into a replica (see the module doc).
pub fn recover<S: Storage>(
    config: &Config,
    validated: &Validated,
    storage: S,
    clock: &dyn Clock,
    rng_seed: u64,
    planted_bug: Option<PlantedBug>,
) -> Result<Recovered<S>, RecoveryError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
    let hash_seed = [
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
    ];
    let fresh = rng.next_u64();
    let planted_truncate = planted_bug == Some(PlantedBug::TruncateDamagedLog);
    let node = validated.node_id.clone();
    let new_replay = |voids| Replay::new(hash_seed, &config.polls, node.clone(), fresh, voids);
    let mut replay = new_replay(BTreeMap::new());
    let holder = format!("node {}", validated.node_id);
    let recovery = if planted_truncate {
        Wal::recover_planted_truncating_damage(storage, &holder, |entry| replay.apply(entry))?
    } else {
        Wal::recover_as(storage, &holder, |entry| replay.apply(entry))?
    };
    if let Some(voids) = replay.voided() {
        // A switch to a new incarnation left records of the retired actor in a log job that
        // never became durable in the state: replay once more, leaving them out.
        tracing::info!("replaying the log again without the records a switch voided");
        replay = new_replay(voids);
        recovery.replay_again(|entry| replay.apply(entry))?;
    }
    let (replica, provisional, orphans, unapplied) = replay.into_parts();
    if let Some(found) = replica.as_ref().map(|r| &r.actor().node) {
        if found != &validated.node_id {
            return Err(RecoveryError::WrongNode {
                found: found.to_string(),
                configured: validated.node_id.to_string(),
            });
        }
    }
    let damaged = recovery.report().is_damaged() && !planted_truncate;
    let missing = replica
        .as_ref()
        .map(|r| replay::missing_seqs(r, &orphans))
        .unwrap_or_default();
    if damaged && !has_peers(config) && !config.accept_log_damage {
        return Err(RecoveryError::DamagedAlone {
            summary: damage_summary(recovery.report(), &missing),
        });
    }
    let whole = recovery.report().is_whole() || planted_truncate;
    let (mut wal, wal_report) = recovery.finish()?;
    let reuse_planted = planted_bug == Some(PlantedBug::ReuseActorAfterDiskLoss);
    let fresh_actor = ActorId {
        node: validated.node_id.clone(),
        incarnation: if reuse_planted { 1 } else { fresh },
    };
    let (mut replica, new_incarnation, retired) = match replica {
        None => {
            wal.append(&[WalEntry::Identity(fresh_actor.clone())])?;
            (
                Replica::new(fresh_actor, hash_seed),
                Some(NewIncarnation::NoLog),
                None,
            )
        }
        Some(replica) if provisional => (replica, Some(NewIncarnation::NoLog), None),
        Some(replica) if whole => (replica, None, None),
        Some(mut replica) => {
            let retired = replica.actor().clone();
            let durable_through = durable_through(&replica, &retired);
            // The planted reuse bug concerns an empty disk only: a log that did not replay
            // whole always moves to a truly new incarnation.
            let next = ActorId {
                node: validated.node_id.clone(),
                incarnation: if fresh == retired.incarnation {
                    fresh.wrapping_add(1)
                } else {
                    fresh
                },
            };
            replica.begin_incarnation(next.clone());
            wal.append(&[WalEntry::Incarnation {
                actor: next,
                retired: retired.clone(),
                durable_through,
            }])?;
            let reason = if damaged {
                NewIncarnation::Damage
            } else {
                NewIncarnation::TailCut
            };
            (replica, Some(reason), Some(retired))
        }
    };
    let adopted = if damaged {
        adopt_orphans(&mut replica, &orphans)?
    } else {
        0
    };
    apply_configured_polls(config, clock, &mut replica, &mut wal)?;
    if damaged || provisional {
        // The whole state as a snapshot under the new actor: the damaged files (kept aside)
        // leave the log, and the next start replays a whole log.
        let written = wal.write_snapshot(state_entries(&replica))?;
        tracing::warn!(
            snapshot = written.number,
            entries = written.entries,
            "damaged log rewritten as a snapshot of everything it held"
        );
    }
    wal.sync()?;
    let vote_ids = replica
        .poll_specs()
        .filter_map(|spec| replica.state(spec.id()))
        .map(|state| state.distinct_vote_ids())
        .sum();
    Ok(Recovered {
        replica,
        wal,
        report: Report {
            wal: wal_report,
            unapplied_entries: unapplied,
            vote_ids,
            retired,
            missing,
            adopted,
        },
        new_incarnation,
    })
}

/// Per poll, the highest seq of `actor` the replica holds durable.
fn durable_through(replica: &Replica, actor: &ActorId) -> Vec<(PollId, Seq)> {
    replica
        .poll_specs()
        .filter_map(|spec| {
            let held = replica.state(spec.id())?.held(actor);
            (held > 0).then(|| (spec.id().clone(), held))
        })
        .collect()
}

/// Records again, under the replica's (new) actor, every vote of `orphans` whose record
/// could not join the state and whose vote ID is held nowhere in it. Returns how many. The
/// records are marked durable without a log append: the caller writes a snapshot of the
/// whole state before serving.
fn adopt_orphans(replica: &mut Replica, orphans: &[RecordBatch]) -> Result<u64, WalError> {
    let mut adopted = 0u64;
    for batch in orphans {
        let held = replica
            .state(batch.poll())
            .map_or(0, |s| s.held(batch.actor()));
        for record in batch.iter().filter(|r| r.seq > held) {
            let mut result =
                replica.adopt(batch.poll(), record.option, record.vote_id, record.second);
            if result == Err(tally_core::AcceptError::Overloaded) {
                settle_in_flight(replica);
                result = replica.adopt(batch.poll(), record.option, record.vote_id, record.second);
            }
            match result {
                Ok(Some(_)) => adopted += 1,
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "a vote after a gap could not be adopted"),
            }
        }
    }
    settle_in_flight(replica);
    Ok(adopted)
}

/// Marks every record in flight durable (start-up only: the snapshot that follows makes
/// them so before anything is acknowledged).
fn settle_in_flight(replica: &mut Replica) {
    for batch in replica.take_unlogged() {
        replica.mark_durable(batch.poll(), batch.last_seq());
    }
}

/// Applies the configured polls (new ones, wider windows, or redefinitions: see
/// [`apply_configured_poll`]), logging each change, and sizes their indexes.
fn apply_configured_polls<S: Storage>(
    config: &Config,
    clock: &dyn Clock,
    replica: &mut Replica,
    wal: &mut Wal<S>,
) -> Result<(), RecoveryError> {
    for spec in config.poll_specs(clock.now())? {
        apply_configured_poll(replica, wal, spec)?;
    }
    // A configured poll new to this log is reserved here; one the log named, during replay.
    for poll in &config.polls {
        reserve_index(replica, poll);
    }
    Ok(())
}

/// Applies one poll of the configuration file, and logs its definition if it changed. The
/// configuration is what the operator means: a poll the log defines with the same options in
/// another order, or with fewer options, takes the configured definition, and its records are
/// renumbered by option *name*, so every vote keeps the option it was cast for (this is how a
/// node whose definition lost the cluster's agreement is healed: fix its configuration,
/// restart it). A configuration that drops an option the log has keeps the logged definition
/// (the option's votes would lose their meaning); that is logged as an error.
fn apply_configured_poll<S: Storage>(
    replica: &mut Replica,
    wal: &mut Wal<S>,
    spec: tally_core::PollSpec,
) -> Result<(), RecoveryError> {
    let id = spec.id().clone();
    let logged = replica.poll_spec(&id).map(|s| s.options().to_vec());
    let names = |options: &[tally_core::OptionName]| {
        let names: Vec<&str> = options.iter().map(|o| o.as_str()).collect();
        format!("[{}]", names.join(", "))
    };
    let configured = names(spec.options());
    match replica.redefine_poll(spec) {
        Ok(true) => {
            if let Some(logged) = logged.filter(|l| names(l) != configured) {
                let records = replica.state(&id).map_or(0, |s| s.records_held());
                tracing::warn!(
                    poll = %id,
                    logged = %names(&logged),
                    %configured,
                    records,
                    "configured poll redefined: its records were renumbered by option name, \
                     so each vote keeps the option it was cast for; peers holding the logged \
                     definition dispute it until every node's configuration agrees"
                );
            }
            if let Some(merged) = replica.poll_spec(&id) {
                wal.append(&[WalEntry::Poll(merged.clone())])?;
            }
        }
        Ok(false) => {}
        Err(error) => tracing::error!(
            %error,
            poll = %id,
            logged = %logged.as_deref().map_or_else(String::new, names),
            %configured,
            "configured poll ignored: the node keeps the logged definition (an option that \
             holds votes cannot be removed; list every logged option, in any order)"
        ),
    }
    Ok(())
}

/// The whole state of `replica` as log entries, in replay order: its identity, then per
/// poll the definition, the index reservation it has, and every record held, in maximal
/// batches. What a snapshot holds.
pub(crate) fn state_entries(replica: &Replica) -> Vec<WalEntry> {
    let mut entries = vec![WalEntry::Identity(replica.actor().clone())];
    let everything = tally_core::VersionVector::default();
    for spec in replica.poll_specs() {
        entries.push(WalEntry::Poll(spec.clone()));
        // The next start sizes the index before refilling it, as it was here.
        let capacity = replica.state(spec.id()).map(|s| s.vote_id_capacity());
        if let Some(capacity) = capacity.filter(|&c| c > 0) {
            entries.push(WalEntry::Reserve {
                poll: spec.id().clone(),
                vote_ids: capacity as u64,
            });
        }
        let batches = replica.missing_records(spec.id(), &everything, usize::MAX);
        entries.extend(batches.into_iter().map(WalEntry::Records));
    }
    entries
}

#[cfg(test)]
mod tests {
    use tally_core::{NodeId, OptionName, PollSpec, PollWindow};

    use crate::config::PollConfig;

    use super::*;

    #[test]
    fn replay_reserves_a_configured_poll_as_soon_as_the_log_names_it() {
        // Goal: a restart fills a reserved index without growing it (each growth rehashes
        // every ID held). Method: replay an identity and a poll entry, as a log begins, and
        // read the index's capacity before any record arrives.
        let poll = |id: &str, expected_votes| PollConfig {
            id: id.into(),
            options: vec!["green".into(), "blue".into()],
            open: true,
            opens_at: None,
            duration_seconds: None,
            expected_votes,
        };
        let configured = [poll("big", Some(50_000)), poll("small", None)];
        let actor = ActorId {
            node: NodeId::new("local").unwrap(),
            incarnation: 1,
        };
        let mut replay = Replay::new([1; 4], &configured, actor.node.clone(), 9, BTreeMap::new());
        replay.apply(WalEntry::Identity(actor));
        for id in ["big", "small", "unconfigured"] {
            let spec = PollSpec::new(
                PollId::new(id).unwrap(),
                vec![
                    OptionName::new("green").unwrap(),
                    OptionName::new("blue").unwrap(),
                ],
                PollWindow::default(),
            )
            .unwrap();
            replay.apply(WalEntry::Poll(spec));
        }
        let (replica, _, _, unapplied) = replay.into_parts();
        assert_eq!(unapplied, 0);
        let replica = replica.unwrap();
        let capacity = |id: &str| {
            replica
                .state(&PollId::new(id).unwrap())
                .unwrap()
                .vote_id_capacity()
        };
        assert!(capacity("big") >= 50_000, "{}", capacity("big"));
        assert!(capacity("small") < 1_000, "{}", capacity("small"));
        assert!(capacity("unconfigured") < 1_000);
    }

    #[test]
    fn replay_reserves_what_a_reserve_entry_names_and_refuses_one_for_an_unknown_poll() {
        // Goal: a reservation made through the admin API (or kept by a snapshot) outlives a
        // restart, and a reserve entry the replica cannot apply is reported, not fatal.
        // Method: replay identity, poll, reserve entries for it and for a poll never defined.
        let actor = ActorId {
            node: NodeId::new("local").unwrap(),
            incarnation: 1,
        };
        let id = PollId::new("admin-made").unwrap();
        let spec = PollSpec::new(
            id.clone(),
            vec![OptionName::new("x").unwrap(), OptionName::new("y").unwrap()],
            PollWindow::default(),
        )
        .unwrap();
        let mut replay = Replay::new([1; 4], &[], actor.node.clone(), 9, BTreeMap::new());
        for entry in [
            WalEntry::Identity(actor),
            WalEntry::Poll(spec),
            WalEntry::Reserve {
                poll: id.clone(),
                vote_ids: 40_000,
            },
        ] {
            replay.apply(entry);
        }
        let unknown = WalEntry::Reserve {
            poll: PollId::new("never-defined").unwrap(),
            vote_ids: 10,
        };
        replay.apply(unknown);
        let (replica, _, _, unapplied) = replay.into_parts();
        assert_eq!(
            unapplied, 1,
            "the reservation of an unknown poll is not applied"
        );
        let capacity = replica.unwrap().state(&id).unwrap().vote_id_capacity();
        assert!(capacity >= 40_000, "{capacity}");
    }
}
