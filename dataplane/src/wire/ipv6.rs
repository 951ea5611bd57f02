//! IPv6 fixed header and extension headers (RFC 8200 §3, §4).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                         Source Address                        +
//! |                          (16 bytes)                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                      Destination Address                      +
//! |                          (16 bytes)                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Extension headers that share the generic layout (Hop-by-Hop 0, Routing
//! 43, Destination Options 60; §4.3–4.6) start with Next Header and
//! Hdr Ext Len (8-octet units, not counting the first 8). The
//! Authentication Header (51, RFC 4302 §2.2) has the same first two bytes
//! but counts 4-octet units minus 2. The Fragment header (44, §4.5) is a
//! fixed 8 bytes:
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Identification                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet::check_len`] proves `40 + Payload Length <= buffer`; bytes after
//! the payload (Ethernet padding) are allowed. Jumbograms (Payload Length 0
//! with a Jumbo option, RFC 2675) are not supported: their payload reads as
//! empty.

use core::net::Ipv6Addr;

use super::field::Field;
use super::ip_proto;
use super::{array, be16, be32, set_be16, set_be32, Error, Result};

/// Byte ranges of the IPv6 fixed header.
pub mod field {
    use super::Field;
    /// Version, traffic class, flow label.
    pub const VER_TC_FLOW: Field = 0..4;
    /// Payload length (everything after the fixed header).
    pub const LENGTH: Field = 4..6;
    /// Next header.
    pub const NXT_HDR: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Field = 8..24;
    /// Destination address.
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Length of a Fragment header.
pub const FRAG_HEADER_LEN: usize = 8;
/// Mask of the flow label in the first 32-bit word.
pub const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// Whether `next_header` names an extension header this module can walk
/// (Hop-by-Hop, Routing, Fragment, Destination Options, AH).
#[inline(always)]
pub const fn is_ext_header(next_header: u8) -> bool {
    matches!(
        next_header,
        ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_FRAG | ip_proto::IPV6_OPTS | ip_proto::AH
    )
}

/// Read/write view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    ///
    /// # Errors
    /// See [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures no accessor panics: the buffer holds the fixed header and
    /// Payload Length bytes after it. Invalidated by `set_payload_len`.
    ///
    /// # Errors
    /// If the buffer is shorter.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len - HEADER_LEN < usize::from(self.payload_len()) {
            return Err(Error);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP + ECN; the flow key's `nw_tos`).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VER_TC_FLOW]) & FLOW_LABEL_MASK
    }

    /// Payload length.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address, as bytes.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        array(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// Destination address, as bytes.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        array(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the fixed header, up to Payload Length (extension
    /// headers included, trailing padding excluded).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version, traffic class and flow label (masked to 20 bits) at once.
    #[inline]
    pub fn set_ver_tc_flow(&mut self, version: u8, traffic_class: u8, flow_label: u32) {
        let v = (u32::from(version & 0x0f) << 28) | (u32::from(traffic_class) << 20) | (flow_label & FLOW_LABEL_MASK);
        set_be32(&mut self.buffer.as_mut()[field::VER_TC_FLOW], v);
    }

    /// Sets the payload length. Invalidates `check_len`.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// The payload, up to Payload Length, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// High-level form of the IPv6 fixed header (extension headers are part of
/// the payload here; walk them with [`ExtHeader`] and [`FragmentHeader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Parses the fixed header.
    ///
    /// # Errors
    /// Short buffer or a version other than 6.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_ver_tc_flow(6, self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

/// Read view of a generic extension header (Hop-by-Hop, Routing,
/// Destination Options) or an Authentication Header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    kind: u8,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wraps the bytes of an extension header of type `kind` (the Next
    /// Header value that announced it) without checking.
    pub const fn new_unchecked(buffer: T, kind: u8) -> Self {
        ExtHeader { buffer, kind }
    }

    /// Wraps after [`ExtHeader::check_len`].
    ///
    /// # Errors
    /// See [`ExtHeader::check_len`].
    pub fn new_checked(buffer: T, kind: u8) -> Result<Self> {
        let h = Self::new_unchecked(buffer, kind);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures the buffer holds the whole header as its length field says.
    ///
    /// # Errors
    /// If it does not, or `kind` is the Fragment header (use
    /// [`FragmentHeader`]) or not an extension header.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if !is_ext_header(self.kind) || self.kind == ip_proto::IPV6_FRAG || b.len() < 2 {
            return Err(Error);
        }
        if b.len() < self.header_len() {
            return Err(Error);
        }
        Ok(())
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Length of the whole header in bytes, from its length byte.
    ///
    /// # Panics
    /// If the buffer is shorter than 2 bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        ext_header_len(self.kind, self.buffer.as_ref()[1])
    }

    /// The header's data after the Next Header and length bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[2..self.header_len()]
    }
}

