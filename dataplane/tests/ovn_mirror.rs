//! OVN's port mirrors (Southbound `Mirror`, linked from
//! `Port_Binding.mirror_rules`) end to end: real ovsdb-server + ovn-northd,
//! petrel-ovn, petreld with two vhost-user pods (one `dpdk-testpmd`
//! replaying pcaps through `net_virtio_user`) and an uplink on a pcap port,
//! the NB configured with `ovn-nbctl mirror-add` / `lsp-attach-mirror`.
//!
//! What is checked on the uplink's capture, with tshark as the dissector:
//! the GRE copies (`from-lport`, key = index) are exactly the frames pod1
//! sent, the ERSPAN type II copies (`to-lport`, session id = index,
//! sequence numbers from 0) exactly the frames pod1 was given, nothing of
//! the other direction; a sink whose next hop is unknown gets ARP requests
//! and no copy (counted); an IPv6 sink without an IPv6 uplink counts
//! `no_route`; an ERSPAN index over 10 bits is refused and listed; a copy too big for the uplink's MTU is counted and
//! not sent (the original is delivered); after `lsp-detach-mirror` no more copies; after a
//! petreld restart petrel-ovn hands the sessions over again. A second test
//! puts the sink behind a veth (a Linux host answering ARP) and captures
//! there.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use common::pods::{nbctl, petrel_ovn, start_ovn, testpmd, wait_for, workspace_bin, Proc, EAL};
use common::{empty_pcap, read_pcap, tshark_fields, tshark_num, write_pcap};
use petrel_dataplane::action::gre::{gre_encap, GreSink, GreSinkConfig, MirrorKind};
use petrel_dataplane::buf::{PacketBuf, VecBuf};
use petrel_dataplane::ctl::features::{MirrorRequest, RemoteMirrorInfo};
use petrel_dataplane::ctl::Client;
use petrel_dataplane::wire::ChecksumCaps;

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");
const POD1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const POD2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
const SINK_MAC: &str = "02:00:00:00:99:01";

/// Distinct frames `src` → `dst` of growing length (a local experimental
/// EtherType: OVN switches it by MAC like any frame).
fn frames(count: usize, src: [u8; 6], dst: [u8; 6], seed: u8) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = 60 + 37 * i;
            let mut f: Vec<u8> = (0..len).map(|j| (j as u8).wrapping_mul(7) ^ (i as u8) ^ seed).collect();
            f[..6].copy_from_slice(&dst);
            f[6..12].copy_from_slice(&src);
            f[12..14].copy_from_slice(&[0x88, 0xb5]);
            f[14] = seed;
            f[15] = i as u8;
            f
        })
        .collect()
}

fn petreld(d: &Path, ctl: &Path, up_pcap: &Path, tag: &str) -> Proc {
    let up =
        format!("up=dpdk,devargs=net_pcap9,rx_pcap={},tx_pcap={}", d.join("empty.pcap").display(), up_pcap.display());
    let neighbor = format!("192.0.2.50={SINK_MAC}");
    petreld_with(d, ctl, &up, &["--neighbor", &neighbor], None, tag)
}

/// petreld with pod1, pod2 and uplink port spec `up` (192.0.2.1/24), in
/// network namespace `netns` if given.
fn petreld_with(d: &Path, ctl: &Path, up: &str, extra: &[&str], netns: Option<&str>, tag: &str) -> Proc {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, PETRELD]);
            c
        }
        None => Command::new(PETRELD),
    };
    cmd.args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "16383", "--ports-file", "none"])
        .arg("--control-socket")
        .arg(ctl)
        .arg("--port")
        .arg(format!("pod1=vhost-user,path={},mode=server,iface-id=pod1", d.join("pod1.sock").display()))
        .arg("--port")
        .arg(format!("pod2=vhost-user,path={},mode=server,iface-id=pod2", d.join("pod2.sock").display()))
        .arg("--port")
        .arg(up)
        .args(["--uplink", "up=192.0.2.1/24"])
        .args(extra);
    Proc::spawn("petreld", cmd, d.join(format!("{tag}.petreld.log")))
}

