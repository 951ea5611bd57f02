//! `petrel-ovn`: the OVN chassis agent of a Petrel node (the database half
//! of ovn-controller).
//!
//! It connects to the Southbound (`--remote`, ovn-remote syntax), registers
//! the chassis, claims the logical ports named by `--iface-id`, and on
//! SIGTERM/SIGINT removes its `Chassis` and `Chassis_Private` unless
//! `--keep-chassis-on-exit` is given.
//!
//! Settings come from flags and from a TOML file (`--config`); flags win.
//! Unless `--monitor-all`, it monitors only the Southbound rows of the
//! datapaths reachable from its local ports (see `petrel_control::sb::monitor`).
//!
//! `--dataplane` names petreld's control socket: the local iface-ids are
//! then those of petreld's ports (`iface-id=` in their `--port` specs), in
//! addition to `--iface-id`, learnt by polling `show`
//! (`petrel_control::dataplane`, which also explains the grace period
//! across petreld restarts). The logical flows of the local datapaths are
//! compiled into tables and published to petreld through the same socket
//! (`petrel_control::install`); `nb_cfg` is acknowledged once petreld runs
//! them, so `ovn-nbctl --wait=hv` means "in force in the fast path".

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use petrel_control::chassis::{Agent, AgentConfig};
use petrel_control::dataplane::{WatchConfig, Watcher};
use petrel_control::install::Installer;
use petrel_control::metrics::Metrics;
use petrel_control::ovsdb::{parse_remotes, Session};
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

const CONFIG_HELP: &str = "\
Local ports: with --dataplane, petrel-ovn polls petreld's control socket
(`show`, every --dataplane-poll-ms) and treats the iface-id of every
petreld port (`iface-id=NAME` in its --port spec) as local, as well as the
--iface-id ones: a port is claimed when it appears in petreld and released
when it disappears. If petreld cannot be reached (not started yet, restarting,
exited), petrel-ovn retries (100 ms backoff doubling to 2 s) and keeps the
ports petreld last reported claimed for --dataplane-grace-ms (10 s), so a
petreld restart does not flap the claims; once that grace period is over
without petreld, those ports are released (a port of a petreld that is down
forwards nothing, and ovn-controller too releases a port whose interface
is gone). Until petreld has answered once, only --iface-id ports are local.

