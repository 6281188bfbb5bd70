//! The HTTP API's request and response bodies: one definition that the node serves, the
//! client reads and the edge tier both reads and serves. JSON unless said otherwise; the
//! compact batch body and its answer are postcard. With the `openapi` feature (the node's)
//! each type also describes itself for `/openapi.json`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Media type of the compact batch body: postcard-encoded [`BinaryBatch`].
pub const POSTCARD_MEDIA_TYPE: &str = "application/x-postcard";

/// How many votes one batch request may carry.
pub const BATCH_VOTES_MAX: usize = 10_000;

/// Largest request body for a single vote, in bytes.
pub const VOTE_BODY_BYTES_MAX: usize = 4 * 1024;

/// Largest request body for a batch, in bytes (JSON votes are ~100 bytes each).
pub const BATCH_BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

const _: () = assert!(BATCH_VOTES_MAX * 100 <= BATCH_BODY_BYTES_MAX);

/// The query a batch request adds to be answered with receipts ([`ReceiptedBatchResponse`]):
/// `POST /v1/polls/{poll}/votes/batch?receipts=true`.
pub const RECEIPTS_QUERY: &str = "receipts=true";

/// `POST /v1/polls/{poll}/votes` body.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", schema(example = json!({"option": "green", "vote_id": "67e55044-10b1-426f-9247-bb680e5fe0c8"})))]
pub struct VoteRequest {
    /// The option's name.
    pub option: String,
    /// The idempotency key (or send it as an `Idempotency-Key` header): a UUID, taken as sent,
    /// or any other text of 1 to 128 bytes, hashed with the cluster's key. The body's wins.
    pub vote_id: Option<String>,
}

/// How a vote was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VoteStatus {
    /// New: counted once, and durable.
    Counted,
    /// Seen before (the earlier vote is durable); this one changed nothing.
    Duplicate,
}

impl VoteStatus {
    /// The status as sent, and as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counted => "counted",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Proof that a vote is durable.
#[derive(Debug, Serialize, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    /// The node incarnation that recorded the vote, `node#incarnation`.
    pub actor: String,
    /// The record's seq in that actor's log.
    pub seq: u64,
    /// The poll-relative second it was stamped with.
    pub second: u32,
}

/// The answer to a vote.
#[derive(Debug, Serialize, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoteResponse {
    /// `counted` or `duplicate`.
    pub status: VoteStatus,
    /// The vote ID as this node understood it (UUID form).
    pub vote_id: String,
    /// For `counted`: where the vote is recorded.
    pub receipt: Option<Receipt>,
}

/// One vote of a JSON batch.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchVote {
    /// The option's name.
    pub option: String,
    /// The idempotency key.
    pub vote_id: String,
}

/// `POST /v1/polls/{poll}/votes/batch` JSON body.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to the node's batch limit of votes (`BATCH_VOTES_MAX`, 10,000).
    pub votes: Vec<BatchVote>,
}

/// The compact batch body (`application/x-postcard`): option indexes and 16-byte vote IDs
/// (big-endian UUID bytes). On the wire, postcard: the vote count as a varint, then per vote
/// one byte of option index and the 16 bytes of the ID.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BinaryBatch {
    /// The votes.
    pub votes: Vec<BinaryVote>,
}

/// One vote of a compact batch.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BinaryVote {
    /// The option's index in the poll's option list.
    pub option: u8,
    /// The vote ID's 16 bytes.
    #[cfg_attr(feature = "openapi", schema(min_items = 16, max_items = 16))]
    pub vote_id: [u8; 16],
}

