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

use crate::config::{Plan, PortKind};
use crate::ctl::proto::{
    apply_changes, Change, DropsReply, ErrorReply, PmdInfo, PmdStatsReply, PortInfo, PortStats, RefusalsReply,
    ShowReply, SnapshotMsg, StatsReply, TablesReply, TraceReply,
};
use crate::ctl::render;
use crate::ctl::server::Node;
use crate::pmd::stats::{sum, Counters, SharedStats};
use crate::table::{publish, Tables};

/// What the control socket sees of a running `petreld`.
#[derive(Debug)]
pub struct PetreldNode {
    plan: Arc<Plan>,
    stats: Vec<Arc<SharedStats>>,
    tables: Tables,
    publish_lock: Mutex<()>,
    refusals: Mutex<RefusalsReply>,
    /// Per PMD: how far its learning ring has been read.
    learn_cursors: Mutex<Vec<u64>>,
    start: Instant,
    tsc_hz: u64,
    /// vhost-user ports by plan index, for their connection state.
    vhost: Vec<Option<Arc<petrel_vhost_user::Port>>>,
}

impl PetreldNode {
    /// A node over these PMD counters and tables.
    pub fn new(plan: Arc<Plan>, stats: Vec<Arc<SharedStats>>, tables: Tables, tsc_hz: u64) -> Self {
        PetreldNode {
            plan,
            stats,
            tables,
            publish_lock: Mutex::new(()),
            refusals: Mutex::new(RefusalsReply::default()),
            learn_cursors: Mutex::new(Vec::new()),
            start: Instant::now(),
            tsc_hz,
            vhost: Vec::new(),
        }
    }

    /// Reports these vhost-user ports' (by plan index) connection state in
    /// `show`: `up` when a frontend is connected, `waiting` otherwise.
    pub fn with_vhost(mut self, vhost: Vec<Option<Arc<petrel_vhost_user::Port>>>) -> Self {
        self.vhost = vhost;
        self
    }

    fn per_pmd(&self) -> Vec<Counters> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    fn ports(&self, total: &Counters) -> Vec<PortInfo> {
        let snap = self.tables.load();
        self.plan
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let index = u16::try_from(i).unwrap_or(u16::MAX);
                PortInfo {
                    index,
                    name: p.name.clone(),
                    kind: match &p.kind {
                        PortKind::Dpdk { devargs } => format!("dpdk {devargs}"),
                        PortKind::Geneve(g) => format!("geneve {} -> {} vni {}", g.local, g.remote, g.vni),
                        PortKind::VhostUser { path, client, queues } => format!(
                            "vhost-user {} {} queues {queues}",
                            path.display(),
                            if *client { "client" } else { "server" }
                        ),
                    },
                    state: match self.vhost.get(i).and_then(Option::as_ref).map(|v| v.state()) {
                        Some(petrel_vhost_user::PortState::Waiting) => "waiting".to_owned(),
                        _ => "up".to_owned(),
                    },
                    iface_id: p.iface_id.clone(),
                    logical: render::logical_port(&snap, index),
                    stats: total.ports.get(i).map(PortStats::from).unwrap_or_default(),
                }
            })
            .collect()
    }

    fn pmds(&self, per_pmd: &[Counters]) -> PmdStatsReply {
        let pmds = per_pmd
            .iter()
            .enumerate()
            .map(|(i, c)| PmdInfo::from_counters(i, self.plan.pmd_cores.get(i).copied().unwrap_or(0), c))
            .collect();
        PmdStatsReply { tsc_hz: self.tsc_hz, pmds }
    }

    fn port_index(&self, port: &str) -> Option<u16> {
        let i =
            self.plan.port_index(port).or_else(|| port.parse::<usize>().ok().filter(|i| *i < self.plan.ports.len()))?;
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
        let names = self.plan.ports.iter().map(|p| p.name.clone()).collect();
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

    fn refusals(&self) -> RefusalsReply {
        self.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn apply(&self, changes: Vec<Change>) -> Result<u64, ErrorReply> {
        let _guard = self.publish_lock.lock().map_err(|_| ErrorReply::rejected("publisher poisoned"))?;
        let s = apply_changes(&self.tables.load(), &changes).map_err(|e| ErrorReply::rejected(e.to_string()))?;
        self.check_ports(&s)?;
        publish(&self.tables, s).map_err(|e| ErrorReply::rejected(e.to_string()))
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
    /// Tables may only name ports this petreld has.
    fn check_ports(&self, s: &crate::table::Snapshot) -> Result<(), ErrorReply> {
        let n = self.plan.ports.len();
        if s.local_ports.len() > n {
            return Err(ErrorReply::rejected(format!(
                "local_ports has {} entries, petreld has {n} ports",
                s.local_ports.len()
            )));
        }
        for dp in s.datapaths.values() {
            for (lp, b) in &dp.ports {
                let p = match b {
                    crate::table::Binding::Local { port, .. } => *port,
                    crate::table::Binding::Localnet { uplink, .. } => *uplink,
                    crate::table::Binding::Remote { .. } | crate::table::Binding::Refused => continue,
                };
                if usize::from(p) >= n {
                    return Err(ErrorReply::rejected(format!(
                        "datapath {}: logical port {lp} is bound to port {p}, petreld has {n} ports",
                        dp.key
                    )));
                }
            }
        }
        for &(p, _) in s.vlan_ports.keys() {
            if usize::from(p) >= n {
                return Err(ErrorReply::rejected(format!("a VLAN port is behind port {p}, petreld has {n} ports")));
            }
        }
        Ok(())
    }
}
