//! Executor tests on a hand-built logical switch (the shape ovn-northd
//! gives one: port security, L2 lookup with a flood group, egress output).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::exec::{self, run_from_port, run_from_tunnel, Emit, NoTrace, Outcome, Target, TraceEvent, Tracer};
use super::*;
use crate::drop::DropReason;
use crate::flow::FlowKey;

const MAC1: u128 = 0x0200_0000_0001;
const MAC2: u128 = 0x0200_0000_0002;
const MAC3: u128 = 0x0200_0000_0003;
const FLOOD: u32 = 32768;
const ALL: u128 = u128::MAX;

fn inport(p: u32) -> (Field, u128, u128) {
    (Field::Reg(REG_INPORT as u8), u128::from(p), 0xffff_ffff)
}

fn set_outport(p: u32) -> Action {
    Action::Set { field: Field::Reg(REG_OUTPORT as u8), value: u128::from(p), mask: 0xffff_ffff }
}

/// Datapath 1: ports 1, 2 local (petreld ports 0, 1); 3, 4 on chassis 0;
/// 5 on chassis 1; flood group 32768 has all five.
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
                    // eth.mcast: the group bit of the first byte of eth.dst.
                    Rule::new(
                        70,
                        &[(Field::EthDst, 0x0100_0000_0000, 0x0100_0000_0000)],
                        vec![set_outport(FLOOD), Action::Output],
                        0xb0,
                    ),
                    Rule::new(50, &[(Field::EthDst, MAC1, ALL)], vec![set_outport(1), Action::Output], 0xb1),
                    Rule::new(50, &[(Field::EthDst, MAC2, ALL)], vec![set_outport(2), Action::Output], 0xb2),
                    Rule::new(50, &[(Field::EthDst, MAC3, ALL)], vec![set_outport(3), Action::Output], 0xb3),
                ],
            )),
        ],
    };
    let egress = Pipeline {
        stages: vec![Arc::new(Stage::new("ls_out_deliver", vec![Rule::new(0, &[], vec![Action::Output], 0xc0)]))],
    };
    let mut ports = BTreeMap::new();
    ports.insert(1, Binding::Local { port: 0, vlan: None });
    ports.insert(2, Binding::Local { port: 1, vlan: Some(7) });
    ports.insert(3, Binding::Remote { chassis: 0 });
    ports.insert(4, Binding::Remote { chassis: 0 });
    ports.insert(5, Binding::Remote { chassis: 1 });
    let mut groups = BTreeMap::new();
    groups.insert(FLOOD, Arc::from(vec![1, 2, 3, 4, 5]));
    let dp = Datapath { key: 1, name: "ls1".into(), ingress, egress, ports, groups, port_names: BTreeMap::new() };
    let mut datapaths = BTreeMap::new();
    datapaths.insert(1, Arc::new(dp));
    let snap = Snapshot {
        meters: Vec::new(),
        vlan_ports: Default::default(),
        generation: 1,
        datapaths,
        local_ports: vec![Some(LocalPort { datapath: 1, port: 1 }), Some(LocalPort { datapath: 1, port: 2 }), None],
        chassis: vec![
            RemoteChassis { name: "c0".into(), ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)) },
            RemoteChassis { name: "c1".into(), ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)) },
        ],
    };
    snap.validate().unwrap();
    snap
}

fn flow(src: u128, dst: u128) -> FlowKey {
    let mut k = Key::default();
    Field::EthSrc.set(&mut k, src, ALL);
    Field::EthDst.set(&mut k, dst, ALL);
    k.flow.dl_type = 0x0800;
    k.flow
}

fn targets(o: &Outcome) -> Vec<Target> {
    o.emits().iter().map(|e| e.target).collect()
}

#[test]
fn unicast_between_local_ports_runs_both_pipelines() {
    let s = switch();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &flow(MAC1, MAC2), &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Local { port: 1, vlan: Some(7) }]);
    let e: &Emit = &o.emits()[0];
    assert_eq!((e.key.inport(), e.key.outport(), e.key.datapath()), (1, 2, 1));
    assert_eq!(o.steps, 3, "port security, L2 lookup, egress");
}

