//! Replicated acks (`ack_mode = "replicated"`, DESIGN.md §4): a vote is answered `counted`
//! only once its record is durable on this node *and* on at least one ack peer, so losing
//! this node's whole disk loses no acknowledged vote.
//!
//! How: a reply whose log job is durable ([`super::Engine::answer_durable`]) is answered at
//! once if an ack peer has already confirmed the records it waits for (its [`Need`]: per
//! incarnation of this node, the highest seq in its poll that must be confirmed: its own
//! record's, or for a duplicate the record it duplicates, when that record is this node's);
//! otherwise it waits here. The push sessions (`peer::sync::push`) ask the engine for this
//! node's own records as they become durable ([`AckCommand::OwnRecordsToPush`]), push them to
//! the ack peers, and report each peer's confirmation ([`AckCommand::PeerConfirmed`]: every
//! record of an actor of this node in a poll up to a seq is fsynced there). A confirmation
//! answers every waiter it covers. The other side of a push lives here too: records a peer
//! pushes are merged and logged like a pull answer's, and answered once the log job holding
//! them is durable ([`AckCommand::PushedRecords`]); the push journal
//! ([`crate::push_journal`]) answers most pushes before that, from its own fsync, and uses
//! these answers to know what the main log holds.
//!
//! Nothing is taken as confirmed that an ack peer did not confirm to this process: a restart
//! starts with nothing confirmed, and a duplicate of a record made durable before it (the
//! retry of a vote refused with `not_replicated`) waits for a confirmation like a new vote.
//! Confirmations are kept per incarnation, so a reply that waits for a record of a retired
//! incarnation of this node (after a move to a new one) is answered only by a confirmation of
//! that incarnation's records. Pushes start where the log stood at start-up (older records
//! reached the peers by pulls), and a waiter whose records were pushed but not confirmed (the
//! peer lacked older records then, or it was a peer that had not been pushed them, or the
//! records are a retired incarnation's) is served by *probes*: an idle push session asks
//! every [`PUSH_PROBE_INTERVAL`] for the one record each such waiter needs and pushes it
//! again ([`PUSH_PROBES_PER_ASK_MAX`] at most), and the peer's answer tells what it now holds
//! durably, once its pulls have filled what it lacked.
//!
//! What a waiter that no ack peer confirms gets, after `ack_timeout_ms` (or at once, when the
//! last ack peer's session ends, or while the ack peers are *stalled*): with
//! `ack_fallback = "refuse"`, [`EngineError::NotReplicated`] (503 + `Retry-After`: not
//! acknowledged; the record is durable here and may still be counted, so the client's retry
//! with the same vote ID is answered `duplicate` once replicated); with
//! `ack_fallback = "local"`, its answer as under `local` acks. Either way it is counted in
//! `tally_ack_peer_misses_total` (cause `timeout`, `disconnected` or `stalled`).
//!
//! Stalled: a waiter's deadline passed and no ack peer's confirmation advanced for
//! `ack_timeout_ms`. A peer that was killed or frozen keeps its QUIC session until the idle
//! timeout (30 s), and one whose disk is full answers pushes without taking them; rather than
//! have every vote wait the whole deadline meanwhile, the node treats the ack peers as gone
//! until a confirmation advances again (a frozen peer resuming, a full disk freed: probes keep
//! asking while any own record is unconfirmed) or a new push session comes up. While no ack
//! peer is connected or they are stalled, with `refuse`, [`Hold::AckPeerDown`] refuses new
//! votes at the door (nothing logged); with `local`, votes are acknowledged after the local
//! fsync at once.
//!
//! Bounds: at most [`PEER_WAITING_VOTES_MAX`] votes wait for ack peers; past it new votes are
//! shed (429-like 503 `overloaded`, nothing counted) until confirmations or the deadline drain
//! the queue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tally_core::wire::PushAck;
use tally_core::{ActorId, DefinitionDigest, NodeId, PollId, RecordBatch, Seq, VoteId};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{BatchVoteAck, Engine, EngineError, Pending, Reply, Waiter, answer};
use crate::config::AckFallback;
use crate::health::Hold;

