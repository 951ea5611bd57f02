//! `petreld` running published tables: a logical switch (port security, an
//! ARP responder, L2 lookup, a flood group, a child port behind a VLAN tag)
//! is published over the control socket, then packets go through it.
//!
//! The pod port's capture is fed through a FIFO, so the test publishes the
//! tables first and only then lets packets in: nothing depends on timing.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{connect, empty_pcap, read_pcap, tagged, Daemon};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use petrel_dataplane::ctl::proto::SnapshotMsg;
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::table::{
    Action, Binding, Datapath, Field, LocalPort, Pipeline, Rule, Snapshot, Stage, MLF_ALLOW_LOOPBACK, REG_FLAGS,
    REG_INPORT, REG_OUTPORT,
};

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");
const EAL: &str = "--in-memory --no-pci --no-telemetry -m 256 -l 0 --log-level=*:warning";
const MAC1: u128 = 0x0200_0000_0001;
const MAC2: u128 = 0x0200_0000_0002;
const MAC_ROUTER: u128 = 0x0200_0000_00fe;
const ALL: u128 = u128::MAX;
const FLOOD: u32 = 32768;

fn reg(r: usize, v: u32) -> (Field, u128, u128) {
    (Field::Reg(r as u8), u128::from(v), 0xffff_ffff)
}

fn set(field: Field, value: u128) -> Action {
    Action::Set { field, value, mask: ALL }
}

fn ip(a: [u8; 4]) -> u128 {
    std::net::Ipv4Addr::from(a).to_ipv6_mapped().to_bits()
}

/// Logical switch 5: lp 1 = port a (index 0), lp 2 = port b (index 1) as a
/// child port with tag 7, lp 3 = port c (index 2); 10.0.0.254 is answered
/// by the ARP responder with MAC_ROUTER.
fn switch() -> Snapshot {
    let arp_reply = vec![
        Action::Move { src: Field::EthSrc, dst: Field::EthDst },
        set(Field::EthSrc, MAC_ROUTER),
        set(Field::ArpOp, 2),
        Action::Move { src: Field::ArpSha, dst: Field::ArpTha },
        set(Field::ArpSha, MAC_ROUTER),
        Action::Move { src: Field::IpSrc, dst: Field::IpDst },
        set(Field::IpSrc, ip([10, 0, 0, 254])),
        Action::Move { src: Field::Reg(REG_INPORT as u8), dst: Field::Reg(REG_OUTPORT as u8) },
        Action::Set { field: Field::Reg(REG_FLAGS as u8), value: u128::from(MLF_ALLOW_LOOPBACK), mask: 1 },
        Action::Output,
    ];
    let ingress = Pipeline {
        stages: vec![
            Arc::new(Stage::new(
                "ls_in_port_sec_l2",
                vec![
                    Rule::new(50, &[reg(REG_INPORT, 1), (Field::EthSrc, MAC1, ALL)], vec![Action::Next(1)], 0x11),
                    Rule::new(50, &[reg(REG_INPORT, 2), (Field::EthSrc, MAC2, ALL)], vec![Action::Next(1)], 0x12),
                    Rule::new(50, &[reg(REG_INPORT, 3)], vec![Action::Next(1)], 0x13),
                    Rule::new(0, &[], vec![Action::Drop(DropReason::Explicit)], 0x10),
                ],
            )),
            Arc::new(Stage::new(
                "ls_in_arp_rsp",
                vec![
                    // arp.op == 1 && arp.tpa == 10.0.0.254 (dl_type is matched through arp_op being set only for ARP).
                    Rule::new(
                        50,
                        &[(Field::ArpOp, 1, 0xffff), (Field::IpDst, ip([10, 0, 0, 254]), ALL)],
                        arp_reply,
                        0x21,
                    ),
                    Rule::new(0, &[], vec![Action::Next(2)], 0x20),
                ],
            )),
            Arc::new(Stage::new(
                "ls_in_l2_lkup",
                vec![
                    Rule::new(
                        70,
                        &[(Field::EthDst, 0x0100_0000_0000, 0x0100_0000_0000)],
                        vec![set(Field::Reg(REG_OUTPORT as u8), u128::from(FLOOD)), Action::Output],
                        0x31,
                    ),
                    Rule::new(
                        50,
                        &[(Field::EthDst, MAC1, ALL)],
                        vec![set(Field::Reg(REG_OUTPORT as u8), 1), Action::Output],
                        0x32,
                    ),
                    Rule::new(
                        50,
                        &[(Field::EthDst, MAC2, ALL)],
                        vec![set(Field::Reg(REG_OUTPORT as u8), 2), Action::Output],
                        0x33,
                    ),
                ],
            )),
        ],
    };
    let egress = Pipeline {
        stages: vec![Arc::new(Stage::new("ls_out_output", vec![Rule::new(0, &[], vec![Action::Output], 0x40)]))],
    };
    let mut ports = BTreeMap::new();
    ports.insert(1, Binding::Local { port: 0, vlan: None });
    ports.insert(2, Binding::Local { port: 1, vlan: Some(7) });
    ports.insert(3, Binding::Local { port: 2, vlan: None });
    let mut groups = BTreeMap::new();
    groups.insert(FLOOD, Arc::from(vec![1, 2, 3]));
    let mut port_names = BTreeMap::new();
    for (k, n) in [(1, "lp-a"), (2, "lp-b"), (3, "lp-c")] {
        port_names.insert(k, n.to_owned());
    }
    let dp = Datapath { key: 5, name: "ls5".into(), ingress, egress, ports, groups, port_names };
    let mut datapaths = BTreeMap::new();
    datapaths.insert(5, Arc::new(dp));
    Snapshot {
        meters: Vec::new(),
        vlan_ports: Default::default(),
        generation: 0,
        datapaths,
        local_ports: vec![
            Some(LocalPort { datapath: 5, port: 1 }),
            Some(LocalPort { datapath: 5, port: 2 }),
            Some(LocalPort { datapath: 5, port: 3 }),
        ],
        chassis: vec![],
    }
}

