//! Signed envelopes and peer records (docs/protocol.md §4).
//!
//! Every signed object is an [`Envelope`]: the signature covers a domain string, a
//! purpose, a payload type and the payload, so a signature made for one purpose can
//! never be replayed as another. A [`PeerRecord`] is the DHT value that tells others how
//! to reach an identity: its Noise key and binding, endpoints, services, a monotonic
//! `seq` and an expiry. Encoding is canonical (one byte string per record) and bounded;
//! decoding is strict and never panics or allocates beyond [`MAX_RECORD_LEN`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::address::{Address, Ipv6Prefix};
use crate::identity::{Binding, Identity, KeyError, NoisePublicKey, PublicKey, Signature};
use crate::time::UnixTime;

/// Domain string prefixed to every envelope signature.
pub const ENVELOPE_DOMAIN: &[u8] = b"metanet v1 signed envelope";
/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Purpose of peer records.
pub const PEER_RECORD_PURPOSE: &str = "metanet/peer-record";
/// Payload type of peer records.
pub const PEER_RECORD_TYPE: u16 = 1;
/// Upper bound on an encoded envelope.
pub const MAX_RECORD_LEN: usize = 1024;
/// Upper bound on endpoints in one record.
pub const MAX_ENDPOINTS: usize = 8;
/// Upper bound on services in one record.
pub const MAX_SERVICES: usize = 16;
/// Upper bound on a service name's length.
pub const MAX_SERVICE_NAME: usize = 32;
/// Upper bound on relays in one record.
pub const MAX_RELAYS: usize = 4;
/// A record may not claim validity further ahead than this (seconds).
pub const MAX_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// Upper bound on routes (served prefixes) in one record.
pub const MAX_ROUTES: usize = 8;
/// First byte of a record's routes section (docs/protocol.md §4.2).
pub const ROUTES_MARKER: u8 = 0x80;
/// Routes flag: the identity is an exit (it forwards to any destination).
pub const ROUTES_FLAG_EXIT: u8 = 1 << 0;

