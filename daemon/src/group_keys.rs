//! Group keys (docs/protocol.md §9.9, §11.3): each local identity's MLS state for the
//! groups the chain says it is a member of, kept in step with the chain, and the
//! network keys it gives the node.
//!
//! The chain is the truth about membership; MLS follows it. At every housekeeping turn
//! ([`Daemon::sync_groups`]), for each local identity and each of its groups:
//!
//! - a member without MLS state joins from the newest Welcome the chain ordered (or,
//!   as the group's creator at epoch 0, creates the MLS group);
//! - a member behind the chain's epoch fetches the next ordered commit from the DHT
//!   (by the hash in its epoch claim), applies it and checks that it reached the
//!   claim's epoch hash; a commit that removes it ends its state;
//! - an admin whose MLS group differs from the chain's member list commits the
//!   difference (adding members by the key packages they publish in the DHT),
//!   publishes the commit and Welcome in the DHT and submits an epoch claim; the
//!   first claim for an epoch wins, and a losing commit is dropped.
//!
//! Every identity publishes a key package (signed by its wallet key) when a chain is
//! configured, so that an admin can add it. States are saved under
//! `<state>/mls/` (mode 0600, atomically) after every change, so a restart resumes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libp2p::kad::RecordKey;
use metanet_chain::claim::{self, Claim};
use metanet_chain::registry::Group as ChainGroup;
use metanet_chain::{Name, Registry};
use metanet_mls::{Error as MlsError, Group, Member};
use metanet_proto::control::GroupKeyInfo;
use metanet_proto::node::{Command, LocalId, NetworkKey};
use metanet_proto::{Address, Identity};

use crate::chain::Submission;
use crate::dht::{self, LookupError, Request};
use crate::{state, Daemon};

/// How long a DHT value asked for is not asked for again.
const ASK_AGAIN: Duration = Duration::from_secs(3);
/// How long a commit of ours waits for its epoch claim before it is dropped and made
/// again.
const PENDING_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest saved group key state read (a group of a few thousand members).
const MAX_GROUP_FILE: u64 = 16 << 20;
/// How long an admin waits for a member it saw added to ask for its update.
const AWAIT_UPDATES: Duration = Duration::from_secs(600);
/// Most DHT values held until used.
const MAX_HELD_VALUES: usize = 1024;

/// One local identity's MLS member and groups.
struct Holder {
    address: Address,
    member: Member,
    groups: BTreeMap<String, Held>,
    /// The key package value published for it (kept across restarts).
    key_package: Option<Vec<u8>>,
}

struct Held {
    group: Group,
    /// Our own commit waiting for its epoch claim.
    pending: Option<Pending>,
    /// It joined and has not had its own empty update ordered yet (§9.9).
    needs_update: bool,
    /// An admin's claim for another member's update, waiting to be applied.
    ordering: Option<(u64, Instant)>,
}

impl Held {
    fn new(group: Group, needs_update: bool) -> Held {
        Held {
            group,
            pending: None,
            needs_update,
            ordering: None,
        }
    }
}

struct Pending {
    epoch: u64,
    commit: [u8; 32],
    since: Instant,
    /// The members it adds.
    adding: Vec<String>,
    /// An empty update of our own leaf.
    update: bool,
}

/// What applying an ordered commit did.
struct Step {
    hash: [u8; 32],
    added: Vec<String>,
    committer: String,
    changes_members: bool,
}

/// What the daemon keeps for group keys.
#[derive(Default)]
pub(crate) struct GroupKeys {
    holders: BTreeMap<String, Holder>,
    /// DHT values asked for, and when.
    asked: HashMap<RecordKey, Instant>,
    /// DHT values that arrived and wait to be used.
    values: HashMap<RecordKey, Vec<u8>>,
    /// Members an admin of this daemon waits for an update request from (group,
    /// address), since when: those it saw added.
    awaiting: BTreeMap<(String, Address), Instant>,
    /// Welcomes that turned out not to be for an identity (by identity, hash).
    foreign_welcomes: BTreeSet<(String, [u8; 32])>,
    /// Addresses whose key package was published in this run (the DHT node
    /// republishes it).
    published: BTreeSet<Address>,
    /// The network keys last given to the node, per identity.
    sent: HashMap<String, Vec<(String, u64, BTreeSet<Address>)>>,
}

