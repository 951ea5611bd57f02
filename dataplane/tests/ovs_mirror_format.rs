//! The GRE and ERSPAN headers of mirror copies ([`petrel_dataplane::action::gre`])
//! against what OVS itself emits: a real `ovs-vswitchd` (Debian's, userspace
//! datapath on dummy ports, native tunnelling as in OVS's
//! `tests/tunnel-push-pop.at`) mirrors a port to a `gre` tunnel
//! (`key=7`) and an `erspan` one (`key=9`, `erspan_ver=1`, `erspan_idx=9`)
//! — the interfaces ovn-controller makes for a Southbound `Mirror` — to
//! an IPv4 and to an IPv6 sink, and its uplink's capture must equal, byte
//! for byte, what `gre_encap` builds for the same frames. ERSPAN sequence
//! numbers: OVS's userspace datapath has one `erspan_sys` port for every
//! `erspan` interface, and its one counter numbers the copies of all of
//! them from 0 (petreld does the same).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use petrel_dataplane::action::gre::{gre_encap, GreSink, GreSinkConfig, MirrorKind};
use petrel_dataplane::buf::{PacketBuf, VecBuf};
use petrel_dataplane::wire::ChecksumCaps;

fn run(d: &Path, cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .env("OVS_RUNDIR", d)
        .env("OVS_LOGDIR", d)
        .env("OVS_DBDIR", d)
        .env("OVS_SYSCONFDIR", d)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run scripts/bootstrap.sh: Debian's openvswitch-switch)"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stops the daemons (by their pidfiles) when dropped.
struct Ovs<'a>(&'a Path);

impl Drop for Ovs<'_> {
    fn drop(&mut self) {
        for d in ["ovs-vswitchd", "ovsdb-server"] {
            let ctl = self.0.join(format!("{d}.ctl"));
            let _ = Command::new("ovs-appctl").arg("-t").arg(&ctl).arg("exit").output();
        }
    }
}

fn frames() -> Vec<Vec<u8>> {
    (0..8)
        .map(|i| {
            let mut f: Vec<u8> = (0..60 + 97 * i).map(|j| (j as u8) ^ (i as u8)).collect();
            f[..6].copy_from_slice(&[0x02, 0, 0, 0, 1, 2]);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 1, 1]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]);
            f
        })
        .collect()
}

