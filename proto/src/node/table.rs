//! The peer table: peers by [`PeerId`] (slot), which of them changed since their
//! deadline was last queued, and the node's operations on the table as a whole:
//! adding a peer (evicting an idle stranger when full, §7.6), changing its keys,
//! erasing its sessions and dropping it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::peer::{Origin, Peer, PeerId};
use super::timers::Deadline;
use super::{CommandError, LocalId, Node};
use crate::handshake::Remote;
use crate::time::Instant;
use std::collections::BTreeMap;

/// An inbound-created peer quiet for this long may be evicted to make room for a new
/// peer when the table is full (docs/protocol.md §7.6): a peer in a live exchange is
/// heard from sooner (a keepalive answers data within `KEEPALIVE_TIMEOUT`, and a side
/// that hears nothing re-handshakes after `REKEY_TIMEOUT` more).
const EVICT_IDLE: core::time::Duration = core::time::Duration::from_secs(
    crate::session::KEEPALIVE_TIMEOUT.as_secs() + crate::session::REKEY_TIMEOUT.as_secs(),
);

/// A new peer's paths besides its endpoint (docs/protocol.md §10.3).
#[derive(Debug, Default)]
pub(super) struct NewPaths {
    /// Where it is reached directly.
    pub(super) endpoint: Option<SocketAddr>,
    /// Further direct endpoints to try.
    pub(super) candidates: Vec<SocketAddr>,
    /// The endpoint of a relay it is reached through.
    pub(super) relay: Option<SocketAddr>,
}

/// Peers by slot. Every mutable access marks the peer *dirty*: its deadline may have
/// changed, and the node re-queues it (`Node::flush_timers`) before the verb returns.
/// So no code path that changes a peer can forget its timers.
#[derive(Debug, Default)]
pub(super) struct PeerTable {
    slots: Vec<Option<Entry>>,
    /// Empty slots; a new peer takes the lowest.
    free: BTreeSet<usize>,
    /// Peers held.
    live: usize,
    /// Peers marked dirty since the last flush (each at most once while marked).
    dirty: Vec<PeerId>,
}

/// A peer and its standing in the deadline queue.
#[derive(Debug)]
struct Entry {
    peer: Peer,
    /// The deadline and generation of the peer's current entry in the deadline queue,
    /// `None` when it has none (no deadline, or the entry was just popped).
    scheduled: Option<(Instant, u64)>,
    /// Whether the peer is in `dirty`.
    dirty: bool,
}

impl PeerTable {
    /// The peer in slot `id`.
    pub(super) fn get(&self, id: PeerId) -> Option<&Peer> {
        self.entry(id).map(|e| &e.peer)
    }

    /// The peer in slot `id`, to change: marks it dirty.
    pub(super) fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        let e = self.slots.get_mut(id.slot())?.as_mut()?;
        if !e.dirty {
            e.dirty = true;
            self.dirty.push(id);
        }
        Some(&mut e.peer)
    }

    /// Put `peer` in the lowest free slot; it starts dirty.
    pub(super) fn insert(&mut self, peer: Peer) -> PeerId {
        let entry = Entry {
            peer,
            scheduled: None,
            dirty: true,
        };
        let slot = match self.free.pop_first() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(entry);
        }
        self.live += 1;
        let id = PeerId::new(slot);
        self.dirty.push(id);
        id
    }

    /// Take the peer out of slot `id`; its queue entries become stale.
    pub(super) fn remove(&mut self, id: PeerId) -> Option<Peer> {
        let e = self.slots.get_mut(id.slot())?.take()?;
        self.free.insert(id.slot());
        self.live -= 1;
        Some(e.peer)
    }

    /// Peers held, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (PeerId, &Peer)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (PeerId::new(i), &e.peer)))
    }

    /// How many peers are held.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Whether `d` is its peer's current entry in the deadline queue.
    pub(super) fn is_current(&self, d: &Deadline) -> bool {
        self.entry(d.peer)
            .is_some_and(|e| e.scheduled == Some((d.at, d.generation)))
    }

    /// The peer's current queue entry (deadline, generation), if any.
    pub(super) fn scheduled(&self, id: PeerId) -> Option<(Instant, u64)> {
        self.entry(id)?.scheduled
    }

    /// Record the peer's current queue entry.
    pub(super) fn set_scheduled(&mut self, id: PeerId, scheduled: Option<(Instant, u64)>) {
        if let Some(e) = self.slots.get_mut(id.slot()).and_then(Option::as_mut) {
            e.scheduled = scheduled;
        }
    }

    /// The peer's queue entry was popped: it has none now, and is dirty.
    pub(super) fn unschedule(&mut self, id: PeerId) {
        self.set_scheduled(id, None);
        let _ = self.get_mut(id);
    }

    /// Take one dirty peer (clearing its mark), if any is left.
    pub(super) fn pop_dirty(&mut self) -> Option<PeerId> {
        while let Some(id) = self.dirty.pop() {
            if let Some(e) = self.slots.get_mut(id.slot()).and_then(Option::as_mut) {
                if e.dirty {
                    e.dirty = false;
                    return Some(id);
                }
            }
        }
        None
    }

    /// Whether a peer changed since the last flush.
    pub(super) fn has_dirty(&self) -> bool {
        self.slots.iter().flatten().any(|e| e.dirty)
    }

    fn entry(&self, id: PeerId) -> Option<&Entry> {
        self.slots.get(id.slot())?.as_ref()
    }
}

