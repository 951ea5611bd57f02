//! End-to-end tests of the per-port features on vhost-user ports, with
//! `dpdk-testpmd` pods and petreld's control socket:
//!
//! - `burst_policing_capture_and_mirror_byte_exact`: a pod replays pcaps
//!   through `petreld --xconnect a:b`; an ingress policer (bit/s) and an
//!   egress policer (packet/s) pass exactly their bursts; a capture
//!   session on `a` and `petrelctl capture` on `b` write what the ports
//!   carried, and a local mirror of `a` onto a pcap port copies what `a`
//!   received, all byte for byte.
//! - `policer_accuracy_and_live_change`: benchmark-style, a flowgen pod
//!   offers far more than the limit; the rate petreld delivers is measured
//!   over windows for several rates and must be within ±2% of each; a rate
//!   change under load shows at the new rate from 100 ms after the change.
//!
//! CPU placement as in tests/vhost.rs (petreld PMD on CPU 1, the pod's
//! forwarding lcore on 0); the `vhost` test group in .config/nextest.toml
//! runs these one at a time.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::pods::{nbctl, petrel_ovn, start_ovn, testpmd, vhost_port, wait_for, workspace_bin, Proc, EAL};
use common::{empty_pcap, read_pcap, write_pcap};
use petrel_dataplane::ctl::features::{unhex, CaptureRequest, Direction, MirrorRequest, QosPortInfo, QosRequest};
use petrel_dataplane::ctl::Client;
use petrel_dataplane::qos::{PortQos, RateSpec, Unit};

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");

fn petreld(d: &Path, ctl: &Path, args: &[String]) -> Proc {
    let mut cmd = Command::new(PETRELD);
    cmd.args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "16383"])
        .arg("--control-socket")
        .arg(ctl)
        .arg("--stats-file")
        .arg(d.join("p.stats.json"))
        .args(args);
    Proc::spawn("petreld", cmd, d.join("p.petreld.log"))
}

/// Distinct frames of `len` bytes (a local experimental EtherType).
fn frames(count: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut f: Vec<u8> = (0..len).map(|j| (j as u8).wrapping_mul(13) ^ (i as u8) ^ seed).collect();
            f[..12].copy_from_slice(&[0x02, 0, 0, 0, seed, 1, 0x02, 0, 0, 0, seed, 2]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]);
            f[14..16].copy_from_slice(&(i as u16).to_be_bytes());
            f
        })
        .collect()
}

fn qos_of(c: &mut Client, port: &str) -> QosPortInfo {
    c.qos(QosRequest::Show).unwrap().ports.into_iter().find(|p| p.port == port).unwrap()
}

fn set(c: &mut Client, port: &str, ingress: Option<RateSpec>, egress: Option<RateSpec>) {
    c.qos(QosRequest::Set { port: port.into(), qos: PortQos { ingress, egress } }).unwrap();
}

