//! The DHT registry node (records: docs/protocol.md §4): rust-libp2p Kademlia
//! under `/metanet/kad/1.0.0`, with identify, noise, yamux and TCP, in server mode.
//!
//! It runs on its own thread with its own single-threaded runtime, so DHT work never
//! delays the data plane. The daemon talks to it with [`Request`]s and hears back through
//! [`Output`]s; a status snapshot is shared behind a mutex.
//!
//! Record filtering is on ([`kad::StoreInserts::FilterBoth`]): a record another node
//! asks us to store is kept only if it is a valid peer record for its key (signature,
//! binding, key derivation, expiry, size) that supersedes what we hold (higher `seq`).
//! Every fetched record is verified the same way, and a lookup keeps the highest `seq`.
//! The store is bounded in count ([`MAX_RECORDS`]) and size
//! ([`metanet_proto::record::MAX_RECORD_LEN`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{self, GetRecordOk, InboundRequest, QueryId, QueryResult, Quorum, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity::Keypair, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use metanet_proto::address::Ipv6Prefix;
use metanet_proto::control::DhtStatus;
use metanet_proto::record::{self, Lookup, PeerRecord, MAX_RECORD_LEN};
use metanet_proto::UnixTime;
use tokio::sync::mpsc;

/// Kademlia protocol name: metanet nodes form their own DHT.
pub const PROTOCOL: &str = "/metanet/kad/1.0.0";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/metanet/id/1.0.0";
/// Record keys are this prefix followed by the 15 address bytes of the overlay IPv6, so
/// that a record can be found from an address and from an overlay IPv6 alike.
pub const KEY_PREFIX: &[u8] = b"/metanet/peer/";
/// Most records one node stores (its own and those it holds for others).
pub const MAX_RECORDS: usize = 16_384;
/// Keys of content-addressed values (MLS commits and Welcomes, docs/protocol.md §9.9):
/// this prefix and the value's BLAKE3 hash. Anyone may store one; nobody can change it.
pub const BLOB_PREFIX: &[u8] = b"/metanet/blob/";
/// Keys of key packages (§9.9): this prefix and the owner's 20 address bytes; the
/// value is signed by the owner's wallet key, and a higher `seq` supersedes.
pub const KEY_PACKAGE_PREFIX: &[u8] = b"/metanet/kp/";
/// Keys of update requests (§9.9): this prefix, the group's 8-byte tag and the
/// member's 20 address bytes; the value is the member's wallet signature over the
/// empty commit it asks an admin to order, and a higher epoch supersedes.
pub const UPDATE_PREFIX: &[u8] = b"/metanet/upd/";
/// Envelope purpose of an update request.
pub const UPDATE_PURPOSE: &str = "metanet/mls-update";
/// Largest value the DHT stores (a Welcome for a thousand members, about 270 KB with
/// their ratchet tree, fits).
pub const MAX_VALUE_LEN: usize = 320 * 1024;
/// Values above this size count as large ...
pub const LARGE_VALUE: usize = 16 * 1024;
/// ... and a node holds at most this many for others (80 MiB at most).
pub const MAX_LARGE_VALUES: usize = 256;
/// How long a stored value lives unless its publisher stores it again.
pub const VALUE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Envelope purpose of a key package's signature.
pub const KEY_PACKAGE_PURPOSE: &str = "metanet/key-package";
/// How long one lookup may take (the daemon ends it then, found or not).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Kademlia's query timeout, which bounds a publication: the walk to the closest
/// peers must converge (every one of the 20 closest answered) before the PUT goes out.
/// In the 2000-node simulation that took 1.5 s at the median and 3.9 s at most
/// (docs/benchmarks.md, "DHT at scale"); the margin is for slow, lossy or overloaded
/// networks, where a walk cut short is wasted and retried from the start. Lookups stop
/// far earlier, at their first valid copy or at [`LOOKUP_TIMEOUT`].
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(40);
/// After the first valid copy, how long a lookup still waits for a newer one before it
/// stops early (a lookup that reaches its natural end answers at once).
const GRACE: Duration = Duration::from_secs(1);
/// Publication retry backoff bounds.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The DHT key of the peer whose overlay IPv6 carries `prefix`.
pub fn record_key(prefix: &Ipv6Prefix) -> RecordKey {
    let mut k = Vec::with_capacity(KEY_PREFIX.len() + prefix.0.len());
    k.extend_from_slice(KEY_PREFIX);
    k.extend_from_slice(&prefix.0);
    RecordKey::new(&k)
}

/// The address prefix inside a DHT key, or `None` for keys that are not ours.
pub fn key_prefix(key: &RecordKey) -> Option<Ipv6Prefix> {
    let rest = key.as_ref().strip_prefix(KEY_PREFIX)?;
    Some(Ipv6Prefix(rest.try_into().ok()?))
}

