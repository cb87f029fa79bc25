//! Address text parsing: never panics, and anything accepted is the canonical text of
//! the address it decodes to (in either case).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metanet_proto::Address;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = text.parse::<Address>() {
        assert_eq!(a.to_string(), text.to_ascii_lowercase());
        assert_eq!(a.to_string().parse::<Address>(), Ok(a));
    }
});
