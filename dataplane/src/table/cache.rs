//! The per-PMD flow cache: flow key → the pipeline's verdict, so a packet
//! of a known flow runs no pipeline at all (OVS EMC in front of the
//! classifier).
//!
//! A verdict is the list of copies ([`Emit`]s) the executor produced, kept
//! as (target, final flow key) pairs; metadata is not needed to apply it.
//! Verdicts with more than [`MAX_CACHED_EMITS`] copies (floods) are not
//! cached and run the pipeline each time. A copy that is a generated packet
//! keeps its [`GenPacket`]: the bytes are built from the final key and the
//! received packet each time, so the verdict stays valid for the flow. Entries are tagged with the
//! snapshot generation; a new snapshot invalidates them all at once.
//!
//! Meters: a verdict keeps the meters its walk passed ([`MeterHit`], up to
//! [`MAX_CACHED_METERS`]; walks with more are not cached), and the PMD runs
//! them for every packet that hits it, so caching never lets a packet
//! skip a meter. Whether a meter passes is not part of the verdict.

use super::exec::{Emit, GenPacket, MeterHit, Outcome, Target};
use crate::drop::DropReason;
use crate::flow::emc::Emc;
use crate::flow::FlowKey;

/// Copies a cached verdict can hold.
pub const MAX_CACHED_EMITS: usize = 2;
/// Meters a cached verdict can hold.
pub const MAX_CACHED_METERS: usize = 2;

/// A cached verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    n: u8,
    /// Bit i: copy i's final key differs from the received one (it needs
    /// a commit); most switching verdicts rewrite nothing.
    rewrite: u8,
    /// Why it drops, when `n == 0`.
    drop: Option<DropReason>,
    emits: [(Target, FlowKey); MAX_CACHED_EMITS],
    /// Copy i is this generated packet, not the received one.
    gens: [Option<GenPacket>; MAX_CACHED_EMITS],
    n_meters: u8,
    meters: [MeterHit; MAX_CACHED_METERS],
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            n: 0,
            rewrite: 0,
            drop: None,
            emits: [(Target::Local { port: 0, vlan: None }, FlowKey::default()); MAX_CACHED_EMITS],
            gens: [None; MAX_CACHED_EMITS],
            n_meters: 0,
            meters: [MeterHit::default(); MAX_CACHED_METERS],
        }
    }
}

impl Verdict {
    /// The verdict of an outcome for a packet whose key was `orig`, if it
    /// is small enough to cache.
    pub fn of(o: &Outcome, orig: &FlowKey) -> Option<Self> {
        let e = o.emits();
        let ms = o.meters();
        if e.len() > MAX_CACHED_EMITS || ms.len() > MAX_CACHED_METERS {
            return None;
        }
        let mut v = Verdict {
            n: u8::try_from(e.len()).unwrap_or(0),
            drop: o.drop,
            n_meters: u8::try_from(ms.len()).unwrap_or(0),
            ..Verdict::default()
        };
        v.meters[..ms.len()].copy_from_slice(ms);
        for (i, (slot, Emit { key, target, gen })) in v.emits.iter_mut().zip(e).enumerate() {
            *slot = (*target, key.flow);
            v.gens[i] = *gen;
            if key.flow != *orig {
                v.rewrite |= 1 << i;
            }
        }
        Some(v)
    }

    /// The copies: (target, final flow key).
    pub fn emits(&self) -> &[(Target, FlowKey)] {
        &self.emits[..usize::from(self.n)]
    }

    /// The meters to run for each packet, in walk order.
    #[inline]
    pub fn meters(&self) -> &[MeterHit] {
        &self.meters[..usize::from(self.n_meters)]
    }

    /// What copy `i` is, if a generated packet.
    #[inline]
    pub fn gen(&self, i: usize) -> Option<GenPacket> {
        self.gens.get(i).copied().flatten()
    }

    /// Whether copy `i` needs its headers rewritten.
    #[inline]
    pub fn rewrites(&self, i: usize) -> bool {
        self.rewrite & (1 << i) != 0
    }

    /// Why the packet is dropped when there are no copies.
    pub fn drop_reason(&self) -> DropReason {
        self.drop.unwrap_or(DropReason::StageMiss)
    }
}

/// A verdict's place in the arena: slot and the sequence number it was
/// written with, so a slot reused for another flow is detected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Handle {
    slot: u32,
    seq: u32,
}

/// The flow cache of one PMD: an exact-match cache from flow key to a small
/// handle, and an arena of verdicts the handles point into (so a hit copies
/// 8 bytes, not a verdict). Arena slots are reused round-robin; a handle
/// whose slot was reused is a miss.
#[derive(Debug)]
pub struct FlowCache {
    emc: Emc<{ FlowKey::WORDS }, Handle>,
    arena: Box<[(u32, Verdict)]>,
    next: usize,
    seq: u32,
}

impl FlowCache {
    /// A cache of `entries` (power of two) verdicts; allocates once.
    pub fn new(entries: usize) -> Self {
        FlowCache {
            emc: Emc::new(entries),
            arena: vec![(0, Verdict::default()); entries].into_boxed_slice(),
            next: 0,
            seq: 0,
        }
    }

    /// The verdict for `key` under `generation`, if cached.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, generation: u64) -> Option<&Verdict> {
        let h = self.emc.lookup(key.words(), key.hash(), generation)?;
        let (seq, v) = self.arena.get(h.slot as usize)?;
        (*seq == h.seq).then_some(v)
    }

    /// Caches `v` for `key`.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, generation: u64, v: Verdict) {
        // Sequence 0 marks a never-written slot, so start at 1.
        self.seq = self.seq.wrapping_add(1).max(1);
        let slot = self.next;
        self.next = (self.next + 1) % self.arena.len();
        self.arena[slot] = (self.seq, v);
        let h = Handle { slot: u32::try_from(slot).unwrap_or(0), seq: self.seq };
        self.emc.insert(key.words(), key.hash(), generation, h);
    }
    /// Hits so far.
    pub fn n_hit(&self) -> u64 {
        self.emc.n_hit()
    }

    /// Misses so far.
    pub fn n_miss(&self) -> u64 {
        self.emc.n_miss()
    }
}
