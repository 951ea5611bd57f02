#!/usr/bin/python3
"""Generate Petrel's pcap fixtures and their manifest.

Run with Debian's interpreter, which has scapy 2.5:

    /usr/bin/python3 pcap-fixtures/make.py

Everything is fixed (addresses, payloads, IP ids, sequence numbers,
timestamps), so re-running it rewrites byte-identical files. `check.sh`
then asks tshark whether every packet dissects as `manifest.json` says.

The manifest holds, for every file and every packet index, the facts a flow
key extractor must find (see README.md for the schema). The facts of valid
packets are read back from the written bytes by `facts()` below, a small
parser independent of both scapy's field values and Petrel's; only the drop
reasons of malformed packets (`petrel_dataplane::drop::DropReason::name()`)
and tshark's expected complaints are typed by hand.

    /usr/bin/python3 pcap-fixtures/make.py OUT_DIR    # write elsewhere (check.sh --regen)
"""

import ipaddress
import json
import os
import struct
import sys
from decimal import Decimal

from scapy.all import (  # noqa: F401  (scapy's star-module re-exports)
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPOption_EOL,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrSegmentRouting,
    PadN,
    PcapWriter,
    Raw,
    RouterAlert,
    conf,
)
from scapy.contrib.geneve import GENEVE, GeneveOptions

HERE = os.path.dirname(os.path.abspath(__file__))
# 2023-11-14 22:13:20 UTC; packet i of a file is stamped EPOCH + i ms.
EPOCH = 1700000000

# ---------------------------------------------------------------- addresses
# Locally administered MACs; RFC 5737 / RFC 3849 documentation prefixes.
POD_A = "02:00:00:00:00:0a"
POD_B = "02:00:00:00:00:0b"
POD_C = "02:00:00:00:00:0c"
ROUTER = "02:00:00:00:00:01"
CH1_MAC = "02:c0:00:00:00:01"  # chassis 1 tunnel interface
CH2_MAC = "02:c0:00:00:00:02"  # chassis 2 tunnel interface
BCAST = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"

A4, B4, C4 = "10.0.0.10", "10.0.0.11", "10.0.0.12"
GW4 = "10.0.0.1"
CH1_4, CH2_4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8:0:1::a", "2001:db8:0:1::b"
CH1_6, CH2_6 = "2001:db8:ffff::1", "2001:db8:ffff::2"
LL_A, LL_B = "fe80::aff:fe00:a", "fe80::aff:fe00:b"

OVN_CLASS = 0x0102
OVN_TYPE = 0x80
GENEVE_PORT = 6081
TEB = 0x6558  # Transparent Ethernet Bridging


def payload(n, seed=0):
    """n fixed payload bytes (a visible counting pattern)."""
    return bytes((seed + i) & 0xFF for i in range(n))


def ovn_opt(ingress, egress, reserved_bit=0):
    """OVN's Geneve option: class 0x0102, type 0x80, 4 bytes of data.

    Data = 1 reserved bit, 15-bit logical ingress port key, 16-bit logical
    egress port key (ovn-architecture(7), "Tunnel Encapsulations").
    """
    assert 0 <= ingress < 1 << 15 and 0 <= egress < 1 << 16
    word = (reserved_bit << 31) | (ingress << 16) | egress
    return GeneveOptions(classid=OVN_CLASS, type=OVN_TYPE, length=1, data=struct.pack("!I", word))


def geneve(vni, options, critical, inner):
    """A Geneve header with explicit lengths (scapy 2.5 masks optionlen with 0x2f)."""
    optlen = sum(4 + len(o.data) for o in options) // 4
    return (
        GENEVE(version=0, optionlen=optlen, oam=0, critical=critical, proto=TEB, vni=vni, options=options)
        / inner
    )


def udp4_outer(sport, inner_geneve, csum=None):
    """Outer Ethernet/IPv4/UDP from chassis 1 to chassis 2 (DF set, as OVS does)."""
    udp = UDP(sport=sport, dport=GENEVE_PORT)
    if csum is not None:
        udp.chksum = csum
    return Ether(src=CH1_MAC, dst=CH2_MAC) / IP(src=CH1_4, dst=CH2_4, ttl=64, flags="DF", id=0) / udp / inner_geneve


def udp6_outer(sport, inner_geneve):
    """Outer Ethernet/IPv6/UDP from chassis 2 to chassis 1."""
    return (
        Ether(src=CH2_MAC, dst=CH1_MAC)
        / IPv6(src=CH2_6, dst=CH1_6, hlim=64)
        / UDP(sport=sport, dport=GENEVE_PORT)
        / inner_geneve
    )


# ---------------------------------------------------------------- facts
def mac(b):
    return ":".join("%02x" % x for x in b)


def mac_bytes(s):
    return bytes.fromhex(s.replace(":", ""))


def ip4(b):
    return str(ipaddress.IPv4Address(bytes(b)))


def ip6(b):
    return str(ipaddress.IPv6Address(bytes(b)))


EXT_HDRS = {0, 43, 44, 60}