/// One replay: pod1 sends `a`, pod2 sends `b` (testpmd io forwarding
/// pcap ↔ virtio), until both arrived on the other side.
fn replay(d: &Path, tag: &str, a: &[Vec<u8>], b: &[Vec<u8>]) {
    let (in_a, in_b) = (d.join(format!("{tag}.inA.pcap")), d.join(format!("{tag}.inB.pcap")));
    let (out_a, out_b) = (d.join(format!("{tag}.outA.pcap")), d.join(format!("{tag}.outB.pcap")));
    write_pcap(&in_a, a);
    write_pcap(&in_b, b);
    let vdevs = [
        format!("net_pcap0,rx_pcap={},tx_pcap={}", in_a.display(), out_a.display()),
        format!("net_virtio_user0,path={}", d.join("pod1.sock").display()),
        format!("net_virtio_user1,path={}", d.join("pod2.sock").display()),
        format!("net_pcap1,rx_pcap={},tx_pcap={}", in_b.display(), out_b.display()),
    ];
    let mut pod =
        testpmd(d, tag, &vdevs, &["--forward-mode=io", "--port-topology=paired", "--no-flush-rx", "--nb-cores=1"]);
    // testpmd writes its pcaps when it stops: wait on its statistics.
    std::thread::sleep(Duration::from_secs(3));
    let (ok, log) = pod.stop();
    assert!(ok, "pod failed:\n{log}");
    assert!(read_pcap(&out_b) == a, "pod2 got what pod1 sent ({} frames)", read_pcap(&out_b).len());
    assert!(read_pcap(&out_a) == b, "pod1 got what pod2 sent ({} frames)", read_pcap(&out_a).len());
}

/// The switch of both tests: pod1 and pod2 with their MACs.
fn switch(nb: &str) {
    nbctl(nb, &["ls-add", "sw0", "--", "lsp-add", "sw0", "pod1", "--", "lsp-add", "sw0", "pod2"]);
    nbctl(nb, &["lsp-set-addresses", "pod1", "02:00:00:00:01:01"]);
    nbctl(nb, &["lsp-set-addresses", "pod2", "02:00:00:00:01:02"]);
}

fn remote(c: &mut Client) -> Vec<RemoteMirrorInfo> {
    c.mirror(MirrorRequest::List).unwrap().remote
}

fn session<'a>(r: &'a [RemoteMirrorInfo], name: &str) -> &'a RemoteMirrorInfo {
    r.iter().find(|i| i.mirror.as_ref().is_some_and(|m| m.name == name)).unwrap_or_else(|| panic!("{name}: {r:?}"))
}

