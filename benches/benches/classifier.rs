//! Lookup costs of the tuple-space classifier and the exact-match cache
//! (criterion).
//!
//! Keys are `FlowKey::WORDS + 4` words, the 4 standing for OVN metadata
//! (datapath, logical ports, a register, flags). Every mask includes the
//! datapath word, as every OVN logical flow does; each mask has its own
//! priority, as flows of one shape in one stage usually do, so a hit on a
//! random rule probes about half the subtables and a miss probes them all.
//! Inputs are built once, outside `b.iter`; lookups cycle through 4096 keys
//! so that one key's cache lines don't flatter the numbers.

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use petrel_dataplane::flow::dpcls::{Classifier, Rule};
use petrel_dataplane::flow::emc::{hash_words, Emc};
use petrel_dataplane::flow::FlowKey;

const W: usize = FlowKey::WORDS + 4;
/// The metadata word holding the logical datapath.
const DATAPATH: usize = FlowKey::WORDS;
type Key = [u64; W];

const N_RULES: usize = 100_000;
const N_KEYS: usize = 4096;

/// splitmix64: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("n fits usize")
    }

    fn key(&mut self) -> Key {
        let mut k = [0; W];
        k.iter_mut().for_each(|w| *w = self.next());
        k
    }
}

/// `n` distinct masks: the datapath plus 1–3 other words, whole or partial
/// (prefixes, halves, one field of a packed word).
fn masks(n: usize, rng: &mut Rng) -> Vec<Key> {
    const PATTERNS: [u64; 6] =
        [u64::MAX, 0xffff_ffff_0000_0000, 0x0000_0000_ffff_ffff, 0xffff, 0xff00_0000_0000_0000, 0xffff_ff00];
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut m = [0u64; W];
        m[DATAPATH] = 0xff_ffff;
        for _ in 0..1 + rng.below(3) {
            m[rng.below(W)] |= PATTERNS[rng.below(PATTERNS.len())];
        }
        if seen.insert(m) {
            out.push(m);
        }
    }
    out
}

/// A classifier of `N_RULES` rules over `n_masks` masks, and the rules.
fn classifier(n_masks: usize) -> (Classifier<W, u32>, Vec<Rule<W>>) {
    let mut rng = Rng(n_masks as u64);
    let masks = masks(n_masks, &mut rng);
    let priorities: Vec<u32> = (0..n_masks).map(|_| u32::try_from(rng.below(1 << 16)).expect("< 2^16")).collect();
    let mut c = Classifier::new();
    let mut rules = Vec::with_capacity(N_RULES);
    for i in 0..N_RULES {
        let k = i % n_masks;
        let r = Rule::new(rng.key(), masks[k], priorities[k]);
        c.insert(r, u32::try_from(i).expect("< 2^32"));
        rules.push(r);
    }
    (c, rules)
}

/// Keys that hit random rules (random bits outside the rule's mask).
fn hit_keys(rules: &[Rule<W>], rng: &mut Rng) -> Vec<Key> {
    (0..N_KEYS)
        .map(|_| {
            let r = &rules[rng.below(rules.len())];
            let mut k = rng.key();
            for ((k, v), m) in k.iter_mut().zip(&r.value).zip(&r.mask) {
                *k = v | (*k & !m);
            }
            k
        })
        .collect()
}

fn miss_keys(rng: &mut Rng) -> Vec<Key> {
    (0..N_KEYS).map(|_| rng.key()).collect()
}

fn bench_lookup(c: &mut Criterion, n_masks: usize) {
    let (cls, rules) = classifier(n_masks);
    assert_eq!(cls.n_subtables(), n_masks);
    let mut rng = Rng(7);
    let hits = hit_keys(&rules, &mut rng);
    let misses = miss_keys(&mut rng);
    assert!(hits.iter().all(|k| cls.lookup(k).is_some()));
    assert!(misses.iter().all(|k| cls.lookup(k).is_none()));
    let mean_probes = hits.iter().map(|k| f64::from(cls.lookup_traced(k).1)).sum::<f64>() / N_KEYS as f64;
    eprintln!("dpcls {n_masks} masks: {mean_probes:.1} subtables probed per hit on average");

    for (case, keys) in [("hit", &hits), ("miss", &misses)] {
        let mut i = 0;
        c.bench_function(
            &format!("dpcls::lookup_{n_masks}_mask{}_100k_rules/{case}", if n_masks == 1 { "" } else { "s" }),
            |b| {
                b.iter(|| {
                    i = (i + 1) % N_KEYS;
                    black_box(cls.lookup(black_box(&keys[i])))
                })
            },
        );
    }
}

