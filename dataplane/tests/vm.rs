//! A QEMU VM running the Linux kernel's virtio-net driver on a petreld
//! vhost-user port: `petreld --xconnect vm:tap`, where `tap` is a DPDK
//! `net_tap` port whose kernel interface (in a network namespace of its
//! own) is the far end. Unlike the testpmd pods of tests/vhost.rs, the
//! kernel driver sleeps and waits for interrupts, so this is the test of the
//! call eventfds: a lost or late interrupt shows up as a missing reply, a
//! transfer that stalls, or frames the guest never counts.
//!
//! The guest (kernel + initramfs from scripts/vm-guest.sh, built on first use
//! and cached in target/vm) prints `PETREL ...` lines on its serial console;
//! the test waits for each and answers: pings both ways with exact counts,
//! 2 MiB of TCP each way checked by SHA-256, a UDP burst larger than the
//! guest's receive ring then pings again (the ring must not stay stuck), and
//! at the end the guest's own interface counters must equal what petreld
//! says it gave and took on the port. Both socket modes; in server mode a
//! second VM boots on the same socket after the first powers off; in client
//! mode the first VM is SIGKILLed and the interrupt throttle is raised to
//! 50 ms, with pairs of pings that need a held-back interrupt to be sent.
//!
//! QEMU runs with TCG: this machine's `/dev/kvm` is nested and hangs the
//! guest before its kernel starts. `PETREL_VM_ACCEL=kvm` tries KVM instead.
//! The device uses INTx, not MSI-X (see [`Vm::boot`]). A missing QEMU or
//! image is a failure that says what to run, never a skip.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use common::pods::{wait_for, Proc, EAL};
use petrel_dataplane::ctl::proto::PortStats;

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");
const HOST_IP: &str = "10.99.0.1";
const GUEST_IP: &str = "10.99.0.2";
const TAP: &str = "pvm0";
/// Datagrams of the host's burst (the guest's receive ring has 256 entries).
const BURST: usize = 3000;
/// How long one guest step may take (TCG is slow, and shares 2 CPUs).
const STEP: Duration = Duration::from_secs(60);

/// The kernel and initramfs, built once per test process.
fn guest_image() -> &'static (PathBuf, PathBuf) {
    static IMG: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    IMG.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join("target/vm");
        let o = Command::new(root.join("scripts/vm-guest.sh"))
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("scripts/vm-guest.sh: {e}"));
        assert!(
            o.status.success(),
            "scripts/vm-guest.sh failed (run scripts/bootstrap.sh first):\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let ok = Command::new("qemu-system-x86_64").arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "qemu-system-x86_64 is not installed: run scripts/bootstrap.sh (Debian's qemu-system-x86)");
        (out.join("vmlinuz"), out.join("initrd"))
    })
}

