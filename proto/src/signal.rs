//! Signals: small control messages sealed inside a session (docs/protocol.md §10.1).
//!
//! A signal travels as the plaintext of an ordinary data message, so it is
//! authenticated, encrypted and replay-protected by the session it rides on and needs
//! no handshake of its own. Its first byte is [`MARKER`], which no IP packet starts
//! with (IPv6 starts with `0x6_`), so a receiver tells signals from tunnel packets by
//! one byte; a node that does not know signals drops them as malformed tunnel packets.
//!
//! ```text
//! signal     = 0x01 | type u8 | body
//! endpoint   = family u8 (4 or 6) | ip[4 or 16] | port u16
//! observed   (1): endpoint                     the source this session's packets come from
//! reserve    (2): (empty)                      client → relay: bind me to this session
//! reserved   (3): lifetime_secs u32 | endpoint relay → client: bound, and where you come from
//! refused    (4): reason u8 | address[20]      relay → client: not forwarded to that address
//! candidates (5): flags u8 | n u8 | endpoint*n end to end: where I may be reached directly
//! sync       (6): (empty)                      end to end: punch now
//! probe      (7): nonce u64                    end to end, sent to a candidate directly
//! probe ack  (8): nonce u64 | endpoint         the probe's nonce, and where it came from
//! ```
//!
//! Integers are little-endian as elsewhere on the wire. Parsing is strict: a signal
//! with trailing bytes, an unknown type, family or reason, or more than
//! [`MAX_CANDIDATES`] endpoints is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::address::{self, Address};

/// First plaintext byte of every signal.
pub const MARKER: u8 = 0x01;
/// Most endpoints a candidates signal carries.
pub const MAX_CANDIDATES: usize = 8;
/// Candidates flag: the sender wants the receiver's candidates back.
pub const WANT_REPLY: u8 = 1 << 0;

/// Signal type bytes.
pub mod kind {
    /// [`super::Signal::Observed`].
    pub const OBSERVED: u8 = 1;
    /// [`super::Signal::Reserve`].
    pub const RESERVE: u8 = 2;
    /// [`super::Signal::Reserved`].
    pub const RESERVED: u8 = 3;
    /// [`super::Signal::Refused`].
    pub const REFUSED: u8 = 4;
    /// [`super::Signal::Candidates`].
    pub const CANDIDATES: u8 = 5;
    /// [`super::Signal::Sync`].
    pub const SYNC: u8 = 6;
    /// [`super::Signal::Probe`].
    pub const PROBE: u8 = 7;
    /// [`super::Signal::ProbeAck`].
    pub const PROBE_ACK: u8 = 8;
}

/// Why a relay did not forward a message (in [`Signal::Refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The destination holds no reservation at this relay.
    NoReservation,
    /// The sender already relays to as many peers as the relay allows one client.
    SessionLimit,
    /// The relay holds as many reservations as it allows.
    Full,
}

impl RefuseReason {
    fn to_byte(self) -> u8 {
        match self {
            RefuseReason::NoReservation => 1,
            RefuseReason::SessionLimit => 2,
            RefuseReason::Full => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => RefuseReason::NoReservation,
            2 => RefuseReason::SessionLimit,
            3 => RefuseReason::Full,
            _ => return None,
        })
    }

    /// A short kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::NoReservation => "no-reservation",
            RefuseReason::SessionLimit => "session-limit",
            RefuseReason::Full => "relay-full",
        }
    }
}

/// One signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The endpoint the sender sees this session's packets come from.
    Observed(SocketAddr),
    /// Client to relay: bind my address to this session (or renew the binding).
    Reserve,
    /// Relay to client: bound for `lifetime_secs`; `observed` is where the client's
    /// packets come from.
    Reserved {
        lifetime_secs: u32,
        observed: SocketAddr,
    },
    /// Relay to client: a message to `address` was not forwarded.
    Refused {
        reason: RefuseReason,
        address: Address,
    },
    /// Where the sender may be reached directly; `flags` may hold [`WANT_REPLY`].
    Candidates {
        flags: u8,
        endpoints: Vec<SocketAddr>,
    },
    /// Start probing the candidates now.
    Sync,
    /// A probe, sent to a candidate endpoint directly.
    Probe { nonce: u64 },
    /// The answer to a probe, sent back to its source directly.
    ProbeAck { nonce: u64, observed: SocketAddr },
}

/// Why bytes are not a valid signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a signal")]
    NotSignal,
    #[error("unknown signal type {0}")]
    UnknownType(u8),
    #[error("signal is truncated")]
    Truncated,
    #[error("signal has trailing bytes")]
    Trailing,
    #[error("unknown endpoint family {0}")]
    Family(u8),
    #[error("unknown refusal reason {0}")]
    Reason(u8),
    #[error("more than {MAX_CANDIDATES} candidates")]
    TooManyCandidates,
}

/// Whether a session plaintext is a signal (rather than a tunnel packet).
pub fn is_signal(plaintext: &[u8]) -> bool {
    plaintext.first() == Some(&MARKER)
}

