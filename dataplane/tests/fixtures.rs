//! Our parser and header actions against packets made by scapy and judged by
//! tshark (`pcap-fixtures/`, see its README.md).
//!
//! - `extract_matches_manifest`: every packet of every fixture extracts to
//!   exactly the flow key `manifest.json` describes, or to its drop reason;
//! - `geneve_decap_matches_manifest`: decap yields the manifest's VNI and
//!   port keys and exactly the inner bytes scapy put there, or the drop;
//! - `geneve_encap_dissects_in_tshark`: what we encapsulate, tshark reads
//!   back as OVN Geneve with the right VNI, option and keys, good checksums
//!   and the original inner frame;
//! - `vlan_push_pop_restores_every_frame`, `vlan_push_dissects_in_tshark`.
//!
//! tshark is required: without it the tshark tests fail and say to run
//! `scripts/bootstrap.sh`. DPDK is not needed (`--no-default-features`).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::net::IpAddr;

use common::{
    fixture, fixtures_dir, ip16, mac, manifest, manifest_files, num, require_tshark, text, tshark_fields, tshark_num,
    write_pcap, Mismatches,
};
use petrel_dataplane::action::geneve::{geneve_decap, geneve_encap, verify_outer_checksums, GeneveTunnel};
use petrel_dataplane::action::geneve::{GeneveMeta, GeneveTunnelConfig};
use petrel_dataplane::action::vlan::{vlan_pop, vlan_push};
use petrel_dataplane::buf::{PacketBuf, VecBuf};
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::flow::{extract, FlowKey, Layout, FLOW_NW_FRAG_ANY, FLOW_NW_FRAG_LATER, VLAN_CFI};
use petrel_dataplane::wire::ChecksumCaps;
use serde_json::Value;

const GENEVE_PORT: u64 = 6081;
const IN_PORT: u32 = 7;

/// The flow key the manifest's facts describe (`extract` + no tunnel).
fn expected_key(f: &Value, in_port: u32) -> FlowKey {
    let mut k = FlowKey { in_port, ..FlowKey::default() };
    k.dl_dst = mac(text(&f["eth_dst"]));
    k.dl_src = mac(text(&f["eth_src"]));
    k.dl_type = num(&f["eth_type"]) as u16;
    let tags = f["vlan"].as_array().unwrap();
    if let Some(t) = tags.first() {
        k.vlan_tpid = num(&t["tpid"]) as u16;
    }
    for (i, t) in tags.iter().enumerate() {
        // OVS: the TCI with CFI forced on; the real DEI bit is not kept.
        k.vlan_tci[i] = (num(&t["pcp"]) as u16) << 13 | VLAN_CFI | num(&t["vid"]) as u16;
    }
    if let Some(a) = f.get("arp") {
        k.arp_op = num(&a["op"]) as u16;
        k.nw_src = ip16(text(&a["spa"]));
        k.nw_dst = ip16(text(&a["tpa"]));
        k.arp_sha = mac(text(&a["sha"]));
        k.arp_tha = mac(text(&a["tha"]));
    }
    if f.get("ip_src").is_some() {
        k.nw_src = ip16(text(&f["ip_src"]));
        k.nw_dst = ip16(text(&f["ip_dst"]));
        k.nw_ttl = num(&f["ip_ttl"]) as u8;
        k.nw_tos = num(&f["ip_tos"]) as u8;
        k.nw_proto = num(&f["ip_proto"]) as u8;
        k.ipv6_label = f.get("ipv6_label").map_or(0, |l| num(l) as u32);
        k.nw_frag = match text(&f["frag"]) {
            "no" | "atomic" => 0,
            "first" => FLOW_NW_FRAG_ANY,
            "later" => FLOW_NW_FRAG_ANY | FLOW_NW_FRAG_LATER,
            other => panic!("manifest: frag {other:?}"),
        };
        // OVS: a later IPv6 fragment's nw_proto is the Fragment header (44).
        if k.dl_type == 0x86dd && text(&f["frag"]) == "later" {
            k.nw_proto = 44;
        }
    }
    if let (Some(s), Some(d)) = (f.get("sport"), f.get("dport")) {
        k.tp_src = num(s) as u16;
        k.tp_dst = num(d) as u16;
    }
    if let Some(fl) = f.get("tcp_flags") {
        k.tcp_flags = num(fl) as u16;
    }
    if let (Some(t), Some(c)) = (f.get("icmp_type"), f.get("icmp_code")) {
        k.tp_src = num(t) as u16;
        k.tp_dst = num(c) as u16;
    }
    if let Some(nd) = f.get("nd") {
        k.nd_target = ip16(text(&nd["target"]));
        if let Some(s) = nd.get("sll") {
            k.arp_sha = mac(text(s));
        }
        if let Some(t) = nd.get("tll") {
            k.arp_tha = mac(text(t));
        }
    }
    k
}

