//! The control socket end to end, without DPDK: the server on a real Unix
//! socket in a temporary directory, a fake node that runs the real
//! executor over a small logical switch, and the client library.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use petrel_dataplane::ctl::proto::{
    self, read_frame, write_frame, write_msg, BindingMsg, Change, DropsReply, ErrorCode, ErrorReply, FrameError, Hello,
    LogicalPortInfo, PipelineSel, PmdInfo, PmdStatsReply, PortInfo, PortStats, Request, Response, RuleMsg, ShowReply,
    SnapshotMsg, StatsReply, TablesReply, TraceReply, PROTOCOL_MAJOR,
};
use petrel_dataplane::ctl::server::{resolve_group, ServeError};
use petrel_dataplane::ctl::{render, serve, Client, ClientError, Node, SocketOpts};
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::table::{
    Action, Binding, Datapath, Field, LocalPort, Pipeline, RemoteChassis, Rule, Snapshot, Stage, REG_INPORT,
    REG_OUTPORT,
};

const MAC1: u128 = 0x0200_0000_0001;
const MAC2: u128 = 0x0200_0000_0002;
const MAC3: u128 = 0x0200_0000_0003;

fn inport(p: u32) -> (Field, u128, u128) {
    (Field::Reg(REG_INPORT as u8), u128::from(p), 0xffff_ffff)
}

fn set_outport(p: u32) -> Action {
    Action::Set { field: Field::Reg(REG_OUTPORT as u8), value: u128::from(p), mask: 0xffff_ffff }
}

/// One logical switch `ls1` (key 1): vm1 and vm2 on petreld ports 0 and 1
/// (vm2 a child port with tag 7), vm3 on chassis c0; port security on
/// ingress table 0, L2 lookup on table 1, one egress stage.
fn switch() -> Snapshot {
    let ingress = Pipeline {
        stages: vec![
            Arc::new(Stage::new(
                "ls_in_port_sec_l2",
                vec![
                    Rule::new(50, &[inport(1), (Field::EthSrc, MAC1, 0xffff_ffff_ffff)], vec![Action::Next(1)], 0xa1),
                    Rule::new(50, &[inport(2), (Field::EthSrc, MAC2, 0xffff_ffff_ffff)], vec![Action::Next(1)], 0xa2),
                    Rule::new(0, &[], vec![Action::Drop(DropReason::Explicit)], 0xa0),
                ],
            )),
            Arc::new(Stage::new(
                "ls_in_l2_lkup",
                vec![
                    Rule::new(50, &[(Field::EthDst, MAC2, u128::MAX)], vec![set_outport(2), Action::Output], 0xb2),
                    Rule::new(50, &[(Field::EthDst, MAC3, u128::MAX)], vec![set_outport(3), Action::Output], 0xb3),
                ],
            )),
        ],
    };
    let egress = Pipeline {
        stages: vec![Arc::new(Stage::new("ls_out_deliver", vec![Rule::new(0, &[], vec![Action::Output], 0xc0)]))],
    };
    let ports: BTreeMap<u32, Binding> = [
        (1, Binding::Local { port: 0, vlan: None }),
        (2, Binding::Local { port: 1, vlan: Some(7) }),
        (3, Binding::Remote { chassis: 0 }),
    ]
    .into_iter()
    .collect();
    let port_names = [(1, "vm1".to_owned()), (2, "vm2".to_owned()), (3, "vm3".to_owned())].into_iter().collect();
    let dp = Datapath { key: 1, name: "ls1".into(), ingress, egress, ports, groups: BTreeMap::new(), port_names };
    let s = Snapshot {
        meters: Vec::new(),
        vlan_ports: Default::default(),
        generation: 1,
        datapaths: [(1, Arc::new(dp))].into_iter().collect(),
        local_ports: vec![Some(LocalPort { datapath: 1, port: 1 }), Some(LocalPort { datapath: 1, port: 2 }), None],
        chassis: vec![RemoteChassis { name: "c0".into(), ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)) }],
    };
    s.validate().unwrap();
    s
}

