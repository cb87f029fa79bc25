//! Addresses: the identity of an entity, derived from its wallet public key.
//!
//! `address = blake3::derive_key("metanet v1 address", pubkey)[..20]`, written as bech32m
//! with human-readable part `mn` (lowercase), and mapped into the overlay as the IPv6
//! address `fd` ‖ `address[..15]` (docs/protocol.md §2). Parsing is strict: a typo is
//! an error, never another address.

use core::fmt;
use core::str::FromStr;
use std::net::Ipv6Addr;

use crate::bech32;

/// Human-readable part of the text form.
pub const HRP: &str = "mn";
/// Context string for the address derivation (docs/protocol.md §2).
pub const DERIVE_CONTEXT: &str = "metanet v1 address";
/// Length of an address in bytes.
pub const LEN: usize = 20;
/// Number of address bytes carried in the overlay IPv6 address.
pub const IPV6_PREFIX_LEN: usize = 15;
/// First byte of every overlay IPv6 address (inside `fd00::/8`).
pub const OVERLAY_FIRST_BYTE: u8 = 0xfd;

/// A metanet address: 20 bytes derived from an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address([u8; LEN]);

/// The 15 address bytes embedded in an overlay IPv6 address: the key under which a
/// peer is looked up when only its IPv6 is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv6Prefix(pub [u8; IPV6_PREFIX_LEN]);

/// Why a text address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("address is empty")]
    Empty,
    #[error("address mixes upper and lower case; write it in one case")]
    MixedCase,
    #[error("address has an invalid character at position {position}")]
    InvalidChar { position: usize },
    #[error("address is missing the '1' separator after the `mn` prefix")]
    NoSeparator,
    #[error("address is too short: {chars} characters, an address has 41 (`mn1` and 38 more)")]
    TooShort { chars: usize },
    #[error("address has prefix `{found}`, expected `mn`")]
    WrongPrefix { found: String },
    #[error("address checksum does not match: check for a typo")]
    BadChecksum,
    #[error("address holds {found} bytes, expected 20")]
    WrongLength { found: usize },
    #[error("address is too long")]
    TooLong,
    #[error("address has non-zero padding bits")]
    NonZeroPadding,
}

impl Address {
    /// Derive the address of an ed25519 public key (docs/protocol.md §2.1).
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let full = blake3::derive_key(DERIVE_CONTEXT, public_key);
        let mut out = [0u8; LEN];
        out.copy_from_slice(&full[..LEN]);
        Address(out)
    }

    /// An address from its raw bytes (e.g. from a record already verified).
    pub const fn from_bytes(bytes: [u8; LEN]) -> Self {
        Address(bytes)
    }

    /// The raw 20 bytes.
    pub const fn as_bytes(&self) -> &[u8; LEN] {
        &self.0
    }

    /// The overlay IPv6 address: `fd` followed by the first 15 address bytes.
    pub fn ipv6(&self) -> Ipv6Addr {
        let mut b = [0u8; 16];
        b[0] = OVERLAY_FIRST_BYTE;
        b[1..].copy_from_slice(&self.0[..IPV6_PREFIX_LEN]);
        Ipv6Addr::from(b)
    }

    /// The 15 bytes that appear in the overlay IPv6 address.
    pub fn ipv6_prefix(&self) -> Ipv6Prefix {
        let mut p = [0u8; IPV6_PREFIX_LEN];
        p.copy_from_slice(&self.0[..IPV6_PREFIX_LEN]);
        Ipv6Prefix(p)
    }
}

impl Ipv6Prefix {
    /// The address bytes inside an overlay IPv6 address, or `None` outside `fd00::/8`.
    pub fn from_ipv6(ip: &Ipv6Addr) -> Option<Self> {
        let o = ip.octets();
        if o[0] != OVERLAY_FIRST_BYTE {
            return None;
        }
        let mut p = [0u8; IPV6_PREFIX_LEN];
        p.copy_from_slice(&o[1..]);
        Some(Ipv6Prefix(p))
    }

