//! Guest memory: the regions a frontend shares with `SET_MEM_TABLE`, mapped
//! into this process, and the translation of guest addresses to host
//! pointers.
//!
//! Invariants:
//! - a [`GuestMemory`] owns its mappings; they stay mapped until it is
//!   dropped, and it is dropped only on the management thread, after every
//!   vring that holds a clone of its `Arc` has been quiesced and cleared;
//! - every pointer handed out ([`GuestMemory::gpa_chunk`],
//!   [`GuestMemory::gpa_range`], [`GuestMemory::uva_range`]) lies, together
//!   with the length it was checked for, inside one mapped region, so a
//!   caller that stays within that length never touches memory outside the
//!   pod's own shared memory;
//! - the backing files are regular files at least as large as the mapped
//!   range (checked with `fstat` before `mmap`), so an honest frontend
//!   cannot make us fault. A frontend that shrinks its file *after* the
//!   mapping (ftruncate) can still raise SIGBUS, as with DPDK's vhost
//!   library; sealing (`F_SEAL_SHRINK`) is the frontend's business.

// Guest addresses and lengths are u64, host ones usize: this crate builds only for
// 64-bit targets (lib.rs), where u64 -> usize cannot truncate; descriptor fields are
// unpacked from one u64 on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::fs::File;
use std::os::unix::io::AsRawFd;

/// At most this many regions (the vhost-user limit without
/// `CONFIGURE_MEM_SLOTS`, which we do not offer).
pub const MAX_REGIONS: usize = 8;

/// One region as the frontend describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpec {
    /// Guest physical address of the first byte.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// The frontend's own virtual address of the first byte (rings are given in these).
    pub uva: u64,
    /// Offset of the region in the file.
    pub mmap_offset: u64,
}

/// Errors of mapping a memory table.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum MemError {
    /// {0} regions in a memory table, at most 8 are allowed
    TooManyRegions(usize),
    /// the memory table has {0} regions but {1} file descriptors
    FdCount(usize, usize),
    /// region {0} is empty or its addresses overflow
    BadRegion(usize),
    /// region {0} overlaps region {1} in guest physical or frontend addresses
    Overlap(usize, usize),
    /// region {0}: the file is not a regular file
    NotRegularFile(usize),
    /// region {0}: the file has {1} bytes, the region needs {2}
    FileTooSmall(usize, u64, u64),
    /// region {0}: fstat failed: {1}
    Fstat(usize, std::io::Error),
    /// region {0}: mmap of {1} bytes failed: {2}
    Mmap(usize, u64, std::io::Error),
}

#[derive(Debug)]
struct Region {
    gpa: u64,
    size: u64,
    uva: u64,
    /// Host address of the region's first byte (`base + mmap_offset`).
    host: usize,
    /// What to munmap.
    base: usize,
    map_len: usize,
}

/// The mapped memory of one frontend.
#[derive(Debug)]
pub struct GuestMemory {
    regions: Vec<Region>,
}

// SAFETY: the mappings are plain shared memory, valid until drop; the raw
// addresses carry no thread affinity.
unsafe impl Send for GuestMemory {}
// SAFETY: translation only reads the immutable region table.
unsafe impl Sync for GuestMemory {}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

impl GuestMemory {
    /// An empty memory (translates nothing); for tests.
    pub fn empty() -> Self {
        GuestMemory { regions: Vec::new() }
    }

    /// Validates a memory table and maps every region (read/write, shared).
    ///
    /// # Errors
    /// [`MemError`] naming the region and the check that failed; nothing
    /// stays mapped on error.
    pub fn map(specs: &[RegionSpec], files: &[File]) -> Result<Self, MemError> {
        if specs.len() > MAX_REGIONS {
            return Err(MemError::TooManyRegions(specs.len()));
        }
        if specs.len() != files.len() {
            return Err(MemError::FdCount(specs.len(), files.len()));
        }
        for (i, s) in specs.iter().enumerate() {
            let end_ok = s.gpa.checked_add(s.size).is_some()
                && s.uva.checked_add(s.size).is_some()
                && s.mmap_offset.checked_add(s.size).is_some_and(|e| e <= i64::MAX as u64);
            if s.size == 0 || !end_ok || usize::try_from(s.size).is_err() {
                return Err(MemError::BadRegion(i));
            }
            for (j, t) in specs[..i].iter().enumerate() {
                if overlaps(s.gpa, s.size, t.gpa, t.size) || overlaps(s.uva, s.size, t.uva, t.size) {
                    return Err(MemError::Overlap(i, j));
                }
            }
        }
        let mut mem = GuestMemory { regions: Vec::with_capacity(specs.len()) };
        for (i, (s, f)) in specs.iter().zip(files).enumerate() {
            mem.regions.push(map_one(i, s, f)?);
        }
        Ok(mem)
    }

    /// Number of regions.
    pub fn n_regions(&self) -> usize {
        self.regions.len()
    }

