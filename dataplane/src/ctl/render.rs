//! Human-readable text for `petrelctl`, and the server-side helpers that
//! build replies from a [`Snapshot`]: [`dump_tables`], [`trace`] and the
//! [`TraceCollector`] that turns [`TraceEvent`]s into lines.
//!
//! Matches and actions are written OVN-like (`reg14 == 1 && eth.src ==
//! 02:00:00:00:00:01`, `reg15 = 2; output;`), over the key's own fields:
//! what the fast path compares, not the logical flow it came from (the
//! cookie links back to that).

use std::fmt::Write as _;
use std::mem::offset_of;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::microflow;
use super::proto::{
    DatapathDump, DropsReply, ErrorCode, ErrorReply, LogicalPortInfo, PmdStatsReply, RuleDump, ShowReply, StageDump,
    TablesReply, TraceReply,
};
use crate::flow::FlowKey;
use crate::table::exec::{self, Emit, Outcome, Target, TraceEvent, Tracer};
use crate::table::{Action, Binding, Datapath, Field, Key, Meta, Rule, SlowPathReason, Snapshot, Stage};

// ---------------------------------------------------------------- key fields

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Host-order integer, shown in decimal.
    Int,
    /// Host-order integer, shown in hex (EtherTypes, TCIs, flags).
    Hex,
    /// Network-order MAC.
    Mac,
    /// 16-byte address, IPv4-mapped for IPv4.
    Ip,
}

#[derive(Clone, Copy)]
struct Desc {
    name: &'static str,
    off: usize,
    len: usize,
    kind: Kind,
}

const F: usize = offset_of!(Key, flow);
const M: usize = offset_of!(Key, meta);

macro_rules! fk {
    ($name:literal, $f:ident, $len:expr, $kind:ident) => {
        Desc { name: $name, off: F + offset_of!(FlowKey, $f), len: $len, kind: Kind::$kind }
    };
}

/// Every matchable part of [`Key`], in key order (padding left out).
const FIELDS: &[Desc] = &[
    fk!("tun.src", tun_src, 16, Ip),
    fk!("tun.dst", tun_dst, 16, Ip),
    fk!("tun.vni", tun_vni, 4, Int),
    fk!("tun.ingress_key", tun_ingress_key, 2, Int),
    fk!("tun.egress_key", tun_egress_key, 2, Int),
    fk!("in_port", in_port, 4, Int),
    fk!("ipv6.label", ipv6_label, 4, Int),
    fk!("eth.dst", dl_dst, 6, Mac),
    fk!("eth.src", dl_src, 6, Mac),
    fk!("eth.type", dl_type, 2, Hex),
    fk!("vlan.tpid", vlan_tpid, 2, Hex),
    Desc { name: "vlan.tci", off: F + offset_of!(FlowKey, vlan_tci), len: 2, kind: Kind::Hex },
    Desc { name: "vlan.tci2", off: F + offset_of!(FlowKey, vlan_tci) + 2, len: 2, kind: Kind::Hex },
    fk!("ip.src", nw_src, 16, Ip),
    fk!("ip.dst", nw_dst, 16, Ip),
    fk!("ip.proto", nw_proto, 1, Int),
    fk!("ip.tos", nw_tos, 1, Int),
    fk!("ip.ttl", nw_ttl, 1, Int),
    fk!("ip.frag", nw_frag, 1, Int),
    fk!("tp.src", tp_src, 2, Int),
    fk!("tp.dst", tp_dst, 2, Int),
    fk!("tcp.flags", tcp_flags, 2, Hex),
    fk!("arp.op", arp_op, 2, Int),
    fk!("arp.sha", arp_sha, 6, Mac),
    fk!("arp.tha", arp_tha, 6, Mac),
    fk!("nd.target", nd_target, 16, Ip),
    Desc { name: "metadata", off: M + offset_of!(Meta, metadata), len: 8, kind: Kind::Int },
];

const REG_NAMES: [&str; 16] = [
    "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "flags", "reg11", "reg12", "reg13",
    "inport", "outport",
];

