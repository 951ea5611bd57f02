//! Unit tests of framing, message shapes, the snapshot wire form and
//! incremental changes. Socket behaviour is tested in `tests/ctl.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::proto::*;
use super::render;
use super::server::decode;
use crate::drop::DropReason;
use crate::table::{Action, Binding, Datapath, Field, LocalPort, Pipeline, RemoteChassis, Rule, Snapshot, Stage};

fn frame_bytes<T: serde::Serialize>(m: &T) -> Vec<u8> {
    let mut v = Vec::new();
    write_msg(&mut v, m).unwrap();
    v
}

#[test]
fn frame_header_layout_and_round_trip() {
    let b = frame_bytes(&Request::Show);
    assert_eq!(&b[..4], b"PTRL");
    assert_eq!(u16::from_be_bytes([b[4], b[5]]), PROTOCOL_MAJOR);
    let len = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
    assert_eq!(len as usize, b.len() - HEADER_LEN);
    assert_eq!(&b[HEADER_LEN..], br#"{"type":"show"}"#, "readable with socat");
    let f = read_frame(&mut Cursor::new(&b), MAX_FRAME).unwrap();
    assert_eq!(f.version, PROTOCOL_MAJOR);
    assert_eq!(decode(&f.body).unwrap(), Request::Show);
}

#[test]
fn frame_errors() {
    assert!(matches!(read_frame(&mut Cursor::new(&[][..]), MAX_FRAME), Err(FrameError::Closed)));
    assert!(matches!(read_frame(&mut Cursor::new(&b"PTR"[..]), MAX_FRAME), Err(FrameError::Truncated)));
    assert!(matches!(
        read_frame(&mut Cursor::new(&b"GET / HTTP/1.1\r\n"[..]), MAX_FRAME),
        Err(FrameError::BadMagic(m)) if &m == b"GET "
    ));
    let mut huge = Vec::new();
    huge.extend_from_slice(b"PTRL\x00\x01");
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(read_frame(&mut Cursor::new(&huge), MAX_FRAME), Err(FrameError::TooLarge(u32::MAX, MAX_FRAME))));
    let mut short = frame_bytes(&Request::Drops);
    short.pop();
    assert!(matches!(read_frame(&mut Cursor::new(&short), MAX_FRAME), Err(FrameError::Truncated)));
    let ok = frame_bytes(&Request::Drops);
    assert!(matches!(read_frame(&mut Cursor::new(&ok), 3), Err(FrameError::TooLarge(_, 3))), "per-call limit");
}

