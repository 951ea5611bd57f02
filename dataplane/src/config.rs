//! `petreld` configuration: a TOML file and command-line flags, merged and
//! validated into a [`Plan`] that the PMD threads run.
//!
//! The static forwarding modes here (cross-connect, L2 bridge with a MAC
//! table, VLAN access ports, Geneve tunnel ports) exist so a node forwards
//! before any OVN table does; they are enough to run a two-node overlay by hand.
//!
//! Flags and file keys, with their defaults, are documented on [`Cli`] and
//! [`FileConfig`] and in `petreld --help`; README.md shows examples.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use serde::Deserialize;

/// Upper bound of `--pmd-sleep-max`, µs (OVS caps `pmd-maxsleep` the same).
pub const MAX_PMD_SLEEP_US: u64 = 10_000;

/// `petreld`: Petrel's poll-mode fast path.
///
/// Values given as flags are added to (lists) or override (scalars) those of
/// the `--config` file.
#[derive(Debug, Parser, Default)]
#[command(name = "petreld", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (keys as the flags, with `_` for `-`; see README.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// DPDK EAL arguments, one string, e.g. '--in-memory -m 512 --file-prefix n1'.
    /// Without -l/-c/--lcores, petreld adds `-l <lowest CPU not used by a PMD>`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal_args: Option<String>,
    /// CPUs for the PMD threads (one thread each, pinned): e.g. `1`, `1,3`, `2-3`. Default: 1.
    #[arg(long, value_name = "LIST")]
    pub pmd_cores: Option<String>,
    /// A port: `NAME=dpdk[,vlan=TAG][,iface-id=LPORT],devargs=<DPDK devargs>`; everything
    /// after `devargs=` is the devargs (e.g. `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`).
    /// `iface-id=` names the OVN logical port this port is, for petrel-ovn to claim.
    /// A pod's port: `NAME=vhost-user,path=SOCK,mode=server|client[,queues=N][,vlan=TAG][,iface-id=LPORT]`
    /// (server: petreld creates the socket; client: the pod's app does, petreld connects and reconnects).
    /// With `vlan=TAG` the port is a VLAN trunk for one tag: frames leaving it get
    /// the tag pushed, frames arriving must carry it (it is popped; others are dropped).
    #[arg(long = "port", value_name = "SPEC")]
    pub ports: Vec<String>,
    /// Cross-connect two ports, both directions: `A:B`.
    #[arg(long, value_name = "A:B")]
    pub xconnect: Vec<String>,
    /// An L2 bridge with a learning MAC table: `NAME=PORT,PORT[,PORT...]`.
    #[arg(long, value_name = "NAME=PORTS")]
    pub bridge: Vec<String>,
    /// A static MAC table entry: `BRIDGE:MAC=PORT`.
    #[arg(long, value_name = "BRIDGE:MAC=PORT")]
    pub mac: Vec<String>,
    /// A Geneve tunnel port: `NAME=uplink=PORT,local=IP,remote=IP,vni=N,remote-mac=MAC`
    /// `[,ingress-key=K][,egress-key=K][,ttl=N]`. Frames sent to NAME are encapsulated
    /// (OVN option carrying the keys) and leave on the uplink; Geneve frames arriving
    /// on the uplink from `remote` with that VNI are decapsulated and enter as from NAME.
    #[arg(long, value_name = "SPEC")]
    pub geneve: Vec<String>,
    /// The node's tunnel endpoint on a DPDK port: `PORT=IP/PREFIX[,gw=IP][,mtu=N]`.
    /// Geneve to OVN's remote chassis leaves there (next hop resolved by ARP);
    /// ARP requests and pings for IP are answered.
    #[arg(long, value_name = "SPEC")]
    pub uplink: Vec<String>,
    /// A static neighbour (overrides ARP): `IP=MAC`.
    #[arg(long, value_name = "IP=MAC")]
    pub neighbor: Vec<String>,
    /// Mbufs in the packet pool (default 16383).
    #[arg(long, value_name = "N")]
    pub mbufs: Option<u32>,
    /// Flush a port's tx batch once its oldest packet is this old, in µs (default 0:
    /// at the end of every poll iteration, as OVS does by default).
    #[arg(long, value_name = "US")]
    pub tx_drain_us: Option<u64>,
    /// Let a lightly loaded PMD sleep, up to US µs per poll (0..=10000; default 0:
    /// never). As OVS's `other_config:pmd-maxsleep`: after a poll in which no rx
    /// queue gave at least half a burst (16), the PMD sleeps 1 µs longer than
    /// after the previous one, up to US; half a burst on any queue resets it. Saves
    /// power, and lets PMDs that share a CPU hand it over when they run dry.
    #[arg(long, value_name = "US")]
    pub pmd_sleep_max: Option<u64>,
    /// At most one interrupt (call eventfd write) per vhost-user ring every US µs
    /// (1..=1000000; default 20). One held back is sent once the interval is
    /// over, as soon as the PMD has nothing queued for the port.
    #[arg(long, value_name = "US")]
    pub vhost_call_interval: Option<u64>,
    /// Print per-port rates and counters every SECS seconds (default: only at exit).
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<f64>,
    /// Exit once packets have arrived and then none for MS milliseconds (for replaying captures).
    #[arg(long, value_name = "MS")]
    pub exit_when_idle: Option<u64>,
    /// Unix socket for petrelctl and petrel-ovn (default /run/petrel/petreld.sock;
    /// `none` disables it). Mode 0660, owner root.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,
    /// Group that owns the control socket (name or gid), so non-root tools in it can connect.
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// Where ports added at runtime (`petrelctl add-port`) are remembered, so a
    /// restarted petreld adds them back (default: `<control socket>.ports.json`;
    /// `none`: forget them).
    #[arg(long, value_name = "FILE")]
    pub ports_file: Option<String>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// As `--eal-args`.
    pub eal_args: Option<String>,
    /// As `--pmd-cores`.
    pub pmd_cores: Option<String>,
    /// Ports.
    #[serde(default)]
    pub port: Vec<FilePort>,
    /// As `--xconnect`, each `A:B`.
    #[serde(default)]
    pub xconnect: Vec<String>,
    /// Bridges.
    #[serde(default)]
    pub bridge: Vec<FileBridge>,
    /// Geneve tunnel ports.
    #[serde(default)]
    pub geneve: Vec<FileGeneve>,
    /// As `--uplink`, each `PORT=IP/PREFIX[,gw=IP][,mtu=N]`.
    #[serde(default)]
    pub uplink: Vec<String>,
    /// As `--neighbor`, each `IP=MAC`.
    #[serde(default)]
    pub neighbor: Vec<String>,
    /// As `--mbufs`.
    pub mbufs: Option<u32>,
    /// As `--tx-drain-us`.
    pub tx_drain_us: Option<u64>,
    /// As `--pmd-sleep-max`.
    pub pmd_sleep_max: Option<u64>,
    /// As `--vhost-call-interval`.
    pub vhost_call_interval: Option<u64>,
    /// As `--stats-interval`.
    pub stats_interval: Option<f64>,
    /// As `--control-socket`.
    pub control_socket: Option<String>,
    /// As `--control-group`.
    pub control_group: Option<String>,
}