/// Verify a record found or offered under `key` at `now`.
pub fn verify(key: &RecordKey, value: &[u8], now: UnixTime) -> Result<PeerRecord, record::Error> {
    let prefix = key_prefix(key).ok_or(record::Error::KeyMismatch)?;
    if value.len() > MAX_RECORD_LEN {
        return Err(record::Error::TooLarge(value.len()));
    }
    PeerRecord::verify(value, Lookup::Ipv6(prefix), now)
}

/// The DHT key of the value whose BLAKE3 hash is `hash`.
pub fn blob_key(hash: &[u8; 32]) -> RecordKey {
    RecordKey::new(&[BLOB_PREFIX, &hash[..]].concat())
}

/// The DHT key of `address`'s key package.
pub fn key_package_key(address: &metanet_proto::Address) -> RecordKey {
    RecordKey::new(&[KEY_PACKAGE_PREFIX, address.as_bytes()].concat())
}

/// The DHT key of `address`'s update request for the group tagged `tag`.
pub fn update_key(tag: &[u8; 8], address: &metanet_proto::Address) -> RecordKey {
    RecordKey::new(&[UPDATE_PREFIX, &tag[..], address.as_bytes()].concat())
}

/// An update request: `identity`'s envelope (purpose [`UPDATE_PURPOSE`], type 1) over
/// `tag[8] ‖ epoch u64be ‖ commit_hash[32]`: "order my commit, which leads to `epoch`".
pub fn seal_update(
    identity: &metanet_proto::Identity,
    tag: &[u8; 8],
    epoch: u64,
    commit: &[u8; 32],
) -> Result<Vec<u8>, record::Error> {
    let mut payload = tag.to_vec();
    payload.extend_from_slice(&epoch.to_be_bytes());
    payload.extend_from_slice(commit);
    record::Envelope::seal(identity, UPDATE_PURPOSE, 1, &payload)
}

/// Open an update request stored under `update_key(tag, address)`: its epoch and
/// commit hash.
pub fn open_update(
    tag: &[u8; 8],
    address: &metanet_proto::Address,
    value: &[u8],
) -> Result<(u64, [u8; 32]), ValueError> {
    let env = record::Envelope::open(value, UPDATE_PURPOSE, 1).map_err(ValueError::Envelope)?;
    if env.signer.address() != *address {
        return Err(ValueError::WrongSigner);
    }
    let p = env.payload;
    if p.len() != 8 + 8 + 32 || p[..8] != tag[..] {
        return Err(ValueError::Malformed);
    }
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&p[8..16]);
    let mut commit = [0u8; 32];
    commit.copy_from_slice(&p[16..48]);
    Ok((u64::from_be_bytes(epoch), commit))
}

/// A key package value: `envelope_len u16be ‖ envelope ‖ key package`, where the
/// envelope is `identity`'s signature (purpose [`KEY_PACKAGE_PURPOSE`], type 1) over
/// `seq u64be ‖ BLAKE3(key package)`.
pub fn seal_key_package(
    identity: &metanet_proto::Identity,
    seq: u64,
    key_package: &[u8],
) -> Result<Vec<u8>, record::Error> {
    let mut payload = seq.to_be_bytes().to_vec();
    payload.extend_from_slice(blake3::hash(key_package).as_bytes());
    let env = record::Envelope::seal(identity, KEY_PACKAGE_PURPOSE, 1, &payload)?;
    let len = u16::try_from(env.len()).map_err(|_| record::Error::TooLarge(env.len()))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&env);
    out.extend_from_slice(key_package);
    Ok(out)
}

/// Open a key package value stored under `address`'s key: its `seq` and key package.
pub fn open_key_package(
    address: &metanet_proto::Address,
    value: &[u8],
) -> Result<(u64, Vec<u8>), ValueError> {
    let [a, b, rest @ ..] = value else {
        return Err(ValueError::Malformed);
    };
    let len = usize::from(u16::from_be_bytes([*a, *b]));
    if rest.len() < len {
        return Err(ValueError::Malformed);
    }
    let (env, kp) = rest.split_at(len);
    let env = record::Envelope::open(env, KEY_PACKAGE_PURPOSE, 1).map_err(ValueError::Envelope)?;
    if env.signer.address() != *address {
        return Err(ValueError::WrongSigner);
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7, hash @ ..] = env.payload else {
        return Err(ValueError::Malformed);
    };
    if hash != blake3::hash(kp).as_bytes() {
        return Err(ValueError::HashMismatch);
    }
    Ok((
        u64::from_be_bytes([*s0, *s1, *s2, *s3, *s4, *s5, *s6, *s7]),
        kp.to_vec(),
    ))
}

/// Why a value is not valid for its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value is malformed")]
    Malformed,
    #[error("value is larger than {MAX_VALUE_LEN} bytes")]
    TooLarge,
    #[error("value does not hash to its key")]
    HashMismatch,
    #[error("key package is not signed by the address of its key")]
    WrongSigner,
    #[error("key package signature: {0}")]
    Envelope(record::Error),
    #[error("not a key this DHT stores")]
    UnknownKey,
}

