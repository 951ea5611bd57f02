#!/usr/bin/env bash
# bench.sh - Petrel side by side with OVS-DPDK (+ ovn-controller) and the
# dpdk-testpmd ceiling, in one run, on the same cores (DESIGN.md "Peer
# baselines"). Run as root after scripts/bootstrap.sh.
#
# Method. One dpdk-testpmd is generator and sink: two net_virtio_user ports
# (vhost-user servers) polled by one lcore on GEN_CORE. The system under test
# (SUT) connects to both sockets as a vhost-user client and polls on SUT_CORE.
# The loop is closed: the generator first floods both ports for INJECT
# seconds with `flowgen` (FLOWS destination IPs, fixed MACs
# 00:01:02:03:04:00 -> :01), stops, switches to `5tswap` (MACs, IPs and UDP
# ports swapped, the packet sent back out of the port it came in on) and
# starts again without flushing its rx rings (--no-flush-rx): the packets
# still in flight keep bouncing, the SUT's input never runs dry, and
# conntrack sees both directions. Mpps = packets arriving at the generator,
# both directions summed, over DURATION after WARMUP.
#
# Systems (SYSTEMS):
#   ceiling  dpdk-testpmd io forwarding over DPDK's vhost library (net_vhost
#            client ports). Scenario-independent: measured once per frame
#            size, flow count and rep, shown on every scenario's row.
#   ovs      ovs-vswitchd-dpdk (Debian openvswitch-switch-dpdk), netdev
#            bridge, two dpdkvhostuserclient ports, PMD on SUT_CORE; with
#            ovn-controller for the ovn-* scenarios.
#   petrel   petreld (--pmd-cores SUT_CORE, client-mode vhost-user ports);
#            with petrel-ovn for the ovn-* scenarios.
# Scenarios (SCENARIOS):
#   xconnect     port a <-> port b (OVS: two OpenFlow rules; Petrel --xconnect)
#   ovn          one OVN logical switch, two LSPs with addresses and port
#                security (MAC + IP), real ovsdb-server + ovn-northd
#   ovn-acl      the same + stateless ACLs (allow-stateless for UDP both
#                ways, drops for TCP/22 and for everything else IPv4)
#   ovn-acl-ct   the same switch + `to-lport 1001 ip4 allow-related`
#                (conntrack, as in DESIGN.md's baseline). Petrel refuses
#                conntrack flows for now: it drops, and the row says so.
#   overlay      two nodes (chassis) of the same system, lsp0 on node A and
#                lsp1 on node B, one shared OVN; every packet goes vhost ->
#                Geneve -> uplink -> Geneve -> vhost. The uplinks are joined
#                back to back by DPDK memif (shared memory, no kernel), each
#                node has its own tunnel IP (UL_NET.1 / .2). OVS: two
#                ovs-vswitchd-dpdk + ovn-controller, each in its own netns
#                with the tunnel IP on br-phy (OVS userspace tunnelling).
#                Petrel: two petreld + petrel-ovn (--uplink, --neighbor).
#                Both nodes' PMDs share SUT_CORE: a third busy poller
#                cannot have a core of its own on this 2-CPU box. Two busy
#                pollers on one CPU are switched by the kernel's tick (4 ms)
#                and their rings overflow in between, so both systems use
#                load-based sleeping, configured alike: OVS
#                other_config:pmd-maxsleep=SLEEP_MAX, petreld
#                --pmd-sleep-max SLEEP_MAX (a PMD with less than half a
#                burst on every queue sleeps, 1 us more each time): a node
#                that runs dry hands the CPU to the other. The row's Mpps is
#                then what ONE core does for both nodes of the path. SUT
#                cycles per packet for this row: for each node's PMD
#                thread, its on-CPU time (schedstat: not the other node's
#                time, not its sleep) x its busy share (busy / (busy +
#                idle) by its own counters) x TSC rate, summed over both
#                nodes, per packet the generator got: the cost of one
#                vhost->Geneve->vhost traversal (an encap on one node, a
#                decap on the other).
# Frame sizes (SIZES, on the wire incl. FCS: 64 1518) x flows (FLOWS: 1 1000).
#
# Core placement. The generator's lcore is pinned to GEN_CORE (its idle main
# lcore to SUT_CORE); the SUT's polling thread(s) to SUT_CORE. For every
# measurement the script samples each thread's CPU time: a busy thread
# (> 50% of a CPU) of the generator or the SUT that may run anywhere but its
# core refuses the run (exit 3). CPU time used by processes the script did
# not start ("foreign", % of one CPU) above FOREIGN_MAX flags the
# measurement; it is retried RETRIES times, and with STRICT=1 a measurement
# still disturbed after that aborts the run (exit 4).
#
# Output: the table on stdout (median over REPS, spread = (max-min)/2 in %
# of the median; ratios of medians); under OUT (default
# target/bench/<timestamp>/): results.csv (every measurement: Mpps total
# and per direction, stability = rate in the 2nd half / 1st half, SUT busy
# cycles per packet and busy %, exact-match cache hit %, generator busy %,
# foreign CPU %, flags), persec.csv (the rate in every second), modes.txt
# (medians per speed mode, see below), summary.csv, summary.json, table.txt, env.txt and
# logs/ (every process's log, thread placement, OVS pmd-stats, petrelctl
# pmd-stats, drops and refusals).
# Flags: disturbed(% of a CPU: the busiest other processes), busy-helper,
#   generator-bound (generator > 85% busy: the SUT may not be the limit),
#   no-traffic, one-way, decaying (the loop loses packets),
#   refused (Petrel dropped packets as `unsupported`: see petrelctl refusals).
#
# Usage: scripts/bench.sh [--quick] [--help]
#   --quick        QUICK=1: DURATION=2 WARMUP=1 REPS=1 RETRIES=0 IDLE_WAIT=0
#                  (a smoke test of every cell: about 6 minutes)
# Env (defaults): REPS (3) DURATION (10 s) WARMUP (3 s) INJECT (0.3 s)
#   SYSTEMS ("ceiling ovs petrel") SCENARIOS ("xconnect ovn ovn-acl ovn-acl-ct")
#   SIZES ("64 1518") FLOWS ("1 1000") GEN_CORE (0) SUT_CORE (1)
#   FOREIGN_MAX (10, % of one CPU) RETRIES (1) STRICT (0) IDLE_WAIT (20 s:
#   wait that long at most for other processes to go quiet before measuring)
#   PETREL_BIN (target/release, built with cargo unless NO_BUILD=1) OUT
# Exit: 0 ok, 1 error, 2 usage/setup, 3 core placement wrong, 4 disturbed (STRICT).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() { sed -n '2,/^set -Eeuo/{/^set -Eeuo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    -q | --quick) QUICK=1 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

QUICK=${QUICK:-0}
if ((QUICK)); then
    : "${DURATION:=2}" "${WARMUP:=1}" "${REPS:=1}" "${RETRIES:=0}" "${IDLE_WAIT:=0}"
fi
REPS=${REPS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
INJECT=${INJECT:-0.3}
SYSTEMS=${SYSTEMS:-"ceiling ovs petrel"}
SCENARIOS=${SCENARIOS:-"xconnect ovn ovn-acl ovn-acl-ct"}
SIZES=${SIZES:-"64 1518"}
FLOWS=${FLOWS:-"1 1000"}
GEN_CORE=${GEN_CORE:-0}
SUT_CORE=${SUT_CORE:-1}
FOREIGN_MAX=${FOREIGN_MAX:-10}
RETRIES=${RETRIES:-1}
STRICT=${STRICT:-0}
IDLE_WAIT=${IDLE_WAIT:-20}
PETREL_BIN=${PETREL_BIN:-$ROOT/target/release}
OUT=${OUT:-$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)}

QSIZE=1024     # virtqueue and testpmd ring size
GEN_MEM=256    # MiB of hugepages: generator
SUT_MEM=512    # MiB: testpmd SUT / petreld / OVS (socket-mem = socket-limit)
MAC0=00:01:02:03:04:00   # testpmd flowgen's fixed source MAC (22.11)
MAC1=00:01:02:03:04:01   # and destination MAC
UL_NET=172.31.255        # overlay: the nodes' tunnel IPs are UL_NET.1 (A) and UL_NET.2 (B)
UL_MAC=(02:00:5e:31:ff:01 02:00:5e:31:ff:02)   # and their uplinks' MACs (memif)
SLEEP_MAX=${SLEEP_MAX:-50}   # overlay: load-based PMD sleep, most us per poll (both systems)
PFX=petrelbench$$        # DPDK file prefix of everything started here

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }
nap() { sleep "$1" & wait $! || true; }   # a sleep that a trapped signal interrupts

