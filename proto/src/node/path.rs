//! Paths to a peer (docs/protocol.md §10.3–§10.6): which way a packet leaves (direct, or
//! through a relay), signals sealed on the session, observed endpoints, hole punching
//! and the direct-path check that falls back to the relay.
//!
//! A peer with a relay starts relayed when nothing direct answers; the side that has
//! candidates to offer sends them over the relayed session, the peer answers with its
//! own, the first side measures that round trip and sends a sync, waits half of it and
//! probes every candidate while the peer, on the sync, probes at once (the timing of
//! libp2p's DCUtR). A probe is an ordinary data message on the same session sent to a
//! candidate endpoint; its acknowledgement, sent back to the probe's source, moves the
//! peer to the direct path. Packets in flight on the relay still arrive (the replay
//! window takes them in any order), so nothing is lost in the switch.

use core::time::Duration;
use std::net::SocketAddr;

use super::data::Sealed;
use super::peer::{DirectCheck, Peer, PeerId, Punch, PunchStage};
use super::{Event, LocalId, Node, Path};
use crate::address::Address;
use crate::signal::{RefuseReason, Signal, WANT_REPLY};
use crate::time::Instant;
use crate::wire;

/// Most direct candidates kept per peer.
pub(super) const MAX_PEER_CANDIDATES: usize = 16;
/// Probe rounds in one punch, and the time between them.
pub(super) const PUNCH_ROUNDS: u8 = 15;
/// Time between probe rounds.
pub(super) const PUNCH_EVERY: Duration = Duration::from_millis(200);
/// How long a punch waits for the peer's candidates or sync.
pub(super) const PUNCH_SIGNAL_TIMEOUT: Duration = Duration::from_secs(3);
/// The first retry after a failed punch; doubled per failure up to [`PUNCH_BACKOFF_MAX`].
pub(super) const PUNCH_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between punches.
pub(super) const PUNCH_BACKOFF_MAX: Duration = Duration::from_secs(120);
/// Data sent directly with no direct packet back for this long makes the node probe
/// the direct path (while a relay is there to fall back to).
pub(super) const DIRECT_CHECK_AFTER: Duration = Duration::from_secs(2);
/// A probe of a silent direct path unanswered for this long falls back to the relay.
pub(super) const DIRECT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Observations of our own endpoint kept, and how long each counts.
pub(super) const MAX_OBSERVATIONS: usize = 32;
/// How long an observation of our endpoint counts.
pub(super) const OBSERVATION_LIFETIME: Duration = Duration::from_secs(600);

/// How a datagram came, or how one leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// Straight to or from this socket address.
    Direct(SocketAddr),
    /// Through the relay at `relay`, from or to the client `peer`.
    Relay { relay: SocketAddr, peer: Address },
}

impl Via {
    /// The socket address the datagram goes to or came from.
    pub(super) fn socket(self) -> SocketAddr {
        match self {
            Via::Direct(a) => a,
            Via::Relay { relay, .. } => relay,
        }
    }
}

/// What the node has seen of its own endpoint (docs/protocol.md §10.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatStatus {
    /// Our endpoints as others see them, that are not one of our local candidates.
    pub reflexive: Vec<SocketAddr>,
    /// What the observations say about the NAT's mapping.
    pub mapping: Mapping,
}

/// A NAT's mapping behaviour, judged from observations by peers at different IPs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mapping {
    /// Fewer than two observers, or nothing to compare.
    #[default]
    Unknown,
    /// No NAT seen: every observer sees one of our own endpoints.
    None,
    /// Observers at different IPs see the same port (endpoint-independent mapping).
    EndpointIndependent,
    /// Observers at different IPs see different ports (endpoint-dependent mapping):
    /// a punch can only work towards a peer whose NAT filters by address alone.
    EndpointDependent,
}

impl Mapping {
    /// A short kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::Unknown => "unknown",
            Mapping::None => "none",
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::EndpointDependent => "endpoint-dependent",
        }
    }
}

impl Peer {
    /// Where a packet to this peer goes now: the relay when relayed (or when there is
    /// nothing else, or the local identity is hidden behind it), else the endpoint.
    pub(super) fn route(&self) -> Option<Via> {
        let relay = self.paths.relay.map(|relay| Via::Relay {
            relay,
            peer: self.address,
        });
        let wants_relay = self.paths.relayed || self.paths.relay_only || self.endpoint.is_none();
        if wants_relay && (relay.is_some() || self.paths.relay_only) {
            return relay;
        }
        self.endpoint.map(Via::Direct)
    }

