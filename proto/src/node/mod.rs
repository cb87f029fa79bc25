//! The endpoint state machine the daemon drives (docs/protocol.md §7).
//!
//! A [`Node`] holds any number of local identities and the peers each talks to. It is
//! driven by the verbs every metanet state machine uses: `handle_datagram`, `handle_tun_packet`,
//! `handle_timeout`, `handle_command` in; `poll_transmit`, `poll_event`,
//! `poll_timeout` out. It never does IO and never reads the clock: every call takes
//! `now`, and the Unix time is derived from the one given at construction.
//!
//! Data flow: an IPv6 packet from the TUN is matched to a local identity by its source
//! and to a peer by its destination overlay address; with a usable session it is sealed
//! into the caller's buffer at once (the fast path, no allocation), otherwise it is
//! queued (bounded) while a handshake or a registry lookup ([`Event::LookupNeeded`])
//! completes. A datagram from the network is dispatched by type; data is opened in
//! place and its plaintext range handed back for the TUN, after checking that the inner
//! source is the sending peer's own overlay address. Handshake messages, cookies and
//! keepalives leave through `poll_transmit`.
//!
//! Timers: every peer's earliest deadline sits in a deadline queue (`timers`), kept
//! current after each verb for the peers that verb touched, so `poll_timeout` is a
//! peek and `handle_timeout` visits only the peers whose deadlines passed. The few
//! node-wide timers (lookups, record requests) are checked directly.
//!
//! The code is split by concern: `table` (the peer table and its indices), `peer`
//! (one peer's state), `timers` (the deadline queue), `peer_timers` (scheduling and
//! firing a peer's timers), `handshake` (initiations, responses, cookie replies),
//! `data` (TUN packets and data messages), `lookup` (packets waiting for the
//! registry), `probe` (record requests and connecting by endpoint), `load`
//! (handshake and record-request load, cookies under load) and `invariants` (the
//! consistency check for tests and fuzzing).
//!
//! Determinism: maps are `BTreeMap`s, peers live in a `Vec` and deadline ties are
//! broken by peer slot, so a run replays exactly from the same seed and inputs.

mod data;
mod epoch;
mod handshake;
mod invariants;
mod load;
mod lookup;
mod path;
mod peer;
mod peer_timers;
mod policy;
mod probe;
mod relay;
mod routes;
mod table;
mod timers;

pub use epoch::{NetworkKey, NetworkKeyStatus, EPOCH_OVERLAP, MAX_MEMBERS, MAX_NETWORK_KEYS};
pub use path::{Mapping, NatStatus};
pub use policy::{
    Action, Flow, Policy, PolicyError, Proto, Rule, Source, FLOW_IDLE, MAX_ADDRESSES, MAX_FLOWS,
    MAX_RULES,
};
pub use relay::{RelayClientStatus, RelayLimits, RelayStatus, RelayUseStatus};
pub use routes::{Route, RouteError, MAX_CHOSEN_ROUTES};

use core::ops::Range;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};

use crate::address::Address;
use crate::handshake::{CookieChecker, Psk, Remote, SourceCookies};
use crate::identity::Identity;
use crate::record::Relay;
use crate::rng::Rng;
use crate::signal::RefuseReason;
use crate::time::{Instant, UnixTime};
use crate::wire::{self, Kind};

use path::Via;
use relay::{Forward, RelayServer, RelayUse};

use load::LoadCounter;
use lookup::PendingLookup;
use peer::{Origin, PeerId};
use probe::Probe;
use table::PeerTable;
use timers::DeadlineQueue;

/// How long a registry lookup may stay unanswered before its queued packets are dropped.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between record requests to an endpoint given by hand.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Record requests sent before a connect by endpoint gives up.
pub const PROBE_ATTEMPTS: u32 = 10;
/// Validity of the records a node hands out in record responses.
pub const ANSWER_RECORD_TTL: Duration = Duration::from_secs(3600);

/// Index of a local identity in a [`Node`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalId(pub u16);

