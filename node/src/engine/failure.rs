//! What the engine does once its write-ahead log has failed (a write or an fsync returned an
//! error, or the writer is gone): no zombie node, and no acknowledged vote left on one disk.
//!
//! What it promises, in order:
//! 1. at once: the node is not ready and not live ([`Hold::LogFailed`]: `/readyz` and
//!    `/healthz` answer 503), and nothing more is acknowledged — every reply still waiting is
//!    answered [`EngineError::LogFailed`] (its votes are not in the log: the writer cut the
//!    failed group off before reporting it), every new vote, batch or poll change likewise;
//!    a vote whose log job was durable and that waited only for an ack peer (replicated
//!    acks) is answered [`EngineError::NotReplicated`]: it is in the log and may be counted;
//! 2. every job the log *did* report durable was marked durable as it was reported, so the
//!    results published now show every vote this node acknowledged;
//! 3. it keeps answering its peers' pulls until each peer's vectors show it holds every record
//!    of this node's own actor that was durable — those exist on this disk alone; polls a peer
//!    defines otherwise are not waited for, as it takes none of their records — or until
//!    [`LOG_FAILED_HAND_OVER_MAX`] has passed (an unreachable peer is not waited for longer);
//!    nothing new is merged or logged meanwhile;
//! 4. then it returns [`EngineError::LogFailed`]: the node stops serving and the process exits
//!    non-zero, so its supervisor restarts it and recovery replays the log (a failed write is
//!    never retried in place: PostgreSQL's fsyncgate).

use std::collections::BTreeSet;
use std::time::Duration;

use tally_core::{PollId, PullRequest, Replica, Seq};
use tokio::sync::watch;

use super::replication::refuse;
use super::{AckCommand, Command, Engine, EngineError, EngineIo, answer};
use crate::health::Hold;
use crate::results::ResultsSnapshot;

/// Longest a node whose log failed keeps answering its peers' pulls, waiting for each to hold
/// every record it acknowledged, before it stops. Peers pull every sync tick (100 ms by
/// default) and a round carries 65,536 records, so a connected peer needs well under a second
/// unless it was far behind; an unreachable one is waited for this long, then fetches the
/// records from the restarted node.
pub const LOG_FAILED_HAND_OVER_MAX: Duration = Duration::from_secs(5);

impl Engine {
    /// The log failed (`why`): stop acknowledging, publish the results, hand the durable
    /// records to the peers, and return the error that stops the node.
    pub(super) async fn after_log_failure(
        &mut self,
        io: &mut EngineIo,
        why: &str,
    ) -> Result<(), EngineError> {
        let result = self.fail(&io.results, why);
        self.hand_over(io).await;
        tracing::error!("engine stopped after the log failure: the node exits to be restarted");
        result
    }

    /// Sets the hold, answers every waiting reply with the failure (a planted bug answers
    /// the failed job's votes `counted` instead), and publishes the results.
    pub(super) fn fail(
        &mut self,
        results: &watch::Sender<std::sync::Arc<ResultsSnapshot>>,
        why: &str,
    ) -> Result<(), EngineError> {
        self.health.set(Hold::LogFailed, true);
        tracing::error!(
            why,
            "the write-ahead log failed: nothing further is acknowledged; every vote \
             acknowledged so far is durable and is handed to readers and peers before the \
             node exits"
        );
        // Replies the writer carries (it answered them with the failure already, unless it
        // stopped without a report) and replies for the next job: none is durable.
        for (_, answers) in self.in_flight_answers.drain(..) {
            answers.failed();
        }
        for pending in self.log_answers.drain(..) {
            refuse(pending, EngineError::LogFailed);
        }
        let failed_job = self.in_flight_jobs.front().map(|(token, _)| *token);
        for waiter in self.waiting.drain(..) {
            if self.ack_after_failed_write && failed_job.is_some_and(|t| waiter.token <= t) {
                answer(waiter.pending);
                continue;
            }
            refuse(waiter.pending, EngineError::LogFailed);
        }
        self.fail_peer_waiters();
        self.publish(results);
        Err(EngineError::LogFailed)
    }

