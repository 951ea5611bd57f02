//! `petreld`: Petrel's poll-mode fast path.
//!
//! Owns EAL, the mbuf pool and the ports (dropped in reverse order of
//! creation: ports, then pool, then EAL), spawns one pinned PMD thread per
//! `--pmd-cores` CPU, and on SIGINT/SIGTERM stops them and prints final stats.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use petrel_dataplane::config::{Cli, Plan, PortKind};
use petrel_dataplane::ctl::server::{serve, SocketOpts};
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::mbuf::Mempool;
use petrel_dataplane::node::PetreldNode;
use petrel_dataplane::pmd::fwd::Engine;
use petrel_dataplane::pmd::stats::{sum, Counters, SharedStats};
use petrel_dataplane::pmd::{self, PmdSetup};
use petrel_dataplane::port::eal::Eal;
use petrel_dataplane::port::vhost::VhostQueue;
use petrel_dataplane::port::{EthPort, PortConf, QueueHandle};
use petrel_dataplane::table::new_tables;
use petrel_vhost_user::backend::{Backend, Mode, PortConfig};
use petrel_vhost_user::Port as VhostPort;

/// Extra CLI flags of the binary only.
#[derive(Debug, Parser)]
#[command(name = "petreld", version, about = "Petrel's poll-mode fast path (DPDK).")]
struct Args {
    #[command(flatten)]
    cli: Cli,
    /// Write the final counters as JSON to this file at exit.
    #[arg(long, value_name = "FILE")]
    stats_file: Option<std::path::PathBuf>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("petreld: error: {e:#}");
        std::process::exit(1);
    }
}

/// Everything DPDK-backed, in drop order: ports first, then the vhost-user
/// management thread (closing pod connections, unmapping their memory),
/// then the pool, then EAL.
struct Node {
    ports: Vec<EthPort>,
    vhost: Option<Backend>,
    vhost_ports: Vec<Arc<VhostPort>>,
    pool: Arc<Mempool>,
    eal: Eal,
}

/// What backs plan port `i`.
enum Dev {
    Eth(usize),
    Vhost(Arc<VhostPort>),
    None,
}