fn mls_seed(id: &Identity) -> [u8; 32] {
    blake3::derive_key("metanet v1 mls seed", &id.wallet().seed()[..])
}

fn dir(root: &Path) -> PathBuf {
    root.join("mls")
}

fn member_path(root: &Path, identity: &str) -> PathBuf {
    dir(root).join(format!("{identity}.member"))
}

fn key_package_path(root: &Path, identity: &str) -> PathBuf {
    dir(root).join(format!("{identity}.kp"))
}

fn group_path(root: &Path, identity: &str, group: &str) -> PathBuf {
    dir(root).join(format!("{identity}.{group}.group"))
}

fn save(path: &Path, bytes: &[u8]) {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Err(e) = state::write_private(path, bytes) {
        tracing::error!(path = %path.display(), error = %e, "cannot save MLS state");
    }
}

/// One local identity's part of a housekeeping turn.
struct Turn<'a> {
    reg: &'a Registry,
    root: &'a Path,
    /// The identity's local name.
    name: &'a str,
    id: &'a Identity,
    now: Instant,
}

impl GroupKeys {
    /// `name`'s state of `group`.
    fn held(&mut self, name: &str, group: &str) -> Option<&mut Held> {
        self.holders.get_mut(name)?.groups.get_mut(group)
    }

    /// The key states of `group` held by local identities.
    pub(crate) fn states(&self, group: &str) -> Vec<GroupKeyInfo> {
        self.holders
            .iter()
            .filter_map(|(n, h)| {
                let held = h.groups.get(group)?;
                Some(GroupKeyInfo {
                    identity: n.clone(),
                    epoch: held.group.epoch(),
                    pending: held.pending.is_some(),
                    needs_update: held.needs_update,
                })
            })
            .collect()
    }

    fn value(&mut self, dht: Option<&dht::Dht>, key: RecordKey, now: Instant) -> Option<Vec<u8>> {
        if let Some(v) = self.values.get(&key) {
            return Some(v.clone());
        }
        let due = self
            .asked
            .get(&key)
            .is_none_or(|t| now.duration_since(*t) >= ASK_AGAIN);
        if due {
            if let Some(d) = dht {
                self.asked.insert(key.clone(), now);
                d.send(Request::Get { key });
            }
        }
        None
    }
}

impl Daemon {
    /// A DHT value arrived (or was not found).
    pub(crate) fn on_dht_value(&mut self, key: RecordKey, result: Result<Vec<u8>, LookupError>) {
        let keys = &mut self.group_keys;
        match result {
            Ok(v) if keys.asked.remove(&key).is_some() => {
                if keys.values.len() >= MAX_HELD_VALUES {
                    keys.values.clear();
                }
                keys.values.insert(key, v);
                self.sync_groups();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "group key value not found yet"),
        }
    }

    /// Bring every local identity's MLS state in step with the chain and give the node
    /// the network keys (module docs).
    pub(crate) fn sync_groups(&mut self) {
        let Some(reg) = self
            .chain
            .as_ref()
            .and_then(|c| c.registry().ok())
            .map(|(r, _)| r)
        else {
            return;
        };
        let mut keys = std::mem::take(&mut self.group_keys);
        let now = Instant::now();
        let root = self.state.root().to_owned();
        let locals: Vec<(String, LocalId)> =
            self.names.iter().map(|(n, l)| (n.to_owned(), l)).collect();
        keys.holders
            .retain(|n, _| locals.iter().any(|(name, _)| name == n));
        for (name, local) in &locals {
            let Some(id) = self.node.identity(*local).map(crate::link::duplicate) else {
                continue;
            };
            let turn = Turn {
                reg: &reg,
                root: &root,
                name,
                id: &id,
                now,
            };
            self.sync_identity(&mut keys, &turn);
        }
        for (name, local) in &locals {
            self.send_network_keys(&mut keys, &reg, name, *local);
        }
        self.group_keys = keys;
    }

