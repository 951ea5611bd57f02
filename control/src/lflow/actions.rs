//! OVN actions (ovn-sb(5) "actions", `lib/actions.c`) as table-runtime
//! [`Action`]s.
//!
//! Stage numbers in [`Action::Next`] are OVN table numbers (or the
//! auxiliary tables below) until [`super::compile`] lays the stages out and
//! renumbers them. The "result" actions that ovn-controller implements as a
//! resubmit into a table it fills itself (`check_in_port_sec()`,
//! `lookup_fdb()`, `get_fdb()`) become the same here: clear a flag bit,
//! resubmit (`next` returns, like OpenFlow's resubmit) into an auxiliary
//! stage, move the bit (`encode_result_action__` in actions.c).
//!
//! The packet-generating actions (`arp`, `nd_na`, `nd_na_router`, `icmp4`,
//! `icmp6`, `icmp4_error`, `icmp6_error`, `tcp_reset`, `reject`) become
//! [`Action::Generate`] around their nested actions: the fast path builds
//! the packet pinctrl would and runs the nested actions on it. Only there,
//! `next(pipeline=…, table=…)` becomes an [`Action::Jump`] (renumbered by
//! `compile::layout` with the target pipeline's stage map), as ovn-controller
//! resubmits the generated packet straight into that table.

use petrel_dataplane::drop::DropReason;
use petrel_dataplane::table::{Action, Field, GenKind, SlowPathReason};

use super::expr::{resolve_field, ExprError, Resolve};
use super::parse::{arg_field, Act, Const, FieldRef, NumKind, Rhs, Tok};
use super::symtab::LField;

/// Auxiliary ingress stage: `check_in_port_sec()` (OFTABLE_CHK_IN_PORT_SEC).
pub const AUX_IN_PORT_SEC: u16 = 1000;
/// Auxiliary ingress stage: ARP/ND part of port security (OFTABLE_CHK_IN_PORT_SEC_ND).
pub const AUX_IN_PORT_SEC_ND: u16 = 1001;
/// Auxiliary ingress stage: `lookup_fdb()` (OFTABLE_LOOKUP_FDB).
pub const AUX_LOOKUP_FDB: u16 = 1002;
/// Auxiliary ingress stage: `get_fdb()` (OFTABLE_GET_FDB).
pub const AUX_GET_FDB: u16 = 1003;
/// Auxiliary egress stage: `check_out_port_sec()` (OFTABLE_CHK_OUT_PORT_SEC).
pub const AUX_OUT_PORT_SEC: u16 = 1000;

/// `MLF_CHECK_PORT_SEC_BIT`.
pub const FLAG_PORT_SEC: u8 = 12;
/// `MLF_LOOKUP_FDB_BIT`.
pub const FLAG_LOOKUP_FDB: u8 = 8;

/// A meter a logical flow asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MeterReq {
    /// `set_meter(rate[, burst])`: kbit/s and kbit as written (burst 0:
    /// none written).
    SetMeter {
        /// kbit/s.
        rate: u64,
        /// kbit.
        burst: u64,
    },
    /// A Southbound `Meter` row by name (`Logical_Flow.controller_meter`).
    Named(String),
}

/// The meters a flow used: (id, identity, request).
pub type UsedMeters = Vec<(u32, String, MeterReq)>;

/// Meter ids by identity (`set_meter <logical flow>` or an SB meter name),
/// stable across compiles so petreld keeps the buckets.
pub trait MeterIds {
    /// The id of the meter named `key` (a new one the first time).
    fn id(&mut self, key: &str) -> u32;
}

/// A flow's meters: what it asks for and where the ids come from.
pub struct FlowMeters<'a> {
    /// The logical flow's identity (`set_meter` makes one meter per flow,
    /// as ovn-controller keys its meter table by the flow).
    pub flow: String,
    /// `Logical_Flow.controller_meter`: limits the flow's controller
    /// actions (the packets Petrel generates or learns from).
    pub controller: Option<String>,
    /// Where ids come from.
    pub ids: &'a mut dyn MeterIds,
    /// What the flow used.
    pub used: UsedMeters,
}