fn run() -> Result<()> {
    let args = Args::parse();
    let plan = Arc::new(args.cli.into_plan()?);
    let n_cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for c in &plan.pmd_cores {
        if *c >= n_cpus {
            bail!("--pmd-cores: CPU {c} does not exist (this machine has {n_cpus})");
        }
    }
    let n_pmd = plan.pmd_cores.len();
    let eal = Eal::init(&plan.eal_args).context("initialising DPDK EAL")?;
    let pool = Mempool::new("petrel_pkts", plan.mbufs, 256, Mempool::DEFAULT_DATA_ROOM, -1)
        .context("creating the packet pool")?;
    let mut node = Node { ports: Vec::new(), vhost: None, vhost_ports: Vec::new(), pool: Arc::new(pool), eal };
    let n_txq = u16::try_from(n_pmd).context("too many PMD cores")?;
    let mut devs = Vec::new();
    for p in &plan.ports {
        match &p.kind {
            PortKind::Dpdk { devargs } => {
                let conf = PortConf {
                    name: p.name.clone(),
                    devargs: devargs.clone(),
                    n_rxq: 1,
                    n_txq,
                    n_rxd: 1024,
                    n_txd: 1024,
                };
                node.ports.push(EthPort::open(&conf, &node.pool)?);
                devs.push(Dev::Eth(node.ports.len() - 1));
            }
            PortKind::VhostUser { path, client, queues } => {
                // At most one interrupt per ring every 20 µs.
                let interval = node.eal.tsc_hz() / 50_000;
                let backend = node.vhost.get_or_insert_with(|| Backend::start(interval));
                let mode = if *client { Mode::Client } else { Mode::Server };
                let cfg = PortConfig { name: p.name.clone(), path: path.clone(), mode, queues: *queues };
                let port = backend.add_port(cfg)?;
                node.vhost_ports.push(Arc::clone(&port));
                devs.push(Dev::Vhost(port));
            }
            PortKind::Geneve(_) => devs.push(Dev::None),
        }
    }
    // The tables PMDs run for ports bound to logical ports (empty until a
    // snapshot is published over the control socket).
    let tables = new_tables();
    let quit = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))?;

    let macs: Vec<[u8; 6]> =
        devs.iter().map(|d| if let Dev::Eth(k) = d { node.ports[*k].mac() } else { [0; 6] }).collect();
    let mut shared = Vec::new();
    let mut handles = Vec::new();
    for (pmd_idx, &core) in plan.pmd_cores.iter().enumerate() {
        let txq = u16::try_from(pmd_idx).context("PMD index")?;
        // Rx queue 0 of DPDK port i is polled by PMD i % n_pmd, queue pair q
        // of vhost-user port i by PMD (i + q) % n_pmd.
        let vq = |port: &Arc<VhostPort>, rxq| {
            QueueHandle::Vhost(VhostQueue::new(Arc::clone(port), Arc::clone(&node.pool), rxq, txq))
        };
        let queues: Vec<_> = devs
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dev::Eth(k) => Some(node.ports[*k].queue(if i % n_pmd == pmd_idx { Some(0) } else { None }, txq)),
                Dev::Vhost(port) => Some(vq(port, None)),
                Dev::None => None,
            })
            .collect();
        let mut rx = Vec::new();
        for (i, d) in devs.iter().enumerate() {
            match d {
                Dev::Eth(k) if i % n_pmd == pmd_idx => rx.push((i, node.ports[*k].queue(Some(0), txq))),
                Dev::Vhost(port) => {
                    for q in 0..port.n_qp() {
                        if (i + usize::from(q)) % n_pmd == pmd_idx {
                            rx.push((i, vq(port, Some(q))));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut engine =
            Engine::new(&plan, &queues, &macs, Arc::clone(&node.pool), node.eal.tsc_hz(), Some(Arc::clone(&tables)))
                .map_err(anyhow::Error::msg)?;
        let stats = Arc::new(SharedStats::new(plan.ports.len()));
        engine.set_learn(stats.learn());
        shared.push(Arc::clone(&stats));
        let setup = PmdSetup { index: pmd_idx, core, rx, engine, stats, quit: Arc::clone(&quit) };
        handles.push(
            std::thread::Builder::new()
                .name(format!("pmd{pmd_idx}"))
                .spawn(move || pmd::run(setup))
                .context("spawning PMD thread")?,
        );
    }
    let stop_ctl = Arc::new(AtomicBool::new(false));
    let ctl = match &plan.control_socket {
        Some(path) => {
            let vhost = devs.iter().map(|d| if let Dev::Vhost(p) = d { Some(Arc::clone(p)) } else { None }).collect();
            let node = PetreldNode::new(Arc::clone(&plan), shared.clone(), Arc::clone(&tables), node.eal.tsc_hz())
                .with_vhost(vhost);
            let opts = SocketOpts { group: plan.control_group.clone(), ..SocketOpts::default() };
            let h = serve(path, opts, Arc::new(node), Arc::clone(&stop_ctl))
                .with_context(|| format!("control socket {}", path.display()))?;
            eprintln!("petreld: control socket {}", path.display());
            Some(h)
        }
        None => None,
    };
    eprintln!(
        "petreld: forwarding: {} ports, {} PMD(s) on CPU(s) {:?}, EAL args {:?}",
        plan.ports.len(),
        n_pmd,
        plan.pmd_cores,
        plan.eal_args
    );

    let start = Instant::now();
    let mut last_print = Instant::now();
    let mut last_total = Counters::new(plan.ports.len());
    let mut last_rx = 0;
    let mut last_rx_change = Instant::now();
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        if handles.iter().any(std::thread::JoinHandle::is_finished) {
            break; // a PMD failed; the join below reports it
        }
        let total = sum(&shared.iter().map(|s| s.snapshot()).collect::<Vec<_>>());
        if let Some(secs) = plan.stats_interval {
            let dt = last_print.elapsed().as_secs_f64();
            if dt >= secs {
                eprint!("{}", rates(&plan, &last_total, &total, dt));
                last_print = Instant::now();
                last_total = total.clone();
            }
        }
        if total.rx_packets != last_rx {
            last_rx = total.rx_packets;
            last_rx_change = Instant::now();
        } else if let Some(ms) = plan.exit_when_idle_ms {
            if last_rx > 0 && last_rx_change.elapsed() >= Duration::from_millis(ms) {
                eprintln!("petreld: idle for {ms} ms, exiting");
                break;
            }
        }
    }
    quit.store(true, Ordering::Relaxed);
    stop_ctl.store(true, Ordering::Relaxed);
    if let Some(h) = ctl {
        let _ = h.join();
    }
    let mut finals = Vec::new();
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(c)) => finals.push(c),
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some("a PMD thread panicked".to_owned()),
        }
    }
    let total = sum(&finals);
    let mut report = final_report(&plan, &node, &total, &finals, start.elapsed());
    // Stopping and closing the ports returns the mbufs their rings held; what
    // is still in use after that was lost somewhere: it must be zero.
    let Node { ports, vhost, vhost_ports, pool, eal } = node;
    drop(ports);
    drop(vhost);
    let leaked = pool.in_use_count();
    let _ = writeln!(report, "mbufs in use after port close: {leaked}");
    print!("{report}");
    if let Some(path) = &args.stats_file {
        std::fs::write(path, stats_json(&plan, &total, &finals, leaked, &vhost_ports))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(pool);
    drop(eal);
    if let Some(e) = failed {
        bail!("{e}");
    }
    Ok(())
}

