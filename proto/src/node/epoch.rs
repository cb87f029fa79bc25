//! Network keys of closed groups (docs/protocol.md §5.6, §11.3): which key a handshake
//! between two members uses, and whether a responder accepts the epoch an initiation
//! names. The keys come from the driver (each group's MLS epoch exports one); the node
//! only mixes them into psk2.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use zeroize::Zeroizing;

use crate::address::Address;
use crate::handshake::{EpochRef, GroupTag};
use crate::time::Instant;

/// How long after a group moves to a new epoch its previous epoch's key is still
/// accepted from current members (their daemons apply the commit a little apart).
pub const EPOCH_OVERLAP: Duration = Duration::from_secs(60);
/// Most closed groups one identity uses.
pub const MAX_NETWORK_KEYS: usize = 64;
/// Most members of one closed group the node holds.
pub const MAX_MEMBERS: usize = 1 << 16;

/// One closed group's network key for its current epoch, as the driver derived it.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey {
    /// The group's name (its tag is derived from it, [`GroupTag::of`]).
    pub group: String,
    /// The epoch the key belongs to.
    pub epoch: u64,
    /// The key (the MLS exporter's output for this epoch).
    pub key: [u8; 32],
    /// The group's members in this epoch.
    pub members: BTreeSet<Address>,
}

impl core::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetworkKey")
            .field("group", &self.group)
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// What a closed group looks like to `metanet policy show`: no key bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkKeyStatus {
    /// The group's name.
    pub group: String,
    /// Its current epoch.
    pub epoch: u64,
    /// The previous epoch while it is still accepted.
    pub previous: Option<u64>,
    /// How many members it has.
    pub members: usize,
}

/// Why a responder refused the epoch an initiation named (or did not name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EpochRefusal {
    /// The initiation names a group this identity does not use as closed.
    UnknownGroup,
    /// The initiator is not a member of the group it names.
    NotMember,
    /// The epoch is neither the current one nor the previous one within the overlap.
    WrongEpoch,
    /// A member of one of this identity's closed groups initiated without the key.
    KeyMissing,
}

struct GroupKeys {
    name: String,
    epoch: u64,
    key: Zeroizing<[u8; 32]>,
    previous: Option<(u64, Zeroizing<[u8; 32]>, Instant)>,
    members: BTreeSet<Address>,
}

/// The closed groups of one local identity.
#[derive(Default)]
pub(super) struct NetworkKeys {
    by_tag: BTreeMap<GroupTag, GroupKeys>,
}

impl core::fmt::Debug for NetworkKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetworkKeys")
            .field("groups", &self.by_tag.len())
            .finish_non_exhaustive()
    }
}

impl NetworkKeys {
    /// Replace the keys with `keys` at `now`. A group whose epoch moved on keeps its
    /// previous key for [`EPOCH_OVERLAP`]. Returns the addresses that were members of
    /// a group before and are no longer members of it (their sessions go).
    pub(super) fn set(&mut self, now: Instant, keys: Vec<NetworkKey>) -> BTreeSet<Address> {
        let mut old = std::mem::take(&mut self.by_tag);
        let mut gone = BTreeSet::new();
        for k in keys {
            let tag = GroupTag::of(&k.group);
            let previous = match old.remove(&tag) {
                Some(o) if o.epoch + 1 == k.epoch => {
                    gone.extend(o.members.difference(&k.members).copied());
                    Some((o.epoch, o.key, now + EPOCH_OVERLAP))
                }
                Some(o) if o.epoch == k.epoch => {
                    gone.extend(o.members.difference(&k.members).copied());
                    o.previous
                }
                Some(o) => {
                    gone.extend(o.members.difference(&k.members).copied());
                    None
                }
                None => None,
            };
            self.by_tag.insert(
                tag,
                GroupKeys {
                    name: k.group,
                    epoch: k.epoch,
                    key: Zeroizing::new(k.key),
                    previous,
                    members: k.members,
                },
            );
        }
        // Groups no longer closed: their members' sessions were keyed by them.
        for (_, o) in old {
            gone.extend(o.members);
        }
        // Still a member of another closed group: keeps its sessions.
        gone.retain(|a| !self.by_tag.values().any(|g| g.members.contains(a)));
        gone
    }

    /// The key an initiation to `remote` uses: its first closed group (by tag).
    pub(super) fn for_initiation(&self, remote: &Address) -> Option<(EpochRef, [u8; 32])> {
        self.by_tag
            .iter()
            .find(|(_, g)| g.members.contains(remote))
            .map(|(tag, g)| {
                (
                    EpochRef {
                        group: *tag,
                        epoch: g.epoch,
                    },
                    *g.key,
                )
            })
    }

    /// The key a responder uses for an initiation from `initiator` that named `epoch`
    /// (or none), or why it refuses. `Ok(None)`: no network key (the initiator is in
    /// none of the closed groups; the allow list decides).
    pub(super) fn for_responder(
        &self,
        now: Instant,
        initiator: &Address,
        epoch: Option<EpochRef>,
    ) -> Result<Option<[u8; 32]>, EpochRefusal> {
        let Some(e) = epoch else {
            if self.by_tag.values().any(|g| g.members.contains(initiator)) {
                return Err(EpochRefusal::KeyMissing);
            }
            return Ok(None);
        };
        let g = self
            .by_tag
            .get(&e.group)
            .ok_or(EpochRefusal::UnknownGroup)?;
        if !g.members.contains(initiator) {
            return Err(EpochRefusal::NotMember);
        }
        if e.epoch == g.epoch {
            return Ok(Some(*g.key));
        }
        match &g.previous {
            Some((epoch, key, until)) if *epoch == e.epoch && now < *until => Ok(Some(**key)),
            _ => Err(EpochRefusal::WrongEpoch),
        }
    }

    /// What `metanet policy show` prints, at `now`.
    pub(super) fn status(&self, now: Instant) -> Vec<NetworkKeyStatus> {
        self.by_tag
            .values()
            .map(|g| NetworkKeyStatus {
                group: g.name.clone(),
                epoch: g.epoch,
                previous: g
                    .previous
                    .as_ref()
                    .filter(|(_, _, until)| now < *until)
                    .map(|(e, _, _)| *e),
                members: g.members.len(),
            })
            .collect()
    }
}
