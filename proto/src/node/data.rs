//! The data path (docs/protocol.md §7.1, §7.2): IPv6 packets from the TUN sealed for
//! their peer (or queued while a session is set up), and data messages and keepalives
//! from the network opened in place, with keypair rotation on receive and the inner
//! source check.

use core::ops::Range;
use core::time::Duration;
use std::net::Ipv6Addr;

use super::path::Via;
use super::peer::{PeerId, Role};
use super::table::free_index;
use super::{Event, LocalId, Node, Transmit};
use crate::address::Address;
use crate::ip::Ipv6Packet;
use crate::session;
use crate::time::Instant;
use crate::wire::{self, DataPacket};

/// Keypairs we initiated are renewed on receive once this old, before the peer must.
const REKEY_ON_RECEIVE: Duration = Duration::from_secs(180 - 10 - 5);

/// What became of a packet handed to `Node::seal_current`.
pub(super) enum Sealed {
    /// Sealed in place: send it.
    Sent(Transmit),
    /// No usable current keypair or no endpoint: queue it and handshake.
    NoSession,
    /// The caller's buffer was too small or sealing failed: drop it.
    Failed,
}

impl Node {
    /// [`Node::handle_tun_packet`] before the timers are flushed.
    pub(super) fn tun_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let id = self.tun_target(now, packet)?;
        if out.len() < packet.len() + wire::DATA_OVERHEAD {
            self.stats.queue_dropped += 1;
            return None;
        }
        out[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + packet.len()].copy_from_slice(packet);
        self.send_data(now, id, out, packet.len())
    }

    /// [`Node::handle_tun_packet_in_place`] before the timers are flushed.
    pub(super) fn tun_packet_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        let Some(packet) = buf.get(wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len) else {
            self.stats.queue_dropped += 1;
            return None;
        };
        let id = self.tun_target(now, packet)?;
        self.send_data(now, id, buf, len)
    }

    /// The peer a TUN packet goes to; `None` when it was refused (counted) or queued
    /// for a lookup.
    fn tun_target(&mut self, now: Instant, packet: &[u8]) -> Option<PeerId> {
        // A longer packet would make a data message no receiver accepts (§7.1 step 1).
        if packet.len() > wire::MAX_DATA_PAYLOAD {
            self.stats.tun_invalid += 1;
            return None;
        }
        let Ok(ip) = Ipv6Packet::new_checked(packet) else {
            self.stats.tun_invalid += 1;
            return None;
        };
        let (src, dst) = (ip.src(), ip.dst());
        let overlay_dst = dst.octets()[0] == crate::address::OVERLAY_FIRST_BYTE;
        let Some(local) = self.local_for_ip(&src) else {
            // A gateway's reply from beyond it, to one of its clients.
            if overlay_dst {
                if let Some(id) = self.gateway_reply(&src, &dst) {
                    return Some(id);
                }
            }
            self.stats.tun_invalid += 1;
            return None;
        };
        if dst == src {
            self.stats.tun_invalid += 1;
            return None;
        }
        // Beyond the overlay: to the gateway the identity chose for it.
        let peer_ip = if overlay_dst {
            dst
        } else {
            let gateway = self.local(local).and_then(|l| l.routing.gateway_for(&dst));
            match gateway {
                Some(g) => g.ipv6(),
                None => {
                    self.stats.unrouted += 1;
                    return None;
                }
            }
        };
        // An identity with inbound rules remembers the flows it opens: their replies
        // pass (§11.2).
        let tracks = self
            .locals
            .get(usize::from(local.0))
            .and_then(Option::as_ref)
            .is_some_and(|l| !l.policy.rules.is_empty());
        if tracks {
            if let Some(f) = super::Flow::of(packet) {
                self.flows.outbound(now, src, dst, &f);
            }
        }
        let Some(&id) = self.by_ip.get(&(local, peer_ip)) else {
            self.queue_for_lookup(now, local, peer_ip, packet);
            return None;
        };
        Some(id)
    }

    /// The client a gateway identity's reply from `src` (beyond it) to `dst` (a peer's
    /// overlay address) goes to: a peer of a local identity that serves `src`.
    fn gateway_reply(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> Option<PeerId> {
        self.locals.iter().enumerate().find_map(|(i, l)| {
            let l = l.as_ref()?;
            if !l.routing.is_gateway() || !l.routing.serves(src) {
                return None;
            }
            self.by_ip.get(&(LocalId(i as u16), *dst)).copied()
        })
    }

    /// Seal the packet at `buf[DATA_HEADER_LEN..][..len]` for peer `id`, or queue it
    /// and start a handshake when there is no usable session.
    fn send_data(
        &mut self,
        now: Instant,
        id: PeerId,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        match self.seal_current(now, id, buf, len) {
            Sealed::Sent(t) => Some(t),
            Sealed::NoSession => {
                let packet = buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len].to_vec();
                let p = self.peers.get_mut(id)?;
                p.enqueue(packet, self.config.queue_per_peer, &mut self.stats);
                self.start_handshake(now, id);
                None
            }
            Sealed::Failed => {
                self.stats.queue_dropped += 1;
                if let Some(p) = self.peers.get_mut(id) {
                    p.counters.dropped += 1;
                }
                None
            }
        }
    }

    /// Seal `packet` (possibly empty: a keepalive) on the current keypair into the
    /// transmit queue. Returns false if there is no usable keypair.
    pub(super) fn send_queued(&mut self, now: Instant, id: PeerId, packet: &[u8]) -> bool {
        let mut buf = vec![0u8; packet.len() + wire::DATA_OVERHEAD + wire::RELAY_HEADER_LEN];
        buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + packet.len()].copy_from_slice(packet);
        match self.seal_current(now, id, &mut buf, packet.len()) {
            Sealed::Sent(t) => {
                buf.truncate(t.len);
                self.transmits.push_back((t.destination, buf));
                true
            }
            Sealed::NoSession | Sealed::Failed => false,
        }
    }

    /// Seal the `len`-byte packet (0 for a keepalive) at `buf[DATA_HEADER_LEN..]` on
    /// peer `id`'s current keypair, in place. Every data message and keepalive goes
    /// through here, so each one counts as sent and keeps the initiator's keys fresh
    /// (docs/protocol.md §6.3, §7.5).
    fn seal_current(&mut self, now: Instant, id: PeerId, buf: &mut [u8], len: usize) -> Sealed {
        self.seal_via(now, id, buf, len, None, len != 0)
    }

    /// [`Node::seal_current`] sent `via` (the peer's route when `None`); `data` says
    /// whether it carries a tunnel packet (a signal or keepalive does not). A relayed
    /// message gets the relay header in front, so `buf` needs
    /// [`wire::RELAY_HEADER_LEN`] bytes more then.
    pub(super) fn seal_via(
        &mut self,
        now: Instant,
        id: PeerId,
        buf: &mut [u8],
        len: usize,
        via: Option<Via>,
        data: bool,
    ) -> Sealed {
        let Some(p) = self.peers.get_mut(id) else {
            return Sealed::Failed;
        };
        let (Some(via), Some(kp)) = (
            via.or_else(|| p.route()),
            p.keys.current.as_mut().filter(|k| k.is_usable(now)),
        ) else {
            return Sealed::NoSession;
        };
        let Ok(sealed) = kp.seal(buf, len, now) else {
            return Sealed::Failed;
        };
        let rekey = kp.wants_rekey(now);
        p.note_sent(now, len, data);
        let transmit = match via {
            Via::Direct(destination) => {
                if data {
                    Node::arm_direct_check(p, now);
                }
                Transmit {
                    destination,
                    len: sealed,
                }
            }
            Via::Relay { relay, peer } => {
                let total = sealed + wire::RELAY_HEADER_LEN;
                let Some(source) = self
                    .locals
                    .get(usize::from(p.local.0))
                    .and_then(Option::as_ref)
                    .map(|l| l.identity.address())
                else {
                    return Sealed::Failed;
                };
                if buf.len() < total {
                    return Sealed::Failed;
                }
                buf.copy_within(0..sealed, wire::RELAY_HEADER_LEN);
                wire::put_relay_header(buf, &peer, &source);
                Transmit {
                    destination: relay,
                    len: total,
                }
            }
        };
        if rekey && p.handshake.attempt.is_none() {
            self.start_handshake(now, id);
        }
        Sealed::Sent(transmit)
    }

    /// Send what waited for peer `id`'s session on its current keypair.
    pub(super) fn flush_queue(&mut self, now: Instant, id: PeerId) {
        let queued: Vec<Vec<u8>> = match self.peers.get_mut(id) {
            Some(p) => p.queue.drain(..).collect(),
            None => return,
        };
        for pkt in &queued {
            if !self.send_queued(now, id, pkt) {
                self.stats.queue_dropped += 1;
                if let Some(p) = self.peers.get_mut(id) {
                    p.counters.dropped += 1;
                }
            }
        }
    }

    /// A data message or keepalive (§7.2): opened in place; returns the range of `msg`
    /// holding an IPv6 packet for the TUN, if it carried one that passed the inner
    /// source check.
    pub(super) fn on_data(
        &mut self,
        now: Instant,
        via: Via,
        msg: &mut [u8],
    ) -> Option<Range<usize>> {
        let Ok(packet) = DataPacket::new_checked(&*msg) else {
            self.stats.malformed += 1;
            return None;
        };
        let (receiver, counter, keepalive) =
            (packet.receiver(), packet.counter(), packet.is_keepalive());
        let Some(&id) = self.by_index.get(&receiver) else {
            self.stats.unknown_index += 1;
            return None;
        };
        let p = self.peers.get_mut(id)?;
        if let Via::Relay { peer, .. } = via {
            // The relay names the sender; it must be the session's peer.
            if peer != p.address {
                self.stats.spoofed += 1;
                return None;
            }
        }
        let Some((role, kp)) = p.keys.by_index_mut(receiver) else {
            self.stats.unknown_index += 1;
            return None;
        };
        let range = match kp.open(msg, counter, now) {
            Ok(r) => r,
            Err(session::Error::Replayed) => {
                self.stats.replayed_data += 1;
                return None;
            }
            Err(session::Error::Decrypt) => {
                self.stats.decrypt_failures += 1;
                return None;
            }
            // Past its limits the keypair counts as erased (§6.4) even before the
            // timer that erases it has run: its index is as good as unknown.
            Err(session::Error::Expired | session::Error::CounterExhausted) => {
                self.stats.unknown_index += 1;
                return None;
            }
            // Sealing errors; opening never returns them.
            Err(session::Error::BufferTooSmall | session::Error::Seal) => return None,
        };
        let rekey_on_receive = role == Role::Current
            && kp.initiator
            && now.saturating_duration_since(kp.created) >= REKEY_ON_RECEIVE;
        let promoted = role == Role::Next;
        if promoted {
            // The initiator used the new keypair: it becomes current (§6.4). Our own
            // attempt, if any, is moot, as on the initiator side when a response lands.
            if let Some(next) = p.keys.next.take() {
                if let Some(old) = p.keys.current.replace(next) {
                    if let Some(prev) = p.keys.previous.replace(old) {
                        free_index(&mut self.by_index, prev.local_index, id);
                    }
                }
            }
            if let Some(attempt) = p.handshake.attempt.take() {
                free_index(&mut self.by_index, attempt.sender, id);
            }
        }
        p.timers.reply_due = None;
        p.timers.last_active = now;
        let (local_id, address) = (p.local, p.address);
        let is_signal = msg.get(range.clone()).is_some_and(crate::signal::is_signal);
        // Roaming is per path: a relayed packet moves only the relay, a direct one
        // only the endpoint, and only while the peer is direct (a relayed peer
        // moves to a direct path by a probe's answer).
        match via {
            Via::Direct(from) => {
                p.paths.direct_rx = Some(now);
                // Packets from the peer prove only that its path to us works, not
                // ours to it: a relayed peer stays relayed until a probe of ours is
                // answered.
                if p.paths.relayed {
                    p.add_candidate(from);
                } else {
                    if let Some(old) = p.endpoint.filter(|e| *e != from) {
                        p.endpoint = Some(from);
                        if let Some(server) = self.relay.as_mut() {
                            server.roamed(&address, from);
                        }
                        self.events.push_back(Event::Roamed {
                            local: local_id,
                            address,
                            from: old,
                            to: from,
                        });
                    } else {
                        p.endpoint = Some(from);
                    }
                }
            }
            Via::Relay { relay, .. } => {
                let ours = self
                    .locals
                    .get(usize::from(local_id.0))
                    .and_then(Option::as_ref)
                    .is_some_and(|l| l.relays.iter().any(|r| r.relay.endpoint == relay));
                if ours {
                    p.paths.relay = Some(relay);
                    if p.endpoint.is_none() {
                        p.paths.relayed = true;
                    }
                }
            }
        }
        let p = self.peers.get_mut(id)?;
        if rekey_on_receive && p.handshake.attempt.is_none() {
            self.start_handshake(now, id);
        }
        if promoted {
            // What waited for a session leaves on the one the peer just confirmed.
            self.flush_queue(now, id);
            self.session_up(now, id, via);
        }
        if keepalive {
            return None;
        }
        if is_signal {
            let plain = msg.get(range)?.to_vec();
            self.on_signal(now, id, via, &plain);
            return None;
        }
        let local = self
            .locals
            .get(usize::from(local_id.0))
            .and_then(Option::as_ref);
        let p = self.peers.get(id)?;
        let inner = msg.get(range.clone())?;
        let ok = Ipv6Packet::new_checked(inner).is_ok_and(|ip| {
            local.is_some_and(|l| {
                l.routing
                    .inbound_ok(&p.address, &p.ipv6, &l.ipv6, &ip.src(), &ip.dst())
            })
        });
        if !ok {
            self.stats.spoofed += 1;
            return None;
        }
        let (peer_address, peer_ipv6) = (p.address, p.ipv6);
        if !self.inbound_passes(now, local_id, peer_address, peer_ipv6, inner) {
            self.stats.rule_dropped += 1;
            return None;
        }
        let p = self.peers.get_mut(id)?;
        let inner = msg.get(range.clone())?;
        p.counters.rx_bytes += inner.len() as u64;
        p.counters.rx_packets += 1;
        if p.timers.keepalive_at.is_none() {
            p.timers.keepalive_at = Some(now + session::KEEPALIVE_TIMEOUT);
        }
        Some(range)
    }
}

