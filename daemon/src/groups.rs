//! Groups on the chain (docs/protocol.md §9.8): the control requests that create and
//! change them (signed by a local admin, submitted by the chain writer, answered once
//! applied) or show them, and the members a policy's `group:NAME` stands for.

use std::collections::{BTreeSet, HashMap};

use metanet_chain::claim::{self, Claim};
use metanet_chain::registry::{Group, GroupChange};
use metanet_chain::{Name, Registry};
use metanet_proto::control::{self as api, ErrorKind, GroupEventInfo, GroupInfo, Reply};
use metanet_proto::node::LocalId;
use metanet_proto::Address;

use crate::chain::{parse_name, refusal, Queued, Submission};
use crate::controller::GroupRequest;
use crate::{err, Daemon};

/// A group as the control API shows it.
pub(crate) fn group_info(
    reg: &Registry,
    name: &Name,
    locals: &[(String, Address)],
    stale: bool,
) -> Option<GroupInfo> {
    let g = reg.group(name)?;
    Some(GroupInfo {
        name: name.as_str().into(),
        admins: g.admins.iter().map(ToString::to_string).collect(),
        members: g.members.iter().map(ToString::to_string).collect(),
        local_members: locals
            .iter()
            .filter(|(_, a)| g.members.contains(a))
            .map(|(n, _)| n.clone())
            .collect(),
        seq: g.seq,
        created_block: g.created_block,
        stale,
        epoch: g.epoch,
        keys: Vec::new(),
    })
}

/// The text of a change in `group log` and JSON.
pub(crate) fn change_name(c: GroupChange) -> &'static str {
    match c {
        GroupChange::Created => "created",
        GroupChange::Added => "added",
        GroupChange::Removed => "removed",
        GroupChange::AdminAdded => "admin-added",
        GroupChange::AdminRemoved => "admin-removed",
    }
}

/// Every group's members, by group name (what `group:NAME` in a policy stands for).
pub(crate) fn members(reg: &Registry) -> HashMap<String, BTreeSet<Address>> {
    reg.groups()
        .map(|(n, g): (&Name, &Group)| (n.as_str().to_owned(), g.members.clone()))
        .collect()
}

impl Daemon {
    /// The chain view's groups and their members now (empty without a chain).
    pub(crate) fn group_members(&self) -> HashMap<String, BTreeSet<Address>> {
        self.chain()
            .ok()
            .and_then(|c| c.registry().ok())
            .map(|(reg, _)| members(&reg))
            .unwrap_or_default()
    }

