//! Geneve headers (RFC 8926 §3.4, §3.5) and OVN's option (ovn-architecture(7),
//! "Tunnel Encapsulations").
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Variable-Length Options                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Opt Len counts 4-byte words of options; O marks a control (OAM) packet;
//! C says at least one option is critical. Each option (§3.5):
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Option Class         |      Type     |R|R|R| Length  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Variable-Length Option Data                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The high bit of Type is the critical bit; Length counts 4-byte words
//! of data. OVN's option is class [`OVN_OPT_CLASS`], type [`OVN_OPT_TYPE`]
//! (critical), Length 1, and its data is
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|  Logical ingress port (15)  |   Logical egress port (16)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! (ovn-controller `physical.c` `put_encapsulation`: egress key in bits
//! 0–15, ingress key in bits 16–30 of the option data.)

use super::ethernet::EtherType;
use super::field::{Field, Rest};
use super::{be16, be32, set_be16, set_be32, Error, Result};

/// Byte ranges of the Geneve base header.
pub mod field {
    use super::{Field, Rest};
    /// Version (2 bits) and Opt Len (6 bits).
    pub const VER_OPT_LEN: usize = 0;
    /// O, C and reserved bits.
    pub const FLAGS: usize = 1;
    /// Protocol type of the payload.
    pub const PROTOCOL: Field = 2..4;
    /// VNI (24 bits) and a reserved byte.
    pub const VNI: Field = 4..8;
    /// Options, then the payload.
    pub const OPTIONS: Rest = 8..;
}

/// Length of the base header.
pub const HEADER_LEN: usize = field::OPTIONS.start;
/// Length of an option header.
pub const OPTION_HEADER_LEN: usize = 4;
/// IANA UDP port of Geneve.
pub const UDP_PORT: u16 = 6081;
/// OVN's option class (ovn-architecture(7)).
pub const OVN_OPT_CLASS: u16 = 0x0102;
/// OVN's option type; its high bit makes the option critical.
pub const OVN_OPT_TYPE: u8 = 0x80;
/// Length of OVN's option data in 4-byte words.
pub const OVN_OPT_LEN_WORDS: u8 = 1;
/// Length of OVN's whole option (header + data).
pub const OVN_OPT_LEN: usize = OPTION_HEADER_LEN + 4 * OVN_OPT_LEN_WORDS as usize;
/// The critical bit of an option type.
pub const CRITICAL_TYPE: u8 = 0x80;
/// Largest logical ingress port key OVN can carry (15 bits).
pub const MAX_INGRESS_KEY: u16 = 0x7fff;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

const FLAG_O: u8 = 0x80;
const FLAG_C: u8 = 0x40;

/// OVN option data (4 bytes) for the given logical port keys; the ingress
/// key is masked to 15 bits and the reserved bit is zero.
#[inline]
pub const fn ovn_option_data(ingress_key: u16, egress_key: u16) -> [u8; 4] {
    let [a, b] = (ingress_key & MAX_INGRESS_KEY).to_be_bytes();
    let [c, d] = egress_key.to_be_bytes();
    [a, b, c, d]
}

/// The (ingress, egress) logical port keys of OVN option data; the
/// reserved bit is ignored (RFC 8926: reserved bits are ignored on receipt).
#[inline]
pub const fn parse_ovn_option_data(data: [u8; 4]) -> (u16, u16) {
    (u16::from_be_bytes([data[0], data[1]]) & MAX_INGRESS_KEY, u16::from_be_bytes([data[2], data[3]]))
}

/// Read/write view of a Geneve header.
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

    /// Ensures no accessor panics: the buffer holds the base header and
    /// Opt Len words of options. Invalidated by `set_opt_len`.
    ///
    /// # Errors
    /// If it does not.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            return Err(Error);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (0 is the only one defined).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_OPT_LEN] >> 6
    }

    /// Length of the options in bytes (Opt Len × 4).
    #[inline]
    pub fn opt_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_OPT_LEN] & 0x3f) * 4
    }

    /// Length of base header and options.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.opt_len()
    }

    /// O bit: a control (OAM) packet.
    #[inline]
    pub fn oam(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_O != 0
    }

    /// C bit: critical options present.
    #[inline]
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_C != 0
    }

    /// Protocol type of the payload.
    #[inline]
    pub fn protocol(&self) -> EtherType {
        EtherType(be16(&self.buffer.as_ref()[field::PROTOCOL]))
    }

    /// VNI (24 bits).
    #[inline]
    pub fn vni(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VNI]) >> 8
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options, Opt Len × 4 bytes.
    #[inline]
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter { rest: &self.buffer.as_ref()[HEADER_LEN..self.header_len()] }
    }

    /// The payload after the options.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version and Opt Len (in bytes; a multiple of 4, at most 252).
    /// Invalidates `check_len`.
    #[inline]
    pub fn set_version_opt_len(&mut self, version: u8, opt_len: u8) {
        self.buffer.as_mut()[field::VER_OPT_LEN] = (version << 6) | ((opt_len / 4) & 0x3f);
    }

    /// Sets the O and C bits (reserved bits cleared).
    #[inline]
    pub fn set_flags(&mut self, oam: bool, critical: bool) {
        let mut f = 0;
        if oam {
            f |= FLAG_O;
        }
        if critical {
            f |= FLAG_C;
        }
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol(&mut self, p: EtherType) {
        set_be16(&mut self.buffer.as_mut()[field::PROTOCOL], p.0);
    }

    /// Sets the VNI (masked to 24 bits; the reserved byte is cleared).
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        set_be32(&mut self.buffer.as_mut()[field::VNI], (vni & MAX_VNI) << 8);
    }

    /// The options area, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// Read view of one Geneve option (header and data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> OptionHeader<T> {
    /// Wraps the bytes of one option without checking.
    pub const fn new_unchecked(buffer: T) -> Self {
        OptionHeader { buffer }
    }

    /// Wraps after [`OptionHeader::check_len`].
    ///
    /// # Errors
    /// See [`OptionHeader::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let o = Self::new_unchecked(buffer);
        o.check_len()?;
        Ok(o)
    }

    /// Ensures the buffer holds the option header and its data.
    ///
    /// # Errors
    /// If it does not.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < OPTION_HEADER_LEN || b.len() < self.total_len() {
            return Err(Error);
        }
        Ok(())
    }

    /// Option class.
    #[inline]
    pub fn class(&self) -> u16 {
        be16(&self.buffer.as_ref()[0..2])
    }

    /// Option type, critical bit included.
    #[inline]
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[2]
    }

    /// Whether the critical bit is set.
    #[inline]
    pub fn is_critical(&self) -> bool {
        self.kind() & CRITICAL_TYPE != 0
    }

    /// Length of the data in 4-byte words.
    #[inline]
    pub fn len_words(&self) -> u8 {
        self.buffer.as_ref()[3] & 0x1f
    }

    /// Length of header and data in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        OPTION_HEADER_LEN + usize::from(self.len_words()) * 4
    }

    /// The option data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[OPTION_HEADER_LEN..self.total_len()]
    }

    /// Whether this is OVN's option (class and type; the length is checked
    /// separately).
    #[inline]
    pub fn is_ovn(&self) -> bool {
        self.class() == OVN_OPT_CLASS && self.kind() == OVN_OPT_TYPE
    }
}

