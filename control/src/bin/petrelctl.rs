//! `petrelctl`: look at a running `petreld` through its control socket.
//!
//! ```text
//! petrelctl [--socket PATH] [--json] show | pmd-stats | dump-tables [DATAPATH] | drops
//! petrelctl [--socket PATH] [--json] trace PORT 'MICROFLOW'
//! petrelctl [--socket PATH] [--json] log-level [FILTER]
//! ```
//!
//! The socket defaults to `$PETREL_SOCKET`, else `/run/petrel/petreld.sock`.
//! Exit status: 0 success, 1 petreld answered with an error (or the reply
//! made no sense), 2 petreld could not be reached (the message names the
//! socket and says whether petreld seems to be running).
//!
//! Links `petrel-dataplane` without DPDK: the protocol, client and text
//! rendering all live in its `ctl` module, shared with `petreld`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use petrel_control::features_cli;
use petrel_dataplane::ctl::proto::SnapshotMsg;
use petrel_dataplane::ctl::{render, Client, ClientError, DEFAULT_SOCKET};
use serde::Serialize;

const TRACE_HELP: &str = "\
Runs a described packet through petreld's current tables without sending it, and
prints each stage, rule and action it hits (like ofproto/trace), then where its
copies go.

PORT is a petreld port name (as `petrelctl show` lists them) or index.

MICROFLOW uses ovn-trace's syntax: `field == value` terms joined by `&&`, and bare
protocol names. Fields: eth.src eth.dst eth.type vlan.vid vlan.tci ip4.src ip4.dst
ip6.src ip6.dst ip6.label ip.ttl ip.proto ip.dscp ip.ecn tcp.src tcp.dst tcp.flags
udp.src udp.dst sctp.src sctp.dst icmp4.type icmp4.code icmp6.type icmp6.code
nd.target nd.sll nd.tll arp.op arp.sha arp.tha arp.spa arp.tpa, and inport ==
\"NAME\" (must be the logical port PORT is bound to). Protocols: eth ip ip4 ip6 tcp
udp sctp icmp icmp4 icmp6 arp vlan nd nd_ns nd_na nd_rs nd_ra.

Fields left out are zero, as in ovn-trace (give ip.ttl for routed traffic);
prerequisites are implied (udp.dst sets IPv4 and ip.proto 17 unless an ip6 field is
given; arp.* sets eth.type 0x0806).

Example:
  petrelctl trace vhost0 'eth.src == 02:00:00:00:00:01 && eth.dst == 02:00:00:00:00:02 &&
      ip4.src == 10.0.0.1 && ip4.dst == 10.0.0.2 && ip.ttl == 64 && udp.dst == 53'";

/// See and steer a running petreld through its control socket.
#[derive(Debug, Parser)]
#[command(
    name = "petrelctl",
    version,
    after_help = "Exit status: 0 ok, 1 petreld returned an error, 2 cannot reach petreld."
)]
struct Args {
    /// petreld's control socket.
    #[arg(long, env = "PETREL_SOCKET", default_value = DEFAULT_SOCKET, global = true, value_name = "PATH")]
    socket: PathBuf,
    /// Print the reply as JSON (the same data, machine-readable).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ports, their state, logical binding and counters.
    Show,
    /// Per-PMD busy/idle cycles, packets per burst and cache hit rates.
    PmdStats,
    /// The tables, readable, per datapath and stage.
    DumpTables {
        /// Datapath name or tunnel key (all datapaths if omitted).
        datapath: Option<String>,
    },
    /// Drop counters by reason (non-zero ones; --json lists all).
    Drops,
    /// What petrel-ovn could not compile, per datapath: logical flows
    /// (UUID, stage, what is missing) and ports whose packets are dropped
    /// as `unsupported`.
    Refusals {
        /// Only this datapath (name or tunnel key).
        datapath: Option<String>,
    },
    /// Trace a described packet through the current tables.
    #[command(long_about = TRACE_HELP)]
    Trace {
        /// petreld port the packet arrives on (name or index).
        port: String,
        /// The packet, in ovn-trace microflow syntax (see --help).
        microflow: String,
    },
    /// Replace petreld's tables with a snapshot from a JSON file (the
    /// control protocol's snapshot form; `-` reads standard input). For
    /// debugging and benchmarks without petrel-ovn; petrel-ovn's next full
    /// sync replaces it.
    Publish {
        /// The snapshot file.
        file: PathBuf,
    },
    /// Add a port to the running petreld, as its `--port` flag would:
    /// `NAME=vhost-user,path=SOCK,mode=server|client[,queues=N][,vlan=TAG][,iface-id=LPORT]`
    /// or `NAME=dpdk[,vlan=TAG][,iface-id=LPORT],devargs=...`. The PMDs
    /// start polling it without stopping other ports; with `iface-id=`
    /// petrel-ovn claims the logical port.
    #[command(
        name = "add-port",
        after_help = "Example:\n  petrelctl add-port pod1=vhost-user,path=/run/petrel/pod1.sock,mode=server,iface-id=pod1.default"
    )]
    AddPort {
        /// The port spec (`NAME=TYPE,...`), or its name followed by the rest (`NAME TYPE,...`).
        spec: String,
        /// The rest of the spec, when NAME is given apart.
        rest: Option<String>,
    },
    /// Remove a port from the running petreld (the PMDs stop polling it,
    /// then the device is closed: a vhost-user connection is closed and the
    /// pod's memory unmapped; a server socket file is removed).
    #[command(name = "del-port")]
    DelPort {
        /// Port name.
        name: String,
    },
    /// Port policers (token buckets): set, clear, show.
    #[command(subcommand)]
    Qos(features_cli::QosCmd),
    /// Port mirrors: add, del, list (list also shows OVN's GRE/ERSPAN sessions).
    #[command(subcommand)]
    Mirror(features_cli::MirrorCmd),
    /// The meters of the tables (OVN `set_meter`, Southbound `Meter`):
    /// rate, burst, packets passed and dropped.
    Meters,
    /// Write a pcap of a port's traffic (`-w -` for `| tcpdump -r -`).
    Capture(features_cli::CaptureArgs),
    /// Print petreld's log filter, or replace it (at once, until the next
    /// change or a restart).
    #[command(
        name = "log-level",
        after_help = "FILTER: LEVEL, TARGET=LEVEL or a comma-separated list of them; levels are off, error,\n\
                      warn, info, debug, trace; a target is a module path prefix.\n\n\
                      Examples:\n  petrelctl log-level debug\n  petrelctl log-level petrel_vhost_user=debug,info"
    )]
    LogLevel {
        /// The new filter; without it, print the one in force.
        filter: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("petrelctl: {e}");
            ExitCode::from(if e.is_unreachable() { 2 } else { 1 })
        }
    }
}

