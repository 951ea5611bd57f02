//! Split virtqueues (virtio 1.1 §2.6), device side, polled.
//!
//! [`Vring`] is the state a PMD works on: pointers into the guest's ring
//! memory (translated and checked by the management thread when the ring is
//! activated), the guest memory for descriptor buffers, and the indexes.
//! The fast path ([`Vring::dequeue`], [`Vring::enqueue`]) copies between
//! descriptor chains and packet buffers in batches of up to a burst,
//! publishes one used-index update per batch, never allocates and makes a
//! syscall only to signal an eventfd the guest asked for (throttled).
//!
//! Everything the guest controls is read once (volatile) into a local and
//! checked before use: ring indexes (the available index may run ahead by
//! at most the ring size), heads and `next` (below the table size), chain
//! length (at most the table size: longer means a loop), indirect tables
//! (only with the feature, alone in their chain, not nested, a whole number
//! of descriptors, at most [`MAX_INDIRECT`], 8-byte aligned, mapped), buffer
//! ranges (every byte inside one mapped region; a buffer may span adjacent
//! regions chunk by chunk), and direction (device-writable only for receive,
//! device-readable only for transmit). A violation returns a [`Violation`];
//! the caller marks the ring broken and the port is disconnected. Packets
//! too long for a buffer are dropped and counted, not violations.
//!
//! Packed virtqueues are not implemented (`VIRTIO_F_RING_PACKED` is never offered).

// Guest addresses and lengths are u64, host ones usize: this crate builds only for
// 64-bit targets (lib.rs), where u64 -> usize cannot truncate; descriptor fields are
// unpacked from one u64 on purpose.
#![allow(clippy::cast_possible_truncation)]

pub mod guard;
#[doc(hidden)]
pub mod testing;

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::memory::GuestMemory;
use crate::PktBuf;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable.
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// `used.flags`: the device does not want kicks (we poll).
pub const USED_F_NO_NOTIFY: u16 = 1;
/// `avail.flags`: the driver does not want interrupts.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Largest split ring.
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Largest indirect table we accept (QEMU's limit too).
pub const MAX_INDIRECT: u32 = 1024;
/// `virtio_net_hdr_mrg_rxbuf` (VERSION_1 or MRG_RXBUF) is 12 bytes; the legacy header 10.
pub const NET_HDR_LEN: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS_OFF: usize = 10;

/// A guest broke the virtqueue rules; the port is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum Violation {
    /// available index ran {0} entries ahead of the ring size
    AvailIdx(u16),
    /// descriptor index {0} out of range
    DescIndex(u32),
    /// descriptor chain longer than its table (a loop)
    ChainLoop,
    /// descriptor buffer {0:#x}+{1} is not inside mapped guest memory
    BadBuffer(u64, u64),
    /// indirect descriptor table invalid (address {0:#x}, length {1})
    BadIndirect(u64, u32),
    /// device-writable descriptor in a transmit chain
    WriteInTx,
    /// device-readable descriptor in a receive chain
    ReadInRx,
    /// ring address not inside mapped guest memory or misaligned
    BadRing,
    /// queue size {0} is not a power of two in 1..=32768
    BadSize(u32),
}

/// Short names of the violations, indexed by [`Violation::code`].
pub const VIOLATION_NAMES: [&str; 9] = [
    "avail_idx",
    "desc_index",
    "chain_loop",
    "bad_buffer",
    "bad_indirect",
    "write_in_tx",
    "read_in_rx",
    "bad_ring",
    "bad_size",
];

impl Violation {
    /// Index into [`VIOLATION_NAMES`].
    pub fn code(&self) -> u8 {
        match self {
            Violation::AvailIdx(_) => 0,
            Violation::DescIndex(_) => 1,
            Violation::ChainLoop => 2,
            Violation::BadBuffer(..) => 3,
            Violation::BadIndirect(..) => 4,
            Violation::WriteInTx => 5,
            Violation::ReadInRx => 6,
            Violation::BadRing => 7,
            Violation::BadSize(_) => 8,
        }
    }

    /// Stable short name, for counters and logs.
    pub fn name(&self) -> &'static str {
        VIOLATION_NAMES[usize::from(self.code())]
    }
}

