//! DPDK ethdev ports opened from devargs, and the EAL they need.
//!
//! A port is probed at runtime from a devargs string (`net_pcap0,rx_pcap=…`,
//! `net_null0`, `net_af_xdp0,iface=veth0`, a PCI address …), configured with
//! one rx queue per PMD that polls it and one tx queue per PMD (each PMD owns
//! its tx queue, so transmit needs no lock), started, and stopped and closed
//! (then detached) on drop.

pub mod eal;
pub mod vhost;

use std::ffi::CString;
use std::fmt;

use dpdk_sys as sys;

use crate::mbuf::{Burst, Mempool};
use eal::strerror;

/// Errors of port setup.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum PortError {
    /// port {0}: devargs {1:?} contain a NUL byte
    BadDevargs(String, String),
    /// port {0}: probing device {1:?} failed: {2}
    Probe(String, String, String),
    /// port {0}: device {1:?} was probed but has no ethdev port
    NoEthdev(String, String),
    /// port {0}: {1} failed: {2}
    Setup(String, &'static str, String),
    /// port {0}: needs {1} tx queues (one per PMD), the device supports only {2}
    TooFewTxQueues(String, u16, u16),
    /// port {0}: needs {1} rx queues, the device supports only {2}
    TooFewRxQueues(String, u16, u16),
}

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConf {
    /// Petrel's name for the port (used in messages and stats).
    pub name: String,
    /// DPDK devargs: device name, then `,key=value` options.
    pub devargs: String,
    /// Receive queues.
    pub n_rxq: u16,
    /// Transmit queues.
    pub n_txq: u16,
    /// Ring sizes (adjusted to what the device allows).
    pub n_rxd: u16,
    /// Ring sizes (adjusted to what the device allows).
    pub n_txd: u16,
}

/// An open, started ethdev port.
pub struct EthPort {
    name: String,
    dev_name: String,
    port_id: u16,
    mac: [u8; 6],
    n_rxq: u16,
    n_txq: u16,
    /// The underlying rte_device, removed (detached) after close.
    device: *mut sys::rte_device,
}

// SAFETY: the device pointer is only used on drop, from the owning thread;
// DPDK's hotplug calls are callable from any thread of the primary process.
unsafe impl Send for EthPort {}

impl fmt::Debug for EthPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EthPort")
            .field("name", &self.name)
            .field("dev", &self.dev_name)
            .field("port_id", &self.port_id)
            .finish()
    }
}

fn check(name: &str, what: &'static str, rc: i32) -> Result<(), PortError> {
    if rc < 0 {
        Err(PortError::Setup(name.to_owned(), what, strerror(rc)))
    } else {
        Ok(())
    }
}

