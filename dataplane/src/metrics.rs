//! petreld's Prometheus metrics (`petreld --metrics-addr HOST:PORT`, then
//! `GET /metrics`).
//!
//! Nothing is counted twice: at each scrape the collector asks the same
//! [`Node`] the control socket serves for its counters (`stats`, `show`),
//! which sums what the PMDs publish with relaxed stores. So a scrape never
//! touches a PMD, ports added at runtime appear at the next scrape, and the
//! numbers are the ones `petrelctl` shows. One `stats` call gives the
//! ports, PMDs and drops of one snapshot, so ratios between them hold.
//!
//! Names follow Prometheus conventions: `petrel_` prefix, the unit in the
//! name (`_packets`, `_bytes`, `_cycles`), counters end in `_total`. The
//! encoding is prometheus-client's Prometheus text format (0.0.4), which
//! `promtool check metrics` accepts.

use std::sync::Arc;

use petrel_obs::http::{BoundListener, HttpError, MetricsServer, Render};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::ctl::proto::PortStats;
use crate::ctl::server::Node;

/// One sample: its labels and value.
type Row = (Vec<(&'static str, String)>, u64);

/// Reads a [`Node`] at each scrape.
struct NodeCollector {
    node: Arc<dyn Node>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

/// Writes one family (nothing if it has no samples: an empty family is
/// noise to a linter and to dashboards).
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[Row],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let sample = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(sample)?,
            _ => ConstGauge::new(*v).encode(sample)?,
        }
    }
    Ok(())
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.node.stats();
        let show = self.node.show();
        let c = MetricType::Counter;
        let g = MetricType::Gauge;

        let port_labels = |p: &crate::ctl::proto::PortInfo| {
            let mut l = vec![("port", p.name.clone())];
            if let Some(i) = p.iface_id.as_ref().filter(|i| !i.is_empty()) {
                l.push(("iface_id", i.clone()));
            }
            l
        };
        let ports = |f: fn(&PortStats) -> u64| -> Vec<Row> {
            stats.ports.iter().map(|p| (port_labels(p), f(&p.stats))).collect()
        };
        family(&mut enc, "petrel_port_rx_packets", "Packets received on the port.", c, &ports(|s| s.rx_packets))?;
        family(&mut enc, "petrel_port_rx_bytes", "Bytes received on the port.", c, &ports(|s| s.rx_bytes))?;
        family(&mut enc, "petrel_port_tx_packets", "Packets sent on the port.", c, &ports(|s| s.tx_packets))?;
        family(&mut enc, "petrel_port_tx_bytes", "Bytes sent on the port.", c, &ports(|s| s.tx_bytes))?;
        family(
            &mut enc,
            "petrel_port_rx_dropped_packets",
            "Packets received on the port and dropped (by reason: petrel_dropped_packets_total).",
            c,
            &ports(|s| s.drops),
        )?;
        family(
            &mut enc,
            "petrel_port_tx_dropped_packets",
            "Packets for the port that its device would not take.",
            c,
            &ports(|s| s.tx_drops),
        )?;
        let up: Vec<Row> = stats.ports.iter().map(|p| (port_labels(p), u64::from(p.state == "up"))).collect();
        family(
            &mut enc,
            "petrel_port_up",
            "1 if the port is up (a vhost-user port: a frontend is connected), 0 if it is waiting.",
            g,
            &up,
        )?;
        let info: Vec<Row> = stats
            .ports
            .iter()
            .map(|p| {
                let mut l = port_labels(p);
                l.push(("type", p.kind.split_whitespace().next().unwrap_or_default().to_owned()));
                l.push(("state", p.state.clone()));
                if let Some(lp) = &p.logical {
                    l.push(("datapath", lp.datapath_name.clone()));
                    l.push(("logical_port", lp.port_name.clone().unwrap_or_else(|| lp.port.to_string())));
                }
                (l, 1)
            })
            .collect();
        family(&mut enc, "petrel_port_info", "Port type, state and logical binding (always 1).", g, &info)?;

        let drops: Vec<Row> =
            stats.drops.reasons.iter().map(|d| (vec![("reason", d.reason.clone())], d.count)).collect();
        family(&mut enc, "petrel_dropped_packets", "Packets dropped, by reason.", c, &drops)?;

        // The tables' meters (OVN set_meter, Southbound Meter rows).
        let meters = self.node.meters().meters;
        let meter_rows = |f: fn(&crate::ctl::features::MeterInfo) -> u64| -> Vec<Row> {
            meters.iter().map(|m| (vec![("meter", m.id.to_string()), ("name", m.name.clone())], f(m))).collect()
        };
        family(
            &mut enc,
            "petrel_meter_passed_packets",
            "Packets a meter of the tables passed.",
            c,
            &meter_rows(|m| m.passed),
        )?;
        family(
            &mut enc,
            "petrel_meter_dropped_packets",
            "Packets a meter of the tables refused (also in petrel_dropped_packets_total{reason=\"meter_drop\"}).",
            c,
            &meter_rows(|m| m.dropped),
        )?;
        family(
            &mut enc,
            "petrel_meter_dropped_bytes",
            "Bytes of the packets a meter of the tables refused.",
            c,
            &meter_rows(|m| m.dropped_bytes),
        )?;

        let pmd_labels =
            |p: &crate::ctl::proto::PmdInfo| vec![("pmd", p.index.to_string()), ("cpu", p.cpu.to_string())];
        let pmds = |f: fn(&crate::ctl::proto::PmdInfo) -> u64| -> Vec<Row> {
            stats.pmds.pmds.iter().map(|p| (pmd_labels(p), f(p))).collect()
        };
        family(
            &mut enc,
            "petrel_pmd_busy_cycles",
            "TSC cycles a PMD spent in polls that received packets.",
            c,
            &pmds(|p| p.busy_cycles),
        )?;
        family(
            &mut enc,
            "petrel_pmd_idle_cycles",
            "TSC cycles a PMD spent in polls that received nothing.",
            c,
            &pmds(|p| p.idle_cycles),
        )?;
        family(
            &mut enc,
            "petrel_pmd_sleep_cycles",
            "TSC cycles a PMD spent asleep (--pmd-sleep-max).",
            c,
            &pmds(|p| p.sleep_cycles),
        )?;
        family(
            &mut enc,
            "petrel_pmd_rx_bursts",
            "Receive calls that returned packets (packets per burst: rx_packets / rx_bursts).",
            c,
            &pmds(|p| p.rx_bursts),
        )?;
        family(&mut enc, "petrel_pmd_rx_packets", "Packets a PMD received.", c, &pmds(|p| p.rx_packets))?;
        let layers: Vec<Row> = stats
            .pmds
            .pmds
            .iter()
            .flat_map(|p| {
                p.layers.iter().map(move |l| {
                    let mut labels = pmd_labels(p);
                    labels.push(("layer", l.name.clone()));
                    (labels, l.hits)
                })
            })
            .collect();
        family(
            &mut enc,
            "petrel_pmd_lookups",
            "Packets answered by each lookup layer: flow_cache (exact-match cache hits), pipeline (cache \
             misses that walked the tables).",
            c,
            &layers,
        )?;
        let one = |v: u64| vec![(Vec::new(), v)];
        family(
            &mut enc,
            "petrel_tsc_hz",
            "TSC frequency (cycles per second), to turn cycles into time.",
            g,
            &one(stats.pmds.tsc_hz),
        )?;
        family(
            &mut enc,
            "petrel_tables_generation",
            "Generation of the tables running (0: none yet).",
            g,
            &one(stats.generation),
        )?;
        let n = |v: usize| one(u64::try_from(v).unwrap_or(u64::MAX));
        family(&mut enc, "petrel_tables_datapaths", "Datapaths in the tables running.", g, &n(show.n_datapaths))?;
        family(&mut enc, "petrel_tables_rules", "Rules in the tables running.", g, &n(show.n_rules))?;
        family(&mut enc, "petrel_pmds", "PMD threads.", g, &n(show.n_pmds))?;
        let build = vec![(vec![("version", env!("CARGO_PKG_VERSION").to_owned()), ("server", show.server)], 1)];
        family(&mut enc, "petrel_build_info", "petreld's version (always 1).", g, &build)?;
        Ok(())
    }
}

