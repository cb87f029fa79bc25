//! CPU cost of metanet's cryptographic paths (docs/benchmarks.md).
//!
//! Groups:
//! - `handshake`: a full Noise IK handshake (both sides on one core), the responder's
//!   share alone, and the cheap checks a responder under load does instead of DH work
//!   (mac1, and minting a cookie reply).
//! - `transport`: `session::Keypair` seal and open of one data message, at a typical
//!   tunnel MTU (1400 B) and at the largest payload a datagram can carry.
//! - `node`: the `node::Node` fast path, TUN packet in -> datagram out (seal) and
//!   datagram in -> TUN packet out (open plus inner-source check), between two nodes
//!   whose session was set up by passing their real handshake datagrams.
//! - `aead_backend`: ring's raw ChaCha20-Poly1305 against AES-256-GCM, for context.
//!
//! Every benchmark is single-threaded, so `1 / time` is the rate of one core.
//! Open benchmarks never re-open a message: the replay window would reject it (and a
//! rejected message is far cheaper than an accepted one). Fresh messages are sealed
//! outside the timed region with `iter_batched_ref`, in counter order, so every timed
//! open authenticates and is accepted; each group ends by asserting that nothing was
//! rejected.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use metanet_proto::handshake::{self, CookieChecker, Established, Psk, Remote};
use metanet_proto::ip::build_ipv6;
use metanet_proto::node::{Command, Config, LocalId, Node};
use metanet_proto::session::Keypair;
use metanet_proto::wire::{self, InitiationPacket, ResponsePacket};
use metanet_proto::{Identity, Instant, UnixTime};
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

/// A full-size tunnel packet: what a 1400-byte MTU TUN hands us.
const MTU_PACKET: usize = 1400;
/// The largest payload one data message can carry: 65535 minus header and tag.
const MAX_PAYLOAD: usize = wire::MAX_DATAGRAM - wire::DATA_HEADER_LEN - wire::TAG_LEN;
const PSK: Psk = [0; 32];

fn identity(tag: u8) -> Identity {
    Identity::generate(&[tag; 64])
}

fn remote(id: &Identity) -> Remote {
    Remote {
        public_key: id.public_key(),
        noise_key: id.noise().public_key(),
    }
}

/// A per-iteration seed, so ephemeral keys differ between handshakes.
fn seed(n: u32, tag: u8) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..4].copy_from_slice(&n.to_le_bytes());
    s
}

/// One complete handshake between `a` (initiator) and `b`, returning both sides' keys.
fn handshake_pair(a: &Identity, b: &Identity, n: u32) -> (Established, Established) {
    let (expect, init) = handshake::initiate(
        a,
        remote(b),
        &PSK,
        n,
        UnixTime::from_secs(1_800_000_000 + u64::from(n)),
        None,
        seed(n, 1),
    )
    .unwrap();
    let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
    let accept = handshake::read_initiation(b, &PSK, &ip, seed(n, 2)).unwrap();
    let (eb, resp) = accept.accept(b, n.wrapping_add(0x8000_0000)).unwrap();
    let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
    let ea = expect.handle_response(&rp).unwrap();
    (ea, eb)
}

