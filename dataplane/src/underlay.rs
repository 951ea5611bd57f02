//! The underlay: this node's tunnel endpoint on its uplinks, as OVS's
//! userspace tunnelling does it with `br-phy` (an IP on the bridge, its
//! route and ARP tables), without a kernel interface.
//!
//! An **uplink** is a DPDK port with the node's tunnel IP, IPv4 or IPv6
//! (`--uplink PORT=IP/PREFIX[,gw=IP][,mtu=N]`). For Geneve to a remote chassis the
//! fast path picks the uplink whose subnet holds the remote IP (next hop:
//! the remote itself), else the first uplink with a gateway (next hop: the
//! gateway), of the remote's address family, and takes the next hop's MAC
//! from the **neighbour table**: static entries (`--neighbor IP=MAC`) plus
//! what ARP (IPv4) or Neighbor Discovery (IPv6) taught. Both are done by
//! Petrel itself:
//!
//! - a PMD that has no MAC for a next hop drops the packet
//!   (`tunnel_neigh_unresolved`) and sends an ARP request (or a Neighbor
//!   Solicitation to the solicited-node address) from the uplink, at most
//!   one per next hop every [`ARP_RETRY_MS`] ms;
//! - ARP replies and Neighbor Advertisements to us, and requests and
//!   solicitations for our IP (whose sender is learnt, as Linux does), are
//!   reported by the PMD through a [`NeighRing`]; the main
//!   thread folds them into the table, which PMDs pick up RCU-style
//!   (`arc_swap`), like the OVN tables. Static entries are never replaced;
//!   learnt ones are refreshed by every reply and expire after
//!   [`NEIGH_MAX_AGE`] without one (then they are asked for again);
//! - ARP requests and Neighbor Solicitations for our IP are answered (a
//!   Neighbor Advertisement is built into a pool mbuf), and ICMP / ICMPv6
//!   echo requests to it get their reply in place, so the underlay can see
//!   the node (`ping`, `arping`, `ndisc6`).
//!
//! Frames that would not fit the uplink's MTU once encapsulated are dropped
//! (`tunnel_mtu_exceeded`).
//!
//! Everything here works on byte slices and plain values, so it is tested
//! without DPDK; `pmd::fwd` calls it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::Duration;

use crate::flow::{FlowKey, Layout};
use crate::wire::{arp, checksum, icmpv4, icmpv6, ipv4_mapped};

/// Minimum time between two ARP requests for one next hop from one PMD.
pub const ARP_RETRY_MS: u64 = 200;
/// A learnt neighbour not confirmed for this long is dropped from the table.
pub const NEIGH_MAX_AGE: Duration = Duration::from_secs(300);
/// A learnt neighbour not confirmed for this long is asked for again (its
/// MAC is still used meanwhile), so a live next hop never expires.
pub const NEIGH_STALE_AGE: Duration = Duration::from_secs(240);
/// Most learnt neighbours (Linux's `gc_thresh3` default is 1024).
pub const NEIGH_MAX_LEARNT: usize = 1024;
/// Default uplink MTU (the largest IP packet it carries).
pub const DEFAULT_MTU: u16 = 1500;
/// Length of the Neighbor Advertisement / Solicitation frames written here:
/// Ethernet, IPv6, ICMPv6 header and target, one link-layer address option.
pub const ND_FRAME_LEN: usize = 14 + 40 + 24 + 8;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// An address as flow keys and the neighbour table hold it: IPv6, or
/// IPv4-mapped.
pub type Ip16 = [u8; 16];

/// `ip` as an [`Ip16`].
pub fn ip16(ip: IpAddr) -> Ip16 {
    match ip {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Whether an [`Ip16`] is IPv4-mapped.
pub fn is_v4(ip: &Ip16) -> bool {
    ip[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
}

/// An [`Ip16`] back as an address.
pub fn ip_of(ip: &Ip16) -> IpAddr {
    if is_v4(ip) {
        IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*ip))
    }
}

/// `--uplink PORT=IP/PREFIX[,gw=IP][,mtu=N]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    /// The DPDK port.
    pub port: String,
    /// This node's tunnel IP on it.
    pub ip: IpAddr,
    /// Prefix length of its subnet.
    pub prefix: u8,
    /// Default gateway through it, if any (same family).
    pub gw: Option<IpAddr>,
    /// Largest IP packet the underlay carries.
    pub mtu: u16,
}

