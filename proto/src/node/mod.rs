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
//! Determinism: maps are `BTreeMap`s and peers live in a `Vec`, so a run replays
//! exactly from the same seed and inputs.

use core::ops::Range;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::address::Address;
use crate::handshake::{
    self, Cookie, CookieChecker, ExpectResponse, Psk, Remote, SourceCookies, COOKIE_SECRET_LIFETIME,
};
use crate::identity::Identity;
use crate::ip::Ipv6Packet;
use crate::rng::Rng;
use crate::session::{self, Keypair};
use crate::time::{Instant, UnixTime};
use crate::wire::{
    self, CookieReplyPacket, CookieReplyRepr, DataPacket, InitiationPacket, ResponsePacket,
};

/// How long a registry lookup may stay unanswered before its queued packets are dropped.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between record requests to an endpoint given by hand.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Record requests sent before a connect by endpoint gives up.
pub const PROBE_ATTEMPTS: u32 = 10;
/// Validity of the records a node hands out in record responses.
pub const ANSWER_RECORD_TTL: Duration = Duration::from_secs(3600);
/// Width of the window over which handshake load is counted.
const LOAD_WINDOW: Duration = Duration::from_secs(1);
/// Most source addresses one load window tracks; sources beyond it wait for the next.
const MAX_SOURCES_PER_WINDOW: usize = 4096;
/// An inbound-created peer quiet for this long may be evicted to make room for a new
/// peer when the table is full (docs/protocol.md §7.6): a peer in a live exchange is
/// heard from sooner (a keepalive answers data within `KEEPALIVE_TIMEOUT`, and a side
/// that hears nothing re-handshakes after `REKEY_TIMEOUT` more).
const EVICT_IDLE: Duration =
    Duration::from_secs(session::KEEPALIVE_TIMEOUT.as_secs() + session::REKEY_TIMEOUT.as_secs());
/// Keypairs we initiated are renewed on receive once this old, before the peer must.
const REKEY_ON_RECEIVE: Duration = Duration::from_secs(180 - 10 - 5);

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            psk: [0; 32],
            max_peers: 4096,
            queue_per_peer: 128,
            max_pending_lookups: 256,
            load_threshold: 64,
            per_source_rate: 8,
            record_load_threshold: 64,
            persistent_keepalive: None,
            aes_256_gcm: false,
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
    AddPeer {
        local: LocalId,
        remote: Remote,
        endpoint: Option<SocketAddr>,
        connect: bool,
    },
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
    #[error("a peer cannot be one of this node's own identities")]
    SelfPeer,
    #[error("the address is refused (revoked)")]
    Denied,
    #[error("the list of refused addresses is full")]
    TooManyDenied,
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
    /// Record cookies sent instead of signing a record (record requests under load).
    pub record_cookies_sent: u64,
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
}

/// The endpoint state machine.
#[derive(Debug)]
pub struct Node {
    config: Config,
    rng: Rng,
    mono_origin: Instant,
    unix_origin: UnixTime,
    locals: Vec<Option<Local>>,
    peers: Vec<Option<Peer>>,
    by_ip: BTreeMap<(LocalId, Ipv6Addr), usize>,
    by_index: BTreeMap<u32, usize>,
    /// Addresses refused on every local identity ([`Command::Deny`]).
    denied: BTreeSet<Address>,
    lookups: BTreeMap<(LocalId, Ipv6Addr), PendingLookup>,
    probes: BTreeMap<u32, Probe>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    load: LoadCounter,
    /// Record requests counted apart from initiations (§5.5).
    record_load: LoadCounter,
    record_cookies: SourceCookies,
    stats: Stats,
}

#[derive(Debug)]
struct Local {
    identity: Identity,
    checker: CookieChecker,
    ipv6: Ipv6Addr,
}

#[derive(Debug)]
struct Probe {
    local: LocalId,
    address: Address,
    endpoint: SocketAddr,
    sent: u32,
    next_at: Instant,
    /// The record cookie the endpoint gave us, and when it arrived.
    cookie: Option<([u8; wire::MAC_LEN], Instant)>,
}

#[derive(Debug)]
struct PendingLookup {
    queue: VecDeque<Vec<u8>>,
    since: Instant,
}

#[derive(Debug)]
struct Peer {
    local: LocalId,
    remote: Remote,
    address: Address,
    ipv6: Ipv6Addr,
    endpoint: Option<SocketAddr>,
    handshake: Option<Attempt>,
    cookie: Option<Cookie>,
    previous: Option<Keypair>,
    current: Option<Keypair>,
    next: Option<Keypair>,
    queue: VecDeque<Vec<u8>>,
    last_init_timestamp: Option<UnixTime>,
    last_sent_init_timestamp: Option<UnixTime>,
    last_handshake: Option<(Instant, UnixTime)>,
    last_sent: Option<Instant>,
    /// Who created the peer: the driver's peers stay until removed, inbound ones are
    /// forgotten when idle (§7.6).
    origin: Origin,
    /// When the peer was created, last completed a handshake, or last sent us an
    /// authenticated packet.
    last_active: Instant,
    /// Send a keepalive at this time unless something else is sent first.
    keepalive_at: Option<Instant>,
    /// Start a handshake at this time unless something is received first.
    reply_due: Option<Instant>,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
    dropped: u64,
    rtt: Option<Duration>,
}

/// How a peer came to be in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Added by the driver: [`Command::AddPeer`] (configuration, a registry lookup) or a
    /// completed [`Command::Connect`]. Kept until [`Command::RemovePeer`].
    Driver,
    /// Created by an initiation we accepted from a peer nobody asked for.
    Inbound,
}

#[derive(Debug)]
struct Attempt {
    /// `None` once a bad response consumed the Noise state; the retry timer still runs.
    state: Option<ExpectResponse>,
    sender: u32,
    started: Instant,
    sent_at: Instant,
    retry_at: Instant,
}

#[derive(Debug, Default)]
struct LoadCounter {
    window_start: Instant,
    total: u32,
    previous_total: u32,
    per_source: BTreeMap<IpAddr, u32>,
}

