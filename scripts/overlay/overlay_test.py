#!/usr/bin/python3
"""overlay-test: Petrel chassis talking Geneve to each other under one real
OVN Southbound.  Started by scripts/overlay-test.sh inside a private network
namespace; see that script for what is checked.

Topology (all in the namespace):

    ul (Linux bridge, 192.168.50.254/24: the "underlay router" we ping from)
     |-- ulA ~ upA : petreld A uplink, --uplink up=192.168.50.1/24
     |-- ulB ~ upB : petreld B uplink, --uplink up=192.168.50.2/24
    hA1 ~ pA1 : pod port of node A (logical port a1)
    hB1 ~ pB1 : pod port of node B (logical port b1)
    hB2 ~ pB2 : pod port of node B (logical port b2, addresses "unknown")

The test injects on hXN and captures there (AF_PACKET); tshark captures
the underlay on the bridge.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import ARP, IP, UDP, Ether, Raw, raw  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("PETREL_BIN", os.path.join(ROOT, "target", "debug"))
# Both PMDs share CPU 1 (time-sliced): CPU 0 stays free for OVN, the agents
# and this script. Functional test, not a benchmark.
EAL = "--in-memory --no-pci --no-telemetry -m 256 -l 0 --log-level=*:warning"

NODES = {
    "A": {"ip": "192.168.50.1", "ports": {"a1": "pA1", "a2": "pA2"}},
    "B": {"ip": "192.168.50.2", "ports": {"b1": "pB1", "b2": "pB2"}},
}
# Node C: Open vSwitch (userspace datapath) + ovn-controller.
OVS = {"C": {"ip": "192.168.50.3", "ports": {"c1": "pC1", "c2": "pC2"}}}
MACS = {"a1": "00:00:00:00:0a:01", "b1": "00:00:00:00:0b:01", "b2": "00:00:00:00:0b:02",
        "c1": "00:00:00:00:0c:01", "a2": "00:00:00:00:0a:02", "c2": "00:00:00:00:0c:02"}
IPS = {"a1": "10.0.0.1", "b1": "10.0.0.2", "b2": "10.0.0.3", "c1": "10.0.0.4",
       "a2": "10.1.0.1", "c2": "10.1.0.2"}
SW0 = ["a1", "b1", "b2", "c1"]
# A VLAN localnet switch spanning A and C: physnet, tag 100, on the uplinks.
PHYS = ["a2", "c2"]
VLAN = 100
# --ipv6: the same Petrel nodes with IPv6 tunnel endpoints (no OVS node).
V6 = {"A": "fd00:50::1", "B": "fd00:50::2", "bridge": "fd00:50::fe"}
IPV6 = "--ipv6" in sys.argv
if IPV6:
    NODES["A"]["ip"], NODES["B"]["ip"] = V6["A"], V6["B"]
    OVS.clear()
PREFIX = 64 if IPV6 else 24
BRIDGE_IP = V6["bridge"] if IPV6 else "192.168.50.254"
FAILED = []


def log(msg):
    print(msg, flush=True)


def run(cmd, check=True, env=None, timeout=60):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (rc %d): %s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def check(ok, what, detail=""):
    log("%s %s%s" % ("PASS" if ok else "FAIL", what, "" if ok or not detail else "\n    " + str(detail)))
    if not ok:
        FAILED.append(what)
    return ok


def gratuitous_arp(frame):
    """ovn-controller announces the addresses of VIFs on switches with a
    localnet port (gratuitous ARP, sender IP = target IP): not test traffic."""
    return len(frame) >= 42 and frame[12:14] == b"\x08\x06" and frame[28:32] == frame[38:42]


class Wire:
    """One end of a veth: inject and capture raw frames."""

    def __init__(self, ifname):
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        self.s.bind((ifname, 0))
        self.s.setblocking(False)

    def send(self, frame):
        self.s.send(frame)

    def drain(self):
        out = []
        while True:
            try:
                data, addr = self.s.recvfrom(65535)
            except BlockingIOError:
                return out
            if addr[2] != socket.PACKET_OUTGOING and not gratuitous_arp(data):
                out.append(data)


class Overlay:
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="overlay-test.")
        self.env = dict(os.environ)
        for k in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVN_RUNDIR", "OVN_LOGDIR", "OVN_DBDIR"):
            self.env[k] = self.work
        self.nb = "unix:%s/nb.sock" % self.work
        self.sb = "unix:%s/sb.sock" % self.work
        self.pids = []
        self.procs = {}
        self.wires = {}
        self.netns = []
        self.ovs_dirs = {}

    def ns(self, n):
        return "petrel-ovl-%d-%s" % (os.getpid(), n)

    # ---- processes
    def daemon(self, name, cmd):
        run(cmd + ["--detach", "--no-chdir", "--pidfile=%s/%s.pid" % (self.work, name),
                   "--unixctl=%s/%s.ctl" % (self.work, name), "--log-file=%s/%s.log" % (self.work, name)],
            env=self.env)
        with open("%s/%s.pid" % (self.work, name)) as f:
            self.pids.append(int(f.read().strip()))

    def spawn(self, name, cmd):
        logf = open(os.path.join(self.work, name + ".log"), "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        return self.procs[name]

    def stop(self, name):
        p = self.procs.pop(name)
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def tail(self, name, n=20):
        try:
            with open(os.path.join(self.work, name + ".log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def cleanup(self):
        for name in list(self.procs):
            self.stop(name)
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for ns in self.netns:
            run(["ip", "netns", "del", ns], check=False)
        run(["ip", "link", "del", "ul"], check=False)
        if os.environ.get("OVERLAY_KEEP"):
            log("(kept %s)" % self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def nbctl(self, *a):
        return run(["ovn-nbctl", "--db=" + self.nb] + list(a), env=self.env).stdout

    def sbctl(self, *a):
        return run(["ovn-sbctl", "--db=" + self.sb] + list(a), env=self.env).stdout

    def petrelctl(self, node, *a):
        p = run([os.path.join(BIN, "petrelctl"), "--socket", self.sock(node), "--json"] + list(a), timeout=20)
        return json.loads(p.stdout)

    def sock(self, node):
        return os.path.join(self.work, "petreld-%s.sock" % node)

    def drops(self, node):
        return {r["reason"]: r["count"] for r in self.petrelctl(node, "drops")["reasons"]}

    # ---- setup
    def veth(self, a, b, ns):
        """A veth pair: `a` in node namespace `ns` (petreld's side), `b` here."""
        run(["ip", "link", "add", a, "netns", ns, "type", "veth", "peer", "name", b])
        run(["sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % b])
        run(["ip", "link", "set", b, "up"])
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % a])
        run(["ip", "-n", ns, "link", "set", a, "up"])

    def setup_net(self):
        run(["ip", "link", "set", "lo", "up"])
        run(["ip", "link", "add", "ul", "type", "bridge"])
        run(["sysctl", "-qw", "net.ipv6.conf.ul.disable_ipv6=%d" % (0 if IPV6 else 1)])
        run(["ip", "addr", "add", "%s/%d" % (BRIDGE_IP, PREFIX), "dev", "ul"] + (["nodad"] if IPV6 else []))
        run(["ip", "link", "set", "ul", "up"])
        for n in list(NODES) + list(OVS):
            # Each node is a network namespace (DPDK's af_packet fanout
            # groups are per namespace, and so is a node's view).
            ns = self.ns(n)
            run(["ip", "netns", "add", ns])
            self.netns.append(ns)
            self.veth("up" + n, "ul" + n, ns)
            run(["ip", "link", "set", "ul" + n, "master", "ul"])
            for lp, dev in {**NODES, **OVS}[n]["ports"].items():
                self.veth(dev, "h" + dev[1:], ns)
                self.wires[lp] = Wire("h" + dev[1:])

    def start_ovn(self):
        for db in ("nb", "sb"):
            run(["ovsdb-tool", "create", "%s/%s.db" % (self.work, db), "/usr/share/ovn/ovn-%s.ovsschema" % db])
            self.daemon(db, ["ovsdb-server", "--remote=punix:%s/%s.sock" % (self.work, db),
                             "%s/%s.db" % (self.work, db)])
        self.daemon("northd", ["ovn-northd", "--ovnnb-db=" + self.nb, "--ovnsb-db=" + self.sb])
        self.nbctl("init")
        cmd = ["ls-add", "sw0", "--", "ls-add", "phys"]
        for lp in SW0 + PHYS:
            addr = "unknown" if lp == "b2" else "%s %s" % (MACS[lp], IPS[lp])
            cmd += ["--", "lsp-add", "sw0" if lp in SW0 else "phys", lp, "--", "lsp-set-addresses", lp, addr]
        cmd += ["--", "lsp-add", "phys", "ln-phys", "", str(VLAN), "--", "lsp-set-type", "ln-phys", "localnet",
                "--", "lsp-set-addresses", "ln-phys", "unknown",
                "--", "lsp-set-options", "ln-phys", "network_name=physnet"]
        self.nbctl(*cmd)

    def start_node(self, n):
        cfg = NODES[n]
        cmd = ["ip", "netns", "exec", self.ns(n), os.path.join(BIN, "petreld"), "--eal-args", EAL.replace("-l 0", "-l 0 --file-prefix=" + n),
               "--pmd-cores", "1", "--control-socket", self.sock(n),
               "--port", "up=dpdk,devargs=net_af_packet%s0,iface=up%s" % (n, n),
               "--uplink", "up=%s/%d" % (cfg["ip"], PREFIX)]
        for i, (lp, dev) in enumerate(cfg["ports"].items()):
            cmd += ["--port", "%s=dpdk,iface-id=%s,devargs=net_af_packet%s%d,iface=%s" % (lp, lp, n, i + 1, dev)]
        self.spawn("petreld-" + n, cmd)
        deadline = time.time() + 30
        while not os.path.exists(self.sock(n)):
            if self.procs["petreld-" + n].poll() is not None or time.time() > deadline:
                raise RuntimeError("petreld %s did not start: %s" % (n, self.tail("petreld-" + n)))
            time.sleep(0.1)
        self.spawn("petrel-ovn-" + n, [os.path.join(BIN, "petrel-ovn"), "--remote", self.sb, "--system-id",
                                       "hv" + n, "--encap-ip", cfg["ip"], "--dataplane", self.sock(n),
                                       "--dataplane-poll-ms", "100", "--bridge-mappings", "physnet:up"])

    def start_ovs(self, n):
        """An OVS + ovn-controller chassis as OVS's userspace tunnelling
        documents it: br-phy (netdev) holds the uplink and the tunnel IP on
        its internal port, br-int is ovn-controller's; pods are veths on
        br-int; the localnet network maps to br-phy."""
        cfg, ns = OVS[n], self.ns(n)
        d = os.path.join(self.work, "ovs-" + n)
        os.makedirs(d)
        env = dict(self.env, OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d, OVN_RUNDIR=d, OVN_LOGDIR=d)
        db = "unix:%s/db.sock" % d
        run(["ovsdb-tool", "create", "%s/conf.db" % d, "/usr/share/openvswitch/vswitch.ovsschema"])

        def daemon(name, cmd, netns=False, unixctl=True):
            pre = ["ip", "netns", "exec", ns] if netns else []
            ctl = ["--unixctl=%s/%s.ctl" % (d, name)] if unixctl else []
            run(pre + cmd + ["--detach", "--no-chdir", "--pidfile=%s/%s.pid" % (d, name),
                             "--log-file=%s/%s.log" % (d, name)] + ctl, env=env)
            with open("%s/%s.pid" % (d, name)) as f:
                self.pids.append(int(f.read().strip()))

        daemon("ovsdb-server", ["ovsdb-server", "--remote=punix:%s/db.sock" % d, "%s/conf.db" % d])
        vsctl = ["ovs-vsctl", "--db=" + db, "--timeout=30"]
        run(vsctl + ["--no-wait", "init"], env=env)
        daemon("ovs-vswitchd", ["ovs-vswitchd", db], netns=True)
        run(vsctl + ["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
                     "--", "add-port", "br-phy", "up" + n], env=env)
        run(["ip", "-n", ns, "addr", "add", cfg["ip"] + "/24", "dev", "br-phy"])
        run(["ip", "-n", ns, "link", "set", "br-phy", "up"])
        run(vsctl + ["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev", "fail-mode=secure",
                     "other-config:disable-in-band=true"], env=env)
        for lp, dev in cfg["ports"].items():
            run(vsctl + ["add-port", "br-int", dev, "--", "set", "interface", dev, "external_ids:iface-id=" + lp],
                env=env)
        run(vsctl + ["set", "open", ".", "external_ids:system-id=hv" + n, "external_ids:ovn-remote=" + self.sb,
                     "external_ids:ovn-encap-type=geneve", "external_ids:ovn-encap-ip=" + cfg["ip"],
                     "external_ids:ovn-bridge-datapath-type=netdev",
                     "external_ids:ovn-bridge-mappings=physnet:br-phy"], env=env)
        # (ovn-controller takes no --unixctl: its socket goes to OVN_RUNDIR.)
        daemon("ovn-controller", ["ovn-controller", db], unixctl=False)
        self.ovs_dirs[n] = d

    def wait_bound(self, ports, timeout=60):
        deadline = time.time() + timeout
        while True:
            t = json.loads(self.sbctl("--format=json", "--columns=logical_port,chassis", "list", "Port_Binding"))
            claimed = {r[0] for r in t["data"] if r[1] != ["set", []]}
            if set(ports) <= claimed:
                break
            if time.time() > deadline:
                raise RuntimeError("not claimed: %s" % (set(ports) - claimed))
            time.sleep(0.2)
        run(["ovn-nbctl", "--db=" + self.nb, "--timeout=60", "--wait=hv", "sync"], env=self.env, timeout=70)

    def keys(self):
        dp = json.loads(self.sbctl("--format=json", "--columns=tunnel_key", "find", "Datapath_Binding",
                                   "external_ids:name=sw0"))["data"][0][0]
        t = json.loads(self.sbctl("--format=json", "--columns=logical_port,tunnel_key", "list", "Port_Binding"))
        return dp, {r[0]: r[1] for r in t["data"]}

    def testpmd_pods(self):
        pods = {"A": ("ta", "00:00:00:00:0a:0a", "10.0.0.10"), "B": ("tb", "00:00:00:00:0b:0b", "10.0.0.11")}
        cmd = []
        for _n, (lp, mac, ip) in pods.items():
            cmd += ["--", "lsp-add", "sw0", lp, "--", "lsp-set-addresses", lp, "%s %s" % (mac, ip)]
        self.nbctl(*cmd[1:])
        for n, (lp, _mac, _ip) in pods.items():
            sock = os.path.join(self.work, "%s.sock" % lp)
            run([os.path.join(BIN, "petrelctl"), "--socket", self.sock(n), "add-port",
                 "%s=vhost-user,path=%s,mode=server,iface-id=%s" % (lp, sock, lp)])
        self.wait_bound([p[0] for p in pods.values()])
        (la, ma, ia), (lb, mb, ib) = pods["A"], pods["B"]
        # Forwarding lcore 0 for both pods (petreld's PMDs are on 1).
        for lp, mac, peer, ips, first in ((lb, mb, ma, "%s,%s" % (ib, ia), False),
                                          (la, ma, mb, "%s,%s" % (ia, ib), True)):
            sock = os.path.join(self.work, "%s.sock" % lp)
            args = ["dpdk-testpmd", "-l", "0,1", "--main-lcore", "1", "--no-pci", "--in-memory", "--no-telemetry",
                    "-m", "128", "--single-file-segments", "--log-level=*:warning", "--file-prefix=" + lp,
                    "--vdev=net_virtio_user0,path=%s,mac=%s" % (sock, mac), "--", "--forward-mode=5tswap",
                    "--port-topology=loop", "--total-num-mbufs=4096", "--nb-cores=1", "--stats-period=1",
                    "--eth-peer=0," + peer, "--tx-ip=" + ips] + (["--tx-first"] if first else [])
            self.spawn("testpmd-" + lp, args)
            time.sleep(1.5)

        def tx(n, lp):
            return next((p["stats"]["tx_packets"] for p in self.petrelctl(n, "show")["ports"] if p["name"] == lp), 0)
        deadline = time.time() + 40
        while time.time() < deadline and not (tx("A", la) > 5000 and tx("B", lb) > 5000):
            time.sleep(0.5)
        a, b = tx("A", la), tx("B", lb)
        check(a > 5000 and b > 5000, "testpmd pods on A and B bounce traffic through Geneve (petreld delivered %d to "
              "ta, %d to tb)" % (a, b), "%s\n%s" % (self.drops("A"), self.drops("B")))
        for lp in (la, lb):
            self.stop("testpmd-" + lp)

    # ---- traffic
    def deliver(self, src, frame, tries=30, until=None):
        """Sends `frame` from `src` until it comes out somewhere (or on every
        port of `until`): the first ones may be dropped while a tunnel next
        hop is being resolved. Returns {logical port: [frames]} of the last
        try."""
        got = {}
        for _ in range(tries):
            for w in self.wires.values():
                w.drain()
            self.wires[src].send(frame)
            time.sleep(0.3)
            got = {lp: w.drain() for lp, w in self.wires.items() if lp != src}
            if (until is None and any(got.values())) or (until and all(got.get(p) for p in until)):
                return got
        return got

    def once(self, src, frame, wait=0.5):
        for w in self.wires.values():
            w.drain()
        self.wires[src].send(frame)
        time.sleep(wait)
        return {lp: w.drain() for lp, w in self.wires.items() if lp != src}


def geneve_capture(iface, duration, count=50):
    """Starts tshark on `iface`; returns a function that stops it and returns
    [(vni, src, dst, option data hex)] of the Geneve packets seen."""
    path = tempfile.mktemp(suffix=".pcap")
    p = subprocess.Popen(["tshark", "-q", "-i", iface, "-a", "duration:%d" % duration, "-c", str(count), "-w", path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)

    def done():
        p.wait(timeout=duration + 10)
        ip = "ipv6" if IPV6 else "ip"
        out = run(["tshark", "-r", path, "-Y", "geneve", "-T", "fields", "-e", "geneve.vni", "-e", ip + ".src",
                   "-e", ip + ".dst", "-e", "geneve.option.class", "-e", "geneve.option.type",
                   "-e", "geneve.option.unknown.data", "-e", "geneve.flags.critical"]).stdout
        os.unlink(path)
        rows = []
        for line in out.splitlines():
            f = line.split("\t")
            rows.append({"vni": int(f[0], 0), "src": f[1].split(",")[0], "dst": f[2].split(",")[0], "class": int(f[3], 0), "type": int(f[4], 0),
                         "data": f[5].replace(":", "")})
        return rows
    return done


def vlan_capture(iface, duration):
    """Like geneve_capture, for VLAN-tagged frames: [(vid, src, dst)]."""
    path = tempfile.mktemp(suffix=".pcap")
    p = subprocess.Popen(["tshark", "-q", "-i", iface, "-a", "duration:%d" % duration, "-w", path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)

    def done():
        p.wait(timeout=duration + 10)
        out = run(["tshark", "-r", path, "-Y", "vlan", "-T", "fields", "-e", "vlan.id", "-e", "eth.src",
                   "-e", "eth.dst"]).stdout
        os.unlink(path)
        return [(int(f[0]), f[1], f[2]) for f in (ln.split("\t") for ln in out.splitlines())]
    return done


def ovn_keys(data):
    v = int(data, 16)
    return (v >> 16) & 0x7fff, v & 0xffff


def v6_rest(o, dp, pk, a2b):
    """The IPv6 run after the unicast checks: broadcast once per chassis."""
    arp = raw(Ether(src=MACS["a1"], dst="ff:ff:ff:ff:ff:ff")
              / ARP(op=1, hwsrc=MACS["a1"], psrc=IPS["a1"], pdst="10.0.0.99"))
    cap = geneve_capture("ul", 3)
    got = o.once("a1", arp, wait=1.0)
    rows = cap()
    check(got.get("b1") == [arp] and got.get("b2") == [arp], "ARP broadcast from a1 reaches b1 and b2 once each",
          {k: len(v) for k, v in got.items()})
    flood = [r for r in rows if r["src"] == NODES["A"]["ip"]]
    check(len(flood) == 1 and ovn_keys(flood[0]["data"])[1] >= 32768,
          "one Geneve copy over IPv6 to chassis B, to a multicast group key", rows)


def checks(o):
    o.setup_net()
    o.start_ovn()
    for n in NODES:
        o.start_node(n)
    for n in OVS:
        o.start_ovs(n)
    o.wait_bound([lp for n in {**NODES, **OVS}.values() for lp in n["ports"]])
    dp, pk = o.keys()
    log("sw0 tunnel key %d, port keys %s" % (dp, pk))

    # The underlay sees the nodes: ARP and ping answered by petreld.
    for n in NODES:
        p = run(["ping"] + (["-6"] if IPV6 else []) + ["-c", "3", "-i", "0.3", "-W", "2", NODES[n]["ip"]],
                check=False)
        check(p.returncode == 0, "node %s answers %s and ping on its tunnel IP" % (n, "ND" if IPV6 else "ARP"), p.stdout + p.stderr)

    # Unicast both ways, byte for byte, and what the wire carries.
    a2b = raw(Ether(src=MACS["a1"], dst=MACS["b1"]) / IP(src=IPS["a1"], dst=IPS["b1"], ttl=64)
              / UDP(sport=1234, dport=5678) / Raw(b"petrel overlay a->b"))
    got = o.deliver("a1", a2b)
    check(got.get("b1") == [a2b] and not got.get("b2"), "a1 -> b1 unicast arrives once, unchanged",
          {k: len(v) for k, v in got.items()})
    cap = geneve_capture("ul", 4)
    arrived = [o.once("a1", a2b, wait=0.2) for _ in range(3)]
    rows = cap()
    check(all(g.get("b1") == [a2b] and not g.get("b2") for g in arrived), "a1 -> b1 three more times",
          [{k: len(v) for k, v in g.items()} for g in arrived])
    want = [r for r in rows if r["src"] == NODES["A"]["ip"] and r["dst"] == NODES["B"]["ip"]]
    check(len(want) == 3, "the wire carries one Geneve packet per a1 -> b1 packet", rows)
    ok = all(r["vni"] == dp and r["class"] == 0x0102 and r["type"] == 0x80
             and ovn_keys(r["data"]) == (pk["a1"], pk["b1"]) for r in want)
    check(ok and want != [], "Geneve: VNI = datapath key, OVN option (0x0102, 0x80) = (a1, b1) keys", want)

    tun = {t["chassis"]: t for t in o.petrelctl("A", "show").get("tunnels", [])}
    check(tun.get("hvB", {}).get("nexthop") == NODES["B"]["ip"] and tun["hvB"].get("mac")
          and tun["hvB"].get("uplink") == "up", "petrelctl show lists the tunnel to hvB, next hop resolved", tun)
    b2a = raw(Ether(src=MACS["b1"], dst=MACS["a1"]) / IP(src=IPS["b1"], dst=IPS["a1"], ttl=64)
              / UDP(sport=5678, dport=1234) / Raw(b"petrel overlay b->a"))
    got = o.deliver("b1", b2a)
    check(got.get("a1") == [b2a], "b1 -> a1 unicast arrives once, unchanged", {k: len(v) for k, v in got.items()})

    if IPV6:
        return v6_rest(o, dp, pk, a2b)

    # Interop with the OVS chassis, both ways.
    a2c = raw(Ether(src=MACS["a1"], dst=MACS["c1"]) / IP(src=IPS["a1"], dst=IPS["c1"], ttl=64)
              / UDP(sport=1111, dport=2222) / Raw(b"petrel -> ovs"))
    got = o.deliver("a1", a2c)
    check(got.get("c1") == [a2c] and sum(len(v) for v in got.values()) == 1,
          "a1 (Petrel) -> c1 (OVS) unicast arrives once, unchanged", {k: len(v) for k, v in got.items()})
    c2a = raw(Ether(src=MACS["c1"], dst=MACS["a1"]) / IP(src=IPS["c1"], dst=IPS["a1"], ttl=64)
              / UDP(sport=2222, dport=1111) / Raw(b"ovs -> petrel"))
    cap = geneve_capture("ul", 8)
    got = o.deliver("c1", c2a)
    rows = cap()
    check(got.get("a1") == [c2a] and sum(len(v) for v in got.values()) == 1,
          "c1 (OVS) -> a1 (Petrel) unicast arrives once, unchanged", {k: len(v) for k, v in got.items()})
    fromc = [r for r in rows if r["src"] == OVS["C"]["ip"] and r["dst"] == NODES["A"]["ip"]]
    check(fromc != [] and all(r["vni"] == dp and ovn_keys(r["data"]) == (pk["c1"], pk["a1"]) for r in fromc),
          "OVS's Geneve to A carries the keys Petrel expects (c1, a1)", rows)

    # Broadcast (ARP for an address nobody has, so no ARP responder
    # answers): every other port once, one tunnel copy per chassis.
    arp = raw(Ether(src=MACS["a1"], dst="ff:ff:ff:ff:ff:ff")
              / ARP(op=1, hwsrc=MACS["a1"], psrc=IPS["a1"], pdst="10.0.0.99"))
    cap = geneve_capture("ul", 3)
    got = o.once("a1", arp, wait=1.0)
    rows = cap()
    check(all(got.get(p) == [arp] for p in ("b1", "b2", "c1")) and not got.get("a2") and not got.get("c2"),
          "ARP broadcast from a1 reaches b1, b2 (Petrel) and c1 (OVS) once each",
          {k: len(v) for k, v in got.items()})
    flood = [r for r in rows if r["src"] == NODES["A"]["ip"]]
    check(sorted(r["dst"] for r in flood) == [NODES["B"]["ip"], OVS["C"]["ip"]]
          and all(ovn_keys(r["data"])[1] >= 32768 for r in flood),
          "one Geneve copy per remote chassis (B, C), to a multicast group key", rows)
    arpc = raw(Ether(src=MACS["c1"], dst="ff:ff:ff:ff:ff:ff")
               / ARP(op=1, hwsrc=MACS["c1"], psrc=IPS["c1"], pdst="10.0.0.98"))
    # (OVS drops what it sends before its own ARP for B resolved: retry.)
    got = o.deliver("c1", arpc, until=("a1", "b1", "b2"))
    check(all(got.get(p) == [arpc] for p in ("a1", "b1", "b2")), "ARP broadcast from c1 (OVS) reaches a1, b1, b2 once each",
          {k: len(v) for k, v in got.items()})

    unkc = raw(Ether(src=MACS["c1"], dst="00:00:00:00:0f:0e") / IP(src=IPS["c1"], dst="10.0.0.78", ttl=64)
               / UDP(sport=1, dport=2) / Raw(b"who is this, from OVS"))
    got = o.deliver("c1", unkc, until=("b2",))
    check(got.get("b2") == [unkc] and sum(len(v) for v in got.values()) == 1,
          "unknown unicast from c1 (OVS) reaches b2 (Petrel, unknown) only, once", {k: len(v) for k, v in got.items()})

    # The VLAN localnet switch spanning A (Petrel) and C (OVS): tagged
    # on the underlay, no tunnel.
    l2c = raw(Ether(src=MACS["a2"], dst=MACS["c2"]) / IP(src=IPS["a2"], dst=IPS["c2"], ttl=64)
              / UDP(sport=3333, dport=4444) / Raw(b"localnet a2 -> c2"))
    cap = vlan_capture("ul", 4)
    got = o.deliver("a2", l2c)
    tagged = cap()
    check(got.get("c2") == [l2c] and sum(len(v) for v in got.values()) == 1,
          "a2 -> c2 over the localnet switch arrives once, unchanged",
          "%s\n    sent %s\n    got  %s" % ({k: len(v) for k, v in got.items()}, l2c.hex(),
                                           [f.hex() for f in got.get("c2", [])]))
    check(any(t == (VLAN, MACS["a2"], MACS["c2"]) for t in tagged),
          "the underlay carries it with VLAN tag %d" % VLAN, tagged)
    c2l = raw(Ether(src=MACS["c2"], dst=MACS["a2"]) / IP(src=IPS["c2"], dst=IPS["a2"], ttl=64)
              / UDP(sport=4444, dport=3333) / Raw(b"localnet c2 -> a2"))
    got = o.deliver("c2", c2l)
    check(got.get("a2") == [c2l] and sum(len(v) for v in got.values()) == 1,
          "c2 -> a2 over the localnet switch arrives once, unchanged", {k: len(v) for k, v in got.items()})

    # Unknown unicast: to the ports with "unknown" addresses (b2) only.
    unk = raw(Ether(src=MACS["a1"], dst="00:00:00:00:0f:0f") / IP(src=IPS["a1"], dst="10.0.0.77", ttl=64)
              / UDP(sport=1, dport=2) / Raw(b"who is this"))
    got = o.once("a1", unk, wait=0.8)
    check(got.get("b2") == [unk] and not got.get("b1"), "unknown unicast from a1 reaches b2 (unknown) only, once",
          {k: len(v) for k, v in got.items()})

    # A Geneve packet from an address that is no chassis is dropped and counted.
    before = o.drops("B").get("geneve_unknown_tunnel", 0)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: UDP checksum 0 (veths leave it partial)
    s.bind(("192.168.50.254", 0))
    opt = bytes.fromhex("01028001") + (pk["a1"] << 16 | pk["b1"]).to_bytes(4, "big")
    s.sendto(bytes([0x02, 0x40, 0x65, 0x58]) + dp.to_bytes(3, "big") + b"\0" + opt + a2b, (NODES["B"]["ip"], 6081))
    time.sleep(1)
    check(o.drops("B").get("geneve_unknown_tunnel", 0) == before + 1 and not o.wires["b1"].drain(),
          "Geneve from a non-chassis address is dropped (geneve_unknown_tunnel)")

    # DPDK pods: testpmd on vhost-user ports added at runtime on A and
    # B (as petrel-cni does), bouncing packets through Geneve.
    o.testpmd_pods()

    # Chassis B leaves the Southbound: A stops sending to it.
    o.stop("petrel-ovn-B")
    # petrel-ovn, like ovn-controller, removes its chassis when it
    # exits; make sure it is gone either way.
    o.sbctl("--if-exists", "chassis-del", "hvB")
    run(["ovn-nbctl", "--db=" + o.nb, "--timeout=60", "--wait=hv", "sync"], env=o.env, timeout=70)
    time.sleep(1)
    cap = geneve_capture("ul", 3)
    got = o.once("a1", a2b, wait=0.5)
    got2 = o.once("a1", arp, wait=0.5)
    rows = cap()
    check(not got.get("b1") and not got2.get("b1") and not got2.get("b2")
          and not [r for r in rows if r["src"] == NODES["A"]["ip"] and r["dst"] == NODES["B"]["ip"]],
          "after chassis-del hvB nothing is tunnelled to B", rows)


def main():
    o = Overlay()
    try:
        checks(o)
    finally:
        for n in NODES:
            if o.procs.get("petreld-" + n) and o.procs["petreld-" + n].poll() is not None:
                log("petreld %s exited: %s" % (n, o.tail("petreld-" + n)))
        if FAILED:
            for n in NODES:
                log("--- petreld %s drops: %s" % (n, o.drops(n) if os.path.exists(o.sock(n)) else "?"))
                log("--- petrel-ovn %s:\n%s" % (n, o.tail("petrel-ovn-" + n, 8)))
        if FAILED and os.environ.get("OVERLAY_PAUSE"):
            log("paused for inspection (pid %d): nsenter -t %d -n" % (os.getpid(), os.getpid()))
            time.sleep(int(os.environ["OVERLAY_PAUSE"]))
        o.cleanup()
    log("%d failed" % len(FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
