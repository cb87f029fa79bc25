//! `metanet relay status`: the relay's reservations and counters (on a relay), the
//! relays this daemon's identities use, and its endpoints as others see them.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use metanet_proto::control::RelayInfo;

use super::{bytes, table, write_json, Context};

/// `metanet relay …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Reservations, circuits and forwarded traffic (on a relay); the relays this
    /// daemon's identities reserve with; its NAT as its peers see it.
    Status,
}

/// Run a `relay` subcommand.
pub(crate) fn run(ctx: &Context, command: Command, out: &mut dyn Write) -> Result<()> {
    match command {
        Command::Status => {
            let info = ctx.client().relay_status()?;
            if ctx.json {
                return write_json(out, &info);
            }
            write!(out, "{}", render(&info))?;
            Ok(())
        }
    }
}

/// The human form of `relay status`.
pub(crate) fn render(info: &RelayInfo) -> String {
    let mut s = String::new();
    if info.relay {
        let rate = if info.rate == 0 {
            "no cap".to_owned()
        } else {
            format!("{}/s per client", bytes(info.rate))
        };
        s.push_str(&format!(
            "relay: on ({rate}, {} peers per client)\n  reservations {}  circuits {}  forwarded {} in {} messages\n  dropped: unbound {}  refused {}  over rate {}\n",
            info.sessions,
            info.reservations,
            info.circuits,
            bytes(info.forwarded_bytes),
            info.forwarded_packets,
            info.dropped_unbound,
            info.refused,
            info.rate_limited,
        ));
        if !info.clients.is_empty() {
            let rows: Vec<Vec<String>> = info
                .clients
                .iter()
                .map(|c| {
                    vec![
                        c.address.clone(),
                        c.endpoint.to_string(),
                        format!("{}s", c.expires_in),
                        c.circuits.to_string(),
                        bytes(c.rx_bytes),
                    ]
                })
                .collect();
            s.push_str(&table(
                &["CLIENT", "ENDPOINT", "EXPIRES", "CIRCUITS", "SENT"],
                &rows,
            ));
        }
    } else {
        s.push_str("relay: off (start metanetd with --relay to serve as one)\n");
    }
    if info.using.is_empty() {
        s.push_str("uses no relay (give metanetd --relay-via ADDRESS@HOST:PORT)\n");
    } else {
        for u in &info.using {
            let state = if u.reserved {
                "reserved"
            } else {
                "not reserved"
            };
            s.push_str(&format!(
                "identity {} uses {} ({state})\n",
                u.identity, u.relay
            ));
        }
    }
    let seen: Vec<String> = info.reflexive.iter().map(ToString::to_string).collect();
    s.push_str(&format!(
        "seen by others as: {} (mapping {})\n",
        if seen.is_empty() {
            "-".into()
        } else {
            seen.join(", ")
        },
        info.mapping
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_without_relay_says_how_to_get_one() {
        let text = render(&RelayInfo {
            mapping: "unknown".into(),
            ..Default::default()
        });
        assert!(text.contains("relay: off"), "{text}");
        assert!(text.contains("--relay-via"), "{text}");
    }
}
