//! The engine's side of the per-port features ([`crate::pmd::features`]):
//! policers, local mirrors and capture, hooked where a burst is received
//! and where a packet is queued for a port.
//!
//! Order on receive (per packet of a burst on a port with features):
//! capture, mirror, then police — capture and mirrors see what the port
//! sent, including what its policer then drops. Order on send: police,
//! then capture and mirror — they see what the port is actually given.
//! Mirror copies are pool mbufs ([`Mbuf::copy`]); they are not mirrored
//! again (no loops) but are captured and counted on their destination.
//!
//! Remote mirrors (OVN's `Mirror`): the copy is encapsulated in GRE or
//! ERSPAN ([`crate::action::gre`]) from the uplink that routes to the sink,
//! its next hop's MAC from the underlay's neighbour table (unresolved:
//! the copy is dropped and counted, and an ARP request sent, rate-limited
//! like tunnel next hops). Outer headers are prebuilt per PMD and session
//! and rebuilt when the tables, the neighbours or the features change. A
//! copy longer than the uplink's MTU once encapsulated is dropped and
//! counted (`too_big`): OVS would not truncate either (ERSPAN's T bit
//! stays 0). The original packet is never touched.
//!
//! Nothing here allocates, locks or makes a syscall: profiles and rings
//! are built by the control thread; bucket state and counters were sized
//! for [`MAX_PORTS`] with the engine.

use std::sync::Arc;

use crate::action::gre::{gre_encap, GreSink, GreSinkConfig, MirrorKind};
use crate::action::vlan::vlan_push;
use crate::buf::PacketBuf;
use crate::capture::Dir;
use crate::drop::DropReason;
use crate::mbuf::Mbuf;
use crate::pmd::features::{
    FeatureCounters, Features, FeaturesHandle, FeaturesShared, RemoteCounters, F_CAPTURE_RX, F_CAPTURE_TX, F_MIRROR_RX,
    F_MIRROR_TX, F_POLICE_RX, F_POLICE_TX, MAX_REMOTE,
};
use crate::pmd::MAX_PORTS;
use crate::qos::Bucket;
use crate::underlay::{self, Ip16};

use super::{Engine, ETH_P_8021Q};

/// A PMD's prebuilt path to one remote mirror sink.
#[derive(Debug, Clone)]
pub(super) struct SinkSlot {
    /// `Engine::tun_epoch` it was built for (0: never).
    epoch: u64,
    /// Index into `Engine::uplinks`, `usize::MAX` without a route.
    uplink: usize,
    nexthop: Ip16,
    /// `None` until the next hop's MAC is known.
    sink: Option<GreSink>,
    /// The next hop's MAC is old: ask again while using it.
    stale: bool,
}

impl Default for SinkSlot {
    fn default() -> Self {
        SinkSlot { epoch: 0, uplink: usize::MAX, nexthop: [0; 16], sink: None, stale: false }
    }
}

/// One PMD's feature state.
#[derive(Debug)]
pub(super) struct Ext {
    feats: Option<arc_swap::Cache<FeaturesHandle, Arc<Features>>>,
    pub(super) cur: Arc<Features>,
    /// Per slot: ingress and egress buckets.
    buckets: Vec<[Bucket; 2]>,
    pub(super) counters: Vec<FeatureCounters>,
    shared: Arc<FeaturesShared>,
    /// Per remote session slot: the prebuilt sink and the counters.
    sinks: Vec<SinkSlot>,
    remote_counters: Vec<RemoteCounters>,
}

impl Ext {
    pub(super) fn new() -> Self {
        Ext {
            feats: None,
            cur: Arc::new(Features::default()),
            buckets: vec![[Bucket::default(); 2]; MAX_PORTS],
            counters: vec![FeatureCounters::default(); MAX_PORTS],
            shared: Arc::default(),
            sinks: vec![SinkSlot::default(); MAX_REMOTE],
            remote_counters: vec![RemoteCounters::default(); MAX_REMOTE],
        }
    }

