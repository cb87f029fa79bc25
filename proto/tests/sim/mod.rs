//! Deterministic network simulator for `metanet_proto::node::Node`.
//!
//! N hosts, each one `Node` bound to an underlay socket address; a virtual clock that
//! jumps straight to the next event (a datagram arriving or a node timer); links with
//! latency, jitter, loss, duplication, reordering and an MTU. All randomness (link
//! behaviour, node seeds, identities) comes from one seed, printed when a test fails and
//! replayable with `METANET_SIM_SEED=<seed>`.
//!
//! The simulator also stands in for the registry: hosts publish their signed peer
//! record into a directory, and a `LookupNeeded` event is answered by fetching the
//! record by the 15 address bytes and running the real `PeerRecord::verify` on it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use metanet_proto::address::Ipv6Prefix;
use metanet_proto::handshake::Remote;
use metanet_proto::node::{Command, Config, Event, LocalId, Node};
use metanet_proto::record::{Lookup, PeerRecord};
use metanet_proto::{ip, wire};
use metanet_proto::{Identity, Instant, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Unix time at virtual instant zero.
pub const UNIX_BASE: u64 = 1_800_000_000;

/// Behaviour of every link (the simulated underlay is one switch).
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub latency: Duration,
    /// Uniform extra delay in `0..jitter`: reorders packets closer together than this.
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    pub mtu: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            mtu: 1500,
        }
    }
}

/// How a simulated NAT maps private sources to public ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// One public port per private source (endpoint-independent).
    Independent,
    /// One public port per private source and destination (endpoint-dependent).
    Dependent,
}

/// Which unsolicited inbound packets a simulated NAT lets through to a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone (full cone).
    Independent,
    /// Hosts (any port) the mapping has sent to.
    Address,
    /// Exactly the addresses and ports the mapping has sent to.
    AddressPort,
}

/// A NAT router in front of some hosts: public IP, behaviour and its bindings.
#[derive(Debug)]
pub struct Nat {
    pub public_ip: std::net::IpAddr,
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// Bindings unused for this long are gone (`None`: never).
    pub timeout: Option<Duration>,
    next_port: u16,
    /// (private source, destination when endpoint-dependent) → public port.
    ports: BTreeMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// Public port → private source, destinations contacted, last use.
    bindings: BTreeMap<u16, (SocketAddr, Vec<SocketAddr>, Instant)>,
    /// Inbound packets dropped by the filter or for want of a binding.
    pub dropped: u64,
}

/// One simulated machine.
pub struct Host {
    pub node: Node,
    pub addr: SocketAddr,
    pub identities: Vec<(LocalId, Address)>,
    /// Packets the node handed to its TUN, with the time they arrived.
    pub delivered: Vec<(Instant, Vec<u8>)>,
    /// Every event the node emitted.
    pub events: Vec<Event>,
    /// When each of `events` was emitted (same order).
    pub event_times: Vec<Instant>,
    /// Whether LookupNeeded is answered from the directory.
    pub auto_resolve: bool,
    /// The NAT it sits behind (its `addr` is then private).
    pub nat: Option<usize>,
    /// The relays its records list.
    pub relays: Vec<metanet_proto::record::Relay>,
    /// Drops every initiation that is not exactly the classical 240 bytes, as a node
    /// from before extended initiations (docs/protocol.md §5.6) does.
    pub legacy: bool,
}

type Address = metanet_proto::Address;

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Flight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// One datagram a host handed to the network (whether or not the link then lost it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// The message type byte (docs/protocol.md §3.1), 0 for an empty datagram.
    pub kind: u8,
    pub len: usize,
}

/// Counters of what the links did.
#[derive(Clone, Debug, Default)]
pub struct LinkStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub too_big: u64,
    pub unroutable: u64,
    /// Initiations a legacy host dropped for their length.
    pub legacy_dropped: u64,
}

pub struct Sim {
    pub seed: u64,
    pub now: Instant,
    pub link: LinkConfig,
    pub hosts: Vec<Host>,
    pub link_stats: LinkStats,
    /// Signed records by overlay prefix: what the registry would return.
    pub directory: BTreeMap<Ipv6Prefix, Vec<u8>>,
    /// Datagrams sent to addresses with no host (what a raw attacker receives).
    pub taps: BTreeMap<SocketAddr, Vec<Vec<u8>>>,
    /// Every datagram put on the wire, in order.
    pub wire_log: Vec<Sent>,
    /// Check node invariants (and that no timer fires early) on every this many
    /// drains and deliveries, 1 by default; large scenarios raise it, since a check
    /// costs time linear in the number of peers.
    pub check_every: u64,
    /// NAT routers.
    pub nats: Vec<Nat>,
    checks: u64,
    rng: ChaCha20Rng,
    flights: BinaryHeap<Reverse<Flight>>,
    seq: u64,
    _guard: SeedGuard,
}

