//! The Southbound, compiled into a table snapshot for petreld.
//!
//! Inputs are the replica (`Logical_Flow`, `Logical_DP_Group`,
//! `Datapath_Binding`, `Port_Binding`, `Multicast_Group`, `Address_Set`,
//! `Port_Group`, `FDB`, `Chassis`, `Encap`, `Chassis_Template_Var`) and
//! what petreld has (its ports' iface-ids and the uplinks of the bridge
//! mappings). The output is a [`Snapshot`] plus a report of everything
//! refused.
//!
//! What ovn-controller does in `lflow.c` and `physical.c`, and how it is
//! done here:
//! - Logical flows of the local logical switches become rules of stages
//!   (one stage per OVN table; a stage whose only flow is `next;` is
//!   skipped and jumps to it go to the next kept stage). A flow that needs
//!   what Petrel cannot run keeps its match and gets `drop(unsupported)`,
//!   so packets that reach it are dropped and counted, never forwarded
//!   differently; the report names the flow, stage and what is missing.
//! - ovn-controller's own tables become auxiliary stages after the
//!   logical ones: port security from `Port_Binding.port_security` of the
//!   local ports (`consider_port_sec_flows`), FDB lookups from `FDB`.
//! - Physical: local VIFs (by iface-id), child ports behind their parent
//!   with their tag, localnet ports on the uplink of their network's
//!   bridge mapping with their tag, ports on other chassis by Geneve (or
//!   through the localnet port when the switch has one), multicast groups.
//!   Patch ports to logical routers and other port types are refused.
//! - Logical routers are not compiled (later work); their datapaths are
//!   listed in the report.
//!
//! Compiling is cached per logical flow and datapath: a flow is compiled
//! again only if its text changed or a name it uses (port, address set,
//! port group, residence) changed, so adding a port recompiles the flows
//! that name it, not the datapath.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petrel_dataplane::drop::DropReason;
use petrel_dataplane::qos::Unit;
use petrel_dataplane::table::{
    Action, Binding, ConjRule, Datapath, Dim, Field, Key, LocalPort, Meter, Pipeline, RemoteChassis, Rule, Snapshot,
    Stage,
};
use uuid::Uuid;

use super::actions::{
    self, Ctx, FlowMeters, MeterReq, AUX_GET_FDB, AUX_IN_PORT_SEC, AUX_IN_PORT_SEC_ND, AUX_LOOKUP_FDB, AUX_OUT_PORT_SEC,
};
use super::actions::{FLAG_LOOKUP_FDB, FLAG_PORT_SEC};
use super::expr::{self, Atom, Conj, Deps, ExprError, Resolve, Term};
use super::parse::{self, Act, Expr};
use crate::ovsdb::Replica;
use crate::sb::monitor::Scope;
use crate::sb::{
    AddressSet, Chassis, ChassisTemplateVar, DatapathBinding, Encap, Fdb, LogicalDpGroup, LogicalFlow,
    Meter as SbMeter, MeterBand, MulticastGroup, PortBinding, PortGroup, SbTable,
};

/// What petreld has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPorts {
    /// iface-id → petreld port index.
    pub ifaces: BTreeMap<String, u16>,
    /// `network_name` → petreld port index of its uplink (bridge mappings).
    pub networks: BTreeMap<String, u16>,
}

/// One thing the compiler refused: the control protocol's form, which
/// petreld keeps for `petrelctl refusals`.
pub use petrel_dataplane::ctl::proto::RefusalMsg as Refusal;

/// Compile statistics.
#[derive(Debug, Clone, Default)]
pub struct CompileStats {
    /// Datapaths compiled.
    pub n_datapaths: usize,
    /// Logical flows considered (per datapath).
    pub n_flows: usize,
    /// Of which compiled now (not from the cache).
    pub n_compiled: usize,
    /// Rules in the snapshot.
    pub n_rules: usize,
    /// Time taken.
    pub elapsed: Duration,
    /// Of which reading the replica.
    pub t_inputs: Duration,
    /// Of which compiling flows (or taking them from the cache).
    pub t_flows: Duration,
    /// Of which laying out and building stages.
    pub t_layout: Duration,
}

/// A compiled snapshot and its report.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// The tables.
    pub snapshot: Snapshot,
    /// What was refused.
    pub refusals: Vec<Refusal>,
    /// Accepted with a caveat.
    pub notes: Vec<String>,
    /// Numbers.
    pub stats: CompileStats,
}

/// One flow compiled for one datapath.
#[derive(Debug, Clone)]
struct FlowOut {
    /// Rules (OVN stage numbering in `Next`).
    rules: Arc<[Rule]>,
    /// Conjunctive rules (same numbering).
    conj: Arc<[ConjRule]>,
    refusal: Option<String>,
    notes: Vec<String>,
    deps: Deps,
    /// Meters its actions use.
    meters: actions::UsedMeters,
}

/// A cached compile: the match and actions text and the controller meter
/// it was made from.
type CachedFlow = (Arc<str>, Arc<str>, Option<Arc<str>>, Arc<FlowOut>);

/// Meter ids by identity, kept across compiles (so petreld keeps a meter's
/// bucket while it exists); ids of meters no flow uses any more are reused.
#[derive(Debug, Default)]
struct MeterIdMap {
    ids: HashMap<String, u32>,
    free: Vec<u32>,
    next: u32,
}

impl actions::MeterIds for MeterIdMap {
    fn id(&mut self, key: &str) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        self.ids.insert(key.to_owned(), id);
        id
    }
}

impl MeterIdMap {
    /// Frees the ids of meters not in `used` (lowest ids reused first).
    fn retain(&mut self, used: &BTreeMap<u32, (String, MeterReq)>) {
        let free = &mut self.free;
        self.ids.retain(|_, id| {
            let keep = used.contains_key(id);
            if !keep {
                free.push(*id);
            }
            keep
        });
        free.sort_unstable_by(|a, b| b.cmp(a));
    }
}

/// kbit (OVN's unit) → bits, saturating.
fn kbit(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0).saturating_mul(1000)
}

/// The snapshot meter for a request, or why Petrel cannot apply it.
///
/// Units as ovs-vswitchd's userspace datapath runs OVN's meters
/// (`dpif_netdev_meter_set`): `kbps` is 1000 bit/s of the Ethernet frame,
/// a burst in kbit; `pktps` packets/s and packets; a burst of 0 (none
/// given) is one second at the rate; one `drop` band.
fn meter_of(key: &str, req: &MeterReq, sb: &HashMap<String, (String, Vec<MeterBand>)>) -> Result<Meter, String> {
    match req {
        MeterReq::SetMeter { rate, burst } => {
            let b = if *burst == 0 { *rate } else { *burst };
            Ok(Meter {
                name: key.to_owned(),
                rate: rate.saturating_mul(1000),
                burst: b.saturating_mul(1000),
                unit: Unit::Bits,
            })
        }
        MeterReq::Named(name) => {
            let Some((unit, bands)) = sb.get(name) else {
                return Err(format!("meter {name:?}: no such Southbound Meter: what it limits is dropped"));
            };
            let [band] = bands.as_slice() else {
                return Err(format!(
                    "meter {name:?}: {} bands (Petrel applies meters of one drop band): what it limits is dropped",
                    bands.len()
                ));
            };
            if band.action != "drop" || band.rate <= 0 {
                return Err(format!(
                    "meter {name:?}: band {:?} rate {} is not a drop band Petrel applies: what it limits is dropped",
                    band.action, band.rate
                ));
            }
            let b = if band.burst_size > 0 { band.burst_size } else { band.rate };
            match unit.as_str() {
                "kbps" => Ok(Meter { name: name.clone(), rate: kbit(band.rate), burst: kbit(b), unit: Unit::Bits }),
                "pktps" => Ok(Meter {
                    name: name.clone(),
                    rate: u64::try_from(band.rate).unwrap_or(0),
                    burst: u64::try_from(b).unwrap_or(0),
                    unit: Unit::Packets,
                }),
                u => Err(format!("meter {name:?}: unit {u:?} is not kbps or pktps: what it limits is dropped")),
            }
        }
    }
}