impl EthPort {
    /// Probes, configures and starts a port; rx queues take mbufs from `pool`.
    ///
    /// # Errors
    /// [`PortError`] naming the step that failed.
    pub fn open(conf: &PortConf, pool: &Mempool) -> Result<Self, PortError> {
        let name = conf.name.as_str();
        let dev_name = conf.devargs.split(',').next().unwrap_or_default().to_owned();
        let cdev = CString::new(conf.devargs.as_str())
            .map_err(|_| PortError::BadDevargs(name.to_owned(), conf.devargs.clone()))?;
        let cname = CString::new(dev_name.as_str())
            .map_err(|_| PortError::BadDevargs(name.to_owned(), conf.devargs.clone()))?;
        let mut port_id: u16 = 0;
        // A device already created (e.g. by an EAL --vdev argument) is reused.
        // SAFETY: cname is a valid C string; port_id a valid out pointer.
        let found = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port_id) } == 0;
        if !found {
            // SAFETY: cdev is a valid C string for the duration of the call.
            let rc = unsafe { sys::rte_dev_probe(cdev.as_ptr()) };
            if rc < 0 {
                return Err(PortError::Probe(name.to_owned(), conf.devargs.clone(), strerror(rc)));
            }
            // SAFETY: as above.
            if unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port_id) } != 0 {
                return Err(PortError::NoEthdev(name.to_owned(), dev_name));
            }
        }
        let mut port = EthPort {
            name: name.to_owned(),
            dev_name,
            port_id,
            mac: [0; 6],
            n_rxq: 0,
            n_txq: 0,
            device: std::ptr::null_mut(),
        };
        // From here on, Drop stops/closes/detaches the port on any error.
        port.configure(conf, pool)?;
        Ok(port)
    }

    fn configure(&mut self, conf: &PortConf, pool: &Mempool) -> Result<(), PortError> {
        let name = self.name.clone();
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id, info is a valid out pointer.
        check(&name, "rte_eth_dev_info_get", unsafe { sys::rte_eth_dev_info_get(self.port_id, &mut info) })?;
        self.device = info.device;
        if conf.n_txq > info.max_tx_queues {
            return Err(PortError::TooFewTxQueues(name, conf.n_txq, info.max_tx_queues));
        }
        if conf.n_rxq > info.max_rx_queues {
            return Err(PortError::TooFewRxQueues(name, conf.n_rxq, info.max_rx_queues));
        }
        let eth_conf = sys::rte_eth_conf::default();
        // SAFETY: valid port id; eth_conf lives across the call (DPDK copies it).
        check(&name, "rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(self.port_id, conf.n_rxq, conf.n_txq, &eth_conf)
        })?;
        let (mut n_rxd, mut n_txd) = (conf.n_rxd, conf.n_txd);
        // SAFETY: valid port id and out pointers.
        check(&name, "rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.port_id, &mut n_rxd, &mut n_txd)
        })?;
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.port_id) };
        // SOCKET_ID_ANY (-1) becomes u32::MAX, as the C API's unsigned parameter expects.
        let socket = u32::try_from(socket).unwrap_or(u32::MAX);
        for q in 0..conf.n_rxq {
            // SAFETY: configured port; a null rx_conf means the device default;
            // the pool outlives the port (owner's drop order).
            check(&name, "rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(self.port_id, q, n_rxd, socket, std::ptr::null(), pool.as_ptr())
            })?;
        }
        for q in 0..conf.n_txq {
            // SAFETY: configured port; a null tx_conf means the device default.
            check(&name, "rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(self.port_id, q, n_txd, socket, std::ptr::null())
            })?;
        }
        // SAFETY: queues are set up.
        check(&name, "rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(self.port_id) })?;
        self.n_rxq = conf.n_rxq;
        self.n_txq = conf.n_txq;
        // Promiscuous mode: a switch port must see every destination MAC. Not
        // every PMD supports it (ENOTSUP), which is fine for virtual devices.
        // SAFETY: started port.
        let _ = unsafe { sys::rte_eth_promiscuous_enable(self.port_id) };
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port, valid out pointer.
        if unsafe { sys::rte_eth_macaddr_get(self.port_id, &mut addr) } == 0 {
            self.mac = addr.addr_bytes;
        }
        Ok(())
    }

    /// Petrel's name for the port.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The DPDK port id.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Number of rx queues.
    pub fn n_rxq(&self) -> u16 {
        self.n_rxq
    }

    /// Number of tx queues.
    pub fn n_txq(&self) -> u16 {
        self.n_txq
    }

    /// A handle for one PMD to receive on `rxq` and send on `txq`.
    pub fn queue(&self, rxq: Option<u16>, txq: u16) -> QueueHandle {
        QueueHandle::Eth(EthQueue { port_id: self.port_id, rxq, txq })
    }

    /// Hardware/driver counters of the port.
    pub fn xstats(&self) -> EthStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port, valid out pointer.
        unsafe { sys::rte_eth_stats_get(self.port_id, &mut s) };
        EthStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
        }
    }
}

