//! Measurement (ignored by default): initial sync of a Southbound built from
//! the `cp-bench.sh` workload (S switches × P ports, a port group, an
//! address set and 3 allow-related ACLs per switch), replica memory, and NB
//! port add → local claim with the agent running.
//!
//! `PETREL_BENCH_S=100 PETREL_BENCH_P=100 cargo nextest run -p petrel-control
//!  --run-ignored only -E 'test(bench_)' --no-capture`
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{poll_async, Ovn, OvnOptions};
use petrel_control::chassis::{Agent, AgentConfig};
use petrel_control::ovsdb::{parse_remotes, Session, SessionConfig};
use petrel_control::sb::{self, SbTable};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

/// One ovn-nbctl transaction per switch, as cp-bench.sh builds it.
fn build_nb(ovn: &Ovn, s: usize, p: usize) {
    for sw in 0..s {
        let ls = format!("ls{sw}");
        let mut args: Vec<String> = vec!["ls-add".into(), ls.clone()];
        let mut ports = Vec::new();
        let mut ips = Vec::new();
        for port in 0..p {
            let lsp = format!("ls{sw}p{port}");
            let mac = format!("0a:00:{:02x}:{:02x}:{:02x}:{:02x}", sw / 256, sw % 256, port / 256, port % 256);
            let ip = format!("{}.{}.{}.{}", 10 + sw / 256, sw % 256, port / 250, port % 250 + 2);
            args.extend(["--".into(), "lsp-add".into(), ls.clone(), lsp.clone()]);
            args.extend(["--".into(), "lsp-set-addresses".into(), lsp.clone(), format!("{mac} {ip}")]);
            ports.push(lsp);
            ips.push(ip);
        }
        args.extend(["--".into(), "pg-add".into(), format!("pg{sw}")]);
        args.extend(ports.iter().cloned());
        args.extend([
            "--".into(),
            "create".into(),
            "Address_Set".into(),
            format!("name=as{sw}"),
            format!("addresses=\"{}\"", ips.join("\",\"")),
        ]);
        for (dir, prio, m) in [
            ("to-lport", "1002", format!("outport == @pg{sw} && ip4.src == $as{sw}")),
            ("to-lport", "1001", format!("outport == @pg{sw} && ip4 && tcp.dst == 22")),
            ("from-lport", "1001", format!("inport == @pg{sw} && ip4")),
        ] {
            args.extend([
                "--".into(),
                "acl-add".into(),
                format!("pg{sw}"),
                dir.into(),
                prio.into(),
                m,
                "allow-related".into(),
            ]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ovn.nbctl(&a);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; minutes at the default scale"]
async fn bench_initial_sync_and_claim() {
    let (s, p) = (env("PETREL_BENCH_S", 10), env("PETREL_BENCH_P", 100));
    let ovn = Ovn::start(OvnOptions { clustered_sb: false, northd: true });
    let t = Instant::now();
    build_nb(&ovn, s, p);
    let o = ovn.nbctl_output(&["--timeout=900", "--wait=sb", "sync"]);
    assert!(o.status.success());
    let n_lflows = ovn.sbctl(&["--bare", "--columns=_uuid", "list", "Logical_Flow"]).split_whitespace().count();
    eprintln!("workload S={s} P={p}: NB + northd in {:?}, {n_lflows} logical flows", t.elapsed());

    // Server + transfer alone: a raw monitor_cond of every table, read to the
    // end of the reply with the framer, no JSON parsing.
    {
        use petrel_control::ovsdb::framing::Framer;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(common::SB_SCHEMA).unwrap()).unwrap();
        let req: serde_json::Map<String, serde_json::Value> =
            schema["tables"].as_object().unwrap().keys().map(|t| (t.clone(), serde_json::json!([{}]))).collect();
        let msg = serde_json::json!({"method": "monitor_cond", "params": ["OVN_Southbound", "raw", req], "id": 1});
        let mut sock = tokio::net::UnixStream::connect(ovn.dir.path().join("sb.sock")).await.unwrap();
        let t0 = Instant::now();
        sock.write_all(msg.to_string().as_bytes()).await.unwrap();
        let mut framer = Framer::new(1 << 30);
        let mut buf = vec![0u8; 256 * 1024];
        let (mut first, mut total) = (None, 0usize);
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0);
            first.get_or_insert(t0.elapsed());
            total += n;
            framer.push(&buf[..n]);
            if framer.next_frame().unwrap().is_some() {
                break;
            }
        }
        eprintln!(
            "raw monitor_cond: first byte {:?}, {} MiB read by {:?} (ovsdb-server + transfer + framing only)",
            first.unwrap(),
            total >> 20,
            t0.elapsed()
        );
    }

    for run in 0..3 {
        let rss0 = rss_kib();
        let t0 = Instant::now();
        let sess = Session::start(SessionConfig::new(parse_remotes(&ovn.sb_remote()).unwrap(), sb::DATABASE));
        poll_async(Duration::from_secs(300), "initial sync", || (sess.stats().n_connects == 1).then_some(())).await;
        let wall = t0.elapsed();
        let rows = sess.replica().n_rows();
        eprintln!(
            "run {run}: initial sync (all tables) {wall:?} (connect → replica applied {:?}: monitor reply {:?}, apply {:?}), {rows} rows, RSS +{} MiB",
            sess.stats().last_sync.unwrap(),
            sess.stats().last_monitor_reply.unwrap(),
            sess.stats().last_apply.unwrap(),
            (rss_kib().saturating_sub(rss0)) / 1024
        );
        drop(sess);
    }

    // NB port add → claimed by the agent (up=true visible in the replica).
    let mut cfg = AgentConfig::new("bench-hv", "bench-host", "192.0.2.1");
    let ports: Vec<String> = (0..5).map(|i| format!("newport{i}")).collect();
    cfg.iface_ids = ports.iter().cloned().collect::<BTreeSet<_>>();
    let sess = Session::start(SessionConfig::new(parse_remotes(&ovn.sb_remote()).unwrap(), sb::DATABASE));
    let mut agent = Agent::new(cfg, sess);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sb_remote = ovn.sb_remote();
    let handle = tokio::spawn(async move {
        agent
            .run(async {
                let _ = stop_rx.await;
            })
            .await;
        agent
    });
    // Observe through a second session that monitors only Port_Binding (an
    // ovn-sbctl poll would load the server more than the agent does).
    let mut ocfg = SessionConfig::new(parse_remotes(&sb_remote).unwrap(), sb::DATABASE);
    ocfg.tables = Some(vec!["Port_Binding".to_owned(), "Chassis".to_owned()]);
    let observer = Session::start(ocfg);
    let port_up = |port: &str| {
        sb::PortBinding::all(&observer.replica()).iter().any(|p| p.logical_port == port && p.up == Some(true))
    };
    poll_async(Duration::from_secs(60), "chassis", || {
        sb::Chassis::all(&observer.replica()).iter().any(|c| c.name == "bench-hv").then_some(())
    })
    .await;
    let mut times = Vec::new();
    for port in &ports {
        let t0 = Instant::now();
        ovn.nbctl(&["lsp-add", "ls0", port]);
        let t_nb = t0.elapsed();
        poll_async(Duration::from_secs(60), "claim", || port_up(port).then_some(())).await;
        times.push((t_nb, t0.elapsed()));
        ovn.nbctl_output(&["--timeout=60", "--wait=hv", "sync"]);
    }
    eprintln!("NB lsp-add → SB up=true seen by an observer session (NB txn, total): {times:?}");
    let _ = stop_tx.send(());
    let agent = handle.await.unwrap();
    eprintln!("agent: {:?}", agent.stats());
}