#[test]
fn port_security_violation_is_dropped_with_the_rules_reason() {
    let s = switch();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &flow(MAC2, MAC1), &mut o, &mut NoTrace);
    assert!(o.is_drop());
    assert_eq!(o.drop, Some(DropReason::Explicit));
}

#[test]
fn unknown_unicast_misses_and_unbound_port_is_refused() {
    let s = switch();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &flow(MAC1, 0x0200_0000_0099), &mut o, &mut NoTrace);
    assert_eq!(o.drop, Some(DropReason::StageMiss));
    run_from_port(&s, 2, &flow(MAC1, MAC2), &mut o, &mut NoTrace);
    assert_eq!(o.drop, Some(DropReason::NotBound));
    run_from_port(&s, 9, &flow(MAC1, MAC2), &mut o, &mut NoTrace);
    assert_eq!(o.drop, Some(DropReason::NotBound));
}

#[test]
fn flood_reaches_each_local_member_once_and_each_remote_chassis_once() {
    let s = switch();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &flow(MAC1, 0xffff_ffff_ffff), &mut o, &mut NoTrace);
    let t = targets(&o);
    assert_eq!(
        t,
        vec![
            Target::Local { port: 1, vlan: Some(7) },
            Target::Tunnel { chassis: 0, vni: 1, ingress: 1, egress: FLOOD as u16 },
            Target::Tunnel { chassis: 1, vni: 1, ingress: 1, egress: FLOOD as u16 },
        ],
        "member 1 is the inport (loopback), 3 and 4 share chassis 0"
    );
    assert_eq!(o.drop, Some(DropReason::Loopback), "the inport branch was dropped, the packet was not");
    assert!(!o.is_drop());
}

#[test]
fn remote_unicast_goes_through_a_tunnel_carrying_both_keys() {
    let s = switch();
    let mut o = Outcome::default();
    run_from_port(&s, 1, &flow(MAC2, MAC3), &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Tunnel { chassis: 0, vni: 1, ingress: 2, egress: 3 }]);
}

#[test]
fn tunnel_traffic_skips_ingress_and_only_reaches_local_ports() {
    let s = switch();
    let mut o = Outcome::default();
    run_from_tunnel(&s, 1, 3, 2, &flow(MAC3, MAC2), &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Local { port: 1, vlan: Some(7) }]);
    assert_eq!(o.steps, 1, "only the egress stage ran");
    run_from_tunnel(&s, 1, 3, FLOOD as u16, &flow(MAC3, 0xffff_ffff_ffff), &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Local { port: 0, vlan: None }, Target::Local { port: 1, vlan: Some(7) }]);
    run_from_tunnel(&s, 1, 3, 5, &flow(MAC3, MAC2), &mut o, &mut NoTrace);
    assert_eq!(o.drop, Some(DropReason::NoBinding), "never relayed to another chassis");
    run_from_tunnel(&s, 77, 3, 2, &flow(MAC3, MAC2), &mut o, &mut NoTrace);
    assert_eq!(o.drop, Some(DropReason::UnknownDatapath));
}

#[test]
fn clone_works_on_a_copy_and_changes_after_next_persist() {
    let mut s = switch();
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    // Stage 0 for port 1: clone(eth.dst = MAC2; next) then eth.dst = MAC3; next.
    dp.ingress.stages[0] = Arc::new(Stage::new(
        "s0",
        vec![Rule::new(
            10,
            &[inport(1)],
            vec![
                Action::Clone(Arc::from(vec![
                    Action::Set { field: Field::EthDst, value: MAC2, mask: ALL },
                    Action::Next(1),
                ])),
                Action::Set { field: Field::EthDst, value: MAC3, mask: ALL },
                Action::Next(1),
            ],
            1,
        )],
    ));
    s.validate().unwrap();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &flow(MAC1, 0xffff_ffff_ffff), &mut o, &mut NoTrace);
    assert_eq!(
        targets(&o),
        vec![Target::Local { port: 1, vlan: Some(7) }, Target::Tunnel { chassis: 0, vni: 1, ingress: 1, egress: 3 }]
    );
    assert_eq!(Field::EthDst.get(&o.emits()[0].key), MAC2);
    assert_eq!(Field::EthDst.get(&o.emits()[1].key), MAC3, "the clone's rewrite did not leak");
}

