//! Handshakes with peers (docs/protocol.md §5, §6.4, §7.5): starting and retrying our
//! initiations, and handling the initiations, responses and cookie replies that
//! arrive. Load checks before DH work are in `load`.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::path::Via;
use super::peer::{Attempt, Origin, Peer, PeerId};
use super::table::{free_index, NewPaths};
use super::{Event, LocalId, Node};
use crate::handshake::{self, Cookie, COOKIE_SECRET_LIFETIME};
use crate::pq::PqMode;
use crate::session::{self, Keypair};
use crate::time::{Instant, UnixTime};
use crate::wire::{CookieReplyPacket, CookieReplyRepr, InitiationPacket, ResponsePacket};
use zeroize::Zeroizing;

impl Node {
    /// Start a handshake with peer `id` unless one is under way (an initiation waits
    /// for its response, or the retry timer has not run out).
    pub(super) fn start_handshake(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peers.get(id) else {
            return;
        };
        if p.handshake
            .attempt
            .as_ref()
            .is_some_and(|a| a.state.is_some() || a.retry_at > now)
        {
            return;
        }
        let started = p.handshake.attempt.as_ref().map_or(now, |a| a.started);
        self.send_initiation(now, id, started);
    }

    /// Send a new initiation to peer `id` (new index, ephemeral and timestamp) for an
    /// attempt that started at `started`, replacing any earlier initiation.
    pub(super) fn send_initiation(&mut self, now: Instant, id: PeerId, started: Instant) {
        let sender = self.new_index();
        let seed = self.rng.bytes();
        let jitter = Duration::from_millis(self.rng.below(334));
        let unix = self.unix(now);
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        // Whether to offer the hybrid handshake (§5.7). In `auto`, a hybrid initiation
        // that got no answer (an old peer drops extended initiations) is retried
        // classical, and the two alternate, unless the peer is known to speak hybrid.
        let previous = p.handshake.attempt.as_ref().map(|a| {
            let unanswered = a.state.is_some() && !a.cookie_replied;
            (a.offered_pq, unanswered)
        });
        // A peer marked legacy starts classical only when there is no session to keep
        // traffic going: a rekey (the current session still usable) offers hybrid
        // first again, so one lost initiation does not make a pair classical for good.
        let rekey = p.keys.current_usable(now);
        let offer_pq = match self.config.pq {
            PqMode::Off => false,
            PqMode::Required => true,
            PqMode::Auto if p.handshake.pq_seen => true,
            PqMode::Auto => match previous {
                Some((offered, true)) => !offered,
                Some((offered, false)) => offered,
                None => rekey || !p.handshake.pq_legacy,
            },
        };
        if let Some(old) = p.handshake.attempt.take() {
            free_index(&mut self.by_index, old.sender, id);
        }
        let retry_at = now + session::REKEY_TIMEOUT + jitter;
        let targets = initiation_targets(p, now);
        let Some(&first) = targets.first() else {
            // Nowhere to send: keep the attempt so it times out and reports failure.
            p.handshake.attempt = Some(Attempt {
                state: None,
                sender,
                started,
                sent_at: now,
                retry_at,
                with_cookie: false,
                offered_pq: offer_pq,
                cookie_replied: false,
            });
            return;
        };
        // Timestamps must strictly increase even if the clock did not move.
        let ts = match p.handshake.last_sent_timestamp {
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
        // The peer's own cookie, or one another peer got from the same endpoint (the
        // responder's cookie is for our address, not for one of our identities).
        let cookie = p
            .handshake
            .cookie
            .as_ref()
            .filter(|c| c.is_fresh(now))
            .or_else(|| {
                self.endpoint_cookies
                    .get(&first.socket())
                    .filter(|c| c.is_fresh(now))
            });
        let with_cookie = cookie.is_some();
        // Between members of a closed group: its current epoch's key (§5.6).
        let network = local.network_keys.for_initiation(&p.address);
        let (psk, ext) = match network {
            Some((epoch, key)) => (
                handshake::network_psk(&self.config.psk, &key),
                handshake::Extensions {
                    epoch: Some(epoch),
                    ..Default::default()
                },
            ),
            None => (self.config.psk, handshake::Extensions::default()),
        };
        let pq = match (offer_pq, self.config.pq) {
            (false, _) => PqMode::Off,
            (true, PqMode::Required) => PqMode::Required,
            (true, _) => PqMode::Auto,
        };
        match handshake::initiate_pq(
            &local.identity,
            p.remote,
            &psk,
            sender,
            ts,
            cookie,
            seed,
            self.config.aes_256_gcm,
            &ext,
            pq,
            &kem_keygen_seed(&seed),
        ) {
            Ok((state, msg)) => {
                p.handshake.last_sent_timestamp = Some(ts);
                p.handshake.attempt = Some(Attempt {
                    state: Some(Box::new(state)),
                    sender,
                    started,
                    sent_at: now,
                    retry_at,
                    with_cookie,
                    offered_pq: offer_pq,
                    cookie_replied: false,
                });
                self.by_index.insert(sender, id);
                let local_id = p.local;
                // The same initiation on every path that may work: the responder takes
                // the first copy and refuses the rest as replays (same timestamp).
                for via in targets {
                    self.push_via(local_id, via, msg.clone());
                }
            }
            Err(_) => {
                p.handshake.attempt = Some(Attempt {
                    state: None,
                    sender,
                    started,
                    sent_at: now,
                    retry_at,
                    with_cookie,
                    offered_pq: offer_pq,
                    cookie_replied: false,
                });
            }
        }
    }

    /// An initiation (§5.2): after mac1 and the load checks, accept it, install the
    /// keypair as *next* (§6.4) and answer with a response.
    pub(super) fn on_initiation(&mut self, now: Instant, via: Via, msg: &[u8]) {
        let from = via.socket();
        let Ok(packet) = InitiationPacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        // A source that used up its cookie replies in this window, sending without a
        // cookie (mac2 all zero), would only be dropped after the MAC work: drop it
        // before, still counted as load (§5.5). What a one-address flood costs.
        if packet.mac2() == [0; crate::wire::MAC_LEN] && self.load.replies_exhausted(now, from.ip())
        {
            self.load.record(now, self.config.load_threshold);
            self.stats.rate_limited += 1;
            return;
        }
        let Some(li) = self
            .locals
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.checker.check_mac1(msg)))
        else {
            self.stats.bad_mac1 += 1;
            return;
        };
        let local_id = LocalId(li as u16);
        if !self.admit_initiation(now, from, li, &packet, msg) {
            return;
        }
        self.stats.handshakes_processed += 1;
        let seed = self.rng.bytes();
        let Some(local) = self.locals.get(li).and_then(Option::as_ref) else {
            return;
        };
        let mut accept =
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
        // The allow list (§11.1): before the responder's DH work and any peer state.
        if let Some(l) = self.local_mut(local_id) {
            if !l.policy.admits(&address) {
                l.policy_counts.refused += 1;
                self.stats.policy_refused += 1;
                return;
            }
            // The closed groups' epoch (§11.3): still before any peer state.
            match l
                .network_keys
                .for_responder(now, &address, accept.extensions().epoch)
            {
                Ok(None) => {}
                Ok(Some(key)) => {
                    let psk = handshake::network_psk(&self.config.psk, &key);
                    if accept.use_psk(&psk).is_err() {
                        self.stats.handshake_failures += 1;
                        return;
                    }
                }
                Err(_) => {
                    self.stats.epoch_refused += 1;
                    return;
                }
            }
        }
        // `pq = required` refuses a classical initiation, before any peer state.
        if self.config.pq == PqMode::Required && !accept.offered_pq() {
            self.stats.pq_refused += 1;
            return;
        }
        let existing = self.by_ip.get(&(local_id, address.ipv6())).copied();
        if let Some(id) = existing {
            let last = self
                .peers
                .get(id)
                .and_then(|p| p.handshake.last_received_timestamp);
            if last.is_some_and(|t| accept.timestamp() <= t) {
                self.stats.replayed_initiations += 1;
                return;
            }
        }
        // The ML-KEM work comes after every check (mac1, mac2 under load, identity,
        // policy, epoch, timestamp) and before any peer state: a bad key leaves none.
        // `off` answers an offer classically, as an old node would.
        let hybrid = accept.offered_pq() && self.config.pq != PqMode::Off;
        if hybrid {
            self.stats.kem_encapsulations += 1;
            if accept.encapsulate(&kem_encaps_seed(&seed)).is_err() {
                self.stats.handshake_failures += 1;
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
                let paths = match via {
                    Via::Direct(from) => NewPaths {
                        endpoint: Some(from),
                        ..Default::default()
                    },
                    Via::Relay { relay, .. } => NewPaths {
                        relay: Some(relay),
                        ..Default::default()
                    },
                };
                match self.add_peer(now, local_id, remote, false, Origin::Inbound, paths) {
                    Ok(id) => id,
                    Err(_) => return,
                }
            }
        };
        let index = self.new_index();
        let timestamp = accept.timestamp();
        let Some(local) = self.locals.get(li).and_then(Option::as_ref) else {
            return;
        };
        let Ok((est, response)) =
            accept.accept_choosing(&local.identity, index, self.config.aes_256_gcm)
        else {
            self.stats.handshake_failures += 1;
            return;
        };
        let unix = self.unix(now);
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let was_up = p.keys.current_usable(now);
        p.handshake.last_received_timestamp = Some(timestamp);
        if hybrid {
            p.handshake.pq_seen = true;
            p.handshake.pq_legacy = false;
        }
        let kp = Box::new(Keypair::new(&est, now));
        // Responder: the new keypair waits in `next` until the initiator uses it.
        if let Some(old) = p.keys.next.replace(kp) {
            free_index(&mut self.by_index, old.local_index, id);
        }
        if let Some(old) = p.keys.previous.take() {
            free_index(&mut self.by_index, old.local_index, id);
        }
        p.take_path(via, now);
        p.handshake.completed = Some((now, unix));
        p.timers.last_active = now;
        self.by_index.insert(index, id);
        self.push_via(local_id, via, response);
        if !was_up {
            self.events.push_back(Event::PeerUp {
                local: local_id,
                address,
                endpoint: from,
            });
        }
    }

    /// A response to our initiation (§5.3): the new keypair becomes *current* at once
    /// (§6.4), and what was queued (or a confirming keepalive) goes out on it.
    pub(super) fn on_response(&mut self, now: Instant, via: Via, msg: &[u8]) {
        let from = via.socket();
        let unix = self.unix(now);
        let Ok(packet) = ResponsePacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(&id) = self.by_index.get(&packet.receiver()) else {
            self.stats.unknown_index += 1;
            return;
        };
        let Some(local) = self
            .peers
            .get(id)
            .and_then(|p| self.locals.get(usize::from(p.local.0)))
            .and_then(Option::as_ref)
        else {
            return;
        };
        if !handshake::check_mac1(msg, &local.identity.noise().public_key()) {
            self.stats.bad_mac1 += 1;
            return;
        }
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let Some(attempt) = p
            .handshake
            .attempt
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
        let offered_pq = attempt.offered_pq;
        if packet.hybrid() && state.offered_pq() {
            self.stats.kem_decapsulations += 1;
        }
        let est = match state.handle_response(&packet) {
            Ok(est) => est,
            Err(handshake::Error::PqRequired) => {
                self.stats.pq_refused += 1;
                return;
            }
            Err(_) => {
                self.stats.handshake_failures += 1;
                return;
            }
        };
        if est.pq.is_some() {
            p.handshake.pq_seen = true;
            p.handshake.pq_legacy = false;
        } else if !offered_pq && self.config.pq == PqMode::Auto && !p.handshake.pq_seen {
            // Our classical fallback worked where the hybrid offer went unanswered.
            p.handshake.pq_legacy = true;
        }
        let was_up = p.keys.current_usable(now);
        p.handshake.attempt = None;
        let kp = Keypair::new(&est, now);
        // Initiator: use the new keypair at once; keep a responder-side `next` (from a
        // crossing handshake) as `previous` so its traffic still decrypts.
        let mut retired = Vec::new();
        if let Some(next) = p.keys.next.take() {
            if let Some(old) = p.keys.previous.replace(next) {
                retired.push(old.local_index);
            }
            if let Some(old) = p.keys.current.take() {
                retired.push(old.local_index);
            }
        } else if let Some(cur) = p.keys.current.take() {
            if let Some(old) = p.keys.previous.replace(cur) {
                retired.push(old.local_index);
            }
        }
        p.keys.current = Some(Box::new(kp));
        p.handshake.rtt = Some(rtt);
        p.handshake.completed = Some((now, unix));
        p.timers.last_active = now;
        p.timers.reply_due = None;
        let roamed = match via {
            Via::Direct(from) => p.endpoint.filter(|e| *e != from),
            Via::Relay { .. } => None,
        };
        p.take_path(via, now);
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
        self.session_up(now, id, via);
    }

    /// A cookie reply to our initiation (§5.4): kept for the next initiation's mac2.
    pub(super) fn on_cookie_reply(&mut self, now: Instant, msg: &[u8]) {
        let Ok(packet) = CookieReplyPacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let reply = CookieReplyRepr::parse(&packet);
        let Some(&id) = self.by_index.get(&reply.receiver) else {
            self.stats.unknown_index += 1;
            return;
        };
        let Some(state) = self
            .peers
            .get(id)
            .and_then(|p| p.handshake.attempt.as_ref())
            .filter(|a| a.sender == reply.receiver)
            .and_then(|a| a.state.as_ref())
        else {
            return;
        };
        // Keep the cookie for the next initiation's mac2 (§5.4), also for other peers
        // at the same endpoint. An initiation that went out without a cookie is sent
        // again at once with it; one that had a cookie waits for its retry timer. So a
        // reply, which anyone who saw our initiation could forge, causes at most one
        // initiation per attempt. The attempt stays, so a response still counts.
        match state.open_cookie(&reply, now) {
            Ok(cookie) => {
                if let Some(p) = self.peers.get_mut(id) {
                    if let Some(endpoint) = p.endpoint {
                        remember_cookie(
                            &mut self.endpoint_cookies,
                            endpoint,
                            cookie.clone(),
                            Cookie::received,
                            now,
                        );
                    }
                    p.handshake.cookie = Some(cookie);
                    if let Some(a) = p.handshake.attempt.as_mut() {
                        a.cookie_replied = true;
                    }
                    if let Some(a) = p.handshake.attempt.as_mut().filter(|a| !a.with_cookie) {
                        a.retry_at = now;
                        // The retry is the cookie's; this initiation does not earn another.
                        a.with_cookie = true;
                    }
                }
            }
            Err(_) => self.stats.handshake_failures += 1,
        }
    }
}

