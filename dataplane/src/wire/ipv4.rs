//! IPv4 headers (RFC 791 §3.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Flags: bit 0 reserved, DF (don't fragment), MF (more fragments). The
//! fragment offset counts 8-byte units. DSCP/ECN: RFC 2474, RFC 3168.
//!
//! [`Packet::check_len`] proves `20 <= IHL*4 <= Total Length <= buffer`;
//! bytes after Total Length (Ethernet minimum-size padding) are allowed and
//! ignored by [`Packet::payload`].

use core::net::Ipv4Addr;

use super::checksum::{self, ChecksumCaps};
use super::field::Field;
use super::{array, be16, set_be16, Error, Result};

/// Byte ranges of the IPv4 header.
pub mod field {
    use super::Field;
    /// Version and IHL.
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN (the old TOS byte).
    pub const DSCP_ECN: usize = 1;
    /// Total length (header + payload).
    pub const LENGTH: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..6;
    /// Flags and fragment offset.
    pub const FLG_OFF: Field = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source address.
    pub const SRC_ADDR: Field = 12..16;
    /// Destination address.
    pub const DST_ADDR: Field = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Don't-fragment flag in the flags/offset word.
pub const DF: u16 = 0x4000;
/// More-fragments flag in the flags/offset word.
pub const MF: u16 = 0x2000;
/// Fragment offset mask (8-byte units) in the flags/offset word.
pub const OFFSET_MASK: u16 = 0x1fff;

/// Read/write view of an IPv4 packet.
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

