//! Every metanet message on the wire (docs/protocol.md §3).
//!
//! Two layers per message, after smoltcp: a checked zero-copy view (`*Packet<T>`) whose
//! constructor validates type and length so no accessor can panic, and an owned
//! representation (`*Repr`) with `parse`, `emit` and `buffer_len`. All integers are
//! little-endian. Byte 0 is the message type; bytes 1..4 are reserved and must be zero,
//! except byte 1 of the handshake messages, which negotiates the data cipher ([`cipher`]).
//!
//! ```text
//! initiation  (240): type=1 | offer 0 0 | sender u32 | noise[200] | mac1[16] | mac2[16]
//! response    (188): type=2 | choice 0 0 | sender u32 | receiver u32 | noise[144] | mac1[16] | mac2[16]
//! cookie reply (64): type=3 | 0 0 0 | receiver u32 | nonce[24] | sealed cookie[32]
//! data      (32+n): type=4 | 0 0 0 | receiver u32 | counter u64 | AEAD(payload[n]) + tag[16]
//! keepalive   (32): a data message with an empty payload
//! record request (1200): type=5 | 0 0 0 | nonce u32 | target address[20] | zero padding
//! record response (9..=1032): type=6 | 0 0 0 | nonce u32 | signed peer record
//! record cookie (24): type=7 | 0 0 0 | nonce u32 | cookie[16]
//! relay     (44+n): type=8 | 0 0 0 | destination address[20] | source address[20] | inner[n]
//! relayed   (24+n): type=9 | 0 0 0 | source address[20] | inner message[n]
//! ```
//!
//! A relay message asks a relay to forward the inner message (an initiation, response,
//! cookie reply or data message, end to end between two of its clients) to the client
//! whose address is given; the relay checks the source against the endpoint that
//! client is bound to and sends the inner message on as a relayed message naming the
//! source. The relayed header is shorter, so a relay never sends more bytes than it
//! received (docs/protocol.md §10).
//!
//! A record request may carry a cookie from a record cookie message in the first 16
//! bytes of its padding (zeros: none).
//!
//! The record request is padded so that its answer is never larger than it: the
//! exchange cannot be used to amplify traffic towards a spoofed source.

/// Message type bytes.
pub mod kind {
    /// Handshake initiation.
    pub const INITIATION: u8 = 1;
    /// Handshake response.
    pub const RESPONSE: u8 = 2;
    /// Cookie reply.
    pub const COOKIE_REPLY: u8 = 3;
    /// Transport data (and keepalive).
    pub const DATA: u8 = 4;
    /// Ask an endpoint for the signed record of one of its identities.
    pub const RECORD_REQUEST: u8 = 5;
    /// The signed record asked for.
    pub const RECORD_RESPONSE: u8 = 6;
    /// A cookie demanded of a record request under load.
    pub const RECORD_COOKIE: u8 = 7;
    /// A client asks its relay to forward an inner message (§10.2).
    pub const RELAY: u8 = 8;
    /// A relay hands a client an inner message from another client (§10.2).
    pub const RELAYED: u8 = 9;
}

/// Header of a relay message: type, three zero bytes, destination and source addresses.
pub const RELAY_HEADER_LEN: usize = 4 + 2 * crate::address::LEN;
/// Header of a relayed message: type, three zero bytes, the source address.
pub const RELAYED_HEADER_LEN: usize = 4 + crate::address::LEN;

/// Record request length (padded: see the module docs).
pub const RECORD_REQUEST_LEN: usize = 1200;
/// Record cookie length.
pub const RECORD_COOKIE_LEN: usize = 24;
/// Where a record request carries its cookie (the start of the padding).
pub const RECORD_REQUEST_COOKIE_AT: usize = 28;
/// Largest record response.
pub const RECORD_RESPONSE_MAX: usize = 8 + crate::record::MAX_RECORD_LEN;

