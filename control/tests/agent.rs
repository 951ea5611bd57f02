//! The chassis agent in-process against ovsdb-server + ovn-northd: release
//! when a local port goes away, and two chassis that both want a port do
//! not flap at full speed.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{poll_async, Ovn, OvnOptions, WAIT};
use petrel_control::chassis::{Agent, AgentConfig};
use petrel_control::ovsdb::{parse_remotes, Session, SessionConfig, SessionEvent};
use petrel_control::sb::{self, Change, SbEvent, SbTable};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn session(remote: &str) -> Session {
    let mut cfg = SessionConfig::new(parse_remotes(remote).unwrap(), sb::DATABASE);
    cfg.schema_check = Some(sb::check_schema);
    Session::start(cfg)
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Agent>,
}

fn spawn_agent(agent: Agent) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let mut agent = agent;
    let task = tokio::spawn(async move {
        agent
            .run(async {
                let _ = rx.await;
            })
            .await;
        agent
    });
    Running { stop: Some(stop), task }
}

impl Running {
    async fn stop(mut self) -> Agent {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

/// (chassis name, up) of a port, as the observer session sees it.
fn binding(s: &Session, port: &str) -> Option<(Option<String>, Option<bool>)> {
    let r = s.replica();
    let pb = sb::PortBinding::all(&r).into_iter().find(|p| p.logical_port == port)?;
    let name = pb.chassis.and_then(|c| sb::Chassis::get(&r, &c)).map(|c| c.name);
    Some((name, pb.up))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iface_removal_releases_port() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let mut cfg = AgentConfig::new("hv1", "host1", "192.0.2.1");
    cfg.iface_ids = ids(&["a", "b"]);
    let agent = Agent::new(cfg, session(&ovn.sb_remote()));
    let handle = agent.iface_ids();
    let running = spawn_agent(agent);
    let observer = session(&ovn.sb_remote());

    ovn.nbctl(&["ls-add", "sw0", "--", "lsp-add", "sw0", "a", "--", "lsp-add", "sw0", "b"]);
    for p in ["a", "b"] {
        poll_async(WAIT, "claimed", || (binding(&observer, p)? == (Some("hv1".to_owned()), Some(true))).then_some(()))
            .await;
    }
    handle.set(ids(&["a"]));
    poll_async(WAIT, "b released", || (binding(&observer, "b")? == (None, Some(false))).then_some(())).await;
    assert_eq!(binding(&observer, "a").unwrap(), (Some("hv1".to_owned()), Some(true)));
    // and claimed again when it comes back
    handle.set(ids(&["a", "b"]));
    poll_async(WAIT, "b claimed again", || {
        (binding(&observer, "b")? == (Some("hv1".to_owned()), Some(true))).then_some(())
    })
    .await;
    let o = ovn.nbctl_output(&["--timeout=10", "--wait=hv", "sync"]);
    assert!(o.status.success());
    let agent = running.stop().await;
    assert_eq!(agent.stats().n_releases, 1);
    assert_eq!(agent.stats().n_txn_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chassis_wanting_one_port_back_off() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let mut agents = Vec::new();
    for (name, ip) in [("hv1", "192.0.2.1"), ("hv2", "192.0.2.2")] {
        let mut cfg = AgentConfig::new(name, name, ip);
        cfg.iface_ids = ids(&["p"]);
        agents.push(spawn_agent(Agent::new(cfg, session(&ovn.sb_remote()))));
    }
    let mut observer = session(&ovn.sb_remote());
    ovn.nbctl(&["ls-add", "sw0", "--", "lsp-add", "sw0", "p"]);
    // Count changes of Port_Binding.chassis for 4 s.
    let t0 = Instant::now();
    let mut flips = 0;
    while t0.elapsed() < Duration::from_secs(4) {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), observer.next_event()).await else {
            continue;
        };
        if let SessionEvent::Changes(chs) = ev {
            for ch in &chs {
                if let SbEvent::PortBinding(Change::Update { old, new }) = sb::decode_change(ch).unwrap() {
                    if old.chassis != new.chassis && new.chassis.is_some() {
                        flips += 1;
                    }
                }
            }
        }
    }
    eprintln!("chassis changes in 4 s: {flips}");
    // Without a backoff two agents flip the port as fast as transactions go
    // (hundreds per second); with it, a handful (delays 0.5 s, 1 s, 2 s, ...).
    assert!((1..=12).contains(&flips), "{flips} chassis changes in 4 s");
    assert!(binding(&observer, "p").unwrap().0.is_some());
    for a in agents {
        a.stop().await;
    }
}