/// Why a record or envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("record is malformed: {0}")]
    Malformed(&'static str),
    #[error("record is {0} bytes, over the {MAX_RECORD_LEN}-byte limit")]
    TooLarge(usize),
    #[error("envelope purpose or payload type is not the one expected")]
    WrongPurpose,
    #[error("envelope signature does not verify")]
    BadSignature,
    #[error("record key does not derive to the address or IPv6 it was looked up under")]
    KeyMismatch,
    #[error("record's Noise key binding does not verify")]
    BadBinding,
    #[error("record expired at {not_after} (now {now})")]
    Expired { not_after: u64, now: u64 },
    #[error("record claims validity until {not_after}, beyond the allowed lifetime")]
    TooFarInFuture { not_after: u64 },
    /// Local misuse: a field handed to [`Envelope::seal`] does not fit its length prefix.
    #[error("envelope {field} is {len} bytes, over its {max}-byte limit")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// A parsed, signature-checked envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The signer.
    pub signer: PublicKey,
    /// The signed payload.
    pub payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Sign `payload` for `purpose`/`payload_type` and encode the envelope:
    /// `version u8 ‖ purpose_len u8 ‖ purpose ‖ payload_type u16be ‖ public_key[32] ‖
    /// payload_len u16be ‖ payload ‖ signature[64]`. A purpose over 255 bytes or a
    /// payload over 65535 bytes is refused, never truncated (docs/protocol.md §4.1). The
    /// result may still exceed [`MAX_RECORD_LEN`], which only [`Envelope::open`] checks.
    pub fn seal(
        identity: &Identity,
        purpose: &str,
        payload_type: u16,
        payload: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let too_long = |field, len, max| Error::FieldTooLong { field, len, max };
        let purpose_len = u8::try_from(purpose.len())
            .map_err(|_| too_long("purpose", purpose.len(), usize::from(u8::MAX)))?;
        let payload_len = u16::try_from(payload.len())
            .map_err(|_| too_long("payload", payload.len(), usize::from(u16::MAX)))?;
        let sig = identity.wallet().sign(&signing_input(
            purpose_len,
            purpose.as_bytes(),
            payload_type,
            payload_len,
            payload,
        ));
        let mut out = Vec::with_capacity(1 + 1 + purpose.len() + 2 + 32 + 2 + payload.len() + 64);
        out.push(ENVELOPE_VERSION);
        out.push(purpose_len);
        out.extend_from_slice(purpose.as_bytes());
        out.extend_from_slice(&payload_type.to_be_bytes());
        out.extend_from_slice(&identity.public_key().to_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Parse and verify an envelope that must carry `purpose` and `payload_type`.
    pub fn open(bytes: &'a [u8], purpose: &str, payload_type: u16) -> Result<Self, Error> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(Error::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        if r.u8()? != ENVELOPE_VERSION {
            return Err(Error::Malformed("unknown envelope version"));
        }
        let plen = r.u8()?;
        let got_purpose = r.take(usize::from(plen))?;
        let got_type = r.u16()?;
        if got_purpose != purpose.as_bytes() || got_type != payload_type {
            return Err(Error::WrongPurpose);
        }
        let signer = PublicKey::from_bytes(&r.array::<32>()?)
            .map_err(|_| Error::Malformed("signer is not an ed25519 key"))?;
        let len = r.u16()?;
        let payload = r.take(usize::from(len))?;
        let sig: Signature = r.array::<64>()?;
        r.finish()?;
        signer
            .verify(
                &signing_input(plen, got_purpose, payload_type, len, payload),
                &sig,
            )
            .map_err(|_| Error::BadSignature)?;
        Ok(Envelope { signer, payload })
    }
}

/// The bytes an envelope signature covers (docs/protocol.md §4.1). The lengths come
/// typed, already checked against the fields they prefix.
fn signing_input(
    purpose_len: u8,
    purpose: &[u8],
    payload_type: u16,
    payload_len: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(ENVELOPE_DOMAIN.len() + 1 + purpose.len() + 2 + 4 + payload.len());
    m.extend_from_slice(ENVELOPE_DOMAIN);
    m.push(purpose_len);
    m.extend_from_slice(purpose);
    m.extend_from_slice(&payload_type.to_be_bytes());
    m.extend_from_slice(&u32::from(payload_len).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    fn to_byte(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    fn from_byte(b: u8) -> Result<Self, Error> {
        match b {
            6 => Ok(Protocol::Tcp),
            17 => Ok(Protocol::Udp),
            _ => Err(Error::Malformed("unknown service protocol")),
        }
    }
}

/// A service an identity offers on its overlay address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name: 1..=32 of `a-z`, `0-9`, `-`.
    pub name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port on the overlay address (non-zero).
    pub port: u16,
}

impl Service {
    /// Check the name charset and length and the port.
    pub fn validate(&self) -> Result<(), Error> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= MAX_SERVICE_NAME
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_name {
            return Err(Error::Malformed(
                "service name must be 1-32 of a-z, 0-9, '-'",
            ));
        }
        if self.port == 0 {
            return Err(Error::Malformed("service port must be non-zero"));
        }
        Ok(())
    }
}

/// The registry value describing how to reach one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The wallet public key (derives the address).
    pub public_key: PublicKey,
    /// The Noise static public key.
    pub noise_key: NoisePublicKey,
    /// The wallet's signature over `noise_key`.
    pub binding: Binding,
    /// Underlay endpoints, in order of preference; empty hides the IP.
    pub endpoints: Vec<SocketAddr>,
    /// Services offered.
    pub services: Vec<Service>,
    /// Monotonic sequence number: higher wins.
    pub seq: u64,
    /// Unix seconds after which the record must not be used.
    pub not_after: u64,
    /// Relays that forward to this identity (docs/protocol.md §10), in order of
    /// preference: how a NATed or hidden identity is reached.
    pub relays: Vec<Relay>,
    /// Prefixes this identity forwards to as a gateway (docs/protocol.md §4.2), in order.
    pub routes: Vec<IpPrefix>,
    /// Whether it is an exit: it forwards to any destination its clients send to.
    pub exit: bool,
}

