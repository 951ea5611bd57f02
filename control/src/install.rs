//! Getting compiled tables into petreld.
//!
//! The [`Installer`] runs in the agent's loop after every Southbound change
//! and every change petreld reports (ports, a restart): it compiles the
//! replica ([`crate::lflow::Compiler`], cached per flow) and publishes the
//! snapshot when it differs from what petreld runs, or when petreld runs
//! something else (it restarted, or someone published by hand: its
//! generation is not the one our last publish returned). The agent
//! acknowledges `nb_cfg` only when [`Installer::install`] says petreld runs
//! tables for the current replica, so `ovn-nbctl --wait=hv` returns once a
//! change is in force in the fast path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use petrel_dataplane::ctl::proto::SnapshotMsg;
use petrel_dataplane::ctl::Client;
use tokio::sync::watch;

use crate::lflow::{Compiler, LocalPorts, Refusal};
use crate::ovsdb::Replica;
use petrel_dataplane::table::Snapshot;

/// What petreld reported last (the dataplane watcher's `show`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpView {
    /// petreld instance (changes when it restarts).
    pub instance: String,
    /// Generation of the tables it runs.
    pub generation: u64,
    /// Its ports: (index, name, iface-id).
    pub ports: Vec<(u16, String, Option<String>)>,
}

/// Counters and the last compile's numbers.
#[derive(Debug, Clone, Default)]
pub struct InstallStats {
    /// Snapshots published.
    pub n_published: u64,
    /// Publish failures.
    pub n_errors: u64,
    /// Last compile time.
    pub last_compile: Duration,
    /// Last publish time (conversion + request).
    pub last_publish: Duration,
    /// Logical flows compiled (not cached) by the last compile.
    pub last_n_compiled: usize,
    /// Rules in the last snapshot.
    pub last_n_rules: usize,
    /// Refusals in the last snapshot.
    pub last_n_refusals: usize,
}

/// Compiles and publishes.
#[derive(Debug)]
pub struct Installer {
    compiler: Compiler,
    /// petreld's control socket; `None`: compile only (benchmarks), with
    /// the agent's iface-ids as local ports.
    socket: Option<PathBuf>,
    client: Option<Client>,
    view: watch::Receiver<Option<DpView>>,
    /// `network_name` → petreld port name.
    bridge_mappings: BTreeMap<String, String>,
    /// (petreld instance, generation it replied, the message published).
    last: Option<(String, u64, SnapshotMsg)>,
    /// The compiled tables behind `last`, to notice "nothing changed"
    /// without converting 30k rules to a message (stages are shared `Arc`s
    /// when the compiler reused them).
    last_snap: Option<(Snapshot, Vec<Refusal>)>,
    stats: InstallStats,
    /// OVN's port policers handed to petreld (`crate::qos`).
    qos: crate::qos::QosSync,
    /// OVN's remote mirrors handed to petreld (`crate::mirror`).
    mirrors: crate::mirror::MirrorSync,
    metrics: Option<crate::metrics::Metrics>,
}

const CLIENT_NAME: &str = concat!("petrel-ovn ", env!("CARGO_PKG_VERSION"));
const TIMEOUT: Duration = Duration::from_secs(10);

impl Installer {
    /// An installer publishing to petreld at `socket`, learning petreld's
    /// ports from `view` (see [`crate::dataplane::Watcher::with_view`]).
    pub fn new(
        socket: PathBuf,
        view: watch::Receiver<Option<DpView>>,
        bridge_mappings: BTreeMap<String, String>,
    ) -> Self {
        Installer {
            compiler: Compiler::new(),
            socket: Some(socket),
            client: None,
            view,
            bridge_mappings,
            last: None,
            last_snap: None,
            stats: InstallStats::default(),
            qos: crate::qos::QosSync::default(),
            mirrors: crate::mirror::MirrorSync::default(),
            metrics: None,
        }
    }

    /// An installer that compiles but publishes nothing: the local ports
    /// are the agent's iface-ids, numbered in order (`petrel-ovn
    /// --compile-only`, for measuring the compiler without a dataplane).
    pub fn compile_only() -> Self {
        let (tx, view) = watch::channel(None);
        drop(tx);
        Installer {
            compiler: Compiler::new(),
            socket: None,
            client: None,
            view,
            bridge_mappings: BTreeMap::new(),
            last: None,
            last_snap: None,
            stats: InstallStats::default(),
            qos: crate::qos::QosSync::default(),
            mirrors: crate::mirror::MirrorSync::default(),
            metrics: None,
        }
    }

