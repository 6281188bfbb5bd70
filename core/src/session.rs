//! The peer session as a sans-IO state machine, in quinn-proto's manner: frames (bytes) and
//! time come in as arguments, frames to send leave as values the caller polls for
//! ([`Puller::poll_transmit`], [`Answerer::poll_transmit`]). It holds no socket, no clock
//! and no replica: the caller carries frames over its transport and asks its replica for a
//! pull request, an answer, or to apply an answer, handing the results back in. Three users
//! drive this one implementation: the node over QUIC (`node/src/peer/sync.rs`, its replica
//! behind the engine's queue), the replica-level simulation over its simulated network
//! (`sim/src/replicas.rs`) and the property tests (`core/tests/session.rs`).
//!
//! A session is one connection between two nodes. It opens with a [`Handshake`]: each side
//! sends its [`Hello`] and checks the peer's (the same cluster, a protocol version both speak,
//! the node dialled, the node the certificate names, the same `vote_id_key` by its proof).
//! The session then speaks the *negotiated* version, the lower of the two; every message
//! names the version that introduced it ([`introduced_in`]), and a session neither sends nor
//! takes a message newer than its negotiated version (the gate rolling upgrades build on).
//!
//! After the hello the connection carries pull rounds both ways, and the two directions share
//! nothing but the negotiated version, so the session splits into a [`Puller`] (this node's
//! rounds: its request out, the peer's answer in) and an [`Answerer`] (the peer's rounds).
//! A round is one stream: the request (an [`PeerMessage::Agreement`], one
//! [`PeerMessage::PollVector`] per poll and a [`PeerMessage::Clock`] reading, then the end of
//! the stream) and its answer on the same stream (the answerer's clock reading first, then
//! [`crate::sync::PullAnswer`] frame by frame). Each side keeps one round of each direction
//! at a time: a frame of an older round, a second end of the same round, or an answer to a
//! round already finished is ignored, so a transport that loses, duplicates or reorders
//! whole streams (the simulation's network) costs rounds, never correctness; the merge of an
//! answer is a CRDT union ([`crate::Replica::apply_answer`]). Within a stream, frames arrive
//! in order and once (QUIC's promise, and the simulation's).
//!
//! Every bound is named here: polls per request, frames and records per answer; a peer past
//! one is refused, with the cause a refusal metric counts ([`Refusal::cause`]).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::clock::ClockSample;
use crate::ids::{ActorId, NodeId, PollId, UnixMillis};
use crate::limits::{POLLS_MAX, RECORDS_PER_BATCH_MAX};
use crate::sync::{PollRequest, PullAnswer, PullRequest};
use crate::version_vector::VersionVector;
use crate::vote_id::VoteIdKey;
use crate::wire::{self, ClockReading, Hello, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, PeerMessage};

/// Most poll frames one pull request may carry (one per poll).
pub const PULL_REQUEST_POLLS_MAX: usize = 1_024;
// A node sends one vector per poll it holds: every pull it can send must be accepted.
const _: () = assert!(POLLS_MAX <= PULL_REQUEST_POLLS_MAX);

/// Most frames one pull answer may carry beyond its records (definitions, declarations,
/// counters, vectors and reservations of each poll, and its clock reading).
pub const PULL_ANSWER_EXTRA_FRAMES_MAX: usize = 5 * PULL_REQUEST_POLLS_MAX + 1;

/// Why a peer was refused. The session that refuses is over: the caller closes the
/// connection, saying `cause: reason`. Nothing of the refused round was handed out to merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A stable label for metrics: `hello`, `cluster_id`, `protocol`, `node_id`,
    /// `certificate`, `vote_id_key` or `frame`.
    pub cause: &'static str,
    /// What was wrong, for people.
    pub reason: String,
    /// The peer's node, once its certificate vouched for the one its hello names (a refusal
    /// after that can be counted under its name).
    pub peer: Option<NodeId>,
}

impl Refusal {
    fn new(cause: &'static str, reason: impl Into<String>) -> Self {
        Self {
            cause,
            reason: reason.into(),
            peer: None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.cause, self.reason)
    }
}