/// How one vote of a batch was answered. In a postcard answer each status is one byte, its
/// place in this list: 0 `counted`, 1 `duplicate`, 2 `unknown_option`, 3 `bad_vote_id`,
/// 4 `overloaded`, 5 `unconfirmed` (edges only; new statuses only ever go at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BatchVoteStatus {
    /// New: counted once, and durable.
    Counted,
    /// Seen before; changed nothing.
    Duplicate,
    /// Refused: the poll has no such option.
    UnknownOption,
    /// Refused: the vote ID is empty or too long.
    BadVoteId,
    /// Refused: too many votes wait for the log; send this one again.
    Overloaded,
    /// An edge's answer only: the edge sent the vote on, but no node's answer came within the
    /// vote's deadline; it **may have been counted**. Send it again, same vote ID.
    Unconfirmed,
}

impl BatchVoteStatus {
    /// The status as sent, and as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counted => "counted",
            Self::Duplicate => "duplicate",
            Self::UnknownOption => "unknown_option",
            Self::BadVoteId => "bad_vote_id",
            Self::Overloaded => "overloaded",
            Self::Unconfirmed => "unconfirmed",
        }
    }
}

/// The answer to a batch: one status per vote, in order. As JSON by default; postcard
/// (`application/x-postcard`) when the request's `Accept` asks for it: the three counts as
/// varints, then the status count as a varint and one byte per status (see
/// [`BatchVoteStatus`]), about 1 byte a vote instead of ~12.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponse {
    /// Votes newly counted.
    pub counted: usize,
    /// Votes seen before.
    pub duplicate: usize,
    /// Votes refused (see each status).
    pub rejected: usize,
    /// Per vote, in the order sent.
    pub statuses: Vec<BatchVoteStatus>,
}

/// Where one vote counted by a batch is recorded: the receipt a single vote's answer carries,
/// with its actor given as a position in [`ReceiptedBatchResponse::actors`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchReceipt {
    /// The actor's position in `actors`.
    pub actor: u8,
    /// The record's seq in that actor's log.
    pub seq: u64,
    /// The poll-relative second it was stamped with.
    pub second: u32,
}

/// The answer to a batch sent with `?receipts=true` (the edge tier's: it answers each of its
/// voters as the node would have, receipt included; an edge answers its own batch route so
/// too). JSON, or postcard when `Accept` asks.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptedBatchResponse {
    /// The statuses and counts, as without receipts.
    pub batch: BatchResponse,
    /// The actors (`node#incarnation`) the receipts name.
    pub actors: Vec<String>,
    /// One per `counted` status, in the order of the statuses.
    pub receipts: Vec<BatchReceipt>,
    /// The nodes (node IDs) that made the votes durable.
    pub nodes: Vec<String>,
    /// Per status: the position in `nodes` of the node that answered it `counted` or
    /// `duplicate`, or [`NOT_ANSWERED_BY_A_NODE`] for any other status.
    pub answered_by: Vec<u8>,
}

/// [`ReceiptedBatchResponse::answered_by`] of a vote no node made durable.
pub const NOT_ANSWERED_BY_A_NODE: u8 = u8::MAX;

/// The header of an edge's answer to a single vote that names the node that made it durable
/// (`counted` or `duplicate`): its node ID.
pub const ANSWERED_BY_HEADER: &str = "tally-answered-by";

/// A poll as `GET /v1/polls` lists it (the edge tier learns the polls it takes votes for
/// from its nodes' lists).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollSummary {
    /// The poll's name.
    pub id: String,
    /// Its options.
    pub options: Vec<String>,
    /// `open`, `not_open` or `closed`.
    #[cfg_attr(feature = "openapi", schema(example = "open"))]
    pub status: String,
    /// When it opened (Unix ms), if it has.
    pub opens_at_ms: Option<u64>,
    /// When it closes or closed (Unix ms), if set.
    pub closes_at_ms: Option<u64>,
}

/// One option's standing.
#[derive(Debug, Clone, Serialize, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OptionResult {
    /// The option's name.
    pub name: String,
    /// Net votes.
    pub votes: i64,
    /// Share of all votes, 0–1 (0 when there are none).
    pub share: f64,
}

