//! `metanet connect <address|name> [--endpoint HOST:PORT] [--identity NAME]`: ask the
//! daemon to open a session with a peer.
//!
//! The address is parsed here first, so a typo fails fast with exit code 2 and never
//! reaches the daemon. An overlay IPv6 is accepted for a peer the daemon already knows;
//! a name registered on the chain is resolved by the daemon's registry, which refuses
//! an owner whose key is revoked.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::Result;
use metanet_proto::control::Command;

use super::{parse_target, write_json, BadInput, Context, Resolve, Target};
use crate::state;

/// Arguments of `connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The peer's `mn1…` address, a registered name, or the overlay IPv6 of a known peer.
    pub(crate) address: String,
    /// Where the peer listens, as IP:PORT or HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) endpoint: Option<String>,
    /// The local identity to connect as (default: the default identity).
    #[arg(long, value_name = "NAME")]
    pub(crate) identity: Option<String>,
}

/// Run `connect`.
pub(crate) fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<()> {
    let target = parse_target(&args.address)?;
    let endpoint = args.endpoint.as_deref().map(parse_endpoint).transpose()?;
    if let Some(name) = &args.identity {
        state::validate_name(name)?;
    }
    let client = ctx.client();
    // The daemon resolves names itself, and refuses revoked keys.
    let address = match target {
        Target::Name(_) => target,
        other => other.resolve(&client)?.into(),
    };
    let peer = client.connect_peer(Command::Connect {
        address,
        endpoint,
        identity: args.identity,
    })?;
    if ctx.json {
        return write_json(out, &peer);
    }
    let state = if peer.connected {
        "connected to"
    } else {
        "connecting to"
    };
    write!(out, "{state} {} ({})", peer.address, peer.ipv6)?;
    if let Some(endpoint) = peer.endpoint {
        write!(out, " at {endpoint}")?;
    }
    writeln!(out, " as `{}`", peer.identity)?;
    writeln!(
        out,
        "check with `metanet ping {}` or `metanet peers`",
        peer.address
    )?;
    Ok(())
}

/// `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT` (resolved now, first address wins).
fn parse_endpoint(text: &str) -> Result<SocketAddr, BadInput> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| BadInput(format!("bad endpoint `{text}`: {why}"));
    if text
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(bad(
            "expected IP:PORT, [IPv6]:PORT or HOST:PORT, e.g. 192.0.2.7:51820".into(),
        ));
    }
    text.to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve it ({e}); give an IP address")))?
        .next()
        .ok_or_else(|| bad("the name has no addresses; give an IP address".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("192.0.2.7:51820").unwrap(),
            "192.0.2.7:51820".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("[2001:db8::1]:9").unwrap(),
            "[2001:db8::1]:9".parse().unwrap()
        );
        assert_eq!(parse_endpoint("localhost:5").unwrap().port(), 5);
        for bad in ["192.0.2.7", "host", "1.2.3.4:99999", "[::1]"] {
            let err = parse_endpoint(bad).unwrap_err();
            assert!(err.0.contains("expected IP:PORT"), "{bad}: {err}");
        }
    }
}