#[test]
fn exponential_pipelines_are_cut_off() {
    // Each stage clones into the next and then continues: 2^30 paths.
    let n = 30u16;
    let stages = (0..n)
        .map(|i| {
            let acts = if i + 1 < n {
                vec![Action::Clone(Arc::from(vec![Action::Next(i + 1)])), Action::Next(i + 1)]
            } else {
                vec![Action::Drop(DropReason::Explicit)]
            };
            Arc::new(Stage::new(format!("s{i}"), vec![Rule::new(0, &[], acts, u64::from(i))]))
        })
        .collect();
    let mut s = switch();
    Arc::make_mut(s.datapaths.get_mut(&1).unwrap()).ingress = Pipeline { stages };
    s.validate().unwrap();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &flow(MAC1, MAC2), &mut o, &mut NoTrace);
    assert!(o.is_drop());
    assert!(o.steps <= exec::MAX_STEPS);
}

#[test]
fn validate_refuses_backward_next_unknown_chassis_and_width_mismatch() {
    let mut s = switch();
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    dp.ingress.stages[1] = Arc::new(Stage::new("bad", vec![Rule::new(0, &[], vec![Action::Next(0)], 9)]));
    assert!(matches!(s.validate(), Err(SnapshotError::BadNext(1, _, 9, 0))));
    let mut s = switch();
    Arc::make_mut(s.datapaths.get_mut(&1).unwrap()).ports.insert(9, Binding::Remote { chassis: 5 });
    assert_eq!(s.validate(), Err(SnapshotError::UnknownChassis(1, 9, 5)));
    let mut s = switch();
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    dp.egress.stages[0] = Arc::new(Stage::new(
        "w",
        vec![Rule::new(0, &[], vec![Action::Move { src: Field::EthSrc, dst: Field::Reg(0) }], 3)],
    ));
    assert!(matches!(s.validate(), Err(SnapshotError::WidthMismatch(1, 3, _, _))));
}

#[test]
fn mirrors_and_meters_missing_from_the_snapshot_are_refused() {
    // Mirroring is not implemented; a meter id with no meter is one Petrel
    // could not apply (the compiler reports it).
    for a in [Action::Meter(1), Action::Mirror(1)] {
        let mut s = switch();
        let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
        dp.egress.stages[0] = Arc::new(Stage::new("q", vec![Rule::new(0, &[], vec![a, Action::Output], 1)]));
        let mut o = Outcome::default();
        run_from_port(&s, 0, &flow(MAC1, MAC2), &mut o, &mut NoTrace);
        assert!(o.is_drop());
        assert_eq!(o.drop, Some(DropReason::Unsupported));
    }
}

#[derive(Default)]
struct Collect(Vec<String>);

impl Tracer for Collect {
    const ON: bool = true;
    fn event(&mut self, e: TraceEvent<'_>) {
        let line = match e {
            TraceEvent::Stage { dp, egress, stage, rule, .. } => {
                let p = if egress { &dp.egress } else { &dp.ingress };
                format!("{} {}: {:?}", dp.name, p.stages[stage].name, rule.map(|r| r.cookie))
            }
            TraceEvent::Action(a, _) => format!("  {a:?}"),
            TraceEvent::Emit(e, _) => format!("emit {:?}", e.target),
            TraceEvent::Drop(r, _) => format!("drop {r}"),
        };
        self.0.push(line);
    }
}

#[test]
fn trace_shows_each_stage_rule_and_action() {
    let s = switch();
    let mut o = Outcome::default();
    let mut t = Collect::default();
    run_from_port(&s, 0, &flow(MAC1, MAC2), &mut o, &mut t);
    let stages: Vec<_> = t.0.iter().filter(|l| l.starts_with("ls1")).cloned().collect();
    assert_eq!(
        stages,
        vec!["ls1 ls_in_port_sec_l2: Some(161)", "ls1 ls_in_l2_lkup: Some(178)", "ls1 ls_out_deliver: Some(192)"]
    );
    assert_eq!(t.0.last().unwrap(), "emit Local { port: 1, vlan: Some(7) }");
    // The untraced walk produces the same outcome.
    let mut o2 = Outcome::default();
    run_from_port(&s, 0, &flow(MAC1, MAC2), &mut o2, &mut NoTrace);
    assert_eq!(o.emits(), o2.emits());
}

