#!/usr/bin/env bash
# The README's main command: Petrel as an OVN chassis with two DPDK "pods".
#
#  1. bootstraps the machine (scripts/bootstrap.sh) and builds the binaries;
#  2. starts an OVN Northbound and Southbound (ovsdb-server) and ovn-northd,
#     by hand, in a scratch directory;
#  3. starts petreld (the fast path, PMD on CPU 1) and petrel-ovn (the
#     chassis agent, compiling northd's logical flows into petreld's tables);
#  4. creates logical switch sw0 (10.0.0.0/24) with ovn-nbctl;
#  5. attaches two pods -- network namespaces -- through petrel-cni exactly
#     as a container runtime does (CNI_* environment, network configuration
#     on stdin): petrel-cni creates each pod's logical switch port
#     <pod>.<namespace>, takes an address from host-local IPAM, and asks
#     petreld for a vhost-user port bound to it;
#  6. runs dpdk-testpmd (net_virtio_user) in each pod on the socket the CNI
#     result names; pod1 sends a first burst and both bounce packets back
#     (5tswap), so traffic flows both ways through OVN's tables;
#  7. shows testpmd's and petreld's counters, CNI CHECK, then CNI DEL;
#     everything is stopped and removed on exit or Ctrl-C.
#
#   scripts/demo.sh            (root; SECONDS_OF_TRAFFIC=5 by default)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"
SECS=${SECONDS_OF_TRAFFIC:-5}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building petreld, petrel-ovn, petrelctl, petrel-cni (debug)"
cargo build --quiet --bins -p petrel-dataplane -p petrel-control -p petrel-cni
BIN=$PWD/target/debug

