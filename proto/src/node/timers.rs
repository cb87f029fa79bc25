//! The deadline queue: every peer's earliest timer deadline in one binary min-heap, so
//! that the node finds the next deadline with a peek and the due peers in
//! O(k log n), instead of scanning all peers.
//!
//! Entries are `(deadline, peer, generation)`. A peer's deadline is never changed in
//! place: a new entry is pushed under a fresh generation, and the owner (the peer
//! table) remembers which generation is current. Entries whose generation is no longer
//! current, or whose peer is gone, are stale; they are skipped when they reach the top
//! (lazy invalidation), and the whole heap is compacted when they outnumber the live
//! peers by more than [`COMPACT_FACTOR`], so it never holds more than a small multiple
//! of the peer count. Ties are broken by peer slot, then generation: the order is a
//! function of the inputs alone.

use core::cmp::Reverse;
use std::collections::BinaryHeap;

use super::peer::PeerId;
use crate::time::Instant;

/// The heap is compacted when it holds more than this many entries per live peer
/// (plus [`COMPACT_SLACK`]).
pub(super) const COMPACT_FACTOR: usize = 2;
/// Entries allowed beyond `COMPACT_FACTOR` × live peers, so that a node with few peers
/// does not compact on every change.
pub(super) const COMPACT_SLACK: usize = 64;

/// One entry: peer `peer` has something to do at `at`, if `generation` is still its
/// current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) peer: PeerId,
    pub(super) generation: u64,
}

/// A min-heap of [`Deadline`]s with lazy invalidation.
#[derive(Debug)]
pub(super) struct DeadlineQueue {
    heap: BinaryHeap<Reverse<Deadline>>,
    /// The generation the next entry gets; never 0, which means "not scheduled".
    next_generation: u64,
}

impl Default for DeadlineQueue {
    fn default() -> Self {
        DeadlineQueue {
            heap: BinaryHeap::new(),
            next_generation: 1,
        }
    }
}