/// Noise payload of an initiation: wallet key, binding, timestamp.
pub const INIT_PAYLOAD_LEN: usize = 32 + 64 + 8;
/// Noise payload of a response: wallet key, binding.
pub const RESPONSE_PAYLOAD_LEN: usize = 32 + 64;
/// Noise message 1 (`e, es, s, ss` + payload) length.
pub const INIT_NOISE_LEN: usize = 32 + (32 + 16) + (INIT_PAYLOAD_LEN + 16);
/// Noise message 2 (`e, ee, se, psk` + payload) length.
pub const RESPONSE_NOISE_LEN: usize = 32 + (RESPONSE_PAYLOAD_LEN + 16);
/// Length of a MAC field.
pub const MAC_LEN: usize = 16;
/// Initiation length (without extensions: [`INIT_EXTENDED`]).
pub const INIT_LEN: usize = 8 + INIT_NOISE_LEN + 2 * MAC_LEN;
/// Byte 1 bit of an initiation whose payload carries extensions after the timestamp
/// (docs/protocol.md §5.6): the message is longer than [`INIT_LEN`] by the extensions'
/// length, at most [`INIT_MAX_LEN`] in all. Without the bit the length is exactly
/// [`INIT_LEN`].
pub const INIT_EXTENDED: u8 = 1 << 7;
/// Longest initiation: handshake messages fit the 1200-byte datagram rule.
pub const INIT_MAX_LEN: usize = 1200;
/// Response length.
pub const RESPONSE_LEN: usize = 12 + RESPONSE_NOISE_LEN + 2 * MAC_LEN;
/// Length of a hybrid response ([`cipher::CHOSE_ML_KEM_512`]): the ML-KEM-512
/// ciphertext sits between the header and Noise message 2 (docs/protocol.md §5.7).
pub const RESPONSE_HYBRID_LEN: usize = RESPONSE_LEN + crate::pq::CT_LEN;
/// Cookie reply nonce length (XChaCha20-Poly1305).
pub const COOKIE_NONCE_LEN: usize = 24;
/// Sealed cookie length (16-byte cookie + 16-byte tag).
pub const COOKIE_SEALED_LEN: usize = 32;
/// Cookie reply length.
pub const COOKIE_REPLY_LEN: usize = 8 + COOKIE_NONCE_LEN + COOKIE_SEALED_LEN;
/// Data header length.
pub const DATA_HEADER_LEN: usize = 16;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a data message adds to its payload.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Largest datagram metanet sends or accepts.
pub const MAX_DATAGRAM: usize = 65535;
/// Largest payload (an IPv6 packet) a data message can carry: the message must fit
/// [`MAX_DATAGRAM`] (docs/protocol.md §3.6, §7.1).
pub const MAX_DATA_PAYLOAD: usize = MAX_DATAGRAM - DATA_OVERHEAD;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("datagram is empty")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("message type {kind} has length {len}, expected {expected}")]
    BadLength {
        kind: u8,
        len: usize,
        expected: usize,
    },
    #[error("reserved header bytes are not zero")]
    Reserved,
}

/// The data cipher negotiation in byte 1 of the handshake messages (docs/protocol.md
/// §6.1): an initiation's byte 1 is a set of offer bits (unknown bits are ignored), a
/// response's byte 1 names the cipher chosen. Zero in both means ChaCha20-Poly1305.
pub mod cipher {
    /// Response choice: ChaCha20-Poly1305 (always supported, never needs an offer).
    pub const CHACHA20_POLY1305: u8 = 0;
    /// Response choice: AES-256-GCM.
    pub const AES_256_GCM: u8 = 1;
    /// Initiation offer bit: the initiator can use AES-256-GCM.
    pub const OFFER_AES_256_GCM: u8 = 1 << 0;
    /// Initiation offer bit: the payload carries an ML-KEM-512 encapsulation key
    /// (docs/protocol.md §5.7). Set exactly when the encrypted payload has the
    /// extension, so the bit is authenticated by message 1's AEAD.
    pub const OFFER_ML_KEM_512: u8 = 1 << 1;
    /// Response choice bit: the response is hybrid and carries an ML-KEM-512
    /// ciphertext ([`super::RESPONSE_HYBRID_LEN`]); the low bits still name the cipher.
    pub const CHOSE_ML_KEM_512: u8 = 1 << 7;
}

/// Type, length and reserved bytes. Byte 1 of the handshake messages is not reserved: it
/// carries the cipher offer (any bits) or choice (a defined one, [`cipher`]).
fn check_header(buf: &[u8], kind: u8, exact: Option<usize>, min: usize) -> Result<(), Error> {
    let len = buf.len();
    let first = *buf.first().ok_or(Error::Empty)?;
    if first != kind {
        return Err(Error::UnknownType(first));
    }
    let ok = match exact {
        Some(e) => len == e,
        None => (min..=MAX_DATAGRAM).contains(&len),
    };
    if !ok {
        return Err(Error::BadLength {
            kind,
            len,
            expected: exact.unwrap_or(min),
        });
    }
    let (reserved, byte1_ok) = match kind {
        self::kind::INITIATION => (&buf[2..4], true),
        self::kind::RESPONSE => (
            &buf[2..4],
            buf[1] & !cipher::CHOSE_ML_KEM_512 <= cipher::AES_256_GCM,
        ),
        _ => (&buf[1..4], true),
    };
    if !byte1_ok || reserved.iter().any(|&b| b != 0) {
        return Err(Error::Reserved);
    }
    Ok(())
}

