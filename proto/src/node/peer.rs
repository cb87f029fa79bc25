//! One peer of a local identity: the [`PeerId`] the node knows it by, and its state,
//! grouped by what it is for: its keypairs ([`Keys`]), its handshakes
//! ([`HandshakeState`]), its protocol timers ([`Timers`]) and its counters
//! ([`Counters`]).

use core::time::Duration;
use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};

use super::{LocalId, Stats};
use crate::address::Address;
use crate::handshake::{Cookie, ExpectResponse, Remote};
use crate::session::{self, Keypair};
use crate::time::{Instant, UnixTime};

/// A peer's slot in the node's peer table. It is stable while the peer lives; a later
/// peer may reuse the slot, so whatever keeps a `PeerId` beyond one call checks that it
/// still names the same peer (the deadline queue does, by generation). Ordered by slot,
/// which breaks deadline ties deterministically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct PeerId(usize);

impl PeerId {
    /// The id of table slot `slot`.
    pub(super) const fn new(slot: usize) -> Self {
        PeerId(slot)
    }

    /// The table slot.
    pub(super) const fn slot(self) -> usize {
        self.0
    }
}

/// How a peer came to be in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Added by the driver: [`super::Command::AddPeer`] (configuration, a registry
    /// lookup) or a completed [`super::Command::Connect`]. Kept until
    /// [`super::Command::RemovePeer`].
    Driver,
    /// Created by an initiation we accepted from a peer nobody asked for.
    Inbound,
}

/// Everything the node holds about one peer.
#[derive(Debug)]
pub(super) struct Peer {
    /// The local identity this peer belongs to.
    pub(super) local: LocalId,
    /// The peer's verified keys.
    pub(super) remote: Remote,
    /// Its address, derived from `remote`.
    pub(super) address: Address,
    /// Its overlay IPv6, derived from `address`.
    pub(super) ipv6: Ipv6Addr,
    /// Where it is reached (§7.3).
    pub(super) endpoint: Option<SocketAddr>,
    /// Who created the peer: the driver's peers stay until removed, inbound ones are
    /// forgotten when idle (§7.6).
    pub(super) origin: Origin,
    /// Its keypairs (§6.4).
    pub(super) keys: Keys,
    /// Our handshake with it and what earlier ones left.
    pub(super) handshake: HandshakeState,
    /// Packets waiting for a session (§7.1), at most `queue_per_peer`.
    pub(super) queue: VecDeque<Vec<u8>>,
    /// Its keepalive, reply and activity timers.
    pub(super) timers: Timers,
    /// Its counters, for [`super::PeerStatus`].
    pub(super) counters: Counters,
    /// Its paths: the relay it is reached through, direct candidates, hole punching.
    pub(super) paths: Paths,
}

/// How a peer is reached besides [`Peer::endpoint`] (docs/protocol.md §10.3): the relay,
/// which of the two paths is in use, the direct candidates and the punching under way.
/// Roaming is per path: a relayed packet moves only `relay`, a direct one only the
/// endpoint.
#[derive(Debug, Default)]
pub(super) struct Paths {
    /// The endpoint of the relay the peer is reached through, if any (a relay this
    /// peer's local identity holds a reservation with).
    pub(super) relay: Option<SocketAddr>,
    /// Whether packets go through the relay now rather than to the endpoint.
    pub(super) relayed: bool,
    /// Never use a direct path (the local identity is hidden behind its relays).
    pub(super) relay_only: bool,
    /// Direct candidates: the record's endpoints, signalled and peer-reflexive ones.
    pub(super) candidates: Vec<SocketAddr>,
    /// When an authenticated packet last came directly (not through a relay).
    pub(super) direct_rx: Option<Instant>,
    /// A check that the direct path still answers, while a relay is there to fall
    /// back to.
    pub(super) check: Option<DirectCheck>,
    /// Hole punching under way.
    pub(super) punch: Option<Box<Punch>>,
    /// While relayed: when the next punch starts.
    pub(super) punch_at: Option<Instant>,
    /// Punches that failed in a row (the back-off exponent).
    pub(super) punch_failures: u8,
}

/// Whether a direct path still answers (§10.5): armed by data sent on it, disarmed by
/// any packet received on it.
#[derive(Debug, Clone, Copy)]
pub(super) struct DirectCheck {
    /// When it fires.
    pub(super) due: Instant,
    /// When it was armed, or when its probe went out.
    pub(super) since: Instant,
    /// Whether a probe went out (the second firing falls back to the relay).
    pub(super) probed: bool,
    /// That probe's nonce.
    pub(super) nonce: u64,
}

/// One hole punch (§10.4): candidates exchanged over the relayed session, then probes
/// from both sides at once.
#[derive(Debug)]
pub(super) struct Punch {
    /// Where it stands.
    pub(super) stage: PunchStage,
    /// The nonce every probe of this punch carries.
    pub(super) nonce: u64,
    /// When our candidates went out (the relay round trip is measured from it).
    pub(super) started: Instant,
    /// When the next step is due (next probe round, or giving up).
    pub(super) next_at: Instant,
    /// Probe rounds left.
    pub(super) rounds_left: u8,
}