/// Node settings; every bound is explicit.
#[derive(Clone, Debug)]
pub struct Config {
    /// Pre-shared key for the Noise `psk2` slot (all zero for the public network).
    pub psk: Psk,
    /// Most peers held at once (all identities together). Peers created by inbound
    /// handshakes are forgotten when idle, and evicted to make room when the table is
    /// full; peers the driver adds stay until removed (docs/protocol.md §7.6).
    pub max_peers: usize,
    /// Packets queued per peer while its session is being set up.
    pub queue_per_peer: usize,
    /// Destinations with packets waiting for a registry lookup.
    pub max_pending_lookups: usize,
    /// Initiations per second (all sources) above which cookies are demanded.
    pub load_threshold: u32,
    /// Initiations per second accepted from one source IP while under load.
    pub per_source_rate: u32,
    /// Record requests per second (all sources) above which record cookies are
    /// demanded (docs/protocol.md §5.5). Counted apart from initiations, so that a
    /// flood of either cannot stop the other.
    pub record_load_threshold: u32,
    /// Send a keepalive at least this often to every peer with a session.
    pub persistent_keepalive: Option<Duration>,
    /// Offer AES-256-GCM for data in our initiations and choose it when an initiator
    /// offers it (docs/protocol.md §6.1); ChaCha20-Poly1305 otherwise. Set it where the
    /// CPU has AES instructions.
    pub aes_256_gcm: bool,
    /// The hybrid post-quantum handshake (docs/protocol.md §5.7): offered and accepted
    /// (`Auto`, the default), demanded in both directions (`Required`), or never
    /// offered and offers answered classically (`Off`).
    pub pq: crate::pq::PqMode,
    /// Keepalive for paths that cross a NAT (docs/protocol.md §10.6): peers reached
    /// through a relay, and every peer once the node has seen itself behind a NAT.
    /// `None` turns it off ([`Config::persistent_keepalive`] still applies).
    pub nat_keepalive: Option<Duration>,
    /// Serve as a relay for other nodes (docs/protocol.md §10.2), with these limits.
    pub relay: Option<RelayLimits>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            psk: [0; 32],
            max_peers: 4096,
            queue_per_peer: 128,
            max_pending_lookups: 256,
            load_threshold: 64,
            per_source_rate: 256,
            record_load_threshold: 64,
            persistent_keepalive: None,
            aes_256_gcm: false,
            pq: crate::pq::PqMode::Auto,
            nat_keepalive: Some(Duration::from_secs(25)),
            relay: None,
        }
    }
}

/// Something the node asks of its driver.
// Commands are rare (operator and registry actions); boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add or update a peer of `local` whose keys the driver verified (from a record or
    /// configuration). With an endpoint and `connect`, a handshake starts now.
    /// `candidates` are further direct endpoints (a record lists several), tried
    /// together with `endpoint` until one answers; `relay` is a relay the peer holds a
    /// reservation with, which `local` reserves with too and handshakes through at the
    /// same time (docs/protocol.md §10.3).
    AddPeer {
        local: LocalId,
        remote: Remote,
        endpoint: Option<SocketAddr>,
        candidates: Vec<SocketAddr>,
        relay: Option<Relay>,
        connect: bool,
    },
    /// The relays `local` keeps a session and a reservation with (docs/protocol.md
    /// §10.2); its record should list them.
    SetRelays { local: LocalId, relays: Vec<Relay> },
    /// A hidden identity uses only its relays, never sends candidates and ignores
    /// requests for them (docs/protocol.md §10.7).
    SetHidden { local: LocalId, hidden: bool },
    /// This node's local endpoints: the candidates it offers for hole punching.
    SetCandidates { candidates: Vec<SocketAddr> },
    /// Connect to `address` at `endpoint` knowing nothing else: ask the endpoint for
    /// its signed record (docs/protocol.md §3.5), verify that it derives to `address`,
    /// then handshake. A known peer just gets the endpoint and a handshake.
    Connect {
        local: LocalId,
        address: Address,
        endpoint: SocketAddr,
    },
    /// Forget a peer and its keys.
    RemovePeer { local: LocalId, address: Address },
    /// The registry has no usable record for this overlay address: drop what waits.
    LookupFailed { local: LocalId, ipv6: Ipv6Addr },
    /// Refuse `address` on every local identity from now on, for the life of the node
    /// (its key was revoked in the registry, docs/protocol.md §9.6): its sessions and
    /// queued packets go at once, its initiations are dropped before any reply
    /// (counted in [`Stats::denied`]), and adding or connecting to it fails with
    /// [`CommandError::Denied`]. At most [`MAX_DENIED`] addresses.
    Deny { address: Address },
    /// `local`'s access policy (docs/protocol.md §11): who may open a session (its
    /// inbound peers that may not are dropped now) and which packets reach it. Its
    /// rule counters start again from zero.
    SetPolicy { local: LocalId, policy: Policy },
    /// `local`'s closed groups and their current network keys (docs/protocol.md §5.6,
    /// §11.3): handshakes with their members mix the key into psk2 and name its epoch;
    /// a member's initiation without it, or with an epoch other than the current one
    /// (or the previous one for [`EPOCH_OVERLAP`]), is refused. Sessions of addresses
    /// no longer in any of the groups they were in go now. At most
    /// [`MAX_NETWORK_KEYS`] groups of at most [`MAX_MEMBERS`] members.
    SetNetworkKeys {
        local: LocalId,
        keys: Vec<NetworkKey>,
    },
    /// The routes `local` chose: non-overlay IPv6 destinations in each prefix go to its
    /// gateway (longest prefix first), whose record must advertise the prefix or say it
    /// is an exit; replies from those destinations are accepted from that gateway only.
    SetRoutes { local: LocalId, routes: Vec<Route> },
    /// What `local` forwards to as a gateway: its clients' packets to these prefixes
    /// (any non-overlay destination when `exit`) are delivered to the TUN for the host
    /// to forward, and the replies go back to the client.
    SetGateway {
        local: LocalId,
        served: Vec<crate::record::IpPrefix>,
        exit: bool,
    },
}

