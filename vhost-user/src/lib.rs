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
//! PMDs only call [`Port::dequeue`] and [`Port::enqueue`], which never block,
//! allocate, lock or make a syscall other than a throttled eventfd write.
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
    /// Counters.
    pub counters: PortCounters,
}

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
        match r {
            Ok(n) => n,
            Err(v) => {
                self.violated(&mut ring, v);
                0
            }
        }
    }
}
