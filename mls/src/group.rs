//! A group as one member sees it: its current epoch, its commits, its network key.

use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use mls_rs::group::proposal::Proposal;
use mls_rs::group::{CommitEffect, ContentType, ReceivedMessage, Sender};
use mls_rs::storage_provider::in_memory::InMemoryGroupStateStorage;
use mls_rs::{GroupStateStorage, MlsMessage, MlsMessageDescription};
use zeroize::Zeroizing;

use crate::codec;
use crate::config::{self, Config};
use crate::member::key_package_address;
use crate::{Error, NETWORK_KEY_LABEL};

type MlsGroup = mls_rs::Group<Config>;

/// Runs `f`, turning a panic inside the MLS implementation into an error: no input
/// must be able to bring the caller down.
pub(crate) fn guard<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| Error::Mls("internal error in the MLS implementation".into()))
}

/// A commit made by [`Group::commit`], not yet applied by its maker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The commit (an MLSMessage, a `PublicMessage`) every current member applies with
    /// [`Group::apply`].
    pub commit: Vec<u8>,
    /// The Welcome (an MLSMessage) for the members it adds, who pass it to
    /// [`crate::Member::join`]; `None` if it adds no one.
    pub welcome: Option<Vec<u8>>,
    /// The epoch the commit leads to.
    pub epoch: u64,
    /// [`Group::epoch_hash`] of the epoch the commit leads to.
    pub epoch_hash: [u8; 32],
}

/// What applying a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new epoch.
    pub epoch: u64,
    /// Addresses the commit added, in the commit's order.
    pub added: Vec<String>,
    /// Addresses the commit removed, in the commit's order.
    pub removed: Vec<String>,
    /// [`Group::epoch_hash`] of the new epoch.
    pub epoch_hash: [u8; 32],
    /// Address of the member who made the commit (e.g. to check it is an admin).
    pub committer: String,
}

/// One member's view of an MLS group.
///
/// Commits change the group only when the chain has ordered them: a member makes one
/// with [`Group::commit`] (kept pending), and then either applies it with
/// [`Group::merge_pending`] (or by passing its bytes to [`Group::apply`]) or drops it
/// with [`Group::discard_pending`]; everybody else passes it to [`Group::apply`].
pub struct Group {
    inner: MlsGroup,
    /// The pending commit already applied to a copy of `inner`: the next epoch.
    next: Option<Box<MlsGroup>>,
    /// The storage `inner` writes to; only [`Group::save`] uses it, and empties it
    /// again at once.
    storage: InMemoryGroupStateStorage,
    /// Serialises [`Group::save`] between clones, which share `storage`.
    save_lock: Arc<Mutex<()>>,
    address: String,
    state_key: Zeroizing<[u8; 32]>,
    /// A commit removed us (or re-initialised the group): no more keys.
    defunct: bool,
}

impl Clone for Group {
    /// An independent copy of this member's state (the copy holds the same secrets).
    fn clone(&self) -> Self {
        Group {
            inner: self.inner.clone(),
            next: self.next.clone(),
            storage: self.storage.clone(),
            save_lock: Arc::clone(&self.save_lock),
            address: self.address.clone(),
            state_key: self.state_key.clone(),
            defunct: self.defunct,
        }
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("group_id", &String::from_utf8_lossy(self.group_id()))
            .field("epoch", &self.epoch())
            .field("address", &self.address)
            .field("pending", &self.next.is_some())
            .field("defunct", &self.defunct)
            .finish_non_exhaustive()
    }
}

fn address_string(identity: &mls_rs::identity::SigningIdentity) -> String {
    match config::address_of(identity) {
        Ok(a) => a.to_owned(),
        // The identity provider refuses such members; never reached.
        Err(_) => String::new(),
    }
}

fn epoch_hash_of(group: &MlsGroup) -> Result<[u8; 32], Error> {
    let authenticator = group.epoch_authenticator()?;
    Ok(blake3::derive_key(
        "metanet v1 mls epoch hash",
        authenticator.as_bytes(),
    ))
}

impl Group {
    pub(crate) fn new(
        inner: MlsGroup,
        storage: InMemoryGroupStateStorage,
        address: String,
        state_key: Zeroizing<[u8; 32]>,
    ) -> Group {
        Group {
            inner,
            next: None,
            storage,
            save_lock: Arc::new(Mutex::new(())),
            address,
            state_key,
            defunct: false,
        }
    }

    fn live(&self) -> Result<(), Error> {
        if self.defunct {
            Err(Error::NotMember)
        } else {
            Ok(())
        }
    }

    /// The group id (the bytes given to [`crate::Member::create`]).
    pub fn group_id(&self) -> &[u8] {
        self.inner.group_id()
    }

    /// The current epoch (0 for a new group; each applied commit adds 1).
    pub fn epoch(&self) -> u64 {
        self.inner.current_epoch()
    }

