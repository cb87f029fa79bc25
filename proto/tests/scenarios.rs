//! Protocol scenarios in the deterministic simulator (`sim/`). Each test names the
//! behaviour it pins; a failure prints the seed (`METANET_SIM_SEED=<n>` replays it).

#![allow(clippy::unwrap_used)]

mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use metanet_proto::handshake::{self, Remote};
use metanet_proto::identity::{Binding, NoiseKey, WalletKey};
use metanet_proto::node::{Command, CommandError, Config, Event};
use metanet_proto::record::{self, Envelope, Lookup, PeerRecord};
use metanet_proto::session::Keypair;
use metanet_proto::wire::{self, ResponsePacket};
use metanet_proto::{ip, Identity, Instant, UnixTime};
use sim::{LinkConfig, Sim};

const A: &str = "198.18.0.1:51820";
const B: &str = "198.18.0.2:51820";

fn msg(kind: u8, seq: u32) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&seq.to_le_bytes());
    m
}

fn parse_msg(p: &[u8]) -> Option<(u8, u32)> {
    Some((
        *p.first()?,
        u32::from_le_bytes(p.get(1..5)?.try_into().ok()?),
    ))
}

/// The sequence numbers of the `msg` payloads in `payloads`, in delivery order.
fn seqs(payloads: &[Vec<u8>]) -> Vec<u32> {
    payloads
        .iter()
        .filter_map(|p| parse_msg(p))
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn handshake_and_data_flow_both_ways() {
    let mut sim = Sim::new(1, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    // A knows nothing about B: the first packet triggers a lookup, queues, then flows.
    sim.send(a, ip_b, b"hello b");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"hello b".to_vec()]);
    sim.send(b, ip_a, b"hello a");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(a), vec![b"hello a".to_vec()]);
    let (addr_a, addr_b) = (sim.address(a), sim.address(b));
    assert!(sim.hosts[a].events.contains(&Event::LookupNeeded {
        local: sim.local(a),
        ipv6: ip_b
    }));
    assert!(sim.hosts[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { address, .. } if *address == addr_b)));
    assert!(sim.hosts[b]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { address, .. } if *address == addr_a)));
    // Applications see overlay addresses only: the inner source is A's overlay IPv6.
    let delivered = &sim.hosts[b].delivered[0].1;
    assert_eq!(ip::Ipv6Packet::new_checked(delivered).unwrap().src(), ip_a);
    let peers = sim.hosts[a].node.peers(sim.now);
    assert_eq!(peers.len(), 1);
    assert!(peers[0].connected);
    assert_eq!(peers[0].endpoint, Some(B.parse().unwrap()));
    // One peer's state by its address is the same as in the list, and nobody else's.
    let node = &sim.hosts[a].node;
    assert_eq!(
        node.peer(sim.now, sim.local(a), &addr_b),
        Some(peers[0].clone())
    );
    assert_eq!(node.peer(sim.now, sim.local(a), &addr_a), None);
}

/// A simple reliable sender over the tunnel: numbered messages, acks, retransmission
/// after `rto`, at most `window` in flight. Returns the set the receiver got.
fn reliable_transfer(
    sim: &mut Sim,
    a: usize,
    b: usize,
    n: u32,
    rto: Duration,
    deadline: Duration,
) -> BTreeSet<u32> {
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    let window = 32usize;
    let mut unacked: BTreeMap<u32, Option<metanet_proto::Instant>> =
        (0..n).map(|s| (s, None)).collect();
    let mut received = BTreeSet::new();
    let (mut seen_a, mut seen_b) = (0, 0);
    let end = sim.now + deadline;
    while !unacked.is_empty() && sim.now < end {
        let now = sim.now;
        let due: Vec<u32> = unacked
            .iter()
            .take(window)
            .filter(|(_, t)| t.is_none_or(|t| now.saturating_duration_since(t) >= rto))
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            sim.send(a, ip_b, &msg(b'D', s));
            unacked.insert(s, Some(now));
        }
        sim.run_for(Duration::from_millis(10));
        let new_b: Vec<Vec<u8>> = sim.payloads(b)[seen_b..].to_vec();
        seen_b += new_b.len();
        for p in new_b {
            if let Some((b'D', s)) = parse_msg(&p) {
                received.insert(s);
                sim.send(b, ip_a, &msg(b'A', s));
            }
        }
        let new_a: Vec<Vec<u8>> = sim.payloads(a)[seen_a..].to_vec();
        seen_a += new_a.len();
        for p in new_a {
            if let Some((b'A', s)) = parse_msg(&p) {
                unacked.remove(&s);
            }
        }
    }
    received
}

#[test]
fn lossy_reordering_link_delivers_under_retransmitting_sender() {
    let link = LinkConfig {
        loss: 0.10,
        jitter: Duration::from_millis(20),
        latency: Duration::from_millis(10),
        ..LinkConfig::default()
    };
    let mut sim = Sim::new(2, link);
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let got = reliable_transfer(
        &mut sim,
        a,
        b,
        500,
        Duration::from_millis(150),
        Duration::from_secs(600),
    );
    assert_eq!(got, (0..500).collect::<BTreeSet<u32>>());
    assert!(
        sim.link_stats.lost > 50,
        "the link must really have lost packets: {:?}",
        sim.link_stats
    );
    // Reordering happened and was tolerated: no authentic packet was rejected as replayed
    // except true duplicates (none on this link).
    assert_eq!(sim.hosts[b].node.stats().replayed_data, 0);
}

#[test]
fn duplicated_and_replayed_data_is_rejected() {
    let link = LinkConfig {
        duplicate: 0.3,
        ..LinkConfig::default()
    };
    let mut sim = Sim::new(3, link);
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let ip_b = sim.ip(b);
    for s in 0..200 {
        sim.send(a, ip_b, &msg(b'D', s));
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_for(Duration::from_secs(1));
    let got = seqs(&sim.payloads(b));
    assert_eq!(got.len(), 200, "each message exactly once");
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>().len(), 200);
    assert!(sim.link_stats.duplicated > 20);
    let dup_rejected = sim.hosts[b].node.stats().replayed_data;
    assert!(dup_rejected > 0);

    // An attacker records a data datagram and replays it later: rejected, not delivered.
    let mut tap = Sim::new(3, LinkConfig::default());
    let (a2, b2) = (tap.add_host(A), tap.add_host(B));
    tap.send(a2, tap.ip(b2), b"first");
    tap.run_for(Duration::from_secs(1));
    // Capture the next data message by sending it to an address nobody owns.
    let ip_b2 = tap.ip(b2);
    let mut out = vec![0u8; 2048];
    let pkt = ip::build_ipv6(tap.ip(a2), ip_b2, b"once");
    let now = tap.now;
    let txm = tap.hosts[a2]
        .node
        .handle_tun_packet(now, &pkt, &mut out)
        .unwrap();
    let captured = out[..txm.len].to_vec();
    tap.inject(A.parse().unwrap(), B.parse().unwrap(), captured.clone());
    tap.run_for(Duration::from_secs(1));
    tap.inject(A.parse().unwrap(), B.parse().unwrap(), captured.clone());
    tap.run_for(Duration::from_secs(30));
    tap.inject(A.parse().unwrap(), B.parse().unwrap(), captured);
    tap.run_for(Duration::from_secs(1));
    assert_eq!(tap.payloads(b2), vec![b"first".to_vec(), b"once".to_vec()]);
    assert_eq!(tap.hosts[b2].node.stats().replayed_data, 2);
}

