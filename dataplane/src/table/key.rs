//! The classification key of the table runtime: the packet's [`FlowKey`]
//! plus OVN's logical metadata, as one array of 64-bit words.
//!
//! [`Meta`] mirrors the OpenFlow registers ovn-controller uses
//! (`include/ovn/logical-fields.h`), so the compiler maps OVN fields 1:1:
//! `metadata` is the logical datapath (`Datapath_Binding.tunnel_key`),
//! `reg0`–`reg9` the logical registers (`xxreg0` = reg0..reg3, `xreg0` =
//! reg0..reg1, high word first as in OVN), `reg10` the `MLF_*` flags,
//! `reg11`–`reg13` the conntrack zones, `reg14` the logical inport and
//! `reg15` the logical outport (`Port_Binding.tunnel_key`s).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::flow::FlowKey;

/// OVN's `MFF_LOG_FLAGS` register.
pub const REG_FLAGS: usize = 10;
/// OVN's `MFF_LOG_INPORT` register.
pub const REG_INPORT: usize = 14;
/// OVN's `MFF_LOG_OUTPORT` register.
pub const REG_OUTPORT: usize = 15;
/// `flags.loopback` (`MLF_ALLOW_LOOPBACK`): output to the inport is allowed.
pub const MLF_ALLOW_LOOPBACK: u32 = 1 << 0;

/// Logical metadata carried with a packet through the pipelines.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct Meta {
    /// Logical datapath: `Datapath_Binding.tunnel_key` (24 bits used).
    pub metadata: u64,
    /// OpenFlow-style registers 0..15 with OVN's assignments (module docs).
    pub regs: [u32; 16],
}

/// What the classifier matches: packet fields and logical metadata.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct Key {
    /// Packet header fields.
    pub flow: FlowKey,
    /// Logical metadata.
    pub meta: Meta,
}

impl Key {
    /// Size in 64-bit words.
    pub const WORDS: usize = core::mem::size_of::<Key>() / 8;

    /// The key as words, for masking and hashing.
    #[inline]
    pub fn words(&self) -> [u64; Self::WORDS] {
        let mut w = [0u64; Self::WORDS];
        w.as_mut_bytes().copy_from_slice(self.as_bytes());
        w
    }

    /// The logical inport (`reg14`).
    #[inline]
    pub fn inport(&self) -> u32 {
        self.meta.regs[REG_INPORT]
    }

    /// The logical outport (`reg15`).
    #[inline]
    pub fn outport(&self) -> u32 {
        self.meta.regs[REG_OUTPORT]
    }

    /// The logical datapath key.
    #[inline]
    pub fn datapath(&self) -> u32 {
        // Datapath keys are 24-bit tunnel keys; the upper bits are always zero.
        u32::try_from(self.meta.metadata & 0xff_ffff).unwrap_or(0)
    }
}

const _: () = assert!(core::mem::size_of::<Key>() % 8 == 0);

/// A field of [`Key`] that actions may write: a byte range of the key.
///
/// Packet fields written by actions change only the key while the pipeline
/// runs; the packet is rewritten once per output from the difference between
/// the final key and the received one (as OVS commits `set_field`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `eth.src`.
    EthSrc,
    /// `eth.dst`.
    EthDst,
    /// `ip4.src` / `ip6.src` (16 bytes; IPv4 as IPv4-mapped).
    IpSrc,
    /// `ip4.dst` / `ip6.dst`.
    IpDst,
    /// `ip.ttl`.
    IpTtl,
    /// `ip.dscp` and `ip.ecn` (the TOS byte).
    IpTos,
    /// `tcp.src`/`udp.src`/`sctp.src`, `icmp4.type`.
    TpSrc,
    /// `tcp.dst`/`udp.dst`/`sctp.dst`, `icmp4.code`.
    TpDst,
    /// `arp.op`.
    ArpOp,
    /// `arp.sha`, `nd.sll`.
    ArpSha,
    /// `arp.tha`, `nd.tll`.
    ArpTha,
    /// Logical datapath.
    Metadata,
    /// Register 0..15.
    Reg(u8),
    /// `eth.type` (match only: no action writes it).
    EthType,
    /// `vlan.tci` of the outer tag, with the present bit (0x1000) as OVN's
    /// `vlan.present`.
    VlanTci,
    /// `ip.proto` (match only).
    IpProto,
    /// `ip.frag`: bit 0 any fragment, bit 1 a later fragment (match only).
    IpFrag,
    /// `tcp.flags` (match only).
    TcpFlags,
    /// `nd.target`.
    NdTarget,
    /// `ip6.label` (match only).
    Ipv6Label,
}

