//! The Jepsen-style history of one run: every client call as invoked, and how it ended
//! (ok with its answer, failed for certain, or unknown), folded per vote ID into what the
//! oracle needs; plus every read of results made during the chaos.
//!
//! Shared by every simulated client and the driver (all on turmoil's one thread) behind one
//! mutex; nothing here waits.

/// What one vote ID went through. A full run holds 30 million of these, so the fields are
/// ordered (and the receipt packed without an `Option` tag) to make it 48 bytes, not 64:
/// every gigabyte a run touches costs seconds of the host's page zeroing (BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct VoteEntry {
    /// The vote ID's 16 bytes.
    pub id: [u8; 16],
    /// When the first attempt was invoked (simulated Unix ms; 0: never).
    pub invoked_ms: u64,
    /// When the latest acknowledgement arrived.
    pub last_ack_ms: u64,
    /// When the answer carrying the receipt arrived (meaningful with `receipt_actor`).
    receipt_ms: u64,
    /// The receipt's actor, an index into [`Ledger::actors`]; [`NO_RECEIPT`] if none.
    receipt_actor: u32,
    /// The option chosen (every attempt uses the same one).
    pub option: u8,
    /// Regions some attempt may have reached (bit per region).
    pub sent_mask: u8,
    /// Regions that acknowledged it (`counted` or `duplicate`; bit per region).
    pub acked_mask: u8,
}

/// `receipt_actor` of a vote without a receipt.
const NO_RECEIPT: u32 = u32::MAX;

const _: () = assert!(std::mem::size_of::<VoteEntry>() == 48);

impl Default for VoteEntry {
    fn default() -> Self {
        Self {
            id: [0; 16],
            invoked_ms: 0,
            last_ack_ms: 0,
            receipt_ms: 0,
            receipt_actor: NO_RECEIPT,
            option: 0,
            sent_mask: 0,
            acked_mask: 0,
        }
    }
}

impl VoteEntry {
    /// A vote not yet invoked: its ID and option.
    pub fn new(id: [u8; 16], option: u8) -> Self {
        Self {
            id,
            option,
            ..Self::default()
        }
    }

    /// For a single vote answered `counted`: the actor of its receipt (an index into
    /// [`Ledger::actors`]) and when that answer arrived.
    pub fn receipt(&self) -> Option<(u32, u64)> {
        (self.receipt_actor != NO_RECEIPT).then_some((self.receipt_actor, self.receipt_ms))
    }

    /// Records a `counted` answer's receipt: its actor's index and when it arrived.
    pub fn set_receipt(&mut self, actor: u32, at_ms: u64) {
        assert_ne!(
            actor, NO_RECEIPT,
            "more receipt actors than a u32 can number"
        );
        self.receipt_actor = actor;
        self.receipt_ms = at_ms;
    }

    /// Whether an attempt may have reached a node (the vote may be counted).
    pub fn maybe_counted(&self) -> bool {
        self.sent_mask != 0
    }

    /// Whether a node acknowledged it.
    pub fn acked(&self) -> bool {
        self.acked_mask != 0
    }
}

/// One read of a poll's results during the run.
#[derive(Debug, Clone)]
pub struct Read {
    /// The region read.
    pub region: usize,
    /// When the answer arrived (simulated Unix ms).
    pub completed_ms: u64,
    /// The answer's capture time.
    pub as_of_ms: u64,
    /// Its total.
    pub total: i64,
    /// The serving node's own actor (an index into [`Ledger::actors`]).
    pub local_actor: Option<u32>,
}

/// Counts of client calls by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls invoked.
    pub invoked: u64,
    /// Answered 200.
    pub ok: u64,
    /// Failed for certain (no connection, or shed with 429/503): changed nothing.
    pub failed: u64,
    /// No answer: may or may not have taken effect.
    pub unknown: u64,
    /// Answered with another status.
    pub refused: u64,
}

