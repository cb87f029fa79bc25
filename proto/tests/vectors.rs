//! Golden vectors: frozen outputs of address derivation, record signing,
//! every wire message and a full handshake transcript, stored under `tests/vectors/`.
//!
//! The normal tests load the JSON files and check that the current code reproduces
//! every byte: derivation, encoding, signing (ed25519 is deterministic, so re-signing
//! must give identical bytes), verification and decoding of the stored bytes. A change
//! that breaks one of them is a protocol change: bump the protocol version and
//! regenerate deliberately with
//!
//! ```text
//! cargo test -p metanet-proto --test vectors -- --ignored regenerate
//! ```
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use metanet_proto::address::{Address, Ipv6Prefix};
use metanet_proto::handshake::{self, CookieChecker, Remote};
use metanet_proto::identity::hex;
use metanet_proto::record::{self, Lookup, PeerRecord, Protocol, Service, MAX_LIFETIME_SECS};
use metanet_proto::session::Keypair;
use metanet_proto::wire::{
    self, CookieReplyPacket, CookieReplyRepr, DataPacket, DataRepr, InitiationPacket,
    InitiationRepr, Kind, RecordRequestPacket, RecordRequestRepr, RecordResponsePacket,
    RecordResponseRepr, ResponsePacket, ResponseRepr,
};
use metanet_proto::{Identity, Instant, UnixTime, WalletKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------------------ file formats

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressFile {
    description: String,
    vectors: Vec<AddressVector>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressVector {
    /// ed25519 secret seed (`WalletKey::from_seed`).
    wallet_seed: String,
    public_key: String,
    /// `blake3::derive_key("metanet v1 address", public_key)[..20]`.
    address_bytes: String,
    address: String,
    ipv6: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    description: String,
    vectors: Vec<RecordVector>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordVector {
    /// 64 bytes for `Identity::generate`: wallet seed ‖ Noise secret.
    identity_seed: String,
    /// Unix seconds at which the record is verified.
    now: u64,
    /// The signed envelope.
    signed: String,
    public_key: String,
    address: String,
    noise_key: String,
    binding: String,
    endpoints: Vec<SocketAddr>,
    services: Vec<Service>,
    seq: u64,
    not_after: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFile {
    description: String,
    vectors: Vec<WireVector>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum WireVector {
    Initiation {
        sender: u32,
        noise: String,
        mac1: String,
        mac2: String,
        bytes: String,
    },
    Response {
        sender: u32,
        receiver: u32,
        noise: String,
        mac1: String,
        mac2: String,
        bytes: String,
    },
    CookieReply {
        receiver: u32,
        nonce: String,
        sealed_cookie: String,
        bytes: String,
    },
    Data {
        receiver: u32,
        counter: u64,
        ciphertext: String,
        bytes: String,
    },
    RecordRequest {
        nonce: u32,
        target: String,
        bytes: String,
    },
    RecordResponse {
        nonce: u32,
        record: String,
        bytes: String,
    },
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandshakeFile {
    description: String,
    initiator_seed: String,
    responder_seed: String,
    psk: String,
    /// The first initiation; the responder is under load and answers with a cookie.
    first: InitiationStep,
    cookie_seed: String,
    /// Where the initiation came from, as the responder saw it.
    cookie_source: SocketAddr,
    /// Monotonic nanoseconds at which the cookie is minted and received.
    cookie_now_nanos: u64,
    cookie_reply: String,
    /// The retry, carrying mac2 from the cookie.
    second: InitiationStep,
    responder_index: u32,
    responder_ephemeral_seed: String,
    response: String,
    /// Transport key for initiator-to-responder data.
    initiator_send_key: String,
    /// Transport key for responder-to-initiator data.
    responder_send_key: String,
    data: Vec<DataStep>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitiationStep {
    sender: u32,
    timestamp_nanos: u64,
    ephemeral_seed: String,
    initiation: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataStep {
    /// `initiator` or `responder`.
    from: String,
    counter: u64,
    plaintext: String,
    message: String,
}

// ------------------------------------------------------------------------ checks

#[test]
fn addresses_match_vectors() {
    let file: AddressFile = load("addresses.json");
    assert!(!file.vectors.is_empty());
    for v in &file.vectors {
        assert_eq!(&address_vector(&unhex_array(&v.wallet_seed)), v);
        // The stored text, bytes and IPv6 agree with each other, not only with the seed.
        let a: Address = v.address.parse().unwrap();
        assert_eq!(hex(a.as_bytes()), v.address_bytes);
        assert_eq!(a.ipv6().to_string(), v.ipv6);
        assert_eq!(
            Ipv6Prefix::from_ipv6(&v.ipv6.parse().unwrap()),
            Some(a.ipv6_prefix())
        );
        let public_key = unhex_array(&v.public_key);
        assert_eq!(Address::from_public_key(&public_key), a);
    }
}

/// Two of the wallet seeds are RFC 8032 §7.1 test keys; their public keys come from the
/// RFC, not from this code.
#[test]
fn address_vectors_use_rfc8032_public_keys() {
    let file: AddressFile = load("addresses.json");
    for (seed, public_key) in [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        ),
    ] {
        let v = file.vectors.iter().find(|v| v.wallet_seed == seed).unwrap();
        assert_eq!(v.public_key, public_key);
    }
}

#[test]
fn records_match_vectors() {
    let file: RecordFile = load("records.json");
    assert!(!file.vectors.is_empty());
    for v in &file.vectors {
        let id = Identity::generate(&unhex_array(&v.identity_seed));
        let now = UnixTime::from_secs(v.now);
        let signed = unhex(&v.signed);

        // The stored bytes still verify and decode to the stored fields.
        let address: Address = v.address.parse().unwrap();
        for lookup in [
            Lookup::Address(address),
            Lookup::Ipv6(address.ipv6_prefix()),
        ] {
            let rec = PeerRecord::verify(&signed, lookup, now).unwrap();
            assert_eq!(hex(&rec.public_key.to_bytes()), v.public_key);
            assert_eq!(rec.address(), address);
            assert_eq!(hex(&rec.noise_key.0), v.noise_key);
            assert_eq!(hex(&rec.binding.0), v.binding);
            assert_eq!(rec.endpoints, v.endpoints);
            assert_eq!(rec.services, v.services);
            assert_eq!(rec.seq, v.seq);
            assert_eq!(rec.not_after, v.not_after);
        }
        assert!(matches!(
            PeerRecord::verify(
                &signed,
                Lookup::Address(address),
                UnixTime::from_secs(v.not_after)
            ),
            Err(record::Error::Expired { .. })
        ));

        // Deriving and signing again from the seed gives the same bytes.
        assert_eq!(
            &record_vector(&id, v.now, &v.endpoints, &v.services, v.seq, v.not_after),
            v
        );
    }
}

#[test]
fn wire_messages_match_vectors() {
    let file: WireFile = load("wire.json");
    let mut kinds = Vec::new();
    for v in &file.vectors {
        let (kind, bytes) = match v {
            WireVector::Initiation {
                sender,
                noise,
                mac1,
                mac2,
                bytes,
            } => {
                let repr = InitiationRepr {
                    ciphers: 0,
                    sender: *sender,
                    noise: unhex(noise),
                    mac1: unhex_array(mac1),
                    mac2: unhex_array(mac2),
                };
                let b = unhex(bytes);
                let p = InitiationPacket::new_checked(&b[..]).unwrap();
                assert_eq!(InitiationRepr::parse(&p), repr);
                assert_eq!(emit(repr.buffer_len(), |buf| repr.emit(buf)), b);
                (Kind::Initiation, b)
            }
            WireVector::Response {
                sender,
                receiver,
                noise,
                mac1,
                mac2,
                bytes,
            } => {
                let repr = ResponseRepr {
                    cipher: 0,
                    sender: *sender,
                    receiver: *receiver,
                    kem_ciphertext: None,
                    noise: unhex_array(noise),
                    mac1: unhex_array(mac1),
                    mac2: unhex_array(mac2),
                };
                let b = unhex(bytes);
                let p = ResponsePacket::new_checked(&b[..]).unwrap();
                assert_eq!(ResponseRepr::parse(&p), repr);
                assert_eq!(emit(repr.buffer_len(), |buf| repr.emit(buf)), b);
                (Kind::Response, b)
            }
            WireVector::CookieReply {
                receiver,
                nonce,
                sealed_cookie,
                bytes,
            } => {
                let repr = CookieReplyRepr {
                    receiver: *receiver,
                    nonce: unhex_array(nonce),
                    sealed_cookie: unhex_array(sealed_cookie),
                };
                let b = unhex(bytes);
                let p = CookieReplyPacket::new_checked(&b[..]).unwrap();
                assert_eq!(CookieReplyRepr::parse(&p), repr);
                assert_eq!(emit(repr.buffer_len(), |buf| repr.emit(buf)), b);
                (Kind::CookieReply, b)
            }
            WireVector::Data {
                receiver,
                counter,
                ciphertext,
                bytes,
            } => {
                let repr = DataRepr {
                    receiver: *receiver,
                    counter: *counter,
                    ciphertext: unhex(ciphertext),
                };
                let b = unhex(bytes);
                let p = DataPacket::new_checked(&b[..]).unwrap();
                assert_eq!(DataRepr::parse(&p), repr);
                assert_eq!(emit(repr.buffer_len(), |buf| repr.emit(buf)), b);
                (Kind::Data, b)
            }
            WireVector::RecordRequest {
                nonce,
                target,
                bytes,
            } => {
                let repr = RecordRequestRepr {
                    nonce: *nonce,
                    target: unhex_array(target),
                };
                let b = unhex(bytes);
                let p = RecordRequestPacket::new_checked(&b[..]).unwrap();
                assert_eq!(RecordRequestRepr::parse(&p), repr);
                assert_eq!(emit(repr.buffer_len(), |buf| repr.emit(buf)), b);
                (Kind::RecordRequest, b)
            }
            WireVector::RecordResponse {
                nonce,
                record,
                bytes,
            } => {
                let repr = RecordResponseRepr {
                    nonce: *nonce,
                    record: unhex(record),
                };
                let b = unhex(bytes);
                let p = RecordResponsePacket::new_checked(&b[..]).unwrap();
                assert_eq!(RecordResponseRepr::parse(&p), repr);
                assert_eq!(emit(repr.buffer_len(), |buf| repr.emit(buf)), b);
                (Kind::RecordResponse, b)
            }
        };
        assert_eq!(wire::classify(&bytes), Ok(kind));
        kinds.push(kind);
    }
    for k in [
        Kind::Initiation,
        Kind::Response,
        Kind::CookieReply,
        Kind::Data,
        Kind::RecordRequest,
        Kind::RecordResponse,
    ] {
        assert!(kinds.contains(&k), "no vector for {k:?}");
    }
    // The vectors are exactly what the generator builds.
    assert_eq!(file, wire_file());
}

#[test]
fn handshake_matches_vector() {
    let file: HandshakeFile = load("handshake.json");
    let again = handshake_file(&HandshakeInputs::from_file(&file));
    // Field by field, so a failure names the first message that changed.
    assert_eq!(again.first, file.first, "first initiation");
    assert_eq!(again.cookie_reply, file.cookie_reply, "cookie reply");
    assert_eq!(again.second, file.second, "initiation with mac2");
    assert_eq!(again.response, file.response, "response");
    assert_eq!(again.initiator_send_key, file.initiator_send_key);
    assert_eq!(again.responder_send_key, file.responder_send_key);
    assert_eq!(again.data, file.data, "transport data");
    assert_eq!(again, file);
}

// ------------------------------------------------------------------------ generator

/// Rewrite every vector file from the constants below. Ignored: the committed files are
/// the specification, and changing them is a protocol change.
#[test]
#[ignore = "rewrites the committed golden vectors"]
fn regenerate() {
    regenerate_record_cookies();
    let seeds: Vec<[u8; 32]> = vec![
        [0; 32],
        [0xff; 32],
        core::array::from_fn(|i| i as u8),
        unhex_array("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
        unhex_array("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"),
    ];
    let addresses = AddressFile {
        description: "Address derivation (docs/protocol.md §2): ed25519 seed -> public key -> \
            address bytes = blake3::derive_key(\"metanet v1 address\", public_key)[..20] -> \
            bech32m text with prefix `mn` -> overlay IPv6 fd ‖ address[..15]. The last two \
            seeds are RFC 8032 §7.1 test keys 1 and 2."
            .into(),
        vectors: seeds.iter().map(address_vector).collect(),
    };
    store("addresses.json", &addresses);

    let now = 1_800_000_000;
    let records = RecordFile {
        description: "Signed peer records (docs/protocol.md §4): identity_seed is the 64-byte \
            input of Identity::generate (wallet seed ‖ Noise secret); `signed` is the \
            envelope PeerRecord::sign produces, valid when verified at `now` (Unix seconds) \
            and decoding to the other fields. The second record has no endpoints or \
            services and the longest allowed lifetime."
            .into(),
        vectors: vec![
            record_vector(
                &Identity::generate(&core::array::from_fn(|i| i as u8)),
                now,
                &[
                    "198.51.100.7:51820".parse().unwrap(),
                    "[2001:db8::7]:51820".parse().unwrap(),
                ],
                &[
                    Service {
                        name: "web".into(),
                        protocol: Protocol::Tcp,
                        port: 80,
                    },
                    Service {
                        name: "dns".into(),
                        protocol: Protocol::Udp,
                        port: 53,
                    },
                ],
                7,
                now + 3600,
            ),
            record_vector(
                &Identity::generate(&core::array::from_fn(|i| 0xff - i as u8)),
                now,
                &[],
                &[],
                0,
                now + MAX_LIFETIME_SECS,
            ),
        ],
    };
    store("records.json", &records);
    store("wire.json", &wire_file());
    store("handshake.json", &handshake_file(&HandshakeInputs::fixed()));
}

fn address_vector(seed: &[u8; 32]) -> AddressVector {
    let wallet = WalletKey::from_seed(seed);
    let public_key = wallet.public_key();
    let a = wallet.address();
    assert_eq!(public_key.address(), a);
    AddressVector {
        wallet_seed: hex(seed),
        public_key: hex(&public_key.to_bytes()),
        address_bytes: hex(a.as_bytes()),
        address: a.to_string(),
        ipv6: a.ipv6().to_string(),
    }
}

fn record_vector(
    id: &Identity,
    now: u64,
    endpoints: &[SocketAddr],
    services: &[Service],
    seq: u64,
    not_after: u64,
) -> RecordVector {
    let rec = PeerRecord::new(id, endpoints.to_vec(), services.to_vec(), seq, not_after);
    let signed = rec.sign(id).unwrap();
    let back = PeerRecord::verify(
        &signed,
        Lookup::Address(id.address()),
        UnixTime::from_secs(now),
    )
    .unwrap();
    assert_eq!(back, rec);
    let mut seed = [0u8; 64];
    seed[..32].copy_from_slice(&id.wallet().seed()[..]);
    seed[32..].copy_from_slice(id.noise().secret());
    RecordVector {
        identity_seed: hex(&seed),
        now,
        signed: hex(&signed),
        public_key: hex(&rec.public_key.to_bytes()),
        address: rec.address().to_string(),
        noise_key: hex(&rec.noise_key.0),
        binding: hex(&rec.binding.0),
        endpoints: rec.endpoints,
        services: rec.services,
        seq,
        not_after,
    }
}

/// Framing examples with patterned contents; every integer has distinct bytes so the
/// byte order shows.
fn wire_file() -> WireFile {
    let initiation = InitiationRepr {
        ciphers: 0,
        sender: 0x1122_3344,
        noise: pattern::<{ wire::INIT_NOISE_LEN }>(0x10).to_vec(),
        mac1: pattern(0xa0),
        mac2: pattern(0xb0),
    };
    let response = ResponseRepr {
        cipher: 0,
        sender: 0x5566_7788,
        receiver: 0x1122_3344,
        kem_ciphertext: None,
        noise: pattern(0x20),
        mac1: pattern(0xc0),
        mac2: [0; wire::MAC_LEN],
    };
    let cookie_reply = CookieReplyRepr {
        receiver: 0x1122_3344,
        nonce: pattern(0x30),
        sealed_cookie: pattern(0x40),
    };
    // Counters stay below 2^53 so that any JSON reader holds them exactly.
    let data = DataRepr {
        receiver: 0x5566_7788,
        counter: 0x000a_0b0c_0d0e_0f10,
        ciphertext: pattern::<40>(0x50).to_vec(),
    };
    let keepalive = DataRepr {
        receiver: 0x1122_3344,
        counter: 1,
        ciphertext: pattern::<16>(0x60).to_vec(),
    };
    let record_request = RecordRequestRepr {
        nonce: 0x99aa_bbcc,
        target: pattern(0x70),
    };
    // The payload of a record response is opaque at this layer (records.json has real
    // ones).
    let record_response = RecordResponseRepr {
        nonce: 0x99aa_bbcc,
        record: pattern::<48>(0x80).to_vec(),
    };
    let data_vector = |r: &DataRepr| WireVector::Data {
        receiver: r.receiver,
        counter: r.counter,
        ciphertext: hex(&r.ciphertext),
        bytes: hex(&emit(r.buffer_len(), |b| r.emit(b))),
    };
    WireFile {
        description: "Every message layout (docs/protocol.md §3), little-endian integers, built \
            from fixed representations with patterned contents: `bytes` is the emitted \
            message and parses back to the other fields. The second data message is a \
            keepalive (ciphertext is the 16-byte tag alone); the record request is padded \
            with zeros to 1200 bytes."
            .into(),
        vectors: vec![
            WireVector::Initiation {
                sender: initiation.sender,
                noise: hex(&initiation.noise),
                mac1: hex(&initiation.mac1),
                mac2: hex(&initiation.mac2),
                bytes: hex(&emit(initiation.buffer_len(), |b| initiation.emit(b))),
            },
            WireVector::Response {
                sender: response.sender,
                receiver: response.receiver,
                noise: hex(&response.noise),
                mac1: hex(&response.mac1),
                mac2: hex(&response.mac2),
                bytes: hex(&emit(response.buffer_len(), |b| response.emit(b))),
            },
            WireVector::CookieReply {
                receiver: cookie_reply.receiver,
                nonce: hex(&cookie_reply.nonce),
                sealed_cookie: hex(&cookie_reply.sealed_cookie),
                bytes: hex(&emit(cookie_reply.buffer_len(), |b| cookie_reply.emit(b))),
            },
            data_vector(&data),
            data_vector(&keepalive),
            WireVector::RecordRequest {
                nonce: record_request.nonce,
                target: hex(&record_request.target),
                bytes: hex(&emit(record_request.buffer_len(), |b| {
                    record_request.emit(b)
                })),
            },
            WireVector::RecordResponse {
                nonce: record_response.nonce,
                record: hex(&record_response.record),
                bytes: hex(&emit(record_response.buffer_len(), |b| {
                    record_response.emit(b)
                })),
            },
        ],
    }
}

/// Everything a handshake transcript depends on.
struct HandshakeInputs {
    initiator_seed: [u8; 64],
    responder_seed: [u8; 64],
    psk: [u8; 32],
    first: (u32, u64, [u8; 32]),
    cookie_seed: [u8; 32],
    cookie_source: SocketAddr,
    cookie_now_nanos: u64,
    second: (u32, u64, [u8; 32]),
    responder_index: u32,
    responder_ephemeral_seed: [u8; 32],
    data: Vec<(bool, Vec<u8>)>,
}

impl HandshakeInputs {
    fn fixed() -> Self {
        let ipv6_ping = {
            let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
            p.extend_from_slice(&[0xfd; 16]);
            p.push(0xfd);
            p.extend_from_slice(&[0x02; 15]);
            p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
            p
        };
        HandshakeInputs {
            initiator_seed: core::array::from_fn(|i| 0x11u8.wrapping_mul(i as u8 + 1)),
            responder_seed: core::array::from_fn(|i| 0x22u8.wrapping_add(i as u8)),
            psk: [0; 32],
            first: (0x0102_0304, 1_800_000_000_000_000_000, [0x31; 32]),
            cookie_seed: [0x41; 32],
            cookie_source: "198.51.100.7:51820".parse().unwrap(),
            cookie_now_nanos: 5_000_000_000,
            second: (0x0506_0708, 1_800_000_000_250_000_000, [0x32; 32]),
            responder_index: 0x0a0b_0c0d,
            responder_ephemeral_seed: [0x51; 32],
            data: vec![
                (true, ipv6_ping),
                (false, b"metanet v1 transport vector".to_vec()),
                (true, Vec::new()),
            ],
        }
    }

    fn from_file(f: &HandshakeFile) -> Self {
        let step =
            |s: &InitiationStep| (s.sender, s.timestamp_nanos, unhex_array(&s.ephemeral_seed));
        HandshakeInputs {
            initiator_seed: unhex_array(&f.initiator_seed),
            responder_seed: unhex_array(&f.responder_seed),
            psk: unhex_array(&f.psk),
            first: step(&f.first),
            cookie_seed: unhex_array(&f.cookie_seed),
            cookie_source: f.cookie_source,
            cookie_now_nanos: f.cookie_now_nanos,
            second: step(&f.second),
            responder_index: f.responder_index,
            responder_ephemeral_seed: unhex_array(&f.responder_ephemeral_seed),
            data: f
                .data
                .iter()
                .map(|d| {
                    let from_initiator = match d.from.as_str() {
                        "initiator" => true,
                        "responder" => false,
                        other => panic!("unknown sender {other:?}"),
                    };
                    (from_initiator, unhex(&d.plaintext))
                })
                .collect(),
        }
    }
}

/// Run the whole exchange (docs/protocol.md §5): initiation, cookie reply under load,
/// initiation with mac2, response, then transport data both ways. Every message is also
/// consumed by the other side, so the transcript is known to be accepted.
fn handshake_file(input: &HandshakeInputs) -> HandshakeFile {
    let initiator = Identity::generate(&input.initiator_seed);
    let responder = Identity::generate(&input.responder_seed);
    let to_responder = Remote {
        public_key: responder.public_key(),
        noise_key: responder.noise().public_key(),
    };
    let now = Instant::from_nanos(input.cookie_now_nanos);

    // First attempt: the responder is under load and answers with a cookie.
    let (sender, ts, eph) = input.first;
    let (first_state, first) = handshake::initiate(
        &initiator,
        to_responder,
        &input.psk,
        sender,
        UnixTime::from_nanos(ts),
        None,
        eph,
    )
    .unwrap();
    assert!(handshake::check_mac1(&first, &to_responder.noise_key));
    let mut checker = CookieChecker::new(&to_responder.noise_key, input.cookie_seed);
    assert!(checker.check_mac1(&first));
    assert!(!checker.check_mac2(&first, input.cookie_source, now));
    let reply = checker.cookie_reply(
        &InitiationPacket::new_checked(&first[..]).unwrap(),
        input.cookie_source,
        now,
    );
    assert_eq!(reply.receiver, sender);
    let reply_bytes = emit(reply.buffer_len(), |b| reply.emit(b));
    let cookie = first_state.open_cookie(&reply, now).unwrap();

    // Second attempt carries mac2; the responder accepts it.
    let (sender2, ts2, eph2) = input.second;
    let (second_state, second) = handshake::initiate(
        &initiator,
        to_responder,
        &input.psk,
        sender2,
        UnixTime::from_nanos(ts2),
        Some(&cookie),
        eph2,
    )
    .unwrap();
    assert!(checker.check_mac1(&second));
    assert!(checker.check_mac2(&second, input.cookie_source, now));
    let accept = handshake::read_initiation(
        &responder,
        &input.psk,
        &InitiationPacket::new_checked(&second[..]).unwrap(),
        input.responder_ephemeral_seed,
    )
    .unwrap();
    assert_eq!(accept.initiator().public_key, initiator.public_key());
    assert_eq!(accept.timestamp(), UnixTime::from_nanos(ts2));
    let (responder_est, response) = accept.accept(&responder, input.responder_index).unwrap();
    assert!(handshake::check_mac1(
        &response,
        &initiator.noise().public_key()
    ));
    let initiator_est = second_state
        .handle_response(&ResponsePacket::new_checked(&response[..]).unwrap())
        .unwrap();
    assert_eq!(*initiator_est.send_key, *responder_est.recv_key);
    assert_eq!(*initiator_est.recv_key, *responder_est.send_key);
    assert_eq!(initiator_est.remote_index, input.responder_index);
    assert_eq!(responder_est.remote_index, sender2);

    let mut ikp = Keypair::new(&initiator_est, now);
    let mut rkp = Keypair::new(&responder_est, now);
    let data = input
        .data
        .iter()
        .map(|(from_initiator, plaintext)| {
            let (tx, rx) = if *from_initiator {
                (&mut ikp, &mut rkp)
            } else {
                (&mut rkp, &mut ikp)
            };
            let counter = tx.sent();
            let mut buf = vec![0u8; plaintext.len() + wire::DATA_OVERHEAD];
            buf[wire::DATA_HEADER_LEN..][..plaintext.len()].copy_from_slice(plaintext);
            let n = tx.seal(&mut buf, plaintext.len(), now).unwrap();
            assert_eq!(n, buf.len());
            let message = buf.clone();
            let p = DataPacket::new_checked(&buf[..]).unwrap();
            assert_eq!((p.receiver(), p.counter()), (rx.local_index, counter));
            let range = rx.open(&mut buf, counter, now).unwrap();
            assert_eq!(&buf[range], &plaintext[..]);
            DataStep {
                from: if *from_initiator {
                    "initiator"
                } else {
                    "responder"
                }
                .into(),
                counter,
                plaintext: hex(plaintext),
                message: hex(&message),
            }
        })
        .collect();

    HandshakeFile {
        description: "A complete exchange (docs/protocol.md §5, §6) between two identities \
            made by Identity::generate from the seeds. The responder is under load: it \
            answers the first initiation with a cookie reply (CookieChecker seeded with \
            cookie_seed, at monotonic time cookie_now_nanos, source cookie_source); the \
            second initiation carries mac2 and is answered. Ephemeral keys come from the \
            seeds passed to handshake::initiate / read_initiation. Transport keys are the \
            Noise split; data messages are sealed with session::Keypair in order, counters \
            from 0 per direction; the last one is a keepalive."
            .into(),
        initiator_seed: hex(&input.initiator_seed),
        responder_seed: hex(&input.responder_seed),
        psk: hex(&input.psk),
        first: InitiationStep {
            sender,
            timestamp_nanos: ts,
            ephemeral_seed: hex(&eph),
            initiation: hex(&first),
        },
        cookie_seed: hex(&input.cookie_seed),
        cookie_source: input.cookie_source,
        cookie_now_nanos: input.cookie_now_nanos,
        cookie_reply: hex(&reply_bytes),
        second: InitiationStep {
            sender: sender2,
            timestamp_nanos: ts2,
            ephemeral_seed: hex(&eph2),
            initiation: hex(&second),
        },
        responder_index: input.responder_index,
        responder_ephemeral_seed: hex(&input.responder_ephemeral_seed),
        response: hex(&response),
        initiator_send_key: hex(&initiator_est.send_key[..]),
        responder_send_key: hex(&responder_est.send_key[..]),
        data,
    }
}

// ------------------------------------------------------------------------ helpers

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("vectors")
        .join(name)
}

fn load<T: DeserializeOwned>(name: &str) -> T {
    let p = path(name);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", p.display()))
}

fn store<T: Serialize>(name: &str, value: &T) {
    let p = path(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
}

fn emit(len: usize, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f(&mut buf);
    buf
}

fn pattern<const N: usize>(start: u8) -> [u8; N] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s:?}")))
        .collect()
}

fn unhex_array<const N: usize>(s: &str) -> [u8; N] {
    let v = unhex(s);
    v.as_slice()
        .try_into()
        .unwrap_or_else(|_| panic!("expected {N} bytes, got {}: {s:?}", v.len()))
}

// ------------------------------------------------------------------ record cookies

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordCookieFile {
    description: String,
    vectors: Vec<RecordCookieVector>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordCookieVector {
    /// The answering node's record cookie secret.
    secret: String,
    /// The source address of the record request.
    source: SocketAddr,
    /// `trunc16(BLAKE3-keyed(secret, ip[16] ‖ port u16be))`.
    cookie: String,
    /// The request's nonce, echoed in the record cookie.
    nonce: u32,
    /// The address asked for.
    target: String,
    /// The record cookie message (type 7).
    record_cookie: String,
    /// The next record request, carrying the cookie in its padding.
    request_with_cookie: String,
}

fn record_cookie_file() -> RecordCookieFile {
    let vector = |secret: [u8; 32], source: &str, nonce: u32, target: [u8; 20]| {
        let source: SocketAddr = source.parse().unwrap();
        let cookie = handshake::source_cookie(&secret, source);
        let reply = wire::RecordCookieRepr { nonce, cookie };
        let request = RecordRequestRepr { nonce, target };
        RecordCookieVector {
            secret: hex(&secret),
            source,
            cookie: hex(&cookie),
            nonce,
            target: hex(&target),
            record_cookie: hex(&emit(reply.buffer_len(), |b| reply.emit(b))),
            request_with_cookie: hex(&emit(request.buffer_len(), |b| {
                request.emit_with_cookie(b, &cookie)
            })),
        }
    };
    RecordCookieFile {
        description: "Record cookies (docs/protocol.md §3.7, §5.5, §7.7): the cookie a node \
            under record load gives a request's source, the record cookie message carrying \
            it, and the next request with the cookie in bytes 28..44 (the rest of the \
            padding zero). An IPv4 source is its 4 bytes followed by 12 zero bytes."
            .into(),
        vectors: vec![
            vector(
                pattern(0x11),
                "198.51.100.7:51820",
                0x0102_0304,
                pattern(0x70),
            ),
            vector(
                pattern(0xa0),
                "[2001:db8::7]:40000",
                0xfffe_fdfc,
                pattern(0x20),
            ),
        ],
    }
}

#[test]
fn record_cookies_match_vectors() {
    let file: RecordCookieFile = load("record-cookies.json");
    assert_eq!(file, record_cookie_file());
    for v in &file.vectors {
        let b = unhex(&v.record_cookie);
        assert_eq!(wire::classify(&b), Ok(Kind::RecordCookie));
        let p = wire::RecordCookiePacket::new_checked(&b[..]).unwrap();
        assert_eq!(hex(&p.cookie()), v.cookie);
        assert_eq!(p.nonce(), v.nonce);
        let r = unhex(&v.request_with_cookie);
        let p = RecordRequestPacket::new_checked(&r[..]).unwrap();
        assert_eq!(p.cookie().map(|c| hex(&c)), Some(v.cookie.clone()));
        assert_eq!(hex(&p.target()), v.target);
        // The request's own fields are those of the frozen record request layout.
        assert!(r[44..].iter().all(|&x| x == 0));
    }
}

#[test]
#[ignore = "rewrites the committed record cookie vectors"]
fn regenerate_record_cookies() {
    store("record-cookies.json", &record_cookie_file());
}

// ------------------------------------------------------------------------ NAT traversal

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatFile {
    description: String,
    /// Every signal (docs/protocol.md §10.1), as the plaintext of a data message.
    signals: Vec<SignalVector>,
    /// A data message wrapped as a relay message and as the relayed message the relay
    /// makes of it (§10.2).
    relay: RelayVector,
    /// A signed peer record listing relays (§4.2, §10.3).
    record_with_relays: RelayRecordVector,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayRecordVector {
    /// 64 bytes for `Identity::generate`: wallet seed ‖ Noise secret.
    identity_seed: String,
    address: String,
    relays: Vec<String>,
    signed: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalVector {
    name: String,
    bytes: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayVector {
    source: String,
    destination: String,
    inner: String,
    relay_message: String,
    relayed_message: String,
}

fn nat_file() -> NatFile {
    use metanet_proto::signal::{RefuseReason, Signal, WANT_REPLY};
    let v4: SocketAddr = "198.51.100.7:51820".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let other = Address::from_bytes(pattern(0x40));
    let signals = [
        ("observed", Signal::Observed(v4)),
        ("reserve", Signal::Reserve),
        (
            "reserved",
            Signal::Reserved {
                lifetime_secs: 30,
                observed: v6,
            },
        ),
        (
            "refused",
            Signal::Refused {
                reason: RefuseReason::SessionLimit,
                address: other,
            },
        ),
        (
            "candidates",
            Signal::Candidates {
                flags: WANT_REPLY,
                endpoints: vec![v4, v6],
            },
        ),
        ("sync", Signal::Sync),
        (
            "probe",
            Signal::Probe {
                nonce: 0x0102_0304_0506_0708,
            },
        ),
        (
            "probe_ack",
            Signal::ProbeAck {
                nonce: 0x0102_0304_0506_0708,
                observed: v4,
            },
        ),
    ];
    let source = Address::from_bytes(pattern(0x10));
    let destination = Address::from_bytes(pattern(0x30));
    let data = DataRepr {
        receiver: 0x1122_3344,
        counter: 7,
        ciphertext: pattern::<32>(0x90).to_vec(),
    };
    let inner = emit(data.buffer_len(), |b| data.emit(b));
    let relay_message = wire::relay_message(&destination, &source, &inner);
    let mut rewritten = relay_message.clone();
    let at = wire::relay_to_relayed(&mut rewritten);
    let relayed = rewritten[at..].to_vec();
    assert_eq!(relayed, wire::relayed_message(&source, &inner));
    let seed: [u8; 64] = pattern(0x01);
    let id = Identity::generate(&seed);
    let mut rec = PeerRecord::new(&id, vec![v4], vec![], 5, 2_000_000_000);
    rec.relays = vec![
        record::Relay {
            address: destination,
            endpoint: "198.18.0.1:51820".parse().unwrap(),
        },
        record::Relay {
            address: other,
            endpoint: "[2001:db8::1]:51820".parse().unwrap(),
        },
    ];
    NatFile {
        description: "NAT traversal (docs/protocol.md §10): every signal as the plaintext \
            of a data message (marker 0x01, type, body; little-endian integers; endpoints \
            as family ‖ ip ‖ port u16le), a relay message and the relayed message a relay \
            forwards in its place (the relay message from byte 20 on with type 9: the \
            destination dropped, the source kept), and a peer record with two relays \
            after its services."
            .into(),
        signals: signals
            .into_iter()
            .map(|(name, s)| SignalVector {
                name: name.into(),
                bytes: hex(&s.encode()),
            })
            .collect(),
        relay: RelayVector {
            source: hex(source.as_bytes()),
            destination: hex(destination.as_bytes()),
            inner: hex(&inner),
            relay_message: hex(&relay_message),
            relayed_message: hex(&relayed),
        },
        record_with_relays: RelayRecordVector {
            identity_seed: hex(&seed),
            address: id.address().to_string(),
            relays: rec.relays.iter().map(ToString::to_string).collect(),
            signed: hex(&rec.sign(&id).unwrap()),
        },
    }
}

#[test]
fn nat_messages_match_vectors() {
    use metanet_proto::signal::Signal;
    let file: NatFile = load("nat.json");
    assert_eq!(file, nat_file());
    for s in &file.signals {
        let b = unhex(&s.bytes);
        assert_eq!(Signal::parse(&b).unwrap().encode(), b, "{}", s.name);
    }
    let m = unhex(&file.relay.relay_message);
    assert_eq!(wire::classify(&m), Ok(Kind::Relay));
    let p = wire::RelayPacket::new_checked(&m[..]).unwrap();
    assert_eq!(
        p.destination().map(|d| hex(d.as_bytes())),
        Some(file.relay.destination.clone())
    );
    assert_eq!(hex(p.source().as_bytes()), file.relay.source);
    assert_eq!(hex(p.inner()), file.relay.inner);
    let r = unhex(&file.relay.relayed_message);
    assert!(r.len() < m.len(), "a relay never sends more than it got");
    assert_eq!(wire::classify(&r), Ok(Kind::Relayed));
    let p = wire::RelayPacket::new_checked(&r[..]).unwrap();
    assert_eq!(hex(p.source().as_bytes()), file.relay.source);
    assert_eq!(hex(p.inner()), file.relay.inner);
    let rec = unhex(&file.record_with_relays.signed);
    let parsed = PeerRecord::verify(
        &rec,
        Lookup::Address(file.record_with_relays.address.parse().unwrap()),
        UnixTime::from_secs(1_999_990_000),
    )
    .unwrap();
    let relays: Vec<String> = parsed.relays.iter().map(ToString::to_string).collect();
    assert_eq!(relays, file.record_with_relays.relays);
}

#[test]
#[ignore = "rewrites the committed NAT traversal vectors"]
fn regenerate_nat() {
    store("nat.json", &nat_file());
}

// ------------------------------------------------------------------------ network keys

/// A handshake between two members of a closed group (docs/protocol.md §5.6): the
/// initiation is extended by an epoch extension and psk2 is `network_psk(psk, key)`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkKeyFile {
    description: String,
    initiator_seed: String,
    responder_seed: String,
    /// The node's base psk.
    psk: String,
    group: String,
    group_tag: String,
    epoch: u64,
    network_key: String,
    /// `network_psk(psk, network_key)`, what psk2 is.
    psk2: String,
    sender: u32,
    timestamp_nanos: u64,
    ephemeral_seed: String,
    /// The encoded extensions inside the initiation's payload.
    extensions: String,
    initiation: String,
    responder_index: u32,
    responder_ephemeral_seed: String,
    response: String,
    initiator_send_key: String,
    responder_send_key: String,
}

fn network_key_file() -> NetworkKeyFile {
    let initiator = Identity::generate(&core::array::from_fn(|i| 0x11u8.wrapping_mul(i as u8 + 1)));
    let responder = Identity::generate(&core::array::from_fn(|i| 0x22u8.wrapping_add(i as u8)));
    let to_responder = Remote {
        public_key: responder.public_key(),
        noise_key: responder.noise().public_key(),
    };
    let psk = [0u8; 32];
    let group = "ops";
    let tag = handshake::GroupTag::of(group);
    let epoch = 0x0102_0304_0506_0708;
    let key: [u8; 32] = pattern(0x60);
    let psk2 = handshake::network_psk(&psk, &key);
    let ext = handshake::Extensions {
        epoch: Some(handshake::EpochRef { group: tag, epoch }),
        ml_kem_512: None,
    };
    let (sender, ts, eph) = (0x0a0b_0c0d, 1_800_000_000_000_000_000, [0x71; 32]);
    let (state, initiation) = handshake::initiate_extended(
        &initiator,
        to_responder,
        &psk2,
        sender,
        UnixTime::from_nanos(ts),
        None,
        eph,
        false,
        &ext,
    )
    .unwrap();
    assert_eq!(
        initiation.len(),
        wire::INIT_LEN + 3 + handshake::EXT_EPOCH_LEN
    );
    let p = InitiationPacket::new_checked(&initiation[..]).unwrap();
    assert!(p.extended());
    let (responder_index, responder_eph) = (0x1a1b_1c1d, [0x72; 32]);
    let mut accept = handshake::read_initiation(&responder, &psk, &p, responder_eph).unwrap();
    assert_eq!(accept.extensions(), &ext);
    accept.use_psk(&psk2).unwrap();
    let (responder_est, response) = accept.accept(&responder, responder_index).unwrap();
    let initiator_est = state
        .handle_response(&ResponsePacket::new_checked(&response[..]).unwrap())
        .unwrap();
    assert_eq!(*initiator_est.send_key, *responder_est.recv_key);
    NetworkKeyFile {
        description: "A handshake between members of a closed group (docs/protocol.md §5.6): \
            identities from Identity::generate of the seeds; the initiation carries the \
            epoch extension (group tag, epoch) after its timestamp and sets byte 1 bit 7; \
            psk2 = BLAKE3-derive-key(\"metanet v1 network psk\", psk ‖ network_key). The \
            responder reads the initiation with the base psk, then uses psk2 for the \
            response."
            .into(),
        initiator_seed: hex(&core::array::from_fn::<u8, 64, _>(|i| {
            0x11u8.wrapping_mul(i as u8 + 1)
        })),
        responder_seed: hex(&core::array::from_fn::<u8, 64, _>(|i| {
            0x22u8.wrapping_add(i as u8)
        })),
        psk: hex(&psk),
        group: group.into(),
        group_tag: hex(&tag.0),
        epoch,
        network_key: hex(&key),
        psk2: hex(&psk2),
        sender,
        timestamp_nanos: ts,
        ephemeral_seed: hex(&eph),
        extensions: hex(&ext.encode()),
        initiation: hex(&initiation),
        responder_index,
        responder_ephemeral_seed: hex(&responder_eph),
        response: hex(&response),
        initiator_send_key: hex(&initiator_est.send_key[..]),
        responder_send_key: hex(&responder_est.send_key[..]),
    }
}

#[test]
fn network_key_handshake_matches_vector() {
    let file: NetworkKeyFile = load("network-key.json");
    assert_eq!(network_key_file(), file);
    // The classical handshake vector is untouched by the extension (checked above);
    // a responder without the network key cannot complete this one.
    let responder = Identity::generate(&unhex_array(&file.responder_seed));
    let init = unhex(&file.initiation);
    let p = InitiationPacket::new_checked(&init[..]).unwrap();
    let accept = handshake::read_initiation(&responder, &[0; 32], &p, [0x72; 32]).unwrap();
    let (_, response) = accept.accept(&responder, file.responder_index).unwrap();
    assert_ne!(hex(&response), file.response);
}

#[test]
#[ignore = "rewrites the committed network key vector"]
fn regenerate_network_key() {
    store("network-key.json", &network_key_file());
}

/// A hybrid handshake (docs/protocol.md §5.7) with fixed randomness: the initiation
/// carries an ML-KEM-512 encapsulation key, the response its ciphertext, and psk2 is
/// `hybrid_psk(classical psk2, ss, ct, ek)`. With a closed group's network key too, so
/// the vector covers all three inputs of psk2.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PqFile {
    description: String,
    initiator_seed: String,
    responder_seed: String,
    /// The node's base psk.
    psk: String,
    group: String,
    epoch: u64,
    network_key: String,
    /// `network_psk(psk, network_key)`: the classical psk2 value.
    classical_psk2: String,
    sender: u32,
    timestamp_nanos: u64,
    ephemeral_seed: String,
    /// FIPS 203 key generation seed `d ‖ z` of the initiator's ML-KEM-512 key pair.
    kem_keygen_seed: String,
    /// The encapsulation key (800 bytes), extension 2 inside the initiation's payload.
    encapsulation_key: String,
    /// The encoded extensions inside the initiation's payload (epoch, then the key).
    extensions: String,
    initiation: String,
    responder_index: u32,
    responder_ephemeral_seed: String,
    /// FIPS 203 encapsulation randomness `m`.
    kem_encaps_seed: String,
    /// The ciphertext (768 bytes), between the response's header and Noise message 2.
    ciphertext: String,
    shared_secret: String,
    /// `hybrid_psk(classical_psk2, shared_secret, ciphertext, encapsulation_key)`.
    hybrid_psk2: String,
    response: String,
    initiator_send_key: String,
    responder_send_key: String,
}

fn pq_file() -> PqFile {
    use metanet_proto::pq::{self, PqMode};
    let initiator_seed: [u8; 64] = core::array::from_fn(|i| 0x33u8.wrapping_mul(i as u8 + 1));
    let responder_seed: [u8; 64] = core::array::from_fn(|i| 0x44u8.wrapping_add(i as u8));
    let initiator = Identity::generate(&initiator_seed);
    let responder = Identity::generate(&responder_seed);
    let to_responder = Remote {
        public_key: responder.public_key(),
        noise_key: responder.noise().public_key(),
    };
    let psk = [0u8; 32];
    let group = "ops";
    let epoch = 7;
    let key: [u8; 32] = pattern(0x80);
    let psk2 = handshake::network_psk(&psk, &key);
    let ext = handshake::Extensions {
        epoch: Some(handshake::EpochRef {
            group: handshake::GroupTag::of(group),
            epoch,
        }),
        ml_kem_512: None,
    };
    let (sender, ts, eph) = (0x0102_0304, 1_800_000_000_000_000_000, [0x91; 32]);
    let kem_seed: [u8; 64] = pattern(0xa0);
    let (state, initiation) = handshake::initiate_pq(
        &initiator,
        to_responder,
        &psk2,
        sender,
        UnixTime::from_nanos(ts),
        None,
        eph,
        false,
        &ext,
        PqMode::Auto,
        &kem_seed,
    )
    .unwrap();
    let kp = pq::KeyPair::from_seed(&kem_seed);
    let ek = kp.encapsulation_key();
    let mut full_ext = ext.clone();
    full_ext.ml_kem_512 = Some(Box::new(*ek));
    assert_eq!(
        initiation.len(),
        wire::INIT_LEN + 3 + handshake::EXT_EPOCH_LEN + 3 + pq::EK_LEN
    );
    assert!(initiation.len() <= wire::INIT_MAX_LEN);
    let p = InitiationPacket::new_checked(&initiation[..]).unwrap();
    let (responder_index, responder_eph, m) = (0x0506_0708, [0x92; 32], [0x93; 32]);
    let mut accept = handshake::read_initiation(&responder, &psk, &p, responder_eph).unwrap();
    assert_eq!(accept.extensions(), &full_ext);
    accept.use_psk(&psk2).unwrap();
    let (responder_est, response) = accept
        .accept_hybrid(&responder, responder_index, false, &m)
        .unwrap();
    let rp = ResponsePacket::new_checked(&response[..]).unwrap();
    let ct = rp.kem_ciphertext().unwrap().to_vec();
    let ss = kp.decapsulate(&ct).unwrap();
    let initiator_est = state.handle_response(&rp).unwrap();
    assert_eq!(*initiator_est.send_key, *responder_est.recv_key);
    assert_eq!(initiator_est.pq, Some(pq::Kem::MlKem512));
    PqFile {
        description: "A hybrid handshake (docs/protocol.md §5.7) between members of a closed \
            group: identities from Identity::generate of the seeds; the initiation sets byte 1 \
            bits 7 (extended) and 1 (ML-KEM-512 offer) and carries the epoch extension and \
            extension 2, the ML-KEM-512 encapsulation key of kem_keygen_seed (FIPS 203 \
            KeyGen_internal(d, z)); the response sets byte 1 bit 7 and carries the ciphertext \
            of Encaps_internal(ek, kem_encaps_seed) between its 12-byte header and Noise \
            message 2; psk2 = BLAKE3-derive-key(\"metanet v1 hybrid psk ml-kem-512\", \
            classical_psk2 ‖ shared_secret ‖ ciphertext ‖ encapsulation_key), classical_psk2 = \
            BLAKE3-derive-key(\"metanet v1 network psk\", psk ‖ network_key)."
            .into(),
        initiator_seed: hex(&initiator_seed),
        responder_seed: hex(&responder_seed),
        psk: hex(&psk),
        group: group.into(),
        epoch,
        network_key: hex(&key),
        classical_psk2: hex(&psk2),
        sender,
        timestamp_nanos: ts,
        ephemeral_seed: hex(&eph),
        kem_keygen_seed: hex(&kem_seed),
        encapsulation_key: hex(&ek[..]),
        extensions: hex(&full_ext.encode()),
        initiation: hex(&initiation),
        responder_index,
        responder_ephemeral_seed: hex(&responder_eph),
        kem_encaps_seed: hex(&m),
        ciphertext: hex(&ct),
        shared_secret: hex(&ss[..]),
        hybrid_psk2: hex(&pq::hybrid_psk(&psk2, &ss, &ct, &ek[..])),
        response: hex(&response),
        initiator_send_key: hex(&initiator_est.send_key[..]),
        responder_send_key: hex(&responder_est.send_key[..]),
    }
}

#[test]
fn pq_handshake_matches_vector() {
    let file: PqFile = load("pq.json");
    assert_eq!(pq_file(), file);
    assert_eq!(unhex(&file.initiation).len(), 1062);
    assert_eq!(unhex(&file.response).len(), wire::RESPONSE_HYBRID_LEN);
    // The KEM half on its own: the frozen ciphertext decapsulates to the secret.
    let kp = metanet_proto::pq::KeyPair::from_seed(&unhex_array(&file.kem_keygen_seed));
    assert_eq!(hex(&kp.encapsulation_key()[..]), file.encapsulation_key);
    let ss = kp.decapsulate(&unhex(&file.ciphertext)).unwrap();
    assert_eq!(hex(&ss[..]), file.shared_secret);
}

#[test]
#[ignore = "rewrites the committed pq vector"]
fn regenerate_pq() {
    store("pq.json", &pq_file());
}

// ------------------------------------------------------------------------ routes

/// A gateway's record with routes and the exit flag (docs/protocol.md §4.2).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    description: String,
    identity_seed: String,
    now: u64,
    endpoints: Vec<SocketAddr>,
    relays: Vec<String>,
    routes: Vec<String>,
    exit: bool,
    seq: u64,
    not_after: u64,
    signed: String,
}

fn routes_file() -> RoutesFile {
    let seed: [u8; 64] = core::array::from_fn(|i| 0x33u8.wrapping_add(i as u8));
    let id = Identity::generate(&seed);
    let relay = Identity::generate(&[0x44; 64]).address();
    let now = 1_800_000_000;
    let mut rec = PeerRecord::new(
        &id,
        vec!["198.51.100.7:51820".parse().unwrap()],
        vec![],
        9,
        now + 3600,
    );
    rec.relays = vec![record::Relay {
        address: relay,
        endpoint: "198.51.100.8:4242".parse().unwrap(),
    }];
    rec.routes = ["198.18.50.0/24", "2001:db8:50::/48", "0.0.0.0/0", "::/0"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    rec.exit = true;
    let signed = rec.sign(&id).unwrap();
    let back = PeerRecord::verify(
        &signed,
        Lookup::Address(id.address()),
        UnixTime::from_secs(now),
    )
    .unwrap();
    assert_eq!(back, rec);
    RoutesFile {
        description: "A gateway's signed peer record (docs/protocol.md §4.2) with one relay and \
            a routes section: 0x80, flags (bit 0: exit), the number of routes, then each route \
            as family, prefix length and address. identity_seed is the 64-byte input of \
            Identity::generate; the record is valid when verified at `now` (Unix seconds)."
            .into(),
        identity_seed: hex(&seed),
        now,
        endpoints: rec.endpoints.clone(),
        relays: rec.relays.iter().map(ToString::to_string).collect(),
        routes: rec.routes.iter().map(ToString::to_string).collect(),
        exit: rec.exit,
        seq: rec.seq,
        not_after: rec.not_after,
        signed: hex(&signed),
    }
}

#[test]
fn routes_record_matches_vector() {
    let file: RoutesFile = load("routes.json");
    assert_eq!(routes_file(), file);
    // Found by its overlay IPv6 prefix like any record.
    let b = unhex(&file.signed);
    let id = Identity::generate(&unhex_array(&file.identity_seed));
    let rec = PeerRecord::verify(
        &b,
        Lookup::Ipv6(id.address().ipv6_prefix()),
        UnixTime::from_secs(file.now),
    )
    .unwrap();
    assert!(rec.exit);
    assert_eq!(rec.routes.len(), 4);
}

#[test]
#[ignore = "rewrites the committed routes vector"]
fn regenerate_routes() {
    store("routes.json", &routes_file());
}
