//! The Noise IK handshake with identity binding and cookies (docs/protocol.md §5).
//!
//! Pattern `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`, prologue [`PROLOGUE`]. The initiator
//! knows the responder's Noise static key from its verified record. Both payloads carry
//! the sender's ed25519 wallet key and its binding signature over the Noise static key,
//! so each side learns the other's *address*, not just a Noise key. The initiation also
//! carries a Unix timestamp; the node drops an initiation whose timestamp is not newer
//! than the last one accepted from that address (replay protection).
//!
//! Typestate chain, one struct per expected message:
//!
//! ```text
//! initiator: initiate() -> ExpectResponse --handle_response--> Established
//! responder: read_initiation() -> ExpectAccept --accept--> (Established, response)
//! ```
//!
//! MACs and cookies (the WireGuard mac1/mac2 idea, keyed with BLAKE3): `mac1` proves the
//! sender knows the receiver's Noise public key and is checked before any DH work;
//! under load the responder demands a valid `mac2`, keyed by a cookie bound to the
//! sender's source address, and answers without one by a cheap [`CookieReplyRepr`].
//!
//! Nothing here reads the clock or OS randomness: time, indices and seeds come in.

use core::fmt;
use core::time::Duration;
use std::net::SocketAddr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

use crate::cipher::Cipher as DataCipher;
use crate::identity::{Binding, Identity, NoisePublicKey, PublicKey};
use crate::pq::{self, Kem, PqMode};
use crate::rng::Rng;
use crate::time::{Instant, UnixTime};
use crate::wire::{
    self, CookieReplyRepr, InitiationPacket, InitiationRepr, ResponsePacket, ResponseRepr, MAC_LEN,
};

/// The Noise protocol name.
pub const PROTOCOL: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Prologue mixed into every handshake: names the protocol version.
pub const PROLOGUE: &[u8] = b"metanet v1";
/// mac1 key derivation context.
pub const MAC1_CONTEXT: &str = "metanet v1 mac1";
/// mac2 key derivation context (from a cookie).
pub const MAC2_CONTEXT: &str = "metanet v1 mac2";
/// Cookie-reply encryption key derivation context.
pub const COOKIE_KEY_CONTEXT: &str = "metanet v1 cookie";
/// How long a responder's cookie secret lives, and a received cookie stays usable.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// A pre-shared key for the `psk2` slot: all zero unless the network sets one.
pub type Psk = [u8; 32];

/// Key derivation context of the psk2 value when a network key is in use (§5.6).
pub const NETWORK_PSK_CONTEXT: &str = "metanet v1 network psk";
/// Key derivation context of a group's tag (§5.6).
pub const GROUP_TAG_CONTEXT: &str = "metanet v1 group tag";
/// Initiation extension type: the network key epoch the initiator uses (§5.6).
pub const EXT_EPOCH: u8 = 1;
/// Length of the [`EXT_EPOCH`] value: group tag and epoch.
pub const EXT_EPOCH_LEN: usize = 8 + 8;
/// Initiation extension type: an ephemeral ML-KEM-512 encapsulation key, the offer of
/// a hybrid handshake (§5.7). Its value is [`pq::EK_LEN`] bytes.
pub const EXT_ML_KEM_512: u8 = 2;

/// A short public name of a group in initiations (§5.6): the first 8 bytes of
/// `BLAKE3-derive-key("metanet v1 group tag", name)`. Collisions only cost a refused
/// handshake, never a wrong key: the key itself is mixed into psk2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupTag(pub [u8; 8]);

impl GroupTag {
    /// The tag of the group named `name`.
    pub fn of(name: &str) -> GroupTag {
        let mut t = [0u8; 8];
        t.copy_from_slice(&blake3::derive_key(GROUP_TAG_CONTEXT, name.as_bytes())[..8]);
        GroupTag(t)
    }
}

/// The network key epoch an initiation names (§5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRef {
    /// The group whose key is used.
    pub group: GroupTag,
    /// Its epoch.
    pub epoch: u64,
}

/// What an initiation carries after its timestamp (§5.6). Empty: the classical
/// 240-byte initiation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The closed group's network key this initiation's psk2 uses.
    pub epoch: Option<EpochRef>,
    /// The initiator's ephemeral ML-KEM-512 encapsulation key (§5.7).
    pub ml_kem_512: Option<Box<[u8; pq::EK_LEN]>>,
}

impl Extensions {
    /// Whether there is nothing to carry.
    pub fn is_empty(&self) -> bool {
        self.epoch.is_none() && self.ml_kem_512.is_none()
    }

    /// The encoded extensions: `type u8 ‖ len u16le ‖ value` each.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(e) = &self.epoch {
            out.push(EXT_EPOCH);
            out.extend_from_slice(&(EXT_EPOCH_LEN as u16).to_le_bytes());
            out.extend_from_slice(&e.group.0);
            out.extend_from_slice(&e.epoch.to_le_bytes());
        }
        if let Some(ek) = &self.ml_kem_512 {
            out.push(EXT_ML_KEM_512);
            out.extend_from_slice(&(pq::EK_LEN as u16).to_le_bytes());
            out.extend_from_slice(&ek[..]);
        }
        out
    }

    /// Decode extensions; unknown types are skipped, a known type twice, a known type
    /// of the wrong length or a truncated entry is [`Error::BadPayload`].
    pub fn decode(mut b: &[u8]) -> Result<Extensions, Error> {
        let mut ext = Extensions::default();
        while !b.is_empty() {
            let [kind, l0, l1, rest @ ..] = b else {
                return Err(Error::BadPayload);
            };
            let len = usize::from(u16::from_le_bytes([*l0, *l1]));
            if rest.len() < len {
                return Err(Error::BadPayload);
            }
            let (value, tail) = rest.split_at(len);
            if *kind == EXT_EPOCH {
                if len != EXT_EPOCH_LEN || ext.epoch.is_some() {
                    return Err(Error::BadPayload);
                }
                ext.epoch = Some(EpochRef {
                    group: GroupTag(array(&value[..8])),
                    epoch: u64::from_le_bytes(array(&value[8..16])),
                });
            } else if *kind == EXT_ML_KEM_512 {
                if len != pq::EK_LEN || ext.ml_kem_512.is_some() {
                    return Err(Error::BadPayload);
                }
                let mut ek = Box::new([0u8; pq::EK_LEN]);
                ek.copy_from_slice(value);
                ext.ml_kem_512 = Some(ek);
            }
            b = tail;
        }
        Ok(ext)
    }
}