fn key_bytes(words: &[u64; Key::WORDS]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

fn int_of(b: &[u8]) -> u128 {
    let mut v = [0u8; 16];
    v[..b.len()].copy_from_slice(b);
    u128::from_ne_bytes(v) >> if cfg!(target_endian = "big") { 8 * (16 - b.len()) } else { 0 }
}

fn fmt_mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn fmt_ip(b: &[u8]) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

/// `value` or `value/mask` for one field.
fn fmt_masked(kind: Kind, v: &[u8], m: &[u8]) -> String {
    let full = m.iter().all(|x| *x == 0xff);
    match kind {
        Kind::Int | Kind::Hex => {
            let (v, m) = (int_of(v), int_of(m));
            match (full, kind) {
                (true, Kind::Int) => v.to_string(),
                (true, _) => format!("{v:#06x}"),
                (false, _) => format!("{v:#x}/{m:#x}"),
            }
        }
        Kind::Mac if full => fmt_mac(v),
        Kind::Mac => format!("{}/{}", fmt_mac(v), fmt_mac(m)),
        Kind::Ip => {
            // An IPv4 match is a mapped address under a mask that covers
            // the ::ffff: prefix: show it as IPv4 with an IPv4 mask.
            let mapped = m[..12].iter().all(|x| *x == 0xff) && v[..12] == MAPPED_PREFIX;
            let (vv, mm) = if mapped { (&v[12..], &m[12..]) } else { (v, m) };
            let addr = |b: &[u8]| match <[u8; 4]>::try_from(b) {
                Ok(a) => Ipv4Addr::from(a).to_string(),
                Err(_) => fmt_ip(b),
            };
            if full {
                fmt_ip(v)
            } else if is_prefix(mm) {
                format!("{}/{}", addr(vv), mm.iter().map(|x| x.count_ones()).sum::<u32>())
            } else {
                format!("{}/{}", addr(vv), addr(mm))
            }
        }
    }
}

const MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// Whether a mask is contiguous ones from the top.
fn is_prefix(m: &[u8]) -> bool {
    let mut in_ones = true;
    for x in m {
        if in_ones {
            if *x != 0xff {
                in_ones = false;
                if x.leading_ones() != x.count_ones() {
                    return false;
                }
            }
        } else if *x != 0 {
            return false;
        }
    }
    true
}

/// The match of a rule, OVN-like; `1` when it matches everything.
pub fn fmt_match(r: &Rule) -> String {
    let (v, m) = (key_bytes(&r.value), key_bytes(&r.mask));
    let mut terms = Vec::new();
    let reg_off = M + offset_of!(Meta, regs);
    let regs = (0..16).map(|i| Desc { name: REG_NAMES[i], off: reg_off + 4 * i, len: 4, kind: Kind::Int });
    for d in FIELDS.iter().copied().chain(regs) {
        let mm = &m[d.off..d.off + d.len];
        if mm.iter().all(|x| *x == 0) {
            continue;
        }
        terms.push(format!("{} == {}", d.name, fmt_masked(d.kind, &v[d.off..d.off + d.len], mm)));
    }
    if terms.is_empty() {
        "1".to_owned()
    } else {
        terms.join(" && ")
    }
}

fn field_name(f: Field) -> String {
    match f {
        Field::EthSrc => "eth.src".into(),
        Field::EthDst => "eth.dst".into(),
        Field::IpSrc => "ip.src".into(),
        Field::IpDst => "ip.dst".into(),
        Field::IpTtl => "ip.ttl".into(),
        Field::IpTos => "ip.tos".into(),
        Field::TpSrc => "tp.src".into(),
        Field::TpDst => "tp.dst".into(),
        Field::ArpOp => "arp.op".into(),
        Field::ArpSha => "arp.sha".into(),
        Field::ArpTha => "arp.tha".into(),
        Field::Metadata => "metadata".into(),
        Field::Reg(r) => REG_NAMES.get(usize::from(r)).map_or_else(|| format!("reg{r}"), |s| (*s).to_owned()),
        Field::EthType => "eth.type".into(),
        Field::VlanTci => "vlan.tci".into(),
        Field::IpProto => "ip.proto".into(),
        Field::IpFrag => "ip.frag".into(),
        Field::TcpFlags => "tcp.flags".into(),
        Field::NdTarget => "nd.target".into(),
        Field::Ipv6Label => "ip6.label".into(),
    }
}

fn fmt_field_value(f: Field, v: u128) -> String {
    let len = f.span().1;
    // Field::get numbers are big-endian-ordered values in the low bytes.
    let be = v.to_be_bytes();
    let b = &be[16 - len..];
    match f {
        Field::EthSrc | Field::EthDst | Field::ArpSha | Field::ArpTha => fmt_mac(b),
        Field::IpSrc | Field::IpDst | Field::NdTarget => fmt_ip(b),
        _ => v.to_string(),
    }
}

fn slow_path_name(r: SlowPathReason) -> &'static str {
    match r {
        SlowPathReason::Arp => "arp",
        SlowPathReason::NdNa => "nd_na",
        SlowPathReason::Icmp => "icmp",
        SlowPathReason::TcpReset => "tcp_reset",
        SlowPathReason::Dhcp => "dhcp",
        SlowPathReason::Learn => "learn",
    }
}

