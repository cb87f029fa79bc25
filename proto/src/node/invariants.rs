//! The node's consistency check, for tests and fuzzing, and the brute-force deadline
//! scan it compares the deadline queue against.

use super::timers::DeadlineQueue;
use super::Node;
use crate::time::Instant;

impl Node {
    /// Check the node's internal consistency, for tests and fuzzing: every session
    /// index names a live peer that holds a keypair or a handshake attempt with it and
    /// vice versa, the overlay-address map and the peer table agree, every peer's entry
    /// in the deadline queue is its next deadline and the queue's head is the earliest
    /// of them, and every bound holds. Returns the first rule that is broken.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        for (&index, &id) in &self.by_index {
            let p = self
                .peers
                .get(id)
                .ok_or("a session index names a removed peer")?;
            let held = p.keys.iter().any(|k| k.local_index == index)
                || p.handshake
                    .attempt
                    .as_ref()
                    .is_some_and(|a| a.sender == index);
            if !held {
                return Err("a session index names a peer that no longer uses it");
            }
        }
        let mut live = 0;
        let mut scheduled = 0;
        for (id, p) in self.peers.iter() {
            live += 1;
            if self.local(p.local).is_none() {
                return Err("a peer belongs to a removed identity");
            }
            if self.by_ip.get(&(p.local, p.ipv6)) != Some(&id) {
                return Err("a peer is missing from the overlay-address map");
            }
            let attempt = p
                .handshake
                .attempt
                .as_ref()
                .filter(|a| a.state.is_some())
                .map(|a| a.sender);
            for index in p.keys.iter().map(|k| k.local_index).chain(attempt) {
                if self.by_index.get(&index) != Some(&id) {
                    return Err("a keypair or attempt index is not mapped to its peer");
                }
            }
            if p.queue.len() > self.config.queue_per_peer {
                return Err("a peer queue is over its bound");
            }
            let entry = self.peers.scheduled(id);
            match (
                entry.map(|(t, _)| t),
                p.next_deadline(self.config.persistent_keepalive),
            ) {
                (None, Some(_)) => return Err("a peer with a deadline is not queued"),
                (Some(held), Some(next)) if held > next => {
                    return Err("a peer's queued deadline is after its next deadline")
                }
                _ => {}
            }
            scheduled += usize::from(entry.is_some());
        }
        if self.peers.len() != live {
            return Err("the peer table miscounts its peers");
        }
        if self.peers.has_dirty() {
            return Err("a changed peer was not re-queued");
        }
        let current = self
            .deadlines
            .iter()
            .filter(|d| self.peers.is_current(d))
            .count();
        if current != scheduled {
            return Err("a peer's queued deadline is missing from the deadline queue");
        }
        if self
            .deadlines
            .peek()
            .is_some_and(|d| !self.peers.is_current(d))
        {
            return Err("the head of the deadline queue is stale");
        }
        if let Some(next) = self.next_peer_deadline_by_scan() {
            if self.deadlines.peek().is_none_or(|d| d.at > next) {
                return Err("the head of the deadline queue is after the earliest peer deadline");
            }
        }
        if self.deadlines.len() > DeadlineQueue::bound(live) {
            return Err("the deadline queue holds too many stale entries");
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

    /// The earliest deadline of any peer, found by scanning them all: what the head
    /// of the deadline queue must equal. Linear in the number of peers; for tests.
    #[doc(hidden)]
    pub fn next_peer_deadline_by_scan(&self) -> Option<Instant> {
        let persistent = self.config.persistent_keepalive;
        self.peers
            .iter()
            .filter_map(|(_, p)| p.next_deadline(persistent))
            .min()
    }
}
