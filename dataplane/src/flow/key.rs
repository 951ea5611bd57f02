//! The flow key: every header field the tables can match, at fixed offsets.
//!
//! Modelled on OVS `struct flow` (`lib/flow.h`), with OVS's field names.
//! Conventions that tables and tools rely on:
//!
//! - Integers are host order (`tp_dst == 80`), addresses are wire bytes.
//! - A field of a header the packet does not have is zero; [`super::extract()`]
//!   resets the whole key first.
//! - Every IP address is 16 bytes; IPv4 addresses (and the ARP SPA/TPA) are
//!   stored IPv4-mapped, `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2), so one field
//!   serves both families and `dl_type` tells them apart.
//! - `vlan_tci[i]` is zero when there is no i-th tag; when there is, it holds
//!   the tag's TCI with [`VLAN_CFI`] (0x1000) forced on, as OVS does, so a
//!   priority-tagged frame (VID 0, PCP 0) is distinguishable from an untagged
//!   one. The real DEI bit is therefore not represented (as in OVS).
//! - ICMP type and code go in `tp_src` and `tp_dst` (OVS).
//! - ARP/RARP: `arp_op` holds the operation, `nw_src`/`nw_dst` the sender and
//!   target protocol addresses, `arp_sha`/`arp_tha` the hardware addresses.
//!   Unlike OVS, the operation is not also copied into `nw_proto`.
//! - Neighbor Discovery: `nd_target` holds the NS/NA target; the source and
//!   target link-layer address options reuse `arp_sha` (SLL) and `arp_tha`
//!   (TLL), as in OVS.
//! - Tunnel fields are zero unless the packet came out of a tunnel; the
//!   caller fills them after extraction (see `action::GeneveMeta::apply_to`).
//!
//! Layout: `#[repr(C, align(8))]` with no implicit padding (zerocopy checks
//! it), size a multiple of 8, so the key is also [`FlowKey::WORDS`] `u64`s for
//! masked compares and hashing.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `nw_frag` bit: the packet is a fragment (OVS `FLOW_NW_FRAG_ANY`).
pub const FLOW_NW_FRAG_ANY: u8 = 1 << 0;
/// `nw_frag` bit: the fragment is not the first, so it has no L4 header
/// (OVS `FLOW_NW_FRAG_LATER`).
pub const FLOW_NW_FRAG_LATER: u8 = 1 << 1;
/// The "tag present" bit forced on in `vlan_tci` (OVS `VLAN_CFI`).
pub const VLAN_CFI: u16 = 0x1000;

/// One packet's header fields, the key of every lookup.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct FlowKey {
    // ---- tunnel metadata (zero when not from a tunnel) ---- 40 bytes
    /// Outer source IP of the tunnel the packet arrived on (IPv4-mapped for IPv4).
    pub tun_src: [u8; 16],
    /// Outer destination IP of that tunnel.
    pub tun_dst: [u8; 16],
    /// Geneve VNI (24 bits): OVN's datapath tunnel key.
    pub tun_vni: u32,
    /// OVN logical ingress port key from the Geneve option (15 bits).
    pub tun_ingress_key: u16,
    /// OVN logical egress port key from the Geneve option (16 bits).
    pub tun_egress_key: u16,

    // ---- metadata ---- 8 bytes
    /// The port the packet was received on.
    pub in_port: u32,
    /// IPv6 flow label (20 bits).
    pub ipv6_label: u32,

    // ---- L2 ---- 20 bytes
    /// Destination MAC address.
    pub dl_dst: [u8; 6],
    /// Source MAC address.
    pub dl_src: [u8; 6],
    /// EtherType after any VLAN tags; 0x05ff for 802.3 frames without SNAP.
    pub dl_type: u16,
    /// TPID of the outer VLAN tag (0x8100 or 0x88a8), 0 if untagged.
    pub vlan_tpid: u16,
    /// TCI of the outer and inner VLAN tags, [`VLAN_CFI`] set; 0 = no tag.
    pub vlan_tci: [u16; 2],

    // ---- L3 ---- 36 bytes
    /// IP source (IPv4-mapped for IPv4), or ARP sender protocol address.
    pub nw_src: [u8; 16],
    /// IP destination (IPv4-mapped for IPv4), or ARP target protocol address.
    pub nw_dst: [u8; 16],
    /// IP protocol / IPv6 last next header (44 for later IPv6 fragments, as OVS).
    pub nw_proto: u8,
    /// DSCP and ECN (IPv4 TOS byte, IPv6 traffic class).
    pub nw_tos: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub nw_ttl: u8,
    /// [`FLOW_NW_FRAG_ANY`] | [`FLOW_NW_FRAG_LATER`].
    pub nw_frag: u8,

    // ---- L4 ---- 40 bytes
    /// TCP/UDP/SCTP source port, or ICMP type.
    pub tp_src: u16,
    /// TCP/UDP/SCTP destination port, or ICMP code.
    pub tp_dst: u16,
    /// TCP flags (12 bits, as OVS).
    pub tcp_flags: u16,
    /// ARP operation.
    pub arp_op: u16,
    /// ARP sender hardware address, or ND source link-layer address.
    pub arp_sha: [u8; 6],
    /// ARP target hardware address, or ND target link-layer address.
    pub arp_tha: [u8; 6],
    /// ND target address (NS/NA).
    pub nd_target: [u8; 16],
    /// Explicit padding to a multiple of 8 bytes; always zero.
    pub pad: [u8; 4],
}