    /// Member addresses (credential identities) in leaf order, ourselves included.
    pub fn members(&self) -> Vec<String> {
        self.inner
            .roster()
            .members_iter()
            .map(|m| address_string(&m.signing_identity))
            .collect()
    }

    /// Builds (does not apply) a commit that adds the members of key packages `add`
    /// (each checked as by [`key_package_address`]) and removes the members with
    /// addresses `remove`. With both empty, the commit only renews the epoch's keys
    /// (and our own leaf). A member may be removed and re-added (with a new key
    /// package) in one commit.
    ///
    /// The commit is kept pending, replacing any earlier pending one; apply it with
    /// [`Group::merge_pending`] once the chain ordered it, or drop it with
    /// [`Group::discard_pending`].
    ///
    /// Errors: [`Error::Invalid`] for removing ourselves, or adding an address that is
    /// (and stays) a member or twice; [`Error::UnknownMember`] for removing a
    /// non-member; key package errors as [`key_package_address`].
    pub fn commit(&mut self, add: &[Vec<u8>], remove: &[&str]) -> Result<Commit, Error> {
        self.live()?;
        self.discard_pending();

        let mut removing = HashSet::new();
        let mut remove_indices = Vec::with_capacity(remove.len());
        for &address in remove {
            if address == self.address {
                return Err(Error::Invalid("a member cannot remove itself".into()));
            }
            if !removing.insert(address) {
                return Err(Error::Invalid(format!("{address:?} removed twice")));
            }
            let member = self
                .inner
                .member_with_identity(address.as_bytes())
                .map_err(|_| Error::UnknownMember(address.to_owned()))?;
            remove_indices.push(member.index);
        }

        let mut adding = HashSet::new();
        let mut packages = Vec::with_capacity(add.len());
        for kp in add {
            let address = key_package_address(kp)?;
            let stays = !removing.contains(address.as_str())
                && self.inner.member_with_identity(address.as_bytes()).is_ok();
            if stays {
                return Err(Error::Invalid(format!("{address:?} is already a member")));
            }
            if !adding.insert(address.clone()) {
                return Err(Error::Invalid(format!("{address:?} added twice")));
            }
            packages.push(MlsMessage::from_bytes(kp)?);
        }

        let built = guard(|| {
            let mut builder = self.inner.commit_builder();
            for index in remove_indices {
                builder = builder.remove_member(index)?;
            }
            for package in packages {
                builder = builder.add_member(package)?;
            }
            builder.build()
        })??;

        let result = (|| {
            let commit = built.commit_message.to_bytes()?;
            let welcome = match built.welcome_messages.as_slice() {
                [] => None,
                [welcome] => Some(welcome.to_bytes()?),
                _ => return Err(Error::Mls("more than one Welcome".into())),
            };
            let mut next = Box::new(self.inner.clone());
            next.apply_pending_commit()?;
            let out = Commit {
                commit,
                welcome,
                epoch: next.current_epoch(),
                epoch_hash: epoch_hash_of(&next)?,
            };
            Ok((out, next))
        })();
        match result {
            Ok((out, next)) => {
                self.next = Some(next);
                Ok(out)
            }
            Err(e) => {
                self.discard_pending();
                Err(e)
            }
        }
    }

    /// Applies the pending commit made by [`Group::commit`]: the group moves to its
    /// epoch. [`Error::Invalid`] if there is none.
    pub fn merge_pending(&mut self) -> Result<(), Error> {
        self.live()?;
        if let Some(next) = self.next.take() {
            self.inner = *next;
            Ok(())
        } else if self.inner.has_pending_commit() {
            // Saved with a pending commit and loaded again.
            self.inner.apply_pending_commit()?;
            Ok(())
        } else {
            Err(Error::Invalid("no pending commit".into()))
        }
    }

    /// Drops the pending commit made by [`Group::commit`], if any.
    pub fn discard_pending(&mut self) {
        self.next = None;
        self.inner.clear_pending_commit();
    }

