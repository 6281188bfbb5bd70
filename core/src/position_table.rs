//! One open-addressing hash table of record positions, the building block of the dedupe
//! index ([`crate::position_index`]): 4 bytes a slot plus one control byte, like hashbrown's
//! swiss table, and one hint byte, made to be grown a little at a time.
//!
//! Control bytes are 0 for an empty slot and `0x80 | 7 hash bits` for a full one; they sit
//! apart from the slots, eight to a `u64` *group*, and a lookup compares a whole group in a few
//! word operations (SWAR; no `unsafe`, no SIMD intrinsics). A key's *home* group is the top
//! bits of its hash, and probing is linear, group after group. Three consequences the growing
//! index relies on:
//! - **Empty is zero.** A new table is a zeroed allocation, which the allocator takes from
//!   fresh pages without writing them: allocating is O(1) at any size, where hashbrown writes
//!   every control byte up front (measured: 19 ms for 2²⁶ slots, 42 ms for 2²⁷, with huge
//!   pages; BENCHMARKS.md). The pages are touched later, a bounded number at a time
//!   ([`PositionTable::prefault`]).
//! - **Order is kept.** Homes are the top hash bits, so a table lists its entries roughly in
//!   hash order, and the entries of one group of a table go to one or two neighbouring groups
//!   of a table twice its size: moving a table into a larger one reads and writes both
//!   sequentially.
//! - **A move reads no record.** Each slot's *hint* byte holds how many groups past its
//!   home the entry sits (up to 6) and the next 4 hash bits below the home's. From them and
//!   the control byte's 7 (the same at any size) a move places the entry in a table 2–16
//!   times larger without reading its record to rehash its ID ([`PositionTable::placement_in`]):
//!   that read, at random in hundreds of MB, was most of a growth's cost (BENCHMARKS.md,
//!   "Moving without reading records"). An entry moved a fifth time, or sitting 7+ groups
//!   from home, is rehashed from its record, and its hint filled again.
//! - **Nothing is removed.** The index only adds entries and replaces positions, so there
//!   are no tombstones, and a probe stops at the first group with an empty slot.
//!
//! The table grows when 3/4 of its slots are full, below hashbrown's 7/8: linear probing
//! in 8-slot groups clusters more than hashbrown's 16-slot triangular probing, and at 7/8 a
//! lookup of an absent key read 4.7 groups on average (runs of up to 83 full groups), at 3/4
//! 1.7 (runs of up to 21; 65,536 groups of random hashes). Power-of-two sizes make the
//! memory per ID hashbrown's at 1, 10 and 30 million IDs; between 3/4 and 7/8 of a size it
//! is the next size's.

/// A record's place in the record store (`record_store`): `chunk << CHUNK_SHIFT | offset`.
/// Defined here, the lowest of the index's modules, which every other one uses.
pub(crate) type Position = u32;

/// How the index reads the key a position points at, and hashes it, to move an entry whose
/// hint does not place it in a larger table (see [`Placement`]): in two calls, so that a
/// step reads all its records back to back (each a cache miss, which the CPU then
/// overlaps) before it hashes any.
pub(crate) trait Keys {
    /// A key, as read from a record.
    type Key: Copy + Default;
    /// The key of the record at `position`.
    fn key_at(&self, position: Position) -> Self::Key;
    /// The hash the index files `key` under.
    fn hash(&self, key: Self::Key) -> u64;
}

/// Slots per group: one control byte each, read as one `u64`.
pub(crate) const GROUP_SLOTS: usize = 8;

/// The bytes the allocator hands out memory in, and the unit in which a new table is
/// touched before use: 4 KiB, the smallest page (a 2 MiB huge page is faulted whole by its
/// first touch).
pub(crate) const PAGE_BYTES: usize = 4096;

/// Full slots a group holds at most on average: the table grows at 3/4 full.
const GROUP_LOAD_MAX: usize = 6;

/// The smallest table allocated: two groups.
pub(crate) const GROUPS_MIN: usize = 2;

