//! Poll-mode driver threads: pinned, busy-polling, run-to-completion.
//!
//! Each PMD owns some rx queues and one tx queue on every DPDK port, so no
//! queue is shared and the hot path takes no lock. Per iteration it receives
//! a burst of up to 32 per rx queue, runs every packet to completion through
//! [`fwd`], batches output per port, and flushes batches whose oldest packet
//! is older than the drain interval (0 = every iteration, as OVS by default).
//!
//! Nothing in `poll` allocates, locks, logs or makes a syscall: buffers are
//! fixed arrays made at setup; counters are published with relaxed stores.
//!
//! Load-based sleeping (`petreld --pmd-sleep-max`, off by default) follows
//! OVS's `pmd-maxsleep` (`lib/dpif-netdev.c`, `pmd_thread_main`): after a
//! poll in which no rx queue gave half a burst, the PMD sleeps one µs longer
//! than last time, up to the maximum; half a burst on any queue resets it.
//! The sleep (`nanosleep`, timer slack set to 1 µs as OVS does) happens
//! between polls and only when the PMD is lightly loaded, so a loaded PMD
//! never makes that syscall; its TSC time is counted apart (sleep cycles).
//!
//! Ports come and go at runtime (`petrelctl add-port`/`del-port`) as
//! [`PortUpdate`]s the control thread sends each PMD, like OVS's PMD reload:
//! a PMD looks for updates every [`UPDATE_EVERY`] polls (a lock-free
//! `try_recv`), applies them between polls and acknowledges each by
//! bumping its [`PmdLink::acked`] counter. The control thread waits for every
//! PMD's acknowledgement before it closes a removed port's device, and
//! before it reports an added port as polled.

pub mod features;
pub mod fwd;
pub mod learn;
pub mod mactable;
pub mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mbuf::{Burst, BURST};
use crate::port::{eal, QueueHandle};
use fwd::Engine;
use stats::{Counters, SharedStats};

/// How often (in polls) a busy PMD publishes its counters.
const PUBLISH_EVERY: u64 = 1024;

/// How often (in polls) a PMD looks for port updates.
pub const UPDATE_EVERY: u64 = 64;

/// Packets one rx queue must give in a poll to keep the PMD awake (half a
/// burst, as OVS's `PMD_SLEEP_THRESH`).
const SLEEP_THRESH: usize = BURST / 2;

/// Most ports (port slots) a petreld has, configured and added at runtime.
pub const MAX_PORTS: usize = 256;

/// A change to a PMD's ports, applied between polls.
#[derive(Debug)]
pub enum PortUpdate {
    /// Start using port slot `index`: send on `tx`, receive on `rx`.
    Attach {
        /// Port slot.
        index: usize,
        /// VLAN trunk tag of the port.
        vlan: Option<u16>,
        /// This PMD's transmit side of the port.
        tx: Option<QueueHandle>,
        /// Receive queues of the port this PMD polls.
        rx: Vec<QueueHandle>,
    },
    /// Stop using port slot `index` (its pending packets are sent first).
    Detach {
        /// Port slot.
        index: usize,
    },
}

/// The control thread's end of a PMD's update channel.
#[derive(Debug)]
pub struct PmdLink {
    tx: Sender<PortUpdate>,
    sent: u64,
    acked: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

/// The PMD's end.
#[derive(Debug)]
pub struct PmdUpdates {
    rx: Receiver<PortUpdate>,
    acked: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

/// A new update channel: the control side and the PMD side.
pub fn update_channel() -> (PmdLink, PmdUpdates) {
    let (tx, rx) = std::sync::mpsc::channel();
    let acked = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicBool::new(true));
    (PmdLink { tx, sent: 0, acked: Arc::clone(&acked), alive: Arc::clone(&alive) }, PmdUpdates { rx, acked, alive })
}

impl PmdLink {
    /// Queues an update for the PMD.
    ///
    /// # Errors
    /// If the PMD has exited.
    pub fn send(&mut self, u: PortUpdate) -> Result<(), String> {
        if !self.alive.load(Ordering::Acquire) {
            return Err("a PMD thread has exited".to_owned());
        }
        self.tx.send(u).map_err(|_| "a PMD thread has exited".to_owned())?;
        self.sent += 1;
        Ok(())
    }

