//! VLAN tags (IEEE 802.1Q C-TAG, TPID 0x8100; 802.1ad S-TAG, TPID 0x88a8).
//!
//! A tag sits between the source MAC address and the EtherType. Its TPID
//! occupies the Ethernet EtherType position, so this view covers only the
//! 4 bytes *after* the TPID: the TCI and the encapsulated EtherType.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  PCP  |D|        VID            |    Encapsulated EtherType     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  \_____________ TCI _____________/
//! ```
//!
//! PCP: priority (3 bits); D: drop eligible indicator (DEI, formerly CFI);
//! VID: VLAN identifier (12 bits; 0 = priority tag only, 0xfff reserved).

use super::ethernet::EtherType;
use super::field::Field;
use super::{be16, set_be16, Error, Result};

/// Byte ranges of a VLAN tag (after the TPID).
pub mod field {
    use super::Field;
    /// Tag control information: PCP, DEI, VID.
    pub const TCI: Field = 0..2;
    /// The EtherType of what follows the tag (or the next TPID).
    pub const ETHERTYPE: Field = 2..4;
}

/// Length of a tag after its TPID; the whole tag on the wire is also 4
/// bytes, counting the TPID that replaced the Ethernet EtherType.
pub const TAG_LEN: usize = 4;

/// Mask of the VID in a TCI.
pub const VID_MASK: u16 = 0x0fff;
/// The DEI bit in a TCI. OVS calls it `VLAN_CFI` and, in flow keys, uses it
/// to mean "a tag is present" instead (see `flow::FlowKey::vlan_tci`).
pub const DEI: u16 = 0x1000;
/// Shift of the PCP in a TCI.
pub const PCP_SHIFT: u16 = 13;

/// Read/write view of a VLAN tag (TCI + encapsulated EtherType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tag<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Tag { buffer }
    }

    /// Wraps a buffer after [`Tag::check_len`].
    ///
    /// # Errors
    /// If the buffer is shorter than [`TAG_LEN`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// Ensures no accessor panics.
    ///
    /// # Errors
    /// If the buffer is shorter than [`TAG_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < TAG_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole TCI.
    #[inline]
    pub fn tci(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::TCI])
    }

    /// Priority code point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        self.buffer.as_ref()[field::TCI.start] >> 5
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & DEI != 0
    }

    /// VLAN identifier (0..=4095).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }

    /// EtherType of what follows the tag.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tag<T> {
    /// Sets the whole TCI.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        set_be16(&mut self.buffer.as_mut()[field::TCI], tci);
    }

    /// Sets the VID, keeping PCP and DEI; bits above 12 of `vid` are ignored.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & !VID_MASK) | (vid & VID_MASK);
        self.set_tci(tci);
    }

    /// Sets the encapsulated EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        set_be16(&mut self.buffer.as_mut()[field::ETHERTYPE], ethertype.0);
    }
}

/// High-level form of a VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Priority code point (0..=7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (0..=4095).
    pub vid: u16,
    /// EtherType of what follows.
    pub ethertype: EtherType,
}

impl Repr {
    /// Parses a tag.
    ///
    /// # Errors
    /// If the buffer is too short.
    pub fn parse<T: AsRef<[u8]>>(tag: &Tag<T>) -> Result<Repr> {
        tag.check_len()?;
        Ok(Repr { pcp: tag.pcp(), dei: tag.dei(), vid: tag.vid(), ethertype: tag.ethertype() })
    }

    /// The TCI this representation encodes (PCP above 7 and VID above 4095
    /// are masked).
    pub const fn tci(&self) -> u16 {
        let pcp = (self.pcp as u16 & 0x7) << PCP_SHIFT;
        let dei = if self.dei { DEI } else { 0 };
        pcp | dei | (self.vid & VID_MASK)
    }

    /// Length of the emitted tag (after the TPID).
    pub const fn buffer_len(&self) -> usize {
        TAG_LEN
    }

    /// Writes the tag.
    ///
    /// # Panics
    /// If the buffer is shorter than [`TAG_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut Tag<T>) {
        tag.set_tci(self.tci());
        tag.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static TAG_BYTES: [u8; 4] = [
        // VLAN tag: PCP 5, DEI 1, VID 0x123; encapsulates IPv6
        0xb1, 0x23,
        0x86, 0xdd,
    ];

    fn repr() -> Repr {
        Repr { pcp: 5, dei: true, vid: 0x123, ethertype: EtherType::IPV6 }
    }

    #[test]
    fn test_deconstruct() {
        let t = Tag::new_checked(&TAG_BYTES[..]).unwrap();
        assert_eq!(t.tci(), 0xb123);
        assert_eq!(t.pcp(), 5);
        assert!(t.dei());
        assert_eq!(t.vid(), 0x123);
        assert_eq!(t.ethertype(), EtherType::IPV6);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 4];
        let mut t = Tag::new_unchecked(&mut bytes[..]);
        t.set_tci(0xb000);
        t.set_vid(0x123);
        t.set_ethertype(EtherType::IPV6);
        assert_eq!(bytes, TAG_BYTES);
    }

    #[test]
    fn test_parse() {
        assert_eq!(Repr::parse(&Tag::new_unchecked(&TAG_BYTES[..])).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0u8; 4];
        repr().emit(&mut Tag::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, TAG_BYTES);
    }

    #[test]
    fn short_tag_is_error() {
        assert_eq!(Tag::new_checked(&TAG_BYTES[..3]), Err(Error));
    }
}