/// An initiation's header and length: exactly [`INIT_LEN`] without [`INIT_EXTENDED`],
/// longer (up to [`INIT_MAX_LEN`]) with it.
fn check_initiation(buf: &[u8]) -> Result<(), Error> {
    let extended = buf.get(1).is_some_and(|b| b & INIT_EXTENDED != 0);
    if !extended {
        return check_header(buf, kind::INITIATION, Some(INIT_LEN), 0);
    }
    if buf.len() > INIT_MAX_LEN {
        return Err(Error::BadLength {
            kind: kind::INITIATION,
            len: buf.len(),
            expected: INIT_MAX_LEN,
        });
    }
    check_header(buf, kind::INITIATION, None, INIT_LEN + 1)
}

/// A response's header and length: [`RESPONSE_HYBRID_LEN`] with
/// [`cipher::CHOSE_ML_KEM_512`], exactly [`RESPONSE_LEN`] without.
fn check_response(buf: &[u8]) -> Result<(), Error> {
    let hybrid = buf
        .get(1)
        .is_some_and(|b| b & cipher::CHOSE_ML_KEM_512 != 0);
    let len = if hybrid {
        RESPONSE_HYBRID_LEN
    } else {
        RESPONSE_LEN
    };
    check_header(buf, kind::RESPONSE, Some(len), 0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn put_header(b: &mut [u8], kind: u8) {
    b[0] = kind;
    b[1..4].fill(0);
}

/// Which message a datagram holds, judged by type byte and length only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`InitiationPacket`].
    Initiation,
    /// [`ResponsePacket`].
    Response,
    /// [`CookieReplyPacket`].
    CookieReply,
    /// [`DataPacket`].
    Data,
    /// [`RecordRequestPacket`].
    RecordRequest,
    /// [`RecordResponsePacket`].
    RecordResponse,
    /// [`RecordCookiePacket`].
    RecordCookie,
    /// [`RelayPacket`] of type [`kind::RELAY`]: to be forwarded by a relay.
    Relay,
    /// [`RelayPacket`] of type [`kind::RELAYED`]: forwarded by a relay.
    Relayed,
}

/// Classify a datagram, checking its length for the claimed type.
pub fn classify(buf: &[u8]) -> Result<Kind, Error> {
    let first = *buf.first().ok_or(Error::Empty)?;
    let k = match first {
        kind::INITIATION => Kind::Initiation,
        kind::RESPONSE => Kind::Response,
        kind::COOKIE_REPLY => Kind::CookieReply,
        kind::DATA => Kind::Data,
        kind::RECORD_REQUEST => Kind::RecordRequest,
        kind::RECORD_RESPONSE => Kind::RecordResponse,
        kind::RECORD_COOKIE => Kind::RecordCookie,
        kind::RELAY => Kind::Relay,
        kind::RELAYED => Kind::Relayed,
        other => return Err(Error::UnknownType(other)),
    };
    match k {
        Kind::Initiation => check_initiation(buf)?,
        Kind::Response => check_response(buf)?,
        Kind::CookieReply => check_header(buf, kind::COOKIE_REPLY, Some(COOKIE_REPLY_LEN), 0)?,
        Kind::Data => check_header(buf, kind::DATA, None, DATA_OVERHEAD)?,
        Kind::RecordRequest => {
            check_header(buf, kind::RECORD_REQUEST, Some(RECORD_REQUEST_LEN), 0)?
        }
        Kind::RecordResponse => check_record_response(buf)?,
        Kind::RecordCookie => check_header(buf, kind::RECORD_COOKIE, Some(RECORD_COOKIE_LEN), 0)?,
        Kind::Relay | Kind::Relayed => {
            RelayPacket::new_checked(buf)?;
        }
    }
    Ok(k)
}

// ---------------------------------------------------------------- relay

/// Checked view of a relay or relayed message: the header is valid and the inner
/// message is one a relay carries (an initiation, response, cookie reply or data
/// message, checked by [`classify`]).
#[derive(Debug, Clone, Copy)]
pub struct RelayPacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> RelayPacket<T> {
    /// Wrap `buf` after checking type, reserved bytes and the inner message.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        let first = *b.first().ok_or(Error::Empty)?;
        let header = match first {
            kind::RELAY => RELAY_HEADER_LEN,
            kind::RELAYED => RELAYED_HEADER_LEN,
            other => return Err(Error::UnknownType(other)),
        };
        check_header(b, first, None, header + 1)?;
        // The inner type is checked before the inner message is classified, so a
        // relay message inside a relay message is refused without recursion.
        let inner = &b[header..];
        match inner[0] {
            kind::INITIATION | kind::RESPONSE | kind::COOKIE_REPLY | kind::DATA => {
                classify(inner)?;
            }
            other => return Err(Error::UnknownType(other)),
        }
        Ok(RelayPacket(buf))
    }
    /// Whether this is a relayed message (from a relay) rather than a relay message.
    pub fn is_relayed(&self) -> bool {
        self.0.as_ref()[0] == kind::RELAYED
    }
    /// A relay message's destination client; `None` for a relayed message.
    pub fn destination(&self) -> Option<crate::address::Address> {
        (!self.is_relayed()).then(|| crate::address::Address::from_bytes(arr(self.0.as_ref(), 4)))
    }
    /// The source client: the sender of a relay message, as it claims (a relay checks
    /// it against the sender's bound endpoint), or the one a relay names in a relayed
    /// message.
    pub fn source(&self) -> crate::address::Address {
        let at = if self.is_relayed() {
            4
        } else {
            4 + crate::address::LEN
        };
        crate::address::Address::from_bytes(arr(self.0.as_ref(), at))
    }
    /// The inner message.
    pub fn inner(&self) -> &[u8] {
        let header = if self.is_relayed() {
            RELAYED_HEADER_LEN
        } else {
            RELAY_HEADER_LEN
        };
        &self.0.as_ref()[header..]
    }
}

