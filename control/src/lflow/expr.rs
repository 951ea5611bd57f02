//! From a parsed match to what a classifier holds: a disjunction of
//! conjunctions of masked key fields (OVN `expr_annotate`,
//! `expr_simplify`, `expr_normalize`, `expr_to_matches`).
//!
//! - Prerequisites are added where a field is compared (`tcp.dst != 80`
//!   means `ip && ip.proto == 6 && tcp.dst != 80`); negation was pushed to
//!   the comparisons by the parser, so prerequisites are always positive,
//!   as in OVN.
//! - `!=` becomes a disjunction over the value's bits, ordered comparisons
//!   a disjunction of prefix blocks, sets a disjunction of equalities.
//! - Conjunctions are merged per field as they are built, and
//!   contradictory ones (`ip4 && ip6`) vanish, so `&&` of sets costs the
//!   product of the satisfiable combinations only. OVN would use OpenFlow
//!   conjunctive matches where that product is large; the runtime's
//!   classifier has none, so the product is bounded by [`MAX_CONJUNCTIONS`]
//!   and a flow beyond it is refused, not truncated.

use std::collections::BTreeSet;

use petrel_dataplane::table::Field;

use super::parse::{self, Const, Expr, FieldRef, NumKind, RelOp};
use super::symtab::{self, LField, Symbol};

/// Most conjunctions one logical flow may expand to.
pub const MAX_CONJUNCTIONS: usize = 65_536;

/// `key.field & mask == value`, in [`Field::get`]'s numbering.
pub type Atom = (Field, u128, u128);

/// A conjunction of atoms, at most one per field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conj(pub Vec<Atom>);

impl Conj {
    /// Adds an atom; `false` if it contradicts what is there.
    fn and(&mut self, (f, v, m): Atom) -> bool {
        for a in &mut self.0 {
            if a.0 == f {
                if (a.1 ^ v) & a.2 & m != 0 {
                    return false;
                }
                a.1 |= v & m;
                a.2 |= m;
                return true;
            }
        }
        self.0.push((f, v & m, m));
        true
    }

    fn and_all(&self, other: &Conj) -> Option<Conj> {
        let mut c = self.clone();
        for a in &other.0 {
            if !c.and(*a) {
                return None;
            }
        }
        Some(c)
    }
}

/// Why an expression cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Byte offset in the match.
    pub pos: usize,
    /// What is wrong.
    pub msg: String,
    /// Valid OVN that Petrel does not run yet (as opposed to an error).
    pub unsupported: bool,
}

fn bad<T>(pos: usize, msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError { pos, msg: msg.into(), unsupported: false })
}

fn unsupported<T>(pos: usize, msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError { pos, msg: msg.into(), unsupported: true })
}

/// What names in an expression refer to, resolved in one datapath.
pub trait Resolve {
    /// A logical port or multicast group of this datapath, by name.
    fn port_key(&self, name: &str) -> Option<u32>;
    /// An address set's addresses.
    fn address_set(&self, name: &str) -> Option<Vec<String>>;
    /// A port group's port names.
    fn port_group(&self, name: &str) -> Option<Vec<String>>;
    /// Whether a port is resident on this chassis.
    fn chassis_resident(&self, port: &str) -> bool;
}

/// Names an expression used, so a change to one of them can recompile it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deps {
    /// Ports and multicast groups, by name.
    pub ports: BTreeSet<String>,
    /// Address sets.
    pub address_sets: BTreeSet<String>,
    /// Port groups.
    pub port_groups: BTreeSet<String>,
    /// Ports whose residence was asked.
    pub resident: BTreeSet<String>,
}

/// Converts a match to conjunctions.
///
/// # Errors
/// An unknown or unsupported symbol, a bad constant, or too many
/// conjunctions.
pub fn to_conjunctions(e: &Expr, r: &dyn Resolve, deps: &mut Deps) -> Result<Vec<Conj>, ExprError> {
    let mut out = dnf(e, r, deps, 0)?;
    for c in &mut out {
        c.0.sort_unstable();
    }
    let mut seen = BTreeSet::new();
    out.retain(|c| seen.insert(c.clone()));
    Ok(out)
}