# ------------------------------------------------------------------ checks
[[ $(id -u) == 0 ]] || die "run as root (hugepages, vhost-user sockets, OVS)" 2
(($(nproc) >= 2)) || die "needs 2 CPUs (generator and SUT on different cores)" 2
[[ $GEN_CORE != "$SUT_CORE" ]] || die "GEN_CORE and SUT_CORE must differ" 2
for v in REPS DURATION WARMUP GEN_CORE SUT_CORE FOREIGN_MAX RETRIES IDLE_WAIT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')" 2
done
((DURATION >= 2 && REPS >= 1)) || die "DURATION >= 2 and REPS >= 1" 2
for s in $SYSTEMS; do [[ $s =~ ^(ceiling|ovs|petrel)$ ]] || die "unknown system '$s'" 2; done
for s in $SCENARIOS; do [[ $s =~ ^(xconnect|ovn|ovn-acl|ovn-acl-ct|overlay)$ ]] || die "unknown scenario '$s'" 2; done
for s in $SIZES; do
    if ! [[ $s =~ ^[0-9]+$ ]] || ((s < 64 || s > 1518)); then die "frame size $s not in 64..1518" 2; fi
done
for f in $FLOWS; do
    if ! [[ $f =~ ^[0-9]+$ ]] || ((f < 1 || f > 65535)); then die "flow count $f not in 1..65535" 2; fi
done
OVSD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
need=(dpdk-testpmd ovsdb-tool ovsdb-server ovs-vsctl ovs-ofctl ovs-appctl ovn-northd ovn-nbctl ovn-sbctl ovn-controller
    awk stdbuf join getconf)
for t in "${need[@]}"; do
    command -v "$t" >/dev/null || die "missing $t: run scripts/bootstrap.sh" 2
done
[[ -x $OVSD ]] || die "missing $OVSD (Debian openvswitch-switch-dpdk): run scripts/bootstrap.sh" 2
grep -qs ' hugetlbfs ' /proc/mounts || die "no hugetlbfs mounted: run scripts/bootstrap.sh" 2