    /// The path shown for this peer.
    pub(super) fn path(&self) -> Path {
        match self.route() {
            Some(Via::Relay { relay, .. }) => Path::Relay(relay),
            Some(Via::Direct(_)) => Path::Direct,
            None => Path::None,
        }
    }

    /// A handshake message came `via`: that path is the one to answer on. Direct, the
    /// source is the endpoint and the peer is direct; relayed, the relay is the one
    /// to use (the endpoint stays, for a later punch) unless the direct path was heard
    /// from just now (crossing handshakes send copies on both paths, and whichever
    /// lands last must not undo a working direct path). A peer that becomes relayed
    /// gets a punch scheduled.
    pub(super) fn take_path(&mut self, via: Via, now: Instant) {
        match via {
            Via::Direct(from) => {
                self.endpoint = Some(from);
                self.paths.relayed = false;
                self.paths.direct_rx = Some(now);
            }
            Via::Relay { relay, .. } => {
                self.paths.relay = Some(relay);
                let direct_alive = self.endpoint.is_some()
                    && self
                        .paths
                        .direct_rx
                        .is_some_and(|t| now.saturating_duration_since(t) < DIRECT_CHECK_AFTER);
                if !direct_alive {
                    self.paths.relayed = true;
                }
                if self.paths.relayed && self.paths.punch.is_none() && self.paths.punch_at.is_none()
                {
                    self.paths.punch_at = Some(now);
                }
            }
        }
    }

    /// Add `ep` to the direct candidates (bounded; the newest replaces the oldest).
    pub(super) fn add_candidate(&mut self, ep: SocketAddr) {
        if ep.port() == 0 || self.paths.candidates.contains(&ep) {
            return;
        }
        if self.paths.candidates.len() >= MAX_PEER_CANDIDATES {
            self.paths.candidates.remove(0);
        }
        self.paths.candidates.push(ep);
    }
}

impl Node {
    /// Queue `msg` (a whole metanet message) from local identity `local` to leave
    /// `via`: relayed messages get the relay header naming the peer and `local`.
    pub(super) fn push_via(&mut self, local: LocalId, via: Via, msg: Vec<u8>) {
        match via {
            Via::Direct(to) => self.transmits.push_back((to, msg)),
            Via::Relay { relay, peer } => {
                let Some(source) = self.local(local).map(|l| l.identity.address()) else {
                    return;
                };
                let out = wire::relay_message(&peer, &source, &msg);
                self.transmits.push_back((relay, out));
            }
        }
    }

    /// Whether `endpoint` is a relay one of our identities holds a reservation with.
    pub(super) fn is_relay_endpoint(&self, endpoint: SocketAddr) -> bool {
        self.locals
            .iter()
            .flatten()
            .any(|l| l.relays.iter().any(|r| r.relay.endpoint == endpoint))
    }

    /// The relay address of `local`'s relay at `endpoint`.
    pub(super) fn relay_address(&self, local: LocalId, endpoint: SocketAddr) -> Option<Address> {
        self.local(local)?
            .relays
            .iter()
            .find(|r| r.relay.endpoint == endpoint)
            .map(|r| r.relay.address)
    }

