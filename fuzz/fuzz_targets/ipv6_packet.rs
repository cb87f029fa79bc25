//! The IPv6 header view over arbitrary bytes: never panics, accepts exactly the
//! version-6 packets whose payload length matches, and agrees with `build_ipv6`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metanet_proto::ip::{self, Ipv6Packet, IPV6_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Ipv6Packet::new_checked(data) else {
        return;
    };
    assert_eq!(data[0] >> 4, 6);
    let payload = &data[IPV6_HEADER_LEN..];
    assert_eq!(
        usize::from(u16::from_be_bytes([data[4], data[5]])),
        payload.len()
    );
    let rebuilt = ip::build_ipv6(p.src(), p.dst(), payload);
    let q = Ipv6Packet::new_checked(&rebuilt).expect("build_ipv6 output parses");
    assert_eq!((q.src(), q.dst()), (p.src(), p.dst()));
    let _ = p.next_header();
});