impl std::fmt::Debug for FlowMeters<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowMeters").field("flow", &self.flow).field("used", &self.used).finish_non_exhaustive()
    }
}

impl FlowMeters<'_> {
    fn get(&mut self, key: String, req: MeterReq, pos: usize) -> Result<Action, ExprError> {
        if let Some((id, _, prev)) = self.used.iter().find(|u| u.1 == key) {
            if *prev != req {
                return unsupported(pos, "two `set_meter` with different rates in one flow");
            }
            return Ok(Action::Meter(*id));
        }
        let id = self.ids.id(&key);
        self.used.push((id, key, req));
        Ok(Action::Meter(id))
    }

    /// The controller meter's action, if the flow has one.
    fn controller(&mut self, pos: usize) -> Result<Option<Action>, ExprError> {
        match self.controller.clone() {
            Some(name) => self.get(name.clone(), MeterReq::Named(name), pos).map(Some),
            None => Ok(None),
        }
    }
}

/// Where the actions run.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Names in this datapath.
    pub resolve: &'a dyn Resolve,
    /// OVN table of the flow.
    pub table: u16,
    /// Egress pipeline?
    pub egress: bool,
    /// Ports named (for dependency tracking).
    pub ports: &'a mut std::collections::BTreeSet<String>,
    /// Things accepted without effect (`log()`), for the report.
    pub notes: &'a mut Vec<String>,
    /// The flow's meters.
    pub meters: FlowMeters<'a>,
}

impl std::fmt::Debug for dyn Resolve + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolve")
    }
}

fn unsupported<T>(pos: usize, msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError { pos, msg: msg.into(), unsupported: true })
}

fn bad<T>(pos: usize, msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError { pos, msg: msg.into(), unsupported: false })
}

fn ones(w: u32) -> u128 {
    if w >= 128 {
        u128::MAX
    } else {
        (1u128 << w) - 1
    }
}

fn u8_of(v: u32) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

fn writable(f: Field) -> bool {
    matches!(
        f,
        Field::EthSrc
            | Field::EthDst
            | Field::IpSrc
            | Field::IpDst
            | Field::IpTtl
            | Field::IpTos
            | Field::TpSrc
            | Field::TpDst
            | Field::ArpOp
            | Field::ArpSha
            | Field::ArpTha
            | Field::NdTarget
            | Field::Reg(_)
    )
}

/// Fields only a generated packet may have written (the fast path rewrites
/// them in no received packet).
fn check_gen_only(lf: &LField, f: &FieldRef, generated: bool) -> Result<(), ExprError> {
    if !generated && lf.parts.iter().any(|p| p.0 == Field::NdTarget) {
        return unsupported(f.pos, format!("writing `{f}` outside a packet-generating action"));
    }
    Ok(())
}

fn dst_field(f: &FieldRef) -> Result<LField, ExprError> {
    let lf = resolve_field(f)?;
    if let Some((fld, _, _)) = lf.parts.iter().find(|p| !writable(p.0)) {
        return unsupported(f.pos, format!("writing `{f}` ({fld:?}) is not implemented"));
    }
    Ok(lf)
}

/// `dst = value` over the parts of `lf`.
fn set(lf: &LField, value: u128, out: &mut Vec<Action>) {
    if lf.ipv4_mapped {
        // Whole IPv4 fields are stored IPv4-mapped: write all 128 bits.
        let (f, _, _) = lf.parts[0];
        let v = std::net::Ipv4Addr::from(u32::try_from(value & 0xffff_ffff).unwrap_or(0)).to_ipv6_mapped().to_bits();
        out.push(Action::Set { field: f, value: v, mask: u128::MAX });
        return;
    }
    let mut base = 0;
    for &(f, ofs, w) in &lf.parts {
        let v = (value >> base) & ones(w);
        out.push(Action::Set { field: f, value: v << ofs, mask: ones(w) << ofs });
        base += w;
    }
}

