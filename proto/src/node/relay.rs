//! Relays (docs/protocol.md §10.2): the server side, which binds clients to their
//! sessions and forwards opaque end-to-end messages between two bound clients, and the
//! client side, which keeps a session and a reservation with each relay its
//! identities use.
//!
//! A relay forwards a relay message only when the source it names holds a reservation
//! bound to the endpoint the message came from (the endpoint of that client's
//! authenticated session: a third address replaying a bound leg's packets gets nothing
//! forwarded), its destination holds an unexpired reservation, the pair is one of the
//! sender's at most `sessions` circuits and the sender's byte rate is under its cap.
//! The forwarded message is shorter than the one received: the destination address is
//! dropped from the header.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::peer::PeerId;
use super::{Event, LocalId, Node};
use crate::address::Address;
use crate::record::Relay;
use crate::signal::{RefuseReason, Signal};
use crate::time::Instant;
use crate::wire::{self, RelayPacket};

/// A client renews its reservation this often; it is also the keepalive of the leg.
pub(super) const RESERVE_REFRESH: Duration = Duration::from_secs(5);
/// A reservation unanswered for this long means the relay lost our session.
pub(super) const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a client without a session to its relay tries again.
pub(super) const RELAY_RETRY: Duration = Duration::from_secs(1);
/// A circuit (one client relaying to one other) unused for this long is forgotten.
pub(super) const CIRCUIT_IDLE: Duration = Duration::from_secs(60);
/// Most relays one local identity reserves with.
pub(super) const MAX_RELAYS_PER_IDENTITY: usize = crate::record::MAX_RELAYS;
/// A refusal is signalled to one client at most this often.
const REFUSAL_EVERY: Duration = Duration::from_secs(1);

/// What a relay allows each client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Bytes per second one client may send through the relay (0: no cap).
    pub rate: u64,
    /// Peers one client may relay to at once.
    pub sessions: usize,
    /// Reservations held at once.
    pub clients: usize,
    /// How long a reservation lasts unless renewed.
    pub lifetime: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            rate: 125_000_000,
            sessions: 64,
            clients: 4096,
            lifetime: Duration::from_secs(30),
        }
    }
}

/// The relay's side: reservations by address and by endpoint.
#[derive(Debug)]
pub(super) struct RelayServer {
    limits: RelayLimits,
    clients: BTreeMap<Address, Client>,
    next_sweep: Instant,
}

/// One bound client.
#[derive(Debug)]
struct Client {
    /// The relay identity it reserved with, and its session there.
    local: LocalId,
    peer: PeerId,
    /// The endpoint of its authenticated session: the only source forwarded from.
    endpoint: SocketAddr,
    expires: Instant,
    /// Token bucket, in bytes.
    tokens: u64,
    refilled: Instant,
    /// Peers it relays to, and when each was last used.
    circuits: BTreeMap<Address, Instant>,
    rx_bytes: u64,
    rx_packets: u64,
    refused_at: Option<Instant>,
}

/// One client, as a relay shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayClientStatus {
    /// The client's address.
    pub address: Address,
    /// The endpoint its session comes from.
    pub endpoint: SocketAddr,
    /// Seconds until its reservation expires.
    pub expires_in: Duration,
    /// Peers it relays to now.
    pub circuits: usize,
    /// Bytes it sent through the relay.
    pub rx_bytes: u64,
    /// Messages it sent through the relay.
    pub rx_packets: u64,
}

/// A relay's state, for `metanet relay status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayStatus {
    /// The limits it applies.
    pub limits: RelayLimits,
    /// Its bound clients.
    pub clients: Vec<RelayClientStatus>,
}

/// One relay a local identity uses, as the client side holds it.
#[derive(Debug)]
pub(super) struct RelayUse {
    pub(super) relay: Relay,
    /// Until when the relay holds our reservation.
    pub(super) reserved_until: Option<Instant>,
    /// When the next reservation (renewal) goes out.
    pub(super) next_at: Instant,
    /// A reservation sent and not yet answered: when we give up on it.
    pub(super) answer_by: Option<Instant>,
}

/// A relay in use, as `metanet relay status` shows it on a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayUseStatus {
    /// The identity using it.
    pub local: LocalId,
    /// The relay.
    pub relay: Relay,
    /// Whether the relay holds our reservation now.
    pub reserved: bool,
}