/// Length in bytes of an extension header of type `kind` whose length byte
/// is `len_byte`: `(len+2)*4` for AH (RFC 4302 §2.2), `(len+1)*8` otherwise
/// (RFC 8200 §4.3–4.6), 8 for the Fragment header.
#[inline(always)]
pub const fn ext_header_len(kind: u8, len_byte: u8) -> usize {
    match kind {
        ip_proto::AH => (len_byte as usize + 2) * 4,
        ip_proto::IPV6_FRAG => FRAG_HEADER_LEN,
        _ => (len_byte as usize + 1) * 8,
    }
}

/// Read/write view of a Fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// Wraps a buffer without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        FragmentHeader { buffer }
    }

    /// Wraps after [`FragmentHeader::check_len`].
    ///
    /// # Errors
    /// If the buffer is shorter than 8 bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures the buffer holds the 8-byte header.
    ///
    /// # Errors
    /// If it is shorter.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < FRAG_HEADER_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The raw offset/flags word.
    #[inline]
    pub fn offset_flags(&self) -> u16 {
        be16(&self.buffer.as_ref()[2..4])
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.offset_flags() & 0xfff8
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.offset_flags() & 1 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        be32(&self.buffer.as_ref()[4..8])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FragmentHeader<T> {
    /// Writes the whole header: `offset` in bytes (a multiple of 8).
    #[inline]
    pub fn set(&mut self, next_header: u8, offset: u16, more_frags: bool, ident: u32) {
        let b = self.buffer.as_mut();
        b[0] = next_header;
        b[1] = 0;
        set_be16(&mut b[2..4], (offset & 0xfff8) | u16::from(more_frags));
        set_be32(&mut b[4..8], ident);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static PACKET_BYTES: [u8; 66] = [
        // IPv6: version 6, traffic class 0xb8, flow label 0x12345
        0x6b, 0x81, 0x23, 0x45,
        // payload length 24, next header Hop-by-Hop, hop limit 64
        0x00, 0x18, 0x00, 0x40,
        // src fe80::1
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        // dst fe80::2
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        // Hop-by-Hop: next Fragment, len 0, PadN(4)
        0x2c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00,
        // Fragment: next UDP, offset 16 bytes, M, ident 0xdeadbeef
        0x11, 0x00, 0x00, 0x11, 0xde, 0xad, 0xbe, 0xef,
        // fragment data
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        // Ethernet padding
        0x00, 0x00,
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
            dst_addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
            next_header: ip_proto::HOPOPT,
            payload_len: 24,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 24);
        assert_eq!(p.next_header(), 0);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
        assert_eq!(p.payload().len(), 24);
        let hbh = ExtHeader::new_checked(p.payload(), ip_proto::HOPOPT).unwrap();
        assert_eq!(hbh.next_header(), ip_proto::IPV6_FRAG);
        assert_eq!(hbh.header_len(), 8);
        assert_eq!(hbh.data(), &[1, 4, 0, 0, 0, 0]);
        let frag = FragmentHeader::new_checked(&p.payload()[8..]).unwrap();
        assert_eq!(frag.next_header(), ip_proto::UDP);
        assert_eq!(frag.frag_offset(), 16);
        assert!(frag.more_frags());
        assert_eq!(frag.ident(), 0xdead_beef);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 66];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_ver_tc_flow(6, 0xb8, 0x12345);
        p.set_payload_len(24);
        p.set_next_header(ip_proto::HOPOPT);
        p.set_hop_limit(64);
        p.set_src_addr(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        p.set_dst_addr(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
        let pl = p.payload_mut();
        pl[..8].copy_from_slice(&[0x2c, 0, 1, 4, 0, 0, 0, 0]);
        FragmentHeader::new_unchecked(&mut pl[8..16]).set(ip_proto::UDP, 16, true, 0xdead_beef);
        pl[16..24].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&PACKET_BYTES[..])).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = PACKET_BYTES;
        bytes[..40].fill(0);
        repr().emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn errors() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..39]), Err(Error));
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..63]), Err(Error));
        let mut b = PACKET_BYTES;
        b[0] = 0x4b;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Err(Error));
        // an extension header longer than its buffer, and non-generic kinds
        assert_eq!(ExtHeader::new_checked(&[0x11u8, 1, 0, 0, 0, 0, 0, 0][..], 0), Err(Error));
        assert_eq!(ExtHeader::new_checked(&[0x11u8, 0, 0, 0, 0, 0, 0, 0][..], 44), Err(Error));
        assert_eq!(ExtHeader::new_checked(&[0x11u8, 0, 0, 0, 0, 0, 0, 0][..], 6), Err(Error));
        assert_eq!(FragmentHeader::new_checked(&[0u8; 7][..]), Err(Error));
    }

    #[test]
    fn ah_length_counts_four_octet_units() {
        assert_eq!(ext_header_len(ip_proto::AH, 4), 24);
        assert_eq!(ext_header_len(ip_proto::HOPOPT, 0), 8);
        assert_eq!(ext_header_len(ip_proto::IPV6_FRAG, 200), 8);
    }
}
