//! Fuzz target: every byte string decodes to a message or a typed error, never a panic, and
//! whatever decodes re-encodes (in the version it came in) to the very same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = common::Message::decode(data) {
        // In the payload's own version (1 and 2 are still decoded, 3 already is).
        let again = m
            .encode_as(data[0] >> 4)
            .expect("a decoded message encodes in its version");
        assert_eq!(again.as_slice(), data);
    }
    // Topic parsing sees attacker-chosen strings too.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = common::topic::parse_topic(s);
        let _ = common::duration::parse_duration(s);
    }
});