/// Free session index `index` of peer `id`, only if it is mapped to that peer: the
/// `sender` of an attempt that sent nothing was never mapped, and the same number may
/// since have been given to another peer.
pub(super) fn free_index(by_index: &mut BTreeMap<u32, PeerId>, index: u32, id: PeerId) {
    if by_index.get(&index) == Some(&id) {
        by_index.remove(&index);
    }
}

impl Node {
    /// Add peer `remote` of `local`, or update the one there is, and start a handshake
    /// if asked to (`connect`) or if packets were waiting for its lookup.
    pub(super) fn add_peer(
        &mut self,
        now: Instant,
        local: LocalId,
        remote: Remote,
        connect: bool,
        origin: Origin,
        paths: NewPaths,
    ) -> Result<PeerId, CommandError> {
        let endpoint = paths.endpoint;
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
                if let Some(p) = self.peers.get_mut(id) {
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
                if self.peers.len() >= self.config.max_peers {
                    // Make room by forgetting the stranger quiet for longest (§7.6).
                    let victim = self
                        .peers
                        .iter()
                        .filter_map(|(id, p)| Some((p.idle_stranger_since()?, id)))
                        .filter(|(since, _)| now.saturating_duration_since(*since) >= EVICT_IDLE)
                        .min();
                    let Some((_, victim)) = victim else {
                        return Err(CommandError::TooManyPeers);
                    };
                    self.drop_peer(victim);
                }
                let id = self
                    .peers
                    .insert(Peer::new(local, remote, endpoint, origin, now));
                self.by_ip.insert((local, ipv6), id);
                id
            }
        };
        let own = if paths.candidates.is_empty() {
            Vec::new()
        } else {
            self.own_candidates(now)
        };
        let (relay_only, first_relay) = self.local(local).map_or((false, None), |l| {
            let is_relay = l.relays.iter().any(|r| r.relay.address == address);
            (
                l.hidden && !l.relays.is_empty() && !is_relay,
                l.relays.first().map(|r| r.relay.endpoint),
            )
        });
        if let Some(p) = self.peers.get_mut(id) {
            for c in paths.candidates.into_iter().filter(|c| !own.contains(c)) {
                p.add_candidate(c);
            }
            if paths.relay.is_some() {
                p.paths.relay = paths.relay;
            }
            p.paths.relay_only = relay_only;
            if relay_only && p.paths.relay.is_none() {
                p.paths.relay = first_relay;
            }
        }
        if let Some(waiting) = self.lookups.remove(&(local, ipv6)) {
            if let Some(p) = self.peers.get_mut(id) {
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

    /// The peers of local identity `local`.
    pub(super) fn peers_of(&self, local: LocalId) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.local == local)
            .map(|(id, _)| id)
            .collect()
    }

    /// Forget peer `id`: its keys, indices and history (§7.6).
    pub(super) fn drop_peer(&mut self, id: PeerId) {
        self.erase_sessions(id);
        let Some(p) = self.peers.remove(id) else {
            return;
        };
        self.by_ip.remove(&(p.local, p.ipv6));
    }

    /// Give peer `id` the keys `remote` (same address). If its Noise key changed, every
    /// keypair, handshake attempt and cookie made with the old key is erased and their
    /// indices freed: a rotated key may be a compromised one. Returns whether the key
    /// changed while a handshake was needed (an attempt ran or packets wait).
    pub(super) fn set_remote(&mut self, id: PeerId, remote: Remote) -> bool {
        if self.peers.get(id).is_none_or(|p| p.remote == remote) {
            return false;
        }
        let Some(p) = self.peers.get_mut(id) else {
            return false;
        };
        p.remote = remote;
        p.handshake.cookie = None;
        let needed = p.handshake.attempt.is_some() || !p.queue.is_empty();
        self.erase_sessions(id);
        needed
    }

    /// Erase peer `id`'s keypairs and handshake attempt and free their indices.
    pub(super) fn erase_sessions(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let attempt = p.handshake.attempt.take().map(|a| a.sender);
        let keys = p.keys.take_all();
        for index in keys.iter().flatten().map(|k| k.local_index).chain(attempt) {
            free_index(&mut self.by_index, index, id);
        }
    }
}