/// A registry whose one collector reads `node` at each scrape.
pub fn registry(node: Arc<dyn Node>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(NodeCollector { node }));
    r
}

/// Encodes `registry` in the Prometheus text format; returns the body and
/// its `Content-Type`.
pub fn encode(registry: &Registry) -> (String, &'static str) {
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, registry).is_err() {
        // Writing to a String does not fail; a collector error leaves a
        // partial body, which a scraper rejects rather than misreads.
        out.push_str("# encoding failed\n");
    }
    (out, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
}

/// Serves `node`'s metrics at `http://ADDR/metrics` until the returned
/// server is dropped.
///
/// # Errors
/// The address does not resolve or cannot be bound.
pub fn serve(addr: &str, node: Arc<dyn Node>) -> Result<MetricsServer, HttpError> {
    serve_on(BoundListener::bind(addr)?, node)
}

/// [`serve`] on an address bound earlier.
///
/// # Errors
/// The serving thread cannot be spawned.
pub fn serve_on(listener: BoundListener, node: Arc<dyn Node>) -> Result<MetricsServer, HttpError> {
    let registry = Arc::new(registry(node));
    let render: Render = Arc::new(move || encode(&registry));
    listener.serve(render)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::ctl::proto::{
        Change, DropsReply, ErrorReply, LayerHits, LogicalPortInfo, PmdInfo, PmdStatsReply, PortInfo, ShowReply,
        SnapshotMsg, StatsReply, TablesReply, TraceReply,
    };

    /// A node whose port `a` counts up by `n` packets per `stats` call and
    /// whose ports can be added.
    #[derive(Default)]
    struct Fake {
        n: AtomicU64,
        extra_port: std::sync::atomic::AtomicBool,
    }

    fn port(index: u16, name: &str, kind: &str, state: &str, rx: u64) -> PortInfo {
        PortInfo {
            index,
            name: name.into(),
            kind: kind.into(),
            state: state.into(),
            iface_id: None,
            logical: None,
            stats: PortStats { rx_packets: rx, rx_bytes: rx * 64, tx_packets: rx / 2, ..PortStats::default() },
        }
    }

    impl Node for Fake {
        fn generation(&self) -> u64 {
            3
        }
        fn show(&self) -> ShowReply {
            ShowReply {
                server: "petreld test".into(),
                uptime_secs: 1.0,
                generation: 3,
                n_datapaths: 2,
                n_rules: 17,
                n_pmds: 1,
                ports: self.stats().ports,
                uplinks: vec![],
                tunnels: vec![],
            }
        }
        fn pmd_stats(&self) -> PmdStatsReply {
            self.stats().pmds
        }
        fn dump_tables(&self, _: Option<&str>) -> Result<TablesReply, ErrorReply> {
            Err(ErrorReply::not_found("none"))
        }
        fn drops(&self) -> DropsReply {
            self.stats().drops
        }
        fn trace(&self, _: &str, _: &str) -> Result<TraceReply, ErrorReply> {
            Err(ErrorReply::not_found("none"))
        }
        fn publish(&self, _: SnapshotMsg) -> Result<u64, ErrorReply> {
            Err(ErrorReply::rejected("no"))
        }
        fn apply(&self, _: Vec<Change>) -> Result<u64, ErrorReply> {
            Err(ErrorReply::rejected("no"))
        }
        fn stats(&self) -> StatsReply {
            let n = self.n.fetch_add(10, Ordering::Relaxed) + 10;
            let mut a = port(0, "a", "dpdk net_null0,size=64", "up", n);
            a.iface_id = Some("pod1.default".into());
            a.logical = Some(LogicalPortInfo {
                datapath: 1,
                datapath_name: "ls1".into(),
                port: 2,
                port_name: Some("pod1.default".into()),
            });
            let mut ports = vec![a, port(1, "pod \"x\"", "vhost-user /run/x.sock server queues 1", "waiting", 0)];
            if self.extra_port.load(Ordering::Relaxed) {
                ports.push(port(2, "late", "dpdk net_null2", "up", 5));
            }
            let mut counts = vec![0u64; crate::drop::DropReason::COUNT];
            counts[crate::drop::DropReason::StageMiss.index()] = 4;
            StatsReply {
                generation: 3,
                ports,
                pmds: PmdStatsReply {
                    tsc_hz: 2_000_000_000,
                    pmds: vec![PmdInfo {
                        index: 0,
                        cpu: 1,
                        busy_cycles: 1000,
                        idle_cycles: 9000,
                        sleep_cycles: 0,
                        rx_bursts: 4,
                        rx_packets: n,
                        layers: vec![
                            LayerHits { name: "flow_cache".into(), hits: 7 },
                            LayerHits { name: "pipeline".into(), hits: 3 },
                        ],
                    }],
                },
                drops: DropsReply::from_counts(&counts),
            }
        }
    }

    /// The value of the sample whose line starts with `prefix` (name and labels).
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Runs `promtool check metrics` on `text`; fails the test if promtool
    /// is missing (scripts/bootstrap.sh installs Debian's `prometheus`).
    pub(crate) fn promtool_check(text: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is not installed: run scripts/bootstrap.sh (Debian package prometheus)");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}\n--- input:\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn test_scrape_reads_the_node_each_time_and_passes_promtool() {
        let fake = Arc::new(Fake::default());
        let reg = registry(fake.clone());
        let (t1, ctype) = encode(&reg);
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        promtool_check(&t1);
        let rx = r#"petrel_port_rx_packets_total{port="a",iface_id="pod1.default"}"#;
        assert_eq!(sample(&t1, rx), Some(10.0), "{t1}");
        assert_eq!(sample(&t1, r#"petrel_port_rx_bytes_total{port="a","#), Some(640.0), "{t1}");
        assert!(t1.contains("# TYPE petrel_port_rx_packets_total counter\n"), "{t1}");
        // Label values are escaped; vhost-user waiting is down.
        assert_eq!(sample(&t1, r#"petrel_port_up{port="pod \"x\""}"#), Some(0.0), "{t1}");
        assert_eq!(sample(&t1, r#"petrel_port_up{port="a","#), Some(1.0), "{t1}");
        assert!(
            t1.contains(
                r#"petrel_port_info{port="a",iface_id="pod1.default",type="dpdk",state="up",datapath="ls1",logical_port="pod1.default"} 1"#
            ),
            "{t1}"
        );
        assert_eq!(sample(&t1, r#"petrel_dropped_packets_total{reason="stage_miss"}"#), Some(4.0), "{t1}");
        assert_eq!(sample(&t1, r#"petrel_dropped_packets_total{reason="no_output"}"#), Some(0.0), "zeros too: {t1}");
        assert_eq!(sample(&t1, r#"petrel_pmd_busy_cycles_total{pmd="0",cpu="1"}"#), Some(1000.0), "{t1}");
        assert_eq!(sample(&t1, r#"petrel_pmd_lookups_total{pmd="0",cpu="1",layer="flow_cache"}"#), Some(7.0));
        assert_eq!(sample(&t1, "petrel_tables_generation "), Some(3.0), "{t1}");
        assert_eq!(sample(&t1, "petrel_tables_rules "), Some(17.0), "{t1}");
        assert!(!t1.contains("late"), "{t1}");
        // The next scrape sees the node's new numbers and a port added since.
        fake.extra_port.store(true, Ordering::Relaxed);
        let (t2, _) = encode(&reg);
        assert_eq!(sample(&t2, rx), Some(30.0), "stats() and show() each count: {t2}");
        assert_eq!(sample(&t2, r#"petrel_port_rx_packets_total{port="late"}"#), Some(5.0), "{t2}");
        promtool_check(&t2);
    }

    #[test]
    fn test_served_over_http() {
        use std::io::{Read, Write};
        let srv = serve("127.0.0.1:0", Arc::new(Fake::default())).unwrap();
        let mut s = std::net::TcpStream::connect(srv.local_addr()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("version=0.0.4"), "{head}");
        promtool_check(body);
        assert!(body.contains("petrel_pmd_rx_packets_total{pmd=\"0\",cpu=\"1\"} 10\n"), "{body}");
    }
}
