//! Applies a pipeline's verdict to packet bytes: rewrites the headers of a
//! copy so they say what the final key of its [`Emit`](super::exec::Emit)
//! says (as OVS commits `set_field`s at output time).
//!
//! Only the fields OVN's logical switch pipeline writes are supported:
//! Ethernet addresses, the outer VLAN tag (push, pop, rewrite), IPv4/IPv6
//! addresses, TTL / hop limit and TOS / traffic class, TCP/UDP ports, and the
//! ARP fields of the ARP responder. Checksums are updated incrementally
//! (RFC 1624), and a zero UDP checksum over IPv4 stays zero. Any other field
//! that differs is refused with `unsupported`, never approximated.
//!
//! Rewrites happen at the offsets `flow::extract` found, before the VLAN
//! change (which moves them); nothing here allocates.

use crate::action::vlan::{vlan_pop, vlan_push};
use crate::buf::PacketBuf;
use crate::drop::DropReason;
use crate::flow::{FlowKey, Layout, VLAN_CFI};
use crate::wire::checksum;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Rewrites `buf` (which `extract` turned into `orig` and `layout`) so that
/// its headers carry `new`'s values.
///
/// # Errors
/// [`DropReason::Unsupported`] when a field differs that cannot be written
/// (the packet may then be partly rewritten: drop it); `no_headroom` for a
/// VLAN push without room.
pub fn commit<B: PacketBuf + ?Sized>(
    buf: &mut B,
    layout: &Layout,
    orig: &FlowKey,
    new: &FlowKey,
) -> Result<(), DropReason> {
    if orig == new {
        return Ok(());
    }
    refuse_unwritable(orig, new)?;
    let d = buf.data_mut();
    // Ethernet addresses.
    d[0..6].copy_from_slice(&new.dl_dst);
    d[6..12].copy_from_slice(&new.dl_src);
    let l3 = usize::from(layout.l3);
    match orig.dl_type {
        ETH_P_IPV4 if layout.l3 != Layout::ABSENT => commit_ipv4(d, l3, layout, orig, new)?,
        ETH_P_IPV6 if layout.l3 != Layout::ABSENT => commit_ipv6(d, l3, layout, orig, new)?,
        ETH_P_ARP if layout.l3 != Layout::ABSENT => commit_arp(d, l3, orig, new)?,
        _ => {
            if l3_l4_differs(orig, new) {
                return Err(DropReason::Unsupported);
            }
        }
    }
    commit_vlan(buf, orig, new)
}

fn l3_l4_differs(a: &FlowKey, b: &FlowKey) -> bool {
    a.nw_src != b.nw_src
        || a.nw_dst != b.nw_dst
        || a.nw_ttl != b.nw_ttl
        || a.nw_tos != b.nw_tos
        || a.tp_src != b.tp_src
        || a.tp_dst != b.tp_dst
        || a.arp_op != b.arp_op
        || a.arp_sha != b.arp_sha
        || a.arp_tha != b.arp_tha
}

/// Fields no action may change (or whose rewrite is not implemented).
fn refuse_unwritable(o: &FlowKey, n: &FlowKey) -> Result<(), DropReason> {
    let same = o.dl_type == n.dl_type
        && o.nw_proto == n.nw_proto
        && o.nw_frag == n.nw_frag
        && o.tcp_flags == n.tcp_flags
        && o.ipv6_label == n.ipv6_label
        && o.nd_target == n.nd_target
        && o.vlan_tci[1] == n.vlan_tci[1]
        && tpid_consistent(n)
        && o.in_port == n.in_port
        && o.tun_src == n.tun_src
        && o.tun_dst == n.tun_dst
        && o.tun_vni == n.tun_vni
        && o.tun_ingress_key == n.tun_ingress_key
        && o.tun_egress_key == n.tun_egress_key;
    // ND's sll/tll share arp_sha/arp_tha; ICMP type/code share the ports.
    let icmp_or_nd = matches!(o.nw_proto, 1 | 58);
    let l4_ok = !icmp_or_nd || (o.tp_src == n.tp_src && o.tp_dst == n.tp_dst);
    let nd_ok = o.dl_type == ETH_P_ARP || (o.arp_sha == n.arp_sha && o.arp_tha == n.arp_tha && o.arp_op == n.arp_op);
    if same && l4_ok && nd_ok {
        Ok(())
    } else {
        Err(DropReason::Unsupported)
    }
}

