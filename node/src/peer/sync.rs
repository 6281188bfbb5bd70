//! The peer sync protocol: delta anti-entropy over QUIC, one pull loop per configured peer.
//!
//! A node dials every peer in its static list and *pulls*: each round it opens a bidirectional
//! stream, sends its version vector of every poll, and the peer answers with every poll's
//! definition, the records this node lacks (at most `sync_records_per_round_max`, relayed
//! records included), every poll's counter state and the peer's own vectors. The engine
//! merges the answer and logs the new records. A round whose answer was cut short is followed
//! at once by the next; otherwise the next comes after one sync tick. So a lagging node
//! catches up at full speed, an idle cluster exchanges counters every tick, and nothing is
//! buffered beyond one round per peer (the flow control).
//!
//! With a peer of protocol 2 or later, a request ends with a clock reading (this node's wall
//! clock as it leaves) and the answer opens with the peer's (its wall clock, before its engine
//! is asked, so the round trip measures the network): the clock watch turns each pair into an
//! offset sample ([`crate::clock_watch`]), recorded once the answer is merged.
//!
//! Every connection starts with a Hello on its first stream, both ways: the cluster ID must
//! match, the protocol version must be this node's or the previous one, and the actor a peer
//! claims must be on the node its certificate names. A refused peer or a frame that does not decode closes the connection
//! with a logged error, and nothing of that round is merged. Dropped connections (including
//! partitions longer than the idle timeout) reconnect with jittered backoff and resume from
//! version vectors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_core::clock::ClockSample;
use tally_core::wire::{
    self, CLOCK_PROTOCOL_VERSION, ClockReading, CounterState, Hello, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN, PeerMessage,
};
use tally_core::{NodeId, PollId, PollSpec, RecordBatch, UnixMillis, VersionVector};
use tokio::sync::{mpsc, oneshot, watch};

use super::tls::check_peer_is;
use super::transport::{Backoff, FrameError, read_frame, write_frame};
use crate::Clock;
use crate::clock_watch::{ClockWatch, PeerOffset};
use crate::config::PeerAddress;
use crate::engine::{Command, EngineError, PeerApplied, PullReply};
use crate::metrics::{Metrics, PeerMetrics};

/// Most version-vector frames one pull request may carry (one per poll).
pub const PULL_REQUEST_POLLS_MAX: usize = 1_024;
// A node sends one vector per poll it holds: every pull it can send must be accepted.
const _: () = assert!(tally_core::limits::POLLS_MAX <= PULL_REQUEST_POLLS_MAX);

/// Most frames one pull answer may carry beyond its records (polls, counters, vectors).
pub const PULL_ANSWER_EXTRA_FRAMES_MAX: usize = 3 * PULL_REQUEST_POLLS_MAX;

/// How long one sync round may take before the connection is considered stuck.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// QUIC application error code for "refused: bad hello, certificate or frame".
const CLOSE_REFUSED: u32 = 1;

/// What a node knows about one peer, for readiness, results and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Whether a session is up.
    pub connected: bool,
    /// When the last round completed.
    pub last_contact: Option<UnixMillis>,
    /// Records the peer held that this node did not, after the last round.
    pub records_behind: u64,
    /// When this node last held everything the peer held.
    pub caught_up_at: Option<UnixMillis>,
    /// The peer's clock offset as last estimated (peers of protocol 1 carry no readings).
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
    /// The peer was refused (hello, certificate, cluster, or a bad frame).
    #[error("peer refused: {0}")]
    Refused(String),
    /// The engine stopped.
    #[error("engine stopped")]
    EngineStopped,
    /// A round took longer than [`ROUND_TIMEOUT`].
    #[error("sync round timed out")]
    Timeout,
}

impl SessionError {
    /// Whether the session ended by an orderly close (a peer or this node stopping), not a
    /// fault worth a warning.
    pub fn is_orderly(&self) -> bool {
        matches!(
            self,
            Self::Connection(
                quinn::ConnectionError::ApplicationClosed(_)
                    | quinn::ConnectionError::LocallyClosed
            )
        )
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
        match (self, orderly_close) {
            (Self::Stream(_) | Self::StreamClosed(_) | Self::Connection(_), Some(reason)) => {
                Self::Connection(reason)
            }
            (error, _) => error,
        }
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
    pub actor: watch::Receiver<tally_core::ActorId>,
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
                None => SessionError::Refused(format!("bad frame: {error}")),
            });
        }
    }
    metrics
        .bytes_received
        .get_or_create(&PeerMetrics::labels(peer))
        .inc_by(buffer.len() as u64 + 4);
    wire::decode(buffer)
        .map(Some)
        .map_err(|e| SessionError::Refused(format!("undecodable frame: {e}")))
}