#[test]
fn in_place_sealing_carries_the_same_stream_as_the_copying_path() {
    let mut sim = Sim::new(11, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let ip_b = sim.ip(b);
    // The first packets find no session: queued on the in-place path too, and sent
    // once the handshake is done.
    for s in 0..100u32 {
        if s % 2 == 0 {
            sim.send_in_place(a, ip_b, &msg(b'P', s));
        } else {
            sim.send(a, ip_b, &msg(b'P', s));
        }
        sim.run_for(Duration::from_millis(if s < 3 { 0 } else { 5 }));
    }
    sim.run_for(Duration::from_secs(1));
    let got = seqs(&sim.payloads(b));
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "all, in order, both paths"
    );
    // A buffer without room for the tag is refused and counted, not overrun.
    let pkt = ip::build_ipv6(sim.ip(a), ip_b, b"no room");
    let mut short = vec![0u8; wire::DATA_HEADER_LEN + pkt.len()];
    short[wire::DATA_HEADER_LEN..].copy_from_slice(&pkt);
    let dropped = sim.hosts[a].node.stats().queue_dropped;
    let now = sim.now;
    assert!(sim.hosts[a]
        .node
        .handle_tun_packet_in_place(now, &mut short, pkt.len())
        .is_none());
    assert_eq!(sim.hosts[a].node.stats().queue_dropped, dropped + 1);
}

#[test]
fn rekey_across_24h_of_virtual_time_loses_no_packet() {
    let mut sim = Sim::new(4, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    let seconds = 24 * 3600u32;
    for s in 0..seconds {
        sim.send(a, ip_b, &msg(b'D', s));
        sim.send(b, ip_a, &msg(b'D', s));
        sim.run_for(Duration::from_secs(1));
    }
    sim.run_for(Duration::from_secs(5));
    let want: Vec<u32> = (0..seconds).collect();
    for h in [a, b] {
        let got = seqs(&sim.payloads(h));
        assert_eq!(got, want, "host {h} lost or reordered packets");
        let st = sim.hosts[h].node.stats();
        assert_eq!(st.queue_dropped, 0, "host {h}: {st:?}");
        assert_eq!(
            st.decrypt_failures + st.unknown_index + st.replayed_data,
            0,
            "host {h}: {st:?}"
        );
    }
    // One handshake every ~120 s: the keys really were rotated.
    let handshakes = sim.hosts[b].node.stats().handshakes_processed
        + sim.hosts[a].node.stats().handshakes_processed;
    assert!(handshakes >= 600, "only {handshakes} handshakes in 24 h");
}

#[test]
fn roaming_moves_the_session_to_the_new_endpoint() {
    let mut sim = Sim::new(5, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    sim.send(a, ip_b, b"before");
    sim.run_for(Duration::from_secs(1));
    let handshakes_before = sim.hosts[b].node.stats().handshakes_processed;
    sim.renumber(a, "198.18.1.77:40000");
    sim.send(a, ip_b, b"after");
    sim.run_for(Duration::from_secs(1));
    sim.send(b, ip_a, b"reply");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"before".to_vec(), b"after".to_vec()]);
    assert_eq!(sim.payloads(a), vec![b"reply".to_vec()]);
    let new: SocketAddr = "198.18.1.77:40000".parse().unwrap();
    assert!(sim.hosts[b]
        .events
        .iter()
        .any(|e| matches!(e, Event::Roamed { to, .. } if *to == new)));
    assert_eq!(sim.hosts[b].node.peers(sim.now)[0].endpoint, Some(new));
    // Roaming needed no new handshake.
    assert_eq!(
        sim.hosts[b].node.stats().handshakes_processed,
        handshakes_before
    );
}

#[test]
fn peer_restart_new_session_replaces_the_old() {
    let mut sim = Sim::new(6, LinkConfig::default());
    let seed_b: [u8; 64] = sim.random_bytes();
    let a = sim.add_host(A);
    let b = sim.add_host_with(B, vec![Identity::generate(&seed_b)], Config::default());
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    sim.send(a, ip_b, b"one");
    sim.run_for(Duration::from_secs(1));
    sim.send(b, ip_a, b"two");
    sim.run_for(Duration::from_secs(1));

    // B restarts with the same identity and no state. A keeps sending on the old
    // session: B cannot decrypt it, A notices no reply and handshakes again.
    sim.restart(b, vec![Identity::generate(&seed_b)]);
    let restarted_at = sim.unix();
    for s in 0..30 {
        sim.send(a, ip_b, &msg(b'D', s));
        sim.run_for(Duration::from_secs(1));
    }
    let got = seqs(&sim.payloads(b)[1..]);
    assert!(
        sim.hosts[b].node.stats().unknown_index > 0,
        "old-session packets must be refused"
    );
    assert!(
        got.contains(&29) && got.len() >= 10,
        "traffic resumed: got {got:?}"
    );
    let peer = &sim.hosts[a].node.peers(sim.now)[0];
    assert!(peer.last_handshake.unwrap() > restarted_at);

    // And the restarted side can reach out first: its newer timestamp is accepted.
    sim.restart(b, vec![Identity::generate(&seed_b)]);
    sim.run_for(Duration::from_secs(1));
    sim.send(b, ip_a, b"after restart");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(a).last().unwrap(), b"after restart");
}

#[test]
fn forged_identity_binding_gets_no_tunnel() {
    let mut sim = Sim::new(7, LinkConfig::default());
    let b = sim.add_host(B);
    // X signs a binding over somebody else's Noise key but handshakes with its own.
    let wallet = WalletKey::from_seed(&sim.random_bytes());
    let victim_noise = NoiseKey::from_bytes(&sim.random_bytes());
    let forged = Binding::sign(&wallet, &victim_noise.public_key());
    let x_id =
        Identity::dangerous_with_binding(wallet, NoiseKey::from_bytes(&sim.random_bytes()), forged);
    let x = sim.add_host_with("198.18.0.66:51820", vec![x_id], Config::default());
    // The record with the forged binding is refused by every resolver...
    let prefix = sim.address(x).ipv6_prefix();
    assert_eq!(
        PeerRecord::verify(&sim.directory[&prefix], Lookup::Ipv6(prefix), sim.unix()),
        Err(record::Error::BadBinding)
    );
    // ...and a handshake presenting it is refused by the responder.
    sim.add_peer(x, b, true);
    sim.send(x, sim.ip(b), b"let me in");
    sim.run_for(Duration::from_secs(3));
    assert!(sim.payloads(b).is_empty());
    assert!(sim.hosts[b].node.stats().handshake_failures >= 1);
    assert!(sim.hosts[b].node.peers(sim.now).is_empty());
    assert!(!sim.hosts[b]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { .. })));

    // The other direction: A is told X's keys directly (bypassing the record); X's
    // response carries the forged binding and A refuses it.
    let a = sim.add_host(A);
    let noise_x = sim.hosts[x]
        .node
        .identity(sim.local(x))
        .unwrap()
        .noise()
        .public_key();
    let pk_x = sim.hosts[x]
        .node
        .identity(sim.local(x))
        .unwrap()
        .public_key();
    let cmd = Command::AddPeer {
        local: sim.local(a),
        remote: Remote {
            public_key: pk_x,
            noise_key: noise_x,
        },
        endpoint: Some("198.18.0.66:51820".parse().unwrap()),
        candidates: Vec::new(),
        relay: None,
        connect: true,
    };
    let now = sim.now;
    sim.hosts[a].node.handle_command(now, cmd).unwrap();
    sim.drain(a);
    sim.run_for(Duration::from_secs(3));
    assert!(sim.hosts[a].node.stats().handshake_failures >= 1);
    assert!(!sim.hosts[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { .. })));
}

