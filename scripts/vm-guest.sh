#!/usr/bin/env bash
# Builds the guest of dataplane/tests/vm.rs: a Debian kernel and an
# initramfs whose /init brings up eth0 (virtio-net, the kernel's driver) and
# runs the guest side of the test, printing `PETREL ...` lines on the serial
# console, then powers off.
#
#   scripts/vm-guest.sh [OUT]     (default target/vm; prints OUT)
#
# Nothing is installed: the kernel package is fetched with `apt-get download`
# and unpacked with `dpkg-deb -x`; busybox comes from busybox-static (the
# host's /bin/busybox). The virtio modules (virtio_net and what it needs,
# modules in Debian's cloud config) are resolved with `modinfo -F depends`
# (the package ships no modules.dep). The result is cached: OUT/stamp holds
# the kernel package version and this script's hash, and a matching stamp
# means nothing is rebuilt. Needs: apt-get, dpkg-deb, modinfo (kmod), cpio,
# busybox-static (scripts/bootstrap.sh installs them).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/vm}
# The kernel: whatever Debian 12's cloud flavour currently points at (small,
# virtio drivers as modules); the stamp records the exact version built.
META=linux-image-cloud-amd64
log() { printf 'vm-guest: %s\n' "$*" >&2; }

for t in apt-cache apt-get dpkg-deb modinfo cpio; do
    command -v "$t" >/dev/null || { log "$t is missing: run scripts/bootstrap.sh"; exit 1; }
done
[[ -x /bin/busybox ]] && /bin/busybox --list | grep -qx nc || {
    log "/bin/busybox (busybox-static, with nc) is missing: run scripts/bootstrap.sh"; exit 1; }

kpkg() { apt-cache depends "$META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -1; }
pkg=$(kpkg)
if [[ -z $pkg ]]; then
    apt-get update -q >/dev/null
    pkg=$(kpkg)
fi
[[ -n $pkg ]] || { log "cannot resolve $META with apt-cache"; exit 1; }
ver=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
stamp="$pkg $ver $(sha256sum "$0" | cut -d' ' -f1) $(sha256sum /bin/busybox | cut -d' ' -f1)"
if [[ -f $OUT/stamp && $(cat "$OUT/stamp") == "$stamp" && -f $OUT/vmlinuz && -f $OUT/initrd ]]; then
    echo "$OUT"
    exit 0
fi

log "building $OUT from $pkg $ver"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) || {
    apt-get update -q >/dev/null
    (cd "$work" && apt-get download -q "$pkg=$ver" >/dev/null)
}
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/k"
kver=${pkg#linux-image-}
kver=${kver%-unsigned}
mods=$work/k/lib/modules/$kver
[[ -d $mods ]] || { log "no $mods in $pkg"; exit 1; }

# Modules in load order: dependencies first (depth-first over `depends`).
declare -A path seen
while IFS= read -r f; do
    n=$(basename "$f"); n=${n%%.ko*}; path[${n//-/_}]=$f
done < <(find "$mods/kernel" -name '*.ko*')
order=()
visit() {
    local m=${1//-/_} d
    [[ -n ${seen[$m]:-} ]] && return
    seen[$m]=1
    [[ -n ${path[$m]:-} ]] || { log "module $m not in $pkg (built in?)"; exit 1; }
    for d in $(modinfo -F depends "${path[$m]}" | tr ',' ' '); do visit "$d"; done
    order+=("$m")
}
visit virtio_pci
visit virtio_net

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for m in "${order[@]}"; do
    f=${path[$m]}
    case $f in
        *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
        *) log "unsupported module file $f"; exit 1 ;;
    esac
    echo "$m" >>"$root/modules"
done

# The guest's side of the test. The host (dataplane/tests/vm.rs) waits for
# each PETREL line and answers. Kernel command line: petrel.ip=ADDR/PREFIX,
# petrel.peer=ADDR (the host's end), petrel.burst=N (UDP datagrams the host
# will send in its burst). Every step has a timeout so a broken network ends
# the run with a FAIL line, never a hang.
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
say() { echo "PETREL $*"; }
fail() { say "FAIL $*"; poweroff -f; }
for m in $(cat /modules); do insmod /lib/modules/$m.ko || fail "insmod $m"; done
for w in $(cat /proc/cmdline); do
    case $w in
        petrel.ip=*) IP=${w#*=} ;;
        petrel.peer=*) PEER=${w#*=} ;;
    esac
done
[ -n "$IP" ] && [ -n "$PEER" ] || fail "petrel.ip= and petrel.peer= are needed"
# No IPv6: the host counts every frame the guest gets, so the wire stays quiet.
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "no eth0"; sleep 0.1
done
ip link set lo up
ip addr add "$IP" dev eth0
ip link set eth0 up
dev=$(basename "$(readlink /sys/class/net/eth0/device)")
say "UP mac=$(cat /sys/class/net/eth0/address) driver=$(basename "$(readlink /sys/class/net/eth0/device/driver)") features=$(cat /sys/bus/virtio/devices/$dev/features)"

# 1. guest -> host ping
out=$(ping -c 5 -i 0.1 -W 5 "$PEER" 2>&1)
say "PING_OUT $(echo "$out" | grep 'packets transmitted')"

# 2. guest -> host TCP: the host listens on 5002, reads to EOF, closes.
dd if=/dev/urandom of=/tmp/tx bs=64k count=32 2>/dev/null
say "TX_SHA $(sha256sum /tmp/tx | cut -d' ' -f1) $(wc -c </tmp/tx)"
timeout 30 nc "$PEER" 5002 </tmp/tx
say "TX_DONE rc=$?"

# 3. host -> guest TCP: we listen on 5001 until the host closes.
timeout 30 nc -l -p 5001 </dev/null >/tmp/rx &
nc_pid=$!
say "LISTEN 5001"
wait $nc_pid
rc=$?
say "RX_SHA $(sha256sum /tmp/rx | cut -d' ' -f1) $(wc -c </tmp/rx) rc=$rc"

# 4. The host pings us, bursts, pings again, then connects to 5003 to end.
say "LISTEN 5003"
timeout 60 nc -l -p 5003 </dev/null >/tmp/end
# Let the connection's last segments land before counting.
sleep 0.5
s=/sys/class/net/eth0/statistics
say "STATS rx_packets=$(cat $s/rx_packets) rx_dropped=$(cat $s/rx_dropped) tx_packets=$(cat $s/tx_packets) tx_dropped=$(cat $s/tx_dropped) irqs=$(awk '/virtio/ { n += $2 } END { print n + 0 }' /proc/interrupts)"
say "DONE"
poweroff -f
EOF
chmod 755 "$root/init"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible) >"$work/initrd"
cp "$work/k/boot/vmlinuz-$kver" "$OUT/vmlinuz.new"
mv "$work/initrd" "$OUT/initrd.new"
mv "$OUT/vmlinuz.new" "$OUT/vmlinuz"
mv "$OUT/initrd.new" "$OUT/initrd"
echo "$stamp" >"$OUT/stamp"
log "modules: ${order[*]}"
echo "$OUT"
