//! OVN's symbol table (`lib/logical-fields.c`, OVN 23.03) mapped onto the
//! table runtime's [`Key`](petrel_dataplane::table::Key).
//!
//! A symbol is a field (a run of bits of one or more key fields, with an
//! optional prerequisite expression), a predicate (an expression that a bare
//! name stands for), or something Petrel cannot run yet (conntrack state,
//! packet marks), which the compiler refuses by name.

use petrel_dataplane::table::Field;

/// A logical field: bits of key fields, least significant part first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LField {
    /// `(field, first bit, width)`, least significant first.
    pub parts: Vec<(Field, u32, u32)>,
    /// Total width.
    pub width: u32,
    /// Prerequisite expression (`ip4` for `ip4.src`).
    pub prereq: Option<&'static str>,
    /// A string field (`inport`, `outport`): constants are port names.
    pub string: bool,
    /// An IPv4 field stored IPv4-mapped (writes set the whole 128 bits).
    pub ipv4_mapped: bool,
}

impl LField {
    fn one(f: Field, ofs: u32, width: u32, prereq: Option<&'static str>) -> Self {
        LField { parts: vec![(f, ofs, width)], width, prereq, string: false, ipv4_mapped: false }
    }

    /// The bits `[lo..=hi]` of this field, or `None` if out of range.
    pub fn sub(&self, lo: u32, hi: u32) -> Option<LField> {
        if hi >= self.width || lo > hi {
            return None;
        }
        let mut parts = Vec::new();
        let mut base = 0;
        for &(f, ofs, w) in &self.parts {
            let (a, b) = (base, base + w - 1);
            let (l, h) = (lo.max(a), hi.min(b));
            if l <= h {
                parts.push((f, ofs + (l - a), h - l + 1));
            }
            base += w;
        }
        Some(LField { parts, width: hi - lo + 1, prereq: self.prereq, string: self.string, ipv4_mapped: false })
    }
}