/// The stages of a punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PunchStage {
    /// We sent our candidates and wait for the peer's.
    AwaitCandidates,
    /// We answered the peer's candidates and wait for its sync.
    AwaitSync,
    /// Probing every candidate each round.
    Probing,
}

/// A peer's keypairs by role (§6.4): it sends on `current` and receives on any.
#[derive(Debug, Default)]
pub(super) struct Keys {
    /// The keypair current was before; still receives. (Keypairs are boxed: an idle
    /// peer holds one, and a peer without any costs a pointer for each.)
    pub(super) previous: Option<Box<Keypair>>,
    /// The keypair we send on.
    pub(super) current: Option<Box<Keypair>>,
    /// As responder, the new keypair until the initiator first uses it.
    pub(super) next: Option<Box<Keypair>>,
}

/// Which of a peer's keypairs a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// [`Keys::previous`].
    Previous,
    /// [`Keys::current`].
    Current,
    /// [`Keys::next`].
    Next,
}

/// A peer's handshake under way and the record of earlier ones.
#[derive(Debug, Default)]
pub(super) struct HandshakeState {
    /// Our initiation waiting for a response, if any.
    pub(super) attempt: Option<Attempt>,
    /// The cookie the peer last sent us, for the next initiation's mac2 (§5.4).
    pub(super) cookie: Option<Cookie>,
    /// Timestamp of the last initiation from the peer we accepted (§5.2 step 5).
    pub(super) last_received_timestamp: Option<UnixTime>,
    /// Timestamp of the last initiation we sent; the next one must be later.
    pub(super) last_sent_timestamp: Option<UnixTime>,
    /// When the last handshake completed, on both clocks.
    pub(super) completed: Option<(Instant, UnixTime)>,
    /// Round-trip time of the last handshake we initiated.
    pub(super) rtt: Option<Duration>,
    /// The peer speaks the hybrid handshake (it completed one with us, or offered
    /// one): in `pq = auto` our initiations to it never fall back to classical (§5.7).
    pub(super) pq_seen: bool,
    /// A classical initiation of ours completed after a hybrid one went unanswered (an
    /// old peer that drops extended initiations): the next attempts without a usable
    /// session start classical (rekeys still offer hybrid first).
    pub(super) pq_legacy: bool,
}

/// One initiation of ours and its retry timer (§7.5).
#[derive(Debug)]
pub(super) struct Attempt {
    /// `None` once a bad response consumed the Noise state; the retry timer still runs.
    pub(super) state: Option<Box<ExpectResponse>>,
    /// Our session index in the initiation.
    pub(super) sender: u32,
    /// When the attempt (the first of its initiations) started.
    pub(super) started: Instant,
    /// When this initiation was sent.
    pub(super) sent_at: Instant,
    /// When it is retransmitted, or the attempt abandoned.
    pub(super) retry_at: Instant,
    /// Whether this initiation carried a cookie's mac2: only a cookie-less one is
    /// retried at once when a cookie reply answers it (§5.4).
    pub(super) with_cookie: bool,
    /// Whether this initiation offered a hybrid handshake (§5.7).
    pub(super) offered_pq: bool,
    /// Whether a cookie reply answered it (then it was not dropped: no fallback).
    pub(super) cookie_replied: bool,
}

/// A peer's keepalive, reply and activity timers (§7.4, §7.5, §7.6). The handshake
/// retry timer is the attempt's; keypair expiry follows from the keypairs.
#[derive(Debug)]
pub(super) struct Timers {
    /// When we last sent it a data message or keepalive.
    pub(super) last_sent: Option<Instant>,
    /// When the peer was created, last completed a handshake, or last sent us an
    /// authenticated packet.
    pub(super) last_active: Instant,
    /// Send a keepalive at this time unless something else is sent first.
    pub(super) keepalive_at: Option<Instant>,
    /// Start a handshake at this time unless something is received first.
    pub(super) reply_due: Option<Instant>,
}

/// A peer's traffic counters (monotonic).
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Plaintext bytes received.
    pub(super) rx_bytes: u64,
    /// Plaintext bytes sent.
    pub(super) tx_bytes: u64,
    /// Data packets received.
    pub(super) rx_packets: u64,
    /// Data packets sent.
    pub(super) tx_packets: u64,
    /// Packets to this peer that were dropped.
    pub(super) dropped: u64,
}

