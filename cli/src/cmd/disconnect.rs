//! `metanet disconnect <address> [--identity NAME]`: ask the daemon to forget a peer.

use std::io::Write;

use anyhow::Result;
use metanet_proto::control::Command;

use super::{parse_target, write_json, Context, Resolve};
use crate::state;

/// Arguments of `disconnect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The peer's `mn1…` address (or its overlay IPv6).
    pub(crate) address: String,
    /// The local identity the peer belongs to (default: the default identity).
    #[arg(long, value_name = "NAME")]
    pub(crate) identity: Option<String>,
}

/// Run `disconnect`.
pub(crate) fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<()> {
    let target = parse_target(&args.address)?;
    if let Some(name) = &args.identity {
        state::validate_name(name)?;
    }
    let client = ctx.client();
    let address = target.resolve(&client)?;
    client.done(Command::Disconnect {
        address: address.into(),
        identity: args.identity,
    })?;
    if ctx.json {
        return write_json(out, &serde_json::json!({ "disconnected": address }));
    }
    writeln!(out, "disconnected from {address}")?;
    Ok(())
}
