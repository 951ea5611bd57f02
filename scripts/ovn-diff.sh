#!/usr/bin/env bash
# ovn-diff.sh - differential test of Petrel against ovn-trace.
# Usage and the scenario format: scripts/ovn-diff.sh --help, and
# scripts/ovn-diff/README.md. The work is done by scripts/ovn-diff/ovn_diff.py
# (Debian's /usr/bin/python3, for scapy), inside a private network namespace.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<'EOF'
Usage: scripts/ovn-diff.sh [OPTIONS] DIR...

Runs every scenario in DIR... through Petrel (petreld + petrel-ovn on a real
ovsdb-server/ovn-northd Southbound) and compares, packet by packet, what
comes out of every bound port with `ovn-trace --minimal`.

A DIR containing nb.sh is a scenario; otherwise its subdirectories are
searched for scenarios. A scenario is:
  nb.sh    bash, run with OVN_NB_DB set (cwd: the scenario), builds the
           topology with ovn-nbctl. Every logical switch port is bound to the
           Petrel chassis under test ("hv1") except types localnet, router
           and remote. A child port (parent_name + tag) is reached through its
           parent's port with that VLAN tag; a localnet port through the
           uplink port "up-<network_name>" (--bridge-mappings) with its tag.
  packets  one packet per line, `#` starts a comment:
             INPORT MICROFLOW
           MICROFLOW is ovn-trace's: `field == value` terms joined by `&&`,
           bare predicates (udp, arp, nd_ns, ...) allowed; `inport == "INPORT"
           && ` is prepended.
           Directives before a packet: `#! petrel: unsupported` (Petrel
           must drop it, counted as `unsupported`, whatever ovn-trace says);
           `#! fdb: MAC PORT` (the SB FDB must have learnt MAC on PORT).

Defaults for fields left out: those of ovn-trace's microflow parser, i.e.
zero (eth.src/dst 00:00:00:00:00:00, IP addresses 0, ip.ttl 0 -- give
ip.ttl for anything that is routed, L4 ports 0, tcp.flags 0), except what
the microflow's prerequisites imply (e.g. nd_ns gives icmp6.type 135 and
ip.ttl 255). The packet is built from the flow ovn-trace prints on its
first line, so both sides see the same packet. Fields ovn-trace does not
model: IPv4 id 0, DF clear, TCP seq 0, ack 0, window 8192, ICMP id/seq 0;
TCP/UDP/ICMP/echo carry the 8-byte payload "ovn-diff"; ND NS carries a
source link-layer option only if nd.sll is given (NA: target option only if
nd.tll is given); frames are padded to 60 bytes.

For each packet: PASS, or FAIL with the difference (per port: missing,
unexpected, or which header field differs), then `N passed, N failed`.
Exit status 0 iff nothing failed. Known ovn-trace 23.03 deviations from
ovn-controller are listed with their source in scripts/ovn-diff/exceptions.

Options:
  --expect-only   only print what ovn-trace predicts per packet (no Petrel)
  --keep          keep each scenario's work directory (logs, databases)
  --keep-failed   keep the work directory of failing scenarios
  --no-trace      do not run `petrelctl trace` for failing packets
  --timeout S     bound of each readiness wait (default 30)
  --settle-ms MS  a packet is judged once petreld's counters were still this
                  long (default 100; up to 2 s while outputs are missing)
  --exceptions F  exception file (default scripts/ovn-diff/exceptions)
  -h, --help      this text

Needs root (a network namespace, veth pairs), ovn-central (ovsdb-server,
ovn-northd, ovn-nbctl, ovn-sbctl, ovn-trace), python3-scapy, and the
binaries in target/debug (PETREL_BIN=DIR to use others).
EOF
}

for a in "$@"; do
    case $a in
    -h | --help) usage; exit 0 ;;
    esac
done
[[ $# -gt 0 ]] || { usage >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "ovn-diff: run as root (network namespace, veth pairs)" >&2; exit 2; }
for t in ovsdb-server ovsdb-tool ovn-northd ovn-nbctl ovn-sbctl ovn-trace unshare ip; do
    command -v "$t" >/dev/null || { echo "ovn-diff: missing $t (apt-get install ovn-central iproute2)" >&2; exit 2; }
done
/usr/bin/python3 -c 'import scapy' 2>/dev/null || { echo "ovn-diff: /usr/bin/python3 lacks scapy (apt-get install python3-scapy)" >&2; exit 2; }

if [[ -z ${OVN_DIFF_NETNS:-} ]]; then
    # Everything (veths, daemons) lives in a private network namespace: it
    # disappears with the last process, and no host traffic can leak in.
    exec unshare --net env OVN_DIFF_NETNS=1 "$0" "$@"
fi
exec /usr/bin/python3 "$HERE/ovn-diff/ovn_diff.py" "$@"