#[test]
fn burst_policing_capture_and_mirror_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b, ctl_sock) = (d.join("a.sock"), d.join("b.sock"), d.join("petreld.sock"));
    // a → b: 100 frames of 1000 bytes; b → a: 50 frames of 500 bytes.
    let in_a = frames(100, 1000, 1);
    let in_b = frames(50, 500, 2);
    write_pcap(&d.join("inA.pcap"), &in_a);
    write_pcap(&d.join("inB.pcap"), &in_b);
    empty_pcap(&d.join("empty.pcap"));
    let mirror_pcap = d.join("mirror.pcap");
    let mut p = petreld(
        d,
        &ctl_sock,
        &[
            "--port".into(),
            vhost_port("a", &a, "server"),
            "--port".into(),
            vhost_port("b", &b, "server"),
            "--port".into(),
            format!(
                "m=dpdk,devargs=net_pcap9,rx_pcap={},tx_pcap={}",
                d.join("empty.pcap").display(),
                mirror_pcap.display()
            ),
            "--xconnect".into(),
            "a:b".into(),
        ],
    );
    wait_for("petreld's sockets", 20, || a.exists() && b.exists() && ctl_sock.exists());
    let mut c = common::connect(&ctl_sock, "qos test");

    // Ingress of a: 1 kbit/s with a burst of 80 000 bits = 10 frames of
    // 1000 bytes; the rate adds less than a frame over the replay.
    let bits = |rate, burst| Some(RateSpec { rate, burst: Some(burst), unit: Unit::Bits });
    set(&mut c, "a", bits(1000, 80_000), None);
    // Egress of a (what b sends it): 1 packet/s, burst 7 packets.
    set(&mut c, "a", None, Some(RateSpec { rate: 1, burst: Some(7), unit: Unit::Packets }));
    let q = qos_of(&mut c, "a");
    assert_eq!(q.effective.ingress.unwrap().rate, 1000, "set merges per direction: {q:?}");
    assert_eq!(q.effective.egress.unwrap().unit, Unit::Packets);
    assert_eq!((q.ingress_pmds, q.egress_pmds), (1, 1));
    // Errors are the operator's to see.
    assert!(c.qos(QosRequest::Set { port: "nope".into(), qos: q.ctl }).is_err());
    assert!(c.mirror(MirrorRequest::Add { src: "a".into(), dst: "a".into(), direction: Direction::Both }).is_err());

    c.mirror(MirrorRequest::Add { src: "a".into(), dst: "m".into(), direction: Direction::Ingress }).unwrap();
    let session =
        c.capture(CaptureRequest::Start { port: "a".into(), direction: Direction::Both, snaplen: None }).unwrap();
    let b_pcap = d.join("b.capture.pcap");
    let mut cli = Proc::spawn(
        "petrelctl capture",
        {
            let mut cmd = Command::new(workspace_bin("petrelctl"));
            cmd.arg("--socket").arg(&ctl_sock).args(["capture", "b", "-c", "10", "--direction", "egress", "-w"]);
            cmd.arg(&b_pcap);
            cmd
        },
        d.join("petrelctl.log"),
    );
    std::thread::sleep(Duration::from_millis(300));

    // The pod: pcap → virtio a → petreld → virtio b → pcap, and back.
    let vdevs = [
        format!("net_pcap0,rx_pcap={},tx_pcap={}", d.join("inA.pcap").display(), d.join("outA.pcap").display()),
        format!("net_virtio_user0,path={}", a.display()),
        format!("net_virtio_user1,path={}", b.display()),
        format!("net_pcap1,rx_pcap={},tx_pcap={}", d.join("inB.pcap").display(), d.join("outB.pcap").display()),
    ];
    let mut pod =
        testpmd(d, "pod", &vdevs, &["--forward-mode=io", "--port-topology=paired", "--no-flush-rx", "--nb-cores=1"]);
    // Drain the capture of a until both directions are in.
    let mut rx = Vec::new();
    let mut tx = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (rx.len() < in_a.len() || tx.len() < 7) && Instant::now() < deadline {
        let r = c.capture(CaptureRequest::Read { id: session.id, max: 64, wait_ms: 200 }).unwrap();
        for pkt in r.packets {
            let data = unhex(&pkt.data).unwrap();
            assert_eq!(pkt.orig_len as usize, data.len(), "frames fit the default snap length");
            match pkt.dir {
                petrel_dataplane::capture::Dir::Rx => rx.push(data),
                petrel_dataplane::capture::Dir::Tx => tx.push(data),
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let last = c.capture(CaptureRequest::Read { id: session.id, max: 64, wait_ms: 0 }).unwrap();
    assert!(last.packets.is_empty(), "nothing more than policed traffic allows: {:?}", last.packets.len());
    assert_eq!(last.dropped, 0);
    let stopped = c.capture(CaptureRequest::Stop { id: session.id }).unwrap();
    assert!(!stopped.active);
    assert!(c.capture(CaptureRequest::Read { id: session.id, max: 1, wait_ms: 0 }).is_err(), "session gone");

    let (ok, pod_log) = pod.stop();
    assert!(ok, "pod failed:\n{pod_log}");
    let (ok, cli_log) = cli.stop();
    let _ = ok;
    assert!(cli_log.contains("10 packets captured on b"), "petrelctl capture:\n{cli_log}");

    // Policers: exactly the bursts went through, the rest is counted.
    let q = qos_of(&mut c, "a");
    assert_eq!(q.ingress_policed, 90, "{q:?}");
    assert_eq!(q.ingress_policed_bytes, 90 * 1000);
    assert_eq!(q.egress_policed, 43, "{q:?}");
    let drops = c.drops().unwrap();
    let policed = drops.reasons.iter().find(|r| r.reason == "qos_policed").map_or(0, |r| r.count);
    assert_eq!(policed, 90 + 43);
    let mirrors = c.mirror(MirrorRequest::List).unwrap();
    assert_eq!(mirrors.copies.get("a"), Some(&(100, 0)), "{mirrors:?}");

    let out_b = read_pcap(&d.join("outB.pcap"));
    let out_a = read_pcap(&d.join("outA.pcap"));
    assert!(out_b == in_a[..10], "a→b: the first 10 frames, unchanged (got {})", out_b.len());
    assert!(out_a == in_b[..7], "b→a: the first 7 frames, unchanged (got {})", out_a.len());
    // Capture sees what a sent (before its policer) and what a was given.
    assert!(rx == in_a, "capture of a, rx: {} frames", rx.len());
    assert!(tx == in_b[..7], "capture of a, tx: {} frames", tx.len());
    // petrelctl's pcap, read by an independent reader and by tshark.
    assert!(read_pcap(&b_pcap) == in_a[..10], "petrelctl capture of b's egress");
    common::require_tshark();
    let t = Command::new("tshark").arg("-r").arg(&b_pcap).output().unwrap();
    assert!(t.status.success(), "tshark -r: {}", String::from_utf8_lossy(&t.stderr));
    assert_eq!(String::from_utf8_lossy(&t.stdout).lines().count(), 10);

    // Clearing a policer is live; the port stays.
    c.qos(QosRequest::Clear { port: "a".into(), direction: Direction::Both }).unwrap();
    assert!(c.qos(QosRequest::Show).unwrap().ports.is_empty());
    c.mirror(MirrorRequest::Del { src: "a".into(), dst: None }).unwrap();

    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    assert!(log.contains("mbufs in use after port close: 0"), "{log}");
    // The mirror port got a copy of everything a received, in order.
    let mirrored = read_pcap(&mirror_pcap);
    assert!(mirrored == in_a, "mirror of a's ingress: {} frames", mirrored.len());
}

/// Bytes and packets petreld handed to port `name`, and when.
fn tx_bytes(c: &mut Client, name: &str) -> (u64, u64, Instant) {
    let (tx, _, t) = counters(c, name, "a");
    (tx.0, tx.1, t)
}

/// (tx bytes, tx packets) of `name`, (rx bytes, rx packets) of `from`, when.
fn counters(c: &mut Client, name: &str, from: &str) -> ((u64, u64), (u64, u64), Instant) {
    let t0 = Instant::now();
    let s = c.stats().unwrap();
    let t1 = Instant::now();
    let p = s.ports.iter().find(|p| p.name == name).unwrap();
    let f = s.ports.iter().find(|p| p.name == from).unwrap();
    ((p.stats.tx_bytes, p.stats.tx_packets), (f.stats.rx_bytes, f.stats.rx_packets), t0 + (t1 - t0) / 2)
}

/// Over `window`: bit/s and packet/s delivered to b, and offered by the
/// pod on a (what petreld received there, policed or not).
struct Rates {
    bps: f64,
    pps: f64,
    offered_bps: f64,
    offered_pps: f64,
}

fn measure(c: &mut Client, window: Duration) -> Rates {
    let (tx0, rx0, t0) = counters(c, "b", "a");
    std::thread::sleep(window);
    let (tx1, rx1, t1) = counters(c, "b", "a");
    let dt = (t1 - t0).as_secs_f64();
    Rates {
        bps: (tx1.0 - tx0.0) as f64 * 8.0 / dt,
        pps: (tx1.1 - tx0.1) as f64 / dt,
        offered_bps: (rx1.0 - rx0.0) as f64 * 8.0 / dt,
        offered_pps: (rx1.1 - rx0.1) as f64 / dt,
    }
}

#[test]
fn policer_accuracy_and_live_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b, ctl_sock) = (d.join("a.sock"), d.join("b.sock"), d.join("petreld.sock"));
    let mut p = petreld(
        d,
        &ctl_sock,
        &[
            "--port".into(),
            vhost_port("a", &a, "server"),
            "--port".into(),
            vhost_port("b", &b, "server"),
            "--xconnect".into(),
            "a:b".into(),
        ],
    );
    wait_for("petreld's sockets", 20, || a.exists() && b.exists() && ctl_sock.exists());
    let vdevs = [format!("net_virtio_user0,path={}", a.display()), format!("net_virtio_user1,path={}", b.display())];
    // 1500-byte frames as fast as the pod can, on both ports.
    let mut pod = testpmd(d, "pod", &vdevs, &["--forward-mode=flowgen", "--txpkts=1500", "--nb-cores=1"]);
    let mut c = common::connect(&ctl_sock, "qos accuracy");
    wait_for("traffic a→b", 20, || tx_bytes(&mut c, "b").1 > 10_000);
    let max_bps = measure(&mut c, Duration::from_secs(2)).bps;
    eprintln!("unpoliced a→b: {:.1} Mbit/s", max_bps / 1e6);
    // Over a window [t0, t1] with the generator far above the rate, a
    // token bucket delivers rate × T + tokens(t0) − tokens(t1) − what it
    // wasted while full. This machine's two CPUs are shared with other
    // builds: the PMD or the pod is descheduled now and then for tens or
    // hundreds of ms. With a small burst every such stall in the window
    // wastes credit; with a burst of one second of the rate none does, and
    // only a stall just before t0 or t1 moves the result (by its length over
    // the 10 s window, as the issue measures). So these buckets hold one
    // second (bursts as configured are checked exactly by the test above).
    //
    // A window where the pod offered less than 1.5× the rate says nothing
    // of the policer (it cannot deliver what it is not given) and is
    // measured again, as is one spoiled by a stall: up to three windows.
    // Delivering more than a token bucket can (rate × T + burst + a frame)
    // fails at once.
    let window = Duration::from_secs(10);
    let spec = |rate: u64| Some(RateSpec { rate, burst: Some(rate), unit: Unit::Bits });
    let mut report = Vec::new();
    let mut check = |c: &mut Client, what: String, want: u64, pps: bool| -> Result<(), String> {
        for _ in 0..3 {
            let r = measure(c, window);
            let (got, offered) = if pps { (r.pps, r.offered_pps) } else { (r.bps, r.offered_bps) };
            let err = (got - want as f64) / want as f64;
            report.push(format!("{what}: delivered {got:.1} ({:+.3}%) of {offered:.1} offered", err * 100.0));
            eprintln!("{}", report.last().unwrap());
            // Burst = 1 s of the rate: at most T + 1 s worth in T, plus a frame.
            let most = want as f64 * (window.as_secs_f64() + 1.0) / window.as_secs_f64() * 1.001 + 12_000.0;
            assert!(got <= most, "{what}: delivered {got:.1}, more than a bucket can:\n{}", report.join("\n"));
            if offered >= 1.5 * want as f64 && err.abs() < 0.02 {
                return Ok(());
            }
        }
        Err(format!("{what}: no window within ±2% with enough offered:\n{}", report.join("\n")))
    };
    for rate in [1_000_000u64, 50_000_000] {
        set(&mut c, "a", spec(rate), None);
        // Past the initial burst (one second at the rate, offered far faster).
        std::thread::sleep(Duration::from_millis(300));
        check(&mut c, format!("{rate} bit/s"), rate, false).unwrap();
    }
    // The highest rate the pod offers well above (the port's maximum here
    // is the pod's, through debug builds).
    let mut top_err = Vec::new();
    let mut top_ok = false;
    for rate in [1_000_000_000u64, 500_000_000, 150_000_000].into_iter().filter(|r| (*r as f64) * 1.5 < max_bps) {
        set(&mut c, "a", spec(rate), None);
        std::thread::sleep(Duration::from_millis(300));
        match check(&mut c, format!("{rate} bit/s"), rate, false) {
            Ok(()) => {
                top_ok = true;
                break;
            }
            Err(e) => top_err.push(e),
        }
    }
    assert!(top_ok, "no rate of 150 Mbit/s or more checked (unpoliced {:.0} Mbit/s): {top_err:?}", max_bps / 1e6);
    // Packets per second (1500-byte frames: 60 Mbit/s).
    set(&mut c, "a", Some(RateSpec { rate: 5_000, burst: Some(5_000), unit: Unit::Packets }), None);
    std::thread::sleep(Duration::from_millis(300));
    check(&mut c, "5000 pkt/s".into(), 5_000, true).unwrap();

    // A live change under load, down then up: from 100 ms after the change
    // the new rate is delivered.
    let (hi, lo) = (50_000_000u64, 10_000_000u64);
    set(&mut c, "a", spec(hi), None);
    std::thread::sleep(Duration::from_millis(500));
    set(&mut c, "a", spec(lo), None);
    std::thread::sleep(Duration::from_millis(100));
    check(&mut c, format!("change {hi} -> {lo}, from +100 ms"), lo, false).unwrap();
    set(&mut c, "a", spec(hi), None);
    std::thread::sleep(Duration::from_millis(100));
    check(&mut c, format!("change {lo} -> {hi}, from +100 ms"), hi, false).unwrap();
    // Cleared: back to the port's maximum.
    c.qos(QosRequest::Clear { port: "a".into(), direction: Direction::Both }).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let bps = measure(&mut c, Duration::from_secs(2)).bps;
    eprintln!("cleared: {:.1} Mbit/s", bps / 1e6);
    assert!(bps > 2.0 * hi as f64, "cleared policer still limits: {bps:.0}");

    let (ok, pod_log) = pod.stop();
    assert!(ok, "pod failed:\n{pod_log}");
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    assert!(log.contains("drop qos_policed"), "{log}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("p.stats.json")).unwrap()).unwrap();
    assert_eq!(s["vhost"]["a"]["connects"], 1, "no port flap: {s}");
}

/// OVN's `qos_max_rate`/`qos_burst` on a logical switch port (what
/// Kube-OVN's rate annotations become) reach petreld through petrel-ovn as
/// the ingress policer of the port carrying it; an operator's setting wins
/// per direction and clearing it brings OVN's back; removing the option in
/// the NB removes the policer. Real ovsdb-server and ovn-northd.
#[test]
fn ovn_qos_max_rate_becomes_an_ingress_policer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ovn_procs, nb, sb) = start_ovn(d);
    let nbctl = |args: &[&str]| {
        nbctl(&nb, args);
    };
    nbctl(&["ls-add", "sw0", "--", "lsp-add", "sw0", "pod1", "--", "lsp-add", "sw0", "pod2"]);
    nbctl(&["set", "logical_switch_port", "pod1", "options:qos_max_rate=2000000", "options:qos_burst=50000"]);

    let (s1, s2, ctl_sock) = (d.join("pod1.sock"), d.join("pod2.sock"), d.join("petreld.sock"));
    let mut p = petreld(
        d,
        &ctl_sock,
        &[
            "--port".into(),
            format!("pod1=vhost-user,path={},mode=server,iface-id=pod1", s1.display()),
            "--port".into(),
            format!("pod2=vhost-user,path={},mode=server,iface-id=pod2", s2.display()),
        ],
    );
    wait_for("petreld's control socket", 20, || ctl_sock.exists());
    let _ovn = petrel_ovn(d, &sb, "127.0.0.1", &ctl_sock);
    nbctl(&["--timeout=30", "--wait=hv", "sync"]);

    let mut c = common::connect(&ctl_sock, "qos ovn test");
    let ovn_rate = RateSpec { rate: 2_000_000, burst: Some(50_000), unit: Unit::Bits };
    let show = |c: &mut Client| c.qos(QosRequest::Show).unwrap().ports;
    wait_for("OVN's policer in petreld", 20, || show(&mut c).iter().any(|q| q.port == "pod1"));
    let q = show(&mut c);
    assert_eq!(q.len(), 1, "only pod1 has a rate: {q:?}");
    assert_eq!(q[0].ovn.ingress, Some(ovn_rate));
    assert_eq!(q[0].effective, PortQos { ingress: Some(ovn_rate), egress: None });

    // The operator's ingress wins; clearing it brings OVN's back.
    let mine = RateSpec { rate: 7_000_000, burst: None, unit: Unit::Bits };
    set(&mut c, "pod1", Some(mine), None);
    assert_eq!(qos_of(&mut c, "pod1").effective.ingress, Some(mine));
    c.qos(QosRequest::Clear { port: "pod1".into(), direction: Direction::Ingress }).unwrap();
    assert_eq!(qos_of(&mut c, "pod1").effective.ingress, Some(ovn_rate));

    // A new rate in the NB follows; removing it removes the policer.
    nbctl(&["set", "logical_switch_port", "pod1", "options:qos_max_rate=3000000"]);
    wait_for("the new rate", 20, || {
        qos_of(&mut c, "pod1").effective.ingress
            == Some(RateSpec { rate: 3_000_000, burst: Some(50_000), unit: Unit::Bits })
    });
    nbctl(&["remove", "logical_switch_port", "pod1", "options", "qos_max_rate"]);
    wait_for("no policer", 20, || show(&mut c).is_empty());
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
}

