//! The vhost-user protocol, device side, for one connection of one port.
//!
//! rust-vmm `vhost`'s `BackendReqHandler` reads each message, checks its
//! framing, sizes and fd counts, and calls [`Device`] through
//! `VhostUserBackendReqHandlerMut`. Here we check meaning (indexes, sizes,
//! features, memory tables, ring addresses) and drive the rings. Any error
//! returned makes the manager close the connection, so a frontend that
//! breaks the rules is disconnected, never half-served.
//!
//! A ring runs (is live for its PMD) when the memory table is mapped, its
//! size and addresses are set, it was started (`SET_VRING_KICK`) and is
//! enabled (`SET_VRING_ENABLE`, or implicitly without
//! `VHOST_USER_F_PROTOCOL_FEATURES`). Every change that touches a running
//! ring quiesces it first ([`crate::virtq::guard`]); old guest memory is
//! unmapped only after no ring refers to it.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight, VhostUserLog,
    VhostUserMemoryRegion, VhostUserShMemConfig, VhostUserSharedMsg, VhostUserSingleMemoryRegion,
    VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost::vhost_user::{Error, GpuBackend, Result, VhostUserBackendReqHandlerMut};
use vhost::VhostUserMemoryRegionBase;

use crate::memory::{GuestMemory, RegionSpec};
use crate::virtq::{RingAddrs, RingFeatures, MAX_QUEUE_SIZE, NET_HDR_LEN};
use crate::Port;

/// VIRTIO_NET_F_MRG_RXBUF.
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
/// VIRTIO_NET_F_MQ.
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;
/// VIRTIO_RING_F_INDIRECT_DESC.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// VIRTIO_F_VERSION_1.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_IN_ORDER: buffers are used in the order they were made
/// available. Our rings always do (both directions take avail entries in
/// order and write one used element each, in the same order; a dropped
/// packet's buffer too), so offering it costs nothing and lets the guest
/// use its in-order paths (DPDK's virtio PMD: cheaper per packet). DPDK's
/// vhost library offers it as well.
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;

/// The virtio features we offer. Not offered: packed rings, EVENT_IDX,
/// offloads (checksum, TSO), LOG_ALL (migration).
pub const OFFERED_FEATURES: u64 = VIRTIO_NET_F_MRG_RXBUF
    | VIRTIO_NET_F_MQ
    | VIRTIO_RING_F_INDIRECT_DESC
    | VHOST_USER_F_PROTOCOL_FEATURES
    | VIRTIO_F_VERSION_1
    | VIRTIO_F_IN_ORDER;

#[derive(Debug, Default)]
struct RingConf {
    size: u32,
    addrs: Option<RingAddrs>,
    base: u16,
    started: bool,
    enabled: bool,
    kick: Option<File>,
    call: Option<File>,
}

/// Protocol state of one port's current connection.
#[derive(Debug)]
pub struct Device {
    port: Arc<Port>,
    features: u64,
    features_set: bool,
    protocol: u64,
    mem: Option<Arc<GuestMemory>>,
    rings: Vec<RingConf>,
    /// TSC ticks between two interrupts of one ring.
    call_interval: u64,
}

fn invalid(what: &'static str) -> Error {
    Error::InvalidOperation(what)
}

impl Device {
    /// A device for `port`, as after a reset.
    pub fn new(port: Arc<Port>, call_interval: u64) -> Self {
        let n = port.n_vrings();
        port.set_call_interval(call_interval);
        Device {
            port,
            features: 0,
            features_set: false,
            protocol: 0,
            mem: None,
            rings: (0..n).map(|_| RingConf::default()).collect(),
            call_interval,
        }
    }

    /// Whether SET_FEATURES arrived on this connection.
    pub fn features_set(&self) -> bool {
        self.features_set
    }

    /// Whether REPLY_ACK was negotiated on this connection.
    pub fn reply_ack(&self) -> bool {
        self.protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0
    }

    /// Stops every ring, unmaps guest memory, closes the eventfds and forgets
    /// the negotiation (on disconnect and `RESET_OWNER`).
    pub fn reset(&mut self) {
        for i in 0..self.rings.len() {
            let mut q = self.port.vring(i).quiesce();
            q.deactivate();
            drop(q);
            self.rings[i] = RingConf::default();
        }
        self.mem = None;
        self.features = 0;
        self.features_set = false;
        self.protocol = 0;
    }

    fn ring_index(&self, index: u32) -> Result<usize> {
        let i = usize::try_from(index).map_err(|_| Error::InvalidParam)?;
        if i < self.rings.len() {
            Ok(i)
        } else {
            Err(invalid("vring index out of range"))
        }
    }

