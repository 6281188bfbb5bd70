//! The dedupe index: for each vote ID held, the position of its winning record.
//!
//! A swiss table (hashbrown) of bare 4-byte positions that compares IDs by reading the record,
//! so no vote ID is stored twice. One control byte per bucket sits apart from the positions:
//! looking up a new ID reads only its control bytes, a region a fifth the size of the table.
//!
//! Tried and not kept (BENCHMARKS.md):
//! - 8-byte slots holding 32 hash bits next to the position (one miss per lookup, resizes
//!   without reading records): every lookup became a DRAM miss, accepts 1.3–1.5× slower at
//!   10M IDs held;
//! - 256 shards, each resizing on its own (a resize pause 1/256 as long): with the heap on
//!   transparent huge pages (node/src/huge_pages.rs), one big table is backed by 2 MiB pages
//!   and 256 small ones are not, and remote applies at 1M held fell from ~9M to ~5–7M
//!   records/s.
//!
//! No ID is ever removed: a vote ID, once held, is held forever; only its winner changes.

use hashbrown::HashTable;

use crate::record_store::Position;

/// A vote ID's 64-bit keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdHash(pub(crate) u64);

/// The winner of each vote ID, by keyed hash; the records themselves live in the store.
pub(crate) struct VoteIndex {
    table: HashTable<Position>,
}

impl VoteIndex {
    /// An empty index.
    pub(crate) fn new() -> Self {
        Self {
            table: HashTable::new(),
        }
    }

    /// Vote IDs indexed.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The winner's position of the ID with `hash`, if indexed; `eq` says whether a position
    /// holds that ID.
    pub(crate) fn find(&self, hash: IdHash, eq: impl Fn(Position) -> bool) -> Option<Position> {
        self.table.find(hash.0, |&p| eq(p)).copied()
    }

    /// Indexes `position` as the winner of its ID (with `hash`) if the ID has none, in one
    /// probe; otherwise leaves the index alone and returns the current winner's position.
    /// `hash_at` gives the hash of the ID at a position, for a resize.
    pub(crate) fn insert_if_new(
        &mut self,
        hash: IdHash,
        position: Position,
        eq: impl Fn(Position) -> bool,
        hash_at: impl Fn(Position) -> IdHash,
    ) -> Option<Position> {
        match self.table.entry(hash.0, |&p| eq(p), |&p| hash_at(p).0) {
            hashbrown::hash_table::Entry::Occupied(winner) => Some(*winner.get()),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(position);
                None
            }
        }
    }

    /// Indexes `position` as the winner of its ID (with `hash`), which the caller knows is not
    /// indexed: no comparisons.
    pub(crate) fn insert_unique(
        &mut self,
        hash: IdHash,
        position: Position,
        hash_at: impl Fn(Position) -> IdHash,
    ) {
        self.table
            .insert_unique(hash.0, position, |&p| hash_at(p).0);
    }

    /// Makes `position` the winner of its ID (with `hash`), which must be indexed. Returns
    /// whether it was.
    pub(crate) fn replace(
        &mut self,
        hash: IdHash,
        position: Position,
        eq: impl Fn(Position) -> bool,
    ) -> bool {
        match self.table.find_mut(hash.0, |&p| eq(p)) {
            Some(slot) => {
                *slot = position;
                true
            }
            None => false,
        }
    }

    /// Every winner's position, in no particular order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.table.iter().copied()
    }

    /// Bytes of heap reserved (capacity, not length): per bucket, a position and a control
    /// byte (buckets are capacity × 8/7).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<Position>() + 1) * 8 / 7
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A stand-in for the store: position `p` holds ID `ids[p]`.
    fn eq_at(ids: &[u64], id: u64) -> impl Fn(Position) -> bool + '_ {
        move |p| ids[p as usize] == id
    }

    /// A hash that lets tests aim IDs at one shard and one tag.
    fn hash_of(id: u64) -> IdHash {
        IdHash(id.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    #[test]
    fn colliding_tags_are_told_apart_by_the_records() {
        // Goal: two IDs with the same hash (so the same bucket) both index and both stay
        // findable; the record comparison decides.
        let ids = [10, 20];
        let same = IdHash(0xabcd_ef01_2345_6789);
        let mut index = VoteIndex::new();
        assert_eq!(
            index.insert_if_new(same, 0, eq_at(&ids, 10), |_| same),
            None
        );
        assert_eq!(
            index.insert_if_new(same, 1, eq_at(&ids, 20), |_| same),
            None
        );
        assert_eq!(index.find(same, eq_at(&ids, 10)), Some(0));
        assert_eq!(index.find(same, eq_at(&ids, 20)), Some(1));
        assert_eq!(index.find(same, eq_at(&ids, 30)), None);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn an_index_that_grows_keeps_every_id() {
        // Goal: IDs survive the table's resizes (rehashed through `hash_at`) and stay findable.
        let count = 20_000u64;
        let ids: Vec<u64> = (0..count).collect();
        let hash = hash_of;
        let mut index = VoteIndex::new();
        for &id in &ids {
            let inserted = index.insert_if_new(hash(id), id as Position, eq_at(&ids, id), |p| {
                hash(ids[p as usize])
            });
            assert_eq!(inserted, None);
        }
        for &id in &ids {
            assert_eq!(index.find(hash(id), eq_at(&ids, id)), Some(id as Position));
        }
        assert_eq!(index.len(), count as usize);
        assert_eq!(index.positions().count(), count as usize);
    }

    proptest! {
        #[test]
        fn behaves_like_a_map_from_id_to_winner(ops in proptest::collection::vec((0u64..500, any::<bool>()), 1..2_000)) {
            // Model: a HashMap from ID to its winner's position. Positions index a log of IDs
            // (the store); `replace` moves an ID's winner to a new record of the same ID.
            let mut log: Vec<u64> = Vec::new();
            let mut model: HashMap<u64, Position> = HashMap::new();
            let mut index = VoteIndex::new();
            for (id, replace) in ops {
                let position = log.len() as Position;
                log.push(id);
                let hash = hash_of(id);
                if replace && model.contains_key(&id) {
                    prop_assert!(index.replace(hash, position, eq_at(&log, id)));
                    model.insert(id, position);
                } else {
                    let winner = index.insert_if_new(hash, position, eq_at(&log, id), |p| {
                        hash_of(log[p as usize])
                    });
                    prop_assert_eq!(winner, model.get(&id).copied());
                    model.entry(id).or_insert(position);
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for (&id, &position) in &model {
                prop_assert_eq!(index.find(hash_of(id), eq_at(&log, id)), Some(position));
            }
            let mut positions: Vec<Position> = index.positions().collect();
            let mut expected: Vec<Position> = model.values().copied().collect();
            positions.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(positions, expected);
        }
    }
}
