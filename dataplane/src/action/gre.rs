//! GRE and ERSPAN type II encapsulation of mirror copies, byte for byte as
//! OVS's userspace tunnels emit them (`lib/netdev-native-tnl.c`,
//! `netdev_gre_build_header`/`netdev_gre_push_header` and
//! `netdev_erspan_build_header`/`netdev_erspan_push_header`) for the tunnel
//! interfaces ovn-controller creates for a Southbound `Mirror`
//! (`controller/mirror.c`: `remote_ip=sink`, `key=index`, and for ERSPAN
//! `erspan_ver=1`, `erspan_idx=index`).
//!
//! ```text
//! GRE (RFC 2890), type gre:
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0|0|1|0|    reserved0    | ver |  Protocol 0x6558 (TEB)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Key = index                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! ERSPAN type II (draft-foschiano-erspan §4.1), type erspan:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0|0|0|1|    reserved0    | ver |  Protocol 0x88BE (ERSPAN I/II)|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Ver=1|          VLAN = 0     | COS |En |T|  Session ID=index |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Reserved         |            Index = index              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! What OVS puts there and so do we: no GRE checksum; for `gre` the key
//! flag and no sequence number (OVN sets no `seq` option); for `erspan`
//! only the sequence flag (OVS does not send the key in the GRE header of
//! ERSPAN: the session id carries it), VLAN 0, COS 0, En 0 (OVS's
//! "originally without VLAN tag", even for tagged frames), T 0 (never
//! truncated). The sequence number is the caller's: OVS numbers from 0
//! (`atomic_count_inc` returns the value before the increment) with the
//! counter of its datapath's one `erspan_sys` port, i.e. one sequence for
//! all ERSPAN interfaces, which `pmd::features` reproduces. Outer IPv4: TOS 0, ID 0, DF set
//! (OVS's `df_default=true`), TTL 64, protocol 47, checksum computed. The
//! ERSPAN session id has 10 bits and the index 20: OVS refuses to build a
//! header beyond (`EINVAL`), so [`GreSink::new`] does too.
//!
//! IPv6 sinks: ovn-controller 23.03 makes the same `gre`/`erspan`
//! interfaces with an IPv6 `remote_ip`, and OVS then sends the same GRE
//! and ERSPAN headers behind an IPv6 header: traffic class 0, flow label
//! 0, next header 47, hop limit 64 (`netdev_tnl_ip_build_header`,
//! `netdev_tnl_push_ip_header` with label 0).

use std::net::IpAddr;

use crate::buf::PacketBuf;
use crate::drop::DropReason;
use crate::wire::checksum;
use crate::wire::ChecksumCaps;

/// GRE flag: a key is present (RFC 2890).
pub const GRE_KEY: u16 = 0x2000;
/// GRE flag: a sequence number is present (RFC 2890).
pub const GRE_SEQ: u16 = 0x1000;
/// GRE protocol of bridged Ethernet (transparent Ethernet bridging).
pub const ETH_TYPE_TEB: u16 = 0x6558;
/// GRE protocol of ERSPAN type I/II.
pub const ETH_TYPE_ERSPAN1: u16 = 0x88be;
/// Largest ERSPAN session id (10 bits).
pub const ERSPAN_MAX_SID: u32 = 0x3ff;
/// Largest ERSPAN v1 index (20 bits).
pub const ERSPAN_MAX_IDX: u32 = 0xf_ffff;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;
/// TTL of the outer header (OVS's tunnel default).
pub const TTL: u8 = 64;

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const IP6_LEN: usize = 40;
/// Outer headers of a `gre` copy: Ethernet, IPv4, GRE with key.
pub const GRE_OUTER_LEN: usize = ETH_LEN + IP_LEN + 8;
/// Outer headers of an `erspan` copy: Ethernet, IPv4, GRE with sequence
/// number, ERSPAN v1 header and index.
pub const ERSPAN_OUTER_LEN: usize = ETH_LEN + IP_LEN + 8 + 8;
/// The longest outer headers: ERSPAN over IPv6.
pub const MAX_OUTER_LEN: usize = ETH_LEN + IP6_LEN + 8 + 8;

/// The mirror tunnel types of the Southbound `Mirror` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorKind {
    /// GRE, bridged Ethernet, key = index.
    Gre,
    /// ERSPAN type II (version 1), session id = index.
    Erspan,
}

