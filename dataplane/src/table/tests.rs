//! Executor tests on a hand-built logical switch (the shape ovn-northd
//! gives one: port security, L2 lookup with a flood group, egress output).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::exec::{run_from_port, run_from_tunnel, Emit, NoTrace, Outcome, Target, TraceEvent, Tracer};
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
fn meters_and_mirrors_are_refused_until_implemented() {
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
