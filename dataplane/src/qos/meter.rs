//! Meters of the tables (OVN `set_meter`, Southbound `Meter` rows): one
//! PMD's buckets and counters, and the per-packet verdict.
//!
//! The snapshot holds each meter's rate and burst ([`crate::table::Meter`]);
//! a PMD keeps a [`Meters`]: one [`Bucket`] per meter id, sized once for
//! [`MAX_METERS`] ids when the PMD starts, so picking up a snapshot and
//! metering a packet never allocate. The walk records the meters a packet
//! passes ([`MeterHit`]); [`Meters::run`] takes their tokens for every
//! packet, whether its verdict came from the flow cache or a fresh walk.
//!
//! **Republish.** A meter's bucket is keyed by id and name: when a new
//! snapshot keeps both, the bucket is kept (same profile) or rebased onto
//! the new one with its tokens ([`Bucket::rebase`]: a rate change is live,
//! no burst reset). A new name on an id, or a new id, starts full.
//!
//! **Several PMDs.** A meter is shared by whatever reaches it, on any
//! port, so any PMD may run it. Each PMD has its own bucket with an exact
//! share of the rate and of the burst ([`crate::qos::share`], as the port
//! policers split theirs), so the sum over the PMDs never exceeds the
//! meter. Traffic unevenly spread over PMDs gets less than the rate (each
//! share is a hard limit); with one PMD the meter is exact. A shared bucket
//! would need an atomic read-modify-write per packet on a shared cache line,
//! which the fast path never does. ovs-vswitchd's userspace datapath takes
//! a mutex per meter and batch instead.
//!
//! Invariants: `profiles[i]` is `Some` exactly for the ids the current
//! snapshot has a meter for; counters of an id restart at zero when its
//! meter changes identity.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::{Bucket, Profile};
use crate::table::exec::MeterHit;
use crate::table::{Meter, MAX_METERS};

/// One meter's state on one PMD.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    profile: Option<Profile>,
    bucket: Bucket,
    counters: MeterCounters,
}

/// What one PMD counted for one meter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterCounters {
    /// Packets the meter passed.
    pub passed: u64,
    /// Packets it refused (their copies after it were dropped).
    pub dropped: u64,
    /// Bytes of the refused packets.
    pub dropped_bytes: u64,
}

/// One PMD's meters.
#[derive(Debug)]
pub struct Meters {
    states: Box<[State]>,
    /// Ids below this may have a meter (the current snapshot's table length).
    n_ids: usize,
    pmd: usize,
    n_pmd: usize,
    hz: u64,
}

impl Meters {
    /// Buckets for [`MAX_METERS`] ids, for PMD `pmd` of `n_pmd`, on a TSC
    /// of `hz` (allocates once).
    pub fn new(pmd: usize, n_pmd: usize, hz: u64) -> Self {
        Meters { states: vec![State::default(); MAX_METERS].into_boxed_slice(), n_ids: 0, pmd, n_pmd, hz }
    }

    /// Which share of each meter this PMD runs: PMD `pmd` of `n_pmd`. Takes
    /// effect for meters as they next change (call before the first
    /// snapshot).
    pub fn set_share(&mut self, pmd: usize, n_pmd: usize) {
        self.pmd = pmd;
        self.n_pmd = n_pmd.max(1);
    }

    /// Moves from the meters of snapshot `old` to those of `new` at `now`:
    /// buckets of unchanged meters stay, changed ones are rebased (tokens
    /// kept), new ones start full, removed ones are cleared.
    pub fn update(&mut self, old: &[Option<Meter>], new: &[Option<Meter>], now: u64) {
        let n = new.len().min(MAX_METERS);
        for (i, st) in self.states.iter_mut().enumerate().take(self.n_ids.max(n)) {
            let o = old.get(i).and_then(Option::as_ref);
            let m = new.get(i).and_then(Option::as_ref).filter(|_| i < n);
            let np = m.and_then(|m| m.profile(self.pmd, self.n_pmd, self.hz).ok());
            match (o, m, st.profile, np) {
                (Some(o), Some(m), Some(op), Some(np)) if o.name == m.name => {
                    if op != np {
                        st.bucket.rebase(&op, &np, now);
                        st.profile = Some(np);
                    }
                }
                (_, _, _, Some(np)) => {
                    *st = State { profile: Some(np), bucket: Bucket::full(&np, now), ..State::default() }
                }
                (_, _, _, None) => *st = State::default(),
            }
        }
        self.n_ids = n;
    }

