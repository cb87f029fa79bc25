//! The resolver state machine: replays the registry log (docs/protocol.md §9.5, §9.6,
//! §9.8).
//!
//! [`Registry::apply`] takes log entries in index order and updates who owns which
//! name, which keys are rotated or revoked, and who belongs to which group. It is a
//! pure function of the log and the deployment [`Params`]: no clock, no IO, no
//! randomness, and only ordered maps, so every resolver that replays the same log
//! reaches the same state and answers the same. A claim that is malformed, badly
//! signed or not allowed is *ignored*: it leaves the state as it was and is reported as
//! [`Outcome::Ignored`] with the reason, never as an error. The only errors are the
//! caller's: an entry out of index order, or a block number that goes backwards.

use std::collections::{BTreeMap, BTreeSet};

use metanet_proto::address::Address;

use crate::claim::{self, Claim, Commitment, RegistryId};
use crate::name::Name;

/// The deployment's parameters; every resolver of one registry must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Which chain and contract.
    pub registry: RegistryId,
    /// Minimum blocks between a commit and its reveal (the contract's `minRevealDelay`).
    pub min_reveal_delay: u64,
    /// Blocks after a commit during which it can be revealed (`commitLifetime`).
    pub commit_lifetime: u64,
}

/// One `Claim` event of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The claim's index in the log (0, 1, 2, … without gaps).
    pub index: u64,
    /// The block that holds it.
    pub block: u64,
    /// The claim bytes as submitted.
    pub claim: Vec<u8>,
}

/// The caller handed an entry that does not continue the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("log entry {got} does not follow the entries applied so far (expected {expected})")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("log entry is in block {got}, before block {last} of the previous entry")]
    BlockWentBack { last: u64, got: u64 },
}

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The claim was valid and changed the state.
    Applied(Effect),
    /// The claim was ignored; the state is unchanged (only the log position moved).
    Ignored(Ignored),
}

/// The change a valid claim made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A commitment was recorded.
    Committed { by: Address, commitment: Commitment },
    /// A name was registered to `owner`.
    Registered { name: Name, owner: Address },
    /// A name changed hands; `seq` is its new transfer count.
    Transferred {
        name: Name,
        from: Address,
        to: Address,
        seq: u64,
    },
    /// `from` handed its address over to `to`, with `names` names.
    Rotated {
        from: Address,
        to: Address,
        names: usize,
    },
    /// `address` revoked its key.
    Revoked { address: Address },
    /// Group `name` changed: `by` did `change` to `subject` (for a creation both are the
    /// creator); `seq` is the group's new change count.
    Group {
        name: Name,
        change: GroupChange,
        subject: Address,
        by: Address,
        seq: u64,
    },
    /// Group `name`'s key moved to a new epoch (§9.9).
    Epoch { name: Name, epoch: EpochRecord },
}

/// Why a claim was ignored (docs/protocol.md §9.5, §9.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("claim is invalid: {0}")]
    Invalid(#[from] claim::Error),
    #[error("signer's key is revoked")]
    SignerRevoked,
    #[error("signer's key was rotated to another key")]
    SignerRotated,
    #[error("the same commitment is already pending")]
    DuplicateCommit,
    #[error(
        "no pending commit matches this reveal (none for this name, owner and salt, or it expired)"
    )]
    NoCommit,
    #[error("reveal comes {blocks} blocks after its commit, fewer than the {min} required")]
    RevealTooEarly { blocks: u64, min: u64 },
    #[error("name is already registered")]
    NameTaken,
    #[error("a dotted name can only be registered by the owner of its parent")]
    NotParentOwner,
    #[error("name is not registered")]
    UnknownName,
    #[error("only the owner can transfer a name")]
    NotOwner,
    #[error("claim names seq {got}, but the current seq is {current} (stale or replayed)")]
    WrongSeq { got: u64, current: u64 },
    #[error("cannot hand over to that address: {0}")]
    BadRecipient(Recipient),
    #[error("no such group")]
    UnknownGroup,
    #[error("a group of that name already exists")]
    GroupExists,
    #[error("only an admin of the group can change it")]
    NotAdmin,
    #[error("the address is already a member of the group")]
    AlreadyMember,
    #[error("the address is not a member of the group")]
    NotMember,
    #[error("the address is already an admin of the group")]
    AlreadyAdmin,
    #[error("the address is not an admin of the group")]
    NotGroupAdmin,
    #[error("the group's last admin cannot be removed")]
    LastAdmin,
    #[error("claim names epoch {got}, but the next epoch is {next} (stale, replayed or early)")]
    WrongEpoch { got: u64, next: u64 },
}

/// Why an address cannot receive a name, a rotation, or a group membership or role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Recipient {
    #[error("it is the signer itself")]
    Itself,
    #[error("its key is revoked")]
    Revoked,
    #[error("its key was rotated away")]
    Rotated,
}

/// What the log says about one key (address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Nothing against it (also every address the log never mentioned).
    Active,
    /// The key handed its address over to `to` in `block`; it signs nothing any more.
    Rotated { to: Address, block: u64 },
    /// The key was revoked in `block` (it may have been rotated before).
    Revoked { block: u64 },
}

/// What a name resolves to (docs/protocol.md §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Nobody registered the name.
    Unregistered,
    /// The name stands for this address.
    Owner(Address),
    /// The owner's key is revoked: the name must not be used, and can never move.
    Revoked { owner: Address, block: u64 },
}

/// A registered name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecord {
    /// Current owner, to which the name resolves.
    pub owner: Address,
    /// Transfer count: 0 at registration, one more per transfer.
    pub seq: u64,
    /// Block of the registration.
    pub registered: u64,
    /// Block of the last change of owner (registration, transfer or rotation).
    pub changed: u64,
}

/// A change to a group (docs/protocol.md §9.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupChange {
    /// The group was created; its creator is its first admin and member.
    Created,
    /// A member was added.
    Added,
    /// A member was removed (with its admin role, if it had one).
    Removed,
    /// A member became an admin (added as a member first if it was not one).
    AdminAdded,
    /// An admin lost its role; it stays a member.
    AdminRemoved,
}

/// One applied group claim: the group's join and leave record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupEvent {
    /// Log index of the claim.
    pub index: u64,
    /// Block of the claim.
    pub block: u64,
    /// What it did.
    pub kind: GroupChange,
    /// The address it was done to (the creator for [`GroupChange::Created`]).
    pub subject: Address,
    /// The admin that signed it.
    pub by: Address,
}