mod stage_vs_linear_scan {
    use super::*;
    use proptest::prelude::*;

    fn rule_strategy() -> impl Strategy<Value = Rule> {
        // Few distinct masks and values so rules overlap and keys hit them.
        let masks = prop::sample::select(vec![0u128, 0xff, 0xffff_ffff_ffff, 0x0100_0000_0000]);
        (0u32..4, masks, 0u128..4, prop::option::of(0u32..3), 0u64..1000).prop_map(|(prio, mask, v, inport, cookie)| {
            let mut m = vec![(Field::EthDst, v, mask)];
            if let Some(p) = inport {
                m.push((Field::Reg(REG_INPORT as u8), u128::from(p), 0xffff_ffff));
            }
            Rule::new(prio, &m, vec![Action::Drop(DropReason::Explicit)], cookie)
        })
    }

    proptest! {
        #[test]
        fn lookup_equals_first_match_in_priority_order(
            rules in prop::collection::vec(rule_strategy(), 0..40),
            keys in prop::collection::vec((0u128..4, 0u32..3), 1..40),
        ) {
            let stage = Stage::new("s", rules);
            for (dst, inport) in keys {
                let mut k = Key::default();
                Field::EthDst.set(&mut k, dst, u128::MAX);
                k.meta.regs[REG_INPORT] = inport;
                let w = k.words();
                let want = stage.rules().iter().find(|r| r.matches(&w));
                prop_assert_eq!(stage.lookup(&w).map(|r| r as *const Rule), want.map(|r| r as *const Rule));
            }
        }
    }
}

/// `switch()` with an ingress stage between port security and L2 lookup
/// that answers NS for 10.0.0.x's IPv6 twin and rejects UDP, as
/// ls_in_arp_rsp and ls_in_acl do.
fn switch_with_generators() -> Snapshot {
    let mut s = switch();
    let dp = Arc::get_mut(s.datapaths.get_mut(&1).unwrap()).unwrap();
    let nd_na = Action::Generate {
        kind: GenKind::NdNa,
        actions: vec![
            Action::Set { field: Field::EthSrc, value: MAC2, mask: ALL },
            Action::Move { src: Field::Reg(REG_INPORT as u8), dst: Field::Reg(REG_OUTPORT as u8) },
            Action::Set { field: Field::Reg(REG_FLAGS as u8), value: 1, mask: 1 },
            Action::Output,
        ]
        .into(),
    };
    let reject = Action::Generate {
        kind: GenKind::Reject,
        actions: vec![
            Action::Exchange(Field::Reg(REG_OUTPORT as u8), Field::Reg(REG_INPORT as u8)),
            Action::Jump { egress: true, stage: 0 },
        ]
        .into(),
    };
    let gen_stage = Stage::new(
        "ls_in_gen",
        vec![
            Rule::new(
                100,
                &[(Field::EthType, 0x86dd, 0xffff), (Field::IpProto, 58, 0xff), (Field::TpSrc, 135, 0xffff)],
                vec![nd_na],
                0xd1,
            ),
            Rule::new(90, &[(Field::EthType, 0x0800, 0xffff), (Field::IpProto, 17, 0xff)], vec![reject.clone()], 0xd2),
            Rule::new(90, &[(Field::EthType, 0x0800, 0xffff), (Field::IpProto, 6, 0xff)], vec![reject], 0xd3),
            Rule::new(0, &[], vec![Action::Next(2)], 0xd0),
        ],
    );
    // Port security's `next(1)` now lands here; L2 lookup is stage 2.
    dp.ingress.stages.insert(1, Arc::new(gen_stage));
    s.validate().unwrap();
    s
}