/// One action, OVN-like, with its `;`.
pub fn fmt_action(a: &Action) -> String {
    match a {
        Action::Next(t) => format!("next({t});"),
        Action::Set { field, value, mask } => {
            let full = if field.bits() >= 128 { u128::MAX } else { (1u128 << field.bits()) - 1 };
            if mask & full == full {
                format!("{} = {};", field_name(*field), fmt_field_value(*field, *value))
            } else {
                format!("{} = {:#x}/{:#x};", field_name(*field), value & mask, mask)
            }
        }
        Action::Move { src, dst } => format!("{} = {};", field_name(*dst), field_name(*src)),
        Action::Exchange(a, b) => format!("{} <-> {};", field_name(*a), field_name(*b)),
        Action::MoveBits { src, src_ofs, dst, dst_ofs, n_bits } => {
            let r = |o: &u8| format!("[{}..{}]", o, u16::from(*o) + u16::from(*n_bits) - 1);
            format!("{}{} = {}{};", field_name(*dst), r(dst_ofs), field_name(*src), r(src_ofs))
        }
        Action::PushVlan(tci) => format!("push_vlan(vid={}, pcp={});", tci & 0xfff, tci >> 13),
        Action::PopVlan => "pop_vlan;".into(),
        Action::Output => "output;".into(),
        Action::Clone(inner) => format!("clone {{ {} }};", fmt_actions(inner)),
        Action::Meter(id) => format!("meter({id});"),
        Action::Mirror(id) => format!("mirror({id});"),
        Action::Drop(r) => format!("drop({r});"),
        Action::SlowPath(r) => format!("slow_path({});", slow_path_name(*r)),
        Action::Generate { kind, actions } => format!("{} {{ {} }};", kind.name(), fmt_actions(actions)),
        Action::Jump { egress, stage } => {
            format!("next(pipeline={}, stage={stage});", if *egress { "egress" } else { "ingress" })
        }
    }
}

/// An action list, space-separated.
pub fn fmt_actions(acts: &[Action]) -> String {
    acts.iter().map(fmt_action).collect::<Vec<_>>().join(" ")
}

fn fmt_binding(b: &Binding, snap: &Snapshot) -> String {
    let vlan = |v: &Option<u16>| v.map(|v| format!(" vlan {v}")).unwrap_or_default();
    match b {
        Binding::Local { port, vlan: v } => format!("local port {port}{}", vlan(v)),
        Binding::Remote { chassis } => {
            let c = snap.chassis.get(usize::from(*chassis));
            format!("chassis {chassis} ({})", c.map_or("?".to_owned(), |c| format!("{} {}", c.name, c.ip)))
        }
        Binding::Localnet { uplink, vlan: v } => format!("localnet uplink {uplink}{}", vlan(v)),
        Binding::ViaLocalnet { localnet } => format!("remote, through localnet port {localnet}"),
        Binding::Refused => "refused (not supported here)".into(),
    }
}

// ---------------------------------------------------------------- dump-tables