/// The compiler, with its caches.
#[derive(Debug, Default)]
pub struct Compiler {
    matches: HashMap<String, Result<Arc<Expr>, parse::ParseError>>,
    actions: HashMap<String, Result<Arc<Vec<Act>>, parse::ParseError>>,
    /// (flow, datapath key, match text, actions text) → result.
    flows: HashMap<(Uuid, u32), CachedFlow>,
    /// Name fingerprints of the last run, per datapath key: ports, address
    /// sets, port groups, residence.
    names: HashMap<u32, NameState>,
    /// Address sets and port groups of the last run.
    prev_sets: (Arc<NameSets>, Arc<NameSets>),
    /// Stages built by the last run.
    stages: StageCache,
    /// Meter ids.
    meter_ids: MeterIdMap,
}

type NameSets = HashMap<String, Vec<String>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NameState {
    ports: HashMap<String, u32>,
    address_sets: Arc<NameSets>,
    /// Port groups by their SB name.
    port_groups_global: Arc<NameSets>,
    /// This datapath's port groups by their NB name (`<key>_<name>` in SB).
    port_groups: NameSets,
    resident: HashSet<String>,
    templates: BTreeMap<String, String>,
}

struct DpResolver<'a> {
    names: &'a NameState,
}

impl Resolve for DpResolver<'_> {
    fn port_key(&self, name: &str) -> Option<u32> {
        self.names.ports.get(name).copied()
    }
    fn address_set(&self, name: &str) -> Option<Vec<String>> {
        self.names.address_sets.get(name).cloned()
    }
    fn port_group(&self, name: &str) -> Option<Vec<String>> {
        self.names.port_groups.get(name).or_else(|| self.names.port_groups_global.get(name)).cloned()
    }
    fn chassis_resident(&self, port: &str) -> bool {
        self.names.resident.contains(port)
    }
}

fn key32(k: i64) -> u32 {
    u32::try_from(k).unwrap_or(0)
}

fn cookie(u: &Uuid) -> u64 {
    let b = u.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

const ALL: u128 = u128::MAX;

fn inport(k: u32) -> (Field, u128, u128) {
    (Field::Reg(14), u128::from(k), 0xffff_ffff)
}

fn outport(k: u32) -> (Field, u128, u128) {
    (Field::Reg(15), u128::from(k), 0xffff_ffff)
}

fn v4(a: std::net::Ipv4Addr) -> u128 {
    u128::from(a.to_bits())
}

fn flag(bit: u8, on: bool) -> Action {
    Action::Set { field: Field::Reg(10), value: if on { 1 << bit } else { 0 }, mask: 1 << bit }
}

/// `Port_Binding.port_security` / `mac` entry: "MAC [IP[/plen]]...".
#[derive(Debug, Clone, Default)]
struct LportAddrs {
    mac: u128,
    v4: Vec<(std::net::Ipv4Addr, u32)>,
    v6: Vec<(std::net::Ipv6Addr, u32)>,
}

fn parse_lport_addresses(s: &str) -> Option<LportAddrs> {
    let mut it = s.split_whitespace();
    let mac = it.next()?;
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = 0u128;
    for p in parts {
        m = (m << 8) | u128::from(u8::from_str_radix(p, 16).ok()?);
    }
    let mut a = LportAddrs { mac: m, ..LportAddrs::default() };
    for ip in it {
        let (addr, plen) = match ip.split_once('/') {
            Some((x, p)) => (x, Some(p.parse::<u32>().ok()?)),
            None => (ip, None),
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(x) => a.v4.push((x, plen.unwrap_or(32).min(32))),
            IpAddr::V6(x) => a.v6.push((x, plen.unwrap_or(128).min(128))),
        }
    }
    Some(a)
}

fn lla(mac: u128) -> u128 {
    // in6_generate_lla: fe80::/64 with the EUI-64 of the MAC.
    let b = mac.to_be_bytes();
    let m = &b[10..16];
    let iid = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..].copy_from_slice(&iid);
    u128::from_be_bytes(a)
}

/// (value, mask) of an IPv4 port-security entry as lflow.c matches it:
/// exact unless the host part is zero (then the subnet).
fn ps_v4(addr: std::net::Ipv4Addr, plen: u32) -> (u128, u128) {
    let mask = parse::prefix_mask(32, plen);
    let a = v4(addr);
    if plen == 32 || a & !mask & 0xffff_ffff != 0 {
        (a, 0xffff_ffff)
    } else {
        (a & mask, mask)
    }
}

fn ps_v6(addr: std::net::Ipv6Addr, plen: u32) -> (u128, u128) {
    let mask = parse::prefix_mask(128, plen);
    let a = addr.to_bits();
    if plen == 128 || a & !mask != 0 {
        (a, ALL)
    } else {
        (a & mask, mask)
    }
}

const ETH_IP: u128 = 0x0800;
const ETH_IP6: u128 = 0x86dd;
const ETH_ARP: u128 = 0x0806;