Config file (--config FILE, TOML): the same settings as the flags, under
the flags' names without the dashes in front (`iface-ids` is a list).
Flags and their environment variables override the file; a boolean flag
given without a value means true, `--monitor-all=false` overrides a file's
`monitor-all = true`. Unknown keys are errors. Example:

    remote = \"tcp:192.0.2.1:6642,tcp:192.0.2.2:6642\"
    system-id = \"node1\"
    encap-ip = \"192.0.2.10\"
    dataplane = \"/run/petrel/petreld.sock\"
    dataplane-poll-ms = 250
    dataplane-grace-ms = 10000
    iface-ids = [\"pod1-net1\", \"pod2-net1\"]
    hostname = \"node1.example\"
    keep-chassis-on-exit = false
    probe-interval-ms = 5000
    leader-only = false
    monitor-all = false
    metrics-addr = \"127.0.0.1:9478\"
    log = \"info\"";

/// OVN chassis agent for the Petrel dataplane.
#[derive(Debug, Parser)]
#[command(name = "petrel-ovn", version, after_help = CONFIG_HELP)]
struct Args {
    /// TOML file with defaults for every setting below (see the end).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Southbound remotes, comma-separated (`unix:PATH`, `tcp:HOST:PORT`).
    /// Required (here or in the config file).
    #[arg(long, env = "OVN_REMOTE")]
    remote: Option<String>,
    /// System id: the name of this node's `Chassis` row. Required.
    #[arg(long)]
    system_id: Option<String>,
    /// Tunnel endpoint IP (Geneve). Required.
    #[arg(long)]
    encap_ip: Option<IpAddr>,
    /// petreld control socket: learn local iface-ids from petreld's ports
    /// (see "Local ports" below).
    #[arg(long, value_name = "SOCKET")]
    dataplane: Option<PathBuf>,
    /// Interval between two polls of petreld's ports, in milliseconds
    /// [default: 250].
    #[arg(long, value_name = "MS")]
    dataplane_poll_ms: Option<u64>,
    /// How long the ports petreld last reported stay claimed after petreld
    /// is lost, in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    dataplane_grace_ms: Option<u64>,
    /// A local logical port (`iface-id`); repeatable. Replaces the config
    /// file's `iface-ids` when given.
    #[arg(long = "iface-id")]
    iface_ids: Vec<String>,
    /// Bridge mappings, `NETWORK:PORT[,NETWORK:PORT...]`: a localnet port
    /// whose `network_name` is NETWORK reaches its physical network through
    /// petreld's port named PORT (ovn-controller's `ovn-bridge-mappings`).
    #[arg(long, value_name = "MAPPINGS")]
    bridge_mappings: Option<String>,
    /// Do not compile logical flows or publish tables to petreld (only
    /// register the chassis and claim ports).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    no_tables: Option<bool>,
    /// Compile the logical flows without petreld (the --iface-id ports are
    /// the local ports) and publish nothing: for measuring the compiler.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    compile_only: Option<bool>,
    /// Hostname for the `Chassis` row (default: the system's).
    #[arg(long)]
    hostname: Option<String>,
    /// Keep `Chassis`/`Chassis_Private` and the port claims on exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    keep_chassis_on_exit: Option<bool>,
    /// Inactivity probe in milliseconds (0 disables), like
    /// `ovn-remote-probe-interval` [default: 5000].
    #[arg(long)]
    probe_interval_ms: Option<u64>,
    /// Only use the leader of a clustered Southbound.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    leader_only: Option<bool>,
    /// Monitor the whole Southbound, not only the datapaths reachable from
    /// local ports (ovn-controller's `ovn-monitor-all=true`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    monitor_all: Option<bool>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any
    /// free port, logged at start).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Log filter (`info`, `debug`, `petrel_control=debug`, ...) [default: info].
    #[arg(long, env = "PETREL_LOG")]
    log: Option<String>,
}

/// The config file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    remote: Option<String>,
    system_id: Option<String>,
    encap_ip: Option<IpAddr>,
    dataplane: Option<PathBuf>,
    dataplane_poll_ms: Option<u64>,
    dataplane_grace_ms: Option<u64>,
    iface_ids: Option<Vec<String>>,
    bridge_mappings: Option<String>,
    no_tables: Option<bool>,
    compile_only: Option<bool>,
    hostname: Option<String>,
    keep_chassis_on_exit: Option<bool>,
    probe_interval_ms: Option<u64>,
    leader_only: Option<bool>,
    monitor_all: Option<bool>,
    metrics_addr: Option<String>,
    log: Option<String>,
}

impl FileConfig {
    fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// The settings in effect: flags over the config file over defaults.
#[derive(Debug)]
struct Settings {
    remote: String,
    system_id: String,
    encap_ip: IpAddr,
    dataplane: Option<PathBuf>,
    dataplane_poll_ms: u64,
    dataplane_grace_ms: u64,
    iface_ids: Vec<String>,
    bridge_mappings: BTreeMap<String, String>,
    no_tables: bool,
    compile_only: bool,
    hostname: Option<String>,
    keep_chassis_on_exit: bool,
    probe_interval_ms: u64,
    leader_only: bool,
    monitor_all: bool,
    metrics_addr: Option<String>,
    log: String,
}

impl Settings {
    fn new(args: Args) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let missing = |flag: &str| anyhow::anyhow!("missing --{flag} (or `{flag}` in the config file)");
        Ok(Settings {
            remote: args.remote.or(file.remote).ok_or_else(|| missing("remote"))?,
            system_id: args.system_id.or(file.system_id).ok_or_else(|| missing("system-id"))?,
            encap_ip: args.encap_ip.or(file.encap_ip).ok_or_else(|| missing("encap-ip"))?,
            dataplane: args.dataplane.or(file.dataplane),
            dataplane_poll_ms: args.dataplane_poll_ms.or(file.dataplane_poll_ms).unwrap_or(250).max(1),
            dataplane_grace_ms: args.dataplane_grace_ms.or(file.dataplane_grace_ms).unwrap_or(10_000),
            iface_ids: if args.iface_ids.is_empty() { file.iface_ids.unwrap_or_default() } else { args.iface_ids },
            bridge_mappings: parse_bridge_mappings(args.bridge_mappings.or(file.bridge_mappings).as_deref())?,
            no_tables: args.no_tables.or(file.no_tables).unwrap_or(false),
            compile_only: args.compile_only.or(file.compile_only).unwrap_or(false),
            hostname: args.hostname.or(file.hostname),
            keep_chassis_on_exit: args.keep_chassis_on_exit.or(file.keep_chassis_on_exit).unwrap_or(false),
            probe_interval_ms: args.probe_interval_ms.or(file.probe_interval_ms).unwrap_or(5000),
            leader_only: args.leader_only.or(file.leader_only).unwrap_or(false),
            monitor_all: args.monitor_all.or(file.monitor_all).unwrap_or(false),
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            log: args.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
        })
    }
}