fn stage_dump(i: usize, s: &Stage) -> StageDump {
    StageDump {
        table: i,
        name: s.name.clone(),
        rules: s
            .rules()
            .iter()
            .map(|r| RuleDump {
                priority: r.priority,
                cookie: r.cookie,
                matches: fmt_match(r),
                actions: fmt_actions(&r.actions),
            })
            .chain(s.conj_rules().iter().map(|c| {
                let dims: Vec<String> = c.dims.iter().map(|d| format!("one of {}", d.len())).collect();
                let base = fmt_match(&c.rule);
                RuleDump {
                    priority: c.rule.priority,
                    cookie: c.rule.cookie,
                    matches: format!("{base} && conjunction({})", dims.join(", ")),
                    actions: fmt_actions(&c.rule.actions),
                }
            }))
            .collect(),
    }
}

fn datapath_dump(dp: &Datapath, snap: &Snapshot) -> DatapathDump {
    let mut keys: Vec<u32> = dp.ports.keys().chain(dp.port_names.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    DatapathDump {
        key: dp.key,
        name: dp.name.clone(),
        ports: keys
            .iter()
            .map(|k| {
                let name = dp.port_names.get(k).map_or("", String::as_str);
                let b = dp.ports.get(k).map_or("unbound".to_owned(), |b| fmt_binding(b, snap));
                format!("{k} {name} -> {b}")
            })
            .collect(),
        groups: dp
            .groups
            .iter()
            .map(|(k, m)| format!("{k} -> {}", m.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")))
            .collect(),
        ingress: dp.ingress.stages.iter().enumerate().map(|(i, s)| stage_dump(i, s)).collect(),
        egress: dp.egress.stages.iter().enumerate().map(|(i, s)| stage_dump(i, s)).collect(),
    }
}

/// Finds a datapath by name or tunnel key.
pub fn find_datapath<'s>(snap: &'s Snapshot, sel: &str) -> Option<&'s Datapath> {
    snap.datapaths.values().map(|d| &**d).find(|d| d.name == sel).or_else(|| {
        let k: u32 = sel.parse().ok()?;
        snap.datapaths.get(&k).map(|d| &**d)
    })
}

/// The reply to `dump-tables` for `snap`: every datapath, or the one
/// named (by name or key).
///
/// # Errors
/// [`ErrorCode::NotFound`] if `sel` names no datapath.
pub fn dump_tables(snap: &Snapshot, sel: Option<&str>) -> Result<TablesReply, ErrorReply> {
    let datapaths = match sel {
        Some(s) => {
            let dp = find_datapath(snap, s).ok_or_else(|| ErrorReply::not_found(format!("no datapath {s:?}")))?;
            vec![datapath_dump(dp, snap)]
        }
        None => snap.datapaths.values().map(|d| datapath_dump(d, snap)).collect(),
    };
    Ok(TablesReply {
        generation: snap.generation,
        local_ports: snap
            .local_ports
            .iter()
            .enumerate()
            .filter_map(|(i, lp)| lp.map(|lp| format!("{i} -> datapath {} port {}", lp.datapath, lp.port)))
            .collect(),
        chassis: snap.chassis.iter().enumerate().map(|(i, c)| format!("{i} {} {}", c.name, c.ip)).collect(),
        datapaths,
    })
}

/// The logical port that petreld port `index` is bound to, named.
pub fn logical_port(snap: &Snapshot, index: u16) -> Option<LogicalPortInfo> {
    let lp = (*snap.local_ports.get(usize::from(index))?)?;
    let dp = snap.datapaths.get(&lp.datapath);
    Some(LogicalPortInfo {
        datapath: lp.datapath,
        datapath_name: dp.map_or_else(String::new, |d| d.name.clone()),
        port: lp.port,
        port_name: dp.and_then(|d| d.port_names.get(&lp.port).cloned()),
    })
}

/// Total rules in a snapshot (for `show`).
pub fn n_rules(snap: &Snapshot) -> usize {
    snap.datapaths
        .values()
        .flat_map(|d| d.ingress.stages.iter().chain(&d.egress.stages))
        .map(|s| s.rules().len() + s.conj_rules().len())
        .sum()
}

// ---------------------------------------------------------------- trace

/// Collects a traced walk as indented lines (`ofproto/trace` style).
///
/// Stage lines are indented by nesting depth; under each, the actions the
/// rule ran, and the outputs and drops they led to.
#[derive(Debug, Default)]
pub struct TraceCollector {
    /// The lines so far.
    pub lines: Vec<String>,
    /// petreld port names by index, to name local outputs.
    pub port_names: Vec<String>,
}

impl TraceCollector {
    /// A collector that names local ports with `port_names`.
    pub fn new(port_names: Vec<String>) -> Self {
        TraceCollector { lines: Vec::new(), port_names }
    }

    fn port(&self, p: u16) -> String {
        match self.port_names.get(usize::from(p)) {
            Some(n) => format!("port {p} ({n})"),
            None => format!("port {p}"),
        }
    }

    /// A copy, readable: its target, and the packet when it is generated.
    pub fn fmt_emit(&self, e: &Emit) -> String {
        match e.gen {
            None => self.fmt_target(&e.target),
            Some(g) => format!("{}: generated {}: {}", self.fmt_target(&e.target), g.name(), fmt_flow(&e.key.flow)),
        }
    }

    /// A target, readable.
    pub fn fmt_target(&self, t: &Target) -> String {
        let vlan = |v: &Option<u16>| v.map(|v| format!(" vlan {v}")).unwrap_or_default();
        match t {
            Target::Local { port, vlan: v } => format!("output to {}{}", self.port(*port), vlan(v)),
            Target::Tunnel { chassis, vni, ingress, egress } => {
                format!("tunnel to chassis {chassis} vni {vni} ingress {ingress} egress {egress}")
            }
            Target::Localnet { uplink, vlan: v } => format!("localnet on {}{}", self.port(*uplink), vlan(v)),
            Target::SlowPath(r) => format!("slow path ({})", slow_path_name(*r)),
            Target::Learn { datapath, port } => format!("learn eth.src on datapath {datapath} port {port}"),
        }
    }
}

fn indent(depth: usize) -> String {
    " ".repeat(4 * depth)
}

impl Tracer for TraceCollector {
    const ON: bool = true;

    fn event(&mut self, e: TraceEvent<'_>) {
        let line = match e {
            TraceEvent::Stage { dp, egress, stage, rule, depth } => {
                let p = if egress { &dp.egress } else { &dp.ingress };
                let name = p.stages.get(stage).map_or("?", |s| s.name.as_str());
                let dir = if egress { "egress" } else { "ingress" };
                let hit = match rule {
                    Some(r) => format!("priority {}, cookie {:#x}: {}", r.priority, r.cookie, fmt_match(r)),
                    None => "no rule matched".to_owned(),
                };
                format!("{}{} {dir} table {stage} ({name}): {hit}", indent(depth), dp.name)
            }
            TraceEvent::Action(a, depth) => {
                // Clones list their inner actions as they run; show the head only.
                let s = match a {
                    Action::Clone(_) => "clone {".to_owned(),
                    Action::Generate { kind, .. } => format!("{} {{", kind.name()),
                    _ => fmt_action(a),
                };
                format!("{}{s}", indent(depth + 1))
            }
            TraceEvent::Emit(e, depth) => format!("{}-> {}", indent(depth + 1), self.fmt_emit(e)),
            TraceEvent::Drop(r, depth) => format!("{}-> drop ({r})", indent(depth + 1)),
        };
        self.lines.push(line);
    }
}

/// Every non-zero field of a flow key, `name == value`.
pub fn fmt_flow(flow: &FlowKey) -> String {
    let v = key_bytes(&Key { flow: *flow, ..Key::default() }.words());
    let terms: Vec<String> = FIELDS
        .iter()
        .filter(|d| v[d.off..d.off + d.len].iter().any(|x| *x != 0))
        .map(|d| format!("{} == {}", d.name, fmt_masked(d.kind, &v[d.off..d.off + d.len], &[0xff; 16][..d.len])))
        .collect();
    if terms.is_empty() {
        "(all fields zero)".to_owned()
    } else {
        terms.join(" && ")
    }
}

/// Traces `packet` (microflow syntax) arriving on petreld port `index`
/// (named `port`) through `snap`. `port_names` names petreld ports.
///
/// # Errors
/// [`ErrorCode::Rejected`] for a bad microflow or an `inport` that is not
/// the logical port `index` is bound to.
pub fn trace(
    snap: &Snapshot,
    index: u16,
    port: &str,
    packet: &str,
    port_names: Vec<String>,
) -> Result<TraceReply, ErrorReply> {
    let m = microflow::parse(packet).map_err(|e| ErrorReply::rejected(format!("microflow: {e}")))?;
    if let Some(want) = &m.inport {
        let bound = logical_port(snap, index).and_then(|l| l.port_name);
        if bound.as_deref() != Some(want.as_str()) {
            return Err(ErrorReply::new(
                ErrorCode::Rejected,
                format!(
                    "microflow says inport == {want:?} but port {port} is bound to {}",
                    bound.map_or("no named logical port".to_owned(), |b| format!("{b:?}"))
                ),
            ));
        }
    }
    let mut flow = m.flow;
    flow.in_port = u32::from(index);
    let mut out = Outcome::default();
    let mut tc = TraceCollector::new(port_names);
    exec::run_from_port(snap, index, &flow, &mut out, &mut tc);
    let outputs = out.emits().iter().map(|e| tc.fmt_emit(e)).collect();
    Ok(TraceReply {
        generation: snap.generation,
        port: port.to_owned(),
        flow: fmt_flow(&flow),
        lines: tc.lines,
        outputs,
        drop: out.drop.map(|r| r.name().to_owned()),
    })
}

// ---------------------------------------------------------------- text for petrelctl

/// `petrelctl show`.
pub fn show(r: &ShowReply) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: up {:.0} s, tables generation {}, {} datapath(s), {} rule(s), {} PMD(s)",
        r.server, r.uptime_secs, r.generation, r.n_datapaths, r.n_rules, r.n_pmds
    );
    let _ = writeln!(
        s,
        "{:>4} {:<14} {:<6} {:<28} {:>12} {:>12} {:>10} {:>10}",
        "idx", "port", "state", "logical port", "rx_packets", "tx_packets", "drops", "tx_drops"
    );
    for p in &r.ports {
        let lp = p.logical.as_ref().map_or("-".to_owned(), |l| {
            let dp = if l.datapath_name.is_empty() { l.datapath.to_string() } else { l.datapath_name.clone() };
            format!("{dp}/{}", l.port_name.clone().unwrap_or_else(|| l.port.to_string()))
        });
        let _ = writeln!(
            s,
            "{:>4} {:<14} {:<6} {:<28} {:>12} {:>12} {:>10} {:>10}",
            p.index, p.name, p.state, lp, p.stats.rx_packets, p.stats.tx_packets, p.stats.drops, p.stats.tx_drops
        );
        let _ = writeln!(s, "     {}  rx_bytes {} tx_bytes {}", p.kind, p.stats.rx_bytes, p.stats.tx_bytes);
    }
    for u in &r.uplinks {
        let gw = u.gw.as_ref().map(|g| format!(" gw {g}")).unwrap_or_default();
        let _ = writeln!(s, "uplink {}: {}{gw} mtu {}", u.port, u.ip, u.mtu);
    }
    for t in &r.tunnels {
        let via = match (&t.uplink, &t.nexthop) {
            (Some(u), Some(n)) => format!("via {n} on {u}, {}", t.mac.as_deref().unwrap_or("next hop unresolved")),
            _ => "no route".to_owned(),
        };
        let _ = writeln!(s, "tunnel to {} ({}): {via}", t.chassis, t.ip);
    }
    s
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// `petrelctl pmd-stats` (like `ovs-appctl dpif-netdev/pmd-stats-show`).
pub fn pmd_stats(r: &PmdStatsReply) -> String {
    let mut s = String::new();
    for p in &r.pmds {
        let total = p.busy_cycles + p.idle_cycles + p.sleep_cycles;
        let _ = writeln!(s, "pmd {} (cpu {}):", p.index, p.cpu);
        let _ = writeln!(s, "  packets received: {}", p.rx_packets);
        let _ = writeln!(
            s,
            "  avg. packets per burst: {:.1}",
            if p.rx_bursts == 0 { 0.0 } else { p.rx_packets as f64 / p.rx_bursts as f64 }
        );
        let mut answered = 0;
        for l in &p.layers {
            answered += l.hits;
            let _ = writeln!(s, "  {} hits: {} ({:.1}%)", l.name, l.hits, pct(l.hits, p.rx_packets));
        }
        if !p.layers.is_empty() {
            let miss = p.rx_packets.saturating_sub(answered);
            let _ = writeln!(s, "  answered by no layer: {} ({:.1}%)", miss, pct(miss, p.rx_packets));
        }
        let _ = writeln!(s, "  idle cycles: {} ({:.1}%)", p.idle_cycles, pct(p.idle_cycles, total));
        let _ = writeln!(s, "  busy cycles: {} ({:.1}%)", p.busy_cycles, pct(p.busy_cycles, total));
        if p.sleep_cycles > 0 {
            let _ = writeln!(s, "  sleep cycles: {} ({:.1}%)", p.sleep_cycles, pct(p.sleep_cycles, total));
        }
        if p.rx_packets > 0 {
            let _ = writeln!(s, "  avg. busy cycles per packet: {:.1}", p.busy_cycles as f64 / p.rx_packets as f64);
        }
        if r.tsc_hz > 0 && total > 0 {
            let _ = writeln!(s, "  polling time: {:.1} s", total as f64 / r.tsc_hz as f64);
        }
    }
    if r.pmds.is_empty() {
        s.push_str("no PMD threads\n");
    }
    s
}

