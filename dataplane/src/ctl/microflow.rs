//! Parses the packet description of `petrelctl trace`: the microflow syntax
//! of `ovn-trace` (a conjunction of `field == value` terms and bare
//! protocol names), into a [`FlowKey`].
//!
//! ```text
//! eth.src == 02:00:00:00:00:01 && eth.dst == 02:00:00:00:00:02 &&
//! ip4.src == 10.0.0.1 && ip4.dst == 10.0.0.2 && ip.ttl == 64 && udp.dst == 53
//! ```
//!
//! Supported fields: `eth.src`, `eth.dst`, `eth.type`, `vlan.vid`,
//! `vlan.tci`, `ip4.src`, `ip4.dst`, `ip6.src`, `ip6.dst`, `ip6.label`,
//! `ip.ttl`, `ip.proto`, `ip.dscp`, `ip.ecn`, `tcp.src`, `tcp.dst`,
//! `tcp.flags`, `udp.src`, `udp.dst`, `sctp.src`, `sctp.dst`, `icmp4.type`,
//! `icmp4.code`, `icmp6.type`, `icmp6.code`, `nd.target`, `nd.sll`,
//! `nd.tll`, `arp.op`, `arp.sha`, `arp.tha`, `arp.spa`, `arp.tpa`, and
//! `inport == "name"` (checked against the port the trace starts from).
//! Bare protocols: `eth`, `ip`, `ip4`, `ip6`, `tcp`, `udp`, `sctp`, `icmp`,
//! `icmp4`, `icmp6`, `arp`, `vlan`, `nd`, `nd_ns`, `nd_na`, `nd_rs`,
//! `nd_ra` (ICMPv6 type, code 0, hop limit 255). Numbers are decimal or
//! `0x` hex.
//!
//! Defaults, as in ovn-trace: every field left out is zero (so give
//! `ip.ttl` for routed traffic, as ovn-trace's manual says), except the
//! prerequisites a field implies: `ip4.*`, `icmp4.*` and `arp.*` set
//! `eth.type` (0x0800, 0x0806), `ip6.*` and `icmp6.*` set 0x86dd, `tcp`,
//! `udp`, `sctp`, `icmp4` and `icmp6` set `ip.proto` and, with no IPv6
//! field, IPv4. Contradictions (`tcp && udp`, `ip4.src` with `ip6.dst`,
//! a field given twice) are errors, as is any field not listed above.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::{FlowKey, VLAN_CFI};

const ETH_IP4: u16 = 0x0800;
const ETH_IP6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;

/// A parsed microflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Microflow {
    /// The packet's key (`in_port` is left zero; the executor takes the port).
    pub flow: FlowKey,
    /// `inport == "…"`, if given: the logical port name the caller expects.
    pub inport: Option<String>,
}

/// Why a microflow could not be parsed; the message names the term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum MicroflowError {
    /// empty microflow (give at least `eth.dst == …`)
    Empty,
    /// unknown field or protocol `{0}` (supported: see `petrelctl trace --help`)
    UnknownField(String),
    /// `{0}`: expected `field == value` or a protocol name (only `&&` conjunctions are supported)
    BadTerm(String),
    /// `{0}`: bad value `{1}`: {2}
    BadValue(String, String, String),
    /// `{0}` is given twice
    Duplicate(String),
    /// `{0}` contradicts an earlier term ({1})
    Conflict(String, String),
}

#[derive(Default)]
struct Builder {
    flow: FlowKey,
    inport: Option<String>,
    /// (value, which term required it)
    eth_type: Option<(u16, String)>,
    proto: Option<(u8, String)>,
    seen: Vec<String>,
    /// An L4 term without an IP family yet: IPv4 unless IPv6 shows up.
    wants_ip: bool,
}