if [[ ${NO_BUILD:-0} != 1 && $SYSTEMS == *petrel* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    log "building petreld, petrel-ovn, petrelctl (release)"
    (cd "$ROOT" && cargo build --release --quiet -p petrel-dataplane --bin petreld &&
        cargo build --release --quiet -p petrel-control --bin petrel-ovn --bin petrelctl) ||
        die "cargo build failed"
fi
if [[ $SYSTEMS == *petrel* ]]; then
    for b in petreld petrel-ovn petrelctl; do [[ -x $PETREL_BIN/$b ]] || die "no $PETREL_BIN/$b" 2; done
fi

# ----------------------------------------------------------- state, cleanup
RUN=$(mktemp -d /tmp/petrel-bench.XXXXXX)   # sockets and databases (short paths for sun_path)
LOGS=$OUT/logs
mkdir -p "$LOGS"
RESULTS=$OUT/results.csv
PERSEC=$OUT/persec.csv     # the generator's rate in every second of every measurement
PIDS=()            # everything started here, by PID, in start order
NETNS=()           # network namespaces made here (overlay, OVS)
SCEN=""            # the scenario being measured
SUT_PIDS=()        # overlay: the two nodes' datapath processes (A, B)
declare -A ROLE    # PID -> gen | sut | aux (for the placement check)
ORIG_NR_HUGE="" ADDED_HUGE=0
GEN_FD="" SUT_FD=""
export OVS_RUNDIR=$RUN/ovs OVS_LOGDIR=$RUN/ovs OVS_DBDIR=$RUN/ovs
export OVN_RUNDIR=$RUN/ovn OVN_LOGDIR=$RUN/ovn OVN_DBDIR=$RUN/ovn
VSCTL=(ovs-vsctl --timeout=30 --db="unix:$RUN/ovs/db.sock")
APPCTL=(ovs-appctl -t "$RUN/ovs/ovs-vswitchd.ctl")
NBCTL=(ovn-nbctl --timeout=30 --db="unix:$RUN/ovn/nb.sock")
PETRELCTL=("$PETREL_BIN/petrelctl" --socket "$RUN/petreld.sock")
PETRELCTL_B=("$PETREL_BIN/petrelctl" --socket "$RUN/petreld1.sock")   # overlay: node B

kill_pid() {   # TERM (INT for petreld: its final report), wait 5 s, KILL
    local pid=$1 sig=${2:-TERM} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "pid $pid ignored SIG$sig: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

close_fd() {   # close_fd VAR: close the FIFO writer whose number is in $VAR
    local v=$1 fd=${!1}
    if [[ -n $fd ]]; then
        eval "exec $fd>&-" 2>/dev/null || true
        printf -v "$v" '%s' ""
    fi
}

stop_all() {   # stop everything started (reverse order), remove DPDK files
    local i pid sig
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        sig=TERM
        [[ $(cat /proc/"$pid"/comm 2>/dev/null) == petreld ]] && sig=INT
        kill_pid "$pid" "$sig"
        unset "ROLE[$pid]"
    done
    PIDS=()
    SUT_PIDS=()
    for i in "${NETNS[@]}"; do ip netns del "$i" 2>/dev/null || true; done
    NETNS=()
    close_fd GEN_FD
    close_fd SUT_FD
    rm -f /dev/hugepages/"$PFX"* 2>/dev/null || true
    rm -rf /var/run/dpdk/"$PFX"* 2>/dev/null || true
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    # Give back only the pages added here: others may have grown the pool since.
    if [[ -n $ORIG_NR_HUGE ]]; then
        echo $(($(cat /proc/sys/vm/nr_hugepages) - ADDED_HUGE)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
    fi
    rm -rf "$RUN"
    ((rc == 0)) || log "stopped (exit $rc); everything started here is gone; logs in $LOGS"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
trap 'log "error: \"$BASH_COMMAND\" failed (exit $?) at line $LINENO"' ERR

# started PID ROLE: remember a process to stop and check
started() { PIDS+=("$1"); ROLE[$1]=$2; }

pidfile() {   # pidfile FILE: wait for a daemon's pidfile, print the PID
    local i
    for i in $(seq 100); do [[ -s $1 ]] && { cat "$1"; return 0; }; sleep 0.05; done
    die "no pidfile $1"
}

# ---------------------------------------------------------------- hugepages
N_SUT=1
[[ " $SCENARIOS " == *" overlay "* ]] && N_SUT=2   # overlay: two nodes
need_pages=$(((GEN_MEM + N_SUT * SUT_MEM + 64) / 2))
free_pages=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if ((free_pages < need_pages)); then
    ORIG_NR_HUGE=$(cat /proc/sys/vm/nr_hugepages)
    ADDED_HUGE=$((need_pages - free_pages))
    echo $((ORIG_NR_HUGE + ADDED_HUGE)) >/proc/sys/vm/nr_hugepages
    free_pages=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
    ((free_pages >= need_pages)) ||
        die "need $need_pages free 2 MiB hugepages, have $free_pages (others use them? see /proc/meminfo)" 2
    log "nr_hugepages $ORIG_NR_HUGE -> $(cat /proc/sys/vm/nr_hugepages) (the $ADDED_HUGE added are given back at exit)"
fi

# ------------------------------------------------------- testpmd over FIFOs
# tp_start NAME FDVAR ROLE LOG -- testpmd args: interactive testpmd reading
# commands from a FIFO whose writer end is kept in $FDVAR.
tp_start() {
    local name=$1 fdvar=$2 role=$3 logf=$4 fifo=$RUN/$1.in fd i
    shift 5
    rm -f "$fifo"
    mkfifo "$fifo"
    printf '# %s\n' "$(printf '%q ' dpdk-testpmd "$@")" >"$logf"
    stdbuf -oL -eL dpdk-testpmd "$@" <"$fifo" >>"$logf" 2>&1 &
    started $! "$role"
    exec {fd}>"$fifo"
    printf -v "$fdvar" '%s' "$fd"
    for i in $(seq 150); do
        grep -q '^testpmd> ' "$logf" && return 0
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    die "$name testpmd did not start (see $logf)"
}

tp_cmd() {   # tp_cmd FD LOG CMD: run a testpmd command, print its output
    local fd=$1 logf=$2 off i
    off=$(stat -c %s "$logf")
    echo "$3" 1>&"$fd"
    for i in $(seq 250); do
        sleep 0.02
        grep -q 'testpmd> ' < <(tail -c +$((off + 1)) "$logf") && break
    done
    tail -c +$((off + 1)) "$logf"
}

gen_rx() {   # packets received per port: "rx0 rx1"
    tp_cmd "$GEN_FD" "$GEN_LOG" "show port stats all" |
        awk '/NIC statistics for port/ {p = $(NF - 1)} /RX-packets:/ {rx[p] = $2}
             END {print rx[0] + 0, rx[1] + 0}'
}

# ---------------------------------------------------------------- generator
gen_start() {   # gen_start SIZE FLOWS LOG
    GEN_LOG=$3
    tp_start gen GEN_FD gen "$GEN_LOG" -- \
        -l "$GEN_CORE,$SUT_CORE" --main-lcore "$SUT_CORE" --file-prefix="$PFX-gen" --no-pci \
        -m "$GEN_MEM" --single-file-segments --log-level='*:notice' \
        --vdev "net_virtio_user0,path=$RUN/vhu0.sock,server=1,queues=1,queue_size=$QSIZE,mac=$MAC0" \
        --vdev "net_virtio_user1,path=$RUN/vhu1.sock,server=1,queues=1,queue_size=$QSIZE,mac=$MAC1" \
        -- -i --nb-cores=1 --rxq=1 --txq=1 --rxd="$QSIZE" --txd="$QSIZE" --burst=32 \
        --total-num-mbufs=16384 --record-core-cycles --no-flush-rx --port-topology=loop \
        --forward-mode=flowgen --flowgen-flows="$2" --txpkts="$1"
    local i up=0
    for i in $(seq 100); do
        up=$(tp_cmd "$GEN_FD" "$GEN_LOG" "show port summary all" | grep -c ' up ' || true)
        ((up >= 2)) && break
        nap 0.1
    done
    ((up >= 2)) || die "the SUT did not connect to both vhost-user ports (see $GEN_LOG and the SUT's log)"
}

gen_stop() {   # stop the generator only (the SUT reconnects to the next one)
    local pid=${PIDS[-1]}
    [[ ${ROLE[$pid]:-} == gen ]] || die "internal: the generator is not the last process"
    tp_cmd "$GEN_FD" "$GEN_LOG" "stop" >/dev/null
    echo quit 1>&"$GEN_FD" 2>/dev/null || true
    close_fd GEN_FD
    kill_pid "$pid"
    unset 'PIDS[-1]' "ROLE[$pid]"
    rm -f /dev/hugepages/"$PFX"-gen* 2>/dev/null || true
    rm -rf /var/run/dpdk/"$PFX"-gen 2>/dev/null || true
}

# --------------------------------------------------------------- OVS, OVN
# ovs_up DIR TAG NETNS EAL_MORE [OTHER_CONFIG...]: ovsdb-server and
# ovs-vswitchd-dpdk with their files in DIR and logs tagged TAG (vswitchd
# inside NETNS if given), PMD on SUT_CORE, EAL_MORE added to dpdk-extra;
# waits for DPDK. Sets OVS_PID (vswitchd's PID).
ovs_up() {
    local d=$1 tag=$2 ns=$3 eal=$4 i
    shift 4
    local vsctl=(ovs-vsctl --timeout=30 --db="unix:$d/db.sock") pre=()
    [[ -n $ns ]] && pre=(ip netns exec "$ns")
    mkdir -p "$d"
    ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    OVS_RUNDIR=$d ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" --pidfile="$d/ovsdb-server.pid" \
        --unixctl="$d/ovsdb-server.ctl" --log-file="$SUT_DIR/ovsdb-server$tag.log" --detach --no-chdir \
        >>"$SUT_DIR/console.log" 2>&1
    started "$(pidfile "$d/ovsdb-server.pid")" aux
    "${vsctl[@]}" --no-wait init
    "${vsctl[@]}" --no-wait set Open_vSwitch . other_config:dpdk-init=true \
        other_config:dpdk-socket-mem="$SUT_MEM" other_config:dpdk-socket-limit="$SUT_MEM" \
        other_config:pmd-cpu-mask="$(printf '0x%x' $((1 << SUT_CORE)))" \
        other_config:dpdk-extra="--no-pci --file-prefix=$PFX-ovs$tag${eal:+ $eal}" "$@"
    OVS_RUNDIR=$d "${pre[@]}" "$OVSD" "unix:$d/db.sock" --pidfile="$d/ovs-vswitchd.pid" \
        --unixctl="$d/ovs-vswitchd.ctl" --log-file="$SUT_DIR/ovs-vswitchd$tag.log" --detach --no-chdir \
        >>"$SUT_DIR/console.log" 2>&1
    OVS_PID=$(pidfile "$d/ovs-vswitchd.pid")
    started "$OVS_PID" sut
    for i in $(seq 120); do
        [[ $("${vsctl[@]}" get Open_vSwitch . dpdk_initialized 2>/dev/null) == true ]] && break
        nap 0.25
    done
    [[ $("${vsctl[@]}" get Open_vSwitch . dpdk_initialized) == true ]] ||
        die "OVS did not initialise DPDK (see $SUT_DIR/ovs-vswitchd$tag.log)"
}

ovs_start() {   # ovs_start BRIDGE IFACE-ID0 IFACE-ID1
    local br=$1 i ifid=("$2" "$3")
    ovs_up "$RUN/ovs" "" "" ""
    "${VSCTL[@]}" add-br "$br" -- set bridge "$br" datapath_type=netdev
    for i in 0 1; do
        "${VSCTL[@]}" add-port "$br" "vhu$i" -- set Interface "vhu$i" type=dpdkvhostuserclient \
            options:vhost-server-path="$RUN/vhu$i.sock" ofport_request=$((i + 1)) \
            ${ifid[i]:+external_ids:iface-id=${ifid[i]}}
    done
}

ovn_central() {   # ovn_central SCENARIO: NB + SB servers, northd, the logical switch
    local d=$RUN/ovn db
    mkdir -p "$d"
    for db in nb sb; do
        ovsdb-tool create "$d/$db.db" "/usr/share/ovn/ovn-$db.ovsschema"
        ovsdb-server "$d/$db.db" --remote="punix:$d/$db.sock" --pidfile="$d/$db.pid" \
            --unixctl="$d/$db.ctl" --log-file="$SUT_DIR/ovsdb-$db.log" --detach --no-chdir \
            >>"$SUT_DIR/console.log" 2>&1
        started "$(pidfile "$d/$db.pid")" aux
    done
    ovn-northd --ovnnb-db="unix:$d/nb.sock" --ovnsb-db="unix:$d/sb.sock" --pidfile="$d/northd.pid" \
        --unixctl="$d/northd.ctl" --log-file="$SUT_DIR/ovn-northd.log" --detach --no-chdir \
        >>"$SUT_DIR/console.log" 2>&1
    started "$(pidfile "$d/northd.pid")" aux
    # Port security allows each side's flowgen subnet (10.254/16 sends,
    # 10.253/16 answers after the swap); MACs are flowgen's.
    "${NBCTL[@]}" ls-add ls0 \
        -- lsp-add ls0 lsp0 -- lsp-set-addresses lsp0 "$MAC0 10.254.0.1" \
        -- lsp-set-port-security lsp0 "$MAC0 10.254.0.0/16" \
        -- lsp-add ls0 lsp1 -- lsp-set-addresses lsp1 "$MAC1 10.253.0.1" \
        -- lsp-set-port-security lsp1 "$MAC1 10.253.0.0/16"
    case $1 in
    ovn-acl)
        "${NBCTL[@]}" acl-add ls0 from-lport 1002 'ip4 && udp' allow-stateless \
            -- acl-add ls0 to-lport 1002 'ip4 && udp' allow-stateless \
            -- acl-add ls0 to-lport 1001 'ip4 && tcp.dst == 22' drop \
            -- acl-add ls0 from-lport 1000 ip4 drop ;;
    ovn-acl-ct)
        "${NBCTL[@]}" acl-add ls0 to-lport 1001 ip4 allow-related ;;
    esac
    # ovn-controller crashes if it starts before northd has made SB_Global.
    "${NBCTL[@]}" --wait=sb sync
    {
        "${NBCTL[@]}" show
        "${NBCTL[@]}" acl-list ls0
    } >"$SUT_DIR/nb.txt" 2>&1
}

# ------------------------------------------------------------- overlay
# ovs_node I: overlay node I (0: A with vhu0 = lsp0, 1: B with vhu1 = lsp1):
# ovsdb-server, ovs-vswitchd-dpdk in its own netns (its br-phy tap carries
# the tunnel IP; OVS userspace tunnelling routes by the netns' table),
# ovn-controller. Their memif uplinks meet at $RUN/memif.sock (A serves).
ovs_node() {
    local i=$1 d=$RUN/ovs ns=$PFX-n$1 role=server peer=$((1 - $1))
    ((i == 0)) || { d=$RUN/ovs$i; role=client; }
    local vsctl=(ovs-vsctl --timeout=30 --db="unix:$d/db.sock")
    ip netns add "$ns"
    NETNS+=("$ns")
    ip -n "$ns" link set lo up
    # (memif's control messages in the log: a ring mismatch shows there)
    ovs_up "$d" "$i" "$ns" "--log-level=pmd.net.memif:debug" other_config:pmd-maxsleep="$SLEEP_MAX"
    SUT_PIDS[i]=$OVS_PID
    "${vsctl[@]}" add-br br-phy -- set bridge br-phy datapath_type=netdev other_config:hwaddr="${UL_MAC[i]}" \
        -- add-port br-phy up -- set Interface up type=dpdk options:n_rxq=2 \
        options:dpdk-devargs="net_memif$i,role=$role,id=0,socket=$RUN/memif.sock,socket-abstract=no,mac=${UL_MAC[i]}"
    ip -n "$ns" link set br-phy mtu 9000 up
    ip -n "$ns" addr add "$UL_NET.$((i + 1))/24" dev br-phy
    "${vsctl[@]}" add-br br-int -- set bridge br-int datapath_type=netdev fail-mode=secure \
        other-config:disable-in-band=true \
        -- add-port br-int "vhu$i" -- set Interface "vhu$i" type=dpdkvhostuserclient \
        options:vhost-server-path="$RUN/vhu$i.sock" external_ids:iface-id="lsp$i"
    # The peer's address, as Petrel gets it with --neighbor (both answer ARP too).
    ovs-appctl -t "$d/ovs-vswitchd.ctl" tnl/neigh/set br-phy "$UL_NET.$((peer + 1))" "${UL_MAC[peer]}" >/dev/null
    "${vsctl[@]}" set Open_vSwitch . external_ids:system-id="bench-ovs$i" \
        external_ids:ovn-remote="unix:$RUN/ovn/sb.sock" external_ids:ovn-encap-type=geneve \
        external_ids:ovn-encap-ip="$UL_NET.$((i + 1))" external_ids:ovn-bridge=br-int \
        external_ids:ovn-bridge-datapath-type=netdev
    OVS_RUNDIR=$d OVN_RUNDIR=$d ovn-controller "unix:$d/db.sock" --pidfile="$d/controller.pid" \
        --log-file="$SUT_DIR/ovn-controller$i.log" --detach --no-chdir >>"$SUT_DIR/console.log" 2>&1
    started "$(pidfile "$d/controller.pid")" aux
}

# petrel_node I: overlay node I: petreld (pod port, memif uplink with the
# tunnel IP, the peer as static neighbour) + petrel-ovn.
petrel_node() {
    local i=$1 sock=$RUN/petreld.sock role=server peer=$((1 - $1)) j
    ((i == 0)) || { sock=$RUN/petreld$i.sock; role=client; }
    "$PETREL_BIN/petreld" --eal-args "--file-prefix=$PFX-sut$i --no-pci -m $SUT_MEM -l $GEN_CORE" \
        --pmd-cores "$SUT_CORE" --pmd-sleep-max "$SLEEP_MAX" --control-socket "$sock" --ports-file none \
        --port "p$i=vhost-user,path=$RUN/vhu$i.sock,mode=client,iface-id=lsp$i" \
        --port "up=dpdk,devargs=net_memif$i,role=$role,id=0,socket=$RUN/memif.sock,socket-abstract=no,mac=${UL_MAC[i]}" \
        --uplink "up=$UL_NET.$((i + 1))/24,mtu=9000" --neighbor "$UL_NET.$((peer + 1))=${UL_MAC[peer]}" \
        >"$SUT_DIR/petreld$i.log" 2>&1 &
    SUT_PIDS[i]=$!
    started $! sut
    for j in $(seq 100); do
        [[ -S $sock ]] && break
        kill -0 "${SUT_PIDS[i]}" 2>/dev/null || die "petreld $i exited at start (see $SUT_DIR/petreld$i.log)"
        nap 0.1
    done
    [[ -S $sock ]] || die "petreld $i made no control socket (see $SUT_DIR/petreld$i.log)"
    "$PETREL_BIN/petrel-ovn" --remote "unix:$RUN/ovn/sb.sock" --system-id "bench-petrel$i" \
        --encap-ip "$UL_NET.$((i + 1))" --dataplane "$sock" >"$SUT_DIR/petrel-ovn$i.log" 2>&1 &
    started $! aux
}

# wait_claimed WHAT: both logical ports bound (Port_Binding.up), then the
# tables in force on every chassis. (Until a chassis exists, --wait=hv
# returns at once: hence the claims first.)
wait_claimed() {
    local i up=""
    for i in $(seq 120); do
        up=$(ovn-sbctl --timeout=10 --db="unix:$RUN/ovn/sb.sock" --bare --columns=up \
            find Port_Binding up=true | grep -c true || true)
        ((up >= 2)) && break
        nap 0.25
    done
    ((up >= 2)) || die "$1 did not claim lsp0 and lsp1 in 30 s (see its logs in $SUT_DIR)"
    "${NBCTL[@]}" --timeout=60 --wait=hv sync || die "$1 did not bring the switch into force (see $SUT_DIR)"
}

# ------------------------------------------------------------- systems
# sut_start SYSTEM SCENARIO: start the system under test, ready for the
# generator's sockets (it connects as client and retries).
sut_start() {
    local sys=$1 scen=$2
    SUT_DIR=$LOGS/$sys.$scen.r$REP
    mkdir -p "$SUT_DIR"
    case $sys in
    ceiling)
        SUT_LOG=$SUT_DIR/testpmd.log
        tp_start sut SUT_FD sut "$SUT_LOG" -- \
            -l "$GEN_CORE,$SUT_CORE" --main-lcore "$GEN_CORE" --file-prefix="$PFX-sut" --no-pci \
            -m "$SUT_MEM" --log-level='*:notice' \
            --vdev "net_vhost0,iface=$RUN/vhu0.sock,client=1,queues=1" \
            --vdev "net_vhost1,iface=$RUN/vhu1.sock,client=1,queues=1" \
            -- -i --nb-cores=1 --rxq=1 --txq=1 --rxd="$QSIZE" --txd="$QSIZE" --burst=32 \
            --total-num-mbufs=16384 --forward-mode=io --record-core-cycles
        tp_cmd "$SUT_FD" "$SUT_LOG" start >/dev/null ;;
    ovs)
        if [[ $scen == overlay ]]; then
            ovn_central "$scen"
            ovs_node 0
            ovs_node 1
            wait_claimed "ovn-controller"
            local i p d
            for p in 0 1; do
                d=$RUN/ovs; ((p == 0)) || d=$RUN/ovs$p
                for i in $(seq 120); do
                    [[ $(ovs-vsctl --db="unix:$d/db.sock" --if-exists get Interface "vhu$p" external_ids:ovn-installed) == '"true"' ]] && break
                    nap 0.25
                done
                ovs-ofctl -O OpenFlow15 dump-flows "unix:$d/br-int.mgmt" >"$SUT_DIR/of-flows$p.txt" 2>&1 || true
            done
        elif [[ $scen == xconnect ]]; then
            ovs_start br0 "" ""
            ovs-ofctl del-flows br0
            ovs-ofctl add-flow br0 in_port=1,actions=output:2
            ovs-ofctl add-flow br0 in_port=2,actions=output:1
        else
            ovs_start br-int lsp0 lsp1
            ovn_central "$scen"
            "${VSCTL[@]}" set Open_vSwitch . external_ids:system-id=bench-ovs \
                external_ids:ovn-remote="unix:$RUN/ovn/sb.sock" external_ids:ovn-encap-type=geneve \
                external_ids:ovn-encap-ip=127.0.0.1 external_ids:ovn-bridge=br-int \
                external_ids:ovn-bridge-datapath-type=netdev
            ovn-controller "unix:$RUN/ovs/db.sock" --pidfile="$RUN/ovn/controller.pid" \
                --log-file="$SUT_DIR/ovn-controller.log" --detach --no-chdir >>"$SUT_DIR/console.log" 2>&1
            started "$(pidfile "$RUN/ovn/controller.pid")" aux
            "${NBCTL[@]}" --timeout=60 --wait=hv sync
            local i p
            for p in 0 1; do
                for i in $(seq 120); do
                    [[ $("${VSCTL[@]}" --if-exists get Interface "vhu$p" external_ids:ovn-installed) == '"true"' ]] && break
                    nap 0.25
                done
                [[ $("${VSCTL[@]}" --if-exists get Interface "vhu$p" external_ids:ovn-installed) == '"true"' ]] ||
                    die "ovn-controller did not install vhu$p in 30 s (see $SUT_DIR/ovn-controller.log)"
            done
            ovs-ofctl -O OpenFlow15 dump-flows br-int >"$SUT_DIR/of-flows.txt" 2>&1 || true
        fi ;;
    petrel)
        if [[ $scen == overlay ]]; then
            ovn_central "$scen"
            petrel_node 0
            petrel_node 1
            wait_claimed "petrel-ovn"
            "${PETRELCTL[@]}" show >"$SUT_DIR/petrelctl-show0.txt" 2>&1 || true
            "${PETRELCTL_B[@]}" show >"$SUT_DIR/petrelctl-show1.txt" 2>&1 || true
            return 0
        fi
        local ports=() extra=()
        if [[ $scen == xconnect ]]; then
            ports=(--port "a=vhost-user,path=$RUN/vhu0.sock,mode=client"
                --port "b=vhost-user,path=$RUN/vhu1.sock,mode=client")
            extra=(--xconnect a:b)
        else
            ovn_central "$scen"
            ports=(--port "a=vhost-user,path=$RUN/vhu0.sock,mode=client,iface-id=lsp0"
                --port "b=vhost-user,path=$RUN/vhu1.sock,mode=client,iface-id=lsp1")
        fi
        "$PETREL_BIN/petreld" --eal-args "--file-prefix=$PFX-sut --no-pci -m $SUT_MEM -l $GEN_CORE" \
            --pmd-cores "$SUT_CORE" --control-socket "$RUN/petreld.sock" --ports-file none \
            "${ports[@]}" "${extra[@]}" >"$SUT_DIR/petreld.log" 2>&1 &
        started $! sut
        local i
        for i in $(seq 100); do
            [[ -S $RUN/petreld.sock ]] && break
            kill -0 "${PIDS[-1]}" 2>/dev/null || die "petreld exited at start (see $SUT_DIR/petreld.log)"
            nap 0.1
        done
        [[ -S $RUN/petreld.sock ]] || die "petreld made no control socket (see $SUT_DIR/petreld.log)"
        if [[ $scen != xconnect ]]; then
            "$PETREL_BIN/petrel-ovn" --remote "unix:$RUN/ovn/sb.sock" --system-id bench-petrel \
                --encap-ip 127.0.0.1 --dataplane "$RUN/petreld.sock" >"$SUT_DIR/petrel-ovn.log" 2>&1 &
            started $! aux
            # Until a chassis exists, --wait=hv returns at once: wait for
            # the claims (Port_Binding.up) first, then for the tables.
            local up=""
            for i in $(seq 120); do
                up=$(ovn-sbctl --timeout=10 --db="unix:$RUN/ovn/sb.sock" --bare --columns=up \
                    find Port_Binding up=true | grep -c true || true)
                ((up >= 2)) && break
                nap 0.25
            done
            ((up >= 2)) || die "petrel-ovn did not claim lsp0 and lsp1 in 30 s (see $SUT_DIR/petrel-ovn.log)"
            "${NBCTL[@]}" --timeout=60 --wait=hv sync ||
                die "petrel-ovn did not bring the switch into force (see $SUT_DIR/petrel-ovn.log)"
            "${PETRELCTL[@]}" show >"$SUT_DIR/petrelctl-show.txt" 2>&1 || true
        fi ;;
    esac
}

