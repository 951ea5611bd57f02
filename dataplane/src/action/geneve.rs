//! Geneve encapsulation and decapsulation as an OVN chassis does it
//! (RFC 8926; ovn-architecture(7) "Tunnel Encapsulations").
//!
//! Encap prepends, into the headroom, a precomputed template of
//!
//! ```text
//! | Ethernet 14 | IPv4 20 / IPv6 40 | UDP 8 | Geneve 8 | OVN option 8 | inner frame |
//! ```
//!
//! and patches the per-packet fields: lengths, IPv4 header checksum
//! (incrementally from a precomputed sum), UDP source port (from the inner
//! flow hash, for ECMP/RSS entropy, RFC 8926 §3.3), IPv6 flow label (same
//! hash, RFC 6438), the OVN option's port keys, and over IPv6 the UDP
//! checksum. Outer IPv4: DF set, ID 0, TOS 0. Outer UDP checksum: 0 over
//! IPv4 (RFC 8926 §3.3 allows it), computed over IPv6 (RFC 8200 §8.1).
//!
//! Decap checks the Geneve header and strips everything in front of the
//! inner Ethernet frame (outer Ethernet, VLAN tags, IP, UDP, Geneve).
//! What it enforces (each failure has its own [`DropReason`]):
//!
//! - version 0; Opt Len within the UDP payload; O (OAM) clear, since
//!   control messages must not be forwarded (§3.4) and Petrel has none;
//!   protocol type 0x6558 (Ethernet);
//! - every option TLV fits; OVN's option (class 0x0102, type 0x80) is
//!   present exactly once with Length 1; any other option with the critical
//!   bit set is unknown to us, so the packet is dropped (§3.5); non-critical
//!   unknown options are ignored;
//! - the C bit is *not* checked against the options: all options are always
//!   parsed, so C adds nothing (a receiver "MUST parse" when C is set, and
//!   may when it is clear), and OVS does not check it either;
//! - at least 14 bytes of inner frame.
//!
//! Outer checksums are not verified by [`geneve_decap`]; call
//! [`verify_outer_checksums`] first when the NIC has not (OVS verifies them).
//! A zero UDP checksum is accepted over both IP families, as OVS does.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::buf::PacketBuf;
use crate::drop::DropReason;
use crate::flow::{FlowKey, Layout};
use crate::wire::checksum::{self, ChecksumCaps};
use crate::wire::ethernet::{self, EtherType};
use crate::wire::geneve::{self, OVN_OPT_CLASS, OVN_OPT_LEN, OVN_OPT_LEN_WORDS, OVN_OPT_TYPE};
use crate::wire::{ip_proto, ipv4, ipv4_mapped, ipv6, udp};
use crate::wire::{EthernetFrame, GenevePacket, Ipv4Packet, Ipv6Packet, UdpPacket};

/// Length of the Geneve header Petrel emits (base header + OVN option).
const GENEVE_LEN: usize = geneve::HEADER_LEN + OVN_OPT_LEN;
/// Outer headers over IPv4: Ethernet + IPv4 + UDP + Geneve.
pub const OUTER_LEN_V4: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + GENEVE_LEN;
/// Outer headers over IPv6: Ethernet + IPv6 + UDP + Geneve.
pub const OUTER_LEN_V6: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + udp::HEADER_LEN + GENEVE_LEN;
/// First port of the dynamic range the UDP source port is taken from
/// (RFC 6335 §6; RFC 8926 §3.3 recommends it).
pub const SRC_PORT_MIN: u16 = 49152;

/// Where a tunnel goes: the outer headers of every packet sent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeneveTunnelConfig {
    /// Outer source MAC (our uplink).
    pub src_mac: [u8; 6],
    /// Outer destination MAC (the next hop towards `dst_ip`).
    pub dst_mac: [u8; 6],
    /// Our tunnel endpoint IP (the chassis `Encap` IP).
    pub src_ip: IpAddr,
    /// The remote chassis' tunnel IP; same family as `src_ip`.
    pub dst_ip: IpAddr,
    /// VNI: OVN's datapath tunnel key (24 bits).
    pub vni: u32,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Outer UDP destination port, [`geneve::UDP_PORT`] (6081) normally.
    pub dst_port: u16,
}

/// Why a [`GeneveTunnelConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum GeneveConfigError {
    /// VNI {0:#x} does not fit in 24 bits
    VniOutOfRange(u32),
    /// tunnel source and destination IPs are of different families
    MixedFamilies,
    /// tunnel TTL must not be 0
    ZeroTtl,
    /// tunnel UDP destination port must not be 0
    ZeroPort,
}

