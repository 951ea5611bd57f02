//! The chassis agent: registers this node in the Southbound database and
//! claims the logical ports bound to it, like ovn-controller's
//! `controller/chassis.c` and `controller/binding.c`.
//!
//! It is level-triggered: after every change of the replica it computes
//! the transaction that brings the Southbound to the wanted state
//! ([`plan`]) and sends it; an empty plan means all is in place. What it
//! maintains:
//! - `Chassis` (name = system id, hostname, `encaps` → one `Encap` of type
//!   geneve with the tunnel IP and `options:csum=true`, ovn-controller's
//!   default `ovn-encap-csum`), and `other_config` keys `datapath-type`,
//!   `iface-types` and the feature flag `port-up-notif=true` (we set
//!   `Port_Binding.up`). Other feature flags ovn-controller 23.03 announces
//!   (`ct-no-masked-label`, `mac-binding-timestamp`, `ct-lb-related`) are
//!   left out until the dataplane implements them, so ovn-northd keeps the
//!   older behaviour for the whole cluster instead of using a feature
//!   Petrel lacks. Keys written by others are kept.
//! - `Chassis_Private` (name, chassis) and its `nb_cfg` acknowledgement:
//!   once the replica has seen `SB_Global.nb_cfg = N`, it holds every change
//!   ovn-northd made for N, so the same transaction that fixes the bindings
//!   acknowledges N (and `ovn-nbctl --wait=hv` returns). Until the table
//!   runtime exists there is no flow installation to wait for.
//! - `Port_Binding`s of type `""` (VIFs) whose `logical_port` is a local
//!   iface-id are claimed (`chassis`, `encap`, `up=true`) if
//!   `requested_chassis` / `options:requested-chassis` allow it as main
//!   chassis (lport.c `lport_can_bind_on_this_chassis`); a port held by
//!   another chassis is taken over only after a per-port backoff (500 ms,
//!   doubling to 32 s) so two chassis that both claim it do not flap at
//!   full speed (ovn-controller's `CLAIM_TIME_THRESHOLD_MS` is a fixed
//!   500 ms). Ports no longer local are released (`chassis`, `encap`
//!   cleared, `up=false`).
//! - Which iface-ids are local: the static ones (`AgentConfig::iface_ids`,
//!   `--iface-id`) and, with `petrel-ovn --dataplane`, the `iface-id`s of
//!   petreld's ports, pushed through [`IfaceIds`] by the watcher in
//!   [`crate::dataplane`]. When petreld is lost, its last ports stay local
//!   for a grace period (10 s by default, `--dataplane-grace-ms`) so a
//!   petreld restart does not flap the claims; after it they are released
//!   (ovn-controller releases a port whose OVS interface disappears, and a
//!   port of a petreld that is down forwards nothing).
//!
//! - What the session monitors: unless `monitor_all`, only the rows of the
//!   local datapaths ([`crate::sb::monitor`]); the agent recomputes that
//!   scope after every change and updates the conditions with
//!   `monitor_cond_change`. `nb_cfg` is acknowledged only once the replica
//!   reflects the conditions the current local ports call for (as
//!   ovn-controller waits for its expected condition seqno), so
//!   `--wait=hv` still means "this chassis has every row it needs".
//!
//! Child ports (`parent_port` + `tag`) are claimed with their local parent.
//! Additional chassis (multi-chassis ports),
//! virtual, localport, l3gateway and chassisredirect ports are not claimed
//! yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use serde_json::Value;

use crate::install::Installer;
use crate::ovsdb::transact::{empty_set, map, named_uuid, uuid_ref};
use crate::ovsdb::{Condition, Error, Operation, Remote, Replica, RowValues, Session, SessionConfig, SessionEvent};
use crate::sb::monitor::Scope;
use crate::sb::{self, Chassis, ChassisPrivate, Encap, PortBinding, SbGlobal, SbTable};
use petrel_dataplane::ctl::proto::LearnedMsg;

/// Delay before taking a port over from another chassis, doubled per
/// consecutive takeover up to `CLAIM_BACKOFF_MAX`.
pub const CLAIM_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Bound of the takeover backoff.
pub const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(32);

/// Agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// System id: the `Chassis` name.
    pub system_id: String,
    /// Hostname.
    pub hostname: String,
    /// Tunnel endpoint IP.
    pub encap_ip: String,
    /// `other_config:datapath-type`.
    pub datapath_type: String,
    /// `other_config:iface-types`.
    pub iface_types: String,
    /// Logical ports present on this node (iface-ids).
    pub iface_ids: BTreeSet<String>,
    /// Monitor every Southbound row, not only those of the local
    /// datapaths (ovn-controller's `ovn-monitor-all=true`).
    pub monitor_all: bool,
}