sut_stop() {   # stop the SUT and everything of its scenario
    if [[ $1 == petrel && -S $RUN/petreld.sock ]]; then
        "${PETRELCTL[@]}" drops >"$SUT_DIR/petrelctl-drops.txt" 2>&1 || true
        "${PETRELCTL[@]}" refusals >"$SUT_DIR/petrelctl-refusals.txt" 2>&1 || true
        if [[ -S $RUN/petreld1.sock ]]; then
            "${PETRELCTL_B[@]}" drops >"$SUT_DIR/petrelctl-drops1.txt" 2>&1 || true
            "${PETRELCTL_B[@]}" show >"$SUT_DIR/petrelctl-show1.after.txt" 2>&1 || true
        fi
    fi
    stop_all
    rm -rf "${RUN:?}"/ovs "${RUN:?}"/ovs1 "${RUN:?}"/ovn "$RUN/petreld.sock" "$RUN/petreld1.sock" "$RUN/memif.sock"
}

# unsupported_drops: packets Petrel dropped so far because a logical flow
# needs what it refuses to approximate (conntrack, ...); 0 for the others
unsupported_drops() {
    [[ $1 == petrel ]] || { echo 0; return; }
    { "${PETRELCTL[@]}" drops 2>/dev/null || true; } | awk '$1 == "unsupported" {n = $2} END {print n + 0}'
}