fn out<T: Serialize>(json: bool, v: &T, text: impl FnOnce(&T) -> String) -> Result<String, ClientError> {
    if json {
        let s = serde_json::to_string_pretty(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(s + "\n")
    } else {
        Ok(text(v))
    }
}

fn run(args: &Args) -> Result<String, ClientError> {
    let mut c = Client::connect(&args.socket, concat!("petrelctl ", env!("CARGO_PKG_VERSION")))?;
    let j = args.json;
    match &args.cmd {
        Cmd::Show => out(j, &c.show()?, render::show),
        Cmd::PmdStats => out(j, &c.pmd_stats()?, render::pmd_stats),
        Cmd::DumpTables { datapath } => out(j, &c.dump_tables(datapath.as_deref())?, render::tables),
        Cmd::Drops => out(j, &c.drops()?, render::drops),
        Cmd::Refusals { datapath } => {
            let mut r = c.refusals()?;
            if let Some(d) = datapath {
                r.refusals.retain(|x| x.datapath == *d || x.datapath_key.to_string() == *d);
            }
            out(j, &r, render::refusals)
        }
        Cmd::Trace { port, microflow } => out(j, &c.trace(port, microflow)?, render::trace_text),
        Cmd::Publish { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            }
            .map_err(|e| ClientError::Protocol(format!("reading {}: {e}", file.display())))?;
            let snap: SnapshotMsg = serde_json::from_str(&text)
                .map_err(|e| ClientError::Protocol(format!("{} is not a snapshot: {e}", file.display())))?;
            let generation = c.publish(snap)?;
            out(j, &serde_json::json!({ "generation": generation }), |_| format!("published generation {generation}\n"))
        }
        Cmd::AddPort { spec, rest } => {
            let spec = match rest {
                Some(r) => format!("{spec}={r}"),
                None => spec.clone(),
            };
            let p = c.add_port(&spec)?;
            out(j, &p, |p| format!("added port {} (index {}): {}\n", p.name, p.index, p.kind))
        }
        Cmd::Qos(q) => features_cli::qos(&mut c, j, q),
        Cmd::Mirror(m) => features_cli::mirror(&mut c, j, m),
        Cmd::Meters => out(j, &c.meters()?, petrel_dataplane::ctl::features::render_meters),
        Cmd::Capture(a) => {
            let summary = features_cli::capture(&mut c, a)?;
            eprint!("{summary}");
            Ok(String::new())
        }
        Cmd::LogLevel { filter } => out(j, &c.log_level(filter.as_deref())?, |r| match &r.previous {
            Some(p) => format!("log filter: {} (was {p})\n", r.filter),
            None => format!("{}\n", r.filter),
        }),
        Cmd::DelPort { name } => {
            let p = c.del_port(name)?;
            out(j, &p, |p| {
                format!(
                    "removed port {} (index {}): rx {} tx {} packets\n",
                    p.name, p.index, p.stats.rx_packets, p.stats.tx_packets
                )
            })
        }
    }
}