/// One ordered MLS commit of a group (docs/protocol.md §9.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRecord {
    /// The epoch the commit leads to (1 for the first commit after creation).
    pub epoch: u64,
    /// BLAKE3 of the commit message.
    pub commit: [u8; 32],
    /// BLAKE3 of the Welcome message, all zero when the commit adds nobody.
    pub welcome: [u8; 32],
    /// The public digest of the epoch's state every member must reach.
    pub epoch_hash: [u8; 32],
    /// Log index of the claim.
    pub index: u64,
    /// Block of the claim.
    pub block: u64,
    /// The admin that committed it.
    pub by: Address,
}

/// A group (network): a named set of member addresses run by its admins.
///
/// Addresses are as the log left them: a rotation moves memberships and roles to the
/// new address without an event (the old key's [`KeyStatus`] tells), and a revoked
/// member stays listed (its key status flags it). Nothing bounds the number of groups,
/// members or events but the public log they are replayed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Who may change the group; never empty, always members.
    pub admins: BTreeSet<Address>,
    /// Every member, admins included.
    pub members: BTreeSet<Address>,
    /// Change count: 0 at creation, one more per applied add, remove or role change.
    pub seq: u64,
    /// Block of the creation.
    pub created_block: u64,
    /// Every applied claim of the group, creation first, in log order.
    pub log: Vec<GroupEvent>,
    /// Its key epoch: 0 at creation, one more per ordered commit.
    pub epoch: u64,
    /// Every ordered commit, epoch 1 first.
    pub epochs: Vec<EpochRecord>,
}

/// The replayed state of one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    params: Params,
    next_index: u64,
    last_block: u64,
    names: BTreeMap<Name, NameRecord>,
    owned: BTreeMap<Address, BTreeSet<Name>>,
    keys: BTreeMap<Address, KeyStatus>,
    commits: BTreeMap<Commitment, PendingCommit>,
    commits_by_block: BTreeSet<(u64, Commitment)>,
    groups: BTreeMap<Name, Group>,
    memberships: BTreeMap<Address, BTreeSet<Name>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingCommit {
    by: Address,
    block: u64,
}

impl Registry {
    /// The empty state, before entry 0.
    pub fn new(params: Params) -> Self {
        Registry {
            params,
            next_index: 0,
            last_block: 0,
            names: BTreeMap::new(),
            owned: BTreeMap::new(),
            keys: BTreeMap::new(),
            commits: BTreeMap::new(),
            commits_by_block: BTreeSet::new(),
            groups: BTreeMap::new(),
            memberships: BTreeMap::new(),
        }
    }

    /// Apply the next log entry (docs/protocol.md §9.5).
    pub fn apply(&mut self, entry: &LogEntry) -> Result<Outcome, ApplyError> {
        if entry.index != self.next_index {
            return Err(ApplyError::OutOfOrder {
                expected: self.next_index,
                got: entry.index,
            });
        }
        if entry.block < self.last_block {
            return Err(ApplyError::BlockWentBack {
                last: self.last_block,
                got: entry.block,
            });
        }
        self.next_index += 1;
        self.last_block = entry.block;
        self.expire_commits(entry.block);
        Ok(match self.apply_claim(entry) {
            Ok(effect) => Outcome::Applied(effect),
            Err(why) => Outcome::Ignored(why),
        })
    }

    /// The deployment parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Index of the next entry to apply (= number of entries applied).
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Block of the last entry applied (0 before any).
    pub fn last_block(&self) -> u64 {
        self.last_block
    }

    /// A registered name.
    pub fn name(&self, name: &Name) -> Option<&NameRecord> {
        self.names.get(name)
    }

    /// What `name` resolves to: its owner, unless the owner's key is revoked.
    pub fn resolve(&self, name: &Name) -> Resolution {
        let Some(record) = self.names.get(name) else {
            return Resolution::Unregistered;
        };
        match self.key_status(&record.owner) {
            KeyStatus::Revoked { block } => Resolution::Revoked {
                owner: record.owner,
                block,
            },
            // Names follow rotations, so an owner is never a rotated key.
            KeyStatus::Active | KeyStatus::Rotated { .. } => Resolution::Owner(record.owner),
        }
    }

    /// Every registered name, in order.
    pub fn names(&self) -> impl Iterator<Item = (&Name, &NameRecord)> {
        self.names.iter()
    }

    /// The names `owner` holds, in order.
    pub fn names_of(&self, owner: &Address) -> impl Iterator<Item = &Name> {
        self.owned.get(owner).into_iter().flatten()
    }

    /// Every revoked address, in order.
    pub fn revoked(&self) -> impl Iterator<Item = &Address> {
        self.keys
            .iter()
            .filter(|(_, s)| matches!(s, KeyStatus::Revoked { .. }))
            .map(|(a, _)| a)
    }

    /// What the log says about `address`.
    pub fn key_status(&self, address: &Address) -> KeyStatus {
        self.keys.get(address).copied().unwrap_or(KeyStatus::Active)
    }

    /// A group (docs/protocol.md §9.8); group names are not registered names.
    pub fn group(&self, name: &Name) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Every group, in order.
    pub fn groups(&self) -> impl Iterator<Item = (&Name, &Group)> {
        self.groups.iter()
    }