# SUT cycles per packet over the window: sut_cyc_begin / sut_cyc_end SYSTEM
sut_cyc_begin() {
    [[ $SCEN == overlay ]] && { ovl_begin "$1"; return; }
    case $1 in
    ceiling) tp_cmd "$SUT_FD" "$SUT_LOG" "clear fwd stats all" >/dev/null ;;
    ovs) "${APPCTL[@]}" dpif-netdev/pmd-stats-clear >/dev/null ;;
    petrel) CYC0=$({ "${PETRELCTL[@]}" --json pmd-stats 2>/dev/null || true; } | pmd_sum) ;;
    esac
}
pmd_sum() {   # petrelctl --json pmd-stats -> "busy_cycles idle_cycles rx_packets cache_hits"
    tr -d ' \n' | awk '{
        n = split($0, a, /"busy_cycles":/); for (i = 2; i <= n; i++) b += a[i] + 0
        n = split($0, a, /"idle_cycles":/); for (i = 2; i <= n; i++) d += a[i] + 0
        n = split($0, a, /"rx_packets":/); for (i = 2; i <= n; i++) r += a[i] + 0
        n = split($0, a, /"name":"flow_cache","hits":/); for (i = 2; i <= n; i++) h += a[i] + 0
        printf "%.0f %.0f %.0f %.0f\n", b, d, r, h }'
}
sut_cyc_end() {   # sut_cyc_end SYSTEM PACKETS MHZ: prints "cycles/packet busy% cache-hit%" ("-" where unknown)
    local f=$MEAS.sut-stats.txt
    [[ $SCEN == overlay ]] && { ovl_end "$@"; return; }
    case $1 in
    ceiling)
        tp_cmd "$SUT_FD" "$SUT_LOG" "show fwd stats all" >"$f"
        awk '/CPU cycles\/packet=/ {l = $0; sub(/.*CPU cycles\/packet=/, "", l); sub(/ .*/, "", l); c = l}
             END {printf "%s - -\n", (c == "" ? "-" : sprintf("%.0f", c))}' "$f" ;;
    ovs)
        "${APPCTL[@]}" dpif-netdev/pmd-stats-show >"$f" 2>&1 || true
        # The PMD's section only (the main thread's follows); cache hits are
        # per datapath pass (OVN's conntrack recirculates).
        awk -F: '/^main thread/ {exit}
                 /avg processing cycles per packet/ {split($2, a, " "); c = a[1]}
                 /processing cycles/ && !/avg/ {if (match($2, /\([0-9.]+%\)/)) b = substr($2, RSTART + 1, RLENGTH - 3)}
                 /packets received/ {split($2, a, " "); r = a[1]}
                 /packet recirculations/ {split($2, a, " "); rc = a[1]}
                 /emc hits/ {split($2, a, " "); e = a[1]}
                 /smc hits/ {split($2, a, " "); s = a[1]}
                 /simple match hits/ {split($2, a, " "); sm = a[1]}
                 END {printf "%s %s %s\n", (c == "" ? "-" : sprintf("%.0f", c)), (b == "" ? "-" : sprintf("%.0f", b)),
                      (r + rc > 0 ? sprintf("%.0f", 100 * (e + s + sm) / (r + rc)) : "-")}' "$f" ;;
    petrel)
        "${PETRELCTL[@]}" pmd-stats >"$f" 2>&1 || true
        local now
        now=$({ "${PETRELCTL[@]}" --json pmd-stats 2>/dev/null || true; } | pmd_sum)
        awk -v a="$CYC0" -v b="$now" 'BEGIN {split(a, x, " "); split(b, y, " ");
            db = y[1] - x[1]; di = y[2] - x[2]; dr = y[3] - x[3]; dh = y[4] - x[4]
            printf "%s %s %s\n", (dr > 0 ? sprintf("%.0f", db / dr) : "-"),
                (db + di > 0 ? sprintf("%.0f", 100 * db / (db + di)) : "-"), (dr > 0 && dh > 0 ? sprintf("%.0f", 100 * dh / dr) : "-")}' ;;
    esac
}

