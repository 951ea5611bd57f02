#!/usr/bin/env bash
# overlay-test.sh - two Petrel chassis (petreld + petrel-ovn each) under one
# real OVN Southbound (ovsdb-server + ovn-northd), their uplinks on a Linux
# bridge standing in for the underlay, in a private network namespace.
#
# Node C runs Open vSwitch (userspace datapath, br-phy + br-int) with
# ovn-controller: Petrel and OVS pods talk both ways over Geneve (unicast,
# broadcast with one copy per chassis, unknown unicast) and over a VLAN
# localnet switch spanning A and C (tagged on the underlay, no tunnel).
#
# Checks: each node answers ARP and ping on its tunnel IP; unicast both ways
# arrives byte for byte; tshark sees Geneve with VNI = the datapath key and
# OVN's option (class 0x0102, type 0x80) carrying the ingress/egress port
# keys; an ARP broadcast reaches every remote port once with one tunnel copy
# per chassis; unknown unicast reaches only the `unknown` port; Geneve from
# an address that is no chassis is dropped and counted; after `ovn-sbctl
# chassis-del` nothing is tunnelled to the removed chassis; dpdk-testpmd pods on
# vhost-user ports added at runtime on A and B bounce traffic through Geneve.
#
# Needs root, ovn-central, tshark, python3-scapy and target/debug binaries
# (PETREL_BIN=DIR for others). OVERLAY_KEEP=1 keeps the work directory.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $(id -u) == 0 ]] || { echo "overlay-test: run as root" >&2; exit 2; }
for t in ovsdb-server ovn-northd ovn-nbctl ovn-sbctl ovn-controller ovs-vswitchd ovs-vsctl tshark unshare ip ping; do
    command -v "$t" >/dev/null || { echo "overlay-test: missing $t (scripts/bootstrap.sh)" >&2; exit 2; }
done
if [[ -z ${OVERLAY_NETNS:-} ]]; then
    exec unshare --net env OVERLAY_NETNS=1 "$0" "$@"
fi
rc=0
echo "== overlay over IPv4 (Petrel A, B; OVS C)"
/usr/bin/python3 "$HERE/overlay/overlay_test.py" "$@" || rc=$?
echo "== overlay over IPv6 (Petrel A, B: tunnel endpoints fd00:50::1, ::2; Neighbor Discovery by petreld)"
/usr/bin/python3 "$HERE/overlay/overlay_test.py" --ipv6 "$@" || rc=$?
exit "$rc"
