//! Petrel's vhost-user backend (the virtio-net device side), poll mode.
//!
//! - [`memory`]: guest memory from `SET_MEM_TABLE`, mapped, with checked
//!   translation of guest physical and frontend virtual addresses;
//! - [`virtq`]: split virtqueues: the hand-written fast path (dequeue into
//!   packet buffers, enqueue into mergeable receive buffers) that validates
//!   everything the guest wrote, and [`virtq::guard::Guarded`], the lock-free
//!   hand-over of a ring between its PMD and the management thread;
//! - [`device`]: the protocol (rust-vmm `vhost` parses and validates the
//!   messages and passes fds; we check their meaning and drive the rings);
//! - [`backend`]: the management thread's event loop: server sockets
//!   (we listen, the pod connects) and client sockets (the pod listens, we
//!   connect and reconnect), one connection per port, disconnect on any
//!   violation.
//!
//! Threads: protocol messages are handled only on the management thread;
//! PMDs only call [`Port::dequeue`], [`Port::enqueue`] and
//! [`Port::flush_owed_call`], which never block, allocate, lock or make a
//! syscall other than a throttled eventfd write.
//!
//! `unsafe` is allowed only in `memory` and `virtq` (STYLE.md).
#![deny(unsafe_code)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("petrel-vhost-user needs a 64-bit target (guest addresses are used as host offsets)");

pub mod backend;
pub mod device;
#[allow(unsafe_code)]
pub mod memory;
#[allow(unsafe_code)]
pub mod virtq;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use virtq::guard::Guarded;
use virtq::{Violation, Vring, VringCounters};

/// A packet buffer the fast path copies into (dequeue) or out of (enqueue);
/// an mbuf in `petreld`.
pub trait PktBuf {
    /// The whole writable room from the first data byte (dequeue copies here).
    fn room(&mut self) -> &mut [u8];
    /// Sets the packet length after a dequeue (`len <= room().len()`).
    fn set_len(&mut self, len: usize);
    /// The packet bytes (enqueue copies these).
    fn data(&self) -> &[u8];
}

/// Connection state of a port, as [`Port::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PortState {
    /// Waiting for the pod (server mode) or trying to connect (client mode).
    Waiting = 0,
    /// A frontend is connected.
    Connected = 1,
}

/// Counters of a port, readable from any thread.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Connections accepted or made.
    pub connects: AtomicU64,
    /// Connections closed (by the peer, by an error or by a violation).
    pub disconnects: AtomicU64,
    /// Disconnects because the guest broke the virtqueue or protocol rules.
    pub violations: AtomicU64,
    /// Packets dropped by the vrings (too long, too short), published by the PMDs.
    pub dropped: AtomicU64,
    /// Interrupts signalled to the guest (call eventfd writes), published by the PMDs.
    pub calls: AtomicU64,
}

/// One vhost-user port as PMDs and the management thread share it.
///
/// Vring `2q` is the guest's receive queue of pair `q` (we enqueue), `2q + 1`
/// its transmit queue (we dequeue).
#[derive(Debug)]
pub struct Port {
    name: String,
    n_qp: u16,
    vrings: Box<[Guarded<Vring>]>,
    /// Set by a PMD that met a violation: the manager disconnects.
    broken: AtomicBool,
    last_violation: AtomicU8,
    state: AtomicU8,
    /// Per queue pair: an interrupt the guest's receive ring may still be
    /// owed ([`Port::flush_owed_call`]).
    owed: Box<[OwedCall]>,
    /// TSC ticks between two interrupts of one ring (as the rings use).
    call_interval: AtomicU64,
    /// Counters.
    pub counters: PortCounters,
}

/// [`OwedCall`]: an enqueue published used entries; no idle check yet.
const OWED_UNCHECKED: u64 = u64::MAX;

/// 0: nothing owed; [`OWED_UNCHECKED`]; else the TSC of the first idle
/// check. Aligned so that PMDs owning different queue pairs never share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct OwedCall(AtomicU64);