impl AgentConfig {
    /// Defaults for Petrel: datapath-type `netdev` (what CMSes look for to
    /// offer vhost-user, as on OVS-DPDK), iface-types of a DPDK switch.
    pub fn new(system_id: &str, hostname: &str, encap_ip: &str) -> Self {
        AgentConfig {
            system_id: system_id.to_owned(),
            hostname: hostname.to_owned(),
            encap_ip: encap_ip.to_owned(),
            datapath_type: "netdev".to_owned(),
            iface_types: "dpdk,dpdkvhostuser,dpdkvhostuserclient,geneve".to_owned(),
            iface_ids: BTreeSet::new(),
            monitor_all: false,
        }
    }

    /// A Southbound session configuration for this agent: the schema
    /// check, and unless `monitor_all` the initial conditions (the local
    /// ports by name; [`Agent::run`] widens them as the scope is learnt),
    /// so the first dump is already restricted.
    pub fn session_config(&self, remotes: Vec<Remote>) -> SessionConfig {
        let mut c = SessionConfig::new(remotes, sb::DATABASE);
        c.schema_check = Some(sb::check_schema);
        if !self.monitor_all {
            c.conditions = Scope::initial(&self.system_id, &self.iface_ids).conditions();
        }
        c
    }

    fn other_config(&self) -> [(&'static str, &str); 3] {
        [("datapath-type", &self.datapath_type), ("iface-types", &self.iface_types), ("port-up-notif", "true")]
    }
}

/// Per-port takeover throttle.
#[derive(Debug, Clone, Copy)]
pub struct ClaimThrottle {
    /// Last time we took the port from another chassis.
    pub last: Instant,
    /// Consecutive takeovers.
    pub n: u32,
}

/// The transaction [`plan`] wants, and when to look again.
#[derive(Debug, Default)]
pub struct Plan {
    /// Operations (empty: nothing to do).
    pub ops: Vec<Operation>,
    /// Ports this transaction claims (for logs and the throttle).
    pub claims: Vec<String>,
    /// Ports taken over from another chassis.
    pub takeovers: Vec<String>,
    /// Ports released.
    pub releases: Vec<String>,
    /// A postponed claim wants another look at this time.
    pub wake: Option<Instant>,
}

fn takeover_delay(n: u32) -> Duration {
    (CLAIM_BACKOFF_MIN * 2u32.saturating_pow(n.min(6))).min(CLAIM_BACKOFF_MAX)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn find_by_name<T: SbTable>(replica: &Replica, name: &str, get: impl Fn(&T) -> &str) -> Option<T> {
    T::all(replica).into_iter().find(|r| get(r) == name)
}

/// Whether this chassis may bind `pb` as its main chassis.
pub fn can_bind(pb: &PortBinding, chassis: Option<&Chassis>, cfg: &AgentConfig) -> bool {
    if chassis.is_some_and(|c| pb.requested_chassis == Some(c.uuid)) {
        return true;
    }
    match pb.options.get("requested-chassis").map(String::as_str) {
        None | Some("") => true,
        // The first entry names the main chassis; later ones are additional
        // chassis (not supported yet).
        Some(list) => list.split(',').next().is_some_and(|first| first == cfg.system_id || first == cfg.hostname),
    }
}

/// Computes the transaction that brings the Southbound to the wanted state.
/// `ack_nb_cfg`: the replica holds every row this chassis needs, so
/// `SB_Global.nb_cfg` may be acknowledged.
pub fn plan(
    cfg: &AgentConfig,
    replica: &Replica,
    throttle: &HashMap<String, ClaimThrottle>,
    now: Instant,
    ack_nb_cfg: bool,
) -> Plan {
    let mut p = Plan::default();
    // Without SB_Global, ovn-northd has not initialised the database yet.
    let Some(global) = SbGlobal::all(replica).into_iter().next() else {
        return p;
    };
    let chassis = find_by_name::<Chassis>(replica, &cfg.system_id, |c| &c.name);

    // Encap: the one wanted row, reused when the chassis already has it.
    let encap_ok = |e: &Encap| {
        e.r#type == "geneve"
            && e.ip == cfg.encap_ip
            && e.chassis_name == cfg.system_id
            && e.options.get("csum").map(String::as_str) == Some("true")
    };
    let existing_encap = chassis.as_ref().and_then(|c| {
        (c.encaps.len() == 1).then(|| Encap::get(replica, &c.encaps[0])).flatten().filter(|e| encap_ok(e))
    });
    let encap_ref = match &existing_encap {
        Some(e) => uuid_ref(e.uuid),
        None => {
            let row = RowValues::new()
                .set("type", "geneve")
                .set("ip", cfg.encap_ip.as_str())
                .set("options", map([("csum", "true")]))
                .set("chassis_name", cfg.system_id.as_str());
            p.ops.push(Operation::insert("Encap", row, Some("encap")));
            named_uuid("encap")
        }
    };

    // Chassis.
    let chassis_ref = match &chassis {
        None => {
            let other: BTreeMap<&str, &str> = cfg.other_config().into_iter().collect();
            let row = RowValues::new()
                .set("name", cfg.system_id.as_str())
                .set("hostname", cfg.hostname.as_str())
                .set("encaps", encap_ref.clone())
                .set("other_config", map(other));
            p.ops.push(Operation::insert("Chassis", row, Some("chassis")));
            named_uuid("chassis")
        }
        Some(c) => {
            let mut row = RowValues::new();
            if c.hostname != cfg.hostname {
                row = row.set("hostname", cfg.hostname.as_str());
            }
            if existing_encap.is_none() {
                row = row.set("encaps", encap_ref.clone());
            }
            let mut other = c.other_config.clone();
            for (k, v) in cfg.other_config() {
                other.insert(k.to_owned(), v.to_owned());
            }
            if other != c.other_config {
                row = row.set("other_config", map(&other));
            }
            if !row.is_empty() {
                p.ops.push(Operation::update("Chassis", &[Condition::uuid(c.uuid)], row));
            }
            uuid_ref(c.uuid)
        }
    };

    // Port bindings.
    let our_uuid = chassis.as_ref().map(|c| c.uuid);
    let our_encap = existing_encap.as_ref().map(|e| e.uuid);
    // Column positions once (see the filter below).
    let pb_columns = replica.schema().table(PortBinding::TABLE).and_then(|t| {
        Some((t.column_index("logical_port")?, t.column_index("chassis")?, t.column_index("parent_port")?))
    });
    for (uuid, row) in replica.rows(PortBinding::TABLE) {
        // Cheap filter on the raw row first: only ports that are local (or
        // children of a local port) or bound here need decoding (a
        // Southbound has ~10k of them).
        let Some((i_lp, i_chassis, i_parent)) = pb_columns else { break };
        let scalar = |i: usize| row.values()[i].as_scalar();
        let local = scalar(i_lp).and_then(|a| a.as_str()).is_some_and(|p| cfg.iface_ids.contains(p))
            || scalar(i_parent).and_then(|a| a.as_str()).is_some_and(|p| cfg.iface_ids.contains(p));
        let bound_here = our_uuid.is_some() && scalar(i_chassis).and_then(|a| a.as_uuid()) == our_uuid;
        if !local && !bound_here {
            continue;
        }
        let Ok(pb) = PortBinding::from_row(*uuid, row) else {
            continue;
        };
        let ours = our_uuid.is_some() && pb.chassis == our_uuid;
        // A child port (container behind a VIF, reached with its VLAN tag)
        // is bound where its parent is (binding.c `consider_container_lport`).
        let child = pb.parent_port.as_deref().is_some_and(|p| !p.is_empty());
        let here = if child {
            pb.tag.is_some() && pb.parent_port.as_ref().is_some_and(|p| cfg.iface_ids.contains(p))
        } else {
            cfg.iface_ids.contains(&pb.logical_port)
        };
        let wanted = pb.r#type.is_empty() && here && can_bind(&pb, chassis.as_ref(), cfg);
        let where_ = [Condition::uuid(pb.uuid)];
        if wanted && !ours {
            if pb.chassis.is_some() {
                if let Some(t) = throttle.get(&pb.logical_port) {
                    let at = t.last + takeover_delay(t.n);
                    if now < at {
                        p.wake = Some(p.wake.map_or(at, |w| w.min(at)));
                        continue;
                    }
                }
                p.takeovers.push(pb.logical_port.clone());
            }
            p.claims.push(pb.logical_port.clone());
            let row =
                RowValues::new().set("chassis", chassis_ref.clone()).set("encap", encap_ref.clone()).set("up", true);
            p.ops.push(Operation::update("Port_Binding", &where_, row));
        } else if wanted {
            let mut row = RowValues::new();
            if pb.up != Some(true) {
                row = row.set("up", true);
            }
            if our_encap.is_none() || pb.encap != our_encap {
                row = row.set("encap", encap_ref.clone());
            }
            if !row.is_empty() {
                p.ops.push(Operation::update("Port_Binding", &where_, row));
            }
        } else if ours {
            p.releases.push(pb.logical_port.clone());
            let row = RowValues::new().set("chassis", empty_set()).set("encap", empty_set()).set("up", false);
            p.ops.push(Operation::update("Port_Binding", &where_, row));
        }
    }

    // Chassis_Private, with the nb_cfg acknowledgement last so it covers the
    // binding changes of the same transaction.
    let private = find_by_name::<ChassisPrivate>(replica, &cfg.system_id, |c| &c.name);
    match private {
        None => {
            let mut row = RowValues::new().set("name", cfg.system_id.as_str()).set("chassis", chassis_ref);
            if ack_nb_cfg {
                row = row.set("nb_cfg", global.nb_cfg).set("nb_cfg_timestamp", now_ms());
            }
            p.ops.push(Operation::insert("Chassis_Private", row, None));
        }
        Some(cp) => {
            let mut row = RowValues::new();
            if our_uuid.is_none() || cp.chassis != our_uuid {
                row = row.set("chassis", chassis_ref);
            }
            if ack_nb_cfg && cp.nb_cfg != global.nb_cfg {
                row = row.set("nb_cfg", global.nb_cfg).set("nb_cfg_timestamp", now_ms());
            }
            if !row.is_empty() {
                p.ops.push(Operation::update("Chassis_Private", &[Condition::uuid(cp.uuid)], row));
            }
        }
    }
    p
}

/// The transaction that removes this chassis: releases its ports and
/// deletes `Chassis_Private` and `Chassis` (the `Encap` rows are not root
/// rows and go with the chassis).
pub fn removal_ops(cfg: &AgentConfig, replica: &Replica) -> Vec<Operation> {
    let mut ops = Vec::new();
    let chassis = find_by_name::<Chassis>(replica, &cfg.system_id, |c| &c.name);
    if let Some(c) = &chassis {
        for pb in PortBinding::all(replica) {
            if pb.chassis == Some(c.uuid) {
                let row = RowValues::new().set("chassis", empty_set()).set("encap", empty_set()).set("up", false);
                ops.push(Operation::update("Port_Binding", &[Condition::uuid(pb.uuid)], row));
            }
        }
    }
    ops.push(Operation::delete("Chassis_Private", &[Condition::eq("name", cfg.system_id.as_str())]));
    ops.push(Operation::delete("Chassis", &[Condition::eq("name", cfg.system_id.as_str())]));
    ops
}

/// Counters of the agent.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    /// Transactions committed.
    pub n_txns: u64,
    /// Transactions that failed.
    pub n_txn_errors: u64,
    /// Ports claimed.
    pub n_claims: u64,
    /// Ports released.
    pub n_releases: u64,
    /// Time from the replica change that made a claim necessary to the
    /// claim's commit, last claim and worst claim.
    pub claim_latency_last: Option<Duration>,
    /// See `claim_latency_last`.
    pub claim_latency_max: Option<Duration>,
    /// Monitor condition updates sent (conditional monitoring).
    pub n_monitor_updates: u64,
    /// Local datapaths at the last scope computation.
    pub n_local_datapaths: usize,
}

/// The running agent.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    session: Session,
    throttle: HashMap<String, ClaimThrottle>,
    stats: AgentStats,
    ifaces_tx: Arc<watch::Sender<BTreeSet<String>>>,
    ifaces_rx: watch::Receiver<BTreeSet<String>>,
    /// The conditions last requested (`None`: none yet, or `monitor_all`).
    conditions: Option<BTreeMap<String, Value>>,
    /// Compiles and publishes tables (with `--dataplane`).
    installer: Option<Installer>,
    /// MACs petreld learnt (`put_fdb`), from the dataplane watcher.
    learn_rx: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<LearnedMsg>>>,
    /// Learnt (datapath, port, MAC) not yet in the Southbound `FDB` table.
    pending_fdb: BTreeSet<(u32, u32, String)>,
    /// Where the counters go after each step (`--metrics-addr`).
    metrics: Option<crate::metrics::Metrics>,
}