/// Sends this node's hello and checks the peer's: same cluster, a protocol version this node
/// speaks, and the actor it claims is on the node its certificate names (and, when dialling,
/// the node dialled). Returns the peer's node and protocol version.
async fn exchange_hello(
    connection: &quinn::Connection,
    context: &SyncContext,
    dialled: Option<&NodeId>,
) -> Result<(NodeId, u16), SessionError> {
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
            return Err(SessionError::Refused(format!(
                "expected a hello, got {other:?}"
            )));
        }
    };
    if hello.cluster_id != context.hello.cluster_id {
        return Err(SessionError::Refused(format!(
            "peer belongs to cluster {:?}, this node to {:?}",
            hello.cluster_id, context.hello.cluster_id
        )));
    }
    if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
        return Err(SessionError::Refused(format!(
            "peer speaks protocol {}, this node {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}",
            hello.protocol_version
        )));
    }
    if let Some(dialled) = dialled {
        if &hello.actor.node != dialled {
            return Err(SessionError::Refused(format!(
                "dialled {dialled} but the peer says it is {}",
                hello.actor.node
            )));
        }
    }
    check_peer_is(connection, &hello.actor.node)
        .map_err(|e| SessionError::Refused(format!("certificate: {e}")))?;
    // Its older incarnations are superseded (their counters count only what their records
    // prove); the engine closing just means the node is stopping.
    let node = hello.actor.node.clone();
    let _ = context
        .engine
        .send(Command::PeerIncarnation { actor: hello.actor })
        .await;
    Ok((node, hello.protocol_version))
}

fn refuse(connection: &quinn::Connection, error: &SessionError, metrics: &PeerMetrics, peer: &str) {
    if let SessionError::Refused(reason) = error {
        metrics
            .refusals
            .get_or_create(&PeerMetrics::labels(peer))
            .inc();
        let reason = reason.as_bytes();
        connection.close(CLOSE_REFUSED.into(), &reason[..reason.len().min(256)]);
    }
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
                    let labels = PeerMetrics::labels("incoming");
                    context.metrics.peers.refusals.get_or_create(&labels).inc();
                    tracing::warn!(%remote, %error, "peer connection refused during handshake");
                    return;
                }
            };
            if let Err(error) = answer_peer(&connection, &context).await {
                let error = error.or_orderly_close_of(&connection);
                refuse(&connection, &error, &context.metrics.peers, "incoming");
                if error.is_orderly() {
                    tracing::debug!(%remote, %error, "incoming peer session closed");
                } else {
                    tracing::warn!(%remote, %error, "incoming peer session ended");
                }
            }
        });
    }
}

async fn answer_peer(
    connection: &quinn::Connection,
    context: &SyncContext,
) -> Result<(), SessionError> {
    let (peer, _) = exchange_hello(connection, context, None).await?;
    let label = peer.to_string();
    tracing::info!(peer = %label, "peer connected (incoming)");
    loop {
        let (mut send, mut recv) = connection.accept_bi().await?;
        let mut buffer = Vec::new();
        let mut vectors = Vec::new();
        let mut clock_request = None;
        while let Some(message) =
            next_message(&mut recv, &mut buffer, &context.metrics.peers, &label).await?
        {
            match message {
                PeerMessage::VersionVector { poll, vector }
                    if vectors.len() < PULL_REQUEST_POLLS_MAX =>
                {
                    vectors.push((poll, vector));
                }
                PeerMessage::Clock(reading)
                    if reading.answered_at.is_none() && clock_request.is_none() =>
                {
                    clock_request = Some(reading);
                }
                other => {
                    return Err(SessionError::Refused(format!(
                        "unexpected message in a pull request: {}",
                        message_kind(&other)
                    )));
                }
            }
        }
        // The clock reading goes first, before the engine's answer, so the puller's round
        // trip measures the network rather than this node's engine queue.
        if let Some(request) = clock_request {
            let reading = ClockReading {
                sent_at: request.sent_at,
                answered_at: Some(context.clock.now()),
                stable_ms: context.clock_watch.stable_ms(),
            };
            let message = PeerMessage::Clock(reading);
            send_message(&mut send, &message, &context.metrics.peers, &label).await?;
        }
        let records_max = context.records_per_round_max;
        let answer = ask(&context.engine, |reply| Command::PeerPull {
            peer: label.clone(),
            vectors,
            records_max,
            reply,
        })
        .await?;
        send_answer(&mut send, answer, &context.metrics.peers, &label).await?;
        send.finish()?;
    }
}

