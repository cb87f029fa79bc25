//! Wallet keys, Noise static keys and the binding between them.
//!
//! An [`Identity`] is one pseudonym of a node: an ed25519 wallet key (whose public key
//! derives the [`Address`]), an x25519 Noise static key, and the wallet's signature over
//! the Noise public key ([`Binding`], docs/protocol.md §2.2). The Noise key can be
//! rotated without changing the address. Secret keys never implement `Display` and
//! their `Debug` output is redacted.

use core::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::address::Address;

/// Domain separation for the Noise-key binding signature.
pub const BINDING_CONTEXT: &[u8] = b"metanet v1 noise key binding";

/// An ed25519 signature.
pub type Signature = [u8; 64];

/// Why a key or signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// An ed25519 wallet secret key.
pub struct WalletKey(SigningKey);

impl WalletKey {
    /// The key for a 32-byte secret seed (as stored in a key file).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        WalletKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for storage. Zeroed on drop.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The address of this key.
    pub fn address(&self) -> Address {
        self.public_key().address()
    }

    /// Sign `message` (callers domain-separate it first).
    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletKey({}, secret redacted)", self.address())
    }
}

/// An ed25519 wallet public key, validated as a curve point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parse 32 bytes; rejects encodings that are not curve points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The address derived from this key.
    pub fn address(&self) -> Address {
        Address::from_public_key(self.0.as_bytes())
    }

    /// Verify a signature strictly (no malleable or small-order forms).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex(&self.to_bytes()))
    }
}

/// An x25519 Noise static secret key.
pub struct NoiseKey(Zeroizing<[u8; 32]>);

impl NoiseKey {
    /// The key for 32 secret bytes (clamped by X25519 itself).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        NoiseKey(Zeroizing::new(*bytes))
    }

    /// The secret bytes, for storage and for the Noise handshake.
    pub fn secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The x25519 public key.
    pub fn public_key(&self) -> NoisePublicKey {
        let secret = x25519_dalek::StaticSecret::from(*self.0);
        NoisePublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl fmt::Debug for NoiseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoiseKey({:?}, secret redacted)", self.public_key())
    }
}

/// An x25519 Noise static public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NoisePublicKey(pub [u8; 32]);

impl fmt::Debug for NoisePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoisePublicKey({})", hex(&self.0))
    }
}

/// The wallet key's signature over a Noise static public key (docs/protocol.md §2.2):
/// `sign(BINDING_CONTEXT ‖ noise_public_key)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Binding(pub Signature);

impl Binding {
    /// Bind `noise` to `wallet`.
    pub fn sign(wallet: &WalletKey, noise: &NoisePublicKey) -> Self {
        Binding(wallet.sign(&binding_message(noise)))
    }

    /// Check that `wallet` signed `noise`.
    pub fn verify(&self, wallet: &PublicKey, noise: &NoisePublicKey) -> Result<(), KeyError> {
        wallet.verify(&binding_message(noise), &self.0)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Binding({}…)", hex(&self.0[..8]))
    }
}

fn binding_message(noise: &NoisePublicKey) -> [u8; BINDING_CONTEXT.len() + 32] {
    let mut m = [0u8; BINDING_CONTEXT.len() + 32];
    m[..BINDING_CONTEXT.len()].copy_from_slice(BINDING_CONTEXT);
    m[BINDING_CONTEXT.len()..].copy_from_slice(&noise.0);
    m
}

/// One local identity: wallet key, Noise static key and their binding.
#[derive(Debug)]
pub struct Identity {
    wallet: WalletKey,
    noise: NoiseKey,
    binding: Binding,
    address: Address,
}

impl Identity {
    /// Assemble an identity, signing a fresh binding.
    pub fn new(wallet: WalletKey, noise: NoiseKey) -> Self {
        let binding = Binding::sign(&wallet, &noise.public_key());
        let address = wallet.address();
        Identity {
            wallet,
            noise,
            binding,
            address,
        }
    }

    /// Assemble an identity with a caller-supplied binding, unchecked. Only for tests
    /// that must present a forged binding; a real identity uses [`Identity::new`].
    #[doc(hidden)]
    pub fn dangerous_with_binding(wallet: WalletKey, noise: NoiseKey, binding: Binding) -> Self {
        let address = wallet.address();
        Identity {
            wallet,
            noise,
            binding,
            address,
        }
    }

    /// A new identity from 64 bytes of caller-supplied randomness.
    pub fn generate(seed: &[u8; 64]) -> Self {
        let mut w = [0u8; 32];
        let mut n = [0u8; 32];
        w.copy_from_slice(&seed[..32]);
        n.copy_from_slice(&seed[32..]);
        let id = Identity::new(WalletKey::from_seed(&w), NoiseKey::from_bytes(&n));
        zeroize::Zeroize::zeroize(&mut w);
        zeroize::Zeroize::zeroize(&mut n);
        id
    }

    /// The wallet key.
    pub fn wallet(&self) -> &WalletKey {
        &self.wallet
    }

    /// The Noise static key.
    pub fn noise(&self) -> &NoiseKey {
        &self.noise
    }

    /// The binding of the Noise key to the wallet key.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The wallet public key.
    pub fn public_key(&self) -> PublicKey {
        self.wallet.public_key()
    }

    /// The address.
    pub fn address(&self) -> Address {
        self.address
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_verifies_only_for_its_keys() {
        let id = Identity::generate(&[3u8; 64]);
        let other = Identity::generate(&[4u8; 64]);
        let b = id.binding();
        assert!(b.verify(&id.public_key(), &id.noise().public_key()).is_ok());
        assert_eq!(
            b.verify(&other.public_key(), &id.noise().public_key()),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            b.verify(&id.public_key(), &other.noise().public_key()),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn debug_is_redacted() {
        let id = Identity::generate(&[5u8; 64]);
        let d = format!("{id:?}");
        assert!(!d.contains(&hex(id.noise().secret())));
        assert!(!d.contains(&hex(&id.wallet().seed()[..])));
    }
}
