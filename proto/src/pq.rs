//! The post-quantum part of the hybrid handshake (docs/protocol.md §5.7): an ephemeral
//! ML-KEM-512 key exchange (FIPS 203, RustCrypto `ml-kem`) whose shared secret is mixed
//! into Noise's psk2 together with the classical psk2 value (base psk, or the network
//! psk of a closed group).
//!
//! Why ML-KEM-512: every handshake message must fit the 1200-byte datagram rule (and so
//! the IPv6 minimum MTU with headers). With ML-KEM-512 (ek 800 B, ct 768 B) the hybrid
//! initiation is 1043 bytes (1062 with an epoch extension) and the hybrid response 956;
//! ML-KEM-768 (ek 1184 B, ct 1088 B) would make them about 1424 and 1276 bytes.
//!
//! All randomness comes in from the caller (the node's seeded generator), so the
//! simulator is deterministic and vectors can be frozen.

use core::fmt;
use core::str::FromStr;

use ml_kem::array::Array;
use ml_kem::{Decapsulate, KeyExport, MlKem512};
use zeroize::{Zeroize, Zeroizing};

use crate::handshake::Psk;

/// Encapsulation key length of ML-KEM-512.
pub const EK_LEN: usize = 800;
/// Ciphertext length of ML-KEM-512.
pub const CT_LEN: usize = 768;
/// Shared secret length.
pub const SS_LEN: usize = 32;
/// A KEM shared secret, zeroized on drop.
pub type SharedSecret = Zeroizing<[u8; SS_LEN]>;
/// Key derivation context of the hybrid psk2 value.
pub const HYBRID_PSK_CONTEXT: &str = "metanet v1 hybrid psk ml-kem-512";

/// Whether an identity uses the hybrid handshake (`metanetd --pq`, config `pq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PqMode {
    /// Offer ML-KEM as initiator (falling back to classical when a hybrid attempt gets
    /// no answer); as responder answer an offer hybrid and accept classical ones.
    #[default]
    Auto,
    /// Offer only hybrid handshakes and refuse classical ones in both directions.
    Required,
    /// Never offer; as responder ignore an offer and answer classically.
    Off,
}

impl PqMode {
    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PqMode::Auto => "auto",
            PqMode::Required => "required",
            PqMode::Off => "off",
        }
    }
}

impl fmt::Display for PqMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PqMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(PqMode::Auto),
            "required" => Ok(PqMode::Required),
            "off" => Ok(PqMode::Off),
            other => Err(format!("pq must be auto, required or off, not {other:?}")),
        }
    }
}

/// The KEM a session's handshake used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kem {
    /// ML-KEM-512 (FIPS 203).
    MlKem512,
}

impl Kem {
    /// Its name in status output (`peers --json` field `pq`).
    pub fn name(self) -> &'static str {
        match self {
            Kem::MlKem512 => "ml-kem-512",
        }
    }
}

impl fmt::Display for Kem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a KEM operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KemError {
    #[error("ML-KEM encapsulation key has the wrong length")]
    KeyLength,
    #[error("ML-KEM encapsulation key fails the FIPS 203 modulus check")]
    InvalidKey,
    #[error("ML-KEM ciphertext has the wrong length")]
    CiphertextLength,
}

/// An initiator's ephemeral ML-KEM-512 key pair. The decapsulation key zeroizes itself
/// on drop (ml-kem's `zeroize` feature).
pub struct KeyPair {
    dk: ml_kem::DecapsulationKey<MlKem512>,
    ek: Box<[u8; EK_LEN]>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

impl KeyPair {
    /// The key pair of a 64-byte seed (FIPS 203 `ML-KEM.KeyGen_internal(d, z)`).
    pub fn from_seed(seed: &[u8; 64]) -> KeyPair {
        let mut s = ml_kem::Seed::default();
        s.copy_from_slice(seed);
        let dk = ml_kem::DecapsulationKey::<MlKem512>::from_seed(s);
        s.as_mut_slice().zeroize();
        let mut ek = Box::new([0u8; EK_LEN]);
        ek.copy_from_slice(dk.encapsulation_key().to_bytes().as_slice());
        KeyPair { dk, ek }
    }

