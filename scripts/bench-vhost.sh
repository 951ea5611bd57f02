#!/usr/bin/env bash
# Petrel's vhost-user backend against DPDK's vhost library, in one run, with
# the method of DESIGN.md "Peer baselines": the shared peer-bench script
# (../shared/tools/peer-bench.sh, not copied here) starts one dpdk-testpmd
# generator on core 0 with two net_virtio_user server ports (closed loop,
# `start tx_first 16`, then 5tswap, 64 B frames, 256 flows) and, in turn,
#   limit            dpdk-testpmd, two net_vhost client ports, io forwarding
#   petrel-xconnect  petreld --pmd-cores 1 --xconnect a:b, two vhost-user client ports
# polling core 1. Reported: Mpps at the generator (both directions summed),
# the SUT's busy cycles per packet (testpmd --record-core-cycles; petreld's
# own "busy cycles/packet" from its final report) and petrel / limit.
#
#   scripts/bench-vhost.sh                       (root; builds petreld in release)
#   REPS=3 DURATION=20 scripts/bench-vhost.sh
# Env: REPS (1), DURATION (20 s), WARMUP (5 s), PEER_BENCH (path of peer-bench.sh).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PEER_BENCH=${PEER_BENCH:-../shared/tools/peer-bench.sh}
[[ -x $PEER_BENCH || -f $PEER_BENCH ]] || { echo "no $PEER_BENCH (the shared tools)" >&2; exit 1; }
export REPS=${REPS:-1} DURATION=${DURATION:-20} WARMUP=${WARMUP:-5}
export BASE=${BASE:-/tmp/petrel-bench-vhost}

cargo build --release -j1 -p petrel-dataplane --bin petreld
# peer-bench.sh kills the subshell that started petreld, not petreld: guard it.
export PETRELD_BIN=$PWD/target/release/petreld PETRELD=$PWD/scripts/petreld-orphan-guard.sh

SETUPS="limit petrel-xconnect" GEN_MODES=swap bash "$PEER_BENCH" | tee /tmp/bench-vhost.$$.out
res=$(ls -td "$BASE"/results/*/ | head -1)
echo
echo "results in $res"
# Mean over reps of gen_rx_Mpps (column 4) per setup; SUT cycles/packet:
# testpmd's from the table (column 14), petreld's from its own final report.
awk -F'\t' 'NR > 1 && ($1 == "limit" || $1 == "petrel-xconnect") { m[$1] += $4; n[$1]++; if ($14 != "-") c[$1] = $14 }
     END { for (s in m) printf "%s\t%.2f\t%s\n", s, m[s] / n[s], c[s] }' "$res/results.tsv" > /tmp/bench-vhost.$$.sum
pcyc=$(grep -h "busy cycles/packet" "$res"/petrel-xconnect.*.petreld.log 2>/dev/null |
    sed -E 's/.* ([0-9.]+) busy cycles\/packet.*/\1/' | awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n }')
lim=$(awk -F'\t' '$1 == "limit" { print $2 }' /tmp/bench-vhost.$$.sum)
lcyc=$(awk -F'\t' '$1 == "limit" { print $3 }' /tmp/bench-vhost.$$.sum)
pet=$(awk -F'\t' '$1 == "petrel-xconnect" { print $2 }' /tmp/bench-vhost.$$.sum)
printf '\n%-40s %8s %16s\n' "SUT (vhost-user client ports, core 1)" "Mpps" "SUT cycles/pkt"
printf '%-40s %8s %16s\n' "dpdk-testpmd io over DPDK vhost (b)" "$lim" "${lcyc:--}"
printf '%-40s %8s %16s\n' "petreld --xconnect a:b (a)" "$pet" "${pcyc:--}"
awk -v a="$pet" -v b="$lim" 'BEGIN { if (b > 0) printf "ratio (a)/(b): %.3f (goal >= 1.0)\n", a / b }'
rm -f /tmp/bench-vhost.$$.out /tmp/bench-vhost.$$.sum