/// Above this many conjunctions, an `&&` of sets becomes a conjunctive
/// match instead of its cross product.
pub const CONJ_THRESHOLD: usize = 64;

/// What a match compiles to: plain conjunctions, or a conjunctive match
/// (a base conjunction and dimensions that must each match once), as
/// ovn-controller turns `outport == @pg && ip4.src == $as` into OpenFlow
/// `conjunction` flows rather than `|pg| x |as|` flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// One conjunction of atoms.
    Plain(Conj),
    /// `base && (one of dims[0]) && (one of dims[1]) ...`; each alternative
    /// is one atom.
    Conjunctive {
        /// Common atoms.
        base: Conj,
        /// Alternatives per dimension.
        dims: Vec<Vec<Atom>>,
    },
}

fn flatten_and(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::And(v) => v.iter().for_each(|x| flatten_and(x, out)),
        other => out.push(other.clone()),
    }
}

/// A disjunction that is `common && (one atom of a single field)`, as a
/// dimension: (common atoms, alternatives).
fn as_dimension(d: &[Conj]) -> Option<(Conj, Vec<Atom>)> {
    let first = d.first()?;
    let common: Vec<Atom> = first.0.iter().filter(|a| d.iter().all(|c| c.0.contains(a))).copied().collect();
    let mut alts = Vec::with_capacity(d.len());
    let mut field = None;
    for c in d {
        let rest: Vec<&Atom> = c.0.iter().filter(|a| !common.contains(a)).collect();
        let [a] = rest.as_slice() else { return None };
        if *field.get_or_insert(a.0) != a.0 {
            return None;
        }
        alts.push(**a);
    }
    Some((Conj(common), alts))
}

/// Converts a match to [`Term`]s, using conjunctive matches where a cross
/// product of sets would exceed [`CONJ_THRESHOLD`].
///
/// # Errors
/// As [`to_conjunctions`].
pub fn to_terms(e: &Expr, r: &dyn Resolve, deps: &mut Deps) -> Result<Vec<Term>, ExprError> {
    if let Expr::Or(v) = e {
        let mut out = Vec::new();
        for x in v {
            out.extend(to_terms(x, r, deps)?);
        }
        return Ok(out);
    }
    let mut parts = Vec::new();
    flatten_and(e, &mut parts);
    let dnfs: Vec<Vec<Conj>> = parts.iter().map(|p| dnf(p, r, deps, 0)).collect::<Result<_, _>>()?;
    let product = dnfs.iter().fold(1usize, |a, d| a.saturating_mul(d.len().max(1)));
    if product > CONJ_THRESHOLD && dnfs.iter().all(|d| !d.is_empty()) {
        let mut base = vec![Conj::default()];
        let mut dims = Vec::new();
        for d in &dnfs {
            match (d.len() > 1).then(|| as_dimension(d)).flatten() {
                Some((common, alts)) => {
                    base = cross(base, std::slice::from_ref(&common), 0)?;
                    dims.push(alts);
                }
                None => base = cross(base, d, 0)?,
            }
        }
        if dims.len() >= 2 {
            return Ok(base.into_iter().map(|b| Term::Conjunctive { base: b, dims: dims.clone() }).collect());
        }
    }
    let mut acc = vec![Conj::default()];
    for d in &dnfs {
        acc = cross(acc, d, 0)?;
    }
    let mut seen = BTreeSet::new();
    acc.retain(|c| seen.insert(c.clone()));
    Ok(acc.into_iter().map(Term::Plain).collect())
}

