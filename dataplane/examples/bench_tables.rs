//! Prints (as the control protocol's JSON snapshot) a logical wire between
//! petreld ports 0 and 1 through an N-stage ingress pipeline, for
//! `scripts/bench-null.sh` and by-hand experiments:
//!
//! `cargo run -p petrel-dataplane --no-default-features --example bench_tables -- 10 > t.json`
//! then `petrelctl publish t.json`.
//!
//! Each stage looks like one of a logical switch's: a rule keyed on the
//! logical inport and the Ethernet source (the frames net_null makes are
//! all zeros), a rule keyed on a register, and a priority-0 default, so
//! the classifier has three subtables per stage.
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::Arc;

use petrel_dataplane::ctl::proto::SnapshotMsg;
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::table::{
    Action, Binding, Datapath, Field, LocalPort, Pipeline, Rule, Snapshot, Stage, REG_INPORT, REG_OUTPORT,
};

fn main() {
    let n: u16 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10).max(1);
    let inport = |p: u32| (Field::Reg(REG_INPORT as u8), u128::from(p), 0xffff_ffff);
    let mut stages = Vec::new();
    for i in 0..n {
        let last = i + 1 == n;
        let pass = |out: u32| {
            if last {
                vec![
                    Action::Set { field: Field::Reg(REG_OUTPORT as u8), value: u128::from(out), mask: 0xffff_ffff },
                    Action::Output,
                ]
            } else {
                vec![Action::Set { field: Field::Reg(0), value: u128::from(i), mask: 0xffff }, Action::Next(i + 1)]
            }
        };
        let rules = vec![
            Rule::new(100, &[inport(1), (Field::EthSrc, 0, u128::MAX)], pass(2), u64::from(i) << 8 | 1),
            Rule::new(100, &[inport(2), (Field::EthSrc, 0, u128::MAX)], pass(1), u64::from(i) << 8 | 2),
            Rule::new(
                50,
                &[(Field::Reg(1), 0xdead, 0xffff)],
                vec![Action::Drop(DropReason::Explicit)],
                u64::from(i) << 8 | 3,
            ),
            Rule::new(0, &[], vec![Action::Drop(DropReason::Explicit)], u64::from(i) << 8),
        ];
        stages.push(Arc::new(Stage::new(format!("stage{i}"), rules)));
    }
    let egress =
        Pipeline { stages: vec![Arc::new(Stage::new("out", vec![Rule::new(0, &[], vec![Action::Output], 0xff)]))] };
    let mut ports = BTreeMap::new();
    ports.insert(1, Binding::Local { port: 0, vlan: None });
    ports.insert(2, Binding::Local { port: 1, vlan: None });
    let dp = Datapath {
        key: 1,
        name: format!("wire{n}"),
        ingress: Pipeline { stages },
        egress,
        ports,
        ..Datapath::default()
    };
    let snap = Snapshot {
        meters: Vec::new(),
        vlan_ports: Default::default(),
        generation: 0,
        datapaths: BTreeMap::from([(1, Arc::new(dp))]),
        local_ports: vec![Some(LocalPort { datapath: 1, port: 1 }), Some(LocalPort { datapath: 1, port: 2 })],
        chassis: vec![],
    };
    snap.validate().expect("the example snapshot is valid");
    println!("{}", serde_json::to_string(&SnapshotMsg::from(&snap)).expect("snapshots serialise"));
}