    pub(crate) fn group_request(&self, req: GroupRequest) -> Result<Queued, api::Error> {
        let (reg, status) = self.chain()?.registry()?;
        let locals = self.locals();
        let stale = status.is_stale();
        let unknown = |name: &Name| {
            err(
                ErrorKind::NotFound,
                &format!(
                    "no group `{name}` on the chain (create it with `metanet group create {name}`)"
                ),
            )
        };
        match req {
            GroupRequest::List { mine } => {
                let groups = reg
                    .groups()
                    .filter_map(|(n, _)| group_info(&reg, n, &locals, stale))
                    .filter(|g| !mine || !g.local_members.is_empty())
                    .collect();
                Ok(Queued::Now(Box::new(Reply::Groups { groups })))
            }
            GroupRequest::Show { name } => {
                let name = parse_name(&name)?;
                let mut g =
                    group_info(&reg, &name, &locals, stale).ok_or_else(|| unknown(&name))?;
                g.keys = self.group_keys.states(name.as_str());
                Ok(Queued::Now(Box::new(Reply::Group(g))))
            }
            GroupRequest::Log { name } => {
                let name = parse_name(&name)?;
                let g = reg.group(&name).ok_or_else(|| unknown(&name))?;
                let mut events: Vec<GroupEventInfo> = g
                    .log
                    .iter()
                    .map(|e| GroupEventInfo {
                        block: e.block,
                        index: e.index,
                        change: change_name(e.kind).into(),
                        subject: e.subject.to_string(),
                        by: e.by.to_string(),
                        epoch: None,
                    })
                    .chain(g.epochs.iter().map(|e| GroupEventInfo {
                        block: e.block,
                        index: e.index,
                        change: "epoch".into(),
                        subject: e.by.to_string(),
                        by: e.by.to_string(),
                        epoch: Some(e.epoch),
                    }))
                    .collect();
                events.sort_by_key(|e| e.index);
                Ok(Queued::Now(Box::new(Reply::GroupLog {
                    name: name.as_str().into(),
                    events,
                })))
            }
            GroupRequest::Create { name, identity } => {
                let name = parse_name(&name)?;
                if reg.group(&name).is_some() {
                    return Err(err(
                        ErrorKind::AlreadyExists,
                        &format!("group `{name}` exists already"),
                    ));
                }
                let local = self.local_named(identity.as_deref())?;
                let claim = self.seal(&reg, local, &Claim::GroupCreate { name: name.clone() })?;
                tracing::info!(group = %name, "creating group");
                Ok(Queued::Write(Submission::Group { name, claim }))
            }
            GroupRequest::Change {
                name,
                member,
                change,
                identity,
            } => {
                let name = parse_name(&name)?;
                let g = reg.group(&name).ok_or_else(|| unknown(&name))?;
                let member = self.target(&member)?;
                if let Some(e) = refusal(&reg, &member, &member.to_string()) {
                    return Err(e);
                }
                let local = self.admin_of(g, &name, identity.as_deref())?;
                let seq = g.seq;
                let claim = match change {
                    GroupChange::Added => Claim::GroupAdd {
                        name: name.clone(),
                        seq,
                        member,
                    },
                    GroupChange::Removed => Claim::GroupRemove {
                        name: name.clone(),
                        seq,
                        member,
                    },
                    GroupChange::AdminAdded => Claim::AdminAdd {
                        name: name.clone(),
                        seq,
                        member,
                    },
                    GroupChange::AdminRemoved | GroupChange::Created => Claim::AdminRemove {
                        name: name.clone(),
                        seq,
                        member,
                    },
                };
                let claim = self.seal(&reg, local, &claim)?;
                tracing::info!(group = %name, %member, change = change_name(change), "changing group");
                Ok(Queued::Write(Submission::Group { name, claim }))
            }
        }
    }

    /// The local identity that signs a change of `g`: `identity` if it is an admin, else
    /// the first local admin.
    fn admin_of(
        &self,
        g: &Group,
        name: &Name,
        identity: Option<&str>,
    ) -> Result<LocalId, api::Error> {
        let is_admin = |l: LocalId| {
            self.node
                .identity(l)
                .is_some_and(|i| g.admins.contains(&i.address()))
        };
        if let Some(n) = identity {
            let local = self.local_named(Some(n))?;
            return if is_admin(local) {
                Ok(local)
            } else {
                Err(err(
                    ErrorKind::Forbidden,
                    &format!("identity `{n}` is not an admin of group `{name}`: ask one of its admins (metanet group show {name})"),
                ))
            };
        }
        self.names
            .iter()
            .map(|(_, l)| l)
            .find(|&l| is_admin(l))
            .ok_or_else(|| {
                err(
                    ErrorKind::Forbidden,
                    &format!("not an admin of group `{name}`: no identity of this metanetd is one; ask one of its admins (metanet group show {name})"),
                )
            })
    }

    fn seal(&self, reg: &Registry, local: LocalId, c: &Claim) -> Result<Vec<u8>, api::Error> {
        let id = self
            .node
            .identity(local)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?;
        if let Some(e) = refusal(reg, &id.address(), "this identity") {
            return Err(e);
        }
        claim::seal(id, &reg.params().registry, c)
            .map_err(|e| err(ErrorKind::Internal, &e.to_string()))
    }
}
