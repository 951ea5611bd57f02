//! vhost-user ports as PMDs see them: a queue pair of a
//! [`petrel_vhost_user::Port`] behind the same burst interface as an ethdev.
//!
//! Receive dequeues what the guest transmitted into mbufs taken from the
//! pool in one bulk allocation (only as many as the guest has packets);
//! transmit copies mbufs into the guest's receive buffers and frees them in
//! one bulk free. Neither blocks: a ring being reconfigured by the
//! management thread, or used by another PMD, simply yields nothing this
//! poll (transmit then counts the packets as `tx_full` drops, as a full
//! ethdev queue would).

use std::sync::Arc;

use petrel_vhost_user::Port;

use crate::mbuf::{Burst, Mempool};

/// One PMD's access to a vhost-user port.
#[derive(Debug, Clone)]
pub struct VhostQueue {
    port: Arc<Port>,
    pool: Arc<Mempool>,
    rxq: Option<u16>,
    txq: u16,
}

impl VhostQueue {
    /// Receive on queue pair `rxq` (if any) and send on queue pair
    /// `txq % queue pairs`, taking mbufs from `pool`.
    pub fn new(port: Arc<Port>, pool: Arc<Mempool>, rxq: Option<u16>, txq: u16) -> Self {
        let txq = txq % port.n_qp();
        VhostQueue { port, pool, rxq, txq }
    }

    /// See [`super::QueueHandle::rx_burst`].
    #[inline]
    pub fn rx_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        let Some(q) = self.rxq else { return 0 };
        let pool = &self.pool;
        burst.fill_with(|slots| self.port.dequeue(usize::from(q), slots, |s| pool.alloc_bulk(s)))
    }

    /// See [`super::QueueHandle::tx_burst`].
    #[inline]
    pub fn tx_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let n = self.port.enqueue(usize::from(self.txq), burst.slots());
        burst.free_front(n);
        n
    }

    /// See [`super::QueueHandle::tx_idle`]: signals an interrupt a
    /// throttled enqueue left pending (one relaxed load when none is).
    #[inline]
    pub fn tx_idle(&self) {
        self.port.flush_owed_call(usize::from(self.txq), super::eal::rdtsc);
    }
}