impl Signal {
    /// Encode, marker first.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(MARKER);
        match self {
            Signal::Observed(ep) => {
                out.push(kind::OBSERVED);
                put_endpoint(&mut out, ep);
            }
            Signal::Reserve => out.push(kind::RESERVE),
            Signal::Reserved {
                lifetime_secs,
                observed,
            } => {
                out.push(kind::RESERVED);
                out.extend_from_slice(&lifetime_secs.to_le_bytes());
                put_endpoint(&mut out, observed);
            }
            Signal::Refused { reason, address } => {
                out.push(kind::REFUSED);
                out.push(reason.to_byte());
                out.extend_from_slice(address.as_bytes());
            }
            Signal::Candidates { flags, endpoints } => {
                out.push(kind::CANDIDATES);
                out.push(*flags);
                let n = endpoints.len().min(MAX_CANDIDATES);
                out.push(n as u8);
                for ep in &endpoints[..n] {
                    put_endpoint(&mut out, ep);
                }
            }
            Signal::Sync => out.push(kind::SYNC),
            Signal::Probe { nonce } => {
                out.push(kind::PROBE);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
            Signal::ProbeAck { nonce, observed } => {
                out.push(kind::PROBE_ACK);
                out.extend_from_slice(&nonce.to_le_bytes());
                put_endpoint(&mut out, observed);
            }
        }
        out
    }

    /// Parse a session plaintext that starts with [`MARKER`].
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(bytes);
        if r.u8()? != MARKER {
            return Err(Error::NotSignal);
        }
        let signal = match r.u8()? {
            kind::OBSERVED => Signal::Observed(r.endpoint()?),
            kind::RESERVE => Signal::Reserve,
            kind::RESERVED => Signal::Reserved {
                lifetime_secs: u32::from_le_bytes(r.array()?),
                observed: r.endpoint()?,
            },
            kind::REFUSED => {
                let b = r.u8()?;
                Signal::Refused {
                    reason: RefuseReason::from_byte(b).ok_or(Error::Reason(b))?,
                    address: Address::from_bytes(r.array::<{ address::LEN }>()?),
                }
            }
            kind::CANDIDATES => {
                let flags = r.u8()?;
                let n = usize::from(r.u8()?);
                if n > MAX_CANDIDATES {
                    return Err(Error::TooManyCandidates);
                }
                let mut endpoints = Vec::with_capacity(n);
                for _ in 0..n {
                    endpoints.push(r.endpoint()?);
                }
                Signal::Candidates { flags, endpoints }
            }
            kind::SYNC => Signal::Sync,
            kind::PROBE => Signal::Probe {
                nonce: u64::from_le_bytes(r.array()?),
            },
            kind::PROBE_ACK => Signal::ProbeAck {
                nonce: u64::from_le_bytes(r.array()?),
                observed: r.endpoint()?,
            },
            other => return Err(Error::UnknownType(other)),
        };
        if !r.0.is_empty() {
            return Err(Error::Trailing);
        }
        Ok(signal)
    }
}

fn put_endpoint(out: &mut Vec<u8>, ep: &SocketAddr) {
    match ep.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&ep.port().to_le_bytes());
}

/// A bounds-checked reader: every accessor returns an error instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, Error> {
        let (&b, rest) = self.0.split_first().ok_or(Error::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        if self.0.len() < N {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        Ok(a)
    }

    fn endpoint(&mut self) -> Result<SocketAddr, Error> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            f => return Err(Error::Family(f)),
        };
        Ok(SocketAddr::new(ip, u16::from_le_bytes(self.array()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Signal> {
        let v4: SocketAddr = "198.18.0.1:4242".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        vec![
            Signal::Observed(v4),
            Signal::Reserve,
            Signal::Reserved {
                lifetime_secs: 30,
                observed: v6,
            },
            Signal::Refused {
                reason: RefuseReason::SessionLimit,
                address: Address::from_bytes([7; 20]),
            },
            Signal::Candidates {
                flags: WANT_REPLY,
                endpoints: vec![v4, v6],
            },
            Signal::Sync,
            Signal::Probe { nonce: 9 },
            Signal::ProbeAck {
                nonce: 9,
                observed: v4,
            },
        ]
    }

    #[test]
    fn every_signal_round_trips_and_every_truncation_is_refused() {
        for s in all() {
            let b = s.encode();
            assert!(is_signal(&b));
            assert_eq!(Signal::parse(&b), Ok(s.clone()));
            for cut in 0..b.len() {
                assert!(Signal::parse(&b[..cut]).is_err(), "{s:?} cut at {cut}");
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(Signal::parse(&long), Err(Error::Trailing));
        }
    }

    #[test]
    fn bad_fields_are_refused() {
        assert_eq!(Signal::parse(&[1, 99]), Err(Error::UnknownType(99)));
        assert_eq!(Signal::parse(&[1, 1, 5, 0]), Err(Error::Family(5)));
        assert_eq!(Signal::parse(&[1, 4, 0]), Err(Error::Reason(0)));
        assert_eq!(Signal::parse(&[1, 5, 0, 9]), Err(Error::TooManyCandidates));
        assert_eq!(Signal::parse(&[0x60]), Err(Error::NotSignal));
    }
}