#[test]
fn record_signed_by_the_wrong_key_is_never_used() {
    let mut sim = Sim::new(8, LinkConfig::default());
    let (a, v) = (sim.add_host(A), sim.add_host(B));
    let attacker_id = sim.new_identity();
    let attacker_addr: SocketAddr = "198.18.0.66:51820".parse().unwrap();
    // The attacker re-signs V's record payload with its own key, pointing at itself.
    let prefix_v = sim.address(v).ipv6_prefix();
    let genuine = sim.directory[&prefix_v].clone();
    let env = Envelope::open(
        &genuine,
        record::PEER_RECORD_PURPOSE,
        record::PEER_RECORD_TYPE,
    )
    .unwrap();
    let forged = Envelope::seal(
        &attacker_id,
        record::PEER_RECORD_PURPOSE,
        record::PEER_RECORD_TYPE,
        env.payload,
    )
    .unwrap();
    assert_eq!(
        PeerRecord::verify(&forged, Lookup::Ipv6(prefix_v), sim.unix()),
        Err(record::Error::KeyMismatch)
    );
    // And the attacker's own genuine record, offered under V's address.
    let own = PeerRecord::new(
        &attacker_id,
        vec![attacker_addr],
        vec![],
        9,
        sim.unix().as_secs() + 3600,
    );
    let own = own.sign(&attacker_id).unwrap();
    assert_eq!(
        PeerRecord::verify(&own, Lookup::Ipv6(prefix_v), sim.unix()),
        Err(record::Error::KeyMismatch)
    );
    for bytes in [forged, own] {
        sim.directory.insert(prefix_v, bytes);
        sim.send(a, sim.ip(v), b"secret");
        sim.run_for(Duration::from_secs(2));
    }
    assert!(
        !sim.taps.contains_key(&attacker_addr),
        "nothing may be sent to the attacker"
    );
    assert!(sim.payloads(v).is_empty());
    assert!(sim.hosts[a].node.peers(sim.now).is_empty());
    assert_eq!(sim.hosts[a].node.stats().queue_dropped, 2);
}

/// Hosts A and B on a 2 ms link, B's endpoint, and 32 distinct initiations to B with a
/// valid mac1 from a throwaway identity (an attacker who read B's record).
fn flood_setup(seed: u64) -> (Sim, usize, usize, SocketAddr, Vec<Vec<u8>>) {
    let mut sim = Sim::new(
        seed,
        LinkConfig {
            latency: Duration::from_millis(2),
            ..LinkConfig::default()
        },
    );
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let b_addr: SocketAddr = B.parse().unwrap();
    let target = {
        let id = sim.hosts[b].node.identity(sim.local(b)).unwrap();
        Remote {
            public_key: id.public_key(),
            noise_key: id.noise().public_key(),
        }
    };
    let attacker = sim.new_identity();
    let inits: Vec<Vec<u8>> = (0..32)
        .map(|i| {
            let ts = sim.unix() + Duration::from_millis(i);
            handshake::initiate(
                &attacker,
                target,
                &[0; 32],
                i as u32,
                ts,
                None,
                sim.random_bytes(),
            )
            .unwrap()
            .1
        })
        .collect();
    (sim, a, b, b_addr, inits)
}

#[test]
fn a_flood_from_one_source_gets_a_few_cookies_a_second_and_the_rest_dropped() {
    let (mut sim, a, b, b_addr, inits) = flood_setup(12);
    // 5 s of 2000 initiations a second, all from one address: far above the load
    // threshold, and far above what one source may be answered.
    let src: SocketAddr = "198.18.200.9:4000".parse().unwrap();
    let ip_b = sim.ip(b);
    for round in 0..500u32 {
        for k in 0..20u32 {
            sim.inject(src, b_addr, inits[((round * 20 + k) % 32) as usize].clone());
        }
        if round == 50 {
            sim.send(a, ip_b, b"legit");
        }
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(Duration::from_secs(1));
    let st = sim.hosts[b].node.stats().clone();
    // At most 64 cookie replies per 1 s window to the flooding source (5 windows, one
    // more for a window boundary), and the honest initiator's own.
    assert!(st.cookies_sent <= 64 * 6 + 4, "{st:?}");
    assert!(st.cookies_sent >= 64, "{st:?}");
    assert!(st.rate_limited > 9000, "{st:?}");
    assert!(st.handshakes_processed < 200, "{st:?}");
    // Another source still gets its cookie and connects during the flood.
    assert_eq!(sim.payloads(b), vec![b"legit".to_vec()]);
}

#[test]
fn handshake_flood_triggers_cookies_and_a_legitimate_peer_still_connects() {
    // The attacker knows B's public Noise key (it is in B's record), so its mac1 is
    // valid; it replays a few distinct initiations from many sources.
    let (mut sim, a, b, b_addr, inits) = flood_setup(9);
    let mut injected = 0u64;
    let ip_b = sim.ip(b);
    // 8 s of flood: A's first initiation (at 0.5 s) draws a cookie, and its retry
    // REKEY_TIMEOUT later, with mac2, lands while B is still under load.
    for round in 0..800u32 {
        for k in 0..20u32 {
            let src: SocketAddr =
                format!("198.18.{}.{}:{}", 100 + k % 50, 1 + round % 250, 1000 + k)
                    .parse()
                    .unwrap();
            sim.inject(src, b_addr, inits[((round * 20 + k) % 32) as usize].clone());
            injected += 1;
        }
        if round == 50 {
            sim.send(a, ip_b, b"legit");
        }
        sim.run_for(Duration::from_millis(10));
    }
    let flood_end = sim.now;
    sim.run_for(Duration::from_secs(1));
    let st = sim.hosts[b].node.stats().clone();
    assert_eq!(injected, 16000);
    assert!(st.cookies_sent > 12000, "{st:?}");
    // DH work stays bounded by the load threshold, not by the flood.
    assert!(st.handshakes_processed < 300, "{st:?}");
    assert_eq!(sim.payloads(b), vec![b"legit".to_vec()]);
    assert!(
        sim.hosts[b].delivered[0].0 < flood_end,
        "connected under load"
    );
    assert!(sim.hosts[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { .. })));
}

#[test]
fn spoofed_inner_source_is_dropped_and_counted() {
    let mut sim = Sim::new(10, LinkConfig::default());
    let b = sim.add_host(B);
    let ip_b = sim.ip(b);
    let b_addr: SocketAddr = B.parse().unwrap();
    let m_addr: SocketAddr = "198.18.0.13:51820".parse().unwrap();
    let m = sim.new_identity();
    let target = {
        let id = sim.hosts[b].node.identity(sim.local(b)).unwrap();
        Remote {
            public_key: id.public_key(),
            noise_key: id.noise().public_key(),
        }
    };
    // M speaks the protocol by hand so it can put any inner source it likes.
    let (expect, init) = handshake::initiate(
        &m,
        target,
        &[0; 32],
        77,
        sim.unix(),
        None,
        sim.random_bytes(),
    )
    .unwrap();
    sim.inject(m_addr, b_addr, init);
    sim.run_for(Duration::from_secs(1));
    let resp = sim.taps[&m_addr][0].clone();
    let est = expect
        .handle_response(&ResponsePacket::new_checked(resp.as_slice()).unwrap())
        .unwrap();
    let mut kp = Keypair::new(&est, sim.now);
    let mut seal = |inner: Vec<u8>, now| {
        let mut buf = vec![0u8; inner.len() + wire::DATA_OVERHEAD];
        buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + inner.len()].copy_from_slice(&inner);
        kp.seal(&mut buf, inner.len(), now).unwrap();
        buf
    };
    let someone_else = sim.new_identity().address().ipv6();
    let spoofed = seal(ip::build_ipv6(someone_else, ip_b, b"spoof"), sim.now);
    let honest = seal(ip::build_ipv6(m.address().ipv6(), ip_b, b"honest"), sim.now);
    sim.inject(m_addr, b_addr, spoofed);
    sim.inject(m_addr, b_addr, honest);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"honest".to_vec()]);
    assert_eq!(sim.hosts[b].node.stats().spoofed, 1);
}

