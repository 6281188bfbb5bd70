//! The peer sync protocol over QUIC: delta anti-entropy, pulled both ways over any session.
//! The protocol itself (the hello and its checks, the negotiated version, the frames of a
//! round, their bounds, the clock readings, how far behind a round leaves this node) is the
//! sans-IO session of `tally_core::session`; this module drives it: it carries the session's
//! frames over QUIC streams, reads the clocks, asks the engine (which owns the replica) for
//! pull requests, answers and merges, and keeps the peer's status, metrics and logs.
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
//! (`PROTOCOL_VERSION_MIN` to `PROTOCOL_VERSION` of `tally_core::wire`), and the actor a peer
//! claims must be on the node its certificate names. A refused peer or a frame that does not
//! decode closes the connection with the cause (both sides count it in
//! `tally_peer_refusals_total` by cause and log it once, see [`super::log_once`]), and nothing
//! of that round is merged. Dropped connections (including partitions longer than the idle
//! timeout) reconnect with jittered backoff and resume from version vectors.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_core::clock::ClockSample;
use tally_core::session::{
    Answerer, Established, Handshake, Puller, Refusal, RoundApplied, Transmit,
};
use tally_core::wire::Hello;
use tally_core::{ActorId, AnswerRefusal, NodeId, VoteIdKey};
use tokio::sync::{mpsc, oneshot, watch};

mod apply;
mod push;

pub use push::AckPeers;

use super::claims::{Claim, PullClaims};
use super::log_once::LogOnce;
use super::tls::check_peer_is;
use super::transport::{Backoff, FrameError, read_frame, write_frame};
use crate::clock_watch::ClockWatch;
use crate::config::PeerAddress;
use crate::engine::{Command, EngineError};
use crate::metrics::{Metrics, PeerMetrics};
use crate::peer::status::PeerBoard;
use tally_core::Clock;

/// How long one sync round may take before the connection is considered stuck.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// QUIC application error code for "refused: bad hello, certificate or frame".
const CLOSE_REFUSED: u32 = 1;

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
    /// This node's log failed: its engine merges nothing more, but answers pulls until the
    /// node stops (the hand-over of its acknowledged records, `engine::failure`).
    #[error("this node's log failed: it pulls nothing more")]
    LogFailed,
    /// A round took longer than [`ROUND_TIMEOUT`].
    #[error("sync round timed out")]
    Timeout,
}

impl From<Refusal> for SessionError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused {
            cause: refusal.cause,
            reason: refusal.reason,
        }
    }
}

impl SessionError {
    /// A refusal of this node's making.
    pub(super) fn refused(cause: &'static str, reason: impl Into<String>) -> Self {
        Self::Refused {
            cause,
            reason: reason.into(),
        }
    }

