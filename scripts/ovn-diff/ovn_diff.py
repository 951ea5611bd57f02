#!/usr/bin/python3
"""ovn-diff: run OVN scenarios through Petrel (petreld + petrel-ovn) and
compare what comes out of every port with what `ovn-trace --minimal`
predicts on the same Southbound.  See scripts/ovn-diff/README.md.

Started by scripts/ovn-diff.sh inside a private network namespace
(`unshare -n`): every petreld port is a DPDK net_af_packet port on one end
of a veth pair; the harness injects and captures on the other end.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, ICMPv6DestUnreach,  # noqa: E402
                       ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
                       ICMPv6NDOptSrcLLAddr, ICMPv6Unknown, IPv6, Padding, Raw, SCTP, raw)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("PETREL_BIN", os.path.join(ROOT, "target", "debug"))
EAL = "--in-memory --no-pci --no-telemetry -m 256 -l 0 --log-level=*:warning"
PAYLOAD = b"ovn-diff"
SYSTEM_ID = "hv1"

SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40


INTERRUPTED = False
IN_CLEANUP = False


class ScenarioError(Exception):
    """The scenario could not run (setup failure): every packet fails."""


def log(msg):
    print(msg, flush=True)


def run(cmd, check=True, env=None, timeout=60, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if check and p.returncode != 0:
        raise ScenarioError("%s failed (rc %d): %s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


# --------------------------------------------------------------------------
# OVSDB JSON helpers

def ovs_val(v):
    """An OVSDB JSON cell -> python (set -> list, map -> dict)."""
    if isinstance(v, list) and len(v) == 2 and v[0] in ("set", "map", "uuid", "named-uuid"):
        if v[0] == "set":
            return [ovs_val(x) for x in v[1]]
        if v[0] == "map":
            return {ovs_val(k): ovs_val(x) for k, x in v[1]}
        return v[1]
    return v


def ovs_one(v):
    v = ovs_val(v)
    if isinstance(v, list):
        return v[0] if v else None
    return v


def ovs_list(v):
    v = ovs_val(v)
    if isinstance(v, list):
        return v
    return [v]


# --------------------------------------------------------------------------
# Packets: ovn-trace's flow line -> bytes

def parse_flow_line(line):
    """`# udp,reg14=0x3,vlan_tci=0x0000,dl_src=...` -> (protos, dict)."""
    assert line.startswith("# ")
    protos, kv = [], {}
    for tok in line[2:].strip().split(","):
        if "=" in tok:
            k, v = tok.split("=", 1)
            kv[k] = v
        elif tok:
            protos.append(tok)
    return protos, kv


def num(s):
    return int(s, 0)


TCP_FLAG_BITS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20,
                 "ece": 0x40, "cwr": 0x80, "ns": 0x100}


def tcp_flags(s):
    if re.match(r"^(0x[0-9a-f]+|\d+)$", s):
        return num(s)
    v = 0
    for f in re.split(r"[|+]", s):
        if f:
            v |= TCP_FLAG_BITS[f]
    return v


def build_packet(protos, kv):
    """Bytes for ovn-trace's microflow. Fields ovn-trace does not model take
    the defaults of README.md (IPv4 id 0, TCP seq/ack 0, window 8192, an
    8-byte payload "ovn-diff" after the L4 header)."""
    eth = Ether(src=kv.get("dl_src", "00:00:00:00:00:00"), dst=kv.get("dl_dst", "00:00:00:00:00:00"))
    pkt = eth
    if "dl_vlan" in kv:
        pkt = pkt / Dot1Q(vlan=num(kv["dl_vlan"]), prio=num(kv.get("dl_vlan_pcp", "0")))
    proto = protos[0] if protos else None
    tos = num(kv.get("nw_tos", "0")) | num(kv.get("nw_ecn", "0"))
    ttl = num(kv.get("nw_ttl", "0"))
    tp_src, tp_dst = num(kv.get("tp_src", "0")), num(kv.get("tp_dst", "0"))
    if proto in ("arp", "rarp"):
        pkt = pkt / ARP(op=num(kv.get("arp_op", "0")), hwsrc=kv.get("arp_sha", "00:00:00:00:00:00"),
                        psrc=kv.get("arp_spa", "0.0.0.0"), hwdst=kv.get("arp_tha", "00:00:00:00:00:00"),
                        pdst=kv.get("arp_tpa", "0.0.0.0"))
        if proto == "rarp":
            pkt[Ether if "dl_vlan" not in kv else Dot1Q].type = 0x8035
    elif proto in ("ip", "tcp", "udp", "sctp", "icmp"):
        nw_proto = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}.get(proto, num(kv.get("nw_proto", "0")))
        pkt = pkt / IP(src=kv.get("nw_src", "0.0.0.0"), dst=kv.get("nw_dst", "0.0.0.0"), tos=tos, ttl=ttl,
                       proto=nw_proto, id=0, flags=0)
        pkt = pkt / l4(nw_proto, kv, tp_src, tp_dst, v6=False)
    elif proto in ("ipv6", "tcp6", "udp6", "sctp6", "icmp6"):
        nw_proto = {"tcp6": 6, "udp6": 17, "sctp6": 132, "icmp6": 58}.get(proto, num(kv.get("nw_proto", "0")))
        pkt = pkt / IPv6(src=kv.get("ipv6_src", "::"), dst=kv.get("ipv6_dst", "::"), tc=tos,
                         fl=num(kv.get("ipv6_label", "0")), hlim=ttl, nh=nw_proto)
        pkt = pkt / l4(nw_proto, kv, tp_src, tp_dst, v6=True)
    else:
        t = num(kv.get("dl_type", "0"))
        if "dl_vlan" in kv:
            pkt[Dot1Q].type = t
        else:
            eth.type = t
        pkt = pkt / Raw(PAYLOAD)
    b = raw(pkt)
    if len(b) < 60:
        b += b"\0" * (60 - len(b))
    return b


def l4(nw_proto, kv, tp_src, tp_dst, v6):
    if nw_proto == 6:
        return TCP(sport=tp_src, dport=tp_dst, flags=tcp_flags(kv.get("tcp_flags", "0")), seq=0, ack=0,
                   window=8192) / Raw(PAYLOAD)
    if nw_proto == 17:
        return UDP(sport=tp_src, dport=tp_dst) / Raw(PAYLOAD)
    if nw_proto == 132:
        return SCTP(sport=tp_src, dport=tp_dst)
    if nw_proto == 1:
        t = num(kv.get("icmp_type", "0"))
        c = num(kv.get("icmp_code", "0"))
        return ICMP(type=t, code=c, id=0, seq=0) / Raw(PAYLOAD)
    if nw_proto == 58:
        t = num(kv.get("icmp_type", "0"))
        c = num(kv.get("icmp_code", "0"))
        if t == 135:
            ns = ICMPv6ND_NS(code=c, tgt=kv.get("nd_target", "::"))
            sll = kv.get("nd_sll", "00:00:00:00:00:00")
            if sll != "00:00:00:00:00:00":
                ns = ns / ICMPv6NDOptSrcLLAddr(lladdr=sll)
            return ns
        if t == 136:
            na = ICMPv6ND_NA(code=c, tgt=kv.get("nd_target", "::"), R=0, S=1, O=1)
            tll = kv.get("nd_tll", "00:00:00:00:00:00")
            if tll != "00:00:00:00:00:00":
                na = na / ICMPv6NDOptDstLLAddr(lladdr=tll)
            return na
        if t == 128:
            return ICMPv6EchoRequest(code=c, id=0, seq=0) / Raw(PAYLOAD)
        return ICMPv6Unknown(type=t, code=c) / Raw(PAYLOAD)
    return Raw(PAYLOAD)


# --------------------------------------------------------------------------
# Canonical header view of a frame (what is compared)

def l4_csum_ok(q):
    """Whether the L4 checksum under IP/IPv6 layer `q` is right (None: the
    protocol has none the harness checks)."""
    if (q.proto if isinstance(q, IP) else q.nh) not in (1, 6, 17, 58):
        return None
    c = q.__class__(raw(q))
    l4 = c.payload
    for field in ("chksum", "cksum"):
        if l4 is not None and field in l4.fields:
            break
    else:
        return None
    if isinstance(l4, UDP) and l4.chksum == 0 and isinstance(q, IP):
        return True  # no checksum (IPv4 UDP)
    got = getattr(l4, field)
    setattr(l4, field, None)
    want = getattr(q.__class__(raw(c)).payload, field)
    return got == want


def headers(frame):
    """Ordered dict of the header fields that are compared, and the payload."""
    p = Ether(frame)
    h = {"eth.dst": p.dst, "eth.src": p.src}
    q = p
    if Dot1Q in p:
        h["vlan.vid"] = p[Dot1Q].vlan
        h["vlan.pcp"] = p[Dot1Q].prio
    h["eth.type"] = "0x%04x" % (p[Dot1Q].type if Dot1Q in p else p.type)
    if ARP in p:
        a = p[ARP]
        h.update({"arp.op": a.op, "arp.sha": a.hwsrc, "arp.spa": a.psrc, "arp.tha": a.hwdst, "arp.tpa": a.pdst})
        return h
    if IP in p:
        q = p[IP]
        h.update({"ip4.src": q.src, "ip4.dst": q.dst, "ip.ttl": q.ttl, "ip.tos": q.tos, "ip.proto": q.proto,
                  "ip4.frag": "%d/%d" % (int(q.flags), q.frag)})
        h["ip4.id"] = q.id
        c = IP(raw(q))
        c.chksum = None
        h["ip4.csum_ok"] = IP(raw(c)).chksum == q.chksum
        h["l4.csum_ok"] = l4_csum_ok(q)
    elif IPv6 in p:
        q = p[IPv6]
        h.update({"ip6.src": q.src, "ip6.dst": q.dst, "ip.ttl": q.hlim, "ip.tos": q.tc, "ip6.label": q.fl,
                  "ip.proto": q.nh})
        h["l4.csum_ok"] = l4_csum_ok(q)
    else:
        h["payload"] = bytes(p.payload).rstrip(b"\0").hex()
        return h
    l4p = q.payload
    if TCP in q:
        t = q[TCP]
        h.update({"tcp.src": t.sport, "tcp.dst": t.dport, "tcp.flags": str(t.flags), "tcp.seq": t.seq,
                  "tcp.ack": t.ack, "tcp.win": t.window})
        l4p = t.payload
    elif UDP in q:
        t = q[UDP]
        h.update({"udp.src": t.sport, "udp.dst": t.dport})
        l4p = t.payload
    elif SCTP in q:
        h.update({"sctp.src": q[SCTP].sport, "sctp.dst": q[SCTP].dport})
        l4p = q[SCTP].payload
    elif ICMP in q:
        t = q[ICMP]
        h.update({"icmp4.type": t.type, "icmp4.code": t.code})
        l4p = t.payload
    elif isinstance(q, IPv6) and q.nh == 58:
        b = raw(q.payload)
        h.update({"icmp6.type": b[0], "icmp6.code": b[1]})
        if ICMPv6ND_NS in q or ICMPv6ND_NA in q:
            n = q[ICMPv6ND_NS] if ICMPv6ND_NS in q else q[ICMPv6ND_NA]
            h["nd.target"] = n.tgt
            if ICMPv6ND_NA in q:
                h["nd.rso"] = "R%dS%dO%d" % (n.R, n.S, n.O)
            if ICMPv6NDOptSrcLLAddr in q:
                h["nd.sll"] = q[ICMPv6NDOptSrcLLAddr].lladdr
            if ICMPv6NDOptDstLLAddr in q:
                h["nd.tll"] = q[ICMPv6NDOptDstLLAddr].lladdr
            return h
        l4p = q.payload.payload if q.payload.payload else Raw(b[8:])
    if Padding in l4p:
        l4p = l4p.copy()
        del l4p[Padding]
    h["payload"] = raw(l4p).hex()
    return h


# --------------------------------------------------------------------------
# ovn-trace --minimal output -> expected frames

ASSIGN = re.compile(r"^([a-z0-9_.]+(?:\[[0-9.]+\])?)\s*=\s*(.+);$")
OUTPUT = re.compile(r'^output\("([^"]+)"\);$')


def parse_minimal(text):
    """Minimal trace body (after the `# flow` line) -> nested action list:
    ("set", field, value) | ("output", port) | ("block", name, [...]) |
    ("other", line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    pos = 0

    def block():
        nonlocal pos
        acts = []
        while pos < len(lines):
            ln = lines[pos]
            pos += 1
            if ln == "};":
                return acts
            m = re.match(r"^([a-z0-9_]+)(\(.*\))?\s*\{$", ln)
            if m:
                acts.append(("block", m.group(1), block()))
                continue
            if ln == "ip.ttl--;":
                acts.append(("ttl--",))
                continue
            m = OUTPUT.match(ln)
            if m:
                acts.append(("output", m.group(1)))
                continue
            m = ASSIGN.match(ln)
            if m:
                acts.append(("set", m.group(1), m.group(2)))
                continue
            acts.append(("other", ln))
        return acts

    return block()


def set_field(pkt, field, value):
    """Apply a `field = value` the minimal trace printed to a scapy frame."""
    v = value.strip()
    if field == "eth.dst":
        pkt[Ether].dst = v
    elif field == "eth.src":
        pkt[Ether].src = v
    elif field == "arp.op":
        pkt[ARP].op = num(v)
    elif field == "arp.sha":
        pkt[ARP].hwsrc = v
    elif field == "arp.tha":
        pkt[ARP].hwdst = v
    elif field == "arp.spa":
        pkt[ARP].psrc = v
    elif field == "arp.tpa":
        pkt[ARP].pdst = v
    elif field == "ip4.src":
        pkt[IP].src = v
    elif field == "ip4.dst":
        pkt[IP].dst = v
    elif field == "ip6.src":
        pkt[IPv6].src = v
    elif field == "ip6.dst":
        pkt[IPv6].dst = v
    elif field == "ip.ttl":
        if IP in pkt:
            pkt[IP].ttl = num(v)
        else:
            pkt[IPv6].hlim = num(v)
    elif field == "nd.target":
        (pkt[ICMPv6ND_NA] if ICMPv6ND_NA in pkt else pkt[ICMPv6ND_NS]).tgt = v
    elif field == "nd.tll":
        if ICMPv6NDOptDstLLAddr in pkt:
            pkt[ICMPv6NDOptDstLLAddr].lladdr = v
        else:
            pkt[ICMPv6ND_NA].add_payload(ICMPv6NDOptDstLLAddr(lladdr=v))
    elif field == "nd.sll":
        pkt[ICMPv6NDOptSrcLLAddr].lladdr = v
    elif field in ("tcp.src", "tcp.dst", "udp.src", "udp.dst"):
        layer = TCP if field.startswith("tcp") else UDP
        setattr(pkt[layer], "sport" if field.endswith("src") else "dport", num(v))
    elif field in ("icmp4.type", "icmp4.code"):
        setattr(pkt[ICMP], field.split(".")[1], num(v))
    else:
        raise ValueError("cannot apply `%s = %s` (the harness does not model this field)" % (field, value))
    # checksums and lengths are recomputed
    for layer, f in ((IP, "chksum"), (TCP, "chksum"), (UDP, "chksum"), (ICMP, "chksum")):
        if layer in pkt:
            setattr(pkt[layer], f, None)
    if ICMPv6ND_NA in pkt:
        pkt[ICMPv6ND_NA].cksum = None
    if IPv6 in pkt:
        pkt[IPv6].plen = None
    return pkt


def pinctrl_packet(kind, pkt, is_router=False):
    """The frame ovn-controller's pinctrl composes for a nested action, from
    the packet `pkt` that triggered it (controller/pinctrl.c, OVN 23.03:
    pinctrl_handle_icmp, pinctrl_handle_tcp_reset, pinctrl_handle_nd_na,
    pinctrl_handle_arp). `reject` dispatches like pinctrl_handle_reject."""
    e = pkt[Ether]
    if kind == "reject":
        if TCP in pkt:
            kind = "tcp_reset"
        elif IP in pkt:
            kind = "icmp4"
        else:
            kind = "icmp6"
        loopback, set_code = True, True
    else:
        loopback, set_code = False, False
    src, dst = (e.dst, e.src) if loopback else (e.src, e.dst)
    if kind == "icmp4":
        ip = pkt[IP]
        inner = raw(ip)[:ip.len][:576 - 14 - 20 - 8]
        code = 3 if (set_code and ip.proto == 17) else 1
        return Ether(src=src, dst=dst) / IP(src=ip.dst if loopback else ip.src, dst=ip.src if loopback else ip.dst,
                                            ttl=255, tos=0, flags="DF", id=0, proto=1) / \
            ICMP(type=3, code=code) / Raw(inner)
    if kind == "icmp6":
        ip = pkt[IPv6]
        inner = raw(ip)[:40 + ip.plen][:1280 - 14 - 40 - 8]
        code = 4 if (set_code and ip.nh == 17) else 1
        return Ether(src=src, dst=dst) / IPv6(src=ip.dst if loopback else ip.src, dst=ip.src if loopback else ip.dst,
                                              hlim=255, nh=58) / ICMPv6DestUnreach(code=code) / Raw(inner)
    if kind == "tcp_reset":
        t = pkt[TCP]
        seg = TCP(sport=t.dport, dport=t.sport, flags="RA", seq=0, ack=(t.seq + 1) & 0xffffffff, window=0)
        if IP in pkt:
            ip = pkt[IP]
            return Ether(src=src, dst=dst) / IP(src=ip.dst if loopback else ip.src,
                                                dst=ip.src if loopback else ip.dst, ttl=63, tos=0, flags="DF",
                                                id=0, proto=6) / seg
        ip = pkt[IPv6]
        return Ether(src=src, dst=dst) / IPv6(src=ip.dst if loopback else ip.src,
                                              dst=ip.src if loopback else ip.dst, hlim=63, nh=6) / seg
    if kind in ("nd_na", "nd_na_router"):
        ip = pkt[IPv6]
        tgt = pkt[ICMPv6ND_NS].tgt if ICMPv6ND_NS in pkt else "::"
        return Ether(src=e.dst, dst=e.src) / IPv6(src=tgt, dst=ip.src, hlim=255, nh=58) / \
            ICMPv6ND_NA(R=1 if kind == "nd_na_router" else 0, S=1, O=1, tgt=tgt) / \
            ICMPv6NDOptDstLLAddr(lladdr=e.dst)
    if kind == "arp":
        ip = pkt[IP]
        return Ether(src=e.src, dst=e.dst) / ARP(op=1, hwsrc=e.src, psrc=ip.src, hwdst="00:00:00:00:00:00",
                                                 pdst=ip.dst)
    raise ValueError("nested action `%s { … }` is not modelled by the harness" % kind)


def expected_outputs(acts, pkt, out, notes, reject=False):
    """Walks the minimal trace, appending (port, frame bytes) to out.
    `reject`: the trace's icmp4/icmp6/tcp_reset/sctp_abort blocks come from
    a `reject` action (loopback: addresses swapped, ICMP port unreachable
    for UDP)."""
    pkt = pkt.copy()
    for a in acts:
        if a[0] == "set":
            pkt = set_field(pkt, a[1], a[2])
        elif a[0] == "ttl--":
            pkt = set_field(pkt, "ip.ttl", str(((pkt[IP].ttl if IP in pkt else pkt[IPv6].hlim) - 1) & 0xff))
        elif a[0] == "output":
            out.append((a[1], raw(pkt)))
        elif a[0] == "block":
            if a[1] in ("clone", "ct_next", "ct_lb", "ct_lb_mark", "ct_commit"):
                # the same packet continues (conntrack state as ovn-trace assumed it)
                expected_outputs(a[2], pkt, out, notes, reject)
            else:
                kind = "reject" if reject and a[1] in ("icmp4", "icmp6", "tcp_reset", "sctp_abort") else a[1]
                expected_outputs(a[2], pinctrl_packet(kind, pkt), out, notes, reject)
        else:
            notes.append(a[1])


# --------------------------------------------------------------------------
# Exceptions (known ovn-trace 23.03 differences from ovn-controller)

def load_exceptions(path):
    """Blocks of `key: value` lines separated by blank lines; see the file."""
    exc, cur = [], {}
    if not os.path.exists(path):
        return exc
    with open(path) as f:
        for ln in f:
            if ln.startswith("#"):
                continue
            if not ln.strip():
                if cur:
                    exc.append(cur)
                cur = {}
                continue
            k, v = ln.split(":", 1)
            cur[k.strip()] = v.strip()
    if cur:
        exc.append(cur)
    for e in exc:
        for k in ("id", "scenario", "packet", "ovn-trace", "ovn-controller", "source", "reason"):
            if k not in e:
                raise SystemExit("%s: exception %s lacks `%s`" % (path, e.get("id", "?"), k))
        e["used"] = 0
    return exc


def outputs_summary(outs):
    """Sorted port list, `drop` when empty."""
    return ",".join(sorted(p for p, _ in outs)) or "drop"


# --------------------------------------------------------------------------
# Capture on the harness side of the veths

class Wire:
    def __init__(self, ifname):
        self.ifname = ifname
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        self.s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.s.bind((ifname, 0))
        self.s.setblocking(False)

    def send(self, frame):
        self.s.send(frame)

    def drain(self):
        frames = []
        while True:
            try:
                data, anc, _flags, addr = self.s.recvmsg(65535, socket.CMSG_SPACE(64))
            except BlockingIOError:
                return frames
            if addr[2] == PACKET_OUTGOING:
                continue  # our own injection
            for lvl, typ, d in anc:
                if lvl == SOL_PACKET and typ == PACKET_AUXDATA:
                    st, _ln, _snap, _mac, _net, tci, tpid = struct.unpack("IIIHHHH", d[:20])
                    if st & TP_STATUS_VLAN_VALID:
                        tpid = tpid if st & TP_STATUS_VLAN_TPID_VALID else 0x8100
                        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
            frames.append(data)


# --------------------------------------------------------------------------
# One scenario

class Scenario:
    def __init__(self, path, args, exceptions):
        self.path = path
        self.name = os.path.basename(os.path.normpath(path))
        self.args = args
        self.exceptions = exceptions
        self.pids = []
        self.procs = []
        self.veths = []
        self.wires = {}
        self.passed = 0
        self.failed = 0
        self.last = None
        self.last_flow = None
        self.work = tempfile.mkdtemp(prefix="ovn-diff-%s." % self.name)
        self.env = dict(os.environ)
        for k in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVN_RUNDIR", "OVN_LOGDIR", "OVN_DBDIR"):
            self.env[k] = self.work
        for k in ("OVN_NB_DAEMON", "OVN_SB_DB", "OVN_REMOTE"):
            self.env.pop(k, None)
        self.nb = "unix:%s/nb.sock" % self.work
        self.sb = "unix:%s/sb.sock" % self.work
        self.env["OVN_NB_DB"] = self.nb
        self.ctl_sock = os.path.join(self.work, "petreld.sock")

    # ---- processes
    def daemon(self, name, cmd):
        run(cmd + ["--detach", "--no-chdir", "--pidfile=%s/%s.pid" % (self.work, name),
                   "--unixctl=%s/%s.ctl" % (self.work, name), "--log-file=%s/%s.log" % (self.work, name)],
            env=self.env)
        with open("%s/%s.pid" % (self.work, name)) as f:
            self.pids.append(int(f.read().strip()))

    def spawn(self, name, cmd):
        logf = open(os.path.join(self.work, name + ".log"), "w")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append((name, p))
        return p

    def cleanup(self):
        global IN_CLEANUP
        IN_CLEANUP = True  # a signal now only sets INTERRUPTED: cleanup finishes first
        try:
            self.cleanup_()
        finally:
            IN_CLEANUP = False

    def cleanup_(self):
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for _name, p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for w in self.wires.values():
            w.s.close()
        for v in self.veths:
            subprocess.run(["ip", "link", "del", v], capture_output=True)
        if self.args.keep or (self.failed and self.args.keep_failed):
            log("  (kept %s)" % self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def nbctl(self, *a):
        return run(["ovn-nbctl", "--db=" + self.nb] + list(a), env=self.env).stdout

    def sbctl(self, *a):
        return run(["ovn-sbctl", "--db=" + self.sb] + list(a), env=self.env).stdout

    def petrelctl(self, *a, check=False):
        return run([os.path.join(BIN, "petrelctl"), "--socket", self.ctl_sock] + list(a), check=check, timeout=20)

    # ---- setup
    def start_ovn(self):
        for db in ("nb", "sb"):
            run(["ovsdb-tool", "create", "%s/%s.db" % (self.work, db), "/usr/share/ovn/ovn-%s.ovsschema" % db])
            self.daemon(db, ["ovsdb-server", "--remote=punix:%s/%s.sock" % (self.work, db),
                             "%s/%s.db" % (self.work, db)])
        self.daemon("northd", ["ovn-northd", "--ovnnb-db=" + self.nb, "--ovnsb-db=" + self.sb])
        self.nbctl("init")
        p = run(["bash", "-e", os.path.join(self.path, "nb.sh")], check=False, env=self.env, cwd=self.path)
        if p.returncode != 0:
            raise ScenarioError("nb.sh failed (rc %d): %s%s" % (p.returncode, p.stdout, p.stderr))
        self.nbctl("--wait=sb", "sync")

    def read_ports(self):
        out = self.nbctl("--format=json", "--columns=name,type,parent_name,tag,tag_request,options,addresses",
                         "list", "Logical_Switch_Port")
        t = json.loads(out)
        cols = t["headings"]
        self.lsps = {}
        for row in t["data"]:
            r = {c: ovs_val(v) for c, v in zip(cols, row)}
            name = r["name"]
            tag = r["tag"] if not isinstance(r["tag"], list) else (r["tag"][0] if r["tag"] else None)
            if tag is None and r["tag_request"] not in ([], None):
                tag = ovs_one(r["tag_request"])
            parent = r["parent_name"] if not isinstance(r["parent_name"], list) else (
                r["parent_name"][0] if r["parent_name"] else None)
            self.lsps[name] = {"type": r["type"], "parent": parent or None, "tag": tag,
                               "options": r["options"] if isinstance(r["options"], dict) else {}}
        # wires: one per VIF, one per localnet network
        self.vifs = sorted(n for n, p in self.lsps.items()
                           if p["type"] not in ("localnet", "router", "remote") and not p["parent"])
        self.children = {n: p for n, p in self.lsps.items() if p["parent"]}
        self.networks = sorted({p["options"].get("network_name") for p in self.lsps.values()
                                if p["type"] == "localnet" and p["options"].get("network_name")})

    def wire_of(self, lport):
        """(petreld port, VLAN tag or None) through which `lport` is reached, or None."""
        p = self.lsps.get(lport)
        if p is None:
            return None
        if p["parent"]:
            return (p["parent"], p["tag"])
        if p["type"] == "localnet":
            net = p["options"].get("network_name")
            return ("up-" + net, p["tag"]) if net else None
        if p["type"] in ("router", "remote"):
            return None
        return (lport, None)

    def attribute(self, wire, frame):
        """The logical port a frame seen on `wire` belongs to, and the frame
        without the tag that identified it."""
        tag = None
        if frame[12:14] == b"\x81\x00":
            tag = struct.unpack("!H", frame[14:16])[0] & 0xfff
        for n, p in self.lsps.items():
            w = self.wire_of(n)
            if w and w[0] == wire and w[1] == tag and (tag is not None or p["type"] == "localnet"
                                                      or not p["parent"]):
                return n, (frame[:12] + frame[16:] if tag is not None else frame)
        if tag is not None:
            return "%s[vlan %d]" % (wire, tag), frame
        return wire, frame

    def start_petrel(self):
        wires = [(n, "iface-id=" + n + ",") for n in self.vifs] + [("up-" + n, "") for n in self.networks]
        cmd = [os.path.join(BIN, "petreld"), "--eal-args", EAL, "--pmd-cores", "1", "--control-socket",
               self.ctl_sock]
        for i, (name, iface) in enumerate(wires):
            pd, ph = "pd%d" % i, "ph%d" % i
            subprocess.run(["ip", "link", "del", pd], capture_output=True)
            run(["ip", "link", "add", pd, "type", "veth", "peer", "name", ph])
            self.veths.append(pd)
            for v in (pd, ph):
                run(["sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % v])
                run(["ip", "link", "set", v, "up"])
            self.wires[name] = Wire(ph)
            cmd += ["--port", "%s=dpdk,%sdevargs=net_af_packet%d,iface=%s" % (name, iface, i, pd)]
        self.port_index = {name: i for i, (name, _) in enumerate(wires)}
        self.petreld = self.spawn("petreld", cmd)
        deadline = time.time() + 30
        while self.petrelctl("show").returncode != 0:
            if self.petreld.poll() is not None or time.time() > deadline:
                raise ScenarioError("petreld did not start: %s" % self.tail("petreld"))
            time.sleep(0.1)
        cmd = [os.path.join(BIN, "petrel-ovn"), "--remote", self.sb, "--system-id", SYSTEM_ID, "--encap-ip",
               "127.0.0.1", "--dataplane", self.ctl_sock, "--dataplane-poll-ms", "100"]
        if self.networks:
            cmd += ["--bridge-mappings", ",".join("%s:up-%s" % (n, n) for n in self.networks)]
        self.ovn = self.spawn("petrel-ovn", cmd)
        # ready: nb_cfg acknowledged and every bound port claimed
        # ovn-controller sets Port_Binding.chassis for VIFs and their
        # children, never for localport (present on every chassis) and
        # the like: only those are waited for.
        bound = {n for n in set(self.vifs) | set(self.children) if self.lsps[n]["type"] == ""}
        deadline = time.time() + self.args.timeout
        while True:
            if self.ovn.poll() is not None:
                raise ScenarioError("petrel-ovn exited (rc %s): %s" % (self.ovn.returncode, self.tail("petrel-ovn")))
            t = json.loads(self.sbctl("--format=json", "--columns=logical_port,chassis", "list", "Port_Binding"))
            claimed = {r[0] for r in t["data"] if ovs_val(r[1]) not in ([], None)}
            missing = bound - claimed
            if not missing:
                break
            if time.time() > deadline:
                raise ScenarioError("ports not claimed by %s after %ss: %s\n%s" % (
                    SYSTEM_ID, self.args.timeout, " ".join(sorted(missing)), self.tail("petrel-ovn")))
            time.sleep(0.2)
        p = run(["ovn-nbctl", "--db=" + self.nb, "--timeout=%d" % self.args.timeout, "--wait=hv", "sync"],
                check=False, env=self.env, timeout=self.args.timeout + 10)
        if p.returncode != 0:
            raise ScenarioError("ovn-nbctl --wait=hv sync did not return (petrel-ovn never acknowledged "
                                "nb_cfg): %s\n%s" % (p.stderr.strip(), self.tail("petrel-ovn")))

    def tail(self, name, n=15):
        """The end of a process's log, or its panic message if it panicked."""
        try:
            with open(os.path.join(self.work, name + ".log")) as f:
                lines = f.readlines()
        except OSError:
            return ""
        for i, ln in enumerate(lines):
            if "panicked at" in ln:
                return "%s: %s" % (name, "".join(lines[i:i + 2]))
        return "".join(lines[-n:])

    # ---- per packet
    def show(self):
        p = self.petrelctl("--json", "show")
        if p.returncode != 0:
            raise ScenarioError("petrelctl show failed: %s%s" % (p.stderr, self.tail("petreld")))
        return json.loads(p.stdout)

    def wait_fdb(self, mac, port):
        """`#! fdb: MAC PORT`: the chassis must have learnt MAC on PORT into
        the Southbound FDB table (ovn-controller's pinctrl put_fdb writes it)
        within 2 s; None when it has, else why not."""
        t = json.loads(self.sbctl("--format=json", "--columns=logical_port,tunnel_key", "list", "Port_Binding"))
        keys = {r[0]: r[1] for r in t["data"]}
        deadline = time.time() + 2
        while True:
            t = json.loads(self.sbctl("--format=json", "--columns=mac,port_key", "list", "FDB"))
            rows = {(r[0], r[1]) for r in t["data"]}
            if (mac, keys.get(port)) in rows:
                return None
            if time.time() > deadline:
                return "SB FDB has no %s on %s (key %s) 2 s after the packets that should teach it " \
                    "(put_fdb); FDB rows: %s" % (mac, port, keys.get(port), sorted(rows) or "none")
            time.sleep(0.1)

    def unsupported_drops(self):
        p = self.petrelctl("--json", "drops")
        if p.returncode != 0:
            raise ScenarioError("petrelctl drops failed: %s" % p.stderr)
        return sum(r["count"] for r in json.loads(p.stdout)["reasons"] if r["reason"] == "unsupported")

    def late_frames(self):
        """Frames that arrived after the previous packet was judged: they
        fail that packet (its outputs were incomplete)."""
        late = []
        for name, w in self.wires.items():
            late += [self.attribute(name, f)[0] for f in w.drain()]
        if late and self.last:
            tag, line, ok = self.last
            if ok:
                self.passed -= 1
            self.fail(tag, line, "frames came out after the %d ms settle time (late, slow path?): %s" % (
                self.args.settle_ms, ",".join(sorted(late))))
        self.last = None

    def inject(self, wire, frame, n_expected):
        """Sends `frame` on `wire`; returns every frame that came out, per
        wire: once petreld counted it received and its tx/drop counters have
        been still for --settle-ms; while fewer than `n_expected` frames came
        out, up to 2 s (packets that take the slow path)."""
        self.late_frames()
        idx = self.port_index[wire]
        before = self.show()["ports"][idx]["stats"]["rx_packets"]
        self.wires[wire].send(frame)
        deadline = time.time() + 10
        while True:
            s = self.show()
            if s["ports"][idx]["stats"]["rx_packets"] > before:
                break
            if time.time() > deadline:
                raise ScenarioError("petreld never counted the packet injected on %s" % wire)
            time.sleep(0.01)
        got = {w: [] for w in self.wires}
        last = None
        stable_since = time.time()
        deadline = time.time() + 5
        while time.time() < deadline:
            for name, w in self.wires.items():
                got[name] += w.drain()
            s = self.show()
            tx = [(p["stats"]["tx_packets"], p["stats"]["tx_drops"], p["stats"]["drops"]) for p in s["ports"]]
            n = sum(len(v) for v in got.values())
            quiet = self.args.settle_ms / 1000.0 if n >= n_expected else 2.0
            if tx != last:
                last = tx
                stable_since = time.time()
            elif time.time() - stable_since > quiet:
                break
            time.sleep(0.02)
        for name, w in self.wires.items():
            got[name] += w.drain()
        return got

    def trace(self, inport, flow):
        """(flow line, minimal trace, detailed trace) of ovn-trace."""
        p = run(["ovn-trace", "--db", self.sb, "--detailed", "--minimal", 'inport == "%s" && %s' % (inport, flow)],
                check=False, env=self.env)
        if p.returncode != 0 or not p.stdout.startswith("# "):
            raise ValueError("ovn-trace failed: %s%s" % (p.stdout, p.stderr.strip()))
        first, _, rest = p.stdout.partition("\n")
        detailed, _, minimal = rest.partition("# Minimal trace.\n")
        return first, minimal, detailed

    def find_exception(self, line):
        for e in self.exceptions:
            if e["scenario"] == self.name and e["packet"] == line:
                return e
        return None

    def run_packets(self):
        path = os.path.join(self.path, "packets")
        pkts, directive, fdb = [], None, None
        with open(path) as f:
            for i, ln in enumerate(f):
                m = re.match(r"^#!\s*petrel:\s*(\S+)\s*$", ln.strip())
                if m:
                    if m.group(1) != "unsupported":
                        raise ScenarioError("%s:%d: unknown directive %r" % (path, i + 1, m.group(1)))
                    directive = m.group(1)
                    continue
                m = re.match(r"^#!\s*fdb:\s*(\S+)\s+(\S+)\s*$", ln.strip())
                if m:
                    fdb = (m.group(1), m.group(2))
                    continue
                if ln.startswith("#!"):
                    raise ScenarioError("%s:%d: unknown directive %r" % (path, i + 1, ln.strip()))
                ln = ln.split("#", 1)[0].strip()
                if ln:
                    pkts.append((i + 1, ln, directive, fdb))
                    directive = fdb = None
        for lineno, line, directive, fdb in pkts:
            tag = "%s:%d" % (self.name, lineno)
            if fdb and not self.args.expect_only:
                err = self.wait_fdb(*fdb)
                if err:
                    self.fail(tag, line, err)
                    continue
            try:
                self.run_packet(tag, line, directive)
            except ScenarioError:
                raise
            except Exception as e:  # a harness bug must not hide the other packets
                self.fail(tag, line, "harness error: %s: %s" % (type(e).__name__, e))

    def run_packet(self, tag, line, directive):
        if True:
            inport, _, flow = line.partition(" ")
            try:
                first, body, detailed = self.trace(inport, flow.strip())
                protos, kv = parse_flow_line(first)
                self.last_flow = (protos, kv)
                frame = build_packet(protos, kv)
                acts = parse_minimal(body)
                exp, notes = [], []
                # --minimal names a `reject { … }` by what it became (icmp4,
                # icmp6, tcp_reset, sctp_abort) and does not print its
                # implicit eth/ip swaps: the detailed trace tells them apart.
                reject = bool(re.search(r"\breject \{", detailed))
                expected_outputs(acts, Ether(frame), exp, notes, reject)
            except (ValueError, KeyError, IndexError) as e:
                self.fail(tag, line, "cannot compute the expectation: %s" % e)
                return
            exc = self.find_exception(line)
            if exc:
                exc["used"] += 1
                if outputs_summary(exp) != exc["ovn-trace"]:
                    self.fail(tag, line, "exception %s says ovn-trace predicts `%s`, it now predicts `%s`: "
                              "the exception is stale" % (exc["id"], exc["ovn-trace"], outputs_summary(exp)))
                    return
                exp = []
                for p in exc["ovn-controller"].split(","):
                    if p.startswith("reject:"):  # pinctrl's reply to a `reject`, sent to that port
                        exp.append((p[len("reject:"):], raw(pinctrl_packet("reject", Ether(frame)))))
                    elif p != "drop":
                        exp.append((p, frame))
            if directive == "unsupported":
                # Declared out of Petrel's scope (e.g. conntrack): whatever
                # ovn-trace says, Petrel must drop it with reason `unsupported`.
                suffix_trace = outputs_summary(exp)
                exp = []
            # not observable here: outputs to ports that are not bound to this chassis
            observable, hidden = [], []
            for port, b in exp:
                (observable if self.wire_of(port) else hidden).append((port, b))
            if notes and directive != "unsupported":
                self.fail(tag, line, "ovn-trace printed what the harness cannot model: %s" % "; ".join(notes))
                return
            if self.args.expect_only:
                log("EXPECT %s  %s" % (tag, line))
                for port, b in observable:
                    log("    %s: %s" % (port, fmt_headers(headers(b))))
                for port, _b in hidden:
                    log("    %s: (not observable here: type %s)" % (port, self.lsps.get(port, {}).get("type")))
                if not exp:
                    log("    drop")
                if exc:
                    log("    (exception %s: %s)" % (exc["id"], exc["reason"]))
                return
            inwire = self.wire_of(inport)
            if not inwire:
                self.fail(tag, line, "input port %s is not bound here (type %s)" % (
                    inport, self.lsps.get(inport, {}).get("type")))
                return
            wire, vlan = inwire
            send = frame
            if vlan is not None:
                send = frame[:12] + struct.pack("!HH", 0x8100, vlan) + frame[12:]
            try:
                d0 = self.unsupported_drops()
                got = self.inject(wire, send, len(observable))
                d1 = self.unsupported_drops()
            except ScenarioError as e:
                self.fail(tag, line, str(e))
                return
            actual = []
            for w, frames in got.items():
                for fr in frames:
                    actual.append(self.attribute(w, fr))
            diff = compare(observable, actual, "exception %s" % exc["id"] if exc else "ovn-trace")
            suffix = ""
            if directive == "unsupported":
                suffix = "  (declared unsupported; ovn-trace: %s; unsupported drops +%d)" % (suffix_trace, d1 - d0)
                if d1 == d0:
                    diff.append("declared `#! petrel: unsupported` but Petrel's `unsupported` drop counter "
                                "did not move")
            if hidden:
                suffix = "  (+ %s: not observable, not bound to this chassis)" % ", ".join(p for p, _ in hidden)
            if exc:
                suffix += "  (exception %s)" % exc["id"]
            self.last = (tag, line, not diff)
            if diff:
                self.fail(tag, line, "\n".join(diff), inport=inport, flow=flow)
            else:
                self.passed += 1
                log("PASS %s  %s -> %s%s" % (tag, inport, outputs_summary(observable), suffix))

    def fail(self, tag, line, why, inport=None, flow=None):
        self.failed += 1
        log("FAIL %s  %s\n      %s" % (tag, line, why.replace("\n", "\n      ")))
        if inport and self.args.trace_failures:
            w = self.wire_of(inport)
            if w:
                p = self.petrelctl("trace", w[0], 'inport == "%s" && %s' % (inport, flow))
                if "unknown field" in p.stdout + p.stderr and self.last_flow:
                    # petrelctl trace knows fewer fields than ovn-trace: trace
                    # ovn-trace's resolved flow in the fields petrelctl has
                    mf = petrelctl_flow(*self.last_flow)
                    p = self.petrelctl("trace", w[0], 'inport == "%s" && %s' % (inport, mf))
                    p.stdout = "(as: %s)\n%s" % (mf, p.stdout)
                log("      petrelctl trace %s:\n        %s" % (
                    w[0], (p.stdout + p.stderr).strip().replace("\n", "\n        ")))

    def report_refusals(self):
        p = self.petrelctl("drops")
        log("  petrelctl drops (%s):\n    %s" % (self.name, (p.stdout + p.stderr).strip().replace("\n", "\n    ")))
        p = self.petrelctl("dump-tables")
        with open(os.path.join(self.work, "dump-tables.txt"), "w") as f:
            f.write(p.stdout + p.stderr)
        p = self.petrelctl("refusals")
        lines = (p.stdout + p.stderr).strip().splitlines()
        if lines:
            more = "\n    ... (%d more lines)" % (len(lines) - 40) if len(lines) > 40 else ""
            log("  petrelctl refusals (%s):\n    %s%s" % (self.name, "\n    ".join(lines[:40]), more))

    def go(self):
        try:
            self.start_ovn()
            self.read_ports()
            if not self.args.expect_only:
                self.start_petrel()
            self.run_packets()
            if not self.args.expect_only:
                time.sleep(self.args.settle_ms / 1000.0)
                self.late_frames()
            if self.failed and not self.args.expect_only:
                self.report_refusals()
        except ScenarioError as e:
            n = count_packets(self.path)
            log("FAIL %s  (scenario setup) %s" % (self.name, str(e).strip().replace("\n", "\n      ")))
            self.failed += max(n - self.passed - self.failed, 1)
        finally:
            self.cleanup()


def petrelctl_flow(protos, kv):
    """ovn-trace's resolved flow in the fields `petrelctl trace` knows
    (no tcp.flags, nd.*, ip6.label)."""
    t = ["eth.src == %s" % kv.get("dl_src", "00:00:00:00:00:00"),
         "eth.dst == %s" % kv.get("dl_dst", "00:00:00:00:00:00")]
    if "dl_vlan" in kv:
        t.append("vlan.vid == %s" % kv["dl_vlan"])
    proto = protos[0] if protos else None
    names = {"tcp": ("ip4", "tcp"), "udp": ("ip4", "udp"), "sctp": ("ip4", "sctp"), "icmp": ("ip4", "icmp4"),
             "ip": ("ip4", None), "tcp6": ("ip6", "tcp"), "udp6": ("ip6", "udp"), "sctp6": ("ip6", "sctp"),
             "icmp6": ("ip6", "icmp6"), "ipv6": ("ip6", None)}
    if proto in ("arp", "rarp"):
        t += ["arp.op == %s" % kv.get("arp_op", "0"), "arp.sha == %s" % kv.get("arp_sha"),
              "arp.spa == %s" % kv.get("arp_spa"), "arp.tha == %s" % kv.get("arp_tha"),
              "arp.tpa == %s" % kv.get("arp_tpa")]
    elif proto in names:
        l3, l4 = names[proto]
        src, dst = ("nw_src", "nw_dst") if l3 == "ip4" else ("ipv6_src", "ipv6_dst")
        t += ["%s.src == %s" % (l3, kv.get(src)), "%s.dst == %s" % (l3, kv.get(dst)),
              "ip.ttl == %s" % kv.get("nw_ttl", "0")]
        if l4 in ("tcp", "udp", "sctp"):
            t += ["%s.src == %s" % (l4, kv.get("tp_src", "0")), "%s.dst == %s" % (l4, kv.get("tp_dst", "0"))]
        elif l4 in ("icmp4", "icmp6"):
            t += ["%s.type == %s" % (l4, kv.get("icmp_type", "0")), "%s.code == %s" % (l4, kv.get("icmp_code", "0"))]
        elif "nw_proto" in kv:
            t.append("ip.proto == %s" % kv["nw_proto"])
    else:
        t.append("eth.type == %s" % kv.get("dl_type", "0"))
    return " && ".join(t)


def fmt_headers(h):
    return " ".join("%s=%s" % (k, v) for k, v in h.items())


def compare(expected, actual, label="ovn-trace"):
    """Differences between [(port, bytes)] expected and [(port, bytes)] got."""
    diff = []
    ex = sorted(expected, key=lambda x: x[0])
    ac = sorted(actual, key=lambda x: x[0])
    ports = sorted({p for p, _ in ex} | {p for p, _ in ac})
    for port in ports:
        e = [headers(b) for p, b in ex if p == port]
        a = [headers(b) for p, b in ac if p == port]
        if not e:
            for h in a:
                diff.append("%s: unexpected output: %s" % (port, fmt_headers(h)))
            continue
        if not a:
            for h in e:
                diff.append("%s: missing output (expected %s)" % (port, fmt_headers(h)))
            continue
        unmatched = list(a)
        for h in e:
            if h in unmatched:
                unmatched.remove(h)
                continue
            if unmatched:
                g = unmatched.pop(0)
                d = ["%s: expected %s, got %s" % (k, h.get(k, "-"), g.get(k, "-"))
                     for k in list(h) + [k for k in g if k not in h] if h.get(k) != g.get(k)]
                diff.append("%s: %s" % (port, "; ".join(d)))
            else:
                diff.append("%s: missing output (expected %s)" % (port, fmt_headers(h)))
        for g in unmatched:
            diff.append("%s: unexpected extra output: %s" % (port, fmt_headers(g)))
    if not diff:
        return []
    exp_s = ",".join(p for p, _ in ex) or "drop"
    act_s = ",".join(p for p, _ in ac) or "drop"
    return ["%s: %s | petrel: %s" % (label, exp_s, act_s)] + diff


def count_packets(path):
    try:
        with open(os.path.join(path, "packets")) as f:
            return sum(1 for ln in f if ln.split("#", 1)[0].strip())
    except OSError:
        return 1


def find_scenarios(dirs):
    out = []
    for d in dirs:
        if not os.path.isdir(d):
            raise SystemExit("ovn-diff: %s is not a directory" % d)
        if os.path.exists(os.path.join(d, "nb.sh")):
            out.append(d)
            continue
        for root, subdirs, files in os.walk(d):
            subdirs.sort()
            if "nb.sh" in files:
                out.append(root)
                subdirs[:] = []
    return [os.path.abspath(p) for p in out]


def main():
    ap = argparse.ArgumentParser(prog="ovn-diff.sh", add_help=False)
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--expect-only", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--keep-failed", action="store_true")
    ap.add_argument("--no-trace", dest="trace_failures", action="store_false")
    ap.add_argument("--timeout", type=int, default=30)
    ap.add_argument("--settle-ms", type=int, default=100)
    ap.add_argument("--exceptions", default=os.path.join(HERE, "exceptions"))
    args = ap.parse_args()
    if not args.dirs:
        raise SystemExit("usage: scripts/ovn-diff.sh [OPTIONS] DIR...  (see --help)")
    exceptions = load_exceptions(args.exceptions)
    scenarios = find_scenarios(args.dirs)
    if not scenarios:
        raise SystemExit("ovn-diff: no scenario (a directory with nb.sh) under %s" % " ".join(args.dirs))

    def on_signal(signum, _frame):
        global INTERRUPTED
        INTERRUPTED = True
        if not IN_CLEANUP:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    passed = failed = 0
    failing = []
    t0 = time.time()
    try:
        for path in scenarios:
            s = Scenario(path, args, exceptions)
            log("== %s" % s.name)
            s.go()
            if INTERRUPTED:
                raise KeyboardInterrupt
            passed += s.passed
            failed += s.failed
            if s.failed:
                failing.append(s.name)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    names = {os.path.basename(os.path.normpath(p)) for p in scenarios}
    for e in exceptions:
        if e["scenario"] in names and not e["used"] and not args.expect_only:
            log("FAIL exception %s (%s) matched no packet: stale" % (e["id"], e["scenario"]))
            failed += 1
    if failing:
        log("failing scenarios: %s" % " ".join(failing))
    log("%d passed, %d failed  (%d scenarios, %.0f s)" % (passed, failed, len(scenarios), time.time() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