/// Every field where two keys differ, by name.
fn key_diff(ours: &FlowKey, want: &FlowKey) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => {$(
            if ours.$f != want.$f {
                out.push(format!("{} ours {:?} expected {:?}", stringify!($f), ours.$f, want.$f));
            }
        )*};
    }
    cmp!(
        tun_src,
        tun_dst,
        tun_vni,
        tun_ingress_key,
        tun_egress_key,
        in_port,
        ipv6_label,
        dl_dst,
        dl_src,
        dl_type,
        vlan_tpid,
        vlan_tci,
        nw_src,
        nw_dst,
        nw_proto,
        nw_tos,
        nw_ttl,
        nw_frag,
        tp_src,
        tp_dst,
        tcp_flags,
        arp_op,
        arp_sha,
        arp_tha,
        nd_target,
        pad
    );
    out
}

/// Checks a successful extraction against the manifest facts.
fn check_extracted(m: &mut Mismatches, what: &str, f: &Value, key: &FlowKey, layout: &Layout, in_port: u32) {
    let want = expected_key(f, in_port);
    for d in key_diff(key, &want) {
        m.fail(format!("{what}: {d}"));
    }
    m.check(format!("{what}: layout.l3"), usize::from(layout.l3), num(&f["l3_offset"]) as usize);
    let l4 = match (f.get("l4_offset"), f.get("frag").map(text)) {
        (_, Some("later")) | (None, _) => Layout::ABSENT,
        (Some(o), _) => num(o) as u16,
    };
    // Only IP frames have an L4 layout entry.
    if f.get("ip_src").is_some() {
        m.check(format!("{what}: layout.l4"), layout.l4, l4);
    }
    if f.get("ip_src").is_some() {
        let l7 = f.get("l7_offset").map_or(Layout::ABSENT, |o| num(o) as u16);
        m.check(format!("{what}: layout.l7"), layout.l7, l7);
    }
    let geneve = f.get("dport").map(num) == Some(GENEVE_PORT)
        && f["ip_proto"].as_u64() == Some(17)
        && f.get("frag").map(text) == Some("no");
    m.check(format!("{what}: layout.geneve"), layout.geneve, if geneve { l4 + 8 } else { Layout::ABSENT });
}

fn files() -> Vec<(String, Vec<Value>)> {
    manifest_files(&manifest())
}

#[test]
fn manifest_describes_every_fixture_packet() {
    let mut m = Mismatches::default();
    let files = files();
    assert!(files.len() >= 7, "manifest lists {} files", files.len());
    for (name, entries) in &files {
        let frames = fixture(name);
        m.check(format!("{name}: packet count"), frames.len(), entries.len());
        for (i, (frame, f)) in frames.iter().zip(entries).enumerate() {
            m.check(format!("{name}#{i}: index"), num(&f["index"]) as usize, i);
            m.check(format!("{name}#{i}: len"), frame.len(), num(&f["len"]) as usize);
            if let Some(r) = f.get("drop") {
                let r = text(r);
                if !DropReason::ALL.iter().any(|d| d.name() == r) {
                    m.fail(format!("{name}#{i}: drop reason {r:?} is not a DropReason::name()"));
                }
            }
        }
    }
    m.assert_none("manifest_describes_every_fixture_packet");
}