mod feed;
mod need;
mod push;

pub(crate) use feed::split_records;
pub use feed::{PUSH_FEED_RECORDS_MAX, PushFeed};

pub(super) use need::Need;
use need::{confirmed_in, covers};

/// Most votes waiting for an ack peer's confirmation (after their local fsync); new votes
/// past it are shed as overloaded.
pub const PEER_WAITING_VOTES_MAX: usize = 1 << 20;

/// Most records one [`AckCommand::OwnRecordsToPush`] answer carries (probes aside).
pub const PUSH_RECORDS_PER_ASK_MAX: usize = 65_536;

/// Most probes (one record pushed again, for its ack peer's answer) one
/// [`AckCommand::OwnRecordsToPush`] answer carries.
pub const PUSH_PROBES_PER_ASK_MAX: usize = 16;

/// How often an idle push session (no push unanswered) asks for probes: about a pull tick,
/// so a peer that lacked older records has pulled them by the next probe.
pub const PUSH_PROBE_INTERVAL: Duration = Duration::from_millis(100);

const _: () = assert!(PUSH_PROBES_PER_ASK_MAX < tally_core::session::PUSHES_UNANSWERED_MAX);

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
    /// Where those records go for the push sessions, as soon as they are durable.
    pub feed: Arc<PushFeed>,
}

/// How far a push session has pushed this node's records (per poll, of one actor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCursor {
    /// The actor whose records were pushed.
    pub actor: ActorId,
    /// The last seq pushed, per poll.
    pub through: BTreeMap<PollId, Seq>,
}

/// The answer to [`AckCommand::OwnRecordsToPush`].
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
    /// actor's cursor: a new session, which starts from what an ack peer confirmed or the log
    /// held at start-up, and probes the latter), and, with `probe`, for probes of what
    /// waiting replies need and no ack peer confirmed.
    OwnRecordsToPush {
        /// Where the session stands.
        after: Option<PushCursor>,
        /// Whether to add probes (the session has no push unanswered).
        probe: bool,
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
    need: Need,
    pending: Pending,
}

/// The engine's state of replicated acks.
pub(super) struct Replication {
    settings: AckSettings,
    /// Per poll and incarnation of this node, the highest seq an ack peer confirmed to this
    /// process (every record up to it is durable there). Empty at start.
    confirmed: BTreeMap<PollId, BTreeMap<u64, Seq>>,
    /// The actor `pushes_from` is about.
    start_actor: ActorId,
    /// Per poll, the last seq of `start_actor` the log held at start-up: a new push session
    /// starts after it (unless an ack peer confirmed more) and probes it.
    pushes_from: BTreeMap<PollId, Seq>,
    /// Push sessions up, per ack peer.
    sessions: BTreeMap<NodeId, usize>,
    waiting: VecDeque<PeerWaiter>,
    waiting_votes: usize,
    /// Per poll and incarnation, the highest seq a waiter needed that no ack peer has
    /// confirmed yet (what probes ask for; bounded by the polls and incarnations, unlike a scan
    /// of the waiters).
    needed: BTreeMap<(PollId, u64), Seq>,
    /// When a confirmation last advanced what is confirmed.
    last_progress: Option<Instant>,
    /// Whether the ack peers are stalled (see the module doc).
    stalled: bool,
    /// A planted bug: take records as confirmed as soon as they are handed to the pushes.
    confirm_on_push: bool,
    /// Own records of each log job in flight (by token), for the push feed once durable.
    unpublished: VecDeque<(u64, Vec<feed::FeedBatch>)>,
}

impl Replication {
    fn connected(&self) -> bool {
        self.sessions.values().any(|&n| n > 0)
    }

