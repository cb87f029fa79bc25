//! The control API between `metanet` and `metanetd`.
//!
//! A Unix stream socket carrying newline-delimited JSON: one [`Request`] per line, one
//! [`Response`] per line echoing the request's `id`. These types are the whole contract;
//! the daemon and the CLI both use them and nothing else. Unknown fields are errors.

use std::net::{Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::record::Service;
use crate::target::Target;

/// Most peers `status` lists (a hub may hold thousands; `peers` lists them all).
pub const STATUS_PEERS: usize = 64;

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
    /// Connect to a peer (an address, an overlay IPv6 or a chain name), optionally at a
    /// known endpoint.
    Connect {
        address: Target,
        endpoint: Option<SocketAddr>,
        identity: Option<String>,
    },
    /// Forget a peer.
    Disconnect {
        address: Target,
        identity: Option<String>,
    },
    /// Look up the verified peer record of an address, overlay IPv6 or chain name
    /// (text) in the registry.
    Resolve { target: Target },
    /// Register a chain name to a local identity: commit, wait the reveal delay,
    /// reveal (answered once the reveal is applied or refused).
    NameRegister {
        name: String,
        identity: Option<String>,
    },
    /// Hand a name owned by a local identity over to another address (or name).
    NameTransfer { name: String, to: Target },
    /// What a chain name resolves to.
    NameShow { name: String },
    /// Registered names; `mine`: only those of local identities.
    NameList { mine: bool },
    /// Revoke a local identity's key on the chain, for good.
    IdRevoke { name: Option<String> },
    /// Give a local identity a new Noise static key (same wallet key, same address);
    /// with `wallet`, a new wallet key too: a rotation claim on the chain hands the
    /// old address and its names to the new address (§9.3.4), answered once applied.
    IdRotate {
        name: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wallet: bool,
    },
    /// The relay's state (when this daemon is a relay), the relays its identities use
    /// and what it has seen of its own NAT.
    RelayStatus,
    /// Attach a network namespace to local identity `identity` (created when missing):
    /// the daemon gives the namespace a TUN interface of its own carrying only that
    /// identity's overlay /128 and the `fd00::/8` route. The request line travels with
    /// two descriptors opened inside the namespace (`SCM_RIGHTS`, in this order): an
    /// unattached `/dev/net/tun` and a `NETLINK_ROUTE` socket.
    Attach {
        /// The namespace's path (`/run/netns/NAME` for an `ip netns` name): watched,
        /// and the attachment removed when it disappears.
        netns: String,
        identity: String,
        /// Interface name inside the namespace ([`DEFAULT_INTERFACE`] when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interface: Option<String>,
        /// The container this is for (the CNI plugin's `CNI_CONTAINERID`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container_id: Option<String>,
        /// The CNI network name the attachment belongs to (for `GC`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// The identity is the attachment's alone (the CNI plugin's name derived from
        /// a container id): it is removed with the attachment, however that goes
        /// (detach, the namespace gone).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
    },
    /// Remove an attachment, named by its identity or by its container (and network).
    /// Detaching what is not attached is not an error (answered `Done`).
    Detach {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// Also remove the identity (its key is deleted).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove_identity: bool,
    },
    /// Every attachment.
    Attachments,
    /// Each identity's access policy and what it counted (`metanet policy show`).
    PolicyShow,
    /// Create group `name` on the chain (docs/protocol.md §9.8), `identity` its first
    /// admin; answered once the claim is applied.
    GroupCreate {
        name: String,
        identity: Option<String>,
    },
    /// Add `member` (an address or chain name) to group `name`, signed by a local
    /// admin of it (`identity`, or the first local identity that is one).
    GroupAdd {
        name: String,
        member: Target,
        identity: Option<String>,
    },
    /// Remove `member` from group `name`.
    GroupRemove {
        name: String,
        member: Target,
        identity: Option<String>,
    },
    /// Make `member` an admin of group `name` (or, with `remove`, no longer one).
    GroupAdmin {
        name: String,
        member: Target,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove: bool,
        identity: Option<String>,
    },
    /// Every group (`mine`: those a local identity belongs to).
    GroupList { mine: bool },
    /// One group: admins, members.
    GroupShow { name: String },
    /// One group's history: who joined and left, when, admitted by whom.
    GroupLog { name: String },
}