/// The psk2 value of a handshake that uses a network key: a KDF of the node's base
/// psk and the key, so that neither alone is enough (§5.6).
pub fn network_psk(base: &Psk, key: &[u8; 32]) -> Psk {
    let mut input = Zeroizing::new([0u8; 64]);
    input[..32].copy_from_slice(base);
    input[32..].copy_from_slice(key);
    blake3::derive_key(NETWORK_PSK_CONTEXT, &input[..])
}

/// Why a handshake message was refused. Every variant is the remote side's fault or an
/// attack; none is fatal to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("Noise message failed to decrypt or authenticate")]
    Noise,
    #[error("handshake payload is malformed")]
    BadPayload,
    #[error("sender's wallet key is not a valid ed25519 key")]
    BadPublicKey,
    #[error("identity binding does not verify")]
    BadBinding,
    #[error("responder's identity is not the one we initiated to")]
    UnexpectedResponder,
    #[error("cookie reply does not decrypt")]
    BadCookie,
    #[error("responder chose a data cipher we did not offer")]
    UnofferedCipher,
    #[error("responder sent an ML-KEM ciphertext we did not ask for")]
    UnofferedKem,
    #[error("classical handshake refused: the hybrid post-quantum mode is required")]
    PqRequired,
    #[error("initiation offers no ML-KEM encapsulation key")]
    NoKemOffer,
    #[error("initiator's ML-KEM encapsulation key is invalid")]
    BadKemKey,
}

/// What we know about the remote side of a handshake: its wallet key and Noise key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// Wallet public key (derives the address).
    pub public_key: PublicKey,
    /// Noise static public key, bound to `public_key`.
    pub noise_key: NoisePublicKey,
}

/// Transport keys and indices of a completed handshake.
pub struct Established {
    /// Key for data we send.
    pub send_key: Zeroizing<[u8; 32]>,
    /// Key for data we receive.
    pub recv_key: Zeroizing<[u8; 32]>,
    /// Our session index (the peer puts it in data it sends us).
    pub local_index: u32,
    /// The peer's session index (we put it in data we send).
    pub remote_index: u32,
    /// The authenticated peer.
    pub remote: Remote,
    /// Whether we initiated.
    pub initiator: bool,
    /// The data cipher both sides agreed on (docs/protocol.md §6.1).
    pub cipher: DataCipher,
    /// The KEM whose secret is in psk2 when the handshake was hybrid (§5.7).
    pub pq: Option<Kem>,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("remote", &self.remote)
            .field("initiator", &self.initiator)
            .field("cipher", &self.cipher)
            .field("pq", &self.pq)
            .finish_non_exhaustive()
    }
}

/// Start a handshake to `remote` (docs/protocol.md §5.2) that offers ChaCha20-Poly1305
/// only. Returns the state waiting for the response and the initiation, with mac1 set
/// and mac2 from `cookie` if any.
pub fn initiate(
    local: &Identity,
    remote: Remote,
    psk: &Psk,
    sender: u32,
    timestamp: UnixTime,
    cookie: Option<&Cookie>,
    seed: [u8; 32],
) -> Result<(ExpectResponse, Vec<u8>), Error> {
    initiate_offering(local, remote, psk, sender, timestamp, cookie, seed, false)
}

/// [`initiate`], also offering AES-256-GCM for data when `aes_256_gcm` is set.
#[allow(clippy::too_many_arguments)]
pub fn initiate_offering(
    local: &Identity,
    remote: Remote,
    psk: &Psk,
    sender: u32,
    timestamp: UnixTime,
    cookie: Option<&Cookie>,
    seed: [u8; 32],
    aes_256_gcm: bool,
) -> Result<(ExpectResponse, Vec<u8>), Error> {
    initiate_extended(
        local,
        remote,
        psk,
        sender,
        timestamp,
        cookie,
        seed,
        aes_256_gcm,
        &Extensions::default(),
    )
}

/// [`initiate_offering`] with extensions after the timestamp (§5.6); `psk` is the
/// psk2 value to use ([`network_psk`] when `ext` names an epoch). Fails with
/// [`Error::BadPayload`] if the initiation would exceed [`wire::INIT_MAX_LEN`].
#[allow(clippy::too_many_arguments)]
pub fn initiate_extended(
    local: &Identity,
    remote: Remote,
    psk: &Psk,
    sender: u32,
    timestamp: UnixTime,
    cookie: Option<&Cookie>,
    seed: [u8; 32],
    aes_256_gcm: bool,
    ext: &Extensions,
) -> Result<(ExpectResponse, Vec<u8>), Error> {
    initiate_pq(
        local,
        remote,
        psk,
        sender,
        timestamp,
        cookie,
        seed,
        aes_256_gcm,
        ext,
        PqMode::Off,
        &[0; 64],
    )
}

/// [`initiate_extended`] in post-quantum mode `pq` (§5.7): with [`PqMode::Auto`] or
/// [`PqMode::Required`] the initiation offers a hybrid handshake, carrying the
/// ML-KEM-512 encapsulation key of `kem_seed` ([`EXT_ML_KEM_512`], which must not be in
/// `ext`) and the [`wire::cipher::OFFER_ML_KEM_512`] bit; with `Required` only a hybrid
/// response completes it. `psk` is the classical psk2 value, to which a hybrid
/// response's KEM secret is added ([`pq::hybrid_psk`]).
#[allow(clippy::too_many_arguments)]
pub fn initiate_pq(
    local: &Identity,
    remote: Remote,
    psk: &Psk,
    sender: u32,
    timestamp: UnixTime,
    cookie: Option<&Cookie>,
    seed: [u8; 32],
    aes_256_gcm: bool,
    ext: &Extensions,
    pq: PqMode,
    kem_seed: &[u8; 64],
) -> Result<(ExpectResponse, Vec<u8>), Error> {
    if ext.ml_kem_512.is_some() {
        return Err(Error::BadPayload);
    }
    let kem = (pq != PqMode::Off).then(|| pq::KeyPair::from_seed(kem_seed));
    let mut ext = ext.clone();
    ext.ml_kem_512 = kem.as_ref().map(|k| Box::new(*k.encapsulation_key()));
    write_initiation(
        local,
        remote,
        psk,
        sender,
        timestamp,
        cookie,
        seed,
        aes_256_gcm,
        &ext,
        kem,
        pq == PqMode::Required,
    )
}

