//! Peer-sync messages and their encoding: one version byte, then a postcard body.
//!
//! Decoding any byte string returns `Ok` or `Err`, never panics, refuses frames over
//! [`FRAME_BYTES_MAX`] before parsing, and validates every field against the limits, so a
//! decoded message is always well formed. Allocation is bounded by the frame length.

use serde::{Deserialize, Serialize};

use crate::counters::CountPair;
use crate::definition::{AgreementDigest, Declaration, DefinitionDigest};
use crate::ids::{ActorId, OptionIndex, PollId, Second, UnixMillis};
use crate::limits::{
    CLUSTER_ID_BYTES_MAX, COUNTER_ENTRIES_PER_MESSAGE_MAX, DECLARING_NODES_MAX, FRAME_BYTES_MAX,
    OPTIONS_MAX, POLL_SECONDS_MAX, VERSION_VECTOR_ENTRIES_MAX,
};
use crate::poll::PollSpec;
use crate::record_batch::RecordBatch;
use crate::version_vector::VersionVector;
use crate::vote_id::VoteIdKeyProof;

/// The first byte of every frame. A frame with another first byte is refused.
pub const FRAME_FORMAT_VERSION: u8 = 1;

/// The peer protocol version carried in [`Hello`].
///
/// Compatibility rule: a node syncs with peers whose version is within
/// [`PROTOCOL_VERSION_MIN`]`..=`[`PROTOCOL_VERSION`] and refuses others, naming both versions.
/// A newer version adds messages as new variants at the end of [`PeerMessage`] (postcard
/// encodes a variant by its position). Version 2 added [`PeerMessage::Clock`] (the clock
/// readings of every pull), the hello's `vote_id_key` proof, and the definition agreement
/// (pulls name each poll's definition in [`PeerMessage::PollVector`] and a summary of the
/// declarations in [`PeerMessage::Agreement`]; answers may carry
/// [`PeerMessage::Declarations`]). Version 3 added the pushes of replicated acks
/// ([`PeerMessage::Push`] and [`PeerMessage::PushAck`], on a unidirectional stream of their
/// own): a peer of version 2 syncs as before but cannot be an ack peer. Version 3 also carries
/// each poll's index reservation in pull answers ([`PeerMessage::Reserve`]); between a node of
/// version 2 and one of version 3 it is simply not carried.
///
/// The rule for every future change: a new message is a new variant at the end of
/// [`PeerMessage`], named in `session::introduced_in` with the version that added it; a
/// session sends and takes only messages of its negotiated version (the lower of the two
/// hellos'), so what an older peer cannot decode never reaches it. An existing message's
/// fields never change (postcard has no optional fields: an added field breaks the older
/// decoder); a changed meaning is a new message. [`PROTOCOL_VERSION_MIN`] moves up only when
/// serving the oldest version would break a guarantee, and the refusal names both versions.
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest peer protocol version this node syncs with. Version 1 is refused, unlike
/// DESIGN.md §3's rule of syncing with the previous version: its hello cannot prove the
/// `vote_id_key` and its pulls do not name the poll's definition, so serving it could count a
/// retried vote twice or a vote under another option's name.
pub const PROTOCOL_VERSION_MIN: u16 = 2;

/// The first message on a connection: who is speaking, for which cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster this node belongs to; peers of another cluster are refused.
    pub cluster_id: String,
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u16,
    /// The sender's actor.
    pub actor: ActorId,
    /// Proves which `vote_id_key` the sender holds, without revealing it: peers with another
    /// key are refused (a retry to them would count twice).
    pub vote_id_key_proof: VoteIdKeyProof,
}

/// One counter entry on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterEntry {
    /// Poll-relative second of the bucket.
    pub second: Second,
    /// Option index.
    pub option: u8,
    /// Records accepted.
    pub accepted: u64,
    /// Records retracted.
    pub retracted: u64,
}

impl CounterEntry {
    /// An entry from a counter bucket.
    pub fn from_pair((second, option, pair): (Second, OptionIndex, CountPair)) -> Self {
        Self {
            second,
            option: option.0,
            accepted: pair.accepted,
            retracted: pair.retracted,
        }
    }

    /// The bucket's counts.
    pub fn pair(&self) -> CountPair {
        CountPair {
            accepted: self.accepted,
            retracted: self.retracted,
        }
    }
}

