//! The dedupe index: for each vote ID held, the position of its winning record.
//!
//! Swiss tables (hashbrown) of bare 4-byte positions that compare IDs by reading the record, so
//! no vote ID is stored twice, split into [`SHARDS`] shards by 8 bits of the ID's keyed hash.
//!
//! Why this shape (measured, BENCHMARKS.md):
//! - a swiss table keeps one control byte per slot apart from the slots. Looking up a new ID
//!   reads only its control bytes, a region a fifth the size of the table that mostly stays
//!   in the CPU's last-level cache even at tens of millions of IDs. A table of 8-byte slots
//!   holding a tag and a position, tried instead, made every lookup a DRAM miss and accepts
//!   1.3–1.5× slower at 10M IDs held;
//! - a resize rehashes every ID, which means reading every record at random. In one table
//!   that is a pause of a second or more at 15M IDs, with votes waiting behind it; each shard
//!   resizes on its own, 1/256 of the pause (and of the transient memory of old and new table
//!   side by side) at a time.
//!
//! No ID is ever removed: a vote ID, once held, is held forever; only its winner changes.

use hashbrown::HashTable;

use crate::record_store::Position;

/// Shards of the index.
const SHARDS: usize = 256;

/// A vote ID's 64-bit keyed hash. The shard comes from bits 32..40, clear of the bits a swiss
/// table uses itself (its low bits pick a bucket, its top 7 bits are the control byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdHash(pub(crate) u64);

impl IdHash {
    fn shard(self) -> usize {
        ((self.0 >> 32) as usize) % SHARDS
    }
}

/// The winner of each vote ID, by keyed hash; the records themselves live in the store.
pub(crate) struct VoteIndex {
    shards: Box<[HashTable<Position>]>,
    len: usize,
}

impl VoteIndex {
    /// An empty index.
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
            len: 0,
        }
    }

    /// Vote IDs indexed.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The winner's position of the ID with `hash`, if indexed; `eq` says whether a position
    /// holds that ID.
    pub(crate) fn find(&self, hash: IdHash, eq: impl Fn(Position) -> bool) -> Option<Position> {
        self.shards[hash.shard()].find(hash.0, |&p| eq(p)).copied()
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
        let shard = &mut self.shards[hash.shard()];
        match shard.entry(hash.0, |&p| eq(p), |&p| hash_at(p).0) {
            hashbrown::hash_table::Entry::Occupied(winner) => Some(*winner.get()),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(position);
                self.len += 1;
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
        self.shards[hash.shard()].insert_unique(hash.0, position, |&p| hash_at(p).0);
        self.len += 1;
    }

    /// Makes `position` the winner of its ID (with `hash`), which must be indexed. Returns
    /// whether it was.
    pub(crate) fn replace(
        &mut self,
        hash: IdHash,
        position: Position,
        eq: impl Fn(Position) -> bool,
    ) -> bool {
        match self.shards[hash.shard()].find_mut(hash.0, |&p| eq(p)) {
            Some(slot) => {
                *slot = position;
                true
            }
            None => false,
        }
    }

    /// Every winner's position, in no particular order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.shards.iter().flat_map(|s| s.iter().copied())
    }

    /// Bytes of heap reserved (capacity, not length): per bucket, a position and a control
    /// byte (buckets are capacity × 8/7).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.capacity() * (std::mem::size_of::<Position>() + 1) * 8 / 7)
            .sum::<usize>()
            + self.shards.len() * std::mem::size_of::<HashTable<Position>>()
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
        // Goal: two IDs with the same hash (so the same shard and bucket) both index and both
        // stay findable; the record comparison decides.
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
    fn a_shard_that_grows_keeps_every_id_and_the_others_stay_empty() {
        // Goal: IDs aimed at one shard all land there, survive its resizes, and stay findable.
        let count = 20_000u64;
        let ids: Vec<u64> = (0..count).collect();
        let hash = |id: u64| IdHash((7 << 32) | (id.wrapping_mul(0x9e37_79b9) << 40) | id);
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
        assert_eq!(index.shards[7].len(), count as usize);
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
