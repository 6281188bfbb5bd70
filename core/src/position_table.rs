//! One open-addressing hash table of record positions, the building block of the dedupe
//! index ([`crate::position_index`]): 4 bytes a slot plus one control byte, like hashbrown's
//! swiss table, but made to be grown a little at a time.
//!
//! Control bytes are 0 for an empty slot and `0x80 | 7 hash bits` for a full one; they sit
//! apart from the slots, eight to a `u64` *group*, and a lookup compares a whole group in a few
//! word operations (SWAR; no `unsafe`, no SIMD intrinsics). A key's *home* group is the top
//! bits of its hash, and probing is linear, group after group. Three consequences the growing
//! index relies on:
//! - **Empty is zero.** A growing index's next table is allocated with nothing written
//!   ([`PositionTable::unzeroed`]) and written with zeros a bounded number of bytes at a
//!   time ([`PositionTable::prefault`]), which also pays its page faults a few at a time;
//!   hashbrown writes every control byte up front (measured: 19 ms for 2²⁶ slots, 42 ms for
//!   2²⁷, with huge pages; BENCHMARKS.md). Not a zeroed allocation (`calloc`): glibc takes
//!   fresh pages for it without writing them only while the block is above its mmap
//!   threshold, and that threshold rises (up to 32 MiB) each time a mapped block is freed, as
//!   a grown index's old tables are; below it, `calloc` clears the whole block at once
//!   (profiled in a growing node: a table's `memset` and its page faults inside one engine
//!   wake-up, BENCHMARKS.md, issue 25).
//! - **Order is kept.** Homes are the top hash bits, so a table lists its entries roughly in
//!   hash order, and the entries of one group of a table go to one or two neighbouring groups
//!   of a table twice its size: moving a table into a larger one reads and writes both
//!   sequentially, and only the records (to rehash their IDs) are read at random.
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

/// How the index reads the key a position points at, and hashes it, to move an entry to a
/// larger table: in two calls, so that a step reads all its records back to back (each a
/// cache miss, which the CPU then overlaps) before it hashes any.
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

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
const _: () = assert!(GROUP_SLOTS == 8 && GROUPS_MIN.is_power_of_two());

/// The control byte of a full slot holding a key of `hash`: its low 7 bits, high bit set.
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

/// An open-addressing table of positions; equality and hashes are the caller's.
#[derive(Default)]
pub(crate) struct PositionTable {
    /// One `u64` per group: its slots' control bytes, slot 0 in the low byte.
    control: Vec<u64>,
    slots: Vec<Position>,
    /// Groups of the table; `control` holds them all once the table is zeroed.
    groups: usize,
    /// `64 − log2(groups)`: a hash shifted right by it is the key's home group.
    home_shift: u32,
    len: usize,
    /// How far [`Self::prefault`] has come through the pages of `control`, then `slots`,
    /// in bytes: every page that starts before it is touched.
    prefaulted_bytes: usize,
}

impl PositionTable {
    /// An empty table of `groups` groups (a power of two ≥ 2), zeroed (`calloc`: fresh
    /// pages are not written; see the module's documentation for when they are) and ready.
    pub(crate) fn with_groups(groups: usize) -> Self {
        Self {
            control: vec![0; groups],
            slots: vec![0; groups * GROUP_SLOTS],
            ..Self::unzeroed(groups)
        }
    }