    /// Seal `signal` on peer `id`'s current keypair and send it `via` (its route when
    /// `None`). Returns false without a usable session.
    pub(super) fn send_signal(
        &mut self,
        now: Instant,
        id: PeerId,
        signal: &Signal,
        via: Option<Via>,
    ) -> bool {
        let body = signal.encode();
        let mut buf = vec![0u8; body.len() + wire::DATA_OVERHEAD + wire::RELAY_HEADER_LEN];
        buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + body.len()].copy_from_slice(&body);
        match self.seal_via(now, id, &mut buf, body.len(), via, false) {
            Sealed::Sent(t) => {
                buf.truncate(t.len);
                self.transmits.push_back((t.destination, buf));
                true
            }
            Sealed::NoSession | Sealed::Failed => false,
        }
    }

    /// A signal arrived from peer `id` `via` (docs/protocol.md §10.1).
    pub(super) fn on_signal(&mut self, now: Instant, id: PeerId, via: Via, plaintext: &[u8]) {
        let Ok(signal) = Signal::parse(plaintext) else {
            self.stats.bad_signals += 1;
            return;
        };
        let Some(p) = self.peers.get(id) else {
            return;
        };
        let (local, address) = (p.local, p.address);
        let hidden = self.local(local).is_some_and(|l| l.hidden);
        match signal {
            Signal::Observed(ep) => {
                if let Via::Direct(from) = via {
                    self.observe(now, from, ep);
                }
            }
            Signal::Reserve => {
                if let Via::Direct(from) = via {
                    self.relay_reserve(now, id, local, address, from);
                }
            }
            Signal::Reserved {
                lifetime_secs,
                observed,
            } => {
                if let Via::Direct(from) = via {
                    self.relay_reserved(now, local, address, from, lifetime_secs, observed);
                }
            }
            Signal::Refused { reason, address } => {
                self.relay_refused(local, address, reason);
            }
            Signal::Candidates { flags, endpoints } => {
                if hidden {
                    // A hidden identity never punches: its candidates would give away
                    // its IP, and so would its probes.
                    return;
                }
                let own = self.own_candidates(now);
                let lower = self
                    .local(local)
                    .is_some_and(|l| l.identity.address() < address);
                let Some(p) = self.peers.get_mut(id) else {
                    return;
                };
                for ep in endpoints.into_iter().filter(|e| !own.contains(e)) {
                    p.add_candidate(ep);
                }
                // Both sides asked at once: the lower address leads, the other answers.
                let leading = lower
                    && p.paths
                        .punch
                        .as_ref()
                        .is_some_and(|x| x.stage == PunchStage::AwaitCandidates);
                if flags & WANT_REPLY != 0 && leading {
                    return;
                }
                if flags & WANT_REPLY != 0 {
                    let nonce = self.rng.u64();
                    let Some(p) = self.peers.get_mut(id) else {
                        return;
                    };
                    p.paths.punch = Some(Box::new(Punch {
                        stage: PunchStage::AwaitSync,
                        nonce,
                        started: now,
                        next_at: now + PUNCH_SIGNAL_TIMEOUT,
                        rounds_left: PUNCH_ROUNDS,
                    }));
                    let reply = Signal::Candidates {
                        flags: 0,
                        endpoints: own,
                    };
                    self.send_signal(now, id, &reply, None);
                } else if let Some(punch) = p
                    .paths
                    .punch
                    .as_mut()
                    .filter(|x| x.stage == PunchStage::AwaitCandidates)
                {
                    // Our candidates' round trip over the relay: the peer gets the sync
                    // in half of it, so we start probing then.
                    let rtt = now.saturating_duration_since(punch.started);
                    punch.stage = PunchStage::Probing;
                    punch.next_at = now + rtt / 2;
                    self.send_signal(now, id, &Signal::Sync, None);
                }
            }
            Signal::Sync => {
                if hidden {
                    return;
                }
                if let Some(p) = self.peers.get_mut(id) {
                    if let Some(punch) = p.paths.punch.as_mut() {
                        punch.stage = PunchStage::Probing;
                        punch.next_at = now;
                    }
                }
                self.punch_round(now, id);
            }
            Signal::Probe { nonce } => {
                let Via::Direct(from) = via else {
                    return;
                };
                if hidden {
                    return;
                }
                if let Some(p) = self.peers.get_mut(id) {
                    p.add_candidate(from);
                }
                let ack = Signal::ProbeAck {
                    nonce,
                    observed: from,
                };
                self.send_signal(now, id, &ack, Some(Via::Direct(from)));
            }
            Signal::ProbeAck { nonce, observed } => {
                let Via::Direct(from) = via else {
                    return;
                };
                self.observe(now, from, observed);
                self.probe_acked(now, id, from, nonce);
            }
        }
    }

    /// A probe we sent to `from` came back: the direct path works both ways.
    fn probe_acked(&mut self, now: Instant, id: PeerId, from: SocketAddr, nonce: u64) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let expected = p.paths.punch.as_ref().map(|x| x.nonce) == Some(nonce)
            || p.paths.check.is_some_and(|c| c.probed && c.nonce == nonce);
        if !expected || p.paths.relay_only {
            return;
        }
        p.paths.check = None;
        p.paths.direct_rx = Some(now);
        let upgraded = p.paths.relayed || p.endpoint != Some(from);
        p.endpoint = Some(from);
        p.paths.relayed = false;
        p.paths.punch = None;
        p.paths.punch_at = None;
        p.paths.punch_failures = 0;
        let (local, address) = (p.local, p.address);
        if upgraded {
            self.stats.punches_succeeded += 1;
            self.events.push_back(Event::PathChanged {
                local,
                address,
                path: Path::Direct,
                endpoint: Some(from),
            });
        }
    }

    /// Begin a punch with peer `id` if it is relayed, has a session and we may punch.
    pub(super) fn start_punch(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peers.get(id) else {
            return;
        };
        let hidden = self.local(p.local).is_none_or(|l| l.hidden);
        if hidden
            || p.paths.relay_only
            || !p.paths.relayed
            || p.paths.punch.is_some()
            || !p.keys.current_usable(now)
        {
            return;
        }
        let own = self.own_candidates(now);
        let nonce = self.rng.u64();
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        p.paths.punch_at = None;
        p.paths.punch = Some(Box::new(Punch {
            stage: PunchStage::AwaitCandidates,
            nonce,
            started: now,
            next_at: now + PUNCH_SIGNAL_TIMEOUT,
            rounds_left: PUNCH_ROUNDS,
        }));
        self.stats.punches_started += 1;
        let signal = Signal::Candidates {
            flags: WANT_REPLY,
            endpoints: own,
        };
        self.send_signal(now, id, &signal, None);
    }

    /// One probe round: a probe to every candidate (and the known endpoint).
    fn punch_round(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let Some(punch) = p.paths.punch.as_mut() else {
            return;
        };
        if punch.rounds_left == 0 {
            return;
        }
        punch.rounds_left -= 1;
        punch.next_at = now + PUNCH_EVERY;
        let nonce = punch.nonce;
        let mut targets = p.paths.candidates.clone();
        if let Some(e) = p.endpoint.filter(|e| !targets.contains(e)) {
            targets.push(e);
        }
        for to in targets {
            self.send_signal(now, id, &Signal::Probe { nonce }, Some(Via::Direct(to)));
        }
    }

    /// Peer `id`'s path timers: punch steps, punch retries and the direct check.
    pub(super) fn path_timers(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peers.get(id) else {
            return;
        };
        if let Some(punch) = p.paths.punch.as_ref().filter(|x| now >= x.next_at) {
            if punch.stage == PunchStage::Probing && punch.rounds_left > 0 {
                self.punch_round(now, id);
            } else {
                self.punch_failed(now, id);
            }
        }
        let Some(p) = self.peers.get(id) else {
            return;
        };
        if p.paths.relayed && p.paths.punch.is_none() && p.paths.punch_at.is_some_and(|t| now >= t)
        {
            self.start_punch(now, id);
            // Not punchable now (no session yet): try again later.
            if let Some(p) = self.peers.get_mut(id) {
                if p.paths.punch.is_none() && p.paths.punch_at.is_some_and(|t| now >= t) {
                    p.paths.punch_at = Some(now + PUNCH_BACKOFF);
                }
            }
        }
        self.direct_check(now, id);
    }

    /// A punch ran out: stay relayed and try again after a back-off.
    fn punch_failed(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        p.paths.punch = None;
        p.paths.punch_failures = p.paths.punch_failures.saturating_add(1);
        let shift = u32::from(p.paths.punch_failures.min(6)) - 1;
        let wait = (PUNCH_BACKOFF * (1 << shift)).min(PUNCH_BACKOFF_MAX);
        p.paths.punch_at = Some(now + wait);
        self.stats.punches_failed += 1;
    }

    /// Data went out directly while a relay could take over: arm the direct check.
    pub(super) fn arm_direct_check(p: &mut Peer, now: Instant) {
        if p.paths.check.is_none() && p.paths.relay.is_some() {
            p.paths.check = Some(DirectCheck {
                due: now + DIRECT_CHECK_AFTER,
                since: now,
                probed: false,
                nonce: 0,
            });
        }
    }

    /// The direct check fired: heard from since it was armed (it re-arms on the next
    /// data sent), else probe the endpoint once, else fall back to the relay.
    fn direct_check(&mut self, now: Instant, id: PeerId) {
        let nonce = self.rng.u64();
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let Some(check) = p.paths.check.filter(|c| now >= c.due) else {
            return;
        };
        // Heard from directly since the probe went out, or (before a probe) within the
        // last check period: the path answers; the next data sent re-arms the check.
        let heard = p.paths.direct_rx.is_some_and(|t| {
            if check.probed {
                t >= check.since
            } else {
                now.saturating_duration_since(t) < DIRECT_CHECK_AFTER
            }
        });
        if p.paths.relayed || heard {
            p.paths.check = None;
            return;
        }
        let Some(endpoint) = p.endpoint else {
            p.paths.check = None;
            return;
        };
        if !check.probed {
            p.paths.check = Some(DirectCheck {
                due: now + DIRECT_PROBE_TIMEOUT,
                since: now,
                probed: true,
                nonce,
            });
            self.send_signal(
                now,
                id,
                &Signal::Probe { nonce },
                Some(Via::Direct(endpoint)),
            );
            return;
        }
        // Silent: back to the relay, and punch again later.
        p.paths.check = None;
        p.paths.relayed = true;
        p.paths.punch_at = Some(now + PUNCH_BACKOFF);
        let (local, address, relay) = (p.local, p.address, p.paths.relay);
        self.stats.path_fallbacks += 1;
        if let Some(relay) = relay {
            self.events.push_back(Event::PathChanged {
                local,
                address,
                path: Path::Relay(relay),
                endpoint: None,
            });
        }
    }

    /// Someone at `observer` saw our packets come from `ep`.
    pub(super) fn observe(&mut self, now: Instant, observer: SocketAddr, ep: SocketAddr) {
        let before = self.nat_status(now).reflexive;
        if self.observed.len() >= MAX_OBSERVATIONS && !self.observed.contains_key(&observer) {
            if let Some(oldest) = self
                .observed
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.observed.remove(&oldest);
            }
        }
        self.observed.insert(observer, (ep, now));
        let after = self.nat_status(now);
        if after.reflexive != before {
            // Behind a NAT: peers' paths need keepalives to keep their bindings.
            // Only against known local endpoints can an observation show a NAT.
            if !after.reflexive.is_empty() && !self.candidates.is_empty() && !self.nat_seen {
                self.nat_seen = true;
                let ids: Vec<PeerId> = self.peers.iter().map(|(id, _)| id).collect();
                for id in ids {
                    // Marked dirty: their deadlines now include the keepalive.
                    let _ = self.peers.get_mut(id);
                }
            }
            self.events.push_back(Event::NatChanged {
                reflexive: after.reflexive,
                mapping: after.mapping,
            });
        }
    }

    /// Our endpoints as seen by others, and the NAT's mapping behaviour.
    pub fn nat_status(&self, now: Instant) -> NatStatus {
        let fresh: Vec<(SocketAddr, SocketAddr)> = self
            .observed
            .iter()
            .filter(|(_, (_, t))| now.saturating_duration_since(*t) < OBSERVATION_LIFETIME)
            .map(|(o, (e, _))| (*o, *e))
            .collect();
        let mut reflexive: Vec<SocketAddr> = Vec::new();
        for (_, e) in &fresh {
            if !self.candidates.contains(e) && !reflexive.contains(e) {
                reflexive.push(*e);
            }
        }
        reflexive.sort();
        reflexive.truncate(crate::signal::MAX_CANDIDATES);
        let mut mapping = Mapping::Unknown;
        for (i, (o1, e1)) in fresh.iter().enumerate() {
            for (o2, e2) in &fresh[i + 1..] {
                if o1.ip() == o2.ip() || e1.ip() != e2.ip() {
                    continue;
                }
                if e1.port() != e2.port() {
                    mapping = Mapping::EndpointDependent;
                } else if mapping == Mapping::Unknown {
                    mapping = if self.candidates.contains(e1) {
                        Mapping::None
                    } else {
                        Mapping::EndpointIndependent
                    };
                }
            }
        }
        NatStatus { reflexive, mapping }
    }

    /// The candidates we offer a peer: local endpoints first, then reflexive ones.
    pub(super) fn own_candidates(&self, now: Instant) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self.candidates.clone();
        for e in self.nat_status(now).reflexive {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out.truncate(crate::signal::MAX_CANDIDATES);
        out
    }

    /// A session with peer `id` just came up or was confirmed `via`: tell it where its
    /// packets come from (direct paths only), and start punching if it is relayed.
    pub(super) fn session_up(&mut self, now: Instant, id: PeerId, via: Via) {
        match via {
            Via::Direct(from) => {
                self.send_signal(now, id, &Signal::Observed(from), Some(via));
            }
            Via::Relay { .. } => {
                if let Some(p) = self.peers.get_mut(id) {
                    if p.paths.punch_at.is_none() && p.paths.punch.is_none() {
                        p.paths.punch_at = Some(now);
                    }
                }
            }
        }
        self.relay_session_up(now, id);
    }

    /// A relay refused to forward to `address` (docs/protocol.md §10.2).
    fn relay_refused(&mut self, local: LocalId, address: Address, reason: RefuseReason) {
        self.stats.relay_refusals_received += 1;
        self.events.push_back(Event::RelayRefused {
            local,
            address,
            reason,
        });
    }
}