impl DeadlineQueue {
    /// Push a deadline for `peer` at `at`; returns its generation, which the caller
    /// records as the peer's current one (any earlier entry of the peer is stale from
    /// then on).
    pub(super) fn schedule(&mut self, peer: PeerId, at: Instant) -> u64 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.heap.push(Reverse(Deadline {
            at,
            peer,
            generation,
        }));
        generation
    }

    /// The earliest entry, which may be stale: the node keeps the top current by
    /// calling [`DeadlineQueue::skip_stale`] after each change.
    pub(super) fn peek(&self) -> Option<&Deadline> {
        self.heap.peek().map(|Reverse(d)| d)
    }

    /// Drop stale entries from the top, so that [`DeadlineQueue::peek`] is current.
    pub(super) fn skip_stale(&mut self, is_current: impl Fn(&Deadline) -> bool) {
        while let Some(Reverse(d)) = self.heap.peek() {
            if is_current(d) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Remove and return the earliest current entry due at `now` (at or before it),
    /// dropping the stale entries on the way.
    pub(super) fn pop_due(
        &mut self,
        now: Instant,
        is_current: impl Fn(&Deadline) -> bool,
    ) -> Option<Deadline> {
        self.skip_stale(&is_current);
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }

    /// Rebuild the heap without its stale entries if it holds more than
    /// `COMPACT_FACTOR` × `live` + `COMPACT_SLACK` entries. Linear, and run at most once
    /// per `live` + `COMPACT_SLACK` pushes, so amortized constant per push.
    pub(super) fn compact_if_bloated(
        &mut self,
        live: usize,
        is_current: impl Fn(&Deadline) -> bool,
    ) {
        if self.heap.len() > Self::bound(live) {
            self.heap.retain(|Reverse(d)| is_current(d));
        }
    }

    /// Most entries the heap holds with `live` peers, between changes.
    pub(super) fn bound(live: usize) -> usize {
        COMPACT_FACTOR
            .saturating_mul(live)
            .saturating_add(COMPACT_SLACK)
    }

    /// Entries held, stale ones included.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Every entry, in no particular order (for the invariant check).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Deadline> {
        self.heap.iter().map(|Reverse(d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    /// A queue with its owner's record of the current generation per peer, as the
    /// peer table keeps it.
    #[derive(Default)]
    struct Owner {
        queue: DeadlineQueue,
        current: BTreeMap<PeerId, u64>,
    }

    impl Owner {
        fn set(&mut self, peer: usize, ms: u64) {
            let id = PeerId::new(peer);
            let generation = self.queue.schedule(id, at(ms));
            self.current.insert(id, generation);
        }

        fn clear(&mut self, peer: usize) {
            self.current.remove(&PeerId::new(peer));
        }

        fn pop_due(&mut self, ms: u64) -> Option<(usize, u64)> {
            let current = &self.current;
            let d = self
                .queue
                .pop_due(at(ms), |d| current.get(&d.peer) == Some(&d.generation))?;
            self.current.remove(&d.peer);
            Some((d.peer.slot(), d.at.as_nanos() / 1_000_000))
        }

        fn drain_due(&mut self, ms: u64) -> Vec<(usize, u64)> {
            std::iter::from_fn(|| self.pop_due(ms)).collect()
        }
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut o = Owner::default();
        o.set(0, 30);
        o.set(1, 10);
        o.set(2, 20);
        assert_eq!(o.pop_due(5), None);
        assert_eq!(o.queue.peek().map(|d| d.at), Some(at(10)));
        assert_eq!(o.drain_due(25), vec![(1, 10), (2, 20)]);
        assert_eq!(o.drain_due(100), vec![(0, 30)]);
        assert_eq!(o.pop_due(u64::MAX / 2_000_000), None);
    }

    #[test]
    fn ties_are_broken_by_peer_slot() {
        let mut o = Owner::default();
        for peer in [7, 3, 5, 0, 6] {
            o.set(peer, 10);
        }
        let order: Vec<usize> = o.drain_due(10).into_iter().map(|(p, _)| p).collect();
        assert_eq!(order, vec![0, 3, 5, 6, 7]);
    }

    #[test]
    fn a_rescheduled_or_removed_peer_leaves_only_stale_entries() {
        let mut o = Owner::default();
        o.set(0, 10);
        o.set(1, 20);
        // Peer 0 moves later, peer 1 earlier, peer 2 comes and goes.
        o.set(0, 40);
        o.set(1, 5);
        o.set(2, 1);
        o.clear(2);
        assert_eq!(o.queue.len(), 5);
        assert_eq!(o.drain_due(30), vec![(1, 5)]);
        assert_eq!(o.drain_due(100), vec![(0, 40)]);
        assert_eq!(o.queue.len(), 0, "stale entries were skipped on the way");
    }

    #[test]
    fn skip_stale_makes_peek_current() {
        let mut o = Owner::default();
        o.set(0, 10);
        o.set(1, 20);
        o.clear(0);
        let current = &o.current;
        o.queue
            .skip_stale(|d| current.get(&d.peer) == Some(&d.generation));
        assert_eq!(
            o.queue.peek().map(|d| (d.peer, d.at)),
            Some((PeerId::new(1), at(20)))
        );
    }

    #[test]
    fn compaction_bounds_the_heap_and_keeps_the_current_entries() {
        let mut o = Owner::default();
        let live = 100;
        for round in 0..50u64 {
            for peer in 0..live {
                o.set(peer, 1_000 + round * 7 + peer as u64);
                let current = &o.current;
                o.queue
                    .compact_if_bloated(live, |d| current.get(&d.peer) == Some(&d.generation));
                assert!(o.queue.len() <= DeadlineQueue::bound(live));
            }
        }
        let current = &o.current;
        o.queue
            .compact_if_bloated(0, |d| current.get(&d.peer) == Some(&d.generation));
        assert_eq!(o.queue.len(), live, "exactly one current entry per peer");
        let popped = o.drain_due(u64::MAX / 2_000_000);
        let expected: Vec<(usize, u64)> =
            (0..live).map(|p| (p, 1_000 + 49 * 7 + p as u64)).collect();
        assert_eq!(popped, expected);
    }

    #[test]
    fn generations_are_never_zero() {
        let mut q = DeadlineQueue {
            next_generation: u64::MAX,
            ..DeadlineQueue::default()
        };
        assert_eq!(q.schedule(PeerId::new(0), at(1)), u64::MAX);
        assert_eq!(q.schedule(PeerId::new(0), at(1)), 1);
    }
}
