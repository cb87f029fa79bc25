//! Packets waiting for a registry lookup (docs/protocol.md §7.1 step 5): queued per
//! (identity, destination), bounded, announced to the driver with
//! [`Event::LookupNeeded`], moved to the peer when the driver adds it, and dropped when
//! the lookup fails or after [`LOOKUP_TIMEOUT`].

use std::collections::VecDeque;
use std::net::Ipv6Addr;

use super::{Event, LocalId, Node, LOOKUP_TIMEOUT};
use crate::time::Instant;

/// Packets for one destination with no known peer.
#[derive(Debug)]
pub(super) struct PendingLookup {
    /// The packets, oldest first, at most `queue_per_peer`.
    pub(super) queue: VecDeque<Vec<u8>>,
    /// When the lookup was asked for.
    pub(super) since: Instant,
}

impl PendingLookup {
    /// When its packets are dropped unless the lookup is answered.
    pub(super) fn deadline(&self) -> Instant {
        self.since + LOOKUP_TIMEOUT
    }
}

impl Node {
    /// Queue a TUN packet from `local` to `dst`, a destination with no peer; the first
    /// packet for a destination asks the driver to resolve it.
    pub(super) fn queue_for_lookup(
        &mut self,
        now: Instant,
        local: LocalId,
        dst: Ipv6Addr,
        packet: &[u8],
    ) {
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

    /// Drop the lookup for `(local, ipv6)` and what waits for it.
    pub(super) fn drop_lookup(&mut self, local: LocalId, ipv6: Ipv6Addr) {
        if let Some(l) = self.lookups.remove(&(local, ipv6)) {
            self.stats.queue_dropped += l.queue.len() as u64;
        }
    }

    /// Drop the lookups unanswered for `LOOKUP_TIMEOUT`.
    pub(super) fn expire_lookups(&mut self, now: Instant) {
        let expired: Vec<(LocalId, Ipv6Addr)> = self
            .lookups
            .iter()
            .filter(|(_, l)| now >= l.deadline())
            .map(|(k, _)| *k)
            .collect();
        for (local, ipv6) in expired {
            self.drop_lookup(local, ipv6);
        }
    }
}