def facts(frame, geneve=True):
    """The flow-key facts of a valid frame, read straight from its bytes.

    This is deliberately an independent little parser (not scapy's field
    values) so the manifest says what the bytes say; scapy built the bytes.
    """
    f = {"len": len(frame)}
    f["eth_dst"], f["eth_src"] = mac(frame[0:6]), mac(frame[6:12])
    off, eth_type = 14, struct.unpack("!H", frame[12:14])[0]
    vlans = []
    while eth_type in (0x8100, 0x88A8) and len(vlans) < 2:
        tci = struct.unpack("!H", frame[off : off + 2])[0]
        vlans.append({"tpid": eth_type, "pcp": tci >> 13, "dei": (tci >> 12) & 1, "vid": tci & 0xFFF})
        eth_type = struct.unpack("!H", frame[off + 2 : off + 4])[0]
        off += 4
    f["vlan"] = vlans
    f["eth_type"] = eth_type
    f["l3_offset"] = off
    if eth_type == 0x0806:
        a = frame[off:]
        f["arp"] = {
            "op": struct.unpack("!H", a[6:8])[0],
            "sha": mac(a[8:14]),
            "spa": ip4(a[14:18]),
            "tha": mac(a[18:24]),
            "tpa": ip4(a[24:28]),
        }
        return f
    if eth_type == 0x0800:
        h = frame[off:]
        ihl = (h[0] & 0xF) * 4
        f["ip_src"], f["ip_dst"] = ip4(h[12:16]), ip4(h[16:20])
        f["ip_proto"], f["ip_ttl"], f["ip_tos"] = h[9], h[8], h[1]
        fo = struct.unpack("!H", h[6:8])[0]
        mf, offset = (fo >> 13) & 1, fo & 0x1FFF
        f["frag"] = "later" if offset else ("first" if mf else "no")
        f["l4_offset"] = off + ihl
        proto, l4 = h[9], h[ihl:]
    elif eth_type == 0x86DD:
        h = frame[off:]
        f["ip_src"], f["ip_dst"] = ip6(h[8:24]), ip6(h[24:40])
        f["ip_ttl"] = h[7]
        f["ip_tos"] = ((h[0] & 0xF) << 4) | (h[1] >> 4)
        f["ipv6_label"] = struct.unpack("!I", h[0:4])[0] & 0xFFFFF
        nh, p, frag = h[6], 40, "no"
        exts = []
        while nh in EXT_HDRS:
            exts.append(nh)
            if nh == 44:
                fo = struct.unpack("!H", h[p + 2 : p + 4])[0]
                offset, m = fo >> 3, fo & 1
                frag = "later" if offset else "first" if m else "atomic"
                nh, p = h[p], p + 8
                if offset:
                    break
            else:
                nh, p = h[p], p + 8 + h[p + 1] * 8
        f["ip_proto"] = nh
        f["ipv6_ext"] = exts
        f["frag"] = frag
        f["l4_offset"] = off + p
        proto, l4 = nh, h[p:]
    else:
        return f
    if f["frag"] == "later":
        return f
    if proto in (6, 17):
        f["sport"], f["dport"] = struct.unpack("!HH", l4[0:4])
        if proto == 6:
            f["tcp_flags"] = struct.unpack("!H", l4[12:14])[0] & 0x0FFF
            f["l7_offset"] = f["l4_offset"] + (l4[12] >> 4) * 4
        else:
            f["l7_offset"] = f["l4_offset"] + 8
        if proto == 17 and f["dport"] == GENEVE_PORT and geneve:
            f["geneve"] = geneve_facts(frame, f["l4_offset"] + 8)
    elif proto in (1, 58):
        f["icmp_type"], f["icmp_code"] = l4[0], l4[1]
        f["l7_offset"] = f["l4_offset"] + 8
        if proto == 58 and l4[0] in (135, 136):
            nd = {"target": ip6(l4[8:24])}
            o = 24
            while o + 8 <= len(l4):
                t, ln = l4[o], l4[o + 1] * 8
                if t == 1:
                    nd["sll"] = mac(l4[o + 2 : o + 8])
                elif t == 2:
                    nd["tll"] = mac(l4[o + 2 : o + 8])
                o += ln
            f["nd"] = nd
    return f


def geneve_facts(frame, g):
    """Geneve header facts; `inner_*` say where scapy put the inner frame."""
    optlen = (frame[g] & 0x3F) * 4
    out = {
        "version": frame[g] >> 6,
        "oam": bool(frame[g + 1] & 0x80),
        "critical": bool(frame[g + 1] & 0x40),
        "proto": struct.unpack("!H", frame[g + 2 : g + 4])[0],
        "vni": int.from_bytes(frame[g + 4 : g + 7], "big"),
        "options": [],
        "inner_offset": g + 8 + optlen,
        "inner_len": len(frame) - (g + 8 + optlen),
    }
    o, end = g + 8, g + 8 + optlen
    while o < end:
        cls, typ, ln = struct.unpack("!HBB", frame[o : o + 4])
        data = frame[o + 4 : o + 4 + (ln & 0x1F) * 4]
        out["options"].append({"class": cls, "type": typ, "data": data.hex()})
        if cls == OVN_CLASS and typ == OVN_TYPE and len(data) == 4:
            word = struct.unpack("!I", data)[0]
            out["ingress"] = (word >> 16) & 0x7FFF
            out["egress"] = word & 0xFFFF
        o += 4 + (ln & 0x1F) * 4
    out["inner"] = facts(frame[out["inner_offset"] :])
    return out