#[test]
fn ovn_gre_and_erspan_mirrors_copy_exactly_what_the_port_carries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_procs, nb, sb) = start_ovn(d);
    let nbctl = |args: &[&str]| nbctl(&nb, args);
    switch(&nb);
    nbctl(&["mirror-add", "m-gre", "gre", "7", "from-lport", "192.0.2.50"]);
    nbctl(&["mirror-add", "m-ers", "erspan", "9", "to-lport", "192.0.2.50"]);
    nbctl(&["mirror-add", "m-far", "gre", "3", "from-lport", "192.0.2.77"]);
    nbctl(&["mirror-add", "m-v6", "gre", "5", "from-lport", "2001:db8::1"]);
    nbctl(&["mirror-add", "m-big", "erspan", "2000", "to-lport", "192.0.2.50"]);
    for m in ["m-gre", "m-ers", "m-far"] {
        nbctl(&["lsp-attach-mirror", "pod1", m]);
    }
    for m in ["m-v6", "m-big"] {
        nbctl(&["lsp-attach-mirror", "pod2", m]);
    }

    empty_pcap(&d.join("empty.pcap"));
    let ctl_sock = d.join("petreld.sock");
    let up_pcap = d.join("up.pcap");
    let mut p = petreld(d, &ctl_sock, &up_pcap, "first");
    wait_for("petreld's control socket", 20, || ctl_sock.exists());
    let _ovn = petrel_ovn(d, &sb, "192.0.2.1", &ctl_sock);
    nbctl(&["--timeout=30", "--wait=hv", "sync"]);

    let mut c = common::connect(&ctl_sock, "ovn mirror test");
    wait_for("OVN's mirrors in petreld", 20, || remote(&mut c).len() == 5);
    let r = remote(&mut c);
    let gre = session(&r, "m-gre").mirror.clone().unwrap();
    assert_eq!((gre.sink.as_str(), gre.index, gre.ports.as_slice()), ("192.0.2.50", 7, &["pod1".to_owned()][..]));
    assert!(session(&r, "m-v6").refused.is_none(), "IPv6 sinks run: {r:?}");
    assert!(session(&r, "m-big").refused.as_deref().unwrap().contains("out of range"), "{r:?}");
    assert!(session(&r, "m-gre").refused.is_none() && session(&r, "m-ers").refused.is_none());
    let listing =
        Command::new(workspace_bin("petrelctl")).arg("--socket").arg(&ctl_sock).args(["mirror", "list"]).output();
    let listing = String::from_utf8(listing.unwrap().stdout).unwrap();
    assert!(listing.contains("ovn m-gre: pod1 (from-lport) -> gre 192.0.2.50 key 7"), "{listing}");
    assert!(listing.contains("ovn m-ers: pod1 (to-lport) -> erspan 192.0.2.50 session 9"), "{listing}");
    assert!(listing.contains("ovn m-big: pod2 (to-lport) -> erspan 192.0.2.50 session 2000  REFUSED"), "{listing}");

    // Round 1: every mirror attached.
    let a1 = frames(20, POD1_MAC, POD2_MAC, 0xa1);
    let b1 = frames(15, POD2_MAC, POD1_MAC, 0xb1);
    replay(d, "r1", &a1, &b1);
    let r = remote(&mut c);
    assert_eq!(session(&r, "m-gre").copies, 20, "{r:?}");
    assert_eq!(session(&r, "m-ers").copies, 15, "{r:?}");
    let far = session(&r, "m-far");
    assert_eq!((far.copies, far.unresolved, far.no_mbuf, far.too_big), (0, 20, 0, 0), "{far:?}");

    // Round 2: m-gre detached; m-ers keeps counting its sequence.
    nbctl(&["lsp-detach-mirror", "pod1", "m-gre"]);
    nbctl(&["--timeout=30", "--wait=hv", "sync"]);
    wait_for("m-gre gone", 20, || remote(&mut c).iter().all(|i| i.mirror.as_ref().unwrap().name != "m-gre"));
    let a2 = frames(5, POD1_MAC, POD2_MAC, 0xa2);
    let mut b2 = frames(4, POD2_MAC, POD1_MAC, 0xb2);
    // 1470 bytes + 36 of GRE/ERSPAN + 20 of IPv4 > the uplink's MTU of
    // 1500: no copy (counted), the original is delivered all the same.
    let mut big = frames(1, POD2_MAC, POD1_MAC, 0xbb).remove(0);
    big.resize(1470, 0x5a);
    b2.insert(2, big);
    replay(d, "r2", &a2, &b2);
    let ers = session(&remote(&mut c), "m-ers").clone();
    assert_eq!((ers.copies, ers.too_big), (19, 1), "{ers:?}");
    // The IPv6 sink has no IPv6 uplink here: what pod2 sent is counted.
    let v6 = session(&remote(&mut c), "m-v6").clone();
    assert_eq!((v6.copies, v6.no_route), (0, 15 + 5), "{v6:?}");
    b2.remove(2);

    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    assert!(log.contains("mbufs in use after port close: 0"), "{log}");

    // The uplink's capture, dissected by tshark.
    let fields = [
        "eth.dst",
        "ip.src",
        "ip.dst",
        "ip.ttl",
        "ip.flags.df",
        "ip.checksum.status",
        "gre.proto",
        "gre.key",
        "gre.sequence_number",
        "erspan.version",
        "erspan.spanid",
        "erspan.index",
        "erspan.truncated",
        "arp.dst.proto_ipv4",
    ];
    let pkts = tshark_fields(&up_pcap, &fields, &[]);
    let raw = read_pcap(&up_pcap);
    assert_eq!(pkts.len(), raw.len());
    let one = |p: &std::collections::BTreeMap<String, Vec<String>>, f: &str| p.get(f).and_then(|v| v.first()).cloned();
    let (mut gre_inner, mut ers_inner, mut seqs, mut arps) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (p, f) in pkts.iter().zip(&raw) {
        if one(p, "arp.dst.proto_ipv4").as_deref() == Some("192.0.2.77") {
            arps += 1;
            continue;
        }
        assert_eq!(one(p, "ip.src").as_deref(), Some("192.0.2.1"), "{p:?}");
        assert_eq!(one(p, "ip.dst").as_deref(), Some("192.0.2.50"), "{p:?}");
        assert_eq!(one(p, "eth.dst").as_deref(), Some(SINK_MAC), "{p:?}");
        assert_eq!(one(p, "ip.ttl").as_deref(), Some("64"));
        assert_eq!(one(p, "ip.flags.df").as_deref(), Some("1"));
        assert_eq!(one(p, "ip.checksum.status").as_deref(), Some("1"), "IPv4 checksum good: {p:?}");
        match one(p, "gre.proto").map(|s| tshark_num(&s)) {
            Some(0x6558) => {
                assert_eq!(one(p, "gre.key").map(|s| tshark_num(&s)), Some(7), "{p:?}");
                assert_eq!(one(p, "gre.sequence_number"), None, "no sequence number in plain GRE");
                gre_inner.push(f[42..].to_vec());
            }
            Some(0x88be) => {
                assert_eq!(one(p, "gre.key"), None, "OVS sends no GRE key with ERSPAN");
                assert_eq!(one(p, "erspan.version").map(|s| tshark_num(&s)), Some(1), "type II: {p:?}");
                assert_eq!(one(p, "erspan.spanid").map(|s| tshark_num(&s)), Some(9), "{p:?}");
                assert_eq!(one(p, "erspan.index").map(|s| tshark_num(&s)), Some(9), "{p:?}");
                assert_eq!(one(p, "erspan.truncated").map(|s| tshark_num(&s)), Some(0));
                seqs.push(tshark_num(&one(p, "gre.sequence_number").unwrap()));
                ers_inner.push(f[50..].to_vec());
            }
            other => panic!("unexpected frame on the uplink: {other:?} {p:?}"),
        }
    }
    assert!(gre_inner == a1, "GRE copies = what pod1 sent in round 1 only ({} frames)", gre_inner.len());
    // Whole frames = what the header builder makes (which
    // tests/ovs_mirror_format.rs holds to OVS's own output).
    let sink = |kind, index| {
        GreSink::new(&GreSinkConfig {
            kind,
            src_mac: raw.iter().find(|f| f[23] == 47).map(|f| f[6..12].try_into().unwrap()).unwrap(),
            dst_mac: common::mac(SINK_MAC),
            src_ip: Ipv4Addr::new(192, 0, 2, 1).into(),
            dst_ip: Ipv4Addr::new(192, 0, 2, 50).into(),
            index,
        })
        .unwrap()
    };
    let (gre, ers) = (sink(MirrorKind::Gre, 7), sink(MirrorKind::Erspan, 9));
    let mut n_ers = 0u32;
    for f in raw.iter().filter(|f| f[23] == 47) {
        let (s, inner_at, seq) = if f[36..38] == [0x65, 0x58] { (&gre, 42, 0) } else { (&ers, 50, n_ers) };
        let mut b = VecBuf::new(&f[inner_at..], 128, 0);
        gre_encap(&mut b, s, seq, &ChecksumCaps::software()).unwrap();
        assert_eq!(b.data(), &f[..], "a copy as the builder makes it");
        if inner_at == 50 {
            n_ers += 1;
        }
    }
    let given: Vec<Vec<u8>> = b1.iter().chain(&b2).cloned().collect();
    assert!(ers_inner == given, "ERSPAN copies = what pod1 was given ({} frames)", ers_inner.len());
    assert_eq!(seqs, (0..19).collect::<Vec<u64>>(), "ERSPAN sequence numbers");
    assert!(arps >= 1, "ARP for the unresolved sink");

    // petreld restarts: petrel-ovn hands the sessions over again.
    let mut p = petreld(d, &ctl_sock, &d.join("up2.pcap"), "second");
    let mut c = common::connect(&ctl_sock, "ovn mirror test");
    wait_for("OVN's mirrors after a petreld restart", 30, || remote(&mut c).len() == 4);
    assert!(session(&remote(&mut c), "m-ers").refused.is_none());
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Network namespaces deleted (with their veths) when dropped.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The sink is a Linux host on a veth (its kernel answers ARP): petreld's
/// uplink is the other end (af_packet, petreld in its own namespace).
/// Copies of the first burst find the sink unresolved (counted, ARP
/// sent); once the kernel answered, every copy arrives, and tshark on the
/// sink's interface dissects ERSPAN type II with session id = index and
/// the frames pod1 sent, byte for byte.
#[test]
fn ovn_erspan_mirror_to_a_sink_resolved_by_arp() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_procs, nb, sb) = start_ovn(d);
    let id = std::process::id();
    let (pns, sns) = (format!("pmir-p{id}"), format!("pmir-s{id}"));
    let (pdev, sdev) = (format!("pm{id}"), format!("sm{id}"));
    ip(&["netns", "add", &pns]);
    let _ns = Netns(vec![pns.clone(), sns.clone()]);
    ip(&["netns", "add", &sns]);
    ip(&["link", "add", &pdev, "netns", &pns, "type", "veth", "peer", "name", &sdev, "netns", &sns]);
    for (ns, dev) in [(&pns, &pdev), (&sns, &sdev)] {
        ip(&["netns", "exec", ns, "sysctl", "-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", &sns, "addr", "add", "192.0.2.77/24", "dev", &sdev]);

    switch(&nb);
    nbctl(&nb, &["mirror-add", "m-ers", "erspan", "300", "from-lport", "192.0.2.77"]);
    nbctl(&nb, &["lsp-attach-mirror", "pod1", "m-ers"]);

    let cap = d.join("sink.pcap");
    let mut tshark = Proc::spawn(
        "tshark",
        {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &sns, "tshark", "-n", "-F", "pcap", "-i", &sdev, "-w"]).arg(&cap);
            c
        },
        d.join("tshark.log"),
    );
    wait_for("tshark capturing", 20, || tshark.log().contains("Capturing on"));

    let ctl_sock = d.join("petreld.sock");
    let up = format!("up=dpdk,devargs=net_af_packet0,iface={pdev}");
    let mut p = petreld_with(d, &ctl_sock, &up, &[], Some(&pns), "arp");
    wait_for("petreld's control socket", 20, || ctl_sock.exists());
    let _ovn = petrel_ovn(d, &sb, "192.0.2.1", &ctl_sock);
    nbctl(&nb, &["--timeout=30", "--wait=hv", "sync"]);
    let mut c = common::connect(&ctl_sock, "ovn mirror arp test");
    wait_for("OVN's mirror in petreld", 20, || remote(&mut c).len() == 1);

    // Round 1: the sink's MAC is not known yet.
    let a1 = frames(10, POD1_MAC, POD2_MAC, 0xc1);
    replay(d, "r1", &a1, &[]);
    let s1 = session(&remote(&mut c), "m-ers").clone();
    assert_eq!(s1.copies + s1.unresolved, 10, "{s1:?}");
    assert!(s1.unresolved >= 1, "the first copy found no MAC: {s1:?}");
    // Round 2: resolved by ARP meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let a2 = frames(12, POD1_MAC, POD2_MAC, 0xc2);
    replay(d, "r2", &a2, &[]);
    let s2 = session(&remote(&mut c), "m-ers").clone();
    assert_eq!((s2.copies, s2.unresolved), (s1.copies + 12, s1.unresolved), "{s2:?}");
    std::thread::sleep(Duration::from_millis(500));
    let (_, tlog) = tshark.stop();
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");

    let pkts = tshark_fields(&cap, &["arp.opcode", "erspan.version", "erspan.spanid", "gre.sequence_number"], &[]);
    let raw = read_pcap(&cap);
    assert_eq!(pkts.len(), raw.len(), "{tlog}");
    let mut inner = Vec::new();
    let mut seqs = Vec::new();
    let mut arp_requests = 0;
    for (p, f) in pkts.iter().zip(&raw) {
        let one = |k: &str| p.get(k).and_then(|v| v.first()).map(|s| tshark_num(s));
        if one("arp.opcode") == Some(1) && f[6..12] != [0; 6] && f[28..32] == [192, 0, 2, 1] {
            arp_requests += 1;
        }
        // The sink's kernel has no GRE: it answers each copy with an ICMP
        // protocol unreachable quoting it, which tshark dissects too.
        if f[23] == 47 && f[26..30] == [192, 0, 2, 1] {
            assert_eq!(one("erspan.version"), Some(1), "{p:?}");
            assert_eq!(one("erspan.spanid"), Some(300), "{p:?}");
            seqs.push(one("gre.sequence_number").unwrap());
            inner.push(f[50..].to_vec());
        }
    }
    assert!(arp_requests >= 1, "petreld asked for the sink's MAC");
    let n1 = usize::try_from(s1.copies).unwrap();
    let want: Vec<Vec<u8>> = a1[10 - n1..].iter().chain(&a2).cloned().collect();
    let lens = |v: &[Vec<u8>]| v.iter().map(|f| (f[14], f[15], f.len())).collect::<Vec<_>>();
    assert!(
        inner == want,
        "the sink got the copies petreld counted ({} frames): {:?} want {:?}; {s1:?} {s2:?}",
        inner.len(),
        lens(&inner),
        lens(&want)
    );
    assert_eq!(seqs, (0..want.len() as u64).collect::<Vec<_>>(), "sequence numbers of the copies sent");
}