/// Most addresses a node refuses ([`Command::Deny`]).
pub const MAX_DENIED: usize = 1 << 16;

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no such local identity")]
    UnknownLocal,
    #[error("no such peer")]
    UnknownPeer,
    #[error("peer table is full")]
    TooManyPeers,
    #[error("bad policy: {0}")]
    BadPolicy(PolicyError),
    #[error("a peer cannot be one of this node's own identities")]
    SelfPeer,
    #[error("the address is refused (revoked)")]
    Denied,
    #[error("the list of refused addresses is full")]
    TooManyDenied,
    #[error("too many closed groups or members")]
    TooManyNetworkKeys,
    #[error("bad route: {0}")]
    BadRoute(RouteError),
}

/// What the node tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A packet is waiting for an overlay address with no known peer: resolve it by the
    /// 15 address bytes in `ipv6` and answer with [`Command::AddPeer`] or
    /// [`Command::LookupFailed`].
    LookupNeeded { local: LocalId, ipv6: Ipv6Addr },
    /// A session with a peer is up (first handshake, or after it had none).
    PeerUp {
        local: LocalId,
        address: Address,
        endpoint: SocketAddr,
    },
    /// Handshake attempts to a peer gave up; queued packets were dropped.
    HandshakeFailed { local: LocalId, address: Address },
    /// An authenticated packet came from a new endpoint; the peer moved there.
    Roamed {
        local: LocalId,
        address: Address,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// All keys of a peer expired with no new handshake.
    SessionExpired { local: LocalId, address: Address },
    /// A [`Command::Connect`] got no valid record from the endpoint.
    ConnectFailed {
        local: LocalId,
        address: Address,
        endpoint: SocketAddr,
    },
    /// A peer moved between the direct path and a relay.
    PathChanged {
        local: LocalId,
        address: Address,
        path: Path,
        endpoint: Option<SocketAddr>,
    },
    /// Our endpoints as others see them changed: records should publish them.
    NatChanged {
        reflexive: Vec<SocketAddr>,
        mapping: Mapping,
    },
    /// A relay holds a reservation for `local` now.
    RelayReserved { local: LocalId, relay: Relay },
    /// A relay refused to forward to `address`.
    RelayRefused {
        local: LocalId,
        address: Address,
        reason: RefuseReason,
    },
}

/// The path a peer's packets take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Nowhere to send yet.
    None,
    /// Straight to its endpoint.
    Direct,
    /// Through the relay at this endpoint.
    Relay(SocketAddr),
}

/// What became of a datagram given to [`Node::handle_datagram_forwarding`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Nothing for the driver (consumed, answered through `poll_transmit`, dropped).
    Nothing,
    /// This range of the datagram is an IPv6 packet for the TUN.
    Tun(Range<usize>),
    /// The datagram, rewritten in place, is to be sent from byte `start` on to `to`
    /// (a relay forwarding between two clients).
    Forward { to: SocketAddr, start: usize },
}

/// A datagram to send: `len` bytes at the start of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length.
    pub len: usize,
}

/// Node-wide counters (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams that are not valid metanet messages.
    pub malformed: u64,
    /// Handshake messages whose mac1 matched no local identity.
    pub bad_mac1: u64,
    /// Cookie replies sent instead of doing DH work.
    pub cookies_sent: u64,
    /// Initiations and record requests dropped by the per-source rate limit.
    pub rate_limited: u64,
    /// Initiations that reached DH work.
    pub handshakes_processed: u64,
    /// Handshake messages that failed Noise, binding or payload checks.
    pub handshake_failures: u64,
    /// Initiations whose timestamp was not newer than the last one accepted.
    pub replayed_initiations: u64,
    /// Data messages for an unknown session index.
    pub unknown_index: u64,
    /// Data messages rejected by the replay window.
    pub replayed_data: u64,
    /// Data messages that failed authentication.
    pub decrypt_failures: u64,
    /// Tunnel packets whose inner source or destination was not the peer's and ours.
    pub spoofed: u64,
    /// TUN packets that were not IPv6 to an overlay address from a local identity, or
    /// too long for one data message (over `wire::MAX_DATA_PAYLOAD` bytes).
    pub tun_invalid: u64,
    /// Packets dropped because a queue was full, a lookup failed or a handshake gave up.
    pub queue_dropped: u64,
    /// Record responses that failed verification or answered no request.
    pub bad_records: u64,
    /// Initiations from refused addresses ([`Command::Deny`]), dropped.
    pub denied: u64,
    /// Initiations an identity's allow list refused (§11.1), dropped before the
    /// responder's DH work and before any peer state.
    pub policy_refused: u64,
    /// Initiations refused for their network key epoch (§11.3): a member of a closed
    /// group without the key, an unknown group, a non-member, or a stale epoch.
    pub epoch_refused: u64,
    /// TUN packets to a non-overlay destination no chosen route covers, dropped.
    pub unrouted: u64,
    /// Classical handshakes refused because the hybrid mode is required (§5.7): an
    /// initiation without an ML-KEM key, or a response without a ciphertext.
    pub pq_refused: u64,
    /// ML-KEM encapsulations done as responder (after every other check, §5.7).
    pub kem_encapsulations: u64,
    /// ML-KEM decapsulations done as initiator.
    pub kem_decapsulations: u64,
    /// Decrypted packets an identity's inbound rules dropped (§11.2).
    pub rule_dropped: u64,
    /// Record cookies sent instead of signing a record (record requests under load).
    pub record_cookies_sent: u64,
    /// Signals (session control messages) that did not parse.
    pub bad_signals: u64,
    /// Hole punches started, succeeded (moved a peer to a direct path) and failed.
    pub punches_started: u64,
    pub punches_succeeded: u64,
    pub punches_failed: u64,
    /// Direct paths that went silent and fell back to the relay.
    pub path_fallbacks: u64,
    /// Relay: messages and bytes forwarded between clients.
    pub relay_forwarded: u64,
    pub relay_forwarded_bytes: u64,
    /// Relay: messages from an endpoint with no reservation (or to a node that is no
    /// relay), dropped.
    pub relay_unbound: u64,
    /// Relay: messages refused (no reservation at the destination, over the session
    /// limit, relay full).
    pub relay_refused: u64,
    /// Relay: messages over the sender's rate cap, dropped.
    pub relay_rate_limited: u64,
    /// Relayed messages from an endpoint that is none of our relays, dropped.
    pub relay_unsolicited: u64,
    /// Refusals our relays sent us.
    pub relay_refusals_received: u64,
    /// Reservations found lost (the relay stopped answering): sessions re-made.
    pub relay_reservations_lost: u64,
}

