//! CPU cost of MLS group changes for a private group of N members: what the admin
//! spends to add or remove one member (commit + merge), and what every other member
//! spends to apply that commit. Each iteration starts from a copy of the same state
//! (copying is outside the timing). Single-threaded: `1 / time` is one core's rate.
//!
//! Two shapes of the same group: `blank`, where only the admin ever committed (one
//! commit added everybody), so the other members' tree nodes are blank and every
//! update path is encrypted to each member; and `filled`, where every member committed
//! one empty update right after it joined (what metanetd's members do, docs/protocol.md
//! §9.9), so update paths are encrypted to O(log N) subtrees.
//!
//! Prints the sizes of the add commit, its Welcome and the remove commit per shape and
//! N on stderr first.
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

/// `n` members added by one commit of the admin.
fn blank(n: usize) -> (Group, Group) {
    let mut admin_member = member(0);
    let mut admin = admin_member.create(b"ops").unwrap();
    let mut receiver_member = member(1);
    let mut packages = vec![receiver_member.key_package().unwrap()];
    packages.extend((2..n).map(|i| member(i).key_package().unwrap()));
    let commit = admin.commit(&packages, &[]).unwrap();
    admin.merge_pending().unwrap();
    let receiver = receiver_member.join(&commit.welcome.unwrap()).unwrap();
    (admin, receiver)
}

/// `n` members added one by one, each committing an empty update once it joined.
fn filled(n: usize) -> (Group, Group) {
    let mut admin_member = member(0);
    let mut admin = admin_member.create(b"ops").unwrap();
    let mut receiver: Option<Group> = None;
    for i in 1..n {
        let mut m = member(i);
        let kp = m.key_package().unwrap();
        let add = admin.commit(&[kp], &[]).unwrap();
        admin.merge_pending().unwrap();
        if let Some(r) = receiver.as_mut() {
            r.apply(&add.commit).unwrap();
        }
        let mut joined = m.join(&add.welcome.unwrap()).unwrap();
        let update = joined.commit(&[], &[]).unwrap();
        joined.merge_pending().unwrap();
        admin.apply(&update.commit).unwrap();
        match receiver.as_mut() {
            Some(r) => {
                r.apply(&update.commit).unwrap();
            }
            None => receiver = Some(joined),
        }
    }
    (admin, receiver.unwrap())
}

fn setup(n: usize, shape: fn(usize) -> (Group, Group)) -> Setup {
    let (admin, receiver) = shape(n);
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
    let mut setups: Vec<(String, usize, Setup)> = Vec::new();
    for (name, shape) in [
        ("blank", blank as fn(usize) -> (Group, Group)),
        ("filled", filled),
    ] {
        for &n in &SIZES {
            setups.push((name.to_owned(), n, setup(n, shape)));
        }
    }

    eprintln!();
    eprintln!("| tree | N | add commit (B) | Welcome (B) | remove commit (B) |");
    eprintln!("|---|---:|---:|---:|---:|");
    for (shape, n, s) in &setups {
        eprintln!(
            "| {shape} | {n} | {} | {} | {} |",
            s.add.commit.len(),
            s.add.welcome.as_ref().map_or(0, Vec::len),
            s.remove.commit.len()
        );
    }
    eprintln!();

    let mut g = c.benchmark_group("mls");
    for (shape, n, s) in &setups {
        let n = &format!("{shape}/{n}");
        let (samples, time) = if n.ends_with("/1000") {
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