#[test]
fn unknown_destination_queues_bounded_until_the_lookup_answers() {
    let mut sim = Sim::new(11, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    sim.hosts[a].auto_resolve = false;
    let ip_b = sim.ip(b);
    for s in 0..200 {
        sim.send(a, ip_b, &msg(b'D', s));
    }
    let lookups = sim.hosts[a]
        .events
        .iter()
        .filter(|e| matches!(e, Event::LookupNeeded { .. }))
        .count();
    assert_eq!(lookups, 1, "one lookup per destination");
    assert!(
        sim.taps.is_empty() && sim.link_stats.sent == 0,
        "nothing sent before the peer is known"
    );
    sim.add_peer(a, b, false);
    sim.run_for(Duration::from_secs(1));
    let cap = Config::default().queue_per_peer as u32;
    let got = seqs(&sim.payloads(b));
    // The newest `cap` packets survive, in order; the rest were dropped and counted.
    assert_eq!(got, (200 - cap..200).collect::<Vec<_>>());
    assert_eq!(
        sim.hosts[a].node.stats().queue_dropped,
        u64::from(200 - cap)
    );
    // A lookup that never resolves drops its queue after the timeout.
    let c = sim.new_identity().address().ipv6();
    sim.send(a, c, b"void");
    sim.run_for(metanet_proto::node::LOOKUP_TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        sim.hosts[a].node.stats().queue_dropped,
        u64::from(200 - cap) + 1
    );
}

#[test]
fn several_identities_on_one_node_stay_separate() {
    let mut sim = Sim::new(12, LinkConfig::default());
    let (i1, i2) = (sim.new_identity(), sim.new_identity());
    let (ip1, ip2) = (i1.address().ipv6(), i2.address().ipv6());
    let h = sim.add_host_with("198.18.0.5:51820", vec![i1, i2], Config::default());
    let (p1, p2) = (sim.add_host(A), sim.add_host(B));
    sim.send(p1, ip1, b"to first");
    sim.send(p2, ip2, b"to second");
    sim.run_for(Duration::from_secs(1));
    let delivered: Vec<(std::net::Ipv6Addr, std::net::Ipv6Addr, Vec<u8>)> = sim.hosts[h]
        .delivered
        .iter()
        .map(|(_, p)| {
            let v = ip::Ipv6Packet::new_checked(p).unwrap();
            (v.src(), v.dst(), p[ip::IPV6_HEADER_LEN..].to_vec())
        })
        .collect();
    assert!(delivered.contains(&(sim.ip(p1), ip1, b"to first".to_vec())));
    assert!(delivered.contains(&(sim.ip(p2), ip2, b"to second".to_vec())));
    let peers = sim.hosts[h].node.peers(sim.now);
    assert_eq!(peers.len(), 2);
    assert_ne!(
        peers[0].local, peers[1].local,
        "each peer belongs to the identity it called"
    );
    // Replies leave from the identity that was addressed.
    let src2 = ip2;
    let pkt = ip::build_ipv6(src2, sim.ip(p2), b"reply from second");
    sim.send_raw(h, &pkt);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(p2), vec![b"reply from second".to_vec()]);
    assert!(sim.payloads(p1).is_empty());
}

#[test]
fn connect_by_address_and_endpoint_fetches_and_verifies_the_record() {
    let mut sim = Sim::new(13, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    sim.directory.clear(); // no registry: only the address and the endpoint are known
    let (addr_b, ip_b) = (sim.address(b), sim.ip(b));
    connect_by_endpoint(&mut sim, a, addr_b, B.parse().unwrap());
    sim.drain(a);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.hosts[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { address, .. } if *address == addr_b)));
    sim.send(a, ip_b, b"by address");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"by address".to_vec()]);

    // The endpoint answers for another key than the address asked for: never used.
    let c = sim.add_host("198.18.0.3:51820");
    let wanted = sim.new_identity().address();
    connect_by_endpoint(&mut sim, c, wanted, B.parse().unwrap());
    sim.drain(c);
    sim.run_for(Duration::from_secs(15));
    assert!(sim.hosts[c].node.peers(sim.now).is_empty());
    assert!(sim.hosts[c]
        .events
        .iter()
        .any(|e| matches!(e, Event::ConnectFailed { address, .. } if *address == wanted)));
}

#[test]
fn persistent_keepalive_keeps_an_idle_session_up() {
    let interval = Duration::from_secs(25);
    let mut sim = Sim::new(14, LinkConfig::default());
    let id_a = sim.new_identity();
    let config = Config {
        persistent_keepalive: Some(interval),
        ..Config::default()
    };
    let a = sim.add_host_with(A, vec![id_a], config);
    let b = sim.add_host(B);
    let ip_b = sim.ip(b);
    sim.send(a, ip_b, b"wake up");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"wake up".to_vec()]);
    let idle_from = sim.now;
    // Nothing else is sent by anyone for ten minutes: the node alone must wake up for
    // every keepalive (the simulator only calls handle_timeout at poll_timeout).
    sim.run_for(Duration::from_secs(600));
    let sent = sim.sent_times(A, wire::kind::DATA, Some(wire::DATA_OVERHEAD), idle_from);
    assert!(sent.len() >= 600 / 25 - 1, "keepalives at {sent:?}");
    let mut last = idle_from;
    for t in &sent {
        assert!(
            t.saturating_duration_since(last) <= interval + Duration::from_secs(1),
            "gap before the keepalive at {t:?}: {sent:?}"
        );
        last = *t;
    }
    // Keepalives keep the keys fresh too: the session never lapsed.
    assert!(sim.hosts[a].node.peers(sim.now)[0].connected);
    assert!(!sim.hosts[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionExpired { .. })));
}

/// Tell host `h`'s first identity to connect to `address` at `endpoint` (the
/// `metanet connect ADDR --endpoint` command).
fn connect_by_endpoint(
    sim: &mut Sim,
    h: usize,
    address: metanet_proto::Address,
    endpoint: SocketAddr,
) {
    let (now, local) = (sim.now, sim.local(h));
    sim.hosts[h]
        .node
        .handle_command(
            now,
            Command::Connect {
                local,
                address,
                endpoint,
            },
        )
        .unwrap();
}

/// The keys of host `peer`'s first identity, as a record would give them.
fn remote_of(sim: &Sim, peer: usize) -> Remote {
    let id = sim.hosts[peer].node.identity(sim.local(peer)).unwrap();
    Remote {
        public_key: id.public_key(),
        noise_key: id.noise().public_key(),
    }
}

#[test]
fn responder_flushes_its_queue_when_the_initiator_confirms_the_session() {
    let mut sim = Sim::new(15, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    // B knows A's keys but not where it is (a record without endpoints): what B sends
    // waits in the queue, and B cannot initiate.
    let cmd = Command::AddPeer {
        local: sim.local(b),
        remote: remote_of(&sim, a),
        endpoint: None,
        candidates: Vec::new(),
        relay: None,
        connect: false,
    };
    let now = sim.now;
    sim.hosts[b].node.handle_command(now, cmd).unwrap();
    sim.send(b, ip_a, b"waiting for you");
    sim.run_for(Duration::from_millis(100));
    assert!(sim.payloads(a).is_empty());
    // A initiates; its confirmation keepalive promotes B's `next` keypair, and B's
    // queue must leave right then, not at B's next handshake retry.
    sim.add_peer(a, b, true);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.payloads(a), vec![b"waiting for you".to_vec()]);
    // The session A made is the one B uses: no second handshake was needed.
    assert_eq!(sim.hosts[b].node.stats().handshakes_processed, 1);
    assert_eq!(sim.hosts[a].node.stats().handshakes_processed, 0);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.sent_times(
            B,
            wire::kind::INITIATION,
            None,
            metanet_proto::Instant::ZERO
        ),
        vec![],
        "B's own attempt ended when the session came up"
    );
    sim.send(a, ip_b, b"thanks");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.payloads(b), vec![b"thanks".to_vec()]);
}

