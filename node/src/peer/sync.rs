//! The peer sync protocol: delta anti-entropy over QUIC, pulled both ways over any session.
//!
//! A node dials every peer in its static list, and *pulls* from every authenticated peer of its
//! cluster it has a session with, whether it dialled the session or the peer did (the list says
//! where to dial, not whom to hear; see [`super::claims`]: once per peer, preferring the dialled
//! session). Each round it opens a bidirectional stream and sends a summary of what it knows of
//! poll definitions and, per poll, its definition and version vector; the peer answers with
//! every poll's definition, the declarations if the summaries differ, the records this node
//! lacks of every poll both define alike (at most `sync_records_per_round_max`, relayed records
//! included), those polls' counter state and the peer's own vectors (`tally_core::sync`). The
//! engine merges the answer in one step and logs the new records. A round whose answer was cut
//! short is followed at once by the next; otherwise the next comes after one sync tick. So a
//! lagging node catches up at full speed, an idle cluster exchanges counters every tick, and
//! nothing is buffered beyond one round per peer and direction (the flow control).
//!
//! A request ends with a clock reading (this node's wall clock as it leaves) and the answer
//! opens with the peer's (its wall clock, before its engine is asked, so the round trip
//! measures the network): the clock watch turns each pair into an offset sample
//! ([`crate::clock_watch`]), recorded once the answer is merged.
//!
//! Every connection starts with a Hello on its first stream, both ways: the cluster ID and
//! `vote_id_key` (by its proof) must match, the protocol version must be one this node speaks
//! ([`PROTOCOL_VERSION_MIN`] to [`PROTOCOL_VERSION`]), and the actor a peer claims must be on
//! the node its certificate names. A refused peer or a frame that does not decode
//! closes the connection with the cause (both sides count it in `tally_peer_refusals_total`
//! by cause and log it once, see [`super::log_once`]), and nothing of that round is merged.
//! Dropped connections (including partitions longer than the idle timeout) reconnect with
//! jittered backoff and resume from version vectors.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_core::clock::ClockSample;
use tally_core::wire::{
    self, ClockReading, Hello, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, PeerMessage,
};
use tally_core::{
    ActorId, AnswerRefusal, NodeId, PollId, PollRequest, PullAnswer, PullRequest, UnixMillis,
    VersionVector, VoteIdKey,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::claims::{Claim, PullClaims};
use super::log_once::LogOnce;
use super::tls::check_peer_is;
use super::transport::{Backoff, FrameError, read_frame, write_frame};
use crate::Clock;
use crate::clock_watch::{ClockWatch, PeerOffset};
use crate::config::PeerAddress;
use crate::engine::{Command, EngineError, PeerApplied};
use crate::metrics::{Metrics, PeerMetrics};

/// Most poll frames one pull request may carry (one per poll).
pub const PULL_REQUEST_POLLS_MAX: usize = 1_024;
// A node sends one vector per poll it holds: every pull it can send must be accepted.
const _: () = assert!(tally_core::limits::POLLS_MAX <= PULL_REQUEST_POLLS_MAX);

/// Most frames one pull answer may carry beyond its records (definitions, declarations,
/// counters and vectors of each poll, and its clock reading).
pub const PULL_ANSWER_EXTRA_FRAMES_MAX: usize = 4 * PULL_REQUEST_POLLS_MAX + 1;

/// How long one sync round may take before the connection is considered stuck.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// QUIC application error code for "refused: bad hello, certificate or frame".
const CLOSE_REFUSED: u32 = 1;

/// What a node knows about one peer, for readiness, results and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Whether it is in this node's peer list (others are peers that dialled this node).
    pub listed: bool,
    /// Whether a session this node pulls over is up.
    pub connected: bool,
    /// When the last round completed.
    pub last_contact: Option<UnixMillis>,
    /// Records the peer held that this node did not, after the last round.
    pub records_behind: u64,
    /// When this node last held everything the peer held.
    pub caught_up_at: Option<UnixMillis>,
    /// The peer's clock offset as last estimated.
    pub clock: Option<PeerOffset>,
}

