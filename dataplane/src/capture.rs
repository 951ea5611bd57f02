//! Packet capture from the fast path (`petrelctl capture`): a bounded
//! single-producer single-consumer ring a PMD copies frames into and the
//! control thread drains, and the pcap format the client writes.
//!
//! One ring per (capture session, PMD): the PMD is the only writer, the
//! control thread serving the session the only reader. The ring is built
//! of atomics only (no `unsafe`): a frame is copied as little-endian
//! 64-bit words with relaxed stores, then published by a release store of
//! `head`; the reader acquires `head`, reads the slot, and hands the slot
//! back with a release store of `tail`. When the ring is full the frame is
//! not captured (counted in [`CaptureRing::n_dropped`]); forwarding is
//! never held up by a slow reader. Frames longer than the snap length are
//! truncated, their original length kept (as tcpdump's `-s`).
//!
//! Invariants: `tail <= head <= tail + slots`; only the producer stores
//! `head` and `dropped`, only the consumer stores `tail`.

use std::io::{self, Write};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Direction of a captured frame, as the port sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Received from the port (sent by the pod).
    Rx,
    /// Sent to the port (received by the pod).
    Tx,
}

/// Default frames a ring holds.
pub const DEFAULT_SLOTS: usize = 1024;
/// Default and largest snap length (bytes kept of each frame).
pub const MAX_SNAPLEN: usize = 9216;
/// Default snap length: a standard frame with a VLAN tag and then some.
pub const DEFAULT_SNAPLEN: usize = 2048;

/// A captured frame, as the reader gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// TSC when the PMD saw it.
    pub tsc: u64,
    /// Direction.
    pub dir: Dir,
    /// Length on the wire.
    pub orig_len: u32,
    /// The first `min(orig_len, snaplen)` bytes.
    pub data: Vec<u8>,
}

/// One PMD's capture ring for one session.
#[derive(Debug)]
pub struct CaptureRing {
    /// Per slot: `[tsc, dir << 32 | orig_len, cap_len, words...]`.
    slots: Box<[AtomicU64]>,
    n_slots: u64,
    /// Words per slot (3 header words, then the data).
    stride: usize,
    snaplen: usize,
    head: AtomicU64,
    tail: AtomicU64,
    dropped: AtomicU64,
}

const HDR_WORDS: usize = 3;

