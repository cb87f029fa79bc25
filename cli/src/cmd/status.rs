//! `metanet status`: the daemon's version, interface, port, identities and peers, or
//! the whole `control::Status` as JSON.

use std::io::Write;

use anyhow::Result;
use metanet_proto::control::Status;

use super::{unix_now, write_json, Context};

/// Run `status`.
pub(crate) fn run(ctx: &Context, out: &mut dyn Write) -> Result<()> {
    let status = ctx.client().status()?;
    if ctx.json {
        return write_json(out, &status);
    }
    write!(out, "{}", render(&status, unix_now()))?;
    Ok(())
}

/// The human form of `status`, as of Unix time `now`.
pub(crate) fn render(status: &Status, now: u64) -> String {
    let mut s = format!(
        "metanetd {}: interface {}, UDP port {}\n",
        status.version, status.interface, status.port
    );
    s.push_str("identities:\n");
    for i in &status.identities {
        s.push_str(&format!(
            "  {} {}  {}  {}\n",
            if i.default { "*" } else { " " },
            i.name,
            i.address,
            i.ipv6
        ));
    }
    if let Some(dht) = &status.dht {
        s.push_str(&format!(
            "dht: peer id {}, {} peers, {} records\n",
            dht.peer_id, dht.peers, dht.records
        ));
        for a in &dht.listen_addrs {
            s.push_str(&format!("  listening on {a}/p2p/{}\n", dht.peer_id));
        }
    }
    if let Some(c) = &status.chain {
        s.push_str(&format!(
            "chain: {} via {}, chain id {}
",
            c.contract,
            c.rpc,
            c.chain_id.map_or("unknown".into(), |i| i.to_string())
        ));
        s.push_str(&format!(
            "  synced to block {}, {} claims, {} names
",
            c.synced_block.map_or("none".into(), |b| b.to_string()),
            c.claims,
            c.names
        ));
        if c.stale {
            s.push_str(&format!(
                "  STALE: {} (answering from the last synced state{})
",
                c.error.as_deref().unwrap_or("not synced yet"),
                c.stale_since
                    .map(|t| format!(", failing since {}", super::ago(now.saturating_sub(t))))
                    .unwrap_or_default()
            ));
        }
        if let Some(a) = &c.funding_account {
            s.push_str(&format!(
                "  funding account {a}
"
            ));
        }
    }
    if let Some(d) = &status.dns {
        s.push_str(&format!(
            "dns: .meta view on {}: {}; host integration {}: {}\n",
            d.listen, d.state, d.system, d.system_state
        ));
    }
    let listed = status.peers.len() as u64;
    let total = status.peer_count.unwrap_or(listed);
    let up = status
        .peers_up
        .unwrap_or_else(|| status.peers.iter().filter(|p| p.connected).count() as u64);
    s.push_str(&format!("peers: {total} ({up} up)"));
    if total > listed {
        s.push_str(&format!(", {listed} shown: `metanet peers` lists all"));
    }
    s.push('\n');
    if !status.peers.is_empty() {
        for line in super::peers::render(&status.peers, now).lines() {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
    }
    let counters: Vec<_> = status.counters.iter().filter(|(_, v)| **v != 0).collect();
    if !counters.is_empty() {
        s.push_str("counters:\n");
        for (name, value) in counters {
            s.push_str(&format!("  {name} {value}\n"));
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use metanet_proto::control::IdentityInfo;
    use metanet_proto::Address;

    use super::*;

    #[test]
    fn renders_everything() {
        let a = Address::from_public_key(&[1; 32]);
        let status = Status {
            version: "0.1.0".into(),
            interface: "metanet0".into(),
            port: 51820,
            identities: vec![IdentityInfo {
                name: "default".into(),
                address: a.to_string(),
                ipv6: a.ipv6(),
                public_key: "00".repeat(32),
                default: true,
                services: vec![],
                endpoints: vec![],
                hidden: false,
                noise_key: None,
            }],
            peers: vec![],
            peer_count: None,
            peers_up: None,
            counters: [("rx_packets".into(), 3), ("dropped".into(), 0)].into(),
            dht: Some(metanet_proto::control::DhtStatus {
                peer_id: "12D3KooWtest".into(),
                listen_addrs: vec!["/ip4/198.18.0.1/tcp/51821".into()],
                peers: 4,
                records: 2,
            }),
            chain: Some(metanet_proto::control::ChainStatus {
                rpc: "http://198.18.0.9:8545".into(),
                contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3".into(),
                chain_id: Some(31337),
                synced_block: Some(41),
                head_block: Some(41),
                claims: 6,
                names: 2,
                stale: true,
                error: Some("RPC node unreachable".into()),
                last_success: Some(0),
                stale_since: Some(0),
                funding_account: None,
            }),
            dns: Some(metanet_proto::control::DnsStatus {
                listen: "[fd00::1]:53".into(),
                state: "serving".into(),
                system: "hosts".into(),
                system_state: "active".into(),
            }),
        };
        let text = render(&status, 0);
        // A hub's status lists some peers and counts them all.
        let big = Status {
            peer_count: Some(4000),
            peers_up: Some(3990),
            ..status.clone()
        };
        assert!(
            render(&big, 0).contains("peers: 4000 (3990 up), 0 shown: `metanet peers` lists all")
        );
        assert!(text.contains("metanet0"));
        assert!(text.contains("51820"));
        assert!(text.contains(&format!("* default  {a}")));
        assert!(text.contains("peers: 0 (0 up)"));
        assert!(text.contains("rx_packets 3"));
        assert!(!text.contains("dropped"));
        assert!(text.contains("dht: peer id 12D3KooWtest, 4 peers, 2 records"));
        assert!(text.contains("/ip4/198.18.0.1/tcp/51821"));
        assert!(
            text.contains("chain: 0x5fbdb2315678afecb367f032d93f642f64180aa3 via http://198.18.0.9:8545, chain id 31337"),
            "{text}"
        );
        assert!(
            text.contains("synced to block 41, 6 claims, 2 names"),
            "{text}"
        );
        assert!(text.contains("STALE"), "{text}");
        assert!(
            text.contains(
                "dns: .meta view on [fd00::1]:53: serving; host integration hosts: active"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_from_a_daemon_without_dns_still_parses() {
        let json = r#"{"version":"0.1.0","interface":"metanet0","port":51820,
            "identities":[],"peers":[],"counters":[]}"#;
        let status: Status = serde_json::from_str(json).unwrap();
        assert_eq!(status.dns, None);
        assert!(!render(&status, 0).contains("dns:"));
    }
}
