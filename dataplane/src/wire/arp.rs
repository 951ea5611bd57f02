//! ARP over Ethernet for IPv4 (RFC 826); also the body of RARP (RFC 903).
//!
//! Only hardware type 1 (Ethernet, 6-byte addresses) with protocol type
//! 0x0800 (IPv4, 4-byte addresses) is understood; [`Repr::parse`] rejects
//! every other combination.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Hardware type          |        Protocol type          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  HW addr len  | Proto addr len|          Operation            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Sender hardware address (6 bytes) ...              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    ... SHA    |   Sender protocol address (4 bytes) ...       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  ... SPA      |   Target hardware address (6 bytes) ...       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          ... THA              |   Target protocol address ... |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          ... TPA              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::net::Ipv4Addr;

use super::field::Field;
use super::{array, be16, be32, set_be16, Error, Result};

/// Byte ranges of an Ethernet/IPv4 ARP packet.
pub mod field {
    use super::Field;
    /// Hardware type.
    pub const HTYPE: Field = 0..2;
    /// Protocol type.
    pub const PTYPE: Field = 2..4;
    /// Hardware address length.
    pub const HLEN: usize = 4;
    /// Protocol address length.
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: Field = 6..8;
    /// Sender hardware address.
    pub const SHA: Field = 8..14;
    /// Sender protocol address.
    pub const SPA: Field = 14..18;
    /// Target hardware address.
    pub const THA: Field = 18..24;
    /// Target protocol address.
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

/// Read/write view of an ARP packet, with Ethernet/IPv4 address sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    ///
    /// # Errors
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures no accessor panics. The address accessors assume the
    /// Ethernet/IPv4 sizes; check [`Packet::is_ethernet_ipv4`] before trusting
    /// them.
    ///
    /// # Errors
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type.
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// Protocol type.
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PTYPE])
    }

    /// Hardware address length.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Whether the four type/length fields say Ethernet + IPv4.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        let b = self.buffer.as_ref();
        // htype 0x0001, ptype 0x0800, hlen 6, plen 4 as two integer compares.
        be32(&b[0..4]) == 0x0001_0800 && be16(&b[4..6]) == 0x0604
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::OPER])
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_hardware_addr(&self) -> [u8; 6] {
        array(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_protocol_addr(&self) -> [u8; 4] {
        array(&self.buffer.as_ref()[field::SPA])
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hardware_addr(&self) -> [u8; 6] {
        array(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    #[inline]
    pub fn target_protocol_addr(&self) -> [u8; 4] {
        array(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets hardware type, protocol type and both lengths to Ethernet/IPv4.
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        set_be16(&mut b[field::HTYPE], HTYPE_ETHERNET);
        set_be16(&mut b[field::PTYPE], PTYPE_IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        set_be16(&mut self.buffer.as_mut()[field::OPER], op);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_hardware_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&a);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_protocol_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a);
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&a);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a);
    }
}

/// High-level form of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Operation ([`OP_REQUEST`], [`OP_REPLY`], or any other value).
    pub operation: u16,
    /// Sender hardware address.
    pub source_hardware_addr: [u8; 6],
    /// Sender protocol address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target hardware address.
    pub target_hardware_addr: [u8; 6],
    /// Target protocol address.
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Parses an ARP packet.
    ///
    /// # Errors
    /// If it is too short or not Ethernet/IPv4.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if !p.is_ethernet_ipv4() {
            return Err(Error);
        }
        Ok(Repr {
            operation: p.operation(),
            source_hardware_addr: p.sender_hardware_addr(),
            source_protocol_addr: Ipv4Addr::from(p.sender_protocol_addr()),
            target_hardware_addr: p.target_hardware_addr(),
            target_protocol_addr: Ipv4Addr::from(p.target_protocol_addr()),
        })
    }

    /// Length of the emitted packet.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet.
    ///
    /// # Panics
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_ethernet_ipv4();
        p.set_operation(self.operation);
        p.set_sender_hardware_addr(self.source_hardware_addr);
        p.set_sender_protocol_addr(self.source_protocol_addr.octets());
        p.set_target_hardware_addr(self.target_hardware_addr);
        p.set_target_protocol_addr(self.target_protocol_addr.octets());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static PACKET_BYTES: [u8; 28] = [
        // ARP: Ethernet, IPv4, hlen 6, plen 4, request
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        // sender 02:00:00:00:00:01 10.0.0.1
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01,
        // target 00:00:00:00:00:00 10.0.0.2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    fn repr() -> Repr {
        Repr {
            operation: OP_REQUEST,
            source_hardware_addr: [2, 0, 0, 0, 0, 1],
            source_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            target_hardware_addr: [0; 6],
            target_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.hardware_len(), 6);
        assert_eq!(p.protocol_len(), 4);
        assert!(p.is_ethernet_ipv4());
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_hardware_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(p.sender_protocol_addr(), [10, 0, 0, 1]);
        assert_eq!(p.target_hardware_addr(), [0; 6]);
        assert_eq!(p.target_protocol_addr(), [10, 0, 0, 2]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xffu8; 28];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_ethernet_ipv4();
        p.set_operation(OP_REQUEST);
        p.set_sender_hardware_addr([2, 0, 0, 0, 0, 1]);
        p.set_sender_protocol_addr([10, 0, 0, 1]);
        p.set_target_hardware_addr([0; 6]);
        p.set_target_protocol_addr([10, 0, 0, 2]);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&PACKET_BYTES[..])).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0u8; 28];
        repr().emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn other_types_are_errors() {
        for (i, v) in [(1, 0x86), (4, 16), (5, 16), (0, 1)] {
            let mut bytes = PACKET_BYTES;
            bytes[i] = v;
            assert_eq!(Repr::parse(&Packet::new_unchecked(&bytes[..])), Err(Error), "byte {i}");
        }
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..27]), Err(Error));
    }
}