/// With two PMDs a policer is split between them (see `qos` module docs):
/// a two-queue vhost-user port is polled by both, a one-queue port by one,
/// and every PMD may send to either; a rate that cannot be split is
/// refused. (Bookkeeping only: no traffic.)
#[test]
fn two_pmds_share_a_policer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b, ctl_sock) = (d.join("a.sock"), d.join("b.sock"), d.join("petreld.sock"));
    let mut cmd = Command::new(PETRELD);
    cmd.args(["--eal-args", EAL, "--pmd-cores", "0,1", "--control-socket"])
        .arg(&ctl_sock)
        .arg("--port")
        .arg(format!("a=vhost-user,path={},mode=server,queues=2", a.display()))
        .arg("--port")
        .arg(vhost_port("b", &b, "server"));
    let mut p = Proc::spawn("petreld", cmd, d.join("p.petreld.log"));
    wait_for("petreld's control socket", 20, || ctl_sock.exists());
    let mut c = common::connect(&ctl_sock, "qos two PMDs");
    let r = Some(RateSpec { rate: 3_000_001, burst: Some(30_001), unit: Unit::Bits });
    set(&mut c, "a", r, r);
    set(&mut c, "b", r, r);
    let (qa, qb) = (qos_of(&mut c, "a"), qos_of(&mut c, "b"));
    assert_eq!((qa.ingress_pmds, qa.egress_pmds), (2, 2), "{qa:?}");
    assert_eq!((qb.ingress_pmds, qb.egress_pmds), (1, 2), "{qb:?}");
    let one = Some(RateSpec { rate: 1, burst: Some(10), unit: Unit::Packets });
    let e = c.qos(QosRequest::Set { port: "b".into(), qos: PortQos { ingress: one, egress: None } }).unwrap_err();
    assert!(e.to_string().contains("below 1 per PMD"), "{e}");
    assert_eq!(qos_of(&mut c, "b").effective.ingress, r, "a refused change leaves the policer as it was");
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
}

