//! Access policies from the config (`[[identity]] allow`, `[[identity.rule]]`), resolved
//! to the address sets the node checks (docs/protocol.md §11).
//!
//! Entries name addresses (`mn1…`) or chain names (`alice`); a name is resolved through
//! the chain view the DNS view serves, again at every housekeeping turn, so a name that
//! moves to another address moves its rights with it. `group:NAME` stands for the
//! members of the group on chain (docs/protocol.md §9.8), again at every turn, so a
//! member removed on chain loses its sessions within seconds. An entry that does not
//! resolve matches nobody (and `metanet policy show` lists it as unresolved).

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;

use metanet_proto::control::{
    self as api, ClosedGroupInfo, ErrorKind, PolicyInfo, Reply, RuleInfo,
};
use metanet_proto::node::{Action, Command, Policy, Proto, Rule, Source};
use metanet_proto::Address;
use serde::Deserialize;

use crate::config::IdentityConfig;
use crate::{err, Daemon};

/// One inbound rule as written in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// `any` (default), `tcp`, `udp`, `icmp`.
    pub proto: Option<String>,
    /// Destination port or range (`22`, `8000-8100`, `any`); default any.
    pub port: Option<String>,
    /// Who: `any` (default), an address or a chain name.
    pub from: Option<String>,
    /// `allow` (default) or `deny`.
    pub action: Option<String>,
}

/// Who an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Any,
    Address(Address),
    Name(String),
    Group(String),
}

fn who(text: &str, any_ok: bool) -> Result<Who, String> {
    let t = text.trim();
    if t == "any" {
        return if any_ok {
            Ok(Who::Any)
        } else {
            Err("`any` in an allow list: leave `allow` out to admit everyone".into())
        };
    }
    if let Some(g) = t.strip_prefix("group:") {
        return metanet_proto::name::Name::parse(g)
            .map(|n| Who::Group(n.as_str().to_owned()))
            .map_err(|e| format!("`{t}`: not a group name: {e}"));
    }
    if t.starts_with("mn1") {
        return t
            .parse::<Address>()
            .map(Who::Address)
            .map_err(|e| format!("`{t}`: {e}"));
    }
    metanet_proto::name::Name::parse(t)
        .map(|n| Who::Name(n.as_str().to_owned()))
        .map_err(|e| format!("`{t}` is neither an address nor a chain name: {e}"))
}

fn proto(text: Option<&str>) -> Result<Proto, String> {
    match text.unwrap_or("any") {
        "any" => Ok(Proto::Any),
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "icmp" | "icmpv6" => Ok(Proto::Icmp),
        other => Err(format!("proto `{other}`: use any, tcp, udp or icmp")),
    }
}

fn ports(text: Option<&str>) -> Result<Option<RangeInclusive<u16>>, String> {
    let Some(t) = text.map(str::trim).filter(|t| *t != "any") else {
        return Ok(None);
    };
    let num = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| format!("port `{t}`: use a port (22), a range (8000-8100) or any"))
    };
    let (lo, hi) = match t.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(t)?, num(t)?),
    };
    if lo > hi {
        return Err(format!("port range `{t}` is empty"));
    }
    Ok(Some(lo..=hi))
}

fn action(text: Option<&str>) -> Result<Action, String> {
    match text.unwrap_or("allow") {
        "allow" => Ok(Action::Allow),
        "deny" | "drop" => Ok(Action::Deny),
        other => Err(format!("action `{other}`: use allow or deny")),
    }
}

/// Check an identity's `allow` and `rule` entries (at load and reload).
pub fn validate(id: &IdentityConfig) -> Result<(), String> {
    for a in id.allow.iter().flatten() {
        who(a, false).map_err(|e| format!("identity `{}` allow: {e}", id.name))?;
    }
    if id.rule.len() > metanet_proto::node::MAX_RULES {
        return Err(format!(
            "identity `{}`: at most {} rules",
            id.name,
            metanet_proto::node::MAX_RULES
        ));
    }
    for (i, r) in id.rule.iter().enumerate() {
        let at = |e: String| format!("identity `{}` rule {}: {e}", id.name, i + 1);
        proto(r.proto.as_deref()).map_err(at)?;
        ports(r.port.as_deref()).map_err(at)?;
        who(r.from.as_deref().unwrap_or("any"), true).map_err(at)?;
        action(r.action.as_deref()).map_err(at)?;
    }
    Ok(())
}

