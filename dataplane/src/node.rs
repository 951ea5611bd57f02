//! `petreld`'s side of the control socket: answers `petrelctl` and
//! `petrel-ovn` from the PMDs' published counters and the published tables,
//! and publishes new tables.
//!
//! Runs on the control socket's threads, never on a PMD: it reads counters
//! the PMDs publish with relaxed stores and the current snapshot through
//! `arc_swap`, so it never stalls the fast path. Publishing is serialised by
//! a mutex (the socket serves clients concurrently and `table::publish`
//! assumes one publisher).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::PortKind;
use crate::ctl::proto::{
    apply_changes, Change, DropsReply, ErrorReply, PmdInfo, PmdStatsReply, PortInfo, PortStats, RefusalsReply,
    ShowReply, SnapshotMsg, StatsReply, TablesReply, TraceReply,
};
use crate::ctl::render;
use crate::ctl::server::Node;
use crate::pmd::stats::{sum, Counters, SharedStats};
use crate::portset::{PortEntry, PortSet};
use crate::table::{publish, Snapshot, Tables};

/// What the control socket sees of a running `petreld`.
#[derive(Debug)]
pub struct PetreldNode {
    ports: Arc<PortSet>,
    pmd_cores: Vec<usize>,
    stats: Vec<Arc<SharedStats>>,
    tables: Tables,
    publish_lock: Mutex<()>,
    refusals: Mutex<RefusalsReply>,
    /// Per PMD: how far its learning ring has been read.
    learn_cursors: Mutex<Vec<u64>>,
    start: Instant,
    tsc_hz: u64,
    /// Policers, mirrors and capture (`None`: refused).
    features: Option<Arc<crate::featurectl::FeatureCtl>>,
    /// The log filter `log_level` reads and replaces, if any.
    log: Option<petrel_obs::logging::LogControl>,
    /// Tunnel endpoints (name, spec, slot) and the neighbour table.
    underlay: Vec<(String, crate::underlay::UplinkSpec, usize)>,
    neighbors: Option<crate::underlay::Neighbors>,
}

impl PetreldNode {
    /// A node over these ports, PMDs (their CPUs and counters) and tables.
    pub fn new(
        ports: Arc<PortSet>,
        pmd_cores: Vec<usize>,
        stats: Vec<Arc<SharedStats>>,
        tables: Tables,
        tsc_hz: u64,
    ) -> Self {
        PetreldNode {
            ports,
            pmd_cores,
            stats,
            tables,
            publish_lock: Mutex::new(()),
            refusals: Mutex::new(RefusalsReply::default()),
            learn_cursors: Mutex::new(Vec::new()),
            start: Instant::now(),
            tsc_hz,
            features: None,
            log: None,
            underlay: Vec::new(),
            neighbors: None,
        }
    }

    /// Lets `log_level` requests read and replace this log filter.
    pub fn with_log(mut self, log: petrel_obs::logging::LogControl) -> Self {
        self.log = Some(log);
        self
    }

    /// Shows these tunnel endpoints and the remote chassis' next hops from
    /// this neighbour table.
    pub fn with_underlay(
        mut self,
        uplinks: Vec<(String, crate::underlay::UplinkSpec, usize)>,
        neighbors: crate::underlay::Neighbors,
    ) -> Self {
        self.underlay = uplinks;
        self.neighbors = Some(neighbors);
        self
    }

    fn tunnels(&self, snap: &Snapshot) -> Vec<crate::ctl::proto::TunnelInfo> {
        use crate::underlay::{route, Uplink};
        let ups: Vec<Uplink> = self.underlay.iter().map(|(_, s, slot)| Uplink::new(s, *slot, [0; 6])).collect();
        let neigh = self.neighbors.as_ref().map(|n| n.load_full());
        let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        snap.chassis
            .iter()
            .map(|c| {
                let r = route(&ups, &crate::underlay::ip16(c.ip));
                crate::ctl::proto::TunnelInfo {
                    chassis: c.name.clone(),
                    ip: c.ip.to_string(),
                    uplink: r.map(|(u, _)| self.underlay[u].0.clone()),
                    nexthop: r.map(|(_, n)| crate::underlay::ip_of(&n).to_string()),
                    mac: r.and_then(|(_, n)| neigh.as_ref()?.get(&n)).map(mac),
                }
            })
            .collect()
    }

