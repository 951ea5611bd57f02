//! ICMP for IPv6 (RFC 4443 §2.1) and the Neighbor Discovery fields the flow
//! key uses (RFC 4861 §4).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Message body (first 4 bytes: "rest of header")     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Neighbor Solicitation (135) and Advertisement (136), RFC 4861 §4.3/4.4:
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|S|O|                     Reserved                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                       Target Address (16 bytes)               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options ...
//! +-+-+-+-+-+-+-+-+-+-+-+-
//! ```
//!
//! Router Solicitation (133) has options at offset 8, Router Advertisement
//! (134) at 16, Redirect (137) at 40. Each option is Type, Length (in
//! 8-octet units, never 0) and data (RFC 4861 §4.6); the link-layer address
//! options (type 1 source, 2 target) carry a MAC address when Length is 1.
//! NICs do not offload ICMPv6 checksums.

use core::net::{IpAddr, Ipv6Addr};

use super::checksum;
use super::field::{Field, Rest};
use super::{array, be16, be32, ip_proto, set_be16, set_be32, Error, Result};

/// Byte ranges of the ICMPv6 header and the NS/NA body.
pub mod field {
    use super::{Field, Rest};
    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum over pseudo-header and message.
    pub const CHECKSUM: Field = 2..4;
    /// First 4 bytes of the body (NA: R, S, O flags).
    pub const REST: Field = 4..8;
    /// NS/NA/Redirect target address.
    pub const TARGET: Field = 8..24;
    /// NS/NA options.
    pub const NS_NA_OPTIONS: Rest = 24..;
}

/// Length of the ICMPv6 header (type, code, checksum, 4 body bytes).
pub const HEADER_LEN: usize = 8;
/// Echo request.
pub const ECHO_REQUEST: u8 = 128;
/// Echo reply.
pub const ECHO_REPLY: u8 = 129;
/// Router Solicitation.
pub const ROUTER_SOLICIT: u8 = 133;
/// Router Advertisement.
pub const ROUTER_ADVERT: u8 = 134;
/// Neighbor Solicitation.
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor Advertisement.
pub const NEIGHBOR_ADVERT: u8 = 136;
/// Redirect.
pub const REDIRECT: u8 = 137;
/// ND option: source link-layer address.
pub const OPT_SOURCE_LL_ADDR: u8 = 1;
/// ND option: target link-layer address.
pub const OPT_TARGET_LL_ADDR: u8 = 2;

/// Offset of the ND options in a Neighbor Discovery message of type
/// `msg_type`, or `None` for messages that are not ND.
#[inline(always)]
pub const fn nd_options_offset(msg_type: u8) -> Option<usize> {
    match msg_type {
        ROUTER_SOLICIT => Some(8),
        ROUTER_ADVERT => Some(16),
        NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT => Some(24),
        REDIRECT => Some(40),
        _ => None,
    }
}

/// Read/write view of an ICMPv6 message.
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
    /// If it is shorter than the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures the header accessors do not panic; for an ND message also
    /// that its fixed body (target address etc.) is present, so
    /// [`Packet::target_addr`] and [`Packet::nd_options`] do not panic.
    ///
    /// # Errors
    /// If the buffer is shorter than that.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error);
        }
        match nd_options_offset(b[field::TYPE]) {
            Some(off) if b.len() < off => Err(Error),
            _ => Ok(()),
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// First 4 bytes of the body.
    #[inline]
    pub fn rest(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::REST])
    }

    /// Target address of an NS, NA or Redirect.
    ///
    /// # Panics
    /// For other message types if the buffer is shorter than 24 bytes.
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(&self.buffer.as_ref()[field::TARGET]))
    }

    /// Whether the checksum verifies against the pseudo-header of `src`, `dst`.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let ph = checksum::pseudo_header(&IpAddr::V6(*src), &IpAddr::V6(*dst), ip_proto::ICMPV6, len);
        checksum::combine(&[ph, checksum::data(data)]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The ND options of an ND message (empty for other messages).
    #[inline]
    pub fn nd_options(&self) -> NdOptionIter<'a> {
        let b = self.buffer.as_ref();
        let opts = match nd_options_offset(self.msg_type()) {
            Some(off) => b.get(off..).unwrap_or(&[]),
            None => &[],
        };
        NdOptionIter { rest: opts }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], v);
    }

    /// Sets the first 4 body bytes.
    #[inline]
    pub fn set_rest(&mut self, v: u32) {
        set_be32(&mut self.buffer.as_mut()[field::REST], v);
    }

    /// Sets the target address.
    #[inline]
    pub fn set_target_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&a.octets());
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let ph = checksum::pseudo_header(&IpAddr::V6(*src), &IpAddr::V6(*dst), ip_proto::ICMPV6, len);
        let sum = checksum::combine(&[ph, checksum::data(data)]);
        self.set_checksum(!sum);
    }
}