    /// Runs the meters a packet of `len` bytes passes at `now`, in order;
    /// returns the copies to drop (bit `i`: copy `i`) and whether any meter
    /// refused it.
    #[inline]
    pub fn run(&mut self, hits: &[MeterHit], now: u64, len: u32) -> (u32, bool) {
        let mut drop = 0u32;
        let mut refused = false;
        let mut k = 0;
        while let Some(h) = hits.get(k) {
            let st = self.states.get_mut(h.id as usize);
            let ok = match st {
                Some(State { profile: Some(p), bucket, counters }) => {
                    let ok = bucket.admit(p, now, len);
                    if ok {
                        counters.passed += 1;
                    } else {
                        counters.dropped += 1;
                        counters.dropped_bytes += u64::from(len);
                    }
                    ok
                }
                // Validated away (the walk drops unknown meters); refuse.
                _ => false,
            };
            if ok {
                k += 1;
            } else {
                refused = true;
                drop |= span(h.from, h.to);
                k = usize::from(h.skip).max(k + 1);
            }
        }
        (drop, refused)
    }

    /// Ids below this may have a meter.
    pub fn n_ids(&self) -> usize {
        self.n_ids
    }

    /// Meter `id`'s counters on this PMD.
    pub fn counters(&self, id: usize) -> MeterCounters {
        self.states.get(id).map(|s| s.counters).unwrap_or_default()
    }

    /// Whole units in meter `id`'s bucket (after its last refill), if it has one.
    pub fn tokens(&self, id: usize) -> Option<u64> {
        let s = self.states.get(id)?;
        s.profile.map(|p| s.bucket.tokens(&p))
    }
}

/// The published copy of one PMD's meter counters (one writer, the PMD,
/// when it publishes its other counters; readers sum the PMDs).
#[derive(Debug)]
pub struct MeterShared {
    counters: Box<[[AtomicU64; 3]]>,
    n_ids: AtomicUsize,
}

impl Default for MeterShared {
    fn default() -> Self {
        MeterShared { counters: (0..MAX_METERS).map(|_| Default::default()).collect(), n_ids: AtomicUsize::new(0) }
    }
}

impl MeterShared {
    /// Publishes `m`'s counters (the owning PMD only; off the packet path).
    pub fn publish(&self, m: &Meters) {
        let n = m.n_ids.max(self.n_ids.load(Relaxed)).min(MAX_METERS);
        for (i, c) in self.counters.iter().enumerate().take(n) {
            let v = m.counters(i);
            c[0].store(v.passed, Relaxed);
            c[1].store(v.dropped, Relaxed);
            c[2].store(v.dropped_bytes, Relaxed);
        }
        self.n_ids.store(m.n_ids, Relaxed);
    }

    /// Meter `id`'s counters as last published.
    pub fn get(&self, id: usize) -> MeterCounters {
        self.counters.get(id).map_or_else(MeterCounters::default, |c| MeterCounters {
            passed: c[0].load(Relaxed),
            dropped: c[1].load(Relaxed),
            dropped_bytes: c[2].load(Relaxed),
        })
    }
}