fn bench_handshake(c: &mut Criterion) {
    let (a, b) = (identity(1), identity(2));
    let b_noise = b.noise().public_key();
    let a_noise = a.noise().public_key();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));

    // Everything both sides compute for one session, including the mac1 checks each
    // receiver makes before touching Noise.
    let checker = CookieChecker::new(&b_noise, [3; 32]);
    let mut n: u32 = 0;
    g.bench_function("full", |bench| {
        bench.iter(|| {
            n = n.wrapping_add(1);
            let (expect, init) = handshake::initiate(
                &a,
                remote(&b),
                &PSK,
                n,
                UnixTime::from_secs(1_800_000_000 + u64::from(n)),
                None,
                seed(n, 1),
            )
            .unwrap();
            assert!(checker.check_mac1(&init));
            let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
            let accept = handshake::read_initiation(&b, &PSK, &ip, seed(n, 2)).unwrap();
            let (eb, resp) = accept.accept(&b, n.wrapping_add(0x8000_0000)).unwrap();
            assert!(handshake::check_mac1(&resp, &a_noise));
            let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
            let ea = expect.handle_response(&rp).unwrap();
            black_box((ea, eb))
        })
    });

    // The responder's DH and signature work for one initiation. The same initiation is
    // read each time: replay of initiations is refused by the node (timestamps), not
    // here, and its cost does not depend on the bytes.
    let (_, init) = handshake::initiate(
        &a,
        remote(&b),
        &PSK,
        7,
        UnixTime::from_secs(1_800_000_000),
        None,
        seed(7, 1),
    )
    .unwrap();
    let ip = InitiationPacket::new_checked(init.as_slice()).unwrap();
    let mut n: u32 = 0;
    g.bench_function("responder_read_accept", |bench| {
        bench.iter(|| {
            n = n.wrapping_add(1);
            let accept = handshake::read_initiation(&b, &PSK, black_box(&ip), seed(n, 2)).unwrap();
            black_box(accept.accept(&b, n).unwrap())
        })
    });

    // What a responder under load does per initiation before any DH work.
    let mut checker = CookieChecker::new(&b_noise, [3; 32]);
    assert!(checker.check_mac1(&init));
    g.bench_function("check_mac1", |bench| {
        bench.iter(|| black_box(checker.check_mac1(black_box(&init))))
    });

    let source: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let now = Instant::from_nanos(1_000_000_000);
    let mut reply = [0u8; wire::COOKIE_REPLY_LEN];
    g.bench_function("cookie_reply", |bench| {
        bench.iter(|| {
            let r = checker.cookie_reply(black_box(&ip), source, now);
            r.emit(&mut reply);
            black_box(&reply);
        })
    });

    // The whole cheap path as the node runs it: mac1 ok, mac2 missing, cookie reply.
    g.bench_function("under_load_path", |bench| {
        bench.iter(|| {
            let msg = black_box(&init);
            assert!(checker.check_mac1(msg));
            assert!(!checker.check_mac2(msg, source, now));
            let r = checker.cookie_reply(&ip, source, now);
            r.emit(&mut reply);
            black_box(&reply);
        })
    });
    g.finish();
}