/// Write a relay message header (to `destination`, from `source`) into
/// `buf[..RELAY_HEADER_LEN]`.
pub fn put_relay_header(
    buf: &mut [u8],
    destination: &crate::address::Address,
    source: &crate::address::Address,
) {
    put_header(buf, kind::RELAY);
    buf[4..4 + crate::address::LEN].copy_from_slice(destination.as_bytes());
    buf[4 + crate::address::LEN..RELAY_HEADER_LEN].copy_from_slice(source.as_bytes());
}

/// `inner` wrapped in a relay message from `source` to `destination`.
pub fn relay_message(
    destination: &crate::address::Address,
    source: &crate::address::Address,
    inner: &[u8],
) -> Vec<u8> {
    let mut out = vec![0u8; RELAY_HEADER_LEN + inner.len()];
    put_relay_header(&mut out, destination, source);
    out[RELAY_HEADER_LEN..].copy_from_slice(inner);
    out
}

/// Turn the relay message `msg` into the relayed message a relay sends on, in place:
/// the relayed message is `msg[RELAY_HEADER_LEN - RELAYED_HEADER_LEN..]` (the
/// destination is dropped; the source stays where it is). Returns that offset.
pub fn relay_to_relayed(msg: &mut [u8]) -> usize {
    let at = RELAY_HEADER_LEN - RELAYED_HEADER_LEN;
    put_header(&mut msg[at..], kind::RELAYED);
    at
}

/// `inner` wrapped in a relayed message naming `source`.
pub fn relayed_message(source: &crate::address::Address, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; RELAYED_HEADER_LEN + inner.len()];
    put_header(&mut out, kind::RELAYED);
    out[4..RELAYED_HEADER_LEN].copy_from_slice(source.as_bytes());
    out[RELAYED_HEADER_LEN..].copy_from_slice(inner);
    out
}

// ---------------------------------------------------------------- initiation

/// Checked view of a handshake initiation.
#[derive(Debug, Clone, Copy)]
pub struct InitiationPacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> InitiationPacket<T> {
    /// Wrap `buf` after checking type, length and reserved bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        check_initiation(buf.as_ref())?;
        Ok(InitiationPacket(buf))
    }
    /// The data ciphers the initiator offers ([`cipher`] offer bits), and
    /// [`INIT_EXTENDED`].
    pub fn ciphers(&self) -> u8 {
        self.0.as_ref()[1]
    }
    /// Whether the payload carries extensions ([`INIT_EXTENDED`]).
    pub fn extended(&self) -> bool {
        self.ciphers() & INIT_EXTENDED != 0
    }
    /// The initiator's session index.
    pub fn sender(&self) -> u32 {
        u32_at(self.0.as_ref(), 4)
    }
    /// Noise message 1 (longer than [`INIT_NOISE_LEN`] by the extensions).
    pub fn noise(&self) -> &[u8] {
        let b = self.0.as_ref();
        &b[8..b.len() - 2 * MAC_LEN]
    }
    /// mac1.
    pub fn mac1(&self) -> [u8; MAC_LEN] {
        let b = self.0.as_ref();
        arr(b, b.len() - 2 * MAC_LEN)
    }
    /// mac2 (zero when no cookie is held).
    pub fn mac2(&self) -> [u8; MAC_LEN] {
        let b = self.0.as_ref();
        arr(b, b.len() - MAC_LEN)
    }
    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// Owned handshake initiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiationRepr {
    /// Offered data ciphers ([`cipher`] offer bits), and [`INIT_EXTENDED`] exactly when
    /// `noise` is longer than [`INIT_NOISE_LEN`].
    pub ciphers: u8,
    /// The initiator's session index.
    pub sender: u32,
    /// Noise message 1: [`INIT_NOISE_LEN`] bytes, more with extensions.
    pub noise: Vec<u8>,
    /// mac1.
    pub mac1: [u8; MAC_LEN],
    /// mac2.
    pub mac2: [u8; MAC_LEN],
}

