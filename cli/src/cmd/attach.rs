//! `metanet attach`, `metanet detach`, `metanet attachments`: network namespaces (a
//! container's, or any `ip netns`) that speak as one identity of this host's daemon.
//!
//! `attach` opens `/dev/net/tun` and a netlink socket inside the namespace (entering it
//! from a short-lived thread when run from the host, which needs root; run inside the
//! namespace with `ip netns exec`, it opens them where it is) and passes both to the
//! daemon, which creates and configures the interface there.

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use metanet_proto::control::{AttachmentInfo, Command, Reply, DEFAULT_INTERFACE};

use super::{table, write_json, BadInput, Context};

/// `metanet attach`.
#[derive(Debug, ClapArgs)]
pub(crate) struct AttachArgs {
    /// The namespace: an `ip netns` name or a path (/run/netns/NAME; /proc/PID/ns/net
    /// only where the daemon can see that process, not under the shipped unit). One
    /// identity per namespace.
    #[arg(long, value_name = "NAME|PATH")]
    pub(crate) netns: String,
    /// The identity it speaks as; created when missing (never the default identity).
    #[arg(long, value_name = "NAME")]
    pub(crate) identity: String,
    /// The interface's name inside the namespace.
    #[arg(long, value_name = "IFNAME", default_value = DEFAULT_INTERFACE)]
    pub(crate) interface: String,
}

/// `metanet detach`.
#[derive(Debug, ClapArgs)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["identity", "netns"])))]
pub(crate) struct DetachArgs {
    /// The attached identity.
    #[arg(long, value_name = "NAME")]
    pub(crate) identity: Option<String>,
    /// Or the namespace (every attachment in it).
    #[arg(long, value_name = "NAME|PATH")]
    pub(crate) netns: Option<String>,
    /// Remove the identity too (its key is deleted).
    #[arg(long)]
    pub(crate) remove_identity: bool,
}

/// Run `metanet attach`.
pub(crate) fn attach(ctx: &Context, a: AttachArgs, out: &mut dyn Write) -> Result<()> {
    if !metanet_attach::valid_netns(&a.netns) {
        return Err(BadInput(format!("bad namespace {:?}", a.netns)).into());
    }
    let path = metanet_attach::resolve(&a.netns);
    let fds = metanet_attach::open_in(&path).map_err(|e| match e {
        metanet_attach::Error::NotFound(_) | metanet_attach::Error::NotNamespace(_) => {
            anyhow::Error::new(BadInput(e.to_string()))
        }
        other => anyhow::Error::new(other),
    })?;
    let command = Command::Attach {
        netns: path.display().to_string(),
        identity: a.identity,
        interface: Some(a.interface),
        container_id: None,
        network: None,
        ephemeral: false,
    };
    let reply = ctx
        .client()
        .request_with_fds(command, &fds.raw())
        .context("attach")?;
    let Reply::Attachment(info) = reply else {
        anyhow::bail!("metanetd answered attach with something else");
    };
    if ctx.json {
        return write_json(out, &info);
    }
    writeln!(
        out,
        "attached {} to identity {} ({}): {} has {}/128 and fd00::/8",
        info.netns, info.identity, info.address, info.interface, info.ipv6
    )?;
    if let Some(dns) = info.dns {
        writeln!(out, ".meta names: nameserver {}", dns.ip())?;
    }
    Ok(())
}

/// Run `metanet detach`.
pub(crate) fn detach(ctx: &Context, a: DetachArgs, out: &mut dyn Write) -> Result<()> {
    let client = ctx.client();
    let names = match (a.identity, a.netns) {
        (Some(name), _) => vec![name],
        (None, Some(netns)) => {
            let path = metanet_attach::resolve(&netns).display().to_string();
            let names: Vec<String> = list(ctx)?
                .into_iter()
                .filter(|i| i.netns == path)
                .map(|i| i.identity)
                .collect();
            if names.is_empty() {
                writeln!(out, "nothing is attached to {path}")?;
            }
            names
        }
        (None, None) => return Err(BadInput("name --identity or --netns".into()).into()),
    };
    for identity in &names {
        client.done(Command::Detach {
            identity: Some(identity.clone()),
            container_id: None,
            network: None,
            remove_identity: a.remove_identity,
        })?;
        if !ctx.json {
            writeln!(out, "detached {identity}")?;
        }
    }
    if ctx.json {
        return write_json(out, &serde_json::json!({ "detached": names }));
    }
    Ok(())
}

fn list(ctx: &Context) -> Result<Vec<AttachmentInfo>> {
    match ctx.client().request(Command::Attachments)? {
        Reply::Attachments { attachments } => Ok(attachments),
        _ => anyhow::bail!("metanetd answered attachments with something else"),
    }
}

/// Run `metanet attachments`.
pub(crate) fn attachments(ctx: &Context, out: &mut dyn Write) -> Result<()> {
    let all = list(ctx)?;
    if ctx.json {
        return write_json(out, &all);
    }
    write!(out, "{}", render(&all))?;
    Ok(())
}

/// The human form of `attachments`.
pub(crate) fn render(all: &[AttachmentInfo]) -> String {
    if all.is_empty() {
        return "no attachments (metanet attach --netns NAME --identity NAME)\n".into();
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            vec![
                a.identity.clone(),
                a.ipv6.to_string(),
                a.netns.clone(),
                a.interface.clone(),
                a.state.clone(),
                a.container_id.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{}", a.tx_packets, a.rx_packets),
            ]
        })
        .collect();
    table(
        &[
            "IDENTITY",
            "IPV6",
            "NETNS",
            "IF",
            "STATE",
            "CONTAINER",
            "TX/RX",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_says_how_to_attach() {
        assert!(render(&[]).contains("metanet attach --netns"));
    }
}