fn dpcls_lookup(c: &mut Criterion) {
    for n_masks in [1, 10, 100] {
        bench_lookup(c, n_masks);
    }
}

fn dpcls_batch(c: &mut Criterion) {
    const BATCH: usize = 32;
    let (cls, rules) = classifier(10);
    let keys = hit_keys(&rules, &mut Rng(9));
    let mut out = [None; BATCH];
    let mut i = 0;
    let mut g = c.benchmark_group("dpcls::lookup_batch_32_10_masks");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + BATCH) % N_KEYS;
            black_box(cls.lookup_batch(black_box(&keys[i..i + BATCH]), u64::MAX, &mut out))
        })
    });
    g.finish();
    // The same keys one by one, for the batch's gain.
    let mut i = 0;
    let mut g = c.benchmark_group("dpcls::lookup_single_32_10_masks");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + BATCH) % N_KEYS;
            for k in &keys[i..i + BATCH] {
                black_box(cls.lookup(black_box(k)));
            }
        })
    });
    g.finish();
}

/// Control-path costs the table runtime pays: a copy-on-write clone of a
/// 100k-rule stage, and one insert + remove in it.
fn dpcls_update(c: &mut Criterion) {
    let t = std::time::Instant::now();
    let (mut cls, rules) = classifier(10);
    eprintln!("dpcls 10 masks: built 100k rules in {:?}", t.elapsed());
    let mut g = c.benchmark_group("dpcls::clone_10_masks_100k_rules");
    g.sample_size(10);
    g.bench_function("clone", |b| b.iter(|| black_box(cls.clone())));
    g.finish();
    let mut i = 0;
    c.bench_function("dpcls::insert_remove_10_masks_100k_rules", |b| {
        b.iter(|| {
            i = (i + 1) % rules.len();
            let id = cls.insert(rules[i], 0);
            black_box(cls.remove(id))
        })
    });
}

fn emc(c: &mut Criterion) {
    let mut rng = Rng(11);
    let mut cache: Emc<W, u32> = Emc::default();
    // Half the EMC's size, so most keys find a free way.
    let keys: Vec<Key> = (0..N_KEYS).map(|_| rng.key()).collect();
    let hashes: Vec<u32> = keys.iter().map(hash_words).collect();
    for (i, (k, &h)) in keys.iter().zip(&hashes).enumerate() {
        cache.insert(k, h, 1, u32::try_from(i).expect("< 2^32"));
    }
    let present: Vec<(Key, u32)> =
        keys.iter().zip(&hashes).filter(|(k, &h)| cache.lookup(k, h, 1).is_some()).map(|(k, &h)| (*k, h)).collect();
    let absent: Vec<(Key, u32)> = (0..N_KEYS)
        .map(|_| {
            let k = rng.key();
            (k, hash_words(&k))
        })
        .collect();

    for (case, set) in [("hit", &present), ("miss", &absent)] {
        let mut i = 0;
        c.bench_function(&format!("emc::{case}"), |b| {
            b.iter(|| {
                i = (i + 1) % set.len();
                let (k, h) = &set[i];
                black_box(cache.lookup(black_box(k), *h, 1))
            })
        });
    }
    let mut i = 0;
    c.bench_function("emc::hash_words_22", |b| {
        b.iter(|| {
            i = (i + 1) % N_KEYS;
            black_box(hash_words(black_box(&keys[i])))
        })
    });
}

criterion_group!(benches, dpcls_lookup, dpcls_batch, dpcls_update, emc);
criterion_main!(benches);