    fn sync_identity(&mut self, keys: &mut GroupKeys, t: &Turn<'_>) {
        let (reg, root, name, id) = (t.reg, t.root, t.name, t.id);
        let address = id.address();
        let holder = match keys.holders.get_mut(name) {
            Some(h) if h.address == address => h,
            _ => {
                let Some(h) = load_holder(root, name, id, reg) else {
                    return;
                };
                keys.holders.insert(name.to_owned(), h);
                let Some(h) = keys.holders.get_mut(name) else {
                    return;
                };
                h
            }
        };
        if let (Some(kp), Some(d)) = (&holder.key_package, &self.dht) {
            if keys.published.insert(address) {
                d.send(Request::Put {
                    key: dht::key_package_key(&address),
                    value: kp.clone(),
                });
            }
        }
        // Groups it is no longer a member of: their state goes.
        let gone: Vec<String> = holder
            .groups
            .keys()
            .filter(|g| {
                Name::parse(g)
                    .ok()
                    .and_then(|n| reg.group(&n))
                    .is_none_or(|grp| !grp.members.contains(&address))
            })
            .cloned()
            .collect();
        for g in gone {
            tracing::info!(identity = name, group = %g, "no longer a member: group key state removed");
            holder.groups.remove(&g);
            let _ = std::fs::remove_file(group_path(root, name, &g));
        }
        // `reg` is the chain view's own snapshot, not the daemon's: no copy needed.
        for (gname, g) in reg.groups().filter(|(_, g)| g.members.contains(&address)) {
            self.sync_group(keys, t, gname, g);
        }
    }

