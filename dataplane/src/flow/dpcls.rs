//! Tuple-space-search classifier with priorities (OVS `lib/classifier.c`
//! style, over fixed-width keys of `W` 64-bit words).
//!
//! A [`Rule`] matches a key when `key & mask == value` word by word. Rules
//! with the same mask share a *subtable*: one hash table keyed on the masked
//! key, so a lookup costs one hash probe per distinct mask rather than one
//! compare per rule. Unlike `dpif-netdev`'s megaflow dpcls (whose entries
//! never overlap), rules here overlap and carry priorities, as OVN logical
//! flows do.
//!
//! # Which rule wins
//!
//! Every rule has a *rank*: higher priority first, then insertion order
//! (the rule inserted first wins among equal priorities; re-inserting a rule
//! puts it last). Ranks are unique, so a lookup has exactly one answer: the
//! matching rule of lowest rank. OVN leaves overlapping flows of equal
//! priority undefined; we pick one deterministically so that `petrelctl
//! trace`, the property tests and every PMD agree.
//!
//! # Invariants
//!
//! - Subtables are non-empty and sorted by the best rank they hold
//!   (`Subtable::best`); a lookup stops at the first subtable whose best
//!   rank is worse than the best match found so far (OVS's early exit on
//!   `max_priority`, refined by insertion order so that ties stay exact).
//! - Within a subtable, rules sharing a masked value hang off one entry,
//!   sorted by rank; the entry's first rule is the only one a lookup reads.
//! - Stored values and entry words are pre-masked; words outside a
//!   subtable's mask are never hashed or compared.
//! - A subtable's hash table holds 8-byte buckets (a 32-bit fingerprint and
//!   an entry index); each entry is a few words of a flat arena: the
//!   gathered masked value then its best rule, packed. A miss rarely leaves
//!   the compact buckets; a hit reads one entry and the winning rule's
//!   value. Rule priorities and insertion numbers live in a cold slab that
//!   only the control path reads. Nothing is sized by `W` per rule, so a
//!   wide key costs only the words a mask touches.
//! - `lookup*` never allocate or lock; `insert`/`remove` (control path) may.

use core::num::NonZeroU32;
use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashTable;

/// Largest batch [`Classifier::lookup_batch`] takes (bits of a `u64`).
pub const MAX_BATCH: usize = 64;

/// A masked match over a `[u64; W]` key with a priority.
///
/// A key matches when `key[i] & mask[i] == value[i]` for every word `i`.
/// [`Rule::new`] and [`Classifier::insert`] clear the bits of `value`
/// outside `mask`, so a rule built with stray bits still means what its
/// mask says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule<const W: usize> {
    /// Expected key bits, zero outside `mask`.
    pub value: [u64; W],
    /// Which key bits matter.
    pub mask: [u64; W],
    /// Higher wins; equal priorities go to the rule inserted first.
    pub priority: u32,
}

impl<const W: usize> Rule<W> {
    /// A rule with `value` masked by `mask`.
    pub fn new(value: [u64; W], mask: [u64; W], priority: u32) -> Self {
        let mut value = value;
        for (v, m) in value.iter_mut().zip(&mask) {
            *v &= m;
        }
        Rule { value, mask, priority }
    }

    /// A rule that matches every key.
    pub fn catchall(priority: u32) -> Self {
        Rule { value: [0; W], mask: [0; W], priority }
    }

    /// Whether `key` matches this rule.
    #[inline]
    pub fn matches(&self, key: &[u64; W]) -> bool {
        key.iter().zip(&self.mask).zip(&self.value).all(|((k, m), v)| k & m == *v)
    }
}

/// Handle to a rule in one [`Classifier`] (and its clones). A stale handle
/// (the rule was removed) is refused, not confused with a newer rule in the
/// same slot (until that slot has been reused 2³² times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId {
    slot: u32,
    gen: NonZeroU32,
}

/// Total order on rules; lower is better. Field order matters (derived
/// `Ord`): priority descending, then insertion sequence ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    inv_priority: u32,
    seq: u64,
}

impl Rank {
    /// Worse than any real rule (a real rank with `inv_priority == MAX` has
    /// a smaller `seq`).
    const WORST: Rank = Rank { inv_priority: u32::MAX, seq: u64::MAX };

    fn new(priority: u32, seq: u64) -> Self {
        Rank { inv_priority: u32::MAX - priority, seq }
    }

    fn priority(self) -> u32 {
        u32::MAX - self.inv_priority
    }
}

/// A rule as the hot path sees it: enough to rank it and to name it
/// without touching the cold rule slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RuleRef {
    rank: Rank,
    slot: u32,
    gen: NonZeroU32,
}

impl RuleRef {
    const NONE: RuleRef = RuleRef { rank: Rank::WORST, slot: u32::MAX, gen: NonZeroU32::MAX };

    fn id(self) -> RuleId {
        RuleId { slot: self.slot, gen: self.gen }
    }

    /// Packed form stored after an entry's value words in `Subtable::arena`.
    fn pack(self) -> [u64; HEAD] {
        [self.rank.seq, u64::from(self.rank.inv_priority) << 32 | u64::from(self.slot), u64::from(self.gen.get())]
    }

    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)] // unpacking what `pack` packed
    fn unpack(w: &[u64]) -> Option<Self> {
        let [seq, prio_slot, gen] = *w else { return None };
        Some(RuleRef {
            rank: Rank { inv_priority: (prio_slot >> 32) as u32, seq },
            slot: prio_slot as u32,
            gen: NonZeroU32::new(gen as u32)?,
        })
    }
}