/// Bits `from..to` of a copy mask.
#[inline]
fn span(from: u8, to: u8) -> u32 {
    let bits = |n: u8| if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    bits(to) & !bits(from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::qos::Unit;

    const HZ: u64 = 1_000_000_000;

    fn meter(name: &str, rate: u64, burst: u64, unit: Unit) -> Option<Meter> {
        Some(Meter { name: name.into(), rate, burst, unit })
    }

    fn hit(id: u32, from: u8, to: u8, skip: u8) -> MeterHit {
        MeterHit { id, from, to, skip }
    }

    #[test]
    fn test_burst_then_refusal_and_counters() {
        // 8000 bit/s, burst 8000 bits: ten 100-byte frames at once, not 11.
        let mut m = Meters::new(0, 1, HZ);
        let t = vec![meter("a", 8000, 8000, Unit::Bits)];
        m.update(&[], &t, 0);
        let hits = [hit(0, 0, 1, 1)];
        let passed = (0..20).filter(|_| m.run(&hits, 0, 100) == (0, false)).count();
        assert_eq!(passed, 10);
        assert_eq!(m.counters(0), MeterCounters { passed: 10, dropped: 10, dropped_bytes: 1000 });
        // 100 ms later: 800 bits = one frame.
        assert_eq!(m.run(&hits, HZ / 10, 100), (0, false));
        assert_eq!(m.run(&hits, HZ / 10, 100), (1, true));
    }

    #[test]
    fn test_refusal_drops_its_scope_and_skips_meters_inside() {
        let mut m = Meters::new(0, 1, HZ);
        let t = vec![meter("a", 1, 1, Unit::Packets), meter("b", 1, 1, Unit::Packets)];
        m.update(&[], &t, 0);
        // Meter 0 covers copies 0..3 and meter 1 (inside its scope).
        let hits = [hit(0, 0, 3, 2), hit(1, 1, 2, 2)];
        assert_eq!(m.run(&hits, 0, 64), (0, false));
        assert_eq!(m.run(&hits, 0, 64), (0b111, true));
        // Meter 1 was not run the second time: it still has no tokens
        // taken beyond the first packet, and counted one pass only.
        assert_eq!(m.counters(1), MeterCounters { passed: 1, dropped: 0, dropped_bytes: 0 });
        // A meter in a clone (copy 1 only) refusing leaves the others.
        let mut m = Meters::new(0, 1, HZ);
        m.update(&[], &t, 0);
        let hits = [hit(1, 1, 2, 1), hit(0, 2, 3, 2)];
        m.run(&hits, 0, 64);
        assert_eq!(m.run(&hits, 0, 64), (0b110, true));
    }

    #[test]
    fn test_republish_keeps_rebases_or_resets() {
        let mut m = Meters::new(0, 1, HZ);
        let t1 = vec![meter("a", 10, 5, Unit::Packets)];
        m.update(&[], &t1, 0);
        let hits = [hit(0, 0, 1, 1)];
        for _ in 0..5 {
            m.run(&hits, 0, 64);
        }
        assert_eq!(m.tokens(0), Some(0));
        // Same meter republished: no burst reset.
        let t2 = t1.clone();
        m.update(&t1, &t2, 0);
        assert_eq!(m.run(&hits, 0, 64), (1, true));
        // New rate, same name: live, tokens kept (none), new rate from now.
        let t3 = vec![meter("a", 1000, 5, Unit::Packets)];
        m.update(&t2, &t3, 0);
        assert_eq!(m.tokens(0), Some(0));
        assert_eq!(m.run(&hits, HZ / 1000, 64), (0, false), "1000 pkt/s: one packet after 1 ms");
        assert_eq!(m.counters(0).passed, 6, "counters survive a rate change");
        // Another meter on the id: starts full, counters from zero.
        let t4 = vec![meter("b", 1000, 5, Unit::Packets)];
        m.update(&t3, &t4, HZ / 1000);
        assert_eq!(m.tokens(0), Some(5));
        assert_eq!(m.counters(0), MeterCounters::default());
        // Removed.
        m.update(&t4, &[], HZ);
        assert_eq!(m.tokens(0), None);
    }

    #[test]
    fn test_two_pmds_split_rate_and_burst() {
        let t = vec![meter("a", 1000, 11, Unit::Packets)];
        let hits = [hit(0, 0, 1, 1)];
        let mut total = 0;
        for pmd in 0..2 {
            let mut m = Meters::new(pmd, 2, HZ);
            m.update(&[], &t, 0);
            total += (0..100).filter(|_| m.run(&hits, 0, 64).0 == 0).count();
        }
        assert_eq!(total, 11, "the shares of the burst add up to the burst");
    }

    #[test]
    fn test_span() {
        assert_eq!(span(0, 0), 0);
        assert_eq!(span(0, 2), 0b11);
        assert_eq!(span(1, 16), 0xfffe);
        assert_eq!(span(3, 3), 0);
    }
}
