//! The per-PMD flow cache: flow key → the pipeline's verdict, so a packet
//! of a known flow runs no pipeline at all (OVS EMC in front of the
//! classifier).
//!
//! A verdict is the list of copies ([`Emit`]s) the executor produced, kept
//! as (target, final flow key) pairs; metadata is not needed to apply it.
//! Verdicts with more than [`MAX_CACHED_EMITS`] copies (floods) are not
//! cached and run the pipeline each time. Entries are tagged with the
//! snapshot generation; a new snapshot invalidates them all at once.

use super::exec::{Emit, Outcome, Target};
use crate::drop::DropReason;
use crate::flow::emc::Emc;
use crate::flow::FlowKey;

/// Copies a cached verdict can hold.
pub const MAX_CACHED_EMITS: usize = 2;

/// A cached verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    n: u8,
    /// Why it drops, when `n == 0`.
    drop: Option<DropReason>,
    emits: [(Target, FlowKey); MAX_CACHED_EMITS],
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            n: 0,
            drop: None,
            emits: [(Target::Local { port: 0, vlan: None }, FlowKey::default()); MAX_CACHED_EMITS],
        }
    }
}

impl Verdict {
    /// The verdict of an outcome, if it is small enough to cache.
    pub fn of(o: &Outcome) -> Option<Self> {
        let e = o.emits();
        if e.len() > MAX_CACHED_EMITS {
            return None;
        }
        let mut v = Verdict { n: u8::try_from(e.len()).unwrap_or(0), drop: o.drop, ..Verdict::default() };
        for (slot, Emit { key, target }) in v.emits.iter_mut().zip(e) {
            *slot = (*target, key.flow);
        }
        Some(v)
    }

    /// The copies: (target, final flow key).
    pub fn emits(&self) -> &[(Target, FlowKey)] {
        &self.emits[..usize::from(self.n)]
    }

    /// Why the packet is dropped when there are no copies.
    pub fn drop_reason(&self) -> DropReason {
        self.drop.unwrap_or(DropReason::StageMiss)
    }
}

/// The flow cache of one PMD.
#[derive(Debug)]
pub struct FlowCache {
    emc: Emc<{ FlowKey::WORDS }, Verdict>,
}

impl FlowCache {
    /// A cache of `entries` (power of two) verdicts; allocates once.
    pub fn new(entries: usize) -> Self {
        FlowCache { emc: Emc::new(entries) }
    }

    /// The verdict for `key` under `generation`, if cached.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, generation: u64) -> Option<Verdict> {
        self.emc.lookup(key.words(), key.hash(), generation)
    }

    /// Caches `v` for `key`.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, generation: u64, v: Verdict) {
        self.emc.insert(key.words(), key.hash(), generation, v);
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
