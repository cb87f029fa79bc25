//! Registry claims: what a wallet key signs for the chain (docs/protocol.md §9.3, group
//! claims §9.8).
//!
//! A claim is a signed envelope (docs/protocol.md §4.1) with purpose
//! [`CLAIM_PURPOSE`] and the claim kind as payload type. Every payload starts with the
//! [`RegistryId`] (chain id and contract address), so a claim signed for one registry
//! is never valid in another. Encoding is canonical and decoding strict: a claim has
//! exactly one byte string, and [`open`] either returns a fully checked
//! [`SignedClaim`] or an [`Error`]. Nothing here decides whether a claim is *allowed*;
//! that is [`crate::registry`].

use metanet_proto::address::Address;
use metanet_proto::identity::{Identity, PublicKey};
use metanet_proto::record::{self, Envelope};

use crate::evm::EvmAddress;
use crate::name::{self, Name};

/// Envelope purpose of every registry claim.
pub const CLAIM_PURPOSE: &str = "metanet/chain-claim";
/// Envelope purpose of the new key's acceptance inside a rotation claim.
pub const ROTATION_PURPOSE: &str = "metanet/key-rotation";
/// Envelope payload type of the rotation acceptance.
pub const ROTATION_TYPE: u16 = 1;
/// BLAKE3 key-derivation context of name commitments.
pub const COMMITMENT_CONTEXT: &str = "metanet v1 name commitment";
/// Upper bound on an encoded claim (the contract's `MAX_CLAIM_LEN`).
pub const MAX_CLAIM_LEN: usize = record::MAX_RECORD_LEN;
/// Length of the registry header at the start of every payload.
pub const HEADER_LEN: usize = 8 + 20;

/// Why claim bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("claim is {0} bytes, over the {MAX_CLAIM_LEN}-byte limit")]
    TooLarge(usize),
    #[error("claim is malformed: {0}")]
    Malformed(&'static str),
    #[error("claim is not a metanet chain claim of a known kind")]
    UnknownKind,
    #[error("claim signature does not verify")]
    BadSignature,
    #[error("claim names {0}")]
    BadName(#[from] name::Error),
    #[error("claim was signed for another registry (chain {chain_id}, contract {contract})")]
    WrongRegistry { chain_id: u64, contract: EvmAddress },
    #[error("rotation acceptance is not a valid signature by the new key over the old one")]
    BadAcceptance,
    /// Local misuse: the claim does not fit an envelope.
    #[error("claim cannot be encoded: {0}")]
    Encode(record::Error),
}

/// Which registry a claim is for: the chain and the contract address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegistryId {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The `MetanetRegistry` contract.
    pub contract: EvmAddress,
}

impl RegistryId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chain_id.to_be_bytes());
        out.extend_from_slice(&self.contract.0);
    }
}

/// The claim kinds, which are the envelope payload types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum Kind {
    /// Name commit (§9.3.1).
    Commit = 1,
    /// Name reveal (§9.3.2).
    Reveal = 2,
    /// Name transfer (§9.3.3).
    Transfer = 3,
    /// Key rotation (§9.3.4).
    Rotation = 4,
    /// Key revocation (§9.3.5).
    Revocation = 5,
    /// Group creation (§9.8).
    GroupCreate = 6,
    /// Group member added (§9.8).
    GroupAdd = 7,
    /// Group member removed (§9.8).
    GroupRemove = 8,
    /// Group admin added (§9.8).
    AdminAdd = 9,
    /// Group admin removed (§9.8).
    AdminRemove = 10,
    /// Group key epoch committed (§9.9).
    GroupEpoch = 11,
}

impl Kind {
    /// Every kind, in payload-type order.
    pub const ALL: [Kind; 11] = [
        Kind::Commit,
        Kind::Reveal,
        Kind::Transfer,
        Kind::Rotation,
        Kind::Revocation,
        Kind::GroupCreate,
        Kind::GroupAdd,
        Kind::GroupRemove,
        Kind::AdminAdd,
        Kind::AdminRemove,
        Kind::GroupEpoch,
    ];
}

/// A secret 32-byte salt that hides a name inside its commitment until the reveal.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt(pub [u8; 32]);

impl core::fmt::Debug for Salt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Salt(redacted)")
    }
}

/// The hash a commit publishes: binds a name to its future owner and a salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Commitment(pub [u8; 32]);