/// Changes the local iface-ids of a running [`Agent`]: the
/// [`crate::dataplane`] watcher drives it from petreld's ports
/// (`--iface-id` sets the initial set).
#[derive(Debug, Clone)]
pub struct IfaceIds(Arc<watch::Sender<BTreeSet<String>>>);

impl IfaceIds {
    /// Replaces the set; the agent claims and releases accordingly.
    pub fn set(&self, ids: BTreeSet<String>) {
        self.0.send_replace(ids);
    }
}

/// How long to wait for our own transaction to show up in the replica
/// before planning again anyway.
const SETTLE: Duration = Duration::from_secs(2);
/// Retry delay after tables could not be published.
const INSTALL_RETRY: Duration = Duration::from_millis(500);
/// Retry delay after a failed transaction.
const RETRY: Duration = Duration::from_secs(1);

impl Agent {
    /// An agent on a started Southbound session (see [`crate::sb::check_schema`]).
    pub fn new(cfg: AgentConfig, session: Session) -> Self {
        let (tx, rx) = watch::channel(cfg.iface_ids.clone());
        Agent {
            cfg,
            session,
            throttle: HashMap::new(),
            stats: AgentStats::default(),
            ifaces_tx: Arc::new(tx),
            ifaces_rx: rx,
            conditions: None,
            installer: None,
            learn_rx: None,
            pending_fdb: BTreeSet::new(),
            metrics: None,
        }
    }