/// Where an initiation to `p` goes: its route, and while no session is up (a first
/// contact, or recovery) every other path that may work: the endpoint, the direct
/// candidates and the relay (docs/protocol.md §10.3). A hidden identity's peers get
/// only the relay.
fn initiation_targets(p: &Peer, now: Instant) -> Vec<Via> {
    let mut out: Vec<Via> = p.route().into_iter().collect();
    if p.keys.current_usable(now) || p.paths.relay_only {
        return out;
    }
    let direct = p
        .endpoint
        .into_iter()
        .chain(p.paths.candidates.iter().copied())
        .map(Via::Direct);
    let relay = p.paths.relay.map(|relay| Via::Relay {
        relay,
        peer: p.address,
    });
    for via in direct.chain(relay) {
        if !out.contains(&via) && out.len() < 1 + crate::signal::MAX_CANDIDATES {
            out.push(via);
        }
    }
    out
}

/// The ML-KEM-512 key generation seed of an initiation, derived from its handshake
/// seed (a separate draw would shift every later random choice of the node).
fn kem_keygen_seed(seed: &[u8; 32]) -> Zeroizing<[u8; 64]> {
    let mut out = Zeroizing::new([0u8; 64]);
    let mut h = blake3::Hasher::new_derive_key("metanet v1 ml-kem keygen seed");
    h.update(seed);
    h.finalize_xof().fill(&mut out[..]);
    out
}

