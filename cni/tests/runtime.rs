//! The test is the container runtime: it runs `petrel-cni` as containerd
//! does (the `CNI_*` environment, the network configuration on stdin, one
//! network namespace per pod) against a real petreld + petrel-ovn under a
//! real ovsdb-server + ovn-northd, then runs `dpdk-testpmd` in each pod's
//! namespace on the socket the result names, and checks that traffic goes
//! from pod to pod through the OVN switch.
//!
//! pod1 is attached by a network that creates its logical switch port and
//! takes its address from Debian's `host-local` IPAM; pod2's port exists in
//! the NB already with `dynamic` addresses (ovn-northd picks them), and its
//! shared directory is longer than a Unix socket address can hold.
//! Then CHECK, DEL (twice), and everything made is verified gone.
//!
//! Needs root, hugepages, DPDK, OVN and containernetworking-plugins
//! (`scripts/bootstrap.sh`); a missing tool fails the test with that hint.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use petrel_dataplane::ctl::client::Client;
use serde_json::{json, Value};

const CNI: &str = env!("CARGO_BIN_EXE_petrel-cni");
const EAL: &str = "--in-memory --no-pci --no-telemetry -m 256 -l 1 --main-lcore 1 --log-level=*:warning";

/// Kills its processes and removes its network namespaces when dropped.
#[derive(Default)]
struct Cleanup {
    procs: Vec<Child>,
    netns: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// `target/debug/NAME` (cargo nextest --workspace builds every binary).
fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(p.exists(), "{} is missing: cargo build --bins (nextest --workspace builds it)", p.display());
    p
}

fn require(tool: &str, arg: &str, package: &str) {
    let ok = Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success() || !o.stdout.is_empty());
    assert!(ok, "{tool} is missing: apt-get install {package} (scripts/bootstrap.sh installs it)");
}

fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn start_ovn(d: &Path, c: &mut Cleanup) -> (String, String) {
    for db in ["nb", "sb"] {
        let schema = format!("/usr/share/ovn/ovn-{db}.ovsschema");
        let file = d.join(format!("{db}.db"));
        ok(&Command::new("ovsdb-tool").arg("create").arg(&file).arg(schema).output().unwrap(), "ovsdb-tool create");
        c.procs.push(
            Command::new("ovsdb-server")
                .arg(format!("--remote=punix:{}", d.join(format!("{db}.sock")).display()))
                .arg(format!("--unixctl={}", d.join(format!("{db}.ctl")).display()))
                .arg(format!("--log-file={}", d.join(format!("{db}.log")).display()))
                .arg("--no-chdir")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let nb = format!("unix:{}", d.join("nb.sock").display());
    let sb = format!("unix:{}", d.join("sb.sock").display());
    c.procs.push(
        Command::new("ovn-northd")
            .arg(format!("--ovnnb-db={nb}"))
            .arg(format!("--ovnsb-db={sb}"))
            .arg(format!("--unixctl={}", d.join("northd.ctl").display()))
            .arg(format!("--log-file={}", d.join("northd.log").display()))
            .arg("--no-chdir")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the NB", Duration::from_secs(20), || nbctl_try(&nb, &["show"]).is_some());
    (nb, sb)
}

fn nbctl_try(nb: &str, args: &[&str]) -> Option<String> {
    let o = Command::new("ovn-nbctl").arg(format!("--db={nb}")).arg("--timeout=10").args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn nbctl(nb: &str, args: &[&str]) -> String {
    nbctl_try(nb, args).unwrap_or_else(|| panic!("ovn-nbctl {args:?} failed"))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod as the runtime sees it.
struct Pod {
    name: &'static str,
    container_id: String,
    netns: String,
}

impl Pod {
    fn new(name: &'static str, c: &mut Cleanup) -> Self {
        let netns = format!("petrel-cni-test-{name}-{}", std::process::id());
        ok(&Command::new("ip").args(["netns", "add", &netns]).output().unwrap(), "ip netns add");
        c.netns.push(netns.clone());
        Pod { name, container_id: format!("{:0>64}", format!("{name}{}", std::process::id())), netns }
    }

    /// Runs the plugin as containerd does.
    fn cni(&self, command: &str, conf: &Value) -> (bool, Value) {
        let mut child = Command::new(CNI)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", format!("/var/run/netns/{}", self.netns))
            .env("CNI_IFNAME", "net1")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_UID=uid-{}",
                    self.name, self.name
                ),
            )
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        let out = if o.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&o.stdout).unwrap() };
        (o.status.success(), out)
    }

    fn add(&self, conf: &Value) -> Value {
        let (good, r) = self.cni("ADD", conf);
        assert!(good, "ADD {}: {r}", self.name);
        r
    }

    /// dpdk-testpmd in the pod's namespace on the result's socket, bouncing
    /// what it gets (5tswap); `tx_first` sends the first burst.
    fn testpmd(&self, d: &Path, result: &Value, peer_mac: &str, peer_ip: &str, tx_first: bool, c: &mut Cleanup) {
        let sock = result["interfaces"][0]["socketPath"].as_str().unwrap();
        let mac = result["interfaces"][0]["mac"].as_str().unwrap();
        let ip = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "dpdk-testpmd"])
            .args(["-l", "0,1", "--main-lcore", "1", "--no-pci", "--in-memory", "--no-telemetry", "-m", "128"])
            .args(["--single-file-segments", "--log-level=*:warning"])
            .arg(format!("--file-prefix={}", self.name))
            .arg(format!("--vdev=net_virtio_user0,path={sock},mac={mac}"))
            .args(["--", "--forward-mode=5tswap", "--port-topology=loop", "--total-num-mbufs=4096", "--nb-cores=1"])
            .arg("--stats-period=1")
            .arg(format!("--eth-peer=0,{peer_mac}"))
            .arg(format!("--tx-ip={ip},{peer_ip}"));
        if tx_first {
            cmd.arg("--tx-first");
        }
        let log = std::fs::File::create(d.join(format!("{}.log", self.name))).unwrap();
        c.procs.push(cmd.stdin(Stdio::null()).stdout(log).stderr(Stdio::null()).spawn().unwrap());
    }
}