async fn send_answer(
    send: &mut quinn::SendStream,
    answer: PullReply,
    metrics: &PeerMetrics,
    peer: &str,
) -> Result<(), SessionError> {
    for spec in answer.polls {
        send_message(send, &PeerMessage::Poll(spec), metrics, peer).await?;
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

/// Pulls from `target` forever: connect, hello, rounds; on any failure, mark the peer
/// disconnected, back off (jittered) and reconnect.
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
        let session = async {
            let address = resolve(&target.address).await?;
            let connection = endpoint.connect(address, target.node.as_str())?.await?;
            let result = pull_session(&connection, &target, &context, &mut backoff)
                .await
                .map_err(|error| error.or_orderly_close_of(&connection));
            if let Err(error) = &result {
                refuse(&connection, error, &context.metrics.peers, &label);
            }
            result
        };
        let result = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            result = session => result,
        };
        set_connected(&context, &label, false);
        match result {
            Err(error) if error.is_orderly() => {
                tracing::info!(peer = %label, %error, "peer session closed; reconnecting");
            }
            Err(error) => tracing::warn!(peer = %label, %error, "peer session ended; reconnecting"),
            Ok(()) => {}
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(delay) => {}
        }
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

async fn pull_session(
    connection: &quinn::Connection,
    target: &PeerTarget,
    context: &SyncContext,
    backoff: &mut Backoff,
) -> Result<(), SessionError> {
    let (_, version) = exchange_hello(connection, context, Some(&target.node)).await?;
    let label = target.node.to_string();
    tracing::info!(peer = %label, version, "peer connected (pulling)");
    set_connected(context, &label, true);
    backoff.reset();
    let clock = version >= CLOCK_PROTOCOL_VERSION;
    loop {
        let round = pull_round(connection, context, &label, clock);
        let truncated = tokio::time::timeout(ROUND_TIMEOUT, round)
            .await
            .map_err(|_| SessionError::Timeout)??;
        if !truncated {
            tokio::time::sleep(context.tick).await;
        }
    }
}

/// What one answer carried, once read whole.
#[derive(Default)]
struct Answer {
    polls: Vec<PollSpec>,
    batches: Vec<RecordBatch>,
    counters: Vec<CounterState>,
    vectors: Vec<(PollId, VersionVector)>,
    records: usize,
    /// The peer's clock reading and when it arrived.
    clock: Option<(ClockReading, tokio::time::Instant)>,
}

/// One round; returns whether the answer was cut short (ask again at once). With `clock`,
/// the request ends with a clock reading and the answer's gives a clock sample.
async fn pull_round(
    connection: &quinn::Connection,
    context: &SyncContext,
    label: &str,
    clock: bool,
) -> Result<bool, SessionError> {
    let mine = ask(&context.engine, |reply| Command::Vectors { reply }).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    for (poll, vector) in &mine {
        let message = PeerMessage::VersionVector {
            poll: poll.clone(),
            vector: vector.clone(),
        };
        send_message(&mut send, &message, &context.metrics.peers, label).await?;
    }
    let sent = tokio::time::Instant::now();
    let sent_at = context.clock.now();
    if clock {
        let reading = ClockReading {
            sent_at,
            answered_at: None,
            stable_ms: context.clock_watch.stable_ms(),
        };
        let message = PeerMessage::Clock(reading);
        send_message(&mut send, &message, &context.metrics.peers, label).await?;
    }
    send.finish()?;
    let answer = read_answer(&mut recv, context, label).await?;
    let clock_reading = answer.clock;
    let records_in_answer = answer.records;
    let behind_before = records_behind(&mine, &answer.vectors);
    let applied: PeerApplied = ask(&context.engine, |reply| Command::PeerApply {
        polls: answer.polls,
        batches: answer.batches,
        counters: answer.counters,
        reply,
    })
    .await?;
    for refused in &applied.refused {
        tracing::warn!(peer = %label, %refused, "part of a peer's answer refused");
    }
    // After the answer is merged: a clock check this sample completes may lift the hold, and
    // the peer's windows must be in place before this node stamps a vote.
    if let Some((reading, arrived)) = clock_reading {
        record_clock(context, label, sent_at, sent, reading, arrived)?;
    }
    let behind = behind_before.saturating_sub(applied.records_added as u64);
    record_round(context, label, applied.records_added, behind);
    // Records deferred for a low disk: asking again at once would only fetch them again.
    Ok(records_in_answer >= context.records_per_round_max && applied.records_deferred == 0)
}

async fn read_answer(
    recv: &mut quinn::RecvStream,
    context: &SyncContext,
    label: &str,
) -> Result<Answer, SessionError> {
    let records_limit = context.records_per_round_max + tally_core::limits::RECORDS_PER_BATCH_MAX;
    let mut answer = Answer::default();
    let mut other_frames = 0usize;
    let mut buffer = Vec::new();
    while let Some(message) = next_message(recv, &mut buffer, &context.metrics.peers, label).await?
    {
        match message {
            PeerMessage::Records(batch) => {
                answer.records += batch.len();
                if answer.records > records_limit {
                    return Err(SessionError::Refused(format!(
                        "answer holds over {records_limit} records"
                    )));
                }
                answer.batches.push(batch);
                continue;
            }
            PeerMessage::Poll(spec) => answer.polls.push(spec),
            PeerMessage::Counters(state) => answer.counters.push(state),
            PeerMessage::VersionVector { poll, vector } => answer.vectors.push((poll, vector)),
            PeerMessage::Clock(reading) if answer.clock.is_none() => {
                answer.clock = Some((reading, tokio::time::Instant::now()));
            }
            PeerMessage::Hello(_) | PeerMessage::Clock(_) => {
                return Err(SessionError::Refused(format!(
                    "unexpected {} in an answer",
                    message_kind(&message)
                )));
            }
        }
        other_frames += 1;
        if other_frames > PULL_ANSWER_EXTRA_FRAMES_MAX {
            return Err(SessionError::Refused("answer holds too many frames".into()));
        }
    }
    Ok(answer)
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
        return Err(SessionError::Refused(format!(
            "clock reading {reading:?} does not answer the request sent at {sent_at:?}"
        )));
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