#[test]
fn extract_matches_manifest() {
    let mut m = Mismatches::default();
    let mut n = 0;
    for (name, entries) in files() {
        for (i, (frame, f)) in fixture(&name).iter().zip(&entries).enumerate() {
            let what = format!("{name}#{i} ({})", text(&f["desc"]));
            let mut key = FlowKey::default();
            let got = extract(frame, IN_PORT, &mut key);
            n += 1;
            match (got, f.get("drop_stage").map(text)) {
                (Err(r), Some("extract")) => m.check(format!("{what}: drop"), r.name(), text(&f["drop"])),
                (Ok(_), Some("extract")) => m.fail(format!("{what}: accepted, expected drop {}", f["drop"])),
                (Err(r), _) => m.fail(format!("{what}: dropped as {}, expected accepted", r.name())),
                (Ok(layout), _) => check_extracted(&mut m, &what, f, &key, &layout, IN_PORT),
            }
        }
    }
    assert!(n > 100, "only {n} packets");
    m.assert_none("extract_matches_manifest");
}

/// Every Geneve packet of the fixtures, with its manifest facts.
fn geneve_packets() -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    for (name, entries) in files() {
        for (i, (frame, f)) in fixture(&name).into_iter().zip(entries).enumerate() {
            let stage = f.get("drop_stage").map(text);
            if f.get("geneve").is_some() || stage == Some("geneve") || stage == Some("checksum") {
                out.push((format!("{name}#{i} ({})", text(&f["desc"])), frame, f));
            }
        }
    }
    out
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn geneve_decap_matches_manifest() {
    let mut m = Mismatches::default();
    let caps = ChecksumCaps::software();
    let pkts = geneve_packets();
    assert!(pkts.len() >= 8 + 8 + 10, "only {} Geneve packets", pkts.len());
    let mut n_ok = 0;
    for (what, frame, f) in &pkts {
        let mut key = FlowKey::default();
        let layout = match extract(frame, IN_PORT, &mut key) {
            Ok(l) => l,
            Err(r) => {
                m.fail(format!("{what}: extract dropped it as {}", r.name()));
                continue;
            }
        };
        let mut buf = VecBuf::from_packet(frame);
        match (verify_outer_checksums(&buf, &layout, &caps), f.get("drop_stage").map(text)) {
            (Err(r), Some("checksum")) => {
                m.check(format!("{what}: checksum drop"), r.name(), text(&f["drop"]));
                continue;
            }
            (Ok(()), Some("checksum")) => {
                m.fail(format!("{what}: outer checksums accepted, expected {}", f["drop"]));
                continue;
            }
            (Err(r), _) => m.fail(format!("{what}: outer checksums refused: {}", r.name())),
            (Ok(()), _) => {}
        }
        let got = geneve_decap(&mut buf, &layout);
        let meta: GeneveMeta = match (got, f.get("drop").map(text)) {
            (Err(r), Some(want)) => {
                m.check(format!("{what}: drop"), r.name(), want);
                m.check(format!("{what}: unchanged after a refused decap"), buf.data(), &frame[..]);
                continue;
            }
            (Ok(meta), Some(want)) => {
                m.fail(format!("{what}: decapsulated ({meta:?}), expected drop {want}"));
                continue;
            }
            (Err(r), None) => {
                m.fail(format!("{what}: dropped as {}, expected decap", r.name()));
                continue;
            }
            (Ok(meta), None) => meta,
        };
        let g = &f["geneve"];
        m.check(format!("{what}: vni"), meta.vni, num(&g["vni"]) as u32);
        m.check(format!("{what}: ingress key"), meta.ingress_key, num(&g["ingress"]) as u16);
        m.check(format!("{what}: egress key"), meta.egress_key, num(&g["egress"]) as u16);
        m.check(format!("{what}: outer src"), meta.outer_src, ip(text(&f["ip_src"])));
        m.check(format!("{what}: outer dst"), meta.outer_dst, ip(text(&f["ip_dst"])));
        let (off, len) = (num(&g["inner_offset"]) as usize, num(&g["inner_len"]) as usize);
        m.check(format!("{what}: inner bytes"), buf.data(), &frame[off..off + len]);

        // The inner frame extracts as the manifest says, with the tunnel fields.
        let mut inner = FlowKey::default();
        match extract(buf.data(), IN_PORT, &mut inner) {
            Ok(layout) => {
                meta.apply_to(&mut inner);
                let inner_what = format!("{what} inner");
                let mut want = expected_key(&g["inner"], IN_PORT);
                want.tun_vni = meta.vni;
                want.tun_ingress_key = num(&g["ingress"]) as u16;
                want.tun_egress_key = num(&g["egress"]) as u16;
                want.tun_src = ip16(text(&f["ip_src"]));
                want.tun_dst = ip16(text(&f["ip_dst"]));
                for d in key_diff(&inner, &want) {
                    m.fail(format!("{inner_what}: {d}"));
                }
                m.check(format!("{inner_what}: l3"), usize::from(layout.l3), num(&g["inner"]["l3_offset"]) as usize);
            }
            Err(r) => m.fail(format!("{what}: inner frame dropped as {}", r.name())),
        }
        n_ok += 1;
    }
    assert!(n_ok >= 15, "only {n_ok} packets decapsulated");
    assert!(pkts.len() - n_ok >= 12, "only {} Geneve drops checked", pkts.len() - n_ok);
    m.assert_none("geneve_decap_matches_manifest");
}