    /// The features byte of slot `p`.
    #[inline]
    pub(super) fn flags(&self, p: usize) -> u8 {
        self.cur.flags.get(p).copied().unwrap_or(0)
    }

    /// Publishes the counters (with the engine's other counters).
    pub(super) fn publish(&self) {
        self.shared.publish(&self.counters);
        self.shared.publish_remote(&self.remote_counters);
    }

    /// Zeroes slot `p`'s counters (a port attached in a reused slot).
    pub(super) fn reset_port(&mut self, p: usize) {
        if let Some(c) = self.counters.get_mut(p) {
            *c = FeatureCounters::default();
        }
    }

    /// Picks up newly published features between bursts; buckets follow
    /// their profiles (new: full; changed: rebased, tokens kept).
    #[inline]
    pub(super) fn refresh(&mut self, now: u64) {
        let Some(c) = &mut self.feats else { return };
        let new = c.load();
        if Arc::ptr_eq(new, &self.cur) {
            return;
        }
        let new = Arc::clone(new);
        for (i, (o, n)) in self.cur.ports.iter().zip(&new.ports).enumerate() {
            let Some(b) = self.buckets.get_mut(i) else { break };
            for (d, (op, np)) in [(&o.police_rx, &n.police_rx), (&o.police_tx, &n.police_tx)].into_iter().enumerate() {
                match (op, np) {
                    (None, Some(np)) => b[d] = Bucket::full(np, now),
                    (Some(op), Some(np)) if op != np => b[d].rebase(op, np, now),
                    _ => {}
                }
            }
        }
        // Remote sinks are rebuilt on next use; a slot given to another
        // session starts its counters from zero.
        for (i, s) in self.sinks.iter_mut().enumerate() {
            s.epoch = 0;
            let old = self.cur.remote.get(i).and_then(Option::as_ref).map(|r| r.instance);
            let cur = new.remote.get(i).and_then(Option::as_ref).map(|r| r.instance);
            if old != cur {
                if let Some(c) = self.remote_counters.get_mut(i) {
                    *c = RemoteCounters::default();
                }
            }
        }
        self.cur = new;
    }
}

impl Engine {
    /// Applies the features this handle publishes, and publishes this PMD's
    /// feature counters to `shared`.
    pub fn set_features(&mut self, handle: FeaturesHandle, shared: Arc<FeaturesShared>) {
        self.ext.cur = handle.load_full();
        self.ext.feats = Some(arc_swap::Cache::new(handle));
        self.ext.shared = shared;
    }

    /// Receive side of a port with features: capture, mirror, police.
    /// Returns the packet if it goes on.
    #[inline(never)]
    pub(super) fn ext_rx(&mut self, port: usize, m: Mbuf, now: u64) -> Option<Mbuf> {
        let f = self.ext.flags(port);
        if f & F_CAPTURE_RX != 0 {
            if let Some(r) = &self.ext.cur.ports[port].capture {
                r.push(now, Dir::Rx, m.data());
            }
        }
        if f & F_MIRROR_RX != 0 {
            self.mirror(port, &m, false, now);
        }
        if f & F_POLICE_RX != 0 {
            if let Some(p) = &self.ext.cur.ports[port].police_rx {
                if !self.ext.buckets[port][0].admit(p, now, m.pkt_len()) {
                    let len = u64::from(m.pkt_len());
                    let c = &mut self.ext.counters[port];
                    c.policed_rx += 1;
                    c.policed_rx_bytes += len;
                    let pc = &mut self.counters.ports[port];
                    pc.rx_packets += 1;
                    pc.rx_bytes += len;
                    self.drop_pkt(port, m, DropReason::QosPoliced);
                    return None;
                }
            }
        }
        Some(m)
    }