    /// Reports the session and the agent's counters in `m` (the installer
    /// needs its own [`Installer::set_metrics`]).
    pub fn set_metrics(&mut self, m: crate::metrics::Metrics) {
        m.set_session(self.session.handle());
        m.set_agent(&self.stats);
        self.metrics = Some(m);
    }

    /// Compiles the logical flows and publishes them to petreld; `nb_cfg`
    /// is then acknowledged only once petreld runs them.
    pub fn set_installer(&mut self, i: Installer) {
        self.installer = Some(i);
    }

    /// Where petreld's learnt MACs arrive ([`crate::dataplane::Watcher::with_learning`]);
    /// the agent writes them to the Southbound `FDB` table as pinctrl does.
    pub fn set_learning(&mut self, rx: tokio::sync::mpsc::UnboundedReceiver<Vec<LearnedMsg>>) {
        self.learn_rx = Some(rx);
    }

    /// The installer, if any.
    pub fn installer(&self) -> Option<&Installer> {
        self.installer.as_ref()
    }

    /// A handle to change the local iface-ids while [`Agent::run`] runs.
    pub fn iface_ids(&self) -> IfaceIds {
        IfaceIds(self.ifaces_tx.clone())
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Counters.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// Replaces the set of local iface-ids.
    pub fn set_iface_ids(&mut self, ids: BTreeSet<String>) {
        self.ifaces_tx.send_replace(ids.clone());
        self.cfg.iface_ids = ids;
    }

    /// Runs until `shutdown` completes.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut dirty = true;
        // When the first change not yet planned for arrived.
        let mut dirty_since = Some(Instant::now());
        let mut wake: Option<Instant> = None;
        // (n_updates when the last transaction was sent, deadline)
        let mut gate: Option<(u64, Instant)> = None;
        // The monitor scope needs another look (independent of the gate:
        // widening the monitor must not wait for our own transactions).
        let mut scope_dirty = true;
        loop {
            if scope_dirty && self.session.connection().is_some() {
                scope_dirty = false;
                if self.update_monitor() {
                    // The ack waits for the new rows (ConditionsSettled).
                    dirty = true;
                }
            }
            let now = Instant::now();
            if let Some((n, deadline)) = gate {
                if self.session.stats().n_updates > n || now >= deadline {
                    gate = None;
                    dirty = true;
                }
            }
            if wake.is_some_and(|w| now >= w) {
                wake = None;
                dirty = true;
            }
            if dirty && gate.is_none() && self.session.connection().is_some() {
                dirty = false;
                let since = dirty_since.take().unwrap_or(now);
                match self.step(now, since).await {
                    Step::Idle(w) => wake = w,
                    Step::Sent(n_updates) => gate = Some((n_updates, Instant::now() + SETTLE)),
                    Step::Failed => wake = Some(Instant::now() + RETRY),
                }
                if let Some(m) = &self.metrics {
                    m.set_agent(&self.stats);
                }
            }
            let timer = [wake, gate.map(|g| g.1)].into_iter().flatten().min();
            tracing::trace!(dirty, ?gate, ?wake, "agent waiting");
            tokio::select! {
                ev = self.session.next_event() => match ev {
                    Some(SessionEvent::Connected { remote, resumed }) => {
                        tracing::info!(%remote, resumed, "connected to the Southbound");
                        dirty = true;
                        scope_dirty = true;
                    }
                    Some(SessionEvent::Changes(changes)) => {
                        dirty = true;
                        // Only these tables feed the scope (`Scope::compute`).
                        scope_dirty |= changes.iter().any(|c| {
                            matches!(c.table.name.as_str(), "Port_Binding" | "Chassis" | "Datapath_Binding")
                        });
                        dirty_since.get_or_insert_with(Instant::now);
                    }
                    Some(SessionEvent::ConditionsSettled) => dirty = true,
                    Some(SessionEvent::Disconnected { .. }) => {}
                    None => return,
                },
                () = sleep_until_opt(timer) => {}
                true = installer_changed(&mut self.installer) => dirty = true,
                Some(v) = learned(&mut self.learn_rx) => {
                    self.pending_fdb.extend(v.into_iter().map(|l| (l.datapath, l.port, l.mac)));
                    dirty = true;
                }
                Ok(()) = self.ifaces_rx.changed() => {
                    self.cfg.iface_ids = self.ifaces_rx.borrow_and_update().clone();
                    dirty = true;
                    scope_dirty = true;
                    dirty_since.get_or_insert_with(Instant::now);
                }
                () = &mut shutdown => return,
            }
        }
    }

