//! `metanetd.toml`: strict (unknown keys are errors), kebab-case, every field optional
//! with the default documented here and in docs/operations.md. Flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default config file.
pub const DEFAULT_CONFIG: &str = "/etc/metanet/metanetd.toml";
/// Default state directory (keys, caches).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/metanet";
/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/metanet/metanetd.sock";
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 51820;
/// Default TUN name.
pub const DEFAULT_TUN: &str = "metanet0";
/// Default DHT port (TCP).
pub const DEFAULT_DHT_PORT: u16 = 51821;
/// Tunnel MTU when no underlay interface tells: 1500 - [`OVERHEAD`].
pub const DEFAULT_MTU: u16 = 1376;
/// Default `socket-buffer`: 8 MiB.
pub const DEFAULT_SOCKET_BUFFER: usize = 8 << 20;
/// Smallest accepted `socket-buffer`: 64 KiB.
pub const MIN_SOCKET_BUFFER: usize = 64 << 10;
/// Largest accepted `socket-buffer`: 256 MiB.
pub const MAX_SOCKET_BUFFER: usize = 256 << 20;
/// Bytes the tunnel adds to a packet on the worst-case underlay: 40 IPv6 + 8 UDP + 32
/// metanet data header and tag, + 44 for a relay header (docs/protocol.md §10.2), so
/// that a peer can move between a direct path and a relay without a change of MTU.
pub const OVERHEAD: u16 = 124;

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    /// UDP listen port (IPv4 and IPv6). Default 51820.
    pub port: Option<u16>,
    /// TUN interface name. Default `metanet0`.
    pub tun: Option<String>,
    /// Tunnel MTU in bytes. Default: the underlay's minus 124 (1376 on 1500).
    pub mtu: Option<u16>,
    /// State directory. Default `/var/lib/metanet`.
    pub state_dir: Option<PathBuf>,
    /// Control socket path. Default `/run/metanet/metanetd.sock`.
    pub socket: Option<PathBuf>,
    /// UDP socket buffer size in bytes, 64 KiB to 256 MiB. Default 8 MiB.
    pub socket_buffer: Option<usize>,
    /// Data cipher policy: `auto` (default: AES-256-GCM with peers that offer it when
    /// this CPU has AES instructions, else ChaCha20-Poly1305), `aes-256-gcm` (offer and
    /// accept it regardless) or `chacha20-poly1305` (never use AES).
    pub cipher: Option<CipherPolicy>,
    /// Post-quantum hybrid handshake (docs/protocol.md §5.7): `auto` (default: offer
    /// ML-KEM-512, accept hybrid and classical), `required` (refuse classical
    /// handshakes both ways) or `off` (never offer, answer offers classically).
    pub pq: Option<PqPolicy>,
    /// DHT listen port (TCP, IPv4 and IPv6). Default 51821.
    pub dht_port: Option<u16>,
    /// DHT nodes to join through, as multiaddrs (`/ip4/198.18.0.1/tcp/51821`, with an
    /// optional `/p2p/<peer id>`). Flags add to these.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Where the `.meta` DNS view listens. Default: the first identity's overlay IPv6,
    /// port 53.
    pub dns_listen: Option<SocketAddr>,
    /// Where the metrics endpoint (`GET /metrics`, Prometheus text) listens, as
    /// `"ADDR:PORT"`. Default: off. It has no authentication: use loopback or an
    /// overlay address.
    pub metrics_listen: Option<String>,
    /// Drop packets to or from this node's overlay addresses that do not come through
    /// its TUN (an nftables table; needs `nft`). Default: true.
    pub overlay_filter: Option<bool>,
    /// How the host's resolver is pointed at the DNS view: `auto` (default),
    /// `resolved`, `hosts`, `resolvconf` or `off` (docs/operations.md).
    pub dns_system: Option<DnsSystem>,
    /// The hosts file `dns-system = "hosts"` manages. Default `/etc/hosts`.
    pub hosts_file: Option<PathBuf>,
    /// JSON-RPC node of the chain registry (`http://HOST:PORT`). Default: none (no
    /// names, no revocation checks). Needs `chain-contract`.
    pub chain_rpc: Option<String>,
    /// Address of the `MetanetRegistry` contract (`0x…`, from `metanet chain deploy`).
    pub chain_contract: Option<String>,
    /// File holding the funding key: 64 hex digits of an EVM account key (mode 0600)
    /// that pays gas for name registrations, transfers and revocations. Default: none
    /// (the daemon follows the chain but submits nothing).
    pub chain_key: Option<PathBuf>,
    /// Blocks behind the chain head that the follower waits for before it applies
    /// them (reorg safety on a public chain). Default 0: a local dev node that mines
    /// only on transactions would otherwise never confirm a registration.
    pub chain_confirmations: Option<u64>,
    /// Users (uids) besides root allowed to read and change keys, spend gas and change
    /// what is published over the control socket (`id new|rm|export|import|rotate|revoke`,
    /// `name register|transfer`). Default: none.
    #[serde(default)]
    pub operator_uids: Vec<u32>,
    /// Groups (names or gids) whose members hold the same operator rights. Default: none.
    #[serde(default)]
    pub operator_groups: Vec<String>,
    /// Serve as a relay for NATed and hidden identities (docs/protocol.md §10.2): run it
    /// where its endpoint is public. Default false.
    pub relay: Option<bool>,
    /// Relay: bytes per second one client may send through it (0: no cap). Default
    /// 125000000 (1 Gbit/s).
    pub relay_rate: Option<u64>,
    /// Relay: peers one client may relay to at once. Default 64.
    pub relay_sessions: Option<usize>,
    /// Relay: reservations held at once. Default 4096.
    pub relay_clients: Option<usize>,
    /// Relays this daemon's identities reserve with and list in their records, as
    /// `"ADDRESS@HOST:PORT"`. Flags (`--relay-via`) add to these.
    #[serde(default)]
    pub relays: Vec<String>,
    /// Hide the default identity's endpoints (as `hidden` in its `[[identity]]`).
    pub hidden: Option<bool>,
    /// Seconds between keepalives on idle paths that cross a NAT (relayed peers, and
    /// every peer once this daemon has seen itself behind a NAT); 0 turns them off.
    /// Default 25.
    pub keepalive: Option<u64>,
    /// Peers to connect to at start.
    #[serde(default)]
    pub peer: Vec<StaticPeer>,
    /// What the daemon publishes for its identities.
    #[serde(default)]
    pub identity: Vec<IdentityConfig>,
}

