//! End-to-end tests of vhost-user ports: `dpdk-testpmd` with
//! `net_virtio_user` is the pod, `petreld --xconnect` forwards between two
//! of its ports, in both socket modes; a hostile frontend (rust-vmm's
//! `Frontend` plus rings we write by hand) breaks the rules on a third port
//! while the pod keeps forwarding.
//!
//! CPU placement (2 cores): petreld's PMD on CPU 1, the pod's forwarding
//! lcore on CPU 0 (its main lcore on 1 only sleeps between stats). Every
//! process is killed when its guard drops, pass or fail. The group `vhost`
//! in .config/nextest.toml runs these tests one at a time.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use common::pods::{testpmd, wait_for, Proc, EAL};
use common::{read_pcap, write_pcap};

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");

fn petreld(dir: &Path, tag: &str, args: &[String]) -> Proc {
    let mut cmd = Command::new(PETRELD);
    cmd.args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "8191", "--control-socket", "none"])
        .arg("--stats-file")
        .arg(dir.join(format!("{tag}.stats.json")))
        .args(args);
    Proc::spawn("petreld", cmd, dir.join(format!("{tag}.petreld.log")))
}

fn stats(dir: &Path, tag: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{tag}.stats.json"))).unwrap()).unwrap()
}

fn n(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64().unwrap_or_else(|| panic!("no {path:?} in {v}"))
}

/// testpmd's last "Forward statistics for port P" block: (RX-packets, TX-packets).
fn pod_port_stats(log: &str, port: u16) -> (u64, u64) {
    let head = format!("Forward statistics for port {port} ");
    let at = log.rfind(&head).unwrap_or_else(|| panic!("no final stats for port {port} in:\n{log}"));
    let block = &log[at..];
    let field = |name: &str| -> u64 {
        let i = block.find(name).unwrap() + name.len();
        block[i..].split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("RX-packets:"), field("TX-packets:"))
}

/// Frames of every size from 60 to 1514 bytes, each with distinct content.
fn frames(count: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = 60 + (i * 97) % (1514 - 60 + 1);
            let mut f: Vec<u8> = (0..len).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 ^ seed)).collect();
            f[..12].copy_from_slice(&[0x02, 0, 0, 0, seed, 1, 0x02, 0, 0, 0, seed, 2]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
            f[14..16].copy_from_slice(&(i as u16).to_be_bytes());
            f
        })
        .collect()
}

fn vhost_port(name: &str, sock: &Path, mode: &str, extra: &str) -> String {
    format!("{name}=vhost-user,path={},mode={mode}{extra}", sock.display())
}

/// The pod of the byte-exact test: pcap → virtio a → petreld → virtio b → pcap, and back.
fn replay_pod(dir: &Path, tag: &str, a: &Path, b: &Path, server: bool) -> Proc {
    let s = if server { ",server=1" } else { "" };
    let vdevs = [
        format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            dir.join("inA.pcap").display(),
            dir.join(format!("{tag}.outA.pcap")).display()
        ),
        format!("net_virtio_user0,path={}{s}", a.display()),
        format!("net_virtio_user1,path={}{s}", b.display()),
        format!(
            "net_pcap1,rx_pcap={},tx_pcap={}",
            dir.join("inB.pcap").display(),
            dir.join(format!("{tag}.outB.pcap")).display()
        ),
    ];
    testpmd(dir, tag, &vdevs, &["--forward-mode=io", "--port-topology=paired", "--no-flush-rx", "--nb-cores=1"])
}

/// Runs the replay pod until its pcaps are through, stops it, checks both
/// directions byte for byte.
fn replay_and_check(dir: &Path, tag: &str, a: &Path, b: &Path, server: bool, want_a: &[Vec<u8>], want_b: &[Vec<u8>]) {
    let mut pod = replay_pod(dir, tag, a, b, server);
    // The pcap ports are the pod's ports 0 and 3: wait until each sent what the other received.
    std::thread::sleep(Duration::from_secs(3));
    assert!(pod.alive(), "pod exited early:\n{}", pod.log());
    let (ok, log) = pod.stop();
    assert!(ok, "pod failed:\n{log}");
    let out_b = read_pcap(&dir.join(format!("{tag}.outB.pcap")));
    let out_a = read_pcap(&dir.join(format!("{tag}.outA.pcap")));
    assert_eq!(out_b.len(), want_b.len(), "a→b frame count ({tag}); pod log:\n{log}");
    assert!(out_b == want_b, "a→b frames must arrive unchanged and in order ({tag})");
    assert_eq!(out_a.len(), want_a.len(), "b→a frame count ({tag}); pod log:\n{log}");
    assert!(out_a == want_a, "b→a frames must arrive unchanged and in order ({tag})");
}

