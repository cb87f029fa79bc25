//! EVM basics shared by the claim format and the RPC client: 20-byte account and
//! contract addresses, Keccak-256, and `0x` hex. Pure functions, no IO.

use core::fmt;
use core::str::FromStr;

use sha3::{Digest, Keccak256};

/// Why hex text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("hex text must start with 0x")]
    NoPrefix,
    #[error("hex text has an odd number of digits")]
    OddLength,
    #[error("hex text has a non-hex character at position {0}")]
    BadChar(usize),
    #[error("hex text holds {found} bytes, expected {expected}")]
    WrongLength { found: usize, expected: usize },
    #[error("mixed-case address fails its EIP-55 checksum: check for a typo")]
    BadChecksum,
    #[error("hex quantity is empty, has a leading zero or does not fit")]
    BadQuantity,
}

/// Keccak-256, the EVM's hash (not SHA3-256: the padding differs).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// A 20-byte EVM account or contract address. Displayed lowercase with `0x`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EvmAddress(pub [u8; 20]);

impl EvmAddress {
    /// The EIP-55 mixed-case checksum form.
    pub fn to_checksum(&self) -> String {
        let lower = to_hex(&self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }
}

impl FromStr for EvmAddress {
    type Err = HexError;
    /// `0x` and 40 hex digits, all lowercase, all uppercase, or EIP-55 mixed case
    /// with a correct checksum.
    fn from_str(s: &str) -> Result<Self, HexError> {
        let bytes = decode_hex(s)?;
        let arr: [u8; 20] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| HexError::WrongLength {
                found: v.len(),
                expected: 20,
            })?;
        let addr = EvmAddress(arr);
        let digits = &s[2..];
        let mixed = digits.chars().any(|c| c.is_ascii_uppercase())
            && digits.chars().any(|c| c.is_ascii_lowercase());
        if mixed && addr.to_checksum() != s {
            return Err(HexError::BadChecksum);
        }
        Ok(addr)
    }
}

impl fmt::Display for EvmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", to_hex(&self.0))
    }
}

impl fmt::Debug for EvmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EvmAddress(0x{})", to_hex(&self.0))
    }
}

/// Lowercase hex without prefix.
pub fn to_hex(bytes: &[u8]) -> String {
    metanet_proto::identity::hex(bytes)
}

/// `0x`-prefixed lowercase hex.
pub fn to_0x(bytes: &[u8]) -> String {
    format!("0x{}", to_hex(bytes))
}

/// Decode `0x`-prefixed hex (either case) into bytes.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, HexError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(HexError::NoPrefix)?;
    decode_hex_digits(digits).map_err(|e| match e {
        HexError::BadChar(i) => HexError::BadChar(i + 2),
        other => other,
    })
}

/// Decode bare hex digits (either case).
pub fn decode_hex_digits(digits: &str) -> Result<Vec<u8>, HexError> {
    if digits.len() % 2 != 0 {
        return Err(HexError::OddLength);
    }
    let b = digits.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    for i in (0..b.len()).step_by(2) {
        let hi = nibble(b[i]).ok_or(HexError::BadChar(i))?;
        let lo = nibble(b[i + 1]).ok_or(HexError::BadChar(i + 1))?;
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

/// A JSON-RPC quantity (`0x0`, `0x1a`: no leading zeros) as u64.
pub fn parse_quantity(s: &str) -> Result<u64, HexError> {
    let digits = s.strip_prefix("0x").ok_or(HexError::NoPrefix)?;
    if digits.is_empty() || digits.len() > 16 || (digits.len() > 1 && digits.starts_with('0')) {
        return Err(HexError::BadQuantity);
    }
    u64::from_str_radix(digits, 16).map_err(|_| HexError::BadQuantity)
}

/// A u64 as a JSON-RPC quantity.
pub fn quantity(n: u64) -> String {
    format!("{n:#x}")
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keccak_of_empty_input() {
        assert_eq!(
            to_hex(&keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn eip55_vectors() {
        // From EIP-55.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a: EvmAddress = s.parse().unwrap();
            assert_eq!(a.to_checksum(), s);
            assert_eq!(a.to_string(), s.to_ascii_lowercase());
        }
        assert_eq!(
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".parse::<EvmAddress>(),
            Err(HexError::BadChecksum)
        );
        assert!("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED"
            .parse::<EvmAddress>()
            .is_ok());
        assert_eq!(
            "0x5aae".parse::<EvmAddress>(),
            Err(HexError::WrongLength {
                found: 2,
                expected: 20
            })
        );
    }

    #[test]
    fn quantities_are_strict() {
        assert_eq!(parse_quantity("0x0"), Ok(0));
        assert_eq!(parse_quantity("0x1a"), Ok(26));
        assert_eq!(parse_quantity("0x01"), Err(HexError::BadQuantity));
        assert_eq!(parse_quantity("0x"), Err(HexError::BadQuantity));
        assert_eq!(parse_quantity("1a"), Err(HexError::NoPrefix));
        assert_eq!(
            parse_quantity("0x10000000000000000"),
            Err(HexError::BadQuantity)
        );
        assert_eq!(quantity(26), "0x1a");
        assert_eq!(decode_hex("0xzz"), Err(HexError::BadChar(2)));
    }
}