/// Prints the seed if the test panics, so the run can be replayed.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("simulation failed; replay with METANET_SIM_SEED={}", self.0);
        }
    }
}

impl Sim {
    /// A simulator seeded from `METANET_SIM_SEED` or `default_seed`.
    pub fn new(default_seed: u64, link: LinkConfig) -> Self {
        let seed = std::env::var("METANET_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_seed);
        eprintln!("simulation seed {seed}");
        Sim {
            seed,
            now: Instant::ZERO,
            link,
            hosts: Vec::new(),
            link_stats: LinkStats::default(),
            directory: BTreeMap::new(),
            taps: BTreeMap::new(),
            wire_log: Vec::new(),
            check_every: 1,
            nats: Vec::new(),
            checks: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
            flights: BinaryHeap::new(),
            seq: 0,
            _guard: SeedGuard(seed),
        }
    }

    pub fn unix(&self) -> UnixTime {
        UnixTime::from_secs(UNIX_BASE) + Duration::from_nanos(self.now.as_nanos())
    }

    pub fn random_bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng.fill_bytes(&mut b);
        b
    }

    pub fn new_identity(&mut self) -> Identity {
        Identity::generate(&self.random_bytes::<64>())
    }

    /// Add a host with one fresh identity at `addr`; its record goes into the directory.
    pub fn add_host(&mut self, addr: &str) -> usize {
        let id = self.new_identity();
        self.add_host_with(addr, vec![id], Config::default())
    }

