//! The ports of a running `petreld`: their devices, which PMD polls what,
//! and adding or removing them at runtime (`petrelctl add-port`/`del-port`).
//!
//! A port lives in a **slot**: its index in the tables (`Binding::Local`),
//! the counters and `petrelctl show`. Configured ports take slots `0..n` in
//! plan order; a port added at runtime takes the next free slot after the
//! last one given (round robin), so a removed port's slot is reused as late
//! as possible. Tables that bind an empty slot, or a slot to another
//! iface-id than its port declares, are refused when published (see
//! [`PortSet::check_binding`]), so a new pod does not receive an old pod's
//! traffic. (Not covered: a slot reused after wrapping around, by a port
//! without an iface-id, bound by tables compiled before; a per-slot
//! incarnation number in the tables would close that.)
//!
//! Queue placement is the same for configured and added ports: rx queue 0
//! of DPDK port `i` is polled by PMD `i % n_pmd`, queue pair `q` of
//! vhost-user port `i` by PMD `(i + q) % n_pmd`; every PMD has its own tx
//! queue on every port.
//!
//! Adding: open the device (bind the vhost-user socket, or probe and start
//! the ethdev), send every PMD a [`PortUpdate::Attach`], wait for all of
//! them, then publish the entry (so `show`, and petrel-ovn's claim, only see
//! a port that is polled). Removing: the caller first takes the port out of
//! the tables; then every PMD is sent [`PortUpdate::Detach`] and waited for,
//! and only then is the device closed (vhost-user: connection closed, guest
//! memory unmapped, server socket file removed; ethdev: stopped, closed,
//! detached). Other ports keep forwarding throughout.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use petrel_vhost_user::backend::{Backend, Mode, PortConfig};
use petrel_vhost_user::Port as VhostPort;

use crate::config::{parse_port_spec, plan_port, Plan, PlanPort, PortKind, Role};
use crate::mbuf::Mempool;
use crate::pmd::{PmdLink, PortUpdate, MAX_PORTS};
use crate::port::vhost::VhostQueue;
use crate::port::{EthPort, PortConf, QueueHandle};

/// The file runtime ports are remembered in.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct PortsFile {
    /// `--port` specs, in the order they were added.
    ports: Vec<String>,
}

/// How long a PMD may take to apply a port change.
const PMD_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A port as the control side sees it.
#[derive(Debug, Clone)]
pub struct PortEntry {
    /// Name, kind, VLAN tag, iface-id and static role.
    pub spec: PlanPort,
    /// The vhost-user port, for its connection state and counters.
    pub vhost: Option<Arc<VhostPort>>,
    /// Added at runtime (not in the configuration): the spec it was added with.
    pub runtime: Option<String>,
}

/// What backs a slot.
enum Device {
    Eth(EthPort),
    Vhost(Arc<VhostPort>),
    /// A Geneve tunnel port (sends through its uplink).
    None,
}

struct Inner {
    devices: Vec<Option<Device>>,
    /// Slots whose device could not be confirmed unused by every PMD.
    poisoned: Vec<usize>,
    /// Where the search for a free slot starts.
    next_slot: usize,
    backend: Option<Backend>,
    links: Vec<PmdLink>,
    pool: Arc<Mempool>,
    n_pmd: usize,
    /// Minimum TSC ticks between two interrupts of one vhost-user ring.
    call_interval: u64,
}

/// The running node's ports.
pub struct PortSet {
    entries: RwLock<Vec<Option<PortEntry>>>,
    inner: Mutex<Inner>,
    /// Where runtime ports are remembered across restarts.
    persist: Mutex<Option<std::path::PathBuf>>,
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortSet").field("entries", &self.entries).finish_non_exhaustive()
    }
}

impl PortSet {
    /// Opens the plan's ports for `n_pmd` PMDs.
    ///
    /// # Errors
    /// A device that does not open.
    pub fn open(plan: &Plan, pool: Arc<Mempool>, n_pmd: usize, tsc_hz: u64) -> Result<Self> {
        if plan.ports.len() > MAX_PORTS {
            bail!("{} ports: at most {MAX_PORTS}", plan.ports.len());
        }
        let mut inner = Inner {
            devices: Vec::new(),
            poisoned: Vec::new(),
            next_slot: plan.ports.len(),
            backend: None,
            links: Vec::new(),
            pool,
            n_pmd: n_pmd.max(1),
            // At most one interrupt per ring every that many µs.
            call_interval: tsc_hz / 1_000_000 * plan.vhost_call_interval_us,
        };
        let mut entries = Vec::new();
        for p in &plan.ports {
            let (dev, vhost) = inner.open_device(p)?;
            inner.devices.push(Some(dev));
            entries.push(Some(PortEntry { spec: p.clone(), vhost, runtime: None }));
        }
        Ok(PortSet { entries: RwLock::new(entries), inner: Mutex::new(inner), persist: Mutex::new(None) })
    }

