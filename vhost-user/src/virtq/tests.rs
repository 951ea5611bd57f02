//! In-memory virtqueues (Firecracker `VirtQueue` style): a memfd is the guest
//! memory, the test writes rings and descriptors into it as a driver would.

#![allow(clippy::cast_possible_truncation)]

use super::testing::{MockGuest, VecBuf, BUFS};
use super::*;

const MODERN: RingFeatures = RingFeatures { hdr_len: NET_HDR_LEN, mergeable: true, indirect: true };

fn alloc_all(room: usize) -> impl FnOnce(&mut [Option<VecBuf>]) -> bool {
    move |s: &mut [Option<VecBuf>]| {
        for b in s.iter_mut() {
            *b = Some(VecBuf::with_room(room));
        }
        true
    }
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

#[test]
fn test_dequeue_header_in_same_and_separate_descriptors() {
    let mut g = MockGuest::new(256);
    let mut ring = g.vring(MODERN).expect("activate");
    let a = frame(60, 1);
    let mut one = vec![0u8; NET_HDR_LEN];
    one.extend_from_slice(&a);
    g.write(BUFS, &one);
    g.set_desc(0, BUFS, one.len() as u32, 0, 0);
    g.push_avail(0);
    let b = frame(1500, 2);
    g.write(BUFS + 0x1000, &[0; NET_HDR_LEN]);
    g.write(BUFS + 0x2000, &b[..100]);
    g.write(BUFS + 0x3000, &b[100..]);
    g.set_desc(1, BUFS + 0x1000, NET_HDR_LEN as u32, DESC_F_NEXT, 2);
    g.set_desc(2, BUFS + 0x2000, 100, DESC_F_NEXT, 3);
    g.set_desc(3, BUFS + 0x3000, 1400, 0, 0);
    g.push_avail(1);
    let mut bufs: [Option<VecBuf>; 32] = Default::default();
    let n = ring.dequeue(&mut bufs, alloc_all(2048)).expect("dequeue");
    assert_eq!(n, 2);
    assert_eq!(bufs[0].as_ref().map(PktBuf::data), Some(&a[..]));
    assert_eq!(bufs[1].as_ref().map(PktBuf::data), Some(&b[..]));
    assert_eq!(g.used_idx(), 2);
    assert_eq!(g.used_elem(0), (0, 0));
    assert_eq!(g.used_elem(1), (1, 0));
    // Nothing more: nothing taken, no allocation asked for.
    let n = ring.dequeue(&mut bufs, |_| panic!("no alloc when the ring is empty")).expect("dequeue");
    assert_eq!(n, 0);
}

#[test]
fn test_dequeue_indirect_and_too_long() {
    let mut g = MockGuest::new(64);
    let mut ring = g.vring(MODERN).expect("activate");
    let table = BUFS + 0x8000;
    let p = frame(200, 3);
    g.write(BUFS, &[0; NET_HDR_LEN]);
    g.write(BUFS + 0x100, &p);
    g.set_desc_at(table, 0, BUFS, NET_HDR_LEN as u32, DESC_F_NEXT, 1);
    g.set_desc_at(table, 1, BUFS + 0x100, 200, 0, 0);
    g.set_desc(5, table, 32, DESC_F_INDIRECT, 0);
    g.push_avail(5);
    // 388 bytes, too long for a 250-byte room: dropped, counted, descriptor returned.
    g.set_desc(6, BUFS + 0x100, 400, 0, 0);
    g.push_avail(6);
    let mut bufs: [Option<VecBuf>; 4] = Default::default();
    let n = ring.dequeue(&mut bufs, alloc_all(250)).expect("dequeue");
    assert_eq!(n, 1);
    assert_eq!(bufs[0].as_ref().map(PktBuf::data), Some(&p[..]));
    assert_eq!(ring.counters.dropped, 1);
    assert_eq!(g.used_idx(), 2);
}

fn dequeue_violation(setup: impl FnOnce(&mut MockGuest)) -> Violation {
    let mut g = MockGuest::new(16);
    let mut ring = g.vring(MODERN).expect("activate");
    setup(&mut g);
    let mut bufs: [Option<VecBuf>; 4] = Default::default();
    ring.dequeue(&mut bufs, alloc_all(2048)).expect_err("a violation")
}

#[test]
fn test_dequeue_violations() {
    // A loop: 0 -> 1 -> 0.
    let v = dequeue_violation(|g| {
        g.set_desc(0, BUFS, 64, DESC_F_NEXT, 1);
        g.set_desc(1, BUFS, 64, DESC_F_NEXT, 0);
        g.push_avail(0);
    });
    assert_eq!(v, Violation::ChainLoop);
    // A head past the table.
    let v = dequeue_violation(|g| g.push_avail(16));
    assert_eq!(v, Violation::DescIndex(16));
    // A next past the table.
    let v = dequeue_violation(|g| {
        g.set_desc(0, BUFS, 64, DESC_F_NEXT, 999);
        g.push_avail(0);
    });
    assert_eq!(v, Violation::DescIndex(999));
    // A buffer outside guest memory, and a huge length that runs past it.
    let v = dequeue_violation(|g| {
        g.set_desc(0, 0xdead_0000_0000, 64, 0, 0);
        g.push_avail(0);
    });
    assert_eq!(v, Violation::BadBuffer(0xdead_0000_0000, 64));
    let v = dequeue_violation(|g| {
        g.set_desc(0, BUFS, u32::MAX, 0, 0);
        g.push_avail(0);
    });
    assert_eq!(v, Violation::BadBuffer(BUFS, u64::from(u32::MAX)));
    // The available index runs ahead by more than the ring size.
    let v = dequeue_violation(|g| g.set_avail_idx(17));
    assert_eq!(v, Violation::AvailIdx(1));
    // Device-writable buffer in a transmit chain.
    let v = dequeue_violation(|g| {
        g.set_desc(0, BUFS, 64, DESC_F_WRITE, 0);
        g.push_avail(0);
    });
    assert_eq!(v, Violation::WriteInTx);
    // Indirect tables: nested, misaligned, empty, too long, with NEXT.
    for (addr, len, flags) in [
        (BUFS + 8, 32, DESC_F_INDIRECT),
        (BUFS + 4, 32, DESC_F_INDIRECT),
        (BUFS, 0, DESC_F_INDIRECT),
        (BUFS, 17, DESC_F_INDIRECT),
        (BUFS, 16 * 2000, DESC_F_INDIRECT),
        (BUFS, 32, DESC_F_INDIRECT | DESC_F_NEXT),
    ] {
        let v = dequeue_violation(|g| {
            g.set_desc_at(BUFS + 8, 0, BUFS + 8, 32, DESC_F_INDIRECT, 0);
            g.set_desc(0, addr, len, flags, 1);
            g.push_avail(0);
        });
        assert!(matches!(v, Violation::BadIndirect(..)), "{addr:#x} {len} {flags}: {v:?}");
    }
    // An indirect table that loops on itself.
    let v = dequeue_violation(|g| {
        g.set_desc_at(BUFS, 0, BUFS + 0x100, 64, DESC_F_NEXT, 1);
        g.set_desc_at(BUFS, 1, BUFS + 0x100, 64, DESC_F_NEXT, 0);
        g.set_desc(0, BUFS, 32, DESC_F_INDIRECT, 0);
        g.push_avail(0);
    });
    assert_eq!(v, Violation::ChainLoop);
}

#[test]
fn test_bad_ring_addresses() {
    let g = MockGuest::new(16);
    let mut r = Vring::default();
    let ok = RingAddrs { desc: testing::DESC, avail: testing::AVAIL, used: testing::USED };
    for bad in [
        RingAddrs { desc: 0x1000, ..ok },
        RingAddrs { desc: testing::DESC + 8, ..ok },
        RingAddrs { used: testing::BASE + testing::MEM_SIZE - 8, ..ok },
        RingAddrs { avail: u64::MAX - 1, ..ok },
    ] {
        assert_eq!(r.activate(&g.mem, 16, bad, 0, MODERN, -1), Err(Violation::BadRing), "{bad:?}");
        assert!(!r.is_active());
    }
    assert_eq!(r.activate(&g.mem, 24, ok, 0, MODERN, -1), Err(Violation::BadSize(24)));
    assert_eq!(r.activate(&g.mem, 16, ok, 0, MODERN, -1), Ok(()));
}

#[test]
fn test_enqueue_mergeable() {
    let mut g = MockGuest::new(64);
    let mut ring = g.vring(MODERN).expect("activate");
    // Four 1024-byte receive buffers.
    for i in 0..4u16 {
        g.set_desc(i, BUFS + 0x1000 * u64::from(i), 1024, DESC_F_WRITE, 0);
        g.push_avail(i);
    }
    let small = frame(60, 4);
    let big = frame(1500, 5);
    let pkts = [Some(VecBuf::from_data(&small)), Some(VecBuf::from_data(&big)), Some(VecBuf::from_data(&big))];
    let n = ring.enqueue(&pkts).expect("enqueue");
    // The third does not fit in the one buffer left: it stays with the caller.
    assert_eq!(n, 2);
    assert_eq!(g.used_idx(), 3);
    assert_eq!(g.used_elem(0), (0, (NET_HDR_LEN + 60) as u32));
    let h = g.read(BUFS, NET_HDR_LEN);
    assert_eq!(&h[..10], &[0; 10]);
    assert_eq!(u16::from_le_bytes([h[10], h[11]]), 1);
    assert_eq!(g.read(BUFS + NET_HDR_LEN as u64, 60), small);
    // The big one spans buffers 1 and 2, num_buffers = 2.
    assert_eq!(g.used_elem(1), (1, 1024));
    assert_eq!(g.used_elem(2), (2, (NET_HDR_LEN + 1500 - 1024) as u32));
    let h = g.read(BUFS + 0x1000, NET_HDR_LEN);
    assert_eq!(u16::from_le_bytes([h[10], h[11]]), 2);
    let mut got = g.read(BUFS + 0x1000 + NET_HDR_LEN as u64, 1024 - NET_HDR_LEN);
    got.extend(g.read(BUFS + 0x2000, 1500 - got.len()));
    assert_eq!(got, big);
    // More buffers: the third goes now.
    g.set_desc(4, BUFS + 0x4000, 2048, DESC_F_WRITE, 0);
    g.push_avail(4);
    assert_eq!(ring.enqueue(&pkts[2..]).expect("enqueue"), 1);
    assert_eq!(g.used_idx(), 5);
}

#[test]
fn test_enqueue_header_split_and_violations() {
    let mut g = MockGuest::new(16);
    let mut ring = g.vring(MODERN).expect("activate");
    // A chain whose first descriptor holds only 11 header bytes; two chains needed.
    g.set_desc(0, BUFS, 11, DESC_F_WRITE | DESC_F_NEXT, 1);
    g.set_desc(1, BUFS + 0x100, 50, DESC_F_WRITE, 0);
    g.set_desc(2, BUFS + 0x200, 1000, DESC_F_WRITE, 0);
    g.push_avail(0);
    g.push_avail(2);
    let p = frame(100, 6);
    assert_eq!(ring.enqueue(&[Some(VecBuf::from_data(&p))]).expect("enqueue"), 1);
    let lo = g.read(BUFS + 10, 1)[0];
    let hi = g.read(BUFS + 0x100, 1)[0];
    assert_eq!(u16::from_le_bytes([lo, hi]), 2);
    // A read-only buffer offered for receive.
    g.set_desc(3, BUFS, 1000, 0, 0);
    g.push_avail(3);
    assert_eq!(ring.enqueue(&[Some(VecBuf::from_data(&p))]), Err(Violation::ReadInRx));
}

#[test]
fn test_enqueue_non_mergeable_too_small_is_dropped() {
    let mut g = MockGuest::new(16);
    let feat = RingFeatures { hdr_len: NET_HDR_LEN, mergeable: false, indirect: false };
    let mut ring = g.vring(feat).expect("activate");
    g.set_desc(0, BUFS, 64, DESC_F_WRITE, 0);
    g.push_avail(0);
    let p = frame(100, 7);
    assert_eq!(ring.enqueue(&[Some(VecBuf::from_data(&p))]).expect("enqueue"), 1);
    assert_eq!(ring.counters.dropped, 1);
    assert_eq!(g.used_idx(), 1);
    assert_eq!(g.used_elem(0), (0, 0));
    // Without the feature an indirect descriptor is a violation.
    g.set_desc(1, BUFS, 32, DESC_F_INDIRECT, 0);
    g.push_avail(1);
    assert!(matches!(ring.enqueue(&[Some(VecBuf::from_data(&p))]), Err(Violation::BadIndirect(..))));
}

#[test]
fn test_enqueue_header_overwrites_stale_bytes() {
    // Receive buffers still holding an old header (stale flags, gso,
    // num_buffers) and one holding exactly the header we would write: the
    // header is stored only where it differs, so both must read back right.
    let mut g = MockGuest::new(64);
    let mut ring = g.vring(MODERN).expect("activate");
    for i in 0..3u16 {
        g.set_desc(i, BUFS + 0x1000 * u64::from(i), 1024, DESC_F_WRITE, 0);
        g.push_avail(i);
    }
    g.write(BUFS, &[0xee; 64]);
    // Low half right, num_buffers stale.
    g.write(BUFS + 0x1000, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0]);
    // Exactly right already.
    g.write(BUFS + 0x2000, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    let pkts: Vec<_> = (0..3).map(|k| Some(VecBuf::from_data(&frame(60, k)))).collect();
    assert_eq!(ring.enqueue(&pkts).expect("enqueue"), 3);
    for k in 0..3u8 {
        let at = BUFS + 0x1000 * u64::from(k);
        let h = g.read(at, NET_HDR_LEN);
        assert_eq!(&h[..10], &[0; 10], "buffer {k}");
        assert_eq!(u16::from_le_bytes([h[10], h[11]]), 1, "buffer {k}");
        assert_eq!(g.read(at + NET_HDR_LEN as u64, 60), frame(60, k), "buffer {k}");
    }
}
