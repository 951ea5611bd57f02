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

use petrel_dataplane::config::{Cli, Plan};
use petrel_dataplane::ctl::server::{serve, SocketOpts};
use petrel_dataplane::drop::DropReason;
use petrel_dataplane::featurectl::FeatureCtl;
use petrel_dataplane::mbuf::Mempool;
use petrel_dataplane::node::PetreldNode;
use petrel_dataplane::pmd::features::{Features, FeaturesHandle, FeaturesShared};
use petrel_dataplane::pmd::fwd::Engine;
use petrel_dataplane::pmd::stats::{sum, Counters, PortCounters, SharedStats};
use petrel_dataplane::pmd::{self, PmdSetup};
use petrel_dataplane::port::eal::Eal;
use petrel_dataplane::port::EthStats;
use petrel_dataplane::portset::{PortEntry, PortSet};
use petrel_dataplane::table::new_tables;
use petrel_dataplane::underlay::{ip16, route, NeighRing, NeighTable, Uplink};
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
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any
    /// free port, logged at start).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Log filter: LEVEL, TARGET=LEVEL or a comma-separated list
    /// (`info`, `petrel_vhost_user=debug,info`); `petrelctl log-level`
    /// changes it at runtime.
    #[arg(long, env = "PETREL_LOG", default_value = "info", value_name = "FILTER")]
    log: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("petreld: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let log = petrel_obs::logging::init(&args.log).context("--log")?;
    let plan = Arc::new(args.cli.into_plan()?);
    // Claimed before DPDK starts, so a taken address fails cleanly.
    let metrics_listener = args
        .metrics_addr
        .as_deref()
        .map(|a| petrel_obs::http::BoundListener::bind(a).with_context(|| format!("--metrics-addr {a}")))
        .transpose()?;
    let n_cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for c in &plan.pmd_cores {
        if *c >= n_cpus {
            bail!("--pmd-cores: CPU {c} does not exist (this machine has {n_cpus})");
        }
    }
    let n_pmd = plan.pmd_cores.len();
    let eal = Eal::init(&plan.eal_args).context("initialising DPDK EAL")?;
    let pool = Arc::new(
        Mempool::new("petrel_pkts", plan.mbufs, 256, Mempool::DEFAULT_DATA_ROOM, -1)
            .context("creating the packet pool")?,
    );
    // Dropped in reverse order of creation: ports (closing pod connections
    // and unmapping their memory), then the pool, then EAL.
    let ports = Arc::new(PortSet::open(&plan, Arc::clone(&pool), n_pmd, eal.tsc_hz())?);
    // The tables PMDs run for ports bound to logical ports (empty until a
    // snapshot is published over the control socket).
    let tables = new_tables();
    let quit = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))?;

    let macs = ports.macs();
    // The underlay's neighbour table: PMDs read it and report ARP for our
    // tunnel IPs through their rings; this thread folds those in below.
    let mut neigh = NeighTable::new(&plan.neighbors);
    let mut neigh_rings: Vec<(Arc<NeighRing>, u64)> = Vec::new();
    let mut shared = Vec::new();
    // Joined on every way out of `run` (an error after this point too), so
    // no PMD still polls when the ports, the pool and EAL go away.
    let mut handles = PmdThreads { quit: Arc::clone(&quit), handles: Vec::new() };
    let mut links = Vec::new();
    let mut features = Vec::new();
    for (pmd_idx, &core) in plan.pmd_cores.iter().enumerate() {
        let (queues, rx) = ports.pmd_queues(pmd_idx);
        let mut engine = Engine::new(&plan, &queues, &macs, Arc::clone(&pool), eal.tsc_hz(), Some(Arc::clone(&tables)))
            .map_err(anyhow::Error::msg)?;
        let stats = Arc::new(SharedStats::new(plan.ports.len()));
        engine.set_learn(stats.learn());
        engine.set_meters(stats.meters(), pmd_idx, plan.pmd_cores.len());
        let fh: FeaturesHandle = Arc::new(arc_swap::ArcSwap::from_pointee(Features::default()));
        let fs = Arc::new(FeaturesShared::default());
        engine.set_features(Arc::clone(&fh), Arc::clone(&fs));
        features.push((fh, fs));
        let ring = Arc::new(NeighRing::default());
        engine.set_underlay(neigh.published(), Arc::clone(&ring));
        neigh_rings.push((ring, 0));
        shared.push(Arc::clone(&stats));
        let (link, updates) = pmd::update_channel();
        links.push(link);
        let setup = PmdSetup {
            index: pmd_idx,
            core,
            rx,
            engine,
            stats,
            quit: Arc::clone(&quit),
            updates: Some(updates),
            sleep_max_us: plan.pmd_sleep_max_us,
        };
        handles.handles.push(
            std::thread::Builder::new()
                .name(format!("pmd{pmd_idx}"))
                .spawn(move || pmd::run(setup))
                .context("spawning PMD thread")?,
        );
    }
    ports.set_links(links);
    if let Some(f) = &plan.ports_file {
        let (ok, failed) = ports.restore(f);
        if !ok.is_empty() {
            tracing::info!(file = %f.display(), "{} runtime port(s) restored", ok.len());
        }
        for (spec, e) in failed {
            tracing::warn!(file = %f.display(), "could not restore port {spec:?}: {e}");
        }
    }
    let feature_ctl = FeatureCtl::new(Arc::clone(&ports), features, eal.tsc_hz());
    let stop_ctl = Arc::new(AtomicBool::new(false));
    // One node answers the control socket and the metrics scrapes, so
    // ports added at runtime show in both.
    let node = Arc::new(
        PetreldNode::new(Arc::clone(&ports), plan.pmd_cores.clone(), shared.clone(), Arc::clone(&tables), eal.tsc_hz())
            .with_log(log)
            .with_underlay(
                plan.uplinks.iter().map(|(i, s)| (plan.ports[*i].name.clone(), s.clone(), *i)).collect(),
                neigh.published(),
            )
            .with_features(Arc::clone(&feature_ctl)),
    );
    let ctl = match &plan.control_socket {
        Some(path) => {
            let opts = SocketOpts { group: plan.control_group.clone(), ..SocketOpts::default() };
            let h = serve(path, opts, Arc::clone(&node) as _, Arc::clone(&stop_ctl))
                .with_context(|| format!("control socket {}", path.display()))?;
            tracing::info!(socket = %path.display(), "control socket ready");
            Some(h)
        }
        None => None,
    };
    let metrics = match metrics_listener {
        Some(l) => {
            let m = petrel_dataplane::metrics::serve_on(l, Arc::clone(&node) as _).context("--metrics-addr")?;
            tracing::info!(addr = %m.local_addr(), "serving metrics at http://{}/metrics", m.local_addr());
            Some(m)
        }
        None => None,
    };
    tracing::info!(
        n_ports = plan.ports.len(),
        n_pmds = n_pmd,
        cpus = ?plan.pmd_cores,
        eal_args = ?plan.eal_args,
        "forwarding"
    );

    let start = Instant::now();
    let mut last_print = Instant::now();
    let mut last_total = Counters::new(0);
    let mut last_rx = 0;
    let mut last_rx_change = Instant::now();
    let mut seen = Vec::new();
    let ups: Vec<Uplink> = plan.uplinks.iter().map(|(i, s)| Uplink::new(s, *i, [0; 6])).collect();
    let mut wanted_for = (u64::MAX, u64::MAX);
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        if !plan.uplinks.is_empty() {
            // The next hops of the tables' remote chassis and of the remote
            // mirrors' sinks are the neighbours worth learning.
            let snap = tables.load();
            let (sinks_gen, sinks) = feature_ctl.remote_sinks();
            if (snap.generation, sinks_gen) != wanted_for {
                wanted_for = (snap.generation, sinks_gen);
                neigh.set_wanted(
                    snap.chassis.iter().map(|c| c.ip).chain(sinks).filter_map(|ip| route(&ups, &ip16(ip)).map(|r| r.1)),
                );
            }
            seen.clear();
            for (ring, cursor) in &mut neigh_rings {
                *cursor = ring.read_since(*cursor, &mut seen);
            }
            neigh.update(&seen, Instant::now());
        }
        if handles.handles.iter().any(std::thread::JoinHandle::is_finished) {
            break; // a PMD failed; the join below reports it
        }
        let total = sum(&shared.iter().map(|s| s.snapshot()).collect::<Vec<_>>());
        if let Some(secs) = plan.stats_interval {
            let dt = last_print.elapsed().as_secs_f64();
            if dt >= secs {
                eprint!("{}", rates(&ports, &last_total, &total, dt));
                last_print = Instant::now();
                last_total = total.clone();
            }
        }
        if total.rx_packets != last_rx {
            last_rx = total.rx_packets;
            last_rx_change = Instant::now();
        } else if let Some(ms) = plan.exit_when_idle_ms {
            if last_rx > 0 && last_rx_change.elapsed() >= Duration::from_millis(ms) {
                tracing::info!("idle for {ms} ms, exiting");
                break;
            }
        }
    }
    quit.store(true, Ordering::Relaxed);
    stop_ctl.store(true, Ordering::Relaxed);
    if let Some(h) = ctl {
        let _ = h.join();
    }
    // Waits for scrapes in flight: nothing may hold the ports past here.
    drop(metrics);
    drop(node);
    drop(feature_ctl);
    let mut finals = Vec::new();
    let mut failed = None;
    for h in std::mem::take(&mut handles.handles) {
        match h.join() {
            Ok(Ok(c)) => finals.push(c),
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some("a PMD thread panicked".to_owned()),
        }
    }
    let total = sum(&finals);
    let entries = ports.entries();
    let mut report = final_report(&plan, &entries, &ports.eth_stats(), &total, &finals, start.elapsed());
    // Closing the ports returns the mbufs their rings held; what is still
    // in use after that was lost somewhere: it must be zero.
    let vhost_ports = ports.close_all();
    drop(ports);
    let leaked = pool.in_use_count();
    let _ = writeln!(report, "mbufs in use after port close: {leaked}");
    print!("{report}");
    if let Some(path) = &args.stats_file {
        std::fs::write(path, stats_json(&entries, &total, &finals, &plan.pmd_cores, leaked, &vhost_ports))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(pool);
    drop(eal);
    if let Some(e) = failed {
        bail!("{e}");
    }
    Ok(())
}

