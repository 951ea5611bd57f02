//! Lexer and parser for OVN's logical-flow language (ovn-sb(5) "Logical_Flow
//! TABLE": the `match` and `actions` columns), as `lib/lex.c`,
//! `lib/expr.c` and `lib/actions.c` of OVN 23.03 read them.
//!
//! The parser only builds syntax; what names mean (fields, predicates,
//! actions) is the compiler's business ([`super::symtab`],
//! [`super::compile`]). Every node keeps the byte offset where it starts,
//! so errors can name the column. Negation is pushed down to comparisons
//! at parse time, as `expr_not` does: `!(tcp.dst == 80)` is `tcp.dst != 80`,
//! which is what later gives prerequisites their positive sense.

use std::fmt;

/// A parse error: what was wrong, and where (byte offset in the column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the text.
    pub pos: usize,
    /// What was expected or found.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.pos + 1, self.msg)
    }
}

impl std::error::Error for ParseError {}

type Result<T> = std::result::Result<T, ParseError>;

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T> {
    Err(ParseError { pos, msg: msg.into() })
}

/// How a numeric constant was written; decides what `/N` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumKind {
    /// Decimal or hexadecimal integer.
    Int,
    /// Ethernet address.
    Mac,
    /// IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
}

impl NumKind {
    /// Width in bits, for prefix masks.
    pub fn width(self) -> u32 {
        match self {
            NumKind::Int => 128,
            NumKind::Mac => 48,
            NumKind::Ipv4 => 32,
            NumKind::Ipv6 => 128,
        }
    }
}

/// A token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// Identifier (may contain dots: `eth.src`).
    Id(String),
    /// Quoted string.
    Str(String),
    /// Number, optionally masked (`10.0.0.0/8`, `0x10/0xf0`).
    Num {
        /// Value (big-endian numbering: the last byte is the low byte).
        value: u128,
        /// Mask, if written.
        mask: Option<u128>,
        /// How it was written.
        kind: NumKind,
    },
    /// `$name`: an address set.
    AddrSet(String),
    /// `@name`: a port group.
    PortGroup(String),
    /// Punctuation or operator.
    P(&'static str),
    /// End of input.
    End,
}

const PUNCT: &[&str] =
    &["<->", "==", "!=", "<=", ">=", "&&", "||", "..", "<", ">", "!", "(", ")", "{", "}", "[", "]", ",", ";", "=", "-"];

/// Splits `text` into tokens with their byte offsets.
///
/// # Errors
/// The first malformed token.
pub fn lex(text: &str) -> Result<Vec<(Tok, usize)>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let Some(end) = text[i + 2..].find("*/") else { return err(i, "unterminated comment") };
            i += end + 4;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            i = text[i..].find('\n').map_or(b.len(), |e| i + e);
            continue;
        }
        let start = i;
        if c == b'"' {
            let mut s = String::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return err(start, "unterminated string"),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        let Some(&e) = b.get(i + 1) else { return err(i, "unterminated string") };
                        s.push(match e {
                            b'n' => '\n',
                            b't' => '\t',
                            other => char::from(other),
                        });
                        i += 2;
                    }
                    Some(_) => {
                        let ch = text[i..].chars().next().unwrap_or('\0');
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            i += 1;
            out.push((Tok::Str(s), start));
            continue;
        }
        if c == b'$' || c == b'@' {
            let (name, n) = ident(&b[i + 1..]);
            if n == 0 {
                return err(i, format!("`{}` must be followed by a name", char::from(c)));
            }
            out.push((if c == b'$' { Tok::AddrSet(name) } else { Tok::PortGroup(name) }, start));
            i += 1 + n;
            continue;
        }
        if looks_numeric(&b[i..]) {
            let (tok, n) = number(text, i)?;
            out.push((tok, start));
            i += n;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let (name, n) = ident(&b[i..]);
            out.push((Tok::Id(name), start));
            i += n;
            continue;
        }
        let Some(p) = PUNCT.iter().find(|p| b[i..].starts_with(p.as_bytes())) else {
            return err(i, format!("unexpected character `{}`", char::from(c)));
        };
        out.push((Tok::P(p), start));
        i += p.len();
    }
    out.push((Tok::End, b.len()));
    Ok(out)
}