impl MirrorKind {
    /// `gre` or `erspan` (the Southbound's spelling).
    pub fn name(self) -> &'static str {
        match self {
            MirrorKind::Gre => "gre",
            MirrorKind::Erspan => "erspan",
        }
    }

    /// GRE header and options, plus ERSPAN's header and index.
    fn gre_len(self) -> usize {
        match self {
            MirrorKind::Gre => 8,
            MirrorKind::Erspan => 16,
        }
    }

    /// Whether `index` can be carried (GRE: 32-bit key; ERSPAN: 10-bit
    /// session id), as OVS checks it.
    ///
    /// # Errors
    /// [`GreConfigError::IndexOutOfRange`].
    pub fn check_index(self, index: i64) -> Result<u32, GreConfigError> {
        let max = match self {
            MirrorKind::Gre => u32::MAX,
            MirrorKind::Erspan => ERSPAN_MAX_SID,
        };
        u32::try_from(index).ok().filter(|i| *i <= max).ok_or(GreConfigError::IndexOutOfRange {
            kind: self.name(),
            index,
            max,
        })
    }
}

/// Why a mirror session's headers cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum GreConfigError {
    /// {kind} index {index} out of range 0..={max}
    IndexOutOfRange {
        /// `gre` or `erspan`.
        kind: &'static str,
        /// The index asked for.
        index: i64,
        /// The largest the type carries.
        max: u32,
    },
    /// the tunnel IP and the sink are not of one address family
    MixedFamilies,
}

/// Where a mirror's copies go, as one PMD sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreSinkConfig {
    /// GRE or ERSPAN.
    pub kind: MirrorKind,
    /// The uplink's MAC.
    pub src_mac: [u8; 6],
    /// The next hop's MAC.
    pub dst_mac: [u8; 6],
    /// The node's tunnel IP.
    pub src_ip: IpAddr,
    /// The sink (same family).
    pub dst_ip: IpAddr,
    /// The Southbound `Mirror.index`: GRE key, ERSPAN session id and index.
    pub index: u32,
}

/// Prebuilt outer headers of a mirror session (built off the hot path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreSink {
    kind: MirrorKind,
    template: [u8; MAX_OUTER_LEN],
    /// Ethernet + IP header + GRE (+ ERSPAN).
    outer_len: usize,
    /// IPv6 outer header.
    v6: bool,
    /// One's-complement sum of the template's IPv4 header (total length
    /// and checksum zero); unused for IPv6.
    partial_sum: u16,
}

impl GreSink {
    /// Prebuilds the headers.
    ///
    /// # Errors
    /// An index the type cannot carry ([`MirrorKind::check_index`]),
    /// addresses of two families.
    pub fn new(c: &GreSinkConfig) -> Result<Self, GreConfigError> {
        c.kind.check_index(i64::from(c.index))?;
        let mut t = [0u8; MAX_OUTER_LEN];
        t[0..6].copy_from_slice(&c.dst_mac);
        t[6..12].copy_from_slice(&c.src_mac);
        let (ip_len, v6, partial_sum) = match (c.src_ip, c.dst_ip) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                t[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                let ip = &mut t[ETH_LEN..ETH_LEN + IP_LEN];
                ip[0] = 0x45;
                ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
                ip[8] = TTL;
                ip[9] = IPPROTO_GRE;
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                (IP_LEN, false, checksum::data(ip))
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                t[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                let ip = &mut t[ETH_LEN..ETH_LEN + IP6_LEN];
                ip[0] = 0x60; // version 6, traffic class 0, flow label 0
                ip[6] = IPPROTO_GRE;
                ip[7] = TTL;
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                (IP6_LEN, true, 0)
            }
            _ => return Err(GreConfigError::MixedFamilies),
        };
        let outer_len = ETH_LEN + ip_len + c.kind.gre_len();
        let g = &mut t[ETH_LEN + ip_len..];
        match c.kind {
            MirrorKind::Gre => {
                g[0..2].copy_from_slice(&GRE_KEY.to_be_bytes());
                g[2..4].copy_from_slice(&ETH_TYPE_TEB.to_be_bytes());
                g[4..8].copy_from_slice(&c.index.to_be_bytes());
            }
            MirrorKind::Erspan => {
                g[0..2].copy_from_slice(&GRE_SEQ.to_be_bytes());
                g[2..4].copy_from_slice(&ETH_TYPE_ERSPAN1.to_be_bytes());
                // g[4..8]: the sequence number, per copy.
                // Version 1, VLAN 0; COS 0, En 0, T 0, session id (10 bits).
                let sid = c.index & ERSPAN_MAX_SID;
                let w = (1u32 << 28) | sid;
                g[8..12].copy_from_slice(&w.to_be_bytes());
                g[12..16].copy_from_slice(&(c.index & ERSPAN_MAX_IDX).to_be_bytes());
            }
        }
        Ok(GreSink { kind: c.kind, template: t, outer_len, v6, partial_sum })
    }