impl Keys {
    /// The keypairs held, oldest role first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Keypair> {
        [&self.previous, &self.current, &self.next]
            .into_iter()
            .flatten()
            .map(|k| &**k)
    }

    /// Whether no keypair is held.
    pub(super) fn is_empty(&self) -> bool {
        self.previous.is_none() && self.current.is_none() && self.next.is_none()
    }

    /// Whether the current keypair exists and may send at `now`.
    pub(super) fn current_usable(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| k.is_usable(now))
    }

    /// Remove every keypair.
    pub(super) fn take_all(&mut self) -> [Option<Box<Keypair>>; 3] {
        [self.previous.take(), self.current.take(), self.next.take()]
    }

    /// The keypair whose local index is `index`, and its role.
    pub(super) fn by_index_mut(&mut self, index: u32) -> Option<(Role, &mut Keypair)> {
        if let Some(k) = self.current.as_mut().filter(|k| k.local_index == index) {
            Some((Role::Current, &mut **k))
        } else if let Some(k) = self.next.as_mut().filter(|k| k.local_index == index) {
            Some((Role::Next, &mut **k))
        } else {
            self.previous
                .as_mut()
                .filter(|k| k.local_index == index)
                .map(|k| (Role::Previous, &mut **k))
        }
    }
}

impl Peer {
    /// A peer with no keys and no history, created at `now`.
    pub(super) fn new(
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
            origin,
            keys: Keys::default(),
            handshake: HandshakeState::default(),
            queue: VecDeque::new(),
            timers: Timers {
                last_sent: None,
                last_active: now,
                keepalive_at: None,
                reply_due: None,
            },
            counters: Counters::default(),
            paths: Paths::default(),
        }
    }

    /// Queue `packet` for a session; when `cap` packets wait, the oldest is dropped.
    pub(super) fn enqueue(&mut self, packet: Vec<u8>, cap: usize, stats: &mut Stats) {
        if self.queue.len() >= cap {
            self.queue.pop_front();
            stats.queue_dropped += 1;
            self.counters.dropped += 1;
        }
        self.queue.push_back(packet);
    }

    /// A data message of `len` plaintext bytes (a keepalive when not `data`) went out.
    pub(super) fn note_sent(&mut self, now: Instant, len: usize, data: bool) {
        self.timers.last_sent = Some(now);
        self.timers.keepalive_at = None;
        if data {
            self.counters.tx_bytes += len as u64;
            self.counters.tx_packets += 1;
            if self.timers.reply_due.is_none() {
                self.timers.reply_due =
                    Some(now + session::KEEPALIVE_TIMEOUT + session::REKEY_TIMEOUT);
            }
        }
    }

    /// The earliest instant at which `Node::peer_timers` has something to do for this
    /// peer; it must cover every branch there, or the driver sleeps through it. A pure
    /// function of the peer's state: the deadline queue holds exactly this value.
    pub(super) fn next_deadline(&self, persistent_keepalive: Option<Duration>) -> Option<Instant> {
        let expiries = self.keys.iter().map(Keypair::usable_until);
        [
            self.handshake.attempt.as_ref().map(|a| a.retry_at),
            self.timers.keepalive_at,
            self.timers.reply_due,
            self.persistent_keepalive_at(persistent_keepalive),
            self.forget_at(),
            self.paths.punch.as_ref().map(|p| p.next_at),
            self.paths.punch_at.filter(|_| self.paths.relayed),
            self.paths.check.map(|c| c.due),
        ]
        .into_iter()
        .flatten()
        .chain(expiries)
        .min()
    }

    /// For a peer created inbound with nothing under way (no handshake attempt, nothing
    /// queued), the instant it was last active: it may be evicted or forgotten (§7.6).
    pub(super) fn idle_stranger_since(&self) -> Option<Instant> {
        let idle = self.origin == Origin::Inbound
            && self.handshake.attempt.is_none()
            && self.queue.is_empty();
        idle.then_some(self.timers.last_active)
    }

    /// When an idle stranger whose keys have all expired is forgotten (§7.6), as
    /// WireGuard erases a session `REJECT_AFTER_TIME` × 3 after it was made.
    pub(super) fn forget_at(&self) -> Option<Instant> {
        let since = self.idle_stranger_since()?;
        self.keys
            .is_empty()
            .then(|| since + session::SESSION_EXPIRY)
    }

    /// When the persistent keepalive (docs/protocol.md §7.4) is due: `interval` after
    /// the last thing sent, or at once if nothing was, while a current keypair and an
    /// endpoint exist to send it with.
    pub(super) fn persistent_keepalive_at(&self, interval: Option<Duration>) -> Option<Instant> {
        let interval = interval?;
        if self.endpoint.is_none() && self.paths.relay.is_none() {
            return None;
        }
        let current = self.keys.current.as_ref()?;
        Some(
            self.timers
                .last_sent
                .map_or(current.created, |t| t + interval),
        )
    }
}

#[cfg(test)]
mod tests {
    /// An idle peer's memory is what scales with thousands of sessions: the table slot
    /// stays small, and keypairs (about 1.4 KiB each) live on the heap, one for an idle
    /// session.
    #[test]
    fn a_peer_slot_stays_small() {
        let peer = core::mem::size_of::<super::Peer>();
        assert!(peer <= 1024, "Peer is {peer} bytes");
        let keypair = core::mem::size_of::<crate::session::Keypair>();
        assert!(peer + keypair <= 3 * 1024, "{peer} + {keypair}");
    }
}