/// Write an initiation carrying `ext` as it is; the offer bit follows
/// `ext.ml_kem_512`, `kem` is the key pair behind it, if we hold one.
#[allow(clippy::too_many_arguments)]
fn write_initiation(
    local: &Identity,
    remote: Remote,
    psk: &Psk,
    sender: u32,
    timestamp: UnixTime,
    cookie: Option<&Cookie>,
    seed: [u8; 32],
    aes_256_gcm: bool,
    ext: &Extensions,
    kem: Option<pq::KeyPair>,
    require_pq: bool,
) -> Result<(ExpectResponse, Vec<u8>), Error> {
    let extra = ext.encode();
    if wire::INIT_LEN + extra.len() > wire::INIT_MAX_LEN {
        return Err(Error::BadPayload);
    }
    let mut hs = builder(seed)
        .local_private_key(local.noise().secret())
        .and_then(|b| b.remote_public_key(&remote.noise_key.0))
        .and_then(|b| b.psk(2, psk))
        .and_then(|b| b.build_initiator())
        .map_err(|_| Error::Noise)?;
    let mut payload = vec![0u8; wire::INIT_PAYLOAD_LEN + extra.len()];
    payload[..32].copy_from_slice(&local.public_key().to_bytes());
    payload[32..96].copy_from_slice(&local.binding().0);
    payload[96..104].copy_from_slice(&timestamp.as_nanos().to_le_bytes());
    payload[104..].copy_from_slice(&extra);
    let mut noise = vec![0u8; wire::INIT_NOISE_LEN + extra.len()];
    let n = hs
        .write_message(&payload, &mut noise)
        .map_err(|_| Error::Noise)?;
    debug_assert_eq!(n, noise.len());
    let mut ciphers = if aes_256_gcm {
        wire::cipher::OFFER_AES_256_GCM
    } else {
        0
    };
    if !extra.is_empty() {
        ciphers |= wire::INIT_EXTENDED;
    }
    if ext.ml_kem_512.is_some() {
        ciphers |= wire::cipher::OFFER_ML_KEM_512;
    }
    let repr = InitiationRepr {
        ciphers,
        sender,
        noise,
        mac1: [0; MAC_LEN],
        mac2: [0; MAC_LEN],
    };
    let mut msg = vec![0u8; repr.buffer_len()];
    repr.emit(&mut msg);
    let mac1 = write_macs(&mut msg, &remote.noise_key, cookie);
    Ok((
        ExpectResponse {
            hs,
            sender,
            remote,
            mac1,
            offered_aes: aes_256_gcm,
            psk: Zeroizing::new(*psk),
            kem,
            require_pq,
        },
        msg,
    ))
}

/// Initiator state after sending an initiation.
pub struct ExpectResponse {
    hs: snow::HandshakeState,
    sender: u32,
    remote: Remote,
    mac1: [u8; MAC_LEN],
    offered_aes: bool,
    /// The classical psk2 value (the hybrid one is derived from it).
    psk: Zeroizing<Psk>,
    /// Our ephemeral ML-KEM key pair when we offered a hybrid handshake.
    kem: Option<pq::KeyPair>,
    require_pq: bool,
}

impl fmt::Debug for ExpectResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectResponse")
            .field("sender", &self.sender)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl ExpectResponse {
    /// Our session index, which the response must echo.
    pub fn sender(&self) -> u32 {
        self.sender
    }

    /// The responder we are talking to.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Whether the initiation offered a hybrid handshake.
    pub fn offered_pq(&self) -> bool {
        self.kem.is_some()
    }

    /// Complete the handshake with a response whose receiver is [`Self::sender`] and
    /// whose mac1 the caller has checked. Consumes the state: a failed response ends this
    /// attempt (the node's retry timer starts a new one).
    pub fn handle_response(mut self, p: &ResponsePacket<&[u8]>) -> Result<Established, Error> {
        // Only a cipher we offered (ChaCha20-Poly1305 needs no offer).
        let cipher = match DataCipher::from_choice(p.cipher()) {
            Some(DataCipher::Aes256Gcm) if !self.offered_aes => return Err(Error::UnofferedCipher),
            Some(c) => c,
            None => return Err(Error::UnofferedCipher),
        };
        // A hybrid response's ciphertext is read before message 2: its secret is in the
        // psk2 that message 2 mixes. A tampered ciphertext decapsulates to another
        // secret (implicit rejection), so message 2 then fails to authenticate.
        let pq = match (p.kem_ciphertext(), &self.kem) {
            (Some(_), None) => return Err(Error::UnofferedKem),
            (None, _) if self.require_pq => return Err(Error::PqRequired),
            (None, _) => None,
            (Some(ct), Some(kp)) => {
                let ss = kp.decapsulate(ct).map_err(|_| Error::BadPayload)?;
                let psk =
                    Zeroizing::new(pq::hybrid_psk(&self.psk, &ss, ct, kp.encapsulation_key()));
                self.hs.set_psk(2, &psk[..]).map_err(|_| Error::Noise)?;
                Some(Kem::MlKem512)
            }
        };
        let mut payload = [0u8; wire::RESPONSE_PAYLOAD_LEN + 16];
        let n = self
            .hs
            .read_message(p.noise(), &mut payload)
            .map_err(|_| Error::Noise)?;
        if n != wire::RESPONSE_PAYLOAD_LEN {
            return Err(Error::BadPayload);
        }
        let public_key = parse_key(&payload[..32])?;
        let binding = Binding(array(&payload[32..96]));
        if public_key != self.remote.public_key {
            return Err(Error::UnexpectedResponder);
        }
        binding
            .verify(&public_key, &self.remote.noise_key)
            .map_err(|_| Error::BadBinding)?;
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        Ok(Established {
            send_key: Zeroizing::new(i2r),
            recv_key: Zeroizing::new(r2i),
            local_index: self.sender,
            remote_index: p.sender(),
            remote: self.remote,
            initiator: true,
            cipher,
            pq,
        })
    }

    /// Open a cookie reply to this initiation (docs/protocol.md §5.4).
    pub fn open_cookie(&self, reply: &CookieReplyRepr, now: Instant) -> Result<Cookie, Error> {
        open_cookie(&self.remote.noise_key, &self.mac1, reply, now)
    }
}

