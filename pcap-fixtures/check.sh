#!/usr/bin/env bash
# Check, with tshark's dissectors, that every fixture packet is what
# manifest.json says it is. Exit status 0 only if every fact holds.
#
#   pcap-fixtures/check.sh            check the committed fixtures
#   pcap-fixtures/check.sh --regen    also re-run make.py into a temp dir and
#                                     require byte-identical output
#
# tshark is the independent oracle here: a fact is asserted only if tshark
# reports it itself. Reassembly is off (-o ip.defragment:FALSE,
# -o ipv6.defragment:FALSE) so each frame dissects on its own, as a fast path
# sees it; IPv4, UDP and TCP checksums are verified, so a valid packet with a
# wrong checksum fails (it would draw a warning).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3  # Debian's interpreter: stdlib json here, scapy for --regen

if ! command -v tshark >/dev/null 2>&1; then
    echo "check.sh: tshark not found; run scripts/bootstrap.sh" >&2
    exit 2
fi

if [[ "${1:-}" == "--regen" ]]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$PY" "$here/make.py" "$tmp" 2>/dev/null
    for f in "$here"/*.pcap "$here/manifest.json"; do
        if ! cmp -s "$f" "$tmp/$(basename "$f")"; then
            echo "FAIL $(basename "$f"): make.py does not reproduce it byte for byte" >&2
            exit 1
        fi
    done
    echo "ok   make.py reproduces every fixture byte for byte"
fi

exec "$PY" - "$here" <<'PYEOF'
import json
import os
import subprocess
import sys

here = sys.argv[1]
manifest = json.load(open(os.path.join(here, "manifest.json")))

FIELDS = """
frame.len eth.dst eth.src eth.type
vlan.id vlan.priority vlan.dei vlan.etype ieee8021ad.id ieee8021ad.priority ieee8021ad.dei
arp.opcode arp.src.hw_mac arp.src.proto_ipv4 arp.dst.hw_mac arp.dst.proto_ipv4
ip.src ip.dst ip.proto ip.ttl ip.dsfield ip.flags.mf ip.frag_offset ip.hdr_len
ipv6.src ipv6.dst ipv6.hlim ipv6.tclass ipv6.flow ipv6.nxt ipv6.fraghdr.offset ipv6.fraghdr.more ipv6.fraghdr.nxt
tcp.srcport tcp.dstport tcp.flags udp.srcport udp.dstport
icmp.type icmp.code icmpv6.type icmpv6.code
icmpv6.nd.ns.target_address icmpv6.nd.na.target_address icmpv6.opt.type icmpv6.opt.linkaddr
geneve.version geneve.flags.oam geneve.flags.critical geneve.proto_type geneve.vni
geneve.option.class geneve.option.type geneve.option.unknown.data
_ws.expert.message _ws.expert.severity _ws.malformed
""".split()
WARN = 0x600000  # expert severity "warning"; valid packets must stay below it


def tshark(path, extra_fields):
    cmd = ["tshark", "-n", "-r", path, "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
           "-T", "json"]
    for f in FIELDS + sorted(set(extra_fields) - set(FIELDS)):
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [p["_source"]["layers"] for p in json.loads(out)]


def layers(facts):
    """The manifest facts of each Ethernet frame in a packet, outer first."""
    out = [facts]
    g = facts.get("geneve")
    if g and "inner" in g:
        out += layers(g["inner"])
    return out


def expected(facts):
    """Field -> list of every occurrence tshark should show, outer first."""
    e = {f: [] for f in FIELDS if not f.startswith("_ws")}
    e["frame.len"] = [facts["len"]]
    for lay in layers(facts):
        e["eth.dst"].append(lay["eth_dst"])
        e["eth.src"].append(lay["eth_src"])
        tags = lay["vlan"]
        e["eth.type"].append(tags[0]["tpid"] if tags else lay["eth_type"])
        for n, t in enumerate(tags):
            nxt = tags[n + 1]["tpid"] if n + 1 < len(tags) else lay["eth_type"]
            p = "ieee8021ad" if t["tpid"] == 0x88A8 else "vlan"
            e[p + ".id"].append(t["vid"])
            e[p + ".priority"].append(t["pcp"])
            e[p + ".dei"].append(t["dei"])
            if p == "vlan":
                e["vlan.etype"].append(nxt)
        if "arp" in lay:
            a = lay["arp"]
            e["arp.opcode"].append(a["op"])
            e["arp.src.hw_mac"].append(a["sha"])
            e["arp.src.proto_ipv4"].append(a["spa"])
            e["arp.dst.hw_mac"].append(a["tha"])
            e["arp.dst.proto_ipv4"].append(a["tpa"])
        if lay["eth_type"] == 0x0800:
            e["ip.src"].append(lay["ip_src"])
            e["ip.dst"].append(lay["ip_dst"])
            e["ip.proto"].append(lay["ip_proto"])
            e["ip.ttl"].append(lay["ip_ttl"])
            e["ip.dsfield"].append(lay["ip_tos"])
            e["ip.flags.mf"].append({"first": 1, "no": 0}.get(lay["frag"]))  # later: either
            e["ip.frag_offset"].append(0 if lay["frag"] != "later" else "nonzero")
            e["ip.hdr_len"].append(lay["l4_offset"] - lay["l3_offset"])
        if lay["eth_type"] == 0x86DD:
            e["ipv6.src"].append(lay["ip_src"])
            e["ipv6.dst"].append(lay["ip_dst"])
            e["ipv6.hlim"].append(lay["ip_ttl"])
            e["ipv6.tclass"].append(lay["ip_tos"])
            e["ipv6.flow"].append(lay["ipv6_label"])
            exts = lay["ipv6_ext"]
            e["ipv6.nxt"].append(exts[0] if exts else lay["ip_proto"])
            if 44 in exts:
                e["ipv6.fraghdr.offset"].append(0 if lay["frag"] != "later" else "nonzero")
                e["ipv6.fraghdr.more"].append(1 if lay["frag"] == "first" else 0)
                e["ipv6.fraghdr.nxt"].append(lay["ip_proto"])
        if "sport" in lay:
            p = {6: "tcp", 17: "udp"}[lay["ip_proto"]]
            e[p + ".srcport"].append(lay["sport"])
            e[p + ".dstport"].append(lay["dport"])
            if p == "tcp":
                e["tcp.flags"].append(lay["tcp_flags"])
        if "icmp_type" in lay:
            p = "icmp" if lay["ip_proto"] == 1 else "icmpv6"
            e[p + ".type"].append(lay["icmp_type"])
            e[p + ".code"].append(lay["icmp_code"])
        if "nd" in lay:
            nd = lay["nd"]
            kind = "ns" if lay["icmp_type"] == 135 else "na"
            e["icmpv6.nd.%s.target_address" % kind].append(nd["target"])
            for t, k in ((1, "sll"), (2, "tll")):
                if k in nd:
                    e["icmpv6.opt.type"].append(t)
                    e["icmpv6.opt.linkaddr"].append(nd[k])
        g = lay.get("geneve")
        if g:
            e["geneve.version"].append(g["version"])
            e["geneve.flags.oam"].append(int(g["oam"]))
            e["geneve.flags.critical"].append(int(g["critical"]))
            e["geneve.proto_type"].append(g["proto"])
            e["geneve.vni"].append(g["vni"])
            for o in g["options"]:
                e["geneve.option.class"].append(o["class"])
                e["geneve.option.type"].append(o["type"])
                e["geneve.option.unknown.data"].append(o["data"])
    return e


def same(want, got):
    if want is None:
        return True
    if want == "nonzero":
        return int(got, 0) != 0
    if isinstance(want, bool) or isinstance(want, int):
        try:
            return int(got, 0) == int(want)
        except ValueError:
            return False
    return str(want).lower() == got.lower()


def ovn_keys_consistent(g):
    """The manifest's ingress/egress are what the OVN option data encodes."""
    for o in g["options"]:
        if o["class"] == 0x0102 and o["type"] == 0x80:
            w = int(o["data"], 16)
            return g.get("ingress") == (w >> 16) & 0x7FFF and g.get("egress") == w & 0xFFFF
    return "ingress" not in g


n_fail = n_pkt = 0
for name, entries in manifest["files"].items():
    extra = [f for e in entries for f in e.get("tshark_fields", {})]
    dissected = tshark(os.path.join(here, name), extra)
    errs = []
    if len(dissected) != len(entries):
        errs.append("%d packets in the pcap, %d in the manifest" % (len(dissected), len(entries)))
    for facts, got in zip(entries, dissected):
        i = facts["index"]
        n_pkt += 1
        experts = got.get("_ws.expert.message", [])
        if "drop" in facts:
            want = facts.get("tshark_expert")
            if want and not any(want in m for m in experts):
                errs.append("#%d (%s): tshark expert info %r lacks %r" % (i, facts["drop"], experts, want))
            where = facts.get("tshark_malformed_in")
            if where and "[Malformed Packet: %s]" % where not in got.get("_ws.malformed", []):
                errs.append("#%d: tshark did not call it malformed in %s: %r" % (i, where,
                                                                               got.get("_ws.malformed")))
            for f, w in facts.get("tshark_fields", {}).items():
                have = got.get(f, [])
                if len(w) != len(have) or not all(same(x, h) for x, h in zip(w, have)):
                    errs.append("#%d: %s: manifest %r, tshark %r" % (i, f, w, have))
        if "drop" in facts and "geneve" not in facts:
            # Broken packets: only the headers before the defect must match.
            if "ip_proto" in facts:
                for f, w in expected(facts).items():
                    if w and f in ("eth.src", "eth.dst", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
                                   "udp.srcport", "udp.dstport"):
                        g = got.get(f, [])
                        if not g or not same(w[0], g[0]):
                            errs.append("#%d: %s: manifest %r, tshark %r" % (i, f, w[0], g))
            continue
        # Valid packets, and Geneve packets dropped by policy (sound bytes).
        sev = [int(s, 0) for s in got.get("_ws.expert.severity", [])]
        if "_ws.malformed" in got or any(s >= WARN for s in sev):
            errs.append("#%d: valid packet has tshark warnings: %r" % (i, experts))
        for f, want in expected(facts).items():
            have = got.get(f, [])
            if len(want) != len(have) or not all(same(w, h) for w, h in zip(want, have)):
                errs.append("#%d: %s: manifest %r, tshark %r" % (i, f, want, have))
        for lay in layers(facts):
            if "geneve" in lay and not ovn_keys_consistent(lay["geneve"]):
                errs.append("#%d: manifest ingress/egress disagree with the option data" % i)
    if errs:
        n_fail += 1
        print("FAIL %s" % name)
        for e in errs:
            print("     " + e)
    else:
        print("ok   %s (%d packets)" % (name, len(entries)))
print("%d files, %d packets checked, %d files failed" % (len(manifest["files"]), n_pkt, n_fail))
sys.exit(1 if n_fail else 0)
PYEOF