/// One ND option: its type and its whole bytes (type and length included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdOption<'a> {
    /// Option type.
    pub kind: u8,
    /// The whole option, `Length × 8` bytes.
    pub bytes: &'a [u8],
}

impl NdOption<'_> {
    /// The MAC address of a source/target link-layer address option with
    /// Length 1 (Ethernet), `None` otherwise.
    #[inline]
    pub fn link_layer_addr(&self) -> Option<[u8; 6]> {
        if self.bytes.len() == 8 && (self.kind == OPT_SOURCE_LL_ADDR || self.kind == OPT_TARGET_LL_ADDR) {
            Some(array(&self.bytes[2..8]))
        } else {
            None
        }
    }
}

/// Iterator over ND options; yields `Err` once (and then stops) for an
/// option with Length 0 or one that overruns the message (RFC 4861 §4.6:
/// such packets must be discarded).
#[derive(Debug, Clone)]
pub struct NdOptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for NdOptionIter<'a> {
    type Item = Result<NdOption<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        let (&kind, &len) = match rest {
            [] => return None,
            [k, l, ..] => (k, l),
            [_] => {
                self.rest = &[];
                return Some(Err(Error));
            }
        };
        let n = usize::from(len) * 8;
        if n == 0 || n > rest.len() {
            self.rest = &[];
            return Some(Err(Error));
        }
        self.rest = &rest[n..];
        Some(Ok(NdOption { kind, bytes: &rest[..n] }))
    }
}

/// High-level form of an ICMPv6 message header, with the ND target and
/// link-layer address options when the message is NS/NA/RS/RA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Message type.
    pub msg_type: u8,
    /// Message code.
    pub msg_code: u8,
    /// First 4 body bytes.
    pub rest: u32,
    /// NS/NA target address.
    pub target: Option<Ipv6Addr>,
    /// Source link-layer address option (NS, RS, RA).
    pub source_ll: Option<[u8; 6]>,
    /// Target link-layer address option (NA).
    pub target_ll: Option<[u8; 6]>,
}

