//! Geneve decapsulation of anything `extract` calls Geneve: never panics,
//! leaves the packet unchanged on error, and yields an Ethernet frame that
//! is a suffix of the input on success.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_dataplane::action::geneve::{geneve_decap, verify_outer_checksums};
use petrel_dataplane::buf::{PacketBuf, VecBuf};
use petrel_dataplane::flow::{extract, FlowKey};
use petrel_dataplane::wire::ChecksumCaps;

fuzz_target!(|frame: &[u8]| {
    let mut key = FlowKey::default();
    let Ok(layout) = extract(frame, 0, &mut key) else { return };
    if !layout.is_geneve() {
        return;
    }
    let mut b = VecBuf::from_packet(frame);
    let _ = verify_outer_checksums(&b, &layout, &ChecksumCaps::software());
    match geneve_decap(&mut b, &layout) {
        Ok(_) => {
            assert!(b.len() >= 14);
            assert!(frame.windows(b.len()).any(|w| w == b.data()), "inner frame comes from the packet");
        }
        Err(_) => assert_eq!(b.data(), frame, "unchanged on error"),
    }
});