    /// A table of `groups` groups (a power of two ≥ 2) allocated with nothing written, to be
    /// zeroed by [`Self::prefault`] before it takes an entry (using it before would panic on a
    /// bounds check, never read stale memory).
    pub(crate) fn unzeroed(groups: usize) -> Self {
        assert!(groups >= GROUPS_MIN && groups.is_power_of_two());
        Self {
            control: Vec::with_capacity(groups),
            slots: Vec::with_capacity(groups * GROUP_SLOTS),
            groups,
            home_shift: 64 - groups.trailing_zeros(),
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
        self.groups
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
        (hash >> self.home_shift) as usize
    }

    /// Whether group `group` has an empty slot.
    pub(crate) fn group_has_empty(&self, group: usize) -> bool {
        empty_bytes(self.control[group]) != 0
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
            let word = self.control[group];
            let mut matches = zero_bytes(word ^ pattern);
            while matches != 0 {
                let slot = group * GROUP_SLOTS + first_flagged(matches);
                if is_key(self.slots[slot]) {
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
        for group in self.home(hash)..end.min(self.groups()) {
            let empty = empty_bytes(self.control[group]);
            if empty != 0 {
                let slot = first_flagged(empty);
                self.control[group] |= u64::from(tag(hash)) << (8 * slot);
                self.slots[group * GROUP_SLOTS + slot] = position;
                self.len += 1;
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
        let groups = self.groups;
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
            let word = self.control[group];
            let mut matches = zero_bytes(word ^ pattern);
            while matches != 0 {
                let slot = group * GROUP_SLOTS + first_flagged(matches);
                if is_key(self.slots[slot]) {
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
        let tag = tag(hash);
        let pattern = LOW_BITS * u64::from(tag);
        let mut group = self.home(hash) & last_group;
        loop {
            let word = self.control[group];
            let mut matches = zero_bytes(word ^ pattern);
            while matches != 0 {
                let slot = group * GROUP_SLOTS + first_flagged(matches);
                if is_key(self.slots[slot]) {
                    return Some(self.slots[slot]);
                }
                matches &= matches - 1;
            }
            let empty = empty_bytes(word);
            if empty != 0 {
                let slot = first_flagged(empty);
                self.control[group] |= u64::from(tag) << (8 * slot);
                self.slots[group * GROUP_SLOTS + slot] = position;
                self.len += 1;
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
        assert!(
            self.len < self.groups * GROUP_SLOTS,
            "no empty slot left in a position table"
        );
        let last_group = self.groups() - 1;
        let mut group = self.home(hash);
        loop {
            let empty = empty_bytes(self.control[group]);
            if empty != 0 {
                let slot = first_flagged(empty);
                self.control[group] |= u64::from(tag(hash)) << (8 * slot);
                self.slots[group * GROUP_SLOTS + slot] = position;
                self.len += 1;
                return;
            }
            group = (group + 1) & last_group;
        }
    }

    /// The position in slot `slot`.
    pub(crate) fn get(&self, slot: usize) -> Position {
        self.slots[slot]
    }

    /// Replaces the position in the full slot `slot`.
    pub(crate) fn set(&mut self, slot: usize, position: Position) {
        debug_assert!(self.control[slot / GROUP_SLOTS] >> (8 * (slot % GROUP_SLOTS)) & 0x80 != 0);
        self.slots[slot] = position;
    }

    /// Calls `visit` with the positions held in groups `groups`, in slot order.
    pub(crate) fn for_each_in(
        &self,
        groups: std::ops::Range<usize>,
        mut visit: impl FnMut(Position),
    ) {
        for group in groups {
            let mut full = !empty_bytes(self.control[group]) & HIGH_BITS;
            while full != 0 {
                visit(self.slots[group * GROUP_SLOTS + first_flagged(full)]);
                full &= full - 1;
            }
        }
    }

    /// Goes `bytes` further through the table's pages (its control words', then its
    /// slots'), so that the page faults of a fresh table are paid a few at a time rather than
    /// all at once by the first inserts, which land everywhere: an [unzeroed](Self::unzeroed)
    /// table is written with zeros that far; a zeroed one, which must be empty, has each page
    /// it enters touched with one write of a zero. Returns whether every page is touched (and
    /// the table zeroed) now.
    pub(crate) fn prefault(&mut self, bytes: usize) -> bool {
        const CONTROL_PER_PAGE: usize = PAGE_BYTES / size_of::<u64>();
        const SLOTS_PER_PAGE: usize = PAGE_BYTES / size_of::<Position>();
        let control_pages = self.groups.div_ceil(CONTROL_PER_PAGE);
        let total = Self::pages_of(self.groups()) * PAGE_BYTES;
        let end = self.prefaulted_bytes.saturating_add(bytes).min(total);
        if self.control.len() < self.groups || self.slots.len() < self.groups * GROUP_SLOTS {
            // Zeros written, never read first: a read would map the kernel's shared zero
            // page, and the write after it would then split a huge page into 4 KiB ones
            // (measured: no huge page at all, and 4 KiB faults at ~0.5 GB/s in this VM).
            let control_end = end.min(control_pages * PAGE_BYTES);
            let words = control_end.div_ceil(size_of::<u64>()).min(self.groups);
            self.control.resize(words.max(self.control.len()), 0);
            let slot_bytes = end.saturating_sub(control_pages * PAGE_BYTES);
            let slots = slot_bytes
                .div_ceil(size_of::<Position>())
                .min(self.groups * GROUP_SLOTS);
            self.slots.resize(slots.max(self.slots.len()), 0);
        } else {
            // A zeroed table, prefaulted only while it is empty (a reservation before votes
            // arrive): write each page's first word with a zero, never reading it first (as
            // above).
            assert_eq!(self.len, 0, "only an empty zeroed table is prefaulted");
            for page in self.prefaulted_bytes.div_ceil(PAGE_BYTES)..end.div_ceil(PAGE_BYTES) {
                // black_box: a write the compiler cannot prove unchanged, so it is not dropped.
                if page < control_pages {
                    self.control[page * CONTROL_PER_PAGE] = std::hint::black_box(0);
                } else {
                    self.slots[(page - control_pages) * SLOTS_PER_PAGE] = std::hint::black_box(0);
                }
            }
        }
        self.prefaulted_bytes = end;
        end == total
    }

    /// Bytes [`Self::prefault`] has yet to go through (0 once every page is touched).
    pub(crate) fn bytes_to_prefault(&self) -> usize {
        Self::pages_of(self.groups()) * PAGE_BYTES - self.prefaulted_bytes
    }

    /// Pages a table of `groups` groups spans: its control words', then its slots'.
    pub(crate) fn pages_of(groups: usize) -> usize {
        (groups * size_of::<u64>()).div_ceil(PAGE_BYTES)
            + (groups * GROUP_SLOTS * size_of::<Position>()).div_ceil(PAGE_BYTES)
    }

    /// The address of the control words' allocation, to tell one allocation from another.
    #[cfg(test)]
    pub(crate) fn control_address(&self) -> usize {
        self.control.as_ptr() as usize
    }

    /// Bytes of heap the table holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.control.capacity() * size_of::<u64>() + self.slots.capacity() * size_of::<Position>()
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
    fn an_unzeroed_table_is_written_a_step_at_a_time_and_then_takes_entries() {
        // Goal: a growing index's next table costs no write when allocated (not `calloc`,
        // which glibc may clear at once) and is zeroed only as far as each step goes.
        // Method: an unzeroed table's written bytes after each page-sized step, then a full
        // table of entries found.
        let mut table = PositionTable::unzeroed(4096);
        assert_eq!(
            table.control.len() + table.slots.len(),
            0,
            "nothing written"
        );
        let pages = table.bytes_to_prefault() / PAGE_BYTES;
        assert_eq!(pages, 8 + 32);
        for step in 1..=pages {
            assert_eq!(table.prefault(PAGE_BYTES), step == pages);
            let written =
                table.control.len() * size_of::<u64>() + table.slots.len() * size_of::<Position>();
            assert_eq!(
                written,
                step * PAGE_BYTES,
                "zeros written after step {step}"
            );
        }
        let hash = |key: u32| u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for key in 0..table.capacity() as u32 {
            table.insert_new(hash(key), key);
        }
        assert!((0..table.capacity() as u32).all(|k| table.find(hash(k), |p| p == k).is_some()));
    }

    #[test]
    fn prefaulting_a_zeroed_table_counts_down_to_zero_and_leaves_it_empty_and_usable() {
        // Goal: touching the pages of a zeroed table (a reservation) ends, writes nothing a
        // lookup could see, and the table then takes entries. Method: a table of several
        // pages prefaulted a page at a time, then filled with keys and searched.
        let mut table = PositionTable::with_groups(4096);
        let pages = table.bytes_to_prefault() / PAGE_BYTES;
        assert_eq!(pages, 8 + 32);
        for step in 1..=pages {
            assert_eq!(table.prefault(PAGE_BYTES), step == pages);
            assert_eq!(table.bytes_to_prefault(), (pages - step) * PAGE_BYTES);
        }
        let hash = |key: u32| u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        assert!((0..1000u32).all(|k| table.find(hash(k), |p| p == k).is_none()));
        for key in 0..1000u32 {
            table.insert_new(hash(key), key);
        }
        assert!((0..1000u32).all(|k| table.find(hash(k), |p| p == k).is_some()));
    }
}