impl Node {
    /// Whether a decrypted packet from `peer` passes `local`'s inbound rules (§11.2):
    /// no rules, a reply to a flow it opened, an ICMPv6 error, or a rule that allows
    /// it. Counted per rule, and as default-dropped when none matches.
    fn inbound_passes(
        &mut self,
        now: Instant,
        local: LocalId,
        peer: Address,
        peer_ipv6: Ipv6Addr,
        packet: &[u8],
    ) -> bool {
        let flows = &self.flows;
        let Some(l) = self
            .locals
            .get_mut(usize::from(local.0))
            .and_then(Option::as_mut)
        else {
            return false;
        };
        if l.policy.rules.is_empty() {
            return true;
        }
        let Some(flow) = super::Flow::of(packet) else {
            l.policy_counts.default_dropped += 1;
            return false;
        };
        if flow.is_icmp_error() || flows.answers(now, l.ipv6, peer_ipv6, &flow) {
            return true;
        }
        match l.policy.decide(&peer, &flow) {
            Some((i, action)) => {
                if let Some(h) = l.policy_counts.rule_hits.get_mut(i) {
                    *h += 1;
                }
                action == super::Action::Allow
            }
            None => {
                l.policy_counts.default_dropped += 1;
                false
            }
        }
    }

    /// A packet from one local identity to another, delivered by the driver without
    /// the wire (containers on one host): whether the destination's policy lets it in,
    /// as if it had come through a session — its allow list (the sender must be one it
    /// admits) and its inbound rules — and, when the sender has rules, its flow is
    /// remembered so the reply passes. Counted like remote packets. `false` also when
    /// either address is no local identity.
    pub fn local_delivery_passes(&mut self, now: Instant, packet: &[u8]) -> bool {
        let Ok(ip) = Ipv6Packet::new_checked(packet) else {
            return false;
        };
        let (src, dst) = (ip.src(), ip.dst());
        let (Some(from), Some(to)) = (self.local_for_ip(&src), self.local_for_ip(&dst)) else {
            return false;
        };
        let Some(sender) = self.local(from).map(|l| l.identity.address()) else {
            return false;
        };
        if self.local(from).is_some_and(|l| !l.policy.rules.is_empty()) {
            if let Some(f) = super::Flow::of(packet) {
                self.flows.outbound(now, src, dst, &f);
            }
        }
        if let Some(l) = self.local_mut(to) {
            if !l.policy.admits(&sender) {
                l.policy_counts.refused += 1;
                self.stats.policy_refused += 1;
                return false;
            }
        }
        if !self.inbound_passes(now, to, sender, src, packet) {
            self.stats.rule_dropped += 1;
            return false;
        }
        true
    }
}
