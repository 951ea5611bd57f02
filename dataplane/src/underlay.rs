//! The underlay: this node's tunnel endpoint on its uplinks, as OVS's
//! userspace tunnelling does it with `br-phy` (an IP on the bridge, its
//! route and ARP tables), without a kernel interface.
//!
//! An **uplink** is a DPDK port with the node's tunnel IP (`--uplink
//! PORT=IP/PREFIX[,gw=IP][,mtu=N]`). For Geneve to a remote chassis the
//! fast path picks the uplink whose subnet holds the remote IP (next hop:
//! the remote itself), else the first uplink with a gateway (next hop: the
//! gateway), and takes the next hop's MAC from the **neighbour table**:
//! static entries (`--neighbor IP=MAC`) plus what ARP taught. ARP is done
//! by Petrel itself:
//!
//! - a PMD that has no MAC for a next hop drops the packet
//!   (`tunnel_neigh_unresolved`) and sends an ARP request from the uplink,
//!   at most one per next hop every [`ARP_RETRY_MS`] ms;
//! - ARP replies to our IP, and requests for it (whose sender is learnt, as
//!   Linux does), are reported by the PMD through a [`NeighRing`]; the main
//!   thread folds them into the table, which PMDs pick up RCU-style
//!   (`arc_swap`), like the OVN tables. Static entries are never replaced;
//!   learnt ones are refreshed by every reply and expire after
//!   [`NEIGH_MAX_AGE`] without one (then they are asked for again);
//! - ARP requests for our IP are answered, and ICMP echo requests to it
//!   get their reply, in place (the received mbuf becomes the answer), so
//!   the underlay can see the node (`ping`, `arping`).
//!
//! Frames that would not fit the uplink's MTU once encapsulated are dropped
//! (`tunnel_mtu_exceeded`). IPv4 underlay only for now: an IPv6 remote
//! chassis is dropped as `tunnel_no_route`.
//!
//! Everything here works on byte slices and plain values, so it is tested
//! without DPDK; `pmd::fwd` calls it.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::flow::{FlowKey, Layout};
use crate::pmd::learn::LearnRing;
use crate::wire::{arp, checksum, icmpv4, ipv4_mapped};

/// Minimum time between two ARP requests for one next hop from one PMD.
pub const ARP_RETRY_MS: u64 = 200;
/// A learnt neighbour not confirmed for this long is dropped from the table.
pub const NEIGH_MAX_AGE: Duration = Duration::from_secs(300);
/// Default uplink MTU (the largest IP packet it carries).
pub const DEFAULT_MTU: u16 = 1500;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;

/// `--uplink PORT=IP/PREFIX[,gw=IP][,mtu=N]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    /// The DPDK port.
    pub port: String,
    /// This node's tunnel IP on it.
    pub ip: Ipv4Addr,
    /// Prefix length of its subnet.
    pub prefix: u8,
    /// Default gateway through it, if any.
    pub gw: Option<Ipv4Addr>,
    /// Largest IP packet the underlay carries.
    pub mtu: u16,
}

/// Parses `PORT=IP/PREFIX[,gw=IP][,mtu=N]`.
///
/// # Errors
/// What is wrong with it.
pub fn parse_uplink(spec: &str) -> Result<UplinkSpec, String> {
    let bad = |why: &str| format!("--uplink {spec:?}: {why} (expected PORT=IP/PREFIX[,gw=IP][,mtu=N])");
    let (port, rest) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
    let mut parts = rest.split(',');
    let cidr = parts.next().unwrap_or_default();
    let (ip, prefix) = cidr.split_once('/').ok_or_else(|| bad("the IP needs a /PREFIX"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad("not an IPv4 address"))?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=32).contains(p)).ok_or_else(|| bad("prefix is 1..32"))?;
    let mut u = UplinkSpec { port: port.to_owned(), ip, prefix, gw: None, mtu: DEFAULT_MTU };
    for kv in parts {
        match kv.split_once('=') {
            Some(("gw", v)) => u.gw = Some(v.parse().map_err(|_| bad("gw is not an IPv4 address"))?),
            Some(("mtu", v)) => {
                u.mtu = v.parse().ok().filter(|m| (576..=9216).contains(m)).ok_or_else(|| bad("mtu is 576..9216"))?;
            }
            _ => return Err(bad(&format!("unknown option {kv:?}"))),
        }
    }
    if port.is_empty() {
        return Err(bad("no port"));
    }
    if let Some(gw) = u.gw {
        if mask(prefix) & (u32::from(gw) ^ u32::from(ip)) != 0 {
            return Err(bad("the gateway is not in the uplink's subnet"));
        }
    }
    Ok(u)
}

