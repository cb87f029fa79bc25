//! The identity key file format (docs/operations.md "State directory"), as pure
//! functions: the daemon and the CLI do the file IO (atomic write, mode 0600), this
//! module only turns an [`Identity`] into text and back, strictly.
//!
//! ```text
//! # metanet identity key: secret, keep mode 0600
//! version = 1
//! wallet = "<64 hex: ed25519 seed>"
//! noise = "<64 hex: x25519 secret>"
//! ```

use zeroize::Zeroizing;

use crate::identity::{Identity, NoiseKey, WalletKey};

/// Why a key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("line {line}: expected `key = \"value\"`")]
    Syntax { line: usize },
    /// The key's text is not echoed: a key file's contents are secret.
    #[error("line {line}: unknown key (expected version, wallet or noise)")]
    UnknownKey { line: usize },
    #[error("key `{0}` appears twice")]
    Duplicate(&'static str),
    #[error("missing key `{0}`")]
    Missing(&'static str),
    #[error("unsupported key file version (this metanet reads version 1)")]
    Version,
    #[error("`{0}` must be 64 hex digits")]
    BadHex(&'static str),
}

/// Encode an identity's secrets as a key file.
pub fn encode(identity: &Identity) -> Zeroizing<String> {
    let wallet = identity.wallet().seed();
    Zeroizing::new(format!(
        "# metanet identity key: secret, keep mode 0600\nversion = 1\nwallet = \"{}\"\nnoise = \"{}\"\n",
        crate::identity::hex(&wallet[..]),
        crate::identity::hex(identity.noise().secret()),
    ))
}

/// Decode a key file.
pub fn decode(text: &str) -> Result<Identity, Error> {
    let mut version = None;
    let mut wallet = None;
    let mut noise = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or(Error::Syntax { line: i + 1 })?;
        let (k, v) = (k.trim(), v.trim());
        let (slot, name): (&mut Option<String>, &'static str) = match k {
            "version" => (&mut version, "version"),
            "wallet" => (&mut wallet, "wallet"),
            "noise" => (&mut noise, "noise"),
            _ => return Err(Error::UnknownKey { line: i + 1 }),
        };
        if slot.is_some() {
            return Err(Error::Duplicate(name));
        }
        let v = if name == "version" {
            v
        } else {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(Error::Syntax { line: i + 1 })?
        };
        *slot = Some(v.to_owned());
    }
    match version.as_deref() {
        Some("1") => {}
        Some(_) => return Err(Error::Version),
        None => return Err(Error::Missing("version")),
    }
    let wallet = Zeroizing::new(parse_hex32(
        wallet.as_deref().ok_or(Error::Missing("wallet"))?,
        "wallet",
    )?);
    let noise = Zeroizing::new(parse_hex32(
        noise.as_deref().ok_or(Error::Missing("noise"))?,
        "noise",
    )?);
    Ok(Identity::new(
        WalletKey::from_seed(&wallet),
        NoiseKey::from_bytes(&noise),
    ))
}

/// Parse 64 hex digits (either case) into 32 bytes.
pub fn parse_hex32(s: &str, what: &'static str) -> Result<[u8; 32], Error> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(Error::BadHex(what));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16).ok_or(Error::BadHex(what))?;
        let lo = (b[2 * i + 1] as char)
            .to_digit(16)
            .ok_or(Error::BadHex(what))?;
        *o = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = Identity::generate(&[7; 64]);
        let back = decode(&encode(&id)).unwrap();
        assert_eq!(back.address(), id.address());
        assert_eq!(back.noise().secret(), id.noise().secret());
    }

    #[test]
    fn strict() {
        let id = Identity::generate(&[7; 64]);
        let text = encode(&id);
        assert!(matches!(
            decode(&format!("{}extra = 1\n", *text)),
            Err(Error::UnknownKey { .. })
        ));
        assert_eq!(
            decode(&text.replace("version = 1", "version = 2")).err(),
            Some(Error::Version)
        );
        assert_eq!(
            decode("version = 1\n").err(),
            Some(Error::Missing("wallet"))
        );
        assert!(matches!(decode("garbage"), Err(Error::Syntax { line: 1 })));
    }
}
