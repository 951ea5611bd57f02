//! VLAN push, pop and VID rewrite (IEEE 802.1Q), in place.
//!
//! Push and pop move only the 12 MAC address bytes (into the headroom, or
//! over the removed tag) and never touch the payload, like OVS
//! `eth_push_vlan`/`eth_pop_vlan` and DPDK `rte_vlan_insert`.

use crate::buf::PacketBuf;
use crate::drop::DropReason;
use crate::wire::ethernet::EtherType;
use crate::wire::vlan;

/// Length of the two MAC addresses that precede a tag.
const MACS: usize = 12;

/// Inserts a VLAN tag `(tpid, tci)` as the outermost tag.
///
/// `tpid` is normally 0x8100 (or 0x88a8 for a QinQ service tag); `tci` is
/// written as given (PCP, DEI, VID).
///
/// # Errors
/// [`DropReason::EthTruncated`] if the frame is shorter than an Ethernet
/// header; [`DropReason::NoHeadroom`] if 4 bytes cannot be prepended. The
/// packet is unchanged on error.
#[inline]
pub fn vlan_push<B: PacketBuf + ?Sized>(buf: &mut B, tpid: u16, tci: u16) -> Result<(), DropReason> {
    if buf.len() < MACS + 2 {
        return Err(DropReason::EthTruncated);
    }
    buf.prepend(vlan::TAG_LEN).map_err(|_| DropReason::NoHeadroom)?;
    let d = buf.data_mut();
    d.copy_within(vlan::TAG_LEN..vlan::TAG_LEN + MACS, 0);
    d[MACS..MACS + 2].copy_from_slice(&tpid.to_be_bytes());
    d[MACS + 2..MACS + 4].copy_from_slice(&tci.to_be_bytes());
    Ok(())
}

/// Removes the outermost VLAN tag (TPID 0x8100 or 0x88a8) and returns its TCI.
///
/// # Errors
/// [`DropReason::VlanNoTag`] if the frame is untagged (or shorter than an
/// Ethernet header); [`DropReason::VlanTruncated`] if the tag is cut short.
/// The packet is unchanged on error.
#[inline]
pub fn vlan_pop<B: PacketBuf + ?Sized>(buf: &mut B) -> Result<u16, DropReason> {
    let tci = outer_tci(buf.data())?;
    let d = buf.data_mut();
    d.copy_within(0..MACS, vlan::TAG_LEN);
    buf.adj(vlan::TAG_LEN).map_err(|_| DropReason::VlanTruncated)?;
    Ok(tci)
}

/// Rewrites the VID of the outermost VLAN tag, keeping PCP and DEI; bits
/// of `vid` above the 12-bit VID are ignored.
///
/// # Errors
/// As [`vlan_pop`]; the packet is unchanged on error.
#[inline]
pub fn vlan_set_vid<B: PacketBuf + ?Sized>(buf: &mut B, vid: u16) -> Result<(), DropReason> {
    let tci = outer_tci(buf.data())?;
    let tci = (tci & !vlan::VID_MASK) | (vid & vlan::VID_MASK);
    buf.data_mut()[MACS + 2..MACS + 4].copy_from_slice(&tci.to_be_bytes());
    Ok(())
}

/// The TCI of the outermost tag, after checking there is a whole one.
#[inline(always)]
fn outer_tci(d: &[u8]) -> Result<u16, DropReason> {
    match d.get(MACS..MACS + 6) {
        Some(&[t0, t1, c0, c1, _, _]) if EtherType(u16::from_be_bytes([t0, t1])).is_vlan() => {
            Ok(u16::from_be_bytes([c0, c1]))
        }
        Some(_) => Err(DropReason::VlanNoTag),
        None => match d.get(MACS..MACS + 2) {
            Some(&[t0, t1]) if EtherType(u16::from_be_bytes([t0, t1])).is_vlan() => Err(DropReason::VlanTruncated),
            _ => Err(DropReason::VlanNoTag),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::buf::VecBuf;

    #[rustfmt::skip]
    static UNTAGGED: [u8; 18] = [
        // Ethernet: dst, src, IPv4
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x08, 0x00,
        // payload
        0x45, 0x00, 0x00, 0x14,
    ];

    #[rustfmt::skip]
    static TAGGED: [u8; 22] = [
        // Ethernet: dst, src
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
        // 802.1Q tag: TPID 0x8100, PCP 3, VID 100
        0x81, 0x00, 0x60, 0x64,
        // EtherType IPv4, payload
        0x08, 0x00, 0x45, 0x00, 0x00, 0x14,
    ];

    #[test]
    fn push_then_pop_restores_the_frame() {
        let mut b = VecBuf::from_packet(&UNTAGGED);
        vlan_push(&mut b, 0x8100, 0x6064).unwrap();
        assert_eq!(b.data(), &TAGGED);
        assert_eq!(vlan_pop(&mut b).unwrap(), 0x6064);
        assert_eq!(b.data(), &UNTAGGED);
    }

    #[test]
    fn qinq_push_and_pop_order() {
        let mut b = VecBuf::from_packet(&TAGGED);
        vlan_push(&mut b, 0x88a8, 0x0007).unwrap();
        assert_eq!(&b.data()[12..20], &[0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x60, 0x64]);
        assert_eq!(vlan_pop(&mut b).unwrap(), 7);
        assert_eq!(b.data(), &TAGGED);
    }

    #[test]
    fn set_vid_keeps_pcp() {
        let mut b = VecBuf::from_packet(&TAGGED);
        vlan_set_vid(&mut b, 0xf123).unwrap();
        assert_eq!(&b.data()[14..16], &[0x61, 0x23]);
    }

    #[test]
    fn errors_leave_the_packet_unchanged() {
        let mut b = VecBuf::from_packet(&UNTAGGED);
        assert_eq!(vlan_pop(&mut b), Err(DropReason::VlanNoTag));
        assert_eq!(vlan_set_vid(&mut b, 1), Err(DropReason::VlanNoTag));
        assert_eq!(b.data(), &UNTAGGED);

        let mut b = VecBuf::from_packet(&TAGGED[..15]);
        assert_eq!(vlan_pop(&mut b), Err(DropReason::VlanTruncated));
        assert_eq!(b.data(), &TAGGED[..15]);

        let mut b = VecBuf::new(&UNTAGGED, 3, 0);
        assert_eq!(vlan_push(&mut b, 0x8100, 1), Err(DropReason::NoHeadroom));
        assert_eq!(b.data(), &UNTAGGED);

        let mut b = VecBuf::from_packet(&UNTAGGED[..13]);
        assert_eq!(vlan_push(&mut b, 0x8100, 1), Err(DropReason::EthTruncated));
        assert_eq!(vlan_pop(&mut b), Err(DropReason::VlanNoTag));
    }

    #[test]
    fn pop_needs_only_the_tag() {
        // a tagged frame with nothing after the inner EtherType still pops
        let mut b = VecBuf::from_packet(&TAGGED[..18]);
        assert_eq!(vlan_pop(&mut b).unwrap(), 0x6064);
        assert_eq!(b.data(), &UNTAGGED[..14]);
    }
}