impl Commitment {
    /// `BLAKE3-derive_key("metanet v1 name commitment", name_len u8 ‖ name ‖ owner[20] ‖
    /// salt[32])` (docs/protocol.md §9.3.1).
    pub fn new(name: &Name, owner: &Address, salt: &Salt) -> Self {
        let n = name.as_bytes();
        let mut m = Vec::with_capacity(1 + n.len() + 20 + 32);
        // Name::MAX_LEN (128) fits a u8.
        m.push(n.len() as u8);
        m.extend_from_slice(n);
        m.extend_from_slice(owner.as_bytes());
        m.extend_from_slice(&salt.0);
        Commitment(blake3::derive_key(COMMITMENT_CONTEXT, &m))
    }
}

/// What a claim says, without its signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Commit to registering a name without revealing it.
    Commit { commitment: Commitment },
    /// Register the name committed earlier, to the signer.
    Reveal { name: Name, salt: Salt },
    /// Hand a name over; `seq` is the name's current transfer count.
    Transfer {
        name: Name,
        seq: u64,
        new_owner: Address,
    },
    /// Hand the signer's address over to `new_key`; `acceptance` is the new key's
    /// envelope over the old key (built by [`Claim::rotation`]).
    Rotation {
        new_key: PublicKey,
        acceptance: Vec<u8>,
    },
    /// Revoke the signer's key for good.
    Revocation,
    /// Create group `name` with the signer as its first admin and member. Group names
    /// are a namespace of their own, unrelated to registered names.
    GroupCreate { name: Name },
    /// Add `member` to a group; `seq` is the group's current change count.
    GroupAdd {
        name: Name,
        seq: u64,
        member: Address,
    },
    /// Remove `member` (and its admin role) from a group.
    GroupRemove {
        name: Name,
        seq: u64,
        member: Address,
    },
    /// Make `member` an admin of a group (and a member, if it is not).
    AdminAdd {
        name: Name,
        seq: u64,
        member: Address,
    },
    /// Take the admin role from `member`; it stays a member.
    AdminRemove {
        name: Name,
        seq: u64,
        member: Address,
    },
    /// Order the MLS commit that takes group `name` to `epoch` (§9.9): `commit` and
    /// `welcome` are the BLAKE3 hashes of the commit and Welcome messages (all zero:
    /// no Welcome), by which members fetch them; `epoch_hash` names the epoch's state
    /// every member must reach.
    GroupEpoch {
        name: Name,
        epoch: u64,
        commit: [u8; 32],
        welcome: [u8; 32],
        epoch_hash: [u8; 32],
    },
}

/// A claim whose envelope, signature and registry were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedClaim {
    /// The wallet key that signed the claim.
    pub signer: PublicKey,
    /// What it says.
    pub claim: Claim,
}

impl Claim {
    /// A rotation from `old_key` to `new`: the new identity signs its acceptance.
    pub fn rotation(
        new: &Identity,
        registry: &RegistryId,
        old_key: &PublicKey,
    ) -> Result<Self, Error> {
        let mut payload = Vec::with_capacity(HEADER_LEN + 32);
        registry.encode(&mut payload);
        payload.extend_from_slice(&old_key.to_bytes());
        let acceptance = Envelope::seal(new, ROTATION_PURPOSE, ROTATION_TYPE, &payload)
            .map_err(Error::Encode)?;
        Ok(Claim::Rotation {
            new_key: new.public_key(),
            acceptance,
        })
    }