/// A validated tunnel with its outer headers prebuilt; build it once, off
/// the hot path, and share it (it is `Copy`-free but cheap to clone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneveTunnel {
    config: GeneveTunnelConfig,
    /// Outer headers with every per-packet field zero.
    template: [u8; OUTER_LEN_V6],
    /// `OUTER_LEN_V4` or `OUTER_LEN_V6`.
    outer_len: usize,
    /// IPv4: one's-complement sum of the template's IP header (Total
    /// Length and checksum zero). IPv6: the UDP pseudo-header sum without
    /// its length.
    partial_sum: u16,
}

impl GeneveTunnel {
    /// Validates `config` and prebuilds the outer headers.
    ///
    /// # Errors
    /// A VNI above 24 bits, mixed IP families, TTL 0 or port 0.
    pub fn new(config: GeneveTunnelConfig) -> Result<Self, GeneveConfigError> {
        if config.vni > geneve::MAX_VNI {
            return Err(GeneveConfigError::VniOutOfRange(config.vni));
        }
        if config.ttl == 0 {
            return Err(GeneveConfigError::ZeroTtl);
        }
        if config.dst_port == 0 {
            return Err(GeneveConfigError::ZeroPort);
        }
        let mut t = [0u8; OUTER_LEN_V6];
        let mut eth = EthernetFrame::new_unchecked(&mut t[..]);
        eth.set_dst_addr(config.dst_mac);
        eth.set_src_addr(config.src_mac);
        let (outer_len, partial_sum, l4) = match (config.src_ip, config.dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                eth.set_ethertype(EtherType::IPV4);
                let l3 = ethernet::HEADER_LEN;
                let mut ip = Ipv4Packet::new_unchecked(&mut t[l3..l3 + ipv4::HEADER_LEN]);
                ip.set_version(4);
                ip.set_header_len(20);
                ip.set_flags_offset(true, false, 0);
                ip.set_ttl(config.ttl);
                ip.set_protocol(ip_proto::UDP);
                ip.set_src_addr(s);
                ip.set_dst_addr(d);
                let sum = checksum::data(&t[l3..l3 + ipv4::HEADER_LEN]);
                (OUTER_LEN_V4, sum, l3 + ipv4::HEADER_LEN)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                eth.set_ethertype(EtherType::IPV6);
                let l3 = ethernet::HEADER_LEN;
                let mut ip = Ipv6Packet::new_unchecked(&mut t[l3..l3 + ipv6::HEADER_LEN]);
                ip.set_ver_tc_flow(6, 0, 0);
                ip.set_next_header(ip_proto::UDP);
                ip.set_hop_limit(config.ttl);
                ip.set_src_addr(s);
                ip.set_dst_addr(d);
                let sum = checksum::pseudo_header_v6(&s, &d, ip_proto::UDP, 0);
                (OUTER_LEN_V6, sum, l3 + ipv6::HEADER_LEN)
            }
            _ => return Err(GeneveConfigError::MixedFamilies),
        };
        UdpPacket::new_unchecked(&mut t[l4..l4 + udp::HEADER_LEN]).set_dst_port(config.dst_port);
        let g = l4 + udp::HEADER_LEN;
        let mut gh = GenevePacket::new_unchecked(&mut t[g..g + GENEVE_LEN]);
        // Opt Len is OVN_OPT_LEN = 8 bytes (2 words).
        gh.set_version_opt_len(0, 8);
        // OVN's option type has the critical bit, so C is set (§3.4), as OVS sets it.
        gh.set_flags(false, true);
        gh.set_protocol(EtherType::TEB);
        gh.set_vni(config.vni);
        let opt = gh.options_mut();
        opt[0..2].copy_from_slice(&OVN_OPT_CLASS.to_be_bytes());
        opt[2] = OVN_OPT_TYPE;
        opt[3] = OVN_OPT_LEN_WORDS;
        Ok(GeneveTunnel { config, template: t, outer_len, partial_sum })
    }

    /// The configuration this tunnel was built from.
    pub fn config(&self) -> &GeneveTunnelConfig {
        &self.config
    }

    /// Bytes prepended to each packet: [`OUTER_LEN_V4`] or [`OUTER_LEN_V6`].
    pub fn outer_len(&self) -> usize {
        self.outer_len
    }
}

/// The UDP source port for an inner flow hash: its top 14 bits mapped onto
/// 49152..=65535.
#[inline(always)]
pub fn src_port(inner_hash: u32) -> u16 {
    // inner_hash >> 18 < 2^14, so the sum stays within 16 bits.
    let top = u16::try_from(inner_hash >> 18).unwrap_or(0);
    SRC_PORT_MIN | top
}

