//! Replaying log entries into a replica: the identity entries that say which actor writes
//! the log, the records that cannot join the state because damage cut their actor's seqs
//! (kept to name what is missing and to be adopted), and the void records a switch to a new
//! incarnation left in a log job.
//!
//! What it promises: replaying a log gives the replica the state the node had when it last
//! wrote it, every entry in order; an entry it cannot apply is counted and named, never
//! fatal; records of a retired actor that a later [`WalEntry::Incarnation`] voids are left
//! out once the voids are known (a second pass, see [`Replay::voided`]).

use std::collections::BTreeMap;
use std::fmt;

use tally_core::{ActorId, NodeId, PollId, PollSpec, RecordBatch, Replica, Seq};

use crate::config::PollConfig;
use crate::wal::WalEntry;

/// Missing-seq ranges named per actor in a message; the rest are counted.
const MISSING_RANGES_SHOWN_MAX: usize = 8;

/// Replays entries into a replica, one at a time.
pub(super) struct Replay<'c> {
    replica: Option<Replica>,
    hash_seed: [u64; 4],
    configured: &'c [PollConfig],
    node: NodeId,
    /// The incarnation a replica takes if entries come before any identity entry (damage
    /// took it): the new incarnation the node would begin anyway.
    fresh_incarnation: u64,
    /// Whether the replica's actor is that fresh one (no identity entry was read first).
    provisional: bool,
    /// Entries that could not be applied.
    pub(super) unapplied: usize,
    /// Batches that could not all join the state when read (a gap in their actor's seqs),
    /// for naming what is missing and adopting their votes. At most the log's own size.
    orphans: Vec<RecordBatch>,
    /// Voids learned from incarnation entries: records of the retired actor, read before
    /// that entry, above the seq it names per poll.
    voids: BTreeMap<ActorId, BTreeMap<PollId, Seq>>,
    /// Voids in force for this pass (known up front), each until its entry is read.
    in_force: BTreeMap<ActorId, BTreeMap<PollId, Seq>>,
    /// A record this pass applied is void by a later incarnation entry.
    voided_applied: bool,
}

impl<'c> Replay<'c> {
    pub(super) fn new(
        hash_seed: [u64; 4],
        configured: &'c [PollConfig],
        node: NodeId,
        fresh_incarnation: u64,
        voids: BTreeMap<ActorId, BTreeMap<PollId, Seq>>,
    ) -> Self {
        Self {
            replica: None,
            hash_seed,
            configured,
            node,
            fresh_incarnation,
            provisional: false,
            unapplied: 0,
            orphans: Vec::new(),
            in_force: voids,
            voids: BTreeMap::new(),
            voided_applied: false,
        }
    }

    /// Applies one entry; one it cannot apply is counted and logged.
    pub(super) fn apply(&mut self, entry: WalEntry) {
        if let Err(why) = self.try_apply(entry) {
            self.unapplied += 1;
            tracing::warn!(%why, "log entry not applied");
        }
    }

    /// If this pass applied records that a later incarnation entry voids, the voids to
    /// replay again with ([`Replay::new`]); the caller replays the log once more.
    pub(super) fn voided(&self) -> Option<BTreeMap<ActorId, BTreeMap<PollId, Seq>>> {
        self.voided_applied.then(|| self.voids.clone())
    }

    /// The replica, and whether its actor is the fresh incarnation (no identity was read).
    pub(super) fn into_parts(self) -> (Option<Replica>, bool, Vec<RecordBatch>, usize) {
        (self.replica, self.provisional, self.orphans, self.unapplied)
    }

    /// Creates the replica if this is the first entry: of the actor an identity entry names,
    /// or (damage took the identity) provisionally of the fresh incarnation.
    fn ensure_replica(&mut self, first: &WalEntry) {
        if self.replica.is_some() {
            return;
        }
        let actor = match first {
            WalEntry::Identity(actor) | WalEntry::Incarnation { actor, .. } => actor.clone(),
            _ => {
                self.provisional = true;
                ActorId {
                    node: self.node.clone(),
                    incarnation: self.fresh_incarnation,
                }
            }
        };
        self.replica = Some(Replica::new(actor, self.hash_seed));
    }

    fn try_apply(&mut self, entry: WalEntry) -> Result<(), String> {
        self.ensure_replica(&entry);
        let Some(replica) = self.replica.as_mut() else {
            unreachable!("created above")
        };
        match entry {
            WalEntry::Identity(actor) => switch_to(replica, actor),
            WalEntry::Incarnation {
                actor,
                retired,
                durable_through,
            } => {
                let through: BTreeMap<PollId, Seq> = durable_through.into_iter().collect();
                let voided = replica.poll_specs().any(|spec| {
                    let held = replica.state(spec.id()).map_or(0, |s| s.held(&retired));
                    held > through.get(spec.id()).copied().unwrap_or(0)
                });
                switch_to(replica, actor)?;
                self.voided_applied |= voided;
                self.in_force.remove(&retired);
                self.voids.insert(retired, through);
                Ok(())
            }
            WalEntry::Poll(spec) => {
                let id = spec.id().clone();
                let before = replica.poll_spec(&id).cloned();
                // A later definition with other options is a redefinition the configuration
                // made (`apply_configured_poll`): the records before it are renumbered by
                // option name again, and so are the orphans kept to be adopted.
                replica.redefine_poll(spec).map_err(|e| e.to_string())?;
                if let (Some(before), Some(after)) = (before, replica.poll_spec(&id)) {
                    if before.options() != after.options() {
                        remap_orphans(&mut self.orphans, &before, after);
                    }
                }
                for poll in self.configured.iter().filter(|p| p.id == id.as_str()) {
                    crate::reservation::reserve_index(replica, poll);
                }
                Ok(())
            }
            WalEntry::Records(batch) => {
                let batch = match self.in_force.get(batch.actor()) {
                    Some(through) => {
                        let through = through.get(batch.poll()).copied().unwrap_or(0);
                        match keep_through(&batch, through) {
                            Some(kept) => kept,
                            None => return Ok(()),
                        }
                    }
                    None => batch,
                };
                let applied = replica.recover_records(&batch).map_err(|e| e.to_string())?;
                if applied.held_back > 0 || applied.refused > 0 {
                    self.orphans.push(batch);
                }
                Ok(())
            }
            WalEntry::Reserve { poll, vote_ids } => {
                crate::reservation::reserve_vote_ids(replica, &poll, vote_ids, None)
                    .map(drop)
                    .map_err(|e| format!("reserving the index of {poll}: {e}"))
            }
        }
    }
}