/// The protocol version that introduced `message`; a session whose negotiated version is
/// older neither sends nor takes it.
pub fn introduced_in(message: &PeerMessage) -> u16 {
    match message {
        PeerMessage::Hello(_)
        | PeerMessage::VersionVector { .. }
        | PeerMessage::Records(_)
        | PeerMessage::Counters(_)
        | PeerMessage::Poll(_) => 1,
        PeerMessage::Clock(_)
        | PeerMessage::Agreement(_)
        | PeerMessage::PollVector { .. }
        | PeerMessage::Declarations { .. } => 2,
        PeerMessage::Push { .. } | PeerMessage::PushAck(_) | PeerMessage::Reserve { .. } => 3,
    }
}

/// Whether this node syncs with a peer of protocol `version`.
pub fn speaks(version: u16) -> bool {
    (PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version)
}

/// The refusal of a peer of a protocol version this node does not speak.
fn protocol_refusal(version: u16) -> Refusal {
    let ours = if PROTOCOL_VERSION_MIN == PROTOCOL_VERSION {
        PROTOCOL_VERSION.to_string()
    } else {
        format!("{PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}")
    };
    Refusal::new(
        "protocol",
        format!("peer speaks protocol {version}, this node {ours}"),
    )
}

/// Decodes one frame of a peer; a frame that does not decode is a refusal (a hello of a
/// protocol version this node does not speak says which version it is).
pub fn decode_frame(frame: &[u8]) -> Result<PeerMessage, Refusal> {
    wire::decode(frame).map_err(|e| match wire::hello_protocol_version(frame) {
        Some(version) if !speaks(version) => protocol_refusal(version),
        _ => Refusal::new("frame", format!("undecodable frame: {e}")),
    })
}

/// A short name of a message's kind, for refusals.
pub fn message_kind(message: &PeerMessage) -> &'static str {
    match message {
        PeerMessage::Hello(_) => "hello",
        PeerMessage::VersionVector { .. } => "version vector",
        PeerMessage::Records(_) => "records",
        PeerMessage::Counters(_) => "counters",
        PeerMessage::Poll(_) => "poll",
        PeerMessage::Agreement(_) => "agreement",
        PeerMessage::PollVector { .. } => "poll vector",
        PeerMessage::Declarations { .. } => "declarations",
        PeerMessage::Clock(_) => "clock",
        PeerMessage::Push { .. } => "push",
        PeerMessage::PushAck(_) => "push ack",
        PeerMessage::Reserve { .. } => "reserve",
    }
}

/// Decodes a frame of an established session and refuses a message newer than the
/// negotiated version.
fn decode_gated(frame: &[u8], protocol: u16) -> Result<PeerMessage, Refusal> {
    let message = decode_frame(frame)?;
    let introduced = introduced_in(&message);
    if introduced > protocol {
        return Err(Refusal::new(
            "frame",
            format!(
                "a {} message needs protocol {introduced}; this session speaks {protocol}",
                message_kind(&message)
            ),
        ));
    }
    Ok(message)
}

/// Something to carry to the peer on the stream of round `round`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// One frame.
    Frame {
        /// The round (the stream) it belongs to.
        round: u64,
        /// The encoded frame ([`wire::encode`]).
        frame: Vec<u8>,
    },
    /// The end of this side of the round's stream.
    Finish {
        /// The round.
        round: u64,
    },
}

/// What the session sends before it is [`Transmit`]ted: messages are encoded as they leave,
/// so an answer's records are held once.
#[derive(Debug)]
enum Outgoing {
    Message(u64, PeerMessage),
    Finish(u64),
}

/// The outgoing queue of one direction. Bounded by the rounds: one request or one answer at
/// a time, whose frames are bounded by [`PULL_REQUEST_POLLS_MAX`] and
/// [`PULL_ANSWER_EXTRA_FRAMES_MAX`] plus the records budget.
#[derive(Debug)]
struct Outbox {
    protocol: u16,
    queue: VecDeque<Outgoing>,
}