/// The NB `QoS` table's bandwidth limit (`ovn-nbctl qos-add … rate=R
/// burst=B`): ovn-northd writes `set_meter(R, B)` in `ls_in_qos_meter`,
/// petrel-ovn makes it a meter of the tables, and petreld meters every
/// packet of the flow, cached or not. A fast burst of 100 frames of 1000
/// bytes from pod1 to pod2 through a real OVN logical switch: exactly the
/// burst's worth (80 kbit = 10 frames; 1 kbit/s adds no frame meanwhile)
/// reaches pod2, byte for byte, and the other 90 are counted as
/// `meter_drop`. A new rate in the NB (northd replaces the flow) is applied
/// to the same meter, counters kept; `qos-del` removes it and the same
/// burst then passes whole.
#[test]
fn ovn_qos_bandwidth_meters_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ovn_procs, nb, sb) = start_ovn(d);
    // frames(…, seed 1) go from 02:00:00:00:01:02 to 02:00:00:00:01:01.
    nbctl(&nb, &["ls-add", "sw0", "--", "lsp-add", "sw0", "pod1", "--", "lsp-add", "sw0", "pod2"]);
    nbctl(&nb, &["lsp-set-addresses", "pod1", "02:00:00:00:01:02"]);
    nbctl(&nb, &["lsp-set-addresses", "pod2", "02:00:00:00:01:01"]);
    nbctl(&nb, &["qos-add", "sw0", "from-lport", "100", "inport == \"pod1\"", "rate=1", "burst=80"]);
    let in_a = frames(100, 1000, 1);
    write_pcap(&d.join("in.pcap"), &in_a);
    empty_pcap(&d.join("empty.pcap"));

    let (s1, s2, ctl_sock) = (d.join("pod1.sock"), d.join("pod2.sock"), d.join("petreld.sock"));
    let mut p = petreld(
        d,
        &ctl_sock,
        &[
            "--port".into(),
            format!("pod1=vhost-user,path={},mode=server,iface-id=pod1", s1.display()),
            "--port".into(),
            format!("pod2=vhost-user,path={},mode=server,iface-id=pod2", s2.display()),
        ],
    );
    wait_for("petreld's control socket", 20, || ctl_sock.exists());
    let _ovn = petrel_ovn(d, &sb, "127.0.0.1", &ctl_sock);
    nbctl(&nb, &["--timeout=30", "--wait=hv", "sync"]);
    let mut c = common::connect(&ctl_sock, "qos meter test");
    wait_for("the meter in petreld", 20, || c.meters().unwrap().meters.len() == 1);
    let m = c.meters().unwrap().meters.remove(0);
    assert_eq!((m.rate, m.burst, m.unit, m.pmds), (1000, 80_000, Unit::Bits, 1), "{m:?}");
    assert!(m.name.starts_with("set_meter ingress table 10 priority 100"), "{m:?}");
    // (Conntrack flows are refused, as ever; nothing about the meter is.)
    let r = c.refusals().unwrap().refusals;
    assert!(!r.iter().any(|r| r.pipeline == "meter" || r.stage.contains("qos")), "{r:?}");

    // One pod replays the burst into pod1; what pod2 gets is written out.
    let pod = |tag: &str, out: &Path| {
        let vdevs = [
            format!("net_pcap0,rx_pcap={},tx_pcap={}", d.join("in.pcap").display(), d.join("out1.pcap").display()),
            format!("net_virtio_user0,path={}", s1.display()),
            format!("net_virtio_user1,path={}", s2.display()),
            format!("net_pcap1,rx_pcap={},tx_pcap={}", d.join("empty.pcap").display(), out.display()),
        ];
        testpmd(d, tag, &vdevs, &["--forward-mode=io", "--port-topology=paired", "--no-flush-rx", "--nb-cores=1"])
    };
    let rx_of = |c: &mut Client, name: &str| {
        c.show().unwrap().ports.iter().find(|q| q.name == name).map_or(0, |q| q.stats.rx_packets)
    };
    let out = d.join("out.pcap");
    let mut pod1 = pod("pod1", &out);
    wait_for("the burst through petreld", 20, || {
        let m = &c.meters().unwrap().meters[0];
        m.passed + m.dropped == 100
    });
    std::thread::sleep(Duration::from_millis(300));
    let (ok, log) = pod1.stop();
    assert!(ok, "pod failed:\n{log}");
    let m = c.meters().unwrap().meters.remove(0);
    assert_eq!((m.passed, m.dropped, m.dropped_bytes), (10, 90, 90 * 1000), "{m:?}");
    let drops = c.drops().unwrap();
    let metered = drops.reasons.iter().find(|r| r.reason == "meter_drop").map_or(0, |r| r.count);
    assert_eq!(metered, 90, "{drops:?}");
    let got = read_pcap(&out);
    assert!(got == in_a[..10], "pod2 got the first 10 frames, unchanged (got {})", got.len());
    // petrelctl shows it.
    let text = Command::new(workspace_bin("petrelctl")).arg("--socket").arg(&ctl_sock).arg("meters").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("1000 bit/s burst 80000 bit [1 PMD(s)]  passed 10 dropped 90 packets 90000 bytes"), "{text}");

    // A new rate: northd replaces the flow; same meter, new rate, counters kept.
    let q = nbctl(&nb, &["--bare", "--columns=_uuid", "find", "qos", "priority=100"]);
    nbctl(&nb, &["set", "qos", q.trim(), "bandwidth:rate=2"]);
    nbctl(&nb, &["--timeout=30", "--wait=hv", "sync"]);
    wait_for("the new rate", 20, || c.meters().unwrap().meters.first().is_some_and(|m| m.rate == 2000));
    let m2 = c.meters().unwrap().meters.remove(0);
    assert_eq!((m2.id, &m2.name, m2.passed, m2.dropped), (m.id, &m.name, 10, 90), "{m2:?}");

    // Removed: the same burst passes whole.
    nbctl(&nb, &["qos-del", "sw0"]);
    nbctl(&nb, &["--timeout=30", "--wait=hv", "sync"]);
    wait_for("no meter", 20, || c.meters().unwrap().meters.is_empty());
    let before = rx_of(&mut c, "pod1");
    let out2 = d.join("out2.pcap");
    let mut pod2 = pod("pod2", &out2);
    wait_for("the second burst", 20, || rx_of(&mut c, "pod1") >= before + 100);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, log) = pod2.stop();
    assert!(ok, "pod failed:\n{log}");
    let got = read_pcap(&out2);
    assert!(got == in_a, "all 100 frames pass without the meter (got {})", got.len());
    let drops = c.drops().unwrap();
    assert_eq!(drops.reasons.iter().find(|r| r.reason == "meter_drop").map_or(0, |r| r.count), 90);
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
}