/// A node with three ports (`p0`, `p1`, `up0`) and fixed counters that
/// runs the real executor over its current snapshot.
struct FakeNode {
    snap: Mutex<Snapshot>,
    ports: Vec<String>,
}

impl FakeNode {
    fn new() -> Arc<Self> {
        Arc::new(FakeNode { snap: Mutex::new(switch()), ports: vec!["p0".into(), "p1".into(), "up0".into()] })
    }

    fn port_infos(&self, s: &Snapshot) -> Vec<PortInfo> {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, n)| PortInfo {
                index: i as u16,
                name: n.clone(),
                kind: format!("dpdk net_null{i}"),
                state: "up".into(),
                iface_id: Some(format!("lp-{n}")),
                logical: render::logical_port(s, i as u16),
                stats: PortStats { rx_packets: 10 * i as u64, tx_packets: 3, ..PortStats::default() },
            })
            .collect()
    }
}

impl Node for FakeNode {
    fn generation(&self) -> u64 {
        self.snap.lock().unwrap().generation
    }
    fn show(&self) -> ShowReply {
        let s = self.snap.lock().unwrap();
        ShowReply {
            uplinks: Vec::new(),
            tunnels: Vec::new(),
            server: self.server_name(),
            uptime_secs: 12.0,
            generation: s.generation,
            n_datapaths: s.datapaths.len(),
            n_rules: render::n_rules(&s),
            n_pmds: 1,
            ports: self.port_infos(&s),
        }
    }
    fn pmd_stats(&self) -> PmdStatsReply {
        PmdStatsReply {
            tsc_hz: 1_000_000_000,
            pmds: vec![PmdInfo {
                index: 0,
                cpu: 1,
                busy_cycles: 3000,
                idle_cycles: 1000,
                sleep_cycles: 500,
                rx_bursts: 4,
                rx_packets: 100,
                layers: vec![
                    proto::LayerHits { name: "emc".into(), hits: 90 },
                    proto::LayerHits { name: "dpcls".into(), hits: 8 },
                ],
            }],
        }
    }
    fn dump_tables(&self, datapath: Option<&str>) -> Result<TablesReply, ErrorReply> {
        render::dump_tables(&self.snap.lock().unwrap(), datapath)
    }
    fn drops(&self) -> DropsReply {
        let mut c = [0u64; DropReason::COUNT];
        c[DropReason::StageMiss.index()] = 2;
        c[DropReason::Explicit.index()] = 5;
        DropsReply::from_counts(&c)
    }
    fn trace(&self, port: &str, packet: &str) -> Result<TraceReply, ErrorReply> {
        if port == "panic" {
            panic!("the fake node panics on request");
        }
        let index = self
            .ports
            .iter()
            .position(|p| p == port)
            .or_else(|| port.parse().ok().filter(|i| *i < self.ports.len()))
            .ok_or_else(|| ErrorReply::not_found(format!("no port {port:?}")))?;
        render::trace(&self.snap.lock().unwrap(), index as u16, port, packet, self.ports.clone())
    }
    fn publish(&self, snap: SnapshotMsg) -> Result<u64, ErrorReply> {
        let mut new = snap.to_snapshot().map_err(|e| ErrorReply::rejected(e.to_string()))?;
        let mut cur = self.snap.lock().unwrap();
        new.generation = cur.generation + 1;
        *cur = new;
        Ok(cur.generation)
    }
    fn apply(&self, changes: Vec<Change>) -> Result<u64, ErrorReply> {
        let mut cur = self.snap.lock().unwrap();
        let new = proto::apply_changes(&cur, &changes).map_err(|e| ErrorReply::rejected(e.to_string()))?;
        *cur = new;
        Ok(cur.generation)
    }
    fn stats(&self) -> StatsReply {
        let s = self.snap.lock().unwrap();
        StatsReply { generation: s.generation, ports: self.port_infos(&s), pmds: self.pmd_stats(), drops: self.drops() }
    }
}

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Running {
    fn start(opts: SocketOpts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/petrel/petreld.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = serve(&path, opts, FakeNode::new(), Arc::clone(&stop)).unwrap();
        Running { _dir: dir, path, stop, handle: Some(handle) }
    }

    fn client(&self) -> Client {
        Client::connect(&self.path, "test").unwrap()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends raw bytes on a fresh connection, returns the one response, and
/// checks the server then closes the connection.
fn raw_exchange(path: &Path, bytes: &[u8], half_close: bool) -> ErrorReply {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let f = read_frame(&mut s, proto::MAX_FRAME).unwrap();
    let r: Response = serde_json::from_slice(&f.body).unwrap();
    let Response::Error(e) = r else { panic!("expected an error reply, got {r:?}") };
    assert!(matches!(read_frame(&mut s, proto::MAX_FRAME), Err(FrameError::Closed)), "connection closed after {e:?}");
    e
}

fn frame(version: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_frame(&mut v, version, body).unwrap();
    v
}

#[test]
fn every_request_round_trips_through_the_socket() {
    let r = Running::start(SocketOpts::default());
    let mut c = r.client();
    let h = c.hello().clone();
    assert_eq!((h.major, h.generation), (PROTOCOL_MAJOR, 1));
    assert!(h.server.starts_with("petreld "));

    let show = c.show().unwrap();
    assert_eq!((show.n_datapaths, show.n_rules, show.ports.len()), (1, 6, 3));
    assert_eq!(
        show.ports[1].logical,
        Some(LogicalPortInfo { datapath: 1, datapath_name: "ls1".into(), port: 2, port_name: Some("vm2".into()) })
    );
    let text = render::show(&show);
    assert!(text.contains("   1 p1             up     ls1/vm2"), "{text}");
    assert!(text.contains("   2 up0            up     -"), "{text}");

    let pmd = render::pmd_stats(&c.pmd_stats().unwrap());
    assert!(pmd.contains("avg. packets per burst: 25.0"), "{pmd}");
    assert!(pmd.contains("emc hits: 90 (90.0%)"), "{pmd}");
    assert!(pmd.contains("answered by no layer: 2 (2.0%)"), "{pmd}");
    assert!(pmd.contains("busy cycles: 3000 (66.7%)"), "{pmd}");
    assert!(pmd.contains("sleep cycles: 500 (11.1%)"), "{pmd}");

    let drops = render::drops(&c.drops().unwrap());
    assert_eq!(drops.lines().collect::<Vec<_>>().len(), 3, "{drops}");
    assert!(drops.contains("stage_miss") && drops.contains("explicit") && drops.contains("total"));

    let t = c.dump_tables(Some("ls1")).unwrap();
    assert_eq!(t.datapaths[0].ingress[1].rules[0].actions, "outport = 2; output;");
    let e = c.dump_tables(Some("ls9")).unwrap_err();
    assert!(matches!(&e, ClientError::Remote(e) if e.code == ErrorCode::NotFound), "{e}");
    assert!(!e.is_unreachable());

    let st = c.stats().unwrap();
    assert_eq!((st.generation, st.ports.len(), st.drops.reasons.len()), (1, 3, DropReason::COUNT));
}

#[test]
fn trace_runs_the_executor_and_prints_each_stage_rule_and_action() {
    let r = Running::start(SocketOpts::default());
    let mut c = r.client();
    let t = c
        .trace(
            "p0",
            "eth.src == 02:00:00:00:00:01 && eth.dst == 02:00:00:00:00:02 && ip4.src == 10.0.0.1 && \
             ip4.dst == 10.0.0.2 && ip.ttl == 64 && udp.src == 5000 && udp.dst == 53",
        )
        .unwrap();
    assert_eq!(
        t.lines,
        vec![
            "ls1 ingress table 0 (ls_in_port_sec_l2): priority 50, cookie 0xa1: eth.src == 02:00:00:00:00:01 && inport == 1",
            "    next(1);",
            "    ls1 ingress table 1 (ls_in_l2_lkup): priority 50, cookie 0xb2: eth.dst == 02:00:00:00:00:02",
            "        outport = 2;",
            "        output;",
            "            ls1 egress table 0 (ls_out_deliver): priority 0, cookie 0xc0: 1",
            "                output;",
            "                    -> output to port 1 (p1) vlan 7",
        ]
    );
    assert_eq!(t.outputs, vec!["output to port 1 (p1) vlan 7"]);
    assert_eq!(t.drop, None);
    assert_eq!(t.generation, 1);
    assert!(
        t.flow.contains("eth.type == 0x0800")
            && t.flow.contains("ip.src == 10.0.0.1")
            && t.flow.contains("tp.dst == 53")
    );
    let text = render::trace_text(&t);
    assert!(text.ends_with("\nFinal: output to port 1 (p1) vlan 7\n"), "{text}");

    // Port security: vm1's port sending with vm2's MAC hits the drop rule.
    let t = c.trace("0", "eth.src == 02:00:00:00:00:02 && eth.dst == 02:00:00:00:00:01").unwrap();
    assert_eq!(
        t.lines,
        vec![
            "ls1 ingress table 0 (ls_in_port_sec_l2): priority 0, cookie 0xa0: 1",
            "    drop(explicit);",
            "    -> drop (explicit)",
        ]
    );
    assert!(render::trace_text(&t).contains("Final: dropped (explicit)"));
    // Unknown unicast misses; remote unicast tunnels; unbound port refused.
    let t = c.trace("p0", "eth.src == 02:00:00:00:00:01 && eth.dst == 02:00:00:00:00:09").unwrap();
    assert_eq!(t.lines[2], "    ls1 ingress table 1 (ls_in_l2_lkup): no rule matched");
    assert_eq!(t.drop.as_deref(), Some("stage_miss"));
    let t = c.trace("p1", "eth.src == 02:00:00:00:00:02 && eth.dst == 02:00:00:00:00:03").unwrap();
    assert_eq!(t.outputs, vec!["tunnel to chassis 0 vni 1 ingress 2 egress 3"]);
    let t = c.trace("up0", "eth.dst == 02:00:00:00:00:03").unwrap();
    assert_eq!(t.drop.as_deref(), Some("not_bound"));
    // inport, if given, must be the port's logical port.
    assert!(c.trace("p0", r#"inport == "vm1" && eth.src == 02:00:00:00:00:01"#).is_ok());
    let e = c.trace("p0", r#"inport == "vm2" && eth.src == 02:00:00:00:00:01"#).unwrap_err();
    assert!(e.to_string().contains("bound to \"vm1\""), "{e}");
    // Errors: bad microflow, unknown port. The connection stays usable.
    let e = c.trace("p0", "eth.src == 02:00:00:00:00:01 && ct.est == 1").unwrap_err();
    assert!(
        matches!(&e, ClientError::Remote(x) if x.code == ErrorCode::Rejected && x.message.contains("ct.est")),
        "{e}"
    );
    let e = c.trace("nope", "tcp").unwrap_err();
    assert!(matches!(&e, ClientError::Remote(x) if x.code == ErrorCode::NotFound), "{e}");
    // A handler that panics yields an internal error, not a dead server.
    let e = c.trace("panic", "tcp").unwrap_err();
    assert!(matches!(&e, ClientError::Remote(x) if x.code == ErrorCode::Internal), "{e}");
    assert_eq!(c.show().unwrap().generation, 1);
}

#[test]
fn publish_and_apply_change_what_trace_and_dump_see() {
    let r = Running::start(SocketOpts::default());
    let mut c = r.client();
    // Full snapshot: vm3 becomes local on port 2 (the fake renumbers generations).
    let mut s = switch();
    Arc::make_mut(s.datapaths.get_mut(&1).unwrap()).ports.insert(3, Binding::Local { port: 2, vlan: None });
    assert_eq!(c.publish(SnapshotMsg::from(&s)).unwrap(), 2);
    let t = c.trace("p1", "eth.src == 02:00:00:00:00:02 && eth.dst == 02:00:00:00:00:03").unwrap();
    assert_eq!(t.outputs, vec!["output to port 2 (up0)"]);
    // An invalid snapshot is refused and changes nothing.
    let mut bad = SnapshotMsg::from(&s);
    bad.datapaths[0].ports.push(proto::PortMsg {
        key: 9,
        name: None,
        binding: Some(BindingMsg::Remote { chassis: 4 }),
    });
    let e = c.publish(bad).unwrap_err();
    assert!(
        matches!(&e, ClientError::Remote(x) if x.code == ErrorCode::Rejected && x.message.contains("chassis 4")),
        "{e}"
    );
    assert_eq!(c.show().unwrap().generation, 2);
    // Incremental: a new L2 entry for MAC 09 to vm1, and the b3 rule removed.
    let rule = RuleMsg::from(&Rule::new(
        50,
        &[(Field::EthDst, 0x0200_0000_0009, u128::MAX)],
        vec![set_outport(1), Action::Output],
        0xb9,
    ));
    let g = c
        .apply(vec![
            Change::AddRule { datapath: 1, pipeline: PipelineSel::Ingress, stage: 1, rule },
            Change::RemoveRules { datapath: 1, pipeline: PipelineSel::Ingress, stage: 1, cookie: 0xb3 },
            Change::SetBinding {
                datapath: 1,
                port: 1,
                binding: Some(BindingMsg::Local { port: 0, vlan: None }),
                name: None,
            },
        ])
        .unwrap();
    assert_eq!(g, 3);
    let t = c.trace("p1", "eth.src == 02:00:00:00:00:02 && eth.dst == 02:00:00:00:00:09").unwrap();
    assert_eq!(t.outputs, vec!["output to port 0 (p0)"]);
    let cookies: Vec<u64> =
        c.dump_tables(None).unwrap().datapaths[0].ingress[1].rules.iter().map(|r| r.cookie).collect();
    assert_eq!(cookies, vec![0xb2, 0xb9]);
    // All or nothing.
    let e = c
        .apply(vec![
            Change::SetLocalPort { index: 2, port: None },
            Change::RemoveRules { datapath: 1, pipeline: PipelineSel::Egress, stage: 0, cookie: 0xdead },
        ])
        .unwrap_err();
    assert!(matches!(&e, ClientError::Remote(x) if x.code == ErrorCode::Rejected), "{e}");
    assert_eq!(c.hello().generation, 1, "hello is what the server said at connect time");
    assert_eq!(r.client().hello().generation, 3);
}

#[test]
fn broken_clients_get_an_error_and_lose_only_their_connection() {
    let opts = SocketOpts { frame_timeout: Duration::from_millis(300), ..SocketOpts::default() };
    let r = Running::start(opts);
    let mut good = r.client();
    let check_good = |good: &mut Client| assert_eq!(good.show().unwrap().ports.len(), 3);

    let e = raw_exchange(&r.path, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_eq!(e.code, ErrorCode::BadFrame);
    assert!(e.message.contains("bad magic"), "{}", e.message);
    check_good(&mut good);

    let mut huge = b"PTRL".to_vec();
    huge.extend_from_slice(&PROTOCOL_MAJOR.to_be_bytes());
    huge.extend_from_slice(&(proto::MAX_FRAME + 1).to_be_bytes());
    let e = raw_exchange(&r.path, &huge, false);
    assert_eq!(e.code, ErrorCode::TooLarge);
    check_good(&mut good);

    let e = raw_exchange(&r.path, &frame(PROTOCOL_MAJOR, b"{\"type\": \"show\""), false);
    assert_eq!(e.code, ErrorCode::BadRequest);
    check_good(&mut good);

    let e = raw_exchange(&r.path, &frame(PROTOCOL_MAJOR, br#"{"type":"format_disk"}"#), false);
    assert_eq!(e.code, ErrorCode::UnknownRequest);
    assert!(e.message.contains("format_disk"));
    check_good(&mut good);

    let e = raw_exchange(&r.path, &frame(PROTOCOL_MAJOR, br#"{"type":"trace","body":{"port":7}}"#), false);
    assert_eq!(e.code, ErrorCode::BadRequest);
    check_good(&mut good);

    // A frame cut short by the client closing its side.
    let mut cut = frame(PROTOCOL_MAJOR, br#"{"type":"show"}"#);
    cut.truncate(cut.len() - 3);
    let e = raw_exchange(&r.path, &cut, true);
    assert_eq!(e.code, ErrorCode::BadFrame);
    check_good(&mut good);

    // A client that sends half a frame and stalls is cut off by the frame timeout.
    let t0 = Instant::now();
    let e = raw_exchange(&r.path, b"PTRL\x00", false);
    assert_eq!(e.code, ErrorCode::BadFrame);
    assert!(e.message.contains("timed out"), "{}", e.message);
    assert!(t0.elapsed() < Duration::from_secs(3));
    check_good(&mut good);

    // Well-formed requests after an error on another connection still work,
    // and several in a row on one connection stay in step.
    for _ in 0..3 {
        check_good(&mut good);
        assert_eq!(good.drops().unwrap().reasons.len(), DropReason::COUNT);
    }
}

#[test]
fn incompatible_versions_are_refused_and_closed() {
    let r = Running::start(SocketOpts::default());
    // In the frame header.
    let e = raw_exchange(&r.path, &frame(PROTOCOL_MAJOR + 1, br#"{"type":"show"}"#), false);
    assert_eq!(e.code, ErrorCode::IncompatibleVersion);
    // In the hello body.
    let hello =
        serde_json::to_vec(&Request::Hello(Hello { major: PROTOCOL_MAJOR + 1, minor: 0, client: "future".into() }))
            .unwrap();
    let e = raw_exchange(&r.path, &frame(PROTOCOL_MAJOR, &hello), false);
    assert_eq!(e.code, ErrorCode::IncompatibleVersion);
    assert!(e.message.contains(&format!("{}.x", PROTOCOL_MAJOR + 1)), "{}", e.message);
    // A compatible one is fine, with or without hello first.
    let mut s = UnixStream::connect(&r.path).unwrap();
    write_msg(&mut s, &Request::Drops).unwrap();
    let f = read_frame(&mut s, proto::MAX_FRAME).unwrap();
    assert!(matches!(serde_json::from_slice(&f.body).unwrap(), Response::Ok(proto::Reply::Drops(_))));
}

#[test]
fn socket_is_created_with_mode_and_group_and_removed_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    let path = dir.path().join("a/b/ctl.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let opts = SocketOpts { group: Some(gid.to_string()), ..SocketOpts::default() };
    let h = serve(&path, opts, FakeNode::new(), Arc::clone(&stop)).unwrap();
    let md = std::fs::symlink_metadata(&path).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o660);
    assert_eq!(md.gid(), gid);
    assert_eq!(std::fs::metadata(dir.path().join("a/b")).unwrap().permissions().mode() & 0o777, 0o750);
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path().join("a/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("ctl.sock")], "no temporary socket left behind");
    // A second server on the same path refuses while the first is live.
    let stop2 = Arc::new(AtomicBool::new(false));
    let e = serve(&path, SocketOpts::default(), FakeNode::new(), stop2).unwrap_err();
    assert!(matches!(e, ServeError::InUse(_)), "{e}");
    assert!(Client::connect(&path, "t").is_ok(), "the first server is unharmed");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert!(!path.exists(), "socket removed on stop");
    let e = Client::connect(&path, "t").unwrap_err();
    assert!(e.is_unreachable());
    assert!(e.to_string().contains("petreld is not running"), "{e}");
    assert!(e.to_string().contains("ctl.sock"), "{e}");

    assert!(matches!(
        serve(
            &path,
            SocketOpts { group: Some("no-such-group-xyz".into()), ..SocketOpts::default() },
            FakeNode::new(),
            Arc::new(AtomicBool::new(false))
        ),
        Err(ServeError::UnknownGroup(_))
    ));
    assert_eq!(resolve_group("0").unwrap(), 0);
    if std::fs::read_to_string("/etc/group").unwrap_or_default().starts_with("root:") {
        assert_eq!(resolve_group("root").unwrap(), 0);
    }
}

#[test]
fn stale_sockets_are_replaced_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("petreld.sock");
    // A socket left behind by a dead server: nobody listens on it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let e = Client::connect(&path, "t").unwrap_err();
    assert!(e.to_string().contains("stale socket"), "{e}");
    let stop = Arc::new(AtomicBool::new(false));
    let h = serve(&path, SocketOpts::default(), FakeNode::new(), Arc::clone(&stop)).unwrap();
    assert!(Client::connect(&path, "t").is_ok());
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    // A regular file is never removed.
    std::fs::write(&path, b"precious").unwrap();
    let e = serve(&path, SocketOpts::default(), FakeNode::new(), Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(matches!(e, ServeError::NotASocket(_)), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn idle_connections_and_excess_clients_are_bounded() {
    let opts = SocketOpts { idle_timeout: Duration::from_millis(300), max_clients: 2, ..SocketOpts::default() };
    let r = Running::start(opts);
    let mut a = r.client();
    let _b = r.client();
    // A third connection is told the server is busy.
    let mut s = UnixStream::connect(&r.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let f = read_frame(&mut s, proto::MAX_FRAME).unwrap();
    let resp: Response = serde_json::from_slice(&f.body).unwrap();
    assert!(matches!(resp, Response::Error(ErrorReply { code: ErrorCode::Busy, .. })), "{resp:?}");
    // Idle connections are closed, freeing their slots.
    std::thread::sleep(Duration::from_millis(700));
    let e = a.show().unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    let mut c = r.client();
    assert_eq!(c.show().unwrap().generation, 1);
    let mut buf = [0u8; 1];
    let mut s = UnixStream::connect(&r.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(s.read(&mut buf).unwrap(), 0, "an idle raw connection is closed without a word");
}

#[test]
fn stop_ends_open_connections_promptly() {
    let mut r = Running::start(SocketOpts::default());
    let mut c = r.client();
    let t0 = Instant::now();
    r.stop();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(c.show().unwrap_err().is_unreachable());
    assert!(!r.path.exists());
}

/// Serves the fake node on `$PETREL_TEST_SOCKET` for `$PETREL_TEST_SECS`
/// seconds (default 30), to try `petrelctl` by hand:
/// `PETREL_TEST_SOCKET=/tmp/p.sock cargo test -p petrel-dataplane
/// --no-default-features --test ctl -- --ignored serve_fake_node`.
#[test]
#[ignore = "manual: serves a fake node for petrelctl"]
fn serve_fake_node_for_petrelctl() {
    let path = PathBuf::from(std::env::var("PETREL_TEST_SOCKET").unwrap_or_else(|_| "/tmp/petrel-test.sock".into()));
    let secs = std::env::var("PETREL_TEST_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let stop = Arc::new(AtomicBool::new(false));
    let h = serve(&path, SocketOpts::default(), FakeNode::new(), Arc::clone(&stop)).unwrap();
    eprintln!("serving a fake node on {} for {secs} s", path.display());
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}
