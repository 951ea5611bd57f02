//! ICMP for IPv4 (RFC 792).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Rest of header (identifier/sequence, MTU, ...)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            Data ...                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Every message has the 8-byte header; the flow key only uses Type and
//! Code (in `tp_src`/`tp_dst`, as OVS does). NICs do not offload ICMP
//! checksums, so they are always computed and verified in software.

use super::checksum;
use super::field::{Field, Rest};
use super::{be16, be32, set_be16, set_be32, Error, Result};

/// Byte ranges of the ICMPv4 header.
pub mod field {
    use super::{Field, Rest};
    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum over the whole message.
    pub const CHECKSUM: Field = 2..4;
    /// Type-specific rest of the header.
    pub const REST: Field = 4..8;
    /// Data.
    pub const DATA: Rest = 8..;
}

/// Length of the ICMPv4 header.
pub const HEADER_LEN: usize = field::DATA.start;
/// Echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable.
pub const DST_UNREACHABLE: u8 = 3;
/// Echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Time exceeded.
pub const TIME_EXCEEDED: u8 = 11;

/// Read/write view of an ICMPv4 message.
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

    /// Ensures no accessor panics.
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

    /// The type-specific rest of the header (echo: identifier << 16 | sequence).
    #[inline]
    pub fn rest(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::REST])
    }

    /// Whether the checksum over the whole buffer verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The data after the header.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::DATA]
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

    /// Sets the rest of the header.
    #[inline]
    pub fn set_rest(&mut self, v: u32) {
        set_be32(&mut self.buffer.as_mut()[field::REST], v);
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(!sum);
    }

    /// The data after the header, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

/// High-level form of an ICMPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Message type.
    pub msg_type: u8,
    /// Message code.
    pub msg_code: u8,
    /// Type-specific rest of the header.
    pub rest: u32,
}

impl Repr {
    /// Parses a message (the buffer must end where the IP payload ends) and
    /// verifies its checksum.
    ///
    /// # Errors
    /// Short buffer or bad checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(Error);
        }
        Ok(Repr { msg_type: p.msg_type(), msg_code: p.msg_code(), rest: p.rest() })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header in front of the data already in the buffer and
    /// fills the checksum over the whole buffer.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_msg_type(self.msg_type);
        p.set_msg_code(self.msg_code);
        p.set_rest(self.rest);
        p.fill_checksum();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static PACKET_BYTES: [u8; 12] = [
        // ICMPv4: echo request, code 0, checksum
        0x08, 0x00, 0x6e, 0x31,
        // identifier 0x1234, sequence 1
        0x12, 0x34, 0x00, 0x01,
        // data
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    fn repr() -> Repr {
        Repr { msg_type: ECHO_REQUEST, msg_code: 0, rest: 0x1234_0001 }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.msg_type(), ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.rest(), 0x1234_0001);
        assert!(p.verify_checksum());
        assert_eq!(p.data(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(ECHO_REQUEST);
        p.set_msg_code(0);
        p.set_rest(0x1234_0001);
        p.data_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        p.fill_checksum();
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&PACKET_BYTES[..])).unwrap(), repr());
        let mut b = PACKET_BYTES;
        b[8] = 0;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Err(Error));
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0u8; 12];
        bytes[8..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        repr().emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn short_is_error() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..7]), Err(Error));
    }
}
