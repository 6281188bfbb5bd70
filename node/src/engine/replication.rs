//! Replicated acks (`ack_mode = "replicated"`, DESIGN.md §4): a vote is answered `counted`
//! only once its record is durable on this node *and* on at least one ack peer, so losing
//! this node's whole disk loses no acknowledged vote.
//!
//! How: a reply whose log job is durable ([`super::Engine::answer_durable`]) is answered at
//! once if an ack peer has already confirmed the record it waits for (each waiter names the
//! highest seq of this node's actor in its poll that must be confirmed: its own record's, or
//! for a duplicate the record it duplicates, or conservatively every own record of the poll);
//! otherwise it waits here. The push sessions (`peer::sync::push`) ask the engine for this node's
//! own records as they become durable ([`Command::OwnRecordsToPush`]), push them to the ack
//! peers, and report each peer's confirmation ([`Command::PeerConfirmed`]: every record of
//! this actor in a poll up to a seq is fsynced there). A confirmation answers every waiter it
//! covers. The other side of a push lives here too: records a peer pushes are merged and
//! logged like a pull answer's, and confirmed once the log job holding them is durable
//! ([`Command::PushedRecords`]).
//!
//! What a waiter that no ack peer confirms gets, after `ack_timeout_ms` (or at once, when the
//! last ack peer's session ends): with `ack_fallback = "refuse"`, [`EngineError::NotReplicated`]
//! (503 + `Retry-After`: not acknowledged; the record is durable here and may still be
//! counted, so the client's retry with the same vote ID is answered `duplicate` once
//! replicated); with `ack_fallback = "local"`, its answer as under `local` acks. Either way
//! it is counted in `tally_ack_peer_misses_total`. With `refuse` and no ack peer connected,
//! [`Hold::AckPeerDown`] refuses new votes at the door (nothing logged).
//!
//! Bounds: at most [`PEER_WAITING_VOTES_MAX`] votes wait for ack peers; past it new votes are
//! shed (429-like 503 `overloaded`, nothing counted) until confirmations or the deadline drain
//! the queue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tally_core::wire::PushAck;
use tally_core::{ActorId, DefinitionDigest, NodeId, PollId, RecordBatch, Seq};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{BatchVoteAck, Engine, EngineError, Pending, Reply, Waiter, answer};
use crate::config::AckFallback;
use crate::health::Hold;
use crate::wal::WalEntry;

/// Most votes waiting for an ack peer's confirmation (after their local fsync); new votes
/// past it are shed as overloaded.
pub const PEER_WAITING_VOTES_MAX: usize = 1 << 20;

/// Most records one [`Command::OwnRecordsToPush`] answer carries.
pub const PUSH_RECORDS_PER_ASK_MAX: usize = 65_536;

/// What `ack_mode = "replicated"` needs to know.
#[derive(Debug, Clone)]
pub struct AckSettings {
    /// The peers whose confirmation completes an ack.
    pub peers: BTreeSet<NodeId>,
    /// How long a locally durable vote waits for one.
    pub timeout: Duration,
    /// What it gets if none confirms in time.
    pub fallback: AckFallback,
    /// Bumped whenever records of this node's own actor become durable: the push sessions
    /// wake on it.
    pub durable: watch::Sender<u64>,
}

/// How far a push session has pushed this node's records (per poll, of one actor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCursor {
    /// The actor whose records were pushed.
    pub actor: ActorId,
    /// The last seq pushed, per poll.
    pub through: BTreeMap<PollId, Seq>,
}

/// The answer to [`Command::OwnRecordsToPush`].
#[derive(Debug, Clone)]
pub struct OwnRecords {
    /// Where the session stands after pushing these.
    pub cursor: PushCursor,
    /// The records, each with this node's definition of its poll.
    pub pushes: Vec<(DefinitionDigest, RecordBatch)>,
    /// Whether more durable records remain to push (the answer hit its budget).
    pub more: bool,
}

