//! Conditional monitoring against ovsdb-server + ovn-northd: the agent's
//! replica holds the rows of the datapaths reachable from its local ports
//! and nothing else of the conditional tables, follows the local ports and
//! the patch-port topology as they change, and with `monitor_all` holds
//! everything. Expected rows come from `ovn-sbctl find`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{poll_async, Ovn, OvnOptions};
use petrel_control::chassis::{Agent, AgentConfig};
use petrel_control::ovsdb::{parse_remotes, Session, SessionHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Generous: northd recomputes and several round trips on a loaded CI box.
const WAIT: Duration = Duration::from_secs(30);

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn uuid_lines(out: &str) -> BTreeSet<Uuid> {
    out.split_whitespace().map(|u| Uuid::parse_str(u).unwrap()).collect()
}

fn find(ovn: &Ovn, table: &str, cond: &str) -> BTreeSet<Uuid> {
    uuid_lines(&ovn.sbctl(&["--bare", "--columns=_uuid", "find", table, cond]))
}

fn datapath(ovn: &Ovn, name: &str) -> Uuid {
    let dp = find(ovn, "Datapath_Binding", &format!("external_ids:name={name}"));
    assert_eq!(dp.len(), 1, "datapath {name}");
    *dp.iter().next().unwrap()
}

/// The rows of the conditional tables the replica should hold for local
/// datapaths `dps`, per table, from the server.
fn expected(ovn: &Ovn, dps: &[Uuid], chassis: &str) -> Vec<(&'static str, BTreeSet<Uuid>)> {
    let mut lf = find(ovn, "Logical_Flow", "logical_dp_group!=[]");
    let mut pb = find(ovn, "Port_Binding", "type=patch");
    let ours = find(ovn, "Chassis", &format!("name={chassis}"));
    for c in &ours {
        pb.extend(find(ovn, "Port_Binding", &format!("chassis={c}")));
    }
    let mut mg = BTreeSet::new();
    for dp in dps {
        lf.extend(find(ovn, "Logical_Flow", &format!("logical_datapath={dp}")));
        pb.extend(find(ovn, "Port_Binding", &format!("datapath={dp}")));
        mg.extend(find(ovn, "Multicast_Group", &format!("datapath={dp}")));
    }
    if dps.is_empty() {
        lf.clear();
    }
    vec![
        ("Logical_Flow", lf),
        ("Port_Binding", pb),
        ("Multicast_Group", mg),
        ("Datapath_Binding", dps.iter().copied().collect()),
    ]
}

fn held(s: &SessionHandle, table: &str) -> BTreeSet<Uuid> {
    s.replica().rows(table).map(|(u, _)| *u).collect()
}

/// Waits until the replica holds exactly the expected rows of each table
/// (both sides move while northd works, hence the poll), and returns the
/// Logical_Flow count.
async fn converge(ovn: &Ovn, agent: &SessionHandle, dps: &[Uuid], what: &str) -> usize {
    // --wait=hv returns once the agent acknowledged nb_cfg, which it does
    // only with its conditions settled.
    let o = ovn.nbctl_output(&["--timeout=30", "--wait=hv", "sync"]);
    assert!(o.status.success(), "--wait=hv: {}", String::from_utf8_lossy(&o.stderr));
    let mut last = String::new();
    let t0 = std::time::Instant::now();
    let n = poll_async(WAIT, what, || {
        let mut diffs = Vec::new();
        for (table, want) in expected(ovn, dps, "hv1") {
            let have = held(agent, table);
            if have != want {
                diffs.push(format!("{table}: replica {} rows, expected {}", have.len(), want.len()));
            }
        }
        let now = diffs.join("; ");
        if now != last && t0.elapsed() > Duration::from_secs(5) {
            eprintln!("{what}: still {now}");
        }
        last = now;
        diffs.is_empty().then(|| held(agent, "Logical_Flow").len())
    })
    .await;
    // Every datapath group in the replica includes a local datapath.
    let r = agent.replica();
    for (_, row) in r.rows("Logical_DP_Group") {
        let members: Vec<Uuid> = row.get("datapaths").unwrap().atoms().iter().filter_map(|a| a.as_uuid()).collect();
        assert!(members.iter().any(|m| dps.contains(m)), "{what}: foreign datapath group {members:?}");
    }
    n
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Agent>,
    session: SessionHandle,
}

/// Starts an agent for `hv1`; the test reads the agent's own replica
/// through a [`SessionHandle`].
fn start(ovn: &Ovn, ifaces: &[&str], monitor_all: bool) -> (Running, petrel_control::chassis::IfaceIds) {
    let mut cfg = AgentConfig::new("hv1", "host1", "192.0.2.1");
    cfg.iface_ids = ids(ifaces);
    cfg.monitor_all = monitor_all;
    let remotes = parse_remotes(&ovn.sb_remote()).unwrap();
    let agent = Agent::new(cfg.clone(), Session::start(cfg.session_config(remotes.clone())));
    let handle = agent.iface_ids();
    let (stop, rx) = oneshot::channel::<()>();
    let mut agent = agent;
    let session = agent.session().handle();
    let task = tokio::spawn(async move {
        agent
            .run(async {
                let _ = rx.await;
            })
            .await;
        agent
    });
    (Running { stop: Some(stop), task, session }, handle)
}

/// Waits until the agent's `Chassis_Private` exists: before that,
/// `--wait=hv` has no chassis to wait for and returns at once.
async fn registered(ovn: &Ovn) {
    poll_async(WAIT, "Chassis_Private of hv1", || (!find(ovn, "Chassis_Private", "name=hv1").is_empty()).then_some(()))
        .await;
}

impl Running {
    async fn stop(mut self) -> Agent {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

/// Logical switch `ls<n>` with `ports`, their port group and an
/// allow-related ACL on it (so the switches' flows differ and northd
/// cannot share them through datapath groups).
fn switch(ovn: &Ovn, n: u8, ports: &[&str]) {
    let ls = format!("ls{n}");
    let mut args: Vec<String> = vec!["ls-add".into(), ls.clone()];
    for (i, p) in ports.iter().enumerate() {
        args.extend(["--", "lsp-add", &ls, p].map(String::from));
        let addr = format!("0a:00:00:{n:02x}:00:{:02x} 10.{n}.0.{}", i + 2, i + 2);
        args.extend(["--".into(), "lsp-set-addresses".into(), (*p).to_owned(), addr]);
    }
    let pg = format!("pg{n}");
    args.extend(["--".into(), "pg-add".into(), pg.clone()]);
    args.extend(ports.iter().map(|p| (*p).to_owned()));
    args.extend(["--", "--type=port-group", "acl-add", &pg, "to-lport", "1002"].map(String::from));
    args.extend([format!("outport == @{pg} && ip4 && tcp.dst == 22"), "allow-related".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ovn.nbctl(&a);
}

fn flows_of(s: &SessionHandle, dp: Uuid) -> usize {
    let r = s.replica();
    r.rows("Logical_Flow")
        .filter(|(_, row)| {
            row.get("logical_datapath").and_then(|d| d.as_scalar()).and_then(|a| a.as_uuid()) == Some(dp)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_local_datapaths() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    switch(&ovn, 1, &["a1", "a2", "a3"]);
    switch(&ovn, 2, &["b1", "b2"]);
    ovn.nbctl(&["--wait=sb", "sync"]);
    let (ls1, ls2) = (datapath(&ovn, "ls1"), datapath(&ovn, "ls2"));
    let n_all = find(&ovn, "Logical_Flow", "priority>=0").len();

    let (agent, ifaces) = start(&ovn, &["a1"], false);
    registered(&ovn).await;
    let n1 = converge(&ovn, &agent.session, &[ls1], "ls1 only").await;
    eprintln!("local port on ls1: {n1} of {n_all} logical flows");
    let n_ls2 = find(&ovn, "Logical_Flow", &format!("logical_datapath={ls2}")).len();
    assert!(n_ls2 > 0 && n1 + n_ls2 <= n_all, "{n1} + {n_ls2} of {n_all}");
    assert_eq!(flows_of(&agent.session, ls2), 0);
    assert!(flows_of(&agent.session, ls1) > 0);
    assert_eq!(held(&agent.session, "Port_Binding").len(), 3, "a1..a3, no b*");

    // A local port on the second switch brings its rows in ...
    ifaces.set(ids(&["a1", "b1"]));
    let n2 = converge(&ovn, &agent.session, &[ls1, ls2], "ls1 and ls2").await;
    eprintln!("local ports on ls1 and ls2: {n2} of {n_all} logical flows");
    assert_eq!(flows_of(&agent.session, ls2), n_ls2);
    assert!(n2 > n1);
    // ... and its removal takes them out again.
    ifaces.set(ids(&["a1"]));
    converge(&ovn, &agent.session, &[ls1], "ls1 again").await;
    assert_eq!(flows_of(&agent.session, ls2), 0);

    // A router between the switches makes ls2 reachable through patch ports.
    ovn.nbctl(&[
        "lr-add",
        "lr0",
        "--",
        "lrp-add",
        "lr0",
        "lr0-ls1",
        "02:00:00:00:01:01",
        "10.3.0.1/24",
        "--",
        "lrp-add",
        "lr0",
        "lr0-ls2",
        "02:00:00:00:02:01",
        "10.4.0.1/24",
    ]);
    for ls in ["ls1", "ls2"] {
        let (sp, rp) = (format!("{ls}-lr0"), format!("lr0-{ls}"));
        ovn.nbctl(&[
            "lsp-add",
            ls,
            &sp,
            "--",
            "lsp-set-type",
            &sp,
            "router",
            "--",
            "lsp-set-addresses",
            &sp,
            "router",
            "--",
            "lsp-set-options",
            &sp,
            &format!("router-port={rp}"),
        ]);
    }
    ovn.nbctl(&["--wait=sb", "sync"]);
    let lr0 = datapath(&ovn, "lr0");
    let n3 = converge(&ovn, &agent.session, &[ls1, ls2, lr0], "ls1, lr0, ls2").await;
    eprintln!("with the router: {n3} of {} logical flows", find(&ovn, "Logical_Flow", "priority>=0").len());

    let agent = agent.stop().await;
    assert_eq!(agent.stats().n_txn_errors, 0);
    assert!(agent.stats().n_monitor_updates >= 4, "{:?}", agent.stats());
    assert_eq!(agent.stats().n_local_datapaths, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_all_holds_everything() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    switch(&ovn, 1, &["a1", "a2"]);
    switch(&ovn, 2, &["b1"]);
    let (agent, _ifaces) = start(&ovn, &["a1"], true);
    registered(&ovn).await;
    let o = ovn.nbctl_output(&["--timeout=30", "--wait=hv", "sync"]);
    assert!(o.status.success());
    poll_async(WAIT, "replica equal to the server", || {
        let r = agent.session.replica();
        (r.n_rows() > 0 && ovn.replica_diff(&r).is_empty()).then_some(())
    })
    .await;
    assert_eq!(held(&agent.session, "Datapath_Binding").len(), 2);
    let agent = agent.stop().await;
    assert_eq!(agent.stats().n_monitor_updates, 0);
}

/// A burst of condition changes: they are sent one at a time in order
/// (the monitor id changes with each), the last one wins, and the session
/// reports them settled only once the replica reflects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_change_burst_settles_on_the_last() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: false });
    for i in 0..5 {
        ovn.sbctl(&["chassis-add", &format!("ch{i}"), "geneve", &format!("192.0.2.{}", i + 1)]);
    }
    let mut cfg = petrel_control::ovsdb::SessionConfig::new(
        parse_remotes(&ovn.sb_remote()).unwrap(),
        petrel_control::sb::DATABASE,
    );
    cfg.conditions.insert("Chassis".to_owned(), serde_json::json!([false]));
    let mut s = Session::start(cfg);
    let names = |s: &Session| -> BTreeSet<String> {
        let r = s.replica();
        r.rows("Chassis")
            .map(|(_, row)| row.get("name").unwrap().as_scalar().unwrap().as_str().unwrap().to_owned())
            .collect()
    };
    poll_async(WAIT, "connected", || s.connection().map(drop)).await;
    assert!(names(&s).is_empty());
    for round in 0..20 {
        let i = round % 5;
        s.set_conditions("Chassis", serde_json::json!([["name", "==", format!("ch{i}")]]));
    }
    // The last request asked for ch4 only.
    assert!(!s.conditions_settled());
    let t0 = std::time::Instant::now();
    loop {
        let ev = tokio::time::timeout(WAIT, s.next_event()).await.expect("events").expect("session alive");
        if matches!(ev, petrel_control::ovsdb::SessionEvent::ConditionsSettled) && s.conditions_settled() {
            break;
        }
        assert!(t0.elapsed() < WAIT, "never settled");
    }
    assert_eq!(names(&s), ids(&["ch4"]));
    let st = s.stats();
    assert!(st.n_cond_changes >= 1 && st.n_cond_changes <= 20, "{st:?}");
    assert_eq!(st.n_disconnects, 0, "{st:?}");
    eprintln!("20 condition requests sent as {} monitor_cond_change", st.n_cond_changes);
}

/// A restarted Southbound: the agent resumes its conditional monitor with
/// `monitor_cond_since` (no full dump) and still holds exactly the rows of
/// its local datapaths, including ones that became local after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_monitor_survives_restart() {
    let mut ovn = Ovn::start(OvnOptions { clustered_sb: true, northd: true });
    switch(&ovn, 1, &["a1", "a2"]);
    switch(&ovn, 2, &["b1"]);
    ovn.nbctl(&["--wait=sb", "sync"]);
    let (ls1, ls2) = (datapath(&ovn, "ls1"), datapath(&ovn, "ls2"));
    let (agent, ifaces) = start(&ovn, &["a1"], false);
    registered(&ovn).await;
    converge(&ovn, &agent.session, &[ls1], "before restart").await;
    let before = agent.session.stats();

    ovn.kill_sb();
    ovn.start_sb();
    poll_async(WAIT, "reconnected", || (agent.session.stats().n_connects > before.n_connects).then_some(())).await;
    let after = agent.session.stats();
    assert_eq!(after.n_resumes, before.n_resumes + 1, "{after:?}");
    assert_eq!(after.n_full_dumps, before.n_full_dumps, "{after:?}");
    converge(&ovn, &agent.session, &[ls1], "after restart").await;
    ifaces.set(ids(&["a1", "b1"]));
    converge(&ovn, &agent.session, &[ls1, ls2], "ls2 after restart").await;
    let agent = agent.stop().await;
    assert_eq!(agent.stats().n_local_datapaths, 2);
}