# ---------------------------------------------------------------- fixtures
def fx_geneve():
    """Geneve carrying OVN's option, outer IPv4 and IPv6; inner IPv4/UDP, ARP, TCP, IPv6."""
    inner_udp = (
        Ether(src=POD_A, dst=POD_B)
        / IP(src=A4, dst=B4, ttl=64, id=0x0101)
        / UDP(sport=40000, dport=40053)
        / Raw(payload(24, 1))
    )
    inner_arp = Ether(src=POD_A, dst=BCAST) / ARP(op=1, hwsrc=POD_A, psrc=A4, hwdst=ZERO_MAC, pdst=B4)
    inner_arp_reply = Ether(src=POD_B, dst=POD_A) / ARP(op=2, hwsrc=POD_B, psrc=B4, hwdst=POD_A, pdst=A4)
    inner_tcp = (
        Ether(src=POD_B, dst=POD_C)
        / IP(src=B4, dst=C4, ttl=63, id=0x0202)
        / TCP(sport=43210, dport=8080, flags="PA", seq=1000, ack=2000, window=512)
        / Raw(payload(16, 2))
    )
    inner_v6 = (
        Ether(src=POD_A, dst=POD_B)
        / IPv6(src=A6, dst=B6, hlim=64)
        / UDP(sport=45353, dport=45354)
        / Raw(payload(12, 3))
    )
    extra = GeneveOptions(classid=0x0103, type=0x01, length=2, data=payload(8, 0x40))  # non-critical
    unknown_crit = GeneveOptions(classid=0xFFFF, type=0x85, length=1, data=b"\xde\xad\xbe\xef")
    pkts = [
        ("IPv4 outer (UDP csum 0, as OVS sends), VNI 7, OVN 3->5, inner IPv4/UDP",
         udp4_outer(49152, geneve(7, [ovn_opt(3, 5)], 1, inner_udp), csum=0), None),
        ("IPv4 outer, VNI 7, OVN 0x7fff->0x8001 (multicast egress), inner ARP request",
         udp4_outer(49153, geneve(7, [ovn_opt(0x7FFF, 0x8001)], 1, inner_arp)), None),
        ("IPv6 outer, VNI 0xabcdef, OVN 1->2, inner IPv4/UDP",
         udp6_outer(50000, geneve(0xABCDEF, [ovn_opt(1, 2)], 1, inner_udp)), None),
        ("IPv6 outer, VNI 1, OVN 2->1, inner ARP reply",
         udp6_outer(50001, geneve(1, [ovn_opt(2, 1)], 1, inner_arp_reply)), None),
        ("IPv4 outer, VNI 42, extra non-critical option (class 0x0103 type 0x01, 8 B) before OVN 4->6, inner IPv4/TCP",
         udp4_outer(49154, geneve(42, [extra, ovn_opt(4, 6)], 1, inner_tcp)), None),
        ("IPv6 outer, VNI 42, OVN 6->4 then extra non-critical option, inner IPv6/UDP",
         udp6_outer(50002, geneve(42, [ovn_opt(6, 4), extra], 1, inner_v6)), None),
        ("IPv4 outer, VNI 7, OVN option with its reserved bit set (ignored: keys 9->10), inner IPv4/UDP",
         udp4_outer(49155, geneve(7, [ovn_opt(9, 10, reserved_bit=1)], 1, inner_udp)), None),
        ("IPv4 outer, VNI 7, OVN 3->5 plus unknown critical option (class 0xffff type 0x85): decap must drop",
         udp4_outer(49156, geneve(7, [ovn_opt(3, 5), unknown_crit], 1, inner_udp)),
         "geneve_critical_option"),
    ]
    return pkts


def fx_vlan():
    """802.1Q, 802.1ad+802.1Q, priority-tagged."""
    ip_udp = IP(src=A4, dst=B4, id=0x0303) / UDP(sport=1234, dport=5678) / Raw(payload(18, 4))
    return [
        ("802.1Q VID 100 PCP 3, IPv4/UDP",
         Ether(src=POD_A, dst=POD_B, type=0x8100) / Dot1Q(prio=3, vlan=100) / ip_udp, None),
        ("802.1ad S-VID 200 PCP 1 + 802.1Q C-VID 300 PCP 0, IPv4/TCP",
         Ether(src=POD_A, dst=POD_B, type=0x88A8) / Dot1AD(prio=1, vlan=200, type=0x8100) / Dot1Q(vlan=300)
         / IP(src=A4, dst=B4, id=0x0304) / TCP(sport=2222, dport=22, flags="S", seq=7), None),
        ("priority-tagged (VID 0, PCP 5), IPv4 ICMP echo request",
         Ether(src=POD_A, dst=POD_B, type=0x8100) / Dot1Q(prio=5, vlan=0)
         / IP(src=A4, dst=B4, id=0x0305) / ICMP(type=8, id=1, seq=1) / Raw(payload(8, 5)), None),
        ("802.1Q VID 4094 PCP 7 DEI 1, IPv6/UDP",
         Ether(src=POD_B, dst=POD_A, type=0x8100) / Dot1Q(prio=7, id=1, vlan=4094)
         / IPv6(src=B6, dst=A6) / UDP(sport=40547, dport=40546) / Raw(payload(10, 6)), None),
        ("802.1Q VID 10, ARP request (padded to 64 bytes)",
         Ether(src=POD_C, dst=BCAST, type=0x8100) / Dot1Q(vlan=10)
         / ARP(op=1, hwsrc=POD_C, psrc=C4, hwdst=ZERO_MAC, pdst=GW4) / Raw(b"\x00" * 18), None),
    ]


def fx_arp():
    return [
        ("ARP request who-has 10.0.0.11 tell 10.0.0.10 (42 bytes, unpadded)",
         Ether(src=POD_A, dst=BCAST) / ARP(op=1, hwsrc=POD_A, psrc=A4, hwdst=ZERO_MAC, pdst=B4), None),
        ("ARP reply 10.0.0.11 is-at 02:00:00:00:00:0b (padded to 60 bytes)",
         pad(Ether(src=POD_B, dst=POD_A) / ARP(op=2, hwsrc=POD_B, psrc=B4, hwdst=POD_A, pdst=A4), 18), None),
        ("gratuitous ARP request for 10.0.0.12 (spa == tpa, broadcast)",
         Ether(src=POD_C, dst=BCAST) / ARP(op=1, hwsrc=POD_C, psrc=C4, hwdst=ZERO_MAC, pdst=C4), None),
        ("gratuitous ARP reply for 10.0.0.1 (spa == tpa, tha broadcast)",
         Ether(src=ROUTER, dst=BCAST) / ARP(op=2, hwsrc=ROUTER, psrc=GW4, hwdst=BCAST, pdst=GW4), None),
    ]


