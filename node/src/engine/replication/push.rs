//! The pushing side and the receiving side of replicated acks' pushes, in the engine: which of
//! this node's durable records a push session sends next (new records after its cursor, and
//! probes: a record pushed again so the ack peer says what it now holds), and how records a
//! peer pushed are merged, logged and answered once durable.

use std::collections::BTreeMap;

use tally_core::wire::PushAck;
use tally_core::{ActorId, DefinitionDigest, PollId, RecordBatch, Seq};

use super::super::{Engine, Pending, Reply};
use super::{Need, OwnRecords, PUSH_PROBES_PER_ASK_MAX, PUSH_RECORDS_PER_ASK_MAX, PushCursor};
use crate::health::Hold;
use crate::wal::WalEntry;

impl Engine {
    pub(super) fn own_records_to_push(
        &mut self,
        after: Option<PushCursor>,
        probe: bool,
    ) -> OwnRecords {
        let actor = self.replica.actor().clone();
        let Some(replication) = &self.replication else {
            return OwnRecords {
                cursor: PushCursor {
                    actor,
                    through: BTreeMap::new(),
                },
                pushes: Vec::new(),
                more: false,
            };
        };
        // Probes: what waiters need and no ack peer confirmed, and the last unconfirmed own
        // record of each poll, when pushed already (this node's records up to the cursor, or a
        // retired incarnation's); and for a new session, the last record the log held at
        // start-up.
        let mut targets = if probe {
            let held = self.replica.poll_specs().filter_map(|spec| {
                let held = self.replica.state(spec.id())?.held(&actor);
                Some((spec.id().clone(), held))
            });
            replication.unconfirmed_needs(&actor, held)
        } else {
            BTreeMap::new()
        };
        let mut cursor = match after {
            Some(cursor) if cursor.actor == actor => cursor,
            _ => {
                let mut through = BTreeMap::new();
                for spec in self.replica.poll_specs() {
                    let start = replication.push_start(spec.id(), &actor);
                    if start > replication.confirmed(spec.id(), actor.incarnation) {
                        targets.insert((spec.id().clone(), actor.incarnation), start);
                    }
                    through.insert(spec.id().clone(), start);
                }
                PushCursor { actor, through }
            }
        };
        targets.retain(|(poll, incarnation), seq| {
            *incarnation != cursor.actor.incarnation
                || *seq <= cursor.through.get(poll).copied().unwrap_or(0)
        });
        let mut pushes = Vec::new();
        let mut budget = PUSH_RECORDS_PER_ASK_MAX;
        for spec in self.replica.poll_specs() {
            let (Some(state), Some(definition)) = (
                self.replica.state(spec.id()),
                self.replica.definition(spec.id()),
            ) else {
                continue;
            };
            let from = cursor.through.get(spec.id()).copied().unwrap_or(0);
            for batch in state.records_of(&cursor.actor, from, budget) {
                budget -= batch.len();
                cursor.through.insert(spec.id().clone(), batch.last_seq());
                pushes.push((definition, batch));
            }
        }
        let records: usize = pushes.iter().map(|(_, b)| b.len()).sum();
        self.metrics.acks.records_pushed.inc_by(records as u64);
        let probes = self.probes(&cursor.actor, targets);
        self.metrics.acks.probes.inc_by(probes.len() as u64);
        pushes.extend(probes);
        if self.replication.as_ref().is_some_and(|r| r.confirm_on_push) {
            // The planted bug: as if an ack peer had confirmed what was merely handed out.
            for (_, batch) in &pushes {
                let ack = PushAck {
                    poll: batch.poll().clone(),
                    actor: batch.actor().clone(),
                    durable_through: batch.last_seq(),
                };
                self.confirm(&ack);
            }
        }
        OwnRecords {
            cursor,
            pushes,
            more: budget == 0,
        }
    }

    /// One push of the single record each target names (at most [`PUSH_PROBES_PER_ASK_MAX`]).
    fn probes(
        &self,
        actor: &ActorId,
        targets: BTreeMap<(PollId, u64), Seq>,
    ) -> Vec<(DefinitionDigest, RecordBatch)> {
        let mut probes = Vec::new();
        for ((poll, incarnation), seq) in targets.into_iter().take(PUSH_PROBES_PER_ASK_MAX) {
            let (Some(state), Some(definition)) =
                (self.replica.state(&poll), self.replica.definition(&poll))
            else {
                continue;
            };
            let of = ActorId {
                node: actor.node.clone(),
                incarnation,
            };
            let batch = state.records_of(&of, seq - 1, 1);
            probes.extend(batch.into_iter().map(|b| (definition, b)));
        }
        probes
    }

    /// Merges and logs a peer's pushed records; the reply waits for the log job.
    pub(super) fn pushed_records(
        &mut self,
        definition: DefinitionDigest,
        batch: RecordBatch,
        reply: Reply<PushAck>,
    ) {
        let poll = batch.poll().clone();
        let actor = batch.actor().clone();
        let mut ack = PushAck {
            poll: poll.clone(),
            actor: actor.clone(),
            durable_through: 0,
        };
        if self.replica.definition(&poll) != Some(definition) || self.health.has(Hold::DiskLow) {
            // Another definition takes none of its records; a low disk takes no new ones.
            // The pusher's waiters are not covered: they time out there.
            return drop(reply.send(Ok(ack)));
        }
        match self.replica.apply_records(&batch) {
            Ok(applied) => {
                self.metrics
                    .acks
                    .records_confirmed
                    .inc_by(applied.added as u64);
                if applied.added > 0 || applied.held_back > 0 {
                    self.unlogged_entries.push(WalEntry::Records(batch));
                }
            }
            Err(error) => {
                tracing::warn!(%poll, %actor, %error, "pushed records refused");
                return drop(reply.send(Ok(ack)));
            }
        }
        // Every record held now rides the next log job at the latest.
        ack.durable_through = self.replica.state(&poll).map_or(0, |s| s.held(&actor));
        self.wait(Pending::Pushed(reply, ack), Need::default());
    }
}