/// An inner frame to encapsulate, with the VNI and keys to send it with.
struct EncapCase {
    what: String,
    inner: Vec<u8>,
    vni: u32,
    ingress: u16,
    egress: u16,
}

fn encap_cases() -> Vec<EncapCase> {
    let mut out = Vec::new();
    // The inner frames and keys scapy made for geneve_ovn.pcap.
    for (what, frame, f) in geneve_packets() {
        let g = &f["geneve"];
        if f.get("drop").is_some() || g.get("ingress").is_none() {
            continue;
        }
        let (off, len) = (num(&g["inner_offset"]) as usize, num(&g["inner_len"]) as usize);
        out.push(EncapCase {
            what,
            inner: frame[off..off + len].to_vec(),
            vni: num(&g["vni"]) as u32,
            ingress: num(&g["ingress"]) as u16,
            egress: num(&g["egress"]) as u16,
        });
    }
    // Every valid plain frame, with keys at the edges of their ranges.
    let edges: [(u32, u16, u16); 4] = [(1, 1, 1), (0xff_ffff, 0x7fff, 0xffff), (0x800, 0x4000, 0x8000), (5, 0, 0)];
    let mut j = 0;
    for name in ["vlan.pcap", "arp.pcap", "ipv4.pcap", "ipv6.pcap"] {
        for (i, frame) in fixture(name).into_iter().enumerate() {
            let (vni, ingress, egress) = edges[j % edges.len()];
            j += 1;
            out.push(EncapCase { what: format!("{name}#{i}"), inner: frame, vni, ingress, egress });
        }
    }
    out
}

fn tunnel(v6: bool, vni: u32) -> GeneveTunnel {
    let (src_ip, dst_ip) =
        if v6 { (ip("2001:db8:ffff::1"), ip("2001:db8:ffff::2")) } else { (ip("192.0.2.1"), ip("192.0.2.2")) };
    GeneveTunnel::new(GeneveTunnelConfig {
        src_mac: mac("02:c0:00:00:00:01"),
        dst_mac: mac("02:c0:00:00:00:02"),
        src_ip,
        dst_ip,
        vni,
        ttl: 64,
        dst_port: 6081,
    })
    .unwrap()
}

/// The last occurrence of a tshark field (the innermost header), if any.
fn last<'a>(p: &'a std::collections::BTreeMap<String, Vec<String>>, field: &str) -> Option<&'a str> {
    p.get(field).and_then(|v| v.last()).map(String::as_str)
}

