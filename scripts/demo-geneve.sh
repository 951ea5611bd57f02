#!/usr/bin/env bash
# The README's main command: a two-node Geneve overlay run by hand on real
# packets. Node A takes a capture of pod traffic (pcap-fixtures/mixed.pcap)
# on its pod port, cross-connects it into a Geneve tunnel (VNI 4242, OVN
# option with logical ports 5 -> 7) and writes what leaves its uplink; node B
# reads that wire, decapsulates, and delivers to its pod port. tshark shows
# the wire; the script checks B's pod output equals A's pod input byte for
# byte, and prints both nodes' stats. (scripts/demo.sh is the OVN demo.)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== building petreld (release)"
cargo build --release --quiet -p petrel-dataplane --bin petreld
PETRELD=target/release/petreld
W=$(mktemp -d /tmp/petrel-demo.XXXXXX)
trap 'rm -rf "$W"' EXIT
# An empty capture (pcap global header only, Ethernet link type) for ports that only transmit.
printf '\xd4\xc3\xb2\xa1\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00\x01\x00\x00\x00' > "$W/empty.pcap"
EAL="--in-memory --no-pci --no-telemetry -m 256 -l 0 --log-level=*:warning"
IN=pcap-fixtures/mixed.pcap

echo
echo "== node A: pod --xconnect--> Geneve tunnel t (192.0.2.1 -> 192.0.2.2, VNI 4242) --> uplink"
$PETRELD --eal-args "$EAL" --pmd-cores 1 --exit-when-idle 300 \
  --port "pod=dpdk,devargs=net_pcap0,rx_pcap=$IN,tx_pcap=$W/a-pod.pcap" \
  --port "up=dpdk,devargs=net_pcap1,rx_pcap=$W/empty.pcap,tx_pcap=$W/wire.pcap" \
  --geneve "t=uplink=up,local=192.0.2.1,remote=192.0.2.2,vni=4242,remote-mac=02:00:00:00:0b:01,ingress-key=5,egress-key=7" \
  --xconnect pod:t

echo
echo "== the wire between the nodes, as tshark dissects it (first 5 frames)"
tshark -n -r "$W/wire.pcap" -c 5 -T fields -E header=y -E occurrence=f \
  -e frame.number -e ip.src -e ip.dst -e udp.srcport -e udp.dstport -e geneve.vni \
  -e geneve.option.class -e geneve.option.type -e geneve.option.unknown.data -e _ws.col.Protocol 2>/dev/null | column -t

echo
echo "== node B: uplink --> Geneve decap (tunnel t from 192.0.2.1, VNI 4242) --xconnect--> pod"
$PETRELD --eal-args "$EAL" --pmd-cores 1 --exit-when-idle 300 \
  --port "pod=dpdk,devargs=net_pcap0,rx_pcap=$W/empty.pcap,tx_pcap=$W/b-pod.pcap" \
  --port "up=dpdk,devargs=net_pcap1,rx_pcap=$W/wire.pcap,tx_pcap=$W/b-up.pcap" \
  --geneve "t=uplink=up,local=192.0.2.2,remote=192.0.2.1,vni=4242,remote-mac=02:00:00:00:0a:01" \
  --xconnect pod:t

echo
/usr/bin/python3 - "$IN" "$W/b-pod.pcap" <<'PY'
import sys
from scapy.all import rdpcap
a = [bytes(p) for p in rdpcap(sys.argv[1])]
b = [bytes(p) for p in rdpcap(sys.argv[2])]
same = a == b
print(f"== result: node A pod sent {len(a)} frames, node B pod received {len(b)}; "
      f"byte-identical and in order: {'YES' if same else 'NO'}")
sys.exit(0 if same else 1)
PY