/// What a name means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbol {
    /// A field.
    Field(LField),
    /// A predicate: the expression a bare name stands for.
    Predicate(&'static str),
    /// A field Petrel cannot match or set yet, with what is missing.
    Unsupported(&'static str),
}

const CT: &str = "conntrack (ct_* fields need the conntrack issue)";

/// Looks up a symbol.
pub fn lookup(name: &str) -> Option<Symbol> {
    use Field as F;
    let f = |fl, o, w, p| Some(Symbol::Field(LField::one(fl, o, w, p)));
    let v4 = |fl, p| {
        let mut l = LField::one(fl, 0, 32, Some(p));
        l.ipv4_mapped = true;
        Some(Symbol::Field(l))
    };
    let pred = |e| Some(Symbol::Predicate(e));
    match name {
        "inport" | "outport" => {
            let r = if name == "inport" { 14 } else { 15 };
            Some(Symbol::Field(LField {
                parts: vec![(F::Reg(r), 0, 32)],
                width: 32,
                prereq: None,
                string: true,
                ipv4_mapped: false,
            }))
        }
        "flags" => f(F::Reg(10), 0, 32, None),
        "flags.loopback" => f(F::Reg(10), 0, 1, None),
        "flags.force_snat_for_dnat" => f(F::Reg(10), 2, 1, None),
        "flags.force_snat_for_lb" => f(F::Reg(10), 3, 1, None),
        "flags.skip_snat_for_lb" => f(F::Reg(10), 9, 1, None),
        "flags.use_snat_zone" => f(F::Reg(10), 11, 1, None),
        "flags.localnet" => f(F::Reg(10), 15, 1, None),
        "eth.src" => f(F::EthSrc, 0, 48, None),
        "eth.dst" => f(F::EthDst, 0, 48, None),
        "eth.type" => f(F::EthType, 0, 16, None),
        "eth.bcast" => pred("eth.dst == ff:ff:ff:ff:ff:ff"),
        "eth.mcast" => f(F::EthDst, 40, 1, None),
        "eth.mcastv6" => pred("eth.dst[32..47] == 0x3333"),
        "vlan.tci" => f(F::VlanTci, 0, 16, None),
        "vlan.present" => pred("vlan.tci[12]"),
        "vlan.pcp" => f(F::VlanTci, 13, 3, Some("vlan.present")),
        "vlan.vid" => f(F::VlanTci, 0, 12, Some("vlan.present")),
        "ip4" => pred("eth.type == 0x800"),
        "ip6" => pred("eth.type == 0x86dd"),
        "ip" => pred("ip4 || ip6"),
        "ip.proto" => f(F::IpProto, 0, 8, Some("ip")),
        "ip.dscp" => f(F::IpTos, 2, 6, Some("ip")),
        "ip.ecn" => f(F::IpTos, 0, 2, Some("ip")),
        "ip.ttl" => f(F::IpTtl, 0, 8, Some("ip")),
        "ip4.src" => v4(F::IpSrc, "ip4"),
        "ip4.dst" => v4(F::IpDst, "ip4"),
        "ip4.src_mcast" => pred("ip4.src[28..31] == 0xe"),
        "ip4.mcast" => pred("eth.mcast && ip4.dst[28..31] == 0xe"),
        "icmp4" => pred("ip4 && ip.proto == 1"),
        "icmp4.type" => f(F::TpSrc, 0, 8, Some("icmp4")),
        "icmp4.code" => f(F::TpDst, 0, 8, Some("icmp4")),
        "igmp" => pred("ip4 && ip.proto == 2"),
        "ip6.src" => f(F::IpSrc, 0, 128, Some("ip6")),
        "ip6.dst" => f(F::IpDst, 0, 128, Some("ip6")),
        "ip6.label" => f(F::Ipv6Label, 0, 20, Some("ip6")),
        "ip6.mcast_rsvd" => pred("ip6.dst[116..127] == 0xff0 && ip6.dst[0..111] == 0x0"),
        "ip6.mcast_all_nodes" => pred("ip6.dst == ff01::1 || ip6.dst == ff02::1"),
        "ip6.mcast_all_rtrs" => pred("ip6.dst == ff01::2 || ip6.dst == ff02::2 || ip6.dst == ff05::2"),
        "ip6.mcast_sol_node" => pred("ip6.dst == ff02::1:ff00:0000/104"),
        "ip6.mcast_flood" => {
            pred("eth.mcastv6 && (ip6.mcast_rsvd || ip6.mcast_all_nodes || ip6.mcast_all_rtrs || ip6.mcast_sol_node)")
        }
        "ip6.mcast" => pred("eth.mcastv6 && ip6.dst[120..127] == 0xff"),
        "icmp6" => pred("ip6 && ip.proto == 58"),
        "icmp6.type" => f(F::TpSrc, 0, 8, Some("icmp6")),
        "icmp6.code" => f(F::TpDst, 0, 8, Some("icmp6")),
        "icmp" => pred("icmp4 || icmp6"),
        "ip.frag" => f(F::IpFrag, 0, 2, Some("ip")),
        "ip.is_frag" => pred("ip.frag[0]"),
        "ip.later_frag" => pred("ip.frag[1]"),
        "ip.first_frag" => pred("ip.is_frag && !ip.later_frag"),
        "arp" => pred("eth.type == 0x806"),
        "rarp" => pred("eth.type == 0x8035"),
        "arp.op" => f(F::ArpOp, 0, 16, Some("arp")),
        "arp.spa" => v4(F::IpSrc, "arp"),
        "arp.tpa" => v4(F::IpDst, "arp"),
        "arp.sha" => f(F::ArpSha, 0, 48, Some("arp")),
        "arp.tha" => f(F::ArpTha, 0, 48, Some("arp")),
        "rarp.op" => f(F::ArpOp, 0, 16, Some("rarp")),
        "rarp.spa" => v4(F::IpSrc, "rarp"),
        "rarp.tpa" => v4(F::IpDst, "rarp"),
        "rarp.sha" => f(F::ArpSha, 0, 48, Some("rarp")),
        "rarp.tha" => f(F::ArpTha, 0, 48, Some("rarp")),
        "nd" => pred("icmp6.type == {135, 136} && icmp6.code == 0 && ip.ttl == 255"),
        "nd_ns" => pred("icmp6.type == 135 && icmp6.code == 0 && ip.ttl == 255"),
        "nd_na" => pred("icmp6.type == 136 && icmp6.code == 0 && ip.ttl == 255"),
        "nd_rs" => pred("icmp6.type == 133 && icmp6.code == 0 && ip.ttl == 255"),
        "nd_ra" => pred("icmp6.type == 134 && icmp6.code == 0 && ip.ttl == 255"),
        "nd.target" => f(F::NdTarget, 0, 128, Some("nd")),
        "nd.sll" => f(F::ArpSha, 0, 48, Some("nd_ns")),
        "nd.tll" => f(F::ArpTha, 0, 48, Some("nd_na")),
        "mldv1" => pred("ip6.src == fe80::/10 && icmp6.type == {130, 131, 132}"),
        "mldv2" => pred("ip6.dst == ff02::16 && icmp6.type == 143"),
        "tcp" => pred("ip.proto == 6"),
        "tcp.src" => f(F::TpSrc, 0, 16, Some("tcp")),
        "tcp.dst" => f(F::TpDst, 0, 16, Some("tcp")),
        "tcp.flags" => f(F::TcpFlags, 0, 12, Some("tcp")),
        "udp" => pred("ip.proto == 17"),
        "udp.src" => f(F::TpSrc, 0, 16, Some("udp")),
        "udp.dst" => f(F::TpDst, 0, 16, Some("udp")),
        "sctp" => pred("ip.proto == 132"),
        "sctp.src" => f(F::TpSrc, 0, 16, Some("sctp")),
        "sctp.dst" => f(F::TpDst, 0, 16, Some("sctp")),
        "pkt.mark" => Some(Symbol::Unsupported("pkt.mark")),
        "icmp4.frag_mtu" | "icmp6.frag_mtu" => Some(Symbol::Unsupported("ICMP fragmentation-needed generation")),
        n if n == "ct_state" || n.starts_with("ct.") || n.starts_with("ct_mark") || n.starts_with("ct_label") => {
            Some(Symbol::Unsupported(CT))
        }
        n => register(n),
    }
}

/// `reg0`..`reg9`, `xreg0`..`xreg4`, `xxreg0`..`xxreg1` (reg0 is the most
/// significant part of `xreg0` and `xxreg0`, as in OVS).
fn register(n: &str) -> Option<Symbol> {
    let sym = |regs: &[u8]| {
        // `regs` most significant first; parts are least significant first.
        let parts: Vec<(Field, u32, u32)> = regs.iter().rev().map(|r| (Field::Reg(*r), 0, 32)).collect();
        let width = 32 * u32::try_from(parts.len()).unwrap_or(0);
        Some(Symbol::Field(LField { parts, width, prereq: None, string: false, ipv4_mapped: false }))
    };
    if let Some(i) = n.strip_prefix("xxreg").and_then(|i| i.parse::<u8>().ok()) {
        return (i <= 1).then(|| sym(&[4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3])).flatten();
    }
    if let Some(i) = n.strip_prefix("xreg").and_then(|i| i.parse::<u8>().ok()) {
        return (i <= 4).then(|| sym(&[2 * i, 2 * i + 1])).flatten();
    }
    if let Some(i) = n.strip_prefix("reg").and_then(|i| i.parse::<u8>().ok()) {
        return (i <= 9).then(|| sym(&[i])).flatten();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn test_registers_and_subfields() {
        let Some(Symbol::Field(x)) = lookup("xreg0") else { panic!() };
        assert_eq!(x.parts, vec![(Field::Reg(1), 0, 32), (Field::Reg(0), 0, 32)]);
        let s = x.sub(16, 47).unwrap();
        assert_eq!(s.parts, vec![(Field::Reg(1), 16, 16), (Field::Reg(0), 0, 16)]);
        let Some(Symbol::Field(r)) = lookup("reg0") else { panic!() };
        assert_eq!(r.sub(15, 15).unwrap().parts, vec![(Field::Reg(0), 15, 1)]);
        assert!(r.sub(30, 32).is_none());
        assert!(lookup("reg10").is_none());
        assert!(matches!(lookup("ct.est"), Some(Symbol::Unsupported(_))));
        assert!(matches!(lookup("ip"), Some(Symbol::Predicate(_))));
    }
}
