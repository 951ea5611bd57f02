//! Owned DPDK packet buffers and the pools they come from.
//!
//! Ownership rule: a `*mut rte_mbuf` that Petrel holds lives in exactly one
//! [`Mbuf`] (or is handed to DPDK by a tx burst, after which we forget it).
//! `Mbuf` frees on drop, so every mbuf is freed exactly once whatever path a
//! packet takes. [`Mbuf`] is `#[repr(transparent)]` over `NonNull`, so an
//! `[Option<Mbuf>; N]` has the layout of `[*mut rte_mbuf; N]` (guaranteed by
//! the null-pointer optimisation) and bursts are received and sent in place.
//!
//! Only single-segment mbufs implement [`PacketBuf`] meaningfully: the PMD
//! drops chained mbufs (`multi_segment`) before touching headers.

use std::ffi::CString;
use std::ptr::NonNull;

use dpdk_sys as sys;

use crate::buf::{BufError, PacketBuf};
use crate::port::eal::{rte_errno, strerror};

/// Errors of pool creation.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum PoolError {
    /// mempool name {0:?} is invalid
    BadName(String),
    /// rte_pktmbuf_pool_create({0}, {1} mbufs) failed: {2} (are enough hugepages reserved?)
    Create(String, u32, String),
}

/// A pool of packet mbufs on hugepage memory.
///
/// Must outlive every [`Mbuf`] taken from it and every port whose queues were
/// set up with it (`petreld` drops ports before pools).
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores; the
// handle is only a pointer to shared DPDK state.
unsafe impl Send for Mempool {}
// SAFETY: as above; all operations we expose are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Default size of an mbuf's data room (2 KiB + headroom), as DPDK's examples use.
    pub const DEFAULT_DATA_ROOM: u16 = 2048 + 128;

    /// Creates a pool of `n` mbufs with a per-lcore cache of `cache` on `socket`
    /// (`-1` = any).
    ///
    /// # Errors
    /// [`PoolError`] when DPDK cannot create it (usually: hugepages exhausted).
    pub fn new(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Self, PoolError> {
        let cname = CString::new(name).map_err(|_| PoolError::BadName(name.to_owned()))?;
        // SAFETY: cname is a valid C string for the call; DPDK copies the name.
        let raw = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| PoolError::Create(name.to_owned(), n, strerror(rte_errno())))
    }

    /// The raw pool pointer, for queue setup.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }

    /// Allocates one mbuf, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for self's lifetime.
        let m = unsafe { sys::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(m).map(Mbuf)
    }

    /// Fills every slot with a fresh mbuf, all or nothing (DPDK
    /// `rte_pktmbuf_alloc_bulk`); returns false, slots untouched, when the
    /// pool has too few. The slots must be empty.
    #[inline]
    pub fn alloc_bulk(&self, slots: &mut [Option<Mbuf>]) -> bool {
        debug_assert!(slots.iter().all(Option::is_none));
        let Ok(n) = u32::try_from(slots.len()) else { return false };
        // SAFETY: `[Option<Mbuf>]` has the layout of `[*mut rte_mbuf]`; DPDK
        // writes n valid, owned mbuf pointers into the (empty) slots or
        // nothing, and returns 0 on success.
        unsafe {
            sys::rte_pktmbuf_alloc_bulk(self.raw.as_ptr(), slots.as_mut_ptr().cast::<*mut sys::rte_mbuf>(), n) == 0
        }
    }

    /// Mbufs currently in the pool (not handed out). Not exact under
    /// concurrent use (per-lcore caches count as available).
    pub fn avail_count(&self) -> u32 {
        // SAFETY: plain query on a valid pool.
        unsafe { sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently handed out.
    pub fn in_use_count(&self) -> u32 {
        // SAFETY: plain query on a valid pool.
        unsafe { sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is ours; by the ownership rule every mbuf and port
        // using it is gone.
        unsafe { sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}

/// One owned mbuf; freed (whole chain) on drop.
#[derive(Debug)]
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf and may move between lcores;
// freeing it from any lcore is allowed by DPDK.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf that nothing else owns or will free.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<sys::rte_mbuf>) -> Self {
        Mbuf(raw)
    }

    /// Gives up ownership, returning the raw pointer (e.g. to a tx burst).
    #[inline]
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let raw = self.0;
        std::mem::forget(self);
        raw
    }

    #[inline]
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for self's lifetime.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: we own a valid mbuf exclusively for self's lifetime.
        unsafe { self.0.as_mut() }
    }

    /// Number of segments in the chain.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.m().nb_segs
    }

    /// Total packet length over all segments.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.m().pkt_len
    }

    /// The DPDK port it was received on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// Address of the first data byte, for prefetching.
    #[inline]
    pub fn data_ptr(&self) -> *const u8 {
        let m = self.m();
        // SAFETY: data_off lies within the buffer by mbuf invariants.
        unsafe { m.buf_addr.cast::<u8>().add(usize::from(m.data_off)) }
    }

    /// Copies the whole packet (all segments) into a fresh single-segment mbuf
    /// from `pool` (for flooding to several ports that may rewrite headers).
    #[inline]
    pub fn copy(&self, pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: self is a valid mbuf, pool a valid pool; the copy is new and
        // owned by nobody else.
        let c = unsafe { sys::rte_pktmbuf_copy(self.0.as_ptr(), pool.as_ptr(), 0, u32::MAX) };
        NonNull::new(c).map(Mbuf)
    }

    /// Tailroom of the first segment.
    #[inline]
    fn tailroom(&self) -> usize {
        let m = self.m();
        usize::from(m.buf_len) - usize::from(m.data_off) - usize::from(m.data_len)
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (chain) and free it exactly once.
        unsafe { sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: the first segment's data_len bytes at data_off are
        // initialised packet bytes inside the buffer, owned by us.
        unsafe { std::slice::from_raw_parts(self.data_ptr(), usize::from(m.data_len)) }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.m().data_len);
        let p = self.data_ptr().cast_mut();
        // SAFETY: as in data(); we own the mbuf exclusively. A refcnt > 1
        // mbuf never reaches here: we copy instead of sharing (Mbuf::copy).
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    #[inline]
    fn headroom(&self) -> usize {
        usize::from(self.m().data_off)
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        // Same arithmetic as rte_pktmbuf_prepend, inline instead of an FFI call per packet.
        let m = self.m_mut();
        let n16 = u16::try_from(n).map_err(|_| BufError::NoHeadroom(n))?;
        if n16 > m.data_off {
            return Err(BufError::NoHeadroom(n));
        }
        m.data_off -= n16;
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        Ok(())
    }

    #[inline]
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        let m = self.m_mut();
        let n16 = u16::try_from(n).map_err(|_| BufError::TooShort(n))?;
        if n16 > m.data_len {
            return Err(BufError::TooShort(n));
        }
        m.data_off += n16;
        m.data_len -= n16;
        m.pkt_len -= u32::from(n16);
        Ok(())
    }

    #[inline]
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        let m = self.m_mut();
        let n16 = u16::try_from(n).map_err(|_| BufError::TooShort(n))?;
        if n16 > m.data_len {
            return Err(BufError::TooShort(n));
        }
        m.data_len -= n16;
        m.pkt_len -= u32::from(n16);
        Ok(())
    }

    #[inline]
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.tailroom() {
            return Err(BufError::NoTailroom(n));
        }
        let n16 = u16::try_from(n).map_err(|_| BufError::NoTailroom(n))?;
        let m = self.m_mut();
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        Ok(())
    }
}