/// Whether the daemon uses the hybrid ML-KEM handshake (docs/protocol.md §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum PqPolicy {
    /// Offer hybrid handshakes, accept both kinds; fall back to classical for peers
    /// that do not answer hybrid initiations.
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// Hybrid handshakes only, in both directions.
    #[serde(rename = "required")]
    #[value(name = "required")]
    Required,
    /// Classical handshakes only.
    #[serde(rename = "off")]
    #[value(name = "off")]
    Off,
}

impl PqPolicy {
    /// The node's mode.
    pub fn mode(self) -> metanet_proto::pq::PqMode {
        match self {
            PqPolicy::Auto => metanet_proto::pq::PqMode::Auto,
            PqPolicy::Required => metanet_proto::pq::PqMode::Required,
            PqPolicy::Off => metanet_proto::pq::PqMode::Off,
        }
    }
}

/// Which data cipher the daemon offers and accepts (docs/protocol.md §6.1).
/// ChaCha20-Poly1305 is always available; AES-256-GCM is used for a session only when
/// both ends allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum CipherPolicy {
    /// AES-256-GCM where the CPU has AES and carry-less multiply instructions.
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// Offer and accept AES-256-GCM.
    #[serde(rename = "aes-256-gcm")]
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    /// ChaCha20-Poly1305 only.
    #[serde(rename = "chacha20-poly1305")]
    #[value(name = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl CipherPolicy {
    /// Whether to offer and accept AES-256-GCM.
    pub fn aes_256_gcm(self) -> bool {
        match self {
            CipherPolicy::Auto => aes_in_hardware(),
            CipherPolicy::Aes256Gcm => true,
            CipherPolicy::ChaCha20Poly1305 => false,
        }
    }
}

/// Whether this CPU runs AES-GCM in hardware (where ring then beats ChaCha20-Poly1305).
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Default `hosts-file`.
pub const DEFAULT_HOSTS_FILE: &str = "/etc/hosts";