/// Read an initiation addressed to `local` (the caller has checked mac1, and mac2 when
/// under load). Does the DH work and checks the initiator's binding; the caller then
/// checks the timestamp and its policy before [`ExpectAccept::accept`]. `psk` is the
/// base psk2 value; when the initiation names a network key epoch
/// ([`ExpectAccept::extensions`]) the caller replaces it with
/// [`ExpectAccept::use_psk`] before accepting (psk2 is first used by the response).
pub fn read_initiation(
    local: &Identity,
    psk: &Psk,
    p: &InitiationPacket<&[u8]>,
    seed: [u8; 32],
) -> Result<ExpectAccept, Error> {
    let mut hs = builder(seed)
        .local_private_key(local.noise().secret())
        .and_then(|b| b.psk(2, psk))
        .and_then(|b| b.build_responder())
        .map_err(|_| Error::Noise)?;
    let mut payload = vec![0u8; p.noise().len()];
    let n = hs
        .read_message(p.noise(), &mut payload)
        .map_err(|_| Error::Noise)?;
    // Extended exactly when the payload is longer than the classical one.
    if n < wire::INIT_PAYLOAD_LEN || p.extended() != (n > wire::INIT_PAYLOAD_LEN) {
        return Err(Error::BadPayload);
    }
    let extensions = Extensions::decode(&payload[wire::INIT_PAYLOAD_LEN..n])?;
    // The offer bit outside Noise must agree with the authenticated payload.
    let offer_bit = p.ciphers() & wire::cipher::OFFER_ML_KEM_512 != 0;
    if offer_bit != extensions.ml_kem_512.is_some() {
        return Err(Error::BadPayload);
    }
    let public_key = parse_key(&payload[..32])?;
    let binding = Binding(array(&payload[32..96]));
    let timestamp = UnixTime::from_nanos(u64::from_le_bytes(array(&payload[96..104])));
    let noise_key = NoisePublicKey(
        hs.get_remote_static()
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Noise)?,
    );
    binding
        .verify(&public_key, &noise_key)
        .map_err(|_| Error::BadBinding)?;
    Ok(ExpectAccept {
        hs,
        initiator: Remote {
            public_key,
            noise_key,
        },
        initiator_index: p.sender(),
        timestamp,
        offered_aes: p.ciphers() & wire::cipher::OFFER_AES_256_GCM != 0,
        extensions,
        psk: Zeroizing::new(*psk),
        kem_ciphertext: None,
    })
}

/// Responder state after an authenticated initiation, before answering.
pub struct ExpectAccept {
    hs: snow::HandshakeState,
    initiator: Remote,
    initiator_index: u32,
    timestamp: UnixTime,
    offered_aes: bool,
    extensions: Extensions,
    /// The classical psk2 value in use (the hybrid one is derived from it).
    psk: Zeroizing<Psk>,
    /// The ML-KEM ciphertext once [`ExpectAccept::encapsulate`] ran.
    kem_ciphertext: Option<Box<[u8; pq::CT_LEN]>>,
}

impl fmt::Debug for ExpectAccept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectAccept")
            .field("initiator", &self.initiator)
            .field("initiator_index", &self.initiator_index)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl ExpectAccept {
    /// The authenticated initiator.
    pub fn initiator(&self) -> &Remote {
        &self.initiator
    }

    /// The initiator's timestamp (must exceed the last accepted one from it).
    pub fn timestamp(&self) -> UnixTime {
        self.timestamp
    }

    /// Whether the initiator offered AES-256-GCM.
    pub fn offered_aes(&self) -> bool {
        self.offered_aes
    }

    /// What the initiation carried after its timestamp.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Use `psk` for psk2 instead of the base value given to [`read_initiation`]
    /// ([`network_psk`] of the epoch the initiation names).
    pub fn use_psk(&mut self, psk: &Psk) -> Result<(), Error> {
        self.hs.set_psk(2, psk).map_err(|_| Error::Noise)?;
        *self.psk = *psk;
        Ok(())
    }

    /// Whether the initiator offered a hybrid handshake (an authenticated ML-KEM-512
    /// encapsulation key in its payload).
    pub fn offered_pq(&self) -> bool {
        self.extensions.ml_kem_512.is_some()
    }

    /// Answer with ChaCha20-Poly1305: write the response and derive the transport keys.
    pub fn accept(self, local: &Identity, sender: u32) -> Result<(Established, Vec<u8>), Error> {
        self.accept_choosing(local, sender, false)
    }

    /// Answer, choosing AES-256-GCM when the initiator offered it and `aes_256_gcm` is
    /// set, ChaCha20-Poly1305 otherwise. The answer is hybrid if [`Self::encapsulate`]
    /// ran, classical otherwise (also when the initiator offered a hybrid handshake).
    pub fn accept_choosing(
        self,
        local: &Identity,
        sender: u32,
        aes_256_gcm: bool,
    ) -> Result<(Established, Vec<u8>), Error> {
        self.answer(local, sender, aes_256_gcm)
    }

    /// Encapsulate to the initiator's ML-KEM-512 key with the 32 random bytes `m` and
    /// mix the secret into psk2 (§5.7): the next accept answers hybrid. Validates the
    /// key first: [`Error::NoKemOffer`] without an offer, [`Error::BadKemKey`] for a
    /// key that fails the FIPS 203 checks. Call after every other check, and after
    /// [`Self::use_psk`].
    pub fn encapsulate(&mut self, m: &[u8; 32]) -> Result<(), Error> {
        let ek = self
            .extensions
            .ml_kem_512
            .as_ref()
            .ok_or(Error::NoKemOffer)?;
        let (ct, ss) = pq::encapsulate(&ek[..], m).map_err(|_| Error::BadKemKey)?;
        let psk = Zeroizing::new(pq::hybrid_psk(&self.psk, &ss, &ct[..], &ek[..]));
        self.hs.set_psk(2, &psk[..]).map_err(|_| Error::Noise)?;
        self.kem_ciphertext = Some(ct);
        Ok(())
    }

    /// Answer hybrid (§5.7): validate the initiator's ML-KEM-512 encapsulation key,
    /// encapsulate with the 32 random bytes `m`, mix the secret into psk2 and send the
    /// ciphertext with the response. [`Error::NoKemOffer`] if there was no offer,
    /// [`Error::BadKemKey`] if the key fails validation.
    pub fn accept_hybrid(
        mut self,
        local: &Identity,
        sender: u32,
        aes_256_gcm: bool,
        m: &[u8; 32],
    ) -> Result<(Established, Vec<u8>), Error> {
        self.encapsulate(m)?;
        self.answer(local, sender, aes_256_gcm)
    }

    fn answer(
        mut self,
        local: &Identity,
        sender: u32,
        aes_256_gcm: bool,
    ) -> Result<(Established, Vec<u8>), Error> {
        let ct = self.kem_ciphertext.take();
        let cipher = if aes_256_gcm && self.offered_aes {
            DataCipher::Aes256Gcm
        } else {
            DataCipher::ChaCha20Poly1305
        };
        let mut payload = [0u8; wire::RESPONSE_PAYLOAD_LEN];
        payload[..32].copy_from_slice(&local.public_key().to_bytes());
        payload[32..96].copy_from_slice(&local.binding().0);
        let mut noise = [0u8; wire::RESPONSE_NOISE_LEN];
        self.hs
            .write_message(&payload, &mut noise)
            .map_err(|_| Error::Noise)?;
        let pq = ct.as_ref().map(|_| Kem::MlKem512);
        let repr = ResponseRepr {
            cipher: cipher.choice(),
            sender,
            receiver: self.initiator_index,
            kem_ciphertext: ct.map(|c| c.to_vec()),
            noise,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let mut msg = vec![0u8; repr.buffer_len()];
        repr.emit(&mut msg);
        write_macs(&mut msg, &self.initiator.noise_key, None);
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        let est = Established {
            send_key: Zeroizing::new(r2i),
            recv_key: Zeroizing::new(i2r),
            local_index: sender,
            remote_index: self.initiator_index,
            remote: self.initiator,
            initiator: false,
            cipher,
            pq,
        };
        Ok((est, msg))
    }
}

// ---------------------------------------------------------------- MACs and cookies

/// A cookie received from a responder under load.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie {
    value: [u8; 16],
    received: Instant,
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cookie")
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Cookie {
    /// Whether the cookie may still be used for mac2 at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.received) < COOKIE_SECRET_LIFETIME
    }

    /// When it was received.
    pub fn received(&self) -> Instant {
        self.received
    }
}