    /// Answers peers' pulls (and refuses everything else) until every hand-over peer holds
    /// this node's durable records, [`LOG_FAILED_HAND_OVER_MAX`] passes, or the node stops.
    async fn hand_over(&mut self, io: &mut EngineIo) {
        let own = self.own_durable_seqs();
        let mut waiting: BTreeSet<String> = self.hand_over_peers.iter().cloned().collect();
        // Peers sync both ways whether listed or not: an unlisted peer with a session up
        // pulls from this node too, and may hold its records only once it has.
        if let Ok(board) = self.peers.lock() {
            let connected = board.iter().filter(|(_, status)| status.connected);
            waiting.extend(connected.map(|(peer, _)| peer.clone()));
        }
        if own.is_empty() || waiting.is_empty() {
            return;
        }
        tracing::warn!(
            peers = ?waiting,
            "waiting up to {LOG_FAILED_HAND_OVER_MAX:?} for the peers to fetch every record \
             this node acknowledged"
        );
        let deadline = tokio::time::sleep(LOG_FAILED_HAND_OVER_MAX);
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                biased;
                _ = io.close_commands.wait_for(|close| *close) => return,
                () = &mut deadline => {
                    tracing::warn!(
                        peers = ?waiting,
                        "these peers did not fetch every acknowledged record in time; they \
                         will from the restarted node (the records are durable here)"
                    );
                    return;
                }
                command = io.commands.recv() => {
                    let Some(command) = command else { return };
                    if let Some(peer) = self.handle_after_failure(command, &own) {
                        waiting.remove(&peer);
                    }
                }
            }
        }
        tracing::info!("every peer holds every record this node acknowledged");
    }

    /// This node's own actor's durable seq per poll (where it holds any).
    fn own_durable_seqs(&self) -> Vec<(PollId, Seq)> {
        let actor = self.replica.actor();
        self.replica
            .poll_specs()
            .filter_map(|spec| {
                let seq = self.replica.version_vector(spec.id())?.get(actor);
                (seq > 0).then(|| (spec.id().clone(), seq))
            })
            .collect()
    }

    /// One command after the failure: pulls and vector requests are answered, everything
    /// that would change state is refused. Returns the peer whose pull showed it holds all
    /// of `own`.
    fn handle_after_failure(&mut self, command: Command, own: &[(PollId, Seq)]) -> Option<String> {
        match command {
            Command::PeerPull {
                peer,
                request,
                records_max,
                reply,
            } => {
                let holds_all = holds_all(&self.replica, &request, own);
                let _ = reply.send(Ok(self.replica.answer_pull(&request, records_max)));
                return holds_all.then_some(peer);
            }
            Command::PullRequest { reply } => drop(reply.send(Ok(self.replica.pull_request()))),
            Command::Lookup {
                poll,
                vote_ids,
                reply,
            } => drop(reply.send(self.lookup(poll, &vote_ids))),
            Command::PeerIncarnation { .. } => {}
            Command::Vote { reply, .. } => drop(reply.send(Err(EngineError::LogFailed))),
            Command::Batch { reply, .. } => drop(reply.send(Err(EngineError::LogFailed))),
            Command::UpsertPoll { reply, .. } => drop(reply.send(Err(EngineError::LogFailed))),
            Command::MergeWindow { reply, .. } => drop(reply.send(Err(EngineError::LogFailed))),
            Command::PeerApply { reply, .. } => drop(reply.send(Err(EngineError::LogFailed))),
            // What this node made durable may still go to its ack peers; nothing new is taken.
            Command::Ack(command @ AckCommand::OwnRecordsToPush { .. }) => {
                self.handle_ack_command(command);
            }
            Command::Ack(AckCommand::PushedRecords { reply, .. }) => {
                drop(reply.send(Err(EngineError::LogFailed)));
            }
            Command::Ack(AckCommand::PeerConfirmed { .. } | AckCommand::Session { .. }) => {}
        }
        None
    }
}

/// Whether a peer whose pull is `request` holds this replica's actor's records up to each of
/// `own`'s seqs, in every poll it defines as this node does (a poll it defines otherwise
/// never takes this node's records: there is nothing to wait for).
fn holds_all(replica: &Replica, request: &PullRequest, own: &[(PollId, Seq)]) -> bool {
    let actor = replica.actor();
    own.iter().all(|(poll, seq)| {
        request
            .polls
            .iter()
            .find(|p| &p.poll == poll)
            .is_some_and(|p| {
                Some(p.definition) != replica.definition(poll) || p.vector.get(actor) >= *seq
            })
    })
}