#[test]
fn noise_key_rotation_drops_old_keys_and_their_indices() {
    let mut sim = Sim::new(16, LinkConfig::default());
    let wallet_seed: [u8; 32] = sim.random_bytes();
    let b_id = |noise: [u8; 32]| {
        Identity::new(
            WalletKey::from_seed(&wallet_seed),
            NoiseKey::from_bytes(&noise),
        )
    };
    let a = sim.add_host(A);
    let first = b_id(sim.random_bytes());
    let b = sim.add_host_with(B, vec![first], Config::default());
    let ip_b = sim.ip(b);
    sim.send(a, ip_b, &msg(b'D', 0));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).len(), 1);

    // B rotates its Noise key (same wallet, same address) and restarts. A keeps sending
    // on the old session, gets no reply and retries handshakes to the old key, which B
    // no longer answers.
    let rotated = b_id(sim.random_bytes());
    sim.publish(&rotated, B.parse().unwrap());
    sim.restart(b, vec![rotated]);
    for s in 1..=20 {
        sim.send(a, ip_b, &msg(b'D', s));
        sim.run_for(Duration::from_secs(1));
    }
    assert_eq!(sim.payloads(b).len(), 1);
    assert!(
        sim.hosts[b].node.stats().bad_mac1 > 0,
        "A retried to the old key"
    );

    // The registry now gives A the new key. Everything made with the old key goes
    // (the simulator checks that no session index is left behind), and the handshake
    // A was trying starts again at once with the new key.
    sim.add_peer(a, b, false);
    assert!(!sim.hosts[a].node.peers(sim.now)[0].connected);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.hosts[a].node.peers(sim.now)[0].connected);
    sim.send(a, ip_b, &msg(b'D', 21));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.payloads(b).last().unwrap(), &msg(b'D', 21));
}

#[test]
fn oversized_tun_packet_is_refused_not_sent() {
    // Links that carry any datagram, so only the node can refuse the packet.
    let link = LinkConfig {
        mtu: 1 << 20,
        ..LinkConfig::default()
    };
    let mut sim = Sim::new(17, link);
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    let largest = wire::MAX_DATA_PAYLOAD;
    assert_eq!(largest, 65503);
    let packet = |len: usize| ip::build_ipv6(ip_a, ip_b, &vec![0x5a; len - ip::IPV6_HEADER_LEN]);

    // No session yet: refused before it is queued or looked up.
    sim.send_raw(a, &packet(largest + 1));
    assert_eq!(sim.hosts[a].node.stats().tun_invalid, 1);
    assert!(
        sim.hosts[a].events.is_empty(),
        "no lookup for a refused packet"
    );

    // The largest packet that fits goes through, in one datagram of exactly 65535 bytes.
    sim.send_raw(a, &packet(largest));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.hosts[b].delivered.len(), 1);
    assert_eq!(sim.hosts[b].delivered[0].1, packet(largest));

    // With a session: refused on the fast path too, nothing sent, nothing dropped later.
    let sent = sim.wire_log.len();
    for len in [largest + 1, 65535, 40 + 65535] {
        sim.send_raw(a, &packet(len));
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.hosts[a].node.stats().tun_invalid, 4);
    assert_eq!(sim.hosts[a].node.stats().queue_dropped, 0);
    assert!(sim.wire_log[sent..]
        .iter()
        .all(|s| s.len <= wire::MAX_DATAGRAM));
    assert_eq!(sim.hosts[b].node.stats().malformed, 0);
    assert_eq!(sim.hosts[b].delivered.len(), 1);
}

/// Addresses of the peers host `h` holds.
fn peer_addresses(sim: &Sim, h: usize) -> BTreeSet<metanet_proto::Address> {
    sim.hosts[h]
        .node
        .peers(sim.now)
        .iter()
        .map(|p| p.address)
        .collect()
}

#[test]
fn stranger_peer_is_forgotten_after_its_session_expires() {
    let mut sim = Sim::new(18, LinkConfig::default());
    let (a, b, c) = (
        sim.add_host(A),
        sim.add_host(B),
        sim.add_host("198.18.0.3:51820"),
    );
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    let (addr_a, addr_b, addr_c) = (sim.address(a), sim.address(b), sim.address(c));
    // B's operator configured C; A is a stranger to B that calls in.
    sim.add_peer(b, c, true);
    sim.send(a, ip_b, b"hello");
    sim.run_for(Duration::from_secs(1));
    sim.send(b, ip_a, b"hi");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(peer_addresses(&sim, b), BTreeSet::from([addr_a, addr_c]));
    // A answers "hi" with a keepalive 10 s later: the last time B hears from it.
    let last = sim.now + metanet_proto::session::KEEPALIVE_TIMEOUT;

    // The session expires after 180 s; the stranger stays a while longer (its last
    // timestamp still guards against replayed initiations)...
    sim.run_until(last + Duration::from_secs(500));
    let status = sim.hosts[b].node.peers(sim.now);
    assert!(status.iter().all(|p| p.address != addr_a || !p.connected));
    assert_eq!(peer_addresses(&sim, b), BTreeSet::from([addr_a, addr_c]));
    // ...and is forgotten SESSION_EXPIRY after it was last heard from.
    sim.run_until(last + (metanet_proto::session::SESSION_EXPIRY - Duration::from_secs(1)));
    assert_eq!(peer_addresses(&sim, b), BTreeSet::from([addr_a, addr_c]));
    sim.run_until(last + metanet_proto::session::SESSION_EXPIRY + Duration::from_secs(1));
    assert_eq!(peer_addresses(&sim, b), BTreeSet::from([addr_c]));
    // Peers the operator or the registry added stay until removed.
    sim.run_for(Duration::from_secs(3600));
    assert_eq!(peer_addresses(&sim, b), BTreeSet::from([addr_c]));
    assert_eq!(peer_addresses(&sim, a), BTreeSet::from([addr_b]));
    // The stranger can call again.
    sim.send(a, ip_b, b"me again");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).last().unwrap(), b"me again");
    assert_eq!(peer_addresses(&sim, b), BTreeSet::from([addr_a, addr_c]));
}

#[test]
fn full_peer_table_evicts_an_idle_stranger_first() {
    let mut sim = Sim::new(19, LinkConfig::default());
    let id_b = sim.new_identity();
    let config = Config {
        max_peers: 2,
        ..Config::default()
    };
    let b = sim.add_host_with(B, vec![id_b], config);
    let c = sim.add_host("198.18.0.3:51820");
    let strangers: Vec<usize> = (0..3)
        .map(|i| sim.add_host(&format!("198.18.0.{}:51820", 10 + i)))
        .collect();
    let ip_b = sim.ip(b);
    // B's operator configured C (no session yet): it is never evicted.
    sim.add_peer(b, c, false);
    let addr = |sim: &Sim, h| sim.address(h);
    sim.send(strangers[0], ip_b, b"first");
    sim.run_for(Duration::from_secs(20));
    assert_eq!(
        peer_addresses(&sim, b),
        BTreeSet::from([addr(&sim, c), addr(&sim, strangers[0])])
    );
    // The table is full. The first stranger has been quiet for 20 s: it makes room.
    sim.send(strangers[1], ip_b, b"second");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(
        peer_addresses(&sim, b),
        BTreeSet::from([addr(&sim, c), addr(&sim, strangers[1])])
    );
    // A third stranger right after: the second one is not idle, so the third waits.
    sim.send(strangers[2], ip_b, b"third");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).len(), 2);
    assert_eq!(
        peer_addresses(&sim, b),
        BTreeSet::from([addr(&sim, c), addr(&sim, strangers[1])])
    );
    // Its handshake retries get in once the second stranger has gone quiet.
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.payloads(b).last().unwrap(), b"third");
    assert!(peer_addresses(&sim, b).contains(&addr(&sim, c)));
}

