//! The descriptor-chain walker and the copy loops: a guest that writes
//! arbitrary descriptors, available entries, indexes and buffer contents
//! (addresses mostly steered into its memory so chains get deep). The
//! device must return Ok or a Violation, never touch memory outside the
//! guest's (which would fault), and keep its used index within the ring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_vhost_user::virtq::testing::{MockGuest, VecBuf, BASE, BUFS, MEM_SIZE};
use petrel_vhost_user::virtq::{RingFeatures, NET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let size = 1u16 << (1 + data[0] % 8);
    let feat = RingFeatures { hdr_len: NET_HDR_LEN, mergeable: data[1] & 1 != 0, indirect: data[1] & 2 != 0 };
    let mut g = MockGuest::new(size);
    let mut ring = g.vring(feat).expect("a valid ring");
    let mut rest = &data[4..];
    // Descriptors: 16 bytes each; an address with the top bit clear is an offset into guest memory.
    for i in 0..size {
        if rest.len() < 16 {
            break;
        }
        let (d, r) = rest.split_at(16);
        rest = r;
        let raw = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes"));
        let addr = if raw >> 63 == 0 { BASE + raw % MEM_SIZE } else { raw };
        let len = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes")) % 0x4000;
        let len = if d[15] & 0x80 != 0 { u32::MAX - len } else { len };
        let flags = u16::from_le_bytes([d[12], d[13]]) & 7;
        let next = u16::from(d[14]) % (2 * size);
        g.set_desc(i, addr, len, flags, next);
    }
    // Available entries, then the published index.
    let mut n = 0u16;
    while rest.len() >= 2 && n < size {
        let head = u16::from_le_bytes([rest[0], rest[1]]) % (size + 4);
        g.set_avail_entry(n, head);
        rest = &rest[2..];
        n += 1;
    }
    let idx = u16::from_le_bytes([data[2], data[3]]);
    g.set_avail_idx(idx % (2 * size + 2));
    // Whatever is left is buffer contents (indirect tables may point here).
    let take = rest.len().min(0x1_0000);
    g.write(BUFS, &rest[..take]);
    let mut bufs: [Option<VecBuf>; 32] = Default::default();
    let _ = ring.dequeue(&mut bufs, |s| {
        for b in s.iter_mut() {
            *b = Some(VecBuf::with_room(2048));
        }
        true
    });
    assert!(g.used_idx().wrapping_sub(0) <= 2 * size);
    let pkts = [Some(VecBuf::from_data(&[0xab; 1500])), Some(VecBuf::from_data(&[0xcd; 60]))];
    let _ = ring.enqueue(&pkts);
});