/// Whose votes a result includes.
#[derive(Debug, Clone, Serialize, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActorIncluded {
    /// The actor, `node#incarnation`.
    pub actor: String,
    /// The node it runs on.
    pub node: String,
    /// Records of that actor held here.
    pub records: u64,
    /// Whether it is this node's own actor.
    pub local: bool,
    /// How stale this node's view of that actor may be: milliseconds since this node last
    /// heard from the actor's node (0 for its own actor; absent when that node is not a
    /// direct peer, e.g. an old incarnation whose records came relayed).
    pub heard_ms_ago: Option<u64>,
    /// Whether a sync session with the actor's node is up (absent for its own actor and for
    /// nodes that are not direct peers).
    pub connected: Option<bool>,
    /// The actor's node's wall clock minus this node's, in milliseconds, as estimated over
    /// the recent sync rounds (0 for its own actor; absent for nodes that are not direct
    /// peers or not measured yet).
    pub clock_offset_ms: Option<i64>,
}

/// A node this node syncs with, or has heard from: for "which regions does this result
/// include".
#[derive(Debug, Clone, Serialize, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerSeen {
    /// Its node ID.
    pub node: String,
    /// Whether this node's peer list names it (others dialled this node and are synced all
    /// the same).
    pub listed: bool,
    /// Whether a sync session with it is up.
    pub connected: bool,
    /// Milliseconds since the last completed sync round with it (absent: never).
    pub heard_ms_ago: Option<u64>,
}

/// The results of one poll at one moment, as served by `GET /v1/polls/{poll}/results`.
#[derive(Debug, Clone, Serialize, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollResults {
    /// The poll.
    pub poll: String,
    /// `open`, `not_open` or `closed`.
    #[cfg_attr(feature = "openapi", schema(example = "open"))]
    pub status: String,
    /// Options in poll order.
    pub options: Vec<OptionResult>,
    /// All net votes.
    pub total: i64,
    /// When these figures were captured, in Unix milliseconds: a node serves the same
    /// results (ages and `clock_offsets_ms` included) until its votes, status, window, the
    /// records included or a peer's connection change, so this is the time of the last
    /// change it saw.
    pub as_of_ms: u64,
    /// The split up to and including this poll second, if the reader asked for one.
    pub at_second: Option<u32>,
    /// The node that served it.
    pub served_by: String,
    /// Whose records and counters it includes.
    pub includes: Vec<ActorIncluded>,
    /// Every peer this node syncs with or has heard from, and how recently.
    pub peers: Vec<PeerSeen>,
    /// Present while some node defines this poll otherwise (other options, or another
    /// order): whether this node refuses its votes, which nodes differ, and what to do.
    pub dispute: Option<PollDispute>,
    /// Every direct peer's wall clock minus this node's, in milliseconds, by node, as last
    /// estimated (peers not measured yet are absent); also listed for peers whose actors
    /// hold no records of this poll, such as one that counts nothing for its clock.
    pub clock_offsets_ms: BTreeMap<String, i64>,
}

/// Net votes per option in one poll second.
#[derive(Debug, Clone, Serialize, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// Poll-relative second.
    pub second: u32,
    /// Net votes per option in that second.
    pub votes: Vec<i64>,
}

/// `GET /v1/polls/{poll}/history` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    /// The poll.
    pub poll: String,
    /// Option names, in the order of each point's `votes`.
    pub options: Vec<String>,
    /// Net votes per second, ascending; seconds without votes are absent.
    pub points: Vec<HistoryPoint>,
}

/// One poll's dispute, as results show it and the log tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollDispute {
    /// Whether this node's definition lost: it counts none of the poll's votes (they are
    /// answered 503 `poll_disputed`, and clients retry at another node).
    pub refusing_votes: bool,
    /// Nodes that hold another definition than this node's.
    pub nodes: BTreeSet<String>,
    /// What is wrong and what to do, for operators.
    pub message: String,
}

