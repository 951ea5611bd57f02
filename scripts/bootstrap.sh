#!/usr/bin/env bash
# Prepares this machine for Petrel: Debian packages, hugepages, hugetlbfs.
# Idempotent: run it as often as you like (root needed). Used by the README's
# commands and by .ci/run.
#
#   HUGEPAGES=1024 scripts/bootstrap.sh     (2 MiB pages to reserve; default 1024)
set -Eeuo pipefail

HUGEPAGES=${HUGEPAGES:-1024}
export PATH="$HOME/.cargo/bin:$PATH"
log() { printf 'bootstrap: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (apt-get, hugepages, mount)"; exit 1
fi

# Debian packages, by what each is for:
#   build:  libdpdk-dev (DPDK 22.11 headers + pkg-config), libclang-dev + clang (bindgen), pkg-config
#   run:    dpdk (PMD drivers), dpdk-dev (dpdk-testpmd: pod app and generator)
#   tests:  python3-scapy (fixtures), tshark (dissection checks), iproute2 (netns, veth), iputils-ping (underlay)
#   OVN:    ovn-central (ovsdb-server, ovn-northd, ovn-nbctl/-sbctl), ovn-host (ovn-controller, ovn-trace),
#           openvswitch-switch (the OVS chassis of scripts/overlay-test.sh, the reference of
#           dataplane/tests/ovs_mirror_format.rs)
#   bench:  openvswitch-switch-dpdk (OVS-DPDK, the peer that scripts/bench.sh measures)
#   CNI:    containernetworking-plugins (host-local IPAM for petrel-cni), python3-venv
#           (kubernetes-validate, below, checks deploy/)
#   metrics: prometheus (promtool: the tests check every /metrics scrape with `promtool check metrics`;
#           the prometheus server it brings is never started here)
#   VM:     qemu-system-x86 (dataplane/tests/vm.rs boots a Linux guest on a vhost-user port), and for
#           scripts/vm-guest.sh, which builds that guest: busybox-static, cpio, kmod (modinfo)
PKGS=(libdpdk-dev dpdk dpdk-dev libclang-dev clang pkg-config python3-scapy tshark iproute2
      ovn-central ovn-host openvswitch-switch procps iputils-ping containernetworking-plugins python3-venv
      prometheus openvswitch-switch-dpdk qemu-system-x86 busybox-static cpio kmod)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    # Package scripts must not start daemons (no systemd here; tests start their own).
    prc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; prc=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    ((prc)) && rm -f /usr/sbin/policy-rc.d
fi

# Hugepages: reserve (only ever grow) and mount hugetlbfs.
cur=$(cat /proc/sys/vm/nr_hugepages)
if ((cur < HUGEPAGES)); then
    echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages
    got=$(cat /proc/sys/vm/nr_hugepages)
    ((got >= HUGEPAGES)) || log "warning: asked for $HUGEPAGES hugepages, kernel gave $got"
fi
if ! grep -qs ' hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages
fi

# cargo-nextest runs the tests (one process per test: EAL initialises once per process).
if ! command -v cargo-nextest >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null
fi
# kubernetes-validate (PyPI; bundles the Kubernetes schemas, so it runs
# offline) for scripts/cni/check-deploy.sh, in its own venv.
KV_VENV=${KV_VENV:-/opt/petrel-kv}
if [[ ! -x $KV_VENV/bin/kubernetes-validate ]]; then
    log "installing kubernetes-validate in $KV_VENV"
    rm -rf "$KV_VENV"
    /usr/bin/python3 -m venv "$KV_VENV"
    "$KV_VENV/bin/pip" install -q 'kubernetes-validate==1.37.0' >/dev/null
fi
# The guest of dataplane/tests/vm.rs: a Debian kernel and an initramfs in
# target/vm (apt-get download; cached, rebuilt when the script or the
# kernel package changes).
"$(dirname "$0")/vm-guest.sh" >/dev/null
log "ready: $(grep HugePages_Free /proc/meminfo | tr -s ' '), DPDK $(pkg-config --modversion libdpdk)"
