//! What the daemon shows: `status`, `peers` and identities for the control API, the
//! counters with their help text, the metrics endpoint's snapshot, and systemd's
//! `STATUS=` line. Peers and counters come from the data plane's snapshot.

use metanet_proto::control::{self as api, IdentityInfo, PeerInfo};
use metanet_proto::identity::hex;
use metanet_proto::node::{self, LocalId};
use metanet_proto::{Address, Identity, UnixTime};

use crate::{link, metrics, Daemon};

impl Daemon {
    pub(crate) fn identity_info(&self, name: &str, local: LocalId) -> Option<IdentityInfo> {
        let id = self.node.identity(local)?;
        let mut i = info(name, id, self.names.is_default(local));
        let cfg = self.reg.config_of(name);
        i.hidden = cfg.hidden;
        i.services = cfg.service;
        if let Some(r) = self.reg.published(name) {
            i.endpoints = r.endpoints.clone();
        }
        Some(i)
    }

    pub(crate) fn identity_list(&self) -> Vec<IdentityInfo> {
        self.names
            .iter()
            .filter_map(|(n, l)| self.identity_info(n, l))
            .collect()
    }

    /// The current state of the peer `peer` describes (one query, not every peer).
    pub(crate) fn peer_info(&self, peer: &PeerInfo) -> Option<PeerInfo> {
        let address = peer.address.parse::<Address>().ok()?;
        let local = self.local_named(Some(&peer.identity)).ok()?;
        self.node.peer(local, address).map(|p| self.peer_info_of(p))
    }

    /// What `metanet relay status` shows.
    pub(crate) fn relay_info(&self, snap: crate::link::Snapshot) -> api::RelayInfo {
        let s = &snap.stats;
        let mut info = api::RelayInfo {
            relay: snap.relay.is_some(),
            forwarded_packets: s.relay_forwarded,
            forwarded_bytes: s.relay_forwarded_bytes,
            dropped_unbound: s.relay_unbound,
            refused: s.relay_refused,
            rate_limited: s.relay_rate_limited,
            using: snap
                .relays
                .iter()
                .map(|r| api::RelayUseInfo {
                    identity: self.name_of(r.local),
                    relay: r.relay.to_string(),
                    reserved: r.reserved,
                })
                .collect(),
            reflexive: snap.nat.reflexive.clone(),
            mapping: snap.nat.mapping.as_str().into(),
            ..Default::default()
        };
        if let Some(r) = snap.relay {
            info.rate = r.limits.rate;
            info.sessions = r.limits.sessions;
            info.reservations = r.clients.len();
            info.circuits = r.clients.iter().map(|c| c.circuits).sum();
            info.clients = r
                .clients
                .iter()
                .map(|c| api::RelayClientInfo {
                    address: c.address.to_string(),
                    endpoint: c.endpoint,
                    expires_in: c.expires_in.as_secs(),
                    circuits: c.circuits,
                    rx_bytes: c.rx_bytes,
                    rx_packets: c.rx_packets,
                })
                .collect();
        }
        info
    }

    pub(crate) fn peer_infos(&self) -> Vec<PeerInfo> {
        self.peer_infos_of(self.node.peers())
    }

    /// The peers `status` lists: at most [`api::STATUS_PEERS`], those with a session
    /// first, the most recent handshake first.
    pub(crate) fn status_peers(&self, mut peers: Vec<node::PeerStatus>) -> Vec<PeerInfo> {
        peers.sort_by_key(|p| std::cmp::Reverse((p.connected, p.last_handshake)));
        peers.truncate(api::STATUS_PEERS);
        self.peer_infos_of(peers)
    }

    pub(crate) fn peer_infos_of(&self, peers: Vec<node::PeerStatus>) -> Vec<PeerInfo> {
        peers.into_iter().map(|p| self.peer_info_of(p)).collect()
    }

    pub(crate) fn peer_info_of(&self, p: node::PeerStatus) -> PeerInfo {
        PeerInfo {
            identity: self.name_of(p.local),
            address: p.address.to_string(),
            ipv6: p.ipv6,
            endpoint: p.endpoint,
            last_handshake: p.last_handshake.map(UnixTime::as_secs),
            connected: p.connected,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            rtt_us: p
                .rtt
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            cipher: p.cipher.map(|c| c.name().to_owned()),
            pq: p.pq.map(|k| k.name().to_owned()),
            path: match (p.path, p.relay) {
                (node::Path::Direct, _) => "direct".into(),
                (node::Path::Relay(_), Some(relay)) => format!("relay:{relay}"),
                (node::Path::Relay(endpoint), None) => format!("relay:{endpoint}"),
                (node::Path::None, _) => "none".into(),
            },
        }
    }