/// Commands of replicated acks (a part of [`super::Command`]).
pub enum AckCommand {
    /// A push session asks for this node's durable records after `after` (`None`, or another
    /// actor's cursor: from what no ack peer has confirmed yet).
    OwnRecordsToPush {
        /// Where the session stands.
        after: Option<PushCursor>,
        /// Answered at once.
        reply: Reply<OwnRecords>,
    },
    /// An ack peer confirmed records of this node.
    PeerConfirmed {
        /// The peer.
        peer: NodeId,
        /// What it holds durably.
        ack: PushAck,
    },
    /// A peer pushed records of its own: merge and log them, answer once durable.
    PushedRecords {
        /// The peer's definition of the poll.
        definition: DefinitionDigest,
        /// The records.
        batch: RecordBatch,
        /// Answered once the log job holding them is durable.
        reply: Reply<PushAck>,
    },
    /// A push session with `peer` came up (`up`) or ended.
    Session {
        /// The peer.
        peer: NodeId,
        /// Whether it is up.
        up: bool,
    },
}

/// A reply durable here, waiting for an ack peer.
struct PeerWaiter {
    deadline: Instant,
    since: Instant,
    poll: PollId,
    need: Seq,
    pending: Pending,
}

/// The engine's state of replicated acks.
pub(super) struct Replication {
    settings: AckSettings,
    /// The actor `confirmed` is about.
    actor: ActorId,
    /// Per poll, the highest seq of `actor` an ack peer confirmed (at start: what the log
    /// held, which no reply waits for).
    confirmed: BTreeMap<PollId, Seq>,
    /// Push sessions up, per ack peer.
    sessions: BTreeMap<NodeId, usize>,
    waiting: VecDeque<PeerWaiter>,
    waiting_votes: usize,
    /// A planted bug: take records as confirmed as soon as they are handed to the pushes.
    confirm_on_push: bool,
}

impl Replication {
    fn connected(&self) -> bool {
        self.sessions.values().any(|&n| n > 0)
    }

    fn covers(&self, actor: &ActorId, poll: &PollId, need: Seq) -> bool {
        need == 0 || (actor == &self.actor && self.confirmed.get(poll).is_some_and(|&s| s >= need))
    }
}

fn votes_of(pending: &Pending) -> usize {
    match pending {
        Pending::Vote(..) => 1,
        Pending::Batch(_, acks, _) => acks
            .iter()
            .filter(|a| matches!(a, BatchVoteAck::Ack(_)))
            .count(),
        Pending::Poll(..) | Pending::Pushed(..) => 0,
    }
}

impl Engine {
    /// Turns on replicated acks (see the module doc).
    pub fn replicate_acks(&mut self, settings: AckSettings) {
        let actor = self.replica.actor().clone();
        let confirmed = self
            .replica
            .poll_specs()
            .filter_map(|spec| {
                let held = self.replica.state(spec.id())?.held(&actor);
                Some((spec.id().clone(), held))
            })
            .collect();
        self.health
            .set(Hold::AckPeerDown, settings.fallback == AckFallback::Refuse);
        self.replication = Some(Replication {
            settings,
            actor,
            confirmed,
            sessions: BTreeMap::new(),
            waiting: VecDeque::new(),
            waiting_votes: 0,
            confirm_on_push: false,
        });
    }

    /// **A planted bug, for the simulation's checker tests only**
    /// ([`crate::planted::PlantedBug::AckBeforePeerFsync`]): records are taken as confirmed
    /// as soon as a push session takes them, before any ack peer has them on disk.
    #[doc(hidden)]
    pub fn plant_bug_ack_before_peer_fsync(&mut self) {
        if let Some(replication) = &mut self.replication {
            replication.confirm_on_push = true;
        }
    }