/// An IP prefix (IPv4 or IPv6) in canonical form: the bits past `len` are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// `addr/len`, refused unless `len` fits the family and the host bits are zero.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(Error::Malformed("prefix length too long for its family"));
        }
        let p = IpPrefix { addr, len };
        if p.masked(addr) != addr {
            return Err(Error::Malformed("prefix has bits set past its length"));
        }
        Ok(p)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn bits(&self) -> u8 {
        self.len
    }

    /// Whether this is a default route (`0.0.0.0/0` or `::/0`).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.len))
                };
                IpAddr::V4(Ipv4Addr::from(bits & mask))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.len))
                };
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }

    /// Whether `ip` (of the same family) lies in the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl core::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl core::str::FromStr for IpPrefix {
    type Err = Error;

    /// `198.18.50.0/24`, `::/0`; the host bits must be zero.
    fn from_str(s: &str) -> Result<Self, Error> {
        let (a, l) = s
            .split_once('/')
            .ok_or(Error::Malformed("a prefix is ADDRESS/LENGTH"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| Error::Malformed("not an IP address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| Error::Malformed("not a prefix length"))?;
        IpPrefix::new(addr, len)
    }
}

/// A relay an identity holds a reservation with: its address and public endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Relay {
    /// The relay's address (its record and Noise key are fetched from the endpoint).
    pub address: Address,
    /// Where the relay listens.
    pub endpoint: SocketAddr,
}

impl core::fmt::Display for Relay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}@{}", self.address, self.endpoint)
    }
}

impl core::str::FromStr for Relay {
    type Err = String;

    /// `ADDRESS@HOST:PORT`, as in `relays = ["mn1…@198.18.0.1:4242"]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, e) = s
            .split_once('@')
            .ok_or_else(|| format!("relay `{s}` is not ADDRESS@HOST:PORT"))?;
        let address = a
            .parse::<Address>()
            .map_err(|e| format!("relay `{s}`: bad address: {e}"))?;
        let endpoint = e
            .parse::<SocketAddr>()
            .map_err(|e| format!("relay `{s}`: bad endpoint: {e}"))?;
        if endpoint.port() == 0 {
            return Err(format!("relay `{s}`: port must be non-zero"));
        }
        Ok(Relay { address, endpoint })
    }
}

/// Which key a record was looked up under; the record must derive to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A full address.
    Address(Address),
    /// The 15 address bytes inside an overlay IPv6 address.
    Ipv6(Ipv6Prefix),
}

impl PeerRecord {
    /// A record for `identity`, to be signed with [`PeerRecord::sign`].
    pub fn new(
        identity: &Identity,
        endpoints: Vec<SocketAddr>,
        services: Vec<Service>,
        seq: u64,
        not_after: u64,
    ) -> Self {
        PeerRecord {
            public_key: identity.public_key(),
            noise_key: identity.noise().public_key(),
            binding: *identity.binding(),
            endpoints,
            services,
            seq,
            not_after,
            relays: Vec::new(),
            routes: Vec::new(),
            exit: false,
        }
    }

    /// The address of the record's key.
    pub fn address(&self) -> Address {
        self.public_key.address()
    }

    /// Encode and sign. Fails if the record breaks a bound or `identity` is not its key.
    pub fn sign(&self, identity: &Identity) -> Result<Vec<u8>, Error> {
        if identity.public_key() != self.public_key {
            return Err(Error::KeyMismatch);
        }
        let payload = self.encode_payload()?;
        let env = Envelope::seal(identity, PEER_RECORD_PURPOSE, PEER_RECORD_TYPE, &payload)?;
        if env.len() > MAX_RECORD_LEN {
            return Err(Error::TooLarge(env.len()));
        }
        Ok(env)
    }