/// The interface an attachment gets inside its namespace unless told otherwise.
pub const DEFAULT_INTERFACE: &str = "metanet0";

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
// One reply per request, built once and serialized at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// For `NameRegister`, `NameTransfer`, `NameShow`.
    Name(NameInfo),
    /// For `NameList`.
    Names { names: Vec<NameInfo> },
    /// For `IdRevoke`.
    Revoked {
        identity: String,
        address: String,
        block: u64,
    },
    /// For `IdRotate` with `wallet`: the identity now holds `address`; `from`
    /// resolves as rotated to it since `block`.
    WalletRotated {
        identity: String,
        from: String,
        address: String,
        ipv6: String,
        block: u64,
    },
    /// For `RelayStatus`.
    Relay(RelayInfo),
    /// For `Attach`.
    Attachment(AttachmentInfo),
    /// For `Attachments`.
    Attachments { attachments: Vec<AttachmentInfo> },
    /// For `PolicyShow`.
    Policies { policies: Vec<PolicyInfo> },
    /// For `GroupCreate`, `GroupAdd`, `GroupRemove`, `GroupAdmin`, `GroupShow`.
    Group(GroupInfo),
    /// For `GroupList`.
    Groups { groups: Vec<GroupInfo> },
    /// For `GroupLog`.
    GroupLog {
        name: String,
        events: Vec<GroupEventInfo>,
    },
    /// For commands with nothing to report.
    Done,
}

/// A group on the chain (`metanet group show`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    /// Admin addresses.
    pub admins: Vec<String>,
    /// Member addresses (admins included).
    pub members: Vec<String>,
    /// Local identities that are members.
    #[serde(default)]
    pub local_members: Vec<String>,
    /// Changes applied so far (the next add or remove names this `seq`).
    pub seq: u64,
    /// Block of its creation.
    pub created_block: u64,
    /// True when the chain client could not reach its node in its last round.
    pub stale: bool,
    /// Its key epoch on the chain (docs/protocol.md §9.9): 0 until the first commit.
    #[serde(default)]
    pub epoch: u64,
    /// The group key state of each local member identity.
    #[serde(default)]
    pub keys: Vec<GroupKeyInfo>,
}

/// A local identity's MLS state of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKeyInfo {
    pub identity: String,
    /// The epoch its state is at (behind the chain's while it catches up).
    pub epoch: u64,
    /// A commit of its own waits for its epoch claim.
    pub pending: bool,
    /// It joined and its own update (which fills its tree nodes, docs/protocol.md
    /// §9.9) has not been ordered yet.
    #[serde(default)]
    pub needs_update: bool,
}

/// One change in a group's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEventInfo {
    pub block: u64,
    /// The claim's index in the registry log.
    pub index: u64,
    /// `created`, `added`, `removed`, `admin-added`, `admin-removed`, `epoch` (a key
    /// epoch ordered: `subject` and `by` are its committer).
    pub change: String,
    /// Whom it concerns.
    pub subject: String,
    /// Who signed it (an admin).
    pub by: String,
    /// For `epoch`: the key epoch it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// One identity's access policy (`metanet policy show`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub identity: String,
    /// Whether every initiator is admitted (no `allow` list).
    pub open: bool,
    /// The `allow` entries as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// The addresses they resolve to now.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Entries (names) that resolve to nothing now: they admit nobody.
    #[serde(default)]
    pub unresolved: Vec<String>,
    /// The inbound rules, in order, with the packets each decided.
    #[serde(default)]
    pub rules: Vec<RuleInfo>,
    /// Whether packets no rule matches are dropped (there are rules).
    pub default_deny: bool,
    /// Initiations the allow list refused.
    pub refused: u64,
    /// Packets no rule matched, dropped.
    pub default_dropped: u64,
    /// Closed groups whose network key this identity's handshakes with their members
    /// use (docs/protocol.md §11.3).
    #[serde(default)]
    pub closed: Vec<ClosedGroupInfo>,
}

/// A closed group as the node holds it: no key bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedGroupInfo {
    pub group: String,
    /// The current epoch.
    pub epoch: u64,
    /// The previous epoch while it is still accepted from current members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u64>,
    /// Members in this epoch.
    pub members: usize,
}

/// One inbound rule and the packets it decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub proto: String,
    pub port: String,
    pub from: String,
    pub action: String,
    pub hits: u64,
}