/// A tagged key's outer TPID must be 802.1Q (the only one we push), an
/// untagged key's zero; a retag keeps whatever TPID the frame had.
fn tpid_consistent(n: &FlowKey) -> bool {
    if n.vlan_tci[0] & VLAN_CFI == 0 {
        n.vlan_tpid == 0
    } else {
        n.vlan_tpid != 0
    }
}

/// RFC 1624 eq. 3: `HC' = ~(~HC + ~m + m')` over the 16-bit words of a change.
fn csum_update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert!(old.len() == new.len() && old.len() % 2 == 0);
    let mut sum = u64::from(!hc);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u64::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u64::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !checksum::combine(&[fold(sum)])
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap_or(0xffff)
}

fn get16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn put16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Updates the TCP or UDP checksum at `l4` for a change of `old` → `new`
/// bytes that the checksum covers (addresses via the pseudo-header, ports).
fn l4_csum_update(d: &mut [u8], layout: &Layout, proto: u8, v4: bool, old: &[u8], new: &[u8]) {
    if layout.l4 == Layout::ABSENT {
        return; // a later fragment: its L4 header is elsewhere
    }
    let l4 = usize::from(layout.l4);
    let at = match proto {
        IPPROTO_TCP => l4 + 16,
        IPPROTO_UDP => l4 + 6,
        _ => return,
    };
    if at + 2 > d.len() {
        return;
    }
    let cur = get16(d, at);
    if proto == IPPROTO_UDP && v4 && cur == 0 {
        return; // no checksum over IPv4 stays none
    }
    let mut c = csum_update(cur, old, new);
    if proto == IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    put16(d, at, c);
}

fn commit_ipv4(d: &mut [u8], l3: usize, layout: &Layout, o: &FlowKey, n: &FlowKey) -> Result<(), DropReason> {
    if d.len() < l3 + 20 {
        return Err(DropReason::Ipv4Truncated);
    }
    let proto = o.nw_proto;
    if new_is_not_v4_mapped(&n.nw_src) || new_is_not_v4_mapped(&n.nw_dst) {
        return Err(DropReason::Unsupported);
    }
    for (field_off, old, new) in
        [(12usize, &o.nw_src[12..16], &n.nw_src[12..16]), (16, &o.nw_dst[12..16], &n.nw_dst[12..16])]
    {
        if old != new {
            let hc = get16(d, l3 + 10);
            put16(d, l3 + 10, csum_update(hc, old, new));
            d[l3 + field_off..l3 + field_off + 4].copy_from_slice(new);
            l4_csum_update(d, layout, proto, true, old, new);
        }
    }
    if o.nw_ttl != n.nw_ttl {
        let old = [d[l3 + 8], d[l3 + 9]];
        let new = [n.nw_ttl, d[l3 + 9]];
        let hc = get16(d, l3 + 10);
        put16(d, l3 + 10, csum_update(hc, &old, &new));
        d[l3 + 8] = n.nw_ttl;
    }
    if o.nw_tos != n.nw_tos {
        let old = [d[l3], d[l3 + 1]];
        let new = [d[l3], n.nw_tos];
        let hc = get16(d, l3 + 10);
        put16(d, l3 + 10, csum_update(hc, &old, &new));
        d[l3 + 1] = n.nw_tos;
    }
    commit_ports(d, layout, o, n, true)
}

fn new_is_not_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] != [0; 10] || a[10..12] != [0xff, 0xff]
}

fn commit_ipv6(d: &mut [u8], l3: usize, layout: &Layout, o: &FlowKey, n: &FlowKey) -> Result<(), DropReason> {
    if d.len() < l3 + 40 {
        return Err(DropReason::Ipv6Truncated);
    }
    let proto = o.nw_proto;
    if o.nw_src != n.nw_src {
        d[l3 + 8..l3 + 24].copy_from_slice(&n.nw_src);
        l4_csum_update(d, layout, proto, false, &o.nw_src, &n.nw_src);
    }
    if o.nw_dst != n.nw_dst {
        d[l3 + 24..l3 + 40].copy_from_slice(&n.nw_dst);
        l4_csum_update(d, layout, proto, false, &o.nw_dst, &n.nw_dst);
    }
    if o.nw_ttl != n.nw_ttl {
        d[l3 + 7] = n.nw_ttl;
    }
    if o.nw_tos != n.nw_tos {
        // Traffic class: low nibble of byte 0 and high nibble of byte 1.
        d[l3] = (d[l3] & 0xf0) | (n.nw_tos >> 4);
        d[l3 + 1] = (d[l3 + 1] & 0x0f) | (n.nw_tos << 4);
    }
    commit_ports(d, layout, o, n, false)
}