impl Outbox {
    fn new(protocol: u16) -> Self {
        Self {
            protocol,
            queue: VecDeque::new(),
        }
    }

    /// Queues `message` if the negotiated version has it. (Every version this node speaks
    /// has every message today; issue 25 gives older versions their fallbacks.)
    fn push(&mut self, round: u64, message: PeerMessage) {
        if introduced_in(&message) <= self.protocol {
            self.queue.push_back(Outgoing::Message(round, message));
        }
    }

    fn finish(&mut self, round: u64) {
        self.queue.push_back(Outgoing::Finish(round));
    }

    /// Drops what is still queued of rounds other than `keep`.
    fn forget_other_rounds(&mut self, keep: u64) {
        self.queue.retain(|o| match o {
            Outgoing::Message(round, _) | Outgoing::Finish(round) => *round == keep,
        });
    }

    fn poll(&mut self) -> Option<Transmit> {
        Some(match self.queue.pop_front()? {
            Outgoing::Message(round, message) => Transmit::Frame {
                round,
                frame: wire::encode(&message),
            },
            Outgoing::Finish(round) => Transmit::Finish { round },
        })
    }
}

// ------------------------------------------------------------------------------- handshake

/// The opening of a session: this node's hello out, the peer's checked.
#[derive(Debug, Clone)]
pub struct Handshake {
    hello: Hello,
    vote_id_key: VoteIdKey,
}

/// What the hello settled: who the peer is and which version the session speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// The peer's actor, as its hello names it.
    pub peer: ActorId,
    /// The protocol version both speak: the lower of the two.
    pub protocol_version: u16,
}

impl Handshake {
    /// A handshake sending `hello` (this node's, naming its current actor) and checking the
    /// peer's proof against `vote_id_key`.
    pub fn new(hello: Hello, vote_id_key: VoteIdKey) -> Self {
        Self { hello, vote_id_key }
    }

    /// This node's hello, to send first (alone on the hello stream, then its end).
    pub fn hello_frame(&self) -> Vec<u8> {
        wire::encode(&PeerMessage::Hello(self.hello.clone()))
    }

    /// Checks the peer's hello (`None`: its hello stream ended without one), in this order:
    /// a hello at all, the same cluster, a protocol version this node speaks, the node
    /// `dialled` (when this node dialled), the node the connection's certificate names
    /// (`certificate` checks that it names the node the hello claims; from then on a refusal
    /// names the peer), and the same `vote_id_key`.
    pub fn handle_hello(
        &self,
        frame: Option<&[u8]>,
        dialled: Option<&NodeId>,
        certificate: impl FnOnce(&NodeId) -> Result<(), String>,
    ) -> Result<Established, Refusal> {
        let message = frame.map(decode_frame).transpose()?;
        let hello = match message {
            Some(PeerMessage::Hello(hello)) => hello,
            other => {
                return Err(Refusal::new(
                    "hello",
                    format!("expected a hello, got {other:?}"),
                ));
            }
        };
        if hello.cluster_id != self.hello.cluster_id {
            return Err(Refusal::new(
                "cluster_id",
                format!(
                    "peer belongs to cluster {:?}, this node to {:?}",
                    hello.cluster_id, self.hello.cluster_id
                ),
            ));
        }
        if !speaks(hello.protocol_version) {
            return Err(protocol_refusal(hello.protocol_version));
        }
        if let Some(dialled) = dialled {
            if &hello.actor.node != dialled {
                return Err(Refusal::new(
                    "node_id",
                    format!(
                        "dialled {dialled} but the peer says it is {}",
                        hello.actor.node
                    ),
                ));
            }
        }
        certificate(&hello.actor.node)
            .map_err(|e| Refusal::new("certificate", format!("certificate: {e}")))?;
        self.vote_id_key
            .check_proof(&hello.vote_id_key_proof)
            .map_err(|why| Refusal {
                peer: Some(hello.actor.node.clone()),
                ..Refusal::new("vote_id_key", why)
            })?;
        Ok(Established {
            protocol_version: hello.protocol_version.min(self.hello.protocol_version),
            peer: hello.actor,
        })
    }
}

