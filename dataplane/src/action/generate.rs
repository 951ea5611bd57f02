//! Builds the packets that OVN's packet-generating actions make (`nd_na`,
//! `reject`, `tcp_reset`, `icmp4`/`icmp6`, `arp`), byte for byte as
//! ovn-controller's pinctrl composes them (OVN 23.03 `controller/pinctrl.c`,
//! OVS `lib/packets.c`), into an empty buffer.
//!
//! The table executor decides what to build ([`GenPacket`]) and leaves the
//! generated packet's header fields in a final flow key (the fields pinctrl
//! copies from the original, then whatever the nested actions set); this
//! module writes those fields out. Only what is not in a flow key comes from
//! the original packet: the quoted IP packet of an ICMP error and the
//! sequence number a TCP reset acknowledges.
//!
//! What pinctrl does and this keeps (each checked against scapy-made bytes in
//! the tests):
//! - IPv4 (`pinctrl_compose_ipv4`): IHL 5, ID 0, DF, TOS from the key (pinctrl
//!   writes CS6, then `packet_set_ipv4(…, tos = 0, …)` clears it), TTL from
//!   the key (255 for ICMP, 63 for a reset).
//! - IPv6 (`pinctrl_compose_ipv6`): traffic class and flow label from the key
//!   (both 0 as pinctrl sets them), hop limit from the key.
//! - ICMPv4 error: type/code from the key, 4 unused bytes, then the original
//!   IP packet (header + data, by its total length) up to 576 bytes of frame
//!   (534 bytes quoted; RFC 1812 §4.3.2.3).
//! - ICMPv6 error: the same, up to 1280 bytes of frame (1218 bytes quoted;
//!   RFC 4443 §3.1).
//! - TCP reset: no payload, ports from the key (pinctrl swaps them), seq 0,
//!   ack = original seq + 1, data offset 5, flags from the key (RST+ACK),
//!   window 0.
//! - NA (`compose_nd_na`): flags R (router only), S, O; the target from the
//!   key; one Target Link-Layer Address option (`nd.tll`).
//! - ARP request (`compose_arp__`): 42 bytes, no padding.
//! - A VLAN tag is written when the key has one (pinctrl pushes the original
//!   tag for ARP and ICMP, not for NA and RST; the executor clears it then).
//! - Checksums are complete (not offloaded), as pinctrl computes them.
//!
//! Invariants: nothing here allocates; the buffer is empty on entry, and on
//! error its contents are unspecified (free it).

use crate::buf::PacketBuf;
use crate::drop::DropReason;
use crate::flow::{FlowKey, Layout, VLAN_CFI};
use crate::wire::checksum;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMPV6: u8 = 58;
/// An ICMPv4 error's frame is at most this long (pinctrl: RFC 1812's 576).
const ICMP4_MAX_FRAME: usize = 576;
/// An ICMPv6 error's frame is at most this long (pinctrl: IPv6 minimum MTU).
const ICMP6_MAX_FRAME: usize = 1280;
/// Ethernet + IPv4 + ICMP headers.
const ICMP4_HEADERS: usize = 14 + 20 + 8;
/// Ethernet + IPv6 + ICMPv6 headers.
const ICMP6_HEADERS: usize = 14 + 40 + 8;

/// Which packet to build (the executor resolves an OVN action to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenPacket {
    /// ARP request.
    Arp,
    /// Neighbour advertisement, flags S+O.
    NdNa,
    /// Neighbour advertisement, flags R+S+O.
    NdNaRouter,
    /// ICMPv4 error quoting the original IPv4 packet.
    Icmp4,
    /// ICMPv6 error quoting the original IPv6 packet.
    Icmp6,
    /// TCP RST (IPv4 or IPv6, by the key's EtherType).
    TcpRst,
}

impl GenPacket {
    /// A short name, for trace and dumps.
    pub fn name(self) -> &'static str {
        match self {
            GenPacket::Arp => "arp_request",
            GenPacket::NdNa => "nd_na",
            GenPacket::NdNaRouter => "nd_na_router",
            GenPacket::Icmp4 => "icmp4_unreach",
            GenPacket::Icmp6 => "icmp6_unreach",
            GenPacket::TcpRst => "tcp_rst",
        }
    }
}