    pub fn add_host_with(
        &mut self,
        addr: &str,
        identities: Vec<Identity>,
        config: Config,
    ) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut node = Node::new(config, self.random_bytes(), self.now, self.unix());
        let mut ids = Vec::new();
        for identity in identities {
            self.publish(&identity, addr);
            let a = identity.address();
            ids.push((node.add_identity(identity), a));
        }
        self.hosts.push(Host {
            node,
            addr,
            identities: ids,
            delivered: Vec::new(),
            events: Vec::new(),
            event_times: Vec::new(),
            auto_resolve: true,
            nat: None,
            relays: Vec::new(),
            legacy: false,
        });
        self.hosts.len() - 1
    }

    /// A NAT router with public IP `ip`.
    pub fn add_nat(&mut self, ip: &str, mapping: Mapping, filtering: Filtering) -> usize {
        self.nats.push(Nat {
            public_ip: ip.parse().unwrap(),
            mapping,
            filtering,
            timeout: None,
            next_port: 40000,
            ports: BTreeMap::new(),
            bindings: BTreeMap::new(),
            dropped: 0,
        });
        self.nats.len() - 1
    }

    /// Put host `h` behind NAT `n` (its address becomes a private one).
    pub fn put_behind(&mut self, h: usize, n: usize) {
        self.hosts[h].nat = Some(n);
    }

    /// Make host `h`'s identities reserve with the relay on host `relay`, and list it
    /// in their records.
    pub fn use_relay(&mut self, h: usize, relay: usize) {
        let r = metanet_proto::record::Relay {
            address: self.address(relay),
            endpoint: self.hosts[relay].addr,
        };
        self.hosts[h].relays = vec![r];
        let now = self.now;
        let locals: Vec<LocalId> = self.hosts[h].identities.iter().map(|(l, _)| *l).collect();
        for local in locals {
            self.hosts[h]
                .node
                .handle_command(
                    now,
                    Command::SetRelays {
                        local,
                        relays: vec![r],
                    },
                )
                .unwrap();
        }
        self.drain(h);
    }

    /// The public source a datagram from host `h` to `to` leaves with: its own
    /// address, or the NAT's mapping (made on first use).
    fn translate_out(&mut self, h: usize, to: SocketAddr) -> SocketAddr {
        let from = self.hosts[h].addr;
        let Some(n) = self.hosts[h].nat else {
            return from;
        };
        // Inside the same LAN: no translation.
        if self.hosts.iter().any(|o| o.addr == to && o.nat == Some(n)) {
            return from;
        }
        let now = self.now;
        let nat = &mut self.nats[n];
        let key = (from, (nat.mapping == Mapping::Dependent).then_some(to));
        let expired = nat.ports.get(&key).is_some_and(|p| {
            nat.timeout.is_some_and(|t| {
                nat.bindings
                    .get(p)
                    .is_some_and(|(_, _, used)| now.saturating_duration_since(*used) > t)
            })
        });
        if expired {
            if let Some(p) = nat.ports.remove(&key) {
                nat.bindings.remove(&p);
            }
        }
        let port = match nat.ports.get(&key) {
            Some(&p) => p,
            None => {
                let p = nat.next_port;
                nat.next_port = nat.next_port.wrapping_add(1).max(1024);
                nat.ports.insert(key, p);
                nat.bindings.insert(p, (from, Vec::new(), now));
                p
            }
        };
        if let Some((_, contacted, used)) = nat.bindings.get_mut(&port) {
            if !contacted.contains(&to) {
                contacted.push(to);
            }
            *used = now;
        }
        SocketAddr::new(nat.public_ip, port)
    }

    /// Where a datagram to `to` from `from` ends up: a host address, after the NAT at
    /// `to` (if any) let it in; `None` when a NAT drops it.
    fn translate_in(&mut self, from: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
        let now = self.now;
        let Some(nat) = self.nats.iter_mut().find(|n| n.public_ip == to.ip()) else {
            return Some(to);
        };
        let Some((private, contacted, used)) = nat.bindings.get_mut(&to.port()) else {
            nat.dropped += 1;
            return None;
        };
        if nat
            .timeout
            .is_some_and(|t| now.saturating_duration_since(*used) > t)
        {
            nat.dropped += 1;
            return None;
        }
        let ok = match nat.filtering {
            Filtering::Independent => true,
            Filtering::Address => contacted.iter().any(|c| c.ip() == from.ip()),
            Filtering::AddressPort => contacted.contains(&from),
        };
        if !ok {
            nat.dropped += 1;
            return None;
        }
        *used = now;
        Some(*private)
    }

    /// Sign and store a record for `identity` reachable at `addr`.
    pub fn publish(&mut self, identity: &Identity, addr: SocketAddr) {
        self.publish_with(identity, vec![addr], vec![]);
    }

    /// Sign and store a record for `identity` with these endpoints and relays.
    pub fn publish_with(
        &mut self,
        identity: &Identity,
        endpoints: Vec<SocketAddr>,
        relays: Vec<metanet_proto::record::Relay>,
    ) {
        let mut rec = PeerRecord::new(
            identity,
            endpoints,
            vec![],
            1,
            self.unix().as_secs() + 86_400 * 2,
        );
        rec.relays = relays;
        let bytes = rec.sign(identity).unwrap();
        self.directory
            .insert(identity.address().ipv6_prefix(), bytes);
    }

    /// Replace host `h`'s node by a fresh one (same identities, new seed, state lost):
    /// a daemon restart.
    pub fn restart(&mut self, h: usize, identities: Vec<Identity>) {
        let mut node = Node::new(
            Config::default(),
            self.random_bytes(),
            self.now,
            self.unix(),
        );
        let mut ids = Vec::new();
        for identity in identities {
            let a = identity.address();
            ids.push((node.add_identity(identity), a));
        }
        let host = &mut self.hosts[h];
        host.node = node;
        host.identities = ids;
    }

    pub fn address(&self, h: usize) -> Address {
        self.hosts[h].identities[0].1
    }

    pub fn ip(&self, h: usize) -> Ipv6Addr {
        self.address(h).ipv6()
    }

    pub fn local(&self, h: usize) -> LocalId {
        self.hosts[h].identities[0].0
    }

    /// Tell host `h` about host `peer` (keys from the directory, as a static config would).
    pub fn add_peer(&mut self, h: usize, peer: usize, connect: bool) {
        let local = self.local(h);
        self.add_peer_of(h, local, peer, 0, connect);
    }

    /// Tell host `h`'s identity `local` about identity `k` of host `peer` (keys from
    /// the directory, as a static config would).
    pub fn add_peer_of(&mut self, h: usize, local: LocalId, peer: usize, k: usize, connect: bool) {
        let prefix = self.hosts[peer].identities[k].1.ipv6_prefix();
        let rec = PeerRecord::verify(&self.directory[&prefix], Lookup::Ipv6(prefix), self.unix())
            .unwrap();
        let cmd = Command::AddPeer {
            local,
            remote: Remote {
                public_key: rec.public_key,
                noise_key: rec.noise_key,
            },
            endpoint: Some(self.hosts[peer].addr),
            candidates: Vec::new(),
            relay: None,
            connect,
        };
        let now = self.now;
        self.hosts[h].node.handle_command(now, cmd).unwrap();
        self.drain(h);
    }

    /// Whether this drain or delivery runs the (linear-time) consistency checks.
    fn check_now(&mut self) -> bool {
        self.checks += 1;
        self.checks % self.check_every.max(1) == 0
    }

    /// An IPv6 packet from host `h`'s first identity to `dst`, written to its TUN.
    pub fn send(&mut self, h: usize, dst: Ipv6Addr, payload: &[u8]) {
        let src = self.ip(h);
        let pkt = ip::build_ipv6(src, dst, payload);
        self.send_raw(h, &pkt);
    }

    pub fn send_raw(&mut self, h: usize, pkt: &[u8]) {
        let mut out = vec![0u8; pkt.len() + wire::DATA_OVERHEAD + wire::RELAY_HEADER_LEN];
        let now = self.now;
        if let Some(tx) = self.hosts[h].node.handle_tun_packet(now, pkt, &mut out) {
            let from = self.translate_out(h, tx.destination);
            self.transmit(from, tx.destination, out[..tx.len].to_vec());
        }
        self.drain(h);
    }

    /// Like [`Sim::send`], through `handle_tun_packet_in_place`: the packet is built
    /// where it is sealed, as the daemon's data plane does.
    pub fn send_in_place(&mut self, h: usize, dst: Ipv6Addr, payload: &[u8]) {
        let pkt = ip::build_ipv6(self.ip(h), dst, payload);
        let mut buf = vec![0u8; pkt.len() + wire::DATA_OVERHEAD + wire::RELAY_HEADER_LEN];
        buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + pkt.len()].copy_from_slice(&pkt);
        let now = self.now;
        if let Some(tx) = self.hosts[h]
            .node
            .handle_tun_packet_in_place(now, &mut buf, pkt.len())
        {
            let from = self.translate_out(h, tx.destination);
            self.transmit(from, tx.destination, buf[..tx.len].to_vec());
        }
        self.drain(h);
    }

    /// Put raw bytes on the wire from `from` to `to` (an attacker, or a replay).
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.transmit(from, to, bytes);
    }

    /// Payloads (after the IPv6 header) delivered to host `h`.
    pub fn payloads(&self, h: usize) -> Vec<Vec<u8>> {
        self.hosts[h]
            .delivered
            .iter()
            .map(|(_, p)| p[ip::IPV6_HEADER_LEN..].to_vec())
            .collect()
    }

    /// When host address `from` sent datagrams of type `kind` (and of exactly `len`
    /// bytes, if given) at or after `since`.
    pub fn sent_times(
        &self,
        from: &str,
        kind: u8,
        len: Option<usize>,
        since: Instant,
    ) -> Vec<Instant> {
        let from: SocketAddr = from.parse().unwrap();
        self.wire_log
            .iter()
            .filter(|s| s.from == from && s.kind == kind && s.at >= since)
            .filter(|s| len.is_none_or(|l| s.len == l))
            .map(|s| s.at)
            .collect()
    }

    fn transmit(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.link_stats.sent += 1;
        self.wire_log.push(Sent {
            at: self.now,
            from,
            to,
            kind: bytes.first().copied().unwrap_or(0),
            len: bytes.len(),
        });
        if bytes.len() + 28 > self.link.mtu {
            self.link_stats.too_big += 1;
            return;
        }
        if self.chance(self.link.loss) {
            self.link_stats.lost += 1;
            return;
        }
        let copies = if self.chance(self.link.duplicate) {
            self.link_stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.link.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(self.rng.next_u64() % self.link.jitter.as_nanos() as u64)
            };
            let at = self.now + self.link.latency + jitter;
            self.seq += 1;
            self.flights.push(Reverse(Flight {
                at,
                seq: self.seq,
                from,
                to,
                bytes: bytes.clone(),
            }));
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Move transmits and events out of host `h`'s node, after checking its invariants.
    pub fn drain(&mut self, h: usize) {
        if self.check_now() {
            if let Err(e) = self.hosts[h].node.check_invariants() {
                panic!("host {h} at {:?}: {e}", self.now);
            }
        }
        let mut buf = vec![0u8; 65536];
        while let Some(tx) = self.hosts[h].node.poll_transmit(&mut buf) {
            let bytes = buf[..tx.len].to_vec();
            let from = self.translate_out(h, tx.destination);
            self.transmit(from, tx.destination, bytes);
        }
        while let Some(ev) = self.hosts[h].node.poll_event() {
            self.hosts[h].events.push(ev.clone());
            self.hosts[h].event_times.push(self.now);
            if let Event::LookupNeeded { local, ipv6 } = ev {
                if self.hosts[h].auto_resolve {
                    self.resolve(h, local, ipv6);
                }
            }
        }
    }

    /// Answer a lookup from the directory, verifying the record as the daemon must.
    fn resolve(&mut self, h: usize, local: LocalId, ipv6: Ipv6Addr) {
        let now = self.now;
        let found = Ipv6Prefix::from_ipv6(&ipv6).and_then(|prefix| {
            let bytes = self.directory.get(&prefix)?;
            PeerRecord::verify(bytes, Lookup::Ipv6(prefix), self.unix()).ok()
        });
        let cmd = match found {
            Some(rec) => Command::AddPeer {
                local,
                remote: Remote {
                    public_key: rec.public_key,
                    noise_key: rec.noise_key,
                },
                endpoint: rec.endpoints.first().copied(),
                candidates: rec.endpoints.iter().skip(1).copied().collect(),
                relay: rec.relays.first().copied(),
                connect: false,
            },
            None => Command::LookupFailed { local, ipv6 },
        };
        self.hosts[h].node.handle_command(now, cmd).unwrap();
        self.drain(h);
    }

    /// Process everything due up to and including `until`; the clock ends at `until`.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            let next_flight = self.flights.peek().map(|Reverse(f)| f.at);
            let next_timer = self
                .hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.node.poll_timeout().map(|t| (t, i)))
                .min();
            let next = match (next_flight, next_timer) {
                (Some(f), Some((t, _))) => f.min(t),
                (Some(f), None) => f,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_flight == Some(next) {
                let Reverse(f) = self.flights.pop().unwrap();
                self.deliver(f);
            } else if let Some((_, h)) = next_timer {
                let now = self.now;
                self.hosts[h].node.handle_timeout(now);
                // A deadline still due after handle_timeout would spin the driver.
                let after = self.hosts[h].node.poll_timeout();
                assert!(
                    after.is_none_or(|t| t > now),
                    "host {h}: poll_timeout {after:?} not after handle_timeout at {now:?}"
                );
                self.drain(h);
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn deliver(&mut self, f: Flight) {
        let Some(to) = self.translate_in(f.from, f.to) else {
            return;
        };
        // A host behind a NAT is reached at its private address only from its LAN.
        let lan_of = |addr: SocketAddr| {
            self.hosts
                .iter()
                .find(|h| h.addr == addr)
                .and_then(|h| h.nat)
        };
        let sender_nat = lan_of(f.from);
        let Some(h) = self
            .hosts
            .iter()
            .position(|h| h.addr == to && (to != f.to || h.nat.is_none() || h.nat == sender_nat))
        else {
            self.link_stats.unroutable += 1;
            self.taps.entry(f.to).or_default().push(f.bytes);
            return;
        };
        if self.check_now() {
            self.check_no_early_timer(h);
        }
        let mut bytes = f.bytes;
        let now = self.now;
        let _ = to;
        if self.hosts[h].legacy
            && bytes.first() == Some(&wire::kind::INITIATION)
            && bytes.len() != wire::INIT_LEN
        {
            self.link_stats.legacy_dropped += 1;
            return;
        }
        if let Some(range) = self.hosts[h].node.handle_datagram(now, f.from, &mut bytes) {
            self.hosts[h].delivered.push((now, bytes[range].to_vec()));
        }
        self.drain(h);
    }

    /// A driver may wake a node early (daemons do); a node woken before the deadline it
    /// gave in `poll_timeout` must then have nothing to do. If it acts, a timer is
    /// missing from `poll_timeout` and a real driver would have slept through it.
    fn check_no_early_timer(&mut self, h: usize) {
        let now = self.now;
        let node = &mut self.hosts[h].node;
        if node.poll_timeout().is_some_and(|t| t <= now) {
            return;
        }
        let stats = node.stats().clone();
        let peers = node.peers(now);
        node.handle_timeout(now);
        let mut buf = vec![0u8; 65536];
        let acted = node.poll_transmit(&mut buf).is_some()
            || node.poll_event().is_some()
            || *node.stats() != stats
            || node.peers(now) != peers;
        assert!(
            !acted,
            "host {h}: handle_timeout at {now:?} acted before poll_timeout {:?}",
            node.poll_timeout()
        );
    }

    /// Move host `h` to a new underlay address (e.g. DHCP renumbering).
    pub fn renumber(&mut self, h: usize, addr: &str) {
        self.hosts[h].addr = addr.parse().unwrap();
    }
}