#[test]
fn gre_and_erspan_copies_equal_what_ovs_emits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.to_str().unwrap();
    let db = format!("unix:{ds}/db.sock");
    run(d, "ovsdb-tool", &["create", &format!("{ds}/conf.db"), "/usr/share/openvswitch/vswitch.ovsschema"]);
    let _ovs = Ovs(d);
    run(
        d,
        "ovsdb-server",
        &[
            &format!("--remote=punix:{ds}/db.sock"),
            &format!("--unixctl={ds}/ovsdb-server.ctl"),
            &format!("--pidfile={ds}/ovsdb-server.pid"),
            "--detach",
            "--no-chdir",
            &format!("--log-file={ds}/ovsdb-server.log"),
            &format!("{ds}/conf.db"),
        ],
    );
    run(d, "ovs-vsctl", &[&format!("--db={db}"), "--no-wait", "init"]);
    run(
        d,
        "ovs-vswitchd",
        &[
            "--enable-dummy",
            "--disable-system",
            "--disable-system-route",
            &db,
            &format!("--pidfile={ds}/ovs-vswitchd.pid"),
            "--detach",
            "--no-chdir",
            &format!("--log-file={ds}/ovs-vswitchd.log"),
            &format!("--unixctl={ds}/ovs-vswitchd.ctl"),
        ],
    );
    let vsctl = |args: &[&str]| run(d, "ovs-vsctl", &[&[&format!("--db={db}") as &str][..], args].concat());
    let ctl = format!("{ds}/ovs-vswitchd.ctl");
    let appctl = |args: &[&str]| run(d, "ovs-appctl", &[&["-t", &ctl as &str][..], args].concat());
    let up_pcap = format!("{ds}/up.pcap");
    // The uplink bridge with the node's tunnel IP, as ovn-controller's
    // br-phy in OVS-DPDK deployments.
    vsctl(&[
        "add-br",
        "br-phy",
        "--",
        "set",
        "bridge",
        "br-phy",
        "datapath_type=dummy",
        "other-config:hwaddr=02:00:00:00:00:01",
        "--",
        "add-port",
        "br-phy",
        "up",
        "--",
        "set",
        "interface",
        "up",
        "type=dummy",
        &format!("options:tx_pcap={up_pcap}"),
    ]);
    // br-int with the pod's port and the two mirror tunnels.
    vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=dummy",
        "--",
        "add-port",
        "br0",
        "p1",
        "--",
        "set",
        "interface",
        "p1",
        "type=dummy",
        "--",
        "add-port",
        "br0",
        "t-gre",
        "--",
        "set",
        "interface",
        "t-gre",
        "type=gre",
        "options:remote_ip=192.0.2.50",
        "options:key=7",
        "--",
        "add-port",
        "br0",
        "t-ers",
        "--",
        "set",
        "interface",
        "t-ers",
        "type=erspan",
        "options:remote_ip=192.0.2.50",
        "options:key=9",
        "options:erspan_ver=1",
        "options:erspan_idx=9",
        "--",
        "add-port",
        "br0",
        "t-gre6",
        "--",
        "set",
        "interface",
        "t-gre6",
        "type=gre",
        "options:remote_ip=2001:db8::50",
        "options:key=7",
        "--",
        "add-port",
        "br0",
        "t-ers6",
        "--",
        "set",
        "interface",
        "t-ers6",
        "type=erspan",
        "options:remote_ip=2001:db8::50",
        "options:key=9",
        "options:erspan_ver=1",
        "options:erspan_idx=9",
    ]);
    appctl(&["netdev-dummy/ip4addr", "br-phy", "192.0.2.1/24"]);
    appctl(&["ovs/route/add", "192.0.2.0/24", "br-phy"]);
    appctl(&["tnl/neigh/set", "br-phy", "192.0.2.50", "02:00:00:00:99:01"]);
    appctl(&["netdev-dummy/ip6addr", "br-phy", "2001:db8::1/64"]);
    appctl(&["ovs/route/add", "2001:db8::/64", "br-phy"]);
    appctl(&["tnl/neigh/set", "br-phy", "2001:db8::50", "02:00:00:00:99:01"]);
    vsctl(&[
        "--",
        "set",
        "bridge",
        "br0",
        "mirrors=@g,@e,@g6,@e6",
        "--",
        "--id=@p1",
        "get",
        "port",
        "p1",
        "--",
        "--id=@tg",
        "get",
        "port",
        "t-gre",
        "--",
        "--id=@te",
        "get",
        "port",
        "t-ers",
        "--",
        "--id=@tg6",
        "get",
        "port",
        "t-gre6",
        "--",
        "--id=@te6",
        "get",
        "port",
        "t-ers6",
        "--",
        "--id=@g6",
        "create",
        "mirror",
        "name=g6",
        "select_src_port=@p1",
        "output_port=@tg6",
        "--",
        "--id=@e6",
        "create",
        "mirror",
        "name=e6",
        "select_src_port=@p1",
        "output_port=@te6",
        "--",
        "--id=@g",
        "create",
        "mirror",
        "name=g",
        "select_src_port=@p1",
        "output_port=@tg",
        "--",
        "--id=@e",
        "create",
        "mirror",
        "name=e",
        "select_src_port=@p1",
        "output_port=@te",
    ]);
    run(d, "ovs-ofctl", &["add-flow", "br0", "actions=drop"]);
    run(d, "ovs-ofctl", &["add-flow", "br-phy", "actions=normal"]);
    let trace = appctl(&["ofproto/trace", "br0", "in_port=p1,dl_type=0x88b5"]);
    assert!(trace.contains("tnl_push"), "OVS must use native tunnelling here:\n{trace}");

    let input = frames();
    for f in &input {
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        appctl(&["netdev-dummy/receive", "p1", &hex]);
    }
    let want_n = 4 * input.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        // The pcap is written (and flushed) packet by packet.
        if let Ok(m) = std::fs::metadata(&up_pcap) {
            if m.len() > 24 {
                got = common::read_pcap(Path::new(&up_pcap));
                if got.len() >= want_n {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(got.len(), want_n, "OVS sent a GRE and an ERSPAN copy per frame and sink");

    let sink = |kind, index, src: &str, dst: &str| {
        GreSink::new(&GreSinkConfig {
            kind,
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0x99, 0x01],
            src_ip: src.parse().unwrap(),
            dst_ip: dst.parse().unwrap(),
            index,
        })
        .unwrap()
    };
    let caps = ChecksumCaps::software();
    let mut seqs = Vec::new();
    for (src, dst, ethertype, ip_len) in
        [("192.0.2.1", "192.0.2.50", [0x08, 0x00], 20), ("2001:db8::1", "2001:db8::50", [0x86, 0xdd], 40)]
    {
        let (gre, ers) = (sink(MirrorKind::Gre, 7, src, dst), sink(MirrorKind::Erspan, 9, src, dst));
        let proto = 14 + ip_len + 2;
        let mine: Vec<&Vec<u8>> = got.iter().filter(|f| f[12..14] == ethertype).collect();
        let (ovs_gre, ovs_ers): (Vec<_>, Vec<_>) = mine.into_iter().partition(|f| f[proto..proto + 2] == [0x65, 0x58]);
        assert_eq!((ovs_gre.len(), ovs_ers.len()), (input.len(), input.len()), "{dst}");
        for (i, f) in input.iter().enumerate() {
            let mut b = VecBuf::new(f, 128, 0);
            gre_encap(&mut b, &gre, 0, &caps).unwrap();
            assert_eq!(b.data(), &ovs_gre[i][..], "GRE copy of frame {i} to {dst}");
            let at = proto + 2;
            let seq = u32::from_be_bytes(ovs_ers[i][at..at + 4].try_into().unwrap());
            seqs.push(seq);
            let mut b = VecBuf::new(f, 128, 0);
            gre_encap(&mut b, &ers, seq, &caps).unwrap();
            assert_eq!(b.data(), &ovs_ers[i][..], "ERSPAN copy of frame {i} to {dst} (sequence number {seq})");
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..2 * input.len() as u32).collect::<Vec<_>>(), "one sequence for both ERSPAN tunnels");
}