/// Words of a packed [`RuleRef`].
const HEAD: usize = 3;

/// A hash-table slot: 8 bytes, so the probed part of a subtable stays in
/// cache. `fingerprint` (high hash bits, independent of the bucket
/// position) rejects almost every false candidate before the arena is read.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    fingerprint: u32,
    entry: u32,
}

#[allow(clippy::cast_possible_truncation)] // the high half is the point
fn fingerprint(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// The rules sharing one mask. `repr(C)` puts the fields a lookup reads
/// first, in the fewest cache lines.
///
/// An *entry* is one distinct masked value: `stride = n_words + HEAD`
/// words of `arena`, the gathered value then its best rule (packed), so a
/// hit reads one short run of memory. Other rules with the same value are
/// in `rest` (cold).
#[derive(Debug, Clone)]
#[repr(C)]
struct Subtable<const W: usize> {
    /// Best rank of any rule here (`ranks.first()`): the sort key of
    /// `Classifier::subtables` and the early-exit bound.
    best: Rank,
    /// How many key words the mask touches.
    n_words: usize,
    table: HashTable<Bucket>,
    /// Entries, dense (removal moves the last one into the hole).
    arena: Vec<u64>,
    /// Indices of the words the mask touches (first `n_words` meaningful).
    words: [u8; W],
    /// The mask's nonzero words, in the same order.
    mask_words: [u64; W],
    /// The full mask.
    mask: [u64; W],
    /// Stable name for `Slot::subtable` (positions in
    /// `Classifier::subtables` change as subtables are re-sorted).
    id: u64,
    /// For entries with more than one rule: the others, sorted by rank.
    rest: BTreeMap<u32, Vec<RuleRef>>,
    /// Ranks of all rules here, to keep `best` exact across removals
    /// without rescanning the table.
    ranks: BTreeSet<Rank>,
}

/// Two mixing constants per word position (splitmix64 output), so that
/// equal words at different positions contribute differently: terms are
/// summed, so position must be in the constants. 256 positions cover the
/// widest key (`W <= 256`).
const K: [u64; 512] = splitmix_table();

const fn splitmix_table<const N: usize>() -> [u64; N] {
    let mut t = [0u64; N];
    let mut x = 0u64;
    let mut i = 0;
    while i < N {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

/// 64×64→128 multiply folded to 64 bits (wyhash `mum`).
#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // taking the low and high halves is the point
pub(crate) fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Contribution of word `w` at position `j`. Terms are summed, so the
/// multiplies are independent and pipeline.
#[inline(always)]
pub(crate) fn mix(j: usize, w: u64) -> u64 {
    mum(w ^ K[(2 * j) % K.len()], K[(2 * j + 1) % K.len()])
}

/// Contribution of the word pair `(a, b)` at pair position `j`: one
/// multiply for two words (wyhash), for hashing whole keys.
#[inline(always)]
pub(crate) fn mix2(j: usize, a: u64, b: u64) -> u64 {
    mum(a ^ K[(2 * j) % K.len()], b ^ K[(2 * j + 1) % K.len()])
}

/// Final avalanche, with wyhash's secrets.
#[inline(always)]
pub(crate) fn finish(acc: u64) -> u64 {
    mum(acc ^ 0xa076_1d64_78bd_642f, 0xe703_7ed1_a0b4_28db)
}

/// Hash of gathered words; what `Subtable::hash_key` computes for any key
/// that matches them.
fn hash_gathered(words: &[u64]) -> u64 {
    let mut acc = 0u64;
    for (j, &w) in words.iter().enumerate() {
        acc = acc.wrapping_add(mix(j, w));
    }
    finish(acc)
}

fn index(entry: u32) -> usize {
    usize::try_from(entry).expect("u32 fits usize")
}

impl<const W: usize> Subtable<W> {
    /// `words` holds word indices as `u8`.
    const WIDTH_FITS: () = assert!(W <= 256, "keys are at most 256 words");

    fn new(mask: [u64; W], id: u64) -> Self {
        let () = Self::WIDTH_FITS;
        let mut words = [0u8; W];
        let mut mask_words = [0u64; W];
        let mut n_words = 0;
        for (i, &m) in mask.iter().enumerate() {
            if m != 0 {
                words[n_words] = u8::try_from(i).expect("W <= 256 is checked at compile time");
                mask_words[n_words] = m;
                n_words += 1;
            }
        }
        Subtable {
            best: Rank::WORST,
            n_words,
            table: HashTable::new(),
            arena: Vec::new(),
            words,
            mask_words,
            mask,
            id,
            rest: BTreeMap::new(),
            ranks: BTreeSet::new(),
        }
    }

    fn stride(&self) -> usize {
        self.n_words + HEAD
    }

    fn n_entries(&self) -> usize {
        self.arena.len() / self.stride()
    }

    /// Entry `e`'s gathered value and packed best rule.
    #[inline(always)]
    fn entry(&self, e: usize) -> Option<(&[u64], &[u64])> {
        let s = self.stride();
        let words = self.arena.get(e * s..(e + 1) * s)?;
        Some(words.split_at(self.n_words))
    }

    #[inline(always)]
    fn gathered(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let n = self.n_words;
        self.words[..n].iter().map(|&i| usize::from(i)).zip(self.mask_words[..n].iter().copied())
    }

    /// Hash of `key` under this subtable's mask.
    #[inline(always)]
    fn hash_key(&self, key: &[u64; W]) -> u64 {
        let mut acc = 0u64;
        for (j, (i, m)) in self.gathered().enumerate() {
            acc = acc.wrapping_add(mix(j, key[i] & m));
        }
        finish(acc)
    }

    /// The best rule of the entry `key` falls in, if any.
    #[inline(always)]
    fn find(&self, hash: u64, key: &[u64; W]) -> Option<RuleRef> {
        let fp = fingerprint(hash);
        let mut top = None;
        self.table.find(hash, |b| {
            if b.fingerprint != fp {
                return false;
            }
            let Some((value, head)) = self.entry(index(b.entry)) else { return false };
            let hit = self.gathered().zip(value).all(|((i, m), &v)| key[i] & m == v);
            if hit {
                top = RuleRef::unpack(head);
            }
            hit
        })?;
        top
    }

    fn gather(&self, value: &[u64; W]) -> [u64; W] {
        let mut g = [0u64; W];
        for (slot, (i, m)) in g.iter_mut().zip(self.gathered()) {
            *slot = value[i] & m;
        }
        g
    }

    /// Inverse of `gather`.
    fn scatter(&self, gathered: &[u64]) -> [u64; W] {
        let mut v = [0u64; W];
        for ((i, _), &g) in self.gathered().zip(gathered) {
            v[i] = g;
        }
        v
    }

    /// Index of the entry holding gathered value `g` (hash `hash`).
    fn find_gathered(&self, hash: u64, g: &[u64]) -> Option<u32> {
        let b = self.table.find(hash, |b| self.entry(index(b.entry)).is_some_and(|(v, _)| v == g))?;
        Some(b.entry)
    }

    fn set_top(&mut self, e: u32, r: RuleRef) {
        let s = self.stride();
        let at = index(e) * s + self.n_words;
        self.arena[at..at + HEAD].copy_from_slice(&r.pack());
    }

    fn top(&self, e: u32) -> Option<RuleRef> {
        RuleRef::unpack(self.entry(index(e))?.1)
    }

    /// Adds rule `r` with (full, masked) `value`; returns its entry index.
    fn insert(&mut self, value: &[u64; W], r: RuleRef) -> u32 {
        let g = self.gather(value);
        let g = &g[..self.n_words];
        let hash = hash_gathered(g);
        let e = match self.find_gathered(hash, g) {
            Some(e) => {
                let top = self.top(e).expect("a live entry has a valid head");
                let rest = self.rest.entry(e).or_default();
                if r.rank < top.rank {
                    rest.insert(0, top);
                    self.set_top(e, r);
                } else {
                    let p = rest.partition_point(|x| x.rank < r.rank);
                    rest.insert(p, r);
                }
                e
            }
            None => {
                let e = u32::try_from(self.n_entries()).expect("fewer than 2^32 entries");
                self.arena.extend_from_slice(g);
                self.arena.extend_from_slice(&r.pack());
                let (arena, n) = (&self.arena, self.n_words);
                let s = n + HEAD;
                let rehash = |b: &Bucket| arena.get(index(b.entry) * s..).map_or(0, |w| hash_gathered(&w[..n]));
                self.table.insert_unique(hash, Bucket { fingerprint: fingerprint(hash), entry: e }, rehash);
                e
            }
        };
        self.ranks.insert(r.rank);
        self.best = self.ranks.first().copied().unwrap_or(Rank::WORST);
        e
    }

    /// Removes rule `r` from entry `e`. When that empties the entry, the
    /// last entry moves into its place and this returns true: the caller
    /// repoints the slots of the rules now at `e` ([`Self::rules_of`]).
    fn remove(&mut self, e: u32, r: RuleRef) -> bool {
        self.ranks.remove(&r.rank);
        self.best = self.ranks.first().copied().unwrap_or(Rank::WORST);
        if self.top(e) != Some(r) {
            if let Some(rest) = self.rest.get_mut(&e) {
                rest.retain(|x| x.slot != r.slot);
                if rest.is_empty() {
                    self.rest.remove(&e);
                }
            }
            return false;
        }
        if let Some(rest) = self.rest.get_mut(&e) {
            let next = rest.remove(0);
            if rest.is_empty() {
                self.rest.remove(&e);
            }
            self.set_top(e, next);
            return false;
        }
        // Last rule of the entry: drop it, fill the hole with the last entry.
        let s = self.stride();
        let n = self.n_words;
        let at = index(e) * s;
        let hash = hash_gathered(&self.arena[at..at + n]);
        if let Ok(b) = self.table.find_entry(hash, |b| b.entry == e) {
            b.remove();
        }
        let last = u32::try_from(self.n_entries() - 1).expect("entry indices fit u32");
        if last == e {
            self.arena.truncate(at);
            return false;
        }
        let from = index(last) * s;
        self.arena.copy_within(from..from + s, at);
        self.arena.truncate(from);
        let moved_hash = hash_gathered(&self.arena[at..at + n]);
        if let Some(b) = self.table.find_mut(moved_hash, |b| b.entry == last) {
            b.entry = e;
        }
        if let Some(rest) = self.rest.remove(&last) {
            self.rest.insert(e, rest);
        }
        true
    }

    /// All rules of entry `e`, best first.
    fn rules_of(&self, e: u32) -> impl Iterator<Item = RuleRef> + '_ {
        self.top(e).into_iter().chain(self.rest.get(&e).into_iter().flatten().copied())
    }
}

/// Cold, per-rule bookkeeping for the control path.
#[derive(Debug, Clone, Copy)]
struct Slot {
    gen: NonZeroU32,
    /// Meaningful while the slot is live (`Classifier::values[i]` is `Some`).
    priority: u32,
    seq: u64,
    /// `Subtable::id` of its subtable.
    subtable: u64,
    /// Its entry in that subtable.
    entry: u32,
}

/// Read-only view of one subtable, for `petrelctl dump-tables`/`pmd-stats`.
#[derive(Debug, Clone, Copy)]
pub struct SubtableInfo<'a, const W: usize> {
    /// The mask all its rules share.
    pub mask: &'a [u64; W],
    /// Highest priority of its rules.
    pub max_priority: u32,
    /// Number of rules.
    pub n_rules: usize,
    /// Number of distinct masked values (hash entries).
    pub n_entries: usize,
}

/// Priority classifier over `[u64; W]` keys by tuple space search, mapping
/// each rule to a `V`.
///
/// Memory is about `(n_words + 3) × 8` bytes per distinct masked value plus
/// ~70 bytes per rule (slot, value, rank set, hash slot), whatever `W` is.
/// `Clone` is a deep copy of that: mostly flat arrays (memcpy speed) plus
/// the per-subtable rank sets; see the `dpcls::clone_*` bench. The table
/// runtime clones a stage to make a copy-on-write snapshot, so an edit
/// costs a stage, not the whole pipeline.
#[derive(Debug, Clone)]
pub struct Classifier<const W: usize, V> {
    /// Sorted by `Subtable::best`, ascending (best first).
    subtables: Vec<Subtable<W>>,
    /// Rule slab, cold: read by the control path only.
    slots: Vec<Slot>,
    /// Values by slot, apart from `slots` so that the hot path reads a
    /// dense array; `Some` exactly where the slot is live.
    values: Vec<Option<V>>,
    free: Vec<u32>,
    n_rules: usize,
    next_seq: u64,
    next_subtable: u64,
}

impl<const W: usize, V> Default for Classifier<W, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize, V> Classifier<W, V> {
    /// An empty classifier (allocates nothing).
    pub const fn new() -> Self {
        Classifier {
            subtables: Vec::new(),
            slots: Vec::new(),
            values: Vec::new(),
            free: Vec::new(),
            n_rules: 0,
            next_seq: 0,
            next_subtable: 0,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.n_rules
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    /// Number of subtables (distinct masks): the worst-case probes per lookup.
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// The subtables in search order.
    pub fn subtables(&self) -> impl Iterator<Item = SubtableInfo<'_, W>> + '_ {
        self.subtables.iter().map(|s| SubtableInfo {
            mask: &s.mask,
            max_priority: s.best.priority(),
            n_rules: s.ranks.len(),
            n_entries: s.n_entries(),
        })
    }

    /// All rules, in slot order (not rank order).
    pub fn iter(&self) -> impl Iterator<Item = (RuleId, Rule<W>, &V)> + '_ {
        self.slots.iter().zip(&self.values).enumerate().filter_map(|(i, (s, v))| {
            let v = v.as_ref()?;
            let id = RuleId { slot: u32::try_from(i).ok()?, gen: s.gen };
            Some((id, self.rule(id)?, v))
        })
    }

    /// Slot index of `id` if it names a live rule.
    fn live(&self, id: RuleId) -> Option<usize> {
        let idx = usize::try_from(id.slot).ok()?;
        let s = self.slots.get(idx)?;
        (s.gen == id.gen && self.values.get(idx)?.is_some()).then_some(idx)
    }

    fn subtable_pos(&self, id: u64) -> Option<usize> {
        self.subtables.iter().position(|s| s.id == id)
    }

    /// The rule behind `id` (rebuilt from its subtable), if still present.
    pub fn rule(&self, id: RuleId) -> Option<Rule<W>> {
        let s = self.slots[self.live(id)?];
        let st = &self.subtables[self.subtable_pos(s.subtable)?];
        let (value, _) = st.entry(index(s.entry))?;
        Some(Rule { value: st.scatter(value), mask: st.mask, priority: s.priority })
    }

    /// The value of rule `id`, if it is still present.
    #[inline]
    pub fn get(&self, id: RuleId) -> Option<&V> {
        let idx = self.live(id)?;
        self.values[idx].as_ref()
    }

    /// Mutable access to the value of rule `id` (its match is immutable).
    pub fn get_mut(&mut self, id: RuleId) -> Option<&mut V> {
        let idx = self.live(id)?;
        self.values[idx].as_mut()
    }

    /// Adds `rule` mapping to `value`. Identical rules may coexist; the one
    /// inserted first wins. `rule.value` is masked first. Finding the
    /// subtable is a linear scan of the masks (control path; tens to
    /// hundreds of subtables per stage).
    ///
    /// # Panics
    /// If more than 2³² − 1 rules are live at once.
    pub fn insert(&mut self, rule: Rule<W>, value: V) -> RuleId {
        let rule = Rule::new(rule.value, rule.mask, rule.priority);
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 rule slots");
                assert!(slot != u32::MAX, "fewer than 2^32 - 1 rule slots");
                let s = Slot { gen: NonZeroU32::MIN, priority: 0, seq: 0, subtable: 0, entry: 0 };
                self.slots.push(s);
                self.values.push(None);
                slot
            }
        };
        let idx = index(slot);
        let gen = self.slots[idx].gen;
        let r = RuleRef { rank: Rank::new(rule.priority, seq), slot, gen };
        let pos = match self.subtables.iter().position(|s| s.mask == rule.mask) {
            Some(p) => p,
            None => {
                self.subtables.push(Subtable::new(rule.mask, self.next_subtable));
                self.next_subtable += 1;
                self.subtables.len() - 1
            }
        };
        let st = &mut self.subtables[pos];
        let before = st.best;
        let entry = st.insert(&rule.value, r);
        self.slots[idx] = Slot { gen, priority: rule.priority, seq, subtable: st.id, entry };
        self.values[idx] = Some(value);
        if st.best != before {
            self.resort(pos);
        }
        self.n_rules += 1;
        r.id()
    }

    /// Removes rule `id` and returns its value; `None` if it was already
    /// removed.
    pub fn remove(&mut self, id: RuleId) -> Option<V> {
        let idx = self.live(id)?;
        let s = self.slots[idx];
        let value = self.values[idx].take();
        // A new generation makes `id` (and copies of it) stale.
        self.slots[idx].gen = NonZeroU32::new(s.gen.get().wrapping_add(1)).unwrap_or(NonZeroU32::MIN);
        self.free.push(id.slot);
        self.n_rules -= 1;

        let pos = self.subtable_pos(s.subtable).expect("a live rule's subtable exists");
        let st = &mut self.subtables[pos];
        let before = st.best;
        let r = RuleRef { rank: Rank::new(s.priority, s.seq), slot: id.slot, gen: id.gen };
        if st.remove(s.entry, r) {
            for moved in st.rules_of(s.entry) {
                self.slots[index(moved.slot)].entry = s.entry;
            }
        }
        let st = &self.subtables[pos];
        if st.ranks.is_empty() {
            self.subtables.remove(pos);
        } else if st.best != before {
            self.resort(pos);
        }
        value
    }

    /// Moves subtable `pos` to its place after its best rank changed.
    fn resort(&mut self, pos: usize) {
        let st = self.subtables.remove(pos);
        let p = self.subtables.partition_point(|s| s.best < st.best);
        self.subtables.insert(p, st);
    }

    #[inline(always)]
    fn lookup_impl<const TRACE: bool>(&self, key: &[u64; W], n_probed: &mut u32) -> RuleRef {
        let mut best = RuleRef::NONE;
        for st in &self.subtables {
            // Ranks are unique, so `>=` only ever stops at worse subtables.
            if st.best >= best.rank {
                break;
            }
            if TRACE {
                *n_probed += 1;
            }
            if let Some(top) = st.find(st.hash_key(key), key) {
                if top.rank < best.rank {
                    best = top;
                }
            }
        }
        best
    }

    #[inline(always)]
    fn resolve(&self, r: RuleRef) -> Option<(RuleId, &V)> {
        let v = self.values.get(usize::try_from(r.slot).ok()?)?.as_ref()?;
        Some((r.id(), v))
    }

    /// The best rule matching `key`.
    #[inline]
    pub fn lookup(&self, key: &[u64; W]) -> Option<(RuleId, &V)> {
        let mut unused = 0;
        let r = self.lookup_impl::<false>(key, &mut unused);
        self.resolve(r)
    }

    /// [`lookup`](Self::lookup), also returning how many subtables it
    /// probed (for `petrelctl trace` and tests).
    pub fn lookup_traced(&self, key: &[u64; W]) -> (Option<(RuleId, &V)>, u32) {
        let mut n_probed = 0;
        let r = self.lookup_impl::<true>(key, &mut n_probed);
        (self.resolve(r), n_probed)
    }

    /// Looks up `keys[i]` for every bit `i` set in `todo` (bits at or past
    /// `keys.len()` are ignored), subtable by subtable as OVS dpcls does; a
    /// key leaves the batch once no later subtable can beat its match.
    /// Writes `out[i]` for exactly those keys and returns the bitmap of keys
    /// that matched. Reads no rule values ([`get`](Self::get) does). Does
    /// not allocate.
    ///
    /// # Panics
    /// If `keys.len() > MAX_BATCH` or `out.len() < keys.len()`.
    pub fn lookup_batch(&self, keys: &[[u64; W]], todo: u64, out: &mut [Option<RuleId>]) -> u64 {
        assert!(keys.len() <= MAX_BATCH, "at most {MAX_BATCH} keys per batch");
        assert!(out.len() >= keys.len(), "one output per key");
        let todo = if keys.len() == MAX_BATCH { todo } else { todo & ((1u64 << keys.len()) - 1) };
        let mut best = [RuleRef::NONE; MAX_BATCH];
        let mut pending = todo;
        let mut found = 0u64;
        for st in &self.subtables {
            // Retire keys whose match no later subtable can beat.
            let mut m = pending & found;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                if st.best >= best[i].rank {
                    pending &= !(1u64 << i);
                }
            }
            if pending == 0 {
                break;
            }
            let mut m = pending;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                if let Some(top) = st.find(st.hash_key(&keys[i]), &keys[i]) {
                    if top.rank < best[i].rank {
                        best[i] = top;
                        found |= 1u64 << i;
                    }
                }
            }
        }
        let mut m = todo;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            out[i] = (found & (1u64 << i) != 0).then(|| best[i].id());
        }
        found
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    impl<const W: usize, V> Classifier<W, V> {
        /// Checks every structural invariant the module doc states.
        fn check_invariants(&self) {
            let mut n = 0;
            for pair in self.subtables.windows(2) {
                assert!(pair[0].best < pair[1].best, "subtables sorted by best rank");
            }
            for st in &self.subtables {
                assert!(!st.ranks.is_empty(), "no empty subtable");
                assert_eq!(Some(&st.best), st.ranks.first());
                assert_eq!(st.arena.len() % st.stride(), 0);
                assert_eq!(st.table.len(), st.n_entries());
                let targets: std::collections::HashSet<u32> = st.table.iter().map(|b| b.entry).collect();
                assert_eq!(targets.len(), st.n_entries(), "buckets point at distinct entries");
                assert!(st.rest.keys().all(|&e| (e as usize) < st.n_entries()));
                let mut in_table = 0;
                for b in st.table.iter() {
                    let (value, head) = st.entry(b.entry as usize).unwrap();
                    let top = RuleRef::unpack(head).unwrap();
                    let rest = st.rest.get(&b.entry).cloned().unwrap_or_default();
                    let mut prev = top.rank;
                    for r in core::iter::once(top).chain(rest.iter().copied()) {
                        assert!(r == top || prev < r.rank, "entry rules sorted by rank");
                        prev = r.rank;
                        let slot = &self.slots[r.slot as usize];
                        assert_eq!((slot.gen, slot.subtable, slot.entry), (r.gen, st.id, b.entry));
                        assert_eq!(Rank::new(slot.priority, slot.seq), r.rank);
                        assert!(st.ranks.contains(&r.rank));
                    }
                    in_table += 1 + rest.len();
                    let hash = hash_gathered(value);
                    assert_eq!(st.hash_key(&st.scatter(value)), hash);
                    assert_eq!(b.fingerprint, fingerprint(hash));
                }
                assert_eq!(in_table, st.ranks.len());
                n += in_table;
            }
            assert_eq!(n, self.n_rules);
            assert_eq!(self.iter().count(), self.n_rules);
            assert_eq!(self.values.iter().filter(|v| v.is_some()).count(), self.n_rules);
        }
    }

    const W: usize = 3;
    type Cls = Classifier<W, u32>;

    fn rule(value: [u64; W], mask: [u64; W], priority: u32) -> Rule<W> {
        Rule::new(value, mask, priority)
    }

    const M0: [u64; W] = [u64::MAX, 0, 0];
    const M1: [u64; W] = [0, u64::MAX, 0];
    const M2: [u64; W] = [0, 0, u64::MAX];

    #[test]
    fn early_exit_stops_at_a_worse_subtable() {
        let mut c = Cls::new();
        let a = c.insert(rule([1, 0, 0], M0, 100), 1);
        let b = c.insert(rule([0, 2, 0], M1, 50), 2);
        let _ = c.insert(rule([0, 0, 3], M2, 10), 3);
        assert_eq!(c.n_subtables(), 3);
        let maxes: Vec<u32> = c.subtables().map(|s| s.max_priority).collect();
        assert_eq!(maxes, [100, 50, 10]);

        // Hit in the first subtable: nothing else can beat priority 100.
        let (hit, n) = c.lookup_traced(&[1, 2, 3]);
        assert_eq!(hit.map(|(id, v)| (id, *v)), Some((a, 1)));
        assert_eq!(n, 1);
        // Hit in the second: the third (max 10) is skipped.
        let (hit, n) = c.lookup_traced(&[0, 2, 3]);
        assert_eq!(hit.map(|(id, _)| id), Some(b));
        assert_eq!(n, 2);
        // A miss probes everything.
        let (hit, n) = c.lookup_traced(&[9, 9, 9]);
        assert!(hit.is_none());
        assert_eq!(n, 3);
    }

    #[test]
    fn equal_priorities_across_masks_go_to_the_first_inserted() {
        let mut c = Cls::new();
        let _low = c.insert(rule([0, 0, 7], M2, 5), 0);
        let first = c.insert(rule([0, 2, 0], M1, 10), 1);
        let second = c.insert(rule([1, 0, 0], M0, 10), 2);
        // `second`'s subtable sorts after `first`'s and cannot beat it: one
        // probe. A key only `second` matches probes both, then stops before
        // the priority-5 subtable.
        let (hit, n) = c.lookup_traced(&[1, 2, 7]);
        assert_eq!(hit.map(|(id, _)| id), Some(first));
        assert_eq!(n, 1);
        let (hit, n) = c.lookup_traced(&[1, 0, 7]);
        assert_eq!(hit.map(|(id, _)| id), Some(second));
        assert_eq!(n, 2);
        // Remove and re-insert `first`: now it is the later one.
        let first_value = c.remove(first).unwrap();
        let again = c.insert(rule([0, 2, 0], M1, 10), first_value);
        assert_eq!(c.lookup(&[1, 2, 7]).map(|(id, _)| id), Some(second));
        assert_eq!(c.lookup(&[0, 2, 7]).map(|(id, _)| id), Some(again));
        c.check_invariants();
    }

    #[test]
    fn removing_the_last_rule_drops_the_subtable() {
        let mut c = Cls::new();
        let a = c.insert(rule([1, 0, 0], M0, 1), 1);
        let b = c.insert(rule([0, 2, 0], M1, 2), 2);
        assert_eq!(c.n_subtables(), 2);
        assert_eq!(c.remove(b), Some(2));
        assert_eq!(c.n_subtables(), 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.remove(b), None, "stale id");
        assert_eq!(c.get(b), None);
        assert_eq!(c.lookup_traced(&[1, 2, 0]).1, 1);
        assert_eq!(c.lookup(&[1, 2, 0]).map(|(id, v)| (id, *v)), Some((a, 1)));
        // The freed slot is reused under a new generation.
        let d = c.insert(rule([0, 2, 0], M1, 2), 4);
        assert_ne!(d, b);
        assert_eq!(c.remove(b), None);
        assert_eq!(c.get(d), Some(&4));
        assert_eq!(c.remove(a), Some(1));
        assert_eq!(c.remove(d), Some(4));
        assert!(c.is_empty());
        assert_eq!(c.n_subtables(), 0);
        assert!(c.lookup(&[1, 2, 0]).is_none());
        c.check_invariants();
    }

    #[test]
    fn duplicate_rules_coexist_and_the_first_wins() {
        let mut c = Cls::new();
        let r = rule([1, 0, 0], M0, 7);
        let a = c.insert(r, 1);
        let b = c.insert(r, 2);
        assert_ne!(a, b);
        assert_eq!(c.len(), 2);
        assert_eq!(c.n_subtables(), 1);
        assert_eq!(c.subtables().next().unwrap().n_entries, 1);
        assert_eq!(c.lookup(&[1, 5, 5]).map(|(id, _)| id), Some(a));
        assert_eq!(c.remove(a), Some(1));
        assert_eq!(c.lookup(&[1, 5, 5]).map(|(id, _)| id), Some(b));
        c.check_invariants();
    }

    #[test]
    fn same_value_different_priorities_in_one_subtable() {
        let mut c = Cls::new();
        let lo = c.insert(rule([1, 0, 0], M0, 1), 1);
        let hi = c.insert(rule([1, 0, 0], M0, 9), 9);
        let mid = c.insert(rule([1, 0, 0], M0, 5), 5);
        assert_eq!(c.subtables().next().unwrap().max_priority, 9);
        assert_eq!(c.lookup(&[1, 0, 0]).map(|(id, _)| id), Some(hi));
        c.remove(hi);
        assert_eq!(c.subtables().next().unwrap().max_priority, 5);
        assert_eq!(c.lookup(&[1, 0, 0]).map(|(id, _)| id), Some(mid));
        c.remove(mid);
        assert_eq!(c.lookup(&[1, 0, 0]).map(|(id, _)| id), Some(lo));
        c.check_invariants();
    }

    #[test]
    fn catchall_and_partial_word_masks() {
        let mut c = Cls::new();
        let any = c.insert(Rule::catchall(0), 0);
        // Stray bits outside the mask are cleared on insert.
        let net = c.insert(rule([0x0a00_00ff, 0, 0], [0xff00_0000, 0, 0], 24), 1);
        assert_eq!(c.rule(net).unwrap(), Rule { value: [0x0a00_0000, 0, 0], mask: [0xff00_0000, 0, 0], priority: 24 });
        assert_eq!(c.lookup(&[0x0a01_0203, 4, 4]).map(|(id, _)| id), Some(net));
        assert_eq!(c.lookup(&[0x0b01_0203, 4, 4]).map(|(id, _)| id), Some(any));
        *c.get_mut(any).unwrap() = 42;
        assert_eq!(c.lookup(&[0, 0, 0]).map(|(_, v)| *v), Some(42));
    }

    #[test]
    fn batch_honours_todo_and_leaves_other_outputs_alone() {
        let mut c = Cls::new();
        let a = c.insert(rule([1, 0, 0], M0, 1), 1);
        let keys = [[1, 0, 0], [2, 0, 0], [1, 9, 9], [1, 0, 0]];
        let sentinel = Some(a);
        let mut out = [None, sentinel, None, sentinel];
        let hits = c.lookup_batch(&keys, 0b0101 | (1 << 40), &mut out);
        assert_eq!(hits, 0b0101);
        assert_eq!(out, [Some(a), sentinel, Some(a), sentinel]);
        let mut out = [None; 4];
        let hits = c.lookup_batch(&keys, 0b0010, &mut out);
        assert_eq!(hits, 0);
        assert_eq!(out, [None; 4]);
        let mut out = [sentinel; 4];
        let hits = c.lookup_batch(&keys, u64::MAX, &mut out);
        assert_eq!(hits, 0b1101);
        assert_eq!(out, [Some(a), None, Some(a), Some(a)]);
    }

    #[test]
    fn clones_are_independent() {
        let mut c = Cls::new();
        let a = c.insert(rule([1, 0, 0], M0, 1), 1);
        let snap = c.clone();
        c.remove(a);
        let b = c.insert(rule([0, 2, 0], M1, 2), 2);
        assert_eq!(snap.lookup(&[1, 2, 0]).map(|(id, v)| (id, *v)), Some((a, 1)));
        assert_eq!(c.lookup(&[1, 2, 0]).map(|(id, v)| (id, *v)), Some((b, 2)));
        snap.check_invariants();
        c.check_invariants();
    }

    // ---- property test against a linear scan ----

    #[derive(Debug, Default, Clone)]
    struct Reference {
        /// (id, seq, rule, value) in insertion order.
        rules: Vec<(RuleId, u64, Rule<W>, u32)>,
        seq: u64,
    }

    impl Reference {
        fn lookup(&self, key: &[u64; W]) -> Option<(RuleId, u32)> {
            self.rules
                .iter()
                .filter(|(_, _, r, _)| r.matches(key))
                .min_by_key(|(_, seq, r, _)| (core::cmp::Reverse(r.priority), *seq))
                .map(|(id, _, _, v)| (*id, *v))
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            mask: usize,
            value: [u64; W],
            priority: u32,
        },
        Remove(usize),
        /// `from_rule`: derive the key from a live rule (index) so it hits.
        Lookup {
            from_rule: Option<usize>,
            noise: [u64; W],
        },
        Batch(Vec<(Option<usize>, [u64; W])>),
        Snapshot,
    }

    /// Word values from a small domain so that masked values collide.
    fn word() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..4, Just(0xff), Just(0x100), Just(0xffff_0000_0000_0001), Just(u64::MAX)]
    }

    fn mask_word() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), Just(u64::MAX), Just(0xff), Just(0x0f), Just(0xffff_0000_0000_0000), Just(0x101)]
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = || proptest::array::uniform3(word());
        let pick = proptest::option::weighted(0.5, 0usize..1000);
        prop_oneof![
            4 => (0usize..100, proptest::array::uniform3(word()), 0u32..4)
                .prop_map(|(mask, value, priority)| Op::Insert { mask, value, priority }),
            2 => (0usize..1000).prop_map(Op::Remove),
            4 => (pick.clone(), key()).prop_map(|(from_rule, noise)| Op::Lookup { from_rule, noise }),
            1 => proptest::collection::vec((pick, key()), 0..=MAX_BATCH).prop_map(Op::Batch),
            1 => Just(Op::Snapshot),
        ]
    }

    fn make_key(reference: &Reference, from_rule: Option<usize>, noise: [u64; W]) -> [u64; W] {
        match from_rule {
            Some(i) if !reference.rules.is_empty() => {
                let (_, _, r, _) = &reference.rules[i % reference.rules.len()];
                let mut k = noise;
                for ((k, v), m) in k.iter_mut().zip(&r.value).zip(&r.mask) {
                    *k = v | (*k & !m);
                }
                k
            }
            _ => noise,
        }
    }

    fn check_batch(c: &Cls, reference: &Reference, keys: &[[u64; W]]) {
        let mut out = [None; MAX_BATCH];
        let hits = c.lookup_batch(keys, u64::MAX, &mut out);
        for (i, key) in keys.iter().enumerate() {
            let want = reference.lookup(key).map(|(id, _)| id);
            assert_eq!(out[i], want, "batch key {i} {key:?}");
            assert_eq!(hits & (1 << i) != 0, want.is_some());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn matches_linear_scan(
            masks in proptest::collection::vec(proptest::array::uniform3(mask_word()), 1..6),
            ops in proptest::collection::vec(op(), 1..150),
        ) {
            let mut c = Cls::new();
            let mut reference = Reference::default();
            let mut snapshot: Option<(Cls, Reference)> = None;
            let mut next_value = 0u32;
            for op in ops {
                match op {
                    Op::Insert { mask, value, priority } => {
                        let r = Rule::new(value, masks[mask % masks.len()], priority);
                        let id = c.insert(r, next_value);
                        reference.rules.push((id, reference.seq, r, next_value));
                        reference.seq += 1;
                        next_value += 1;
                    }
                    Op::Remove(i) => {
                        if !reference.rules.is_empty() {
                            let (id, _, _, v) = reference.rules.remove(i % reference.rules.len());
                            prop_assert_eq!(c.remove(id), Some(v));
                            prop_assert_eq!(c.remove(id), None);
                        }
                    }
                    Op::Lookup { from_rule, noise } => {
                        let key = make_key(&reference, from_rule, noise);
                        let got = c.lookup(&key).map(|(id, v)| (id, *v));
                        prop_assert_eq!(got, reference.lookup(&key), "key {:?}", key);
                        let (traced, n_probed) = c.lookup_traced(&key);
                        prop_assert_eq!(traced.map(|(id, v)| (id, *v)), got);
                        prop_assert!(n_probed as usize <= c.n_subtables());
                    }
                    Op::Batch(spec) => {
                        let keys: Vec<[u64; W]> =
                            spec.iter().map(|&(from, noise)| make_key(&reference, from, noise)).collect();
                        check_batch(&c, &reference, &keys);
                    }
                    Op::Snapshot => snapshot = Some((c.clone(), reference.clone())),
                }
                prop_assert_eq!(c.len(), reference.rules.len());
                c.check_invariants();
            }
            for (id, _, r, v) in &reference.rules {
                prop_assert_eq!(c.rule(*id), Some(*r));
                prop_assert_eq!(c.get(*id), Some(v));
            }
            // A snapshot taken mid-way still answers as it did then.
            if let Some((snap, snap_ref)) = snapshot {
                snap.check_invariants();
                let keys: Vec<[u64; W]> =
                    snap_ref.rules.iter().map(|(_, _, r, _)| r.value).take(MAX_BATCH).collect();
                for k in &keys {
                    prop_assert_eq!(snap.lookup(k).map(|(id, v)| (id, *v)), snap_ref.lookup(k));
                }
                check_batch(&snap, &snap_ref, &keys);
            }
        }
    }
}