/// Every peer's status, shared by the sync sessions (writers) and readers (results,
/// readiness). Not on the vote path.
pub type PeerBoard = Arc<Mutex<BTreeMap<String, PeerStatus>>>;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The QUIC connection failed or closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Dialling failed.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The peer's host name did not resolve.
    #[error("peer address lookup: {0}")]
    Resolve(String),
    /// Writing a frame to a stream failed.
    #[error("stream: {0}")]
    Stream(#[from] FrameError),
    /// A stream was finished after it had already been closed or reset.
    #[error("stream: {0}")]
    StreamClosed(#[from] quinn::ClosedStream),
    /// The peer was refused (hello, certificate, cluster, vote ID key, or a bad frame).
    #[error("peer refused ({cause}): {reason}")]
    Refused {
        /// One of [`crate::metrics::REFUSAL_CAUSES`].
        cause: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The peer refused this node, and closed the connection saying why.
    #[error("refused by the peer ({cause}): {reason}")]
    RefusedByPeer {
        /// The cause the peer named (one of [`crate::metrics::REFUSAL_CAUSES`]).
        cause: &'static str,
        /// What the peer said.
        reason: String,
    },
    /// The engine stopped.
    #[error("engine stopped")]
    EngineStopped,
    /// A round took longer than [`ROUND_TIMEOUT`].
    #[error("sync round timed out")]
    Timeout,
}

impl SessionError {
    /// A refusal of this node's making.
    fn refused(cause: &'static str, reason: impl Into<String>) -> Self {
        Self::Refused {
            cause,
            reason: reason.into(),
        }
    }

    /// Whether the session ended by an orderly close (a peer or this node stopping), not a
    /// fault worth a warning.
    pub fn is_orderly(&self) -> bool {
        match self {
            Self::Connection(quinn::ConnectionError::ApplicationClosed(close)) => {
                close.error_code != quinn::VarInt::from_u32(CLOSE_REFUSED)
            }
            Self::Connection(quinn::ConnectionError::LocallyClosed) => true,
            _ => false,
        }
    }

    /// The refusal cause, if this is a refusal (either side's).
    pub fn refusal_cause(&self) -> Option<&'static str> {
        match self {
            Self::Refused { cause, .. } | Self::RefusedByPeer { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// A close of the connection by the peer with [`CLOSE_REFUSED`] becomes
    /// [`Self::RefusedByPeer`], with the cause its reason names (`cause: what`).
    fn or_refused_by_peer(self) -> Self {
        let Self::Connection(quinn::ConnectionError::ApplicationClosed(close)) = &self else {
            return self;
        };
        if close.error_code != quinn::VarInt::from_u32(CLOSE_REFUSED) {
            return self;
        }
        let text = String::from_utf8_lossy(&close.reason).into_owned();
        let (named, reason) = text.split_once(": ").unwrap_or(("other", text.as_str()));
        let cause = crate::metrics::REFUSAL_CAUSES
            .into_iter()
            .find(|c| *c == named)
            .unwrap_or("other");
        Self::RefusedByPeer {
            cause,
            reason: reason.to_owned(),
        }
    }

    /// `self`, or the connection's close if the session failed on a stream of a connection
    /// that closed in an orderly way: a peer's goodbye that lands while a frame is being
    /// written fails that write ("connection lost"), and the close is the real cause.
    fn or_orderly_close_of(self, connection: &quinn::Connection) -> Self {
        let orderly_close = connection.close_reason().filter(|reason| {
            matches!(
                reason,
                quinn::ConnectionError::ApplicationClosed(_)
                    | quinn::ConnectionError::LocallyClosed
            )
        });
        let error = match (self, orderly_close) {
            (Self::Stream(_) | Self::StreamClosed(_) | Self::Connection(_), Some(reason)) => {
                Self::Connection(reason)
            }
            (error, _) => error,
        };
        error.or_refused_by_peer()
    }
}

/// What every session needs.
pub struct SyncContext {
    /// The engine's command queue.
    pub engine: mpsc::Sender<Command>,
    /// This node's hello (its actor is replaced by the current one, [`SyncContext::actor`]).
    pub hello: Hello,
    /// This node's current actor: it changes when the node moves to a new incarnation, and
    /// each new connection's hello names it.
    pub actor: watch::Receiver<ActorId>,
    /// The cluster's vote ID key, to check the proof in a peer's hello.
    pub vote_id_key: VoteIdKey,
    /// The peers this node lists (and dials).
    pub listed: BTreeSet<NodeId>,
    /// Which session pulls from each peer.
    pub claims: Arc<PullClaims>,
    /// Recurring refusals, logged once per peer and cause.
    pub log_once: Mutex<LogOnce>,
    /// Time between rounds when caught up.
    pub tick: Duration,
    /// Most records per round.
    pub records_per_round_max: usize,
    /// Peer statuses.
    pub board: PeerBoard,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Measures peers' clock offsets and judges this node's clock.
    pub clock_watch: Arc<ClockWatch>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

async fn ask<T>(
    engine: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command,
) -> Result<T, SessionError> {
    let (reply, answer) = oneshot::channel();
    engine
        .send(command(reply))
        .await
        .map_err(|_| SessionError::EngineStopped)?;
    answer
        .await
        .map_err(|_| SessionError::EngineStopped)?
        .map_err(|_| SessionError::EngineStopped)
}

async fn send_message(
    send: &mut quinn::SendStream,
    message: &PeerMessage,
    metrics: &PeerMetrics,
    peer: &str,
) -> Result<(), SessionError> {
    let frame = wire::encode(message);
    write_frame(send, &frame).await?;
    metrics
        .bytes_sent
        .get_or_create(&PeerMetrics::labels(peer))
        .inc_by(frame.len() as u64 + 4);
    Ok(())
}

/// Reads the next message of a stream, `None` at its end; a frame that does not decode is a
/// refusal.
async fn next_message(
    recv: &mut quinn::RecvStream,
    buffer: &mut Vec<u8>,
    metrics: &PeerMetrics,
    peer: &str,
) -> Result<Option<PeerMessage>, SessionError> {
    match read_frame(recv, buffer).await {
        Ok(Some(())) => {}
        Ok(None) => return Ok(None),
        // A lost connection is not the peer's fault; a malformed frame is.
        Err(error) => {
            return Err(match error.connection_error() {
                Some(lost) => SessionError::Connection(lost.clone()),
                None => SessionError::refused("frame", format!("bad frame: {error}")),
            });
        }
    }
    metrics
        .bytes_received
        .get_or_create(&PeerMetrics::labels(peer))
        .inc_by(buffer.len() as u64 + 4);
    wire::decode(buffer).map(Some).map_err(|e| {
        // A hello of another protocol version may not decode as ours: say which it is.
        match wire::hello_protocol_version(buffer) {
            Some(version) if !speaks(version) => protocol_refusal(version),
            _ => SessionError::refused("frame", format!("undecodable frame: {e}")),
        }
    })
}

/// Whether this node syncs with a peer of protocol `version`.
fn speaks(version: u16) -> bool {
    (PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version)
}

/// The refusal of a peer of a protocol version this node does not speak.
fn protocol_refusal(version: u16) -> SessionError {
    let ours = if PROTOCOL_VERSION_MIN == PROTOCOL_VERSION {
        PROTOCOL_VERSION.to_string()
    } else {
        format!("{PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}")
    };
    SessionError::refused(
        "protocol",
        format!("peer speaks protocol {version}, this node {ours}"),
    )
}

/// Sends this node's hello and checks the peer's: same cluster and vote ID key, a protocol
/// version this node speaks, and the actor it claims is on the node its certificate names
/// (and, when dialling, the node dialled).
///
/// `peer` (the label refusals are counted and logged under) becomes the peer's node ID as
/// soon as its certificate vouches for it, so a refusal after that names the peer.
async fn exchange_hello(
    connection: &quinn::Connection,
    context: &SyncContext,
    dialled: Option<&NodeId>,
    peer: &mut String,
) -> Result<NodeId, SessionError> {
    let (mut send, mut recv) = if dialled.is_some() {
        connection.open_bi().await?
    } else {
        connection.accept_bi().await?
    };
    let label = dialled.map_or("incoming".to_owned(), |n| n.to_string());
    let mut own_hello = context.hello.clone();
    own_hello.actor = context.actor.borrow().clone();
    send_message(
        &mut send,
        &PeerMessage::Hello(own_hello),
        &context.metrics.peers,
        &label,
    )
    .await?;
    send.finish()?;
    let mut buffer = Vec::new();
    let hello = match next_message(&mut recv, &mut buffer, &context.metrics.peers, &label).await? {
        Some(PeerMessage::Hello(hello)) => hello,
        other => {
            return Err(SessionError::refused(
                "hello",
                format!("expected a hello, got {other:?}"),
            ));
        }
    };
    if hello.cluster_id != context.hello.cluster_id {
        return Err(SessionError::refused(
            "cluster_id",
            format!(
                "peer belongs to cluster {:?}, this node to {:?}",
                hello.cluster_id, context.hello.cluster_id
            ),
        ));
    }
    if !speaks(hello.protocol_version) {
        return Err(protocol_refusal(hello.protocol_version));
    }
    if let Some(dialled) = dialled {
        if &hello.actor.node != dialled {
            return Err(SessionError::refused(
                "node_id",
                format!(
                    "dialled {dialled} but the peer says it is {}",
                    hello.actor.node
                ),
            ));
        }
    }
    check_peer_is(connection, &hello.actor.node)
        .map_err(|e| SessionError::refused("certificate", format!("certificate: {e}")))?;
    *peer = hello.actor.node.to_string();
    context
        .vote_id_key
        .check_proof(&hello.vote_id_key_proof)
        .map_err(|why| SessionError::refused("vote_id_key", why))?;
    // Its older incarnations are superseded (their counters count only what their records
    // prove); the engine closing just means the node is stopping.
    let node = hello.actor.node.clone();
    let _ = context
        .engine
        .send(Command::PeerIncarnation { actor: hello.actor })
        .await;
    Ok(node)
}

/// Ends a session that failed: a refusal of ours closes the connection saying why (`cause:
/// reason`), and every refusal (ours or the peer's) is counted by cause and logged once per
/// peer and cause; other failures are logged as before.
fn end_session(
    connection: &quinn::Connection,
    error: &SessionError,
    context: &SyncContext,
    peer: &str,
    remote: SocketAddr,
) {
    if let SessionError::Refused { cause, reason } = error {
        let text = format!("{cause}: {reason}");
        let bytes = text.as_bytes();
        connection.close(CLOSE_REFUSED.into(), &bytes[..bytes.len().min(256)]);
    }
    if let Some(cause) = error.refusal_cause() {
        let family = &context.metrics.peers.refusals;
        if let Some(unlogged) = count_and_note(context, family, peer, cause) {
            tracing::warn!(%peer, %remote, cause, %error, unlogged, "peer refused");
        }
    } else if error.is_orderly() {
        tracing::info!(%peer, %remote, %error, "peer session closed; reconnecting if dialled");
    } else {
        tracing::warn!(%peer, %remote, %error, "peer session ended; reconnecting if dialled");
    }
}

/// Counts one occurrence of `cause` from `peer` in `family`; returns `Some(unlogged)` when it
/// should be logged now (see [`LogOnce`]).
fn count_and_note(
    context: &SyncContext,
    family: &prometheus_client::metrics::family::Family<
        crate::metrics::PeerLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    peer: &str,
    cause: &'static str,
) -> Option<u64> {
    family
        .get_or_create(&PeerMetrics::cause_labels(peer, cause))
        .inc();
    let now = context.clock.now();
    context
        .log_once
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .note(peer, cause, now)
}

// ---------------------------------------------------------------- answering side (server)

/// Accepts incoming peer connections until the endpoint closes.
pub async fn serve_incoming(endpoint: quinn::Endpoint, context: Arc<SyncContext>) {
    while let Some(incoming) = endpoint.accept().await {
        let context = context.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    let labels = PeerMetrics::cause_labels("incoming", "certificate");
                    context.metrics.peers.refusals.get_or_create(&labels).inc();
                    tracing::warn!(%remote, %error, "peer connection refused during handshake");
                    return;
                }
            };
            let mut peer = "incoming".to_owned();
            if let Err(error) = incoming_session(&connection, &context, &mut peer).await {
                let error = error.or_orderly_close_of(&connection);
                end_session(&connection, &error, &context, &peer, remote);
            }
        });
    }
}

/// A session a peer dialled: answer its pulls, and pull from it too while no session this
/// node dialled does (see [`super::claims`]). `peer` becomes the peer's name after its hello.
async fn incoming_session(
    connection: &quinn::Connection,
    context: &SyncContext,
    peer: &mut String,
) -> Result<(), SessionError> {
    let node = exchange_hello(connection, context, None, peer).await?;
    let listed = context.listed.contains(&node);
    if !listed {
        context.metrics.peers.declare(peer);
    }
    tracing::info!(%peer, listed, "peer connected (incoming)");
    let claim = context.claims.session(node, false);
    let result = tokio::select! {
        biased;
        result = answer_pulls(connection, context, peer) => result,
        result = pull_rounds(connection, context, peer, &claim) => result,
    };
    disconnected(context, peer, &claim);
    result
}

/// Answers the peer's pulls on `connection` until it ends.
async fn answer_pulls(
    connection: &quinn::Connection,
    context: &SyncContext,
    peer: &str,
) -> Result<(), SessionError> {
    loop {
        let (mut send, mut recv) = connection.accept_bi().await?;
        let (request, clock_request) = read_request(&mut recv, context, peer).await?;
        // The clock reading goes first, before the engine's answer, so the puller's round
        // trip measures the network rather than this node's engine queue.
        if let Some(request) = clock_request {
            let reading = ClockReading {
                sent_at: request.sent_at,
                answered_at: Some(context.clock.now()),
                stable_ms: context.clock_watch.stable_ms(),
            };
            let message = PeerMessage::Clock(reading);
            send_message(&mut send, &message, &context.metrics.peers, peer).await?;
        }
        let records_max = context.records_per_round_max;
        let answer = ask(&context.engine, |reply| Command::PeerPull {
            peer: peer.to_owned(),
            request,
            records_max,
            reply,
        })
        .await?;
        send_answer(&mut send, answer, &context.metrics.peers, peer).await?;
        send.finish()?;
    }
}

/// Reads one pull request whole: its agreement summary, one frame per poll and the puller's
/// clock reading.
async fn read_request(
    recv: &mut quinn::RecvStream,
    context: &SyncContext,
    peer: &str,
) -> Result<(PullRequest, Option<ClockReading>), SessionError> {
    let mut buffer = Vec::new();
    let mut request = PullRequest::default();
    let mut clock = None;
    while let Some(message) = next_message(recv, &mut buffer, &context.metrics.peers, peer).await? {
        match message {
            PeerMessage::Clock(reading) if reading.answered_at.is_none() && clock.is_none() => {
                clock = Some(reading);
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
                return Err(SessionError::refused(
                    "frame",
                    format!(
                        "unexpected message in a pull request: {}",
                        message_kind(&other)
                    ),
                ));
            }
        }
    }
    Ok((request, clock))
}

async fn send_answer(
    send: &mut quinn::SendStream,
    answer: PullAnswer,
    metrics: &PeerMetrics,
    peer: &str,
) -> Result<(), SessionError> {
    for spec in answer.polls {
        send_message(send, &PeerMessage::Poll(spec), metrics, peer).await?;
    }
    for (poll, entries) in answer.declarations {
        let message = PeerMessage::Declarations { poll, entries };
        send_message(send, &message, metrics, peer).await?;
    }
    for batch in answer.batches {
        send_message(send, &PeerMessage::Records(batch), metrics, peer).await?;
    }
    for state in answer.counters {
        send_message(send, &PeerMessage::Counters(state), metrics, peer).await?;
    }
    for (poll, vector) in answer.vectors {
        send_message(
            send,
            &PeerMessage::VersionVector { poll, vector },
            metrics,
            peer,
        )
        .await?;
    }
    Ok(())
}

fn message_kind(message: &PeerMessage) -> &'static str {
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
    }
}

