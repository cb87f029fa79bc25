//! One module per subcommand, plus what they share: the [`Context`] built from the
//! global flags, the [`BadInput`] error for text the user typed wrong, target parsing,
//! and output helpers (tables, durations, sizes, JSON).
//!
//! Commands write to the `out` writer they are given, never to the process's stdout
//! directly, so their output can be tested and a closed pipe is an ordinary error.
//! Warnings and notes go to stderr.

pub(crate) mod attach;
pub(crate) mod chain;
pub(crate) mod connect;
pub(crate) mod disconnect;
pub(crate) mod group;
pub(crate) mod id;
pub(crate) mod name;
pub(crate) mod peers;
pub(crate) mod ping;
pub(crate) mod policy;
pub(crate) mod relay;
pub(crate) mod resolve;
pub(crate) mod status;

use std::io::Write;
use std::path::PathBuf;

use metanet_chain::Name;
use metanet_proto::control::NameStatus;
use metanet_proto::{Address, Target};
use serde::Serialize;

use crate::client::Client;
use crate::state::Store;

/// What every command may use: the global flags.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The daemon's control socket.
    pub(crate) socket: PathBuf,
    /// The state directory, used directly when the daemon is not running.
    pub(crate) state_dir: PathBuf,
    /// Print JSON instead of text.
    pub(crate) json: bool,
}

impl Context {
    /// A client for the daemon.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// The state directory.
    pub(crate) fn store(&self) -> Store {
        Store::new(&self.state_dir)
    }
}

/// Something the user typed cannot be used as given (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadInput(pub String);

/// A peer named on the command line (`metanet_proto::Target`, the one parser the
/// daemon uses too), with an error that says what is wrong (exit code 2).
pub(crate) fn parse_target(text: &str) -> Result<Target, BadInput> {
    Target::parse(text).map_err(|e| BadInput(e.to_string()))
}

/// Resolving a target through the daemon.
pub(crate) trait Resolve {
    /// The full address: as given, looked up among the daemon's peers by IPv6, or the
    /// owner of a name in the daemon's chain registry (refused when revoked).
    fn resolve(&self, client: &Client) -> anyhow::Result<Address>;
}

impl Resolve for Target {
    fn resolve(&self, client: &Client) -> anyhow::Result<Address> {
        let ip = match self {
            Target::Address(a) => return Ok(*a),
            Target::Ipv6(ip) => *ip,
            Target::Name(name) => return name_owner(client, name),
        };
        let peers = client.peers()?;
        let found = peers
            .iter()
            .filter(|p| p.ipv6 == ip)
            .filter_map(|p| p.address.parse::<Address>().ok())
            .next();
        if let Some(a) = found {
            return Ok(a);
        }
        // Not a known peer: the registry holds the record that completes the address.
        match client.record(Target::Ipv6(ip)) {
            Ok(rec) => rec.address.parse::<Address>().map_err(|e| {
                anyhow::anyhow!("the daemon returned a bad address `{}`: {e}", rec.address)
            }),
            Err(crate::client::Error::Daemon(e)) => Err(anyhow::Error::new(BadInput(format!(
                "no known peer and no registry record for overlay address {ip} ({e}): give \
                 the full `mn1…` address and --endpoint"
            )))),
            Err(e) => Err(e.into()),
        }
    }
}

/// The address a chain name stands for, through the daemon's registry.
fn name_owner(client: &Client, name: &Name) -> anyhow::Result<Address> {
    let info = client.name(metanet_proto::control::Command::NameShow {
        name: name.to_string(),
    })?;
    if info.status == NameStatus::Revoked {
        return Err(crate::client::Error::Daemon(metanet_proto::control::Error {
            kind: metanet_proto::control::ErrorKind::Refused,
            message: format!(
                "`{name}` belongs to {}, whose key was revoked on chain in block {}: metanet refuses to use it",
                info.owner,
                info.revoked_block.unwrap_or_default()
            ),
        })
        .into());
    }
    info.owner
        .parse::<Address>()
        .map_err(|e| anyhow::anyhow!("the daemon returned a bad address `{}`: {e}", info.owner))
}

/// Print `value` as pretty JSON followed by a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Lay out rows under headers in left-aligned columns two spaces apart.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// "12s ago", "3m 4s ago", "2h 5m ago", "3d 1h ago" for an event `secs` seconds back.
pub(crate) fn ago(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if secs < 60 {
        format!("{s}s ago")
    } else if secs < 3600 {
        format!("{m}m {s}s ago")
    } else if secs < 86_400 {
        format!("{h}h {m}m ago")
    } else {
        format!("{d}d {h}h ago")
    }
}

/// Bytes in binary units: "512 B", "1.5 KiB", "3.2 GiB".
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Milliseconds from microseconds, with two decimals under 100 ms.
pub(crate) fn millis(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Seconds since the Unix epoch now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn target_parse() {
        let a = Address::from_public_key(&[9; 32]);
        assert_eq!(parse_target(&a.to_string()).unwrap(), Target::Address(a));
        assert_eq!(
            parse_target(&a.ipv6().to_string()).unwrap(),
            Target::Ipv6(a.ipv6())
        );
        let err = parse_target("mn1xyz").unwrap_err().to_string();
        assert!(err.starts_with("bad address `mn1xyz`: "), "{err}");
        let mut typo: Vec<char> = a.to_string().chars().collect();
        typo[12] = if typo[12] == 'q' { 'p' } else { 'q' };
        let typo: String = typo.into_iter().collect();
        let err = parse_target(&typo).unwrap_err().to_string();
        assert!(
            err.contains("checksum does not match: check for a typo"),
            "{err}"
        );
        assert!(parse_target("::1").unwrap_err().0.contains("fd00::/8"));
        assert!(parse_target("fd::zz").is_err());
        assert_eq!(
            parse_target("Alice").unwrap(),
            Target::Name(Name::parse("alice").unwrap())
        );
        assert_eq!(
            parse_target("sony.game").unwrap().to_string(),
            "sony.game".to_owned()
        );
        assert!(parse_target("alice").unwrap().ipv6().is_none());
        assert!(parse_target("al ice").unwrap_err().0.contains("nor a name"));
        // Something that starts like an address is reported as a bad address.
        assert!(parse_target("mn1bob")
            .unwrap_err()
            .0
            .starts_with("bad address `mn1bob`: "));
    }

    #[test]
    fn formats() {
        assert_eq!(ago(5), "5s ago");
        assert_eq!(ago(65), "1m 5s ago");
        assert_eq!(ago(7260), "2h 1m ago");
        assert_eq!(ago(90_000), "1d 1h ago");
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(millis(1234), "1.23 ms");
        assert_eq!(millis(250_000), "250 ms");
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq\n");
    }
}