    fn sync_group(&mut self, keys: &mut GroupKeys, t: &Turn<'_>, gname: &Name, g: &ChainGroup) {
        let (root, name, id, now) = (t.root, t.name, t.id, t.now);
        let address = id.address();
        let group = gname.as_str();
        let path = group_path(root, name, group);
        let Some(holder) = keys.holders.get_mut(name) else {
            return;
        };
        // No state yet: create (the creator, before any commit) or join.
        if !holder.groups.contains_key(group) {
            let creator = g.log.first().is_some_and(|e| e.subject == address);
            if g.epoch == 0 && creator {
                match holder.member.create(group.as_bytes()) {
                    Ok(grp) => {
                        tracing::info!(identity = name, group, "created the group's MLS state");
                        if let Ok(b) = grp.save() {
                            save(&path, &b);
                        }
                        holder
                            .groups
                            .insert(group.to_owned(), Held::new(grp, false));
                    }
                    Err(e) => {
                        tracing::error!(identity = name, group, error = %e, "cannot create the MLS group")
                    }
                }
                return;
            }
            let Some(rec) = g
                .epochs
                .iter()
                .rev()
                .find(|r| {
                    r.welcome != [0; 32]
                        && !keys
                            .foreign_welcomes
                            .contains(&(name.to_owned(), r.welcome))
                })
                .copied()
            else {
                return;
            };
            let Some(welcome) = keys.value(self.dht.as_ref(), dht::blob_key(&rec.welcome), now)
            else {
                return;
            };
            let Some(holder) = keys.holders.get_mut(name) else {
                return;
            };
            match holder.member.join(&welcome) {
                Ok(grp)
                    if grp.epoch() == rec.epoch
                        && grp.epoch_hash().ok() == Some(rec.epoch_hash) =>
                {
                    tracing::info!(
                        identity = name,
                        group,
                        epoch = rec.epoch,
                        "joined the group's keys from its Welcome"
                    );
                    if let Ok(b) = grp.save() {
                        save(&path, &b);
                    }
                    if let Ok(b) = holder.member.save() {
                        save(&member_path(root, name), &b);
                    }
                    // Its own leaf fills its tree nodes: commits stay O(log N).
                    holder.groups.insert(group.to_owned(), Held::new(grp, true));
                    // The key package is used up: publish a fresh one.
                    holder.key_package = None;
                    keys.published.remove(&address);
                    if let Some(h) = keys.holders.get_mut(name) {
                        h.key_package = new_key_package(root, name, id, &mut h.member);
                    }
                }
                Ok(_) => {
                    tracing::warn!(
                        identity = name,
                        group,
                        epoch = rec.epoch,
                        "a Welcome does not reach the epoch its claim names: ignored"
                    );
                    keys.foreign_welcomes.insert((name.to_owned(), rec.welcome));
                }
                Err(MlsError::NotMember) => {
                    keys.foreign_welcomes.insert((name.to_owned(), rec.welcome));
                }
                Err(e) => {
                    tracing::warn!(identity = name, group, error = %e, "cannot join from the Welcome");
                    keys.foreign_welcomes.insert((name.to_owned(), rec.welcome));
                }
            }
            return;
        }
        // Behind the chain: apply the ordered commits in turn.
        loop {
            let Some(held) = keys.held(t.name, group) else {
                return;
            };
            let have = held.group.epoch();
            if have >= g.epoch {
                break;
            }
            let Some(rec) = usize::try_from(have)
                .ok()
                .and_then(|i| g.epochs.get(i))
                .copied()
            else {
                return;
            };
            let me = address.to_string();
            let outcome = if held
                .pending
                .as_ref()
                .is_some_and(|p| p.commit == rec.commit)
            {
                let p = held.pending.take();
                let adding = p.as_ref().map(|p| p.adding.clone()).unwrap_or_default();
                if p.is_some_and(|p| p.update) {
                    held.needs_update = false;
                }
                held.group.merge_pending().and_then(|()| {
                    Ok(Step {
                        hash: held.group.epoch_hash()?,
                        changes_members: true,
                        added: adding,
                        committer: me.clone(),
                    })
                })
            } else {
                if held.pending.take().is_some() {
                    tracing::info!(
                        identity = name,
                        group,
                        epoch = rec.epoch,
                        "another admin's commit was ordered first: ours is dropped"
                    );
                    held.group.discard_pending();
                }
                let Some(commit) = keys.value(self.dht.as_ref(), dht::blob_key(&rec.commit), now)
                else {
                    return;
                };
                let Some(held) = keys.held(t.name, group) else {
                    return;
                };
                held.ordering = None;
                held.group.apply(&commit).map(|a| Step {
                    hash: a.epoch_hash,
                    changes_members: !a.added.is_empty() || !a.removed.is_empty(),
                    added: a.added,
                    committer: a.committer,
                })
            };
            let Some(holder) = keys.holders.get_mut(name) else {
                return;
            };
            match outcome {
                Ok(step) if step.hash == rec.epoch_hash => {
                    tracing::info!(
                        identity = name,
                        group,
                        epoch = rec.epoch,
                        committer = %step.committer,
                        "group key epoch applied"
                    );
                    // The admin waits for the members it saw added to fill their
                    // leaves, and stops waiting for one whose update was ordered.
                    if g.admins.contains(&address) {
                        for a in step.added.iter().filter_map(|a| a.parse::<Address>().ok()) {
                            keys.awaiting.insert((group.to_owned(), a), now);
                        }
                        if !step.changes_members {
                            if let Ok(c) = step.committer.parse::<Address>() {
                                keys.awaiting.remove(&(group.to_owned(), c));
                            }
                        }
                    }
                    if let Some(held) = holder.groups.get(group) {
                        if let Ok(b) = held.group.save() {
                            save(&path, &b);
                        }
                    }
                }
                Ok(_) => {
                    tracing::error!(identity = name, group, epoch = rec.epoch, "the commit does not reach the epoch hash its claim names: group key state dropped");
                    drop_group(holder, root, name, group);
                    return;
                }
                Err(MlsError::NotMember) => {
                    tracing::info!(
                        identity = name,
                        group,
                        epoch = rec.epoch,
                        "removed from the group: its keys of later epochs are out of reach"
                    );
                    drop_group(holder, root, name, group);
                    return;
                }
                Err(e) => {
                    tracing::warn!(identity = name, group, epoch = rec.epoch, error = %e, "cannot apply the ordered commit: group key state dropped");
                    drop_group(holder, root, name, group);
                    return;
                }
            }
        }
        // In step: an admin commits what the chain changed, or orders a member's
        // update; a member that joined asks for its own update to be ordered.
        if g.admins.contains(&address) && self.first_local_admin(g) == Some(address) {
            if !self.reconcile(keys, t, gname, g) {
                self.order_updates(keys, t, gname);
            }
        } else {
            self.request_update(keys, t, gname);
        }
    }

