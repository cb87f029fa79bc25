//! Untrusted bytes: truncated, bit-flipped and random inputs give errors, never a
//! panic, and leave the group as it was.
#![allow(clippy::unwrap_used)]

use metanet_mls::{key_package_address, Group, Member};

fn member(name: &str) -> Member {
    Member::new(
        &format!("mn1qq{name}"),
        blake3::hash(name.as_bytes()).as_bytes(),
    )
    .unwrap()
}

/// Every proper prefix of `valid` and every single-bit flip of it.
fn mutations(valid: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let truncated = (0..valid.len()).map(|n| valid[..n].to_vec());
    let flipped = (0..valid.len() * 8).map(|bit| {
        let mut m = valid.to_vec();
        m[bit / 8] ^= 1 << (bit % 8);
        m
    });
    truncated.chain(flipped)
}

/// Deterministic junk: lengths 0..400, plus junk behind each short valid prefix.
fn junk(valid: &[u8]) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    for len in 0..400 {
        out.push((0..len).map(|_| next() as u8).collect());
    }
    for keep in [1, 2, 3, 4, 6, 8, 12, 16, 24, 32] {
        let keep = keep.min(valid.len());
        for len in [0, 1, 10, 100, 1000] {
            let mut m = valid[..keep].to_vec();
            m.extend((0..len).map(|_| next() as u8));
            out.push(m);
        }
    }
    out
}

struct Fixture {
    b: Member,
    gb: Group,
    kp: Vec<u8>,
    welcome: Vec<u8>,
    commit: Vec<u8>,
    saved_group: Vec<u8>,
    saved_member: Vec<u8>,
}

/// A's group with B; A has made a commit adding C (which B has not applied).
fn fixture() -> Fixture {
    let mut a = member("a");
    let mut b = member("b");
    let mut c = member("c");
    let mut ga = a.create(b"ops").unwrap();
    let add_b = ga.commit(&[b.key_package().unwrap()], &[]).unwrap();
    ga.merge_pending().unwrap();
    let gb = b.join(add_b.welcome.as_ref().unwrap()).unwrap();
    let kp = c.key_package().unwrap();
    let add_c = ga.commit(std::slice::from_ref(&kp), &[]).unwrap();
    let saved_group = gb.save().unwrap();
    let _spare = b.key_package().unwrap();
    let saved_member = b.save().unwrap();
    let welcome = add_c.welcome.unwrap();
    Fixture {
        b,
        gb,
        kp,
        welcome,
        commit: add_c.commit,
        saved_group,
        saved_member,
    }
}

#[test]
fn key_package_address_refuses_mutations() {
    let f = fixture();
    assert!(key_package_address(&f.kp).is_ok());
    let mut n = 0;
    for m in mutations(&f.kp).chain(junk(&f.kp)) {
        assert!(key_package_address(&m).is_err(), "accepted {m:?}");
        n += 1;
    }
    assert!(n > 1000);
}

#[test]
fn apply_refuses_mutations() {
    let mut f = fixture();
    let key = f.gb.network_key().unwrap();
    for m in mutations(&f.commit).chain(junk(&f.commit)) {
        assert!(f.gb.apply(&m).is_err(), "accepted a mutated commit");
    }
    // Nothing changed: the real commit still applies.
    assert_eq!(f.gb.epoch(), 1);
    assert_eq!(f.gb.network_key().unwrap(), key);
    f.gb.apply(&f.commit).unwrap();
    assert_eq!(f.gb.epoch(), 2);
    // Other kinds of messages are not commits.
    let mut gb2 = f.b.load_group(&f.saved_group).unwrap();
    assert!(gb2.apply(&f.kp).is_err());
    assert!(gb2.apply(&f.welcome).is_err());
    assert!(gb2.apply(&f.saved_group).is_err());
}

#[test]
fn join_refuses_mutations() {
    let f = fixture();
    // A failed join does not use up the key package secrets, so one C serves for all
    // attempts (and a mutation that joined would use them up and fail the last join).
    let mut c = member("c");
    let kp = c.key_package().unwrap();
    let mut ga = member("a2").create(b"ops2").unwrap();
    let welcome = ga.commit(&[kp], &[]).unwrap().welcome.unwrap();
    for m in mutations(&welcome).chain(junk(&welcome)) {
        assert!(c.join(&m).is_err(), "accepted a mutated welcome");
    }
    // Not our Welcome, and not Welcomes at all.
    assert!(c.join(&f.welcome).is_err());
    assert!(c.join(&f.commit).is_err());
    assert!(c.join(&f.kp).is_err());
    // The real one still works.
    ga.merge_pending().unwrap();
    let gc = c.join(&welcome).unwrap();
    assert_eq!(gc.network_key().unwrap(), ga.network_key().unwrap());
}

#[test]
fn load_group_and_restore_refuse_mutations() {
    let mut f = fixture();
    for m in mutations(&f.saved_group).chain(junk(&f.saved_group)) {
        assert!(f.b.load_group(&m).is_err());
    }
    for m in mutations(&f.saved_member).chain(junk(&f.saved_member)) {
        assert!(Member::restore("mn1qqb", blake3::hash(b"b").as_bytes(), &m).is_err());
    }
    assert!(f.b.load_group(&f.saved_group).is_ok());
    assert!(Member::restore("mn1qqb", blake3::hash(b"b").as_bytes(), &f.saved_member).is_ok());
}