/// The ML-KEM-512 encapsulation randomness of a response, from its handshake seed.
fn kem_encaps_seed(seed: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key("metanet v1 ml-kem encaps seed", seed))
}

/// Most endpoints whose cookie (or record cookie) is kept for every peer there.
pub(super) const MAX_ENDPOINT_COOKIES: usize = 1024;

/// Keep `cookie`, received at `received(&cookie)`, for `endpoint`: when the map is full,
/// cookies older than `COOKIE_SECRET_LIFETIME` go first, then the oldest one.
pub(super) fn remember_cookie<C>(
    cookies: &mut BTreeMap<SocketAddr, C>,
    endpoint: SocketAddr,
    cookie: C,
    received: impl Fn(&C) -> Instant,
    now: Instant,
) {
    if cookies.len() >= MAX_ENDPOINT_COOKIES && !cookies.contains_key(&endpoint) {
        cookies.retain(|_, c| now.saturating_duration_since(received(c)) < COOKIE_SECRET_LIFETIME);
        if cookies.len() >= MAX_ENDPOINT_COOKIES {
            if let Some(oldest) = cookies
                .iter()
                .min_by_key(|(_, c)| received(c))
                .map(|(e, _)| *e)
            {
                cookies.remove(&oldest);
            }
        }
    }
    cookies.insert(endpoint, cookie);
}