/// ovn-controller's port security tables for one local port
/// (`controller/lflow.c` `consider_port_sec_flows`, OVN 23.03).
fn port_security_rules(
    pb: &PortBinding,
    port_key: u32,
    ingress: &mut Vec<Rule>,
    nd: &mut Vec<Rule>,
    egress: &mut Vec<Rule>,
) {
    let addrs: Vec<LportAddrs> = pb.port_security.iter().filter_map(|s| parse_lport_addresses(s)).collect();
    if addrs.is_empty() {
        return;
    }
    let ck = cookie(&pb.uuid);
    let deny = || vec![flag(FLAG_PORT_SEC, true)];
    let allow = || vec![flag(FLAG_PORT_SEC, false)];
    let adv_nd = || vec![Action::Next(AUX_IN_PORT_SEC_ND)];
    let ip = inport(port_key);
    let r = |p: u32, m: &[(Field, u128, u128)], a: Vec<Action>| Rule::new(p, m, a, ck);
    let ty = |t: u128| (Field::EthType, t, 0xffff);
    // build_in_port_sec_default_flows
    ingress.push(r(80, &[ip], deny()));
    ingress.push(r(95, &[ip, ty(ETH_ARP)], adv_nd()));
    nd.push(r(80, &[ip, ty(ETH_ARP)], deny()));
    let icmp6 =
        |t: u128| [ty(ETH_IP6), (Field::IpProto, 58, 0xff), (Field::IpTtl, 255, 0xff), (Field::TpSrc, t, 0xffff)];
    {
        let [a, b, c, d] = icmp6(136);
        nd.push(r(80, &[ip, a, b, c, d], deny()));
        let [a, b, c, d] = icmp6(135);
        nd.push(r(80, &[ip, a, b, c, d], allow()));
    }
    for ps in &addrs {
        let src = (Field::EthSrc, ps.mac, 0xffff_ffff_ffff);
        // build_in_port_sec_no_ip_flows
        if ps.v4.is_empty() && ps.v6.is_empty() {
            ingress.push(r(90, &[ip, src], adv_nd()));
        }
        // build_in_port_sec_ip4_flows
        if !ps.v4.is_empty() {
            for &(a, plen) in &ps.v4 {
                let (v, m) = ps_v4(a, plen);
                ingress.push(r(90, &[ip, src, ty(ETH_IP), (Field::IpSrc, v, m)], allow()));
            }
            ingress.push(r(
                90,
                &[
                    ip,
                    src,
                    ty(ETH_IP),
                    (Field::IpSrc, 0, 0xffff_ffff),
                    (Field::IpDst, 0xffff_ffff, 0xffff_ffff),
                    (Field::IpProto, 17, 0xff),
                    (Field::TpSrc, 68, 0xffff),
                    (Field::TpDst, 67, 0xffff),
                ],
                allow(),
            ));
        }
        // build_in_port_sec_arp_flows
        if !ps.v4.is_empty() || ps.v6.is_empty() {
            let sha = (Field::ArpSha, ps.mac, 0xffff_ffff_ffff);
            if ps.v4.is_empty() {
                nd.push(r(90, &[ip, src, ty(ETH_ARP), sha], allow()));
            }
            for &(a, plen) in &ps.v4 {
                let (v, m) = ps_v4(a, plen);
                nd.push(r(90, &[ip, src, ty(ETH_ARP), sha, (Field::IpSrc, v, m)], allow()));
            }
        }
        // build_in_port_sec_ip6_flows
        if !ps.v6.is_empty() {
            for &(a, plen) in &ps.v6 {
                let (v, m) = ps_v6(a, plen);
                ingress.push(r(90, &[ip, src, ty(ETH_IP6), (Field::IpSrc, v, m)], adv_nd()));
            }
            ingress.push(r(90, &[ip, src, ty(ETH_IP6), (Field::IpSrc, lla(ps.mac), ALL)], adv_nd()));
            let ff02 = parse::prefix_mask(128, 16);
            let mld = |t: u128| {
                [
                    ip,
                    src,
                    ty(ETH_IP6),
                    (Field::IpSrc, 0, ALL),
                    (Field::IpDst, 0xff02u128 << 112, ff02),
                    (Field::IpProto, 58, 0xff),
                    (Field::TpSrc, t, 0xffff),
                    (Field::TpDst, 0, 0xffff),
                ]
            };
            ingress.push(r(90, &mld(131), allow()));
            ingress.push(r(90, &mld(143), allow()));
            ingress.push(r(90, &mld(135), adv_nd()));
        }
        // build_in_port_sec_nd_flows
        let nd_base = |t: u128| {
            vec![
                ip,
                ty(ETH_IP6),
                (Field::IpProto, 58, 0xff),
                (Field::IpTtl, 255, 0xff),
                (Field::TpSrc, t, 0xffff),
                (Field::TpDst, 0, 0xffff),
            ]
        };
        for sll in [0, ps.mac] {
            let mut m = nd_base(135);
            m.push((Field::ArpSha, sll, 0xffff_ffff_ffff));
            nd.push(r(90, &m, allow()));
        }
        if !ps.v6.is_empty() {
            for tll in [0, ps.mac] {
                let mut m = nd_base(136);
                m.push((Field::ArpTha, tll, 0xffff_ffff_ffff));
                m.push((Field::NdTarget, lla(ps.mac), ALL));
                nd.push(r(90, &m, allow()));
            }
            for &(a, plen) in &ps.v6 {
                let (v, msk) = ps_v6(a, plen);
                for tll in [0, ps.mac] {
                    let mut m = nd_base(136);
                    // lflow.c resets the match here: no ttl, with eth.src.
                    m.retain(|x| x.0 != Field::IpTtl);
                    m.push(src);
                    m.push((Field::ArpTha, tll, 0xffff_ffff_ffff));
                    m.push((Field::NdTarget, v, msk));
                    nd.push(r(90, &m, allow()));
                }
            }
        } else {
            for tll in [0, ps.mac] {
                let mut m = nd_base(136);
                m.push((Field::ArpTha, tll, 0xffff_ffff_ffff));
                nd.push(r(90, &m, allow()));
            }
        }
    }
    // Out port security.
    let op = outport(port_key);
    egress.push(r(80, &[op], deny()));
    for ps in &addrs {
        let dst = (Field::EthDst, ps.mac, 0xffff_ffff_ffff);
        egress.push(r(85, &[op, dst], allow()));
        if ps.v4.is_empty() && ps.v6.is_empty() {
            continue;
        }
        // build_out_port_sec_ip4_flows
        egress.push(r(90, &[op, dst, ty(ETH_IP)], deny()));
        if !ps.v4.is_empty() {
            for &(a, plen) in &ps.v4 {
                let mask = parse::prefix_mask(32, plen);
                let av = v4(a);
                if plen == 32 || av & !mask & 0xffff_ffff != 0 {
                    if plen != 32 {
                        let bcast = (av | !mask) & 0xffff_ffff;
                        egress.push(r(95, &[op, dst, ty(ETH_IP), (Field::IpDst, bcast, 0xffff_ffff)], allow()));
                    }
                    egress.push(r(95, &[op, dst, ty(ETH_IP), (Field::IpDst, av, 0xffff_ffff)], allow()));
                } else {
                    egress.push(r(95, &[op, dst, ty(ETH_IP), (Field::IpDst, av & mask, mask)], allow()));
                }
            }
            egress.push(r(95, &[op, dst, ty(ETH_IP), (Field::IpDst, 0xffff_ffff, 0xffff_ffff)], allow()));
            egress.push(r(95, &[op, dst, ty(ETH_IP), (Field::IpDst, 0xe000_0000, 0xf000_0000)], allow()));
        }
        // build_out_port_sec_ip6_flows
        egress.push(r(90, &[op, dst, ty(ETH_IP6)], deny()));
        if !ps.v6.is_empty() {
            for &(a, plen) in &ps.v6 {
                let (v, m) = ps_v6(a, plen);
                egress.push(r(95, &[op, dst, ty(ETH_IP6), (Field::IpDst, v, m)], allow()));
            }
            egress.push(r(95, &[op, dst, ty(ETH_IP6), (Field::IpDst, lla(ps.mac), ALL)], allow()));
            egress.push(r(
                95,
                &[op, dst, ty(ETH_IP6), (Field::IpDst, 0xffu128 << 120, parse::prefix_mask(128, 8))],
                allow(),
            ));
        }
    }
}

fn parse_mac(s: &str) -> Option<u128> {
    parse_lport_addresses(s).map(|a| a.mac)
}

/// Renumbers `Next` (and, inside generated packets, `Jump`s into either
/// pipeline) from OVN table numbers to stage indices.
fn remap(acts: &[Action], map: &dyn Fn(u16) -> Option<u16>, jump: &Jumps<'_>, cur: u16, bad: &mut bool) -> Vec<Action> {
    acts.iter()
        .map(|a| match a {
            Action::Next(t) => match map(*t) {
                Some(i) if i > cur => Action::Next(i),
                Some(_) => {
                    *bad = true;
                    Action::Drop(DropReason::Unsupported)
                }
                None => Action::Drop(DropReason::StageMiss),
            },
            Action::Clone(inner) => Action::Clone(remap(inner, map, jump, cur, bad).into()),
            Action::Generate { kind, actions } => {
                Action::Generate { kind: *kind, actions: remap(actions, map, jump, cur, bad).into() }
            }
            Action::Jump { egress, stage } => {
                let index = if *egress == jump.egress { jump.own } else { jump.other };
                match stage_of(index, *stage) {
                    Some(i) => Action::Jump { egress: *egress, stage: i },
                    None => Action::Drop(DropReason::StageMiss),
                }
            }
            other => other.clone(),
        })
        .collect()
}

