//! Per-PMD exact-match cache (OVS EMC): full key → small `Copy` value (an
//! index into a flat action-list arena), in front of the classifier.
//!
//! Fixed size, allocated once at construction; 2-way: a key may live in one
//! of two slots picked from its hash (`hash & mask` and
//! `(hash >> log2(n)) & mask`).
//!
//! # Invariants
//!
//! - A hit requires the full key to compare equal: hashes only pick slots
//!   and reject early, so a collision can never return another key's value.
//! - Every entry records the table generation it was computed under; a
//!   lookup under another generation is a miss. Publishing a new table
//!   snapshot (a new generation) thus invalidates the whole cache with no
//!   sweep.
//! - A key occupies at most one of its two slots.
//! - `lookup*` and `insert` never allocate, lock or panic.

use super::dpcls::{finish, mix, mix2};

/// Default number of entries (as OVS `EM_FLOW_HASH_ENTRIES`).
pub const DEFAULT_ENTRIES: usize = 8192;

/// Largest batch [`Emc::lookup_batch`] takes (bits of a `u64`).
pub const MAX_BATCH: usize = 64;

/// A 32-bit hash of a key's words, for callers that have no hash already
/// ([`FlowKey::hash`](super::FlowKey::hash) is the one to use for bare flow
/// keys).
#[inline]
#[allow(clippy::cast_possible_truncation)] // folding 64 bits to 32 is the point
pub fn hash_words<const W: usize>(words: &[u64; W]) -> u32 {
    let mut acc = 0u64;
    let mut pairs = words.chunks_exact(2);
    for (j, p) in pairs.by_ref().enumerate() {
        acc = acc.wrapping_add(mix2(j, p[0], p[1]));
    }
    if let [last] = pairs.remainder() {
        acc = acc.wrapping_add(mix(W, *last));
    }
    let h = finish(acc);
    (h ^ (h >> 32)) as u32
}

#[derive(Debug, Clone, Copy)]
struct Entry<const W: usize, T> {
    key: [u64; W],
    hash: u32,
    /// `Emc::clock` at insertion; the smaller age is kept on replacement.
    stamp: u32,
    generation: u64,
    value: T,
    valid: bool,
}

/// Exact-match cache of `[u64; W]` keys to `T`, one per PMD thread.
pub struct Emc<const W: usize, T> {
    entries: Box<[Entry<W, T>]>,
    mask: u32,
    shift: u32,
    clock: u32,
    n_hit: u64,
    n_miss: u64,
    n_evict: u64,
}

impl<const W: usize, T> core::fmt::Debug for Emc<W, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Emc")
            .field("n_entries", &self.entries.len())
            .field("n_hit", &self.n_hit)
            .field("n_miss", &self.n_miss)
            .field("n_evict", &self.n_evict)
            .finish_non_exhaustive()
    }
}

impl<const W: usize, T: Copy + Default> Default for Emc<W, T> {
    fn default() -> Self {
        Self::new(DEFAULT_ENTRIES)
    }
}

impl<const W: usize, T: Copy + Default> Emc<W, T> {
    /// A cache of `n_entries` slots, all empty.
    ///
    /// # Panics
    /// If `n_entries` is not a power of two in `2..=65536` (both slot
    /// indices come from one 32-bit hash).
    pub fn new(n_entries: usize) -> Self {
        assert!(
            n_entries.is_power_of_two() && (2..=1 << 16).contains(&n_entries),
            "EMC size must be a power of two in 2..=65536"
        );
        let empty = Entry { key: [0; W], hash: 0, stamp: 0, generation: 0, value: T::default(), valid: false };
        Emc {
            entries: vec![empty; n_entries].into_boxed_slice(),
            mask: u32::try_from(n_entries - 1).expect("n_entries <= 65536"),
            shift: n_entries.trailing_zeros(),
            clock: 0,
            n_hit: 0,
            n_miss: 0,
            n_evict: 0,
        }
    }
}

impl<const W: usize, T: Copy> Emc<W, T> {
    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Lookups that hit.
    pub fn n_hit(&self) -> u64 {
        self.n_hit
    }

    /// Lookups that missed (including stale-generation entries).
    pub fn n_miss(&self) -> u64 {
        self.n_miss
    }

    /// Inserts that replaced a live entry of the current generation (a
    /// high rate means the cache thrashes).
    pub fn n_evict(&self) -> u64 {
        self.n_evict
    }

    /// The two candidate slots of `hash` (may coincide).
    #[inline(always)]
    fn slots(&self, hash: u32) -> [usize; 2] {
        [(hash & self.mask) as usize, ((hash >> self.shift) & self.mask) as usize]
    }

    #[inline(always)]
    fn find(&self, key: &[u64; W], hash: u32, generation: u64) -> Option<T> {
        for i in self.slots(hash) {
            let e = self.entries.get(i)?;
            if e.valid && e.hash == hash && e.generation == generation && e.key == *key {
                return Some(e.value);
            }
        }
        None
    }