impl RelayServer {
    pub(super) fn new(limits: RelayLimits, now: Instant) -> Self {
        RelayServer {
            limits,
            clients: BTreeMap::new(),
            next_sweep: now + limits.lifetime,
        }
    }

    pub(super) fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    /// Drop expired reservations and idle circuits.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.clients.retain(|_, c| c.expires > now);
        for c in self.clients.values_mut() {
            c.circuits
                .retain(|_, t| now.saturating_duration_since(*t) < CIRCUIT_IDLE);
        }
        self.next_sweep = now + self.limits.lifetime.min(CIRCUIT_IDLE);
    }

    /// A client whose session moved: its binding follows its authenticated session.
    pub(super) fn roamed(&mut self, address: &Address, to: SocketAddr) {
        if let Some(c) = self.clients.get_mut(address) {
            c.endpoint = to;
        }
    }

    /// The status for `metanet relay status`.
    pub(super) fn status(&self, now: Instant) -> RelayStatus {
        RelayStatus {
            limits: self.limits,
            clients: self
                .clients
                .iter()
                .filter(|(_, c)| c.expires > now)
                .map(|(a, c)| RelayClientStatus {
                    address: *a,
                    endpoint: c.endpoint,
                    expires_in: c.expires.saturating_duration_since(now),
                    circuits: c.circuits.len(),
                    rx_bytes: c.rx_bytes,
                    rx_packets: c.rx_packets,
                })
                .collect(),
        }
    }
}

/// What became of a relay message.
pub(super) enum Forward {
    /// Rewritten in place: send the datagram from byte `start` on to `to`.
    To { to: SocketAddr, start: usize },
    /// Dropped (counted); maybe a refusal to signal to a client.
    Dropped(Option<(PeerId, Signal)>),
}

