//! `petrel-ovn`: the OVN chassis agent of a Petrel node (the database half
//! of ovn-controller).
//!
//! It connects to the Southbound (`--remote`, ovn-remote syntax), registers
//! the chassis, claims the logical ports named by `--iface-id`, and on
//! SIGTERM/SIGINT removes its `Chassis` and `Chassis_Private` unless
//! `--keep-chassis-on-exit` is given.
//!
//! `--dataplane` names petreld's control socket. It is accepted and kept
//! but not used yet: local ports and table pushes go through it once the
//! table-runtime issue lands; until then local iface-ids come from
//! `--iface-id`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use petrel_control::chassis::{Agent, AgentConfig};
use petrel_control::ovsdb::{parse_remotes, Session, SessionConfig};
use petrel_control::sb;
use tokio::signal::unix::{signal, SignalKind};

/// OVN chassis agent for the Petrel dataplane.
#[derive(Debug, Parser)]
#[command(name = "petrel-ovn", version)]
struct Args {
    /// Southbound remotes, comma-separated (`unix:PATH`, `tcp:HOST:PORT`).
    #[arg(long, env = "OVN_REMOTE")]
    remote: String,
    /// System id: the name of this node's `Chassis` row.
    #[arg(long)]
    system_id: String,
    /// Tunnel endpoint IP (Geneve).
    #[arg(long)]
    encap_ip: std::net::IpAddr,
    /// petreld control socket (unused until the table runtime exists).
    #[arg(long)]
    dataplane: Option<PathBuf>,
    /// A local logical port (`iface-id`); repeatable.
    #[arg(long = "iface-id")]
    iface_ids: Vec<String>,
    /// Hostname for the `Chassis` row (default: the system's).
    #[arg(long)]
    hostname: Option<String>,
    /// Keep `Chassis`/`Chassis_Private` and the port claims on exit.
    #[arg(long)]
    keep_chassis_on_exit: bool,
    /// Inactivity probe in milliseconds (0 disables), like
    /// `ovn-remote-probe-interval`.
    #[arg(long, default_value_t = 5000)]
    probe_interval_ms: u64,
    /// Only use the leader of a clustered Southbound.
    #[arg(long)]
    leader_only: bool,
    /// Log filter (`info`, `debug`, `petrel_control=debug`, ...).
    #[arg(long, env = "PETREL_LOG", default_value = "info")]
    log: String,
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter: tracing_subscriber::filter::Targets = args.log.parse().context("--log")?;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let remotes = parse_remotes(&args.remote).context("--remote")?;
    let mut scfg = SessionConfig::new(remotes, sb::DATABASE);
    scfg.schema_check = Some(sb::check_schema);
    scfg.leader_only = args.leader_only;
    scfg.probe_interval = (args.probe_interval_ms > 0).then(|| Duration::from_millis(args.probe_interval_ms));
    let mut acfg = AgentConfig::new(
        &args.system_id,
        &args.hostname.clone().unwrap_or_else(system_hostname),
        &args.encap_ip.to_string(),
    );
    acfg.iface_ids = args.iface_ids.iter().cloned().collect::<BTreeSet<_>>();
    if let Some(d) = &args.dataplane {
        tracing::info!(path = %d.display(), "dataplane control socket noted (not used yet)");
    }
    tracing::info!(system_id = %acfg.system_id, encap_ip = %acfg.encap_ip, remote = %args.remote, "starting");

    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut agent = Agent::new(acfg, Session::start(scfg));
    agent
        .run(async {
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM"),
                _ = sigint.recv() => tracing::info!("SIGINT"),
            }
        })
        .await;
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
