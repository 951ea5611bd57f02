//! End to end under a real OVN: two `dpdk-testpmd` pods (`net_virtio_user`)
//! on one logical switch created with `ovn-nbctl`, attached to petreld's
//! vhost-user ports, with petrel-ovn compiling ovn-northd's logical flows.
//!
//! The pods bounce a fixed set of packets between them (testpmd 5tswap,
//! `start tx_first` on one side): a closed loop that keeps running only if
//! nothing is dropped. An ACL that does not concern that traffic, added
//! with `ovn-nbctl --wait=hv` while it runs, changes nothing (petreld drops
//! nothing); one that does stops it as soon as `--wait=hv` has returned.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use petrel_dataplane::ctl::client::Client;

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");
const EAL: &str = "--in-memory --no-pci --no-telemetry -m 256 -l 1 --main-lcore 1 --log-level=*:warning";
const MAC1: &str = "00:00:00:00:00:01";
const MAC2: &str = "00:00:00:00:00:02";

/// Kills its processes when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn petrel_ovn() -> PathBuf {
    // target/debug/deps/ovn_pods-HASH -> target/debug/petrel-ovn
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join("petrel-ovn");
    assert!(p.exists(), "{} is missing: cargo build -p petrel-control (nextest --workspace builds it)", p.display());
    p
}

