//! A 3-member raft Southbound: kill the leader; the session moves to a live
//! member, resumes without a full dump, keeps a correct replica, and its
//! writes succeed (a follower forwards them to the new leader). With
//! `leader_only` it follows the leader.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{poll_async, SbCluster, WAIT};
use petrel_control::ovsdb::transact::map;
use petrel_control::ovsdb::{parse_remotes, Operation, RowValues, Session, SessionConfig};
use petrel_control::sb;

fn session(remotes: &str, leader_only: bool) -> Session {
    let mut cfg = SessionConfig::new(parse_remotes(remotes).unwrap(), sb::DATABASE);
    cfg.schema_check = Some(sb::check_schema);
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(400);
    cfg.leader_only = leader_only;
    Session::start(cfg)
}

async fn assert_converges(c: &SbCluster, s: &Session) {
    let mut last = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        let snapshot = s.replica().clone();
        if !snapshot.schema().tables.is_empty() {
            last = c.replica_diff(&snapshot);
            if last.is_empty() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replica differs from the cluster: {last:?}");
}

fn chassis_insert(name: &str, ip: &str) -> Vec<Operation> {
    vec![
        Operation::insert(
            "Encap",
            RowValues::new()
                .set("type", "geneve")
                .set("ip", ip)
                .set("options", map([("csum", "true")]))
                .set("chassis_name", name),
            Some("e"),
        ),
        Operation::insert(
            "Chassis",
            RowValues::new().set("name", name).set("encaps", petrel_control::ovsdb::transact::named_uuid("e")),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_keeps_replica_and_writes() {
    let mut c = SbCluster::start();
    c.sbctl(&["chassis-add", "hv-a", "geneve", "192.0.2.1"]);
    let s = session(&c.remotes(), false);
    poll_async(WAIT, "connect", || (s.stats().n_connects == 1).then_some(())).await;
    assert_converges(&c, &s).await;
    s.transact(&chassis_insert("hv-b", "192.0.2.2")).await.unwrap();

    let leader = c.leader().unwrap();
    let connected_to = s.stats().remote.unwrap();
    eprintln!("leader is member {leader}, session on {connected_to}");
    c.kill_member(leader);
    // Kill the member we are on too if it was not the leader, so that the
    // session has to move either way.
    if connected_to != c.remote(leader) {
        let i = (0..3).find(|i| c.remote(*i) == connected_to).unwrap();
        c.kill_member(i);
        c.start_member(i);
    }
    let t0 = Instant::now();
    poll_async(Duration::from_secs(20), "reconnect to a live member", || (s.stats().n_connects >= 2).then_some(()))
        .await;
    poll_async(Duration::from_secs(20), "new leader", || c.leader()).await;
    eprintln!("failover: reconnected in {:?}, stats {:?}", t0.elapsed(), s.stats());
    assert_eq!(s.stats().n_full_dumps, 1, "resumed with monitor_cond_since, no full dump");

    // Writes go through (forwarded to the new leader if we are on a follower).
    let mut ok = false;
    for _ in 0..50 {
        match s.transact(&chassis_insert("hv-c", "192.0.2.3")).await {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(e) => {
                eprintln!("write during election: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(ok, "write after failover");
    c.sbctl(&["chassis-add", "hv-d", "geneve", "192.0.2.4"]);
    assert_converges(&c, &s).await;
    let names: Vec<String> = sb::Chassis::all(&s.replica()).into_iter().map(|c| c.name).collect();
    for n in ["hv-a", "hv-b", "hv-c", "hv-d"] {
        assert!(names.contains(&n.to_owned()), "{n} in {names:?}");
    }
}

use petrel_control::sb::SbTable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_only_follows_the_leader() {
    let mut c = SbCluster::start();
    // Put a follower first in the list: leader_only must skip it.
    let leader = c.leader().unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let others: Vec<String> = (0..3).filter(|i| *i != follower).map(|i| c.remote(i)).collect();
    let s = session(&format!("{},{}", c.remote(follower), others.join(",")), true);
    poll_async(WAIT, "connect", || (s.stats().n_connects == 1).then_some(())).await;
    assert_eq!(s.stats().remote.unwrap(), c.remote(leader));
    c.kill_member(leader);
    let new_leader = poll_async(Duration::from_secs(20), "new leader", || c.leader()).await;
    poll_async(Duration::from_secs(20), "reconnect to the new leader", || (s.stats().n_connects == 2).then_some(()))
        .await;
    assert_eq!(s.stats().remote.unwrap(), c.remote(new_leader));
    s.transact(&chassis_insert("hv-x", "192.0.2.9")).await.unwrap();
    assert_converges(&c, &s).await;
}