impl Node {
    /// A node with no identities. `seed` drives all randomness (indices, ephemeral keys,
    /// cookie secrets); `now` and `unix_now` anchor the two clocks.
    pub fn new(config: Config, seed: [u8; 32], now: Instant, unix_now: UnixTime) -> Self {
        Node {
            config,
            rng: Rng::from_seed(seed),
            mono_origin: now,
            unix_origin: unix_now,
            locals: Vec::new(),
            peers: Vec::new(),
            by_ip: BTreeMap::new(),
            by_index: BTreeMap::new(),
            denied: BTreeSet::new(),
            lookups: BTreeMap::new(),
            probes: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            load: LoadCounter {
                window_start: now,
                ..LoadCounter::default()
            },
            record_load: LoadCounter {
                window_start: now,
                ..LoadCounter::default()
            },
            // Its own generator, so the node's sequence (indices, ephemerals) stays as
            // it was without record cookies.
            record_cookies: SourceCookies::new(blake3::derive_key(
                "metanet v1 record cookie secret",
                &seed,
            )),
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
        let ids: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| p.local == local))
            .collect();
        for id in ids {
            self.drop_peer(id);
        }
        self.lookups.retain(|(l, _), _| *l != local);
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
            .flatten()
            .map(|p| PeerStatus {
                local: p.local,
                address: p.address,
                ipv6: p.ipv6,
                endpoint: p.endpoint,
                last_handshake: p.last_handshake.map(|(_, u)| u),
                connected: p.current.as_ref().is_some_and(|k| k.is_usable(now)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                dropped: p.dropped,
                rtt: p.rtt,
                cipher: p
                    .current
                    .as_ref()
                    .filter(|k| k.is_usable(now))
                    .map(|k| k.cipher),
            })
            .collect()
    }