/// Set mac1 (keyed by the receiver's Noise key) and mac2 (from `cookie`, else zero) in
/// a handshake message. Returns mac1.
pub fn write_macs(
    msg: &mut [u8],
    receiver: &NoisePublicKey,
    cookie: Option<&Cookie>,
) -> [u8; MAC_LEN] {
    let len = msg.len();
    let mac1 = mac(&mac1_key(receiver), &msg[..len - 2 * MAC_LEN]);
    msg[len - 2 * MAC_LEN..len - MAC_LEN].copy_from_slice(&mac1);
    let mac2 = match cookie {
        Some(c) => mac(
            &blake3::derive_key(MAC2_CONTEXT, &c.value),
            &msg[..len - MAC_LEN],
        ),
        None => [0u8; MAC_LEN],
    };
    msg[len - MAC_LEN..].copy_from_slice(&mac2);
    mac1
}

/// Check mac1 of a handshake message addressed to `local_noise`'s owner.
pub fn check_mac1(msg: &[u8], local_noise: &NoisePublicKey) -> bool {
    check_mac1_with(msg, &mac1_key(local_noise))
}

fn check_mac1_with(msg: &[u8], key: &[u8; 32]) -> bool {
    let len = msg.len();
    if len < 2 * MAC_LEN {
        return false;
    }
    let expected = mac(key, &msg[..len - 2 * MAC_LEN]);
    constant_time_eq(&expected, &msg[len - 2 * MAC_LEN..len - MAC_LEN])
}

/// Cookies for source addresses (docs/protocol.md §5.4): a keyed hash of the source
/// under a random secret that is replaced when it is first needed and whenever it is
/// [`COOKIE_SECRET_LIFETIME`] old. Used for initiations (inside [`CookieChecker`]) and,
/// with a secret of its own, for record requests (§7.7).
#[derive(Clone)]
pub struct SourceCookies {
    secret: [u8; 32],
    born: Option<Instant>,
    rng: Rng,
}

impl fmt::Debug for SourceCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceCookies").finish_non_exhaustive()
    }
}

impl SourceCookies {
    /// Cookies whose secrets come from a generator seeded with `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        SourceCookies {
            secret: [0; 32],
            born: None,
            rng: Rng::from_seed(seed),
        }
    }

    /// The cookie `source` gets now.
    pub fn cookie_for(&mut self, source: SocketAddr, now: Instant) -> [u8; MAC_LEN] {
        let stale = self
            .born
            .is_none_or(|born| now.saturating_duration_since(born) >= COOKIE_SECRET_LIFETIME);
        if stale {
            self.secret = self.rng.bytes();
            self.born = Some(now);
        }
        source_cookie(&self.secret, source)
    }

    /// Whether `cookie` is the one `source` gets now (constant-time).
    pub fn check(&mut self, source: SocketAddr, cookie: &[u8; MAC_LEN], now: Instant) -> bool {
        constant_time_eq(&self.cookie_for(source, now), cookie)
    }

    fn random<const N: usize>(&mut self) -> [u8; N] {
        self.rng.bytes()
    }
}

/// `trunc16(BLAKE3-keyed(secret, ip[16] ‖ port u16be))`, an IPv4 address followed by
/// 12 zero bytes (docs/protocol.md §5.4).
pub fn source_cookie(secret: &[u8; 32], source: SocketAddr) -> [u8; MAC_LEN] {
    let mut src = [0u8; 18];
    match source.ip() {
        std::net::IpAddr::V4(ip) => src[..4].copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => src[..16].copy_from_slice(&ip.octets()),
    }
    src[16..].copy_from_slice(&source.port().to_be_bytes());
    mac(secret, &src)
}

/// The responder's side of cookies: checks macs and mints cookie replies. One per local
/// identity.
#[derive(Clone)]
pub struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    cookies: SourceCookies,
}

impl fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieChecker").finish_non_exhaustive()
    }
}

impl CookieChecker {
    /// A checker for messages addressed to the owner of `local_noise`.
    pub fn new(local_noise: &NoisePublicKey, seed: [u8; 32]) -> Self {
        CookieChecker {
            mac1_key: mac1_key(local_noise),
            cookie_key: blake3::derive_key(COOKIE_KEY_CONTEXT, &local_noise.0),
            cookies: SourceCookies::new(seed),
        }
    }

    /// Whether mac1 is valid.
    pub fn check_mac1(&self, msg: &[u8]) -> bool {
        check_mac1_with(msg, &self.mac1_key)
    }

    /// Whether mac2 is valid for a cookie we would give `source` now.
    pub fn check_mac2(&mut self, msg: &[u8], source: SocketAddr, now: Instant) -> bool {
        let len = msg.len();
        if len < 2 * MAC_LEN {
            return false;
        }
        let cookie = self.cookies.cookie_for(source, now);
        let expected = mac(
            &blake3::derive_key(MAC2_CONTEXT, &cookie),
            &msg[..len - MAC_LEN],
        );
        constant_time_eq(&expected, &msg[len - MAC_LEN..])
    }