/// `[[port]]` in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePort {
    /// Port name.
    pub name: String,
    /// Port type: `dpdk` or `vhost-user`.
    #[serde(rename = "type", default = "default_port_type")]
    pub kind: String,
    /// DPDK devargs (`dpdk` ports).
    #[serde(default)]
    pub devargs: String,
    /// Socket path (`vhost-user` ports).
    pub path: Option<PathBuf>,
    /// `server` (petreld creates the socket) or `client` (`vhost-user` ports; default server).
    pub mode: Option<String>,
    /// Queue pairs (`vhost-user` ports; default 1).
    pub queues: Option<u16>,
    /// VLAN trunk tag, as `vlan=` in `--port`.
    pub vlan: Option<u16>,
    /// The OVN logical port this port is (`external_ids:iface-id` in OVS terms),
    /// as `iface-id=` in `--port`: petrel-ovn claims it for this chassis.
    #[serde(rename = "iface-id", alias = "iface_id")]
    pub iface_id: Option<String>,
}

fn default_port_type() -> String {
    "dpdk".to_owned()
}

/// `[[bridge]]` in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBridge {
    /// Bridge name.
    pub name: String,
    /// Member ports.
    pub ports: Vec<String>,
    /// Static MAC entries: MAC → port.
    #[serde(default)]
    pub macs: HashMap<String, String>,
}

/// `[[geneve]]` in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileGeneve {
    /// Tunnel port name.
    pub name: String,
    /// The dpdk port it leaves on.
    pub uplink: String,
    /// This node's tunnel IP.
    pub local: IpAddr,
    /// The remote node's tunnel IP.
    pub remote: IpAddr,
    /// 24-bit VNI.
    pub vni: u32,
    /// Next-hop MAC for the remote (no ARP until the overlay issue).
    pub remote_mac: String,
    /// Logical ingress port key sent in the OVN option (15 bits).
    #[serde(default)]
    pub ingress_key: u16,
    /// Logical egress port key sent in the OVN option (16 bits).
    #[serde(default)]
    pub egress_key: u16,
    /// Outer TTL / hop limit.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
}