    /// The global counters `metanet status` shows (node and data plane): name, what it
    /// counts (the metrics endpoint's HELP line), value. The one list of them.
    pub(crate) fn counters(&self, snap: &link::Snapshot) -> Vec<(&'static str, &'static str, u64)> {
        let (s, c) = (&snap.stats, snap.data.add(&self.counters));
        [
            (
                "malformed",
                "Datagrams that were not valid metanet messages.",
                s.malformed,
            ),
            (
                "bad_mac1",
                "Handshake messages whose mac1 matched no local identity.",
                s.bad_mac1,
            ),
            (
                "cookies_sent",
                "Cookie replies sent instead of doing handshake work (under load).",
                s.cookies_sent,
            ),
            (
                "rate_limited",
                "Handshake messages dropped by the rate limit.",
                s.rate_limited,
            ),
            (
                "handshakes_processed",
                "Initiations that reached Diffie-Hellman work.",
                s.handshakes_processed,
            ),
            (
                "handshake_failures",
                "Handshake messages that failed Noise, binding or payload checks.",
                s.handshake_failures,
            ),
            (
                "replayed_initiations",
                "Initiations whose timestamp was not newer than the last one.",
                s.replayed_initiations,
            ),
            (
                "unknown_index",
                "Data messages for an unknown session index.",
                s.unknown_index,
            ),
            (
                "replayed_data",
                "Data messages rejected by the replay window.",
                s.replayed_data,
            ),
            (
                "decrypt_failures",
                "Data messages that failed authentication.",
                s.decrypt_failures,
            ),
            (
                "spoofed",
                "Tunnel packets whose inner addresses were not the peer's and ours.",
                s.spoofed,
            ),
            (
                "tun_invalid",
                "TUN packets that were not IPv6 between overlay addresses.",
                s.tun_invalid,
            ),
            (
                "queue_dropped",
                "Packets dropped: queue full, lookup failed or handshake gave up.",
                s.queue_dropped,
            ),
            (
                "bad_records",
                "Record responses that failed verification or answered no request.",
                s.bad_records,
            ),
            (
                "denied",
                "Initiations from refused (revoked) addresses.",
                s.denied,
            ),
            (
                "policy_refused",
                "Initiations an identity's allow list refused.",
                s.policy_refused,
            ),
            (
                "epoch_refused",
                "Initiations refused for their closed group's network key epoch.",
                s.epoch_refused,
            ),
            (
                "pq_refused",
                "Classical handshakes refused because the post-quantum hybrid mode is required.",
                s.pq_refused,
            ),
            (
                "kem_encapsulations",
                "ML-KEM encapsulations done answering hybrid initiations.",
                s.kem_encapsulations,
            ),
            (
                "kem_decapsulations",
                "ML-KEM decapsulations done reading hybrid responses.",
                s.kem_decapsulations,
            ),
            (
                "unrouted",
                "TUN packets to a non-overlay destination no chosen route covers.",
                s.unrouted,
            ),
            (
                "rule_dropped",
                "Decrypted packets an identity's inbound rules dropped.",
                s.rule_dropped,
            ),
            (
                "record_cookies_sent",
                "Record cookies sent instead of signing a record (record requests under load).",
                s.record_cookies_sent,
            ),
            (
                "bad_signals",
                "Signals (session control messages) that did not parse.",
                s.bad_signals,
            ),
            (
                "punches_started",
                "Hole punches started.",
                s.punches_started,
            ),
            (
                "punches_succeeded",
                "Hole punches that moved a peer to a direct path.",
                s.punches_succeeded,
            ),
            (
                "punches_failed",
                "Hole punches that ran out (retried with back-off).",
                s.punches_failed,
            ),
            (
                "path_fallbacks",
                "Direct paths that went silent and fell back to the relay.",
                s.path_fallbacks,
            ),
            (
                "relay_forwarded",
                "Relay: messages forwarded between clients.",
                s.relay_forwarded,
            ),
            (
                "relay_forwarded_bytes",
                "Relay: bytes forwarded between clients.",
                s.relay_forwarded_bytes,
            ),
            (
                "relay_unbound",
                "Relay: messages from an endpoint with no reservation, dropped.",
                s.relay_unbound,
            ),
            (
                "relay_refused",
                "Relay: messages refused (destination not bound, session limit, full).",
                s.relay_refused,
            ),
            (
                "relay_rate_limited",
                "Relay: messages over the sender's rate cap, dropped.",
                s.relay_rate_limited,
            ),
            (
                "relay_unsolicited",
                "Relayed messages from an endpoint that is none of our relays, dropped.",
                s.relay_unsolicited,
            ),
            (
                "relay_refusals_received",
                "Refusals our relays sent us.",
                s.relay_refusals_received,
            ),
            (
                "relay_reservations_lost",
                "Relay reservations found lost (the relay stopped answering).",
                s.relay_reservations_lost,
            ),
            ("tun_reads", "Reads from the TUN device.", c.tun_reads),
            (
                "tun_packets_in",
                "Packets read from the TUN device (after splitting offloads).",
                c.tun_packets_in,
            ),
            (
                "tun_packets_out",
                "Packets written to the TUN device.",
                c.tun_packets_out,
            ),
            (
                "tun_merged_out",
                "Packets merged into larger TUN writes (GRO).",
                c.tun_merged_out,
            ),
            ("udp_recv_calls", "UDP receive calls.", c.udp_recv_calls),
            (
                "udp_datagrams_in",
                "UDP datagrams received.",
                c.udp_datagrams_in,
            ),
            ("udp_send_calls", "UDP send calls.", c.udp_send_calls),
            (
                "udp_datagrams_out",
                "UDP datagrams sent.",
                c.udp_datagrams_out,
            ),
            (
                "too_big",
                "Packets too big for the path, answered with ICMPv6 packet too big.",
                c.too_big,
            ),
            (
                "tun_bad_offload",
                "TUN reads with an offload header that could not be used.",
                c.tun_bad_offload,
            ),
            (
                "tun_write_errors",
                "Failed writes to the TUN device.",
                c.tun_write_errors,
            ),
            ("udp_send_errors", "Failed UDP sends.", c.udp_send_errors),
            (
                "notes_dropped",
                "Node events dropped because the control task fell behind.",
                c.notes_dropped,
            ),
            (
                "local_packets",
                "Packets between two identities of this daemon (containers, the host), delivered without UDP.",
                c.local_packets,
            ),
            (
                "source_refused",
                "TUN packets refused: their source is not an identity of the TUN they came from.",
                c.source_refused,
            ),
        ]
        .into()
    }