/// One actor's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorCounters {
    /// Whose counters.
    pub actor: ActorId,
    /// Its non-zero buckets.
    pub entries: Vec<CounterEntry>,
}

/// The counter CRDT of one poll, as the sender sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    /// The poll.
    pub poll: PollId,
    /// Every actor's counters.
    pub actors: Vec<ActorCounters>,
}

/// Everything peers say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Opens a connection.
    Hello(Hello),
    /// "This is what I hold of `poll`; send me the rest."
    VersionVector {
        /// The poll.
        poll: PollId,
        /// Highest contiguous seq held per actor.
        vector: VersionVector,
    },
    /// A run of one actor's records.
    Records(RecordBatch),
    /// Counter state, pushed every tick.
    Counters(CounterState),
    /// A poll's definition and window.
    Poll(PollSpec),
    /// Wall-clock readings for the clock-offset estimate (protocol 2; see [`ClockReading`]).
    Clock(ClockReading),
    /// Opens a pull request: the puller's summary of every poll's declarations (an answer
    /// carries [`PeerMessage::Declarations`] only when the answerer's differs).
    Agreement(AgreementDigest),
    /// "This is my definition of `poll` and what I hold of it; send me the rest." (A pull
    /// request's per-poll frame; records of a poll defined otherwise are not sent.)
    PollVector {
        /// The poll.
        poll: PollId,
        /// The puller's definition of it.
        definition: DefinitionDigest,
        /// Highest contiguous seq held per actor.
        vector: VersionVector,
    },
    /// Which node holds which definition of `poll`, as far as the sender knows.
    Declarations {
        /// The poll.
        poll: PollId,
        /// One entry per node.
        entries: Vec<Declaration>,
    },
    /// Records of the sender's own actor, just made durable on its disk, pushed to an ack
    /// peer so that a vote can be acknowledged once two disks hold it (protocol 3,
    /// `ack_mode = "replicated"`). The receiver logs them, fsyncs, and answers every push
    /// with exactly one [`PeerMessage::PushAck`], in order.
    Push {
        /// The sender's definition of the batch's poll: a receiver that defines it otherwise
        /// takes none of it (and acknowledges nothing new).
        definition: DefinitionDigest,
        /// The records.
        batch: RecordBatch,
    },
    /// The answer to one [`PeerMessage::Push`]: what the sender has made durable.
    PushAck(PushAck),
    /// "Size your dedupe index of `poll` for this many vote IDs": the answerer's reservation
    /// of a poll both sides define alike (an operator's `expected_votes`, from the config file
    /// or the admin API, or one relayed from another peer), sent in every pull answer after
    /// the poll's definition (protocol 3). A puller whose own reservation is smaller takes it
    /// and relays it; a larger one is kept, and an index never shrinks.
    Reserve {
        /// The poll.
        poll: PollId,
        /// Vote IDs the index should hold before it must grow.
        vote_ids: u64,
    },
}

/// What an ack peer has on its disk of a pusher's records: every record of `actor` in `poll`
/// up to `durable_through` is logged and fsynced there (0: it took nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAck {
    /// The poll.
    pub poll: PollId,
    /// The pusher's actor.
    pub actor: ActorId,
    /// Highest contiguous seq of `actor` held durably.
    pub durable_through: crate::ids::Seq,
}

/// Wall-clock readings: the last frame of a pull request (`answered_at` absent) and the first
/// of its answer (the request's `sent_at` echoed, `answered_at` set). The puller measures the
/// round trip on its monotonic clock and estimates the peer's offset from the three readings
/// (`tally_core::clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// The puller's wall clock as its request left.
    pub sent_at: UnixMillis,
    /// The answerer's wall clock as it answered (absent in a request).
    pub answered_at: Option<UnixMillis>,
    /// How long the sender's wall clock has run without a step (since its process started
    /// or it last saw its clock jump), in ms.
    pub stable_ms: u64,
}

/// Why a frame was refused. Nothing was merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame was empty.
    #[error("empty frame")]
    Empty,
    /// The frame was longer than [`FRAME_BYTES_MAX`].
    #[error("frame is {length} bytes; at most {FRAME_BYTES_MAX} are allowed")]
    TooLong {
        /// The frame's length.
        length: usize,
    },
    /// The first byte was not [`FRAME_FORMAT_VERSION`].
    #[error("frame format version {0} is not supported (this node speaks {FRAME_FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// The body did not decode.
    #[error("frame body is malformed: {0}")]
    Malformed(String),
    /// Bytes were left over after the message.
    #[error("frame has {0} trailing bytes")]
    TrailingBytes(usize),
    /// A field is past its limit.
    #[error("frame field out of range: {0}")]
    OutOfRange(&'static str),
}

