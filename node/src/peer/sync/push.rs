//! Drives the pushes of replicated acks over one QUIC session (`tally_core::session`'s
//! [`PushSender`] and [`PushReceiver`]; the engine side is `engine::replication`).
//!
//! Each side of a session of protocol 3 or newer opens at most one unidirectional stream,
//! its push stream, when it first has something to send: this node's own records, pushed to
//! a peer that is one of its `ack_peers` over one session per peer (the newest,
//! [`crate::peer::claims::PushClaim`]: two nodes that list each other hold two sessions, and
//! pushing over both sent and merged every record twice) as soon as they are durable here (the engine wakes
//! the session; a push carries at most [`crate::engine::PUSH_RECORDS_PER_ASK_MAX`] records,
//! everything made durable meanwhile, so one round trip covers a whole group commit), and
//! its answers to the peer's pushes, each sent once the pushed records are durable here: in
//! the push journal ([`crate::push_journal`], which hands them to the engine too), or, for a
//! node without one, once the engine has logged and fsynced them. A session with an ack peer also asks for probes when it starts and then
//! every [`PUSH_PROBE_INTERVAL`] while none of its pushes is unanswered: records pushed
//! again so that the peer says what it now holds, for replies that wait for records it has
//! not confirmed (see `engine::replication`). Three tasks share the session: one reads the peer's push stream and hands
//! pushes to the engine (at most [`PUSHES_UNANSWERED_MAX`] unanswered: then it stops reading,
//! and QUIC's flow control holds the peer), one awaits the engine's answers in order, and one
//! writes this side's stream. A session with an ack peer tells the engine when it comes up
//! and ends, so the engine knows whether any ack peer can confirm a vote.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tally_core::session::{PUSHES_UNANSWERED_MAX, PushReceiver, PushSender, Pushed};
use tally_core::wire::PushAck;
use tally_core::{NodeId, PollId};
use tokio::sync::{mpsc, oneshot, watch};

use super::{SessionError, SyncContext, ask, next_frame, send_frame};
use crate::engine::{
    AckCommand, Command, EngineError, OwnRecords, PUSH_PROBE_INTERVAL, PushCursor, PushFeed,
};
use crate::peer::claims::PushClaim;
use crate::push_journal::JournalPush;

/// What `ack_mode = "replicated"` gives the sessions.
#[derive(Debug, Clone)]
pub struct AckPeers {
    /// The ack peers.
    pub peers: BTreeSet<NodeId>,
    /// Bumped by the engine whenever own records became durable.
    pub durable: watch::Receiver<u64>,
    /// Those records, handed over by the engine as they became durable.
    pub feed: Arc<PushFeed>,
}

/// What the writing task is told by the other two.
enum ToWriter {
    /// The peer answered this node's oldest unanswered push (the reader has handed the
    /// answer to the engine).
    Confirmed,
    /// This node's answer to one of the peer's pushes.
    Answer(PushAck),
}

/// An answer the engine owes for a push of `(poll, actor)`.
type OwedAnswer = (
    PollId,
    tally_core::ActorId,
    oneshot::Receiver<Result<PushAck, EngineError>>,
);

/// Runs the session's pushes until the connection ends (forever without a push channel: a
/// peer of protocol 2). This node's records are pushed only while the session holds the
/// peer's push claim (taken as it starts); the peer's pushes are answered either way.
pub(super) async fn run(
    connection: &quinn::Connection,
    context: &SyncContext,
    peer: &str,
    channel: Option<(PushSender, PushReceiver)>,
) -> Result<(), SessionError> {
    let node = NodeId::new(peer).map_err(|e| SessionError::refused("node_id", e.to_string()))?;
    let ack_peer = context.acks.as_ref().filter(|a| a.peers.contains(&node));
    let Some((mut sender, receiver)) = channel else {
        if ack_peer.is_some() {
            tracing::warn!(
                %peer,
                "this ack peer speaks peer protocol 2, which has no pushes: it cannot confirm \
                 votes (upgrade it); it syncs as an ordinary peer"
            );
        }
        return std::future::pending().await;
    };
    let _session = ack_peer.map(|_| SessionUp::new(context, node.clone()));
    let claim = ack_peer.map(|_| context.claims.push_session(node.clone()));
    if let Some(session) = &_session {
        session.announce().await;
    }
    let (to_writer, writer_inbox) = mpsc::channel(2 * PUSHES_UNANSWERED_MAX);
    let (owed_tx, owed_rx) = mpsc::channel(PUSHES_UNANSWERED_MAX);
    let durable = ack_peer.map(|a| (a.durable.clone(), a.feed.clone()));
    tokio::select! {
        biased;
        result = read_pushes(connection, context, &node, &receiver, owed_tx, to_writer.clone()) => result,
        result = answer_pushes(owed_rx, to_writer) => result,
        result = write_pushes(connection, context, peer, claim.as_ref(), &mut sender, durable, writer_inbox) => result,
    }
}