    /// The session's type.
    pub fn kind(&self) -> MirrorKind {
        self.kind
    }

    /// Bytes put in front of each copy.
    pub fn outer_len(&self) -> usize {
        self.outer_len
    }
}

/// Encapsulates the Ethernet frame in `buf` for `sink`; `seq` is the
/// ERSPAN sequence number (ignored for GRE). With `caps.ipv4.tx` the IPv4
/// checksum is left 0 for the NIC.
///
/// # Errors
/// [`DropReason::EthTruncated`] if the frame is shorter than 14 bytes,
/// [`DropReason::EncapTooBig`] if the outer IP packet would exceed 65535
/// bytes, [`DropReason::NoHeadroom`] without room for the outer headers.
/// The packet is unchanged on error.
#[inline]
pub fn gre_encap<B: PacketBuf + ?Sized>(
    buf: &mut B,
    sink: &GreSink,
    seq: u32,
    caps: &ChecksumCaps,
) -> Result<(), DropReason> {
    let inner = buf.len();
    if inner < ETH_LEN {
        return Err(DropReason::EthTruncated);
    }
    let outer = sink.outer_len;
    let ip_len = if sink.v6 { IP6_LEN } else { IP_LEN };
    // IPv4: total length; IPv6: payload length.
    let field = inner + outer - ETH_LEN - if sink.v6 { IP6_LEN } else { 0 };
    let field = u16::try_from(field).map_err(|_| DropReason::EncapTooBig)?;
    buf.prepend(outer).map_err(|_| DropReason::NoHeadroom)?;
    let d = buf.data_mut();
    d[..outer].copy_from_slice(&sink.template[..outer]);
    if sink.v6 {
        d[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&field.to_be_bytes());
    } else {
        d[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&field.to_be_bytes());
        if !caps.ipv4.tx {
            let c = !checksum::combine(&[sink.partial_sum, field]);
            d[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
        }
    }
    if sink.kind == MirrorKind::Erspan {
        let at = ETH_LEN + ip_len + 4;
        d[at..at + 4].copy_from_slice(&seq.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::buf::VecBuf;

    fn cfg(kind: MirrorKind, index: u32) -> GreSinkConfig {
        GreSinkConfig {
            kind,
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            src_ip: "192.0.2.1".parse().unwrap(),
            dst_ip: "192.0.2.50".parse().unwrap(),
            index,
        }
    }

    /// A 60-byte inner frame.
    fn inner() -> Vec<u8> {
        let mut f: Vec<u8> = (0..60u8).collect();
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f
    }

    #[rustfmt::skip]
    static GRE_HDR: [u8; GRE_OUTER_LEN] = [
        // Ethernet: next hop, uplink, IPv4
        0x02, 0, 0, 0, 0, 0x02,  0x02, 0, 0, 0, 0, 0x01,  0x08, 0x00,
        // IPv4: 45, TOS 0, total 20+8+60=88, ID 0, DF, TTL 64, GRE, checksum, src, dst
        0x45, 0x00, 0x00, 0x58,  0x00, 0x00, 0x40, 0x00,  0x40, 0x2f, 0xb6, 0x43,
        192, 0, 2, 1,  192, 0, 2, 50,
        // GRE: K flag, protocol TEB, key 7
        0x20, 0x00, 0x65, 0x58,  0x00, 0x00, 0x00, 0x07,
    ];

    #[rustfmt::skip]
    static ERSPAN_HDR: [u8; ERSPAN_OUTER_LEN] = [
        // Ethernet
        0x02, 0, 0, 0, 0, 0x02,  0x02, 0, 0, 0, 0, 0x01,  0x08, 0x00,
        // IPv4: total 20+16+60=96
        0x45, 0x00, 0x00, 0x60,  0x00, 0x00, 0x40, 0x00,  0x40, 0x2f, 0xb6, 0x3b,
        192, 0, 2, 1,  192, 0, 2, 50,
        // GRE: S flag only, protocol ERSPAN, sequence number 5
        0x10, 0x00, 0x88, 0xbe,  0x00, 0x00, 0x00, 0x05,
        // ERSPAN: ver 1, VLAN 0 | COS 0, En 0, T 0, session id 0x1ff
        0x10, 0x00, 0x01, 0xff,
        // reserved, index 0x1ff
        0x00, 0x00, 0x01, 0xff,
    ];

    fn encap(kind: MirrorKind, index: u32, seq: u32) -> Vec<u8> {
        let sink = GreSink::new(&cfg(kind, index)).unwrap();
        let mut b = VecBuf::new(&inner(), 128, 0);
        gre_encap(&mut b, &sink, seq, &ChecksumCaps::software()).unwrap();
        b.data().to_vec()
    }

    #[test]
    fn test_emit_gre() {
        let d = encap(MirrorKind::Gre, 7, 99);
        assert_eq!(&d[..GRE_OUTER_LEN], &GRE_HDR[..]);
        assert_eq!(&d[GRE_OUTER_LEN..], &inner()[..]);
        assert_eq!(checksum::data(&d[14..34]), 0xffff, "IPv4 header checksum verifies");
    }

    #[test]
    fn test_emit_erspan() {
        let d = encap(MirrorKind::Erspan, 0x1ff, 5);
        assert_eq!(&d[..ERSPAN_OUTER_LEN], &ERSPAN_HDR[..]);
        assert_eq!(&d[ERSPAN_OUTER_LEN..], &inner()[..]);
        assert_eq!(checksum::data(&d[14..34]), 0xffff);
    }

    #[rustfmt::skip]
    static ERSPAN6_HDR: [u8; MAX_OUTER_LEN] = [
        // Ethernet: next hop, uplink, IPv6
        0x02, 0, 0, 0, 0, 0x02,  0x02, 0, 0, 0, 0, 0x01,  0x86, 0xdd,
        // IPv6: version 6, TC 0, label 0; payload 16+60=76, next header GRE, hop limit 64
        0x60, 0x00, 0x00, 0x00,  0x00, 0x4c, 0x2f, 0x40,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50,
        // GRE: S flag, ERSPAN, sequence number 3
        0x10, 0x00, 0x88, 0xbe,  0x00, 0x00, 0x00, 0x03,
        // ERSPAN: ver 1, session id 9; index 9
        0x10, 0x00, 0x00, 0x09,  0x00, 0x00, 0x00, 0x09,
    ];

    #[test]
    fn test_emit_erspan_ipv6() {
        let c = GreSinkConfig {
            src_ip: "2001:db8::1".parse().unwrap(),
            dst_ip: "2001:db8::50".parse().unwrap(),
            ..cfg(MirrorKind::Erspan, 9)
        };
        let sink = GreSink::new(&c).unwrap();
        assert_eq!(sink.outer_len(), MAX_OUTER_LEN);
        let mut b = VecBuf::new(&inner(), 128, 0);
        gre_encap(&mut b, &sink, 3, &ChecksumCaps::software()).unwrap();
        assert_eq!(&b.data()[..MAX_OUTER_LEN], &ERSPAN6_HDR[..]);
        assert_eq!(&b.data()[MAX_OUTER_LEN..], &inner()[..]);
        let c = GreSinkConfig { dst_ip: "192.0.2.50".parse().unwrap(), ..c };
        assert_eq!(GreSink::new(&c), Err(GreConfigError::MixedFamilies));
    }

    #[test]
    fn test_index_limits() {
        assert!(GreSink::new(&cfg(MirrorKind::Erspan, 1024)).is_err(), "10-bit session id");
        assert!(GreSink::new(&cfg(MirrorKind::Erspan, 1023)).is_ok());
        assert!(GreSink::new(&cfg(MirrorKind::Gre, u32::MAX)).is_ok());
        assert!(MirrorKind::Gre.check_index(-1).is_err());
        assert!(MirrorKind::Gre.check_index(1 << 32).is_err());
        assert_eq!(MirrorKind::Erspan.check_index(9), Ok(9));
        assert_eq!(
            MirrorKind::Erspan.check_index(2000).unwrap_err().to_string(),
            "erspan index 2000 out of range 0..=1023"
        );
    }

    #[test]
    fn test_errors_leave_packet_unchanged() {
        let sink = GreSink::new(&cfg(MirrorKind::Gre, 1)).unwrap();
        let mut b = VecBuf::new(&inner(), 10, 0);
        assert_eq!(gre_encap(&mut b, &sink, 0, &ChecksumCaps::software()), Err(DropReason::NoHeadroom));
        assert_eq!(b.data(), &inner()[..]);
        let mut b = VecBuf::new(&[0u8; 10], 128, 0);
        assert_eq!(gre_encap(&mut b, &sink, 0, &ChecksumCaps::software()), Err(DropReason::EthTruncated));
    }
}