/// How `.meta` names reach the host's applications (`dns-system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DnsSystem {
    /// systemd-resolved when it runs and D-Bus is reachable, else resolvconf when it is
    /// installed, else the hosts file; nothing when metanetd runs in a network
    /// namespace other than the host's.
    #[default]
    Auto,
    /// A `~meta` routing domain on the TUN link in systemd-resolved, over D-Bus.
    Resolved,
    /// A managed block in the hosts file.
    Hosts,
    /// A `resolvconf` entry for the TUN.
    Resolvconf,
    /// Leave the host's resolver alone.
    Off,
}

impl DnsSystem {
    /// The name used in the config file, on the command line and in `status`.
    pub fn name(self) -> &'static str {
        match self {
            DnsSystem::Auto => "auto",
            DnsSystem::Resolved => "resolved",
            DnsSystem::Hosts => "hosts",
            DnsSystem::Resolvconf => "resolvconf",
            DnsSystem::Off => "off",
        }
    }
}

/// Publication settings of one local identity (by name).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdentityConfig {
    /// The identity's name in the state directory.
    pub name: String,
    /// Publish no endpoints: the IP stays hidden; peers reach this identity through its
    /// relays (`relays`), and it never offers direct candidates. Default false.
    #[serde(default)]
    pub hidden: bool,
    /// Endpoints to publish instead of the host's interface addresses.
    pub endpoints: Option<Vec<SocketAddr>>,
    /// Services offered on the overlay address.
    #[serde(default)]
    pub service: Vec<metanet_proto::record::Service>,
    /// Who may open a session with this identity: addresses and chain names. Absent:
    /// everyone (docs/protocol.md §11.1).
    pub allow: Option<Vec<String>>,
    /// Inbound rules on decrypted packets, first match decides; with any rule, what
    /// matches none is dropped (replies to this identity's own flows pass).
    #[serde(default)]
    pub rule: Vec<crate::policy::RuleConfig>,
    /// Prefixes this identity serves as a gateway, published in its record
    /// (docs/protocol.md §4.2): `["198.18.50.0/24", "::/0"]`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Publish this identity as an exit (it forwards to any destination).
    #[serde(default)]
    pub exit: bool,
}

impl IdentityConfig {
    /// The `routes` parsed (`validate` has checked them).
    pub fn prefixes(&self) -> Vec<metanet_proto::record::IpPrefix> {
        self.routes.iter().filter_map(|r| r.parse().ok()).collect()
    }
}