fn bench_transport(c: &mut Criterion) {
    let (a, b) = (identity(1), identity(2));
    let (ea, eb) = handshake_pair(&a, &b, 1);
    let now = Instant::from_nanos(1_000_000_000);
    let mut g = c.benchmark_group("transport");

    for len in [MTU_PACKET, MAX_PAYLOAD] {
        g.throughput(Throughput::BytesDecimal(len as u64));

        // Seal in place; the same buffer is re-encrypted each time (stays in cache, as
        // a packet just read from the TUN would be).
        let mut tx = Keypair::new(&ea, now);
        let mut buf = vec![0u8; len + wire::DATA_OVERHEAD];
        g.bench_with_input(BenchmarkId::new("seal", len), &len, |bench, &len| {
            bench.iter(|| tx.seal(black_box(&mut buf), len, now).unwrap())
        });

        // Open fresh messages only: each is sealed (untimed) with the next counter.
        let mut tx = Keypair::new(&ea, now);
        let mut rx = Keypair::new(&eb, now);
        let mut opened: u64 = 0;
        g.bench_with_input(BenchmarkId::new("open", len), &len, |bench, &len| {
            bench.iter_batched_ref(
                || {
                    let counter = tx.sent();
                    let mut msg = vec![0u8; len + wire::DATA_OVERHEAD];
                    tx.seal(&mut msg, len, now).unwrap();
                    (msg, counter)
                },
                |(msg, counter)| {
                    let range = rx.open(msg, *counter, now).unwrap();
                    opened += 1;
                    range
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(opened, tx.sent(), "every sealed message was opened once");
    }
    g.finish();
}

const ADDR_A: &str = "198.18.0.1:51820";
const ADDR_B: &str = "198.18.0.2:51820";

/// Two nodes, A and B, with a session set up by passing their datagrams to each other.
struct Pair {
    a: Node,
    b: Node,
    addr_a: SocketAddr,
    addr_b: SocketAddr,
    /// A 1400-byte IPv6 packet from A's overlay address to B's.
    a_to_b: Vec<u8>,
    now: Instant,
}

impl Pair {
    fn connected() -> Self {
        let now = Instant::from_nanos(1_000_000_000);
        let unix = UnixTime::from_secs(1_800_000_000);
        let (ida, idb) = (identity(1), identity(2));
        let (ipv6_a, ipv6_b) = (ida.address().ipv6(), idb.address().ipv6());
        let remote_b = remote(&idb);
        let mut a = Node::new(Config::default(), [10; 32], now, unix);
        let la: LocalId = a.add_identity(ida);
        let mut b = Node::new(Config::default(), [20; 32], now, unix);
        b.add_identity(idb);
        let mut pair = Pair {
            a,
            b,
            addr_a: ADDR_A.parse().unwrap(),
            addr_b: ADDR_B.parse().unwrap(),
            a_to_b: build_ipv6(ipv6_a, ipv6_b, &[0x5a; MTU_PACKET - 40]),
            now,
        };
        pair.a
            .handle_command(
                now,
                Command::AddPeer {
                    local: la,
                    remote: remote_b,
                    endpoint: Some(pair.addr_b),
                    candidates: Vec::new(),
                    relay: None,
                    connect: true,
                },
            )
            .unwrap();
        pair.pump();
        // Both directions must work before anything is measured: A -> B here, and the
        // benchmark's own checks after.
        let mut out = vec![0u8; wire::MAX_DATAGRAM];
        let t = pair
            .a
            .handle_tun_packet(now, &pair.a_to_b, &mut out)
            .expect("session is up after the handshake");
        assert_eq!(t.destination, pair.addr_b);
        let range = pair
            .b
            .handle_datagram(now, pair.addr_a, &mut out[..t.len])
            .expect("B accepts A's data");
        assert_eq!(&out[range], pair.a_to_b.as_slice());
        pair
    }

    /// Deliver every queued datagram in both directions until both nodes are quiet.
    fn pump(&mut self) {
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(&mut buf) {
                assert_eq!(t.destination, self.addr_b);
                self.b
                    .handle_datagram(self.now, self.addr_a, &mut buf[..t.len]);
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit(&mut buf) {
                assert_eq!(t.destination, self.addr_a);
                self.a
                    .handle_datagram(self.now, self.addr_b, &mut buf[..t.len]);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("nodes kept sending after 16 rounds");
    }
}

fn bench_node(c: &mut Criterion) {
    let mut pair = Pair::connected();
    let now = pair.now;
    let mut g = c.benchmark_group("node");
    g.throughput(Throughput::BytesDecimal(MTU_PACKET as u64));

    let mut out = vec![0u8; wire::MAX_DATAGRAM];
    g.bench_function(BenchmarkId::new("tun_to_datagram", MTU_PACKET), |bench| {
        bench.iter(|| {
            pair.a
                .handle_tun_packet(now, black_box(&pair.a_to_b), &mut out)
                .unwrap()
        })
    });

    let Pair {
        a,
        b,
        addr_a,
        a_to_b,
        ..
    } = &mut pair;
    g.bench_function(BenchmarkId::new("datagram_to_tun", MTU_PACKET), |bench| {
        bench.iter_batched_ref(
            || {
                let t = a.handle_tun_packet(now, a_to_b, &mut out).unwrap();
                out[..t.len].to_vec()
            },
            |datagram| b.handle_datagram(now, *addr_a, datagram).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let (sa, sb) = (pair.a.stats(), pair.b.stats());
    assert_eq!(
        sa.queue_dropped + sa.tun_invalid,
        0,
        "A dropped packets: {sa:?}"
    );
    assert_eq!(
        sb.decrypt_failures + sb.replayed_data + sb.spoofed + sb.unknown_index + sb.malformed,
        0,
        "B rejected packets: {sb:?}"
    );
}

fn bench_aead_backend(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead_backend");
    for len in [MTU_PACKET, MAX_PAYLOAD] {
        g.throughput(Throughput::BytesDecimal(len as u64));
        for (name, alg) in [
            ("chacha20-poly1305", &CHACHA20_POLY1305),
            ("aes-256-gcm", &AES_256_GCM),
        ] {
            let key = LessSafeKey::new(UnboundKey::new(alg, &[7; 32]).unwrap());
            let mut buf = vec![0u8; len];
            let mut counter: u64 = 0;
            g.bench_with_input(BenchmarkId::new(name, len), &len, |bench, _| {
                bench.iter(|| {
                    counter += 1;
                    let mut n = [0u8; 12];
                    n[4..].copy_from_slice(&counter.to_le_bytes());
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        aead::Aad::empty(),
                        black_box(&mut buf),
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_handshake,
    bench_transport,
    bench_node,
    bench_aead_backend
);
criterion_main!(benches);
