//! `metanet name register|transfer|show|list`: names on the chain registry
//! (docs/protocol.md §9), through the daemon.
//!
//! The daemon holds the registry (it follows the chain) and the wallet keys, so every
//! subcommand is one control request. `register` and `transfer` are answered only once
//! the daemon's claims are mined and applied (a registration waits the contract's
//! reveal delay between its commit and its reveal), so they wait up to
//! [`WRITE_TIMEOUT`]. Names are checked here first, so a malformed one fails fast with
//! exit code 2.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use metanet_chain::Name;
use metanet_proto::control::{Command as Ctl, NameInfo, NameStatus};

use super::{parse_target, table, write_json, BadInput, Context, Target};
use crate::state;

/// How long a registration or transfer may take: a few blocks on a real chain.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Name subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Register a name to a local identity (commit, wait the reveal delay, reveal).
    Register {
        /// The name: a-z, 0-9, `-`, dotted for a sub-name of a name you own
        /// (`sony.game`); case-insensitive.
        name: String,
        /// The identity that will own it (default: the default identity).
        #[arg(long, value_name = "NAME")]
        identity: Option<String>,
    },
    /// Hand a name owned by a local identity over to another address.
    Transfer {
        /// The name.
        name: String,
        /// The new owner: an `mn1…` address (or a registered name).
        to: String,
    },
    /// Show what a name resolves to.
    Show {
        /// The name.
        name: String,
    },
    /// List registered names.
    List {
        /// Only the names of this daemon's identities.
        #[arg(long)]
        mine: bool,
    },
}

/// Run a name subcommand.
pub(crate) fn run(ctx: &Context, command: Command, out: &mut dyn Write) -> Result<()> {
    match command {
        Command::Register { name, identity } => {
            let name = parse(&name)?;
            if let Some(id) = &identity {
                state::validate_name(id)?;
            }
            if !ctx.json {
                eprintln!(
                    "registering `{name}`: commit, then reveal after the contract's delay; this takes a few blocks"
                );
            }
            let info = ctx
                .client()
                .with_timeout(WRITE_TIMEOUT)
                .name(Ctl::NameRegister {
                    name: name.to_string(),
                    identity,
                })?;
            print(ctx, out, &info, "registered")
        }
        Command::Transfer { name, to } => {
            let name = parse(&name)?;
            let to = parse_target(&to)?;
            if matches!(to, Target::Ipv6(_)) {
                return Err(BadInput(
                    "a name is transferred to an `mn1…` address (or a name), not an IPv6".into(),
                )
                .into());
            }
            let info = ctx
                .client()
                .with_timeout(WRITE_TIMEOUT)
                .name(Ctl::NameTransfer {
                    name: name.to_string(),
                    to,
                })?;
            print(ctx, out, &info, "transferred")
        }
        Command::Show { name } => {
            let name = parse(&name)?;
            let info = ctx.client().name(Ctl::NameShow {
                name: name.to_string(),
            })?;
            if ctx.json {
                return write_json(out, &info);
            }
            write!(out, "{}", render(&info))?;
            Ok(())
        }
        Command::List { mine } => {
            let names = ctx.client().names(mine)?;
            if ctx.json {
                return write_json(out, &names);
            }
            if names.is_empty() {
                writeln!(
                    out,
                    "{}",
                    if mine {
                        "no names: register one with `metanet name register NAME`"
                    } else {
                        "no names registered"
                    }
                )?;
                return Ok(());
            }
            write!(out, "{}", render_list(&names))?;
            Ok(())
        }
    }
}

fn parse(text: &str) -> Result<Name, BadInput> {
    Name::parse(text.trim()).map_err(|e| BadInput(format!("bad name `{}`: {e}", text.trim())))
}

fn print(ctx: &Context, out: &mut dyn Write, info: &NameInfo, verb: &str) -> Result<()> {
    if ctx.json {
        return write_json(out, info);
    }
    writeln!(
        out,
        "{verb} `{}` to {}{}",
        info.name,
        info.owner,
        info.identity
            .as_ref()
            .map(|i| format!(" (identity `{i}`)"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "reach it as {}.meta ({}) or with `metanet connect {}`",
        info.name, info.ipv6, info.name
    )?;
    Ok(())
}

/// The human form of one name.
pub(crate) fn render(i: &NameInfo) -> String {
    let mut s = format!(
        "name:        {}\nowner:       {}\nipv6:        {}\n",
        i.name, i.owner, i.ipv6
    );
    if let Some(id) = &i.identity {
        s.push_str(&format!("identity:    {id} (local)\n"));
    }
    s.push_str(&format!("status:      {}\n", status(i)));
    s.push_str(&format!(
        "transfers:   {}\nregistered:  block {}\nchanged:     block {}\n",
        i.seq, i.registered_block, i.changed_block
    ));
    if i.stale {
        s.push_str(
            "note:        the chain node is unreachable: this may be out of date (see `metanet status`)\n",
        );
    }
    s
}

fn status(i: &NameInfo) -> String {
    match i.status {
        NameStatus::Registered => "registered".into(),
        NameStatus::Revoked => format!(
            "REVOKED in block {}: the owner's key is revoked, metanet refuses this name",
            i.revoked_block.unwrap_or_default()
        ),
    }
}

fn render_list(names: &[NameInfo]) -> String {
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.owner.clone(),
                i.ipv6.to_string(),
                i.identity.clone().unwrap_or_else(|| "-".into()),
                match i.status {
                    NameStatus::Registered => "registered".into(),
                    NameStatus::Revoked => "revoked".into(),
                },
            ]
        })
        .collect();
    let mut s = table(&["NAME", "OWNER", "IPV6", "IDENTITY", "STATUS"], &rows);
    if names.iter().any(|i| i.stale) {
        s.push_str("note: the chain node is unreachable: this list may be out of date\n");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use metanet_proto::Address;

    use super::*;

    fn info(status: NameStatus) -> NameInfo {
        let a = Address::from_public_key(&[4; 32]);
        NameInfo {
            name: "alice".into(),
            status,
            owner: a.to_string(),
            ipv6: a.ipv6(),
            identity: Some("default".into()),
            seq: 1,
            registered_block: 5,
            changed_block: 9,
            revoked_block: (status == NameStatus::Revoked).then_some(12),
            stale: true,
        }
    }

    #[test]
    fn renders_owner_status_and_staleness() {
        let text = render(&info(NameStatus::Registered));
        assert!(text.contains("name:        alice"), "{text}");
        assert!(text.contains("identity:    default (local)"), "{text}");
        assert!(text.contains("registered:  block 5"), "{text}");
        assert!(text.contains("out of date"), "{text}");
        let text = render(&info(NameStatus::Revoked));
        assert!(text.contains("REVOKED in block 12"), "{text}");
        let list = render_list(&[info(NameStatus::Revoked)]);
        assert!(list.starts_with("NAME"), "{list}");
        assert!(list.contains("revoked"), "{list}");
    }

    #[test]
    fn bad_names_are_bad_input() {
        assert!(parse("Alice").is_ok());
        assert!(parse("-x").unwrap_err().0.contains("bad name `-x`"));
        assert!(parse("mn1x").is_err());
    }
}