    /// Send side of a port with features: police, capture, mirror (unless
    /// `m` is itself a mirror copy). Returns the packet if it is to be sent.
    #[inline(never)]
    pub(super) fn ext_tx(&mut self, o: usize, m: Mbuf, now: u64, mirror: bool) -> Option<Mbuf> {
        let f = self.ext.flags(o);
        if f & F_POLICE_TX != 0 {
            if let Some(p) = &self.ext.cur.ports[o].police_tx {
                if !self.ext.buckets[o][1].admit(p, now, m.pkt_len()) {
                    let c = &mut self.ext.counters[o];
                    c.policed_tx += 1;
                    c.policed_tx_bytes += u64::from(m.pkt_len());
                    self.counters.drops[DropReason::QosPoliced.index()] += 1;
                    drop(m);
                    return None;
                }
            }
        }
        if f & F_CAPTURE_TX != 0 {
            if let Some(r) = &self.ext.cur.ports[o].capture {
                r.push(now, Dir::Tx, m.data());
            }
        }
        if mirror && f & F_MIRROR_TX != 0 {
            self.mirror(o, &m, true, now);
        }
        Some(m)
    }

    /// The path to remote sink `ip` for session kind/index: uplink, next
    /// hop, and the prebuilt headers once the next hop's MAC is known.
    fn build_sink(&self, kind: MirrorKind, ip: &Ip16, index: u32) -> SinkSlot {
        let (uplink, nexthop) = underlay::route(&self.uplinks, ip).unwrap_or((usize::MAX, [0; 16]));
        let mut stale = false;
        let sink = self.uplinks.get(uplink).and_then(|up| {
            let (mac, s) = self.neigh.lookup(&nexthop)?;
            stale = s;
            let (src_ip, dst_ip) = (underlay::ip_of(&up.ip), underlay::ip_of(ip));
            GreSink::new(&GreSinkConfig { kind, src_mac: up.mac, dst_mac: mac, src_ip, dst_ip, index }).ok()
        });
        SinkSlot { epoch: self.tun_epoch, uplink, nexthop, sink, stale }
    }

    /// Sends a GRE/ERSPAN copy of `m` to remote session `id`.
    fn mirror_remote(&mut self, m: &Mbuf, id: usize, now: u64) {
        if id >= MAX_REMOTE {
            return;
        }
        let Some(Some(rs)) = self.ext.cur.remote.get(id) else { return };
        let (kind, ip, index) = (rs.kind, rs.ip, rs.index);
        if self.ext.sinks[id].epoch != self.tun_epoch {
            self.ext.sinks[id] = self.build_sink(kind, &ip, index);
        }
        let slot = &self.ext.sinks[id];
        let Some(up) = self.uplinks.get(slot.uplink).copied() else {
            self.ext.remote_counters[id].no_route += 1;
            return;
        };
        let (nexthop, stale) = (slot.nexthop, slot.stale);
        let Some(sink) = &slot.sink else {
            self.ext.remote_counters[id].unresolved += 1;
            self.solicit(up, nexthop, now);
            return;
        };
        // The outer IP packet must fit the uplink's MTU.
        if m.pkt_len() as usize + sink.outer_len() - 14 > usize::from(up.mtu) {
            self.ext.remote_counters[id].too_big += 1;
            return;
        }
        let Some(mut c) = m.copy(&self.pool) else {
            self.ext.remote_counters[id].no_mbuf += 1;
            return;
        };
        let seq = match (kind, self.ext.cur.remote.get(id)) {
            (MirrorKind::Erspan, Some(Some(rs))) => rs.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            _ => 0,
        };
        if gre_encap(&mut c, sink, seq, &self.caps).is_err() {
            self.ext.remote_counters[id].too_big += 1;
            return;
        }
        if let Some(tag) = self.ports[up.port].vlan {
            if vlan_push(&mut c, ETH_P_8021Q, tag).is_err() {
                self.ext.remote_counters[id].no_mbuf += 1;
                return;
            }
        }
        self.ext.remote_counters[id].copies += 1;
        if stale {
            self.solicit(up, nexthop, now);
        }
        // Like local mirror copies: through the uplink's send-side
        // features, never mirrored again.
        if self.ext.flags(up.port) != 0 {
            if let Some(c) = self.ext_tx(up.port, c, now, false) {
                self.enqueue_raw(up.port, c, now);
            }
        } else {
            self.enqueue_raw(up.port, c, now);
        }
    }