    /// A cookie reply to the initiation `msg` from `source`. No DH work.
    pub fn cookie_reply(
        &mut self,
        msg: &InitiationPacket<&[u8]>,
        source: SocketAddr,
        now: Instant,
    ) -> CookieReplyRepr {
        let cookie = self.cookies.cookie_for(source, now);
        let nonce: [u8; wire::COOKIE_NONCE_LEN] = self.cookies.random();
        let aead = XChaCha20Poly1305::new((&self.cookie_key).into());
        let mac1 = msg.mac1();
        let sealed = aead
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &cookie,
                    aad: &mac1,
                },
            )
            .unwrap_or_default();
        let mut sealed_cookie = [0u8; wire::COOKIE_SEALED_LEN];
        if sealed.len() == sealed_cookie.len() {
            sealed_cookie.copy_from_slice(&sealed);
        }
        CookieReplyRepr {
            receiver: msg.sender(),
            nonce,
            sealed_cookie,
        }
    }
}

fn open_cookie(
    responder: &NoisePublicKey,
    mac1_sent: &[u8; MAC_LEN],
    reply: &CookieReplyRepr,
    now: Instant,
) -> Result<Cookie, Error> {
    let key = blake3::derive_key(COOKIE_KEY_CONTEXT, &responder.0);
    let aead = XChaCha20Poly1305::new((&key).into());
    let plain = aead
        .decrypt(
            (&reply.nonce).into(),
            Payload {
                msg: &reply.sealed_cookie,
                aad: mac1_sent,
            },
        )
        .map_err(|_| Error::BadCookie)?;
    let value: [u8; 16] = plain.as_slice().try_into().map_err(|_| Error::BadCookie)?;
    Ok(Cookie {
        value,
        received: now,
    })
}

fn mac1_key(noise: &NoisePublicKey) -> [u8; 32] {
    blake3::derive_key(MAC1_CONTEXT, &noise.0)
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; MAC_LEN] {
    let h = blake3::keyed_hash(key, data);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&h.as_bytes()[..MAC_LEN]);
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_key(b: &[u8]) -> Result<PublicKey, Error> {
    PublicKey::from_bytes(&array(b)).map_err(|_| Error::BadPublicKey)
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

// ---------------------------------------------------------------- snow plumbing

fn builder(seed: [u8; 32]) -> snow::Builder<'static> {
    // The pattern string is a constant that snow parses; it cannot fail at run time
    // (the unit test `protocol_name_parses` pins that).
    let params: snow::params::NoiseParams = PROTOCOL
        .parse()
        .unwrap_or_else(|_| unreachable!("constant Noise pattern"));
    let b = snow::Builder::with_resolver(params, Box::new(SeededResolver { seed }));
    // The prologue is a constant of valid length.
    match b.prologue(PROLOGUE) {
        Ok(b) => b,
        Err(_) => unreachable!("constant prologue"),
    }
}

