//! Per-packet cost of the QoS token bucket (criterion).
//!
//! Cases are named `module::case`. The clock is a counter advanced by a
//! fixed number of TSC ticks per packet (as a PMD stamps a burst), so each
//! iteration does the work of one packet in the fast path: refill, cost,
//! compare, take.
//!
//! - `qos::bucket_admit_conform`: a policer far above the offered rate
//!   (every packet passes: the cost a port pays for an unreachable limit);
//! - `qos::bucket_admit_police`: a policer far below it (almost every packet
//!   is refused);
//! - `qos::bucket_admit_same_tsc`: 32 packets per TSC value (one burst
//!   shares `now`, so the refill is skipped for all but the first);
//! - `qos::bucket_admit_pps`: a packet/s policer.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use petrel_dataplane::qos::{Bucket, Profile, Unit};

/// A 2.5 GHz TSC.
const HZ: u64 = 2_500_000_000;

fn bench(c: &mut Criterion) {
    let lens: Vec<u32> = (0..1024u32).map(|i| 64 + (i * 97) % 1451).collect();
    let cases = [
        ("qos::bucket_admit_conform", Profile::new(100_000_000_000, 1_000_000_000, Unit::Bits, HZ), 100, 1),
        ("qos::bucket_admit_police", Profile::new(1_000_000, 100_000, Unit::Bits, HZ), 100, 1),
        ("qos::bucket_admit_same_tsc", Profile::new(100_000_000_000, 1_000_000_000, Unit::Bits, HZ), 100, 32),
        ("qos::bucket_admit_pps", Profile::new(10_000_000, 1_000, Unit::Packets, HZ), 100, 1),
    ];
    for (name, p, ticks, per_tsc) in cases {
        let p = p.expect("valid profile");
        let mut b = Bucket::full(&p, 0);
        let mut now = 0u64;
        let mut i = 0usize;
        let mut passed = 0u64;
        c.bench_function(name, |bn| {
            bn.iter(|| {
                i = i.wrapping_add(1);
                if i % per_tsc == 0 {
                    now += ticks * per_tsc as u64;
                }
                let ok = b.admit(black_box(&p), black_box(now), lens[i % lens.len()]);
                passed += u64::from(ok);
                ok
            });
        });
        black_box(passed);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