fn ident(b: &[u8]) -> (String, usize) {
    let n = b.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'.').count();
    // A trailing or doubled dot belongs to the next token (`reg0[0..7]`).
    let mut n2 = n;
    if let Some(p) = b[..n].windows(2).position(|w| w == b"..") {
        n2 = p;
    }
    while n2 > 0 && b[n2 - 1] == b'.' {
        n2 -= 1;
    }
    (String::from_utf8_lossy(&b[..n2]).into_owned(), n2)
}

/// Whether the text at `b` is a number: a digit, `::`, or hex digits
/// followed by `:` (a MAC or an IPv6 address such as `fe80::1`).
fn looks_numeric(b: &[u8]) -> bool {
    match b.first() {
        Some(c) if c.is_ascii_digit() => true,
        Some(b':') => b.get(1) == Some(&b':'),
        Some(c) if c.is_ascii_hexdigit() => {
            let n = b.iter().take_while(|c| c.is_ascii_hexdigit()).count();
            n <= 4 && b.get(n) == Some(&b':')
        }
        _ => false,
    }
}

/// The extent of one numeric literal: hex digits, `x`, `:` and single dots.
fn num_extent(b: &[u8]) -> usize {
    let mut n = 0;
    while n < b.len() {
        let c = b[n];
        if c == b'.' {
            if b.get(n + 1) == Some(&b'.') || !b.get(n + 1).is_some_and(u8::is_ascii_digit) {
                break;
            }
        } else if !(c.is_ascii_hexdigit() || c == b'x' || c == b'X' || c == b':') {
            break;
        }
        n += 1;
    }
    n
}

fn number(text: &str, i: usize) -> Result<(Tok, usize)> {
    let b = text.as_bytes();
    let n = num_extent(&b[i..]);
    let (value, kind) = parse_num(&text[i..i + n])
        .ok_or(ParseError { pos: i, msg: format!("`{}` is not a number, MAC or IP address", &text[i..i + n]) })?;
    let mut len = n;
    let mut mask = None;
    if b.get(i + n) == Some(&b'/') {
        let j = i + n + 1;
        let m = num_extent(&b[j..]);
        let s = &text[j..j + m];
        let parsed = parse_num(s).ok_or(ParseError { pos: j, msg: format!("bad mask `{s}`") })?;
        let w = kind.width();
        mask = Some(match parsed {
            // `/N` is a prefix length for addresses and a bit mask
            // otherwise, unless written as an integer for an address.
            (plen, NumKind::Int) if kind != NumKind::Int && !s.starts_with("0x") => {
                let plen = u32::try_from(plen)
                    .ok()
                    .filter(|p| *p <= w)
                    .ok_or(ParseError { pos: j, msg: format!("prefix length {plen} is longer than {w} bits") })?;
                prefix_mask(w, plen)
            }
            (m, _) => m,
        });
        len = n + 1 + m;
    }
    Ok((Tok::Num { value, mask, kind }, len))
}

/// The mask of the top `plen` bits of a `w`-bit field.
pub fn prefix_mask(w: u32, plen: u32) -> u128 {
    let ones = if w >= 128 { u128::MAX } else { (1u128 << w) - 1 };
    if plen == 0 {
        0
    } else if plen >= w {
        ones
    } else {
        ones & !(ones >> plen)
    }
}

fn parse_num(s: &str) -> Option<(u128, NumKind)> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u128::from_str_radix(h, 16).ok().map(|v| (v, NumKind::Int));
    }
    if s.contains(':') {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
            let v =
                parts.iter().try_fold(0u128, |a, p| u8::from_str_radix(p, 16).ok().map(|x| (a << 8) | u128::from(x)));
            return v.map(|v| (v, NumKind::Mac));
        }
        return s.parse::<std::net::Ipv6Addr>().ok().map(|a| (a.to_bits(), NumKind::Ipv6));
    }
    if s.contains('.') {
        return s.parse::<std::net::Ipv4Addr>().ok().map(|a| (u128::from(a.to_bits()), NumKind::Ipv4));
    }
    s.parse::<u128>().ok().map(|v| (v, NumKind::Int))
}