/// Makes `actor` the replica's own: nothing if it is already; a new incarnation of the same
/// node otherwise (the log says the node moved to it; the earlier actor's records stay).
fn switch_to(replica: &mut Replica, actor: ActorId) -> Result<(), String> {
    if &actor == replica.actor() {
        return Ok(());
    }
    if actor.node != replica.actor().node {
        return Err(format!(
            "log names actor {actor} of another node after {}",
            replica.actor()
        ));
    }
    tracing::info!(from = %replica.actor(), to = %actor, "log moves to a new incarnation");
    replica.begin_incarnation(actor);
    Ok(())
}

/// Gives the orphans of the poll `before` defined the option indexes `after` gives the same
/// option names (a redefinition keeps every option, so each name is found).
fn remap_orphans(orphans: &mut [RecordBatch], before: &PollSpec, after: &PollSpec) {
    for orphan in orphans.iter_mut().filter(|o| o.poll() == before.id()) {
        let mut remapped = RecordBatch::new(
            orphan.poll().clone(),
            orphan.actor().clone(),
            orphan.first_seq(),
        );
        for record in orphan.iter() {
            let option = before
                .options()
                .get(record.option.get())
                .and_then(|name| after.option_index(name.as_str()))
                .unwrap_or(record.option);
            remapped.push(record.vote_id, option, record.second);
        }
        *orphan = remapped;
    }
}

/// The records of `batch` with seqs up to `through`, if any.
fn keep_through(batch: &RecordBatch, through: Seq) -> Option<RecordBatch> {
    if batch.first_seq() > through {
        return None;
    }
    let mut kept = RecordBatch::new(
        batch.poll().clone(),
        batch.actor().clone(),
        batch.first_seq(),
    );
    for record in batch.iter().take_while(|r| r.seq <= through) {
        kept.push(record.vote_id, record.option, record.second);
    }
    Some(kept)
}

/// The seqs of one actor in one poll that the log's valid entries show it lacks: gaps
/// before records it holds past a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSeqs {
    /// The poll.
    pub poll: PollId,
    /// The actor.
    pub actor: ActorId,
    /// Inclusive ranges of seqs missing, in order.
    pub ranges: Vec<(Seq, Seq)>,
}

impl MissingSeqs {
    /// How many seqs are missing.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }
}

impl fmt::Display for MissingSeqs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "poll {} actor {}: seqs ", self.poll, self.actor)?;
        for (i, (first, last)) in self
            .ranges
            .iter()
            .take(MISSING_RANGES_SHOWN_MAX)
            .enumerate()
        {
            let comma = if i > 0 { ", " } else { "" };
            if first == last {
                write!(f, "{comma}{first}")?;
            } else {
                write!(f, "{comma}{first}..={last}")?;
            }
        }
        if self.ranges.len() > MISSING_RANGES_SHOWN_MAX {
            write!(
                f,
                " and {} more range(s)",
                self.ranges.len() - MISSING_RANGES_SHOWN_MAX
            )?;
        }
        write!(f, " ({} records)", self.count())
    }
}

/// Per poll and actor, the seqs missing before the orphan records the replica could not
/// take (those above what it holds of their actor).
pub(super) fn missing_seqs(replica: &Replica, orphans: &[RecordBatch]) -> Vec<MissingSeqs> {
    let mut present: BTreeMap<(PollId, ActorId), Vec<(Seq, Seq)>> = BTreeMap::new();
    for batch in orphans.iter().filter(|b| !b.is_empty()) {
        let key = (batch.poll().clone(), batch.actor().clone());
        present
            .entry(key)
            .or_default()
            .push((batch.first_seq(), batch.last_seq()));
    }
    let mut missing = Vec::new();
    for ((poll, actor), mut ranges) in present {
        let held = replica.state(&poll).map_or(0, |s| s.held(&actor));
        ranges.sort_unstable();
        let mut next = held + 1;
        let mut gaps = Vec::new();
        for (first, last) in ranges {
            if last < next {
                continue;
            }
            if first > next {
                gaps.push((next, first - 1));
            }
            next = next.max(last + 1);
        }
        if !gaps.is_empty() {
            missing.push(MissingSeqs {
                poll,
                actor,
                ranges: gaps,
            });
        }
    }
    missing
}