    /// Recomputes the monitor scope and requests the conditions that
    /// changed; returns whether any did.
    fn update_monitor(&mut self) -> bool {
        if self.cfg.monitor_all {
            return false;
        }
        let t0 = std::time::Instant::now();
        let scope = Scope::compute(&self.session.replica(), &self.cfg.system_id, &self.cfg.iface_ids);
        tracing::trace!(n_datapaths = scope.datapaths.len(), "scope computed in {:?}", t0.elapsed());
        self.stats.n_local_datapaths = scope.datapaths.len();
        let wanted = scope.conditions();
        let changed: BTreeMap<String, Value> = match &self.conditions {
            None => wanted.clone(),
            Some(old) => {
                wanted.iter().filter(|(t, c)| old.get(*t) != Some(*c)).map(|(t, c)| (t.clone(), c.clone())).collect()
            }
        };
        if changed.is_empty() {
            return false;
        }
        tracing::debug!(
            n_datapaths = scope.datapaths.len(),
            tables = ?changed.keys().collect::<Vec<_>>(),
            "updating monitor conditions"
        );
        self.session.set_conditions_many(changed);
        self.conditions = Some(wanted);
        self.stats.n_monitor_updates += 1;
        true
    }

    async fn step(&mut self, now: Instant, since: Instant) -> Step {
        // nb_cfg is acknowledged only when the replica reflects the
        // conditions the current scope wants.
        let mut ack = self.cfg.monitor_all || (self.conditions.is_some() && self.session.conditions_settled());
        // With a dataplane, "handled" also means "in force in petreld".
        let installed = match &mut self.installer {
            None => true,
            Some(i) => {
                let replica = self.session.replica();
                i.install(&replica, &self.cfg.system_id, &self.cfg.iface_ids)
            }
        };
        ack &= installed;
        let t_plan = std::time::Instant::now();
        let mut plan = {
            let replica = self.session.replica();
            plan(&self.cfg, &replica, &self.throttle, now, ack)
        };
        if !installed {
            let retry = now + INSTALL_RETRY;
            plan.wake = Some(plan.wake.map_or(retry, |w| w.min(retry)));
        }
        tracing::debug!(
            n_ops = plan.ops.len(), claims = ?plan.claims, releases = ?plan.releases,
            "planned in {:?}", t_plan.elapsed()
        );
        {
            let replica = self.session.replica();
            let learnt = fdb_ops(&replica, &mut self.pending_fdb);
            if !learnt.is_empty() {
                tracing::info!(n = learnt.len(), "writing learnt MACs to the FDB table");
            }
            plan.ops.extend(learnt);
        }
        if plan.ops.is_empty() {
            return Step::Idle(plan.wake);
        }
        let n_updates = self.session.stats().n_updates;
        match self.session.transact(&plan.ops).await {
            Ok(_) => {
                self.stats.n_txns += 1;
                for port in &plan.claims {
                    if plan.takeovers.contains(port) {
                        tracing::warn!(port, "taking over logical port held by another chassis");
                        let t = self.throttle.entry(port.clone()).or_insert(ClaimThrottle { last: now, n: 0 });
                        t.last = now;
                        t.n = t.n.saturating_add(1);
                    } else {
                        tracing::info!(port, "claimed logical port");
                        self.throttle.remove(port);
                    }
                    self.stats.n_claims += 1;
                }
                if !plan.claims.is_empty() {
                    let l = since.elapsed();
                    self.stats.claim_latency_last = Some(l);
                    self.stats.claim_latency_max = self.stats.claim_latency_max.max(Some(l));
                }
                for port in &plan.releases {
                    tracing::info!(port, "released logical port");
                    self.stats.n_releases += 1;
                }
                Step::Sent(n_updates)
            }
            Err(e) => {
                self.stats.n_txn_errors += 1;
                tracing::warn!("Southbound transaction failed: {e}");
                Step::Failed
            }
        }
    }

