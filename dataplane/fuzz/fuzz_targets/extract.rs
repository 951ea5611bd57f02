//! Flow-key extraction must never panic and must report offsets inside the
//! frame, in order, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_dataplane::flow::{extract, FlowKey, Layout};

fuzz_target!(|frame: &[u8]| {
    let mut key = FlowKey::default();
    if let Ok(l) = extract(frame, 0, &mut key) {
        let len = frame.len();
        assert!(usize::from(l.l3) <= len);
        for off in [l.l4, l.l7, l.geneve] {
            assert!(off == Layout::ABSENT || (usize::from(off) <= len && off >= l.l3));
        }
    }
});