fn tx(ctl: &mut Client, port: &str) -> u64 {
    ctl.stats().unwrap().ports.iter().find(|p| p.name == port).map_or(0, |p| p.stats.tx_packets)
}

fn files_under(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(files_under(&e.path()));
            }
        }
    }
    out
}

#[test]
fn two_pods_through_ovn_attached_by_the_plugin() {
    require("dpdk-testpmd", "--version", "dpdk-dev");
    require("ovn-nbctl", "--version", "ovn-central");
    assert!(
        Path::new("/usr/lib/cni/host-local").exists(),
        "host-local missing: apt-get install containernetworking-plugins"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut c = Cleanup::default();
    let (nb, sb) = start_ovn(d, &mut c);
    nbctl(
        &nb,
        &[
            "ls-add",
            "sw0",
            "--",
            "set",
            "Logical_Switch",
            "sw0",
            "other_config:subnet=10.0.0.0/24",
            "other_config:exclude_ips=10.0.0.100..10.0.0.200",
            "--",
            "lsp-add",
            "sw0",
            "pod2.default",
            "--",
            "lsp-set-addresses",
            "pod2.default",
            "dynamic",
        ],
    );

    let control = d.join("petreld.sock");
    c.procs.push(
        Command::new(sibling_bin("petreld"))
            .args(["--eal-args", EAL, "--pmd-cores", "1", "--control-socket"])
            .arg(&control)
            .stdout(std::fs::File::create(d.join("petreld.log")).unwrap())
            .stderr(std::fs::File::create(d.join("petreld.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("petreld's control socket", Duration::from_secs(30), || control.exists());
    c.procs.push(
        Command::new(sibling_bin("petrel-ovn"))
            .args(["--remote", &sb, "--system-id", "hv1", "--encap-ip", "127.0.0.1", "--dataplane"])
            .arg(&control)
            .stderr(std::fs::File::create(d.join("petrel-ovn.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let socket_dir = d.join("s");
    let state_dir = d.join("state");
    let ipam_dir = d.join("ipam");
    // The pod's directory on the host, as kubelet lays out an emptyDir: longer than sun_path.
    let kubelet = d.join("kubelet").join("pods").join("x".repeat(40));
    let shared = format!("{}/{{K8S_POD_UID}}/volumes/kubernetes.io~empty-dir/petrel-sockets", kubelet.display());
    let base = json!({
        "cniVersion": "1.1.0", "type": "petrel",
        "socketDir": socket_dir, "stateDir": state_dir, "controlSocket": control,
        "nbDb": nb, "bindTimeout": 30,
    });
    let mut with_ipam = base.clone();
    with_ipam["name"] = json!("dpdk-a");
    with_ipam["createPort"] = json!(true);
    with_ipam["logicalSwitch"] = json!("sw0");
    with_ipam["ipam"] = json!({"type": "host-local", "subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100",
                               "rangeEnd": "10.0.0.200", "gateway": "10.0.0.1", "dataDir": ipam_dir});
    let mut from_lsp = base.clone();
    from_lsp["name"] = json!("dpdk-b");
    from_lsp["sharedDir"] = json!(shared);

    let pod1 = Pod::new("pod1", &mut c);
    let pod2 = Pod::new("pod2", &mut c);
    let r1 = pod1.add(&with_ipam);
    let r2 = pod2.add(&from_lsp);
    eprintln!("pod1: {r1}\npod2: {r2}");

    // pod1: host-local's address, and an LSP made for it with that address and port security.
    assert_eq!(r1["ips"][0]["address"], "10.0.0.100/24");
    assert_eq!(r1["ips"][0]["gateway"], "10.0.0.1");
    assert!(ipam_dir.join("dpdk-a").join("10.0.0.100").exists(), "host-local recorded the allocation");
    let mac1 = r1["interfaces"][0]["mac"].as_str().unwrap().to_owned();
    let ps = nbctl(&nb, &["lsp-get-port-security", "pod1.default"]);
    assert_eq!(ps.trim(), format!("{mac1} 10.0.0.100"));
    // pod2: ovn-northd's dynamic address, with the switch's prefix.
    let dynamic = nbctl(&nb, &["get", "Logical_Switch_Port", "pod2.default", "dynamic_addresses"]);
    let (mac2, ip2) = {
        let t = dynamic.trim().trim_matches('"');
        let (m, i) = t.split_once(' ').unwrap();
        (m.to_owned(), i.to_owned())
    };
    assert_eq!(r2["interfaces"][0]["mac"], mac2.as_str());
    assert_eq!(r2["ips"][0]["address"], format!("{ip2}/24"));
    // pod2's socket: a short path whose file lives in the long directory.
    let sock2 = PathBuf::from(r2["interfaces"][0]["socketPath"].as_str().unwrap());
    let long = kubelet.join("uid-pod2").join("volumes").join("kubernetes.io~empty-dir").join("petrel-sockets");
    assert!(sock2.as_os_str().len() < 108 && long.join("net1.sock").as_os_str().len() > 108);
    assert!(long.join("net1.sock").exists(), "the socket is in the pod's directory");
    let data: Value = serde_json::from_slice(
        &std::fs::read(long.join(format!("configData-{}-net1.json", &pod2.container_id[..12]))).unwrap(),
    )
    .unwrap();
    assert_eq!(data["config"]["vhost"]["mode"], "client");
    assert_eq!(data["ipResult"]["ips"][0]["address"], format!("{ip2}/24"));

    // Bound (ADD waited for it), so CHECK passes.
    for (p, conf, r) in [(&pod1, &with_ipam, &r1), (&pod2, &from_lsp, &r2)] {
        let mut conf = conf.clone();
        conf["prevResult"] = r.clone();
        let (good, out) = p.cni("CHECK", &conf);
        assert!(good, "CHECK {}: {out}", p.name);
    }

    // Traffic: pod2 bounces, pod1 starts; both directions through OVN's tables.
    let mut ctl = Client::connect(&control, "petrel-cni test").unwrap();
    let show = ctl.show().unwrap();
    let port_of = |lsp: &str| show.ports.iter().find(|p| p.iface_id.as_deref() == Some(lsp)).unwrap().name.clone();
    let (port1, port2) = (port_of("pod1.default"), port_of("pod2.default"));
    pod2.testpmd(d, &r2, &mac1, "10.0.0.100", false, &mut c);
    wait_for("pod2 connected", Duration::from_secs(30), || {
        ctl.show().unwrap().ports.iter().any(|p| p.name == port2 && p.state == "up")
    });
    std::thread::sleep(Duration::from_millis(500));
    pod1.testpmd(d, &r1, &mac2, &ip2, true, &mut c);
    let t0 = Instant::now();
    while tx(&mut ctl, &port1) < 10_000 || tx(&mut ctl, &port2) < 10_000 {
        if t0.elapsed() > Duration::from_secs(30) {
            let log = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
            panic!(
                "no traffic both ways: {:?}\ndrops {:?}\npod1: {}\npetrel-ovn: {}",
                ctl.stats().unwrap().ports,
                ctl.drops().unwrap().reasons.iter().filter(|r| r.count > 0).collect::<Vec<_>>(),
                log("pod1.log"),
                log("petrel-ovn.log")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let drops: u64 = ctl.drops().unwrap().reasons.iter().map(|r| r.count).sum();
    assert_eq!(drops, 0, "port security and the switch pass the pods' own traffic: {:?}", ctl.drops().unwrap());

    // The pods stop; the runtime tears the sandbox down: DEL, twice.
    for p in c.procs.drain(5..).rev().collect::<Vec<_>>() {
        let mut p = p;
        let _ = p.kill();
        let _ = p.wait();
    }
    for (p, conf) in [(&pod1, &with_ipam), (&pod2, &from_lsp)] {
        for _ in 0..2 {
            let (good, out) = p.cni("DEL", conf);
            assert!(good, "DEL {}: {out}", p.name);
        }
    }
    let left: Vec<String> = ctl.show().unwrap().ports.iter().map(|p| p.name.clone()).collect();
    assert!(left.is_empty(), "petreld ports left: {left:?}");
    assert!(
        nbctl_try(&nb, &["get", "Logical_Switch_Port", "pod1.default", "name"]).is_none(),
        "pod1's LSP (ours) removed"
    );
    assert!(
        nbctl_try(&nb, &["get", "Logical_Switch_Port", "pod2.default", "name"]).is_some(),
        "pod2's LSP (not ours) kept"
    );
    assert!(!ipam_dir.join("dpdk-a").join("10.0.0.100").exists(), "host-local released the address");
    assert!(files_under(&socket_dir).is_empty(), "socket dir: {:?}", files_under(&socket_dir));
    assert!(files_under(&state_dir).is_empty(), "state dir: {:?}", files_under(&state_dir));
    assert!(files_under(&long).is_empty(), "the pod's directory: {:?}", files_under(&long));
}