/// The body of every refusal: `{"error": code, "message": text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"error": "unknown_poll", "message": "no poll named \"nope\""})))]
pub struct ErrorBody {
    /// What went wrong, for programs: a stable code.
    pub error: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// The stable, machine-readable codes of [`ErrorBody::error`], one per [`ApiError`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not what the route expects.
    Malformed,
    /// 401: missing or wrong admin token (or the admin API is disabled).
    Unauthorized,
    /// 404: no such poll.
    UnknownPoll,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not answer this method.
    MethodNotAllowed,
    /// 409: the poll is not taking votes.
    PollNotOpen,
    /// 409: a poll of that name exists with other options, or the node holds the most polls
    /// it may (1,024).
    Conflict,
    /// 408: the body did not arrive within `body_read_timeout_ms` of its headers.
    BodyTimeout,
    /// 413: the body is over the route's limit.
    BodyTooLarge,
    /// 413: too many votes in one batch.
    TooManyVotes,
    /// 415: the content type is not one the route reads.
    UnsupportedMediaType,
    /// 422: the poll has no such option.
    UnknownOption,
    /// 422: the vote ID is missing, empty or too long.
    BadVoteId,
    /// 422: a value is out of range.
    Invalid,
    /// 429: a rate limit refused the request; see `Retry-After`.
    RateLimited,
    /// 401: the vote token is missing, malformed, forged, for another poll, or expired.
    BadVoteToken,
    /// 503: the node is shedding load; see `Retry-After`.
    Overloaded,
    /// 503: the node is not serving (starting, stopping or failed); see `Retry-After`.
    Unavailable,
    /// 503: this node defines the poll otherwise than the cluster and counts none of its
    /// votes (nothing was counted: send the vote to another node); see `Retry-After`.
    PollDisputed,
    /// 503: an edge sent the vote on, but no node's answer came within the vote's deadline:
    /// it **may have been counted**. Retry with the same vote ID; see `Retry-After`.
    Unconfirmed,
    /// 503: `ack_mode = "replicated"` and no ack peer confirmed the vote in time. Not
    /// acknowledged, but durable on the node, so it may still be counted: retry with the same
    /// vote ID (here or at another node) and it counts once; see `Retry-After`.
    NotReplicated,
}

impl ErrorCode {
    /// The code as sent (the same text serde writes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::UnknownPoll => "unknown_poll",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PollNotOpen => "poll_not_open",
            Self::Conflict => "conflict",
            Self::BodyTimeout => "body_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::TooManyVotes => "too_many_votes",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnknownOption => "unknown_option",
            Self::BadVoteId => "bad_vote_id",
            Self::Invalid => "invalid",
            Self::RateLimited => "rate_limited",
            Self::BadVoteToken => "bad_vote_token",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::PollDisputed => "poll_disputed",
            Self::Unconfirmed => "unconfirmed",
            Self::NotReplicated => "not_replicated",
        }
    }

    /// The HTTP status a refusal with this code has.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::Unauthorized | Self::BadVoteToken => 401,
            Self::UnknownPoll | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::BodyTimeout => 408,
            Self::PollNotOpen | Self::Conflict => 409,
            Self::BodyTooLarge | Self::TooManyVotes => 413,
            Self::UnsupportedMediaType => 415,
            Self::UnknownOption | Self::BadVoteId | Self::Invalid => 422,
            Self::RateLimited => 429,
            Self::Overloaded
            | Self::Unavailable
            | Self::PollDisputed
            | Self::Unconfirmed
            | Self::NotReplicated => 503,
        }
    }
}

/// Whether a 503 or 429 refusal with this code (as sent: `unconfirmed`, `overloaded`, …) may
/// follow a count: Tally's sheds take nothing, but an edge's `unconfirmed` (and a node's
/// `not_replicated`, when its ack mode waits for a peer) sent the vote on and lost the
/// answer. Unknown codes are taken as sheds, as before they existed.
pub fn refusal_may_follow_a_count(code: &str) -> bool {
    matches!(code, "unconfirmed" | "not_replicated")
}