impl Node {
    /// A relay message from `from`: rewrite it in place into a relayed message and
    /// return where it goes, or drop it (docs/protocol.md §10.2).
    pub(super) fn relay_forward(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &mut [u8],
    ) -> Forward {
        let Some(server) = self.relay.as_mut() else {
            self.stats.relay_unbound += 1;
            return Forward::Dropped(None);
        };
        let Ok(packet) = RelayPacket::new_checked(&*msg) else {
            self.stats.malformed += 1;
            return Forward::Dropped(None);
        };
        let (Some(dest), src_addr) = (packet.destination(), packet.source()) else {
            self.stats.malformed += 1;
            return Forward::Dropped(None);
        };
        let len = msg.len() as u64;
        let limits = server.limits;
        let dest_endpoint = server
            .clients
            .get(&dest)
            .filter(|c| c.expires > now && dest != src_addr)
            .map(|c| c.endpoint);
        // The source must be bound, and to the endpoint this came from.
        let Some(src) = server
            .clients
            .get_mut(&src_addr)
            .filter(|c| c.expires > now && c.endpoint == from)
        else {
            self.stats.relay_unbound += 1;
            return Forward::Dropped(None);
        };
        let refuse = |src: &mut Client, reason| {
            let signal = src
                .refused_at
                .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_EVERY)
                .then(|| {
                    src.refused_at = Some(now);
                    (
                        src.peer,
                        Signal::Refused {
                            reason,
                            address: dest,
                        },
                    )
                });
            Forward::Dropped(signal)
        };
        let Some(to) = dest_endpoint else {
            self.stats.relay_refused += 1;
            return refuse(src, RefuseReason::NoReservation);
        };
        if !src.circuits.contains_key(&dest) {
            src.circuits
                .retain(|_, t| now.saturating_duration_since(*t) < CIRCUIT_IDLE);
            if src.circuits.len() >= limits.sessions {
                self.stats.relay_refused += 1;
                return refuse(src, RefuseReason::SessionLimit);
            }
        }
        if limits.rate > 0 {
            let burst = limits.rate.max(64 * 1024);
            let elapsed = now.saturating_duration_since(src.refilled);
            let add = (elapsed.as_nanos() * u128::from(limits.rate) / 1_000_000_000) as u64;
            if add > 0 {
                src.tokens = src.tokens.saturating_add(add).min(burst);
                src.refilled = now;
            }
            if src.tokens < len {
                self.stats.relay_rate_limited += 1;
                return Forward::Dropped(None);
            }
            src.tokens -= len;
        }
        src.circuits.insert(dest, now);
        src.rx_bytes += len;
        src.rx_packets += 1;
        let start = wire::relay_to_relayed(msg);
        self.stats.relay_forwarded += 1;
        self.stats.relay_forwarded_bytes += len;
        Forward::To { to, start }
    }

    /// A client asks this relay for a reservation on its session from `from`.
    pub(super) fn relay_reserve(
        &mut self,
        now: Instant,
        id: PeerId,
        local: LocalId,
        address: Address,
        from: SocketAddr,
    ) {
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        let limits = server.limits;
        if !server.clients.contains_key(&address) && server.clients.len() >= limits.clients {
            server.sweep(now);
        }
        let answer =
            if !server.clients.contains_key(&address) && server.clients.len() >= limits.clients {
                self.stats.relay_refused += 1;
                Signal::Refused {
                    reason: RefuseReason::Full,
                    address,
                }
            } else {
                let client = server.clients.entry(address).or_insert_with(|| Client {
                    local,
                    peer: id,
                    endpoint: from,
                    expires: now,
                    tokens: limits.rate.max(64 * 1024),
                    refilled: now,
                    circuits: BTreeMap::new(),
                    rx_bytes: 0,
                    rx_packets: 0,
                    refused_at: None,
                });
                // Several identities behind one socket each hold their own
                // reservation: a relay message names its source, checked against
                // the endpoint bound here.
                client.local = local;
                client.peer = id;
                client.endpoint = from;
                client.expires = now + limits.lifetime;
                Signal::Reserved {
                    lifetime_secs: limits.lifetime.as_secs() as u32,
                    observed: from,
                }
            };
        self.send_signal(now, id, &answer, Some(super::path::Via::Direct(from)));
    }

    /// Our reservation with the relay `address` at `from` holds for `lifetime_secs`.
    pub(super) fn relay_reserved(
        &mut self,
        now: Instant,
        local: LocalId,
        address: Address,
        from: SocketAddr,
        lifetime_secs: u32,
        observed: SocketAddr,
    ) {
        let Some(l) = self.local_mut(local) else {
            return;
        };
        let Some(r) = l.relays.iter_mut().find(|r| r.relay.address == address) else {
            return;
        };
        let fresh = r.reserved_until.is_none_or(|t| t <= now);
        // The endpoint the relay answers from is the one to send through.
        r.relay.endpoint = from;
        r.reserved_until = Some(now + Duration::from_secs(u64::from(lifetime_secs)));
        r.answer_by = None;
        let relay = r.relay;
        self.observe(now, from, observed);
        if fresh {
            self.events.push_back(Event::RelayReserved { local, relay });
            // Handshakes that waited for this reservation go out now.
            let waiting: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.local == local
                        && p.paths.relay == Some(from)
                        && !p.keys.current_usable(now)
                        && p.handshake.attempt.is_some()
                })
                .map(|(id, _)| id)
                .collect();
            for id in waiting {
                let started = self
                    .peers
                    .get(id)
                    .and_then(|p| p.handshake.attempt.as_ref())
                    .map_or(now, |a| a.started);
                self.send_initiation(now, id, started);
            }
        }
    }

    /// A session with peer `id` came up: if it is one of its identity's relays,
    /// reserve at once.
    pub(super) fn relay_session_up(&mut self, now: Instant, id: PeerId) {
        let Some((local, address)) = self.peers.get(id).map(|p| (p.local, p.address)) else {
            return;
        };
        let Some(l) = self.local_mut(local) else {
            return;
        };
        if let Some(r) = l.relays.iter_mut().find(|r| r.relay.address == address) {
            r.next_at = now;
            r.answer_by = None;
        }
        self.relay_client_timers(now);
    }

    /// The relays `local` reserves with (docs/protocol.md §10.2); at most
    /// [`MAX_RELAYS_PER_IDENTITY`].
    pub(super) fn set_relays(&mut self, now: Instant, local: LocalId, relays: Vec<Relay>) {
        let Some(l) = self.local_mut(local) else {
            return;
        };
        let mut kept = Vec::new();
        for relay in relays.into_iter().take(MAX_RELAYS_PER_IDENTITY) {
            let old = l
                .relays
                .iter()
                .position(|r| r.relay.address == relay.address)
                .map(|i| l.relays.swap_remove(i));
            kept.push(old.unwrap_or(RelayUse {
                relay,
                reserved_until: None,
                next_at: now,
                answer_by: None,
            }));
        }
        l.relays = kept;
        let relay_only = l.hidden && !l.relays.is_empty();
        let first = l.relays.first().map(|r| r.relay.endpoint);
        let relay_addrs: Vec<Address> = l.relays.iter().map(|r| r.relay.address).collect();
        for id in self.peers_of(local) {
            if let Some(p) = self.peers.get_mut(id) {
                let is_relay = relay_addrs.contains(&p.address);
                p.paths.relay_only = relay_only && !is_relay;
                if p.paths.relay_only && p.paths.relay.is_none() {
                    p.paths.relay = first;
                }
            }
        }
        self.relay_client_timers(now);
    }

    /// When the client side next needs to act.
    pub(super) fn relay_client_deadline(&self) -> Option<Instant> {
        let clients = self
            .locals
            .iter()
            .flatten()
            .flat_map(|l| l.relays.iter())
            .flat_map(|r| [Some(r.next_at), r.answer_by].into_iter().flatten());
        let sweep = self.relay.as_ref().map(RelayServer::next_sweep);
        clients.chain(sweep).min()
    }

    /// Keep every relay's session and reservation (docs/protocol.md §10.2): connect
    /// when there is no peer yet, handshake when there is no session, reserve and
    /// renew, and treat an unanswered reservation as a lost session.
    pub(super) fn relay_client_timers(&mut self, now: Instant) {
        if let Some(server) = self.relay.as_mut() {
            if server.next_sweep() <= now {
                server.sweep(now);
            }
        }
        let mut work = Vec::new();
        for (i, l) in self.locals.iter().enumerate() {
            let Some(l) = l else { continue };
            for r in &l.relays {
                let due = r.next_at <= now || r.answer_by.is_some_and(|t| t <= now);
                if due {
                    work.push((LocalId(i as u16), r.relay));
                }
            }
        }
        for (local, relay) in work {
            self.relay_client_step(now, local, relay);
        }
    }

    fn relay_client_step(&mut self, now: Instant, local: LocalId, relay: Relay) {
        let id = self.by_ip.get(&(local, relay.address.ipv6())).copied();
        let usable = id
            .and_then(|id| self.peers.get(id))
            .is_some_and(|p| p.keys.current_usable(now));
        let lost = self
            .local(local)
            .and_then(|l| l.relays.iter().find(|r| r.relay.address == relay.address))
            .is_some_and(|r| r.answer_by.is_some_and(|t| t <= now));
        let mut next = now + RESERVE_REFRESH;
        let mut answer_by = None;
        match id {
            None => {
                if !self
                    .probes
                    .values()
                    .any(|p| p.local == local && p.address == relay.address)
                {
                    let _ = self.connect(now, local, relay.address, relay.endpoint);
                }
                next = now + RELAY_RETRY;
            }
            Some(id) if lost || !usable => {
                // No session, or the relay stopped answering (it restarted): a fresh
                // handshake, and a reservation as soon as it is up.
                if let Some(p) = self.peers.get_mut(id) {
                    p.endpoint = Some(relay.endpoint);
                    p.paths.relay_only = false;
                }
                if lost {
                    self.stats.relay_reservations_lost += 1;
                    self.send_initiation(now, id, now);
                } else {
                    self.start_handshake(now, id);
                }
                next = now + RELAY_RETRY;
            }
            Some(id) => {
                if self.send_signal(now, id, &Signal::Reserve, None) {
                    answer_by = Some(now + RESERVE_TIMEOUT);
                }
            }
        }
        if let Some(l) = self.local_mut(local) {
            if let Some(r) = l
                .relays
                .iter_mut()
                .find(|r| r.relay.address == relay.address)
            {
                r.next_at = next;
                r.answer_by = answer_by;
                if lost {
                    r.reserved_until = None;
                }
            }
        }
    }

    /// The relays every identity uses, and whether each holds our reservation.
    pub fn relays_in_use(&self, now: Instant) -> Vec<RelayUseStatus> {
        self.locals
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (LocalId(i as u16), l)))
            .flat_map(|(local, l)| {
                l.relays.iter().map(move |r| RelayUseStatus {
                    local,
                    relay: r.relay,
                    reserved: r.reserved_until.is_some_and(|t| t > now),
                })
            })
            .collect()
    }

    /// The relay's own state, when this node is a relay.
    pub fn relay_status(&self, now: Instant) -> Option<RelayStatus> {
        self.relay.as_ref().map(|r| r.status(now))
    }
}
