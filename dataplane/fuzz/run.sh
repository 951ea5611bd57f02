#!/usr/bin/env bash
# Seeds the corpora from pcap-fixtures/ (every frame of every capture) and
# runs each fuzz target for SECONDS (default 60). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); the machine's stable toolchain is used with
# RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo-fuzz passes.
#   dataplane/fuzz/run.sh [SECONDS] [TARGET...]
set -Eeuo pipefail
cd "$(dirname "$0")"
SECONDS_PER=${1:-60}; shift || true
TARGETS=("$@"); ((${#TARGETS[@]})) || TARGETS=(extract geneve_decap ctl_frame microflow)
mkdir -p corpus/extract corpus/geneve_decap corpus/ctl_frame corpus/microflow
/usr/bin/python3 - <<'PY'
import glob, hashlib, os
from scapy.all import rdpcap
for f in glob.glob("../../pcap-fixtures/*.pcap"):
    for p in rdpcap(f):
        b = bytes(p)
        n = hashlib.sha1(b).hexdigest()[:16]
        for d in ("corpus/extract", "corpus/geneve_decap"):
            open(os.path.join(d, n), "wb").write(b)
for i, s in enumerate([
    "eth.src == 02:00:00:00:00:01 && eth.dst == ff:ff:ff:ff:ff:ff && arp",
    "ip4.src == 10.0.0.1 && ip4.dst == 10.0.0.2 && ip.ttl == 64 && udp.src == 5000 && udp.dst == 53",
    "ip6.src == fe80::1 && icmp6",
]):
    open(f"corpus/microflow/seed{i}", "w").write(s)
body = b'{"type":"show"}'
open("corpus/ctl_frame/seed0", "wb").write(b"PTRL" + (1).to_bytes(2, "big") + len(body).to_bytes(4, "big") + body)
PY
for t in "${TARGETS[@]}"; do
    echo "== fuzz $t for ${SECONDS_PER}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER" -max_len=2048 2>&1 | tail -n 4
done