    /// The claim's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Claim::Commit { .. } => Kind::Commit,
            Claim::Reveal { .. } => Kind::Reveal,
            Claim::Transfer { .. } => Kind::Transfer,
            Claim::Rotation { .. } => Kind::Rotation,
            Claim::Revocation => Kind::Revocation,
            Claim::GroupCreate { .. } => Kind::GroupCreate,
            Claim::GroupAdd { .. } => Kind::GroupAdd,
            Claim::GroupRemove { .. } => Kind::GroupRemove,
            Claim::AdminAdd { .. } => Kind::AdminAdd,
            Claim::AdminRemove { .. } => Kind::AdminRemove,
            Claim::GroupEpoch { .. } => Kind::GroupEpoch,
        }
    }

    /// The payload after the registry header (docs/protocol.md §9.3).
    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Claim::Commit { commitment } => out.extend_from_slice(&commitment.0),
            Claim::Reveal { name, salt } => {
                push_name(out, name);
                out.extend_from_slice(&salt.0);
            }
            Claim::Transfer {
                name,
                seq,
                new_owner: address,
            }
            | Claim::GroupAdd {
                name,
                seq,
                member: address,
            }
            | Claim::GroupRemove {
                name,
                seq,
                member: address,
            }
            | Claim::AdminAdd {
                name,
                seq,
                member: address,
            }
            | Claim::AdminRemove {
                name,
                seq,
                member: address,
            } => {
                push_name(out, name);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(address.as_bytes());
            }
            Claim::Rotation { acceptance, .. } => out.extend_from_slice(acceptance),
            Claim::Revocation => {}
            Claim::GroupCreate { name } => push_name(out, name),
            Claim::GroupEpoch {
                name,
                epoch,
                commit,
                welcome,
                epoch_hash,
            } => {
                push_name(out, name);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(commit);
                out.extend_from_slice(welcome);
                out.extend_from_slice(epoch_hash);
            }
        }
    }
}

