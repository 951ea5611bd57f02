//! Views over packet bytes, one module per protocol (smoltcp `wire`).
//!
//! Each module has a `Packet<T: AsRef<[u8]>>` view and, where a header has a
//! meaning beyond its bytes, a `Repr`:
//!
//! - `Packet::new_unchecked` wraps any buffer; `Packet::check_len` (or
//!   `new_checked`) proves the buffer is long enough for every accessor, so
//!   **after a successful `check_len` no accessor panics**. Setters that change
//!   a length field (`set_header_len`, `set_opt_len`, …) invalidate that proof.
//! - `Repr::parse` checks meaning (versions, reserved values) and returns the
//!   one unit [`Error`]; `Repr::emit` writes a header into a buffer of at least
//!   `Repr::buffer_len()` bytes and panics only if the buffer is shorter.
//! - Multi-byte fields are big-endian on the wire and host integers in the API.
//!
//! Nothing here allocates, and nothing imports from a layer above (`flow`,
//! `action`, `pmd`): dependencies point down only.

use core::fmt;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod geneve;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use self::arp::{Packet as ArpPacket, Repr as ArpRepr};
pub use self::checksum::{ChecksumCaps, Offload};
pub use self::ethernet::{EtherType, Frame as EthernetFrame, Repr as EthernetRepr};
pub use self::geneve::{
    OptionHeader as GeneveOption, Packet as GenevePacket, Repr as GeneveRepr, OVN_OPT_CLASS, OVN_OPT_TYPE,
};
pub use self::icmpv4::{Packet as Icmpv4Packet, Repr as Icmpv4Repr};
pub use self::icmpv6::{NdOption, Packet as Icmpv6Packet, Repr as Icmpv6Repr};
pub use self::ipv4::{Packet as Ipv4Packet, Repr as Ipv4Repr};
pub use self::ipv6::{
    ExtHeader as Ipv6ExtHeader, FragmentHeader as Ipv6FragmentHeader, Packet as Ipv6Packet, Repr as Ipv6Repr,
};
pub use self::tcp::{Packet as TcpPacket, Repr as TcpRepr};
pub use self::udp::{Packet as UdpPacket, Repr as UdpRepr};
pub use self::vlan::{Repr as VlanRepr, Tag as VlanTag};

/// The error of every parser in `wire`: the bytes are not a valid header.
///
/// It carries no detail on purpose (smoltcp): the fast path counts drops by
/// [`crate::drop::DropReason`], which `flow` and `action` pick at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed packet")
    }
}

impl std::error::Error for Error {}

/// The result type of `wire`.
pub type Result<T> = core::result::Result<T, Error>;

/// Byte ranges of header fields (smoltcp `wire::field`).
pub mod field {
    /// A fixed-size field: `start..end`.
    pub type Field = core::ops::Range<usize>;
    /// Everything from an offset to the end of the buffer.
    pub type Rest = core::ops::RangeFrom<usize>;
}

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers") used here.
pub mod ip_proto {
    /// IPv6 Hop-by-Hop Options (RFC 8200 §4.3).
    pub const HOPOPT: u8 = 0;
    /// ICMP for IPv4 (RFC 792).
    pub const ICMP: u8 = 1;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// UDP (RFC 768).
    pub const UDP: u8 = 17;
    /// IPv6 Routing header (RFC 8200 §4.4).
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 Fragment header (RFC 8200 §4.5).
    pub const IPV6_FRAG: u8 = 44;
    /// Authentication Header (RFC 4302); an IPv6 extension header with its
    /// length in 4-octet units.
    pub const AH: u8 = 51;
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// IPv6 No Next Header (RFC 8200 §4.7).
    pub const IPV6_NONXT: u8 = 59;
    /// IPv6 Destination Options (RFC 8200 §4.6).
    pub const IPV6_OPTS: u8 = 60;
    /// SCTP (RFC 9260).
    pub const SCTP: u8 = 132;
}

