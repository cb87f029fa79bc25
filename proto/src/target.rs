//! What a user names a peer by: an `mn1…` address, an overlay IPv6 address, or a chain
//! name (docs/protocol.md §9.4).
//!
//! Parsed once, where the text comes in (the command line, a control request), and
//! passed on typed: the CLI and the daemon classify targets with this one function. On
//! the control socket a target is its text (a JSON string), so the wire format is the
//! text users type.

use core::fmt;
use core::str::FromStr;
use std::net::Ipv6Addr;

use crate::address::{Address, Ipv6Prefix};
use crate::name::Name;

/// A peer named by the user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// A full `mn1…` address.
    Address(Address),
    /// An overlay IPv6 in `fd00::/8`; it carries only the first 15 address bytes.
    Ipv6(Ipv6Addr),
    /// A chain name, resolved through the chain registry.
    Name(Name),
}

/// Why text is not a target; the message says which reading failed and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTarget(String);

impl Target {
    /// Parse an address, an overlay IPv6 address or a name. Text with a `:` is read as
    /// an IPv6 address, text that starts with `mn1` always as an address (so a typo in
    /// an address is reported as one), anything else as a name.
    pub fn parse(text: &str) -> Result<Self, BadTarget> {
        let text = text.trim();
        if text.contains(':') {
            let ip: Ipv6Addr = text.parse().map_err(|_| {
                BadTarget(format!(
                    "bad address `{text}`: neither an `mn1…` address nor an IPv6 address"
                ))
            })?;
            if Ipv6Prefix::from_ipv6(&ip).is_none() {
                return Err(BadTarget(format!(
                    "bad address `{text}`: not a metanet overlay address (those are in fd00::/8)"
                )));
            }
            return Ok(Target::Ipv6(ip));
        }
        let address = text.parse::<Address>();
        if address.is_ok() || text.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("mn1")) {
            return address
                .map(Target::Address)
                .map_err(|e| BadTarget(format!("bad address `{text}`: {e}")));
        }
        Name::parse(text).map(Target::Name).map_err(|e| {
            BadTarget(format!(
                "bad address `{text}`: neither an `mn1…` address, an overlay IPv6 nor a name ({e})"
            ))
        })
    }

    /// The overlay IPv6 address, when known without a lookup.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        match self {
            Target::Address(a) => Some(a.ipv6()),
            Target::Ipv6(ip) => Some(*ip),
            Target::Name(_) => None,
        }
    }

    /// The registry lookup prefix, when known without resolving a name.
    pub fn prefix(&self) -> Option<Ipv6Prefix> {
        match self {
            Target::Address(a) => Some(a.ipv6_prefix()),
            Target::Ipv6(ip) => Ipv6Prefix::from_ipv6(ip),
            Target::Name(_) => None,
        }
    }

    /// The full address, when the target is one.
    pub fn address(&self) -> Option<Address> {
        match self {
            Target::Address(a) => Some(*a),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address(a) => a.fmt(f),
            Target::Ipv6(ip) => ip.fmt(f),
            Target::Name(n) => n.fmt(f),
        }
    }
}

impl FromStr for Target {
    type Err = BadTarget;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

impl TryFrom<String> for Target {
    type Error = BadTarget;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Target::parse(&s)
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl From<Address> for Target {
    fn from(a: Address) -> Target {
        Target::Address(a)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn address() -> Address {
        crate::Identity::generate(&[7; 64]).address()
    }

    #[test]
    fn each_form_is_classified_and_round_trips_as_text() {
        let a = address();
        for (text, want) in [
            (a.to_string(), Target::Address(a)),
            (a.ipv6().to_string(), Target::Ipv6(a.ipv6())),
            (
                "Alice".to_owned(),
                Target::Name(Name::parse("alice").unwrap()),
            ),
            (
                "shop.alice".to_owned(),
                Target::Name(Name::parse("shop.alice").unwrap()),
            ),
        ] {
            let t = Target::parse(&text).unwrap();
            assert_eq!(t, want, "{text}");
            assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), t);
        }
        assert_eq!(Target::Address(a).prefix(), Some(a.ipv6_prefix()));
        assert_eq!(Target::Ipv6(a.ipv6()).prefix(), Some(a.ipv6_prefix()));
    }

    #[test]
    fn bad_text_says_which_reading_failed() {
        let e = Target::parse("mn1abc").unwrap_err().to_string();
        assert!(e.contains("bad address `mn1abc`"), "{e}");
        let e = Target::parse("2001:db8::1").unwrap_err().to_string();
        assert!(e.contains("fd00::/8"), "{e}");
        let e = Target::parse("fd00::zz").unwrap_err().to_string();
        assert!(e.contains("neither"), "{e}");
        let e = Target::parse("bad_name").unwrap_err().to_string();
        assert!(e.contains("nor a name"), "{e}");
        assert!(serde_json::from_str::<Target>("\"-x\"").is_err());
    }
}