/// A stage's name and the compiled flows in it, before layout.
type StageFlows = (String, Vec<Arc<FlowOut>>);

/// The stage maps a `Jump` (OVN `next(pipeline=…, table=…)`) is renumbered
/// with: this pipeline's and the other one's, both from [`stage_index`].
struct Jumps<'a> {
    egress: bool,
    own: &'a BTreeMap<u16, u16>,
    other: &'a BTreeMap<u16, u16>,
}

/// Whether an OVN table's flows are only a trivial `1 → next;`.
fn trivial_flows(flows: &[Arc<FlowOut>], t: u16) -> bool {
    matches!(flows, [f] if f.conj.is_empty() && is_trivial(&f.rules, t))
}

/// OVN table → stage index of a pipeline as [`layout`] lays it out: kept
/// (non-trivial) OVN tables in order, then the auxiliary ones.
fn stage_index(tables: &BTreeMap<u16, StageFlows>, aux: &[(u16, String, Vec<Rule>)]) -> BTreeMap<u16, u16> {
    let max = tables.keys().next_back().copied().unwrap_or(0);
    let kept = tables.iter().filter(|(t, (_, flows))| !(trivial_flows(flows, **t) && **t < max)).map(|(t, _)| *t);
    kept.chain(aux.iter().map(|a| a.0)).enumerate().map(|(i, t)| (t, u16::try_from(i).unwrap_or(u16::MAX))).collect()
}

/// Where OVN table `t` is in a pipeline of `index`: tables with no flows
/// at all miss (drop), as an empty OpenFlow table does; skipped trivial
/// ones forward to the next kept table.
fn stage_of(index: &BTreeMap<u16, u16>, t: u16) -> Option<u16> {
    if t >= AUX_IN_PORT_SEC {
        return index.get(&t).copied();
    }
    index.range(t..AUX_IN_PORT_SEC).next().map(|(_, i)| *i)
}

/// Whether a stage's rules are exactly one `1 → next;`.
fn is_trivial(rules: &[Rule], table: u16) -> bool {
    matches!(rules, [r] if r.mask.iter().all(|m| *m == 0) && r.actions.as_ref() == [Action::Next(table + 1)])
}

/// Lays out one pipeline: OVN stages (trivial ones skipped) then auxiliary
/// stages; returns the pipeline and whether a backwards `next` was refused.
/// Built stages of the last run, per (datapath, egress, OVN table): the
/// fingerprint of their inputs, whether a backwards `next` was refused, the
/// stage.
type StageCache = HashMap<(u32, bool, u16), (u64, bool, Arc<Stage>)>;

/// Lays out one pipeline: OVN stages (trivial ones skipped) then auxiliary
/// stages; returns the pipeline and whether a backwards `next` was refused.
/// `other` is the other pipeline's [`stage_index`], for `Jump`s into it.
/// A stage whose flows (the same cached compiles) and layout are unchanged
/// is reused as is, so a change rebuilds only the stages it touches.
fn layout(
    dp: u32,
    egress: bool,
    tables: BTreeMap<u16, StageFlows>,
    aux: Vec<(u16, String, Vec<Rule>)>,
    other: &BTreeMap<u16, u16>,
    cache: &mut StageCache,
) -> (Pipeline, bool) {
    use std::hash::{Hash, Hasher};
    let index = stage_index(&tables, &aux);
    // (table, name, flows; or the rules of an auxiliary stage)
    type Kept = (u16, String, Vec<Arc<FlowOut>>, Option<Vec<Rule>>);
    let kept: Vec<Kept> = tables
        .into_iter()
        .filter(|(t, _)| index.contains_key(t))
        .map(|(t, (n, f))| (t, n, f, None))
        .chain(aux.into_iter().map(|(t, n, r)| (t, n, Vec::new(), Some(r))))
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&index, other).hash(&mut h);
    let map_hash = h.finish();
    let map = |t: u16| stage_of(&index, t);
    let jumps = Jumps { egress, own: &index, other };
    let mut backwards = false;
    let mut stages = Vec::with_capacity(kept.len());
    for (i, (t, name, flows, aux_rules)) in kept.into_iter().enumerate() {
        let cur = u16::try_from(i).unwrap_or(u16::MAX);
        let mut bw = false;
        let mut re = |r: &Rule| {
            let acts = remap(&r.actions, &map, &jumps, cur, &mut bw);
            Rule { actions: acts.into(), ..r.clone() }
        };
        if let Some(rules) = aux_rules {
            stages.push(Arc::new(Stage::new(name, rules.iter().map(&mut re).collect())));
            backwards |= bw;
            continue;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (map_hash, cur, &name).hash(&mut h);
        for f in &flows {
            (Arc::as_ptr(f) as usize).hash(&mut h);
        }
        let fp = h.finish();
        if let Some((cfp, cbw, st)) = cache.get(&(dp, egress, t)) {
            if *cfp == fp {
                backwards |= *cbw;
                stages.push(st.clone());
                continue;
            }
        }
        let rules = flows.iter().flat_map(|f| f.rules.iter()).map(&mut re).collect();
        let conj = flows
            .iter()
            .flat_map(|f| f.conj.iter())
            .map(|c| ConjRule { rule: re(&c.rule), dims: c.dims.clone() })
            .collect();
        let st = Arc::new(Stage::with_conj(name, rules, conj));
        cache.insert((dp, egress, t), (fp, bw, st.clone()));
        backwards |= bw;
        stages.push(st);
    }
    (Pipeline { stages }, backwards)
}

impl Compiler {
    /// A compiler with empty caches.
    pub fn new() -> Self {
        Compiler::default()
    }

    fn parse_match(&mut self, text: &str) -> Result<Arc<Expr>, parse::ParseError> {
        if let Some(r) = self.matches.get(text) {
            return r.clone();
        }
        let r = parse::parse_match(text).map(Arc::new);
        self.matches.insert(text.to_owned(), r.clone());
        r
    }

    fn parse_actions(&mut self, text: &str) -> Result<Arc<Vec<Act>>, parse::ParseError> {
        if let Some(r) = self.actions.get(text) {
            return r.clone();
        }
        let r = parse::parse_actions(text).map(Arc::new);
        self.actions.insert(text.to_owned(), r.clone());
        r
    }

