#!/usr/bin/env bash
# bench-ovn.sh - Mpps through an OVN logical switch (two vhost-user ports,
# port security, 64 B), Petrel next to OVS-DPDK + ovn-controller and the
# testpmd ceiling, in one run, with the method of DESIGN.md "Peer
# baselines": the shared peer-bench script (../shared/tools/peer-bench.sh,
# run, not copied) starts one dpdk-testpmd generator on core 0 with two
# net_virtio_user server ports (closed loop: tx_first 16, then 5tswap) and,
# in turn, on core 1:
#   limit            dpdk-testpmd io forwarding over DPDK's vhost library
#   ovn-noacl        OVS-DPDK 3.1 + ovn-controller 23.03: one logical switch,
#                    two ports with addresses and port security
#   petrel-xconnect  here: scripts/bench/petreld-ovn (PETRELD=), i.e. petreld
#                    + petrel-ovn on the same logical switch, built by
#                    ovn-nbctl under a private ovsdb-server + ovn-northd
# Prints Mpps (generator RX, both directions), SUT cycles/packet and the
# ratios Petrel/ceiling and Petrel/OVS+OVN.
#
#   scripts/bench-ovn.sh                 (root; builds the binaries in release)
#   REPS=3 DURATION=20 scripts/bench-ovn.sh
# Env: REPS (1), DURATION (20 s), WARMUP (5 s), PEER_BENCH (its path).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PEER_BENCH=${PEER_BENCH:-../shared/tools/peer-bench.sh}
[[ -f $PEER_BENCH ]] || { echo "no $PEER_BENCH (the shared tools)" >&2; exit 1; }
export REPS=${REPS:-1} DURATION=${DURATION:-20} WARMUP=${WARMUP:-5}
export BASE=${BASE:-/tmp/petrel-bench-ovn}

cargo build --release -j1 -p petrel-dataplane --bin petreld
cargo build --release -j1 -p petrel-control --bin petrel-ovn --bin petrelctl
export PETRELD=$PWD/scripts/bench/petreld-ovn PETREL_BIN=$PWD/target/release

SETUPS="limit ovn-noacl petrel-xconnect" GEN_MODES=swap bash "$PEER_BENCH"
res=$(ls -td "$BASE"/results/*/ | head -1)
echo
echo "results in $res (petrel-xconnect = petreld + petrel-ovn on the OVN switch)"
sum=$(awk -F'\t' 'NR > 1 { m[$1] += $4; n[$1]++; if ($14 != "-") c[$1] = $14 }
     END { for (s in m) printf "%s %.2f %s\n", s, m[s] / n[s], c[s] }' "$res/results.tsv")
get() { awk -v s="$1" -v f="$2" '$1 == s { print $f }' <<<"$sum"; }
pcyc=$(grep -h "busy cycles/packet" "$res"/petrel-xconnect.*.petreld.log 2>/dev/null |
    sed -E 's/.* ([0-9.]+) busy cycles\/packet.*/\1/' | awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n }')
printf '\n%-46s %8s %16s\n' "SUT on core 1 (vhost-user, 64 B, swap loop)" "Mpps" "SUT cycles/pkt"
printf '%-46s %8s %16s\n' "dpdk-testpmd io, DPDK vhost (ceiling)" "$(get limit 2)" "$(get limit 3)"
printf '%-46s %8s %16s\n' "OVS-DPDK + ovn-controller, OVN switch" "$(get ovn-noacl 2)" "$(get ovn-noacl 3)"
printf '%-46s %8s %16s\n' "petreld + petrel-ovn, OVN switch" "$(get petrel-xconnect 2)" "${pcyc:--}"
awk -v p="$(get petrel-xconnect 2)" -v l="$(get limit 2)" -v o="$(get ovn-noacl 2)" \
    'BEGIN { if (l > 0 && o > 0) printf "Petrel/ceiling %.3f (target >= 0.95), OVS+OVN/ceiling %.3f, Petrel/OVS+OVN %.2f\n", p / l, o / l, p / o }'