/// Tells the engine an ack peer's push session is up, and (when dropped) that it ended.
struct SessionUp {
    engine: mpsc::Sender<Command>,
    peer: NodeId,
}

impl SessionUp {
    fn new(context: &SyncContext, peer: NodeId) -> Self {
        Self {
            engine: context.ack_lane.clone(),
            peer,
        }
    }

    async fn announce(&self) {
        let up = AckCommand::Session {
            peer: self.peer.clone(),
            up: true,
        };
        // The engine closing just means the node is stopping.
        let _ = self.engine.send(Command::Ack(up)).await;
    }
}

impl Drop for SessionUp {
    fn drop(&mut self) {
        let engine = self.engine.clone();
        let down = AckCommand::Session {
            peer: self.peer.clone(),
            up: false,
        };
        tokio::spawn(async move {
            let _ = engine.send(Command::Ack(down)).await;
        });
    }
}

/// Reads the peer's push stream: pushes go to the engine (their answers are owed in order),
/// answers to this node's pushes go to the writer.
async fn read_pushes(
    connection: &quinn::Connection,
    context: &SyncContext,
    from: &NodeId,
    receiver: &PushReceiver,
    owed: mpsc::Sender<OwedAnswer>,
    to_writer: mpsc::Sender<ToWriter>,
) -> Result<(), SessionError> {
    let mut recv = connection.accept_uni().await?;
    let metrics = &context.metrics.peers;
    let peer = from.as_str();
    let mut buffer = Vec::new();
    while next_frame(&mut recv, &mut buffer, metrics, peer).await? {
        match receiver.handle_frame(&buffer)? {
            Pushed::Records { definition, batch } => {
                let (poll, actor) = (batch.poll().clone(), batch.actor().clone());
                let (reply, answer) = oneshot::channel();
                match &context.journal {
                    Some(journal) => {
                        let push = JournalPush {
                            from: from.clone(),
                            definition,
                            batch,
                            reply,
                        };
                        journal
                            .push(push)
                            .await
                            .map_err(|_| SessionError::EngineStopped)?;
                    }
                    None => {
                        let command = AckCommand::PushedRecords {
                            definition,
                            batch,
                            reply,
                        };
                        context
                            .ack_lane
                            .send(Command::Ack(command))
                            .await
                            .map_err(|_| SessionError::EngineStopped)?;
                    }
                }
                // Bounded: past PUSHES_UNANSWERED_MAX owed answers, this waits (and so does
                // the peer, by QUIC's flow control).
                owed.send((poll, actor, answer))
                    .await
                    .map_err(|_| SessionError::EngineStopped)?;
            }
            Pushed::Ack(ack) => {
                // The confirmation goes to the engine from here, not through the writer: one
                // task's wake-up fewer between the peer's answer and the votes it answers.
                let confirmed = AckCommand::PeerConfirmed {
                    peer: from.clone(),
                    ack,
                };
                context
                    .ack_lane
                    .send(Command::Ack(confirmed))
                    .await
                    .map_err(|_| SessionError::EngineStopped)?;
                to_writer
                    .send(ToWriter::Confirmed)
                    .await
                    .map_err(|_| SessionError::EngineStopped)?;
            }
        }
    }
    // The peer finished its push stream (it is stopping): the connection's end follows.
    std::future::pending().await
}

/// Awaits the engine's answers to the peer's pushes, in order, for the writer. An engine
/// that took nothing (its log failed) answers "nothing durable" (seq 0), so every push is
/// answered once.
async fn answer_pushes(
    mut owed: mpsc::Receiver<OwedAnswer>,
    to_writer: mpsc::Sender<ToWriter>,
) -> Result<(), SessionError> {
    while let Some((poll, actor, answer)) = owed.recv().await {
        let ack = match answer.await {
            Ok(Ok(ack)) => ack,
            _ => PushAck {
                poll,
                actor,
                durable_through: 0,
            },
        };
        to_writer
            .send(ToWriter::Answer(ack))
            .await
            .map_err(|_| SessionError::EngineStopped)?;
    }
    std::future::pending().await
}

/// A frame being written, kept across the writer's wake-ups (a write cut short by another
/// event would lose its place in the stream); it hands the stream back when done.
type Writing<'a> =
    Pin<Box<dyn Future<Output = Result<quinn::SendStream, SessionError>> + Send + 'a>>;