#[test]
fn server_mode_both_ways_byte_exact_and_pod_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a.sock"), d.join("b.sock"));
    let in_a = frames(200, 1);
    let in_b = frames(150, 2);
    write_pcap(&d.join("inA.pcap"), &in_a);
    write_pcap(&d.join("inB.pcap"), &in_b);
    let mut p = petreld(
        d,
        "p",
        &[
            "--port".into(),
            vhost_port("a", &a, "server", ""),
            "--port".into(),
            vhost_port("b", &b, "server", ""),
            "--xconnect".into(),
            "a:b".into(),
        ],
    );
    wait_for("petreld's sockets", 20, || a.exists() && b.exists());
    replay_and_check(d, "pod1", &a, &b, false, &in_b, &in_a);
    // The pod restarts: it reconnects to the same sockets, no petreld restart.
    replay_and_check(d, "pod2", &a, &b, false, &in_b, &in_a);
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    let s = stats(d, "p");
    assert_eq!(n(&s, &["ports", "a", "rx_packets"]), 2 * in_a.len() as u64, "{log}");
    assert_eq!(n(&s, &["ports", "b", "tx_packets"]), 2 * in_a.len() as u64, "{log}");
    assert_eq!(n(&s, &["ports", "b", "rx_packets"]), 2 * in_b.len() as u64, "{log}");
    assert_eq!(n(&s, &["vhost", "a", "connects"]), 2, "{log}");
    assert_eq!(n(&s, &["vhost", "b", "violations"]), 0, "{log}");
    assert_eq!(n(&s, &["mbufs_leaked"]), 0);
}

#[test]
fn client_mode_byte_exact_and_petreld_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a.sock"), d.join("b.sock"));
    let ports = [
        "--port".to_owned(),
        vhost_port("a", &a, "client", ""),
        "--port".into(),
        vhost_port("b", &b, "client", ""),
        "--xconnect".into(),
        "a:b".into(),
    ];
    // The pod creates the sockets (server=1) and forwards flowgen traffic
    // both ways; petreld connects, goes away and comes back.
    let vdevs = [
        format!("net_virtio_user0,path={},server=1", a.display()),
        format!("net_virtio_user1,path={},server=1", b.display()),
    ];
    let mut pod = testpmd(d, "pod", &vdevs, &["--forward-mode=flowgen", "--txpkts=64", "--nb-cores=1"]);
    // testpmd 22.11 creates b's socket only after a's frontend connected
    // (its server mode accepts synchronously at probe), so wait for a only.
    wait_for("the pod's first socket", 20, || a.exists());
    let mut p1 = petreld(d, "p1", &ports);
    std::thread::sleep(Duration::from_secs(3));
    let (ok, log1) = p1.stop();
    assert!(ok, "petreld failed:\n{log1}");
    assert!(pod.alive(), "the pod must survive petreld's exit:\n{}", pod.log());
    let mut p2 = petreld(d, "p2", &ports);
    std::thread::sleep(Duration::from_secs(3));
    let (ok, log2) = p2.stop();
    assert!(ok, "petreld failed:\n{log2}");
    let (ok, pod_log) = pod.stop();
    assert!(ok, "pod failed:\n{pod_log}");
    for (tag, log) in [("p1", &log1), ("p2", &log2)] {
        let s = stats(d, tag);
        for port in ["a", "b"] {
            assert!(n(&s, &["ports", port, "rx_packets"]) > 10_000, "{tag}: {port} received too little:\n{log}");
            assert!(n(&s, &["ports", port, "tx_packets"]) > 10_000, "{tag}: {port} sent too little:\n{log}");
            assert_eq!(n(&s, &["vhost", port, "connects"]), 1, "{tag}:\n{log}");
            assert_eq!(n(&s, &["vhost", port, "violations"]), 0, "{tag}:\n{log}");
        }
    }
    // What petreld sent the pod, the pod received (flowgen counts every arrival).
    let s1 = stats(d, "p1");
    let s2 = stats(d, "p2");
    let (rx0, _) = pod_port_stats(&pod_log, 0);
    let sent_to_0 = n(&s1, &["ports", "a", "tx_packets"]) + n(&s2, &["ports", "a", "tx_packets"]);
    // (Less what was still in flight when a petreld stopped: at most a ring or two.)
    assert!(rx0 <= sent_to_0 && rx0 + 2 * 256 >= sent_to_0, "pod port 0 got {rx0} of {sent_to_0}:\n{pod_log}");

    // Byte-exact in client mode too (a fresh pod and petreld).
    let in_a = frames(120, 3);
    let in_b = frames(80, 4);
    write_pcap(&d.join("inA.pcap"), &in_a);
    write_pcap(&d.join("inB.pcap"), &in_b);
    let (a2, b2) = (d.join("a2.sock"), d.join("b2.sock"));
    let ports2 = [
        "--port".to_owned(),
        vhost_port("a", &a2, "client", ""),
        "--port".into(),
        vhost_port("b", &b2, "client", ""),
        "--xconnect".into(),
        "a:b".into(),
    ];
    // petreld first: it keeps trying until the pod's sockets appear.
    let mut p3 = petreld(d, "p3", &ports2);
    std::thread::sleep(Duration::from_millis(500));
    let mut pod = replay_pod(d, "pod3", &a2, &b2, true);
    wait_for("petreld to connect", 20, || p3.log().matches("frontend connected").count() >= 2);
    std::thread::sleep(Duration::from_secs(3));
    let (ok, log) = pod.stop();
    assert!(ok, "pod failed:\n{log}");
    assert!(read_pcap(&d.join("pod3.outB.pcap")) == in_a, "a→b byte-exact in client mode:\n{log}\n{}", p3.log());
    assert!(read_pcap(&d.join("pod3.outA.pcap")) == in_b, "b→a byte-exact in client mode:\n{log}");
    let (ok, log) = p3.stop();
    assert!(ok, "petreld failed:\n{log}");
}