impl Drop for EthPort {
    fn drop(&mut self) {
        // SAFETY: the port is ours; PMDs using its queues have been joined
        // (petreld joins PMD threads before dropping ports). Errors on
        // teardown are ignored: there is nothing left to do about them.
        unsafe {
            sys::rte_eth_dev_stop(self.port_id);
            sys::rte_eth_dev_close(self.port_id);
        }
        if !self.device.is_null() {
            // SAFETY: the device came from rte_eth_dev_info_get of this port and
            // is still probed; its only ethdev port is closed.
            unsafe { sys::rte_dev_remove(self.device) };
        }
    }
}

/// Driver-level counters of a port.
#[derive(Debug, Clone, Copy, Default)]
pub struct EthStats {
    /// Packets received by the driver.
    pub ipackets: u64,
    /// Packets sent by the driver.
    pub opackets: u64,
    /// Packets the device dropped because no rx descriptor was free.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
}

/// One PMD's access to a port: its rx queue (if it polls one) and its tx queue.
#[derive(Debug, Clone)]
pub enum QueueHandle {
    /// A DPDK ethdev.
    Eth(EthQueue),
    /// A vhost-user port (a pod's virtqueues).
    Vhost(vhost::VhostQueue),
}

impl QueueHandle {
    /// Receives up to the burst's free room into it; returns how many arrived.
    ///
    /// The burst must be empty.
    #[inline]
    pub fn rx_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        match self {
            QueueHandle::Eth(q) => q.rx_burst(burst),
            QueueHandle::Vhost(q) => q.rx_burst(burst),
        }
    }

    /// Sends as many queued mbufs as the port takes; the rest stay queued.
    /// Returns how many were sent.
    #[inline]
    pub fn tx_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        match self {
            QueueHandle::Eth(q) => q.tx_burst(burst),
            QueueHandle::Vhost(q) => q.tx_burst(burst),
        }
    }

    /// Called on every poll while this PMD has nothing queued for the port:
    /// a vhost-user port signals an interrupt its last transmit left
    /// throttled (else a guest that sleeps until interrupted would not see
    /// the last packets of a burst); an ethdev has nothing to do.
    #[inline]
    pub fn tx_idle(&self) {
        if let QueueHandle::Vhost(q) = self {
            q.tx_idle();
        }
    }
}

/// One PMD's access to an ethdev: its rx queue (if it polls one) and its own tx queue.
///
/// Each PMD gets distinct queue ids, so bursts need no lock.
#[derive(Debug, Clone, Copy)]
pub struct EthQueue {
    port_id: u16,
    rxq: Option<u16>,
    txq: u16,
}

impl EthQueue {
    /// Receives up to the burst's free room into it; returns how many arrived.
    ///
    /// The burst must be empty.
    #[inline]
    pub fn rx_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        let Some(q) = self.rxq else { return 0 };
        debug_assert!(burst.is_empty());
        let room = u16::try_from(N).unwrap_or(u16::MAX);
        // SAFETY: the port is started and this PMD owns rx queue q; the slots
        // hold room writable pointer-sized `None`s.
        let n = unsafe { sys::rte_eth_rx_burst(self.port_id, q, burst.raw_slots(), room) };
        let n = usize::from(n);
        // SAFETY: DPDK wrote n owned mbufs into slots 0..n of an empty burst.
        unsafe { burst.set_received(n) };
        n
    }

    /// Sends as many queued mbufs as the device takes; the rest stay queued.
    /// Returns how many were sent.
    #[inline]
    pub fn tx_burst<const N: usize>(&self, burst: &mut Burst<N>) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let n = u16::try_from(burst.len()).unwrap_or(u16::MAX);
        // SAFETY: the port is started and this PMD owns tx queue txq; slots
        // 0..len hold valid owned mbufs (Burst keeps them contiguous).
        let sent = unsafe { sys::rte_eth_tx_burst(self.port_id, self.txq, burst.raw_slots(), n) };
        let sent = usize::from(sent);
        // SAFETY: DPDK took ownership of exactly the first `sent` mbufs.
        unsafe { burst.consumed(sent) };
        sent
    }
}