    /// Whether the session ended by an orderly close (a peer or this node stopping), not a
    /// fault worth a warning. This node's engine stopping is one: it stops as the node shuts
    /// down, or after a log failure that is logged as an error of its own.
    pub fn is_orderly(&self) -> bool {
        match self {
            Self::Connection(quinn::ConnectionError::ApplicationClosed(close)) => {
                close.error_code != quinn::VarInt::from_u32(CLOSE_REFUSED)
            }
            Self::Connection(quinn::ConnectionError::LocallyClosed) | Self::EngineStopped => true,
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
    /// The engine's lane for the push sessions' commands (replicated acks), served first
    /// ([`crate::engine::EngineIo::acks`]).
    pub ack_lane: mpsc::Sender<Command>,
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
    /// The ack peers, under `ack_mode = "replicated"` (pushes go to them).
    pub acks: Option<push::AckPeers>,
    /// Where peers' pushes go to be made durable (`None`: straight to the engine, answered
    /// after its log; see [`crate::push_journal`]).
    pub journal: Option<crate::push_journal::PushJournal>,
}

pub(super) async fn ask<T>(
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
        .map_err(|error| match error {
            EngineError::LogFailed => SessionError::LogFailed,
            _ => SessionError::EngineStopped,
        })
}

pub(super) async fn send_frame(
    send: &mut quinn::SendStream,
    frame: &[u8],
    metrics: &PeerMetrics,
    peer: &str,
) -> Result<(), SessionError> {
    write_frame(send, frame).await?;
    metrics
        .bytes_sent
        .get_or_create(&PeerMetrics::labels(peer))
        .inc_by(frame.len() as u64 + 4);
    Ok(())
}

/// Writes what a session direction has queued (`next` polls it) to `send`, finishing the
/// stream where the session ends it.
async fn flush(
    mut next: impl FnMut() -> Option<Transmit>,
    send: &mut quinn::SendStream,
    metrics: &PeerMetrics,
    peer: &str,
) -> Result<(), SessionError> {
    while let Some(transmit) = next() {
        match transmit {
            Transmit::Frame { frame, .. } => send_frame(send, &frame, metrics, peer).await?,
            Transmit::Finish { .. } => send.finish()?,
        }
    }
    Ok(())
}

/// Reads the next frame of a stream into `buffer`; `false` at the stream's end. (The
/// session decodes it: one that does not decode is a refusal.)
pub(super) async fn next_frame(
    recv: &mut quinn::RecvStream,
    buffer: &mut Vec<u8>,
    metrics: &PeerMetrics,
    peer: &str,
) -> Result<bool, SessionError> {
    match read_frame(recv, buffer).await {
        Ok(Some(())) => {}
        Ok(None) => return Ok(false),
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
    Ok(true)
}

/// Sends this node's hello and checks the peer's ([`Handshake::handle_hello`]: same cluster
/// and vote ID key, a protocol version this node speaks, and the actor it claims is on the
/// node its certificate names and, when dialling, the node dialled).
///
/// `peer` (the label refusals are counted and logged under) becomes the peer's node ID as
/// soon as its certificate vouches for it, so a refusal after that names the peer.
async fn exchange_hello(
    connection: &quinn::Connection,
    context: &SyncContext,
    dialled: Option<&NodeId>,
    peer: &mut String,
) -> Result<Established, SessionError> {
    let (mut send, mut recv) = if dialled.is_some() {
        connection.open_bi().await?
    } else {
        connection.accept_bi().await?
    };
    let label = dialled.map_or("incoming".to_owned(), |n| n.to_string());
    let mut own_hello = context.hello.clone();
    own_hello.actor = context.actor.borrow().clone();
    let handshake = Handshake::new(own_hello, context.vote_id_key.clone());
    let metrics = &context.metrics.peers;
    send_frame(&mut send, &handshake.hello_frame(), metrics, &label).await?;
    send.finish()?;
    let mut buffer = Vec::new();
    let frame = next_frame(&mut recv, &mut buffer, metrics, &label)
        .await?
        .then_some(buffer.as_slice());
    let certificate = |node: &NodeId| check_peer_is(connection, node).map_err(|e| e.to_string());
    let established = handshake
        .handle_hello(frame, dialled, certificate)
        .map_err(|refusal| {
            if let Some(named) = &refusal.peer {
                *peer = named.to_string();
            }
            SessionError::from(refusal)
        })?;
    *peer = established.peer.node.to_string();
    // Its older incarnations are superseded (their counters count only what their records
    // prove); the engine closing just means the node is stopping.
    let _ = context
        .engine
        .send(Command::PeerIncarnation {
            actor: established.peer.clone(),
        })
        .await;
    Ok(established)
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
    let established = exchange_hello(connection, context, None, peer).await?;
    let node = established.peer.node.clone();
    let listed = context.listed.contains(&node);
    if !listed {
        context.metrics.peers.declare(peer);
    }
    tracing::info!(%peer, listed, "peer connected (incoming)");
    let claim = context.claims.session(node, false);
    let (mut puller, mut answerer) = established.split(context.records_per_round_max);
    let pushes = established.push_channel(context.hello.actor.node.clone());
    let result = tokio::select! {
        biased;
        result = answer_pulls(connection, context, peer, &mut answerer) => result,
        result = push::run(connection, context, peer, pushes) => result,
        result = pull_rounds(connection, context, peer, &claim, &mut puller) => result,
    };
    disconnected(context, peer, &claim);
    result
}

/// Answers the peer's pulls on `connection` until it ends, one stream (round) at a time.
async fn answer_pulls(
    connection: &quinn::Connection,
    context: &SyncContext,
    peer: &str,
    answerer: &mut Answerer,
) -> Result<(), SessionError> {
    let metrics = &context.metrics.peers;
    let mut buffer = Vec::new();
    let mut round = 0u64;
    loop {
        let (mut send, mut recv) = connection.accept_bi().await?;
        while next_frame(&mut recv, &mut buffer, metrics, peer).await? {
            answerer.handle_request_frame(round, &buffer)?;
        }
        let Some(pull) = answerer.handle_request_end(round) else {
            unreachable!("round {round} is this stream's own, newer than every earlier one");
        };
        // The clock reading goes first, before the engine's answer, so the puller's round
        // trip measures the network rather than this node's engine queue.
        if let Some(request) = pull.clock {
            let (now, stable_ms) = (context.clock.now(), context.clock_watch.stable_ms());
            answerer.send_clock(round, request, now, stable_ms);
            flush(|| answerer.poll_transmit(), &mut send, metrics, peer).await?;
        }
        let records_max = context.records_per_round_max;
        let answer = ask(&context.engine, |reply| Command::PeerPull {
            peer: peer.to_owned(),
            request: pull.request,
            records_max,
            reply,
        })
        .await?;
        answerer.send_answer(round, answer);
        flush(|| answerer.poll_transmit(), &mut send, metrics, peer).await?;
        round += 1;
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
    let established = exchange_hello(connection, context, Some(&target.node), &mut label).await?;
    // Reachable again: the next outage is logged afresh.
    context
        .log_once
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .forget(&label, "unreachable");
    tracing::info!(peer = %label, "peer connected (dialled)");
    backoff.reset();
    let (mut puller, mut answerer) = established.split(context.records_per_round_max);
    let pushes = established.push_channel(context.hello.actor.node.clone());
    tokio::select! {
        biased;
        result = answer_pulls(connection, context, &label, &mut answerer) => result,
        result = push::run(connection, context, &label, pushes) => result,
        result = pull_rounds(connection, context, &label, claim, &mut puller) => result,
    }
}

/// Pull rounds over `connection` for as long as it lasts, while `claim` can be held (another
/// session pulling from the same peer makes this one wait, a tick at a time).
async fn pull_rounds(
    connection: &quinn::Connection,
    context: &SyncContext,
    label: &str,
    claim: &Claim,
    puller: &mut Puller,
) -> Result<(), SessionError> {
    // The session's monotonic clock: time since the rounds began.
    let origin = tokio::time::Instant::now();
    loop {
        if !claim.try_hold() {
            tokio::time::sleep(context.tick).await;
            continue;
        }
        set_connected(context, label, true);
        let round = pull_round(connection, context, label, puller, origin);
        let round = tokio::time::timeout(ROUND_TIMEOUT, round)
            .await
            .map_err(|_| SessionError::Timeout)?;
        let ask_again_at_once = match round {
            // Ending the session here would close the connection the peer pulls on too,
            // cutting off the hand-over of this node's records: stop pulling, keep answering.
            Err(SessionError::LogFailed) => return std::future::pending().await,
            round => round?,
        };
        if !ask_again_at_once {
            tokio::time::sleep(context.tick).await;
        }
    }
}

/// One round; returns whether to ask again at once (the answer was cut short).
async fn pull_round(
    connection: &quinn::Connection,
    context: &SyncContext,
    label: &str,
    puller: &mut Puller,
    origin: tokio::time::Instant,
) -> Result<bool, SessionError> {
    let request = ask(&context.engine, |reply| Command::PullRequest { reply }).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let metrics = &context.metrics.peers;
    let round = puller.start_round(request, origin.elapsed());
    flush(|| puller.poll_transmit(), &mut send, metrics, label).await?;
    // The reading is taken as the request leaves, after its poll frames.
    let (sent, sent_at) = (origin.elapsed(), context.clock.now());
    let steps_seen = context.clock_watch.steps_seen();
    puller.stamp_request(sent_at, context.clock_watch.stable_ms(), sent);
    flush(|| puller.poll_transmit(), &mut send, metrics, label).await?;
    let mut buffer = Vec::new();
    while next_frame(&mut recv, &mut buffer, metrics, label).await? {
        puller.handle_answer_frame(round, &buffer, origin.elapsed())?;
    }
    let Some(answer) = puller.handle_answer_end(round) else {
        unreachable!("round {round} is the one in flight, and its answer was not handed out");
    };
    let peer = NodeId::new(label).map_err(|e| SessionError::refused("node_id", e.to_string()))?;
    let applied = apply::apply_in_pieces(&context.engine, peer, answer).await?;
    note_answer_refusals(context, label, &applied.refused);
    let Some(outcome) = puller.finish_round(RoundApplied {
        records_added: applied.records_added,
        shared: &applied.shared,
        records_deferred: applied.records_deferred,
    }) else {
        unreachable!("round {round}'s answer was just handed out");
    };
    // After the answer is merged: a clock check this sample completes may lift the hold, and
    // the peer's windows must be in place before this node stamps a vote.
    let outcome = outcome?;
    context.clock_watch.note_shared(&applied.shared);
    if let Some(sample) = outcome.clock {
        record_clock(context, label, sample, steps_seen);
    }
    record_round(
        context,
        label,
        applied.records_added,
        outcome.records_behind,
    );
    Ok(outcome.ask_again_at_once)
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

/// Gives the clock watch the round's offset sample, and shows the estimate in the peer's
/// status.
fn record_clock(context: &SyncContext, label: &str, sample: ClockSample, steps_seen: u64) {
    let Some(offset) = context
        .clock_watch
        .record_unless_stepped(label, sample, steps_seen)
    else {
        return;
    };
    if let Ok(mut board) = context.board.lock() {
        board.entry(label.to_owned()).or_default().clock = offset;
    }
}

fn record_round(context: &SyncContext, label: &str, records_added: usize, behind: u64) {
    let now = context.clock.now();
    let labels = PeerMetrics::labels(label);
    let metrics = &context.metrics.peers;
    // A round completed: a session with the peer is up. The gauge says so as the board
    // below does, also when an older session of this peer ended after this one began and
    // marked the peer disconnected (seen: the board connected, the gauge 0, after a partition
    // healed in `tally/tests/cluster.rs`).
    metrics.connected.get_or_create(&labels).set(1);
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

#[cfg(test)]
mod tests {
    use super::SessionError;

    #[test]
    fn a_stop_is_orderly_and_a_fault_or_refusal_is_not() {
        assert!(SessionError::EngineStopped.is_orderly());
        assert!(SessionError::Connection(quinn::ConnectionError::LocallyClosed).is_orderly());
        assert!(!SessionError::Timeout.is_orderly());
        assert!(!SessionError::LogFailed.is_orderly());
        assert!(!SessionError::refused("cluster", "another cluster").is_orderly());
    }
}