#[test]
fn two_queue_pairs_carry_traffic_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a.sock"), d.join("b.sock"));
    let mut p = petreld(
        d,
        "p",
        &[
            "--port".into(),
            vhost_port("a", &a, "server", ",queues=2"),
            "--port".into(),
            vhost_port("b", &b, "server", ",queues=2"),
            "--xconnect".into(),
            "a:b".into(),
        ],
    );
    wait_for("petreld's sockets", 20, || a.exists() && b.exists());
    let vdevs = [
        format!("net_virtio_user0,path={},queues=2,cq=1", a.display()),
        format!("net_virtio_user1,path={},queues=2,cq=1", b.display()),
    ];
    let mut pod =
        testpmd(d, "pod", &vdevs, &["--forward-mode=flowgen", "--txq=2", "--rxq=2", "--nb-cores=1", "--txpkts=64"]);
    std::thread::sleep(Duration::from_secs(4));
    let (ok, pod_log) = pod.stop();
    assert!(ok, "pod failed:\n{pod_log}");
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    let s = stats(d, "p");
    // flowgen spreads its packets over both tx queues; were queue pair 1 not
    // polled, about half of what the pod sent would never reach petreld.
    for (port, name) in [(0u16, "a"), (1, "b")] {
        let (_, pod_tx) = pod_port_stats(&pod_log, port);
        let got = n(&s, &["ports", name, "rx_packets"]);
        assert!(pod_tx > 10_000, "pod port {port} sent too little:\n{pod_log}");
        assert!(got + 2 * 2 * 256 >= pod_tx, "petreld got {got} of {pod_tx} from pod port {port}:\n{log}\n{pod_log}");
    }
}

mod hostile {
    //! A frontend that sets up one queue pair correctly, then breaks one rule.
    use super::*;
    use petrel_vhost_user::virtq::testing::{MockGuest, AVAIL, BASE, BUFS, DESC, MEM_SIZE, USED};
    use petrel_vhost_user::virtq::{DESC_F_INDIRECT, DESC_F_NEXT};
    use std::os::unix::io::AsRawFd;
    use vhost::vhost_user::{Frontend, VhostUserFrontend};
    use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
    use vmm_sys_util::eventfd::EventFd;

    pub enum Attack {
        MemFileTooSmall,
        RingOutsideMemory,
        DescLoop,
        HugeLength,
        HeadOutOfRange,
        AvailIdxJump,
        NestedIndirect,
    }