#[test]
fn a_cookie_reply_is_answered_at_once_with_mac2_and_shared_by_peers_at_that_endpoint() {
    let mut sim = Sim::new(20, LinkConfig::default());
    let ids_a = vec![sim.new_identity(), sim.new_identity()];
    let a = sim.add_host_with(A, ids_a, Config::default());
    // B is always under load: every initiation without a valid mac2 gets a cookie.
    let id_b = sim.new_identity();
    let config = Config {
        load_threshold: 0,
        ..Config::default()
    };
    let b = sim.add_host_with(B, vec![id_b], config);
    let (ip_b, addr_a) = (sim.ip(b), sim.address(a));
    let start = sim.now;
    sim.send(a, ip_b, b"under load");
    sim.run_for(Duration::from_secs(1));
    // The cookie reply to A's cookie-less initiation makes A send it again at once,
    // with mac2: one more initiation, well before the retry timer, and it gets in.
    let sent = sim.sent_times(A, wire::kind::INITIATION, None, start);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let gap = sent[1].saturating_duration_since(sent[0]);
    assert!(gap < Duration::from_millis(100), "retried after {gap:?}");
    assert_eq!(sim.hosts[b].node.stats().cookies_sent, 1);
    assert_eq!(sim.payloads(b), vec![b"under load".to_vec()]);
    assert!(sim.hosts[b]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { address, .. } if *address == addr_a)));
    // Nothing more is sent because of the reply: no loop of initiations and cookies.
    sim.run_for(Duration::from_secs(4));
    assert_eq!(
        sim.sent_times(A, wire::kind::INITIATION, None, start).len(),
        2
    );
    // A second identity of A at the same endpoint B: its first initiation already
    // carries the cookie A got, so B answers it without a cookie reply.
    let a2 = sim.hosts[a].identities[1].0;
    sim.add_peer_of(a, a2, b, 0, true);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.hosts[b].node.stats().cookies_sent, 1);
    assert_eq!(sim.hosts[b].node.peers(sim.now).len(), 2);
}

/// A key revoked in the registry (docs/protocol.md §9.6): once the driver denies its
/// address, the session ends at once, every new initiation from it is dropped before
/// any reply, and the driver cannot add it back.
#[test]
fn revoked_peer_is_dropped_and_its_handshakes_refused() {
    let mut sim = Sim::new(31, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    sim.send(a, ip_b, b"before");
    sim.run_for(Duration::from_secs(1));
    sim.send(b, ip_a, b"reply");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(a), vec![b"reply".to_vec()]);

    let addr_b = sim.address(b);
    let now = sim.now;
    sim.hosts[a]
        .node
        .handle_command(now, Command::Deny { address: addr_b })
        .unwrap();
    assert!(sim.hosts[a].node.peers(sim.now).is_empty());
    // B keeps sending: A no longer knows its session, B hears nothing back and
    // handshakes again, and A refuses each initiation.
    for s in 0..40 {
        sim.send(b, ip_a, &msg(b'R', s));
        sim.run_for(Duration::from_secs(1));
    }
    assert_eq!(sim.payloads(a).len(), 1, "nothing from B after the deny");
    assert!(
        sim.hosts[a].node.stats().denied > 0,
        "B's new initiations must be seen and refused"
    );
    assert!(sim.hosts[a].node.peers(sim.now).is_empty());
    let remote = remote_of(&sim, b);
    let local = sim.local(a);
    let now = sim.now;
    let add = Command::AddPeer {
        local,
        remote,
        endpoint: Some(B.parse().unwrap()),
        candidates: Vec::new(),
        relay: None,
        connect: true,
    };
    assert_eq!(
        sim.hosts[a].node.handle_command(now, add),
        Err(CommandError::Denied)
    );
    let connect = Command::Connect {
        local,
        address: addr_b,
        endpoint: B.parse().unwrap(),
    };
    assert_eq!(
        sim.hosts[a].node.handle_command(now, connect),
        Err(CommandError::Denied)
    );
}

#[test]
fn data_cipher_is_aes_only_where_both_ends_allow_it() {
    use metanet_proto::session::Cipher;
    let mut sim = Sim::new(23, LinkConfig::default());
    let aes = Config {
        aes_256_gcm: true,
        ..Config::default()
    };
    let (id_a, id_b, id_c) = (sim.new_identity(), sim.new_identity(), sim.new_identity());
    let a = sim.add_host_with(A, vec![id_a], aes.clone());
    let b = sim.add_host_with(B, vec![id_b], aes);
    let c = sim.add_host_with("198.18.0.3:51820", vec![id_c], Config::default());
    let (ip_a, ip_b, ip_c) = (sim.ip(a), sim.ip(b), sim.ip(c));
    // A (AES) to B (AES); then C (ChaCha only) to A, and A to C: every direction
    // delivers, whichever cipher its session uses.
    sim.send(a, ip_b, b"a to b");
    sim.send(c, ip_a, b"c to a");
    sim.run_for(Duration::from_secs(1));
    sim.send(b, ip_a, b"b to a");
    sim.send(a, ip_c, b"a to c");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"a to b".to_vec()]);
    assert_eq!(sim.payloads(c), vec![b"a to c".to_vec()]);
    let mut at_a = sim.payloads(a);
    at_a.sort();
    assert_eq!(at_a, vec![b"b to a".to_vec(), b"c to a".to_vec()]);
    let cipher = |h: usize, peer: usize| {
        let address = sim.address(peer);
        sim.hosts[h]
            .node
            .peers(sim.now)
            .into_iter()
            .find(|p| p.address == address)
            .and_then(|p| p.cipher)
    };
    assert_eq!(cipher(a, b), Some(Cipher::Aes256Gcm));
    assert_eq!(cipher(b, a), Some(Cipher::Aes256Gcm));
    assert_eq!(cipher(a, c), Some(Cipher::ChaCha20Poly1305));
    assert_eq!(cipher(c, a), Some(Cipher::ChaCha20Poly1305));
    // Mixed policies cost no failed handshakes.
    for h in [a, b, c] {
        assert_eq!(sim.hosts[h].node.stats().handshake_failures, 0);
    }
}