impl FlowKey {
    /// Size of the key in 64-bit words.
    pub const WORDS: usize = core::mem::size_of::<FlowKey>() / 8;

    /// The key as 64-bit words (host order), for masked compares and hashing.
    #[inline(always)]
    pub fn words(&self) -> &[u64; Self::WORDS] {
        zerocopy::transmute_ref!(self)
    }

    /// A 32-bit hash of the whole key: fast (one 64×64→128 multiply per word
    /// pair, independent so they pipeline), no allocation, deterministic
    /// across runs and hosts of the same endianness. Used for the Geneve UDP
    /// source port and the exact-match cache. Not keyed: it does not resist
    /// deliberate collisions.
    #[inline]
    pub fn hash(&self) -> u32 {
        hash_words(self.words())
    }
}

/// Per-pair constants (wyhash's secrets and odd multipliers); distinct so
/// that swapping two word pairs changes the hash.
const K: [u64; 10] = [
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
    0x5899_65cc_7537_4cc3,
    0x1d8e_4e27_c47d_124f,
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
];

/// 64×64→128 multiply, folded to 64 bits by xoring the halves (wyhash `mum`).
#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // taking the low and high halves is the point
fn folded_multiply(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn hash_words(w: &[u64; FlowKey::WORDS]) -> u32 {
    // Pair products are independent and summed (addition reassociates), so
    // the multiplies pipeline instead of forming a chain; each pair has its
    // own constants, so moving a value to another pair changes the hash.
    let mut acc = 0u64;
    let mut i = 0;
    while i + 1 < w.len() {
        let k = i / 2;
        acc = acc.wrapping_add(folded_multiply(w[i] ^ K[k % K.len()], w[i + 1] ^ K[(k + 1) % K.len()]));
        i += 2;
    }
    if i < w.len() {
        acc = acc.wrapping_add(folded_multiply(w[i] ^ K[3], K[4]));
    }
    let h = folded_multiply(acc ^ K[5], K[6]);
    let [a, b, c, d, e, f, g, hh] = h.to_le_bytes();
    u32::from_le_bytes([a, b, c, d]) ^ u32::from_le_bytes([e, f, g, hh])
}

const _: () = assert!(core::mem::size_of::<FlowKey>() % 8 == 0);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn layout_is_dense() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 144);
        assert_eq!(FlowKey::WORDS, 18);
        let k = FlowKey::default();
        assert!(k.words().iter().all(|&w| w == 0));
        assert_eq!(k.as_bytes().len(), 144);
    }

    #[test]
    fn words_see_every_field() {
        let mut k = FlowKey::default();
        k.nd_target[15] = 1;
        assert_ne!(k.words()[FlowKey::WORDS - 1], 0);
        let mut k = FlowKey::default();
        k.tun_src[0] = 1;
        assert_ne!(k.words()[0], 0);
        // the last word holds nd_target's tail and the zero padding
        assert_eq!(core::mem::offset_of!(FlowKey, pad), 140);
    }

    #[test]
    fn hash_distributes_single_bit_changes() {
        let base = FlowKey::default();
        let mut seen = HashSet::new();
        seen.insert(base.hash());
        let mut bytes = [0u8; 144];
        for i in 0..144 * 8 {
            bytes.fill(0);
            bytes[i / 8] = 1 << (i % 8);
            let k = FlowKey::read_from_bytes(&bytes[..]).unwrap();
            assert!(seen.insert(k.hash()), "collision at bit {i}");
        }
    }

    #[test]
    fn hash_fills_low_bits_evenly() {
        // An exact-match cache indexes with the low bits: 64k flows that
        // differ in address and port must fill 1024 buckets evenly.
        let mut buckets = [0u32; 1024];
        let mut k = FlowKey { dl_type: 0x0800, nw_proto: 6, ..FlowKey::default() };
        for a in 0..256u16 {
            for p in 0..256u16 {
                k.nw_src[15] = u8::try_from(a).unwrap();
                k.tp_src = p;
                buckets[usize::try_from(k.hash() & 1023).unwrap()] += 1;
            }
        }
        let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*min > 24 && *max < 104, "min {min} max {max} (mean 64)");
    }

    #[test]
    fn hash_spreads_ports_over_high_bits() {
        // The Geneve source port takes the top 14 bits: sequential L4
        // ports must not collapse onto a few values.
        let mut ports = HashSet::new();
        let mut k = FlowKey::default();
        for p in 0..4096u16 {
            k.tp_src = p;
            ports.insert(k.hash() >> 18);
        }
        assert!(ports.len() > 3000, "only {} distinct", ports.len());
    }
}