def fx_ipv4():
    eth = Ether(src=POD_A, dst=ROUTER)
    big = payload(64, 7)
    first = IP(src=A4, dst="198.51.100.7", id=0x1234, flags="MF", frag=0) / UDP(
        sport=33000, dport=9001, len=8 + 64, chksum=0x1111) / Raw(big[:32])
    middle = IP(src=A4, dst="198.51.100.7", id=0x1234, flags="MF", frag=5, proto=17) / Raw(big[32:48])
    later = IP(src=A4, dst="198.51.100.7", id=0x1234, flags=0, frag=7, proto=17) / Raw(big[48:])
    return [
        ("IPv4/TCP SYN 10.0.0.10:40001 -> 198.51.100.7:80",
         eth / IP(src=A4, dst="198.51.100.7", id=1, ttl=64) / TCP(sport=40001, dport=80, flags="S", seq=100,
                                                                   window=64240), None),
        ("IPv4/UDP 10.0.0.10:40002 -> 10.0.0.1:40053, DSCP AF41 ECN 1",
         eth / IP(src=A4, dst=GW4, id=2, tos=0x89) / UDP(sport=40002, dport=40053) / Raw(payload(20, 8)), None),
        ("IPv4 ICMP echo request",
         eth / IP(src=A4, dst=GW4, id=3) / ICMP(type=8, code=0, id=0x77, seq=1) / Raw(payload(32, 9)), None),
        ("IPv4 ICMP echo reply",
         Ether(src=ROUTER, dst=POD_A) / IP(src=GW4, dst=A4, id=4, ttl=255) / ICMP(type=0, code=0, id=0x77, seq=1)
         / Raw(payload(32, 9)), None),
        ("IPv4 with options (Router Alert, NOP x3, EOL; IHL 7), UDP",
         eth / IP(src=A4, dst="224.0.0.22", id=5, ttl=1,
                  options=[IPOption_Router_Alert(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()])
         / UDP(sport=40003, dport=40007) / Raw(payload(8, 10)), None),
        ("IPv4 first fragment (MF, offset 0) carrying the UDP header", eth / first, None),
        ("IPv4 middle fragment (MF, offset 40 B)", eth / middle, None),
        ("IPv4 last fragment (offset 56 B): no ports", eth / later, None),
        ("IPv4/TCP FIN|ACK, TTL 1, 54 bytes + 6 bytes of Ethernet padding (IPv4 total length 40)",
         pad(eth / IP(src=A4, dst="198.51.100.7", id=6, ttl=1) / TCP(sport=40001, dport=80, flags="FA", seq=101,
                                                                      ack=555, window=501), 6), None),
        ("IPv4/TCP SYN with options (MSS, SACK-permitted, timestamps, NOP, window scale): data offset 10",
         eth / IP(src=A4, dst="198.51.100.7", id=7) / TCP(
             sport=40004, dport=443, flags="S", seq=4242, window=64240,
             options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None), ("WScale", 7)]),
         None),
    ]


def fx_ipv6():
    eth = Ether(src=POD_A, dst=POD_B)
    big = payload(48, 11)
    fid = 0xCAFE0001
    udp_first = UDP(sport=33001, dport=9000, len=8 + 48, chksum=0x2222)
    frag_chain = (IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")])
                  / IPv6ExtHdrSegmentRouting(addresses=[B6], segleft=0)
                  / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00\x00\x00\x00")]))
    return [
        ("IPv6/TCP SYN", eth / IPv6(src=A6, dst=B6, hlim=64) / TCP(sport=40100, dport=443, flags="S", seq=9,
                                                                  window=64800), None),
        ("IPv6/UDP, traffic class 0xb8, flow label 0x12345",
         eth / IPv6(src=A6, dst=B6, tc=0xB8, fl=0x12345) / UDP(sport=40101, dport=5001) / Raw(payload(20, 12)),
         None),
        ("ICMPv6 echo request", eth / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=0x99, seq=3)
         / Raw(payload(16, 13)), None),
        ("ND neighbor solicitation for fe80::aff:fe00:b with source link-layer option",
         Ether(src=POD_A, dst="33:33:ff:00:00:0b") / IPv6(src=LL_A, dst="ff02::1:ff00:b", hlim=255)
         / ICMPv6ND_NS(tgt=LL_B) / ICMPv6NDOptSrcLLAddr(lladdr=POD_A), None),
        ("ND neighbor advertisement (S,O) for fe80::aff:fe00:b with target link-layer option",
         Ether(src=POD_B, dst=POD_A) / IPv6(src=LL_B, dst=LL_A, hlim=255)
         / ICMPv6ND_NA(tgt=LL_B, R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=POD_B), None),
        ("hop-by-hop + routing (SRH, segleft 0) + destination options + fragment (first, M=1) + UDP",
         eth / IPv6(src=A6, dst=B6) / frag_chain / IPv6ExtHdrFragment(offset=0, m=1, id=fid)
         / udp_first / Raw(big[:24]), None),
        ("the later fragment of the previous datagram (offset 32 B): no ports",
         eth / IPv6(src=A6, dst=B6) / frag_chain / IPv6ExtHdrFragment(offset=4, m=0, id=fid, nh=17)
         / Raw(big[24:]), None),
        ("hop-by-hop + destination options + UDP (no fragment)",
         eth / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\x00\x00\x00\x00")])
         / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00\x00\x00\x00")]) / UDP(sport=40102, dport=5002)
         / Raw(payload(8, 14)), None),
    ]