#[test]
fn geneve_encap_dissects_in_tshark() {
    require_tshark();
    let mut m = Mismatches::default();
    let caps = ChecksumCaps::software();
    let cases = encap_cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut frames = Vec::new();
    let mut meta = Vec::new();
    for c in &cases {
        for v6 in [false, true] {
            let what = format!("{} over IPv{}", c.what, if v6 { 6 } else { 4 });
            let mut inner_key = FlowKey::default();
            // Malformed-looking inner frames are still carried as bytes; the hash only picks the port.
            let _ = extract(&c.inner, IN_PORT, &mut inner_key);
            let mut buf = VecBuf::from_packet(&c.inner);
            if let Err(r) = geneve_encap(&mut buf, &tunnel(v6, c.vni), c.ingress, c.egress, inner_key.hash(), &caps) {
                m.fail(format!("{what}: encap refused: {}", r.name()));
                continue;
            }
            let outer = buf.data().to_vec();
            // Our own decap takes it back to the same bytes and keys.
            let mut key = FlowKey::default();
            match extract(&outer, IN_PORT, &mut key) {
                Ok(layout) => {
                    if let Err(r) = verify_outer_checksums(&buf, &layout, &caps) {
                        m.fail(format!("{what}: our checksums fail our own check: {}", r.name()));
                    }
                    match geneve_decap(&mut buf, &layout) {
                        Ok(g) => {
                            m.check(
                                format!("{what}: decap keys"),
                                (g.vni, g.ingress_key, g.egress_key),
                                (c.vni, c.ingress, c.egress),
                            );
                            m.check(format!("{what}: decap bytes"), buf.data(), &c.inner[..]);
                        }
                        Err(r) => m.fail(format!("{what}: our decap refuses our encap: {}", r.name())),
                    }
                }
                Err(r) => m.fail(format!("{what}: extract refuses our encap: {}", r.name())),
            }
            frames.push(outer);
            meta.push((what, c, v6));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encap.pcap");
    write_pcap(&path, &frames);
    let fields = [
        "eth.src",
        "eth.dst",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "ip.checksum.status",
        "ip.flags.df",
        "udp.srcport",
        "udp.dstport",
        "udp.checksum",
        "udp.checksum.status",
        "geneve.version",
        "geneve.flags.critical",
        "geneve.flags.oam",
        "geneve.proto_type",
        "geneve.vni",
        "geneve.option.class",
        "geneve.option.type",
        "geneve.option.unknown.data",
        "arp.src.proto_ipv4",
        "tcp.srcport",
        "_ws.malformed",
        "_ws.expert.message",
        "_ws.expert.severity",
    ];
    let got = tshark_fields(&path, &fields, &["-o", "udp.check_checksum:TRUE"]);
    m.check("tshark packet count".to_string(), got.len(), frames.len());
    for ((what, c, v6), p) in meta.iter().zip(&got) {
        let first = |f: &str| p.get(f).and_then(|v| v.first()).cloned().unwrap_or_default();
        let all = |f: &str| p.get(f).cloned().unwrap_or_default();
        m.check(format!("{what}: udp.dstport"), first("udp.dstport"), "6081".to_string());
        m.check(format!("{what}: udp.srcport >= 49152"), tshark_num(&first("udp.srcport")) >= 49152, true);
        m.check(format!("{what}: geneve.version"), first("geneve.version"), "0".to_string());
        m.check(format!("{what}: geneve.flags.critical"), first("geneve.flags.critical"), "1".to_string());
        m.check(format!("{what}: geneve.flags.oam"), first("geneve.flags.oam"), "0".to_string());
        m.check(format!("{what}: geneve.proto_type"), tshark_num(&first("geneve.proto_type")), 0x6558);
        m.check(format!("{what}: geneve.vni"), tshark_num(&first("geneve.vni")), u64::from(c.vni));
        m.check(format!("{what}: geneve.option.class"), all("geneve.option.class"), vec!["0x0102".to_string()]);
        m.check(format!("{what}: geneve.option.type"), all("geneve.option.type"), vec!["0x80".to_string()]);
        let data = u32::from(c.ingress) << 16 | u32::from(c.egress);
        m.check(format!("{what}: OVN option data"), all("geneve.option.unknown.data"), vec![format!("{data:08x}")]);
        // Outer IPv4 header checksum good (1 = PROTO_CHECKSUM_E_GOOD); the UDP
        // checksum is 0 over IPv4 (RFC 8926 §3.3) and good over IPv6.
        if *v6 {
            m.check(format!("{what}: outer ipv6.src"), first("ipv6.src"), "2001:db8:ffff::1".to_string());
            m.check(format!("{what}: outer udp.checksum.status"), first("udp.checksum.status"), "1".to_string());
        } else {
            m.check(format!("{what}: outer ip.src"), first("ip.src"), "192.0.2.1".to_string());
            m.check(format!("{what}: outer ip.checksum.status"), first("ip.checksum.status"), "1".to_string());
            m.check(format!("{what}: outer ip.flags.df"), first("ip.flags.df"), "1".to_string());
            m.check(format!("{what}: outer udp.checksum"), tshark_num(&first("udp.checksum")), 0);
        }
        for s in all("ip.checksum.status") {
            m.check(format!("{what}: every ip.checksum.status"), s, "1".to_string());
        }
        if p.contains_key("_ws.malformed") || all("_ws.expert.severity").iter().any(|s| tshark_num(s) >= 0x60_0000) {
            m.fail(format!("{what}: tshark complains: {:?}", all("_ws.expert.message")));
        }
        // The inner frame, as tshark dissects it, is the original one.
        let inner_eth = p.get("eth.src").and_then(|v| v.get(1)).cloned().unwrap_or_default();
        m.check(format!("{what}: inner eth.src"), inner_eth, fmt_mac(&c.inner[6..12]));
        let inner_dst = p.get("eth.dst").and_then(|v| v.get(1)).cloned().unwrap_or_default();
        m.check(format!("{what}: inner eth.dst"), inner_dst, fmt_mac(&c.inner[0..6]));
        let mut k = FlowKey::default();
        if extract(&c.inner, IN_PORT, &mut k).is_ok() {
            match k.dl_type {
                0x0800 => m.check(format!("{what}: inner ip.src"), last(p, "ip.src").map(ip16), Some(k.nw_src)),
                0x86dd => m.check(format!("{what}: inner ipv6.src"), last(p, "ipv6.src").map(ip16), Some(k.nw_src)),
                0x0806 => m.check(
                    format!("{what}: inner arp.src.proto_ipv4"),
                    last(p, "arp.src.proto_ipv4").map(ip16),
                    Some(k.nw_src),
                ),
                _ => {}
            }
            if k.nw_proto == 6 && k.nw_frag == 0 {
                m.check(
                    format!("{what}: inner tcp.srcport"),
                    last(p, "tcp.srcport").map(tshark_num),
                    Some(u64::from(k.tp_src)),
                );
            }
            if k.nw_proto == 17 && k.nw_frag & FLOW_NW_FRAG_LATER == 0 {
                m.check(
                    format!("{what}: inner udp.srcport"),
                    last(p, "udp.srcport").map(tshark_num),
                    Some(u64::from(k.tp_src)),
                );
            }
        }
    }
    m.assert_none("geneve_encap_dissects_in_tshark");
}

fn fmt_mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// TCIs pushed in the VLAN tests: PCP, DEI and VID edges.
const PUSHED: [(u16, u16); 4] = [(0x8100, 0x0064), (0x8100, 0xf000 | 4094), (0x88a8, 0x2000 | 200), (0x8100, 0x0000)];

#[test]
fn vlan_push_pop_restores_every_frame() {
    let mut m = Mismatches::default();
    let mut n = 0;
    for (name, entries) in files() {
        for (i, (frame, f)) in fixture(&name).iter().zip(&entries).enumerate() {
            for (j, &(tpid, tci)) in PUSHED.iter().enumerate() {
                let what = format!("{name}#{i} push {j} ({tpid:#06x}, {tci:#06x})");
                let mut buf = VecBuf::from_packet(frame);
                if let Err(r) = vlan_push(&mut buf, tpid, tci) {
                    // Only a frame without a whole Ethernet header may be refused.
                    m.check(format!("{what}: refused"), (r.name(), frame.len() < 14), ("eth_truncated", true));
                    m.check(format!("{what}: unchanged"), buf.data(), &frame[..]);
                    continue;
                }
                let d = buf.data();
                m.check(format!("{what}: length"), d.len(), frame.len() + 4);
                m.check(format!("{what}: MACs"), &d[..12], &frame[..12]);
                m.check(
                    format!("{what}: tag"),
                    &d[12..16],
                    &[(tpid >> 8) as u8, tpid as u8, (tci >> 8) as u8, tci as u8][..],
                );
                m.check(format!("{what}: rest"), &d[16..], &frame[12..]);
                // The pushed tag becomes the outer tag of the flow key; the old outer tag moves inward.
                if f.get("drop").is_none() {
                    let mut k0 = FlowKey::default();
                    let mut k1 = FlowKey::default();
                    let before = extract(frame, IN_PORT, &mut k0);
                    let after = extract(d, IN_PORT, &mut k1);
                    let n_tags = f["vlan"].as_array().map_or(0, Vec::len);
                    match (before, after) {
                        (Ok(_), Ok(_)) if n_tags < 2 => {
                            let mut want = k0;
                            want.vlan_tpid = tpid;
                            want.vlan_tci = [tci | VLAN_CFI, k0.vlan_tci[0]];
                            for d in key_diff(&k1, &want) {
                                m.fail(format!("{what}: extract after push: {d}"));
                            }
                        }
                        (Ok(_), Err(r)) if n_tags >= 2 => {
                            m.check(format!("{what}: third tag"), r.name(), "too_many_vlan_tags")
                        }
                        (b, a) => {
                            m.fail(format!("{what}: extract before {:?}, after {:?}", b.map(|_| ()), a.map(|_| ())))
                        }
                    }
                }
                match vlan_pop(&mut buf) {
                    Ok(t) => m.check(format!("{what}: popped TCI"), t, tci),
                    Err(r) => m.fail(format!("{what}: pop refused: {}", r.name())),
                }
                m.check(format!("{what}: push+pop"), buf.data(), &frame[..]);
                n += 1;
            }
        }
    }
    assert!(n > 400, "only {n} push/pop pairs");
    m.assert_none("vlan_push_pop_restores_every_frame");
}

#[test]
fn vlan_push_dissects_in_tshark() {
    require_tshark();
    let mut m = Mismatches::default();
    let mut frames = Vec::new();
    let mut cases = Vec::new();
    for (name, entries) in files() {
        for (i, (frame, f)) in fixture(&name).iter().zip(&entries).enumerate() {
            if f.get("drop").is_some() {
                continue;
            }
            let (tpid, tci) = PUSHED[i % PUSHED.len()];
            let mut buf = VecBuf::from_packet(frame);
            vlan_push(&mut buf, tpid, tci).unwrap();
            frames.push(buf.data().to_vec());
            cases.push((format!("{name}#{i} push ({tpid:#06x}, {tci:#06x})"), tpid, tci, f.clone()));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vlan.pcap");
    write_pcap(&path, &frames);
    let fields = [
        "eth.type",
        "eth.src",
        "vlan.id",
        "vlan.priority",
        "vlan.dei",
        "ieee8021ad.id",
        "ieee8021ad.priority",
        "ieee8021ad.dei",
        "ip.src",
        "ipv6.src",
        "_ws.malformed",
    ];
    let got = tshark_fields(&path, &fields, &[]);
    m.check("tshark packet count".to_string(), got.len(), frames.len());
    for ((what, tpid, tci, f), p) in cases.iter().zip(&got) {
        let first = |k: &str| p.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
        m.check(format!("{what}: eth.type"), tshark_num(&first("eth.type")), u64::from(*tpid));
        let prefix = if *tpid == 0x88a8 { "ieee8021ad" } else { "vlan" };
        m.check(format!("{what}: {prefix}.id"), tshark_num(&first(&format!("{prefix}.id"))), u64::from(tci & 0xfff));
        m.check(
            format!("{what}: {prefix}.priority"),
            tshark_num(&first(&format!("{prefix}.priority"))),
            u64::from(tci >> 13),
        );
        m.check(
            format!("{what}: {prefix}.dei"),
            tshark_num(&first(&format!("{prefix}.dei"))),
            u64::from((tci >> 12) & 1),
        );
        m.check(format!("{what}: eth.src"), first("eth.src"), text(&f["eth_src"]).to_string());
        if let Some(s) = f.get("ip_src") {
            let field = if num(&f["eth_type"]) == 0x0800 { "ip.src" } else { "ipv6.src" };
            m.check(format!("{what}: {field}"), first(field), text(s).to_string());
        }
        if p.contains_key("_ws.malformed") {
            m.fail(format!("{what}: tshark finds it malformed"));
        }
    }
    m.assert_none("vlan_push_dissects_in_tshark");
}

/// `pcap-fixtures/check.sh`: tshark agrees with the manifest on every packet.
#[test]
fn fixtures_check_sh_passes() {
    require_tshark();
    let script = fixtures_dir().join("check.sh");
    let out = std::process::Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