fn commit_ports(d: &mut [u8], layout: &Layout, o: &FlowKey, n: &FlowKey, v4: bool) -> Result<(), DropReason> {
    if o.tp_src == n.tp_src && o.tp_dst == n.tp_dst {
        return Ok(());
    }
    if !matches!(o.nw_proto, IPPROTO_TCP | IPPROTO_UDP) || layout.l4 == Layout::ABSENT {
        return Err(DropReason::Unsupported);
    }
    let l4 = usize::from(layout.l4);
    for (at, old, new) in [(l4, o.tp_src, n.tp_src), (l4 + 2, o.tp_dst, n.tp_dst)] {
        if old != new {
            put16(d, at, new);
            l4_csum_update(d, layout, o.nw_proto, v4, &old.to_be_bytes(), &new.to_be_bytes());
        }
    }
    Ok(())
}

fn commit_arp(d: &mut [u8], l3: usize, o: &FlowKey, n: &FlowKey) -> Result<(), DropReason> {
    // Ethernet/IPv4 ARP (extract refuses anything else): op 6..8, sha 8..14,
    // spa 14..18, tha 18..24, tpa 24..28.
    if d.len() < l3 + 28 || o.tp_src != n.tp_src || o.tp_dst != n.tp_dst || o.nw_ttl != n.nw_ttl || o.nw_tos != n.nw_tos
    {
        return Err(DropReason::Unsupported);
    }
    if new_is_not_v4_mapped(&n.nw_src) || new_is_not_v4_mapped(&n.nw_dst) {
        return Err(DropReason::Unsupported);
    }
    put16(d, l3 + 6, n.arp_op);
    d[l3 + 8..l3 + 14].copy_from_slice(&n.arp_sha);
    d[l3 + 14..l3 + 18].copy_from_slice(&n.nw_src[12..16]);
    d[l3 + 18..l3 + 24].copy_from_slice(&n.arp_tha);
    d[l3 + 24..l3 + 28].copy_from_slice(&n.nw_dst[12..16]);
    Ok(())
}

