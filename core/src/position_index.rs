//! The dedupe index of one poll: a set of record positions that grows without stopping the
//! world.
//!
//! A hash table that doubles all at once rehashes every entry while its owner waits: for the
//! dedupe index that was 1.7–1.9 s at 28M vote IDs, with every vote standing still
//! (BENCHMARKS.md, "The dedupe index's growth pauses"). This index grows the way Redis
//! rehashes its dictionaries, a few entries per operation, in two phases:
//!
//! 1. **Preparing.** When the table is nearly full (or a reservation asks for more), a table
//!    of twice the groups (or the reservation's) is allocated, untouched, and each step
//!    touches [`INDEX_GROWTH_STEP_PAGES`](crate::limits::INDEX_GROWTH_STEP_PAGES) of its pages. Inserts still go to the full-size table.
//! 2. **Moving.** Once every page is touched, the new table takes every insert, and each step
//!    moves the entries of the old table's top [`INDEX_GROWTH_STEP_MOVES_MAX`](crate::limits::INDEX_GROWTH_STEP_MOVES_MAX) / 8 groups into it,
//!    rehashing at most [`INDEX_GROWTH_STEP_MOVES_MAX`](crate::limits::INDEX_GROWTH_STEP_MOVES_MAX) IDs. Lookups ask the new table, then the
//!    old one: an entry moved (and perhaps replaced since) is found in the new table first,
//!    and the old table is never changed except in the positions of entries not yet moved.
//!    When the last group is moved the old table is freed.
//!
//! Every insert runs one step, and [`PositionIndex::advance`] runs more (the node's engine
//! calls it on its tick, so an idle index finishes growing and frees the old table). The
//! rates are such that each phase ends long before the table it fills is full: preparing
//! starts while the table can take twice the inserts it needs, and the old table is moved
//! after at most 1/32 of its entries' worth of inserts, while the new one has room for 7/8.
//! If a phase ever is overtaken (a reservation asked for a large table while the index was
//! nearly full), the index switches at once and touches the remaining pages step by step.
//!
//! Hashing and key comparison are the caller's: the index stores 4-byte positions, and the
//! record store hashes and compares the vote ID each one points at.

use crate::limits::{INDEX_GROWTH_STEP_MOVES_MAX as GROWTH_STEP_MOVES_MAX, INDEX_GROWTH_STEP_PAGES as GROWTH_STEP_PAGES};
use crate::position_table::{GROUP_SLOTS, PAGE_BYTES, PositionTable};
use crate::record_store::Position;

const GROWTH_STEP_GROUPS: usize = GROWTH_STEP_MOVES_MAX / GROUP_SLOTS;
const _: () = assert!(GROWTH_STEP_GROUPS >= 1 && GROWTH_STEP_MOVES_MAX % GROUP_SLOTS == 0);

/// How far a growing index has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexGrowth {
    /// Vote IDs the index held before it had to grow.
    pub from_capacity: usize,
    /// Vote IDs it holds before it must grow again, once grown.
    pub to_capacity: usize,
    /// Growth steps done: pages of the new table touched, then groups of the old one moved.
    pub steps_done: usize,
    /// Growth steps in all.
    pub steps: usize,
}

impl IndexGrowth {
    /// The fraction of the work done, from 0 to 1.
    pub fn progress(&self) -> f64 {
        if self.steps == 0 {
            1.0
        } else {
            self.steps_done as f64 / self.steps as f64
        }
    }
}

/// The old table while its entries move into the new one.
struct Moving {
    table: PositionTable,
    /// Groups `0..unmoved_groups` still hold entries to move; the groups above are moved.
    unmoved_groups: usize,
    moved: usize,
    /// Steps the preparing phase took, for [`IndexGrowth`].
    prepared_steps: usize,
}

impl Moving {
    /// Moves the entries of the top unmoved groups into `into`, rehashing each with `hash_of`.
    /// Returns whether every entry is moved.
    fn step(&mut self, into: &mut PositionTable, hash_of: &impl Fn(Position) -> u64) -> bool {
        let end = self.unmoved_groups;
        let start = end.saturating_sub(GROWTH_STEP_GROUPS);
        let mut positions = [0 as Position; GROWTH_STEP_MOVES_MAX];
        let mut count = 0;
        self.table.for_each_in(start..end, |position| {
            positions[count] = position;
            count += 1;
        });
        // Hashes first, inserts after: the record reads behind the hashes are independent
        // cache misses, and the CPU overlaps them.
        let mut hashes = [0u64; GROWTH_STEP_MOVES_MAX];
        for (hash, &position) in hashes.iter_mut().zip(&positions[..count]) {
            *hash = hash_of(position);
        }
        for (&hash, &position) in hashes.iter().zip(&positions[..count]) {
            into.insert_new(hash, position);
        }
        self.moved += count;
        self.unmoved_groups = start;
        start == 0
    }
}