    /// Sends a copy of `m` to each mirror destination of port `p`'s
    /// receive (`tx == false`) or send side, local then remote.
    fn mirror(&mut self, p: usize, m: &Mbuf, tx: bool, now: u64) {
        let nr = {
            let pf = &self.ext.cur.ports[p];
            if tx {
                pf.remote_tx.len()
            } else {
                pf.remote_rx.len()
            }
        };
        for k in 0..nr {
            let pf = &self.ext.cur.ports[p];
            let id = usize::from(if tx { pf.remote_tx[k] } else { pf.remote_rx[k] });
            self.mirror_remote(m, id, now);
        }
        self.mirror_local(p, m, tx, now);
    }

    /// The local mirror destinations of port `p`.
    fn mirror_local(&mut self, p: usize, m: &Mbuf, tx: bool, now: u64) {
        let n = {
            let pf = &self.ext.cur.ports[p];
            if tx {
                pf.mirror_tx.len()
            } else {
                pf.mirror_rx.len()
            }
        };
        for k in 0..n {
            let pf = &self.ext.cur.ports[p];
            let dst = usize::from(if tx { pf.mirror_tx[k] } else { pf.mirror_rx[k] });
            if self.tx.get(dst).is_none_or(|t| t.q.is_none()) {
                continue;
            }
            match m.copy(&self.pool) {
                Some(c) => {
                    self.ext.counters[p].mirrored += 1;
                    if self.ext.flags(dst) != 0 {
                        if let Some(c) = self.ext_tx(dst, c, now, false) {
                            self.enqueue_raw(dst, c, now);
                        }
                    } else {
                        self.enqueue_raw(dst, c, now);
                    }
                }
                None => self.ext.counters[p].mirror_failed += 1,
            }
        }
    }

    /// A burst on a plain cross-connect whose ports have features: each
    /// packet through the receive hooks, then queued as the wire would send
    /// it (unparsed).
    pub(super) fn wire_burst_ext(
        &mut self,
        port: usize,
        o: usize,
        burst: &mut crate::mbuf::Burst<{ crate::mbuf::BURST }>,
        now: u64,
    ) {
        let rx = self.ext.flags(port) & (F_CAPTURE_RX | F_MIRROR_RX | F_POLICE_RX) != 0;
        if rx && self.ext.flags(o) & (F_CAPTURE_TX | F_MIRROR_TX | F_POLICE_TX) == 0 {
            // Only the receive side has features: run them, then send what
            // is left as the wire does (one tx burst, no per-packet queueing).
            let mut left: crate::mbuf::Burst<{ crate::mbuf::BURST }> = crate::mbuf::Burst::default();
            for i in 0..burst.len() {
                if let Some(m) = burst.take(i).and_then(|m| self.ext_rx(port, m, now)) {
                    // At most as many as were received: there is room.
                    if let Err(m) = left.push(m) {
                        self.drop_pkt(port, m, DropReason::TxFull);
                    }
                }
            }
            burst.clear();
            if !left.is_empty() {
                self.wire_burst(port, o, &mut left, now);
            }
            return;
        }
        for i in 0..burst.len() {
            let Some(m) = burst.take(i) else { continue };
            let m = if rx {
                match self.ext_rx(port, m, now) {
                    Some(m) => m,
                    None => continue,
                }
            } else {
                m
            };
            let c = &mut self.counters.ports[port];
            c.rx_packets += 1;
            c.rx_bytes += u64::from(m.pkt_len());
            self.enqueue(o, m, now);
        }
    }

    /// Whether ports `a` and `b` have no feature at all (the wire
    /// cross-connect may bypass the hooks).
    #[inline]
    pub(super) fn ext_plain(&self, a: usize, b: usize) -> bool {
        self.ext.flags(a) | self.ext.flags(b) == 0
    }
}