/// Per-peer counters and state, for `metanet peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Which local identity this peer belongs to.
    pub local: LocalId,
    /// The peer's address.
    pub address: Address,
    /// Its overlay IPv6.
    pub ipv6: Ipv6Addr,
    /// Where it is reached.
    pub endpoint: Option<SocketAddr>,
    /// Unix time of the last completed handshake.
    pub last_handshake: Option<UnixTime>,
    /// Whether a usable session exists.
    pub connected: bool,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
    /// Plaintext bytes sent.
    pub tx_bytes: u64,
    /// Data packets received.
    pub rx_packets: u64,
    /// Data packets sent.
    pub tx_packets: u64,
    /// Packets to this peer dropped (its queue full, its handshake gave up, a seal
    /// failed); also counted in [`Stats::queue_dropped`].
    pub dropped: u64,
    /// Round-trip time of the last handshake we initiated.
    pub rtt: Option<Duration>,
    /// The data cipher of the current session, when one is up.
    pub cipher: Option<crate::session::Cipher>,
    /// The KEM of the current session's hybrid handshake, when one is up and hybrid.
    pub pq: Option<crate::pq::Kem>,
    /// The path its packets take now.
    pub path: Path,
    /// The address of the relay it is reached through, when relayed.
    pub relay: Option<Address>,
}

/// The endpoint state machine.
#[derive(Debug)]
pub struct Node {
    config: Config,
    rng: Rng,
    mono_origin: Instant,
    unix_origin: UnixTime,
    locals: Vec<Option<Local>>,
    peers: PeerTable,
    /// Every peer's earliest timer deadline (kept current by `flush_timers`).
    deadlines: DeadlineQueue,
    by_ip: BTreeMap<(LocalId, Ipv6Addr), PeerId>,
    by_index: BTreeMap<u32, PeerId>,
    /// Addresses refused on every local identity ([`Command::Deny`]).
    denied: BTreeSet<Address>,
    /// Flows local identities with inbound rules opened (their replies pass, §11.2).
    flows: policy::Flows,
    lookups: BTreeMap<(LocalId, Ipv6Addr), PendingLookup>,
    /// Cookies received per responder endpoint, shared by every peer there (bounded).
    endpoint_cookies: BTreeMap<SocketAddr, crate::handshake::Cookie>,
    /// Record cookies received per endpoint, shared by every probe there (bounded).
    endpoint_record_cookies: BTreeMap<SocketAddr, ([u8; wire::MAC_LEN], Instant)>,
    probes: BTreeMap<u32, Probe>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    load: LoadCounter,
    /// Record requests counted apart from initiations (§5.5).
    record_load: LoadCounter,
    record_cookies: SourceCookies,
    /// The relay's side, when this node is a relay.
    relay: Option<RelayServer>,
    /// Our endpoint as each observer sees it, and when (bounded).
    observed: BTreeMap<SocketAddr, (SocketAddr, Instant)>,
    /// Our local endpoints (the driver's), offered as candidates.
    candidates: Vec<SocketAddr>,
    /// Whether we have seen ourselves behind a NAT: NAT keepalives for every peer.
    nat_seen: bool,
    stats: Stats,
}