    /// Remembers runtime ports in `path` (rewritten after every add and
    /// remove) and adds back those it lists now, as a restarted petreld must
    /// (a pod's port survives a petreld restart). Returns what was restored
    /// and what failed (the failures are forgotten).
    pub fn restore(&self, path: &std::path::Path) -> (Vec<String>, Vec<(String, String)>) {
        let specs: Vec<String> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<PortsFile>(&b).ok())
            .map(|f| f.ports)
            .unwrap_or_default();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for s in specs {
            match self.add(&s) {
                Ok(_) => ok.push(s),
                Err(e) => failed.push((s, format!("{e:#}"))),
            }
        }
        // Only now: a crash while restoring must not forget the rest.
        if let Ok(mut p) = self.persist.lock() {
            *p = Some(path.to_owned());
        }
        self.save();
        (ok, failed)
    }

    /// Writes the runtime ports' specs (write to a temporary file, rename).
    fn save(&self) {
        // Held while the list is read and written: concurrent adds and
        // removes write one after the other.
        let Ok(guard) = self.persist.lock() else { return };
        let Some(path) = guard.clone() else { return };
        let ports = self.entries().into_iter().flatten().filter_map(|e| e.runtime).collect();
        let Ok(text) = serde_json::to_vec_pretty(&PortsFile { ports }) else { return };
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
            tracing::warn!(file = %path.display(), "cannot write the ports file: runtime ports will not survive a restart");
        }
    }

    /// PMD `pmd`'s handles: its tx side of every slot (`None` for tunnel
    /// ports), and the rx queues it polls as (slot, queue).
    pub fn pmd_queues(&self, pmd: usize) -> (Vec<Option<QueueHandle>>, Vec<(usize, QueueHandle)>) {
        let Ok(inner) = self.inner.lock() else { return (Vec::new(), Vec::new()) };
        let mut tx = Vec::new();
        let mut rx = Vec::new();
        for (i, d) in inner.devices.iter().enumerate() {
            let (t, r) = d.as_ref().map(|d| inner.queues(d, i, pmd)).unwrap_or_default();
            tx.push(t);
            rx.extend(r.into_iter().map(|q| (i, q)));
        }
        (tx, rx)
    }

    /// Each slot's MAC address (zero but for DPDK ports).
    pub fn macs(&self) -> Vec<[u8; 6]> {
        let Ok(inner) = self.inner.lock() else { return Vec::new() };
        inner.devices.iter().map(|d| if let Some(Device::Eth(p)) = d { p.mac() } else { [0; 6] }).collect()
    }

    /// The PMDs' update channels, in PMD order (once they are spawned).
    pub fn set_links(&self, links: Vec<PmdLink>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.links = links;
        }
    }

    /// A copy of the slots.
    pub fn entries(&self) -> Vec<Option<PortEntry>> {
        self.entries.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// Slot of a port by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        let e = self.entries.read().ok()?;
        e.iter().position(|p| p.as_ref().is_some_and(|p| p.spec.name == name))
    }

    /// Whether tables may bind slot `slot` to the logical port named
    /// `logical` (`None` when the binding is not by name, e.g. a localnet
    /// uplink): the slot must hold a port, and one that declares an
    /// iface-id must declare this one.
    ///
    /// # Errors
    /// Why not, for the publisher.
    pub fn check_binding(&self, slot: usize, logical: Option<&str>) -> Result<(), String> {
        let e = self.entries.read().map_err(|_| "port set poisoned".to_owned())?;
        match e.get(slot) {
            Some(Some(p)) => match (&p.spec.iface_id, logical) {
                (Some(id), Some(lp)) if id != lp => Err(format!(
                    "port {slot} ({}) is iface-id {id:?}, not logical port {lp:?} (the port was replaced)",
                    p.spec.name
                )),
                _ => Ok(()),
            },
            _ => Err(format!("there is no port {slot} (removed?)")),
        }
    }

    /// Adds a port given as a `--port` spec; returns its slot and entry once
    /// every PMD polls it.
    ///
    /// # Errors
    /// A bad spec, a name in use, no free slot, a device that does not open,
    /// a PMD that does not answer.
    pub fn add(&self, spec: &str) -> Result<(usize, PortEntry)> {
        let r = self.add_(spec);
        if r.is_ok() {
            self.save();
        }
        r
    }

    fn add_(&self, text: &str) -> Result<(usize, PortEntry)> {
        let spec = plan_port(&parse_port_spec(text)?)?;
        let mut inner = self.inner.lock().map_err(|_| anyhow!("port set poisoned"))?;
        let slot = {
            let e = self.entries.read().map_err(|_| anyhow!("port set poisoned"))?;
            if e.iter().flatten().any(|p| p.spec.name == spec.name) {
                bail!("a port named {:?} exists", spec.name);
            }
            if let Some(id) = &spec.iface_id {
                if let Some(p) = e.iter().flatten().find(|p| p.spec.iface_id.as_ref() == Some(id)) {
                    bail!("port {:?} already has iface-id {id:?}", p.spec.name);
                }
            }
            if let PortKind::VhostUser { path, .. } = &spec.kind {
                if let Some(p) = e
                    .iter()
                    .flatten()
                    .find(|p| matches!(&p.spec.kind, PortKind::VhostUser { path: q, .. } if q == path))
                {
                    bail!("port {:?} already uses {}", p.spec.name, path.display());
                }
            }
            // The next free slot after the last one given (round robin), so
            // a removed port's slot is reused as late as possible.
            let usable = |i: usize| e.get(i).is_none_or(Option::is_none) && !inner.poisoned.contains(&i);
            let start = inner.next_slot;
            let free = (0..MAX_PORTS).map(|k| (start + k) % MAX_PORTS).find(|&i| usable(i));
            let Some(free) = free else { bail!("no free port slot (at most {MAX_PORTS} ports)") };
            inner.next_slot = free + 1;
            free
        };
        let (dev, vhost) = inner.open_device(&spec)?;
        if inner.devices.len() <= slot {
            inner.devices.resize_with(slot + 1, || None);
        }
        let sent = inner.attach(slot, &spec, &dev);
        inner.devices[slot] = Some(dev);
        if let Err(e) = sent {
            // Some PMDs may poll it: take it away from all before closing;
            // if that cannot be confirmed, leave the device open and the
            // slot unusable rather than risk a PMD touching a closed one.
            if inner.detach(slot).is_ok() {
                inner.close(slot, &spec.name);
            } else {
                inner.poisoned.push(slot);
            }
            bail!("adding port {:?}: {e}", spec.name);
        }
        let entry = PortEntry { spec, vhost, runtime: Some(text.to_owned()) };
        let mut e = self.entries.write().map_err(|_| anyhow!("port set poisoned"))?;
        if e.len() <= slot {
            e.resize_with(slot + 1, || None);
        }
        e[slot] = Some(entry.clone());
        Ok((slot, entry))
    }

    /// The slot of port `name` if it can be removed at runtime.
    ///
    /// # Errors
    /// No such port; a port with a static role (cross-connect, bridge,
    /// Geneve tunnel or uplink).
    pub fn removable(&self, name: &str) -> Result<usize> {
        let e = self.entries.read().map_err(|_| anyhow!("port set poisoned"))?;
        let slot = e
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.spec.name == name))
            .ok_or_else(|| anyhow!("no port {name:?}"))?;
        let entry = e[slot].as_ref().ok_or_else(|| anyhow!("no port {name:?}"))?;
        if entry.spec.role != Role::None || matches!(entry.spec.kind, PortKind::Geneve(_)) {
            bail!(
                "port {name:?} is cross-connected, bridged or a tunnel in the configuration: not removable at runtime"
            );
        }
        if let Some(t) = e.iter().flatten().find(|p| matches!(&p.spec.kind, PortKind::Geneve(g) if g.uplink == slot)) {
            bail!("port {name:?} is the uplink of tunnel {:?}: not removable at runtime", t.spec.name);
        }
        Ok(slot)
    }

    /// Removes a port by name: the PMDs stop using it, then its device is
    /// closed. The caller has taken it out of the tables. Returns its slot
    /// and entry.
    ///
    /// # Errors
    /// No such port; a port with a static role (cross-connect, bridge,
    /// Geneve tunnel or uplink) cannot be removed at runtime; a PMD that
    /// does not answer (the port is then left in place).
    pub fn remove(&self, name: &str) -> Result<(usize, PortEntry)> {
        let mut inner = self.inner.lock().map_err(|_| anyhow!("port set poisoned"))?;
        let slot = self.removable(name)?;
        let entry = self.entries().get(slot).cloned().flatten().ok_or_else(|| anyhow!("no port {name:?}"))?;
        inner.detach(slot).map_err(|e| anyhow!("removing port {name:?}: {e}"))?;
        if let Ok(mut e) = self.entries.write() {
            e[slot] = None;
        }
        inner.close(slot, name);
        drop(inner);
        self.save();
        Ok((slot, entry))
    }

    /// Closes every device (after the PMDs have stopped): ethdevs, then the
    /// vhost-user management thread (closing pod connections and unmapping
    /// their memory). Returns the vhost-user ports, for final counters.
    pub fn close_all(&self) -> Vec<Arc<VhostPort>> {
        let mut out = Vec::new();
        if let Ok(mut inner) = self.inner.lock() {
            for d in inner.devices.drain(..).flatten() {
                if let Device::Vhost(p) = d {
                    out.push(p);
                }
            }
            inner.backend = None;
        }
        out
    }

    /// Driver counters of the DPDK ports, by name.
    pub fn eth_stats(&self) -> Vec<(String, crate::port::EthStats)> {
        let Ok(inner) = self.inner.lock() else { return Vec::new() };
        inner
            .devices
            .iter()
            .flatten()
            .filter_map(|d| if let Device::Eth(p) = d { Some((p.name().to_owned(), p.xstats())) } else { None })
            .collect()
    }
}