    /// Serves `qos`, `mirror` and `capture` requests through `f`.
    pub fn with_features(mut self, f: Arc<crate::featurectl::FeatureCtl>) -> Self {
        self.features = Some(f);
        self
    }

    fn features(&self) -> Result<&crate::featurectl::FeatureCtl, ErrorReply> {
        self.features.as_deref().ok_or_else(|| ErrorReply::rejected("this petreld has no per-port features"))
    }

    fn per_pmd(&self) -> Vec<Counters> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    fn ports(&self, total: &Counters) -> Vec<PortInfo> {
        let snap = self.tables.load();
        self.ports
            .entries()
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| port_info(&snap, i, p, total)))
            .collect()
    }

    fn pmds(&self, per_pmd: &[Counters]) -> PmdStatsReply {
        let pmds = per_pmd
            .iter()
            .enumerate()
            .map(|(i, c)| PmdInfo::from_counters(i, self.pmd_cores.get(i).copied().unwrap_or(0), c))
            .collect();
        PmdStatsReply { tsc_hz: self.tsc_hz, pmds }
    }

    fn port_index(&self, port: &str) -> Option<u16> {
        let i = self.ports.index(port).or_else(|| {
            port.parse::<usize>().ok().filter(|i| self.ports.entries().get(*i).is_some_and(Option::is_some))
        })?;
        u16::try_from(i).ok()
    }
}

impl Node for PetreldNode {
    fn generation(&self) -> u64 {
        self.tables.load().generation
    }

    fn show(&self) -> ShowReply {
        let total = sum(&self.per_pmd());
        let snap = self.tables.load();
        ShowReply {
            server: self.server_name(),
            uptime_secs: self.start.elapsed().as_secs_f64(),
            generation: snap.generation,
            n_datapaths: snap.datapaths.len(),
            n_rules: render::n_rules(&snap),
            n_pmds: self.stats.len(),
            ports: self.ports(&total),
            uplinks: self
                .underlay
                .iter()
                .map(|(name, s, _)| crate::ctl::proto::UplinkInfo {
                    port: name.clone(),
                    ip: format!("{}/{}", s.ip, s.prefix),
                    gw: s.gw.map(|g| g.to_string()),
                    mtu: s.mtu,
                })
                .collect(),
            tunnels: if self.underlay.is_empty() { Vec::new() } else { self.tunnels(&snap) },
        }
    }

    fn pmd_stats(&self) -> PmdStatsReply {
        self.pmds(&self.per_pmd())
    }

    fn dump_tables(&self, datapath: Option<&str>) -> Result<TablesReply, ErrorReply> {
        render::dump_tables(&self.tables.load(), datapath)
    }

    fn drops(&self) -> DropsReply {
        DropsReply::from_counts(&sum(&self.per_pmd()).drops)
    }

    fn trace(&self, port: &str, packet: &str) -> Result<TraceReply, ErrorReply> {
        let index = self.port_index(port).ok_or_else(|| ErrorReply::not_found(format!("no port {port:?}")))?;
        let names =
            self.ports.entries().iter().map(|p| p.as_ref().map(|p| p.spec.name.clone()).unwrap_or_default()).collect();
        render::trace(&self.tables.load(), index, port, packet, names)
    }

    fn publish(&self, snap: SnapshotMsg) -> Result<u64, ErrorReply> {
        let _guard = self.publish_lock.lock().map_err(|_| ErrorReply::rejected("publisher poisoned"))?;
        let s = snap.to_snapshot().map_err(|e| ErrorReply::rejected(e.to_string()))?;
        self.check_ports(&s)?;
        let g = publish(&self.tables, s).map_err(|e| ErrorReply::rejected(e.to_string()))?;
        if let Ok(mut r) = self.refusals.lock() {
            *r = RefusalsReply { generation: g, refusals: snap.refusals, notes: snap.notes };
        }
        Ok(g)
    }