impl Field {
    /// (byte offset in [`Key`], byte length).
    pub fn span(self) -> (usize, usize) {
        use core::mem::offset_of;
        let f = offset_of!(Key, flow);
        let m = offset_of!(Key, meta);
        match self {
            Field::EthSrc => (f + offset_of!(FlowKey, dl_src), 6),
            Field::EthDst => (f + offset_of!(FlowKey, dl_dst), 6),
            Field::IpSrc => (f + offset_of!(FlowKey, nw_src), 16),
            Field::IpDst => (f + offset_of!(FlowKey, nw_dst), 16),
            Field::IpTtl => (f + offset_of!(FlowKey, nw_ttl), 1),
            Field::IpTos => (f + offset_of!(FlowKey, nw_tos), 1),
            Field::TpSrc => (f + offset_of!(FlowKey, tp_src), 2),
            Field::TpDst => (f + offset_of!(FlowKey, tp_dst), 2),
            Field::ArpOp => (f + offset_of!(FlowKey, arp_op), 2),
            Field::ArpSha => (f + offset_of!(FlowKey, arp_sha), 6),
            Field::ArpTha => (f + offset_of!(FlowKey, arp_tha), 6),
            Field::Metadata => (m + offset_of!(Meta, metadata), 8),
            Field::Reg(r) => (m + offset_of!(Meta, regs) + 4 * usize::from(r.min(15)), 4),
            Field::EthType => (f + offset_of!(FlowKey, dl_type), 2),
            Field::VlanTci => (f + offset_of!(FlowKey, vlan_tci), 2),
            Field::IpProto => (f + offset_of!(FlowKey, nw_proto), 1),
            Field::IpFrag => (f + offset_of!(FlowKey, nw_frag), 1),
            Field::TcpFlags => (f + offset_of!(FlowKey, tcp_flags), 2),
            Field::NdTarget => (f + offset_of!(FlowKey, nd_target), 16),
            Field::Ipv6Label => (f + offset_of!(FlowKey, ipv6_label), 4),
        }
    }

    /// Whether writing the field changes packet bytes (not just metadata).
    pub fn is_packet_field(self) -> bool {
        !matches!(self, Field::Metadata | Field::Reg(_))
    }

    /// Reads the field as a big-endian-ordered value in the low bytes.
    ///
    /// Multi-byte integer fields of the key are host-order integers (a
    /// `u16` port), byte-array fields are network order; this returns both
    /// as the number a user writes (`tcp.dst == 80`, `eth.src == 0x02...`).
    pub fn get(self, key: &Key) -> u128 {
        let (off, len) = self.span();
        let b = &key.as_bytes()[off..off + len];
        if self.is_int() {
            let mut v = [0u8; 16];
            v[..len].copy_from_slice(b);
            u128::from_le_bytes(v) & mask_of(len)
        } else {
            b.iter().fold(0u128, |a, x| (a << 8) | u128::from(*x))
        }
    }

    /// Writes `value` under `mask` (both in [`Field::get`]'s numbering).
    pub fn set(self, key: &mut Key, value: u128, mask: u128) {
        let cur = self.get(key);
        let new = (cur & !mask) | (value & mask);
        let (off, len) = self.span();
        let b = &mut key.as_mut_bytes()[off..off + len];
        if self.is_int() {
            b.copy_from_slice(&new.to_le_bytes()[..len]);
        } else {
            let be = new.to_be_bytes();
            b.copy_from_slice(&be[16 - len..]);
        }
    }

    /// Whether the key stores the field as a native-endian integer.
    fn is_int(self) -> bool {
        matches!(
            self,
            Field::IpTtl
                | Field::IpTos
                | Field::TpSrc
                | Field::TpDst
                | Field::ArpOp
                | Field::Metadata
                | Field::Reg(_)
                | Field::EthType
                | Field::VlanTci
                | Field::IpProto
                | Field::IpFrag
                | Field::TcpFlags
                | Field::Ipv6Label
        ) && cfg!(target_endian = "little")
    }

    /// Width in bits.
    pub fn bits(self) -> u32 {
        u32::try_from(self.span().1 * 8).unwrap_or(128)
    }
}

fn mask_of(len: usize) -> u128 {
    if len >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * len)) - 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_and_write_the_right_bytes() {
        let mut k = Key::default();
        Field::EthDst.set(&mut k, 0x0200_0000_000b, u128::MAX);
        assert_eq!(k.flow.dl_dst, [2, 0, 0, 0, 0, 0xb]);
        Field::TpDst.set(&mut k, 80, 0xffff);
        assert_eq!(k.flow.tp_dst, 80);
        Field::Reg(14).set(&mut k, 7, u128::MAX);
        assert_eq!(k.inport(), 7);
        Field::Reg(10).set(&mut k, 0b100, 0b100);
        Field::Reg(10).set(&mut k, 0b001, 0b001);
        assert_eq!(k.meta.regs[REG_FLAGS], 0b101, "masked writes keep other bits");
        Field::Metadata.set(&mut k, 5, u128::MAX);
        assert_eq!(k.datapath(), 5);
        assert_eq!(Field::EthDst.get(&k), 0x0200_0000_000b);
        assert_eq!(Field::Reg(14).get(&k), 7);
        let ip: u128 = std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().to_bits();
        Field::IpSrc.set(&mut k, ip, u128::MAX);
        assert_eq!(k.flow.nw_src, std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets());
        assert_eq!(Key::WORDS * 8, core::mem::size_of::<Key>());
        assert_eq!(k.words().len(), Key::WORDS);
    }
}