    /// The value cached for `key` under table `generation`. `hash` must be
    /// the same function of the key at every call (e.g. [`hash_words`]).
    #[inline]
    pub fn lookup(&mut self, key: &[u64; W], hash: u32, generation: u64) -> Option<T> {
        let r = self.find(key, hash, generation);
        if r.is_some() {
            self.n_hit += 1;
        } else {
            self.n_miss += 1;
        }
        r
    }

    /// Looks up `keys[i]` (hash `hashes[i]`) for every `i`, writing
    /// `out[i]` on a hit; returns the bitmap of misses.
    ///
    /// # Panics
    /// If `keys.len() > MAX_BATCH` or `hashes`/`out` are shorter than `keys`.
    pub fn lookup_batch(&mut self, keys: &[[u64; W]], hashes: &[u32], generation: u64, out: &mut [T]) -> u64 {
        assert!(keys.len() <= MAX_BATCH, "at most {MAX_BATCH} keys per batch");
        let (hashes, out) = (&hashes[..keys.len()], &mut out[..keys.len()]);
        let mut miss = 0u64;
        for (i, ((key, &hash), out)) in keys.iter().zip(hashes).zip(out).enumerate() {
            match self.find(key, hash, generation) {
                Some(v) => *out = v,
                None => miss |= 1 << i,
            }
        }
        let n_miss = u64::from(miss.count_ones());
        self.n_miss += n_miss;
        self.n_hit += keys.len() as u64 - n_miss;
        miss
    }

    /// Caches `value` for `key` under `generation`. Overwrites the slot that
    /// already holds `key` if any; otherwise takes a candidate that is empty
    /// or of another generation, else evicts the older of the two.
    pub fn insert(&mut self, key: &[u64; W], hash: u32, generation: u64, value: T) {
        let [a, b] = self.slots(hash);
        let (Some(ea), Some(eb)) = (self.entries.get(a), self.entries.get(b)) else {
            return;
        };
        let holds = |e: &Entry<W, T>| e.valid && e.hash == hash && e.key == *key;
        let alive = |e: &Entry<W, T>| e.valid && e.generation == generation;
        let target = if holds(ea) {
            a
        } else if holds(eb) {
            b
        } else if !alive(ea) {
            a
        } else if !alive(eb) {
            b
        } else {
            self.n_evict += 1;
            // Wrapping ages: correct while stamps are < 2^31 inserts apart.
            let (age_a, age_b) = (self.clock.wrapping_sub(ea.stamp), self.clock.wrapping_sub(eb.stamp));
            if age_a >= age_b {
                a
            } else {
                b
            }
        };
        if let Some(e) = self.entries.get_mut(target) {
            *e = Entry { key: *key, hash, stamp: self.clock, generation, value, valid: true };
        }
        self.clock = self.clock.wrapping_add(1);
    }