/// A group's *head*: its control word (one control byte a slot, slot 0 in the low byte),
/// then its hint word (the same, of hint bytes). 16 bytes, so an insert writes its hint to
/// the cache line its probe read the control word from: it costs no extra cache miss. The
/// positions are apart, as in hashbrown: a lookup of an absent key (most of a burst's) reads
/// no position at all.
type Head = [u64; 2];
const CONTROL_WORD: usize = 0;
const HINT_WORD: usize = 1;

/// A hint byte: the slot's displacement (groups from the key's home, [`DISPLACEMENT_UNKNOWN`]
/// if that many or more) in its top 3 bits, and in its low 5 the next hash bits below the
/// home's, as many as [`KNOWN_BITS_MAX`], marked by a 1 above them (`1` alone: none left).
const DISPLACEMENT_SHIFT: u32 = 5;
const DISPLACEMENT_UNKNOWN: usize = 7;
const KNOWN_BITS_MAX: u32 = 4;
const _: () = assert!(DISPLACEMENT_UNKNOWN < 1 << (8 - DISPLACEMENT_SHIFT));
const _: () = assert!(KNOWN_BITS_MAX < DISPLACEMENT_SHIFT);

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
const _: () = assert!(GROUP_SLOTS == 8 && GROUPS_MIN.is_power_of_two());

/// The control byte of a full slot holding a key of `hash`: its low 7 bits, high bit set.
/// The same in a table of any size, so an entry keeps it when it moves.
fn tag(hash: u64) -> u8 {
    0x80 | (hash & 0x7f) as u8
}

/// `0x80` in every byte of `word` that is zero, `0` elsewhere (exact: no false positives).
fn zero_bytes(word: u64) -> u64 {
    !((((word & !HIGH_BITS) + !HIGH_BITS) | word) | !HIGH_BITS)
}

/// `0x80` in every byte of a group that is an empty slot (full ones have the high bit set).
fn empty_bytes(group: u64) -> u64 {
    !group & HIGH_BITS
}

/// The slot within a group of the lowest byte flagged in `bytes`.
fn first_flagged(bytes: u64) -> usize {
    (bytes.trailing_zeros() / 8) as usize
}

/// What a probe bounded by a group found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The key, in this slot.
    Found(usize),
    /// Not here: the probe met an empty slot first.
    Absent,
    /// Not below the bound: the probe reached it without meeting an empty slot.
    Beyond,
}

/// Where an entry goes in a table, known without its record: its home group there, its
/// control byte, and the hash bits below the home's that are still known (hint-coded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    home: usize,
    control: u8,
    known: u8,
}

impl Placement {
    /// Where the key of `hash` goes in a table of `2^groups_log2` groups.
    fn of_hash(hash: u64, groups_log2: u32) -> Self {
        // The KNOWN_BITS_MAX bits right below the home's (a table has < 2^60 groups).
        let below = (hash << groups_log2) >> (64 - KNOWN_BITS_MAX);
        Self {
            home: home_of(hash, groups_log2),
            control: tag(hash),
            known: (1 << KNOWN_BITS_MAX) | below as u8,
        }
    }
}

/// The home group of a key of `hash` in a table of `2^groups_log2` groups: the hash's top
/// bits (none for a table of one group).
fn home_of(hash: u64, groups_log2: u32) -> usize {
    hash.checked_shr(64 - groups_log2).unwrap_or(0) as usize
}

/// An open-addressing table of positions; equality and hashes are the caller's.
#[derive(Default)]
pub(crate) struct PositionTable {
    /// One [`Head`] per group: its slots' control bytes and hint bytes.
    heads: Vec<Head>,
    slots: Vec<Position>,
    /// `log2(groups)` (0 before the first allocation).
    groups_log2: u32,
    len: usize,
    /// How far [`Self::prefault`] has come through the pages of `heads`, then `slots`,
    /// in bytes: every page that starts before it is touched.
    prefaulted_bytes: usize,
}

