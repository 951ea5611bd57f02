//! One-pass flow-key extraction (OVS `miniflow_extract`).
//!
//! [`extract`] reads a frame once, outermost header first, fills every
//! [`FlowKey`] field it understands and returns where each layer starts.
//! It never allocates and never panics, whatever the bytes (proptest below
//! feeds it arbitrary and mutated frames).
//!
//! What is parsed: Ethernet II (and 802.3 LLC/SNAP, as OVS), up to two VLAN
//! tags (TPID 0x8100 or 0x88a8 in either position, as OVS), ARP/RARP, IPv4
//! (options skipped), IPv6 with up to [`MAX_IPV6_EXT_HEADERS`] extension
//! headers (Hop-by-Hop, Routing, Fragment, Destination Options, AH), TCP,
//! UDP, SCTP, ICMPv4, ICMPv6 with the Neighbor Discovery fields. Anything
//! else is fine: the key is filled up to where it is understood.
//!
//! Decisions, each one a deliberate match with, or deviation from, OVS:
//!
//! - A malformed header the fast path would have to interpret is dropped
//!   with its own [`DropReason`]; OVS instead keeps the fields parsed so far
//!   and forwards. Dropping is what the design asks for (refuse loudly) and
//!   such packets would be discarded by their receiver anyway.
//! - Checksums are *not* verified here (OVS does not either): that is the
//!   receiver's job, or the NIC's. `wire::Ipv4Packet::verify_checksum` is
//!   the helper when it is needed (Geneve decap verifies the outer headers).
//! - IPv4/IPv6 lengths bound the L4 parse; bytes after them (Ethernet
//!   minimum-size padding) are ignored.
//! - Fragments: `nw_frag` gets `FLOW_NW_FRAG_ANY`; a later fragment (offset
//!   ≠ 0) also gets `FLOW_NW_FRAG_LATER` and has no L4 parsed (`l4` absent);
//!   for IPv6 its `nw_proto` is 44 (Fragment), as OVS. A first fragment's
//!   UDP Length is not checked against the fragment (it covers the whole
//!   datagram), and a first fragment is never reported as Geneve. An IPv6
//!   Fragment header with offset and M both zero (atomic fragment) is not a
//!   fragment (OVS).
//! - ND: for NS and NA (code 0) the target address is read (a body shorter
//!   than 24 bytes is `nd_malformed`); for NS, NA, RS and RA the options
//!   are walked: a zero-length or overrunning option, or a second source
//!   (or target) link-layer address option, is `nd_malformed` (OVS zeroes
//!   the ND fields instead). Trailing bytes shorter than an option (< 8)
//!   are ignored, as OVS.
//! - UDP to port 6081 is reported in [`Layout::geneve`]; the Geneve header
//!   and the inner frame are checked by `action::geneve_decap`, not here.

use crate::drop::DropReason;
use crate::wire::ethernet::EtherType;
use crate::wire::{geneve, icmpv6, ip_proto, ipv4, ipv4_mapped, ipv6};

use super::key::{FlowKey, FLOW_NW_FRAG_ANY, FLOW_NW_FRAG_LATER, VLAN_CFI};

/// How many IPv6 extension headers are walked before giving up with
/// `ipv6_too_many_ext` (each costs a dependent load; real traffic has 0–2).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Where the layers of a frame start, as byte offsets from the start of the
/// frame; [`Layout::ABSENT`] when the layer is not there.
///
/// - `l3`: after the Ethernet header, VLAN tags and LLC/SNAP: where the
///   payload of `dl_type` starts (always present after a successful extract).
/// - `l4`: the transport header (after IPv4 options and IPv6 extension
///   headers); absent for non-IP and for later fragments.
/// - `l7`: the transport payload (after TCP options, the 8-byte UDP, ICMP
///   and ICMPv6 headers, the 12-byte SCTP header); absent for other
///   protocols.
/// - `geneve`: the Geneve header of a UDP datagram to port 6081 (= `l7`).
///
/// All offsets fit in `u16`: the deepest is bounded by 14 + 8 + 8 + 40 +
/// 8 × 2048 + 60.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Offset of the L3 header.
    pub l3: u16,
    /// Offset of the L4 header, or [`Layout::ABSENT`].
    pub l4: u16,
    /// Offset of the L4 payload, or [`Layout::ABSENT`].
    pub l7: u16,
    /// Offset of the Geneve header, or [`Layout::ABSENT`].
    pub geneve: u16,
}

impl Layout {
    /// Marks a layer the frame does not have.
    pub const ABSENT: u16 = u16::MAX;

    /// A layout with every layer absent.
    pub const fn empty() -> Self {
        Layout { l3: Self::ABSENT, l4: Self::ABSENT, l7: Self::ABSENT, geneve: Self::ABSENT }
    }

    /// Whether an L4 header was parsed.
    #[inline]
    pub const fn has_l4(&self) -> bool {
        self.l4 != Self::ABSENT
    }