fn rates(plan: &Plan, a: &Counters, b: &Counters, dt: f64) -> String {
    let mut s = String::new();
    for (i, p) in plan.ports.iter().enumerate() {
        let (pa, pb) = (&a.ports[i], &b.ports[i]);
        let _ = writeln!(
            s,
            "port {:<12} rx {:>10.0} pps tx {:>10.0} pps  drops {}",
            p.name,
            (pb.rx_packets - pa.rx_packets) as f64 / dt,
            (pb.tx_packets - pa.tx_packets) as f64 / dt,
            pb.drops + pb.tx_drops
        );
    }
    s
}

fn final_report(plan: &Plan, node: &Node, total: &Counters, per_pmd: &[Counters], elapsed: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "petreld: final stats after {:.1} s", elapsed.as_secs_f64());
    let _ = writeln!(
        s,
        "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
        "port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops", "tx_drops"
    );
    for (i, p) in plan.ports.iter().enumerate() {
        let c = &total.ports[i];
        let _ = writeln!(
            s,
            "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
            p.name, c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.drops, c.tx_drops
        );
    }
    for port in &node.ports {
        let x = port.xstats();
        if x.imissed + x.ierrors + x.oerrors > 0 {
            let _ = writeln!(
                s,
                "device {}: imissed {} ierrors {} oerrors {}",
                port.name(),
                x.imissed,
                x.ierrors,
                x.oerrors
            );
        }
    }
    for v in &node.vhost_ports {
        let c = &v.counters;
        let _ = writeln!(
            s,
            "vhost-user {}: connects {} disconnects {} violations {} dropped {}",
            v.name(),
            c.connects.load(Ordering::Relaxed),
            c.disconnects.load(Ordering::Relaxed),
            c.violations.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed)
        );
    }
    for r in DropReason::ALL {
        let n = total.drops[r.index()];
        if n > 0 {
            let _ = writeln!(s, "drop {:<28} {n}", r.name());
        }
    }
    for (i, c) in per_pmd.iter().enumerate() {
        let cycles = c.busy_cycles + c.idle_cycles;
        let busy = if cycles > 0 { 100.0 * c.busy_cycles as f64 / cycles as f64 } else { 0.0 };
        let per_pkt = if c.rx_packets > 0 { c.busy_cycles as f64 / c.rx_packets as f64 } else { 0.0 };
        let per_burst = if c.rx_bursts > 0 { c.rx_packets as f64 / c.rx_bursts as f64 } else { 0.0 };
        let _ = writeln!(
            s,
            "pmd {i} (cpu {}): busy {busy:.1}%  {per_pkt:.0} busy cycles/packet  {per_burst:.1} packets/burst",
            plan.pmd_cores[i]
        );
    }
    s
}

fn stats_json(plan: &Plan, total: &Counters, per_pmd: &[Counters], leaked: u32, vhost: &[Arc<VhostPort>]) -> String {
    let ports: serde_json::Map<String, serde_json::Value> = plan
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = &total.ports[i];
            (
                p.name.clone(),
                serde_json::json!({
                    "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes,
                    "tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes,
                    "drops": c.drops, "tx_drops": c.tx_drops,
                }),
            )
        })
        .collect();
    let drops: serde_json::Map<String, serde_json::Value> =
        DropReason::ALL.iter().map(|r| (r.name().to_owned(), total.drops[r.index()].into())).collect();
    let pmds: Vec<_> = per_pmd
        .iter()
        .zip(&plan.pmd_cores)
        .map(|(c, core)| {
            serde_json::json!({
                "cpu": core, "busy_cycles": c.busy_cycles, "idle_cycles": c.idle_cycles,
                "rx_bursts": c.rx_bursts, "rx_packets": c.rx_packets,
                "cache_hits": c.cache_hits, "cache_misses": c.cache_misses,
            })
        })
        .collect();
    let vhost: serde_json::Map<String, serde_json::Value> = vhost
        .iter()
        .map(|v| {
            let c = &v.counters;
            (
                v.name().to_owned(),
                serde_json::json!({
                    "connects": c.connects.load(Ordering::Relaxed),
                    "disconnects": c.disconnects.load(Ordering::Relaxed),
                    "violations": c.violations.load(Ordering::Relaxed),
                    "dropped": c.dropped.load(Ordering::Relaxed),
                }),
            )
        })
        .collect();
    let v = serde_json::json!({ "ports": ports, "drops": drops, "pmds": pmds, "mbufs_leaked": leaked, "vhost": vhost });
    format!("{v:#}\n")
}