    /// Hands OVN's port policers to petreld if they changed (or petreld
    /// restarted). Not part of "tables in force": a failure is retried at
    /// the next install.
    fn sync_qos(&mut self, replica: &Replica, view: &DpView) {
        let Some(socket) = &self.socket else { return };
        let want = crate::qos::ovn_port_qos(replica, &view.ports);
        if self.client.is_none() {
            if let Ok(c) = Client::connect_timeout(socket, CLIENT_NAME, TIMEOUT) {
                self.client = Some(c);
            }
        }
        if let Some(c) = self.client.as_mut() {
            let instance = c.hello().instance.clone();
            if self.qos.sync(c, &instance, want).is_err() {
                self.client = None;
            }
        }
    }

    /// Hands OVN's remote mirrors to petreld if they changed (or petreld
    /// restarted), like [`Installer::sync_qos`].
    fn sync_mirrors(&mut self, replica: &Replica, view: &DpView) {
        let Some(socket) = &self.socket else { return };
        let want = crate::mirror::ovn_mirrors(replica, &view.ports);
        if self.client.is_none() {
            if let Ok(c) = Client::connect_timeout(socket, CLIENT_NAME, TIMEOUT) {
                self.client = Some(c);
            }
        }
        if let Some(c) = self.client.as_mut() {
            let instance = c.hello().instance.clone();
            if self.mirrors.sync(c, &instance, want).is_err() {
                self.client = None;
            }
        }
    }

    /// Resolves when petreld's view changed.
    pub async fn changed(&mut self) -> bool {
        self.view.changed().await.is_ok()
    }

    /// Records compiles and publishes in `m` too.
    pub fn set_metrics(&mut self, m: crate::metrics::Metrics) {
        self.metrics = Some(m);
    }

    /// Counters.
    pub fn stats(&self) -> &InstallStats {
        &self.stats
    }