/// Encapsulates the Ethernet frame in `buf` for `tun`, carrying OVN's
/// logical ingress and egress port keys; `inner_hash` (the inner flow key's
/// hash) picks the UDP source port and the IPv6 flow label.
///
/// With `caps.ipv4.tx` the IPv4 checksum is left 0 for the NIC; with
/// `caps.udp.tx` the IPv6 UDP checksum field gets the pseudo-header sum for
/// the NIC to complete (DPDK's convention); the port sets the mbuf flags.
///
/// # Errors
/// [`DropReason::GeneveBadPortKey`] if `ingress_key` exceeds 15 bits,
/// [`DropReason::EthTruncated`] if the inner frame is shorter than 14 bytes,
/// [`DropReason::EncapTooBig`] if the outer IP packet would exceed 65535
/// bytes, [`DropReason::NoHeadroom`] without room for the outer headers.
/// The packet is unchanged on error.
#[inline]
pub fn geneve_encap<B: PacketBuf + ?Sized>(
    buf: &mut B,
    tun: &GeneveTunnel,
    ingress_key: u16,
    egress_key: u16,
    inner_hash: u32,
    caps: &ChecksumCaps,
) -> Result<(), DropReason> {
    if ingress_key > geneve::MAX_INGRESS_KEY {
        return Err(DropReason::GeneveBadPortKey);
    }
    let inner_len = buf.len();
    if inner_len < ethernet::HEADER_LEN {
        return Err(DropReason::EthTruncated);
    }
    let outer = tun.outer_len;
    let l3 = ethernet::HEADER_LEN;
    let is_v4 = outer == OUTER_LEN_V4;
    let ip_len = if is_v4 { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
    let l4 = l3 + ip_len;
    // The IP payload (v6) or total (v4) length must fit 16 bits.
    let udp_len = udp::HEADER_LEN + GENEVE_LEN + inner_len;
    let ip_field = if is_v4 { ip_len + udp_len } else { udp_len };
    let ip_field = u16::try_from(ip_field).map_err(|_| DropReason::EncapTooBig)?;
    // udp_len <= ip_field, so it fits too.
    let udp_len16 = u16::try_from(udp_len).map_err(|_| DropReason::EncapTooBig)?;
    buf.prepend(outer).map_err(|_| DropReason::NoHeadroom)?;

    let d = buf.data_mut();
    d[..outer].copy_from_slice(&tun.template[..outer]);
    let sport = src_port(inner_hash).to_be_bytes();
    d[l4..l4 + 2].copy_from_slice(&sport);
    d[l4 + 4..l4 + 6].copy_from_slice(&udp_len16.to_be_bytes());
    let opt = l4 + udp::HEADER_LEN + geneve::HEADER_LEN + geneve::OPTION_HEADER_LEN;
    d[opt..opt + 4].copy_from_slice(&geneve::ovn_option_data(ingress_key, egress_key));

    if is_v4 {
        d[l3 + 2..l3 + 4].copy_from_slice(&ip_field.to_be_bytes());
        if !caps.ipv4.tx {
            let c = !checksum::combine(&[tun.partial_sum, ip_field]);
            d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
    } else {
        d[l3 + 4..l3 + 6].copy_from_slice(&ip_field.to_be_bytes());
        // Flow label: low 20 bits of the hash (version 6, traffic class 0).
        let vtf = 0x6000_0000 | (inner_hash & ipv6::FLOW_LABEL_MASK);
        d[l3..l3 + 4].copy_from_slice(&vtf.to_be_bytes());
        let ph = checksum::combine(&[tun.partial_sum, udp_len16]);
        let c = if caps.udp.tx {
            ph
        } else {
            // The UDP checksum field is still 0 from the template.
            match !checksum::combine(&[ph, checksum::data(&d[l4..])]) {
                0 => 0xffff,
                c => c,
            }
        };
        d[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// [`geneve_encap`] with the VNI given per packet instead of the tunnel's
/// (OVN: one tunnel per remote chassis, the VNI is the datapath key).
///
/// # Errors
/// As [`geneve_encap`], and [`DropReason::GeneveBadPortKey`] for a VNI
/// above 24 bits.
#[inline]
pub fn geneve_encap_vni<B: PacketBuf + ?Sized>(
    buf: &mut B,
    tun: &GeneveTunnel,
    vni: u32,
    ingress_key: u16,
    egress_key: u16,
    inner_hash: u32,
    caps: &ChecksumCaps,
) -> Result<(), DropReason> {
    if vni > geneve::MAX_VNI {
        return Err(DropReason::GeneveBadPortKey);
    }
    geneve_encap(buf, tun, ingress_key, egress_key, inner_hash, caps)?;
    let ip_len = if tun.outer_len == OUTER_LEN_V4 { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
    let at = ethernet::HEADER_LEN + ip_len + udp::HEADER_LEN + 4;
    let d = buf.data_mut();
    d[at..at + 3].copy_from_slice(&vni.to_be_bytes()[1..]);
    if tun.outer_len == OUTER_LEN_V6 && !caps.udp.tx {
        // The VNI is covered by the IPv6 UDP checksum: recompute it.
        let l4 = ethernet::HEADER_LEN + ip_len;
        d[l4 + 6..l4 + 8].fill(0);
        let udp_len = u16::from_be_bytes([d[l4 + 4], d[l4 + 5]]);
        let ph = checksum::combine(&[tun.partial_sum, udp_len]);
        let c = match !checksum::combine(&[ph, checksum::data(&d[l4..])]) {
            0 => 0xffff,
            c => c,
        };
        d[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// What a Geneve packet said about the inner frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeneveMeta {
    /// VNI: OVN's datapath tunnel key.
    pub vni: u32,
    /// OVN logical ingress port key (15 bits).
    pub ingress_key: u16,
    /// OVN logical egress port key.
    pub egress_key: u16,
    /// Outer source IP (the sending chassis).
    pub outer_src: IpAddr,
    /// Outer destination IP (us).
    pub outer_dst: IpAddr,
}

impl GeneveMeta {
    /// Writes the tunnel fields of a flow key extracted from the inner
    /// frame (`flow::extract` leaves them zero).
    #[inline]
    pub fn apply_to(&self, key: &mut FlowKey) {
        key.tun_vni = self.vni;
        key.tun_ingress_key = self.ingress_key;
        key.tun_egress_key = self.egress_key;
        key.tun_src = ip16(&self.outer_src);
        key.tun_dst = ip16(&self.outer_dst);
    }
}

#[inline(always)]
fn ip16(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Offsets of a Geneve packet's outer headers, re-checked against the
/// buffer so that a stale `Layout` cannot cause a panic.
struct Outer {
    l3: usize,
    l4: usize,
    geneve: usize,
    udp_end: usize,
}

#[inline(always)]
fn outer(d: &[u8], layout: &Layout) -> Result<Outer, DropReason> {
    if !layout.is_geneve() || !layout.has_l4() {
        return Err(DropReason::NotGeneve);
    }
    let (l3, l4, g) = (usize::from(layout.l3), usize::from(layout.l4), usize::from(layout.geneve));
    if l3 >= l4 || l4 + udp::HEADER_LEN > g || g > d.len() {
        return Err(DropReason::NotGeneve);
    }
    let udp_end = l4 + usize::from(be16(d, l4 + 4));
    if udp_end < g || udp_end > d.len() {
        return Err(DropReason::UdpBadLen);
    }
    Ok(Outer { l3, l4, geneve: g, udp_end })
}

/// Checks a Geneve packet's outer IPv4 header checksum (unless
/// `caps.ipv4.rx`) and its UDP checksum when non-zero (unless
/// `caps.udp.rx`), as OVS does before decapsulating.
///
/// # Errors
/// [`DropReason::NotGeneve`] for an inconsistent `layout`,
/// [`DropReason::Ipv4BadChecksum`], [`DropReason::UdpBadChecksum`].
pub fn verify_outer_checksums<B: PacketBuf + ?Sized>(
    buf: &B,
    layout: &Layout,
    caps: &ChecksumCaps,
) -> Result<(), DropReason> {
    let d = buf.data();
    let o = outer(d, layout)?;
    let (src, dst) = outer_addrs(d, o.l3, o.l4)?;
    if src.is_ipv4() && !caps.ipv4.rx && checksum::data(&d[o.l3..o.l4]) != 0xffff {
        return Err(DropReason::Ipv4BadChecksum);
    }
    if !caps.udp.rx && be16(d, o.l4 + 6) != 0 {
        let len = u32::try_from(o.udp_end - o.l4).unwrap_or(u32::MAX);
        let ph = checksum::pseudo_header(&src, &dst, ip_proto::UDP, len);
        if checksum::combine(&[ph, checksum::data(&d[o.l4..o.udp_end])]) != 0xffff {
            return Err(DropReason::UdpBadChecksum);
        }
    }
    Ok(())
}

#[inline(always)]
fn outer_addrs(d: &[u8], l3: usize, l4: usize) -> Result<(IpAddr, IpAddr), DropReason> {
    let ip = &d[l3..l4];
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= ipv4::HEADER_LEN => Ok((
            IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
            IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])),
        )),
        Some(6) if ip.len() >= ipv6::HEADER_LEN => {
            let mut s = [0u8; 16];
            let mut t = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            t.copy_from_slice(&ip[24..40]);
            Ok((IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(t))))
        }
        _ => Err(DropReason::NotGeneve),
    }
}

/// Validates the Geneve packet in `buf` (as described by `layout`, from
/// `flow::extract` on the same bytes) and strips its outer headers,
/// leaving the inner Ethernet frame; trailing bytes after the UDP datagram
/// are trimmed too.
///
/// # Errors
/// [`DropReason::NotGeneve`] if `layout` does not describe a Geneve packet
/// of this buffer; otherwise the `geneve_*` reason of the first failed check
/// (see the module docs). The packet is unchanged on error.
#[inline]
pub fn geneve_decap<B: PacketBuf + ?Sized>(buf: &mut B, layout: &Layout) -> Result<GeneveMeta, DropReason> {
    let d = buf.data();
    let o = outer(d, layout)?;
    let g = &d[o.geneve..o.udp_end];
    if g.len() < geneve::HEADER_LEN {
        return Err(DropReason::GeneveTruncated);
    }
    if g[0] >> 6 != 0 {
        return Err(DropReason::GeneveBadVersion);
    }
    let hdr_len = geneve::HEADER_LEN + usize::from(g[0] & 0x3f) * 4;
    if hdr_len > g.len() {
        return Err(DropReason::GeneveBadOptLen);
    }
    if g[1] & 0x80 != 0 {
        return Err(DropReason::GeneveOam);
    }
    if be16(g, 2) != EtherType::TEB.0 {
        return Err(DropReason::GeneveBadProtocol);
    }
    let vni = u32::from_be_bytes([0, g[4], g[5], g[6]]);

    let mut opts = &g[geneve::HEADER_LEN..hdr_len];
    let mut ovn = None;
    while !opts.is_empty() {
        let n = match opts.get(..geneve::OPTION_HEADER_LEN) {
            Some(h) => geneve::OPTION_HEADER_LEN + usize::from(h[3] & 0x1f) * 4,
            None => return Err(DropReason::GeneveBadOption),
        };
        if n > opts.len() {
            return Err(DropReason::GeneveBadOption);
        }
        let (class, kind) = (be16(opts, 0), opts[2]);
        if class == OVN_OPT_CLASS && kind == OVN_OPT_TYPE {
            if ovn.is_some() || n != OVN_OPT_LEN {
                return Err(DropReason::GeneveBadOption);
            }
            ovn = Some(geneve::parse_ovn_option_data([opts[4], opts[5], opts[6], opts[7]]));
        } else if kind & geneve::CRITICAL_TYPE != 0 {
            return Err(DropReason::GeneveCriticalOption);
        }
        opts = &opts[n..];
    }
    let (ingress_key, egress_key) = ovn.ok_or(DropReason::GeneveNoOvnOption)?;
    if g.len() - hdr_len < ethernet::HEADER_LEN {
        return Err(DropReason::GeneveInnerTruncated);
    }
    let (outer_src, outer_dst) = outer_addrs(d, o.l3, o.l4)?;

    let trailing = d.len() - o.udp_end;
    let strip = o.geneve + hdr_len;
    // Both cannot fail: udp_end <= len and strip <= udp_end - 14 were checked.
    buf.trim(trailing).map_err(|_| DropReason::GeneveTruncated)?;
    buf.adj(strip).map_err(|_| DropReason::GeneveTruncated)?;
    Ok(GeneveMeta { vni, ingress_key, egress_key, outer_src, outer_dst })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::buf::VecBuf;
    use crate::flow::{extract, testpkt};
    use crate::wire::{GeneveRepr, Ipv4Repr, UdpRepr};
    use proptest::prelude::*;

    const HASH: u32 = 0x1234_5678;

    #[rustfmt::skip]
    static INNER: [u8; 16] = [
        // inner Ethernet: dst 02:00:00:00:00:0b, src 02:00:00:00:00:0a, EtherType 0x88b5
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x88, 0xb5,
        // payload
        0xde, 0xad,
    ];

    #[rustfmt::skip]
    static ENCAP_V4: [u8; 74] = [
        // outer Ethernet: dst 02:00:00:00:00:02, src 02:00:00:00:00:01, IPv4
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: IHL 5, total 60, id 0, DF, TTL 64, UDP, checksum 0xb95d, 192.168.0.1 -> 192.168.0.2
        0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb9, 0x5d,
        0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0x02,
        // UDP: 50317 (49152 + 0x12345678 >> 18) -> 6081, length 40, checksum 0
        0xc4, 0x8d, 0x17, 0xc1, 0x00, 0x28, 0x00, 0x00,
        // Geneve: ver 0, opt len 2, C, protocol 0x6558, VNI 5
        0x02, 0x40, 0x65, 0x58, 0x00, 0x00, 0x05, 0x00,
        // OVN option: class 0x0102, type 0x80, len 1; ingress 3, egress 0x8004
        0x01, 0x02, 0x80, 0x01, 0x00, 0x03, 0x80, 0x04,
        // inner frame
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x88, 0xb5,
        0xde, 0xad,
    ];

    #[rustfmt::skip]
    static ENCAP_V6: [u8; 94] = [
        // outer Ethernet: dst 02:00:00:00:00:02, src 02:00:00:00:00:01, IPv6
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd,
        // IPv6: TC 0, flow label 0x45678 (hash), payload 40, UDP, hop limit 64, fd00::1 -> fd00::2
        0x60, 0x04, 0x56, 0x78, 0x00, 0x28, 0x11, 0x40,
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        // UDP: 50317 -> 6081, length 40, checksum 0x502f
        0xc4, 0x8d, 0x17, 0xc1, 0x00, 0x28, 0x50, 0x2f,
        // Geneve: ver 0, opt len 2, C, protocol 0x6558, VNI 5
        0x02, 0x40, 0x65, 0x58, 0x00, 0x00, 0x05, 0x00,
        // OVN option: class 0x0102, type 0x80, len 1; ingress 3, egress 0x8004
        0x01, 0x02, 0x80, 0x01, 0x00, 0x03, 0x80, 0x04,
        // inner frame
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x88, 0xb5,
        0xde, 0xad,
    ];

    fn config(v6: bool) -> GeneveTunnelConfig {
        let (src_ip, dst_ip) = if v6 {
            (
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
            )
        } else {
            (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)), IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2)))
        };
        GeneveTunnelConfig {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip,
            dst_ip,
            vni: 5,
            ttl: 64,
            dst_port: geneve::UDP_PORT,
        }
    }

    fn tunnel(v6: bool) -> GeneveTunnel {
        GeneveTunnel::new(config(v6)).unwrap()
    }

    fn encap(inner: &[u8], v6: bool, caps: &ChecksumCaps) -> VecBuf {
        let mut b = VecBuf::from_packet(inner);
        geneve_encap(&mut b, &tunnel(v6), 3, 0x8004, HASH, caps).unwrap();
        b
    }

    fn layout_of(frame: &[u8]) -> Layout {
        extract(frame, 0, &mut FlowKey::default()).unwrap()
    }

    #[test]
    fn encap_ipv4_matches_bytes() {
        let b = encap(&INNER, false, &ChecksumCaps::default());
        assert_eq!(b.data(), &ENCAP_V4);
        assert!(Ipv4Packet::new_checked(&b.data()[14..]).unwrap().verify_checksum());
        let ip = Ipv4Repr::parse(&Ipv4Packet::new_checked(&b.data()[14..]).unwrap(), &ChecksumCaps::default()).unwrap();
        assert!(ip.dont_frag && ip.ident == 0);
    }

    #[test]
    fn encap_ipv6_matches_bytes() {
        let b = encap(&INNER, true, &ChecksumCaps::default());
        assert_eq!(b.data(), &ENCAP_V6);
        let (s, d) = (config(true).src_ip, config(true).dst_ip);
        let u = UdpPacket::new_checked(&b.data()[54..]).unwrap();
        assert!(u.verify_checksum(&s, &d));
        assert!(UdpRepr::parse(&u, &s, &d, &ChecksumCaps::default()).is_ok());
        let g = GeneveRepr::parse(&GenevePacket::new_checked(u.payload()).unwrap()).unwrap();
        assert_eq!((g.vni, g.ovn.unwrap().ingress_key, g.ovn.unwrap().egress_key), (5, 3, 0x8004));
    }

    #[test]
    fn encap_with_offloads_leaves_checksums_to_the_nic() {
        let b = encap(&INNER, false, &ChecksumCaps::offload_all());
        assert_eq!(&b.data()[24..26], &[0, 0]);
        let b = encap(&INNER, true, &ChecksumCaps::offload_all());
        let (IpAddr::V6(s), IpAddr::V6(d)) = (config(true).src_ip, config(true).dst_ip) else { unreachable!() };
        let ph = checksum::pseudo_header_v6(&s, &d, ip_proto::UDP, 40);
        assert_eq!(&b.data()[60..62], &ph.to_be_bytes());
    }

    #[test]
    fn round_trip_restores_inner_bytes_and_meta() {
        for v6 in [false, true] {
            let inner = testpkt::eth_ipv4_tcp();
            let mut b = encap(&inner, v6, &ChecksumCaps::default());
            let l = layout_of(b.data());
            assert!(l.is_geneve());
            verify_outer_checksums(&b, &l, &ChecksumCaps::default()).unwrap();
            let m = geneve_decap(&mut b, &l).unwrap();
            assert_eq!(b.data(), &inner[..]);
            assert_eq!((m.vni, m.ingress_key, m.egress_key), (5, 3, 0x8004));
            assert_eq!((m.outer_src, m.outer_dst), (config(v6).src_ip, config(v6).dst_ip));
            let mut k = FlowKey::default();
            extract(b.data(), 1, &mut k).unwrap();
            m.apply_to(&mut k);
            assert_eq!((k.tun_vni, k.tun_ingress_key, k.tun_egress_key), (5, 3, 0x8004));
            assert_eq!(k.tun_src, ip16(&config(v6).src_ip));
        }
    }

    #[test]
    fn decap_strips_outer_vlan_and_trailing_padding() {
        let mut f = encap(&INNER, false, &ChecksumCaps::default()).data().to_vec();
        f.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
        f.extend([0u8; 6]);
        let l = layout_of(&f);
        let mut b = VecBuf::from_packet(&f);
        geneve_decap(&mut b, &l).unwrap();
        assert_eq!(b.data(), &INNER);
    }

    #[test]
    fn source_port_range() {
        assert_eq!(src_port(0), 49152);
        assert_eq!(src_port(u32::MAX), 65535);
        assert_eq!(src_port(HASH), 50317);
    }

    #[test]
    fn config_errors() {
        let mut c = config(false);
        c.vni = 1 << 24;
        assert_eq!(GeneveTunnel::new(c), Err(GeneveConfigError::VniOutOfRange(1 << 24)));
        let mut c = config(false);
        c.dst_ip = config(true).dst_ip;
        assert_eq!(GeneveTunnel::new(c), Err(GeneveConfigError::MixedFamilies));
        let mut c = config(false);
        c.ttl = 0;
        assert_eq!(GeneveTunnel::new(c), Err(GeneveConfigError::ZeroTtl));
        let mut c = config(false);
        c.dst_port = 0;
        assert_eq!(GeneveTunnel::new(c), Err(GeneveConfigError::ZeroPort));
        assert_eq!(tunnel(false).config(), &config(false));
        assert_eq!((tunnel(false).outer_len(), tunnel(true).outer_len()), (58, 78));
    }

    #[test]
    fn encap_errors_leave_the_packet_unchanged() {
        let t = tunnel(false);
        let caps = ChecksumCaps::default();
        let mut b = VecBuf::from_packet(&INNER);
        assert_eq!(geneve_encap(&mut b, &t, 0x8000, 1, 0, &caps), Err(DropReason::GeneveBadPortKey));
        assert!(geneve_encap(&mut b, &t, 0x7fff, 0xffff, 0, &caps).is_ok());
        let mut b = VecBuf::new(&INNER, OUTER_LEN_V4 - 1, 0);
        assert_eq!(geneve_encap(&mut b, &t, 1, 1, 0, &caps), Err(DropReason::NoHeadroom));
        assert_eq!(b.data(), &INNER);
        let mut b = VecBuf::from_packet(&INNER[..13]);
        assert_eq!(geneve_encap(&mut b, &t, 1, 1, 0, &caps), Err(DropReason::EthTruncated));
        let big = vec![0u8; 65535 - 20 - 8 - 16 + 1];
        let mut b = VecBuf::from_packet(&big);
        assert_eq!(geneve_encap(&mut b, &t, 1, 1, 0, &caps), Err(DropReason::EncapTooBig));
        let mut b = VecBuf::from_packet(&big[1..]);
        assert!(geneve_encap(&mut b, &t, 1, 1, 0, &caps).is_ok());
        assert_eq!(&b.data()[16..18], &[0xff, 0xff]);
    }

    /// ENCAP_V4 with `f` applied to its Geneve header (offset 42) and the
    /// lengths fixed up for `extra` bytes of added options.
    fn mutated(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = ENCAP_V4.to_vec();
        f(&mut v);
        let udp_len = u16::try_from(v.len() - 34).unwrap();
        v[38..40].copy_from_slice(&udp_len.to_be_bytes());
        v[16..18].copy_from_slice(&(udp_len + 20).to_be_bytes());
        v
    }

    fn decap_err(frame: &[u8]) -> DropReason {
        let l = layout_of(frame);
        let mut b = VecBuf::from_packet(frame);
        let e = geneve_decap(&mut b, &l).unwrap_err();
        assert_eq!(b.data(), frame, "unchanged on error");
        e
    }

    #[test]
    fn decap_errors() {
        let g = 42;
        assert_eq!(decap_err(&mutated(|v| v.truncate(g + 7))), DropReason::GeneveTruncated);
        assert_eq!(decap_err(&mutated(|v| v[g] |= 0x40)), DropReason::GeneveBadVersion);
        assert_eq!(decap_err(&mutated(|v| v[g] = 0x3f)), DropReason::GeneveBadOptLen);
        assert_eq!(decap_err(&mutated(|v| v[g + 1] |= 0x80)), DropReason::GeneveOam);
        assert_eq!(decap_err(&mutated(|v| v[g + 2] = 0x08)), DropReason::GeneveBadProtocol);
        // an option overrunning Opt Len
        assert_eq!(decap_err(&mutated(|v| v[g + 11] = 2)), DropReason::GeneveBadOption);
        // OVN option with the wrong length: add a word to the option and to Opt Len
        let bad_len = mutated(|v| {
            v[g] = 3;
            v[g + 11] = 2;
            v.splice(g + 16..g + 16, [0; 4]);
        });
        assert_eq!(decap_err(&bad_len), DropReason::GeneveBadOption);
        // OVN option twice
        let twice = mutated(|v| {
            v[g] = 4;
            let opt = v[g + 8..g + 16].to_vec();
            v.splice(g + 16..g + 16, opt);
        });
        assert_eq!(decap_err(&twice), DropReason::GeneveBadOption);
        // an unknown critical option next to OVN's
        let crit = mutated(|v| {
            v[g] = 3;
            v.splice(g + 16..g + 16, [0xff, 0xff, 0x81, 0]);
        });
        assert_eq!(decap_err(&crit), DropReason::GeneveCriticalOption);
        // the same option non-critical is ignored
        let non_crit = mutated(|v| {
            v[g] = 3;
            v.splice(g + 16..g + 16, [0xff, 0xff, 0x01, 0]);
        });
        let mut b = VecBuf::from_packet(&non_crit);
        assert!(geneve_decap(&mut b, &layout_of(&non_crit)).is_ok());
        assert_eq!(b.data(), &INNER);
        // no OVN option (and C clear)
        let none = mutated(|v| {
            v[g] = 0;
            v[g + 1] = 0;
            v.drain(g + 8..g + 16);
        });
        assert_eq!(decap_err(&none), DropReason::GeneveNoOvnOption);
        assert_eq!(decap_err(&mutated(|v| v.truncate(v.len() - 3))), DropReason::GeneveInnerTruncated);
        // not Geneve at all
        let plain = testpkt::eth_ipv4_tcp();
        assert_eq!(decap_err(&plain), DropReason::NotGeneve);
    }

    #[test]
    fn decap_rejects_a_stale_layout() {
        let mut l = layout_of(&ENCAP_V4);
        l.geneve = 200;
        let mut b = VecBuf::from_packet(&ENCAP_V4);
        assert_eq!(geneve_decap(&mut b, &l), Err(DropReason::NotGeneve));
        let mut b = VecBuf::from_packet(&ENCAP_V4[..40]);
        assert_eq!(geneve_decap(&mut b, &layout_of(&ENCAP_V4)), Err(DropReason::NotGeneve));
    }

    #[test]
    fn outer_checksum_errors() {
        let l = layout_of(&ENCAP_V4);
        let mut f = ENCAP_V4;
        f[20] ^= 1;
        let b = VecBuf::from_packet(&f);
        assert_eq!(verify_outer_checksums(&b, &l, &ChecksumCaps::default()), Err(DropReason::Ipv4BadChecksum));
        assert_eq!(verify_outer_checksums(&b, &l, &ChecksumCaps::offload_all()), Ok(()));
        let l6 = layout_of(&ENCAP_V6);
        let mut f = ENCAP_V6;
        f[93] ^= 1;
        let b = VecBuf::from_packet(&f);
        assert_eq!(verify_outer_checksums(&b, &l6, &ChecksumCaps::default()), Err(DropReason::UdpBadChecksum));
    }

    proptest! {
        #[test]
        fn round_trip_any_inner(inner in proptest::collection::vec(any::<u8>(), 14..300), v6: bool, ik in 0u16..0x8000, ek: u16, h: u32) {
            let mut b = VecBuf::from_packet(&inner);
            geneve_encap(&mut b, &tunnel(v6), ik, ek, h, &ChecksumCaps::default()).unwrap();
            let l = layout_of(b.data());
            prop_assert!(verify_outer_checksums(&b, &l, &ChecksumCaps::default()).is_ok());
            let m = geneve_decap(&mut b, &l).unwrap();
            prop_assert_eq!(b.data(), &inner[..]);
            prop_assert_eq!((m.ingress_key, m.egress_key), (ik, ek));
        }

        #[test]
        fn decap_of_mutated_packets_never_panics(
            muts in proptest::collection::vec((42usize..74, any::<u8>()), 0..6),
            cut in 0usize..75,
        ) {
            let mut f = ENCAP_V4.to_vec();
            for (i, v) in muts {
                f[i] = v;
            }
            f.truncate(cut.max(43));
            let mut key = FlowKey::default();
            if let Ok(l) = extract(&f, 0, &mut key) {
                let mut b = VecBuf::from_packet(&f);
                let _ = verify_outer_checksums(&b, &l, &ChecksumCaps::default());
                if geneve_decap(&mut b, &l).is_err() {
                    prop_assert_eq!(b.data(), &f[..]);
                } else {
                    prop_assert!(b.len() >= 14);
                }
            }
        }
    }
}