impl Established {
    /// The session's pushes of replicated acks (protocol 3), or `None` when the negotiated
    /// version is older: a peer of version 2 cannot be an ack peer. `own` is this node.
    pub fn push_channel(&self, own: NodeId) -> Option<(PushSender, PushReceiver)> {
        (self.protocol_version >= 3).then(|| {
            (
                PushSender::new(own.clone()),
                PushReceiver {
                    own,
                    peer: self.peer.node.clone(),
                },
            )
        })
    }

    /// The session's two directions: this node's pull rounds (at most
    /// `records_per_round_max` records asked per answer) and its answers to the peer's.
    pub fn split(&self, records_per_round_max: usize) -> (Puller, Answerer) {
        (
            Puller::new(self.protocol_version, records_per_round_max),
            Answerer::new(self.protocol_version),
        )
    }
}

// ------------------------------------------------------------------------------- pull side

/// This node's pull rounds over one session: one round at a time.
#[derive(Debug)]
pub struct Puller {
    protocol: u16,
    records_per_round_max: usize,
    next_round: u64,
    round: Option<PullRound>,
    outbox: Outbox,
}

/// The round in flight.
#[derive(Debug)]
struct PullRound {
    id: u64,
    /// When it started, on the caller's monotonic clock.
    started: Duration,
    /// What this node held of each poll as it asked.
    mine: Vec<(PollId, VersionVector)>,
    /// The wall-clock reading sent, and when (monotonic).
    sent: Option<(UnixMillis, Duration)>,
    /// The answer so far.
    answer: PullAnswer,
    /// Records in it so far.
    records: usize,
    /// Frames other than records so far.
    other_frames: usize,
    /// The answerer's clock reading and when it arrived (monotonic).
    clock: Option<(ClockReading, Duration)>,
    /// The answerer's vectors, kept when the answer is handed out.
    theirs: Vec<(PollId, VersionVector)>,
    /// Records the answer held, kept when it is handed out.
    records_in_answer: usize,
    /// Whether the answer's stream ended (it was handed out).
    ended: bool,
}

/// What a finished round came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundOutcome {
    /// The clock-offset sample of the round (absent if the answer carried no reading).
    pub clock: Option<ClockSample>,
    /// Records the peer held that this node did not, after the round (per the polls both
    /// define alike).
    pub records_behind: u64,
    /// Whether to ask again at once: the answer was cut short by the records budget (and
    /// nothing of it was deferred, which asking again would only fetch again).
    pub ask_again_at_once: bool,
}

/// What the caller's replica did with a round's answer, as [`Puller::finish_round`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct RoundApplied<'a> {
    /// Records newly held.
    pub records_added: usize,
    /// Polls both replicas define alike ([`crate::AnswerApplied::shared`]).
    pub shared: &'a BTreeSet<PollId>,
    /// Records not taken for now (the node's disk hold).
    pub records_deferred: usize,
}

impl Puller {
    fn new(protocol: u16, records_per_round_max: usize) -> Self {
        Self {
            protocol,
            records_per_round_max,
            next_round: 0,
            round: None,
            outbox: Outbox::new(protocol),
        }
    }

    /// The protocol version the session speaks.
    pub fn protocol_version(&self) -> u16 {
        self.protocol
    }

    /// Whether a round started less than `timeout` before `now` is still waiting for its
    /// answer (or for [`Self::finish_round`]).
    pub fn round_in_flight(&self, now: Duration, timeout: Duration) -> bool {
        self.round
            .as_ref()
            .is_some_and(|r| now.saturating_sub(r.started) < timeout)
    }

