//! The static forwarding engine: cross-connect, L2 bridge, VLAN trunks and
//! Geneve tunnel ports, run to completion per packet.
//!
//! Per packet: strip and check the input port's VLAN tag; extract the flow
//! key (malformed frames are dropped with their reason); terminate Geneve
//! addressed to one of our tunnel IPs on an uplink (the inner frame continues
//! as if received on the tunnel port); choose outputs by the port's role;
//! for each output push its VLAN tag or encapsulate, and batch for transmit.
//!
//! A cross-connect between two plain ports does not parse at all: it is a
//! wire, like testpmd's io mode. Everything else parses every frame.
//!
//! Invariants: every mbuf taken from a burst ends in exactly one tx batch or
//! is dropped (freed) with one [`DropReason`] counted; nothing here
//! allocates; flooding copies into pool mbufs, never the heap.

use std::net::IpAddr;
use std::sync::Arc;

use crate::action::generate::{generate, GenPacket};
use crate::action::geneve::{
    geneve_decap, geneve_encap, geneve_encap_vni, verify_outer_checksums, GeneveMeta, GeneveTunnel, GeneveTunnelConfig,
};
use crate::action::vlan::{vlan_pop, vlan_push};
use crate::buf::PacketBuf;
use crate::config::{Plan, PortKind, Role};
use crate::drop::DropReason;
use crate::flow::Layout;
use crate::flow::{extract, FlowKey};
use crate::mbuf::{Burst, Mbuf, Mempool, BURST};
use crate::port::QueueHandle;
use crate::qos::meter::{MeterShared, Meters};
use crate::table::cache::{FlowCache, Verdict};
use crate::table::commit::commit;
use crate::table::exec::{run_from_port, run_from_tunnel, NoTrace, Outcome, Target};
use crate::table::{Snapshot, Tables};
use crate::underlay::{self, Local, NeighMap, NeighRing, Neighbors, Uplink};
use crate::wire::ChecksumCaps;

use super::mactable::MacTable;
use super::stats::Counters;

mod ext;

/// Capacity of a port's tx batch: two bursts, so a full burst can be queued
/// behind a partial one without flushing mid-burst.
const TX_BATCH: usize = 2 * BURST;
const ETH_P_8021Q: u16 = 0x8100;
/// Learned MAC entries expire after this many seconds (OVS's default is 300).
const MAC_AGE_SECS: u64 = 300;
/// MAC table slots per bridge per PMD.
const MAC_TABLE_SIZE: usize = 4096;

/// How a port sends.
#[derive(Debug)]
enum Out {
    /// Transmit on this DPDK port's tx queue.
    Eth,
    /// Encapsulate and transmit on the uplink.
    Geneve { uplink: usize, tun: GeneveTunnel, ingress_key: u16, egress_key: u16 },
}

#[derive(Debug)]
struct RtPort {
    role: Role,
    vlan: Option<u16>,
    out: Out,
    /// A cross-connect that needs no parsing (neither side tags or tunnels).
    raw_xconnect: Option<usize>,
    /// This port carries tunnels: (local IP as 16 bytes, IPv4-mapped), first of them.
    local_ips: [Option<[u8; 16]>; 4],
    /// Tunnels on this uplink: (remote IP, VNI, tunnel port index).
    n_tunnels: usize,
    /// This port is an OVN tunnel uplink: index into `Engine::uplinks`.
    uplink: Option<usize>,
}

/// Most remote chassis whose tunnel a PMD keeps ready (more work, uncached).
const MAX_CACHED_CHASSIS: usize = 1024;

/// A PMD's ready-made tunnel to one remote chassis.
#[derive(Debug)]
struct TunSlot {
    /// `Engine::tun_epoch` it was built for.
    epoch: u64,
    /// Index into `Engine::uplinks`, or `usize::MAX` without a route.
    uplink: usize,
    /// Next hop.
    nexthop: underlay::Ip16,
    /// `None` until the next hop's MAC is known.
    tun: Option<GeneveTunnel>,
    /// The next hop's MAC is old: ask for it again while using it.
    stale: bool,
}

/// Next hops a PMD remembers having asked for (ARP/ND rate limit).
const SOLICITED: usize = 16;

#[derive(Debug)]
struct TxPort {
    q: Option<QueueHandle>,
    pending: Burst<TX_BATCH>,
    /// Bytes of the pending packets (so a flush need not read them again).
    pending_bytes: u64,
    /// TSC of the oldest pending packet.
    since: u64,
}

/// One PMD's forwarding state.
#[derive(Debug)]
pub struct Engine {
    ports: Vec<RtPort>,
    tx: Vec<TxPort>,
    tunnels: Vec<(usize, [u8; 16], u32, usize)>,
    bridges: Vec<(Vec<usize>, MacTable)>,
    pool: Arc<Mempool>,
    caps: ChecksumCaps,
    drain_ticks: u64,
    key: FlowKey,
    counters: Counters,
    /// The published tables, if this node runs them, and this PMD's copy of
    /// the current snapshot (refreshed between bursts).
    tables: Option<arc_swap::Cache<Tables, Arc<Snapshot>>>,
    snap: Option<Arc<Snapshot>>,
    /// Always `Some` between packets; taken while a verdict borrowed from it
    /// is applied.
    flow_cache: Option<FlowCache>,
    outcome: Outcome,
    /// Where `put_fdb` learning goes (shared with the control thread).
    learn: Arc<super::learn::LearnRing>,
    /// Policers, mirrors and capture (`ext.rs`).
    ext: ext::Ext,
    /// The tables' meters: this PMD's buckets and counters, and where the
    /// counters are published.
    meters: Meters,
    meter_shared: Option<Arc<MeterShared>>,
    /// OVN tunnel uplinks (the node's tunnel IPs).
    uplinks: Vec<Uplink>,
    /// The neighbour table (published by the main thread) and this PMD's copy.
    neighbors: Option<arc_swap::Cache<Neighbors, Arc<NeighMap>>>,
    neigh: Arc<NeighMap>,
    /// Where ARP for our tunnel IPs is reported.
    neigh_ring: Arc<NeighRing>,
    /// Remote chassis IPs of the current snapshot, refreshed with it.
    chassis_ips: Vec<underlay::Ip16>,
    /// Tunnels by chassis index; valid while their epoch is `tun_epoch`,
    /// which changes with the snapshot and the neighbour table.
    tun_cache: Vec<TunSlot>,
    tun_epoch: u64,
    /// ARP retry interval in TSC ticks.
    arp_retry_ticks: u64,
    /// (next hop, TSC) of the last requests for next hops' MACs.
    solicited: [(underlay::Ip16, u64); SOLICITED],
    solicited_next: usize,
}