    /// Carry out a driver command.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> Result<(), CommandError> {
        match command {
            Command::AddPeer {
                local,
                remote,
                endpoint,
                connect,
            } => self
                .add_peer(now, local, remote, endpoint, connect, Origin::Driver)
                .map(|_| ()),
            Command::Connect {
                local,
                address,
                endpoint,
            } => {
                if self.local(local).is_none() {
                    return Err(CommandError::UnknownLocal);
                }
                if self.local_for_ip(&address.ipv6()).is_some() {
                    return Err(CommandError::SelfPeer);
                }
                if self.denied.contains(&address) {
                    return Err(CommandError::Denied);
                }
                if let Some(&id) = self.by_ip.get(&(local, address.ipv6())) {
                    if let Some(p) = self.peers[id].as_mut() {
                        p.endpoint = Some(endpoint);
                    }
                    self.start_handshake(now, id);
                    return Ok(());
                }
                self.probes
                    .retain(|_, p| !(p.local == local && p.address == address));
                let nonce = self.rng.u32();
                self.probes.insert(
                    nonce,
                    Probe {
                        local,
                        address,
                        endpoint,
                        sent: 0,
                        next_at: now,
                        cookie: None,
                    },
                );
                self.probe_timers(now);
                Ok(())
            }
            Command::RemovePeer { local, address } => {
                let id = *self
                    .by_ip
                    .get(&(local, address.ipv6()))
                    .ok_or(CommandError::UnknownPeer)?;
                self.drop_peer(id);
                Ok(())
            }
            Command::LookupFailed { local, ipv6 } => {
                if let Some(l) = self.lookups.remove(&(local, ipv6)) {
                    self.stats.queue_dropped += l.queue.len() as u64;
                }
                Ok(())
            }
            Command::Deny { address } => {
                if !self.denied.contains(&address) && self.denied.len() >= MAX_DENIED {
                    return Err(CommandError::TooManyDenied);
                }
                self.denied.insert(address);
                let ipv6 = address.ipv6();
                let ids: Vec<usize> = self
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
                for key in waiting {
                    if let Some(l) = self.lookups.remove(&key) {
                        self.stats.queue_dropped += l.queue.len() as u64;
                    }
                }
                Ok(())
            }
        }
    }

    /// A datagram arrived from `from`. Data is decrypted in place; the returned range of
    /// `datagram` is an IPv6 packet for the TUN.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Option<Range<usize>> {
        match wire::classify(datagram) {
            Err(_) => {
                self.stats.malformed += 1;
                None
            }
            Ok(wire::Kind::Initiation) => {
                self.on_initiation(now, from, datagram);
                None
            }
            Ok(wire::Kind::Response) => {
                self.on_response(now, from, datagram);
                None
            }
            Ok(wire::Kind::CookieReply) => {
                self.on_cookie_reply(now, datagram);
                None
            }
            Ok(wire::Kind::Data) => self.on_data(now, from, datagram),
            Ok(wire::Kind::RecordRequest) => {
                self.on_record_request(now, from, datagram);
                None
            }
            Ok(wire::Kind::RecordCookie) => {
                self.on_record_cookie(now, from, datagram);
                None
            }
            Ok(wire::Kind::RecordResponse) => {
                self.on_record_response(now, from, datagram);
                None
            }
        }
    }

    /// An IPv6 packet from the TUN. With a usable session it is sealed into `out`
    /// (which needs `packet.len() + wire::DATA_OVERHEAD` bytes) and returned for sending
    /// now; otherwise it is queued (or dropped and counted) and `None` is returned.
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let id = self.tun_target(now, packet)?;
        let Some(buf) = out.get_mut(..packet.len() + wire::DATA_OVERHEAD) else {
            self.stats.queue_dropped += 1;
            return None;
        };
        buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + packet.len()].copy_from_slice(packet);
        self.send_data(now, id, buf, packet.len())
    }

    /// [`Node::handle_tun_packet`] for a packet already in place: it is
    /// `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]`, and `buf` has room for the tag
    /// after it. Sealed where it lies, which saves the data path a copy.
    pub fn handle_tun_packet_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        let Some(packet) = buf.get(wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len) else {
            self.stats.queue_dropped += 1;
            return None;
        };
        let id = self.tun_target(now, packet)?;
        let Some(buf) = buf.get_mut(..len + wire::DATA_OVERHEAD) else {
            self.stats.queue_dropped += 1;
            return None;
        };
        self.send_data(now, id, buf, len)
    }

    /// The peer a TUN packet goes to; `None` when it was refused (counted) or queued
    /// for a lookup.
    fn tun_target(&mut self, now: Instant, packet: &[u8]) -> Option<usize> {
        // A longer packet would make a data message no receiver accepts (§7.1 step 1).
        if packet.len() > wire::MAX_DATA_PAYLOAD {
            self.stats.tun_invalid += 1;
            return None;
        }
        let Ok(ip) = Ipv6Packet::new_checked(packet) else {
            self.stats.tun_invalid += 1;
            return None;
        };
        let (src, dst) = (ip.src(), ip.dst());
        let Some(local) = self.local_for_ip(&src) else {
            self.stats.tun_invalid += 1;
            return None;
        };
        if dst.octets()[0] != crate::address::OVERLAY_FIRST_BYTE || dst == src {
            self.stats.tun_invalid += 1;
            return None;
        }
        let Some(&id) = self.by_ip.get(&(local, dst)) else {
            self.queue_for_lookup(now, local, dst, packet);
            return None;
        };
        Some(id)
    }

    /// Fire due timers: handshake retries and give-ups, keepalives, rekeys, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        for id in 0..self.peers.len() {
            self.peer_timers(now, id);
        }
        self.probe_timers(now);
        let expired: Vec<(LocalId, Ipv6Addr)> = self
            .lookups
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.since) >= LOOKUP_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(l) = self.lookups.remove(&k) {
                self.stats.queue_dropped += l.queue.len() as u64;
            }
        }
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
    /// meaning "now".
    pub fn poll_timeout(&self) -> Option<Instant> {
        let persistent = self.config.persistent_keepalive;
        let peers = self
            .peers
            .iter()
            .flatten()
            .filter_map(|p| p.next_deadline(persistent));
        let lookups = self.lookups.values().map(|l| l.since + LOOKUP_TIMEOUT);
        let probes = self.probes.values().map(|p| p.next_at);
        peers.chain(lookups).chain(probes).min()
    }

    /// Check the node's internal consistency, for tests and fuzzing: every session
    /// index names a live peer that holds a keypair or a handshake attempt with it and
    /// vice versa, the overlay-address map and the peer table agree, and every bound
    /// holds. Returns the first rule that is broken.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        for (&index, &id) in &self.by_index {
            let p = self
                .peers
                .get(id)
                .and_then(Option::as_ref)
                .ok_or("a session index names a removed peer")?;
            let held = p.keypairs().any(|k| k.local_index == index)
                || p.handshake.as_ref().is_some_and(|a| a.sender == index);
            if !held {
                return Err("a session index names a peer that no longer uses it");
            }
        }
        let mut live = 0;
        for (id, p) in self.peers.iter().enumerate() {
            let Some(p) = p else { continue };
            live += 1;
            if self.local(p.local).is_none() {
                return Err("a peer belongs to a removed identity");
            }
            if self.by_ip.get(&(p.local, p.ipv6)) != Some(&id) {
                return Err("a peer is missing from the overlay-address map");
            }
            let attempt = p
                .handshake
                .as_ref()
                .filter(|a| a.state.is_some())
                .map(|a| a.sender);
            for index in p.keypairs().map(|k| k.local_index).chain(attempt) {
                if self.by_index.get(&index) != Some(&id) {
                    return Err("a keypair or attempt index is not mapped to its peer");
                }
            }
            if p.queue.len() > self.config.queue_per_peer {
                return Err("a peer queue is over its bound");
            }
        }
        if self.by_ip.len() != live {
            return Err("the overlay-address map names a removed peer");
        }
        if live > self.config.max_peers {
            return Err("more peers than max_peers");
        }
        if self.lookups.len() > self.config.max_pending_lookups {
            return Err("more pending lookups than max_pending_lookups");
        }
        Ok(())
    }

    // ------------------------------------------------------------ internals

    fn local(&self, local: LocalId) -> Option<&Local> {
        self.locals
            .get(usize::from(local.0))
            .and_then(Option::as_ref)
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

    fn add_peer(
        &mut self,
        now: Instant,
        local: LocalId,
        remote: Remote,
        endpoint: Option<SocketAddr>,
        connect: bool,
        origin: Origin,
    ) -> Result<usize, CommandError> {
        if self.local(local).is_none() {
            return Err(CommandError::UnknownLocal);
        }
        let address = remote.public_key.address();
        let ipv6 = address.ipv6();
        if self.local_for_ip(&ipv6).is_some() {
            return Err(CommandError::SelfPeer);
        }
        if self.denied.contains(&address) {
            return Err(CommandError::Denied);
        }
        let mut start = connect;
        let id = match self.by_ip.get(&(local, ipv6)) {
            Some(&id) => {
                if let Some(p) = self.peers[id].as_mut() {
                    if endpoint.is_some() {
                        p.endpoint = endpoint;
                    }
                    if origin == Origin::Driver {
                        p.origin = Origin::Driver;
                    }
                }
                // A handshake that was under way goes on with the new key.
                start |= self.set_remote(id, remote);
                id
            }
            None => {
                if self.peers.iter().flatten().count() >= self.config.max_peers {
                    // Make room by forgetting the stranger quiet for longest (§7.6).
                    let victim = self
                        .peers
                        .iter()
                        .enumerate()
                        .filter_map(|(i, p)| Some((p.as_ref()?.idle_stranger_since()?, i)))
                        .filter(|(since, _)| now.saturating_duration_since(*since) >= EVICT_IDLE)
                        .min();
                    let Some((_, victim)) = victim else {
                        return Err(CommandError::TooManyPeers);
                    };
                    self.drop_peer(victim);
                }
                let peer = Peer::new(local, remote, endpoint, origin, now);
                let id = match self.peers.iter().position(Option::is_none) {
                    Some(i) => {
                        self.peers[i] = Some(peer);
                        i
                    }
                    None => {
                        self.peers.push(Some(peer));
                        self.peers.len() - 1
                    }
                };
                self.by_ip.insert((local, ipv6), id);
                id
            }
        };
        if let Some(waiting) = self.lookups.remove(&(local, ipv6)) {
            if let Some(p) = self.peers[id].as_mut() {
                for pkt in waiting.queue {
                    p.enqueue(pkt, self.config.queue_per_peer, &mut self.stats);
                }
                start |= !p.queue.is_empty();
            }
        }
        if start {
            self.start_handshake(now, id);
        }
        Ok(id)
    }

    fn drop_peer(&mut self, id: usize) {
        self.erase_sessions(id);
        let Some(p) = self.peers.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.by_ip.remove(&(p.local, p.ipv6));
    }

    /// Give peer `id` the keys `remote` (same address). If its Noise key changed, every
    /// keypair, handshake attempt and cookie made with the old key is erased and their
    /// indices freed: a rotated key may be a compromised one. Returns whether the key
    /// changed while a handshake was needed (an attempt ran or packets wait).
    fn set_remote(&mut self, id: usize, remote: Remote) -> bool {
        let Some(p) = self.peers[id].as_mut().filter(|p| p.remote != remote) else {
            return false;
        };
        p.remote = remote;
        p.cookie = None;
        let needed = p.handshake.is_some() || !p.queue.is_empty();
        self.erase_sessions(id);
        needed
    }

    /// Erase peer `id`'s keypairs and handshake attempt and free their indices.
    fn erase_sessions(&mut self, id: usize) {
        let Some(p) = self.peers.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let attempt = p.handshake.take().map(|a| a.sender);
        let keys = [p.previous.take(), p.current.take(), p.next.take()];
        for index in keys.iter().flatten().map(|k| k.local_index).chain(attempt) {
            free_index(&mut self.by_index, index, id);
        }
    }

    fn queue_for_lookup(&mut self, now: Instant, local: LocalId, dst: Ipv6Addr, packet: &[u8]) {
        let cap = self.config.queue_per_peer;
        if let Some(l) = self.lookups.get_mut(&(local, dst)) {
            if l.queue.len() >= cap {
                l.queue.pop_front();
                self.stats.queue_dropped += 1;
            }
            l.queue.push_back(packet.to_vec());
            return;
        }
        if self.lookups.len() >= self.config.max_pending_lookups {
            self.stats.queue_dropped += 1;
            return;
        }
        let mut queue = VecDeque::new();
        queue.push_back(packet.to_vec());
        self.lookups
            .insert((local, dst), PendingLookup { queue, since: now });
        self.events
            .push_back(Event::LookupNeeded { local, ipv6: dst });
    }

    /// Seal `packet` for peer `id` into `out`, or queue it and make sure a handshake runs.
    /// Seal the packet at `buf[DATA_HEADER_LEN..][..len]` for peer `id`, or queue it
    /// and start a handshake when there is no usable session.
    fn send_data(
        &mut self,
        now: Instant,
        id: usize,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        match self.seal_current(now, id, buf, len) {
            Sealed::Sent(t) => Some(t),
            Sealed::NoSession => {
                let packet = buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len].to_vec();
                let p = self.peers[id].as_mut()?;
                p.enqueue(packet, self.config.queue_per_peer, &mut self.stats);
                self.start_handshake(now, id);
                None
            }
            Sealed::Failed => {
                self.stats.queue_dropped += 1;
                if let Some(p) = self.peers[id].as_mut() {
                    p.dropped += 1;
                }
                None
            }
        }
    }

    /// Seal `packet` (possibly empty: a keepalive) on the current keypair into the
    /// transmit queue. Returns false if there is no usable keypair.
    fn send_queued(&mut self, now: Instant, id: usize, packet: &[u8]) -> bool {
        let mut buf = vec![0u8; packet.len() + wire::DATA_OVERHEAD];
        buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + packet.len()].copy_from_slice(packet);
        match self.seal_current(now, id, &mut buf, packet.len()) {
            Sealed::Sent(t) => {
                buf.truncate(t.len);
                self.transmits.push_back((t.destination, buf));
                true
            }
            Sealed::NoSession | Sealed::Failed => false,
        }
    }

    /// Seal the `len`-byte packet (0 for a keepalive) at `buf[DATA_HEADER_LEN..]` on
    /// peer `id`'s current keypair, in place. Every data message and keepalive goes through here, so each one
    /// counts as sent and keeps the initiator's keys fresh (docs/protocol.md §6.3, §7.5).
    fn seal_current(&mut self, now: Instant, id: usize, buf: &mut [u8], len: usize) -> Sealed {
        let Some(p) = self.peers[id].as_mut() else {
            return Sealed::Failed;
        };
        let (Some(endpoint), Some(kp)) =
            (p.endpoint, p.current.as_mut().filter(|k| k.is_usable(now)))
        else {
            return Sealed::NoSession;
        };
        let Ok(sealed) = kp.seal(buf, len, now) else {
            return Sealed::Failed;
        };
        let rekey = kp.wants_rekey(now);
        p.note_sent(now, len, len != 0);
        if rekey && p.handshake.is_none() {
            self.start_handshake(now, id);
        }
        Sealed::Sent(Transmit {
            destination: endpoint,
            len: sealed,
        })
    }

    fn flush_queue(&mut self, now: Instant, id: usize) {
        let queued: Vec<Vec<u8>> = match self.peers[id].as_mut() {
            Some(p) => p.queue.drain(..).collect(),
            None => return,
        };
        for pkt in &queued {
            if !self.send_queued(now, id, pkt) {
                self.stats.queue_dropped += 1;
                if let Some(p) = self.peers[id].as_mut() {
                    p.dropped += 1;
                }
            }
        }
    }

    fn start_handshake(&mut self, now: Instant, id: usize) {
        let Some(p) = self.peers[id].as_ref() else {
            return;
        };
        if p.handshake
            .as_ref()
            .is_some_and(|a| a.state.is_some() || a.retry_at > now)
        {
            return;
        }
        let started = p.handshake.as_ref().map_or(now, |a| a.started);
        self.send_initiation(now, id, started);
    }

    fn send_initiation(&mut self, now: Instant, id: usize, started: Instant) {
        let sender = self.new_index();
        let seed = self.rng.bytes();
        let jitter = Duration::from_millis(self.rng.below(334));
        let unix = self.unix(now);
        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        if let Some(old) = p.handshake.take() {
            free_index(&mut self.by_index, old.sender, id);
        }
        let retry_at = now + session::REKEY_TIMEOUT + jitter;
        let Some(endpoint) = p.endpoint else {
            // Nowhere to send: keep the attempt so it times out and reports failure.
            p.handshake = Some(Attempt {
                state: None,
                sender,
                started,
                sent_at: now,
                retry_at,
            });
            return;
        };
        // Timestamps must strictly increase even if the clock did not move.
        let ts = match p.last_sent_init_timestamp {
            Some(last) if last >= unix => UnixTime::from_nanos(last.as_nanos().saturating_add(1)),
            _ => unix,
        };
        let Some(local) = self
            .locals
            .get(usize::from(p.local.0))
            .and_then(Option::as_ref)
        else {
            return;
        };
        let cookie = p.cookie.as_ref().filter(|c| c.is_fresh(now));
        match handshake::initiate_offering(
            &local.identity,
            p.remote,
            &self.config.psk,
            sender,
            ts,
            cookie,
            seed,
            self.config.aes_256_gcm,
        ) {
            Ok((state, msg)) => {
                p.last_sent_init_timestamp = Some(ts);
                p.handshake = Some(Attempt {
                    state: Some(state),
                    sender,
                    started,
                    sent_at: now,
                    retry_at,
                });
                self.by_index.insert(sender, id);
                self.transmits.push_back((endpoint, msg));
            }
            Err(_) => {
                p.handshake = Some(Attempt {
                    state: None,
                    sender,
                    started,
                    sent_at: now,
                    retry_at,
                });
            }
        }
    }

    fn peer_timers(&mut self, now: Instant, id: usize) {
        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        // Expire keypairs past REJECT_AFTER_TIME.
        let mut retired = Vec::new();
        for slot in [&mut p.previous, &mut p.current, &mut p.next] {
            if slot.as_ref().is_some_and(|k| !k.is_usable(now)) {
                if let Some(k) = slot.take() {
                    retired.push(k.local_index);
                }
            }
        }
        let had_session = !retired.is_empty();
        let none_left = p.previous.is_none() && p.current.is_none() && p.next.is_none();
        let (local, address) = (p.local, p.address);
        for i in retired {
            free_index(&mut self.by_index, i, id);
        }
        if had_session && none_left {
            self.events
                .push_back(Event::SessionExpired { local, address });
        }

        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        // Handshake retry / give-up.
        if let Some(a) = &p.handshake {
            if now >= a.retry_at {
                if now.saturating_duration_since(a.started) >= session::REKEY_ATTEMPT_TIME {
                    let sender = a.sender;
                    p.handshake = None;
                    self.stats.queue_dropped += p.queue.len() as u64;
                    p.dropped += p.queue.len() as u64;
                    p.queue.clear();
                    p.reply_due = None;
                    free_index(&mut self.by_index, sender, id);
                    self.events
                        .push_back(Event::HandshakeFailed { local, address });
                } else {
                    let started = a.started;
                    self.send_initiation(now, id, started);
                }
            }
        }
        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        // No reply to data we sent: the session may be dead on the other side.
        if p.reply_due.is_some_and(|t| now >= t) {
            p.reply_due = None;
            if p.handshake.is_none() {
                self.start_handshake(now, id);
            }
        }
        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        // Passive keepalive after received data, and persistent keepalive.
        let persistent_due = p
            .persistent_keepalive_at(self.config.persistent_keepalive)
            .is_some_and(|t| now >= t);
        if p.keepalive_at.is_some_and(|t| now >= t) || persistent_due {
            p.keepalive_at = None;
            self.send_queued(now, id, &[]);
        }
        if self.peers[id]
            .as_ref()
            .and_then(Peer::forget_at)
            .is_some_and(|t| now >= t)
        {
            self.drop_peer(id);
        }
    }

    fn probe_timers(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .probes
            .iter()
            .filter(|(_, p)| p.next_at <= now)
            .map(|(n, _)| *n)
            .collect();
        for nonce in due {
            let Some(p) = self.probes.get_mut(&nonce) else {
                continue;
            };
            if p.sent >= PROBE_ATTEMPTS {
                let (local, address, endpoint) = (p.local, p.address, p.endpoint);
                self.probes.remove(&nonce);
                self.events.push_back(Event::ConnectFailed {
                    local,
                    address,
                    endpoint,
                });
                continue;
            }
            p.sent += 1;
            p.next_at = now + PROBE_INTERVAL;
            let repr = wire::RecordRequestRepr {
                nonce,
                target: *p.address.as_bytes(),
            };
            let mut buf = vec![0u8; wire::RECORD_REQUEST_LEN];
            match p.cookie {
                Some((cookie, at))
                    if now.saturating_duration_since(at) < COOKIE_SECRET_LIFETIME =>
                {
                    repr.emit_with_cookie(&mut buf, &cookie)
                }
                _ => repr.emit(&mut buf),
            }
            self.transmits.push_back((p.endpoint, buf));
        }
    }

    /// Answer a record request for one of our identities with a freshly signed record
    /// (no endpoints: the asker already knows where it reached us). Record requests
    /// have a load window of their own (§5.5): under load, a request without a valid
    /// cookie for its source gets a record cookie and nothing else, and one with a
    /// valid cookie is limited per source IP. Signing is cheap, but not free.
    fn on_record_request(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let Ok(packet) = wire::RecordRequestPacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let target = Address::from_bytes(packet.target());
        let Some(li) = self.local_for_ip(&target.ipv6()) else {
            return;
        };
        if self
            .local(li)
            .is_none_or(|l| l.identity.address() != target)
        {
            return;
        }
        if self
            .record_load
            .record(now, self.config.record_load_threshold)
        {
            let valid = packet
                .cookie()
                .is_some_and(|c| self.record_cookies.check(from, &c, now));
            if !valid {
                let reply = wire::RecordCookieRepr {
                    nonce: packet.nonce(),
                    cookie: self.record_cookies.cookie_for(from, now),
                };
                let mut buf = vec![0u8; wire::RECORD_COOKIE_LEN];
                reply.emit(&mut buf);
                self.transmits.push_back((from, buf));
                self.stats.record_cookies_sent += 1;
                return;
            }
            if !self
                .record_load
                .allow_source(from.ip(), self.config.per_source_rate)
            {
                self.stats.rate_limited += 1;
                return;
            }
        }
        let unix = self.unix(now);
        let Some(local) = self.local(li) else {
            return;
        };
        let rec = crate::record::PeerRecord::new(
            &local.identity,
            Vec::new(),
            Vec::new(),
            unix.as_secs(),
            (unix + ANSWER_RECORD_TTL).as_secs(),
        );
        let Ok(signed) = rec.sign(&local.identity) else {
            return;
        };
        let repr = wire::RecordResponseRepr {
            nonce: packet.nonce(),
            record: signed,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf);
        self.transmits.push_back((from, buf));
    }

    /// A record cookie for one of our probes: kept for its next request, which goes out
    /// at the regular interval. Nothing is sent in answer: anyone who saw the request
    /// can forge a cookie message, and it must not make us send.
    fn on_record_cookie(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let Ok(packet) = wire::RecordCookiePacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        match self
            .probes
            .get_mut(&packet.nonce())
            .filter(|p| p.endpoint == from)
        {
            Some(probe) => probe.cookie = Some((packet.cookie(), now)),
            None => self.stats.bad_records += 1,
        }
    }

    fn on_record_response(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let Ok(packet) = wire::RecordResponsePacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(probe) = self
            .probes
            .get(&packet.nonce())
            .filter(|p| p.endpoint == from)
        else {
            self.stats.bad_records += 1;
            return;
        };
        let lookup = crate::record::Lookup::Address(probe.address);
        let Ok(rec) = crate::record::PeerRecord::verify(packet.record(), lookup, self.unix(now))
        else {
            self.stats.bad_records += 1;
            return;
        };
        let (local, endpoint) = (probe.local, probe.endpoint);
        self.probes.remove(&packet.nonce());
        let remote = Remote {
            public_key: rec.public_key,
            noise_key: rec.noise_key,
        };
        let _ = self.add_peer(now, local, remote, Some(endpoint), true, Origin::Driver);
    }

    fn on_initiation(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let Ok(packet) = InitiationPacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(li) = self
            .locals
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.checker.check_mac1(msg)))
        else {
            self.stats.bad_mac1 += 1;
            return;
        };
        let local_id = LocalId(li as u16);
        let under_load = self.load.record(now, self.config.load_threshold);
        if under_load {
            let Some(local) = self.locals[li].as_mut() else {
                return;
            };
            if !local.checker.check_mac2(msg, from, now) {
                let reply = local.checker.cookie_reply(&packet, from, now);
                let mut buf = vec![0u8; wire::COOKIE_REPLY_LEN];
                reply.emit(&mut buf);
                self.transmits.push_back((from, buf));
                self.stats.cookies_sent += 1;
                return;
            }
            if !self
                .load
                .allow_source(from.ip(), self.config.per_source_rate)
            {
                self.stats.rate_limited += 1;
                return;
            }
        }
        self.stats.handshakes_processed += 1;
        let seed = self.rng.bytes();
        let Some(local) = self.locals[li].as_ref() else {
            return;
        };
        let accept =
            match handshake::read_initiation(&local.identity, &self.config.psk, &packet, seed) {
                Ok(a) => a,
                Err(_) => {
                    self.stats.handshake_failures += 1;
                    return;
                }
            };
        let remote = *accept.initiator();
        let address = remote.public_key.address();
        if self.local_for_ip(&address.ipv6()).is_some() {
            self.stats.handshake_failures += 1;
            return;
        }
        if self.denied.contains(&address) {
            self.stats.denied += 1;
            return;
        }
        let existing = self.by_ip.get(&(local_id, address.ipv6())).copied();
        if let Some(id) = existing {
            let last = self.peers[id].as_ref().and_then(|p| p.last_init_timestamp);
            if last.is_some_and(|t| accept.timestamp() <= t) {
                self.stats.replayed_initiations += 1;
                return;
            }
        }
        let id = match existing {
            Some(id) => {
                // A new Noise key under the same wallet key (§2.2): what was made with
                // the old one goes; this initiation makes the new session.
                self.set_remote(id, remote);
                id
            }
            None => {
                match self.add_peer(now, local_id, remote, Some(from), false, Origin::Inbound) {
                    Ok(id) => id,
                    Err(_) => return,
                }
            }
        };
        let index = self.new_index();
        let timestamp = accept.timestamp();
        let Some(local) = self.locals[li].as_ref() else {
            return;
        };
        let Ok((est, response)) =
            accept.accept_choosing(&local.identity, index, self.config.aes_256_gcm)
        else {
            self.stats.handshake_failures += 1;
            return;
        };
        let unix = self.unix(now);
        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        let was_up = p.current.as_ref().is_some_and(|k| k.is_usable(now));
        p.last_init_timestamp = Some(timestamp);
        let kp = Keypair::new(&est, now);
        // Responder: the new keypair waits in `next` until the initiator uses it.
        if let Some(old) = p.next.replace(kp) {
            free_index(&mut self.by_index, old.local_index, id);
        }
        if let Some(old) = p.previous.take() {
            free_index(&mut self.by_index, old.local_index, id);
        }
        p.endpoint = Some(from);
        p.last_handshake = Some((now, unix));
        p.last_active = now;
        self.by_index.insert(index, id);
        self.transmits.push_back((from, response));
        if !was_up {
            self.events.push_back(Event::PeerUp {
                local: local_id,
                address,
                endpoint: from,
            });
        }
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let unix = self.unix(now);
        let Ok(packet) = ResponsePacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(&id) = self.by_index.get(&packet.receiver()) else {
            self.stats.unknown_index += 1;
            return;
        };
        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        let Some(local) = self
            .locals
            .get(usize::from(p.local.0))
            .and_then(Option::as_ref)
        else {
            return;
        };
        if !handshake::check_mac1(msg, &local.identity.noise().public_key()) {
            self.stats.bad_mac1 += 1;
            return;
        }
        let Some(attempt) = p
            .handshake
            .as_mut()
            .filter(|a| a.sender == packet.receiver())
        else {
            self.stats.unknown_index += 1;
            return;
        };
        let Some(state) = attempt.state.take() else {
            return;
        };
        let rtt = now.saturating_duration_since(attempt.sent_at);
        let est = match state.handle_response(&packet) {
            Ok(est) => est,
            Err(_) => {
                self.stats.handshake_failures += 1;
                return;
            }
        };
        let was_up = p.current.as_ref().is_some_and(|k| k.is_usable(now));
        p.handshake = None;
        let kp = Keypair::new(&est, now);
        // Initiator: use the new keypair at once; keep a responder-side `next` (from a
        // crossing handshake) as `previous` so its traffic still decrypts.
        let mut retired = Vec::new();
        if let Some(next) = p.next.take() {
            if let Some(old) = p.previous.replace(next) {
                retired.push(old.local_index);
            }
            if let Some(old) = p.current.take() {
                retired.push(old.local_index);
            }
        } else if let Some(cur) = p.current.take() {
            if let Some(old) = p.previous.replace(cur) {
                retired.push(old.local_index);
            }
        }
        p.current = Some(kp);
        p.rtt = Some(rtt);
        p.last_handshake = Some((now, unix));
        p.last_active = now;
        p.reply_due = None;
        let roamed = p.endpoint.filter(|e| *e != from);
        p.endpoint = Some(from);
        let (local_id, address, has_queue) = (p.local, p.address, !p.queue.is_empty());
        for i in retired {
            free_index(&mut self.by_index, i, id);
        }
        // by_index already maps est.local_index (our sender) to this peer.
        if let Some(old) = roamed {
            self.events.push_back(Event::Roamed {
                local: local_id,
                address,
                from: old,
                to: from,
            });
        }
        if !was_up {
            self.events.push_back(Event::PeerUp {
                local: local_id,
                address,
                endpoint: from,
            });
        }
        if has_queue {
            self.flush_queue(now, id);
        } else {
            // Confirm the session so the responder starts using it.
            self.send_queued(now, id, &[]);
        }
    }

    fn on_cookie_reply(&mut self, now: Instant, msg: &[u8]) {
        let Ok(packet) = CookieReplyPacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let reply = CookieReplyRepr::parse(&packet);
        let Some(&id) = self.by_index.get(&reply.receiver) else {
            self.stats.unknown_index += 1;
            return;
        };
        let Some(p) = self.peers[id].as_mut() else {
            return;
        };
        let Some(state) = p
            .handshake
            .as_ref()
            .filter(|a| a.sender == reply.receiver)
            .and_then(|a| a.state.as_ref())
        else {
            return;
        };
        // Keep the cookie for the next initiation's mac2, sent when the retry timer
        // fires (§5.4): no initiation goes out because of a reply, which anyone who saw
        // our initiation could forge. The attempt stays, so a response still counts.
        match state.open_cookie(&reply, now) {
            Ok(cookie) => p.cookie = Some(cookie),
            Err(_) => self.stats.handshake_failures += 1,
        }
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, msg: &mut [u8]) -> Option<Range<usize>> {
        let Ok(packet) = DataPacket::new_checked(&*msg) else {
            self.stats.malformed += 1;
            return None;
        };
        let (receiver, counter, keepalive) =
            (packet.receiver(), packet.counter(), packet.is_keepalive());
        let Some(&id) = self.by_index.get(&receiver) else {
            self.stats.unknown_index += 1;
            return None;
        };
        let p = self.peers[id].as_mut()?;
        let (slot, kp) = if let Some(k) = p.current.as_mut().filter(|k| k.local_index == receiver) {
            (Slot::Current, k)
        } else if let Some(k) = p.next.as_mut().filter(|k| k.local_index == receiver) {
            (Slot::Next, k)
        } else if let Some(k) = p.previous.as_mut().filter(|k| k.local_index == receiver) {
            (Slot::Previous, k)
        } else {
            self.stats.unknown_index += 1;
            return None;
        };
        let range = match kp.open(msg, counter, now) {
            Ok(r) => r,
            Err(session::Error::Replayed) => {
                self.stats.replayed_data += 1;
                return None;
            }
            Err(session::Error::Decrypt) => {
                self.stats.decrypt_failures += 1;
                return None;
            }
            // Past its limits the keypair counts as erased (§6.4) even before the
            // timer that erases it has run: its index is as good as unknown.
            Err(session::Error::Expired | session::Error::CounterExhausted) => {
                self.stats.unknown_index += 1;
                return None;
            }
            // Sealing errors; opening never returns them.
            Err(session::Error::BufferTooSmall | session::Error::Seal) => return None,
        };
        let rekey_on_receive = slot == Slot::Current
            && kp.initiator
            && now.saturating_duration_since(kp.created) >= REKEY_ON_RECEIVE;
        let promoted = slot == Slot::Next;
        if promoted {
            // The initiator used the new keypair: it becomes current (§6.4). Our own
            // attempt, if any, is moot, as on the initiator side when a response lands.
            if let Some(next) = p.next.take() {
                if let Some(old) = p.current.replace(next) {
                    if let Some(prev) = p.previous.replace(old) {
                        free_index(&mut self.by_index, prev.local_index, id);
                    }
                }
            }
            if let Some(attempt) = p.handshake.take() {
                free_index(&mut self.by_index, attempt.sender, id);
            }
        }
        p.reply_due = None;
        p.last_active = now;
        let (local_id, address) = (p.local, p.address);
        if let Some(old) = p.endpoint.filter(|e| *e != from) {
            p.endpoint = Some(from);
            self.events.push_back(Event::Roamed {
                local: local_id,
                address,
                from: old,
                to: from,
            });
        } else {
            p.endpoint = Some(from);
        }
        if rekey_on_receive && p.handshake.is_none() {
            self.start_handshake(now, id);
        }
        if promoted {
            // What waited for a session leaves on the one the peer just confirmed.
            self.flush_queue(now, id);
        }
        let p = self.peers[id].as_mut()?;
        if keepalive {
            return None;
        }
        let inner = &msg[range.clone()];
        let ok = Ipv6Packet::new_checked(inner).is_ok_and(|ip| {
            ip.src() == p.ipv6
                && self
                    .locals
                    .get(usize::from(local_id.0))
                    .and_then(Option::as_ref)
                    .is_some_and(|l| l.ipv6 == ip.dst())
        });
        if !ok {
            self.stats.spoofed += 1;
            return None;
        }
        p.rx_bytes += inner.len() as u64;
        p.rx_packets += 1;
        if p.keepalive_at.is_none() {
            p.keepalive_at = Some(now + session::KEEPALIVE_TIMEOUT);
        }
        Some(range)
    }
}