    /// Starts a round asking for what `request` (the replica's [`crate::Replica::pull_request`])
    /// lacks: queues its agreement summary and one frame per poll. A round still in flight is
    /// abandoned (its answer, should it come, is ignored). Returns the round's number (the
    /// stream the caller carries it on). Then [`Self::stamp_request`] closes the request.
    pub fn start_round(&mut self, request: PullRequest, now: Duration) -> u64 {
        let id = self.next_round;
        self.next_round += 1;
        self.outbox.forget_other_rounds(id);
        self.outbox
            .push(id, PeerMessage::Agreement(request.agreement));
        let mut mine = Vec::with_capacity(request.polls.len());
        for poll in request.polls {
            mine.push((poll.poll.clone(), poll.vector.clone()));
            let message = PeerMessage::PollVector {
                poll: poll.poll,
                definition: poll.definition,
                vector: poll.vector,
            };
            self.outbox.push(id, message);
        }
        self.round = Some(PullRound {
            id,
            started: now,
            mine,
            sent: None,
            answer: PullAnswer::default(),
            records: 0,
            other_frames: 0,
            clock: None,
            theirs: Vec::new(),
            records_in_answer: 0,
            ended: false,
        });
        id
    }

    /// Closes the request of the round in flight with this node's clock reading, taken as
    /// the request leaves: `wall` its wall clock, `stable_ms` how long that clock has run
    /// without a step, `now` its monotonic clock (the round trip is measured from here).
    pub fn stamp_request(&mut self, wall: UnixMillis, stable_ms: u64, now: Duration) {
        let Some(round) = self.round.as_mut().filter(|r| r.sent.is_none()) else {
            return;
        };
        round.sent = Some((wall, now));
        let reading = ClockReading {
            sent_at: wall,
            answered_at: None,
            stable_ms,
        };
        self.outbox.push(round.id, PeerMessage::Clock(reading));
        self.outbox.finish(round.id);
    }

    /// The next frame (or end) of this node's requests to carry to the peer.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.poll()
    }

    /// The round in flight, if `round` is it and its answer is still open.
    fn open_round(&mut self, round: u64) -> Option<&mut PullRound> {
        self.round.as_mut().filter(|r| r.id == round && !r.ended)
    }

    /// One frame of the answer on round `round`'s stream, arriving at `now` (monotonic).
    /// A frame of another round is ignored. A frame that does not belong in an answer, or
    /// one past the answer's bounds, is a refusal.
    pub fn handle_answer_frame(
        &mut self,
        round: u64,
        frame: &[u8],
        now: Duration,
    ) -> Result<(), Refusal> {
        let protocol = self.protocol;
        let records_limit = self.records_per_round_max + RECORDS_PER_BATCH_MAX;
        let Some(current) = self.open_round(round) else {
            return Ok(());
        };
        let answer = &mut current.answer;
        match decode_gated(frame, protocol)? {
            PeerMessage::Records(batch) => {
                current.records += batch.len();
                if current.records > records_limit {
                    return Err(Refusal::new(
                        "frame",
                        format!("answer holds over {records_limit} records"),
                    ));
                }
                answer.batches.push(batch);
                return Ok(());
            }
            PeerMessage::Poll(spec) => answer.polls.push(spec),
            PeerMessage::Declarations { poll, entries } => {
                answer.declarations.push((poll, entries));
            }
            PeerMessage::Counters(state) => answer.counters.push(state),
            PeerMessage::VersionVector { poll, vector } => answer.vectors.push((poll, vector)),
            PeerMessage::Reserve { poll, vote_ids } => answer.reservations.push((poll, vote_ids)),
            PeerMessage::Clock(reading) if current.clock.is_none() => {
                current.clock = Some((reading, now));
            }
            other @ (PeerMessage::Hello(_)
            | PeerMessage::Agreement(_)
            | PeerMessage::PollVector { .. }
            | PeerMessage::Clock(_)
            | PeerMessage::Push { .. }
            | PeerMessage::PushAck(_)) => {
                return Err(Refusal::new(
                    "frame",
                    format!("unexpected message in an answer: {}", message_kind(&other)),
                ));
            }
        }
        current.other_frames += 1;
        if current.other_frames > PULL_ANSWER_EXTRA_FRAMES_MAX {
            return Err(Refusal::new("frame", "answer holds too many frames"));
        }
        Ok(())
    }

    /// The end of round `round`'s answer: the answer, for the caller's replica to merge
    /// ([`crate::Replica::apply_answer`]), then [`Self::finish_round`]. `None` if `round` is
    /// not the round in flight or its answer was already handed out.
    pub fn handle_answer_end(&mut self, round: u64) -> Option<PullAnswer> {
        let current = self.open_round(round)?;
        current.ended = true;
        current.theirs = current.answer.vectors.clone();
        current.records_in_answer = current.records;
        Some(std::mem::take(&mut current.answer))
    }

    /// Closes the round whose answer was handed out, once the caller merged it: its clock
    /// sample (a reading that does not echo this round's request is a refusal), how far
    /// behind the peer this node still is, and whether to ask again at once. `None` if no
    /// answer was handed out.
    pub fn finish_round(
        &mut self,
        applied: RoundApplied<'_>,
    ) -> Option<Result<RoundOutcome, Refusal>> {
        let round = self.round.take_if(|r| r.ended)?;
        Some(self.outcome(round, applied))
    }

    fn outcome(
        &self,
        round: PullRound,
        applied: RoundApplied<'_>,
    ) -> Result<RoundOutcome, Refusal> {
        let clock = match (round.clock, round.sent) {
            (Some((reading, arrived)), Some((sent_at, sent))) => {
                let (Some(peer_at), true) = (reading.answered_at, reading.sent_at == sent_at)
                else {
                    return Err(Refusal::new(
                        "frame",
                        format!(
                            "clock reading {reading:?} does not answer the request sent at \
                             {sent_at:?}"
                        ),
                    ));
                };
                let round_trip = arrived.saturating_sub(sent);
                Some(ClockSample {
                    sent_at,
                    peer_at,
                    round_trip_ms: u64::try_from(round_trip.as_millis()).unwrap_or(u64::MAX),
                    peer_stable_ms: reading.stable_ms,
                    received_at_ms: 0,
                })
            }
            _ => None,
        };
        let shared: Vec<(PollId, VersionVector)> = round
            .theirs
            .into_iter()
            .filter(|(poll, _)| applied.shared.contains(poll))
            .collect();
        let behind_before = records_behind(&round.mine, &shared);
        Ok(RoundOutcome {
            clock,
            records_behind: behind_before.saturating_sub(applied.records_added as u64),
            ask_again_at_once: round.records_in_answer >= self.records_per_round_max
                && applied.records_deferred == 0,
        })
    }
}