impl InitiationRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &InitiationPacket<T>) -> Self {
        InitiationRepr {
            ciphers: p.ciphers(),
            sender: p.sender(),
            noise: p.noise().to_vec(),
            mac1: p.mac1(),
            mac2: p.mac2(),
        }
    }
    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        8 + self.noise.len() + 2 * MAC_LEN
    }
    /// Write into `buf[..self.buffer_len()]`; `buf` must be at least that long.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        put_header(buf, kind::INITIATION);
        buf[1] = self.ciphers;
        buf[4..8].copy_from_slice(&self.sender.to_le_bytes());
        buf[8..8 + self.noise.len()].copy_from_slice(&self.noise);
        buf[len - 2 * MAC_LEN..len - MAC_LEN].copy_from_slice(&self.mac1);
        buf[len - MAC_LEN..len].copy_from_slice(&self.mac2);
    }
}

// ---------------------------------------------------------------- response

/// Checked view of a handshake response, classical or hybrid.
#[derive(Debug, Clone, Copy)]
pub struct ResponsePacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> ResponsePacket<T> {
    /// Wrap `buf` after checking type, length and reserved bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        check_response(buf.as_ref())?;
        Ok(ResponsePacket(buf))
    }
    /// The data cipher the responder chose ([`cipher`]: 0 or 1).
    pub fn cipher(&self) -> u8 {
        self.0.as_ref()[1] & !cipher::CHOSE_ML_KEM_512
    }
    /// Whether the response is hybrid ([`cipher::CHOSE_ML_KEM_512`]).
    pub fn hybrid(&self) -> bool {
        self.0.as_ref()[1] & cipher::CHOSE_ML_KEM_512 != 0
    }
    /// The responder's session index.
    pub fn sender(&self) -> u32 {
        u32_at(self.0.as_ref(), 4)
    }
    /// The initiator's session index, echoed.
    pub fn receiver(&self) -> u32 {
        u32_at(self.0.as_ref(), 8)
    }
    /// The ML-KEM-512 ciphertext of a hybrid response.
    pub fn kem_ciphertext(&self) -> Option<&[u8]> {
        self.hybrid()
            .then(|| &self.0.as_ref()[12..12 + crate::pq::CT_LEN])
    }
    /// Noise message 2.
    pub fn noise(&self) -> &[u8] {
        let at = 12 + self.kem_ciphertext().map_or(0, <[u8]>::len);
        &self.0.as_ref()[at..at + RESPONSE_NOISE_LEN]
    }
    /// mac1.
    pub fn mac1(&self) -> [u8; MAC_LEN] {
        let b = self.0.as_ref();
        arr(b, b.len() - 2 * MAC_LEN)
    }
    /// mac2.
    pub fn mac2(&self) -> [u8; MAC_LEN] {
        let b = self.0.as_ref();
        arr(b, b.len() - MAC_LEN)
    }
    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// Owned handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRepr {
    /// The data cipher chosen ([`cipher`], without [`cipher::CHOSE_ML_KEM_512`]).
    pub cipher: u8,
    /// The responder's session index.
    pub sender: u32,
    /// The initiator's session index.
    pub receiver: u32,
    /// The ML-KEM-512 ciphertext of a hybrid response ([`crate::pq::CT_LEN`] bytes).
    pub kem_ciphertext: Option<Vec<u8>>,
    /// Noise message 2.
    pub noise: [u8; RESPONSE_NOISE_LEN],
    /// mac1.
    pub mac1: [u8; MAC_LEN],
    /// mac2.
    pub mac2: [u8; MAC_LEN],
}

