//! Ethernet II frames (IEEE 802.3 clause 3, the "DIX" EtherType form).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination MAC address                    |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                      Source MAC address                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      EtherType / TPID         |          Payload ...          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The FCS is not part of the frame here (NICs strip it). A VLAN tag, when
//! present, follows the source address: its TPID sits where the EtherType is,
//! see [`super::vlan`].

use super::field::{Field, Rest};
use super::{array, be16, set_be16, Error, Result};

/// An EtherType (IEEE Registration Authority), or an 802.3 length when
/// below [`EtherType::MIN`]. Usable in `match` patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4 (RFC 894).
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP (RFC 826).
    pub const ARP: EtherType = EtherType(0x0806);
    /// Customer VLAN tag, 802.1Q C-TAG.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// Service VLAN tag, 802.1ad S-TAG (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// Reverse ARP (RFC 903); same body as ARP.
    pub const RARP: EtherType = EtherType(0x8035);
    /// IPv6 (RFC 2464).
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// Transparent Ethernet Bridging: an Ethernet frame, Geneve's protocol
    /// type for OVN (RFC 8926 §3.4).
    pub const TEB: EtherType = EtherType(0x6558);
    /// Values below this are 802.3 length fields, not EtherTypes.
    pub const MIN: u16 = 0x0600;
    /// What OVS puts in `dl_type` for an 802.3 frame without a SNAP header
    /// (`FLOW_DL_TYPE_NONE`).
    pub const NONE: EtherType = EtherType(0x05ff);

    /// Whether this is a VLAN tag protocol identifier (802.1Q or 802.1ad).
    #[inline(always)]
    pub const fn is_vlan(self) -> bool {
        self.0 == Self::VLAN.0 || self.0 == Self::QINQ.0
    }
}

/// Byte ranges of the Ethernet header.
pub mod field {
    use super::{Field, Rest};
    /// Destination MAC address.
    pub const DESTINATION: Field = 0..6;
    /// Source MAC address.
    pub const SOURCE: Field = 6..12;
    /// EtherType, or the TPID of a VLAN tag.
    pub const ETHERTYPE: Field = 12..14;
    /// What follows the EtherType.
    pub const PAYLOAD: Rest = 14..;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// Read/write view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps a buffer after [`Frame::check_len`].
    ///
    /// # Errors
    /// If the buffer is shorter than an Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Ensures no accessor panics: the buffer holds the 14-byte header.
    ///
    /// # Errors
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        array(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        array(&self.buffer.as_ref()[field::SOURCE])
    }

    /// EtherType (or TPID, or 802.3 length).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// Everything after the EtherType.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        set_be16(&mut self.buffer.as_mut()[field::ETHERTYPE], ethertype.0);
    }

    /// Everything after the EtherType, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// High-level form of an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source MAC address.
    pub src_addr: [u8; 6],
    /// Destination MAC address.
    pub dst_addr: [u8; 6],
    /// EtherType (or the TPID of a following VLAN tag).
    pub ethertype: EtherType,
}

impl Repr {
    /// Parses the header of a checked frame.
    ///
    /// # Errors
    /// If the frame is shorter than [`HEADER_LEN`].
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr { src_addr: frame.src_addr(), dst_addr: frame.dst_addr(), ethertype: frame.ethertype() })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the start of `frame`.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static FRAME_BYTES: [u8; 18] = [
        // Ethernet: dst 02:00:00:00:00:02, src 02:00:00:00:00:01, IPv4
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x00,
        // payload
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    fn repr() -> Repr {
        Repr { src_addr: [2, 0, 0, 0, 0, 1], dst_addr: [2, 0, 0, 0, 0, 2], ethertype: EtherType::IPV4 }
    }

    #[test]
    fn test_deconstruct() {
        let f = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(f.dst_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 18];
        let mut f = Frame::new_unchecked(&mut bytes[..]);
        f.set_dst_addr([2, 0, 0, 0, 0, 2]);
        f.set_src_addr([2, 0, 0, 0, 0, 1]);
        f.set_ethertype(EtherType::IPV4);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn test_parse() {
        let f = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&f).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0u8; 18];
        bytes[14..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        repr().emit(&mut Frame::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn short_frame_is_error() {
        assert_eq!(Frame::new_checked(&FRAME_BYTES[..13]), Err(Error));
        assert!(Frame::new_checked(&FRAME_BYTES[..14]).is_ok());
    }

    #[test]
    fn vlan_tpids() {
        assert!(EtherType::VLAN.is_vlan());
        assert!(EtherType::QINQ.is_vlan());
        assert!(!EtherType::IPV4.is_vlan());
    }
}