/// What a valid value under a non-record key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// Content-addressed: any copy is the same.
    Blob,
    /// A key package with this `seq`.
    KeyPackage { seq: u64 },
    /// An update request for this epoch.
    Update { epoch: u64 },
}

/// Verify a value found or offered under a blob or key package `key`.
pub fn verify_value(key: &RecordKey, value: &[u8]) -> Result<Value, ValueError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLarge);
    }
    let k = key.as_ref();
    if let Some(hash) = k.strip_prefix(BLOB_PREFIX) {
        return if hash == blake3::hash(value).as_bytes() {
            Ok(Value::Blob)
        } else {
            Err(ValueError::HashMismatch)
        };
    }
    if let Some(a) = k.strip_prefix(KEY_PACKAGE_PREFIX) {
        let a: [u8; 20] = a.try_into().map_err(|_| ValueError::UnknownKey)?;
        let (seq, _) = open_key_package(&metanet_proto::Address::from_bytes(a), value)?;
        return Ok(Value::KeyPackage { seq });
    }
    if let Some(rest) = k.strip_prefix(UPDATE_PREFIX) {
        if rest.len() != 28 {
            return Err(ValueError::UnknownKey);
        }
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&rest[..8]);
        let mut a = [0u8; 20];
        a.copy_from_slice(&rest[8..]);
        let (epoch, _) = open_update(&tag, &metanet_proto::Address::from_bytes(a), value)?;
        return Ok(Value::Update { epoch });
    }
    Err(ValueError::UnknownKey)
}

impl Value {
    /// What orders two valid values under one key: the higher supersedes.
    fn seq(self) -> u64 {
        match self {
            Value::Blob => 0,
            Value::KeyPackage { seq } => seq,
            Value::Update { epoch } => epoch,
        }
    }
}

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node's own store.
    Local,
    /// Another DHT node.
    Peer(PeerId),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Local => f.write_str("dht (local store)"),
            Source::Peer(p) => write!(f, "dht {p}"),
        }
    }
}

/// A verified record and where it came from.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: PeerRecord,
    pub source: Source,
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no DHT peers: check --bootstrap and that the bootstrap node is reachable")]
    NoPeers,
    #[error("no valid record in the DHT")]
    NotFound,
}

/// What the daemon asks of the DHT node.
#[derive(Debug)]
pub enum Request {
    /// Publish (or replace) a signed record of one of our identities.
    Publish { prefix: Ipv6Prefix, bytes: Vec<u8> },
    /// Stop publishing a record (identity removed).
    Withdraw { prefix: Ipv6Prefix },
    /// Find the newest valid record; the answer is an [`Output::Found`].
    Lookup { prefix: Ipv6Prefix },
    /// Store bytes under a key at the closest nodes without any check: what a node that
    /// breaks the rules does. Tests use it to inject forged records.
    PutUnchecked { key: RecordKey, value: Vec<u8> },
    /// Publish (and keep republishing) a blob or key package value of ours.
    Put { key: RecordKey, value: Vec<u8> },
    /// Stop publishing a value.
    Unput { key: RecordKey },
    /// Find a valid value under a blob or key package key (the highest `seq` of a key
    /// package); the answer is an [`Output::Got`].
    Get { key: RecordKey },
}

/// What the DHT node tells the daemon.
// One per lookup, never queued in bulk: the size of `Found` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// The end of a [`Request::Lookup`].
    Found {
        prefix: Ipv6Prefix,
        result: Result<Found, LookupError>,
    },
    /// The end of a [`Request::Get`].
    Got {
        key: RecordKey,
        result: Result<Vec<u8>, LookupError>,
    },
}

/// Settings of the DHT node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Its libp2p key.
    pub keypair: Keypair,
    /// Addresses to listen on (TCP).
    pub listen: Vec<Multiaddr>,
    /// Nodes to join through; a `/p2p/<peer id>` suffix is optional.
    pub bootstrap: Vec<Multiaddr>,
    /// Take part as a Kademlia client only: publish and look up, but never be dialled
    /// as a server, so no DHT node learns this host's addresses (a hidden identity's
    /// daemon, whose IP must not reach its peers through the DHT either).
    pub client_only: bool,
}

/// Why the DHT node could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: Multiaddr, message: String },
    #[error("DHT setup: {0}")]
    Setup(String),
}

/// The daemon's side of the DHT node.
#[derive(Debug)]
pub struct Dht {
    tx: mpsc::UnboundedSender<Request>,
    status: Arc<Mutex<DhtStatus>>,
}

