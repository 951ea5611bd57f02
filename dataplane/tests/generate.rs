//! `petreld` answering in the fast path with generated packets: a logical
//! switch whose ND responder (`nd_na { … }`) and ACL (`reject { … }`, as
//! ovn-northd writes them) are published over the control socket; an NS is
//! answered with an NA, a UDP packet and a TCP SYN that the ACL rejects with
//! an ICMP port unreachable and a TCP RST, a TCP RST is not answered, and
//! other traffic passes. Every generated frame is compared byte for byte
//! with the one scapy makes for what pinctrl sends (`/usr/bin/python3`; the
//! expected frames are below as hex).
//!
//! Port a's capture is fed through a FIFO after the tables are published,
//! as in `tables.rs`.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{connect, empty_pcap, read_pcap, unhex, Daemon};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use petrel_dataplane::ctl::proto::SnapshotMsg;
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::table::{
    Action, Binding, Datapath, Field, GenKind, LocalPort, Pipeline, Rule, Snapshot, Stage, MLF_ALLOW_LOOPBACK,
    REG_FLAGS, REG_INPORT, REG_OUTPORT,
};

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");
const EAL: &str = "--in-memory --no-pci --no-telemetry -m 256 -l 0 --log-level=*:warning";
const MAC_A: u128 = 0x0200_0000_0001;
const MAC_B: u128 = 0x0200_0000_0002;
const ALL: u128 = u128::MAX;

// scapy (see the module docs):
// NS = Ether(src=A, dst="33:33:ff:00:00:02")/IPv6(src="fd00::1", dst="ff02::1:ff00:2", hlim=255)
//      /ICMPv6ND_NS(tgt="fd00::2")/ICMPv6NDOptSrcLLAddr(lladdr=A)
const NS: &str = "3333ff00000202000000000186dd6000000000203afffd000000000000000000000000000001ff0200000000000000000001ff00000287007d9700000000fd0000000000000000000000000000020101020000000001";
// NA = Ether(src=B, dst=A)/IPv6(src="fd00::2", dst="fd00::1", hlim=255)
//      /ICMPv6ND_NA(R=0, S=1, O=1, tgt="fd00::2")/ICMPv6NDOptDstLLAddr(lladdr=B)
const NA: &str = "02000000000102000000000286dd6000000000203afffd000000000000000000000000000002fd00000000000000000000000000000188001c9a60000000fd0000000000000000000000000000020201020000000002";
// DNS = Ether(src=A, dst=B)/IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=1)/UDP(sport=5000, dport=53)/b"query"
const DNS: &str = "02000000000202000000000108004500002100010000401166c90a0000010a00000213880035000d882c7175657279";
// Ether(src=B, dst=A)/IP(src="10.0.0.2", dst="10.0.0.1", ttl=255, id=0, flags="DF")/ICMP(type=3, code=3)/bytes(DNS[IP])
const DNS_UNREACH: &str = "02000000000102000000000208004500003d00004000ff0167bd0a0000020a0000010303111e000000004500002100010000401166c90a0000010a00000213880035000d882c7175657279";
// Ether(src=A, dst=B)/IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=2)/UDP(sport=5000, dport=54)/b"fine"
const UDP_OK: &str = "02000000000202000000000108004500002000020000401166c90a0000010a00000213880036000c034766696e65";
// Ether(src=A, dst=B)/IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=3)/TCP(sport=40000, dport=80, seq=1000, flags="S")
const SYN: &str =
    "02000000000202000000000108004500002800030000400666cb0a0000010a0000029c400050000003e80000000050022000db670000";
// Ether(src=B, dst=A)/IP(src="10.0.0.2", dst="10.0.0.1", ttl=63, id=0, flags="DF")
//      /TCP(sport=80, dport=40000, seq=0, ack=1001, flags="RA", window=0)
const SYN_RST: &str =
    "020000000001020000000002080045000028000040003f0627ce0a0000020a00000100509c4000000000000003e950140000fb540000";
// Ether(src=A, dst=B)/IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=4)/TCP(sport=40000, dport=80, seq=1001, flags="R")
const RST: &str =
    "02000000000202000000000108004500002800040000400666ca0a0000010a0000029c400050000003e90000000050042000db640000";