    /// A member that joined commits an empty update of its own leaf, stores it in the
    /// DHT and asks the admins to order it (an update request, §9.9).
    fn request_update(&mut self, keys: &mut GroupKeys, t: &Turn<'_>, gname: &Name) {
        let (root, name, id, now) = (t.root, t.name, t.id, t.now);
        let group = gname.as_str();
        let Some(held) = keys.held(t.name, group) else {
            return;
        };
        if !held.needs_update {
            return;
        }
        if let Some(p) = &held.pending {
            if now.duration_since(p.since) < PENDING_TIMEOUT {
                return;
            }
            held.pending = None;
            held.group.discard_pending();
        }
        let commit = match held.group.commit(&[], &[]) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(identity = name, group, error = %e, "cannot make an update of our leaf");
                return;
            }
        };
        let hash = *blake3::hash(&commit.commit).as_bytes();
        let tag = metanet_proto::handshake::GroupTag::of(group).0;
        let request = match dht::seal_update(id, &tag, commit.epoch, &hash) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(identity = name, group, error = %e, "cannot sign the update request");
                held.group.discard_pending();
                return;
            }
        };
        if let Some(d) = &self.dht {
            d.send(Request::Put {
                key: dht::blob_key(&hash),
                value: commit.commit.clone(),
            });
            d.send(Request::Put {
                key: dht::update_key(&tag, &id.address()),
                value: request,
            });
        }
        held.pending = Some(Pending {
            epoch: commit.epoch,
            commit: hash,
            since: now,
            adding: Vec::new(),
            update: true,
        });
        if let Ok(b) = held.group.save() {
            save(&group_path(root, name, group), &b);
        }
        tracing::info!(
            identity = name,
            group,
            epoch = commit.epoch,
            "asking the admins to order an update of our leaf"
        );
    }

    /// An admin orders one member's update request for the next epoch: it checks the
    /// commit on a copy of its group (made by that member, changes no membership) and
    /// submits the epoch claim.
    fn order_updates(&mut self, keys: &mut GroupKeys, t: &Turn<'_>, gname: &Name) {
        let (reg, id, now) = (t.reg, t.id, t.now);
        let group = gname.as_str();
        keys.awaiting
            .retain(|_, since| now.duration_since(*since) < AWAIT_UPDATES);
        let Some(held) = keys.held(t.name, group) else {
            return;
        };
        if held.pending.is_some()
            || held
                .ordering
                .is_some_and(|(_, since)| now.duration_since(since) < PENDING_TIMEOUT)
        {
            return;
        }
        let next = held.group.epoch() + 1;
        let tag = metanet_proto::handshake::GroupTag::of(group).0;
        let waiting: Vec<Address> = keys
            .awaiting
            .keys()
            .filter(|(g, _)| g == group)
            .map(|(_, a)| *a)
            .collect();
        for member in waiting {
            let Some(v) = keys.value(self.dht.as_ref(), dht::update_key(&tag, &member), now) else {
                continue;
            };
            let Ok((epoch, hash)) = dht::open_update(&tag, &member, &v) else {
                keys.values.remove(&dht::update_key(&tag, &member));
                continue;
            };
            if epoch != next {
                // Made for another epoch: the member makes a new one.
                keys.values.remove(&dht::update_key(&tag, &member));
                continue;
            }
            let Some(commit) = keys.value(self.dht.as_ref(), dht::blob_key(&hash), now) else {
                continue;
            };
            let Some(held) = keys.held(t.name, group) else {
                return;
            };
            let mut trial = held.group.clone();
            let applied = match trial.apply(&commit) {
                Ok(a)
                    if a.committer == member.to_string()
                        && a.added.is_empty()
                        && a.removed.is_empty() =>
                {
                    a
                }
                _ => {
                    tracing::warn!(group, %member, "its update request is not an update of its own leaf: ignored");
                    keys.awaiting.remove(&(group.to_owned(), member));
                    continue;
                }
            };
            let claim = Claim::GroupEpoch {
                name: gname.clone(),
                epoch: applied.epoch,
                commit: hash,
                welcome: [0; 32],
                epoch_hash: applied.epoch_hash,
            };
            let Ok(sealed) = claim::seal(id, &reg.params().registry, &claim) else {
                return;
            };
            held.ordering = Some((applied.epoch, now));
            tracing::info!(group, %member, epoch = applied.epoch, "ordering a member's update");
            self.submit_epoch(gname, sealed);
            return;
        }
    }

    /// Submit an epoch claim; its outcome shows in the chain view.
    fn submit_epoch(&self, gname: &Name, sealed: Vec<u8>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(
            Submission::Group {
                name: gname.clone(),
                claim: sealed,
            },
            tx,
        );
        let group = gname.as_str().to_owned();
        tokio::spawn(async move {
            if let Ok(Err(e)) = rx.await {
                tracing::warn!(group, error = %e.message, "epoch claim not applied");
            }
        });
    }

    /// The first local identity (in name order) that is an admin of `g`: the one that
    /// commits for this daemon.
    fn first_local_admin(&self, g: &ChainGroup) -> Option<Address> {
        self.names
            .iter()
            .filter_map(|(_, l)| self.node.identity(l).map(Identity::address))
            .find(|a| g.admins.contains(a))
    }

    fn reconcile(
        &mut self,
        keys: &mut GroupKeys,
        t: &Turn<'_>,
        gname: &Name,
        g: &ChainGroup,
    ) -> bool {
        let (reg, root, name, id, now) = (t.reg, t.root, t.name, t.id, t.now);
        let group = gname.as_str();
        let Some(held) = keys.held(t.name, group) else {
            return true;
        };
        if held
            .ordering
            .is_some_and(|(_, since)| now.duration_since(since) < PENDING_TIMEOUT)
        {
            return true;
        }
        if let Some(p) = &held.pending {
            if now.duration_since(p.since) < PENDING_TIMEOUT {
                return true;
            }
            tracing::warn!(
                group,
                epoch = p.epoch,
                "our epoch claim was not ordered in time: committing again"
            );
            held.pending = None;
            held.group.discard_pending();
        }
        let in_mls: BTreeSet<String> = held.group.members().into_iter().collect();
        let on_chain: BTreeSet<String> = g.members.iter().map(ToString::to_string).collect();
        let me = id.address().to_string();
        let remove: Vec<String> = in_mls
            .difference(&on_chain)
            .filter(|a| **a != me)
            .cloned()
            .collect();
        let add: Vec<Address> = g
            .members
            .iter()
            .filter(|a| !in_mls.contains(&a.to_string()))
            .copied()
            .collect();
        if remove.is_empty() && add.is_empty() {
            return false;
        }
        let mut packages = Vec::new();
        for a in &add {
            let Some(v) = keys.value(self.dht.as_ref(), dht::key_package_key(a), now) else {
                continue;
            };
            match dht::open_key_package(a, &v) {
                Ok((_, kp))
                    if metanet_mls::key_package_address(&kp).ok() == Some(a.to_string()) =>
                {
                    packages.push(kp)
                }
                _ => {
                    tracing::warn!(member = %a, "its key package in the DHT is not valid: cannot add it to the group's keys yet");
                    keys.values.remove(&dht::key_package_key(a));
                }
            }
        }
        if remove.is_empty() && packages.is_empty() {
            return false;
        }
        let Some(held) = keys.held(t.name, group) else {
            return true;
        };
        let removing: Vec<&str> = remove.iter().map(String::as_str).collect();
        let commit = match held.group.commit(&packages, &removing) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(group, error = %e, "cannot make the commit");
                return true;
            }
        };
        let commit_hash = *blake3::hash(&commit.commit).as_bytes();
        let welcome_hash = commit
            .welcome
            .as_ref()
            .map_or([0; 32], |w| *blake3::hash(w).as_bytes());
        if let Some(d) = &self.dht {
            d.send(Request::Put {
                key: dht::blob_key(&commit_hash),
                value: commit.commit.clone(),
            });
            if let Some(w) = &commit.welcome {
                d.send(Request::Put {
                    key: dht::blob_key(&welcome_hash),
                    value: w.clone(),
                });
            }
        }
        let claim = Claim::GroupEpoch {
            name: gname.clone(),
            epoch: commit.epoch,
            commit: commit_hash,
            welcome: welcome_hash,
            epoch_hash: commit.epoch_hash,
        };
        let sealed = match claim::seal(id, &reg.params().registry, &claim) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(group, error = %e, "cannot sign the epoch claim");
                held.group.discard_pending();
                return true;
            }
        };
        let adding = packages
            .iter()
            .filter_map(|kp| metanet_mls::key_package_address(kp).ok())
            .collect();
        held.pending = Some(Pending {
            epoch: commit.epoch,
            commit: commit_hash,
            since: now,
            adding,
            update: false,
        });
        if let Ok(b) = held.group.save() {
            save(&group_path(root, name, group), &b);
        }
        tracing::info!(
            group,
            epoch = commit.epoch,
            added = packages.len(),
            removed = remove.len(),
            commit_bytes = commit.commit.len(),
            "committing a group key epoch"
        );
        self.submit_epoch(gname, sealed);
        true
    }

    /// Give the node `name`'s network keys if they changed: one per group it holds
    /// keys of, for the members both MLS and the chain agree on.
    fn send_network_keys(
        &mut self,
        keys: &mut GroupKeys,
        reg: &Registry,
        name: &str,
        local: LocalId,
    ) {
        let mut want = Vec::new();
        let mut summary = Vec::new();
        if let Some(h) = keys.holders.get(name) {
            for (group, held) in &h.groups {
                let Some(g) = Name::parse(group).ok().and_then(|n| reg.group(&n)) else {
                    continue;
                };
                let members: BTreeSet<Address> = held
                    .group
                    .members()
                    .iter()
                    .filter_map(|m| m.parse::<Address>().ok())
                    .filter(|a| g.members.contains(a))
                    .collect();
                let Ok(key) = held.group.network_key() else {
                    continue;
                };
                summary.push((group.clone(), held.group.epoch(), members.clone()));
                want.push(NetworkKey {
                    group: group.clone(),
                    epoch: held.group.epoch(),
                    key,
                    members,
                });
            }
        }
        let before = keys.sent.get(name);
        if before == Some(&summary) || (before.is_none() && summary.is_empty()) {
            return;
        }
        match self
            .node
            .handle_command(Command::SetNetworkKeys { local, keys: want })
        {
            Ok(()) => {
                tracing::info!(identity = name, groups = ?summary.iter().map(|(g, e, m)| format!("{g}@{e}:{}", m.len())).collect::<Vec<_>>(), "network keys");
                keys.sent.insert(name.to_owned(), summary);
            }
            Err(e) => tracing::error!(identity = name, error = %e, "cannot set the network keys"),
        }
    }
}

