//! Test-only packet builders shared by `flow` and `action` tests. They use
//! the `wire` emitters, so each header is built the way the views read it.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{checksum::ChecksumCaps, ethernet::EtherType, ip_proto};
use crate::wire::{Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const IP4_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const IP4_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const IP6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const IP6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// Ethernet header (dst MAC_B, src MAC_A) + payload.
pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&MAC_B);
    v.extend_from_slice(&MAC_A);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Ethernet with VLAN tags `(tpid, tci)` outermost first.
pub fn eth_vlan(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&MAC_B);
    v.extend_from_slice(&MAC_A);
    for (tpid, tci) in tags {
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&tci.to_be_bytes());
    }
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// IPv4 header (A → B, TTL 64, TOS 0x10, DF) + payload, valid checksum.
pub fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_frag(proto, false, 0, payload)
}

/// IPv4 with fragment fields.
pub fn ipv4_frag(proto: u8, more_frags: bool, frag_offset: u16, payload: &[u8]) -> Vec<u8> {
    let r = Ipv4Repr {
        src_addr: IP4_A,
        dst_addr: IP4_B,
        protocol: proto,
        payload_len: u16::try_from(payload.len()).unwrap(),
        ttl: 64,
        dscp_ecn: 0x10,
        ident: 7,
        dont_frag: !more_frags && frag_offset == 0,
        more_frags,
        frag_offset,
    };
    let mut v = vec![0u8; 20 + payload.len()];
    v[20..].copy_from_slice(payload);
    r.emit(&mut Ipv4Packet::new_unchecked(&mut v[..]), &ChecksumCaps::default());
    v
}

/// IPv6 header (A → B, hop limit 63, TC 0x20, flow label 0xabcde) + payload.
pub fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let r = Ipv6Repr {
        src_addr: IP6_A,
        dst_addr: IP6_B,
        next_header,
        payload_len: u16::try_from(payload.len()).unwrap(),
        hop_limit: 63,
        traffic_class: 0x20,
        flow_label: 0xabcde,
    };
    let mut v = vec![0u8; 40 + payload.len()];
    v[40..].copy_from_slice(payload);
    r.emit(&mut Ipv6Packet::new_unchecked(&mut v[..]));
    v
}

/// A generic IPv6 extension header of `8 * (len_units + 1)` bytes.
pub fn ext(next_header: u8, len_units: u8) -> Vec<u8> {
    let mut v = vec![0u8; 8 * (usize::from(len_units) + 1)];
    v[0] = next_header;
    v[1] = len_units;
    v
}

/// An IPv6 Fragment header.
pub fn frag6(next_header: u8, offset: u16, more: bool) -> Vec<u8> {
    let mut v = vec![next_header, 0, 0, 0, 0, 0, 0, 9];
    v[2..4].copy_from_slice(&((offset & 0xfff8) | u16::from(more)).to_be_bytes());
    v
}

/// TCP header (no options, checksum over IPv4 A → B) + payload.
pub fn tcp(src_port: u16, dst_port: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let r = TcpRepr { src_port, dst_port, seq_number: 1, ack_number: 2, flags, window_len: 1000, urgent_at: 0 };
    let mut v = vec![0u8; 20 + payload.len()];
    v[20..].copy_from_slice(payload);
    r.emit(&mut TcpPacket::new_unchecked(&mut v[..]), &IpAddr::V4(IP4_A), &IpAddr::V4(IP4_B), &ChecksumCaps::default());
    v
}

/// UDP header (checksum over IPv4 A → B) + payload.
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 8 + payload.len()];
    v[8..].copy_from_slice(payload);
    UdpRepr { src_port, dst_port }.emit(
        &mut UdpPacket::new_unchecked(&mut v[..]),
        &IpAddr::V4(IP4_A),
        &IpAddr::V4(IP4_B),
        payload.len(),
        &ChecksumCaps::default(),
    );
    v
}

/// Ethernet + IPv4 + TCP 1234 → 80 SYN with 6 payload bytes.
pub fn eth_ipv4_tcp() -> Vec<u8> {
    eth(EtherType::IPV4.0, &ipv4(ip_proto::TCP, &tcp(1234, 80, 0x002, b"hello!")))
}