/// `petrelctl dump-tables`.
pub fn tables(r: &TablesReply) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "generation {}", r.generation);
    for l in &r.local_ports {
        let _ = writeln!(s, "local port {l}");
    }
    for c in &r.chassis {
        let _ = writeln!(s, "chassis {c}");
    }
    for d in &r.datapaths {
        let _ = writeln!(s, "\ndatapath {} (key {})", d.name, d.key);
        for p in &d.ports {
            let _ = writeln!(s, "  port {p}");
        }
        for g in &d.groups {
            let _ = writeln!(s, "  group {g}");
        }
        for (dir, stages) in [("ingress", &d.ingress), ("egress", &d.egress)] {
            for st in stages.iter() {
                let _ = writeln!(s, "  {dir} table {} ({}):", st.table, st.name);
                for r in &st.rules {
                    let _ = writeln!(
                        s,
                        "    priority={:<5} cookie={:#x}  match=({})  actions=({})",
                        r.priority, r.cookie, r.matches, r.actions
                    );
                }
            }
        }
    }
    s
}

/// `petrelctl drops`: non-zero reasons, then the total.
pub fn drops(r: &DropsReply) -> String {
    let mut s = String::new();
    let mut total = 0u64;
    for d in r.reasons.iter().filter(|d| d.count > 0) {
        total += d.count;
        let _ = writeln!(s, "{:<28} {:>14}", d.reason, d.count);
    }
    let _ = writeln!(s, "{:<28} {:>14}", "total", total);
    s
}

