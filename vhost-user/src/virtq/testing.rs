//! A driver-side model of a split virtqueue over a memfd, for unit tests and
//! fuzz targets (Firecracker's `VirtQueue`): it writes descriptors and the
//! available ring as a guest would and reads back the used ring.
//!
//! Layout (guest physical = frontend virtual addresses): descriptor table at
//! [`DESC`], available ring at [`AVAIL`], used ring at [`USED`], buffers from
//! [`BUFS`] up to [`MEM_SIZE`].

use std::fs::File;
use std::sync::Arc;

use crate::memory::{GuestMemory, RegionSpec};
use crate::virtq::{RingAddrs, RingFeatures, Violation, Vring};
use crate::PktBuf;

/// The TSC, as the rings read it for their interrupt throttle.
pub fn tsc() -> u64 {
    super::now_ticks()
}

/// Guest address of the memory's first byte.
pub const BASE: u64 = 0x10_0000;
/// Descriptor table.
pub const DESC: u64 = BASE;
/// Available ring.
pub const AVAIL: u64 = BASE + 0x8_0000;
/// Used ring.
pub const USED: u64 = BASE + 0x9_0000;
/// First buffer byte.
pub const BUFS: u64 = BASE + 0x10_0000;
/// Size of the memory.
pub const MEM_SIZE: u64 = 0x20_0000;

/// A packet buffer on the heap, for tests.
#[derive(Debug, Clone)]
pub struct VecBuf {
    /// Storage (its length is the room).
    pub buf: Vec<u8>,
    /// Packet length.
    pub len: usize,
}

impl VecBuf {
    /// An empty buffer with `room` bytes of room.
    pub fn with_room(room: usize) -> Self {
        VecBuf { buf: vec![0; room], len: 0 }
    }

    /// A buffer holding `data`.
    pub fn from_data(data: &[u8]) -> Self {
        VecBuf { buf: data.to_vec(), len: data.len() }
    }
}

impl PktBuf for VecBuf {
    fn room(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn set_len(&mut self, len: usize) {
        self.len = len;
    }
    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The guest side of one virtqueue.
#[derive(Debug)]
pub struct MockGuest {
    /// The memory (the device maps the same memfd separately, like a real backend).
    pub mem: Arc<GuestMemory>,
    /// Queue size.
    pub size: u16,
    avail_idx: u16,
    file: File,
}

fn memfd(len: u64) -> File {
    // SAFETY: a valid C string; the returned fd is checked and then owned by the File.
    let fd = unsafe { libc::memfd_create(c"petrel-mock".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let f = unsafe { <File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) };
    f.set_len(len).expect("memfd set_len");
    f
}

impl MockGuest {
    /// A guest with one queue of `size` entries.
    ///
    /// # Panics
    /// If the memfd cannot be made or mapped.
    pub fn new(size: u16) -> Self {
        let f = memfd(MEM_SIZE);
        let spec = RegionSpec { gpa: BASE, size: MEM_SIZE, uva: BASE, mmap_offset: 0 };
        let mem = GuestMemory::map(&[spec], std::slice::from_ref(&f)).expect("map");
        MockGuest { mem: Arc::new(mem), size, avail_idx: 0, file: f }
    }

    /// The memfd backing the memory (to pass in SET_MEM_TABLE).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A device-side ring on this guest's queue.
    ///
    /// # Errors
    /// As [`Vring::activate`].
    pub fn vring(&self, feat: RingFeatures) -> Result<Vring, Violation> {
        let mut r = Vring::default();
        let addrs = RingAddrs { desc: DESC, avail: AVAIL, used: USED };
        r.activate(&self.mem, u32::from(self.size), addrs, 0, feat, -1)?;
        Ok(r)
    }

    /// Writes bytes at a guest address.
    ///
    /// # Panics
    /// If the range is outside the memory.
    pub fn write(&self, gpa: u64, data: &[u8]) {
        let p = self.mem.gpa_range(gpa, data.len() as u64).expect("write inside guest memory");
        // SAFETY: the range was checked to be mapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    }

    /// Reads bytes at a guest address.
    ///
    /// # Panics
    /// If the range is outside the memory.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let p = self.mem.gpa_range(gpa, len as u64).expect("read inside guest memory");
        // SAFETY: the range was checked to be mapped.
        unsafe { std::slice::from_raw_parts(p, len).to_vec() }
    }

    /// Writes descriptor `i`.
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.set_desc_at(DESC, i, addr, len, flags, next);
    }

    /// Writes descriptor `i` of a table at `table` (indirect tables).
    pub fn set_desc_at(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.write(table + 16 * u64::from(i), &d);
    }

    /// Makes `head` available and publishes the index.
    pub fn push_avail(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.write(AVAIL + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write(AVAIL + 2, &self.avail_idx.to_le_bytes());
    }

    /// Sets the published available index directly (to test bad indexes).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.write(AVAIL + 2, &idx.to_le_bytes());
    }

    /// Writes an available ring entry without publishing.
    pub fn set_avail_entry(&self, slot: u16, head: u16) {
        self.write(AVAIL + 4 + 2 * u64::from(slot % self.size), &head.to_le_bytes());
    }

    /// The used index the device published.
    pub fn used_idx(&self) -> u16 {
        let b = self.read(USED + 2, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    /// Used element `i`: (id, len).
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let b = self.read(USED + 4 + 8 * u64::from(i % self.size), 8);
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
    }
}