#[test]
fn record_request_and_initiation_floods_do_not_stop_a_fresh_connect_by_endpoint() {
    let mut sim = Sim::new(
        21,
        LinkConfig {
            latency: Duration::from_millis(2),
            ..LinkConfig::default()
        },
    );
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    sim.directory.clear(); // A knows only B's address and endpoint
    let (addr_b, ip_b) = (sim.address(b), sim.ip(b));
    let b_addr: SocketAddr = B.parse().unwrap();
    let target = remote_of(&sim, b);
    // Valid-mac1 initiations at 200/s (B's handshake load) and record requests for B's
    // address at 2000/s, from many spoofed sources.
    let attacker = sim.new_identity();
    let inits: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            let ts = sim.unix() + Duration::from_millis(i);
            let seed = sim.random_bytes();
            handshake::initiate(&attacker, target, &[0; 32], i as u32, ts, None, seed)
                .unwrap()
                .1
        })
        .collect();
    let mut request = vec![0u8; wire::RECORD_REQUEST_LEN];
    let (mut requests, mut sent) = (0u64, false);
    // 10 s: the record arrives at A's second request (the first drew a cookie), A's
    // first initiation draws a handshake cookie, and its retry REKEY_TIMEOUT later,
    // with mac2, lands while B is still under both loads.
    for round in 0..1000u32 {
        for k in 0..20u32 {
            let src: SocketAddr = format!("198.18.{}.{}:{}", 100 + k, 1 + round % 250, 2000 + k)
                .parse()
                .unwrap();
            wire::RecordRequestRepr {
                nonce: round * 20 + k,
                target: *addr_b.as_bytes(),
            }
            .emit(&mut request);
            sim.inject(src, b_addr, request.clone());
            requests += 1;
            if k < 2 {
                sim.inject(src, b_addr, inits[(round % 16) as usize].clone());
            }
        }
        if round == 50 {
            connect_by_endpoint(&mut sim, a, addr_b, b_addr);
            sim.drain(a);
        }
        let up = sim.hosts[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerUp { address, .. } if *address == addr_b));
        if up && !sent {
            sim.send(a, ip_b, b"through the flood");
            sent = true;
        }
        sim.run_for(Duration::from_millis(10));
    }
    let flood_end = sim.now;
    let st = sim.hosts[b].node.stats().clone();
    assert_eq!(requests, 20000);
    // Almost every request drew a 24-byte cookie instead of a signature.
    assert!(st.record_cookies_sent > 19000, "{st:?}");
    assert!(
        sim.hosts[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerUp { address, .. } if *address == addr_b)),
        "A {:?}\nB {st:?}\n{:?}",
        sim.hosts[a].node.stats(),
        sim.hosts[a].events
    );
    assert_eq!(sim.payloads(b), vec![b"through the flood".to_vec()]);
    assert!(
        sim.hosts[b].delivered[0].0 < flood_end,
        "connected under load"
    );
    assert!(!sim.hosts[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::ConnectFailed { .. })));
}

#[test]
fn record_cookie_from_a_stranger_or_another_endpoint_is_ignored() {
    let mut sim = Sim::new(22, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    sim.directory.clear();
    let addr_b = sim.address(b);
    connect_by_endpoint(&mut sim, a, addr_b, B.parse().unwrap());
    // A record cookie for a nonce no probe has, from an endpoint no probe asked:
    // counted as a bad record, kept nowhere, and the probe still completes.
    let mut cookie = vec![0u8; wire::RECORD_COOKIE_LEN];
    wire::RecordCookieRepr {
        nonce: 7,
        cookie: [9; 16],
    }
    .emit(&mut cookie);
    let before = sim.hosts[a].node.stats().bad_records;
    let now = sim.now;
    let from: SocketAddr = "198.18.0.9:1".parse().unwrap();
    assert!(sim.hosts[a]
        .node
        .handle_datagram(now, from, &mut cookie)
        .is_none());
    assert_eq!(sim.hosts[a].node.stats().bad_records, before + 1);
    sim.drain(a);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.hosts[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerUp { address, .. } if *address == addr_b)));
}