impl PositionTable {
    /// An empty table of `groups` groups (a power of two ≥ 2), allocated but not touched.
    pub(crate) fn with_groups(groups: usize) -> Self {
        assert!(groups >= GROUPS_MIN && groups.is_power_of_two());
        Self {
            // Zeroed memory: `vec!` of zeros asks the allocator for zeroed pages.
            heads: vec![[0; 2]; groups],
            slots: vec![0; groups * GROUP_SLOTS],
            groups_log2: groups.trailing_zeros(),
            len: 0,
            prefaulted_bytes: 0,
        }
    }

    /// The number of groups a table needs to hold `entries` without growing.
    pub(crate) fn groups_for(entries: usize) -> usize {
        entries
            .div_ceil(GROUP_LOAD_MAX)
            .max(GROUPS_MIN)
            .next_power_of_two()
    }

    /// Groups in the table (0 before the first allocation).
    pub(crate) fn groups(&self) -> usize {
        self.heads.len()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries it holds before it is full: 3/4 of its slots.
    pub(crate) fn capacity(&self) -> usize {
        Self::capacity_of(self.groups())
    }

    /// Entries a table of `groups` groups holds before it is full.
    pub(crate) fn capacity_of(groups: usize) -> usize {
        groups * GROUP_LOAD_MAX
    }

    /// Whether another entry would pass the load limit.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// The home group of a key of `hash`: the top bits of the hash.
    pub(crate) fn home(&self, hash: u64) -> usize {
        home_of(hash, self.groups_log2)
    }

    fn control(&self, group: usize) -> u64 {
        self.heads[group][CONTROL_WORD]
    }

    /// Whether group `group` has an empty slot.
    pub(crate) fn group_has_empty(&self, group: usize) -> bool {
        empty_bytes(self.control(group)) != 0
    }

    /// Looks for the entry of `hash` for which `is_key` holds from its home group up to
    /// (not including) group `end`, without wrapping around: the home group must be below
    /// `end`.
    pub(crate) fn find_below(
        &self,
        hash: u64,
        mut is_key: impl FnMut(Position) -> bool,
        end: usize,
    ) -> Probe {
        let pattern = LOW_BITS * u64::from(tag(hash));
        for group in self.home(hash)..end.min(self.groups()) {
            let word = self.control(group);
            let mut matches = zero_bytes(word ^ pattern);
            while matches != 0 {
                let slot = group * GROUP_SLOTS + first_flagged(matches);
                if is_key(self.get(slot)) {
                    return Probe::Found(slot);
                }
                matches &= matches - 1;
            }
            if empty_bytes(word) != 0 {
                return Probe::Absent;
            }
        }
        Probe::Beyond
    }

    /// Puts `position` in the first empty slot from the home group of `hash` up to (not
    /// including) group `end`, without wrapping around; returns whether there was one. The
    /// caller knows the key is not held. This may fill the table past its load limit: the
    /// growing index uses it on an old table whose probes all stop at `end`.
    pub(crate) fn insert_below(&mut self, hash: u64, position: Position, end: usize) -> bool {
        let placement = Placement::of_hash(hash, self.groups_log2);
        for group in placement.home..end.min(self.groups()) {
            let empty = empty_bytes(self.control(group));
            if empty != 0 {
                self.fill(group, first_flagged(empty), placement, position);
                return true;
            }
        }
        false
    }

    /// The slot holding the entry of `hash` for which `is_key` holds, if any.
    #[inline]
    pub(crate) fn find(
        &self,
        hash: u64,
        mut is_key: impl FnMut(Position) -> bool,
    ) -> Option<usize> {
        let groups = self.groups();
        if groups == 0 {
            return None;
        }
        // Masking with `groups - 1` (not only shifting) lets the compiler drop the bounds
        // check of every group read.
        let last_group = groups - 1;
        let pattern = LOW_BITS * u64::from(tag(hash));
        let mut group = self.home(hash) & last_group;
        // At most every group once: an old table of a growing index may be full to the last
        // slot (`insert_below`), and then no group stops the probe.
        for _ in 0..groups {
            let word = self.control(group);
            let mut matches = zero_bytes(word ^ pattern);
            while matches != 0 {
                let slot = group * GROUP_SLOTS + first_flagged(matches);
                if is_key(self.get(slot)) {
                    return Some(slot);
                }
                matches &= matches - 1;
            }
            if empty_bytes(word) != 0 {
                return None;
            }
            group = (group + 1) & last_group;
        }
        None
    }

    /// The position held for the key of `hash` that `is_key` accepts; if none, puts
    /// `position` in the first empty slot of the probe (the same one [`Self::insert_new`]
    /// would take), in one pass. The caller knows the table is not full.
    #[inline]
    pub(crate) fn find_or_insert(
        &mut self,
        hash: u64,
        mut is_key: impl FnMut(Position) -> bool,
        position: Position,
    ) -> Option<Position> {
        assert!(!self.is_full(), "insert into a full position table");
        let last_group = self.groups() - 1;
        let placement = Placement::of_hash(hash, self.groups_log2);
        let pattern = LOW_BITS * u64::from(placement.control);
        let mut group = placement.home & last_group;
        loop {
            let word = self.control(group);
            let mut matches = zero_bytes(word ^ pattern);
            while matches != 0 {
                let slot = group * GROUP_SLOTS + first_flagged(matches);
                if is_key(self.get(slot)) {
                    return Some(self.get(slot));
                }
                matches &= matches - 1;
            }
            let empty = empty_bytes(word);
            if empty != 0 {
                self.fill(group, first_flagged(empty), placement, position);
                return None;
            }
            // Infallible end: the table is not full, so some group has an empty slot.
            group = (group + 1) & last_group;
        }
    }

    /// Puts `position` in the first empty slot of `hash`'s probe sequence. The caller knows
    /// the key is not held and the table is not full.
    #[inline]
    pub(crate) fn insert_new(&mut self, hash: u64, position: Position) {
        assert!(!self.is_full(), "insert into a full position table");
        self.insert_moved(hash, position);
    }

    /// As [`Self::insert_new`], for an entry moved from a smaller table: it may pass the load
    /// limit (by at most what the growing index lets reach it at once), never the last slot.
    #[inline]
    pub(crate) fn insert_moved(&mut self, hash: u64, position: Position) {
        self.insert_placed(Placement::of_hash(hash, self.groups_log2), position);
    }

    /// As [`Self::insert_moved`], for an entry whose place a smaller table's hint gave
    /// ([`Self::placement_in`]), without its hash.
    #[inline]
    pub(crate) fn insert_placed(&mut self, placement: Placement, position: Position) {
        assert!(
            self.len < self.groups() * GROUP_SLOTS,
            "no empty slot left in a position table"
        );
        let last_group = self.groups() - 1;
        let mut group = placement.home;
        loop {
            let empty = empty_bytes(self.control(group));
            if empty != 0 {
                self.fill(group, first_flagged(empty), placement, position);
                return;
            }
            group = (group + 1) & last_group;
        }
    }

    /// Writes an entry into the empty slot `slot` of group `group`: its control byte, its
    /// hint (displacement from `placement.home`, the known hash bits) and its position.
    fn fill(&mut self, group: usize, slot: usize, placement: Placement, position: Position) {
        let displacement = group.wrapping_sub(placement.home) & (self.groups() - 1);
        let hint =
            (displacement.min(DISPLACEMENT_UNKNOWN) as u8) << DISPLACEMENT_SHIFT | placement.known;
        let head = &mut self.heads[group];
        head[CONTROL_WORD] |= u64::from(placement.control) << (8 * slot);
        head[HINT_WORD] |= u64::from(hint) << (8 * slot);
        self.slots[group * GROUP_SLOTS + slot] = position;
        self.len += 1;
    }

    /// Where the entry in the full slot `slot` goes in a table `2^scale_log2` times as large,
    /// if its hint says so without its record: its home here is its group less its
    /// displacement, and its home there adds the next `scale_log2` bits of its hash.
    /// `None` if the displacement is not known or too few bits are.
    pub(crate) fn placement_in(&self, slot: usize, scale_log2: u32) -> Option<Placement> {
        let group = slot / GROUP_SLOTS;
        let byte = 8 * (slot % GROUP_SLOTS);
        let head = &self.heads[group];
        let hint = (head[HINT_WORD] >> byte) as u8;
        let displacement = usize::from(hint >> DISPLACEMENT_SHIFT);
        let known = hint & ((1 << DISPLACEMENT_SHIFT) - 1);
        // The marker bit above the known bits: none set is a slot of a zeroed hint.
        let known_count = u32::from(known).checked_ilog2()?;
        if displacement == DISPLACEMENT_UNKNOWN || known_count < scale_log2 {
            return None;
        }
        let home = group.wrapping_sub(displacement) & (self.groups() - 1);
        let left = known_count - scale_log2;
        let bits = usize::from(known) & ((1 << known_count) - 1);
        Some(Placement {
            home: (home << scale_log2) | (bits >> left),
            control: (head[CONTROL_WORD] >> byte) as u8,
            known: ((1 << left) | (bits & ((1 << left) - 1))) as u8,
        })
    }

    /// The position in slot `slot`.
    pub(crate) fn get(&self, slot: usize) -> Position {
        self.slots[slot]
    }

    /// Replaces the position in the full slot `slot`.
    pub(crate) fn set(&mut self, slot: usize, position: Position) {
        debug_assert!(self.control(slot / GROUP_SLOTS) >> (8 * (slot % GROUP_SLOTS)) & 0x80 != 0);
        self.slots[slot] = position;
    }

    /// Calls `visit` with the full slots in groups `groups`, in slot order.
    pub(crate) fn for_each_slot_in(
        &self,
        groups: std::ops::Range<usize>,
        mut visit: impl FnMut(usize),
    ) {
        for group in groups {
            let mut full = !empty_bytes(self.control(group)) & HIGH_BITS;
            while full != 0 {
                visit(group * GROUP_SLOTS + first_flagged(full));
                full &= full - 1;
            }
        }
    }

    /// Calls `visit` with the positions held in groups `groups`, in slot order.
    pub(crate) fn for_each_in(
        &self,
        groups: std::ops::Range<usize>,
        mut visit: impl FnMut(Position),
    ) {
        self.for_each_slot_in(groups, |slot| visit(self.get(slot)));
    }

    /// Goes `bytes` further through the table's pages (its heads', then its slots'), touching each page it enters with one write that keeps its contents, so that the page faults of a fresh table are paid a few
    /// at a time rather than all at once by the first inserts, which land everywhere. Returns
    /// whether every page is touched now.
    pub(crate) fn prefault(&mut self, bytes: usize) -> bool {
        const HEADS_PER_PAGE: usize = PAGE_BYTES / size_of::<Head>();
        const SLOTS_PER_PAGE: usize = PAGE_BYTES / size_of::<Position>();
        let head_pages = self.heads.len().div_ceil(HEADS_PER_PAGE);
        let total = Self::pages_of(self.groups()) * PAGE_BYTES;
        let end = self.prefaulted_bytes.saturating_add(bytes).min(total);
        // An empty table is all zeros: write zeros without reading. A read first would map
        // the kernel's shared zero page, and the write after it would then split a huge page
        // into 4 KiB ones (measured: no huge page at all, and 4 KiB faults at ~0.5 GB/s in
        // this VM). A table that holds entries (switched in early) keeps them: read, write.
        let empty = self.len == 0;
        for page in self.prefaulted_bytes.div_ceil(PAGE_BYTES)..end.div_ceil(PAGE_BYTES) {
            // black_box: a write the compiler cannot prove unchanged, so it is not dropped.
            if page < head_pages {
                let word = &mut self.heads[page * HEADS_PER_PAGE][CONTROL_WORD];
                *word = std::hint::black_box(if empty { 0 } else { *word });
            } else {
                let slot = &mut self.slots[(page - head_pages) * SLOTS_PER_PAGE];
                *slot = std::hint::black_box(if empty { 0 } else { *slot });
            }
        }
        self.prefaulted_bytes = end;
        end == total
    }

    /// Bytes [`Self::prefault`] has yet to go through (0 once every page is touched).
    pub(crate) fn bytes_to_prefault(&self) -> usize {
        Self::pages_of(self.groups()) * PAGE_BYTES - self.prefaulted_bytes
    }

    /// Pages a table of `groups` groups spans: its heads', then its slots'.
    pub(crate) fn pages_of(groups: usize) -> usize {
        (groups * size_of::<Head>()).div_ceil(PAGE_BYTES)
            + (groups * GROUP_SLOTS * size_of::<Position>()).div_ceil(PAGE_BYTES)
    }

    /// Bytes of heap the table holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.heads.capacity() * size_of::<Head>() + self.slots.capacity() * size_of::<Position>()
    }