fn parse_bridge_mappings(s: Option<&str>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for item in s.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (net, port) = item
            .split_once(':')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--bridge-mappings: {item:?} is not NETWORK:PORT"))?;
        if m.insert(net.to_owned(), port.to_owned()).is_some() {
            anyhow::bail!("--bridge-mappings: network {net:?} is mapped twice");
        }
    }
    Ok(m)
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Settings::new(Args::parse())?;
    let filter: tracing_subscriber::filter::Targets = args.log.parse().context("--log")?;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Settings) -> anyhow::Result<()> {
    let remotes = parse_remotes(&args.remote).context("--remote")?;
    let mut acfg = AgentConfig::new(
        &args.system_id,
        &args.hostname.clone().unwrap_or_else(system_hostname),
        &args.encap_ip.to_string(),
    );
    acfg.iface_ids = args.iface_ids.iter().cloned().collect::<BTreeSet<_>>();
    acfg.monitor_all = args.monitor_all;
    // One synchronous look at petreld first, so the agent starts with its
    // ports (and does not release what a previous run left claimed).
    let watcher = args.dataplane.as_ref().map(|d| {
        let mut wcfg = WatchConfig::new(d, acfg.iface_ids.clone());
        wcfg.poll_interval = Duration::from_millis(args.dataplane_poll_ms);
        wcfg.grace = Duration::from_millis(args.dataplane_grace_ms);
        tracing::info!(
            socket = %d.display(), poll = ?wcfg.poll_interval, grace = ?wcfg.grace,
            "learning local ports from petreld"
        );
        let mut w = Watcher::new(wcfg);
        let (view_tx, view_rx) = watch::channel(None);
        let installer = (!args.no_tables).then(|| Installer::new(d.clone(), view_rx, args.bridge_mappings.clone()));
        w = w.with_view(view_tx);
        let (learn_tx, learn_rx) = tokio::sync::mpsc::unbounded_channel();
        w = w.with_learning(learn_tx);
        let client = w.probe();
        acfg.iface_ids = w.wanted();
        (w, client, installer, learn_rx)
    });
    let mut scfg = acfg.session_config(remotes);
    scfg.leader_only = args.leader_only;
    scfg.probe_interval = (args.probe_interval_ms > 0).then(|| Duration::from_millis(args.probe_interval_ms));
    tracing::info!(
        system_id = %acfg.system_id, encap_ip = %acfg.encap_ip, remote = %args.remote,
        monitor_all = acfg.monitor_all, "starting"
    );

    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let metrics = Metrics::new(&acfg.system_id);
    let _metrics_server = match &args.metrics_addr {
        Some(addr) => {
            let srv = metrics.serve(addr).with_context(|| format!("--metrics-addr {addr}"))?;
            tracing::info!(addr = %srv.local_addr(), "serving metrics at http://{}/metrics", srv.local_addr());
            Some(srv)
        }
        None => None,
    };
    let mut agent = Agent::new(acfg, Session::start(scfg));
    agent.set_metrics(metrics.clone());
    if args.compile_only && args.dataplane.is_none() && !args.no_tables {
        let mut i = Installer::compile_only();
        i.set_metrics(metrics.clone());
        agent.set_installer(i);
    }
    let watch = match watcher {
        Some((w, client, installer, learn_rx)) => {
            if let Some(mut i) = installer {
                i.set_metrics(metrics.clone());
                agent.set_installer(i);
            }
            agent.set_learning(learn_rx);
            Some(w.spawn(agent.iface_ids(), client).context("starting the petreld watcher")?)
        }
        None => None,
    };
    agent
        .run(async {
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM"),
                _ = sigint.recv() => tracing::info!("SIGINT"),
            }
        })
        .await;
    // Dropped, not joined: it may be in the middle of a request.
    drop(watch);
    if args.keep_chassis_on_exit {
        tracing::info!("exiting, chassis kept");
        return Ok(());
    }
    match agent.remove_chassis(Duration::from_secs(5)).await {
        Ok(()) => tracing::info!("chassis removed, exiting"),
        Err(e) => tracing::warn!("could not remove the chassis: {e}"),
    }
    Ok(())
}