# Overlay: two nodes time-share SUT_CORE, so their TSC-based busy cycles
# include the other node's time slices. What each node really spent is its
# PMD thread's on-CPU time (schedstat) x its busy share (busy / (busy +
# idle) by its own counters: a slice boundary falls in a busy or an idle
# poll in proportion to their shares, so the share stays fair).
pmd_tid() {   # pmd_tid PID: the polling thread (Petrel pmd0, OVS pmd-c01/...)
    local t
    for t in /proc/"$1"/task/*; do
        [[ $(cat "$t/comm" 2>/dev/null) == pmd* ]] && { echo "${t##*/}"; return 0; }
    done
    return 1
}
oncpu_ns() { awk '{print $1}' /proc/"$1"/task/"$2"/schedstat 2>/dev/null || echo 0; }
node_ctl() {   # node_ctl SYSTEM I ARGS...: petrelctl or ovs-appctl of node I
    local sys=$1 i=$2
    shift 2
    if [[ $sys == petrel ]]; then
        if ((i == 0)); then "${PETRELCTL[@]}" "$@"; else "${PETRELCTL_B[@]}" "$@"; fi
    else
        local d=$RUN/ovs
        ((i == 0)) || d=$RUN/ovs$i
        ovs-appctl -t "$d/ovs-vswitchd.ctl" "$@"
    fi
}
ovs_busy_idle() {   # pmd-stats-show -> "processing idle" cycles of the PMD
    awk -F: '/^main thread/ {exit}
        /^ *idle cycles/ {split($2, a, " "); d = a[1]}
        /^ *processing cycles/ {split($2, a, " "); b = a[1]}
        END {printf "%.0f %.0f\n", b, d}'
}
ovl_begin() {
    local sys=$1 i tid
    OVL0=()
    for i in 0 1; do
        tid=$(pmd_tid "${SUT_PIDS[i]}") || die "no PMD thread in node $i (pid ${SUT_PIDS[i]})"
        OVL_TID[i]=$tid
        if [[ $sys == petrel ]]; then
            OVL0[i]="$(oncpu_ns "${SUT_PIDS[i]}" "$tid") $({ node_ctl petrel "$i" --json pmd-stats 2>/dev/null || true; } | pmd_sum)"
        else
            node_ctl ovs "$i" dpif-netdev/pmd-stats-clear >/dev/null
            OVL0[i]="$(oncpu_ns "${SUT_PIDS[i]}" "$tid") 0 0"
        fi
    done
}
ovl_end() {   # ovl_end SYSTEM PACKETS MHZ
    local sys=$1 pkts=$2 mhz=$3 i now f=$MEAS.sut-stats.txt
    : >"$f"
    local per=()
    for i in 0 1; do
        echo "== node $i (pid ${SUT_PIDS[i]}, PMD thread ${OVL_TID[i]})" >>"$f"
        if [[ $sys == petrel ]]; then
            node_ctl petrel "$i" pmd-stats >>"$f" 2>&1 || true
            now="$(oncpu_ns "${SUT_PIDS[i]}" "${OVL_TID[i]}") $({ node_ctl petrel "$i" --json pmd-stats 2>/dev/null || true; } | pmd_sum)"
        else
            node_ctl ovs "$i" dpif-netdev/pmd-stats-show >>"$f" 2>&1 || true
            now="$(oncpu_ns "${SUT_PIDS[i]}" "${OVL_TID[i]}") $(node_ctl ovs "$i" dpif-netdev/pmd-stats-show 2>/dev/null | ovs_busy_idle)"
        fi
        per+=("${OVL0[i]}" "$now")
    done
    # per node: on-CPU ns, busy, idle (before; after)
    awk -v a0="${per[0]}" -v a1="${per[1]}" -v b0="${per[2]}" -v b1="${per[3]}" -v n="$pkts" -v mhz="$mhz" -v f="$f" 'BEGIN {
        split(a0, x, " "); split(a1, y, " "); split(b0, u, " "); split(b1, v, " ")
        ns[0] = y[1] - x[1]; bz[0] = y[2] - x[2]; id[0] = y[3] - x[3]
        ns[1] = v[1] - u[1]; bz[1] = v[2] - u[2]; id[1] = v[3] - u[3]
        tot = 0; sh = 0; ok = (n > 0 && mhz > 0)
        for (i = 0; i < 2; i++) {
            r = (bz[i] + id[i] > 0 ? bz[i] / (bz[i] + id[i]) : 0); if (r == 0) ok = 0
            c = ns[i] * r * mhz / 1000; tot += c; sh += r
            printf "node %d: on-CPU %.3f s, busy share %.1f%%, %.0f busy cycles, %s cycles/packet\n", i, ns[i] / 1e9, 100 * r, c,
                (n > 0 ? sprintf("%.0f", c / n) : "-") >> f
        }
        printf "both nodes: %s cycles per packet (vhost -> Geneve -> vhost), %d packets, TSC %s MHz\n",
            (ok ? sprintf("%.0f", tot / n) : "-"), n, mhz >> f
        printf "%s %.0f -\n", (ok ? sprintf("%.0f", tot / n) : "-"), 50 * sh }'
}

# ------------------------------------------------------ CPU and placement
cpu_total() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }   # busy jiffies, all CPUs

threads() {   # "pid tid jiffies allowed-cpus comm" for every thread started here
    local pid t
    for pid in "${PIDS[@]}"; do
        for t in /proc/"$pid"/task/*; do
            [[ -r $t/stat ]] || continue
            printf '%s %s %s %s %s\n' "$pid" "${t##*/}" \
                "$(awk '{s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13]}' "$t/stat" 2>/dev/null || echo 0)" \
                "$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status" 2>/dev/null || echo '?')" \
                "$(tr ' ' _ <"$t/comm" 2>/dev/null || echo '?')"
        done
    done
}

procs() {   # "pid jiffies comm" of every process (for naming who disturbed a measurement)
    # (processes come and go while cat reads: it may fail, that is fine)
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
        pid = $1; s = $0; c = s; sub(/^[^(]*\(/, "", c); sub(/\)[^)]*$/, "", c); gsub(/ /, "_", c)
        sub(/^.*\) /, "", s); split(s, f, " "); print pid, f[12] + f[13], c }'
}

# top_foreign BEFORE AFTER SECONDS: the 3 busiest processes not started here
top_foreign() {
    local ours=" ${PIDS[*]} $$ "
    LC_ALL=C join -j 1 <(LC_ALL=C sort -k1,1 "$1") <(LC_ALL=C sort -k1,1 "$2") |
        awk -v ours="$ours" -v el="$3" -v hz="$(getconf CLK_TCK)" \
            'index(ours, " " $1 " ") == 0 {d = 100 * ($4 - $2) / (el * hz); if (d >= 5) printf "%.0f %s\n", d, $3}' |
        sort -rn | awk 'NR <= 3 {printf "%s%s=%s%%", (NR > 1 ? " " : ""), $2, $1}'
}

# wait_quiet: before a measurement, wait (at most IDLE_WAIT s) until the
# processes not started here use less than FOREIGN_MAX % of a CPU.
wait_quiet() {
    local waited=0 t0 t1 o0 o1 f
    while ((waited < IDLE_WAIT)); do
        t0=$(cpu_total); o0=$(threads | awk '{s += $3} END {print s + 0}')
        nap 1
        t1=$(cpu_total); o1=$(threads | awk '{s += $3} END {print s + 0}')
        f=$(((t1 - t0) - (o1 - o0)))
        ((f < FOREIGN_MAX)) && return 0
        ((waited % 10 == 0)) && log "  other processes use ${f}% of a CPU: waiting for quiet (at most ${IDLE_WAIT}s)"
        waited=$((waited + 1))
    done
}

# placement BEFORE AFTER SECONDS: check busy threads against their cores;
# prints the foreign CPU share (% of one CPU).
placement() {
    local before=$1 after=$2 el=$3
    local hz
    hz=$(getconf CLK_TCK)
    LC_ALL=C join -j 1 <(awk '{print $1 "/" $2, $3}' "$before" | LC_ALL=C sort) \
        <(awk '{print $1 "/" $2, $3, $4, $5}' "$after" | LC_ALL=C sort) |
        awk -v el="$el" -v hz="$hz" '{pct = 100 * ($3 - $2) / (el * hz); split($1, p, "/"); print p[1], p[2], pct, $4, $5}' \
            >"$MEAS.threads.txt"
    # The busiest thread of the generator and of the SUT is its poller: it
    # must be pinned to its own core, alone. Other threads that are busy
    # (helpers, OVS handlers, petrel-ovn, ovn-controller ...) only flag.
    local pid tid pct cpus comm role bad=0 top_gen="" top_sut="" pg=-1 ps=-1
    PLACEMENT_FLAG=""
    while read -r pid tid pct cpus comm; do
        role=${ROLE[$pid]:-aux}
        pct=$(printf '%.0f' "$pct")
        case $role in
        gen) ((pct > pg)) && { pg=$pct; top_gen="$tid $cpus $comm"; } ;;
        sut) ((pct > ps)) && { ps=$pct; top_sut="$tid $cpus $comm"; } ;;
        esac
    done <"$MEAS.threads.txt"
    while read -r pid tid pct cpus comm; do
        role=${ROLE[$pid]:-aux}
        pct=$(printf '%.0f' "$pct")
        [[ "$tid $cpus $comm" == "$top_gen" || "$tid $cpus $comm" == "$top_sut" ]] && continue
        # overlay: the other node's poller, on the same core
        [[ $SCEN == overlay && $role == sut && $cpus == "$SUT_CORE" && $comm == pmd* ]] && continue
        if ((pct >= 25)); then
            log "  busy helper: thread $tid ($comm, pid $pid, $role) used ${pct}% of a CPU on CPUs '$cpus'"
            PLACEMENT_FLAG+="busy-helper($comm:${pct}%);"
        fi
    done <"$MEAS.threads.txt"
    read -r tid cpus comm <<<"$top_gen"
    [[ $cpus == "$GEN_CORE" ]] || { log "placement: generator poller $tid ($comm) may run on CPUs '$cpus', not only $GEN_CORE"; bad=1; }
    ((pg >= 10)) || { log "placement: the generator's poller got ${pg}% of a CPU"; bad=1; }
    read -r tid cpus comm <<<"$top_sut"
    [[ $cpus == "$SUT_CORE" ]] || { log "placement: SUT poller $tid ($comm) may run on CPUs '$cpus', not only $SUT_CORE"; bad=1; }
    ((ps >= 10)) || { log "placement: the SUT's poller got ${ps}% of a CPU"; bad=1; }
    ((bad == 0)) || die "core placement is wrong: refusing this run (threads in $MEAS.threads.txt)" 3
}