/// A set of positions, keyed and hashed by the caller, that grows a bounded step at a time.
#[derive(Default)]
pub(crate) struct PositionIndex {
    /// The table inserts go to.
    table: PositionTable,
    /// Preparing: the next table, its pages being touched.
    next: Option<PositionTable>,
    /// Moving: the previous table, its entries being moved into `table`.
    old: Option<Moving>,
    /// Groups a reservation asked for that the tables do not have yet.
    wanted_groups: usize,
}

impl PositionIndex {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        let unmoved = self.old.as_ref().map_or(0, |old| old.table.len() - old.moved);
        self.table.len() + unmoved
    }

    /// Entries it holds before it must grow (again): the larger table's, or the reservation's.
    pub(crate) fn capacity(&self) -> usize {
        let next = self.next.as_ref().map_or(0, PositionTable::capacity);
        let wanted = PositionTable::capacity_of(self.wanted_groups);
        self.table.capacity().max(next).max(wanted)
    }

    /// The position held for the key of `hash` that `is_key` accepts, if any.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is_key: impl FnMut(Position) -> bool) -> Option<Position> {
        if let Some(slot) = self.table.find(hash, &mut is_key) {
            return Some(self.table.get(slot));
        }
        let old = &self.old.as_ref()?.table;
        old.find(hash, is_key).map(|slot| old.get(slot))
    }

    /// Replaces the position held for the key of `hash`; returns whether it was held.
    pub(crate) fn replace(&mut self, hash: u64, mut is_key: impl FnMut(Position) -> bool, position: Position) -> bool {
        if let Some(slot) = self.table.find(hash, &mut is_key) {
            self.table.set(slot, position);
            return true;
        }
        let Some(old) = self.old.as_mut() else {
            return false;
        };
        // Not in the new table, so not moved yet: the move will carry the new position.
        match old.table.find(hash, is_key) {
            Some(slot) => {
                old.table.set(slot, position);
                true
            }
            None => false,
        }
    }

    /// Adds `position` for the key of `hash`, which the caller knows is not held.
    pub(crate) fn insert_new(&mut self, hash: u64, position: Position, hash_of: &impl Fn(Position) -> u64) {
        self.make_room(hash_of);
        self.table.insert_new(hash, position);
    }

    /// Adds `position` for the key of `hash` unless the key is held; then returns the
    /// position held and changes nothing.
    pub(crate) fn insert_if_new(
        &mut self,
        hash: u64,
        is_key: impl FnMut(Position) -> bool,
        position: Position,
        hash_of: &impl Fn(Position) -> u64,
    ) -> Option<Position> {
        if let Some(held) = self.find(hash, is_key) {
            return Some(held);
        }
        self.insert_new(hash, position, hash_of);
        None
    }

    /// Calls `visit` with every position held.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(Position)) {
        self.table.for_each_in(0..self.table.groups(), &mut visit);
        if let Some(old) = &self.old {
            old.table.for_each_in(0..old.unmoved_groups, visit);
        }
    }

    /// Makes the index hold `entries` without growing again: at once, touching every page,
    /// if it holds nothing (before votes arrive); otherwise by growing step by step.
    pub(crate) fn reserve(&mut self, entries: usize, hash_of: &impl Fn(Position) -> u64) {
        let groups = PositionTable::groups_for(entries);
        if PositionTable::capacity_of(groups) <= self.capacity() {
            return;
        }
        if self.len() == 0 {
            let mut table = PositionTable::with_groups(groups);
            table.prefault(usize::MAX);
            *self = Self::from_table(table);
            return;
        }
        self.wanted_groups = groups;
        self.next = None;
        self.step(hash_of);
    }

    /// An index whose table is `table` (empty).
    pub(crate) fn from_table(table: PositionTable) -> Self {
        debug_assert_eq!(table.len(), 0);
        Self {
            table,
            ..Self::default()
        }
    }

    /// Runs up to `steps` growth steps; returns whether the index is still growing.
    pub(crate) fn advance(&mut self, steps: usize, hash_of: &impl Fn(Position) -> u64) -> bool {
        for _ in 0..steps {
            if !self.is_growing() {
                break;
            }
            self.step(hash_of);
        }
        self.is_growing()
    }

    fn is_growing(&self) -> bool {
        self.next.is_some() || self.old.is_some() || self.wanted_groups > self.table.groups()
    }

    /// Where growth stands, if the index is growing.
    pub(crate) fn growth(&self) -> Option<IndexGrowth> {
        if let Some(next) = &self.next {
            let total = self.prepare_steps(next.groups());
            return Some(IndexGrowth {
                from_capacity: self.table.capacity(),
                to_capacity: next.capacity(),
                steps_done: total - next.pages_to_prefault().div_ceil(GROWTH_STEP_PAGES),
                steps: total + self.table.groups().div_ceil(GROWTH_STEP_GROUPS),
            });
        }
        if let Some(old) = &self.old {
            let move_steps = old.table.groups().div_ceil(GROWTH_STEP_GROUPS);
            let moved_steps = (old.table.groups() - old.unmoved_groups).div_ceil(GROWTH_STEP_GROUPS);
            return Some(IndexGrowth {
                from_capacity: old.table.capacity(),
                to_capacity: self.table.capacity(),
                steps_done: old.prepared_steps + moved_steps,
                steps: old.prepared_steps + move_steps,
            });
        }
        None
    }

    /// Steps it takes to touch every page of a table of `groups` groups.
    fn prepare_steps(&self, groups: usize) -> usize {
        let bytes = groups * (size_of::<u64>() + GROUP_SLOTS * size_of::<Position>());
        bytes.div_ceil(PAGE_BYTES).div_ceil(GROWTH_STEP_PAGES)
    }

    /// One bounded step of growth, if any is due: move some entries, or touch some pages,
    /// or begin preparing the next table.
    fn step(&mut self, hash_of: &impl Fn(Position) -> u64) {
        let moved_all = self
            .old
            .as_mut()
            .is_some_and(|old| old.step(&mut self.table, hash_of));
        if moved_all {
            // Freeing the old table is one `munmap`: ~2 ms for 320 MB on 2 MiB pages.
            self.old = None;
        }
        if let Some(next) = &mut self.next {
            if next.prefault(GROWTH_STEP_PAGES) && self.old.is_none() {
                self.switch();
            }
        } else if self.table.pages_to_prefault() > 0 {
            // A table switched in early (see `make_room`) finishes being touched.
            self.table.prefault(GROWTH_STEP_PAGES);
        }
        if self.next.is_none() && self.old.is_none() {
            let next_groups = (2 * self.table.groups()).max(self.wanted_groups);
            // Start while the table can take twice the inserts the preparing takes.
            let lead = 2 * self.prepare_steps(next_groups) + GROUP_SLOTS;
            let room = self.table.capacity() - self.table.len();
            if room <= lead || self.wanted_groups > self.table.groups() {
                self.next = Some(PositionTable::with_groups(next_groups.max(2)));
            }
        }
    }

    /// Makes sure the table takes one more entry: runs a step, and if the table is full
    /// even so (preparing was overtaken, or this is the first entry), switches now.
    fn make_room(&mut self, hash_of: &impl Fn(Position) -> u64) {
        self.step(hash_of);
        if !self.table.is_full() {
            return;
        }
        if let Some(old) = &mut self.old {
            // Not reached by the rates (module docs); handled rather than assumed.
            debug_assert!(false, "the new table filled before the old one was moved");
            while !old.step(&mut self.table, hash_of) {}
            self.old = None;
        }
        if self.next.is_none() {
            let groups = (2 * self.table.groups()).max(self.wanted_groups).max(2);
            self.next = Some(PositionTable::with_groups(groups));
        }
        self.switch();
    }

    /// Makes the prepared table the one inserts go to, and starts moving the old one into it.
    fn switch(&mut self) {
        let Some(next) = self.next.take() else { return };
        let prepared_steps = self.prepare_steps(next.groups());
        let old = std::mem::replace(&mut self.table, next);
        if self.wanted_groups <= self.table.groups() {
            self.wanted_groups = 0;
        }
        if old.len() > 0 {
            self.old = Some(Moving {
                unmoved_groups: old.groups(),
                table: old,
                moved: 0,
                prepared_steps,
            });
        }
    }

    /// Bytes of heap the tables hold.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self.next.as_ref().map_or(0, PositionTable::heap_bytes)
            + self.old.as_ref().map_or(0, |old| old.table.heap_bytes())
    }
}