fn cross(a: Vec<Conj>, b: &[Conj], pos: usize) -> Result<Vec<Conj>, ExprError> {
    let mut out = Vec::with_capacity(a.len().saturating_mul(b.len()).min(1024));
    for x in &a {
        for y in b {
            if let Some(c) = x.and_all(y) {
                out.push(c);
                if out.len() > MAX_CONJUNCTIONS {
                    return unsupported(
                        pos,
                        format!(
                            "expands to more than {MAX_CONJUNCTIONS} matches (OVN would use conjunctive matches, which the classifier lacks)"
                        ),
                    );
                }
            }
        }
    }
    Ok(out)
}

fn dnf(e: &Expr, r: &dyn Resolve, deps: &mut Deps, depth: u32) -> Result<Vec<Conj>, ExprError> {
    if depth > 32 {
        return bad(0, "predicates nest too deeply");
    }
    match e {
        Expr::True => Ok(vec![Conj::default()]),
        Expr::False => Ok(vec![]),
        Expr::And(v) => {
            let mut acc = vec![Conj::default()];
            for sub in v {
                let s = dnf(sub, r, deps, depth)?;
                acc = cross(acc, &s, 0)?;
                if acc.is_empty() {
                    break;
                }
            }
            Ok(acc)
        }
        Expr::Or(v) => {
            let mut acc = Vec::new();
            for sub in v {
                acc.extend(dnf(sub, r, deps, depth)?);
                if acc.len() > MAX_CONJUNCTIONS {
                    return unsupported(0, format!("expands to more than {MAX_CONJUNCTIONS} matches"));
                }
            }
            Ok(acc)
        }
        Expr::ChassisResident { port, negated, .. } => {
            deps.resident.insert(port.clone());
            Ok(if r.chassis_resident(port) != *negated { vec![Conj::default()] } else { vec![] })
        }
        Expr::Bool { field, negated } => match symtab::lookup(&field.name) {
            Some(Symbol::Predicate(text)) if field.bits.is_none() => {
                let mut x = predicate(text, field.pos)?;
                if *negated {
                    x = x.negate();
                }
                dnf(&x, r, deps, depth + 1)
            }
            Some(Symbol::Field(_)) => {
                let op = if *negated { RelOp::Ne } else { RelOp::Eq };
                let one = Const::Num { value: 1, mask: None, kind: NumKind::Int };
                let lf = resolve_field(field)?;
                if lf.width != 1 {
                    return bad(
                        field.pos,
                        format!("`{field}` is {} bits wide; only 1-bit fields stand alone", lf.width),
                    );
                }
                cmp(field, &lf, op, std::slice::from_ref(&one), r, deps, depth)
            }
            _ => {
                resolve_field(field)?;
                bad(field.pos, format!("`{field}` cannot be used here"))
            }
        },
        Expr::Cmp { field, op, values } => {
            let lf = resolve_field(field)?;
            cmp(field, &lf, *op, values, r, deps, depth)
        }
    }
}

fn predicate(text: &str, pos: usize) -> Result<Expr, ExprError> {
    parse::parse_match(text).or_else(|e| bad(pos, format!("predicate `{text}`: {e}")))
}

/// The logical field a reference names (subscripts applied).
///
/// # Errors
/// Unknown or unsupported names, or bits out of range.
pub fn resolve_field(f: &FieldRef) -> Result<LField, ExprError> {
    let lf = match symtab::lookup(&f.name) {
        Some(Symbol::Field(lf)) => lf,
        Some(Symbol::Predicate(_)) => return bad(f.pos, format!("`{}` is a predicate, not a field", f.name)),
        Some(Symbol::Unsupported(what)) => return unsupported(f.pos, format!("`{}`: {what}", f.name)),
        None => return bad(f.pos, format!("unknown field `{}`", f.name)),
    };
    match f.bits {
        None => Ok(lf),
        Some((lo, hi)) => {
            let mut s = lf.sub(lo, hi).ok_or(ExprError {
                pos: f.pos,
                msg: format!("`{f}` is outside the field"),
                unsupported: false,
            })?;
            s.ipv4_mapped = false;
            Ok(s)
        }
    }
}