/// Writes into the empty `buf` the packet of `kind` whose headers `key`
/// holds; `orig` is the packet it answers (as `extract` parsed it into
/// `layout`).
///
/// # Errors
/// `no_headroom` if `buf` has no room for it (its tailroom is used); the
/// truncation reason of the original's layer when an ICMP error or reset
/// needs bytes the original does not have.
pub fn generate<B: PacketBuf + ?Sized>(
    buf: &mut B,
    kind: GenPacket,
    key: &FlowKey,
    orig: &[u8],
    layout: &Layout,
) -> Result<(), DropReason> {
    let tagged = key.vlan_tci[0] & VLAN_CFI != 0;
    let l2 = if tagged { 18 } else { 14 };
    let v6 = key.dl_type == ETH_P_IPV6;
    // The quoted part of the original (ICMP) or its sequence number (RST).
    let (quote, ack) = match kind {
        GenPacket::Icmp4 => (quoted(orig, layout, false, ICMP4_MAX_FRAME - ICMP4_HEADERS)?, 0),
        GenPacket::Icmp6 => (quoted(orig, layout, true, ICMP6_MAX_FRAME - ICMP6_HEADERS)?, 0),
        GenPacket::TcpRst => {
            let l4 = usize::from(layout.l4);
            let seq = orig.get(l4 + 4..l4 + 8).filter(|_| layout.has_l4()).ok_or(DropReason::TcpTruncated)?;
            (&[][..], u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]).wrapping_add(1))
        }
        _ => (&[][..], 0),
    };
    let l3_len = match kind {
        GenPacket::Arp => 28,
        GenPacket::NdNa | GenPacket::NdNaRouter => 40 + 24 + 8,
        GenPacket::Icmp4 => 20 + 8 + quote.len(),
        GenPacket::Icmp6 => 40 + 8 + quote.len(),
        GenPacket::TcpRst => (if v6 { 40 } else { 20 }) + 20,
    };
    let len = l2 + l3_len;
    buf.append(len).map_err(|_| DropReason::NoHeadroom)?;
    let d = &mut buf.data_mut()[..len];
    d.fill(0);
    d[0..6].copy_from_slice(&key.dl_dst);
    d[6..12].copy_from_slice(&key.dl_src);
    if tagged {
        let tpid = if key.vlan_tpid == 0 { ETH_P_8021Q } else { key.vlan_tpid };
        put16(d, 12, tpid);
        put16(d, 14, key.vlan_tci[0] & !VLAN_CFI);
    }
    let ethertype = match kind {
        GenPacket::Arp => ETH_P_ARP,
        GenPacket::Icmp4 => ETH_P_IPV4,
        GenPacket::TcpRst if !v6 => ETH_P_IPV4,
        _ => ETH_P_IPV6,
    };
    put16(d, l2 - 2, ethertype);
    let l3 = &mut d[l2..];
    match kind {
        GenPacket::Arp => arp(l3, key),
        GenPacket::NdNa | GenPacket::NdNaRouter => {
            let l4 = ipv6(l3, key, IPPROTO_ICMPV6, 32);
            l4[0] = lo8(key.tp_src);
            l4[1] = lo8(key.tp_dst);
            // RFC 4861 §4.4: R, S, O in the first byte of the flags word.
            l4[4] = if kind == GenPacket::NdNaRouter { 0xe0 } else { 0x60 };
            l4[8..24].copy_from_slice(&key.nd_target);
            l4[24] = 2; // Target Link-Layer Address
            l4[25] = 1; // in units of 8 bytes
            l4[26..32].copy_from_slice(&key.arp_tha);
            l4_checksum(l3, true, IPPROTO_ICMPV6, 2);
        }
        GenPacket::Icmp4 => {
            let l4 = ipv4(l3, key, IPPROTO_ICMP, 8 + quote.len());
            l4[0] = lo8(key.tp_src);
            l4[1] = lo8(key.tp_dst);
            l4[8..].copy_from_slice(quote);
            let c = !checksum::data(l4);
            put16(l4, 2, c);
        }
        GenPacket::Icmp6 => {
            let l4 = ipv6(l3, key, IPPROTO_ICMPV6, 8 + quote.len());
            l4[0] = lo8(key.tp_src);
            l4[1] = lo8(key.tp_dst);
            l4[8..].copy_from_slice(quote);
            l4_checksum(l3, true, IPPROTO_ICMPV6, 2);
        }
        GenPacket::TcpRst => {
            let l4 = if v6 { ipv6(l3, key, IPPROTO_TCP, 20) } else { ipv4(l3, key, IPPROTO_TCP, 20) };
            put16(l4, 0, key.tp_src);
            put16(l4, 2, key.tp_dst);
            l4[8..12].copy_from_slice(&ack.to_be_bytes());
            put16(l4, 12, (5 << 12) | (key.tcp_flags & 0x0fff));
            l4_checksum(l3, v6, IPPROTO_TCP, 16);
        }
    }
    Ok(())
}

