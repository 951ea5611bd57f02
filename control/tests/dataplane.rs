//! `petrel-ovn --dataplane`: local ports learnt from petreld's control
//! socket, against ovsdb-server + ovn-northd and a fake petreld (the real
//! control-socket server in front of a test [`Node`] whose ports the test
//! changes).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{poll, spawn, Ovn, OvnOptions, Reaped, WAIT};
use petrel_dataplane::ctl::proto::{
    Change, DropsReply, ErrorReply, PmdStatsReply, PortInfo, PortStats, ShowReply, SnapshotMsg, StatsReply,
    TablesReply, TraceReply,
};
use petrel_dataplane::ctl::{serve, Node, SocketOpts};

/// A petreld that only has ports: (name, iface-id).
#[derive(Debug, Default)]
struct FakeNode {
    ports: Mutex<Vec<(String, Option<String>)>>,
}

impl FakeNode {
    fn set_ports(&self, ports: &[(&str, Option<&str>)]) {
        *self.ports.lock().unwrap() = ports.iter().map(|(n, i)| ((*n).to_owned(), i.map(str::to_owned))).collect();
    }

    fn port_infos(&self) -> Vec<PortInfo> {
        self.ports
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, (name, iface_id))| PortInfo {
                index: u16::try_from(i).unwrap(),
                name: name.clone(),
                kind: format!("dpdk net_vhost{i}"),
                state: "up".into(),
                iface_id: iface_id.clone(),
                logical: None,
                stats: PortStats::default(),
            })
            .collect()
    }
}

fn refused() -> ErrorReply {
    ErrorReply::rejected("the fake petreld has no tables")
}

impl Node for FakeNode {
    fn generation(&self) -> u64 {
        0
    }
    fn show(&self) -> ShowReply {
        ShowReply {
            uplinks: Vec::new(),
            tunnels: Vec::new(),
            server: self.server_name(),
            uptime_secs: 1.0,
            generation: 0,
            n_datapaths: 0,
            n_rules: 0,
            n_pmds: 1,
            ports: self.port_infos(),
        }
    }
    fn pmd_stats(&self) -> PmdStatsReply {
        PmdStatsReply { tsc_hz: 1_000_000_000, pmds: Vec::new() }
    }
    fn dump_tables(&self, _datapath: Option<&str>) -> Result<TablesReply, ErrorReply> {
        Err(refused())
    }
    fn drops(&self) -> DropsReply {
        DropsReply { reasons: Vec::new() }
    }
    fn trace(&self, _port: &str, _packet: &str) -> Result<TraceReply, ErrorReply> {
        Err(refused())
    }
    fn publish(&self, _snap: SnapshotMsg) -> Result<u64, ErrorReply> {
        // Accepted and ignored: these tests are about ports, but petrel-ovn
        // acknowledges nb_cfg only once its tables are published.
        Ok(1)
    }
    fn apply(&self, _changes: Vec<Change>) -> Result<u64, ErrorReply> {
        Err(refused())
    }
    fn stats(&self) -> StatsReply {
        StatsReply { generation: 0, ports: self.port_infos(), pmds: self.pmd_stats(), drops: self.drops() }
    }
}

/// The fake petreld serving on a socket; stopped on drop.
struct FakePetreld {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakePetreld {
    fn start(path: &Path, node: &Arc<FakeNode>) -> FakePetreld {
        let stop = Arc::new(AtomicBool::new(false));
        let node: Arc<dyn Node> = node.clone();
        let thread = serve(path, SocketOpts::default(), node, stop.clone()).unwrap();
        FakePetreld { stop, thread: Some(thread) }
    }