/// Parses `IP=MAC`.
///
/// # Errors
/// What is wrong with it.
pub fn parse_neighbor(spec: &str) -> Result<(Ipv4Addr, [u8; 6]), String> {
    let bad = || format!("--neighbor {spec:?}: expected IPV4=MAC");
    let (ip, mac) = spec.split_once('=').ok_or_else(bad)?;
    let ip = ip.parse().map_err(|_| bad())?;
    let mut m = [0u8; 6];
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok((ip, m))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// An uplink as the fast path uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// Port slot.
    pub port: usize,
    /// Tunnel IP (host order).
    pub ip: u32,
    /// Subnet mask (host order).
    pub mask: u32,
    /// Gateway (host order).
    pub gw: Option<u32>,
    /// Largest IP packet.
    pub mtu: u16,
    /// The port's MAC address.
    pub mac: [u8; 6],
}

impl Uplink {
    /// From a spec, on port slot `port` with MAC `mac`.
    pub fn new(s: &UplinkSpec, port: usize, mac: [u8; 6]) -> Self {
        Uplink { port, ip: u32::from(s.ip), mask: mask(s.prefix), gw: s.gw.map(u32::from), mtu: s.mtu, mac }
    }

    /// The tunnel IP as a flow key holds it.
    pub fn ip16(&self) -> [u8; 16] {
        ipv4_mapped(self.ip.to_be_bytes())
    }
}

/// The uplink (index into `uplinks`) and next hop for a remote tunnel IP.
pub fn route(uplinks: &[Uplink], dst: u32) -> Option<(usize, u32)> {
    if let Some(i) = uplinks.iter().position(|u| (u.ip ^ dst) & u.mask == 0) {
        return Some((i, dst));
    }
    uplinks.iter().enumerate().find_map(|(i, u)| u.gw.map(|g| (i, g)))
}

/// The neighbour table PMDs read: IPv4 (host order) → MAC, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighMap {
    entries: Vec<(u32, [u8; 6])>,
}

impl NeighMap {
    /// A table of these entries.
    pub fn new(mut entries: Vec<(u32, [u8; 6])>) -> Self {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.0);
        NeighMap { entries }
    }

    /// The MAC of `ip`.
    #[inline]
    pub fn get(&self, ip: u32) -> Option<[u8; 6]> {
        self.entries.binary_search_by_key(&ip, |e| e.0).ok().map(|i| self.entries[i].1)
    }

    /// All entries.
    pub fn entries(&self) -> &[(u32, [u8; 6])] {
        &self.entries
    }
}

/// Where the neighbour table is published.
pub type Neighbors = Arc<arc_swap::ArcSwap<NeighMap>>;

/// What PMDs report to the main thread: `(IPv4, MAC)` pairs seen in ARP
/// for our tunnel IP. The learning ring's `port` field holds the IPv4
/// address (host order), `datapath` is unused.
#[derive(Debug, Default)]
pub struct NeighRing(LearnRing);

impl NeighRing {
    /// Records a neighbour (the owning PMD only; no allocation, no lock).
    #[inline]
    pub fn push(&self, ip: u32, mac: [u8; 6]) {
        self.0.push(0, ip, mac);
    }

    /// Entries since `cursor`; returns the next cursor.
    pub fn read_since(&self, cursor: u64, out: &mut Vec<(u32, [u8; 6])>) -> u64 {
        let mut raw = Vec::new();
        let c = self.0.read_since(cursor, &mut raw);
        out.extend(raw.into_iter().map(|l| (l.port, l.mac)));
        c
    }
}

/// The main thread's side of the neighbour table: static entries, learnt
/// ones with their age, publishing to PMDs when something changed.
#[derive(Debug)]
pub struct NeighTable {
    statics: Vec<(u32, [u8; 6])>,
    learnt: std::collections::BTreeMap<u32, ([u8; 6], std::time::Instant)>,
    published: Neighbors,
}