/// One namespace attached to a local identity (`metanet attachments`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    /// The local identity the namespace speaks as.
    pub identity: String,
    /// Its address text.
    pub address: String,
    /// Its overlay IPv6: the only address on the namespace's interface.
    pub ipv6: Ipv6Addr,
    /// The namespace's path.
    pub netns: String,
    /// The interface inside the namespace.
    pub interface: String,
    /// Its MTU.
    pub mtu: u16,
    /// `up`; `lost` when the daemon restarted without the descriptors and could not
    /// enter the namespace again (attach it again); `broken` when the interface failed.
    pub state: String,
    /// The container it is for, when the CNI plugin made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The CNI network it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Where the `.meta` DNS view answers (reachable from the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<SocketAddr>,
    /// Packets the namespace sent and received through the daemon.
    #[serde(default)]
    pub tx_packets: u64,
    #[serde(default)]
    pub rx_packets: u64,
    /// Packets from the namespace refused for a source address not its own.
    #[serde(default)]
    pub spoofed: u64,
}

/// What `metanet relay status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// Whether this daemon serves as a relay.
    pub relay: bool,
    /// Bytes per second one client may send through it (0: no cap).
    #[serde(default)]
    pub rate: u64,
    /// Peers one client may relay to at once.
    #[serde(default)]
    pub sessions: usize,
    /// Reservations it holds now.
    #[serde(default)]
    pub reservations: usize,
    /// Circuits (client to peer) in use now.
    #[serde(default)]
    pub circuits: usize,
    /// Messages and bytes forwarded.
    #[serde(default)]
    pub forwarded_packets: u64,
    #[serde(default)]
    pub forwarded_bytes: u64,
    /// Messages from an endpoint with no reservation, dropped.
    #[serde(default)]
    pub dropped_unbound: u64,
    /// Messages refused (destination not bound, session limit, relay full).
    #[serde(default)]
    pub refused: u64,
    /// Messages over a client's rate cap, dropped.
    #[serde(default)]
    pub rate_limited: u64,
    /// Its bound clients.
    #[serde(default)]
    pub clients: Vec<RelayClientInfo>,
    /// The relays this daemon's identities use.
    #[serde(default)]
    pub using: Vec<RelayUseInfo>,
    /// This daemon's endpoints as its peers and relays see them.
    #[serde(default)]
    pub reflexive: Vec<SocketAddr>,
    /// What that says about its NAT: `unknown`, `none`, `endpoint-independent`,
    /// `endpoint-dependent`.
    #[serde(default)]
    pub mapping: String,
}

/// One client of a relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayClientInfo {
    /// Its address.
    pub address: String,
    /// The endpoint its session comes from.
    pub endpoint: SocketAddr,
    /// Seconds until its reservation expires.
    pub expires_in: u64,
    /// Peers it relays to now.
    pub circuits: usize,
    /// Bytes and messages it sent through the relay.
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

/// One relay an identity uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayUseInfo {
    /// The identity.
    pub identity: String,
    /// The relay, `ADDRESS@HOST:PORT`.
    pub relay: String,
    /// Whether the relay holds the identity's reservation now.
    pub reserved: bool,
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

/// Error classes: what happened, so a client can act on it without reading the
/// message. [`ErrorKind::exit_code`] is the CLI's exit code for each, in one place.
/// On the wire in kebab case (`bad-request`); the snake-case spellings of earlier
/// daemons (`bad_request`) are accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request itself is malformed.
    #[serde(alias = "bad_request")]
    BadRequest,
    /// A named thing does not exist.
    #[serde(alias = "not_found")]
    NotFound,
    /// It exists already.
    #[serde(alias = "already_exists")]
    AlreadyExists,
    /// The daemon could not carry it out.
    Internal,
    /// The registry forbids it: the key is revoked or rotated away.
    Refused,
    /// The caller lacks the right the request needs (the message names it).
    Forbidden,
    /// The node refuses this peer (its key is on the deny list, e.g. revoked).
    Denied,
    /// The peer table is full.
    TooManyPeers,
    /// Nothing answered for the address where it was looked for (no record, no
    /// handshake answer).
    Unreachable,
    /// The daemon gave up waiting (for the data plane, the chain, the DHT).
    Timeout,
}

