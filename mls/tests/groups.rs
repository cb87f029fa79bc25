//! Group life cycle: agreement, forward and backward security, persistence, epochs,
//! key package checks.
#![allow(clippy::unwrap_used)]

use metanet_mls::{key_package_address, Error, Group, Member};

fn seed(name: &str) -> [u8; 32] {
    *blake3::hash(name.as_bytes()).as_bytes()
}

fn address(name: &str) -> String {
    format!("mn1qq{name}")
}

fn member(name: &str) -> Member {
    Member::new(&address(name), &seed(name)).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A's group "ops" with B and C added in one commit, and the three groups.
fn ops() -> (Member, Group, Member, Group, Member, Group) {
    let mut a = member("a");
    let mut b = member("b");
    let mut c = member("c");
    let mut ga = a.create(b"ops").unwrap();
    let kp_b = b.key_package().unwrap();
    let kp_c = c.key_package().unwrap();
    let commit = ga.commit(&[kp_b, kp_c], &[]).unwrap();
    assert_eq!(ga.epoch(), 0, "commit must not apply itself");
    ga.merge_pending().unwrap();
    assert_eq!(commit.epoch, 1);
    assert_eq!(commit.epoch_hash, ga.epoch_hash().unwrap());
    let welcome = commit.welcome.unwrap();
    let gb = b.join(&welcome).unwrap();
    let gc = c.join(&welcome).unwrap();
    (a, ga, b, gb, c, gc)
}

#[test]
fn three_members_agree() {
    let (_a, ga, _b, gb, _c, gc) = ops();
    let members = vec![address("a"), address("b"), address("c")];
    for g in [&ga, &gb, &gc] {
        assert_eq!(g.group_id(), b"ops");
        assert_eq!(g.epoch(), 1);
        assert_eq!(g.members(), members);
        assert_eq!(g.network_key().unwrap(), ga.network_key().unwrap());
        assert_eq!(g.epoch_hash().unwrap(), ga.epoch_hash().unwrap());
    }
    assert_ne!(ga.network_key().unwrap(), [0; 32]);
    assert_ne!(ga.network_key().unwrap(), ga.epoch_hash().unwrap());
}

#[test]
fn new_group_is_epoch_zero_and_keys_differ_per_group() {
    let mut a = member("a");
    let g1 = a.create(b"ops").unwrap();
    let g2 = a.create(b"dev").unwrap();
    assert_eq!(g1.epoch(), 0);
    assert_eq!(g1.members(), vec![address("a")]);
    assert_ne!(g1.network_key().unwrap(), g2.network_key().unwrap());
    assert!(matches!(a.create(b""), Err(Error::Invalid(_))));
}

#[test]
fn forward_security_removed_member_loses_access() {
    let (_a, mut ga, _b, mut gb, _c, mut gc) = ops();
    let old_key = gc.network_key().unwrap();
    let mut gc_copy = gc.clone();

    let remove = ga.commit(&[], &[&address("c")]).unwrap();
    assert!(remove.welcome.is_none());
    ga.merge_pending().unwrap();
    let applied = gb.apply(&remove.commit).unwrap();
    assert_eq!(applied.epoch, 2);
    assert_eq!(applied.removed, vec![address("c")]);
    assert!(applied.added.is_empty());
    assert_eq!(applied.committer, address("a"));
    assert_eq!(applied.epoch_hash, remove.epoch_hash);
    let new_key = ga.network_key().unwrap();
    assert_eq!(gb.network_key().unwrap(), new_key);
    assert_eq!(ga.members(), vec![address("a"), address("b")]);
    assert_eq!(gb.members(), ga.members());
    assert_ne!(new_key, old_key);

    // C learns it was removed and gets no key any more.
    assert_eq!(gc.apply(&remove.commit), Err(Error::NotMember));
    assert_eq!(gc.network_key(), Err(Error::NotMember));
    assert_eq!(gc.epoch_hash(), Err(Error::NotMember));
    assert!(gc.save().is_err());
    assert!(gc.commit(&[], &[]).is_err());

    // Nor can C follow any later commit, applied or not.
    let later = ga.commit(&[], &[]).unwrap();
    ga.merge_pending().unwrap();
    gb.apply(&later.commit).unwrap();
    assert_eq!(gc.apply(&later.commit), Err(Error::NotMember));
    assert!(matches!(
        gc_copy.apply(&later.commit),
        Err(Error::WrongEpoch { have: 1, got: 3 })
    ));
    assert_eq!(gc_copy.network_key().unwrap(), old_key);
    assert_ne!(ga.network_key().unwrap(), old_key);
    assert_ne!(ga.network_key().unwrap(), new_key);
}

#[test]
fn backward_security_joiner_cannot_reach_earlier_epochs() {
    let mut a = member("a");
    let mut b = member("b");
    let mut ga = a.create(b"ops").unwrap();
    let mut old_keys = vec![ga.network_key().unwrap()];
    let mut old_commits = Vec::new();
    let add_b = ga.commit(&[b.key_package().unwrap()], &[]).unwrap();
    ga.merge_pending().unwrap();
    let mut gb = b.join(add_b.welcome.as_ref().unwrap()).unwrap();
    old_commits.push(add_b.commit);
    old_keys.push(ga.network_key().unwrap());
    for _ in 0..3 {
        let c = ga.commit(&[], &[]).unwrap();
        ga.merge_pending().unwrap();
        gb.apply(&c.commit).unwrap();
        old_commits.push(c.commit);
        old_keys.push(ga.network_key().unwrap());
    }
    let n = ga.epoch();
    assert_eq!(old_keys.len() as u64, n + 1);

    let mut e = member("e");
    let kp_e = e.key_package().unwrap();
    let add_e = ga.commit(&[kp_e], &[]).unwrap();
    ga.merge_pending().unwrap();
    gb.apply(&add_e.commit).unwrap();
    let mut ge = e.join(add_e.welcome.as_ref().unwrap()).unwrap();
    assert_eq!(ge.epoch(), n + 1);
    let key = ge.network_key().unwrap();
    assert_eq!(key, ga.network_key().unwrap());
    assert_eq!(key, gb.network_key().unwrap());
    for old in &old_keys {
        assert_ne!(&key, old);
    }

    let saved_group = ge.save().unwrap();
    let saved_member = e.save().unwrap();
    for old in &old_keys {
        assert!(!contains(&saved_group, old));
        assert!(!contains(&saved_member, old));
    }
    // The saved state holds secrets from which the key is derived, not the key.
    assert!(!contains(&saved_group, &key));

    for old in &old_commits {
        assert!(matches!(ge.apply(old), Err(Error::WrongEpoch { .. })));
    }
    assert!(matches!(
        ge.apply(&add_e.commit),
        Err(Error::WrongEpoch { .. })
    ));
    assert_eq!(ge.network_key().unwrap(), key);
}

#[test]
fn save_restore_round_trip() {
    let mut a = member("a");
    let mut b = member("b");
    let mut ga = a.create(b"ops").unwrap();
    let add_b = ga.commit(&[b.key_package().unwrap()], &[]).unwrap();
    ga.merge_pending().unwrap();
    let gb = b.join(add_b.welcome.as_ref().unwrap()).unwrap();

    // B keeps one unused key package across the restart.
    let spare = b.key_package().unwrap();
    let saved_b = b.save().unwrap();
    let saved_gb = gb.save().unwrap();
    drop((b, gb));

    let mut b = Member::restore(&address("b"), &seed("b"), &saved_b).unwrap();
    assert_eq!(b.address(), address("b"));
    let mut gb = b.load_group(&saved_gb).unwrap();
    assert_eq!(gb.epoch(), 1);
    assert_eq!(gb.network_key().unwrap(), ga.network_key().unwrap());
    assert_eq!(gb.members(), ga.members());

    let mut c = member("c");
    let add_c = ga.commit(&[c.key_package().unwrap()], &[]).unwrap();
    ga.merge_pending().unwrap();
    let applied = gb.apply(&add_c.commit).unwrap();
    assert_eq!(applied.added, vec![address("c")]);
    let gc = c.join(add_c.welcome.as_ref().unwrap()).unwrap();
    assert_eq!(gb.network_key().unwrap(), ga.network_key().unwrap());
    assert_eq!(gc.network_key().unwrap(), ga.network_key().unwrap());

    // The restored B can still be added with its spare key package (to another group).
    let mut gd = member("d").create(b"dev").unwrap();
    let add = gd.commit(&[spare], &[]).unwrap();
    gd.merge_pending().unwrap();
    let welcome = add.welcome.unwrap();
    let gb_dev = b.join(&welcome).unwrap();
    assert_eq!(gb_dev.network_key().unwrap(), gd.network_key().unwrap());
    // ... and only once: its secrets are gone after the join, also from the save.
    assert_eq!(b.join(&welcome).unwrap_err(), Error::NotMember);
    let b2 = Member::restore(&address("b"), &seed("b"), &b.save().unwrap()).unwrap();
    let mut b2 = b2;
    assert_eq!(b2.join(&welcome).unwrap_err(), Error::NotMember);

    // A saves with a commit pending, restarts and merges it.
    let pending = ga.commit(&[], &[&address("c")]).unwrap();
    let saved_ga = ga.save().unwrap();
    let mut a = Member::restore(&address("a"), &seed("a"), &a.save().unwrap()).unwrap();
    let mut ga2 = a.load_group(&saved_ga).unwrap();
    ga2.merge_pending().unwrap();
    assert_eq!(ga2.epoch(), pending.epoch);
    assert_eq!(ga2.epoch_hash().unwrap(), pending.epoch_hash);
    gb.apply(&pending.commit).unwrap();
    assert_eq!(ga2.network_key().unwrap(), gb.network_key().unwrap());
}

#[test]
fn saved_state_is_bound_to_its_identity() {
    let (mut a, ga, mut b, _gb, _c, _gc) = ops();
    let saved = ga.save().unwrap();
    assert!(matches!(b.load_group(&saved), Err(Error::Decode(_))));
    let saved_a = a.save().unwrap();
    assert!(Member::restore(&address("b"), &seed("b"), &saved_a).is_err());
    assert!(Member::restore(&address("a"), &seed("b"), &saved_a).is_err());
    assert!(Member::restore(&address("a"), &seed("a"), &saved_a).is_ok());
    // A group save is not a member save.
    assert!(Member::restore(&address("a"), &seed("a"), &saved).is_err());
    assert!(a.load_group(&saved_a).is_err());
    let again = a.load_group(&saved).unwrap();
    assert_eq!(again.network_key().unwrap(), ga.network_key().unwrap());
}

#[test]
fn own_commit_through_apply_is_merge() {
    let (_a, mut ga, _b, mut gb, _c, mut gc) = ops();
    let commit = ga.commit(&[], &[&address("b")]).unwrap();
    let applied = ga.apply(&commit.commit).unwrap();
    assert_eq!(applied.removed, vec![address("b")]);
    assert_eq!(applied.epoch_hash, commit.epoch_hash);
    assert!(ga.merge_pending().is_err(), "nothing left pending");
    gc.apply(&commit.commit).unwrap();
    assert_eq!(gc.network_key().unwrap(), ga.network_key().unwrap());
    assert_eq!(gb.apply(&commit.commit), Err(Error::NotMember));
}

#[test]
fn competing_commit_drops_pending() {
    let (_a, mut ga, _b, mut gb, _c, mut gc) = ops();
    let mine = gb.commit(&[], &[]).unwrap();
    let theirs = ga.commit(&[], &[&address("c")]).unwrap();
    ga.merge_pending().unwrap();
    // The chain ordered A's commit first: B applies it and forgets its own.
    gb.apply(&theirs.commit).unwrap();
    assert!(gb.merge_pending().is_err());
    assert!(matches!(
        gb.apply(&mine.commit),
        Err(Error::WrongEpoch { have: 2, got: 2 })
    ));
    assert_eq!(gb.network_key().unwrap(), ga.network_key().unwrap());
    assert_eq!(gc.apply(&theirs.commit), Err(Error::NotMember));

    // discard_pending leaves the group as it was.
    let before = ga.network_key().unwrap();
    let dropped = ga.commit(&[], &[]).unwrap();
    ga.discard_pending();
    assert!(ga.merge_pending().is_err());
    assert_eq!(ga.network_key().unwrap(), before);
    assert!(
        gb.apply(&dropped.commit).is_ok(),
        "still a valid commit for B"
    );
}

#[test]
fn wrong_epoch() {
    let (_a, mut ga, _b, mut gb, _c, _gc) = ops();
    let first = ga.commit(&[], &[]).unwrap();
    ga.merge_pending().unwrap();
    let second = ga.commit(&[], &[]).unwrap();
    ga.merge_pending().unwrap();
    assert_eq!(first.epoch, 2);
    assert_eq!(second.epoch, 3);

    // From the future.
    assert_eq!(
        gb.apply(&second.commit),
        Err(Error::WrongEpoch { have: 1, got: 3 })
    );
    assert_eq!(gb.epoch(), 1);
    gb.apply(&first.commit).unwrap();
    // Twice.
    assert_eq!(
        gb.apply(&first.commit),
        Err(Error::WrongEpoch { have: 2, got: 2 })
    );
    gb.apply(&second.commit).unwrap();
    assert_eq!(
        gb.apply(&second.commit),
        Err(Error::WrongEpoch { have: 3, got: 3 })
    );
    assert_eq!(gb.network_key().unwrap(), ga.network_key().unwrap());

    // A commit of another group with the same epoch.
    let mut x = member("x");
    let mut gx = x.create(b"other").unwrap();
    for _ in 0..3 {
        gx.commit(&[], &[]).unwrap();
        gx.merge_pending().unwrap();
    }
    let other = gx.commit(&[], &[]).unwrap();
    assert_eq!(gb.apply(&other.commit), Err(Error::WrongGroup));
}

#[test]
fn key_package_address_checks_signature() {
    let mut b = member("bob");
    let kp = b.key_package().unwrap();
    assert_eq!(key_package_address(&kp).unwrap(), address("bob"));

    // The KeyPackage's signature is its last field: flip its last byte.
    let mut forged = kp.clone();
    *forged.last_mut().unwrap() ^= 0x01;
    assert!(key_package_address(&forged).is_err());

    // Claiming another address (same length) breaks the signatures too.
    let at = kp
        .windows(address("bob").len())
        .position(|w| w == address("bob").as_bytes())
        .unwrap();
    let mut eve = kp.clone();
    eve[at..at + address("eve").len()].copy_from_slice(address("eve").as_bytes());
    assert!(key_package_address(&eve).is_err());

    // A commit refuses a forged key package as well.
    let mut a = member("a");
    let mut ga = a.create(b"ops").unwrap();
    assert!(ga.commit(&[forged], &[]).is_err());
    assert!(ga.commit(&[eve], &[]).is_err());
    assert_eq!(ga.epoch(), 0);

    // Other messages are not key packages.
    let commit = ga.commit(&[kp], &[]).unwrap();
    assert!(key_package_address(&commit.commit).is_err());
    assert!(key_package_address(commit.welcome.as_ref().unwrap()).is_err());
}

#[test]
fn commit_argument_checks() {
    let (mut a, mut ga, mut b, _gb, _c, _gc) = ops();
    assert!(matches!(
        ga.commit(&[], &[&address("a")]),
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        ga.commit(&[], &[&address("zed")]),
        Err(Error::UnknownMember(address("zed")))
    );
    assert!(matches!(
        ga.commit(&[], &[&address("b"), &address("b")]),
        Err(Error::Invalid(_))
    ));
    // Already a member.
    let kp_b = b.key_package().unwrap();
    assert!(matches!(
        ga.commit(std::slice::from_ref(&kp_b), &[]),
        Err(Error::Invalid(_))
    ));
    // Twice in one commit.
    let mut d = member("d");
    let kp_d1 = d.key_package().unwrap();
    let kp_d2 = d.key_package().unwrap();
    assert!(matches!(
        ga.commit(&[kp_d1, kp_d2], &[]),
        Err(Error::Invalid(_))
    ));
    assert_eq!(ga.epoch(), 1);
    // Our own key package: we are a member.
    let kp_a = a.key_package().unwrap();
    assert!(ga.commit(&[kp_a], &[]).is_err());

    // Removing and re-adding B (new key package) in one commit is fine.
    let commit = ga.commit(&[kp_b], &[&address("b")]).unwrap();
    ga.merge_pending().unwrap();
    let gb = b.join(commit.welcome.as_ref().unwrap()).unwrap();
    assert_eq!(gb.network_key().unwrap(), ga.network_key().unwrap());
    assert_eq!(ga.members().len(), 3);
}

#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Member>();
    check::<Group>();
    check::<Error>();
}

#[test]
fn key_package_of_another_cipher_suite_is_refused() {
    use mls_rs::identity::basic::BasicCredential;
    use mls_rs::identity::SigningIdentity;
    use mls_rs::{CipherSuite, CipherSuiteProvider, Client, CryptoProvider};
    use mls_rs_crypto_rustcrypto::RustCryptoProvider;

    let crypto = RustCryptoProvider::default();
    let suite = CipherSuite::CURVE25519_AES128;
    let (secret, public) = crypto
        .cipher_suite_provider(suite)
        .unwrap()
        .signature_key_generate()
        .unwrap();
    let credential = BasicCredential::new(address("old").into_bytes()).into_credential();
    let client = Client::builder()
        .crypto_provider(crypto)
        .identity_provider(mls_rs::identity::basic::BasicIdentityProvider)
        .signing_identity(SigningIdentity::new(credential, public), secret, suite)
        .build();
    let kp = client
        .generate_key_package_message(Default::default(), Default::default(), None)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert!(matches!(key_package_address(&kp), Err(Error::Invalid(_))));
    let mut ga = member("a").create(b"ops").unwrap();
    assert!(ga.commit(&[kp], &[]).is_err());
    assert_eq!(metanet_mls::CIPHER_SUITE, 3);
}