fn drop_group(holder: &mut Holder, root: &Path, name: &str, group: &str) {
    holder.groups.remove(group);
    let _ = std::fs::remove_file(group_path(root, name, group));
}

/// `name`'s MLS member and groups from its saved state, or new ones.
fn load_holder(root: &Path, name: &str, id: &Identity, reg: &Registry) -> Option<Holder> {
    let address = id.address().to_string();
    let seed = mls_seed(id);
    let saved = state::read_private(&member_path(root, name)).ok();
    let mut member = match saved
        .as_deref()
        .map(|b| Member::restore(&address, &seed, b))
    {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            tracing::warn!(identity = name, error = %e, "saved MLS member state unusable: starting afresh");
            Member::new(&address, &seed).ok()?
        }
        None => match Member::new(&address, &seed) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(identity = name, error = %e, "cannot make an MLS member");
                return None;
            }
        },
    };
    let mut groups = BTreeMap::new();
    for (gname, g) in reg.groups() {
        if !g.members.contains(&id.address()) {
            continue;
        }
        let path = group_path(root, name, gname.as_str());
        let Ok(bytes) = state::read_private_max(&path, MAX_GROUP_FILE) else {
            continue;
        };
        match member.load_group(&bytes) {
            Ok(grp) => {
                groups.insert(gname.as_str().to_owned(), Held::new(grp, false));
            }
            Err(e) => {
                tracing::warn!(identity = name, group = %gname, error = %e, "saved group key state unusable")
            }
        }
    }
    let kp = state::read_private(&key_package_path(root, name))
        .ok()
        .map(|b| b.to_vec())
        .filter(|v| dht::open_key_package(&id.address(), v).is_ok())
        .or_else(|| new_key_package(root, name, id, &mut member));
    Some(Holder {
        address: id.address(),
        member,
        groups,
        key_package: kp,
    })
}