    /// What a metrics scrape shows, copied under brief locks (formatted elsewhere).
    pub(crate) fn metrics_snapshot(&self) -> metrics::Snapshot {
        let snap = self.node.snapshot().unwrap_or_default();
        let counters = self.counters(&snap);
        let (identities, peers) = {
            let identities: Vec<metrics::IdentitySample> = self
                .names
                .iter()
                .filter_map(|(name, local)| {
                    Some(metrics::IdentitySample {
                        name: name.to_owned(),
                        address: self.node.identity(local)?.address().to_string(),
                    })
                })
                .collect();
            (identities, snap.peers)
        };
        let peers = peers
            .into_iter()
            .map(|p| metrics::PeerSample {
                identity: self.name_of(p.local),
                address: p.address.to_string(),
                connected: p.connected,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                dropped: p.dropped,
                last_handshake: p.last_handshake.map(|t| t.as_nanos() as f64 / 1e9),
                rtt: p.rtt,
                cipher: p.cipher.map(|c| c.name().to_owned()),
            })
            .collect();
        metrics::Snapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            counters,
            identities,
            peers,
            dht: self.dht.as_ref().map(|h| {
                let st = h.status();
                metrics::DhtSample {
                    peers: st.peers,
                    records: st.records,
                }
            }),
        }
    }

    /// One line for `systemctl status`: identities and peers.
    pub(crate) fn summary(&self) -> String {
        let peers = self.node.peers();
        let up = peers.iter().filter(|p| p.last_handshake.is_some()).count();
        format!(
            "serving {} identities; {up} of {} peers with a session",
            self.names.len(),
            peers.len()
        )
    }
}

pub(crate) fn info(name: &str, id: &Identity, default: bool) -> IdentityInfo {
    IdentityInfo {
        name: name.into(),
        address: id.address().to_string(),
        ipv6: id.address().ipv6(),
        public_key: hex(&id.public_key().to_bytes()),
        default,
        services: Vec::new(),
        endpoints: Vec::new(),
        hidden: false,
        noise_key: Some(hex(&id.noise().public_key().0)),
    }
}