    /// Whether the frame is a Geneve datagram (UDP to port 6081).
    #[inline]
    pub const fn is_geneve(&self) -> bool {
        self.geneve != Self::ABSENT
    }
}

impl Default for Layout {
    fn default() -> Self {
        Self::empty()
    }
}

/// An offset known to be below 65535 (see [`Layout`]) as `u16`.
#[inline(always)]
fn off16(x: usize) -> u16 {
    u16::try_from(x).unwrap_or(Layout::ABSENT)
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn copy<const N: usize>(dst: &mut [u8; N], src: &[u8]) {
    dst.copy_from_slice(&src[..N]);
}

/// Fills `key` from `frame` (received on `in_port`) and returns where its
/// layers start.
///
/// The key is reset first, so absent fields are zero; tunnel fields stay
/// zero (set them after decapsulation). On error the key holds what was
/// parsed before the bad header.
///
/// # Errors
/// The [`DropReason`] of the first malformed header (see the module docs).
#[inline]
pub fn extract(frame: &[u8], in_port: u32, key: &mut FlowKey) -> Result<Layout, DropReason> {
    *key = FlowKey::default();
    key.in_port = in_port;
    let mut layout = Layout::empty();

    if frame.len() < 14 {
        return Err(DropReason::EthTruncated);
    }
    copy(&mut key.dl_dst, &frame[0..6]);
    copy(&mut key.dl_src, &frame[6..12]);
    let mut ethertype = EtherType(be16(frame, 12));
    let mut off = 14;

    if ethertype.is_vlan() {
        let tag = frame.get(off..off + 4).ok_or(DropReason::VlanTruncated)?;
        key.vlan_tpid = ethertype.0;
        key.vlan_tci[0] = be16(tag, 0) | VLAN_CFI;
        ethertype = EtherType(be16(tag, 2));
        off += 4;
        if ethertype.is_vlan() {
            let tag = frame.get(off..off + 4).ok_or(DropReason::VlanTruncated)?;
            key.vlan_tci[1] = be16(tag, 0) | VLAN_CFI;
            ethertype = EtherType(be16(tag, 2));
            off += 4;
            if ethertype.is_vlan() {
                return Err(DropReason::TooManyVlanTags);
            }
        }
    }

    if ethertype.0 < EtherType::MIN {
        // 802.3 length: only LLC/SNAP with the Ethernet OUI carries an
        // EtherType (OVS `parse_ethertype`).
        ethertype = match frame.get(off..off + 8) {
            Some([0xaa, 0xaa, 0x03, 0, 0, 0, t0, t1]) if u16::from_be_bytes([*t0, *t1]) >= EtherType::MIN => {
                off += 8;
                EtherType(u16::from_be_bytes([*t0, *t1]))
            }
            Some([0xaa, 0xaa, 0x03, 0, 0, 0, _, _]) => {
                off += 8;
                EtherType::NONE
            }
            _ => EtherType::NONE,
        };
    }
    key.dl_type = ethertype.0;
    layout.l3 = off16(off);

    match ethertype {
        EtherType::IPV4 => extract_ipv4(frame, off, key, &mut layout)?,
        EtherType::IPV6 => extract_ipv6(frame, off, key, &mut layout)?,
        EtherType::ARP | EtherType::RARP => extract_arp(&frame[off..], key)?,
        _ => {}
    }
    Ok(layout)
}

#[inline(always)]
fn extract_arp(b: &[u8], key: &mut FlowKey) -> Result<(), DropReason> {
    match b.get(..28) {
        // htype 1, ptype 0x0800, hlen 6, plen 4 (RFC 826 for Ethernet/IPv4)
        Some(a) if u32::from_be_bytes([a[0], a[1], a[2], a[3]]) == 0x0001_0800 && be16(a, 4) == 0x0604 => {
            key.arp_op = be16(a, 6);
            copy(&mut key.arp_sha, &a[8..14]);
            key.nw_src = ipv4_mapped([a[14], a[15], a[16], a[17]]);
            copy(&mut key.arp_tha, &a[18..24]);
            key.nw_dst = ipv4_mapped([a[24], a[25], a[26], a[27]]);
            Ok(())
        }
        _ => Err(DropReason::ArpMalformed),
    }
}

#[inline(always)]
fn extract_ipv4(frame: &[u8], off: usize, key: &mut FlowKey, layout: &mut Layout) -> Result<(), DropReason> {
    let b = &frame[off..];
    if b.len() < ipv4::HEADER_LEN {
        return Err(DropReason::Ipv4Truncated);
    }
    let ver_ihl = b[0];
    if ver_ihl >> 4 != 4 {
        return Err(DropReason::Ipv4BadVersion);
    }
    let hl = usize::from(ver_ihl & 0x0f) * 4;
    if hl < ipv4::HEADER_LEN {
        return Err(DropReason::Ipv4BadIhl);
    }
    if b.len() < hl {
        return Err(DropReason::Ipv4Truncated);
    }
    let tl = usize::from(be16(b, 2));
    if tl < hl || tl > b.len() {
        return Err(DropReason::Ipv4BadTotalLen);
    }
    key.nw_tos = b[1];
    key.nw_ttl = b[8];
    key.nw_proto = b[9];
    key.nw_src = ipv4_mapped([b[12], b[13], b[14], b[15]]);
    key.nw_dst = ipv4_mapped([b[16], b[17], b[18], b[19]]);
    let flags_offset = be16(b, 6);
    let mut frag = false;
    if flags_offset & (ipv4::MF | ipv4::OFFSET_MASK) != 0 {
        frag = true;
        key.nw_frag = FLOW_NW_FRAG_ANY;
        if flags_offset & ipv4::OFFSET_MASK != 0 {
            key.nw_frag |= FLOW_NW_FRAG_LATER;
            return Ok(());
        }
    }
    extract_l4(frame, off + hl, off + tl, key.nw_proto, false, frag, key, layout)
}

#[inline(always)]
fn extract_ipv6(frame: &[u8], off: usize, key: &mut FlowKey, layout: &mut Layout) -> Result<(), DropReason> {
    let b = &frame[off..];
    if b.len() < ipv6::HEADER_LEN {
        return Err(DropReason::Ipv6Truncated);
    }
    if b[0] >> 4 != 6 {
        return Err(DropReason::Ipv6BadVersion);
    }
    let plen = usize::from(be16(b, 4));
    if plen > b.len() - ipv6::HEADER_LEN {
        return Err(DropReason::Ipv6BadPayloadLen);
    }
    let end = off + ipv6::HEADER_LEN + plen;
    let vtf = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    key.ipv6_label = vtf & ipv6::FLOW_LABEL_MASK;
    key.nw_tos = (b[0] << 4) | (b[1] >> 4);
    key.nw_ttl = b[7];
    copy(&mut key.nw_src, &b[8..24]);
    copy(&mut key.nw_dst, &b[24..40]);

    let mut nh = b[6];
    let mut p = off + ipv6::HEADER_LEN;
    let mut n = 0;
    let mut frag = false;
    while ipv6::is_ext_header(nh) {
        if n == MAX_IPV6_EXT_HEADERS {
            return Err(DropReason::Ipv6TooManyExt);
        }
        n += 1;
        let rem = &frame[p..end];
        if nh == ip_proto::IPV6_FRAG {
            let h = rem.get(..ipv6::FRAG_HEADER_LEN).ok_or(DropReason::Ipv6ExtTruncated)?;
            nh = h[0];
            p += ipv6::FRAG_HEADER_LEN;
            let offlg = be16(h, 2);
            // OVS compares the whole word, reserved bits included.
            if offlg != 0 {
                frag = true;
                key.nw_frag = FLOW_NW_FRAG_ANY;
                if offlg & 0xfff8 != 0 {
                    key.nw_frag |= FLOW_NW_FRAG_LATER;
                    key.nw_proto = ip_proto::IPV6_FRAG;
                    return Ok(());
                }
            }
        } else {
            let len_byte = *rem.get(1).ok_or(DropReason::Ipv6ExtTruncated)?;
            let hlen = ipv6::ext_header_len(nh, len_byte);
            if rem.len() < hlen {
                return Err(DropReason::Ipv6ExtTruncated);
            }
            nh = rem[0];
            p += hlen;
        }
    }
    key.nw_proto = nh;
    extract_l4(frame, p, end, nh, true, frag, key, layout)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)] // one call site per IP version; inlined