fn reg(r: usize, v: u32) -> (Field, u128, u128) {
    (Field::Reg(r as u8), u128::from(v), 0xffff_ffff)
}

fn set(field: Field, value: u128) -> Action {
    Action::Set { field, value, mask: ALL }
}

fn ip4(a: [u8; 4]) -> u128 {
    std::net::Ipv4Addr::from(a).to_ipv6_mapped().to_bits()
}

fn ip6(s: &str) -> u128 {
    s.parse::<std::net::Ipv6Addr>().unwrap().to_bits()
}

/// Logical switch 7: lp 1 = port a (index 0), lp 2 = port b (index 1).
/// Ingress: port security, ACL (reject UDP to port 53 and TCP to
/// 10.0.0.2), ND responder for fd00::2 (lp 2's address), L2 lookup.
/// Egress: a stage that drops everything (which the reject's jump skips,
/// as `next(pipeline=egress, table=N)` skips egress ACLs), then output.
fn switch() -> Snapshot {
    // reject { outport <-> inport; next(pipeline=egress, table=<output>); };
    let reject = Action::Generate {
        kind: GenKind::Reject,
        actions: vec![
            Action::Exchange(Field::Reg(REG_OUTPORT as u8), Field::Reg(REG_INPORT as u8)),
            Action::Jump { egress: true, stage: 1 },
        ]
        .into(),
    };
    // nd_na { eth.src = B; ip6.src = fd00::2; nd.target = fd00::2; nd.tll = B;
    //         outport = inport; flags.loopback = 1; output; };
    let nd_na = Action::Generate {
        kind: GenKind::NdNa,
        actions: vec![
            set(Field::EthSrc, MAC_B),
            set(Field::IpSrc, ip6("fd00::2")),
            set(Field::NdTarget, ip6("fd00::2")),
            set(Field::ArpTha, MAC_B),
            Action::Move { src: Field::Reg(REG_INPORT as u8), dst: Field::Reg(REG_OUTPORT as u8) },
            Action::Set { field: Field::Reg(REG_FLAGS as u8), value: u128::from(MLF_ALLOW_LOOPBACK), mask: 1 },
            Action::Output,
        ]
        .into(),
    };
    let ty = |t: u128| (Field::EthType, t, 0xffff);
    let proto = |p: u128| (Field::IpProto, p, 0xff);
    let ingress = Pipeline {
        stages: vec![
            Arc::new(Stage::new(
                "ls_in_port_sec_l2",
                vec![
                    Rule::new(50, &[reg(REG_INPORT, 1), (Field::EthSrc, MAC_A, ALL)], vec![Action::Next(1)], 0x11),
                    Rule::new(50, &[reg(REG_INPORT, 2), (Field::EthSrc, MAC_B, ALL)], vec![Action::Next(1)], 0x12),
                    Rule::new(0, &[], vec![Action::Drop(DropReason::Explicit)], 0x10),
                ],
            )),
            Arc::new(Stage::new(
                "ls_in_acl",
                vec![
                    Rule::new(2000, &[ty(0x0800), proto(17), (Field::TpDst, 53, 0xffff)], vec![reject.clone()], 0x21),
                    Rule::new(
                        2000,
                        &[ty(0x0800), proto(6), (Field::IpDst, ip4([10, 0, 0, 2]), ALL)],
                        vec![reject],
                        0x22,
                    ),
                    Rule::new(0, &[], vec![Action::Next(2)], 0x20),
                ],
            )),
            Arc::new(Stage::new(
                "ls_in_arp_rsp",
                vec![
                    Rule::new(
                        50,
                        &[ty(0x86dd), proto(58), (Field::TpSrc, 135, 0xffff), (Field::NdTarget, ip6("fd00::2"), ALL)],
                        vec![nd_na],
                        0x31,
                    ),
                    Rule::new(0, &[], vec![Action::Next(3)], 0x30),
                ],
            )),
            Arc::new(Stage::new(
                "ls_in_l2_lkup",
                vec![
                    Rule::new(
                        50,
                        &[(Field::EthDst, MAC_A, ALL)],
                        vec![set(Field::Reg(REG_OUTPORT as u8), 1), Action::Output],
                        0x41,
                    ),
                    Rule::new(
                        50,
                        &[(Field::EthDst, MAC_B, ALL)],
                        vec![set(Field::Reg(REG_OUTPORT as u8), 2), Action::Output],
                        0x42,
                    ),
                ],
            )),
        ],
    };
    let egress = Pipeline {
        stages: vec![
            Arc::new(Stage::new(
                "ls_out_acl",
                vec![
                    Rule::new(100, &[ty(0x0800), proto(1)], vec![Action::Drop(DropReason::Explicit)], 0x51),
                    Rule::new(100, &[ty(0x0800), proto(6)], vec![Action::Drop(DropReason::Explicit)], 0x52),
                    Rule::new(0, &[], vec![Action::Next(1)], 0x50),
                ],
            )),
            Arc::new(Stage::new("ls_out_output", vec![Rule::new(0, &[], vec![Action::Output], 0x60)])),
        ],
    };
    let mut ports = BTreeMap::new();
    ports.insert(1, Binding::Local { port: 0, vlan: None });
    ports.insert(2, Binding::Local { port: 1, vlan: None });
    let mut port_names = BTreeMap::new();
    port_names.insert(1, "lp-a".to_owned());
    port_names.insert(2, "lp-b".to_owned());
    let dp = Datapath { key: 7, name: "ls7".into(), ingress, egress, ports, groups: BTreeMap::new(), port_names };
    let mut datapaths = BTreeMap::new();
    datapaths.insert(7, Arc::new(dp));
    Snapshot {
        meters: Vec::new(),
        vlan_ports: Default::default(),
        generation: 0,
        datapaths,
        local_ports: vec![Some(LocalPort { datapath: 7, port: 1 }), Some(LocalPort { datapath: 7, port: 2 })],
        chassis: vec![],
    }
}