    fn compile_flow(&mut self, f: &FlowRow<'_>, dp_key: u32, names: &NameState) -> FlowOut {
        let mut deps = Deps::default();
        let mut notes = Vec::new();
        let vars = |n: &str| names.templates.get(n).cloned();
        let fail = |what: String, deps: Deps, notes: Vec<String>| FlowOut {
            rules: Arc::from(Vec::new()),
            conj: Arc::from(Vec::new()),
            refusal: Some(what),
            notes,
            deps,
            meters: Vec::new(),
        };
        let (mtext, atext) =
            match (parse::expand_templates(f.r#match, &vars), parse::expand_templates(f.actions, &vars)) {
                (Ok(m), Ok(a)) => (m, a),
                (Err(e), _) => return fail(format!("match {e}"), deps, notes),
                (_, Err(e)) => return fail(format!("actions {e}"), deps, notes),
            };
        let m = match self.parse_match(&mtext) {
            Ok(m) => m,
            Err(e) => return fail(format!("match {e}"), deps, notes),
        };
        let a = match self.parse_actions(&atext) {
            Ok(a) => a,
            Err(e) => return fail(format!("actions {e}"), deps, notes),
        };
        let r = DpResolver { names };
        let terms = match expr::to_terms(&m, &r, &mut deps) {
            Ok(c) => c,
            Err(e) => return fail(describe("match", &e), deps, notes),
        };
        let table = u16::try_from(f.table_id).unwrap_or(u16::MAX);
        let egress = f.pipeline == "egress";
        // A meter's identity: the flow apart from its actions. northd
        // replaces a flow (new UUID) when its actions change, e.g. a QoS
        // rate; keyed so, the meter keeps its bucket and takes the new rate
        // live. Identical flows on several datapaths are one flow with a
        // datapath group in northd 23.03, and so one meter, as in
        // ovn-controller (its meter table is keyed by the flow).
        let meters = FlowMeters {
            flow: format!("{} table {} priority {} match {}", f.pipeline, f.table_id, f.priority, f.r#match),
            controller: f.controller_meter.map(str::to_owned),
            ids: &mut self.meter_ids,
            used: Vec::new(),
        };
        let mut cx = Ctx { resolve: &r, table, egress, ports: &mut deps.ports, notes: &mut notes, meters };
        let (acts, refusal) = match actions::compile(&a, &mut cx) {
            // No actions at all is OVN's drop (`/* drop */`, as ACLs write it).
            Ok(acts) if acts.is_empty() => (vec![Action::Drop(DropReason::Explicit)], None),
            Ok(acts) => (acts, None),
            // Refused: keep the match, drop what reaches it.
            Err(e) => {
                cx.meters.used.clear();
                (vec![Action::Drop(DropReason::Unsupported)], Some(describe("actions", &e)))
            }
        };
        let meters = std::mem::take(&mut cx.meters.used);
        let _ = dp_key;
        let prio = u32::try_from(f.priority).unwrap_or(0);
        let ck = cookie(&f.uuid);
        let acts: Arc<[Action]> = acts.into();
        let mut rules = Vec::new();
        let mut conj = Vec::new();
        for t in &terms {
            match t {
                Term::Plain(c) => rules.push(rule_of(prio, c, acts.clone(), ck)),
                Term::Conjunctive { base, dims } => conj.push(ConjRule {
                    rule: rule_of(prio, base, acts.clone(), ck),
                    dims: dims.iter().map(|alts| Dim::new(alts.iter().map(atom_words))).collect(),
                }),
            }
        }
        FlowOut { rules: rules.into(), conj: conj.into(), refusal, notes, deps, meters }
    }

    /// Compiles the replica's local datapaths.
    pub fn compile(&mut self, replica: &Replica, system_id: &str, local: &LocalPorts) -> Compiled {
        let t0 = Instant::now();
        let mut out = Compiled::default();
        let chassis: Vec<Chassis> = Chassis::all(replica);
        let ours = chassis.iter().find(|c| c.name == system_id).map(|c| c.uuid);
        // Remote chassis with a Geneve encap.
        let encaps: HashMap<Uuid, Encap> = Encap::all(replica).into_iter().map(|e| (e.uuid, e)).collect();
        let mut chassis_index: HashMap<Uuid, u16> = HashMap::new();
        for c in chassis.iter().filter(|c| Some(c.uuid) != ours) {
            let ip = c
                .encaps
                .iter()
                .filter_map(|e| encaps.get(e))
                .find(|e| e.r#type == "geneve")
                .and_then(|e| e.ip.parse::<IpAddr>().ok());
            if let Some(ip) = ip {
                chassis_index.insert(c.uuid, u16::try_from(out.snapshot.chassis.len()).unwrap_or(u16::MAX));
                out.snapshot.chassis.push(RemoteChassis { name: c.name.clone(), ip });
            }
        }

        let iface_ids: BTreeSet<String> = local.ifaces.keys().cloned().collect();
        let scope = Scope::compute(replica, system_id, &iface_ids);
        let dps: Vec<DatapathBinding> =
            DatapathBinding::all(replica).into_iter().filter(|d| scope.datapaths.contains(&d.uuid)).collect();
        let pbs: Vec<PortBinding> = PortBinding::all(replica);
        let mut by_dp: HashMap<Uuid, Vec<&PortBinding>> = HashMap::new();
        for pb in &pbs {
            by_dp.entry(pb.datapath).or_default().push(pb);
        }
        let by_name: HashMap<&str, &PortBinding> = pbs.iter().map(|p| (p.logical_port.as_str(), p)).collect();
        let pb_keys: HashMap<Uuid, u32> = pbs.iter().map(|p| (p.uuid, key32(p.tunnel_key))).collect();
        let groups: Vec<MulticastGroup> = MulticastGroup::all(replica);
        let address_sets: HashMap<String, Vec<String>> =
            AddressSet::all(replica).into_iter().map(|a| (a.name, a.addresses)).collect();
        let port_groups: HashMap<String, Vec<String>> =
            PortGroup::all(replica).into_iter().map(|p| (p.name, p.ports)).collect();
        let templates: BTreeMap<String, String> = ChassisTemplateVar::all(replica)
            .into_iter()
            .find(|t| t.chassis == system_id)
            .map(|t| t.variables)
            .unwrap_or_default();
        let fdb: Vec<Fdb> = Fdb::all(replica);
        let dp_groups: HashMap<Uuid, Vec<Uuid>> =
            LogicalDpGroup::all(replica).into_iter().map(|g| (g.uuid, g.datapaths)).collect();
        // Flows per datapath.
        let mut flows_by_dp: HashMap<Uuid, Vec<FlowRow<'_>>> = HashMap::new();
        for (f, dp, group) in flow_rows(replica) {
            let dps_of: &[Uuid] = match (dp, group) {
                (Some(d), _) => &[d],
                (None, Some(g)) => dp_groups.get(&g).map_or(&[], Vec::as_slice),
                _ => &[],
            };
            for d in dps_of {
                if scope.datapaths.contains(d) {
                    flows_by_dp.entry(*d).or_default().push(f.clone());
                }
            }
        }
        let sets = (Arc::new(address_sets), Arc::new(port_groups));
        let sets_changed = (diff_keys(&self.prev_sets.0, &sets.0), diff_keys(&self.prev_sets.1, &sets.1));
        self.prev_sets = sets.clone();

        out.stats.t_inputs = t0.elapsed();
        let mut local_ports: Vec<Option<LocalPort>> = Vec::new();
        let mut set_local = |idx: u16, lp: LocalPort| {
            let i = usize::from(idx);
            if local_ports.len() <= i {
                local_ports.resize(i + 1, None);
            }
            local_ports[i] = Some(lp);
        };
        let mut seen_flows: HashSet<(Uuid, u32)> = HashSet::new();
        // Meters the compiled flows use, by id (a flow on several datapaths
        // through a datapath group has one meter for all of them, as in
        // ovn-controller, whose meter table is keyed by the flow).
        let mut used_meters: BTreeMap<u32, (String, MeterReq)> = BTreeMap::new();

        for dp in &dps {
            let dp_key = key32(dp.tunnel_key);
            let name = dp
                .external_ids
                .get("name")
                .or_else(|| dp.external_ids.get("logical-switch"))
                .cloned()
                .unwrap_or_else(|| format!("datapath {dp_key}"));
            if dp.external_ids.contains_key("logical-router") {
                out.refusals.push(Refusal {
                    datapath: name,
                    datapath_key: dp_key,
                    uuid: dp.uuid.to_string(),
                    pipeline: "datapath".into(),
                    table: 0,
                    stage: String::new(),
                    what: "logical routers are not compiled yet: packets to its patch ports are dropped (unsupported)"
                        .into(),
                });
                continue;
            }
            out.stats.n_datapaths += 1;
            let ports = by_dp.get(&dp.uuid).cloned().unwrap_or_default();
            let mut d = Datapath { key: dp_key, name: name.clone(), ..Datapath::default() };
            let mut names = NameState {
                address_sets: sets.0.clone(),
                port_groups_global: sets.1.clone(),
                templates: templates.clone(),
                ..NameState::default()
            };
            // The switch's localnet port bridged here, if any (with several,
            // the one whose network is mapped on this chassis): every port
            // that is not local is reached through it (physical.c
            // PORT_LOCALNET, whatever chassis the port is on, if any), not
            // by tunnel.
            let localnet_binding = ports
                .iter()
                .copied()
                .find(|p| {
                    p.r#type == "localnet"
                        && p.options.get("network_name").is_some_and(|n| local.networks.contains_key(n))
                })
                .map(|ln| Binding::ViaLocalnet { localnet: key32(ln.tunnel_key) });
            let mut in_ps = Vec::new();
            let mut in_ps_nd = Vec::new();
            let mut out_ps = Vec::new();
            for pb in &ports {
                let k = key32(pb.tunnel_key);
                names.ports.insert(pb.logical_port.clone(), k);
                d.port_names.insert(k, pb.logical_port.clone());
                if pb.chassis.is_some() && pb.chassis == ours {
                    names.resident.insert(pb.logical_port.clone());
                }
                let lp = LocalPort { datapath: dp_key, port: k };
                let refuse = |what: &str, out: &mut Compiled| {
                    out.refusals.push(Refusal {
                        datapath: name.clone(),
                        datapath_key: dp_key,
                        uuid: pb.uuid.to_string(),
                        pipeline: "port".into(),
                        table: 0,
                        stage: pb.logical_port.clone(),
                        what: what.into(),
                    });
                };
                let binding = match pb.r#type.as_str() {
                    "" | "localport" | "virtual" => {
                        let parent = pb.parent_port.as_deref().filter(|p| !p.is_empty());
                        if let Some(parent) = parent {
                            let parent_idx = local.ifaces.get(parent).copied();
                            let parent_here =
                                by_name.get(parent).is_some_and(|pp| pp.chassis.is_some() && pp.chassis == ours);
                            match (parent_idx, pb.tag.and_then(|t| u16::try_from(t).ok())) {
                                (Some(idx), Some(tag)) if parent_here => {
                                    out.snapshot.vlan_ports.insert((idx, tag), lp);
                                    names.resident.insert(pb.logical_port.clone());
                                    Some(Binding::Local { port: idx, vlan: Some(tag) })
                                }
                                _ if localnet_binding.is_some() && pb.additional_chassis.is_empty() => localnet_binding,
                                _ => pb
                                    .chassis
                                    .and_then(|c| chassis_index.get(&c))
                                    .map(|c| Binding::Remote { chassis: *c }),
                            }
                        } else if let (Some(idx), true) = (
                            local.ifaces.get(&pb.logical_port),
                            pb.chassis.is_some() && pb.chassis == ours || pb.r#type == "localport",
                        ) {
                            set_local(*idx, lp);
                            if pb.r#type != "localport" {
                                port_security_rules(pb, k, &mut in_ps, &mut in_ps_nd, &mut out_ps);
                            }
                            Some(Binding::Local { port: *idx, vlan: None })
                        } else {
                            match pb.chassis.and_then(|c| chassis_index.get(&c)) {
                                _ if localnet_binding.is_some()
                                    && pb.r#type != "localport"
                                    && pb.additional_chassis.is_empty() =>
                                {
                                    localnet_binding
                                }
                                Some(c) if pb.r#type != "localport" => Some(Binding::Remote { chassis: *c }),
                                _ => None,
                            }
                        }
                    }
                    "localnet" => {
                        let net = pb.options.get("network_name");
                        match net.and_then(|n| local.networks.get(n)) {
                            Some(&uplink) => {
                                let tag = pb.tag.and_then(|t| u16::try_from(t).ok());
                                match tag {
                                    Some(t) => {
                                        out.snapshot.vlan_ports.insert((uplink, t), lp);
                                    }
                                    None => set_local(uplink, lp),
                                }
                                Some(Binding::Localnet { uplink, vlan: tag })
                            }
                            None => {
                                refuse(
                                    &format!(
                                        "localnet port: no bridge mapping for network {:?} on this chassis",
                                        net.map_or("", String::as_str)
                                    ),
                                    &mut out,
                                );
                                None
                            }
                        }
                    }
                    other => {
                        refuse(
                            &format!(
                                "port type {other:?} is not supported here: packets to it are dropped (unsupported)"
                            ),
                            &mut out,
                        );
                        Some(Binding::Refused)
                    }
                };
                if let Some(b) = binding {
                    d.ports.insert(k, b);
                }
            }
            for g in groups.iter().filter(|g| g.datapath == dp.uuid) {
                let k = key32(g.tunnel_key);
                names.ports.insert(g.name.clone(), k);
                let members: Vec<u32> = g.ports.iter().filter_map(|u| pb_keys.get(u)).copied().collect();
                d.groups.insert(k, members.into());
            }
            // Port groups: SB names are `<datapath key>_<name>` (northd 23.03
            // splits them per datapath); flows use the NB name.
            let prefix = format!("{dp_key}_");
            for (n, ports) in sets.1.iter() {
                if let Some(short) = n.strip_prefix(&prefix) {
                    names.port_groups.insert(short.to_owned(), ports.clone());
                }
            }

            // Which cached flows are stale: names they use changed.
            let old = self.names.remove(&dp_key).unwrap_or_default();
            let mut changed = changed_names(&old, &names);
            changed.address_sets.extend(sets_changed.0.iter().cloned());
            changed.port_groups.extend(sets_changed.1.iter().cloned());

            let mut ingress: BTreeMap<u16, StageFlows> = BTreeMap::new();
            let mut egress: BTreeMap<u16, StageFlows> = BTreeMap::new();
            for f in flows_by_dp.get(&dp.uuid).map(Vec::as_slice).unwrap_or_default() {
                out.stats.n_flows += 1;
                let key = (f.uuid, dp_key);
                seen_flows.insert(key);
                let fresh = match self.flows.get(&key) {
                    Some((m, a, cm, fo))
                        if **m == *f.r#match
                            && **a == *f.actions
                            && cm.as_deref() == f.controller_meter
                            && !uses(&fo.deps, &changed) =>
                    {
                        fo.clone()
                    }
                    _ => {
                        out.stats.n_compiled += 1;
                        let fo = Arc::new(self.compile_flow(f, dp_key, &names));
                        let cm = f.controller_meter.map(Arc::from);
                        self.flows.insert(key, (f.r#match.into(), f.actions.into(), cm, fo.clone()));
                        fo
                    }
                };
                for (id, k, req) in &fresh.meters {
                    used_meters.insert(*id, (k.clone(), req.clone()));
                }
                let table = u16::try_from(f.table_id).unwrap_or(u16::MAX);
                let stage_name = f.stage.to_owned();
                if let Some(what) = &fresh.refusal {
                    out.refusals.push(Refusal {
                        datapath: name.clone(),
                        datapath_key: dp_key,
                        uuid: f.uuid.to_string(),
                        pipeline: f.pipeline.to_owned(),
                        table: u32::from(table),
                        stage: stage_name.clone(),
                        what: what.clone(),
                    });
                }
                for n in &fresh.notes {
                    if !out.notes.contains(n) {
                        out.notes.push(n.clone());
                    }
                }
                let p = if f.pipeline == "egress" { &mut egress } else { &mut ingress };
                p.entry(table).or_insert_with(|| (stage_name, Vec::new())).1.push(fresh);
            }
            self.names.insert(dp_key, names);
            let t_l = Instant::now();

            // ovn-controller's own tables.
            let catch_all = || Rule::new(0, &[], vec![], 0);
            let mut lookup_fdb = vec![catch_all()];
            let mut get_fdb = vec![catch_all()];
            for e in fdb.iter().filter(|e| key32(e.dp_key) == dp_key) {
                let Some(mac) = parse_mac(&e.mac) else { continue };
                let pk = key32(e.port_key);
                let ck = cookie(&e.uuid);
                let eth = |f| (f, mac, 0xffff_ffff_ffff);
                lookup_fdb.push(Rule::new(
                    100,
                    &[inport(pk), eth(Field::EthSrc)],
                    vec![flag(FLAG_LOOKUP_FDB, true)],
                    ck,
                ));
                get_fdb.push(Rule::new(
                    100,
                    &[eth(Field::EthDst)],
                    vec![Action::Set { field: Field::Reg(15), value: u128::from(pk), mask: 0xffff_ffff }],
                    ck,
                ));
            }
            in_ps.push(catch_all());
            in_ps_nd.push(catch_all());
            out_ps.push(catch_all());
            let aux_in = vec![
                (AUX_IN_PORT_SEC, "petrel_in_port_sec".to_owned(), in_ps),
                (AUX_IN_PORT_SEC_ND, "petrel_in_port_sec_nd".to_owned(), in_ps_nd),
                (AUX_LOOKUP_FDB, "petrel_lookup_fdb".to_owned(), lookup_fdb),
                (AUX_GET_FDB, "petrel_get_fdb".to_owned(), get_fdb),
            ];
            let aux_out = vec![(AUX_OUT_PORT_SEC, "petrel_out_port_sec".to_owned(), out_ps)];
            let (index_in, index_out) = (stage_index(&ingress, &aux_in), stage_index(&egress, &aux_out));
            let (pi, b1) = layout(dp_key, false, ingress, aux_in, &index_out, &mut self.stages);
            let (pe, b2) = layout(dp_key, true, egress, aux_out, &index_in, &mut self.stages);
            if b1 || b2 {
                out.refusals.push(Refusal {
                    datapath: name.clone(),
                    datapath_key: dp_key,
                    uuid: dp.uuid.to_string(),
                    pipeline: "datapath".into(),
                    table: 0,
                    stage: String::new(),
                    what: "a `next` to an earlier table was replaced by drop(unsupported)".into(),
                });
            }
            d.ingress = pi;
            d.egress = pe;
            out.stats.t_layout += t_l.elapsed();
            out.stats.n_rules += d
                .ingress
                .stages
                .iter()
                .chain(&d.egress.stages)
                .map(|s| s.rules().len() + s.conj_rules().len())
                .sum::<usize>();
            out.snapshot.datapaths.insert(dp_key, Arc::new(d));
        }
        self.flows.retain(|k, _| seen_flows.contains(k));
        self.meter_ids.retain(&used_meters);
        if let Some(&last) = used_meters.keys().next_back() {
            let sb = sb_meters(replica);
            out.snapshot.meters = vec![None; usize::try_from(last).unwrap_or(0) + 1];
            for (id, (key, req)) in &used_meters {
                match meter_of(key, req, &sb) {
                    Ok(m) => out.snapshot.meters[*id as usize] = Some(m),
                    Err(what) => out.refusals.push(Refusal {
                        datapath: String::new(),
                        datapath_key: 0,
                        uuid: String::new(),
                        pipeline: "meter".into(),
                        table: *id,
                        stage: key.clone(),
                        what,
                    }),
                }
            }
        }
        out.refusals.sort_by(|a, b| {
            (a.datapath_key, &a.pipeline, a.table, &a.uuid).cmp(&(b.datapath_key, &b.pipeline, b.table, &b.uuid))
        });
        out.snapshot.local_ports = local_ports;
        out.stats.elapsed = t0.elapsed();
        out
    }
}

/// Southbound meters by name: unit and bands.
fn sb_meters(replica: &Replica) -> HashMap<String, (String, Vec<MeterBand>)> {
    let bands: HashMap<Uuid, MeterBand> = MeterBand::all(replica).into_iter().map(|b| (b.uuid, b)).collect();
    SbMeter::all(replica)
        .into_iter()
        .map(|m| {
            let bs = m.bands.iter().filter_map(|u| bands.get(u).cloned()).collect();
            (m.name, (m.unit, bs))
        })
        .collect()
}

/// A `Logical_Flow` row, borrowed from the replica (decoding 30k rows into
/// owned structs on every compile would cost more than the compile).
#[derive(Debug, Clone)]
struct FlowRow<'a> {
    uuid: Uuid,
    r#match: &'a str,
    actions: &'a str,
    pipeline: &'a str,
    table_id: i64,
    priority: i64,
    stage: &'a str,
    /// `controller_meter`, if set.
    controller_meter: Option<&'a str>,
}

/// Every `Logical_Flow` with its datapath or datapath group.
fn flow_rows(replica: &Replica) -> Vec<(FlowRow<'_>, Option<Uuid>, Option<Uuid>)> {
    let Some(t) = replica.schema().table(LogicalFlow::TABLE) else { return Vec::new() };
    let idx = |c: &str| t.column_index(c);
    let (Some(i_dp), Some(i_grp), Some(i_pipe), Some(i_tab), Some(i_prio), Some(i_m), Some(i_a), Some(i_ext)) = (
        idx("logical_datapath"),
        idx("logical_dp_group"),
        idx("pipeline"),
        idx("table_id"),
        idx("priority"),
        idx("match"),
        idx("actions"),
        idx("external_ids"),
    ) else {
        return Vec::new();
    };
    let stage_key = crate::ovsdb::Atom::from("stage-name");
    // An optional column (older schemas lack it).
    let i_cm = idx("controller_meter");
    replica
        .rows(LogicalFlow::TABLE)
        .map(|(u, row)| {
            let v = row.values();
            let s = |i: usize| v[i].as_scalar().and_then(|a| a.as_str()).unwrap_or_default();
            let n = |i: usize| v[i].as_scalar().and_then(|a| a.as_integer()).unwrap_or_default();
            let id = |i: usize| v[i].as_scalar().and_then(|a| a.as_uuid());
            let f = FlowRow {
                uuid: *u,
                r#match: s(i_m),
                actions: s(i_a),
                pipeline: s(i_pipe),
                table_id: n(i_tab),
                priority: n(i_prio),
                stage: v[i_ext].get(&stage_key).and_then(|a| a.as_str()).unwrap_or_default(),
                controller_meter: i_cm
                    .and_then(|i| v[i].as_scalar())
                    .and_then(|a| a.as_str())
                    .filter(|s| !s.is_empty()),
            };
            (f, id(i_dp), id(i_grp))
        })
        .collect()
}

fn describe(what: &str, e: &ExprError) -> String {
    if e.unsupported {
        format!("{what}: column {}: unsupported: {}", e.pos + 1, e.msg)
    } else {
        format!("{what}: column {}: {}", e.pos + 1, e.msg)
    }
}

fn atom_words(a: &Atom) -> ([u64; Key::WORDS], [u64; Key::WORDS]) {
    let r = Rule::new(0, std::slice::from_ref(a), vec![], 0);
    (r.value, r.mask)
}

fn rule_of(prio: u32, c: &Conj, acts: Arc<[Action]>, ck: u64) -> Rule {
    let mut r = Rule::new(prio, &c.0, vec![], ck);
    r.actions = acts;
    r
}

#[derive(Debug, Default)]
struct Changed {
    ports: HashSet<String>,
    address_sets: HashSet<String>,
    port_groups: HashSet<String>,
    resident: HashSet<String>,
    templates: bool,
}

fn diff_keys<V: PartialEq>(a: &HashMap<String, V>, b: &HashMap<String, V>) -> HashSet<String> {
    let mut s: HashSet<String> = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
    s.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    s
}

fn changed_names(old: &NameState, new: &NameState) -> Changed {
    Changed {
        ports: diff_keys(&old.ports, &new.ports),
        address_sets: HashSet::new(),
        port_groups: diff_keys(&old.port_groups, &new.port_groups),
        resident: old.resident.symmetric_difference(&new.resident).cloned().collect(),
        templates: old.templates != new.templates,
    }
}

fn uses(d: &Deps, c: &Changed) -> bool {
    c.templates
        || d.ports.iter().any(|p| c.ports.contains(p))
        || d.address_sets.iter().any(|p| c.address_sets.contains(p))
        || d.port_groups.iter().any(|p| c.port_groups.contains(p))
        || d.resident.iter().any(|p| c.resident.contains(p))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod jump_layout_tests {
    //! `next(pipeline=…, table=N)` inside generated packets is renumbered
    //! with the target pipeline's layout (trivial stages skipped).
    use petrel_dataplane::table::GenKind;

    use super::*;

    fn t(n: u16, rules: Vec<Rule>) -> (u16, StageFlows) {
        let f = FlowOut {
            rules: rules.into(),
            conj: Arc::from(Vec::new()),
            refusal: None,
            notes: Vec::new(),
            deps: Deps::default(),
            meters: Vec::new(),
        };
        (n, (format!("t{n}"), vec![Arc::new(f)]))
    }

    fn next(n: u16) -> Vec<Rule> {
        vec![Rule::new(0, &[], vec![Action::Next(n)], 0)]
    }

    fn other() -> Vec<Rule> {
        vec![Rule::new(0, &[], vec![Action::Output], 0), Rule::new(1, &[(Field::IpProto, 6, 0xff)], vec![], 0)]
    }

    #[test]
    fn jumps_follow_the_other_pipelines_layout() {
        // Egress: tables 0..=5, of which 0, 1, 3 and 4 are trivial: 2 → stage 0, 5 → stage 1.
        let egress: BTreeMap<_, _> =
            [t(0, next(1)), t(1, next(2)), t(2, other()), t(3, next(4)), t(4, next(5)), t(5, other())].into();
        let gen = |stage| Action::Generate {
            kind: GenKind::Reject,
            actions: vec![Action::Jump { egress: true, stage }].into(),
        };
        let ingress: BTreeMap<_, _> = [t(0, next(1)), t(1, vec![Rule::new(0, &[], vec![gen(5), gen(3)], 0)])].into();
        let (index_in, index_out) = (stage_index(&ingress, &[]), stage_index(&egress, &[]));
        let mut cache = StageCache::new();
        let (pi, bad) = layout(1, false, ingress, vec![], &index_out, &mut cache);
        assert!(!bad);
        let (pe, _) = layout(1, true, egress, vec![], &index_in, &mut cache);
        assert_eq!(pe.stages.len(), 2);
        let acts = &pi.stages.last().unwrap().rules()[0].actions;
        let jumps: Vec<_> = acts
            .iter()
            .map(|a| match a {
                Action::Generate { actions, .. } => actions[0].clone(),
                _ => panic!("{a:?}"),
            })
            .collect();
        // Table 5 is stage 1; a skipped table 3 goes on at the next kept one, 5.
        assert_eq!(jumps, [Action::Jump { egress: true, stage: 1 }, Action::Jump { egress: true, stage: 1 }]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod meter_tests {
    use super::*;

    #[test]
    fn set_meter_units_and_burst_as_ovs_runs_them() {
        let sb = HashMap::new();
        // set_meter(1000, 200): 1000 kbit/s, 200 kbit.
        let m = meter_of("k", &MeterReq::SetMeter { rate: 1000, burst: 200 }, &sb).unwrap();
        assert_eq!((m.rate, m.burst, m.unit), (1_000_000, 200_000, Unit::Bits));
        // No burst: one second at the rate (dpif_netdev_meter_set).
        let m = meter_of("k", &MeterReq::SetMeter { rate: 64, burst: 0 }, &sb).unwrap();
        assert_eq!((m.rate, m.burst), (64_000, 64_000));
    }

    #[test]
    fn sb_meters_one_drop_band_else_refused() {
        let band =
            |action: &str, rate, burst_size| MeterBand { uuid: Uuid::nil(), action: action.into(), rate, burst_size };
        let mut sb = HashMap::new();
        sb.insert("copp".to_owned(), ("pktps".to_owned(), vec![band("drop", 10, 0)]));
        sb.insert("acl".to_owned(), ("kbps".to_owned(), vec![band("drop", 500, 50)]));
        sb.insert("two".to_owned(), ("kbps".to_owned(), vec![band("drop", 1, 1), band("drop", 2, 2)]));
        sb.insert("dscp".to_owned(), ("kbps".to_owned(), vec![band("dscp_remark", 1, 1)]));
        let get = |n: &str| meter_of(n, &MeterReq::Named(n.into()), &sb);
        let m = get("copp").unwrap();
        assert_eq!((m.name.as_str(), m.rate, m.burst, m.unit), ("copp", 10, 10, Unit::Packets));
        let m = get("acl").unwrap();
        assert_eq!((m.rate, m.burst, m.unit), (500_000, 50_000, Unit::Bits));
        assert!(get("two").unwrap_err().contains("2 bands"));
        assert!(get("dscp").unwrap_err().contains("not a drop band"));
        assert!(get("nope").unwrap_err().contains("no such Southbound Meter"));
    }

    #[test]
    fn meter_ids_are_stable_and_reused_after_release() {
        use actions::MeterIds;
        let mut ids = MeterIdMap::default();
        let (a, b) = (ids.id("a"), ids.id("b"));
        assert_eq!((a, b, ids.id("a")), (0, 1, 0));
        let mut used = BTreeMap::new();
        used.insert(b, ("b".to_owned(), MeterReq::Named("b".into())));
        ids.retain(&used);
        assert_eq!(ids.id("b"), 1, "kept");
        assert_eq!(ids.id("c"), 0, "a's id reused");
    }
}