impl Port {
    /// A port with `n_qp` queue pairs (1..=128), not connected.
    ///
    /// # Panics
    /// If `n_qp` is 0 or above 128.
    pub fn new(name: &str, n_qp: u16) -> Self {
        assert!((1..=128).contains(&n_qp), "queue pairs must be 1..=128");
        Port {
            name: name.to_owned(),
            n_qp,
            vrings: (0..2 * n_qp).map(|_| Guarded::new(Vring::default())).collect(),
            broken: AtomicBool::new(false),
            last_violation: AtomicU8::new(0),
            state: AtomicU8::new(PortState::Waiting as u8),
            owed: (0..n_qp).map(|_| OwedCall::default()).collect(),
            call_interval: AtomicU64::new(0),
            counters: PortCounters::default(),
        }
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of queue pairs.
    pub fn n_qp(&self) -> u16 {
        self.n_qp
    }

    /// Connection state.
    pub fn state(&self) -> PortState {
        if self.state.load(Ordering::Relaxed) == PortState::Connected as u8 {
            PortState::Connected
        } else {
            PortState::Waiting
        }
    }

    pub(crate) fn set_state(&self, s: PortState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_call_interval(&self, ticks: u64) {
        self.call_interval.store(ticks, Ordering::Relaxed);
    }

    pub(crate) fn vring(&self, i: usize) -> &Guarded<Vring> {
        &self.vrings[i]
    }

    pub(crate) fn n_vrings(&self) -> usize {
        self.vrings.len()
    }

    pub(crate) fn take_broken(&self) -> Option<u8> {
        self.broken.swap(false, Ordering::AcqRel).then(|| self.last_violation.load(Ordering::Relaxed))
    }

    #[cold]
    fn violated(&self, ring: &mut Vring, v: Violation) {
        ring.broken = true;
        self.last_violation.store(v.code(), Ordering::Relaxed);
        self.broken.store(true, Ordering::Release);
    }

    /// Adds what the ring counted since `before` to the port's counters.
    #[inline]
    fn publish(&self, before: VringCounters, ring: &Vring) {
        let d = ring.counters.dropped - before.dropped;
        if d > 0 {
            let c = &self.counters.dropped;
            c.store(c.load(Ordering::Relaxed) + d, Ordering::Relaxed);
        }
        // At most one per ring per call interval: a locked add is cheap here,
        // and two PMDs may publish for different rings of the port at once.
        let calls = ring.counters.calls - before.calls;
        if calls > 0 {
            self.counters.calls.fetch_add(calls, Ordering::Relaxed);
        }
    }

    /// PMD: takes up to `bufs.len()` packets the guest sent on queue pair
    /// `qp` (see [`Vring::dequeue`]). Returns 0 when the ring is not live, is
    /// being changed, or broke.
    #[inline]
    pub fn dequeue<B: PktBuf>(
        &self,
        qp: usize,
        bufs: &mut [Option<B>],
        alloc: impl FnOnce(&mut [Option<B>]) -> bool,
    ) -> usize {
        let Some(g) = self.vrings.get(2 * qp + 1) else { return 0 };
        let Some(mut ring) = g.enter() else { return 0 };
        if ring.broken {
            return 0;
        }
        let before = ring.counters;
        let r = ring.dequeue(bufs, alloc);
        self.publish(before, &ring);
        match r {
            Ok(n) => n,
            Err(v) => {
                self.violated(&mut ring, v);
                0
            }
        }
    }

    /// PMD: gives packets to the guest on queue pair `qp` (see
    /// [`Vring::enqueue`]); returns how many leading packets were consumed.
    #[inline]
    pub fn enqueue<B: PktBuf>(&self, qp: usize, pkts: &[Option<B>]) -> usize {
        let Some(g) = self.vrings.get(2 * qp) else { return 0 };
        let Some(mut ring) = g.enter() else { return 0 };
        if ring.broken {
            return 0;
        }
        let before = ring.counters;
        let r = ring.enqueue(pkts);
        self.publish(before, &ring);
        if ring.counters.packets != before.packets || ring.counters.dropped != before.dropped {
            // Used entries were published; their interrupt may have been
            // throttled (deferred to the ring's next enqueue).
            if let Some(o) = self.owed.get(qp) {
                o.0.store(OWED_UNCHECKED, Ordering::Relaxed);
            }
        }
        match r {
            Ok(n) => n,
            Err(v) => {
                self.violated(&mut ring, v);
                0
            }
        }
    }

    /// PMD, on every poll for each queue pair it transmits on whose batch
    /// is empty: signals the interrupt an earlier [`Port::enqueue`] may have
    /// left pending. `clock` reads the TSC; it is called only when something
    /// may be owed, which costs one relaxed load to find out.
    ///
    /// A ring throttles its interrupts: a used-ring update within the call
    /// interval of its previous interrupt only marks one pending, signalled
    /// at the start of the ring's next dequeue or enqueue. The guest's
    /// receive ring is enqueued to only when packets come for it, so after
    /// the last packet of a burst nothing else would signal it, and a guest
    /// that sleeps until interrupted (a kernel virtio-net driver) would not
    /// see those packets until more arrive.
    ///
    /// The first check after an enqueue only notes the time (it follows the
    /// enqueue, so the ring's last interrupt is older). Once a full interval
    /// has passed since then, the ring's throttle has expired too: one check
    /// enters the ring and signals what is pending, if anything (nothing when
    /// the guest asked for no interrupt, or there is no eventfd), and the
    /// debt is settled. So a held-back interrupt goes at most one interval
    /// after its packets, and the ring is entered once per enqueue, not on
    /// every poll.
    #[inline]
    pub fn flush_owed_call(&self, qp: usize, clock: impl FnOnce() -> u64) {
        let Some(owed) = self.owed.get(qp) else { return };
        let first = owed.0.load(Ordering::Relaxed);
        if first == 0 {
            return;
        }
        let now = clock();
        if first == OWED_UNCHECKED {
            owed.0.store(now.clamp(1, OWED_UNCHECKED - 1), Ordering::Relaxed);
            return;
        }
        if now.wrapping_sub(first) < self.call_interval.load(Ordering::Relaxed) {
            return;
        }
        let Some(g) = self.vrings.get(2 * qp) else { return };
        // Busy or not live: try again on the next poll.
        let Some(mut ring) = g.enter() else { return };
        let before = ring.counters;
        ring.flush_call();
        self.publish(before, &ring);
        owed.0.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use rustix::event::{eventfd, EventfdFlags};

    use super::*;
    use crate::virtq::testing::{tsc, MockGuest, VecBuf, AVAIL, BUFS, DESC, USED};
    use crate::virtq::{RingAddrs, RingFeatures, AVAIL_F_NO_INTERRUPT, DESC_F_WRITE, NET_HDR_LEN};

    /// How many interrupts the eventfd holds (and resets it).
    fn take(efd: &std::os::fd::OwnedFd) -> u64 {
        let mut b = [0u8; 8];
        match rustix::io::read(efd, &mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    }

    /// A throttled interrupt on the guest's receive ring is signalled by the
    /// idle check, not left until more packets come; when the guest wants
    /// none, the check settles after one interval without signalling.
    #[test]
    fn test_throttled_call_is_flushed_when_idle() {
        // ~25-50 ms: long enough that two enqueues in a row fall within it.
        const INTERVAL: u64 = 100_000_000;
        let mut g = MockGuest::new(64);
        let port = Port::new("t", 1);
        port.set_call_interval(INTERVAL);
        let efd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).expect("eventfd");
        {
            let mut q = port.vring(0).quiesce();
            q.set_call_interval(INTERVAL);
            let feat = RingFeatures { hdr_len: NET_HDR_LEN, mergeable: true, indirect: false };
            let addrs = RingAddrs { desc: DESC, avail: AVAIL, used: USED };
            q.activate(&g.mem, 64, addrs, 0, feat, efd.as_raw_fd()).expect("activate");
            q.resume();
        }
        for i in 0..8u16 {
            g.set_desc(i, BUFS + 0x1000 * u64::from(i), 2048, DESC_F_WRITE, 0);
            g.push_avail(i);
        }
        let pkt = [Some(VecBuf::from_data(&[0x42; 60]))];
        let calls = || port.counters.calls.load(Ordering::Relaxed);
        let owed = || port.owed[0].0.load(Ordering::Relaxed);

        // The first packet interrupts at once; the second, within the
        // interval, only marks one pending.
        assert_eq!(port.enqueue(0, &pkt), 1);
        assert_eq!((calls(), take(&efd)), (1, 1));
        assert_eq!(port.enqueue(0, &pkt), 1);
        assert_eq!(g.used_idx(), 2);
        assert_eq!((calls(), take(&efd)), (1, 0), "the second interrupt is throttled");
        assert_eq!(owed(), OWED_UNCHECKED);
        // No more packets come: the idle check signals it once the interval is over.
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls() == 1 {
            assert!(Instant::now() < deadline, "the throttled interrupt was never signalled");
            port.flush_owed_call(0, tsc);
        }
        assert_eq!((calls(), take(&efd)), (2, 1));
        assert_eq!(owed(), 0, "settled");
        port.flush_owed_call(0, || panic!("nothing owed: no clock, no ring"));

        // The guest turns interrupts off (NAPI polling): nothing is signalled,
        // and the check settles one interval after its first look.
        g.write(AVAIL, &AVAIL_F_NO_INTERRUPT.to_le_bytes());
        let t0 = tsc();
        while tsc().wrapping_sub(t0) < INTERVAL {} // out of the throttle window
        assert_eq!(port.enqueue(0, &pkt), 1);
        assert_eq!(owed(), OWED_UNCHECKED);
        port.flush_owed_call(0, tsc);
        let first = owed();
        assert!(first != 0 && first != OWED_UNCHECKED);
        while owed() != 0 {
            assert!(Instant::now() < deadline, "the check never settled");
            port.flush_owed_call(0, tsc);
        }
        assert!(tsc().wrapping_sub(first) >= INTERVAL);
        assert_eq!((calls(), take(&efd)), (2, 0), "no interrupt the guest did not want");
    }
}