impl ResponseRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &ResponsePacket<T>) -> Self {
        ResponseRepr {
            cipher: p.cipher(),
            sender: p.sender(),
            receiver: p.receiver(),
            kem_ciphertext: p.kem_ciphertext().map(<[u8]>::to_vec),
            noise: arr(p.noise(), 0),
            mac1: p.mac1(),
            mac2: p.mac2(),
        }
    }
    /// Encoded length: [`RESPONSE_LEN`], or [`RESPONSE_HYBRID_LEN`] with a ciphertext.
    pub fn buffer_len(&self) -> usize {
        if self.kem_ciphertext.is_some() {
            RESPONSE_HYBRID_LEN
        } else {
            RESPONSE_LEN
        }
    }
    /// Write into `buf[..self.buffer_len()]`; a ciphertext must be
    /// [`crate::pq::CT_LEN`] bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        put_header(buf, kind::RESPONSE);
        buf[1] = self.cipher;
        buf[4..8].copy_from_slice(&self.sender.to_le_bytes());
        buf[8..12].copy_from_slice(&self.receiver.to_le_bytes());
        let mut at = 12;
        if let Some(ct) = &self.kem_ciphertext {
            buf[1] |= cipher::CHOSE_ML_KEM_512;
            buf[at..at + crate::pq::CT_LEN].copy_from_slice(ct);
            at += crate::pq::CT_LEN;
        }
        buf[at..at + RESPONSE_NOISE_LEN].copy_from_slice(&self.noise);
        buf[len - 2 * MAC_LEN..len - MAC_LEN].copy_from_slice(&self.mac1);
        buf[len - MAC_LEN..len].copy_from_slice(&self.mac2);
    }
}

// ---------------------------------------------------------------- cookie reply

/// Checked view of a cookie reply.
#[derive(Debug, Clone, Copy)]
pub struct CookieReplyPacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> CookieReplyPacket<T> {
    /// Wrap `buf` after checking type, length and reserved bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        check_header(buf.as_ref(), kind::COOKIE_REPLY, Some(COOKIE_REPLY_LEN), 0)?;
        Ok(CookieReplyPacket(buf))
    }
    /// The session index of the initiation this answers.
    pub fn receiver(&self) -> u32 {
        u32_at(self.0.as_ref(), 4)
    }
    /// XChaCha20 nonce.
    pub fn nonce(&self) -> [u8; COOKIE_NONCE_LEN] {
        arr(self.0.as_ref(), 8)
    }
    /// Sealed cookie.
    pub fn sealed_cookie(&self) -> [u8; COOKIE_SEALED_LEN] {
        arr(self.0.as_ref(), 8 + COOKIE_NONCE_LEN)
    }
}

/// Owned cookie reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieReplyRepr {
    /// The session index of the initiation this answers.
    pub receiver: u32,
    /// XChaCha20 nonce.
    pub nonce: [u8; COOKIE_NONCE_LEN],
    /// Sealed cookie.
    pub sealed_cookie: [u8; COOKIE_SEALED_LEN],
}

impl CookieReplyRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &CookieReplyPacket<T>) -> Self {
        CookieReplyRepr {
            receiver: p.receiver(),
            nonce: p.nonce(),
            sealed_cookie: p.sealed_cookie(),
        }
    }
    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        COOKIE_REPLY_LEN
    }
    /// Write into `buf[..COOKIE_REPLY_LEN]`.
    pub fn emit(&self, buf: &mut [u8]) {
        put_header(buf, kind::COOKIE_REPLY);
        buf[4..8].copy_from_slice(&self.receiver.to_le_bytes());
        buf[8..8 + COOKIE_NONCE_LEN].copy_from_slice(&self.nonce);
        buf[8 + COOKIE_NONCE_LEN..COOKIE_REPLY_LEN].copy_from_slice(&self.sealed_cookie);
    }
}

// ---------------------------------------------------------------- data

/// Checked view of a data message (keepalive when the payload is empty).
#[derive(Debug, Clone, Copy)]
pub struct DataPacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> DataPacket<T> {
    /// Wrap `buf` after checking type, minimum length and reserved bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        check_header(buf.as_ref(), kind::DATA, None, DATA_OVERHEAD)?;
        Ok(DataPacket(buf))
    }
    /// The receiver's session index.
    pub fn receiver(&self) -> u32 {
        u32_at(self.0.as_ref(), 4)
    }
    /// The explicit nonce counter.
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(arr(self.0.as_ref(), 8))
    }
    /// Ciphertext and tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.0.as_ref()[DATA_HEADER_LEN..]
    }
    /// Whether this is a keepalive (empty payload).
    pub fn is_keepalive(&self) -> bool {
        self.0.as_ref().len() == DATA_OVERHEAD
    }
    /// The buffer.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Owned data message header and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRepr {
    /// The receiver's session index.
    pub receiver: u32,
    /// The explicit nonce counter.
    pub counter: u64,
    /// Ciphertext including the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl DataRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &DataPacket<T>) -> Self {
        DataRepr {
            receiver: p.receiver(),
            counter: p.counter(),
            ciphertext: p.ciphertext().to_vec(),
        }
    }
    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        DATA_HEADER_LEN + self.ciphertext.len()
    }
    /// Write into `buf[..self.buffer_len()]`.
    pub fn emit(&self, buf: &mut [u8]) {
        emit_data_header(buf, self.receiver, self.counter);
        buf[DATA_HEADER_LEN..self.buffer_len()].copy_from_slice(&self.ciphertext);
    }
}