/// One local identity and what checks the handshakes sent to it.
#[derive(Debug)]
struct Local {
    identity: Identity,
    checker: CookieChecker,
    ipv6: Ipv6Addr,
    /// Publishes no endpoints: reached and reaching only through its relays.
    hidden: bool,
    /// The relays it keeps a reservation with.
    relays: Vec<RelayUse>,
    /// Who may connect and what reaches it (§11), with its counters.
    policy: Policy,
    policy_counts: PolicyCounts,
    /// Its closed groups' network keys (§11.3).
    network_keys: epoch::NetworkKeys,
    /// The routes it chose and what it serves as a gateway.
    routing: routes::Routing,
}

/// What a local identity's policy refused and decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    /// Initiations refused by the allow list.
    pub refused: u64,
    /// Packets each rule decided (allowed or dropped), in rule order.
    pub rule_hits: Vec<u64>,
    /// Packets no rule matched, dropped (default deny).
    pub default_dropped: u64,
}

impl Node {
    /// A node with no identities. `seed` drives all randomness (indices, ephemeral keys,
    /// cookie secrets); `now` and `unix_now` anchor the two clocks.
    pub fn new(config: Config, seed: [u8; 32], now: Instant, unix_now: UnixTime) -> Self {
        let relay = config.relay.map(|limits| RelayServer::new(limits, now));
        Node {
            config,
            rng: Rng::from_seed(seed),
            mono_origin: now,
            unix_origin: unix_now,
            locals: Vec::new(),
            peers: PeerTable::default(),
            deadlines: DeadlineQueue::default(),
            by_ip: BTreeMap::new(),
            by_index: BTreeMap::new(),
            denied: BTreeSet::new(),
            flows: policy::Flows::default(),
            lookups: BTreeMap::new(),
            endpoint_cookies: BTreeMap::new(),
            endpoint_record_cookies: BTreeMap::new(),
            probes: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            load: LoadCounter::new(now),
            record_load: LoadCounter::new(now),
            // Its own generator, so the node's sequence (indices, ephemerals) stays as
            // it was without record cookies.
            record_cookies: SourceCookies::new(blake3::derive_key(
                "metanet v1 record cookie secret",
                &seed,
            )),
            relay,
            observed: BTreeMap::new(),
            candidates: Vec::new(),
            nat_seen: false,
            stats: Stats::default(),
        }
    }

    /// Add a local identity; its overlay address starts accepting traffic.
    pub fn add_identity(&mut self, identity: Identity) -> LocalId {
        let checker = CookieChecker::new(&identity.noise().public_key(), self.rng.bytes());
        let ipv6 = identity.address().ipv6();
        let local = Local {
            identity,
            checker,
            ipv6,
            hidden: false,
            relays: Vec::new(),
            policy: Policy::default(),
            policy_counts: PolicyCounts::default(),
            network_keys: epoch::NetworkKeys::default(),
            routing: routes::Routing::default(),
        };
        if let Some(i) = self.locals.iter().position(Option::is_none) {
            self.locals[i] = Some(local);
            return LocalId(i as u16);
        }
        self.locals.push(Some(local));
        LocalId((self.locals.len() - 1) as u16)
    }

    /// Remove a local identity and all its peers.
    pub fn remove_identity(&mut self, local: LocalId) -> Option<Identity> {
        let slot = self.locals.get_mut(usize::from(local.0))?;
        let removed = slot.take()?;
        for id in self.peers_of(local) {
            self.drop_peer(id);
        }
        self.lookups.retain(|(l, _), _| *l != local);
        self.flows.forget(removed.ipv6);
        self.flush_timers();
        Some(removed.identity)
    }

    /// The local identity for an id.
    pub fn identity(&self, local: LocalId) -> Option<&Identity> {
        self.local(local).map(|l| &l.identity)
    }