fn commit_vlan<B: PacketBuf + ?Sized>(buf: &mut B, o: &FlowKey, n: &FlowKey) -> Result<(), DropReason> {
    let (was, now) = (o.vlan_tci[0], n.vlan_tci[0]);
    if was == now {
        return Ok(());
    }
    match (was & VLAN_CFI != 0, now & VLAN_CFI != 0) {
        (false, true) => vlan_push(buf, ETH_P_8021Q, now & !VLAN_CFI),
        (true, false) => vlan_pop(buf).map(|_| ()),
        (true, true) => {
            let d = buf.data_mut();
            if d.len() < 16 {
                return Err(DropReason::VlanTruncated);
            }
            put16(d, 14, now & !VLAN_CFI);
            Ok(())
        }
        (false, false) => Err(DropReason::Unsupported),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::buf::VecBuf;
    use crate::flow::extract;
    use crate::table::Field;
    use crate::table::Key;

    /// Ethernet/IPv4/UDP with a real UDP checksum.
    fn udp4(csum: bool) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let payload = b"hello world!";
        let udp_len = 8 + payload.len();
        let tot = 20 + udp_len;
        let mut ip = vec![0x45, 0, 0, tot as u8, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let c = !checksum::data(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut udp = vec![0x13, 0x88, 0x00, 0x35, 0, udp_len as u8, 0, 0];
        udp.extend_from_slice(payload);
        if csum {
            let ph =
                checksum::pseudo_header(&"10.0.0.1".parse().unwrap(), &"10.0.0.2".parse().unwrap(), 17, udp_len as u32);
            let c = !checksum::combine(&[ph, checksum::data(&udp)]);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f
    }

    fn verify_v4(f: &[u8]) {
        assert_eq!(checksum::data(&f[14..34]), 0xffff, "IPv4 header checksum");
        let src = std::net::Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = std::net::Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let udp = &f[34..];
        if udp[6..8] != [0, 0] {
            let ph = checksum::pseudo_header(&src.into(), &dst.into(), 17, udp.len() as u32);
            assert_eq!(checksum::combine(&[ph, checksum::data(udp)]), 0xffff, "UDP checksum");
        }
    }

    fn run(frame: &[u8], edit: impl Fn(&mut Key)) -> Result<Vec<u8>, DropReason> {
        let mut orig = FlowKey::default();
        let layout = extract(frame, 0, &mut orig).unwrap();
        let mut k = Key { flow: orig, ..Key::default() };
        edit(&mut k);
        let mut b = VecBuf::from_packet(frame);
        commit(&mut b, &layout, &orig, &k.flow)?;
        // What the packet now says is what the key said.
        let mut again = FlowKey::default();
        extract(b.data(), 0, &mut again).unwrap();
        assert_eq!(again, k.flow, "re-extracted packet equals the committed key");
        Ok(b.data().to_vec())
    }

    #[test]
    fn nat_like_rewrites_keep_checksums_valid() {
        for csum in [true, false] {
            let f = run(&udp4(csum), |k| {
                Field::EthDst.set(k, 0x0200_0000_00aa, u128::MAX);
                Field::IpSrc.set(k, std::net::Ipv4Addr::new(192, 168, 7, 9).to_ipv6_mapped().to_bits(), u128::MAX);
                Field::IpTtl.set(k, 63, u128::MAX);
                Field::IpTos.set(k, 0xb8, u128::MAX);
                Field::TpDst.set(k, 5353, u128::MAX);
            })
            .unwrap();
            verify_v4(&f);
            assert_eq!(f[34 + 6..34 + 8] == [0, 0], !csum, "a zero UDP checksum stays zero");
        }
    }

    #[test]
    fn arp_responder_rewrite() {
        // ARP request 10.0.0.1 (02:..:01) asks for 10.0.0.2.
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        let mac: u128 = 0x0200_0000_0002;
        let out = run(&f, |k| {
            // OVN's ARP responder actions.
            let src = Field::EthSrc.get(k);
            Field::EthDst.set(k, src, u128::MAX);
            Field::EthSrc.set(k, mac, u128::MAX);
            Field::ArpOp.set(k, 2, u128::MAX);
            let sha = Field::ArpSha.get(k);
            Field::ArpTha.set(k, sha, u128::MAX);
            Field::ArpSha.set(k, mac, u128::MAX);
            let spa = Field::IpSrc.get(k);
            let tpa = Field::IpDst.get(k);
            Field::IpDst.set(k, spa, u128::MAX);
            Field::IpSrc.set(k, tpa, u128::MAX);
        })
        .unwrap();
        assert_eq!(&out[0..12], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        assert_eq!(&out[20..22], &[0, 2], "reply");
        assert_eq!(&out[22..28], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&out[28..32], &[10, 0, 0, 2]);
        assert_eq!(&out[32..38], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&out[38..42], &[10, 0, 0, 1]);
    }

    #[test]
    fn vlan_push_rewrite_pop() {
        let f = udp4(true);
        let push = |k: &mut Key| {
            k.flow.vlan_tci[0] = 100 | VLAN_CFI;
            k.flow.vlan_tpid = 0x8100;
        };
        let tagged = run(&f, push).unwrap();
        assert_eq!(&tagged[12..16], &[0x81, 0, 0, 100]);
        let retagged = run(&tagged, |k| k.flow.vlan_tci[0] = 200 | VLAN_CFI).unwrap();
        assert_eq!(&retagged[12..16], &[0x81, 0, 0, 200]);
        let untagged = run(&retagged, |k| {
            k.flow.vlan_tci[0] = 0;
            k.flow.vlan_tpid = 0;
        })
        .unwrap();
        assert_eq!(untagged, f);
        // A tag without a TPID is not a frame we can write.
        assert_eq!(run(&f, |k| k.flow.vlan_tci[0] = 5 | VLAN_CFI), Err(DropReason::Unsupported));
    }

    #[test]
    fn unwritable_fields_are_refused() {
        let f = udp4(true);
        assert_eq!(run(&f, |k| k.flow.nw_proto = 6), Err(DropReason::Unsupported));
        assert_eq!(run(&f, |k| k.flow.dl_type = 0x86dd), Err(DropReason::Unsupported));
        assert_eq!(run(&f, |k| k.flow.nd_target[0] = 1), Err(DropReason::Unsupported));
        // An IPv6 address written into an IPv4 packet.
        assert_eq!(run(&f, |k| k.flow.nw_dst[0] = 0x20), Err(DropReason::Unsupported));
        // Unchanged is a no-op.
        assert_eq!(run(&f, |_| {}).unwrap(), f);
    }
}