/// Records the peer holds that this node did not, per its vectors: Σ max(0, theirs − mine).
pub fn records_behind(mine: &[(PollId, VersionVector)], theirs: &[(PollId, VersionVector)]) -> u64 {
    let empty = VersionVector::default();
    theirs
        .iter()
        .map(|(poll, their_vector)| {
            let my_vector = mine
                .iter()
                .find(|(p, _)| p == poll)
                .map_or(&empty, |(_, v)| v);
            their_vector
                .iter()
                .map(|(actor, seq)| seq.saturating_sub(my_vector.get(actor)))
                .sum::<u64>()
        })
        .sum()
}

// ----------------------------------------------------------------------------- answer side

/// This node's answers to the peer's pull rounds over one session: one round at a time.
#[derive(Debug)]
pub struct Answerer {
    protocol: u16,
    /// The request being read.
    incoming: Option<IncomingRound>,
    /// The newest round whose request was handed out: older or equal rounds are done.
    answered: Option<u64>,
    outbox: Outbox,
}

#[derive(Debug)]
struct IncomingRound {
    id: u64,
    request: PullRequest,
    clock: Option<ClockReading>,
}

/// A peer's pull request, read whole: answer it with [`Answerer::send_clock`] (if it carries
/// a reading) and [`Answerer::send_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingPull {
    /// The round (the stream to answer on).
    pub round: u64,
    /// What the peer asks for (for [`crate::Replica::answer_pull`]).
    pub request: PullRequest,
    /// The peer's clock reading, to echo.
    pub clock: Option<ClockReading>,
}

impl Answerer {
    fn new(protocol: u16) -> Self {
        Self {
            protocol,
            incoming: None,
            answered: None,
            outbox: Outbox::new(protocol),
        }
    }

