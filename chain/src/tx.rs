//! Transactions: the secp256k1 funding key that pays for submissions, and legacy
//! (EIP-155, chain-id bound) transactions signed with it for `eth_sendRawTransaction`.
//!
//! The funding key is an ordinary EVM account key, unrelated to any wallet identity:
//! it only pays gas, and the chain learns nothing about which identities it pays for
//! beyond the claims themselves. Its file holds 64 hex digits (an optional `0x`,
//! surrounding whitespace and `#` comment lines are allowed) and must not be readable
//! by group or others.

use std::fmt;
use std::path::{Path, PathBuf};

use k256::ecdsa::SigningKey;
use zeroize::Zeroizing;

use crate::evm::{decode_hex_digits, keccak256, EvmAddress};
use crate::rlp;

/// Why a funding key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read funding key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("funding key file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("funding key must be 64 hex digits (a secp256k1 private key)")]
    Format,
    #[error("funding key is not a valid secp256k1 private key")]
    Invalid,
}

/// Why signing failed (only for a key the curve library refuses to use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("secp256k1 signing failed")]
pub struct SignError;

/// The secp256k1 key of the account that pays for submissions. `Debug` shows only the
/// account address.
pub struct FundingKey {
    key: SigningKey,
    address: EvmAddress,
}

impl FundingKey {
    /// A key from its 32 secret bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self, KeyError> {
        let key = SigningKey::from_slice(secret).map_err(|_| KeyError::Invalid)?;
        let point = key.verifying_key().to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut address = [0u8; 20];
        address.copy_from_slice(&hash[12..]);
        Ok(FundingKey {
            key,
            address: EvmAddress(address),
        })
    }

    /// A key from its text form (see the module docs).
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let mut digits = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if digits.is_some() {
                return Err(KeyError::Format);
            }
            digits = Some(line.strip_prefix("0x").unwrap_or(line));
        }
        let digits = digits.ok_or(KeyError::Format)?;
        let bytes = Zeroizing::new(decode_hex_digits(digits).map_err(|_| KeyError::Format)?);
        let secret: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Format)?;
        Self::from_bytes(secret)
    }

    /// Read a key file, refusing one that group or others can read.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let read_err = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
        Self::from_text(&text)
    }

    /// The account address (which must hold funds for gas).
    pub fn address(&self) -> EvmAddress {
        self.address
    }

    /// Sign a 32-byte hash; returns `r ‖ s` (low-s) and the recovery id (0 or 1).
    fn sign_hash(&self, hash: &[u8; 32]) -> Result<([u8; 64], u8), SignError> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(hash)
            .map_err(|_| SignError)?;
        let mut rs = [0u8; 64];
        rs.copy_from_slice(&sig.to_bytes());
        Ok((rs, recid.to_byte()))
    }
}

impl fmt::Debug for FundingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FundingKey({}, secret redacted)", self.address)
    }
}

/// A legacy transaction (type 0) bound to a chain id by EIP-155.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTx {
    /// The sender's transaction count.
    pub nonce: u64,
    /// Wei per gas.
    pub gas_price: u128,
    /// Gas limit.
    pub gas: u64,
    /// Recipient; `None` creates a contract from `data`.
    pub to: Option<EvmAddress>,
    /// Wei sent.
    pub value: u128,
    /// Call data or init code.
    pub data: Vec<u8>,
}

impl LegacyTx {
    /// The raw signed transaction for `eth_sendRawTransaction`:
    /// `rlp([nonce, gasPrice, gas, to, value, data, v, r, s])` with
    /// `v = recovery_id + 2·chain_id + 35`, signed over
    /// `keccak256(rlp([nonce, gasPrice, gas, to, value, data, chain_id, 0, 0]))`.
    pub fn sign(&self, key: &FundingKey, chain_id: u64) -> Result<Vec<u8>, SignError> {
        let mut fields = self.common_fields();
        rlp::uint(&mut fields, u128::from(chain_id));
        rlp::uint(&mut fields, 0);
        rlp::uint(&mut fields, 0);
        let hash = keccak256(&rlp::list(&fields));
        let (rs, recid) = key.sign_hash(&hash)?;
        let mut fields = self.common_fields();
        rlp::uint(
            &mut fields,
            u128::from(recid) + 2 * u128::from(chain_id) + 35,
        );
        rlp::uint_be(&mut fields, &rs[..32]);
        rlp::uint_be(&mut fields, &rs[32..]);
        Ok(rlp::list(&fields))
    }

    fn common_fields(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + self.data.len());
        rlp::uint(&mut f, u128::from(self.nonce));
        rlp::uint(&mut f, self.gas_price);
        rlp::uint(&mut f, u128::from(self.gas));
        match &self.to {
            Some(to) => rlp::bytes(&mut f, &to.0),
            None => rlp::bytes(&mut f, &[]),
        }
        rlp::uint(&mut f, self.value);
        rlp::bytes(&mut f, &self.data);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::{decode_hex, to_0x};

    #[test]
    fn eip155_example_transaction() {
        // The worked example of EIP-155.
        let key = FundingKey::from_bytes(&[0x46; 32]).unwrap();
        let tx = LegacyTx {
            nonce: 9,
            gas_price: 20_000_000_000,
            gas: 21_000,
            to: Some(EvmAddress([0x35; 20])),
            value: 1_000_000_000_000_000_000,
            data: Vec::new(),
        };
        let raw = tx.sign(&key, 1).unwrap();
        assert_eq!(
            to_0x(&raw),
            "0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
        );
    }

    #[test]
    fn anvil_default_account_address() {
        // Anvil's first development account (a well-known test key, never for funds).
        let key = FundingKey::from_text(
            "# test key\n0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n",
        )
        .unwrap();
        assert_eq!(
            key.address(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
                .parse()
                .unwrap()
        );
        assert!(!format!("{key:?}").contains("ac0974"));
        assert!(matches!(
            FundingKey::from_text("0x12"),
            Err(KeyError::Format)
        ));
        assert!(matches!(
            FundingKey::from_text("a\nb"),
            Err(KeyError::Format)
        ));
        assert!(matches!(
            FundingKey::from_bytes(&[0; 32]),
            Err(KeyError::Invalid)
        ));
        let _ = decode_hex("0x00");
    }
}