impl Inner {
    fn open_device(&mut self, p: &PlanPort) -> Result<(Device, Option<Arc<VhostPort>>)> {
        Ok(match &p.kind {
            PortKind::Dpdk { devargs } => {
                let conf = PortConf {
                    name: p.name.clone(),
                    devargs: devargs.clone(),
                    n_rxq: 1,
                    n_txq: u16::try_from(self.n_pmd).context("too many PMDs")?,
                    n_rxd: 1024,
                    n_txd: 1024,
                };
                (Device::Eth(EthPort::open(&conf, &self.pool)?), None)
            }
            PortKind::VhostUser { path, client, queues } => {
                let interval = self.call_interval;
                let backend = self.backend.get_or_insert_with(|| Backend::start(interval));
                let mode = if *client { Mode::Client } else { Mode::Server };
                let cfg = PortConfig { name: p.name.clone(), path: path.clone(), mode, queues: *queues };
                let port = backend.add_port(cfg)?;
                (Device::Vhost(Arc::clone(&port)), Some(port))
            }
            PortKind::Geneve(_) => (Device::None, None),
        })
    }

    /// PMD `pmd`'s tx side of slot `i` and the rx queues of it it polls.
    fn queues(&self, d: &Device, i: usize, pmd: usize) -> (Option<QueueHandle>, Vec<QueueHandle>) {
        let txq = u16::try_from(pmd).unwrap_or(0);
        match d {
            Device::Eth(p) => {
                let rx = if i % self.n_pmd == pmd { vec![p.queue(Some(0), txq)] } else { Vec::new() };
                (Some(p.queue(None, txq)), rx)
            }
            Device::Vhost(port) => {
                let vq = |rxq| QueueHandle::Vhost(VhostQueue::new(Arc::clone(port), Arc::clone(&self.pool), rxq, txq));
                let rx = (0..port.n_qp()).filter(|q| (i + usize::from(*q)) % self.n_pmd == pmd).map(|q| vq(Some(q)));
                (Some(vq(None)), rx.collect())
            }
            Device::None => (None, Vec::new()),
        }
    }