/// The original IP packet (header and data, as long as its header says and
/// the frame holds) up to `max` bytes.
fn quoted<'a>(orig: &'a [u8], layout: &Layout, v6: bool, max: usize) -> Result<&'a [u8], DropReason> {
    let l3 = usize::from(layout.l3);
    let trunc = if v6 { DropReason::Ipv6Truncated } else { DropReason::Ipv4Truncated };
    if layout.l3 == Layout::ABSENT {
        return Err(trunc);
    }
    let ip = orig.get(l3..).ok_or(trunc)?;
    let said = if v6 { 40 + usize::from(get16(ip, 4).ok_or(trunc)?) } else { usize::from(get16(ip, 2).ok_or(trunc)?) };
    Ok(&ip[..said.min(max).min(ip.len())])
}

/// Writes an IPv4 header for `payload` bytes of `proto`; returns the L4 part.
fn ipv4<'a>(l3: &'a mut [u8], key: &FlowKey, proto: u8, payload: usize) -> &'a mut [u8] {
    l3[0] = 0x45;
    l3[1] = key.nw_tos;
    put16(l3, 2, u16::try_from(20 + payload).unwrap_or(u16::MAX));
    put16(l3, 6, 0x4000); // DF, ID 0
    l3[8] = key.nw_ttl;
    l3[9] = proto;
    l3[12..16].copy_from_slice(&key.nw_src[12..16]);
    l3[16..20].copy_from_slice(&key.nw_dst[12..16]);
    let c = !checksum::data(&l3[..20]);
    put16(l3, 10, c);
    &mut l3[20..]
}

/// Writes an IPv6 header for `payload` bytes of `proto`; returns the L4 part.
fn ipv6<'a>(l3: &'a mut [u8], key: &FlowKey, proto: u8, payload: usize) -> &'a mut [u8] {
    let vtf = (6u32 << 28) | (u32::from(key.nw_tos) << 20) | (key.ipv6_label & 0x000f_ffff);
    l3[0..4].copy_from_slice(&vtf.to_be_bytes());
    put16(l3, 4, u16::try_from(payload).unwrap_or(u16::MAX));
    l3[6] = proto;
    l3[7] = key.nw_ttl;
    l3[8..24].copy_from_slice(&key.nw_src);
    l3[24..40].copy_from_slice(&key.nw_dst);
    &mut l3[40..]
}

/// Fills the checksum at `at` of the L4 part of `l3` (pseudo-header included).
fn l4_checksum(l3: &mut [u8], v6: bool, proto: u8, at: usize) {
    let (hl, src, dst) = if v6 { (40, 8..24, 24..40) } else { (20, 12..16, 16..20) };
    let n = l3.len() - hl;
    let mut ph = [0u8; 40];
    ph[..src.len()].copy_from_slice(&l3[src.clone()]);
    ph[16..16 + dst.len()].copy_from_slice(&l3[dst.clone()]);
    let len = u32::try_from(n).unwrap_or(u32::MAX);
    ph[32..36].copy_from_slice(&len.to_be_bytes());
    ph[39] = proto;
    let c = !checksum::combine(&[checksum::data(&ph), checksum::data(&l3[hl..])]);
    put16(&mut l3[hl..], at, c);
}

fn arp(a: &mut [u8], key: &FlowKey) {
    put16(a, 0, 1); // Ethernet
    put16(a, 2, ETH_P_IPV4);
    a[4] = 6;
    a[5] = 4;
    put16(a, 6, key.arp_op);
    a[8..14].copy_from_slice(&key.arp_sha);
    a[14..18].copy_from_slice(&key.nw_src[12..16]);
    a[18..24].copy_from_slice(&key.arp_tha);
    a[24..28].copy_from_slice(&key.nw_dst[12..16]);
}

fn lo8(v: u16) -> u8 {
    v.to_be_bytes()[1]
}

fn get16(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn put16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests;