/// Parses `PORT=IP/PREFIX[,gw=IP][,mtu=N]` (IPv4 or IPv6).
///
/// # Errors
/// What is wrong with it.
pub fn parse_uplink(spec: &str) -> Result<UplinkSpec, String> {
    let bad = |why: &str| format!("--uplink {spec:?}: {why} (expected PORT=IP/PREFIX[,gw=IP][,mtu=N])");
    let (port, rest) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
    let mut parts = rest.split(',');
    let cidr = parts.next().unwrap_or_default();
    let (ip, prefix) = cidr.split_once('/').ok_or_else(|| bad("the IP needs a /PREFIX"))?;
    let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=max).contains(p)).ok_or_else(|| bad("bad prefix length"))?;
    let mut u = UplinkSpec { port: port.to_owned(), ip, prefix, gw: None, mtu: DEFAULT_MTU };
    for kv in parts {
        match kv.split_once('=') {
            Some(("gw", v)) => u.gw = Some(v.parse().map_err(|_| bad("gw is not an IP address"))?),
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
        let m = mask(u.prefix, u.ip.is_ipv4());
        if gw.is_ipv4() != ip.is_ipv4() || m & (u128::from_be_bytes(ip16(gw)) ^ u128::from_be_bytes(ip16(ip))) != 0 {
            return Err(bad("the gateway is not in the uplink's subnet"));
        }
    }
    Ok(u)
}

/// Parses `IP=MAC` (IPv4 or IPv6).
///
/// # Errors
/// What is wrong with it.
pub fn parse_neighbor(spec: &str) -> Result<(IpAddr, [u8; 6]), String> {
    let bad = || format!("--neighbor {spec:?}: expected IP=MAC");
    // IPv6 addresses hold ':' but never '=': split at the '='.
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

/// The mask of a prefix over an [`Ip16`] (IPv4 prefixes count from bit 96).
fn mask(prefix: u8, v4: bool) -> u128 {
    let bits = u32::from(prefix) + if v4 { 96 } else { 0 };
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits.min(128))
    }
}

/// An uplink as the fast path uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// Port slot.
    pub port: usize,
    /// Tunnel IP.
    pub ip: Ip16,
    /// Subnet mask over [`Ip16`].
    pub mask: u128,
    /// Gateway.
    pub gw: Option<Ip16>,
    /// Largest IP packet.
    pub mtu: u16,
    /// The port's MAC address.
    pub mac: [u8; 6],
}

impl Uplink {
    /// From a spec, on port slot `port` with MAC `mac`.
    pub fn new(s: &UplinkSpec, port: usize, mac: [u8; 6]) -> Self {
        Uplink { port, ip: ip16(s.ip), mask: mask(s.prefix, s.ip.is_ipv4()), gw: s.gw.map(ip16), mtu: s.mtu, mac }
    }

    /// Whether the tunnel IP is IPv4.
    pub fn is_v4(&self) -> bool {
        is_v4(&self.ip)
    }

    fn on_link(&self, dst: &Ip16) -> bool {
        is_v4(dst) == self.is_v4() && (u128::from_be_bytes(self.ip) ^ u128::from_be_bytes(*dst)) & self.mask == 0
    }
}

/// The uplink (index into `uplinks`) and next hop for a remote tunnel IP:
/// an uplink whose subnet holds it, else the first one of its family with
/// a gateway.
pub fn route(uplinks: &[Uplink], dst: &Ip16) -> Option<(usize, Ip16)> {
    if let Some(i) = uplinks.iter().position(|u| u.on_link(dst)) {
        return Some((i, *dst));
    }
    uplinks.iter().enumerate().find_map(|(i, u)| u.gw.filter(|g| is_v4(g) == is_v4(dst)).map(|g| (i, g)))
}

/// The neighbour table PMDs read: IP → (MAC, stale), sorted. A stale
/// entry is used and asked for again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighMap {
    entries: Vec<(Ip16, [u8; 6], bool)>,
}

impl NeighMap {
    /// A table of these entries.
    pub fn new(mut entries: Vec<(Ip16, [u8; 6], bool)>) -> Self {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.0);
        NeighMap { entries }
    }

    /// The MAC of `ip`.
    #[inline]
    pub fn get(&self, ip: &Ip16) -> Option<[u8; 6]> {
        self.lookup(ip).map(|e| e.0)
    }

    /// The MAC of `ip` and whether it is stale.
    #[inline]
    pub fn lookup(&self, ip: &Ip16) -> Option<([u8; 6], bool)> {
        self.entries.binary_search_by_key(ip, |e| e.0).ok().map(|i| (self.entries[i].1, self.entries[i].2))
    }

    /// All entries.
    pub fn entries(&self) -> &[(Ip16, [u8; 6], bool)] {
        &self.entries
    }
}

/// Where the neighbour table is published.
pub type Neighbors = Arc<arc_swap::ArcSwap<NeighMap>>;

/// Entries a PMD's neighbour ring keeps for the reader.
const NEIGH_SLOTS: usize = 64;

#[derive(Debug, Default)]
struct NeighSlot {
    seq: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
    mac: AtomicU64,
}

/// What a PMD reports to the main thread: `(IP, MAC)` pairs seen in ARP or
/// ND for our tunnel IPs. One writer (the PMD), one reader (the main
/// thread); a seqlock per slot, overwriting the oldest when the reader is
/// late (harmless: unresolved next hops are asked for again). The same
/// design as `pmd::learn::LearnRing`, with room for IPv6.
#[derive(Debug)]
pub struct NeighRing {
    slots: Box<[NeighSlot]>,
    head: AtomicU64,
}