    fn learned(&self) -> Vec<crate::ctl::proto::LearnedMsg> {
        let mut out = Vec::new();
        let Ok(mut cursors) = self.learn_cursors.lock() else { return out };
        cursors.resize(self.stats.len(), 0);
        let mut raw = Vec::new();
        for (s, c) in self.stats.iter().zip(cursors.iter_mut()) {
            *c = s.learn().read_since(*c, &mut raw);
        }
        raw.sort_unstable();
        raw.dedup();
        for l in raw {
            let m = l.mac;
            out.push(crate::ctl::proto::LearnedMsg {
                datapath: l.datapath,
                port: l.port,
                mac: format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]),
            });
        }
        out
    }

    fn meters(&self) -> crate::ctl::features::MetersReply {
        let snap = self.tables.load();
        let mut r = crate::ctl::features::MetersReply::default();
        for (id, m) in snap.meters.iter().enumerate() {
            let id32 = u32::try_from(id).unwrap_or(u32::MAX);
            let Some(m) = m else { continue };
            let mut info = crate::ctl::features::MeterInfo {
                id: id32,
                name: m.name.clone(),
                rate: m.rate,
                burst: m.burst,
                unit: m.unit,
                pmds: self.stats.len(),
                passed: 0,
                dropped: 0,
                dropped_bytes: 0,
            };
            for s in &self.stats {
                let c = s.meters().get(id);
                info.passed += c.passed;
                info.dropped += c.dropped;
                info.dropped_bytes += c.dropped_bytes;
            }
            r.meters.push(info);
        }
        r
    }

    fn refusals(&self) -> RefusalsReply {
        self.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn apply(&self, changes: Vec<Change>) -> Result<u64, ErrorReply> {
        let _guard = self.publish_lock.lock().map_err(|_| ErrorReply::rejected("publisher poisoned"))?;
        let s = apply_changes(&self.tables.load(), &changes).map_err(|e| ErrorReply::rejected(e.to_string()))?;
        self.check_ports(&s)?;
        publish(&self.tables, s).map_err(|e| ErrorReply::rejected(e.to_string()))
    }

    fn add_port(&self, spec: &str) -> Result<PortInfo, ErrorReply> {
        let (slot, entry) = self.ports.add(spec).map_err(|e| ErrorReply::rejected(format!("{e:#}")))?;
        if let Some(f) = &self.features {
            f.republish();
        }
        let total = sum(&self.per_pmd());
        Ok(port_info(&self.tables.load(), slot, &entry, &total))
    }

    fn log_level(&self, filter: Option<&str>) -> Result<crate::ctl::proto::LogLevelReply, ErrorReply> {
        let log = self.log.as_ref().ok_or_else(|| ErrorReply::rejected("petreld runs without log control"))?;
        let previous = match filter {
            Some(f) => Some(log.set(f).map_err(|e| ErrorReply::rejected(e.to_string()))?),
            None => None,
        };
        if let Some(p) = &previous {
            tracing::info!(filter = %log.filter(), previous = %p, "log filter changed");
        }
        Ok(crate::ctl::proto::LogLevelReply { filter: log.filter(), previous })
    }

    fn del_port(&self, name: &str) -> Result<PortInfo, ErrorReply> {
        // Held until the port is gone: nothing can publish tables naming it
        // in between.
        let _guard = self.publish_lock.lock().map_err(|_| ErrorReply::rejected("publisher poisoned"))?;
        let slot = self.ports.index(name).ok_or_else(|| ErrorReply::not_found(format!("no port {name:?}")))?;
        self.ports.removable(name).map_err(|e| ErrorReply::rejected(format!("{e:#}")))?;
        let before = self.tables.load();
        if let Some(f) = &self.features {
            // Policers, mirrors and captures of (and to) the port stop first.
            f.forget(name);
        }
        if let Some(s) = self.without_port(slot) {
            publish(&self.tables, s).map_err(|e| ErrorReply::rejected(e.to_string()))?;
        }
        let (slot, entry) = match self.ports.remove(name) {
            Ok(r) => r,
            Err(e) => {
                // Put the tables back as they were: the port stays.
                let _ = publish(&self.tables, Snapshot::clone(&before));
                return Err(ErrorReply::rejected(format!("{e:#}")));
            }
        };
        let total = sum(&self.per_pmd());
        Ok(port_info(&self.tables.load(), slot, &entry, &total))
    }

    fn qos(&self, req: crate::ctl::features::QosRequest) -> Result<crate::ctl::features::QosReply, ErrorReply> {
        self.features()?.qos(req)
    }

    fn mirror(
        &self,
        req: crate::ctl::features::MirrorRequest,
    ) -> Result<crate::ctl::features::MirrorReply, ErrorReply> {
        self.features()?.mirror(req)
    }

    fn capture(
        &self,
        req: crate::ctl::features::CaptureRequest,
    ) -> Result<crate::ctl::features::CaptureReply, ErrorReply> {
        self.features()?.capture(req)
    }

    fn stats(&self) -> StatsReply {
        let per_pmd = self.per_pmd();
        let total = sum(&per_pmd);
        StatsReply {
            generation: self.generation(),
            ports: self.ports(&total),
            pmds: self.pmds(&per_pmd),
            drops: DropsReply::from_counts(&total.drops),
        }
    }
}