    /// The overlay IPv6 address carrying this prefix.
    pub fn ipv6(&self) -> Ipv6Addr {
        let mut b = [0u8; 16];
        b[0] = OVERLAY_FIRST_BYTE;
        b[1..].copy_from_slice(&self.0);
        Ipv6Addr::from(b)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bech32::encode(HRP, &self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        let decoded = bech32::decode(s).map_err(|e| match e {
            bech32::Error::TooLong => ParseError::TooLong,
            bech32::Error::MixedCase => ParseError::MixedCase,
            bech32::Error::NoSeparator => ParseError::NoSeparator,
            bech32::Error::TooShort { chars } => ParseError::TooShort { chars },
            bech32::Error::InvalidChar { position } => ParseError::InvalidChar { position },
            bech32::Error::BadChecksum => match s.to_ascii_lowercase().rsplit_once('1') {
                // Report a wrong prefix before a checksum failure: it is the likelier cause.
                Some((hrp, _)) if hrp != HRP => ParseError::WrongPrefix { found: hrp.into() },
                _ => ParseError::BadChecksum,
            },
            bech32::Error::NonZeroPadding => ParseError::NonZeroPadding,
        })?;
        if decoded.hrp != HRP {
            return Err(ParseError::WrongPrefix { found: decoded.hrp });
        }
        let bytes: [u8; LEN] =
            decoded
                .data
                .as_slice()
                .try_into()
                .map_err(|_| ParseError::WrongLength {
                    found: decoded.data.len(),
                })?;
        Ok(Address(bytes))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_41_lowercase_chars_and_round_trips() {
        let a = Address::from_public_key(&[7u8; 32]);
        let t = a.to_string();
        assert_eq!(t.len(), 41);
        assert!(t.starts_with("mn1"));
        assert_eq!(t.parse::<Address>().unwrap(), a);
        assert_eq!(t.to_ascii_uppercase().parse::<Address>().unwrap(), a);
    }

    #[test]
    fn strict_parse_errors() {
        let t = Address::from_public_key(&[1u8; 32]).to_string();
        // Flip one data character: checksum must catch it.
        let mut chars: Vec<char> = t.chars().collect();
        chars[10] = if chars[10] == 'q' { 'p' } else { 'q' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(typo.parse::<Address>(), Err(ParseError::BadChecksum));
        let wrong_prefix = bech32::encode("xx", &[0u8; 20]);
        assert!(matches!(
            wrong_prefix.parse::<Address>(),
            Err(ParseError::WrongPrefix { .. })
        ));
        let short = bech32::encode(HRP, &[0u8; 19]);
        assert_eq!(
            short.parse::<Address>(),
            Err(ParseError::WrongLength { found: 19 })
        );
        let mixed = format!("MN{}", &t[2..]);
        assert_eq!(mixed.parse::<Address>(), Err(ParseError::MixedCase));
        assert_eq!("".parse::<Address>(), Err(ParseError::Empty));
        assert_eq!("mnqqqqqq".parse::<Address>(), Err(ParseError::NoSeparator));
        assert_eq!(
            "mn1abc".parse::<Address>(),
            Err(ParseError::TooShort { chars: 6 })
        );
        assert!(ParseError::TooShort { chars: 6 }
            .to_string()
            .contains("too short"));
    }

    #[test]
    fn ipv6_embeds_first_15_bytes() {
        let a = Address::from_bytes([0xab; 20]);
        let ip = a.ipv6();
        assert_eq!(ip.octets()[0], 0xfd);
        assert_eq!(Ipv6Prefix::from_ipv6(&ip), Some(a.ipv6_prefix()));
        assert_eq!(Ipv6Prefix::from_ipv6(&Ipv6Addr::LOCALHOST), None);
    }
}