impl ErrorKind {
    /// The `metanet` command line's exit code for this kind of failure.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Internal | ErrorKind::AlreadyExists => 1,
            ErrorKind::BadRequest => 2,
            ErrorKind::Forbidden => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::Refused | ErrorKind::Denied => 6,
            ErrorKind::Unreachable => 7,
            ErrorKind::Timeout => 8,
            ErrorKind::TooManyPeers => 9,
        }
    }
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
    /// Peers: at most [`STATUS_PEERS`] of them, those with a session first, the most
    /// recent handshake first (`peers` lists every one).
    pub peers: Vec<PeerInfo>,
    /// How many peers there are in all (absent from older daemons: then `peers` is all).
    #[serde(default)]
    pub peer_count: Option<u64>,
    /// How many of them have a session.
    #[serde(default)]
    pub peers_up: Option<u64>,
    /// Node and data-plane counters by name (a JSON object; the `[name, value]` pairs
    /// of earlier daemons are read too).
    #[serde(deserialize_with = "counters_object_or_pairs")]
    pub counters: std::collections::BTreeMap<String, u64>,
    /// The DHT node, when it runs.
    #[serde(default)]
    pub dht: Option<DhtStatus>,
    /// The chain client, when configured.
    #[serde(default)]
    pub chain: Option<ChainStatus>,
    /// The `.meta` DNS view and its host integration (absent from older daemons).
    #[serde(default)]
    pub dns: Option<DnsStatus>,
}

/// Counters as an object, or as the list of pairs earlier daemons sent.
fn counters_object_or_pairs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Object(std::collections::BTreeMap<String, u64>),
        Pairs(Vec<(String, u64)>),
    }
    Ok(match Either::deserialize(d)? {
        Either::Object(m) => m,
        Either::Pairs(p) => p.into_iter().collect(),
    })
}

/// The `.meta` DNS view and how the host's resolver is pointed at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// Where the view listens (`[fd…]:53`).
    pub listen: String,
    /// `serving`, `failed: <error>` (it could not bind) or `off`.
    pub state: String,
    /// The host integration in effect: `resolved`, `hosts`, `resolvconf` or `off`
    /// (what `dns-system = "auto"` chose, when it is set to that).
    pub system: String,
    /// The integration's state: `active`, `failed: <error>` or `off`.
    #[serde(default)]
    pub system_state: String,
}

/// The daemon's chain client (docs/protocol.md §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// The JSON-RPC node.
    pub rpc: String,
    /// The registry contract (`0x…`).
    pub contract: String,
    /// EIP-155 chain id, once read from the node.
    pub chain_id: Option<u64>,
    /// Last block whose claims are all applied.
    pub synced_block: Option<u64>,
    /// Head block seen in the last successful round.
    pub head_block: Option<u64>,
    /// Claims applied.
    pub claims: u64,
    /// Registered names.
    pub names: usize,
    /// True when the last round failed or none succeeded: answers may be out of date.
    pub stale: bool,
    /// Why the last round failed.
    pub error: Option<String>,
    /// Unix seconds of the last successful round.
    pub last_success: Option<u64>,
    /// Unix seconds since which rounds fail.
    pub stale_since: Option<u64>,
    /// The EVM account that pays for claims, when a funding key is configured.
    pub funding_account: Option<String>,
}

/// A chain name and what it resolves to (docs/protocol.md §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameInfo {
    /// Canonical name.
    pub name: String,
    /// `registered`, or `revoked` when the owner's key is revoked (refused).
    pub status: NameStatus,
    /// Owner address.
    pub owner: String,
    /// The owner's overlay IPv6.
    pub ipv6: Ipv6Addr,
    /// The local identity that owns it, if any.
    pub identity: Option<String>,
    /// Transfer count.
    pub seq: u64,
    /// Block of the registration.
    pub registered_block: u64,
    /// Block of the last change of owner.
    pub changed_block: u64,
    /// Block of the owner's revocation, when revoked.
    pub revoked_block: Option<u64>,
    /// True when the chain client could not reach its node in its last round.
    pub stale: bool,
}

/// What a registered name stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameStatus {
    /// It resolves to its owner.
    Registered,
    /// Its owner's key is revoked: it must not be used.
    Revoked,
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
    /// Prefixes it serves as a gateway (docs/protocol.md §4.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Whether it is an exit.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub exit: bool,
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
    /// Noise static public key, 64 lowercase hex (changes with `id rotate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_key: Option<String>,
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
    /// Data cipher of the session (`chacha20-poly1305` or `aes-256-gcm`), when up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// The KEM of the session's hybrid handshake (`ml-kem-512`), or null when the
    /// session is classical or down (docs/protocol.md §5.7). Always present in JSON.
    #[serde(default)]
    pub pq: Option<String>,
    /// The path its packets take: `direct`, `relay:<relay address>`, or `none`
    /// (nowhere to send yet).
    #[serde(default)]
    pub path: String,
}