    /// Stops serving: connections are closed and the socket removed.
    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for FakePetreld {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Setup {
    ovn: Ovn,
    sock: PathBuf,
    node: Arc<FakeNode>,
}

impl Setup {
    fn new() -> Setup {
        let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
        let sock = ovn.dir.path().join("run/petreld.sock");
        ovn.nbctl(&["ls-add", "sw0"]);
        for p in ["lsp1", "lsp2", "lsp-static"] {
            ovn.nbctl(&["lsp-add", "sw0", p]);
        }
        Setup { ovn, sock, node: Arc::new(FakeNode::default()) }
    }

    fn petreld(&self) -> FakePetreld {
        FakePetreld::start(&self.sock, &self.node)
    }

    fn agent(&self, grace_ms: u64, extra: &[&str]) -> Reaped {
        let grace = grace_ms.to_string();
        let mut args = vec![
            "--remote".to_owned(),
            self.ovn.sb_remote(),
            "--system-id".to_owned(),
            "hv-petrel".to_owned(),
            "--encap-ip".to_owned(),
            "192.0.2.10".to_owned(),
            "--dataplane".to_owned(),
            self.sock.to_str().unwrap().to_owned(),
            "--dataplane-poll-ms".to_owned(),
            "50".to_owned(),
            "--dataplane-grace-ms".to_owned(),
            grace,
            "--log".to_owned(),
            "debug".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Reaped(Some(spawn(env!("CARGO_BIN_EXE_petrel-ovn"), &a, &self.log_path())))
    }

    fn log_path(&self) -> PathBuf {
        self.ovn.dir.path().join("petrel-ovn.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn chassis(&self) -> Option<String> {
        let out = self.ovn.sbctl(&["--bare", "--columns=_uuid", "find", "Chassis", "name=hv-petrel"]);
        let s = out.trim().to_owned();
        (!s.is_empty()).then_some(s)
    }

    /// (chassis, up) of a Port_Binding.
    fn binding(&self, port: &str) -> (String, String) {
        let get = |col: &str| {
            self.ovn
                .sbctl(&[
                    "--bare",
                    &format!("--columns={col}"),
                    "find",
                    "Port_Binding",
                    &format!("logical_port={port}"),
                ])
                .trim()
                .to_owned()
        };
        (get("chassis"), get("up"))
    }

    fn wait_claimed(&self, port: &str, ch: &str) {
        poll(WAIT, &format!("{port} claimed"), || {
            (self.binding(port) == (ch.to_owned(), "true".to_owned())).then_some(())
        });
    }

    fn wait_released(&self, port: &str) {
        poll(WAIT, &format!("{port} released"), || {
            (self.binding(port) == (String::new(), "false".to_owned())).then_some(())
        });
    }
}

#[test]
fn ports_are_claimed_when_they_appear_in_petreld_and_released_when_they_go() {
    let s = Setup::new();
    s.node.set_ports(&[("vhu1", Some("lsp1")), ("uplink", None), ("empty", Some(""))]);
    let _petreld = s.petreld();
    let _agent = s.agent(10_000, &["--iface-id", "lsp-static"]);
    let ch = poll(WAIT, "Chassis row", || s.chassis());

    s.wait_claimed("lsp1", &ch);
    s.wait_claimed("lsp-static", &ch);
    assert_eq!(s.binding("lsp2").0, "", "not declared by any port");

    // A port appears.
    s.node.set_ports(&[("vhu1", Some("lsp1")), ("uplink", None), ("vhu2", Some("lsp2"))]);
    s.wait_claimed("lsp2", &ch);
    // A port goes: released; the others stay.
    s.node.set_ports(&[("uplink", None), ("vhu2", Some("lsp2"))]);
    s.wait_released("lsp1");
    assert_eq!(s.binding("lsp2"), (ch.clone(), "true".to_owned()));
    assert_eq!(s.binding("lsp-static"), (ch.clone(), "true".to_owned()));
    // `--wait=hv` still works with learnt ports.
    let o = s.ovn.nbctl_output(&["--timeout=10", "--wait=hv", "sync"]);
    assert!(o.status.success(), "--wait=hv: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn agent_started_before_petreld_claims_once_the_socket_appears() {
    let s = Setup::new();
    s.node.set_ports(&[("vhu1", Some("lsp1"))]);
    let _agent = s.agent(10_000, &[]);
    let ch = poll(WAIT, "Chassis row", || s.chassis());
    // Chassis registered, but nb_cfg is not acknowledged without petreld:
    // `--wait=hv` means "in force in the fast path", and no tables are.
    let o = s.ovn.nbctl_output(&["--timeout=2", "--wait=hv", "sync"]);
    assert!(!o.status.success(), "--wait=hv returned without petreld");
    assert_eq!(s.binding("lsp1").0, "");
    // Let it retry a few times (backoff 100, 200, 400 ms ...).
    poll(WAIT, "first connection attempt", || s.log().contains("petreld not reachable").then_some(()));
    std::thread::sleep(Duration::from_millis(800));

    let _petreld = s.petreld();
    s.wait_claimed("lsp1", &ch);
    let o = s.ovn.nbctl_output(&["--timeout=10", "--wait=hv", "sync"]);
    assert!(o.status.success(), "--wait=hv once petreld runs the tables: {}", String::from_utf8_lossy(&o.stderr));
    let log = s.log();
    assert_eq!(log.matches("petreld not reachable").count(), 1, "logged once, not per retry:\n{log}");
    assert_eq!(log.matches("connected to petreld").count(), 1, "{log}");
}

#[test]
fn petreld_restart_within_the_grace_period_does_not_release() {
    let s = Setup::new();
    s.node.set_ports(&[("vhu1", Some("lsp1")), ("vhu2", Some("lsp2"))]);
    let petreld = s.petreld();
    let grace = Duration::from_millis(4000);
    let _agent = s.agent(4000, &[]);
    let ch = poll(WAIT, "Chassis row", || s.chassis());
    s.wait_claimed("lsp1", &ch);
    s.wait_claimed("lsp2", &ch);
    let claimed = (ch.clone(), "true".to_owned());

    // petreld goes away; the ports stay claimed meanwhile.
    let t_stop = Instant::now();
    petreld.stop();
    poll(WAIT, "loss noticed", || s.log().contains("lost petreld").then_some(()));
    for _ in 0..4 {
        assert_eq!(s.binding("lsp1"), claimed, "released while petreld restarts");
        std::thread::sleep(Duration::from_millis(100));
    }
    // It comes back (a new instance) with one port fewer, within the grace period.
    s.node.set_ports(&[("vhu1", Some("lsp1"))]);
    let _petreld = s.petreld();
    assert!(t_stop.elapsed() < grace, "the test itself was too slow: {:?}", t_stop.elapsed());
    poll(WAIT, "new instance noticed", || s.log().contains("petreld restarted (new instance)").then_some(()));
    // The port gone from the new petreld is released; the other one stays
    // claimed past the end of the original grace period, without a release.
    s.wait_released("lsp2");
    while t_stop.elapsed() < grace + Duration::from_millis(1000) {
        assert_eq!(s.binding("lsp1"), claimed, "released after a petreld restart");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = s.log();
    let releases: Vec<&str> = log.lines().filter(|l| l.contains("released logical port")).collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert!(releases[0].contains("lsp2"), "{releases:?}");
    assert!(!log.contains("releasing its ports"), "{log}");
}

#[test]
fn ports_are_released_after_the_grace_period_without_petreld() {
    let s = Setup::new();
    s.node.set_ports(&[("vhu1", Some("lsp1"))]);
    let petreld = s.petreld();
    let grace = Duration::from_millis(1000);
    let _agent = s.agent(1000, &["--iface-id", "lsp-static"]);
    let ch = poll(WAIT, "Chassis row", || s.chassis());
    s.wait_claimed("lsp1", &ch);
    s.wait_claimed("lsp-static", &ch);

    let t_stop = Instant::now();
    petreld.stop();
    s.wait_released("lsp1");
    let after = t_stop.elapsed();
    assert!(after >= grace, "released {after:?} after petreld stopped, before the {grace:?} grace period");
    assert_eq!(s.binding("lsp-static"), (ch, "true".to_owned()), "--iface-id ports stay local");
    let log = s.log();
    assert_eq!(log.matches("lost petreld").count(), 1, "{log}");
    assert!(log.contains("releasing its ports"), "{log}");
}

#[test]
fn help_documents_the_dataplane_flags_and_the_grace_period() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_petrel-ovn")).arg("--help").output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for word in ["--dataplane <SOCKET>", "--dataplane-poll-ms", "--dataplane-grace-ms", "Local ports:", "flap"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}
