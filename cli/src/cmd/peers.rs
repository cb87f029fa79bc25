//! `metanet peers`: the daemon's peers as a table, or as JSON (a list of
//! `control::PeerInfo`).

use std::io::Write;

use anyhow::Result;
use metanet_proto::control::PeerInfo;

use super::{ago, bytes, millis, table, unix_now, write_json, Context};

/// Run `peers`.
pub(crate) fn run(ctx: &Context, out: &mut dyn Write) -> Result<()> {
    let peers = ctx.client().peers()?;
    if ctx.json {
        return write_json(out, &peers);
    }
    write!(out, "{}", render(&peers, unix_now()))?;
    Ok(())
}

/// The human table for `peers`, as of Unix time `now`.
pub(crate) fn render(peers: &[PeerInfo], now: u64) -> String {
    if peers.is_empty() {
        return "no peers: add one with `metanet connect ADDRESS --endpoint HOST:PORT`\n".into();
    }
    // The identity column only matters when there is more than one.
    let many = peers.iter().any(|p| p.identity != peers[0].identity);
    let mut headers = vec![
        "ADDRESS",
        "IPV6",
        "ENDPOINT",
        "STATE",
        "HANDSHAKE",
        "RX",
        "TX",
        "RTT",
        "CIPHER",
        "PQ",
        "PATH",
    ];
    if many {
        headers.insert(0, "IDENTITY");
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            let mut row = vec![
                p.address.clone(),
                p.ipv6.to_string(),
                p.endpoint.map_or_else(|| "-".into(), |e| e.to_string()),
                if p.connected { "up" } else { "down" }.into(),
                p.last_handshake
                    .map_or_else(|| "never".into(), |t| ago(now.saturating_sub(t))),
                bytes(p.rx_bytes),
                bytes(p.tx_bytes),
                p.rtt_us.map_or_else(|| "-".into(), millis),
                p.cipher.clone().unwrap_or_else(|| "-".into()),
                match (&p.pq, p.connected) {
                    (Some(kem), _) => kem.clone(),
                    (None, true) => "classical".into(),
                    (None, false) => "-".into(),
                },
                if p.path.is_empty() {
                    "-".into()
                } else {
                    p.path.clone()
                },
            ];
            if many {
                row.insert(0, p.identity.clone());
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use metanet_proto::Address;

    use super::*;

    pub(crate) fn peer(seed: u8, identity: &str) -> PeerInfo {
        let a = Address::from_public_key(&[seed; 32]);
        PeerInfo {
            identity: identity.into(),
            address: a.to_string(),
            ipv6: a.ipv6(),
            endpoint: Some("192.0.2.1:51820".parse().unwrap()),
            last_handshake: Some(1000),
            connected: true,
            rx_bytes: 2048,
            tx_bytes: 10,
            rtt_us: Some(1500),
            cipher: Some("aes-256-gcm".into()),
            pq: Some("ml-kem-512".into()),
            path: "direct".into(),
        }
    }

    #[test]
    fn table_has_every_column() {
        let p = peer(1, "default");
        let text = render(std::slice::from_ref(&p), 1012);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("ADDRESS"));
        let row = lines.next().unwrap();
        for want in [
            p.address.as_str(),
            &p.ipv6.to_string(),
            "192.0.2.1:51820",
            "up",
            "12s ago",
            "2.0 KiB",
            "10 B",
            "1.50 ms",
            "aes-256-gcm",
            "ml-kem-512",
        ] {
            assert!(row.contains(want), "{want} missing from {row}");
        }
        assert!(!text.contains("IDENTITY"));
        let mut q = peer(2, "work");
        q.endpoint = None;
        q.last_handshake = None;
        q.rtt_us = None;
        let text = render(&[p, q], 1012);
        assert!(text.starts_with("IDENTITY"));
        assert!(text.contains("never"));
        assert!(render(&[], 0).contains("metanet connect"));
    }
}
