#!/usr/bin/env bash
# cp-bench.sh - control plane, side by side: petrel-ovn and ovn-controller
# (OVN 23.03, with OVS 3.1 netdev) on the SAME Southbound, in the same run.
#
# Workload, per scale SxPxK (NB built before ovn-northd starts, one NB
# transaction per switch through an ovn-nbctl daemon):
#   S logical switches ls<s>, each with P ports ls<s>p<p> with addresses
#   "0a:00:SS:SS:PP:PP (10+s/256).(s%256).(p/250).(p%250+2)", a port group
#   pg<s> of all its ports, an address set as<s> of their IPs and 3
#   allow-related ACLs on pg<s>:
#     to-lport   1002 outport == @pg<s> && ip4.src == $as<s>
#     to-lport   1001 outport == @pg<s> && ip4 && tcp.dst == 22
#     from-lport 1001 inport == @pg<s> && ip4
#   K local ports: ls<j % S>p<j / S>, j < K (spread over min(K, S) switches).
#
# The two chassis run one after the other on the same databases, REPS times
# each, alternating (ovn-controller, petrel-ovn, ovn-controller, ...), both
# with conditional monitoring (ovn-monitor-all=false; MONITOR_ALL=1 for both
# to monitor everything):
#   ovn-controller: system-id cpb-ovn, ovsdb-server + ovs-vswitchd (plain, not
#     -dpdk) in a private network namespace (unshare -n), br-int
#     datapath_type=netdev; local ports are type=internal interfaces with
#     external_ids:iface-id.
#   petrel-ovn: system-id cpb-petrel, settings from a --config file, local
#     ports as iface-ids in it.
#   Ports added during the run (below) are declared local to both from the
#   start (an OVS interface / an iface-id for a port NB does not have yet),
#   each agent with its own names.
#
# Measured, per rep and agent (all times on one clock; Port_Binding.up is
# stamped by one `ovsdb-client --timestamp monitor` of the SB, ms resolution):
#   cold_s    agent launch -> all K local Port_Bindings up=true;
#   rss_mib   agent VmRSS after cold start + `ovn-nbctl --wait=hv sync`, and
#             at the end of its run (the larger is reported), VmHWM too;
#   add_ms    INC times: one NB transaction adds a port (to a switch with
#             local ports, its port group and address set) -> its
#             Port_Binding up=true. Each starts after `--wait=hv sync` and
#             once northd and the NB/SB servers have been idle for 0.3 s.
#             Most of it is ovn-northd (its full recompute at 10k ports).
#   add_agent_ms  of which the agent's share: the new Port_Binding's insert
#             -> its up=true, both as the SB monitor saw them (1 ms
#             resolution: a sample of 0-1 ms is at the resolution limit).
#   Reported: medians over the REPS runs (add: over all REPS x INC adds), and
#   ratios ovn-controller / petrel-ovn (> 1: petrel-ovn is faster/smaller).
#
#   compile_full_ms  full compile of the local datapaths' logical flows:
#             ovn-controller's flow-generation stopwatch (Maximum) around
#             `inc-engine/recompute`; petrel-ovn's first compile (log line
#             "compiled tables", compile_us).
#   compile_add_ms   ovn-controller: flow-generation Maximum during a port add.
#   compile_inc_ms   petrel-ovn: each compile after the cold start (port
#             adds and what they bring), compile_inc_flows how many logical
#             flows it compiled (the rest came from the cache).
#
# petrel-ovn runs with compile-only = true (no petreld here): it compiles
# the tables and sets up=true/acknowledges nb_cfg after compiling, without
# publishing; ovn-controller also installs its flows into OVS.
#
# Between runs a stopped agent's leftovers are cleared (ovn-controller exits
# through `ovn-appctl exit`, petrel-ovn on SIGTERM; both remove their
# Chassis and release their ports; anything left is cleared by hand).
#
# Usage (root, for the network namespace):
#   scripts/cp-bench.sh                       # SCALES="10x100x20 100x100x50"
#   SCALES=10x100x20 REPS=1 scripts/cp-bench.sh
# Env: SCALES ("SxPxK ..."), REPS (3), INC (3), MONITOR_ALL (0),
#      MAX_SECONDS (900: the whole run is stopped after that),
#      PETREL_LOG (info: petrel-ovn's --log),
#      PETREL_OVN (target/release/petrel-ovn, built with cargo if missing),
#      OUT (/tmp/petrel-cp-bench).
# Output: the table on stdout; $OUT/<timestamp>/{summary.tsv,samples.tsv,
#   env.txt,<scale>/*.log}.
# Everything is on Unix sockets in a temporary directory; everything started
# here is killed by PID on exit (trap), the directory removed.
set -Eeuo pipefail

