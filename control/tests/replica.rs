//! The replica against real servers: equal to `ovn-sbctl list` after
//! changes made through ovn-northd, typed events, failover over a remote
//! list, and resume with `monitor_cond_since` after a server restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{poll_async, Ovn, OvnOptions, WAIT};
use petrel_control::ovsdb::{parse_remotes, Session, SessionConfig, SessionEvent};
use petrel_control::sb::{self, Change, SbEvent, SbTable};

fn session(remotes: &str) -> Session {
    let mut cfg = SessionConfig::new(parse_remotes(remotes).unwrap(), sb::DATABASE);
    cfg.schema_check = Some(sb::check_schema);
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(400);
    Session::start(cfg)
}

/// Polls until the replica equals the server's tables.
async fn assert_replica_converges(ovn: &Ovn, s: &Session) {
    let mut last = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        let snapshot = s.replica().clone();
        if snapshot.schema().tables.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        last = ovn.replica_diff(&snapshot);
        if last.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replica differs from ovn-sbctl list: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_equals_sbctl_after_changes() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let mut s = session(&ovn.sb_remote());
    let t0 = Instant::now();
    poll_async(WAIT, "first connect", || (s.stats().n_connects == 1).then_some(())).await;
    eprintln!("initial sync (empty SB): {:?}", t0.elapsed());
    ovn.nbctl(&["ls-add", "sw0"]);
    for i in 0..5 {
        let p = format!("p{i}");
        ovn.nbctl(&["lsp-add", "sw0", &p]);
        ovn.nbctl(&["lsp-set-addresses", &p, &format!("00:00:00:00:00:0{i} 10.0.0.{}", i + 10)]);
    }
    ovn.nbctl(&["pg-add", "pg0", "p0", "p1"]);
    ovn.nbctl(&["acl-add", "pg0", "to-lport", "1000", "ip4 && tcp.dst == 80", "allow-related"]);
    ovn.nbctl(&["lb-add", "lb0", "10.0.0.100:80", "10.0.0.10:8080,10.0.0.11:8080", "tcp"]);
    ovn.nbctl(&["ls-lb-add", "sw0", "lb0"]);
    ovn.nbctl(&["--wait=sb", "sync"]);
    assert_replica_converges(&ovn, &s).await;
    // modify and delete go through too (map diff on options, set diff on mac)
    // an optional reference set, then cleared (sent as a new value, not a diff)
    ovn.sbctl(&["chassis-add", "hv9", "geneve", "192.0.2.9"]);
    ovn.nbctl(&["--wait=sb", "lsp-set-options", "p1", "requested-chassis=hv9"]);
    assert_replica_converges(&ovn, &s).await;
    ovn.nbctl(&["lsp-set-options", "p1", "requested-chassis=hv-none"]);
    ovn.nbctl(&["lsp-set-addresses", "p2", "00:00:00:00:00:22 10.0.0.22", "00:00:00:00:00:23"]);
    ovn.nbctl(&["lsp-del", "p3"]);
    ovn.nbctl(&["--wait=sb", "sync"]);
    assert_replica_converges(&ovn, &s).await;

    // The typed event stream saw p0's Port_Binding inserted and p3's deleted.
    let (mut ins, mut del) = (false, false);
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), s.next_event()).await {
        if let SessionEvent::Changes(chs) = ev {
            for ch in &chs {
                match sb::decode_change(ch).unwrap() {
                    SbEvent::PortBinding(Change::Insert(pb)) if pb.logical_port == "p0" => ins = true,
                    SbEvent::PortBinding(Change::Delete(pb)) if pb.logical_port == "p3" => del = true,
                    _ => {}
                }
            }
        }
    }
    assert!(ins && del, "insert seen {ins}, delete seen {del}");
    assert_eq!(s.stats().n_full_dumps, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_list_skips_dead_remote() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: false });
    let dead = format!("unix:{}", ovn.dir.path().join("nothing.sock").display());
    let s = session(&format!("{dead},{}", ovn.sb_remote()));
    poll_async(WAIT, "connect through the second remote", || (s.stats().n_connects == 1).then_some(())).await;
    assert_eq!(s.stats().remote, Some(ovn.sb_remote()));
    assert_eq!(s.stats().n_disconnects, 1);
    assert_replica_converges(&ovn, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_full_dump() {
    let mut ovn = Ovn::start(OvnOptions { clustered_sb: true, northd: true });
    // Enough content that the server's transaction history keeps entries
    // (it is bounded by the database's size).
    ovn.nbctl(&["ls-add", "sw0"]);
    for i in 0..20 {
        ovn.nbctl(&["lsp-add", "sw0", &format!("p{i}")]);
    }
    ovn.nbctl(&["--wait=sb", "sync"]);
    let s = session(&ovn.sb_remote());
    poll_async(WAIT, "first connect", || (s.stats().n_connects == 1).then_some(())).await;
    assert_replica_converges(&ovn, &s).await;
    let before = s.stats();
    assert_eq!(before.n_full_dumps, 1);
    assert!(before.last_txn_id.is_some(), "a clustered server reports transaction ids");

    ovn.kill_sb();
    poll_async(WAIT, "disconnect noticed", || (s.stats().n_disconnects >= 1).then_some(())).await;
    ovn.start_sb();
    poll_async(WAIT, "reconnect", || (s.stats().n_connects == 2).then_some(())).await;
    let after = s.stats();
    assert_eq!(after.n_resumes, 1, "monitor_cond_since answered found=true");
    assert_eq!(after.n_full_dumps, 1, "no second full dump");
    assert_replica_converges(&ovn, &s).await;

    // and it keeps following changes after the resume
    ovn.nbctl(&["lsp-add", "sw0", "late"]);
    ovn.nbctl(&["--wait=sb", "sync"]);
    assert_replica_converges(&ovn, &s).await;
    assert!(s.replica().rows("Port_Binding").any(|(_, r)| r
        .get("logical_port")
        .and_then(|d| d.as_scalar())
        .and_then(|a| a.as_str())
        == Some("late")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_monitoring_and_monitor_cond_change() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    ovn.nbctl(&["ls-add", "sw0"]);
    for p in ["p0", "p1", "p2"] {
        ovn.nbctl(&["lsp-add", "sw0", p]);
    }
    ovn.nbctl(&["--wait=sb", "sync"]);
    let mut cfg = SessionConfig::new(parse_remotes(&ovn.sb_remote()).unwrap(), sb::DATABASE);
    cfg.conditions.insert("Port_Binding".to_owned(), serde_json::json!([["logical_port", "==", "p0"]]));
    let s = Session::start(cfg);
    let ports = |s: &Session| {
        let mut v: Vec<String> = sb::PortBinding::all(&s.replica()).into_iter().map(|p| p.logical_port).collect();
        v.sort();
        v
    };
    poll_async(WAIT, "only p0", || (ports(&s) == ["p0"]).then_some(())).await;
    s.set_conditions("Port_Binding", serde_json::json!([["logical_port", "!=", "p0"]]));
    poll_async(WAIT, "p1 and p2 after monitor_cond_change", || (ports(&s) == ["p1", "p2"]).then_some(())).await;
    // later changes follow the new condition
    ovn.nbctl(&["lsp-add", "sw0", "p3"]);
    poll_async(WAIT, "p3 arrives", || (ports(&s) == ["p1", "p2", "p3"]).then_some(())).await;
    s.set_conditions("Port_Binding", serde_json::json!([true]));
    poll_async(WAIT, "everything", || (ports(&s).len() == 4).then_some(())).await;
    assert_eq!(s.stats().n_connects, 1);
}