impl PetreldNode {
    /// Tables may only name ports this petreld has, and a port that
    /// declares an iface-id only as that logical port (a slot reused by a
    /// new port after a removal must not get the old port's traffic from
    /// tables compiled before).
    fn check_ports(&self, s: &crate::table::Snapshot) -> Result<(), ErrorReply> {
        let name_of = |dp: u32, lp: u32| s.datapaths.get(&dp).and_then(|d| d.port_names.get(&lp)).map(String::as_str);
        let check = |slot: usize, logical: Option<&str>, what: &dyn Fn() -> String| {
            self.ports.check_binding(slot, logical).map_err(|e| ErrorReply::rejected(format!("{}: {e}", what())))
        };
        for (slot, lp) in s.local_ports.iter().enumerate() {
            if let Some(lp) = lp {
                check(slot, name_of(lp.datapath, lp.port), &|| format!("local port {slot}"))?;
            }
        }
        for dp in s.datapaths.values() {
            for (lp, b) in &dp.ports {
                let (slot, logical) = match b {
                    crate::table::Binding::Local { port, vlan: None } => {
                        (*port, dp.port_names.get(lp).map(String::as_str))
                    }
                    crate::table::Binding::Local { port, vlan: Some(_) } => (*port, None),
                    crate::table::Binding::Localnet { uplink, .. } => (*uplink, None),
                    crate::table::Binding::Remote { .. }
                    | crate::table::Binding::ViaLocalnet { .. }
                    | crate::table::Binding::Refused => continue,
                };
                check(usize::from(slot), logical, &|| format!("datapath {}: logical port {lp}", dp.key))?;
            }
        }
        for &(p, vid) in s.vlan_ports.keys() {
            check(usize::from(p), None, &|| format!("VLAN {vid} behind port {p}"))?;
        }
        Ok(())
    }

    /// The current tables without port `slot`: it is no longer any logical
    /// port's, and logical ports bound to it become unbound (packets to them
    /// drop as `no_binding` until petrel-ovn republishes).
    fn without_port(&self, slot: usize) -> Option<crate::table::Snapshot> {
        let cur = self.tables.load();
        let slot16 = u16::try_from(slot).ok()?;
        let uses = |b: &crate::table::Binding| match b {
            crate::table::Binding::Local { port, .. } => *port == slot16,
            crate::table::Binding::Localnet { uplink, .. } => *uplink == slot16,
            _ => false,
        };
        let bound = cur.local_ports.get(slot).is_some_and(Option::is_some)
            || cur.vlan_ports.keys().any(|(p, _)| *p == slot16)
            || cur.datapaths.values().any(|d| d.ports.values().any(uses));
        if !bound {
            return None;
        }
        let mut s = (**cur).clone();
        if let Some(lp) = s.local_ports.get_mut(slot) {
            *lp = None;
        }
        s.vlan_ports.retain(|(p, _), _| *p != slot16);
        for dp in s.datapaths.values_mut() {
            if dp.ports.values().any(uses) {
                let d = Arc::make_mut(dp);
                d.ports.retain(|_, b| !uses(b));
            }
        }
        Some(s)
    }
}

fn port_info(snap: &crate::table::Snapshot, i: usize, p: &PortEntry, total: &Counters) -> PortInfo {
    let index = u16::try_from(i).unwrap_or(u16::MAX);
    PortInfo {
        index,
        name: p.spec.name.clone(),
        kind: match &p.spec.kind {
            PortKind::Dpdk { devargs } => format!("dpdk {devargs}"),
            PortKind::Geneve(g) => format!("geneve {} -> {} vni {}", g.local, g.remote, g.vni),
            PortKind::VhostUser { path, client, queues } => {
                format!("vhost-user {} {} queues {queues}", path.display(), if *client { "client" } else { "server" })
            }
        },
        state: match p.vhost.as_ref().map(|v| v.state()) {
            Some(petrel_vhost_user::PortState::Waiting) => "waiting".to_owned(),
            _ => "up".to_owned(),
        },
        iface_id: p.spec.iface_id.clone(),
        logical: render::logical_port(snap, index),
        stats: total.ports.get(i).map(PortStats::from).unwrap_or_default(),
    }
}