/// Largest burst Petrel receives or sends at once (DPDK's usual 32).
pub const BURST: usize = 32;

/// A fixed array of owned mbufs, reused for every burst (no allocation).
///
/// Slots `0..len` may hold mbufs; slots past `len` are `None`. Dropping the
/// burst frees whatever it still holds.
#[derive(Debug)]
pub struct Burst<const N: usize> {
    pkts: [Option<Mbuf>; N],
    len: usize,
}

impl<const N: usize> Default for Burst<N> {
    fn default() -> Self {
        Burst { pkts: [const { None }; N], len: 0 }
    }
}

impl<const N: usize> Burst<N> {
    /// Number of slots filled by the last receive (some may since be taken).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is filled.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free slots at the end.
    #[inline]
    pub fn room(&self) -> usize {
        N - self.len
    }

    /// Takes the mbuf out of slot `i`.
    #[inline]
    pub fn take(&mut self, i: usize) -> Option<Mbuf> {
        self.pkts.get_mut(i).and_then(Option::take)
    }

    /// The mbuf in slot `i`, if any.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&Mbuf> {
        self.pkts.get(i).and_then(Option::as_ref)
    }

    /// Appends an mbuf; gives it back if the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(m);
        }
        self.pkts[self.len] = Some(m);
        self.len += 1;
        Ok(())
    }

    /// Frees every held mbuf and empties the burst.
    #[inline]
    pub fn clear(&mut self) {
        for slot in &mut self.pkts[..self.len] {
            *slot = None;
        }
        self.len = 0;
    }

    /// Raw pointer to the slot array for DPDK to fill (rx) or read (tx).
    ///
    /// `[Option<Mbuf>; N]` has the layout of `[*mut rte_mbuf; N]`.
    #[inline]
    pub(crate) fn raw_slots(&mut self) -> *mut *mut sys::rte_mbuf {
        self.pkts.as_mut_ptr().cast::<*mut sys::rte_mbuf>()
    }

    /// Records that DPDK wrote `n` valid mbufs into the (empty) slots.
    ///
    /// # Safety
    /// The burst must have been empty and DPDK must have written `n` valid,
    /// owned mbuf pointers into slots `0..n`.
    #[inline]
    pub(crate) unsafe fn set_received(&mut self, n: usize) {
        debug_assert!(self.len == 0 && n <= N);
        self.len = n;
    }

    /// Forgets the first `n` mbufs (DPDK took them in a tx burst) and moves
    /// the rest to the front.
    ///
    /// # Safety
    /// DPDK must have taken ownership of exactly slots `0..n`.
    #[inline]
    pub(crate) unsafe fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        for slot in &mut self.pkts[..n] {
            if let Some(m) = slot.take() {
                std::mem::forget(m);
            }
        }
        self.pkts[..self.len].rotate_left(n);
        self.len -= n;
    }

    /// Lets `fill` write packets into the (empty) burst's slots; it returns
    /// how many leading slots hold packets. Mbufs it left in later slots
    /// (allocated but not needed) are freed.
    #[inline]
    pub fn fill_with(&mut self, fill: impl FnOnce(&mut [Option<Mbuf>]) -> usize) -> usize {
        debug_assert!(self.len == 0);
        let n = fill(&mut self.pkts).min(N);
        for slot in &mut self.pkts[n..] {
            if slot.take().is_none() {
                break;
            }
        }
        self.len = n;
        n
    }

    /// The filled slots, for copying out (vhost-user enqueue).
    #[inline]
    pub fn slots(&self) -> &[Option<Mbuf>] {
        &self.pkts[..self.len]
    }

    /// Frees the first `n` packets (copied out, e.g. into a guest's buffers)
    /// in one `rte_pktmbuf_free_bulk` and moves the rest to the front.
    #[inline]
    pub fn free_front(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        let count = u32::try_from(n).expect("a burst is far below u32::MAX");
        // SAFETY: slots 0..n hold owned mbufs or None (null, which DPDK
        // skips); after the bulk free we forget them exactly once.
        unsafe {
            sys::rte_pktmbuf_free_bulk(self.raw_slots(), count);
            self.consumed(n);
        }
    }

    /// Moves the filled slots to the front, dropping `None` holes.
    #[inline]
    pub fn compact(&mut self) {
        let mut w = 0;
        for r in 0..self.len {
            if self.pkts[r].is_some() {
                self.pkts.swap(w, r);
                w += 1;
            }
        }
        self.len = w;
    }
}