#[test]
fn nd_na_generates_a_reply_back_to_the_inport() {
    let s = switch_with_generators();
    let mut f = flow(MAC1, 0x3333_ff00_0001);
    f.dl_type = 0x86dd;
    f.nw_proto = 58;
    f.tp_src = 135;
    f.nw_src = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    f.nd_target = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &f, &mut o, &mut NoTrace);
    assert_eq!(o.emits().len(), 1, "{o:?}");
    let e = o.emits()[0];
    assert_eq!(e.target, Target::Local { port: 0, vlan: None });
    assert_eq!(e.gen, Some(exec::GenPacket::NdNa));
    assert_eq!(Field::EthSrc.get(&e.key), MAC2, "the nested action's eth.src");
    assert_eq!(Field::EthDst.get(&e.key), MAC1, "eth.dst is the solicitor");
    assert_eq!((e.key.flow.nw_src, e.key.flow.nw_dst), (f.nd_target, f.nw_src));
    assert_eq!((e.key.flow.tp_src, e.key.flow.nw_ttl, e.key.flow.arp_tha), (136, 255, f.dl_dst));
}

#[test]
fn reject_jumps_into_egress_and_ignores_rst() {
    let s = switch_with_generators();
    let mut f = flow(MAC1, MAC2);
    f.nw_proto = 17;
    f.nw_src = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
    f.nw_dst = Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &f, &mut o, &mut NoTrace);
    // Only the ICMP error: the UDP packet itself goes nowhere.
    assert_eq!(o.emits().len(), 1, "{o:?}");
    let e = o.emits()[0];
    assert_eq!((e.target, e.gen), (Target::Local { port: 0, vlan: None }, Some(exec::GenPacket::Icmp4)));
    assert_eq!((Field::EthSrc.get(&e.key), Field::EthDst.get(&e.key)), (MAC2, MAC1));
    assert_eq!((e.key.flow.nw_src, e.key.flow.nw_dst), (f.nw_dst, f.nw_src));
    assert_eq!((e.key.flow.tp_src, e.key.flow.tp_dst), (3, 3));
    // A TCP RST is not answered; a SYN is, with RST+ACK.
    f.nw_proto = 6;
    f.tcp_flags = 0x004;
    run_from_port(&s, 0, &f, &mut o, &mut NoTrace);
    assert_eq!((o.emits().len(), o.drop), (0, Some(DropReason::RejectIgnored)));
    f.tcp_flags = 0x002;
    run_from_port(&s, 0, &f, &mut o, &mut NoTrace);
    assert_eq!(o.emits()[0].gen, Some(exec::GenPacket::TcpRst));
    assert_eq!(o.emits()[0].key.flow.tcp_flags, 0x014);
}

#[test]
fn validate_refuses_jumps_outside_generated_packets() {
    let mut s = switch();
    let dp = Arc::get_mut(s.datapaths.get_mut(&1).unwrap()).unwrap();
    dp.egress.stages[0] =
        Arc::new(Stage::new("x", vec![Rule::new(0, &[], vec![Action::Jump { egress: false, stage: 1 }], 1)]));
    assert!(matches!(s.validate(), Err(SnapshotError::BadJump(..))));
    let dp = Arc::get_mut(s.datapaths.get_mut(&1).unwrap()).unwrap();
    let g = Action::Generate { kind: GenKind::Reject, actions: vec![Action::Jump { egress: true, stage: 1 }].into() };
    dp.egress.stages[0] = Arc::new(Stage::new("x", vec![Rule::new(0, &[], vec![g], 1)]));
    assert!(matches!(s.validate(), Err(SnapshotError::BadJump(..))), "egress has one stage");
}

/// The switch with a localnet port (key 6, uplink 2, VLAN 100) bridged
/// here: ports 3-5 (on other chassis) are reached through it.
fn switch_with_localnet() -> Snapshot {
    let mut s = switch();
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    for k in [3, 4, 5] {
        dp.ports.insert(k, Binding::ViaLocalnet { localnet: 6 });
    }
    dp.ports.insert(6, Binding::Localnet { uplink: 2, vlan: Some(100) });
    dp.groups.insert(FLOOD, Arc::from(vec![1, 2, 3, 4, 5, 6]));
    s.vlan_ports.insert((2, 100), LocalPort { datapath: 1, port: 6 });
    s.validate().unwrap();
    s
}