/// TCP SYNs from 02:00:00:00:01:02 / 10.0.0.1 to 02:00:00:00:01:01 /
/// 10.0.0.2 port 80, source ports 1000.. (IPv4 checksum right).
fn syns(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut f = vec![0x02, 0, 0, 0, 1, 1, 0x02, 0, 0, 0, 1, 2, 0x08, 0x00];
            let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
            let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
            let sum = (sum & 0xffff) + (sum >> 16);
            ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            f.extend(ip);
            f.extend((1000 + i as u16).to_be_bytes());
            f.extend([0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0, 0, 0, 0, 0]);
            f
        })
        .collect()
}

/// Control plane policing (CoPP): a Southbound `Meter` named by a flow's
/// `controller_meter` limits what Petrel does in pinctrl's place. An ACL
/// rejects TCP to port 80 under a CoPP `reject` meter of 1 packet/s with a
/// burst of 3: of 20 SYNs, exactly 3 are answered with an RST (the other
/// 17 are `meter_drop`), and none reaches pod2.
#[test]
fn ovn_copp_meter_limits_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ovn_procs, nb, sb) = start_ovn(d);
    nbctl(&nb, &["ls-add", "sw0", "--", "lsp-add", "sw0", "pod1", "--", "lsp-add", "sw0", "pod2"]);
    nbctl(&nb, &["lsp-set-addresses", "pod1", "02:00:00:00:01:02"]);
    nbctl(&nb, &["lsp-set-addresses", "pod2", "02:00:00:00:01:01"]);
    nbctl(&nb, &["meter-add", "m1", "drop", "1", "pktps", "3"]);
    nbctl(&nb, &["copp-add", "copp1", "reject", "m1", "--", "ls-copp-add", "copp1", "sw0"]);
    nbctl(&nb, &["acl-add", "sw0", "from-lport", "1000", "tcp.dst == 80", "reject"]);
    write_pcap(&d.join("in.pcap"), &syns(20));
    empty_pcap(&d.join("empty.pcap"));

    let (s1, s2, ctl_sock) = (d.join("pod1.sock"), d.join("pod2.sock"), d.join("petreld.sock"));
    let mut p = petreld(
        d,
        &ctl_sock,
        &[
            "--port".into(),
            format!("pod1=vhost-user,path={},mode=server,iface-id=pod1", s1.display()),
            "--port".into(),
            format!("pod2=vhost-user,path={},mode=server,iface-id=pod2", s2.display()),
        ],
    );
    wait_for("petreld's control socket", 20, || ctl_sock.exists());
    let _ovn = petrel_ovn(d, &sb, "127.0.0.1", &ctl_sock);
    nbctl(&nb, &["--timeout=30", "--wait=hv", "sync"]);
    let mut c = common::connect(&ctl_sock, "copp meter test");
    wait_for("the CoPP meter in petreld", 20, || c.meters().unwrap().meters.len() == 1);
    let m = c.meters().unwrap().meters.remove(0);
    assert_eq!((m.name.as_str(), m.rate, m.burst, m.unit), ("m1", 1, 3, Unit::Packets), "{m:?}");

    let vdevs = [
        format!("net_pcap0,rx_pcap={},tx_pcap={}", d.join("in.pcap").display(), d.join("out1.pcap").display()),
        format!("net_virtio_user0,path={}", s1.display()),
        format!("net_virtio_user1,path={}", s2.display()),
        format!("net_pcap1,rx_pcap={},tx_pcap={}", d.join("empty.pcap").display(), d.join("out2.pcap").display()),
    ];
    let mut pod =
        testpmd(d, "pod", &vdevs, &["--forward-mode=io", "--port-topology=paired", "--no-flush-rx", "--nb-cores=1"]);
    wait_for("the SYNs through petreld", 20, || {
        let m = &c.meters().unwrap().meters[0];
        m.passed + m.dropped == 20
    });
    std::thread::sleep(Duration::from_millis(300));
    let (ok, log) = pod.stop();
    assert!(ok, "pod failed:\n{log}");
    let m = c.meters().unwrap().meters.remove(0);
    assert_eq!((m.passed, m.dropped), (3, 17), "{m:?}");
    let drops = c.drops().unwrap();
    assert_eq!(drops.reasons.iter().find(|r| r.reason == "meter_drop").map_or(0, |r| r.count), 17, "{drops:?}");
    let rsts = read_pcap(&d.join("out1.pcap"));
    assert_eq!(rsts.len(), 3, "3 RSTs back to pod1");
    for (i, r) in rsts.iter().enumerate() {
        // TCP flags RST+ACK, ports swapped: from 80 to 1000 + i.
        assert_eq!(r[12..14], [0x08, 0x00]);
        assert_eq!(r[34..38], [0, 80, (1000 + i as u16).to_be_bytes()[0], (1000 + i as u16).to_be_bytes()[1]]);
        assert_eq!(r[47] & 0x14, 0x14, "RST+ACK");
    }
    assert!(read_pcap(&d.join("out2.pcap")).is_empty(), "nothing reaches pod2");
    // A new band rate in the NB reaches the same meter, live, counters kept.
    let band = nbctl(&nb, &["--bare", "--columns=bands", "find", "meter", "name=m1"]);
    nbctl(&nb, &["set", "meter_band", band.trim(), "rate=5"]);
    nbctl(&nb, &["--timeout=30", "--wait=hv", "sync"]);
    wait_for("the new band rate", 20, || c.meters().unwrap().meters.first().is_some_and(|m| m.rate == 5));
    let m2 = c.meters().unwrap().meters.remove(0);
    assert_eq!((m2.id, m2.burst, m2.passed, m2.dropped), (m.id, 3, 3, 17), "{m2:?}");
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
}