impl Dht {
    /// Start the node on its own thread; returns once it listens (or failed to).
    pub fn spawn(config: Config, out: mpsc::UnboundedSender<Output>) -> Result<Dht, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(DhtStatus {
            peer_id: config.keypair.public().to_peer_id().to_string(),
            listen_addrs: Vec::new(),
            peers: 0,
            records: 0,
        }));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = status.clone();
        std::thread::Builder::new()
            .name("dht".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Setup(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Driver::new(config, out, shared) {
                        Ok(node) => {
                            let _ = ready_tx.send(Ok(()));
                            node.run(rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| Error::Setup(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|_| Error::Setup("DHT thread ended".into()))??;
        Ok(Dht { tx, status })
    }

    /// Queue a request (dropped silently if the node has stopped).
    pub fn send(&self, req: Request) {
        let _ = self.tx.send(req);
    }

    /// The latest status snapshot.
    pub fn status(&self) -> DhtStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The libp2p behaviours of a metanet DHT node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub kad: kad::Behaviour<MemoryStore>,
    pub identify: identify::Behaviour,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Kademlia in server mode with record filtering, plus identify.
    pub fn new(key: &Keypair) -> Behaviour {
        Self::build(key, true, QUERY_TIMEOUT)
    }

    /// [`Behaviour::new`] without Kademlia's periodic jobs (the 5-minute routing refresh,
    /// the 5-minute replication of stored records, the 10-minute republication) and
    /// with the given query timeout: for simulations of thousands of nodes in one
    /// process, where those timers, all started within seconds, would fire for every
    /// node at once.
    pub fn simulated(key: &Keypair, query_timeout: Duration) -> Behaviour {
        Self::build(key, false, query_timeout)
    }

    fn build(key: &Keypair, periodic: bool, query_timeout: Duration) -> Behaviour {
        let peer_id = key.public().to_peer_id();
        let every = |secs| periodic.then(|| Duration::from_secs(secs));
        let mut cfg = kad::Config::new(StreamProtocol::new(PROTOCOL));
        cfg.set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_query_timeout(query_timeout)
            .set_max_packet_size(MAX_VALUE_LEN + 4 * 1024)
            .set_record_ttl(Some(Duration::from_secs(record::MAX_LIFETIME_SECS)))
            .set_publication_interval(every(600))
            .set_replication_interval(every(300))
            .set_periodic_bootstrap_interval(every(300))
            .set_provider_record_ttl(None)
            .set_provider_publication_interval(None);
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_records: MAX_RECORDS,
                max_value_bytes: MAX_VALUE_LEN.max(MAX_RECORD_LEN),
                max_providers_per_key: 0,
                max_provided_keys: 0,
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, cfg);
        kad.set_mode(Some(kad::Mode::Server));
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_push_listen_addr_updates(true),
        );
        Behaviour { kad, identify }
    }

    /// What identify told us about `peer`: if it speaks our Kademlia protocol, its
    /// dialable listen addresses go into the routing table.
    pub fn learn(&mut self, peer: &PeerId, info: &identify::Info) {
        if !info.protocols.iter().any(|p| p.as_ref() == PROTOCOL) {
            return;
        }
        for addr in &info.listen_addrs {
            if dialable(addr) {
                self.kad.add_address(peer, addr.clone());
            }
        }
    }
}

/// Why a record another node offered was not stored.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not a valid peer record for its key.
    #[error("invalid record: {0}")]
    Invalid(record::Error),
    /// Not a valid blob or key package for its key.
    #[error("invalid value: {0}")]
    BadValue(ValueError),
    /// Valid, but it does not supersede the copy held (its `seq` is not higher).
    #[error("seq {seq} is not newer than the {held} held")]
    NotNewer { seq: u64, held: u64 },
    /// Valid and newer, but the store refused it (full).
    #[error("record store: {0}")]
    Store(kad::store::Error),
}

/// Record filtering for a record another node asks us to store, at Unix time `now`:
/// keep it only if it is a valid peer record for its key ([`verify`]) that supersedes
/// the valid copy held, if any; a stored copy expires with the record's `not_after`.
pub fn accept_inbound(
    store: &mut MemoryStore,
    mut record: kad::Record,
    now: UnixTime,
) -> Result<(), Refused> {
    if key_prefix(&record.key).is_none() {
        let new = verify_value(&record.key, &record.value).map_err(Refused::BadValue)?;
        if new != Value::Blob {
            let held = store
                .get(&record.key)
                .and_then(|r| verify_value(&r.key, &r.value).ok());
            if let Some(old) = held {
                if new.seq() <= old.seq() {
                    return Err(Refused::NotNewer {
                        seq: new.seq(),
                        held: old.seq(),
                    });
                }
            }
        }
        if record.value.len() > LARGE_VALUE
            && store.get(&record.key).is_none()
            && store
                .records()
                .filter(|r| r.value.len() > LARGE_VALUE)
                .count()
                >= MAX_LARGE_VALUES
        {
            return Err(Refused::Store(kad::store::Error::MaxRecords));
        }
        record.expires = Some(Instant::now() + VALUE_LIFETIME);
        return store.put(record).map_err(Refused::Store);
    }
    let new = verify(&record.key, &record.value, now).map_err(Refused::Invalid)?;
    let held = store
        .get(&record.key)
        .and_then(|r| verify(&r.key, &r.value, now).ok());
    if let Some(old) = held {
        if !new.supersedes(&old) {
            return Err(Refused::NotNewer {
                seq: new.seq,
                held: old.seq,
            });
        }
    }
    record.expires =
        Some(Instant::now() + Duration::from_secs(new.not_after.saturating_sub(now.as_secs())));
    store.put(record).map_err(Refused::Store)
}