    /// Ensures no accessor panics: `20 <= header_len <= total_len <= buffer
    /// length`. Invalidated by `set_header_len` and `set_total_len`.
    ///
    /// # Errors
    /// If any of those inequalities fails.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let hl = usize::from(self.header_len());
        let tl = usize::from(self.total_len());
        if hl < HEADER_LEN || hl > tl || tl > len {
            return Err(Error);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN together (the flow key's `nw_tos`).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length of header and payload.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    /// The raw flags/offset word.
    #[inline]
    pub fn flags_offset(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        // 13 bits × 8 fits in 16 bits.
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (see [`super::ip_proto`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// Whether the header checksum (over IHL × 4 bytes, options included)
    /// is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let hl = usize::from(self.header_len());
        checksum::data(&self.buffer.as_ref()[..hl]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// The payload, up to Total Length (trailing padding excluded).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }

    /// Sets the header length in bytes (rounded down to 4-byte units; values
    /// above 60 are masked). Invalidates `check_len`.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    /// Sets DSCP and ECN.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length. Invalidates `check_len`.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::IDENT], v);
    }

    /// Sets flags and fragment offset at once: `offset` in bytes (must be a
    /// multiple of 8; lower bits are dropped).
    #[inline]
    pub fn set_flags_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= DF;
        }
        if more_frags {
            v |= MF;
        }
        set_be16(&mut self.buffer.as_mut()[field::FLG_OFF], v);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the payload protocol.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Computes and stores the header checksum.
    ///
    /// # Panics
    /// If the buffer is shorter than the header length (not after a
    /// successful `check_len`).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = usize::from(self.header_len());
        let sum = checksum::data(&self.buffer.as_ref()[..hl]);
        self.set_checksum(!sum);
    }

    /// The payload, up to Total Length, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (usize::from(self.header_len()), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// High-level form of an IPv4 header. Options are accepted by `parse` and
/// skipped; `emit` writes a 20-byte header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length (Total Length − header length).
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN.
    pub dscp_ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

impl Repr {
    /// Parses a header, verifying its checksum unless `caps.ipv4.rx` says
    /// the NIC already did.
    ///
    /// # Errors
    /// Bad lengths, a version other than 4, or a bad checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, caps: &ChecksumCaps) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 4 {
            return Err(Error);
        }
        if !caps.ipv4.rx && !p.verify_checksum() {
            return Err(Error);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.total_len() - u16::from(p.header_len()),
            ttl: p.ttl(),
            dscp_ecn: p.dscp_ecn(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header; the checksum is computed unless
    /// `caps.ipv4.tx` (then it is left 0 for the NIC).
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`], or if `payload_len`
    /// does not leave room for the header in Total Length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, caps: &ChecksumCaps) {
        p.buffer.as_mut()[field::VER_IHL] = 0x45;
        p.set_dscp_ecn(self.dscp_ecn);
        let total = u16::try_from(HEADER_LEN).ok().and_then(|h| h.checked_add(self.payload_len));
        p.set_total_len(total.expect("IPv4 payload_len leaves room for the header"));
        p.set_ident(self.ident);
        p.set_flags_offset(self.dont_frag, self.more_frags, self.frag_offset);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        if caps.ipv4.tx {
            p.set_checksum(0);
        } else {
            p.fill_checksum();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static PACKET_BYTES: [u8; 30] = [
        // IPv4: ver 4, IHL 6 (one option word), DSCP 46 ECN 1, total 28
        0x46, 0xb9, 0x00, 0x1c,
        // ident 0x1234, MF set, offset 8 bytes (1 unit)
        0x12, 0x34, 0x20, 0x01,
        // TTL 64, UDP, checksum
        0x40, 0x11, 0x30, 0xe0,
        // src 10.0.0.1
        0x0a, 0x00, 0x00, 0x01,
        // dst 10.0.0.2
        0x0a, 0x00, 0x00, 0x02,
        // option: NOP NOP NOP EOL
        0x01, 0x01, 0x01, 0x00,
        // payload
        0xaa, 0xbb, 0xcc, 0xdd,
        // Ethernet padding beyond Total Length
        0x00, 0x00,
    ];

    #[rustfmt::skip]
    static EMIT_BYTES: [u8; 24] = [
        // IPv4: ver 4, IHL 5, DSCP/ECN 0, total 24
        0x45, 0x00, 0x00, 0x18,
        // ident 0, DF
        0x00, 0x00, 0x40, 0x00,
        // TTL 64, UDP, checksum
        0x40, 0x11, 0x26, 0xd3,
        // src 10.0.0.1, dst 10.0.0.2
        0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02,
        // payload
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    fn emit_repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 17,
            payload_len: 4,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp_ecn(), 0xb9);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 8);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.checksum(), 0x30e0);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 30];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_version(4);
        p.set_header_len(24);
        p.set_dscp_ecn(0xb9);
        p.set_total_len(28);
        p.set_ident(0x1234);
        p.set_flags_offset(false, true, 8);
        p.set_ttl(64);
        p.set_protocol(17);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.buffer[20..24].copy_from_slice(&[1, 1, 1, 0]);
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        p.fill_checksum();
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_parse() {
        let p = Packet::new_unchecked(&PACKET_BYTES[..]);
        let r = Repr::parse(&p, &ChecksumCaps::default()).unwrap();
        assert_eq!(r.payload_len, 4);
        assert_eq!(r.dscp_ecn, 0xb9);
        assert!(r.more_frags);
        assert_eq!(r.frag_offset, 8);
        let e = Packet::new_unchecked(&EMIT_BYTES[..]);
        assert_eq!(Repr::parse(&e, &ChecksumCaps::default()).unwrap(), emit_repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0u8; 24];
        bytes[20..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        emit_repr().emit(&mut Packet::new_unchecked(&mut bytes[..]), &ChecksumCaps::default());
        assert_eq!(bytes, EMIT_BYTES);
        emit_repr().emit(&mut Packet::new_unchecked(&mut bytes[..]), &ChecksumCaps::offload_all());
        assert_eq!(&bytes[10..12], &[0, 0]);
    }

    #[test]
    fn bad_lengths_version_and_checksum() {
        let caps = ChecksumCaps::default();
        // truncated below 20, and below Total Length
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..19]), Err(Error));
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..27]), Err(Error));
        // IHL 4
        let mut b = PACKET_BYTES;
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error));
        // Total Length below the header length
        let mut b = PACKET_BYTES;
        b[3] = 20;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error));
        // version 5
        let mut b = PACKET_BYTES;
        b[0] = 0x56;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..]), &caps), Err(Error));
        // checksum, unless verified by the NIC
        let mut b = PACKET_BYTES;
        b[11] ^= 1;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..]), &caps), Err(Error));
        assert!(Repr::parse(&Packet::new_unchecked(&b[..]), &ChecksumCaps::offload_all()).is_ok());
    }
}
