//! The data ciphers (docs/protocol.md §6.1): what the handshake negotiates and the
//! transport uses. Its own module, so the handshake and the session both depend on it
//! and not on each other.

use core::fmt;

use ring::aead::{self, AES_256_GCM, CHACHA20_POLY1305};

use crate::wire;

/// The AEAD that protects data messages (docs/protocol.md §6.1). Both take the 32-byte
/// keys of the Noise split, the same 12-byte nonce and add a 16-byte tag, so the wire
/// format is the same; the handshake decides which one a keypair uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cipher {
    /// RFC 8439; the protocol's default, fast everywhere.
    #[default]
    ChaCha20Poly1305,
    /// AES-256 in GCM mode; several times faster than ChaCha20-Poly1305 on CPUs with AES
    /// and carry-less multiply instructions, slower without them.
    Aes256Gcm,
}

impl Cipher {
    /// The response's choice byte for this cipher.
    pub fn choice(self) -> u8 {
        match self {
            Cipher::ChaCha20Poly1305 => wire::cipher::CHACHA20_POLY1305,
            Cipher::Aes256Gcm => wire::cipher::AES_256_GCM,
        }
    }

    /// The cipher a response's choice byte names (`None`: not a defined choice).
    pub fn from_choice(b: u8) -> Option<Cipher> {
        match b {
            wire::cipher::CHACHA20_POLY1305 => Some(Cipher::ChaCha20Poly1305),
            wire::cipher::AES_256_GCM => Some(Cipher::Aes256Gcm),
            _ => None,
        }
    }

    /// Name as in configuration and status output.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    pub(crate) fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