/// Encodes a message as one frame.
pub fn encode(message: &PeerMessage) -> Vec<u8> {
    let frame = vec![FRAME_FORMAT_VERSION];
    // Infallible: postcard only fails on writer errors or unsupported serde features, and
    // these types use neither.
    match postcard::to_extend(message, frame) {
        Ok(frame) => frame,
        Err(error) => unreachable!("postcard encoding failed: {error}"),
    }
}

/// Decodes one frame.
pub fn decode(frame: &[u8]) -> Result<PeerMessage, WireError> {
    let (&version, body) = frame.split_first().ok_or(WireError::Empty)?;
    if frame.len() > FRAME_BYTES_MAX {
        return Err(WireError::TooLong {
            length: frame.len(),
        });
    }
    if version != FRAME_FORMAT_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    let (message, rest) = postcard::take_from_bytes::<PeerMessage>(body)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    validate(&message)?;
    Ok(message)
}

/// The protocol version a frame's hello states, read from the fields every version's hello
/// begins with (its cluster ID, then its version), even when the rest of it, of another
/// version, does not decode as this version's: so a refusal can say "speaks protocol N".
/// `None` if the frame is not a hello.
pub fn hello_protocol_version(frame: &[u8]) -> Option<u16> {
    let (&version, body) = frame.split_first()?;
    if version != FRAME_FORMAT_VERSION || frame.len() > FRAME_BYTES_MAX {
        return None;
    }
    // `PeerMessage::Hello` is variant 0 and its first fields are (String, u16) in every
    // protocol version; postcard writes the variant as a varint.
    let (variant, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    if variant != 0 {
        return None;
    }
    let ((_cluster, protocol), _) = postcard::take_from_bytes::<(String, u16)>(rest).ok()?;
    Some(protocol)
}

/// The property every fuzz target and corpus test checks for one frame: decoding returns
/// instead of panicking, and a frame that decodes re-encodes to one that decodes to the same
/// message. `Err` describes a broken round trip (a bug); refusing bad input is `Ok`.
pub fn check_frame(frame: &[u8]) -> Result<(), String> {
    let Ok(message) = decode(frame) else {
        return Ok(());
    };
    let again = decode(&encode(&message));
    if again.as_ref() != Ok(&message) {
        return Err(format!("round trip changed {message:?} into {again:?}"));
    }
    Ok(())
}

fn validate(message: &PeerMessage) -> Result<(), WireError> {
    match message {
        PeerMessage::Hello(hello) if hello.cluster_id.len() > CLUSTER_ID_BYTES_MAX => {
            Err(WireError::OutOfRange("cluster id too long"))
        }
        PeerMessage::VersionVector { vector, .. } | PeerMessage::PollVector { vector, .. }
            if vector.len() > VERSION_VECTOR_ENTRIES_MAX =>
        {
            Err(WireError::OutOfRange("version vector has too many entries"))
        }
        PeerMessage::Declarations { entries, .. } if entries.len() > DECLARING_NODES_MAX => {
            Err(WireError::OutOfRange("declarations have too many entries"))
        }
        PeerMessage::Counters(state) => validate_counters(state),
        PeerMessage::Reserve { vote_ids, .. }
            if *vote_ids > crate::limits::RESERVED_VOTE_IDS_MAX as u64 =>
        {
            Err(WireError::OutOfRange("reservation past the largest index"))
        }
        _ => Ok(()),
    }
}

fn validate_counters(state: &CounterState) -> Result<(), WireError> {
    let entries: usize = state.actors.iter().map(|a| a.entries.len()).sum();
    if entries > COUNTER_ENTRIES_PER_MESSAGE_MAX {
        return Err(WireError::OutOfRange("too many counter entries"));
    }
    let bad = |e: &CounterEntry| {
        usize::from(e.option) >= OPTIONS_MAX
            || e.second > POLL_SECONDS_MAX
            || e.retracted > e.accepted
    };
    if state.actors.iter().flat_map(|a| &a.entries).any(bad) {
        return Err(WireError::OutOfRange("counter entry out of range"));
    }
    Ok(())
}