/// A peer known by address and endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticPeer {
    /// The peer's address (`mn1…`).
    pub address: String,
    /// Where it listens.
    pub endpoint: SocketAddr,
    /// Which local identity talks to it. Default: the default identity.
    pub identity: Option<String>,
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Parse a `metrics-listen` / `--metrics-listen` value: `ADDR:PORT` (IPv6 in
/// brackets), port not 0.
pub fn parse_metrics_listen(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.trim().parse().map_err(|_| {
        format!("metrics-listen `{text}` is not ADDR:PORT (e.g. 127.0.0.1:9474 or [fd00::1]:9474)")
    })?;
    if addr.port() == 0 {
        return Err(format!(
            "metrics-listen `{text}`: port 0 is not a listening port"
        ));
    }
    Ok(addr)
}

impl File {
    /// The `metrics-listen` address, if the file sets one.
    pub fn metrics_listen(&self) -> Result<Option<SocketAddr>, String> {
        self.metrics_listen
            .as_deref()
            .map(parse_metrics_listen)
            .transpose()
    }

    /// With `hidden` (the `--hidden` flag, or the file's top-level `hidden = true`),
    /// the default identity publishes no endpoints.
    pub fn hide_default(&mut self, hidden: bool) {
        if !(hidden || self.hidden == Some(true)) {
            return;
        }
        match self.identity.iter_mut().find(|i| i.name == "default") {
            Some(i) => i.hidden = true,
            None => self.identity.push(IdentityConfig {
                name: "default".into(),
                hidden: true,
                ..Default::default()
            }),
        }
    }

    /// The `relays` entries, parsed.
    pub fn relays(&self) -> Result<Vec<metanet_proto::record::Relay>, String> {
        self.relays.iter().map(|r| r.parse()).collect()
    }

    /// The relay limits when `relay = true`.
    pub fn relay_limits(&self) -> Option<metanet_proto::node::RelayLimits> {
        let d = metanet_proto::node::RelayLimits::default();
        self.relay
            .unwrap_or(false)
            .then(|| metanet_proto::node::RelayLimits {
                rate: self.relay_rate.unwrap_or(d.rate),
                sessions: self.relay_sessions.unwrap_or(d.sessions).max(1),
                clients: self.relay_clients.unwrap_or(d.clients).max(1),
                lifetime: d.lifetime,
            })
    }

    /// The chain client's settings: flags (`rpc`, `contract`, `key`) over the file's.
    /// RPC URL and contract go together; a key needs both.
    pub fn chain(
        &self,
        rpc: Option<String>,
        contract: Option<metanet_chain::EvmAddress>,
        key: Option<PathBuf>,
    ) -> Result<Option<ChainConfig>, String> {
        let rpc = rpc.or_else(|| self.chain_rpc.clone());
        let contract = match contract {
            Some(c) => Some(c),
            None => self
                .chain_contract
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("chain-contract: {e}"))?,
        };
        let key = key.or_else(|| self.chain_key.clone());
        let confirmations = self.chain_confirmations;
        match (rpc, contract) {
            (Some(rpc), Some(contract)) => Ok(Some(ChainConfig {
                rpc,
                contract,
                key,
                confirmations: confirmations.unwrap_or(0),
            })),
            (None, None) if key.is_none() && confirmations.is_none() => Ok(None),
            (None, None) if key.is_none() => {
                Err("chain-confirmations needs --chain-rpc URL and --chain-contract ADDR".into())
            }
            (None, None) => Err("--chain-key needs --chain-rpc URL and --chain-contract ADDR".into()),
            (Some(_), None) => Err(
                "--chain-rpc needs --chain-contract ADDR too (deploy one with `metanet chain deploy`)"
                    .into(),
            ),
            (None, Some(_)) => Err("--chain-contract needs --chain-rpc URL too".into()),
        }
    }

    /// The operator rights on the control socket: `operator-uids` and the gids of
    /// `operator-groups` (an unknown group is an error).
    pub fn access(&self) -> Result<crate::control::Access, String> {
        let operator_gids = self
            .operator_groups
            .iter()
            .map(|g| {
                crate::control::gid_of(g)
                    .ok_or_else(|| format!("operator-groups: no group `{g}` in /etc/group"))
            })
            .collect::<Result<_, _>>()?;
        Ok(crate::control::Access {
            operator_uids: self.operator_uids.clone(),
            operator_gids,
        })
    }

    /// Check what serde cannot: multiaddrs, service names, duplicate identities,
    /// buffer sizes, operator groups.
    pub fn validate(&self, path: &Path) -> Result<(), Error> {
        let bad = |message: String| Error::Parse {
            path: path.into(),
            message,
        };
        if let Some(b) = self.socket_buffer {
            if !(MIN_SOCKET_BUFFER..=MAX_SOCKET_BUFFER).contains(&b) {
                return Err(bad(format!(
                    "socket-buffer {b} is out of range: use {MIN_SOCKET_BUFFER} to {MAX_SOCKET_BUFFER} bytes"
                )));
            }
        }
        self.access().map_err(bad)?;
        self.metrics_listen().map_err(bad)?;
        self.relays().map_err(bad)?;
        for p in &self.peer {
            p.address
                .parse::<metanet_proto::Address>()
                .map_err(|e| bad(format!("peer `{}`: {e}", p.address)))?;
            crate::check_endpoint(p.endpoint)
                .map_err(|e| bad(format!("peer `{}` endpoint {}: {e}", p.address, p.endpoint)))?;
        }
        for b in &self.bootstrap {
            b.parse::<libp2p::Multiaddr>()
                .map_err(|e| bad(format!("bootstrap `{b}` is not a multiaddr: {e}")))?;
        }
        if let Some(c) = &self.chain_contract {
            c.parse::<metanet_chain::EvmAddress>()
                .map_err(|e| bad(format!("chain-contract `{c}`: {e}")))?;
        }
        let mut seen = std::collections::HashSet::new();
        for id in &self.identity {
            if !seen.insert(id.name.as_str()) {
                return Err(bad(format!("identity `{}` is configured twice", id.name)));
            }
            if id.service.len() > metanet_proto::record::MAX_SERVICES {
                return Err(bad(format!(
                    "identity `{}`: at most {} services",
                    id.name,
                    metanet_proto::record::MAX_SERVICES
                )));
            }
            crate::policy::validate(id).map_err(bad)?;
            if id.routes.len() > metanet_proto::record::MAX_ROUTES {
                return Err(bad(format!(
                    "identity `{}`: at most {} routes",
                    id.name,
                    metanet_proto::record::MAX_ROUTES
                )));
            }
            let mut prefixes = std::collections::HashSet::new();
            for r in &id.routes {
                let p: metanet_proto::record::IpPrefix = r.parse().map_err(|e| {
                    bad(format!(
                        "identity `{}` route `{r}`: {e} (a prefix like 198.18.50.0/24 or ::/0, host bits zero)",
                        id.name
                    ))
                })?;
                if !prefixes.insert(p) {
                    return Err(bad(format!(
                        "identity `{}`: route `{r}` is listed twice",
                        id.name
                    )));
                }
            }
            for s in &id.service {
                s.validate().map_err(|e| {
                    bad(format!("identity `{}` service `{}`: {e}", id.name, s.name))
                })?;
            }
            if id
                .endpoints
                .as_ref()
                .is_some_and(|e| e.len() > metanet_proto::record::MAX_ENDPOINTS)
            {
                return Err(bad(format!(
                    "identity `{}`: at most {} endpoints",
                    id.name,
                    metanet_proto::record::MAX_ENDPOINTS
                )));
            }
        }
        Ok(())
    }

    /// Load `path`. A missing file at the default path means defaults; a missing file
    /// named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<File, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: File = toml::from_str(&text).map_err(|e| Error::Parse {
                    path: path.into(),
                    message: e.to_string(),
                })?;
                file.validate(path)?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(File::default()),
            Err(source) => Err(Error::Read {
                path: path.into(),
                source,
            }),
        }
    }
}