# ------------------------------------------------------------ measurement
# measure SYSTEM SCENARIO SIZE FLOWS REP: one row of results.csv
measure() {
    local sys=$1 scen=$2 size=$3 flows=$4 rep=$5 try
    for try in $(seq 0 "$RETRIES"); do
        measure_once "$@" "$try"
        [[ $LAST_FLAG == *disturbed* ]] || return 0
        ((try < RETRIES)) && log "  disturbed: measuring again"
    done
    if ((STRICT)) && [[ $LAST_FLAG == *disturbed* ]]; then
        die "$sys $scen ${size}B ${flows} flows stayed disturbed (STRICT=1)" 4
    fi
}

measure_once() {
    local sys=$1 scen=$2 size=$3 flows=$4 rep=$5 try=$6
    SCEN=$scen
    MEAS=$LOGS/$sys.$scen.${size}B.${flows}f.r$rep.t$try
    local unsup0
    unsup0=$(unsupported_drops "$sys")
    gen_start "$size" "$flows" "$MEAS.gen.log"
    tp_cmd "$GEN_FD" "$GEN_LOG" start >/dev/null
    nap "$INJECT"
    tp_cmd "$GEN_FD" "$GEN_LOG" stop >/dev/null
    tp_cmd "$GEN_FD" "$GEN_LOG" "set fwd 5tswap" >/dev/null
    tp_cmd "$GEN_FD" "$GEN_LOG" start >/dev/null
    nap "$WARMUP"
    wait_quiet
    local a0 a1 am t0 t1 tm c0 c1 half=$((DURATION / 2))
    sut_cyc_begin "$sys"
    tp_cmd "$GEN_FD" "$GEN_LOG" "clear fwd stats all" >/dev/null
    threads >"$MEAS.before"
    procs >"$MEAS.procs0"
    c0=$(cpu_total); t0=$(date +%s.%N); a0=$(gen_rx)
    # One sample a second (the VM's speed mode can change within a
    # measurement: PERSEC); the half-way one also gives the stability.
    local s prev=$a0 tprev=$t0 now cur
    tm=$t0; am=$a0
    for s in $(seq "$DURATION"); do
        nap 1
        now=$(date +%s.%N); cur=$(gen_rx)
        awk -v a="$prev" -v b="$cur" -v t0="$tprev" -v t1="$now" -v k="$scen,$size,$flows,$sys,$rep,$try,$s" \
            'BEGIN {split(a, x, " "); split(b, y, " "); printf "%s,%.3f\n", k, (y[1] + y[2] - x[1] - x[2]) / (t1 - t0) / 1e6}' >>"$PERSEC"
        ((s == half)) && { tm=$now; am=$cur; }
        prev=$cur; tprev=$now
    done
    t1=$tprev; a1=$prev
    c1=$(cpu_total)
    procs >"$MEAS.procs1"
    threads >"$MEAS.after"
    local sutc genf el
    genf=$(tp_cmd "$GEN_FD" "$GEN_LOG" "show fwd stats all")
    sutc=$(sut_cyc_end "$sys" "$(awk -v a="$a0" -v b="$a1" 'BEGIN {split(a, x, " "); split(b, y, " "); print y[1] + y[2] - x[1] - x[2]}')" \
        "$({ grep -o 'at [0-9]* MHz' <<<"$genf" || true; } | head -1 | tr -dc 0-9)")
    el=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
    placement "$MEAS.before" "$MEAS.after" "$el"
    local ours foreign
    ours=$(LC_ALL=C join -j 1 <(awk '{print $1 "/" $2, $3}' "$MEAS.before" | LC_ALL=C sort) \
        <(awk '{print $1 "/" $2, $3}' "$MEAS.after" | LC_ALL=C sort) | awk '{s += $3 - $2} END {print s + 0}')
    foreign=$(awk -v c="$((c1 - c0))" -v o="$ours" -v el="$el" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {f = 100 * (c - o) / (el * hz); printf "%.0f", (f < 0 ? 0 : f)}')
    # rates: whole window, and each half (stability); generator busy share
    local row
    row=$(awk -v a0="$a0" -v am="$am" -v a1="$a1" -v t0="$t0" -v tm="$tm" -v t1="$t1" -v g="$genf" 'BEGIN {
        split(a0, x, " "); split(am, y, " "); split(a1, z, " ")
        n = z[1] + z[2] - x[1] - x[2]; h1 = y[1] + y[2] - x[1] - x[2]; h2 = n - h1
        mpps = n / (t1 - t0) / 1e6
        stab = (h1 > 0 ? (h2 / (t1 - tm)) / (h1 / (tm - t0)) : 0)
        cyc = ""; mhz = ""
        if (match(g, /CPU cycles\/packet=[0-9.]+/)) cyc = substr(g, RSTART + 18, RLENGTH - 18)
        if (match(g, /at [0-9]+ MHz/)) mhz = substr(g, RSTART + 3, RLENGTH - 7)
        busy = (cyc != "" && mhz > 0 ? 100 * cyc * n / (t1 - t0) / (mhz * 1e6) : -1)
        printf "%.3f %.3f %.0f %.3f %.3f", mpps, stab, busy, (z[2] - x[2]) / (t1 - t0) / 1e6, (z[1] - x[1]) / (t1 - t0) / 1e6 }')
    local mpps stab gbusy ab ba cyc sbusy hit flag=""
    read -r mpps stab gbusy ab ba <<<"$row"
    read -r cyc sbusy hit <<<"$sutc"
    if ((foreign > FOREIGN_MAX)); then
        local who
        who=$(top_foreign "$MEAS.procs0" "$MEAS.procs1" "$el")
        flag+="disturbed(${foreign}%${who:+: $who});"
    fi
    rm -f "$MEAS.procs0" "$MEAS.procs1"
    flag+=$PLACEMENT_FLAG
    ((gbusy > 85)) && flag+="generator-bound(${gbusy}%);"
    # In a closed loop a SUT that loses packets empties the loop: the rate decays.
    if [[ $mpps == 0.000 ]]; then
        flag+="no-traffic;"
    elif [[ $ab == 0.000 || $ba == 0.000 ]]; then
        flag+="one-way;"
    elif awk -v s="$stab" 'BEGIN {exit !(s < 0.7)}'; then
        flag+="decaying(${stab});"
    fi
    local unsup
    unsup=$(($(unsupported_drops "$sys") - unsup0))
    ((unsup > 0)) && flag+="refused($unsup unsupported drops);"
    LAST_FLAG=$flag
    gen_stop
    echo "$scen,$size,$flows,$sys,$rep,$try,$mpps,$ab,$ba,$stab,$cyc,$sbusy,$hit,$gbusy,$foreign,${flag%;}" >>"$RESULTS"
    log "  $(printf '%-8s %-11s %5sB %5s flows rep %s: %8s Mpps  SUT %4s cyc/pkt  gen busy %3s%%  foreign %3s%%  %s' \
        "$sys" "$scen" "$size" "$flows" "$rep" "$mpps" "$cyc" "$gbusy" "$foreign" "${flag%;}")"
}

# ------------------------------------------------------------------- main
{
    echo "date: $(date -Is)"
    uname -a
    echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo)"
    dpkg-query -W dpdk openvswitch-switch-dpdk ovn-central ovn-host 2>/dev/null || true
    echo "petrel: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?')"
    echo "REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP INJECT=$INJECT SIZES='$SIZES' FLOWS='$FLOWS'"
    echo "SYSTEMS='$SYSTEMS' SCENARIOS='$SCENARIOS' GEN_CORE=$GEN_CORE SUT_CORE=$SUT_CORE FOREIGN_MAX=$FOREIGN_MAX"
} >"$OUT/env.txt"
echo "scenario,frame_bytes,flows,system,rep,try,mpps,mpps_a_to_b,mpps_b_to_a,stability,sut_cycles_per_packet,sut_busy_pct,sut_cache_hit_pct,gen_busy_pct,foreign_cpu_pct,flags" >"$RESULTS"
echo "scenario,frame_bytes,flows,system,rep,try,second,mpps" >"$PERSEC"

cells=0
for sys in $SYSTEMS; do
    if [[ $sys == ceiling ]]; then cells=$((cells + 1)); else cells=$((cells + $(wc -w <<<"$SCENARIOS"))); fi