/// A descriptor, as read (once) from guest memory.
#[derive(Debug, Clone, Copy, Default)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// Ring addresses in the frontend's virtual address space (`SET_VRING_ADDR`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

/// Counters of one vring, kept by its PMD (plain integers: one writer).
#[derive(Debug, Clone, Copy, Default)]
pub struct VringCounters {
    /// Packets moved (dequeued or enqueued).
    pub packets: u64,
    /// Bytes moved (without the virtio-net header).
    pub bytes: u64,
    /// Packets dropped: longer than the packet buffer (dequeue) or than the
    /// guest's buffer without MRG_RXBUF (enqueue), or shorter than the header.
    pub dropped: u64,
    /// Interrupts (call eventfd writes).
    pub calls: u64,
}

/// Features of the ring that the connection negotiated.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingFeatures {
    /// Bytes of virtio-net header before each packet (10 or 12).
    pub hdr_len: usize,
    /// VIRTIO_NET_F_MRG_RXBUF.
    pub mergeable: bool,
    /// VIRTIO_RING_F_INDIRECT_DESC.
    pub indirect: bool,
}

/// One split virtqueue as its PMD sees it.
#[derive(Debug)]
pub struct Vring {
    mem: Option<Arc<GuestMemory>>,
    desc: *const u8,
    avail: *const u8,
    used: *mut u8,
    size: u16,
    mask: u16,
    last_avail: u16,
    used_idx: u16,
    feat: RingFeatures,
    call_fd: i32,
    call_pending: bool,
    last_call: u64,
    call_interval: u64,
    /// Counters.
    pub counters: VringCounters,
    /// Set when the guest broke the rules: the ring is not touched again
    /// until the manager resets it.
    pub broken: bool,
}

// SAFETY: the raw pointers point into the GuestMemory held by `mem` (or are
// null); the ring moves between the manager and one PMD under `Guarded`.
unsafe impl Send for Vring {}

impl Default for Vring {
    fn default() -> Self {
        Vring {
            mem: None,
            desc: std::ptr::null(),
            avail: std::ptr::null(),
            used: std::ptr::null_mut(),
            size: 0,
            mask: 0,
            last_avail: 0,
            used_idx: 0,
            feat: RingFeatures::default(),
            call_fd: -1,
            call_pending: false,
            last_call: 0,
            call_interval: 50_000,
            counters: VringCounters::default(),
            broken: false,
        }
    }
}

#[inline]
fn now_ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        u64::MAX
    }
}

/// Largest batch whose heads are read (and descriptors prefetched) up front.
const MAX_BATCH: usize = 64;

/// How many receive buffers ahead the enqueue loop prefetches for writing.
const PREFETCH_W_AHEAD: usize = 4;

#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
    }
}