fn run(cmd: &str, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let mut c = Command::new(cmd);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(o: &std::process::Output, what: &str) {
    assert!(o.status.success(), "{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn start_ovn(d: &Path, procs: &mut Procs) -> Vec<(&'static str, String)> {
    for db in ["nb", "sb"] {
        let schema = format!("/usr/share/ovn/ovn-{db}.ovsschema");
        ok(&run("ovsdb-tool", &["create", d.join(format!("{db}.db")).to_str().unwrap(), &schema], &[]), "ovsdb-tool");
        let child = Command::new("ovsdb-server")
            .arg(format!("--remote=punix:{}", d.join(format!("{db}.sock")).display()))
            .arg(format!("--unixctl={}", d.join(format!("{db}.ctl")).display()))
            .arg(format!("--log-file={}", d.join(format!("{db}.log")).display()))
            .arg("--no-chdir")
            .arg(d.join(format!("{db}.db")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    let nb = format!("unix:{}", d.join("nb.sock").display());
    let sb = format!("unix:{}", d.join("sb.sock").display());
    let northd = Command::new("ovn-northd")
        .arg(format!("--ovnnb-db={nb}"))
        .arg(format!("--ovnsb-db={sb}"))
        .arg(format!("--unixctl={}", d.join("northd.ctl").display()))
        .arg(format!("--log-file={}", d.join("northd.log").display()))
        .arg("--no-chdir")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(northd);
    let env = vec![("OVN_NB_DB", nb), ("OVN_SB_DB", sb)];
    let t0 = Instant::now();
    while !run("ovn-nbctl", &["--timeout=1", "show"], &env).status.success() {
        assert!(t0.elapsed() < Duration::from_secs(20), "NB did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    env
}

fn nbctl(env: &[(&str, String)], args: &[&str]) {
    ok(&run("ovn-nbctl", args, env), &format!("ovn-nbctl {args:?}"));
}

/// A testpmd pod bouncing what it receives back (5tswap), forwarding from
/// the start (`--stats-period` keeps the non-interactive mode running);
/// `tx_first` sends one burst first.
#[allow(clippy::too_many_arguments)]
fn pod(d: &Path, name: &str, sock: &Path, mac: &str, peer: &str, ips: &str, tx_first: bool, procs: &mut Procs) {
    let mut cmd = Command::new("dpdk-testpmd");
    // Forwarding on lcore 0, the (mostly idle) main lcore on 1, as the
    // vhost tests do; petreld's PMD polls on 1.
    cmd.args(["-l", "0,1", "--main-lcore", "1", "--no-pci", "--in-memory", "--no-telemetry", "-m", "128"])
        .args(["--single-file-segments", "--log-level=*:warning"])
        .arg(format!("--file-prefix={name}"))
        .arg(format!("--vdev=net_virtio_user0,path={},mac={mac}", sock.display()))
        .args(["--", "--forward-mode=5tswap", "--port-topology=loop", "--total-num-mbufs=4096", "--nb-cores=1"])
        .arg("--stats-period=1")
        .arg(format!("--eth-peer=0,{peer}"))
        .arg(format!("--tx-ip={ips}"));
    if tx_first {
        cmd.arg("--tx-first");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(d.join(format!("{name}.log"))).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(child);
}

/// (tx packets to pod1, tx packets to pod2, total drops) from petreld.
fn counters(c: &mut Client) -> (u64, u64, u64) {
    let s = c.stats().unwrap();
    let tx = |n: &str| s.ports.iter().find(|p| p.name == n).map_or(0, |p| p.stats.tx_packets);
    (tx("pod1"), tx("pod2"), s.drops.reasons.iter().map(|r| r.count).sum())
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pods_on_an_ovn_switch_and_an_acl_added_under_traffic() {
    if Command::new("dpdk-testpmd").arg("--version").output().is_err() {
        panic!("dpdk-testpmd missing: apt-get install dpdk-dev (scripts/bootstrap.sh)");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut procs = Procs(Vec::new());
    let env = start_ovn(d, &mut procs);
    nbctl(
        &env,
        &[
            "ls-add",
            "sw0",
            "--",
            "lsp-add",
            "sw0",
            "pod1",
            "--",
            "lsp-set-addresses",
            "pod1",
            "00:00:00:00:00:01 10.0.0.1",
            "--",
            "lsp-set-port-security",
            "pod1",
            "00:00:00:00:00:01 10.0.0.1",
            "--",
            "lsp-add",
            "sw0",
            "pod2",
            "--",
            "lsp-set-addresses",
            "pod2",
            "00:00:00:00:00:02 10.0.0.2",
            "--",
            "lsp-set-port-security",
            "pod2",
            "00:00:00:00:00:02 10.0.0.2",
        ],
    );
    let (s1, s2) = (d.join("pod1.sock"), d.join("pod2.sock"));
    let socket = d.join("petreld.sock");
    let petreld = Command::new(PETRELD)
        .args(["--eal-args", EAL, "--pmd-cores", "1"])
        .arg("--control-socket")
        .arg(&socket)
        .arg("--port")
        .arg(format!("pod1=vhost-user,path={},mode=server,iface-id=pod1", s1.display()))
        .arg("--port")
        .arg(format!("pod2=vhost-user,path={},mode=server,iface-id=pod2", s2.display()))
        .stdout(std::fs::File::create(d.join("petreld.log")).unwrap())
        .stderr(std::fs::File::create(d.join("petreld.err")).unwrap())
        .spawn()
        .unwrap();
    procs.0.push(petreld);
    wait_for("petreld's control socket", Duration::from_secs(30), || socket.exists() && s1.exists());
    let ovn = Command::new(petrel_ovn())
        .arg("--remote")
        .arg(&env[1].1)
        .args(["--system-id", "hv1", "--encap-ip", "127.0.0.1", "--dataplane"])
        .arg(&socket)
        .stderr(std::fs::File::create(d.join("petrel-ovn.log")).unwrap())
        .spawn()
        .unwrap();
    procs.0.push(ovn);
    nbctl(&env, &["--timeout=30", "--wait=hv", "sync"]);

    let mut ctl = Client::connect(&socket, "ovn_pods test").unwrap();
    let up = |ctl: &mut Client, n: &str| ctl.show().unwrap().ports.iter().any(|p| p.name == n && p.state == "up");
    // pod2 first, forwarding; then pod1 sends the first burst to it.
    pod(d, "pod2", &s2, MAC2, MAC1, "10.0.0.2,10.0.0.1", false, &mut procs);
    wait_for("pod2 connected", Duration::from_secs(30), || up(&mut ctl, "pod2"));
    std::thread::sleep(Duration::from_millis(500));
    pod(d, "pod1", &s1, MAC1, MAC2, "10.0.0.1,10.0.0.2", true, &mut procs);
    let t0 = Instant::now();
    loop {
        let (x, y, _) = counters(&mut ctl);
        if x > 10_000 && y > 10_000 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let log = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
            panic!(
                "no traffic both ways: {:?}\n{:?}\n{:?}\npod1: {}\npetrel-ovn: {}",
                ctl.stats().unwrap().ports,
                ctl.drops().unwrap().reasons.iter().filter(|r| r.count > 0).collect::<Vec<_>>(),
                ctl.refusals().unwrap().refusals.len(),
                log("pod1.log"),
                log("petrel-ovn.log").lines().rev().take(5).collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, _, drops0) = counters(&mut ctl);
    assert_eq!(drops0, 0, "nothing dropped before any ACL: {:?}", ctl.drops().unwrap());

    // An ACL for other traffic, while the loop runs: in force when
    // --wait=hv returns, and the loop loses nothing.
    let t = Instant::now();
    nbctl(&env, &["--timeout=30", "--wait=hv", "acl-add", "sw0", "to-lport", "1000", "udp.dst == 53", "drop"]);
    eprintln!("ACL 1 in force after {:?}", t.elapsed());
    let (x1, y1, _) = counters(&mut ctl);
    std::thread::sleep(Duration::from_millis(500));
    let (x2, y2, drops1) = counters(&mut ctl);
    assert!(x2 > x1 && y2 > y1, "the loop keeps running: {x1}->{x2}, {y1}->{y2}");
    assert_eq!(drops1, 0, "no packet of the loop was lost: {:?}", ctl.drops().unwrap());

    // An ACL for this traffic: once --wait=hv returns, nothing passes.
    nbctl(&env, &["--timeout=30", "--wait=hv", "acl-add", "sw0", "from-lport", "1000", "ip4 && udp.dst == 9", "drop"]);
    std::thread::sleep(Duration::from_millis(200));
    let (x3, y3, _) = counters(&mut ctl);
    std::thread::sleep(Duration::from_millis(500));
    let (x4, y4, drops2) = counters(&mut ctl);
    assert_eq!((x4, y4), (x3, y3), "nothing forwarded once the drop ACL is in force");
    let explicit = ctl.drops().unwrap().reasons.iter().find(|r| r.reason == "explicit").map_or(0, |r| r.count);
    let nonzero: Vec<_> = ctl.drops().unwrap().reasons.into_iter().filter(|r| r.count > 0).collect();
    assert!(drops2 > 0 && explicit > 0, "the loop's packets were dropped by the ACL: {nonzero:?}");
}

/// Whether OVN's Southbound binds `lsp` to a chassis.
fn sb_bound(env: &[(&str, String)], lsp: &str) -> bool {
    let o =
        run("ovn-sbctl", &["--bare", "--columns=chassis", "find", "port_binding", &format!("logical_port={lsp}")], env);
    ok(&o, "ovn-sbctl find port_binding");
    !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

/// Pods come and go while petreld runs, as petrel-cni drives it: petreld
/// starts with no port; `add_port` with an iface-id makes petrel-ovn claim
/// the logical port and traffic flows; `del_port` under traffic closes the
/// pod's socket, releases the binding and leaves the other port forwarding;
/// a new pod takes the freed slot and gets its own traffic, and tables
/// that still bind the freed slot to the old pod are refused.
#[test]
fn pods_added_and_removed_at_runtime() {
    use petrel_dataplane::ctl::proto::{BindingMsg, DatapathMsg, LocalPortMsg, PortMsg, SnapshotMsg};
    use petrel_dataplane::ctl::ClientError;

    if Command::new("dpdk-testpmd").arg("--version").output().is_err() {
        panic!("dpdk-testpmd missing: apt-get install dpdk-dev (scripts/bootstrap.sh)");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut procs = Procs(Vec::new());
    let env = start_ovn(d, &mut procs);
    let mut ls = vec!["ls-add", "sw0"];
    let specs = [
        ("pod1", "00:00:00:00:00:01 10.0.0.1"),
        ("pod2", "00:00:00:00:00:02 10.0.0.2"),
        ("pod3", "00:00:00:00:00:03 10.0.0.3"),
    ];
    for (name, addr) in &specs {
        ls.extend(["--", "lsp-add", "sw0", name, "--", "lsp-set-addresses", name, addr]);
    }
    nbctl(&env, &ls);
    let socket = d.join("petreld.sock");
    let petreld = Command::new(PETRELD)
        .args(["--eal-args", EAL, "--pmd-cores", "1"])
        .arg("--control-socket")
        .arg(&socket)
        .stdout(std::fs::File::create(d.join("petreld.log")).unwrap())
        .stderr(std::fs::File::create(d.join("petreld.err")).unwrap())
        .spawn()
        .unwrap();
    procs.0.push(petreld);
    wait_for("petreld's control socket", Duration::from_secs(30), || socket.exists());
    let ovn = Command::new(petrel_ovn())
        .arg("--remote")
        .arg(&env[1].1)
        .args(["--system-id", "hv1", "--encap-ip", "127.0.0.1", "--dataplane"])
        .arg(&socket)
        .stderr(std::fs::File::create(d.join("petrel-ovn.log")).unwrap())
        .spawn()
        .unwrap();
    procs.0.push(ovn);
    let mut ctl = Client::connect(&socket, "ovn_pods test").unwrap();
    assert!(ctl.show().unwrap().ports.is_empty(), "petreld starts without ports");

    let sock = |n: &str| d.join(format!("{n}.sock"));
    let spec = |n: &str| format!("{n}=vhost-user,path={},mode=server,iface-id={n}", sock(n).display());
    let p1 = ctl.add_port(&spec("pod1")).unwrap();
    let p2 = ctl.add_port(&spec("pod2")).unwrap();
    assert_eq!((p1.index, p2.index), (0, 1));
    assert!(sock("pod1").exists() && sock("pod2").exists(), "server sockets exist when add_port returns");
    // A second port with a name, socket or iface-id in use is refused.
    for bad in [
        spec("pod1"),
        format!("podx=vhost-user,path={},mode=server", sock("pod1").display()),
        format!("podx=vhost-user,path={},mode=server,iface-id=pod2", sock("x").display()),
        "podx=vhost-user,mode=server".to_owned(),
        "podx=tap,path=/x".to_owned(),
    ] {
        match ctl.add_port(&bad) {
            Err(ClientError::Remote(e)) => eprintln!("refused as expected: {bad}: {}", e.message),
            other => panic!("add_port({bad}) should be refused: {other:?}"),
        }
    }
    wait_for("pod1 and pod2 bound in the Southbound", Duration::from_secs(30), || {
        sb_bound(&env, "pod1") && sb_bound(&env, "pod2")
    });
    nbctl(&env, &["--timeout=30", "--wait=hv", "sync"]);

    let up = |ctl: &mut Client, n: &str| ctl.show().unwrap().ports.iter().any(|p| p.name == n && p.state == "up");
    pod(d, "pod2", &sock("pod2"), MAC2, MAC1, "10.0.0.2,10.0.0.1", false, &mut procs);
    wait_for("pod2 connected", Duration::from_secs(30), || up(&mut ctl, "pod2"));
    std::thread::sleep(Duration::from_millis(500));
    pod(d, "pod1", &sock("pod1"), MAC1, MAC2, "10.0.0.1,10.0.0.2", true, &mut procs);
    wait_for("traffic both ways between pod1 and pod2", Duration::from_secs(20), || {
        let (x, y, _) = counters(&mut ctl);
        x > 10_000 && y > 10_000
    });

    // Remove pod2 under traffic.
    let gone = ctl.del_port("pod2").unwrap();
    assert_eq!(gone.index, 1);
    assert!(gone.stats.tx_packets > 10_000, "the reply carries the final counters: {gone:?}");
    assert!(!sock("pod2").exists(), "pod2's server socket is removed");
    let show = ctl.show().unwrap();
    assert_eq!(show.ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["pod1"]);
    wait_for("pod2 released in the Southbound", Duration::from_secs(30), || !sb_bound(&env, "pod2"));
    match ctl.del_port("pod2") {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, petrel_dataplane::ctl::proto::ErrorCode::NotFound),
        other => panic!("removing a removed port: {other:?}"),
    }
    // pod1 keeps being polled: what it sends now goes to an unbound port
    // and is dropped, counted on pod1.
    let rx1 = |ctl: &mut Client| ctl.stats().unwrap().ports.iter().find(|p| p.name == "pod1").unwrap().stats.rx_packets;
    let before = rx1(&mut ctl);

    // pod3 takes the freed slot.
    let p3 = ctl.add_port(&spec("pod3")).unwrap();
    assert_eq!(p3.index, 2, "a freed slot is reused last (round robin)");
    assert_eq!(p3.stats.tx_packets, 0, "a new port's counters start at zero");
    // Tables binding pod2's slot (compiled before the removal) are refused.
    let stale = SnapshotMsg {
        generation: 0,
        datapaths: vec![DatapathMsg {
            key: 1,
            name: "sw0".into(),
            ports: vec![PortMsg {
                key: 2,
                name: Some("pod2".into()),
                binding: Some(BindingMsg::Local { port: 1, vlan: None }),
            }],
            ..DatapathMsg::default()
        }],
        local_ports: vec![None, Some(LocalPortMsg { datapath: 1, port: 2 })],
        ..SnapshotMsg::default()
    };
    match ctl.publish(stale) {
        Err(ClientError::Remote(e)) => assert!(e.message.contains("removed"), "{}", e.message),
        other => panic!("stale tables must be refused: {other:?}"),
    }
    wait_for("pod3 bound in the Southbound", Duration::from_secs(30), || sb_bound(&env, "pod3"));
    nbctl(&env, &["--timeout=30", "--wait=hv", "sync"]);
    pod(d, "pod3", &sock("pod3"), "00:00:00:00:00:03", MAC1, "10.0.0.3,10.0.0.1", true, &mut procs);
    wait_for("pod3 receives", Duration::from_secs(20), || {
        ctl.stats().unwrap().ports.iter().find(|p| p.name == "pod3").is_some_and(|p| p.stats.tx_packets > 1000)
    });
    assert!(rx1(&mut ctl) > before, "pod1 was polled throughout");
    let log = std::fs::read_to_string(d.join("petreld.err")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}