/// `petrelctl trace`.
pub fn trace_text(r: &TraceReply) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Flow: {}", r.flow);
    let _ = writeln!(s, "Port: {}   Tables generation: {}\n", r.port, r.generation);
    for l in &r.lines {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s);
    if r.outputs.is_empty() {
        let _ = writeln!(s, "Final: dropped ({})", r.drop.as_deref().unwrap_or("no output"));
    } else {
        for o in &r.outputs {
            let _ = writeln!(s, "Final: {o}");
        }
        if let Some(d) = &r.drop {
            let _ = writeln!(s, "(a branch was dropped: {d})");
        }
    }
    s
}

/// `petrelctl refusals`: refused flows and ports, grouped by datapath.
pub fn refusals(r: &super::proto::RefusalsReply) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "generation {}: {} refused", r.generation, r.refusals.len());
    let mut last: Option<&str> = None;
    for x in &r.refusals {
        if last != Some(x.datapath.as_str()) {
            let _ = writeln!(s, "datapath {} (key {}):", x.datapath, x.datapath_key);
            last = Some(x.datapath.as_str());
        }
        match x.pipeline.as_str() {
            "port" | "datapath" => {
                let _ = writeln!(s, "  {} {} [{}]: {}", x.pipeline, x.stage, x.uuid, x.what);
            }
            p => {
                let _ = writeln!(s, "  {p} table {} ({}) flow {}: {}", x.table, x.stage, x.uuid, x.what);
            }
        }
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