    /// The host pointer for guest physical address `gpa` and how many bytes
    /// from there are mapped contiguously (to the end of its region).
    #[inline]
    pub fn gpa_chunk(&self, gpa: u64) -> Option<(*mut u8, u64)> {
        for r in &self.regions {
            let off = gpa.wrapping_sub(r.gpa);
            if off < r.size {
                let p = r.host.wrapping_add(off as usize) as *mut u8;
                return Some((p, r.size - off));
            }
        }
        None
    }

    /// The host pointer for `[gpa, gpa + len)` if all of it lies in one region.
    #[inline]
    pub fn gpa_range(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        match self.gpa_chunk(gpa) {
            Some((p, avail)) if len <= avail => Some(p),
            _ => None,
        }
    }

    /// The host pointer for the frontend virtual range `[uva, uva + len)`
    /// (ring addresses) if all of it lies in one region.
    pub fn uva_range(&self, uva: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let off = uva.wrapping_sub(r.uva);
            if off < r.size && len <= r.size - off {
                return Some(r.host.wrapping_add(off as usize) as *mut u8);
            }
        }
        None
    }
}

fn map_one(i: usize, s: &RegionSpec, f: &File) -> Result<Region, MemError> {
    let meta = f.metadata().map_err(|e| MemError::Fstat(i, e))?;
    if !meta.file_type().is_file() {
        return Err(MemError::NotRegularFile(i));
    }
    let need = s.mmap_offset + s.size;
    if meta.len() < need {
        return Err(MemError::FileTooSmall(i, meta.len(), need));
    }
    // hugetlbfs needs a length that is a multiple of its page size (st_blksize).
    let blk = std::os::unix::fs::MetadataExt::blksize(&meta).max(4096);
    let map_len = need.div_ceil(blk).saturating_mul(blk).min(meta.len().max(need));
    let map_len_usize = usize::try_from(map_len).map_err(|_| MemError::BadRegion(i))?;
    // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks
    // the address, so nothing of ours is overwritten. The result is checked.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len_usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            f.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(MemError::Mmap(i, map_len, std::io::Error::last_os_error()));
    }
    let base = base as usize;
    Ok(Region {
        gpa: s.gpa,
        size: s.size,
        uva: s.uva,
        host: base + s.mmap_offset as usize,
        base,
        map_len: map_len_usize,
    })
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for r in &self.regions {
            // SAFETY: (base, map_len) is exactly a mapping made in map_one and
            // not unmapped before; nothing uses it any more (module invariant).
            unsafe { libc::munmap(r.base as *mut libc::c_void, r.map_len) };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A memfd of `len` bytes.
    pub(crate) fn memfd(len: u64) -> File {
        // SAFETY: a valid C string; the fd returned is checked and owned by the File.
        let fd = unsafe { libc::memfd_create(c"petrel-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let f = unsafe { <File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) };
        f.set_len(len).expect("set_len");
        f
    }

    #[test]
    fn test_map_translate() {
        let mut f = memfd(1 << 20);
        f.write_all(b"hello").expect("write");
        let specs = [RegionSpec { gpa: 0x1000_0000, size: 1 << 20, uva: 0x7000_0000, mmap_offset: 0 }];
        let m = GuestMemory::map(&specs, &[f]).expect("map");
        let p = m.gpa_range(0x1000_0000, 5).expect("in range");
        // SAFETY: 5 bytes inside the mapping.
        assert_eq!(unsafe { std::slice::from_raw_parts(p, 5) }, b"hello");
        assert!(m.gpa_range(0x1000_0000 + (1 << 20) - 4, 5).is_none());
        assert!(m.gpa_range(0x0fff_ffff, 1).is_none());
        assert!(m.gpa_range(u64::MAX, 2).is_none());
        assert_eq!(m.gpa_chunk(0x1000_0000 + 10).map(|c| c.1), Some((1 << 20) - 10));
        assert!(m.uva_range(0x7000_0000, 1 << 20).is_some());
        assert!(m.uva_range(0x7000_0001, 1 << 20).is_none());
    }

    #[test]
    fn test_reject_bad_tables() {
        let spec = RegionSpec { gpa: 0, size: 8192, uva: 0, mmap_offset: 0 };
        assert!(matches!(GuestMemory::map(&[spec], &[memfd(4096)]), Err(MemError::FileTooSmall(0, 4096, 8192))));
        assert!(matches!(GuestMemory::map(&[spec], &[]), Err(MemError::FdCount(1, 0))));
        let huge = RegionSpec { gpa: u64::MAX - 10, size: 4096, uva: 0, mmap_offset: 0 };
        assert!(matches!(GuestMemory::map(&[huge], &[memfd(4096)]), Err(MemError::BadRegion(0))));
        let a = RegionSpec { gpa: 0, size: 4096, uva: 0, mmap_offset: 0 };
        let b = RegionSpec { gpa: 2048, size: 4096, uva: 1 << 30, mmap_offset: 0 };
        assert!(matches!(GuestMemory::map(&[a, b], &[memfd(4096), memfd(4096)]), Err(MemError::Overlap(1, 0))));
        let dir = File::open("/").expect("open /");
        assert!(matches!(GuestMemory::map(&[a], &[dir]), Err(MemError::NotRegularFile(0))));
    }
}
