//! Property tests of groups (docs/protocol.md §9.8): random logs of group claims from a
//! few keys, with rotations, revocations and forgeries mixed in, keep the invariants of
//! every group and replay to the same state.

// Test helpers unwrap what the test itself built.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use metanet_chain::claim::{self, Claim, RegistryId};
use metanet_chain::registry::{Effect, Ignored, KeyStatus, LogEntry, Outcome, Params, Registry};
use metanet_chain::{EvmAddress, GroupChange, Name};
use metanet_proto::address::Address;
use metanet_proto::identity::Identity;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

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

/// Five keys: rotations need somewhere to go once some are retired.
fn ids() -> Vec<Identity> {
    (1..=5u8).map(|s| Identity::generate(&[s; 64])).collect()
}

const GROUPS: [&str; 3] = ["ops", "dev", "a.ops"];

const CHANGES: [GroupChange; 4] = [
    GroupChange::Added,
    GroupChange::Removed,
    GroupChange::AdminAdded,
    GroupChange::AdminRemoved,
];

/// One step of a random log.
#[derive(Debug, Clone)]
enum Op {
    Create {
        who: usize,
        group: usize,
    },
    /// `seq: None` takes the group's current seq, so that changes often apply.
    Change {
        change: usize,
        who: usize,
        group: usize,
        seq: Option<u64>,
        subject: usize,
    },
    Rotate {
        who: usize,
        to: usize,
    },
    Revoke {
        who: usize,
    },
    /// A change signed by `who` with its subject overwritten afterwards.
    Forged {
        who: usize,
        group: usize,
        subject: usize,
    },
    /// An epoch claim for the group's next epoch moved by `off` (0: the next one).
    Epoch {
        who: usize,
        group: usize,
        off: i8,
    },
    /// A change for another registry.
    Foreign {
        who: usize,
        group: usize,
        subject: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..5usize;
    let group = 0..GROUPS.len();
    prop_oneof![
        3 => (who.clone(), group.clone()).prop_map(|(who, group)| Op::Create { who, group }),
        12 => (0..CHANGES.len(), who.clone(), group.clone(), proptest::option::weighted(0.2, 0..4u64), who.clone())
            .prop_map(|(change, who, group, seq, subject)| Op::Change { change, who, group, seq, subject }),
        1 => (who.clone(), who.clone()).prop_map(|(who, to)| Op::Rotate { who, to }),
        1 => who.clone().prop_map(|who| Op::Revoke { who }),
        1 => (who.clone(), group.clone(), who.clone()).prop_map(|(who, group, subject)| Op::Forged { who, group, subject }),
        4 => (who.clone(), group.clone(), prop_oneof![4 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)])
            .prop_map(|(who, group, off)| Op::Epoch { who, group, off }),
        1 => (who.clone(), group, who).prop_map(|(who, group, subject)| Op::Foreign { who, group, subject }),
    ]
}

fn group_claim(change: GroupChange, group: usize, seq: u64, member: &Identity) -> Claim {
    claim_of(
        change,
        Name::parse(GROUPS[group]).unwrap(),
        seq,
        member.address(),
    )
}

fn claim_of(change: GroupChange, name: Name, seq: u64, member: Address) -> Claim {
    match change {
        GroupChange::Created => Claim::GroupCreate { name },
        GroupChange::Added => Claim::GroupAdd { name, seq, member },
        GroupChange::Removed => Claim::GroupRemove { name, seq, member },
        GroupChange::AdminAdded => Claim::AdminAdd { name, seq, member },
        GroupChange::AdminRemoved => Claim::AdminRemove { name, seq, member },
    }
}