/// Parses `s`.
///
/// # Errors
/// The first term that is unknown, malformed or contradictory.
pub fn parse(s: &str) -> Result<Microflow, MicroflowError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(MicroflowError::Empty);
    }
    let mut b = Builder::default();
    for term in s.split("&&") {
        let term = strip_parens(term.trim());
        if term.is_empty() {
            return Err(MicroflowError::BadTerm(s.to_owned()));
        }
        if let Some((f, v)) = term.split_once("==") {
            let (f, v) = (f.trim(), v.trim());
            if f.is_empty() || v.is_empty() || v.contains("==") {
                return Err(MicroflowError::BadTerm(term.to_owned()));
            }
            b.field(f, v)?;
        } else if term.contains(|c: char| c.is_whitespace() || "=!<>|{}".contains(c)) {
            return Err(MicroflowError::BadTerm(term.to_owned()));
        } else {
            b.bare(term)?;
        }
    }
    if b.wants_ip && b.eth_type.is_none() {
        b.set_eth_type(ETH_IP4, "ip (implied)")?;
    }
    if b.flow.vlan_tci[0] != 0 {
        b.flow.vlan_tpid = ETH_VLAN;
    }
    if let Some((t, _)) = b.eth_type {
        b.flow.dl_type = t;
    }
    if let Some((p, _)) = b.proto {
        b.flow.nw_proto = p;
    }
    Ok(Microflow { flow: b.flow, inport: b.inport })
}

fn strip_parens(t: &str) -> &str {
    let mut t = t;
    while let Some(inner) = t.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        t = inner.trim();
    }
    t
}

impl Builder {
    fn set_eth_type(&mut self, t: u16, by: &str) -> Result<(), MicroflowError> {
        match &self.eth_type {
            Some((cur, _)) if *cur == t => Ok(()),
            Some((_, prev)) => Err(MicroflowError::Conflict(by.to_owned(), prev.clone())),
            None => {
                self.eth_type = Some((t, by.to_owned()));
                Ok(())
            }
        }
    }

    fn set_proto(&mut self, p: u8, by: &str) -> Result<(), MicroflowError> {
        match &self.proto {
            Some((cur, _)) if *cur == p => Ok(()),
            Some((_, prev)) => Err(MicroflowError::Conflict(by.to_owned(), prev.clone())),
            None => {
                self.proto = Some((p, by.to_owned()));
                Ok(())
            }
        }
    }

    /// An IP family is required: IPv4 unless an IPv6 term settles it.
    fn ip_any(&mut self, by: &str) -> Result<(), MicroflowError> {
        match &self.eth_type {
            Some((ETH_IP4 | ETH_IP6, _)) => Ok(()),
            Some((_, prev)) => Err(MicroflowError::Conflict(by.to_owned(), prev.clone())),
            None => {
                self.wants_ip = true;
                Ok(())
            }
        }
    }

    fn l4(&mut self, proto: u8, by: &str) -> Result<(), MicroflowError> {
        self.ip_any(by)?;
        self.set_proto(proto, by)
    }

    fn bare(&mut self, p: &str) -> Result<(), MicroflowError> {
        match p {
            "eth" => Ok(()),
            "vlan" => {
                if self.flow.vlan_tci[0] == 0 {
                    self.flow.vlan_tci[0] = VLAN_CFI;
                }
                Ok(())
            }
            "ip" => self.ip_any(p),
            "ip4" => self.set_eth_type(ETH_IP4, p),
            "ip6" => self.set_eth_type(ETH_IP6, p),
            "arp" => self.set_eth_type(ETH_ARP, p),
            "tcp" => self.l4(6, p),
            "udp" => self.l4(17, p),
            "sctp" => self.l4(132, p),
            "icmp4" => {
                self.set_eth_type(ETH_IP4, p)?;
                self.set_proto(1, p)
            }
            "icmp6" => {
                self.set_eth_type(ETH_IP6, p)?;
                self.set_proto(58, p)
            }
            "nd_rs" | "nd_ra" | "nd_ns" | "nd_na" | "nd" => {
                // ICMPv6 type (nd: a solicitation unless nd_na is meant),
                // code 0, hop limit 255, as the OVN predicates require.
                let t = match p {
                    "nd_rs" => 133,
                    "nd_ra" => 134,
                    "nd_na" => 136,
                    _ => 135,
                };
                self.set_eth_type(ETH_IP6, p)?;
                self.set_proto(58, p)?;
                self.flow.tp_src = t;
                self.flow.tp_dst = 0;
                self.flow.nw_ttl = 255;
                Ok(())
            }
            "icmp" => {
                // OVN's `icmp` is icmp4 || icmp6: pick by the family given.
                if matches!(self.eth_type, Some((ETH_IP6, _))) {
                    self.set_proto(58, p)
                } else {
                    self.set_eth_type(ETH_IP4, p)?;
                    self.set_proto(1, p)
                }
            }
            _ => Err(MicroflowError::UnknownField(p.to_owned())),
        }
    }