    /// Processes a commit for the current epoch (one leading to epoch
    /// `self.epoch() + 1`), made by another member, or our own pending commit (then it
    /// is the same as [`Group::merge_pending`]). Any other pending commit of ours is
    /// dropped, since it no longer fits the new epoch.
    ///
    /// If the commit removes us, this returns [`Error::NotMember`], and from then on the
    /// group yields no keys: [`Group::network_key`], [`Group::epoch_hash`],
    /// [`Group::commit`], [`Group::apply`] and [`Group::save`] all return
    /// [`Error::NotMember`].
    ///
    /// Other errors: [`Error::Decode`] (not an MLSMessage carrying a commit),
    /// [`Error::WrongGroup`], [`Error::WrongEpoch`] (applied twice, from the past or the
    /// future), [`Error::Mls`] (bad signature, membership tag, confirmation tag, update
    /// path, ...). On an error other than `NotMember` the group is unchanged.
    pub fn apply(&mut self, commit: &[u8]) -> Result<Applied, Error> {
        self.live()?;
        let message = MlsMessage::from_bytes(commit)?;
        match message.description() {
            MlsMessageDescription::PublicProtocolMessage {
                group_id,
                epoch_id,
                content_type,
                sender,
                ..
            } => {
                if content_type != ContentType::Commit {
                    return Err(Error::Decode("not a commit".into()));
                }
                if group_id != self.group_id() {
                    return Err(Error::WrongGroup);
                }
                if epoch_id != self.epoch() {
                    return Err(Error::WrongEpoch {
                        have: self.epoch(),
                        got: epoch_id.saturating_add(1),
                    });
                }
                if !matches!(sender, Sender::Member(_)) {
                    return Err(Error::Invalid("commit not sent by a member".into()));
                }
            }
            _ => return Err(Error::Decode("not a commit (PublicMessage)".into())),
        }

        let received = guard(|| self.inner.process_incoming_message(message))??;
        // The epoch moved on (or we were removed): a pending commit of ours is stale.
        self.discard_pending();
        let ReceivedMessage::Commit(description) = received else {
            return Err(Error::Mls("message was not a commit".into()));
        };
        let new_epoch = match description.effect {
            CommitEffect::NewEpoch(new_epoch) => new_epoch,
            CommitEffect::Removed { .. } => {
                self.defunct = true;
                return Err(Error::NotMember);
            }
            CommitEffect::ReInit(_) => {
                self.defunct = true;
                return Err(Error::Mls("group re-initialised; not supported".into()));
            }
        };

        let mut added = Vec::new();
        let mut removed = Vec::new();
        for info in &new_epoch.applied_proposals {
            match &info.proposal {
                Proposal::Add(add) => added.push(address_string(add.signing_identity())),
                Proposal::Remove(remove) => {
                    if let Some(m) = new_epoch.prior_state.member_at_index(remove.to_remove()) {
                        removed.push(address_string(&m.signing_identity));
                    }
                }
                _ => {}
            }
        }
        let committer = self
            .inner
            .member_at_index(description.committer)
            .map(|m| address_string(&m.signing_identity))
            .unwrap_or_default();
        Ok(Applied {
            epoch: self.epoch(),
            added,
            removed,
            epoch_hash: self.epoch_hash()?,
            committer,
        })
    }

    /// The 32-byte network key of the current epoch: the MLS exporter secret with label
    /// [`NETWORK_KEY_LABEL`] (`"metanet v1 network key"`), context the group id,
    /// length 32.
    pub fn network_key(&self) -> Result<[u8; 32], Error> {
        self.live()?;
        let secret = self
            .inner
            .export_secret(NETWORK_KEY_LABEL, self.group_id(), 32)?;
        secret
            .as_bytes()
            .try_into()
            .map_err(|_| Error::Mls("exporter gave a key of the wrong length".into()))
    }

    /// A public 32-byte digest that names the current epoch without revealing its
    /// secrets: `blake3::derive_key("metanet v1 mls epoch hash", epoch_authenticator)`.
    ///
    /// Every member computes the same value for the same epoch. The MLS epoch
    /// authenticator (RFC 9420, section 8.7) rather than the confirmed transcript hash,
    /// because the authenticator comes out of the key schedule: two members with the
    /// same epoch hash also have the same epoch secrets and so the same network key,
    /// and only members can compute it, so publishing it (say on the chain next to the
    /// commit) lets members check they agree while it tells outsiders nothing they
    /// could not see. The transcript hash is a function of public commits only: anyone
    /// who saw them could compute it, and equal transcript hashes would not show equal
    /// keys. The hash is one-way, so it does not reveal the authenticator either.
    pub fn epoch_hash(&self) -> Result<[u8; 32], Error> {
        self.live()?;
        epoch_hash_of(&self.inner)
    }

    /// This member's state of the group as bytes for [`crate::Member::load_group`] of
    /// the same identity: the current epoch's tree and secrets (no earlier epoch's),
    /// and the pending commit if there is one. Authenticated with a key derived from the
    /// seed. Contains secrets: store it as such.
    pub fn save(&self) -> Result<Vec<u8>, Error> {
        self.live()?;
        let _serial = self
            .save_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut copy = self.inner.clone();
        let written = copy.write_to_storage();
        let state = self.storage.state(self.group_id());
        self.storage.delete_group(self.group_id());
        written?;
        let state = match state {
            Ok(Some(state)) => state,
            Ok(None) => return Err(Error::Mls("group state was not written".into())),
            Err(never) => match never {},
        };
        let mut body = Zeroizing::new(Vec::with_capacity(state.len() + 64));
        codec::put_bytes(&mut body, self.group_id())?;
        codec::put_bytes(&mut body, &state)?;
        Ok(codec::seal(
            &self.state_key,
            &codec::GROUP_MAGIC,
            &self.address,
            &body,
        ))
    }
}