/// Iterator over the options of a Geneve header; yields `Err` once (then
/// stops) for an option that overruns Opt Len.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<OptionHeader<&'a [u8]>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let o = OptionHeader::new_unchecked(self.rest);
        if o.check_len().is_err() {
            self.rest = &[];
            return Some(Err(Error));
        }
        let (this, rest) = self.rest.split_at(o.total_len());
        self.rest = rest;
        Some(Ok(OptionHeader::new_unchecked(this)))
    }
}

/// OVN's logical port keys carried in its Geneve option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OvnOption {
    /// Logical ingress port key (15 bits).
    pub ingress_key: u16,
    /// Logical egress port key (16 bits; ≥ 32768 for multicast groups).
    pub egress_key: u16,
}

/// High-level form of a Geneve header as OVN uses it: only OVN's option is
/// represented; other non-critical options are skipped by `parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// O bit.
    pub oam: bool,
    /// Protocol type of the payload.
    pub protocol: EtherType,
    /// VNI (24 bits).
    pub vni: u32,
    /// OVN's option, if present.
    pub ovn: Option<OvnOption>,
}

impl Repr {
    /// Parses a header.
    ///
    /// # Errors
    /// Short buffer, version other than 0, an option overrunning Opt Len, an
    /// OVN option that is duplicated or not 1 word long, or an unknown
    /// critical option.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 0 {
            return Err(Error);
        }
        let mut ovn = None;
        for opt in Packet::new_unchecked(p.buffer.as_ref()).options() {
            let opt = opt?;
            if opt.is_ovn() {
                if ovn.is_some() || opt.len_words() != OVN_OPT_LEN_WORDS {
                    return Err(Error);
                }
                let (ingress_key, egress_key) = parse_ovn_option_data(super::array(opt.data()));
                ovn = Some(OvnOption { ingress_key, egress_key });
            } else if opt.is_critical() {
                return Err(Error);
            }
        }
        Ok(Repr { oam: p.oam(), protocol: p.protocol(), vni: p.vni(), ovn })
    }

    /// Length of the emitted header (with OVN's option if present).
    pub const fn buffer_len(&self) -> usize {
        if self.ovn.is_some() {
            HEADER_LEN + OVN_OPT_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header; C is set exactly when OVN's (critical) option is.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let opt_len = if self.ovn.is_some() { OVN_OPT_LEN } else { 0 };
        // OVN_OPT_LEN is 8, well within Opt Len's 252-byte range.
        p.set_version_opt_len(0, u8::try_from(opt_len).expect("8 fits u8"));
        p.set_flags(self.oam, self.ovn.is_some());
        p.set_protocol(self.protocol);
        p.set_vni(self.vni);
        if let Some(o) = self.ovn {
            let b = p.options_mut();
            set_be16(&mut b[0..2], OVN_OPT_CLASS);
            b[2] = OVN_OPT_TYPE;
            b[3] = OVN_OPT_LEN_WORDS;
            b[4..8].copy_from_slice(&ovn_option_data(o.ingress_key, o.egress_key));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static PACKET_BYTES: [u8; 32] = [
        // Geneve: ver 0, opt len 4 words, C set, protocol TEB
        0x04, 0x40, 0x65, 0x58,
        // VNI 0x000005, reserved
        0x00, 0x00, 0x05, 0x00,
        // option: class 0xffff, type 0x01 (not critical), len 1
        0xff, 0xff, 0x01, 0x01,
        0xde, 0xad, 0xbe, 0xef,
        // OVN option: class 0x0102, type 0x80, len 1
        0x01, 0x02, 0x80, 0x01,
        // reserved bit 0, ingress key 3, egress key 0x8001
        0x00, 0x03, 0x80, 0x01,
        // payload (start of the inner frame)
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00,
    ];

    #[rustfmt::skip]
    static EMIT_BYTES: [u8; 16] = [
        // Geneve: ver 0, opt len 2 words, C set, protocol TEB
        0x02, 0x40, 0x65, 0x58,
        // VNI 0xabcdef, reserved
        0xab, 0xcd, 0xef, 0x00,
        // OVN option: class 0x0102, type 0x80, len 1
        0x01, 0x02, 0x80, 0x01,
        // reserved bit 0, ingress key 0x7fff, egress key 1
        0x7f, 0xff, 0x00, 0x01,
    ];

    fn emit_repr() -> Repr {
        Repr {
            oam: false,
            protocol: EtherType::TEB,
            vni: 0xab_cdef,
            ovn: Some(OvnOption { ingress_key: 0x7fff, egress_key: 1 }),
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 0);
        assert_eq!(p.opt_len(), 16);
        assert_eq!(p.header_len(), 24);
        assert!(!p.oam());
        assert!(p.critical());
        assert_eq!(p.protocol(), EtherType::TEB);
        assert_eq!(p.vni(), 5);
        let opts: Vec<_> = p.options().map(|o| o.unwrap()).collect();
        assert_eq!(opts.len(), 2);
        assert_eq!(opts[0].class(), 0xffff);
        assert!(!opts[0].is_critical());
        assert_eq!(opts[0].data(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(opts[1].is_ovn());
        assert!(opts[1].is_critical());
        assert_eq!(parse_ovn_option_data(super::super::array(opts[1].data())), (3, 0x8001));
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 16];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_version_opt_len(0, 8);
        p.set_flags(false, true);
        p.set_protocol(EtherType::TEB);
        p.set_vni(0xab_cdef);
        let o = p.options_mut();
        o[..4].copy_from_slice(&[0x01, 0x02, 0x80, 0x01]);
        o[4..].copy_from_slice(&ovn_option_data(0x7fff, 1));
        assert_eq!(bytes, EMIT_BYTES);
    }

    #[test]
    fn test_parse() {
        let r = Repr::parse(&Packet::new_unchecked(&PACKET_BYTES[..])).unwrap();
        assert_eq!(
            r,
            Repr {
                oam: false,
                protocol: EtherType::TEB,
                vni: 5,
                ovn: Some(OvnOption { ingress_key: 3, egress_key: 0x8001 })
            }
        );
        assert_eq!(Repr::parse(&Packet::new_unchecked(&EMIT_BYTES[..])).unwrap(), emit_repr());
    }

    #[test]
    fn test_emit() {
        let r = emit_repr();
        assert_eq!(r.buffer_len(), 16);
        let mut bytes = [0u8; 16];
        r.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, EMIT_BYTES);
    }

    #[test]
    fn errors() {
        let parse = |b: &[u8]| Repr::parse(&Packet::new_unchecked(b));
        // options beyond the buffer
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..23]), Err(Error));
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..7]), Err(Error));
        // version 1
        let mut b = PACKET_BYTES;
        b[0] |= 0x40;
        assert_eq!(parse(&b), Err(Error));
        // an option overrunning Opt Len
        let mut b = PACKET_BYTES;
        b[11] = 4;
        assert_eq!(parse(&b), Err(Error));
        // the first option made critical
        let mut b = PACKET_BYTES;
        b[10] = 0x81;
        assert_eq!(parse(&b), Err(Error));
        // OVN option of the wrong length
        let mut b = PACKET_BYTES;
        b[11] = 0;
        b[19] = 2;
        assert_eq!(parse(&b), Err(Error));
        // OVN option twice
        let mut b = PACKET_BYTES;
        b[8..12].copy_from_slice(&[0x01, 0x02, 0x80, 0x01]);
        assert_eq!(parse(&b), Err(Error));
        // reserved bit of the OVN data is ignored
        let mut b = PACKET_BYTES;
        b[20] |= 0x80;
        assert_eq!(parse(&b).unwrap().ovn, Some(OvnOption { ingress_key: 3, egress_key: 0x8001 }));
    }
}