/// `dst = src` (equal widths).
fn mov(src: &LField, dst: &LField, pos: usize, out: &mut Vec<Action>) -> Result<(), ExprError> {
    if src.width != dst.width {
        return bad(pos, format!("cannot move {} bits into {} bits", src.width, dst.width));
    }
    if let ([(sf, 0, sw)], [(df, 0, dw)]) = (src.parts.as_slice(), dst.parts.as_slice()) {
        if src.ipv4_mapped == dst.ipv4_mapped && *sw == sf.bits() && *dw == df.bits() && sf.bits() == df.bits() {
            out.push(Action::Move { src: *sf, dst: *df });
            return Ok(());
        }
        if src.ipv4_mapped && dst.ipv4_mapped {
            out.push(Action::Move { src: *sf, dst: *df });
            return Ok(());
        }
    }
    // Bit by bit over aligned pieces of both part lists.
    let pieces = |lf: &LField| -> Vec<(u32, Field, u32, u32)> {
        let mut v = Vec::new();
        let mut base = 0;
        for &(f, o, w) in &lf.parts {
            v.push((base, f, o, w));
            base += w;
        }
        v
    };
    let (sp, dp) = (pieces(src), pieces(dst));
    let mut bit = 0;
    while bit < src.width {
        let Some(&(sb, sf, so, sw)) = sp.iter().find(|p| p.0 <= bit && bit < p.0 + p.3) else { break };
        let Some(&(db, df, dof, dw)) = dp.iter().find(|p| p.0 <= bit && bit < p.0 + p.3) else { break };
        let n = (sb + sw).min(db + dw) - bit;
        out.push(Action::MoveBits {
            src: sf,
            src_ofs: u8_of(so + bit - sb),
            dst: df,
            dst_ofs: u8_of(dof + bit - db),
            n_bits: u8_of(n),
        });
        bit += n;
    }
    Ok(())
}

fn flag_field() -> LField {
    LField {
        parts: vec![(Field::Reg(10), 0, 32)],
        width: 32,
        prereq: None,
        string: false,
        ipv4_mapped: false,
        nominal: false,
    }
}

/// `dst = <result bit>` from an auxiliary stage (actions.c `encode_result_action__`).
fn result_action(dst: &FieldRef, bit: u8, stage: u16, out: &mut Vec<Action>) -> Result<(), ExprError> {
    let lf = dst_field(dst)?;
    if lf.width != 1 {
        return bad(dst.pos, format!("`{dst}` must be a 1-bit field"));
    }
    out.push(Action::Set { field: Field::Reg(10), value: 0, mask: 1 << bit });
    out.push(Action::Next(stage));
    let src = flag_field().sub(u32::from(bit), u32::from(bit)).ok_or(ExprError {
        pos: dst.pos,
        msg: "flag bit".into(),
        unsupported: false,
    })?;
    mov(&src, &lf, dst.pos, out)
}

/// `next(…)`: a `Next` in this pipeline, or inside a generated packet with
/// an explicit pipeline, a `Jump`.
fn next_target(args: &[Vec<Tok>], cx: &Ctx<'_>, generated: bool, pos: usize) -> Result<Action, ExprError> {
    let mut table = None;
    let mut pipeline = None;
    for a in args {
        match a.as_slice() {
            [Tok::Num { value, .. }] => table = Some(*value),
            [Tok::Id(k), Tok::P("="), Tok::Num { value, .. }] if k == "table" => table = Some(*value),
            [Tok::Id(k), Tok::P("="), Tok::Id(p)] if k == "pipeline" => {
                let egress = match p.as_str() {
                    "ingress" => false,
                    "egress" => true,
                    _ => return bad(pos, format!("unknown pipeline `{p}`")),
                };
                if egress != cx.egress && !generated {
                    return unsupported(pos, "`next` into the other pipeline outside a packet-generating action");
                }
                pipeline = Some(egress);
            }
            _ => return bad(pos, "bad `next` arguments"),
        }
    }
    let t = table.unwrap_or(u128::from(cx.table) + 1);
    let t = u16::try_from(t).ok().filter(|t| *t < AUX_IN_PORT_SEC).ok_or(ExprError {
        pos,
        msg: format!("table {t} is out of range"),
        unsupported: false,
    })?;
    Ok(match pipeline {
        Some(egress) if generated => Action::Jump { egress, stage: t },
        _ => Action::Next(t),
    })
}

