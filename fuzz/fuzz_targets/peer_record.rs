//! `PeerRecord::verify` under both lookup kinds. The first byte picks a mode:
//!
//! - bit 0: look up by address (0) or by overlay IPv6 prefix (1);
//! - bit 1: the rest is the raw signed record (0), or a payload that a fixed identity
//!   signs here (1), so that the payload decoder is reached at all;
//! - bit 2 (with bit 1): the payload starts with the identity's real Noise key and
//!   binding, so that decoding gets past the binding check to the lists and expiry.
//!
//! Whatever verifies is canonical: signing it again gives the same bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metanet_proto::record::{Envelope, Lookup, PeerRecord, PEER_RECORD_PURPOSE, PEER_RECORD_TYPE};
use metanet_proto::{Identity, UnixTime};

const NOW: u64 = 1_800_000_000;

fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::generate(&[0x7a; 64]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let id = identity();
    let lookup = if mode & 1 == 0 {
        Lookup::Address(id.address())
    } else {
        Lookup::Ipv6(id.address().ipv6_prefix())
    };
    let now = UnixTime::from_secs(NOW);
    if mode & 2 == 0 {
        if let Ok(rec) = PeerRecord::verify(rest, lookup, now) {
            assert_eq!(rec.sign(id).as_deref(), Ok(rest));
        }
        return;
    }
    let mut payload = Vec::with_capacity(96 + rest.len());
    if mode & 4 != 0 {
        payload.extend_from_slice(&id.noise().public_key().0);
        payload.extend_from_slice(&id.binding().0);
    }
    payload.extend_from_slice(rest);
    let Ok(signed) = Envelope::seal(id, PEER_RECORD_PURPOSE, PEER_RECORD_TYPE, &payload) else {
        assert!(
            payload.len() > usize::from(u16::MAX),
            "seal refused a fitting payload"
        );
        return;
    };
    if let Ok(rec) = PeerRecord::verify(&signed, lookup, now) {
        assert_eq!(rec.public_key, id.public_key());
        assert!(rec.not_after > NOW);
        assert_eq!(rec.sign(id), Ok(signed));
    }
});
