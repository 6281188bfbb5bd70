//! The old table of a growing dedupe index while its entries move into the new one, and the
//! rule that tells, for any key, which of the two tables holds it, so that a lookup asks one
//! table, not both.
//!
//! Homes are the top hash bits and probing is linear (`position_table.rs`), so an entry sits
//! in its home group or after it, with only full groups between, and never before it, except
//! where a run of full groups passes the table's last group and wraps around to group 0.
//! Groups move in two runs:
//! 1. **Bottom up, from group 0, to the first group with an empty slot.** Every wrapped
//!    entry sits in these groups (the groups before it were full when it was placed, and an
//!    old table never loses an entry, so they still are). Until this run ends (usually one
//!    group, one step), a lookup asks the new table and then the whole old one.
//! 2. **Top down, from the last group.** The groups still to move are then one range, `low..
//!    high`. A key whose home (in the old table) lies outside it is only in the new table: its
//!    entry, if the old table had one, sat at or after its home, so in a moved group, or in
//!    the wrapped groups. A key whose home lies inside it is in the old table at or after its
//!    home and below `high`, or, if the probe reaches `high` without meeting an empty slot,
//!    in the new table. A new key is placed by the same rule, in both runs: in the old table
//!    if it has an empty slot from the key's home to `high` (it moves later, with its group),
//!    otherwise in the new table. Moved groups keep their stale copies; no probe looks at
//!    them.

use crate::limits::INDEX_GROWTH_STEP_MOVES_MAX as GROWTH_STEP_MOVES_MAX;
use crate::position_table::{GROUP_SLOTS, Keys, Position, PositionTable, Probe};

const GROWTH_STEP_GROUPS: usize = GROWTH_STEP_MOVES_MAX / GROUP_SLOTS;
const _: () = assert!(GROWTH_STEP_GROUPS >= 1 && GROWTH_STEP_MOVES_MAX % GROUP_SLOTS == 0);

/// Which table holds a key, or would take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The new table only.
    New,
    /// The old table, from the key's home up to the unmoved range's end; past that, the new.
    Old,
    /// Either (the bottom-up run is not over): the new table first, then all of the old one.
    Both,
}

/// The old table of a growing index, and how far its entries have moved.
pub(crate) struct MovingTable {
    pub(crate) table: PositionTable,
    /// Groups `0..low` are moved (bottom up, first).
    low: usize,
    /// Whether the bottom-up run is over.
    wrapped: bool,
    /// Groups `high..` are moved (top down, after).
    high: usize,
    /// Entries moved so far.
    moved: usize,
    /// Steps the preparing phase took, for progress reports.
    pub(crate) prepared_steps: usize,
}

impl MovingTable {
    /// Starts moving `table`, all of whose entries are still in it.
    pub(crate) fn new(table: PositionTable, prepared_steps: usize) -> Self {
        Self {
            high: table.groups(),
            table,
            low: 0,
            wrapped: false,
            moved: 0,
            prepared_steps,
        }
    }

    /// Entries not moved yet.
    pub(crate) fn unmoved(&self) -> usize {
        self.table.len() - self.moved
    }

    /// Entries moved so far.
    pub(crate) fn moved(&self) -> usize {
        self.moved
    }

    /// Groups moved so far.
    pub(crate) fn moved_groups(&self) -> usize {
        self.low + (self.table.groups() - self.high)
    }

    /// The groups that still hold entries to move.
    pub(crate) fn unmoved_groups(&self) -> std::ops::Range<usize> {
        self.low..self.high
    }

    /// Which table holds the key of `hash`.
    pub(crate) fn route(&self, hash: u64) -> Route {
        if !self.wrapped {
            return Route::Both;
        }
        if (self.low..self.high).contains(&self.table.home(hash)) {
            Route::Old
        } else {
            Route::New
        }
    }

    /// Looks for the key of `hash` in the unmoved groups (for a key routed [`Route::Old`]).
    pub(crate) fn find(&self, hash: u64, is_key: impl FnMut(Position) -> bool) -> Probe {
        self.table.find_below(hash, is_key, self.high)
    }

    /// Places a new key in the old table if its home is in the unmoved groups and a slot is
    /// free from there up to `high`; returns whether it did (else it belongs in the new
    /// table). The same in both runs: during the bottom-up one, `high` is the table's end, so
    /// a key placed here never wraps around, and every key placed in the new table instead
    /// would have met only full groups up to the end: the rule of the top-down run holds for
    /// it from the start.
    pub(crate) fn insert(&mut self, hash: u64, position: Position) -> bool {
        (self.low..self.high).contains(&self.table.home(hash))
            && self.table.insert_below(hash, position, self.high)
    }

    /// Moves the next groups' entries into `into`, rehashing each with `keys`: at most
    /// [`GROWTH_STEP_MOVES_MAX`] entries. Returns whether every entry has moved.
    pub(crate) fn step<K: Keys>(&mut self, into: &mut PositionTable, keys: &K) -> bool {
        let groups = if self.wrapped {
            let end = self.high;
            self.high = end.saturating_sub(GROWTH_STEP_GROUPS).max(self.low);
            self.high..end
        } else {
            let start = self.low;
            while self.low < self.high && self.low - start < GROWTH_STEP_GROUPS {
                self.low += 1;
                if self.table.group_has_empty(self.low - 1) {
                    self.wrapped = true;
                    break;
                }
            }
            self.wrapped |= self.low == self.high;
            start..self.low
        };
        let mut positions = [0 as Position; GROWTH_STEP_MOVES_MAX];
        let mut count = 0;
        self.table.for_each_in(groups, |position| {
            positions[count] = position;
            count += 1;
        });
        // Records first, hashes next, inserts last: the record reads are independent cache
        // misses, and with little work between them the CPU has them all in flight at once.
        let mut read = [K::Key::default(); GROWTH_STEP_MOVES_MAX];
        for (key, &position) in read.iter_mut().zip(&positions[..count]) {
            *key = keys.key_at(position);
        }
        let mut hashes = [0u64; GROWTH_STEP_MOVES_MAX];
        for (hash, &key) in hashes.iter_mut().zip(&read[..count]) {
            *hash = keys.hash(key);
        }
        for (&hash, &position) in hashes.iter().zip(&positions[..count]) {
            into.insert_moved(hash, position);
        }
        self.moved += count;
        self.wrapped && self.low == self.high
    }
}