    /// Waits until the PMD has applied everything sent so far.
    ///
    /// # Errors
    /// If it has not within `timeout`, or has exited.
    pub fn wait(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.acked.load(Ordering::Acquire) >= self.sent {
                return Ok(());
            }
            if !self.alive.load(Ordering::Acquire) {
                return Err("a PMD thread has exited".to_owned());
            }
            if Instant::now() >= deadline {
                return Err(format!("a PMD did not apply a port change within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for PmdUpdates {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

/// What one PMD thread needs, built by `petreld` before it spawns the thread.
#[derive(Debug)]
pub struct PmdSetup {
    /// PMD index (also its tx queue id on every port).
    pub index: usize,
    /// CPU to pin to.
    pub core: usize,
    /// Rx queues to poll: (plan port index, queue).
    pub rx: Vec<(usize, QueueHandle)>,
    /// The forwarding engine (owns the tx batches and MAC tables).
    pub engine: Engine,
    /// Where counters are published.
    pub stats: Arc<SharedStats>,
    /// Set by the main thread to stop.
    pub quit: Arc<AtomicBool>,
    /// Port changes from the control thread, if ports can change.
    pub updates: Option<PmdUpdates>,
    /// Longest load-based sleep per poll, µs (0: never sleep).
    pub sleep_max_us: u64,
}

/// Runs a PMD until `quit` is set; returns its final counters.
///
/// Pins the calling thread to `setup.core` and registers it with EAL (for
/// per-lcore mempool caches).
///
/// # Errors
/// If the thread cannot be pinned or registered.
pub fn run(mut setup: PmdSetup) -> Result<Counters, String> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: setup.core }) {
        return Err(format!("PMD {}: cannot pin to CPU {}", setup.index, setup.core));
    }
    eal::register_thread().map_err(|e| format!("PMD {}: {e}", setup.index))?;
    if setup.sleep_max_us > 0 {
        // nanosleep's default slack (50 µs) would make every short sleep long.
        eal::set_timer_slack(1000);
    }
    let mut burst: Burst<BURST> = Burst::default();
    let mut polls: u64 = 0;
    let mut dirty = false;
    let mut sleep_us: u64 = 0;
    while !setup.quit.load(Ordering::Relaxed) {
        let (got, fullest) = poll(&mut setup, &mut burst);
        polls += 1;
        if got > 0 {
            dirty = true;
        }
        if setup.sleep_max_us > 0 {
            if fullest >= SLEEP_THRESH {
                sleep_us = 0;
            }
            if sleep_us > 0 {
                if dirty {
                    // What the PMD counted so far is visible while it sleeps.
                    setup.stats.publish(setup.engine.counters());
                    dirty = false;
                }
                let t0 = eal::rdtsc();
                // Nothing waits in a tx batch while the PMD sleeps.
                setup.engine.flush_all(t0);
                std::thread::sleep(Duration::from_micros(sleep_us));
                setup.engine.add_sleep(eal::rdtsc().wrapping_sub(t0));
            }
            sleep_us = (sleep_us + 1).min(setup.sleep_max_us);
        }
        if dirty && (got == 0 || polls % PUBLISH_EVERY == 0) {
            setup.stats.publish(setup.engine.counters());
            dirty = false;
        }
        if polls % UPDATE_EVERY == 0 {
            apply_updates(&mut setup);
        }
    }
    setup.engine.flush_all(eal::rdtsc());
    setup.stats.publish(setup.engine.counters());
    let out = setup.engine.counters().clone();
    // Dropping the engine frees any packet still batched before we leave EAL.
    drop(setup);
    eal::unregister_thread();
    Ok(out)
}

/// Applies the port updates waiting, between polls.
///
/// Not the per-packet path: an attach may grow the rx list and a message's
/// buffers are freed here (reconfiguration, like OVS's PMD reload); the
/// engine's per-port state was reserved up front.
fn apply_updates(setup: &mut PmdSetup) {
    let Some(u) = &setup.updates else { return };
    let mut n = 0;
    while let Ok(msg) = u.rx.try_recv() {
        match msg {
            PortUpdate::Attach { index, vlan, tx, rx } => {
                // The control thread checked the slot; a refusal here would
                // be a bug there, and leaves the port unpolled by this PMD.
                if setup.engine.attach_port(index, vlan, tx).is_ok() {
                    setup.rx.extend(rx.into_iter().map(|q| (index, q)));
                }
            }
            PortUpdate::Detach { index } => {
                setup.rx.retain(|(p, _)| *p != index);
                drop(setup.engine.detach_port(index));
            }
        }
        n += 1;
    }
    if n > 0 {
        setup.stats.publish(setup.engine.counters());
        u.acked.fetch_add(n, Ordering::Release);
    }
}

/// One iteration over this PMD's rx queues; returns the packets received
/// and the most any one queue gave.
#[inline]
fn poll(setup: &mut PmdSetup, burst: &mut Burst<BURST>) -> (usize, usize) {
    let mut total = 0;
    let mut fullest = 0;
    for (port, q) in &setup.rx {
        let port = *port;
        let t0 = eal::rdtsc();
        let n = q.rx_burst(burst);
        if n == 0 {
            setup.engine.add_idle(eal::rdtsc().wrapping_sub(t0));
            continue;
        }
        setup.engine.process_burst(port, burst, t0);
        burst.clear();
        setup.engine.flush_due(t0);
        setup.engine.add_busy(eal::rdtsc().wrapping_sub(t0));
        total += n;
        fullest = fullest.max(n);
    }
    if total == 0 {
        // Nothing arrived: still drain batches whose timer expired.
        setup.engine.flush_due(eal::rdtsc());
    }
    (total, fullest)
}