/// The claim bytes of `op` against the state so far (the log records the bytes, so a
/// replay does not depend on how they were chosen).
fn encode(op: &Op, ids: &[Identity], reg: &Registry) -> Vec<u8> {
    let registry = params().registry;
    let seq_of = |g: usize| {
        reg.group(&Name::parse(GROUPS[g]).unwrap())
            .map_or(0, |g| g.seq)
    };
    let (who, claim) = match op {
        Op::Create { who, group } => (*who, group_claim(GroupChange::Created, *group, 0, &ids[0])),
        Op::Change {
            change,
            who,
            group,
            seq,
            subject,
        } => (
            *who,
            group_claim(
                CHANGES[*change],
                *group,
                seq.unwrap_or_else(|| seq_of(*group)),
                &ids[*subject],
            ),
        ),
        Op::Rotate { who, to } => (
            *who,
            Claim::rotation(&ids[*to], &registry, &ids[*who].public_key()).unwrap(),
        ),
        Op::Revoke { who } => (*who, Claim::Revocation),
        Op::Epoch { who, group, off } => {
            let next = reg
                .group(&Name::parse(GROUPS[*group]).unwrap())
                .map_or(1, |g| g.epoch + 1);
            (
                *who,
                Claim::GroupEpoch {
                    name: Name::parse(GROUPS[*group]).unwrap(),
                    epoch: next.saturating_add_signed(i64::from(*off)),
                    commit: [*who as u8; 32],
                    welcome: [0; 32],
                    epoch_hash: [next as u8; 32],
                },
            )
        }
        Op::Forged {
            who,
            group,
            subject,
        } => {
            let c = group_claim(GroupChange::Added, *group, seq_of(*group), &ids[*who]);
            let mut b = claim::seal(&ids[*who], &registry, &c).unwrap();
            let at = b.len() - 64 - 20;
            b[at..at + 20].copy_from_slice(ids[*subject].address().as_bytes());
            b[at] ^= 0x80;
            return b;
        }
        Op::Foreign {
            who,
            group,
            subject,
        } => {
            let other = RegistryId {
                chain_id: 1,
                ..registry
            };
            let c = group_claim(GroupChange::Added, *group, seq_of(*group), &ids[*subject]);
            return claim::seal(&ids[*who], &other, &c).unwrap();
        }
    };
    claim::seal(&ids[who], &registry, &claim).unwrap()
}

fn check_invariants(r: &Registry, ids: &[Identity], applied: &BTreeMap<Name, u64>) {
    for (name, g) in r.groups() {
        assert!(!g.admins.is_empty(), "{name} has no admin");
        assert!(
            g.admins.is_subset(&g.members),
            "{name} has an admin who is no member"
        );
        assert_eq!(
            g.seq, applied[name],
            "{name}: seq is not the number of changes"
        );
        assert_eq!(
            g.log.len() as u64,
            g.seq + 1,
            "{name}: one event per change"
        );
        assert_eq!(g.log[0].kind, GroupChange::Created);
        assert_eq!(g.log[0].block, g.created_block);
        assert!(g.log.windows(2).all(|w| w[0].index < w[1].index));
        // Epochs count up from 1 without a gap, in log order.
        assert_eq!(
            g.epoch,
            g.epochs.len() as u64,
            "{name}: one record per epoch"
        );
        for (i, e) in g.epochs.iter().enumerate() {
            assert_eq!(e.epoch, i as u64 + 1);
            assert!(e.index > g.log[0].index);
        }
        assert!(g.epochs.windows(2).all(|w| w[0].index < w[1].index));
        for m in &g.members {
            // Memberships follow rotations.
            assert!(
                !matches!(r.key_status(m), KeyStatus::Rotated { .. }),
                "{name} has a rotated member"
            );
            assert!(r.groups_of(m).contains(name));
        }
    }
    for id in ids {
        for name in r.groups_of(&id.address()) {
            assert!(r.group(&name).unwrap().members.contains(&id.address()));
        }
    }
}

/// The groups, as everything observable about them.
fn view(r: &Registry, ids: &[Identity]) -> String {
    let mut s = String::new();
    for (n, g) in r.groups() {
        s.push_str(&format!("{n}={g:?};"));
    }
    for id in ids {
        let a = id.address();
        s.push_str(&format!(
            "{a}:{:?}:{:?};",
            r.key_status(&a),
            r.groups_of(&a)
        ));
    }
    s
}

fn prev_admins(r: &Registry, name: &Name) -> std::collections::BTreeSet<Address> {
    r.group(name).map(|g| g.admins.clone()).unwrap_or_default()
}