#[test]
fn remote_ports_behind_a_localnet_port_are_reached_through_it_once() {
    let s = switch_with_localnet();
    let mut o = Outcome::default();
    // Unicast to a remote port: out of the localnet port, its key as outport.
    run_from_port(&s, 1, &flow(MAC2, MAC3), &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Localnet { uplink: 2, vlan: Some(100) }]);
    assert_eq!(o.emits()[0].key.outport(), 6, "the egress pipeline runs for the localnet port");
    // A flood: the localnet port once, no tunnel, no copy per remote port.
    run_from_port(&s, 0, &flow(MAC1, 0xffff_ffff_ffff), &mut o, &mut NoTrace);
    assert_eq!(
        targets(&o),
        vec![Target::Local { port: 1, vlan: Some(7) }, Target::Localnet { uplink: 2, vlan: Some(100) }]
    );
    // Entering as the localnet port with a remote outport: back out of it
    // is a loop (the deliver step is the same as from a tunnel's keys).
    run_from_tunnel(&s, 1, 6, 3, &flow(MAC2, MAC3), &mut o, &mut NoTrace);
    assert!(o.is_drop(), "inport 6 to outport 3 = localnet 6: loopback");
    assert_eq!(o.drop, Some(DropReason::Loopback));
    // From a tunnel to a remote port: out of the localnet port (table 40).
    run_from_tunnel(&s, 1, 1, 4, &flow(MAC1, MAC3), &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Localnet { uplink: 2, vlan: Some(100) }]);
}

/// [`switch`] with meter 0 (3 packets of burst, 1 pkt/s) on what port 1
/// sends (ingress, as `ls_in_qos_meter` does) and meter 1 on what goes to
/// port 2 (egress, `ls_out_qos_meter`).
fn metered_switch() -> Snapshot {
    let mut s = switch();
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    let st = &dp.ingress.stages[0];
    let mut rules: Vec<Rule> = st.rules().to_vec();
    rules[0].actions = vec![Action::Meter(0), Action::Next(1)].into();
    dp.ingress.stages[0] = Arc::new(Stage::new(st.name.clone(), rules));
    dp.egress.stages[0] = Arc::new(Stage::new(
        "ls_out_deliver",
        vec![
            Rule::new(
                10,
                &[(Field::Reg(REG_OUTPORT as u8), 2, 0xffff_ffff)],
                vec![Action::Meter(1), Action::Output],
                0xc2,
            ),
            Rule::new(0, &[], vec![Action::Output], 0xc0),
        ],
    ));
    let m = |name: &str| Some(Meter { name: name.into(), rate: 1, burst: 3, unit: crate::qos::Unit::Packets });
    s.meters = vec![m("in"), m("out")];
    s.validate().unwrap();
    s
}

#[test]
fn meter_is_recorded_and_runs_per_packet_from_a_cached_verdict() {
    use crate::qos::meter::Meters;
    let s = metered_switch();
    let mut o = Outcome::default();
    // From port 2: no meter on its way in; meter 0 not passed, 1 neither (to port 1).
    run_from_port(&s, 1, &flow(MAC2, MAC1), &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Local { port: 0, vlan: None }]);
    assert!(o.meters().is_empty());
    // From port 1 to port 2: both meters, over the one copy.
    let f = flow(MAC1, MAC2);
    run_from_port(&s, 0, &f, &mut o, &mut NoTrace);
    assert_eq!(targets(&o), vec![Target::Local { port: 1, vlan: Some(7) }], "the walk itself forwards");
    let h = |id, skip| exec::MeterHit { id, from: 0, to: 1, skip };
    assert_eq!(o.meters(), &[h(0, 2), h(1, 2)]);
    let v = cache::Verdict::of(&o, &f).unwrap();
    assert_eq!(v.meters(), o.meters(), "the cached verdict keeps the meters");
    // Per packet: 3 pass (the burst), then every copy is refused, and
    // meter 1 is not even run for them (it lies after meter 0).
    let mut m = Meters::new(0, 1, 1_000_000_000);
    m.update(&[], &s.meters, 0);
    let verdicts: Vec<(u32, bool)> = (0..6).map(|_| m.run(v.meters(), 5, 64)).collect();
    assert_eq!(verdicts, [(0, false), (0, false), (0, false), (1, true), (1, true), (1, true)]);
    assert_eq!((m.counters(0).passed, m.counters(0).dropped), (3, 3));
    assert_eq!((m.counters(1).passed, m.counters(1).dropped), (3, 0));
    // One second later, one more packet.
    assert_eq!(m.run(v.meters(), 1_000_000_005, 64), (0, false));
}