    /// Connects, negotiates, then attacks; returns once petreld has closed the socket.
    pub fn attack(sock: &Path, attack: &Attack) {
        let stream = UnixStream::connect(sock).unwrap();
        let mut watch = stream.try_clone().unwrap();
        let mut fe = Frontend::from_stream(stream, 2);
        let g = MockGuest::new(256);
        fe.set_owner().unwrap();
        let feats = fe.get_features().unwrap();
        fe.set_features(feats).unwrap();
        let file = g.file();
        let size = match attack {
            Attack::MemFileTooSmall => MEM_SIZE * 4,
            _ => MEM_SIZE,
        };
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: BASE,
            memory_size: size,
            userspace_addr: BASE,
            mmap_offset: 0,
            mmap_handle: file.as_raw_fd(),
        };
        let _ = fe.set_mem_table(&[region]);
        let kick = EventFd::new(0).unwrap();
        for q in 0..2 {
            let _ = fe.set_vring_num(q, 256);
            let used = if matches!(attack, Attack::RingOutsideMemory) { 0x10 } else { USED + (q as u64) * 0x4000 };
            let cfg = VringConfigData {
                queue_max_size: 256,
                queue_size: 256,
                flags: 0,
                desc_table_addr: DESC + (q as u64) * 0x2_0000,
                used_ring_addr: used,
                avail_ring_addr: AVAIL + (q as u64) * 0x4000,
                log_addr: None,
            };
            let _ = fe.set_vring_addr(q, &cfg);
            let _ = fe.set_vring_base(q, 0);
            let _ = fe.set_vring_kick(q, &kick);
            let _ = fe.set_vring_enable(q, true);
        }
        // Queue 1 (the guest's transmit queue) uses the mock's layout shifted
        // by (0x2_0000, 0x4000, 0x4000); write it as a driver would.
        let (desc, avail) = (DESC + 0x2_0000, AVAIL + 0x4000);
        let set_desc = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
            g.set_desc_at(desc, i, addr, len, flags, next);
        };
        let mut head = 0u16;
        let mut idx = 1u16;
        match attack {
            Attack::MemFileTooSmall | Attack::RingOutsideMemory => {}
            Attack::DescLoop => {
                set_desc(0, BUFS, 64, DESC_F_NEXT, 1);
                set_desc(1, BUFS, 64, DESC_F_NEXT, 0);
            }
            Attack::HugeLength => set_desc(0, BUFS, u32::MAX, 0, 0),
            Attack::HeadOutOfRange => head = 4000,
            Attack::AvailIdxJump => idx = 1000,
            Attack::NestedIndirect => {
                g.set_desc_at(BUFS, 0, BUFS, 16, DESC_F_INDIRECT, 0);
                set_desc(0, BUFS, 16, DESC_F_INDIRECT, 0);
            }
        }
        g.write(avail + 4, &head.to_le_bytes());
        g.write(avail + 2, &idx.to_le_bytes());
        // petreld must hang up on us.
        watch.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match watch.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("petreld did not disconnect the hostile frontend: {e}"),
            }
        }
        let _ = watch.write(b"");
    }
}

#[test]
fn hostile_frontend_is_disconnected_while_another_port_forwards() {
    use hostile::Attack;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b, h) = (d.join("a.sock"), d.join("b.sock"), d.join("h.sock"));
    let mut p = petreld(
        d,
        "p",
        &[
            "--port".into(),
            vhost_port("a", &a, "server", ""),
            "--port".into(),
            vhost_port("b", &b, "server", ""),
            "--port".into(),
            vhost_port("h", &h, "server", ""),
            "--port".into(),
            "n=dpdk,devargs=net_null0".into(),
            "--xconnect".into(),
            "a:b".into(),
            "--xconnect".into(),
            "h:n".into(),
        ],
    );
    wait_for("petreld's sockets", 20, || a.exists() && b.exists() && h.exists());
    let vdevs = [format!("net_virtio_user0,path={}", a.display()), format!("net_virtio_user1,path={}", b.display())];
    let mut pod = testpmd(d, "pod", &vdevs, &["--forward-mode=flowgen", "--txpkts=64", "--nb-cores=1"]);
    let attacks = [
        Attack::MemFileTooSmall,
        Attack::RingOutsideMemory,
        Attack::DescLoop,
        Attack::HugeLength,
        Attack::HeadOutOfRange,
        Attack::AvailIdxJump,
        Attack::NestedIndirect,
    ];
    std::thread::sleep(Duration::from_secs(1));
    for at in &attacks {
        hostile::attack(&h, at);
        assert!(p.alive(), "petreld must survive a hostile frontend:\n{}", p.log());
    }
    std::thread::sleep(Duration::from_secs(1));
    let (ok, pod_log) = pod.stop();
    assert!(ok, "pod failed:\n{pod_log}");
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    let s = stats(d, "p");
    assert_eq!(n(&s, &["vhost", "h", "violations"]), attacks.len() as u64, "one violation per attack:\n{log}");
    assert_eq!(n(&s, &["vhost", "h", "connects"]), attacks.len() as u64, "{log}");
    assert_eq!(n(&s, &["vhost", "a", "violations"]), 0, "{log}");
    assert_eq!(n(&s, &["vhost", "a", "disconnects"]), 1, "the pod's port stays connected until the pod quits:\n{log}");
    let (rx0, tx0) = pod_port_stats(&pod_log, 0);
    assert!(tx0 > 10_000 && rx0 > 10_000, "the pod kept forwarding through petreld:\n{pod_log}");
    let sent = n(&s, &["ports", "a", "tx_packets"]);
    assert!(rx0 <= sent && rx0 + 2 * 256 >= sent, "pod got {rx0} of the {sent} petreld sent it:\n{pod_log}\n{log}");
    for v in
        ["bad memory table", "bad vring address", "chain_loop", "bad_buffer", "desc_index", "avail_idx", "bad_indirect"]
    {
        assert!(log.contains(v), "petreld should log {v:?}:\n{log}");
    }
}