    /// Removes this chassis from the Southbound (graceful exit without
    /// `--keep-chassis-on-exit`), waiting up to `timeout` for a connection.
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] if no connection came up in time, or the
    /// transaction's error.
    pub async fn remove_chassis(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        while self.session.connection().is_none() {
            if Instant::now() >= deadline {
                return Err(Error::NotConnected);
            }
            let _ = tokio::time::timeout_at(deadline, self.session.next_event()).await;
        }
        let ops = removal_ops(&self.cfg, &self.session.replica());
        match tokio::time::timeout_at(deadline, self.session.transact(&ops)).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(Error::NotConnected),
        }
    }
}

enum Step {
    Idle(Option<Instant>),
    Sent(u64),
    Failed,
}

async fn learned(rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Vec<LearnedMsg>>>) -> Option<Vec<LearnedMsg>> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Southbound `FDB` writes for learnt MACs (pinctrl `run_put_fdb`: insert,
/// or move the row to the new port); drops from `pending` what is in place.
fn fdb_ops(replica: &Replica, pending: &mut BTreeSet<(u32, u32, String)>) -> Vec<Operation> {
    let mut ops = Vec::new();
    if pending.is_empty() {
        return ops;
    }
    let rows = crate::sb::Fdb::all(replica);
    pending.retain(|(dp, port, mac)| match rows.iter().find(|r| r.mac == *mac && r.dp_key == i64::from(*dp)) {
        Some(r) if r.port_key == i64::from(*port) => false,
        Some(r) => {
            let row = RowValues::new().set("port_key", i64::from(*port));
            ops.push(Operation::update("FDB", &[Condition::uuid(r.uuid)], row));
            true
        }
        None => {
            let row = RowValues::new()
                .set("mac", mac.as_str())
                .set("dp_key", i64::from(*dp))
                .set("port_key", i64::from(*port));
            ops.push(Operation::insert("FDB", row, None));
            true
        }
    });
    ops
}

async fn installer_changed(i: &mut Option<Installer>) -> bool {
    match i {
        Some(i) => i.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ovsdb::DatabaseSchema;
    use serde_json::{json, Value};
    use std::sync::Arc;

    const US: &str = "00000000-0000-0000-0000-0000000000c1";
    const THEM: &str = "00000000-0000-0000-0000-0000000000c2";
    const ENCAP: &str = "00000000-0000-0000-0000-0000000000e1";
    const DP: &str = "00000000-0000-0000-0000-0000000000d1";

    fn replica(port_rows: Value) -> Option<Replica> {
        let text = std::fs::read_to_string("/usr/share/ovn/ovn-sb.ovsschema").ok()?;
        let schema = DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        let mut r = Replica::new(Arc::new(schema));
        let updates = json!({
            "SB_Global": {"00000000-0000-0000-0000-000000000001": {"initial": {"nb_cfg": 7}}},
            "Chassis": {
                US: {"initial": {"name": "hv1", "hostname": "host1", "encaps": ["uuid", ENCAP],
                     "other_config": ["map", [["datapath-type", "netdev"],
                        ["iface-types", "dpdk,dpdkvhostuser,dpdkvhostuserclient,geneve"],
                        ["port-up-notif", "true"], ["theirs", "kept"]]]}},
                THEM: {"initial": {"name": "hv2", "hostname": "host2"}},
            },
            "Encap": {ENCAP: {"initial": {"type": "geneve", "ip": "192.0.2.1",
                     "options": ["map", [["csum", "true"]]], "chassis_name": "hv1"}}},
            "Chassis_Private": {"00000000-0000-0000-0000-0000000000f1":
                {"initial": {"name": "hv1", "chassis": ["uuid", US], "nb_cfg": 7}}},
            "Datapath_Binding": {DP: {"initial": {"tunnel_key": 1}}},
            "Port_Binding": port_rows,
        });
        r.apply_update2(&updates, &mut Vec::new()).unwrap();
        Some(r)
    }

    fn pb(n: u8, port: &str, extra: Value) -> (String, Value) {
        let mut row = json!({"logical_port": port, "datapath": ["uuid", DP], "tunnel_key": n});
        for (k, v) in extra.as_object().unwrap() {
            row[k] = v.clone();
        }
        (format!("00000000-0000-0000-0000-0000000001{n:02x}"), json!({"initial": row}))
    }

    fn cfg(ports: &[&str]) -> AgentConfig {
        let mut c = AgentConfig::new("hv1", "host1", "192.0.2.1");
        c.iface_ids = ports.iter().map(|p| (*p).to_owned()).collect();
        c
    }

    fn ports(rows: Vec<(String, Value)>) -> Value {
        Value::Object(rows.into_iter().collect())
    }

    #[test]
    fn test_steady_state_plans_nothing() {
        let rows = ports(vec![pb(1, "a", json!({"chassis": ["uuid", US], "encap": ["uuid", ENCAP], "up": true}))]);
        let Some(r) = replica(rows) else { return };
        let p = plan(&cfg(&["a"]), &r, &HashMap::new(), Instant::now(), true);
        assert!(p.ops.is_empty(), "{:?}", p.ops);
    }

    #[test]
    fn test_claims_release_and_requested_chassis() {
        let rows = ports(vec![
            pb(1, "free", json!({})),
            pb(2, "by-host", json!({"options": ["map", [["requested-chassis", "host1"]]]})),
            pb(3, "elsewhere", json!({"options": ["map", [["requested-chassis", "hv2"]]]})),
            pb(4, "gone", json!({"chassis": ["uuid", US], "up": true})),
            pb(5, "router", json!({"type": "patch"})),
            pb(6, "additional", json!({"options": ["map", [["requested-chassis", "hv2,hv1"]]]})),
        ]);
        let Some(r) = replica(rows) else { return };
        let p = plan(
            &cfg(&["free", "by-host", "elsewhere", "router", "additional"]),
            &r,
            &HashMap::new(),
            Instant::now(),
            true,
        );
        let mut claims = p.claims.clone();
        claims.sort();
        assert_eq!(claims, ["by-host", "free"]);
        assert_eq!(p.releases, ["gone"]);
        assert!(p.takeovers.is_empty());
        let claim = p
            .ops
            .iter()
            .find(|o| o.json()["row"]["chassis"].is_array() && o.json()["row"]["up"] == json!(true))
            .unwrap();
        assert_eq!(claim.json()["row"]["chassis"], json!(["uuid", US]));
        assert_eq!(claim.json()["row"]["encap"], json!(["uuid", ENCAP]));
    }

    #[test]
    fn test_takeover_is_throttled() {
        let rows = ports(vec![pb(1, "a", json!({"chassis": ["uuid", THEM], "up": true}))]);
        let Some(r) = replica(rows) else { return };
        let now = Instant::now();
        let p = plan(&cfg(&["a"]), &r, &HashMap::new(), now, true);
        assert_eq!(p.takeovers, ["a"]);
        let mut t = HashMap::new();
        t.insert("a".to_owned(), ClaimThrottle { last: now, n: 2 });
        let p = plan(&cfg(&["a"]), &r, &t, now + Duration::from_millis(100), true);
        assert!(p.ops.is_empty() && p.claims.is_empty());
        assert_eq!(p.wake, Some(now + Duration::from_secs(2)));
        let p = plan(&cfg(&["a"]), &r, &t, now + Duration::from_secs(2), true);
        assert_eq!(p.takeovers, ["a"]);
    }

    #[test]
    fn test_nb_cfg_ack_and_registration() {
        let Some(mut r) = replica(json!({})) else { return };
        let mut ch = Vec::new();
        r.apply_update2(
            &json!({"SB_Global": {"00000000-0000-0000-0000-000000000001": {"modify": {"nb_cfg": 8}}}}),
            &mut ch,
        )
        .unwrap();
        let p = plan(&cfg(&[]), &r, &HashMap::new(), Instant::now(), true);
        assert_eq!(p.ops.len(), 1);
        assert_eq!(p.ops[0].json()["table"], "Chassis_Private");
        assert_eq!(p.ops[0].json()["row"]["nb_cfg"], 8);
        // A new encap IP replaces the Encap row and keeps foreign other_config keys.
        let mut c = cfg(&[]);
        c.encap_ip = "192.0.2.99".to_owned();
        let p = plan(&c, &r, &HashMap::new(), Instant::now(), true);
        assert_eq!(p.ops[0].json()["op"], "insert");
        assert_eq!(p.ops[0].json()["row"]["ip"], "192.0.2.99");
        assert_eq!(p.ops[1].json()["row"]["encaps"], json!(["named-uuid", "encap"]));
        assert!(p.ops[1].json()["row"].get("other_config").is_none());
    }

    #[test]
    fn test_nb_cfg_waits_for_the_monitor() {
        let Some(mut r) = replica(json!({})) else { return };
        r.apply_update2(
            &json!({"SB_Global": {"00000000-0000-0000-0000-000000000001": {"modify": {"nb_cfg": 8}}}}),
            &mut Vec::new(),
        )
        .unwrap();
        // Conditions not settled: no acknowledgement, nothing else to do.
        let p = plan(&cfg(&[]), &r, &HashMap::new(), Instant::now(), false);
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        // A new Chassis_Private is created without acknowledging anything.
        let mut c = cfg(&[]);
        c.system_id = "hv9".to_owned();
        let p = plan(&c, &r, &HashMap::new(), Instant::now(), false);
        let cp = p.ops.iter().find(|o| o.json()["table"] == "Chassis_Private").unwrap();
        assert!(cp.json()["row"].get("nb_cfg").is_none());
    }

    #[test]
    fn test_takeover_backoff_is_bounded() {
        assert_eq!(takeover_delay(0), CLAIM_BACKOFF_MIN);
        assert_eq!(takeover_delay(1), Duration::from_secs(1));
        assert_eq!(takeover_delay(100), CLAIM_BACKOFF_MAX);
    }
}