impl NeighTable {
    /// A table with these static entries, published now.
    pub fn new(statics: &[(Ipv4Addr, [u8; 6])]) -> Self {
        let statics: Vec<(u32, [u8; 6])> = statics.iter().map(|(i, m)| (u32::from(*i), *m)).collect();
        let published = Arc::new(arc_swap::ArcSwap::from_pointee(NeighMap::new(statics.clone())));
        NeighTable { statics, learnt: std::collections::BTreeMap::new(), published }
    }

    /// What PMDs read.
    pub fn published(&self) -> Neighbors {
        Arc::clone(&self.published)
    }

    /// Folds in what PMDs learnt and expires old entries; publishes if the
    /// table changed.
    pub fn update(&mut self, seen: &[(u32, [u8; 6])], now: std::time::Instant) {
        let mut changed = false;
        for &(ip, mac) in seen {
            if self.statics.iter().any(|s| s.0 == ip) || ip == 0 || mac == [0; 6] || mac[0] & 1 != 0 {
                continue;
            }
            match self.learnt.insert(ip, (mac, now)) {
                Some((old, _)) if old == mac => {}
                _ => changed = true,
            }
        }
        let before = self.learnt.len();
        self.learnt.retain(|_, (_, t)| now.duration_since(*t) < NEIGH_MAX_AGE);
        changed |= self.learnt.len() != before;
        if changed {
            let mut all = self.statics.clone();
            all.extend(
                self.learnt
                    .iter()
                    .filter(|(ip, _)| !self.statics.iter().any(|s| s.0 == **ip))
                    .map(|(ip, (m, _))| (*ip, *m)),
            );
            self.published.store(Arc::new(NeighMap::new(all)));
        }
    }

    /// `(IP, MAC, static?)` for display.
    pub fn list(&self) -> Vec<(Ipv4Addr, [u8; 6], bool)> {
        let mut v: Vec<_> = self.statics.iter().map(|(i, m)| (Ipv4Addr::from(*i), *m, true)).collect();
        v.extend(self.learnt.iter().map(|(i, (m, _))| (Ipv4Addr::from(*i), *m, false)));
        v
    }
}

/// What an uplink frame addressed to the node was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Not for the node's tunnel IP: forward as usual.
    No,
    /// An ARP request for our IP: the frame now is the reply (send it back
    /// on the uplink); its sender is worth learning.
    ArpAnswered {
        /// Sender IP (host order).
        ip: u32,
        /// Sender MAC.
        mac: [u8; 6],
    },
    /// An ARP reply (or other ARP) to our IP: learn and consume.
    ArpLearn {
        /// Sender IP (host order).
        ip: u32,
        /// Sender MAC.
        mac: [u8; 6],
    },
    /// An ICMP echo request to our IP: the frame now is the reply.
    EchoAnswered,
    /// Geneve to our IP: decapsulate.
    Geneve,
    /// Other traffic to our IP (or malformed ARP/ICMP for it): consumed.
    Consumed,
}