/// A network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("petrel-vm-{}-{tag}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        // No IPv6 on the host's end: the guest's counters must see only our frames.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }

    fn exec(&self, argv: &[&str]) -> String {
        let o = self.cmd(argv).output().unwrap();
        assert!(o.status.success(), "{argv:?} in {}: {}", self.0, String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens stay there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let file = File::open(format!("/run/netns/{}", self.0)).unwrap();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            #[allow(unsafe_code)]
            // SAFETY: setns on an open namespace file; it changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(argv: &[&str]) -> String {
    let o = Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(o.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// petreld in `ns`: the vhost-user port `vm` cross-connected with the
/// `net_tap` port `tap`, whose kernel end gets `HOST_IP`.
fn petreld(ns: &Netns, d: &Path, sock: &Path, mode: &str, extra: &[&str]) -> Proc {
    let ctl = d.join("petreld.sock");
    let mut cmd = ns.cmd(&[PETRELD]);
    cmd.args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "8191"])
        .arg("--control-socket")
        .arg(&ctl)
        .arg("--stats-file")
        .arg(d.join("p.stats.json"))
        .arg("--port")
        .arg(format!("vm=vhost-user,path={},mode={mode}", sock.display()))
        .arg("--port")
        .arg(format!("tap=dpdk,devargs=net_tap0,iface={TAP}"))
        .args(["--xconnect", "vm:tap"])
        .args(extra);
    let mut p = Proc::spawn("petreld", cmd, d.join("petreld.log"));
    wait_for("petreld's control socket and tap", 30, || {
        assert!(p.alive(), "petreld exited:\n{}", p.log());
        ctl.exists() && ns.cmd(&["ip", "link", "show", TAP]).output().unwrap().status.success()
    });
    ns.exec(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", TAP]);
    ns.exec(&["ip", "link", "set", TAP, "up"]);
    p
}

/// The vm port's counters as petreld keeps them.
fn vm_stats(d: &Path) -> PortStats {
    let mut c = common::connect(&d.join("petreld.sock"), "vm test");
    c.stats().unwrap().ports.into_iter().find(|p| p.name == "vm").expect("port vm").stats
}

/// A booted guest: QEMU and its serial console.
struct Vm {
    qemu: Proc,
    serial: PathBuf,
    /// Bytes of the console already matched.
    seen: usize,
    t0: Instant,
}

impl Vm {
    /// Boots a guest on `sock`; `server`: QEMU creates the socket and waits
    /// for petreld (petreld in client mode).
    fn boot(d: &Path, tag: &str, sock: &Path, server: bool) -> Vm {
        let (kernel, initrd) = guest_image();
        let serial = d.join(format!("{tag}.serial"));
        let accel = std::env::var("PETREL_VM_ACCEL").unwrap_or_else(|_| "tcg".to_owned());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", &accel, "-m", "256", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 quiet petrel.ip={GUEST_IP}/24 petrel.peer={HOST_IP}"))
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem"])
            .arg("-chardev")
            .arg(format!("socket,id=c0,path={}{}", sock.display(), if server { ",server=on,wait=on" } else { "" }))
            .args(["-netdev", "vhost-user,id=n0,chardev=c0"])
            // vectors=0: INTx, not MSI-X. Debian 12's QEMU 7.2 segfaults in
            // msix_set_vector_notifiers when the driver starts a vhost-user
            // device under TCG (no irqfd); DPDK's vhost library as the
            // backend crashes it the same way. The call eventfds are the same
            // either way: QEMU reads them and raises the guest's interrupt.
            .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:99:00:02,vectors=0"]);
        let qemu = Proc::spawn("qemu", cmd, d.join(format!("{tag}.qemu.log")));
        Vm { qemu, serial, seen: 0, t0: Instant::now() }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Waits for the next console line `PETREL <key> ...`; returns the rest.
    fn expect(&mut self, key: &str) -> String {
        let head = format!("PETREL {key}");
        let deadline = Instant::now() + STEP;
        loop {
            let text = self.console();
            if let Some(at) = text[self.seen..].find(&head) {
                let start = self.seen + at;
                if let Some(end) = text[start..].find('\n') {
                    self.seen = start + end;
                    eprintln!("{:>6.1} s  {}", self.t0.elapsed().as_secs_f64(), &text[start..start + end]);
                    return text[start + head.len()..start + end].trim().to_owned();
                }
            }
            assert!(!text.contains("PETREL FAIL"), "the guest failed:\n{text}");
            assert!(self.qemu.alive(), "QEMU exited before {key}:\n{}\nconsole:\n{text}", self.qemu.log());
            assert!(Instant::now() < deadline, "no {key} from the guest within {STEP:?}; console:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `field=value` of a console line, as a number.
fn field(line: &str, name: &str) -> u64 {
    let at = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name}= in {line:?}"));
    line[at + name.len() + 1..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn sha256(data: &[u8], d: &Path, name: &str) -> String {
    let f = d.join(name);
    std::fs::write(&f, data).unwrap();
    sh(&["sha256sum", f.to_str().unwrap()]).split_whitespace().next().unwrap().to_owned()
}

/// `count` pings from the host `interval` seconds apart: (sent, answered).
/// busybox's ping, which after the last request waits up to 5 s for every
/// missing reply (iputils' waits only two round trips once any reply has
/// come, so a reply held back by the throttle would count as lost; with a
/// deadline it keeps sending, and a later request would flush what was held).
fn ping_every(ns: &Netns, count: u32, interval: &str) -> (u32, u32, String) {
    let c = count.to_string();
    let o = ns.cmd(&["busybox", "ping", "-q", "-c", &c, "-i", interval, "-W", "5", GUEST_IP]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = out.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("ping: {out}"));
    let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).take(2).collect();
    (nums[0], nums[1], out)
}

fn ping(ns: &Netns, count: u32) -> (u32, u32, String) {
    ping_every(ns, count, "0.1")
}

/// Everything the guest does, from boot to power-off, with the host's
/// answers and checks. petreld's counters of the port must move exactly as
/// the guest's own.
fn session(ns: &Netns, d: &Path, tag: &str, sock: &Path, qemu_server: bool) {
    let t0 = Instant::now();
    let s0 = vm_stats(d);
    // The host's end of the guest's upload, listening before the guest boots.
    let upload = ns.run(|| {
        let l = TcpListener::bind(SocketAddrV4::new(HOST_IP.parse().unwrap(), 5002)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut vm = Vm::boot(d, tag, sock, qemu_server);
    let up = vm.expect("UP");
    eprintln!("{tag}: guest up after {:.1} s: {up}", t0.elapsed().as_secs_f64());

    let p = vm.expect("PING_OUT");
    assert!(p.starts_with("5 packets transmitted, 5 packets received"), "guest -> host ping: {p}");

    let tx_sha = vm.expect("TX_SHA");
    let done = vm.expect("TX_DONE");
    assert_eq!(done, "rc=0", "guest's nc to the host");
    let got = upload.join().unwrap();
    let want: Vec<&str> = tx_sha.split_whitespace().collect();
    assert_eq!(got.len().to_string(), want[1], "bytes the host got from the guest");
    assert_eq!(sha256(&got, d, "upload"), want[0], "SHA-256 of what the host got from the guest");

    vm.expect("LISTEN 5001");
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let want_sha = sha256(&data, d, "download");
    let n = data.len();
    ns.run(move || {
        let to = SocketAddrV4::new(GUEST_IP.parse().unwrap(), 5001);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match TcpStream::connect(to) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("connect to the guest's 5001: {e}"),
            }
        };
        s.set_write_timeout(Some(STEP)).unwrap();
        s.write_all(&data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    })
    .join()
    .unwrap();
    let rx = vm.expect("RX_SHA");
    assert_eq!(rx, format!("{want_sha} {n} rc=0"), "what the guest got from the host");

    vm.expect("LISTEN 5003");
    let (sent, got, out) = ping(ns, 10);
    assert_eq!((sent, got), (10, 10), "host -> guest ping:\n{out}");
    // Pairs of pings 10 ms apart after a quiet 100 ms: the first request
    // interrupts the guest at once; with a call interval above 10 ms the
    // second one's interrupt is held back by the throttle, and nothing comes
    // after it: it must still go once the interval is over.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        let (sent, got, out) = ping_every(ns, 2, "0.01");
        assert_eq!((sent, got), (2, 2), "a pair of pings 10 ms apart:\n{out}");
    }
    // More than the guest's receive ring holds, as fast as the host sends:
    // petreld fills the ring, drops the rest (tx_full), and the guest must
    // come back: if an interrupt were lost the ring would stay full.
    let drops0 = vm_stats(d).tx_drops;
    ns.run(|| {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let buf = [0x5au8; 1400];
        for _ in 0..BURST {
            let _ = s.send_to(&buf, SocketAddrV4::new(GUEST_IP.parse().unwrap(), 9));
        }
    })
    .join()
    .unwrap();
    let dropped = vm_stats(d).tx_drops - drops0;
    eprintln!("{tag}: burst of {BURST}: petreld dropped {dropped} for a full ring");
    assert!(dropped > 0, "the burst never filled the guest's receive ring");
    // The guest drains its ring (the first ping may still find it full),
    // then answers every ping.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping(ns, 1).1 != 1 {
        assert!(Instant::now() < deadline, "the guest stopped receiving after the burst:\n{}", vm.console());
    }
    let (sent, got, out) = ping(ns, 5);
    assert_eq!((sent, got), (5, 5), "host -> guest ping after the burst:\n{out}");
    ns.run(|| {
        let mut s = TcpStream::connect(SocketAddrV4::new(GUEST_IP.parse().unwrap(), 5003)).unwrap();
        s.write_all(b"bye\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    })
    .join()
    .unwrap();
    let stats = vm.expect("STATS");
    let s1 = vm_stats(d);
    let (rx0, tx0, rx1, tx1) = (s0.rx_packets, s0.tx_packets, s1.rx_packets, s1.tx_packets);
    vm.expect("DONE");
    wait_for("the guest to power off", 30, || !vm.qemu.alive());
    let (ok, log) = vm.qemu.stop();
    assert!(ok || log.is_empty(), "QEMU:\n{log}");
    eprintln!("{tag}: guest {stats}; petreld vm rx {} tx {}", rx1 - rx0, tx1 - tx0);
    // Every frame petreld put in the guest's receive ring reached the
    // driver, and every frame the driver queued reached petreld.
    let g_rx = field(&stats, "rx_packets") + field(&stats, "rx_dropped");
    assert_eq!(g_rx, tx1 - tx0, "frames the guest received vs petreld sent it: {stats}");
    assert_eq!(field(&stats, "tx_packets"), rx1 - rx0, "frames the guest sent vs petreld received: {stats}");
    // The driver took interrupts on its receive queue.
    assert!(field(&stats, "irqs") > 0, "no virtio interrupts in the guest: {stats}");
    eprintln!("{tag}: session took {:.1} s", t0.elapsed().as_secs_f64());
}

fn stats(d: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(d.join("p.stats.json")).unwrap()).unwrap()
}

fn n(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64().unwrap_or_else(|| panic!("no {path:?} in {v}"))
}

/// Stops petreld and checks its final report: two connections (one per
/// VM), no violation, interrupts sent, no mbuf missing.
fn stop_after_two_vms(mut p: Proc, d: &Path) {
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    let s = stats(d);
    assert_eq!(n(&s, &["vhost", "vm", "connects"]), 2, "{log}");
    assert_eq!(n(&s, &["vhost", "vm", "violations"]), 0, "{log}");
    assert!(n(&s, &["vhost", "vm", "calls"]) > 0, "petreld never interrupted the guest:\n{log}");
    assert_eq!(n(&s, &["mbufs_leaked"]), 0);
}

/// petreld listens, QEMU connects; the guest powers off and a new QEMU
/// boots on the same socket, petreld still running.
#[test]
fn qemu_vm_server_mode_and_vm_restart() {
    guest_image();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ns = Netns::new("s");
    let sock = d.join("vm.sock");
    let p = petreld(&ns, d, &sock, "server", &[]);
    wait_for("petreld's socket", 20, || sock.exists());
    session(&ns, d, "vm1", &sock, false);
    session(&ns, d, "vm2", &sock, false);
    stop_after_two_vms(p, d);
}

/// QEMU creates the socket (`server=on`) and waits; petreld connects. The
/// first VM is killed (SIGKILL: no vhost-user goodbye) while its rings run;
/// petreld reconnects to the next QEMU on the same path, which works fully.
///
/// Interrupts are throttled to one per ring per 50 ms here (20 µs by
/// default), so many are held back, among them the last of most exchanges
/// (the ACK of the guest's FIN when it closes a connection, say): each must
/// still be sent once the interval is over, or the guest never counts those
/// frames and the final count check fails.
#[test]
fn qemu_vm_client_mode_and_vm_killed() {
    guest_image();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ns = Netns::new("c");
    let sock = d.join("vm.sock");
    let p = petreld(&ns, d, &sock, "client", &["--vhost-call-interval", "50000"]);
    let mut vm = Vm::boot(d, "killed", &sock, true);
    let out = vm.expect("PING_OUT");
    assert!(out.starts_with("5 packets transmitted, 5 packets received"), "guest -> host ping: {out}");
    vm.qemu.kill();
    session(&ns, d, "vm", &sock, true);
    stop_after_two_vms(p, d);
}