fn default_ttl() -> u8 {
    64
}

/// What a port does with what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Nothing: received frames are dropped (`no_output`), unless the port is a
    /// Geneve uplink and they are tunnel traffic for us.
    None,
    /// Send everything to this port index.
    Xconnect(usize),
    /// Switch within this bridge index.
    Bridge(usize),
}

/// What kind of port.
#[derive(Debug, Clone)]
pub enum PortKind {
    /// A DPDK ethdev.
    Dpdk {
        /// DPDK devargs.
        devargs: String,
    },
    /// A Geneve tunnel over a DPDK uplink.
    Geneve(GeneveSpec),
    /// A vhost-user socket (a pod).
    VhostUser {
        /// Socket path.
        path: PathBuf,
        /// Whether petreld creates the socket (server) or connects to it (client).
        client: bool,
        /// Queue pairs.
        queues: u16,
    },
}

/// A Geneve tunnel port, resolved.
#[derive(Debug, Clone)]
pub struct GeneveSpec {
    /// Index of the uplink port.
    pub uplink: usize,
    /// Local tunnel IP.
    pub local: IpAddr,
    /// Remote tunnel IP.
    pub remote: IpAddr,
    /// VNI.
    pub vni: u32,
    /// Next-hop MAC.
    pub remote_mac: [u8; 6],
    /// OVN option ingress key.
    pub ingress_key: u16,
    /// OVN option egress key.
    pub egress_key: u16,
    /// Outer TTL.
    pub ttl: u8,
}

/// One port of the plan.
#[derive(Debug, Clone)]
pub struct PlanPort {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: PortKind,
    /// VLAN trunk tag.
    pub vlan: Option<u16>,
    /// OVN logical port name (`iface-id`), if declared.
    pub iface_id: Option<String>,
    /// Role.
    pub role: Role,
}

/// One bridge of the plan.
#[derive(Debug, Clone)]
pub struct PlanBridge {
    /// Name.
    pub name: String,
    /// Member port indexes.
    pub ports: Vec<usize>,
    /// Static MAC entries.
    pub static_macs: Vec<([u8; 6], usize)>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Plan {
    /// EAL arguments, split, with `-l` added if missing.
    pub eal_args: Vec<String>,
    /// PMD CPUs.
    pub pmd_cores: Vec<usize>,
    /// Ports: DPDK and vhost-user ports in `--port` order, then tunnel ports.
    pub ports: Vec<PlanPort>,
    /// Bridges.
    pub bridges: Vec<PlanBridge>,
    /// Pool size.
    pub mbufs: u32,
    /// Tx drain interval in µs.
    pub tx_drain_us: u64,
    /// Longest sleep of a lightly loaded PMD per poll, µs (0: never sleeps).
    pub pmd_sleep_max_us: u64,
    /// Shortest time between two interrupts of one vhost-user ring, µs.
    pub vhost_call_interval_us: u64,
    /// Stats print interval.
    pub stats_interval: Option<f64>,
    /// Idle exit.
    pub exit_when_idle_ms: Option<u64>,
    /// Control socket path; `None` when disabled.
    pub control_socket: Option<PathBuf>,
    /// Control socket group.
    pub control_group: Option<String>,
    /// Where runtime ports are remembered.
    pub ports_file: Option<PathBuf>,
    /// Tunnel endpoints: (port index, spec).
    pub uplinks: Vec<(usize, crate::underlay::UplinkSpec)>,
    /// Static neighbours.
    pub neighbors: Vec<(std::net::IpAddr, [u8; 6])>,
}

impl Plan {
    /// Index of a port by name.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// Number of DPDK ports (they come first in `ports`).
    pub fn n_dpdk(&self) -> usize {
        self.ports.iter().filter(|p| matches!(p.kind, PortKind::Dpdk { .. })).count()
    }
}

/// Parses a CPU list: `1`, `1,3`, `0-2,5`.
///
/// # Errors
/// On syntax errors or an empty list.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
            if a > b {
                bail!("bad CPU range {part:?}");
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().with_context(|| format!("bad CPU {part:?}"))?);
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        bail!("empty CPU list {s:?}");
    }
    Ok(out)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
