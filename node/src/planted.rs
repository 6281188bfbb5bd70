//! Planted bugs: guarantees a node breaks on purpose, so that the simulation's tests
//! (`sim/tests/cluster.rs`, "The checker catches real bugs" in SIMULATION.md) prove the
//! checker catches each bug class. Only the caller that starts a node can plant one, through
//! [`crate::NodeIo::planted_bug`] (the simulation does; `tally run` passes `None`): no
//! configuration file, flag or environment variable reaches it. At start-up each planted bug
//! switches one behaviour of the engine, the recovery or the replica, and nothing else reads
//! it.

/// A guarantee a node can be told to break: each is a real bug class the simulation's checker
/// must find.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// Records from peers are not deduplicated: a vote ID already counted here is counted
    /// again when another region's record for it arrives (no winner-rule retraction).
    KeepDuplicates,
    /// Votes are answered before the log holding them is fsynced.
    AckBeforeFsync,
    /// In `ack_mode = "replicated"`, votes are answered as soon as their records are handed
    /// to the push sessions, before any ack peer reports them fsynced (or has them at all).
    AckBeforePeerFsync,
    /// A node that starts on an empty disk reuses a fixed incarnation instead of drawing a
    /// new one, so after losing its disk it reuses its old actor's sequence numbers; and it
    /// refuses its own actor's records from peers instead of moving to a new incarnation (the
    /// rescue issue 29 added would otherwise hide the reuse from the checker).
    ReuseActorAfterDiskLoss,
    /// The clock watch never holds (as if the node had no peers): a node whose clock steps
    /// keeps stamping votes and proposing windows at it.
    IgnoreClockSkew,
    /// When a log write or fsync fails, the votes of the failed job are answered `counted`
    /// anyway, though the log does not hold them.
    AckAfterFailedWrite,
    /// Recovery treats damage in the last log segment as a torn tail, as it did before
    /// issue 29: it cuts the log at the first bad frame (deleting every valid entry after
    /// it) and continues under the same actor, so it issues the lost seqs again.
    TruncateDamagedLog,
    /// Records and counters of a poll are exchanged with peers that define it otherwise, by
    /// option index: a region whose options are in another order counts the other regions'
    /// votes under the wrong names (issue 31).
    MergeAcrossDefinitions,
}