/// A record of ours being published.
#[derive(Debug)]
struct Own {
    bytes: Vec<u8>,
    /// When to try again after a failed publication.
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// A lookup in progress.
#[derive(Debug)]
struct Pending {
    /// A peer record's prefix, or `None` for a value lookup ([`Pending::value_key`]).
    prefix: Option<Ipv6Prefix>,
    value_key: Option<RecordKey>,
    best_value: Option<(u64, Vec<u8>)>,
    /// When the lookup gives up ([`LOOKUP_TIMEOUT`] after it started).
    deadline: Instant,
    best: Option<Found>,
    /// Set at the first valid copy: when to stop waiting for a newer one.
    settle_at: Option<Instant>,
}

struct Driver {
    swarm: libp2p::Swarm<Behaviour>,
    own: HashMap<RecordKey, Own>,
    lookups: HashMap<QueryId, Pending>,
    publishes: HashMap<QueryId, RecordKey>,
    bootstrap: Vec<Multiaddr>,
    bootstrapped: bool,
    listen_addrs: HashSet<Multiaddr>,
    out: mpsc::UnboundedSender<Output>,
    status: Arc<Mutex<DhtStatus>>,
}

impl Driver {
    fn new(
        config: Config,
        out: mpsc::UnboundedSender<Output>,
        status: Arc<Mutex<DhtStatus>>,
    ) -> Result<Driver, Error> {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| Error::Setup(e.to_string()))?
            .with_behaviour(|key| {
                let mut b = Behaviour::new(key);
                if config.client_only {
                    b.kad.set_mode(Some(kad::Mode::Client));
                }
                b
            })
            .map_err(|e| Error::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        for addr in config.listen {
            swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
                addr,
                message: e.to_string(),
            })?;
        }
        let mut node = Driver {
            swarm,
            own: HashMap::new(),
            lookups: HashMap::new(),
            publishes: HashMap::new(),
            bootstrap: config.bootstrap,
            bootstrapped: false,
            listen_addrs: HashSet::new(),
            out,
            status,
        };
        node.dial_bootstrap();
        Ok(node)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_redial = Instant::now();
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                req = rx.recv() => match req {
                    Some(req) => self.on_request(req),
                    None => break,
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.on_tick(now);
                    if self.routing_peers() == 0 && now - last_redial > Duration::from_secs(5) {
                        last_redial = now;
                        self.dial_bootstrap();
                    }
                    self.update_status();
                }
            }
        }
    }

    fn kad(&mut self) -> &mut kad::Behaviour<MemoryStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    fn routing_peers(&mut self) -> usize {
        self.kad()
            .kbuckets()
            .map(|b| b.num_entries())
            .sum::<usize>()
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            let mut plain = addr.clone();
            if let Some(Protocol::P2p(peer)) = plain.iter().last() {
                plain.pop();
                if peer == *self.swarm.local_peer_id() {
                    continue;
                }
                self.kad().add_address(&peer, plain);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "cannot dial bootstrap node");
            }
        }
    }

    fn update_status(&mut self) {
        let peers = self.routing_peers();
        let records = self.kad().store_mut().records().count();
        let mut listen: Vec<String> = self.listen_addrs.iter().map(|a| a.to_string()).collect();
        listen.sort();
        if let Ok(mut s) = self.status.lock() {
            s.peers = peers;
            s.records = records;
            s.listen_addrs = listen;
        }
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Publish { prefix, bytes } => {
                let key = record_key(&prefix);
                self.own.insert(
                    key.clone(),
                    Own {
                        bytes,
                        retry_at: None,
                        backoff: RETRY_MIN,
                    },
                );
                self.publish(&key);
            }
            Request::Withdraw { prefix } => {
                let key = record_key(&prefix);
                self.own.remove(&key);
                self.kad().remove_record(&key);
            }
            Request::Put { key, value } => {
                let _ = self
                    .kad()
                    .store_mut()
                    .put(kad::Record::new(key.clone(), value.clone()));
                self.own.insert(
                    key.clone(),
                    Own {
                        bytes: value,
                        retry_at: None,
                        backoff: RETRY_MIN,
                    },
                );
                self.publish(&key);
            }
            Request::Unput { key } => {
                self.own.remove(&key);
                self.kad().remove_record(&key);
            }
            Request::Get { key } => {
                if self
                    .lookups
                    .values()
                    .any(|p| p.value_key.as_ref() == Some(&key))
                {
                    return;
                }
                let local = self
                    .kad()
                    .store_mut()
                    .get(&key)
                    .filter(|r| verify_value(&r.key, &r.value).is_ok())
                    .map(|r| r.value.clone());
                if let Some(value) = local
                    .clone()
                    .filter(|_| key.as_ref().starts_with(BLOB_PREFIX))
                {
                    // Content-addressed: our own copy is as good as any.
                    let _ = self.out.send(Output::Got {
                        key,
                        result: Ok(value),
                    });
                    return;
                }
                if self.routing_peers() == 0 {
                    let result = local.ok_or(LookupError::NoPeers);
                    let _ = self.out.send(Output::Got { key, result });
                    return;
                }
                let id = self.kad().get_record(key.clone());
                self.lookups.insert(
                    id,
                    Pending {
                        prefix: None,
                        value_key: Some(key),
                        best_value: None,
                        deadline: Instant::now() + LOOKUP_TIMEOUT,
                        best: None,
                        settle_at: None,
                    },
                );
            }
            Request::Lookup { prefix } => {
                if self.lookups.values().any(|p| p.prefix == Some(prefix)) {
                    return;
                }
                if self.routing_peers() == 0 {
                    // Our own store may still hold it (we are the publisher or keep it).
                    let key = record_key(&prefix);
                    let local = self
                        .kad()
                        .store_mut()
                        .get(&key)
                        .and_then(|r| verify(&key, &r.value, unix_now()).ok());
                    let result = match local {
                        Some(record) => Ok(Found {
                            record,
                            source: Source::Local,
                        }),
                        None => Err(LookupError::NoPeers),
                    };
                    let _ = self.out.send(Output::Found { prefix, result });
                    return;
                }
                let id = self.kad().get_record(record_key(&prefix));
                self.lookups.insert(
                    id,
                    Pending {
                        prefix: Some(prefix),
                        value_key: None,
                        best_value: None,
                        deadline: Instant::now() + LOOKUP_TIMEOUT,
                        best: None,
                        settle_at: None,
                    },
                );
            }
            Request::PutUnchecked { key, value } => {
                let record = kad::Record::new(key, value);
                let peers: Vec<PeerId> = self
                    .kad()
                    .get_closest_local_peers(&kbucket_key(&record.key))
                    .map(|k| *k.preimage())
                    .take(20)
                    .collect();
                if peers.is_empty() {
                    tracing::warn!("unchecked put: no DHT peers");
                    return;
                }
                let _ = self.kad().store_mut().put(record.clone());
                self.kad()
                    .put_record_to(record, peers.into_iter(), Quorum::One);
            }
        }
    }

    fn publish(&mut self, key: &RecordKey) {
        let Some(own) = self.own.get(key) else {
            return;
        };
        let mut record = kad::Record::new(key.clone(), own.bytes.clone());
        record.expires = expiry(&record.key, &record.value);
        match self.kad().put_record(record, Quorum::One) {
            Ok(id) => {
                self.publishes.insert(id, key.clone());
            }
            Err(e) => tracing::warn!(error = %e, "cannot store own record"),
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let due: Vec<RecordKey> = self
            .own
            .iter()
            .filter(|(_, o)| o.retry_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(o) = self.own.get_mut(&key) {
                o.retry_at = None;
            }
            self.publish(&key);
        }
        let settled: Vec<QueryId> = self
            .lookups
            .iter()
            .filter(|(_, p)| p.settle_at.is_some_and(|t| t <= now) || p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in settled {
            if let Some(mut q) = self.kad().query_mut(&id) {
                q.finish();
            }
            self.finish_lookup(id);
        }
    }

    fn finish_lookup(&mut self, id: QueryId) {
        let Some(p) = self.lookups.remove(&id) else {
            return;
        };
        if let Some(key) = p.value_key {
            let result = p.best_value.map(|(_, v)| v).ok_or(LookupError::NotFound);
            let _ = self.out.send(Output::Got { key, result });
            return;
        }
        let Some(prefix) = p.prefix else {
            return;
        };
        let result = p.best.ok_or(LookupError::NotFound);
        let _ = self.out.send(Output::Found { prefix, result });
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.swarm.behaviour_mut().learn(&peer_id, &info),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "DHT listening");
                self.listen_addrs.insert(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                // An interface address went away (the host moved): connections from it
                // are dead but would only time out slowly. Drop them all, so queries and
                // publications dial afresh from the addresses we still have.
                self.listen_addrs.remove(&address);
                tracing::info!(%address, "DHT address gone: reconnecting");
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for peer in peers {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                self.dial_bootstrap();
                let soon = Instant::now() + RETRY_MIN;
                for o in self.own.values_mut() {
                    o.retry_at = Some(soon);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                tracing::debug!(%peer_id, "DHT connection");
                if !self.bootstrapped {
                    self.bootstrapped = self.kad().bootstrap().is_ok();
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "DHT dial failed");
            }
            _ => {}
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::InboundRequest {
                request:
                    InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_inbound_put(source, record),
            kad::Event::RoutingUpdated {
                is_new_peer: true, ..
            } => {
                // Publications that failed for want of peers go out now.
                let now = Instant::now();
                for o in self.own.values_mut() {
                    if o.retry_at.is_some() {
                        o.retry_at = Some(now);
                    }
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                    self.on_found(id, found);
                }
                QueryResult::GetRecord(_) if step.last => self.finish_lookup(id),
                QueryResult::PutRecord(result) => {
                    let Some(key) = self.publishes.remove(&id) else {
                        return;
                    };
                    let Some(own) = self.own.get_mut(&key) else {
                        return;
                    };
                    match result {
                        Ok(_) => {
                            own.backoff = RETRY_MIN;
                            tracing::debug!("own record published");
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, retry_in = ?own.backoff, "publication failed");
                            own.retry_at = Some(Instant::now() + own.backoff);
                            own.backoff = (own.backoff * 2).min(RETRY_MAX);
                        }
                    }
                }
                QueryResult::Bootstrap(Err(e)) => tracing::debug!(error = ?e, "DHT bootstrap"),
                _ => {}
            },
            _ => {}
        }
    }

    fn on_found(&mut self, id: QueryId, found: kad::PeerRecord) {
        let Some(p) = self.lookups.get_mut(&id) else {
            return;
        };
        let source = match found.peer {
            Some(peer) => Source::Peer(peer),
            None => Source::Local,
        };
        if let Some(key) = &p.value_key {
            if found.record.key != *key {
                return;
            }
            match verify_value(key, &found.record.value) {
                Ok(v) => {
                    let seq = v.seq();
                    if p.best_value.as_ref().is_none_or(|(s, _)| seq > *s) {
                        p.best_value = Some((seq, found.record.value));
                    }
                    // A blob is the same everywhere: the first copy ends the lookup.
                    let grace = if v == Value::Blob {
                        Duration::ZERO
                    } else {
                        GRACE
                    };
                    if p.settle_at.is_none() {
                        p.settle_at = Some(Instant::now() + grace);
                    }
                }
                Err(e) => {
                    tracing::info!(%source, error = %e, "ignored an invalid value from the DHT")
                }
            }
            return;
        }
        match verify(&found.record.key, &found.record.value, unix_now()) {
            Ok(record) if key_prefix(&found.record.key) == p.prefix => {
                let newer = p.best.as_ref().is_none_or(|b| record.seq > b.record.seq);
                if newer {
                    p.best = Some(Found { record, source });
                }
                if p.settle_at.is_none() {
                    p.settle_at = Some(Instant::now() + GRACE);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::info!(%source, error = %e, "ignored an invalid record from the DHT"),
        }
    }

    fn on_inbound_put(&mut self, source: PeerId, record: kad::Record) {
        match accept_inbound(self.kad().store_mut(), record, unix_now()) {
            Ok(()) => {}
            Err(Refused::Invalid(e)) => {
                tracing::info!(%source, error = %e, "refused an invalid record");
            }
            Err(Refused::BadValue(e)) => {
                tracing::info!(%source, error = %e, "refused an invalid value");
            }
            Err(Refused::NotNewer { seq, held }) => {
                tracing::info!(%source, seq, held, "refused a record that is not newer");
            }
            Err(Refused::Store(e)) => tracing::debug!(error = %e, "record store full"),
        }
    }
}

fn kbucket_key(key: &RecordKey) -> kad::KBucketKey<RecordKey> {
    kad::KBucketKey::new(key.clone())
}

/// When a verified record stops being valid, as a monotonic instant.
fn expiry(key: &RecordKey, value: &[u8]) -> Option<Instant> {
    if key_prefix(key).is_none() {
        return Some(Instant::now() + VALUE_LIFETIME);
    }
    let now = unix_now();
    let rec = verify(key, value, now).ok()?;
    Some(Instant::now() + Duration::from_secs(rec.not_after.saturating_sub(now.as_secs())))
}

/// Addresses worth handing to Kademlia: not loopback, unspecified or link-local, and
/// not an overlay address (the DHT carries records about the overlay: reaching a DHT
/// node through the overlay would start a session, maybe through a relay, for every
/// DHT contact).
fn dialable(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => usable_ip(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => usable_ip(IpAddr::V6(ip)),
        _ => true,
    }
}

fn usable_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_unspecified() || v4.is_link_local()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6.octets()[0] == metanet_proto::address::OVERLAY_FIRST_BYTE)
        }
    }
}