    /// Whether round `round` is done (its request already handed out, or a newer one).
    fn is_done(&self, round: u64) -> bool {
        self.answered.is_some_and(|done| round <= done)
    }

    /// One frame of the peer's request on round `round`'s stream. A frame of a round done,
    /// or older than the one being read, is ignored; a newer round replaces an unfinished
    /// one (its puller gave up on it). A frame that does not belong in a request is a
    /// refusal.
    pub fn handle_request_frame(&mut self, round: u64, frame: &[u8]) -> Result<(), Refusal> {
        if self.is_done(round) || self.incoming.as_ref().is_some_and(|i| round < i.id) {
            return Ok(());
        }
        let message = decode_gated(frame, self.protocol)?;
        let incoming = match &mut self.incoming {
            Some(incoming) if incoming.id == round => incoming,
            slot => slot.insert(IncomingRound {
                id: round,
                request: PullRequest::default(),
                clock: None,
            }),
        };
        let request = &mut incoming.request;
        match message {
            PeerMessage::Clock(reading)
                if reading.answered_at.is_none() && incoming.clock.is_none() =>
            {
                incoming.clock = Some(reading);
            }
            PeerMessage::Agreement(agreement) => request.agreement = agreement,
            PeerMessage::PollVector {
                poll,
                definition,
                vector,
            } if request.polls.len() < PULL_REQUEST_POLLS_MAX => {
                request.polls.push(PollRequest {
                    poll,
                    definition,
                    vector,
                });
            }
            other => {
                return Err(Refusal::new(
                    "frame",
                    format!(
                        "unexpected message in a pull request: {}",
                        message_kind(&other)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The end of round `round`'s request: the request, to answer. `None` if the round is
    /// done or not the one being read.
    pub fn handle_request_end(&mut self, round: u64) -> Option<IncomingPull> {
        if self.is_done(round) {
            return None;
        }
        let incoming = match self.incoming.take() {
            Some(incoming) if incoming.id == round => incoming,
            Some(newer) if newer.id > round => {
                self.incoming = Some(newer);
                return None;
            }
            // A request whose stream carried no frame at all: it asks for everything.
            _ => IncomingRound {
                id: round,
                request: PullRequest::default(),
                clock: None,
            },
        };
        self.answered = Some(round);
        self.outbox.forget_other_rounds(round);
        Some(IncomingPull {
            round,
            request: incoming.request,
            clock: incoming.clock,
        })
    }

    /// Queues this node's clock reading for round `round`, echoing the puller's: sent first,
    /// before the answer is made, so the puller's round trip measures the network.
    pub fn send_clock(
        &mut self,
        round: u64,
        request: ClockReading,
        wall: UnixMillis,
        stable_ms: u64,
    ) {
        let reading = ClockReading {
            sent_at: request.sent_at,
            answered_at: Some(wall),
            stable_ms,
        };
        self.outbox.push(round, PeerMessage::Clock(reading));
    }

    /// Queues round `round`'s answer (the replica's [`crate::Replica::answer_pull`]), frame by
    /// frame, and the end of its stream.
    pub fn send_answer(&mut self, round: u64, answer: PullAnswer) {
        for spec in answer.polls {
            self.outbox.push(round, PeerMessage::Poll(spec));
        }
        for (poll, vote_ids) in answer.reservations {
            self.outbox
                .push(round, PeerMessage::Reserve { poll, vote_ids });
        }
        for (poll, entries) in answer.declarations {
            self.outbox
                .push(round, PeerMessage::Declarations { poll, entries });
        }
        for batch in answer.batches {
            self.outbox.push(round, PeerMessage::Records(batch));
        }
        for state in answer.counters {
            self.outbox.push(round, PeerMessage::Counters(state));
        }
        for (poll, vector) in answer.vectors {
            self.outbox
                .push(round, PeerMessage::VersionVector { poll, vector });
        }
        self.outbox.finish(round);
    }

    /// The next frame (or end) of this node's answers to carry to the peer.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.poll()
    }
}

pub use push::{
    PUSH_ANSWERS_QUEUED_MAX, PUSH_RECORDS_UNANSWERED_MAX, PUSHES_UNANSWERED_MAX, PushReceiver,
    PushSender, Pushed,
};

mod push;

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, node: &str, key: &VoteIdKey, version: u16) -> Hello {
        Hello {
            cluster_id: cluster.to_owned(),
            protocol_version: version,
            actor: ActorId {
                node: NodeId::new(node).unwrap(),
                incarnation: 1,
            },
            vote_id_key_proof: key.proof(),
        }
    }

    #[test]
    fn a_hello_is_refused_for_each_claim_it_gets_wrong_and_names_the_cause() {
        // Goal: every check of the hello refuses with its own cause. Method: one handshake
        // meets hellos that each get one thing wrong, then a right one.
        let key = VoteIdKey::new([3; 32]);
        let ours = Handshake::new(hello("c", "a", &key, PROTOCOL_VERSION), key.clone());
        let b = NodeId::new("b").unwrap();
        let cause = |theirs: Hello, dialled: Option<&NodeId>, certificate_ok: bool| {
            let frame = wire::encode(&PeerMessage::Hello(theirs));
            let certificate = |_: &NodeId| {
                if certificate_ok {
                    Ok(())
                } else {
                    Err("names another node".to_owned())
                }
            };
            ours.handle_hello(Some(&frame), dialled, certificate)
                .map(|e| e.protocol_version)
                .map_err(|r| r.cause)
        };
        let other_key = VoteIdKey::new([4; 32]);
        assert_eq!(
            cause(hello("x", "b", &key, 2), None, true),
            Err("cluster_id")
        );
        assert_eq!(cause(hello("c", "b", &key, 1), None, true), Err("protocol"));
        assert_eq!(
            cause(hello("c", "b", &key, PROTOCOL_VERSION + 1), None, true),
            Err("protocol")
        );
        assert_eq!(
            cause(hello("c", "z", &key, 2), Some(&b), true),
            Err("node_id")
        );
        assert_eq!(
            cause(hello("c", "b", &key, 2), Some(&b), false),
            Err("certificate")
        );
        assert_eq!(
            cause(hello("c", "b", &other_key, 2), Some(&b), true),
            Err("vote_id_key")
        );
        assert_eq!(
            cause(hello("c", "b", &key, PROTOCOL_VERSION), Some(&b), true),
            Ok(PROTOCOL_VERSION)
        );
        assert_eq!(
            cause(hello("c", "b", &key, 2), Some(&b), true),
            Ok(2),
            "a version-2 peer is served at version 2"
        );
        let missing = ours.handle_hello(None, None, |_| Ok(()));
        assert_eq!(missing.map_err(|r| r.cause), Err("hello"));
    }

    #[test]
    fn a_session_neither_takes_nor_sends_a_message_newer_than_its_negotiated_version() {
        // Goal: the version negotiated in the hello gates optional messages both ways.
        // Method: a puller and an answerer of a (hypothetical) version-1 session.
        let mut puller = Puller::new(1, 64);
        let round = puller.start_round(PullRequest::default(), Duration::ZERO);
        puller.stamp_request(UnixMillis(5), 0, Duration::ZERO);
        let mut sent = Vec::new();
        while let Some(transmit) = puller.poll_transmit() {
            sent.push(transmit);
        }
        assert_eq!(
            sent,
            vec![Transmit::Finish { round }],
            "agreement and clock are version 2"
        );
        let clock = wire::encode(&PeerMessage::Clock(ClockReading {
            sent_at: UnixMillis(5),
            answered_at: Some(UnixMillis(6)),
            stable_ms: 0,
        }));
        let refusal = puller.handle_answer_frame(round, &clock, Duration::ZERO);
        assert_eq!(refusal.map_err(|r| r.cause), Err("frame"));
        let mut answerer = Answerer::new(1);
        let agreement = wire::encode(&PeerMessage::Agreement(Default::default()));
        assert!(answerer.handle_request_frame(0, &agreement).is_err());
    }
}