impl Default for NeighRing {
    fn default() -> Self {
        NeighRing { slots: (0..NEIGH_SLOTS).map(|_| NeighSlot::default()).collect(), head: AtomicU64::new(0) }
    }
}

#[allow(clippy::cast_possible_truncation)] // the remainder is < NEIGH_SLOTS
fn nslot(i: u64) -> usize {
    (i % NEIGH_SLOTS as u64) as usize
}

impl NeighRing {
    /// Records a neighbour (the owning PMD only; no allocation, no lock).
    #[inline]
    pub fn push(&self, ip: &Ip16, mac: [u8; 6]) {
        let h = self.head.load(Relaxed);
        let s = &self.slots[nslot(h)];
        let seq = 2 * (h / NEIGH_SLOTS as u64) + 1;
        s.seq.store(seq, Relaxed);
        std::sync::atomic::fence(Release);
        let v = u128::from_be_bytes(*ip);
        #[allow(clippy::cast_possible_truncation)] // the halves
        {
            s.hi.store((v >> 64) as u64, Relaxed);
            s.lo.store(v as u64, Relaxed);
        }
        let mut m = [0u8; 8];
        m[2..].copy_from_slice(&mac);
        s.mac.store(u64::from_be_bytes(m), Relaxed);
        s.seq.store(seq + 1, Release);
        self.head.store(h + 1, Release);
    }

    /// Entries since `cursor`; returns the next cursor.
    pub fn read_since(&self, cursor: u64, out: &mut Vec<(Ip16, [u8; 6])>) -> u64 {
        let head = self.head.load(Acquire);
        for i in cursor.max(head.saturating_sub(NEIGH_SLOTS as u64))..head {
            let s = &self.slots[nslot(i)];
            let want = 2 * (i / NEIGH_SLOTS as u64) + 2;
            if s.seq.load(Acquire) != want {
                continue;
            }
            let (hi, lo, m) = (s.hi.load(Relaxed), s.lo.load(Relaxed), s.mac.load(Relaxed));
            std::sync::atomic::fence(Acquire);
            if s.seq.load(Relaxed) != want {
                continue;
            }
            let ip = ((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes();
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&m.to_be_bytes()[2..]);
            out.push((ip, mac));
        }
        head
    }
}

/// The main thread's side of the neighbour table: static entries, learnt
/// ones with their age, publishing to PMDs when something changed.
///
/// Only next hops of the tunnels (`wanted`) are learnt, and entries that
/// exist are refreshed: what the underlay says about other addresses
/// (random senders of ARP requests for our IP, gratuitous ARP of other
/// hosts) never grows the table, which is bounded anyway by
/// [`NEIGH_MAX_LEARNT`].
#[derive(Debug)]
pub struct NeighTable {
    statics: Vec<(Ip16, [u8; 6])>,
    learnt: std::collections::BTreeMap<Ip16, ([u8; 6], std::time::Instant, bool)>,
    wanted: std::collections::BTreeSet<Ip16>,
    published: Neighbors,
}

impl NeighTable {
    /// A table with these static entries, published now.
    pub fn new(statics: &[(IpAddr, [u8; 6])]) -> Self {
        let statics: Vec<(Ip16, [u8; 6])> = statics.iter().map(|(i, m)| (ip16(*i), *m)).collect();
        let published = Arc::new(arc_swap::ArcSwap::from_pointee(NeighMap::new(
            statics.iter().map(|(i, m)| (*i, *m, false)).collect(),
        )));
        NeighTable {
            statics,
            learnt: std::collections::BTreeMap::new(),
            wanted: std::collections::BTreeSet::new(),
            published,
        }
    }

    /// The next hops tunnels need now (from the tables' remote chassis).
    pub fn set_wanted(&mut self, wanted: impl IntoIterator<Item = Ip16>) {
        self.wanted = wanted.into_iter().collect();
    }

    /// What PMDs read.
    pub fn published(&self) -> Neighbors {
        Arc::clone(&self.published)
    }

