//! `metanet policy show`: each identity's access policy — who may connect (the allow
//! list and what its names resolve to now) and the inbound rules — with what each
//! refused or decided.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use metanet_proto::control::{Command as Api, PolicyInfo, Reply};

use super::{table, write_json, Context};

/// `metanet policy …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Each identity's allow list and inbound rules, with their counters.
    Show,
}

/// Run a `policy` subcommand.
pub(crate) fn run(ctx: &Context, command: Command, out: &mut dyn Write) -> Result<()> {
    match command {
        Command::Show => {
            let Reply::Policies { policies } = ctx.client().request(Api::PolicyShow)? else {
                anyhow::bail!("metanetd answered policy show with something else");
            };
            if ctx.json {
                return write_json(out, &policies);
            }
            write!(out, "{}", render(&policies))?;
            Ok(())
        }
    }
}

/// The human form of `policy show`.
pub(crate) fn render(policies: &[PolicyInfo]) -> String {
    let mut s = String::new();
    for p in policies {
        let who = if p.open {
            "everyone may connect".to_owned()
        } else {
            format!(
                "allow: {} ({} addresses now)",
                p.allow.clone().unwrap_or_default().join(", "),
                p.allowed.len()
            )
        };
        s.push_str(&format!(
            "identity {}: {who}; refused {}\n",
            p.identity, p.refused
        ));
        if !p.unresolved.is_empty() {
            s.push_str(&format!(
                "  unresolved (admit nobody): {}\n",
                p.unresolved.join(", ")
            ));
        }
        for c in &p.closed {
            let previous = c
                .previous
                .map_or(String::new(), |e| format!(", epoch {e} still accepted"));
            s.push_str(&format!(
                "  closed group {}: epoch {}, {} members use its key{previous}\n",
                c.group, c.epoch, c.members
            ));
        }
        if p.rules.is_empty() {
            s.push_str("  inbound: everything passes (no rules)\n");
        } else {
            let rows: Vec<Vec<String>> = p
                .rules
                .iter()
                .map(|r| {
                    vec![
                        r.action.clone(),
                        r.proto.clone(),
                        r.port.clone(),
                        r.from.clone(),
                        r.hits.to_string(),
                    ]
                })
                .collect();
            s.push_str(&table(
                &["ACTION", "PROTO", "PORT", "FROM", "PACKETS"],
                &rows,
            ));
            s.push_str(&format!(
                "  anything else: dropped ({} packets); replies to this identity's own flows pass\n",
                p.default_dropped
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_identity_says_so() {
        let text = render(&[PolicyInfo {
            identity: "default".into(),
            open: true,
            allow: None,
            allowed: vec![],
            unresolved: vec![],
            rules: vec![],
            default_deny: false,
            refused: 0,
            default_dropped: 0,
            closed: vec![metanet_proto::control::ClosedGroupInfo {
                group: "ops".into(),
                epoch: 3,
                previous: Some(2),
                members: 4,
            }],
        }]);
        assert!(text.contains("everyone may connect"), "{text}");
        assert!(text.contains("everything passes"), "{text}");
        assert!(
            text.contains(
                "closed group ops: epoch 3, 4 members use its key, epoch 2 still accepted"
            ),
            "{text}"
        );
    }
}
