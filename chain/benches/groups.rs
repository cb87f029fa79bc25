//! CPU cost of group membership (docs/benchmarks.md, "Groups and access policy"):
//! the membership check a responder does at the handshake (an allow list holding a
//! group's N members), what an admin's daemon spends to make one add or remove claim
//! (the signature), and what every member's resolver spends to apply it to a group of
//! N members. Single-threaded: `1 / time` is one core's rate.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use metanet_chain::claim::{self, Claim, RegistryId};
use metanet_chain::registry::{LogEntry, Outcome, Params, Registry};
use metanet_chain::{EvmAddress, Name};
use metanet_proto::address::Address;
use metanet_proto::identity::Identity;
use metanet_proto::node::Policy;

const SIZES: [usize; 3] = [10, 100, 1000];

fn params() -> Params {
    Params {
        registry: RegistryId {
            chain_id: 31337,
            contract: EvmAddress([0xbb; 20]),
        },
        min_reveal_delay: 2,
        commit_lifetime: 6,
    }
}

fn member(i: usize) -> Address {
    let mut seed = [0u8; 64];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Identity::generate(&seed).address()
}

/// A registry whose group `ops` holds the admin and `n - 1` more members, and the
/// next log index.
fn group_of(admin: &Identity, n: usize) -> (Registry, u64) {
    let p = params();
    let mut reg = Registry::new(p);
    let ops = Name::parse("ops").unwrap();
    let mut index = 0;
    let mut apply = |reg: &mut Registry, c: &Claim| {
        let bytes = claim::seal(admin, &p.registry, c).unwrap();
        let out = reg
            .apply(&LogEntry {
                index,
                block: 1 + index,
                claim: bytes,
            })
            .unwrap();
        assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
        index += 1;
    };
    apply(&mut reg, &Claim::GroupCreate { name: ops.clone() });
    for i in 1..n {
        let seq = reg.group(&ops).unwrap().seq;
        apply(
            &mut reg,
            &Claim::GroupAdd {
                name: ops.clone(),
                seq,
                member: member(i),
            },
        );
    }
    (reg, index)
}

fn membership_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("membership_check");
    for n in SIZES {
        let allow: BTreeSet<Address> = (0..n).map(member).collect();
        let policy = Policy {
            allow: Some(allow),
            rules: vec![],
        };
        let (inside, outside) = (member(n / 2), member(n + 7));
        g.bench_with_input(BenchmarkId::new("member", n), &n, |b, _| {
            b.iter(|| black_box(policy.admits(black_box(&inside))))
        });
        g.bench_with_input(BenchmarkId::new("stranger", n), &n, |b, _| {
            b.iter(|| black_box(policy.admits(black_box(&outside))))
        });
    }
    g.finish();
}

fn changes(c: &mut Criterion) {
    let admin = Identity::generate(&[0xad; 64]);
    let p = params();
    let ops = Name::parse("ops").unwrap();
    let mut g = c.benchmark_group("group_change");
    g.sample_size(20);
    for n in SIZES {
        let (reg, index) = group_of(&admin, n);
        let seq = reg.group(&ops).unwrap().seq;
        let add = Claim::GroupAdd {
            name: ops.clone(),
            seq,
            member: member(n + 1),
        };
        let remove = Claim::GroupRemove {
            name: ops.clone(),
            seq,
            member: member(n / 2),
        };
        g.bench_with_input(BenchmarkId::new("committer_seal_add", n), &n, |b, _| {
            b.iter(|| black_box(claim::seal(&admin, &p.registry, &add).unwrap()))
        });
        for (what, c) in [
            ("receiver_apply_add", &add),
            ("receiver_apply_remove", &remove),
        ] {
            let bytes = claim::seal(&admin, &p.registry, c).unwrap();
            g.bench_with_input(BenchmarkId::new(what, n), &n, |b, _| {
                b.iter_batched_ref(
                    || reg.clone(),
                    |r| {
                        let out = r
                            .apply(&LogEntry {
                                index,
                                block: 1 + index,
                                claim: bytes.clone(),
                            })
                            .unwrap();
                        assert!(matches!(out, Outcome::Applied(_)));
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        let bytes = claim::seal(&admin, &p.registry, &add).unwrap();
        println!(
            "group of {n}: an add or remove claim is {} bytes on chain",
            bytes.len()
        );
    }
    g.finish();
}

criterion_group!(benches, membership_check, changes);
criterion_main!(benches);
