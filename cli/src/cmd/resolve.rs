//! `metanet resolve <address|name|ipv6>`: the verified peer record the registry holds
//! for a peer, and where it came from (a name is resolved on chain by the daemon first). Exits non-zero with a clear message when there is none.

use std::io::Write;

use anyhow::Result;
use metanet_proto::control::RecordInfo;
use metanet_proto::record::{Protocol, Service};

use super::{parse_target, unix_now, write_json, Context};

/// Arguments of `resolve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The peer's `mn1…` address, registered name or overlay IPv6.
    pub(crate) target: String,
}

/// Run `resolve`.
pub(crate) fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<()> {
    let target = parse_target(&args.target)?;
    let record = ctx.client().record(target)?;
    if ctx.json {
        return write_json(out, &record);
    }
    write!(out, "{}", render(&record, unix_now()))?;
    Ok(())
}

/// `http 80/tcp`.
pub(crate) fn service(s: &Service) -> String {
    let proto = match s.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{} {}/{proto}", s.name, s.port)
}

/// The human form of a record, as of Unix time `now`.
pub(crate) fn render(r: &RecordInfo, now: u64) -> String {
    let mut s = format!(
        "address:     {}\nipv6:        {}\npublic key:  {}\nnoise key:   {}\n",
        r.address, r.ipv6, r.public_key, r.noise_key
    );
    if r.endpoints.is_empty() {
        s.push_str("endpoints:   none (hidden IP): it is reached through its relays\n");
    } else {
        let list: Vec<String> = r.endpoints.iter().map(|e| e.to_string()).collect();
        s.push_str(&format!("endpoints:   {}\n", list.join(", ")));
    }
    for svc in &r.services {
        s.push_str(&format!("service:     {}\n", service(svc)));
    }
    if !r.routes.is_empty() || r.exit {
        let exit = if r.exit { " (an exit)" } else { "" };
        s.push_str(&format!("routes:      {}{exit}\n", r.routes.join(", ")));
    }
    let left = r.not_after.saturating_sub(now);
    s.push_str(&format!(
        "seq:         {}\nvalid for:   {}m {}s\nsource:      {}\n",
        r.seq,
        left / 60,
        left % 60,
        r.source
    ));
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use metanet_proto::Address;

    use super::*;

    fn record(endpoints: Vec<std::net::SocketAddr>) -> RecordInfo {
        let a = Address::from_public_key(&[2; 32]);
        RecordInfo {
            address: a.to_string(),
            ipv6: a.ipv6(),
            public_key: "11".repeat(32),
            noise_key: "22".repeat(32),
            endpoints,
            services: vec![Service {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            seq: 7,
            not_after: 1000,
            source: "dht 12D3KooWx".into(),
            routes: vec!["198.18.50.0/24".into()],
            exit: true,
        }
    }

    #[test]
    fn renders_endpoints_services_and_source() {
        let text = render(&record(vec!["198.18.0.2:51820".parse().unwrap()]), 880);
        assert!(text.contains("endpoints:   198.18.0.2:51820"), "{text}");
        assert!(text.contains("service:     http 80/tcp"), "{text}");
        assert!(text.contains("valid for:   2m 0s"), "{text}");
        assert!(text.contains("source:      dht 12D3KooWx"), "{text}");
        assert!(
            text.contains("routes:      198.18.50.0/24 (an exit)"),
            "{text}"
        );
    }

    #[test]
    fn hidden_record_says_why_it_cannot_be_reached() {
        let text = render(&record(vec![]), 0);
        assert!(text.contains("hidden IP"), "{text}");
        assert!(text.contains("relays"), "{text}");
    }
}