impl Repr {
    /// Parses a message (the buffer must end where the IPv6 payload ends)
    /// and verifies its checksum.
    ///
    /// # Errors
    /// Short buffer, bad checksum, or malformed ND options.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, src: &Ipv6Addr, dst: &Ipv6Addr) -> Result<Repr> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(Error);
        }
        let b = p.buffer.as_ref();
        let mut r = Repr {
            msg_type: p.msg_type(),
            msg_code: p.msg_code(),
            rest: p.rest(),
            target: None,
            source_ll: None,
            target_ll: None,
        };
        if matches!(r.msg_type, NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT) {
            r.target = Some(p.target_addr());
        }
        for opt in Packet::new_unchecked(b).nd_options() {
            let opt = opt?;
            match (opt.kind, opt.link_layer_addr()) {
                (OPT_SOURCE_LL_ADDR, Some(a)) => r.source_ll = Some(a),
                (OPT_TARGET_LL_ADDR, Some(a)) => r.target_ll = Some(a),
                _ => {}
            }
        }
        Ok(r)
    }

    /// Length of the emitted message: the header, the NS/NA target, and
    /// 8 bytes per link-layer address option. Other ND bodies (RA, RS,
    /// Redirect) are not emitted by this `Repr`.
    pub const fn buffer_len(&self) -> usize {
        let mut n = HEADER_LEN;
        if self.target.is_some() {
            n += 16;
        }
        if self.source_ll.is_some() {
            n += 8;
        }
        if self.target_ll.is_some() {
            n += 8;
        }
        n
    }

    /// Writes the message (exactly [`Repr::buffer_len`] bytes: header,
    /// target, source then target link-layer options) and its checksum.
    ///
    /// # Panics
    /// If the buffer is not [`Repr::buffer_len`] bytes long or more.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, src: &Ipv6Addr, dst: &Ipv6Addr) {
        p.set_msg_type(self.msg_type);
        p.set_msg_code(self.msg_code);
        p.set_rest(self.rest);
        let mut off = HEADER_LEN;
        if let Some(t) = self.target {
            p.set_target_addr(t);
            off += 16;
        }
        for (kind, addr) in [(OPT_SOURCE_LL_ADDR, self.source_ll), (OPT_TARGET_LL_ADDR, self.target_ll)] {
            if let Some(a) = addr {
                let b = &mut p.buffer.as_mut()[off..off + 8];
                b[0] = kind;
                b[1] = 1;
                b[2..].copy_from_slice(&a);
                off += 8;
            }
        }
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2);

    #[rustfmt::skip]
    static NS_BYTES: [u8; 32] = [
        // ICMPv6: Neighbor Solicitation, code 0, checksum
        0x87, 0x00, 0x7a, 0x97,
        // reserved
        0x00, 0x00, 0x00, 0x00,
        // target fe80::2
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        // option: source link-layer address 02:00:00:00:00:01
        0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    fn repr() -> Repr {
        Repr {
            msg_type: NEIGHBOR_SOLICIT,
            msg_code: 0,
            rest: 0,
            target: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
            source_ll: Some([2, 0, 0, 0, 0, 1]),
            target_ll: None,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&NS_BYTES[..]).unwrap();
        assert_eq!(p.msg_type(), NEIGHBOR_SOLICIT);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.rest(), 0);
        assert!(p.verify_checksum(&SRC, &DST));
        assert_eq!(p.target_addr(), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
        let opts: Vec<_> = p.nd_options().collect();
        assert_eq!(opts.len(), 1);
        let o = opts[0].unwrap();
        assert_eq!(o.kind, OPT_SOURCE_LL_ADDR);
        assert_eq!(o.link_layer_addr(), Some([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 32];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(NEIGHBOR_SOLICIT);
        p.set_msg_code(0);
        p.set_rest(0);
        p.set_target_addr(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
        bytes[24..].copy_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        Packet::new_unchecked(&mut bytes[..]).fill_checksum(&SRC, &DST);
        assert_eq!(bytes, NS_BYTES);
    }

    #[test]
    fn test_parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&NS_BYTES[..]), &SRC, &DST).unwrap(), repr());
        assert_eq!(Repr::parse(&Packet::new_unchecked(&NS_BYTES[..]), &SRC, &SRC), Err(Error));
    }

    #[test]
    fn test_emit() {
        let r = repr();
        assert_eq!(r.buffer_len(), 32);
        let mut bytes = [0u8; 32];
        r.emit(&mut Packet::new_unchecked(&mut bytes[..]), &SRC, &DST);
        assert_eq!(bytes, NS_BYTES);
    }

    #[test]
    fn malformed_options_and_short_bodies() {
        // option length 0
        let mut b = NS_BYTES;
        b[25] = 0;
        let p = Packet::new_unchecked(&b[..]);
        assert_eq!(p.nd_options().collect::<Vec<_>>(), vec![Err(Error)]);
        // option overrunning the message
        let mut b = NS_BYTES;
        b[25] = 2;
        assert_eq!(Packet::new_unchecked(&b[..]).nd_options().collect::<Vec<_>>(), vec![Err(Error)]);
        // one dangling byte
        assert_eq!(Packet::new_unchecked(&NS_BYTES[..25]).nd_options().collect::<Vec<_>>(), vec![Err(Error)]);
        // NS without its full target
        assert_eq!(Packet::new_checked(&NS_BYTES[..23]), Err(Error));
        // non-ND types only need the 8-byte header
        assert!(Packet::new_checked(&[ECHO_REQUEST, 0, 0, 0, 0, 0, 0, 0][..]).is_ok());
        assert_eq!(Packet::new_checked(&[ECHO_REQUEST, 0, 0, 0][..]), Err(Error));
    }
}
