//! Pods and petreld as child processes for the end-to-end tests:
//! `dpdk-testpmd` with `net_virtio_user` ports is the pod (forwarding
//! lcore on CPU 0, its main lcore on CPU 1 sleeping between stats),
//! petreld polls on CPU 1. Every process is killed when its guard drops,
//! pass or fail. (The same helpers as tests/vhost.rs, shared.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// petreld's EAL arguments in these tests.
pub const EAL: &str = "--in-memory --no-pci --no-telemetry -m 256 -l 0 --log-level=*:warning";

/// A child process killed (SIGKILL) when dropped, unless stopped first.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
    what: &'static str,
}

impl Proc {
    /// Spawns `cmd` with its output in `log`.
    pub fn spawn(what: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let f = File::create(&log).unwrap();
        cmd.stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e} (run scripts/bootstrap.sh)"));
        Proc { child: Some(child), log, what }
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGINT, then wait (SIGKILL after 15 s); returns success and the log.
    pub fn stop(&mut self) -> (bool, String) {
        let Some(mut c) = self.child.take() else { return (false, self.log()) };
        let pid = i32::try_from(c.id()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: sending a signal to a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let ok = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (ok, self.log())
    }
}

impl Proc {
    /// SIGKILL (a crash, no cleanup), then reap; returns the log.
    pub fn kill(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            eprintln!("--- {} log (killed at test end) ---\n{}", self.what, self.log());
        }
    }
}

/// Waits for `cond`, failing the test after `secs`.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod: testpmd with these vdevs, forwarding lcore 0, main lcore 1.
pub fn testpmd(dir: &Path, tag: &str, vdevs: &[String], args: &[&str]) -> Proc {
    let mut cmd = Command::new("dpdk-testpmd");
    cmd.args(["-l", "0,1", "--main-lcore", "1", "--in-memory", "--no-pci", "--no-telemetry", "-m", "256"]).args([
        "--single-file-segments",
        "--log-level=*:warning",
        "--file-prefix",
        tag,
    ]);
    for v in vdevs {
        cmd.arg("--vdev").arg(v);
    }
    cmd.arg("--").args(args).args(["--stats-period", "1"]);
    Proc::spawn("testpmd", cmd, dir.join(format!("{tag}.testpmd.log")))
}

/// `NAME=vhost-user,path=SOCK,mode=MODE`.
pub fn vhost_port(name: &str, sock: &Path, mode: &str) -> String {
    format!("{name}=vhost-user,path={},mode={mode}", sock.display())
}

/// A binary of the workspace built next to this test's (petrelctl,
/// petrel-ovn): `nextest --workspace` builds them.
pub fn workspace_bin(name: &str) -> PathBuf {
    // target/debug/deps/TEST-HASH -> target/debug/NAME
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(p.exists(), "{} is missing: cargo build -p petrel-control (nextest --workspace builds it)", p.display());
    p
}

/// A real OVN: NB and SB ovsdb-servers and ovn-northd in `d`; returns
/// them (killed when dropped) and the NB and SB remotes.
pub fn start_ovn(d: &Path) -> (Vec<Proc>, String, String) {
    let mut procs = Vec::new();
    for db in ["nb", "sb"] {
        let file = d.join(format!("{db}.db"));
        let o = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&file)
            .arg(format!("/usr/share/ovn/ovn-{db}.ovsschema"))
            .output()
            .unwrap_or_else(|e| panic!("ovsdb-tool: {e} (run scripts/bootstrap.sh)"));
        assert!(o.status.success(), "ovsdb-tool create: {o:?}");
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(format!("--remote=punix:{}", d.join(format!("{db}.sock")).display()))
            .arg(format!("--unixctl={}", d.join(format!("{db}.ctl")).display()))
            .arg("--no-chdir")
            .arg(&file);
        procs.push(Proc::spawn("ovsdb-server", cmd, d.join(format!("{db}.log"))));
    }
    let nb = format!("unix:{}", d.join("nb.sock").display());
    let sb = format!("unix:{}", d.join("sb.sock").display());
    let mut northd = Command::new("ovn-northd");
    northd
        .arg(format!("--ovnnb-db={nb}"))
        .arg(format!("--ovnsb-db={sb}"))
        .arg(format!("--unixctl={}", d.join("northd.ctl").display()))
        .arg("--no-chdir");
    procs.push(Proc::spawn("ovn-northd", northd, d.join("northd.log")));
    wait_for("the NB", 20, || {
        Command::new("ovn-nbctl").arg(format!("--db={nb}")).args(["--timeout=1", "show"]).status().unwrap().success()
    });
    (procs, nb, sb)
}

/// `ovn-nbctl` on `nb`, which must succeed; its output.
pub fn nbctl(nb: &str, args: &[&str]) -> String {
    let o = Command::new("ovn-nbctl").arg(format!("--db={nb}")).args(args).output().unwrap();
    assert!(o.status.success(), "ovn-nbctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// petrel-ovn as chassis `hv1` with tunnel IP `encap_ip`, on the Southbound
/// `sb`, driving the petreld at `ctl_sock`; its log in `d`.
pub fn petrel_ovn(d: &Path, sb: &str, encap_ip: &str, ctl_sock: &Path) -> Proc {
    let mut ovn = Command::new(workspace_bin("petrel-ovn"));
    ovn.arg("--remote").arg(sb).args(["--system-id", "hv1", "--encap-ip", encap_ip, "--dataplane"]).arg(ctl_sock);
    Proc::spawn("petrel-ovn", ovn, d.join("petrel-ovn.log"))
}
