//! Per-packet costs of the table runtime (criterion): the per-PMD flow
//! cache in front of the pipelines, and a walk through the pipelines when
//! the cache misses.
//!
//! The tables are a logical wire between two local ports through an
//! N-stage ingress pipeline (as `dataplane/examples/bench_tables.rs` builds
//! for `scripts/bench-null.sh`): each stage matches the logical inport and
//! the Ethernet source, has a rule keyed on a register and a priority-0
//! default, so the classifier of each stage has three subtables, and the
//! egress pipeline has one stage. Keys are extracted from real frames once,
//! outside `b.iter`; lookups cycle through 1024 flows.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::flow::{extract, FlowKey};
use petrel_dataplane::table::cache::{FlowCache, Verdict};
use petrel_dataplane::table::exec::{run_from_port, NoTrace, Outcome};
use petrel_dataplane::table::{
    Action, Binding, Datapath, Field, LocalPort, Pipeline, Rule, Snapshot, Stage, REG_INPORT, REG_OUTPORT,
};

const N_FLOWS: usize = 1024;
/// The PMD's flow cache size (`pmd/`), so hits and misses behave as there.
const CACHE_ENTRIES: usize = 8192;

/// A wire between local ports 0 and 1 (logical ports 1 and 2) through
/// `n` ingress stages.
fn wire(n: u16) -> Snapshot {
    let inport = |p: u32| (Field::Reg(u8::try_from(REG_INPORT).expect("register index")), u128::from(p), 0xffff_ffff);
    let outport = Field::Reg(u8::try_from(REG_OUTPORT).expect("register index"));
    let mut stages = Vec::new();
    for i in 0..n {
        let last = i + 1 == n;
        let pass = |out: u32| {
            if last {
                vec![Action::Set { field: outport, value: u128::from(out), mask: 0xffff_ffff }, Action::Output]
            } else {
                vec![Action::Set { field: Field::Reg(0), value: u128::from(i), mask: 0xffff }, Action::Next(i + 1)]
            }
        };
        let src = |mac: u128| (Field::EthSrc, mac, 0xffff_ffff_ffff);
        let rules = vec![
            Rule::new(100, &[inport(1), src(0x0200_0000_000a)], pass(2), u64::from(i) << 8 | 1),
            Rule::new(100, &[inport(2), src(0x0200_0000_000b)], pass(1), u64::from(i) << 8 | 2),
            Rule::new(
                50,
                &[(Field::Reg(1), 0xdead, 0xffff)],
                vec![Action::Drop(DropReason::Explicit)],
                u64::from(i) << 8 | 3,
            ),
            Rule::new(0, &[], vec![Action::Drop(DropReason::Explicit)], u64::from(i) << 8),
        ];
        stages.push(Arc::new(Stage::new(format!("stage{i}"), rules)));
    }
    let egress =
        Pipeline { stages: vec![Arc::new(Stage::new("out", vec![Rule::new(0, &[], vec![Action::Output], 0xff)]))] };
    let ports =
        BTreeMap::from([(1, Binding::Local { port: 0, vlan: None }), (2, Binding::Local { port: 1, vlan: None })]);
    let dp = Datapath {
        key: 1,
        name: format!("wire{n}"),
        ingress: Pipeline { stages },
        egress,
        ports,
        ..Datapath::default()
    };
    let snap = Snapshot {
        meters: Vec::new(),
        vlan_ports: BTreeMap::default(),
        generation: 1,
        datapaths: BTreeMap::from([(1, Arc::new(dp))]),
        local_ports: vec![Some(LocalPort { datapath: 1, port: 1 }), Some(LocalPort { datapath: 1, port: 2 })],
        chassis: vec![],
    };
    snap.validate().expect("the bench snapshot is valid");
    snap
}

/// Flow keys of 64-byte UDP frames from 02:00:00:00:00:0a, one per
/// destination address.
fn keys() -> Vec<FlowKey> {
    (0..N_FLOWS)
        .map(|i| {
            #[rustfmt::skip]
            let mut f = vec![
                // Ethernet: 02:..:0b <- 02:..:0a, IPv4
                0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00,
                // IPv4: 20 bytes, total 46, DF, TTL 64, UDP, checksum 0, 10.0.0.1 -> 10.1.x.y
                0x45, 0, 0, 46, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 0,
                // UDP: 50000 -> 9, length 26, checksum 0
                0xc3, 0x50, 0, 9, 0, 26, 0, 0,
            ];
            f[32] = u8::try_from(i >> 8).expect("< 2^16 flows");
            f[33] = u8::try_from(i & 0xff).expect("a byte");
            f.resize(64, 0);
            let mut k = FlowKey::default();
            extract(&f, 0, &mut k).expect("valid frame");
            k
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let keys = keys();
    let mut out = Outcome::default();
    for n in [1u16, 10] {
        let snap = wire(n);
        run_from_port(&snap, 0, &keys[0], &mut out, &mut NoTrace);
        assert_eq!(out.emits().len(), 1, "the wire forwards");
        let mut i = 0;
        c.bench_function(&format!("table::pipeline_{n}_stages"), |b| {
            b.iter(|| {
                i = (i + 1) % N_FLOWS;
                run_from_port(black_box(&snap), 0, black_box(&keys[i]), &mut out, &mut NoTrace);
                black_box(out.emits().len())
            })
        });
    }
}

fn flow_cache(c: &mut Criterion) {
    let keys = keys();
    let snap = wire(10);
    let mut out = Outcome::default();
    let mut cache = FlowCache::new(CACHE_ENTRIES);
    for k in &keys {
        run_from_port(&snap, 0, k, &mut out, &mut NoTrace);
        cache.insert(k, snap.generation, Verdict::of(&out, k).expect("a wire's verdict is cacheable"));
    }
    // The cache is set-associative: a few keys may have lost their way.
    let keys: Vec<FlowKey> = keys.into_iter().filter(|k| cache.lookup(k, snap.generation).is_some()).collect();
    assert!(keys.len() > N_FLOWS * 9 / 10, "most flows are cached ({} of {N_FLOWS})", keys.len());
    let n = keys.len();
    for (case, generation) in [("hit", snap.generation), ("miss_new_generation", snap.generation + 1)] {
        let mut i = 0;
        c.bench_function(&format!("table::flow_cache_{case}"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(cache.lookup(black_box(&keys[i]), generation).map(|v| v.emits().len()))
            })
        });
    }
    // What a PMD does per packet of a burst on a hit: hash, lookup, read
    // the verdict; 32 at a time.
    const BURST: usize = 32;
    let mut g = c.benchmark_group("table::flow_cache_burst_32");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut i = 0;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + BURST) % (n - BURST);
            let mut emits = 0;
            for k in &keys[i..i + BURST] {
                emits += cache.lookup(black_box(k), snap.generation).map_or(0, |v| v.emits().len());
            }
            black_box(emits)
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline, flow_cache);
criterion_main!(benches);
