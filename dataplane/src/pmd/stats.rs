//! Counters a PMD keeps, and their published copy the main thread reads.
//!
//! The PMD counts into plain integers ([`Counters`]) and copies them to
//! [`SharedStats`] with relaxed atomic stores every few hundred polls and
//! when it goes idle: one writer per counter, so no read-modify-write and no
//! shared cache line is touched per packet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::drop::DropReason;

/// Per-port counters as seen by one PMD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets handed to the device.
    pub tx_packets: u64,
    /// Bytes handed to the device.
    pub tx_bytes: u64,
    /// Packets received on this port and dropped.
    pub drops: u64,
    /// Packets queued for this port that the device would not take (freed).
    pub tx_drops: u64,
}

/// A PMD's private counters.
#[derive(Debug, Clone)]
pub struct Counters {
    /// Per port, indexed like the plan's ports.
    pub ports: Vec<PortCounters>,
    /// Per drop reason.
    pub drops: [u64; DropReason::COUNT],
    /// TSC ticks spent in polls that received packets.
    pub busy_cycles: u64,
    /// TSC ticks spent in polls that received nothing.
    pub idle_cycles: u64,
    /// TSC ticks spent asleep (`--pmd-sleep-max`), neither busy nor idle.
    pub sleep_cycles: u64,
    /// Receive calls that returned at least one packet.
    pub rx_bursts: u64,
    /// Packets received over all ports.
    pub rx_packets: u64,
    /// Packets whose verdict came from the flow cache.
    pub cache_hits: u64,
    /// Packets that ran the pipeline.
    pub cache_misses: u64,
}

impl Counters {
    /// Zeroed counters for `n_ports` ports.
    pub fn new(n_ports: usize) -> Self {
        Counters {
            ports: vec![PortCounters::default(); n_ports],
            drops: [0; DropReason::COUNT],
            busy_cycles: 0,
            idle_cycles: 0,
            sleep_cycles: 0,
            rx_bursts: 0,
            rx_packets: 0,
            cache_hits: 0,
            cache_misses: 0,
        }
    }
}

#[derive(Debug, Default)]
struct SharedPort {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: AtomicU64,
    tx_drops: AtomicU64,
}

/// The published copy of one PMD's counters.
#[derive(Debug)]
pub struct SharedStats {
    ports: Box<[SharedPort]>,
    /// Port slots the PMD counts for (it grows as ports are added).
    n_ports: std::sync::atomic::AtomicUsize,
    drops: Box<[AtomicU64]>,
    busy_cycles: AtomicU64,
    idle_cycles: AtomicU64,
    sleep_cycles: AtomicU64,
    rx_bursts: AtomicU64,
    rx_packets: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    learn: std::sync::Arc<super::learn::LearnRing>,
    meters: std::sync::Arc<crate::qos::meter::MeterShared>,
}

impl SharedStats {
    /// The PMD's MAC-learning ring.
    pub fn learn(&self) -> std::sync::Arc<super::learn::LearnRing> {
        std::sync::Arc::clone(&self.learn)
    }

    /// The PMD's published meter counters.
    pub fn meters(&self) -> std::sync::Arc<crate::qos::meter::MeterShared> {
        std::sync::Arc::clone(&self.meters)
    }

    /// Zeroed shared counters for `n_ports` ports, with room for ports
    /// added later up to [`super::MAX_PORTS`].
    pub fn new(n_ports: usize) -> Self {
        let cap = n_ports.max(super::MAX_PORTS);
        SharedStats {
            ports: (0..cap).map(|_| SharedPort::default()).collect(),
            n_ports: std::sync::atomic::AtomicUsize::new(n_ports),
            drops: (0..DropReason::COUNT).map(|_| AtomicU64::new(0)).collect(),
            busy_cycles: AtomicU64::new(0),
            idle_cycles: AtomicU64::new(0),
            sleep_cycles: AtomicU64::new(0),
            rx_bursts: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            learn: std::sync::Arc::default(),
            meters: std::sync::Arc::default(),
        }
    }

    /// Publishes `c` (called only by the owning PMD).
    pub fn publish(&self, c: &Counters) {
        self.n_ports.store(c.ports.len().min(self.ports.len()), Relaxed);
        for (s, p) in self.ports.iter().zip(&c.ports) {
            s.rx_packets.store(p.rx_packets, Relaxed);
            s.rx_bytes.store(p.rx_bytes, Relaxed);
            s.tx_packets.store(p.tx_packets, Relaxed);
            s.tx_bytes.store(p.tx_bytes, Relaxed);
            s.drops.store(p.drops, Relaxed);
            s.tx_drops.store(p.tx_drops, Relaxed);
        }
        for (s, d) in self.drops.iter().zip(&c.drops) {
            s.store(*d, Relaxed);
        }
        self.busy_cycles.store(c.busy_cycles, Relaxed);
        self.idle_cycles.store(c.idle_cycles, Relaxed);
        self.sleep_cycles.store(c.sleep_cycles, Relaxed);
        self.rx_bursts.store(c.rx_bursts, Relaxed);
        self.rx_packets.store(c.rx_packets, Relaxed);
        self.cache_hits.store(c.cache_hits, Relaxed);
        self.cache_misses.store(c.cache_misses, Relaxed);
    }

    /// A snapshot of the published counters.
    pub fn snapshot(&self) -> Counters {
        let mut c = Counters::new(self.n_ports.load(Relaxed));
        for (p, s) in c.ports.iter_mut().zip(self.ports.iter()) {
            *p = PortCounters {
                rx_packets: s.rx_packets.load(Relaxed),
                rx_bytes: s.rx_bytes.load(Relaxed),
                tx_packets: s.tx_packets.load(Relaxed),
                tx_bytes: s.tx_bytes.load(Relaxed),
                drops: s.drops.load(Relaxed),
                tx_drops: s.tx_drops.load(Relaxed),
            };
        }
        for (d, s) in c.drops.iter_mut().zip(self.drops.iter()) {
            *d = s.load(Relaxed);
        }
        c.busy_cycles = self.busy_cycles.load(Relaxed);
        c.idle_cycles = self.idle_cycles.load(Relaxed);
        c.sleep_cycles = self.sleep_cycles.load(Relaxed);
        c.rx_bursts = self.rx_bursts.load(Relaxed);
        c.rx_packets = self.rx_packets.load(Relaxed);
        c.cache_hits = self.cache_hits.load(Relaxed);
        c.cache_misses = self.cache_misses.load(Relaxed);
        c
    }
}

/// Sums several PMDs' counters.
pub fn sum(all: &[Counters]) -> Counters {
    let n = all.iter().map(|c| c.ports.len()).max().unwrap_or(0);
    let mut t = Counters::new(n);
    for c in all {
        for (tp, p) in t.ports.iter_mut().zip(&c.ports) {
            tp.rx_packets += p.rx_packets;
            tp.rx_bytes += p.rx_bytes;
            tp.tx_packets += p.tx_packets;
            tp.tx_bytes += p.tx_bytes;
            tp.drops += p.drops;
            tp.tx_drops += p.tx_drops;
        }
        for (td, d) in t.drops.iter_mut().zip(&c.drops) {
            *td += d;
        }
        t.busy_cycles += c.busy_cycles;
        t.idle_cycles += c.idle_cycles;
        t.sleep_cycles += c.sleep_cycles;
        t.rx_bursts += c.rx_bursts;
        t.rx_packets += c.rx_packets;
        t.cache_hits += c.cache_hits;
        t.cache_misses += c.cache_misses;
    }
    t
}
