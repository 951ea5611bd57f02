//! The Internet checksum (RFC 1071) and what the NIC does of it for us.
//!
//! All functions here return the *folded one's-complement sum* (not yet
//! inverted), so partial sums can be [`combine`]d; a header's checksum field
//! holds `!sum`, and a header whose field is included in the sum verifies when
//! the sum is `0xffff` (RFC 1071 §1).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Folds a wide one's-complement accumulator into 16 bits.
#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    // Each step adds the carries back in (end-around carry, RFC 1071 §2(B));
    // after four steps the value fits in 16 bits.
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let [lo, hi, ..] = sum.to_le_bytes();
    u16::from_le_bytes([lo, hi])
}

/// The one's-complement sum of `data` taken as big-endian 16-bit words, an
/// odd final byte padded with zero (RFC 1071 §4.1), folded to 16 bits.
#[inline]
pub fn data(data: &[u8]) -> u16 {
    // Summing 32-bit words into two 64-bit accumulators is equivalent to
    // summing 16-bit words (one's-complement addition is associative and
    // byte-order independent, RFC 1071 §2(A, B)) and keeps two adders busy.
    let mut a: u64 = 0;
    let mut b: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        a += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        b += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        a += u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        b += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&last) = rest.first() {
        b += u64::from(last) << 8;
    }
    fold(a + b)
}

/// The one's-complement sum of several partial sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The IPv4 pseudo-header sum for TCP/UDP (RFC 768, RFC 9293 §3.1):
/// source, destination, zero, protocol and the upper-layer length.
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let s = u32::from_be_bytes(src.octets());
    let d = u32::from_be_bytes(dst.octets());
    fold(u64::from(s) + u64::from(d) + u64::from(protocol) + u64::from(length))
}

/// The IPv6 pseudo-header sum for upper-layer checksums (RFC 8200 §8.1):
/// source, destination, 32-bit upper-layer length, three zero bytes and the
/// next header.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let addr = u64::from(data(&s)) + u64::from(data(&d));
    fold(addr + u64::from(length) + u64::from(next_header))
}

/// The pseudo-header sum for either family. Mixed families cannot occur on
/// the wire; they are summed as IPv4-mapped IPv6 so that this never panics.
#[inline]
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: u8, length: u32) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // An IPv4 upper-layer length fits 16 bits; larger values are
            // folded like any other sum term.
            let (s, d) = (u32::from_be_bytes(s.octets()), u32::from_be_bytes(d.octets()));
            fold(u64::from(s) + u64::from(d) + u64::from(protocol) + u64::from(length))
        }
        _ => pseudo_header_v6(&to_v6(src), &to_v6(dst), protocol, length),
    }
}

fn to_v6(a: &IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => *a,
    }
}

/// Adds `value` to a stored checksum field as RFC 1624 incremental update
/// does (`HC' = ~(~HC + m')` for a field `m` that was zero when `HC` was
/// computed).
#[inline]
pub fn add_to_field(field: u16, value: u16) -> u16 {
    !combine(&[!field, value])
}

/// Who does one checksum: `tx` = the NIC fills it on transmit (software
/// leaves it for the NIC), `rx` = the NIC verifies it on receive (software
/// trusts the NIC's verdict and skips its own check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Offload {
    /// The NIC computes this checksum on transmit.
    pub tx: bool,
    /// The NIC verifies this checksum on receive.
    pub rx: bool,
}

/// Which checksums the NIC handles, passed to every emitter and verifier as
/// smoltcp passes `ChecksumCapabilities`, so that offloaded work is skipped.
///
/// The default offloads nothing: software computes and verifies everything.
///
/// When a TX checksum is offloaded the emitter writes what DPDK's TX offload
/// (`RTE_MBUF_F_TX_IP_CKSUM`, `RTE_MBUF_F_TX_UDP_CKSUM`) expects: zero in the
/// IPv4 header checksum, and the (non-inverted) pseudo-header sum in the
/// TCP/UDP checksum; the port sets the mbuf flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChecksumCaps {
    /// IPv4 header checksum.
    pub ipv4: Offload,
    /// UDP checksum (over IPv4 and IPv6).
    pub udp: Offload,
    /// TCP checksum (over IPv4 and IPv6).
    pub tcp: Offload,
}

impl ChecksumCaps {
    /// Nothing offloaded: software computes and verifies every checksum.
    pub const fn software() -> Self {
        ChecksumCaps {
            ipv4: Offload { tx: false, rx: false },
            udp: Offload { tx: false, rx: false },
            tcp: Offload { tx: false, rx: false },
        }
    }

    /// Everything offloaded both ways.
    pub const fn offload_all() -> Self {
        ChecksumCaps {
            ipv4: Offload { tx: true, rx: true },
            udp: Offload { tx: true, rx: true },
            tcp: Offload { tx: true, rx: true },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook 16-bit loop, as a reference for the wide implementation.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        u16::try_from(sum).unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0x12]), 0x1200);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x6834);
    }

    #[test]
    fn pseudo_header_v4_known() {
        let s = pseudo_header_v4(&Ipv4Addr::new(192, 168, 0, 1), &Ipv4Addr::new(192, 168, 0, 2), 17, 8);
        assert_eq!(s, data(&[192, 168, 0, 1, 192, 168, 0, 2, 0, 17, 0, 8]));
    }

    #[test]
    fn pseudo_header_v6_known() {
        let a = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let b = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        let mut ph = [0u8; 40];
        ph[..16].copy_from_slice(&a.octets());
        ph[16..32].copy_from_slice(&b.octets());
        ph[32..36].copy_from_slice(&70000u32.to_be_bytes());
        ph[39] = 17;
        assert_eq!(pseudo_header_v6(&a, &b, 17, 70000), data(&ph));
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut hdr = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let base = !data(&hdr);
        hdr[2..4].copy_from_slice(&1500u16.to_be_bytes());
        assert_eq!(add_to_field(base, 1500), !data(&hdr));
    }

    proptest! {
        #[test]
        fn wide_sum_equals_reference(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(data(&bytes), reference(&bytes));
        }
    }
}