const _: () = assert!(std::mem::size_of::<Option<Mbuf>>() == std::mem::size_of::<*mut sys::rte_mbuf>());

impl petrel_vhost_user::PktBuf for Mbuf {
    #[inline]
    fn room(&mut self) -> &mut [u8] {
        let m = self.m();
        let room = usize::from(m.buf_len) - usize::from(m.data_off);
        let p = self.data_ptr().cast_mut();
        // SAFETY: buf_len - data_off bytes from the data start lie inside the
        // mbuf's buffer, which we own exclusively (single segment, refcnt 1:
        // vhost dequeue fills fresh mbufs only).
        unsafe { std::slice::from_raw_parts_mut(p, room) }
    }

    #[inline]
    fn set_len(&mut self, len: usize) {
        let len = u16::try_from(len).expect("vhost dequeue never exceeds the room (< 64 KiB)");
        let m = self.m_mut();
        m.data_len = len;
        m.pkt_len = u32::from(len);
    }

    #[inline]
    fn data(&self) -> &[u8] {
        <Self as PacketBuf>::data(self)
    }
}

impl Mbuf {
    /// Prefetches the first cache line of packet data (DPDK `rte_prefetch0`).
    #[inline]
    pub fn prefetch_data(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint; it never faults, even on a bad address,
        // and data_ptr points into this mbuf's buffer anyway.
        unsafe {
            core::arch::x86_64::_mm_prefetch(self.data_ptr().cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
        }
    }
}