/// Reads a big-endian `u16` from the first two bytes of `b`.
///
/// # Panics
/// If `b` is shorter than 2 bytes; callers pass fields proven by `check_len`.
#[inline(always)]
pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Reads a big-endian `u32` from the first four bytes of `b`.
///
/// # Panics
/// If `b` is shorter than 4 bytes.
#[inline(always)]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes `v` big-endian into the first two bytes of `b`.
///
/// # Panics
/// If `b` is shorter than 2 bytes.
#[inline(always)]
pub(crate) fn set_be16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_be_bytes());
}

/// Writes `v` big-endian into the first four bytes of `b`.
///
/// # Panics
/// If `b` is shorter than 4 bytes.
#[inline(always)]
pub(crate) fn set_be32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_be_bytes());
}

/// Copies a fixed-size array out of the first `N` bytes of `b`.
///
/// # Panics
/// If `b` is shorter than `N` bytes.
#[inline(always)]
pub(crate) fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// The IPv4-mapped IPv6 form `::ffff:a.b.c.d` of an IPv4 address (RFC 4291
/// §2.5.5.2), as 16 bytes; the flow key stores every IP address this way.
#[inline(always)]
pub const fn ipv4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    /// Every view's `check_len` must make every accessor safe, and every
    /// `Repr::parse` must return rather than panic, whatever the bytes.
    fn parse_all(b: &[u8]) {
        let caps = ChecksumCaps::default();
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v6 = Ipv6Addr::LOCALHOST;
        if let Ok(f) = EthernetFrame::new_checked(b) {
            let _ = (EthernetRepr::parse(&f), f.payload());
        }
        if let Ok(t) = VlanTag::new_checked(b) {
            let _ = VlanRepr::parse(&t);
        }
        if let Ok(p) = ArpPacket::new_checked(b) {
            let _ = (ArpRepr::parse(&p), p.hardware_len(), p.protocol_len());
        }
        if let Ok(p) = Ipv4Packet::new_checked(b) {
            let _ = (Ipv4Repr::parse(&p, &caps), p.options(), p.payload(), p.verify_checksum());
        }
        if let Ok(p) = Ipv6Packet::new_checked(b) {
            let _ = (Ipv6Repr::parse(&p), p.payload());
        }
        for kind in [ip_proto::HOPOPT, ip_proto::AH, ip_proto::IPV6_FRAG, ip_proto::TCP] {
            if let Ok(h) = Ipv6ExtHeader::new_checked(b, kind) {
                let _ = (h.next_header(), h.data());
            }
        }
        if let Ok(h) = Ipv6FragmentHeader::new_checked(b) {
            let _ = (h.frag_offset(), h.more_frags(), h.ident());
        }
        if let Ok(p) = Icmpv4Packet::new_checked(b) {
            let _ = (Icmpv4Repr::parse(&p), p.data());
        }
        if let Ok(p) = Icmpv6Packet::new_checked(b) {
            let _ = (Icmpv6Repr::parse(&p, &v6, &v6), p.nd_options().count());
        }
        if let Ok(p) = TcpPacket::new_checked(b) {
            let _ = (TcpRepr::parse(&p, &v4, &v4, &caps), p.options(), p.payload());
        }
        if let Ok(p) = UdpPacket::new_checked(b) {
            let _ = (UdpRepr::parse(&p, &v4, &v4, &caps), p.payload());
        }
        if let Ok(p) = GenevePacket::new_checked(b) {
            let _ = (GeneveRepr::parse(&p), p.options().count(), p.payload());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            parse_all(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_plausible_headers(
            first in prop_oneof![Just(0x45u8), Just(0x4f), Just(0x60), Just(0x00), Just(0x02), Just(0x87), Just(0x50)],
            rest in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let mut b = vec![first];
            b.extend(rest);
            parse_all(&b);
        }
    }
}
