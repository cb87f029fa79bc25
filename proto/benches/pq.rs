//! CPU cost of the hybrid ML-KEM-512 handshake against the classical one, per side
//! (docs/benchmarks.md, docs/protocol.md §5.7):
//!
//! - `initiate`: building an initiation (classical; hybrid adds ML-KEM key generation
//!   and 803 more bytes to encrypt);
//! - `responder_read_accept`: reading an initiation and writing the response (hybrid
//!   adds key validation and encapsulation);
//! - `initiator_handle_response`: reading the response (hybrid adds decapsulation).
//!
//! Single-threaded: `1 / responder_read_accept` is the responder's handshakes per
//! second on one core. Message sizes are printed once at start.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use metanet_proto::handshake::{self, Extensions, Psk, Remote};
use metanet_proto::pq::PqMode;
use metanet_proto::wire::{InitiationPacket, ResponsePacket};
use metanet_proto::{Identity, UnixTime};

const PSK: Psk = [0; 32];

fn remote(id: &Identity) -> Remote {
    Remote {
        public_key: id.public_key(),
        noise_key: id.noise().public_key(),
    }
}

fn seed(n: u32, tag: u8) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..4].copy_from_slice(&n.to_le_bytes());
    s
}

fn kem_seed(n: u32) -> [u8; 64] {
    let mut s = [0x5a; 64];
    s[..4].copy_from_slice(&n.to_le_bytes());
    s
}

fn initiate(
    a: &Identity,
    b: &Identity,
    n: u32,
    pq: PqMode,
) -> (handshake::ExpectResponse, Vec<u8>) {
    handshake::initiate_pq(
        a,
        remote(b),
        &PSK,
        n,
        UnixTime::from_secs(1_800_000_000 + u64::from(n)),
        None,
        seed(n, 1),
        false,
        &Extensions::default(),
        pq,
        &kem_seed(n),
    )
    .unwrap()
}

fn respond(b: &Identity, init: &[u8], n: u32, hybrid: bool) -> Vec<u8> {
    let ip = InitiationPacket::new_checked(init).unwrap();
    let accept = handshake::read_initiation(b, &PSK, &ip, seed(n, 2)).unwrap();
    let (_, resp) = if hybrid {
        accept.accept_hybrid(b, n, false, &seed(n, 3)).unwrap()
    } else {
        accept.accept_choosing(b, n, false).unwrap()
    };
    resp
}

fn bench_pq(c: &mut Criterion) {
    let (a, b) = (Identity::generate(&[1; 64]), Identity::generate(&[2; 64]));
    for (name, pq) in [("classical", PqMode::Off), ("hybrid", PqMode::Auto)] {
        let (_, init) = initiate(&a, &b, 0, pq);
        let resp = respond(&b, &init, 0, pq != PqMode::Off);
        eprintln!(
            "{name}: initiation {} bytes, response {} bytes",
            init.len(),
            resp.len()
        );
    }
    let mut g = c.benchmark_group("pq_handshake");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for (name, pq) in [("classical", PqMode::Off), ("hybrid", PqMode::Auto)] {
        let hybrid = pq != PqMode::Off;
        let mut n = 0u32;
        g.bench_function(format!("initiate/{name}"), |bench| {
            bench.iter(|| {
                n = n.wrapping_add(1);
                black_box(initiate(&a, &b, n, pq))
            })
        });
        let (_, init) = initiate(&a, &b, 7, pq);
        let mut n = 0u32;
        g.bench_function(format!("responder_read_accept/{name}"), |bench| {
            bench.iter(|| {
                n = n.wrapping_add(1);
                black_box(respond(&b, black_box(&init), n, hybrid))
            })
        });
        let mut n = 0u32;
        g.bench_function(format!("initiator_handle_response/{name}"), |bench| {
            bench.iter_batched(
                || {
                    n = n.wrapping_add(1);
                    let (state, init) = initiate(&a, &b, n, pq);
                    (state, respond(&b, &init, n, hybrid))
                },
                |(state, resp)| {
                    let rp = ResponsePacket::new_checked(resp.as_slice()).unwrap();
                    black_box(state.handle_response(&rp).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench_pq);
criterion_main!(benches);