    /// Why no ack peer can confirm a vote now (`None`: one can): the `cause` of a miss.
    fn unavailable(&self) -> Option<&'static str> {
        if !self.connected() {
            Some("disconnected")
        } else if self.stalled {
            Some("stalled")
        } else {
            None
        }
    }

    /// The highest seq of `incarnation` in `poll` an ack peer confirmed.
    fn confirmed(&self, poll: &PollId, incarnation: u64) -> Seq {
        confirmed_in(&self.confirmed, poll, incarnation)
    }

    fn covers(&self, poll: &PollId, need: &Need) -> bool {
        covers(&self.confirmed, poll, need)
    }

    /// Where a new push session starts in `poll` for the current actor `actor`.
    fn push_start(&self, poll: &PollId, actor: &ActorId) -> Seq {
        let from_start = if &self.start_actor == actor {
            self.pushes_from.get(poll).copied().unwrap_or(0)
        } else {
            0
        };
        self.confirmed(poll, actor.incarnation).max(from_start)
    }

    /// What waiting replies need and no ack peer confirmed, and the last record of `actor`
    /// (this node's current actor) in each poll where records are unconfirmed: per poll and
    /// incarnation, the highest seq.
    fn unconfirmed_needs(
        &self,
        actor: &ActorId,
        held: impl Iterator<Item = (PollId, Seq)>,
    ) -> BTreeMap<(PollId, u64), Seq> {
        let mut needs = BTreeMap::new();
        for (poll, held) in held {
            if self.confirmed(&poll, actor.incarnation) < held {
                needs.insert((poll, actor.incarnation), held);
            }
        }
        for ((poll, incarnation), &seq) in &self.needed {
            if self.confirmed(poll, *incarnation) < seq {
                let entry = needs.entry((poll.clone(), *incarnation)).or_default();
                *entry = seq.max(*entry);
            }
        }
        needs
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
        let pushes_from = self
            .replica
            .poll_specs()
            .filter_map(|spec| {
                let held = self.replica.state(spec.id())?.held(&actor);
                Some((spec.id().clone(), held))
            })
            .collect();
        self.health
            .set(Hold::AckPeerDown, settings.fallback == AckFallback::Refuse);
        self.metrics
            .acks
            .peers_configured
            .set(settings.peers.len() as i64);
        self.replication = Some(Replication {
            settings,
            confirmed: BTreeMap::new(),
            start_actor: actor,
            pushes_from,
            sessions: BTreeMap::new(),
            waiting: VecDeque::new(),
            waiting_votes: 0,
            needed: BTreeMap::new(),
            last_progress: None,
            stalled: false,
            confirm_on_push: false,
            unpublished: VecDeque::new(),
        });
    }

    /// **A planted bug, for the simulation's checker tests only**
    /// ([`crate::planted::PlantedBug::AckBeforePeerFsync`]): records are taken as confirmed
    /// as soon as a push session takes them, before any ack peer has them on disk.
    #[doc(hidden)]
    pub fn plant_bug_ack_before_peer_fsync(&mut self) {
        if let Some(replication) = &mut self.replication {
            replication.confirm_on_push = true;
            // The sessions take every record from the engine, which "confirms" it there.
            replication.settings.feed.close();
        }
    }

    /// Whether a reply needing `need` in `poll` must wait for an ack peer.
    pub(super) fn needs_peer(&self, poll: &PollId, need: &Need) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| !r.covers(poll, need))
    }

    /// Under replicated acks, what a duplicate of `vote_id`'s durable record must see
    /// confirmed: the winning record, when it is this node's (any incarnation); a record of
    /// another node is durable on that node already. Nothing otherwise.
    pub(super) fn duplicate_need(&self, poll: &PollId, vote_id: VoteId) -> Need {
        if self.replication.is_none() {
            return Need::default();
        }
        let winner = self
            .replica
            .state(poll)
            .and_then(|s| s.winner_record(vote_id));
        match winner {
            Some((actor, seq)) if actor.node == self.replica.actor().node => {
                Need::on(actor.incarnation, seq)
            }
            _ => Need::default(),
        }
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
        if !self.needs_peer(&poll, &waiter.need) {
            return answer(waiter.pending);
        }
        let Some(replication) = &mut self.replication else {
            return answer(waiter.pending);
        };
        if let Some(cause) = replication.unavailable() {
            // Only `local` fallback gets here (`refuse` holds votes at the door), or a vote
            // accepted just before the ack peers went.
            return self.miss(waiter.pending, cause);
        }
        let now = Instant::now();
        replication.waiting_votes += votes_of(&waiter.pending);
        for (incarnation, seq) in waiter.need.entries() {
            let needed = replication
                .needed
                .entry((poll.clone(), incarnation))
                .or_default();
            *needed = seq.max(*needed);
        }
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
        if expired.is_empty() {
            return;
        }
        tracing::debug!(
            replies = expired.len(),
            "no ack peer confirmed these votes' records within ack_timeout_ms"
        );
        for pending in expired {
            self.miss(pending, "timeout");
        }
        let Some(replication) = &mut self.replication else {
            return;
        };
        let timeout = replication.settings.timeout;
        let progressed = replication
            .last_progress
            .is_some_and(|at| now.duration_since(at) < timeout);
        if !progressed && !replication.stalled {
            replication.stalled = true;
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "no ack peer confirmed anything within ack_timeout_ms while votes waited: \
                 taking the ack peers as stalled until a confirmation advances again (votes are \
                 refused at once, or acknowledged locally with ack_fallback = \"local\")"
            );
            self.ack_peers_changed();
        }
    }

    /// Mirrors the ack peers' state into the hold, the gauges, and what waits.
    fn ack_peers_changed(&mut self) {
        let Some(replication) = &mut self.replication else {
            return;
        };
        let refuse = replication.settings.fallback == AckFallback::Refuse;
        let unavailable = replication.unavailable();
        let count = replication.sessions.values().filter(|&&n| n > 0).count();
        self.metrics.acks.peers_connected.set(count as i64);
        self.metrics
            .acks
            .stalled
            .set(i64::from(replication.stalled));
        self.health
            .set(Hold::AckPeerDown, refuse && unavailable.is_some());
        let Some(cause) = unavailable else {
            return;
        };
        // Nobody will confirm what waits: answer it now rather than at the deadline.
        let waiting: Vec<PeerWaiter> = replication.waiting.drain(..).collect();
        replication.waiting_votes = 0;
        for waiter in waiting {
            self.miss(waiter.pending, cause);
        }
    }

    /// Why a vote at the door cannot be acknowledged now, under replicated acks.
    pub(super) fn ack_peers_unavailable(&self) -> Option<&'static str> {
        self.replication.as_ref()?.unavailable()
    }

    /// Handles one command of replicated acks.
    pub(super) fn handle_ack_command(&mut self, command: AckCommand) {
        match command {
            AckCommand::OwnRecordsToPush {
                after,
                probe,
                reply,
            } => drop(reply.send(Ok(self.own_records_to_push(after, probe)))),
            AckCommand::PeerConfirmed { peer, ack } => self.peer_confirmed(&peer, &ack),
            AckCommand::PushedRecords {
                definition,
                batch,
                reply,
            } => self.pushed_records(definition, batch, reply),
            AckCommand::Session { peer, up } => self.ack_session(peer, up),
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
        if ack.actor.node != self.replica.actor().node {
            return;
        }
        let Some(replication) = &mut self.replication else {
            return;
        };
        let confirmed = replication
            .confirmed
            .entry(ack.poll.clone())
            .or_default()
            .entry(ack.actor.incarnation)
            .or_default();
        if ack.durable_through <= *confirmed {
            return;
        }
        *confirmed = ack.durable_through;
        let key = (ack.poll.clone(), ack.actor.incarnation);
        if replication
            .needed
            .get(&key)
            .is_some_and(|&seq| seq <= ack.durable_through)
        {
            replication.needed.remove(&key);
        }
        let now = Instant::now();
        replication.last_progress = Some(now);
        if std::mem::take(&mut replication.stalled) {
            tracing::info!("an ack peer confirms records again: votes are replicated again");
            self.ack_peers_changed();
        }
        let Some(replication) = &mut self.replication else {
            return;
        };
        let mut still = VecDeque::with_capacity(replication.waiting.len());
        let mut answered = Vec::new();
        for waiter in replication.waiting.drain(..) {
            if waiter.poll == ack.poll && covers(&replication.confirmed, &waiter.poll, &waiter.need)
            {
                answered.push(waiter);
            } else {
                still.push_back(waiter);
            }
        }
        replication.waiting = still;
        self.handed_off |= !answered.is_empty();
        for waiter in answered {
            replication.waiting_votes -= votes_of(&waiter.pending);
            self.metrics
                .acks
                .peer_wait_seconds
                .observe(now.duration_since(waiter.since).as_secs_f64());
            answer(waiter.pending);
        }
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
            // A new session (a restarted peer, a healed link) gets its chance.
            replication.stalled = false;
        } else {
            *sessions = sessions.saturating_sub(1);
        }
        if !replication.connected() {
            tracing::warn!(%peer, "no ack peer is connected: votes cannot be replicated");
        }
        self.ack_peers_changed();
    }

    /// Keeps the own records of log job `token` (about to be submitted) for the push feed.
    pub(super) fn note_job_for_pushes(&mut self, token: u64, batches: &[RecordBatch]) {
        let Some(replication) = &mut self.replication else {
            return;
        };
        let own: Vec<_> = batches
            .iter()
            .filter_map(|batch| {
                let definition = self.replica.definition(batch.poll())?;
                Some((definition, Arc::new(batch.clone())))
            })
            .collect();
        if !batches.is_empty() {
            replication.unpublished.push_back((token, own));
        }
    }

    /// The log jobs up to `up_to_token` are durable: hands their own records to the push
    /// sessions through the feed and wakes them, before the engine indexes those records
    /// into its state (a session that asks instead is answered after that).
    pub(super) fn publish_durable_pushes(&mut self, up_to_token: u64) {
        let Some(replication) = &mut self.replication else {
            return;
        };
        let mut durable = Vec::new();
        let mut any = false;
        while replication
            .unpublished
            .front()
            .is_some_and(|(token, _)| *token <= up_to_token)
        {
            if let Some((_, batches)) = replication.unpublished.pop_front() {
                durable.extend(batches);
                any = true;
            }
        }
        if !any {
            return;
        }
        replication.settings.feed.publish(durable);
        replication.settings.durable.send_modify(|n| *n += 1);
        self.handed_off = true;
    }

    /// A move to a new incarnation voided the records of the log jobs in flight: none of
    /// them may reach a peer, and the push sessions start over by asking.
    pub(super) fn void_unpublished_pushes(&mut self) {
        if let Some(replication) = &mut self.replication {
            replication.unpublished.clear();
            replication.settings.feed.clear();
        }
    }

    /// Records of this node's own actor not yet confirmed by an ack peer, for the lag gauge
    /// (after a restart, counted from the first seq until an ack peer answers).
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
                Some(held.saturating_sub(replication.confirmed(spec.id(), actor.incarnation)))
            })
            .sum();
        self.metrics.acks.peer_lag_records.set(lag as i64);
        self.metrics
            .acks
            .waiting_votes
            .set(replication.waiting_votes as i64);
    }

    /// The log failed: every reply waiting for an ack peer is refused too.
    ///
    /// Each of them is durable in this node's log already (only its ack peer's confirmation
    /// was missing) and may have been pushed to, and counted by, the ack peers: it is refused
    /// [`EngineError::NotReplicated`] ("not acknowledged; it may still be counted"), never
    /// [`EngineError::LogFailed`], whose 503 says the vote is not in the log. (Simulation
    /// seed 9021, `--force crash --force corruption` at 300,000 votes: a vote answered only
    /// "the write-ahead log failed" was held by the cluster.)
    pub(super) fn fail_peer_waiters(&mut self) {
        let Some(replication) = &mut self.replication else {
            return;
        };
        replication.waiting_votes = 0;
        for waiter in replication.waiting.drain(..) {
            refuse(waiter.pending, EngineError::NotReplicated);
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