fn mac(m: u128) -> [u8; 6] {
    let b = m.to_be_bytes();
    [b[10], b[11], b[12], b[13], b[14], b[15]]
}

fn udp_frame(dst: u128, src: u128, id: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&mac(dst));
    f.extend_from_slice(&mac(src));
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 30, 0, id, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 10, 0, 0, b'h', id]);
    f.resize(60, 0);
    f
}

fn arp_request(src: u128, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac(src));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac(src));
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

#[test]
fn published_switch_forwards_floods_answers_arp_and_drops_spoofs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("a.in.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    empty_pcap(&d.join("empty.pcap"));
    let port = |name: &str, i: usize, rx: &Path| {
        format!(
            "{name}=dpdk,devargs=net_pcap{i},rx_pcap={},tx_pcap={}",
            rx.display(),
            d.join(format!("{name}.out.pcap")).display()
        )
    };
    let socket = d.join("ctl.sock");
    let stats_file = d.join("stats.json");
    let child = Command::new(PETRELD)
        .args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "4095", "--exit-when-idle", "300"])
        .arg("--control-socket")
        .arg(&socket)
        .arg("--stats-file")
        .arg(&stats_file)
        .args([
            "--port",
            &port("a", 0, &fifo),
            "--port",
            &port("b", 1, &d.join("empty.pcap")).replacen("=dpdk,", "=dpdk,iface-id=lp-b,", 1),
        ])
        .args(["--port", &port("c", 2, &d.join("empty.pcap"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, socket: socket.clone() };
    // net_pcap reads the capture header when the port opens: give it one.
    // Opened read-write, which never blocks on a FIFO (write-only would wait
    // for petreld forever if it died first); the test never reads from it.
    let mut w = PcapWriter::new(std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap()).unwrap();

    let mut ctl = connect(&daemon.socket, "tables-test");
    assert_eq!(ctl.hello().generation, 0, "no tables before the first publish");
    let generation = ctl.publish(SnapshotMsg::from(&switch())).unwrap();
    assert_eq!(generation, 1);
    // The same tables, traced without sending anything.
    let t = ctl.trace("a", "eth.src == 02:00:00:00:00:01 && eth.dst == 02:00:00:00:00:02 && udp").unwrap();
    let text = t.lines.join("\n");
    for stage in ["ls_in_port_sec_l2", "ls_in_arp_rsp", "ls_in_l2_lkup", "ls_out_output"] {
        assert!(text.contains(stage), "trace misses {stage}:\n{text}");
    }
    assert_eq!(t.outputs.len(), 1, "{text}");
    let show = ctl.show().unwrap();
    assert_eq!(show.generation, 1);
    assert_eq!(show.ports[1].logical.as_ref().unwrap().port_name.as_deref(), Some("lp-b"));
    assert_eq!(show.ports[1].iface_id.as_deref(), Some("lp-b"), "the declared iface-id is what petrel-ovn reads");
    assert_eq!(show.ports[0].iface_id, None);
    // A bad snapshot is refused and the running tables stay.
    let mut bad = switch();
    bad.local_ports.push(Some(LocalPort { datapath: 99, port: 1 }));
    assert!(ctl.publish(SnapshotMsg::from(&bad)).is_err());
    assert_eq!(ctl.show().unwrap().generation, 1);
    drop(ctl);

    // Now the traffic.
    let unicast: Vec<_> = (1..=3).map(|i| udp_frame(MAC2, MAC1, i)).collect();
    let bcast = udp_frame(0xffff_ffff_ffff, MAC1, 9);
    let spoof = udp_frame(MAC2, 0x0200_0000_0099, 10);
    let arp = arp_request(MAC1, [10, 0, 0, 1], [10, 0, 0, 254]);
    let input: Vec<Vec<u8>> = unicast.iter().cloned().chain([bcast.clone(), spoof, arp]).collect();
    for (i, f) in input.iter().enumerate() {
        w.write_packet(&PcapPacket::new(Duration::from_micros(i as u64), f.len() as u32, f)).unwrap();
    }
    w.into_writer().flush().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "petreld did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = std::mem::replace(&mut daemon.child, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    // b is a child port: everything for it carries tag 7.
    let mut want_b: Vec<_> = unicast.iter().map(|f| tagged(f, 7)).collect();
    want_b.push(tagged(&bcast, 7));
    assert_eq!(read_pcap(&d.join("b.out.pcap")), want_b);
    assert_eq!(read_pcap(&d.join("c.out.pcap")), vec![bcast], "the flood reaches c once, untagged");
    // The ARP responder answered in the fast path, back out of a.
    let mut reply = mac(MAC1).to_vec();
    reply.extend_from_slice(&mac(MAC_ROUTER));
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&mac(MAC_ROUTER));
    reply.extend_from_slice(&[10, 0, 0, 254]);
    reply.extend_from_slice(&mac(MAC1));
    reply.extend_from_slice(&[10, 0, 0, 1]);
    reply.resize(60, 0);
    assert_eq!(read_pcap(&d.join("a.out.pcap")), vec![reply]);

    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
    assert_eq!(s["drops"]["explicit"], 1, "the spoofed source was dropped by port security: {stdout}");
    assert_eq!(s["mbufs_leaked"], 0);
    // Three packets of one flow: the first ran the pipeline, the next two hit the cache.
    assert!(s["pmds"][0]["cache_hits"].as_u64().unwrap() >= 2, "{s}");
}

/// Logical wire: lp 1 (port 0) <-> lp 2 (port 1), plus `extra` rules that
/// never match, so successive snapshots differ.
fn wire(extra: u32) -> Snapshot {
    let mut rules = vec![
        Rule::new(10, &[reg(REG_INPORT, 1)], vec![set(Field::Reg(REG_OUTPORT as u8), 2), Action::Output], 1),
        Rule::new(10, &[reg(REG_INPORT, 2)], vec![set(Field::Reg(REG_OUTPORT as u8), 1), Action::Output], 2),
    ];
    for i in 0..extra {
        rules.push(Rule::new(
            20,
            &[(Field::EthDst, 0x0200_dead_0000 + u128::from(i), ALL)],
            vec![Action::Drop(DropReason::Explicit)],
            100 + u64::from(i),
        ));
    }
    let ingress = Pipeline { stages: vec![Arc::new(Stage::new("wire", rules))] };
    let egress =
        Pipeline { stages: vec![Arc::new(Stage::new("out", vec![Rule::new(0, &[], vec![Action::Output], 3)]))] };
    let mut ports = BTreeMap::new();
    ports.insert(1, Binding::Local { port: 0, vlan: None });
    ports.insert(2, Binding::Local { port: 1, vlan: None });
    let dp = Datapath { key: 1, name: "wire".into(), ingress, egress, ports, ..Datapath::default() };
    let mut datapaths = BTreeMap::new();
    datapaths.insert(1, Arc::new(dp));
    Snapshot {
        meters: Vec::new(),
        vlan_ports: Default::default(),
        generation: 0,
        datapaths,
        local_ports: vec![Some(LocalPort { datapath: 1, port: 1 }), Some(LocalPort { datapath: 1, port: 2 })],
        chassis: vec![],
    }
}

#[test]
fn table_swaps_under_traffic_lose_no_packet() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let stats_file = dir.path().join("stats.json");
    let child = Command::new(PETRELD)
        .args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "8191"])
        .arg("--control-socket")
        .arg(&socket)
        .arg("--stats-file")
        .arg(&stats_file)
        .args(["--port", "a=dpdk,devargs=net_null0,size=64", "--port", "b=dpdk,devargs=net_null1,size=64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, socket: socket.clone() };
    let mut ctl = connect(&daemon.socket, "tables-test");
    // Until the first publish the ports are unbound: those packets are
    // counted as no_output. Counting starts from the first snapshot.
    ctl.publish(SnapshotMsg::from(&wire(0))).unwrap();
    // PMDs publish counters every ~1k polls: wait until the unbound-era
    // drop count has stopped moving, then take the baseline.
    let no_output = |r: &petrel_dataplane::ctl::proto::StatsReply| {
        r.drops.reasons.iter().find(|d| d.reason == "no_output").map_or(0, |d| d.count)
    };
    let mut before = ctl.stats().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = ctl.stats().unwrap();
        let settled =
            no_output(&now) == no_output(&before) && now.ports[1].stats.tx_packets > before.ports[1].stats.tx_packets;
        before = now;
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "forwarding never settled after the first publish");
    }
    let n_swaps: u32 = 40;
    for i in 0..n_swaps {
        std::thread::sleep(Duration::from_millis(15));
        ctl.publish(SnapshotMsg::from(&wire(1 + i % 3))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    drop(ctl);
    assert!(Command::new("kill").args(["-TERM", &daemon.child.id().to_string()]).status().unwrap().success());
    let out = std::mem::replace(&mut daemon.child, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
    let g = |p: &str, k: &str| s["ports"][p][k].as_u64().unwrap();
    let d0 = |name: &str| before.drops.reasons.iter().find(|r| r.reason == name).map_or(0, |r| r.count);
    // Every drop after the first publish would be a loss caused by a swap.
    for (reason, n) in s["drops"].as_object().unwrap() {
        assert_eq!(n.as_u64().unwrap(), d0(reason), "drops of {reason} grew while tables were swapped: {stdout}");
    }
    let rx_a_before = before.ports[0].stats.rx_packets;
    assert!(g("a", "rx_packets") > rx_a_before + 1000, "traffic flowed during the swaps: {s}");
    // Conservation: what came in after binding went out the other side.
    let dropped_a = before.ports[0].stats.drops;
    let dropped_b = before.ports[1].stats.drops;
    assert_eq!(g("a", "rx_packets") - dropped_a, g("b", "tx_packets") + g("b", "tx_drops"));
    assert_eq!(g("b", "rx_packets") - dropped_b, g("a", "tx_packets") + g("a", "tx_drops"));
    assert_eq!(g("a", "tx_drops") + g("b", "tx_drops"), 0, "net_null never refuses a packet");
    // Each new generation invalidated the cache: at least one miss per swap.
    assert!(s["pmds"][0]["cache_misses"].as_u64().unwrap() > u64::from(n_swaps), "{s}");
    assert_eq!(s["mbufs_leaked"], 0);
}
