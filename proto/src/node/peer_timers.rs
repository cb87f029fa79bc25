//! A peer's timers: keeping its entry in the deadline queue equal to its next deadline,
//! and what the node does when that deadline passes (keypair expiry, handshake retry and
//! give-up, the reply timeout, keepalives, forgetting an idle stranger; §6.3, §7.4–7.6).

use super::peer::PeerId;
use super::table::free_index;
use super::{Event, Node};
use crate::session;
use crate::time::Instant;

impl Node {
    /// Re-queue every peer changed since the last flush, drop stale entries from the
    /// top of the queue (so `poll_timeout` can peek) and compact the queue if stale
    /// entries pile up. Every public verb that can change a peer ends with this.
    pub(super) fn flush_timers(&mut self) {
        while let Some(id) = self.peers.pop_dirty() {
            self.reschedule(id);
        }
        let peers = &self.peers;
        self.deadlines
            .compact_if_bloated(peers.len(), |d| peers.is_current(d));
        self.deadlines.skip_stale(|d| peers.is_current(d));
    }

    /// Keep peer `id`'s queue entry at or before its next deadline: a new entry only if
    /// the deadline moved earlier (or the peer had none). A deadline that moved later
    /// (every packet moves the keepalive and reply timers) keeps the earlier entry,
    /// which then fires early, finds nothing due and reschedules: one heap operation
    /// per deadline period instead of one per packet.
    fn reschedule(&mut self, id: PeerId) {
        let Some(p) = self.peers.get(id) else {
            return;
        };
        let at = p.next_deadline(self.keepalive_for(p));
        let held = self.peers.scheduled(id).map(|(t, _)| t);
        if held == at || held.is_some_and(|h| at.is_none_or(|t| h <= t)) {
            return;
        }
        let scheduled = at.map(|t| (t, self.deadlines.schedule(id, t)));
        self.peers.set_scheduled(id, scheduled);
    }

    /// Run the timers of every peer whose deadline is at or before `now`, each once,
    /// in slot order (the order a scan of the table would visit them in).
    pub(super) fn fire_peer_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        loop {
            let peers = &self.peers;
            let Some(d) = self.deadlines.pop_due(now, |d| peers.is_current(d)) else {
                break;
            };
            self.peers.unschedule(d.peer);
            due.push(d.peer);
        }
        due.sort_unstable();
        for id in due {
            self.peer_timers(now, id);
        }
    }

    /// Whatever of peer `id`'s timers is due at `now`.
    fn peer_timers(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        // Expire keypairs past REJECT_AFTER_TIME.
        let mut retired = Vec::new();
        for slot in [&mut p.keys.previous, &mut p.keys.current, &mut p.keys.next] {
            if slot.as_ref().is_some_and(|k| !k.is_usable(now)) {
                if let Some(k) = slot.take() {
                    retired.push(k.local_index);
                }
            }
        }
        let had_session = !retired.is_empty();
        let none_left = p.keys.is_empty();
        let (local, address) = (p.local, p.address);
        for i in retired {
            free_index(&mut self.by_index, i, id);
        }
        if had_session && none_left {
            self.events
                .push_back(Event::SessionExpired { local, address });
        }

        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        // Handshake retry / give-up.
        if let Some(a) = &p.handshake.attempt {
            if now >= a.retry_at {
                if now.saturating_duration_since(a.started) >= session::REKEY_ATTEMPT_TIME {
                    let sender = a.sender;
                    p.handshake.attempt = None;
                    self.stats.queue_dropped += p.queue.len() as u64;
                    p.counters.dropped += p.queue.len() as u64;
                    p.queue.clear();
                    p.timers.reply_due = None;
                    free_index(&mut self.by_index, sender, id);
                    self.events
                        .push_back(Event::HandshakeFailed { local, address });
                } else {
                    let started = a.started;
                    self.send_initiation(now, id, started);
                }
            }
        }
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        // No reply to data we sent: the session may be dead on the other side.
        if p.timers.reply_due.is_some_and(|t| now >= t) {
            p.timers.reply_due = None;
            if p.handshake.attempt.is_none() {
                self.start_handshake(now, id);
            }
        }
        let Some(p) = self.peers.get(id) else {
            return;
        };
        // Passive keepalive after received data, and persistent keepalive.
        let interval = self.keepalive_for(p);
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let persistent_due = p
            .persistent_keepalive_at(interval)
            .is_some_and(|t| now >= t);
        if p.timers.keepalive_at.is_some_and(|t| now >= t) || persistent_due {
            p.timers.keepalive_at = None;
            self.send_queued(now, id, &[]);
        }
        self.path_timers(now, id);
        if self
            .peers
            .get(id)
            .and_then(|p| p.forget_at())
            .is_some_and(|t| now >= t)
        {
            self.drop_peer(id);
        }
    }
}