    /// Folds in what PMDs learnt and expires old entries; publishes if the
    /// table changed.
    pub fn update(&mut self, seen: &[(Ip16, [u8; 6])], now: std::time::Instant) {
        let mut changed = false;
        for &(ip, mac) in seen {
            if self.statics.iter().any(|s| s.0 == ip) || mac == [0; 6] || mac[0] & 1 != 0 {
                continue;
            }
            if !self.learnt.contains_key(&ip) && (!self.wanted.contains(&ip) || self.learnt.len() >= NEIGH_MAX_LEARNT) {
                continue;
            }
            match self.learnt.insert(ip, (mac, now, false)) {
                Some((old, _, false)) if old == mac => {}
                _ => changed = true,
            }
        }
        let before = self.learnt.len();
        self.learnt.retain(|_, (_, t, _)| now.duration_since(*t) < NEIGH_MAX_AGE);
        changed |= self.learnt.len() != before;
        for (_, t, stale) in self.learnt.values_mut() {
            if !*stale && now.duration_since(*t) >= NEIGH_STALE_AGE {
                *stale = true;
                changed = true;
            }
        }
        if changed {
            let mut all: Vec<(Ip16, [u8; 6], bool)> = self.statics.iter().map(|(i, m)| (*i, *m, false)).collect();
            all.extend(
                self.learnt
                    .iter()
                    .filter(|(ip, _)| !self.statics.iter().any(|s| s.0 == **ip))
                    .map(|(ip, (m, _, stale))| (*ip, *m, *stale)),
            );
            self.published.store(Arc::new(NeighMap::new(all)));
        }
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
        /// Sender IP.
        ip: Ip16,
        /// Sender MAC.
        mac: [u8; 6],
    },
    /// A Neighbor Solicitation for our IP: answer with
    /// [`write_na`] to this MAC and IP (learning them if the IP is
    /// specified).
    NsForUs {
        /// Solicitor IP (`::` for duplicate address detection).
        ip: Ip16,
        /// Solicitor MAC.
        mac: [u8; 6],
    },
    /// ARP or an unsolicited Neighbor Advertisement on the underlay that is
    /// not for us (gratuitous ARP of a failed-over gateway, requests between
    /// other hosts): worth learning if it is about a next hop of ours
    /// (`NeighTable` decides), then forwarded as usual.
    Snoop {
        /// Sender IP.
        ip: Ip16,
        /// Sender MAC.
        mac: [u8; 6],
    },
    /// An ARP reply (or other ARP) or Neighbor Advertisement to us: learn
    /// and consume.
    Learn {
        /// Neighbour IP.
        ip: Ip16,
        /// Neighbour MAC.
        mac: [u8; 6],
    },
    /// An ICMP(v6) echo request to our IP: the frame now is the reply.
    EchoAnswered,
    /// Geneve to our IP: decapsulate.
    Geneve,
    /// Other traffic to our IP (or malformed ARP/ICMP for it): consumed.
    Consumed,
}

/// Classifies a frame received on uplink `up` (its key and layout as
/// extracted, VLAN tag already removed) and answers ARP and ping in place.
pub fn classify(frame: &mut [u8], key: &FlowKey, layout: &Layout, up: &Uplink) -> Local {
    if key.dl_type == ETH_P_ARP {
        if !up.is_v4() || layout.l3 as usize + arp::PACKET_LEN > frame.len() {
            return Local::No;
        }
        if key.nw_dst != up.ip {
            return if key.nw_src != up.ip { Local::Snoop { ip: key.nw_src, mac: key.arp_sha } } else { Local::No };
        }
        let (ip, mac) = (key.nw_src, key.arp_sha);
        if key.arp_op == arp::OP_REQUEST {
            let l3 = layout.l3 as usize;
            let (eth, rest) = frame.split_at_mut(l3);
            eth[0..6].copy_from_slice(&mac);
            eth[6..12].copy_from_slice(&up.mac);
            let mut p = arp::Packet::new_unchecked(&mut rest[..arp::PACKET_LEN]);
            p.set_operation(arp::OP_REPLY);
            p.set_target_hardware_addr(mac);
            p.set_target_protocol_addr([ip[12], ip[13], ip[14], ip[15]]);
            p.set_sender_hardware_addr(up.mac);
            p.set_sender_protocol_addr([up.ip[12], up.ip[13], up.ip[14], up.ip[15]]);
            return Local::ArpAnswered { ip, mac };
        }
        return Local::Learn { ip, mac };
    }
    let v6 = key.dl_type == ETH_P_IPV6;
    if !(key.dl_type == ETH_P_IPV4 || v6) || v6 == up.is_v4() {
        return Local::No;
    }
    if v6 && key.nw_proto == IPPROTO_ICMPV6 && key.nw_frag == 0 {
        // Neighbor Discovery (extract checked the message and its options).
        match u8::try_from(key.tp_src) {
            // A solicitation for our address (to the solicited-node group or to us).
            Ok(icmpv6::NEIGHBOR_SOLICIT) if key.nd_target == up.ip => {
                let mac = if key.arp_sha == [0; 6] { key.dl_src } else { key.arp_sha };
                return Local::NsForUs { ip: key.nw_src, mac };
            }
            // An advertisement sent to us: the neighbour's own address.
            // (One for our address is someone else's claim: never learnt.)
            Ok(icmpv6::NEIGHBOR_ADVERT) if key.nw_dst == up.ip && key.nd_target != up.ip => {
                let mac = if key.arp_tha == [0; 6] { key.dl_src } else { key.arp_tha };
                return Local::Learn { ip: key.nd_target, mac };
            }
            // Unsolicited (to all nodes): a neighbour announcing a new MAC.
            Ok(icmpv6::NEIGHBOR_ADVERT) if key.nd_target != up.ip && key.arp_tha != [0; 6] => {
                return Local::Snoop { ip: key.nd_target, mac: key.arp_tha };
            }
            _ => {}
        }
    }
    if key.nw_dst != up.ip {
        return Local::No;
    }
    if layout.is_geneve() {
        return Local::Geneve;
    }
    let echo = if v6 {
        key.nw_proto == IPPROTO_ICMPV6 && key.tp_src == u16::from(icmpv6::ECHO_REQUEST)
    } else {
        key.nw_proto == IPPROTO_ICMP && key.tp_src == u16::from(icmpv4::ECHO_REQUEST)
    };
    if echo && key.nw_frag == 0 {
        return if echo_reply(frame, key, layout, up, v6) { Local::EchoAnswered } else { Local::Consumed };
    }
    Local::Consumed
}

/// Turns an echo request into its reply in place; false if it is cut short.
fn echo_reply(frame: &mut [u8], key: &FlowKey, layout: &Layout, up: &Uplink, v6: bool) -> bool {
    let (l3, l4) = (layout.l3 as usize, layout.l4 as usize);
    if l4 == Layout::ABSENT as usize || l4 + 8 > frame.len() {
        return false;
    }
    let end = if v6 {
        l3 + 40 + usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]))
    } else {
        l3 + usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]))
    };
    if end > frame.len() || end < l4 + 8 {
        return false;
    }
    frame[0..6].copy_from_slice(&key.dl_src);
    frame[6..12].copy_from_slice(&up.mac);
    frame[l4 + 2..l4 + 4].fill(0);
    if v6 {
        frame[l3 + 7] = 64; // hop limit
        frame[l3 + 8..l3 + 24].copy_from_slice(&up.ip);
        frame[l3 + 24..l3 + 40].copy_from_slice(&key.nw_src);
        frame[l4] = icmpv6::ECHO_REPLY;
        let len = u32::try_from(end - l4).unwrap_or(0);
        let ph = checksum::pseudo_header_v6(&Ipv6Addr::from(up.ip), &Ipv6Addr::from(key.nw_src), IPPROTO_ICMPV6, len);
        let c = !checksum::combine(&[ph, checksum::data(&frame[l4..end])]);
        frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    } else {
        frame[l3 + 8] = 64; // TTL
        frame[l3 + 12..l3 + 16].copy_from_slice(&up.ip[12..]);
        frame[l3 + 16..l3 + 20].copy_from_slice(&key.nw_src[12..]);
        frame[l3 + 10..l3 + 12].fill(0);
        let c = !checksum::data(&frame[l3..l4]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        frame[l4] = icmpv4::ECHO_REPLY;
        let c = !checksum::data(&frame[l4..end]);
        frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    }
    true
}