/// Classifies a frame received on uplink `up` (its key and layout as
/// extracted, VLAN tag already removed) and answers ARP and ping in place.
pub fn classify(frame: &mut [u8], key: &FlowKey, layout: &Layout, up: &Uplink) -> Local {
    let our = up.ip16();
    if key.dl_type == ETH_P_ARP {
        if key.nw_dst != our || layout.l3 as usize + arp::PACKET_LEN > frame.len() {
            return Local::No;
        }
        let ip = u32::from_be_bytes([key.nw_src[12], key.nw_src[13], key.nw_src[14], key.nw_src[15]]);
        let mac = key.arp_sha;
        if key.arp_op == arp::OP_REQUEST {
            let l3 = layout.l3 as usize;
            let (eth, rest) = frame.split_at_mut(l3);
            eth[0..6].copy_from_slice(&mac);
            eth[6..12].copy_from_slice(&up.mac);
            let mut p = arp::Packet::new_unchecked(&mut rest[..arp::PACKET_LEN]);
            p.set_operation(arp::OP_REPLY);
            p.set_target_hardware_addr(mac);
            p.set_target_protocol_addr(ip.to_be_bytes());
            p.set_sender_hardware_addr(up.mac);
            p.set_sender_protocol_addr(up.ip.to_be_bytes());
            return Local::ArpAnswered { ip, mac };
        }
        return Local::ArpLearn { ip, mac };
    }
    if key.dl_type != ETH_P_IPV4 || key.nw_dst != our {
        return Local::No;
    }
    if layout.is_geneve() {
        return Local::Geneve;
    }
    if key.nw_proto == IPPROTO_ICMP && key.tp_src == u16::from(icmpv4::ECHO_REQUEST) && key.nw_frag == 0 {
        let (l3, l4) = (layout.l3 as usize, layout.l4 as usize);
        if l4 + icmpv4::HEADER_LEN > frame.len() {
            return Local::Consumed;
        }
        let ip_total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        let end = (l3 + ip_total).min(frame.len());
        if end < l4 + icmpv4::HEADER_LEN {
            return Local::Consumed;
        }
        let (src_mac, dst_ip) = (key.dl_src, key.nw_src);
        frame[0..6].copy_from_slice(&src_mac);
        frame[6..12].copy_from_slice(&up.mac);
        frame[l3 + 8] = 64; // TTL
        frame[l3 + 12..l3 + 16].copy_from_slice(&up.ip.to_be_bytes());
        frame[l3 + 16..l3 + 20].copy_from_slice(&dst_ip[12..16]);
        frame[l3 + 10..l3 + 12].fill(0);
        let ihl = l4 - l3;
        let c = !checksum::data(&frame[l3..l3 + ihl]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        frame[l4] = icmpv4::ECHO_REPLY;
        frame[l4 + 2..l4 + 4].fill(0);
        let c = !checksum::data(&frame[l4..end]);
        frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        return Local::EchoAnswered;
    }
    Local::Consumed
}

/// Writes a broadcast ARP request from uplink `up` for `target` (host
/// order) into `buf` (at least 60 bytes: padded to the Ethernet minimum);
/// returns the frame length.
pub fn write_arp_request(buf: &mut [u8], up: &Uplink, target: u32) -> usize {
    const LEN: usize = 60;
    buf[..LEN].fill(0);
    buf[0..6].fill(0xff);
    buf[6..12].copy_from_slice(&up.mac);
    buf[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    let mut p = arp::Packet::new_unchecked(&mut buf[14..14 + arp::PACKET_LEN]);
    p.set_ethernet_ipv4();
    p.set_operation(arp::OP_REQUEST);
    p.set_sender_hardware_addr(up.mac);
    p.set_sender_protocol_addr(up.ip.to_be_bytes());
    p.set_target_hardware_addr([0; 6]);
    p.set_target_protocol_addr(target.to_be_bytes());
    LEN
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::flow::extract;

    fn up() -> Uplink {
        let s = parse_uplink("up=192.0.2.1/24,gw=192.0.2.254,mtu=1400").unwrap();
        Uplink::new(&s, 3, [2, 0, 0, 0, 0, 1])
    }

    #[test]
    fn test_parse_uplink_and_neighbor() {
        let s = parse_uplink("up=192.0.2.1/24,gw=192.0.2.254,mtu=1400").unwrap();
        assert_eq!((s.port.as_str(), s.prefix, s.mtu), ("up", 24, 1400));
        assert_eq!(s.gw, Some(Ipv4Addr::new(192, 0, 2, 254)));
        assert_eq!(parse_uplink("up=10.0.0.1/8").unwrap().mtu, DEFAULT_MTU);
        for bad in
            ["up", "up=10.0.0.1", "up=10.0.0.1/33", "up=10.0.0.1/24,gw=10.0.1.1", "up=::1/64", "up=1.2.3.4/8,x=1"]
        {
            assert!(parse_uplink(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_neighbor("192.0.2.2=02:00:00:00:00:0b").unwrap().1, [2, 0, 0, 0, 0, 0xb]);
        assert!(parse_neighbor("192.0.2.2=02:00:00:00:0b").is_err());
    }

    #[test]
    fn test_route_prefers_the_connected_subnet_then_the_gateway() {
        let a = up();
        let b = Uplink { port: 4, ip: 0x0a00_0001, mask: 0xffff_0000, gw: None, mtu: 1500, mac: [0; 6] };
        let ups = [b, a];
        assert_eq!(route(&ups, 0x0a00_0505), Some((0, 0x0a00_0505)));
        assert_eq!(
            route(&ups, u32::from(Ipv4Addr::new(192, 0, 2, 9))),
            Some((1, u32::from(Ipv4Addr::new(192, 0, 2, 9))))
        );
        assert_eq!(
            route(&ups, u32::from(Ipv4Addr::new(8, 8, 8, 8))),
            Some((1, u32::from(Ipv4Addr::new(192, 0, 2, 254))))
        );
        assert_eq!(route(&[b], u32::from(Ipv4Addr::new(8, 8, 8, 8))), None);
    }

    #[test]
    fn test_neigh_table_statics_learning_and_expiry() {
        let mut t = NeighTable::new(&[(Ipv4Addr::new(192, 0, 2, 2), [2, 0, 0, 0, 0, 2])]);
        let p = t.published();
        let now = std::time::Instant::now();
        let two = u32::from(Ipv4Addr::new(192, 0, 2, 2));
        let three = u32::from(Ipv4Addr::new(192, 0, 2, 3));
        // A static entry is never replaced; broadcast MACs are not learnt.
        t.update(&[(two, [2, 0, 0, 0, 0, 9]), (three, [2, 0, 0, 0, 0, 3]), (7, [0xff; 6])], now);
        assert_eq!(p.load().get(two), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(p.load().get(three), Some([2, 0, 0, 0, 0, 3]));
        assert_eq!(p.load().get(7), None);
        let before = p.load_full();
        t.update(&[(three, [2, 0, 0, 0, 0, 3])], now);
        assert!(Arc::ptr_eq(&before, &p.load_full()), "nothing changed: nothing published");
        t.update(&[], now + NEIGH_MAX_AGE);
        assert_eq!(p.load().get(three), None, "expired");
        assert_eq!(p.load().get(two), Some([2, 0, 0, 0, 0, 2]), "statics never expire");
    }

    fn key_of(frame: &[u8]) -> (FlowKey, Layout) {
        let mut k = FlowKey::default();
        let l = extract(frame, 0, &mut k).unwrap();
        (k, l)
    }

    #[test]
    fn test_arp_request_for_our_ip_is_answered_in_place() {
        let u = up();
        let mut f = vec![0u8; 60];
        let peer = Uplink {
            port: 0,
            ip: u32::from(Ipv4Addr::new(192, 0, 2, 7)),
            mask: 0,
            gw: None,
            mtu: 0,
            mac: [2, 0, 0, 0, 0, 7],
        };
        write_arp_request(&mut f, &peer, u.ip);
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f, &k, &l, &u), Local::ArpAnswered { ip: peer.ip, mac: peer.mac });
        assert_eq!(&f[0..6], &peer.mac);
        assert_eq!(&f[6..12], &u.mac);
        let p = arp::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(p.operation(), arp::OP_REPLY);
        assert_eq!(p.sender_hardware_addr(), u.mac);
        assert_eq!(p.sender_protocol_addr(), u.ip.to_be_bytes());
        assert_eq!(p.target_hardware_addr(), peer.mac);
        assert_eq!(p.target_protocol_addr(), peer.ip.to_be_bytes());
        // The answer itself, seen by the peer, is a reply to learn from.
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f.clone(), &k, &l, &peer), Local::ArpLearn { ip: u.ip, mac: u.mac });
        // A request for another IP is not ours.
        let mut g = vec![0u8; 60];
        write_arp_request(&mut g, &peer, u.ip + 1);
        let (k, l) = key_of(&g);
        assert_eq!(classify(&mut g, &k, &l, &u), Local::No);
    }

    #[test]
    fn test_ping_to_our_ip_is_answered_with_valid_checksums() {
        let u = up();
        // Ethernet + IPv4 (20) + ICMP echo (8) + 5 bytes of data.
        let mut f = vec![0u8; 14 + 20 + 8 + 5];
        f[0..6].copy_from_slice(&u.mac);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&33u16.to_be_bytes());
        f[22] = 64;
        f[23] = IPPROTO_ICMP;
        f[26..30].copy_from_slice(&[192, 0, 2, 7]);
        f[30..34].copy_from_slice(&u.ip.to_be_bytes());
        let c = !checksum::data(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34] = icmpv4::ECHO_REQUEST;
        f[38..42].copy_from_slice(&[0, 1, 0, 9]);
        f[42..47].copy_from_slice(b"hello");
        let c = !checksum::data(&f[34..]);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f, &k, &l, &u), Local::EchoAnswered);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 7]);
        assert_eq!(&f[26..30], &u.ip.to_be_bytes());
        assert_eq!(&f[30..34], &[192, 0, 2, 7]);
        assert_eq!(f[34], icmpv4::ECHO_REPLY);
        assert_eq!(checksum::data(&f[14..34]), 0xffff, "IP checksum");
        assert_eq!(checksum::data(&f[34..]), 0xffff, "ICMP checksum");
        assert_eq!(&f[42..47], b"hello");
    }
}