done
cells=$((cells * $(wc -w <<<"$SIZES") * $(wc -w <<<"$FLOWS") * REPS))
log "$cells measurements of ${DURATION}s (+${WARMUP}s warm-up); generator on CPU $GEN_CORE, SUT on CPU $SUT_CORE; results in $OUT"

# Systems alternate inside each rep, so slow drifts of a shared machine hit
# all of them alike.
for REP in $(seq 1 "$REPS"); do
    for scen in ceiling $SCENARIOS; do
        for sys in $SYSTEMS; do
            if [[ $scen == ceiling ]]; then [[ $sys == ceiling ]] || continue; else [[ $sys != ceiling ]] || continue; fi
            log "rep $REP/$REPS: $sys, $scen"
            sut_start "$sys" "$scen"
            for size in $SIZES; do
                for flows in $FLOWS; do
                    measure "$sys" "$scen" "$size" "$flows" "$REP"
                done
            done
            sut_stop "$sys"
        done
    done
done

# --------------------------------------------------------------- summary
# Last try of each (scenario, size, flows, system, rep) counts.
awk -F, 'NR > 1 {k = $1 "," $2 "," $3 "," $4 "," $5; v[k] = $0} END {for (k in v) print v[k]}' "$RESULTS" |
    sort -t, -k1,1 -k2,2n -k3,3n -k4,4 -k5,5n >"$OUT/last.csv"
{
    echo "scenario,frame_bytes,flows,system,n,mpps_median,mpps_min,mpps_max,spread_pct,sut_cycles_per_packet_median,flags"
    awk -F, '
        function median(s, n,   a, i, j, t) {
            split(s, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) {t = a[i]; a[i] = a[j]; a[j] = t}
            lo = a[1]; hi = a[n]
            return (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2)
        }
        {
            k = $1 "," $2 "," $3 "," $4; m[k] = m[k] " " $7; n[k]++
            if ($11 != "-") {c[k] = c[k] " " $11; nc[k]++}
            if ($16 != "") f[k] = f[k] (f[k] == "" ? "" : "|") $16
        }
        END {
            for (k in m) {
                cm = (nc[k] ? sprintf("%.0f", median(c[k], nc[k])) : "-")
                md = median(m[k], n[k])
                printf "%s,%d,%.3f,%.3f,%.3f,%.1f,%s,%s\n", k, n[k], md, lo, hi, (md > 0 ? 50 * (hi - lo) / md : 0), cm, f[k]
            }
        }' "$OUT/last.csv" | sort -t, -k1,1 -k2,2n -k3,3n -k4,4
} >"$OUT/summary.csv"

# The table: one row per scenario x size x flows, the ceiling from its own cell.
awk -F, -v scen="$SCENARIOS" -v sizes="$SIZES" -v flows="$FLOWS" -v sut="$SUT_CORE" '
    NR > 1 {k = $1 "," $2 "," $3 "," $4; md[k] = $6; sp[k] = $9; cy[k] = $10; fl[k] = $11}
    function cell(k) {
        if (!(k in md)) return "-"
        if (md[k] < 0.01 && fl[k] ~ /refused/) return "refused"
        return sprintf("%.2f ±%.0f%%", md[k], sp[k])
    }
    function ratio(a, b) {return (a in md && b in md && md[b] > 0 && md[a] >= 0.01 ? sprintf("%.2f", md[a] / md[b]) : "-")}
    END {
        printf "%-11s %6s %6s | %-14s %-14s %-14s | %-10s %-13s | %s\n", "scenario", "frame", "flows",
            "ceiling Mpps", "OVS Mpps", "Petrel Mpps", "Petrel/OVS", "Petrel/ceil.", "notes"
        ns = split(scen, S, " "); nz = split(sizes, Z, " "); nf = split(flows, F, " ")
        for (i = 1; i <= ns; i++) for (j = 1; j <= nz; j++) for (l = 1; l <= nf; l++) {
            b = S[i] "," Z[j] "," F[l]; c = "ceiling," Z[j] "," F[l] ",ceiling"
            o = b ",ovs"; p = b ",petrel"
            notes = ""
            if (fl[p] ~ /refused/) notes = notes "Petrel drops what it cannot run yet (conntrack: petrelctl refusals); "
            if (fl[c] fl[o] fl[p] ~ /disturbed/) notes = notes "some reps disturbed by other processes; "
            if (fl[c] fl[o] fl[p] ~ /generator-bound/) notes = notes "generator > 85% busy; "
            if (fl[o] fl[p] ~ /no-traffic/) notes = notes "no traffic in some reps; "
            if (fl[c] fl[o] fl[p] ~ /one-way|decaying/) notes = notes "loss in the loop (one-way/decaying) in some reps; "
            if (S[i] == "overlay") {
                # Two nodes on one core: the ceiling (one process) does not apply.
                printf "%-11s %5sB %6s | %-14s %-14s %-14s | %-10s %-13s | %s\n", S[i], Z[j], F[l],
                    "-", cell(o), cell(p), ratio(p, o), "-",
                    sprintf("two nodes sharing CPU %s; cycles per vhost->Geneve->vhost packet, both nodes: OVS %s, Petrel %s; ", sut, cy[o], cy[p]) notes
                continue
            }
            printf "%-11s %5sB %6s | %-14s %-14s %-14s | %-10s %-13s | %s\n", S[i], Z[j], F[l],
                cell(c), cell(o), cell(p), ratio(p, o), ratio(p, c), notes
        }
    }' "$OUT/summary.csv" >"$OUT/table.txt"

awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) h[i] = $i; next}
    {printf "%s  {", (NR == 2 ? "[\n" : ",\n")
     for (i = 1; i <= NF; i++) {v = $i; q = (v ~ /^-?[0-9.]+$/ && h[i] != "scenario" && h[i] != "system" ? v : "\"" v "\"")
        printf "%s\"%s\": %s", (i > 1 ? ", " : ""), h[i], q}
     printf "}"}
    END {print (NR > 1 ? "\n]" : "[]")}' "$OUT/summary.csv" >"$OUT/summary.json"

echo
echo "Mpps at the generator (both directions), median over $REPS rep(s) ± half the min-max spread;"
echo "generator: testpmd net_virtio_user on CPU $GEN_CORE; SUT on CPU $SUT_CORE; ${DURATION}s per measurement."
cat "$OUT/table.txt"

# By speed mode. This VM switches between speed modes (the host moves its
# vCPUs: every system's rate halves or doubles together, sometimes within
# a measurement), so medians over reps mix modes. Per row, the per-second
# rates of all its systems are pooled; when they form two clusters (the
# widest gap between neighbours in sorted order is a factor >= 1.4), each
# system's median is given per cluster, and the ratios compare like with
# like. With a real gap between systems (one always slower) the clusters
# are the systems, not modes: the counts show it.
python3 - "$PERSEC" "$SCENARIOS" "$SIZES" "$FLOWS" >"$OUT/modes.txt" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
scens, sizes, flows = (a.split() for a in sys.argv[2:5])
out = []
for sc in scens:
    if sc == "overlay":
        continue
    for z in sizes:
        for f in flows:
            per = {}
            for r in rows:
                if r["frame_bytes"] == z and r["flows"] == f and (
                    (r["scenario"] == sc and r["system"] != "ceiling") or r["system"] == "ceiling"
                ):
                    per.setdefault(r["system"], []).append(float(r["mpps"]))
            xs = sorted(x for v in per.values() for x in v if x > 0.01)
            if len(xs) < 4:
                continue
            # each cluster at least 15% of the seconds: a stray slow second is not a mode
            least = max(3, int(0.15 * len(xs)))
            gap, cut = max(((xs[i + 1] / xs[i], xs[i + 1]) for i in range(least - 1, len(xs) - least)), default=(1, 0))
            modes = [("all", 0.0, float("inf"))] if gap < 1.4 else [("fast", cut, float("inf")), ("slow", 0.0, cut)]
            for name, lo, hi in modes:
                med = {}
                cells = []
                for sysn in ("ceiling", "ovs", "petrel"):
                    v = [x for x in per.get(sysn, []) if lo <= x < hi]
                    if len(v) >= 3:
                        med[sysn] = statistics.median(v)
                        cells.append(f"{sysn} {med[sysn]:.2f} (n={len(v)})")
                    elif sysn in per:
                        cells.append(f"{sysn} - (n={len(v)})")
                rat = [f"{a}/{b} {med[a] / med[b]:.2f}" for a, b in (("petrel", "ovs"), ("petrel", "ceiling")) if a in med and b in med]
                out.append(f"{sc:<11} {z:>5}B {f:>6} {name:<4} | " + "  ".join(cells) + " | " + ("  ".join(rat) or "-"))
print("\n".join(out))
PY

echo
echo "By speed mode (per-second rates; medians and seconds counted; see modes.txt):"
cat "$OUT/modes.txt"
echo
echo "results: $RESULTS, $OUT/summary.csv, $OUT/summary.json, $PERSEC; logs: $LOGS"