    /// Local identities, in id order.
    pub fn identities(&self) -> impl Iterator<Item = (LocalId, &Identity)> {
        self.locals
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (LocalId(i as u16), &l.identity)))
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Status of every peer, in a stable order.
    pub fn peers(&self, now: Instant) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(_, p)| self.status_of(p, now))
            .collect()
    }

    /// The state of `local`'s peer `address`, if it has one: one map lookup, not a
    /// scan (what a driver asks about the peer it is waiting for).
    pub fn peer(&self, now: Instant, local: LocalId, address: &Address) -> Option<PeerStatus> {
        let id = self.by_ip.get(&(local, address.ipv6()))?;
        self.peers
            .get(*id)
            .filter(|p| p.address == *address)
            .map(|p| self.status_of(p, now))
    }

    /// Carry out a driver command.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> Result<(), CommandError> {
        let result = self.command(now, command);
        self.flush_timers();
        result
    }

    fn command(&mut self, now: Instant, command: Command) -> Result<(), CommandError> {
        match command {
            Command::AddPeer {
                local,
                remote,
                endpoint,
                candidates,
                relay,
                connect,
            } => {
                if let Some(relay) = relay {
                    self.use_relay(now, local, relay);
                }
                let paths = table::NewPaths {
                    endpoint,
                    candidates,
                    relay: relay.map(|r| r.endpoint),
                };
                self.add_peer(now, local, remote, connect, Origin::Driver, paths)
                    .map(|_| ())
            }
            Command::SetRelays { local, relays } => {
                if self.local(local).is_none() {
                    return Err(CommandError::UnknownLocal);
                }
                self.set_relays(now, local, relays);
                Ok(())
            }
            Command::SetHidden { local, hidden } => {
                let Some(l) = self.local_mut(local) else {
                    return Err(CommandError::UnknownLocal);
                };
                l.hidden = hidden;
                let relays = l.relays.iter().map(|r| r.relay).collect();
                self.set_relays(now, local, relays);
                Ok(())
            }
            Command::SetCandidates { mut candidates } => {
                candidates.truncate(crate::signal::MAX_CANDIDATES);
                self.candidates = candidates;
                Ok(())
            }
            Command::Connect {
                local,
                address,
                endpoint,
            } => self.connect(now, local, address, endpoint),
            Command::RemovePeer { local, address } => {
                let id = *self
                    .by_ip
                    .get(&(local, address.ipv6()))
                    .ok_or(CommandError::UnknownPeer)?;
                self.drop_peer(id);
                Ok(())
            }
            Command::LookupFailed { local, ipv6 } => {
                self.drop_lookup(local, ipv6);
                Ok(())
            }
            Command::Deny { address } => self.deny(address),
            Command::SetPolicy { local, policy } => self.set_policy(local, policy),
            Command::SetNetworkKeys { local, keys } => self.set_network_keys(now, local, keys),
            Command::SetRoutes { local, routes } => {
                let l = self.local_mut(local).ok_or(CommandError::UnknownLocal)?;
                l.routing.set_routes(routes).map_err(CommandError::BadRoute)
            }
            Command::SetGateway {
                local,
                served,
                exit,
            } => {
                let l = self.local_mut(local).ok_or(CommandError::UnknownLocal)?;
                l.routing.set_served(served, exit);
                Ok(())
            }
        }
    }

    /// [`Command::SetNetworkKeys`].
    fn set_network_keys(
        &mut self,
        now: Instant,
        local: LocalId,
        keys: Vec<NetworkKey>,
    ) -> Result<(), CommandError> {
        if keys.len() > MAX_NETWORK_KEYS || keys.iter().any(|k| k.members.len() > MAX_MEMBERS) {
            return Err(CommandError::TooManyNetworkKeys);
        }
        let Some(l) = self.local_mut(local) else {
            return Err(CommandError::UnknownLocal);
        };
        let gone = l.network_keys.set(now, keys);
        let drop: Vec<PeerId> = self
            .peers_of(local)
            .into_iter()
            .filter(|&id| {
                self.peers
                    .get(id)
                    .is_some_and(|p| gone.contains(&p.address))
            })
            .collect();
        for id in drop {
            self.drop_peer(id);
        }
        Ok(())
    }

    /// `local`'s closed groups at `now` (no key bytes).
    pub fn network_keys(&self, now: Instant, local: LocalId) -> Option<Vec<NetworkKeyStatus>> {
        let l = self.locals.get(usize::from(local.0))?.as_ref()?;
        Some(l.network_keys.status(now))
    }

    /// [`Command::SetPolicy`].
    fn set_policy(&mut self, local: LocalId, policy: Policy) -> Result<(), CommandError> {
        policy.check().map_err(CommandError::BadPolicy)?;
        let Some(l) = self.local_mut(local) else {
            return Err(CommandError::UnknownLocal);
        };
        l.policy_counts = PolicyCounts {
            rule_hits: vec![0; policy.rules.len()],
            ..Default::default()
        };
        let ipv6 = l.ipv6;
        let old = std::mem::replace(&mut l.policy, policy);
        self.flows.forget(ipv6);
        // Peers the allow list no longer admits go now: inbound ones, and those it
        // listed before (a member removed from a group). A peer this identity
        // connected to without ever listing it stays: the list says who may connect
        // *to* it.
        let new = self
            .locals
            .get(usize::from(local.0))
            .and_then(Option::as_ref);
        let refused: Vec<PeerId> = self
            .peers_of(local)
            .into_iter()
            .filter(|&id| {
                self.peers.get(id).is_some_and(|p| {
                    let admitted = new.is_some_and(|l| l.policy.admits(&p.address));
                    let listed_before = old.allow.as_ref().is_some_and(|a| a.contains(&p.address));
                    !admitted && (p.origin == peer::Origin::Inbound || listed_before)
                })
            })
            .collect();
        for id in refused {
            self.drop_peer(id);
        }
        Ok(())
    }

    /// `local`'s policy and what it counted.
    pub fn policy(&self, local: LocalId) -> Option<(&Policy, &PolicyCounts)> {
        let l = self.locals.get(usize::from(local.0))?.as_ref()?;
        Some((&l.policy, &l.policy_counts))
    }

    /// [`Command::Deny`]: refuse `address` from now on and drop everything of it.
    fn deny(&mut self, address: Address) -> Result<(), CommandError> {
        if !self.denied.contains(&address) && self.denied.len() >= MAX_DENIED {
            return Err(CommandError::TooManyDenied);
        }
        self.denied.insert(address);
        let ipv6 = address.ipv6();
        let ids: Vec<PeerId> = self
            .by_ip
            .iter()
            .filter(|((_, ip), _)| *ip == ipv6)
            .map(|(_, &id)| id)
            .collect();
        for id in ids {
            self.drop_peer(id);
        }
        self.probes.retain(|_, p| p.address != address);
        let waiting: Vec<(LocalId, Ipv6Addr)> = self
            .lookups
            .keys()
            .filter(|(_, ip)| *ip == ipv6)
            .copied()
            .collect();
        for (local, ip) in waiting {
            self.drop_lookup(local, ip);
        }
        Ok(())
    }

    /// A datagram arrived from `from`. Data is decrypted in place; the returned range of
    /// `datagram` is an IPv6 packet for the TUN.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Option<Range<usize>> {
        match self.handle_datagram_forwarding(now, from, datagram) {
            Received::Nothing => None,
            Received::Tun(range) => Some(range),
            Received::Forward { to, start } => {
                if let Some(bytes) = datagram.get(start..) {
                    self.transmits.push_back((to, bytes.to_vec()));
                }
                None
            }
        }
    }

    /// [`Node::handle_datagram`] for a driver that forwards relay traffic itself: a
    /// relay message is rewritten in place and handed back to send whole
    /// ([`Received::Forward`]), not copied into the transmit queue.
    pub fn handle_datagram_forwarding(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Received {
        let received = match wire::classify(datagram) {
            Ok(Kind::Relay) => match self.relay_forward(now, from, datagram) {
                Forward::To { to, start } => Received::Forward { to, start },
                Forward::Dropped(refusal) => {
                    if let Some((id, signal)) = refusal {
                        self.send_signal(now, id, &signal, None);
                    }
                    Received::Nothing
                }
            },
            Ok(Kind::Relayed) => self.on_relayed(now, from, datagram),
            _ => match self.on_message(now, Via::Direct(from), datagram) {
                Some(r) => Received::Tun(r),
                None => Received::Nothing,
            },
        };
        self.flush_timers();
        received
    }

    /// A relayed message from one of our relays: the inner message, from the client
    /// the header names, is handled as if it came through that relay.
    fn on_relayed(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) -> Received {
        if !self.is_relay_endpoint(from) {
            self.stats.relay_unsolicited += 1;
            return Received::Nothing;
        }
        let Ok(packet) = wire::RelayPacket::new_checked(&*datagram) else {
            self.stats.malformed += 1;
            return Received::Nothing;
        };
        if !packet.is_relayed() {
            self.stats.malformed += 1;
            return Received::Nothing;
        }
        let via = Via::Relay {
            relay: from,
            peer: packet.source(),
        };
        let h = wire::RELAYED_HEADER_LEN;
        let inner = &mut datagram[h..];
        match self.on_message(now, via, inner) {
            Some(r) => Received::Tun(r.start + h..r.end + h),
            None => Received::Nothing,
        }
    }

    /// One metanet message (not a relay message) that came `via`.
    fn on_message(&mut self, now: Instant, via: Via, datagram: &mut [u8]) -> Option<Range<usize>> {
        let from = via.socket();
        let direct = matches!(via, Via::Direct(_));
        match wire::classify(datagram) {
            Err(_) | Ok(Kind::Relay | Kind::Relayed) => {
                self.stats.malformed += 1;
                None
            }
            Ok(Kind::Initiation) => {
                self.on_initiation(now, via, datagram);
                None
            }
            Ok(Kind::Response) => {
                self.on_response(now, via, datagram);
                None
            }
            Ok(Kind::CookieReply) => {
                self.on_cookie_reply(now, datagram);
                None
            }
            Ok(Kind::Data) => self.on_data(now, via, datagram),
            // Record exchanges are never relayed.
            Ok(Kind::RecordRequest | Kind::RecordCookie | Kind::RecordResponse) if !direct => {
                self.stats.malformed += 1;
                None
            }
            Ok(Kind::RecordRequest) => {
                self.on_record_request(now, from, datagram);
                None
            }
            Ok(Kind::RecordCookie) => {
                self.on_record_cookie(now, from, datagram);
                None
            }
            Ok(Kind::RecordResponse) => {
                self.on_record_response(now, from, datagram);
                None
            }
        }
    }

    /// An IPv6 packet from the TUN. With a usable session it is sealed into `out`
    /// (which needs `packet.len() + wire::DATA_OVERHEAD` bytes, and
    /// `wire::RELAY_HEADER_LEN` more for a relayed peer) and returned for sending
    /// now; otherwise it is queued (or dropped and counted) and `None` is returned.
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let sent = self.tun_packet(now, packet, out);
        self.flush_timers();
        sent
    }

    /// [`Node::handle_tun_packet`] for a packet already in place: it is
    /// `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]`, and `buf` has room for the tag
    /// after it (and for a relay header, `wire::RELAY_HEADER_LEN` more, when the peer
    /// is relayed). Sealed where it lies, which saves the data path a copy.
    pub fn handle_tun_packet_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        let sent = self.tun_packet_in_place(now, buf, len);
        self.flush_timers();
        sent
    }

    /// Fire due timers: handshake retries and give-ups, keepalives, rekeys, expiry.
    /// Only the peers whose deadlines passed are visited, in peer-slot order.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire_peer_timers(now);
        self.probe_timers(now);
        self.expire_lookups(now);
        self.relay_client_timers(now);
        self.flush_timers();
    }

    /// The next datagram to send, copied into `buf` (which should hold
    /// `wire::MAX_DATAGRAM` bytes; a datagram that does not fit is dropped).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((destination, bytes)) = self.transmits.pop_front() {
            if let Some(dst) = buf.get_mut(..bytes.len()) {
                dst.copy_from_slice(&bytes);
                return Some(Transmit {
                    destination,
                    len: bytes.len(),
                });
            }
            self.stats.queue_dropped += 1;
        }
        None
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether [`Node::poll_event`] has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When `handle_timeout` must next be called: the earliest of every timer it acts
    /// on (handshake retry and give-up, passive and persistent keepalives, the reply
    /// timeout, keypair expiry, lookup expiry, record requests). It may be in the past,
    /// meaning "now". The peers' part is the head of the deadline queue; lookups and
    /// record requests (each bounded) are scanned.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.deadlines.peek().map(|d| d.at);
        let lookups = self.lookups.values().map(PendingLookup::deadline);
        let probes = self.probes.values().map(|p| p.next_at);
        let relays = self.relay_client_deadline();
        peers
            .into_iter()
            .chain(lookups)
            .chain(probes)
            .chain(relays)
            .min()
    }

    // ------------------------------------------------------------ internals

    fn local(&self, local: LocalId) -> Option<&Local> {
        self.locals
            .get(usize::from(local.0))
            .and_then(Option::as_ref)
    }

    fn local_mut(&mut self, local: LocalId) -> Option<&mut Local> {
        self.locals
            .get_mut(usize::from(local.0))
            .and_then(Option::as_mut)
    }

    /// Make sure `local` reserves with `relay` (a peer's relay it must be bound to, to
    /// send through it), within [`relay::MAX_RELAYS_PER_IDENTITY`].
    fn use_relay(&mut self, now: Instant, local: LocalId, relay: Relay) {
        let Some(l) = self.local_mut(local) else {
            return;
        };
        if l.relays.iter().any(|r| r.relay.address == relay.address)
            || l.relays.len() >= relay::MAX_RELAYS_PER_IDENTITY
        {
            return;
        }
        l.relays.push(RelayUse {
            relay,
            reserved_until: None,
            next_at: now,
            answer_by: None,
        });
    }

    /// The keepalive interval for peer `p`: the persistent one, else the NAT one when
    /// its path crosses a NAT (a relay, or we are behind one).
    fn keepalive_for(&self, p: &peer::Peer) -> Option<Duration> {
        self.config.persistent_keepalive.or(self
            .config
            .nat_keepalive
            .filter(|_| self.nat_seen || p.paths.relay.is_some()))
    }

    /// What [`Node::peers`] shows of one peer.
    fn status_of(&self, p: &peer::Peer, now: Instant) -> PeerStatus {
        let usable = p.keys.current.as_ref().filter(|k| k.is_usable(now));
        let path = p.path();
        let relay = match path {
            Path::Relay(endpoint) => self.relay_address(p.local, endpoint),
            _ => None,
        };
        PeerStatus {
            local: p.local,
            address: p.address,
            ipv6: p.ipv6,
            endpoint: p.endpoint,
            last_handshake: p.handshake.completed.map(|(_, u)| u),
            connected: usable.is_some(),
            rx_bytes: p.counters.rx_bytes,
            tx_bytes: p.counters.tx_bytes,
            rx_packets: p.counters.rx_packets,
            tx_packets: p.counters.tx_packets,
            dropped: p.counters.dropped,
            rtt: p.handshake.rtt,
            cipher: usable.map(|k| k.cipher),
            pq: usable.and_then(|k| k.pq),
            path,
            relay,
        }
    }

    fn local_for_ip(&self, ip: &Ipv6Addr) -> Option<LocalId> {
        self.locals
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.ipv6 == *ip))
            .map(|i| LocalId(i as u16))
    }

    fn unix(&self, now: Instant) -> UnixTime {
        self.unix_origin + now.saturating_duration_since(self.mono_origin)
    }

    fn new_index(&mut self) -> u32 {
        loop {
            let i = self.rng.u32();
            if i != 0 && !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }
}
