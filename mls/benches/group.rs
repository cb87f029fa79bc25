//! CPU cost of MLS group changes for a private group of N members: what the admin
//! spends to add or remove one member (commit + merge), and what every other member
//! spends to apply that commit. Each iteration starts from a copy of the same state
//! (copying is outside the timing). Single-threaded: `1 / time` is one core's rate.
//!
//! Prints the sizes of the add commit, its Welcome and the remove commit per N on
//! stderr first.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode};
use metanet_mls::{Commit, Group, Member};

const SIZES: [usize; 3] = [10, 100, 1000];

fn member(i: usize) -> Member {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Member::new(&format!("mn1qqbench{i:05}"), &seed).unwrap()
}

/// A group of `n` members as its admin and as one other member see it, a key package
/// of a newcomer, the address of a member to remove, and the add and remove commits.
struct Setup {
    admin: Group,
    receiver: Group,
    newcomer: Vec<u8>,
    leaving: String,
    add: Commit,
    remove: Commit,
}

fn setup(n: usize) -> Setup {
    let mut admin_member = member(0);
    let mut admin = admin_member.create(b"ops").unwrap();
    let mut receiver_member = member(1);
    let mut packages = vec![receiver_member.key_package().unwrap()];
    packages.extend((2..n).map(|i| member(i).key_package().unwrap()));
    let commit = admin.commit(&packages, &[]).unwrap();
    admin.merge_pending().unwrap();
    let receiver = receiver_member.join(&commit.welcome.unwrap()).unwrap();
    assert_eq!(admin.members().len(), n);
    assert_eq!(
        receiver.network_key().unwrap(),
        admin.network_key().unwrap()
    );

    let newcomer = member(n).key_package().unwrap();
    let leaving = admin.members()[n - 1].clone();
    let add = admin
        .clone()
        .commit(std::slice::from_ref(&newcomer), &[])
        .unwrap();
    let remove = admin.clone().commit(&[], &[&leaving]).unwrap();
    Setup {
        admin,
        receiver,
        newcomer,
        leaving,
        add,
        remove,
    }
}

fn bench(c: &mut Criterion) {
    let setups: Vec<(usize, Setup)> = SIZES.iter().map(|&n| (n, setup(n))).collect();

    eprintln!();
    eprintln!("| N | add commit (B) | Welcome (B) | remove commit (B) |");
    eprintln!("|---:|---:|---:|---:|");
    for (n, s) in &setups {
        eprintln!(
            "| {n} | {} | {} | {} |",
            s.add.commit.len(),
            s.add.welcome.as_ref().map_or(0, Vec::len),
            s.remove.commit.len()
        );
    }
    eprintln!();

    let mut g = c.benchmark_group("mls");
    for (n, s) in &setups {
        let (samples, time) = if *n >= 1000 {
            (10, Duration::from_secs(4))
        } else {
            (20, Duration::from_secs(3))
        };
        // Flat: the same number of iterations per sample, so slow cases fit the time.
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(samples);
        g.measurement_time(time);
        g.warm_up_time(Duration::from_millis(500));

        g.bench_with_input(BenchmarkId::new("commit_add", n), s, |b, s| {
            b.iter_batched(
                || s.admin.clone(),
                |mut group| {
                    group
                        .commit(std::slice::from_ref(&s.newcomer), &[])
                        .unwrap();
                    group.merge_pending().unwrap();
                    group
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("apply_add", n), s, |b, s| {
            b.iter_batched(
                || s.receiver.clone(),
                |mut group| {
                    black_box(group.apply(&s.add.commit).unwrap());
                    group
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("commit_remove", n), s, |b, s| {
            b.iter_batched(
                || s.admin.clone(),
                |mut group| {
                    group.commit(&[], &[&s.leaving]).unwrap();
                    group.merge_pending().unwrap();
                    group
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("apply_remove", n), s, |b, s| {
            b.iter_batched(
                || s.receiver.clone(),
                |mut group| {
                    black_box(group.apply(&s.remove.commit).unwrap());
                    group
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