fn unix_now() -> UnixTime {
    crate::unix_now()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use metanet_proto::Identity;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_refused() {
        let id = Identity::generate(&[7u8; 64]);
        let p = id.address().ipv6_prefix();
        assert_eq!(key_prefix(&record_key(&p)), Some(p));
        assert_eq!(key_prefix(&RecordKey::new(b"/other/key")), None);
        assert_eq!(key_prefix(&RecordKey::new(b"/metanet/peer/short")), None);
    }

    #[test]
    fn verify_checks_the_key() {
        let now = UnixTime::from_secs(1_000_000);
        let a = Identity::generate(&[1u8; 64]);
        let b = Identity::generate(&[2u8; 64]);
        let bytes = PeerRecord::new(&a, vec![], vec![], 1, 1_000_100)
            .sign(&a)
            .unwrap();
        let ka = record_key(&a.address().ipv6_prefix());
        let kb = record_key(&b.address().ipv6_prefix());
        assert!(verify(&ka, &bytes, now).is_ok());
        assert!(verify(&kb, &bytes, now).is_err());
        assert!(verify(&ka, &bytes, UnixTime::from_secs(1_000_100)).is_err());
    }

    #[test]
    fn inbound_records_are_filtered() {
        let now = UnixTime::from_secs(1_000_000);
        let a = Identity::generate(&[1u8; 64]);
        let b = Identity::generate(&[2u8; 64]);
        let ka = record_key(&a.address().ipv6_prefix());
        let signed = |seq| {
            PeerRecord::new(&a, vec![], vec![], seq, 1_000_100)
                .sign(&a)
                .unwrap()
        };
        let mut store = MemoryStore::new(PeerId::random());
        let put = |store: &mut MemoryStore, key: &RecordKey, value: Vec<u8>| {
            accept_inbound(store, kad::Record::new(key.clone(), value), now)
        };
        // Under another address's key: refused, nothing stored.
        let kb = record_key(&b.address().ipv6_prefix());
        assert!(matches!(
            put(&mut store, &kb, signed(5)),
            Err(Refused::Invalid(_))
        ));
        assert!(store.get(&kb).is_none());
        put(&mut store, &ka, signed(5)).unwrap();
        assert!(store.get(&ka).unwrap().expires.is_some());
        // Equal and lower seq never replace the copy held; higher does.
        assert!(matches!(
            put(&mut store, &ka, signed(5)),
            Err(Refused::NotNewer { seq: 5, held: 5 })
        ));
        assert!(matches!(
            put(&mut store, &ka, signed(4)),
            Err(Refused::NotNewer { .. })
        ));
        put(&mut store, &ka, signed(6)).unwrap();
        let held = verify(&ka, &store.get(&ka).unwrap().value, now).unwrap();
        assert_eq!(held.seq, 6);
    }

    #[test]
    fn values_are_checked_and_large_ones_bounded() {
        let now = UnixTime::from_secs(1_000_000);
        let mut store = MemoryStore::with_config(
            PeerId::random(),
            MemoryStoreConfig {
                max_records: MAX_RECORDS,
                max_value_bytes: MAX_VALUE_LEN,
                ..Default::default()
            },
        );
        let blob = |i: u32, len: usize| {
            let mut v = vec![0u8; len];
            v[..4].copy_from_slice(&i.to_le_bytes());
            kad::Record::new(blob_key(blake3::hash(&v).as_bytes()), v)
        };
        // A blob under another hash is refused; one too large too.
        let mut wrong = blob(0, 100);
        wrong.value[5] ^= 1;
        assert!(matches!(
            accept_inbound(&mut store, wrong, now),
            Err(Refused::BadValue(ValueError::HashMismatch))
        ));
        assert!(matches!(
            accept_inbound(&mut store, blob(0, MAX_VALUE_LEN + 1), now),
            Err(Refused::BadValue(ValueError::TooLarge))
        ));
        for i in 0..MAX_LARGE_VALUES as u32 {
            accept_inbound(&mut store, blob(i, LARGE_VALUE + 1), now).unwrap();
        }
        assert!(matches!(
            accept_inbound(&mut store, blob(9999, LARGE_VALUE + 1), now),
            Err(Refused::Store(_))
        ));
        // Small ones still fit.
        accept_inbound(&mut store, blob(9999, 100), now).unwrap();
        // A key package supersedes only with a higher seq.
        let a = Identity::generate(&[1u8; 64]);
        let kp = |seq| {
            kad::Record::new(
                key_package_key(&a.address()),
                seal_key_package(&a, seq, b"kp").unwrap(),
            )
        };
        accept_inbound(&mut store, kp(5), now).unwrap();
        assert!(matches!(
            accept_inbound(&mut store, kp(5), now),
            Err(Refused::NotNewer { .. })
        ));
        accept_inbound(&mut store, kp(6), now).unwrap();
        // An update request under another member's key is refused.
        let b = Identity::generate(&[2u8; 64]);
        let tag = [7u8; 8];
        let forged = kad::Record::new(
            update_key(&tag, &b.address()),
            seal_update(&a, &tag, 3, &[0; 32]).unwrap(),
        );
        assert!(matches!(
            accept_inbound(&mut store, forged, now),
            Err(Refused::BadValue(ValueError::WrongSigner))
        ));
        let own = kad::Record::new(
            update_key(&tag, &a.address()),
            seal_update(&a, &tag, 3, &[0; 32]).unwrap(),
        );
        accept_inbound(&mut store, own, now).unwrap();
    }
}