    /// Empties every slot (counters are kept). Not needed on a table swap:
    /// a new generation already misses everything.
    pub fn clear(&mut self) {
        for e in self.entries.iter_mut() {
            e.valid = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const W: usize = 4;
    type Cache = Emc<W, u32>;

    fn key(n: u64) -> [u64; W] {
        [n, n.wrapping_mul(3), 7, n ^ 0x55]
    }

    #[test]
    fn hits_after_insert() {
        let mut c = Cache::new(64);
        let k = key(1);
        let h = hash_words(&k);
        assert_eq!(c.lookup(&k, h, 1), None);
        c.insert(&k, h, 1, 10);
        assert_eq!(c.lookup(&k, h, 1), Some(10));
        assert_eq!(c.lookup(&k, h, 1), Some(10));
        assert_eq!((c.n_hit(), c.n_miss()), (2, 1));
        // Re-inserting the same key overwrites in place.
        c.insert(&k, h, 1, 11);
        assert_eq!(c.lookup(&k, h, 1), Some(11));
        assert_eq!(c.entries.iter().filter(|e| e.valid).count(), 1);
    }

    #[test]
    fn a_new_generation_misses() {
        let mut c = Cache::new(64);
        let k = key(2);
        let h = hash_words(&k);
        c.insert(&k, h, 1, 10);
        assert_eq!(c.lookup(&k, h, 2), None);
        c.insert(&k, h, 2, 20);
        assert_eq!(c.lookup(&k, h, 2), Some(20));
        assert_eq!(c.lookup(&k, h, 1), None, "the old generation's entry was overwritten");
        c.clear();
        assert_eq!(c.lookup(&k, h, 2), None);
    }

    #[test]
    fn never_returns_another_keys_value() {
        let mut c = Cache::new(64);
        let h = 0x1234_5678;
        c.insert(&key(1), h, 1, 10);
        assert_eq!(c.lookup(&key(2), h, 1), None);
        assert_eq!(c.lookup(&key(1), h ^ 1, 1), None, "different hash, different slots or rejected");
        assert_eq!(c.lookup(&key(1), h, 1), Some(10));
    }

    #[test]
    fn two_ways_then_the_older_is_replaced() {
        let mut c = Cache::new(64);
        // One hash for all three keys: the same two candidate slots, 1 and 2.
        let h2 = 0x0000_0081;
        c.insert(&key(1), h2, 1, 1);
        c.insert(&key(2), h2, 1, 2);
        assert_eq!(c.lookup(&key(1), h2, 1), Some(1));
        assert_eq!(c.lookup(&key(2), h2, 1), Some(2));
        assert_eq!(c.n_evict(), 0);
        c.insert(&key(3), h2, 1, 3);
        assert_eq!(c.n_evict(), 1);
        assert_eq!(c.lookup(&key(1), h2, 1), None, "oldest evicted");
        assert_eq!(c.lookup(&key(2), h2, 1), Some(2));
        assert_eq!(c.lookup(&key(3), h2, 1), Some(3));
    }

    #[test]
    fn a_stale_entry_is_replaced_before_an_older_live_one() {
        let mut c = Cache::new(64);
        let ha = 0x0000_0081; // slots 1 and 2
        let hb = 0x0000_0083; // slots 3 and 2
        c.insert(&key(1), ha, 2, 1); // slot 1: oldest, live in generation 2
        c.insert(&key(8), hb, 1, 8); // slot 3
        c.insert(&key(9), hb, 1, 9); // slot 2: newer, stale in generation 2
        c.insert(&key(3), ha, 2, 3);
        assert_eq!(c.n_evict(), 0);
        assert_eq!(c.lookup(&key(1), ha, 2), Some(1));
        assert_eq!(c.lookup(&key(3), ha, 2), Some(3));
        assert_eq!(c.lookup(&key(9), hb, 1), None);
        assert_eq!(c.lookup(&key(8), hb, 1), Some(8));
    }

    #[test]
    fn coinciding_slots_hold_one_key() {
        let mut c = Cache::new(64);
        let h = 0x0000_0041; // both candidates are slot 1
        c.insert(&key(1), h, 1, 1);
        c.insert(&key(2), h, 1, 2);
        assert_eq!(c.lookup(&key(1), h, 1), None);
        assert_eq!(c.lookup(&key(2), h, 1), Some(2));
    }

    #[test]
    fn batch_reports_misses_and_fills_hits() {
        let mut c = Cache::new(64);
        let keys: Vec<[u64; W]> = (0..4).map(key).collect();
        let hashes: Vec<u32> = keys.iter().map(hash_words).collect();
        c.insert(&keys[1], hashes[1], 1, 11);
        c.insert(&keys[3], hashes[3], 1, 33);
        let mut out = [0u32; 4];
        let miss = c.lookup_batch(&keys, &hashes, 1, &mut out);
        assert_eq!(miss, 0b0101);
        assert_eq!(out, [0, 11, 0, 33]);
        assert_eq!((c.n_hit(), c.n_miss()), (2, 2));
    }

    #[test]
    fn hash_words_separates_single_bit_flips() {
        let base = [0x0123_4567_89ab_cdefu64; 22];
        let mut seen = std::collections::HashSet::new();
        let mut low = [0u32; 64];
        seen.insert(hash_words(&base));
        for i in 0..22 * 64 {
            let mut k = base;
            k[i / 64] ^= 1 << (i % 64);
            let h = hash_words(&k);
            assert!(seen.insert(h), "collision at bit {i}");
            low[(h & 63) as usize] += 1;
        }
        // 1408 hashes over 64 low-bit buckets: 22 expected in each.
        assert!(low.iter().all(|&n| (5..=45).contains(&n)), "{low:?}");
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn size_must_be_a_power_of_two() {
        let _ = Cache::new(100);
    }

    proptest! {
        /// Whatever the cache returns is the latest value inserted for that
        /// key in that generation; with few keys per slot pair, recent
        /// inserts are found.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((0u64..40, 0u64..3, any::<bool>(), any::<u32>()), 1..400)) {
            let mut c = Cache::new(16);
            let mut model: HashMap<([u64; W], u64), u32> = HashMap::new();
            for (k, generation, insert, v) in ops {
                let k = key(k);
                let h = hash_words(&k);
                if insert {
                    c.insert(&k, h, generation, v);
                    model.insert((k, generation), v);
                    prop_assert_eq!(c.lookup(&k, h, generation), Some(v));
                } else if let Some(got) = c.lookup(&k, h, generation) {
                    prop_assert_eq!(Some(&got), model.get(&(k, generation)));
                }
            }
        }
    }
}
