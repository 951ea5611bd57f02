#!/usr/bin/env bash
# Mpps of petreld's per-port features against none, in one run, alternating,
# on the same cores (issue 8):
#   plain    petreld --xconnect a:b (a plain wire: no parsing, no features)
#   police   the same with an ingress policer on a and on b at an
#            unreachable limit (1 Tbit/s): every packet passes the bucket
#   mirror   the same with a's ingress mirrored to a third port m
#            (every packet copied into a pool mbuf and sent to m)
#
# All on net_null ports (the null PMD is its own generator and sink, 64 B by
# default), so the number is the per-packet cost with no NIC and no memcpy.
# The PMD runs on SUT_CORE, the main lcore on MAIN_CORE. Each sample is the
# sum of a's and b's tx packets per second over one second; a run's value is
# the median after WARMUP; the table gives the median and min-max over REPS.
#
#   scripts/bench-qos.sh                      (root; builds petreld in release)
#   REPS=5 DURATION=12 scripts/bench-qos.sh
# Writes results to $OUT (default target/bench/qos-<time>.tsv).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
REPS=${REPS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SUT_CORE=${SUT_CORE:-1}
MAIN_CORE=${MAIN_CORE:-0}
SIZE=${SIZE:-64}
SUTS=${SUTS:-"plain police mirror"}
mkdir -p target/bench
OUT=${OUT:-target/bench/qos-$(date +%Y%m%d-%H%M%S).tsv}

scripts/bootstrap.sh >/dev/null
cargo build --release --quiet -p petrel-dataplane --bin petreld
cargo build --release --quiet -p petrel-control --bin petrelctl
PETRELD=target/release/petreld
PETRELCTL=target/release/petrelctl
EAL_COMMON="--in-memory --no-pci --no-telemetry -m 512 --log-level=*:warning"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print 0; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }

# One petreld; $1 configures it over the control socket once it is up.
# Prints one line per sample: total tx pps of a and b.
run_with() {
    local sock log pid
    sock=$(mktemp -u /tmp/petrel-bench.XXXXXX.sock); log=$(mktemp /tmp/petrel-bench.XXXXXX.log)
    timeout -s INT $((DURATION + 4)) "$PETRELD" --eal-args "$EAL_COMMON -l $MAIN_CORE" --pmd-cores "$SUT_CORE" \
        --control-socket "$sock" --ports-file none \
        --port "a=dpdk,devargs=net_null0,size=$SIZE" --port "b=dpdk,devargs=net_null1,size=$SIZE" \
        --port "m=dpdk,devargs=net_null2,size=$SIZE,no-rx=1" \
        --xconnect a:b --stats-interval 1 > "$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
    sleep 0.5
    "$1" "$sock" >&2
    wait "$pid" || true
    # m receives nothing (no-rx): it only sinks the mirror copies.
    awk '/^port a / {s=$7} /^port b / {print s+$7}' "$log" | tail -n +2 || true
    rm -f "$log"
}
cfg_plain() { :; }
cfg_police() {
    "$PETRELCTL" --socket "$1" qos set a --ingress-rate 1T
    "$PETRELCTL" --socket "$1" qos set b --ingress-rate 1T
}
cfg_mirror() { "$PETRELCTL" --socket "$1" mirror add a m --direction ingress; }
run_plain() { run_with cfg_plain; }
run_police() { run_with cfg_police; }
run_mirror() { run_with cfg_mirror; }

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
printf 'scenario (net_null, %sB)\tMpps(median)\tmin-max\tratio to plain\n' "$SIZE"
base=$(stat plain | cut -f1)
for sut in $SUTS; do
    r=$(stat "$sut")
    awk -v n="$sut" -v r="$r" -v b="$base" 'BEGIN {split(r, x, "\t"); printf "%s\t%s\t%s\t%s\n", n, x[1], x[2], (b > 0 ? sprintf("%.2f", x[1]/b) : "-")}'
done
echo "results: $OUT"
