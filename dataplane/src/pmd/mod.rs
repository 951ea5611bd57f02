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

pub mod fwd;
pub mod learn;
pub mod mactable;
pub mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::mbuf::{Burst, BURST};
use crate::port::{eal, QueueHandle};
use fwd::Engine;
use stats::{Counters, SharedStats};

/// How often (in polls) a busy PMD publishes its counters.
const PUBLISH_EVERY: u64 = 1024;

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
    let mut burst: Burst<BURST> = Burst::default();
    let mut polls: u64 = 0;
    let mut dirty = false;
    while !setup.quit.load(Ordering::Relaxed) {
        let got = poll(&mut setup, &mut burst);
        polls += 1;
        if got > 0 {
            dirty = true;
        }
        if dirty && (got == 0 || polls % PUBLISH_EVERY == 0) {
            setup.stats.publish(setup.engine.counters());
            dirty = false;
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

/// One iteration over this PMD's rx queues; returns packets received.
#[inline]
fn poll(setup: &mut PmdSetup, burst: &mut Burst<BURST>) -> usize {
    let mut total = 0;
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
    }
    if total == 0 {
        // Nothing arrived: still drain batches whose timer expired.
        setup.engine.flush_due(eal::rdtsc());
    }
    total
}