/// A fresh key package for `name`, saved with the member state that holds its secret.
fn new_key_package(root: &Path, name: &str, id: &Identity, member: &mut Member) -> Option<Vec<u8>> {
    let kp = member
        .key_package()
        .map_err(|e| tracing::error!(identity = name, error = %e, "cannot make a key package"))
        .ok()?;
    let seq = crate::unix_now().as_nanos();
    let value = dht::seal_key_package(id, seq, &kp)
        .map_err(|e| tracing::error!(identity = name, error = %e, "cannot sign the key package"))
        .ok()?;
    if let Ok(b) = member.save() {
        save(&member_path(root, name), &b);
    }
    save(&key_package_path(root, name), &value);
    Some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_package_values_are_bound_to_their_owner() {
        let a = Identity::generate(&[1; 64]);
        let b = Identity::generate(&[2; 64]);
        let v = dht::seal_key_package(&a, 7, b"kp bytes").unwrap();
        assert_eq!(
            dht::open_key_package(&a.address(), &v).unwrap(),
            (7, b"kp bytes".to_vec())
        );
        assert_eq!(
            dht::open_key_package(&b.address(), &v),
            Err(dht::ValueError::WrongSigner)
        );
        let mut swapped = v.clone();
        let n = swapped.len();
        swapped[n - 1] ^= 1;
        assert_eq!(
            dht::open_key_package(&a.address(), &swapped),
            Err(dht::ValueError::HashMismatch)
        );
        for cut in 0..v.len() - 8 {
            assert!(dht::open_key_package(&a.address(), &v[..cut]).is_err());
        }
        let key = dht::key_package_key(&a.address());
        assert_eq!(
            dht::verify_value(&key, &v),
            Ok(dht::Value::KeyPackage { seq: 7 })
        );
        let blob = b"commit";
        let bk = dht::blob_key(blake3::hash(blob).as_bytes());
        assert_eq!(dht::verify_value(&bk, blob), Ok(dht::Value::Blob));
        assert_eq!(
            dht::verify_value(&bk, b"other"),
            Err(dht::ValueError::HashMismatch)
        );
    }
}
