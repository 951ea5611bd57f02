//! Per-packet costs of flow extraction and header actions (criterion).
//!
//! Cases are named `module::case`. Inputs are built once, outside
//! `b.iter`; buffers are reused with `VecBuf::reset`, whose copy of the
//! frame (64–100 bytes) is included in the action numbers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use petrel_dataplane::action::{geneve_decap, geneve_encap, vlan_pop, vlan_push, GeneveTunnel, GeneveTunnelConfig};
use petrel_dataplane::buf::{PacketBuf, VecBuf};
use petrel_dataplane::flow::{extract, FlowKey};
use petrel_dataplane::wire::{ip_proto, ChecksumCaps, EtherType, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};

const HEADROOM: usize = VecBuf::DEFAULT_HEADROOM;

fn eth(tags: &[(u16, u16)], ethertype: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a];
    for (tpid, tci) in tags {
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&tci.to_be_bytes());
    }
    v.extend_from_slice(&ethertype.0.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ipv4(protocol: u8, payload: &[u8]) -> Vec<u8> {
    let r = Ipv4Repr {
        src_addr: Ipv4Addr::new(10, 0, 0, 1),
        dst_addr: Ipv4Addr::new(10, 0, 0, 2),
        protocol,
        payload_len: u16::try_from(payload.len()).expect("small payload"),
        ttl: 64,
        dscp_ecn: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut v = vec![0u8; 20 + payload.len()];
    v[20..].copy_from_slice(payload);
    r.emit(&mut Ipv4Packet::new_unchecked(&mut v[..]), &ChecksumCaps::default());
    v
}

fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let r = Ipv6Repr {
        src_addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        dst_addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
        next_header,
        payload_len: u16::try_from(payload.len()).expect("small payload"),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0x12345,
    };
    let mut v = vec![0u8; 40 + payload.len()];
    v[40..].copy_from_slice(payload);
    r.emit(&mut Ipv6Packet::new_unchecked(&mut v[..]));
    v
}

#[rustfmt::skip]
fn tcp() -> Vec<u8> {
    vec![
        // TCP: 1234 -> 80, seq 1, ack 2, data offset 5, ACK|PSH, window 1000
        0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0x03, 0xe8, 0, 0, 0, 0,
        // payload
        b'h', b'e', b'l', b'l', b'o', b'!',
    ]
}

fn udp(dst_port: u16, payload_len: usize) -> Vec<u8> {
    let len = u16::try_from(8 + payload_len).expect("small payload");
    let mut v = vec![0xc3, 0x50];
    v.extend_from_slice(&dst_port.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.resize(8 + payload_len, 0xab);
    v
}

/// 64-byte frames as a pod would send them (60 + padding-free).
fn eth_ipv4_tcp() -> Vec<u8> {
    let mut f = eth(&[], EtherType::IPV4, &ipv4(ip_proto::TCP, &tcp()));
    f.resize(64, 0);
    f
}

fn eth_vlan_ipv4_udp() -> Vec<u8> {
    eth(&[(0x8100, 100)], EtherType::IPV4, &ipv4(ip_proto::UDP, &udp(53, 18)))
}

fn eth_ipv6_ext_udp() -> Vec<u8> {
    let mut pl = vec![ip_proto::IPV6_OPTS, 0, 1, 4, 0, 0, 0, 0]; // Hop-by-Hop, PadN
    pl.extend_from_slice(&[ip_proto::UDP, 0, 1, 4, 0, 0, 0, 0]); // Destination Options, PadN
    pl.extend(udp(4789, 16));
    eth(&[], EtherType::IPV6, &ipv6(ip_proto::HOPOPT, &pl))
}

#[rustfmt::skip]
fn arp() -> Vec<u8> {
    eth(&[], EtherType::ARP, &[
        // ARP: Ethernet/IPv4 request, sender 02:..:0a 10.0.0.1, target 10.0.0.2
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 10, 0, 0, 1,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2,
    ])
}

fn tunnel(v6: bool) -> GeneveTunnel {
    let (src_ip, dst_ip) = if v6 {
        (IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)), IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)))
    } else {
        (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)), IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2)))
    };
    GeneveTunnel::new(GeneveTunnelConfig {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip,
        dst_ip,
        vni: 5,
        ttl: 64,
        dst_port: 6081,
    })
    .expect("valid tunnel")
}