    fn field(&mut self, f: &str, v: &str) -> Result<(), MicroflowError> {
        if self.seen.iter().any(|s| s == f) {
            return Err(MicroflowError::Duplicate(f.to_owned()));
        }
        self.seen.push(f.to_owned());
        let k = &mut self.flow;
        match f {
            "inport" => {
                let name = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .ok_or_else(|| bad(f, v, "expected a quoted port name"))?;
                self.inport = Some(name.to_owned());
            }
            "outport" => return Err(bad(f, v, "the pipeline sets outport; it cannot be given")),
            "eth.src" => k.dl_src = mac(f, v)?,
            "eth.dst" => k.dl_dst = mac(f, v)?,
            "eth.type" => {
                let t = int(f, v, 0xffff)?;
                self.set_eth_type(narrow(t), f)?;
            }
            "vlan.vid" => {
                let vid = int(f, v, 0xfff)?;
                k.vlan_tci[0] = (k.vlan_tci[0] & 0xf000) | narrow::<u16>(vid) | VLAN_CFI;
            }
            "ip4.src" | "ip4.dst" | "arp.spa" | "arp.tpa" => {
                let a: Ipv4Addr = v.parse().map_err(|e| bad(f, v, e))?;
                let m = a.to_ipv6_mapped().octets();
                if f.ends_with("src") || f.ends_with("spa") {
                    k.nw_src = m;
                } else {
                    k.nw_dst = m;
                }
                self.set_eth_type(if f.starts_with("arp") { ETH_ARP } else { ETH_IP4 }, f)?;
            }
            "ip6.src" | "ip6.dst" => {
                let a: Ipv6Addr = v.parse().map_err(|e| bad(f, v, e))?;
                if f.ends_with("src") {
                    k.nw_src = a.octets();
                } else {
                    k.nw_dst = a.octets();
                }
                self.set_eth_type(ETH_IP6, f)?;
            }
            "ip.ttl" => {
                k.nw_ttl = narrow(int(f, v, 0xff)?);
                self.ip_any(f)?;
            }
            "ip.dscp" => {
                let d: u8 = narrow(int(f, v, 0x3f)?);
                k.nw_tos = (k.nw_tos & 0x03) | (d << 2);
                self.ip_any(f)?;
            }
            "ip.proto" => {
                let p = int(f, v, 0xff)?;
                self.ip_any(f)?;
                self.set_proto(narrow(p), f)?;
            }
            "tcp.src" | "tcp.dst" | "udp.src" | "udp.dst" | "sctp.src" | "sctp.dst" => {
                let port = narrow(int(f, v, 0xffff)?);
                let proto = match &f[..3] {
                    "tcp" => 6,
                    "udp" => 17,
                    _ => 132,
                };
                if f.ends_with("src") {
                    self.flow.tp_src = port;
                } else {
                    self.flow.tp_dst = port;
                }
                self.l4(proto, f)?;
            }
            "icmp4.type" | "icmp4.code" | "icmp6.type" | "icmp6.code" => {
                let x: u16 = narrow(int(f, v, 0xff)?);
                if f.ends_with("type") {
                    k.tp_src = x;
                } else {
                    k.tp_dst = x;
                }
                let (et, p) = if f.starts_with("icmp4") { (ETH_IP4, 1) } else { (ETH_IP6, 58) };
                self.set_eth_type(et, f)?;
                self.set_proto(p, f)?;
            }
            "nd.target" => {
                let a: Ipv6Addr = v.parse().map_err(|e| bad(f, v, e))?;
                k.nd_target = a.octets();
                self.set_eth_type(ETH_IP6, f)?;
                self.set_proto(58, f)?;
            }
            "nd.sll" | "nd.tll" => {
                let m = mac(f, v)?;
                if f == "nd.sll" {
                    k.arp_sha = m;
                } else {
                    k.arp_tha = m;
                }
                self.set_eth_type(ETH_IP6, f)?;
                self.set_proto(58, f)?;
            }
            "tcp.flags" => {
                k.tcp_flags = narrow(int(f, v, 0xfff)?);
                self.l4(6, f)?;
            }
            "ip6.label" => {
                k.ipv6_label = narrow(int(f, v, 0xf_ffff)?);
                self.set_eth_type(ETH_IP6, f)?;
            }
            "ip.ecn" => {
                let e: u8 = narrow(int(f, v, 0x3)?);
                k.nw_tos = (k.nw_tos & 0xfc) | e;
                self.ip_any(f)?;
            }
            "vlan.tci" => k.vlan_tci[0] = narrow(int(f, v, 0xffff)?),
            "arp.op" => {
                k.arp_op = narrow(int(f, v, 0xffff)?);
                self.set_eth_type(ETH_ARP, f)?;
            }
            "arp.sha" | "arp.tha" => {
                let m = mac(f, v)?;
                if f == "arp.sha" {
                    k.arp_sha = m;
                } else {
                    k.arp_tha = m;
                }
                self.set_eth_type(ETH_ARP, f)?;
            }
            _ => return Err(MicroflowError::UnknownField(f.to_owned())),
        }
        Ok(())
    }
}

