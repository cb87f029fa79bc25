//! The overlay filter: packets to or from this node's overlay addresses are accepted
//! only through its TUN (or loopback).
//!
//! Linux is a weak host: it accepts a packet for any of its addresses on any
//! interface. Without this filter a neighbour on the underlay segment could send a
//! plain IPv6 packet with a peer's overlay source, or to this node's overlay address,
//! straight to `eth0`, and an application bound to the overlay address would take it
//! for tunnel traffic. metanetd installs an nftables table `ip6 metanet_<tun>` with a
//! prerouting chain (before conntrack) that drops, on every interface but the TUN and
//! `lo`, packets whose destination or source is one of the node's identities'
//! addresses; the set follows identities as they come and go, and the table is removed
//! when the daemon stops. Other `fd00::/8` traffic (a LAN's own ULA prefix) is left
//! alone. The rules are applied with `nft -f -`, which needs CAP_NET_ADMIN (inherited
//! from the daemon).

use std::io::Write;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};

/// An installed filter; dropping it removes the table.
#[derive(Debug)]
pub struct OverlayFilter {
    table: String,
    tun: String,
}

/// Why the filter could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run nft (install nftables, or set overlay-filter = false): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the overlay filter: {0}")]
    Nft(String),
}

impl OverlayFilter {
    /// Install the table for `tun` guarding `addresses` (replacing a table a crashed
    /// daemon left).
    pub fn install(tun: &str, addresses: &[Ipv6Addr]) -> Result<Self, Error> {
        let f = OverlayFilter {
            table: table_name(tun),
            tun: tun.to_owned(),
        };
        nft(&ruleset(&f.table, &f.tun, addresses))?;
        Ok(f)
    }

    /// Guard exactly `addresses` from now on.
    pub fn update(&self, addresses: &[Ipv6Addr]) -> Result<(), Error> {
        let mut script = format!("flush set ip6 {} local\n", self.table);
        if !addresses.is_empty() {
            script.push_str(&format!(
                "add element ip6 {} local {{ {} }}\n",
                self.table,
                list(addresses)
            ));
        }
        nft(&script)
    }

    /// The name of the nftables table.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// The whole table `table` for `tun`: replaces one of that name (a crashed daemon's)
/// in the same transaction.
fn ruleset(table: &str, tun: &str, addresses: &[Ipv6Addr]) -> String {
    let elements = if addresses.is_empty() {
        String::new()
    } else {
        format!("\t\telements = {{ {} }}\n", list(addresses))
    };
    format!(
        "add table ip6 {t}\ndelete table ip6 {t}\n\
             table ip6 {t} {{\n\
             \tset local {{\n\t\ttype ipv6_addr\n{elements}\t}}\n\
             \tchain prerouting {{\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\tiifname {{ \"{tun}\", \"lo\" }} accept\n\
             \t\tip6 daddr @local counter drop comment \"overlay destination not via {tun}\"\n\
             \t\tip6 saddr @local counter drop comment \"overlay source not via {tun}\"\n\
             \t}}\n}}\n",
        t = table,
    )
}

impl Drop for OverlayFilter {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table ip6 {}\n", self.table)) {
            tracing::warn!(table = %self.table, error = %e, "cannot remove the overlay filter");
        }
    }
}

/// `metanet_` and the TUN name with anything but ASCII letters, digits and `_` as `_`.
fn table_name(tun: &str) -> String {
    let name: String = tun
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("metanet_{name}")
}

fn list(addresses: &[Ipv6Addr]) -> String {
    addresses
        .iter()
        .map(Ipv6Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn nft(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::Nft(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(Error::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(Error::Nft(
        err.lines().take(3).collect::<Vec<_>>().join(" / "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_nft_identifiers() {
        assert_eq!(table_name("metanet0"), "metanet_metanet0");
        assert_eq!(table_name("mn-a.b"), "metanet_mn_a_b");
    }

    #[test]
    fn ruleset_accepts_the_tun_and_guards_every_address() {
        let a: Ipv6Addr = "fd12::1".parse().unwrap();
        let b: Ipv6Addr = "fd34::2".parse().unwrap();
        let r = ruleset(&table_name("mn0"), "mn0", &[a, b]);
        assert!(r.contains("iifname { \"mn0\", \"lo\" } accept"), "{r}");
        assert!(r.contains("elements = { fd12::1, fd34::2 }"), "{r}");
        assert!(r.contains("ip6 daddr @local counter drop"));
        assert!(r.contains("ip6 saddr @local counter drop"));
        assert!(!ruleset("t", "mn0", &[]).contains("elements"));
    }
}
