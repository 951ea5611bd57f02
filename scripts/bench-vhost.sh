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
# peer-bench counts CPU use by processes it did not start itself as
# "foreign"; petreld runs under the guard, so its own polling core (~100%)
# is in that figure for petrel-xconnect. A row is clean when the rest is
# below 10% of a vCPU. Per setup: median gen_rx_Mpps (column 4) and median
# SUT cycles/packet over clean rows (all rows if none is clean); testpmd's
# cycles from the table (column 14), petreld's "busy cycles/packet" from its
# final report, one per run.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
rows() {  # rows SETUP OWN%  -> "run Mpps sut_cyc" of clean rows (or all)
    local clean
    clean=$(awk -F'\t' -v s="$1" -v own="$2" 'NR > 1 && $1 == s { f = $16; sub(/%/, "", f); if (f - own < 10) print $3, $4, $14 }' "$res/results.tsv")
    [[ -n $clean ]] && echo "$clean" || awk -F'\t' -v s="$1" 'NR > 1 && $1 == s { print $3, $4, $14 }' "$res/results.tsv"
}
# petreld's cycles per packet, by run, from its own final report.
pcyc_of() { grep -h "busy cycles/packet" "$res/petrel-xconnect.swap.r$1.petreld.log" 2>/dev/null |
    sed -E 's/.* ([0-9.]+) busy cycles\/packet.*/\1/'; }
table() {  # run Mpps sut_cyc per clean row, petreld's cycles filled in
    rows limit 0 | sed 's/^/limit /'
    rows petrel-xconnect 100 | while read -r run mpps _; do echo "petrel-xconnect $run $mpps $(pcyc_of "$run")"; done
}
table > "$res/bench-vhost.rows"
echo "clean rows (foreign CPU < 10% besides the SUT's own): setup run Mpps SUT-cycles/pkt"
sed 's/^/  /' "$res/bench-vhost.rows"
# This VM has fast and slow phases (the generator's own cost per packet
# changes 2-3x between runs), so both the median and the best run are shown.
stat() {  # stat SETUP median|max COLUMN
    awk -v s="$1" -v c="$3" '$1 == s && $c != "-" { print $c }' "$res/bench-vhost.rows" |
        if [[ $2 == max ]]; then sort -n | tail -1; else median; fi
}
printf '\n%-40s %9s %9s %14s\n' "SUT (vhost-user client ports, core 1)" "Mpps med" "Mpps best" "SUT cyc/pkt med"
printf '%-40s %9s %9s %14s\n' "dpdk-testpmd io over DPDK vhost (b)" "$(stat limit median 3)" "$(stat limit max 3)" "$(stat limit median 4)"
printf '%-40s %9s %9s %14s\n' "petreld --xconnect a:b (a)" "$(stat petrel-xconnect median 3)" "$(stat petrel-xconnect max 3)" "$(stat petrel-xconnect median 4)"
awk -v a="$(stat petrel-xconnect median 3)" -v b="$(stat limit median 3)" -v A="$(stat petrel-xconnect max 3)" -v B="$(stat limit max 3)" \
    'BEGIN { if (b > 0 && B > 0) printf "ratio (a)/(b): median %.3f, best %.3f (goal >= 1.0)\n", a / b, A / B }'
rm -f /tmp/bench-vhost.$$.out