/// Writes this node's push stream: its own durable records (to an ack peer, while the
/// unanswered bound allows and `claim` is held: a session that takes the claim (back) starts
/// afresh, from what the ack peer confirmed, with probes) and its answers to the peer's pushes. It never waits for the
/// network while answers and confirmations come in: both sides write while the other reads,
/// and a writer blocked on a full stream that stopped taking its inbox would stop its own
/// reader (through the answers it owes) and so the peer's writer, each side waiting for the
/// other. The unanswered bounds keep a push stream under its flow-control window today
/// (~5.6 MB of pushes against [`crate::peer::transport::STREAM_RECEIVE_WINDOW_BYTES`]), but the
/// connection's window is shared with pulls, so the cycle is ruled out here instead.
#[allow(clippy::too_many_arguments)] // the session's parts, each owned by its caller
async fn write_pushes(
    connection: &quinn::Connection,
    context: &SyncContext,
    peer: &str,
    claim: Option<&PushClaim>,
    sender: &mut PushSender,
    durable: Option<(watch::Receiver<u64>, Arc<PushFeed>)>,
    mut inbox: mpsc::Receiver<ToWriter>,
) -> Result<(), SessionError> {
    let (mut durable, feed) = durable.unzip();
    let metrics = &context.metrics.peers;
    let mut idle_stream: Option<quinn::SendStream> = None;
    let mut writing: Option<Writing<'_>> = None;
    let mut cursor: Option<PushCursor> = None;
    // Records may wait for confirmation from before this session: push and probe at once.
    let mut more = durable.is_some();
    let mut probe = durable.is_some();
    let mut probe_tick = tokio::time::interval(PUSH_PROBE_INTERVAL);
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether this session pushed last time it looked (held the claim).
    let mut pushing = false;
    loop {
        let claimed = durable.is_some() && claim.is_some_and(PushClaim::try_hold);
        if claimed && !pushing {
            // Taken over (or first taken): another session may have pushed meanwhile.
            cursor = None;
            (more, probe) = (true, true);
        }
        pushing = claimed;
        let can_push = claimed && sender.can_push();
        if can_push && (more || probe) {
            let after = cursor.take();
            let probe = std::mem::take(&mut probe);
            let records = own_records(context, feed.as_deref(), after, probe).await?;
            for (definition, batch) in records.pushes {
                sender.send_records(definition, batch);
            }
            cursor = Some(records.cursor);
            more = records.more;
        }
        if writing.is_none() {
            if let Some(frame) = sender.poll_transmit() {
                let mut send = match idle_stream.take() {
                    Some(send) => send,
                    None => connection.open_uni().await?,
                };
                writing = Some(Box::pin(async move {
                    send_frame(&mut send, &frame, metrics, peer).await?;
                    Ok(send)
                }));
            }
        }
        let can_push = pushing && sender.can_push();
        tokio::select! {
            biased;
            message = inbox.recv() => match message {
                Some(ToWriter::Confirmed) => sender.handle_ack()?,
                Some(ToWriter::Answer(ack)) => sender.send_ack(ack)?,
                None => return Err(SessionError::EngineStopped),
            },
            written = finish(&mut writing), if writing.is_some() => {
                idle_stream = Some(written?);
                writing = None;
            }
            changed = durable_changed(&mut durable), if can_push && !more => {
                changed?;
                more = true;
            }
            _ = probe_tick.tick(), if durable.is_some() => {
                probe = sender.unanswered() == 0;
            }
        }
    }
}

/// This node's records to push after `after`: from the push feed when it can continue the
/// cursor and no probes are wanted (the engine not waited for), else from the engine.
async fn own_records(
    context: &SyncContext,
    feed: Option<&PushFeed>,
    after: Option<PushCursor>,
    probe: bool,
) -> Result<OwnRecords, SessionError> {
    let from_feed = match (&after, feed) {
        (Some(cursor), Some(feed)) if !probe => feed.after(cursor),
        _ => None,
    };
    let acks = &context.metrics.acks;
    if let Some(records) = from_feed {
        let pushed: usize = records.pushes.iter().map(|(_, b)| b.len()).sum();
        acks.records_pushed.inc_by(pushed as u64);
        acks.count_push_read("feed");
        return Ok(records);
    }
    acks.count_push_read("engine");
    ask(&context.ack_lane, |reply| {
        Command::Ack(AckCommand::OwnRecordsToPush {
            after,
            probe,
            reply,
        })
    })
    .await
}

/// The frame being written, once written (never, when none is).
async fn finish(writing: &mut Option<Writing<'_>>) -> Result<quinn::SendStream, SessionError> {
    match writing {
        Some(writing) => writing.await,
        None => std::future::pending().await,
    }
}

async fn durable_changed(durable: &mut Option<watch::Receiver<u64>>) -> Result<(), SessionError> {
    match durable {
        Some(durable) => durable
            .changed()
            .await
            .map_err(|_| SessionError::EngineStopped),
        None => std::future::pending().await,
    }
}
