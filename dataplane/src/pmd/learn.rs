//! MAC learning from the fast path to the control thread: a PMD records
//! `(datapath, logical port, MAC)` for `put_fdb` (OVN FDB learning), the
//! control socket hands them to petrel-ovn, which writes the Southbound
//! `FDB` rows (ovn-controller's pinctrl `put_fdb`).
//!
//! One writer (the PMD), one reader at a time (the control thread). The
//! ring overwrites its oldest entries when the reader falls behind: losing
//! one is harmless, because a port whose MAC is not learnt yet keeps
//! hitting `put_fdb` on every packet until the `FDB` row exists. Each slot
//! is a seqlock (odd sequence while written), so a reader never takes a
//! torn entry. The hot path does three relaxed stores and two releases: no
//! allocation, no lock, no syscall.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Entries a PMD keeps for the reader.
pub const LEARN_SLOTS: usize = 256;

#[derive(Debug, Default)]
struct Slot {
    seq: AtomicU64,
    /// datapath << 32 | port.
    a: AtomicU64,
    /// MAC in the low 48 bits.
    b: AtomicU64,
}

/// One PMD's learning ring.
#[derive(Debug)]
pub struct LearnRing {
    slots: Box<[Slot]>,
    /// Entries ever written.
    head: AtomicU64,
}

impl Default for LearnRing {
    fn default() -> Self {
        LearnRing { slots: (0..LEARN_SLOTS).map(|_| Slot::default()).collect(), head: AtomicU64::new(0) }
    }
}

/// A learnt address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Learnt {
    /// Datapath key.
    pub datapath: u32,
    /// Logical port key.
    pub port: u32,
    /// The MAC seen as `eth.src`.
    pub mac: [u8; 6],
}

/// The slot of entry `i` (the remainder is < LEARN_SLOTS, so it fits).
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn slot(i: u64) -> usize {
    (i % LEARN_SLOTS as u64) as usize
}

impl LearnRing {
    /// Records an entry (the owning PMD only).
    #[inline]
    pub fn push(&self, datapath: u32, port: u32, mac: [u8; 6]) {
        let h = self.head.load(Relaxed);
        let s = &self.slots[slot(h)];
        let seq = 2 * (h / LEARN_SLOTS as u64) + 1;
        s.seq.store(seq, Relaxed);
        std::sync::atomic::fence(Release);
        s.a.store((u64::from(datapath) << 32) | u64::from(port), Relaxed);
        let mut m = [0u8; 8];
        m[2..].copy_from_slice(&mac);
        s.b.store(u64::from_be_bytes(m), Relaxed);
        s.seq.store(seq + 1, Release);
        self.head.store(h + 1, Release);
    }

    /// Entries written since `cursor` (at most the last [`LEARN_SLOTS`]),
    /// and the cursor to pass next time.
    pub fn read_since(&self, cursor: u64, out: &mut Vec<Learnt>) -> u64 {
        let head = self.head.load(Acquire);
        let start = cursor.max(head.saturating_sub(LEARN_SLOTS as u64));
        for i in start..head {
            let s = &self.slots[slot(i)];
            let want = 2 * (i / LEARN_SLOTS as u64) + 2;
            if s.seq.load(Acquire) != want {
                continue; // being rewritten: newer data, skip
            }
            let (a, b) = (s.a.load(Relaxed), s.b.load(Relaxed));
            std::sync::atomic::fence(Acquire);
            if s.seq.load(Relaxed) != want {
                continue;
            }
            let be = b.to_be_bytes();
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&be[2..]);
            #[allow(clippy::cast_possible_truncation)] // the halves of `a`
            out.push(Learnt { datapath: (a >> 32) as u32, port: a as u32, mac });
        }
        head
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn test_ring_reads_what_was_written_and_survives_overrun() {
        let r = LearnRing::default();
        let mut out = Vec::new();
        r.push(1, 2, [0, 0, 0, 0, 0xaa, 3]);
        let c = r.read_since(0, &mut out);
        assert_eq!(out, vec![Learnt { datapath: 1, port: 2, mac: [0, 0, 0, 0, 0xaa, 3] }]);
        out.clear();
        assert_eq!(r.read_since(c, &mut out), c);
        assert!(out.is_empty());
        for i in 0..(LEARN_SLOTS as u32 + 10) {
            r.push(7, i, [1, 2, 3, 4, 5, 6]);
        }
        let c2 = r.read_since(c, &mut out);
        assert_eq!(out.len(), LEARN_SLOTS, "only the last LEARN_SLOTS are kept");
        assert_eq!(out.last().map(|l| l.port), Some(LEARN_SLOTS as u32 + 9));
        assert_eq!(c2, c + LEARN_SLOTS as u64 + 10);
    }
}
