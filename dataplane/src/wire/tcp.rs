//! TCP headers (RFC 9293 §3.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Acknowledgment Number                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Data |     |N|C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsv |S|W|C|R|C|S|S|Y|I|            Window             |
//! |       |     | |R|E|G|K|H|T|N|N|                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |         Urgent Pointer        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (Data Offset > 5)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Flags are the low 12 bits of the offset/flags word, reserved bits
//! included, as OVS's `tcp_flags` holds them (NS is RFC 3540, now the
//! AccECN "AE" bit).

use core::net::IpAddr;

use super::checksum::{self, ChecksumCaps};
use super::field::Field;
use super::{be16, be32, ip_proto, set_be16, set_be32, Error, Result};

/// Byte ranges of the TCP header.
pub mod field {
    use super::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Field = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Field = 8..12;
    /// Data offset and flags.
    pub const FLAGS: Field = 12..14;
    /// Window.
    pub const WIN_SIZE: Field = 14..16;
    /// Checksum.
    pub const CHECKSUM: Field = 16..18;
    /// Urgent pointer.
    pub const URGENT: Field = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// FIN flag.
pub const FIN: u16 = 0x001;
/// SYN flag.
pub const SYN: u16 = 0x002;
/// RST flag.
pub const RST: u16 = 0x004;
/// PSH flag.
pub const PSH: u16 = 0x008;
/// ACK flag.
pub const ACK: u16 = 0x010;
/// URG flag.
pub const URG: u16 = 0x020;
/// ECE flag (RFC 3168).
pub const ECE: u16 = 0x040;
/// CWR flag (RFC 3168).
pub const CWR: u16 = 0x080;
/// NS flag (RFC 3540).
pub const NS: u16 = 0x100;
/// Mask of all flag bits, reserved ones included.
pub const FLAGS_MASK: u16 = 0x0fff;

/// Read/write view of a TCP segment.
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

    /// Ensures no accessor panics: `20 <= Data Offset × 4 <= buffer length`.
    /// Invalidated by `set_header_len`.
    ///
    /// # Errors
    /// If that fails.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let hl = usize::from(self.header_len());
        if hl < HEADER_LEN || hl > len {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes (Data Offset × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::FLAGS.start] >> 4) * 4
    }

    /// The 12 flag bits (see [`FIN`] … [`NS`]).
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS]) & FLAGS_MASK
    }

    /// Window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }

    /// Whether the checksum over the whole buffer (header and payload)
    /// verifies against the pseudo-header of `src`, `dst`.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let ph = checksum::pseudo_header(src, dst, ip_proto::TCP, len);
        checksum::combine(&[ph, checksum::data(data)]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options.
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// The payload: everything after the header (the buffer must end where
    /// the IP payload ends).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        set_be32(&mut self.buffer.as_mut()[field::SEQ_NUM], v);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        set_be32(&mut self.buffer.as_mut()[field::ACK_NUM], v);
    }

    /// Sets the header length in bytes (rounded down to 4-byte units, at
    /// most 60), keeping the flags. Invalidates `check_len`.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS.start];
        *b = (*b & 0x0f) | (((len / 4) & 0x0f) << 4);
    }

    /// Sets the 12 flag bits, keeping the data offset.
    #[inline]
    pub fn set_flags(&mut self, flags: u16) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        let v = (be16(b) & !FLAGS_MASK) | (flags & FLAGS_MASK);
        set_be16(b, v);
    }

    /// Sets the window.
    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::WIN_SIZE], v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::CHECKSUM], v);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        set_be16(&mut self.buffer.as_mut()[field::URGENT], v);
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let ph = checksum::pseudo_header(src, dst, ip_proto::TCP, len);
        let sum = checksum::combine(&[ph, checksum::data(data)]);
        self.set_checksum(!sum);
    }
}

/// High-level form of a TCP header; options are skipped by `parse` and not
/// emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Flags (12 bits).
    pub flags: u16,
    /// Window.
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
}

