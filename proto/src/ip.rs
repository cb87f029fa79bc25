//! The few IPv6 facts the node needs from tunnel packets: version, addresses, length.
//!
//! The node does not route or reassemble; it only reads the fixed IPv6 header to pick
//! the peer for an outgoing packet and to check that an incoming packet's source is the
//! sending peer's overlay address (docs/protocol.md §7.2).

use std::net::Ipv6Addr;

/// Fixed IPv6 header length.
pub const IPV6_HEADER_LEN: usize = 40;

/// Why bytes from the TUN or a peer are not an IPv6 packet we forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("packet is shorter than an IPv6 header")]
    Truncated,
    #[error("packet is IP version {0}, only IPv6 is carried")]
    NotIpv6(u8),
    #[error("IPv6 payload length does not match the packet")]
    BadLength,
}

/// Checked view of an IPv6 header.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<'a>(&'a [u8]);

impl<'a> Ipv6Packet<'a> {
    /// Check version and that the payload-length field fits the buffer.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.is_empty() {
            return Err(Error::Truncated);
        }
        let version = buf[0] >> 4;
        if version != 6 {
            return Err(Error::NotIpv6(version));
        }
        if buf.len() < IPV6_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let payload_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
        // Jumbograms (payload length 0) are not carried.
        if IPV6_HEADER_LEN + payload_len != buf.len() {
            return Err(Error::BadLength);
        }
        Ok(Ipv6Packet(buf))
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        addr(&self.0[8..24])
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        addr(&self.0[24..40])
    }

    /// Next-header field.
    pub fn next_header(&self) -> u8 {
        self.0[6]
    }
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Build a minimal IPv6 packet (for tests and the simulator): header plus `payload`,
/// next header 253 (experimental), hop limit 64.
pub fn build_ipv6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; IPV6_HEADER_LEN + payload.len()];
    p[0] = 0x60;
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    p[4..6].copy_from_slice(&len.to_be_bytes());
    p[6] = 253;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[IPV6_HEADER_LEN..].copy_from_slice(payload);
    p
}

/// ICMPv6 Destination Unreachable code 0: no route to destination.
pub const UNREACH_NO_ROUTE: u8 = 0;
/// ICMPv6 Destination Unreachable code 3: address unreachable.
pub const UNREACH_ADDRESS: u8 = 3;
/// IPv6 minimum MTU: an ICMPv6 error never exceeds it (RFC 4443 §2.4).
pub const IPV6_MIN_MTU: usize = 1280;

/// An ICMPv6 Destination Unreachable (RFC 4443 §3.1) from `from` about `original`,
/// so that an application sending to an unreachable overlay address fails at once
/// instead of hanging. `None` if `original` is not IPv6 or is itself an ICMPv6 error.
pub fn icmpv6_unreachable(original: &[u8], from: Ipv6Addr, code: u8) -> Option<Vec<u8>> {
    icmpv6_error(original, from, 1, code, 0)
}

/// An ICMPv6 Packet Too Big (RFC 4443 §3.2) from `from` about `original`, carrying the
/// `mtu` the path can take, so that the sender's path-MTU discovery lowers its packet
/// size instead of the packet vanishing. `None` as for [`icmpv6_unreachable`].
pub fn icmpv6_packet_too_big(original: &[u8], from: Ipv6Addr, mtu: u32) -> Option<Vec<u8>> {
    icmpv6_error(original, from, 2, 0, mtu.max(IPV6_MIN_MTU as u32))
}

/// An ICMPv6 error message of `kind`/`code` with the 32-bit field `word`, quoting as
/// much of `original` as fits in the IPv6 minimum MTU.
fn icmpv6_error(original: &[u8], from: Ipv6Addr, kind: u8, code: u8, word: u32) -> Option<Vec<u8>> {
    let orig = Ipv6Packet::new_checked(original).ok()?;
    // Never answer an ICMPv6 error with an error (types < 128 are errors).
    if orig.next_header() == 58 && original.get(IPV6_HEADER_LEN).is_some_and(|t| *t < 128) {
        return None;
    }
    let quoted = original.len().min(IPV6_MIN_MTU - IPV6_HEADER_LEN - 8);
    let mut icmp = vec![0u8; 8 + quoted];
    icmp[0] = kind;
    icmp[1] = code;
    icmp[4..8].copy_from_slice(&word.to_be_bytes());
    icmp[8..].copy_from_slice(&original[..quoted]);
    let dst = orig.src();
    let sum = icmpv6_checksum(from, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut p = build_ipv6(from, dst, &icmp);
    p[6] = 58;
    p[7] = 255;
    Some(p)
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `message` (checksum field zero).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for chunk in b.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum = sum.wrapping_add(u32::from(word));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(message);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_quotes_original_and_checksums() {
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let b: Ipv6Addr = "fd00::2".parse().unwrap();
        let orig = build_ipv6(a, b, &[0xaa; 2000]);
        let icmp = icmpv6_unreachable(&orig, b, UNREACH_ADDRESS).unwrap();
        assert_eq!(icmp.len(), IPV6_MIN_MTU);
        let v = Ipv6Packet::new_checked(&icmp).unwrap();
        assert_eq!((v.src(), v.dst(), v.next_header()), (b, a, 58));
        // Checksum over the message including its checksum field folds to zero.
        assert_eq!(icmpv6_checksum(b, a, &icmp[IPV6_HEADER_LEN..]), 0);
        // No error about an error.
        assert!(icmpv6_unreachable(&icmp, a, UNREACH_ADDRESS).is_none());
    }

    #[test]
    fn packet_too_big_carries_the_mtu() {
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let b: Ipv6Addr = "fd00::2".parse().unwrap();
        let orig = build_ipv6(a, b, &[0x55; 1500]);
        let ptb = icmpv6_packet_too_big(&orig, b, 1400).unwrap();
        let m = &ptb[IPV6_HEADER_LEN..];
        assert_eq!((m[0], m[1]), (2, 0));
        assert_eq!(u32::from_be_bytes([m[4], m[5], m[6], m[7]]), 1400);
        assert_eq!(icmpv6_checksum(b, a, m), 0);
        // Never below the IPv6 minimum.
        let low = icmpv6_packet_too_big(&orig, b, 500).unwrap();
        assert_eq!(
            &low[IPV6_HEADER_LEN + 4..IPV6_HEADER_LEN + 8],
            &1280u32.to_be_bytes()
        );
        assert!(icmpv6_packet_too_big(&ptb, a, 1400).is_none());
    }
}