fn bench_extract(c: &mut Criterion) {
    let cases = [
        ("flow::extract_eth_ipv4_tcp", eth_ipv4_tcp()),
        ("flow::extract_eth_vlan_ipv4_udp", eth_vlan_ipv4_udp()),
        ("flow::extract_eth_ipv6_ext_udp", eth_ipv6_ext_udp()),
        ("flow::extract_arp", arp()),
    ];
    for (name, frame) in cases {
        let mut key = FlowKey::default();
        assert!(extract(&frame, 1, &mut key).is_ok(), "{name} input is valid");
        c.bench_function(name, |b| b.iter(|| extract(black_box(&frame), 1, black_box(&mut key))));
    }
    let mut key = FlowKey::default();
    extract(&eth_ipv4_tcp(), 1, &mut key).expect("valid");
    c.bench_function("flow::key_hash", |b| b.iter(|| black_box(&key).hash()));
}

fn bench_geneve(c: &mut Criterion) {
    let caps = ChecksumCaps::default();
    let inner = eth_ipv4_tcp();
    for (name, v6) in [("action::geneve_encap_ipv4", false), ("action::geneve_encap_ipv6", true)] {
        let tun = tunnel(v6);
        let mut buf = VecBuf::new(&inner, HEADROOM, 64);
        c.bench_function(name, |b| {
            b.iter(|| {
                buf.reset(black_box(&inner), HEADROOM);
                geneve_encap(&mut buf, &tun, 3, 4, black_box(0x1234_5678), &caps)
            })
        });
    }

    let mut outer = VecBuf::from_packet(&inner);
    geneve_encap(&mut outer, &tunnel(false), 3, 4, 0x1234_5678, &caps).expect("encap");
    let outer = outer.data().to_vec();
    let layout = extract(&outer, 1, &mut FlowKey::default()).expect("valid");
    let mut buf = VecBuf::new(&outer, HEADROOM, 64);
    c.bench_function("action::geneve_decap_ipv4", |b| {
        b.iter(|| {
            buf.reset(black_box(&outer), HEADROOM);
            geneve_decap(&mut buf, black_box(&layout))
        })
    });
}

fn bench_gre(c: &mut Criterion) {
    use petrel_dataplane::action::gre::{gre_encap, GreSink, GreSinkConfig, MirrorKind};
    let caps = ChecksumCaps::default();
    let inner = eth_ipv4_tcp();
    for (name, kind) in
        [("action::gre_encap_mirror", MirrorKind::Gre), ("action::erspan_encap_mirror", MirrorKind::Erspan)]
    {
        let sink = GreSink::new(&GreSinkConfig {
            kind,
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src_ip: std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
            dst_ip: std::net::Ipv4Addr::new(192, 0, 2, 50).into(),
            index: 9,
        })
        .expect("valid sink");
        let mut buf = VecBuf::new(&inner, HEADROOM, 64);
        let mut seq = 0u32;
        c.bench_function(name, |b| {
            b.iter(|| {
                buf.reset(black_box(&inner), HEADROOM);
                seq = seq.wrapping_add(1);
                gre_encap(&mut buf, &sink, seq, &caps)
            })
        });
    }
}

fn bench_vlan(c: &mut Criterion) {
    let untagged = eth_ipv4_tcp();
    let mut buf = VecBuf::new(&untagged, HEADROOM, 64);
    c.bench_function("action::vlan_push", |b| {
        b.iter(|| {
            buf.reset(black_box(&untagged), HEADROOM);
            vlan_push(&mut buf, 0x8100, black_box(100))
        })
    });
    let tagged = eth_vlan_ipv4_udp();
    let mut buf = VecBuf::new(&tagged, HEADROOM, 64);
    c.bench_function("action::vlan_pop", |b| {
        b.iter(|| {
            buf.reset(black_box(&tagged), HEADROOM);
            vlan_pop(&mut buf)
        })
    });
}

criterion_group!(benches, bench_extract, bench_geneve, bench_gre, bench_vlan);
criterion_main!(benches);