/// Ports added and removed at runtime (`petrelctl add-port`/`del-port`)
/// while a configured cross-connect forwards: a vhost-user port and a DPDK
/// ethdev are added, the vhost-user one receives from a pod, both are
/// removed under traffic (the socket file goes, the device is closed), a
/// configured cross-connected port cannot be removed, and at exit no mbuf
/// is missing and the cross-connect never stopped.
#[test]
fn ports_added_and_removed_at_runtime_under_traffic() {
    use petrel_dataplane::ctl::ClientError;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b, c) = (d.join("a.sock"), d.join("b.sock"), d.join("c.sock"));
    let ctl_sock = d.join("petreld.sock");
    let mut cmd = Command::new(PETRELD);
    cmd.args(["--eal-args", EAL, "--pmd-cores", "1", "--mbufs", "8191"])
        .arg("--control-socket")
        .arg(&ctl_sock)
        .arg("--stats-file")
        .arg(d.join("p.stats.json"))
        .arg("--port")
        .arg(vhost_port("a", &a, "server", ""))
        .arg("--port")
        .arg(vhost_port("b", &b, "server", ""))
        .args(["--xconnect", "a:b"]);
    let mut p = Proc::spawn("petreld", cmd, d.join("p.petreld.log"));
    wait_for("petreld's sockets", 20, || a.exists() && b.exists() && ctl_sock.exists());
    let vdevs = [format!("net_virtio_user0,path={}", a.display()), format!("net_virtio_user1,path={}", b.display())];
    let mut pod = testpmd(d, "pod", &vdevs, &["--forward-mode=flowgen", "--txpkts=64", "--nb-cores=1"]);
    let mut ctl = common::connect(&ctl_sock, "vhost test");
    let port = |ctl: &mut petrel_dataplane::ctl::Client, n: &str| {
        ctl.stats().unwrap().ports.into_iter().find(|p| p.name == n).map(|p| p.stats)
    };
    wait_for("the cross-connect forwarding", 20, || port(&mut ctl, "b").is_some_and(|s| s.tx_packets > 10_000));

    let pc = ctl.add_port(&vhost_port("c", &c, "server", "")).unwrap();
    let pd = ctl.add_port("d=dpdk,devargs=net_null7").unwrap();
    assert_eq!((pc.index, pd.index), (2, 3));
    assert!(c.exists(), "c's socket is bound when add_port returns");
    let mut pod2 = testpmd(
        d,
        "pod2",
        &[format!("net_virtio_user0,path={}", c.display())],
        &["--forward-mode=txonly", "--txpkts=64", "--nb-cores=1"],
    );
    // Nothing forwards what arrives on c (no role, no tables): received
    // and dropped as no_output, counted on c.
    wait_for("c receiving from pod2", 20, || port(&mut ctl, "c").is_some_and(|s| s.rx_packets > 1000 && s.drops > 0));
    let no_output = || {
        let r = common::connect(&ctl_sock, "vhost test").drops().unwrap();
        r.reasons.iter().find(|r| r.reason == "no_output").map_or(0, |r| r.count)
    };
    assert!(no_output() > 1000);

    match ctl.del_port("a") {
        Err(ClientError::Remote(e)) => assert!(e.message.contains("not removable"), "{}", e.message),
        other => panic!("a cross-connected port must not be removable: {other:?}"),
    }
    let b0 = port(&mut ctl, "b").unwrap().tx_packets;
    let gone = ctl.del_port("c").unwrap();
    assert!(gone.stats.rx_packets > 1000, "{gone:?}");
    assert!(!c.exists(), "c's server socket is removed");
    ctl.del_port("d").unwrap();
    let names: Vec<String> = ctl.show().unwrap().ports.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["a", "b"]);
    let dropped = no_output();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(no_output(), dropped, "nothing arrives from the removed port");
    assert!(port(&mut ctl, "b").unwrap().tx_packets > b0, "the cross-connect kept forwarding");
    // The socket path can be used again (slots are given round robin: a
    // new one, not c's).
    assert_eq!(ctl.add_port(&vhost_port("c2", &c, "server", "")).unwrap().index, 4);
    assert!(p.alive(), "{}", p.log());

    drop(pod2.stop());
    let (ok, pod_log) = pod.stop();
    assert!(ok, "pod failed:\n{pod_log}");
    let (ok, log) = p.stop();
    assert!(ok, "petreld failed:\n{log}");
    assert!(log.contains("mbufs in use after port close: 0"), "{log}");
    let s = stats(d, "p");
    assert_eq!(n(&s, &["mbufs_leaked"]), 0);
    assert!(n(&s, &["ports", "c2", "rx_packets"]) == 0, "c2 starts from zero: {s}");
}