fn ones(w: u32) -> u128 {
    if w >= 128 {
        u128::MAX
    } else {
        (1u128 << w) - 1
    }
}

/// The atoms saying `lf & mask == value`.
pub fn atoms(lf: &LField, value: u128, mask: u128) -> Vec<Atom> {
    let mut out = Vec::with_capacity(lf.parts.len());
    let mut base = 0;
    for &(f, ofs, w) in &lf.parts {
        let m = (mask >> base) & ones(w);
        if m != 0 {
            let v = (value >> base) & ones(w);
            out.push((f, v << ofs, m << ofs));
        }
        base += w;
    }
    out
}

/// The (value, mask) pairs a set of constants stands for in `lf`.
fn constants(
    field: &FieldRef,
    lf: &LField,
    values: &[Const],
    r: &dyn Resolve,
    deps: &mut Deps,
) -> Result<Vec<(u128, u128)>, ExprError> {
    let mut out = Vec::new();
    let full = ones(lf.width);
    for c in values {
        match c {
            Const::Str(s) if lf.string => {
                if s != "none" {
                    deps.ports.insert(s.clone());
                }
                // An unknown port matches nothing (lflow.c lookup_port_cb).
                let key = if s == "none" { Some(0) } else { r.port_key(s) };
                if let Some(k) = key {
                    out.push((u128::from(k), full));
                }
            }
            Const::PortGroup(pg) if lf.string => {
                deps.port_groups.insert(pg.clone());
                let Some(ports) = r.port_group(pg) else { continue };
                for p in ports {
                    deps.ports.insert(p.clone());
                    if let Some(k) = r.port_key(&p) {
                        out.push((u128::from(k), full));
                    }
                }
            }
            Const::AddrSet(name) if !lf.string => {
                deps.address_sets.insert(name.clone());
                let Some(addrs) = r.address_set(name) else { continue };
                for a in addrs {
                    let toks = parse::lex(&a).or_else(|e| bad(field.pos, format!("address set {name}: {e}")))?;
                    match toks.as_slice() {
                        [(parse::Tok::Num { value, mask, kind }, _), (parse::Tok::End, _)] => {
                            out.push(number(field, lf, *value, *mask, *kind)?);
                        }
                        _ => return bad(field.pos, format!("address set {name}: `{a}` is not an address")),
                    }
                }
            }
            Const::Num { value, mask, kind } if !lf.string => out.push(number(field, lf, *value, *mask, *kind)?),
            _ if lf.string => return bad(field.pos, format!("`{field}` takes port names (quoted strings)")),
            _ => return bad(field.pos, format!("`{field}` takes numbers or addresses, not strings")),
        }
    }
    Ok(out)
}

fn number(
    field: &FieldRef,
    lf: &LField,
    value: u128,
    mask: Option<u128>,
    kind: NumKind,
) -> Result<(u128, u128), ExprError> {
    let full = ones(lf.width);
    let mask = mask.unwrap_or(full);
    if value & !full != 0 || mask & !full != 0 {
        return bad(field.pos, format!("constant is wider than the {} bits of `{field}`", lf.width));
    }
    let _ = kind;
    Ok((value & mask, mask))
}