/// What became of a packet handed to `Node::seal_current`.
enum Sealed {
    Sent(Transmit),
    /// No usable current keypair or no endpoint: queue it and handshake.
    NoSession,
    /// The caller's buffer was too small or sealing failed: drop it.
    Failed,
}

/// Free session index `index` of peer `id`, only if it is mapped to that peer: the
/// `sender` of an attempt that sent nothing was never mapped, and the same number may
/// since have been given to another peer.
fn free_index(by_index: &mut BTreeMap<u32, usize>, index: u32, id: usize) {
    if by_index.get(&index) == Some(&id) {
        by_index.remove(&index);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Previous,
    Current,
    Next,
}

impl Peer {
    fn new(
        local: LocalId,
        remote: Remote,
        endpoint: Option<SocketAddr>,
        origin: Origin,
        now: Instant,
    ) -> Self {
        let address = remote.public_key.address();
        Peer {
            local,
            remote,
            address,
            ipv6: address.ipv6(),
            endpoint,
            handshake: None,
            cookie: None,
            previous: None,
            current: None,
            next: None,
            queue: VecDeque::new(),
            last_init_timestamp: None,
            last_sent_init_timestamp: None,
            last_handshake: None,
            last_sent: None,
            origin,
            last_active: now,
            keepalive_at: None,
            reply_due: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            dropped: 0,
            rtt: None,
        }
    }

    fn enqueue(&mut self, packet: Vec<u8>, cap: usize, stats: &mut Stats) {
        if self.queue.len() >= cap {
            self.queue.pop_front();
            stats.queue_dropped += 1;
            self.dropped += 1;
        }
        self.queue.push_back(packet);
    }

    fn note_sent(&mut self, now: Instant, len: usize, data: bool) {
        self.last_sent = Some(now);
        self.keepalive_at = None;
        if data {
            self.tx_bytes += len as u64;
            self.tx_packets += 1;
            if self.reply_due.is_none() {
                self.reply_due = Some(now + session::KEEPALIVE_TIMEOUT + session::REKEY_TIMEOUT);
            }
        }
    }

    /// The earliest instant at which `Node::peer_timers` has something to do for this
    /// peer; it must cover every branch there, or the driver sleeps through it.
    fn next_deadline(&self, persistent_keepalive: Option<Duration>) -> Option<Instant> {
        let expiries = self.keypairs().map(Keypair::usable_until);
        [
            self.handshake.as_ref().map(|a| a.retry_at),
            self.keepalive_at,
            self.reply_due,
            self.persistent_keepalive_at(persistent_keepalive),
            self.forget_at(),
        ]
        .into_iter()
        .flatten()
        .chain(expiries)
        .min()
    }
}

impl Peer {
    /// The keypairs held, oldest role first.
    fn keypairs(&self) -> impl Iterator<Item = &Keypair> {
        [&self.previous, &self.current, &self.next]
            .into_iter()
            .flatten()
    }

    /// For a peer created inbound with nothing under way (no handshake attempt, nothing
    /// queued), the instant it was last active: it may be evicted or forgotten (§7.6).
    fn idle_stranger_since(&self) -> Option<Instant> {
        let idle =
            self.origin == Origin::Inbound && self.handshake.is_none() && self.queue.is_empty();
        idle.then_some(self.last_active)
    }

    /// When an idle stranger whose keys have all expired is forgotten (§7.6), as
    /// WireGuard erases a session `REJECT_AFTER_TIME` × 3 after it was made.
    fn forget_at(&self) -> Option<Instant> {
        let since = self.idle_stranger_since()?;
        self.keypairs()
            .next()
            .is_none()
            .then(|| since + session::SESSION_EXPIRY)
    }

    /// When the persistent keepalive (docs/protocol.md §7.4) is due: `interval` after
    /// the last thing sent, or at once if nothing was, while a current keypair and an
    /// endpoint exist to send it with.
    fn persistent_keepalive_at(&self, interval: Option<Duration>) -> Option<Instant> {
        let interval = interval?;
        self.endpoint?;
        let current = self.current.as_ref()?;
        Some(self.last_sent.map_or(current.created, |t| t + interval))
    }
}

impl LoadCounter {
    /// Count one initiation; returns whether the node is under load.
    fn record(&mut self, now: Instant, threshold: u32) -> bool {
        if now.saturating_duration_since(self.window_start) >= LOAD_WINDOW {
            let stale = now.saturating_duration_since(self.window_start) >= 2 * LOAD_WINDOW;
            self.previous_total = if stale { 0 } else { self.total };
            self.total = 0;
            self.per_source.clear();
            self.window_start = now;
        }
        self.total = self.total.saturating_add(1);
        self.total > threshold || self.previous_total > threshold
    }

    /// Per-source fixed-window limit; the map is cleared every window, and bounded by
    /// the number of initiations that passed mac2 (one per source address).
    fn allow_source(&mut self, ip: IpAddr, rate: u32) -> bool {
        if self.per_source.len() >= MAX_SOURCES_PER_WINDOW && !self.per_source.contains_key(&ip) {
            return false;
        }
        let n = self.per_source.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
        *n <= rate
    }
}