/// The generated packet an OVN action name makes.
fn gen_kind(name: &str) -> Option<GenKind> {
    Some(match name {
        "arp" => GenKind::Arp,
        "nd_na" => GenKind::NdNa,
        "nd_na_router" => GenKind::NdNaRouter,
        // pinctrl answers both with whichever ICMP version the packet is.
        "icmp4" | "icmp6" => GenKind::Icmp,
        "icmp4_error" | "icmp6_error" => GenKind::IcmpError,
        "tcp_reset" => GenKind::TcpReset,
        "reject" => GenKind::Reject,
        _ => return None,
    })
}

fn port_value(name: &str, cx: &mut Ctx<'_>) -> u128 {
    if name.is_empty() || name == "none" {
        return 0;
    }
    cx.ports.insert(name.to_owned());
    // An unknown port loads 0, which outputs nowhere (as ovn-controller).
    u128::from(cx.resolve.port_key(name).unwrap_or(0))
}

/// Compiles an action list.
///
/// # Errors
/// The first action Petrel cannot run (`unsupported`) or that is invalid.
pub fn compile(acts: &[Act], cx: &mut Ctx<'_>) -> Result<Vec<Action>, ExprError> {
    compile_in(acts, cx, false)
}

/// [`compile`], `generated` inside a packet-generating action.
fn compile_in(acts: &[Act], cx: &mut Ctx<'_>, generated: bool) -> Result<Vec<Action>, ExprError> {
    let mut out = Vec::new();
    for a in acts {
        match a {
            Act::Exchange { a, b, pos } => {
                let (la, lb) = (dst_field(a)?, dst_field(b)?);
                check_gen_only(&la, a, generated)?;
                check_gen_only(&lb, b, generated)?;
                match (la.parts.as_slice(), lb.parts.as_slice()) {
                    ([(fa, 0, wa)], [(fb, 0, wb)]) if *wa == fa.bits() && *wb == fb.bits() && wa == wb => {
                        out.push(Action::Exchange(*fa, *fb));
                    }
                    _ if la.ipv4_mapped && lb.ipv4_mapped => out.push(Action::Exchange(la.parts[0].0, lb.parts[0].0)),
                    _ => return unsupported(*pos, format!("exchanging parts of fields (`{a} <-> {b}`)")),
                }
            }
            Act::Assign { dst, rhs, pos } => match rhs {
                Rhs::Const(c) => {
                    let lf = dst_field(dst)?;
                    check_gen_only(&lf, dst, generated)?;
                    let v = match c {
                        Const::Str(s) if lf.string => port_value(s, cx),
                        Const::Num { value, mask: None, .. } if !lf.string => {
                            if value & !ones(lf.width) != 0 {
                                return bad(*pos, format!("value is wider than `{dst}`"));
                            }
                            *value
                        }
                        _ => return bad(*pos, format!("bad value for `{dst}`")),
                    };
                    set(&lf, v, &mut out);
                }
                Rhs::Field(src) => {
                    let lf = dst_field(dst)?;
                    check_gen_only(&lf, dst, generated)?;
                    let ls = resolve_field(src)?;
                    mov(&ls, &lf, *pos, &mut out)?;
                }
                Rhs::Call { name, args, pos } => match name.as_str() {
                    "check_in_port_sec" if !cx.egress => result_action(dst, FLAG_PORT_SEC, AUX_IN_PORT_SEC, &mut out)?,
                    "check_out_port_sec" if cx.egress => {
                        result_action(dst, FLAG_PORT_SEC, AUX_OUT_PORT_SEC, &mut out)?;
                    }
                    "lookup_fdb" if !cx.egress => {
                        let ok = matches!(args.as_slice(), [a, b]
                            if arg_field(a).is_some_and(|f| f.name == "inport")
                            && arg_field(b).is_some_and(|f| f.name == "eth.src"));
                        if !ok {
                            return unsupported(*pos, "lookup_fdb() other than lookup_fdb(inport, eth.src)");
                        }
                        result_action(dst, FLAG_LOOKUP_FDB, AUX_LOOKUP_FDB, &mut out)?;
                    }
                    "get_fdb" if !cx.egress => {
                        let ok = dst.name == "outport"
                            && dst.bits.is_none()
                            && matches!(args.as_slice(), [a] if arg_field(a).is_some_and(|f| f.name == "eth.dst"));
                        if !ok {
                            return unsupported(*pos, "get_fdb() other than outport = get_fdb(eth.dst)");
                        }
                        out.push(Action::Set { field: Field::Reg(15), value: 0, mask: 0xffff_ffff });
                        out.push(Action::Next(AUX_GET_FDB));
                    }
                    other => return unsupported(*pos, format!("`{other}()`")),
                },
            },
            Act::Call { name, args, body, pos } => match name.as_str() {
                "next" => out.push(next_target(args.as_deref().unwrap_or(&[]), cx, generated, *pos)?),
                "output" => out.push(Action::Output),
                "drop" => out.push(Action::Drop(DropReason::Explicit)),
                "clone" => {
                    let inner = compile_in(body.as_deref().unwrap_or(&[]), cx, generated)?;
                    out.push(Action::Clone(inner.into()));
                }
                n if gen_kind(n).is_some() && body.is_some() => {
                    let kind = gen_kind(n).expect("checked by the guard");
                    let mut inner = compile_in(body.as_deref().unwrap_or(&[]), cx, true)?;
                    // pinctrl's packet-in goes through the flow's controller
                    // meter (CoPP); here the generated packet does.
                    if let Some(m) = cx.meters.controller(*pos)? {
                        inner.insert(0, m);
                    }
                    out.push(Action::Generate { kind, actions: inner.into() });
                }
                // Without conntrack there is no connection state to clear.
                "ct_clear" => {}
                "log" => {
                    cx.notes.push("log() accepted without logging".into());
                    // Its meter= (ACL logging) limits log packets only.
                    if args
                        .as_deref()
                        .is_some_and(|a| a.iter().any(|t| matches!(t.first(), Some(Tok::Id(n)) if n == "meter")))
                    {
                        cx.notes
                            .push("log(meter=…): no log packets are sent, so their meter has nothing to limit".into());
                    }
                }
                "put_fdb" => {
                    // Learning is a side effect for later packets; this
                    // packet forwards the same. The fast path records
                    // (datapath, inport, eth.src); petrel-ovn writes the
                    // FDB row, as pinctrl does.
                    let ok = matches!(args.as_deref(), Some([a, b])
                        if arg_field(a).is_some_and(|f| f.name == "inport")
                        && arg_field(b).is_some_and(|f| f.name == "eth.src"));
                    if !ok {
                        return unsupported(*pos, "put_fdb() other than put_fdb(inport, eth.src)");
                    }
                    match cx.meters.controller(*pos)? {
                        // The learning copy only, as the packet-in is metered.
                        Some(m) => out.push(Action::Clone(vec![m, Action::SlowPath(SlowPathReason::Learn)].into())),
                        None => out.push(Action::SlowPath(SlowPathReason::Learn)),
                    }
                }
                n if n.starts_with("ct_") => return unsupported(*pos, format!("`{n}` needs conntrack")),
                "nd_ns"
                | "sctp_abort"
                | "igmp"
                | "put_dhcp_opts"
                | "put_dhcpv6_opts"
                | "put_nd_ra_opts"
                | "handle_dhcpv6_reply"
                | "dns_lookup"
                | "bind_vport"
                | "handle_svc_check"
                | "trigger_event"
                | "put_arp"
                | "put_nd"
                | "event" => {
                    return unsupported(*pos, format!("`{n}` (slow-path packet handling)", n = name));
                }
                "set_meter" => {
                    // lib/actions.c parse_set_meter_action: a decimal rate
                    // (kbit/s, not 0) and an optional burst (kbit).
                    let nums: Option<Vec<u64>> = args.as_deref().and_then(|a| {
                        a.iter()
                            .map(|t| match t.as_slice() {
                                [Tok::Num { value, mask: None, kind: NumKind::Int }] => u64::try_from(*value).ok(),
                                _ => None,
                            })
                            .collect()
                    });
                    let (rate, burst) = match nums.as_deref() {
                        Some([r]) => (*r, 0),
                        Some([r, b]) => (*r, *b),
                        _ => return bad(*pos, "set_meter(rate[, burst]) takes one or two integers"),
                    };
                    if rate == 0 {
                        return bad(*pos, "set_meter rate 0 is not valid");
                    }
                    let key = format!("set_meter {}", cx.meters.flow);
                    out.push(cx.meters.get(key, MeterReq::SetMeter { rate, burst }, *pos)?);
                }
                "set_queue" => return unsupported(*pos, "`set_queue` (no egress queues in Petrel)"),
                other => return unsupported(*pos, format!("action `{other}`")),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::lflow::parse::parse_actions;

    struct R;
    impl Resolve for R {
        fn port_key(&self, name: &str) -> Option<u32> {
            (name == "p1").then_some(1)
        }
        fn address_set(&self, _: &str) -> Option<Vec<String>> {
            None
        }
        fn port_group(&self, _: &str) -> Option<Vec<String>> {
            None
        }
        fn chassis_resident(&self, _: &str) -> bool {
            true
        }
    }

    /// Ids in order of first use.
    #[derive(Default)]
    struct Ids(Vec<String>);
    impl MeterIds for Ids {
        fn id(&mut self, key: &str) -> u32 {
            let i = self.0.iter().position(|k| k == key).unwrap_or_else(|| {
                self.0.push(key.to_owned());
                self.0.len() - 1
            });
            u32::try_from(i).unwrap()
        }
    }

    fn run(text: &str, table: u16, egress: bool) -> Result<Vec<Action>, ExprError> {
        run_metered(text, table, egress, None).map(|(a, _)| a)
    }

    /// Compiles `text` as flow "f1" with this controller meter; also
    /// returns the meters it used.
    fn run_metered(
        text: &str,
        table: u16,
        egress: bool,
        controller: Option<&str>,
    ) -> Result<(Vec<Action>, UsedMeters), ExprError> {
        let mut ports = BTreeSet::new();
        let mut notes = Vec::new();
        let mut ids = Ids::default();
        let meters = FlowMeters {
            flow: "f1".into(),
            controller: controller.map(str::to_owned),
            ids: &mut ids,
            used: Vec::new(),
        };
        let mut cx = Ctx { resolve: &R, table, egress, ports: &mut ports, notes: &mut notes, meters };
        let a = compile(&parse_actions(text).unwrap(), &mut cx)?;
        Ok((a, cx.meters.used))
    }

    fn reg(r: u8) -> Field {
        Field::Reg(r)
    }

    #[test]
    fn dscp_marking_of_ls_in_qos_mark() {
        // ovn-northd 23.03, build_lswitch_qos: an NB QoS row with `dscp=46`.
        let a = run("ip.dscp = 46; next;", 12, false).unwrap();
        assert_eq!(a.first(), Some(&Action::Set { field: Field::IpTos, value: 46 << 2, mask: 0xfc }), "{a:?}");
    }

    #[test]
    fn set_meter_of_ls_qos_meter_is_one_meter_per_flow() {
        // ovn-northd 23.03, build_lswitch_qos: `bandwidth` rate=1000 burst=200.
        let (a, m) = run_metered("set_meter(1000, 200); next;", 13, false, None).unwrap();
        assert_eq!(a, [Action::Meter(0), Action::Next(14)]);
        assert_eq!(m, [(0, "set_meter f1".to_owned(), MeterReq::SetMeter { rate: 1000, burst: 200 })]);
        // Without a burst, in the egress stage.
        let (a, m) = run_metered("set_meter(64); next;", 3, true, None).unwrap();
        assert_eq!(a, [Action::Meter(0), Action::Next(4)]);
        assert_eq!(m[0].2, MeterReq::SetMeter { rate: 64, burst: 0 });
        // The same meter twice in a flow is one meter; different ones are refused.
        let (a, m) = run_metered("set_meter(64); set_meter(64); next;", 3, true, None).unwrap();
        assert_eq!((a[0].clone(), a[1].clone(), m.len()), (Action::Meter(0), Action::Meter(0), 1));
        assert!(run("set_meter(64); set_meter(65); next;", 3, true).unwrap_err().unsupported);
        // Bad arguments, as actions.c refuses them.
        for bad in ["set_meter(0);", "set_meter();", "set_meter(1, 2, 3);", "set_meter(eth.src);", "set_meter(\"x\");"]
        {
            let e = run(bad, 13, false).unwrap_err();
            assert!(!e.unsupported, "{bad}: {e:?}");
        }
        assert!(run("set_queue(3); next;", 13, false).unwrap_err().unsupported);
    }

    #[test]
    fn controller_meter_limits_generated_packets_and_learning_only() {
        let (a, m) = run_metered(
            "reject { outport <-> inport; next(pipeline=egress,table=5); };",
            8,
            false,
            Some("copp-reject"),
        )
        .unwrap();
        let [Action::Generate { kind: GenKind::Reject, actions }] = a.as_slice() else { panic!("{a:?}") };
        assert_eq!(actions.first(), Some(&Action::Meter(0)), "inside the generated packet's scope");
        assert_eq!(m, [(0, "copp-reject".to_owned(), MeterReq::Named("copp-reject".into()))]);
        let (a, _) = run_metered("put_fdb(inport, eth.src); next;", 2, false, Some("fdb")).unwrap();
        assert_eq!(a[0], Action::Clone(vec![Action::Meter(0), Action::SlowPath(SlowPathReason::Learn)].into()));
        // A flow with no controller action asks for no meter.
        let (_, m) = run_metered("next;", 2, false, Some("copp-reject")).unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn nd_na_of_ls_in_arp_rsp() {
        // ovn-northd 23.03, build_lswitch_arp_nd_responder_known_ips.
        let a = run(
            "nd_na { eth.src = 00:00:00:00:00:01; ip6.src = fd00::1; nd.target = fd00::1; \
             nd.tll = 00:00:00:00:00:01; outport = inport; flags.loopback = 1; output; };",
            17,
            false,
        )
        .unwrap();
        let [Action::Generate { kind: GenKind::NdNa, actions }] = a.as_slice() else { panic!("{a:?}") };
        let ip: u128 = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().to_bits();
        assert_eq!(
            actions.as_ref(),
            [
                Action::Set { field: Field::EthSrc, value: 1, mask: 0xffff_ffff_ffff },
                Action::Set { field: Field::IpSrc, value: ip, mask: u128::MAX },
                Action::Set { field: Field::NdTarget, value: ip, mask: u128::MAX },
                Action::Set { field: Field::ArpTha, value: 1, mask: 0xffff_ffff_ffff },
                Action::Move { src: reg(14), dst: reg(15) },
                Action::Set { field: reg(10), value: 1, mask: 1 },
                Action::Output,
            ]
        );
    }

    #[test]
    fn reject_of_ls_in_acl_jumps_into_egress() {
        // ovn-northd 23.03, build_reject_acl_rules (ingress ACL, table 9).
        let a = run(
            "reject { /* eth.dst <-> eth.src; ip.dst <-> ip.src; is implicit. */ \
             outport <-> inport; next(pipeline=egress,table=5); };",
            9,
            false,
        )
        .unwrap();
        assert_eq!(
            a,
            [Action::Generate {
                kind: GenKind::Reject,
                actions: vec![Action::Exchange(reg(15), reg(14)), Action::Jump { egress: true, stage: 5 }].into(),
            }]
        );
        // From an egress ACL it goes back to ingress L2 lookup.
        let a = run("reject { outport <-> inport; next(pipeline=ingress,table=25); };", 4, true).unwrap();
        let [Action::Generate { actions, .. }] = a.as_slice() else { panic!() };
        assert_eq!(actions[1], Action::Jump { egress: false, stage: 25 });
    }

    #[test]
    fn other_generators_and_what_stays_refused() {
        let a = run("tcp_reset { eth.dst <-> eth.src; ip4.dst <-> ip4.src; next; };", 3, false).unwrap();
        let [Action::Generate { kind: GenKind::TcpReset, actions }] = a.as_slice() else { panic!() };
        assert_eq!(actions[2], Action::Next(4));
        for (text, kind) in [
            ("icmp4 { eth.dst <-> eth.src; ip4.dst <-> ip4.src; ip.ttl = 255; icmp4.type = 3; icmp4.code = 3; next; };", GenKind::Icmp),
            ("icmp6 { eth.dst <-> eth.src; ip6.dst <-> ip6.src; ip.ttl = 255; icmp6.type = 1; icmp6.code = 4; next; };", GenKind::Icmp),
            ("arp { eth.dst = ff:ff:ff:ff:ff:ff; arp.spa = 10.0.0.1; arp.op = 1; output; };", GenKind::Arp),
            ("nd_na_router { eth.src = 00:00:00:00:00:01; outport = inport; flags.loopback = 1; output; };", GenKind::NdNaRouter),
        ] {
            let a = run(text, 3, false).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert!(matches!(a.as_slice(), [Action::Generate { kind: k, .. }] if *k == kind), "{text}: {a:?}");
        }
        // Logical router flows of ovn-northd 23.03 (lflow-list of a router
        // with one port): all compile (Petrel does not run routers yet).
        for text in [
            "arp { eth.dst = ff:ff:ff:ff:ff:ff; arp.spa = reg1; arp.tpa = reg0; arp.op = 1; output; };",
            "icmp4 {eth.dst <-> eth.src; icmp4.type = 11; /* Time exceeded */ icmp4.code = 0; \
             /* TTL exceeded in transit */ ip4.dst = ip4.src; ip4.src = 10.0.0.254 ; ip.ttl = 254; \
             outport = \"p1\"; flags.loopback = 1; output; };",
            "icmp4 {eth.dst <-> eth.src; ip4.dst <-> ip4.src; ip.ttl = 255; icmp4.type = 3; icmp4.code = 2; next; };",
            "icmp6 {eth.dst <-> eth.src; ip6.dst = ip6.src; ip6.src = fd00::fe ; ip.ttl = 254; icmp6.type = 3; \
             /* Time exceeded */ icmp6.code = 0; /* TTL exceeded in transit */ outport = \"p1\"; \
             flags.loopback = 1; output; };",
            "nd_na_router { eth.src = xreg0[0..47]; ip6.src = nd.target; nd.tll = xreg0[0..47]; outport = inport; \
             flags.loopback = 1; output; };",
            "tcp_reset {eth.dst <-> eth.src; ip6.dst <-> ip6.src; next; };",
        ] {
            let a = run(text, 3, false).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert!(matches!(a.as_slice(), [Action::Generate { .. }]), "{text}: {a:?}");
        }
        // Jumps into the other pipeline, and nd.target writes, only inside a generator.
        assert!(run("nd.target = fd00::1; next;", 9, false).unwrap_err().unsupported);
        assert!(run("next(pipeline=egress,table=5);", 9, false).unwrap_err().unsupported);
        // Fragmentation-needed is not built.
        let e = run("icmp4_error { icmp4.type = 3; icmp4.code = 4; icmp4.frag_mtu = 1442; next; };", 3, false);
        assert!(e.unwrap_err().unsupported);
        assert!(run("sctp_abort { next; };", 3, false).unwrap_err().unsupported);
    }
}