/// The node's policy for `id`, names looked up in `names`; also the entries that did
/// not resolve.
pub fn resolve(
    id: &IdentityConfig,
    names: &HashMap<String, Address>,
    groups: &HashMap<String, BTreeSet<Address>>,
) -> (Policy, Vec<String>) {
    let mut unresolved = Vec::new();
    let mut set = |entries: &[&str]| -> BTreeSet<Address> {
        let mut out = BTreeSet::new();
        for e in entries {
            match who(e, true) {
                Ok(Who::Address(a)) => {
                    out.insert(a);
                }
                Ok(Who::Name(n)) => match names.get(&n) {
                    Some(a) => {
                        out.insert(*a);
                    }
                    None => unresolved.push((*e).to_owned()),
                },
                Ok(Who::Group(g)) => match groups.get(&g) {
                    Some(m) => out.extend(m.iter().copied()),
                    None => unresolved.push((*e).to_owned()),
                },
                Ok(Who::Any) | Err(_) => {}
            }
        }
        out
    };
    let allow = id
        .allow
        .as_ref()
        .map(|a| set(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    let rules = id
        .rule
        .iter()
        .filter_map(|r| {
            let from = r.from.as_deref().unwrap_or("any");
            let source = match who(from, true).ok()? {
                Who::Any => Source::Any,
                _ => Source::Addresses(set(&[from])),
            };
            Some(Rule {
                proto: proto(r.proto.as_deref()).ok()?,
                ports: ports(r.port.as_deref()).ok()?,
                from: source,
                action: action(r.action.as_deref()).ok()?,
            })
        })
        .collect();
    (Policy { allow, rules }, unresolved)
}

impl Daemon {
    /// Give each identity its configured policy (names and groups resolved now),
    /// and the open policy back to one whose policy left the config. Only identities
    /// with a policy are looked at, and only what changed is sent to the node: a host
    /// with thousands of open identities pays nothing at each housekeeping turn.
    pub(crate) fn apply_policies(&mut self) {
        let mut wanted: std::collections::BTreeSet<String> = self
            .reg
            .configs()
            .iter()
            .filter(|c| c.allow.is_some() || !c.rule.is_empty())
            .map(|c| c.name.clone())
            .collect();
        wanted.extend(self.policies.keys().cloned());
        if wanted.is_empty() {
            return;
        }
        let names = self.dns_names.read().map(|n| n.clone()).unwrap_or_default();
        let groups = self.group_members();
        for name in wanted {
            let Ok(local) = self.local_named(Some(&name)) else {
                // Configured for an identity that does not exist (yet).
                self.policies.remove(&name);
                continue;
            };
            let (policy, unresolved) = resolve(&self.reg.config_of(&name), &names, &groups);
            let open = policy == Policy::default();
            match self.policies.get_mut(&name) {
                Some((p, u)) if *p == policy => {
                    *u = unresolved;
                    continue;
                }
                None if open => continue,
                _ => {}
            }
            if let Err(e) = self.node.handle_command(Command::SetPolicy {
                local,
                policy: policy.clone(),
            }) {
                tracing::error!(identity = %name, error = %e, "cannot set the access policy");
                continue;
            }
            tracing::info!(
                identity = %name,
                allow = policy.allow.as_ref().map_or("everyone".to_owned(), |a| format!("{} addresses", a.len())),
                rules = policy.rules.len(),
                ?unresolved,
                "access policy"
            );
            if open {
                self.policies.remove(&name);
            } else {
                self.policies.insert(name, (policy, unresolved));
            }
        }
    }

    /// Forget what identity `name` was given (it was removed, or the node holds it
    /// anew after a key rotation, with the open policy).
    pub(crate) fn forget_policy(&mut self, name: &str) {
        self.policies.remove(name);
    }

    /// `metanet policy show`.
    pub(crate) fn policy_show(&self) -> Result<Reply, api::Error> {
        let mut out = Vec::new();
        for (name, local) in self.names.iter() {
            let cfg = self.reg.config_of(name);
            let (policy, counts, closed) = self
                .node
                .policy(local)
                .map_err(|e| err(ErrorKind::Timeout, &e.to_string()))?
                .unwrap_or_default();
            let unresolved = self
                .policies
                .get(name)
                .map(|(_, u)| u.clone())
                .unwrap_or_default();
            let rules = cfg
                .rule
                .iter()
                .zip(policy.rules.iter())
                .enumerate()
                .map(|(i, (c, r))| RuleInfo {
                    proto: c.proto.clone().unwrap_or_else(|| "any".into()),
                    port: c.port.clone().unwrap_or_else(|| "any".into()),
                    from: c.from.clone().unwrap_or_else(|| "any".into()),
                    action: match r.action {
                        Action::Allow => "allow".into(),
                        Action::Deny => "deny".into(),
                    },
                    hits: counts.rule_hits.get(i).copied().unwrap_or(0),
                })
                .collect();
            out.push(PolicyInfo {
                identity: name.to_owned(),
                open: policy.allow.is_none(),
                allow: cfg.allow.clone(),
                allowed: policy
                    .allow
                    .iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect(),
                unresolved,
                rules,
                default_deny: !policy.rules.is_empty(),
                refused: counts.refused,
                default_dropped: counts.default_dropped,
                closed: closed
                    .into_iter()
                    .map(|k| ClosedGroupInfo {
                        group: k.group,
                        epoch: k.epoch,
                        previous: k.previous,
                        members: k.members,
                    })
                    .collect(),
            });
        }
        Ok(Reply::Policies { policies: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(allow: Option<Vec<&str>>, rule: Vec<RuleConfig>) -> IdentityConfig {
        IdentityConfig {
            name: "default".into(),
            allow: allow.map(|a| a.into_iter().map(str::to_owned).collect()),
            rule,
            ..Default::default()
        }
    }

    #[test]
    fn entries_parse_and_say_what_is_wrong() {
        let a = metanet_proto::Identity::generate(&[1; 64]).address();
        let ok = id(
            Some(vec![&a.to_string(), "alice"]),
            vec![RuleConfig {
                proto: Some("tcp".into()),
                port: Some("8000-8100".into()),
                from: Some("alice".into()),
                action: None,
            }],
        );
        assert!(validate(&ok).is_ok());
        for (bad, why) in [
            (
                id(Some(vec!["group:Not A Name"]), vec![]),
                "not a group name",
            ),
            (id(Some(vec!["any"]), vec![]), "leave `allow` out"),
            (id(Some(vec!["mn1nope"]), vec![]), "mn1nope"),
            (
                id(
                    None,
                    vec![RuleConfig {
                        port: Some("90-80".into()),
                        ..Default::default()
                    }],
                ),
                "empty",
            ),
            (
                id(
                    None,
                    vec![RuleConfig {
                        proto: Some("sctp".into()),
                        ..Default::default()
                    }],
                ),
                "use any, tcp",
            ),
        ] {
            let e = validate(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn names_resolve_through_the_chain_view_and_the_rest_is_reported() {
        let a = metanet_proto::Identity::generate(&[1; 64]).address();
        let b = metanet_proto::Identity::generate(&[2; 64]).address();
        let names: HashMap<String, Address> = [("alice".to_owned(), b)].into();
        let c = metanet_proto::Identity::generate(&[3; 64]).address();
        let groups: HashMap<String, BTreeSet<Address>> = [("ops".to_owned(), [c].into())].into();
        let cfg = id(
            Some(vec![
                &a.to_string(),
                "alice",
                "bob",
                "group:ops",
                "group:dev",
            ]),
            vec![RuleConfig {
                proto: Some("tcp".into()),
                port: Some("22".into()),
                from: Some("alice".into()),
                action: None,
            }],
        );
        let (p, unresolved) = resolve(&cfg, &names, &groups);
        assert_eq!(p.allow, Some([a, b, c].into()));
        assert_eq!(unresolved, ["bob", "group:dev"]);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].ports, Some(22..=22));
        assert_eq!(p.rules[0].from, Source::Addresses([b].into()));
        let (open, _) = resolve(&id(None, vec![]), &names, &groups);
        assert_eq!(open, Policy::default());
    }
}
