//! Answers the log writer sends itself (`ack_mode = "local"`): a log job carries the replies
//! of the votes and batches that wait for it, and the writer answers them right after the
//! fsync that makes the job durable, before it reports to the engine. A vote's answer then
//! waits for one wake-up (the handler's), not two (the engine's, then the handler's), as in
//! DESIGN.md §7's durable reference.
//!
//! What it promises: a reply in a job's [`JobAnswers`] is answered `Ok` only by
//! [`JobAnswers::durable`], which the writer calls after the fsync covering the job returned
//! `Ok` (and the engine, when it takes that report, for a writer that did not); after a failed
//! write or fsync, or when the job is dropped unwritten, by [`JobAnswers::failed`] with
//! [`EngineError::LogFailed`] (nothing counted: the writer cut the group off). Each reply is
//! answered once: whoever takes the replies out of the shared slot first answers them, and the
//! slot remembers what happened. The engine can take back the replies of a job in flight
//! ([`JobAnswers::take_back`]) when it moves to a new incarnation and renumbers them: if the
//! writer has answered them already, the job is durable (and the engine marks it so before
//! the move).
//!
//! Not used under replicated acks (a reply waits for an ack peer too, in the engine), nor
//! under the planted bug that answers a failed job's votes `counted`.

use std::sync::{Arc, Mutex, PoisonError};

use super::replication::refuse;
use super::{EngineError, Pending, answer};

/// The replies waiting for one log job, shared by the job (the writer answers them) and the
/// engine's record of the job in flight (it answers them if the writer did not, or takes them
/// back). Empty for a job no reply waits for.
#[derive(Clone, Default)]
pub struct JobAnswers(Option<Arc<Mutex<Slot>>>);

enum Slot {
    /// Not answered yet.
    Waiting(Vec<Pending>),
    /// Answered `Ok`: the job is durable.
    Durable,
    /// Answered [`EngineError::LogFailed`], or taken back by the engine.
    Done,
}

/// What [`JobAnswers::take_back`] found.
pub(super) enum TakenBack {
    /// The replies, unanswered.
    Replies(Vec<Pending>),
    /// Already answered `Ok`: the job is durable.
    Durable,
    /// Nothing to take (none waited, or they were answered with the failure).
    Nothing,
}

impl JobAnswers {
    /// Replies that wait for one job (`None` if there are none).
    pub(super) fn new(replies: Vec<Pending>) -> Self {
        if replies.is_empty() {
            return Self(None);
        }
        Self(Some(Arc::new(Mutex::new(Slot::Waiting(replies)))))
    }

    /// Whether no reply was given to wait for the job.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// How many replies wait for the job (0 once answered).
    pub fn waiting(&self) -> usize {
        self.0.as_ref().map_or(0, |slot| match &*lock(slot) {
            Slot::Waiting(replies) => replies.len(),
            Slot::Durable | Slot::Done => 0,
        })
    }

    /// The job is durable (its fsync returned `Ok`): answers its replies, if nobody has.
    pub fn durable(&self) {
        if let Some(replies) = self.take(Slot::Durable) {
            replies.into_iter().for_each(answer);
        }
    }

    /// The job is not durable and never will be (its write or fsync failed, or the writer
    /// dropped it): answers its replies [`EngineError::LogFailed`], if nobody has.
    pub fn failed(&self) {
        if let Some(replies) = self.take(Slot::Done) {
            for reply in replies {
                refuse(reply, EngineError::LogFailed);
            }
        }
    }

    /// Takes the replies back unanswered, for the engine to answer otherwise.
    pub(super) fn take_back(&self) -> TakenBack {
        let Some(slot) = &self.0 else {
            return TakenBack::Nothing;
        };
        let mut slot = lock(slot);
        match &mut *slot {
            Slot::Waiting(replies) => {
                let replies = std::mem::take(replies);
                *slot = Slot::Done;
                TakenBack::Replies(replies)
            }
            Slot::Durable => TakenBack::Durable,
            Slot::Done => TakenBack::Nothing,
        }
    }

    /// Takes the waiting replies out and leaves `then` (`None`: answered already).
    fn take(&self, then: Slot) -> Option<Vec<Pending>> {
        let mut slot = lock(self.0.as_ref()?);
        let Slot::Waiting(replies) = &mut *slot else {
            return None;
        };
        let replies = std::mem::take(replies);
        *slot = then;
        Some(replies)
    }
}

impl std::fmt::Debug for JobAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobAnswers({} waiting)", self.waiting())
    }
}

/// Two jobs' answers are equal if they are the same slot (or both empty).
impl PartialEq for JobAnswers {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for JobAnswers {}

/// The slot, even if a thread panicked holding it: every state it can hold is whole (a
/// `replace` is the only change), so a poisoned lock changes nothing about it.
fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