///
/// # Errors
/// If it is not six hex bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut n = 0;
    for (i, part) in s.split(':').enumerate() {
        if i >= 6 || part.len() != 2 {
            bail!("bad MAC address {s:?}");
        }
        mac[i] = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC address {s:?}"))?;
        n += 1;
    }
    if n != 6 {
        bail!("bad MAC address {s:?}");
    }
    Ok(mac)
}

/// Parses a `--port` spec into a file-style port.
///
/// # Errors
/// If it is not `NAME=dpdk[,vlan=TAG],devargs=...`.
pub fn parse_port_spec(spec: &str) -> Result<FilePort> {
    let (name, rest) = spec.split_once('=').ok_or_else(|| anyhow!("--port {spec:?}: expected NAME=TYPE,..."))?;
    let (kind, mut rest) = rest.split_once(',').unwrap_or((rest, ""));
    if kind == "vhost-user" {
        return parse_vhost_spec(spec, name, rest);
    }
    if kind != "dpdk" {
        bail!("--port {spec:?}: unknown port type {kind:?} (supported: dpdk, vhost-user)");
    }
    let mut vlan = None;
    let mut iface_id = None;
    let mut devargs = None;
    while !rest.is_empty() {
        if let Some(d) = rest.strip_prefix("devargs=") {
            devargs = Some(d.to_owned());
            break;
        }
        let (kv, tail) = rest.split_once(',').unwrap_or((rest, ""));
        match kv.split_once('=') {
            Some(("vlan", v)) => vlan = Some(v.parse().with_context(|| format!("--port {spec:?}: bad vlan {v:?}"))?),
            Some(("iface-id", v)) if !v.is_empty() => iface_id = Some(v.to_owned()),
            _ => bail!("--port {spec:?}: unknown option {kv:?} (known: vlan=, iface-id=, devargs= last)"),
        }
        rest = tail;
    }
    let devargs =
        devargs.filter(|d| !d.is_empty()).ok_or_else(|| anyhow!("--port {spec:?}: missing devargs=<DPDK devargs>"))?;
    Ok(FilePort {
        name: name.to_owned(),
        kind: kind.to_owned(),
        devargs,
        vlan,
        iface_id,
        path: None,
        mode: None,
        queues: None,
    })
}

/// `NAME=vhost-user,path=SOCK,mode=server|client[,queues=N][,vlan=TAG][,iface-id=LPORT]`.
fn parse_vhost_spec(spec: &str, name: &str, rest: &str) -> Result<FilePort> {
    let mut p = FilePort {
        name: name.to_owned(),
        kind: "vhost-user".to_owned(),
        devargs: String::new(),
        vlan: None,
        iface_id: None,
        path: None,
        mode: None,
        queues: None,
    };
    for kv in rest.split(',').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("path", v)) if !v.is_empty() => p.path = Some(PathBuf::from(v)),
            Some(("mode", v)) => p.mode = Some(v.to_owned()),
            Some(("queues", v)) => {
                p.queues = Some(v.parse().with_context(|| format!("--port {spec:?}: bad queues {v:?}"))?);
            }
            Some(("vlan", v)) => p.vlan = Some(v.parse().with_context(|| format!("--port {spec:?}: bad vlan {v:?}"))?),
            Some(("iface-id", v)) if !v.is_empty() => p.iface_id = Some(v.to_owned()),
            _ => bail!("--port {spec:?}: unknown option {kv:?} (known: path=, mode=, queues=, vlan=, iface-id=)"),
        }
    }
    Ok(p)
}

fn parse_geneve_spec(spec: &str) -> Result<FileGeneve> {
    let (name, rest) = spec.split_once('=').ok_or_else(|| anyhow!("--geneve {spec:?}: expected NAME=key=value,..."))?;
    let mut kv = HashMap::new();
    for item in rest.split(',') {
        let (k, v) = item.split_once('=').ok_or_else(|| anyhow!("--geneve {spec:?}: {item:?} is not key=value"))?;
        kv.insert(k, v);
    }
    let get = |k: &str| kv.get(k).copied().ok_or_else(|| anyhow!("--geneve {spec:?}: missing {k}="));
    let g = FileGeneve {
        name: name.to_owned(),
        uplink: get("uplink")?.to_owned(),
        local: get("local")?.parse().with_context(|| format!("--geneve {spec:?}: bad local IP"))?,
        remote: get("remote")?.parse().with_context(|| format!("--geneve {spec:?}: bad remote IP"))?,
        vni: get("vni")?.parse().with_context(|| format!("--geneve {spec:?}: bad vni"))?,
        remote_mac: get("remote-mac")?.to_owned(),
        ingress_key: kv.get("ingress-key").map_or(Ok(0), |v| v.parse()).context("bad ingress-key")?,
        egress_key: kv.get("egress-key").map_or(Ok(0), |v| v.parse()).context("bad egress-key")?,
        ttl: kv.get("ttl").map_or(Ok(64), |v| v.parse()).context("bad ttl")?,
    };
    for k in kv.keys() {
        if !["uplink", "local", "remote", "vni", "remote-mac", "ingress-key", "egress-key", "ttl"].contains(k) {
            bail!("--geneve {spec:?}: unknown key {k:?}");
        }
    }
    Ok(g)
}