fn bad(f: &str, v: &str, why: impl std::fmt::Display) -> MicroflowError {
    MicroflowError::BadValue(f.to_owned(), v.to_owned(), why.to_string())
}

/// An integer no larger than `max` (decimal or 0x hex).
fn int(f: &str, v: &str, max: u64) -> Result<u64, MicroflowError> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    }
    .map_err(|e| bad(f, v, e))?;
    if n > max {
        return Err(bad(f, v, format!("larger than {max}")));
    }
    Ok(n)
}

/// Narrows a value already checked against the target's maximum.
fn narrow<T: TryFrom<u64> + Default>(v: u64) -> T {
    T::try_from(v).unwrap_or_default()
}

fn mac(f: &str, v: &str) -> Result<[u8; 6], MicroflowError> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in v.split(':') {
        if n == 6 || part.is_empty() || part.len() > 2 {
            return Err(bad(f, v, "expected xx:xx:xx:xx:xx:xx"));
        }
        out[n] = u8::from_str_radix(part, 16).map_err(|e| bad(f, v, e))?;
        n += 1;
    }
    if n != 6 {
        return Err(bad(f, v, "expected xx:xx:xx:xx:xx:xx"));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn udp_microflow_sets_fields_and_prerequisites() {
        let m = parse(
            "eth.src == 00:00:00:00:00:01 && eth.dst == 02:00:00:00:00:0a && ip4.src == 10.0.0.1 && \
             ip4.dst == 10.0.0.2 && ip.ttl == 64 && udp.src == 5000 && udp.dst == 53",
        )
        .unwrap();
        let k = m.flow;
        assert_eq!(k.dl_src, [0, 0, 0, 0, 0, 1]);
        assert_eq!(k.dl_dst, [2, 0, 0, 0, 0, 0xa]);
        assert_eq!(k.dl_type, 0x0800);
        assert_eq!(k.nw_proto, 17);
        assert_eq!(k.nw_ttl, 64);
        assert_eq!((k.tp_src, k.tp_dst), (5000, 53));
        assert_eq!(k.nw_src, Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets());
        assert_eq!(k.nw_dst, Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets());
        assert_eq!(m.inport, None);
    }

    #[test]
    fn bare_protocols_and_defaults() {
        let k = parse("tcp").unwrap().flow;
        assert_eq!((k.dl_type, k.nw_proto, k.nw_ttl), (0x0800, 6, 0), "fields left out are zero, like ovn-trace");
        let k = parse("ip6 && udp").unwrap().flow;
        assert_eq!((k.dl_type, k.nw_proto), (0x86dd, 17));
        let k = parse("udp && ip6.dst == fe80::1").unwrap().flow;
        assert_eq!(k.dl_type, 0x86dd, "family settled by a later term");
        let k = parse("icmp4 && icmp4.type == 8").unwrap().flow;
        assert_eq!((k.dl_type, k.nw_proto, k.tp_src), (0x0800, 1, 8));
        let k = parse("ip6 && icmp").unwrap().flow;
        assert_eq!(k.nw_proto, 58);
        let k = parse("eth.dst == ff:ff:ff:ff:ff:ff").unwrap().flow;
        assert_eq!((k.dl_type, k.nw_proto), (0, 0), "no prerequisite implied");
        let k = parse("(eth.dst == ff:ff:ff:ff:ff:ff) && vlan.vid == 10 && ip4").unwrap().flow;
        assert_eq!((k.vlan_tci[0], k.vlan_tpid, k.dl_type), (10 | VLAN_CFI, 0x8100, 0x0800));
        let k = parse("vlan").unwrap().flow;
        assert_eq!((k.vlan_tci[0], k.vlan_tpid), (VLAN_CFI, 0x8100), "priority-tagged, VID 0");
    }

    #[test]
    fn arp_fields() {
        let m = parse(
            r#"inport == "vm1" && eth.dst == ff:ff:ff:ff:ff:ff && arp.op == 1 && arp.sha == 02:00:00:00:00:01 &&
               arp.spa == 10.0.0.1 && arp.tpa == 10.0.0.254 && arp.tha == 00:00:00:00:00:00"#,
        )
        .unwrap();
        let k = m.flow;
        assert_eq!(m.inport.as_deref(), Some("vm1"));
        assert_eq!((k.dl_type, k.arp_op), (0x0806, 1));
        assert_eq!(k.arp_sha, [2, 0, 0, 0, 0, 1]);
        assert_eq!(k.nw_dst, Ipv4Addr::new(10, 0, 0, 254).to_ipv6_mapped().octets());
    }

    #[test]
    fn explicit_eth_type_and_proto_hex() {
        let k = parse("eth.type == 0x0800 && ip.proto == 0x11 && ip.dscp == 46").unwrap().flow;
        assert_eq!((k.dl_type, k.nw_proto, k.nw_tos), (0x0800, 17, 46 << 2));
    }

    #[test]
    fn errors_name_the_offending_term() {
        assert_eq!(parse("  "), Err(MicroflowError::Empty));
        assert_eq!(parse("eth.foo == 1"), Err(MicroflowError::UnknownField("eth.foo".into())));
        assert_eq!(parse("ipx"), Err(MicroflowError::UnknownField("ipx".into())));
        let e = parse("tcp && udp").unwrap_err();
        assert_eq!(e, MicroflowError::Conflict("udp".into(), "tcp".into()));
        assert!(
            matches!(parse("ip4.src == 10.0.0.1 && ip6.dst == ::1"), Err(MicroflowError::Conflict(f, _)) if f == "ip6.dst")
        );
        assert!(matches!(parse("arp && tcp"), Err(MicroflowError::Conflict(f, _)) if f == "tcp"));
        assert_eq!(parse("ip.ttl == 1 && ip.ttl == 2"), Err(MicroflowError::Duplicate("ip.ttl".into())));
        assert!(
            matches!(parse("ip.ttl == 300"), Err(MicroflowError::BadValue(f, v, _)) if f == "ip.ttl" && v == "300")
        );
        assert!(matches!(parse("eth.src == 00:01"), Err(MicroflowError::BadValue(f, _, _)) if f == "eth.src"));
        let ns = parse("ip6.src == fd00::2 && nd_ns && nd.target == fd00::1 && nd.sll == 00:00:00:00:00:02").unwrap();
        assert_eq!((ns.flow.tp_src, ns.flow.nw_ttl, ns.flow.nw_proto), (135, 255, 58));
        assert_eq!(ns.flow.arp_sha, [0, 0, 0, 0, 0, 2]);
        let t = parse("ip4.src == 10.0.0.1 && tcp.flags == 0x14 && tcp.dst == 80").unwrap();
        assert_eq!(t.flow.tcp_flags, 0x14);
        assert!(matches!(parse("eth.src == 00:01:02:03:04:05:06"), Err(MicroflowError::BadValue(..))));
        assert!(matches!(parse("ip4.src == 10.0.0"), Err(MicroflowError::BadValue(..))));
        assert!(matches!(parse("inport == vm1"), Err(MicroflowError::BadValue(..))));
        assert!(matches!(parse("outport == \"x\""), Err(MicroflowError::BadValue(..))));
        assert!(matches!(parse("tcp || udp"), Err(MicroflowError::BadTerm(_))));
        assert!(matches!(parse("ip.ttl != 3"), Err(MicroflowError::BadTerm(_))));
        assert!(matches!(parse("tcp && "), Err(MicroflowError::BadTerm(_))));
        let msg = parse("eth.foo == 1").unwrap_err().to_string();
        assert!(msg.contains("eth.foo"), "{msg}");
    }
}
