//! Registry names: `alice`, `sony.game` (docs/protocol.md §9.4).
//!
//! A [`Name`] can only hold a canonical name: lowercase ASCII labels of `a-z`, `0-9`
//! and `-`, joined by dots. User input goes through [`Name::parse`], which lowercases
//! ASCII letters first (names are case-insensitive); bytes from a claim go through
//! [`Name::from_canonical`], which refuses anything not already canonical, so a name
//! has exactly one encoding on the chain.

use core::fmt;
use core::str::FromStr;

/// Longest name, in bytes (so that `<name>.meta` is a valid DNS name).
pub const MAX_LEN: usize = 128;
/// Longest label, in bytes (the DNS limit).
pub const MAX_LABEL_LEN: usize = 63;
/// The last (top-level) label may not start with this: `mn1…` reads as an address.
pub const RESERVED_PREFIX: &str = "mn1";

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("name is empty")]
    Empty,
    #[error("name is {0} bytes long, over the {MAX_LEN}-byte limit")]
    TooLong(usize),
    #[error("name has an empty label (a leading, trailing or doubled dot)")]
    EmptyLabel,
    #[error("name has a label over {MAX_LABEL_LEN} characters")]
    LabelTooLong,
    #[error("name has a label that starts or ends with '-'")]
    HyphenAtEdge,
    #[error("name may only hold a-z, 0-9, '-' and '.', found {0:?} at byte {1}")]
    BadChar(char, usize),
    #[error("a name's last label may not start with `mn1`: it would read as an address")]
    LooksLikeAddress,
    #[error("name is not in canonical (lowercase) form")]
    NotCanonical,
}

/// A canonical registry name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Parse user input: ASCII letters are lowercased, then the name is validated.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let lower = input.to_ascii_lowercase();
        validate(lower.as_bytes())?;
        Ok(Name(lower))
    }

    /// Accept bytes taken from a claim: they must already be canonical.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.iter().any(u8::is_ascii_uppercase) {
            return Err(Error::NotCanonical);
        }
        validate(bytes)?;
        // validate() admits only ASCII, so this never fails.
        let s = core::str::from_utf8(bytes).map_err(|_| Error::NotCanonical)?;
        Ok(Name(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical bytes (what claims carry and commitments hash).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The parent of a dotted name (`game` for `sony.game`); `None` for a top-level name.
    pub fn parent(&self) -> Option<Name> {
        self.0
            .split_once('.')
            .map(|(_, parent)| Name(parent.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.0)
    }
}

impl FromStr for Name {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Name::parse(s)
    }
}

/// The rules of docs/protocol.md §9.4 on lowercase bytes.
fn validate(bytes: &[u8]) -> Result<(), Error> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    if bytes.len() > MAX_LEN {
        return Err(Error::TooLong(bytes.len()));
    }
    for (i, &b) in bytes.iter().enumerate() {
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
            return Err(Error::BadChar(char::from(b), i));
        }
    }
    for label in bytes.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(Error::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(Error::LabelTooLong);
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return Err(Error::HyphenAtEdge);
        }
    }
    // Only the last label matters: `<address>.meta` must never be read as a name, and a
    // rule on the last label keeps every parent of a valid name valid.
    let top = bytes.rsplit(|&b| b == b'.').next().unwrap_or(bytes);
    if top.starts_with(RESERVED_PREFIX.as_bytes()) {
        return Err(Error::LooksLikeAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lowercases_and_validates() {
        assert_eq!(Name::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(Name::parse("SONY.Game").unwrap().as_str(), "sony.game");
        assert_eq!(Name::parse("a-1.b2").unwrap().as_str(), "a-1.b2");
        assert_eq!(Name::parse(""), Err(Error::Empty));
        assert_eq!(Name::parse(".a"), Err(Error::EmptyLabel));
        assert_eq!(Name::parse("a."), Err(Error::EmptyLabel));
        assert_eq!(Name::parse("a..b"), Err(Error::EmptyLabel));
        assert_eq!(Name::parse("-a"), Err(Error::HyphenAtEdge));
        assert_eq!(Name::parse("a-.b"), Err(Error::HyphenAtEdge));
        assert_eq!(Name::parse("a_b"), Err(Error::BadChar('_', 1)));
        assert_eq!(Name::parse("ä"), Err(Error::BadChar('\u{c3}', 0)));
        assert_eq!(Name::parse(&"a".repeat(64)), Err(Error::LabelTooLong));
        assert!(Name::parse(&"a".repeat(63)).is_ok());
        let long = ["a"; 65].join(".");
        assert_eq!(Name::parse(&long), Err(Error::TooLong(129)));
        assert_eq!(Name::parse("mn1abc"), Err(Error::LooksLikeAddress));
        assert_eq!(Name::parse("MN1abc"), Err(Error::LooksLikeAddress));
        assert_eq!(Name::parse("x.mn1abc"), Err(Error::LooksLikeAddress));
        assert!(Name::parse("mn1abc.x").is_ok());
        assert!(Name::parse("mn").is_ok());
    }

    #[test]
    fn canonical_bytes_must_be_lowercase() {
        assert_eq!(Name::from_canonical(b"Alice"), Err(Error::NotCanonical));
        assert_eq!(Name::from_canonical(b"alice").unwrap().as_str(), "alice");
        assert_eq!(Name::from_canonical(b"al ice"), Err(Error::BadChar(' ', 2)));
        assert_eq!(
            Name::from_canonical(&[b'a', 0xff]),
            Err(Error::BadChar('\u{ff}', 1))
        );
    }

    #[test]
    fn parent_is_everything_after_the_first_dot() {
        let n = Name::parse("a.sony.game").unwrap();
        assert_eq!(n.parent().unwrap().as_str(), "sony.game");
        assert_eq!(n.parent().unwrap().parent().unwrap().as_str(), "game");
        assert_eq!(Name::parse("game").unwrap().parent(), None);
    }
}