/// A field reference: `reg0`, `eth.dst[40]`, `reg0[0..7]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    /// Symbol name.
    pub name: String,
    /// Bit range `[lo..hi]` (inclusive), if subscripted.
    pub bits: Option<(u32, u32)>,
    /// Where it starts.
    pub pos: usize,
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bits {
            None => write!(f, "{}", self.name),
            Some((l, h)) if l == h => write!(f, "{}[{l}]", self.name),
            Some((l, h)) => write!(f, "{}[{l}..{h}]", self.name),
        }
    }
}

/// A constant on the right of a comparison or assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Const {
    /// A number (masked or not).
    Num {
        /// Value.
        value: u128,
        /// Mask.
        mask: Option<u128>,
        /// How it was written.
        kind: NumKind,
    },
    /// A string (a port name).
    Str(String),
    /// An address set, expanded by the compiler.
    AddrSet(String),
    /// A port group, expanded by the compiler.
    PortGroup(String),
}

/// Relational operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl RelOp {
    fn negate(self) -> Self {
        match self {
            RelOp::Eq => RelOp::Ne,
            RelOp::Ne => RelOp::Eq,
            RelOp::Lt => RelOp::Ge,
            RelOp::Le => RelOp::Gt,
            RelOp::Gt => RelOp::Le,
            RelOp::Ge => RelOp::Lt,
        }
    }
}

/// A match expression, negation already pushed to the leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Always true (`1`).
    True,
    /// Always false (`0`).
    False,
    /// All of these.
    And(Vec<Expr>),
    /// Any of these.
    Or(Vec<Expr>),
    /// `field OP {values}` (a set means any of them for `==`, none for `!=`).
    Cmp {
        /// The field.
        field: FieldRef,
        /// The operator.
        op: RelOp,
        /// The values.
        values: Vec<Const>,
    },
    /// A bare symbol (`ip4`, `reg0[3]`), or its negation.
    Bool {
        /// The symbol.
        field: FieldRef,
        /// `!sym`.
        negated: bool,
    },
    /// `is_chassis_resident("port")`, or its negation.
    ChassisResident {
        /// The port.
        port: String,
        /// Negated.
        negated: bool,
        /// Where.
        pos: usize,
    },
}