// ---------------------------------------------------------------- record exchange

fn check_record_response(buf: &[u8]) -> Result<(), Error> {
    check_header(buf, kind::RECORD_RESPONSE, None, 9)?;
    if buf.len() > RECORD_RESPONSE_MAX {
        return Err(Error::BadLength {
            kind: kind::RECORD_RESPONSE,
            len: buf.len(),
            expected: RECORD_RESPONSE_MAX,
        });
    }
    Ok(())
}

/// Checked view of a record request.
#[derive(Debug, Clone, Copy)]
pub struct RecordRequestPacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> RecordRequestPacket<T> {
    /// Wrap `buf` after checking type, length and reserved bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        check_header(
            buf.as_ref(),
            kind::RECORD_REQUEST,
            Some(RECORD_REQUEST_LEN),
            0,
        )?;
        Ok(RecordRequestPacket(buf))
    }
    /// Echoed in the response.
    pub fn nonce(&self) -> u32 {
        u32_at(self.0.as_ref(), 4)
    }
    /// The address whose record is asked for.
    pub fn target(&self) -> [u8; 20] {
        arr(self.0.as_ref(), 8)
    }
    /// The cookie the request carries (from a [`RecordCookieRepr`]); `None` when the
    /// field is all zeros.
    pub fn cookie(&self) -> Option<[u8; MAC_LEN]> {
        let c: [u8; MAC_LEN] = arr(self.0.as_ref(), RECORD_REQUEST_COOKIE_AT);
        (c != [0; MAC_LEN]).then_some(c)
    }
}

/// Owned record request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRequestRepr {
    /// Echoed in the response.
    pub nonce: u32,
    /// The address whose record is asked for.
    pub target: [u8; 20],
}

impl RecordRequestRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &RecordRequestPacket<T>) -> Self {
        RecordRequestRepr {
            nonce: p.nonce(),
            target: p.target(),
        }
    }
    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        RECORD_REQUEST_LEN
    }
    /// Write into `buf[..RECORD_REQUEST_LEN]`, padding with zeros.
    pub fn emit(&self, buf: &mut [u8]) {
        put_header(buf, kind::RECORD_REQUEST);
        buf[4..8].copy_from_slice(&self.nonce.to_le_bytes());
        buf[8..28].copy_from_slice(&self.target);
        buf[28..RECORD_REQUEST_LEN].fill(0);
    }
    /// [`RecordRequestRepr::emit`], then `cookie` in the first bytes of the padding.
    pub fn emit_with_cookie(&self, buf: &mut [u8], cookie: &[u8; MAC_LEN]) {
        self.emit(buf);
        buf[RECORD_REQUEST_COOKIE_AT..RECORD_REQUEST_COOKIE_AT + MAC_LEN].copy_from_slice(cookie);
    }
}

// ---------------------------------------------------------------- record cookie

/// Checked view of a record cookie: the answer to a record request that came while the
/// node is under record load without a valid cookie (docs/protocol.md §3.7).
#[derive(Debug, Clone, Copy)]
pub struct RecordCookiePacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> RecordCookiePacket<T> {
    /// Wrap `buf` after checking type, length and reserved bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        check_header(
            buf.as_ref(),
            kind::RECORD_COOKIE,
            Some(RECORD_COOKIE_LEN),
            0,
        )?;
        Ok(RecordCookiePacket(buf))
    }
    /// The nonce of the request this answers.
    pub fn nonce(&self) -> u32 {
        u32_at(self.0.as_ref(), 4)
    }
    /// The cookie to put into the next request.
    pub fn cookie(&self) -> [u8; MAC_LEN] {
        arr(self.0.as_ref(), 8)
    }
}

/// Owned record cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCookieRepr {
    /// The nonce of the request this answers.
    pub nonce: u32,
    /// The cookie for the request's source address.
    pub cookie: [u8; MAC_LEN],
}

impl RecordCookieRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &RecordCookiePacket<T>) -> Self {
        RecordCookieRepr {
            nonce: p.nonce(),
            cookie: p.cookie(),
        }
    }
    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        RECORD_COOKIE_LEN
    }
    /// Write into `buf[..RECORD_COOKIE_LEN]`.
    pub fn emit(&self, buf: &mut [u8]) {
        put_header(buf, kind::RECORD_COOKIE);
        buf[4..8].copy_from_slice(&self.nonce.to_le_bytes());
        buf[8..RECORD_COOKIE_LEN].copy_from_slice(&self.cookie);
    }
}