#[test]
fn decode_tells_bad_json_from_unknown_and_invalid_requests() {
    assert_eq!(decode(b"{not json").unwrap_err().code, ErrorCode::BadRequest);
    assert_eq!(decode(br#"{"type":"reboot"}"#).unwrap_err().code, ErrorCode::UnknownRequest);
    assert_eq!(decode(br#"{"kind":"show"}"#).unwrap_err().code, ErrorCode::BadRequest);
    assert_eq!(decode(br#"[1,2]"#).unwrap_err().code, ErrorCode::BadRequest);
    let e = decode(br#"{"type":"trace","body":{"port":"p0"}}"#).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("packet"), "{}", e.message);
    assert_eq!(
        decode(br#"{"type":"dump_tables","body":{"datapath":"ls1"}}"#).unwrap(),
        Request::DumpTables { datapath: Some("ls1".into()) }
    );
    assert_eq!(
        decode(br#"{"type":"hello","body":{"major":1,"minor":7}}"#).unwrap(),
        Request::Hello(Hello { major: 1, minor: 7, client: String::new() }),
        "unknown/missing fields tolerated"
    );
}

fn rt<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let s = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&s).unwrap();
    assert_eq!(&back, v, "{s}");
}

fn sample() -> Snapshot {
    let inport = |p: u32| (Field::Reg(14), u128::from(p), 0xffff_ffff);
    let set_out = |p: u32| Action::Set { field: Field::Reg(15), value: u128::from(p), mask: 0xffff_ffff };
    let ingress = Pipeline {
        stages: vec![
            Arc::new(Stage::new(
                "ls_in_port_sec_l2",
                vec![
                    Rule::new(
                        50,
                        &[inport(1), (Field::EthSrc, 0x0200_0000_0001, 0xffff_ffff_ffff)],
                        vec![Action::Next(1)],
                        0xa1,
                    ),
                    Rule::new(0, &[], vec![Action::Drop(DropReason::Explicit)], 0xa0),
                ],
            )),
            Arc::new(Stage::new(
                "ls_in_l2_lkup",
                vec![
                    Rule::new(
                        50,
                        &[(Field::EthDst, 0x0200_0000_0002, u128::MAX), (Field::IpDst, 0xffff_0a00_0000, !0xff)],
                        vec![
                            set_out(2),
                            Action::Clone(Arc::from(vec![Action::Mirror(3), Action::Output])),
                            Action::SlowPath(crate::table::SlowPathReason::Learn),
                            Action::Set { field: Field::IpTtl, value: 63, mask: 0xff },
                            Action::Move { src: Field::Reg(0), dst: Field::Reg(1) },
                            Action::Exchange(Field::EthSrc, Field::EthDst),
                            Action::PushVlan(7),
                            Action::PopVlan,
                            Action::Meter(9),
                            Action::Output,
                        ],
                        0xb2,
                    ),
                    Rule::new(
                        50,
                        &[(Field::EthDst, 0x0200_0000_0003, u128::MAX)],
                        vec![set_out(3), Action::Output],
                        0xb3,
                    ),
                ],
            )),
        ],
    };
    let egress =
        Pipeline { stages: vec![Arc::new(Stage::new("ls_out", vec![Rule::new(0, &[], vec![Action::Output], 0xc0)]))] };
    let mut ports = BTreeMap::new();
    ports.insert(1, Binding::Local { port: 0, vlan: None });
    ports.insert(2, Binding::Local { port: 1, vlan: Some(7) });
    ports.insert(3, Binding::Remote { chassis: 0 });
    ports.insert(4, Binding::Localnet { uplink: 2, vlan: Some(100) });
    let mut port_names = BTreeMap::new();
    port_names.insert(1, "vm1".to_owned());
    port_names.insert(9, "unbound".to_owned());
    let mut groups = BTreeMap::new();
    groups.insert(32768, Arc::from(vec![1, 2, 3]));
    let dp = Datapath { key: 1, name: "ls1".into(), ingress, egress, ports, groups, port_names };
    let meter = |name: &str, unit| Some(crate::table::Meter { name: name.into(), rate: 1000, burst: 80, unit });
    let mut meters = vec![None; 10];
    meters[9] = meter("set_meter ingress table 10 priority 100 match 1", crate::qos::Unit::Bits);
    meters[2] = meter("copp", crate::qos::Unit::Packets);
    let snap = Snapshot {
        meters,
        vlan_ports: Default::default(),
        generation: 5,
        datapaths: [(1, Arc::new(dp))].into_iter().collect(),
        local_ports: vec![Some(LocalPort { datapath: 1, port: 1 }), None],
        chassis: vec![RemoteChassis { name: "c0".into(), ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)) }],
    };
    snap.validate().unwrap();
    snap
}

fn same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.generation, b.generation);
    assert_eq!(a.local_ports, b.local_ports);
    assert_eq!(a.chassis, b.chassis);
    assert_eq!(a.meters, b.meters);
    assert_eq!(a.datapaths.len(), b.datapaths.len());
    for (k, x) in &a.datapaths {
        let y = &b.datapaths[k];
        assert_eq!(
            (x.key, &x.name, &x.ports, &x.groups, &x.port_names),
            (y.key, &y.name, &y.ports, &y.groups, &y.port_names)
        );
        for (p, q) in [(&x.ingress, &y.ingress), (&x.egress, &y.egress)] {
            assert_eq!(p.stages.len(), q.stages.len());
            for (s, t) in p.stages.iter().zip(&q.stages) {
                assert_eq!(s.name, t.name);
                assert_eq!(s.rules(), t.rules());
            }
        }
    }
}

#[test]
fn snapshot_wire_form_round_trips_through_json() {
    let s = sample();
    let msg = SnapshotMsg::from(&s);
    let json = serde_json::to_string(&Request::PublishSnapshot(msg.clone())).unwrap();
    assert!(json.contains(r#""reason":"explicit""#), "drop reasons by name");
    assert!(json.contains(r#""value":"0x3f""#), "u128 as hex strings");
    assert!(json.contains(r#""name":"copp","rate":1000,"burst":80,"unit":"packets""#), "meters: {json}");
    let Request::PublishSnapshot(back) = decode(json.as_bytes()).unwrap() else { panic!() };
    assert_eq!(back, msg);
    same(&back.to_snapshot().unwrap(), &s);
    // Only words with a non-zero mask travel.
    let r0 = &msg.datapaths[0].ingress[0].rules[0];
    assert!(r0.matches.len() <= 3, "{:?}", r0.matches);
}

#[test]
fn snapshot_wire_form_refuses_bad_input() {
    let mut m = SnapshotMsg::from(&sample());
    m.datapaths[0].ingress[0].rules[0].matches.push(MatchWord { word: 999, value: 1, mask: 1 });
    assert!(matches!(m.to_snapshot(), Err(ConvertError::BadWord(999, _))));
    let mut m = SnapshotMsg::from(&sample());
    m.datapaths[0].ingress[0].rules[0].actions = vec![ActionMsg::Drop { reason: "because".into() }];
    assert_eq!(m.to_snapshot().unwrap_err(), ConvertError::UnknownDropReason("because".into()));
    let mut m = SnapshotMsg::from(&sample());
    m.datapaths[0].egress[0].rules[0].actions = vec![ActionMsg::Set { field: FieldMsg::Reg(16), value: 0, mask: 0 }];
    assert_eq!(m.to_snapshot().unwrap_err(), ConvertError::BadRegister(16));
    let mut m = SnapshotMsg::from(&sample());
    m.datapaths.push(m.datapaths[0].clone());
    assert_eq!(m.to_snapshot().unwrap_err(), ConvertError::DuplicateDatapath(1));
    let mut m = SnapshotMsg::from(&sample());
    m.datapaths[0].ingress[1].rules[0].actions = vec![ActionMsg::Next { stage: 0 }];
    assert!(matches!(m.to_snapshot(), Err(ConvertError::Invalid(_))), "validated");
}

#[test]
fn every_message_round_trips() {
    rt(&Request::Hello(Hello::new("t")));
    for r in [Request::Show, Request::PmdStats, Request::Drops, Request::Stats, Request::DumpTables { datapath: None }]
    {
        rt(&r);
    }
    rt(&Request::Trace { port: "p0".into(), packet: "udp".into() });
    rt(&Request::ApplyChanges(vec![
        Change::SetLocalPort { index: 3, port: Some(LocalPortMsg { datapath: 1, port: 2 }) },
        Change::SetBinding { datapath: 1, port: 2, binding: None, name: Some("x".into()) },
        Change::RemoveRules { datapath: 1, pipeline: PipelineSel::Egress, stage: 0, cookie: 7 },
    ]));
    rt(&Response::Error(ErrorReply::new(ErrorCode::NotFound, "x")));
    rt(&Response::Ok(Reply::Generation(7)));
    rt(&Response::Ok(Reply::Drops(DropsReply::from_counts(&[1, 2]))));
    rt(&Response::Ok(Reply::Tables(render::dump_tables(&sample(), None).unwrap())));
    for c in [ErrorCode::BadFrame, ErrorCode::IncompatibleVersion, ErrorCode::NotFound, ErrorCode::Internal] {
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.name()), "name() is the wire name");
    }
    assert_eq!(ErrorReply::not_found("no port").to_string(), "no port [not_found]");
    let err = serde_json::to_string(&Response::Error(ErrorReply::new(ErrorCode::TooLarge, "m"))).unwrap();
    assert_eq!(err, r#"{"status":"error","body":{"code":"too_large","message":"m"}}"#);
}

#[test]
fn drops_reply_lists_every_reason_by_name() {
    let mut c = vec![0u64; DropReason::COUNT];
    c[DropReason::StageMiss.index()] = 4;
    let d = DropsReply::from_counts(&c);
    assert_eq!(d.reasons.len(), DropReason::COUNT);
    assert_eq!(d.reasons[DropReason::StageMiss.index()], DropCount { reason: "stage_miss".into(), count: 4 });
    let text = render::drops(&d);
    assert_eq!(text, format!("{:<28} {:>14}\n{:<28} {:>14}\n", "stage_miss", 4, "total", 4));
}

#[test]
fn changes_apply_all_or_nothing_and_share_what_they_do_not_touch() {
    let base = sample();
    let rule =
        RuleMsg::from(&Rule::new(60, &[(Field::EthDst, 0x0200_0000_0009, u128::MAX)], vec![Action::Output], 0xd1));
    let s = apply_changes(
        &base,
        &[
            Change::AddRule { datapath: 1, pipeline: PipelineSel::Ingress, stage: 1, rule },
            Change::RemoveRules { datapath: 1, pipeline: PipelineSel::Ingress, stage: 1, cookie: 0xb3 },
            Change::SetBinding {
                datapath: 1,
                port: 5,
                binding: Some(BindingMsg::Remote { chassis: 0 }),
                name: Some("vm5".into()),
            },
            Change::SetLocalPort { index: 4, port: Some(LocalPortMsg { datapath: 1, port: 2 }) },
        ],
    )
    .unwrap();
    assert_eq!(s.generation, base.generation + 1);
    let dp = &s.datapaths[&1];
    let cookies: Vec<u64> = dp.ingress.stages[1].rules().iter().map(|r| r.cookie).collect();
    assert_eq!(cookies, vec![0xd1, 0xb2], "added by priority, removed by cookie");
    assert!(Arc::ptr_eq(&dp.ingress.stages[0], &base.datapaths[&1].ingress.stages[0]), "untouched stage shared");
    assert!(Arc::ptr_eq(&dp.egress.stages[0], &base.datapaths[&1].egress.stages[0]));
    assert_eq!(dp.ports[&5], Binding::Remote { chassis: 0 });
    assert_eq!(dp.port_names[&5], "vm5");
    assert_eq!(s.local_ports.len(), 5);
    assert_eq!(s.local_ports[4], Some(LocalPort { datapath: 1, port: 2 }));

    let e = apply_changes(
        &base,
        &[Change::RemoveRules { datapath: 1, pipeline: PipelineSel::Egress, stage: 0, cookie: 1 }],
    );
    assert_eq!(e.unwrap_err(), ConvertError::NoRule(1, "egress", 0, 1));
    let e = apply_changes(&base, &[Change::SetBinding { datapath: 8, port: 1, binding: None, name: None }]);
    assert_eq!(e.unwrap_err(), ConvertError::NoDatapath(8));
    let bad = RuleMsg::from(&Rule::new(1, &[], vec![Action::Next(0)], 1));
    let e =
        apply_changes(&base, &[Change::AddRule { datapath: 1, pipeline: PipelineSel::Ingress, stage: 1, rule: bad }]);
    assert!(matches!(e, Err(ConvertError::Invalid(_))), "validated: {e:?}");
    let e = apply_changes(
        &base,
        &[Change::AddRule {
            datapath: 1,
            pipeline: PipelineSel::Egress,
            stage: 3,
            rule: RuleMsg::from(&Rule::new(1, &[], vec![], 1)),
        }],
    );
    assert_eq!(e.unwrap_err(), ConvertError::NoStage(1, "egress", 3));
    let e = apply_changes(
        &base,
        &[Change::SetBinding { datapath: 1, port: 7, binding: Some(BindingMsg::Remote { chassis: 9 }), name: None }],
    );
    assert!(matches!(e, Err(ConvertError::Invalid(_))), "unknown chassis refused");
}

#[test]
fn matches_and_actions_render_ovn_like() {
    let s = sample();
    let t = render::dump_tables(&s, Some("ls1")).unwrap();
    let st = &t.datapaths[0].ingress[1];
    assert_eq!(st.rules[0].matches, "eth.dst == 02:00:00:00:00:02 && ip.dst == 10.0.0.0/24");
    assert_eq!(
        st.rules[0].actions,
        "outport = 2; clone { mirror(3); output; }; slow_path(learn); ip.ttl = 63; reg1 = reg0; \
         eth.src <-> eth.dst; push_vlan(vid=7, pcp=0); pop_vlan; meter(9); output;"
    );
    assert_eq!(t.datapaths[0].ingress[0].rules[0].matches, "eth.src == 02:00:00:00:00:01 && inport == 1");
    assert_eq!(t.datapaths[0].ingress[0].rules[1].matches, "1");
    assert_eq!(
        t.datapaths[0].ports,
        vec![
            "1 vm1 -> local port 0",
            "2  -> local port 1 vlan 7",
            "3  -> chassis 0 (c0 192.0.2.10)",
            "4  -> localnet uplink 2 vlan 100",
            "9 unbound -> unbound",
        ]
    );
    assert_eq!(t.datapaths[0].groups, vec!["32768 -> 1, 2, 3"]);
    assert_eq!(t.local_ports, vec!["0 -> datapath 1 port 1"]);
    assert_eq!(render::dump_tables(&s, Some("1")).unwrap().datapaths.len(), 1, "by key");
    assert_eq!(render::dump_tables(&s, Some("nope")).unwrap_err().code, ErrorCode::NotFound);
    let text = render::tables(&t);
    assert!(
        text.contains("  ingress table 1 (ls_in_l2_lkup):\n    priority=50    cookie=0xb2  match=(eth.dst"),
        "{text}"
    );
    // A masked integer and an arbitrary (non-prefix) IP mask.
    let r = Rule::new(1, &[(Field::Reg(10), 4, 4), (Field::IpSrc, 0xffff_0a00_0001, u128::MAX ^ 0xff00)], vec![], 0);
    assert_eq!(render::fmt_match(&r), "ip.src == 10.0.0.1/255.255.0.255 && flags == 0x4/0x4");
    let r = Rule::new(1, &[(Field::IpDst, 0xfe80 << 112, u128::MAX << 64)], vec![], 0);
    assert_eq!(render::fmt_match(&r), "ip.dst == fe80::/64");
    assert_eq!(render::n_rules(&s), 5);
    let lp = render::logical_port(&s, 0).unwrap();
    assert_eq!((lp.datapath_name.as_str(), lp.port_name.as_deref()), ("ls1", Some("vm1")));
    assert_eq!(render::logical_port(&s, 1), None);
}

#[test]
fn a_30k_rule_snapshot_is_a_few_megabytes_of_json() {
    // DESIGN.md's larger control-plane scale: ~30k logical flows.
    let mut s = sample();
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    let rules: Vec<Rule> = (0..30_000u32)
        .map(|i| {
            Rule::new(
                100 + i % 7,
                &[
                    (Field::Reg(14), u128::from(i % 500), 0xffff_ffff),
                    (Field::EthDst, 0x0200_0000_0000 | u128::from(i), u128::MAX),
                    (Field::IpDst, 0xffff_0a00_0000 | u128::from(i), u128::MAX),
                ],
                vec![Action::Set { field: Field::Reg(15), value: u128::from(i), mask: 0xffff_ffff }, Action::Next(1)],
                u64::from(i) << 32,
            )
        })
        .collect();
    dp.ingress.stages[0] = Arc::new(Stage::new("big", rules));
    let t0 = std::time::Instant::now();
    let json = serde_json::to_vec(&Request::PublishSnapshot(SnapshotMsg::from(&s))).unwrap();
    let Request::PublishSnapshot(back) = decode(&json).unwrap() else { panic!() };
    let snap = back.to_snapshot().unwrap();
    assert_eq!(snap.datapaths[&1].ingress.stages[0].rules().len(), 30_000);
    let mb = json.len() as f64 / 1e6;
    eprintln!("30k rules: {mb:.1} MB of JSON, encode+decode+convert {:?} (debug build)", t0.elapsed());
    assert!(json.len() < 16 << 20, "{mb} MB");
}