    /// The groups `address` is a member of, in order.
    pub fn groups_of(&self, address: &Address) -> Vec<Name> {
        self.memberships
            .get(address)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of pending (unexpired, unrevealed) commits.
    pub fn pending_commits(&self) -> usize {
        self.commits.len()
    }

    /// Whether a commit for `commitment` is pending, and in which block it was made.
    pub fn commit_block(&self, commitment: &Commitment) -> Option<u64> {
        self.commits.get(commitment).map(|c| c.block)
    }

    /// §9.5: every check happens before any change, so an ignored claim changes nothing.
    fn apply_claim(&mut self, entry: &LogEntry) -> Result<Effect, Ignored> {
        let signed = claim::open(&entry.claim, &self.params.registry)?;
        let signer = signed.signer.address();
        let status = self.key_status(&signer);
        match (&signed.claim, status) {
            (_, KeyStatus::Revoked { .. }) => return Err(Ignored::SignerRevoked),
            (Claim::Revocation, KeyStatus::Rotated { .. }) => {}
            (_, KeyStatus::Rotated { .. }) => return Err(Ignored::SignerRotated),
            (_, KeyStatus::Active) => {}
        }
        let block = entry.block;
        match signed.claim {
            Claim::Commit { commitment } => {
                if self.commits.contains_key(&commitment) {
                    return Err(Ignored::DuplicateCommit);
                }
                self.commits
                    .insert(commitment, PendingCommit { by: signer, block });
                self.commits_by_block.insert((block, commitment));
                Ok(Effect::Committed {
                    by: signer,
                    commitment,
                })
            }
            Claim::Reveal { name, salt } => {
                let commitment = Commitment::new(&name, &signer, &salt);
                let pending = match self.commits.get(&commitment) {
                    Some(c) if c.by == signer => *c,
                    _ => return Err(Ignored::NoCommit),
                };
                let age = block - pending.block;
                if age < self.params.min_reveal_delay {
                    return Err(Ignored::RevealTooEarly {
                        blocks: age,
                        min: self.params.min_reveal_delay,
                    });
                }
                if self.names.contains_key(&name) {
                    return Err(Ignored::NameTaken);
                }
                if let Some(parent) = name.parent() {
                    match self.names.get(&parent) {
                        Some(p) if p.owner == signer => {}
                        _ => return Err(Ignored::NotParentOwner),
                    }
                }
                self.commits.remove(&commitment);
                self.commits_by_block.remove(&(pending.block, commitment));
                self.names.insert(
                    name.clone(),
                    NameRecord {
                        owner: signer,
                        seq: 0,
                        registered: block,
                        changed: block,
                    },
                );
                self.owned.entry(signer).or_default().insert(name.clone());
                Ok(Effect::Registered {
                    name,
                    owner: signer,
                })
            }
            Claim::Transfer {
                name,
                seq,
                new_owner,
            } => {
                let record = self.names.get(&name).ok_or(Ignored::UnknownName)?;
                if record.owner != signer {
                    return Err(Ignored::NotOwner);
                }
                if seq != record.seq {
                    return Err(Ignored::WrongSeq {
                        got: seq,
                        current: record.seq,
                    });
                }
                self.check_recipient(&signer, &new_owner)?;
                let seq = record.seq + 1;
                self.names.insert(
                    name.clone(),
                    NameRecord {
                        owner: new_owner,
                        seq,
                        changed: block,
                        ..record.clone()
                    },
                );
                self.disown(&signer, &name);
                self.owned
                    .entry(new_owner)
                    .or_default()
                    .insert(name.clone());
                Ok(Effect::Transferred {
                    name,
                    from: signer,
                    to: new_owner,
                    seq,
                })
            }
            Claim::Rotation { new_key, .. } => {
                let to = new_key.address();
                self.check_recipient(&signer, &to)?;
                self.keys.insert(signer, KeyStatus::Rotated { to, block });
                let moved = self.owned.remove(&signer).unwrap_or_default();
                for name in &moved {
                    if let Some(r) = self.names.get_mut(name) {
                        r.owner = to;
                        r.changed = block;
                    }
                }
                let names = moved.len();
                self.owned.entry(to).or_default().extend(moved);
                self.move_memberships(&signer, &to);
                Ok(Effect::Rotated {
                    from: signer,
                    to,
                    names,
                })
            }
            Claim::Revocation => {
                self.keys.insert(signer, KeyStatus::Revoked { block });
                Ok(Effect::Revoked { address: signer })
            }
            Claim::GroupCreate { name } => {
                if self.groups.contains_key(&name) {
                    return Err(Ignored::GroupExists);
                }
                let event = GroupEvent {
                    index: entry.index,
                    block,
                    kind: GroupChange::Created,
                    subject: signer,
                    by: signer,
                };
                self.groups.insert(
                    name.clone(),
                    Group {
                        admins: BTreeSet::from([signer]),
                        members: BTreeSet::from([signer]),
                        seq: 0,
                        created_block: block,
                        log: vec![event],
                        epoch: 0,
                        epochs: Vec::new(),
                    },
                );
                self.memberships
                    .entry(signer)
                    .or_default()
                    .insert(name.clone());
                Ok(Effect::Group {
                    name,
                    change: GroupChange::Created,
                    subject: signer,
                    by: signer,
                    seq: 0,
                })
            }
            Claim::GroupAdd { name, seq, member } => {
                self.change_group(entry, signer, name, seq, member, GroupChange::Added)
            }
            Claim::GroupRemove { name, seq, member } => {
                self.change_group(entry, signer, name, seq, member, GroupChange::Removed)
            }
            Claim::AdminAdd { name, seq, member } => {
                self.change_group(entry, signer, name, seq, member, GroupChange::AdminAdded)
            }
            Claim::AdminRemove { name, seq, member } => {
                self.change_group(entry, signer, name, seq, member, GroupChange::AdminRemoved)
            }
            Claim::GroupEpoch {
                name,
                epoch,
                commit,
                welcome,
                epoch_hash,
            } => {
                // §9.9: an admin orders the next epoch; the first claim for it wins.
                let group = self.groups.get_mut(&name).ok_or(Ignored::UnknownGroup)?;
                if !group.admins.contains(&signer) {
                    return Err(Ignored::NotAdmin);
                }
                let next = group.epoch + 1;
                if epoch != next {
                    return Err(Ignored::WrongEpoch { got: epoch, next });
                }
                let record = EpochRecord {
                    epoch,
                    commit,
                    welcome,
                    epoch_hash,
                    index: entry.index,
                    block,
                    by: signer,
                };
                group.epoch = epoch;
                group.epochs.push(record);
                Ok(Effect::Epoch {
                    name,
                    epoch: record,
                })
            }
        }
    }

    /// §9.8: a group change by `signer` to `subject`, checked in full before any change.
    fn change_group(
        &mut self,
        entry: &LogEntry,
        signer: Address,
        name: Name,
        seq: u64,
        subject: Address,
        change: GroupChange,
    ) -> Result<Effect, Ignored> {
        let group = self.groups.get(&name).ok_or(Ignored::UnknownGroup)?;
        if !group.admins.contains(&signer) {
            return Err(Ignored::NotAdmin);
        }
        if seq != group.seq {
            return Err(Ignored::WrongSeq {
                got: seq,
                current: group.seq,
            });
        }
        let member = group.members.contains(&subject);
        let admin = group.admins.contains(&subject);
        let last_admin = admin && group.admins.len() == 1;
        match change {
            // A creation is not a change; the caller handles it.
            GroupChange::Created => return Err(Ignored::GroupExists),
            GroupChange::Added => {
                self.check_live(&subject)?;
                if member {
                    return Err(Ignored::AlreadyMember);
                }
            }
            GroupChange::AdminAdded => {
                self.check_live(&subject)?;
                if admin {
                    return Err(Ignored::AlreadyAdmin);
                }
            }
            GroupChange::Removed if !member => return Err(Ignored::NotMember),
            GroupChange::AdminRemoved if !admin => return Err(Ignored::NotGroupAdmin),
            GroupChange::Removed | GroupChange::AdminRemoved if last_admin => {
                return Err(Ignored::LastAdmin)
            }
            GroupChange::Removed | GroupChange::AdminRemoved => {}
        }
        let Some(group) = self.groups.get_mut(&name) else {
            return Err(Ignored::UnknownGroup);
        };
        match change {
            GroupChange::Created => {}
            GroupChange::Added => {
                group.members.insert(subject);
            }
            GroupChange::Removed => {
                group.members.remove(&subject);
                group.admins.remove(&subject);
            }
            GroupChange::AdminAdded => {
                group.members.insert(subject);
                group.admins.insert(subject);
            }
            GroupChange::AdminRemoved => {
                group.admins.remove(&subject);
            }
        }
        group.seq += 1;
        group.log.push(GroupEvent {
            index: entry.index,
            block: entry.block,
            kind: change,
            subject,
            by: signer,
        });
        let seq = group.seq;
        if change == GroupChange::Removed {
            self.leave(&subject, &name);
        } else {
            self.memberships
                .entry(subject)
                .or_default()
                .insert(name.clone());
        }
        Ok(Effect::Group {
            name,
            change,
            subject,
            by: signer,
            seq,
        })
    }

    /// §9.8: memberships and admin roles follow a rotation, like names; the group's
    /// `seq` and log stay as they are.
    fn move_memberships(&mut self, from: &Address, to: &Address) {
        let Some(moved) = self.memberships.remove(from) else {
            return;
        };
        for name in &moved {
            if let Some(g) = self.groups.get_mut(name) {
                g.members.remove(from);
                g.members.insert(*to);
                if g.admins.remove(from) {
                    g.admins.insert(*to);
                }
            }
        }
        self.memberships.entry(*to).or_default().extend(moved);
    }

    fn leave(&mut self, member: &Address, name: &Name) {
        if let Some(set) = self.memberships.get_mut(member) {
            set.remove(name);
            if set.is_empty() {
                self.memberships.remove(member);
            }
        }
    }

    /// §9.8: memberships and roles are only given to a live key.
    fn check_live(&self, to: &Address) -> Result<(), Ignored> {
        match self.key_status(to) {
            KeyStatus::Active => Ok(()),
            KeyStatus::Revoked { .. } => Err(Ignored::BadRecipient(Recipient::Revoked)),
            KeyStatus::Rotated { .. } => Err(Ignored::BadRecipient(Recipient::Rotated)),
        }
    }

    /// §9.6: names and addresses are only handed to a live key other than the signer.
    fn check_recipient(&self, signer: &Address, to: &Address) -> Result<(), Ignored> {
        if to == signer {
            return Err(Ignored::BadRecipient(Recipient::Itself));
        }
        self.check_live(to)
    }

    fn disown(&mut self, owner: &Address, name: &Name) {
        if let Some(set) = self.owned.get_mut(owner) {
            set.remove(name);
            if set.is_empty() {
                self.owned.remove(owner);
            }
        }
    }

    /// Drop commits that can no longer be revealed at `block` (older than the lifetime),
    /// which bounds the pending set by what the chain can carry in that window.
    fn expire_commits(&mut self, block: u64) {
        let lifetime = self.params.commit_lifetime;
        while let Some(&(b, c)) = self.commits_by_block.first() {
            if block.saturating_sub(b) <= lifetime {
                break;
            }
            self.commits_by_block.remove(&(b, c));
            self.commits.remove(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use metanet_proto::identity::Identity;

    use super::*;
    use crate::claim::{seal, Salt};
    use crate::evm::EvmAddress;

    const DELAY: u64 = 3;
    const LIFETIME: u64 = 20;

    fn params() -> Params {
        Params {
            registry: RegistryId {
                chain_id: 31337,
                contract: EvmAddress([7; 20]),
            },
            min_reveal_delay: DELAY,
            commit_lifetime: LIFETIME,
        }
    }

    /// A registry plus a log writer: every submission is the next entry.
    struct Chain {
        reg: Registry,
        block: u64,
    }

    impl Chain {
        fn new() -> Self {
            Chain {
                reg: Registry::new(params()),
                block: 1,
            }
        }

        fn mine(&mut self, blocks: u64) {
            self.block += blocks;
        }

        fn raw(&mut self, bytes: Vec<u8>) -> Outcome {
            let e = LogEntry {
                index: self.reg.next_index(),
                block: self.block,
                claim: bytes,
            };
            self.reg.apply(&e).unwrap()
        }

        fn submit(&mut self, who: &Identity, claim: Claim) -> Outcome {
            let bytes = seal(who, &params().registry, &claim).unwrap();
            self.raw(bytes)
        }

        fn commit(&mut self, who: &Identity, name: &str, salt: u8) -> Outcome {
            let c = Commitment::new(&n(name), &who.address(), &Salt([salt; 32]));
            self.submit(who, Claim::Commit { commitment: c })
        }

        fn reveal(&mut self, who: &Identity, name: &str, salt: u8) -> Outcome {
            self.submit(
                who,
                Claim::Reveal {
                    name: n(name),
                    salt: Salt([salt; 32]),
                },
            )
        }

        /// Commit, wait the minimum delay, reveal; the reveal's outcome.
        fn register(&mut self, who: &Identity, name: &str) -> Outcome {
            assert!(matches!(self.commit(who, name, 1), Outcome::Applied(_)));
            self.mine(DELAY);
            self.reveal(who, name, 1)
        }

        fn transfer(&mut self, who: &Identity, name: &str, seq: u64, to: &Identity) -> Outcome {
            self.submit(
                who,
                Claim::Transfer {
                    name: n(name),
                    seq,
                    new_owner: to.address(),
                },
            )
        }

        fn owner(&self, name: &str) -> Option<Address> {
            self.reg.name(&n(name)).map(|r| r.owner)
        }

        fn create(&mut self, who: &Identity, group: &str) -> Outcome {
            self.submit(who, Claim::GroupCreate { name: n(group) })
        }

        /// A group claim of `change` by `who` about `subject` at the group's current seq.
        fn change(
            &mut self,
            who: &Identity,
            change: GroupChange,
            group: &str,
            subject: &Identity,
        ) -> Outcome {
            let seq = self.reg.group(&n(group)).map_or(0, |g| g.seq);
            self.submit(who, group_claim(change, group, seq, subject.address()))
        }

        fn members(&self, group: &str) -> Vec<Address> {
            let g = self.reg.group(&n(group)).unwrap();
            g.members.iter().copied().collect()
        }

        fn admins(&self, group: &str) -> Vec<Address> {
            let g = self.reg.group(&n(group)).unwrap();
            g.admins.iter().copied().collect()
        }
    }

    fn group_claim(change: GroupChange, group: &str, seq: u64, member: Address) -> Claim {
        let name = n(group);
        match change {
            GroupChange::Created => Claim::GroupCreate { name },
            GroupChange::Added => Claim::GroupAdd { name, seq, member },
            GroupChange::Removed => Claim::GroupRemove { name, seq, member },
            GroupChange::AdminAdded => Claim::AdminAdd { name, seq, member },
            GroupChange::AdminRemoved => Claim::AdminRemove { name, seq, member },
        }
    }

    fn sorted(mut a: Vec<Address>) -> Vec<Address> {
        a.sort();
        a
    }

    fn id(seed: u8) -> Identity {
        Identity::generate(&[seed; 64])
    }

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn ignored(o: Outcome) -> Ignored {
        match o {
            Outcome::Ignored(why) => why,
            Outcome::Applied(e) => panic!("expected the claim to be ignored, it applied: {e:?}"),
        }
    }

    #[test]
    fn commit_then_reveal_registers_the_name() {
        let alice = id(1);
        let mut c = Chain::new();
        assert_eq!(
            c.register(&alice, "alice"),
            Outcome::Applied(Effect::Registered {
                name: n("alice"),
                owner: alice.address()
            })
        );
        let r = c.reg.name(&n("alice")).unwrap();
        assert_eq!((r.owner, r.seq, r.registered), (alice.address(), 0, 4));
        assert_eq!(c.reg.names_of(&alice.address()).count(), 1);
        assert_eq!(c.reg.pending_commits(), 0);
        assert_eq!(
            c.reg.resolve(&n("ALICE".to_lowercase().as_str())),
            Resolution::Owner(alice.address())
        );
    }

    #[test]
    fn reveal_needs_its_commit_and_the_delay() {
        let alice = id(1);
        let mut c = Chain::new();
        assert_eq!(ignored(c.reveal(&alice, "alice", 1)), Ignored::NoCommit);
        c.commit(&alice, "alice", 1);
        c.mine(DELAY - 1);
        assert_eq!(
            ignored(c.reveal(&alice, "alice", 1)),
            Ignored::RevealTooEarly {
                blocks: DELAY - 1,
                min: DELAY
            }
        );
        c.mine(1);
        // The wrong salt or name does not match the commitment.
        assert_eq!(ignored(c.reveal(&alice, "alice", 2)), Ignored::NoCommit);
        assert_eq!(ignored(c.reveal(&alice, "alicf", 1)), Ignored::NoCommit);
        assert!(matches!(c.reveal(&alice, "alice", 1), Outcome::Applied(_)));
    }

    #[test]
    fn commits_expire_after_their_lifetime() {
        let alice = id(1);
        let mut c = Chain::new();
        c.commit(&alice, "alice", 1);
        c.mine(LIFETIME + 1);
        assert_eq!(ignored(c.reveal(&alice, "alice", 1)), Ignored::NoCommit);
        assert_eq!(c.reg.pending_commits(), 0);
        // At exactly the lifetime it is still usable.
        c.commit(&alice, "alice", 1);
        c.mine(LIFETIME);
        assert!(matches!(c.reveal(&alice, "alice", 1), Outcome::Applied(_)));
    }

    #[test]
    fn front_runner_without_an_old_commit_loses_the_race() {
        let alice = id(1);
        let mallory = id(2);
        let mut c = Chain::new();
        c.commit(&alice, "alice", 1);
        c.mine(DELAY);
        // Mallory sees Alice's reveal pending, commits and reveals ahead of it.
        c.commit(&mallory, "alice", 9);
        assert!(matches!(
            ignored(c.reveal(&mallory, "alice", 9)),
            Ignored::RevealTooEarly { .. }
        ));
        // Mallory cannot use Alice's salt: the commitment binds the owner.
        assert_eq!(ignored(c.reveal(&mallory, "alice", 1)), Ignored::NoCommit);
        assert!(matches!(c.reveal(&alice, "alice", 1), Outcome::Applied(_)));
        c.mine(DELAY);
        assert_eq!(ignored(c.reveal(&mallory, "alice", 9)), Ignored::NameTaken);
        assert_eq!(c.owner("alice"), Some(alice.address()));
    }

    #[test]
    fn first_valid_reveal_wins_between_two_committed_claimants() {
        let alice = id(1);
        let bob = id(2);
        let mut c = Chain::new();
        c.commit(&bob, "game", 2);
        c.commit(&alice, "game", 1);
        c.mine(DELAY);
        assert!(matches!(c.reveal(&alice, "game", 1), Outcome::Applied(_)));
        assert_eq!(ignored(c.reveal(&bob, "game", 2)), Ignored::NameTaken);
        assert_eq!(c.owner("game"), Some(alice.address()));
    }

    #[test]
    fn duplicate_commit_is_ignored() {
        let alice = id(1);
        let mut c = Chain::new();
        c.commit(&alice, "alice", 1);
        c.mine(1);
        assert_eq!(
            ignored(c.commit(&alice, "alice", 1)),
            Ignored::DuplicateCommit
        );
        // The first commit's block counts.
        c.mine(DELAY - 1);
        assert!(matches!(c.reveal(&alice, "alice", 1), Outcome::Applied(_)));
    }

    #[test]
    fn dotted_names_only_by_the_parent_owner() {
        let game = id(1);
        let sony = id(2);
        let mut c = Chain::new();
        assert_eq!(
            ignored(c.register(&sony, "sony.game")),
            Ignored::NotParentOwner
        );
        c.mine(LIFETIME + 1);
        c.register(&game, "game");
        assert_eq!(
            ignored(c.register(&sony, "sony.game")),
            Ignored::NotParentOwner
        );
        c.mine(LIFETIME + 1);
        assert!(matches!(
            c.register(&game, "sony.game"),
            Outcome::Applied(_)
        ));
        // Handed to Sony, the sub-name is Sony's to transfer, not the parent owner's.
        assert!(matches!(
            c.transfer(&game, "sony.game", 0, &sony),
            Outcome::Applied(_)
        ));
        assert_eq!(
            ignored(c.transfer(&game, "sony.game", 1, &game)),
            Ignored::NotOwner
        );
        // Sony may not create names under game.
        c.mine(LIFETIME + 1);
        assert_eq!(
            ignored(c.register(&sony, "x.game")),
            Ignored::NotParentOwner
        );
        c.mine(LIFETIME + 1);
        assert!(matches!(
            c.register(&sony, "a.sony.game"),
            Outcome::Applied(_)
        ));
    }

    #[test]
    fn transfers_by_owner_with_current_seq_only() {
        let alice = id(1);
        let bob = id(2);
        let mut c = Chain::new();
        c.register(&alice, "alice");
        assert_eq!(
            ignored(c.transfer(&bob, "alice", 0, &bob)),
            Ignored::NotOwner
        );
        assert_eq!(
            ignored(c.transfer(&alice, "alice", 1, &bob)),
            Ignored::WrongSeq { got: 1, current: 0 }
        );
        assert_eq!(
            ignored(c.transfer(&alice, "alice", 0, &alice)),
            Ignored::BadRecipient(Recipient::Itself)
        );
        assert_eq!(
            ignored(c.transfer(&alice, "nobody", 0, &bob)),
            Ignored::UnknownName
        );
        let t1 = seal(
            &alice,
            &params().registry,
            &Claim::Transfer {
                name: n("alice"),
                seq: 0,
                new_owner: bob.address(),
            },
        )
        .unwrap();
        assert!(matches!(c.raw(t1.clone()), Outcome::Applied(_)));
        assert!(matches!(
            c.transfer(&bob, "alice", 1, &alice),
            Outcome::Applied(_)
        ));
        // A replay of the first transfer is stale.
        assert_eq!(ignored(c.raw(t1)), Ignored::WrongSeq { got: 0, current: 2 });
        assert_eq!(c.owner("alice"), Some(alice.address()));
        assert_eq!(c.reg.name(&n("alice")).unwrap().seq, 2);
        assert_eq!(c.reg.names_of(&bob.address()).count(), 0);
    }

    #[test]
    fn rotation_moves_names_and_retires_the_old_key() {
        let old = id(1);
        let new = id(2);
        let bob = id(3);
        let mut c = Chain::new();
        c.register(&old, "alice");
        c.mine(LIFETIME + 1);
        c.register(&old, "a.alice");
        let rot = Claim::rotation(&new, &params().registry, &old.public_key()).unwrap();
        assert_eq!(
            c.submit(&old, rot.clone()),
            Outcome::Applied(Effect::Rotated {
                from: old.address(),
                to: new.address(),
                names: 2
            })
        );
        assert_eq!(c.owner("alice"), Some(new.address()));
        assert_eq!(c.owner("a.alice"), Some(new.address()));
        assert!(matches!(
            c.reg.key_status(&old.address()),
            KeyStatus::Rotated { to, .. } if to == new.address()
        ));
        // The old key signs nothing any more, not even a second rotation.
        assert_eq!(
            ignored(c.transfer(&old, "alice", 0, &bob)),
            Ignored::SignerRotated
        );
        assert_eq!(ignored(c.submit(&old, rot)), Ignored::SignerRotated);
        // No rotation back to a retired key, and nothing handed to it.
        let back = Claim::rotation(&old, &params().registry, &new.public_key()).unwrap();
        assert_eq!(
            ignored(c.submit(&new, back)),
            Ignored::BadRecipient(Recipient::Rotated)
        );
        assert_eq!(
            ignored(c.transfer(&new, "alice", 0, &old)),
            Ignored::BadRecipient(Recipient::Rotated)
        );
        assert!(matches!(
            c.transfer(&new, "alice", 0, &bob),
            Outcome::Applied(_)
        ));
        // A retired key may still revoke itself.
        assert!(matches!(
            c.submit(&old, Claim::Revocation),
            Outcome::Applied(_)
        ));
        assert!(matches!(
            c.reg.key_status(&old.address()),
            KeyStatus::Revoked { .. }
        ));
    }

    #[test]
    fn revocation_is_final_and_freezes_names() {
        let alice = id(1);
        let bob = id(2);
        let mut c = Chain::new();
        c.register(&alice, "alice");
        assert_eq!(
            c.submit(&alice, Claim::Revocation),
            Outcome::Applied(Effect::Revoked {
                address: alice.address()
            })
        );
        assert_eq!(
            c.reg.key_status(&alice.address()),
            KeyStatus::Revoked { block: c.block }
        );
        assert_eq!(
            ignored(c.transfer(&alice, "alice", 0, &bob)),
            Ignored::SignerRevoked
        );
        assert_eq!(
            ignored(c.submit(&alice, Claim::Revocation)),
            Ignored::SignerRevoked
        );
        let rot = Claim::rotation(&bob, &params().registry, &alice.public_key()).unwrap();
        assert_eq!(ignored(c.submit(&alice, rot)), Ignored::SignerRevoked);
        // The name still points at the revoked owner, so resolvers can refuse it.
        assert_eq!(c.owner("alice"), Some(alice.address()));
        assert_eq!(
            c.reg.resolve(&n("alice")),
            Resolution::Revoked {
                owner: alice.address(),
                block: c.block
            }
        );
        assert_eq!(c.reg.resolve(&n("nobody")), Resolution::Unregistered);
        // Nothing can be handed to a revoked key.
        c.register(&bob, "bob");
        assert_eq!(
            ignored(c.transfer(&bob, "bob", 0, &alice)),
            Ignored::BadRecipient(Recipient::Revoked)
        );
    }

    #[test]
    fn garbage_is_ignored_and_the_log_goes_on() {
        let alice = id(1);
        let mut c = Chain::new();
        assert!(matches!(
            ignored(c.raw(vec![])),
            Ignored::Invalid(claim::Error::Malformed(_))
        ));
        assert!(matches!(
            ignored(c.raw(vec![0xff; 2000])),
            Ignored::Invalid(claim::Error::TooLarge(2000))
        ));
        let other = RegistryId {
            chain_id: 1,
            ..params().registry
        };
        let foreign = seal(&alice, &other, &Claim::Revocation).unwrap();
        assert!(matches!(
            ignored(c.raw(foreign)),
            Ignored::Invalid(claim::Error::WrongRegistry { .. })
        ));
        assert_eq!(c.reg.next_index(), 3);
        assert!(matches!(c.register(&alice, "alice"), Outcome::Applied(_)));
    }

    #[test]
    fn group_history_is_recorded() {
        use GroupChange::*;
        let (a, b, c) = (id(1), id(2), id(3));
        let mut ch = Chain::new();
        assert_eq!(
            ch.create(&a, "ops"),
            Outcome::Applied(Effect::Group {
                name: n("ops"),
                change: Created,
                subject: a.address(),
                by: a.address(),
                seq: 0
            })
        );
        let created = ch.block;
        ch.mine(1);
        assert_eq!(
            ch.change(&a, Added, "ops", &b),
            Outcome::Applied(Effect::Group {
                name: n("ops"),
                change: Added,
                subject: b.address(),
                by: a.address(),
                seq: 1
            })
        );
        ch.mine(1);
        assert!(matches!(
            ch.change(&a, Added, "ops", &c),
            Outcome::Applied(_)
        ));
        assert_eq!(
            ch.members("ops"),
            sorted(vec![a.address(), b.address(), c.address()])
        );
        ch.mine(2);
        assert!(matches!(
            ch.change(&a, Removed, "ops", &c),
            Outcome::Applied(Effect::Group { seq: 3, .. })
        ));
        let g = ch.reg.group(&n("ops")).unwrap();
        assert_eq!(g.seq, 3);
        assert_eq!(g.created_block, created);
        assert_eq!(ch.members("ops"), sorted(vec![a.address(), b.address()]));
        assert_eq!(ch.admins("ops"), vec![a.address()]);
        let history: Vec<_> = g
            .log
            .iter()
            .map(|e| (e.index, e.block, e.kind, e.subject, e.by))
            .collect();
        assert_eq!(
            history,
            [
                (0, created, Created, a.address(), a.address()),
                (1, created + 1, Added, b.address(), a.address()),
                (2, created + 2, Added, c.address(), a.address()),
                (3, created + 4, Removed, c.address(), a.address()),
            ]
        );
        assert_eq!(ch.reg.groups_of(&b.address()), [n("ops")]);
        assert!(ch.reg.groups_of(&c.address()).is_empty());
        assert_eq!(ch.reg.groups().count(), 1);
        // The group namespace is not the name namespace.
        assert_eq!(ch.reg.name(&n("ops")), None);
        assert!(matches!(ch.register(&b, "ops"), Outcome::Applied(_)));
        assert_eq!(ch.reg.group(&n("ops")).unwrap().seq, 3);
        assert_eq!(ch.reg.group(&n("alice")), None);
    }

    #[test]
    fn groups_are_created_once() {
        let (a, b) = (id(1), id(2));
        let mut ch = Chain::new();
        ch.create(&a, "ops");
        assert_eq!(ignored(ch.create(&b, "ops")), Ignored::GroupExists);
        assert_eq!(ignored(ch.create(&a, "ops")), Ignored::GroupExists);
        assert_eq!(ch.admins("ops"), vec![a.address()]);
        // Dotted group names need no parent group.
        assert!(matches!(ch.create(&b, "a.b.ops"), Outcome::Applied(_)));
        assert_eq!(ch.reg.groups_of(&a.address()), [n("ops")]);
    }

    #[test]
    fn only_admins_change_a_group() {
        use GroupChange::*;
        let (a, b, c, d) = (id(1), id(2), id(3), id(4));
        let mut ch = Chain::new();
        assert_eq!(
            ignored(ch.change(&a, Added, "ops", &b)),
            Ignored::UnknownGroup
        );
        ch.create(&a, "ops");
        ch.change(&a, Added, "ops", &b);
        // A member who is no admin changes nothing; nor does an outsider.
        for change in [Added, Removed, AdminAdded, AdminRemoved] {
            assert_eq!(ignored(ch.change(&b, change, "ops", &c)), Ignored::NotAdmin);
            assert_eq!(ignored(ch.change(&d, change, "ops", &b)), Ignored::NotAdmin);
        }
        assert_eq!(
            ignored(ch.change(&b, Removed, "ops", &a)),
            Ignored::NotAdmin
        );
        assert_eq!(
            ignored(ch.change(&a, Added, "ops", &b)),
            Ignored::AlreadyMember
        );
        assert_eq!(
            ignored(ch.change(&a, Added, "ops", &a)),
            Ignored::AlreadyMember
        );
        assert_eq!(
            ignored(ch.change(&a, Removed, "ops", &c)),
            Ignored::NotMember
        );
        assert_eq!(
            ignored(ch.change(&a, AdminRemoved, "ops", &b)),
            Ignored::NotGroupAdmin
        );
        assert_eq!(
            ignored(ch.change(&a, AdminAdded, "ops", &a)),
            Ignored::AlreadyAdmin
        );
        assert_eq!(ch.reg.group(&n("ops")).unwrap().seq, 1);
        // Promoted, B may add; a non-member promoted becomes a member too.
        ch.change(&a, AdminAdded, "ops", &b);
        assert!(matches!(
            ch.change(&b, AdminAdded, "ops", &c),
            Outcome::Applied(_)
        ));
        assert_eq!(
            ch.members("ops"),
            sorted(vec![a.address(), b.address(), c.address()])
        );
        assert!(matches!(
            ch.change(&c, Added, "ops", &d),
            Outcome::Applied(_)
        ));
        // Demoted, C stays a member but changes nothing.
        ch.change(&a, AdminRemoved, "ops", &c);
        assert!(ch.members("ops").contains(&c.address()));
        assert!(!ch.admins("ops").contains(&c.address()));
        assert_eq!(
            ignored(ch.change(&c, Removed, "ops", &d)),
            Ignored::NotAdmin
        );
        // Removing an admin takes its role too.
        ch.change(&a, Removed, "ops", &b);
        assert_eq!(ch.admins("ops"), vec![a.address()]);
        ch.change(&a, Added, "ops", &b);
        assert_eq!(ch.admins("ops"), vec![a.address()]);
        assert_eq!(ch.reg.group(&n("ops")).unwrap().seq, 7);
    }

    #[test]
    fn the_last_admin_stays() {
        use GroupChange::*;
        let (a, b) = (id(1), id(2));
        let mut ch = Chain::new();
        ch.create(&a, "ops");
        assert_eq!(
            ignored(ch.change(&a, Removed, "ops", &a)),
            Ignored::LastAdmin
        );
        assert_eq!(
            ignored(ch.change(&a, AdminRemoved, "ops", &a)),
            Ignored::LastAdmin
        );
        ch.change(&a, AdminAdded, "ops", &b);
        // With another admin left, an admin may step down or leave.
        assert!(matches!(
            ch.change(&a, AdminRemoved, "ops", &a),
            Outcome::Applied(_)
        ));
        assert_eq!(
            ignored(ch.change(&b, Removed, "ops", &b)),
            Ignored::LastAdmin
        );
        ch.change(&b, AdminAdded, "ops", &a);
        assert!(matches!(
            ch.change(&a, Removed, "ops", &a),
            Outcome::Applied(_)
        ));
        assert_eq!(ch.members("ops"), vec![b.address()]);
        assert_eq!(ch.admins("ops"), vec![b.address()]);
        assert!(ch.reg.groups_of(&a.address()).is_empty());
    }

    #[test]
    fn recorded_group_claims_cannot_be_replayed() {
        let (a, b) = (id(1), id(2));
        let mut ch = Chain::new();
        ch.create(&a, "ops");
        let add = seal(
            &a,
            &params().registry,
            &group_claim(GroupChange::Added, "ops", 0, b.address()),
        )
        .unwrap();
        assert!(matches!(ch.raw(add.clone()), Outcome::Applied(_)));
        ch.change(&a, GroupChange::Removed, "ops", &b);
        // The same add again names seq 0; the group is at 2.
        assert_eq!(
            ignored(ch.raw(add)),
            Ignored::WrongSeq { got: 0, current: 2 }
        );
        assert_eq!(
            ignored(ch.submit(&a, group_claim(GroupChange::Added, "ops", 3, b.address()))),
            Ignored::WrongSeq { got: 3, current: 2 }
        );
        assert_eq!(ch.members("ops"), vec![a.address()]);
    }

    #[test]
    fn forged_group_claims_are_ignored() {
        let (a, b, m) = (id(1), id(2), id(9));
        let mut ch = Chain::new();
        ch.create(&a, "ops");
        // Mallory signs an add "for" A: the signer is Mallory, no admin.
        assert_eq!(
            ignored(ch.change(&m, GroupChange::Added, "ops", &m)),
            Ignored::NotAdmin
        );
        // A's claim with Mallory's address put in: the signature breaks.
        let mut bytes = seal(
            &a,
            &params().registry,
            &group_claim(GroupChange::Added, "ops", 0, b.address()),
        )
        .unwrap();
        let at = bytes.len() - 64 - 20;
        bytes[at..at + 20].copy_from_slice(m.address().as_bytes());
        assert_eq!(
            ignored(ch.raw(bytes)),
            Ignored::Invalid(claim::Error::BadSignature)
        );
        // A's claim for another registry.
        let other = RegistryId {
            chain_id: 1,
            ..params().registry
        };
        let foreign = seal(
            &a,
            &other,
            &group_claim(GroupChange::Added, "ops", 0, m.address()),
        )
        .unwrap();
        assert!(matches!(
            ignored(ch.raw(foreign)),
            Ignored::Invalid(claim::Error::WrongRegistry { .. })
        ));
        assert_eq!(ch.members("ops"), vec![a.address()]);
        assert_eq!(ch.reg.group(&n("ops")).unwrap().seq, 0);
    }

    #[test]
    fn rotation_moves_memberships_and_roles() {
        use GroupChange::*;
        let (old, new, b, c) = (id(1), id(2), id(3), id(4));
        let mut ch = Chain::new();
        ch.create(&old, "ops");
        ch.create(&b, "dev");
        ch.change(&b, Added, "dev", &old);
        ch.change(&b, Added, "dev", &new);
        let rot = Claim::rotation(&new, &params().registry, &old.public_key()).unwrap();
        assert!(matches!(ch.submit(&old, rot), Outcome::Applied(_)));
        assert_eq!(ch.admins("ops"), vec![new.address()]);
        assert_eq!(ch.members("ops"), vec![new.address()]);
        assert_eq!(ch.members("dev"), sorted(vec![b.address(), new.address()]));
        assert_eq!(ch.reg.groups_of(&new.address()), [n("dev"), n("ops")]);
        assert!(ch.reg.groups_of(&old.address()).is_empty());
        // A rotation is no group change.
        assert_eq!(ch.reg.group(&n("ops")).unwrap().seq, 0);
        assert_eq!(ch.reg.group(&n("dev")).unwrap().log.len(), 3);
        // The old key signs nothing and receives nothing; the new one is the admin.
        assert_eq!(
            ignored(ch.change(&old, Added, "ops", &c)),
            Ignored::SignerRotated
        );
        assert_eq!(
            ignored(ch.change(&new, Added, "ops", &old)),
            Ignored::BadRecipient(Recipient::Rotated)
        );
        assert_eq!(
            ignored(ch.change(&b, AdminAdded, "dev", &old)),
            Ignored::BadRecipient(Recipient::Rotated)
        );
        assert_eq!(
            ignored(ch.change(&b, Removed, "dev", &old)),
            Ignored::NotMember
        );
        assert!(matches!(
            ch.change(&new, Added, "ops", &c),
            Outcome::Applied(_)
        ));
    }

    #[test]
    fn revoked_members_stay_listed_and_get_nothing_new() {
        use GroupChange::*;
        let (a, b, c) = (id(1), id(2), id(3));
        let mut ch = Chain::new();
        ch.create(&a, "ops");
        ch.change(&a, Added, "ops", &b);
        ch.submit(&b, Claim::Revocation);
        ch.submit(&c, Claim::Revocation);
        assert!(ch.members("ops").contains(&b.address()));
        assert!(matches!(
            ch.reg.key_status(&b.address()),
            KeyStatus::Revoked { .. }
        ));
        assert_eq!(
            ignored(ch.change(&a, Added, "ops", &c)),
            Ignored::BadRecipient(Recipient::Revoked)
        );
        assert_eq!(
            ignored(ch.change(&a, AdminAdded, "ops", &b)),
            Ignored::BadRecipient(Recipient::Revoked)
        );
        assert_eq!(
            ignored(ch.change(&b, Removed, "ops", &a)),
            Ignored::SignerRevoked
        );
        // An admin may still remove a revoked member.
        assert!(matches!(
            ch.change(&a, Removed, "ops", &b),
            Outcome::Applied(_)
        ));
        assert_eq!(ch.members("ops"), vec![a.address()]);
        // A group whose only admin is revoked is frozen, like its names.
        ch.submit(&a, Claim::Revocation);
        assert_eq!(
            ignored(ch.change(&a, Added, "ops", &c)),
            Ignored::SignerRevoked
        );
        assert_eq!(ch.admins("ops"), vec![a.address()]);
    }

    #[test]
    fn caller_errors_leave_the_state_alone() {
        let mut r = Registry::new(params());
        let e = |index, block| LogEntry {
            index,
            block,
            claim: vec![],
        };
        assert_eq!(
            r.apply(&e(1, 5)),
            Err(ApplyError::OutOfOrder {
                expected: 0,
                got: 1
            })
        );
        r.apply(&e(0, 5)).unwrap();
        assert_eq!(
            r.apply(&e(1, 4)),
            Err(ApplyError::BlockWentBack { last: 5, got: 4 })
        );
        assert_eq!(r.next_index(), 1);
        r.apply(&e(1, 5)).unwrap();
    }
}