#[test]
fn ns_is_answered_with_na_and_rejected_packets_with_icmp_and_rst() {
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
        .args(["--port", &port("a", 0, &fifo), "--port", &port("b", 1, &d.join("empty.pcap"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, socket: socket.clone() };
    // Read-write: never blocks on the FIFO (see tables.rs).
    let mut w = PcapWriter::new(std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap()).unwrap();

    let mut ctl = connect(&daemon.socket, "generate-test");
    assert_eq!(ctl.publish(SnapshotMsg::from(&switch())).unwrap(), 1);
    // Trace shows the generated packet.
    let t = ctl
        .trace(
            "a",
            "eth.src == 02:00:00:00:00:01 && eth.dst == 02:00:00:00:00:02 && ip4.src == 10.0.0.1 \
             && ip4.dst == 10.0.0.2 && udp.src == 5000 && udp.dst == 53",
        )
        .unwrap();
    let text = t.lines.join("\n");
    assert!(text.contains("reject {"), "{text}");
    assert_eq!(t.outputs.len(), 1, "{text}");
    let out = &t.outputs[0];
    assert!(out.contains("generated icmp4_unreach"), "{out}");
    assert!(out.contains("ip.src == 10.0.0.2") && out.contains("eth.dst == 02:00:00:00:00:01"), "{out}");
    drop(ctl);

    let input = [NS, DNS, UDP_OK, SYN, RST].map(unhex);
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

    // Byte for byte what pinctrl sends, back out of a, in order.
    assert_eq!(read_pcap(&d.join("a.out.pcap")), [NA, DNS_UNREACH, SYN_RST].map(unhex).to_vec());
    assert_eq!(read_pcap(&d.join("b.out.pcap")), vec![unhex(UDP_OK)], "only the permitted packet reaches b");

    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats_file).unwrap()).unwrap();
    assert_eq!(s["drops"]["generated"], 3, "NS, DNS and SYN were answered, not forwarded: {s}");
    assert_eq!(s["drops"]["reject_ignored"], 1, "the RST is not answered: {s}");
    assert_eq!(s["mbufs_leaked"], 0);
}