impl CaptureRing {
    /// A ring of `slots` frames of at most `snaplen` bytes (clamped to
    /// 1..=[`MAX_SNAPLEN`], at least one slot).
    pub fn new(slots: usize, snaplen: usize) -> Self {
        let snaplen = snaplen.clamp(1, MAX_SNAPLEN);
        let slots = slots.max(1);
        let stride = HDR_WORDS + snaplen.div_ceil(8);
        CaptureRing {
            slots: (0..slots * stride).map(|_| AtomicU64::new(0)).collect(),
            n_slots: u64::try_from(slots).unwrap_or(u64::MAX),
            stride,
            snaplen,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Snap length in bytes.
    pub fn snaplen(&self) -> usize {
        self.snaplen
    }

    /// Frames not captured because the ring was full.
    pub fn n_dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Frames captured so far (read or not).
    pub fn n_captured(&self) -> u64 {
        self.head.load(Relaxed)
    }

    fn base(&self, i: u64) -> usize {
        // The remainder is below n_slots, which came from a usize.
        usize::try_from(i % self.n_slots).unwrap_or(0) * self.stride
    }

    /// Copies `frame` in (the producer: one PMD). Returns whether it was
    /// captured (false: the ring is full; counted).
    #[inline]
    pub fn push(&self, tsc: u64, dir: Dir, frame: &[u8]) -> bool {
        let head = self.head.load(Relaxed);
        if head - self.tail.load(Acquire) >= self.n_slots {
            self.dropped.store(self.dropped.load(Relaxed) + 1, Relaxed);
            return false;
        }
        let b = self.base(head);
        let cap = frame.len().min(self.snaplen);
        let s = &self.slots[b..b + self.stride];
        s[0].store(tsc, Relaxed);
        let dir_bit = match dir {
            Dir::Rx => 0,
            Dir::Tx => 1u64 << 32,
        };
        s[1].store(
            dir_bit | u64::try_from(frame.len()).unwrap_or(u64::from(u32::MAX)).min(u64::from(u32::MAX)),
            Relaxed,
        );
        s[2].store(u64::try_from(cap).unwrap_or(0), Relaxed);
        for (w, chunk) in s[HDR_WORDS..].iter().zip(frame[..cap].chunks(8)) {
            let mut x = [0u8; 8];
            x[..chunk.len()].copy_from_slice(chunk);
            w.store(u64::from_le_bytes(x), Relaxed);
        }
        self.head.store(head + 1, Release);
        true
    }

    /// Takes the oldest frame, if any (the consumer: one thread at a time).
    pub fn pop(&self) -> Option<Record> {
        let tail = self.tail.load(Relaxed);
        if tail == self.head.load(Acquire) {
            return None;
        }
        let b = self.base(tail);
        let s = &self.slots[b..b + self.stride];
        let tsc = s[0].load(Relaxed);
        let m = s[1].load(Relaxed);
        let cap = usize::try_from(s[2].load(Relaxed)).unwrap_or(0).min(self.snaplen);
        let mut data = Vec::with_capacity(cap.next_multiple_of(8));
        for w in &s[HDR_WORDS..HDR_WORDS + cap.div_ceil(8)] {
            data.extend_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        data.truncate(cap);
        self.tail.store(tail + 1, Release);
        let dir = if m >> 32 & 1 == 1 { Dir::Tx } else { Dir::Rx };
        Some(Record { tsc, dir, orig_len: u32::try_from(m & 0xffff_ffff).unwrap_or(u32::MAX), data })
    }
}

/// Writes a classic pcap file header (microsecond timestamps, Ethernet).
///
/// # Errors
/// The writer's.
pub fn write_pcap_header(w: &mut impl Write, snaplen: u32) -> io::Result<()> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    h.extend_from_slice(&snaplen.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    w.write_all(&h)
}

/// Writes one pcap record: the frame's first bytes `data`, its length on
/// the wire `orig_len`, at `unix_ns` nanoseconds since the epoch.
///
/// # Errors
/// The writer's.
pub fn write_pcap_record(w: &mut impl Write, unix_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
    let mut h = Vec::with_capacity(16 + data.len());
    let secs = u32::try_from(unix_ns / 1_000_000_000).unwrap_or(u32::MAX);
    let usecs = u32::try_from(unix_ns % 1_000_000_000 / 1000).unwrap_or(0);
    h.extend_from_slice(&secs.to_le_bytes());
    h.extend_from_slice(&usecs.to_le_bytes());
    h.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    h.extend_from_slice(&orig_len.to_le_bytes());
    h.extend_from_slice(data);
    w.write_all(&h)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use super::*;

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn test_ring_round_trip_every_length() {
        let r = CaptureRing::new(4, 64);
        for len in 0..=70usize {
            let f = frame(len, len as u8);
            assert!(r.push(len as u64, if len % 2 == 0 { Dir::Rx } else { Dir::Tx }, &f));
            let got = r.pop().unwrap();
            assert_eq!(got.tsc, len as u64);
            assert_eq!(got.orig_len as usize, len);
            assert_eq!(got.dir, if len % 2 == 0 { Dir::Rx } else { Dir::Tx });
            assert_eq!(got.data, f[..len.min(64)], "len {len}");
        }
        assert!(r.pop().is_none());
    }

    #[test]
    fn test_ring_full_drops_and_counts() {
        let r = CaptureRing::new(3, 16);
        for i in 0..5u8 {
            let _ = r.push(u64::from(i), Dir::Rx, &[i; 10]);
        }
        assert_eq!(r.n_dropped(), 2);
        assert_eq!(r.n_captured(), 3);
        let got: Vec<u8> = std::iter::from_fn(|| r.pop()).map(|x| x.data[0]).collect();
        assert_eq!(got, [0, 1, 2], "the oldest are kept, in order");
        assert!(r.push(9, Dir::Tx, &[9; 3]), "room again after reading");
        assert_eq!(r.pop().unwrap().data, [9; 3]);
    }

    #[test]
    fn test_ring_across_threads_in_order() {
        let r = std::sync::Arc::new(CaptureRing::new(8, 32));
        let w = std::sync::Arc::clone(&r);
        let t = std::thread::spawn(move || {
            let mut n = 0u64;
            while n < 10_000 {
                if w.push(n, Dir::Rx, &n.to_le_bytes().repeat(4)) {
                    n += 1;
                }
            }
        });
        let mut next = 0u64;
        while next < 10_000 {
            if let Some(rec) = r.pop() {
                assert_eq!(rec.tsc, next);
                assert_eq!(rec.data, next.to_le_bytes().repeat(4), "no torn frame");
                next += 1;
            }
        }
        t.join().unwrap();
    }

    #[test]
    fn test_pcap_bytes() {
        let mut v = Vec::new();
        write_pcap_header(&mut v, 2048).unwrap();
        write_pcap_record(&mut v, 1_700_000_000_123_456_789, 100, &[1, 2, 3]).unwrap();
        assert_eq!(&v[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&v[16..20], &2048u32.to_le_bytes());
        assert_eq!(&v[24..28], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&v[28..32], &123_456u32.to_le_bytes());
        assert_eq!(&v[32..36], &3u32.to_le_bytes());
        assert_eq!(&v[36..40], &100u32.to_le_bytes());
        assert_eq!(&v[40..], &[1, 2, 3]);
    }
}
