#!/usr/bin/env bash
# Mpps of petreld against `dpdk-testpmd --forward-mode=io`, on the same
# virtual devices, in the same run, alternating, on the same cores:
#   testpmd   io forwarding (the ceiling)
#   xconnect  petreld --xconnect a:b (a plain wire: no parsing)
#   tables    petreld running published tables: a logical wire through a
#             TABLE_STAGES-stage ingress pipeline (dataplane/examples/bench_tables.rs),
#             flow cache on; every packet is parsed, looked up, committed
#
# All cross-connect two net_null ports (the null PMD is its own packet
# generator and sink: rx allocates 64 B mbufs, tx frees them), so the number is
# the SUT's per-packet forwarding cost with no NIC and no memcpy. The forwarding
# thread runs on SUT_CORE, the main/management lcore on MAIN_CORE, so nothing
# else busy-polls the measured core. Each sample is the sum of both ports' tx
# packets per second over one second; a run's value is the median of its
# samples after WARMUP; the table gives the median and min-max over REPS runs.
#
#   scripts/bench-null.sh                      (root; builds petreld in release)
#   REPS=5 DURATION=12 SUTS="testpmd tables" scripts/bench-null.sh
# Writes results to $OUT (default target/bench/null-<time>.tsv).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
REPS=${REPS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SUT_CORE=${SUT_CORE:-1}
MAIN_CORE=${MAIN_CORE:-0}
SIZE=${SIZE:-64}
SUTS=${SUTS:-"testpmd xconnect tables"}
TABLE_STAGES=${TABLE_STAGES:-10}
mkdir -p target/bench
OUT=${OUT:-target/bench/null-$(date +%Y%m%d-%H%M%S).tsv}

scripts/bootstrap.sh >/dev/null
cargo build --release --quiet -p petrel-dataplane --bin petreld
cargo build --release --quiet -p petrel-control --bin petrelctl
PETRELD=target/release/petreld
PETRELCTL=target/release/petrelctl
TABLES=$(mktemp /tmp/petrel-bench-tables.XXXXXX.json)
cargo run --release --quiet -p petrel-dataplane --no-default-features --example bench_tables -- "$TABLE_STAGES" > "$TABLES" 
EAL_COMMON="--in-memory --no-pci --no-telemetry -m 512 --log-level=*:warning"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print 0; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }

# Prints one line per sample: total tx pps of both ports.
run_testpmd() {
    timeout -s INT $((DURATION + 3)) dpdk-testpmd $EAL_COMMON -l "$MAIN_CORE,$SUT_CORE" --main-lcore "$MAIN_CORE" \
        --vdev "net_null0,size=$SIZE" --vdev "net_null1,size=$SIZE" -- \
        --forward-mode=io --nb-cores=1 --stats-period 1 --rxd=1024 --txd=1024 2>&1 |
        awk '/Port statistics/ {if (n) print s; s=0; n++} /Tx-pps:/ {s+=$2} END {}' || true
}
run_xconnect() {
    timeout -s INT $((DURATION + 3)) "$PETRELD" --eal-args "$EAL_COMMON -l $MAIN_CORE" --pmd-cores "$SUT_CORE" \
        --control-socket none \
        --port "a=dpdk,devargs=net_null0,size=$SIZE" --port "b=dpdk,devargs=net_null1,size=$SIZE" \
        --xconnect a:b --stats-interval 1 2>&1 |
        awk '/^port a / {s=$7} /^port b / {print s+$7}' || true
}
# The tables are published one second in; the first samples are warm-up anyway.
run_tables() {
    local sock log
    sock=$(mktemp -u /tmp/petrel-bench.XXXXXX.sock); log=$(mktemp /tmp/petrel-bench.XXXXXX.log)
    timeout -s INT $((DURATION + 4)) "$PETRELD" --eal-args "$EAL_COMMON -l $MAIN_CORE" --pmd-cores "$SUT_CORE" \
        --control-socket "$sock" --ports-file none \
        --port "a=dpdk,devargs=net_null0,size=$SIZE" --port "b=dpdk,devargs=net_null1,size=$SIZE" \
        --stats-interval 1 > "$log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
    sleep 0.5
    "$PETRELCTL" --socket "$sock" publish "$TABLES" >&2
    wait "$pid" || true
    awk '/^port a / {s=$7} /^port b / {print s+$7}' "$log" | tail -n +2 || true
    rm -f "$log"
}

printf 'sut\trep\tmpps\n' > "$OUT"
for rep in $(seq 1 "$REPS"); do
    for sut in $SUTS; do
        v=$("run_$sut" | tail -n +$((WARMUP + 1)) | head -n "$DURATION" | median || true)
        mpps=$(awk -v v="$v" 'BEGIN {printf "%.2f", v/1e6}')
        printf '%s\t%s\t%s\n' "$sut" "$rep" "$mpps" >> "$OUT"
        echo "rep $rep $sut: $mpps Mpps" >&2
    done
done

stat() { awk -v s="$1" '$1==s {print $3}' "$OUT" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f\t%.2f-%.2f", m, a[1], a[NR]}'; }
echo
printf 'scenario (net_null, %sB)\tMpps(median)\tmin-max\tratio to testpmd\n' "$SIZE"
base=$(stat testpmd | cut -f1)
for sut in $SUTS; do
    r=$(stat "$sut")
    awk -v n="$sut" -v r="$r" -v b="$base" 'BEGIN {split(r, x, "\t"); printf "%s\t%s\t%s\t%s\n", n, x[1], x[2], (b > 0 ? sprintf("%.2f", x[1]/b) : "-")}'
done
echo "results: $OUT"
rm -f "$TABLES"