    /// Compiles `replica` and publishes if petreld does not run it yet.
    /// Returns whether petreld now runs tables for this replica.
    pub fn install(&mut self, replica: &Replica, system_id: &str, iface_ids: &BTreeSet<String>) -> bool {
        let view = match (&self.socket, self.view.borrow_and_update().clone()) {
            (Some(_), Some(v)) => v,
            (Some(_), None) => return false,
            (None, _) => DpView {
                instance: "compile-only".into(),
                generation: 0,
                ports: iface_ids
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (u16::try_from(i).unwrap_or(u16::MAX), n.clone(), Some(n.clone())))
                    .collect(),
            },
        };
        self.sync_qos(replica, &view);
        self.sync_mirrors(replica, &view);
        let mut local = LocalPorts::default();
        for (idx, name, iface) in &view.ports {
            if let Some(i) = iface.as_deref().filter(|s| !s.is_empty()) {
                local.ifaces.insert(i.to_owned(), *idx);
            }
            for (net, port) in &self.bridge_mappings {
                if port == name {
                    local.networks.insert(net.clone(), *idx);
                }
            }
        }
        let t0 = Instant::now();
        let compiled = self.compiler.compile(replica, system_id, &local);
        self.stats.last_compile = t0.elapsed();
        self.stats.last_n_compiled = compiled.stats.n_compiled;
        self.stats.last_n_rules = compiled.stats.n_rules;
        self.stats.last_n_refusals = compiled.refusals.len();
        if let Some(m) = &self.metrics {
            m.compiled(&compiled.stats, self.stats.last_compile, compiled.refusals.len());
        }
        let t1 = Instant::now();
        let unchanged =
            self.last_snap.as_ref().is_some_and(|(s, r)| same_tables(s, &compiled.snapshot) && *r == compiled.refusals);
        if unchanged {
            if let Some((inst, generation, _)) = &self.last {
                let in_force = self.socket.is_none() || (*inst == view.instance && view.generation <= *generation);
                if in_force {
                    return true;
                }
            }
        }
        self.last_snap = Some((compiled.snapshot.clone(), compiled.refusals.clone()));
        let mut msg = SnapshotMsg::from(&compiled.snapshot);
        msg.generation = 0;
        msg.refusals = compiled.refusals.clone();
        msg.notes = compiled.notes.clone();
        let Some(socket) = &self.socket else {
            if self.last.as_ref().is_none_or(|(_, _, last)| *last != msg) {
                tracing::info!(
                    n_datapaths = compiled.stats.n_datapaths,
                    n_flows = compiled.stats.n_flows,
                    n_compiled = compiled.stats.n_compiled,
                    n_rules = compiled.stats.n_rules,
                    n_refused = compiled.refusals.len(),
                    compile_us = u64::try_from(self.stats.last_compile.as_micros()).unwrap_or(u64::MAX),
                    inputs_us = u64::try_from(compiled.stats.t_inputs.as_micros()).unwrap_or(u64::MAX),
                    layout_us = u64::try_from(compiled.stats.t_layout.as_micros()).unwrap_or(u64::MAX),
                    msg_us = u64::try_from(t1.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "compiled tables (compile only)"
                );
                self.last = Some((view.instance, 0, msg));
            }
            return true;
        };
        if let Some((inst, generation, last)) = &self.last {
            // Generations only grow within an instance: a view older than
            // our publish still runs it; a newer one means someone else
            // published.
            if *inst == view.instance && view.generation <= *generation && *last == msg {
                return true;
            }
        }
        let client = match self.client.as_mut() {
            Some(c) => c,
            None => match Client::connect_timeout(socket, CLIENT_NAME, TIMEOUT) {
                Ok(c) => self.client.insert(c),
                Err(e) => {
                    self.stats.n_errors += 1;
                    if let Some(m) = &self.metrics {
                        m.publish_failed();
                    }
                    tracing::warn!("cannot publish tables, petreld unreachable: {e}");
                    return false;
                }
            },
        };
        let instance = client.hello().instance.clone();
        match client.publish(msg.clone()) {
            Ok(g) => {
                self.stats.n_published += 1;
                self.stats.last_publish = t1.elapsed();
                if let Some(m) = &self.metrics {
                    m.published(g, self.stats.last_publish);
                }
                tracing::info!(
                    generation = g,
                    n_datapaths = compiled.stats.n_datapaths,
                    n_flows = compiled.stats.n_flows,
                    n_compiled = compiled.stats.n_compiled,
                    n_rules = compiled.stats.n_rules,
                    n_refused = compiled.refusals.len(),
                    compile_us = u64::try_from(self.stats.last_compile.as_micros()).unwrap_or(u64::MAX),
                    publish_us = u64::try_from(self.stats.last_publish.as_micros()).unwrap_or(u64::MAX),
                    "published tables"
                );
                if !compiled.refusals.is_empty() {
                    tracing::debug!(refusals = ?compiled.refusals, "refused");
                }
                self.last = Some((instance, g, msg));
                // The watcher's view is older than this publish: count it
                // as in force without waiting for the next `show`.
                true
            }
            Err(e) => {
                self.stats.n_errors += 1;
                if let Some(m) = &self.metrics {
                    m.publish_failed();
                }
                self.client = None;
                tracing::warn!("publishing tables failed: {e}");
                false
            }
        }
    }

    /// Whether the last publish is what petreld runs (by its view).
    pub fn view_matches(&self) -> bool {
        match (&self.last, self.view.borrow().as_ref()) {
            (Some((i, g, _)), Some(v)) => *i == v.instance && v.generation <= *g,
            _ => false,
        }
    }
}

/// Whether two snapshots are the same tables: same stages (by pointer: the
/// compiler shares the stages it did not rebuild), ports, groups and local
/// bindings.
fn same_tables(a: &Snapshot, b: &Snapshot) -> bool {
    let same_pipe = |x: &petrel_dataplane::table::Pipeline, y: &petrel_dataplane::table::Pipeline| {
        x.stages.len() == y.stages.len() && x.stages.iter().zip(&y.stages).all(|(s, t)| std::sync::Arc::ptr_eq(s, t))
    };
    a.local_ports == b.local_ports
        && a.vlan_ports == b.vlan_ports
        && a.meters == b.meters
        && a.chassis == b.chassis
        && a.datapaths.len() == b.datapaths.len()
        && a.datapaths.iter().zip(&b.datapaths).all(|((ka, da), (kb, db))| {
            ka == kb
                && da.name == db.name
                && da.ports == db.ports
                && da.groups == db.groups
                && da.port_names == db.port_names
                && same_pipe(&da.ingress, &db.ingress)
                && same_pipe(&da.egress, &db.egress)
        })
}
