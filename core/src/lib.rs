//! `tally-core` is a fully deterministic implementation of Tally's vote-counting logic. It
//! contains no networking, file or clock code: time comes in as an argument, randomness as a
//! seed, and effects leave as values for the caller to carry out.
//!
//! What it promises (see `shared/DESIGN.md` §2):
//! - every vote ID counts exactly once per poll, however often and wherever it is retried;
//! - replicas that exchange records in any order, any number of times, through any relay,
//!   end in the same state (merge is a union, and unions are commutative, associative and
//!   idempotent);
//! - once every record is everywhere, the fast-path counters equal the exact tally of winners.
//!
//! The pieces: [`Replica`] (one node's view of every poll: local votes, durability handshake,
//! sync), [`PollState`] (the CRDT of one poll), [`RecordBatch`] (records in their compact
//! form), [`wire`] (peer messages), [`session`] (the peer session: hello, version gate, pull
//! rounds, as a state machine the node and the simulation drive), and [`Merge`] with its law
//! checker.

pub mod abuse;
pub mod clock;
mod counters;
mod definition;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
pub mod limits;
mod merge;
mod moving_table;
mod poll;
mod poll_state;
mod position_index;
mod position_table;
mod prepared_memory;
mod record_batch;
mod record_store;
mod replica;
pub mod session;
mod sync;
mod version_vector;
mod vote_id;
pub mod wire;

pub use clock::Clock;
pub use counters::{CountPair, Counters};
pub use definition::{AgreementDigest, Declaration, Declarations, DefinitionDigest};
pub use ids::{
    ActorId, ActorText, NameError, NodeId, OptionIndex, OptionName, PollId, Second, Seq, UnixMillis,
};
pub use merge::{Merge, check_merge_laws};
pub use poll::{PollSpec, PollSpecError, PollStatus, PollWindow};
pub use poll_state::{Applied, ApplyError, PollState};
pub use position_index::{IndexGrowth, IndexGrowthEvents};
pub use prepared_memory::{MemoryHelper, MemoryKind, MemoryOrder, PreparedMemory};
pub use record_batch::{BatchError, BatchRecord, RecordBatch, SecondRun};
pub use record_store::{ReservedIndex, RetiredIndex};
pub use replica::{
    AcceptError, LocalVote, MovedRecords, PollError, Replica, ReplicaError, Standing,
};
pub use sync::{
    AnswerApplied, AnswerRefusal, PollRequest, PullAnswer, PullRequest, counters_for_lagging,
};
pub use version_vector::VersionVector;
pub use vote_id::{DEV_VOTE_ID_KEY_HEX, VoteId, VoteIdError, VoteIdKey, VoteIdKeyProof};
