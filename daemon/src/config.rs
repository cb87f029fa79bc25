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
/// Default tunnel MTU: 1500 underlay - 40 IPv6 - 8 UDP - 32 metanet overhead.
pub const DEFAULT_MTU: u16 = 1420;

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    /// UDP listen port (IPv4 and IPv6). Default 51820.
    pub port: Option<u16>,
    /// TUN interface name. Default `metanet0`.
    pub tun: Option<String>,
    /// Tunnel MTU in bytes. Default 1420.
    pub mtu: Option<u16>,
    /// State directory. Default `/var/lib/metanet`.
    pub state_dir: Option<PathBuf>,
    /// Control socket path. Default `/run/metanet/metanetd.sock`.
    pub socket: Option<PathBuf>,
    /// UDP socket buffer size in bytes. Default 8 MiB.
    pub socket_buffer: Option<usize>,
    /// Peers to connect to at start.
    #[serde(default)]
    pub peer: Vec<StaticPeer>,
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

impl File {
    /// Load `path`. A missing file at the default path means defaults; a missing file
    /// named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<File, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::Parse {
                path: path.into(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(File::default()),
            Err(source) => Err(Error::Read {
                path: path.into(),
                source,
            }),
        }
    }
}