// ---------------------------------------------------------------- pulling side (client)

/// One peer to pull from.
#[derive(Debug, Clone)]
pub struct PeerTarget {
    /// Its node ID (the certificate must name it).
    pub node: NodeId,
    /// Its QUIC address (a host name is looked up at every connection attempt).
    pub address: PeerAddress,
}

/// The socket address to dial `address` at: the literal, or the first answer of a lookup.
async fn resolve(address: &PeerAddress) -> Result<SocketAddr, SessionError> {
    if let Some(literal) = address.literal() {
        return Ok(literal);
    }
    let mut answers = tokio::net::lookup_host(address.as_str())
        .await
        .map_err(|e| SessionError::Resolve(format!("{address}: {e}")))?;
    answers
        .next()
        .ok_or_else(|| SessionError::Resolve(format!("{address}: no addresses")))
}

/// Pulls from `target` forever: connect, hello, rounds (and answers the peer's pulls on the
/// same connection); on any failure, mark the peer disconnected, back off (jittered) and
/// reconnect.
pub async fn pull_from(
    endpoint: quinn::Endpoint,
    target: PeerTarget,
    context: Arc<SyncContext>,
    rng_seed: u64,
    mut stopping: watch::Receiver<bool>,
) {
    let label = target.node.to_string();
    let mut backoff = Backoff::new(rng_seed);
    loop {
        let claim = context.claims.session(target.node.clone(), true);
        // `Err` only for a failure before a session began (a session's end is logged by
        // `end_session`).
        let session = async {
            let address = resolve(&target.address).await?;
            let connection = endpoint.connect(address, target.node.as_str())?.await?;
            let result = dialled_session(&connection, &target, &context, &claim, &mut backoff)
                .await
                .map_err(|error| error.or_orderly_close_of(&connection));
            if let Err(error) = &result {
                end_session(&connection, error, &context, &label, address);
            }
            Ok(())
        };
        let result: Result<(), SessionError> = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            result = session => result,
        };
        disconnected(&context, &label, &claim);
        if let Err(error) = &result {
            note_unreachable(&context, &label, error);
        }
        drop(claim);
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// A dial that failed before any session: the peer's certificate refused in the handshake
/// (counted and logged as a refusal), or the peer unreachable (no answer, a lookup that
/// failed); each is logged once per peer and cause, then at most every ten minutes, not on
/// every retry.
fn note_unreachable(context: &SyncContext, peer: &str, error: &SessionError) {
    let refused = matches!(error, SessionError::Connection(lost)
        if super::tls::refusal_alert(lost).is_some());
    if refused {
        let family = &context.metrics.peers.refusals;
        if let Some(unlogged) = count_and_note(context, family, peer, "certificate") {
            tracing::warn!(%peer, cause = "certificate", %error, unlogged, "peer refused");
        }
        return;
    }
    let now = context.clock.now();
    let unlogged = context
        .log_once
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .note(peer, "unreachable", now);
    if let Some(unlogged) = unlogged {
        tracing::warn!(%peer, %error, unlogged, "peer unreachable; retrying with backoff");
    }
}

fn set_connected(context: &SyncContext, peer: &str, connected: bool) {
    context
        .metrics
        .peers
        .connected
        .get_or_create(&PeerMetrics::labels(peer))
        .set(i64::from(connected));
    if let Ok(mut board) = context.board.lock() {
        board.entry(peer.to_owned()).or_default().connected = connected;
    }
}

/// A session that pulled ended: the peer is disconnected unless another session of it pulls.
fn disconnected(context: &SyncContext, peer: &str, claim: &Claim) {
    if !claim.held_elsewhere() {
        set_connected(context, peer, false);
    }
}

/// A session this node dialled: pull from the peer, and answer its pulls if it makes any
/// (it does when it does not list this node, or its own dialled session is down).
async fn dialled_session(
    connection: &quinn::Connection,
    target: &PeerTarget,
    context: &SyncContext,
    claim: &Claim,
    backoff: &mut Backoff,
) -> Result<(), SessionError> {
    let mut label = target.node.to_string();
    exchange_hello(connection, context, Some(&target.node), &mut label).await?;
    // Reachable again: the next outage is logged afresh.
    context
        .log_once
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .forget(&label, "unreachable");
    tracing::info!(peer = %label, "peer connected (dialled)");
    backoff.reset();
    tokio::select! {
        biased;
        result = answer_pulls(connection, context, &label) => result,
        result = pull_rounds(connection, context, &label, claim) => result,
    }
}

/// Pull rounds over `connection` for as long as it lasts, while `claim` can be held (another
/// session pulling from the same peer makes this one wait, a tick at a time).
async fn pull_rounds(
    connection: &quinn::Connection,
    context: &SyncContext,
    label: &str,
    claim: &Claim,
) -> Result<(), SessionError> {
    loop {
        if !claim.try_hold() {
            tokio::time::sleep(context.tick).await;
            continue;
        }
        set_connected(context, label, true);
        let truncated = tokio::time::timeout(ROUND_TIMEOUT, pull_round(connection, context, label))
            .await
            .map_err(|_| SessionError::Timeout)??;
        if !truncated {
            tokio::time::sleep(context.tick).await;
        }
    }
}

/// One round; returns whether the answer was cut short (ask again at once).
async fn pull_round(
    connection: &quinn::Connection,
    context: &SyncContext,
    label: &str,
) -> Result<bool, SessionError> {
    let request = ask(&context.engine, |reply| Command::PullRequest { reply }).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let metrics = &context.metrics.peers;
    send_message(
        &mut send,
        &PeerMessage::Agreement(request.agreement),
        metrics,
        label,
    )
    .await?;
    for poll in &request.polls {
        let message = PeerMessage::PollVector {
            poll: poll.poll.clone(),
            definition: poll.definition,
            vector: poll.vector.clone(),
        };
        send_message(&mut send, &message, metrics, label).await?;
    }
    let sent = tokio::time::Instant::now();
    let sent_at = context.clock.now();
    let reading = ClockReading {
        sent_at,
        answered_at: None,
        stable_ms: context.clock_watch.stable_ms(),
    };
    send_message(&mut send, &PeerMessage::Clock(reading), metrics, label).await?;
    send.finish()?;
    let ReadAnswer {
        answer,
        records: records_in_answer,
        clock,
    } = read_answer(&mut recv, context, label).await?;
    let theirs = answer.vectors.clone();
    let peer = NodeId::new(label).map_err(|e| SessionError::refused("node_id", e.to_string()))?;
    let applied: PeerApplied = ask(&context.engine, |reply| Command::PeerApply {
        peer,
        answer,
        reply,
    })
    .await?;
    note_answer_refusals(context, label, &applied.refused);
    // After the answer is merged: a clock check this sample completes may lift the hold, and
    // the peer's windows must be in place before this node stamps a vote.
    if let Some((reading, arrived)) = clock {
        record_clock(context, label, sent_at, sent, reading, arrived)?;
    }
    let mine: Vec<(PollId, VersionVector)> = request
        .polls
        .into_iter()
        .map(|p| (p.poll, p.vector))
        .collect();
    let shared: Vec<(PollId, VersionVector)> = theirs
        .into_iter()
        .filter(|(poll, _)| applied.shared.contains(poll))
        .collect();
    let behind_before = records_behind(&mine, &shared);
    let behind = behind_before.saturating_sub(applied.records_added as u64);
    record_round(context, label, applied.records_added, behind);
    // Records deferred for a low disk: asking again at once would only fetch them again.
    Ok(records_in_answer >= context.records_per_round_max && applied.records_deferred == 0)
}

/// Counts refused parts of an answer by cause, and logs each cause once per peer (a peer
/// whose every answer carries the same bad part would otherwise log it every tick).
fn note_answer_refusals(context: &SyncContext, peer: &str, refused: &[AnswerRefusal]) {
    for refusal in refused {
        let family = &context.metrics.peers.answer_refusals;
        if let Some(unlogged) = count_and_note(context, family, peer, refusal.cause) {
            tracing::warn!(
                %peer,
                cause = refusal.cause,
                unlogged,
                "part of a peer's answer refused: {}",
                refusal.message
            );
        }
    }
}

/// One answer, read whole.
struct ReadAnswer {
    answer: PullAnswer,
    /// How many records it held.
    records: usize,
    /// The peer's clock reading and when it arrived.
    clock: Option<(ClockReading, tokio::time::Instant)>,
}

/// Reads one answer whole.
async fn read_answer(
    recv: &mut quinn::RecvStream,
    context: &SyncContext,
    label: &str,
) -> Result<ReadAnswer, SessionError> {
    let records_limit = context.records_per_round_max + tally_core::limits::RECORDS_PER_BATCH_MAX;
    let mut answer = PullAnswer::default();
    let mut clock = None;
    let mut records = 0usize;
    let mut other_frames = 0usize;
    let mut buffer = Vec::new();
    while let Some(message) = next_message(recv, &mut buffer, &context.metrics.peers, label).await?
    {
        match message {
            PeerMessage::Records(batch) => {
                records += batch.len();
                if records > records_limit {
                    return Err(SessionError::refused(
                        "frame",
                        format!("answer holds over {records_limit} records"),
                    ));
                }
                answer.batches.push(batch);
                continue;
            }
            PeerMessage::Poll(spec) => answer.polls.push(spec),
            PeerMessage::Declarations { poll, entries } => {
                answer.declarations.push((poll, entries));
            }
            PeerMessage::Counters(state) => answer.counters.push(state),
            PeerMessage::VersionVector { poll, vector } => answer.vectors.push((poll, vector)),
            PeerMessage::Clock(reading) if clock.is_none() => {
                clock = Some((reading, tokio::time::Instant::now()));
            }
            other @ (PeerMessage::Hello(_)
            | PeerMessage::Agreement(_)
            | PeerMessage::PollVector { .. }
            | PeerMessage::Clock(_)) => {
                return Err(SessionError::refused(
                    "frame",
                    format!("unexpected message in an answer: {}", message_kind(&other)),
                ));
            }
        }
        other_frames += 1;
        if other_frames > PULL_ANSWER_EXTRA_FRAMES_MAX {
            return Err(SessionError::refused(
                "frame",
                "answer holds too many frames",
            ));
        }
    }
    Ok(ReadAnswer {
        answer,
        records,
        clock,
    })
}

/// Turns the peer's clock reading into a sample for the clock watch, and shows the estimate
/// in the peer's status. A reading that does not echo this round's request is refused.
fn record_clock(
    context: &SyncContext,
    label: &str,
    sent_at: UnixMillis,
    sent: tokio::time::Instant,
    reading: ClockReading,
    arrived: tokio::time::Instant,
) -> Result<(), SessionError> {
    let (Some(peer_at), true) = (reading.answered_at, reading.sent_at == sent_at) else {
        return Err(SessionError::refused(
            "frame",
            format!("clock reading {reading:?} does not answer the request sent at {sent_at:?}"),
        ));
    };
    let round_trip = arrived.saturating_duration_since(sent);
    let sample = ClockSample {
        sent_at,
        peer_at,
        round_trip_ms: u64::try_from(round_trip.as_millis()).unwrap_or(u64::MAX),
        peer_stable_ms: reading.stable_ms,
        received_at_ms: 0,
    };
    let offset = context.clock_watch.record(label, sample);
    if let Ok(mut board) = context.board.lock() {
        board.entry(label.to_owned()).or_default().clock = offset;
    }
    Ok(())
}

/// Records the peer holds that this node did not, per its vectors: Σ max(0, theirs − mine).
fn records_behind(mine: &[(PollId, VersionVector)], theirs: &[(PollId, VersionVector)]) -> u64 {
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

fn record_round(context: &SyncContext, label: &str, records_added: usize, behind: u64) {
    let now = context.clock.now();
    let labels = PeerMetrics::labels(label);
    let metrics = &context.metrics.peers;
    metrics
        .records_received
        .get_or_create(&labels)
        .inc_by(records_added as u64);
    metrics
        .last_contact_seconds
        .get_or_create(&labels)
        .set((now.0 / 1000) as i64);
    metrics
        .records_behind
        .get_or_create(&labels)
        .set(behind as i64);
    let Ok(mut board) = context.board.lock() else {
        return;
    };
    let status = board.entry(label.to_owned()).or_default();
    status.connected = true;
    status.last_contact = Some(now);
    status.records_behind = behind;
    if behind == 0 {
        status.caught_up_at = Some(now);
    }
    let seconds_behind = status
        .caught_up_at
        .map_or(0, |at| now.0.saturating_sub(at.0) / 1000);
    metrics
        .seconds_behind
        .get_or_create(&labels)
        .set(seconds_behind as i64);
}