/// Flow cache entries per PMD (OVS's EMC size).
const FLOW_CACHE_ENTRIES: usize = 8192;

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Engine {
    /// Builds the engine for one PMD.
    ///
    /// `queues[i]` is this PMD's queue handle for plan port `i` (DPDK ports
    /// only), `macs[i]` that port's MAC address.
    ///
    /// # Errors
    /// If a tunnel cannot be built from the plan, or an uplink carries more
    /// tunnel IPs than supported.
    pub fn new(
        plan: &Plan,
        queues: &[Option<QueueHandle>],
        macs: &[[u8; 6]],
        pool: Arc<Mempool>,
        tsc_hz: u64,
        tables: Option<Tables>,
    ) -> Result<Self, String> {
        let n = plan.ports.len();
        if n > super::MAX_PORTS {
            return Err(format!("{n} ports: petreld supports at most {}", super::MAX_PORTS));
        }
        // Room for every port slot up front: ports added at runtime fill
        // slots without the PMD allocating (see `attach_port`).
        let mut ports = Vec::with_capacity(super::MAX_PORTS);
        let mut tunnels = Vec::new();
        for (i, p) in plan.ports.iter().enumerate() {
            let out = match &p.kind {
                PortKind::Dpdk { .. } | PortKind::VhostUser { .. } => Out::Eth,
                PortKind::Geneve(g) => {
                    let tun = GeneveTunnel::new(GeneveTunnelConfig {
                        src_mac: macs[g.uplink],
                        dst_mac: g.remote_mac,
                        src_ip: g.local,
                        dst_ip: g.remote,
                        vni: g.vni,
                        ttl: g.ttl,
                        dst_port: crate::wire::geneve::UDP_PORT,
                    })
                    .map_err(|e| format!("geneve port {}: {e}", p.name))?;
                    tunnels.push((g.uplink, ip16(g.remote), g.vni, i));
                    Out::Geneve { uplink: g.uplink, tun, ingress_key: g.ingress_key, egress_key: g.egress_key }
                }
            };
            ports.push(RtPort {
                role: p.role,
                vlan: p.vlan,
                out,
                raw_xconnect: None,
                local_ips: [None; 4],
                n_tunnels: 0,
                uplink: None,
            });
        }
        let mut uplinks = Vec::new();
        for (i, spec) in &plan.uplinks {
            ports[*i].uplink = Some(uplinks.len());
            uplinks.push(Uplink::new(spec, *i, macs.get(*i).copied().unwrap_or_default()));
        }
        for p in &plan.ports {
            if let PortKind::Geneve(g) = &p.kind {
                let up = &mut ports[g.uplink];
                up.n_tunnels += 1;
                let ip = ip16(g.local);
                if !up.local_ips.contains(&Some(ip)) {
                    let slot = up
                        .local_ips
                        .iter_mut()
                        .find(|s| s.is_none())
                        .ok_or_else(|| format!("geneve port {}: more than 4 local IPs on one uplink", p.name))?;
                    *slot = Some(ip);
                }
            }
        }
        for i in 0..n {
            if let Role::Xconnect(o) = ports[i].role {
                let plain = |p: &RtPort| p.vlan.is_none() && matches!(p.out, Out::Eth) && p.n_tunnels == 0;
                if plain(&ports[i]) && plain(&ports[o]) {
                    ports[i].raw_xconnect = Some(o);
                }
            }
        }
        let max_age = tsc_hz.saturating_mul(MAC_AGE_SECS);
        let bridges = plan
            .bridges
            .iter()
            .map(|b| {
                let mut t = MacTable::new(MAC_TABLE_SIZE, max_age);
                for (mac, port) in &b.static_macs {
                    t.insert_static(*mac, u16::try_from(*port).expect("port index fits u16 (checked at setup)"));
                }
                (b.ports.clone(), t)
            })
            .collect();
        let mut tx = Vec::with_capacity(super::MAX_PORTS);
        tx.extend((0..n).map(|i| TxPort {
            q: queues.get(i).cloned().flatten(),
            pending: Burst::default(),
            pending_bytes: 0,
            since: 0,
        }));
        let mut counters = Counters::new(n);
        counters.ports.reserve_exact(super::MAX_PORTS - n);
        Ok(Engine {
            ports,
            tx,
            tunnels,
            bridges,
            pool,
            caps: ChecksumCaps::software(),
            drain_ticks: plan.tx_drain_us.saturating_mul(tsc_hz) / 1_000_000,
            key: FlowKey::default(),
            counters,
            tables: tables.map(arc_swap::Cache::new),
            snap: None,
            flow_cache: Some(FlowCache::new(FLOW_CACHE_ENTRIES)),
            outcome: Outcome::default(),
            learn: Arc::default(),
            ext: ext::Ext::new(),
            meters: Meters::new(0, 1, tsc_hz),
            meter_shared: None,
            uplinks,
            neighbors: None,
            neigh: Arc::default(),
            neigh_ring: Arc::default(),
            chassis_ips: Vec::with_capacity(MAX_CACHED_CHASSIS),
            tun_cache: Vec::with_capacity(MAX_CACHED_CHASSIS),
            tun_epoch: 1,
            arp_retry_ticks: tsc_hz / 1000 * underlay::ARP_RETRY_MS,
            solicited: [([0; 16], 0); SOLICITED],
            solicited_next: 0,
        })
    }

    /// Reads next-hop MACs from this table and reports ARP for our tunnel
    /// IPs to this ring (both shared with the main thread).
    pub fn set_underlay(&mut self, neighbors: Neighbors, ring: Arc<NeighRing>) {
        self.neighbors = Some(arc_swap::Cache::new(neighbors));
        self.neigh_ring = ring;
    }

    /// Starts sending to port slot `index` (a port added at runtime): a
    /// plain port (no static role: what it receives goes through the OVN
    /// tables, or is dropped as `no_output`), with its VLAN trunk tag and
    /// this PMD's queue. Its counters start from zero.
    ///
    /// Runs between polls. Slots up to [`super::MAX_PORTS`] were reserved
    /// when the engine was built, so this does not allocate.
    ///
    /// # Errors
    /// If `index` is not below [`super::MAX_PORTS`] or the slot is in use.
    pub fn attach_port(&mut self, index: usize, vlan: Option<u16>, q: Option<QueueHandle>) -> Result<(), String> {
        if index >= super::MAX_PORTS {
            return Err(format!("port slot {index}: at most {} ports", super::MAX_PORTS));
        }
        if self.tx.get(index).is_some_and(|t| t.q.is_some()) {
            return Err(format!("port slot {index} is in use"));
        }
        while self.ports.len() <= index {
            self.ports.push(RtPort {
                role: Role::None,
                vlan: None,
                out: Out::Eth,
                raw_xconnect: None,
                local_ips: [None; 4],
                n_tunnels: 0,
                uplink: None,
            });
            self.tx.push(TxPort { q: None, pending: Burst::default(), pending_bytes: 0, since: 0 });
            self.counters.ports.push(super::stats::PortCounters::default());
        }
        self.ports[index] = RtPort {
            role: Role::None,
            vlan,
            out: Out::Eth,
            raw_xconnect: None,
            local_ips: [None; 4],
            n_tunnels: 0,
            uplink: None,
        };
        self.tx[index].q = q;
        self.counters.ports[index] = super::stats::PortCounters::default();
        self.ext.reset_port(index);
        Ok(())
    }

    /// Stops sending to port slot `index` (a port being removed): its
    /// pending batch is sent now, then packets for it are dropped as
    /// `no_binding` until the slot is reused. Returns this PMD's queue
    /// handle of it, for the caller to drop after the device is closed.
    pub fn detach_port(&mut self, index: usize) -> Option<QueueHandle> {
        if index >= self.tx.len() {
            return None;
        }
        self.flush(index);
        self.ports[index].role = Role::None;
        self.ports[index].raw_xconnect = None;
        self.tx[index].q.take()
    }

    /// Sends MAC learning to this ring (the one the control thread reads,
    /// `SharedStats::learn`).
    pub fn set_learn(&mut self, ring: Arc<super::learn::LearnRing>) {
        self.learn = ring;
    }

    /// The engine's counters.
    pub fn counters(&mut self) -> &Counters {
        if let Some(c) = &self.flow_cache {
            self.counters.cache_hits = c.n_hit();
            self.counters.cache_misses = c.n_miss();
        }
        self.ext.publish();
        if let Some(m) = &self.meter_shared {
            m.publish(&self.meters);
        }
        &self.counters
    }

    /// Runs the tables' meters as PMD `pmd` of `n_pmd` (its share of each
    /// meter) and publishes their counters to `shared`. Call before the
    /// first burst.
    pub fn set_meters(&mut self, shared: Arc<MeterShared>, pmd: usize, n_pmd: usize) {
        self.meters.set_share(pmd, n_pmd);
        self.meter_shared = Some(shared);
    }

    /// Picks up a newly published snapshot (between bursts; no lock); the
    /// meters' buckets follow their meters (see `qos::meter`).
    #[inline]
    fn refresh_tables(&mut self, now: u64) {
        if let Some(c) = &mut self.tables {
            let cur = c.load();
            if self.snap.as_ref().is_none_or(|s| !Arc::ptr_eq(s, cur)) {
                let old = self.snap.replace(Arc::clone(cur));
                self.meters.update(old.as_ref().map_or(&[][..], |s| &s.meters[..]), &cur.meters, now);
                // Chassis come and go with the snapshot: rebuild their
                // tunnels lazily (within the reserved capacity: no allocation
                // up to MAX_CACHED_CHASSIS chassis).
                self.chassis_ips.clear();
                self.chassis_ips.extend(cur.chassis.iter().map(|c| underlay::ip16(c.ip)));
                self.tun_epoch += 1;
            }
        }
        if let Some(n) = &mut self.neighbors {
            let cur = n.load();
            if !Arc::ptr_eq(&self.neigh, cur) {
                self.neigh = Arc::clone(cur);
                self.tun_epoch += 1;
            }
        }
    }

    /// Adds to the busy-cycle counter.
    #[inline]
    pub fn add_busy(&mut self, ticks: u64) {
        self.counters.busy_cycles += ticks;
    }

    /// Adds to the idle-cycle counter.
    #[inline]
    pub fn add_idle(&mut self, ticks: u64) {
        self.counters.idle_cycles += ticks;
    }

    /// Adds to the sleep-cycle counter.
    #[inline]
    pub fn add_sleep(&mut self, ticks: u64) {
        self.counters.sleep_cycles += ticks;
    }

    /// Runs every packet of a received burst to completion.
    #[inline]
    pub fn process_burst(&mut self, port: usize, burst: &mut Burst<BURST>, now: u64) {
        let n = burst.len();
        self.counters.rx_bursts += 1;
        self.counters.rx_packets += n as u64;
        self.refresh_tables(now);
        self.ext.refresh(now);
        if let Some(o) = self.ports[port].raw_xconnect {
            if self.ext_plain(port, o) {
                return self.wire_burst(port, o, burst, now);
            }
            return self.wire_burst_ext(port, o, burst, now);
        }
        let rx_ext = self.ext.flags(port) & super::features::F_RX != 0;
        const PREFETCH: usize = 3;
        for i in 0..n.min(PREFETCH) {
            if let Some(m) = burst.get(i) {
                m.prefetch_data();
            }
        }
        for i in 0..n {
            if let Some(m) = burst.get(i + PREFETCH) {
                m.prefetch_data();
            }
            if let Some(m) = burst.take(i) {
                if rx_ext {
                    if let Some(m) = self.ext_rx(port, m, now) {
                        self.process(port, m, now);
                    }
                    continue;
                }
                self.process(port, m, now);
            }
        }
    }

    /// A plain cross-connect: the burst goes out as it came, straight from
    /// the rx array when nothing is queued ahead of it (testpmd's io mode).
    #[inline]
    fn wire_burst(&mut self, port: usize, o: usize, burst: &mut Burst<BURST>, now: u64) {
        let n = burst.len();
        let bytes: u64 = (0..n).filter_map(|i| burst.get(i)).map(|m| u64::from(m.pkt_len())).sum();
        let c = &mut self.counters.ports[port];
        c.rx_packets += n as u64;
        c.rx_bytes += bytes;
        let tx = &mut self.tx[o];
        match &tx.q {
            Some(q) if tx.pending.is_empty() => {
                let mut sent = q.tx_burst(burst);
                if sent < n {
                    sent += q.tx_burst(burst);
                }
                // What the device refused is still ours: count and free it.
                let (left, left_bytes) = (burst.len(), Self::bytes_of(burst));
                burst.clear();
                let c = &mut self.counters.ports[o];
                c.tx_packets += sent as u64;
                c.tx_bytes += bytes - left_bytes;
                c.tx_drops += left as u64;
                self.counters.drops[DropReason::TxFull.index()] += left as u64;
            }
            _ => {
                for i in 0..n {
                    if let Some(m) = burst.take(i) {
                        self.enqueue(o, m, now);
                    }
                }
            }
        }
    }

    #[inline]
    fn bytes_of<const N: usize>(b: &Burst<N>) -> u64 {
        (0..b.len()).filter_map(|i| b.get(i)).map(|m| u64::from(m.pkt_len())).sum()
    }

    #[inline]
    fn drop_pkt(&mut self, in_port: usize, m: Mbuf, why: DropReason) {
        self.counters.drops[why.index()] += 1;
        self.counters.ports[in_port].drops += 1;
        drop(m);
    }

    #[inline]
    fn process(&mut self, in_port: usize, mut m: Mbuf, now: u64) {
        {
            let c = &mut self.counters.ports[in_port];
            c.rx_packets += 1;
            c.rx_bytes += u64::from(m.pkt_len());
        }
        if m.nb_segs() != 1 {
            return self.drop_pkt(in_port, m, DropReason::MultiSegment);
        }
        if let Some(tag) = self.ports[in_port].vlan {
            let d = m.data();
            let tagged = d.len() >= 18 && u16::from_be_bytes([d[12], d[13]]) == ETH_P_8021Q;
            if !tagged || u16::from_be_bytes([d[14], d[15]]) & 0x0fff != tag {
                return self.drop_pkt(in_port, m, DropReason::VlanMismatch);
            }
            if let Err(why) = vlan_pop(&mut m) {
                return self.drop_pkt(in_port, m, why);
            }
        }
        let in_port_u32 = u32::try_from(in_port).unwrap_or(u32::MAX);
        let layout = match extract(m.data(), in_port_u32, &mut self.key) {
            Ok(l) => l,
            Err(why) => return self.drop_pkt(in_port, m, why),
        };
        // Untagged frames only: tagged ones on an uplink are tenant traffic
        // of a localnet VLAN sharing the wire, never the underlay.
        if let Some(u) = self.ports[in_port].uplink.filter(|_| self.key.vlan_tci[0] == 0) {
            let up = self.uplinks[u];
            match underlay::classify(m.data_mut(), &self.key, &layout, &up) {
                Local::No => {}
                Local::Snoop { ip, mac } => self.neigh_ring.push(&ip, mac),
                Local::ArpAnswered { ip, mac } => {
                    self.neigh_ring.push(&ip, mac);
                    return self.output(in_port, in_port, m, now);
                }
                Local::EchoAnswered => return self.output(in_port, in_port, m, now),
                Local::NsForUs { ip, mac } => {
                    if ip != [0; 16] {
                        self.neigh_ring.push(&ip, mac);
                    }
                    if let Some(mut c) = self.pool.alloc() {
                        if c.append(underlay::ND_FRAME_LEN).is_ok() {
                            underlay::write_na(c.data_mut(), &up, &ip, mac);
                            self.output(in_port, in_port, c, now);
                        }
                    } else {
                        self.counters.drops[DropReason::NoMbuf.index()] += 1;
                    }
                    return self.drop_pkt(in_port, m, DropReason::UnderlayConsumed);
                }
                Local::Learn { ip, mac } => {
                    self.neigh_ring.push(&ip, mac);
                    return self.drop_pkt(in_port, m, DropReason::UnderlayConsumed);
                }
                Local::Consumed => return self.drop_pkt(in_port, m, DropReason::UnderlayConsumed),
                Local::Geneve => return self.decap_tunnel(in_port, m, &layout, now),
            }
        }
        if let Some(snap) = self.snap.take() {
            let bound = snap.local_ports.get(in_port).is_some_and(Option::is_some)
                || (self.key.vlan_tci[0] != 0 && snap.is_vlan_bound(in_port));
            if bound {
                self.logical(&snap, in_port, m, &layout, now);
                self.snap = Some(snap);
                return;
            }
            self.snap = Some(snap);
        }
        let mut port = in_port;
        if self.ports[in_port].n_tunnels > 0
            && layout.is_geneve()
            && self.ports[in_port].local_ips.contains(&Some(self.key.nw_dst))
        {
            // Virtual devices verify nothing; OVS checks outer checksums before decap too.
            if let Err(why) = verify_outer_checksums(&m, &layout, &self.caps) {
                return self.drop_pkt(in_port, m, why);
            }
            let meta = match geneve_decap(&mut m, &layout) {
                Ok(meta) => meta,
                Err(why) => return self.drop_pkt(in_port, m, why),
            };
            let src = ip16(meta.outer_src);
            let Some(&(_, _, _, tun)) =
                self.tunnels.iter().find(|(up, r, vni, _)| *up == in_port && *r == src && *vni == meta.vni)
            else {
                return self.drop_pkt(in_port, m, DropReason::GeneveUnknownTunnel);
            };
            port = tun;
            {
                let c = &mut self.counters.ports[tun];
                c.rx_packets += 1;
                c.rx_bytes += u64::from(m.pkt_len());
            }
            let tun_u32 = u32::try_from(tun).unwrap_or(u32::MAX);
            if let Err(why) = extract(m.data(), tun_u32, &mut self.key) {
                return self.drop_pkt(tun, m, why);
            }
            meta.apply_to(&mut self.key);
        }
        match self.ports[port].role {
            Role::None => self.drop_pkt(port, m, DropReason::NoOutput),
            Role::Xconnect(o) => self.output(port, o, m, now),
            Role::Bridge(b) => self.switch(port, b, m, now),
        }
    }

    /// A packet from a port bound to a logical port: the cached verdict, or
    /// the pipeline (then cached), applied copy by copy.
    #[inline]
    fn logical(&mut self, snap: &Snapshot, in_port: usize, m: Mbuf, layout: &Layout, now: u64) {
        self.logical_from(snap, in_port, None, m, layout, now);
    }

    /// Geneve to our tunnel IP on uplink `in_port`: checked, decapsulated,
    /// and run from the tunnel (straight to the logical outport, local
    /// ports only) when it comes from a chassis of the tables.
    fn decap_tunnel(&mut self, in_port: usize, mut m: Mbuf, layout: &Layout, now: u64) {
        // Virtual devices verify nothing; OVS checks outer checksums before decap too.
        if let Err(why) = verify_outer_checksums(&m, layout, &self.caps) {
            return self.drop_pkt(in_port, m, why);
        }
        let meta = match geneve_decap(&mut m, layout) {
            Ok(meta) => meta,
            Err(why) => return self.drop_pkt(in_port, m, why),
        };
        let Some(snap) = self.snap.take() else {
            return self.drop_pkt(in_port, m, DropReason::UnknownDatapath);
        };
        let in_port_u32 = u32::try_from(in_port).unwrap_or(u32::MAX);
        match extract(m.data(), in_port_u32, &mut self.key) {
            Ok(inner) => {
                meta.apply_to(&mut self.key);
                self.logical_from(&snap, in_port, Some(&meta), m, &inner, now);
            }
            Err(why) => self.drop_pkt(in_port, m, why),
        }
        self.snap = Some(snap);
    }

    /// A packet for the tables: from a bound port (`tunnel` none) or
    /// decapsulated from a remote chassis.
    #[inline]
    fn logical_from(
        &mut self,
        snap: &Snapshot,
        in_port: usize,
        tunnel: Option<&GeneveMeta>,
        m: Mbuf,
        layout: &Layout,
        now: u64,
    ) {
        let orig = self.key;
        // The verdict is borrowed from the cache while it is applied, so
        // take the cache out of `self` for that time (no copy, no allocation).
        let Some(mut cache) = self.flow_cache.take() else {
            return self.drop_pkt(in_port, m, DropReason::PipelineTooDeep);
        };
        if let Some(v) = cache.lookup(&orig, snap.generation) {
            self.apply_verdict(in_port, m, layout, &orig, v, now);
            self.flow_cache = Some(cache);
            return;
        }
        match tunnel {
            None => {
                let port16 = u16::try_from(in_port).unwrap_or(u16::MAX);
                run_from_port(snap, port16, &orig, &mut self.outcome, &mut NoTrace);
            }
            Some(t) => {
                // Only from a chassis of the tables (ovn-controller has a
                // tunnel port per remote chassis; others match nothing).
                if !snap.chassis.iter().any(|c| c.ip == t.outer_src) {
                    self.flow_cache = Some(cache);
                    return self.drop_pkt(in_port, m, DropReason::GeneveUnknownTunnel);
                }
                run_from_tunnel(snap, t.vni, t.ingress_key, t.egress_key, &orig, &mut self.outcome, &mut NoTrace);
            }
        }
        if let Some(v) = Verdict::of(&self.outcome, &orig) {
            cache.insert(&orig, snap.generation, v);
            self.flow_cache = Some(cache);
            return self.apply_verdict(in_port, m, layout, &orig, &v, now);
        }
        self.flow_cache = Some(cache);
        // Too many copies or meters to cache (a flood): apply the outcome directly.
        // Generated packets first (they read the received one), then the
        // copies, the last of which takes the received mbuf itself.
        let n = self.outcome.emits().len();
        if n == 0 {
            // Not cached for its meters, but dropped anyway.
            return self.drop_pkt(in_port, m, self.outcome.drop.unwrap_or(DropReason::StageMiss));
        }
        let skip = if self.outcome.meters().is_empty() {
            0
        } else {
            self.meters.run(self.outcome.meters(), now, m.pkt_len()).0
        };
        let kept = |i: usize| skip & (1 << i) == 0;
        let last_fwd = (0..n).rev().find(|&i| self.outcome.emits()[i].gen.is_none() && kept(i));
        for i in 0..n {
            let e = self.outcome.emits()[i];
            if !kept(i) {
                self.count_drop(in_port, DropReason::MeterDrop);
            } else if let Some(g) = e.gen {
                self.apply_generated(in_port, &m, layout, g, e.target, &e.key.flow, now);
            } else if Some(i) != last_fwd {
                match m.copy(&self.pool) {
                    Some(c) => {
                        self.apply_one(in_port, c, layout, &orig, e.target, &e.key.flow, e.key.flow != orig, now)
                    }
                    None => self.count_drop(in_port, DropReason::NoMbuf),
                }
            }
        }
        match last_fwd {
            Some(i) => {
                let e = self.outcome.emits()[i];
                self.apply_one(in_port, m, layout, &orig, e.target, &e.key.flow, e.key.flow != orig, now);
            }
            // Every copy refused by a meter (each counted above).
            None if (0..n).all(|i| !kept(i)) => drop(m),
            None => self.drop_pkt(in_port, m, DropReason::Generated),
        }
    }

    #[inline]
    fn apply_verdict(&mut self, in_port: usize, m: Mbuf, layout: &Layout, orig: &FlowKey, v: &Verdict, now: u64) {
        let emits = v.emits();
        if emits.is_empty() {
            return self.drop_pkt(in_port, m, v.drop_reason());
        }
        // Meters run for every packet, cache hit or not.
        let skip = if v.meters().is_empty() { 0 } else { self.meters.run(v.meters(), now, m.pkt_len()).0 };
        let kept = |i: usize| skip & (1 << i) == 0;
        // As in `logical`: generated packets, copies, then the received mbuf.
        let last_fwd = (0..emits.len()).rev().find(|&i| v.gen(i).is_none() && kept(i));
        for (i, (target, flow)) in emits.iter().enumerate() {
            if !kept(i) {
                self.count_drop(in_port, DropReason::MeterDrop);
            } else if let Some(g) = v.gen(i) {
                self.apply_generated(in_port, &m, layout, g, *target, flow, now);
            } else if Some(i) != last_fwd {
                match m.copy(&self.pool) {
                    Some(c) => self.apply_one(in_port, c, layout, orig, *target, flow, v.rewrites(i), now),
                    None => self.count_drop(in_port, DropReason::NoMbuf),
                }
            }
        }
        match last_fwd {
            Some(i) => {
                let (target, flow) = &emits[i];
                self.apply_one(in_port, m, layout, orig, *target, flow, v.rewrites(i), now);
            }
            // Every copy refused by a meter (each counted above).
            None if (0..emits.len()).all(|i| !kept(i)) => drop(m),
            // Answered, not forwarded (pinctrl consumes the packet-in).
            None => self.drop_pkt(in_port, m, DropReason::Generated),
        }
    }

    /// Builds a generated packet (from its final key and the received
    /// packet `orig`) into a pool mbuf and sends it to `target`.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn apply_generated(
        &mut self,
        in_port: usize,
        orig: &Mbuf,
        layout: &Layout,
        g: GenPacket,
        target: Target,
        flow: &FlowKey,
        now: u64,
    ) {
        let Some(mut c) = self.pool.alloc() else {
            return self.count_drop(in_port, DropReason::NoMbuf);
        };
        if let Err(why) = generate(&mut c, g, flow, orig.data(), layout) {
            return self.drop_pkt(in_port, c, why);
        }
        self.apply_one(in_port, c, layout, flow, target, flow, false, now);
    }

    /// Rewrites one copy as its final key says and sends it to its target.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn apply_one(
        &mut self,
        in_port: usize,
        mut m: Mbuf,
        layout: &Layout,
        orig: &FlowKey,
        target: Target,
        flow: &FlowKey,
        rewrite: bool,
        now: u64,
    ) {
        if rewrite {
            if let Err(why) = commit(&mut m, layout, orig, flow) {
                return self.drop_pkt(in_port, m, why);
            }
        }
        let (port, vlan) = match target {
            Target::Local { port, vlan } => (port, vlan),
            Target::Localnet { uplink, vlan } => (uplink, vlan),
            Target::Tunnel { chassis, vni, ingress, egress } => {
                return self.tunnel_out(in_port, m, usize::from(chassis), vni, ingress, egress, flow.hash(), now);
            }
            Target::SlowPath(_) => return self.drop_pkt(in_port, m, DropReason::SlowPath),
            Target::Learn { datapath, port } => {
                // Not a drop: the copy only carries what to learn.
                self.learn.push(datapath, port, flow.dl_src);
                drop(m);
                return;
            }
        };
        let o = usize::from(port);
        if self.tx.get(o).is_none_or(|t| t.q.is_none()) {
            // No such port, or a port being removed.
            return self.drop_pkt(in_port, m, DropReason::NoBinding);
        }
        if let Some(tag) = vlan {
            if let Err(why) = vlan_push(&mut m, ETH_P_8021Q, tag) {
                return self.drop_pkt(in_port, m, why);
            }
        }
        self.enqueue(o, m, now);
    }

    /// The tunnel to remote chassis IP `rip`: uplink, next hop, the
    /// prebuilt headers once the next hop's MAC is known, and whether that
    /// MAC is stale.
    fn build_tunnel(&self, rip: &underlay::Ip16) -> TunSlot {
        let (uplink, nexthop) = underlay::route(&self.uplinks, rip).unwrap_or((usize::MAX, [0; 16]));
        let mut stale = false;
        let tun = self.uplinks.get(uplink).and_then(|up| {
            let (mac, s) = self.neigh.lookup(&nexthop)?;
            stale = s;
            GeneveTunnel::new(GeneveTunnelConfig {
                src_mac: up.mac,
                dst_mac: mac,
                src_ip: underlay::ip_of(&up.ip),
                dst_ip: underlay::ip_of(rip),
                vni: 0,
                ttl: 64,
                dst_port: crate::wire::geneve::UDP_PORT,
            })
            .ok()
        });
        TunSlot { epoch: self.tun_epoch, uplink, nexthop, tun, stale }
    }

    /// Encapsulates for remote chassis `chassis` (its tunnel built on first
    /// use: route, next hop's MAC; kept per PMD for the first
    /// `MAX_CACHED_CHASSIS` chassis, built per packet beyond) and sends on
    /// its uplink.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn tunnel_out(
        &mut self,
        in_port: usize,
        mut m: Mbuf,
        chassis: usize,
        vni: u32,
        ingress: u16,
        egress: u16,
        hash: u32,
        now: u64,
    ) {
        let Some(&rip) = self.chassis_ips.get(chassis) else {
            return self.drop_pkt(in_port, m, DropReason::NoBinding);
        };
        if self.uplinks.is_empty() {
            return self.drop_pkt(in_port, m, DropReason::TunnelNoRoute);
        }
        let uncached;
        let slot = if chassis < MAX_CACHED_CHASSIS {
            while self.tun_cache.len() <= chassis {
                self.tun_cache.push(TunSlot {
                    epoch: 0,
                    uplink: usize::MAX,
                    nexthop: [0; 16],
                    tun: None,
                    stale: false,
                });
            }
            if self.tun_cache[chassis].epoch != self.tun_epoch {
                self.tun_cache[chassis] = self.build_tunnel(&rip);
            }
            &self.tun_cache[chassis]
        } else {
            uncached = self.build_tunnel(&rip);
            &uncached
        };
        let Some(up) = self.uplinks.get(slot.uplink).copied() else {
            return self.drop_pkt(in_port, m, DropReason::TunnelNoRoute);
        };
        let (nexthop, stale) = (slot.nexthop, slot.stale);
        let Some(tun) = &slot.tun else {
            self.solicit(up, nexthop, now);
            return self.drop_pkt(in_port, m, DropReason::TunnelNeighUnresolved);
        };
        // The outer IP packet: IP + UDP + Geneve + the inner frame.
        if m.pkt_len() as usize + tun.outer_len() - 14 > usize::from(up.mtu) {
            return self.drop_pkt(in_port, m, DropReason::TunnelMtuExceeded);
        }
        if let Err(why) = geneve_encap_vni(&mut m, tun, vni, ingress, egress, hash, &self.caps) {
            return self.drop_pkt(in_port, m, why);
        }
        if stale {
            self.solicit(up, nexthop, now);
        }
        self.output(in_port, up.port, m, now);
    }

    /// Asks for `nexthop`'s MAC unless this PMD did within the retry
    /// interval (per next hop, however many chassis are behind it).
    fn solicit(&mut self, up: Uplink, nexthop: underlay::Ip16, now: u64) {
        if let Some(e) = self.solicited.iter_mut().find(|e| e.0 == nexthop) {
            if now.wrapping_sub(e.1) < self.arp_retry_ticks {
                return;
            }
            e.1 = now;
        } else {
            self.solicited[self.solicited_next] = (nexthop, now);
            self.solicited_next = (self.solicited_next + 1) % SOLICITED;
        }
        self.send_solicit(up, nexthop, now);
    }

    /// Asks for `target`'s MAC from uplink `up` (ARP or ND).
    fn send_solicit(&mut self, up: Uplink, target: underlay::Ip16, now: u64) {
        let Some(mut c) = self.pool.alloc() else {
            self.counters.drops[DropReason::NoMbuf.index()] += 1;
            return;
        };
        let len = if underlay::is_v4(&target) { 60 } else { underlay::ND_FRAME_LEN };
        if c.append(len).is_err() {
            return;
        }
        underlay::write_solicit(c.data_mut(), &up, &target);
        self.output(up.port, up.port, c, now);
    }

    #[inline]
    fn count_drop(&mut self, in_port: usize, why: DropReason) {
        self.counters.drops[why.index()] += 1;
        self.counters.ports[in_port].drops += 1;
    }

    #[inline]
    fn switch(&mut self, port: usize, b: usize, m: Mbuf, now: u64) {
        let (src, dst) = (self.key.dl_src, self.key.dl_dst);
        let port16 = u16::try_from(port).unwrap_or(u16::MAX);
        let (members, table) = &mut self.bridges[b];
        table.learn(src, port16, now);
        if dst[0] & 1 == 0 {
            if let Some(o) = table.lookup(&dst, now) {
                let o = usize::from(o);
                if o == port {
                    return self.drop_pkt(port, m, DropReason::Hairpin);
                }
                return self.output(port, o, m, now);
            }
        }
        // Broadcast, multicast or unknown unicast: flood to every other member.
        // The last member gets the original; the others get copies, because
        // outputs may rewrite headers (VLAN push, encap).
        let n = members.len();
        let mut last = None;
        for k in 0..n {
            let o = self.bridges[b].0[k];
            if o == port {
                continue;
            }
            if let Some(prev) = last.replace(o) {
                match m.copy(&self.pool) {
                    Some(c) => self.output(port, prev, c, now),
                    None => {
                        self.counters.drops[DropReason::NoMbuf.index()] += 1;
                        self.counters.ports[port].drops += 1;
                    }
                }
            }
        }
        match last {
            Some(o) => self.output(port, o, m, now),
            None => self.drop_pkt(port, m, DropReason::NoOutput),
        }
    }

    #[inline]
    fn output(&mut self, in_port: usize, o: usize, mut m: Mbuf, now: u64) {
        match &self.ports[o].out {
            Out::Eth => {
                if let Some(tag) = self.ports[o].vlan {
                    if let Err(why) = vlan_push(&mut m, ETH_P_8021Q, tag) {
                        return self.drop_pkt(in_port, m, why);
                    }
                }
                self.enqueue(o, m, now);
            }
            Out::Geneve { uplink, tun, ingress_key, egress_key } => {
                let uplink = *uplink;
                if let Err(why) = geneve_encap(&mut m, tun, *ingress_key, *egress_key, self.key.hash(), &self.caps) {
                    return self.drop_pkt(in_port, m, why);
                }
                let c = &mut self.counters.ports[o];
                c.tx_packets += 1;
                c.tx_bytes += u64::from(m.pkt_len());
                if let Some(tag) = self.ports[uplink].vlan {
                    if let Err(why) = vlan_push(&mut m, ETH_P_8021Q, tag) {
                        return self.drop_pkt(in_port, m, why);
                    }
                }
                self.enqueue(uplink, m, now);
            }
        }
    }

    /// Queues `m` for port `o`, through the port's send-side features.
    #[inline]
    fn enqueue(&mut self, o: usize, m: Mbuf, now: u64) {
        if self.ext.flags(o) & super::features::F_TX != 0 {
            if let Some(m) = self.ext_tx(o, m, now, true) {
                self.enqueue_raw(o, m, now);
            }
            return;
        }
        self.enqueue_raw(o, m, now);
    }

    #[inline]
    fn enqueue_raw(&mut self, o: usize, m: Mbuf, now: u64) {
        if self.tx[o].pending.room() == 0 {
            self.flush(o);
        }
        let tx = &mut self.tx[o];
        if tx.pending.is_empty() {
            tx.since = now;
        }
        tx.pending_bytes += u64::from(m.pkt_len());
        if let Err(m) = tx.pending.push(m) {
            // Unreachable after a flush (which always empties the batch), but
            // never lose track of a packet.
            self.counters.drops[DropReason::TxFull.index()] += 1;
            drop(m);
        }
        if self.tx[o].pending.len() >= BURST {
            self.flush(o);
        }
    }

    /// Sends port `o`'s batch; retries once, then frees and counts what the
    /// device would not take. Always leaves the batch empty.
    #[inline]
    fn flush(&mut self, o: usize) {
        let tx = &mut self.tx[o];
        let n = tx.pending.len();
        if n == 0 {
            return;
        }
        let bytes = std::mem::take(&mut tx.pending_bytes);
        let mut sent = 0;
        if let Some(q) = &tx.q {
            sent = q.tx_burst(&mut tx.pending);
            if sent < n {
                sent += q.tx_burst(&mut tx.pending);
            }
        }
        // What is left is still ours (a port without a queue keeps all of it).
        let (left, left_bytes) = (tx.pending.len(), Self::bytes_of(&tx.pending));
        tx.pending.clear();
        let c = &mut self.counters.ports[o];
        c.tx_packets += sent as u64;
        c.tx_bytes += bytes - left_bytes;
        c.tx_drops += left as u64;
        self.counters.drops[DropReason::TxFull.index()] += left as u64;
    }

    /// Flushes every batch whose oldest packet has waited the drain
    /// interval; a port with nothing queued gets its `tx_idle` (a throttled
    /// vhost-user interrupt is signalled there).
    #[inline]
    pub fn flush_due(&mut self, now: u64) {
        for o in 0..self.tx.len() {
            let tx = &self.tx[o];
            if tx.pending.is_empty() {
                if let Some(q) = &tx.q {
                    q.tx_idle();
                }
            } else if now.wrapping_sub(tx.since) >= self.drain_ticks {
                self.flush(o);
            }
        }
    }

    /// Flushes every batch (at exit).
    pub fn flush_all(&mut self, _now: u64) {
        for o in 0..self.tx.len() {
            self.flush(o);
        }
    }
}