    /// Decode and verify a signed record found under `lookup`, valid at `now`
    /// (docs/protocol.md §4.3): envelope signature, purpose, canonical payload, key
    /// derivation to `lookup`, Noise key binding, expiry and lifetime bound.
    pub fn verify(bytes: &[u8], lookup: Lookup, now: UnixTime) -> Result<Self, Error> {
        let env = Envelope::open(bytes, PEER_RECORD_PURPOSE, PEER_RECORD_TYPE)?;
        let addr = env.signer.address();
        let matches = match lookup {
            Lookup::Address(a) => a == addr,
            Lookup::Ipv6(p) => p == addr.ipv6_prefix(),
        };
        if !matches {
            return Err(Error::KeyMismatch);
        }
        let rec = Self::decode_payload(env.signer, env.payload)?;
        rec.binding
            .verify(&rec.public_key, &rec.noise_key)
            .map_err(|_: KeyError| Error::BadBinding)?;
        let now_s = now.as_secs();
        if rec.not_after <= now_s {
            return Err(Error::Expired {
                not_after: rec.not_after,
                now: now_s,
            });
        }
        if rec.not_after > now_s.saturating_add(MAX_LIFETIME_SECS) {
            return Err(Error::TooFarInFuture {
                not_after: rec.not_after,
            });
        }
        Ok(rec)
    }

    /// Whether `self` should replace `other` for the same key: strictly higher `seq`.
    pub fn supersedes(&self, other: &PeerRecord) -> bool {
        self.public_key == other.public_key && self.seq > other.seq
    }