/// The PMD threads: stopped and joined when dropped.
struct PmdThreads {
    quit: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Result<Counters, String>>>,
}

impl Drop for PmdThreads {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn rates(ports: &PortSet, a: &Counters, b: &Counters, dt: f64) -> String {
    let mut s = String::new();
    let zero = PortCounters::default();
    for (i, p) in ports.entries().iter().enumerate() {
        let Some(p) = p else { continue };
        let (pa, pb) = (a.ports.get(i).unwrap_or(&zero), b.ports.get(i).unwrap_or(&zero));
        let _ = writeln!(
            s,
            "port {:<12} rx {:>10.0} pps tx {:>10.0} pps  drops {}",
            p.spec.name,
            pb.rx_packets.saturating_sub(pa.rx_packets) as f64 / dt,
            pb.tx_packets.saturating_sub(pa.tx_packets) as f64 / dt,
            pb.drops + pb.tx_drops
        );
    }
    s
}

fn final_report(
    plan: &Plan,
    entries: &[Option<PortEntry>],
    eth: &[(String, EthStats)],
    total: &Counters,
    per_pmd: &[Counters],
    elapsed: Duration,
) -> String {
    let mut s = String::new();
    let zero = PortCounters::default();
    let _ = writeln!(s, "petreld: final stats after {:.1} s", elapsed.as_secs_f64());
    let _ = writeln!(
        s,
        "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
        "port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops", "tx_drops"
    );
    for (i, p) in entries.iter().enumerate() {
        let Some(p) = p else { continue };
        let c = total.ports.get(i).unwrap_or(&zero);
        let _ = writeln!(
            s,
            "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
            p.spec.name, c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.drops, c.tx_drops
        );
    }
    for (name, x) in eth {
        if x.imissed + x.ierrors + x.oerrors > 0 {
            let _ = writeln!(s, "device {name}: imissed {} ierrors {} oerrors {}", x.imissed, x.ierrors, x.oerrors);
        }
    }
    for v in entries.iter().flatten().filter_map(|p| p.vhost.as_ref()) {
        let c = &v.counters;
        let _ = writeln!(
            s,
            "vhost-user {}: connects {} disconnects {} violations {} dropped {} calls {}",
            v.name(),
            c.connects.load(Ordering::Relaxed),
            c.disconnects.load(Ordering::Relaxed),
            c.violations.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
            c.calls.load(Ordering::Relaxed)
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

fn stats_json(
    entries: &[Option<PortEntry>],
    total: &Counters,
    per_pmd: &[Counters],
    pmd_cores: &[usize],
    leaked: u32,
    vhost: &[Arc<VhostPort>],
) -> String {
    let zero = PortCounters::default();
    let ports: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
        .map(|(i, p)| {
            let c = total.ports.get(i).unwrap_or(&zero);
            (
                p.spec.name.clone(),
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
        .zip(pmd_cores)
        .map(|(c, core)| {
            serde_json::json!({
                "cpu": core, "busy_cycles": c.busy_cycles, "idle_cycles": c.idle_cycles,
                "sleep_cycles": c.sleep_cycles,
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
                    "calls": c.calls.load(Ordering::Relaxed),
                }),
            )
        })
        .collect();
    let v = serde_json::json!({ "ports": ports, "drops": drops, "pmds": pmds, "mbufs_leaked": leaked, "vhost": vhost });
    format!("{v:#}\n")
}