    /// The encoded encapsulation key.
    pub fn encapsulation_key(&self) -> &[u8; EK_LEN] {
        &self.ek
    }

    /// The shared secret of `ct`. A ciphertext that was not made for this key gives an
    /// unrelated secret (implicit rejection), so the handshake's AEAD fails later.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<SharedSecret, KemError> {
        let ct: &[u8; CT_LEN] = ct.try_into().map_err(|_| KemError::CiphertextLength)?;
        let c = ml_kem::Ciphertext::<MlKem512>::from(*ct);
        let mut k = self.dk.decapsulate(&c);
        let out = Zeroizing::new(<[u8; SS_LEN]>::from(k));
        k.as_mut_slice().zeroize();
        Ok(out)
    }
}

/// Encapsulate to the encoded key `ek` with the 32 random bytes `m` (FIPS 203
/// `ML-KEM.Encaps_internal`). The key is validated first (length and modulus check).
pub fn encapsulate(ek: &[u8], m: &[u8; 32]) -> Result<(Box<[u8; CT_LEN]>, SharedSecret), KemError> {
    let ek: &[u8; EK_LEN] = ek.try_into().map_err(|_| KemError::KeyLength)?;
    let key = Array::from(*ek);
    let ek = ml_kem::EncapsulationKey::<MlKem512>::new(&key).map_err(|_| KemError::InvalidKey)?;
    let mut mm = Array::from(*m);
    let (c, mut k) = ek.encapsulate_deterministic(&mm);
    mm.as_mut_slice().zeroize();
    let mut ct = Box::new([0u8; CT_LEN]);
    ct.copy_from_slice(c.as_slice());
    let ss = Zeroizing::new(<[u8; SS_LEN]>::from(k));
    k.as_mut_slice().zeroize();
    Ok((ct, ss))
}

/// The psk2 value of a hybrid handshake (§5.7):
/// `BLAKE3-derive-key("metanet v1 hybrid psk ml-kem-512", classical ‖ ss ‖ ct ‖ ek)`,
/// where `classical` is the psk2 value the classical handshake would use (the base psk,
/// or [`crate::handshake::network_psk`] of base and network key). Breaking the session
/// needs both the classical value and the KEM secret; the context names the KEM, and
/// `ct` and `ek` bind the secret to this exchange.
pub fn hybrid_psk(classical: &Psk, ss: &[u8; SS_LEN], ct: &[u8], ek: &[u8]) -> Psk {
    let mut h = blake3::Hasher::new_derive_key(HYBRID_PSK_CONTEXT);
    h.update(classical);
    h.update(ss);
    h.update(ct);
    h.update(ek);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_implicit_rejection() {
        let kp = KeyPair::from_seed(&[3; 64]);
        let (ct, ss) = encapsulate(kp.encapsulation_key(), &[4; 32]).unwrap();
        assert_eq!(*kp.decapsulate(&ct[..]).unwrap(), *ss);
        let mut bad = ct.clone();
        bad[5] ^= 1;
        assert_ne!(*kp.decapsulate(&bad[..]).unwrap(), *ss);
        assert_eq!(
            kp.decapsulate(&ct[..10]).err(),
            Some(KemError::CiphertextLength)
        );
    }

    #[test]
    fn bad_keys_are_errors_not_panics() {
        assert_eq!(
            encapsulate(&[0; 10], &[0; 32]).err(),
            Some(KemError::KeyLength)
        );
        // Every 12-bit coefficient 0xfff >= q = 3329: fails the modulus check.
        assert_eq!(
            encapsulate(&[0xff; EK_LEN], &[0; 32]).err(),
            Some(KemError::InvalidKey)
        );
    }

    #[test]
    fn mode_names() {
        for m in [PqMode::Auto, PqMode::Required, PqMode::Off] {
            assert_eq!(m.as_str().parse::<PqMode>(), Ok(m));
        }
        assert!("on".parse::<PqMode>().is_err());
        assert_eq!(Kem::MlKem512.name(), "ml-kem-512");
    }
}