/// Sign `claim` by `identity` for `registry` and encode it.
pub fn seal(identity: &Identity, registry: &RegistryId, claim: &Claim) -> Result<Vec<u8>, Error> {
    let mut payload = Vec::with_capacity(HEADER_LEN + 64);
    registry.encode(&mut payload);
    claim.encode_body(&mut payload);
    let bytes = Envelope::seal(identity, CLAIM_PURPOSE, claim.kind() as u16, &payload)
        .map_err(Error::Encode)?;
    if bytes.len() > MAX_CLAIM_LEN {
        return Err(Error::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Parse and verify claim bytes taken from the log of `registry`.
pub fn open(bytes: &[u8], registry: &RegistryId) -> Result<SignedClaim, Error> {
    if bytes.len() > MAX_CLAIM_LEN {
        return Err(Error::TooLarge(bytes.len()));
    }
    let (kind, envelope) = open_any_kind(bytes)?;
    let mut r = Reader(envelope.payload);
    let chain_id = u64::from_be_bytes(r.array()?);
    let contract = EvmAddress(r.array()?);
    if chain_id != registry.chain_id || contract != registry.contract {
        return Err(Error::WrongRegistry { chain_id, contract });
    }
    let claim = match kind {
        Kind::Commit => Claim::Commit {
            commitment: Commitment(r.array()?),
        },
        Kind::Reveal => Claim::Reveal {
            name: r.name()?,
            salt: Salt(r.array()?),
        },
        Kind::Transfer => {
            let (name, seq, new_owner) = r.name_seq_address()?;
            Claim::Transfer {
                name,
                seq,
                new_owner,
            }
        }
        Kind::Rotation => {
            let acceptance = r.rest();
            let new_key = open_acceptance(acceptance, registry, &envelope.signer)?;
            Claim::Rotation {
                new_key,
                acceptance: acceptance.to_vec(),
            }
        }
        Kind::Revocation => Claim::Revocation,
        Kind::GroupCreate => Claim::GroupCreate { name: r.name()? },
        Kind::GroupAdd => {
            let (name, seq, member) = r.name_seq_address()?;
            Claim::GroupAdd { name, seq, member }
        }
        Kind::GroupRemove => {
            let (name, seq, member) = r.name_seq_address()?;
            Claim::GroupRemove { name, seq, member }
        }
        Kind::AdminAdd => {
            let (name, seq, member) = r.name_seq_address()?;
            Claim::AdminAdd { name, seq, member }
        }
        Kind::AdminRemove => {
            let (name, seq, member) = r.name_seq_address()?;
            Claim::AdminRemove { name, seq, member }
        }
        Kind::GroupEpoch => Claim::GroupEpoch {
            name: r.name()?,
            epoch: u64::from_be_bytes(r.array()?),
            commit: r.array()?,
            welcome: r.array()?,
            epoch_hash: r.array()?,
        },
    };
    r.finish()?;
    Ok(SignedClaim {
        signer: envelope.signer,
        claim,
    })
}

/// Open the envelope under whichever claim kind its payload type names.
fn open_any_kind(bytes: &[u8]) -> Result<(Kind, Envelope<'_>), Error> {
    for kind in Kind::ALL {
        match Envelope::open(bytes, CLAIM_PURPOSE, kind as u16) {
            Ok(e) => return Ok((kind, e)),
            Err(record::Error::WrongPurpose) => continue,
            Err(record::Error::BadSignature) => return Err(Error::BadSignature),
            Err(record::Error::TooLarge(n)) => return Err(Error::TooLarge(n)),
            Err(record::Error::Malformed(m)) => return Err(Error::Malformed(m)),
            Err(_) => return Err(Error::Malformed("envelope")),
        }
    }
    Err(Error::UnknownKind)
}

/// Check a rotation acceptance: an envelope by the new key over the registry header and
/// the old (outer) signer's key. Returns the new key.
fn open_acceptance(
    bytes: &[u8],
    registry: &RegistryId,
    old_key: &PublicKey,
) -> Result<PublicKey, Error> {
    let e =
        Envelope::open(bytes, ROTATION_PURPOSE, ROTATION_TYPE).map_err(|_| Error::BadAcceptance)?;
    let mut expected = Vec::with_capacity(HEADER_LEN + 32);
    registry.encode(&mut expected);
    expected.extend_from_slice(&old_key.to_bytes());
    if e.payload != expected.as_slice() {
        return Err(Error::BadAcceptance);
    }
    Ok(e.signer)
}

fn push_name(out: &mut Vec<u8>, name: &Name) {
    // Name::MAX_LEN (128) fits a u8.
    out.push(name.as_bytes().len() as u8);
    out.extend_from_slice(name.as_bytes());
}

/// A bounds-checked cursor over a payload: every read fails cleanly at the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::Malformed("payload is truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn name(&mut self) -> Result<Name, Error> {
        let [len] = self.array::<1>()?;
        Ok(Name::from_canonical(self.take(usize::from(len))?)?)
    }

    /// `name_len u8 ‖ name ‖ seq u64be ‖ address[20]`: a transfer or a group change.
    fn name_seq_address(&mut self) -> Result<(Name, u64, Address), Error> {
        let name = self.name()?;
        let seq = u64::from_be_bytes(self.array()?);
        Ok((name, seq, Address::from_bytes(self.array()?)))
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.0)
    }

    fn finish(&self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Malformed("trailing bytes after the payload"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> RegistryId {
        RegistryId {
            chain_id: 31337,
            contract: EvmAddress([0x5f; 20]),
        }
    }

    fn id(seed: u8) -> Identity {
        Identity::generate(&[seed; 64])
    }

    #[test]
    fn every_kind_round_trips() {
        let alice = id(1);
        let bob = id(2);
        let name = Name::parse("sony.game").unwrap();
        let salt = Salt([9; 32]);
        let claims = [
            Claim::Commit {
                commitment: Commitment::new(&name, &alice.address(), &salt),
            },
            Claim::Reveal {
                name: name.clone(),
                salt,
            },
            Claim::Transfer {
                name: name.clone(),
                seq: 7,
                new_owner: bob.address(),
            },
            Claim::rotation(&bob, &registry(), &alice.public_key()).unwrap(),
            Claim::Revocation,
            Claim::GroupCreate { name: name.clone() },
            Claim::GroupAdd {
                name: name.clone(),
                seq: 0,
                member: bob.address(),
            },
            Claim::GroupRemove {
                name: name.clone(),
                seq: 1,
                member: bob.address(),
            },
            Claim::AdminAdd {
                name: name.clone(),
                seq: u64::MAX,
                member: bob.address(),
            },
            Claim::AdminRemove {
                name: name.clone(),
                seq: 3,
                member: alice.address(),
            },
            Claim::GroupEpoch {
                name,
                epoch: 3,
                commit: [1; 32],
                welcome: [0; 32],
                epoch_hash: [2; 32],
            },
        ];
        let kinds: Vec<Kind> = claims.iter().map(Claim::kind).collect();
        assert_eq!(kinds, Kind::ALL);
        for c in claims {
            let bytes = seal(&alice, &registry(), &c).unwrap();
            let opened = open(&bytes, &registry()).unwrap();
            assert_eq!(opened.signer, alice.public_key());
            assert_eq!(opened.claim, c);
            if let Claim::Rotation { new_key, .. } = opened.claim {
                assert_eq!(new_key, bob.public_key());
            }
        }
    }

    #[test]
    fn claims_for_another_registry_are_refused() {
        let alice = id(1);
        let bytes = seal(&alice, &registry(), &Claim::Revocation).unwrap();
        let other = RegistryId {
            chain_id: 1,
            ..registry()
        };
        assert!(matches!(
            open(&bytes, &other),
            Err(Error::WrongRegistry {
                chain_id: 31337,
                ..
            })
        ));
        let other = RegistryId {
            contract: EvmAddress([1; 20]),
            ..registry()
        };
        assert!(matches!(
            open(&bytes, &other),
            Err(Error::WrongRegistry { .. })
        ));
    }

    #[test]
    fn rotation_acceptance_must_name_the_outer_signer() {
        let alice = id(1);
        let bob = id(2);
        let carol = id(3);
        // Bob accepted a rotation from Carol, not from Alice.
        let c = Claim::rotation(&bob, &registry(), &carol.public_key()).unwrap();
        let bytes = seal(&alice, &registry(), &c).unwrap();
        assert_eq!(open(&bytes, &registry()), Err(Error::BadAcceptance));
        // An acceptance for another registry is refused too.
        let other = RegistryId {
            chain_id: 5,
            ..registry()
        };
        let c = Claim::rotation(&bob, &other, &alice.public_key()).unwrap();
        let bytes = seal(&alice, &registry(), &c).unwrap();
        assert_eq!(open(&bytes, &registry()), Err(Error::BadAcceptance));
    }

    #[test]
    fn tampering_and_other_purposes_are_refused() {
        let alice = id(1);
        let mut bytes = seal(&alice, &registry(), &Claim::Revocation).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        assert_eq!(open(&bytes, &registry()), Err(Error::BadSignature));
        let other = Envelope::seal(&alice, "metanet/peer-record", 1, b"x").unwrap();
        assert_eq!(open(&other, &registry()), Err(Error::UnknownKind));
        for t in [0, 12, u16::MAX] {
            let unknown = Envelope::seal(&alice, CLAIM_PURPOSE, t, b"x").unwrap();
            assert_eq!(open(&unknown, &registry()), Err(Error::UnknownKind));
        }
        assert!(matches!(open(&[], &registry()), Err(Error::Malformed(_))));
    }

    #[test]
    fn non_canonical_payloads_are_refused() {
        let alice = id(1);
        let mut payload = Vec::new();
        registry().encode(&mut payload);
        payload.push(5);
        payload.extend_from_slice(b"Alice");
        payload.extend_from_slice(&[0; 32]);
        let bytes = Envelope::seal(&alice, CLAIM_PURPOSE, Kind::Reveal as u16, &payload).unwrap();
        assert_eq!(
            open(&bytes, &registry()),
            Err(Error::BadName(name::Error::NotCanonical))
        );
        // Trailing bytes after a revocation.
        let mut payload = Vec::new();
        registry().encode(&mut payload);
        payload.push(0);
        let bytes =
            Envelope::seal(&alice, CLAIM_PURPOSE, Kind::Revocation as u16, &payload).unwrap();
        assert!(matches!(
            open(&bytes, &registry()),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn group_payloads_are_strict() {
        let alice = id(1);
        let with = |kind: Kind, body: &[u8]| {
            let mut payload = Vec::new();
            registry().encode(&mut payload);
            payload.extend_from_slice(body);
            let bytes = Envelope::seal(&alice, CLAIM_PURPOSE, kind as u16, &payload).unwrap();
            open(&bytes, &registry())
        };
        let change = |name: &[u8]| {
            let mut b = vec![name.len() as u8];
            b.extend_from_slice(name);
            b.extend_from_slice(&5u64.to_be_bytes());
            b.extend_from_slice(&[3; 20]);
            b
        };
        let ops = change(b"ops");
        for kind in [
            Kind::GroupAdd,
            Kind::GroupRemove,
            Kind::AdminAdd,
            Kind::AdminRemove,
        ] {
            let opened = with(kind, &ops).unwrap();
            assert_eq!(opened.claim.kind(), kind);
            // One byte more or less.
            let mut long = ops.clone();
            long.push(0);
            assert!(matches!(with(kind, &long), Err(Error::Malformed(_))));
            assert!(matches!(
                with(kind, &ops[..ops.len() - 1]),
                Err(Error::Malformed(_))
            ));
            // Names must be canonical, as everywhere.
            for bad in [&b"Ops"[..], b"", b"o..p", b"-ops", b"mn1ops"] {
                assert!(matches!(with(kind, &change(bad)), Err(Error::BadName(_))));
            }
        }
        assert_eq!(
            with(Kind::GroupCreate, b"\x03ops").unwrap().claim,
            Claim::GroupCreate {
                name: Name::parse("ops").unwrap()
            }
        );
        assert!(matches!(
            with(Kind::GroupCreate, b"\x03opsx"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            with(Kind::GroupCreate, b"\x04ops"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            with(Kind::GroupCreate, b""),
            Err(Error::Malformed(_))
        ));
        assert_eq!(
            with(Kind::GroupCreate, b"\x03OPS"),
            Err(Error::BadName(name::Error::NotCanonical))
        );
        // A payload under another kind's type does not fit it.
        assert!(matches!(
            with(Kind::GroupCreate, &ops),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            with(Kind::GroupAdd, b"\x03ops"),
            Err(Error::Malformed(_))
        ));
        // Another registry's group claim is refused like any other.
        let bytes = seal(
            &alice,
            &registry(),
            &Claim::GroupCreate {
                name: Name::parse("ops").unwrap(),
            },
        )
        .unwrap();
        let other = RegistryId {
            chain_id: 2,
            ..registry()
        };
        assert!(matches!(
            open(&bytes, &other),
            Err(Error::WrongRegistry {
                chain_id: 31337,
                ..
            })
        ));
    }

    #[test]
    fn sizes_match_the_spec() {
        // docs/protocol.md §9.3.
        let alice = id(1);
        let bob = id(2);
        let len = |c: &Claim| seal(&alice, &registry(), c).unwrap().len();
        let long = Name::parse(&["a".repeat(63), "b".repeat(63)].join(".")).unwrap();
        assert_eq!(long.as_bytes().len(), 127);
        assert_eq!(len(&Claim::Revocation), 149);
        assert_eq!(
            len(&Claim::Commit {
                commitment: Commitment([0; 32])
            }),
            181
        );
        assert_eq!(
            len(&Claim::rotation(&bob, &registry(), &alice.public_key()).unwrap()),
            331
        );
        for name in [Name::parse("a").unwrap(), long] {
            let n = name.as_bytes().len();
            let reveal = Claim::Reveal {
                name: name.clone(),
                salt: Salt([0; 32]),
            };
            assert_eq!(len(&reveal), 182 + n);
            let transfer = Claim::Transfer {
                name: name.clone(),
                seq: 0,
                new_owner: bob.address(),
            };
            assert_eq!(len(&transfer), 178 + n);
            // §9.8.
            let create = Claim::GroupCreate { name: name.clone() };
            assert_eq!(len(&create), 150 + n);
            let (seq, member) = (u64::MAX, bob.address());
            for change in [
                Claim::GroupAdd {
                    name: name.clone(),
                    seq,
                    member,
                },
                Claim::GroupRemove {
                    name: name.clone(),
                    seq,
                    member,
                },
                Claim::AdminAdd {
                    name: name.clone(),
                    seq,
                    member,
                },
                Claim::AdminRemove {
                    name: name.clone(),
                    seq,
                    member,
                },
            ] {
                assert_eq!(len(&change), 178 + n);
            }
        }
        let longest = Name::parse(&["a".repeat(63), "b".repeat(62), "c".into()].join(".")).unwrap();
        assert_eq!(longest.as_bytes().len(), name::MAX_LEN);
        assert_eq!(len(&Claim::GroupCreate { name: longest }), 278);
    }

    #[test]
    fn commitment_binds_name_owner_and_salt() {
        let a = id(1).address();
        let b = id(2).address();
        let n = Name::parse("alice").unwrap();
        let m = Name::parse("alicf").unwrap();
        let s = Salt([1; 32]);
        let t = Salt([2; 32]);
        let c = Commitment::new(&n, &a, &s);
        assert_ne!(c, Commitment::new(&m, &a, &s));
        assert_ne!(c, Commitment::new(&n, &b, &s));
        assert_ne!(c, Commitment::new(&n, &a, &t));
        assert_eq!(c, Commitment::new(&n, &a, &Salt([1; 32])));
    }
}