/// The whole history.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Per vote ID, by vote number.
    pub votes: Vec<VoteEntry>,
    /// Vote IDs invoked so far.
    pub invoked: u64,
    /// Every call's invocation: (simulated Unix ms, votes it carried). Each vote of a call
    /// can add at most one record anywhere, so these bound what any read may show.
    pub attempts: Vec<(u64, u32)>,
    /// Receipt actors seen, interned.
    pub actors: Vec<String>,
    /// Reads during the chaos.
    pub reads: Vec<Read>,
    /// Single-vote calls.
    pub single_calls: CallCounts,
    /// Batch calls.
    pub batch_calls: CallCounts,
    /// Single votes retried at a region other than their first.
    pub cross_region_retries: u64,
    /// Disks lost: (region, when it crashed, when it came back with an empty disk), in
    /// simulated Unix ms.
    pub disk_losses: Vec<(usize, u64, u64)>,
    /// Under replicated acks, each region's ack peer (`None`: `local` acks).
    pub ack_partners: Option<Vec<usize>>,
    /// Disk damage done: (region, file, damaged bytes), in order.
    pub corruptions: Vec<(usize, String, std::ops::Range<u64>)>,
    /// Vote IDs whose records lay in a log frame that disk damage destroyed: the copy on
    /// that disk is gone (a peer may hold another).
    pub destroyed: std::collections::HashSet<u128>,
    /// Per start on a damaged log: (when the node began serving, simulated Unix ms; how many
    /// votes its recovery recorded again under its new incarnation, its
    /// `tally_log_adopted_votes`). Each is a second record of a vote no call carried again.
    pub adoptable: Vec<(u64, u64)>,
    /// `counted` receipts (single votes, and bulk votes through edges): (receipt actor, its
    /// seq, vote number). No two votes may share an (actor, seq): DESIGN.md §2, an actor never
    /// issues a seq twice; and no vote may have two: an actor answers `counted` once.
    pub receipts: Vec<(u32, u64, u32)>,
    /// Edge answers that said a vote was durable without naming the node (or, for `counted`,
    /// without the node's receipt): an edge saying so on its own authority. Must stay 0.
    pub unproven_edge_answers: u64,
    /// Per region, when its latest `200` answer to a vote or batch arrived (simulated Unix
    /// ms; the driver aims crashes just after one).
    pub last_answer_ms: Vec<u64>,
    /// Whether every workload client has finished.
    pub clients_done: bool,
    /// Set by the driver once every fault is over, the network is whole, and a mismatched
    /// definition has been fixed.
    pub healed: bool,
    /// Per region, whether its poll lists the options in the other order (an edge maps an
    /// option to that region's index, as one that read the region's option list would).
    pub reversed: Vec<bool>,
    /// The running trace hash (FNV-1a over every event, in order).
    pub trace: u64,
    /// The run's faults (set by the driver), for the clock checks' exceptions.
    pub faults: Vec<super::Fault>,
    /// Every single vote answered `counted`: the second its receipt was stamped with.
    pub stamps: Vec<Stamp>,
    /// Votes and batches refused with 503 because the node's clock was held: (region, when
    /// the answer arrived, simulated Unix ms).
    pub clock_refusals: Vec<(usize, u64)>,
}

/// The stamp of one single vote answered `counted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The region that answered.
    pub region: usize,
    /// The receipt's poll second.
    pub second: u64,
    /// When the attempt that was answered was sent (simulated Unix ms).
    pub sent_ms: u64,
    /// When its answer arrived.
    pub answered_ms: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Ledger {
    /// An empty history for `votes` vote IDs.
    pub fn new(votes: Vec<VoteEntry>) -> Self {
        Self {
            votes,
            trace: FNV_OFFSET,
            ..Self::default()
        }
    }

    /// Folds an event into the trace hash.
    pub fn trace(&mut self, words: &[u64]) {
        for word in words {
            for byte in word.to_le_bytes() {
                self.trace ^= u64::from(byte);
                self.trace = self.trace.wrapping_mul(FNV_PRIME);
            }
        }
    }

    /// The index of canonical option `option` (0 green, 1 blue) at `region`.
    pub fn option_at(&self, region: usize, option: u8) -> u8 {
        if self.reversed.get(region).copied().unwrap_or(false) {
            1 - option
        } else {
            option
        }
    }

    /// Notes a `200` answer from `region` at `now_ms`.
    pub fn answered(&mut self, region: usize, now_ms: u64) {
        if self.last_answer_ms.len() <= region {
            self.last_answer_ms.resize(region + 1, 0);
        }
        self.last_answer_ms[region] = now_ms;
    }

    /// The index of `actor`, interning it.
    pub fn actor_index(&mut self, actor: &str) -> u32 {
        if let Some(i) = self.actors.iter().position(|a| a == actor) {
            return i as u32;
        }
        self.actors.push(actor.to_owned());
        (self.actors.len() - 1) as u32
    }

    /// Notes damage that [`super::disk::corrupt`] did to `region`'s disk.
    pub fn corrupted(&mut self, region: usize, damage: &super::disk::Corruption) {
        self.corruptions
            .push((region, damage.file.clone(), damage.bytes.clone()));
        self.destroyed.extend(damage.destroyed.iter().copied());
    }

    /// Notes that a node recovering from a damaged log recorded `votes` again under its new
    /// incarnation, serving from `now_ms`.
    pub fn adopted(&mut self, votes: u64, now_ms: u64) {
        self.adoptable.push((now_ms, votes));
    }

    /// Whether acknowledged vote `v` may be missing because disk damage destroyed a log
    /// frame holding its record: that copy is gone; if no peer had taken it yet, no copy
    /// exists anywhere (DESIGN.md §4: a node's disk is its one copy under `local` acks).
    pub fn destroyed_by_damage(&self, v: &VoteEntry) -> bool {
        self.destroyed.contains(&u128::from_be_bytes(v.id))
    }

    /// Whether the loss of acknowledged vote `v` is allowed under the `local` ack mode: every
    /// acknowledgement came from one region, and from the incarnation that region then lost
    /// with its disk — the last acknowledgement arrived before the region came back (one
    /// arriving while it was down was sent before the crash). DESIGN.md §4; the caller's
    /// probe answered `counted`, so no surviving node held it.
    pub fn loss_allowed(&self, v: &VoteEntry) -> bool {
        if v.acked_mask.count_ones() != 1 {
            return false;
        }
        let region = v.acked_mask.trailing_zeros() as usize;
        let lost = |region: usize| {
            self.disk_losses
                .iter()
                .any(|&(r, _, back)| r == region && v.last_ack_ms < back)
        };
        // Under replicated acks (DESIGN.md §4) the ack peer's disk held it too: only losing
        // both disks may lose it.
        match &self.ack_partners {
            None => lost(region),
            Some(partners) => lost(region) && lost(partners[region]),
        }
    }
}