    fn ring_features(&self) -> RingFeatures {
        let modern = self.features & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF) != 0;
        RingFeatures {
            hdr_len: if modern { NET_HDR_LEN } else { 10 },
            mergeable: self.features & VIRTIO_NET_F_MRG_RXBUF != 0,
            indirect: self.features & VIRTIO_RING_F_INDIRECT_DESC != 0,
        }
    }

    /// Re-evaluates ring `i`: (re)activates it when it can run, stops it otherwise.
    fn refresh(&mut self, i: usize) -> Result<()> {
        let feat = self.ring_features();
        let c = &self.rings[i];
        let enabled = c.enabled || self.features & VHOST_USER_F_PROTOCOL_FEATURES == 0;
        let mut q = self.port.vring(i).quiesce();
        q.set_call_interval(self.call_interval);
        match (&self.mem, c.addrs) {
            (Some(mem), Some(addrs)) if c.started && enabled && c.size != 0 => {
                let call = c.call.as_ref().map_or(-1, AsRawFd::as_raw_fd);
                q.activate(mem, c.size, addrs, c.base, feat, call).map_err(|_| invalid("bad vring address"))?;
                q.resume();
            }
            _ => q.deactivate(),
        }
        Ok(())
    }

    fn refresh_all(&mut self) -> Result<()> {
        for i in 0..self.rings.len() {
            self.refresh(i)?;
        }
        Ok(())
    }
}

impl VhostUserBackendReqHandlerMut for Device {
    fn set_owner(&mut self) -> Result<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> Result<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> Result<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> Result<u64> {
        Ok(OFFERED_FEATURES)
    }

    fn set_features(&mut self, features: u64) -> Result<()> {
        if features & !OFFERED_FEATURES != 0 {
            return Err(invalid("feature not offered"));
        }
        self.features = features;
        self.features_set = true;
        self.refresh_all()
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<Vec<VhostUserMemoryRegionBase>>> {
        let specs: Vec<RegionSpec> = ctx
            .iter()
            .map(|r| RegionSpec {
                gpa: r.guest_phys_addr,
                size: r.memory_size,
                uva: r.user_addr,
                mmap_offset: r.mmap_offset,
            })
            .collect();
        let mem = GuestMemory::map(&specs, &files).map_err(|_| invalid("bad memory table"))?;
        // Stop every ring before the old memory goes away.
        for i in 0..self.rings.len() {
            self.port.vring(i).quiesce().deactivate();
        }
        self.mem = Some(Arc::new(mem));
        self.refresh_all()?;
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        let i = self.ring_index(index)?;
        if num == 0 || num > u32::from(MAX_QUEUE_SIZE) || !num.is_power_of_two() {
            return Err(invalid("vring size not a power of two in 1..=32768"));
        }
        self.rings[i].size = num;
        self.refresh(i)
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        let i = self.ring_index(index)?;
        self.rings[i].addrs = Some(RingAddrs { desc: descriptor, avail: available, used });
        self.refresh(i)
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        let i = self.ring_index(index)?;
        self.rings[i].base = u16::try_from(base).map_err(|_| invalid("vring base above 65535"))?;
        self.refresh(i)
    }

    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
        let i = self.ring_index(index)?;
        let mut q = self.port.vring(i).quiesce();
        let base = if q.is_active() { q.last_avail() } else { self.rings[i].base };
        q.deactivate();
        drop(q);
        let c = &mut self.rings[i];
        c.started = false;
        c.base = base;
        Ok(VhostUserVringState::new(index, u32::from(base)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        let i = self.ring_index(u32::from(index))?;
        // We poll: the kick eventfd is kept (the guest may write it) but never read.
        self.rings[i].kick = fd;
        self.rings[i].started = true;
        self.refresh(i)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        let i = self.ring_index(u32::from(index))?;
        let mut q = self.port.vring(i).quiesce();
        let live = q.is_active();
        q.set_call_fd(fd.as_ref().map_or(-1, AsRawFd::as_raw_fd));
        // The old eventfd closes here, after the PMD has stopped using it.
        self.rings[i].call = fd;
        if live {
            q.resume();
        }
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> Result<()> {
        self.ring_index(u32::from(index))?;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK)
    }

    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        let offered = (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).bits();
        if features & !offered != 0 {
            return Err(invalid("protocol feature not offered"));
        }
        self.protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> Result<u64> {
        Ok(u64::from(self.port.n_qp()))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        let i = self.ring_index(index)?;
        self.rings[i].enabled = enable;
        self.refresh(i)
    }

    fn get_config(&mut self, _offset: u32, _size: u32, _flags: VhostUserConfigFlags) -> Result<Vec<u8>> {
        Err(invalid("GET_CONFIG not supported"))
    }

    fn set_config(&mut self, _offset: u32, _buf: &[u8], _flags: VhostUserConfigFlags) -> Result<()> {
        Err(invalid("SET_CONFIG not supported"))
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> Result<()> {
        Err(invalid("not a GPU"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> Result<File> {
        Err(invalid("shared objects not supported"))
    }

    fn get_inflight_fd(&mut self, _inflight: &VhostUserInflight) -> Result<(VhostUserInflight, File)> {
        Err(invalid("inflight tracking not supported"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> Result<()> {
        Err(invalid("inflight tracking not supported"))
    }

    fn get_max_mem_slots(&mut self) -> Result<u64> {
        Err(invalid("CONFIGURE_MEM_SLOTS not supported"))
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<VhostUserMemoryRegionBase>> {
        Err(invalid("CONFIGURE_MEM_SLOTS not supported"))
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> Result<()> {
        Err(invalid("CONFIGURE_MEM_SLOTS not supported"))
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> Result<Option<File>> {
        Err(invalid("device state transfer not supported"))
    }

    fn check_device_state(&mut self) -> Result<()> {
        Err(invalid("device state transfer not supported"))
    }

    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        Err(invalid("shared memory regions not supported"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> Result<()> {
        Err(invalid("dirty logging not supported"))
    }
}
