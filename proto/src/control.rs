//! The control API between `metanet` and `metanetd` (DESIGN.md §5).
//!
//! A Unix stream socket carrying newline-delimited JSON: one [`Request`] per line, one
//! [`Response`] per line echoing the request's `id`. These types are the whole contract;
//! the daemon and the CLI both use them and nothing else. Unknown fields are errors.

use std::net::{Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::record::Service;

/// Longest accepted request line, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What is asked.
    #[serde(flatten)]
    pub command: Command,
}

/// What a client can ask. `identity` fields name a local identity; `None` is the default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Command {
    /// Daemon status.
    Status,
    /// All peers of all identities.
    Peers,
    /// All local identities.
    IdList,
    /// One identity (`None`: the default).
    IdShow { name: Option<String> },
    /// Create an identity.
    IdNew { name: String },
    /// Remove an identity (not the default while it is the only one).
    IdRemove { name: String },
    /// Import an identity from its secret (hex of the 32-byte wallet seed).
    IdImport { name: String, secret_hex: String },
    /// Export an identity's wallet secret (hex).
    IdExport { name: String },
    /// Connect to a peer by address text, optionally at a known endpoint.
    Connect {
        address: String,
        endpoint: Option<SocketAddr>,
        identity: Option<String>,
    },
    /// Forget a peer.
    Disconnect {
        address: String,
        identity: Option<String>,
    },
    /// Look up the verified peer record of an address or overlay IPv6 (text) in the
    /// registry.
    Resolve { target: String },
}

/// The answer to one request: exactly one of `result` and `error` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// On success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Reply>,
    /// On failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

/// Successful results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// For `Status`.
    Status(Status),
    /// For `Peers`.
    Peers { peers: Vec<PeerInfo> },
    /// For `IdList`.
    Identities { identities: Vec<IdentityInfo> },
    /// For `IdShow`, `IdNew`, `IdImport`.
    Identity(IdentityInfo),
    /// For `IdExport`.
    Secret { name: String, secret_hex: String },
    /// For `Connect`.
    Connected(PeerInfo),
    /// For `Resolve`.
    Record(RecordInfo),
    /// For commands with nothing to report.
    Done,
}

/// Why a request failed, and whose fault it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// Class of failure.
    pub kind: ErrorKind,
    /// Human-readable, says what to do next.
    pub message: String,
}

/// Error classes, mapped to CLI exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is malformed.
    BadRequest,
    /// A named thing does not exist.
    NotFound,
    /// It exists already.
    AlreadyExists,
    /// The daemon could not carry it out.
    Internal,
}

/// Daemon status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Daemon version.
    pub version: String,
    /// TUN interface name.
    pub interface: String,
    /// UDP listen port.
    pub port: u16,
    /// Local identities.
    pub identities: Vec<IdentityInfo>,
    /// Peers.
    pub peers: Vec<PeerInfo>,
    /// Node counters by name.
    pub counters: Vec<(String, u64)>,
    /// The DHT node, when it runs.
    #[serde(default)]
    pub dht: Option<DhtStatus>,
}

/// The daemon's DHT node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtStatus {
    /// Its libp2p peer id (its own key, never a wallet key).
    pub peer_id: String,
    /// Multiaddrs it listens on.
    pub listen_addrs: Vec<String>,
    /// DHT peers in its routing table.
    pub peers: usize,
    /// Records in its store (its own and those it holds for others).
    pub records: usize,
}

/// A verified peer record, as `Resolve` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    /// Address text.
    pub address: String,
    /// Overlay IPv6.
    pub ipv6: Ipv6Addr,
    /// Wallet public key, 64 lowercase hex.
    pub public_key: String,
    /// Noise static public key, 64 lowercase hex.
    pub noise_key: String,
    /// Where the peer says it listens; empty when it hides its IP.
    pub endpoints: Vec<SocketAddr>,
    /// Services it offers.
    pub services: Vec<Service>,
    /// Record sequence number.
    pub seq: u64,
    /// Unix seconds after which the record is not used.
    pub not_after: u64,
    /// Where the record came from: `dht <peer id>`, `dht (local store)`, `cache`, or
    /// `local` for the daemon's own identities.
    pub source: String,
}

/// One local identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// Local name (file name in the state dir).
    pub name: String,
    /// Address text.
    pub address: String,
    /// Overlay IPv6.
    pub ipv6: Ipv6Addr,
    /// Wallet public key, 64 lowercase hex.
    pub public_key: String,
    /// Whether it is the default identity.
    pub default: bool,
    /// Services it offers.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Endpoints its published record lists (empty when hidden or unpublished).
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Whether it publishes no endpoints (reachable only through relays).
    #[serde(default)]
    pub hidden: bool,
}

/// One peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The local identity it belongs to.
    pub identity: String,
    /// Address text.
    pub address: String,
    /// Overlay IPv6.
    pub ipv6: Ipv6Addr,
    /// Underlay endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Unix seconds of the last handshake.
    pub last_handshake: Option<u64>,
    /// Whether a session is up.
    pub connected: bool,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
    /// Plaintext bytes sent.
    pub tx_bytes: u64,
    /// Handshake round-trip time in microseconds, when measured.
    pub rtt_us: Option<u64>,
}
