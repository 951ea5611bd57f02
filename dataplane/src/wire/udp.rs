//! UDP headers (RFC 768).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Length             |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Length covers header and payload. A zero checksum means "none" over IPv4
//! and is invalid over IPv6 (RFC 8200 §8.1), except for tunnels that opt
//! out per RFC 6935/6936, which Petrel does not.

use core::net::IpAddr;

use super::checksum::{self, ChecksumCaps};
use super::field::Field;
use super::{be16, ip_proto, set_be16, Error, Result};

/// Byte ranges of the UDP header.
pub mod field {
    use super::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Length of header and payload.
    pub const LENGTH: Field = 4..6;
    /// Checksum.
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// Read/write view of a UDP datagram.
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

    /// Ensures no accessor panics: `8 <= Length <= buffer length`.
    /// Invalidated by `set_length`.
    ///
    /// # Errors
    /// If that fails.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let l = usize::from(self.length());
        if l < HEADER_LEN || l > len {
            return Err(Error);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// Length of header and payload.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether the checksum verifies against the pseudo-header of `src` and
    /// `dst` (a zero checksum passes over IPv4 only).
    ///
    /// # Panics
    /// Not after a successful `check_len`.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let data = &self.buffer.as_ref()[..usize::from(self.length())];
        let ph = checksum::pseudo_header(src, dst, ip_proto::UDP, u32::from(self.length()));
        checksum::combine(&[ph, checksum::data(data)]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, up to Length.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.length())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::SRC_PORT], v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::DST_PORT], v);
    }

    /// Sets the length. Invalidates `check_len`.
    #[inline]
    pub fn set_length(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::LENGTH], v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], v);
    }

    /// Computes and stores the checksum over header and payload (up to
    /// Length); a computed zero is sent as 0xffff (RFC 768).
    ///
    /// # Panics
    /// If the buffer is shorter than Length.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let len = self.length();
        let ph = checksum::pseudo_header(src, dst, ip_proto::UDP, u32::from(len));
        let sum = checksum::combine(&[ph, checksum::data(&self.buffer.as_ref()[..usize::from(len)])]);
        let c = !sum;
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The payload, up to Length, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.length());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// High-level form of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Repr {
    /// Parses a header, verifying the checksum unless `caps.udp.rx`.
    ///
    /// # Errors
    /// Bad length, or a bad (or, over IPv6, zero) checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, src: &IpAddr, dst: &IpAddr, caps: &ChecksumCaps) -> Result<Repr> {
        p.check_len()?;
        if !caps.udp.rx && !p.verify_checksum(src, dst) {
            return Err(Error);
        }
        Ok(Repr { src_port: p.src_port(), dst_port: p.dst_port() })
    }

    /// Length of the emitted header.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header in front of the `payload_len` bytes already in
    /// the buffer and fills the checksum: computed in software, or with
    /// `caps.udp.tx` the pseudo-header sum for the NIC to complete.
    ///
    /// # Panics
    /// If the buffer is shorter than `8 + payload_len` or that exceeds 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut Packet<T>,
        src: &IpAddr,
        dst: &IpAddr,
        payload_len: usize,
        caps: &ChecksumCaps,
    ) {
        let len = u16::try_from(HEADER_LEN + payload_len).expect("UDP length fits 16 bits");
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_length(len);
        if caps.udp.tx {
            p.set_checksum(checksum::pseudo_header(src, dst, ip_proto::UDP, u32::from(len)));
        } else {
            p.fill_checksum(src, dst);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    #[rustfmt::skip]
    static PACKET_BYTES: [u8; 14] = [
        // UDP: 49152 -> 6081, length 12, checksum
        0xc0, 0x00, 0x17, 0xc1,
        0x00, 0x0c, 0x00, 0x00,
        // payload
        0xaa, 0xbb, 0xcc, 0xdd,
        // trailing bytes beyond Length
        0xee, 0xee,
    ];

    fn with_checksum() -> [u8; 14] {
        let mut b = PACKET_BYTES;
        Packet::new_unchecked(&mut b[..]).fill_checksum(&SRC, &DST);
        b
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 49152);
        assert_eq!(p.dst_port(), 6081);
        assert_eq!(p.length(), 12);
        assert_eq!(p.checksum(), 0);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 14];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_src_port(49152);
        p.set_dst_port(6081);
        p.set_length(12);
        p.set_checksum(0);
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        bytes[12..].copy_from_slice(&[0xee, 0xee]);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_parse() {
        let b = with_checksum();
        let r = Repr::parse(&Packet::new_unchecked(&b[..]), &SRC, &DST, &ChecksumCaps::default()).unwrap();
        assert_eq!(r, Repr { src_port: 49152, dst_port: 6081 });
        // zero checksum: none over IPv4, invalid over IPv6
        let p = Packet::new_unchecked(&PACKET_BYTES[..]);
        assert!(Repr::parse(&p, &SRC, &DST, &ChecksumCaps::default()).is_ok());
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(Repr::parse(&p, &v6, &v6, &ChecksumCaps::default()), Err(Error));
        assert!(Repr::parse(&p, &v6, &v6, &ChecksumCaps::offload_all()).is_ok());
    }

    #[test]
    fn test_emit() {
        let mut bytes = PACKET_BYTES;
        bytes[..8].fill(0);
        Repr { src_port: 49152, dst_port: 6081 }.emit(
            &mut Packet::new_unchecked(&mut bytes[..]),
            &SRC,
            &DST,
            4,
            &ChecksumCaps::default(),
        );
        assert_eq!(bytes, with_checksum());
        let p = Packet::new_unchecked(&bytes[..]);
        assert!(p.verify_checksum(&SRC, &DST));
        assert!(!p.verify_checksum(&SRC, &SRC));
    }

    #[test]
    fn bad_lengths() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..7]), Err(Error));
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..11]), Err(Error));
        let mut b = PACKET_BYTES;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error));
    }
}