/// Checked view of a record response.
#[derive(Debug, Clone, Copy)]
pub struct RecordResponsePacket<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> RecordResponsePacket<T> {
    /// Wrap `buf` after checking type, length bounds and reserved bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        check_record_response(buf.as_ref())?;
        Ok(RecordResponsePacket(buf))
    }
    /// The request's nonce.
    pub fn nonce(&self) -> u32 {
        u32_at(self.0.as_ref(), 4)
    }
    /// The signed record (verify with `record::PeerRecord::verify`).
    pub fn record(&self) -> &[u8] {
        &self.0.as_ref()[8..]
    }
}

/// Owned record response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResponseRepr {
    /// The request's nonce.
    pub nonce: u32,
    /// The signed record.
    pub record: Vec<u8>,
}

impl RecordResponseRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &RecordResponsePacket<T>) -> Self {
        RecordResponseRepr {
            nonce: p.nonce(),
            record: p.record().to_vec(),
        }
    }
    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        8 + self.record.len()
    }
    /// Write into `buf[..self.buffer_len()]`.
    pub fn emit(&self, buf: &mut [u8]) {
        put_header(buf, kind::RECORD_RESPONSE);
        buf[4..8].copy_from_slice(&self.nonce.to_le_bytes());
        buf[8..self.buffer_len()].copy_from_slice(&self.record);
    }
}

/// Write a data header into `buf[..16]`.
pub fn emit_data_header(buf: &mut [u8], receiver: u32, counter: u64) {
    put_header(buf, kind::DATA);
    buf[4..8].copy_from_slice(&receiver.to_le_bytes());
    buf[8..16].copy_from_slice(&counter.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_layout() {
        assert_eq!(INIT_LEN, 240);
        assert_eq!(RESPONSE_LEN, 188);
        assert_eq!(COOKIE_REPLY_LEN, 64);
        assert_eq!(DATA_OVERHEAD, 32);
    }

    #[test]
    fn classify_rejects_bad_input() {
        assert_eq!(classify(&[]), Err(Error::Empty));
        assert_eq!(classify(&[10; 40]), Err(Error::UnknownType(10)));
        // A relayed message whose reserved bytes are set.
        assert_eq!(classify(&[9; 60]), Err(Error::Reserved));
        assert!(matches!(classify(&[1; 239]), Err(Error::BadLength { .. })));
        let mut d = [0u8; 32];
        d[0] = 4;
        assert_eq!(classify(&d), Ok(Kind::Data));
        d[2] = 1;
        assert_eq!(classify(&d), Err(Error::Reserved));
        d[2] = 0;
        d[1] = 1;
        assert_eq!(classify(&d), Err(Error::Reserved));
    }

    #[test]
    fn handshake_byte_one_negotiates_the_cipher() {
        let mut init = [0u8; INIT_LEN];
        init[0] = kind::INITIATION;
        // Any offer bits pass (unknown ones are ignored); bytes 2..4 stay reserved.
        init[1] = 0x7f;
        assert_eq!(classify(&init), Ok(Kind::Initiation));
        assert_eq!(
            InitiationPacket::new_checked(&init[..]).map(|p| p.ciphers()),
            Ok(0x7f)
        );
        // Bit 7 says extensions follow: longer than the classical initiation.
        init[1] = 0xff;
        assert!(matches!(classify(&init), Err(Error::BadLength { .. })));
        let mut ext = [0u8; INIT_LEN + 19];
        ext[0] = kind::INITIATION;
        ext[1] = INIT_EXTENDED;
        assert_eq!(classify(&ext), Ok(Kind::Initiation));
        let p = InitiationPacket::new_checked(&ext[..]).unwrap();
        assert!(p.extended());
        assert_eq!(p.noise().len(), INIT_NOISE_LEN + 19);
        let mut long = vec![0u8; INIT_MAX_LEN + 1];
        long[0] = kind::INITIATION;
        long[1] = INIT_EXTENDED;
        assert!(matches!(classify(&long), Err(Error::BadLength { .. })));
        init[1] = 0;
        init[3] = 1;
        assert_eq!(classify(&init), Err(Error::Reserved));
        let mut resp = [0u8; RESPONSE_LEN];
        resp[0] = kind::RESPONSE;
        resp[1] = cipher::AES_256_GCM;
        assert_eq!(
            ResponsePacket::new_checked(&resp[..]).map(|p| p.cipher()),
            Ok(1)
        );
        // A choice the protocol does not define is refused.
        resp[1] = 2;
        assert_eq!(classify(&resp), Err(Error::Reserved));
        assert!(ResponsePacket::new_checked(&resp[..]).is_err());
    }
}
