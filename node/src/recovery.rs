//! Start-up: rebuild the replica from the write-ahead log, or begin a new incarnation.
//!
//! The log's first entry names the actor that wrote it. A node whose disk holds no log is a
//! new incarnation: it draws a fresh incarnation number from the seeded RNG and logs it (and
//! fsyncs) before serving, so it never reuses an old actor's counters or seqs (DESIGN.md §2).

use std::fmt;

use rand::{RngCore, SeedableRng};
use tally_core::{ActorId, PollError, PollId, Replica};

use crate::Clock;
use crate::config::{Config, PollConfig, Validated};
use crate::storage::Storage;
use crate::wal::{RecoveryReport, Wal, WalEntry, WalError};

/// Why start-up failed. The log was not changed.
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
    /// The configured polls could not be built.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A recovered node, ready to serve.
pub struct Recovered<S: Storage> {
    /// The replica, holding everything the log held.
    pub replica: Replica,
    /// The log, positioned to append.
    pub wal: Wal<S>,
    /// What recovery found.
    pub report: Report,
    /// Whether this start began a new incarnation (empty disk).
    pub new_incarnation: bool,
}

/// What recovery found, for the start-up log line.
#[derive(Debug)]
pub struct Report {
    /// The log's own report (entries, bytes, any torn tail).
    pub wal: RecoveryReport,
    /// Entries that could not be applied (each is logged as a warning).
    pub unapplied_entries: usize,
    /// Distinct vote IDs held after recovery, over all polls.
    pub vote_ids: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {} vote IDs held; {} entries not applied",
            self.wal, self.vote_ids, self.unapplied_entries
        )
    }
}

/// Replays `storage`'s log into a replica (see the module doc).
pub fn recover<S: Storage>(
    config: &Config,
    validated: &Validated,
    storage: S,
    clock: &dyn Clock,
    rng_seed: u64,
) -> Result<Recovered<S>, RecoveryError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
    let hash_seed = [
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
    ];
    let mut replica: Option<Replica> = None;
    let mut unapplied = 0usize;
    let (mut wal, wal_report) = Wal::open(storage, |entry| {
        if let Err(why) = replay(&mut replica, entry, hash_seed, &config.polls) {
            unapplied += 1;
            tracing::warn!(%why, "log entry not applied");
        }
    })?;
    let new_incarnation = replica.is_none();
    let mut replica = match replica {
        Some(replica) => replica,
        None => {
            let drawn = rng.next_u64();
            let reuse =
                config.planted_bug == Some(crate::config::PlantedBug::ReuseActorAfterDiskLoss);
            let actor = ActorId {
                node: validated.node_id.clone(),
                incarnation: if reuse { 1 } else { drawn },
            };
            wal.append(&[WalEntry::Identity(actor.clone())])?;
            Replica::new(actor, hash_seed)
        }
    };
    if replica.actor().node != validated.node_id {
        return Err(RecoveryError::WrongNode {
            found: replica.actor().node.to_string(),
            configured: validated.node_id.to_string(),
        });
    }
    for spec in config.poll_specs(clock.now())? {
        apply_configured_poll(&mut replica, &mut wal, spec)?;
    }
    // A configured poll new to this log is reserved here; one the log named, during replay.
    for poll in &config.polls {
        reserve_index(&mut replica, poll);
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
        },
        new_incarnation,
    })
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

/// Sizes a configured poll's dedupe index for its `expected_votes`, if it is not that large
/// yet. Replay calls it as soon as the log names the poll, before the poll's records, so a
/// restart fills the index without growing it (each growth rehashes every ID held).
fn reserve_index(replica: &mut Replica, poll: &PollConfig) {
    let Some(expected) = poll.expected_votes else {
        return;
    };
    let Ok(id) = PollId::new(poll.id.clone()) else {
        return;
    };
    let _ = reserve_vote_ids(replica, &id, expected, None);
}

/// Sizes `poll`'s dedupe index for `expected` vote IDs if it holds fewer, and logs it when it
/// grew. `Ok(true)`: it grew. Start-up, replay and the admin API all reserve through this.
pub(crate) fn reserve_vote_ids(
    replica: &mut Replica,
    poll: &PollId,
    expected: u64,
    prepared: Option<tally_core::ReservedIndex>,
) -> Result<bool, PollError> {
    let wanted = usize::try_from(expected).unwrap_or(usize::MAX);
    let before = replica.state(poll).map(|s| s.vote_id_capacity());
    replica.reserve_vote_ids_with(poll, wanted, prepared)?;
    let capacity = replica.state(poll).map_or(0, |s| s.vote_id_capacity());
    let grew = before != Some(capacity);
    if grew {
        tracing::info!(%poll, expected, capacity, "dedupe index reserved");
    }
    Ok(grew)
}

fn replay(
    replica: &mut Option<Replica>,
    entry: WalEntry,
    hash_seed: [u64; 4],
    configured: &[PollConfig],
) -> Result<(), String> {
    match (entry, replica.as_mut()) {
        (WalEntry::Identity(actor), None) => {
            *replica = Some(Replica::new(actor, hash_seed));
            Ok(())
        }
        (WalEntry::Identity(actor), Some(existing)) if &actor == existing.actor() => Ok(()),
        (WalEntry::Identity(actor), Some(existing)) => Err(format!(
            "log names actor {actor} after {}",
            existing.actor()
        )),
        (_, None) => Err("log entry before the identity entry".into()),
        (WalEntry::Poll(spec), Some(replica)) => {
            let id = spec.id().clone();
            // A later definition with other options is a redefinition the configuration made
            // (`apply_configured_poll`): the records before it are renumbered by name again.
            replica.redefine_poll(spec).map_err(|e| e.to_string())?;
            for poll in configured.iter().filter(|p| p.id == id.as_str()) {
                reserve_index(replica, poll);
            }
            Ok(())
        }
        (WalEntry::Records(batch), Some(replica)) => replica
            .recover_records(&batch)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        (WalEntry::Reserve { poll, vote_ids }, Some(replica)) => {
            reserve_vote_ids(replica, &poll, vote_ids, None)
                .map(drop)
                .map_err(|e| format!("reserving the index of {poll}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use tally_core::{NodeId, OptionName, PollSpec, PollWindow};

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
            duration_seconds: None,
            expected_votes,
        };
        let configured = [poll("big", Some(50_000)), poll("small", None)];
        let actor = ActorId {
            node: NodeId::new("local").unwrap(),
            incarnation: 1,
        };
        let mut replica = None;
        replay(&mut replica, WalEntry::Identity(actor), [1; 4], &configured).unwrap();
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
            replay(&mut replica, WalEntry::Poll(spec), [1; 4], &configured).unwrap();
        }
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
        let mut replica = None;
        for entry in [
            WalEntry::Identity(actor),
            WalEntry::Poll(spec),
            WalEntry::Reserve {
                poll: id.clone(),
                vote_ids: 40_000,
            },
        ] {
            replay(&mut replica, entry, [1; 4], &[]).unwrap();
        }
        let unknown = WalEntry::Reserve {
            poll: PollId::new("never-defined").unwrap(),
            vote_ids: 10,
        };
        let why = replay(&mut replica, unknown, [1; 4], &[]).unwrap_err();
        assert!(why.contains("never-defined"), "{why}");
        let capacity = replica.unwrap().state(&id).unwrap().vote_id_capacity();
        assert!(capacity >= 40_000, "{capacity}");
    }
}