/// Writes a broadcast ARP request from uplink `up` (IPv4) for `target`
/// into `buf` (at least 60 bytes: padded to the Ethernet minimum); returns
/// the frame length.
pub fn write_arp_request(buf: &mut [u8], up: &Uplink, target: &Ip16) -> usize {
    const LEN: usize = 60;
    buf[..LEN].fill(0);
    buf[0..6].fill(0xff);
    buf[6..12].copy_from_slice(&up.mac);
    buf[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    let mut p = arp::Packet::new_unchecked(&mut buf[14..14 + arp::PACKET_LEN]);
    p.set_ethernet_ipv4();
    p.set_operation(arp::OP_REQUEST);
    p.set_sender_hardware_addr(up.mac);
    p.set_sender_protocol_addr([up.ip[12], up.ip[13], up.ip[14], up.ip[15]]);
    p.set_target_hardware_addr([0; 6]);
    p.set_target_protocol_addr([target[12], target[13], target[14], target[15]]);
    LEN
}

/// Writes an ND message from uplink `up` into `buf` (at least
/// [`ND_FRAME_LEN`] bytes): ICMPv6 `msg` (NS or NA) about `target`, to
/// `dst_ip`/`dst_mac`, with our MAC as the link-layer address option
/// (source for NS, target for NA) and `flags` in the reserved word (NA:
/// solicited, override). Returns the frame length.
fn write_nd(buf: &mut [u8], up: &Uplink, dst_mac: [u8; 6], dst_ip: &Ip16, msg: u8, target: &Ip16, flags: u32) -> usize {
    let b = &mut buf[..ND_FRAME_LEN];
    b.fill(0);
    b[0..6].copy_from_slice(&dst_mac);
    b[6..12].copy_from_slice(&up.mac);
    b[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let l3 = 14;
    b[l3] = 0x60;
    let plen: u16 = 24 + 8;
    b[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    b[l3 + 6] = IPPROTO_ICMPV6;
    b[l3 + 7] = 255; // RFC 4861: hop limit 255
    b[l3 + 8..l3 + 24].copy_from_slice(&up.ip);
    b[l3 + 24..l3 + 40].copy_from_slice(dst_ip);
    let l4 = l3 + 40;
    b[l4] = msg;
    b[l4 + 4..l4 + 8].copy_from_slice(&flags.to_be_bytes());
    b[l4 + 8..l4 + 24].copy_from_slice(target);
    b[l4 + 24] = if msg == icmpv6::NEIGHBOR_SOLICIT { icmpv6::OPT_SOURCE_LL_ADDR } else { icmpv6::OPT_TARGET_LL_ADDR };
    b[l4 + 25] = 1;
    b[l4 + 26..l4 + 32].copy_from_slice(&up.mac);
    let ph = checksum::pseudo_header_v6(&Ipv6Addr::from(up.ip), &Ipv6Addr::from(*dst_ip), IPPROTO_ICMPV6, 32);
    let c = !checksum::combine(&[ph, checksum::data(&b[l4..])]);
    b[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    ND_FRAME_LEN
}

/// A Neighbor Advertisement for our IP answering a solicitation from
/// `ip`/`mac` (to all nodes when `ip` is unspecified: DAD).
pub fn write_na(buf: &mut [u8], up: &Uplink, ip: &Ip16, mac: [u8; 6]) -> usize {
    if *ip == [0; 16] {
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        // Not solicited (RFC 4861 §7.2.4), override.
        return write_nd(buf, up, [0x33, 0x33, 0, 0, 0, 1], &all_nodes, icmpv6::NEIGHBOR_ADVERT, &up.ip, 0x2000_0000);
    }
    write_nd(buf, up, mac, ip, icmpv6::NEIGHBOR_ADVERT, &up.ip, 0x6000_0000)
}

/// A request for `target`'s MAC from uplink `up`: ARP for IPv4, a Neighbor
/// Solicitation to the solicited-node multicast address for IPv6. `buf`
/// holds at least [`ND_FRAME_LEN`] bytes; returns the frame length.
pub fn write_solicit(buf: &mut [u8], up: &Uplink, target: &Ip16) -> usize {
    if is_v4(target) {
        return write_arp_request(buf, up, target);
    }
    let mut snm = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0).octets();
    snm[13..].copy_from_slice(&target[13..]);
    let mac = [0x33, 0x33, 0xff, target[13], target[14], target[15]];
    write_nd(buf, up, mac, &snm, icmpv6::NEIGHBOR_SOLICIT, target, 0)
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

    fn up6() -> Uplink {
        let s = parse_uplink("up=2001:db8::1/64,gw=2001:db8::fe").unwrap();
        Uplink::new(&s, 3, [2, 0, 0, 0, 0, 1])
    }

    fn v4(a: [u8; 4]) -> Ip16 {
        ipv4_mapped(a)
    }

    fn v6(s: &str) -> Ip16 {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn test_parse_uplink_and_neighbor() {
        let s = parse_uplink("up=192.0.2.1/24,gw=192.0.2.254,mtu=1400").unwrap();
        assert_eq!((s.port.as_str(), s.prefix, s.mtu), ("up", 24, 1400));
        assert_eq!(s.gw, Some("192.0.2.254".parse().unwrap()));
        assert_eq!(parse_uplink("up=10.0.0.1/8").unwrap().mtu, DEFAULT_MTU);
        assert_eq!(parse_uplink("up=2001:db8::1/64").unwrap().prefix, 64);
        for bad in [
            "up",
            "up=10.0.0.1",
            "up=10.0.0.1/33",
            "up=10.0.0.1/24,gw=10.0.1.1",
            "up=2001:db8::1/129",
            "up=2001:db8::1/64,gw=10.0.0.1",
            "up=1.2.3.4/8,x=1",
        ] {
            assert!(parse_uplink(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_neighbor("192.0.2.2=02:00:00:00:00:0b").unwrap().1, [2, 0, 0, 0, 0, 0xb]);
        assert_eq!(
            parse_neighbor("2001:db8::2=02:00:00:00:00:0b").unwrap().0,
            "2001:db8::2".parse::<IpAddr>().unwrap()
        );
        assert!(parse_neighbor("192.0.2.2=02:00:00:00:0b").is_err());
    }

    #[test]
    fn test_route_prefers_the_connected_subnet_then_the_gateway_of_the_family() {
        let a = up();
        let b = Uplink::new(&parse_uplink("b=10.0.0.1/16").unwrap(), 4, [0; 6]);
        let c = up6();
        let ups = [b, a, c];
        assert_eq!(route(&ups, &v4([10, 0, 5, 5])), Some((0, v4([10, 0, 5, 5]))));
        assert_eq!(route(&ups, &v4([192, 0, 2, 9])), Some((1, v4([192, 0, 2, 9]))));
        assert_eq!(route(&ups, &v4([8, 8, 8, 8])), Some((1, v4([192, 0, 2, 254]))));
        assert_eq!(route(&[b], &v4([8, 8, 8, 8])), None);
        assert_eq!(route(&ups, &v6("2001:db8::9")), Some((2, v6("2001:db8::9"))));
        assert_eq!(route(&ups, &v6("2001:db9::9")), Some((2, v6("2001:db8::fe"))));
        assert_eq!(route(&[a, b], &v6("2001:db8::9")), None, "no IPv6 uplink");
    }

    #[test]
    fn test_neigh_table_statics_learning_and_expiry() {
        let two = v4([192, 0, 2, 2]);
        let three = v4([192, 0, 2, 3]);
        let four = v4([192, 0, 2, 4]);
        let mut t = NeighTable::new(&[("192.0.2.2".parse().unwrap(), [2, 0, 0, 0, 0, 2])]);
        t.set_wanted([two, three, v6("::7")]);
        let p = t.published();
        let now = std::time::Instant::now();
        // A static entry is never replaced; broadcast MACs are not learnt;
        // addresses no tunnel needs are not learnt.
        t.update(
            &[(two, [2, 0, 0, 0, 0, 9]), (three, [2, 0, 0, 0, 0, 3]), (v6("::7"), [0xff; 6]), (four, [2; 6])],
            now,
        );
        assert_eq!(p.load().get(&two), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(p.load().lookup(&three), Some(([2, 0, 0, 0, 0, 3], false)));
        assert_eq!(p.load().get(&v6("::7")), None);
        assert_eq!(p.load().get(&four), None, "not a next hop: not learnt");
        let before = p.load_full();
        t.update(&[(three, [2, 0, 0, 0, 0, 3])], now);
        assert!(Arc::ptr_eq(&before, &p.load_full()), "nothing changed: nothing published");
        // A known entry follows a MAC change (gratuitous ARP after a failover)
        // even once no longer wanted.
        t.set_wanted([]);
        t.update(&[(three, [2, 0, 0, 0, 0, 0x33])], now);
        assert_eq!(p.load().get(&three), Some([2, 0, 0, 0, 0, 0x33]));
        // Old entries go stale (still used, asked for again), then expire.
        t.update(&[], now + NEIGH_STALE_AGE);
        assert_eq!(p.load().lookup(&three), Some(([2, 0, 0, 0, 0, 0x33], true)));
        t.update(&[(three, [2, 0, 0, 0, 0, 0x33])], now + NEIGH_STALE_AGE);
        assert_eq!(p.load().lookup(&three), Some(([2, 0, 0, 0, 0, 0x33], false)), "refreshed");
        t.update(&[], now + NEIGH_STALE_AGE + NEIGH_MAX_AGE);
        assert_eq!(p.load().get(&three), None, "expired");
        assert_eq!(p.load().get(&two), Some([2, 0, 0, 0, 0, 2]), "statics never expire");
    }

    #[test]
    fn test_neigh_ring_carries_ipv6() {
        let r = NeighRing::default();
        let mut out = Vec::new();
        r.push(&v6("2001:db8::2"), [2, 0, 0, 0, 0, 2]);
        r.push(&v4([192, 0, 2, 3]), [2, 0, 0, 0, 0, 3]);
        let c = r.read_since(0, &mut out);
        assert_eq!(out, vec![(v6("2001:db8::2"), [2, 0, 0, 0, 0, 2]), (v4([192, 0, 2, 3]), [2, 0, 0, 0, 0, 3])]);
        out.clear();
        for i in 0..100u8 {
            r.push(&v4([10, 0, 0, i]), [2, 0, 0, 0, 0, i]);
        }
        r.read_since(c, &mut out);
        assert_eq!(out.len(), NEIGH_SLOTS, "the last NEIGH_SLOTS are kept");
        assert_eq!(out.last().unwrap().0, v4([10, 0, 0, 99]));
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
        let peer = Uplink::new(&parse_uplink("p=192.0.2.7/24").unwrap(), 0, [2, 0, 0, 0, 0, 7]);
        write_arp_request(&mut f, &peer, &u.ip);
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f, &k, &l, &u), Local::ArpAnswered { ip: peer.ip, mac: peer.mac });
        assert_eq!(&f[0..6], &peer.mac);
        assert_eq!(&f[6..12], &u.mac);
        let p = arp::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(p.operation(), arp::OP_REPLY);
        assert_eq!(p.sender_hardware_addr(), u.mac);
        assert_eq!(p.sender_protocol_addr(), [192, 0, 2, 1]);
        assert_eq!(p.target_hardware_addr(), peer.mac);
        assert_eq!(p.target_protocol_addr(), [192, 0, 2, 7]);
        // The answer itself, seen by the peer, is a reply to learn from.
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f.clone(), &k, &l, &peer), Local::Learn { ip: u.ip, mac: u.mac });
        // A request for another IP is snooped (then forwarded as usual);
        // ARP on an IPv6 uplink is not ours.
        let mut g = vec![0u8; 60];
        write_arp_request(&mut g, &peer, &v4([192, 0, 2, 2]));
        let (k, l) = key_of(&g);
        assert_eq!(classify(&mut g, &k, &l, &u), Local::Snoop { ip: peer.ip, mac: peer.mac });
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f.clone(), &k, &l, &up6()), Local::No);
    }

    fn ping(u: &Uplink, v6: bool) -> Vec<u8> {
        let data = b"hello";
        let mut f = vec![0u8; 14];
        f[0..6].copy_from_slice(&u.mac);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        if v6 {
            f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(8 + u16::try_from(data.len()).unwrap()).to_be_bytes());
            ip[6] = IPPROTO_ICMPV6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&v6_of("2001:db8::7"));
            ip[24..40].copy_from_slice(&u.ip);
            f.extend(ip);
            let mut icmp = vec![icmpv6::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 9];
            icmp.extend(data);
            let ph = checksum::pseudo_header_v6(&"2001:db8::7".parse().unwrap(), &Ipv6Addr::from(u.ip), 58, 13);
            let c = !checksum::combine(&[ph, checksum::data(&icmp)]);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            f.extend(icmp);
        } else {
            f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(28 + u16::try_from(data.len()).unwrap()).to_be_bytes());
            ip[8] = 64;
            ip[9] = IPPROTO_ICMP;
            ip[12..16].copy_from_slice(&[192, 0, 2, 7]);
            ip[16..20].copy_from_slice(&u.ip[12..]);
            let c = !checksum::data(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend(ip);
            let mut icmp = vec![icmpv4::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 9];
            icmp.extend(data);
            let c = !checksum::data(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            f.extend(icmp);
        }
        f
    }

    fn v6_of(s: &str) -> Ip16 {
        v6(s)
    }

    #[test]
    fn test_ping_to_our_ip_is_answered_with_valid_checksums() {
        let u = up();
        let mut f = ping(&u, false);
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f, &k, &l, &u), Local::EchoAnswered);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 7]);
        assert_eq!(&f[26..30], &[192, 0, 2, 1]);
        assert_eq!(&f[30..34], &[192, 0, 2, 7]);
        assert_eq!(f[34], icmpv4::ECHO_REPLY);
        assert_eq!(checksum::data(&f[14..34]), 0xffff, "IP checksum");
        assert_eq!(checksum::data(&f[34..]), 0xffff, "ICMP checksum");
        assert_eq!(&f[42..47], b"hello");
        // Cut short: consumed, not answered, no panic.
        let mut g = ping(&u, false);
        let (k, l) = key_of(&g);
        g.truncate(40);
        assert_eq!(classify(&mut g, &k, &l, &u), Local::Consumed);
    }

    #[test]
    fn test_ping6_to_our_ip_is_answered_with_a_valid_checksum() {
        let u = up6();
        let mut f = ping(&u, true);
        let (k, l) = key_of(&f);
        assert_eq!(classify(&mut f, &k, &l, &u), Local::EchoAnswered);
        assert_eq!(&f[22..38], &u.ip);
        assert_eq!(&f[38..54], &v6("2001:db8::7"));
        assert_eq!(f[54], icmpv6::ECHO_REPLY);
        let ph = checksum::pseudo_header_v6(&Ipv6Addr::from(u.ip), &"2001:db8::7".parse().unwrap(), 58, 13);
        assert_eq!(checksum::combine(&[ph, checksum::data(&f[54..])]), 0xffff);
    }

    #[test]
    fn test_neighbor_discovery_solicit_answer_and_learn() {
        let u = up6();
        let peer = Uplink::new(&parse_uplink("p=2001:db8::7/64").unwrap(), 0, [2, 0, 0, 0, 0, 7]);
        // The peer solicits our address: a valid NS (extract checks it).
        let mut ns = vec![0u8; ND_FRAME_LEN];
        assert_eq!(write_solicit(&mut ns, &peer, &u.ip), ND_FRAME_LEN);
        assert_eq!(&ns[0..3], &[0x33, 0x33, 0xff]);
        let (k, l) = key_of(&ns);
        assert_eq!(classify(&mut ns, &k, &l, &u), Local::NsForUs { ip: peer.ip, mac: peer.mac });
        // Our answer, as the peer sees it: an NA to it, to learn from.
        let mut na = vec![0u8; ND_FRAME_LEN];
        write_na(&mut na, &u, &peer.ip, peer.mac);
        let (k, l) = key_of(&na);
        assert_eq!(k.tp_src, u16::from(icmpv6::NEIGHBOR_ADVERT));
        assert_eq!(&na[0..6], &peer.mac);
        assert_eq!(classify(&mut na.clone(), &k, &l, &peer), Local::Learn { ip: u.ip, mac: u.mac });
        // An NA claiming *our* address is never learnt; an NS for another is not ours.
        let impostor = Uplink { mac: [2, 0, 0, 0, 0, 0x66], ..u };
        let mut claim = vec![0u8; ND_FRAME_LEN];
        write_na(&mut claim, &impostor, &u.ip, u.mac);
        let (k, l) = key_of(&claim);
        assert!(!matches!(classify(&mut claim.clone(), &k, &l, &u), Local::Learn { .. }));
        let mut other = vec![0u8; ND_FRAME_LEN];
        write_solicit(&mut other, &peer, &v6("2001:db8::99"));
        let (k, l) = key_of(&other);
        assert_eq!(classify(&mut other, &k, &l, &u), Local::No);
        // Duplicate address detection (from ::): answered to all nodes.
        let mut dad = vec![0u8; ND_FRAME_LEN];
        write_na(&mut dad, &u, &[0; 16], [0; 6]);
        assert_eq!(&dad[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    }
}
