//! The logical-flow compiler on what a real ovn-northd writes: a switch
//! compiles, packets walk the tables as OVN says, what needs conntrack is
//! refused (and listed), and adding a port recompiles only the flows that
//! change, keeping the stages it does not touch.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{poll_async, Ovn, OvnOptions, WAIT};
use petrel_control::lflow::{Compiler, LocalPorts};
use petrel_control::ovsdb::{parse_remotes, Session, SessionConfig, SessionEvent};
use petrel_control::sb::{self, LogicalFlow, PortBinding, SbTable};
use petrel_dataplane::flow::FlowKey;
use petrel_dataplane::table::exec::{run_from_port, NoTrace, Outcome, Target};

fn session(remote: &str) -> Session {
    let mut cfg = SessionConfig::new(parse_remotes(remote).unwrap(), sb::DATABASE);
    cfg.schema_check = Some(sb::check_schema);
    Session::start(cfg)
}

fn mac(b: [u8; 6]) -> [u8; 6] {
    b
}

/// An IPv4 UDP key as `flow::extract` would make it.
fn udp(src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4]) -> FlowKey {
    let mut k =
        FlowKey { dl_src: mac(src), dl_dst: mac(dst), dl_type: 0x0800, nw_proto: 17, nw_ttl: 64, ..FlowKey::default() };
    k.nw_src = std::net::Ipv4Addr::from(sip).to_ipv6_mapped().octets();
    k.nw_dst = std::net::Ipv4Addr::from(dip).to_ipv6_mapped().octets();
    k.tp_src = 5000;
    k.tp_dst = 53;
    k
}

async fn settle(s: &mut Session, ovn: &Ovn) {
    ovn.nbctl(&["--wait=sb", "sync"]);
    // Drain updates until the replica has been quiet for a moment.
    loop {
        match tokio::time::timeout(Duration::from_millis(300), s.next_event()).await {
            Ok(Some(SessionEvent::Changes(_) | SessionEvent::Connected { .. } | SessionEvent::ConditionsSettled)) => {}
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiles_northd_flows_and_recompiles_only_what_a_port_add_touches() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    ovn.sbctl(&["chassis-add", "hv1", "geneve", "127.0.0.1"]);
    ovn.nbctl(&[
        "ls-add",
        "sw0",
        "--",
        "lsp-add",
        "sw0",
        "p1",
        "--",
        "lsp-set-addresses",
        "p1",
        "00:00:00:00:00:01 10.0.0.1",
        "--",
        "lsp-set-port-security",
        "p1",
        "00:00:00:00:00:01 10.0.0.1",
        "--",
        "lsp-add",
        "sw0",
        "p2",
        "--",
        "lsp-set-addresses",
        "p2",
        "00:00:00:00:00:02 10.0.0.2",
    ]);
    ovn.nbctl(&["--wait=sb", "sync"]);
    ovn.sbctl(&["lsp-bind", "p1", "hv1"]);
    ovn.sbctl(&["lsp-bind", "p2", "hv1"]);
    let mut s = session(&ovn.sb_remote());
    poll_async(WAIT, "logical flows in the replica", || {
        let r = s.replica();
        (LogicalFlow::all(&r).len() > 50 && PortBinding::all(&r).iter().all(|p| p.chassis.is_some())).then_some(())
    })
    .await;
    settle(&mut s, &ovn).await;

    let local = LocalPorts {
        ifaces: [("p1".to_owned(), 0u16), ("p2".to_owned(), 1u16)].into_iter().collect(),
        networks: Default::default(),
    };
    let mut c = Compiler::new();
    let first = c.compile(&s.replica(), "hv1", &local);
    assert_eq!(first.stats.n_datapaths, 1);
    assert_eq!(first.stats.n_compiled, first.stats.n_flows, "a first compile compiles everything");
    // Conntrack flows (unreachable without stateful ACLs) are refused, by name.
    assert!(first.refusals.iter().any(|r| r.what.contains("conntrack") && r.stage == "ls_in_pre_stateful"));
    let snap = &first.snapshot;

    // p1 -> p2 unicast: delivered on petreld port 1, unchanged.
    let mut out = Outcome::default();
    let k = udp([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 2], [10, 0, 0, 1], [10, 0, 0, 2]);
    run_from_port(snap, 0, &k, &mut out, &mut NoTrace);
    let targets: Vec<Target> = out.emits().iter().map(|e| e.target).collect();
    assert_eq!(targets, vec![Target::Local { port: 1, vlan: None }], "{:?}", out.drop);
    // Port security: p1 may not send from another IP.
    let spoofed = udp([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 2], [10, 0, 0, 9], [10, 0, 0, 2]);
    run_from_port(snap, 0, &spoofed, &mut out, &mut NoTrace);
    assert!(out.is_drop(), "spoofed source IP must be dropped by port security");
    // Broadcast from p2 floods to p1 only (not back to p2).
    let bcast = udp([0, 0, 0, 0, 0, 2], [0xff; 6], [10, 0, 0, 2], [10, 0, 0, 255]);
    run_from_port(snap, 1, &bcast, &mut out, &mut NoTrace);
    let targets: Vec<Target> = out.emits().iter().map(|e| e.target).collect();
    assert_eq!(targets, vec![Target::Local { port: 0, vlan: None }]);

    // Add a port: only the flows it brings (and those naming it) compile.
    ovn.nbctl(&["lsp-add", "sw0", "p3", "--", "lsp-set-addresses", "p3", "00:00:00:00:00:03 10.0.0.3"]);
    settle(&mut s, &ovn).await;
    let second = c.compile(&s.replica(), "hv1", &local);
    assert!(second.stats.n_flows > first.stats.n_flows);
    assert!(
        second.stats.n_compiled <= 12 && second.stats.n_compiled * 5 < second.stats.n_flows,
        "a port add compiled {} of {} flows",
        second.stats.n_compiled,
        second.stats.n_flows
    );
    let (a, b) = (&first.snapshot.datapaths[&1], &second.snapshot.datapaths[&1]);
    let shared = a.ingress.stages.iter().zip(&b.ingress.stages).filter(|(x, y)| Arc::ptr_eq(x, y)).count();
    assert!(shared * 2 > a.ingress.stages.len(), "untouched stages are reused: {shared} of {}", a.ingress.stages.len());
    eprintln!(
        "full: {} flows in {:?}; port add: {} compiled in {:?}, {shared}/{} ingress stages reused",
        first.stats.n_flows,
        first.stats.elapsed,
        second.stats.n_compiled,
        second.stats.elapsed,
        a.ingress.stages.len()
    );
}
