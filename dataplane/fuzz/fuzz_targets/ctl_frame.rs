//! The control socket's frame reader and request decoder: never panic,
//! never allocate past the cap, on any byte stream a client may send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_dataplane::ctl::proto::{read_frame, Request};

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while let Ok(f) = read_frame(&mut r, 1 << 20) {
        let _ = serde_json::from_slice::<Request>(&f.body);
    }
});