fn extract_l4(
    frame: &[u8],
    l4: usize,
    end: usize,
    proto: u8,
    is_v6: bool,
    frag: bool,
    key: &mut FlowKey,
    layout: &mut Layout,
) -> Result<(), DropReason> {
    layout.l4 = off16(l4);
    let b = &frame[l4..end];
    match proto {
        ip_proto::TCP => {
            if b.len() < 20 {
                return Err(DropReason::TcpTruncated);
            }
            let doff = usize::from(b[12] >> 4) * 4;
            if doff < 20 || doff > b.len() {
                return Err(DropReason::TcpBadDataOffset);
            }
            key.tp_src = be16(b, 0);
            key.tp_dst = be16(b, 2);
            key.tcp_flags = be16(b, 12) & 0x0fff;
            layout.l7 = off16(l4 + doff);
        }
        ip_proto::UDP => {
            if b.len() < 8 {
                return Err(DropReason::UdpTruncated);
            }
            key.tp_src = be16(b, 0);
            key.tp_dst = be16(b, 2);
            layout.l7 = off16(l4 + 8);
            if !frag {
                let ulen = usize::from(be16(b, 4));
                if ulen < 8 || ulen > b.len() {
                    return Err(DropReason::UdpBadLen);
                }
                if key.tp_dst == geneve::UDP_PORT {
                    layout.geneve = layout.l7;
                }
            }
        }
        ip_proto::SCTP => {
            if b.len() < 12 {
                return Err(DropReason::SctpTruncated);
            }
            key.tp_src = be16(b, 0);
            key.tp_dst = be16(b, 2);
            layout.l7 = off16(l4 + 12);
        }
        ip_proto::ICMP if !is_v6 => {
            if b.len() < 8 {
                return Err(DropReason::IcmpTruncated);
            }
            key.tp_src = u16::from(b[0]);
            key.tp_dst = u16::from(b[1]);
            layout.l7 = off16(l4 + 8);
        }
        ip_proto::ICMPV6 if is_v6 => {
            if b.len() < 8 {
                return Err(DropReason::IcmpTruncated);
            }
            key.tp_src = u16::from(b[0]);
            key.tp_dst = u16::from(b[1]);
            layout.l7 = off16(l4 + 8);
            if b[1] == 0 {
                extract_nd(b, key)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// ND fields of an ICMPv6 message with code 0 (see the module docs).
#[inline(always)]
fn extract_nd(b: &[u8], key: &mut FlowKey) -> Result<(), DropReason> {
    let msg_type = b[0];
    let opts_at = match msg_type {
        icmpv6::NEIGHBOR_SOLICIT | icmpv6::NEIGHBOR_ADVERT => {
            let t = b.get(8..24).ok_or(DropReason::NdMalformed)?;
            copy(&mut key.nd_target, t);
            24
        }
        icmpv6::ROUTER_SOLICIT => 8,
        icmpv6::ROUTER_ADVERT => 16,
        _ => return Ok(()),
    };
    let mut opts = b.get(opts_at..).ok_or(DropReason::NdMalformed)?;
    let (mut sll, mut tll) = (false, false);
    while opts.len() >= 8 {
        let n = usize::from(opts[1]) * 8;
        if n == 0 || n > opts.len() {
            return Err(DropReason::NdMalformed);
        }
        if n == 8 {
            match opts[0] {
                icmpv6::OPT_SOURCE_LL_ADDR => {
                    if sll {
                        return Err(DropReason::NdMalformed);
                    }
                    sll = true;
                    copy(&mut key.arp_sha, &opts[2..8]);
                }
                icmpv6::OPT_TARGET_LL_ADDR => {
                    if tll {
                        return Err(DropReason::NdMalformed);
                    }
                    tll = true;
                    copy(&mut key.arp_tha, &opts[2..8]);
                }
                _ => {}
            }
        }
        opts = &opts[n..];
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::flow::testpkt::*;
    use crate::wire::{icmpv6 as nd, tcp};
    use proptest::prelude::*;
    use rstest::rstest;

    const ET_IPV4: u16 = 0x0800;
    const ET_IPV6: u16 = 0x86dd;
    const ET_ARP: u16 = 0x0806;

    fn run(frame: &[u8]) -> (Result<Layout, DropReason>, FlowKey) {
        // garbage in the key must not survive
        let mut key = FlowKey { tun_vni: 99, nd_target: [0xff; 16], ..FlowKey::default() };
        let r = extract(frame, 7, &mut key);
        (r, key)
    }

    fn ok(frame: &[u8]) -> (Layout, FlowKey) {
        let (r, k) = run(frame);
        (r.unwrap(), k)
    }

    fn mapped(a: core::net::Ipv4Addr) -> [u8; 16] {
        ipv4_mapped(a.octets())
    }

    #[rustfmt::skip]
    static ETH_IPV4_TCP: [u8; 60] = [
        // Ethernet: dst 02:00:00:00:00:0b, src 02:00:00:00:00:0a, IPv4
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x08, 0x00,
        // IPv4: IHL 5, TOS 0x10, total 40, id 7, DF, TTL 64, TCP, checksum, 10.0.0.1 -> 10.0.0.2
        0x45, 0x10, 0x00, 0x28, 0x00, 0x07, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        // TCP: 1234 -> 80, seq 1, ack 2, data offset 5, SYN|ACK, window 1000
        0x04, 0xd2, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02,
        0x50, 0x12, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00,
        // Ethernet padding to 60 bytes (beyond IPv4 Total Length)
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn eth_ipv4_tcp_fills_every_field() {
        let (l, k) = ok(&ETH_IPV4_TCP);
        let mut want = FlowKey { in_port: 7, dl_dst: MAC_B, dl_src: MAC_A, dl_type: ET_IPV4, ..FlowKey::default() };
        want.nw_src = mapped(IP4_A);
        want.nw_dst = mapped(IP4_B);
        want.nw_proto = 6;
        want.nw_tos = 0x10;
        want.nw_ttl = 64;
        want.tp_src = 1234;
        want.tp_dst = 80;
        want.tcp_flags = tcp::SYN | tcp::ACK;
        assert_eq!(k, want);
        assert_eq!(l, Layout { l3: 14, l4: 34, l7: 54, geneve: Layout::ABSENT });
    }

    #[test]
    fn tcp_options_move_l7() {
        let mut seg = tcp(1, 2, tcp::ACK, b"xy");
        seg.splice(20..20, [1, 1, 1, 1]);
        seg[12] = 0x60;
        let (l, k) = ok(&eth(ET_IPV4, &ipv4(6, &seg)));
        assert_eq!((l.l4, l.l7), (34, 58));
        assert_eq!(k.tcp_flags, tcp::ACK);
    }

    #[test]
    fn ipv4_options_move_l4() {
        let mut ip = ipv4(17, &udp(1, 2, b""));
        ip.splice(20..20, [1, 1, 1, 0]);
        ip[0] = 0x46;
        ip[3] += 4;
        let (l, k) = ok(&eth(ET_IPV4, &ip));
        assert_eq!((l.l4, l.l7), (38, 46));
        assert_eq!((k.tp_src, k.tp_dst), (1, 2));
    }

    #[test]
    fn qinq_vlan_ipv4_udp() {
        let f = eth_vlan(&[(0x88a8, 0x2064), (0x8100, 0x0005)], ET_IPV4, &ipv4(17, &udp(5000, 53, b"abcd")));
        let (l, k) = ok(&f);
        assert_eq!(k.vlan_tpid, 0x88a8);
        assert_eq!(k.vlan_tci, [0x2064 | VLAN_CFI, 0x0005 | VLAN_CFI]);
        assert_eq!(k.dl_type, ET_IPV4);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (17, 5000, 53));
        assert_eq!((l.l3, l.l4, l.l7), (22, 42, 50));
    }

    #[test]
    fn priority_tag_is_distinguishable() {
        let (_, k) = ok(&eth_vlan(&[(0x8100, 0)], ET_IPV4, &ipv4(17, &udp(1, 2, b""))));
        assert_eq!(k.vlan_tci, [VLAN_CFI, 0]);
        assert_eq!(k.vlan_tpid, 0x8100);
        let (_, k) = ok(&eth(ET_IPV4, &ipv4(17, &udp(1, 2, b""))));
        assert_eq!((k.vlan_tci, k.vlan_tpid), ([0, 0], 0));
    }

    #[test]
    fn arp_request() {
        #[rustfmt::skip]
        let arp = [
            // ARP: Ethernet/IPv4, request
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            // sender MAC_A 10.0.0.1, target 00.. 10.0.0.2
            0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
        ];
        for ethertype in [ET_ARP, 0x8035] {
            let (l, k) = ok(&eth(ethertype, &arp));
            assert_eq!(k.dl_type, ethertype);
            assert_eq!(k.arp_op, 1);
            assert_eq!(k.arp_sha, MAC_A);
            assert_eq!(k.arp_tha, [0; 6]);
            assert_eq!(k.nw_src, mapped(IP4_A));
            assert_eq!(k.nw_dst, mapped(IP4_B));
            assert_eq!(k.nw_proto, 0);
            assert_eq!((l.l3, l.l4), (14, Layout::ABSENT));
        }
    }

    #[test]
    fn ipv6_ext_headers_udp() {
        let mut pl = ext(ip_proto::IPV6_ROUTE, 0);
        pl.extend(ext(ip_proto::IPV6_OPTS, 1));
        pl.extend(ext(ip_proto::UDP, 0));
        pl.extend(udp(5000, 6081, &[0; 8]));
        let (l, k) = ok(&eth(ET_IPV6, &ipv6(ip_proto::HOPOPT, &pl)));
        assert_eq!(k.dl_type, ET_IPV6);
        assert_eq!(k.nw_src, IP6_A.octets());
        assert_eq!(k.nw_dst, IP6_B.octets());
        assert_eq!((k.nw_proto, k.nw_tos, k.nw_ttl, k.ipv6_label), (17, 0x20, 63, 0xabcde));
        assert_eq!((k.tp_src, k.tp_dst), (5000, 6081));
        assert_eq!((l.l3, l.l4, l.l7, l.geneve), (14, 14 + 40 + 32, 14 + 40 + 40, 14 + 40 + 40));
    }

    #[test]
    fn ipv6_ah_counts_four_octet_units() {
        let mut ah = vec![ip_proto::TCP, 4];
        ah.resize(24, 0);
        ah.extend(tcp(1, 2, 0, b""));
        let (l, k) = ok(&eth(ET_IPV6, &ipv6(ip_proto::AH, &ah)));
        assert_eq!((k.nw_proto, l.l4), (6, 14 + 40 + 24));
    }

    #[test]
    fn ipv4_fragments() {
        let (l, k) = ok(&eth(ET_IPV4, &ipv4_frag(17, true, 0, &udp(1, 6081, &[0; 100])[..40])));
        assert_eq!(k.nw_frag, FLOW_NW_FRAG_ANY);
        assert_eq!((k.tp_src, k.tp_dst), (1, 6081));
        assert!(!l.is_geneve(), "a first fragment is never decapsulated");
        let (l, k) = ok(&eth(ET_IPV4, &ipv4_frag(17, false, 1480, &[0xff; 3])));
        assert_eq!(k.nw_frag, FLOW_NW_FRAG_ANY | FLOW_NW_FRAG_LATER);
        assert_eq!((k.nw_proto, k.tp_src, l.l4, l.l7), (17, 0, Layout::ABSENT, Layout::ABSENT));
    }

    #[test]
    fn ipv6_fragments() {
        let mut first = frag6(ip_proto::UDP, 0, true);
        first.extend(&udp(1, 2, &[0; 64])[..16]);
        let (l, k) = ok(&eth(ET_IPV6, &ipv6(ip_proto::IPV6_FRAG, &first)));
        assert_eq!((k.nw_frag, k.nw_proto, k.tp_dst, l.l4), (FLOW_NW_FRAG_ANY, 17, 2, 62));
        let mut later = frag6(ip_proto::UDP, 64, false);
        later.extend([0; 5]);
        let (l, k) = ok(&eth(ET_IPV6, &ipv6(ip_proto::IPV6_FRAG, &later)));
        assert_eq!(k.nw_frag, FLOW_NW_FRAG_ANY | FLOW_NW_FRAG_LATER);
        assert_eq!((k.nw_proto, l.l4), (ip_proto::IPV6_FRAG, Layout::ABSENT));
        let mut atomic = frag6(ip_proto::UDP, 0, false);
        atomic.extend(udp(1, 2, b""));
        let (_, k) = ok(&eth(ET_IPV6, &ipv6(ip_proto::IPV6_FRAG, &atomic)));
        assert_eq!((k.nw_frag, k.nw_proto, k.tp_dst), (0, 17, 2));
    }

    #[test]
    fn icmpv4_type_code() {
        let (l, k) = ok(&eth(ET_IPV4, &ipv4(1, &[3, 4, 0, 0, 0, 0, 0, 0, 9, 9])));
        assert_eq!((k.tp_src, k.tp_dst, l.l7), (3, 4, 42));
    }

    fn nd_msg(msg_type: u8, body_len: usize, opts: &[u8]) -> Vec<u8> {
        let mut v = vec![msg_type, 0, 0, 0];
        v.resize(body_len, 0);
        if body_len >= 24 {
            v[8..24].copy_from_slice(&IP6_B.octets());
        }
        v.extend_from_slice(opts);
        eth(ET_IPV6, &ipv6(ip_proto::ICMPV6, &v))
    }

    const SLL: [u8; 8] = [1, 1, 2, 0, 0, 0, 0, 0x0a];
    const TLL: [u8; 8] = [2, 1, 2, 0, 0, 0, 0, 0x0b];

    #[test]
    fn neighbor_discovery() {
        let (_, k) = ok(&nd_msg(nd::NEIGHBOR_SOLICIT, 24, &SLL));
        assert_eq!((k.tp_src, k.tp_dst), (135, 0));
        assert_eq!(k.nd_target, IP6_B.octets());
        assert_eq!((k.arp_sha, k.arp_tha), (MAC_A, [0; 6]));
        let mut opts = vec![14, 1, 0, 0, 0, 0, 0, 0]; // nonce option, skipped
        opts.extend(TLL);
        opts.extend([0; 3]); // trailing bytes shorter than an option: ignored
        let (_, k) = ok(&nd_msg(nd::NEIGHBOR_ADVERT, 24, &opts));
        assert_eq!((k.nd_target, k.arp_tha, k.arp_sha), (IP6_B.octets(), MAC_B, [0; 6]));
        let (_, k) = ok(&nd_msg(nd::ROUTER_SOLICIT, 8, &SLL));
        assert_eq!((k.arp_sha, k.nd_target), (MAC_A, [0; 16]));
        let (_, k) = ok(&nd_msg(nd::ROUTER_ADVERT, 16, &SLL));
        assert_eq!(k.arp_sha, MAC_A);
        // an LLA option of another length is not a MAC
        let (_, k) = ok(&nd_msg(nd::NEIGHBOR_SOLICIT, 24, &[1, 2, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]));
        assert_eq!(k.arp_sha, [0; 6]);
        // code ≠ 0: plain ICMPv6, no ND fields
        let mut f = nd_msg(nd::NEIGHBOR_SOLICIT, 24, &SLL);
        f[14 + 40 + 1] = 1;
        let (_, k) = ok(&f);
        assert_eq!((k.tp_dst, k.nd_target, k.arp_sha), (1, [0; 16], [0; 6]));
    }

    #[test]
    fn geneve_is_reported_not_parsed() {
        let f = eth(ET_IPV4, &ipv4(17, &udp(49152, 6081, &[0xff; 4])));
        let (l, _) = ok(&f);
        assert_eq!((l.geneve, l.l7), (42, 42));
        assert!(l.is_geneve());
    }

    #[test]
    fn llc_snap_and_802_3() {
        let mut snap = vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
        snap.extend(ipv4(17, &udp(1, 2, b"")));
        let (l, k) = ok(&eth(u16::try_from(snap.len()).unwrap(), &snap));
        assert_eq!((k.dl_type, l.l3, k.tp_dst), (ET_IPV4, 22, 2));
        let (l, k) = ok(&eth(46, &[0x42, 0x42, 0x03, 0, 0, 0, 0, 0]));
        assert_eq!((k.dl_type, l.l3), (0x05ff, 14));
    }

    #[test]
    fn other_ethertypes_and_protocols_are_fine() {
        let (l, k) = ok(&eth(0x88cc, &[1, 2, 3]));
        assert_eq!((k.dl_type, l.l3, l.l4), (0x88cc, 14, Layout::ABSENT));
        let (l, k) = ok(&eth(ET_IPV4, &ipv4(47, &[0; 4])));
        assert_eq!((k.nw_proto, l.l4, l.l7), (47, 34, Layout::ABSENT));
        let (l, k) = ok(&eth(ET_IPV6, &ipv6(ip_proto::IPV6_NONXT, &[])));
        assert_eq!((k.nw_proto, l.l4), (59, 54));
        let (_, k) = ok(&eth(ET_IPV4, &ipv4(132, &[0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0])));
        assert_eq!((k.tp_src, k.tp_dst), (1, 2));
    }

    /// Sets byte `i` of an otherwise valid frame.
    fn with(mut f: Vec<u8>, i: usize, v: u8) -> Vec<u8> {
        f[i] = v;
        f
    }

    fn truncated(mut f: Vec<u8>, len: usize) -> Vec<u8> {
        f.truncate(len);
        f
    }

    fn too_many_ext() -> Vec<u8> {
        let mut pl = Vec::new();
        for _ in 0..MAX_IPV6_EXT_HEADERS {
            pl.extend(ext(ip_proto::IPV6_OPTS, 0));
        }
        pl.extend(ext(ip_proto::UDP, 0));
        pl.extend(udp(1, 2, b""));
        eth(ET_IPV6, &ipv6(ip_proto::IPV6_OPTS, &pl))
    }

    fn ipv4_with(proto: u8, l4: &[u8]) -> Vec<u8> {
        eth(ET_IPV4, &ipv4(proto, l4))
    }

    #[rstest]
    #[case::eth_truncated(eth_ipv4_tcp()[..13].to_vec(), DropReason::EthTruncated)]
    #[case::vlan_truncated_outer(eth_vlan(&[], 0x8100, &[0, 1, 8]), DropReason::VlanTruncated)]
    #[case::vlan_truncated_inner(eth_vlan(&[(0x88a8, 1)], 0x8100, &[0]), DropReason::VlanTruncated)]
    #[case::too_many_vlan_tags(eth_vlan(&[(0x88a8, 1), (0x8100, 2)], 0x8100, &[0, 3, 8, 0]), DropReason::TooManyVlanTags)]
    #[case::arp_short(eth(ET_ARP, &[0, 1, 8, 0, 6, 4, 0, 1]), DropReason::ArpMalformed)]
    #[case::arp_not_ethernet(eth(ET_ARP, &[0, 6, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), DropReason::ArpMalformed)]
    #[case::arp_not_ipv4(eth(ET_ARP, &[0, 1, 0x86, 0xdd, 6, 16, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), DropReason::ArpMalformed)]
    #[case::ipv4_truncated(truncated(eth_ipv4_tcp(), 33), DropReason::Ipv4Truncated)]
    #[case::ipv4_truncated_options(truncated(with(eth_ipv4_tcp(), 14, 0x4f), 60), DropReason::Ipv4Truncated)]
    #[case::ipv4_bad_version(with(eth_ipv4_tcp(), 14, 0x65), DropReason::Ipv4BadVersion)]
    #[case::ipv4_bad_ihl(with(eth_ipv4_tcp(), 14, 0x44), DropReason::Ipv4BadIhl)]
    #[case::ipv4_total_len_below_header(with(with(eth_ipv4_tcp(), 16, 0), 17, 19), DropReason::Ipv4BadTotalLen)]
    #[case::ipv4_total_len_beyond_frame(with(eth_ipv4_tcp(), 17, 200), DropReason::Ipv4BadTotalLen)]
    #[case::ipv6_truncated(eth(ET_IPV6, &ipv6(59, &[])[..39]), DropReason::Ipv6Truncated)]
    #[case::ipv6_bad_version(with(eth(ET_IPV6, &ipv6(59, &[])), 14, 0x40), DropReason::Ipv6BadVersion)]
    #[case::ipv6_bad_payload_len(truncated(eth(ET_IPV6, &ipv6(17, &udp(1, 2, b""))), 61), DropReason::Ipv6BadPayloadLen)]
    #[case::ipv6_ext_truncated(eth(ET_IPV6, &ipv6(0, &ext(17, 1)[..12])), DropReason::Ipv6ExtTruncated)]
    #[case::ipv6_ext_no_len_byte(eth(ET_IPV6, &ipv6(60, &[17])), DropReason::Ipv6ExtTruncated)]
    #[case::ipv6_frag_truncated(eth(ET_IPV6, &ipv6(44, &frag6(17, 0, true)[..7])), DropReason::Ipv6ExtTruncated)]
    #[case::ipv6_too_many_ext(too_many_ext(), DropReason::Ipv6TooManyExt)]
    #[case::icmp_truncated(ipv4_with(1, &[8, 0, 0, 0, 0, 0, 0]), DropReason::IcmpTruncated)]
    #[case::icmpv6_truncated(eth(ET_IPV6, &ipv6(58, &[128, 0, 0, 0])), DropReason::IcmpTruncated)]
    #[case::nd_short_target(nd_msg(nd::NEIGHBOR_SOLICIT, 20, &[]), DropReason::NdMalformed)]
    #[case::nd_short_ra(nd_msg(nd::ROUTER_ADVERT, 12, &[]), DropReason::NdMalformed)]
    #[case::nd_zero_len_option(nd_msg(nd::NEIGHBOR_SOLICIT, 24, &[1, 0, 0, 0, 0, 0, 0, 0]), DropReason::NdMalformed)]
    #[case::nd_overrunning_option(nd_msg(nd::NEIGHBOR_SOLICIT, 24, &[1, 2, 0, 0, 0, 0, 0, 0]), DropReason::NdMalformed)]
    #[case::nd_duplicate_sll(nd_msg(nd::NEIGHBOR_SOLICIT, 24, &[SLL, SLL].concat()), DropReason::NdMalformed)]
    #[case::nd_duplicate_tll(nd_msg(nd::NEIGHBOR_ADVERT, 24, &[TLL, TLL].concat()), DropReason::NdMalformed)]
    #[case::tcp_truncated(ipv4_with(6, &tcp(1, 2, 0, b"")[..19]), DropReason::TcpTruncated)]
    #[case::tcp_data_offset_below_5(ipv4_with(6, &with(tcp(1, 2, 0, b""), 12, 0x40)), DropReason::TcpBadDataOffset)]
    #[case::tcp_data_offset_beyond(ipv4_with(6, &with(tcp(1, 2, 0, b"abc"), 12, 0x60)), DropReason::TcpBadDataOffset)]
    #[case::udp_truncated(ipv4_with(17, &udp(1, 2, b"")[..7]), DropReason::UdpTruncated)]
    #[case::udp_len_below_8(ipv4_with(17, &with(udp(1, 2, b""), 5, 7)), DropReason::UdpBadLen)]
    #[case::udp_len_beyond(ipv4_with(17, &with(udp(1, 2, b"ab"), 5, 11)), DropReason::UdpBadLen)]
    #[case::sctp_truncated(ipv4_with(132, &[0; 11]), DropReason::SctpTruncated)]
    fn drop_reasons(#[case] frame: Vec<u8>, #[case] want: DropReason) {
        let (r, k) = run(&frame);
        assert_eq!(r, Err(want));
        assert_eq!(k.in_port, 7);
        assert_eq!(k.tun_vni, 0, "key was reset");
    }

    /// A few valid frames of every kind, for mutation.
    fn corpus() -> Vec<Vec<u8>> {
        let mut ext_udp = ext(ip_proto::IPV6_FRAG, 0);
        ext_udp.extend(frag6(ip_proto::UDP, 0, true));
        ext_udp.extend(udp(1, 6081, &[0; 16]));
        vec![
            ETH_IPV4_TCP.to_vec(),
            eth_vlan(&[(0x88a8, 0x2064), (0x8100, 5)], ET_IPV4, &ipv4(17, &udp(5000, 6081, &[0; 20]))),
            eth(ET_IPV6, &ipv6(ip_proto::HOPOPT, &ext_udp)),
            nd_msg(nd::NEIGHBOR_SOLICIT, 24, &[SLL, TLL].concat()),
            nd_msg(nd::ROUTER_ADVERT, 16, &SLL),
            eth(ET_ARP, &[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 10, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]),
            eth(ET_IPV4, &ipv4(1, &[8, 0, 0, 0, 0, 0, 0, 0])),
            eth(
                ET_IPV6,
                &ipv6(ip_proto::AH, &[6, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            ),
        ]
    }

    /// What must hold for any input: no panic, and every present offset
    /// lies within the frame and in order.
    fn check_invariants(frame: &[u8]) {
        let mut key = FlowKey::default();
        if let Ok(l) = extract(frame, 1, &mut key) {
            let len = frame.len();
            assert!(usize::from(l.l3) <= len);
            if l.has_l4() {
                assert!(l.l3 <= l.l4 && usize::from(l.l4) <= len);
            }
            if l.l7 != Layout::ABSENT {
                assert!(l.l4 <= l.l7 && usize::from(l.l7) <= len);
            }
            if l.is_geneve() {
                assert_eq!(l.geneve, l.l7);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_invariants(&bytes);
        }

        #[test]
        fn arbitrary_ethertype_payload_never_panics(
            et in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100), Just(0x88a8), any::<u16>()],
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            check_invariants(&eth(et, &body));
        }

        #[test]
        fn truncations_and_mutations_never_panic(
            which in 0usize..8,
            cut in any::<prop::sample::Index>(),
            muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        ) {
            let mut f = corpus()[which].clone();
            for (i, v) in muts {
                let at = i.index(f.len());
                f[at] = v;
            }
            let n = cut.index(f.len() + 1);
            check_invariants(&f);
            check_invariants(&f[..n]);
        }
    }
}
