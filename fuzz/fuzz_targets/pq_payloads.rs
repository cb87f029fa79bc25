//! The hybrid handshake's new payloads (docs/protocol.md §5.7) over arbitrary bytes.
//! The first byte picks what the rest feeds:
//!
//! - 0: `Extensions::decode` (the initiation's TLV extensions, the ML-KEM key among
//!   them); whatever decodes re-encodes canonically once unknown types are gone.
//! - 1: the response views: `ResponsePacket` (classical or hybrid) agrees with
//!   `classify`, and whatever parses re-emits to the same bytes.
//! - 2: an encapsulation to an arbitrary "encapsulation key" (mostly failing the FIPS
//!   203 modulus check): an error or a ciphertext, never a panic.
//! - 3: a fixed key pair decapsulates an arbitrary "ciphertext": never a panic.
//! - 4: a fixed initiator's hybrid attempt reads an arbitrary response (header, a
//!   ciphertext, Noise message 2): refused with an error, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metanet_proto::handshake::{self, Extensions, Remote};
use metanet_proto::pq::{self, PqMode};
use metanet_proto::wire::{self, Kind, ResponsePacket, ResponseRepr};
use metanet_proto::{Identity, UnixTime};

fn ids() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| (Identity::generate(&[0x51; 64]), Identity::generate(&[0x52; 64])))
}

fn keypair() -> &'static pq::KeyPair {
    static KP: OnceLock<pq::KeyPair> = OnceLock::new();
    KP.get_or_init(|| pq::KeyPair::from_seed(&[0x53; 64]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => {
            if let Ok(ext) = Extensions::decode(rest) {
                assert_eq!(Extensions::decode(&ext.encode()), Ok(ext));
            }
        }
        1 => {
            let kind = wire::classify(rest);
            let response = ResponsePacket::new_checked(rest);
            assert_eq!(response.is_ok(), kind == Ok(Kind::Response));
            if let Ok(p) = response {
                let r = ResponseRepr::parse(&p);
                assert_eq!(p.kem_ciphertext().is_some(), p.hybrid());
                assert_eq!(r.buffer_len(), rest.len());
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(&mut out);
                assert_eq!(out, rest);
            }
        }
        2 => {
            let (m, ek) = rest.split_at(rest.len().min(32));
            let mut seed = [0u8; 32];
            seed[..m.len()].copy_from_slice(m);
            if let Ok((ct, _)) = pq::encapsulate(ek, &seed) {
                assert_eq!(ek.len(), pq::EK_LEN);
                assert_eq!(ct.len(), pq::CT_LEN);
            }
        }
        3 => {
            let r = keypair().decapsulate(rest);
            assert_eq!(r.is_ok(), rest.len() == pq::CT_LEN);
        }
        _ => {
            let (a, b) = ids();
            let remote = Remote {
                public_key: b.public_key(),
                noise_key: b.noise().public_key(),
            };
            let Ok((state, _)) = handshake::initiate_pq(
                a,
                remote,
                &[0; 32],
                1,
                UnixTime::from_secs(5),
                None,
                [7; 32],
                false,
                &Extensions::default(),
                PqMode::Auto,
                &[9; 64],
            ) else {
                return;
            };
            // Make it a response of the hybrid length whatever the input's length.
            let mut msg = vec![0u8; wire::RESPONSE_HYBRID_LEN];
            let n = rest.len().min(msg.len());
            msg[..n].copy_from_slice(&rest[..n]);
            msg[0] = wire::kind::RESPONSE;
            msg[1] = wire::cipher::CHOSE_ML_KEM_512 | (msg[1] & 1);
            msg[2..4].fill(0);
            if let Ok(p) = ResponsePacket::new_checked(&msg[..]) {
                assert!(state.handle_response(&p).is_err());
            }
        }
    }
});
