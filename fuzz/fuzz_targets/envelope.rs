//! Signed envelopes. The first byte picks a mode:
//!
//! - even: open the rest as an envelope for the peer-record purpose and for the purpose
//!   and type it claims (never panics; random bytes never verify);
//! - odd: seal the rest with a fixed identity, under a purpose taken from the input,
//!   and check that opening gives back exactly the signer and payload, and that any
//!   other purpose or type is refused; a payload over 65535 bytes must be refused by
//!   `seal` rather than truncated.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metanet_proto::record::{self, Envelope, PEER_RECORD_PURPOSE, PEER_RECORD_TYPE};
use metanet_proto::Identity;

fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::generate(&[0x5e; 64]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = Envelope::open(rest, PEER_RECORD_PURPOSE, PEER_RECORD_TYPE);
        // Open under whatever purpose and type the bytes claim, so parsing gets past
        // the purpose check to the key, payload and signature.
        if let (Some(&plen), true) = (rest.get(1), rest.len() > 4) {
            let plen = usize::from(plen);
            if let (Some(purpose), Some(ty)) = (rest.get(2..2 + plen), rest.get(2 + plen..4 + plen))
            {
                if let Ok(purpose) = std::str::from_utf8(purpose) {
                    let ty = u16::from_be_bytes([ty[0], ty[1]]);
                    let _ = Envelope::open(rest, purpose, ty);
                }
            }
        }
        return;
    }
    // Seal mode: `plen u8 ‖ purpose ‖ type u16 ‖ payload`.
    let Some((&plen, rest)) = rest.split_first() else {
        return;
    };
    let plen = usize::from(plen).min(rest.len());
    let (purpose, rest) = rest.split_at(plen);
    let Ok(purpose) = std::str::from_utf8(purpose) else {
        return;
    };
    let Some((ty, payload)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let ty = u16::from_be_bytes(*ty);
    let id = identity();
    let sealed = match Envelope::seal(id, purpose, ty, payload) {
        Ok(sealed) => sealed,
        // Refused only when a length prefix cannot hold the field, never truncated.
        Err(record::Error::FieldTooLong { field, len, max }) => {
            assert!(len > max);
            let actual = if field == "purpose" {
                purpose.len()
            } else {
                payload.len()
            };
            assert_eq!(len, actual);
            return;
        }
        Err(e) => panic!("seal failed: {e}"),
    };
    match Envelope::open(&sealed, purpose, ty) {
        Ok(env) => {
            assert_eq!(env.signer, id.public_key());
            assert_eq!(env.payload, payload);
        }
        Err(record::Error::TooLarge(n)) => {
            assert_eq!(n, sealed.len());
            assert!(n > record::MAX_RECORD_LEN);
        }
        Err(e) => panic!("own envelope refused: {e}"),
    }
    if sealed.len() <= record::MAX_RECORD_LEN {
        assert_eq!(
            Envelope::open(&sealed, purpose, ty.wrapping_add(1)),
            Err(record::Error::WrongPurpose)
        );
        let other = format!("{purpose}x");
        if other.len() <= usize::from(u8::MAX) {
            assert_eq!(
                Envelope::open(&sealed, &other, ty),
                Err(record::Error::WrongPurpose)
            );
        }
    }
});
