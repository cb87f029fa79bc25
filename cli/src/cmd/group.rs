//! `metanet group create|add|remove|admin|list|show|log`: groups (networks) on the
//! chain registry (docs/protocol.md §9.8), through the daemon.
//!
//! Changes are claims signed by a local admin of the group and answered once mined and
//! applied (they wait up to [`super::name::WRITE_TIMEOUT`]). `group log` is the
//! traceable record of who joined and left, when, and who admitted them. A policy
//! admits a group's members with `allow = ["group:NAME"]` in metanetd.toml.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use metanet_chain::Name;
use metanet_proto::control::{Command as Ctl, GroupEventInfo, GroupInfo, Reply};

use super::name::WRITE_TIMEOUT;
use super::{parse_target, table, write_json, BadInput, Context};

/// Group subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a group; the identity becomes its first admin and member.
    Create {
        /// The group's name (a-z, 0-9, `-`, dots; its own namespace, apart from names).
        name: String,
        /// The admin identity (default: the default identity).
        #[arg(long, value_name = "NAME")]
        identity: Option<String>,
    },
    /// Add a member (signed by a local admin of the group).
    Add {
        name: String,
        /// An `mn1…` address or a chain name.
        member: String,
        /// Which local admin signs (default: the first local identity that is one).
        #[arg(long, value_name = "NAME")]
        identity: Option<String>,
    },
    /// Remove a member: its sessions with members that admit the group drop within seconds.
    Remove {
        name: String,
        member: String,
        #[arg(long, value_name = "NAME")]
        identity: Option<String>,
    },
    /// Make a member an admin (`--remove`: no longer one; never the last).
    Admin {
        name: String,
        member: String,
        #[arg(long)]
        remove: bool,
        #[arg(long, value_name = "NAME")]
        identity: Option<String>,
    },
    /// List groups.
    List {
        /// Only groups a local identity belongs to.
        #[arg(long)]
        mine: bool,
    },
    /// A group's admins and members.
    Show { name: String },
    /// A group's history: who joined and left, in which block, admitted by whom.
    Log { name: String },
}

fn parse(name: &str) -> Result<Name> {
    Name::parse(name).map_err(|e| BadInput(format!("bad group name `{name}`: {e}")).into())
}

/// Run a group subcommand.
pub(crate) fn run(ctx: &Context, command: Command, out: &mut dyn Write) -> Result<()> {
    let write = || ctx.client().with_timeout(WRITE_TIMEOUT);
    let reply = match command {
        Command::Create { name, identity } => write().request(Ctl::GroupCreate {
            name: parse(&name)?.to_string(),
            identity,
        })?,
        Command::Add {
            name,
            member,
            identity,
        } => write().request(Ctl::GroupAdd {
            name: parse(&name)?.to_string(),
            member: parse_target(&member)?,
            identity,
        })?,
        Command::Remove {
            name,
            member,
            identity,
        } => write().request(Ctl::GroupRemove {
            name: parse(&name)?.to_string(),
            member: parse_target(&member)?,
            identity,
        })?,
        Command::Admin {
            name,
            member,
            remove,
            identity,
        } => write().request(Ctl::GroupAdmin {
            name: parse(&name)?.to_string(),
            member: parse_target(&member)?,
            remove,
            identity,
        })?,
        Command::List { mine } => ctx.client().request(Ctl::GroupList { mine })?,
        Command::Show { name } => ctx.client().request(Ctl::GroupShow {
            name: parse(&name)?.to_string(),
        })?,
        Command::Log { name } => ctx.client().request(Ctl::GroupLog {
            name: parse(&name)?.to_string(),
        })?,
    };
    match reply {
        Reply::Group(g) if ctx.json => write_json(out, &g),
        Reply::Group(g) => Ok(write!(out, "{}", render(&g))?),
        Reply::Groups { groups } if ctx.json => write_json(out, &groups),
        Reply::Groups { groups } => {
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        g.members.len().to_string(),
                        g.admins.len().to_string(),
                        g.local_members.join(",").to_string(),
                    ]
                })
                .collect();
            Ok(write!(
                out,
                "{}",
                table(&["GROUP", "MEMBERS", "ADMINS", "LOCAL"], &rows)
            )?)
        }
        Reply::GroupLog { name, events } if ctx.json => {
            write_json(out, &serde_json::json!({ "name": name, "events": events }))
        }
        Reply::GroupLog { events, .. } => Ok(write!(out, "{}", render_log(&events))?),
        _ => anyhow::bail!("metanetd answered with something else"),
    }
}

/// The human form of `group show`.
pub(crate) fn render(g: &GroupInfo) -> String {
    let mut s = format!(
        "group {} (created in block {}, {} changes{})\n",
        g.name,
        g.created_block,
        g.seq,
        if g.stale { ", STALE" } else { "" }
    );
    for m in &g.members {
        let role = if g.admins.contains(m) {
            "admin"
        } else {
            "member"
        };
        s.push_str(&format!("  {role:6} {m}\n"));
    }
    s.push_str(&format!("key epoch {} on the chain\n", g.epoch));
    for k in &g.keys {
        let state = if k.epoch < g.epoch {
            " (behind: catching up)"
        } else if k.pending {
            " (a commit of its own waits for its claim)"
        } else if k.needs_update {
            " (its own update waits to be ordered)"
        } else {
            ""
        };
        s.push_str(&format!(
            "  {} holds epoch {}{state}\n",
            k.identity, k.epoch
        ));
    }
    s
}

/// The human form of `group log`.
pub(crate) fn render_log(events: &[GroupEventInfo]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let change = match e.epoch {
                Some(n) => format!("epoch {n}"),
                None => e.change.clone(),
            };
            vec![e.block.to_string(), change, e.subject.clone(), e.by.clone()]
        })
        .collect();
    table(&["BLOCK", "CHANGE", "WHO", "BY"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_marks_admins() {
        let g = GroupInfo {
            name: "ops".into(),
            admins: vec!["mn1a".into()],
            members: vec!["mn1a".into(), "mn1b".into()],
            local_members: vec![],
            seq: 1,
            created_block: 7,
            stale: false,
            epoch: 2,
            keys: vec![metanet_proto::control::GroupKeyInfo {
                identity: "default".into(),
                epoch: 1,
                pending: false,
                needs_update: false,
            }],
        };
        let text = render(&g);
        assert!(text.contains("admin  mn1a"), "{text}");
        assert!(text.contains("member mn1b"), "{text}");
        assert!(text.contains("key epoch 2"), "{text}");
        assert!(text.contains("default holds epoch 1 (behind"), "{text}");
    }
}