#[test]
fn meter_of_one_flood_member_drops_that_copy_only() {
    use crate::qos::meter::Meters;
    let s = metered_switch();
    let mut o = Outcome::default();
    // Broadcast from port 2 (no ingress meter): local copy to port 1,
    // tunnels to c0 and c1; no meter. From port 1: port 2's copy is metered.
    let f = flow(MAC1, 0xffff_ffff_ffff);
    run_from_port(&s, 0, &f, &mut o, &mut NoTrace);
    assert_eq!(
        targets(&o),
        vec![
            Target::Local { port: 1, vlan: Some(7) },
            Target::Tunnel { chassis: 0, vni: 1, ingress: 1, egress: FLOOD as u16 },
            Target::Tunnel { chassis: 1, vni: 1, ingress: 1, egress: FLOOD as u16 },
        ]
    );
    let h = |id, from, to, skip| exec::MeterHit { id, from, to, skip };
    assert_eq!(o.meters(), &[h(0, 0, 3, 2), h(1, 0, 1, 2)]);
    let mut m = Meters::new(0, 1, 1_000_000_000);
    // Meter 0 generous, meter 1 (port 2's) tight.
    let mut meters = s.meters.clone();
    meters[0] = Some(Meter { name: "in".into(), rate: 1000, burst: 1000, unit: crate::qos::Unit::Packets });
    m.update(&[], &meters, 0);
    for _ in 0..3 {
        assert_eq!(m.run(o.meters(), 0, 64), (0, false));
    }
    assert_eq!(m.run(o.meters(), 0, 64), (0b001, true), "only port 2's copy");
}

#[test]
fn meter_in_a_clone_scopes_to_the_clone_and_unknown_meters_are_refused() {
    let mut s = switch();
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    let st = &dp.ingress.stages[0];
    let mut rules: Vec<Rule> = st.rules().to_vec();
    // clone { meter 0; next } ; meter 1: the clone's copy is meter 0's only.
    rules[0].actions = vec![Action::Clone(vec![Action::Meter(0), Action::Next(1)].into()), Action::Meter(1)].into();
    rules[1].actions = vec![Action::Meter(7), Action::Next(1)].into();
    dp.ingress.stages[0] = Arc::new(Stage::new(st.name.clone(), rules));
    let m = |name: &str| Some(Meter { name: name.into(), rate: 1, burst: 1, unit: crate::qos::Unit::Packets });
    s.meters = vec![m("a"), m("b")];
    s.validate().unwrap();
    let mut o = Outcome::default();
    run_from_port(&s, 0, &flow(MAC1, MAC2), &mut o, &mut NoTrace);
    let h = |id, from, to, skip| exec::MeterHit { id, from, to, skip };
    assert_eq!(o.meters(), &[h(0, 0, 1, 1), h(1, 1, 1, 2)]);
    // Meter 7 is not in the snapshot: refused, not ignored.
    run_from_port(&s, 1, &flow(MAC2, MAC1), &mut o, &mut NoTrace);
    assert!(o.is_drop());
    assert_eq!(o.drop, Some(DropReason::Unsupported));
    // An id beyond MAX_METERS does not validate.
    let dp = Arc::make_mut(s.datapaths.get_mut(&1).unwrap());
    dp.egress.stages[0] =
        Arc::new(Stage::new("ls_out_deliver", vec![Rule::new(0, &[], vec![Action::Meter(MAX_METERS as u32)], 1)]));
    assert!(matches!(s.validate(), Err(SnapshotError::BadMeter(1, 1, _))));
    s.meters = vec![Some(Meter { name: "z".into(), rate: 0, burst: 1, unit: crate::qos::Unit::Bits })];
    assert!(matches!(s.validate(), Err(SnapshotError::ZeroMeter(0, _))));
}