#[test]
fn per_peer_counters_count_packets_and_the_drops_of_that_peer() {
    // A link that loses everything: the handshake never completes.
    let mut sim = Sim::new(
        41,
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    sim.add_peer(a, b, false);
    let ip_b = sim.ip(b);
    for s in 0..200u32 {
        sim.send(a, ip_b, &msg(b'D', s));
    }
    sim.run_for(Duration::from_secs(1));
    let cap = Config::default().queue_per_peer as u64;
    let peer = |sim: &Sim| sim.hosts[a].node.peers(sim.now)[0].clone();
    assert_eq!(
        peer(&sim).dropped,
        200 - cap,
        "queue overflow is the peer's"
    );
    assert_eq!(peer(&sim).tx_packets, 0);
    // The handshake gives up: what was still queued is dropped too.
    sim.run_for(metanet_proto::session::REKEY_ATTEMPT_TIME + Duration::from_secs(10));
    assert_eq!(peer(&sim).dropped, 200);
    assert_eq!(sim.hosts[a].node.stats().queue_dropped, 200);

    // On a working link packets and bytes are counted, and nothing is dropped.
    let mut sim = Sim::new(42, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    sim.add_peer(a, b, true);
    sim.add_peer(b, a, false);
    sim.run_for(Duration::from_secs(1));
    let ip_b = sim.ip(b);
    for s in 0..10u32 {
        sim.send(a, ip_b, &msg(b'D', s));
    }
    sim.run_for(Duration::from_secs(1));
    let pa = &sim.hosts[a].node.peers(sim.now)[0];
    let pb = &sim.hosts[b].node.peers(sim.now)[0];
    assert_eq!(pa.tx_packets, 10);
    assert_eq!(pb.rx_packets, 10);
    assert_eq!(pa.tx_bytes, pb.rx_bytes);
    assert_eq!((pa.dropped, pb.dropped), (0, 0));
}

/// Host `j` of the many-peer scenarios: a distinct underlay address per host.
fn host_addr(j: usize) -> String {
    format!("198.19.{}.{}:51820", j / 250, j % 250 + 1)
}

/// A hub (one identity, `hub_config`) and `hosts` hosts of `per_host` identities each.
/// The hub is told about every remote identity and connects to them host by host,
/// `stagger` apart, so that the peers of one host share their timer deadlines (ties)
/// and those of different hosts do not. Returns the hub and the hosts.
fn hub_with_peers(
    sim: &mut Sim,
    hub_config: Config,
    hosts: usize,
    per_host: usize,
    stagger: Duration,
) -> (usize, Vec<usize>) {
    let hub_id = sim.new_identity();
    let hub = sim.add_host_with(A, vec![hub_id], hub_config);
    // Every remote host takes all the hub's initiations in one load window.
    let remote_config = Config {
        load_threshold: u32::MAX,
        ..Config::default()
    };
    let remotes: Vec<usize> = (0..hosts)
        .map(|j| {
            let ids = (0..per_host).map(|_| sim.new_identity()).collect();
            sim.add_host_with(&host_addr(j), ids, remote_config.clone())
        })
        .collect();
    let local = sim.local(hub);
    for &r in &remotes {
        for k in 0..per_host {
            sim.add_peer_of(hub, local, r, k, true);
        }
        sim.run_for(stagger);
    }
    (hub, remotes)
}

#[test]
#[ignore = "a timing measurement: cargo test -p metanet-proto --test scenarios -- --ignored --nocapture"]
fn timer_cost_with_4096_idle_peers() {
    let mut sim = Sim::new(50, LinkConfig::default());
    sim.check_every = u64::MAX;
    let (hub, _) = hub_with_peers(
        &mut sim,
        Config::default(),
        64,
        64,
        Duration::from_millis(20),
    );
    sim.run_for(Duration::from_secs(1));
    let now = sim.now;
    let node = &mut sim.hosts[hub].node;
    assert_eq!(node.peers(now).iter().filter(|p| p.connected).count(), 4096);
    assert!(node.poll_timeout().is_some_and(|t| t > now));
    let rounds = 2000u32;
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(node.poll_timeout());
        node.handle_timeout(now);
    }
    let per_call = start.elapsed() / rounds;
    eprintln!("4096 idle peers: poll_timeout + handle_timeout take {per_call:?}");
}

/// Persistent keepalives a hub with `interval` 25 s sends one peer whose session came
/// up at `up`, through `end`: the confirming keepalive at each handshake and one every
/// 25 s after it. With the peer `reachable`, the keepalive at 125 s (a send on a
/// keypair over `REKEY_AFTER_TIME` old) starts a rekey whose response comes one round
/// trip (10 ms) later, and the cycle restarts there; without, keepalives go on while
/// the keypair is usable (until 180 s).
fn expected_keepalives(up: Instant, end: Instant, reachable: bool) -> Vec<Instant> {
    let s = Duration::from_secs;
    let period = s(125) + Duration::from_millis(10);
    let mut times = Vec::new();
    let mut base = up;
    while base <= end {
        let last = if reachable { 5 } else { 7 };
        times.extend((0..=last).map(|j| base + s(25 * j)).filter(|t| *t <= end));
        if !reachable {
            break;
        }
        base = base + period;
    }
    times
}

#[test]
fn four_thousand_peers_fire_their_timers_on_time_and_the_busy_peer_is_unaffected() {
    use metanet_proto::session::{REJECT_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT};
    let mut sim = Sim::new(51, LinkConfig::default());
    sim.check_every = 128;
    let hub_config = Config {
        persistent_keepalive: Some(Duration::from_secs(25)),
        ..Config::default()
    };
    let (hosts, per_host) = (65, 63);
    let (hub, remotes) = hub_with_peers(
        &mut sim,
        hub_config,
        hosts,
        per_host,
        Duration::from_millis(20),
    );
    // The 4096th peer: one that carries traffic all along.
    let busy_id = sim.new_identity();
    let busy = sim.add_host_with("198.19.9.9:51820", vec![busy_id], Config::default());
    let hub_local = sim.local(hub);
    sim.add_peer_of(hub, hub_local, busy, 0, true);
    sim.run_for(Duration::from_secs(1));
    let hub_peers = sim.hosts[hub].node.peers(sim.now);
    assert_eq!(hub_peers.len(), Config::default().max_peers);
    assert!(hub_peers.iter().all(|p| p.connected));

    // When each peer came up, and which host holds it.
    let mut up = BTreeMap::new();
    for (e, t) in sim.hosts[hub]
        .events
        .iter()
        .zip(&sim.hosts[hub].event_times)
    {
        if let Event::PeerUp { address, .. } = e {
            assert!(up.insert(*address, *t).is_none(), "one PeerUp per peer");
        }
    }
    assert_eq!(up.len(), 4096);
    // The first two hosts go away (renumbered where nobody sends): their peers'
    // rekeys go unanswered.
    let gone = 2;
    let old_addrs: Vec<SocketAddr> = remotes.iter().map(|&r| sim.hosts[r].addr).collect();
    for (j, &r) in remotes.iter().enumerate().take(gone) {
        sim.renumber(r, &format!("198.51.100.{}:51820", j + 1));
    }

    // Busy traffic both ways every 50 ms for 260 s of virtual time (two rekeys of
    // every reachable peer, the give-up of every unreachable one), with thousands of
    // idle peers' timers firing around it. The head of the hub's deadline queue is
    // checked against a scan of every peer every two seconds (and in every
    // `check_invariants`).
    let (ip_hub, ip_busy) = (sim.ip(hub), sim.ip(busy));
    let start = sim.now;
    let end = start + Duration::from_secs(260);
    let mut sent_at = Vec::new();
    let mut s = 0u32;
    while sim.now + Duration::from_millis(50) <= end {
        sent_at.push(sim.now);
        sim.send(hub, ip_busy, &msg(b'H', s));
        sim.send(busy, ip_hub, &msg(b'B', s));
        s += 1;
        sim.run_for(Duration::from_millis(50));
        if s % 40 == 0 {
            let node = &sim.hosts[hub].node;
            // The node wakes no later than the earliest peer deadline (it may wake
            // earlier: an entry whose deadline moved later fires early and reschedules).
            if let Some(next) = node.next_peer_deadline_by_scan() {
                assert!(node.poll_timeout().is_some_and(|t| t <= next));
            }
        }
    }
    sim.run_until(end);
    let latency = LinkConfig::default().latency;
    for (h, kind) in [(busy, b'H'), (hub, b'B')] {
        let got: Vec<(Instant, u32)> = sim.hosts[h]
            .delivered
            .iter()
            .filter_map(|(t, p)| {
                parse_msg(&p[ip::IPV6_HEADER_LEN..])
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, s)| (*t, s))
            })
            .collect();
        let want: Vec<(Instant, u32)> =
            (0..s).map(|i| (sent_at[i as usize] + latency, i)).collect();
        assert_eq!(
            got, want,
            "busy traffic to host {h}: every packet, one latency later"
        );
    }

    // Every idle peer's keepalives, rekeys, expiry and give-up happen when §6.3 and
    // §7.4–7.5 say. Keepalives are compared per host (the wire does not say which of
    // a host's identities one is for).
    let hub_addr: SocketAddr = A.parse().unwrap();
    let events = || {
        sim.hosts[hub]
            .events
            .iter()
            .zip(&sim.hosts[hub].event_times)
    };
    let status: BTreeMap<_, _> = sim.hosts[hub]
        .node
        .peers(sim.now)
        .into_iter()
        .map(|p| (p.address, p))
        .collect();
    for (j, &r) in remotes.iter().enumerate() {
        let reachable = j >= gone;
        let mut want = Vec::new();
        for &(_, address) in &sim.hosts[r].identities {
            let u = up[&address];
            want.extend(expected_keepalives(u, end, reachable));
            let expired: Vec<Instant> = events()
                .filter(
                    |(e, _)| matches!(e, Event::SessionExpired { address: a, .. } if *a == address),
                )
                .map(|(_, t)| *t)
                .collect();
            let failed: Vec<Instant> = events()
                .filter(|(e, _)| matches!(e, Event::HandshakeFailed { address: a, .. } if *a == address))
                .map(|(_, t)| *t)
                .collect();
            let p = &status[&address];
            if reachable {
                assert!(expired.is_empty() && failed.is_empty(), "peer {address}");
                assert!(p.connected);
                let period = Duration::from_secs(125) + Duration::from_millis(10);
                let rekeys = (end.as_nanos() - u.as_nanos()) / period.as_nanos() as u64;
                let last = u + Duration::from_nanos(rekeys * period.as_nanos() as u64);
                let unix =
                    UnixTime::from_secs(sim::UNIX_BASE) + Duration::from_nanos(last.as_nanos());
                assert_eq!(
                    p.last_handshake,
                    Some(unix),
                    "peer {address} rekeyed on time"
                );
            } else {
                assert_eq!(
                    expired,
                    vec![u + REJECT_AFTER_TIME],
                    "peer {address} expiry"
                );
                let give_up = u + Duration::from_secs(125) + REKEY_ATTEMPT_TIME;
                let latest = give_up + REKEY_TIMEOUT + Duration::from_millis(333);
                assert!(
                    failed.len() == 1 && failed[0] >= give_up && failed[0] <= latest,
                    "peer {address} gave up at {failed:?}, not in {give_up:?}..={latest:?}"
                );
                assert!(!p.connected);
            }
        }
        want.sort();
        let got: Vec<Instant> = sim
            .wire_log
            .iter()
            .filter(|w| w.from == hub_addr && w.to == old_addrs[j])
            .filter(|w| w.kind == wire::kind::DATA && w.len == wire::DATA_OVERHEAD)
            .map(|w| w.at)
            .collect();
        assert_eq!(got, want, "keepalives to host {j}");
    }
    assert_eq!(sim.hosts[hub].node.stats().queue_dropped, 0);
    sim.hosts[hub].node.check_invariants().unwrap();
}
