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