impl Expr {
    /// `!self`, pushed down (De Morgan, operators flipped).
    pub fn negate(self) -> Expr {
        match self {
            Expr::True => Expr::False,
            Expr::False => Expr::True,
            Expr::And(v) => Expr::Or(v.into_iter().map(Expr::negate).collect()),
            Expr::Or(v) => Expr::And(v.into_iter().map(Expr::negate).collect()),
            Expr::Cmp { field, op, values } => Expr::Cmp { field, op: op.negate(), values },
            Expr::Bool { field, negated } => Expr::Bool { field, negated: !negated },
            Expr::ChassisResident { port, negated, pos } => Expr::ChassisResident { port, negated: !negated, pos },
        }
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self> {
        Ok(Parser { toks: lex(text)?, i: 0 })
    }
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }
    fn peek2(&self) -> &Tok {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)].0
    }
    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Tok::P(q) if *q == p) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, p: &str) -> Result<()> {
        if self.eat(p) {
            Ok(())
        } else {
            err(self.pos(), format!("expected `{p}`, found {}", describe(self.peek())))
        }
    }

    // ---- match expressions ----

    /// expr := and-or chain; `&&` and `||` cannot mix without parentheses.
    fn expr(&mut self) -> Result<Expr> {
        let first = self.unary()?;
        let op = match self.peek() {
            Tok::P("&&") => "&&",
            Tok::P("||") => "||",
            _ => return Ok(first),
        };
        let mut v = vec![first];
        while self.eat(op) {
            v.push(self.unary()?);
        }
        if let Tok::P(p @ ("&&" | "||")) = self.peek() {
            return err(self.pos(), format!("`&&` and `||` must be parenthesized when used together (found `{p}`)"));
        }
        Ok(if op == "&&" { Expr::And(v) } else { Expr::Or(v) })
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.eat("!") {
            return Ok(self.unary()?.negate());
        }
        if self.eat("(") {
            let e = self.expr()?;
            self.expect(")")?;
            return Ok(e);
        }
        let pos = self.pos();
        match self.bump() {
            Tok::Num { value, mask: None, kind: NumKind::Int } if value <= 1 => {
                Ok(if value == 1 { Expr::True } else { Expr::False })
            }
            Tok::Id(name) if name == "is_chassis_resident" && matches!(self.peek(), Tok::P("(")) => {
                self.bump();
                let port = match self.bump() {
                    Tok::Str(s) => s,
                    t => {
                        return err(
                            pos,
                            format!("is_chassis_resident() takes a quoted port name, found {}", describe(&t)),
                        )
                    }
                };
                self.expect(")")?;
                Ok(Expr::ChassisResident { port, negated: false, pos })
            }
            Tok::Id(name) => {
                let field = self.subscript(name, pos)?;
                let op = match self.peek() {
                    Tok::P("==") => RelOp::Eq,
                    Tok::P("!=") => RelOp::Ne,
                    Tok::P("<") => RelOp::Lt,
                    Tok::P("<=") => RelOp::Le,
                    Tok::P(">") => RelOp::Gt,
                    Tok::P(">=") => RelOp::Ge,
                    _ => return Ok(Expr::Bool { field, negated: false }),
                };
                self.bump();
                let values = self.values()?;
                Ok(Expr::Cmp { field, op, values })
            }
            t => err(pos, format!("expected a field, `(`, `!` or 0/1, found {}", describe(&t))),
        }
    }

    fn subscript(&mut self, name: String, pos: usize) -> Result<FieldRef> {
        let mut bits = None;
        if self.eat("[") {
            let lo = self.small_int()?;
            let hi = if self.eat("..") { self.small_int()? } else { lo };
            if hi < lo {
                return err(pos, format!("bit range [{lo}..{hi}] is reversed"));
            }
            self.expect("]")?;
            bits = Some((lo, hi));
        }
        Ok(FieldRef { name, bits, pos })
    }

    fn small_int(&mut self) -> Result<u32> {
        let pos = self.pos();
        match self.bump() {
            Tok::Num { value, mask: None, kind: NumKind::Int } if value < 1024 => Ok(u32::try_from(value).unwrap_or(0)),
            t => err(pos, format!("expected a bit index, found {}", describe(&t))),
        }
    }

    fn values(&mut self) -> Result<Vec<Const>> {
        if self.eat("{") {
            let mut v = Vec::new();
            loop {
                if self.eat("}") {
                    break;
                }
                v.push(self.constant()?);
                if !self.eat(",") {
                    self.expect("}")?;
                    break;
                }
            }
            return Ok(v);
        }
        Ok(vec![self.constant()?])
    }

    fn constant(&mut self) -> Result<Const> {
        let pos = self.pos();
        match self.bump() {
            Tok::Num { value, mask, kind } => Ok(Const::Num { value, mask, kind }),
            Tok::Str(s) => Ok(Const::Str(s)),
            Tok::AddrSet(s) => Ok(Const::AddrSet(s)),
            Tok::PortGroup(s) => Ok(Const::PortGroup(s)),
            t => err(pos, format!("expected a constant, found {}", describe(&t))),
        }
    }

    // ---- actions ----

    fn actions(&mut self, until_brace: bool) -> Result<Vec<Act>> {
        let mut v = Vec::new();
        loop {
            match self.peek() {
                Tok::End if !until_brace => return Ok(v),
                Tok::P("}") if until_brace => {
                    self.bump();
                    return Ok(v);
                }
                Tok::End => return err(self.pos(), "expected `}`"),
                Tok::P(";") => {
                    // An empty action (`;`), as after a comment-only body.
                    self.bump();
                }
                _ => v.push(self.action()?),
            }
        }
    }

    fn action(&mut self) -> Result<Act> {
        let pos = self.pos();
        let name = match self.bump() {
            Tok::Id(n) => n,
            t => return err(pos, format!("expected an action, found {}", describe(&t))),
        };
        // `dst = ...`, `dst <-> src`, with an optional subscript.
        if matches!(self.peek(), Tok::P("[" | "=" | "<->")) {
            let dst = self.subscript(name, pos)?;
            if self.eat("<->") {
                let p2 = self.pos();
                let Tok::Id(n2) = self.bump() else { return err(p2, "expected a field after `<->`") };
                let src = self.subscript(n2, p2)?;
                self.expect(";")?;
                return Ok(Act::Exchange { a: dst, b: src, pos });
            }
            self.expect("=")?;
            let rpos = self.pos();
            let rhs = match self.peek().clone() {
                Tok::Id(fname) if matches!(self.peek2(), Tok::P("(")) => {
                    self.bump();
                    let args = self.args()?;
                    Rhs::Call { name: fname, args, pos: rpos }
                }
                Tok::Id(n2) => {
                    self.bump();
                    Rhs::Field(self.subscript(n2, rpos)?)
                }
                _ => Rhs::Const(self.constant()?),
            };
            self.expect(";")?;
            return Ok(Act::Assign { dst, rhs, pos });
        }
        let args = if matches!(self.peek(), Tok::P("(")) { Some(self.args()?) } else { None };
        let body = if self.eat("{") { Some(self.actions(true)?) } else { None };
        self.expect(";")?;
        Ok(Act::Call { name, args, body, pos })
    }

    /// `( tokens... )`, split at top-level commas, kept as token lists.
    fn args(&mut self) -> Result<Vec<Vec<Tok>>> {
        self.expect("(")?;
        let mut out = vec![Vec::new()];
        let mut depth = 0;
        loop {
            let pos = self.pos();
            let t = self.bump();
            match &t {
                Tok::End => return err(pos, "expected `)`"),
                Tok::P("(") => depth += 1,
                Tok::P(")") if depth == 0 => break,
                Tok::P(")") => depth -= 1,
                Tok::P(",") if depth == 0 => {
                    out.push(Vec::new());
                    continue;
                }
                _ => {}
            }
            if let Some(last) = out.last_mut() {
                last.push(t);
            }
        }
        if out.len() == 1 && out[0].is_empty() {
            out.clear();
        }
        Ok(out)
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Id(s) => format!("`{s}`"),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Num { .. } => "a number".to_owned(),
        Tok::AddrSet(s) => format!("`${s}`"),
        Tok::PortGroup(s) => format!("`@{s}`"),
        Tok::P(p) => format!("`{p}`"),
        Tok::End => "the end".to_owned(),
    }
}