/// Ports added at runtime survive a petreld restart (the pain of vhost
/// ports lost on restart): petreld remembers them in its ports file and
/// adds them back at start, in their slots; a removed port stays removed;
/// an entry that no longer opens is reported and forgotten.
#[test]
fn runtime_ports_survive_a_petreld_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctl_sock = d.join("petreld.sock");
    let start = |tag: &str| {
        let mut cmd = Command::new(PETRELD);
        cmd.args(["--eal-args", EAL, "--pmd-cores", "1"]).arg("--control-socket").arg(&ctl_sock);
        let p = Proc::spawn("petreld", cmd, d.join(format!("{tag}.petreld.log")));
        wait_for("petreld's control socket", 20, || {
            ctl_sock.exists() && petrel_dataplane::ctl::Client::connect(&ctl_sock, "t").is_ok()
        });
        p
    };
    let names = |ctl: &mut petrel_dataplane::ctl::Client| -> Vec<(u16, String)> {
        ctl.show().unwrap().ports.into_iter().map(|p| (p.index, p.name)).collect()
    };
    let mut p = start("1");
    let mut ctl = common::connect(&ctl_sock, "vhost test");
    let (x, y) = (d.join("x.sock"), d.join("y.sock"));
    ctl.add_port(&vhost_port("x", &x, "server", ",iface-id=lx")).unwrap();
    ctl.add_port(&vhost_port("y", &y, "client", "")).unwrap();
    ctl.add_port("n=dpdk,devargs=net_null5").unwrap();
    ctl.del_port("y").unwrap();
    let before = names(&mut ctl);
    assert_eq!(before, [(0, "x".to_owned()), (2, "n".to_owned())]);
    let (ok, log) = p.stop();
    assert!(ok, "{log}");
    assert!(!x.exists(), "petreld removes its server sockets at exit");

    let mut p = start("2");
    let mut ctl = common::connect(&ctl_sock, "vhost test");
    let after = names(&mut ctl);
    // Restored in the order they were added: slots may close up, names and
    // specs are what count.
    assert_eq!(after.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), ["x", "n"], "{}", p.log());
    let show = ctl.show().unwrap();
    assert_eq!(show.ports[0].iface_id.as_deref(), Some("lx"));
    assert!(x.exists(), "x's socket is back");
    assert!(p.log().contains("2 runtime port(s) restored"), "{}", p.log());
    let (ok, log) = p.stop();
    assert!(ok, "{log}");

    // An entry that cannot be added back is reported and dropped.
    let file = d.join("petreld.sock.ports.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut specs: Vec<String> = serde_json::from_value(v["ports"].clone()).unwrap();
    specs.push("bad=dpdk,devargs=net_nosuchdriver0".to_owned());
    std::fs::write(&file, serde_json::json!({ "ports": specs }).to_string()).unwrap();
    let mut p = start("3");
    let mut ctl = common::connect(&ctl_sock, "vhost test");
    assert_eq!(names(&mut ctl).len(), 2);
    assert!(p.log().contains("could not restore port \"bad="), "{}", p.log());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("bad="), "{text}");
    let (ok, log) = p.stop();
    assert!(ok, "{log}");
}