    fn attach(&mut self, slot: usize, spec: &PlanPort, dev: &Device) -> Result<(), String> {
        for pmd in 0..self.links.len() {
            let (tx, rx) = self.queues(dev, slot, pmd);
            self.links[pmd].send(PortUpdate::Attach { index: slot, vlan: spec.vlan, tx, rx })?;
        }
        self.links.iter().try_for_each(|l| l.wait(PMD_ACK_TIMEOUT))
    }

    /// Takes slot `slot` away from every PMD and waits for all of them;
    /// an error means some PMD may still use the device, which must then
    /// stay open.
    fn detach(&mut self, slot: usize) -> Result<(), String> {
        let mut err = None;
        for l in &mut self.links {
            if let Err(e) = l.send(PortUpdate::Detach { index: slot }) {
                err.get_or_insert(e);
            }
        }
        for l in &self.links {
            if let Err(e) = l.wait(PMD_ACK_TIMEOUT) {
                err.get_or_insert(e);
            }
        }
        err.map_or(Ok(()), Err)
    }

    fn close(&mut self, slot: usize, name: &str) {
        match self.devices.get_mut(slot).and_then(Option::take) {
            Some(Device::Vhost(_)) => {
                if let Some(b) = &self.backend {
                    let _ = b.del_port(name);
                }
            }
            Some(Device::Eth(p)) => drop(p),
            Some(Device::None) | None => {}
        }
    }
}
