//! petreld's control side of the per-port features: keeps the policers,
//! mirrors and capture sessions configured over the control socket, and
//! publishes to each PMD the [`Features`] it applies.
//!
//! Runs on control-socket threads only. Every change rebuilds each PMD's
//! `Features` from the whole configuration and swaps it in (RCU); the PMDs
//! pick it up between bursts and keep their bucket state, so a change is
//! live and loses no conforming packet.
//!
//! Configuration is by port *name*: a port removed loses its operator
//! settings, mirrors and captures ([`FeatureCtl::forget`]); OVN's policers
//! stay keyed by name and apply again if a port of that name comes back.
//!
//! Remote mirror sessions (OVN's Southbound `Mirror`, handed over whole by
//! petrel-ovn with `mirror sync`) are kept by mirror name; each has a
//! session slot (an index into the PMDs' [`Features::remote`]) and
//! counters that survive a sync which leaves the session as it was. The
//! ERSPAN sequence number is one counter for all sessions, as in OVS
//! ([`crate::pmd::features`]). A session petreld cannot
//! run (an unparsable sink, an index the type cannot carry, more than
//! [`MAX_REMOTE`] sessions) is kept with the reason and listed by
//! `petrelctl mirror list`, and copies nothing.
//!
//! How a policer is split between PMDs is documented in [`crate::qos`]:
//! ingress between the PMDs polling one of the port's rx queues (the
//! placement rule of [`crate::portset`]), egress between all PMDs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::capture::{CaptureRing, DEFAULT_SLOTS, DEFAULT_SNAPLEN};
use crate::config::PortKind;
use crate::ctl::features::{
    hex, CaptureReply, CaptureRequest, CapturedMsg, Direction, MirrorInfo, MirrorReply, MirrorRequest, QosPortInfo,
    QosReply, QosRequest, RemoteMirror, RemoteMirrorInfo,
};
use crate::ctl::proto::ErrorReply;
use crate::pmd::features::{
    Features, FeaturesHandle, FeaturesShared, RemoteCounters, RemoteSink, MAX_MIRRORS, MAX_REMOTE,
};
use crate::port::eal::rdtsc;
use crate::portset::{PortEntry, PortSet};
use crate::qos::PortQos;

/// A capture session not read for this long is stopped.
pub const CAPTURE_IDLE: Duration = Duration::from_secs(10);
/// Longest a `capture read` waits for a first frame.
const MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Session {
    port: String,
    direction: Direction,
    rings: Vec<Arc<CaptureRing>>,
    /// Held while the rings are read: each ring has one reader at a time
    /// (two clients reading one session take turns).
    reader: Arc<Mutex<()>>,
    snaplen: usize,
    tsc0: u64,
    ns0: u64,
    last_read: Instant,
}

/// A remote mirror session from OVN.
#[derive(Debug)]
struct Remote {
    mirror: RemoteMirror,
    /// Why it does not run, or its session slot and what the PMDs get.
    run: Result<(usize, RemoteSink), String>,
}

/// Checks a session and gives it a slot (`used`: slots taken), the ERSPAN
/// sequence counter `seq` and the instance number `instance`.
fn remote_run(
    m: &RemoteMirror,
    used: &[bool],
    seq: &Arc<AtomicU32>,
    instance: u64,
) -> Result<(usize, RemoteSink), String> {
    let index = m.kind.check_index(m.index).map_err(|e| e.to_string())?;
    let ip: IpAddr = m.sink.trim().parse().map_err(|_| format!("sink {:?} is not an IP address", m.sink))?;
    if !matches!(m.direction, Direction::Ingress | Direction::Egress) {
        return Err("filter must be from-lport or to-lport".into());
    }
    let slot = used.iter().position(|u| !u).ok_or_else(|| format!("more than {MAX_REMOTE} remote mirrors"))?;
    Ok((slot, RemoteSink { kind: m.kind, ip: crate::underlay::ip16(ip), index, seq: Arc::clone(seq), instance }))
}