/// `lo..=hi` as prefix blocks (value, mask) of a `w`-bit field.
fn range_blocks(lo: u128, hi: u128, w: u32) -> Vec<(u128, u128)> {
    let full = ones(w);
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        // Largest block starting at `cur` that stays within `hi`.
        let mut size_bits = 0u32;
        while size_bits < w {
            let next = size_bits + 1;
            let block = if next >= 128 { u128::MAX } else { (1u128 << next) - 1 };
            if cur & block != 0 || cur.checked_add(block).is_none_or(|end| end > hi) {
                break;
            }
            size_bits = next;
        }
        let block = ones(size_bits);
        out.push((cur, full & !block));
        match cur.checked_add(block).and_then(|e| e.checked_add(1)) {
            Some(n) if n <= hi && n > cur => cur = n,
            _ => break,
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn cmp(
    field: &FieldRef,
    lf: &LField,
    op: RelOp,
    values: &[Const],
    r: &dyn Resolve,
    deps: &mut Deps,
    depth: u32,
) -> Result<Vec<Conj>, ExprError> {
    let consts = constants(field, lf, values, r, deps)?;
    let conj_of = |atoms: Vec<Atom>| {
        let mut c = Conj::default();
        for a in atoms {
            if !c.and(a) {
                return None;
            }
        }
        Some(c)
    };
    let body: Vec<Conj> = match op {
        RelOp::Eq => consts.iter().filter_map(|(v, m)| conj_of(atoms(lf, *v, *m))).collect(),
        RelOp::Ne => {
            // Not equal to any: for each constant, some masked bit differs.
            let mut acc = vec![Conj::default()];
            for (v, m) in &consts {
                let mut alts = Vec::new();
                for bit in 0..lf.width {
                    let b = 1u128 << bit;
                    if m & b != 0 {
                        if let Some(c) = conj_of(atoms(lf, !v & b, b)) {
                            alts.push(c);
                        }
                    }
                }
                acc = cross(acc, &alts, field.pos)?;
            }
            acc
        }
        RelOp::Lt | RelOp::Le | RelOp::Gt | RelOp::Ge => {
            let [(v, m)] = consts.as_slice() else {
                return bad(field.pos, "ordered comparisons take one constant");
            };
            if *m != ones(lf.width) {
                return bad(field.pos, "ordered comparisons take an unmasked constant");
            }
            let max = ones(lf.width);
            let (lo, hi) = match op {
                RelOp::Lt if *v == 0 => return Ok(vec![]),
                RelOp::Lt => (0, v - 1),
                RelOp::Le => (0, *v),
                RelOp::Gt if *v == max => return Ok(vec![]),
                RelOp::Gt => (v + 1, max),
                _ => (*v, max),
            };
            range_blocks(lo, hi, lf.width).into_iter().filter_map(|(v, m)| conj_of(atoms(lf, v, m))).collect()
        }
    };
    match lf.prereq {
        None => Ok(body),
        Some(p) => {
            let pre = dnf(&predicate(p, field.pos)?, r, deps, depth + 1)?;
            cross(pre, &body, field.pos)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct R(BTreeMap<&'static str, u32>);
    impl Resolve for R {
        fn port_key(&self, name: &str) -> Option<u32> {
            self.0.get(name).copied()
        }
        fn address_set(&self, name: &str) -> Option<Vec<String>> {
            (name == "as1").then(|| vec!["10.0.0.1".into(), "10.1.0.0/16".into()])
        }
        fn port_group(&self, name: &str) -> Option<Vec<String>> {
            (name == "pg1").then(|| vec!["p1".into(), "p2".into(), "gone".into()])
        }
        fn chassis_resident(&self, port: &str) -> bool {
            port == "here"
        }
    }

    fn conj(text: &str) -> Vec<Conj> {
        let r = R([("p1", 1), ("p2", 2), ("_MC_flood", 32768)].into_iter().collect());
        to_conjunctions(&parse::parse_match(text).unwrap(), &r, &mut Deps::default()).unwrap()
    }

    fn has(c: &Conj, a: Atom) -> bool {
        c.0.contains(&a)
    }

    #[test]
    fn test_prerequisites_and_contradictions() {
        let c = conj("tcp.dst == 80");
        // (ip4 || ip6) && proto 6 && dst 80 → two conjunctions.
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| has(c, (Field::IpProto, 6, 0xff)) && has(c, (Field::TpDst, 80, 0xffff))));
        assert!(conj("ip4 && ip6").is_empty());
        assert!(conj("arp && tcp").is_empty());
        assert_eq!(conj("1"), vec![Conj::default()]);
        assert!(conj("0").is_empty());
    }

    #[test]
    fn test_negation_expands_over_bits() {
        // eth.type != 0x800: one conjunction per bit of 16.
        assert_eq!(conj("!ip4").len(), 16);
        // reg0[15] == 1 is one bit of reg0.
        let c = conj("reg0[15] == 1");
        assert_eq!(c, vec![Conj(vec![(Field::Reg(0), 1 << 15, 1 << 15)])]);
        let c = conj("!reg0[3]");
        assert_eq!(c, vec![Conj(vec![(Field::Reg(0), 0, 1 << 3)])]);
    }

    #[test]
    fn test_sets_ports_groups_and_address_sets() {
        let c = conj(r#"inport == {"p1", "p2", "nope"}"#);
        assert_eq!(c.len(), 2);
        let c = conj("outport == @pg1");
        assert_eq!(c.len(), 2);
        let c = conj("ip4.src == $as1");
        assert_eq!(c.len(), 2);
        assert!(c.iter().any(|c| has(c, (Field::IpSrc, 0x0a01_0000, 0xffff_0000))));
        let c = conj(r#"outport == "none""#);
        assert_eq!(c, vec![Conj(vec![(Field::Reg(15), 0, 0xffff_ffff)])]);
        assert!(conj("is_chassis_resident(\"elsewhere\")").is_empty());
        assert_eq!(conj("is_chassis_resident(\"here\")").len(), 1);
    }

    #[test]
    fn test_sets_crossed_become_conjunctive() {
        let r = R([("p1", 1), ("p2", 2)].into_iter().collect());
        let e = parse::parse_match("reg0[7] == 1 && (outport == @pg1 && ip4.src == $as1)").unwrap();
        // 2 x 2 = 4: below the threshold, plain.
        let t = to_terms(&e, &r, &mut Deps::default()).unwrap();
        assert_eq!(t.len(), 4);
        assert!(t.iter().all(|t| matches!(t, Term::Plain(_))));
        // A large set crossed with another: conjunctive.
        let set: Vec<String> = (1..=100).map(|i| format!("10.0.{i}.1")).collect();
        let e = parse::parse_match(&format!(
            "outport == {{\"p1\", \"p2\"}} && ip4.src == {{{}}} && tcp.dst == {{1, 2, 3}}",
            set.join(", ")
        ))
        .unwrap();
        let t = to_terms(&e, &r, &mut Deps::default()).unwrap();
        assert!(t.iter().all(|t| matches!(t, Term::Conjunctive { dims, .. } if dims.len() >= 2)), "{t:?}");
        let Term::Conjunctive { base, dims } = &t[0] else { panic!() };
        assert!(base.0.contains(&(Field::EthType, 0x800, 0xffff)));
        // tcp.dst's set shares no field-only shape with ip4/ip6 halves: it
        // stays in the base (3 conjunctions after ip4 removed the ip6 ones).
        assert_eq!(t.len(), 3);
        assert_eq!(dims.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 100]);
    }

    #[test]
    fn test_ranges() {
        assert_eq!(range_blocks(0, 65535, 16), vec![(0, 0)]);
        assert_eq!(range_blocks(1, 3, 16), vec![(1, 0xffff), (2, 0xfffe)]);
        let c = conj("udp.dst >= 1024");
        // 1024..65535 = 1024/6 bits... 6 blocks per IP family.
        assert_eq!(c.len(), 12);
        assert!(conj("udp.dst < 0").is_empty());
    }

    #[test]
    fn test_unsupported_and_errors() {
        let r = R(BTreeMap::new());
        let e = to_conjunctions(&parse::parse_match("ct.est && ip4").unwrap(), &r, &mut Deps::default()).unwrap_err();
        assert!(e.unsupported);
        let e =
            to_conjunctions(&parse::parse_match("ip4 && nosuch == 1").unwrap(), &r, &mut Deps::default()).unwrap_err();
        assert!(!e.unsupported);
        assert_eq!(e.pos, 7);
        let e = to_conjunctions(&parse::parse_match("ip.ttl == 256").unwrap(), &r, &mut Deps::default()).unwrap_err();
        assert!(e.msg.contains("wider"));
    }
}