/// The right side of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rhs {
    /// A constant.
    Const(Const),
    /// Another field (a move).
    Field(FieldRef),
    /// A function's result (`check_in_port_sec()`, `get_fdb(eth.dst)`).
    Call {
        /// Function.
        name: String,
        /// Arguments, as tokens.
        args: Vec<Vec<Tok>>,
        /// Where.
        pos: usize,
    },
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// `dst = rhs;`
    Assign {
        /// Destination.
        dst: FieldRef,
        /// Source.
        rhs: Rhs,
        /// Where.
        pos: usize,
    },
    /// `a <-> b;`
    Exchange {
        /// One side.
        a: FieldRef,
        /// The other.
        b: FieldRef,
        /// Where.
        pos: usize,
    },
    /// Anything else: `next;`, `next(pipeline=egress, table=5);`,
    /// `output;`, `drop;`, `ct_next;`, `put_fdb(inport, eth.src);`,
    /// `clone { ... };`, `nd_na { ... };`.
    Call {
        /// Name.
        name: String,
        /// Arguments, if parenthesised.
        args: Option<Vec<Vec<Tok>>>,
        /// Nested actions, if braced.
        body: Option<Vec<Act>>,
        /// Where.
        pos: usize,
    },
}

/// Parses a `match` column.
///
/// # Errors
/// The first syntax error, with its position.
pub fn parse_match(text: &str) -> Result<Expr> {
    let mut p = Parser::new(text)?;
    let e = p.expr()?;
    if !matches!(p.peek(), Tok::End) {
        return err(p.pos(), format!("unexpected {} after the expression", describe(p.peek())));
    }
    Ok(e)
}