/// Snow's primitives, but ephemeral keys come from the caller's seed, not the OS.
struct SeededResolver {
    seed: [u8; 32],
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Identity, Identity) {
        (Identity::generate(&[1; 64]), Identity::generate(&[2; 64]))
    }

    fn remote(id: &Identity) -> Remote {
        Remote {
            public_key: id.public_key(),
            noise_key: id.noise().public_key(),
        }
    }

    #[test]
    fn protocol_name_parses() {
        assert!(PROTOCOL.parse::<snow::params::NoiseParams>().is_ok());
    }

    #[test]
    fn full_handshake_derives_matching_keys() {
        let (a, b) = ids();
        let psk = [0u8; 32];
        let (expect, init) = initiate(
            &a,
            remote(&b),
            &psk,
            11,
            UnixTime::from_secs(5),
            None,
            [7; 32],
        )
        .unwrap();
        assert!(check_mac1(&init, &b.noise().public_key()));
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        assert_eq!(acc.initiator(), &remote(&a));
        assert_eq!(acc.timestamp(), UnixTime::from_secs(5));
        let (eb, resp) = acc.accept(&b, 22).unwrap();
        assert!(check_mac1(&resp, &a.noise().public_key()));
        let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
        let ea = expect.handle_response(&rp).unwrap();
        assert_eq!(*ea.send_key, *eb.recv_key);
        assert_eq!(*ea.recv_key, *eb.send_key);
        assert_eq!((ea.local_index, ea.remote_index), (11, 22));
        assert_eq!((eb.local_index, eb.remote_index), (22, 11));
    }

    /// One handshake with the given offer and responder policy; the agreed ciphers of
    /// both sides, or the initiator's error (the response's choice byte replaced by
    /// `tamper` first, with mac1 recomputed as an on-path attacker can).
    fn negotiate(offer: bool, allow: bool, tamper: Option<u8>) -> Result<DataCipher, Error> {
        let (a, b) = ids();
        let psk = [0u8; 32];
        let (expect, init) = initiate_offering(
            &a,
            remote(&b),
            &psk,
            11,
            UnixTime::from_secs(5),
            None,
            [7; 32],
            offer,
        )?;
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32])?;
        assert_eq!(acc.offered_aes(), offer);
        let (eb, mut resp) = acc.accept_choosing(&b, 22, allow)?;
        if let Some(choice) = tamper {
            resp[1] = choice;
            write_macs(&mut resp, &a.noise().public_key(), None);
        }
        let rp = ResponsePacket::new_checked(resp.as_slice()).map_err(|_| Error::BadPayload)?;
        let ea = expect.handle_response(&rp)?;
        assert_eq!(ea.cipher, eb.cipher);
        Ok(ea.cipher)
    }

    #[test]
    fn aes_is_used_only_when_offered_and_allowed() {
        assert_eq!(negotiate(true, true, None), Ok(DataCipher::Aes256Gcm));
        assert_eq!(
            negotiate(true, false, None),
            Ok(DataCipher::ChaCha20Poly1305)
        );
        assert_eq!(
            negotiate(false, true, None),
            Ok(DataCipher::ChaCha20Poly1305)
        );
        assert_eq!(
            negotiate(false, false, None),
            Ok(DataCipher::ChaCha20Poly1305)
        );
        // A response naming AES-256-GCM that was never offered fails the attempt; an
        // undefined choice never even parses.
        assert_eq!(
            negotiate(false, false, Some(wire::cipher::AES_256_GCM)),
            Err(Error::UnofferedCipher)
        );
        assert_eq!(negotiate(true, true, Some(9)), Err(Error::BadPayload));
    }

    #[test]
    fn psk_mismatch_fails() {
        let (a, b) = ids();
        let (expect, init) = initiate(
            &a,
            remote(&b),
            &[1; 32],
            1,
            UnixTime::from_secs(5),
            None,
            [7; 32],
        )
        .unwrap();
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &[2; 32], &ip, [8; 32]).unwrap();
        let (_, resp) = acc.accept(&b, 2).unwrap();
        let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
        assert_eq!(expect.handle_response(&rp).err(), Some(Error::Noise));
    }

    #[test]
    fn extensions_round_trip_and_refuse_malformed_bytes() {
        let e = Extensions {
            epoch: Some(EpochRef {
                group: GroupTag::of("ops"),
                epoch: 9,
            }),
            ml_kem_512: None,
        };
        let b = e.encode();
        assert_eq!(b.len(), 3 + EXT_EPOCH_LEN);
        assert_eq!(Extensions::decode(&b), Ok(e.clone()));
        assert_eq!(Extensions::decode(&[]), Ok(Extensions::default()));
        // Unknown types are skipped.
        let mut unknown = vec![9, 2, 0, 0xaa, 0xbb];
        unknown.extend_from_slice(&b);
        assert_eq!(Extensions::decode(&unknown), Ok(e));
        // Truncated anywhere, twice, or the wrong length: refused.
        for n in 1..b.len() {
            assert_eq!(Extensions::decode(&b[..n]), Err(Error::BadPayload), "{n}");
        }
        let twice = [b.clone(), b.clone()].concat();
        assert_eq!(Extensions::decode(&twice), Err(Error::BadPayload));
        let mut short = b.clone();
        short[1] = 15;
        short.pop();
        assert_eq!(Extensions::decode(&short), Err(Error::BadPayload));
    }

    #[test]
    fn an_epoch_extension_needs_the_network_psk_on_both_sides() {
        let (a, b) = ids();
        let ext = Extensions {
            epoch: Some(EpochRef {
                group: GroupTag::of("ops"),
                epoch: 3,
            }),
            ml_kem_512: None,
        };
        let psk2 = network_psk(&[0; 32], &[5; 32]);
        for (responder_psk, works) in [(Some(psk2), true), (None, false)] {
            let (expect, init) = initiate_extended(
                &a,
                remote(&b),
                &psk2,
                1,
                UnixTime::from_secs(5),
                None,
                [7; 32],
                false,
                &ext,
            )
            .unwrap();
            let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
            let mut acc = read_initiation(&b, &[0; 32], &ip, [8; 32]).unwrap();
            assert_eq!(acc.extensions(), &ext);
            if let Some(psk) = responder_psk {
                acc.use_psk(&psk).unwrap();
            }
            let (_, resp) = acc.accept(&b, 2).unwrap();
            let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
            assert_eq!(expect.handle_response(&rp).is_ok(), works);
        }
        // The psk2 value depends on both the base psk and the key.
        assert_ne!(network_psk(&[1; 32], &[5; 32]), psk2);
        assert_ne!(network_psk(&[0; 32], &[6; 32]), psk2);
    }

    #[test]
    fn the_extended_bit_must_match_the_payload() {
        // Bit 7 set on a classical initiation (or cleared on an extended one): the
        // length check refuses it before any DH work.
        let (a, b) = ids();
        let (_, mut init) = initiate(
            &a,
            remote(&b),
            &[0; 32],
            1,
            UnixTime::from_secs(5),
            None,
            [7; 32],
        )
        .unwrap();
        init[1] |= wire::INIT_EXTENDED;
        assert!(InitiationPacket::new_checked(init.as_slice()).is_err());
    }

    /// A hybrid (or not) initiation from `a` to `b` in mode `pq`.
    fn pq_initiation(
        a: &Identity,
        b: &Identity,
        psk: &Psk,
        pq: PqMode,
    ) -> (ExpectResponse, Vec<u8>) {
        initiate_pq(
            a,
            remote(b),
            psk,
            11,
            UnixTime::from_secs(5),
            None,
            [7; 32],
            false,
            &Extensions::default(),
            pq,
            &[9; 64],
        )
        .unwrap()
    }

    #[test]
    fn hybrid_round_trip_mixes_the_kem_secret() {
        let (a, b) = ids();
        let psk = [0u8; 32];
        let (expect, init) = pq_initiation(&a, &b, &psk, PqMode::Auto);
        assert!(expect.offered_pq());
        assert_eq!(init.len(), wire::INIT_LEN + 3 + pq::EK_LEN);
        assert_eq!(init.len(), 1043);
        assert_ne!(init[1] & wire::cipher::OFFER_ML_KEM_512, 0);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        assert!(acc.offered_pq());
        let (eb, resp) = acc.accept_hybrid(&b, 22, false, &[6; 32]).unwrap();
        assert_eq!(resp.len(), wire::RESPONSE_HYBRID_LEN);
        assert_eq!(resp.len(), 956);
        let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
        assert!(rp.hybrid());
        let ea = expect.handle_response(&rp).unwrap();
        assert_eq!((ea.pq, eb.pq), (Some(Kem::MlKem512), Some(Kem::MlKem512)));
        assert_eq!(*ea.send_key, *eb.recv_key);
        assert_eq!(*ea.recv_key, *eb.send_key);
        // The same handshake classically gives other keys: the secret is in psk2.
        let (expect, init) = pq_initiation(&a, &b, &psk, PqMode::Auto);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        let (ec, resp) = acc.accept_choosing(&b, 22, false).unwrap();
        assert_eq!(ec.pq, None);
        assert_ne!(*ec.send_key, *eb.send_key);
        let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
        assert_eq!(expect.handle_response(&rp).unwrap().pq, None);
    }

    #[test]
    fn a_tampered_ciphertext_or_key_fails_the_handshake() {
        let (a, b) = ids();
        let psk = [0u8; 32];
        // Ciphertext: implicit rejection gives another secret, message 2 fails.
        for at in [12, 12 + 400, 12 + pq::CT_LEN - 1] {
            let (expect, init) = pq_initiation(&a, &b, &psk, PqMode::Auto);
            let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
            let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
            let (_, mut resp) = acc.accept_hybrid(&b, 22, false, &[6; 32]).unwrap();
            resp[at] ^= 0x20;
            write_macs(&mut resp, &a.noise().public_key(), None);
            let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
            assert_eq!(expect.handle_response(&rp).err(), Some(Error::Noise));
        }
        // The key in flight: inside message 1's AEAD, so reading fails.
        let (_, mut init) = pq_initiation(&a, &b, &psk, PqMode::Auto);
        init[8 + 32 + 48 + wire::INIT_PAYLOAD_LEN + 3 + 100] ^= 1;
        write_macs(&mut init, &b.noise().public_key(), None);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        assert_eq!(
            read_initiation(&b, &psk, &ip, [8; 32]).err(),
            Some(Error::Noise)
        );
        // An authentic initiator's key that fails the FIPS 203 modulus check: an
        // error at encapsulation, before any response.
        let ext = Extensions {
            ml_kem_512: Some(Box::new([0xff; pq::EK_LEN])),
            ..Default::default()
        };
        let (_, init) = write_initiation(
            &a,
            remote(&b),
            &psk,
            11,
            UnixTime::from_secs(5),
            None,
            [7; 32],
            false,
            &ext,
            None,
            false,
        )
        .unwrap();
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let mut acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        assert!(acc.offered_pq());
        assert_eq!(acc.encapsulate(&[6; 32]), Err(Error::BadKemKey));
    }

    #[test]
    fn the_offer_and_the_choice_are_authenticated() {
        let (a, b) = ids();
        let psk = [0u8; 32];
        // Clearing the offer bit of a hybrid initiation (or setting it on one without
        // a key) disagrees with the authenticated payload.
        let (_, mut init) = pq_initiation(&a, &b, &psk, PqMode::Auto);
        init[1] &= !wire::cipher::OFFER_ML_KEM_512;
        write_macs(&mut init, &b.noise().public_key(), None);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        assert_eq!(
            read_initiation(&b, &psk, &ip, [8; 32]).err(),
            Some(Error::BadPayload)
        );
        // Rewriting a hybrid response as a classical one (ciphertext cut, bit cleared)
        // leaves message 2 under the hybrid psk2: it fails.
        let (expect, init) = pq_initiation(&a, &b, &psk, PqMode::Auto);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        let (_, resp) = acc.accept_hybrid(&b, 22, false, &[6; 32]).unwrap();
        let mut classical = [&resp[..12], &resp[12 + pq::CT_LEN..]].concat();
        classical[1] &= !wire::cipher::CHOSE_ML_KEM_512;
        write_macs(&mut classical, &a.noise().public_key(), None);
        let rp = ResponsePacket::new_checked(classical.as_slice()).unwrap();
        assert_eq!(expect.handle_response(&rp).err(), Some(Error::Noise));
    }

    #[test]
    fn required_refuses_classical_in_both_directions() {
        let (a, b) = ids();
        let psk = [0u8; 32];
        // As initiator: a classical answer to a required offer is refused.
        let (expect, init) = pq_initiation(&a, &b, &psk, PqMode::Required);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        let (_, resp) = acc.accept_choosing(&b, 22, false).unwrap();
        let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
        assert_eq!(expect.handle_response(&rp).err(), Some(Error::PqRequired));
        // As responder: a classical initiation has nothing to encapsulate to (the node
        // refuses it before this, counting `pq_refused`).
        let (_, init) = pq_initiation(&a, &b, &psk, PqMode::Off);
        assert_eq!(init.len(), wire::INIT_LEN);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        assert!(!acc.offered_pq());
        assert_eq!(
            acc.accept_hybrid(&b, 22, false, &[6; 32]).err(),
            Some(Error::NoKemOffer)
        );
        // A hybrid answer to an initiation that offered nothing is refused.
        let (expect, _) = pq_initiation(&a, &b, &psk, PqMode::Off);
        let (_, init) = pq_initiation(&a, &b, &psk, PqMode::Auto);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &psk, &ip, [8; 32]).unwrap();
        let (_, resp) = acc.accept_hybrid(&b, 22, false, &[6; 32]).unwrap();
        let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
        assert_eq!(expect.handle_response(&rp).err(), Some(Error::UnofferedKem));
    }

    #[test]
    fn off_ignores_an_offer_and_a_network_key_combines_with_the_kem() {
        let (a, b) = ids();
        // `off` as responder: an offer answered classically completes.
        let (expect, init) = pq_initiation(&a, &b, &[0; 32], PqMode::Auto);
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let acc = read_initiation(&b, &[0; 32], &ip, [8; 32]).unwrap();
        let (eb, resp) = acc.accept_choosing(&b, 22, false).unwrap();
        assert_eq!(resp.len(), wire::RESPONSE_LEN);
        let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
        let ea = expect.handle_response(&rp).unwrap();
        assert_eq!((ea.pq, eb.pq), (None, None));
        // Network key and KEM: both needed.
        let ext = Extensions {
            epoch: Some(EpochRef {
                group: GroupTag::of("ops"),
                epoch: 3,
            }),
            ml_kem_512: None,
        };
        let psk2 = network_psk(&[0; 32], &[5; 32]);
        for (responder_psk, works) in [(Some(psk2), true), (None, false)] {
            let (expect, init) = initiate_pq(
                &a,
                remote(&b),
                &psk2,
                1,
                UnixTime::from_secs(5),
                None,
                [7; 32],
                false,
                &ext,
                PqMode::Auto,
                &[9; 64],
            )
            .unwrap();
            assert_eq!(
                init.len(),
                wire::INIT_LEN + 3 + EXT_EPOCH_LEN + 3 + pq::EK_LEN
            );
            let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
            let mut acc = read_initiation(&b, &[0; 32], &ip, [8; 32]).unwrap();
            assert_eq!(acc.extensions().epoch, ext.epoch);
            if let Some(psk) = responder_psk {
                acc.use_psk(&psk).unwrap();
            }
            let (_, resp) = acc.accept_hybrid(&b, 2, false, &[6; 32]).unwrap();
            let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
            assert_eq!(expect.handle_response(&rp).is_ok(), works);
        }
    }

    #[test]
    fn cookie_round_trip_makes_mac2_valid() {
        let (a, b) = ids();
        let src: SocketAddr = "198.18.0.1:1000".parse().unwrap();
        let mut checker = CookieChecker::new(&b.noise().public_key(), [3; 32]);
        let now = Instant::from_nanos(1);
        let (expect, init) = initiate(
            &a,
            remote(&b),
            &[0; 32],
            1,
            UnixTime::from_secs(5),
            None,
            [7; 32],
        )
        .unwrap();
        assert!(checker.check_mac1(&init));
        assert!(!checker.check_mac2(&init, src, now));
        let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
        let reply = checker.cookie_reply(&ip, src, now);
        let cookie = expect.open_cookie(&reply, now).unwrap();
        let (_, init2) = initiate(
            &a,
            remote(&b),
            &[0; 32],
            1,
            UnixTime::from_secs(6),
            Some(&cookie),
            [9; 32],
        )
        .unwrap();
        assert!(checker.check_mac2(&init2, src, now));
        let other: SocketAddr = "198.18.0.9:1000".parse().unwrap();
        assert!(!checker.check_mac2(&init2, other, now));
    }
}