impl Cli {
    /// Reads the config file (if any), merges the flags and validates.
    ///
    /// # Errors
    /// Any inconsistency, with the flag or key that causes it.
    pub fn into_plan(self) -> Result<Plan> {
        let mut file = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                toml::from_str::<FileConfig>(&text).with_context(|| format!("parsing {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        for s in &self.ports {
            file.port.push(parse_port_spec(s)?);
        }
        file.xconnect.extend(self.xconnect.iter().cloned());
        for s in &self.bridge {
            let (name, ports) = s.split_once('=').ok_or_else(|| anyhow!("--bridge {s:?}: expected NAME=PORT,PORT"))?;
            file.bridge.push(FileBridge {
                name: name.to_owned(),
                ports: ports.split(',').map(str::to_owned).collect(),
                macs: HashMap::new(),
            });
        }
        for s in &self.mac {
            let (br, rest) = s.split_once(':').ok_or_else(|| anyhow!("--mac {s:?}: expected BRIDGE:MAC=PORT"))?;
            let (mac, port) = rest.rsplit_once('=').ok_or_else(|| anyhow!("--mac {s:?}: expected BRIDGE:MAC=PORT"))?;
            let b = file
                .bridge
                .iter_mut()
                .find(|b| b.name == br)
                .ok_or_else(|| anyhow!("--mac {s:?}: no bridge {br:?}"))?;
            b.macs.insert(mac.to_owned(), port.to_owned());
        }
        for s in &self.geneve {
            file.geneve.push(parse_geneve_spec(s)?);
        }
        let control_socket = match self.control_socket.or(file.control_socket.take()) {
            Some(s) if s == "none" => None,
            Some(s) => Some(PathBuf::from(s)),
            None => Some(PathBuf::from(crate::ctl::server::DEFAULT_SOCKET)),
        };
        let control_group = self.control_group.or(file.control_group.take());
        let mut uplinks = std::mem::take(&mut file.uplink);
        uplinks.extend(self.uplink);
        let mut neighbors = std::mem::take(&mut file.neighbor);
        neighbors.extend(self.neighbor);
        let eal = self.eal_args.or(file.eal_args.take()).unwrap_or_default();
        let file_sleep = file.pmd_sleep_max;
        let file_call = file.vhost_call_interval;
        let pmd_cores = parse_cpu_list(&self.pmd_cores.or(file.pmd_cores.take()).unwrap_or_else(|| "1".to_owned()))?;
        let mut plan =
            build_plan(file, &eal, pmd_cores, self.mbufs, self.tx_drain_us, self.stats_interval, self.exit_when_idle)?;
        underlay(&mut plan, &uplinks, &neighbors)?;
        plan.pmd_sleep_max_us = self.pmd_sleep_max.or(file_sleep).unwrap_or(0);
        if plan.pmd_sleep_max_us > MAX_PMD_SLEEP_US {
            bail!("--pmd-sleep-max {} µs: at most {MAX_PMD_SLEEP_US}", plan.pmd_sleep_max_us);
        }
        plan.vhost_call_interval_us = self.vhost_call_interval.or(file_call).unwrap_or(20);
        if !(1..=1_000_000).contains(&plan.vhost_call_interval_us) {
            bail!("--vhost-call-interval {} µs: must be 1..=1000000", plan.vhost_call_interval_us);
        }
        if plan.ports.is_empty() && control_socket.is_none() {
            bail!(
                "no ports: give at least one --port, or a control socket to add them at runtime (petrelctl add-port)"
            );
        }
        plan.ports_file = match self.ports_file.as_deref() {
            Some("none") => None,
            Some(f) => Some(PathBuf::from(f)),
            None => control_socket.as_ref().map(|s| {
                let mut p = s.clone().into_os_string();
                p.push(".ports.json");
                PathBuf::from(p)
            }),
        };
        plan.control_socket = control_socket;
        plan.control_group = control_group;
        Ok(plan)
    }
}

/// Validates one port of the file (or a `--port` spec, or
/// `petrelctl add-port`) into a plan port without a role.
///
/// # Errors
/// An unknown type, missing or conflicting options.
pub fn plan_port(p: &FilePort) -> Result<PlanPort> {
    if p.name.is_empty() || p.name.len() > 64 || p.name.chars().any(|c| c.is_whitespace() || c == ',' || c == '=') {
        bail!("port {:?}: a name is 1 to 64 characters without spaces, ',' or '='", p.name);
    }
    let kind = match p.kind.as_str() {
        "dpdk" => {
            if p.devargs.is_empty() || p.path.is_some() || p.mode.is_some() || p.queues.is_some() {
                bail!("port {:?}: a dpdk port takes devargs (and not path, mode, queues)", p.name);
            }
            PortKind::Dpdk { devargs: p.devargs.clone() }
        }
        "vhost-user" => {
            let path = p.path.clone().ok_or_else(|| anyhow!("port {:?}: vhost-user needs path=", p.name))?;
            let client = match p.mode.as_deref() {
                None | Some("server") => false,
                Some("client") => true,
                Some(m) => bail!("port {:?}: mode must be server or client, not {m:?}", p.name),
            };
            let queues = p.queues.unwrap_or(1);
            if !(1..=128).contains(&queues) || !p.devargs.is_empty() {
                bail!("port {:?}: vhost-user takes queues=1..128 (and no devargs)", p.name);
            }
            PortKind::VhostUser { path, client, queues }
        }
        k => bail!("port {:?}: unknown type {k:?} (supported: dpdk, vhost-user)", p.name),
    };
    if p.vlan.is_some_and(|v| v == 0 || v > 4094) {
        bail!("port {:?}: vlan must be 1..4094", p.name);
    }
    Ok(PlanPort { name: p.name.clone(), kind, vlan: p.vlan, iface_id: p.iface_id.clone(), role: Role::None })
}

fn build_plan(
    file: FileConfig,
    eal: &str,
    pmd_cores: Vec<usize>,
    mbufs: Option<u32>,
    tx_drain_us: Option<u64>,
    stats_interval: Option<f64>,
    exit_when_idle_ms: Option<u64>,
) -> Result<Plan> {
    let mut eal_args: Vec<String> = eal.split_whitespace().map(str::to_owned).collect();
    if !eal_args.iter().any(|a| a == "-l" || a == "-c" || a.starts_with("--lcores") || a.starts_with("-l")) {
        let n_cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let main = (0..n_cpus.max(1)).find(|c| !pmd_cores.contains(c)).unwrap_or(0);
        eal_args.push("-l".to_owned());
        eal_args.push(main.to_string());
    }
    let mut ports: Vec<PlanPort> = Vec::new();
    for p in &file.port {
        if ports.iter().any(|q| q.name == p.name) {
            bail!("port {:?} is given twice", p.name);
        }
        ports.push(plan_port(p)?);
    }
    let n_dpdk = ports.len();
    for g in &file.geneve {
        let uplink = ports[..n_dpdk]
            .iter()
            .position(|p| p.name == g.uplink && matches!(p.kind, PortKind::Dpdk { .. }))
            .ok_or_else(|| anyhow!("geneve {:?}: uplink {:?} is not a dpdk port", g.name, g.uplink))?;
        if g.vni >= 1 << 24 {
            bail!("geneve {:?}: vni {} does not fit 24 bits", g.name, g.vni);
        }
        if g.ingress_key > 0x7fff {
            bail!("geneve {:?}: ingress-key {} does not fit 15 bits", g.name, g.ingress_key);
        }
        if g.local.is_ipv4() != g.remote.is_ipv4() {
            bail!("geneve {:?}: local and remote must be the same address family", g.name);
        }
        ports.push(PlanPort {
            name: g.name.clone(),
            kind: PortKind::Geneve(GeneveSpec {
                uplink,
                local: g.local,
                remote: g.remote,
                vni: g.vni,
                remote_mac: parse_mac(&g.remote_mac)?,
                ingress_key: g.ingress_key,
                egress_key: g.egress_key,
                ttl: g.ttl,
            }),
            vlan: None,
            iface_id: None,
            role: Role::None,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for p in &ports {
        if p.name.is_empty() || !seen.insert(p.name.clone()) {
            bail!("port name {:?} is empty or used twice", p.name);
        }
    }
    // Two tunnels on one uplink must differ in (remote, vni), or decap is ambiguous.
    let mut tun_keys = std::collections::HashSet::new();
    for p in &ports {
        if let PortKind::Geneve(g) = &p.kind {
            if !tun_keys.insert((g.uplink, g.remote, g.vni)) {
                bail!("geneve {:?}: another tunnel on the same uplink has the same remote and vni", p.name);
            }
        }
    }
    let index = |name: &str, what: &str| -> Result<usize> {
        ports.iter().position(|p| p.name == name).ok_or_else(|| anyhow!("{what}: no port {name:?}"))
    };
    let mut roles = vec![Role::None; ports.len()];
    let set_role = |i: usize, r: Role, what: &str, roles: &mut Vec<Role>| -> Result<()> {
        if roles[i] != Role::None {
            bail!("{what}: port {:?} already has a role (xconnect or bridge)", ports[i].name);
        }
        roles[i] = r;
        Ok(())
    };
    for x in &file.xconnect {
        let (a, b) = x.split_once(':').ok_or_else(|| anyhow!("xconnect {x:?}: expected A:B"))?;
        let (ia, ib) = (index(a, &format!("xconnect {x:?}"))?, index(b, &format!("xconnect {x:?}"))?);
        if ia == ib {
            bail!("xconnect {x:?}: a port cannot be cross-connected to itself");
        }
        set_role(ia, Role::Xconnect(ib), &format!("xconnect {x:?}"), &mut roles)?;
        set_role(ib, Role::Xconnect(ia), &format!("xconnect {x:?}"), &mut roles)?;
    }
    let mut bridges = Vec::new();
    for (bi, b) in file.bridge.iter().enumerate() {
        let what = format!("bridge {:?}", b.name);
        let mut members = Vec::new();
        for p in &b.ports {
            let i = index(p, &what)?;
            set_role(i, Role::Bridge(bi), &what, &mut roles)?;
            members.push(i);
        }
        if members.len() < 2 {
            bail!("{what}: needs at least two ports");
        }
        let mut static_macs = Vec::new();
        for (mac, port) in &b.macs {
            let i = index(port, &what)?;
            if !members.contains(&i) {
                bail!("{what}: static MAC {mac} points to {port:?}, which is not a member");
            }
            static_macs.push((parse_mac(mac)?, i));
        }
        bridges.push(PlanBridge { name: b.name.clone(), ports: members, static_macs });
    }
    for (p, r) in ports.iter_mut().zip(roles) {
        p.role = r;
    }
    if let Some(s) = stats_interval.or(file.stats_interval) {
        if !(s > 0.0 && s.is_finite()) {
            bail!("stats interval must be a positive number of seconds");
        }
    }
    Ok(Plan {
        eal_args,
        pmd_cores,
        ports,
        bridges,
        mbufs: mbufs.or(file.mbufs).unwrap_or(16383),
        tx_drain_us: tx_drain_us.or(file.tx_drain_us).unwrap_or(0),
        pmd_sleep_max_us: 0,
        vhost_call_interval_us: 20,
        stats_interval: stats_interval.or(file.stats_interval),
        exit_when_idle_ms,
        control_socket: None,
        control_group: None,
        ports_file: None,
        uplinks: Vec::new(),
        neighbors: Vec::new(),
    })
}

/// Resolves `--uplink` and `--neighbor` against the plan's ports.
fn underlay(plan: &mut Plan, uplinks: &[String], neighbors: &[String]) -> Result<()> {
    for u in uplinks {
        let spec = crate::underlay::parse_uplink(u).map_err(|e| anyhow!(e))?;
        let i = plan
            .ports
            .iter()
            .position(|p| p.name == spec.port && matches!(p.kind, PortKind::Dpdk { .. }))
            .ok_or_else(|| anyhow!("--uplink {u:?}: {:?} is not a dpdk port", spec.port))?;
        if plan.ports[i].role != Role::None {
            bail!("--uplink {u:?}: port {:?} is cross-connected or bridged", spec.port);
        }
        if plan.uplinks.iter().any(|(j, s)| *j == i || s.ip == spec.ip) {
            bail!("--uplink {u:?}: one tunnel IP per uplink, each IP once");
        }
        for p in &plan.ports {
            if let PortKind::Geneve(g) = &p.kind {
                if g.uplink == i && g.local == spec.ip {
                    bail!("--uplink {u:?}: static tunnel {:?} uses the same local IP", p.name);
                }
            }
        }
        plan.uplinks.push((i, spec));
    }
    for n in neighbors {
        plan.neighbors.push(crate::underlay::parse_neighbor(n).map_err(|e| anyhow!(e))?);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Plan> {
        let mut v = vec!["petreld"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)?.into_plan()
    }

    #[test]
    fn port_spec_keeps_everything_after_devargs() {
        let p = parse_port_spec("a=dpdk,vlan=7,iface-id=pod1.default,devargs=net_pcap0,rx_pcap=x.pcap,tx_pcap=y.pcap")
            .unwrap();
        assert_eq!(p.name, "a");
        assert_eq!(p.vlan, Some(7));
        assert_eq!(p.iface_id.as_deref(), Some("pod1.default"));
        assert_eq!(p.devargs, "net_pcap0,rx_pcap=x.pcap,tx_pcap=y.pcap");
        assert!(parse_port_spec("a=vhost,devargs=x").is_err());
        assert!(parse_port_spec("a=dpdk,foo=1,devargs=x").is_err());
        assert!(parse_port_spec("a=dpdk").is_err());
    }

    #[test]
    fn xconnect_and_roles() {
        let p = cli(&["--port", "a=dpdk,devargs=net_null0", "--port", "b=dpdk,devargs=net_null1", "--xconnect", "a:b"])
            .unwrap();
        assert_eq!(p.ports[0].role, Role::Xconnect(1));
        assert_eq!(p.ports[1].role, Role::Xconnect(0));
        assert!(p.eal_args.contains(&"-l".to_owned()));
        let e = cli(&["--port", "a=dpdk,devargs=n0", "--xconnect", "a:a"]).unwrap_err();
        assert!(e.to_string().contains("itself"), "{e}");
        let e = cli(&["--port", "a=dpdk,devargs=n0", "--xconnect", "a:zz"]).unwrap_err();
        assert!(e.to_string().contains("no port \"zz\""), "{e}");
        let e = cli(&[
            "--port",
            "a=dpdk,devargs=n0",
            "--port",
            "b=dpdk,devargs=n1",
            "--port",
            "c=dpdk,devargs=n2",
            "--xconnect",
            "a:b",
            "--bridge",
            "br=a,c",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("already has a role"), "{e}");
    }

    #[test]
    fn geneve_spec() {
        let p = cli(&[
            "--port",
            "up=dpdk,devargs=n0",
            "--port",
            "pod=dpdk,devargs=n1",
            "--geneve",
            "t=uplink=up,local=10.0.0.1,remote=10.0.0.2,vni=5,remote-mac=02:00:00:00:00:02,ingress-key=3,egress-key=4",
            "--xconnect",
            "pod:t",
        ])
        .unwrap();
        let PortKind::Geneve(g) = &p.ports[2].kind else { panic!("not geneve") };
        assert_eq!((g.uplink, g.vni, g.ingress_key, g.egress_key, g.ttl), (0, 5, 3, 4, 64));
        assert_eq!(g.remote_mac, [2, 0, 0, 0, 0, 2]);
        let e = cli(&[
            "--port",
            "up=dpdk,devargs=n0",
            "--geneve",
            "t=uplink=up,local=10.0.0.1,remote=::1,vni=5,remote-mac=02:00:00:00:00:02",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("family"), "{e}");
        let e = cli(&[
            "--port",
            "up=dpdk,devargs=n0",
            "--geneve",
            "t=uplink=up,local=1.1.1.1,remote=2.2.2.2,vni=16777216,remote-mac=02:00:00:00:00:02",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("24 bits"), "{e}");
    }

    #[test]
    fn toml_file_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            r#"
eal_args = "--in-memory -l 0"
pmd_cores = "1"
[[port]]
name = "a"
devargs = "net_null0"
vlan = 100
[[port]]
name = "b"
devargs = "net_null1"
[[bridge]]
name = "br0"
ports = ["a", "b"]
macs = { "02:00:00:00:00:01" = "a" }
"#,
        )
        .unwrap();
        let p = cli(&["--config", f.to_str().unwrap(), "--pmd-cores", "1-2"]).unwrap();
        assert_eq!(p.pmd_cores, vec![1, 2]);
        assert_eq!(p.eal_args, vec!["--in-memory", "-l", "0"]);
        assert_eq!(p.ports[0].vlan, Some(100));
        assert_eq!(p.bridges[0].static_macs, vec![([2, 0, 0, 0, 0, 1], 0)]);
        std::fs::write(&f, "bogus_key = 1\n").unwrap();
        assert!(cli(&["--config", f.to_str().unwrap()]).is_err());
    }

    #[test]
    fn cpu_lists_and_macs() {
        assert_eq!(parse_cpu_list("0-2,5,1").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:0g").is_err());
        assert_eq!(parse_mac("ff:ff:ff:ff:ff:ff").unwrap(), [0xff; 6]);
    }
}
