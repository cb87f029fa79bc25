//! Record requests (docs/protocol.md §3.5, §7.7): connecting to a peer known only by
//! address and endpoint by asking the endpoint for its signed record ([`Probe`]), and
//! answering such requests for our own identities. Load checks are in `load`.

use std::net::SocketAddr;

use super::handshake::remember_cookie;
use super::peer::Origin;
use super::{
    CommandError, Event, LocalId, Node, ANSWER_RECORD_TTL, PROBE_ATTEMPTS, PROBE_INTERVAL,
};
use crate::address::Address;
use crate::handshake::{Remote, COOKIE_SECRET_LIFETIME};
use crate::record::{Lookup, PeerRecord};
use crate::time::Instant;
use crate::wire;

/// A [`super::Command::Connect`] waiting for the endpoint's record.
#[derive(Debug)]
pub(super) struct Probe {
    pub(super) local: LocalId,
    pub(super) address: Address,
    pub(super) endpoint: SocketAddr,
    /// Record requests sent so far.
    pub(super) sent: u32,
    /// When the next record request goes out (or the probe gives up).
    pub(super) next_at: Instant,
    /// The record cookie the endpoint gave us, and when it arrived.
    pub(super) cookie: Option<([u8; wire::MAC_LEN], Instant)>,
    /// Whether the last request carried a cookie: a record cookie answering one that
    /// did not makes the next request go out at once (once per probe).
    pub(super) sent_cookie: bool,
}

impl Node {
    /// [`super::Command::Connect`]: a known peer gets the endpoint and a handshake;
    /// otherwise a probe starts asking the endpoint for its record.
    pub(super) fn connect(
        &mut self,
        now: Instant,
        local: LocalId,
        address: Address,
        endpoint: SocketAddr,
    ) -> Result<(), CommandError> {
        if self.local(local).is_none() {
            return Err(CommandError::UnknownLocal);
        }
        if self.local_for_ip(&address.ipv6()).is_some() {
            return Err(CommandError::SelfPeer);
        }
        if self.denied.contains(&address) {
            return Err(CommandError::Denied);
        }
        if let Some(&id) = self.by_ip.get(&(local, address.ipv6())) {
            if let Some(p) = self.peers.get_mut(id) {
                p.endpoint = Some(endpoint);
            }
            self.start_handshake(now, id);
            return Ok(());
        }
        self.probes
            .retain(|_, p| !(p.local == local && p.address == address));
        let nonce = self.rng.u32();
        self.probes.insert(
            nonce,
            Probe {
                local,
                address,
                endpoint,
                sent: 0,
                next_at: now,
                cookie: None,
                sent_cookie: false,
            },
        );
        self.probe_timers(now);
        Ok(())
    }

    /// Send the record requests that are due, and give up on probes that sent
    /// `PROBE_ATTEMPTS` without an answer.
    pub(super) fn probe_timers(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .probes
            .iter()
            .filter(|(_, p)| p.next_at <= now)
            .map(|(n, _)| *n)
            .collect();
        for nonce in due {
            let Some(p) = self.probes.get_mut(&nonce) else {
                continue;
            };
            if p.sent >= PROBE_ATTEMPTS {
                let (local, address, endpoint) = (p.local, p.address, p.endpoint);
                self.probes.remove(&nonce);
                self.events.push_back(Event::ConnectFailed {
                    local,
                    address,
                    endpoint,
                });
                continue;
            }
            p.sent += 1;
            p.next_at = now + PROBE_INTERVAL;
            let repr = wire::RecordRequestRepr {
                nonce,
                target: *p.address.as_bytes(),
            };
            let mut buf = vec![0u8; wire::RECORD_REQUEST_LEN];
            // The probe's own cookie, or one another probe got from the same endpoint.
            let fresh = |c: &([u8; wire::MAC_LEN], Instant)| {
                now.saturating_duration_since(c.1) < COOKIE_SECRET_LIFETIME
            };
            let cookie = p.cookie.filter(fresh).or_else(|| {
                self.endpoint_record_cookies
                    .get(&p.endpoint)
                    .copied()
                    .filter(fresh)
            });
            match cookie {
                Some((cookie, _)) => repr.emit_with_cookie(&mut buf, &cookie),
                None => repr.emit(&mut buf),
            }
            p.sent_cookie = p.sent_cookie || cookie.is_some();
            self.transmits.push_back((p.endpoint, buf));
        }
    }

    /// Answer a record request for one of our identities with a freshly signed record
    /// (no endpoints: the asker already knows where it reached us), unless the load
    /// checks (`Node::admit_record_request`) say otherwise.
    pub(super) fn on_record_request(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let Ok(packet) = wire::RecordRequestPacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let target = Address::from_bytes(packet.target());
        let Some(li) = self.local_for_ip(&target.ipv6()) else {
            return;
        };
        if self
            .local(li)
            .is_none_or(|l| l.identity.address() != target)
        {
            return;
        }
        if !self.admit_record_request(now, from, &packet) {
            return;
        }
        let unix = self.unix(now);
        let Some(local) = self.local(li) else {
            return;
        };
        let rec = PeerRecord::new(
            &local.identity,
            Vec::new(),
            Vec::new(),
            unix.as_secs(),
            (unix + ANSWER_RECORD_TTL).as_secs(),
        );
        let Ok(signed) = rec.sign(&local.identity) else {
            return;
        };
        let repr = wire::RecordResponseRepr {
            nonce: packet.nonce(),
            record: signed,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf);
        self.transmits.push_back((from, buf));
    }

    /// A record cookie for one of our probes: kept for its next request, which goes out
    /// at the regular interval. Nothing is sent in answer: anyone who saw the request
    /// can forge a cookie message, and it must not make us send.
    pub(super) fn on_record_cookie(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let Ok(packet) = wire::RecordCookiePacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        match self
            .probes
            .get_mut(&packet.nonce())
            .filter(|p| p.endpoint == from)
        {
            Some(probe) => {
                probe.cookie = Some((packet.cookie(), now));
                if !probe.sent_cookie {
                    // Once: the request this causes carries the cookie.
                    probe.next_at = now;
                    probe.sent_cookie = true;
                }
                remember_cookie(
                    &mut self.endpoint_record_cookies,
                    from,
                    (packet.cookie(), now),
                    |c| c.1,
                    now,
                );
                self.probe_timers(now);
            }
            None => self.stats.bad_records += 1,
        }
    }

    /// A record response to one of our probes: if the record verifies for the address
    /// asked for, the peer is added as a driver peer and a handshake starts.
    pub(super) fn on_record_response(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        let Ok(packet) = wire::RecordResponsePacket::new_checked(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(probe) = self
            .probes
            .get(&packet.nonce())
            .filter(|p| p.endpoint == from)
        else {
            self.stats.bad_records += 1;
            return;
        };
        let lookup = Lookup::Address(probe.address);
        let Ok(rec) = PeerRecord::verify(packet.record(), lookup, self.unix(now)) else {
            self.stats.bad_records += 1;
            return;
        };
        let (local, endpoint) = (probe.local, probe.endpoint);
        self.probes.remove(&packet.nonce());
        let remote = Remote {
            public_key: rec.public_key,
            noise_key: rec.noise_key,
        };
        let paths = super::table::NewPaths {
            endpoint: Some(endpoint),
            ..Default::default()
        };
        let _ = self.add_peer(now, local, remote, true, Origin::Driver, paths);
    }
}