/// How the chain client is configured (`--chain-rpc`, `--chain-contract`, `--chain-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// The JSON-RPC node, `http://HOST:PORT`.
    pub rpc: String,
    /// The registry contract.
    pub contract: metanet_chain::EvmAddress,
    /// The funding key file (an EVM account key that pays gas); without it the
    /// daemon follows the chain but submits nothing.
    pub key: Option<PathBuf>,
    /// Blocks behind the head the follower waits for (`--chain-confirmations`).
    pub confirmations: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CONTRACT: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";

    #[test]
    fn chain_confirmations_reach_the_follower_and_need_a_chain() {
        let file: File = toml::from_str(&format!(
            "chain-rpc = \"http://127.0.0.1:8545\"\nchain-contract = \"{CONTRACT}\"\nchain-confirmations = 12\n"
        ))
        .unwrap();
        assert_eq!(
            file.chain(None, None, None).unwrap().unwrap().confirmations,
            12
        );
        let alone: File = toml::from_str("chain-confirmations = 3\n").unwrap();
        let e = alone.chain(None, None, None).unwrap_err();
        assert!(e.contains("--chain-rpc"), "{e}");
        let bad = toml::from_str::<File>("chain-confirmations = -1\n");
        assert!(bad.is_err());
    }

    #[test]
    fn chain_settings_merge_flags_over_the_file_and_go_together() {
        let file: File = toml::from_str(&format!(
            "chain-rpc = \"http://127.0.0.1:8545\"\nchain-contract = \"{CONTRACT}\"\nchain-key = \"/k\"\n"
        ))
        .unwrap();
        file.validate(Path::new("f")).unwrap();
        let c = file.chain(None, None, None).unwrap().unwrap();
        assert_eq!(c.rpc, "http://127.0.0.1:8545");
        assert_eq!(c.contract.to_string(), CONTRACT);
        assert_eq!(c.key, Some(PathBuf::from("/k")));
        let c = file
            .chain(Some("http://198.18.0.1:1".into()), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(c.rpc, "http://198.18.0.1:1");

        let none = File::default();
        assert_eq!(none.chain(None, None, None).unwrap(), None);
        let e = none
            .chain(Some("http://127.0.0.1:8545".into()), None, None)
            .unwrap_err();
        assert!(e.contains("--chain-contract"), "{e}");
        let e = none.chain(None, None, Some("/k".into())).unwrap_err();
        assert!(e.contains("--chain-rpc"), "{e}");
    }

    #[test]
    fn routes_are_prefixes_with_their_host_bits_zero() {
        let ok: File = toml::from_str(
            "[[identity]]\nname = \"default\"\nroutes = [\"198.18.50.0/24\", \"::/0\"]\nexit = true\n",
        )
        .unwrap();
        ok.validate(Path::new("f")).unwrap();
        assert_eq!(ok.identity[0].prefixes().len(), 2);
        assert!(ok.identity[0].exit);
        for (routes, want) in [
            ("[\"198.18.50.1/24\"]", "host bits zero"),
            ("[\"198.18.50.0\"]", "ADDRESS/LENGTH"),
            ("[\"::/0\", \"::/0\"]", "twice"),
        ] {
            let f: File =
                toml::from_str(&format!("[[identity]]\nname = \"d\"\nroutes = {routes}\n"))
                    .unwrap();
            let e = f.validate(Path::new("f")).unwrap_err().to_string();
            assert!(e.contains(want), "{routes}: {e}");
        }
    }

    #[test]
    fn pq_is_auto_required_or_off() {
        use metanet_proto::pq::PqMode;
        assert_eq!(File::default().pq, None);
        assert_eq!(PqPolicy::default().mode(), PqMode::Auto);
        for (text, mode) in [
            ("auto", PqMode::Auto),
            ("required", PqMode::Required),
            ("off", PqMode::Off),
        ] {
            let file: File = toml::from_str(&format!("pq = \"{text}\"\n")).unwrap();
            assert_eq!(file.pq.map(PqPolicy::mode), Some(mode));
        }
        assert!(toml::from_str::<File>("pq = \"on\"\n").is_err());
    }

    #[test]
    fn metrics_listen_is_an_address_and_port() {
        let file: File = toml::from_str("metrics-listen = \"[::1]:9474\"\n").unwrap();
        file.validate(Path::new("f")).unwrap();
        assert_eq!(
            file.metrics_listen().unwrap(),
            Some("[::1]:9474".parse().unwrap())
        );
        assert_eq!(File::default().metrics_listen().unwrap(), None);
        for bad in ["localhost:9474", "127.0.0.1", "::1:9474", "127.0.0.1:0", ""] {
            let file: File = toml::from_str(&format!("metrics-listen = \"{bad}\"\n")).unwrap();
            let e = file.validate(Path::new("f")).unwrap_err().to_string();
            assert!(e.contains("metrics-listen"), "{bad}: {e}");
        }
        assert!(toml::from_str::<File>("metrics-listen = 9474\n").is_err());
    }

    #[test]
    fn dns_system_and_hosts_file_parse() {
        let file: File =
            toml::from_str("dns-system = \"hosts\"\nhosts-file = \"/tmp/h\"\n").unwrap();
        assert_eq!(file.dns_system, Some(DnsSystem::Hosts));
        assert_eq!(file.hosts_file, Some(PathBuf::from("/tmp/h")));
        for m in ["auto", "resolved", "hosts", "resolvconf", "off"] {
            let f: File = toml::from_str(&format!("dns-system = \"{m}\"\n")).unwrap();
            assert_eq!(f.dns_system.unwrap().name(), m);
        }
        assert!(toml::from_str::<File>("dns-system = \"dnsmasq\"\n").is_err());
    }

    #[test]
    fn bad_or_unknown_chain_keys_are_refused() {
        let file: File = toml::from_str("chain-contract = \"0x1234\"\n").unwrap();
        let e = file.validate(Path::new("f")).unwrap_err().to_string();
        assert!(e.contains("chain-contract"), "{e}");
        assert!(toml::from_str::<File>("chain-url = \"http://x\"\n").is_err());
    }
}