/// Prefetches the line at `p` for writing (`prefetchw`: the line comes in
/// owned, so the stores that follow need no second trip to the core that
/// last wrote it, the guest's).
#[inline(always)]
fn prefetch_w(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address,
    // and writes nothing (CPUs without PRFCHW execute it as a NOP).
    unsafe {
        core::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
}

impl Vring {
    /// Activates the ring on `mem`: translates and checks the addresses,
    /// tells the guest not to kick (we poll) and takes the indexes: `base`,
    /// or the used index in the ring when that differs (a frontend that kept
    /// its rings across our restart sends base 0). Manager only, quiesced.
    ///
    /// # Errors
    /// [`Violation::BadSize`] or [`Violation::BadRing`]; the ring stays inactive.
    pub fn activate(
        &mut self,
        mem: &Arc<GuestMemory>,
        size: u32,
        addrs: RingAddrs,
        base: u16,
        feat: RingFeatures,
        call_fd: i32,
    ) -> Result<(), Violation> {
        self.deactivate();
        if size == 0 || size > u32::from(MAX_QUEUE_SIZE) || !size.is_power_of_two() {
            return Err(Violation::BadSize(size));
        }
        let n = u64::from(size);
        let desc = mem.uva_range(addrs.desc, 16 * n).ok_or(Violation::BadRing)?;
        let avail = mem.uva_range(addrs.avail, 6 + 2 * n).ok_or(Violation::BadRing)?;
        let used = mem.uva_range(addrs.used, 6 + 8 * n).ok_or(Violation::BadRing)?;
        if (desc as usize) % 16 != 0 || (avail as usize) % 2 != 0 || (used as usize) % 4 != 0 {
            return Err(Violation::BadRing);
        }
        let size16 = u16::try_from(size).map_err(|_| Violation::BadSize(size))?;
        // SAFETY: `used` was checked to map 6 + 8n bytes, 4-aligned: flags at
        // +0 and idx at +2 are in range and aligned for u16.
        let ring_used = unsafe {
            std::ptr::write_volatile(used.cast::<u16>(), USED_F_NO_NOTIFY);
            std::ptr::read_volatile(used.add(2).cast::<u16>())
        };
        let start = if ring_used != base { ring_used } else { base };
        *self = Vring {
            mem: Some(Arc::clone(mem)),
            desc,
            avail,
            used,
            size: size16,
            mask: size16 - 1,
            last_avail: start,
            used_idx: start,
            feat,
            call_fd,
            call_pending: false,
            last_call: 0,
            call_interval: self.call_interval,
            counters: self.counters,
            broken: false,
        };
        Ok(())
    }

    /// Drops the ring's pointers and its hold on guest memory. Manager only, quiesced.
    pub fn deactivate(&mut self) {
        let (counters, interval) = (self.counters, self.call_interval);
        *self = Vring { counters, call_interval: interval, ..Vring::default() };
    }

    /// Whether the ring has been activated.
    pub fn is_active(&self) -> bool {
        self.mem.is_some()
    }

    /// The next available index the device will take (GET_VRING_BASE).
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// Sets the eventfd to signal (or -1). Manager only, quiesced.
    pub fn set_call_fd(&mut self, fd: i32) {
        self.call_fd = fd;
    }

    /// Minimum TSC ticks between two interrupts of this ring.
    pub fn set_call_interval(&mut self, ticks: u64) {
        self.call_interval = ticks;
    }

    #[inline]
    fn avail_idx(&self) -> u16 {
        // SAFETY: avail maps 6 + 2n bytes, 2-aligned (checked in activate).
        let v = unsafe { std::ptr::read_volatile(self.avail.add(2).cast::<u16>()) };
        // Ring entries and descriptors are read after the index (virtio's rmb).
        fence(Ordering::Acquire);
        v
    }

    #[inline]
    fn avail_entry(&self, i: u16) -> u16 {
        let slot = usize::from(i & self.mask);
        // SAFETY: slot < size, and avail maps 4 + 2 * size bytes of entries.
        unsafe { std::ptr::read_volatile(self.avail.add(4 + 2 * slot).cast::<u16>()) }
    }

    #[inline]
    fn put_used(&self, at: u16, id: u32, len: u32) {
        let slot = usize::from(at & self.mask);
        // SAFETY: slot < size; used maps 4 + 8 * size bytes of elements, 4-aligned.
        unsafe {
            let e = self.used.add(4 + 8 * slot);
            std::ptr::write_volatile(e.cast::<u32>(), id);
            std::ptr::write_volatile(e.add(4).cast::<u32>(), len);
        }
    }

    #[inline]
    fn publish_used(&mut self, new_idx: u16) {
        // Elements (and the buffers they describe) before the index (virtio's wmb).
        fence(Ordering::Release);
        // SAFETY: used maps 6 + 8n bytes, 4-aligned; idx is at +2.
        unsafe { std::ptr::write_volatile(self.used.add(2).cast::<u16>(), new_idx) };
        self.used_idx = new_idx;
        if self.call_fd >= 0 {
            // The used index must be visible before we read the guest's flags.
            fence(Ordering::SeqCst);
            // SAFETY: avail flags at +0, in range (activate).
            let flags = unsafe { std::ptr::read_volatile(self.avail.cast::<u16>()) };
            if flags & AVAIL_F_NO_INTERRUPT == 0 {
                self.call_pending = true;
            }
        }
        self.flush_call();
    }

    /// Signals a pending interrupt once the throttle interval has passed.
    #[inline]
    pub fn flush_call(&mut self) {
        if !self.call_pending {
            return;
        }
        let now = now_ticks();
        if now.wrapping_sub(self.last_call) < self.call_interval {
            return;
        }
        self.call_pending = false;
        self.last_call = now;
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to an fd; the fd stays open
        // while the ring is active (the manager closes it only when quiesced).
        // A full or invalid eventfd only makes write fail, which we ignore.
        let _ = unsafe { libc::write(self.call_fd, (&raw const one).cast::<libc::c_void>(), 8) };
        self.counters.calls += 1;
    }

    /// Prefetches the descriptor of `head` (if in range).
    #[inline]
    fn prefetch_desc(&self, head: u16) {
        if head < self.size {
            prefetch(self.desc.wrapping_add(16 * usize::from(head)));
        }
    }

    /// Prefetches the first buffer of the chain at `head` (a hint only:
    /// nothing is checked or trusted here beyond the translation).
    #[inline]
    fn prefetch_buf(&self, mem: &GuestMemory, head: u16) {
        if let Ok(d) = Self::read_desc(self.desc, u32::from(self.size), u32::from(head)) {
            if d.flags & DESC_F_INDIRECT == 0 {
                if let Some((p, _)) = mem.gpa_chunk(d.addr) {
                    // From the packet's first byte: the header before it
                    // is skipped, not read (no offloads), so its line is
                    // left alone in the guest's cache, as DPDK's vhost
                    // library leaves it.
                    let data = p.wrapping_add(self.feat.hdr_len);
                    prefetch(data);
                    prefetch(data.wrapping_add(64));
                }
            }
        }
    }

    /// Prefetches, owned, the used-ring lines of the next `n` elements, so
    /// the RFOs run while the burst is processed instead of stalling its
    /// stores (the guest's core reads those lines between bursts).
    #[inline]
    fn prefetch_used(&self, n: usize) {
        let first = usize::from(self.used_idx & self.mask);
        let mut slot = first;
        let end = first + n.min(usize::from(self.size));
        while slot < end {
            let s = slot % usize::from(self.size);
            prefetch_w(self.used.wrapping_add(4 + 8 * s));
            // next line: elements are 8 bytes, 8 to a 64-byte line
            slot = (slot | 7) + 1;
        }
    }

    /// As [`Self::prefetch_buf`], for a receive buffer: the header's line
    /// for reading (it is written only if it differs, see `enqueue_on`) and
    /// the line where the packet starts, owned.
    #[inline]
    fn prefetch_buf_w(&self, mem: &GuestMemory, head: u16) {
        if let Ok(d) = Self::read_desc(self.desc, u32::from(self.size), u32::from(head)) {
            if d.flags & DESC_F_INDIRECT == 0 {
                if let Some((p, _)) = mem.gpa_chunk(d.addr) {
                    prefetch(p);
                    prefetch_w(p.wrapping_add(self.feat.hdr_len));
                }
            }
        }
    }

    /// Reads descriptor `i` of a table of `tsize` entries at `table`.
    #[inline]
    fn read_desc(table: *const u8, tsize: u32, i: u32) -> Result<Desc, Violation> {
        if i >= tsize {
            return Err(Violation::DescIndex(i));
        }
        // SAFETY: i < tsize and the table maps 16 * tsize bytes, 8-aligned
        // (ring tables: checked in activate; indirect ones: in walk_chain).
        unsafe {
            let p = table.add(16 * i as usize);
            let addr = std::ptr::read_volatile(p.cast::<u64>());
            let w = std::ptr::read_volatile(p.add(8).cast::<u64>());
            Ok(Desc { addr, len: w as u32, flags: (w >> 32) as u16, next: (w >> 48) as u16 })
        }
    }

    /// Walks the chain at `head`, calling `seg(host, len)` for every mapped
    /// piece of every buffer in order, after checking everything (module doc).
    #[inline]
    fn walk_chain(
        &self,
        mem: &GuestMemory,
        head: u16,
        write: bool,
        mut seg: impl FnMut(*mut u8, usize),
    ) -> Result<(), Violation> {
        let mut table = self.desc;
        let mut tsize = u32::from(self.size);
        let mut i = u32::from(head);
        let mut n = 0u32;
        let mut indirect = false;
        loop {
            let d = Self::read_desc(table, tsize, i)?;
            n += 1;
            if n > tsize {
                return Err(Violation::ChainLoop);
            }
            if d.flags & DESC_F_INDIRECT != 0 {
                let ok = self.feat.indirect
                    && !indirect
                    && n == 1
                    && d.flags & DESC_F_NEXT == 0
                    && d.len != 0
                    && d.len % 16 == 0
                    && d.len / 16 <= MAX_INDIRECT;
                let t = mem.gpa_range(d.addr, u64::from(d.len)).filter(|p| ok && (*p as usize) % 8 == 0);
                let Some(t) = t else {
                    return Err(Violation::BadIndirect(d.addr, d.len));
                };
                table = t;
                tsize = d.len / 16;
                i = 0;
                n = 0;
                indirect = true;
                continue;
            }
            if (d.flags & DESC_F_WRITE != 0) != write {
                return Err(if write { Violation::ReadInRx } else { Violation::WriteInTx });
            }
            let (mut addr, mut left) = (d.addr, u64::from(d.len));
            while left > 0 {
                let (p, avail) = mem.gpa_chunk(addr).ok_or(Violation::BadBuffer(d.addr, u64::from(d.len)))?;
                let take = left.min(avail);
                seg(p, take as usize);
                left -= take;
                addr = addr.wrapping_add(take);
            }
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            i = u32::from(d.next);
        }
    }

    /// Dequeues up to `bufs.len()` packets the guest transmitted into the
    /// buffers (all `Some`), compacted to the front; returns how many. Calls
    /// `alloc` with the number of chains about to be taken first, so the
    /// caller fills only what is needed; `alloc` returning false takes nothing.
    ///
    /// # Errors
    /// A [`Violation`]; descriptors already taken in this call are still
    /// returned to the guest.
    #[inline]
    pub fn dequeue<B: PktBuf>(
        &mut self,
        bufs: &mut [Option<B>],
        alloc: impl FnOnce(&mut [Option<B>]) -> bool,
    ) -> Result<usize, Violation> {
        self.flush_call();
        let Some(mem) = self.mem.take() else { return Ok(0) };
        let r = self.dequeue_on(&mem, bufs, alloc);
        self.mem = Some(mem);
        r
    }

    #[inline]
    fn dequeue_on<B: PktBuf>(
        &mut self,
        mem: &GuestMemory,
        bufs: &mut [Option<B>],
        alloc: impl FnOnce(&mut [Option<B>]) -> bool,
    ) -> Result<usize, Violation> {
        let avail = self.avail_idx();
        let pending = avail.wrapping_sub(self.last_avail);
        if pending == 0 {
            return Ok(0);
        }
        if pending > self.size {
            return Err(Violation::AvailIdx(pending - self.size));
        }
        let n = usize::from(pending).min(bufs.len()).min(MAX_BATCH);
        // Heads first (one or two cache lines), so their descriptors can be
        // fetched while we copy.
        let mut heads = [0u16; MAX_BATCH];
        for (k, h) in heads[..n].iter_mut().enumerate() {
            *h = self.avail_entry(self.last_avail.wrapping_add(k as u16));
            self.prefetch_desc(*h);
        }
        if !alloc(&mut bufs[..n]) {
            return Ok(0);
        }
        self.prefetch_buf(mem, heads[0]);
        self.prefetch_used(n);
        let hdr = self.feat.hdr_len;
        let mut got = 0;
        let mut used = self.used_idx;
        let mut result = Ok(());
        for k in 0..n {
            let head = heads[k];
            if k + 1 < n {
                self.prefetch_buf(mem, heads[k + 1]);
            }
            let Some(buf) = bufs[got].as_mut() else { break };
            let room = buf.room();
            let cap = room.len();
            let dst = room.as_mut_ptr();
            let (mut skip, mut off, mut total) = (hdr, 0usize, 0usize);
            let walk = self.walk_chain(mem, head, false, |p, len| {
                total = total.saturating_add(len);
                let (mut p, mut len) = (p, len);
                if skip > 0 {
                    let s = skip.min(len);
                    skip -= s;
                    len -= s;
                    p = p.wrapping_add(s);
                }
                let c = len.min(cap - off);
                if c > 0 {
                    // SAFETY: p..p+c lies in mapped guest memory (walk_chain
                    // checked the whole segment) and dst+off..+c in the buffer's room.
                    unsafe { std::ptr::copy_nonoverlapping(p, dst.add(off), c) };
                    off += c;
                }
            });
            if let Err(v) = walk {
                result = Err(v);
                break;
            }
            self.last_avail = self.last_avail.wrapping_add(1);
            self.put_used(used, u32::from(head), 0);
            used = used.wrapping_add(1);
            let len = total.saturating_sub(hdr);
            if total < hdr || len > cap || len == 0 {
                self.counters.dropped += 1;
                continue;
            }
            buf.set_len(len);
            self.counters.packets += 1;
            self.counters.bytes += len as u64;
            got += 1;
        }
        if used != self.used_idx {
            self.publish_used(used);
        }
        result.map(|()| got)
    }

    /// Enqueues packets for the guest to receive, in order, until one does
    /// not fit in the available buffers; returns how many leading packets
    /// were consumed (copied, or dropped and counted when a packet can never
    /// fit a non-mergeable buffer). The caller frees consumed packets.
    ///
    /// # Errors
    /// A [`Violation`]; packets before it were delivered.
    #[inline]
    pub fn enqueue<B: PktBuf>(&mut self, pkts: &[Option<B>]) -> Result<usize, Violation> {
        self.flush_call();
        let Some(mem) = self.mem.take() else { return Ok(0) };
        let r = self.enqueue_on(&mem, pkts);
        self.mem = Some(mem);
        r
    }

    #[inline]
    fn enqueue_on<B: PktBuf>(&mut self, mem: &GuestMemory, pkts: &[Option<B>]) -> Result<usize, Violation> {
        let avail = self.avail_idx();
        let pending = avail.wrapping_sub(self.last_avail);
        if pending > self.size {
            return Err(Violation::AvailIdx(pending - self.size));
        }
        let hdr_len = self.feat.hdr_len;
        let mergeable = self.feat.mergeable;
        let ahead = usize::from(pending).min(pkts.len()).min(MAX_BATCH);
        for k in 0..ahead {
            self.prefetch_desc(self.avail_entry(self.last_avail.wrapping_add(k as u16)));
        }
        // The first few packets' buffers and their used elements, owned.
        for k in 0..ahead.min(PREFETCH_W_AHEAD) {
            self.prefetch_buf_w(mem, self.avail_entry(self.last_avail.wrapping_add(k as u16)));
        }
        self.prefetch_used(ahead);
        let mut cur = self.last_avail;
        let mut used = self.used_idx;
        let mut done = 0;
        let mut result = Ok(());
        'pkts: for pkt in pkts {
            let Some(pkt) = pkt else { break };
            let data = pkt.data();
            let mut hdr = [0u8; NET_HDR_LEN];
            hdr[NUM_BUFFERS_OFF] = 1;
            let need = hdr_len + data.len();
            let (start_cur, start_used) = (cur, used);
            let mut written = 0usize;
            let mut nbufs: u16 = 0;
            let mut nb_ptr = [std::ptr::null_mut::<u8>(); 2];
            let mut last_head = 0u16;
            while written < need {
                if cur == avail {
                    // Out of guest buffers: this packet stays with the caller.
                    cur = start_cur;
                    used = start_used;
                    break 'pkts;
                }
                let head = self.avail_entry(cur);
                last_head = head;
                cur = cur.wrapping_add(1);
                let next = cur.wrapping_add(PREFETCH_W_AHEAD as u16 - 1);
                if next.wrapping_sub(self.last_avail) < pending {
                    // within what the guest offered
                    self.prefetch_buf_w(mem, self.avail_entry(next));
                }
                let before = written;
                let walk = self.walk_chain(mem, head, true, |p, len| {
                    let (mut p, mut len) = (p, len);
                    if written == 0 && len >= hdr_len && hdr_len == NET_HDR_LEN {
                        // The usual case, the whole header in the first
                        // piece: stored directly, not copied from `hdr` on
                        // the stack. (A copy loads from the stack right
                        // after stores to guest lines still in flight; when
                        // the stack address aliases theirs modulo 4 KiB the
                        // load waits for them, a cross-core round trip per
                        // packet. Measured: memmove 55% of the PMD's time.)
                        //
                        // Each half is stored only if it differs, as DPDK's
                        // vhost library does (ASSIGN_UNLESS_EQUAL). A guest
                        // that recycles its buffers (DPDK's virtio PMD: the
                        // same mbufs for receive and transmit, the transmit
                        // header zeroed) usually has exactly these bytes
                        // there already: the line is then only read, stays
                        // valid in the guest's cache, and its read of
                        // num_buffers does not miss. Measured (perf on
                        // the bench generator): that read fell from 15% of
                        // its time to 4-9%.
                        // SAFETY: p..p+12 lies in mapped guest memory
                        // (walk_chain checked the segment, len >= 12).
                        unsafe {
                            if p.cast::<u64>().read_unaligned() != 0 {
                                p.cast::<u64>().write_unaligned(0);
                            }
                            // csum_offset 0, num_buffers 1 (little endian)
                            let tail = u32::to_le(1 << 16);
                            if p.add(8).cast::<u32>().read_unaligned() != tail {
                                p.add(8).cast::<u32>().write_unaligned(tail);
                            }
                        }
                        if mergeable {
                            nb_ptr = [p.wrapping_add(NUM_BUFFERS_OFF), p.wrapping_add(NUM_BUFFERS_OFF + 1)];
                        }
                        written = hdr_len;
                        p = p.wrapping_add(hdr_len);
                        len -= hdr_len;
                    }
                    while len > 0 && written < need {
                        let (src, n) = if written < hdr_len {
                            let n = (hdr_len - written).min(len);
                            if mergeable {
                                for (k, slot) in nb_ptr.iter_mut().enumerate() {
                                    let at = NUM_BUFFERS_OFF + k;
                                    if (written..written + n).contains(&at) {
                                        *slot = p.wrapping_add(at - written);
                                    }
                                }
                            }
                            (hdr[written..].as_ptr(), n)
                        } else {
                            let o = written - hdr_len;
                            let n = (data.len() - o).min(len);
                            (data[o..].as_ptr(), n)
                        };
                        // SAFETY: p..p+n lies in mapped guest memory (walk_chain
                        // checked the segment, n <= len) and src..src+n in hdr or data.
                        unsafe { std::ptr::copy_nonoverlapping(src, p, n) };
                        written += n;
                        p = p.wrapping_add(n);
                        len -= n;
                    }
                });
                if let Err(v) = walk {
                    cur = start_cur;
                    used = start_used;
                    result = Err(v);
                    break 'pkts;
                }
                let chain_len = u32::try_from(written - before).unwrap_or(u32::MAX);
                self.put_used(used, u32::from(head), chain_len);
                used = used.wrapping_add(1);
                nbufs = nbufs.wrapping_add(1);
                if !mergeable {
                    break;
                }
            }
            if written < need {
                // Without MRG_RXBUF the guest's buffer is too small: the packet
                // is dropped, the buffer handed back empty.
                self.put_used(used.wrapping_sub(1), u32::from(last_head), 0);
                self.counters.dropped += 1;
            } else {
                if nbufs > 1 {
                    let b = nbufs.to_le_bytes();
                    for (k, p) in nb_ptr.iter().enumerate() {
                        if !p.is_null() {
                            // SAFETY: p was a checked guest pointer recorded while copying the header.
                            unsafe { std::ptr::write_volatile(*p, b[k]) };
                        }
                    }
                }
                self.counters.packets += 1;
                self.counters.bytes += data.len() as u64;
            }
            done += 1;
        }
        self.last_avail = cur;
        if used != self.used_idx {
            self.publish_used(used);
        }
        result.map(|()| done)
    }
}

#[cfg(test)]
mod tests;