    /// Whether a reply needing `need` (a seq of the current actor in `poll`) must wait for
    /// an ack peer.
    pub(super) fn needs_peer(&self, poll: &PollId, need: Seq) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| !r.covers(self.replica.actor(), poll, need))
    }

    /// Under replicated acks, the seq a duplicate of a durable record must see confirmed:
    /// every own record of the poll (the one it duplicates is among them). 0 otherwise.
    pub(super) fn duplicate_need(&self, poll: &PollId) -> Seq {
        if self.replication.is_none() {
            return 0;
        }
        self.replica
            .state(poll)
            .map_or(0, |s| s.held(self.replica.actor()))
    }

    /// Sheds a new vote while too many wait for ack peers.
    pub(super) fn peer_queue_full(&self) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| r.waiting_votes >= PEER_WAITING_VOTES_MAX)
    }

    /// A reply whose log job is durable: answered now, or held for an ack peer.
    pub(super) fn answer_when_replicated(&mut self, waiter: Waiter) {
        let Some(poll) = waiter.pending.poll().cloned() else {
            return answer(waiter.pending);
        };
        if !self.needs_peer(&poll, waiter.need) {
            return answer(waiter.pending);
        }
        let Some(replication) = &mut self.replication else {
            return answer(waiter.pending);
        };
        if !replication.connected() {
            // Only `local` fallback gets here (`refuse` holds votes at the door), or a vote
            // accepted just before the last session ended.
            return self.miss(waiter.pending, "disconnected");
        }
        let now = Instant::now();
        replication.waiting_votes += votes_of(&waiter.pending);
        replication.waiting.push_back(PeerWaiter {
            deadline: now + replication.settings.timeout,
            since: now,
            poll,
            need: waiter.need,
            pending: waiter.pending,
        });
    }

    /// An answer no ack peer confirmed: refused or acknowledged locally, and counted.
    fn miss(&self, pending: Pending, cause: &'static str) {
        let Some(replication) = &self.replication else {
            return answer(pending);
        };
        let votes = votes_of(&pending) as u64;
        match replication.settings.fallback {
            AckFallback::Local => {
                self.metrics.acks.count_misses("local", cause, votes);
                answer(pending);
            }
            AckFallback::Refuse => {
                self.metrics.acks.count_misses("refused", cause, votes);
                refuse(pending, EngineError::NotReplicated);
            }
        }
    }

    /// When the oldest waiter's deadline passes (`None`: nothing waits).
    pub(super) fn peer_deadline(&self) -> Option<Instant> {
        self.replication
            .as_ref()?
            .waiting
            .front()
            .map(|w| w.deadline)
    }

    /// Gives up on every waiter whose deadline has passed.
    pub(super) fn expire_peer_waiters(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        if let Some(replication) = &mut self.replication {
            while replication
                .waiting
                .front()
                .is_some_and(|w| w.deadline <= now)
            {
                if let Some(waiter) = replication.waiting.pop_front() {
                    replication.waiting_votes -= votes_of(&waiter.pending);
                    expired.push(waiter.pending);
                }
            }
        }
        if !expired.is_empty() {
            tracing::warn!(
                replies = expired.len(),
                "no ack peer confirmed these votes' records within ack_timeout_ms"
            );
        }
        for pending in expired {
            self.miss(pending, "timeout");
        }
    }

    /// Handles one command of replicated acks.
    pub(super) fn handle_ack_command(&mut self, command: AckCommand) {
        match command {
            AckCommand::OwnRecordsToPush { after, reply } => {
                drop(reply.send(Ok(self.own_records_to_push(after))));
            }
            AckCommand::PeerConfirmed { peer, ack } => self.peer_confirmed(&peer, &ack),
            AckCommand::PushedRecords {
                definition,
                batch,
                reply,
            } => self.pushed_records(definition, batch, reply),
            AckCommand::Session { peer, up } => self.ack_session(peer, up),
        }
    }

    fn own_records_to_push(&mut self, after: Option<PushCursor>) -> OwnRecords {
        let actor = self.replica.actor().clone();
        let mut cursor = match (after, &self.replication) {
            (Some(cursor), _) if cursor.actor == actor => cursor,
            (_, Some(replication)) if replication.actor == actor => PushCursor {
                actor: actor.clone(),
                through: replication.confirmed.clone(),
            },
            _ => PushCursor {
                actor: actor.clone(),
                through: BTreeMap::new(),
            },
        };
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
            for batch in state.records_of(&actor, from, budget) {
                budget -= batch.len();
                cursor.through.insert(spec.id().clone(), batch.last_seq());
                pushes.push((definition, batch));
            }
        }
        let records: usize = pushes.iter().map(|(_, b)| b.len()).sum();
        self.metrics.acks.records_pushed.inc_by(records as u64);
        if self.replication.as_ref().is_some_and(|r| r.confirm_on_push) {
            // The planted bug: as if an ack peer had confirmed what was merely handed out.
            for (_, batch) in &pushes {
                let ack = PushAck {
                    poll: batch.poll().clone(),
                    actor: actor.clone(),
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

    fn peer_confirmed(&mut self, peer: &NodeId, ack: &PushAck) {
        let is_ack_peer = self
            .replication
            .as_ref()
            .is_some_and(|r| r.settings.peers.contains(peer));
        if is_ack_peer {
            self.confirm(ack);
        }
    }

    /// Notes what an ack peer holds durably and answers every waiter it covers.
    fn confirm(&mut self, ack: &PushAck) {
        let actor = self.replica.actor().clone();
        let Some(replication) = &mut self.replication else {
            return;
        };
        if ack.actor != actor {
            return;
        }
        if replication.actor != actor {
            // This node moved to a new incarnation: confirmations start afresh.
            replication.actor = actor.clone();
            replication.confirmed.clear();
        }
        let confirmed = replication.confirmed.entry(ack.poll.clone()).or_default();
        if ack.durable_through <= *confirmed {
            return;
        }
        *confirmed = ack.durable_through;
        let now = Instant::now();
        let mut still = VecDeque::with_capacity(replication.waiting.len());
        let mut answered = Vec::new();
        for waiter in replication.waiting.drain(..) {
            if waiter.poll == ack.poll && waiter.need <= ack.durable_through {
                answered.push(waiter);
            } else {
                still.push_back(waiter);
            }
        }
        replication.waiting = still;
        for waiter in answered {
            replication.waiting_votes -= votes_of(&waiter.pending);
            self.metrics
                .acks
                .peer_wait_seconds
                .observe(now.duration_since(waiter.since).as_secs_f64());
            answer(waiter.pending);
        }
    }

    /// Merges and logs a peer's pushed records; the reply waits for the log job.
    fn pushed_records(
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
        self.wait(Pending::Pushed(reply, ack), 0);
    }

    fn ack_session(&mut self, peer: NodeId, up: bool) {
        let Some(replication) = &mut self.replication else {
            return;
        };
        if !replication.settings.peers.contains(&peer) {
            return;
        }
        let sessions = replication.sessions.entry(peer.clone()).or_default();
        if up {
            *sessions += 1;
        } else {
            *sessions = sessions.saturating_sub(1);
        }
        let connected = replication.connected();
        let refuse = replication.settings.fallback == AckFallback::Refuse;
        let count = replication.sessions.values().filter(|&&n| n > 0).count();
        self.metrics.acks.peers_connected.set(count as i64);
        self.health.set(Hold::AckPeerDown, refuse && !connected);
        if connected {
            return;
        }
        tracing::warn!(%peer, "no ack peer is connected: votes cannot be replicated");
        // Nobody will confirm what waits: answer it now rather than at the deadline.
        let waiting: Vec<PeerWaiter> = replication.waiting.drain(..).collect();
        replication.waiting_votes = 0;
        for waiter in waiting {
            self.miss(waiter.pending, "disconnected");
        }
    }

    /// Wakes the push sessions: records of this node's actor became durable.
    pub(super) fn notify_pushes(&self) {
        if let Some(replication) = &self.replication {
            replication.settings.durable.send_modify(|n| *n += 1);
        }
    }

    /// Records of this node's own actor not yet confirmed by an ack peer, for the lag gauge.
    pub(super) fn observe_peer_lag(&self) {
        let Some(replication) = &self.replication else {
            return;
        };
        let actor = self.replica.actor();
        let lag: u64 = self
            .replica
            .poll_specs()
            .filter_map(|spec| {
                let held = self.replica.state(spec.id())?.held(actor);
                let confirmed = if &replication.actor == actor {
                    replication.confirmed.get(spec.id()).copied().unwrap_or(0)
                } else {
                    0
                };
                Some(held.saturating_sub(confirmed))
            })
            .sum();
        self.metrics.acks.peer_lag_records.set(lag as i64);
    }

    /// The log failed: every reply waiting for an ack peer is refused too.
    pub(super) fn fail_peer_waiters(&mut self) {
        let Some(replication) = &mut self.replication else {
            return;
        };
        replication.waiting_votes = 0;
        for waiter in replication.waiting.drain(..) {
            refuse(waiter.pending, EngineError::LogFailed);
        }
    }
}

/// Answers a held reply with `error`.
pub(super) fn refuse(pending: Pending, error: EngineError) {
    match pending {
        Pending::Vote(reply, ..) => drop(reply.send(Err(error))),
        Pending::Batch(reply, ..) => drop(reply.send(Err(error))),
        Pending::Poll(reply, _) => drop(reply.send(Err(error))),
        Pending::Pushed(reply, _) => drop(reply.send(Err(error))),
    }
}
