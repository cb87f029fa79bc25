//! Signals (docs/protocol.md §10.1) over arbitrary bytes: parsing never panics, and
//! whatever parses re-encodes to the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metanet_proto::signal::{self, Signal};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Signal::parse(data) {
        assert!(signal::is_signal(data));
        assert_eq!(s.encode(), data);
    }
});