SCALES=${SCALES:-"10x100x20 100x100x50"}
REPS=${REPS:-3}
INC=${INC:-3}
MONITOR_ALL=${MONITOR_ALL:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PETREL_OVN=${PETREL_OVN:-$ROOT/target/release/petrel-ovn}
OUT=${OUT:-/tmp/petrel-cp-bench}
VSWITCHD=/usr/lib/openvswitch-switch/ovs-vswitchd
TMO=120 # bound of every wait (s): a stuck run still ends
MAX_SECONDS=${MAX_SECONDS:-900}
PETREL_LOG=${PETREL_LOG:-info}

[[ $(id -u) == 0 ]] || { echo "run as root (ovs-vswitchd runs in its own network namespace)" >&2; exit 2; }
for t in ovsdb-server ovsdb-tool ovsdb-client ovn-northd ovn-nbctl ovn-sbctl ovn-controller ovn-appctl ovs-vsctl unshare "$VSWITCHD"; do
    command -v "$t" >/dev/null || { echo "missing $t (ovn-central, ovn-host, openvswitch-switch)" >&2; exit 2; }
done
if [[ ! -x $PETREL_OVN ]]; then
    (cd "$ROOT" && cargo build --release -p petrel-control --bin petrel-ovn)
fi

RESULTS=$OUT/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
WORK=$(mktemp -d /tmp/petrel-cp-bench.XXXXXX)
# daemons' default control sockets, pid and log files go there too
export OVS_RUNDIR=$WORK OVS_LOGDIR=$WORK OVS_DBDIR=$WORK OVN_RUNDIR=$WORK OVN_LOGDIR=$WORK OVN_DBDIR=$WORK
unset OVN_NB_DAEMON OVN_NB_DB OVN_SB_DB OVN_REMOTE
PIDS=()

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
pidf() { cat "$1" 2>/dev/null || true; }

stop_pid() { # TERM, then KILL after 5 s
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

on_exit() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    rm -rf "$WORK"
    ((rc == 0)) || log "failed (rc=$rc); logs in $RESULTS"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
# watchdog: the whole run is bounded
(
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$MAX_SECONDS" & sp=$!
    wait "$sp"
    log "ERROR: still running after $MAX_SECONDS s, stopping"
    kill -TERM $$
) &
PIDS+=($!)

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (!NR) { print "NA"; exit } print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.1fx", a / b }'; }
jiffies() { local s=0 p; for p in "$@"; do [[ -r /proc/$p/stat ]] && s=$((s + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo "$s"; }
# SB monitor stamp -> epoch seconds
stamp_epoch() { date -u -d "$1" +%s.%N; }
epoch_stamp() { date -u -d "@$1" '+%Y-%m-%d %H:%M:%S.%3N'; }
rss_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ------------------------------------------------------------------ per scale
run_scale() {
    local S=$1 P=$2 K=$3
    local D=$WORK/S${S}P${P}K${K}
    mkdir -p "$D"
    local NB="ovn-nbctl --db=unix:$D/nb.sock --timeout=$TMO"
    local SB="ovn-sbctl --db=unix:$D/sb.sock --timeout=$TMO"
    local VS="ovs-vsctl --db=unix:$D/conf.sock --timeout=$TMO"
    local central=()

    # central: NB, SB, an nbctl daemon for the bulk load, northd later
    ovsdb-tool create "$D/nb.db" /usr/share/ovn/ovn-nb.ovsschema
    ovsdb-tool create "$D/sb.db" /usr/share/ovn/ovn-sb.ovsschema
    local db
    for db in nb sb; do
        ovsdb-server "$D/$db.db" --remote=punix:"$D/$db.sock" --unixctl="$D/$db.ctl" \
            --pidfile="$D/$db.pid" --log-file="$D/$db.log" --detach
        PIDS+=("$(pidf "$D/$db.pid")") central+=("$(pidf "$D/$db.pid")")
    done
    $NB init
    local sock
    sock=$(ovn-nbctl --db=unix:"$D/nb.sock" --pidfile="$D/nbctl.pid" --log-file="$D/nbctl.log" --detach)
    PIDS+=("$(pidf "$D/nbctl.pid")")
    local NBD="env OVN_NB_DAEMON=$sock ovn-nbctl --timeout=$TMO"

    log "S=$S P=$P K=$K: building NB"
    local s p args ips ports t0 a ip
    t0=$EPOCHREALTIME
    for ((s = 0; s < S; s++)); do
        args=(ls-add "ls$s") ports=() ips=()
        for ((p = 0; p < P; p++)); do
            addr a "$s" "$p"; ip_of ip "$s" "$p"
            args+=(-- lsp-add "ls$s" "ls${s}p$p" -- lsp-set-addresses "ls${s}p$p" "$a")
            ports+=("ls${s}p$p") ips+=("\"$ip\"")
        done
        args+=(-- pg-add "pg$s" "${ports[@]}")
        args+=(-- create Address_Set name="as$s" "addresses=[$(IFS=,; echo "${ips[*]}")]")
        args+=(-- --type=port-group acl-add "pg$s" to-lport 1002 "outport == @pg$s && ip4.src == \$as$s" allow-related)
        args+=(-- --type=port-group acl-add "pg$s" to-lport 1001 "outport == @pg$s && ip4 && tcp.dst == 22" allow-related)
        args+=(-- --type=port-group acl-add "pg$s" from-lport 1001 "inport == @pg$s && ip4" allow-related)
        $NBD "${args[@]}" >/dev/null
    done
    ovn-northd --ovnnb-db=unix:"$D/nb.sock" --ovnsb-db=unix:"$D/sb.sock" --unixctl="$D/northd.ctl" \
        --pidfile="$D/northd.pid" --log-file="$D/northd.log" --detach
    PIDS+=("$(pidf "$D/northd.pid")") central+=("$(pidf "$D/northd.pid")")
    $NB --wait=sb sync
    local n_lflows n_pbs
    n_lflows=$($SB --bare --columns=_uuid list Logical_Flow | grep -c . || true)
    n_pbs=$($SB --bare --columns=_uuid list Port_Binding | grep -c . || true)
    log "  NB + northd in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s: $n_lflows logical flows, $n_pbs port bindings"

    # one SB monitor stamps every Port_Binding.up change
    ovsdb-client --timestamp monitor unix:"$D/sb.sock" OVN_Southbound Port_Binding logical_port,up \
        --format=csv >"$D/pb-monitor.csv" 2>"$D/pb-monitor.err" &
    PIDS+=($!)

    # local ports: K existing, plus the ports each agent will see added
    local locals=() j
    for ((j = 0; j < K; j++)); do locals+=("ls$((j % S))p$((j / S))"); done
    local nl=$((K < S ? K : S)) n_add=$((REPS * INC)) fut_ovn=() fut_pet=()
    for ((j = 0; j < n_add; j++)); do
        fut_ovn+=("ls$((j % nl))p$((P + 2 * j))")
        fut_pet+=("ls$((j % nl))p$((P + 2 * j + 1))")
    done

    # OVS for ovn-controller
    ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$D/conf.db" --remote=punix:"$D/conf.sock" --unixctl="$D/conf.ctl" \
        --pidfile="$D/conf.pid" --log-file="$D/conf.log" --detach
    PIDS+=("$(pidf "$D/conf.pid")")
    $VS --no-wait init
    unshare --net "$VSWITCHD" unix:"$D/conf.sock" --pidfile="$D/vswitchd.pid" --unixctl="$D/vswitchd.ctl" \
        --log-file="$D/vswitchd.log" --detach
    PIDS+=("$(pidf "$D/vswitchd.pid")")
    $VS add-br br-int -- set bridge br-int datapath_type=netdev fail_mode=secure other-config:disable-in-band=true
    $VS set Open_vSwitch . external_ids:system-id=cpb-ovn external_ids:ovn-remote=unix:"$D/sb.sock" \
        external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip=127.0.0.1 external_ids:ovn-bridge=br-int \
        external_ids:ovn-bridge-datapath-type=netdev \
        external_ids:ovn-monitor-all="$( ((MONITOR_ALL)) && echo true || echo false)"
    args=()
    for ((j = 0; j < ${#locals[@]} + n_add; j++)); do
        local n
        if ((j < K)); then n=${locals[j]}; else n=${fut_ovn[j - K]}; fi
        args+=(-- add-port br-int "vif$j" -- set Interface "vif$j" type=internal external_ids:iface-id="$n")
    done
    $VS "${args[@]:1}"

    # petrel-ovn config file
    {
        echo "remote = \"unix:$D/sb.sock\""
        echo 'system-id = "cpb-petrel"'
        echo 'encap-ip = "127.0.0.1"'
        echo "monitor-all = $( ((MONITOR_ALL)) && echo true || echo false)"
        # no petreld here: compile the logical flows, publish nothing
        echo 'compile-only = true'
        printf 'iface-ids = ['
        printf '"%s", ' "${locals[@]}" "${fut_pet[@]}"
        printf ']\n'
    } >"$D/petrel-ovn.toml"

    quiesce() { # northd and the NB/SB servers idle for 0.3 s (at most 15 s)
        local i a b
        for ((i = 0; i < 50; i++)); do
            a=$(jiffies "${central[@]}"); sleep 0.3; b=$(jiffies "${central[@]}")
            ((b - a <= 1)) && return 0
        done
        log "  WARNING: central daemons not idle after 15 s"
    }
    # first up=true stamp at or after $1 (epoch) of each port named after it;
    # prints "<count> <latest stamp>"
    ups_since() {
        local since; since=$(epoch_stamp "$1"); shift
        awk -F, -v t0="$since" -v want="$*" '
            BEGIN { n = split(want, a, " "); for (i = 1; i <= n; i++) w[a[i]] = 1 }
            /^[0-9][0-9][0-9][0-9]-/ { ts = $0; next }
            ts >= t0 && ($2 == "new" || $2 == "insert" || $2 == "initial") && $4 == "true" && ($3 in w) && !($3 in seen) {
                seen[$3] = 1; c++; if (ts > mx) mx = ts
            }
            END { print c + 0, mx }' "$D/pb-monitor.csv"
    }
    # stamps of port $2's Port_Binding insert and first up=true at or after $1
    insert_up() {
        awk -F, -v t0="$(epoch_stamp "$1")" -v n="$2" '
            /^[0-9][0-9][0-9][0-9]-/ { ts = $0; next }
            ts >= t0 && $2 == "insert" && $3 == n && ins == "" { ins = ts }
            ts >= t0 && ($2 == "new" || $2 == "insert") && $3 == n && $4 == "true" && up == "" { up = ts }
            END { print ins "," up }' "$D/pb-monitor.csv"
    }
    # waits (bounded) until the monitor file shows all of them up since $1
    wait_ups() {
        local since=$1 want=$(($# - 1)) i out; shift
        for ((i = 0; i < 10 * TMO; i++)); do
            out=$(ups_since "$since" "$@")
            [[ ${out%% *} == "$want" ]] && { echo "${out#* }"; return 0; }
            sleep 0.1
        done
        die "timed out waiting for up=true on $want ports"
    }
    reset_sb() { # no agent left: no chassis, every port released and down
        local ch ups a=() u
        for ch in $($SB --bare --columns=name list Chassis); do a+=(-- chassis-del "$ch"); done
        for u in $($SB --bare --columns=_uuid find Port_Binding up=true); do a+=(-- set Port_Binding "$u" up=false); done
        ((${#a[@]})) && $SB "${a[@]:1}" >/dev/null
        ups=$($SB --bare --columns=_uuid find Port_Binding up=true | grep -c . || true)
        ((ups == 0)) || die "ports still up after reset"
    }

    local agent rep i
    for ((rep = 0; rep < REPS; rep++)); do
        for agent in ovn petrel; do
            reset_sb
            $NB --wait=sb sync
            quiesce
            local pid t_launch
            t_launch=$EPOCHREALTIME
            if [[ $agent == ovn ]]; then
                ovn-controller unix:"$D/conf.sock" --pidfile="$D/ovn-controller.pid" \
                    --log-file="$D/ovn-controller-$rep.log" --detach
                pid=$(pidf "$D/ovn-controller.pid")
            else
                "$PETREL_OVN" --config "$D/petrel-ovn.toml" --log "$PETREL_LOG" 2>"$D/petrel-ovn-$rep.log" &
                pid=$!
            fi
            PIDS+=("$pid")
            local last cold
            last=$(wait_ups "$t_launch" "${locals[@]}")
            cold=$(awk -v a="$t_launch" -v b="$(stamp_epoch "$last")" 'BEGIN { printf "%.3f", b - a }')
            $NB --wait=hv sync
            local t_cold_end=$EPOCHREALTIME
            sleep 1 # the cold start's compiles end before the adds' start
            local rss1 hwm rss2
            rss1=$(rss_kib "$pid" VmRSS)
            local ctl="$WORK/ovn-controller.$pid.ctl"
            if [[ $agent == ovn ]]; then
                # full recompute: ovn-controller's flow-generation stopwatch
                # (its main loop's compute) around a forced recompute
                ovn-appctl -t "$ctl" stopwatch/reset flow-generation >/dev/null
                ovn-appctl -t "$ctl" inc-engine/recompute >/dev/null
                $NB --wait=hv sync
                printf '%s\t%s\t%s\t%s\tcompile_full_ms\t%s\n' "$S" "$P" "$K" "$agent" \
                    "$(ovn-appctl -t "$ctl" stopwatch/show flow-generation | awk '/Maximum/ { print $2; exit }')" >>"$RESULTS/samples.tsv"
            fi
            printf '%s\t%s\t%s\t%s\tcold_s\t%s\n' "$S" "$P" "$K" "$agent" "$cold" >>"$RESULTS/samples.tsv"

            local fut=("${fut_ovn[@]}")
            [[ $agent == petrel ]] && fut=("${fut_pet[@]}")
            for ((i = 0; i < INC; i++)); do
                local k=$((rep * INC + i)) n sw pn ip a ta up ms
                n=${fut[k]} sw=${n%%p*} sw=${sw#ls} pn=${n##*p}
                ip_of ip "$sw" "$pn"; addr a "$sw" "$pn"
                $NB --wait=hv sync
                quiesce
                [[ $agent == ovn ]] && ovn-appctl -t "$ctl" stopwatch/reset flow-generation >/dev/null
                ta=$EPOCHREALTIME
                $NBD -- --id=@p create Logical_Switch_Port name="$n" "addresses=\"$a\"" \
                    -- add Logical_Switch "ls$sw" ports @p -- add Port_Group "pg$sw" ports @p \
                    -- add Address_Set "as$sw" addresses "\"$ip\"" >/dev/null
                up=$(wait_ups "$ta" "$n")
                ms=$(awk -v a="$ta" -v b="$(stamp_epoch "$up")" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
                printf '%s\t%s\t%s\t%s\tadd_ms\t%s\n' "$S" "$P" "$K" "$agent" "$ms" >>"$RESULTS/samples.tsv"
                local iu
                iu=$(insert_up "$ta" "$n")
                ms=$(awk -v a="$(stamp_epoch "${iu%,*}")" -v b="$(stamp_epoch "${iu#*,}")" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
                printf '%s\t%s\t%s\t%s\tadd_agent_ms\t%s\n' "$S" "$P" "$K" "$agent" "$ms" >>"$RESULTS/samples.tsv"
                if [[ $agent == ovn ]]; then
                    $NB --wait=hv sync
                    printf '%s\t%s\t%s\t%s\tcompile_add_ms\t%s\n' "$S" "$P" "$K" "$agent" \
                        "$(ovn-appctl -t "$ctl" stopwatch/show flow-generation | awk '/Maximum/ { print $2; exit }')" >>"$RESULTS/samples.tsv"
                fi
            done
            if [[ $agent == petrel ]]; then
                # petrel-ovn logs every compile: the first is the full one
                # (cold start), each port add's is the largest after it
                $NB --wait=hv sync
                # the full compile is the one that compiled every flow (the
                # first with all local datapaths); the ones after the cold
                # start are the port adds' (and what northd changes with them)
                awk -v s="$S" -v p="$P" -v k="$K" -v cold_end="$(date -u -d "@$t_cold_end" '+%Y-%m-%dT%H:%M:%S')" '
                    /compiled tables/ {
                        match($0, /compile_us=[0-9]+/); us = substr($0, RSTART + 11, RLENGTH - 11)
                        match($0, /n_compiled=[0-9]+/); nc = substr($0, RSTART + 11, RLENGTH - 11)
                        match($0, /n_flows=[0-9]+/); nf = substr($0, RSTART + 8, RLENGTH - 8)
                        if (!full && nf > 0 && nc == nf) { full = 1; printf "%s\t%s\t%s\tpetrel\tcompile_full_ms\t%.1f\n", s, p, k, us / 1000; next }
                        if (full && substr($1, 1, 19) > cold_end)
                            printf "%s\t%s\t%s\tpetrel\tcompile_inc_ms\t%.2f\n%s\t%s\t%s\tpetrel\tcompile_inc_flows\t%s\n", s, p, k, us / 1000, s, p, k, nc
                    }' "$D/petrel-ovn-$rep.log" >>"$RESULTS/samples.tsv"
            fi
            $NB --wait=hv sync
            rss2=$(rss_kib "$pid" VmRSS) hwm=$(rss_kib "$pid" VmHWM)
            printf '%s\t%s\t%s\t%s\trss_mib\t%s\n' "$S" "$P" "$K" "$agent" \
                "$(awk -v a="$rss1" -v b="$rss2" 'BEGIN { m = a > b ? a : b; printf "%.1f", m / 1024 }')" >>"$RESULTS/samples.tsv"
            printf '%s\t%s\t%s\t%s\thwm_mib\t%s\n' "$S" "$P" "$K" "$agent" \
                "$(awk -v a="$hwm" 'BEGIN { printf "%.1f", a / 1024 }')" >>"$RESULTS/samples.tsv"
            log "  rep $rep $agent: cold ${cold}s, rss $((rss2 / 1024)) MiB, adds (ms): $(awk -F'\t' -v a="$agent" -v s="$S" -v k="$K" \
                '$1 == s && $3 == k && $4 == a && $5 == "add_ms" { printf "%s ", $6 }' "$RESULTS/samples.tsv")"

            if [[ $agent == ovn ]]; then
                # its control socket is $OVN_RUNDIR/ovn-controller.<pid>.ctl
                ovn-appctl -t "$WORK/ovn-controller.$pid.ctl" exit >/dev/null 2>&1 || true
            else
                kill -TERM "$pid" 2>/dev/null || true
            fi
            local w
            for ((w = 0; w < 100; w++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            stop_pid "$pid"
            wait "$pid" 2>/dev/null || true
        done
    done
    printf '%s\t%s\t%s\tsb_logical_flows\t%s\n' "$S" "$P" "$K" "$n_lflows" >>"$RESULTS/scales.tsv"
    printf '%s\t%s\t%s\tsb_port_bindings\t%s\n' "$S" "$P" "$K" "$n_pbs" >>"$RESULTS/scales.tsv"
    mkdir -p "$RESULTS/S${S}P${P}K${K}"
    cp "$D"/*.log "$D/petrel-ovn.toml" "$RESULTS/S${S}P${P}K${K}/" 2>/dev/null || true

    # this scale's daemons go before the next scale starts
    local keep=() q
    for q in "${PIDS[@]}"; do kill -0 "$q" 2>/dev/null && stop_pid "$q"; done
    PIDS=("${keep[@]}")
}

# addressing of port p of switch s, into variables (no subshell: 10k ports)
ip_of() { printf -v "$1" '%d.%d.%d.%d' $((10 + $2 / 256)) $(($2 % 256)) $(($3 / 250)) $(($3 % 250 + 2)); }
addr() { # addr VAR s p -> "MAC IP"
    local _ip; ip_of _ip "$2" "$3"
    printf -v "$1" '0a:00:%02x:%02x:%02x:%02x %s' $((($2 >> 8) & 255)) $(($2 & 255)) $((($3 >> 8) & 255)) $(($3 & 255)) "$_ip"
}

# ------------------------------------------------------------------ main
{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $(nproc) vCPUs"
    echo "ovn-controller: $(ovn-controller --version | head -1)"
    echo "petrel-ovn: $PETREL_OVN ($("$PETREL_OVN" --version))"
    echo "params: SCALES=$SCALES REPS=$REPS INC=$INC MONITOR_ALL=$MONITOR_ALL"
    echo "loadavg at start: $(cat /proc/loadavg)"
} >"$RESULTS/env.txt"
printf 'S\tP\tK\tagent\tmetric\tvalue\n' >"$RESULTS/samples.tsv"
: >"$RESULTS/scales.tsv"
T_START=$EPOCHREALTIME
for scale in $SCALES; do
    IFS=x read -r S P K <<<"$scale"
    [[ -n $K ]] && ((K <= S * P)) || die "bad scale $scale (SxPxK, K <= S*P)"
    run_scale "$S" "$P" "$K"
done

# ------------------------------------------------------------------ summary
{
    printf 'scale\tmetric\tovn-controller\tpetrel-ovn\tovn/petrel\n'
    for scale in $SCALES; do
        IFS=x read -r S P K <<<"$scale"
        for m in cold_s add_ms add_agent_ms compile_full_ms compile_add_ms compile_inc_ms compile_inc_flows rss_mib hwm_mib; do
            vals() { awk -F'\t' -v s="$S" -v p="$P" -v k="$K" -v a="$1" -v m="$m" \
                '$1 == s && $2 == p && $3 == k && $4 == a && $5 == m { print $6 }' "$RESULTS/samples.tsv"; }
            o=$(median $(vals ovn)) q=$(median $(vals petrel))
            printf '%sx%s (%s local)\t%s\t%s\t%s\t%s\n' "$S" "$P" "$K" "$m" "$o" "$q" "$(ratio "$o" "$q")"
        done
        printf '%sx%s (%s local)\tsb_logical_flows\t%s\t\t\n' "$S" "$P" "$K" \
            "$(awk -F'\t' -v s="$S" -v k="$K" '$1 == s && $3 == k && $4 == "sb_logical_flows" { print $5 }' "$RESULTS/scales.tsv")"
    done
} >"$RESULTS/summary.tsv"
echo "loadavg at end: $(cat /proc/loadavg); wall $(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s" >>"$RESULTS/env.txt"
echo
echo "cold_s: launch -> all K local ports up=true; add_ms: NB port add -> its Port_Binding up=true;"
echo "add_agent_ms: of which Port_Binding insert -> up=true (the agent's share, 1 ms resolution);"
echo "rss/hwm: agent VmRSS/VmHWM; medians of $REPS runs ($((REPS * INC)) adds); ovn-controller up=true includes"
echo "its flow install, petrel-ovn's includes compiling (compile-only: no petreld to publish to)"
echo
column -t -s $'\t' "$RESULTS/summary.tsv"
echo
echo "results: $RESULTS"