/// Run `ops` as a log; returns the registry and the log.
fn run(ops: &[(Op, u64)], ids: &[Identity]) -> (Registry, Vec<LogEntry>, Vec<Outcome>) {
    let mut reg = Registry::new(params());
    let mut applied: BTreeMap<Name, u64> = BTreeMap::new();
    let mut log = Vec::new();
    let mut outcomes = Vec::new();
    let mut block = 1;
    for (op, gap) in ops {
        block += gap;
        let entry = LogEntry {
            index: reg.next_index(),
            block,
            claim: encode(op, ids, &reg),
        };
        let before = view(&reg, ids);
        let reg_before = reg.clone();
        let outcome = reg.apply(&entry).unwrap();
        match &outcome {
            Outcome::Ignored(_) => {
                assert_eq!(
                    before,
                    view(&reg, ids),
                    "an ignored claim changed the state"
                )
            }
            Outcome::Applied(Effect::Group {
                name, change, seq, ..
            }) => {
                let n = applied.entry(name.clone()).or_insert(0);
                if *change != GroupChange::Created {
                    *n += 1;
                }
                assert_eq!(seq, n);
            }
            Outcome::Applied(Effect::Epoch { name, epoch }) => {
                // Only an admin of the group as it was orders an epoch.
                let signer = match op {
                    Op::Epoch { who, .. } => ids[*who].address(),
                    _ => panic!("{op:?} made an epoch"),
                };
                assert!(before.contains(&format!("{name}=")));
                assert_eq!(epoch.by, signer);
                assert!(prev_admins(&reg_before, name).contains(&signer));
            }
            Outcome::Applied(_) => {}
        }
        if let Op::Forged { .. } | Op::Foreign { .. } = op {
            assert!(
                matches!(outcome, Outcome::Ignored(Ignored::Invalid(_))),
                "a forged or foreign claim applied: {outcome:?}"
            );
        }
        check_invariants(&reg, ids, &applied);
        log.push(entry);
        outcomes.push(outcome);
    }
    (reg, log, outcomes)
}

/// The random logs must exercise every change and the main refusals, or the property
/// below proves little. A fixed seed, as in `properties.rs`.
#[test]
fn random_logs_reach_every_group_change() {
    use proptest::test_runner::TestRunner;
    let ids = ids();
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec((op(), 0..3u64), 40..60);
    let mut changes = BTreeMap::new();
    let mut refusals = BTreeMap::new();
    let mut epochs = 0;
    for _ in 0..64 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let (_, _, outcomes) = run(&ops, &ids);
        for o in outcomes {
            match o {
                Outcome::Applied(Effect::Group { change, .. }) => {
                    *changes.entry(change).or_insert(0) += 1
                }
                Outcome::Applied(Effect::Epoch { .. }) => epochs += 1,
                Outcome::Ignored(why) => {
                    let key = format!("{why:?}");
                    let key = key.split([' ', '(']).next().unwrap_or("").to_owned();
                    *refusals.entry(key).or_insert(0) += 1
                }
                Outcome::Applied(_) => {}
            }
        }
    }
    assert_eq!(changes.len(), 5, "changes seen: {changes:?}");
    assert!(epochs > 20, "{epochs} epochs");
    for why in [
        "GroupExists",
        "NotAdmin",
        "WrongSeq",
        "AlreadyMember",
        "NotMember",
        "AlreadyAdmin",
        "NotGroupAdmin",
        "LastAdmin",
        "WrongEpoch",
        "BadRecipient",
        "Invalid",
    ] {
        assert!(refusals.contains_key(why), "{why} never seen: {refusals:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_group_logs_keep_the_invariants_and_replay_identically(
        ops in proptest::collection::vec((op(), 0..3u64), 1..60)
    ) {
        let ids = ids();
        let (reg, log, _) = run(&ops, &ids);
        // A second resolver replaying the same log reaches the same state.
        let mut other = Registry::new(params());
        for e in &log {
            other.apply(e).unwrap();
        }
        prop_assert_eq!(&reg, &other);
    }

    #[test]
    fn group_claims_round_trip(
        name in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){0,3}",
        seq in any::<u64>(),
        change in 0..CHANGES.len(),
    ) {
        prop_assume!(!name.rsplit('.').next().unwrap_or("").starts_with("mn1"));
        let ids = ids();
        let registry = params().registry;
        let parsed = Name::parse(&name).unwrap();
        for c in [
            Claim::GroupCreate { name: parsed.clone() },
            claim_of(CHANGES[change], parsed, seq, ids[1].address()),
        ] {
            let b = claim::seal(&ids[0], &registry, &c).unwrap();
            let opened = claim::open(&b, &registry).unwrap();
            prop_assert_eq!(&opened.claim, &c);
            prop_assert_eq!(opened.signer, ids[0].public_key());
            // Canonical: re-sealing the opened claim gives the same bytes.
            prop_assert_eq!(claim::seal(&ids[0], &registry, &opened.claim).unwrap(), b);
        }
    }
}