    /// Payload: `noise_key[32] ‖ binding[64] ‖ seq u64be ‖ not_after u64be ‖ n u8 ‖
    /// endpoints ‖ m u8 ‖ services`; endpoint = `4 ‖ ipv4[4] ‖ port u16be` or
    /// `6 ‖ ipv6[16] ‖ port u16be`; service = `len u8 ‖ name ‖ proto u8 ‖ port u16be`.
    /// Then, only when the record lists relays (so a record without them encodes as
    /// before relays existed): `k u8 ‖ relays`, k in 1..=MAX_RELAYS, relay =
    /// `address[20] ‖ endpoint`. Then, only when the record lists routes or is an exit:
    /// `0x80 ‖ flags u8 ‖ r u8 ‖ routes`, route = `family u8 ‖ len u8 ‖ address[4|16]`.
    fn encode_payload(&self) -> Result<Vec<u8>, Error> {
        self.validate_lists()?;
        let mut p = Vec::with_capacity(256);
        p.extend_from_slice(&self.noise_key.0);
        p.extend_from_slice(&self.binding.0);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.not_after.to_be_bytes());
        p.push(self.endpoints.len() as u8);
        for ep in &self.endpoints {
            put_endpoint(&mut p, ep);
        }
        p.push(self.services.len() as u8);
        for s in &self.services {
            p.push(s.name.len() as u8);
            p.extend_from_slice(s.name.as_bytes());
            p.push(s.protocol.to_byte());
            p.extend_from_slice(&s.port.to_be_bytes());
        }
        if !self.relays.is_empty() {
            p.push(self.relays.len() as u8);
            for r in &self.relays {
                p.extend_from_slice(r.address.as_bytes());
                put_endpoint(&mut p, &r.endpoint);
            }
        }
        if !self.routes.is_empty() || self.exit {
            p.push(ROUTES_MARKER);
            p.push(if self.exit { ROUTES_FLAG_EXIT } else { 0 });
            p.push(self.routes.len() as u8);
            for r in &self.routes {
                match r.addr {
                    IpAddr::V4(ip) => {
                        p.push(4);
                        p.push(r.len);
                        p.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        p.push(6);
                        p.push(r.len);
                        p.extend_from_slice(&ip.octets());
                    }
                }
            }
        }
        Ok(p)
    }

    fn decode_payload(public_key: PublicKey, payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let noise_key = NoisePublicKey(r.array::<32>()?);
        let binding = Binding(r.array::<64>()?);
        let seq = u64::from_be_bytes(r.array::<8>()?);
        let not_after = u64::from_be_bytes(r.array::<8>()?);
        let n = usize::from(r.u8()?);
        if n > MAX_ENDPOINTS {
            return Err(Error::Malformed("too many endpoints"));
        }
        let mut endpoints = Vec::with_capacity(n);
        for _ in 0..n {
            endpoints.push(read_endpoint(&mut r)?);
        }
        let m = usize::from(r.u8()?);
        if m > MAX_SERVICES {
            return Err(Error::Malformed("too many services"));
        }
        let mut services = Vec::with_capacity(m);
        for _ in 0..m {
            let len = usize::from(r.u8()?);
            let name = core::str::from_utf8(r.take(len)?)
                .map_err(|_| Error::Malformed("service name is not UTF-8"))?
                .to_owned();
            let protocol = Protocol::from_byte(r.u8()?)?;
            let port = r.u16()?;
            services.push(Service {
                name,
                protocol,
                port,
            });
        }
        let mut relays = Vec::new();
        if !r.is_empty() && r.peek() != Some(ROUTES_MARKER) {
            let k = usize::from(r.u8()?);
            if k == 0 {
                return Err(Error::Malformed("an empty relay list is not encoded"));
            }
            if k > MAX_RELAYS {
                return Err(Error::Malformed("too many relays"));
            }
            for _ in 0..k {
                let address = Address::from_bytes(r.array::<{ crate::address::LEN }>()?);
                relays.push(Relay {
                    address,
                    endpoint: read_endpoint(&mut r)?,
                });
            }
        }
        let mut routes = Vec::new();
        let mut exit = false;
        if !r.is_empty() {
            if r.u8()? != ROUTES_MARKER {
                return Err(Error::Malformed("unknown section after the relays"));
            }
            let flags = r.u8()?;
            if flags & !ROUTES_FLAG_EXIT != 0 {
                return Err(Error::Malformed("unknown route flags"));
            }
            exit = flags & ROUTES_FLAG_EXIT != 0;
            let n = usize::from(r.u8()?);
            if n > MAX_ROUTES {
                return Err(Error::Malformed("too many routes"));
            }
            if n == 0 && !exit {
                return Err(Error::Malformed("an empty routes section is not encoded"));
            }
            for _ in 0..n {
                let family = r.u8()?;
                let len = r.u8()?;
                let addr = match family {
                    4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                    6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                    _ => return Err(Error::Malformed("unknown route family")),
                };
                routes.push(IpPrefix::new(addr, len)?);
            }
        }
        r.finish()?;
        let rec = PeerRecord {
            public_key,
            noise_key,
            binding,
            endpoints,
            services,
            seq,
            not_after,
            relays,
            routes,
            exit,
        };
        rec.validate_lists()?;
        Ok(rec)
    }

    /// Bounds and canonical form shared by encoding and decoding: no duplicate or
    /// port-0 endpoints, valid and unique services.
    fn validate_lists(&self) -> Result<(), Error> {
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(Error::Malformed("too many endpoints"));
        }
        if self.services.len() > MAX_SERVICES {
            return Err(Error::Malformed("too many services"));
        }
        if self.relays.len() > MAX_RELAYS {
            return Err(Error::Malformed("too many relays"));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(Error::Malformed("too many routes"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            IpPrefix::new(r.addr, r.len)?;
            if self.routes[..i].contains(r) {
                return Err(Error::Malformed("duplicate route"));
            }
        }
        for (i, r) in self.relays.iter().enumerate() {
            if r.endpoint.port() == 0 {
                return Err(Error::Malformed("relay port must be non-zero"));
            }
            if self.relays[..i].iter().any(|o| o.address == r.address) {
                return Err(Error::Malformed("duplicate relay"));
            }
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            if ep.port() == 0 {
                return Err(Error::Malformed("endpoint port must be non-zero"));
            }
            if self.endpoints[..i].contains(ep) {
                return Err(Error::Malformed("duplicate endpoint"));
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            s.validate()?;
            if self.services[..i]
                .iter()
                .any(|o| o.name == s.name && o.protocol == s.protocol)
            {
                return Err(Error::Malformed("duplicate service"));
            }
        }
        Ok(())
    }
}

fn put_endpoint(p: &mut Vec<u8>, ep: &SocketAddr) {
    match ep.ip() {
        IpAddr::V4(ip) => {
            p.push(4);
            p.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            p.push(6);
            p.extend_from_slice(&ip.octets());
        }
    }
    p.extend_from_slice(&ep.port().to_be_bytes());
}

fn read_endpoint(r: &mut Reader<'_>) -> Result<SocketAddr, Error> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => return Err(Error::Malformed("unknown endpoint family")),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

/// Bounds-checked big-endian reader: every accessor returns an error instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::Malformed("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> UnixTime {
        UnixTime::from_secs(1_800_000_000)
    }

    fn record(id: &Identity) -> PeerRecord {
        PeerRecord::new(
            id,
            vec![
                "198.18.0.1:51820".parse().unwrap(),
                "[2001:db8::1]:51820".parse().unwrap(),
            ],
            vec![Service {
                name: "web".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            7,
            now().as_secs() + 3600,
        )
    }

    #[test]
    fn sign_verify_round_trip() {
        let id = Identity::generate(&[9u8; 64]);
        let rec = record(&id);
        let bytes = rec.sign(&id).unwrap();
        let got = PeerRecord::verify(&bytes, Lookup::Address(id.address()), now()).unwrap();
        assert_eq!(got, rec);
        let got =
            PeerRecord::verify(&bytes, Lookup::Ipv6(id.address().ipv6_prefix()), now()).unwrap();
        assert_eq!(got, rec);
    }

    #[test]
    fn rejections() {
        let id = Identity::generate(&[9u8; 64]);
        let other = Identity::generate(&[10u8; 64]);
        let rec = record(&id);
        let bytes = rec.sign(&id).unwrap();
        assert_eq!(
            PeerRecord::verify(&bytes, Lookup::Address(other.address()), now()),
            Err(Error::KeyMismatch)
        );
        let late = UnixTime::from_secs(rec.not_after);
        assert!(matches!(
            PeerRecord::verify(&bytes, Lookup::Address(id.address()), late),
            Err(Error::Expired { .. })
        ));
        let mut tampered = bytes.clone();
        let n = tampered.len();
        tampered[n - 70] ^= 1;
        assert_eq!(
            PeerRecord::verify(&tampered, Lookup::Address(id.address()), now()),
            Err(Error::BadSignature)
        );
        // Signed by `id` but claiming `other`'s Noise binding.
        let mut forged = rec.clone();
        forged.binding = *other.binding();
        let fb = forged.sign(&id).unwrap();
        assert_eq!(
            PeerRecord::verify(&fb, Lookup::Address(id.address()), now()),
            Err(Error::BadBinding)
        );
        assert_eq!(rec.sign(&other), Err(Error::KeyMismatch));
        let env = Envelope::seal(&id, "metanet/other", PEER_RECORD_TYPE, &[]).unwrap();
        assert_eq!(
            PeerRecord::verify(&env, Lookup::Address(id.address()), now()),
            Err(Error::WrongPurpose)
        );
    }

    #[test]
    fn seal_refuses_fields_too_long_for_their_length_prefix() {
        let id = Identity::generate(&[7u8; 64]);
        // The longest purpose and payload still fit (the payload only the encoding).
        let purpose = "p".repeat(255);
        let payload = vec![0x11; usize::from(u16::MAX)];
        let env = Envelope::seal(&id, &purpose, 1, &payload).unwrap();
        assert_eq!(env.len(), 1 + 1 + 255 + 2 + 32 + 2 + payload.len() + 64);
        // One byte more would wrap the u8 / u16 length and sign something else.
        assert_eq!(
            Envelope::seal(&id, &"p".repeat(256), 1, &[]),
            Err(Error::FieldTooLong {
                field: "purpose",
                len: 256,
                max: 255
            })
        );
        assert_eq!(
            Envelope::seal(&id, PEER_RECORD_PURPOSE, 1, &vec![0; 65536]),
            Err(Error::FieldTooLong {
                field: "payload",
                len: 65536,
                max: 65535
            })
        );
    }

    #[test]
    fn higher_seq_supersedes() {
        let id = Identity::generate(&[9u8; 64]);
        let a = record(&id);
        let mut b = a.clone();
        b.seq += 1;
        assert!(b.supersedes(&a));
        assert!(!a.supersedes(&b));
        assert!(!a.supersedes(&a));
    }

    #[test]
    fn routes_round_trip_and_stay_canonical() {
        let id = Identity::generate(&[9u8; 64]);
        let now = UnixTime::from_secs(1_000_000);
        let mut rec = PeerRecord::new(&id, vec![], vec![], 3, 1_000_100);
        rec.routes = vec![
            "198.18.50.0/24".parse().unwrap(),
            "::/0".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ];
        rec.exit = true;
        for relays in [
            vec![],
            vec![Relay {
                address: Identity::generate(&[8u8; 64]).address(),
                endpoint: "198.18.0.9:4242".parse().unwrap(),
            }],
        ] {
            rec.relays = relays;
            let bytes = rec.sign(&id).unwrap();
            let back = PeerRecord::verify(&bytes, Lookup::Address(id.address()), now).unwrap();
            assert_eq!(back, rec);
            assert_eq!(back.sign(&id).unwrap(), bytes, "one encoding");
        }
        // Exit without prefixes, and prefixes without the exit flag.
        rec.relays = vec![];
        for (routes, exit) in [
            (vec![], true),
            (vec!["2001:db8:5::/48".parse().unwrap()], false),
        ] {
            rec.routes = routes;
            rec.exit = exit;
            let bytes = rec.sign(&id).unwrap();
            assert_eq!(
                PeerRecord::verify(&bytes, Lookup::Address(id.address()), now).unwrap(),
                rec
            );
        }
        // A record without routes encodes as before routes existed.
        rec.routes = vec![];
        rec.exit = false;
        let plain = rec.encode_payload().unwrap();
        assert_ne!(plain.last(), Some(&ROUTES_MARKER));
        // Non-canonical and malformed routes sections are refused.
        assert!("198.18.50.1/24".parse::<IpPrefix>().is_err());
        assert!("198.18.50.0/33".parse::<IpPrefix>().is_err());
        assert!("::1/200".parse::<IpPrefix>().is_err());
        let mut with = plain.clone();
        with.extend_from_slice(&[ROUTES_MARKER, 0, 0]);
        assert!(
            PeerRecord::decode_payload(id.public_key(), &with).is_err(),
            "empty section"
        );
        let mut flags = plain.clone();
        flags.extend_from_slice(&[ROUTES_MARKER, 2, 0]);
        assert!(
            PeerRecord::decode_payload(id.public_key(), &flags).is_err(),
            "unknown flag"
        );
        let mut host = plain.clone();
        host.extend_from_slice(&[ROUTES_MARKER, 0, 1, 4, 24, 198, 18, 50, 1]);
        assert!(
            PeerRecord::decode_payload(id.public_key(), &host).is_err(),
            "host bits"
        );
        let mut dup = plain.clone();
        dup.extend_from_slice(&[
            ROUTES_MARKER,
            0,
            2,
            4,
            24,
            198,
            18,
            50,
            0,
            4,
            24,
            198,
            18,
            50,
            0,
        ]);
        assert!(
            PeerRecord::decode_payload(id.public_key(), &dup).is_err(),
            "duplicate"
        );
        let mut ok = plain.clone();
        ok.extend_from_slice(&[ROUTES_MARKER, 0, 1, 4, 24, 198, 18, 50, 0]);
        let r = PeerRecord::decode_payload(id.public_key(), &ok).unwrap();
        assert!(r.routes[0].contains("198.18.50.10".parse().unwrap()));
        assert!(!r.routes[0].contains("198.18.51.10".parse().unwrap()));
        assert!(!r.routes[0].contains("2001:db8::1".parse().unwrap()));
        for cut in plain.len() + 1..ok.len() {
            assert!(PeerRecord::decode_payload(id.public_key(), &ok[..cut]).is_err());
        }
    }
}