#[derive(Debug, Default)]
struct State {
    qos_ctl: BTreeMap<String, PortQos>,
    qos_ovn: BTreeMap<String, PortQos>,
    mirrors: Vec<MirrorInfo>,
    remote: Vec<Remote>,
    /// The ERSPAN sequence counter of every session (OVS: one per
    /// datapath, the `erspan_sys` port's), and the last session instance.
    erspan_seq: Arc<AtomicU32>,
    remote_instances: u64,
    captures: BTreeMap<u64, Session>,
    next_id: u64,
}

/// The features of a running petreld.
#[derive(Debug)]
pub struct FeatureCtl {
    ports: Arc<PortSet>,
    pmds: Vec<(FeaturesHandle, Arc<FeaturesShared>)>,
    tsc_hz: u64,
    state: Mutex<State>,
    /// Bumped whenever the remote sinks change ([`FeatureCtl::remote_sinks`]).
    remote_gen: AtomicU64,
}

fn rejected(s: impl Into<String>) -> ErrorReply {
    ErrorReply::rejected(s.into())
}

impl FeatureCtl {
    /// Over these ports and the PMDs' handles (in PMD order); starts the
    /// thread that stops abandoned capture sessions.
    pub fn new(ports: Arc<PortSet>, pmds: Vec<(FeaturesHandle, Arc<FeaturesShared>)>, tsc_hz: u64) -> Arc<Self> {
        let me = Arc::new(FeatureCtl {
            ports,
            pmds,
            tsc_hz,
            state: Mutex::new(State::default()),
            remote_gen: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&me);
        let _ = std::thread::Builder::new().name("capture-reaper".into()).spawn(move || reaper(&weak));
        me
    }

    fn n_pmd(&self) -> usize {
        self.pmds.len().max(1)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, ErrorReply> {
        self.state.lock().map_err(|_| rejected("feature state poisoned"))
    }

    /// The slot and entry of port `name`, if it can have features.
    fn port(&self, name: &str) -> Result<(usize, PortEntry), ErrorReply> {
        let slot = self.ports.index(name).ok_or_else(|| ErrorReply::not_found(format!("no port {name:?}")))?;
        let e = self
            .ports
            .entries()
            .get(slot)
            .cloned()
            .flatten()
            .ok_or_else(|| ErrorReply::not_found(format!("no port {name:?}")))?;
        if matches!(e.spec.kind, PortKind::Geneve(_)) {
            return Err(rejected(format!(
                "port {name:?} is a Geneve tunnel: police, mirror or capture its uplink or the pods' ports"
            )));
        }
        Ok((slot, e))
    }

    /// The PMDs polling an rx queue of `slot` (`portset`'s placement).
    fn rx_pmds(&self, slot: usize, e: &PortEntry) -> Vec<usize> {
        let n = self.n_pmd();
        let mut v: Vec<usize> = match &e.spec.kind {
            PortKind::Dpdk { .. } => vec![slot % n],
            PortKind::VhostUser { queues, .. } => (0..usize::from(*queues).max(1)).map(|q| (slot + q) % n).collect(),
            PortKind::Geneve(_) => Vec::new(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Rebuilds and publishes every PMD's features.
    fn publish(&self, st: &State) {
        let entries = self.ports.entries();
        let n = self.n_pmd();
        let mut per_pmd: Vec<Features> = (0..self.pmds.len()).map(|_| Features::default()).collect();
        let mut capture_dirs = vec![(false, false); per_pmd.first().map_or(0, |f| f.ports.len())];
        let names: BTreeMap<&str, usize> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (e.spec.name.as_str(), i)))
            .filter(|(_, i)| *i < capture_dirs.len())
            .collect();
        for (&name, &slot) in &names {
            let Some(Some(e)) = entries.get(slot) else { continue };
            if matches!(e.spec.kind, PortKind::Geneve(_)) {
                continue;
            }
            let q = effective(st, name);
            let rx = self.rx_pmds(slot, e);
            for (j, f) in per_pmd.iter_mut().enumerate() {
                let pf = &mut f.ports[slot];
                pf.police_rx = q.ingress.and_then(|r| {
                    let k = rx.iter().position(|&p| p == j)?;
                    r.profile(k, rx.len(), self.tsc_hz).ok()
                });
                pf.police_tx = q.egress.and_then(|r| r.profile(j, n, self.tsc_hz).ok());
            }
        }
        for m in &st.mirrors {
            let (Some(&s), Some(&d)) = (names.get(m.src.as_str()), names.get(m.dst.as_str())) else { continue };
            let (rx, tx) = m.direction.sides();
            let d = u16::try_from(d).unwrap_or(u16::MAX);
            for f in &mut per_pmd {
                let pf = &mut f.ports[s];
                if rx && pf.mirror_rx.len() < MAX_MIRRORS {
                    pf.mirror_rx.push(d);
                }
                if tx && pf.mirror_tx.len() < MAX_MIRRORS {
                    pf.mirror_tx.push(d);
                }
            }
        }
        let mut remote: Vec<Option<RemoteSink>> = vec![None; MAX_REMOTE];
        for r in &st.remote {
            let Ok((id, sink)) = &r.run else { continue };
            remote[*id] = Some(sink.clone());
            let id8 = u8::try_from(*id).expect("MAX_REMOTE fits u8");
            let (rx, tx) = r.mirror.direction.sides();
            for port in &r.mirror.ports {
                let Some(&s) = names.get(port.as_str()) else { continue };
                for f in &mut per_pmd {
                    let pf = &mut f.ports[s];
                    if rx && pf.remote_rx.len() < MAX_REMOTE {
                        pf.remote_rx.push(id8);
                    }
                    if tx && pf.remote_tx.len() < MAX_REMOTE {
                        pf.remote_tx.push(id8);
                    }
                }
            }
        }
        for f in &mut per_pmd {
            f.remote.clone_from(&remote);
        }
        for c in st.captures.values() {
            let Some(&s) = names.get(c.port.as_str()) else { continue };
            capture_dirs[s] = c.direction.sides();
            for (f, r) in per_pmd.iter_mut().zip(&c.rings) {
                f.ports[s].capture = Some(Arc::clone(r));
            }
        }
        for ((h, _), mut f) in self.pmds.iter().zip(per_pmd) {
            f.seal(&capture_dirs);
            h.store(Arc::new(f));
        }
    }

    /// Republishes (after a port was added: settings by name may now apply).
    pub fn republish(&self) {
        if let Ok(st) = self.state.lock() {
            self.publish(&st);
        }
    }

    /// Drops what is configured on port `name` (it is being removed), and
    /// has the PMDs stop applying it.
    pub fn forget(&self, name: &str) {
        if let Ok(mut st) = self.state.lock() {
            st.qos_ctl.remove(name);
            st.mirrors.retain(|m| m.src != name && m.dst != name);
            st.captures.retain(|_, c| c.port != name);
            self.publish(&st);
        }
    }

    fn qos_info(&self, st: &State, name: &str) -> Option<QosPortInfo> {
        let slot = self.ports.index(name)?;
        let e = self.ports.entries().get(slot).cloned().flatten()?;
        let ctl = st.qos_ctl.get(name).copied().unwrap_or_default();
        let ovn = st.qos_ovn.get(name).copied().unwrap_or_default();
        let effective = effective(st, name);
        if effective.is_empty() && ctl.is_empty() && ovn.is_empty() {
            return None;
        }
        let mut info = QosPortInfo {
            port: name.to_owned(),
            index: u16::try_from(slot).unwrap_or(u16::MAX),
            ctl,
            ovn,
            effective,
            ingress_pmds: if effective.ingress.is_some() { self.rx_pmds(slot, &e).len() } else { 0 },
            egress_pmds: if effective.egress.is_some() { self.n_pmd() } else { 0 },
            ..QosPortInfo::default()
        };
        for (_, sh) in &self.pmds {
            let c = sh.port(slot);
            info.ingress_policed += c.policed_rx;
            info.ingress_policed_bytes += c.policed_rx_bytes;
            info.egress_policed += c.policed_tx;
            info.egress_policed_bytes += c.policed_tx_bytes;
        }
        Some(info)
    }

    /// A `qos` request.
    ///
    /// # Errors
    /// Unknown port, a policer that cannot be split between the PMDs.
    pub fn qos(&self, req: QosRequest) -> Result<QosReply, ErrorReply> {
        let mut st = self.lock()?;
        let only = match req {
            QosRequest::Set { port, qos } => {
                self.port(&port)?;
                if qos.is_empty() {
                    return Err(rejected("give --ingress-rate and/or --egress-rate"));
                }
                qos.validate(self.n_pmd()).map_err(|e| rejected(format!("port {port:?}: {e}")))?;
                let cur = st.qos_ctl.entry(port.clone()).or_default();
                if qos.ingress.is_some() {
                    cur.ingress = qos.ingress;
                }
                if qos.egress.is_some() {
                    cur.egress = qos.egress;
                }
                self.publish(&st);
                Some(port)
            }
            QosRequest::Clear { port, direction } => {
                self.port(&port)?;
                let (i, e) = direction.sides();
                if let Some(cur) = st.qos_ctl.get_mut(&port) {
                    if i {
                        cur.ingress = None;
                    }
                    if e {
                        cur.egress = None;
                    }
                    if cur.is_empty() {
                        st.qos_ctl.remove(&port);
                    }
                }
                self.publish(&st);
                Some(port)
            }
            QosRequest::Sync { ports } => {
                // A policer OVN asks for that cannot be split between the
                // PMDs (below 1 bit/s per PMD) is not applied.
                let n = self.n_pmd();
                st.qos_ovn = ports.into_iter().filter(|(_, q)| !q.is_empty() && q.validate(n).is_ok()).collect();
                self.publish(&st);
                None
            }
            QosRequest::Show => None,
        };
        let mut names: Vec<String> = st.qos_ctl.keys().chain(st.qos_ovn.keys()).cloned().collect();
        names.sort();
        names.dedup();
        if let Some(p) = &only {
            names.retain(|n| n == p);
        }
        Ok(QosReply { ports: names.iter().filter_map(|n| self.qos_info(&st, n)).collect() })
    }

    fn mirror_reply(&self, st: &State) -> MirrorReply {
        let mut copies = BTreeMap::new();
        for m in &st.mirrors {
            if let Some(slot) = self.ports.index(&m.src) {
                let (mut a, mut b) = (0, 0);
                for (_, sh) in &self.pmds {
                    let c = sh.port(slot);
                    a += c.mirrored;
                    b += c.mirror_failed;
                }
                copies.insert(m.src.clone(), (a, b));
            }
        }
        let remote = st
            .remote
            .iter()
            .map(|r| {
                let mut c = RemoteCounters::default();
                if let Ok((id, _)) = &r.run {
                    for (_, sh) in &self.pmds {
                        c.add(&sh.remote(*id));
                    }
                }
                RemoteMirrorInfo {
                    mirror: Some(r.mirror.clone()),
                    refused: r.run.as_ref().err().cloned(),
                    copies: c.copies,
                    no_mbuf: c.no_mbuf,
                    unresolved: c.unresolved,
                    no_route: c.no_route,
                    too_big: c.too_big,
                }
            })
            .collect();
        MirrorReply { mirrors: st.mirrors.clone(), copies, remote }
    }

    /// The sinks of the running remote mirrors, and a number that changes
    /// whenever they do (petreld's main loop wants their next hops'
    /// MACs learnt).
    pub fn remote_sinks(&self) -> (u64, Vec<IpAddr>) {
        let g = self.remote_gen.load(Ordering::Relaxed);
        let ips = self.state.lock().map_or_else(
            |_| Vec::new(),
            |st| {
                st.remote
                    .iter()
                    .filter_map(|r| r.run.as_ref().ok())
                    .map(|(_, s)| crate::underlay::ip_of(&s.ip))
                    .collect()
            },
        );
        (g, ips)
    }

    /// Replaces the remote sessions, keeping the slot and sequence counter
    /// of each session that did not change.
    fn sync_remote(&self, st: &mut State, want: Vec<RemoteMirror>) {
        let mut old = std::mem::take(&mut st.remote);
        let mut used = vec![false; MAX_REMOTE];
        let mut kept: Vec<Option<Remote>> = want
            .iter()
            .map(|m| {
                let same = |o: &Remote| {
                    o.run.is_ok()
                        && o.mirror.name == m.name
                        && o.mirror.kind == m.kind
                        && o.mirror.sink == m.sink
                        && o.mirror.index == m.index
                };
                let i = old.iter().position(same)?;
                let mut o = old.swap_remove(i);
                if let Ok((id, _)) = &o.run {
                    used[*id] = true;
                }
                o.mirror = m.clone();
                Some(o)
            })
            .collect();
        for (k, m) in kept.iter_mut().zip(want) {
            if k.is_none() {
                st.remote_instances += 1;
                let run = remote_run(&m, &used, &st.erspan_seq, st.remote_instances);
                if let Ok((id, _)) = &run {
                    used[*id] = true;
                }
                *k = Some(Remote { mirror: m, run });
            }
        }
        st.remote = kept.into_iter().flatten().collect();
        self.remote_gen.fetch_add(1, Ordering::Relaxed);
    }

    /// A `mirror` request.
    ///
    /// # Errors
    /// Unknown port, a port mirrored to itself, too many mirrors.
    pub fn mirror(&self, req: MirrorRequest) -> Result<MirrorReply, ErrorReply> {
        let mut st = self.lock()?;
        match req {
            MirrorRequest::Add { src, dst, direction } => {
                self.port(&src)?;
                self.port(&dst)?;
                if src == dst {
                    return Err(rejected("a port cannot be mirrored to itself"));
                }
                st.mirrors.retain(|m| !(m.src == src && m.dst == dst));
                let (rx, tx) = direction.sides();
                let n = |want: bool, d: &dyn Fn(Direction) -> bool| {
                    want && st.mirrors.iter().filter(|m| m.src == src && d(m.direction)).count() >= MAX_MIRRORS
                };
                if n(rx, &|d| d.sides().0) || n(tx, &|d| d.sides().1) {
                    return Err(rejected(format!("port {src:?} has {MAX_MIRRORS} mirrors already")));
                }
                st.mirrors.push(MirrorInfo { src, dst, direction });
            }
            MirrorRequest::Del { src, dst } => {
                let before = st.mirrors.len();
                st.mirrors.retain(|m| !(m.src == src && dst.as_ref().is_none_or(|d| *d == m.dst)));
                if st.mirrors.len() == before {
                    return Err(ErrorReply::not_found(format!("no mirror of {src:?}")));
                }
            }
            MirrorRequest::List => return Ok(self.mirror_reply(&st)),
            MirrorRequest::Sync { remote } => {
                self.sync_remote(&mut st, remote);
                for r in &st.remote {
                    if let Err(why) = &r.run {
                        tracing::warn!(mirror = %r.mirror.name, "remote mirror refused: {why}");
                    }
                }
            }
        }
        self.publish(&st);
        Ok(self.mirror_reply(&st))
    }

    /// A `capture` request.
    ///
    /// # Errors
    /// Unknown port or session.
    pub fn capture(&self, req: CaptureRequest) -> Result<CaptureReply, ErrorReply> {
        match req {
            CaptureRequest::Start { port, direction, snaplen } => {
                self.port(&port)?;
                let mut st = self.lock()?;
                if st.captures.values().any(|c| c.port == port) {
                    return Err(rejected(format!("port {port:?} is being captured already")));
                }
                let snaplen = snaplen.unwrap_or(DEFAULT_SNAPLEN);
                let rings: Vec<_> =
                    self.pmds.iter().map(|_| Arc::new(CaptureRing::new(DEFAULT_SLOTS, snaplen))).collect();
                let snaplen = rings.first().map_or(snaplen, |r| r.snaplen());
                st.next_id += 1;
                let id = st.next_id;
                let ns0 = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                st.captures.insert(
                    id,
                    Session {
                        port,
                        direction,
                        rings,
                        reader: Arc::default(),
                        snaplen,
                        tsc0: rdtsc(),
                        ns0,
                        last_read: Instant::now(),
                    },
                );
                self.publish(&st);
                Ok(CaptureReply { id, snaplen, active: true, ..CaptureReply::default() })
            }
            CaptureRequest::Read { id, max, wait_ms } => {
                let (rings, reader, snaplen, tsc0, ns0) = {
                    let mut st = self.lock()?;
                    let s = st
                        .captures
                        .get_mut(&id)
                        .ok_or_else(|| ErrorReply::not_found(format!("no capture session {id}")))?;
                    s.last_read = Instant::now();
                    (s.rings.clone(), Arc::clone(&s.reader), s.snaplen, s.tsc0, s.ns0)
                };
                let _one_reader = reader.lock().map_err(|_| rejected("capture reader poisoned"))?;
                let deadline = Instant::now() + Duration::from_millis(wait_ms).min(MAX_WAIT);
                let max = max.max(1);
                let mut got = Vec::new();
                loop {
                    // Fair share per PMD, then merged by time.
                    let each = max.div_ceil(rings.len().max(1));
                    for r in &rings {
                        for _ in 0..each {
                            match r.pop() {
                                Some(x) => got.push(x),
                                None => break,
                            }
                        }
                    }
                    if !got.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                got.sort_by_key(|r| r.tsc);
                let hz = u128::from(self.tsc_hz.max(1));
                let packets = got
                    .into_iter()
                    .map(|r| {
                        let dt = u128::from(r.tsc.saturating_sub(tsc0)) * 1_000_000_000 / hz;
                        CapturedMsg {
                            ns: ns0.saturating_add(u64::try_from(dt).unwrap_or(u64::MAX)),
                            dir: r.dir,
                            orig_len: r.orig_len,
                            data: hex(&r.data),
                        }
                    })
                    .collect();
                Ok(CaptureReply {
                    id,
                    snaplen,
                    packets,
                    dropped: rings.iter().map(|r| r.n_dropped()).sum(),
                    active: true,
                })
            }
            CaptureRequest::Stop { id } => {
                let mut st = self.lock()?;
                let s =
                    st.captures.remove(&id).ok_or_else(|| ErrorReply::not_found(format!("no capture session {id}")))?;
                self.publish(&st);
                Ok(CaptureReply {
                    id,
                    snaplen: s.snaplen,
                    dropped: s.rings.iter().map(|r| r.n_dropped()).sum(),
                    active: false,
                    packets: Vec::new(),
                })
            }
        }
    }

    /// Stops sessions nobody read for [`CAPTURE_IDLE`].
    fn reap(&self) {
        if let Ok(mut st) = self.state.lock() {
            let before = st.captures.len();
            st.captures.retain(|_, c| c.last_read.elapsed() < CAPTURE_IDLE);
            if st.captures.len() != before {
                self.publish(&st);
            }
        }
    }
}

fn effective(st: &State, name: &str) -> PortQos {
    let c = st.qos_ctl.get(name).copied().unwrap_or_default();
    let o = st.qos_ovn.get(name).copied().unwrap_or_default();
    PortQos { ingress: c.ingress.or(o.ingress), egress: c.egress.or(o.egress) }
}

fn reaper(me: &Weak<FeatureCtl>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        match me.upgrade() {
            Some(f) => f.reap(),
            None => return,
        }
    }
}