def raw_eth(dst, src, etype, body):
    return bytes(Ether(dst=dst, src=src, type=etype)) + bytes(body)


def ip4_fix_csum(hdr):
    """Recompute the checksum over the first 20 bytes, so a header broken on
    purpose is broken in exactly one way."""
    hdr = bytearray(hdr)
    hdr[10:12] = b"\x00\x00"
    s = sum(struct.unpack("!10H", bytes(hdr[:20])))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    hdr[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return bytes(hdr)


def icmp6_fix_csum(ip6):
    """Recompute the ICMPv6 checksum of an IPv6 packet with no extension headers."""
    ip6 = bytearray(ip6)
    ip6[42:44] = b"\x00\x00"
    body = bytes(ip6[40:])
    pseudo = bytes(ip6[8:40]) + struct.pack("!IxxxB", len(body), 58)
    data = pseudo + body + (b"\x00" if len(body) % 2 else b"")
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    ip6[42:44] = struct.pack("!H", ~s & 0xFFFF)
    return bytes(ip6)


def pad(pkt, n):
    """Ethernet padding: n zero bytes after the L3 packet's own length."""
    return Raw(bytes(pkt) + b"\x00" * n)


TSHARK_DEFAULT = object()


def fx_malformed():
    """Each packet is broken in exactly one way; the third element is its drop reason."""
    good_ip = bytes(IP(src=A4, dst=B4, id=0x0404) / UDP(sport=1000, dport=2000) / Raw(payload(12, 15)))
    out = []

    def add(desc, frame, reason, says=TSHARK_DEFAULT, where=TSHARK_DEFAULT, fields=None):
        """`says`/`where`/`fields`: what tshark shows (defaults by reason, see TSHARK_SAYS)."""
        ts = {
            "expert": TSHARK_SAYS.get(reason) if says is TSHARK_DEFAULT else says,
            "malformed_in": TSHARK_MALFORMED_IN.get(reason) if where is TSHARK_DEFAULT else where,
            "fields": fields,
        }
        out.append((desc, Raw(bytes(frame)), reason, {k: v for k, v in ts.items() if v is not None}))

    add("Ethernet truncated to 10 bytes", bytes(Ether(src=POD_A, dst=POD_B) / Raw(payload(46)))[:10],
        "eth_truncated")
    add("802.1Q tag cut off after the TCI (16 bytes: no inner EtherType)",
        bytes(Ether(src=POD_A, dst=POD_B, type=0x8100)) + b"\x00\x64", "vlan_truncated")
    bad_ihl = bytearray(good_ip)
    bad_ihl[0] = 0x44
    add("IPv4 IHL 4 (< 5)", raw_eth(POD_B, POD_A, 0x0800, ip4_fix_csum(bad_ihl)), "ipv4_bad_ihl")
    long_tl = bytearray(good_ip)
    long_tl[2:4] = struct.pack("!H", len(good_ip) + 100)
    add("IPv4 total length 100 bytes more than the frame holds",
        raw_eth(POD_B, POD_A, 0x0800, ip4_fix_csum(long_tl)), "ipv4_bad_total_len")
    v6_in_v4 = bytearray(good_ip)
    v6_in_v4[0] = 0x65
    add("IPv4 header with version 6 in an EtherType 0x0800 frame",
        raw_eth(POD_B, POD_A, 0x0800, ip4_fix_csum(v6_in_v4)), "ipv4_bad_version")
    tcp10 = bytes(TCP(sport=1000, dport=80, flags="S"))[:10]
    add("TCP header truncated to 10 bytes (IPv4 total length agrees)",
        raw_eth(POD_B, POD_A, 0x0800, IP(src=A4, dst=B4, id=0x0405, proto=6) / Raw(tcp10)), "tcp_truncated")
    add("TCP data offset 4 (< 5)",
        raw_eth(POD_B, POD_A, 0x0800, IP(src=A4, dst=B4, id=0x0406) / TCP(sport=1000, dport=80, dataofs=4,
                                                                            flags="S")), "tcp_bad_data_offset")
    add("UDP length 64 > the 20 bytes of IPv4 payload",
        raw_eth(POD_B, POD_A, 0x0800, IP(src=A4, dst=B4, id=0x0407) / UDP(sport=1000, dport=2000, len=64)
                / Raw(payload(12))), "udp_bad_len")
    v6 = bytearray(bytes(IPv6(src=A6, dst=B6) / UDP(sport=1000, dport=2000) / Raw(payload(12))))
    v6[4:6] = struct.pack("!H", 200)
    add("IPv6 payload length 200 > the 20 bytes present", raw_eth(POD_B, POD_A, 0x86DD, v6),
        "ipv6_bad_payload_len")
    # Hop-by-hop header claims 16 bytes (hdr ext len 1) but only 8 are there;
    # payload length agrees with the frame, so only the chain is cut.
    hbh = bytes([17, 1, 1, 4, 0, 0, 0, 0])
    v6cut = bytes(IPv6(src=A6, dst=B6, nh=0, plen=len(hbh))) + hbh
    add("IPv6 hop-by-hop header claims 16 bytes, 8 present (chain cut off)",
        raw_eth(POD_B, POD_A, 0x86DD, v6cut), "ipv6_ext_truncated")
    inner = Ether(src=POD_A, dst=POD_B) / IP(src=A4, dst=B4, id=0x0408) / UDP(sport=1, dport=2) / Raw(payload(8))
    badver = geneve(7, [ovn_opt(3, 5)], 1, inner)
    badver.version = 1
    add("Geneve version 1", udp4_outer(49200, badver), "geneve_bad_version")
    # Opt Len says 64 bytes of options; the UDP payload holds 8 + 8 + 14.
    g = struct.pack("!BBH", 16, 0x40, TEB) + (7).to_bytes(3, "big") + b"\x00" + bytes(ovn_opt(3, 5))
    add("Geneve Opt Len 16 words (64 B), only 22 bytes after the base header",
        udp4_outer(49201, Raw(g + bytes(Ether(src=POD_A, dst=POD_B)))), "geneve_bad_opt_len")
    # Options area is 4 bytes (Opt Len 1) but the one option in it says it has 4 data bytes.
    g = struct.pack("!BBH", 1, 0x40, TEB) + (7).to_bytes(3, "big") + b"\x00" + struct.pack("!HBB", OVN_CLASS,
                                                                                          OVN_TYPE, 1)
    add("Geneve option overrunning the options area (Opt Len 4 B, the option says 8 B)",
        udp4_outer(49202, Raw(g + bytes(inner))), "geneve_bad_option", says="past end of options")

    # ---- more truncations, one per layer ----
    add("IPv4 header cut to 12 bytes", raw_eth(POD_B, POD_A, 0x0800, good_ip[:12]), "ipv4_truncated")
    add("three 802.1Q tags (only two are parsed)",
        Ether(src=POD_A, dst=POD_B, type=0x8100) / Dot1Q(vlan=1, type=0x8100) / Dot1Q(vlan=2, type=0x8100)
        / Dot1Q(vlan=3) / IP(good_ip), "too_many_vlan_tags", fields={"vlan.id": [1, 2, 3]})
    add("ARP cut to 20 bytes", bytes(Ether(src=POD_A, dst=BCAST) / ARP(op=1, hwsrc=POD_A, psrc=A4, pdst=B4))[:34],
        "arp_malformed")
    add("IPv6 header cut to 30 bytes", raw_eth(POD_B, POD_A, 0x86DD, bytes(IPv6(src=A6, dst=B6, nh=59))[:30]),
        "ipv6_truncated")
    v4in6 = bytearray(bytes(IPv6(src=A6, dst=B6) / UDP(sport=1000, dport=2000) / Raw(payload(12))))
    v4in6[0] = 0x40 | (v4in6[0] & 0x0F)
    add("version 4 in an EtherType 0x86dd header", raw_eth(POD_B, POD_A, 0x86DD, v4in6), "ipv6_bad_version")
    add("ICMP echo cut to 4 bytes (IPv4 total length agrees)",
        raw_eth(POD_B, POD_A, 0x0800, IP(src=A4, dst=B4, id=0x0409, proto=1) / Raw(bytes(ICMP(type=8))[:4])),
        "icmp_truncated")
    ns = bytearray(bytes(IPv6(src=LL_A, dst="ff02::1:ff00:b", hlim=255) / ICMPv6ND_NS(tgt=LL_B)
                         / ICMPv6NDOptSrcLLAddr(lladdr=POD_A)))
    ns[40 + 24 + 1] = 0  # the option's length: 0 words, which RFC 4861 §4.6 says to drop
    add("ND neighbor solicitation whose source link-layer option has length 0",
        raw_eth("33:33:ff:00:00:0b", POD_A, 0x86DD, icmp6_fix_csum(ns)), "nd_malformed")
    add("UDP header cut to 4 bytes (IPv4 total length agrees)",
        raw_eth(POD_B, POD_A, 0x0800, IP(src=A4, dst=B4, id=0x040A, proto=17) / Raw(bytes(UDP(sport=1, dport=2))[:4])),
        "udp_truncated")
    add("Geneve header cut to 4 bytes (UDP length agrees)",
        udp4_outer(49203, Raw(bytes(geneve(7, [], 0, Raw()))[:4])), "geneve_truncated")

    short_tl = bytearray(good_ip)
    short_tl[2:4] = struct.pack("!H", 16)
    add("IPv4 total length 16, below its 20-byte header", raw_eth(POD_B, POD_A, 0x0800, ip4_fix_csum(short_tl)),
        "ipv4_bad_total_len", says="Bogus IP length")
    add("TCP data offset 15 (60 bytes) with a 20-byte TCP header and no payload",
        raw_eth(POD_B, POD_A, 0x0800, IP(src=A4, dst=B4, id=0x040B) / TCP(sport=1000, dport=80, dataofs=15,
                                                                            flags="S")), "tcp_bad_data_offset",
        says="does not contain a full TCP header", where="TCP")
    add("UDP length 4 (< 8)",
        raw_eth(POD_B, POD_A, 0x0800, IP(src=A4, dst=B4, id=0x040C) / UDP(sport=1000, dport=2000, len=4)
                / Raw(payload(12))), "udp_bad_len", says="Bad length value 4 < 8")
    add("ARP with hardware type 6 (IEEE 802), not Ethernet",
        Ether(src=POD_A, dst=BCAST) / ARP(hwtype=6, hwlen=6, op=1, hwsrc=mac_bytes(POD_A), psrc=A4, hwdst=b"\x00" * 6,
                                          pdst=B4), "arp_malformed", says=None, where=None,
        fields={"arp.hw.type": [6], "arp.opcode": [1]})
    add("IPv6 with hop-by-hop + 8 destination-options headers before UDP (9 > the 8 walked)",
        Ether(src=POD_A, dst=POD_B) / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
        / UDP(sport=1000, dport=2000) / Raw(payload(8)), "ipv6_too_many_ext",
        fields={"udp.srcport": [1000], "udp.dstport": [2000]})
    add("ND neighbor solicitation with two source link-layer address options",
        Ether(src=POD_A, dst="33:33:ff:00:00:0b") / IPv6(src=LL_A, dst="ff02::1:ff00:b", hlim=255)
        / ICMPv6ND_NS(tgt=LL_B) / ICMPv6NDOptSrcLLAddr(lladdr=POD_A) / ICMPv6NDOptSrcLLAddr(lladdr=POD_C),
        "nd_malformed", says=None, fields={"icmpv6.opt.linkaddr": [POD_A, POD_C]})

    # ---- outer checksums: wrong, found by verify_outer_checksums before decap ----
    bad4 = bytearray(bytes(udp4_outer(49210, geneve(7, [ovn_opt(3, 5)], 1, inner))))
    bad4[14 + 10] ^= 0xFF
    add("Geneve over IPv4 with a wrong outer IPv4 header checksum", bad4, "ipv4_bad_checksum",
        says="Bad checksum")
    bad6 = bytearray(bytes(udp6_outer(50010, geneve(7, [ovn_opt(3, 5)], 1, inner))))
    bad6[14 + 40 + 6] ^= 0xFF
    add("Geneve over IPv6 with a wrong outer UDP checksum", bad6, "udp_bad_checksum", says="Bad checksum")

    # ---- well-formed Geneve that OVN never sends: decap drops by policy ----
    oam = geneve(7, [ovn_opt(3, 5)], 1, inner)
    oam.oam = 1
    add("Geneve OAM (O bit) packet", udp4_outer(49204, oam), "geneve_oam", fields={"geneve.flags.oam": [1]})
    v4proto = GENEVE(version=0, optionlen=2, critical=1, proto=0x0800, vni=7, options=[ovn_opt(3, 5)]) / inner[IP]
    add("Geneve protocol type 0x0800 (IPv4 payload, not Ethernet)", udp4_outer(49205, v4proto),
        "geneve_bad_protocol", fields={"geneve.proto_type": [0x0800], "ip.src": [CH1_4, A4]})
    add("Geneve without OVN's option", udp4_outer(49206, geneve(7, [], 0, inner)), "geneve_no_ovn_option")
    big_ovn = GeneveOptions(classid=OVN_CLASS, type=OVN_TYPE, length=2, data=struct.pack("!II", 3 << 16 | 5, 0))
    add("Geneve with OVN's option 8 data bytes long (must be 4)",
        udp4_outer(49207, geneve(7, [big_ovn], 1, inner)), "geneve_bad_option", says=None,
        fields={"geneve.option.class": [OVN_CLASS], "geneve.option.unknown.data": ["0003000500000000"]})
    add("Geneve with OVN's option twice", udp4_outer(49208, geneve(7, [ovn_opt(3, 5), ovn_opt(4, 6)], 1, inner)),
        "geneve_bad_option", says=None, fields={"geneve.option.class": [OVN_CLASS, OVN_CLASS],
                                                 "geneve.option.unknown.data": ["00030005", "00040006"]})
    add("Geneve whose inner frame is 10 bytes",
        udp4_outer(49209, geneve(7, [ovn_opt(3, 5)], 1, Raw(bytes(inner)[:10]))), "geneve_inner_truncated")
    return out


def fx_mixed():
    """64 valid frames of every kind, for replay tests."""
    out = []
    for i in range(64):
        k = i % 8
        n = i // 8
        src_mac = "02:00:00:00:01:%02x" % i
        sip, dip = "10.1.%d.%d" % (n, i + 1), "10.2.%d.%d" % (n, 64 - i)
        sip6, dip6 = "2001:db8:1::%x" % (i + 1), "2001:db8:2::%x" % (64 - i)
        sport, dport = 40000 + i * 7, 30000 + i
        body = Raw(payload(8 + i % 24, i))
        if k == 0:
            p = Ether(src=src_mac, dst=POD_B) / IP(src=sip, dst=dip, id=i) / TCP(
                sport=sport, dport=dport, flags="S" if n % 2 else "A", seq=i * 1000, window=1024) / body
        elif k == 1:
            p = Ether(src=src_mac, dst=POD_B) / IP(src=sip, dst=dip, id=i, tos=(i * 4) & 0xFC) / UDP(
                sport=sport, dport=dport) / body
        elif k == 2:
            p = Ether(src=src_mac, dst=POD_B) / IP(src=sip, dst=dip, id=i) / ICMP(type=8 if n % 2 else 0, id=i,
                                                                                seq=n) / body
        elif k == 3:
            p = Ether(src=src_mac, dst=POD_B) / IPv6(src=sip6, dst=dip6, fl=i) / TCP(
                sport=sport, dport=dport, flags="PA", seq=i, ack=i + 1, window=2048) / body
        elif k == 4:
            p = Ether(src=src_mac, dst=POD_B) / IPv6(src=sip6, dst=dip6) / UDP(sport=sport, dport=dport) / body
        elif k == 5:
            p = Ether(src=src_mac, dst=BCAST if n % 2 == 0 else POD_B) / ARP(
                op=1 if n % 2 == 0 else 2, hwsrc=src_mac, psrc=sip, hwdst=ZERO_MAC if n % 2 == 0 else POD_B,
                pdst=dip) / Raw(b"\x00" * 18)
        elif k == 6:
            p = Ether(src=src_mac, dst=POD_B, type=0x8100) / Dot1Q(vlan=100 + n, prio=n % 8) / IP(
                src=sip, dst=dip, id=i) / UDP(sport=sport, dport=dport) / body
        else:
            inner = Ether(src=src_mac, dst=POD_B) / IP(src=sip, dst=dip, id=i) / UDP(sport=sport, dport=dport) / body
            g = geneve(n + 1, [ovn_opt(n + 1, 64 - n)], 1, inner)
            p = udp4_outer(49152 + i, g) if n % 2 == 0 else udp6_outer(49152 + i, g)
        out.append(("mixed #%d kind %d" % (i, k), p, None))
    return out


FIXTURES = [
    ("geneve_ovn.pcap", fx_geneve),
    ("vlan.pcap", fx_vlan),
    ("arp.pcap", fx_arp),
    ("ipv4.pcap", fx_ipv4),
    ("ipv6.pcap", fx_ipv6),
    ("malformed.pcap", fx_malformed),
    ("mixed.pcap", fx_mixed),
]

# For malformed Geneve packets (every `geneve_*` reason) the outer headers are
# valid: a flow-key extractor that stops at UDP may accept them; Geneve decap
# must drop them.
# Of those, the ones whose Geneve header and inner frame are sound: their
# manifest entry keeps the full Geneve facts, and tshark checks them all.
# Outer checksums of a Geneve packet are verified (when the NIC has not) by
# `verify_outer_checksums`, after extract and before decap.
CHECKSUM_STAGE = {"ipv4_bad_checksum", "udp_bad_checksum"}
GENEVE_SOUND = {"geneve_critical_option", "geneve_oam", "geneve_no_ovn_option"}

# What tshark's expert info says about each malformed packet (check.sh looks
# for this text in `_ws.expert.message`): the independent dissector agrees
# that the packet is broken, and broken where we say.
TSHARK_SAYS = {
    "eth_truncated": "Malformed Packet",
    "vlan_truncated": "Malformed Packet",
    "ipv4_bad_ihl": "Bogus IP header length (16, must be at least 20)",
    "ipv4_bad_total_len": "IPv4 total length exceeds packet length",
    "ipv4_bad_version": "Bogus IPv4 version",
    "tcp_truncated": "Malformed Packet",
    "tcp_bad_data_offset": "Bogus TCP header length (16, must be at least 20)",
    "udp_bad_len": "Bad length value 64 > IP payload length",
    "ipv6_bad_payload_len": "IPv6 payload length exceeds framing length",
    "ipv6_ext_truncated": "Malformed Packet",
    "geneve_bad_version": "Unknown version 1",
    "geneve_bad_opt_len": "Malformed Packet",
    "ipv4_truncated": "Malformed Packet",
    "arp_malformed": "Malformed Packet",
    "ipv6_truncated": "Malformed Packet",
    "ipv6_bad_version": "Bogus IPv6 version",
    "icmp_truncated": "Malformed Packet",
    "nd_malformed": "Invalid option length (Zero)",
    "udp_truncated": "Malformed Packet",
    "geneve_truncated": "Malformed Packet",
    "geneve_inner_truncated": "Malformed Packet",
}
# For the truncations tshark only says "Malformed Packet": this is the
# protocol it names in `_ws.malformed` ("[Malformed Packet: TCP]").
TSHARK_MALFORMED_IN = {
    "eth_truncated": "Ethernet",
    "vlan_truncated": "VLAN",
    "tcp_truncated": "TCP",
    "ipv6_ext_truncated": "IPv6 Hop-by-Hop",
    "geneve_bad_opt_len": "Geneve",
    "ipv4_truncated": "IPv4",
    "arp_malformed": "ARP/RARP",
    "ipv6_truncated": "IPv6",
    "icmp_truncated": "ICMP",
    "udp_truncated": "UDP",
    "geneve_truncated": "Geneve",
    "geneve_inner_truncated": "Ethernet",
}


def write_pcap(path, frames):
    w = PcapWriter(path, linktype=1, sync=True, nano=False, endianness="<")
    for i, fr in enumerate(frames):
        p = Raw(fr)
        p.time = Decimal(EPOCH) + Decimal(i) / 1000
        w.write(p)
    w.close()


def dump_manifest(m):
    """JSON with one packet per line, so a regenerated manifest diffs by packet."""
    lines = ["{", ' "_doc": %s,' % json.dumps(m["_doc"]), ' "files": {']
    files = list(m["files"].items())
    for fi, (name, entries) in enumerate(files):
        lines.append("  %s: [" % json.dumps(name))
        for ei, e in enumerate(entries):
            lines.append("   " + json.dumps(e, separators=(",", ":")) + ("," if ei + 1 < len(entries) else ""))
        lines.append("  ]" + ("," if fi + 1 < len(files) else ""))
    lines += [" }", "}", ""]
    return "\n".join(lines)


def main(argv):
    """Write the fixtures into argv[1] (default: beside this script)."""
    out_dir = argv[1] if len(argv) > 1 else HERE
    conf.verb = 0
    manifest = {"_doc": "see README.md; generated by make.py, do not edit by hand", "files": {}}
    for name, fn in FIXTURES:
        frames, entries = [], []
        for i, (desc, pkt, drop, *ts) in enumerate(fn()):
            fr = bytes(pkt)
            frames.append(fr)
            if drop is None:
                e = facts(fr)
            elif drop.startswith("geneve_") or drop in CHECKSUM_STAGE:
                # Outer headers are fine, so record them: extract is checked
                # on them too. The Geneve facts only where all of it parses.
                e = facts(fr, geneve=drop in GENEVE_SOUND)
                e["drop"] = drop
                e["drop_stage"] = "checksum" if drop in CHECKSUM_STAGE else "geneve"
            else:
                e = {"len": len(fr)}
                if len(fr) >= 14:
                    e["eth_dst"], e["eth_src"] = mac(fr[0:6]), mac(fr[6:12])
                e["drop"], e["drop_stage"] = drop, "extract"
            for k, v in (ts[0] if ts else {}).items():
                e["tshark_" + k] = v
            e = {"index": i, "desc": desc, **e}
            entries.append(e)
        write_pcap(os.path.join(out_dir, name), frames)
        manifest["files"][name] = entries
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        f.write(dump_manifest(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