/// Parses an `actions` column.
///
/// # Errors
/// The first syntax error, with its position.
pub fn parse_actions(text: &str) -> Result<Vec<Act>> {
    let mut p = Parser::new(text)?;
    p.actions(false)
}

/// Replaces template variables (`^name`) by their values for this chassis,
/// as ovn-controller does before parsing (`lexer_force_end`/template
/// expansion in `lib/lex.c`).
///
/// # Errors
/// A variable with no value for this chassis.
pub fn expand_templates(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    if !text.contains('^') {
        return Ok(text.to_owned());
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if c == b'"' && (i == 0 || b[i - 1] != b'\\') {
            in_str = !in_str;
        }
        if c == b'^' && !in_str {
            let (name, n) = ident(&b[i + 1..]);
            if n == 0 {
                return err(i, "`^` must be followed by a template variable name");
            }
            let Some(v) = vars(&name) else {
                return err(i, format!("template variable `^{name}` has no value for this chassis"));
            };
            out.push_str(&v);
            i += 1 + n;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    Ok(out)
}

/// Parses one token list (a function argument) as a field reference.
pub fn arg_field(tokens: &[Tok]) -> Option<FieldRef> {
    match tokens {
        [Tok::Id(n)] => Some(FieldRef { name: n.clone(), bits: None, pos: 0 }),
        [Tok::Id(n), Tok::P("["), Tok::Num { value: lo, .. }, Tok::P("]")] => {
            let lo = u32::try_from(*lo).ok()?;
            Some(FieldRef { name: n.clone(), bits: Some((lo, lo)), pos: 0 })
        }
        [Tok::Id(n), Tok::P("["), Tok::Num { value: lo, .. }, Tok::P(".."), Tok::Num { value: hi, .. }, Tok::P("]")] => {
            Some(FieldRef { name: n.clone(), bits: Some((u32::try_from(*lo).ok()?, u32::try_from(*hi).ok()?)), pos: 0 })
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn num(v: u128, kind: NumKind) -> Const {
        Const::Num { value: v, mask: None, kind }
    }

    #[test]
    fn test_lex_addresses_and_masks() {
        let t = lex("eth.src == 00:00:00:00:00:01 && ip4.dst == 10.0.0.0/8 && ip6.dst == fe80::1/64").unwrap();
        assert_eq!(t[2].0, Tok::Num { value: 1, mask: None, kind: NumKind::Mac });
        assert_eq!(t[6].0, Tok::Num { value: 0x0a00_0000, mask: Some(0xff00_0000), kind: NumKind::Ipv4 });
        let Tok::Num { value, mask, kind: NumKind::Ipv6 } = t[10].0 else { panic!("{:?}", t[10]) };
        assert_eq!(value, "fe80::1".parse::<std::net::Ipv6Addr>().unwrap().to_bits());
        assert_eq!(mask, Some(u128::MAX << 64));
        assert_eq!(prefix_mask(128, 128), u128::MAX);
        assert_eq!(prefix_mask(32, 32), 0xffff_ffff);
        assert_eq!(prefix_mask(32, 0), 0);
        let t = lex("reg0[0..7] == 0x10/0xf0").unwrap();
        assert_eq!(t[0].0, Tok::Id("reg0".into()));
        assert_eq!(t[3].0, Tok::P(".."));
        assert_eq!(t[7].0, Tok::Num { value: 0x10, mask: Some(0xf0), kind: NumKind::Int });
        assert_eq!(
            lex("ff02::1:ff00:1").unwrap()[0].0,
            Tok::Num {
                value: "ff02::1:ff00:1".parse::<std::net::Ipv6Addr>().unwrap().to_bits(),
                mask: None,
                kind: NumKind::Ipv6
            }
        );
        assert!(lex("eth.src == 1.2.3").is_err());
    }

    #[test]
    fn test_parse_match() {
        let e =
            parse_match(r#"inport == "p1" && (eth.dst == {00:00:00:00:00:01, 00:00:00:00:00:02} || !ip4)"#).unwrap();
        let Expr::And(v) = e else { panic!() };
        assert_eq!(v.len(), 2);
        let Expr::Or(o) = &v[1] else { panic!() };
        assert!(matches!(&o[1], Expr::Bool { negated: true, .. }));
        let Expr::Cmp { values, .. } = &o[0] else { panic!() };
        assert_eq!(values, &vec![num(1, NumKind::Mac), num(2, NumKind::Mac)]);
        // Negation flips operators.
        let e = parse_match("!(tcp.dst == 80 && udp)").unwrap();
        let Expr::Or(o) = e else { panic!() };
        assert!(matches!(&o[0], Expr::Cmp { op: RelOp::Ne, .. }));
        assert!(matches!(&o[1], Expr::Bool { negated: true, .. }));
        assert_eq!(parse_match("1").unwrap(), Expr::True);
        let e = parse_match("is_chassis_resident(\"cr-lrp\") && eth.mcast").unwrap();
        assert!(matches!(&e, Expr::And(v) if matches!(&v[0], Expr::ChassisResident { .. })));
    }

    #[test]
    fn test_parse_errors_have_positions() {
        let e = parse_match("ip4 && ip6 || arp").unwrap_err();
        assert_eq!(e.pos, 11);
        let e = parse_match("eth.src ==").unwrap_err();
        assert_eq!(e.pos, 10);
        let e = parse_actions("next; output").unwrap_err();
        assert!(e.msg.contains("expected `;`"), "{e}");
    }

    #[test]
    fn test_parse_actions() {
        let a = parse_actions(
            "eth.dst = eth.src; eth.src = 00:00:00:00:00:01; arp.op = 2; /* ARP reply */ \
             outport = inport; flags.loopback = 1; reg0[15] = check_in_port_sec(); \
             nd_na { eth.src = 00:00:00:00:00:01; output; }; next(pipeline=egress, table=5); output;",
        )
        .unwrap();
        assert_eq!(a.len(), 9);
        assert!(matches!(&a[0], Act::Assign { rhs: Rhs::Field(_), .. }));
        assert!(
            matches!(&a[5], Act::Assign { rhs: Rhs::Call { name, .. }, dst, .. } if name == "check_in_port_sec" && dst.bits == Some((15, 15)))
        );
        assert!(matches!(&a[6], Act::Call { name, body: Some(b), .. } if name == "nd_na" && b.len() == 2));
        assert!(matches!(&a[7], Act::Call { name, args: Some(args), .. } if name == "next" && args.len() == 2));
        let a = parse_actions("ct_commit { ct_mark.blocked = 0; }; next;").unwrap();
        assert_eq!(a.len(), 2);
        let a = parse_actions("eth.dst <-> eth.src; drop;").unwrap();
        assert!(matches!(&a[0], Act::Exchange { .. }));
    }

    #[test]
    fn test_templates() {
        let vars = |n: &str| (n == "vip").then(|| "10.0.0.10".to_owned());
        assert_eq!(expand_templates("ip4.dst == ^vip", &vars).unwrap(), "ip4.dst == 10.0.0.10");
        assert!(expand_templates("ip4.dst == ^nope", &vars).is_err());
        assert_eq!(expand_templates("outport = \"a^b\"", &vars).unwrap(), "outport = \"a^b\"");
    }
}
