//! `petrelctl trace`'s microflow parser: never panics on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_dataplane::ctl::microflow::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse(s);
    }
});