    /// Checks every full slot's control byte and hint against the hash of its key
    /// (`hash_of` its position): for tests of the invariant the moves rely on.
    #[cfg(test)]
    pub(crate) fn assert_hints(&self, hash_of: impl Fn(Position) -> u64) {
        for group in 0..self.groups() {
            self.for_each_slot_in(group..group + 1, |slot| {
                let hash = hash_of(self.get(slot));
                let expected = Placement::of_hash(hash, self.groups_log2);
                let byte = 8 * (slot % GROUP_SLOTS);
                assert_eq!((self.control(group) >> byte) as u8, expected.control);
                let hint = (self.heads[group][HINT_WORD] >> byte) as u8;
                let displacement = group.wrapping_sub(expected.home) & (self.groups() - 1);
                assert_eq!(
                    usize::from(hint >> DISPLACEMENT_SHIFT),
                    displacement.min(DISPLACEMENT_UNKNOWN),
                    "slot {slot}"
                );
                let known = hint & ((1 << DISPLACEMENT_SHIFT) - 1);
                let count = u32::from(known).checked_ilog2().expect("marked");
                let full = u32::from(expected.known) & ((1 << KNOWN_BITS_MAX) - 1);
                let bits = u32::from(known) & ((1 << count) - 1);
                assert_eq!(bits, full >> (KNOWN_BITS_MAX - count), "slot {slot}");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tricks_flag_exactly_the_bytes_asked_for() {
        // Goal: the SWAR helpers flag zero bytes and empty slots exactly, including bytes
        // next to a match (where the classic "has zero byte" trick gives false positives).
        // Method: every byte value in every position of a word, against a byte-wise answer.
        for value in 0..=255u8 {
            for place in 0..8 {
                let word = (0x0100_8001_ff7f_8180u64 & !(0xff << (8 * place)))
                    | (u64::from(value) << (8 * place));
                let bytes = word.to_le_bytes();
                let zeros: u64 = (0..8)
                    .filter(|&i| bytes[i] == 0)
                    .map(|i| 0x80u64 << (8 * i))
                    .sum();
                assert_eq!(zero_bytes(word), zeros, "{word:#018x}");
                let empties: u64 = (0..8)
                    .filter(|&i| bytes[i] < 0x80)
                    .map(|i| 0x80u64 << (8 * i))
                    .sum();
                assert_eq!(empty_bytes(word), empties, "{word:#018x}");
            }
        }
    }

    #[test]
    fn a_table_filled_to_its_limit_finds_every_entry_and_nothing_else() {
        // Goal: probing finds every entry, including ones pushed past their home group and
        // around the table's end, and stops for absent keys. Method: a tiny table whose keys
        // all share a few homes (crowded hashes), filled to its limit, every key looked up.
        let mut table = PositionTable::with_groups(4);
        let hash = |key: u32| (u64::from(key % 3) << 62) | (u64::from(key) * 0x9e37);
        let keys: Vec<u32> = (0..table.capacity() as u32).collect();
        for &key in &keys {
            assert!(table.find(hash(key), |p| p == key).is_none());
            table.insert_new(hash(key), key);
        }
        assert!(table.is_full());
        for &key in &keys {
            let slot = table.find(hash(key), |p| p == key).expect("held");
            assert_eq!(table.get(slot), key);
        }
        assert!(table.find(hash(1000), |p| p == 1000).is_none());
        let mut seen = Vec::new();
        table.for_each_in(0..table.groups(), |p| seen.push(p));
        seen.sort_unstable();
        assert_eq!(seen, keys);
    }

    #[test]
    fn a_hint_places_an_entry_in_a_larger_table_where_its_hash_would() {
        // Goal: the invariant growth relies on to move an entry without reading its record:
        // a slot's hint and control byte give the home (and control byte and hint) its hash
        // gives in a table 2, 4, 8 or 16 times larger, and give nothing once the hint's bits
        // run out or the displacement is too long to note. Method: a table with crowded homes
        // (long runs, some wrapping around the end) filled to its limit; every slot's
        // placement against the hash's, then moved on twice by hints alone, checking each
        // table's hints against the hashes.
        let hash = |key: u32| {
            let mixed = u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if key % 4 == 0 {
                mixed | (0xff << 56)
            } else {
                mixed
            }
        };
        let mut table = PositionTable::with_groups(64);
        for key in 0..table.capacity() as u32 {
            table.insert_new(hash(key), key);
        }
        table.assert_hints(hash);
        let (mut placed, mut refused) = (0, 0);
        for scale_log2 in 1..=5 {
            let groups_log2 = table.groups_log2 + scale_log2;
            table.for_each_slot_in(0..table.groups(), |slot| {
                let key = table.get(slot);
                let home = table.home(hash(key));
                let displacement = (slot / GROUP_SLOTS).wrapping_sub(home) & (table.groups() - 1);
                match table.placement_in(slot, scale_log2) {
                    Some(placement) => {
                        assert!(
                            scale_log2 <= KNOWN_BITS_MAX && displacement < DISPLACEMENT_UNKNOWN
                        );
                        let expected = Placement::of_hash(hash(key), groups_log2);
                        assert_eq!(placement.home, expected.home, "key {key}");
                        assert_eq!(placement.control, expected.control, "key {key}");
                        placed += 1;
                    }
                    None => {
                        assert!(
                            scale_log2 > KNOWN_BITS_MAX || displacement >= DISPLACEMENT_UNKNOWN
                        );
                        refused += 1;
                    }
                }
            });
        }
        assert!(
            placed > 0 && refused > table.len(),
            "{placed} placed, {refused} refused"
        );
        // Two moves by hints alone (2 + 2 of the 4 bits), then no bits are left.
        let mut moved = PositionTable::with_groups(256);
        let mut rehashed = Vec::new();
        table.for_each_slot_in(0..table.groups(), |slot| {
            match table.placement_in(slot, 2) {
                Some(placement) => moved.insert_placed(placement, table.get(slot)),
                None => rehashed.push(table.get(slot)),
            }
        });
        rehashed
            .iter()
            .for_each(|&key| moved.insert_moved(hash(key), key));
        moved.assert_hints(hash);
        let mut last = PositionTable::with_groups(1024);
        moved.for_each_slot_in(0..moved.groups(), |slot| {
            let key = moved.get(slot);
            match moved.placement_in(slot, 2) {
                Some(placement) => last.insert_placed(placement, key),
                None => last.insert_moved(hash(key), key),
            }
            assert!(moved.placement_in(slot, 3).is_none() || rehashed.contains(&key));
        });
        last.assert_hints(hash);
        for key in 0..table.len() as u32 {
            assert_eq!(
                last.find(hash(key), |p| p == key).map(|s| last.get(s)),
                Some(key)
            );
        }
    }

    #[test]
    fn prefaulting_keeps_what_the_table_holds_and_counts_down_to_zero() {
        // Goal: touching pages never changes an entry, and ends. Method: a table of several
        // pages with entries in it, prefaulted a page at a time.
        let mut table = PositionTable::with_groups(4096);
        for key in 0..1000u32 {
            table.insert_new(u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15), key);
        }
        let pages = table.bytes_to_prefault() / PAGE_BYTES;
        assert_eq!(pages, 16 + 32);
        for step in 1..=pages {
            assert_eq!(table.prefault(PAGE_BYTES), step == pages);
            assert_eq!(table.bytes_to_prefault(), (pages - step) * PAGE_BYTES);
        }
        for key in 0..1000u32 {
            let hash = u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(table.find(hash, |p| p == key).is_some());
        }
    }
}