impl Repr {
    /// Parses a header; the buffer must end where the IP payload ends. The
    /// checksum is verified unless `caps.tcp.rx`.
    ///
    /// # Errors
    /// Bad data offset, short buffer, or bad checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, src: &IpAddr, dst: &IpAddr, caps: &ChecksumCaps) -> Result<Repr> {
        p.check_len()?;
        if !caps.tcp.rx && !p.verify_checksum(src, dst) {
            return Err(Error);
        }
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
        })
    }

    /// Length of the emitted header.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header in front of the payload already in the
    /// buffer (which must end where the segment ends) and fills the
    /// checksum: in software, or with `caps.tcp.tx` the pseudo-header sum.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut Packet<T>,
        src: &IpAddr,
        dst: &IpAddr,
        caps: &ChecksumCaps,
    ) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.buffer.as_mut()[field::FLAGS.start] = 0x50;
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(self.urgent_at);
        if caps.tcp.tx {
            let len = u32::try_from(p.buffer.as_ref().len()).unwrap_or(u32::MAX);
            p.set_checksum(checksum::pseudo_header(src, dst, ip_proto::TCP, len));
        } else {
            p.fill_checksum(src, dst);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[rustfmt::skip]
    static SEGMENT_BYTES: [u8; 28] = [
        // TCP: 1234 -> 80
        0x04, 0xd2, 0x00, 0x50,
        // seq 0x01020304, ack 0x05060708
        0x01, 0x02, 0x03, 0x04,
        0x05, 0x06, 0x07, 0x08,
        // data offset 6, flags SYN|ACK, window 0xffff
        0x60, 0x12, 0xff, 0xff,
        // checksum (filled by the tests), urgent 0
        0x00, 0x00, 0x00, 0x00,
        // option: MSS 1460
        0x02, 0x04, 0x05, 0xb4,
        // payload
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    fn repr() -> Repr {
        Repr {
            src_port: 1234,
            dst_port: 80,
            seq_number: 0x0102_0304,
            ack_number: 0x0506_0708,
            flags: SYN | ACK,
            window_len: 0xffff,
            urgent_at: 0,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&SEGMENT_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 1234);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x0102_0304);
        assert_eq!(p.ack_number(), 0x0506_0708);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), SYN | ACK);
        assert_eq!(p.window_len(), 0xffff);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 28];
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_src_port(1234);
        p.set_dst_port(80);
        p.set_seq_number(0x0102_0304);
        p.set_ack_number(0x0506_0708);
        p.set_header_len(24);
        p.set_flags(SYN | ACK);
        p.set_window_len(0xffff);
        p.set_urgent_at(0);
        bytes[20..].copy_from_slice(&[2, 4, 5, 0xb4, 0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(bytes, SEGMENT_BYTES);
    }

    #[test]
    fn test_parse() {
        let mut b = SEGMENT_BYTES;
        Packet::new_unchecked(&mut b[..]).fill_checksum(&SRC, &DST);
        let r = Repr::parse(&Packet::new_unchecked(&b[..]), &SRC, &DST, &ChecksumCaps::default()).unwrap();
        assert_eq!(r, repr());
        b[27] ^= 0xff;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..]), &SRC, &DST, &ChecksumCaps::default()), Err(Error));
    }

    #[test]
    fn test_emit() {
        let mut b = [0u8; 24];
        b[20..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        repr().emit(&mut Packet::new_unchecked(&mut b[..]), &SRC, &DST, &ChecksumCaps::default());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert!(p.verify_checksum(&SRC, &DST));
        assert_eq!(Repr::parse(&p, &SRC, &DST, &ChecksumCaps::default()).unwrap(), repr());
    }

    #[test]
    fn bad_data_offset() {
        assert_eq!(Packet::new_checked(&SEGMENT_BYTES[..19]), Err(Error));
        assert_eq!(Packet::new_checked(&SEGMENT_BYTES[..23]), Err(Error));
        let mut b = SEGMENT_BYTES;
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error));
        b[12] = 0xf0;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error));
    }
}