W=$(mktemp -d /tmp/petrel-demo.XXXXXX)
PIDS=()
PODS=()
CONF=""
cni() { # COMMAND POD: runs petrel-cni as a runtime would
    local cmd=$1 pod=$2
    CNI_COMMAND=$cmd CNI_CONTAINERID="demo-$pod-0123456789ab" CNI_NETNS="/var/run/netns/petrel-demo-$pod" \
    CNI_IFNAME=net1 CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" \
    CNI_PATH=/usr/lib/cni "$BIN/petrel-cni" <<<"$CONF"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    say "cleaning up"
    for pod in "${PODS[@]}"; do
        cni DEL "$pod" >/dev/null 2>&1 || true
        ip netns del "petrel-demo-$pod" 2>/dev/null || true
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$W"
    echo "stopped every process and removed $W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "OVN: Northbound + Southbound ovsdb-servers and ovn-northd in $W"
for db in nb sb; do
    ovsdb-tool create "$W/$db.db" "/usr/share/ovn/ovn-$db.ovsschema"
    ovsdb-server --remote="punix:$W/$db.sock" --unixctl="$W/$db.ctl" --log-file="$W/$db.log" \
        --no-chdir "$W/$db.db" >/dev/null 2>&1 &
    PIDS+=($!)
done
NB=unix:$W/nb.sock SB=unix:$W/sb.sock
ovn-northd --ovnnb-db="$NB" --ovnsb-db="$SB" --unixctl="$W/northd.ctl" --log-file="$W/northd.log" \
    --no-chdir >/dev/null 2>&1 &
PIDS+=($!)
export OVN_NB_DB=$NB
for _ in $(seq 100); do ovn-nbctl --timeout=1 show >/dev/null 2>&1 && break; sleep 0.1; done

say "petreld (PMD on CPU 1) and petrel-ovn (chassis hv1)"
CTL=$W/petreld.sock
"$BIN/petreld" --eal-args "--in-memory --no-pci --no-telemetry -m 256 -l 1 --main-lcore 1 --log-level=*:warning" \
    --pmd-cores 1 --control-socket "$CTL" >"$W/petreld.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do [[ -S $CTL ]] && break; sleep 0.1; done
[[ -S $CTL ]] || { cat "$W/petreld.log"; echo "petreld did not start" >&2; exit 1; }
"$BIN/petrel-ovn" --remote "$SB" --system-id hv1 --encap-ip 127.0.0.1 --dataplane "$CTL" 2>"$W/petrel-ovn.log" &
PIDS+=($!)

say "ovn-nbctl ls-add sw0 (10.0.0.0/24)"
ovn-nbctl ls-add sw0 -- set Logical_Switch sw0 other_config:subnet=10.0.0.0/24
ovn-nbctl --timeout=30 --wait=hv sync

# The network configuration, as a NetworkAttachmentDefinition would carry it.
CONF=$(cat <<EOF
{
  "cniVersion": "1.1.0", "name": "demo", "type": "petrel",
  "logicalSwitch": "sw0", "createPort": true, "nbDb": "$NB",
  "controlSocket": "$CTL", "socketDir": "$W/s", "stateDir": "$W/state",
  "vhostMode": "server", "queues": 1, "mtu": 1500, "bindTimeout": 30,
  "ipam": { "type": "host-local", "subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10",
            "gateway": "10.0.0.1", "dataDir": "$W/ipam" }
}
EOF
)
say "network configuration (stdin of petrel-cni)"
echo "$CONF"

field() { /usr/bin/python3 -c "import json,sys; r=json.load(sys.stdin); print($1)"; }
declare -A SOCK MAC IP
for pod in pod1 pod2; do
    say "attach $pod: ip netns add petrel-demo-$pod; CNI_COMMAND=ADD petrel-cni"
    # (A namespace left by an interrupted run is replaced.)
    ip netns del "petrel-demo-$pod" 2>/dev/null || true
    ip netns add "petrel-demo-$pod"
    PODS+=("$pod")
    res=$(cni ADD "$pod") || { echo "$res"; exit 1; }
    /usr/bin/python3 -m json.tool <<<"$res"
    SOCK[$pod]=$(field 'r["interfaces"][0]["socketPath"]' <<<"$res")
    MAC[$pod]=$(field 'r["interfaces"][0]["mac"]' <<<"$res")
    IP[$pod]=$(field 'r["ips"][0]["address"].split("/")[0]' <<<"$res")
done

say "ovn-nbctl show"
ovn-nbctl show
say "petrelctl show (ports bound to their logical ports by petrel-ovn)"
"$BIN/petrelctl" --socket "$CTL" show

testpmd() { # POD PEER [--tx-first]
    local pod=$1 peer=$2
    ip netns exec "petrel-demo-$pod" dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci --in-memory --no-telemetry \
        -m 128 --single-file-segments --log-level='*:warning' --file-prefix="$pod" \
        --vdev="net_virtio_user0,path=${SOCK[$pod]},mac=${MAC[$pod]}" -- \
        --forward-mode=5tswap --port-topology=loop --total-num-mbufs=4096 --nb-cores=1 --burst=128 --stats-period=1 \
        --eth-peer="0,${MAC[$peer]}" --tx-ip="${IP[$pod]},${IP[$peer]}" "${@:3}" \
        </dev/null >"$W/testpmd-$pod.log" 2>&1 &
    PIDS+=($!)
}
say "dpdk-testpmd in each pod on its socket; pod1 sends the first burst, both bounce (5tswap), ${SECS} s"
testpmd pod2 pod1
sleep 2
testpmd pod1 pod2 --tx-first
sleep "$SECS"

say "testpmd's view (last stats of each pod)"
for pod in pod1 pod2; do
    echo "-- $pod (${IP[$pod]}, ${MAC[$pod]})"
    grep -E 'RX-packets|TX-packets' "$W/testpmd-$pod.log" | tail -2 | sed 's/^ */   /'
done
say "petrelctl show (the pods' ports, counting)"
"$BIN/petrelctl" --socket "$CTL" show
"$BIN/petrelctl" --socket "$CTL" drops | head -20

say "CNI_COMMAND=CHECK (port exists and is bound)"
for pod in pod1 pod2; do cni CHECK "$pod" && echo "$pod: ok"; done

verdict=$("$BIN/petrelctl" --socket "$CTL" --json show | /usr/bin/python3 -c '
import json, sys
ports = json.load(sys.stdin)["ports"]
tx = {p["iface_id"]: p["stats"]["tx_packets"] for p in ports}
ok = all(tx.get(f"{p}.default", 0) > 1000 for p in ("pod1", "pod2"))
print(("PASS" if ok else "FAIL") + ": packets delivered by petreld to pod1 %d, to pod2 %d" % (tx.get("pod1.default", 0), tx.get("pod2.default", 0)))')

say "CNI_COMMAND=DEL (port, logical switch port, address and socket removed)"
for pod in pod1 pod2; do cni DEL "$pod" && echo "$pod: deleted"; done
ovn-nbctl show
"$BIN/petrelctl" --socket "$CTL" show
PODS=()

say "result: $verdict"
[[ $verdict == PASS* ]]
